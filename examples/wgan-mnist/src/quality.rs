//! The quality probe: the digit classifier that scores a generator's samples (classifier score,
//! Frechet distance, class coverage), for `train --eval-every` and `eval`.

use crate::sample::sample_eval;
use earthmover_tensor::Tensor;
use earthmover_wgan::checkpoint::load_module_bytes;
use earthmover_wgan::classifier::{Classifier, Quality, Reference, INPUT_RANGE};
use earthmover_wgan::data::{Mnist, Split};
use earthmover_wgan::models::Generator;
use earthmover_wgan::{bail, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// The digit classifier with the test split's feature statistics, and the real digits' own
/// scores to show beside the samples'.
pub struct QualityProbe {
    classifier: Classifier,
    reference: Reference,
    /// `classifier_score` and coverage of the test split; `frechet_distance` of the train split
    /// to the test split.
    pub real: Quality,
}

impl QualityProbe {
    pub fn new(data: &Mnist) -> Result<QualityProbe> {
        let classifier = Classifier::new(&mut StdRng::seed_from_u64(0));
        load_module_bytes(&classifier, crate::embedded::CLASSIFIER, "built-in classifier")?;
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
        Ok(QualityProbe {
            classifier,
            reference,
            real,
        })
    }

    /// Score `n` fresh samples of `generator`, drawn with noise from `seed`.
    pub fn measure(&self, generator: &Generator, n: usize, seed: u64) -> Quality {
        let images = generate_unit_range(generator, n, &mut StdRng::seed_from_u64(seed));
        self.classifier.quality(&images, &self.reference)
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
