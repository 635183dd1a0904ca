//! The settings of an MNIST training run.

use super::{Algo, CriticSchedule, Objective};
use crate::models::{CriticNorm, ModelKind};
use crate::nn::init::Init;
use crate::{bail, Result};
use earthmover_tensor::DType;
use serde::{Deserialize, Serialize};

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
    /// The decay of an exponential moving average of the generator's weights
    /// ([`crate::ema`]), which then draws the samples and is scored; `None`: no average.
    /// (Absent from checkpoints written before it existed: they had none.)
    #[serde(default)]
    pub ema: Option<f64>,
    /// The critic's learning rate, where it differs from `lr` (two time-scale updates, TTUR).
    #[serde(default)]
    pub lr_critic: Option<f64>,
    /// The generator's learning rate, where it differs from `lr`.
    #[serde(default)]
    pub lr_generator: Option<f64>,
    /// The dtype of the networks' convolutions and matrix products ([`Precision`]); `F32`
    /// in checkpoints written before it existed.
    #[serde(default)]
    pub precision: Precision,
}

/// What a training step computes its convolutions and matrix products in. The weights, their
/// gradients and the optimisers' state stay f32 either way (the masters), and so do the
/// losses, the gradient penalty's norms and the Wasserstein estimate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// Mixed precision with bfloat16 ([`earthmover_tensor::autocast`]): f32's range, so no
    /// loss scaling is needed.
    Bf16,
    /// Mixed precision with IEEE half (f16): 3 more bits than bf16 but 5 exponent bits, so
    /// each network's loss is scaled dynamically ([`crate::amp::GradScaler`]) for its
    /// backward pass, the gradient penalty's inner gradient included.
    F16,
}

impl Precision {
    /// The dtype the products compute in.
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
            Precision::F16 => DType::F16,
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        })
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Precision, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "f16" | "float16" | "half" => Ok(Precision::F16),
            _ => Err(format!("unknown precision `{s}`: expected f32, bf16 or f16")),
        }
    }
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
            ema: None,
            lr_critic: None,
            lr_generator: None,
            precision: Precision::F32,
        }
    }

    /// Reject settings that cannot train, each with a message saying why.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            bail!("batch size must be positive, got 0");
        }
        for (name, lr) in [
            ("learning rate", Some(self.lr)),
            ("critic learning rate", self.lr_critic),
            ("generator learning rate", self.lr_generator),
        ] {
            if let Some(lr) = lr.filter(|lr| !(*lr > 0.0 && lr.is_finite())) {
                bail!("{name} must be positive and finite, got {lr}");
            }
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
        if let Some(decay) = self.ema {
            crate::ema::ExponentialMovingAverage::new(decay)?;
        }
        Ok(())
    }

    /// The critic's learning rate: `lr_critic`, else `lr`.
    pub fn critic_lr(&self) -> f64 {
        self.lr_critic.unwrap_or(self.lr)
    }

    /// The generator's learning rate: `lr_generator`, else `lr`.
    pub fn generator_lr(&self) -> f64 {
        self.lr_generator.unwrap_or(self.lr)
    }

    /// The objective this run trains, for the shared step.
    pub fn objective(&self) -> Objective {
        Objective {
            algo: self.algo,
            clip: self.clip,
            lambda: self.lambda,
            precision: self.precision,
            // One pass over real and fake is the same maths only when the critic scores each
            // sample on its own; batch-norm's statistics are per batch, as in the papers' code.
            joint_critic_pass: match self.critic_norm {
                CriticNorm::None | CriticNorm::LayerNorm => true,
                CriticNorm::BatchNorm => false,
            },
        }
    }

    /// How many critic steps precede each generator step.
    pub fn critic_schedule(&self) -> CriticSchedule {
        CriticSchedule {
            n_critic: self.n_critic,
            warmup: self.critic_warmup,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_wgan_has_the_warm_up_schedule_by_default() {
        assert_eq!(TrainConfig::new(Algo::Wgan).critic_schedule().critic_steps(24), 100);
        assert_eq!(TrainConfig::new(Algo::Wgan).critic_schedule().critic_steps(25), 5);
        assert_eq!(TrainConfig::new(Algo::WganGp).critic_schedule().critic_steps(0), 5);
        assert_eq!(TrainConfig::new(Algo::Gan).critic_schedule().critic_steps(0), 1);
    }

    #[test]
    fn only_a_batch_normalised_critic_scores_real_and_fake_in_separate_passes() {
        let mut config = TrainConfig::new(Algo::Wgan);
        for (norm, joint) in [
            (CriticNorm::None, true),
            (CriticNorm::LayerNorm, true),
            (CriticNorm::BatchNorm, false),
        ] {
            config.critic_norm = norm;
            assert_eq!(config.objective().joint_critic_pass, joint, "{norm}");
        }
    }

    #[test]
    fn precisions_parse_by_their_names_and_print_back() {
        for (name, precision) in [
            ("f32", Precision::F32),
            ("bf16", Precision::Bf16),
            ("f16", Precision::F16),
            ("Float16", Precision::F16),
        ] {
            let parsed: Precision = name.parse().unwrap();
            assert_eq!(parsed, precision);
            assert_eq!(parsed.to_string().parse::<Precision>().unwrap(), precision);
        }
        assert_eq!(Precision::F16.dtype(), DType::F16);
        let err = "f8".parse::<Precision>().unwrap_err();
        assert!(err.contains("expected f32, bf16 or f16"), "{err}");
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
