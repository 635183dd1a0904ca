//! The kernels of [`super`]: the widening kernel written once over [`F32Simd`] and its entry
//! for each SIMD path, and the `vdpbf16ps` kernel, with the dispatch from run-time values to
//! their compiled instances (in a file of their own, so that tile_pairs.rs stays readable).

use super::{HalfFormat, PairKernel, Run, WeightsRef, TILE_ROWS, TILE_SAMPLES};
use crate::cpu::simd::{F32Simd, Portable, SimdPath};

/// How many pair steps ahead the inputs are prefetched.
const PREFETCH_STEPS: usize = 8;

/// The widening kernel: `W` tiles of widened weights (`[pair step, TILE_ROWS, 2]`) over
/// bf16 pairs of inputs, `ROWS * VECTORS` vectors of sums per tile.
///
/// # Safety
/// The runs lie inside every operand, each output holds a tile, and the processor has
/// `S`'s instructions (the caller is compiled for them).
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn widening<S: F32Simd, const ROWS: usize, const VECTORS: usize, const W: usize, const F16: bool>(
    weights: [*const f32; W],
    inputs: *const u32,
    runs: &[Run],
    out: [*mut f32; W],
) {
    debug_assert_eq!(VECTORS * S::LANES, TILE_SAMPLES);
    // SAFETY: inside the runs and tiles the caller vouches for.
    unsafe {
        let zero = S::zero();
        let mut acc = [[[zero; VECTORS]; ROWS]; W];
        for w in 0..W {
            for r in 0..ROWS {
                for v in 0..VECTORS {
                    acc[w][r][v] = S::load(out[w].add(r * TILE_SAMPLES + v * S::LANES));
                }
            }
        }
        for run in runs {
            let mut wp = weights.map(|w| w.add(2 * run.weights));
            let mut xp = inputs.add(run.inputs);
            for _ in 0..run.len {
                S::prefetch(xp.wrapping_add(PREFETCH_STEPS * TILE_SAMPLES) as *const f32);
                let mut first = [zero; VECTORS];
                let mut second = [zero; VECTORS];
                for v in 0..VECTORS {
                    let x = xp.add(v * S::LANES);
                    (first[v], second[v]) = if F16 {
                        S::widen_f16_pairs(x)
                    } else {
                        S::widen_bf16_pairs(x)
                    };
                }
                for w in 0..W {
                    for r in 0..ROWS {
                        // The pair's second step first, as `vdpbf16ps` adds them.
                        let w_second = S::broadcast(wp[w].add(2 * r + 1));
                        let w_first = S::broadcast(wp[w].add(2 * r));
                        for v in 0..VECTORS {
                            acc[w][r][v] = S::mul_add(w_second, second[v], acc[w][r][v]);
                            acc[w][r][v] = S::mul_add(w_first, first[v], acc[w][r][v]);
                        }
                    }
                }
                for w in 0..W {
                    wp[w] = wp[w].add(2 * TILE_ROWS);
                }
                xp = xp.add(TILE_SAMPLES);
            }
        }
        for w in 0..W {
            for r in 0..ROWS {
                for v in 0..VECTORS {
                    S::store(out[w].add(r * TILE_SAMPLES + v * S::LANES), acc[w][r][v]);
                }
            }
        }
    }
}

/// `kernel` for `rows` rows and `W` tiles: the dispatch from run-time values to the
/// compiled instances.
///
/// # Safety
/// As the kernels, and `kernel` runs on this processor.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn grid<const W: usize>(
    kernel: PairKernel,
    format: HalfFormat,
    rows: usize,
    weights: [WeightsRef<'_>; W],
    inputs: *const u32,
    runs: &[Run],
    out: [*mut f32; W],
) {
    macro_rules! by_rows {
        ($entry:ident, $w:expr, $f16:expr) => {
            if $f16 {
                match rows {
                    6 => $entry::<6, W, true>($w, inputs, runs, out),
                    5 => $entry::<5, W, true>($w, inputs, runs, out),
                    4 => $entry::<4, W, true>($w, inputs, runs, out),
                    3 => $entry::<3, W, true>($w, inputs, runs, out),
                    2 => $entry::<2, W, true>($w, inputs, runs, out),
                    _ => $entry::<1, W, true>($w, inputs, runs, out),
                }
            } else {
                match rows {
                    6 => $entry::<6, W, false>($w, inputs, runs, out),
                    5 => $entry::<5, W, false>($w, inputs, runs, out),
                    4 => $entry::<4, W, false>($w, inputs, runs, out),
                    3 => $entry::<3, W, false>($w, inputs, runs, out),
                    2 => $entry::<2, W, false>($w, inputs, runs, out),
                    _ => $entry::<1, W, false>($w, inputs, runs, out),
                }
            }
        };
    }
    let f16 = format == HalfFormat::F16;
    let widened = || weights.map(WeightsRef::widened_ptr);
    // SAFETY: forwarded to the caller, who vouches that the kernel runs here.
    unsafe {
        match kernel {
            PairKernel::Dot => dot_grid::<W, 1>(
                rows,
                weights.map(WeightsRef::pairs_ptr),
                [inputs],
                runs,
                out.map(|o| [o]),
            ),
            #[cfg(target_arch = "x86_64")]
            PairKernel::Widening(SimdPath::Avx512) => by_rows!(avx512, widened(), f16),
            #[cfg(target_arch = "x86_64")]
            PairKernel::Widening(SimdPath::Avx2) => by_rows!(avx2, widened(), f16),
            #[cfg(target_arch = "aarch64")]
            PairKernel::Widening(SimdPath::Neon) => by_rows!(neon, widened(), f16),
            PairKernel::Widening(_) => by_rows!(portable, widened(), f16),
        }
    }
}

unsafe fn portable<const ROWS: usize, const W: usize, const F16: bool>(
    weights: [*const f32; W],
    inputs: *const u32,
    runs: &[Run],
    out: [*mut f32; W],
) {
    // SAFETY: forwarded.
    unsafe { widening::<Portable, ROWS, 2, W, F16>(weights, inputs, runs, out) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn avx2<const ROWS: usize, const W: usize, const F16: bool>(
    weights: [*const f32; W],
    inputs: *const u32,
    runs: &[Run],
    out: [*mut f32; W],
) {
    // SAFETY: forwarded; compiled for AVX2 and FMA.
    unsafe { widening::<crate::cpu::simd::Avx2, ROWS, 2, W, F16>(weights, inputs, runs, out) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn avx512<const ROWS: usize, const W: usize, const F16: bool>(
    weights: [*const f32; W],
    inputs: *const u32,
    runs: &[Run],
    out: [*mut f32; W],
) {
    // SAFETY: forwarded; compiled for AVX-512F.
    unsafe { widening::<crate::cpu::simd::Avx512, ROWS, 1, W, F16>(weights, inputs, runs, out) }
}

#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn neon<const ROWS: usize, const W: usize, const F16: bool>(
    weights: [*const f32; W],
    inputs: *const u32,
    runs: &[Run],
    out: [*mut f32; W],
) {
    // SAFETY: forwarded; compiled for NEON.
    unsafe { widening::<crate::cpu::simd::Neon, ROWS, 4, W, F16>(weights, inputs, runs, out) }
}

/// `iterations` rounds of [`super::DOT_CHAINS`] independent `vdpbf16ps` chains
/// ([`super::dot_peak_gflops`]).
///
/// # Safety
/// The processor has AVX512_BF16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) unsafe fn dot_chains(iterations: u64) -> f32 {
    use std::arch::x86_64::*;
    let as_bf16 = |v: __m512i| unsafe { std::mem::transmute::<__m512i, __m512bh>(v) };
    // 1.0 and 2^-20 in both halves: the sums grow slowly and stay finite.
    let (x, w) = (
        as_bf16(_mm512_set1_epi32(0x3f80_3f80)),
        as_bf16(_mm512_set1_epi32(0x3580_3580)),
    );
    let mut acc = [_mm512_setzero_ps(); super::DOT_CHAINS];
    for _ in 0..iterations {
        for a in acc.iter_mut() {
            *a = _mm512_dpbf16_ps(*a, w, x);
        }
    }
    acc.iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
}

#[cfg(not(target_arch = "x86_64"))]
pub(super) unsafe fn dot_chains(_: u64) -> f32 {
    unreachable!("vdpbf16ps outside x86-64")
}

/// The dot kernel: `W` tiles of bf16 weight pairs by `X` blocks of bf16 pairs of inputs over
/// the same runs, one `vdpbf16ps` per row, tile, block and pair step into one 16-lane vector
/// of sums (`out[w][x]` the tile of weights `w` over inputs `x`). Each pair step loads the `X`
/// input vectors once and broadcasts each of the `W * ROWS` weight pairs once for all blocks:
/// with two tiles by two blocks, two loads and twelve broadcasts per 24 `vdpbf16ps` instead of
/// one load and twelve broadcasts per twelve. Every sum sees the same pair steps in the same
/// order whatever `W` and `X` are.
///
/// # Safety
/// As `widening`, for every input pointer and output, on a processor with AVX512_BF16.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn dot<const ROWS: usize, const W: usize, const X: usize>(
    weights: [*const u32; W],
    inputs: [*const u32; X],
    runs: &[Run],
    out: [[*mut f32; X]; W],
) {
    use std::arch::x86_64::*;
    // SAFETY: inside the runs and tiles the caller vouches for; compiled for AVX512_BF16.
    unsafe {
        let as_bf16 = |v: __m512i| std::mem::transmute::<__m512i, __m512bh>(v);
        let mut acc = [[[_mm512_setzero_ps(); ROWS]; X]; W];
        for w in 0..W {
            for x in 0..X {
                for r in 0..ROWS {
                    acc[w][x][r] = _mm512_loadu_ps(out[w][x].add(r * TILE_SAMPLES));
                }
            }
        }
        for run in runs {
            let mut wp = weights.map(|w| w.add(run.weights));
            let mut xp = inputs.map(|x| x.add(run.inputs));
            for _ in 0..run.len {
                let mut xv = [as_bf16(_mm512_setzero_si512()); X];
                for x in 0..X {
                    // Past the run's end this only fetches a line that is not used.
                    _mm_prefetch::<_MM_HINT_T0>(xp[x].wrapping_add(PREFETCH_STEPS * TILE_SAMPLES) as *const i8);
                    xv[x] = as_bf16(_mm512_loadu_si512(xp[x] as *const __m512i));
                }
                for w in 0..W {
                    for r in 0..ROWS {
                        let pair = as_bf16(_mm512_set1_epi32(*wp[w].add(r) as i32));
                        for x in 0..X {
                            acc[w][x][r] = _mm512_dpbf16_ps(acc[w][x][r], pair, xv[x]);
                        }
                    }
                }
                for w in 0..W {
                    wp[w] = wp[w].add(TILE_ROWS);
                }
                for x in 0..X {
                    xp[x] = xp[x].add(TILE_SAMPLES);
                }
            }
        }
        for w in 0..W {
            for x in 0..X {
                for r in 0..ROWS {
                    _mm512_storeu_ps(out[w][x].add(r * TILE_SAMPLES), acc[w][x][r]);
                }
            }
        }
    }
}

/// The dot kernel for `rows` rows (1 to `TILE_ROWS`), `W` tiles and `X` blocks: the dispatch
/// from the run-time row count to the compiled instances.
///
/// # Safety
/// As `dot`.
#[cfg(target_arch = "x86_64")]
pub(super) unsafe fn dot_grid<const W: usize, const X: usize>(
    rows: usize,
    weights: [*const u32; W],
    inputs: [*const u32; X],
    runs: &[Run],
    out: [[*mut f32; X]; W],
) {
    // SAFETY: forwarded to the caller.
    unsafe {
        match rows {
            6 => dot::<6, W, X>(weights, inputs, runs, out),
            5 => dot::<5, W, X>(weights, inputs, runs, out),
            4 => dot::<4, W, X>(weights, inputs, runs, out),
            3 => dot::<3, W, X>(weights, inputs, runs, out),
            2 => dot::<2, W, X>(weights, inputs, runs, out),
            _ => dot::<1, W, X>(weights, inputs, runs, out),
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub(super) unsafe fn dot_grid<const W: usize, const X: usize>(
    _: usize,
    _: [*const u32; W],
    _: [*const u32; X],
    _: &[Run],
    _: [[*mut f32; X]; W],
) {
    unreachable!("vdpbf16ps outside x86-64")
}
