//! optim.cu's launches: the fused optimiser updates of a list of parameters, one launch per
//! [`MAX_PARAMS`] tensors (Adam at a count's step in `counted.rs`).

use super::{GpuParamStep, GpuStorage};
use crate::cuda::device::Arg;
use crate::cuda::shapes::{ParamList, MAX_PARAMS};
use crate::cuda::LaunchShape;
use crate::op::OptimizerUpdate;
use crate::storage::DType;

impl GpuStorage {
    /// One fused optimiser step in place (a one-tensor list of optim.cu's kernels).
    pub fn optimizer_step(&mut self, grad: &GpuStorage, state: &mut [&mut GpuStorage], update: OptimizerUpdate) {
        let state = state.iter_mut().map(|s| &mut **s).collect();
        GpuStorage::optimizer_step_list(
            &mut [GpuParamStep {
                param: self,
                grad,
                state,
            }],
            update,
        );
    }

    /// One fused optimiser step of every tensor of `steps`, in place, with one launch per
    /// [`MAX_PARAMS`] tensors (optim.cu's kernels take a list): a network's parameters in one
    /// launch instead of one each. Every tensor must be on one device, in one dtype (f32 or
    /// f64).
    pub fn optimizer_step_list(steps: &mut [GpuParamStep<'_>], update: OptimizerUpdate) {
        GpuStorage::optimizer_step_list_counted(steps, update, None)
    }

    /// [`Self::optimizer_step_list`], Adam's step count read from `step_count` (a one-element
    /// f64 buffer on the same device) when the kernels run, when given: see `counted.rs`.
    pub(super) fn optimizer_step_list_counted(
        steps: &mut [GpuParamStep<'_>],
        update: OptimizerUpdate,
        step_count: Option<&GpuStorage>,
    ) {
        for chunk in steps.chunks_mut(MAX_PARAMS) {
            let first = &chunk[0].param;
            for step in chunk.iter() {
                first.check_same(step.param, "optimizer step");
                first.check_same(step.grad, "optimizer step");
                step.state.iter().for_each(|s| first.check_same(s, "optimizer step"));
            }
            let address = |s: &GpuStorage| s.device.address(&s.buffer);
            let pointers = chunk.iter().map(|step| {
                let (s1, s2) = match &step.state[..] {
                    [] => (0, 0),
                    [a] => (address(a), 0),
                    [a, b, ..] => (address(a), address(b)),
                };
                (step.param.len(), address(step.param), address(step.grad), s1, s2)
            });
            let list = match first.dtype() {
                DType::F32 => {
                    let mut l = ParamList::<f32>::new();
                    for (len, p, g, s1, s2) in pointers {
                        l.push(len, p as *mut f32, g as *const f32, s1 as *mut f32, s2 as *mut f32);
                    }
                    Arg::ParamsF32(l)
                }
                DType::F64 => {
                    let mut l = ParamList::<f64>::new();
                    for (len, p, g, s1, s2) in pointers {
                        l.push(len, p as *mut f64, g as *const f64, s1 as *mut f64, s2 as *mut f64);
                    }
                    Arg::ParamsF64(l)
                }
                half => unreachable!("{half} parameters are stepped in f32 (Storage::optimizer_step)"),
            };
            let total = chunk.iter().map(|step| step.param.len()).sum();
            chunk[0].param.launch_update(list, total, update, step_count);
        }
    }

    /// Launch `update`'s kernel on a list of `total` elements in all (Adam's at the step count
    /// of `step_count` when given).
    fn launch_update(&self, list: Arg, total: usize, update: OptimizerUpdate, step_count: Option<&GpuStorage>) {
        let shape = LaunchShape::elementwise(total);
        match update {
            OptimizerUpdate::Adam { lr, betas, eps, .. } if step_count.is_some() => {
                self.launch_adam_at(list, shape, (lr, betas, eps), step_count.expect("matched above"))
            }
            OptimizerUpdate::Sgd { lr, momentum } => self.launch(
                &self.kernel("sgd"),
                shape,
                &mut [list, Arg::F64(lr), Arg::F64(momentum)],
            ),
            OptimizerUpdate::RmsProp { lr, alpha, eps } => self.launch(
                &self.kernel("rmsprop"),
                shape,
                &mut [list, Arg::F64(lr), Arg::F64(alpha), Arg::F64(eps)],
            ),
            OptimizerUpdate::Adam { lr, betas, eps, step } => {
                let (step_size, inv_bc2) = OptimizerUpdate::adam_step_scalars(lr, betas, step);
                self.launch(
                    &self.kernel("adam"),
                    shape,
                    &mut [
                        list,
                        Arg::F64(step_size),
                        Arg::F64(betas.0),
                        Arg::F64(betas.1),
                        Arg::F64(inv_bc2),
                        Arg::F64(eps),
                    ],
                )
            }
            OptimizerUpdate::Clamp { min, max } => {
                self.launch(&self.kernel("clamp"), shape, &mut [list, Arg::F64(min), Arg::F64(max)])
            }
        }
    }
}
