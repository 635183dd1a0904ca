//! An exponential moving average of a model's weights (Polyak averaging with exponential
//! forgetting): the cheapest known large gain in a GAN's sample quality. The generator's
//! weights keep moving as the two networks chase each other; their recent average sits near
//! the centre of that motion and draws cleaner samples than any single iterate. PyTorch users
//! know the idea as `torch.optim.swa_utils.AveragedModel` with `get_ema_multi_avg_fn(decay)`,
//! which differs in its start: its first update copies the weights and every later one keeps
//! `decay`; this one starts from the initial weights and warms its decay up (below), so the two
//! agree only once the warm-up is over.
//!
//! After each update `t` (counting from 0), every parameter's average moves toward the
//! parameter: `avg <- avg + (1 - d_t) (param - avg)`, with the warm-up decay
//! `d_t = min(decay, (1 + t) / (10 + t))` of TensorFlow's `ExponentialMovingAverage`: early on
//! the average forgets quickly, so that it is not dominated by the random initial weights;
//! from `t = (10 decay - 1) / (1 - decay)` on (8,991 updates at 0.999) it is the plain
//! exponential average. Buffers (batch-norm's running statistics) are copied, not averaged,
//! as they describe the current weights' activations.

use crate::nn::{Module, TensorKind};
use crate::{bail, Result};
use earthmover_tensor::no_grad;

/// The decay schedule of an exponential moving average; the average itself is a second copy
/// of the model, which [`ExponentialMovingAverage::update`] moves toward the trained one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExponentialMovingAverage {
    /// The decay once warmed up, in (0, 1): each update keeps this share of the average.
    pub decay: f64,
}

impl ExponentialMovingAverage {
    /// A schedule of `decay` (in (0, 1); 0.999 is a common choice for GANs).
    pub fn new(decay: f64) -> Result<ExponentialMovingAverage> {
        if !(decay > 0.0 && decay < 1.0) {
            bail!("the EMA decay must lie strictly between 0 and 1, got {decay}");
        }
        Ok(ExponentialMovingAverage { decay })
    }

    /// The decay used at update `t` (0-based): the warm-up's `(1 + t) / (10 + t)` until it
    /// reaches `decay`.
    pub fn decay_at(&self, t: usize) -> f64 {
        let t = t as f64;
        self.decay.min((1.0 + t) / (10.0 + t))
    }

    /// Update `t` (0-based) of `average` toward `model`, which must have the same architecture
    /// (the same named tensors, shapes, dtypes and device). Runs on the tensors' device,
    /// recording no graph.
    pub fn update(&self, average: &dyn Module, model: &dyn Module, t: usize) {
        let keep = self.decay_at(t);
        let (averaged, current) = (average.named_tensors(None), model.named_tensors(None));
        assert_eq!(
            averaged.len(),
            current.len(),
            "the average and the model must have the same tensors"
        );
        let kinds = kinds_of(model);
        no_grad(|| {
            for (((name, avg), (other, param)), kind) in averaged.iter().zip(&current).zip(kinds) {
                assert_eq!(name, other, "the average and the model must name their tensors alike");
                match kind {
                    // avg + (1 - keep) (param - avg): exact when param == avg, so an average
                    // of weights that do not move stays put bit for bit.
                    TensorKind::Parameter => avg.set_data(&avg.add(&param.sub(avg).mul_scalar(1.0 - keep))),
                    // Copied into the average's own buffer, not shared with the model's: a
                    // buffer shared would be copied away at the model's next in-place update
                    // (batch norm's statistics), out from under a CUDA graph that writes it.
                    TensorKind::Buffer => avg
                        .copy_(&param.detach())
                        .expect("the average's buffer has the model's shape, dtype and device"),
                }
            }
        });
    }
}

/// Whether each of `module`'s tensors (in [`Module::named_tensors`] order) is a parameter or a
/// buffer.
fn kinds_of(module: &dyn Module) -> Vec<TensorKind> {
    let mut kinds = Vec::new();
    module.visit("", &mut |_, _, kind| kinds.push(kind));
    kinds
}

/// Copy every tensor of `from` into `to` (same architecture): the average's starting point.
pub fn copy_weights(to: &dyn Module, from: &dyn Module) {
    for ((_, dst), (_, src)) in to.state_dict().iter().zip(from.state_dict()) {
        dst.set_data(&src.detach());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::init::Init;
    use crate::nn::{Activation, BatchNorm, Linear, Sequential};
    use earthmover_tensor::{DType, Tensor};
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn net(seed: u64) -> Sequential {
        let rng = &mut StdRng::seed_from_u64(seed);
        Sequential::new()
            .named("fc", Linear::new(3, 4, Init::PyTorch, rng))
            .named("bn", BatchNorm::new(4))
            .named("relu", Activation::Relu)
    }

    #[test]
    fn the_decay_warms_up_then_holds() {
        let ema = ExponentialMovingAverage::new(0.999).unwrap();
        assert_eq!(ema.decay_at(0), 0.1);
        assert_eq!(ema.decay_at(90), 0.91);
        assert_eq!(ema.decay_at(8990), (8991.0 / 9000.0f64).min(0.999));
        assert_eq!(ema.decay_at(9000), 0.999);
        assert_eq!(ExponentialMovingAverage::new(0.5).unwrap().decay_at(3), 4.0 / 13.0);
        assert_eq!(ExponentialMovingAverage::new(0.5).unwrap().decay_at(100), 0.5);
        for bad in [0.0, 1.0, -0.1, f64::NAN] {
            let err = ExponentialMovingAverage::new(bad).unwrap_err().0;
            assert!(err.contains("between 0 and 1"), "{err}");
        }
    }

    #[test]
    fn parameters_move_toward_the_model_and_buffers_are_copied() {
        let (average, model) = (net(0), net(1));
        model.set_training(true);
        // Give the model's batch-norm statistics something to remember.
        model.forward(&Tensor::randn(&[5, 3], DType::F32, 7));
        let ema = ExponentialMovingAverage::new(0.9).unwrap();
        let before: Vec<Vec<f64>> = average.state_dict().iter().map(|(_, t)| t.to_vec_f64()).collect();
        ema.update(&average, &model, 20); // decay min(0.9, 21/30) = 0.7
        let kinds = kinds_of(&model);
        for (((name, avg), (_, param)), (old, kind)) in average
            .state_dict()
            .iter()
            .zip(model.state_dict())
            .zip(before.iter().zip(kinds))
        {
            let (avg, param) = (avg.to_vec_f64(), param.to_vec_f64());
            for ((a, p), o) in avg.iter().zip(&param).zip(old) {
                let want = match kind {
                    TensorKind::Parameter => o + 0.3 * (p - o),
                    TensorKind::Buffer => *p,
                };
                assert!((a - want).abs() <= 1e-6 * (1.0 + want.abs()), "{name}: {a} vs {want}");
            }
        }
    }

    #[test]
    fn an_average_of_still_weights_stays_put_bit_for_bit() {
        let (average, model) = (net(0), net(0));
        let ema = ExponentialMovingAverage::new(0.999).unwrap();
        for t in 0..5 {
            ema.update(&average, &model, t);
        }
        for ((name, a), (_, m)) in average.state_dict().iter().zip(model.state_dict()) {
            assert_eq!(a.to_vec_f32(), m.to_vec_f32(), "{name}");
        }
    }

    #[test]
    fn copy_weights_makes_an_identical_copy() {
        let (to, from) = (net(0), net(1));
        copy_weights(&to, &from);
        for ((name, a), (_, b)) in to.state_dict().iter().zip(from.state_dict()) {
            assert_eq!(a.to_vec_f32(), b.to_vec_f32(), "{name}");
        }
    }
}
