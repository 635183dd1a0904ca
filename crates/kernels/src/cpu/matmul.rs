//! Matrix multiplication: `C = A B` for row-major buffers, with either operand read transposed
//! through its strides (no copies at the call site), batched, and parallel over batches or
//! within one product.
//!
//! The inner kernel is the `gemm` crate's cache-blocked, SIMD micro-kernel (chosen at run time
//! for the processor: FMA on x86-64, NEON on aarch64), the one piece of the CPU path we do not
//! write ourselves. Its AVX-512 kernels (the crate's `x86-v4` feature) are left out on purpose:
//! they run a 1024 product 1.6x faster on the Intel Xeon (docs/benchmarks/intel-xeon.md), but
//! the crate picks them whatever `EARTHMOVER_SIMD` says, and their sums over a long reduction
//! round differently from the FMA kernels', so a run forced to `avx2` would no longer give the
//! bits an AVX2 machine gives.
//!
//! The crate's threading is used too, except for thin products (a batch of 64 rows against
//! thousands of features), which it would leave on one thread: [`gemm_into`] cuts those into
//! blocks. [`gemm_reference`] is our plain version, which the tests check it against.

use crate::cpu::SharedPtr;
use crate::op::{MatmulProblem, MatrixLayout};
use crate::Element;
use rayon::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};

/// Floating-point operations done by [`gemm()`] in this process (2 per multiply-add): the
/// benches divide it by the time to give effective GFLOP/s. One relaxed add per call.
static GEMM_FLOPS: AtomicU64 = AtomicU64::new(0);

/// FLOPs done by the CPU GEMM since the process started (2 per multiply-add). Every matmul and
/// convolution on the CPU goes through it, so the difference across a training step is the
/// step's dense work.
pub fn gemm_flops() -> u64 {
    GEMM_FLOPS.load(Ordering::Relaxed)
}

/// Add `flops` to the count of [`gemm_flops`]: for the kernels that do dense work without
/// going through [`gemm()`] (the direct convolutions).
pub(crate) fn count_flops(flops: u64) {
    GEMM_FLOPS.fetch_add(flops, Ordering::Relaxed);
}

/// Rows of C computed together: each row of B loaded from cache serves this many rows of A.
const ROW_BLOCK: usize = 4;
/// Depth of one pass over B, so that the block of B rows stays in L2.
const DEPTH_BLOCK: usize = 256;

/// `c (m x n, row-major) (+)= A (m x k) B (k x n)`, on the calling thread or, with
/// `parallel`, on all of rayon's threads.
#[allow(clippy::too_many_arguments)]
pub fn gemm<T: Element>(
    m: usize,
    n: usize,
    k: usize,
    a: &[T],
    a_layout: MatrixLayout,
    b: &[T],
    b_layout: MatrixLayout,
    c: &mut [T],
    accumulate: bool,
    parallel: bool,
) {
    gemm_into(m, n, k, a, a_layout, b, b_layout, c, n, accumulate, parallel)
}

/// [`gemm()`] into an output whose rows are `c_row_stride` apart: a block of columns of a wider
/// matrix.
#[allow(clippy::too_many_arguments)]
pub fn gemm_into<T: Element>(
    m: usize,
    n: usize,
    k: usize,
    a: &[T],
    a_layout: MatrixLayout,
    b: &[T],
    b_layout: MatrixLayout,
    c: &mut [T],
    c_row_stride: usize,
    accumulate: bool,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    // The last element each operand reaches, in checked arithmetic: strides whose products
    // wrap around would pass a plain check and send the kernel out of bounds.
    let last = |l: MatrixLayout, rows: usize, cols: usize| {
        let fits = l.row_stride <= isize::MAX as usize && l.col_stride <= isize::MAX as usize;
        let row = (rows - 1).checked_mul(l.row_stride)?;
        row.checked_add((cols - 1).checked_mul(l.col_stride)?).filter(|_| fits)
    };
    let c_end = (m - 1).checked_mul(c_row_stride).and_then(|v| v.checked_add(n));
    assert!(
        c_row_stride >= n && c_row_stride <= isize::MAX as usize && c_end.is_some_and(|end| c.len() >= end),
        "gemm: output buffer too small"
    );
    GEMM_FLOPS.fetch_add(2 * (m * n * k) as u64, Ordering::Relaxed);
    if k == 0 {
        if !accumulate {
            for row in c.chunks_mut(c_row_stride).take(m) {
                row[..n].iter_mut().for_each(|v| *v = T::ZERO);
            }
        }
        return;
    }
    assert!(
        last(a_layout, m, k).is_some_and(|end| a.len() > end) && last(b_layout, k, n).is_some_and(|end| b.len() > end),
        "gemm: operand buffer too small"
    );
    // SAFETY (both branches): the asserts above keep every index the kernel reads (row r,
    // column c at r * row_stride + c * col_stride) and writes (r * c_row_stride + c) inside the
    // slices, and the output does not alias the inputs (it is a distinct `&mut`).
    if parallel && m * n * k >= SPLIT_WORK && m.min(n) <= THIN && m.max(n) >= 2 * SPLIT_BLOCK {
        // The `gemm` crate threads a product only where one of its blocks of columns holds
        // 48 x 48 x 256 multiply-adds: a linear layer's (the batch, 64, by 4,096 features over
        // 128 inputs) ran on one thread. Such thin products are cut here into blocks of
        // `SPLIT_BLOCK` rows or columns (along the long side), each a product of its own, in
        // parallel. The blocks depend on the shape alone, so the sums (and their bits) do not
        // depend on the number of threads.
        let (rows, parts) = if m >= n { (true, m) } else { (false, n) };
        let (a_ptr, b_ptr, c_ptr) = (
            SharedPtr::new(a.as_ptr().cast_mut()),
            SharedPtr::new(b.as_ptr().cast_mut()),
            SharedPtr::new(c.as_mut_ptr()),
        );
        (0..parts.div_ceil(SPLIT_BLOCK)).into_par_iter().for_each(|block| {
            let (first, len) = (block * SPLIT_BLOCK, SPLIT_BLOCK.min(parts - block * SPLIT_BLOCK));
            let serial = gemm::Parallelism::None;
            // SAFETY: as above; each block writes its own rows or columns of `c`, and reads
            // the rows of `a` or the columns of `b` that go with them.
            unsafe {
                if rows {
                    let (a, c) = (a_ptr.at(first * a_layout.row_stride), c_ptr.at(first * c_row_stride));
                    gemm_raw(
                        [len, n, k],
                        (a, a_layout),
                        (b_ptr.at(0), b_layout),
                        (c, c_row_stride),
                        accumulate,
                        serial,
                    )
                } else {
                    let (b, c) = (b_ptr.at(first * b_layout.col_stride), c_ptr.at(first));
                    gemm_raw(
                        [m, len, k],
                        (a_ptr.at(0), a_layout),
                        (b, b_layout),
                        (c, c_row_stride),
                        accumulate,
                        serial,
                    )
                }
            }
        });
        return;
    }
    let parallelism = if parallel {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    let (a, b, c) = (
        (a.as_ptr(), a_layout),
        (b.as_ptr(), b_layout),
        (c.as_mut_ptr(), c_row_stride),
    );
    unsafe { gemm_raw([m, n, k], a, b, c, accumulate, parallelism) }
}

/// Products with fewer multiply-adds than this are not cut by [`gemm_into`] (waking the other
/// threads would cost more than it saves).
const SPLIT_WORK: usize = 1 << 20;
/// [`gemm_into`] cuts products whose short side is at most this long (a batch of rows against
/// many features), where the `gemm` crate would keep them on one thread.
const THIN: usize = 128;
/// The rows or columns of each block [`gemm_into`] cuts a product into (the last one shorter):
/// a multiple of the `gemm` crate's micro-tiles, and enough blocks for every thread of a
/// linear layer's 4,096 features.
const SPLIT_BLOCK: usize = 512;

/// The `gemm` crate's product `c (m x n) (+)= a (m x k) b (k x n)` through raw pointers:
/// `mnk` is `[m, n, k]`, `a` and `b` each a pointer and its layout, `c` a pointer and its row
/// stride.
///
/// # Safety
/// Every element the product reads (row r, column j of A at `a + r * row_stride + j *
/// col_stride`, likewise B) and writes (`c + r * c_row_stride + j`) is in bounds, and the
/// output aliases neither input.
unsafe fn gemm_raw<T: Element>(
    mnk: [usize; 3],
    a: (*const T, MatrixLayout),
    b: (*const T, MatrixLayout),
    c: (*mut T, usize),
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    let ([m, n, k], (a, a_layout), (b, b_layout), (c, c_row_stride)) = (mnk, a, b, c);
    // SAFETY: forwarded to the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            1,
            c_row_stride as isize,
            accumulate,
            a,
            a_layout.col_stride as isize,
            a_layout.row_stride as isize,
            b,
            b_layout.col_stride as isize,
            b_layout.row_stride as isize,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Our plain GEMM, the reference the fast kernel is tested against: 4 rows of C at a time so
/// that each row of B read from cache serves four rows of A.
#[allow(clippy::too_many_arguments)]
pub fn gemm_reference<T: Element>(
    m: usize,
    n: usize,
    k: usize,
    a: &[T],
    a_layout: MatrixLayout,
    b: &[T],
    b_layout: MatrixLayout,
    c: &mut [T],
    accumulate: bool,
) {
    if !accumulate {
        c[..m * n].iter_mut().for_each(|v| *v = T::ZERO);
    }
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    // The inner loop runs along rows of B: pack B row-major when it is read transposed.
    let packed;
    let b: &[T] = if b_layout.col_stride == 1 && b_layout.row_stride == n {
        b
    } else {
        packed = (0..k)
            .flat_map(|p| (0..n).map(move |j| (p, j)))
            .map(|(p, j)| b[p * b_layout.row_stride + j * b_layout.col_stride])
            .collect::<Vec<T>>();
        &packed
    };
    let a_at = |i: usize, p: usize| a[i * a_layout.row_stride + p * a_layout.col_stride];
    for p0 in (0..k).step_by(DEPTH_BLOCK) {
        let p1 = (p0 + DEPTH_BLOCK).min(k);
        let mut i = 0;
        while i + ROW_BLOCK <= m {
            let (c0, rest) = c[i * n..(i + ROW_BLOCK) * n].split_at_mut(n);
            let (c1, rest) = rest.split_at_mut(n);
            let (c2, c3) = rest.split_at_mut(n);
            for p in p0..p1 {
                let (a0, a1, a2, a3) = (a_at(i, p), a_at(i + 1, p), a_at(i + 2, p), a_at(i + 3, p));
                let brow = &b[p * n..(p + 1) * n];
                for j in 0..n {
                    let bv = brow[j];
                    c0[j] += a0 * bv;
                    c1[j] += a1 * bv;
                    c2[j] += a2 * bv;
                    c3[j] += a3 * bv;
                }
            }
            i += ROW_BLOCK;
        }
        for i in i..m {
            let crow = &mut c[i * n..(i + 1) * n];
            for p in p0..p1 {
                let av = a_at(i, p);
                let brow = &b[p * n..(p + 1) * n];
                crow.iter_mut().zip(brow).for_each(|(c, &bv)| *c += av * bv);
            }
        }
    }
}

/// Batched `A B`: one product at a time on all threads, or batches in parallel.
pub fn matmul<T: Element>(p: &MatmulProblem, a: &[T], b: &[T]) -> Vec<T> {
    let MatmulProblem { batch, m, n, k, .. } = *p;
    let mut out = vec![T::ZERO; batch * m * n];
    if out.is_empty() {
        return out;
    }
    let small = 2 * m * n * k < 1 << 16;
    if batch == 1 {
        gemm(m, n, k, a, p.a_layout, b, p.b_layout, &mut out, false, !small);
    } else {
        out.par_chunks_mut(m * n).enumerate().for_each(|(bi, c)| {
            let (a, b) = (&a[bi * p.a_batch_stride..], &b[bi * p.b_batch_stride..]);
            gemm(m, n, k, a, p.a_layout, b, p.b_layout, c, false, false);
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "gemm: output buffer too small")]
    fn an_output_stride_whose_product_wraps_around_is_refused() {
        // 3 * (usize::MAX / 3 + 1) wraps to 2 (on 64 bits and on 32): rows 1 to 3 of `c` would
        // lie far past its 4 values, which a check in plain arithmetic let through.
        let (a, b, mut c) = ([1.0f32; 4], [1.0f32], [0.0f32; 4]);
        let stride = usize::MAX / 3 + 1;
        let layout = MatrixLayout::row_major(1);
        gemm_into(4, 1, 1, &a, layout, &b, layout, &mut c, stride, false, false);
    }

    fn naive(m: usize, n: usize, k: usize, a: &[f64], b: &[f64]) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    fn transpose(rows: usize, cols: usize, x: &[f64]) -> Vec<f64> {
        (0..cols)
            .flat_map(|c| (0..rows).map(move |r| x[r * cols + c]))
            .collect()
    }

    #[test]
    fn hand_computed_2x2() {
        let (a, b) = ([1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]);
        let row = MatrixLayout::row_major(2);
        let mut c = [0.0; 4];
        gemm(2, 2, 2, &a, row, &b, row, &mut c, false, false);
        assert_eq!(c, [19.0, 22.0, 43.0, 50.0]);
        // `accumulate` adds the product to what is there.
        gemm(2, 2, 2, &a, row, &b, row, &mut c, true, false);
        assert_eq!(c, [38.0, 44.0, 86.0, 100.0]);
        let mut c = [0.0; 4];
        gemm_reference(2, 2, 2, &a, row, &b, row, &mut c, false);
        assert_eq!(c, [19.0, 22.0, 43.0, 50.0]);
    }

    #[test]
    fn gemm_into_writes_a_block_of_a_wider_matrix_and_counts_its_flops() {
        // C is 3 x 7; the product (3 x 4) goes into columns 2..6, accumulating onto what is there.
        let (m, n, k, width) = (3, 4, 5, 7);
        let a: Vec<f64> = (0..m * k).map(|v| (v % 5) as f64 - 2.0).collect();
        let b: Vec<f64> = (0..k * n).map(|v| (v % 3) as f64 - 1.0).collect();
        let product = naive(m, n, k, &a, &b);
        let mut c: Vec<f64> = (0..m * width).map(|v| v as f64).collect();
        let before = c.clone();
        let flops = gemm_flops();
        let (row_a, row_b) = (MatrixLayout::row_major(k), MatrixLayout::row_major(n));
        gemm_into(m, n, k, &a, row_a, &b, row_b, &mut c[2..], width, true, false);
        // Other tests may run GEMMs at the same time: the counter grows by at least ours.
        assert!(gemm_flops() - flops >= (2 * m * n * k) as u64);
        for r in 0..m {
            for j in 0..width {
                let want = if (2..6).contains(&j) {
                    before[r * width + j] + product[r * n + j - 2]
                } else {
                    before[r * width + j]
                };
                assert_eq!(c[r * width + j], want, "row {r} column {j}");
            }
        }
    }

    /// Products thin and large enough for `gemm_into` to cut them into blocks, by columns
    /// (wide) and by rows (tall), both operands read either way, into columns of a wider
    /// matrix, accumulating: the blocks cover every element once. Small integers, so every
    /// sum is exact and the result must equal the plain one.
    #[test]
    fn thin_products_cut_into_blocks_cover_every_element_once() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        for (m, n, k) in [(70, 1030, 33), (1030, 70, 33)] {
            assert!(
                m * n * k >= SPLIT_WORK && m.min(n) <= THIN && m.max(n) > 2 * SPLIT_BLOCK,
                "to be cut"
            );
            let a: Vec<f64> = (0..m * k).map(|v| (v % 7) as f64 - 3.0).collect();
            let b: Vec<f64> = (0..k * n).map(|v| (v % 5) as f64 - 2.0).collect();
            let product = naive(m, n, k, &a, &b);
            let (a_t, b_t) = (transpose(m, k, &a), transpose(k, n, &b));
            let layouts = [
                (&a, MatrixLayout::row_major(k), &b, MatrixLayout::row_major(n)),
                (&a_t, MatrixLayout::transposed(m), &b_t, MatrixLayout::transposed(k)),
            ];
            for (a, a_layout, b, b_layout) in layouts {
                let width = n + 5;
                let mut c: Vec<f64> = (0..m * width).map(|v| (v % 11) as f64).collect();
                let before = c.clone();
                pool.install(|| gemm_into(m, n, k, a, a_layout, b, b_layout, &mut c[3..], width, true, true));
                for r in 0..m {
                    for j in 0..width {
                        let added = if (3..3 + n).contains(&j) {
                            product[r * n + j - 3]
                        } else {
                            0.0
                        };
                        assert_eq!(c[r * width + j], before[r * width + j] + added, "{m}x{n}: ({r}, {j})");
                    }
                }
            }
        }
    }

    #[test]
    fn fast_kernel_matches_reference_on_odd_sizes_in_f32() {
        for &(m, n, k) in &[(3, 5, 7), (33, 17, 65), (129, 70, 31)] {
            let a: Vec<f32> = (0..m * k).map(|v| ((v * 37 % 101) as f32) / 50.0 - 1.0).collect();
            let b: Vec<f32> = (0..k * n).map(|v| ((v * 53 % 97) as f32) / 48.0 - 1.0).collect();
            for (a_layout, b_layout) in [
                (MatrixLayout::row_major(k), MatrixLayout::row_major(n)),
                (MatrixLayout::transposed(m), MatrixLayout::transposed(k)),
            ] {
                let (mut fast, mut reference) = (vec![0.0f32; m * n], vec![0.0f32; m * n]);
                gemm(m, n, k, &a, a_layout, &b, b_layout, &mut fast, false, true);
                gemm_reference(m, n, k, &a, a_layout, &b, b_layout, &mut reference, false);
                for (x, y) in fast.iter().zip(&reference) {
                    assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "m={m} n={n} k={k}: {x} vs {y}");
                }
            }
        }
    }

    #[test]
    fn transposed_operands_and_odd_sizes_match_naive() {
        for &(m, n, k) in &[(1, 1, 1), (7, 5, 3), (13, 9, 300), (70, 33, 17)] {
            let a: Vec<f64> = (0..m * k).map(|v| ((v * 7 % 11) as f64) - 5.0).collect();
            let b: Vec<f64> = (0..k * n).map(|v| ((v * 5 % 13) as f64) - 6.0).collect();
            let want = naive(m, n, k, &a, &b);
            let at = transpose(m, k, &a);
            let bt = transpose(k, n, &b);
            for (a_buf, a_layout) in [(&a, MatrixLayout::row_major(k)), (&at, MatrixLayout::transposed(m))] {
                for (b_buf, b_layout) in [(&b, MatrixLayout::row_major(n)), (&bt, MatrixLayout::transposed(k))] {
                    let problem = MatmulProblem {
                        batch: 1,
                        m,
                        n,
                        k,
                        a_layout,
                        a_batch_stride: 0,
                        b_layout,
                        b_batch_stride: 0,
                    };
                    assert_eq!(matmul(&problem, a_buf, b_buf), want, "m={m} n={n} k={k}");
                }
            }
        }
    }
}
