//! Finite-difference checks of the reductions and their adjoints
//! (`crates/tensor/src/ops/reduce.rs`: sum, mean, max, var over dims, broadcast_to, sum_to),
//! first and second order, on every device (see `common::devices`).
//!
//! `cargo test --test grad_reduce` (add `--features emulator` for the CUDA emulator).

mod common;

use common::{check, check2, for_each_device, randn};

/// Dims to reduce (negative ones count from the end) and whether to keep them.
const REDUCE_CASES: [(&[isize], bool); 7] = [
    (&[1], true),
    (&[1], false),
    (&[-1], true),
    (&[-1], false),
    (&[0, -1], true),
    (&[0, 2], false),
    (&[-3, -2, -1], false),
];

#[test]
fn sum_and_mean_pass_gradcheck_and_gradgradcheck() {
    for_each_device(|device| {
        let x = randn(&[3, 4, 5], 300);
        check2(device, "sum", |xs| xs[0].sum(), std::slice::from_ref(&x));
        check2(device, "mean", |xs| xs[0].mean(), &[x]);
    });
}

#[test]
fn sum_dims_and_mean_dims_pass_gradcheck_and_gradgradcheck() {
    for_each_device(|device| {
        let x = randn(&[3, 4, 5], 310);
        for (dims, keepdim) in REDUCE_CASES {
            check2(
                device,
                &format!("sum_dims({dims:?}, keepdim {keepdim})"),
                |xs| xs[0].sum_dims(dims, keepdim),
                std::slice::from_ref(&x),
            );
            check2(
                device,
                &format!("mean_dims({dims:?}, keepdim {keepdim})"),
                |xs| xs[0].mean_dims(dims, keepdim),
                std::slice::from_ref(&x),
            );
        }
    });
}

#[test]
fn max_dims_and_max_pass_gradcheck() {
    // Continuous random values have no ties; the gradient goes to the one maximal element.
    for_each_device(|device| {
        let x = randn(&[3, 4, 5], 320);
        for (dims, keepdim) in REDUCE_CASES {
            check(
                device,
                &format!("max_dims({dims:?}, keepdim {keepdim})"),
                |xs| xs[0].max_dims(dims, keepdim),
                std::slice::from_ref(&x),
            );
        }
        check(device, "max", |xs| xs[0].max(), &[x]);
    });
}

#[test]
fn var_dims_passes_gradcheck_and_gradgradcheck() {
    // Layer-norm's and batch-norm's statistic.
    for_each_device(|device| {
        let x = randn(&[3, 4, 5], 330);
        for (dims, keepdim) in REDUCE_CASES {
            check2(
                device,
                &format!("var_dims({dims:?}, keepdim {keepdim})"),
                |xs| xs[0].var_dims(dims, keepdim),
                std::slice::from_ref(&x),
            );
        }
    });
}

#[test]
fn broadcast_to_and_sum_to_pass_gradcheck_and_gradgradcheck() {
    let cases: [(&[usize], &[usize]); 4] = [
        (&[3, 1, 5], &[2, 3, 4, 5]),
        (&[5], &[3, 5]),
        (&[4, 1], &[3, 4, 5]),
        (&[], &[2, 3]),
    ];
    for_each_device(|device| {
        for (i, (small, big)) in cases.into_iter().enumerate() {
            check2(
                device,
                &format!("broadcast_to {small:?} -> {big:?}"),
                |xs| xs[0].broadcast_to(big),
                &[randn(small, 340 + i as u64)],
            );
            check2(
                device,
                &format!("sum_to {big:?} -> {small:?}"),
                |xs| xs[0].sum_to(small),
                &[randn(big, 350 + i as u64)],
            );
        }
    });
}
