//! Tensor ops at the edges, as PyTorch defines them: NaN and infinities, empty and
//! 0-dimensional tensors, broadcasting matmul and 1-D operands, and geometry that PyTorch
//! refuses. The expected values are PyTorch 2.15's, in float64 (printed by PyTorch for the
//! same inputs); where earthmover deliberately answers otherwise, the test says so and
//! docs/architecture.md ("Semantics") says why.
//!
//! Every test runs on the CPU, on the CUDA emulator with `--features emulator`, and on GPU 0
//! when there is one: `cargo test --features emulator --test edges`.

// The expected values are PyTorch's printed digits, ln 2 and sqrt 2 among them.
#![allow(clippy::approx_constant)]

use common::devices;
use earthmover::tensor::gradcheck::{gradcheck, gradgradcheck, Tolerance};
use earthmover::{grad, Activation, ConvOptions, DType, Device, Tensor};
use std::panic::{catch_unwind, AssertUnwindSafe};

const NAN: f64 = f64::NAN;
const INF: f64 = f64::INFINITY;

mod common;

/// f64 values of `shape` on `device`.
fn tensor(values: &[f64], shape: &[usize], device: Device) -> Tensor {
    Tensor::from_vec(values.to_vec(), shape)
        .unwrap()
        .to_device(device)
        .unwrap()
}

/// `got` equals `want` element for element, NaN matching NaN, within 1e-12 relative
/// (transcendental functions differ in their last bits between math libraries).
#[track_caller]
fn assert_values(what: &str, got: &Tensor, want: &[f64]) {
    let got = got.to_vec_f64();
    assert_eq!(got.len(), want.len(), "{what}: {got:?} against {want:?}");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let same = (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= 1e-12 * w.abs();
        assert!(same, "{what}[{i}]: {g} where PyTorch gives {w} ({got:?})");
    }
}

/// `f` panics with a message that contains every one of `expected`: the error PyTorch raises,
/// as a clear message at the op, never a panic deep in a kernel.
#[track_caller]
fn assert_refused(what: &str, f: impl FnOnce(), expected: &[&str]) {
    let payload = catch_unwind(AssertUnwindSafe(f)).expect_err(what);
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    for part in expected {
        assert!(message.contains(part), "{what}: the message `{message}` lacks `{part}`");
    }
}

/// The value and the gradient (for a gradient of ones) of `f` at `x` on `device`.
fn value_and_grad(x: &[f64], device: Device, f: impl Fn(&Tensor) -> Tensor) -> (Tensor, Tensor) {
    let x = tensor(x, &[x.len()], device).requires_grad_(true);
    let y = f(&x);
    let ones = y.ones_like();
    let dx = grad(&[&y], &[&x], Some(&[&ones]), false).remove(0);
    (y, dx)
}

// ------------------------------------------------------------------ NaN and infinities

/// Every unary op at NaN, both infinities, a negative number, both zeros and a positive
/// number: forward values and first derivatives as PyTorch gives them.
#[test]
fn unary_ops_propagate_nan_and_infinities_as_pytorch() {
    let x = [NAN, -INF, -1.5, -0.0, 0.0, 2.0, INF];
    type Op = fn(&Tensor) -> Tensor;
    #[rustfmt::skip]
    let cases: [(&str, Op, [f64; 7], [f64; 7]); 12] = [
        ("relu", |x| x.relu(), [NAN, 0.0, 0.0, -0.0, 0.0, 2.0, INF], [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0]),
        ("leaky_relu", |x| x.leaky_relu(0.2), [NAN, -INF, -0.30000000000000004, -0.0, 0.0, 2.0, INF], [0.2, 0.2, 0.2, 0.2, 0.2, 1.0, 1.0]),
        ("tanh", |x| x.tanh(), [NAN, -1.0, -0.9051482536448664, -0.0, 0.0, 0.9640275800758169, 1.0], [NAN, 0.0, 0.1807066389236486, 1.0, 1.0, 0.07065082485316443, 0.0]),
        ("sigmoid", |x| x.sigmoid(), [NAN, 0.0, 0.18242552380635635, 0.5, 0.5, 0.8807970779778823, 1.0], [NAN, 0.0, 0.14914645207033286, 0.25, 0.25, 0.10499358540350662, 0.0]),
        ("softplus", |x| x.softplus(), [NAN, 0.0, 0.2014132779827524, 0.6931471805599453, 0.6931471805599453, 2.1269280110429727, INF], [NAN, 0.0, 0.18242552380635632, 0.5, 0.5, 0.8807970779778824, 1.0]),
        ("exp", |x| x.exp(), [NAN, 0.0, 0.22313016014842982, 1.0, 1.0, 7.38905609893065, INF], [NAN, 0.0, 0.22313016014842982, 1.0, 1.0, 7.38905609893065, INF]),
        ("abs", |x| x.abs(), [NAN, INF, 1.5, 0.0, 0.0, 2.0, INF], [0.0, -1.0, -1.0, 0.0, 0.0, 1.0, 1.0]),
        ("square", |x| x.square(), [NAN, INF, 2.25, 0.0, 0.0, 4.0, INF], [NAN, -INF, -3.0, -0.0, 0.0, 4.0, INF]),
        ("clamp", |x| x.clamp(-1.0, 1.0), [NAN, -1.0, -1.0, -0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]),
        ("clamp with min > max", |x| x.clamp(2.0, 1.0), [NAN, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], [0.0; 7]),
        ("sqrt", |x| x.sqrt(), [NAN, NAN, NAN, -0.0, 0.0, 1.414213562373095, INF], [NAN, NAN, NAN, -INF, INF, 0.3535533905932738, 0.0]),
        ("log", |x| x.log(), [NAN, NAN, NAN, -INF, -INF, 0.6931471805599453, INF], [NAN, -0.0, -0.6666666666666666, -INF, INF, 0.5, 0.0]),
    ];
    for device in devices() {
        for (name, op, value, gradient) in &cases {
            let (y, dx) = value_and_grad(&x, device, op);
            assert_values(&format!("{name} on {device}"), &y, value);
            assert_values(&format!("{name}'s gradient on {device}"), &dx, gradient);
        }
        // sign itself: 0 at NaN, as PyTorch's.
        assert_values(
            "sign",
            &tensor(&x, &[7], device).sign(),
            &[0.0, -1.0, -1.0, 0.0, 0.0, 1.0, 1.0],
        );
    }
}

/// Arithmetic and copies at NaN and the infinities: IEEE's values (`inf - inf` and `0 * inf` are
/// NaN, `1 / 0` is inf) and PyTorch's gradients; permutes and pads carry NaN and inf unchanged.
#[test]
fn arithmetic_and_copies_keep_nan_and_infinities() {
    let (a, b) = ([INF, 1.0, NAN, 0.0, -2.0], [INF, 0.0, 1.0, INF, 0.0]);
    type Op = fn(&Tensor, &Tensor) -> Tensor;
    /// The op, its values, and its gradients in each operand.
    type Case = (&'static str, Op, [f64; 5], [f64; 5], [f64; 5]);
    #[rustfmt::skip]
    let cases: [Case; 4] = [
        ("add", |a, b| a.add(b), [INF, 1.0, NAN, INF, -2.0], [1.0; 5], [1.0; 5]),
        ("sub", |a, b| a.sub(b), [NAN, 1.0, NAN, -INF, -2.0], [1.0; 5], [-1.0; 5]),
        ("mul", |a, b| a.mul(b), [INF, 0.0, NAN, NAN, -0.0], [INF, 0.0, 1.0, INF, 0.0], [INF, 1.0, NAN, 0.0, -2.0]),
        ("div", |a, b| a.div(b), [NAN, INF, NAN, 0.0, -INF], [0.0, INF, 1.0, 0.0, INF], [NAN, -INF, NAN, -0.0, INF]),
    ];
    for device in devices() {
        for (name, op, value, da, db) in &cases {
            let (x, y) = (
                tensor(&a, &[5], device).requires_grad_(true),
                tensor(&b, &[5], device).requires_grad_(true),
            );
            let out = op(&x, &y);
            assert_values(&format!("{name} on {device}"), &out, value);
            let grads = grad(&[&out.sum()], &[&x, &y], None, false);
            assert_values(&format!("{name}'s first gradient on {device}"), &grads[0], da);
            assert_values(&format!("{name}'s second gradient on {device}"), &grads[1], db);
        }
        let x = tensor(&[NAN, 1.0, INF, -INF], &[2, 2], device);
        assert_values("permute", &x.permute(&[1, 0]), &[NAN, INF, 1.0, -INF]);
        assert_values("pad", &x.pad(&[(1, 0)], 0.0), &[0.0, NAN, 1.0, 0.0, INF, -INF]);
    }
}

/// Division by a number divides, as PyTorch's CPU does: one rounding (a product by `1 / c`
/// rounds twice), and a subnormal divisor whose reciprocal overflows still gives the quotient.
#[test]
fn division_by_a_number_divides() {
    for device in devices() {
        // In f64, 1 / 1e-310 is inf: the product by the reciprocal would be inf.
        let x = tensor(&[1e-300, -3.0, 0.0, INF], &[4], device).requires_grad_(true);
        let y = x.div_scalar(1e-310);
        assert_values(
            &format!("div_scalar on {device}"),
            &y,
            &[1e-300 / 1e-310, -3.0 / 1e-310, 0.0, INF],
        );
        // In f32, x / 3 and x * (1 / 3) differ in the last bit for 1 in 3 or so of these.
        let values: Vec<f32> = (1..200).map(|i| i as f32 * 0.37).collect();
        let x = Tensor::from_vec(values.clone(), &[values.len()])
            .unwrap()
            .to_device(device)
            .unwrap();
        let divided = x.div_scalar(3.0).to_vec_f64();
        for (v, got) in values.iter().zip(divided) {
            assert_eq!(got as f32, v / 3.0, "{v} / 3 on {device}");
        }
        let x = x.requires_grad_(true);
        let g = grad(&[&x.div_scalar(4.0).sum()], &[&x], None, false);
        assert_values(&format!("div_scalar's gradient on {device}"), &g[0], &[0.25; 199]);
    }
}

/// maximum and minimum give NaN where either operand is NaN, and both operands get the
/// gradient there; at ties each gets half (PyTorch's rule).
#[test]
fn maximum_and_minimum_propagate_nan_and_split_ties() {
    for device in devices() {
        let a = tensor(&[NAN, 1.0, 2.0, 3.0, -INF], &[5], device).requires_grad_(true);
        let b = tensor(&[1.0, NAN, 2.0, 1.0, INF], &[5], device).requires_grad_(true);
        for (name, out, want, da_want, db_want) in [
            (
                "maximum",
                a.maximum(&b),
                [NAN, NAN, 2.0, 3.0, INF],
                [1.0, 1.0, 0.5, 1.0, 0.0],
                [1.0, 1.0, 0.5, 0.0, 1.0],
            ),
            (
                "minimum",
                a.minimum(&b),
                [NAN, NAN, 2.0, 1.0, -INF],
                [1.0, 1.0, 0.5, 0.0, 1.0],
                [1.0, 1.0, 0.5, 1.0, 0.0],
            ),
        ] {
            assert_values(&format!("{name} on {device}"), &out, &want);
            let grads = grad(&[&out.sum()], &[&a, &b], None, false);
            assert_values(&format!("{name}'s first gradient on {device}"), &grads[0], &da_want);
            assert_values(&format!("{name}'s second gradient on {device}"), &grads[1], &db_want);
        }
    }
}

/// `max()` of a tensor holding NaN is NaN, and its gradient goes to the NaNs, split evenly
/// (PyTorch's `max()`); `max_dims` is PyTorch's `amax`, whose gradient on a NaN row is NaN.
#[test]
fn max_over_nan_is_nan_with_the_gradient_on_the_nans() {
    for device in devices() {
        let (y, dx) = value_and_grad(&[1.0, NAN, 3.0, NAN], device, |x| x.max());
        assert_values(&format!("max on {device}"), &y, &[NAN]);
        assert_values(&format!("max's gradient on {device}"), &dx, &[0.0, 0.5, 0.0, 0.5]);
        let (y, dx) = value_and_grad(&[3.0, 1.0, 3.0], device, |x| x.max());
        assert_values("max at a tie", &y, &[3.0]);
        assert_values("max's gradient at a tie", &dx, &[0.5, 0.0, 0.5]);
        let (y, dx) = value_and_grad(&[1.0, NAN, 3.0, 2.0, 5.0, 5.0], device, |x| {
            x.reshape(&[2, 3]).max_dims(&[1], false)
        });
        assert_values(&format!("max_dims on {device}"), &y, &[NAN, 5.0]);
        assert_values(
            &format!("max_dims' gradient on {device}"),
            &dx,
            &[NAN, NAN, NAN, 0.0, 0.5, 0.5],
        );
    }
}

/// A ReLU fused into a convolution passes NaN on as the separate ReLU does, and weight
/// clipping leaves a NaN parameter NaN (a divergence guard must see it).
#[test]
fn fused_activations_and_weight_clipping_keep_nan() {
    let o = ConvOptions::new().padding(1);
    for device in devices() {
        // 8 output channels: the CPU takes its register tile, whose epilogue applies the ReLU.
        for out_channels in [2, 8] {
            let mut values: Vec<f64> = (0..2 * 3 * 5 * 5).map(|i| ((i * 7 % 11) as f64 - 5.0) / 4.0).collect();
            values[17] = NAN;
            let x = tensor(&values, &[2, 3, 5, 5], device).requires_grad_(true);
            let w = Tensor::randn(&[out_channels, 3, 3, 3], DType::F64, 1)
                .to_device(device)
                .unwrap()
                .requires_grad_(true);
            let fused = x.conv2d_activated(&w, None, o, Activation::Relu);
            let separate = x.conv2d(&w, None, o).relu();
            assert_eq!(fused.grad_fn_name(), Some("conv2d_activated"));
            let (f, s) = (fused.to_vec_f64(), separate.to_vec_f64());
            assert!(f.iter().any(|v| v.is_nan()), "the NaN reaches the output on {device}");
            assert_values(&format!("fused relu on {device}"), &fused, &s);
            let gf = grad(&[&fused.sum()], &[&x, &w], None, false);
            let gs = grad(&[&separate.sum()], &[&x, &w], None, false);
            assert_values("fused relu's input gradient", &gf[0], &gs[0].to_vec_f64());
            assert_values("fused relu's weight gradient", &gf[1], &gs[1].to_vec_f64());
        }
        let p = tensor(&[NAN, 0.5, -0.5, 0.001], &[4], device);
        p.apply_update(None, &[], earthmover::OptimizerUpdate::Clamp { min: -0.01, max: 0.01 });
        assert_values(&format!("clipping on {device}"), &p, &[NAN, 0.01, -0.01, 0.001]);
        // -0 passes a bound of 0, in clamp and in the clipping alike, as PyTorch's.
        let negative_zero = |t: &Tensor| t.to_vec_f64()[0].to_bits() == (-0.0f64).to_bits();
        assert!(
            negative_zero(&tensor(&[-0.0], &[1], device).clamp(0.0, 1.0)),
            "clamp on {device}"
        );
        let p = tensor(&[-0.0], &[1], device);
        p.apply_update(None, &[], earthmover::OptimizerUpdate::Clamp { min: 0.0, max: 0.01 });
        assert!(negative_zero(&p), "clipping at a bound of 0 on {device}");
    }
}

/// Reductions, matmul, norms and log-probabilities at NaN and infinities, values and
/// gradients as PyTorch's: `inf - inf` is NaN, `inf * 0` is NaN, a class masked with a logit
/// of -inf has probability 0 and adds nothing to the cross-entropy.
#[test]
fn reductions_matmul_norms_and_losses_at_nan_and_infinities() {
    for device in devices() {
        let (y, dx) = value_and_grad(&[INF, -INF, 1.0], device, |x| x.sum());
        assert_values("sum of inf and -inf", &y, &[NAN]);
        assert_values("its gradient", &dx, &[1.0; 3]);
        let (y, dx) = value_and_grad(&[INF, 1.0], device, |x| x.mean());
        assert_values("mean with inf", &y, &[INF]);
        assert_values("its gradient", &dx, &[0.5; 2]);
        let a = tensor(&[NAN, 1.0, 2.0, 3.0], &[2, 2], device);
        let eye = tensor(&[1.0, 0.0, 0.0, 1.0], &[2, 2], device);
        assert_values("matmul with NaN", &a.matmul(&eye), &[NAN, NAN, 2.0, 3.0]);
        let a = tensor(&[INF, 1.0, 2.0, 3.0], &[2, 2], device);
        assert_values("matmul with inf (inf * 0)", &a.matmul(&eye), &[INF, NAN, 2.0, 3.0]);
        let (y, dx) = value_and_grad(&[-INF, 0.0, 1.0], device, |x| x.log_softmax(0));
        assert_values(
            "log_softmax with -inf",
            &y,
            &[-INF, -1.3132616875182228, -0.31326168751822286],
        );
        assert_values("its gradient", &dx, &[1.0, 0.1931757358900147, -1.1931757358900148]);
        let logits = tensor(&[-INF, 0.0, 1.0, 2.0, -INF, 0.0], &[2, 3], device).requires_grad_(true);
        let loss = logits.cross_entropy(&[2, 0]);
        assert_values("cross-entropy with masked classes", &loss, &[0.22009484928059775]);
        let dx = grad(&[&loss], &[&logits], None, false).remove(0);
        let want = [
            0.0,
            0.13447071068499755,
            -0.13447071068499755,
            -0.05960146101105884,
            0.0,
            0.059601461011058766,
        ];
        assert_values("its gradient", &dx, &want);
        let x = tensor(&[3.0, NAN, 1.0, 4.0], &[2, 2], device).requires_grad_(true);
        let norms = x.per_sample_norm();
        assert_values("per-sample norm with NaN", &norms, &[NAN, 4.123105625617661]);
        let dx = grad(&[&norms.sum()], &[&x], None, false).remove(0);
        assert_values(
            "its gradient",
            &dx,
            &[NAN, NAN, 0.24253562503633297, 0.9701425001453319],
        );
    }
}

// ------------------------------------------------------------------ empty and 0-d tensors

/// Means over nothing are NaN (0 / 0), sums over nothing 0, and the gradient of an empty
/// tensor is an empty tensor of its shape.
#[test]
fn reductions_over_empty_tensors_are_pytorchs() {
    for device in devices() {
        let x = tensor(&[], &[3, 0], device).requires_grad_(true);
        assert_values("mean of an empty tensor", &x.mean(), &[NAN]);
        assert_values("sum of an empty tensor", &x.sum(), &[0.0]);
        let rows = x.mean_dims(&[1], false);
        assert_eq!(rows.shape(), &[3]);
        assert_values("mean over an empty dim", &rows, &[NAN; 3]);
        assert_values("variance over an empty dim", &x.var_dims(&[1], false), &[NAN; 3]);
        assert_eq!(x.mean_dims(&[0], false).shape(), &[0]);
        assert_eq!(x.max_dims(&[0], false).shape(), &[0], "a max over a non-empty dim");
        let dx = grad(&[&x.sum()], &[&x], None, false).remove(0);
        assert_eq!(dx.shape(), &[3, 0]);
        let dx = grad(&[&x.mul_scalar(2.0).sum_dims(&[0], false).sum()], &[&x], None, false).remove(0);
        assert_eq!(dx.shape(), &[3, 0]);
    }
}

/// Every op family takes empty tensors as PyTorch does: the shapes it gives, NaN for a mean
/// of nothing, zeros for a product over an empty inner dim, and empty gradients.
#[test]
fn every_op_family_takes_empty_tensors() {
    for device in devices() {
        let empty = |shape: &[usize]| tensor(&[], shape, device).requires_grad_(true);
        let ones = |shape: &[usize]| tensor(&vec![1.0; shape.iter().product()], shape, device);
        type Case<'a> = (&'a str, Tensor, &'a [usize], &'a [f64]);
        let (a, b) = (empty(&[3, 0]), empty(&[0, 4]));
        let rows = empty(&[0, 3]);
        let cases: Vec<Case> = vec![
            ("matmul over an empty inner dim", a.matmul(&b), &[3, 4], &[0.0; 12]),
            ("matmul of no rows", rows.matmul(&ones(&[3, 2])), &[0, 2], &[]),
            (
                "matmul of an empty batch",
                empty(&[0, 2, 4]).matmul(&ones(&[4, 3])),
                &[0, 2, 3],
                &[],
            ),
            (
                "linear of an empty batch",
                empty(&[0, 4]).linear(&ones(&[3, 4]), Some(&ones(&[3]))),
                &[0, 3],
                &[],
            ),
            ("log_softmax of no rows", rows.log_softmax(1), &[0, 3], &[]),
            ("log_softmax over no classes", a.log_softmax(1), &[3, 0], &[]),
            ("cross_entropy of no rows", rows.cross_entropy(&[]), &[], &[NAN]),
            (
                "bce of nothing",
                empty(&[0]).binary_cross_entropy_with_logits(&tensor(&[], &[0], device)),
                &[],
                &[NAN],
            ),
            (
                "concat with an empty tensor",
                Tensor::concat(&[&ones(&[2, 3]), &rows], 0),
                &[2, 3],
                &[1.0; 6],
            ),
            ("pad of an empty tensor", rows.pad(&[(1, 1)], 0.0), &[0, 5], &[]),
            ("per-sample norm of no samples", rows.per_sample_norm(), &[0], &[]),
            ("per-sample norm of empty samples", a.per_sample_norm(), &[3], &[0.0; 3]),
            ("variance of nothing", empty(&[0]).var_dims(&[0], false), &[], &[NAN]),
            ("permute of an empty tensor", rows.permute(&[1, 0]), &[3, 0], &[]),
            ("narrow to nothing", ones(&[2, 3]).narrow(1, 1, 0), &[2, 0], &[]),
            ("exp of an empty tensor", rows.exp(), &[0, 3], &[]),
            (
                "broadcast with an empty dim",
                empty(&[0, 1]).add(&ones(&[3])),
                &[0, 3],
                &[],
            ),
            (
                "stack of empty tensors",
                Tensor::stack(&[&empty(&[0]), &empty(&[0])], 0),
                &[2, 0],
                &[],
            ),
            ("reshape of an empty tensor", rows.reshape(&[3, 0]), &[3, 0], &[]),
        ];
        for (what, out, shape, values) in cases {
            assert_eq!(out.shape(), shape, "{what} on {device}");
            assert_values(&format!("{what} on {device}"), &out, values);
        }
        // Gradients of empty leaves are empty tensors of their shapes.
        let loss = a.matmul(&b).sum().add(&rows.exp().sum());
        let grads = grad(&[&loss], &[&a, &b, &rows], None, false);
        let shapes: Vec<&[usize]> = grads.iter().map(|g| g.shape()).collect();
        assert_eq!(shapes, [&[3, 0][..], &[0, 4], &[0, 3]], "on {device}");
    }
}

#[test]
fn an_empty_maximum_and_a_repeated_dim_are_refused_as_pytorch_refuses_them() {
    for device in devices() {
        let empty = tensor(&[], &[3, 0], device);
        assert_refused("max of empty", || drop(empty.max()), &["max", "[3, 0]", "empty"]);
        assert_refused(
            "max over an empty dim",
            || drop(empty.max_dims(&[1], false)),
            &["max_dims", "dim 1", "[3, 0]"],
        );
        let x = tensor(&[1.0; 6], &[2, 3], device);
        for dims in [&[0, 0][..], &[1, -1]] {
            assert_refused(
                "a repeated dim",
                || drop(x.sum_dims(dims, false)),
                &["sum_dims", "more than once", "[2, 3]"],
            );
        }
    }
}

/// Dim 0 and -1 of a 0-dimensional tensor name the scalar itself, as in PyTorch.
#[test]
fn dims_of_a_scalar_and_squeeze_follow_pytorch() {
    for device in devices() {
        let s = tensor(&[3.0], &[], device);
        assert_eq!(s.sum_dims(&[0], false).shape(), &[] as &[usize]);
        assert_values("sum(0) of a scalar", &s.sum_dims(&[-1], true), &[3.0]);
        assert_eq!(s.flatten(0).shape(), &[1]);
        assert_eq!(s.flatten(-1).shape(), &[1]);
        assert_eq!(s.squeeze(0).shape(), &[] as &[usize]);
        assert_eq!(s.max_dims(&[0], false).shape(), &[] as &[usize]);
        assert_refused(
            "dim 1 of a scalar",
            || drop(s.sum_dims(&[1], false)),
            &["sum_dims", "dim 1"],
        );
        // squeeze of a dim that is not 1 leaves the tensor as it is.
        let x = tensor(&[1.0; 6], &[2, 3], device);
        assert_eq!(x.squeeze(1).shape(), &[2, 3]);
        assert_eq!(x.unsqueeze(2).squeeze(-1).shape(), &[2, 3]);
    }
}

// ------------------------------------------------------------------ matmul

/// `matmul` broadcasts batch dims and takes 1-D operands with NumPy's rules; the values are
/// the per-batch products, and the gradients (summed over the broadcast dims) pass
/// finite-difference checks at first and second order.
#[test]
fn matmul_broadcasts_and_takes_vectors_as_numpy() {
    let cases: [(&[usize], &[usize], &[usize]); 8] = [
        (&[2, 1, 3, 4], &[5, 4, 2], &[2, 5, 3, 2]),
        (&[1, 3, 4], &[2, 4, 5], &[2, 3, 5]),
        (&[2, 3, 4], &[1, 1, 4, 5], &[1, 2, 3, 5]),
        (&[4], &[4, 3], &[3]),
        (&[3, 4], &[4], &[3]),
        (&[4], &[4], &[]),
        (&[4], &[2, 4, 3], &[2, 3]),
        (&[2, 3, 4], &[4], &[2, 3]),
    ];
    for device in devices() {
        for (i, &(a_shape, b_shape, out_shape)) in cases.iter().enumerate() {
            let a = Tensor::randn(a_shape, DType::F64, 10 + i as u64)
                .to_device(device)
                .unwrap();
            let b = Tensor::randn(b_shape, DType::F64, 20 + i as u64)
                .to_device(device)
                .unwrap();
            let c = a.matmul(&b);
            assert_eq!(c.shape(), out_shape, "{a_shape:?} @ {b_shape:?} on {device}");
            // Against products of single matrices, taken from the operands broadcast by hand.
            let (a2, b2) = (as_matrices(&a, true), as_matrices(&b, false));
            let want = reference_matmul(&a2, &b2, out_shape);
            assert_values(&format!("{a_shape:?} @ {b_shape:?} on {device}"), &c, &want);
            let tolerance = Tolerance::default();
            let f = |t: &[Tensor]| t[0].matmul(&t[1]);
            gradcheck(f, &[a.clone(), b.clone()], tolerance)
                .unwrap_or_else(|e| panic!("{a_shape:?} @ {b_shape:?}: {e}"));
            gradgradcheck(f, &[a, b], tolerance).unwrap_or_else(|e| panic!("{a_shape:?} @ {b_shape:?}: {e}"));
        }
        let s = tensor(&[2.0], &[], device);
        assert_refused("a scalar operand", || drop(s.matmul(&s)), &["matmul", "at least 1 dim"]);
        let (a, b) = (tensor(&[1.0; 6], &[2, 3], device), tensor(&[1.0; 6], &[2, 3], device));
        assert_refused(
            "mismatched inner dims",
            || drop(a.matmul(&b)),
            &["matmul", "[2, 3]", "do not multiply"],
        );
        let (a, b) = (
            tensor(&[1.0; 24], &[2, 3, 4], device),
            tensor(&[1.0; 60], &[3, 4, 5], device),
        );
        assert_refused(
            "batch dims that do not broadcast",
            || drop(a.matmul(&b)),
            &["[2, 3, 4]", "[3, 4, 5]"],
        );
    }
}

/// A matmul operand as NumPy sees it: a 1-D left operand is a row `[1, k]`, a 1-D right one
/// a column `[k, 1]`.
fn as_matrices(t: &Tensor, left: bool) -> (Vec<usize>, Vec<f64>) {
    let shape = match (t.rank(), left) {
        (1, true) => vec![1, t.shape()[0]],
        (1, false) => vec![t.shape()[0], 1],
        _ => t.shape().to_vec(),
    };
    (shape, t.to_vec_f64())
}

/// The broadcast batched product of two operands (shape, values), element by element.
fn reference_matmul(a: &(Vec<usize>, Vec<f64>), b: &(Vec<usize>, Vec<f64>), out_shape: &[usize]) -> Vec<f64> {
    let ((a_shape, a), (b_shape, b)) = (a, b);
    let (m, k, n) = (
        a_shape[a_shape.len() - 2],
        a_shape[a_shape.len() - 1],
        b_shape[b_shape.len() - 1],
    );
    let (a_batch, b_batch) = (&a_shape[..a_shape.len() - 2], &b_shape[..b_shape.len() - 2]);
    let batch = earthmover::kernels::broadcast_shapes(a_batch, b_batch).unwrap();
    let count: usize = batch.iter().product();
    // The flat index of batch `i` in an operand whose batch dims broadcast to `batch`.
    let index_in = |own: &[usize], i: usize| -> usize {
        let mut rest = i;
        let mut index = 0;
        let mut stride = 1;
        for d in (0..batch.len()).rev() {
            let coordinate = rest % batch[d];
            rest /= batch[d];
            if d + own.len() >= batch.len() {
                let size = own[d + own.len() - batch.len()];
                index += if size == 1 { 0 } else { coordinate * stride };
                stride *= size;
            }
        }
        index
    };
    let mut out = Vec::new();
    for i in 0..count {
        let (ai, bi) = (index_in(a_batch, i), index_in(b_batch, i));
        for r in 0..m {
            for c in 0..n {
                out.push((0..k).map(|p| a[(ai * m + r) * k + p] * b[(bi * k + p) * n + c]).sum());
            }
        }
    }
    assert_eq!(out.len(), out_shape.iter().product::<usize>());
    out
}

// ------------------------------------------------------------------ convolution geometry

/// Geometry PyTorch refuses is refused at the op with the shapes and parameters in the
/// message; none of it wraps around or reaches a kernel.
#[test]
fn bad_convolution_geometry_is_a_clear_error() {
    for device in devices() {
        let x = tensor(&[0.0; 10], &[1, 2, 1, 5], device);
        let flat = tensor(&[], &[1, 2, 0, 5], device);
        let w = tensor(&[0.0; 54], &[2, 3, 3, 3], device);
        assert_refused(
            "conv_transpose2d of a height-0 input",
            || drop(flat.conv_transpose2d(&w, None, ConvOptions::new())),
            &["conv_transpose2d", "[1, 2, 0, 5]", "[2, 3, 3, 3]", "height and width"],
        );
        let w0 = tensor(&[], &[3, 2, 0, 3], device);
        assert_refused(
            "a kernel of size 0",
            || drop(x.conv2d(&w0, None, ConvOptions::new())),
            &["conv2d", "[3, 2, 0, 3]", "kernel size must be positive"],
        );
        let w3 = tensor(&[0.0; 54], &[3, 2, 3, 3], device);
        assert_refused(
            "a kernel taller than the input",
            || drop(x.conv2d(&w3, None, ConvOptions::new())),
            &["conv2d", "[1, 2, 1, 5]", "larger than the padded input"],
        );
        assert_refused(
            "stride 0",
            || drop(x.conv2d(&w3, None, ConvOptions::new().stride(0).padding(1))),
            &["conv2d", "stride"],
        );
        assert_refused(
            "padding that leaves no output",
            || drop(x.conv_transpose2d(&w, None, ConvOptions::new().padding(4))),
            &["conv_transpose2d", "padding (4, 4)", "0 or less"],
        );
    }
}

/// A convolution with no output channels gives an empty output, and its gradients are zeros
/// for the input and empty for the weight, on the rectangle path (2 input channels) and on the
/// register tile (8); one with no input channels gives its bias. (PyTorch refuses the first;
/// earthmover computes both, deliberately: see docs/architecture.md.)
#[test]
fn convolutions_with_no_channels_compute_their_empty_or_bias_results() {
    for device in devices() {
        for channels in [2, 8] {
            let x = Tensor::randn(&[2, channels, 5, 5], DType::F64, 3)
                .to_device(device)
                .unwrap()
                .requires_grad_(true);
            let w = tensor(&[], &[0, channels, 3, 3], device).requires_grad_(true);
            let y = x.conv2d(&w, None, ConvOptions::new().padding(1));
            assert_eq!(y.shape(), &[2, 0, 5, 5]);
            let grads = grad(&[&y.sum()], &[&x, &w], None, false);
            assert_values("the input's gradient", &grads[0], &vec![0.0; 2 * channels * 25]);
            assert_eq!(grads[1].shape(), &[0, channels, 3, 3]);
            // conv_transpose2d with no output channels: the same adjoint path.
            let wt = tensor(&[], &[channels, 0, 3, 3], device).requires_grad_(true);
            let yt = x.conv_transpose2d(&wt, None, ConvOptions::new().padding(1));
            assert_eq!(yt.shape(), &[2, 0, 5, 5]);
        }
        let x = tensor(&[], &[1, 0, 4, 4], device);
        let w = tensor(&[], &[3, 0, 3, 3], device);
        let b = tensor(&[1.0, 2.0, 3.0], &[3], device);
        let y = x.conv2d(&w, Some(&b), ConvOptions::new());
        assert_values(
            "a conv of no input channels",
            &y,
            &[[1.0; 4], [2.0; 4], [3.0; 4]].concat(),
        );
    }
}

// ------------------------------------------------------------------ deliberate differences

/// Where earthmover answers otherwise than PyTorch, on purpose (docs/architecture.md,
/// "Semantics"): softplus is exact above 20 (PyTorch returns x), `sum_dims(&[])` is the
/// identity (NumPy's convention; PyTorch sums everything), and the per-sample norm is
/// differentiable at every order at 0.
#[test]
fn deliberate_differences_stay_as_documented() {
    for device in devices() {
        let x = tensor(&[25.0, 30.0], &[2], device);
        let gap = x.softplus().sub(&x).to_vec_f64();
        assert!(gap.iter().all(|&g| g > 0.0 && g < 1e-10), "softplus(x) - x = {gap:?}");
        let y = tensor(&[1.0, 2.0, 3.0, 4.0], &[2, 2], device);
        assert_eq!(y.sum_dims(&[], false).to_vec_f64(), vec![1.0, 2.0, 3.0, 4.0]);
        // The norm of an all-zero sample: gradient 0 and a finite second derivative (PyTorch's
        // `norm` gives NaN there at second order).
        let x = tensor(&[0.0; 6], &[2, 3], device).requires_grad_(true);
        let g = grad(&[&x.per_sample_norm().sum()], &[&x], None, true).remove(0);
        assert_values("the norm's gradient at 0", &g, &[0.0; 6]);
        let gg = grad(&[&g.sum()], &[&x], None, false).remove(0);
        assert!(gg.to_vec_f64().iter().all(|v| v.is_finite()), "{:?}", gg.to_vec_f64());
    }
}

// ------------------------------------------------------------------ shape arithmetic

/// Sizes whose arithmetic would overflow are refused with the shape in the message; they never
/// wrap around to a small, wrong size.
#[test]
fn shape_arithmetic_never_wraps() {
    let huge = [1usize << 40, 1 << 40];
    assert!(Tensor::from_vec(vec![0.0f64; 4], &huge)
        .unwrap_err()
        .0
        .contains("more than a usize counts"));
    assert_refused(
        "zeros of a huge shape",
        || drop(Tensor::zeros(&huge, DType::F32)),
        &["[1099511627776, 1099511627776]"],
    );
    for device in devices() {
        let x = tensor(&[1.0; 6], &[2, 3], device);
        assert_refused(
            "narrow past the end",
            || drop(x.narrow(1, usize::MAX, 2)),
            &["narrow", "[2, 3]"],
        );
        assert_refused(
            "pad past usize",
            || drop(x.pad(&[(usize::MAX, 1)], 0.0)),
            &["pad", "overflows"],
        );
    }
}
