//! Finite-difference checks of the elementwise ops (`crates/tensor/src/ops/elementwise.rs`,
//! and the `to_dtype` cast), first order and, for those a WGAN-GP critic uses, second order,
//! on every device (see `common::devices`).
//!
//! Inputs are seeded random f64 tensors of odd sizes, kept away from the points where an op
//! is not differentiable, so that a failure means a wrong backward rule and not a kink
//! between `x - eps` and `x + eps`.
//!
//! `cargo test --test grad_elementwise` (add `--features emulator` for the CUDA emulator).

mod common;

use common::{
    assert_ok, away_from, away_from_zero, check, check2, for_each_device, on, randn, through_f32_tolerance, uniform,
};
use earthmover::tensor::gradcheck::gradcheck;
use earthmover::{grad, Activation, DType, Tensor};

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

/// The smallest `|x - y|` over the broadcast of the two: how close `maximum` is to a tie.
fn closest_tie(x: &Tensor, y: &Tensor) -> f64 {
    x.sub(y).abs().to_vec_f64().into_iter().fold(f64::INFINITY, f64::min)
}

// ---------------------------------------------------------------- binary

#[test]
fn add_with_numpy_broadcasting_passes_gradcheck_and_gradgradcheck() {
    for_each_device(|device| {
        for (i, &(a, b)) in BROADCAST_PAIRS.iter().enumerate() {
            let seed = 10 + 2 * i as u64;
            // Bias add is the broadcast add of a critic's conv and linear layers.
            check2(
                device,
                &format!("add {a:?} + {b:?}"),
                |xs| xs[0].add(&xs[1]),
                &[randn(a, seed), randn(b, seed + 1)],
            );
        }
    });
}

#[test]
fn sub_with_numpy_broadcasting_passes_gradcheck() {
    for_each_device(|device| {
        for (i, &(a, b)) in BROADCAST_PAIRS.iter().enumerate() {
            let seed = 30 + 2 * i as u64;
            check(
                device,
                &format!("sub {a:?} - {b:?}"),
                |xs| xs[0].sub(&xs[1]),
                &[randn(a, seed), randn(b, seed + 1)],
            );
        }
    });
}

#[test]
fn mul_with_numpy_broadcasting_passes_gradcheck_and_gradgradcheck() {
    for_each_device(|device| {
        for (i, &(a, b)) in BROADCAST_PAIRS.iter().enumerate() {
            let seed = 50 + 2 * i as u64;
            check2(
                device,
                &format!("mul {a:?} * {b:?}"),
                |xs| xs[0].mul(&xs[1]),
                &[randn(a, seed), randn(b, seed + 1)],
            );
        }
    });
}

#[test]
fn div_with_numpy_broadcasting_passes_gradcheck_and_gradgradcheck() {
    for_each_device(|device| {
        for (i, &(a, b)) in BROADCAST_PAIRS.iter().enumerate() {
            let seed = 70 + 2 * i as u64;
            check2(
                device,
                &format!("div {a:?} / {b:?}"),
                |xs| xs[0].div(&xs[1]),
                &[randn(a, seed), away_from_zero(b, seed + 1)],
            );
        }
    });
}

#[test]
fn div_nonzero_passes_gradcheck_and_gradgradcheck() {
    for_each_device(|device| {
        // Away from 0 it is div, broadcasting as div does.
        for (i, &(a, b)) in BROADCAST_PAIRS.iter().enumerate() {
            let seed = 90 + 2 * i as u64;
            check2(
                device,
                &format!("div_nonzero {a:?} / {b:?}"),
                |xs| xs[0].div_nonzero(&xs[1]),
                &[randn(a, seed), away_from_zero(b, seed + 1)],
            );
        }
        // By a divisor with zeros (held fixed: the function jumps there): the numerator
        // passes unchanged where it is 0, both orders.
        let divisor = Tensor::from_vec(vec![0.0, 2.0, -0.5, 0.0], &[4, 1]).unwrap();
        let divisor = on(device, &divisor);
        check2(
            device,
            "div_nonzero by [0, 2, -0.5, 0]",
            |xs| xs[0].div_nonzero(&divisor),
            &[randn(&[4, 3], 98)],
        );
    });
}

#[test]
fn add_activated_passes_gradcheck_and_matches_add_then_the_activation() {
    let activations = [
        Activation::Relu,
        Activation::LeakyRelu(0.2),
        Activation::Tanh,
        Activation::Sigmoid,
    ];
    for_each_device(|device| {
        for (i, act) in activations.into_iter().enumerate() {
            let seed = 140 + 2 * i as u64;
            // A bias over the last dim, as a linear layer adds it.
            let inputs = [away_from_zero(&[4, 5], seed), randn(&[5], seed + 1)];
            let what = format!("add_activated {act:?}");
            check2(device, &what, |xs| xs[0].add_activated(&xs[1], act), &inputs);
            // The same values and gradients as the two ops, bit for bit.
            let [x, b] = inputs.map(|t| on(device, &t).requires_grad_(true));
            let direction = on(device, &randn(&[4, 5], seed + 2));
            let bits =
                |ts: Vec<Tensor>| -> Vec<u64> { ts.iter().flat_map(|t| t.to_vec_f64()).map(f64::to_bits).collect() };
            let fused = x.add_activated(&b, act);
            let unfused = x.add(&b).activation(act);
            let through = |y: &Tensor| grad(&[&y.mul(&direction).sum()], &[&x, &b], None, false);
            assert_eq!(
                bits(vec![fused.clone()]),
                bits(vec![unfused.clone()]),
                "{device} {what}"
            );
            assert_eq!(
                bits(through(&fused)),
                bits(through(&unfused)),
                "{device} {what}: gradients"
            );
        }
    });
}

#[test]
fn lerp_passes_gradcheck_and_gradgradcheck() {
    for_each_device(|device| {
        // One weight per sample (the penalty's interpolates), one per element, one for all.
        for (i, weight_shape) in [&[3, 1, 1][..], &[3, 2, 5], &[1]].into_iter().enumerate() {
            let seed = 120 + 3 * i as u64;
            check2(
                device,
                &format!("lerp with weights {weight_shape:?}"),
                |xs| xs[0].lerp(&xs[1], &xs[2]),
                &[
                    randn(&[3, 2, 5], seed),
                    randn(&[3, 2, 5], seed + 1),
                    randn(weight_shape, seed + 2),
                ],
            );
        }
    });
}

#[test]
fn lerp_is_start_plus_the_weighted_difference_bit_for_bit() {
    for_each_device(|device| {
        for dtype in [DType::F32, DType::F64] {
            let start = on(device, &randn(&[4, 3, 7], 130).to_dtype(dtype));
            let end = on(device, &randn(&[4, 3, 7], 131).to_dtype(dtype));
            let weight = on(device, &uniform(&[4, 1, 1], 0.0, 1.0, 132).to_dtype(dtype));
            let unfused = start.add(&end.sub(&start).mul(&weight));
            let bits = |t: &Tensor| t.to_vec_f64().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&start.lerp(&end, &weight)), bits(&unfused), "{device} {dtype}");
        }
    });
}

#[test]
fn div_nonzero_is_the_numerator_where_the_divisor_is_zero() {
    for_each_device(|device| {
        let x = on(device, &Tensor::from_vec(vec![3.0, -4.0, 5.0], &[3]).unwrap()).requires_grad_(true);
        let y = on(device, &Tensor::from_vec(vec![0.0, 2.0, 0.0], &[3]).unwrap()).requires_grad_(true);
        let out = x.div_nonzero(&y);
        assert_eq!(out.to_vec_f64(), vec![3.0, -2.0, 5.0], "{device}");
        let grads = grad(&[&out.sum()], &[&x, &y], None, false);
        assert_eq!(grads[0].to_vec_f64(), vec![1.0, 0.5, 1.0], "{device}: d/dx");
        // -x / y^2 where y != 0, and 0 where the function is x.
        assert_eq!(grads[1].to_vec_f64(), vec![0.0, 1.0, 0.0], "{device}: d/dy");
    });
}

#[test]
fn maximum_and_minimum_without_ties_pass_gradcheck() {
    for_each_device(|device| {
        for (i, &(a, b)) in BROADCAST_PAIRS.iter().enumerate() {
            let seed = 90 + 2 * i as u64;
            let (x, y) = (randn(a, seed), randn(b, seed + 1));
            // At a tie the gradient is split and the function has a kink: keep well away.
            assert!(closest_tie(&x, &y) > 1e-3, "seeds {seed}: near tie");
            check(
                device,
                &format!("maximum {a:?}, {b:?}"),
                |xs| xs[0].maximum(&xs[1]),
                &[x.clone(), y.clone()],
            );
            check(
                device,
                &format!("minimum {a:?}, {b:?}"),
                |xs| xs[0].minimum(&xs[1]),
                &[x, y],
            );
        }
    });
}

#[test]
fn where_cond_with_a_mask_passes_gradcheck_and_gradgradcheck() {
    // The mask is a constant (no gradient flows into it); both branches get the gradient
    // where they are selected, summed back over broadcast dims.
    for_each_device(|device| {
        let mask = on(device, &randn(&[3, 4], 110).gt_scalar(0.0));
        check2(
            device,
            "where(mask [3, 4], [3, 4], [3, 4])",
            |xs| Tensor::where_cond(&mask, &xs[0], &xs[1]),
            &[randn(&[3, 4], 111), randn(&[3, 4], 112)],
        );
        check2(
            device,
            "where(mask [3, 4], [3, 4], [4])",
            |xs| Tensor::where_cond(&mask, &xs[0], &xs[1]),
            &[randn(&[3, 4], 113), randn(&[4], 114)],
        );
        let column_mask = on(device, &randn(&[3, 1], 115).gt_scalar(0.0));
        check2(
            device,
            "where(mask [3, 1], [1, 4], [3, 4])",
            |xs| Tensor::where_cond(&column_mask, &xs[0], &xs[1]),
            &[randn(&[1, 4], 116), randn(&[3, 4], 117)],
        );
    });
}

// ---------------------------------------------------------------- unary

#[test]
fn neg_passes_gradcheck() {
    for_each_device(|device| {
        check(device, "neg", |xs| xs[0].neg(), &[randn(&[3, 5, 7], 200)]);
    });
}

#[test]
fn scalar_arithmetic_passes_gradcheck_and_mul_scalar_gradgradcheck() {
    for_each_device(|device| {
        let x = randn(&[3, 5, 7], 201);
        let one = std::slice::from_ref(&x);
        check(device, "add_scalar", |xs| xs[0].add_scalar(0.7), one);
        check(device, "sub_scalar", |xs| xs[0].sub_scalar(1.3), one);
        check(device, "div_scalar", |xs| xs[0].div_scalar(-2.5), one);
        // mul_scalar scales every critic term (the penalty's lambda, a mean's 1/n).
        check2(device, "mul_scalar", |xs| xs[0].mul_scalar(-1.7), one);
    });
}

#[test]
fn pow_passes_gradcheck_and_gradgradcheck_for_several_exponents() {
    // Integer exponents on inputs of both signs (negative ones away from 0, where x^-1 blows
    // up); fractional ones on positive inputs only.
    for_each_device(|device| {
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
            check2(device, &format!("pow({p})"), |xs| xs[0].pow(p), std::slice::from_ref(x));
        }
    });
}

#[test]
fn sqrt_exp_and_log_pass_gradcheck_and_gradgradcheck() {
    for_each_device(|device| {
        let positive = uniform(&[3, 5, 7], 0.5, 2.0, 220);
        check2(device, "sqrt", |xs| xs[0].sqrt(), std::slice::from_ref(&positive));
        check2(device, "log", |xs| xs[0].log(), std::slice::from_ref(&positive));
        check2(device, "exp", |xs| xs[0].exp(), &[randn(&[3, 5, 7], 221)]);
    });
}

#[test]
fn abs_away_from_zero_passes_gradcheck() {
    for_each_device(|device| {
        let x = away_from(&randn(&[3, 5, 7], 230), &[0.0]);
        check(device, "abs", |xs| xs[0].abs(), &[x]);
    });
}

#[test]
fn relu_and_leaky_relu_away_from_zero_pass_gradcheck_and_gradgradcheck() {
    for_each_device(|device| {
        let x = away_from(&randn(&[3, 5, 7], 240), &[0.0]);
        check2(device, "relu", |xs| xs[0].relu(), std::slice::from_ref(&x));
        check2(device, "leaky_relu(0.2)", |xs| xs[0].leaky_relu(0.2), &[x]);
    });
}

#[test]
fn tanh_sigmoid_and_softplus_pass_gradcheck_and_gradgradcheck() {
    for_each_device(|device| {
        // Scaled by 3 to reach the saturating tails as well as the middle.
        let x = randn(&[3, 5, 7], 250).mul_scalar(3.0);
        check2(device, "tanh", |xs| xs[0].tanh(), std::slice::from_ref(&x));
        check2(device, "sigmoid", |xs| xs[0].sigmoid(), std::slice::from_ref(&x));
        check2(device, "softplus", |xs| xs[0].softplus(), &[x]);
    });
}

#[test]
fn clamp_away_from_its_bounds_passes_gradcheck() {
    // Values below, inside and above [-0.5, 0.7]; the gradient is 1 inside and 0 outside.
    for_each_device(|device| {
        let x = away_from(&randn(&[3, 5, 7], 260), &[-0.5, 0.7]);
        check(device, "clamp(-0.5, 0.7)", |xs| xs[0].clamp(-0.5, 0.7), &[x]);
    });
}

#[test]
fn to_dtype_round_trip_passes_gradcheck() {
    // f64 -> f32 -> f64 is the identity up to f32 rounding: a coarse step keeps the rounding
    // out of the difference quotient (`through_f32_tolerance`).
    for_each_device(|device| {
        let f = |xs: &[Tensor]| xs[0].to_dtype(DType::F32).to_dtype(DType::F64);
        assert_ok(
            gradcheck(f, &[on(device, &randn(&[3, 5], 270))], through_f32_tolerance(device)),
            &format!("gradcheck of to_dtype round trip on {device}"),
        );
    });
}
