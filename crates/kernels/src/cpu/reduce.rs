//! Reductions: sum and max over any set of dims.
//!
//! Every reduction is phrased as "reduce `x` of `shape` to `out_shape`", where `out_shape` has
//! the same rank and a 1 in each reduced dim (PyTorch's `keepdim=True`). Dropping the kept dims
//! is a free reshape in the tensor crate.

use super::simd::{active_path, compiled_for, SimdPath};
use super::PARALLEL_THRESHOLD;
use crate::op::ReduceOp;
use crate::shape::contiguous_strides;
use crate::Element;
use rayon::prelude::*;

impl ReduceOp {
    fn identity<T: Element>(self) -> T {
        match self {
            ReduceOp::Sum => T::ZERO,
            ReduceOp::Max => T::NEG_INFINITY,
        }
    }
    #[inline]
    fn combine<T: Element>(self, acc: T, x: T) -> T {
        match self {
            ReduceOp::Sum => acc + x,
            // NaN propagates, as in PyTorch.
            ReduceOp::Max => {
                if x > acc || x.is_nan() {
                    x
                } else {
                    acc
                }
            }
        }
    }
}

/// Reduce `x` (of `shape`) to `out_shape` (same rank; each dim equal or 1).
pub fn reduce_to<T: Element>(op: ReduceOp, x: &[T], shape: &[usize], out_shape: &[usize]) -> Vec<T> {
    reduce_to_on(active_path(), op, x, shape, out_shape)
}

/// [`reduce_to`] with its loops compiled for `path` ([`compiled_for`]): the same sums, in the
/// same order, on every path.
pub fn reduce_to_on<T: Element>(path: SimdPath, op: ReduceOp, x: &[T], shape: &[usize], out_shape: &[usize]) -> Vec<T> {
    assert_eq!(shape.len(), out_shape.len(), "reduce_to: rank mismatch");
    let out_n: usize = out_shape.iter().product();
    if out_n == 0 {
        return Vec::new();
    }
    if out_n == 1 {
        return vec![reduce_all(path, op, x)];
    }
    // Merge neighbouring dims that are both kept or both reduced: [N, C, H, W] -> [1, C, 1, 1]
    // becomes three groups, so the loops below have as few levels as possible.
    let mut groups: Vec<(usize, bool)> = Vec::new(); // (size, reduced)
    for (&s, &o) in shape.iter().zip(out_shape) {
        if s == 1 {
            continue;
        }
        let reduced = o == 1;
        match groups.last_mut() {
            Some((size, r)) if *r == reduced => *size *= s,
            _ => groups.push((s, reduced)),
        }
    }
    let &(inner, inner_reduced) = groups.last().expect("more than one output, so some dim is kept");
    let strides = contiguous_strides(&groups.iter().map(|g| g.0).collect::<Vec<_>>());
    // The innermost group is a contiguous run in `x`; the loops below go over the other groups
    // by offsets, and over the run with the vector units.
    let outer = &groups[..groups.len() - 1];
    // Offsets in `x` of the outer kept indices, and of the outer reduced ones.
    let kept_offsets = group_offsets(outer, &strides, false);
    let reduced_offsets = group_offsets(outer, &strides, true);
    let mut out = vec![T::ZERO; out_n];
    let parallel = x.len() >= PARALLEL_THRESHOLD;
    if inner_reduced && reduced_offsets.len() > 1 && (1..=COLUMNS_MAX).contains(&inner) {
        // Each output reduces runs of `inner` contiguous elements, one per outer reduced index:
        // a block of outputs at a time, their runs of each reduced index (neighbours in `x`:
        // a bias gradient's `[N, C, H, W]` gives a block of channels of one sample) added
        // element by element onto the block's columns, which are then reduced output by
        // output. In memory order and with whole vectors; run by run (`reduce_run` of each
        // run, then the runs' sums), the short runs of a conv's bias gradient (a 4x4 or 7x7 map)
        // spent their time folding lanes, at 7-12 GB/s on one thread of the Intel Xeon. The
        // order is fixed by the shape (each output is summed the same way whatever block it
        // falls in), so any split gives the same bits.
        let per_task = (COLUMNS_MAX / inner)
            .min(out_n.div_ceil(4 * rayon::current_num_threads()))
            .max(1);
        let body = |columns: &mut Vec<T>, (block, out): (usize, &mut [T])| {
            columns.clear();
            columns.resize(out.len() * inner, op.identity());
            let offsets = &kept_offsets[block * per_task..][..out.len()];
            // Whether the block's runs follow one another in `x` (as a bias gradient's
            // channels do): then each reduced index adds one long run onto all the columns.
            // (Consecutive kept offsets are at least `inner` apart, so a span of exactly
            // `inner` a step means every step is `inner`.)
            let adjacent = offsets[offsets.len() - 1] - offsets[0] == (offsets.len() - 1) * inner;
            let add = |columns: &mut [T], run: &[T]| {
                columns
                    .iter_mut()
                    .zip(run)
                    .for_each(|(acc, &v)| *acc = op.combine(*acc, v))
            };
            for &r in &reduced_offsets {
                if adjacent {
                    let len = columns.len();
                    add(columns, &x[offsets[0] + r..][..len]);
                } else {
                    for (column, &o) in columns.chunks_exact_mut(inner).zip(offsets) {
                        add(column, &x[o + r..][..inner]);
                    }
                }
            }
            for (out, column) in out.iter_mut().zip(columns.chunks_exact(inner)) {
                *out = reduce_run(op, column);
            }
        };
        if parallel {
            out.par_chunks_mut(per_task)
                .enumerate()
                .for_each_init(Vec::new, |columns, task| compiled_for(path, || body(columns, task)));
        } else {
            let mut columns = Vec::new();
            compiled_for(path, || {
                out.chunks_mut(per_task)
                    .enumerate()
                    .for_each(|task| body(&mut columns, task))
            });
        }
    } else if inner_reduced {
        // Each output reduces runs of `inner` contiguous elements, one per outer reduced index
        // (a single run, runs too long for a block of columns in L1, or empty ones).
        let body = |(o, out): (usize, &mut T)| {
            *out = reduced_offsets.iter().fold(op.identity(), |acc, &r| {
                op.combine(acc, reduce_run(op, &x[kept_offsets[o] + r..][..inner]))
            });
        };
        if parallel {
            out.par_iter_mut()
                .enumerate()
                .for_each(|task| compiled_for(path, || body(task)));
        } else {
            compiled_for(path, || out.iter_mut().enumerate().for_each(body));
        }
    } else {
        // The outputs come in rows of `inner`, contiguous in `x` too: each reduced offset adds
        // a row of `x` onto a row of the output, element by element.
        // Elements of a row per task.
        const PART: usize = 1024;
        let body = |(row, first, part): (usize, usize, &mut [T])| {
            part.fill(op.identity());
            for &r in &reduced_offsets {
                let src = &x[kept_offsets[row] + r + first..][..part.len()];
                part.iter_mut()
                    .zip(src)
                    .for_each(|(acc, &v)| *acc = op.combine(*acc, v));
            }
        };
        if parallel {
            out.par_chunks_mut(inner)
                .enumerate()
                .flat_map(|(row, out)| {
                    out.par_chunks_mut(PART)
                        .enumerate()
                        .map(move |(j, p)| (row, j * PART, p))
                })
                .for_each(|task| compiled_for(path, || body(task)));
        } else {
            compiled_for(path, || {
                for (row, out) in out.chunks_mut(inner).enumerate() {
                    for (j, p) in out.chunks_mut(PART).enumerate() {
                        body((row, j * PART, p));
                    }
                }
            });
        }
    }
    out
}

/// The offsets in `x` of the kept (or the reduced) indices of `groups`, in row-major order of
/// those indices.
fn group_offsets(groups: &[(usize, bool)], strides: &[usize], reduced: bool) -> Vec<usize> {
    let mut offsets = vec![0];
    for (&(size, r), &stride) in groups.iter().zip(strides) {
        if r == reduced {
            offsets = offsets
                .iter()
                .flat_map(|&o| (0..size).map(move |i| o + i * stride))
                .collect();
        }
    }
    offsets
}

/// The longest runs that [`reduce_to_on`] adds up as columns (a block of outputs' columns, at
/// most this many elements, stays in L1): 16 KiB in f32.
const COLUMNS_MAX: usize = 4096;

/// Lanes a contiguous run is reduced in: independent accumulators that the compiler keeps in
/// vector registers, instead of one serial chain of dependent additions.
const LANES: usize = 8;

/// `run` reduced by `op`, in [`LANES`] interleaved partial results combined at the end.
fn reduce_run<T: Element>(op: ReduceOp, run: &[T]) -> T {
    match op {
        ReduceOp::Sum => reduce_run_with(run, T::ZERO, |a, v| a + v),
        ReduceOp::Max => reduce_run_with(run, T::NEG_INFINITY, |a, v| ReduceOp::Max.combine(a, v)),
    }
}

#[inline(always)]
fn reduce_run_with<T: Element>(run: &[T], identity: T, combine: impl Fn(T, T) -> T) -> T {
    let mut lanes = [identity; LANES];
    let blocks = run.chunks_exact(LANES);
    let rest = blocks.remainder();
    for block in blocks {
        for (lane, &v) in lanes.iter_mut().zip(block) {
            *lane = combine(*lane, v);
        }
    }
    let acc = lanes.into_iter().fold(identity, &combine);
    rest.iter().fold(acc, |a, &v| combine(a, v))
}

fn reduce_all<T: Element>(path: SimdPath, op: ReduceOp, x: &[T]) -> T {
    let fold = |c: &[T]| compiled_for(path, || reduce_run(op, c));
    if x.len() >= PARALLEL_THRESHOLD {
        x.par_chunks(8192)
            .map(fold)
            .collect::<Vec<T>>()
            .into_iter()
            .fold(op.identity(), |a, v| op.combine(a, v))
    } else {
        // Pairwise blocks keep f32 sums accurate for long vectors.
        x.chunks(1024).map(fold).fold(op.identity(), |a, v| op.combine(a, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_over_any_dims() {
        let x: Vec<f64> = (0..24).map(|v| v as f64).collect();
        // [2, 3, 4] summed over dim 1.
        let out = reduce_to(ReduceOp::Sum, &x, &[2, 3, 4], &[2, 1, 4]);
        assert_eq!(out, vec![12.0, 15.0, 18.0, 21.0, 48.0, 51.0, 54.0, 57.0]);
        // over dims 0 and 2
        let out = reduce_to(ReduceOp::Sum, &x, &[2, 3, 4], &[1, 3, 1]);
        assert_eq!(out, vec![6.0 + 54.0, 22.0 + 70.0, 38.0 + 86.0]);
        let out = reduce_to(ReduceOp::Max, &x, &[2, 3, 4], &[2, 1, 1]);
        assert_eq!(out, vec![11.0, 23.0]);
        assert_eq!(reduce_to(ReduceOp::Sum, &x, &[2, 3, 4], &[1, 1, 1]), vec![276.0]);
    }

    /// Element by element: each element of `x` combined into its output in index order.
    fn naive(op: ReduceOp, x: &[f64], shape: &[usize], out_shape: &[usize]) -> Vec<f64> {
        let mut out = vec![op.identity(); out_shape.iter().product()];
        let (strides, out_strides) = (contiguous_strides(shape), contiguous_strides(out_shape));
        for (i, &v) in x.iter().enumerate() {
            let o: usize = (0..shape.len())
                .map(|d| (i / strides[d]) % shape[d] % out_shape[d] * out_strides[d])
                .sum();
            out[o] = op.combine(out[o], v);
        }
        out
    }

    #[test]
    fn every_pattern_of_kept_and_reduced_dims_matches_element_by_element() {
        // Integer values: sums are exact in any order. Sizes cover runs shorter and longer than
        // the lanes, rows longer than a part, inputs past the parallel threshold, and empty dims.
        let shapes: [&[usize]; 9] = [
            &[3, 5, 7],
            &[2, 9, 1, 11],
            &[64, 3, 16, 16],
            &[5, 2500],
            &[37, 1, 3],
            &[4, 4, 2, 3, 5],
            // Empty dims: an empty run under kept outputs, and empty kept dims.
            &[2, 3, 0],
            &[2, 0, 4],
            &[0, 3, 5],
        ];
        for shape in shapes {
            let n: usize = shape.iter().product();
            let x: Vec<f64> = (0..n).map(|i| ((i * 7919) % 101) as f64 - 50.0).collect();
            // Every subset of dims reduced.
            for mask in 0..(1usize << shape.len()) {
                let out_shape: Vec<usize> = (0..shape.len())
                    .map(|d| if mask >> d & 1 == 1 { 1 } else { shape[d] })
                    .collect();
                for op in [ReduceOp::Sum, ReduceOp::Max] {
                    assert_eq!(
                        reduce_to(op, &x, shape, &out_shape),
                        naive(op, &x, shape, &out_shape),
                        "{op:?} of {shape:?} to {out_shape:?}"
                    );
                }
            }
        }
    }

    /// Every SIMD path sums in the portable path's order, to its bits: rounding values, runs
    /// longer and shorter than the lanes, inputs past the parallel threshold.
    #[test]
    fn every_simd_path_gives_the_portable_bits() {
        let shapes: [&[usize]; 4] = [&[64, 3, 13, 13], &[5, 2501], &[37, 1, 3], &[128, 64, 14, 14]];
        for shape in shapes {
            let n: usize = shape.iter().product();
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 7919 % 1013) as f32 - 506.0) * 1e-3 + 1e-7)
                .collect();
            for mask in 0..(1usize << shape.len()) {
                let out_shape: Vec<usize> = (0..shape.len())
                    .map(|d| if mask >> d & 1 == 1 { 1 } else { shape[d] })
                    .collect();
                for op in [ReduceOp::Sum, ReduceOp::Max] {
                    let want = reduce_to_on(SimdPath::Portable, op, &x, shape, &out_shape);
                    for path in SimdPath::supported() {
                        let got = reduce_to_on(path, op, &x, shape, &out_shape);
                        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(&got), bits(&want), "{path}: {op:?} of {shape:?} to {out_shape:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn max_propagates_nan_from_anywhere_in_a_run() {
        let mut x = vec![1.0f32; 3 * 20];
        x[20 + 17] = f32::NAN; // in the remainder past the lanes of row 1
        x[2 * 20 + 3] = f32::NAN; // in a lane of row 2
        let out = reduce_to(ReduceOp::Max, &x, &[3, 20], &[3, 1]);
        assert_eq!(out[0], 1.0);
        assert!(out[1].is_nan() && out[2].is_nan());
        // Added up as columns (a bias gradient's pattern): [2, 3, 20] to [1, 3, 1].
        let mut x = vec![1.0f32; 2 * 3 * 20];
        x[20 + 5] = f32::NAN; // sample 0, channel 1
        x[3 * 20 + 2 * 20 + 19] = f32::NAN; // sample 1, channel 2
        let out = reduce_to(ReduceOp::Max, &x, &[2, 3, 20], &[1, 3, 1]);
        assert_eq!(out[0], 1.0);
        assert!(out[1].is_nan() && out[2].is_nan());
    }
}
