//! Wasserstein GANs on earthmover.
//!
//! Today: WGAN-GP's gradient penalty ([`penalty`]). The layers, optimisers, models and training
//! loops build on it.

pub mod checkpoint;
pub mod data;
mod error;
pub mod io;
pub mod models;
pub mod nn;
pub mod optim;
pub mod penalty;
pub mod plot;
pub mod train;

pub use error::{Error, Result};
