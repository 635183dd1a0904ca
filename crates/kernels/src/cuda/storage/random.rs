//! random.cu's launches: Philox numbers of a distribution, and rows of a resident dataset in
//! a seeded shuffled order; by value here, reading a count in `counted.rs`.

use super::GpuStorage;
use crate::cuda::device::{Arg, GpuDevice, InitialContents};
use crate::cuda::LaunchShape;
use crate::op::Distribution;
use crate::storage::DType;
use std::sync::Arc;

impl GpuStorage {
    /// `len` numbers from `distribution` (the Philox kernels of random.cu).
    pub fn random(
        device: Arc<GpuDevice>,
        distribution: Distribution,
        len: usize,
        seed: u64,
        stream: u64,
        dtype: DType,
    ) -> Result<GpuStorage, String> {
        GpuStorage::draw(device, distribution, len, dtype, ("", &[Arg::U64(seed)]), stream)
    }

    /// A launch of random.cu's `uniform` or `normal` family (`variant` "" or "_at", with its key
    /// arguments: the seed, or the seed and a count's address).
    pub(super) fn draw(
        device: Arc<GpuDevice>,
        distribution: Distribution,
        len: usize,
        dtype: DType,
        (variant, key): (&str, &[Arg]),
        stream: u64,
    ) -> Result<GpuStorage, String> {
        let out = GpuStorage {
            buffer: device.alloc(dtype, len, InitialContents::Unwritten)?,
            device,
        };
        let (family, a, b) = match distribution {
            Distribution::Uniform { low, high } => ("uniform", low, high),
            Distribution::Normal { mean, std } => ("normal", mean, std),
        };
        let mut args = vec![out.ptr(), Arg::I64(len as i64)];
        args.extend_from_slice(key);
        args.extend([Arg::U64(stream), Arg::F64(a), Arg::F64(b)]);
        out.try_launch(
            &out.kernel(&format!("{family}{variant}")),
            LaunchShape::elementwise(len),
            &mut args,
        )?;
        Ok(out)
    }

    /// `rows` rows of `row_len` values in the shuffled order of `cpu::gather` (the kernel
    /// `gather_shuffled_rows` of random.cu): a batch gathered where the dataset lives.
    pub fn gather_shuffled_rows(
        &self,
        row_len: usize,
        rows: usize,
        position: u64,
        seed: u64,
    ) -> Result<GpuStorage, String> {
        self.gather_rows(row_len, rows, ("gather_shuffled_rows", Arg::U64(position)), seed)
    }

    /// A launch of `kernel` of random.cu's `gather_shuffled_rows` family, `position` its
    /// position argument (a value, or a count's address).
    pub(super) fn gather_rows(
        &self,
        row_len: usize,
        rows: usize,
        (kernel, position): (&str, Arg),
        seed: u64,
    ) -> Result<GpuStorage, String> {
        let n = rows * row_len;
        let out = GpuStorage {
            buffer: self.device.alloc(self.dtype(), n, InitialContents::Unwritten)?,
            device: self.device.clone(),
        };
        if n == 0 {
            return Ok(out);
        }
        out.try_launch(
            &self.kernel(kernel),
            LaunchShape::elementwise(n),
            &mut [
                self.ptr(),
                out.ptr(),
                Arg::I64(rows as i64),
                Arg::I64(row_len as i64),
                Arg::I64((self.len() / row_len) as i64),
                position,
                Arg::U64(seed),
            ],
        )?;
        Ok(out)
    }
}
