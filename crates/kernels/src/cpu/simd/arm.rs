//! [`F32Simd`] on aarch64: NEON.

use super::F32Simd;
use std::arch::aarch64::*;

/// NEON: 4 lanes.
#[derive(Clone, Copy)]
pub(crate) struct Neon;

impl F32Simd for Neon {
    type V = float32x4_t;
    const LANES: usize = 4;

    #[inline(always)]
    unsafe fn zero() -> float32x4_t {
        unsafe { vdupq_n_f32(0.0) }
    }
    #[inline(always)]
    unsafe fn broadcast(p: *const f32) -> float32x4_t {
        unsafe { vld1q_dup_f32(p) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> float32x4_t {
        unsafe { vld1q_f32(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: float32x4_t) {
        unsafe { vst1q_f32(p, v) }
    }
    #[inline(always)]
    unsafe fn mul_add(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        // vfmaq_f32(c, a, b) = c + a * b, fused.
        unsafe { vfmaq_f32(c, a, b) }
    }
    #[inline(always)]
    unsafe fn prefetch(_: *const f32) {}
    #[inline(always)]
    unsafe fn transpose_8x8(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
        // Four 4x4 blocks, each transposed in registers and written to the mirrored place.
        for (bi, bj) in [(0, 0), (0, 4), (4, 0), (4, 4)] {
            unsafe {
                let at = |i: usize| vld1q_f32(src.add((bi + i) * src_stride + bj));
                let (r0, r1, r2, r3) = (at(0), at(1), at(2), at(3));
                // Interleave pairs of rows, then pairs of 64-bit halves.
                let t01 = vtrnq_f32(r0, r1);
                let t23 = vtrnq_f32(r2, r3);
                let c0 = vcombine_f32(vget_low_f32(t01.0), vget_low_f32(t23.0));
                let c1 = vcombine_f32(vget_low_f32(t01.1), vget_low_f32(t23.1));
                let c2 = vcombine_f32(vget_high_f32(t01.0), vget_high_f32(t23.0));
                let c3 = vcombine_f32(vget_high_f32(t01.1), vget_high_f32(t23.1));
                for (k, column) in [c0, c1, c2, c3].into_iter().enumerate() {
                    vst1q_f32(dst.add((bj + k) * dst_stride + bi), column);
                }
            }
        }
    }
    #[inline(always)]
    unsafe fn widen_bf16_pairs(p: *const u32) -> (float32x4_t, float32x4_t) {
        unsafe {
            let v = vld1q_u32(p);
            (
                vreinterpretq_f32_u32(vshlq_n_u32::<16>(v)),
                vreinterpretq_f32_u32(vandq_u32(v, vdupq_n_u32(0xffff_0000))),
            )
        }
    }
    #[inline(always)]
    unsafe fn widen_f16_pairs(p: *const u32) -> (float32x4_t, float32x4_t) {
        // NEON's f16 conversions are not on stable Rust yet: four lanes at a time through
        // `half`.
        unsafe {
            let v = (p as *const [u32; 4]).read_unaligned();
            let f16 = |bits: u32| half::f16::from_bits(bits as u16).to_f32();
            let (low, high) = (v.map(|pair| f16(pair & 0xffff)), v.map(|pair| f16(pair >> 16)));
            (vld1q_f32(low.as_ptr()), vld1q_f32(high.as_ptr()))
        }
    }
}
