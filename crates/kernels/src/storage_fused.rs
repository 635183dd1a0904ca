//! Fused ops of [`Storage`]: a unary op folded into the reduction or the strided copy beside
//! it, and a pad's fill and copy in one pass. On a GPU in f32 or f64 one launch ([`crate::cuda::fused`]); everywhere else the ops one
//! after another, as they were before they were fused, so the CPU's results (and the 16-bit
//! types' roundings after each op) stay bit for bit what they were.

use crate::op::{BinaryOp, ReduceOp, UnaryOp};
use crate::shape::{contiguous_strides, numel};
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

    /// This buffer (contiguous, of shape `inner`) at offsets `before` inside a contiguous
    /// `outer` shape, every other element `value`: a pad (and a narrow's gradient) in one
    /// pass on a GPU, a fill and a strided write elsewhere.
    pub fn padded_copy(
        &self,
        inner: &[usize],
        before: &[usize],
        outer: &[usize],
        value: f64,
    ) -> Result<Storage, String> {
        let rank = inner.len();
        let inside = before.len() == rank
            && outer.len() == rank
            && (0..rank).all(|d| before[d].checked_add(inner[d]).is_some_and(|end| end <= outer[d]));
        if !inside || numel(inner) != self.len() {
            return Err(format!(
                "padded_copy: a box of shape {inner:?} ({} elements given) at {before:?} is not inside {outer:?}",
                self.len()
            ));
        }
        if let Some(g) = fused_on_gpu(self) {
            return g.padded_copy(inner, before, outer, value).map(Storage::Cuda);
        }
        let strides = contiguous_strides(outer);
        let offset: usize = before.iter().zip(&strides).map(|(o, s)| o * s).sum();
        let mut out = Storage::full(value, numel(outer), self.dtype(), self.device())?;
        out.strided_write(offset, &strides, self, inner);
        Ok(out)
    }

    /// `self + (end - self) * weight`: `end` of `shape` as `self`, `weight` of `weight_shape`
    /// broadcast to it. One pass on a GPU (rounded after each op, as here); the three binary
    /// ops elsewhere.
    pub fn lerp(&self, end: &Storage, weight: &Storage, shape: &[usize], weight_shape: &[usize]) -> Storage {
        if let (Some(a), Some(b), Some(w)) = (fused_on_gpu(self), fused_on_gpu(end), fused_on_gpu(weight)) {
            if a.dtype() == b.dtype() && a.dtype() == w.dtype() {
                return Storage::Cuda(a.lerp(b, w, shape, weight_shape));
            }
        }
        let difference = end.binary(BinaryOp::Sub, shape, self, shape, shape);
        let step = difference.binary(BinaryOp::Mul, shape, weight, weight_shape, shape);
        self.binary(BinaryOp::Add, shape, &step, shape, shape)
    }

    /// `act(op(self, other))` with broadcasting to `out_shape`: a bias add and the activation
    /// after it in one pass on a GPU; the binary and the unary op elsewhere.
    pub fn binary_activated(
        &self,
        op: BinaryOp,
        shape: &[usize],
        other: &Storage,
        other_shape: &[usize],
        out_shape: &[usize],
        act: UnaryOp,
    ) -> Storage {
        if let (Some(a), Some(b)) = (fused_on_gpu(self), fused_on_gpu(other)) {
            if a.dtype() == b.dtype() {
                return Storage::Cuda(a.binary_activated(op, shape, b, other_shape, out_shape, act));
            }
        }
        self.binary(op, shape, other, other_shape, out_shape).unary(act)
    }
}
