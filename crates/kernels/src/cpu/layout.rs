//! Layout kernels: strided gathers (permute, narrow, broadcast_to) and strided writes (pad,
//! concat). The tensor crate keeps its storage contiguous; these produce the new contiguous
//! buffers. And [`transpose_block`], the 8x8 transpose behind the convolutions' changes of
//! layout.

use super::PARALLEL_THRESHOLD;
use crate::cpu::simd::{F32Simd, Portable, SimdPath};
use crate::shape::contiguous_strides;
use crate::Element;
use rayon::prelude::*;
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
        out.par_chunks_mut(row).enumerate().for_each(body);
    } else {
        out.chunks_mut(row).enumerate().for_each(body);
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
/// element-by-element transpose touches a line per element on one side). For f32, a full 8x8
/// block is transposed in registers on `path` ([`F32Simd::transpose_8x8`]). Callers walk the
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
    if rows == B && cols == B && std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() {
        assert!(path.is_supported(), "transpose: the {path} path is not supported here");
        let (s, d) = (src.as_ptr() as *const f32, dst.as_mut_ptr() as *mut f32);
        // SAFETY: T is f32; the block lies inside both slices (checked above), and the
        // processor supports `path`.
        unsafe { transpose_8x8(path, s, src_stride, d, dst_stride) };
        return;
    }
    for j in 0..cols {
        for (i, d) in dst[j * dst_stride..][..rows].iter_mut().enumerate() {
            d.write(src[i * src_stride + j]);
        }
    }
}

/// [`F32Simd::transpose_8x8`] of `path`, entered through a function compiled for it.
///
/// # Safety
/// Both 8x8 blocks are in bounds, and the processor supports `path`.
unsafe fn transpose_8x8(path: SimdPath, src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
        // SAFETY: forwarded; compiled for AVX2 (which the AVX-512 path has too).
        unsafe { crate::cpu::simd::Avx2::transpose_8x8(src, src_stride, dst, dst_stride) }
    }
    #[cfg(target_arch = "aarch64")]
    #[target_feature(enable = "neon")]
    unsafe fn neon(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
        // SAFETY: forwarded; compiled for NEON.
        unsafe { crate::cpu::simd::Neon::transpose_8x8(src, src_stride, dst, dst_stride) }
    }
    // SAFETY: forwarded to the caller.
    unsafe {
        match path {
            #[cfg(target_arch = "x86_64")]
            SimdPath::Avx2 | SimdPath::Avx512 => avx(src, src_stride, dst, dst_stride),
            #[cfg(target_arch = "aarch64")]
            SimdPath::Neon => neon(src, src_stride, dst, dst_stride),
            _ => Portable::transpose_8x8(src, src_stride, dst, dst_stride),
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
