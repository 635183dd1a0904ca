//! Wasserstein GANs on earthmover: layers ([`nn`]), optimisers ([`optim`]) with dynamic loss
//! scaling for f16 ([`amp`]), the DCGAN and MLP
//! networks ([`models`]), an exponential moving average of weights ([`ema`]), WGAN-GP's
//! gradient penalty ([`penalty`]), one training step for WGAN, WGAN-GP and the GAN over any
//! pair of networks, and the MNIST trainer built on it ([`train`]),
//! MNIST-format data ([`data`]), checkpoints ([`checkpoint`]), sample-quality metrics
//! ([`classifier`], [`metrics`]) and pictures ([`plot`]).

pub mod amp;
pub mod checkpoint;
pub mod classifier;
pub mod data;
pub mod ema;
mod error;
pub mod history;
pub mod io;
pub mod metrics;
pub mod models;
pub mod nn;
pub mod optim;
pub mod penalty;
pub mod plot;
pub mod train;

pub use error::{Error, Result};
