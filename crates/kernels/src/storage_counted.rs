//! Operations of [`Storage`] that take a per-iteration count from a storage instead of by value:
//! a random draw's index in its seed's sequence, a data order's position, Adam's step count;
//! and the in-place add that advances a count. On a GPU the kernels read the count when they
//! run (`cuda/storage/counted.rs`), so that a CUDA graph that captured them draws, gathers and
//! steps anew at each replay; on the CPU the count is read here and the by-value operation
//! runs. Either way the numbers are those of the by-value operation at the count's value.
//!
//! A count is a one-element f64 storage holding an exact integer (below 2^53), on the device
//! of the work that reads it.

use crate::cpu::random::sequence_key;
use crate::cuda::device::GpuDevice;
use crate::cuda::storage::GpuStorage;
use crate::op::{Distribution, OptimizerUpdate, UnaryOp};
use crate::storage::{CpuStorage, DType, Device, Storage};
use crate::storage_optim::ParamStep;

impl Storage {
    /// An error unless `count` is a count (one f64) on `device`; `what` names it.
    pub fn check_count(count: &Storage, device: Device, what: &str) -> Result<(), String> {
        if count.dtype() != DType::F64 || count.len() != 1 {
            return Err(format!(
                "{what}: a count is one f64 value, got {} {} values",
                count.len(),
                count.dtype()
            ));
        }
        if count.device() != device {
            return Err(format!(
                "{what}: the count is on {}, the work on {device}",
                count.device()
            ));
        }
        Ok(())
    }

    /// A CPU count's value (checked by [`Self::check_count`]).
    fn cpu_count(count: &Storage) -> u64 {
        match count {
            Storage::Cpu(CpuStorage::F64(v)) => v[0] as u64,
            _ => unreachable!("a CPU count, checked by the caller"),
        }
    }

    /// [`Storage::random`] keyed by draw `index` of `seed`'s sequence
    /// ([`sequence_key`]`(seed, index)`), the index held in the count `index`; on its device.
    pub fn random_at(
        distribution: Distribution,
        len: usize,
        seed: u64,
        index: &Storage,
        stream: u64,
        dtype: DType,
    ) -> Result<Storage, String> {
        let device = index.device();
        Storage::check_count(index, device, "random_at's index")?;
        if dtype.is_half() {
            return Ok(Storage::random_at(distribution, len, seed, index, stream, DType::F32)?.cast(dtype));
        }
        match index {
            Storage::Cuda(count) => Ok(Storage::Cuda(GpuStorage::random_at(
                GpuDevice::get(device)?,
                distribution,
                len,
                seed,
                count,
                stream,
                dtype,
            )?)),
            Storage::Cpu(_) => {
                let key = sequence_key(seed, Storage::cpu_count(index));
                Storage::random(distribution, len, key, stream, dtype, device)
            }
        }
    }

    /// [`Storage::gather_shuffled_rows`] from the position held in the count `position`, on
    /// this storage's device.
    pub fn gather_shuffled_rows_at(
        &self,
        row_len: usize,
        rows: usize,
        position: &Storage,
        seed: u64,
    ) -> Result<Storage, String> {
        Storage::check_count(position, self.device(), "gather_shuffled_rows_at's position")?;
        match (self, position) {
            (Storage::Cuda(g), Storage::Cuda(count)) if !self.dtype().is_half() => {
                self.check_whole_rows(row_len, "gather_shuffled_rows_at")?;
                g.gather_shuffled_rows_at(row_len, rows, count, seed).map(Storage::Cuda)
            }
            (Storage::Cuda(_), Storage::Cuda(_)) => Ok(self
                .widened()
                .gather_shuffled_rows_at(row_len, rows, position, seed)?
                .cast(self.dtype())),
            _ => self.gather_shuffled_rows(row_len, rows, Storage::cpu_count(position), seed),
        }
    }

    /// [`Storage::optimizer_step_list`] with Adam's step count held in the count `step_count`
    /// (on the parameters' device) instead of the update's own `step`; the other updates count
    /// no steps and run as they are.
    pub fn optimizer_step_list_at(steps: &mut [ParamStep<'_>], update: OptimizerUpdate, step_count: &Storage) {
        Storage::optimizer_step_list_counted(steps, update, Some(step_count))
    }

    /// `self += value` element by element, in place and in its dtype (`UnaryOp::AddScalar`'s
    /// arithmetic): on a GPU the buffer stays where it is, so that a captured kernel reading
    /// it (a count) sees the new value at the next replay. f32 and f64 only.
    pub fn add_scalar_in_place(&mut self, value: f64) -> Result<(), String> {
        match self {
            Storage::Cuda(g) if !g.dtype().is_half() => g.add_scalar_in_place(value),
            Storage::Cpu(CpuStorage::F32(v)) => v.iter_mut().for_each(|x| *x = UnaryOp::AddScalar(value).apply(*x)),
            Storage::Cpu(CpuStorage::F64(v)) => v.iter_mut().for_each(|x| *x = UnaryOp::AddScalar(value).apply(*x)),
            other => {
                return Err(format!(
                    "add_scalar_in_place: {} is not supported (f32 and f64 only)",
                    other.dtype()
                ))
            }
        }
        Ok(())
    }
}
