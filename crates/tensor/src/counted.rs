//! Counts kept on a device, and the operations that read them there: what lets a CUDA graph
//! replay a training iteration (`earthmover_kernels::cuda::graph`).
//!
//! A captured graph repeats its kernels' arguments at every replay, but an iteration's random
//! numbers, its batch's position in the data order and Adam's bias correction change every
//! iteration. So these operations take the value from a *count*: a one-element f64 tensor
//! holding an exact integer (below 2^53), on the device of the work, that the kernel reads when
//! it runs. Advanced in place with [`Tensor::add_scalar_`] (the tensor keeps its buffer), it
//! has a new value at each replay; the graph stays the same. (PyTorch's CUDA graphs keep their
//! random generator's offset in device memory for the same reason.)
//!
//! Every operation here gives, bit for bit, its by-value twin at the count's value: on the CPU
//! it is read there and the twin runs.

use crate::{Error, Result, Tensor};
use earthmover_kernels::{checked_numel, DType, Device, Distribution, OptimizerUpdate, Storage};

/// Counts are f64 values; above 2^53 not every integer is one.
const MAX_COUNT: u64 = 1 << 53;

impl Tensor {
    /// A count holding `value`, on `device`: a one-element f64 tensor for the `*_at`
    /// operations. An error when the device is not available or `value` is past 2^53.
    pub fn count(value: u64, device: Device) -> Result<Tensor> {
        if value > MAX_COUNT {
            return Err(Error(format!(
                "count: {value} is past 2^53, the integers f64 holds exactly"
            )));
        }
        Tensor::full(&[1], value as f64, DType::F64).to_device(device)
    }

    /// The value of a count (a read: on a GPU, a wait for the work before it).
    pub fn count_value(&self) -> Result<u64> {
        Storage::check_count(&self.storage(), self.device(), "count_value").map_err(Error)?;
        Ok(self.try_to_vec_f64()?[0] as u64)
    }

    /// [`Tensor::random`] keyed by draw `index` of `seed`'s sequence: the key is
    /// `earthmover_kernels::cpu::random::sequence_key(seed, index)`, with the index read from the
    /// count `index` (on the device where the numbers are drawn) when the kernel runs.
    pub fn random_at(
        distribution: Distribution,
        shape: &[usize],
        seed: u64,
        index: &Tensor,
        stream: u64,
        dtype: DType,
    ) -> Result<Tensor> {
        let len = checked_numel(shape).ok_or_else(|| Error(format!("random_at: shape {shape:?} overflows")))?;
        let storage = Storage::random_at(distribution, len, seed, &index.storage(), stream, dtype).map_err(Error)?;
        Ok(Tensor::constant(storage, shape.to_vec()))
    }

    /// [`Tensor::gather_shuffled_rows`] from the position held in the count `position` (on
    /// this tensor's device) when the kernel runs.
    pub fn gather_shuffled_rows_at(&self, rows: usize, position: &Tensor, seed: u64) -> Result<Tensor> {
        let position = position.storage();
        self.gather_rows("gather_shuffled_rows_at", rows, |s, row_len| {
            s.gather_shuffled_rows_at(row_len, rows, &position, seed)
        })
    }

    /// [`Tensor::apply_updates`] with Adam's step count read from the count `step_count` (on
    /// the parameters' device) when the kernels run, instead of the update's own `step`
    /// (SGD, RMSProp and clamping count no steps). An error when the count is not one.
    pub fn apply_updates_at(
        params: &[&Tensor],
        grads: &[Option<&Tensor>],
        states: &[&[&Tensor]],
        update: OptimizerUpdate,
        step_count: &Tensor,
    ) -> Result<()> {
        if let Some(p) = params.first() {
            Storage::check_count(&step_count.storage(), p.device(), "apply_updates_at's step count").map_err(Error)?;
        }
        Tensor::apply_updates_counted(params, grads, states, update, Some(step_count));
        Ok(())
    }

    /// `self += value` in place (PyTorch's `add_`), in its dtype (f32 or f64), without a
    /// graph: for tensors that are not part of one (a count, a buffer), or a leaf that
    /// requires grad under [`crate::no_grad`] (as PyTorch allows); an error otherwise. The
    /// tensor keeps its buffer unless another tensor shares it (then it gets a copy first), so
    /// a kernel captured reading it reads the new value.
    pub fn add_scalar_(&self, value: f64) -> Result<()> {
        if !self.may_write_in_place() {
            return Err(Error(
                "add_scalar_: an in-place add on a tensor that requires grad would break its graph \
                 (a leaf may be written under no_grad, as in PyTorch)"
                    .into(),
            ));
        }
        let mut result = Ok(());
        self.update_storage(|s| result = s.add_scalar_in_place(value));
        result.map_err(Error)
    }
}

impl Tensor {
    /// Whether an in-place write may go into this tensor: one outside any graph, or a leaf
    /// (a parameter) while grad mode is off, which PyTorch allows too (`with torch.no_grad():
    /// w.copy_(v)`). An op's output that requires grad never: its graph would differentiate at
    /// the new values (and the version check would refuse the backward pass).
    fn may_write_in_place(&self) -> bool {
        !self.requires_grad() || (self.is_leaf() && !crate::is_grad_enabled())
    }

    /// Copy `src`'s values into this tensor's buffer, in place (PyTorch's `copy_`), without a
    /// graph: same shape, dtype and device, and an error for a tensor that requires grad
    /// (unless it is a leaf and grad mode is off: `no_grad(|| w.copy_(&v))`). The
    /// tensor keeps its buffer (unless another tensor shares it: then it gets a copy first),
    /// which [`Tensor::set_data`] replaces: state updated inside a captured CUDA graph (batch
    /// norm's running statistics) must stay where the graph's kernels find it.
    pub fn copy_(&self, src: &Tensor) -> Result<()> {
        if !self.may_write_in_place() {
            return Err(Error(
                "copy_: an in-place copy into a tensor that requires grad would break its graph \
                 (a leaf, a parameter say, may be written under no_grad, as in PyTorch)"
                    .into(),
            ));
        }
        if src.shape() != self.shape() || src.dtype() != self.dtype() || src.device() != self.device() {
            return Err(Error(format!(
                "copy_: a {:?} {} tensor on {} cannot be copied into a {:?} {} one on {}",
                src.shape(),
                src.dtype(),
                src.device(),
                self.shape(),
                self.dtype(),
                self.device()
            )));
        }
        let (source, shape) = (src.storage(), self.shape().to_vec());
        let strides = earthmover_kernels::contiguous_strides(&shape);
        self.update_storage(|s| s.strided_write(0, &strides, &source, &shape));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use earthmover_kernels::cpu::random::sequence_key;

    #[test]
    fn the_at_operations_are_their_by_value_twins_at_the_count() {
        let normal = Distribution::Normal { mean: 0.5, std: 2.0 };
        let index = Tensor::count(41, Device::Cpu).unwrap();
        for dtype in [DType::F32, DType::F64, DType::BF16] {
            let at = Tensor::random_at(normal, &[3, 5], 7, &index, 2, dtype).unwrap();
            let twin = Tensor::random(normal, &[3, 5], sequence_key(7, 41), 2, dtype, Device::Cpu).unwrap();
            assert_eq!((at.shape(), at.dtype()), (twin.shape(), twin.dtype()));
            assert_eq!(at.to_vec_f64(), twin.to_vec_f64(), "{dtype}");
        }
        let rows = Tensor::from_vec((0..40).map(|i| i as f32).collect(), &[10, 2, 2]).unwrap();
        let position = Tensor::count(17, Device::Cpu).unwrap();
        assert_eq!(
            rows.gather_shuffled_rows_at(6, &position, 5).unwrap().to_vec_f64(),
            rows.gather_shuffled_rows(6, 17, 5).unwrap().to_vec_f64()
        );
        // Adam at the count's step, not the update's own.
        let adam = |step| OptimizerUpdate::Adam {
            lr: 0.1,
            betas: (0.5, 0.9),
            eps: 1e-8,
            step,
        };
        let step = Tensor::count(3, Device::Cpu).unwrap();
        let fresh = || {
            let p = Tensor::from_vec(vec![1.0f32, -2.0, 0.5], &[3]).unwrap();
            (p.clone(), p.zeros_like(), p.zeros_like())
        };
        let grad = Tensor::from_vec(vec![0.3f32, 0.1, -0.7], &[3]).unwrap();
        let (p, m, v) = fresh();
        Tensor::apply_updates_at(&[&p], &[Some(&grad)], &[&[&m, &v]], adam(99), &step).unwrap();
        let (q, m2, v2) = fresh();
        Tensor::apply_updates(&[&q], &[Some(&grad)], &[&[&m2, &v2]], adam(3));
        assert_eq!(p.to_vec_f64(), q.to_vec_f64());
    }

    #[test]
    fn counts_advance_in_place_and_bad_ones_are_errors() {
        let count = Tensor::count(5, Device::Cpu).unwrap();
        let alias = count.clone();
        count.add_scalar_(3.0).unwrap();
        assert_eq!((count.count_value().unwrap(), alias.count_value().unwrap()), (8, 8));
        assert!(Tensor::count(1 << 54, Device::Cpu).unwrap_err().0.contains("past 2^53"));
        let not_a_count = Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap();
        let normal = Distribution::Normal { mean: 0.0, std: 1.0 };
        let err = Tensor::random_at(normal, &[2], 0, &not_a_count, 0, DType::F32)
            .unwrap_err()
            .0;
        assert!(err.contains("a count is one f64 value, got 2 f32 values"), "{err}");
        let err = not_a_count.gather_shuffled_rows_at(1, &not_a_count, 0).unwrap_err().0;
        assert!(err.contains("a count is one f64"), "{err}");
        let p = Tensor::from_vec(vec![1.0f32], &[1]).unwrap();
        let update = OptimizerUpdate::Sgd { lr: 0.1, momentum: 0.0 };
        let err = Tensor::apply_updates_at(&[&p], &[None], &[&[]], update, &not_a_count)
            .unwrap_err()
            .0;
        assert!(err.contains("apply_updates_at's step count"), "{err}");
        let half = Tensor::from_vec(vec![1.0f32], &[1]).unwrap().to_dtype(DType::BF16);
        assert!(half.add_scalar_(1.0).unwrap_err().0.contains("f32 and f64 only"));
        let trained = Tensor::from_vec(vec![1.0f32], &[1]).unwrap().requires_grad_(true);
        assert!(trained.add_scalar_(1.0).unwrap_err().0.contains("requires grad"));
    }

    #[test]
    fn copy_writes_in_place_and_refuses_a_mismatch() {
        let target = Tensor::from_vec(vec![0.0f32; 4], &[2, 2]).unwrap();
        let alias = target.clone();
        let source = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
        target.copy_(&source).unwrap();
        assert_eq!(alias.to_vec_f64(), vec![1.0, 2.0, 3.0, 4.0]);
        // The source keeps its own values: no storage shared.
        target.copy_(&source.mul_scalar(2.0)).unwrap();
        assert_eq!(source.to_vec_f64(), vec![1.0, 2.0, 3.0, 4.0]);
        let wrong = Tensor::from_vec(vec![1.0f32; 4], &[4]).unwrap();
        assert!(target.copy_(&wrong).unwrap_err().0.contains("cannot be copied"));
        let trained = source.clone().requires_grad_(true);
        assert!(trained.copy_(&source).unwrap_err().0.contains("requires grad"));
    }

    /// PyTorch's way to set a parameter, `with torch.no_grad(): w.copy_(v)`, works the same;
    /// an op's output is never written, and a detached copy does not alias (copy-on-write).
    #[test]
    fn a_parameter_is_written_under_no_grad_and_an_outputs_never() {
        let w = Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap().requires_grad_(true);
        let v = Tensor::from_vec(vec![5.0f32, 6.0], &[2]).unwrap();
        crate::no_grad(|| w.copy_(&v)).unwrap();
        crate::no_grad(|| w.add_scalar_(1.0)).unwrap();
        assert_eq!(w.to_vec_f64(), [6.0, 7.0]);
        assert!(w.requires_grad(), "still a parameter");
        let output = w.mul_scalar(2.0);
        let refused = crate::no_grad(|| output.copy_(&v)).unwrap_err().0;
        assert!(refused.contains("requires grad"), "{refused}");
        w.detach().copy_(&v).unwrap();
        assert_eq!(w.to_vec_f64(), [6.0, 7.0], "a detached copy is written, not w");
    }
}
