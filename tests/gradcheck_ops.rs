//! Finite-difference reference tests: every differentiable op's analytic gradient against
//! central differences in f64 (`gradcheck`), and every op a WGAN-GP critic uses, plus a few
//! cheap others, at second order too (`gradgradcheck`): the gradient penalty differentiates a
//! gradient, so each backward rule's own backward must be right as well.
//!
//! Inputs are seeded random f64 tensors of odd sizes (batch 3, 5x7 images, 2 or 3 channels),
//! kept away from the points where an op is not differentiable, so that a failure means a
//! wrong backward rule and not a kink between `x - eps` and `x + eps`.

use earthmover_tensor::gradcheck::{gradcheck, gradgradcheck, Tolerance};
use earthmover_tensor::{grad, Activation, ConvOptions, DType, Tensor};

// ---------------------------------------------------------------- helpers

/// Seeded standard-normal values in f64, the dtype finite differences need.
fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, DType::F64, seed)
}

/// Seeded uniform values in `[low, high)`, in f64.
fn uniform(shape: &[usize], low: f64, high: f64, seed: u64) -> Tensor {
    Tensor::rand_uniform(shape, low, high, DType::F64, seed)
}

/// Values with `0.5 <= |v| < 2` and random signs: safe denominators and bases of negative
/// powers.
fn away_from_zero(shape: &[usize], seed: u64) -> Tensor {
    uniform(shape, 0.5, 2.0, seed).mul(&randn(shape, seed + 1).sign())
}

/// `x` with every value closer than 0.05 to one of `kinks` moved to 0.1 from it, on its own
/// side, so that `x +- eps` never straddles a kink. The kinks must be more than 0.2 apart.
fn away_from(x: &Tensor, kinks: &[f64]) -> Tensor {
    let values: Vec<f64> = x
        .to_vec_f64()
        .into_iter()
        .map(|v| {
            kinks.iter().fold(v, |v, &k| match v - k {
                d if d.abs() >= 0.05 => v,
                d if d >= 0.0 => k + 0.1,
                _ => k - 0.1,
            })
        })
        .collect();
    Tensor::from_vec(values, x.shape()).unwrap()
}

/// The smallest `|x - y|` over the broadcast of the two: how close `maximum` is to a tie.
fn closest_tie(x: &Tensor, y: &Tensor) -> f64 {
    x.sub(y).abs().to_vec_f64().into_iter().fold(f64::INFINITY, f64::min)
}

/// Fail with the checker's own message, which names the input and element that disagree.
#[track_caller]
fn assert_ok(result: Result<(), String>, what: &str) {
    if let Err(message) = result {
        panic!("{what}: {message}");
    }
}

/// First order: the analytic gradient of `f` at `inputs` matches central differences.
#[track_caller]
fn check(what: &str, f: impl Fn(&[Tensor]) -> Tensor, inputs: &[Tensor]) {
    assert_ok(
        gradcheck(f, inputs, Tolerance::default()),
        &format!("gradcheck of {what}"),
    );
}

/// First and second order: also the gradient of the (create_graph) gradient.
#[track_caller]
fn check2(what: &str, f: impl Fn(&[Tensor]) -> Tensor, inputs: &[Tensor]) {
    check(what, &f, inputs);
    assert_ok(
        gradgradcheck(&f, inputs, Tolerance::default()),
        &format!("gradgradcheck of {what}"),
    );
}

/// NumPy broadcasting cases for the binary ops: equal shapes, a trailing vector, size-1 dims
/// on both sides ([3, 1, 5] with [4, 1] gives [3, 4, 5]), and 0-d scalars on either side.
const BROADCAST_PAIRS: [(&[usize], &[usize]); 7] = [
    (&[2, 3], &[2, 3]),
    (&[3, 1, 5], &[4, 1]),
    (&[4, 1], &[3, 1, 5]),
    (&[3, 4], &[4]),
    (&[3, 1], &[1, 5]),
    (&[2, 3], &[]),
    (&[], &[3]),
];

// ---------------------------------------------------------------- the checker itself

#[test]
fn gradcheck_rejects_a_wrong_first_derivative() {
    // f(x) = sum(x * detach(x)) has value sum(x^2) but the engine sees one factor as a
    // constant, so its analytic gradient is x where the true one is 2x. If gradcheck passed
    // this, every other test in this file would be meaningless.
    let x = randn(&[3, 4], 1);
    let f = |xs: &[Tensor]| xs[0].mul(&xs[0].detach()).sum();
    let err = gradcheck(f, &[x], Tolerance::default()).expect_err("a wrong gradient passed");
    assert!(err.contains("mismatch"), "{err}");
}

#[test]
fn gradgradcheck_rejects_a_wrong_second_derivative() {
    // f(x) = sum(detach(x)^2 + (x - detach(x)) * 2 detach(x)) has the value and the (analytic)
    // gradient 2x of sum(x^2), but its gradient is a constant to the engine: the analytic
    // second derivative is 0 where the true one is 2. gradcheck must pass, gradgradcheck fail.
    let x = randn(&[3, 4], 2);
    let f = |xs: &[Tensor]| {
        let c = xs[0].detach();
        c.square().add(&xs[0].sub(&c).mul(&c.mul_scalar(2.0))).sum()
    };
    assert_ok(
        gradcheck(f, std::slice::from_ref(&x), Tolerance::default()),
        "first order of a correct gradient",
    );
    let err = gradgradcheck(f, &[x], Tolerance::default()).expect_err("a wrong second derivative passed");
    assert!(err.contains("second order"), "{err}");
}

#[test]
fn gradcheck_refuses_f32_inputs() {
    // Central differences in f32 are noise at eps = 1e-6.
    let x = Tensor::randn(&[3], DType::F32, 3);
    let err = gradcheck(|xs| xs[0].sum(), &[x], Tolerance::default()).unwrap_err();
    assert!(err.contains("f64"), "{err}");
}

// ---------------------------------------------------------------- elementwise, binary

#[test]
fn add_with_numpy_broadcasting_passes_gradcheck_and_gradgradcheck() {
    for (i, &(a, b)) in BROADCAST_PAIRS.iter().enumerate() {
        let seed = 10 + 2 * i as u64;
        // Bias add is the broadcast add of a critic's conv and linear layers.
        check2(
            &format!("add {a:?} + {b:?}"),
            |xs| xs[0].add(&xs[1]),
            &[randn(a, seed), randn(b, seed + 1)],
        );
    }
}

#[test]
fn sub_with_numpy_broadcasting_passes_gradcheck() {
    for (i, &(a, b)) in BROADCAST_PAIRS.iter().enumerate() {
        let seed = 30 + 2 * i as u64;
        check(
            &format!("sub {a:?} - {b:?}"),
            |xs| xs[0].sub(&xs[1]),
            &[randn(a, seed), randn(b, seed + 1)],
        );
    }
}

#[test]
fn mul_with_numpy_broadcasting_passes_gradcheck_and_gradgradcheck() {
    for (i, &(a, b)) in BROADCAST_PAIRS.iter().enumerate() {
        let seed = 50 + 2 * i as u64;
        check2(
            &format!("mul {a:?} * {b:?}"),
            |xs| xs[0].mul(&xs[1]),
            &[randn(a, seed), randn(b, seed + 1)],
        );
    }
}

#[test]
fn div_with_numpy_broadcasting_passes_gradcheck_and_gradgradcheck() {
    for (i, &(a, b)) in BROADCAST_PAIRS.iter().enumerate() {
        let seed = 70 + 2 * i as u64;
        check2(
            &format!("div {a:?} / {b:?}"),
            |xs| xs[0].div(&xs[1]),
            &[randn(a, seed), away_from_zero(b, seed + 1)],
        );
    }
}

#[test]
fn maximum_and_minimum_without_ties_pass_gradcheck() {
    for (i, &(a, b)) in BROADCAST_PAIRS.iter().enumerate() {
        let seed = 90 + 2 * i as u64;
        let (x, y) = (randn(a, seed), randn(b, seed + 1));
        // At a tie the gradient is split and the function has a kink: keep well away.
        assert!(closest_tie(&x, &y) > 1e-3, "seeds {seed}: near tie");
        check(
            &format!("maximum {a:?}, {b:?}"),
            |xs| xs[0].maximum(&xs[1]),
            &[x.clone(), y.clone()],
        );
        check(&format!("minimum {a:?}, {b:?}"), |xs| xs[0].minimum(&xs[1]), &[x, y]);
    }
}

#[test]
fn where_cond_with_a_mask_passes_gradcheck_and_gradgradcheck() {
    // The mask is a constant (no gradient flows into it); both branches get the gradient
    // where they are selected, summed back over broadcast dims.
    let mask = randn(&[3, 4], 110).gt_scalar(0.0);
    check2(
        "where(mask [3, 4], [3, 4], [3, 4])",
        |xs| Tensor::where_cond(&mask, &xs[0], &xs[1]),
        &[randn(&[3, 4], 111), randn(&[3, 4], 112)],
    );
    check2(
        "where(mask [3, 4], [3, 4], [4])",
        |xs| Tensor::where_cond(&mask, &xs[0], &xs[1]),
        &[randn(&[3, 4], 113), randn(&[4], 114)],
    );
    let column_mask = randn(&[3, 1], 115).gt_scalar(0.0);
    check2(
        "where(mask [3, 1], [1, 4], [3, 4])",
        |xs| Tensor::where_cond(&column_mask, &xs[0], &xs[1]),
        &[randn(&[1, 4], 116), randn(&[3, 4], 117)],
    );
}

// ---------------------------------------------------------------- elementwise, unary

#[test]
fn neg_passes_gradcheck() {
    check("neg", |xs| xs[0].neg(), &[randn(&[3, 5, 7], 200)]);
}

#[test]
fn scalar_arithmetic_passes_gradcheck_and_mul_scalar_gradgradcheck() {
    let x = randn(&[3, 5, 7], 201);
    check("add_scalar", |xs| xs[0].add_scalar(0.7), std::slice::from_ref(&x));
    check("sub_scalar", |xs| xs[0].sub_scalar(1.3), std::slice::from_ref(&x));
    check("div_scalar", |xs| xs[0].div_scalar(-2.5), std::slice::from_ref(&x));
    // mul_scalar scales every critic term (the penalty's lambda, a mean's 1/n).
    check2("mul_scalar", |xs| xs[0].mul_scalar(-1.7), &[x]);
}

#[test]
fn pow_passes_gradcheck_and_gradgradcheck_for_several_exponents() {
    // Integer exponents on inputs of both signs (negative ones away from 0, where x^-1 blows
    // up); fractional ones on positive inputs only.
    let any_sign = randn(&[3, 5], 210);
    let nonzero = away_from_zero(&[3, 5], 211);
    let positive = uniform(&[3, 5], 0.5, 2.0, 213);
    let cases: [(f64, &Tensor); 9] = [
        (2.0, &any_sign),
        (3.0, &any_sign),
        (1.0, &any_sign),
        (0.0, &any_sign),
        (-1.0, &nonzero),
        (-2.0, &nonzero),
        (0.5, &positive),
        (1.5, &positive),
        (-0.5, &positive),
    ];
    for (p, x) in cases {
        check2(&format!("pow({p})"), |xs| xs[0].pow(p), std::slice::from_ref(x));
    }
}

#[test]
fn sqrt_exp_and_log_pass_gradcheck_and_gradgradcheck() {
    let positive = uniform(&[3, 5, 7], 0.5, 2.0, 220);
    check2("sqrt", |xs| xs[0].sqrt(), std::slice::from_ref(&positive));
    check2("log", |xs| xs[0].log(), std::slice::from_ref(&positive));
    check2("exp", |xs| xs[0].exp(), &[randn(&[3, 5, 7], 221)]);
}

#[test]
fn abs_away_from_zero_passes_gradcheck() {
    check("abs", |xs| xs[0].abs(), &[away_from(&randn(&[3, 5, 7], 230), &[0.0])]);
}

#[test]
fn relu_and_leaky_relu_away_from_zero_pass_gradcheck_and_gradgradcheck() {
    let x = away_from(&randn(&[3, 5, 7], 240), &[0.0]);
    check2("relu", |xs| xs[0].relu(), std::slice::from_ref(&x));
    check2("leaky_relu(0.2)", |xs| xs[0].leaky_relu(0.2), &[x]);
}

#[test]
fn tanh_sigmoid_and_softplus_pass_gradcheck_and_gradgradcheck() {
    // Scaled by 3 to reach the saturating tails as well as the middle.
    let x = randn(&[3, 5, 7], 250).mul_scalar(3.0);
    check2("tanh", |xs| xs[0].tanh(), std::slice::from_ref(&x));
    check2("sigmoid", |xs| xs[0].sigmoid(), std::slice::from_ref(&x));
    check2("softplus", |xs| xs[0].softplus(), &[x]);
}

#[test]
fn clamp_away_from_its_bounds_passes_gradcheck() {
    // Values below, inside and above [-0.5, 0.7]; the gradient is 1 inside and 0 outside.
    let x = away_from(&randn(&[3, 5, 7], 260), &[-0.5, 0.7]);
    check("clamp(-0.5, 0.7)", |xs| xs[0].clamp(-0.5, 0.7), &[x]);
}

#[test]
fn to_dtype_round_trip_passes_gradcheck() {
    // f64 -> f32 -> f64 is the identity up to f32 rounding, so a coarse step keeps the
    // rounding out of the difference quotient.
    let tol = Tolerance {
        eps: 1e-2,
        ..Tolerance::default()
    };
    let f = |xs: &[Tensor]| xs[0].to_dtype(DType::F32).to_dtype(DType::F64);
    assert_ok(
        gradcheck(f, &[randn(&[3, 5], 270)], tol),
        "gradcheck of to_dtype round trip",
    );
}

// ---------------------------------------------------------------- reductions

#[test]
fn sum_and_mean_pass_gradcheck_and_gradgradcheck() {
    let x = randn(&[3, 4, 5], 300);
    check2("sum", |xs| xs[0].sum(), std::slice::from_ref(&x));
    check2("mean", |xs| xs[0].mean(), &[x]);
}

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
fn sum_dims_and_mean_dims_pass_gradcheck_and_gradgradcheck() {
    let x = randn(&[3, 4, 5], 310);
    for (dims, keepdim) in REDUCE_CASES {
        check2(
            &format!("sum_dims({dims:?}, keepdim {keepdim})"),
            |xs| xs[0].sum_dims(dims, keepdim),
            std::slice::from_ref(&x),
        );
        check2(
            &format!("mean_dims({dims:?}, keepdim {keepdim})"),
            |xs| xs[0].mean_dims(dims, keepdim),
            std::slice::from_ref(&x),
        );
    }
}

#[test]
fn max_dims_and_max_pass_gradcheck() {
    // Continuous random values have no ties; the gradient goes to the one maximal element.
    let x = randn(&[3, 4, 5], 320);
    for (dims, keepdim) in REDUCE_CASES {
        check(
            &format!("max_dims({dims:?}, keepdim {keepdim})"),
            |xs| xs[0].max_dims(dims, keepdim),
            std::slice::from_ref(&x),
        );
    }
    check("max", |xs| xs[0].max(), &[x]);
}

#[test]
fn var_dims_passes_gradcheck_and_gradgradcheck() {
    // Layer-norm's and batch-norm's statistic.
    let x = randn(&[3, 4, 5], 330);
    for (dims, keepdim) in REDUCE_CASES {
        check2(
            &format!("var_dims({dims:?}, keepdim {keepdim})"),
            |xs| xs[0].var_dims(dims, keepdim),
            std::slice::from_ref(&x),
        );
    }
}

#[test]
fn broadcast_to_and_sum_to_pass_gradcheck_and_gradgradcheck() {
    let cases: [(&[usize], &[usize]); 4] = [
        (&[3, 1, 5], &[2, 3, 4, 5]),
        (&[5], &[3, 5]),
        (&[4, 1], &[3, 4, 5]),
        (&[], &[2, 3]),
    ];
    for (i, (small, big)) in cases.into_iter().enumerate() {
        check2(
            &format!("broadcast_to {small:?} -> {big:?}"),
            |xs| xs[0].broadcast_to(big),
            &[randn(small, 340 + i as u64)],
        );
        check2(
            &format!("sum_to {big:?} -> {small:?}"),
            |xs| xs[0].sum_to(small),
            &[randn(big, 350 + i as u64)],
        );
    }
}

// ---------------------------------------------------------------- matrix products

/// Shapes of matmul operands: plain matrices, batched, and a matrix broadcast over the other
/// operand's batch (on either side).
const MATMUL_CASES: [(&[usize], &[usize]); 6] = [
    (&[3, 5], &[5, 4]),
    (&[3, 2, 5], &[3, 5, 4]),
    (&[2, 3, 2, 5], &[2, 3, 5, 4]),
    (&[3, 2, 5], &[5, 4]),
    (&[2, 5], &[3, 5, 4]),
    (&[2, 3, 2, 5], &[5, 4]),
];

#[test]
fn matmul_2d_batched_and_broadcast_passes_gradcheck_and_gradgradcheck() {
    for (i, (a, b)) in MATMUL_CASES.into_iter().enumerate() {
        let seed = 400 + 2 * i as u64;
        check2(
            &format!("matmul {a:?} @ {b:?}"),
            |xs| xs[0].matmul(&xs[1]),
            &[randn(a, seed), randn(b, seed + 1)],
        );
    }
}

/// `shape` with its last two dims swapped: the stored shape of an operand read transposed.
fn transposed_shape(shape: &[usize]) -> Vec<usize> {
    let mut s = shape.to_vec();
    let r = s.len();
    s.swap(r - 2, r - 1);
    s
}

#[test]
fn matmul_transposed_passes_gradcheck_and_gradgradcheck_for_all_four_flag_combinations() {
    for (i, (a, b)) in MATMUL_CASES.into_iter().enumerate() {
        for ta in [false, true] {
            for tb in [false, true] {
                let seed = 420 + 4 * i as u64 + 2 * ta as u64 + tb as u64;
                // Store each operand so that reading it with its flag gives the shapes above.
                let a_stored = if ta { transposed_shape(a) } else { a.to_vec() };
                let b_stored = if tb { transposed_shape(b) } else { b.to_vec() };
                check2(
                    &format!("matmul_transposed {a_stored:?} (transposed {ta}) @ {b_stored:?} (transposed {tb})"),
                    |xs| xs[0].matmul_transposed(&xs[1], ta, tb),
                    &[randn(&a_stored, seed), randn(&b_stored, seed + 100)],
                );
            }
        }
    }
}

#[test]
fn linear_with_and_without_bias_passes_gradcheck_and_gradgradcheck() {
    let w = randn(&[4, 5], 450);
    let b = randn(&[4], 451);
    for (i, x_shape) in [&[3, 5][..], &[2, 3, 5], &[5]].into_iter().enumerate() {
        let x = randn(x_shape, 452 + i as u64);
        check2(
            &format!("linear {x_shape:?} with bias"),
            |xs| xs[0].linear(&xs[1], Some(&xs[2])),
            &[x.clone(), w.clone(), b.clone()],
        );
        check2(
            &format!("linear {x_shape:?} without bias"),
            |xs| xs[0].linear(&xs[1], None),
            &[x, w.clone()],
        );
    }
}

// ---------------------------------------------------------------- shape ops

#[test]
fn reshape_and_flatten_pass_gradcheck_and_gradgradcheck() {
    let x = randn(&[3, 2, 5, 7], 500);
    let one = std::slice::from_ref(&x);
    check2("reshape to [6, 35]", |xs| xs[0].reshape(&[6, 35]), one);
    check2("reshape to [210]", |xs| xs[0].reshape(&[210]), one);
    check2("flatten(1)", |xs| xs[0].flatten(1), one);
    check2("flatten(-2)", |xs| xs[0].flatten(-2), one);
    check2("flatten(0)", |xs| xs[0].flatten(0), one);
}

#[test]
fn unsqueeze_and_squeeze_pass_gradcheck() {
    let x = randn(&[3, 5], 510);
    let one = std::slice::from_ref(&x);
    check("unsqueeze(0)", |xs| xs[0].unsqueeze(0), one);
    check("unsqueeze(1)", |xs| xs[0].unsqueeze(1), one);
    check("unsqueeze(rank)", |xs| xs[0].unsqueeze(2), one);
    check("squeeze(1)", |xs| xs[0].squeeze(1), &[randn(&[3, 1, 5], 511)]);
    check("squeeze(-1)", |xs| xs[0].squeeze(-1), &[randn(&[3, 5, 1], 512)]);
}

#[test]
fn permute_passes_gradcheck_and_gradgradcheck() {
    let x = randn(&[3, 2, 5, 7], 520);
    let one = std::slice::from_ref(&x);
    check2("permute [0, 2, 3, 1]", |xs| xs[0].permute(&[0, 2, 3, 1]), one);
    check2("permute [3, 1, 0, 2]", |xs| xs[0].permute(&[3, 1, 0, 2]), one);
}

#[test]
fn transpose_and_t_pass_gradcheck() {
    let x = randn(&[3, 2, 5, 7], 522);
    let one = std::slice::from_ref(&x);
    check("transpose(0, -1)", |xs| xs[0].transpose(0, -1), one);
    check("transpose(1, 2)", |xs| xs[0].transpose(1, 2), one);
    check("t", |xs| xs[0].t(), &[randn(&[3, 5], 521)]);
}

#[test]
fn narrow_passes_gradcheck_and_gradgradcheck() {
    let x = randn(&[3, 4, 7], 530);
    let one = std::slice::from_ref(&x);
    check2("narrow(1, 1, 2)", |xs| xs[0].narrow(1, 1, 2), one);
    check2("narrow(-1, 3, 4)", |xs| xs[0].narrow(-1, 3, 4), one);
    check2("narrow(0, 2, 1)", |xs| xs[0].narrow(0, 2, 1), one);
}

#[test]
fn concat_passes_gradcheck_and_gradgradcheck() {
    let (a, b, c) = (randn(&[3, 2, 5], 540), randn(&[3, 4, 5], 541), randn(&[3, 1, 5], 542));
    check2(
        "concat of 3 along dim 1",
        |xs| Tensor::concat(&[&xs[0], &xs[1], &xs[2]], 1),
        &[a, b, c],
    );
    check2(
        "concat along dim -1",
        |xs| Tensor::concat(&[&xs[0], &xs[1]], -1),
        &[randn(&[3, 4, 2], 543), randn(&[3, 4, 3], 544)],
    );
    check2(
        "concat along dim 0",
        |xs| Tensor::concat(&[&xs[0], &xs[1]], 0),
        &[randn(&[2, 5], 545), randn(&[1, 5], 546)],
    );
}

#[test]
fn stack_passes_gradcheck() {
    let same = [randn(&[3, 4], 547), randn(&[3, 4], 548), randn(&[3, 4], 549)];
    for dim in 0..=2 {
        check(
            &format!("stack along dim {dim}"),
            |xs| Tensor::stack(&[&xs[0], &xs[1], &xs[2]], dim),
            &same,
        );
    }
}

#[test]
fn pad_passes_gradcheck_and_gradgradcheck() {
    let x = randn(&[3, 2, 5], 550);
    let one = std::slice::from_ref(&x);
    check2("pad last dim (1, 2)", |xs| xs[0].pad(&[(1, 2)], 0.0), one);
    // The pad value is a constant: it changes the output, not the gradient.
    check2(
        "pad last two dims (1, 1), (0, 3) with 0.5",
        |xs| xs[0].pad(&[(1, 1), (0, 3)], 0.5),
        one,
    );
    check2(
        "pad three dims (0, 0), (2, 0), (1, 1)",
        |xs| xs[0].pad(&[(0, 0), (2, 0), (1, 1)], 0.0),
        one,
    );
}

// ---------------------------------------------------------------- convolutions

/// Kernel shapes of the conv grids: square, and non-square to catch swapped axes.
const KERNELS: [(usize, usize); 2] = [(3, 3), (3, 2)];

fn conv_options(stride: usize, padding: usize, dilation: usize) -> ConvOptions {
    ConvOptions::new().stride(stride).padding(padding).dilation(dilation)
}

/// conv2d's grid: strides 1 and 2, paddings 0, 1 and 2, dilations 1 and 2, plus options that
/// differ between the axes (so that a swapped h and w shows) and a stride larger than the
/// kernel.
fn conv2d_grid() -> Vec<ConvOptions> {
    let mut grid = Vec::new();
    for stride in [1, 2] {
        for padding in [0, 1, 2] {
            for dilation in [1, 2] {
                grid.push(conv_options(stride, padding, dilation));
            }
        }
    }
    grid.push(ConvOptions {
        stride: (2, 1),
        padding: (1, 2),
        dilation: (1, 2),
        output_padding: (0, 0),
    });
    grid.push(ConvOptions {
        stride: (1, 2),
        padding: (0, 1),
        dilation: (2, 1),
        output_padding: (0, 0),
    });
    // A stride of 3 with kernel width 2 skips input columns entirely.
    grid.push(ConvOptions {
        stride: (3, 3),
        padding: (1, 0),
        dilation: (1, 1),
        output_padding: (0, 0),
    });
    grid
}

/// conv_transpose2d's grid: conv2d's, times output_padding 0 and 1 where it is smaller than
/// max(stride, dilation) (so stride 1 with dilation 2 gets output_padding 1 too).
fn conv_transpose2d_grid() -> Vec<ConvOptions> {
    let mut grid = Vec::new();
    for base in conv2d_grid() {
        for output_padding in [0, 1] {
            let allowed = |stride: usize, dilation: usize| output_padding < stride.max(dilation);
            if allowed(base.stride.0, base.dilation.0) && allowed(base.stride.1, base.dilation.1) {
                grid.push(ConvOptions {
                    output_padding: (output_padding, output_padding),
                    ..base
                });
            }
        }
    }
    grid
}

#[test]
fn conv_grids_cover_what_they_claim() {
    // 12 uniform options, 2 per-axis ones and stride 3; of these 15, the 3 with stride 1 and
    // dilation 1 allow no output padding, the other 12 allow 0 and 1.
    assert_eq!(conv2d_grid().len(), 15);
    assert_eq!(conv_transpose2d_grid().len(), 15 + 12);
    assert!(conv_transpose2d_grid()
        .iter()
        .any(|o| o.stride == (1, 1) && o.output_padding == (1, 1)));
}

#[test]
fn conv2d_passes_gradcheck_across_the_grid_with_and_without_bias() {
    // Batch 3, 2 -> 3 channels, 5x7 images.
    let x = randn(&[3, 2, 5, 7], 600);
    let b = randn(&[3], 601);
    for (k, (kh, kw)) in KERNELS.into_iter().enumerate() {
        let w = randn(&[3, 2, kh, kw], 602 + k as u64);
        for opts in conv2d_grid() {
            check(
                &format!("conv2d kernel {kh}x{kw} without bias, {opts:?}"),
                |xs| xs[0].conv2d(&xs[1], None, opts),
                &[x.clone(), w.clone()],
            );
            check(
                &format!("conv2d kernel {kh}x{kw} with bias, {opts:?}"),
                |xs| xs[0].conv2d(&xs[1], Some(&xs[2]), opts),
                &[x.clone(), w.clone(), b.clone()],
            );
        }
    }
}

#[test]
fn conv2d_passes_gradgradcheck_across_the_grid() {
    // Second order on the whole grid, both kernel shapes, with the bias (the critic's layer).
    let x = randn(&[3, 2, 5, 7], 610);
    let b = randn(&[3], 611);
    for (k, (kh, kw)) in KERNELS.into_iter().enumerate() {
        let w = randn(&[3, 2, kh, kw], 612 + k as u64);
        for opts in conv2d_grid() {
            assert_ok(
                gradgradcheck(
                    |xs| xs[0].conv2d(&xs[1], Some(&xs[2]), opts),
                    &[x.clone(), w.clone(), b.clone()],
                    Tolerance::default(),
                ),
                &format!("gradgradcheck of conv2d kernel {kh}x{kw} with bias, {opts:?}"),
            );
        }
    }
}

#[test]
fn conv_transpose2d_passes_gradcheck_across_the_grid_with_and_without_bias() {
    // Batch 3, 2 -> 3 channels, from a 3x4 map; the weight is [in, out, kh, kw].
    let x = randn(&[3, 2, 3, 4], 620);
    let b = randn(&[3], 621);
    for (k, (kh, kw)) in KERNELS.into_iter().enumerate() {
        let w = randn(&[2, 3, kh, kw], 622 + k as u64);
        for opts in conv_transpose2d_grid() {
            check(
                &format!("conv_transpose2d kernel {kh}x{kw} without bias, {opts:?}"),
                |xs| xs[0].conv_transpose2d(&xs[1], None, opts),
                &[x.clone(), w.clone()],
            );
            check(
                &format!("conv_transpose2d kernel {kh}x{kw} with bias, {opts:?}"),
                |xs| xs[0].conv_transpose2d(&xs[1], Some(&xs[2]), opts),
                &[x.clone(), w.clone(), b.clone()],
            );
        }
    }
}

#[test]
fn conv_transpose2d_passes_gradgradcheck_across_the_grid() {
    // The generator's layer. Its backward is made of conv2d and conv2d_weight_grad, so this
    // also differentiates their backward rules in the transpose's geometry (output padding
    // included).
    let x = randn(&[3, 2, 3, 4], 630);
    let b = randn(&[3], 631);
    for (k, (kh, kw)) in KERNELS.into_iter().enumerate() {
        let w = randn(&[2, 3, kh, kw], 632 + k as u64);
        for opts in conv_transpose2d_grid() {
            assert_ok(
                gradgradcheck(
                    |xs| xs[0].conv_transpose2d(&xs[1], Some(&xs[2]), opts),
                    &[x.clone(), w.clone(), b.clone()],
                    Tolerance::default(),
                ),
                &format!("gradgradcheck of conv_transpose2d kernel {kh}x{kw} with bias, {opts:?}"),
            );
        }
    }
}

#[test]
fn convolutions_on_the_register_tile_pass_gradcheck_and_gradgradcheck() {
    // The grids above have too few channels for the tile, so they run the rectangle paths.
    // 16 -> 6 channels fill it: conv2d's forward pass, its input adjoint (conv_transpose2d's
    // forward pass) and its weight gradient all run on the tile, here in f64, with the
    // critic's stride and a padding wider than a 2x2 kernel's reach.
    let opts = conv_options(2, 2, 1);
    let x = randn(&[2, 16, 4, 5], 640);
    let w = randn(&[6, 16, 2, 2], 641);
    let b = randn(&[6], 642);
    check2(
        "conv2d on the tile",
        |xs| xs[0].conv2d(&xs[1], Some(&xs[2]), opts),
        &[x, w.clone(), b],
    );
    // The transpose of a 16 -> 6 conv: 6 -> 16 channels, weight [6, 16, 2, 2].
    let y = randn(&[2, 6, 4, 3], 643);
    let bt = randn(&[16], 644);
    check2(
        "conv_transpose2d on the tile",
        |xs| xs[0].conv_transpose2d(&xs[1], Some(&xs[2]), opts),
        &[y, w, bt],
    );
}

#[test]
fn convolutions_with_a_fused_activation_pass_gradcheck_and_gradgradcheck() {
    // The fused ops keep only the activated output and read the activation's derivative from
    // it: a mask from its sign for the ReLUs, 1 - y^2 and y (1 - y) for tanh and sigmoid, which
    // must differentiate again through the output. Each activation on the tile (16 -> 6
    // channels) and on the rectangle paths (2 -> 3); a leaky ReLU of negative slope, whose
    // derivative the output does not give, falls back to the separate ops. (3 -> 7 channels
    // puts the forward pass on the tile's short runs, a kernel row of 3 x 2 values.)
    let opts = conv_options(2, 2, 1);
    let activations = [
        Activation::Relu,
        Activation::LeakyRelu(0.2),
        Activation::Tanh,
        Activation::Sigmoid,
        Activation::LeakyRelu(-0.5),
    ];
    for (i, act) in activations.into_iter().enumerate() {
        let seed = 700 + 10 * i as u64;
        let fused = act.has_derivative_from_output();
        for (c, o) in [(16, 6), (3, 7), (2, 3)] {
            let x = randn(&[2, c, 4, 5], seed);
            let leaf = x.detach().requires_grad_(true);
            let y = leaf.conv2d_activated(&randn(&[o, c, 2, 2], seed + 1), None, opts, act);
            let want = if fused { "conv2d_activated" } else { "leaky_relu" };
            assert_eq!(y.grad_fn_name(), Some(want), "{act:?}");
            let w = randn(&[o, c, 2, 2], seed + 1);
            check2(
                &format!("conv2d_activated {act:?}, {c} -> {o} channels"),
                |xs| xs[0].conv2d_activated(&xs[1], Some(&xs[2]), opts, act),
                &[x, w.clone(), randn(&[o], seed + 2)],
            );
            // The transpose of a c -> o conv: o -> c channels, weight [o, c, 2, 2].
            check2(
                &format!("conv_transpose2d_activated {act:?}, {o} -> {c} channels"),
                |xs| xs[0].conv_transpose2d_activated(&xs[1], Some(&xs[2]), opts, act),
                &[randn(&[2, o, 4, 3], seed + 3), w, randn(&[c], seed + 4)],
            );
        }
    }
}

#[test]
fn a_fused_activation_gives_the_separate_ops_values_and_gradients_bit_for_bit() {
    // In f32, on the CPU's tile and rectangle paths: the values, the gradients, and the
    // gradient penalty's second-order gradient (of the input gradient's norm, with respect to
    // the weight) of activation(conv(x)) are those of conv then activation.
    let opts = conv_options(2, 2, 1);
    let f32 = |shape: &[usize], seed| randn(shape, seed).to_dtype(DType::F32);
    for act in [
        Activation::Relu,
        Activation::LeakyRelu(0.2),
        Activation::Tanh,
        Activation::Sigmoid,
    ] {
        for (c, o) in [(16, 6), (3, 1)] {
            let x = f32(&[5, c, 9, 7], 800).requires_grad_(true);
            let w = f32(&[o, c, 5, 5], 801).requires_grad_(true);
            let b = f32(&[o], 802).requires_grad_(true);
            let t = f32(&[5, o, 5, 4], 803).requires_grad_(true);
            let wt = f32(&[o, c, 5, 5], 804).requires_grad_(true);
            let bt = f32(&[c], 805).requires_grad_(true);
            let outputs = |fused: bool| {
                let (y, u) = if fused {
                    (
                        x.conv2d_activated(&w, Some(&b), opts, act),
                        t.conv_transpose2d_activated(&wt, Some(&bt), opts, act),
                    )
                } else {
                    (
                        x.conv2d(&w, Some(&b), opts).activation(act),
                        t.conv_transpose2d(&wt, Some(&bt), opts).activation(act),
                    )
                };
                let loss = y.square().sum().add(&u.square().sum());
                let inputs = [&x, &w, &b, &t, &wt, &bt];
                let grads = grad(&[&loss], &inputs, None, true);
                let penalty = grads[0].square().sum().add(&grads[3].square().sum());
                let second = grad(&[&penalty], &[&w, &wt], None, false);
                [y, u]
                    .into_iter()
                    .chain(grads)
                    .chain(second)
                    .map(|t| t.to_vec_f32())
                    .collect::<Vec<_>>()
            };
            let (fused, separate) = (outputs(true), outputs(false));
            for (k, (f, s)) in fused.iter().zip(&separate).enumerate() {
                assert!(
                    f.len() == s.len() && f.iter().zip(s).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{act:?}, {c} -> {o} channels: result {k} differs between fused and separate ops"
                );
            }
        }
    }
}

/// The size of conv2d's output along one axis.
fn conv_out(input: usize, kernel: usize, stride: usize, padding: usize, dilation: usize) -> usize {
    (input + 2 * padding - dilation * (kernel - 1) - 1) / stride + 1
}

#[test]
fn conv2d_weight_grad_passes_gradcheck_and_gradgradcheck_across_the_grid() {
    // Bilinear in (x, grad_output): the op behind conv2d's weight gradient, and so behind the
    // gradient penalty's second derivatives.
    let x = randn(&[3, 2, 5, 7], 640);
    for (k, (kh, kw)) in KERNELS.into_iter().enumerate() {
        for (i, opts) in conv2d_grid().into_iter().enumerate() {
            let ho = conv_out(5, kh, opts.stride.0, opts.padding.0, opts.dilation.0);
            let wo = conv_out(7, kw, opts.stride.1, opts.padding.1, opts.dilation.1);
            let gy = randn(&[3, 3, ho, wo], 641 + (100 * k + i) as u64);
            check2(
                &format!("conv2d_weight_grad kernel {kh}x{kw}, {opts:?}"),
                |xs| xs[0].conv2d_weight_grad(&xs[1], (kh, kw), opts),
                &[x.clone(), gy],
            );
        }
    }
}

// ---------------------------------------------------------------- norms and statistics

/// `x` with sample `i` (along dim 0) set to exactly zero.
fn with_zero_sample(x: &Tensor, i: usize) -> Tensor {
    let per_sample = x.numel() / x.shape()[0];
    let mut values = x.to_vec_f64();
    values[i * per_sample..(i + 1) * per_sample].fill(0.0);
    Tensor::from_vec(values, x.shape()).unwrap()
}

#[test]
fn per_sample_norm_passes_gradcheck_and_gradgradcheck() {
    check2(
        "per_sample_norm",
        |xs| xs[0].per_sample_norm(),
        &[randn(&[3, 2, 5], 700)],
    );
    check2(
        "per_sample_norm of a 2-d batch",
        |xs| xs[0].per_sample_norm(),
        &[randn(&[3, 4], 701)],
    );
}

#[test]
fn per_sample_norm_passes_gradcheck_with_an_all_zero_sample() {
    // At an all-zero sample the norm is |eps| on both sides of every coordinate, so the
    // central difference is exactly 0: the analytic gradient must be 0 there too, and finite.
    let x = with_zero_sample(&randn(&[3, 2, 5], 710), 1);
    check("per_sample_norm with a zero sample", |xs| xs[0].per_sample_norm(), &[x]);
}

#[test]
fn per_sample_norm_gradient_of_an_all_zero_sample_is_zero_and_finite() {
    // WGAN-GP takes this norm of a gradient, which can be exactly zero (a dead critic): a NaN
    // here would poison every parameter. x / ||x|| is taken as 0 there.
    let x = with_zero_sample(&randn(&[3, 2, 5], 720), 1).requires_grad_(true);
    let direction = randn(&[3], 721);
    let norms = x.per_sample_norm();
    assert_eq!(norms.to_vec_f64()[1], 0.0);
    let g = grad(&[&norms], &[&x], Some(&[&direction]), true).remove(0);
    let values = g.to_vec_f64();
    assert!(values.iter().all(|v| v.is_finite()), "{values:?}");
    assert!(
        values[10..20].iter().all(|&v| v == 0.0),
        "zero sample: {:?}",
        &values[10..20]
    );
    // The other samples get direction_i * x / ||x||, as usual.
    let (xs, n, d) = (x.to_vec_f64(), norms.to_vec_f64(), direction.to_vec_f64());
    for i in [0, 2] {
        for j in i * 10..(i + 1) * 10 {
            let want = d[i] * xs[j] / n[i];
            assert!((values[j] - want).abs() < 1e-12, "element {j}: {} vs {want}", values[j]);
        }
    }
    // Differentiating that gradient again (the penalty's path) stays finite too.
    let gg = grad(&[&g.square().sum()], &[&x], None, false).remove(0);
    assert!(gg.to_vec_f64().iter().all(|v| v.is_finite()), "{gg}");
}

#[test]
fn normalize_passes_gradcheck_and_gradgradcheck() {
    let x = randn(&[3, 4, 5], 730);
    for dims in [&[-1][..], &[1, 2], &[0]] {
        check2(
            &format!("normalize over {dims:?}"),
            |xs| xs[0].normalize(dims, 1e-5),
            std::slice::from_ref(&x),
        );
    }
}

#[test]
fn layer_norm_with_and_without_affine_passes_gradcheck_and_gradgradcheck() {
    let x = randn(&[3, 4, 5], 740);
    check2(
        "layer_norm over 1 dim with weight and bias",
        |xs| xs[0].layer_norm(1, Some(&xs[1]), Some(&xs[2]), 1e-5),
        &[x.clone(), randn(&[5], 741), randn(&[5], 742)],
    );
    check2(
        "layer_norm over 2 dims with weight and bias",
        |xs| xs[0].layer_norm(2, Some(&xs[1]), Some(&xs[2]), 1e-5),
        &[x.clone(), randn(&[4, 5], 743), randn(&[4, 5], 744)],
    );
    check2(
        "layer_norm without affine",
        |xs| xs[0].layer_norm(2, None, None, 1e-5),
        &[x],
    );
}

#[test]
fn batch_stats_mean_and_var_pass_gradcheck_and_var_gradgradcheck() {
    let x = randn(&[3, 2, 5, 7], 750);
    check("batch_stats mean", |xs| xs[0].batch_stats().0, std::slice::from_ref(&x));
    check2("batch_stats var", |xs| xs[0].batch_stats().1, &[x]);
    check(
        "batch_stats of [N, C]",
        |xs| {
            let (m, v) = xs[0].batch_stats();
            m.add(&v.mul_scalar(3.0))
        },
        &[randn(&[3, 4], 751)],
    );
}

// ---------------------------------------------------------------- log-probabilities and losses

#[test]
fn log_softmax_passes_gradcheck_and_gradgradcheck() {
    let x = randn(&[3, 5], 800).mul_scalar(2.0);
    check2("log_softmax(1)", |xs| xs[0].log_softmax(1), std::slice::from_ref(&x));
    check2("log_softmax(0)", |xs| xs[0].log_softmax(0), &[x]);
    check2(
        "log_softmax(-1) of 3 dims",
        |xs| xs[0].log_softmax(-1),
        &[randn(&[2, 3, 4], 801)],
    );
}

#[test]
fn cross_entropy_passes_gradcheck_and_gradgradcheck() {
    check2(
        "cross_entropy",
        |xs| xs[0].cross_entropy(&[1, 4, 0]),
        &[randn(&[3, 5], 810).mul_scalar(2.0)],
    );
}

#[test]
fn binary_cross_entropy_with_logits_passes_gradcheck_and_gradgradcheck() {
    // Differentiable in the targets too (soft labels).
    check2(
        "binary_cross_entropy_with_logits",
        |xs| xs[0].binary_cross_entropy_with_logits(&xs[1]),
        &[randn(&[3, 4], 820).mul_scalar(3.0), uniform(&[3, 4], 0.0, 1.0, 821)],
    );
}

// ---------------------------------------------------------------- composition

#[test]
fn small_critic_passes_gradgradcheck_end_to_end() {
    // The ops above composed as a WGAN-GP critic: conv, bias, leaky_relu, layer-norm
    // statistics, flatten, linear. Second order through the whole chain also checks that
    // gradients from several paths are accumulated with create_graph.
    let critic = |xs: &[Tensor]| {
        let s2 = ConvOptions::new().stride(2).padding(1);
        let h = xs[0].conv2d(&xs[1], Some(&xs[2]), s2).leaky_relu(0.2); // [3, 2, 3, 4]
        let h = h.normalize(&[1, 2, 3], 1e-5).tanh();
        h.flatten(1).linear(&xs[3], None).sigmoid().sum() // [3, 1] -> scalar
    };
    let inputs = [
        randn(&[3, 1, 5, 7], 900),
        randn(&[2, 1, 3, 3], 901),
        randn(&[2], 902),
        randn(&[1, 24], 903),
    ];
    check2("a small critic", critic, &inputs);
}
