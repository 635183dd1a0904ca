//! Fused optimiser updates, in place: one pass over a parameter, its gradient and its state.
//! The formulas are PyTorch's (`torch.optim.SGD`, `RMSprop`, `Adam`, without weight decay).

use crate::Element;

/// SGD with momentum (dampening 0): `buf = momentum buf + g; p -= lr buf`. With momentum 0,
/// `buf` is not touched and may be empty.
pub fn sgd<T: Element>(param: &mut [T], grad: &[T], buf: &mut [T], lr: f64, momentum: f64) {
    let (lr, mom) = (T::from_f64(lr), T::from_f64(momentum));
    if momentum == 0.0 {
        param.iter_mut().zip(grad).for_each(|(p, &g)| *p = *p - lr * g);
        return;
    }
    for ((p, &g), b) in param.iter_mut().zip(grad).zip(buf.iter_mut()) {
        *b = mom * *b + g;
        *p = *p - lr * *b;
    }
}

/// RMSProp: `sq = alpha sq + (1 - alpha) g^2; p -= lr g / (sqrt(sq) + eps)`.
pub fn rmsprop<T: Element>(param: &mut [T], grad: &[T], square_avg: &mut [T], lr: f64, alpha: f64, eps: f64) {
    let (lr, alpha, one_minus_alpha, eps) = (
        T::from_f64(lr),
        T::from_f64(alpha),
        T::from_f64(1.0 - alpha),
        T::from_f64(eps),
    );
    for ((p, &g), s) in param.iter_mut().zip(grad).zip(square_avg.iter_mut()) {
        *s = alpha * *s + one_minus_alpha * g * g;
        *p = *p - lr * g / (s.sqrt() + eps);
    }
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
    let bias_correction1 = 1.0 - betas.0.powi(step as i32);
    let bias_correction2_sqrt = (1.0 - betas.1.powi(step as i32)).sqrt();
    let step_size = T::from_f64(lr / bias_correction1);
    let (b1, b2) = (T::from_f64(betas.0), T::from_f64(betas.1));
    let (c1, c2) = (T::from_f64(1.0 - betas.0), T::from_f64(1.0 - betas.1));
    let (inv_bc2, eps) = (T::from_f64(1.0 / bias_correction2_sqrt), T::from_f64(eps));
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
}

/// Clamp into `[-c, c]` in place: WGAN's weight clipping.
pub fn clamp_in_place<T: Element>(param: &mut [T], min: f64, max: f64) {
    let (lo, hi) = (T::from_f64(min), T::from_f64(max));
    param.iter_mut().for_each(|p| *p = p.max(lo).min(hi));
}

#[cfg(test)]
mod tests {
    use super::*;

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
