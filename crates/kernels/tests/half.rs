//! bf16 and f16 storage: the conversions on every device, and the half rule (an op on 16-bit
//! operands computes in f32 and rounds once) checked against f64 with stated tolerances.
//!
//! `cargo test -p earthmover-kernels --test half` (with `--features emulator`, the CUDA cast
//! kernels and the half ops run on the emulated GPU too).

mod common;

use common::{cuda_devices, random};
use earthmover_kernels::{
    bf16, f16, BinaryOp, ConvGeometry, CpuStorage, DType, Device, MatmulProblem, ReduceOp, Storage, UnaryOp,
};

const HALVES: [DType; 2] = [DType::BF16, DType::F16];

/// f32 values that exercise a conversion to 16 bits: signed zeros, infinities, NaN, the
/// edges of f16's range (its largest finite 65,504 and the halfway point 65,520 above it, its
/// smallest normal and subnormal and the halfway points around them), ties that round to even
/// both ways in either format, f32's own denormals, and 20,000 random bit patterns.
fn conversion_inputs() -> Vec<f32> {
    let mut values = vec![
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        f32::MAX,
        f32::MIN_POSITIVE,
        1e-40,
        -1e-45,
        65504.0,
        65519.99,
        65520.0,
        -65520.0,
        6.1035156e-5,       // 2^-14, f16's smallest normal
        5.9604645e-8,       // 2^-24, f16's smallest subnormal
        2.9802322e-8,       // 2^-25: a tie between 0 and 2^-24, to 0
        4.4703484e-8,       // 1.5 * 2^-25: rounds to 2^-24
        8.940697e-8,        // 1.5 * 2^-24: a tie between 1 and 2 subnormal steps, to 2
        1.0 + 1.0 / 256.0,  // a tie in bf16, to even (1.0)
        1.0 + 3.0 / 256.0,  // a tie in bf16, to even (up)
        1.0 + 1.0 / 2048.0, // a tie in f16, to even (1.0)
        1.0 + 3.0 / 2048.0, // a tie in f16, to even (up)
        3.389e38,           // rounds to infinity in bf16
    ];
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..20_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        values.push(f32::from_bits((state >> 32) as u32));
    }
    values
}

/// The bits of 16-bit values, with every NaN as one pattern per sign (payloads may differ).
fn canonical_bits(storage: &Storage) -> Vec<u16> {
    let host = storage.to_device(Device::Cpu).unwrap();
    let Storage::Cpu(host) = host else { unreachable!() };
    let bits: Vec<(u16, bool)> = match host {
        CpuStorage::BF16(v) => v.iter().map(|h| (h.to_bits(), h.is_nan())).collect(),
        CpuStorage::F16(v) => v.iter().map(|h| (h.to_bits(), h.is_nan())).collect(),
        other => panic!("not a 16-bit storage: {other:?}"),
    };
    bits.into_iter()
        .map(|(b, nan)| if nan { (b & 0x8000) | 0x7fff } else { b })
        .collect()
}

#[test]
fn cpu_conversions_are_the_half_crates_rounding_to_nearest_even() {
    let values = conversion_inputs();
    let f32s = Storage::from_f32(values.clone());
    let bf = canonical_bits(&f32s.cast(DType::BF16));
    let f = canonical_bits(&f32s.cast(DType::F16));
    for (i, &v) in values.iter().enumerate() {
        let (want_bf, want_f) = (bf16::from_f32(v), f16::from_f32(v));
        if v.is_nan() {
            assert!(bf[i] & 0x7fff == 0x7fff && f[i] & 0x7fff == 0x7fff, "{v}");
            continue;
        }
        assert_eq!(bf[i], want_bf.to_bits(), "bf16 of {v:e}");
        assert_eq!(f[i], want_f.to_bits(), "f16 of {v:e}");
    }
    // The ties above, spelt out: to even.
    let ties = Storage::from_f32(vec![1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0, 65520.0, 2.9802322e-8]);
    assert_eq!(
        ties.cast(DType::BF16).to_f64_vec()[..2],
        [1.0, 1.0 + 4.0 / 256.0],
        "bf16 ties"
    );
    let f16_values = ties.cast(DType::F16).to_f64_vec();
    assert_eq!(f16_values[2], f64::INFINITY, "65,520 rounds up to f16's infinity");
    assert_eq!(f16_values[3], 0.0, "2^-25 ties to zero");
    // Widening is exact, and f64 goes through f32 (as PyTorch converts).
    let wide = Storage::from_f32(vec![1.0 + 1.0 / 128.0])
        .cast(DType::BF16)
        .cast(DType::F64);
    assert_eq!(wide.to_f64_vec(), [1.0 + 1.0 / 128.0]);
}

#[test]
fn gpu_conversions_give_the_cpus_bits() {
    let values = conversion_inputs();
    let cpu = Storage::from_f32(values.clone());
    for device in cuda_devices() {
        let gpu = cpu.to_device(device).unwrap();
        for half in HALVES {
            let on_gpu = gpu.cast(half);
            assert_eq!(on_gpu.device(), device);
            assert_eq!(on_gpu.dtype(), half);
            let (got, want) = (canonical_bits(&on_gpu), canonical_bits(&cpu.cast(half)));
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    g,
                    w,
                    "{device} {half} of {:e} (bits {:#x})",
                    values[i],
                    values[i].to_bits()
                );
            }
            // Back to f32 and f64 on the device: exact.
            for wide in [DType::F32, DType::F64] {
                let back = on_gpu.cast(wide).to_f64_vec();
                let want = cpu.cast(half).cast(wide).to_f64_vec();
                for (i, (g, w)) in back.iter().zip(&want).enumerate() {
                    assert!(
                        g.to_bits() == w.to_bits() || g.is_nan() && w.is_nan(),
                        "{device} {half}->{wide} [{i}]: {g} {w}"
                    );
                }
            }
            // Upload and download keep the bits.
            let round_trip = cpu.cast(half).to_device(device).unwrap();
            assert_eq!(canonical_bits(&round_trip), want, "{device} {half} upload");
        }
    }
}

/// Half an ulp of `x` in `dtype` (the most a round to nearest moves it), at least half the
/// smallest subnormal step.
fn half_ulp(x: f64, dtype: DType) -> f64 {
    let (mantissa_bits, min_exponent) = match dtype {
        DType::BF16 => (7, -126),
        DType::F16 => (10, -14),
        other => panic!("{other}"),
    };
    let exponent = x.abs().log2().floor().max(min_exponent as f64);
    0.5 * 2f64.powf(exponent - mantissa_bits as f64)
}

/// `got` (16-bit) against `exact` (f64 on the same rounded inputs): within half an ulp of the
/// 16-bit result, plus `f32_error` for the f32 arithmetic before the one rounding.
#[track_caller]
fn assert_rounded_once(what: &str, got: &Storage, exact: &[f64], f32_error: f64) {
    let dtype = got.dtype();
    assert!(dtype.is_half(), "{what}: the result is {dtype}, not a 16-bit float");
    for (i, (&g, &e)) in got.to_f64_vec().iter().zip(exact).enumerate() {
        let tolerance = half_ulp(e, dtype) + f32_error * (1.0 + e.abs());
        assert!(
            (g - e).abs() <= tolerance,
            "{what} {dtype}[{i}]: {g}, exact {e}, tolerance {tolerance:e}"
        );
    }
}

/// Every op family on 16-bit operands, on `device`, against the same op in f64 on the same
/// (rounded) values.
fn check_half_ops(device: Device) {
    for half in HALVES {
        let round = |values: &[f64]| -> (Storage, Storage) {
            let h = Storage::from_f64_slice(values, half, device).unwrap();
            let exact = Storage::from_f64_slice(&h.to_f64_vec(), DType::F64, Device::Cpu).unwrap();
            (h, exact)
        };
        let tag = |op: &str| format!("{device} {op}");
        let (x, x64) = round(&random(37 * 5, 1));
        let (y, y64) = round(&random(5, 2));
        let f32_eps = f32::EPSILON as f64;

        let got = x.unary(UnaryOp::Tanh);
        assert_rounded_once(
            &tag("tanh"),
            &got,
            &x64.unary(UnaryOp::Tanh).to_f64_vec(),
            4.0 * f32_eps,
        );
        let got = x.binary(BinaryOp::Mul, &[37, 5], &y, &[1, 5], &[37, 5]);
        let want = x64.binary(BinaryOp::Mul, &[37, 5], &y64, &[1, 5], &[37, 5]);
        assert_rounded_once(&tag("broadcast mul"), &got, &want.to_f64_vec(), f32_eps);
        // A sum of 37: f32 accumulation, one rounding at the end.
        let got = x.reduce(ReduceOp::Sum, &[37, 5], &[1, 5]);
        let want = x64.reduce(ReduceOp::Sum, &[37, 5], &[1, 5]);
        assert_rounded_once(&tag("sum"), &got, &want.to_f64_vec(), 37.0 * 2.0 * f32_eps);
        let got = x.strided_copy(1, &[1, 5], &[5, 7]);
        assert_eq!(
            got.to_f64_vec(),
            x64.strided_copy(1, &[1, 5], &[5, 7]).to_f64_vec(),
            "{device} transpose is exact"
        );

        let (a, a64) = round(&random(13 * 37, 3));
        let (b, b64) = round(&random(37 * 11, 4));
        let problem = MatmulProblem::plain(13, 11, 37);
        let got = a.matmul(&b, &problem);
        let want = a64.matmul(&b64, &problem);
        assert_rounded_once(&tag("matmul"), &got, &want.to_f64_vec(), 37.0 * 4.0 * f32_eps);

        let g = ConvGeometry::conv2d([2, 3, 9, 8], [4, 3, 3, 3], (2, 2), (1, 1), (1, 1)).unwrap();
        let (input, input64) = round(&random(2 * 3 * 9 * 8, 5));
        let (weight, weight64) = round(&random(4 * 3 * 3 * 3, 6));
        let (bias, bias64) = round(&random(4, 7));
        let relu = Some(UnaryOp::Relu);
        let got = input.conv2d_forward(&weight, Some(&bias), relu, &g);
        let want = input64.conv2d_forward(&weight64, Some(&bias64), relu, &g);
        assert_rounded_once(
            &tag("conv2d + bias + relu"),
            &got,
            &want.to_f64_vec(),
            28.0 * 4.0 * f32_eps,
        );
        let (grad_out, grad_out64) = round(&random(g.batch * 4 * g.out_h * g.out_w, 8));
        let got = grad_out.conv2d_input_adjoint(&weight, None, None, &g);
        let want = grad_out64.conv2d_input_adjoint(&weight64, None, None, &g);
        assert_rounded_once(
            &tag("conv2d input adjoint"),
            &got,
            &want.to_f64_vec(),
            40.0 * 4.0 * f32_eps,
        );
        let got = input.conv2d_weight_grad(&grad_out, &g);
        let want = input64.conv2d_weight_grad(&grad_out64, &g);
        assert_rounded_once(
            &tag("conv2d weight grad"),
            &got,
            &want.to_f64_vec(),
            50.0 * 4.0 * f32_eps,
        );
    }
}

#[test]
fn half_ops_compute_in_f32_and_round_once_on_the_cpu() {
    check_half_ops(Device::Cpu);
}

#[test]
fn half_ops_compute_in_f32_and_round_once_on_every_cuda_device() {
    for device in cuda_devices() {
        check_half_ops(device);
    }
}

#[test]
fn operands_of_different_dtypes_are_refused_by_name() {
    let a = Storage::from_f32(vec![1.0; 4]).cast(DType::BF16);
    let b = Storage::from_f32(vec![1.0; 4]);
    let refused = std::panic::catch_unwind(|| a.binary(BinaryOp::Add, &[4], &b, &[4], &[4]));
    let message = *refused.unwrap_err().downcast::<String>().unwrap();
    assert!(message.contains("bf16") && message.contains("f32"), "{message}");
}

#[test]
fn dtypes_parse_and_print_by_name() {
    for dtype in DType::ALL {
        assert_eq!(dtype.name().parse::<DType>(), Ok(dtype));
        assert_eq!(dtype.to_string(), dtype.name());
    }
    assert_eq!("bfloat16".parse::<DType>(), Ok(DType::BF16));
    assert_eq!("half".parse::<DType>(), Ok(DType::F16));
    assert!("int8"
        .parse::<DType>()
        .unwrap_err()
        .contains("expected f32, f64, bf16 or f16"));
    assert_eq!(DType::BF16.size_in_bytes(), 2);
}
