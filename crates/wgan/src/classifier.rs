//! The digit classifier behind the quality metrics: a small CNN trained by earthmover itself
//! on the training split. Its penultimate layer gives the features of the Frechet distance,
//! its softmax the class probabilities of the classifier score and of mode coverage.

use crate::data::{Batcher, Split};
use crate::metrics::{classifier_score, frechet_distance, mean_and_covariance, mode_coverage, ModeCoverage};
use crate::nn::init::Init;
use crate::nn::{Activation, Conv2d, Linear, Module, Sequential, TensorKind, Unflatten};
use crate::optim::{Adam, Optimizer};
use earthmover_tensor::{no_grad, ConvOptions, Tensor};
use rand::Rng;

/// Width of the penultimate layer: the feature vector of the Frechet distance.
pub const FEATURES: usize = 128;
/// Pixels are given to the classifier in [0, 1].
pub const INPUT_RANGE: (f64, f64) = (0.0, 1.0);

/// conv 1->32 5x5 s2 (14x14), relu, conv 32->64 5x5 s2 (7x7), relu, linear 3136->128, relu,
/// linear 128->10.
pub struct Classifier {
    features: Sequential,
    head: Linear,
}

impl Classifier {
    pub fn new<R: Rng + ?Sized>(rng: &mut R) -> Classifier {
        let down = ConvOptions::new().stride(2).padding(2);
        let features = Sequential::new()
            .named("conv1", Conv2d::new(1, 32, 5, down, Init::PyTorch, rng))
            .named("relu1", Activation::Relu)
            .named("conv2", Conv2d::new(32, 64, 5, down, Init::PyTorch, rng))
            .named("relu2", Activation::Relu)
            .named("flatten", Unflatten(vec![]))
            .named("fc1", Linear::new(64 * 7 * 7, FEATURES, Init::PyTorch, rng))
            .named("relu3", Activation::Relu);
        let head = Linear::new(FEATURES, 10, Init::PyTorch, rng);
        Classifier { features, head }
    }

    /// Penultimate features `[N, 128]` and class probabilities `[N, 10]` of images
    /// `[N, 1, 28, 28]` with pixels in [0, 1], in batches of 500, without a graph.
    pub fn features_and_probabilities(&self, images: &Tensor) -> (Vec<f64>, Vec<f64>) {
        let n = images.shape()[0];
        let (mut features, mut probs) = (Vec::new(), Vec::new());
        no_grad(|| {
            for start in (0..n).step_by(500) {
                let batch = images.narrow(0, start, (n - start).min(500));
                let f = self.features.forward(&batch);
                let p = self.head.forward(&f).log_softmax(1).exp();
                features.extend(f.to_vec_f64());
                probs.extend(p.to_vec_f64());
            }
        });
        (features, probs)
    }

    /// Share of `split` classified correctly.
    pub fn accuracy(&self, split: &Split) -> f64 {
        let indices: Vec<usize> = (0..split.len()).collect();
        let (_, probs) = self.features_and_probabilities(&split.images(&indices, INPUT_RANGE));
        let correct = probs
            .chunks(10)
            .zip(&split.labels)
            .filter(|(row, &label)| {
                let best = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i);
                best == Some(label as usize)
            })
            .count();
        correct as f64 / split.len() as f64
    }

    /// Train with Adam on cross-entropy for `epochs` passes over `train`, batch 64, each image
    /// shifted by up to 2 pixels in each direction (9,000 digits are few: without that the
    /// network memorises them), with the learning rate decaying from 1e-3 by 0.85 per epoch.
    /// Calls `report(epoch, mean loss)` after each epoch.
    pub fn fit<R: Rng + ?Sized>(&self, train: &Split, epochs: usize, rng: &mut R, mut report: impl FnMut(usize, f64)) {
        let mut optimizer = Adam::new(self.parameters(), 1e-3, (0.9, 0.999));
        let mut batcher = Batcher::new(train.len());
        let steps = train.len().div_ceil(64);
        for epoch in 0..epochs {
            optimizer.set_learning_rate(1e-3 * 0.85f64.powi(epoch as i32));
            let mut total = 0.0;
            for _ in 0..steps {
                let indices = batcher.next_batch(64, rng);
                let labels: Vec<usize> = indices.iter().map(|&i| train.labels[i] as usize).collect();
                let images = shifted(&train.images(&indices, INPUT_RANGE), 2, rng);
                let loss = self.forward(&images).cross_entropy(&labels);
                total += loss.item();
                optimizer.zero_grad();
                loss.backward();
                optimizer.step();
            }
            report(epoch + 1, total / steps as f64);
        }
    }
}

/// Each image of `[N, 1, H, W]` moved by its own random offset of up to `max` pixels along
/// each axis, with zeros shifted in.
fn shifted<R: Rng + ?Sized>(images: &Tensor, max: usize, rng: &mut R) -> Tensor {
    let (n, h, w) = (images.shape()[0], images.shape()[2], images.shape()[3]);
    let src = images.to_vec_f32();
    let mut out = vec![0.0f32; src.len()];
    let span = 2 * max as i64 + 1;
    for s in 0..n {
        let dy = (rng.next_u32() as i64 % span) - max as i64;
        let dx = (rng.next_u32() as i64 % span) - max as i64;
        for y in 0..h as i64 {
            let sy = y - dy;
            if sy < 0 || sy >= h as i64 {
                continue;
            }
            for x in 0..w as i64 {
                let sx = x - dx;
                if sx >= 0 && sx < w as i64 {
                    out[s * h * w + (y as usize) * w + x as usize] = src[s * h * w + (sy as usize) * w + sx as usize];
                }
            }
        }
    }
    Tensor::from_vec(out, images.shape()).expect("same shape")
}

impl Module for Classifier {
    /// Logits `[N, 10]`.
    fn forward(&self, x: &Tensor) -> Tensor {
        self.head.forward(&self.features.forward(x))
    }
    fn visit(&self, prefix: &str, visit: &mut dyn FnMut(&str, &Tensor, TensorKind)) {
        self.features.visit(prefix, visit);
        self.head.visit(&crate::nn::join(prefix, "fc2"), visit);
    }
}

/// The quality of a set of images as the classifier sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Quality {
    /// Frechet distance of the penultimate features to the reference set's.
    pub frechet_distance: f64,
    /// What the classifier's classes say of the images; `None` where its classes are not the
    /// data's (the digit classifier on other images), so that only its features measure.
    pub classes: Option<ClassScores>,
}

/// The class-based scores of a set of images.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassScores {
    /// `exp(E KL(p(y|x) || p(y)))`, from 1 to 10.
    pub classifier_score: f64,
    pub coverage: ModeCoverage,
}

impl Quality {
    /// The Frechet distance alone: for images whose classes are not the classifier's.
    pub fn features_only(self) -> Quality {
        Quality { classes: None, ..self }
    }
}

/// The mean and covariance of a reference set's features (the test split, say).
pub struct Reference {
    pub mean: Vec<f64>,
    pub covariance: Vec<f64>,
}

impl Classifier {
    pub fn reference(&self, images: &Tensor) -> Reference {
        let (features, _) = self.features_and_probabilities(images);
        let (mean, covariance) = mean_and_covariance(&features, FEATURES);
        Reference { mean, covariance }
    }

    /// Score `images` (pixels in [0, 1]) against `reference`; a sample counts as confidently
    /// classified when its top probability reaches 0.9.
    pub fn quality(&self, images: &Tensor, reference: &Reference) -> Quality {
        let (features, probs) = self.features_and_probabilities(images);
        let (mean, covariance) = mean_and_covariance(&features, FEATURES);
        Quality {
            frechet_distance: frechet_distance(&mean, &covariance, &reference.mean, &reference.covariance),
            classes: Some(ClassScores {
                classifier_score: classifier_score(&probs, 10),
                coverage: mode_coverage(&probs, 10, 0.9),
            }),
        }
    }
}
