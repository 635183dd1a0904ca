//! Conversions between f32 and bf16, in parallel and in vector registers: the casts of mixed
//! precision (every convolution's operands under `autocast`, every output it widens again)
//! and the bf16 kernels' way in and out.
//!
//! A bf16 is the upper half of an f32, so widening is a shift, exact (a signalling NaN is
//! made quiet). Narrowing rounds to
//! nearest, ties to even, in integer arithmetic: add `0x7fff` plus the lowest kept bit, keep
//! the upper half (a carry out of the significand moves into the exponent, and past the
//! largest finite value into infinity, as rounding should). A NaN keeps its sign and upper
//! payload and is made quiet. These are `half`'s results bit for bit (checked below), written
//! without branches so that the compiler vectorises them on each SIMD path (`simd::dispatch`).

use super::simd::{active_path, dispatch, F32Simd, SimdKernel};
use super::{assume_init_vec, uninit_vec, PARALLEL_THRESHOLD};
use half::bf16;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

/// `x` rounded to the nearest bf16, ties to even; NaN stays NaN (made quiet).
#[inline(always)]
pub fn bf16_bits_from_f32(x: f32) -> u16 {
    let bits = x.to_bits();
    let rounded = bits.wrapping_add(0x7fff + (bits >> 16 & 1)) >> 16;
    let quiet_nan = bits >> 16 | 0x40;
    (if bits & 0x7fff_ffff > 0x7f80_0000 {
        quiet_nan
    } else {
        rounded
    }) as u16
}

/// Every value of `src` rounded to bf16.
pub fn bf16_from_f32(src: &[f32]) -> Vec<bf16> {
    let mut out = uninit_vec(src.len());
    for_chunks(src, &mut out, |src, out| {
        dispatch(active_path(), Narrow { src, out });
    });
    // SAFETY: `Narrow` wrote every element.
    unsafe { assume_init_vec(out) }
}

/// Every value of `src` rounded to bf16 into `out` (of the same length), on this thread: for
/// callers that are parallel tasks already (a tile's write-back).
pub fn bf16_from_f32_into(src: &[f32], out: &mut [MaybeUninit<bf16>]) {
    assert_eq!(src.len(), out.len(), "bf16_from_f32_into: lengths differ");
    dispatch(active_path(), Narrow { src, out });
}

/// Every value of `src` widened to f32 (exact).
pub fn f32_from_bf16(src: &[bf16]) -> Vec<f32> {
    let mut out = uninit_vec(src.len());
    for_chunks(src, &mut out, |src, out| {
        dispatch(active_path(), Widen { src, out });
    });
    // SAFETY: `Widen` wrote every element.
    unsafe { assume_init_vec(out) }
}

/// Every value of `src` widened to f32 into `out` (of the same length), on this thread.
pub fn f32_from_bf16_into(src: &[bf16], out: &mut [f32]) {
    assert_eq!(src.len(), out.len(), "f32_from_bf16_into: lengths differ");
    // SAFETY: `MaybeUninit<f32>` has f32's layout; `Widen` only writes.
    let out = unsafe { &mut *(out as *mut [f32] as *mut [MaybeUninit<f32>]) };
    dispatch(active_path(), Widen { src, out });
}

/// `f` on matching chunks of `src` and `out`, in parallel when they are large.
fn for_chunks<A: Sync, B: Send>(src: &[A], out: &mut [MaybeUninit<B>], f: impl Fn(&[A], &mut [MaybeUninit<B>]) + Sync) {
    if src.len() >= PARALLEL_THRESHOLD {
        out.par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each(|(out, src)| f(src, out));
    } else {
        f(src, out);
    }
}

/// f32 to bf16, compiled for a SIMD path.
struct Narrow<'a> {
    src: &'a [f32],
    out: &'a mut [MaybeUninit<bf16>],
}

impl SimdKernel for Narrow<'_> {
    type Output = ();
    #[inline(always)]
    unsafe fn run<S: F32Simd>(self) {
        for (o, &x) in self.out.iter_mut().zip(self.src) {
            o.write(bf16::from_bits(bf16_bits_from_f32(x)));
        }
    }
}

/// bf16 to f32, compiled for a SIMD path.
struct Widen<'a> {
    src: &'a [bf16],
    out: &'a mut [MaybeUninit<f32>],
}

impl SimdKernel for Widen<'_> {
    type Output = ();
    #[inline(always)]
    unsafe fn run<S: F32Simd>(self) {
        for (o, x) in self.out.iter_mut().zip(self.src) {
            let bits = x.to_bits() as u32;
            // A signalling NaN is made quiet, as `half` does.
            let bits = if bits & 0x7fff > 0x7f80 { bits | 0x40 } else { bits };
            o.write(f32::from_bits(bits << 16));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against `half` on special values, ties, the edges of the range and a sweep of bit
    /// patterns, both ways.
    #[test]
    fn conversions_give_the_bits_of_half() {
        let mut bits: Vec<u32> = vec![
            0,
            0x8000_0000,
            0x7f80_0000,
            0xff80_0000,
            0x7fc0_0000,
            0x7f80_0001,
            0xff80_0001,
            0x7fff_ffff,
            0x7f7f_ffff,
            0xff7f_ffff,
            0x0000_0001,
            0x807f_ffff,
            0x3f80_8000,
            0x3f81_8000,
            0x3f80_8001,
            0x3f80_7fff,
        ];
        let mut state = 1u64;
        bits.extend((0..300_000).map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 32) as u32
        }));
        let values: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
        let narrowed = bf16_from_f32(&values);
        for (x, got) in values.iter().zip(&narrowed) {
            assert_eq!(got.to_bits(), bf16::from_f32(*x).to_bits(), "{:#010x}", x.to_bits());
        }
        let every_bf16: Vec<bf16> = (0..=u16::MAX).map(bf16::from_bits).collect();
        let widened = f32_from_bf16(&every_bf16);
        for (b, got) in every_bf16.iter().zip(&widened) {
            assert_eq!(got.to_bits(), b.to_f32().to_bits(), "{:#06x}", b.to_bits());
        }
    }
}
