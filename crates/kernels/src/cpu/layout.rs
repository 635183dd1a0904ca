//! Layout kernels: strided gathers (permute, narrow, broadcast_to) and strided writes (pad,
//! concat). The tensor crate keeps its storage contiguous; these produce the new contiguous
//! buffers.

use super::PARALLEL_THRESHOLD;
use crate::shape::contiguous_strides;
use crate::Element;
use rayon::prelude::*;

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
}
