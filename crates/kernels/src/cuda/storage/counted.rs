//! Launches that read a per-iteration count from device memory when their kernel runs, instead
//! of taking it by value: a random draw's index in its seed's sequence (random.cu's
//! `uniform_at`, `normal_at`), a data order's position (`gather_shuffled_rows_at`) and Adam's
//! step count (optim.cu's `adam_at`); and the in-place add that advances such a count
//! (`add_scalar_in_place`). A CUDA graph repeats its kernels' argument values at every replay
//! (`cuda::graph`); a count read through a pointer is what lets a captured training iteration
//! draw new noise, gather the next batch and bias-correct the next Adam step at each replay.
//!
//! A count is a one-element f64 buffer on the same device holding an exact integer (below
//! 2^53: iterations, images drawn, steps). The CPU twins are `Storage::random_at` and its
//! siblings, which read the count and run the by-value kernels: the same numbers.

use super::{GpuParamStep, GpuStorage};
use crate::cuda::device::{Arg, GpuDevice};
use crate::cuda::LaunchShape;
use crate::op::{Distribution, OptimizerUpdate};
use crate::storage::DType;
use std::sync::Arc;

impl GpuStorage {
    /// Panics unless `count` is a count for kernels on this storage's device: one f64 on it.
    /// (The callers' error: `Tensor` checks its users' counts and returns an error.)
    pub(super) fn check_count(&self, count: &GpuStorage, what: &str) {
        check_count_on(&self.device, count, what)
    }

    /// [`GpuStorage::random`] of draw `index` (read on the device) of `seed`'s sequence: key
    /// `cpu::random::sequence_key(seed, index)`.
    pub fn random_at(
        device: Arc<GpuDevice>,
        distribution: Distribution,
        len: usize,
        seed: u64,
        index: &GpuStorage,
        stream: u64,
        dtype: DType,
    ) -> Result<GpuStorage, String> {
        check_count_on(&device, index, "random_at's index");
        let key = [Arg::U64(seed), index.ptr()];
        GpuStorage::draw(device, distribution, len, dtype, ("_at", &key), stream)
    }

    /// [`GpuStorage::gather_shuffled_rows`] from the position held in `position` when the
    /// kernel runs.
    pub fn gather_shuffled_rows_at(
        &self,
        row_len: usize,
        rows: usize,
        position: &GpuStorage,
        seed: u64,
    ) -> Result<GpuStorage, String> {
        self.check_count(position, "gather_shuffled_rows_at's position");
        self.gather_rows(row_len, rows, ("gather_shuffled_rows_at", position.ptr()), seed)
    }

    /// [`GpuStorage::optimizer_step_list`] with Adam's step count read from `step_count` when
    /// the kernels run (the update's own `step` unused); the other updates do not count steps
    /// and launch as they are.
    pub fn optimizer_step_list_at(steps: &mut [GpuParamStep<'_>], update: OptimizerUpdate, step_count: &GpuStorage) {
        GpuStorage::optimizer_step_list_counted(steps, update, Some(step_count))
    }

    /// optim.cu's `adam_at` on a parameter list of `shape`'s elements, `(lr, betas, eps)`, at
    /// the step count held in `count`.
    pub(super) fn launch_adam_at(
        &self,
        list: Arg,
        shape: LaunchShape,
        hyper: (f64, (f64, f64), f64),
        count: &GpuStorage,
    ) {
        let (lr, betas, eps) = hyper;
        self.check_count(count, "Adam's step count");
        self.launch(
            &self.kernel("adam_at"),
            shape,
            &mut [
                list,
                count.ptr(),
                Arg::F64(lr),
                Arg::F64(betas.0),
                Arg::F64(betas.1),
                Arg::F64(eps),
            ],
        )
    }

    /// `self += value`, element by element in place, in its dtype (f32 or f64): the buffer
    /// stays where it is, so a captured kernel that reads it sees the new value at its next
    /// replay.
    pub fn add_scalar_in_place(&mut self, value: f64) {
        if self.is_empty() {
            return;
        }
        self.launch(
            &self.kernel("add_scalar_in_place"),
            LaunchShape::elementwise(self.len()),
            &mut [self.ptr(), Arg::I64(self.len() as i64), Arg::F64(value)],
        );
    }
}

/// Panics unless `count` is a count for kernels on `device`: one f64 on it.
fn check_count_on(device: &Arc<GpuDevice>, count: &GpuStorage, what: &str) {
    assert!(
        Arc::ptr_eq(device, &count.device) && count.dtype() == DType::F64 && count.len() == 1,
        "{what}: a count is one f64 on the same device, got {} {} on {} (for work on {})",
        count.len(),
        count.dtype(),
        count.device.device,
        device.device
    );
}
