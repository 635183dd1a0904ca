//! The training loops: WGAN (weight clipping, RMSProp), WGAN-GP (gradient penalty, Adam) and
//! the standard GAN (non-saturating loss, Adam), one generator iteration at a time.

use crate::classifier::Quality;
use crate::data::{Batcher, Mnist};
use crate::models::{Critic, CriticNorm, Generator, ModelKind};
use crate::nn::init::Init;
use crate::nn::Module;
use crate::optim::{clip_weights, Adam, Optimizer, RmsProp};
use crate::penalty::{gradient_penalty, interpolate, interpolation_weights};
use crate::{bail, Result};
use earthmover_tensor::{no_grad, Device, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::Instant;

/// Which objective.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algo {
    /// Arjovsky et al.'s Algorithm 1: weight clipping, RMSProp.
    Wgan,
    /// Gulrajani et al.'s Algorithm 1: gradient penalty, Adam.
    WganGp,
    /// Goodfellow et al.'s GAN with the non-saturating generator loss.
    Gan,
}

impl FromStr for Algo {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Algo, String> {
        match s {
            "wgan" => Ok(Algo::Wgan),
            "wgan-gp" => Ok(Algo::WganGp),
            "gan" => Ok(Algo::Gan),
            other => Err(format!(
                "unknown algorithm `{other}`: expected one of wgan, wgan-gp, gan"
            )),
        }
    }
}

impl fmt::Display for Algo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algo::Wgan => "wgan",
            Algo::WganGp => "wgan-gp",
            Algo::Gan => "gan",
        })
    }
}

/// Every setting of a run. [`TrainConfig::new`] gives the papers' defaults for an algorithm.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub algo: Algo,
    pub model: ModelKind,
    /// Width of the DCGAN networks (the paper's DIM).
    pub dim: usize,
    pub critic_norm: CriticNorm,
    /// How both networks' weights are initialised.
    pub init: Init,
    /// Generator iterations.
    pub iters: usize,
    pub batch_size: usize,
    /// Critic steps per generator step.
    pub n_critic: usize,
    pub lr: f64,
    /// Adam's betas (WGAN-GP and GAN).
    pub betas: (f64, f64),
    /// Weight-clipping bound c (WGAN).
    pub clip: f64,
    /// Gradient-penalty weight lambda (WGAN-GP).
    pub lambda: f64,
    /// WGAN's reference schedule: 100 critic steps for the first 25 generator iterations and
    /// every 500th.
    pub critic_warmup: bool,
    pub seed: u64,
    /// Estimate the Wasserstein distance on held-out test images every this many iterations.
    pub test_every: usize,
}

impl TrainConfig {
    /// The published defaults: WGAN (RMSProp 5e-5, c = 0.01, n_critic 5), WGAN-GP (Adam 1e-4,
    /// betas (0, 0.9), lambda 10, n_critic 5), GAN (Adam 2e-4, betas (0.5, 0.999), one
    /// discriminator step); batch 64 for all.
    pub fn new(algo: Algo) -> TrainConfig {
        let (lr, betas, n_critic) = match algo {
            Algo::Wgan => (5e-5, (0.0, 0.9), 5),
            Algo::WganGp => (1e-4, (0.0, 0.9), 5),
            Algo::Gan => (2e-4, (0.5, 0.999), 1),
        };
        TrainConfig {
            algo,
            model: ModelKind::Dcgan,
            dim: 64,
            critic_norm: CriticNorm::None,
            // PyTorch's defaults: on MNIST they train faster than DCGAN's normal(0, 0.02)
            // (docs/training.md); `--init dcgan` gives the latter.
            init: Init::PyTorch,
            iters: 200_000,
            batch_size: 64,
            n_critic,
            lr,
            betas,
            clip: 0.01,
            lambda: 10.0,
            critic_warmup: algo == Algo::Wgan,
            seed: 0,
            test_every: 100,
        }
    }

    /// Reject settings that cannot train, each with a message saying why.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            bail!("batch size must be positive, got 0");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            bail!("learning rate must be positive and finite, got {}", self.lr);
        }
        if self.n_critic == 0 {
            bail!("n_critic must be at least 1");
        }
        if !(self.clip >= 0.0 && self.clip.is_finite()) {
            bail!("clip value must be non-negative, got {}", self.clip);
        }
        if !(self.lambda >= 0.0 && self.lambda.is_finite()) {
            bail!("gradient-penalty lambda must be non-negative, got {}", self.lambda);
        }
        let (b1, b2) = self.betas;
        if !((0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2)) {
            bail!("Adam betas must lie in [0, 1), got ({b1}, {b2})");
        }
        if self.model == ModelKind::Dcgan && self.dim == 0 {
            bail!("the DCGAN width (dim) must be positive");
        }
        if self.algo == Algo::WganGp && self.critic_norm == CriticNorm::BatchNorm {
            bail!(
                "batch-norm in the critic cannot be used with WGAN-GP: it makes each sample's score depend on \
                 the rest of its batch, so the per-sample gradient penalty no longer constrains the critic. \
                 Use --critic-norm none (the paper's choice) or layer"
            );
        }
        if self.test_every == 0 {
            bail!("test_every must be at least 1");
        }
        Ok(())
    }

    /// Critic steps before generator iteration `iteration` (counted from 0).
    pub fn critic_steps(&self, iteration: usize) -> usize {
        if self.critic_warmup && (iteration < 25 || iteration.is_multiple_of(500)) {
            100
        } else {
            self.n_critic
        }
    }
}

/// What one generator iteration measured.
#[derive(Clone, Debug, PartialEq)]
pub struct IterationLog {
    /// 1-based: the number of generator steps done.
    pub iteration: usize,
    /// Seconds since training started (this process, plus earlier runs when resumed).
    pub seconds: f64,
    /// The critic's loss at its last step (WGAN-GP: penalty included).
    pub critic_loss: f64,
    pub generator_loss: f64,
    /// `mean(C(real)) - mean(C(fake))` at the last critic step, without the penalty.
    pub wasserstein: f64,
    /// The gradient penalty (WGAN-GP; 0 otherwise).
    pub penalty: f64,
    /// The mean per-sample gradient norm on the interpolates (WGAN-GP; 0 otherwise).
    pub grad_norm: f64,
    /// The same estimate on held-out test images, every `test_every` iterations.
    pub test_wasserstein: Option<f64>,
    /// Sample quality as the digit classifier sees it, where the caller measured it
    /// (`wgan-mnist --eval-every`); [`Trainer::step`] leaves it empty.
    pub quality: Option<Quality>,
}

/// The state of a run: networks, optimisers, data order, and the iteration count.
pub struct Trainer {
    pub config: TrainConfig,
    pub generator: Generator,
    pub critic: Critic,
    pub generator_optim: Box<dyn Optimizer>,
    pub critic_optim: Box<dyn Optimizer>,
    pub batcher: Batcher,
    /// Generator iterations done.
    pub iteration: usize,
    /// Training seconds of earlier runs of this training, when resumed.
    pub seconds_before: f64,
    /// Where the networks, their optimiser states and each batch live.
    pub device: Device,
    started: Instant,
}

/// Each algorithm's optimisers over the two networks' parameters (their state is created on
/// the parameters' device).
fn optimizers(
    config: &TrainConfig,
    generator: &Generator,
    critic: &Critic,
) -> (Box<dyn Optimizer>, Box<dyn Optimizer>) {
    match config.algo {
        Algo::Wgan => (
            Box::new(RmsProp::new(generator.parameters(), config.lr)),
            Box::new(RmsProp::new(critic.parameters(), config.lr)),
        ),
        Algo::WganGp | Algo::Gan => (
            Box::new(Adam::new(generator.parameters(), config.lr, config.betas)),
            Box::new(Adam::new(critic.parameters(), config.lr, config.betas)),
        ),
    }
}

impl Trainer {
    /// A trainer for `config` on a training set of `train_len` images. It has the process keep
    /// freed memory for reuse (`earthmover_tensor::retain_freed_memory`: a training step frees
    /// and allocates the same large tensors every step).
    pub fn new(config: TrainConfig, train_len: usize) -> Result<Trainer> {
        config.validate()?;
        // Training frees and allocates the same large tensors every step: reuse their memory.
        earthmover_tensor::retain_freed_memory();
        let mut rng = StdRng::seed_from_u64(config.seed);
        let init = config.init;
        let generator = Generator::new(config.model, config.dim, init, &mut rng);
        let critic = Critic::new(config.model, config.dim, config.critic_norm, init, &mut rng);
        let (generator_optim, critic_optim) = optimizers(&config, &generator, &critic);
        Ok(Trainer {
            config,
            generator,
            critic,
            generator_optim,
            critic_optim,
            batcher: Batcher::new(train_len),
            iteration: 0,
            seconds_before: 0.0,
            device: Device::Cpu,
            started: Instant::now(),
        })
    }

    /// Move the networks and their optimisers' state to `device` (a GPU, say); every batch is
    /// then moved there too. Initialisation happens on the CPU, so a seed gives the same
    /// starting weights on every device.
    pub fn to_device(&mut self, device: Device) -> Result<()> {
        if device == self.device {
            return Ok(());
        }
        let saved =
            |o: &dyn Optimizer| -> std::collections::HashMap<String, Tensor> { o.state_dict().into_iter().collect() };
        let (g_state, c_state) = (saved(&*self.generator_optim), saved(&*self.critic_optim));
        for (_, t) in self.generator.state_dict().into_iter().chain(self.critic.state_dict()) {
            t.set_data(&t.to_device(device)?);
        }
        let (mut g, mut c) = optimizers(&self.config, &self.generator, &self.critic);
        g.load_state_dict(&g_state).map_err(crate::Error)?;
        c.load_state_dict(&c_state).map_err(crate::Error)?;
        (self.generator_optim, self.critic_optim) = (g, c);
        self.device = device;
        Ok(())
    }

    /// `t` on the training device.
    fn on_device(&self, t: Tensor) -> Tensor {
        t.to_device(self.device)
            .expect("the trainer's device was opened by to_device")
    }

    /// The random stream of one iteration, derived from the seed and the iteration number, so
    /// that a run resumed from a checkpoint draws exactly what an unbroken run would.
    fn iteration_rng(&self) -> StdRng {
        let mut x = self.config.seed ^ (self.iteration as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        // splitmix64's finaliser, so that neighbouring iterations get unrelated seeds.
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        StdRng::seed_from_u64(x ^ (x >> 31))
    }

    /// One generator iteration: the critic's steps, then the generator's. An error, naming the
    /// quantity, when a loss turns non-finite (the networks are then not updated further).
    pub fn step(&mut self, data: &Mnist) -> Result<IterationLog> {
        let cfg = self.config.clone();
        let mut rng = self.iteration_rng();
        let range = self.generator.output_range;
        let critic_params = self.critic.parameters();
        let mut log = IterationLog {
            iteration: self.iteration + 1,
            seconds: 0.0,
            critic_loss: 0.0,
            generator_loss: 0.0,
            wasserstein: 0.0,
            penalty: 0.0,
            grad_norm: 0.0,
            test_wasserstein: None,
            quality: None,
        };

        // ---- critic
        for p in &critic_params {
            p.set_requires_grad(true);
        }
        for _ in 0..cfg.critic_steps(self.iteration) {
            let indices = self.batcher.next_batch(cfg.batch_size, &mut rng);
            let real = self.on_device(data.train.images(&indices, range));
            let noise = self.on_device(Generator::noise(cfg.batch_size, &mut rng));
            let fake = no_grad(|| self.generator.forward(&noise));
            let (real_scores, fake_scores) = self.critic_scores(&real, &fake);
            let wasserstein = real_scores.mean().sub(&fake_scores.mean());
            let mut loss = match cfg.algo {
                Algo::Wgan | Algo::WganGp => wasserstein.neg(),
                Algo::Gan => real_scores
                    .binary_cross_entropy_with_logits(&real_scores.ones_like())
                    .add(&fake_scores.binary_cross_entropy_with_logits(&fake_scores.zeros_like())),
            };
            if cfg.algo == Algo::WganGp {
                let eps = interpolation_weights(&real, &mut rng);
                let x_hat = interpolate(&real, &fake, &eps);
                let gp = gradient_penalty(|x| self.critic.forward(x), &x_hat, cfg.lambda);
                log.grad_norm = gp.mean_grad_norm;
                loss = loss.add(&gp.penalty);
                log.penalty = gp.penalty.item();
            }
            log.critic_loss = loss.item();
            log.wasserstein = wasserstein.item();
            check_finite(&log, "critic_loss", log.critic_loss)?;
            self.critic_optim.zero_grad();
            loss.backward();
            self.critic_optim.step();
            if cfg.algo == Algo::Wgan {
                clip_weights(&critic_params, cfg.clip);
            }
        }

        // ---- generator: the critic's weights are constants here.
        for p in &critic_params {
            p.set_requires_grad(false);
        }
        let noise = self.on_device(Generator::noise(cfg.batch_size, &mut rng));
        let scores = self.critic.forward(&self.generator.forward(&noise));
        let generator_loss = match cfg.algo {
            Algo::Wgan | Algo::WganGp => scores.mean().neg(),
            // Non-saturating: maximise log D(G(z)).
            Algo::Gan => scores.binary_cross_entropy_with_logits(&scores.ones_like()),
        };
        log.generator_loss = generator_loss.item();
        check_finite(&log, "generator_loss", log.generator_loss)?;
        self.generator_optim.zero_grad();
        generator_loss.backward();
        self.generator_optim.step();
        for p in &critic_params {
            p.set_requires_grad(true);
        }

        self.iteration += 1;
        if self.iteration.is_multiple_of(cfg.test_every) {
            log.test_wasserstein = Some(self.test_wasserstein(data, &mut rng));
        }
        log.seconds = self.seconds();
        Ok(log)
    }

    /// The critic's scores of a real and a fake batch. Without batch normalisation each
    /// sample's score depends on that sample alone, so both batches go through one forward
    /// pass (one pass over the weights and half the calls, for the same maths); with it, the
    /// statistics are per batch, as in the papers' code, so they go through one each.
    fn critic_scores(&self, real: &Tensor, fake: &Tensor) -> (Tensor, Tensor) {
        match self.config.critic_norm {
            CriticNorm::BatchNorm => return (self.critic.forward(real), self.critic.forward(fake)),
            CriticNorm::None | CriticNorm::LayerNorm => {}
        }
        let n = real.shape()[0];
        let scores = self.critic.forward(&Tensor::concat(&[real, fake], 0));
        (scores.narrow(0, 0, n), scores.narrow(0, n, fake.shape()[0]))
    }

    /// `mean(C(real)) - mean(C(fake))` on up to 256 test images and as many fresh samples,
    /// with both networks in evaluation mode, so that measuring changes no state.
    pub fn test_wasserstein(&self, data: &Mnist, rng: &mut StdRng) -> f64 {
        self.generator.set_training(false);
        self.critic.set_training(false);
        let estimate = no_grad(|| {
            let n = data.test.len().min(256);
            let indices: Vec<usize> = rand::seq::index::sample(rng, data.test.len(), n).into_vec();
            let real = self.on_device(data.test.images(&indices, self.generator.output_range));
            let fake = self.generator.forward(&self.on_device(Generator::noise(n, rng)));
            self.critic.forward(&real).mean().item() - self.critic.forward(&fake).mean().item()
        });
        self.generator.set_training(true);
        self.critic.set_training(true);
        estimate
    }

    /// Training seconds so far, earlier runs of a resumed training included.
    pub fn seconds(&self) -> f64 {
        self.seconds_before + self.started.elapsed().as_secs_f64()
    }

    /// Images from the generator for `noise` (no graph recorded).
    pub fn sample(&self, noise: &Tensor) -> Tensor {
        no_grad(|| self.generator.forward(&self.on_device(noise.clone())))
    }
}

fn check_finite(log: &IterationLog, what: &str, value: f64) -> Result<()> {
    if !value.is_finite() {
        bail!("training diverged at iteration {}: {what} is {value}", log.iteration);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Split;
    use crate::data::{parse_idx, IdxArray};

    fn tiny_data() -> Mnist {
        let idx = |magic: u32, dims: &[u32], data: Vec<u8>| -> IdxArray {
            let mut bytes = magic.to_be_bytes().to_vec();
            dims.iter().for_each(|d| bytes.extend(d.to_be_bytes()));
            bytes.extend(data);
            parse_idx(&bytes, "synthetic").unwrap()
        };
        let pixels: Vec<u8> = (0..16 * 784).map(|i| (i * 37 % 256) as u8).collect();
        let split = || {
            Split::new(
                idx(0x0803, &[16, 28, 28], pixels.clone()),
                idx(0x0801, &[16], vec![3; 16]),
                "i",
                "l",
            )
            .unwrap()
        };
        Mnist {
            train: split(),
            test: split(),
        }
    }

    #[test]
    fn wgan_warm_up_schedule_follows_the_reference_code() {
        let config = TrainConfig::new(Algo::Wgan);
        assert_eq!(config.critic_steps(0), 100);
        assert_eq!(config.critic_steps(24), 100);
        assert_eq!(config.critic_steps(25), 5);
        assert_eq!(config.critic_steps(500), 100);
        assert_eq!(config.critic_steps(501), 5);
        assert_eq!(TrainConfig::new(Algo::WganGp).critic_steps(0), 5);
    }

    #[test]
    fn weight_clipping_bounds_every_critic_parameter_after_a_step() {
        let mut config = TrainConfig::new(Algo::Wgan);
        (config.dim, config.batch_size, config.critic_warmup) = (4, 8, false);
        config.critic_norm = CriticNorm::BatchNorm;
        let mut trainer = Trainer::new(config, 16).unwrap();
        let log = trainer.step(&tiny_data()).unwrap();
        assert!(log.critic_loss.is_finite() && log.generator_loss.is_finite());
        for (name, p) in trainer.critic.named_parameters() {
            let max = p.to_vec_f32().iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert!(max <= 0.01, "{name}: |w| reaches {max}");
        }
    }

    #[test]
    fn wgan_gp_logs_its_penalty_and_gradient_norm() {
        let mut config = TrainConfig::new(Algo::WganGp);
        (config.dim, config.batch_size, config.test_every) = (4, 8, 1);
        let mut trainer = Trainer::new(config, 16).unwrap();
        let log = trainer.step(&tiny_data()).unwrap();
        assert!(log.penalty > 0.0 && log.grad_norm > 0.0, "{log:?}");
        // critic loss = -W + penalty at the last critic step
        assert!(
            (log.critic_loss - (-log.wasserstein + log.penalty)).abs() < 1e-4,
            "{log:?}"
        );
        assert!(log.test_wasserstein.is_some());
        assert_eq!(trainer.iteration, 1);
    }

    /// Without batch normalisation the real and fake batches share one forward pass; the
    /// scores, and the gradients they send to the critic, are those of two separate passes.
    #[test]
    fn one_pass_over_real_and_fake_scores_each_batch_as_its_own_pass() {
        // (With batch norm the batches go through one pass each: nothing to compare.)
        for norm in [CriticNorm::None, CriticNorm::LayerNorm] {
            let mut config = TrainConfig::new(Algo::Wgan);
            (config.dim, config.batch_size, config.critic_norm) = (4, 8, norm);
            let trainer = Trainer::new(config, 16).unwrap();
            let data = tiny_data();
            let real = data.train.images(&[0, 1, 2, 3, 4], trainer.generator.output_range);
            let fake = no_grad(|| {
                trainer
                    .generator
                    .forward(&Generator::noise(3, &mut StdRng::seed_from_u64(7)))
            });
            let (real_scores, fake_scores) = trainer.critic_scores(&real, &fake);
            let params = trainer.critic.parameters();
            let loss = real_scores.mean().sub(&fake_scores.mean());
            let joint = earthmover_tensor::grad(&[&loss], &params.iter().collect::<Vec<_>>(), None, false);
            let (real_alone, fake_alone) = (trainer.critic.forward(&real), trainer.critic.forward(&fake));
            let loss = real_alone.mean().sub(&fake_alone.mean());
            let separate = earthmover_tensor::grad(&[&loss], &params.iter().collect::<Vec<_>>(), None, false);
            let close = |a: &Tensor, b: &Tensor| {
                a.shape() == b.shape()
                    && a.to_vec_f64()
                        .iter()
                        .zip(b.to_vec_f64())
                        .all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs()))
            };
            assert!(
                close(&real_scores, &real_alone) && close(&fake_scores, &fake_alone),
                "{norm:?}"
            );
            for (a, b) in joint.iter().zip(&separate) {
                assert!(close(a, b), "{norm:?}: gradients differ");
            }
        }
    }

    #[test]
    fn settings_that_cannot_train_are_refused_with_a_reason() {
        let mut c = TrainConfig::new(Algo::WganGp);
        c.critic_norm = CriticNorm::BatchNorm;
        assert!(c.validate().unwrap_err().0.contains("per-sample gradient penalty"));
        let mut c = TrainConfig::new(Algo::Wgan);
        c.betas = (1.0, 0.9);
        assert!(c.validate().unwrap_err().0.contains("betas"));
        let mut c = TrainConfig::new(Algo::Gan);
        c.n_critic = 0;
        assert!(c.validate().is_err());
    }
}
