//! Wasserstein GANs on earthmover.
//!
//! Today: WGAN-GP's gradient penalty ([`penalty`]). The layers, optimisers, models and training
//! loops build on it.

pub mod penalty;
