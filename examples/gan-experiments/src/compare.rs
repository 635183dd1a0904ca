//! GAN against WGAN against WGAN-GP on MNIST, from `wgan-mnist` runs trained with
//! `--eval-every`: sample quality over training, the class histograms over time (collapse shows
//! there), and whether each critic's loss tracks sample quality, as the WGAN paper's figures 3
//! and 4 ask: the Spearman rank correlation between the critic's divergence estimate and the
//! Frechet distance over the run's evaluation points.

use earthmover_wgan::history;
use earthmover_wgan::io::{ensure_writable_dir, write_atomic};
use earthmover_wgan::metrics::spearman;
use earthmover_wgan::plot::{median_filter, panels, Panel, Series, CLASS_COLORS};
use earthmover_wgan::train::{Algo, IterationLog};
use earthmover_wgan::{bail, Error, Result};
use std::f64::consts::LN_2;
use std::path::{Path, PathBuf};

/// One run folder, read back.
#[derive(Debug)]
pub struct Run {
    pub dir: PathBuf,
    pub algo: Algo,
    /// The algorithm, and the critic's normalisation where it has one.
    pub label: String,
    pub rows: Vec<IterationLog>,
}

impl Run {
    pub fn load(dir: &Path) -> Result<Run> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .map_err(|e| Error(format!("{}: cannot read ({e})", dir.join(name).display())))
        };
        let config: serde_json::Value = serde_json::from_str(&read("config.json")?)
            .map_err(|e| Error(format!("{}: not JSON ({e})", dir.join("config.json").display())))?;
        let algo: Algo = serde_json::from_value(config["training"]["algo"].clone())
            .map_err(|_| Error(format!("{}: no training.algo", dir.join("config.json").display())))?;
        let label = match config["training"]["critic_norm"].as_str() {
            Some(norm) if norm != "none" => format!("{algo} ({norm}-norm critic)"),
            _ => algo.to_string(),
        };
        let rows = history::parse_csv(&read("metrics.csv")?, &dir.join("metrics.csv").display().to_string())?;
        if !rows.iter().any(|r| r.quality.is_some()) {
            bail!("{}: no quality measurements; train with --eval-every", dir.display());
        }
        Ok(Run {
            dir: dir.to_path_buf(),
            algo,
            label,
            rows,
        })
    }

    /// The critic's estimate of the divergence it is trained to measure, per iteration: W for
    /// the WGANs (`mean C(real) - mean C(fake)`), JS for the GAN (`log 2 - loss / 2`, exact at
    /// the optimal discriminator).
    pub fn divergence(&self) -> Vec<(f64, f64)> {
        self.rows
            .iter()
            .map(|r| {
                let d = match self.algo {
                    Algo::Gan => LN_2 - r.critic_loss / 2.0,
                    Algo::Wgan | Algo::WganGp => r.wasserstein,
                };
                (r.iteration as f64, d)
            })
            .collect()
    }

    /// (iteration, divergence estimate median-filtered over `window` iterations, Frechet
    /// distance) at every evaluation point.
    pub fn divergence_and_fd(&self, window: usize) -> Vec<(f64, f64, f64)> {
        let divergence = self.divergence();
        let smooth = median_filter(&divergence.iter().map(|p| p.1).collect::<Vec<_>>(), window);
        self.rows
            .iter()
            .zip(smooth)
            .filter_map(|(r, d)| r.quality.as_ref().map(|q| (r.iteration as f64, d, q.frechet_distance)))
            .collect()
    }

    /// The rank correlation of the smoothed divergence estimate with the Frechet distance.
    pub fn loss_quality_correlation(&self, window: usize) -> Option<f64> {
        let points = self.divergence_and_fd(window);
        let (d, fd): (Vec<f64>, Vec<f64>) = points.iter().map(|p| (p.1, p.2)).unzip();
        spearman(&d, &fd)
    }

    /// The same with the held-out estimate, where it was measured at the evaluation points
    /// (WGANs only: the GAN's logit gap estimates nothing).
    pub fn test_estimate_correlation(&self) -> Option<f64> {
        if self.algo == Algo::Gan {
            return None;
        }
        let (w, fd): (Vec<f64>, Vec<f64>) = self
            .rows
            .iter()
            .filter_map(|r| Some((r.test_wasserstein?, r.quality.as_ref()?.frechet_distance)))
            .unzip();
        spearman(&w, &fd)
    }
}

const RUN_COLORS: [(u8, u8, u8); 4] = [(220, 60, 30), (40, 150, 60), (30, 80, 200), (150, 90, 190)];
/// The smoothing window of the training-loss curves, in iterations.
const WINDOW: usize = 51;

fn color(i: usize) -> (u8, u8, u8) {
    RUN_COLORS[i % RUN_COLORS.len()]
}

fn panel(title: &str, y: &str, series: Vec<Series>) -> Panel {
    Panel {
        title: title.to_string(),
        x_label: "generator iteration".to_string(),
        y_label: y.to_string(),
        series,
    }
}

pub fn compare(dirs: &[PathBuf], out: &Path) -> Result<()> {
    ensure_writable_dir(out)?;
    let runs = dirs.iter().map(|d| Run::load(d)).collect::<Result<Vec<_>>>()?;
    let quality_series = |value: fn(&IterationLog) -> Option<f64>| -> Vec<Series> {
        runs.iter()
            .enumerate()
            .map(|(i, run)| Series {
                name: run.label.clone(),
                points: run
                    .rows
                    .iter()
                    .filter_map(|r| Some((r.iteration as f64, value(r)?)))
                    .collect(),
                color: color(i),
            })
            .collect()
    };
    let quality = panels(
        &[
            panel(
                "Frechet distance to the test digits",
                "FD (lower is better)",
                quality_series(|r| Some(r.quality.as_ref()?.frechet_distance)),
            ),
            panel(
                "classifier score",
                "exp E KL(p(y|x) || p(y))",
                quality_series(|r| Some(r.quality.as_ref()?.classes.as_ref()?.classifier_score)),
            ),
            panel(
                "confidently classified samples (p >= 0.9)",
                "share",
                quality_series(|r| Some(r.quality.as_ref()?.classes.as_ref()?.coverage.confident_share)),
            ),
            panel(
                "class histogram's KL from uniform",
                "KL (0: every class equally)",
                quality_series(|r| Some(r.quality.as_ref()?.classes.as_ref()?.coverage.kl_from_uniform)),
            ),
        ],
        2,
        (1200, 800),
    )
    .map_err(Error)?;
    write_atomic(&out.join("mnist-quality.png"), &quality)?;

    // Class shares over time, one panel per run.
    let class_panels: Vec<Panel> = runs
        .iter()
        .map(|run| {
            let series = (0..history::CLASSES)
                .map(|c| Series {
                    name: c.to_string(),
                    points: run
                        .rows
                        .iter()
                        .filter_map(|r| {
                            let h = &r.quality.as_ref()?.classes.as_ref()?.coverage.histogram;
                            Some((r.iteration as f64, h[c] as f64 / h.iter().sum::<usize>().max(1) as f64))
                        })
                        .collect(),
                    color: CLASS_COLORS[c],
                })
                .collect();
            panel(&format!("{}: predicted classes", run.label), "share of samples", series)
        })
        .collect();
    let classes = panels(
        &class_panels,
        class_panels.len(),
        (500 * class_panels.len() as u32, 450),
    )
    .map_err(Error)?;
    write_atomic(&out.join("mnist-classes.png"), &classes)?;

    // The WGAN paper's figures 3 and 4: the critic's estimate over training above the Frechet
    // distance of the samples.
    let mut loss_panels = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let raw = run.divergence();
        let smooth = median_filter(&raw.iter().map(|p| p.1).collect::<Vec<_>>(), WINDOW);
        let name = match run.algo {
            Algo::Gan => "JS estimate (log 2 - loss/2)",
            _ => "W estimate",
        };
        let rho = run
            .loss_quality_correlation(WINDOW)
            .map_or("n/a".to_string(), |r| format!("{r:+.2}"));
        loss_panels.push(panel(
            &format!("{}: estimate (Spearman with FD {rho})", run.label),
            name,
            vec![
                Series {
                    name: String::new(),
                    points: raw.clone(),
                    color: (200, 205, 220),
                },
                Series {
                    name: format!("median of {WINDOW}"),
                    points: raw.iter().zip(smooth).map(|(p, s)| (p.0, s)).collect(),
                    color: color(i),
                },
            ],
        ));
    }
    for (i, run) in runs.iter().enumerate() {
        loss_panels.push(panel(
            &format!("{}: sample quality", run.label),
            "Frechet distance",
            vec![Series {
                name: String::new(),
                points: run.divergence_and_fd(WINDOW).iter().map(|p| (p.0, p.2)).collect(),
                color: color(i),
            }],
        ));
    }
    let n = runs.len() as u32;
    let loss = panels(&loss_panels, runs.len(), (500 * n, 800)).map_err(Error)?;
    write_atomic(&out.join("mnist-loss-vs-quality.png"), &loss)?;

    // Sample grids at matched iterations.
    for run in &runs {
        for it in [250, 500, 1000] {
            let from = run.dir.join("samples").join(format!("iter_{it:06}.png"));
            if let Ok(bytes) = std::fs::read(&from) {
                let name = run
                    .dir
                    .file_name()
                    .map_or("run".into(), |n| n.to_string_lossy().into_owned());
                write_atomic(&out.join(format!("{name}-{it:04}.png")), &bytes)?;
            }
        }
    }

    println!("| algorithm | iterations | training time | final FD | best FD | classifier score | classes covered | KL from uniform | confident | Spearman(estimate, FD) | Spearman(test W, FD) |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for run in &runs {
        let last = run.rows.last().expect("rows were checked");
        let final_quality = run
            .rows
            .iter()
            .rev()
            .find_map(|r| r.quality.as_ref())
            .expect("checked on load");
        let best = run
            .rows
            .iter()
            .filter_map(|r| r.quality.as_ref().map(|q| q.frechet_distance))
            .fold(f64::INFINITY, f64::min);
        let fmt = |r: Option<f64>| r.map_or("n/a".to_string(), |r| format!("{r:+.2}"));
        // Runs scored on the digit classifier's features alone have no class columns.
        let classes = final_quality
            .classes
            .as_ref()
            .map_or("n/a | n/a | n/a | n/a".to_string(), |c| {
                format!(
                    "{:.2} | {} / 10 | {:.3} | {:.0}%",
                    c.classifier_score,
                    c.coverage.covered,
                    c.coverage.kl_from_uniform,
                    100.0 * c.coverage.confident_share
                )
            });
        println!(
            "| {} | {} | {:.0} s | {:.1} | {:.1} | {classes} | {} | {} |",
            run.label,
            last.iteration,
            last.seconds,
            final_quality.frechet_distance,
            best,
            fmt(run.loss_quality_correlation(WINDOW)),
            fmt(run.test_estimate_correlation()),
        );
    }
    eprintln!(
        "wrote mnist-quality.png, mnist-classes.png, mnist-loss-vs-quality.png and sample grids to {}",
        out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use earthmover_wgan::classifier::{ClassScores, Quality};
    use earthmover_wgan::metrics::ModeCoverage;

    /// A run folder whose critic estimate and Frechet distance both fall over 200 iterations.
    fn fake_run(dir: &Path, algo: &str, with_quality: bool) {
        std::fs::create_dir_all(dir).unwrap();
        let config = format!("{{\"training\": {{\"algo\": \"{algo}\", \"critic_norm\": \"none\"}}}}");
        std::fs::write(dir.join("config.json"), config).unwrap();
        let rows: Vec<IterationLog> = (1..=200)
            .map(|i| {
                let t = i as f64;
                IterationLog {
                    iteration: i,
                    seconds: t,
                    critic_loss: -10.0 / t,
                    generator_loss: 0.0,
                    wasserstein: 10.0 / t,
                    penalty: 0.0,
                    grad_norm: 0.0,
                    test_wasserstein: (i % 20 == 0).then_some(10.0 / t),
                    quality: (with_quality && i % 20 == 0).then(|| Quality {
                        frechet_distance: 1000.0 / t,
                        classes: Some(ClassScores {
                            classifier_score: t / 20.0,
                            coverage: ModeCoverage {
                                histogram: vec![10; 10],
                                covered: 10,
                                kl_from_uniform: 0.0,
                                confident_share: 0.5,
                            },
                        }),
                    }),
                    loss_scaling: None,
                }
            })
            .collect();
        std::fs::write(dir.join("metrics.csv"), history::to_csv(&rows)).unwrap();
    }

    #[test]
    fn a_loss_that_falls_with_the_frechet_distance_correlates_fully_and_figures_are_written() {
        let root = std::env::temp_dir().join(format!("earthmover-compare-{}", std::process::id()));
        let (a, b) = (root.join("run-a"), root.join("run-b"));
        fake_run(&a, "wgan-gp", true);
        fake_run(&b, "gan", true);
        let run = Run::load(&a).unwrap();
        assert_eq!(run.label, "wgan-gp");
        assert!((run.loss_quality_correlation(5).unwrap() - 1.0).abs() < 1e-12);
        assert!((run.test_estimate_correlation().unwrap() - 1.0).abs() < 1e-12);
        // The GAN's estimate is JS from its loss; its logit gap estimates nothing.
        assert_eq!(Run::load(&b).unwrap().test_estimate_correlation(), None);
        let figures = root.join("figures");
        compare(&[a, b], &figures).unwrap();
        for name in ["mnist-quality.png", "mnist-classes.png", "mnist-loss-vs-quality.png"] {
            assert!(std::fs::metadata(figures.join(name)).unwrap().len() > 1000, "{name}");
        }
        let bare = root.join("run-c");
        fake_run(&bare, "wgan", false);
        assert!(Run::load(&bare).unwrap_err().0.contains("--eval-every"));
        assert!(Run::load(&root.join("missing")).is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
