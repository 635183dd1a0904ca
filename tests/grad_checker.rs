//! The finite-difference checker's own tests, on every device: it must reject a wrong first
//! and a wrong second derivative, and refuse f32 inputs. If it passed a wrong gradient, every
//! other `grad_*` test would be meaningless.
//!
//! `cargo test --test grad_checker` (add `--features emulator` for the CUDA emulator).

mod common;

use common::{assert_ok, for_each_device, on, randn, tolerance};
use earthmover::tensor::gradcheck::{gradcheck, gradgradcheck};
use earthmover::{DType, Tensor};

#[test]
fn gradcheck_rejects_a_wrong_first_derivative() {
    // f(x) = sum(x * detach(x)) has value sum(x^2) but the engine sees one factor as a
    // constant, so its analytic gradient is x where the true one is 2x.
    for_each_device(|device| {
        let x = on(device, &randn(&[3, 4], 1));
        let f = |xs: &[Tensor]| xs[0].mul(&xs[0].detach()).sum();
        let err = gradcheck(f, &[x], tolerance(device)).expect_err(&format!("a wrong gradient passed on {device}"));
        assert!(err.contains("mismatch"), "{device}: {err}");
    });
}

#[test]
fn gradgradcheck_rejects_a_wrong_second_derivative() {
    // f(x) = sum(detach(x)^2 + (x - detach(x)) * 2 detach(x)) has the value and the (analytic)
    // gradient 2x of sum(x^2), but its gradient is a constant to the engine: the analytic
    // second derivative is 0 where the true one is 2. gradcheck must pass, gradgradcheck fail.
    for_each_device(|device| {
        let x = on(device, &randn(&[3, 4], 2));
        let f = |xs: &[Tensor]| {
            let c = xs[0].detach();
            c.square().add(&xs[0].sub(&c).mul(&c.mul_scalar(2.0))).sum()
        };
        assert_ok(
            gradcheck(f, std::slice::from_ref(&x), tolerance(device)),
            &format!("first order of a correct gradient on {device}"),
        );
        let err = gradgradcheck(f, &[x], tolerance(device))
            .expect_err(&format!("a wrong second derivative passed on {device}"));
        assert!(err.contains("second order"), "{device}: {err}");
    });
}

#[test]
fn gradcheck_refuses_f32_inputs() {
    // Central differences in f32 are noise at eps = 1e-6.
    for_each_device(|device| {
        let x = on(device, &Tensor::randn(&[3], DType::F32, 3));
        let err = gradcheck(|xs| xs[0].sum(), &[x], tolerance(device)).unwrap_err();
        assert!(err.contains("f64"), "{device}: {err}");
    });
}
