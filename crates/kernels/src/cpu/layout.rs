//! Layout kernels: strided gathers (permute, narrow, broadcast_to) and strided writes (pad,
//! concat). The tensor crate keeps its storage contiguous; these produce the new contiguous
//! buffers. And [`transpose_block`], the 8x8 transpose behind the convolutions' changes of
//! layout.

use super::{vectorized, PARALLEL_THRESHOLD};
use crate::cpu::simd::{dispatch, F32Simd, SimdKernel, SimdPath};
use crate::cpu::{as_f32, as_f32_slots};
use crate::shape::contiguous_strides;
use crate::Element;
use rayon::prelude::*;
use std::marker::PhantomData;
use std::mem::MaybeUninit;

/// Gather a contiguous tensor of `shape` whose element at index `i` is
/// `src[offset + sum_d i[d] * strides[d]]`. Permute, narrow and broadcast are all this.
pub fn strided_copy<T: Element>(src: &[T], offset: usize, strides: &[usize], shape: &[usize]) -> Vec<T> {
    let n: usize = shape.iter().product();
    let mut out = vec![T::ZERO; n];
    if n == 0 {
        return out;
    }
    if shape.is_empty() {
        out[0] = src[offset];
        return out;
    }
    let rank = shape.len();
    let row = shape[rank - 1];
    let last = strides[rank - 1];
    let out_strides = contiguous_strides(shape);
    let body = |(r, o): (usize, &mut [T])| {
        let start = r * row;
        let mut base = offset;
        for d in 0..rank - 1 {
            base += (start / out_strides[d]) % shape[d] * strides[d];
        }
        if last == 1 {
            o.copy_from_slice(&src[base..base + row]);
        } else {
            for (j, o) in o.iter_mut().enumerate() {
                *o = src[base + j * last];
            }
        }
    };
    if n >= PARALLEL_THRESHOLD {
        out.par_chunks_mut(row)
            .enumerate()
            .for_each(|task| vectorized(|| body(task)));
    } else {
        vectorized(|| out.chunks_mut(row).enumerate().for_each(body));
    }
    out
}

/// Write the contiguous `src` of `shape` into `dst` at element positions
/// `offset + sum_d i[d] * strides[d]`. Pad and concat are this.
pub fn strided_write<T: Element>(dst: &mut [T], offset: usize, strides: &[usize], src: &[T], shape: &[usize]) {
    let n: usize = shape.iter().product();
    if n == 0 {
        return;
    }
    if shape.is_empty() {
        dst[offset] = src[0];
        return;
    }
    let rank = shape.len();
    let row = shape[rank - 1];
    let last = strides[rank - 1];
    let src_strides = contiguous_strides(shape);
    for (r, s) in src.chunks(row).enumerate() {
        let start = r * row;
        let mut base = offset;
        for d in 0..rank - 1 {
            base += (start / src_strides[d]) % shape[d] * strides[d];
        }
        if last == 1 {
            dst[base..base + row].copy_from_slice(s);
        } else {
            for (j, &v) in s.iter().enumerate() {
                dst[base + j * last] = v;
            }
        }
    }
}

/// Side of the square blocks [`transpose_block`] works by.
pub const TRANSPOSE_BLOCK: usize = 8;

/// `dst[j * dst_stride + i] = src[i * src_stride + j]` for `i < rows`, `j < cols`: a matrix
/// of at most [`TRANSPOSE_BLOCK`] rows and columns, rows `src_stride` apart, written transposed
/// with rows `dst_stride` apart; nothing else of `dst` is touched. Eight runs of at most eight
/// read, eight written, so both sides move whole pieces of cache lines (an
/// element-by-element transpose touches a line per element on one side). For f32, a block of 8
/// columns is transposed in registers on `path` ([`F32Simd::transpose_8x8`]). Callers walk the
/// blocks of a larger matrix in the order that suits its layout (the convolutions' layout
/// changes complete each cache line of the strided side at once).
///
/// Panics if the block is larger than that, reaches past either slice, or `path` is not
/// supported by this processor.
pub fn transpose_block<T: Element>(
    path: SimdPath,
    src: &[T],
    src_stride: usize,
    rows: usize,
    cols: usize,
    dst: &mut [MaybeUninit<T>],
    dst_stride: usize,
) {
    const B: usize = TRANSPOSE_BLOCK;
    if rows == 0 || cols == 0 {
        return;
    }
    // Checked arithmetic: a huge stride must not wrap around into a passing bound.
    let reach = |lines: usize, stride: usize, run: usize| (lines - 1).checked_mul(stride)?.checked_add(run);
    let fits = |reach: Option<usize>, len: usize| reach.is_some_and(|r| r <= len);
    assert!(
        rows <= B && cols <= B,
        "transpose: a {rows}x{cols} block is larger than {B}x{B}"
    );
    assert!(
        fits(reach(rows, src_stride, cols), src.len()) && fits(reach(cols, dst_stride, rows), dst.len()),
        "transpose: a {rows}x{cols} block with strides {src_stride}/{dst_stride} reaches past its slices"
    );
    // SAFETY: the block lies inside both slices (checked above); the transposes write values
    // of `src` only.
    unsafe {
        match (as_f32(src), as_f32_slots(dst)) {
            (Some(src), Some(dst)) => dispatch(
                path,
                OneBlock {
                    src: src.as_ptr(),
                    src_stride,
                    rows,
                    cols,
                    dst: dst.as_mut_ptr() as *mut f32,
                    dst_stride,
                },
            ),
            _ => transpose_block_unchecked::<T, ByElement>(
                src.as_ptr(),
                src_stride,
                rows,
                cols,
                dst.as_mut_ptr() as *mut T,
                dst_stride,
            ),
        }
    }
}

/// [`transpose_block`]'s one block on a SIMD path.
struct OneBlock {
    src: *const f32,
    src_stride: usize,
    rows: usize,
    cols: usize,
    dst: *mut f32,
    dst_stride: usize,
}

impl SimdKernel for OneBlock {
    type Output = ();
    #[inline(always)]
    unsafe fn run<S: F32Simd>(self) {
        let OneBlock {
            src,
            src_stride,
            rows,
            cols,
            dst,
            dst_stride,
        } = self;
        // SAFETY: `transpose_block` checked both blocks; `run`'s caller compiled this for S.
        unsafe { transpose_block_unchecked::<f32, InRegisters<S>>(src, src_stride, rows, cols, dst, dst_stride) }
    }
}

/// How a layout change transposes a full 8x8 block: in vector registers ([`InRegisters`], f32
/// on a SIMD path) or element by element ([`ByElement`], any element type). The layout changes
/// of the convolutions are written once, generic over it, and run in registers through
/// [`dispatch`].
pub(crate) trait Transpose8x8<T: Copy> {
    /// The 8x8 block at `src` (rows `src_stride` apart) written transposed at `dst` (rows
    /// `dst_stride` apart).
    ///
    /// # Safety
    /// Both blocks are in bounds (and for [`InRegisters`], the caller is compiled for its
    /// instructions).
    unsafe fn transpose_8x8(src: *const T, src_stride: usize, dst: *mut T, dst_stride: usize);

    /// As [`Transpose8x8::transpose_8x8`], writing only the first `lanes` (at most 8) values
    /// of each row of `dst`, the memory past them untouched: a block of fewer than 8 columns
    /// of the result whose source rows all exist (the weight gradient's blocks of 6 output
    /// channels).
    ///
    /// # Safety
    /// The 8x8 block at `src` and the 8 x `lanes` block at `dst` are in bounds.
    unsafe fn transpose_8x8_first_lanes(src: *const T, src_stride: usize, dst: *mut T, dst_stride: usize, lanes: usize);

    /// A block of 8 columns of which only the first `rows` (fewer than 8) source rows exist:
    /// `dst[j * dst_stride + i] = src[i * src_stride + j]` for `i < rows`, `j < 8`, nothing
    /// else of `dst` touched (the last pixels of a band of the tile layout).
    ///
    /// # Safety
    /// The `rows x 8` block at `src` and the `8 x rows` block at `dst` are in bounds, and
    /// `rows < 8`.
    unsafe fn transpose_first_rows(src: *const T, src_stride: usize, rows: usize, dst: *mut T, dst_stride: usize) {
        for j in 0..8 {
            for i in 0..rows {
                // SAFETY: the caller vouches for both blocks.
                unsafe { *dst.add(j * dst_stride + i) = *src.add(i * src_stride + j) };
            }
        }
    }

    /// A 16x16 block, as [`Transpose8x8::transpose_8x8`] (in registers, as
    /// [`F32Simd::transpose_16x16`]).
    ///
    /// # Safety
    /// As [`Transpose8x8::transpose_8x8`], for 16x16 blocks.
    unsafe fn transpose_16x16(src: *const T, src_stride: usize, dst: *mut T, dst_stride: usize);

    /// Starts bringing the cache line that holds `p` into the cache, ahead of a write there: a
    /// hint, which never faults and changes no value. Element by element it does nothing.
    fn prefetch(p: *const T) {
        let _ = p;
    }
}

/// Element by element.
pub(crate) struct ByElement;

impl<T: Copy> Transpose8x8<T> for ByElement {
    #[inline(always)]
    unsafe fn transpose_16x16(src: *const T, src_stride: usize, dst: *mut T, dst_stride: usize) {
        // SAFETY: the caller vouches for both blocks.
        unsafe { transpose_block_by_element(src, src_stride, 16, 16, dst, dst_stride) }
    }

    #[inline(always)]
    unsafe fn transpose_8x8(src: *const T, src_stride: usize, dst: *mut T, dst_stride: usize) {
        // SAFETY: the caller vouches for both blocks.
        unsafe { transpose_block_by_element(src, src_stride, 8, 8, dst, dst_stride) }
    }

    #[inline(always)]
    unsafe fn transpose_8x8_first_lanes(
        src: *const T,
        src_stride: usize,
        dst: *mut T,
        dst_stride: usize,
        lanes: usize,
    ) {
        // SAFETY: the caller vouches for both blocks.
        unsafe { transpose_block_by_element(src, src_stride, lanes.min(8), 8, dst, dst_stride) }
    }
}

/// In vector registers of `S` ([`F32Simd::transpose_8x8`]).
pub(crate) struct InRegisters<S>(PhantomData<S>);

impl<S: F32Simd> Transpose8x8<f32> for InRegisters<S> {
    /// The rows copied into a local 8x8 block (zero below them), which is transposed whole and
    /// written back by its first `rows` lanes: eight vector stores where element by element
    /// would take `8 * rows` scalar ones.
    #[inline(always)]
    unsafe fn transpose_first_rows(src: *const f32, src_stride: usize, rows: usize, dst: *mut f32, dst_stride: usize) {
        let mut block = [0f32; 64];
        // SAFETY: the caller vouches for `rows < 8` rows of 8 values at `src`, which land in
        // the local block's first `rows` rows, and for the `8 x rows` block at `dst`.
        unsafe {
            for i in 0..rows {
                std::ptr::copy_nonoverlapping(src.add(i * src_stride), block.as_mut_ptr().add(8 * i), 8);
            }
            Self::transpose_8x8_first_lanes(block.as_ptr(), 8, dst, dst_stride, rows);
        }
    }

    #[inline(always)]
    fn prefetch(p: *const f32) {
        // SAFETY: a prefetch is a hint: it never faults, whatever the address, and `dispatch`
        // compiled the caller for S's instructions.
        unsafe { S::prefetch(p) }
    }

    #[inline(always)]
    unsafe fn transpose_8x8(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
        // SAFETY: forwarded to the caller.
        unsafe { S::transpose_8x8(src, src_stride, dst, dst_stride) }
    }

    #[inline(always)]
    unsafe fn transpose_16x16(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
        // SAFETY: forwarded to the caller.
        unsafe { S::transpose_16x16(src, src_stride, dst, dst_stride) }
    }

    #[inline(always)]
    unsafe fn transpose_8x8_first_lanes(
        src: *const f32,
        src_stride: usize,
        dst: *mut f32,
        dst_stride: usize,
        lanes: usize,
    ) {
        // Transposed whole into a local block (in L1), then each row's first lanes stored
        // by a lane mask where the path has one: 8 vector stores instead of 8 * lanes
        // scalar ones. The block has room past its last row for a vector of 16 lanes.
        let mut block = [0f32; 64 + 16];
        // SAFETY: the caller vouches for the source block and for `lanes` values of each
        // destination row; every load below lies in the local block (row `j` starts at `8 *
        // j <= 56`, and a vector is at most 16 lanes).
        unsafe {
            S::transpose_8x8(src, src_stride, block.as_mut_ptr(), 8);
            for j in 0..8 {
                let (row, out) = (block.as_ptr().add(8 * j), dst.add(j * dst_stride));
                let mut done = 0;
                while done < lanes.min(8) {
                    let take = (lanes.min(8) - done).min(S::LANES);
                    let v = S::load(row.add(done));
                    S::store_first(out.add(done), v, take);
                    done += take;
                }
            }
        }
    }
}

/// [`transpose_block`] without its checks, for loops that checked the range of all their
/// blocks once: a full 8x8 block through `X`, one of 8 columns and fewer rows through `X`'s
/// [`Transpose8x8::transpose_first_rows`], any other element by element.
///
/// # Safety
/// `rows` and `cols` are at most 8, and the block lies inside both the memory at `src` (rows
/// `src_stride` apart) and at `dst` (rows `dst_stride` apart).
#[inline(always)]
pub(crate) unsafe fn transpose_block_unchecked<T: Copy, X: Transpose8x8<T>>(
    src: *const T,
    src_stride: usize,
    rows: usize,
    cols: usize,
    dst: *mut T,
    dst_stride: usize,
) {
    // SAFETY: forwarded to the caller.
    unsafe {
        if rows == TRANSPOSE_BLOCK && cols == TRANSPOSE_BLOCK {
            X::transpose_8x8(src, src_stride, dst, dst_stride);
            return;
        }
        if cols == TRANSPOSE_BLOCK {
            X::transpose_first_rows(src, src_stride, rows, dst, dst_stride);
            return;
        }
        transpose_block_by_element(src, src_stride, rows, cols, dst, dst_stride);
    }
}

/// `dst[j * dst_stride + i] = src[i * src_stride + j]` for `i < rows`, `j < cols`.
///
/// # Safety
/// Both blocks lie inside their memory.
#[inline(always)]
unsafe fn transpose_block_by_element<T: Copy>(
    src: *const T,
    src_stride: usize,
    rows: usize,
    cols: usize,
    dst: *mut T,
    dst_stride: usize,
) {
    for j in 0..cols {
        for i in 0..rows {
            // SAFETY: the caller vouches for both blocks.
            unsafe { *dst.add(j * dst_stride + i) = *src.add(i * src_stride + j) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_and_narrow_by_strides() {
        let x: Vec<f32> = (0..6).map(|v| v as f32).collect(); // [2, 3]
        assert_eq!(
            strided_copy(&x, 0, &[1, 3], &[3, 2]),
            vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
        );
        assert_eq!(strided_copy(&x, 1, &[3, 1], &[2, 2]), vec![1.0, 2.0, 4.0, 5.0]);
        let mut dst = vec![0.0f32; 12]; // [3, 4], write [2, 3] at (1, 1)
        strided_write(&mut dst, 5, &[4, 1], &x, &[2, 3]);
        assert_eq!(&dst[4..], &[0.0, 0.0, 1.0, 2.0, 0.0, 3.0, 4.0, 5.0]);
    }

    /// Every block shape up to 8x8 (the full one takes the register path in f32), with strides
    /// wider than the block, in f32 and f64, on every SIMD path this processor supports.
    #[test]
    fn transpose_block_matches_indexing() {
        fn check<T: Element + std::fmt::Debug>(path: SimdPath, to: impl Fn(usize) -> T) {
            // Outside every source value, so that a stray write shows.
            let sentinel = T::from_f64(-1.0);
            for rows in 1..=TRANSPOSE_BLOCK {
                for cols in 1..=TRANSPOSE_BLOCK {
                    let (src_stride, dst_stride) = (cols + 3, rows + 5);
                    let src: Vec<T> = (0..rows * src_stride).map(&to).collect();
                    let mut dst = vec![MaybeUninit::new(sentinel); cols * dst_stride];
                    transpose_block(path, &src, src_stride, rows, cols, &mut dst, dst_stride);
                    for j in 0..cols {
                        for i in 0..dst_stride {
                            // SAFETY: every slot of `dst` was initialised above.
                            let got = unsafe { dst[j * dst_stride + i].assume_init() };
                            let want = if i < rows { src[i * src_stride + j] } else { sentinel };
                            assert_eq!(got, want, "{path}: {rows}x{cols} at ({i}, {j})");
                        }
                    }
                }
            }
        }
        for path in SimdPath::supported() {
            check(path, |v| v as f32);
            check(path, |v| v as f64);
        }
    }

    /// The first lanes of each transposed row, and nothing past them, for every count of
    /// lanes, on every SIMD path this processor supports (in registers) and element by element.
    #[test]
    fn first_lanes_of_a_transposed_block_and_nothing_else() {
        struct FirstLanes<'a> {
            src: &'a [f32],
            dst: &'a mut [f32],
            lanes: usize,
        }
        impl SimdKernel for FirstLanes<'_> {
            type Output = ();
            #[inline(always)]
            unsafe fn run<S: F32Simd>(self) {
                // SAFETY: the test's blocks are in bounds (strides 11 and 13, 8 rows each).
                unsafe {
                    InRegisters::<S>::transpose_8x8_first_lanes(
                        self.src.as_ptr(),
                        11,
                        self.dst.as_mut_ptr(),
                        13,
                        self.lanes,
                    )
                }
            }
        }
        let src: Vec<f32> = (0..8 * 11).map(|v| v as f32).collect();
        let sentinel = -1.0f32;
        let check = |dst: &[f32], lanes: usize, how: &str| {
            for j in 0..8 {
                for i in 0..13 {
                    let want = if i < lanes { src[i * 11 + j] } else { sentinel };
                    assert_eq!(dst[j * 13 + i], want, "{how}: {lanes} lanes at ({i}, {j})");
                }
            }
        };
        for lanes in 1..=8 {
            for path in SimdPath::supported() {
                let mut dst = vec![sentinel; 8 * 13];
                dispatch(
                    path,
                    FirstLanes {
                        src: &src,
                        dst: &mut dst,
                        lanes,
                    },
                );
                check(&dst, lanes, &path.to_string());
            }
            let mut dst = vec![sentinel; 8 * 13];
            // SAFETY: as above.
            unsafe { ByElement::transpose_8x8_first_lanes(src.as_ptr(), 11, dst.as_mut_ptr(), 13, lanes) };
            check(&dst, lanes, "by element");
        }
    }

    #[test]
    #[should_panic(expected = "reaches past")]
    fn a_transpose_past_its_slices_is_refused() {
        let src = vec![0.0f32; 63];
        let mut dst = vec![MaybeUninit::new(0.0f32); 64];
        transpose_block(SimdPath::Portable, &src, 8, 8, 8, &mut dst, 8);
    }

    #[test]
    #[should_panic(expected = "reaches past")]
    fn a_stride_that_wraps_around_is_refused() {
        // 7 * stride wraps to 5 in 64 bits: a bound computed without checks would pass.
        let stride = usize::MAX / 7 + 1;
        let src = vec![0.0f32; 13];
        let mut dst = vec![MaybeUninit::new(0.0f32); 64];
        transpose_block(SimdPath::Portable, &src, stride, 8, 8, &mut dst, 8);
    }

    #[test]
    #[should_panic(expected = "larger than")]
    fn a_transpose_block_larger_than_eight_is_refused() {
        let src = vec![0.0f32; 90];
        let mut dst = vec![MaybeUninit::new(0.0f32); 90];
        transpose_block(SimdPath::Portable, &src, 9, 9, 9, &mut dst, 9);
    }
}
