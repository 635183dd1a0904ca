//! earthmover: a from-scratch deep-learning engine for Wasserstein GANs.
//!
//! This facade re-exports the workspace's crates:
//! - [`tensor`]: `Tensor` and reverse-mode autodiff with differentiable backward rules;
//! - [`kernels`]: the compute kernels behind it;
//! - [`wgan`]: Wasserstein GANs built on it.

// The README's example is compiled and run as a doctest, so that it stays true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub use earthmover_kernels as kernels;
pub use earthmover_tensor as tensor;
pub use earthmover_tensor::{grad, no_grad, Activation, ConvOptions, DType, Device, OptimizerUpdate, Tensor};
pub use earthmover_wgan as wgan;
