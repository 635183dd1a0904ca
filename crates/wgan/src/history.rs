//! A run's `metrics.csv`: one row per generator iteration, with the held-out Wasserstein
//! estimate and the sample-quality metrics in the rows where they were measured (empty cells
//! elsewhere), and last the loss scales and skipped steps of an f16 run (empty in f32 and
//! bf16 runs; appended after the class columns so that files and tools that read the earlier
//! columns by position still do). Values are written as the shortest decimals that read back to the same `f64`, so
//! a resumed run and the experiment tools see exactly what was logged.

use crate::classifier::{ClassScores, Quality};
use crate::metrics::ModeCoverage;
use crate::train::{IterationLog, LossScaleLog};
use crate::{Error, Result};

/// Classes of the class-histogram columns (the digits).
pub const CLASSES: usize = 10;

/// The training columns, then the quality columns.
const TRAINING_COLUMNS: [&str; 8] = [
    "iteration",
    "seconds",
    "critic_loss",
    "generator_loss",
    "wasserstein",
    "penalty",
    "grad_norm",
    "test_wasserstein",
];
const QUALITY_COLUMNS: [&str; 5] = [
    "classifier_score",
    "frechet_distance",
    "classes_covered",
    "kl_from_uniform",
    "confident_share",
];

/// Dynamic loss scaling's columns (f16): each network's scale after the iteration and the
/// steps it skipped in it.
const LOSS_SCALE_COLUMNS: [&str; 4] = [
    "critic_loss_scale",
    "generator_loss_scale",
    "critic_skipped",
    "generator_skipped",
];

/// The widths of the files this module reads: before the quality columns, before the loss
/// scale columns, and today's.
const OLD_WIDTH: usize = TRAINING_COLUMNS.len();
const QUALITY_WIDTH: usize = OLD_WIDTH + QUALITY_COLUMNS.len() + CLASSES;
const FULL_WIDTH: usize = QUALITY_WIDTH + LOSS_SCALE_COLUMNS.len();

/// The header line of `metrics.csv`.
pub fn header() -> String {
    let classes = (0..CLASSES).map(|c| format!("class_{c}"));
    TRAINING_COLUMNS
        .iter()
        .map(|s| s.to_string())
        .chain(QUALITY_COLUMNS.iter().map(|s| s.to_string()))
        .chain(classes)
        .chain(LOSS_SCALE_COLUMNS.iter().map(|s| s.to_string()))
        .collect::<Vec<_>>()
        .join(",")
}

/// `rows` as CSV text, header included.
pub fn to_csv(rows: &[IterationLog]) -> String {
    let mut out = String::with_capacity(rows.len() * 120);
    out.push_str(&header());
    out.push('\n');
    for r in rows {
        let test = r.test_wasserstein.map(|v| format!("{v:?}")).unwrap_or_default();
        out.push_str(&format!(
            "{},{:.3},{:?},{:?},{:?},{:?},{:?},{test}",
            r.iteration, r.seconds, r.critic_loss, r.generator_loss, r.wasserstein, r.penalty, r.grad_norm
        ));
        // Empty cells where nothing was measured, and in the class columns where only the
        // Frechet distance was.
        match &r.quality {
            Some(Quality {
                frechet_distance,
                classes:
                    Some(ClassScores {
                        classifier_score,
                        coverage: c,
                    }),
            }) => {
                out.push_str(&format!(
                    ",{classifier_score:?},{frechet_distance:?},{},{:?},{:?}",
                    c.covered, c.kl_from_uniform, c.confident_share
                ));
                c.histogram.iter().for_each(|n| out.push_str(&format!(",{n}")));
            }
            Some(Quality {
                frechet_distance,
                classes: None,
            }) => {
                out.push_str(&format!(",,{frechet_distance:?}"));
                out.push_str(&",".repeat(QUALITY_COLUMNS.len() - 2 + CLASSES));
            }
            None => out.push_str(&",".repeat(QUALITY_COLUMNS.len() + CLASSES)),
        }
        match &r.loss_scaling {
            Some(l) => out.push_str(&format!(
                ",{:?},{:?},{},{}",
                l.critic_scale, l.generator_scale, l.critic_skipped, l.generator_skipped
            )),
            None => out.push_str(&",".repeat(LOSS_SCALE_COLUMNS.len())),
        }
        out.push('\n');
    }
    out
}

/// Parse a `metrics.csv` written by [`to_csv`]; files from before the quality columns (8
/// columns) and from before the loss-scale columns (23) are read too. `source` names the file
/// in errors.
pub fn parse_csv(text: &str, source: &str) -> Result<Vec<IterationLog>> {
    let mut lines = text.lines();
    let header_line = lines.next().unwrap_or_default();
    let width = header_line.split(',').count();
    if !header_line.starts_with("iteration,seconds,") || ![OLD_WIDTH, QUALITY_WIDTH, FULL_WIDTH].contains(&width) {
        return Err(Error(format!("{source}: not a metrics file (unexpected header)")));
    }
    let mut rows = Vec::new();
    for (line_no, line) in lines.enumerate() {
        let f: Vec<&str> = line.split(',').collect();
        let bad = || Error(format!("{source}: line {} is not a metrics row", line_no + 2));
        if f.len() != width {
            return Err(bad());
        }
        let num = |i: usize| f[i].parse::<f64>().map_err(|_| bad());
        let optional = |i: usize| if f[i].is_empty() { Ok(None) } else { num(i).map(Some) };
        let classes = |f: &[&str]| -> Result<ClassScores> {
            let histogram = (0..CLASSES)
                .map(|c| f[13 + c].parse::<usize>().map_err(|_| bad()))
                .collect::<Result<Vec<_>>>()?;
            Ok(ClassScores {
                classifier_score: num(8)?,
                coverage: ModeCoverage {
                    covered: f[10].parse().map_err(|_| bad())?,
                    kl_from_uniform: num(11)?,
                    confident_share: num(12)?,
                    histogram,
                },
            })
        };
        let quality = if width >= QUALITY_WIDTH && !f[9].is_empty() {
            Some(Quality {
                frechet_distance: num(9)?,
                classes: if f[8].is_empty() { None } else { Some(classes(&f)?) },
            })
        } else {
            None
        };
        let count = |i: usize| f[i].parse::<u64>().map_err(|_| bad());
        let at = QUALITY_WIDTH;
        let loss_scaling = if width == FULL_WIDTH && !f[at].is_empty() {
            Some(LossScaleLog {
                critic_scale: num(at)?,
                generator_scale: num(at + 1)?,
                critic_skipped: count(at + 2)?,
                generator_skipped: count(at + 3)?,
            })
        } else {
            None
        };
        rows.push(IterationLog {
            iteration: f[0].parse().map_err(|_| bad())?,
            seconds: num(1)?,
            critic_loss: num(2)?,
            generator_loss: num(3)?,
            wasserstein: num(4)?,
            penalty: num(5)?,
            grad_norm: num(6)?,
            test_wasserstein: optional(7)?,
            quality,
            loss_scaling,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(iteration: usize, quality: Option<Quality>) -> IterationLog {
        IterationLog {
            iteration,
            seconds: 1.5 * iteration as f64,
            critic_loss: -0.1 / 3.0,
            generator_loss: 1e-7,
            wasserstein: 2.0f64.sqrt(),
            penalty: 0.0,
            grad_norm: 0.9,
            test_wasserstein: iteration.is_multiple_of(2).then_some(1.0 / 7.0),
            quality,
            loss_scaling: None,
        }
    }

    #[test]
    fn rows_read_back_exactly_with_and_without_quality() {
        let quality = Quality {
            frechet_distance: 139.7,
            classes: Some(ClassScores {
                classifier_score: 5.25 + 1.0 / 3.0,
                coverage: ModeCoverage {
                    histogram: vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 0],
                    covered: 9,
                    kl_from_uniform: 0.2,
                    confident_share: 0.5,
                },
            }),
        };
        let scaled = LossScaleLog {
            critic_scale: 32768.0,
            generator_scale: 0.5f64.powi(130),
            critic_skipped: 2,
            generator_skipped: 1,
        };
        let rows = vec![
            row(1, None),
            row(2, Some(quality.clone())),
            row(3, Some(quality.clone().features_only())),
            IterationLog {
                loss_scaling: Some(scaled),
                ..row(4, Some(quality.clone()))
            },
            IterationLog {
                loss_scaling: Some(scaled),
                ..row(5, None)
            },
        ];
        let text = to_csv(&rows);
        assert_eq!(text.lines().next().unwrap().split(',').count(), 27);
        assert!(text.lines().all(|l| l.split(',').count() == 27));
        assert_eq!(parse_csv(&text, "m.csv").unwrap(), rows);
        // A file from before the loss-scale columns reads as rows without them.
        let before: String = text
            .lines()
            .take(4)
            .map(|l| l.split(',').take(23).collect::<Vec<_>>().join(",") + "\n")
            .collect();
        assert_eq!(parse_csv(&before, "m.csv").unwrap(), rows[..3]);
        let bad = text.replace(",32768.0,", ",x,");
        assert!(parse_csv(&bad, "m.csv").unwrap_err().0.contains("line 5"));
    }

    #[test]
    fn old_eight_column_files_still_read_and_bad_ones_are_named() {
        let old = "iteration,seconds,critic_loss,generator_loss,wasserstein,penalty,grad_norm,test_wasserstein\n\
                   1,0.5,1,2,3,0,0,\n2,1.0,1,2,3,0,0,0.25\n";
        let rows = parse_csv(old, "old.csv").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].test_wasserstein, Some(0.25));
        assert!(rows.iter().all(|r| r.quality.is_none()));
        let err = parse_csv("iteration,seconds,critic_loss,generator_loss,wasserstein,penalty,grad_norm,test_wasserstein\n1,x,1,2,3,0,0,\n", "bad.csv")
            .unwrap_err();
        assert!(err.0.contains("bad.csv: line 2"), "{err}");
        assert!(parse_csv("a,b\n", "other.csv")
            .unwrap_err()
            .0
            .contains("not a metrics file"));
    }
}
