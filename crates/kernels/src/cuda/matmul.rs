//! Which of `kernels/matmul.cu`'s f32 and f64 kernels runs a matmul problem, and its launch
//! (grid, arguments, operand order); [`super::storage::GpuStorage::matmul`] launches it.
//!
//! - N = 1 or M = 1 is a matrix times a vector: memory bound, and a 128 x 128 tile would leave
//!   127 of its rows (or columns) idle. It runs on a GEMV kernel: `gemv_rows` (one warp per
//!   output, a fixed-order shuffle sum) when the matrix's rows are contiguous along k, as in
//!   the critic's last layer (`x [batch, 4096] W^T [4096, 1]`); `gemv_columns` (one thread per
//!   output, k in order) when the outputs are the contiguous direction, as in that layer's
//!   weight gradient (`dy^T [1, batch] x [batch, 4096]`), where a warp per output would read
//!   32 rows apart.
//! - Everything else runs `matmul_tiled` (128 x 128 tiles, `cp.async` double buffering,
//!   32-bit offsets within a tile), or `matmul_tiled_a_rows` when A is read as is (k
//!   contiguous: A staged as rows along k, so its copies are 16 bytes), small problems too:
//!   their blocks then have fewer k slices but they need no other kernel. (Small M x N with a long K, such as the convolutions'
//!   weight gradients, is where split-K would help: not done yet.)
//! - Strides too large for 32-bit offsets (past 2^31 / 256 elements), or sizes of 2^30 or more,
//!   fall back to `matmul_plain`, the first version, whose indices are 64-bit.

use super::shapes::MatmulShape;
use super::LaunchShape;
use crate::MatmulProblem;

/// One of `matmul.cu`'s versions, each in f32 and f64.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulKernel {
    /// `matmul_tiled`: any problem whose sizes and strides fit its 32-bit offsets.
    Tiled,
    /// `matmul_tiled_a_rows`: the same, for A read as is (its column stride 1): A staged as
    /// rows along k, copied 16 bytes at a time.
    TiledARows,
    /// `gemv_rows`: N = 1 or M = 1, one warp per output.
    GemvRows,
    /// `gemv_columns`: N = 1 or M = 1, one thread per output.
    GemvColumns,
    /// `matmul_plain`: any problem (64-bit indices).
    Plain,
}

/// One launch of a [`MatmulKernel`]: the kernels take `(x, v, out, shape)`, with `x` and `v`
/// the problem's A and B, or B and A when `swap_operands` (a GEMV for M = 1, whose matrix is B).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MatmulLaunch {
    pub family: &'static str,
    pub shape: LaunchShape,
    pub args: MatmulShape,
    pub swap_operands: bool,
}

/// The largest stride `matmul_tiled` takes: a tile's offsets (up to 128 times one stride plus
/// 16 times the other) and the step to the next slice stay below 2^31.
const TILED_MAX_STRIDE: usize = i32::MAX as usize / 256;

impl MatmulKernel {
    /// The kernel for `p` (see the module's documentation).
    pub fn choose(p: &MatmulProblem) -> MatmulKernel {
        if p.n == 1 || p.m == 1 {
            let x = gemv_matrix(p);
            if x.a_col_stride != 1 && x.a_row_stride == 1 && x.m > 1 {
                MatmulKernel::GemvColumns
            } else {
                MatmulKernel::GemvRows
            }
        } else if tiled_fits(p) && p.a_layout.col_stride == 1 {
            MatmulKernel::TiledARows
        } else if tiled_fits(p) {
            MatmulKernel::Tiled
        } else {
            MatmulKernel::Plain
        }
    }

    /// Its launch for `p`, or why it cannot run `p` (a GEMV on a problem with N and M over 1,
    /// `matmul_tiled` on strides past its 32-bit offsets).
    pub fn launch(self, p: &MatmulProblem) -> Result<MatmulLaunch, String> {
        let plain_args = MatmulShape::from(p);
        let launch = |family, shape, args, swap_operands| MatmulLaunch {
            family,
            shape,
            args,
            swap_operands,
        };
        match self {
            MatmulKernel::Tiled | MatmulKernel::TiledARows if !tiled_fits(p) => Err(format!(
                "matmul_tiled: {p:?} has a size or stride past its 32-bit offsets"
            )),
            MatmulKernel::TiledARows if p.a_layout.col_stride != 1 => Err(format!(
                "matmul_tiled_a_rows: A's column stride must be 1, not in {p:?}"
            )),
            MatmulKernel::Tiled | MatmulKernel::TiledARows => Ok(launch(
                if self == MatmulKernel::Tiled {
                    "matmul_tiled"
                } else {
                    "matmul_tiled_a_rows"
                },
                LaunchShape::matmul_tiled(p.m, p.n, p.batch),
                plain_args,
                false,
            )),
            MatmulKernel::Plain => Ok(launch(
                "matmul_plain",
                LaunchShape::matmul_plain(p.m, p.n, p.batch),
                plain_args,
                false,
            )),
            MatmulKernel::GemvRows | MatmulKernel::GemvColumns => {
                if p.n != 1 && p.m != 1 {
                    return Err(format!("a GEMV needs N = 1 or M = 1, not {p:?}"));
                }
                let rows = self == MatmulKernel::GemvRows;
                let x = gemv_matrix(p);
                Ok(launch(
                    if rows { "gemv_rows" } else { "gemv_columns" },
                    LaunchShape::gemv(x.m as usize, p.batch, rows),
                    x,
                    p.n != 1,
                ))
            }
        }
    }
}

/// Whether every size and stride of `p` fits `matmul_tiled`'s 32-bit offsets.
fn tiled_fits(p: &MatmulProblem) -> bool {
    // Half of i32's range: the last slice's end (k rounded up to a slice) must fit too.
    let sizes_fit = [p.m, p.n, p.k].iter().all(|&size| size <= i32::MAX as usize / 2);
    let strides = [
        p.a_layout.row_stride,
        p.a_layout.col_stride,
        p.b_layout.row_stride,
        p.b_layout.col_stride,
    ];
    sizes_fit && strides.iter().all(|&stride| stride <= TILED_MAX_STRIDE)
}

/// The GEMV kernels' arguments for `p` (N = 1 or M = 1): `out[i] = sum_k X[i, k] v[k]` with X
/// in the A fields (`m` outputs) and v's stride and batch stride in `b_row_stride` and
/// `b_batch_stride`. For N = 1, X is A and v is B's column; for M = 1, X is B transposed and v
/// is A's row (the operands are swapped at launch).
fn gemv_matrix(p: &MatmulProblem) -> MatmulShape {
    let (a, b) = (&p.a_layout, &p.b_layout);
    let i = |v: usize| v as i64;
    if p.n == 1 {
        MatmulShape {
            m: i(p.m),
            n: 1,
            k: i(p.k),
            a_row_stride: i(a.row_stride),
            a_col_stride: i(a.col_stride),
            a_batch_stride: i(p.a_batch_stride),
            b_row_stride: i(b.row_stride),
            b_col_stride: 0,
            b_batch_stride: i(p.b_batch_stride),
        }
    } else {
        MatmulShape {
            m: i(p.n),
            n: 1,
            k: i(p.k),
            a_row_stride: i(b.col_stride),
            a_col_stride: i(b.row_stride),
            a_batch_stride: i(p.b_batch_stride),
            b_row_stride: i(a.col_stride),
            b_col_stride: 0,
            b_batch_stride: i(p.a_batch_stride),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MatrixLayout;

    /// The critic's last layer and its gradients choose as the module says: the forward pass
    /// (N = 1, rows contiguous along k) a warp per output; the weight gradient (M = 1, B
    /// row-major) a thread per output; the input gradient (K = 1) and everything else the
    /// tiled kernel; strides past 32-bit offsets the plain one.
    #[test]
    fn each_shape_gets_its_kernel() {
        let (batch, features) = (64, 4096);
        let forward = MatmulProblem {
            b_layout: MatrixLayout::transposed(features),
            ..MatmulProblem::plain(batch, 1, features)
        };
        assert_eq!(MatmulKernel::choose(&forward), MatmulKernel::GemvRows);
        let weight_grad = MatmulProblem {
            a_layout: MatrixLayout::transposed(1),
            ..MatmulProblem::plain(1, features, batch)
        };
        assert_eq!(MatmulKernel::choose(&weight_grad), MatmulKernel::GemvColumns);
        let launch = MatmulKernel::GemvColumns.launch(&weight_grad).unwrap();
        assert!(launch.swap_operands);
        assert_eq!(
            (launch.args.m, launch.args.a_row_stride, launch.args.a_col_stride),
            (4096, 1, 4096)
        );
        assert_eq!(
            MatmulKernel::choose(&MatmulProblem::plain(batch, features, 1)),
            MatmulKernel::TiledARows
        );
        let a_transposed = MatmulProblem {
            a_layout: MatrixLayout::transposed(batch),
            ..MatmulProblem::plain(batch, features, 3)
        };
        assert_eq!(MatmulKernel::choose(&a_transposed), MatmulKernel::Tiled);
        assert!(MatmulKernel::TiledARows.launch(&a_transposed).is_err());
        let huge_stride = MatmulProblem {
            a_layout: MatrixLayout::row_major(TILED_MAX_STRIDE + 1),
            ..MatmulProblem::plain(3, 3, 3)
        };
        assert_eq!(MatmulKernel::choose(&huge_stride), MatmulKernel::Plain);
        assert_eq!(
            MatmulKernel::choose(&MatmulProblem::plain(1 << 30, 2, 2)),
            MatmulKernel::Plain
        );
        assert_eq!(
            MatmulKernel::choose(&MatmulProblem::plain((1 << 30) - 1, 2, 2)),
            MatmulKernel::TiledARows
        );
        assert!(MatmulKernel::Tiled.launch(&huge_stride).is_err());
        assert!(MatmulKernel::GemvRows.launch(&MatmulProblem::plain(2, 2, 2)).is_err());
    }
}
