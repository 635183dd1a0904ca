//! Fused optimiser updates, in place: one pass over a parameter, its gradient and its state.
//! The formulas are PyTorch's (`torch.optim.SGD`, `RMSprop`, `Adam`, without weight decay).

use super::simd::{active_path, compiled_for, SimdPath};
use super::PARALLEL_THRESHOLD;
use crate::op::OptimizerUpdate;
use crate::Element;
use rayon::prelude::*;

/// Elements per parallel task of the updates.
const CHUNK: usize = 1 << 14;

/// `update(param, grad, state)` over matching chunks of the three, in parallel when the
/// parameter is large (a critic's last conv has 800 K weights; the update is a pass over
/// memory that two threads do in half the time), each chunk's loop compiled for `path`
/// ([`compiled_for`]: the same bits on every path).
fn chunked<T: Element>(
    path: SimdPath,
    param: &mut [T],
    grad: &[T],
    state: &mut [T],
    update: impl Fn(&mut [T], &[T], &mut [T]) + Sync,
) {
    assert!(
        grad.len() == param.len() && state.len() == param.len(),
        "optimiser: lengths differ"
    );
    if param.len() < PARALLEL_THRESHOLD {
        return compiled_for(path, || update(param, grad, state));
    }
    param
        .par_chunks_mut(CHUNK)
        .zip(grad.par_chunks(CHUNK))
        .zip(state.par_chunks_mut(CHUNK))
        .for_each(|((p, g), s)| compiled_for(path, || update(p, g, s)));
}

/// SGD with momentum (dampening 0): `buf = momentum buf + g; p -= lr buf`. With momentum 0,
/// `buf` is not touched and may be empty.
pub fn sgd<T: Element>(param: &mut [T], grad: &[T], buf: &mut [T], lr: f64, momentum: f64) {
    let (lr, mom) = (T::from_f64(lr), T::from_f64(momentum));
    if momentum == 0.0 {
        compiled_for(active_path(), || {
            param.iter_mut().zip(grad).for_each(|(p, &g)| *p = *p - lr * g)
        });
        return;
    }
    compiled_for(active_path(), || {
        for ((p, &g), b) in param.iter_mut().zip(grad).zip(buf.iter_mut()) {
            *b = mom * *b + g;
            *p = *p - lr * *b;
        }
    });
}

/// RMSProp: `sq = alpha sq + (1 - alpha) g^2; p -= lr g / (sqrt(sq) + eps)`.
pub fn rmsprop<T: Element>(param: &mut [T], grad: &[T], square_avg: &mut [T], lr: f64, alpha: f64, eps: f64) {
    rmsprop_on(active_path(), param, grad, square_avg, lr, alpha, eps)
}

/// [`rmsprop`] compiled for `path`.
pub fn rmsprop_on<T: Element>(
    path: SimdPath,
    param: &mut [T],
    grad: &[T],
    square_avg: &mut [T],
    lr: f64,
    alpha: f64,
    eps: f64,
) {
    let (lr, alpha, one_minus_alpha, eps) = (
        T::from_f64(lr),
        T::from_f64(alpha),
        T::from_f64(1.0 - alpha),
        T::from_f64(eps),
    );
    chunked(path, param, grad, square_avg, |param, grad, square_avg| {
        for ((p, &g), s) in param.iter_mut().zip(grad).zip(square_avg.iter_mut()) {
            *s = alpha * *s + one_minus_alpha * g * g;
            *p = *p - lr * g / (s.sqrt() + eps);
        }
    });
}

/// Adam at step `step` (counted from 1): `m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
/// p -= (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)`.
#[allow(clippy::too_many_arguments)]
pub fn adam<T: Element>(
    param: &mut [T],
    grad: &[T],
    exp_avg: &mut [T],
    exp_avg_sq: &mut [T],
    lr: f64,
    betas: (f64, f64),
    eps: f64,
    step: u64,
) {
    adam_on(active_path(), param, grad, exp_avg, exp_avg_sq, lr, betas, eps, step)
}

/// [`adam`] compiled for `path`.
#[allow(clippy::too_many_arguments)]
pub fn adam_on<T: Element>(
    path: SimdPath,
    param: &mut [T],
    grad: &[T],
    exp_avg: &mut [T],
    exp_avg_sq: &mut [T],
    lr: f64,
    betas: (f64, f64),
    eps: f64,
    step: u64,
) {
    let (step_size, inv_bc2) = OptimizerUpdate::adam_step_scalars(lr, betas, step);
    let step_size = T::from_f64(step_size);
    let (b1, b2) = (T::from_f64(betas.0), T::from_f64(betas.1));
    let (c1, c2) = (T::from_f64(1.0 - betas.0), T::from_f64(1.0 - betas.1));
    let (inv_bc2, eps) = (T::from_f64(inv_bc2), T::from_f64(eps));
    let update = |param: &mut [T], grad: &[T], exp_avg: &mut [T], exp_avg_sq: &mut [T]| {
        for (((p, &g), m), v) in param
            .iter_mut()
            .zip(grad)
            .zip(exp_avg.iter_mut())
            .zip(exp_avg_sq.iter_mut())
        {
            *m = b1 * *m + c1 * g;
            *v = b2 * *v + c2 * g * g;
            *p = *p - step_size * *m / (v.sqrt() * inv_bc2 + eps);
        }
    };
    let n = param.len();
    assert!(
        grad.len() == n && exp_avg.len() == n && exp_avg_sq.len() == n,
        "optimiser: lengths differ"
    );
    if n < PARALLEL_THRESHOLD {
        return compiled_for(path, || update(param, grad, exp_avg, exp_avg_sq));
    }
    param
        .par_chunks_mut(CHUNK)
        .zip(grad.par_chunks(CHUNK))
        .zip(exp_avg.par_chunks_mut(CHUNK))
        .zip(exp_avg_sq.par_chunks_mut(CHUNK))
        .for_each(|(((p, g), m), v)| compiled_for(path, || update(p, g, m, v)));
}

/// Clamp into `[min, max]` in place: WGAN's weight clipping. As PyTorch's `clamp_`: NaN stays
/// NaN (a diverged parameter is not hidden by the clipping), and with `min > max` every number
/// becomes `max`.
pub fn clamp_in_place<T: Element>(param: &mut [T], min: f64, max: f64) {
    clamp_in_place_on(active_path(), param, min, max)
}

/// [`clamp_in_place`] compiled for `path`.
pub fn clamp_in_place_on<T: Element>(path: SimdPath, param: &mut [T], min: f64, max: f64) {
    let (lo, hi) = (T::from_f64(min), T::from_f64(max));
    // Two selects on comparisons, which NaN fails both of: a loop the compiler vectorises
    // (with `max`/`min` and an `is_nan` branch it ran element by element, 1.2 ns an element,
    // longer than the RMSProp update before it in a WGAN step).
    let clamp = |param: &mut [T]| {
        param.iter_mut().for_each(|p| {
            let v = if *p < lo { lo } else { *p };
            *p = if v > hi { hi } else { v };
        })
    };
    if param.len() < PARALLEL_THRESHOLD {
        compiled_for(path, || clamp(param));
    } else {
        param
            .par_chunks_mut(CHUNK)
            .for_each(|chunk| compiled_for(path, || clamp(chunk)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a parameter large enough to be updated by parallel chunks, every element gets what
    /// the update of that element alone gives.
    #[test]
    fn large_parameters_update_as_each_element_alone() {
        let n = 3 * PARALLEL_THRESHOLD + 5;
        let grad: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32) / 50.0 - 1.0).collect();
        let start: Vec<f32> = (0..n).map(|i| ((i * 13 % 97) as f32) / 97.0 - 0.5).collect();
        let (mut p, mut sq) = (start.clone(), vec![0.25f32; n]);
        rmsprop(&mut p, &grad, &mut sq, 5e-5, 0.99, 1e-8);
        let (mut pa, mut m, mut v) = (start.clone(), vec![0.1f32; n], vec![0.2f32; n]);
        adam(&mut pa, &grad, &mut m, &mut v, 1e-4, (0.0, 0.9), 1e-8, 3);
        let mut clamped = start.clone();
        clamp_in_place(&mut clamped, -0.01, 0.01);
        for i in (0..n).step_by(997).chain([n - 1]) {
            let (mut p1, mut s1) = ([start[i]], [0.25f32]);
            rmsprop(&mut p1, &grad[i..=i], &mut s1, 5e-5, 0.99, 1e-8);
            assert_eq!((p[i], sq[i]), (p1[0], s1[0]), "rmsprop at {i}");
            let (mut p1, mut m1, mut v1) = ([start[i]], [0.1f32], [0.2f32]);
            adam(&mut p1, &grad[i..=i], &mut m1, &mut v1, 1e-4, (0.0, 0.9), 1e-8, 3);
            assert_eq!((pa[i], m[i], v[i]), (p1[0], m1[0], v1[0]), "adam at {i}");
            assert_eq!(clamped[i], start[i].clamp(-0.01, 0.01));
        }
    }

    /// Every SIMD path updates to the portable path's bits (the divisions and square roots
    /// are rounded alike at any width), on parameters with parallel chunks and a tail.
    #[test]
    fn every_simd_path_gives_the_portable_bits() {
        let n = 2 * PARALLEL_THRESHOLD + 13;
        let grad: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32) / 50.0 - 1.0).collect();
        let start: Vec<f32> = (0..n).map(|i| ((i * 13 % 97) as f32) / 97.0 - 0.5).collect();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let run = |path: SimdPath| {
            let (mut p, mut sq) = (start.clone(), vec![0.25f32; n]);
            rmsprop_on(path, &mut p, &grad, &mut sq, 5e-5, 0.99, 1e-8);
            let (mut pa, mut m, mut v) = (start.clone(), vec![0.1f32; n], vec![0.2f32; n]);
            adam_on(path, &mut pa, &grad, &mut m, &mut v, 1e-4, (0.0, 0.9), 1e-8, 3);
            let mut clamped = start.clone();
            clamp_in_place_on(path, &mut clamped, -0.01, 0.01);
            [p, sq, pa, m, v, clamped].map(|v| bits(&v))
        };
        let want = run(SimdPath::Portable);
        for path in SimdPath::supported() {
            assert!(run(path) == want, "{path}: the updates differ from the portable path's");
        }
    }

    /// PyTorch's `clamp_`: NaN stays NaN, infinities are clamped, `min > max` gives `max`
    /// everywhere, values inside are untouched (their bits too: -0 stays -0).
    #[test]
    fn clamp_keeps_nan_and_follows_pytorch_at_the_edges() {
        let start = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.005, -0.5, 0.5];
        let mut p = start;
        clamp_in_place(&mut p, -0.01, 0.01);
        assert!(p[0].is_nan());
        assert_eq!(&p[1..], &[0.01, -0.01, -0.0, 0.005, -0.01, 0.01]);
        assert!(p[3].is_sign_negative());
        let mut q = start;
        clamp_in_place(&mut q, 0.3, 0.1);
        assert!(q[0].is_nan());
        assert!(q[1..].iter().all(|&v| v == 0.1), "{q:?}");
    }

    #[test]
    fn adam_first_step_moves_each_weight_by_lr() {
        // At step 1 the bias-corrected update is lr * g / (|g| + eps'), about lr * sign(g).
        let mut p = [1.0f64, 1.0];
        let (mut m, mut v) = ([0.0; 2], [0.0; 2]);
        adam(&mut p, &[0.5, -2.0], &mut m, &mut v, 0.1, (0.9, 0.999), 1e-8, 1);
        assert!((p[0] - 0.9).abs() < 1e-6 && (p[1] - 1.1).abs() < 1e-6, "{p:?}");
    }

    #[test]
    fn rmsprop_matches_pytorch_formula() {
        let mut p = [1.0f64];
        let mut s = [0.0];
        rmsprop(&mut p, &[2.0], &mut s, 0.01, 0.99, 1e-8);
        // sq = 0.01 * 4 = 0.04, update = 0.01 * 2 / (0.2 + 1e-8)
        assert!((s[0] - 0.04).abs() < 1e-15);
        assert!((p[0] - (1.0 - 0.02 / (0.2 + 1e-8))).abs() < 1e-15);
    }
}
