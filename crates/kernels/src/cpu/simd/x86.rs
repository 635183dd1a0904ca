//! [`F32Simd`] on x86-64: AVX2 with FMA, and AVX-512F.

use super::F32Simd;
use std::arch::x86_64::*;

/// AVX2 with FMA: 8 lanes.
#[derive(Clone, Copy)]
pub(crate) struct Avx2;

/// AVX-512F: 16 lanes (its transposes use AVX2, which every AVX-512 processor has).
#[derive(Clone, Copy)]
pub(crate) struct Avx512;

impl F32Simd for Avx2 {
    type V = __m256;
    const LANES: usize = 8;

    #[inline(always)]
    unsafe fn zero() -> __m256 {
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn broadcast(p: *const f32) -> __m256 {
        unsafe { _mm256_broadcast_ss(&*p) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn load_first(p: *const f32, count: usize) -> __m256 {
        // Lane i is loaded where i < count (its mask lane's sign bit set), zero elsewhere.
        unsafe {
            let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(count.min(8) as i32), lanes);
            _mm256_maskload_ps(p, mask)
        }
    }
    #[inline(always)]
    unsafe fn store_first(p: *mut f32, v: __m256, count: usize) {
        // Lane i is stored where i < count: its mask lane's sign bit set.
        unsafe {
            let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(count.min(8) as i32), lanes);
            _mm256_maskstore_ps(p, mask, v)
        }
    }
    #[inline(always)]
    unsafe fn mul_add(a: __m256, b: __m256, c: __m256) -> __m256 {
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn prefetch(p: *const f32) {
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p as *const i8) }
    }
    #[inline(always)]
    unsafe fn transpose_8x8(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
        unsafe { transpose_8x8_avx(src, src_stride, dst, dst_stride) }
    }
    #[inline(always)]
    unsafe fn widen_bf16_pairs(p: *const u32) -> (__m256, __m256) {
        unsafe {
            let v = _mm256_loadu_si256(p as *const __m256i);
            let high = _mm256_set1_epi32(0xffff_0000_u32 as i32);
            (
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(v)),
                _mm256_castsi256_ps(_mm256_and_si256(v, high)),
            )
        }
    }
    #[inline(always)]
    unsafe fn widen_f16_pairs(p: *const u32) -> (__m256, __m256) {
        unsafe {
            let v = _mm256_loadu_si256(p as *const __m256i);
            // The eight halves of each kind packed into 128 bits (the pack works within
            // 128-bit lanes, then one permute gathers the two lanes' results), widened.
            let halves = |x: __m256i| {
                let packed = _mm256_permute4x64_epi64::<0b1000>(_mm256_packus_epi32(x, x));
                _mm256_cvtph_ps(_mm256_castsi256_si128(packed))
            };
            let low = _mm256_and_si256(v, _mm256_set1_epi32(0xffff));
            (halves(low), halves(_mm256_srli_epi32::<16>(v)))
        }
    }
}

impl F32Simd for Avx512 {
    type V = __m512;
    const LANES: usize = 16;

    #[inline(always)]
    unsafe fn zero() -> __m512 {
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn broadcast(p: *const f32) -> __m512 {
        unsafe { _mm512_set1_ps(*p) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn load_first(p: *const f32, count: usize) -> __m512 {
        // A masked load reads no memory past the mask's lanes (and faults on none).
        unsafe { _mm512_maskz_loadu_ps(((1u32 << count.min(16)) - 1) as u16, p) }
    }
    #[inline(always)]
    unsafe fn store_first(p: *mut f32, v: __m512, count: usize) {
        // A masked store touches no memory past the mask's lanes.
        unsafe { _mm512_mask_storeu_ps(p, ((1u32 << count.min(16)) - 1) as u16, v) }
    }
    #[inline(always)]
    unsafe fn mul_add(a: __m512, b: __m512, c: __m512) -> __m512 {
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn prefetch(p: *const f32) {
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p as *const i8) }
    }
    #[inline(always)]
    unsafe fn transpose_8x8(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
        unsafe { transpose_8x8_avx(src, src_stride, dst, dst_stride) }
    }
    #[inline(always)]
    unsafe fn transpose_16x16(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
        unsafe { transpose_16x16_avx512(src, src_stride, dst, dst_stride) }
    }
    #[inline(always)]
    unsafe fn widen_bf16_pairs(p: *const u32) -> (__m512, __m512) {
        unsafe {
            let v = _mm512_loadu_si512(p as *const __m512i);
            let high = _mm512_set1_epi32(0xffff_0000_u32 as i32);
            (
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v)),
                _mm512_castsi512_ps(_mm512_and_si512(v, high)),
            )
        }
    }
    #[inline(always)]
    unsafe fn widen_f16_pairs(p: *const u32) -> (__m512, __m512) {
        unsafe {
            let v = _mm512_loadu_si512(p as *const __m512i);
            // Each 32-bit lane narrowed to its low 16 bits (`vpmovdw`), then widened.
            (
                _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v)),
                _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(v))),
            )
        }
    }
}

/// A 16x16 block transposed in 512-bit registers, as [`transpose_8x8_avx`] with a fourth
/// step: interleave pairs of rows (32-bit elements), then pairs of pairs (64-bit), which
/// leaves four rows' columns `k`, `k + 4`, `k + 8`, `k + 12` in the 128-bit lanes of one
/// register; then two rounds of 128-bit lane shuffles gather each column's four lanes.
#[inline(always)]
unsafe fn transpose_16x16_avx512(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
    unsafe {
        let r: [__m512; 16] = std::array::from_fn(|i| _mm512_loadu_ps(src.add(i * src_stride)));
        // Row pairs, per 128-bit lane: [a0 b0 a1 b1] (even) and [a2 b2 a3 b3] (odd).
        let t: [__m512; 16] = std::array::from_fn(|i| {
            let (a, b) = (r[i & !1], r[i | 1]);
            if i % 2 == 0 {
                _mm512_unpacklo_ps(a, b)
            } else {
                _mm512_unpackhi_ps(a, b)
            }
        });
        // Group g of rows 4g..4g+3: u[4g + k] holds their column k in lane 0, k + 4 in
        // lane 1, k + 8 in lane 2, k + 12 in lane 3.
        let u: [__m512; 16] = std::array::from_fn(|i| {
            let (g, k) = (i / 4, i % 4);
            let (a, b) = (t[4 * g + k / 2], t[4 * g + 2 + k / 2]);
            let (a, b) = (_mm512_castps_pd(a), _mm512_castps_pd(b));
            _mm512_castpd_ps(if k % 2 == 0 {
                _mm512_unpacklo_pd(a, b)
            } else {
                _mm512_unpackhi_pd(a, b)
            })
        });
        for k in 0..4 {
            // Lanes 0 and 2 of groups 0, 1 (and 2, 3): columns k and k + 8.
            let even01 = _mm512_shuffle_f32x4::<0x88>(u[k], u[4 + k]);
            let even23 = _mm512_shuffle_f32x4::<0x88>(u[8 + k], u[12 + k]);
            // Lanes 1 and 3: columns k + 4 and k + 12.
            let odd01 = _mm512_shuffle_f32x4::<0xDD>(u[k], u[4 + k]);
            let odd23 = _mm512_shuffle_f32x4::<0xDD>(u[8 + k], u[12 + k]);
            _mm512_storeu_ps(dst.add(k * dst_stride), _mm512_shuffle_f32x4::<0x88>(even01, even23));
            _mm512_storeu_ps(
                dst.add((k + 8) * dst_stride),
                _mm512_shuffle_f32x4::<0xDD>(even01, even23),
            );
            _mm512_storeu_ps(
                dst.add((k + 4) * dst_stride),
                _mm512_shuffle_f32x4::<0x88>(odd01, odd23),
            );
            _mm512_storeu_ps(
                dst.add((k + 12) * dst_stride),
                _mm512_shuffle_f32x4::<0xDD>(odd01, odd23),
            );
        }
    }
}

/// An 8x8 block transposed in 256-bit registers: interleave pairs of rows, then pairs of
/// pairs, then swap the 128-bit halves.
#[inline(always)]
unsafe fn transpose_8x8_avx(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
    unsafe {
        let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.add(i * src_stride)));
        // Row pairs: [a0 b0 a1 b1 | a4 b4 a5 b5] and [a2 b2 a3 b3 | a6 b6 a7 b7].
        let lo = |a, b| _mm256_unpacklo_ps(a, b);
        let hi = |a, b| _mm256_unpackhi_ps(a, b);
        let t = [
            lo(r[0], r[1]),
            hi(r[0], r[1]),
            lo(r[2], r[3]),
            hi(r[2], r[3]),
            lo(r[4], r[5]),
            hi(r[4], r[5]),
            lo(r[6], r[7]),
            hi(r[6], r[7]),
        ];
        // Pairs of pairs: four rows' column k in each 128-bit half (k and k + 4).
        let u = [
            _mm256_shuffle_ps::<0x44>(t[0], t[2]),
            _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
            _mm256_shuffle_ps::<0x44>(t[1], t[3]),
            _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
            _mm256_shuffle_ps::<0x44>(t[4], t[6]),
            _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
            _mm256_shuffle_ps::<0x44>(t[5], t[7]),
            _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
        ];
        // Column k: the low halves of rows 0-3 and 4-7 (k < 4), or the high halves.
        for k in 0..4 {
            let column = _mm256_permute2f128_ps::<0x20>(u[k], u[k + 4]);
            _mm256_storeu_ps(dst.add(k * dst_stride), column);
            let column = _mm256_permute2f128_ps::<0x31>(u[k], u[k + 4]);
            _mm256_storeu_ps(dst.add((k + 4) * dst_stride), column);
        }
    }
}
