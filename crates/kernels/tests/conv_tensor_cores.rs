//! The tensor cores' bf16 and f16 convolutions (`kernels/conv_mma.cu`) against the CPU's f32
//! convolutions of the same 16-bit values, on every CUDA device here: the emulator (where the
//! mma is a modelled warp-wide operation) when built with `--features emulator`, and GPU 0 when
//! there is one.
//!
//! `cargo test -p earthmover-kernels --features emulator --test conv_tensor_cores`
//!
//! - each kernel (forward with a bias, input adjoint with a bias, weight gradient in 1 to 7
//!   split-K slices) with an f32 output against the CPU's f32 convolution of the widened inputs,
//!   on odd geometries: stride 2 and 3, padding, dilation, 1, 3 and 70 channels, batches of 1 to
//!   5, several tiles each way;
//! - the same kernels with a 16-bit output: exactly the f32 output rounded once (the half rule);
//! - `Storage`'s convolutions of 16-bit operands on a CUDA device: conv_mma.cu's kernels alone
//!   (no casts), the CPU's half-rule results within one 16-bit step, the split weight gradient
//!   the same bits from run to run;
//! - an activation in the forward pass's and the adjoint's epilogue: applied to the f32 sum
//!   (with the bias) before the one rounding, so the f32 output is the device's own activation
//!   pass over the unactivated f32 output, bit for bit, the 16-bit output that rounded once, and
//!   `Storage`'s 16-bit `act(conv + b)` one launch, within the half rule's bound of the CPU's;
//! - empty convolutions launch nothing (or give the bias, for K = 0), and an output dtype the
//!   kernels lack is the device's failure with a message, not a panic.
//!
//! Tolerances. Products of two bf16 or two f16 values are exact in f32, so the f32 outputs differ
//! from the CPU's only by the order and rounding of the f32 sums: at most `2 (K + 2)` f32
//! roundings of the sum of the products' magnitudes (`K` terms, plus the bias and, split, the
//! slices' sums). A 16-bit output adds its one rounding: half a step, 2^-8 relative in bf16,
//! 2^-11 in f16 (and 2^-25 absolute below f16's normal range).

mod common;

use common::{cuda_devices, geometry, random};
use earthmover_kernels::cuda::device::GpuDevice;
use earthmover_kernels::cuda::storage::GpuStorage;
use earthmover_kernels::{ConvGeometry, DType, Device, Storage, UnaryOp};
use std::sync::{Mutex, MutexGuard};

/// Held by every test: one counts a device's launches, which the others' would disturb.
static DEVICE: Mutex<()> = Mutex::new(());

fn lock_device() -> MutexGuard<'static, ()> {
    DEVICE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

const F32_EPS: f64 = f32::EPSILON as f64;
const HALVES: [DType; 2] = [DType::BF16, DType::F16];

/// Odd geometries: no channel count a multiple of an mma fragment (16 of k, 8 of n), no
/// pixel count a multiple of a tile.
fn geometries() -> Vec<ConvGeometry> {
    vec![
        // MNIST's first conv, smaller: 1 channel in (K = 25, one slice, mostly zero pairs),
        // stride 2 with padding 2.
        geometry([3, 1, 11, 13], 5, (5, 5), (2, 2), (2, 2), (1, 1)),
        // 3 channels in, 70 out (two column tiles), stride 3, dilation 2, a rectangle.
        geometry([2, 3, 13, 10], 70, (3, 2), (3, 3), (1, 2), (2, 1)),
        // 70 channels in (K = 630: 20 slices; the adjoint's N past a tile), 3 out.
        geometry([1, 70, 7, 6], 3, (3, 3), (1, 1), (1, 1), (1, 1)),
        // A generator's transposed conv seen from its conv: stride 2, 4 x 4, 5 samples (the
        // forward's M = 320 and the adjoint's M = 720 over several row tiles).
        geometry([5, 9, 12, 12], 33, (4, 4), (2, 2), (1, 1), (1, 1)),
        // The adjoint by phases of the stride: a kernel narrower than the stride along h (the
        // rows of phase 2 have no taps), wider along w; 20 channels in (the adjoint's N).
        geometry([2, 20, 11, 10], 7, (2, 5), (3, 2), (1, 2), (1, 1)),
        // A weight gradient the device splits (K = 1,024 pixels: 4 slices).
        split_geometry(),
    ]
}

fn split_geometry() -> ConvGeometry {
    geometry([4, 5, 16, 16], 6, (3, 3), (1, 1), (1, 1), (1, 1))
}

/// The operands of one geometry as 16-bit values (f64 here, exactly representable).
struct Case {
    dtype: DType,
    g: ConvGeometry,
    x: Vec<f64>,
    w: Vec<f64>,
    gy: Vec<f64>,
    bias_o: Vec<f64>,
    bias_c: Vec<f64>,
}

fn rounded(values: &[f64], dtype: DType) -> Vec<f64> {
    Storage::from_f64_slice(values, dtype, Device::Cpu)
        .unwrap()
        .to_f64_vec()
}

impl Case {
    fn new(dtype: DType, g: ConvGeometry, seed: u64) -> Case {
        let draw = |n: usize, s: u64| rounded(&random(n, seed * 10 + s), dtype);
        Case {
            dtype,
            x: draw(g.batch * g.in_channels * g.in_h * g.in_w, 1),
            w: draw(g.out_channels * g.patch_len(), 2),
            gy: draw(g.batch * g.out_channels * g.out_h * g.out_w, 3),
            bias_o: draw(g.out_channels, 4),
            bias_c: draw(g.in_channels, 5),
            g,
        }
    }

    fn on(&self, values: &[f64], dtype: DType, device: Device) -> Storage {
        Storage::from_f64_slice(values, dtype, device).unwrap()
    }

    /// The three convolutions on `device` in `dtype` (f32 for the CPU's reference; f64 with
    /// `abs` for the magnitudes of the sums: every operand's absolute value).
    fn run(&self, dtype: DType, device: Device, abs: bool) -> [Vec<f64>; 3] {
        let values = |v: &[f64]| -> Vec<f64> { v.iter().map(|x| if abs { x.abs() } else { *x }).collect() };
        let on = |v: &[f64]| self.on(&values(v), dtype, device);
        let (x, w, gy) = (on(&self.x), on(&self.w), on(&self.gy));
        let (bias_o, bias_c) = (on(&self.bias_o), on(&self.bias_c));
        [
            x.conv2d_forward(&w, Some(&bias_o), None, &self.g).to_f64_vec(),
            gy.conv2d_input_adjoint(&w, Some(&bias_c), None, &self.g).to_f64_vec(),
            x.conv2d_weight_grad(&gy, &self.g).to_f64_vec(),
        ]
    }

    /// The terms of each kernel's sums: K of its GEMM, plus the bias.
    fn terms(&self) -> [usize; 3] {
        let g = &self.g;
        let taps = g.kernel_h * g.kernel_w;
        [
            g.in_channels * taps + 1,
            g.out_channels * taps + 1,
            g.batch * g.out_h * g.out_w,
        ]
    }

    fn name(&self) -> String {
        format!("{} {:?}", self.dtype, self.g)
    }
}

/// Half a 16-bit step relative to the value, and f16's absolute half step below its normal range.
fn half_rounding(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::BF16 => (2f64.powi(-8), 0.0),
        _ => (2f64.powi(-11), 2f64.powi(-25)),
    }
}

/// The GPU storage of `s`.
fn gpu(s: &Storage) -> &GpuStorage {
    match s {
        Storage::Cuda(g) => g,
        Storage::Cpu(_) => unreachable!("on a CUDA device"),
    }
}

/// `got` within the f32 sums' bound of `want` (`2 (terms + slices + 2)` roundings of each
/// element's magnitude), plus `rel` of `want` and `abs`.
#[track_caller]
fn assert_within(what: &str, got: &[f64], want: &[f64], magnitudes: &[f64], sums: usize, (rel, abs): (f64, f64)) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let f32_error = 2.0 * (sums as f64 + 2.0) * F32_EPS;
    for (i, ((&g, &w), &m)) in got.iter().zip(want).zip(magnitudes).enumerate() {
        let tolerance = f32_error * m + rel * w.abs() + abs + 1e-30;
        assert!(
            (g - w).abs() <= tolerance,
            "{what}[{i}]: gpu {g}, cpu {w} (tolerance {tolerance})"
        );
    }
}

/// Each kernel with an f32 output against the CPU's f32 convolution of the same values, and
/// with a 16-bit output against its own f32 output rounded once, bit for bit.
#[test]
fn mma_convolutions_match_the_cpus_f32_convolutions() {
    let _device = lock_device();
    for device in cuda_devices() {
        for (seed, g) in geometries().into_iter().enumerate() {
            for dtype in HALVES {
                let case = Case::new(dtype, g, seed as u64);
                let [forward, adjoint, weight_grad] = case.run(DType::F32, Device::Cpu, false);
                let magnitudes = case.run(DType::F64, Device::Cpu, true);
                let [forward_terms, adjoint_terms, weight_grad_terms] = case.terms();
                let on = |v: &[f64]| case.on(v, dtype, device);
                let (x, w, gy) = (on(&case.x), on(&case.w), on(&case.gy));
                let (bias_o, bias_c) = (on(&case.bias_o), on(&case.bias_c));
                let (x, w, gy, bias_o, bias_c) = (gpu(&x), gpu(&w), gpu(&gy), gpu(&bias_o), gpu(&bias_c));
                let name = case.name();
                let to_f64 = |s: GpuStorage| Storage::Cuda(s).to_f64_vec();
                // The 16-bit output is the f32 output rounded once: the f32 output in 16 bits.
                let check_rounding = |what: &str, f32_out: &[f64], half_out: GpuStorage| {
                    let once = rounded(f32_out, dtype);
                    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&to_f64(half_out)), bits(&once), "{device} {what} {name}");
                };

                let f32_out = to_f64(x.conv2d_forward_mma(w, Some(bias_o), None, &g, DType::F32));
                let what = format!("{device} forward {name}");
                assert_within(&what, &f32_out, &forward, &magnitudes[0], forward_terms, (0.0, 0.0));
                check_rounding(
                    "forward",
                    &f32_out,
                    x.conv2d_forward_mma(w, Some(bias_o), None, &g, dtype),
                );

                let f32_out = to_f64(gy.conv2d_input_adjoint_mma(w, Some(bias_c), None, &g, DType::F32));
                let what = format!("{device} input adjoint {name}");
                assert_within(&what, &f32_out, &adjoint, &magnitudes[1], adjoint_terms, (0.0, 0.0));
                let half_out = gy.conv2d_input_adjoint_mma(w, Some(bias_c), None, &g, dtype);
                check_rounding("input adjoint", &f32_out, half_out);

                for slices in [1, 2, 3, 7, GpuStorage::weight_grad_slices(&g)] {
                    let f32_out = to_f64(x.conv2d_weight_grad_mma(gy, &g, slices, DType::F32));
                    let what = format!("weight grad in {slices} slices");
                    let sums = weight_grad_terms + slices;
                    let located = format!("{device} {what} {name}");
                    assert_within(&located, &f32_out, &weight_grad, &magnitudes[2], sums, (0.0, 0.0));
                    check_rounding(&what, &f32_out, x.conv2d_weight_grad_mma(gy, &g, slices, dtype));
                }
            }
        }
    }
}

/// `Storage`'s convolutions of 16-bit operands on a CUDA device run conv_mma.cu's kernels and
/// nothing else (no casts, no f32 kernel): forward and adjoint one launch, the weight gradient
/// one, or two when split; their results are the CPU's half rule (f32 sums, rounded once)
/// within one 16-bit step of the larger value plus the f32 sums' bound.
#[test]
fn half_storage_convolutions_on_a_cuda_device_are_the_mma_kernels_alone() {
    let _device = lock_device();
    for device in cuda_devices() {
        let gpu_device = GpuDevice::get(device).unwrap();
        for (seed, g) in geometries().into_iter().enumerate() {
            for dtype in HALVES {
                let case = Case::new(dtype, g, 100 + seed as u64);
                let before = gpu_device.launch_histogram();
                let got = case.run(dtype, device, false);
                let launched = gpu_device.launch_histogram().since(&before);
                // `run` uploads with no launch; each result is read back with none.
                let split = GpuStorage::weight_grad_slices(&g) > 1;
                let mut expected = vec![
                    (format!("conv2d_forward_mma_{dtype}"), 1),
                    (format!("conv2d_input_adjoint_mma_{dtype}"), 1),
                ];
                if split {
                    expected.push((format!("conv2d_weight_grad_mma_{dtype}_f32"), 1));
                    expected.push((format!("conv2d_weight_grad_mma_sum_slices_{dtype}"), 1));
                } else {
                    expected.push((format!("conv2d_weight_grad_mma_{dtype}"), 1));
                }
                let mut counted: Vec<(String, u64)> = launched
                    .by_count()
                    .into_iter()
                    .map(|(k, n)| (k.to_string(), n))
                    .collect();
                counted.sort();
                expected.sort();
                assert_eq!(counted, expected, "{device} {}", case.name());

                let want = case.run(dtype, Device::Cpu, false);
                let magnitudes = case.run(DType::F64, Device::Cpu, true);
                let (half_step, tiny) = half_rounding(dtype);
                for (i, terms) in case.terms().into_iter().enumerate() {
                    let what = format!(
                        "{device} {} {}",
                        ["forward", "input adjoint", "weight grad"][i],
                        case.name()
                    );
                    for (j, (&got, &want)) in got[i].iter().zip(&want[i]).enumerate() {
                        // Two f32 sums within their bound, each rounded once: one 16-bit step
                        // of the larger apart, plus the bound (the slices' sums included).
                        let step = 2.0 * half_step * got.abs().max(want.abs()) + 2.0 * tiny;
                        let tolerance = step + 2.0 * (terms as f64 + 66.0) * F32_EPS * magnitudes[i][j];
                        assert!((got - want).abs() <= tolerance, "{what}[{j}]: gpu {got}, cpu {want}");
                    }
                }
            }
        }
    }
}

/// One of the forward pass and the adjoint with an activation (or none), into an output dtype.
type MmaPass<'a> = dyn Fn(Option<UnaryOp>, DType) -> GpuStorage + 'a;

/// An activation in the epilogue acts on the f32 sum before the one rounding: with an f32
/// output it is the device's own activation pass over the f32 convolution, bit for bit; with a
/// 16-bit output, that rounded once (not the activation of a rounded sum, rounded again). Through
/// `Storage`, a 16-bit `act(conv + b)` is one launch, within the half rule's bound of the CPU's
/// (which applies the activation in f32 before its one rounding too).
#[test]
fn mma_epilogue_activations_act_before_the_one_rounding() {
    let _device = lock_device();
    let activations = [UnaryOp::LeakyRelu(0.2), UnaryOp::Relu, UnaryOp::Tanh];
    for device in cuda_devices() {
        let gpu_device = GpuDevice::get(device).unwrap();
        for (seed, g) in [geometries()[0], geometries()[3]].into_iter().enumerate() {
            for dtype in HALVES {
                let case = Case::new(dtype, g, 200 + seed as u64);
                let on = |v: &[f64]| case.on(v, dtype, device);
                let (x, w, gy) = (on(&case.x), on(&case.w), on(&case.gy));
                let (bias_o, bias_c) = (on(&case.bias_o), on(&case.bias_c));
                let bits = |s: GpuStorage| {
                    Storage::Cuda(s)
                        .to_f64_vec()
                        .iter()
                        .map(|v| v.to_bits())
                        .collect::<Vec<_>>()
                };
                for op in activations {
                    let what = format!("{device} {op:?} {}", case.name());
                    let passes: [(&str, &MmaPass); 2] = [
                        ("forward", &|act, out| {
                            gpu(&x).conv2d_forward_mma(gpu(&w), Some(gpu(&bias_o)), act, &g, out)
                        }),
                        ("adjoint", &|act, out| {
                            gpu(&gy).conv2d_input_adjoint_mma(gpu(&w), Some(gpu(&bias_c)), act, &g, out)
                        }),
                    ];
                    for (pass, run) in passes {
                        let fused = Storage::Cuda(run(Some(op), DType::F32)).to_f64_vec();
                        let to_bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        let separate = bits(run(None, DType::F32).unary(op));
                        assert_eq!(to_bits(&fused), separate, "{what} {pass}: f32 output");
                        let half = bits(run(Some(op), dtype));
                        assert_eq!(
                            half,
                            to_bits(&rounded(&fused, dtype)),
                            "{what} {pass}: the f32 output rounded once"
                        );
                    }

                    let before = gpu_device.launch_histogram();
                    let got = [
                        x.conv2d_forward(&w, Some(&bias_o), Some(op), &g),
                        gy.conv2d_input_adjoint(&w, Some(&bias_c), Some(op), &g),
                    ];
                    let launched = gpu_device.launch_histogram().since(&before);
                    let mut counted: Vec<(String, u64)> = launched
                        .by_count()
                        .into_iter()
                        .map(|(k, n)| (k.to_string(), n))
                        .collect();
                    counted.sort();
                    let mut expected = vec![
                        (format!("conv2d_forward_mma_{dtype}"), 1),
                        (format!("conv2d_input_adjoint_mma_{dtype}"), 1),
                    ];
                    expected.sort();
                    assert_eq!(counted, expected, "{what}: one launch each");

                    let cpu = |v: &[f64]| case.on(v, dtype, Device::Cpu);
                    let want = [
                        cpu(&case.x).conv2d_forward(&cpu(&case.w), Some(&cpu(&case.bias_o)), Some(op), &g),
                        cpu(&case.gy).conv2d_input_adjoint(&cpu(&case.w), Some(&cpu(&case.bias_c)), Some(op), &g),
                    ];
                    let magnitudes = case.run(DType::F64, Device::Cpu, true);
                    let (half_step, tiny) = half_rounding(dtype);
                    for (i, terms) in case.terms().into_iter().take(2).enumerate() {
                        let (got, want) = (got[i].to_f64_vec(), want[i].to_f64_vec());
                        for (j, (&got, &want)) in got.iter().zip(&want).enumerate() {
                            // As without an activation: these activations are 1-Lipschitz, so
                            // the sums' bound carries through them.
                            let step = 2.0 * half_step * got.abs().max(want.abs()) + 2.0 * tiny;
                            let tolerance = step + 2.0 * (terms as f64 + 66.0) * F32_EPS * magnitudes[i][j];
                            assert!(
                                (got - want).abs() <= tolerance,
                                "{what} pass {i} [{j}]: gpu {got}, cpu {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// The split weight gradient adds its slices in a fixed order: the same bits from run to run.
#[test]
fn split_mma_weight_grads_repeat_bit_for_bit() {
    let _device = lock_device();
    let g = split_geometry();
    assert!(GpuStorage::weight_grad_slices(&g) > 1, "this geometry is split");
    for device in cuda_devices() {
        for dtype in HALVES {
            let case = Case::new(dtype, g, 7);
            let (x, gy) = (case.on(&case.x, dtype, device), case.on(&case.gy, dtype, device));
            let bits = |s: &Storage| s.to_f64_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            let first = bits(&x.conv2d_weight_grad(&gy, &g));
            assert_eq!(first, bits(&x.conv2d_weight_grad(&gy, &g)), "{device} {dtype}");
        }
    }
}

/// Empty convolutions launch nothing: an empty batch gives an empty map (forward, adjoint)
/// and a zero weight gradient; no input channels (K = 0) gives the bias alone.
#[test]
fn empty_mma_convolutions_launch_nothing_or_give_the_bias() {
    let _device = lock_device();
    for device in cuda_devices() {
        let gpu_device = GpuDevice::get(device).unwrap();
        for dtype in HALVES {
            let empty = Case::new(dtype, geometry([0, 3, 5, 5], 4, (3, 3), (1, 1), (1, 1), (1, 1)), 1);
            let before = gpu_device.launch_histogram();
            let [forward, adjoint, weight_grad] = empty.run(dtype, device, false);
            assert_eq!(
                gpu_device.launch_histogram().since(&before).total(),
                0,
                "{device} {dtype}"
            );
            assert!(forward.is_empty() && adjoint.is_empty(), "{device} {dtype}");
            assert_eq!(weight_grad, vec![0.0; 4 * 3 * 9], "{device} {dtype}");

            let no_channels = Case::new(dtype, geometry([2, 0, 5, 4], 3, (3, 3), (1, 1), (1, 1), (1, 1)), 2);
            let [forward, ..] = no_channels.run(dtype, device, false);
            let bias_per_pixel: Vec<f64> = (0..2)
                .flat_map(|_| no_channels.bias_o.iter().flat_map(|&b| [b; 5 * 4]))
                .collect();
            assert_eq!(forward, bias_per_pixel, "{device} {dtype}");
        }
    }
}

/// An output dtype the kernels do not have (f64) is the device's failure, with a message,
/// never a panic; in a child process, since the failure is the device's for the rest of it.
#[cfg(feature = "emulator")]
#[test]
fn an_output_dtype_the_kernels_lack_is_the_devices_failure() {
    const CHILD: &str = "EARTHMOVER_TEST_CONV_MMA_F64_OUTPUT";
    let test = "an_output_dtype_the_kernels_lack_is_the_devices_failure";
    if std::env::var(CHILD).is_ok() {
        let g = geometry([1, 2, 4, 4], 3, (3, 3), (1, 1), (1, 1), (1, 1));
        let case = Case::new(DType::BF16, g, 3);
        let on = |v: &[f64]| case.on(v, DType::BF16, Device::CudaEmulator);
        let (x, w) = (on(&case.x), on(&case.w));
        let y = gpu(&x).conv2d_forward_mma(gpu(&w), None, None, &g, DType::F64);
        let failure = Storage::Cuda(y).try_to_f64_vec().unwrap_err();
        eprintln!("the read's error: {failure}");
        return;
    }
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&child.stderr);
    assert!(child.status.success(), "the child panicked: {stderr}");
    assert!(
        stderr.contains("the read's error:")
            && stderr.contains("conv2d_forward_mma: needs bf16 or f16 operands and an output in f32")
            && stderr.contains("got bf16 operands and a f64 output"),
        "{stderr}"
    );
}
