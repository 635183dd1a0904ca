//! What the finite-difference test files (`tests/grad_*.rs`) share: the devices they run on,
//! the tolerances, seeded inputs, and `check` / `check2`, which run `gradcheck` and
//! `gradgradcheck` on a device.
//!
//! Every check runs on every device there is, the way one test suite runs against every
//! backend: the inputs are built on the CPU from a seed (so every device sees the same
//! values) and moved to the device, and the checker runs there, in f64.
//!
//! Each test file includes this module with `mod common;` and uses only part of it.
#![allow(dead_code)]

use earthmover::kernels::cuda::device::cuda_device_count;
use earthmover::tensor::gradcheck::{gradcheck, gradgradcheck, Tolerance};
use earthmover::{DType, Device, Tensor};
use std::io::Write;
use std::sync::Once;

// ---------------------------------------------------------------- devices

/// The devices to run on: the CPU always; the CUDA emulator when built with
/// `--features emulator` (the GPU's kernels and code paths, executed on the CPU); CUDA GPU 0
/// when there is one. The first call says which ran and why any were skipped, and on which
/// SIMD path the CPU kernels run. When `EARTHMOVER_SIMD` asks for a path this processor lacks
/// (CI runs the checks once per path), nothing runs: the first call says why.
pub fn devices() -> Vec<Device> {
    let path = match earthmover::kernels::cpu::simd::configured_path() {
        Ok(path) => path,
        Err(e) => {
            static SAY_SKIP: Once = Once::new();
            SAY_SKIP.call_once(|| say(&format!("skipped: {e}")));
            return Vec::new();
        }
    };
    let mut run = vec![Device::Cpu];
    let mut skipped = Vec::new();
    if cfg!(feature = "emulator") {
        run.push(Device::CudaEmulator);
    } else {
        skipped.push("cuda-emulator (not built in: --features emulator)");
    }
    if cuda_device_count() > 0 {
        run.push(Device::Cuda(0));
    } else {
        skipped.push("cuda:0 (no CUDA GPU found)");
    }
    static SAY_ONCE: Once = Once::new();
    SAY_ONCE.call_once(|| {
        let names: Vec<String> = run.iter().map(|d| d.to_string()).collect();
        let mut line = format!("checks run on: {} (the CPU on its {path} path)", names.join(", "));
        if !skipped.is_empty() {
            line += &format!("; skipped: {}", skipped.join(", "));
        }
        say(&line);
    });
    run
}

/// A line for every run's log, passing or not: straight to the process's stderr, since the
/// test harness captures `eprintln!` and shows it only for failing tests.
pub fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Run `body` on each of [`devices`], in turn (the CPU first, so that a failure on the CPU
/// shows before the slower devices run).
pub fn for_each_device(mut body: impl FnMut(Device)) {
    for device in devices() {
        body(device);
    }
}

/// `t` (built on the CPU) on `device`.
pub fn on(device: Device, t: &Tensor) -> Tensor {
    t.to_device(device)
        .unwrap_or_else(|e| panic!("moving a tensor to {device}: {e}"))
}

// ---------------------------------------------------------------- tolerances

/// The finite-difference tolerance of an f64 check on `device` (`gradcheck` refuses f32: its
/// central differences are noise at this step). `|analytic - numeric| <= atol + rtol |numeric|`
/// with step eps = 1e-6, atol = 1e-5, rtol = 1e-3 (the checker's default) on every device:
/// - on the CPU, the truncation error of a central difference is O(eps^2 f''') ~ 1e-12 and its
///   rounding error ~ 1e-16 |f| / eps ~ 1e-10, both far under atol;
/// - the GPU kernels (and the emulator, which runs the same kernels) sum in another order
///   than the CPU's (a tree per block in reductions, slices of 16 in matmul), which moves an
///   f64 result by ~1e-16 relative: again ~1e-10 after dividing by 2 eps. Their order is
///   fixed (no atomics), so both evaluations of a difference round alike. So the GPU needs no
///   looser tolerance, and a looser one would hide a wrong backward rule.
///
/// Measured: at atol 1e-7 and rtol 1e-5, a hundred times tighter, the first-order conv grids
/// and the matmul, norm, loss, layout and elementwise checks pass on the CPU and the emulator
/// alike; at 1e-8 and 1e-6 the conv grids fail, on the CPU first.
pub fn tolerance(device: Device) -> Tolerance {
    // Every device named, so that a new one has to be given its tolerance here.
    match device {
        Device::Cpu | Device::CudaEmulator | Device::Cuda(_) => Tolerance::default(),
    }
}

/// The tolerance of an f64 function that goes through f32 on the way (a `to_dtype` round
/// trip): f32 rounds at ~6e-8 relative, which a step of 1e-6 would turn into an error of
/// ~0.1, so the step is 1e-2 (the function is linear: the step adds no truncation error).
pub fn through_f32_tolerance(device: Device) -> Tolerance {
    Tolerance {
        eps: 1e-2,
        ..tolerance(device)
    }
}

// ---------------------------------------------------------------- seeded inputs, on the CPU

/// Seeded standard-normal values in f64, the dtype finite differences need.
pub fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, DType::F64, seed)
}

/// Seeded uniform values in `[low, high)`, in f64.
pub fn uniform(shape: &[usize], low: f64, high: f64, seed: u64) -> Tensor {
    Tensor::rand_uniform(shape, low, high, DType::F64, seed)
}

/// Values with `0.5 <= |v| < 2` and random signs: safe denominators and bases of negative
/// powers.
pub fn away_from_zero(shape: &[usize], seed: u64) -> Tensor {
    uniform(shape, 0.5, 2.0, seed).mul(&randn(shape, seed + 1).sign())
}

/// `x` with every value closer than 0.05 to one of `kinks` moved to 0.1 from it, on its own
/// side, so that `x +- eps` never straddles a kink. The kinks must be more than 0.2 apart.
pub fn away_from(x: &Tensor, kinks: &[f64]) -> Tensor {
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

// ---------------------------------------------------------------- the checks

/// Fail with the checker's own message, which names the input and element that disagree.
#[track_caller]
pub fn assert_ok(result: Result<(), String>, what: &str) {
    if let Err(message) = result {
        panic!("{what}: {message}");
    }
}

/// `inputs` (built on the CPU) moved to `device`.
pub fn all_on(device: Device, inputs: &[Tensor]) -> Vec<Tensor> {
    inputs.iter().map(|t| on(device, t)).collect()
}

/// First order on `device`: the analytic gradient of `f` at `inputs` (built on the CPU, moved
/// here) matches central differences.
#[track_caller]
pub fn check(device: Device, what: &str, f: impl Fn(&[Tensor]) -> Tensor, inputs: &[Tensor]) {
    assert_ok(
        gradcheck(f, &all_on(device, inputs), tolerance(device)),
        &format!("gradcheck of {what} on {device}"),
    );
}

/// Second order on `device`: the gradient of the (create_graph) gradient, alone. Most tests
/// want [`check2`], both orders.
#[track_caller]
pub fn check_second_order(device: Device, what: &str, f: impl Fn(&[Tensor]) -> Tensor, inputs: &[Tensor]) {
    assert_ok(
        gradgradcheck(f, &all_on(device, inputs), tolerance(device)),
        &format!("gradgradcheck of {what} on {device}"),
    );
}

/// First and second order on `device`.
#[track_caller]
pub fn check2(device: Device, what: &str, f: impl Fn(&[Tensor]) -> Tensor, inputs: &[Tensor]) {
    check(device, what, &f, inputs);
    check_second_order(device, what, &f, inputs);
}
