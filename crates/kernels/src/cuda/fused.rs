//! Fused launches on a GPU (or the emulator): a unary op folded into the reduction or the
//! strided copy beside it, and a pad's fill and copy in one pass: one launch where the
//! unfused ops take two or three. Each computes
//! the same arithmetic in the same order as the ops it replaces (conv.cu's epilogue, reduce.cu's
//! `reduce_sum_mapped`, layout.cu's `strided_unary`), so the same bits; f32 and f64 only
//! ([`crate::Storage`] runs the 16-bit types unfused, where the fusion would round once
//! instead of at each op).

use super::device::Arg;
use super::storage::GpuStorage;
use super::LaunchShape;
use crate::op::{BinaryOp, UnaryOp};

/// A `UnaryOp` as the fused kernels take it: its code and two parameters, or -1 (no op).
pub(super) fn unary_args(op: Option<UnaryOp>) -> [Arg; 3] {
    let (code, (p, q)) = op.map_or((-1, (0.0, 0.0)), |op| (op.code(), op.parameters()));
    [Arg::I32(code), Arg::F64(p), Arg::F64(q)]
}

impl GpuStorage {
    /// `after(sum of before(self))` from `shape` down to `out_shape` (each dim equal or 1),
    /// one launch of reduce.cu's `reduce_sum_mapped`. f32 or f64.
    pub fn sum_mapped(
        &self,
        before: Option<UnaryOp>,
        shape: &[usize],
        out_shape: &[usize],
        after: Option<UnaryOp>,
    ) -> GpuStorage {
        let out = self.new_output(self.dtype(), out_shape.iter().product());
        let Some(s) = self.reduce_shape("sum with an op before or after (a mean, a norm)", shape, out_shape) else {
            return out;
        };
        if out.is_empty() {
            return out;
        }
        let [before_op, before_p, before_q] = unary_args(before);
        let [after_op, after_p, after_q] = unary_args(after);
        self.launch(
            &self.kernel("reduce_sum_mapped"),
            LaunchShape::per_output(out.len()),
            &mut [
                self.ptr(),
                out.ptr(),
                Arg::Reduce(s),
                before_op,
                before_p,
                before_q,
                after_op,
                after_p,
                after_q,
            ],
        );
        out
    }

    /// `op` of the strided view `(offset, strides, shape)` of this buffer, contiguous: one
    /// launch of layout.cu's `strided_unary`. f32 or f64.
    pub fn strided_unary(&self, offset: usize, strides: &[usize], shape: &[usize], op: UnaryOp) -> GpuStorage {
        let n: usize = shape.iter().product();
        let out = self.new_output(self.dtype(), n);
        let Some(s) = self.strided_shape("strided copy with an op (a mean's gradient)", offset, strides, shape) else {
            return out;
        };
        let [code, p, q] = unary_args(Some(op));
        self.launch(
            &self.kernel("strided_unary"),
            LaunchShape::elementwise(n),
            &mut [code, p, q, self.ptr(), out.ptr(), Arg::I64(n as i64), Arg::Strided(s)],
        );
        out
    }

    /// This buffer (contiguous, of shape `inner`) at offsets `before` inside `outer`, every
    /// other element `value`: one launch of layout.cu's `padded_copy` (a fill and a strided
    /// write took two). f32 or f64.
    pub fn padded_copy(
        &self,
        inner: &[usize],
        before: &[usize],
        outer: &[usize],
        value: f64,
    ) -> Result<GpuStorage, String> {
        let s = self.pad_shape("pad", inner, before, outer)?;
        let n: usize = outer.iter().product();
        let out = self.new_output(self.dtype(), n);
        let Some(s) = s else {
            return Ok(out);
        };
        if n > 0 {
            self.launch(
                &self.kernel("padded_copy"),
                LaunchShape::elementwise(n),
                &mut [self.ptr(), out.ptr(), Arg::I64(n as i64), Arg::F64(value), Arg::Pad(s)],
            );
        }
        Ok(out)
    }

    /// `self + (end - self) * weight`, rounded after each op, in one launch of elementwise.cu's
    /// `lerp` (three binary launches otherwise): `end` of `shape` as `self`, `weight` of
    /// `weight_shape` broadcast to it. f32 or f64.
    pub fn lerp(&self, end: &GpuStorage, weight: &GpuStorage, shape: &[usize], weight_shape: &[usize]) -> GpuStorage {
        self.check_same(end, "lerp");
        self.check_same(weight, "lerp");
        let n: usize = shape.iter().product();
        let out = self.new_output(self.dtype(), n);
        let Some(s) = self.broadcast_shape("lerp", shape, weight_shape, shape) else {
            return out;
        };
        self.launch(
            &self.kernel("lerp"),
            LaunchShape::elementwise(n),
            &mut [
                self.ptr(),
                end.ptr(),
                weight.ptr(),
                out.ptr(),
                Arg::I64(n as i64),
                Arg::Broadcast(s),
            ],
        );
        out
    }

    /// `act(op(self, other))` broadcast to `out_shape`, in one launch of elementwise.cu's
    /// `binary_activated` (a binary and a unary launch otherwise). f32 or f64.
    pub fn binary_activated(
        &self,
        op: BinaryOp,
        shape: &[usize],
        other: &GpuStorage,
        other_shape: &[usize],
        out_shape: &[usize],
        act: UnaryOp,
    ) -> GpuStorage {
        self.check_same(other, "binary op");
        let n: usize = out_shape.iter().product();
        let out = self.new_output(self.dtype(), n);
        let Some(s) = self.broadcast_shape("binary op with an activation", shape, other_shape, out_shape) else {
            return out;
        };
        let [code, p, q] = unary_args(Some(act));
        self.launch(
            &self.kernel("binary_activated"),
            LaunchShape::elementwise(n),
            &mut [
                Arg::I32(op.code()),
                Arg::F64(op.parameter()),
                code,
                p,
                q,
                self.ptr(),
                other.ptr(),
                out.ptr(),
                Arg::I64(n as i64),
                Arg::Broadcast(s),
            ],
        );
        out
    }
}
