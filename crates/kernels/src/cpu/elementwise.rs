//! Elementwise kernels: unary maps (activations, their derivative masks, scalar arithmetic) and
//! binary ops with NumPy broadcasting.

use super::conv::bf16::HalfFloat;
use super::simd::{active_path, compiled_for, SimdPath};
use super::{assume_init_vec, uninit_vec, PARALLEL_THRESHOLD};
use crate::op::{BinaryOp, UnaryOp};
use crate::shape::broadcast_strides;
use crate::Element;
use rayon::prelude::*;
use std::mem::MaybeUninit;

impl UnaryOp {
    // Always inlined: [`unary`] calls it with a constant variant, so the match folds away and
    // each variant's loop is compiled (and vectorised) on its own.
    #[inline(always)]
    pub(crate) fn apply<T: Element>(self, x: T) -> T {
        let t = T::from_f64;
        let mask = |b: bool| if b { T::ONE } else { T::ZERO };
        match self {
            UnaryOp::Neg => -x,
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log => x.ln(),
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Abs => x.abs(),
            UnaryOp::Sign => {
                if x > T::ZERO {
                    T::ONE
                } else if x < T::ZERO {
                    -T::ONE
                } else {
                    T::ZERO
                }
            }
            // `x < 0`, not `x <= 0`: NaN and -0 pass through, as in PyTorch.
            UnaryOp::Relu => {
                if x < T::ZERO {
                    T::ZERO
                } else {
                    x
                }
            }
            UnaryOp::LeakyRelu(s) => {
                if x > T::ZERO {
                    x
                } else {
                    x * t(s)
                }
            }
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Sigmoid => {
                // Two branches so that exp never overflows.
                if x >= T::ZERO {
                    T::ONE / (T::ONE + (-x).exp())
                } else {
                    let e = x.exp();
                    e / (T::ONE + e)
                }
            }
            UnaryOp::Softplus => x.max(T::ZERO) + (-x.abs()).exp().ln_1p(),
            UnaryOp::Pow(p) => {
                if p == 2.0 {
                    x * x
                } else if p.fract() == 0.0 && p.abs() < 64.0 {
                    x.powi(p as i32)
                } else {
                    x.powf(t(p))
                }
            }
            // Two selects on comparisons, as `optim::clamp_in_place` (WGAN's weight clipping):
            // NaN fails both and stays NaN, -0 stays -0 against a bound of 0, and with lo > hi
            // every number becomes hi, as in PyTorch. (A loop of selects vectorises; `max`,
            // `min` and an `is_nan` branch did not.)
            UnaryOp::Clamp(lo, hi) => {
                let v = if x < t(lo) { t(lo) } else { x };
                if v > t(hi) {
                    t(hi)
                } else {
                    v
                }
            }
            UnaryOp::InRange(lo, hi) => mask(x >= t(lo) && x <= t(hi)),
            UnaryOp::AddScalar(c) => x + t(c),
            UnaryOp::MulScalar(c) => x * t(c),
            UnaryOp::DivScalar(c) => x / t(c),
            UnaryOp::GtScalar(c) => mask(x > t(c)),
            UnaryOp::LtScalar(c) => mask(x < t(c)),
            UnaryOp::EqScalar(c) => mask(x == t(c)),
        }
    }
}

/// `$run(f)`, with `f` the closure `|v| op(v)` for `$op`'s variant.
///
/// The op is matched once, outside the loop: each arm passes a closure over a fixed variant,
/// so the per-element `match` in `UnaryOp::apply` folds away and each loop can be vectorised.
macro_rules! with_unary_fn {
    ($op:expr, $run:expr) => {{
        use UnaryOp as U;
        match $op {
            U::Neg => $run(|v| U::Neg.apply(v)),
            U::Exp => $run(|v| U::Exp.apply(v)),
            U::Log => $run(|v| U::Log.apply(v)),
            U::Sqrt => $run(|v| U::Sqrt.apply(v)),
            U::Abs => $run(|v| U::Abs.apply(v)),
            U::Sign => $run(|v| U::Sign.apply(v)),
            U::Relu => $run(|v| U::Relu.apply(v)),
            U::LeakyRelu(s) => $run(|v| U::LeakyRelu(s).apply(v)),
            U::Tanh => $run(|v| U::Tanh.apply(v)),
            U::Sigmoid => $run(|v| U::Sigmoid.apply(v)),
            U::Softplus => $run(|v| U::Softplus.apply(v)),
            U::Pow(2.0) => $run(|v| v * v),
            U::Pow(p) => $run(|v| U::Pow(p).apply(v)),
            U::Clamp(lo, hi) => $run(|v| U::Clamp(lo, hi).apply(v)),
            U::InRange(lo, hi) => $run(|v| U::InRange(lo, hi).apply(v)),
            U::AddScalar(c) => $run(|v| U::AddScalar(c).apply(v)),
            U::MulScalar(c) => $run(|v| U::MulScalar(c).apply(v)),
            U::DivScalar(c) => $run(|v| U::DivScalar(c).apply(v)),
            U::GtScalar(c) => $run(|v| U::GtScalar(c).apply(v)),
            U::LtScalar(c) => $run(|v| U::LtScalar(c).apply(v)),
            U::EqScalar(c) => $run(|v| U::EqScalar(c).apply(v)),
        }
    }};
}

/// `out[i] = op(x[i])`.
pub fn unary<T: Element>(op: UnaryOp, x: &[T]) -> Vec<T> {
    unary_on(active_path(), op, x)
}

/// [`unary`] with its loop compiled for `path` ([`compiled_for`]): the same bits on every path.
pub fn unary_on<T: Element>(path: SimdPath, op: UnaryOp, x: &[T]) -> Vec<T> {
    with_unary_fn!(op, |f| map(path, x, f))
}

/// `x[i] = op(x[i])`, on one thread, the loop compiled for `path` (the same bits on every
/// path): for kernels that apply an activation to the part of their output a task has just
/// written, while it is in cache (the convolutions' epilogue), on the kernel's own path.
pub fn unary_in_place<T: Element>(path: SimdPath, op: UnaryOp, x: &mut [T]) {
    with_unary_fn!(op, |f| map_in_place(path, x, f))
}

fn map_in_place<T: Element>(path: SimdPath, x: &mut [T], f: impl Fn(T) -> T) {
    compiled_for(path, || x.iter_mut().for_each(|v| *v = f(*v)));
}

/// `out[i] = f(x[i])`, in parallel chunks when `x` is large.
fn map<T: Element>(path: SimdPath, x: &[T], f: impl Fn(T) -> T + Sync) -> Vec<T> {
    written_once(path, x.len(), |start, out| {
        let x = &x[start..start + out.len()];
        out.iter_mut().zip(x).for_each(|(o, &x)| {
            o.write(f(x));
        });
    })
}

/// Elements per parallel task of the elementwise kernels.
const CHUNK: usize = 4096;

/// A vector of `len` elements computed in place, without zeroing it first: `fill(start, out)`
/// must write every slot of `out`, elements `start..start + out.len()`; it is called on chunks
/// in parallel when `len` is large, each compiled for `path`.
fn written_once<T: Send>(path: SimdPath, len: usize, fill: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync) -> Vec<T> {
    let mut out = uninit_vec(len);
    if len >= PARALLEL_THRESHOLD {
        out.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(i, chunk)| compiled_for(path, || fill(i * CHUNK, chunk)));
    } else {
        compiled_for(path, || fill(0, &mut out));
    }
    // SAFETY: every caller's `fill` zips its chunk with an input slice of exactly the chunk's
    // length (slicing would panic otherwise) and writes each slot, so all `len` elements are
    // initialised.
    unsafe { assume_init_vec(out) }
}

impl BinaryOp {
    // Always inlined, for the same reason as `UnaryOp::apply`.
    #[inline(always)]
    fn apply<T: Element>(self, a: T, b: T) -> T {
        let mask = |c: bool| if c { T::ONE } else { T::ZERO };
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            // NaN in either operand gives NaN, as in PyTorch (`f64::max` would drop it).
            BinaryOp::Maximum => {
                if a > b || a.is_nan() {
                    a
                } else {
                    b
                }
            }
            BinaryOp::Minimum => {
                if a < b || a.is_nan() {
                    a
                } else {
                    b
                }
            }
            BinaryOp::Gt => mask(a > b),
            BinaryOp::Ge => mask(a >= b),
            BinaryOp::Lt => mask(a < b),
            BinaryOp::Le => mask(a <= b),
            BinaryOp::Eq => mask(a == b),
            // PyTorch's threshold_backward: NaN passes the gradient, and an infinite gradient
            // where `b <= 0` gives 0, not `inf * 0`.
            BinaryOp::ReluGrad => {
                if b <= T::ZERO {
                    T::ZERO
                } else {
                    a
                }
            }
            BinaryOp::LeakyReluGrad(slope) => {
                if b > T::ZERO {
                    a
                } else {
                    a * T::from_f64(slope)
                }
            }
            BinaryOp::DivNonzero => {
                if b != T::ZERO {
                    a / b
                } else {
                    a
                }
            }
        }
    }
}

/// `$run(f)`, with `f` the closure `|x, y| op(x, y)` for `$op`'s variant: as
/// [`with_unary_fn`], one loop per variant, each free of the per-element `match`.
macro_rules! with_binary_fn {
    ($op:expr, $run:expr) => {{
        use BinaryOp as B;
        match $op {
            B::Add => $run(|x, y| B::Add.apply(x, y)),
            B::Sub => $run(|x, y| B::Sub.apply(x, y)),
            B::Mul => $run(|x, y| B::Mul.apply(x, y)),
            B::Div => $run(|x, y| B::Div.apply(x, y)),
            B::Maximum => $run(|x, y| B::Maximum.apply(x, y)),
            B::Minimum => $run(|x, y| B::Minimum.apply(x, y)),
            B::Gt => $run(|x, y| B::Gt.apply(x, y)),
            B::Ge => $run(|x, y| B::Ge.apply(x, y)),
            B::Lt => $run(|x, y| B::Lt.apply(x, y)),
            B::Le => $run(|x, y| B::Le.apply(x, y)),
            B::Eq => $run(|x, y| B::Eq.apply(x, y)),
            B::ReluGrad => $run(|x, y| B::ReluGrad.apply(x, y)),
            B::LeakyReluGrad(s) => $run(|x, y| B::LeakyReluGrad(s).apply(x, y)),
            B::DivNonzero => $run(|x, y| B::DivNonzero.apply(x, y)),
        }
    }};
}

/// `out = op(a, b)` with NumPy broadcasting to `out_shape` (which the caller computed with
/// [`crate::broadcast_shapes`]).
pub fn binary<T: Element>(
    op: BinaryOp,
    a: &[T],
    a_shape: &[usize],
    b: &[T],
    b_shape: &[usize],
    out_shape: &[usize],
) -> Vec<T> {
    binary_on(active_path(), op, a, a_shape, b, b_shape, out_shape)
}

/// [`binary`] with its loops compiled for `path` ([`compiled_for`]): the same bits on every
/// path.
pub fn binary_on<T: Element>(
    path: SimdPath,
    op: BinaryOp,
    a: &[T],
    a_shape: &[usize],
    b: &[T],
    b_shape: &[usize],
    out_shape: &[usize],
) -> Vec<T> {
    let shapes = (a, a_shape, b, b_shape);
    with_binary_fn!(op, |f| zip_map(path, shapes, out_shape, f))
}

/// Two operands with their shapes: `(a, a_shape, b, b_shape)`.
type Operands<'a, T> = (&'a [T], &'a [usize], &'a [T], &'a [usize]);

/// `out = op(a, b)` with broadcasting: the body of [`binary`] for one fixed op.
fn zip_map<T: Element>(
    path: SimdPath,
    (a, a_shape, b, b_shape): Operands<'_, T>,
    out_shape: &[usize],
    op: impl Fn(T, T) -> T + Sync,
) -> Vec<T> {
    let n: usize = out_shape.iter().product();
    if n == 0 {
        return Vec::new();
    }
    if a_shape == b_shape {
        return written_once(path, n, |start, out| {
            let (a, b) = (&a[start..start + out.len()], &b[start..start + out.len()]);
            for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
                o.write(op(a, b));
            }
        });
    }
    if b.len() == 1 {
        let b = b[0];
        return written_once(path, n, |start, out| {
            let a = &a[start..start + out.len()];
            out.iter_mut().zip(a).for_each(|(o, &a)| {
                o.write(op(a, b));
            });
        });
    }
    // General case: merge the dims that both operands walk contiguously (or both repeat), so
    // that a bias `[1, O, 1, 1]` against `[N, O, H, W]` is `[N, O, H*W]` with rows of `H*W`,
    // then walk the output row by row, each row reading `a` and `b` with their strides.
    let dims = coalesce(
        out_shape,
        &broadcast_strides(a_shape, out_shape),
        &broadcast_strides(b_shape, out_shape),
    );
    let &(row, sa_last, sb_last) = dims.last().expect("a non-empty output has a dim");
    let outer = &dims[..dims.len() - 1];
    // Rows per parallel task: at least `CHUNK` elements each.
    let rows_per_task = CHUNK.div_ceil(row).max(1);
    let body = |(task, out): (usize, &mut [MaybeUninit<T>])| {
        // The multi-index of the task's first row over the outer dims, then counted up row by
        // row (no divisions in the loop).
        let mut index: Vec<usize> = vec![0; outer.len()];
        let mut rest = task * rows_per_task;
        for (d, &(size, _, _)) in outer.iter().enumerate().rev() {
            index[d] = rest % size;
            rest /= size;
        }
        for o in out.chunks_mut(row) {
            let oa: usize = outer.iter().zip(&index).map(|(&(_, sa, _), &i)| i * sa).sum();
            let ob: usize = outer.iter().zip(&index).map(|(&(_, _, sb), &i)| i * sb).sum();
            match (sa_last, sb_last) {
                (1, 1) => {
                    let (a, b) = (&a[oa..oa + row], &b[ob..ob + row]);
                    o.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (&a, &b))| {
                        o.write(op(a, b));
                    });
                }
                (1, 0) => {
                    let (a, b) = (&a[oa..oa + row], b[ob]);
                    o.iter_mut().zip(a).for_each(|(o, &a)| {
                        o.write(op(a, b));
                    });
                }
                (0, 1) => {
                    let (a, b) = (a[oa], &b[ob..ob + row]);
                    o.iter_mut().zip(b).for_each(|(o, &b)| {
                        o.write(op(a, b));
                    });
                }
                _ => {
                    for (j, o) in o.iter_mut().enumerate() {
                        o.write(op(a[oa + j * sa_last], b[ob + j * sb_last]));
                    }
                }
            }
            for d in (0..outer.len()).rev() {
                index[d] += 1;
                if index[d] < outer[d].0 {
                    break;
                }
                index[d] = 0;
            }
        }
    };
    let mut out = uninit_vec(n);
    if n >= PARALLEL_THRESHOLD {
        out.par_chunks_mut(rows_per_task * row)
            .enumerate()
            .for_each(|task| compiled_for(path, || body(task)));
    } else {
        compiled_for(path, || out.chunks_mut(rows_per_task * row).enumerate().for_each(body));
    }
    // SAFETY: the tasks' chunks cover `out`, each row of a chunk is `row` long (`n` is a
    // multiple of `row`), and every element of every row is written above.
    unsafe { assume_init_vec(out) }
}

/// The dims of an output with the strides of two operands, `(size, stride in a, stride in
/// b)`, without size-1 dims and with neighbours merged where both operands step from one into
/// the other as through one dim. At least one dim.
fn coalesce(shape: &[usize], sa: &[usize], sb: &[usize]) -> Vec<(usize, usize, usize)> {
    let mut dims: Vec<(usize, usize, usize)> = Vec::new();
    for ((&size, &a), &b) in shape.iter().zip(sa).zip(sb) {
        if size == 1 {
            continue;
        }
        match dims.last_mut() {
            Some(last) if last.1 == a * size && last.2 == b * size => *last = (last.0 * size, a, b),
            _ => dims.push((size, a, b)),
        }
    }
    if dims.is_empty() {
        dims.push((1, 0, 0));
    }
    dims
}

/// Elements a 16-bit op widens at a time: the f32 copies of a block stay in L1.
const HALF_BLOCK: usize = 512;

/// `out[i] = op(x[i])` of a 16-bit tensor by the half rule (widened to f32, the f32 op,
/// rounded once), a block at a time: the bits of widening the whole tensor, [`unary`] in f32
/// and the cast back, without the two f32 copies of it in memory.
pub fn unary_half<H: HalfFloat>(op: UnaryOp, x: &[H]) -> Vec<H> {
    with_unary_fn!(op, |f| map_half(x, f))
}

/// `out[i] = op(a[i], b[i])` of two 16-bit tensors of one shape by the half rule, a block at a
/// time, as [`unary_half`]: the bits of [`binary`] in f32 between casts.
pub fn binary_half<H: HalfFloat>(op: BinaryOp, a: &[H], b: &[H]) -> Vec<H> {
    assert_eq!(a.len(), b.len(), "binary_half: operands of one shape");
    with_binary_fn!(op, |f| zip_map_half(a, b, f))
}

fn map_half<H: HalfFloat>(x: &[H], f: impl Fn(f32) -> f32 + Sync) -> Vec<H> {
    written_once(active_path(), x.len(), |start, out| {
        let mut wide = [0f32; HALF_BLOCK];
        for (i, out) in out.chunks_mut(HALF_BLOCK).enumerate() {
            let (at, wide) = (start + i * HALF_BLOCK, &mut wide[..out.len()]);
            H::widen_into(&x[at..at + wide.len()], wide);
            wide.iter_mut().for_each(|v| *v = f(*v));
            H::narrow_into(wide, out);
        }
    })
}

fn zip_map_half<H: HalfFloat>(a: &[H], b: &[H], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<H> {
    written_once(active_path(), a.len(), |start, out| {
        let (mut wide_a, mut wide_b) = ([0f32; HALF_BLOCK], [0f32; HALF_BLOCK]);
        for (i, out) in out.chunks_mut(HALF_BLOCK).enumerate() {
            let (at, n) = (start + i * HALF_BLOCK, out.len());
            let (wide_a, wide_b) = (&mut wide_a[..n], &mut wide_b[..n]);
            H::widen_into(&a[at..at + n], wide_a);
            H::widen_into(&b[at..at + n], wide_b);
            wide_a.iter_mut().zip(&*wide_b).for_each(|(x, &y)| *x = f(*x, y));
            H::narrow_into(wide_a, out);
        }
    })
}

/// `out[i] = if cond[i] != 0 { a[i] } else { b[i] }`; all three of one shape.
pub fn where_cond<T: Element>(cond: &[T], a: &[T], b: &[T]) -> Vec<T> {
    assert!(
        a.len() == cond.len() && b.len() == cond.len(),
        "where_cond: operands of one shape"
    );
    written_once(active_path(), cond.len(), |start, out| {
        let (cond, a, b) = (
            &cond[start..][..out.len()],
            &a[start..][..out.len()],
            &b[start..][..out.len()],
        );
        for (o, ((&c, &a), &b)) in out.iter_mut().zip(cond.iter().zip(a).zip(b)) {
            o.write(if c != T::ZERO { a } else { b });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::contiguous_strides;

    #[test]
    fn broadcasting_binary_matches_hand_computation() {
        // [2, 3] + [3] and [2, 1] * [1, 3]
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let out = binary(BinaryOp::Add, &a, &[2, 3], &[10.0, 20.0, 30.0], &[3], &[2, 3]);
        assert_eq!(out, vec![11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
        let out = binary(
            BinaryOp::Mul,
            &[1.0, 2.0],
            &[2, 1],
            &[1.0, 10.0, 100.0],
            &[1, 3],
            &[2, 3],
        );
        assert_eq!(out, vec![1.0, 10.0, 100.0, 2.0, 20.0, 200.0]);
    }

    /// The merged-dims walk against element-by-element indexing, over broadcasts in every
    /// position, including outputs large enough to run in parallel tasks.
    #[test]
    fn broadcasting_matches_naive_indexing() {
        let cases: [(&[usize], &[usize]); 8] = [
            (&[2, 3, 4, 5], &[1, 3, 1, 1]),
            (&[3, 1, 5], &[4, 1]),
            (&[2, 1, 3], &[1, 4, 1]),
            (&[5], &[2, 5]),
            (&[1, 1], &[3, 1]),
            (&[64, 128, 7, 7], &[128, 1, 1]),
            (&[64, 1, 1, 1], &[64, 1, 28, 28]),
            (&[7, 1, 9], &[7, 300, 1]),
        ];
        for (a_shape, b_shape) in cases {
            let out_shape = crate::broadcast_shapes(a_shape, b_shape).unwrap();
            let a: Vec<f64> = (0..a_shape.iter().product::<usize>()).map(|v| v as f64).collect();
            let b: Vec<f64> = (0..b_shape.iter().product::<usize>())
                .map(|v| (v * 7 % 13) as f64)
                .collect();
            let (sa, sb) = (
                broadcast_strides(a_shape, &out_shape),
                broadcast_strides(b_shape, &out_shape),
            );
            let out_strides = contiguous_strides(&out_shape);
            let n: usize = out_shape.iter().product();
            let want: Vec<f64> = (0..n)
                .map(|i| {
                    let (mut ia, mut ib) = (0, 0);
                    for d in 0..out_shape.len() {
                        let idx = i / out_strides[d] % out_shape[d];
                        ia += idx * sa[d];
                        ib += idx * sb[d];
                    }
                    a[ia] * 10.0 - b[ib]
                })
                .collect();
            let got = binary(
                BinaryOp::Sub,
                &a.iter().map(|v| v * 10.0).collect::<Vec<_>>(),
                a_shape,
                &b,
                b_shape,
                &out_shape,
            );
            assert_eq!(got, want, "{a_shape:?} with {b_shape:?}");
        }
    }

    /// `clamp` gives the bits of the weight clipping (`optim::clamp_in_place`) on NaN,
    /// infinities, -0 and bounds the wrong way round.
    #[test]
    fn clamp_matches_the_weight_clipping() {
        let x = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
            0.0,
            -0.5,
            0.25,
            3.0,
            -3.0,
        ];
        for (lo, hi) in [(-1.0, 1.0), (0.0, 0.5), (-0.0, 0.0), (1.0, -1.0)] {
            let got = unary(UnaryOp::Clamp(lo, hi), &x);
            let mut want = x.to_vec();
            crate::cpu::optim::clamp_in_place(&mut want, lo, hi);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
            assert_eq!(bits(&got), bits(&want), "clamp({lo}, {hi})");
        }
        // PyTorch's: -0 passes a bound of 0, NaN passes, lo > hi gives hi.
        let got = unary(UnaryOp::Clamp(0.0, 1.0), &[-0.0f32, f32::NAN]);
        assert!(got[0] == 0.0 && got[0].is_sign_negative() && got[1].is_nan());
        assert_eq!(unary(UnaryOp::Clamp(1.0, -1.0), &[0.5f32, 2.0, -2.0]), vec![-1.0; 3]);
    }

    #[test]
    fn stable_softplus_and_sigmoid() {
        let out = unary(UnaryOp::Softplus, &[-1000.0f64, 0.0, 1000.0]);
        assert_eq!(out[0], 0.0);
        assert!((out[1] - 2f64.ln()).abs() < 1e-15);
        assert_eq!(out[2], 1000.0);
        let out = unary(UnaryOp::Sigmoid, &[-1000.0f32, 0.0, 1000.0]);
        assert_eq!(out, vec![0.0, 0.5, 1.0]);
    }
}

/// The 16-bit block paths against the whole-tensor half rule (widen, the f32 kernel, round
/// once), bit for bit: every op, bf16 and f16, lengths below and past a block and past the
/// parallel threshold (none a multiple of a block), values including zeros of both signs,
/// infinities, NaN and subnormals of both formats.
#[cfg(test)]
mod half_tests {
    use super::*;
    use half::{bf16, f16};

    fn values<H: HalfFloat>(n: usize) -> Vec<H> {
        let special = [
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            1e-40,
            -3e-39,
            5e-8,
            -1e-6,
        ];
        (0..n)
            .map(|i| {
                let v = if i % 7 == 3 {
                    special[(i / 7) % special.len()]
                } else {
                    // Deterministic spread over signs and magnitudes.
                    let x = ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f32 / (1u64 << 24) as f32;
                    (x - 0.5) * 8.0
                };
                H::from_f32_rounded(v)
            })
            .collect()
    }

    fn bits<H: HalfFloat>(v: &[H]) -> Vec<u16> {
        v.iter().map(|h| h.bits()).collect()
    }

    fn check<H: HalfFloat>() {
        let (unary_ops, binary_ops) = (UnaryOp::EVERY, BinaryOp::EVERY);
        for n in [0, 1, 37, HALF_BLOCK + 3, PARALLEL_THRESHOLD + 4099] {
            let (a, b): (Vec<H>, Vec<H>) = (values(n), values(n + 11)[11..].to_vec());
            for op in unary_ops {
                let whole = H::narrow_all(&unary(op, &H::widen_all(&a)));
                assert_eq!(bits(&unary_half(op, &a)), bits(&whole), "{op:?} n = {n}");
            }
            for op in binary_ops {
                let shape = [n];
                let wide = binary(op, &H::widen_all(&a), &shape, &H::widen_all(&b), &shape, &shape);
                let whole = H::narrow_all(&wide);
                assert_eq!(bits(&binary_half(op, &a, &b)), bits(&whole), "{op:?} n = {n}");
            }
        }
    }

    #[test]
    fn half_blocks_give_the_widened_ops_bits() {
        check::<bf16>();
        check::<f16>();
    }
}

/// Every SIMD path against the portable one, bit for bit: each loop compiled for a wider path
/// is vectorised by the compiler, which may neither reassociate nor contract the arithmetic,
/// so the bits must not move. Every op, f32 and f64, the same-shape, scalar and broadcasting
/// loops, lengths below and past the parallel threshold (none a multiple of a vector), values
/// including zeros of both signs, infinities, NaN and subnormals.
#[cfg(test)]
mod path_tests {
    use super::*;

    fn values<T: Element>(n: usize, seed: u64) -> Vec<T> {
        let special = [
            0.0,
            -0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            1e-310,
            -4e-39,
            1e-45,
            3.5,
        ];
        (0..n as u64)
            .map(|i| {
                if i % 5 == 2 {
                    return T::from_f64(special[((i / 5 + seed) % special.len() as u64) as usize]);
                }
                let x = ((i + seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f64 / (1u64 << 24) as f64;
                T::from_f64((x - 0.5) * 6.0)
            })
            .collect()
    }

    fn bits<T: Element>(v: &[T]) -> Vec<u64> {
        v.iter().map(|x| x.to_f64().to_bits()).collect()
    }

    fn check<T: Element>() {
        let (unary_ops, binary_ops) = (UnaryOp::EVERY, BinaryOp::EVERY);
        let portable = SimdPath::Portable;
        for n in [1, 37, 1003, PARALLEL_THRESHOLD + 4099] {
            let (a, b) = (values::<T>(n, 0), values::<T>(n, 3));
            let shape = [n];
            for path in SimdPath::supported() {
                for op in unary_ops {
                    let (got, want) = (unary_on(path, op, &a), unary_on(portable, op, &a));
                    assert_eq!(bits(&got), bits(&want), "{path}: {op:?}, n = {n}");
                }
                for op in binary_ops {
                    let got = binary_on(path, op, &a, &shape, &b, &shape, &shape);
                    let want = binary_on(portable, op, &a, &shape, &b, &shape, &shape);
                    assert_eq!(bits(&got), bits(&want), "{path}: {op:?}, n = {n}");
                    let got = binary_on(path, op, &a, &shape, &b[..1], &[1], &shape);
                    let want = binary_on(portable, op, &a, &shape, &b[..1], &[1], &shape);
                    assert_eq!(bits(&got), bits(&want), "{path}: {op:?} by a scalar, n = {n}");
                }
            }
        }
        // Broadcasting: a bias `[1, 13, 1, 1]` against `[11, 13, 7, 29]` (past the parallel
        // threshold), and operands broadcast in the middle.
        let (a_shape, b_shape, out_shape) = ([11, 13, 7, 29], [1, 13, 1, 1], [11, 13, 7, 29]);
        let (a, b) = (values::<T>(11 * 13 * 7 * 29, 1), values::<T>(13, 2));
        let (c_shape, d_shape, cd_shape) = ([5, 1, 33], [5, 9, 1], [5, 9, 33]);
        let (c, d) = (values::<T>(5 * 33, 4), values::<T>(5 * 9, 5));
        for path in SimdPath::supported() {
            for op in binary_ops {
                let got = binary_on(path, op, &a, &a_shape, &b, &b_shape, &out_shape);
                let want = binary_on(portable, op, &a, &a_shape, &b, &b_shape, &out_shape);
                assert_eq!(bits(&got), bits(&want), "{path}: {op:?} with a bias");
                let got = binary_on(path, op, &c, &c_shape, &d, &d_shape, &cd_shape);
                let want = binary_on(portable, op, &c, &c_shape, &d, &d_shape, &cd_shape);
                assert_eq!(bits(&got), bits(&want), "{path}: {op:?} broadcast both ways");
            }
        }
    }

    #[test]
    fn every_simd_path_gives_the_portable_bits() {
        check::<f32>();
        check::<f64>();
    }
}
