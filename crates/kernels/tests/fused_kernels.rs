//! The fused kernels (reduce.cu's `reduce_sum_mapped`, layout.cu's `strided_unary` and
//! `padded_copy`, elementwise.cu's `lerp` and `binary_activated`, through the `Storage` methods
//! of the same names) against the CPU's unfused ops, and bit for bit against the unfused
//! kernels they replace: odd sizes, several blocks of outputs, reductions over inner, outer and
//! strided dims, broadcasts along every dim. An op past the kernels' 8 dims (a broadcast, a
//! reduction, a strided copy or write, a pad; fused or not) is the device's failure, with a
//! message, not a panic.
//!
//! `cargo test -p earthmover-kernels --features emulator --test fused_kernels`

mod common;

use common::{cuda_devices, random};
use earthmover_kernels::{broadcast_strides, contiguous_strides, BinaryOp, DType, Device, ReduceOp, Storage, UnaryOp};

fn bits(s: &Storage) -> Vec<u64> {
    s.to_f64_vec().iter().map(|v| v.to_bits()).collect()
}

fn on(values: &[f64], dtype: DType, device: Device) -> Storage {
    Storage::from_f64_slice(values, dtype, device).unwrap()
}

/// `|gpu - cpu| <= abs + rel |cpu|` element by element (sums in another order).
fn assert_close(what: &str, gpu: &Storage, cpu: &Storage) {
    let (g, c) = (gpu.to_f64_vec(), cpu.to_f64_vec());
    assert_eq!(g.len(), c.len(), "{what}: lengths");
    for (i, (a, b)) in g.iter().zip(&c).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 + 1e-5 * b.abs(),
            "{what}: element {i}: GPU {a}, CPU {b}"
        );
    }
}

#[test]
fn sums_with_an_op_before_and_after_match_the_unfused_ops() {
    let cases: [(&[usize], &[usize]); 5] = [
        (&[3, 5, 7], &[3, 1, 1]),        // per sample (a norm)
        (&[3, 5, 7], &[1, 1, 1]),        // all (a mean)
        (&[3, 5, 7], &[1, 5, 7]),        // the outer dim: strided reads
        (&[2, 3, 17, 5], &[1, 3, 1, 1]), // a channel mean over batch and pixels
        (&[1031, 3], &[1031, 1]),        // more outputs than a block
    ];
    let ops: [(Option<UnaryOp>, Option<UnaryOp>); 4] = [
        (None, Some(UnaryOp::MulScalar(1.0 / 7.0))),
        (Some(UnaryOp::Pow(2.0)), Some(UnaryOp::Sqrt)),
        (Some(UnaryOp::AddScalar(-1.0)), None),
        (None, None),
    ];
    for device in cuda_devices() {
        for (i, (shape, out_shape)) in cases.iter().enumerate() {
            let values = random(shape.iter().product(), 60 + i as u64);
            for dtype in [DType::F32, DType::F64] {
                let (cpu, gpu) = (on(&values, dtype, Device::Cpu), on(&values, dtype, device));
                for (before, after) in ops {
                    let what = format!("{device} {dtype} {shape:?} -> {out_shape:?}, {before:?} / {after:?}");
                    let fused = gpu.sum_mapped(before, shape, out_shape, after);
                    assert_close(&what, &fused, &cpu.sum_mapped(before, shape, out_shape, after));
                    // The unfused kernels: the op, the sum, the op.
                    let mapped = before.map_or(gpu.clone(), |op| gpu.unary(op));
                    let sum = mapped.reduce(ReduceOp::Sum, shape, out_shape);
                    let unfused = after.map_or(sum.clone(), |op| sum.unary(op));
                    assert_eq!(bits(&fused), bits(&unfused), "{what}: bit for bit");
                }
            }
        }
    }
}

#[test]
fn strided_unary_matches_a_strided_copy_then_the_op() {
    let cases: [(&[usize], &[usize]); 4] = [
        (&[1, 1], &[5, 7]),          // a scalar everywhere (a mean's gradient)
        (&[5, 1], &[5, 7]),          // a column
        (&[1, 7], &[3, 5, 7]),       // a row, and a new leading dim
        (&[3, 1, 9], &[3, 1031, 9]), // several blocks
    ];
    let ops = [UnaryOp::MulScalar(1.0 / 35.0), UnaryOp::Neg, UnaryOp::LeakyRelu(0.2)];
    for device in cuda_devices() {
        for (i, (shape, out_shape)) in cases.iter().enumerate() {
            let values = random(shape.iter().product(), 70 + i as u64);
            let strides = broadcast_strides(shape, out_shape);
            for dtype in [DType::F32, DType::F64] {
                let (cpu, gpu) = (on(&values, dtype, Device::Cpu), on(&values, dtype, device));
                for op in ops {
                    let what = format!("{device} {dtype} {shape:?} -> {out_shape:?}, {op:?}");
                    let fused = gpu.strided_unary(0, &strides, out_shape, op);
                    assert_eq!(
                        bits(&fused),
                        bits(&cpu.strided_unary(0, &strides, out_shape, op)),
                        "{what}: against the CPU"
                    );
                    let unfused = gpu.strided_copy(0, &strides, out_shape).unary(op);
                    assert_eq!(bits(&fused), bits(&unfused), "{what}: against the unfused kernels");
                }
            }
        }
        // A strided view with an offset: a column of a matrix.
        let values = random(4 * 6, 80);
        let (cpu, gpu) = (on(&values, DType::F32, Device::Cpu), on(&values, DType::F32, device));
        let op = UnaryOp::MulScalar(3.0);
        assert_eq!(
            bits(&gpu.strided_unary(2, &[6], &[4], op)),
            bits(&cpu.strided_unary(2, &[6], &[4], op)),
            "{device}: a column"
        );
    }
}

#[test]
fn sixteen_bit_sums_with_ops_round_after_each_op_as_before() {
    // Fusing would round once where the ops round three times: 16-bit storage runs them
    // unfused, on every device, so a GPU and the CPU keep the same rule.
    for device in cuda_devices() {
        let values = random(3 * 37, 90);
        for dtype in [DType::BF16, DType::F16] {
            let gpu = on(&values, dtype, device);
            let fused = gpu.sum_mapped(Some(UnaryOp::Pow(2.0)), &[3, 37], &[3, 1], Some(UnaryOp::Sqrt));
            let unfused = gpu
                .unary(UnaryOp::Pow(2.0))
                .reduce(ReduceOp::Sum, &[3, 37], &[3, 1])
                .unary(UnaryOp::Sqrt);
            assert_eq!(bits(&fused), bits(&unfused), "{device} {dtype}");
        }
    }
}

#[test]
fn padded_copies_match_a_fill_then_a_strided_write() {
    // (inner, before, outer): a narrow's gradient in each dim, a box touching every edge, a
    // box that is the whole shape, several blocks.
    let cases: [(&[usize], &[usize], &[usize]); 5] = [
        (&[3, 2, 5], &[0, 1, 0], &[3, 4, 5]),
        (&[2, 1, 7, 7], &[0, 0, 0, 0], &[2, 1, 8, 8]),
        (&[1, 3], &[2, 0], &[4, 3]),
        (&[3, 5], &[0, 0], &[3, 5]),
        (&[5, 300], &[1, 413], &[7, 1031]),
    ];
    for device in cuda_devices() {
        for (i, (inner, before, outer)) in cases.iter().enumerate() {
            let values = random(inner.iter().product(), 100 + i as u64);
            for dtype in [DType::F32, DType::F64, DType::BF16, DType::F16] {
                let (cpu, gpu) = (on(&values, dtype, Device::Cpu), on(&values, dtype, device));
                for value in [0.0, -1.5] {
                    let what = format!("{device} {dtype} {inner:?} at {before:?} in {outer:?}, {value}");
                    let got = gpu.padded_copy(inner, before, outer, value).unwrap();
                    let want = cpu.padded_copy(inner, before, outer, value).unwrap();
                    assert_eq!(bits(&got), bits(&want), "{what}");
                }
            }
        }
    }
}

#[test]
fn a_box_outside_the_padded_shape_is_an_error() {
    for device in cuda_devices().into_iter().chain([Device::Cpu]) {
        let s = on(&random(6, 110), DType::F32, device);
        for (inner, before, outer) in [
            (&[2, 3][..], &[1, 0][..], &[2, 3][..]),
            (&[2, 3], &[0, 0], &[2, 3, 1]),
            (&[3, 3], &[0, 0], &[3, 3]), // 9 elements for 6
            (&[2, 2], &[0, 0], &[2, 2]),
        ] {
            let result = s.padded_copy(inner, before, outer, 0.0);
            assert!(result.is_err(), "{device}: {inner:?} at {before:?} in {outer:?}");
        }
    }
}

#[test]
fn lerp_matches_the_three_binary_ops_bit_for_bit() {
    // One weight per sample, per element, for everything; odd sizes over several blocks.
    let cases: [(&[usize], &[usize]); 3] = [(&[7, 1, 5, 3], &[7, 1, 1, 1]), (&[3, 347], &[3, 347]), (&[5, 3], &[1])];
    for device in cuda_devices() {
        for (i, (shape, weight_shape)) in cases.iter().enumerate() {
            let (start, end) = (
                random(shape.iter().product(), 140 + i as u64),
                random(shape.iter().product(), 150),
            );
            let weight = random(weight_shape.iter().product(), 160);
            for dtype in [DType::F32, DType::F64, DType::BF16] {
                let what = format!("{device} {dtype} {shape:?}, weights {weight_shape:?}");
                let [s, e, w] = [&start, &end, &weight].map(|v| on(v, dtype, device));
                let [sc, ec, wc] = [&start, &end, &weight].map(|v| on(v, dtype, Device::Cpu));
                let fused = s.lerp(&e, &w, shape, weight_shape);
                assert_eq!(
                    bits(&fused),
                    bits(&sc.lerp(&ec, &wc, shape, weight_shape)),
                    "{what}: the CPU"
                );
                let difference = e.binary(BinaryOp::Sub, shape, &s, shape, shape);
                let step = difference.binary(BinaryOp::Mul, shape, &w, weight_shape, shape);
                let unfused = s.binary(BinaryOp::Add, shape, &step, shape, shape);
                assert_eq!(bits(&fused), bits(&unfused), "{what}: the unfused kernels");
            }
        }
    }
}

#[test]
fn binary_activated_matches_the_binary_then_the_unary_kernel_bit_for_bit() {
    let acts = [UnaryOp::Relu, UnaryOp::LeakyRelu(0.2), UnaryOp::Tanh, UnaryOp::Sigmoid];
    // A bias over the last dim (a linear layer's) and over a middle one; several blocks.
    let cases: [(&[usize], &[usize]); 2] = [(&[7, 301], &[301]), (&[3, 5, 9], &[5, 1])];
    for device in cuda_devices() {
        for (i, (shape, bias_shape)) in cases.iter().enumerate() {
            let (x, bias) = (
                random(shape.iter().product(), 170 + i as u64),
                random(bias_shape.iter().product(), 180),
            );
            for dtype in [DType::F32, DType::F64, DType::F16] {
                let [a, b] = [&x, &bias].map(|v| on(v, dtype, device));
                let [ac, bc] = [&x, &bias].map(|v| on(v, dtype, Device::Cpu));
                for act in acts {
                    let what = format!("{device} {dtype} {shape:?} + {bias_shape:?}, {act:?}");
                    let fused = a.binary_activated(BinaryOp::Add, shape, &b, bias_shape, shape, act);
                    let unfused = a.binary(BinaryOp::Add, shape, &b, bias_shape, shape).unary(act);
                    assert_eq!(bits(&fused), bits(&unfused), "{what}: the unfused kernels");
                    let cpu = ac.binary_activated(BinaryOp::Add, shape, &bc, bias_shape, shape, act);
                    let (g, c) = (fused.to_f64_vec(), cpu.to_f64_vec());
                    for (j, (g, c)) in g.iter().zip(&c).enumerate() {
                        // tanh and sigmoid: the GPU's libm against Rust's, a few ulps (of f16
                        // when one of them rounds the other way).
                        let tolerance = if dtype == DType::F16 { 2e-3 } else { 1e-6 };
                        let close = (g - c).abs() <= tolerance * (1.0 + c.abs());
                        assert!(close, "{what}: element {j}: {g} against the CPU's {c}");
                    }
                }
            }
        }
    }
}

/// An op past the kernels' 8 dims is the device's failure with a message naming the op and
/// the shapes, returned by the next read, never a panic: a broadcast (a binary op, a lerp, a
/// bias add with its activation), a reduction (a sum, in bf16 too, a max, a mean's fused sum),
/// a strided copy (a permute, a mean's gradient), a strided write and a pad, of 9-dim tensors.
/// Each in a child process, since the failure is the device's for the rest of it.
#[cfg(feature = "emulator")]
#[test]
fn ops_past_8_dims_are_the_devices_failure() {
    const CHILD: &str = "EARTHMOVER_TEST_OPS_PAST_8_DIMS";
    let test = "ops_past_8_dims_are_the_devices_failure";
    let shape = [2, 1, 3, 1, 2, 1, 1, 2, 3];
    let weight_shape = [2, 1, 1, 1, 1, 1, 1, 1, 1];
    let kept = [1, 1, 3, 1, 2, 1, 1, 2, 1];
    // The first and last dims swapped.
    let permuted = [3, 1, 3, 1, 2, 1, 1, 2, 2];
    let permuted_strides = [1, 36, 12, 12, 6, 6, 6, 3, 36];
    let padded = [2, 1, 3, 1, 2, 1, 1, 2, 5];
    let before = [0, 0, 0, 0, 0, 0, 0, 0, 1];
    if let Ok(op) = std::env::var(CHILD) {
        let device = Device::CudaEmulator;
        let n = shape.iter().product();
        let (a, b) = (
            on(&random(n, 190), DType::F32, device),
            on(&random(n, 191), DType::F32, device),
        );
        let w = on(&random(2, 192), DType::F32, device);
        let out = match op.as_str() {
            "binary" => a.binary(BinaryOp::Add, &shape, &w, &weight_shape, &shape),
            "lerp" => a.lerp(&b, &w, &shape, &weight_shape),
            "binary_activated" => a.binary_activated(BinaryOp::Add, &shape, &w, &weight_shape, &shape, UnaryOp::Relu),
            "sum" => a.reduce(ReduceOp::Sum, &shape, &kept),
            "sum_bf16" => a.cast(DType::BF16).reduce(ReduceOp::Sum, &shape, &kept),
            "max" => a.reduce(ReduceOp::Max, &shape, &kept),
            "mean" => a.sum_mapped(None, &shape, &kept, Some(UnaryOp::MulScalar(0.25))),
            "permute" => a.strided_copy(0, &permuted_strides, &permuted),
            "mean_gradient" => {
                let strides = broadcast_strides(&weight_shape, &shape);
                w.strided_unary(0, &strides, &shape, UnaryOp::MulScalar(0.25))
            }
            "strided_write" => {
                let mut out = a.clone();
                out.strided_write(0, &permuted_strides, &b, &permuted);
                out
            }
            "pad" => a.padded_copy(&shape, &before, &padded, 0.0).unwrap(),
            other => unreachable!("{other}"),
        };
        eprintln!("the read's error: {}", out.try_to_f64_vec().unwrap_err());
        return;
    }
    let broadcast =
        "[2, 1, 3, 1, 2, 1, 1, 2, 3] and [2, 1, 1, 1, 1, 1, 1, 1, 1] broadcast to [2, 1, 3, 1, 2, 1, 1, 2, 3]";
    let reduced = "[2, 1, 3, 1, 2, 1, 1, 2, 3] reduced to [1, 1, 3, 1, 2, 1, 1, 2, 1]";
    let view = "a view of shape [3, 1, 3, 1, 2, 1, 1, 2, 2], strides [1, 36, 12, 12, 6, 6, 6, 3, 36]";
    let broadcast_view = "a view of shape [2, 1, 3, 1, 2, 1, 1, 2, 3], strides [1, 0, 0, 0, 0, 0, 0, 0, 0]";
    let boxed =
        "a box of shape [2, 1, 3, 1, 2, 1, 1, 2, 3] at [0, 0, 0, 0, 0, 0, 0, 0, 1] inside [2, 1, 3, 1, 2, 1, 1, 2, 5]";
    for (op, name, what) in [
        ("binary", "binary op", broadcast),
        ("lerp", "lerp", broadcast),
        ("binary_activated", "binary op with an activation", broadcast),
        ("sum", "sum", reduced),
        ("sum_bf16", "sum", reduced),
        ("max", "max", reduced),
        ("mean", "sum with an op before or after (a mean, a norm)", reduced),
        ("permute", "strided copy", view),
        (
            "mean_gradient",
            "strided copy with an op (a mean's gradient)",
            broadcast_view,
        ),
        ("strided_write", "strided write", view),
        ("pad", "pad", boxed),
    ] {
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(CHILD, op)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&child.stderr);
        assert!(child.status.success(), "{op}: the child panicked: {stderr}");
        let message =
            format!("the read's error: {name} on a GPU supports at most 8 dims; got 9 ({what} on cuda-emulator");
        assert!(stderr.contains(&message), "{op}: wanted {message:?} in {stderr}");
    }
}

/// An op past 8 dims with nothing to write (a dim of 0) launches nothing and fails nothing: an
/// empty output of any rank is no reason to stop a device.
#[test]
fn empty_ops_past_8_dims_are_no_failure() {
    let Some(device) = cuda_devices().into_iter().next() else {
        return;
    };
    let shape = [2, 1, 0, 1, 2, 1, 1, 2, 3];
    let kept = [1, 1, 0, 1, 2, 1, 1, 2, 1];
    let empty = on(&[], DType::F32, device);
    let w = on(&random(2, 193), DType::F32, device);
    let ones = [2, 1, 1, 1, 1, 1, 1, 1, 1];
    let strides = contiguous_strides(&shape);
    let outputs = [
        empty.binary(BinaryOp::Add, &shape, &w, &ones, &shape),
        empty.reduce(ReduceOp::Sum, &shape, &kept),
        empty.strided_copy(0, &strides, &shape),
        empty.padded_copy(&shape, &[0; 9], &shape, 0.0).unwrap(),
    ];
    for (i, out) in outputs.iter().enumerate() {
        assert_eq!(out.try_to_f64_vec(), Ok(vec![]), "{device}: output {i}");
    }
}
