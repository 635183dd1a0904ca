//! Optimisers, shaped like `torch.optim`: SGD, RMSProp and Adam with PyTorch's formulas and
//! defaults, each updating its parameters with one fused in-place kernel (on a GPU one launch for a
//! list of up to 24 tensors); and
//! WGAN's weight clipping.

use earthmover_tensor::{OptimizerUpdate, Tensor};
use std::collections::HashMap;

/// An optimiser over a fixed list of named parameters.
pub trait Optimizer {
    /// Update every parameter that has a gradient.
    fn step(&mut self);
    /// Forget the parameters' gradients.
    fn zero_grad(&self);
    /// The parameters it updates (PyTorch's `param_groups[0]["params"]`): a loss scaler
    /// unscales their gradients before the step.
    fn params(&self) -> &[Tensor];
    fn learning_rate(&self) -> f64;
    fn set_learning_rate(&mut self, lr: f64);
    /// The optimiser's state as named tensors (PyTorch's names: `state.{i}.exp_avg`, ...),
    /// for checkpoints.
    fn state_dict(&self) -> Vec<(String, Tensor)>;
    /// Restore a state saved by [`Optimizer::state_dict`].
    fn load_state_dict(&mut self, state: &HashMap<String, Tensor>) -> Result<(), String>;
    /// From now on keep the step count on the parameters' device, as a count
    /// ([`Tensor::count`]) that each step advances in place and its update reads there (Adam's
    /// bias correction), so that a step captured in a CUDA graph counts at each replay
    /// ([`crate::train::Trainer::use_cuda_graphs`]). The same updates, bit for bit; the state
    /// dict reads the count back. An error for an optimiser that cannot (the default).
    fn count_steps_on_device(&mut self) -> Result<(), String> {
        Err("this optimiser cannot keep its step count on the device".into())
    }
}

/// Parameters and one state tensor list per parameter.
struct ParamState {
    params: Vec<Tensor>,
    /// `buffers[k][i]` is state buffer `k` of parameter `i`.
    buffers: Vec<Vec<Tensor>>,
    names: &'static [&'static str],
    /// Steps taken, unless `step_count` holds them.
    step: u64,
    /// The steps taken, on the parameters' device, once [`Optimizer::count_steps_on_device`]
    /// has been called: then the truth, and `step` is not kept.
    step_count: Option<Tensor>,
}

impl ParamState {
    fn new(params: Vec<Tensor>, names: &'static [&'static str]) -> ParamState {
        let buffers = names
            .iter()
            .map(|_| params.iter().map(|p| p.zeros_like()).collect())
            .collect();
        ParamState {
            params,
            buffers,
            names,
            step: 0,
            step_count: None,
        }
    }

    /// Every parameter that has a gradient, in one call: on a GPU one launch for the list.
    fn update_all(&mut self, update: impl Fn(u64) -> OptimizerUpdate) {
        if self.step_count.is_none() {
            self.step += 1;
        }
        let mut params = Vec::new();
        let mut grads = Vec::new();
        let mut states: Vec<Vec<&Tensor>> = Vec::new();
        for (i, p) in self.params.iter().enumerate() {
            let Some(g) = p.grad() else { continue };
            params.push(p);
            grads.push(g);
            states.push(self.buffers.iter().map(|b| &b[i]).collect());
        }
        let grads: Vec<Option<&Tensor>> = grads.iter().map(Some).collect();
        let states: Vec<&[&Tensor]> = states.iter().map(Vec::as_slice).collect();
        match &self.step_count {
            Some(count) => {
                // Advanced in place, then read by the update's kernel: the step's number.
                let counted = count
                    .add_scalar_(1.0)
                    .and_then(|()| Tensor::apply_updates_at(&params, &grads, &states, update(0), count));
                counted.expect("a count made by count_steps_on_device, on the parameters' device");
            }
            None => Tensor::apply_updates(&params, &grads, &states, update(self.step)),
        }
    }

    fn count_steps_on_device(&mut self) -> Result<(), String> {
        if self.step_count.is_none() {
            let device = self
                .params
                .first()
                .map_or(earthmover_tensor::Device::Cpu, |p| p.device());
            self.step_count = Some(Tensor::count(self.step, device).map_err(|e| e.0)?);
        }
        Ok(())
    }

    /// The steps taken (a read of the device's count, when it holds them).
    fn steps(&self) -> u64 {
        match &self.step_count {
            // A failed device reads as no steps: its failure is returned by the next read of
            // the weights, which a checkpoint makes too.
            Some(count) => count.count_value().unwrap_or(0),
            None => self.step,
        }
    }

    fn zero_grad(&self) {
        self.params.iter().for_each(|p| p.zero_grad());
    }

    fn state_dict(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![(
            "step".to_string(),
            Tensor::scalar(self.steps() as f64, earthmover_tensor::DType::F64),
        )];
        for (k, name) in self.names.iter().enumerate() {
            for (i, b) in self.buffers[k].iter().enumerate() {
                out.push((format!("state.{i}.{name}"), b.detach()));
            }
        }
        out
    }

    fn load_state_dict(&mut self, state: &HashMap<String, Tensor>) -> Result<(), String> {
        let step = state.get("step").ok_or("optimizer state has no `step`")?;
        if step.numel() != 1 {
            return Err(format!(
                "optimizer state `step` has shape {:?}, expected one value",
                step.shape()
            ));
        }
        let step = step.item();
        if !(step >= 0.0 && step.is_finite()) {
            return Err(format!("optimizer state `step` is {step}, not a step count"));
        }
        for (k, name) in self.names.iter().enumerate() {
            for (i, b) in self.buffers[k].iter().enumerate() {
                let key = format!("state.{i}.{name}");
                let t = state
                    .get(&key)
                    .ok_or_else(|| format!("optimizer state has no `{key}`"))?;
                if t.shape() != b.shape() {
                    return Err(format!(
                        "optimizer state `{key}` has shape {:?}, expected {:?}",
                        t.shape(),
                        b.shape()
                    ));
                }
                let moved = t.to_dtype(b.dtype()).to_device(b.device()).map_err(|e| e.0)?;
                b.set_data(&moved.detach());
            }
        }
        self.step = step as u64;
        if let Some(count) = &self.step_count {
            // A new count, for the new step: a graph that read the old one is stale anyway
            // (its weights were just replaced).
            self.step_count = Some(Tensor::count(self.step, count.device()).map_err(|e| e.0)?);
        }
        Ok(())
    }
}

/// Stochastic gradient descent with optional momentum (PyTorch's `SGD`, dampening 0).
pub struct Sgd {
    state: ParamState,
    pub lr: f64,
    /// May be changed between steps (PyTorch's `param_groups[0]["momentum"]`): the momentum
    /// buffers are made, zero, at the first step that needs them, as PyTorch makes them.
    pub momentum: f64,
}

impl Sgd {
    pub fn new(params: Vec<Tensor>, lr: f64, momentum: f64) -> Sgd {
        let mut sgd = Sgd {
            state: ParamState::new(params, &[]),
            lr,
            momentum,
        };
        sgd.prepare_step();
        sgd
    }

    /// The momentum buffers, made where momentum is on and they are not yet (a step with an
    /// empty buffer list updated nothing).
    fn prepare_step(&mut self) {
        if self.momentum != 0.0 && self.state.buffers.is_empty() {
            self.state.buffers = vec![self.state.params.iter().map(Tensor::zeros_like).collect()];
            self.state.names = &["momentum_buffer"];
        }
    }
}

/// RMSProp as PyTorch defines it: `alpha` 0.99, `eps` 1e-8 added outside the square root.
pub struct RmsProp {
    state: ParamState,
    pub lr: f64,
    pub alpha: f64,
    pub eps: f64,
}

impl RmsProp {
    pub fn new(params: Vec<Tensor>, lr: f64) -> RmsProp {
        RmsProp {
            state: ParamState::new(params, &["square_avg"]),
            lr,
            alpha: 0.99,
            eps: 1e-8,
        }
    }
}

/// Adam with bias correction, `eps` 1e-8 (PyTorch's `Adam`).
pub struct Adam {
    state: ParamState,
    pub lr: f64,
    pub betas: (f64, f64),
    pub eps: f64,
}

impl RmsProp {
    /// Nothing to make before a step: every buffer exists from the start.
    fn prepare_step(&mut self) {}
}

impl Adam {
    /// Nothing to make before a step: every buffer exists from the start.
    fn prepare_step(&mut self) {}

    pub fn new(params: Vec<Tensor>, lr: f64, betas: (f64, f64)) -> Adam {
        Adam {
            state: ParamState::new(params, &["exp_avg", "exp_avg_sq"]),
            lr,
            betas,
            eps: 1e-8,
        }
    }
}

macro_rules! impl_optimizer {
    ($t:ty, |$s:ident| $update:expr) => {
        impl Optimizer for $t {
            fn step(&mut self) {
                self.prepare_step();
                let $s = &*self;
                let update = $update;
                self.state.update_all(update);
            }
            fn zero_grad(&self) {
                self.state.zero_grad()
            }
            fn params(&self) -> &[Tensor] {
                &self.state.params
            }
            fn learning_rate(&self) -> f64 {
                self.lr
            }
            fn set_learning_rate(&mut self, lr: f64) {
                self.lr = lr;
            }
            fn state_dict(&self) -> Vec<(String, Tensor)> {
                self.state.state_dict()
            }
            fn load_state_dict(&mut self, state: &HashMap<String, Tensor>) -> Result<(), String> {
                self.state.load_state_dict(state)
            }
            fn count_steps_on_device(&mut self) -> Result<(), String> {
                self.state.count_steps_on_device()
            }
        }
    };
}

impl_optimizer!(Sgd, |s| {
    let (lr, momentum) = (s.lr, s.momentum);
    move |_| OptimizerUpdate::Sgd { lr, momentum }
});
impl_optimizer!(RmsProp, |s| {
    let (lr, alpha, eps) = (s.lr, s.alpha, s.eps);
    move |_| OptimizerUpdate::RmsProp { lr, alpha, eps }
});
impl_optimizer!(Adam, |s| {
    let (lr, betas, eps) = (s.lr, s.betas, s.eps);
    move |step| OptimizerUpdate::Adam { lr, betas, eps, step }
});

/// Clamp every parameter into `[-c, c]`, in place: WGAN's weight clipping, applied to every
/// critic parameter (batch-norm's affine parameters included) after each critic step.
pub fn clip_weights(params: &[Tensor], c: f64) {
    let params: Vec<&Tensor> = params.iter().collect();
    let (grads, states) = (vec![None; params.len()], vec![&[][..]; params.len()]);
    Tensor::apply_updates(&params, &grads, &states, OptimizerUpdate::Clamp { min: -c, max: c });
}

#[cfg(test)]
mod tests {
    use super::*;
    use earthmover_tensor::DType;

    /// Minimise (x - 3)^2 from x = 0.
    fn minimise(opt: &mut dyn Optimizer, x: &Tensor, steps: usize) -> f64 {
        for _ in 0..steps {
            opt.zero_grad();
            x.sub_scalar(3.0).square().sum().backward();
            opt.step();
        }
        x.to_vec_f64()[0]
    }

    #[test]
    fn every_optimizer_converges_on_a_quadratic() {
        let x = Tensor::zeros(&[1], DType::F64).requires_grad_(true);
        assert!((minimise(&mut Sgd::new(vec![x.clone()], 0.1, 0.9), &x, 300) - 3.0).abs() < 1e-6);
        let x = Tensor::zeros(&[1], DType::F64).requires_grad_(true);
        assert!((minimise(&mut Adam::new(vec![x.clone()], 0.05, (0.9, 0.999)), &x, 2000) - 3.0).abs() < 1e-3);
        let x = Tensor::zeros(&[1], DType::F64).requires_grad_(true);
        assert!((minimise(&mut RmsProp::new(vec![x.clone()], 0.01), &x, 2000) - 3.0).abs() < 2e-2);
    }

    /// Momentum turned on after construction takes effect, as in PyTorch (the step updated
    /// nothing: it had no buffer to walk).
    #[test]
    fn momentum_turned_on_later_makes_its_buffer() {
        let x = Tensor::from_vec(vec![1.0f64], &[1]).unwrap().requires_grad_(true);
        let mut sgd = Sgd::new(vec![x.clone()], 0.1, 0.0);
        sgd.momentum = 0.9;
        for expected in [1.0 - 0.1, 1.0 - 0.1 - 0.1 * 1.9] {
            x.set_grad(Some(Tensor::from_vec(vec![1.0f64], &[1]).unwrap()));
            sgd.step();
            assert!((x.to_vec_f64()[0] - expected).abs() < 1e-12, "{:?}", x.to_vec_f64());
        }
        assert!(sgd
            .state_dict()
            .iter()
            .any(|(name, _)| name.ends_with("momentum_buffer")));
    }

    #[test]
    fn state_dict_round_trips() {
        let x = Tensor::zeros(&[2], DType::F32).requires_grad_(true);
        let mut a = Adam::new(vec![x.clone()], 0.1, (0.0, 0.9));
        minimise(&mut a, &x, 3);
        let saved: HashMap<String, Tensor> = a.state_dict().into_iter().collect();
        assert_eq!(saved["step"].item(), 3.0);
        let mut b = Adam::new(vec![x.clone()], 0.1, (0.0, 0.9));
        b.load_state_dict(&saved).unwrap();
        let restored: HashMap<String, Tensor> = b.state_dict().into_iter().collect();
        for (k, v) in &saved {
            assert_eq!(v.to_vec_f64(), restored[k].to_vec_f64(), "{k}");
        }
    }

    #[test]
    fn clipping_clamps_every_weight() {
        let w = Tensor::from_vec(vec![-0.5f32, 0.005, 0.2], &[3])
            .unwrap()
            .requires_grad_(true);
        clip_weights(std::slice::from_ref(&w), 0.01);
        assert_eq!(w.to_vec_f32(), vec![-0.01, 0.005, 0.01]);
    }
}
