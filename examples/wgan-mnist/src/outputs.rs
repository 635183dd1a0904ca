//! What a training run writes: sample grids, metrics.csv with its plots, and checkpoints.

use crate::quality::QualityProbe;
use crate::sample::sample_eval;
use earthmover_tensor::Tensor;
use earthmover_wgan::checkpoint::{save_checkpoint, save_generator};
use earthmover_wgan::classifier::Quality;
use earthmover_wgan::history;
use earthmover_wgan::io::write_atomic;
use earthmover_wgan::plot::{line_plot, median_filter, panels, sample_grid, Panel, Series, CLASS_COLORS};
use earthmover_wgan::train::{Algo, IterationLog, Trainer};
use earthmover_wgan::{Error, Result};
use std::path::PathBuf;

/// Everything a run writes, in one place.
pub struct Outputs {
    pub dir: PathBuf,
    pub fixed_noise: Tensor,
    /// The classifier that scores samples, when `--eval-every` is on.
    pub quality_probe: Option<QualityProbe>,
}

impl Outputs {
    pub fn checkpoint_path(&self) -> PathBuf {
        self.dir.join("checkpoint.safetensors")
    }

    pub fn save_samples(&self, trainer: &Trainer) -> Result<PathBuf> {
        let images = sample_eval(&trainer.generator, &self.fixed_noise);
        let path = self
            .dir
            .join("samples")
            .join(format!("iter_{:06}.png", trainer.iteration));
        write_atomic(&path, &sample_grid(&images, trainer.generator.output_range, 8, 2))?;
        Ok(path)
    }

    pub fn save_logs(&self, rows: &[IterationLog], algo: Algo) -> Result<()> {
        write_atomic(&self.dir.join("metrics.csv"), history::to_csv(rows).as_bytes())?;
        if !rows.is_empty() {
            write_atomic(&self.dir.join("wasserstein.png"), &wasserstein_plot(rows, algo)?)?;
        }
        if let Some(probe) = &self.quality_probe {
            if rows.iter().any(|r| r.quality.is_some()) {
                write_atomic(&self.dir.join("quality.png"), &quality_plot(rows, &probe.real)?)?;
            }
        }
        Ok(())
    }

    pub fn save_checkpoint(&self, trainer: &Trainer) -> Result<()> {
        save_checkpoint(trainer, &self.checkpoint_path())?;
        save_generator(trainer, &self.dir.join("generator.safetensors"))
    }
}

fn wasserstein_plot(rows: &[IterationLog], algo: Algo) -> Result<Vec<u8>> {
    let train: Vec<(f64, f64)> = rows.iter().map(|r| (r.iteration as f64, r.wasserstein)).collect();
    let window = (rows.len() / 50).max(5) | 1;
    let smooth = median_filter(&train.iter().map(|p| p.1).collect::<Vec<_>>(), window);
    let test: Vec<(f64, f64)> = rows
        .iter()
        .filter_map(|r| r.test_wasserstein.map(|w| (r.iteration as f64, w)))
        .collect();
    let series = vec![
        Series {
            name: "train (raw)".into(),
            points: train.clone(),
            color: (190, 200, 225),
        },
        Series {
            name: format!("train (median of {window})"),
            points: train.iter().zip(smooth).map(|(p, s)| (p.0, s)).collect(),
            color: (30, 80, 200),
        },
        Series {
            name: "test".into(),
            points: test,
            color: (220, 60, 30),
        },
    ];
    let title = match algo {
        Algo::Gan => "mean D(real) - mean D(fake) (GAN logits)".to_string(),
        _ => format!("Wasserstein estimate ({algo})"),
    };
    line_plot(
        &title,
        "generator iteration",
        "E[C(real)] - E[C(fake)]",
        &series,
        (900, 500),
    )
    .map_err(Error)
}

/// Frechet distance, classifier score, confident share and the class shares over training,
/// each beside the real digits' value.
fn quality_plot(rows: &[IterationLog], real: &Quality) -> Result<Vec<u8>> {
    let scored: Vec<(f64, &Quality)> = rows
        .iter()
        .filter_map(|r| r.quality.as_ref().map(|q| (r.iteration as f64, q)))
        .collect();
    let first = scored.first().map_or(0.0, |p| p.0);
    let last = scored.last().map_or(1.0, |p| p.0);
    let line = |name: &str, value: fn(&Quality) -> f64, color| Series {
        name: name.to_string(),
        points: scored.iter().map(|(x, q)| (*x, value(q))).collect(),
        color,
    };
    let real_line = |name: &str, value: f64| Series {
        name: name.to_string(),
        points: vec![(first, value), (last, value)],
        color: (150, 150, 150),
    };
    let panel = |title: &str, y: &str, series: Vec<Series>| Panel {
        title: title.to_string(),
        x_label: "generator iteration".to_string(),
        y_label: y.to_string(),
        series,
    };
    let classes = (0..10)
        .map(|c| Series {
            name: c.to_string(),
            points: scored
                .iter()
                .map(|(x, q)| {
                    let total: usize = q.coverage.histogram.iter().sum();
                    (*x, q.coverage.histogram[c] as f64 / total.max(1) as f64)
                })
                .collect(),
            color: CLASS_COLORS[c],
        })
        .chain([real_line("uniform", 0.1)])
        .collect();
    let blue = (30, 80, 200);
    panels(
        &[
            panel(
                "Frechet distance to the test digits",
                "FD (lower is better)",
                vec![
                    line("samples", |q| q.frechet_distance, blue),
                    real_line("train digits", real.frechet_distance),
                ],
            ),
            panel(
                "classifier score",
                "exp E KL(p(y|x) || p(y))",
                vec![
                    line("samples", |q| q.classifier_score, blue),
                    real_line("test digits", real.classifier_score),
                ],
            ),
            panel(
                "confidently classified (p >= 0.9)",
                "share of samples",
                vec![
                    line("samples", |q| q.coverage.confident_share, blue),
                    real_line("test digits", real.coverage.confident_share),
                ],
            ),
            panel("predicted class of the samples", "share of samples", classes),
        ],
        2,
        (1200, 800),
    )
    .map_err(Error)
}
