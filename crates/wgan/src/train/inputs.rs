//! What a generator iteration trains on: [`IterationInputs`], the source of its real batches,
//! noise and interpolation weights, and [`HostInputs`], the one that draws them on the host
//! from closures and a `rand` generator ([`generator_iteration`](super::generator_iteration)).
//! The MNIST trainer has its own, which draws them on the networks' device.

use super::StepError;
use crate::penalty::interpolation_weights;
use earthmover_tensor::Tensor;
use rand::Rng;

/// Where a generator iteration's random inputs come from, in the order it asks for them: for
/// each critic step a real batch, the noise of its fake batch and (WGAN-GP) the interpolation
/// weights; then the generator step's noise. [`generator_iteration`] draws them on the host
/// from a `rand` generator; the MNIST [`Trainer`](super::Trainer) draws them on the networks'
/// device (Philox numbers, batches gathered from a dataset kept there), so that an iteration
/// on a GPU uploads nothing.
pub trait IterationInputs {
    fn real_batch(&mut self) -> Result<Tensor, StepError>;
    fn noise(&mut self) -> Result<Tensor, StepError>;
    /// One weight per sample of `real`, uniform on [0, 1), shaped to broadcast over it.
    fn interpolation_weights(&mut self, real: &Tensor) -> Result<Tensor, StepError>;
}

/// [`IterationInputs`] from two closures and a `rand` generator (the interpolation weights from
/// [`interpolation_weights`]).
pub(super) struct HostInputs<'r, R: ?Sized, DrawReal, DrawNoise> {
    rng: &'r mut R,
    draw_real: DrawReal,
    draw_noise: DrawNoise,
}

impl<'r, R: ?Sized, DrawReal, DrawNoise> HostInputs<'r, R, DrawReal, DrawNoise> {
    pub(super) fn new(rng: &'r mut R, draw_real: DrawReal, draw_noise: DrawNoise) -> Self {
        HostInputs {
            rng,
            draw_real,
            draw_noise,
        }
    }
}

impl<R, DrawReal, DrawNoise> IterationInputs for HostInputs<'_, R, DrawReal, DrawNoise>
where
    R: Rng + ?Sized,
    DrawReal: FnMut(&mut R) -> Tensor,
    DrawNoise: FnMut(&mut R) -> Tensor,
{
    fn real_batch(&mut self) -> Result<Tensor, StepError> {
        Ok((self.draw_real)(self.rng))
    }
    fn noise(&mut self) -> Result<Tensor, StepError> {
        Ok((self.draw_noise)(self.rng))
    }
    fn interpolation_weights(&mut self, real: &Tensor) -> Result<Tensor, StepError> {
        interpolation_weights(real, self.rng).map_err(|e| StepError::Device(e.0))
    }
}
