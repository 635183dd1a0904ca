//! The fused optimiser updates of [`Storage`], in place: one tensor at a time, or a list at
//! once (on a GPU one launch per 24 tensors of one dtype). Adam's step count is the update's
//! own, or read from a count (`storage_counted.rs`) for a step a CUDA graph replays.

use crate::cpu::optim;
use crate::cuda::storage::{GpuParamStep, GpuStorage};
use crate::op::OptimizerUpdate;
use crate::storage::{CpuStorage, DType, Storage};

/// A parameter, its gradient and its state, stepped by [`Storage::optimizer_step_list`].
pub struct ParamStep<'a> {
    pub param: &'a mut Storage,
    pub grad: &'a Storage,
    pub state: Vec<&'a mut Storage>,
}

impl Storage {
    /// One fused optimiser step of each tensor of `steps`, in place: on a CUDA device, all f32
    /// (or all f64), one launch per 24 tensors; elsewhere each stepped on its own.
    pub fn optimizer_step_list(steps: &mut [ParamStep<'_>], update: OptimizerUpdate) {
        Storage::optimizer_step_list_counted(steps, update, None)
    }

    /// [`Self::optimizer_step_list`], with Adam's step count from `step_count` (a one-element
    /// f64 storage on the parameters' device: see `storage_counted.rs`) when given: read by
    /// the kernel on a GPU, else on the host.
    pub(crate) fn optimizer_step_list_counted(
        steps: &mut [ParamStep<'_>],
        update: OptimizerUpdate,
        step_count: Option<&Storage>,
    ) {
        let dtype = steps.first().map(|s| s.param.dtype()).filter(|d| !d.is_half());
        let on_gpu = |t: &Storage| matches!(t, Storage::Cuda(_)) && Some(t.dtype()) == dtype;
        let one_list = steps
            .iter()
            .all(|s| on_gpu(s.param) && on_gpu(s.grad) && s.state.iter().all(|t| on_gpu(t)));
        let gpu_count = match step_count {
            Some(Storage::Cuda(count)) => Some(count),
            _ => None,
        };
        if !one_list || (step_count.is_some() && gpu_count.is_none()) {
            // Adam's step count read here, on the host (on a GPU, a wait for it, refused
            // during a CUDA graph's capture). A count that cannot be read steps nothing: the
            // count's device keeps the error as its failure, returned by its next read.
            let update = match (update, step_count) {
                (OptimizerUpdate::Adam { lr, betas, eps, .. }, Some(count)) => match count.try_to_f64_vec() {
                    Ok(v) => OptimizerUpdate::Adam {
                        lr,
                        betas,
                        eps,
                        step: v[0] as u64,
                    },
                    Err(e) => {
                        if let Storage::Cuda(g) = count {
                            g.device
                                .record_failure(format!("Adam's step count, read for a 16-bit or mixed list: {e}"));
                        }
                        return;
                    }
                },
                _ => update,
            };
            for step in steps.iter_mut() {
                step.param.optimizer_step(step.grad, &mut step.state, update);
            }
            return;
        }
        fn gpu(s: &mut Storage) -> &mut GpuStorage {
            let Storage::Cuda(g) = s else {
                unreachable!("checked above")
            };
            g
        }
        let mut gpu_steps: Vec<GpuParamStep<'_>> = steps
            .iter_mut()
            .map(|step| GpuParamStep {
                param: gpu(step.param),
                grad: match step.grad {
                    Storage::Cuda(g) => g,
                    _ => unreachable!("checked above"),
                },
                state: step.state.iter_mut().map(|s| gpu(s)).collect(),
            })
            .collect();
        match gpu_count {
            Some(count) => GpuStorage::optimizer_step_list_at(&mut gpu_steps, update, count),
            None => GpuStorage::optimizer_step_list(&mut gpu_steps, update),
        }
    }

    /// One fused optimiser step on this parameter buffer, in place.
    pub fn optimizer_step(&mut self, grad: &Storage, state: &mut [&mut Storage], update: OptimizerUpdate) {
        let operands: Vec<&Storage> = [&*self, grad].into_iter().chain(state.iter().map(|s| &**s)).collect();
        if let Some(half) = Storage::all_half(&operands) {
            // The parameter and its state are rounded to 16 bits after each step (mixed
            // precision keeps them in f32 instead, and steps those).
            let mut wide = self.widened();
            let mut wide_state: Vec<Storage> = state.iter().map(|s| s.widened()).collect();
            let mut wide_refs: Vec<&mut Storage> = wide_state.iter_mut().collect();
            wide.optimizer_step(&grad.widened(), &mut wide_refs, update);
            *self = wide.cast(half);
            for (s, w) in state.iter_mut().zip(&wide_state) {
                **s = w.cast(half);
            }
            return;
        }
        if let (Storage::Cuda(p), Storage::Cuda(g)) = (&mut *self, grad) {
            let mut gpu_state: Vec<&mut GpuStorage> = state
                .iter_mut()
                .map(|s| match &mut **s {
                    Storage::Cuda(s) => s,
                    _ => panic!("optimizer step: state on another device than the parameter"),
                })
                .collect();
            return p.optimizer_step(g, &mut gpu_state, update);
        }
        crate::cpu::denormals::sync_this_thread();
        macro_rules! run {
            ($variant:ident) => {{
                let Storage::Cpu(CpuStorage::$variant(p)) = self else {
                    unreachable!()
                };
                let Storage::Cpu(CpuStorage::$variant(g)) = grad else {
                    panic!(
                        "optimizer step: gradient dtype {} differs from parameter dtype",
                        grad.dtype()
                    )
                };
                let mut bufs: Vec<&mut Vec<_>> = state
                    .iter_mut()
                    .map(|s| match &mut **s {
                        Storage::Cpu(CpuStorage::$variant(v)) => v,
                        _ => panic!("optimizer step: state dtype differs from parameter dtype"),
                    })
                    .collect();
                match update {
                    OptimizerUpdate::Sgd { lr, momentum } => {
                        let mut empty = Vec::new();
                        let buf = bufs.pop().unwrap_or(&mut empty);
                        optim::sgd(p, g, buf, lr, momentum)
                    }
                    OptimizerUpdate::RmsProp { lr, alpha, eps } => optim::rmsprop(p, g, bufs[0], lr, alpha, eps),
                    OptimizerUpdate::Adam { lr, betas, eps, step } => {
                        let (m, v) = bufs.split_at_mut(1);
                        optim::adam(p, g, m[0], v[0], lr, betas, eps, step)
                    }
                    OptimizerUpdate::Clamp { min, max } => optim::clamp_in_place(p, min, max),
                }
            }};
        }
        match self.dtype() {
            DType::F32 => run!(F32),
            DType::F64 => run!(F64),
            half => panic!("optimizer step: a {half} parameter needs a gradient and state of {half} too"),
        }
    }
}
