//! Finite-difference checks of the layout ops (`crates/tensor/src/ops/layout.rs`: reshape,
//! flatten, unsqueeze, squeeze, permute, transpose, narrow, pad, concat, stack), first order
//! and most at second order, on every device (see `common::devices`).
//!
//! `cargo test --test grad_layout` (add `--features emulator` for the CUDA emulator).

mod common;

use common::{check, check2, for_each_device, on, randn};
use earthmover::Tensor;

#[test]
fn reshape_and_flatten_pass_gradcheck_and_gradgradcheck() {
    for_each_device(|device| {
        let x = randn(&[3, 2, 5, 7], 500);
        let one = std::slice::from_ref(&x);
        check2(device, "reshape to [6, 35]", |xs| xs[0].reshape(&[6, 35]), one);
        check2(device, "reshape to [210]", |xs| xs[0].reshape(&[210]), one);
        check2(device, "flatten(1)", |xs| xs[0].flatten(1), one);
        check2(device, "flatten(-2)", |xs| xs[0].flatten(-2), one);
        check2(device, "flatten(0)", |xs| xs[0].flatten(0), one);
    });
}

#[test]
fn unsqueeze_and_squeeze_pass_gradcheck() {
    for_each_device(|device| {
        let x = randn(&[3, 5], 510);
        let one = std::slice::from_ref(&x);
        check(device, "unsqueeze(0)", |xs| xs[0].unsqueeze(0), one);
        check(device, "unsqueeze(1)", |xs| xs[0].unsqueeze(1), one);
        check(device, "unsqueeze(rank)", |xs| xs[0].unsqueeze(2), one);
        check(device, "squeeze(1)", |xs| xs[0].squeeze(1), &[randn(&[3, 1, 5], 511)]);
        check(device, "squeeze(-1)", |xs| xs[0].squeeze(-1), &[randn(&[3, 5, 1], 512)]);
    });
}

#[test]
fn permute_passes_gradcheck_and_gradgradcheck() {
    for_each_device(|device| {
        let x = randn(&[3, 2, 5, 7], 520);
        let one = std::slice::from_ref(&x);
        check2(device, "permute [0, 2, 3, 1]", |xs| xs[0].permute(&[0, 2, 3, 1]), one);
        check2(device, "permute [3, 1, 0, 2]", |xs| xs[0].permute(&[3, 1, 0, 2]), one);
    });
}

#[test]
fn transpose_and_t_pass_gradcheck() {
    for_each_device(|device| {
        let x = randn(&[3, 2, 5, 7], 522);
        let one = std::slice::from_ref(&x);
        check(device, "transpose(0, -1)", |xs| xs[0].transpose(0, -1), one);
        check(device, "transpose(1, 2)", |xs| xs[0].transpose(1, 2), one);
        check(device, "t", |xs| xs[0].t(), &[randn(&[3, 5], 521)]);
    });
}

#[test]
fn narrow_passes_gradcheck_and_gradgradcheck() {
    for_each_device(|device| {
        let x = randn(&[3, 4, 7], 530);
        let one = std::slice::from_ref(&x);
        check2(device, "narrow(1, 1, 2)", |xs| xs[0].narrow(1, 1, 2), one);
        check2(device, "narrow(-1, 3, 4)", |xs| xs[0].narrow(-1, 3, 4), one);
        check2(device, "narrow(0, 2, 1)", |xs| xs[0].narrow(0, 2, 1), one);
        // Several dims at once: one copy, one padded copy back.
        let boxed = |xs: &[Tensor]| xs[0].narrow_box(&[1, 0, 2], &[2, 3, 4]);
        check2(device, "narrow_box([1, 0, 2], [2, 3, 4])", boxed, one);
        let x = on(device, &x);
        let chained = x.narrow(0, 1, 2).narrow(1, 0, 3).narrow(2, 2, 4);
        assert_eq!(
            boxed(std::slice::from_ref(&x)).to_vec_f64(),
            chained.to_vec_f64(),
            "{device}"
        );
    });
}

#[test]
fn concat_passes_gradcheck_and_gradgradcheck() {
    for_each_device(|device| {
        let (a, b, c) = (randn(&[3, 2, 5], 540), randn(&[3, 4, 5], 541), randn(&[3, 1, 5], 542));
        check2(
            device,
            "concat of 3 along dim 1",
            |xs| Tensor::concat(&[&xs[0], &xs[1], &xs[2]], 1),
            &[a, b, c],
        );
        check2(
            device,
            "concat along dim -1",
            |xs| Tensor::concat(&[&xs[0], &xs[1]], -1),
            &[randn(&[3, 4, 2], 543), randn(&[3, 4, 3], 544)],
        );
        check2(
            device,
            "concat along dim 0",
            |xs| Tensor::concat(&[&xs[0], &xs[1]], 0),
            &[randn(&[2, 5], 545), randn(&[1, 5], 546)],
        );
    });
}

#[test]
fn stack_passes_gradcheck() {
    for_each_device(|device| {
        let same = [randn(&[3, 4], 547), randn(&[3, 4], 548), randn(&[3, 4], 549)];
        for dim in 0..=2 {
            check(
                device,
                &format!("stack along dim {dim}"),
                |xs| Tensor::stack(&[&xs[0], &xs[1], &xs[2]], dim),
                &same,
            );
        }
    });
}

#[test]
fn pad_passes_gradcheck_and_gradgradcheck() {
    for_each_device(|device| {
        let x = randn(&[3, 2, 5], 550);
        let one = std::slice::from_ref(&x);
        check2(device, "pad last dim (1, 2)", |xs| xs[0].pad(&[(1, 2)], 0.0), one);
        // The pad value is a constant: it changes the output, not the gradient.
        check2(
            device,
            "pad last two dims (1, 1), (0, 3) with 0.5",
            |xs| xs[0].pad(&[(1, 1), (0, 3)], 0.5),
            one,
        );
        check2(
            device,
            "pad three dims (0, 0), (2, 0), (1, 1)",
            |xs| xs[0].pad(&[(0, 0), (2, 0), (1, 1)], 0.0),
            one,
        );
    });
}
