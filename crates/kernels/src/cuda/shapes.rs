//! The structs that kernels take by value, laid out as their C twins in `kernels/*.cu`
//! (`#[repr(C)]`, same field order and types), with constructors from the CPU side's
//! descriptions of the same operation.

use crate::shape::{broadcast_strides, contiguous_strides};
use crate::{ConvGeometry, MatmulProblem};

/// `EARTHMOVER_MAX_RANK` in `kernels/common.cuh`.
pub const MAX_RANK: usize = 8;
/// `EARTHMOVER_MAX_PARAMS` in `kernels/optim.cu`.
pub const MAX_PARAMS: usize = 24;

fn padded(values: &[usize]) -> [i64; MAX_RANK] {
    let mut out = [0; MAX_RANK];
    out.iter_mut().zip(values).for_each(|(o, &v)| *o = v as i64);
    out
}

/// `BroadcastShape` (common.cuh): the output shape and both operands' strides in it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BroadcastShape {
    pub rank: i32,
    pub shape: [i64; MAX_RANK],
    pub a_strides: [i64; MAX_RANK],
    pub b_strides: [i64; MAX_RANK],
}

impl BroadcastShape {
    /// `None` past [`MAX_RANK`] dims.
    pub fn new(a_shape: &[usize], b_shape: &[usize], out_shape: &[usize]) -> Option<BroadcastShape> {
        if out_shape.len() > MAX_RANK {
            return None;
        }
        // A scalar output is a one-element vector to the kernel.
        let (out, a, b) = if out_shape.is_empty() {
            (vec![1], vec![1], vec![1])
        } else {
            (out_shape.to_vec(), a_shape.to_vec(), b_shape.to_vec())
        };
        Some(BroadcastShape {
            rank: out.len() as i32,
            shape: padded(&out),
            a_strides: padded(&broadcast_strides(&a, &out)),
            b_strides: padded(&broadcast_strides(&b, &out)),
        })
    }
}

/// `ReduceShape` (reduce.cu): the kept dims (indexing the output) and the reduced ones.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReduceShape {
    pub kept_rank: i32,
    pub kept_sizes: [i64; MAX_RANK],
    pub kept_strides: [i64; MAX_RANK],
    pub reduced_rank: i32,
    pub reduced_sizes: [i64; MAX_RANK],
    pub reduced_strides: [i64; MAX_RANK],
    pub outputs: i64,
    pub reduced: i64,
}

impl ReduceShape {
    /// Reduce `shape` to `out_shape` (same rank, each dim equal or 1), as `cpu::reduce::reduce_to`.
    pub fn new(shape: &[usize], out_shape: &[usize]) -> Option<ReduceShape> {
        if shape.len() != out_shape.len() || shape.len() > MAX_RANK {
            return None;
        }
        let strides = contiguous_strides(shape);
        let (mut kept, mut reduced) = (Vec::new(), Vec::new());
        for d in 0..shape.len() {
            if out_shape[d] == shape[d] {
                kept.push((shape[d], strides[d]));
            } else if out_shape[d] == 1 {
                reduced.push((shape[d], strides[d]));
            } else {
                return None;
            }
        }
        let sizes = |dims: &[(usize, usize)]| padded(&dims.iter().map(|d| d.0).collect::<Vec<_>>());
        let strides = |dims: &[(usize, usize)]| padded(&dims.iter().map(|d| d.1).collect::<Vec<_>>());
        Some(ReduceShape {
            kept_rank: kept.len() as i32,
            kept_sizes: sizes(&kept),
            kept_strides: strides(&kept),
            reduced_rank: reduced.len() as i32,
            reduced_sizes: sizes(&reduced),
            reduced_strides: strides(&reduced),
            outputs: kept.iter().map(|d| d.0 as i64).product(),
            reduced: reduced.iter().map(|d| d.0 as i64).product(),
        })
    }
}

/// `StridedShape` (layout.cu): a contiguous shape and the strides of the strided side.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StridedShape {
    pub rank: i32,
    pub shape: [i64; MAX_RANK],
    pub strides: [i64; MAX_RANK],
    pub offset: i64,
}

impl StridedShape {
    pub fn new(offset: usize, strides: &[usize], shape: &[usize]) -> Option<StridedShape> {
        if shape.len() > MAX_RANK || strides.len() != shape.len() {
            return None;
        }
        let (shape, strides) = if shape.is_empty() {
            (vec![1], vec![0])
        } else {
            (shape.to_vec(), strides.to_vec())
        };
        Some(StridedShape {
            rank: shape.len() as i32,
            shape: padded(&shape),
            strides: padded(&strides),
            offset: offset as i64,
        })
    }
}

/// `PadShape` (layout.cu's `padded_copy`): a box of shape `inner` at offsets `before` inside
/// a contiguous `outer` shape, every other element a fill value.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PadShape {
    pub rank: i32,
    pub outer: [i64; MAX_RANK],
    pub before: [i64; MAX_RANK],
    pub inner: [i64; MAX_RANK],
}

impl PadShape {
    /// `inner` at `before` inside `outer` (all of one rank, at most 8, the box inside).
    pub fn new(inner: &[usize], before: &[usize], outer: &[usize]) -> Option<PadShape> {
        let rank = inner.len();
        if rank > MAX_RANK || !PadShape::inside(inner, before, outer) {
            return None;
        }
        Some(PadShape {
            rank: rank as i32,
            outer: padded(outer),
            before: padded(before),
            inner: padded(inner),
        })
    }

    /// Whether a box of shape `inner` at `before` lies inside `outer` (all of one rank).
    pub fn inside(inner: &[usize], before: &[usize], outer: &[usize]) -> bool {
        let rank = inner.len();
        before.len() == rank
            && outer.len() == rank
            && (0..rank).all(|d| before[d].checked_add(inner[d]).is_some_and(|end| end <= outer[d]))
    }
}

/// `MatmulShape` (common.cuh; matmul.cu and matmul_tc.cu).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MatmulShape {
    pub m: i64,
    pub n: i64,
    pub k: i64,
    pub a_row_stride: i64,
    pub a_col_stride: i64,
    pub a_batch_stride: i64,
    pub b_row_stride: i64,
    pub b_col_stride: i64,
    pub b_batch_stride: i64,
}

impl From<&MatmulProblem> for MatmulShape {
    fn from(p: &MatmulProblem) -> MatmulShape {
        MatmulShape {
            m: p.m as i64,
            n: p.n as i64,
            k: p.k as i64,
            a_row_stride: p.a_layout.row_stride as i64,
            a_col_stride: p.a_layout.col_stride as i64,
            a_batch_stride: p.a_batch_stride as i64,
            b_row_stride: p.b_layout.row_stride as i64,
            b_col_stride: p.b_layout.col_stride as i64,
            b_batch_stride: p.b_batch_stride as i64,
        }
    }
}

/// `ConvShape` (conv.cu): a convolution's geometry, in the 32 bits of the kernels' index
/// arithmetic.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConvShape {
    pub batch: i32,
    pub in_channels: i32,
    pub out_channels: i32,
    pub in_h: i32,
    pub in_w: i32,
    pub kernel_h: i32,
    pub kernel_w: i32,
    pub stride_h: i32,
    pub stride_w: i32,
    pub padding_h: i32,
    pub padding_w: i32,
    pub dilation_h: i32,
    pub dilation_w: i32,
    pub out_h: i32,
    pub out_w: i32,
}

impl ConvShape {
    /// `g` for conv.cu, or an error when an index the kernels compute could pass `i32::MAX`:
    /// a tensor (input, map, weight, or `extra` more elements such as split-K's partial sums)
    /// of 2^31 elements or more, or a padded side that large. (A tile's first row plus its
    /// 64 rows, and a slice's first k plus its 16, must fit too: hence the margin.)
    pub fn new(g: &ConvGeometry, extra: usize) -> Result<ConvShape, String> {
        let limit = (i32::MAX - 128) as usize;
        let sizes = [
            g.batch.checked_mul(g.in_channels * g.in_h * g.in_w),
            g.batch.checked_mul(g.out_channels * g.out_h * g.out_w),
            g.out_channels.checked_mul(g.patch_len()),
            Some(extra),
            g.in_h.checked_add(2 * g.padding.0 + g.stride.0 * g.out_h),
            g.in_w.checked_add(2 * g.padding.1 + g.stride.1 * g.out_w),
            g.dilation.0.checked_mul(g.kernel_h),
            g.dilation.1.checked_mul(g.kernel_w),
        ];
        if sizes.iter().any(|s| s.is_none_or(|s| s > limit)) {
            return Err(format!(
                "a convolution too large for the GPU kernels' 32-bit indices (conv.cu): {g:?}"
            ));
        }
        let i = |v: usize| v as i32;
        Ok(ConvShape {
            batch: i(g.batch),
            in_channels: i(g.in_channels),
            out_channels: i(g.out_channels),
            in_h: i(g.in_h),
            in_w: i(g.in_w),
            kernel_h: i(g.kernel_h),
            kernel_w: i(g.kernel_w),
            stride_h: i(g.stride.0),
            stride_w: i(g.stride.1),
            padding_h: i(g.padding.0),
            padding_w: i(g.padding.1),
            dilation_h: i(g.dilation.0),
            dilation_w: i(g.dilation.1),
            out_h: i(g.out_h),
            out_w: i(g.out_w),
        })
    }
}

/// `ParamList<T>` (optim.cu): up to [`MAX_PARAMS`] tensors updated by one launch. The pointers
/// are device pointers on a GPU, host pointers in the emulator.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ParamList<T> {
    pub count: i32,
    pub starts: [i64; MAX_PARAMS + 1],
    pub param: [*mut T; MAX_PARAMS],
    pub grad: [*const T; MAX_PARAMS],
    pub state1: [*mut T; MAX_PARAMS],
    pub state2: [*mut T; MAX_PARAMS],
}

impl<T> ParamList<T> {
    /// An empty list.
    pub fn new() -> ParamList<T> {
        ParamList {
            count: 0,
            starts: [0; MAX_PARAMS + 1],
            param: [std::ptr::null_mut(); MAX_PARAMS],
            grad: [std::ptr::null(); MAX_PARAMS],
            state1: [std::ptr::null_mut(); MAX_PARAMS],
            state2: [std::ptr::null_mut(); MAX_PARAMS],
        }
    }

    /// Append a tensor of `len` elements; `false` when the list is full.
    pub fn push(&mut self, len: usize, param: *mut T, grad: *const T, state1: *mut T, state2: *mut T) -> bool {
        let i = self.count as usize;
        if i == MAX_PARAMS {
            return false;
        }
        self.param[i] = param;
        self.grad[i] = grad;
        self.state1[i] = state1;
        self.state2[i] = state2;
        self.starts[i + 1] = self.starts[i] + len as i64;
        self.count += 1;
        true
    }

    /// Elements over all tensors.
    pub fn total(&self) -> usize {
        self.starts[self.count as usize] as usize
    }
}

impl<T> Default for ParamList<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// conv.cu's indices are 32-bit: a geometry whose tensors reach 2^31 elements is refused
    /// with a message, not wrapped around.
    #[test]
    fn conv_shapes_past_32_bits_are_refused_with_a_message() {
        let small = ConvGeometry::conv2d([2, 3, 9, 9], [4, 3, 3, 3], (2, 2), (1, 1), (1, 1)).unwrap();
        let shape = ConvShape::new(&small, 0).unwrap();
        assert_eq!((shape.out_h, shape.out_w, shape.stride_h), (5, 5, 2));
        let large = ConvGeometry::conv2d([1, 1, 50_000, 50_000], [1, 1, 1, 1], (1, 1), (0, 0), (1, 1)).unwrap();
        let e = ConvShape::new(&large, 0).unwrap_err();
        assert!(e.contains("32-bit"), "{e}");
        let e = ConvShape::new(&small, 1 << 31).unwrap_err();
        assert!(e.contains("32-bit"), "{e}");
    }
}
