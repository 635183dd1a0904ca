//! Finite-difference checks of the log-probabilities and losses
//! (`crates/tensor/src/ops/loss.rs`: log_softmax, cross_entropy,
//! binary_cross_entropy_with_logits), first and second order, on every device (see
//! `common::devices`).
//!
//! `cargo test --test grad_loss` (add `--features emulator` for the CUDA emulator).

mod common;

use common::{check2, for_each_device, randn, uniform};

#[test]
fn log_softmax_passes_gradcheck_and_gradgradcheck() {
    for_each_device(|device| {
        let x = randn(&[3, 5], 800).mul_scalar(2.0);
        check2(
            device,
            "log_softmax(1)",
            |xs| xs[0].log_softmax(1),
            std::slice::from_ref(&x),
        );
        check2(device, "log_softmax(0)", |xs| xs[0].log_softmax(0), &[x]);
        check2(
            device,
            "log_softmax(-1) of 3 dims",
            |xs| xs[0].log_softmax(-1),
            &[randn(&[2, 3, 4], 801)],
        );
    });
}

#[test]
fn cross_entropy_passes_gradcheck_and_gradgradcheck() {
    for_each_device(|device| {
        check2(
            device,
            "cross_entropy",
            |xs| xs[0].cross_entropy(&[1, 4, 0]),
            &[randn(&[3, 5], 810).mul_scalar(2.0)],
        );
    });
}

#[test]
fn binary_cross_entropy_with_logits_passes_gradcheck_and_gradgradcheck() {
    // Differentiable in the targets too (soft labels).
    for_each_device(|device| {
        check2(
            device,
            "binary_cross_entropy_with_logits",
            |xs| xs[0].binary_cross_entropy_with_logits(&xs[1]),
            &[randn(&[3, 4], 820).mul_scalar(3.0), uniform(&[3, 4], 0.0, 1.0, 821)],
        );
    });
}
