//! Fused ops of [`Storage`]: a unary op folded into the reduction or the strided copy beside
//! it. On a GPU in f32 or f64 one launch ([`crate::cuda::fused`]); everywhere else the ops one
//! after another, as they were before they were fused, so the CPU's results (and the 16-bit
//! types' roundings after each op) stay bit for bit what they were.

use crate::op::{ReduceOp, UnaryOp};
use crate::storage::{DType, Storage};

/// Whether a fused kernel runs this storage: on a GPU, in f32 or f64.
fn fused_on_gpu(s: &Storage) -> Option<&crate::cuda::storage::GpuStorage> {
    match s {
        Storage::Cuda(g) if matches!(g.dtype(), DType::F32 | DType::F64) => Some(g),
        _ => None,
    }
}

impl Storage {
    /// `after(sum of before(self))`, summed from `shape` down to `out_shape` (each dim equal
    /// or 1): a mean is the sum with `after` a `MulScalar(1 / n)`, a norm `Pow(2)` before and
    /// `Sqrt` after.
    pub fn sum_mapped(
        &self,
        before: Option<UnaryOp>,
        shape: &[usize],
        out_shape: &[usize],
        after: Option<UnaryOp>,
    ) -> Storage {
        if let Some(g) = fused_on_gpu(self) {
            return Storage::Cuda(g.sum_mapped(before, shape, out_shape, after));
        }
        let mapped = before.map(|op| self.unary(op));
        let sum = mapped.as_ref().unwrap_or(self).reduce(ReduceOp::Sum, shape, out_shape);
        match after {
            Some(op) => sum.unary(op),
            None => sum,
        }
    }

    /// `op` of the strided view `(offset, strides, shape)` of this buffer, contiguous: a
    /// broadcast and a scale (a mean's gradient) in one pass.
    pub fn strided_unary(&self, offset: usize, strides: &[usize], shape: &[usize], op: UnaryOp) -> Storage {
        if let Some(g) = fused_on_gpu(self) {
            return Storage::Cuda(g.strided_unary(offset, strides, shape, op));
        }
        self.strided_copy(offset, strides, shape).unary(op)
    }
}
