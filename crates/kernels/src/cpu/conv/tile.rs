//! The register tile behind the CPU convolutions: a `TILE_ROWS x TILE_SAMPLES` block of
//! outputs (channels by samples), summed over a list of [`Run`]s of the reduction.
//!
//! The convolutions keep their operands with the samples fastest (`[pixel, channel, sample]`,
//! [`TILE_SAMPLES`] samples per pixel and channel) and their weights packed by tiles of
//! [`TILE_ROWS`] channels (`[tap, channel, row]`). One step of the reduction then reads
//! `TILE_SAMPLES` contiguous inputs and `TILE_ROWS` contiguous weights and does
//! `TILE_ROWS * TILE_SAMPLES` multiply-adds, and a run of steps walks both operands in
//! order: the convolution reads its input where it lies, with no im2col copy and no packing
//! of the columns, and a tap on the padding is simply not in any run.
//!
//! For `f32` the tile is written once over [`crate::cpu::simd::F32Simd`] and compiled for
//! each SIMD path: a row's sixteen sums are one AVX-512 vector, two AVX2 vectors or four NEON
//! vectors, and each step broadcasts a row's weight and fuses a multiply-add into them. On
//! AVX-512 a tile's six rows would keep only six sums in flight, too few to hide the
//! multiply-add's latency, so the callers hand it two tiles that share their runs when they
//! have them ([`accumulate_two_tiles_unchecked`], [`accumulate_two_blocks_unchecked`]): twelve
//! vectors of sums, as AVX2's one tile has. `f64` (the reference tests' precision) runs a plain
//! loop.

use crate::cpu::as_f32;
use crate::cpu::simd::{active_path, SimdPath};
use crate::Element;

/// Output channels of one tile.
pub const TILE_ROWS: usize = 6;
/// Samples of one tile: the samples of a chunk, the fastest axis of every operand.
pub const TILE_SAMPLES: usize = 16;
/// Elements of one tile.
pub const TILE_LEN: usize = TILE_ROWS * TILE_SAMPLES;

/// `len` steps of the reduction: step `k` multiplies the `TILE_ROWS` weights at
/// `weights + k * TILE_ROWS` by the `TILE_SAMPLES` inputs at `inputs + k * TILE_SAMPLES`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub weights: usize,
    pub inputs: usize,
    pub len: usize,
}

/// `out[r * TILE_SAMPLES + s] += sum over runs and steps k of weights[run.weights + k *
/// TILE_ROWS + r] * inputs[run.inputs + k * TILE_SAMPLES + s]`: one tile, added onto, on this
/// process's SIMD path.
///
/// Panics if a run reaches past either operand (a bug in the caller, checked once per run).
pub fn accumulate_tile<T: Element>(weights: &[T], inputs: &[T], runs: &[Run], out: &mut [T]) {
    check_runs(runs, weights.len(), inputs.len());
    // SAFETY: the runs were just checked against both operands.
    unsafe { accumulate_rows_unchecked(active_path(), TILE_ROWS, weights, inputs, runs, out) }
}

/// Panics unless every run lies inside weights of `weights_len` and inputs of `inputs_len`
/// elements: the check of [`accumulate_tile`], for callers that run many tiles over the same
/// runs and operands of the same lengths and check them once.
pub fn check_runs(runs: &[Run], weights_len: usize, inputs_len: usize) {
    // Checked arithmetic: a huge run must not wrap around into a passing bound.
    let inside = |start: usize, steps: usize, width: usize, len: usize| {
        steps
            .checked_mul(width)
            .and_then(|n| n.checked_add(start))
            .is_some_and(|end| end <= len)
    };
    for run in runs {
        assert!(
            inside(run.weights, run.len, TILE_ROWS, weights_len)
                && inside(run.inputs, run.len, TILE_SAMPLES, inputs_len),
            "tile: run {run:?} outside its operands"
        );
    }
}

/// [`accumulate_tile`] on `path` without checking the runs, for the first `rows` rows of the
/// tile only: the last tile of a channel count that is not a multiple of [`TILE_ROWS`] holds
/// zero weights in its other rows, whose multiply-adds this skips. The other rows of `out` are
/// left as they are. For callers that check the runs once for many tiles.
///
/// # Safety
/// [`check_runs`] passes for `runs` with `weights.len()` and `inputs.len()`, and `path` is
/// supported by this processor.
pub unsafe fn accumulate_rows_unchecked<T: Element>(
    path: SimdPath,
    rows: usize,
    weights: &[T],
    inputs: &[T],
    runs: &[Run],
    out: &mut [T],
) {
    assert!(out.len() >= TILE_LEN, "tile: output too small");
    assert!((1..=TILE_ROWS).contains(&rows), "tile: {rows} rows");
    if let (Some(w), Some(x)) = (as_f32(weights), as_f32(inputs)) {
        let o = out.as_mut_ptr() as *mut f32;
        // SAFETY: T is f32; the runs lie inside both operands and `path` is supported (the
        // caller's contract), and `out` holds a whole tile.
        unsafe { f32_kernels::grid(path, rows, rows, [w.as_ptr()], [x.as_ptr()], runs, [[o]]) };
        return;
    }
    let mut acc = [T::ZERO; TILE_LEN];
    acc.copy_from_slice(&out[..TILE_LEN]);
    for run in runs {
        let w = &weights[run.weights..][..run.len * TILE_ROWS];
        let x = &inputs[run.inputs..][..run.len * TILE_SAMPLES];
        for (w, x) in w.chunks_exact(TILE_ROWS).zip(x.chunks_exact(TILE_SAMPLES)) {
            for (row, &wr) in acc.chunks_exact_mut(TILE_SAMPLES).zip(&w[..rows]) {
                row.iter_mut().zip(x).for_each(|(a, &xs)| *a += wr * xs);
            }
        }
    }
    out[..TILE_LEN].copy_from_slice(&acc);
}

/// Two tiles of weights over the same runs of the same inputs, each into its own output, the
/// second's first `second_rows` rows (all of the first's): what [`accumulate_rows_unchecked`]
/// does twice, in one pass where the path has registers for both tiles' sums (AVX-512: each
/// input vector is loaded once for twelve rows, or six and `second_rows`). The second tile's
/// other rows of `out[1]` are left as they are; the real rows get the same sums, in the same
/// order, either way.
///
/// # Safety
/// As [`accumulate_rows_unchecked`], for both weights.
pub unsafe fn accumulate_two_tiles_unchecked<T: Element>(
    path: SimdPath,
    second_rows: usize,
    weights: [&[T]; 2],
    inputs: &[T],
    runs: &[Run],
    out: [&mut [T]; 2],
) {
    let [out0, out1] = out;
    assert!(
        out0.len() >= TILE_LEN && out1.len() >= TILE_LEN,
        "tile: output too small"
    );
    if let (SimdPath::Avx512, Some(w0), Some(w1), Some(x)) =
        (path, as_f32(weights[0]), as_f32(weights[1]), as_f32(inputs))
    {
        let o = [[out0.as_mut_ptr() as *mut f32], [out1.as_mut_ptr() as *mut f32]];
        // SAFETY: as in `accumulate_rows_unchecked`, for both weights and outputs.
        unsafe {
            f32_kernels::grid(
                path,
                TILE_ROWS,
                second_rows,
                [w0.as_ptr(), w1.as_ptr()],
                [x.as_ptr()],
                runs,
                o,
            )
        };
        return;
    }
    // SAFETY: forwarded to the caller.
    unsafe {
        accumulate_rows_unchecked(path, TILE_ROWS, weights[0], inputs, runs, out0);
        accumulate_rows_unchecked(path, second_rows, weights[1], inputs, runs, out1);
    }
}

/// One tile of weights over the same runs of two blocks of inputs, each into its own output,
/// for the first `rows` rows: [`accumulate_rows_unchecked`] twice, in one pass where the path
/// has registers for both (AVX-512). The same sums, in the same order, either way.
///
/// # Safety
/// As [`accumulate_rows_unchecked`], for both inputs.
pub unsafe fn accumulate_two_blocks_unchecked<T: Element>(
    path: SimdPath,
    rows: usize,
    weights: &[T],
    inputs: [&[T]; 2],
    runs: &[Run],
    out: [&mut [T]; 2],
) {
    let [out0, out1] = out;
    assert!(
        out0.len() >= TILE_LEN && out1.len() >= TILE_LEN,
        "tile: output too small"
    );
    assert!((1..=TILE_ROWS).contains(&rows), "tile: {rows} rows");
    if let (SimdPath::Avx512, Some(w), Some(x0), Some(x1)) =
        (path, as_f32(weights), as_f32(inputs[0]), as_f32(inputs[1]))
    {
        let o = [[out0.as_mut_ptr() as *mut f32, out1.as_mut_ptr() as *mut f32]];
        // SAFETY: as in `accumulate_rows_unchecked`, for both inputs and outputs.
        unsafe { f32_kernels::grid(path, rows, rows, [w.as_ptr()], [x0.as_ptr(), x1.as_ptr()], runs, o) };
        return;
    }
    // SAFETY: forwarded to the caller.
    unsafe {
        accumulate_rows_unchecked(path, rows, weights, inputs[0], runs, out0);
        accumulate_rows_unchecked(path, rows, weights, inputs[1], runs, out1);
    }
}

/// Two tiles of weights by two blocks of inputs over the same runs, four outputs (`out[w][x]`
/// for weights `w` and inputs `x`), the second tile's first `second_rows` rows: what
/// [`accumulate_two_tiles_unchecked`] does for each block, in one pass where the path has the
/// registers (AVX-512: 24 sums, each step two input loads and twelve broadcasts for 24
/// multiply-adds, against one load and twelve broadcasts for twelve with two tiles alone, which
/// leaves the kernel short of loads). The same sums, in the same order, either way.
///
/// # Safety
/// As [`accumulate_rows_unchecked`], for both weights and both inputs.
pub unsafe fn accumulate_two_tiles_two_blocks_unchecked<T: Element>(
    path: SimdPath,
    second_rows: usize,
    weights: [&[T]; 2],
    inputs: [&[T]; 2],
    runs: &[Run],
    out: [[&mut [T]; 2]; 2],
) {
    let [[out00, out01], [out10, out11]] = out;
    assert!(
        [&out00, &out01, &out10, &out11].iter().all(|o| o.len() >= TILE_LEN),
        "tile: output too small"
    );
    if let (SimdPath::Avx512, Some(w0), Some(w1), Some(x0), Some(x1)) = (
        path,
        as_f32(weights[0]),
        as_f32(weights[1]),
        as_f32(inputs[0]),
        as_f32(inputs[1]),
    ) {
        let f32_out = |o: &mut [T]| o.as_mut_ptr() as *mut f32;
        let o = [[f32_out(out00), f32_out(out01)], [f32_out(out10), f32_out(out11)]];
        // SAFETY: as in `accumulate_rows_unchecked`, for both weights, inputs and all outputs.
        unsafe {
            f32_kernels::grid(
                path,
                TILE_ROWS,
                second_rows,
                [w0.as_ptr(), w1.as_ptr()],
                [x0.as_ptr(), x1.as_ptr()],
                runs,
                o,
            )
        };
        return;
    }
    // SAFETY: forwarded to the caller.
    unsafe {
        accumulate_two_tiles_unchecked(path, second_rows, weights, inputs[0], runs, [out00, out10]);
        accumulate_two_tiles_unchecked(path, second_rows, weights, inputs[1], runs, [out01, out11]);
    }
}

/// The f32 tile kernel, written once over [`F32Simd`], and its entry for each SIMD path.
mod f32_kernels {
    use super::{Run, TILE_ROWS, TILE_SAMPLES};
    use crate::cpu::simd::{F32Simd, Portable, SimdPath};

    /// How many steps ahead the inputs are prefetched (they come from L2).
    const PREFETCH_STEPS: usize = 8;

    /// `W` tiles of weights by `X` blocks of inputs over the same runs, each output tile's first
    /// `ROWS` rows (the last tile's first `LAST_ROWS`, at most `ROWS`) held in vectors of `S`,
    /// `VECTORS` a row (`VECTORS * S::LANES` is [`TILE_SAMPLES`]). Each step loads the `X *
    /// VECTORS` input vectors once, broadcasts each weight of those rows, and fuses a
    /// multiply-add into every sum. The last tile's rows past `LAST_ROWS` are neither summed
    /// nor written: the last pair of tiles of 128 channels (22 tiles, the last with 2 rows)
    /// does 8 rows' work, not 12. Inlined into each path's entry, which is compiled for that
    /// path's instructions; the row loops have constant bounds and unroll.
    ///
    /// # Safety
    /// Every run lies inside every weights and inputs pointer's operand, each output holds a
    /// tile, and the processor has `S`'s instructions (the caller is compiled for them).
    // Index loops over the register block: each index names a row, vector or tile of the
    // block, as the doc above does.
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    unsafe fn accumulate<
        S: F32Simd,
        const ROWS: usize,
        const LAST_ROWS: usize,
        const VECTORS: usize,
        const W: usize,
        const X: usize,
    >(
        weights: [*const f32; W],
        inputs: [*const f32; X],
        runs: &[Run],
        out: [[*mut f32; X]; W],
    ) {
        debug_assert_eq!(VECTORS * S::LANES, TILE_SAMPLES);
        debug_assert!(LAST_ROWS <= ROWS);
        // The rows of tile `w`.
        let rows_of = |w: usize| if w + 1 == W { LAST_ROWS } else { ROWS };
        // SAFETY: the loads, stores and prefetches below stay inside the runs and tiles that
        // the caller vouches for, on a processor with S's instructions.
        unsafe {
            let zero = S::zero();
            let mut acc = [[[[zero; VECTORS]; ROWS]; X]; W];
            for w in 0..W {
                for x in 0..X {
                    for r in 0..rows_of(w) {
                        for v in 0..VECTORS {
                            acc[w][x][r][v] = S::load(out[w][x].add(r * TILE_SAMPLES + v * S::LANES));
                        }
                    }
                }
            }
            for run in runs {
                let mut wp = weights;
                let mut xp = inputs;
                for w in 0..W {
                    wp[w] = wp[w].add(run.weights);
                }
                for x in 0..X {
                    xp[x] = xp[x].add(run.inputs);
                }
                for _ in 0..run.len {
                    let mut xv = [[zero; VECTORS]; X];
                    for x in 0..X {
                        // Past the run's end this only fetches a line that is not used.
                        S::prefetch(xp[x].wrapping_add(PREFETCH_STEPS * TILE_SAMPLES));
                        for v in 0..VECTORS {
                            xv[x][v] = S::load(xp[x].add(v * S::LANES));
                        }
                    }
                    for w in 0..W {
                        for r in 0..rows_of(w) {
                            let weight = S::broadcast(wp[w].add(r));
                            for x in 0..X {
                                for v in 0..VECTORS {
                                    acc[w][x][r][v] = S::mul_add(weight, xv[x][v], acc[w][x][r][v]);
                                }
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
                    for r in 0..rows_of(w) {
                        for v in 0..VECTORS {
                            S::store(out[w][x].add(r * TILE_SAMPLES + v * S::LANES), acc[w][x][r][v]);
                        }
                    }
                }
            }
        }
    }

    /// `accumulate` on `path` for `rows` rows (1 to `TILE_ROWS`), the last tile's
    /// `last_rows` (1 to `rows`; with one tile, `rows`), `W` weight tiles and `X` input blocks:
    /// the dispatch from run-time values to the compiled instances.
    ///
    /// # Safety
    /// As `accumulate`, and `path` is supported by this processor.
    pub(super) unsafe fn grid<const W: usize, const X: usize>(
        path: SimdPath,
        rows: usize,
        last_rows: usize,
        weights: [*const f32; W],
        inputs: [*const f32; X],
        runs: &[Run],
        out: [[*mut f32; X]; W],
    ) {
        debug_assert!(last_rows <= rows && (W > 1 || last_rows == rows));
        /// `$entry::<ROWS, LAST_ROWS, ...>` for the run-time `rows` and `last_rows`: every
        /// tile full but the last (whole tiles, then the last of the channels), or all alike.
        macro_rules! by_rows {
            ($entry:ident) => {
                match (rows, last_rows) {
                    (6, 6) => $entry::<6, 6, W, X>(weights, inputs, runs, out),
                    (6, 5) => $entry::<6, 5, W, X>(weights, inputs, runs, out),
                    (6, 4) => $entry::<6, 4, W, X>(weights, inputs, runs, out),
                    (6, 3) => $entry::<6, 3, W, X>(weights, inputs, runs, out),
                    (6, 2) => $entry::<6, 2, W, X>(weights, inputs, runs, out),
                    (6, _) => $entry::<6, 1, W, X>(weights, inputs, runs, out),
                    (5, _) => $entry::<5, 5, W, X>(weights, inputs, runs, out),
                    (4, _) => $entry::<4, 4, W, X>(weights, inputs, runs, out),
                    (3, _) => $entry::<3, 3, W, X>(weights, inputs, runs, out),
                    (2, _) => $entry::<2, 2, W, X>(weights, inputs, runs, out),
                    _ => $entry::<1, 1, W, X>(weights, inputs, runs, out),
                }
            };
        }
        // SAFETY: forwarded to the caller, who vouches that `path` is supported.
        unsafe {
            match path {
                #[cfg(target_arch = "x86_64")]
                SimdPath::Avx512 => by_rows!(avx512),
                #[cfg(target_arch = "x86_64")]
                SimdPath::Avx2 => by_rows!(avx2),
                #[cfg(target_arch = "aarch64")]
                SimdPath::Neon => by_rows!(neon),
                _ => by_rows!(portable),
            }
        }
    }

    unsafe fn portable<const ROWS: usize, const LAST_ROWS: usize, const W: usize, const X: usize>(
        weights: [*const f32; W],
        inputs: [*const f32; X],
        runs: &[Run],
        out: [[*mut f32; X]; W],
    ) {
        // SAFETY: forwarded.
        unsafe { accumulate::<Portable, ROWS, LAST_ROWS, 2, W, X>(weights, inputs, runs, out) }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2<const ROWS: usize, const LAST_ROWS: usize, const W: usize, const X: usize>(
        weights: [*const f32; W],
        inputs: [*const f32; X],
        runs: &[Run],
        out: [[*mut f32; X]; W],
    ) {
        // SAFETY: forwarded; this function is compiled for AVX2 and FMA.
        unsafe { accumulate::<crate::cpu::simd::Avx2, ROWS, LAST_ROWS, 2, W, X>(weights, inputs, runs, out) }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn avx512<const ROWS: usize, const LAST_ROWS: usize, const W: usize, const X: usize>(
        weights: [*const f32; W],
        inputs: [*const f32; X],
        runs: &[Run],
        out: [[*mut f32; X]; W],
    ) {
        // SAFETY: forwarded; this function is compiled for AVX-512F.
        unsafe { accumulate::<crate::cpu::simd::Avx512, ROWS, LAST_ROWS, 1, W, X>(weights, inputs, runs, out) }
    }

    #[cfg(target_arch = "aarch64")]
    #[target_feature(enable = "neon")]
    unsafe fn neon<const ROWS: usize, const LAST_ROWS: usize, const W: usize, const X: usize>(
        weights: [*const f32; W],
        inputs: [*const f32; X],
        runs: &[Run],
        out: [[*mut f32; X]; W],
    ) {
        // SAFETY: forwarded; this function is compiled for NEON.
        unsafe { accumulate::<crate::cpu::simd::Neon, ROWS, LAST_ROWS, 4, W, X>(weights, inputs, runs, out) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tile (the AVX2 one for f32 where the processor has it) against plain sums, over
    /// runs of different lengths and offsets, in f32 and f64.
    #[test]
    fn tile_matches_plain_sums() {
        let weights: Vec<f64> = (0..600).map(|v| ((v * 37 % 23) as f64) / 11.0 - 1.0).collect();
        let inputs: Vec<f64> = (0..1600).map(|v| ((v * 13 % 19) as f64) / 9.0 - 1.0).collect();
        let runs = [
            Run {
                weights: 0,
                inputs: 0,
                len: 7,
            },
            Run {
                weights: 60,
                inputs: 320,
                len: 1,
            },
            Run {
                weights: 13,
                inputs: 5,
                len: 40,
            },
            Run {
                weights: 0,
                inputs: 0,
                len: 0,
            },
        ];
        let mut want: Vec<f64> = (0..TILE_LEN).map(|v| v as f64).collect();
        for run in &runs {
            for k in 0..run.len {
                for r in 0..TILE_ROWS {
                    for s in 0..TILE_SAMPLES {
                        want[r * TILE_SAMPLES + s] +=
                            weights[run.weights + k * TILE_ROWS + r] * inputs[run.inputs + k * TILE_SAMPLES + s];
                    }
                }
            }
        }
        let mut got: Vec<f64> = (0..TILE_LEN).map(|v| v as f64).collect();
        accumulate_tile(&weights, &inputs, &runs, &mut got);
        assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-12));
        let (w32, x32): (Vec<f32>, Vec<f32>) = (
            weights.iter().map(|&v| v as f32).collect(),
            inputs.iter().map(|&v| v as f32).collect(),
        );
        let mut got32: Vec<f32> = (0..TILE_LEN).map(|v| v as f32).collect();
        accumulate_tile(&w32, &x32, &runs, &mut got32);
        assert!(got32.iter().zip(&want).all(|(&a, b)| (a as f64 - b).abs() < 1e-4));
        // The first `rows` rows only: those as above, the others as they were; on every path.
        check_runs(&runs, weights.len(), inputs.len());
        for path in SimdPath::supported() {
            for rows in 1..=TILE_ROWS {
                let start = |i: usize| i as f64;
                let want_rows: Vec<f64> = (0..TILE_LEN)
                    .map(|i| if i < rows * TILE_SAMPLES { want[i] } else { start(i) })
                    .collect();
                let mut got: Vec<f64> = (0..TILE_LEN).map(start).collect();
                // SAFETY: checked above, and the path is supported.
                unsafe { accumulate_rows_unchecked(path, rows, &weights, &inputs, &runs, &mut got) };
                assert!(
                    got.iter().zip(&want_rows).all(|(a, b)| (a - b).abs() < 1e-12),
                    "{path}: {rows} rows"
                );
                let mut got32: Vec<f32> = (0..TILE_LEN).map(|i| start(i) as f32).collect();
                // SAFETY: the same runs, over operands of the same lengths.
                unsafe { accumulate_rows_unchecked(path, rows, &w32, &x32, &runs, &mut got32) };
                assert!(
                    got32.iter().zip(&want_rows).all(|(&a, b)| (a as f64 - b).abs() < 1e-4),
                    "{path}: {rows} rows, f32"
                );
            }
        }
    }

    /// Two tiles, two blocks, or two tiles by two blocks at a time give, in their real rows, the
    /// bits of one at a time.
    #[test]
    fn pairs_of_tiles_and_of_blocks_give_the_bits_of_single_tiles() {
        let weights: Vec<f32> = (0..1200).map(|v| ((v * 37 % 23) as f32) / 11.0 - 1.0).collect();
        let inputs: Vec<f32> = (0..3200).map(|v| ((v * 13 % 19) as f32) / 9.0 - 1.0).collect();
        let runs = [
            Run {
                weights: 3,
                inputs: 16,
                len: 33,
            },
            Run {
                weights: 0,
                inputs: 0,
                len: 9,
            },
        ];
        let (w0, w1) = (&weights[..600], &weights[600..]);
        let (x0, x1) = (&inputs[..1600], &inputs[1600..]);
        check_runs(&runs, 600, 1600);
        let start = || -> Vec<f32> { (0..TILE_LEN).map(|v| v as f32 / 7.0).collect() };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for path in SimdPath::supported() {
            for rows in 1..=TILE_ROWS {
                // SAFETY (every call below): the runs were checked against operands of these
                // lengths, and the path is supported.
                let single = |w: &[f32], x: &[f32], rows: usize| {
                    let mut out = start();
                    unsafe { accumulate_rows_unchecked(path, rows, w, x, &runs, &mut out) };
                    out
                };
                let (mut a, mut b) = (start(), start());
                unsafe { accumulate_two_tiles_unchecked(path, rows, [w0, w1], x0, &runs, [&mut a, &mut b]) };
                assert_eq!(bits(&a), bits(&single(w0, x0, TILE_ROWS)), "{path}: first of two tiles");
                let real = rows * TILE_SAMPLES;
                assert_eq!(
                    bits(&b[..real]),
                    bits(&single(w1, x0, rows)[..real]),
                    "{path}: second tile, {rows} rows"
                );
                let (mut a, mut b) = (start(), start());
                unsafe { accumulate_two_blocks_unchecked(path, rows, w0, [x0, x1], &runs, [&mut a, &mut b]) };
                assert_eq!(
                    bits(&a),
                    bits(&single(w0, x0, rows)),
                    "{path}: first of two blocks, {rows} rows"
                );
                assert_eq!(
                    bits(&b),
                    bits(&single(w0, x1, rows)),
                    "{path}: second block, {rows} rows"
                );
                let mut four = [start(), start(), start(), start()];
                let [a, b, c, d] = &mut four;
                unsafe {
                    accumulate_two_tiles_two_blocks_unchecked(path, rows, [w0, w1], [x0, x1], &runs, [[a, b], [c, d]])
                };
                for (out, w, x, name) in [
                    (0, w0, x0, "first tile, first block"),
                    (1, w0, x1, "first tile, second block"),
                ] {
                    assert_eq!(bits(&four[out]), bits(&single(w, x, TILE_ROWS)), "{path}: {name}");
                }
                for (out, w, x, name) in [
                    (2, w1, x0, "second tile, first block"),
                    (3, w1, x1, "second tile, second block"),
                ] {
                    assert_eq!(
                        bits(&four[out][..real]),
                        bits(&single(w, x, rows)[..real]),
                        "{path}: {name}, {rows} rows"
                    );
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "outside its operands")]
    fn a_run_whose_length_wraps_around_is_refused() {
        // 6 * len and 16 * len both wrap to 0 in 64 bits: unchecked bounds would pass.
        let (w, x) = (vec![0.0f32; 12], vec![0.0f32; 16]);
        let mut out = [0.0f32; TILE_LEN];
        let len = 1usize << (usize::BITS - 1);
        accumulate_tile(
            &w,
            &x,
            &[Run {
                weights: 0,
                inputs: 0,
                len,
            }],
            &mut out,
        );
    }

    #[test]
    #[should_panic(expected = "outside its operands")]
    fn a_run_past_the_inputs_is_refused() {
        let (w, x) = (vec![0.0f32; 12], vec![0.0f32; 16]);
        let mut out = [0.0f32; TILE_LEN];
        accumulate_tile(
            &w,
            &x,
            &[Run {
                weights: 0,
                inputs: 0,
                len: 2,
            }],
            &mut out,
        );
    }
}
