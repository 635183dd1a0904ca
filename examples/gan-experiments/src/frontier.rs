//! Quality against training time over a sweep of `wgan-mnist` runs (`scripts/sweep-defaults.sh`):
//! every run measured with `--eval-every` gives its quality at each evaluation point, so one run
//! per setting traces that setting's whole curve, and the best point within a time budget is the
//! setting's answer to "what should the default be?". Prints a markdown table (each run at its
//! best point within the budget, and at its end) and draws the curves with the frontier.

use crate::compare::Run;
use earthmover_wgan::classifier::Quality;
use earthmover_wgan::io::{ensure_writable_dir, write_atomic};
use earthmover_wgan::plot::{panels, Panel, Series, CLASS_COLORS};
use earthmover_wgan::{bail, Error, Result};
use std::path::{Path, PathBuf};

/// One evaluation point of a run: training seconds so far, iteration, quality.
#[derive(Clone, Debug)]
pub struct Point {
    pub seconds: f64,
    pub iteration: usize,
    pub quality: Quality,
}

/// The evaluation points of `run` measured with class scores, in order. With a `pace` (seconds
/// per iteration, timed on a quiet machine) a point's time is its iteration at that pace rather
/// than the seconds the run logged: a run's quality at an iteration does not depend on how busy
/// the machine was, its logged time does.
pub fn points(run: &Run, pace: Option<f64>) -> Vec<Point> {
    run.rows
        .iter()
        .filter_map(|r| {
            let quality = r.quality.clone()?;
            quality.classes.as_ref()?;
            Some(Point {
                seconds: pace.map_or(r.seconds, |p| p * r.iteration as f64),
                iteration: r.iteration,
                quality,
            })
        })
        .collect()
}

/// The point with the lowest Frechet distance among those reached within `budget` seconds.
pub fn best_within(points: &[Point], budget: f64) -> Option<&Point> {
    points
        .iter()
        .filter(|p| p.seconds <= budget)
        .min_by(|a, b| a.quality.frechet_distance.total_cmp(&b.quality.frechet_distance))
}

/// The lower envelope of every run's (seconds, Frechet distance) points: for each time, the
/// best distance any setting had reached by then.
pub fn frontier(runs: &[Vec<Point>]) -> Vec<(f64, f64)> {
    let mut all: Vec<(f64, f64)> = runs
        .iter()
        .flatten()
        .map(|p| (p.seconds, p.quality.frechet_distance))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut best = f64::INFINITY;
    let mut out = Vec::new();
    for (t, fd) in all {
        if fd < best {
            best = fd;
            out.push((t, fd));
        }
    }
    out
}

/// A table row: the run's folder name, then the point's figures.
fn row(name: &str, p: &Point) -> String {
    let c = p.quality.classes.as_ref().expect("points have class scores");
    format!(
        "| {name} | {} | {:.0} | {:.2} | {:.1} | {:.0}% | {}/10 | {:.4} |",
        p.iteration,
        p.seconds,
        c.classifier_score,
        p.quality.frechet_distance,
        100.0 * c.coverage.confident_share,
        c.coverage.covered,
        c.coverage.kl_from_uniform
    )
}

/// The seconds per iteration in `dir/pace`, where `scripts/sweep-defaults.sh` timed the setting
/// before its long run; `None` when the file is absent.
pub fn read_pace(dir: &Path) -> Result<Option<f64>> {
    let path = dir.join("pace");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => bail!("{}: cannot read ({e})", path.display()),
    };
    match text.trim().parse::<f64>() {
        Ok(p) if p.is_finite() && p > 0.0 => Ok(Some(p)),
        _ => bail!(
            "{}: expected a positive number of seconds per iteration, found {:?}",
            path.display(),
            text.trim()
        ),
    }
}

/// The top of the Frechet-distance panel: measurements above it are left out of the plot (not
/// out of the table).
const FD_AXIS_CUT: f64 = 100.0;

/// Read `dirs`, print the table, and draw `frontier.png` into `out`.
pub fn report(dirs: &[PathBuf], budget: f64, out: &Path) -> Result<()> {
    if budget.is_nan() || budget <= 0.0 {
        bail!("--budget must be a positive number of seconds");
    }
    let mut paced = Vec::new();
    let runs: Vec<(String, Vec<Point>)> = dirs
        .iter()
        .map(|dir| {
            let run = Run::load(dir)?;
            let name = dir
                .file_name()
                .map_or("run".into(), |n| n.to_string_lossy().into_owned());
            let pace = read_pace(dir)?;
            if let Some(p) = pace {
                paced.push(format!("{name} {p:.3} s"));
            }
            Ok((name, points(&run, pace)))
        })
        .collect::<Result<_>>()?;
    println!("Each run at its best Frechet distance within {budget:.0} s of training, then at its end.");
    if !paced.is_empty() {
        println!(
            "Seconds are iterations times each setting's pace per iteration, timed on a quiet machine ({}).",
            paced.join(", ")
        );
    }
    println!();
    println!(
        "| run | iteration | seconds | classifier score | Frechet distance | confident | classes | KL from uniform |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (name, points) in &runs {
        match best_within(points, budget) {
            Some(best) => println!("{}", row(name, best)),
            None => println!("| {name} | no measurement within the budget | | | | | | |"),
        }
    }
    println!("\n| run (at its end) | iteration | seconds | classifier score | Frechet distance | confident | classes | KL from uniform |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (name, points) in &runs {
        if let Some(last) = points.last() {
            println!("{}", row(name, last));
        }
    }

    let curves: Vec<Vec<Point>> = runs.iter().map(|(_, p)| p.clone()).collect();
    let color = |i: usize| CLASS_COLORS[i % CLASS_COLORS.len()];
    let curve = |value: fn(&Point) -> f64| -> Vec<Series> {
        runs.iter()
            .enumerate()
            .map(|(i, (name, points))| Series {
                name: name.clone(),
                points: points.iter().map(|p| (p.seconds, value(p))).collect(),
                color: color(i),
            })
            .collect()
    };
    // The first measurements (FD in the hundreds) would squash the part that decides the
    // table into the bottom of the panel: the axis stops at FD_AXIS_CUT, and the title says so.
    let mut fd = curve(|p| {
        Some(p.quality.frechet_distance)
            .filter(|fd| *fd <= FD_AXIS_CUT)
            .unwrap_or(f64::NAN)
    });
    fd.push(Series {
        name: "frontier".into(),
        points: frontier(&curves)
            .into_iter()
            .filter(|(_, fd)| *fd <= FD_AXIS_CUT)
            .collect(),
        color: (0, 0, 0),
    });
    let budget_line = |lo: f64, hi: f64| Series {
        name: format!("{budget:.0} s"),
        points: vec![(budget, lo), (budget, hi)],
        color: (150, 150, 150),
    };
    fd.push(budget_line(0.0, FD_AXIS_CUT));
    let score = curve(|p| p.quality.classes.as_ref().map_or(f64::NAN, |c| c.classifier_score));
    let panel = |title: &str, y: &str, series: Vec<Series>| Panel {
        title: title.into(),
        x_label: "training seconds".into(),
        y_label: y.into(),
        series,
    };
    let png = panels(
        &[
            panel(
                &format!("Frechet distance against training time (up to {FD_AXIS_CUT})"),
                "FD (lower is better)",
                fd,
            ),
            panel(
                "classifier score against training time",
                "score (higher is better)",
                score,
            ),
        ],
        2,
        (1400, 600),
    )
    .map_err(Error)?;
    ensure_writable_dir(out)?;
    write_atomic(&out.join("frontier.png"), &png)?;
    eprintln!("wrote {}", out.join("frontier.png").display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use earthmover_wgan::classifier::ClassScores;
    use earthmover_wgan::metrics::ModeCoverage;

    fn point(seconds: f64, fd: f64) -> Point {
        Point {
            seconds,
            iteration: seconds as usize,
            quality: Quality {
                frechet_distance: fd,
                classes: Some(ClassScores {
                    classifier_score: 5.0,
                    coverage: ModeCoverage {
                        histogram: vec![1; 10],
                        covered: 10,
                        kl_from_uniform: 0.0,
                        confident_share: 0.5,
                    },
                }),
            },
        }
    }

    #[test]
    fn a_pace_file_is_read_and_a_bad_one_refused() {
        let dir = std::env::temp_dir().join(format!("frontier-pace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(read_pace(&dir).unwrap(), None);
        std::fs::write(dir.join("pace"), "0.187\n").unwrap();
        assert_eq!(read_pace(&dir).unwrap(), Some(0.187));
        for bad in ["", "fast", "-1", "0", "NaN"] {
            std::fs::write(dir.join("pace"), bad).unwrap();
            let err = read_pace(&dir).unwrap_err().to_string();
            assert!(err.contains("seconds per iteration"), "{bad}: {err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_best_point_respects_the_budget_and_the_frontier_only_falls() {
        let fast = vec![point(10.0, 300.0), point(20.0, 100.0), point(40.0, 90.0)];
        let slow = vec![point(15.0, 400.0), point(30.0, 50.0), point(60.0, 20.0)];
        assert_eq!(best_within(&slow, 45.0).unwrap().quality.frechet_distance, 50.0);
        assert_eq!(best_within(&fast, 45.0).unwrap().quality.frechet_distance, 90.0);
        assert!(best_within(&fast, 5.0).is_none());
        assert_eq!(
            frontier(&[fast, slow]),
            vec![(10.0, 300.0), (20.0, 100.0), (30.0, 50.0), (60.0, 20.0)]
        );
    }
}
