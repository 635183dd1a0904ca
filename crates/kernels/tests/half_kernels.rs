//! The 16-bit kernels of elementwise.cu, reduce.cu and layout.cu (`unary_bf16`, `reduce_sum_f16`,
//! ...), which a CUDA device runs for bf16 and f16 operands instead of widening them: each in
//! one launch, and bit for bit what the half rule gives on the same device (cast to f32, the
//! f32 kernel, cast back), since they widen on load, run the f32 kernel's code and round once
//! on store. With `cuda_kernels.rs` (the f32 kernels against the CPU) and `half.rs` (every op
//! family in 16 bits against f64, on every device) this ties them to the CPU.
//!
//! `cargo test -p earthmover-kernels --features emulator --test half_kernels`

mod common;

use common::{cuda_devices, random};
use earthmover_kernels::cuda::device::GpuDevice;
use earthmover_kernels::{BinaryOp, DType, Device, ReduceOp, Storage, UnaryOp};
use std::sync::{Mutex, MutexGuard};

/// Held by every test: each counts its device's launches, which the others' would disturb.
static DEVICE: Mutex<()> = Mutex::new(());

fn lock_device() -> MutexGuard<'static, ()> {
    DEVICE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

const HALVES: [DType; 2] = [DType::BF16, DType::F16];

/// `n` values for `seed`: random ones in [-2, 2) and, among them, zeros of both signs,
/// infinities, NaN, values past f16's range, and subnormals of each 16-bit format.
fn values(n: usize, seed: u64) -> Vec<f64> {
    let special = [
        0.0,
        -0.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        70000.0,
        -1e5,
        3e-6,
        -1e-39,
        1.0,
        0.1,
    ];
    let mut v = random(n, seed);
    for (i, &s) in special.iter().enumerate() {
        if i * 7 < n {
            v[i * 7] = s;
        }
    }
    v
}

/// `what` in 16 bits on `device`: one launch, and the same bits as `widened` (the f32 path).
#[track_caller]
fn check(device: Device, what: &str, native: impl FnOnce() -> Storage, widened: impl FnOnce() -> Storage) {
    let gpu = GpuDevice::get(device).unwrap();
    let before = gpu.counters();
    let got = native();
    let counted = gpu.counters().since(&before);
    let want = widened();
    assert_eq!(counted.launches, 1, "{device} {what}: {counted}");
    assert_eq!(got.dtype(), want.dtype(), "{device} {what}");
    assert_eq!(got.device(), device, "{device} {what}");
    let (got, want) = (got.to_f64_vec(), want.to_f64_vec());
    assert_eq!(got.len(), want.len(), "{device} {what}");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let same = (g.is_nan() && w.is_nan()) || g.to_bits() == w.to_bits();
        assert!(same, "{device} {what}[{i}]: {g}, through f32 {w}");
    }
}

#[test]
fn unary_and_binary_ops_and_select_in_16_bits_are_the_f32_kernels_between_casts() {
    let _device = lock_device();
    let unary_ops = UnaryOp::EVERY;
    let binary_ops = BinaryOp::EVERY;
    for device in cuda_devices() {
        for dtype in HALVES {
            let on = |v: &[f64]| Storage::from_f64_slice(v, dtype, device).unwrap();
            let wide = |s: &Storage| s.cast(DType::F32);
            let x = on(&values(301, 1));
            for op in unary_ops {
                check(
                    device,
                    &format!("{dtype} {op:?}"),
                    || x.unary(op),
                    || wide(&x).unary(op).cast(dtype),
                );
            }
            // Broadcast [5, 1, 3] with [1, 4, 3], and two operands of one shape.
            let (a, b) = (on(&values(15, 2)), on(&values(12, 3)));
            // d's specials reversed: at other positions than c's.
            let (c, d) = (
                on(&values(60, 4)),
                on(&values(60, 5).into_iter().rev().collect::<Vec<_>>()),
            );
            for op in binary_ops {
                let (sa, sb, out) = ([5, 1, 3], [1, 4, 3], [5, 4, 3]);
                check(
                    device,
                    &format!("{dtype} broadcast {op:?}"),
                    || a.binary(op, &sa, &b, &sb, &out),
                    || wide(&a).binary(op, &sa, &wide(&b), &sb, &out).cast(dtype),
                );
                check(
                    device,
                    &format!("{dtype} {op:?}"),
                    || c.binary(op, &[60], &d, &[60], &[60]),
                    || wide(&c).binary(op, &[60], &wide(&d), &[60], &[60]).cast(dtype),
                );
            }
            // A condition with zeros of both signs and NaN (which selects `a`).
            let cond = on(&values(60, 6)
                .iter()
                .map(|v| if *v > 0.5 { 0.0 } else { *v })
                .collect::<Vec<_>>());
            check(
                device,
                &format!("{dtype} where"),
                || cond.where_cond(&c, &d),
                || wide(&cond).where_cond(&wide(&c), &wide(&d)).cast(dtype),
            );
        }
    }
}

#[test]
fn reductions_in_16_bits_sum_in_f32_and_round_once() {
    let _device = lock_device();
    for device in cuda_devices() {
        for dtype in HALVES {
            // Finite values, so that the sums are numbers whose rounding shows; then with the
            // specials (NaN and infinities propagate alike).
            let finite = Storage::from_f64_slice(&random(7 * 53 * 5, 7), dtype, device).unwrap();
            let special = Storage::from_f64_slice(&values(7 * 53 * 5, 8), dtype, device).unwrap();
            for (x, which) in [(&finite, "finite"), (&special, "special")] {
                for op in [ReduceOp::Sum, ReduceOp::Max] {
                    // Within rows, across one dim, and everything into one (many warps).
                    for out in [[7, 53, 1], [7, 1, 5], [1, 1, 1]] {
                        check(
                            device,
                            &format!("{dtype} {which} {op:?} to {out:?}"),
                            || x.reduce(op, &[7, 53, 5], &out),
                            || x.cast(DType::F32).reduce(op, &[7, 53, 5], &out).cast(dtype),
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn strided_copies_and_writes_in_16_bits_move_the_bits() {
    let _device = lock_device();
    for device in cuda_devices() {
        for dtype in HALVES {
            let x = Storage::from_f64_slice(&values(6 * 7, 9), dtype, device).unwrap();
            // The transpose of a 6 x 7 matrix, from offset 0; a narrowed view from offset 8.
            for (offset, strides, shape) in [(0, [1, 7], [7, 6]), (8, [7, 2], [4, 3])] {
                check(
                    device,
                    &format!("{dtype} strided copy {strides:?}"),
                    || x.strided_copy(offset, &strides, &shape),
                    || x.cast(DType::F32).strided_copy(offset, &strides, &shape).cast(dtype),
                );
            }
            // Write 3 x 4 values into a 6 x 7 buffer's every other row, from column 2.
            let src = Storage::from_f64_slice(&values(12, 10), dtype, device).unwrap();
            let mut dst = x.clone();
            check(
                device,
                &format!("{dtype} strided write"),
                || {
                    dst.strided_write(2, &[14, 1], &src, &[3, 4]);
                    dst
                },
                || {
                    let mut dst = x.cast(DType::F32);
                    dst.strided_write(2, &[14, 1], &src.cast(DType::F32), &[3, 4]);
                    dst.cast(dtype)
                },
            );
        }
    }
}

/// The rule holds against the CPU too: the native kernels give the CPU's half-rule bits for an
/// op whose f32 arithmetic is exact (so no order or library can differ): a broadcast add of
/// values that are bf16 and f16 integers.
#[test]
fn exact_ops_in_16_bits_give_the_cpus_bits() {
    let _device = lock_device();
    for device in cuda_devices() {
        for dtype in HALVES {
            let ints = |n: usize, seed| -> Vec<f64> { random(n, seed).iter().map(|v| (v * 64.0).round()).collect() };
            let (a, b) = (ints(15, 11), ints(12, 12));
            let run = |device| {
                let on = |v: &[f64]| Storage::from_f64_slice(v, dtype, device).unwrap();
                on(&a)
                    .binary(BinaryOp::Add, &[5, 1, 3], &on(&b), &[1, 4, 3], &[5, 4, 3])
                    .reduce(ReduceOp::Sum, &[5, 4, 3], &[5, 1, 3])
                    .to_f64_vec()
            };
            assert_eq!(run(device), run(Device::Cpu), "{device} {dtype}");
        }
    }
}
