//! End to end: WGAN-GP's gradient penalty through a small conv critic, differentiated with
//! respect to every critic parameter and checked against finite differences of the penalty
//! itself; and the two mistakes other implementations made.

use earthmover::tensor::gradcheck::{gradcheck, Tolerance};
use earthmover::wgan::penalty::{gradient_penalty, interpolate, interpolation_weights};
use earthmover::{grad, ConvOptions, DType, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Critic parameters: two convs, leaky_relu 0.2, a linear head (the reference critic's shape,
/// shrunk to 5x7 images).
fn critic_params() -> Vec<Tensor> {
    let shapes: [&[usize]; 6] = [&[2, 1, 3, 3], &[2], &[3, 2, 3, 3], &[3], &[1, 3 * 2 * 2], &[1]];
    shapes
        .iter()
        .enumerate()
        .map(|(i, s)| Tensor::randn(s, DType::F64, 100 + i as u64).mul_scalar(0.5))
        .collect()
}

fn critic(p: &[Tensor], x: &Tensor) -> Tensor {
    let s2 = ConvOptions::new().stride(2).padding(1);
    let h = x.conv2d(&p[0], Some(&p[1]), s2).leaky_relu(0.2); // [N, 2, 3, 4]
    let h = h.conv2d(&p[2], Some(&p[3]), s2).leaky_relu(0.2); // [N, 3, 2, 2]
    h.flatten(1).linear(&p[4], Some(&p[5])) // [N, 1]
}

fn batch() -> (Tensor, Tensor, Tensor) {
    let real = Tensor::randn(&[3, 1, 5, 7], DType::F64, 1);
    let fake = Tensor::randn(&[3, 1, 5, 7], DType::F64, 2);
    let eps = interpolation_weights(&real, &mut StdRng::seed_from_u64(3)).unwrap();
    (real, fake, eps)
}

#[test]
fn penalty_gradient_matches_finite_differences_for_every_critic_parameter() {
    let (real, fake, eps) = batch();
    let penalty_of = |params: &[Tensor]| {
        let x_hat = interpolate(&real, &fake, &eps);
        gradient_penalty(|x| critic(params, x), &x_hat, 10.0).penalty
    };
    let params = critic_params();
    // The penalty must actually depend on the parameters for this test to mean anything.
    let tracked: Vec<Tensor> = params.iter().map(|p| p.detach().requires_grad_(true)).collect();
    let p = penalty_of(&tracked);
    assert!(
        p.requires_grad() && p.item() > 1e-3,
        "penalty {} does not depend on the critic",
        p.item()
    );
    gradcheck(
        penalty_of,
        &params,
        Tolerance {
            eps: 1e-6,
            atol: 1e-6,
            rtol: 1e-4,
        },
    )
    .unwrap();
}

#[test]
fn penalty_backward_accumulates_into_every_critic_parameter() {
    let (real, fake, eps) = batch();
    let params: Vec<Tensor> = critic_params().into_iter().map(|p| p.requires_grad_(true)).collect();
    let x_hat = interpolate(&real, &fake, &eps);
    let gp = gradient_penalty(|x| critic(&params, x), &x_hat, 10.0);
    let loss = critic(&params, &fake)
        .mean()
        .sub(&critic(&params, &real).mean())
        .add(&gp.penalty);
    loss.backward();
    for (i, p) in params.iter().enumerate() {
        let g = p.grad().unwrap_or_else(|| panic!("parameter {i} got no gradient"));
        let nonzero = g.to_vec_f64().iter().any(|v| *v != 0.0);
        // The head's bias shifts C(real) and C(fake) alike and leaves grad_x C unchanged: its
        // gradient is exactly zero. Every other parameter must get a gradient.
        let is_head_bias = i == params.len() - 1;
        assert_eq!(nonzero, !is_head_bias, "parameter {i}: gradient {g}");
    }
}

/// The penalty computed one sample at a time, each with its own backward pass: what "per
/// sample" means, with no batching to get wrong.
fn penalty_one_sample_at_a_time(params: &[Tensor], x_hat: &Tensor, lambda: f64) -> f64 {
    let n = x_hat.shape()[0];
    let mut total = 0.0;
    for i in 0..n {
        let xi = x_hat.narrow(0, i, 1).detach().requires_grad_(true);
        let gi = grad(&[&critic(params, &xi).sum()], &[&xi], None, false).remove(0);
        let norm = gi.square().sum().item().sqrt();
        total += (norm - 1.0).powi(2);
    }
    lambda * total / n as f64
}

#[test]
fn norm_is_taken_per_sample_not_over_the_batch() {
    let (real, fake, eps) = batch();
    let params = critic_params();
    let x_hat = interpolate(&real, &fake, &eps);
    let gp = gradient_penalty(|x| critic(&params, x), &x_hat, 10.0);
    let per_sample = penalty_one_sample_at_a_time(&params, &x_hat, 10.0);
    assert!(
        (gp.penalty.item() - per_sample).abs() < 1e-10,
        "penalty {} vs per-sample reference {per_sample}",
        gp.penalty.item()
    );
    // The mistake: one norm over the whole batch. It gives a different number here, so the
    // comparison above can tell the two apart.
    let g = grad(&[&critic(&params, &x_hat).sum()], &[&x_hat], None, false).remove(0);
    let whole_batch = 10.0 * (g.square().sum().item().sqrt() - 1.0).powi(2);
    assert!(
        (whole_batch - per_sample).abs() > 1e-3,
        "test data cannot tell the mistake apart"
    );
}

#[test]
fn interpolation_weight_is_drawn_per_sample_not_per_element() {
    let (real, fake, _) = batch();
    let eps = interpolation_weights(&real, &mut StdRng::seed_from_u64(9)).unwrap();
    assert_eq!(
        eps.shape(),
        &[3, 1, 1, 1],
        "one weight per sample, broadcast over C, H, W"
    );
    let x_hat = interpolate(&real, &fake, &eps);
    // Every interpolate lies on the segment from its fake to its real sample: the ratio
    // (x_hat - fake) / (real - fake) is one number per sample, in [0, 1).
    let (xh, r, f) = (x_hat.to_vec_f64(), real.to_vec_f64(), fake.to_vec_f64());
    let per_sample = 35;
    for i in 0..3 {
        let ratios: Vec<f64> = (i * per_sample..(i + 1) * per_sample)
            .map(|j| (xh[j] - f[j]) / (r[j] - f[j]))
            .collect();
        assert!((0.0..1.0).contains(&ratios[0]));
        for q in &ratios {
            assert!(
                (q - ratios[0]).abs() < 1e-9,
                "sample {i} is not on one segment: ratios {ratios:?}"
            );
        }
    }
    // Different samples get different weights.
    let e = eps.to_vec_f64();
    assert!(e[0] != e[1] && e[1] != e[2]);
}

#[test]
fn penalty_is_zero_for_a_critic_with_unit_gradient_norm() {
    // C(x) = <x, u> with ||u|| = 1 has gradient u everywhere: the penalty is exactly 0 and
    // the logged norm exactly 1.
    let u = Tensor::randn(&[1, 1, 5, 7], DType::F64, 4);
    let u = u.div(&Tensor::scalar(u.square().sum().item().sqrt(), DType::F64));
    let (real, fake, eps) = batch();
    let x_hat = interpolate(&real, &fake, &eps);
    let gp = gradient_penalty(|x| x.mul(&u).flatten(1).sum_dims(&[1], false), &x_hat, 10.0);
    assert!(gp.penalty.item().abs() < 1e-20);
    assert!((gp.mean_grad_norm.item() - 1.0).abs() < 1e-12);
}
