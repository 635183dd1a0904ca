//! Dynamic loss scaling for f16 mixed precision, shaped like PyTorch's
//! `torch.amp.GradScaler`:
//!
//! ```text
//! scaler.scale(&loss).backward();       // the gradients come out multiplied by the scale
//! scaler.step(&mut optimizer)?;         // unscale them; step unless one is inf or NaN
//! scaler.update()?;                     // halve the scale after a skip, double it after a run
//!                                       // of `growth_interval` good steps
//! ```
//!
//! Why: f16 keeps 5 exponent bits, so a gradient below 6e-8 (its smallest subnormal) is 0 and
//! one below 6e-5 (its smallest normal) keeps fewer than 11 bits. Gradients of a loss of order
//! 1 through a few layers are often that small. Multiplying the loss by a large power of two
//! moves every gradient of the backward pass up by the same factor, into f16's range; dividing
//! the f32 master gradients by it afterwards gives the true values back (exactly, since the
//! scale is a power of two). Too large a scale overflows f16 (largest finite 65,504) into inf:
//! that step is skipped and the scale halved; after `growth_interval` good steps in a row it
//! doubles, to find the largest scale that does not overflow. bf16 has f32's exponent range
//! and needs none of this.

use crate::optim::Optimizer;
use crate::{bail, Result};
use earthmover_tensor::Tensor;
use serde::{Deserialize, Serialize};

/// The smallest scale a scaler backs off to: f32's smallest normal number. The scaled loss and
/// the unscaling factor `1 / scale` are f32; below this the factor would overflow. Gradients
/// that are non-finite at every scale down to it are not an overflow but a divergence.
pub const MIN_SCALE: f64 = f32::MIN_POSITIVE as f64;

/// A dynamic loss scaler (PyTorch's `GradScaler`): see the module documentation.
///
/// One scaler serves one optimiser here (PyTorch lets one scaler serve several, with one
/// `update` per iteration): the training step gives the critic and the generator one each, so
/// that an overflow in one network's backward pass neither skips the other's step nor halves
/// the other's scale. Their gradients differ in size (the critic's include the gradient
/// penalty's second-order terms and it takes several steps per generator step), so each
/// settles at its own scale.
#[derive(Clone, Debug, PartialEq)]
pub struct GradScaler {
    state: GradScalerState,
    /// Whether [`GradScaler::unscale_`] found an inf or NaN since the last
    /// [`GradScaler::update`]; `None` when it has not run since.
    found_inf: Option<bool>,
}

/// Everything a scaler carries from step to step, for checkpoints (PyTorch's `state_dict`,
/// with the count of skipped steps added for the logs).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GradScalerState {
    /// The factor the loss is multiplied by before the backward pass.
    pub scale: f64,
    /// What the scale is multiplied by after `growth_interval` good steps in a row (> 1).
    pub growth_factor: f64,
    /// What the scale is multiplied by after a skipped step (in (0, 1)).
    pub backoff_factor: f64,
    /// Good steps in a row before the scale grows (>= 1).
    pub growth_interval: u64,
    /// Good steps in a row so far (PyTorch's `_growth_tracker`).
    pub growth_tracker: u64,
    /// Steps skipped since the scaler was made (for the logs).
    pub skipped_steps: u64,
}

impl Default for GradScalerState {
    /// PyTorch's defaults: scale 2^16, growth 2, backoff 0.5, interval 2000.
    fn default() -> GradScalerState {
        GradScalerState {
            scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
            growth_tracker: 0,
            skipped_steps: 0,
        }
    }
}

impl GradScalerState {
    /// Refuse a state that cannot scale, with the reason.
    fn validate(&self) -> Result<()> {
        let s = self;
        if !(s.scale >= MIN_SCALE && s.scale < f32::MAX as f64) {
            bail!(
                "loss scale must be a finite f32 of at least {MIN_SCALE:e}, got {}",
                s.scale
            );
        }
        if !(s.growth_factor > 1.0 && s.growth_factor.is_finite()) {
            bail!(
                "loss-scale growth factor must be finite and above 1, got {}",
                s.growth_factor
            );
        }
        if !(s.backoff_factor > 0.0 && s.backoff_factor < 1.0) {
            bail!("loss-scale backoff factor must lie in (0, 1), got {}", s.backoff_factor);
        }
        if s.growth_interval == 0 {
            bail!("loss-scale growth interval must be at least 1 step");
        }
        if s.growth_tracker >= s.growth_interval {
            bail!(
                "loss-scale growth tracker {} must be below the growth interval {}",
                s.growth_tracker,
                s.growth_interval
            );
        }
        Ok(())
    }
}

impl Default for GradScaler {
    fn default() -> GradScaler {
        GradScaler::new()
    }
}

impl GradScaler {
    /// A scaler with PyTorch's defaults: scale 2^16, growth factor 2, backoff factor 0.5,
    /// growth interval 2000.
    pub fn new() -> GradScaler {
        GradScaler {
            state: GradScalerState::default(),
            found_inf: None,
        }
    }

    /// A scaler with its own settings (PyTorch's `GradScaler(init_scale, growth_factor,
    /// backoff_factor, growth_interval)`); an error names a setting that cannot scale.
    pub fn with_options(
        init_scale: f64,
        growth_factor: f64,
        backoff_factor: f64,
        growth_interval: u64,
    ) -> Result<GradScaler> {
        let state = GradScalerState {
            scale: init_scale,
            growth_factor,
            backoff_factor,
            growth_interval,
            ..GradScalerState::default()
        };
        state.validate()?;
        Ok(GradScaler { state, found_inf: None })
    }

    /// The current scale.
    pub fn get_scale(&self) -> f64 {
        self.state.scale
    }

    /// Good steps in a row since the scale last changed.
    pub fn get_growth_tracker(&self) -> u64 {
        self.state.growth_tracker
    }

    /// Steps skipped since the scaler was made (or since the run it was saved from began).
    pub fn skipped_steps(&self) -> u64 {
        self.state.skipped_steps
    }

    /// `loss * scale`, to call `backward` on (or to differentiate with `create_graph`, as the
    /// gradient penalty does). Exact: the scale is a power of two under the default factors.
    pub fn scale(&self, loss: &Tensor) -> Tensor {
        loss.mul_scalar(self.state.scale)
    }

    /// Divide the gradients of `optimizer`'s parameters by the scale, in place, and note
    /// whether any of them holds an inf or NaN (read back once for all of them). Called by
    /// [`GradScaler::step`] when not called before it; call it first to see or clip the true
    /// gradients. An error when called twice before [`GradScaler::update`] (the gradients
    /// would be divided twice), or when the device fails.
    pub fn unscale_(&mut self, optimizer: &dyn Optimizer) -> Result<()> {
        if self.found_inf.is_some() {
            bail!("unscale_ has already been called since the last update");
        }
        let inv_scale = 1.0 / self.state.scale;
        let mut probes = Vec::new();
        for p in optimizer.params() {
            let Some(g) = p.grad() else { continue };
            let unscaled = g.detach().mul_scalar(inv_scale);
            // 0 * x is 0 for every finite x and NaN for inf and NaN: the sum is 0 exactly when
            // every element is finite, and no sum of large finite values can overflow it.
            probes.push(unscaled.mul_scalar(0.0).sum().reshape(&[1]));
            p.set_grad(Some(unscaled));
        }
        let found_inf = match probes.as_slice() {
            [] => false,
            [one] => !one.try_item()?.is_finite(),
            many => {
                let all = Tensor::concat(&many.iter().collect::<Vec<_>>(), 0).sum();
                !all.try_item()?.is_finite()
            }
        };
        self.found_inf = Some(found_inf);
        Ok(())
    }

    /// Unscale the gradients (unless [`GradScaler::unscale_`] did), then take the optimiser's
    /// step if they are all finite; returns whether it stepped. A skipped step changes no
    /// weight and no optimiser state (Adam's step count included), as in PyTorch.
    pub fn step(&mut self, optimizer: &mut dyn Optimizer) -> Result<bool> {
        if self.found_inf.is_none() {
            self.unscale_(optimizer)?;
        }
        let found_inf = self.found_inf == Some(true);
        if !found_inf {
            optimizer.step();
        }
        Ok(!found_inf)
    }

    /// Adjust the scale after a step: halve it (the backoff factor) when the step was skipped,
    /// grow it (the growth factor) after `growth_interval` good steps in a row, as long as it
    /// stays a finite f32. An error when no step was unscaled since the last update.
    pub fn update(&mut self) -> Result<()> {
        let Some(found_inf) = self.found_inf.take() else {
            bail!("update called without an unscaled step since the last update");
        };
        let s = &mut self.state;
        if found_inf {
            s.scale *= s.backoff_factor;
            s.growth_tracker = 0;
            s.skipped_steps += 1;
        } else {
            s.growth_tracker += 1;
            if s.growth_tracker == s.growth_interval {
                let grown = s.scale * s.growth_factor;
                if grown < f32::MAX as f64 {
                    s.scale = grown;
                }
                s.growth_tracker = 0;
            }
        }
        Ok(())
    }

    /// The state to save (PyTorch's `state_dict`).
    pub fn state_dict(&self) -> GradScalerState {
        self.state
    }

    /// Restore a state saved by [`GradScaler::state_dict`]; an error names a value that
    /// cannot be a scaler's.
    pub fn load_state_dict(&mut self, state: GradScalerState) -> Result<()> {
        state.validate()?;
        self.state = state;
        self.found_inf = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::Sgd;
    use earthmover_tensor::DType;

    /// A parameter whose gradient is `grad`, and plain SGD (lr 1) over it.
    fn with_gradient(grad: &[f32]) -> (Tensor, Sgd) {
        let p = Tensor::zeros(&[grad.len()], DType::F32).requires_grad_(true);
        p.set_grad(Some(Tensor::from_vec(grad.to_vec(), &[grad.len()]).unwrap()));
        let optim = Sgd::new(vec![p.clone()], 1.0, 0.0);
        (p, optim)
    }

    #[test]
    fn a_non_finite_gradient_skips_the_step_and_halves_the_scale() {
        for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
            let mut scaler = GradScaler::new();
            let (p, mut optim) = with_gradient(&[1.0, bad, 3.0]);
            assert!(!scaler.step(&mut optim).unwrap(), "{bad}: stepped");
            assert_eq!(p.to_vec_f32(), vec![0.0; 3], "{bad}: a skipped step moved the weight");
            scaler.update().unwrap();
            assert_eq!(scaler.get_scale(), 32768.0, "{bad}");
            assert_eq!((scaler.skipped_steps(), scaler.get_growth_tracker()), (1, 0));
        }
    }

    #[test]
    fn the_scale_grows_after_a_run_of_good_steps_and_a_skip_restarts_the_count() {
        let mut scaler = GradScaler::with_options(8.0, 2.0, 0.5, 3).unwrap();
        let mut scales = Vec::new();
        for good in [true, true, true, true, false, true, true, true] {
            let (_, mut optim) = with_gradient(&[if good { 1.0 } else { f32::NAN }]);
            assert_eq!(scaler.step(&mut optim).unwrap(), good);
            scaler.update().unwrap();
            scales.push(scaler.get_scale());
        }
        // Three good steps double it; the fourth starts a new run, which the skip ends (and
        // halves); three more good ones double it again.
        assert_eq!(scales, [8.0, 8.0, 16.0, 16.0, 8.0, 8.0, 8.0, 16.0]);
        assert_eq!(scaler.skipped_steps(), 1);
    }

    #[test]
    fn unscaling_by_a_power_of_two_is_exact_and_the_good_step_sees_true_gradients() {
        let true_grad = [1.0e-7f32, -3.25, 0.1, 6.0e4, -1.0e-30];
        let mut scaler = GradScaler::new();
        let scaled: Vec<f32> = true_grad.iter().map(|g| g * 65536.0).collect();
        let (p, mut optim) = with_gradient(&scaled);
        scaler.unscale_(&optim).unwrap();
        assert_eq!(p.grad().unwrap().to_vec_f32(), true_grad, "bit for bit");
        assert!(scaler.unscale_(&optim).is_err(), "a second unscale would divide again");
        assert!(scaler.step(&mut optim).unwrap());
        let stepped: Vec<f32> = true_grad.iter().map(|g| -g).collect();
        assert_eq!(p.to_vec_f32(), stepped, "SGD at lr 1 steps by the true gradient");
        scaler.update().unwrap();
        assert!(scaler.update().is_err(), "nothing was unscaled since");
        // The scaled loss is the loss times the scale.
        let loss = Tensor::scalar(0.375, DType::F32);
        assert_eq!(scaler.scale(&loss).item(), 0.375 * 65536.0);
    }

    #[test]
    fn bad_settings_and_states_are_refused_and_the_scale_stops_short_of_inf() {
        for (options, needle) in [
            ((0.0, 2.0, 0.5, 10), "loss scale"),
            ((f64::INFINITY, 2.0, 0.5, 10), "loss scale"),
            ((1.0, 1.0, 0.5, 10), "growth factor"),
            ((1.0, 2.0, 1.0, 10), "backoff factor"),
            ((1.0, 2.0, 0.5, 0), "growth interval"),
        ] {
            let (a, b, c, d) = options;
            let err = GradScaler::with_options(a, b, c, d).unwrap_err().0;
            assert!(err.contains(needle), "{options:?}: {err}");
        }
        let mut scaler = GradScaler::new();
        let bad = GradScalerState {
            growth_tracker: 2000,
            ..GradScalerState::default()
        };
        assert!(scaler.load_state_dict(bad).is_err());
        let mut huge = GradScaler::with_options(2f64.powi(127), 2.0, 0.5, 1).unwrap();
        let (_, mut optim) = with_gradient(&[1.0]);
        huge.step(&mut optim).unwrap();
        huge.update().unwrap();
        assert_eq!(huge.get_scale(), 2f64.powi(127), "2^128 is past f32's range");
    }

    #[test]
    fn a_state_round_trips_through_json() {
        let mut scaler = GradScaler::with_options(1024.0, 4.0, 0.25, 7).unwrap();
        let (_, mut optim) = with_gradient(&[f32::INFINITY]);
        scaler.step(&mut optim).unwrap();
        scaler.update().unwrap();
        let json = serde_json::to_string(&scaler.state_dict()).unwrap();
        let mut restored = GradScaler::new();
        restored.load_state_dict(serde_json::from_str(&json).unwrap()).unwrap();
        assert_eq!(restored, scaler);
        assert_eq!((restored.get_scale(), restored.skipped_steps()), (256.0, 1));
    }
}
