//! Finite-difference checks of the norms and statistics (`crates/tensor/src/ops/norm.rs`:
//! per_sample_norm, normalize, layer_norm, batch_stats), first and second order, on every
//! device (see `common::devices`); and the gradient of a per-sample norm at an all-zero
//! sample (WGAN-GP's penalty of a dead critic).
//!
//! `cargo test --test grad_norm` (add `--features emulator` for the CUDA emulator).

mod common;

use common::{check, check2, for_each_device, on, randn};
use earthmover::{grad, Tensor};

/// `x` with sample `i` (along dim 0) set to exactly zero.
fn with_zero_sample(x: &Tensor, i: usize) -> Tensor {
    let per_sample = x.numel() / x.shape()[0];
    let mut values = x.to_vec_f64();
    values[i * per_sample..(i + 1) * per_sample].fill(0.0);
    Tensor::from_vec(values, x.shape()).unwrap()
}

#[test]
fn per_sample_norm_passes_gradcheck_and_gradgradcheck() {
    for_each_device(|device| {
        check2(
            device,
            "per_sample_norm",
            |xs| xs[0].per_sample_norm(),
            &[randn(&[3, 2, 5], 700)],
        );
        check2(
            device,
            "per_sample_norm of a 2-d batch",
            |xs| xs[0].per_sample_norm(),
            &[randn(&[3, 4], 701)],
        );
    });
}

#[test]
fn per_sample_norm_passes_gradcheck_with_an_all_zero_sample() {
    // At an all-zero sample the norm is |eps| on both sides of every coordinate, so the
    // central difference is exactly 0: the analytic gradient must be 0 there too, and finite.
    for_each_device(|device| {
        let x = with_zero_sample(&randn(&[3, 2, 5], 710), 1);
        check(
            device,
            "per_sample_norm with a zero sample",
            |xs| xs[0].per_sample_norm(),
            &[x],
        );
    });
}

#[test]
fn per_sample_norm_gradient_of_an_all_zero_sample_is_zero_and_finite() {
    // WGAN-GP takes this norm of a gradient, which can be exactly zero (a dead critic): a NaN
    // here would poison every parameter. x / ||x|| is taken as 0 there.
    for_each_device(|device| {
        let x = on(device, &with_zero_sample(&randn(&[3, 2, 5], 720), 1)).requires_grad_(true);
        let direction = on(device, &randn(&[3], 721));
        let norms = x.per_sample_norm();
        assert_eq!(norms.to_vec_f64()[1], 0.0, "{device}");
        let g = grad(&[&norms], &[&x], Some(&[&direction]), true).remove(0);
        let values = g.to_vec_f64();
        assert!(values.iter().all(|v| v.is_finite()), "{device}: {values:?}");
        assert!(
            values[10..20].iter().all(|&v| v == 0.0),
            "{device}: zero sample: {:?}",
            &values[10..20]
        );
        // The other samples get direction_i * x / ||x||, as usual: to within a few f64
        // roundings on any device (the GPU sums the norm in another order).
        let (xs, n, d) = (x.to_vec_f64(), norms.to_vec_f64(), direction.to_vec_f64());
        for i in [0, 2] {
            for j in i * 10..(i + 1) * 10 {
                let want = d[i] * xs[j] / n[i];
                assert!(
                    (values[j] - want).abs() < 1e-12,
                    "{device}: element {j}: {} vs {want}",
                    values[j]
                );
            }
        }
        // Differentiating that gradient again (the penalty's path) stays finite too.
        let gg = grad(&[&g.square().sum()], &[&x], None, false).remove(0);
        assert!(gg.to_vec_f64().iter().all(|v| v.is_finite()), "{device}: {gg}");
    });
}

#[test]
fn normalize_passes_gradcheck_and_gradgradcheck() {
    for_each_device(|device| {
        let x = randn(&[3, 4, 5], 730);
        for dims in [&[-1][..], &[1, 2], &[0]] {
            check2(
                device,
                &format!("normalize over {dims:?}"),
                |xs| xs[0].normalize(dims, 1e-5),
                std::slice::from_ref(&x),
            );
        }
    });
}

#[test]
fn layer_norm_with_and_without_affine_passes_gradcheck_and_gradgradcheck() {
    for_each_device(|device| {
        let x = randn(&[3, 4, 5], 740);
        check2(
            device,
            "layer_norm over 1 dim with weight and bias",
            |xs| xs[0].layer_norm(1, Some(&xs[1]), Some(&xs[2]), 1e-5),
            &[x.clone(), randn(&[5], 741), randn(&[5], 742)],
        );
        check2(
            device,
            "layer_norm over 2 dims with weight and bias",
            |xs| xs[0].layer_norm(2, Some(&xs[1]), Some(&xs[2]), 1e-5),
            &[x.clone(), randn(&[4, 5], 743), randn(&[4, 5], 744)],
        );
        check2(
            device,
            "layer_norm without affine",
            |xs| xs[0].layer_norm(2, None, None, 1e-5),
            &[x],
        );
    });
}

#[test]
fn batch_stats_mean_and_var_pass_gradcheck_and_var_gradgradcheck() {
    for_each_device(|device| {
        let x = randn(&[3, 2, 5, 7], 750);
        check(
            device,
            "batch_stats mean",
            |xs| xs[0].batch_stats().0,
            std::slice::from_ref(&x),
        );
        check2(device, "batch_stats var", |xs| xs[0].batch_stats().1, &[x]);
        check(
            device,
            "batch_stats of [N, C]",
            |xs| {
                let (m, v) = xs[0].batch_stats();
                m.add(&v.mul_scalar(3.0))
            },
            &[randn(&[3, 4], 751)],
        );
    });
}
