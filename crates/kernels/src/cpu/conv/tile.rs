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
//! [`accumulate_tile`] is written once for any [`Element`]; on x86-64 with AVX2 and FMA, `f32`
//! goes through the same loop written with intrinsics (two 8-lane vectors per row, twelve
//! accumulators in registers), which the compiler does not find on its own.

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
/// TILE_ROWS + r] * inputs[run.inputs + k * TILE_SAMPLES + s]`: one tile, added onto.
///
/// Panics if a run reaches past either operand (a bug in the caller, checked once per run).
pub fn accumulate_tile<T: Element>(weights: &[T], inputs: &[T], runs: &[Run], out: &mut [T]) {
    check_runs(runs, weights.len(), inputs.len());
    // SAFETY: the runs were just checked against both operands.
    unsafe { accumulate_rows_unchecked(TILE_ROWS, weights, inputs, runs, out) }
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

/// [`accumulate_tile`] without checking the runs, for the first `rows` rows of the tile only:
/// the last tile of a channel count that is not a multiple of [`TILE_ROWS`] holds zero weights
/// in its other rows, whose multiply-adds this skips. The other rows of `out` are left as they
/// are. For callers that check the runs once for many tiles.
///
/// # Safety
/// [`check_runs`] passes for `runs` with `weights.len()` and `inputs.len()`.
pub unsafe fn accumulate_rows_unchecked<T: Element>(
    rows: usize,
    weights: &[T],
    inputs: &[T],
    runs: &[Run],
    out: &mut [T],
) {
    assert!(out.len() >= TILE_LEN, "tile: output too small");
    assert!((1..=TILE_ROWS).contains(&rows), "tile: {rows} rows");
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::is_f32_on_avx2_fma::<T>() {
        let (w, x, o) = (
            weights.as_ptr() as *const f32,
            inputs.as_ptr() as *const f32,
            out.as_mut_ptr() as *mut f32,
        );
        // SAFETY: T is f32 (same layout); the runs lie inside both operands (the caller's
        // contract), `out` holds a whole tile, and the processor has AVX2 and FMA.
        unsafe {
            match rows {
                6 => avx2::accumulate_tile::<6>(w, x, runs, o),
                5 => avx2::accumulate_tile::<5>(w, x, runs, o),
                4 => avx2::accumulate_tile::<4>(w, x, runs, o),
                3 => avx2::accumulate_tile::<3>(w, x, runs, o),
                2 => avx2::accumulate_tile::<2>(w, x, runs, o),
                _ => avx2::accumulate_tile::<1>(w, x, runs, o),
            }
        }
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

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Run, TILE_ROWS, TILE_SAMPLES};
    use std::arch::x86_64::*;

    /// How many steps ahead the inputs are prefetched.
    const PREFETCH_STEPS: usize = 8;

    /// The portable loop of [`super::accumulate_rows_unchecked`] for f32, for the first `ROWS`
    /// rows: row `r`'s sixteen sums are two vectors, each step broadcasts the row's weight and
    /// fuses a multiply-add into both.
    ///
    /// # Safety
    /// Every run lies inside `weights` and `inputs`, `out` has room for a tile, `ROWS <=
    /// TILE_ROWS`, and the processor has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn accumulate_tile<const ROWS: usize>(
        weights: *const f32,
        inputs: *const f32,
        runs: &[Run],
        out: *mut f32,
    ) {
        let mut acc = [[_mm256_setzero_ps(); 2]; ROWS];
        for (r, acc) in acc.iter_mut().enumerate() {
            acc[0] = _mm256_loadu_ps(out.add(r * TILE_SAMPLES));
            acc[1] = _mm256_loadu_ps(out.add(r * TILE_SAMPLES + 8));
        }
        for run in runs {
            let (mut w, mut x) = (weights.add(run.weights), inputs.add(run.inputs));
            for _ in 0..run.len {
                // The inputs come from L2; ask for them a few steps ahead (past the run's
                // end it only fetches a line that is not used).
                _mm_prefetch::<_MM_HINT_T0>(x.wrapping_add(PREFETCH_STEPS * TILE_SAMPLES) as *const i8);
                let x0 = _mm256_loadu_ps(x);
                let x1 = _mm256_loadu_ps(x.add(8));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let wr = _mm256_broadcast_ss(&*w.add(r));
                    acc[0] = _mm256_fmadd_ps(wr, x0, acc[0]);
                    acc[1] = _mm256_fmadd_ps(wr, x1, acc[1]);
                }
                w = w.add(TILE_ROWS);
                x = x.add(TILE_SAMPLES);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.add(r * TILE_SAMPLES), acc[0]);
            _mm256_storeu_ps(out.add(r * TILE_SAMPLES + 8), acc[1]);
        }
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
        // The first `rows` rows only: those as above, the others as they were.
        for rows in 1..=TILE_ROWS {
            let start = |i: usize| i as f64;
            let want_rows: Vec<f64> = (0..TILE_LEN)
                .map(|i| if i < rows * TILE_SAMPLES { want[i] } else { start(i) })
                .collect();
            let mut got: Vec<f64> = (0..TILE_LEN).map(start).collect();
            check_runs(&runs, weights.len(), inputs.len());
            // SAFETY: just checked.
            unsafe { accumulate_rows_unchecked(rows, &weights, &inputs, &runs, &mut got) };
            assert!(
                got.iter().zip(&want_rows).all(|(a, b)| (a - b).abs() < 1e-12),
                "{rows} rows"
            );
            let mut got32: Vec<f32> = (0..TILE_LEN).map(|i| start(i) as f32).collect();
            // SAFETY: the same runs, over operands of the same lengths.
            unsafe { accumulate_rows_unchecked(rows, &w32, &x32, &runs, &mut got32) };
            assert!(
                got32.iter().zip(&want_rows).all(|(&a, b)| (a as f64 - b).abs() < 1e-4),
                "{rows} rows, f32"
            );
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
