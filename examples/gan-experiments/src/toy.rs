//! 2-D toy data as in the WGAN-GP authors' `gan_toy.py`: eight Gaussians on a ring, 25 on a
//! grid, and the swiss roll, learnt by an MLP generator against an MLP critic (3 hidden layers
//! of 512, relu) with each algorithm; then the mode-coverage figures of the mode-collapse
//! literature over 2,500 samples, and a scatter plot over the critic's values.

use earthmover_tensor::{no_grad, DType, Tensor};
use earthmover_wgan::nn::init::Init;
use earthmover_wgan::nn::{Activation, Linear, Module, Sequential};
use earthmover_wgan::optim::Optimizer;
use earthmover_wgan::train::{generator_iteration, Algo, CriticSchedule, Gan, Objective, Precision, StepLog};
use earthmover_wgan::Result;
use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;
use std::fmt;
use std::str::FromStr;

/// Which toy distribution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Toy {
    /// Eight Gaussians on a circle of radius 2 (std 0.02), all scaled by 1/1.414.
    EightGaussians,
    /// 25 Gaussians on the grid {-4, -2, 0, 2, 4}^2 (std 0.05), all scaled by 1/2.828.
    TwentyFiveGaussians,
    /// sklearn's swiss roll (noise 0.25), its (x, z) plane, scaled by 1/7.5.
    SwissRoll,
}

impl FromStr for Toy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Toy, String> {
        match s {
            "8gaussians" => Ok(Toy::EightGaussians),
            "25gaussians" => Ok(Toy::TwentyFiveGaussians),
            "swissroll" => Ok(Toy::SwissRoll),
            other => Err(format!(
                "unknown toy data `{other}`: expected 8gaussians, 25gaussians or swissroll"
            )),
        }
    }
}

impl fmt::Display for Toy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Toy::EightGaussians => "8gaussians",
            Toy::TwentyFiveGaussians => "25gaussians",
            Toy::SwissRoll => "swissroll",
        })
    }
}

/// The swiss roll's angle runs over [1.5 pi, 4.5 pi].
const ROLL_ANGLES: (f64, f64) = (1.5 * PI, 4.5 * PI);
/// Arcs the swiss roll is cut into to count "modes" (it has no discrete ones).
pub const ROLL_SEGMENTS: usize = 10;

impl Toy {
    /// The centres of the mixture components (empty for the swiss roll), after scaling.
    pub fn modes(self) -> Vec<(f64, f64)> {
        match self {
            Toy::EightGaussians => {
                let s = 1.0 / 2.0f64.sqrt();
                [
                    (1.0, 0.0),
                    (-1.0, 0.0),
                    (0.0, 1.0),
                    (0.0, -1.0),
                    (s, s),
                    (s, -s),
                    (-s, s),
                    (-s, -s),
                ]
                .iter()
                .map(|&(x, y)| (2.0 * x / 1.414, 2.0 * y / 1.414))
                .collect()
            }
            Toy::TwentyFiveGaussians => (-2..=2)
                .flat_map(|i| (-2..=2).map(move |j| (2.0 * i as f64 / 2.828, 2.0 * j as f64 / 2.828)))
                .collect(),
            Toy::SwissRoll => Vec::new(),
        }
    }

    /// The standard deviation of each coordinate's noise, after scaling.
    pub fn std(self) -> f64 {
        match self {
            Toy::EightGaussians => 0.02 / 1.414,
            Toy::TwentyFiveGaussians => 0.05 / 2.828,
            Toy::SwissRoll => 0.25 / 7.5,
        }
    }

    /// How many "modes" coverage is counted over.
    pub fn mode_count(self) -> usize {
        match self {
            Toy::SwissRoll => ROLL_SEGMENTS,
            _ => self.modes().len(),
        }
    }

    /// One sample.
    pub fn sample<R: Rng + ?Sized>(self, rng: &mut R) -> (f64, f64) {
        match self {
            Toy::EightGaussians | Toy::TwentyFiveGaussians => {
                let modes = self.modes();
                let (x, y) = modes[rng.random_range(0..modes.len())];
                let (dx, dy): (f64, f64) = (StandardNormal.sample(rng), StandardNormal.sample(rng));
                (x + self.std() * dx, y + self.std() * dy)
            }
            Toy::SwissRoll => {
                let t = ROLL_ANGLES.0 + (ROLL_ANGLES.1 - ROLL_ANGLES.0) * rng.random::<f64>();
                let (dx, dy): (f64, f64) = (StandardNormal.sample(rng), StandardNormal.sample(rng));
                let noise = 0.25;
                ((t * t.cos() + noise * dx) / 7.5, (t * t.sin() + noise * dy) / 7.5)
            }
        }
    }

    /// A batch `[n, 2]`.
    pub fn batch<R: Rng + ?Sized>(self, n: usize, rng: &mut R) -> Tensor {
        let values: Vec<f32> = (0..n)
            .flat_map(|_| {
                let (x, y) = self.sample(rng);
                [x as f32, y as f32]
            })
            .collect();
        Tensor::from_vec(values, &[n, 2]).expect("n x 2 values")
    }

    /// The mode (or, for the swiss roll, the arc) nearest to `p`, and its distance.
    fn nearest_mode(self, p: (f64, f64), roll: &[(f64, f64, usize)]) -> (usize, f64) {
        let distance = |a: (f64, f64), b: (f64, f64)| ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt();
        match self {
            Toy::SwissRoll => roll
                .iter()
                .map(|&(x, y, arc)| (arc, distance(p, (x, y))))
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .expect("a non-empty curve"),
            _ => self
                .modes()
                .into_iter()
                .enumerate()
                .map(|(i, m)| (i, distance(p, m)))
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .expect("modes"),
        }
    }
}

/// The swiss roll's noiseless curve, densely sampled, each point with the arc it belongs to.
fn roll_curve() -> Vec<(f64, f64, usize)> {
    let points = 4000;
    (0..points)
        .map(|i| {
            let u = i as f64 / (points - 1) as f64;
            let t = ROLL_ANGLES.0 + (ROLL_ANGLES.1 - ROLL_ANGLES.0) * u;
            let arc = ((u * ROLL_SEGMENTS as f64) as usize).min(ROLL_SEGMENTS - 1);
            (t * t.cos() / 7.5, t * t.sin() / 7.5, arc)
        })
        .collect()
}

/// The mode-coverage figures of a set of samples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Coverage {
    /// Modes (swiss roll: arcs) with at least `min_per_mode` high-quality samples.
    pub modes_covered: usize,
    pub modes: usize,
    /// Share of samples within 3 standard deviations of their nearest mode (swiss roll: of the
    /// noiseless curve).
    pub high_quality: f64,
    /// High-quality samples per mode.
    pub per_mode: Vec<usize>,
}

/// Score `points` against `toy`'s modes: a sample is of high quality within 3 standard
/// deviations of its nearest mode, and a mode counts as covered when at least `min_per_mode`
/// high-quality samples fall to it.
pub fn coverage(toy: Toy, points: &[(f64, f64)], min_per_mode: usize) -> Coverage {
    let roll = if toy == Toy::SwissRoll {
        roll_curve()
    } else {
        Vec::new()
    };
    let mut per_mode = vec![0; toy.mode_count()];
    let mut good = 0;
    for &p in points {
        let (mode, distance) = toy.nearest_mode(p, &roll);
        if distance <= 3.0 * toy.std() {
            good += 1;
            per_mode[mode] += 1;
        }
    }
    Coverage {
        modes_covered: per_mode.iter().filter(|&&n| n >= min_per_mode.max(1)).count(),
        modes: per_mode.len(),
        high_quality: good as f64 / points.len().max(1) as f64,
        per_mode,
    }
}

/// `2 -> 512 -> 512 -> 512 -> out`, relu between: both networks of `gan_toy.py`.
pub fn mlp<R: Rng + ?Sized>(out: usize, rng: &mut R) -> Sequential {
    let width = 512;
    Sequential::new()
        .push(Linear::new(2, width, Init::PyTorch, rng))
        .push(Activation::Relu)
        .push(Linear::new(width, width, Init::PyTorch, rng))
        .push(Activation::Relu)
        .push(Linear::new(width, width, Init::PyTorch, rng))
        .push(Activation::Relu)
        .push(Linear::new(width, out, Init::PyTorch, rng))
}

/// A toy run's settings: `gan_toy.py`'s, per algorithm.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToyConfig {
    pub toy: Toy,
    pub algo: Algo,
    pub iters: usize,
    pub batch_size: usize,
    pub n_critic: usize,
    pub lr: f64,
    pub betas: (f64, f64),
    pub clip: f64,
    pub lambda: f64,
    pub seed: u64,
}

impl ToyConfig {
    /// WGAN-GP: Adam 1e-4, betas (0.5, 0.9), lambda 0.1, 5 critic steps (the toy script's
    /// values); WGAN: RMSProp 5e-5, clip 0.01, 5 critic steps; GAN: Adam 2e-4, betas (0.5,
    /// 0.999), one discriminator step. Batch 256 for all.
    pub fn new(toy: Toy, algo: Algo, iters: usize, seed: u64) -> ToyConfig {
        let (lr, betas, n_critic) = match algo {
            Algo::WganGp => (1e-4, (0.5, 0.9), 5),
            Algo::Wgan => (5e-5, (0.0, 0.0), 5),
            Algo::Gan => (2e-4, (0.5, 0.999), 1),
        };
        ToyConfig {
            toy,
            algo,
            iters,
            batch_size: 256,
            n_critic,
            lr,
            betas,
            clip: 0.01,
            lambda: 0.1,
            seed,
        }
    }

    /// The objective of the shared training step.
    pub fn objective(&self) -> Objective {
        Objective {
            algo: self.algo,
            clip: self.clip,
            lambda: self.lambda,
            // The MLP critic scores each sample on its own, so one joint pass would be the same
            // maths; but it rounds differently, and the results in docs/experiments.md were
            // trained with a pass for each batch.
            joint_critic_pass: false,
            precision: Precision::F32,
        }
    }

    /// `n_critic` critic steps before every generator step: the toy script has no warm-up.
    pub fn critic_schedule(&self) -> CriticSchedule {
        CriticSchedule {
            n_critic: self.n_critic,
            warmup: false,
        }
    }
}

/// A generator and a critic being trained on toy data.
pub struct ToyGan {
    pub config: ToyConfig,
    pub generator: Sequential,
    pub critic: Sequential,
    generator_optim: Box<dyn Optimizer>,
    critic_optim: Box<dyn Optimizer>,
    rng: StdRng,
    /// Generator iterations done.
    pub iteration: usize,
}

impl ToyGan {
    pub fn new(config: ToyConfig) -> ToyGan {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let generator = mlp(2, &mut rng);
        let critic = mlp(1, &mut rng);
        let optimizer = |params| config.algo.optimizer(params, config.lr, config.betas);
        let (generator_optim, critic_optim) = (optimizer(generator.parameters()), optimizer(critic.parameters()));
        ToyGan {
            config,
            generator,
            critic,
            generator_optim,
            critic_optim,
            rng,
            iteration: 0,
        }
    }

    /// One generator iteration through the library's shared step: `n_critic` critic steps on
    /// fresh toy batches, then a generator step. An error when a loss turns non-finite.
    pub fn step(&mut self) -> Result<StepLog> {
        let (toy, batch_size) = (self.config.toy, self.config.batch_size);
        let gan = Gan {
            generator: &self.generator,
            critic: &self.critic,
            generator_optim: &mut *self.generator_optim,
            critic_optim: &mut *self.critic_optim,
            // The toy runs are f32: nothing to scale.
            critic_scaler: None,
            generator_scaler: None,
        };
        let log = generator_iteration(
            &self.config.objective(),
            self.config.critic_schedule().critic_steps(self.iteration),
            gan,
            |rng| toy.batch(batch_size, rng),
            |rng| Tensor::randn_with(&[batch_size, 2], DType::F32, rng),
            &mut self.rng,
        )
        .map_err(|diverged| diverged.at_iteration(self.iteration + 1))?;
        self.iteration += 1;
        Ok(log)
    }

    /// `n` generated points.
    pub fn samples(&self, n: usize, seed: u64) -> Vec<(f64, f64)> {
        let noise = Tensor::randn(&[n, 2], DType::F32, seed);
        let points = no_grad(|| self.generator.forward(&noise)).to_vec_f64();
        points.chunks(2).map(|p| (p[0], p[1])).collect()
    }

    /// The critic's value at the centres of a `cells x cells` grid over `[-extent, extent]^2`,
    /// row 0 at the bottom.
    pub fn critic_field(&self, extent: f64, cells: usize) -> Vec<f64> {
        let step = 2.0 * extent / cells as f64;
        let centre = |i: usize| -extent + (i as f64 + 0.5) * step;
        let points: Vec<f32> = (0..cells)
            .flat_map(|row| (0..cells).flat_map(move |col| [centre(col) as f32, centre(row) as f32]))
            .collect();
        let grid = Tensor::from_vec(points, &[cells * cells, 2]).expect("a grid of points");
        no_grad(|| self.critic.forward(&grid)).to_vec_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_samples_cover_every_mode_at_high_quality() {
        let mut rng = StdRng::seed_from_u64(1);
        for toy in [Toy::EightGaussians, Toy::TwentyFiveGaussians, Toy::SwissRoll] {
            let points: Vec<_> = (0..2500).map(|_| toy.sample(&mut rng)).collect();
            let c = coverage(toy, &points, 20);
            assert_eq!(c.modes_covered, c.modes, "{toy}: {c:?}");
            // A 2-D Gaussian puts 1 - exp(-4.5) = 98.9% of its mass within 3 standard deviations.
            assert!(c.high_quality > 0.97, "{toy}: {c:?}");
        }
    }

    #[test]
    fn a_collapsed_generator_covers_one_mode_and_a_spread_one_has_low_quality() {
        let mode = Toy::EightGaussians.modes()[3];
        let collapsed = vec![mode; 2500];
        let c = coverage(Toy::EightGaussians, &collapsed, 20);
        assert_eq!((c.modes_covered, c.high_quality), (1, 1.0));
        // Points at the origin are far from every mode of the ring.
        let c = coverage(Toy::EightGaussians, &[(0.0, 0.0); 100], 20);
        assert_eq!((c.modes_covered, c.high_quality), (0, 0.0));
        assert_eq!(Toy::TwentyFiveGaussians.modes().len(), 25);
    }

    #[test]
    fn every_algorithm_takes_finite_steps_and_moves_the_generator() {
        for algo in [Algo::Gan, Algo::Wgan, Algo::WganGp] {
            let mut config = ToyConfig::new(Toy::EightGaussians, algo, 2, 3);
            config.batch_size = 16;
            let mut gan = ToyGan::new(config);
            let before = gan.samples(4, 0);
            for _ in 0..2 {
                let log = gan.step().unwrap();
                assert!(log.critic.loss.is_finite() && log.generator_loss.is_finite());
            }
            assert_ne!(before, gan.samples(4, 0), "{algo}");
            assert_eq!(gan.critic_field(2.0, 5).len(), 25);
        }
    }
}
