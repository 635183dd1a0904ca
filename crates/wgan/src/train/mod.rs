//! Training: WGAN (weight clipping, RMSProp), WGAN-GP (gradient penalty, Adam) and the standard
//! GAN (non-saturating loss, Adam).
//!
//! - `inputs`: [`IterationInputs`], where an iteration's batches, noise and interpolation
//!   weights come from;
//! - `step`: one generator iteration ([`generator_iteration`]: [`critic_step`]s, then a
//!   [`generator_step`]) of any [`Objective`] over any pair of networks; every training loop
//!   goes through it;
//! - `config`: [`TrainConfig`], every setting of an MNIST run, with the papers' defaults;
//! - `trainer`: [`Trainer`], an MNIST run (networks, optimisers, data order), one iteration at a
//!   time.

mod config;
mod graphs;
mod inputs;
mod step;
mod trainer;

pub use config::{Precision, TrainConfig};
pub use inputs::IterationInputs;
pub use step::{
    critic_step, generator_iteration, generator_iteration_with, generator_step, CriticLog, CriticSchedule, Diverged,
    Gan, Objective, StepError, StepLog,
};
pub use trainer::{IterationLog, LossScaleLog, Trainer};

use crate::optim::{Adam, Optimizer, RmsProp};
use earthmover_tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

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

impl Algo {
    /// The optimiser of the algorithm's paper over `params`: RMSProp for WGAN (its authors found
    /// momentum, as in Adam, made the clipped critic unstable), Adam for WGAN-GP and the GAN.
    pub fn optimizer(self, params: Vec<Tensor>, lr: f64, betas: (f64, f64)) -> Box<dyn Optimizer> {
        match self {
            Algo::Wgan => Box::new(RmsProp::new(params, lr)),
            Algo::WganGp | Algo::Gan => Box::new(Adam::new(params, lr, betas)),
        }
    }
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
