//! The quality probe: the classifier that scores a generator's samples (classifier score,
//! Frechet distance, class coverage), for `train --eval-every` and `eval`, and the choice of
//! that classifier ([`Ruler`]): the built-in digit classifier for digits, one trained on the
//! data for other images, or the digit classifier's features alone.

use crate::sample::sample_eval;
use earthmover_tensor::Tensor;
use earthmover_wgan::checkpoint::{file_metadata, load_module, load_module_bytes};
use earthmover_wgan::classifier::{Classifier, Quality, Reference, INPUT_RANGE};
use earthmover_wgan::data::{Mnist, Split};
use earthmover_wgan::models::Generator;
use earthmover_wgan::{bail, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::fmt;
use std::path::{Path, PathBuf};

/// The `format` of a classifier file written by `train-classifier`.
pub const CLASSIFIER_FORMAT: &str = "earthmover-mnist-classifier-1";

/// Which classifier measures the samples, and how much of what it says applies to the data.
#[derive(Clone, Debug, PartialEq)]
pub enum Ruler {
    /// The built-in digit classifier, on digits: every measurement.
    Digits,
    /// A classifier trained on the run's data (`train-classifier --data DIR`): every
    /// measurement.
    File(PathBuf),
    /// The digit classifier on images that are not digits: its classes mean nothing there, so
    /// only the Frechet distance on its features is measured.
    DigitFeatures,
}

impl Ruler {
    /// `--classifier`'s file when given; else the digit classifier, whole on digits and its
    /// features alone on other data (with a notice saying how to get a matching classifier).
    pub fn choose(classifier: Option<&Path>, data_are_digits: bool) -> Ruler {
        match classifier {
            Some(file) => Ruler::File(file.to_path_buf()),
            None if data_are_digits => Ruler::Digits,
            None => {
                eprintln!(
                    "note: this data is not the built-in digits, so samples are scored by the Frechet distance on the \
                     digit classifier's features alone; for class-based scores, train a classifier on it \
                     (wgan-mnist train-classifier --data DIR --out FILE) and pass --classifier FILE"
                );
                Ruler::DigitFeatures
            }
        }
    }

    /// The classifier, loaded.
    fn classifier(&self) -> Result<Classifier> {
        let classifier = Classifier::new(&mut StdRng::seed_from_u64(0));
        match self {
            Ruler::Digits | Ruler::DigitFeatures => {
                load_module_bytes(&classifier, crate::embedded::CLASSIFIER, "built-in classifier")?;
            }
            Ruler::File(path) => {
                // Checked first, so that a generator or checkpoint file is named as what it is.
                if let Some(format) = file_metadata(path)?.get("format").filter(|f| *f != CLASSIFIER_FORMAT) {
                    bail!(
                        "{} is not a classifier file (its format is `{format}`); train one with wgan-mnist train-classifier",
                        path.display()
                    );
                }
                load_module(&classifier, path)?;
            }
        }
        Ok(classifier)
    }
}

/// A measurement in one line: `FD 35.2  score 8.61  classes 10  confident 87%`, or the Frechet
/// distance alone where the classes do not apply.
pub fn one_line(q: &Quality) -> String {
    match &q.classes {
        Some(c) => format!(
            "FD {:.1}  score {:.2}  classes {}  confident {:.0}%",
            q.frechet_distance,
            c.classifier_score,
            c.coverage.covered,
            100.0 * c.coverage.confident_share
        ),
        None => format!("FD {:.1} (digit features)", q.frechet_distance),
    }
}

impl fmt::Display for Ruler {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Ruler::Digits => write!(f, "the built-in digit classifier"),
            Ruler::File(path) => write!(f, "the classifier {}", path.display()),
            Ruler::DigitFeatures => write!(f, "the digit classifier's features alone (Frechet distance only)"),
        }
    }
}

/// The classifier with the test split's feature statistics, and the real images' own scores
/// to show beside the samples'.
pub struct QualityProbe {
    classifier: Classifier,
    reference: Reference,
    ruler: Ruler,
    /// `classifier_score` and coverage of the test split; `frechet_distance` of the train split
    /// to the test split.
    pub real: Quality,
}

impl QualityProbe {
    pub fn new(data: &Mnist, ruler: Ruler) -> Result<QualityProbe> {
        let classifier = ruler.classifier()?;
        let all = |split: &Split| split.images(&(0..split.len()).collect::<Vec<_>>(), INPUT_RANGE);
        let test = all(&data.test);
        if data.test.len() < 2 {
            bail!(
                "scoring samples needs at least 2 test images, the data has {}",
                data.test.len()
            );
        }
        let reference = classifier.reference(&test);
        let mut real = classifier.quality(&test, &reference);
        real.frechet_distance = classifier.quality(&all(&data.train), &reference).frechet_distance;
        if ruler == Ruler::DigitFeatures {
            real = real.features_only();
        }
        Ok(QualityProbe {
            classifier,
            reference,
            ruler,
            real,
        })
    }

    /// What measures the samples.
    pub fn ruler(&self) -> &Ruler {
        &self.ruler
    }

    /// Score `n` fresh samples of `generator`, drawn with noise from `seed`.
    pub fn measure(&self, generator: &Generator, n: usize, seed: u64) -> Quality {
        let images = generate_unit_range(generator, n, &mut StdRng::seed_from_u64(seed));
        let quality = self.classifier.quality(&images, &self.reference);
        match self.ruler {
            Ruler::DigitFeatures => quality.features_only(),
            Ruler::Digits | Ruler::File(_) => quality,
        }
    }
}

/// Sample `n` images from `generator` in batches, in evaluation mode, with pixels mapped to
/// [0, 1] (the classifier's range).
fn generate_unit_range(generator: &Generator, n: usize, rng: &mut StdRng) -> Tensor {
    let (lo, hi) = generator.output_range;
    let batches: Vec<Tensor> = (0..n)
        .step_by(500)
        .map(|start| {
            let noise = Generator::noise((n - start).min(500), rng);
            sample_eval(generator, &noise)
                .sub_scalar(lo)
                .mul_scalar(1.0 / (hi - lo))
        })
        .collect();
    let refs: Vec<&Tensor> = batches.iter().collect();
    Tensor::concat(&refs, 0)
}
