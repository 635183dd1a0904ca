//! WGAN-GP's gradient penalty (Gulrajani et al., Algorithm 1):
//!
//! ```text
//! eps ~ U[0, 1], one per sample
//! x_hat = eps x_real + (1 - eps) x_fake
//! penalty = lambda * mean_i (||grad_x C(x_hat)_i||_2 - 1)^2
//! ```
//!
//! The norm is per sample, over all of its C*H*W values, and the gradient is kept in the graph
//! (`create_graph`), so that the penalty can be differentiated with respect to the critic's
//! weights.

use earthmover_tensor::{grad, Tensor};

/// One interpolation weight per sample, uniform on [0, 1), shaped `[N, 1, ..., 1]` to
/// broadcast over a batch of shape `like`. Drawing one per element instead would put `x_hat`
/// off the segment between the real and the fake sample, where the penalty's theory does not
/// apply. Drawn on the host and moved to `like`'s device: an error when that device has
/// failed.
pub fn interpolation_weights<R: rand::Rng + ?Sized>(like: &Tensor, rng: &mut R) -> earthmover_tensor::Result<Tensor> {
    let mut shape = vec![1; like.rank()];
    shape[0] = like.shape()[0];
    Tensor::rand_uniform_with(&shape, 0.0, 1.0, like.dtype(), rng).to_device(like.device())
}

/// `eps * real + (1 - eps) * fake`, detached from both inputs, ready to be differentiated
/// against.
pub fn interpolate(real: &Tensor, fake: &Tensor, eps: &Tensor) -> Tensor {
    assert_eq!(
        real.shape(),
        fake.shape(),
        "interpolate: real {:?} and fake {:?} batches differ",
        real.shape(),
        fake.shape()
    );
    let (real, fake) = (real.detach(), fake.detach());
    // fake + (real - fake) eps, one launch on a GPU.
    fake.lerp(&real, eps).detach().requires_grad_(true)
}

/// The penalty and what a training loop logs about it.
pub struct GradientPenalty {
    /// `lambda * mean((||grad||_2 - 1)^2)`, differentiable in the critic's parameters.
    pub penalty: Tensor,
    /// The mean over the batch of the per-sample gradient norms: a detached scalar on the
    /// critic's device, left there so that a training step reads it with its other logged
    /// values in one download (each read is a wait for a GPU).
    pub mean_grad_norm: Tensor,
}

/// The gradient penalty of `critic` at the interpolates `x_hat` (which must require grad:
/// build them with [`interpolate`]).
pub fn gradient_penalty(critic: impl Fn(&Tensor) -> Tensor, x_hat: &Tensor, lambda: f64) -> GradientPenalty {
    scaled_gradient_penalty(critic, x_hat, lambda, 1.0)
}

/// [`gradient_penalty`] with its inner gradient taken of the critic's scores multiplied by
/// `loss_scale` and divided by it again before the norms: the pattern of PyTorch's AMP
/// examples ("gradient penalty") for f16.
///
/// Why: in f16 mixed precision the inner backward pass (the gradient of the scores with
/// respect to the interpolates) runs through the critic's layers in f16, where a gradient
/// below 6e-5 loses bits and one below 6e-8 is 0. The scores' gradient is what sets its
/// size, so it is scaled up there (the same [`GradScaler`](crate::amp::GradScaler) scale as
/// the outer loss's) and the f32 gradient that leaves the critic is divided by the scale
/// before `||grad||` is taken, in f32. With a power-of-two scale both steps are exact; an
/// overflow of f16 makes the penalty inf or NaN, which the outer scaler then sees as a
/// non-finite gradient and skips.
pub fn scaled_gradient_penalty(
    critic: impl Fn(&Tensor) -> Tensor,
    x_hat: &Tensor,
    lambda: f64,
    loss_scale: f64,
) -> GradientPenalty {
    assert!(
        x_hat.requires_grad(),
        "gradient_penalty: x_hat must require grad (use interpolate)"
    );
    let scores = critic(x_hat);
    // The sum's gradient is each sample's own gradient, since samples do not interact in the
    // critic (no batch-norm: that is why WGAN-GP forbids it).
    let total = scores.sum();
    let gradients = if loss_scale == 1.0 {
        grad(&[&total], &[x_hat], None, true).remove(0)
    } else {
        let scaled = grad(&[&total.mul_scalar(loss_scale)], &[x_hat], None, true).remove(0);
        scaled.mul_scalar(1.0 / loss_scale)
    };
    let norms = gradients.per_sample_norm();
    let mean_grad_norm = norms.detach().mean();
    let penalty = norms.sub_scalar(1.0).square().mean().mul_scalar(lambda);
    GradientPenalty {
        penalty,
        mean_grad_norm,
    }
}
