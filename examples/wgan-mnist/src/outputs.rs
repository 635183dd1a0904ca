//! What a training run writes: sample grids, metrics.csv with its plots, and checkpoints.

use crate::quality::QualityProbe;
use crate::sample::sample_eval;
use earthmover_tensor::Tensor;
use earthmover_wgan::checkpoint::{save_checkpoint, save_generator};
use earthmover_wgan::classifier::{ClassScores, Quality};
use earthmover_wgan::history;
use earthmover_wgan::io::{write_atomic, DirLock};
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
    /// The folder's lock, held for the whole run, so that no second run writes into it.
    pub _lock: DirLock,
}

/// Lock the output folder `dir` (creating it) for this process: before anything is written
/// into it, and for as long as the value lives.
/// The files a run writes into its folder, by name (the sample grids go into [`SAMPLES`] as
/// `iter_NNNNNN.png`).
pub const CHECKPOINT: &str = "checkpoint.safetensors";
pub const GENERATOR: &str = "generator.safetensors";
pub const METRICS: &str = "metrics.csv";
pub const SETTINGS: &str = "config.json";
pub const WASSERSTEIN_PLOT: &str = "wasserstein.png";
pub const QUALITY_PLOT: &str = "quality.png";
pub const SAMPLES: &str = "samples";
pub const SAMPLE_PREFIX: &str = "iter_";
/// Every file of a run but its sample grids: what `--overwrite` deletes, with them.
pub const RUN_FILES: [&str; 6] = [CHECKPOINT, GENERATOR, METRICS, SETTINGS, WASSERSTEIN_PLOT, QUALITY_PLOT];

pub fn lock_output_folder(dir: &std::path::Path) -> Result<DirLock> {
    DirLock::acquire(dir, "wgan-mnist", "wait for it or choose another --out")
}

impl Outputs {
    pub fn checkpoint_path(&self) -> PathBuf {
        self.dir.join(CHECKPOINT)
    }

    /// The sample grid of iteration `iteration`.
    pub fn sample_path(&self, iteration: usize) -> PathBuf {
        self.dir
            .join(SAMPLES)
            .join(format!("{SAMPLE_PREFIX}{iteration:06}.png"))
    }

    pub fn save_samples(&self, trainer: &Trainer) -> Result<PathBuf> {
        // From the average of the generator's weights when the run keeps one.
        let images = sample_eval(trainer.sampler(), &self.fixed_noise);
        let path = self.sample_path(trainer.iteration);
        write_atomic(&path, &sample_grid(&images, trainer.sampler().output_range, 8, 2))?;
        Ok(path)
    }

    pub fn save_logs(&self, rows: &[IterationLog], algo: Algo) -> Result<()> {
        write_atomic(&self.dir.join(METRICS), history::to_csv(rows).as_bytes())?;
        if !rows.is_empty() {
            write_atomic(&self.dir.join(WASSERSTEIN_PLOT), &wasserstein_plot(rows, algo)?)?;
        }
        if let Some(probe) = &self.quality_probe {
            if rows.iter().any(|r| r.quality.is_some()) {
                write_atomic(&self.dir.join(QUALITY_PLOT), &quality_plot(rows, &probe.real)?)?;
            }
        }
        Ok(())
    }

    pub fn save_checkpoint(&self, trainer: &Trainer) -> Result<()> {
        save_checkpoint(trainer, &self.checkpoint_path())?;
        save_generator(trainer, &self.dir.join(GENERATOR))
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
/// each beside the real images' value; the Frechet distance alone where the classifier's
/// classes do not apply to the data.
fn quality_plot(rows: &[IterationLog], real: &Quality) -> Result<Vec<u8>> {
    let scored: Vec<(f64, &Quality)> = rows
        .iter()
        .filter_map(|r| r.quality.as_ref().map(|q| (r.iteration as f64, q)))
        .collect();
    let by_class: Vec<(f64, &ClassScores)> = scored
        .iter()
        .filter_map(|(x, q)| q.classes.as_ref().map(|c| (*x, c)))
        .collect();
    let first = scored.first().map_or(0.0, |p| p.0);
    let last = scored.last().map_or(1.0, |p| p.0);
    let blue = (30, 80, 200);
    let class_line = |name: &str, value: fn(&ClassScores) -> f64| Series {
        name: name.to_string(),
        points: by_class.iter().map(|(x, c)| (*x, value(c))).collect(),
        color: blue,
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
    let frechet = panel(
        match real.classes {
            Some(_) => "Frechet distance to the test images",
            None => "Frechet distance to the test images (digit classifier's features)",
        },
        "FD (lower is better)",
        vec![
            Series {
                name: "samples".to_string(),
                points: scored.iter().map(|(x, q)| (*x, q.frechet_distance)).collect(),
                color: blue,
            },
            real_line("train images", real.frechet_distance),
        ],
    );
    let Some(real_classes) = &real.classes else {
        return panels(&[frechet], 1, (900, 500)).map_err(Error);
    };
    let classes = (0..10)
        .map(|c| Series {
            name: c.to_string(),
            points: by_class
                .iter()
                .map(|(x, scores)| {
                    let histogram = &scores.coverage.histogram;
                    let total: usize = histogram.iter().sum();
                    (*x, histogram[c] as f64 / total.max(1) as f64)
                })
                .collect(),
            color: CLASS_COLORS[c],
        })
        .chain([real_line("uniform", 0.1)])
        .collect();
    panels(
        &[
            frechet,
            panel(
                "classifier score",
                "exp E KL(p(y|x) || p(y))",
                vec![
                    class_line("samples", |c| c.classifier_score),
                    real_line("test images", real_classes.classifier_score),
                ],
            ),
            panel(
                "confidently classified (p >= 0.9)",
                "share of samples",
                vec![
                    class_line("samples", |c| c.coverage.confident_share),
                    real_line("test images", real_classes.coverage.confident_share),
                ],
            ),
            panel("predicted class of the samples", "share of samples", classes),
        ],
        2,
        (1200, 800),
    )
    .map_err(Error)
}
