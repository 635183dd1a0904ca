//! Reductions: sum and max over any set of dims.
//!
//! Every reduction is phrased as "reduce `x` of `shape` to `out_shape`", where `out_shape` has
//! the same rank and a 1 in each reduced dim (PyTorch's `keepdim=True`). Dropping the kept dims
//! is a free reshape in the tensor crate.

use super::PARALLEL_THRESHOLD;
use crate::shape::contiguous_strides;
use crate::Element;
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Max,
}

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
    assert_eq!(shape.len(), out_shape.len(), "reduce_to: rank mismatch");
    let out_n: usize = out_shape.iter().product();
    if out_n == 0 {
        return Vec::new();
    }
    if out_n == 1 {
        return vec![reduce_all(op, x)];
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
    let sizes: Vec<usize> = groups.iter().map(|g| g.0).collect();
    let strides = contiguous_strides(&sizes);
    let kept: Vec<usize> = (0..groups.len()).filter(|&g| !groups[g].1).collect();
    let reduced: Vec<usize> = (0..groups.len()).filter(|&g| groups[g].1).collect();
    // Offsets in `x` of every element of one reduction, relative to its first element.
    let red_sizes: Vec<usize> = reduced.iter().map(|&g| sizes[g]).collect();
    let red_n: usize = red_sizes.iter().product();
    let red_inner = contiguous_strides(&red_sizes);
    let red_offsets: Vec<usize> = (0..red_n)
        .map(|i| {
            reduced
                .iter()
                .enumerate()
                .map(|(k, &g)| (i / red_inner[k]) % red_sizes[k] * strides[g])
                .sum()
        })
        .collect();
    let kept_sizes: Vec<usize> = kept.iter().map(|&g| sizes[g]).collect();
    let kept_inner = contiguous_strides(&kept_sizes);
    let body = |(o, out): (usize, &mut T)| {
        let base: usize = kept
            .iter()
            .enumerate()
            .map(|(k, &g)| (o / kept_inner[k]) % kept_sizes[k] * strides[g])
            .sum();
        let mut acc = op.identity();
        for &r in &red_offsets {
            acc = op.combine(acc, x[base + r]);
        }
        *out = acc;
    };
    let mut out = vec![T::ZERO; out_n];
    if x.len() >= PARALLEL_THRESHOLD {
        out.par_iter_mut().enumerate().for_each(body);
    } else {
        out.iter_mut().enumerate().for_each(body);
    }
    out
}

fn reduce_all<T: Element>(op: ReduceOp, x: &[T]) -> T {
    let fold = |c: &[T]| c.iter().fold(op.identity(), |a, &v| op.combine(a, v));
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
}
