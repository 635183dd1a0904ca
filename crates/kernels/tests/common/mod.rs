//! What the CUDA test files share.

use earthmover_kernels::cuda::device::cuda_device_count;
use earthmover_kernels::{ConvGeometry, DType, Device, Storage};

/// The CUDA devices to test: the emulator when built in, GPU 0 when present.
pub fn cuda_devices() -> Vec<Device> {
    let mut devices = Vec::new();
    if cfg!(feature = "emulator") {
        devices.push(Device::CudaEmulator);
    }
    if cuda_device_count() > 0 {
        devices.push(Device::Cuda(0));
    }
    if devices.is_empty() {
        eprintln!("skipped: no CUDA GPU here, and the emulator is not built in (--features emulator)");
    }
    devices
}

/// Deterministic values in [-2, 2) (xorshift), so failures reproduce.
#[allow(dead_code)] // not every test file that shares this module draws values
pub fn random(n: usize, seed: u64) -> Vec<f64> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0
        })
        .collect()
}

/// `values` in `dtype` on the CPU.
#[allow(dead_code)] // not every test file that shares this module compares storages
pub fn on_cpu(values: &[f64], dtype: DType) -> Storage {
    Storage::from_f64_slice(values, dtype, Device::Cpu).unwrap()
}

/// The same values on the CPU and on `device`.
#[allow(dead_code)] // not every test file that shares this module compares storages
pub fn pair(values: &[f64], dtype: DType, device: Device) -> (Storage, Storage) {
    let cpu = on_cpu(values, dtype);
    let gpu = cpu.to_device(device).unwrap();
    assert_eq!(gpu.device(), device);
    (cpu, gpu)
}

/// Every element of `gpu` within `rel` of the larger magnitude of the two (or `abs`
/// absolutely) of `cpu`'s; NaN matches NaN. The result must still be on the GPU, in the
/// CPU's dtype.
#[allow(dead_code)] // not every test file that shares this module compares storages
#[track_caller]
pub fn assert_close(what: &str, gpu: &Storage, cpu: &Storage, rel: f64, abs: f64) {
    assert!(gpu.device() != Device::Cpu, "{what}: the result left the GPU");
    assert_eq!(gpu.dtype(), cpu.dtype(), "{what}: dtype");
    let (got, want) = (gpu.to_f64_vec(), cpu.to_f64_vec());
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
        if g.is_nan() && w.is_nan() || g == w {
            continue;
        }
        let tolerance = abs.max(rel * g.abs().max(w.abs()));
        assert!((g - w).abs() <= tolerance, "{what}[{i}]: gpu {g}, cpu {w}");
    }
}

/// Tolerances `(rel, abs)` for kernels whose order of operations or math library differs
/// from the CPU's.
#[allow(dead_code)] // not every test file that shares this module compares storages
pub fn rounding(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F32 => (1e-5, 1e-5),
        DType::F64 => (1e-13, 1e-13),
        other => unreachable!("{other}: these tests run DTYPES, f32 and f64"),
    }
}

/// The dtypes that the comparisons with the CPU's twins run.
#[allow(dead_code)] // not every test file that shares this module compares storages
pub const DTYPES: [DType; 2] = [DType::F32, DType::F64];

/// A geometry with input `[batch, c, h, w]`, `o` output channels, and (h, w) pairs of kernel,
/// stride, padding and dilation.
#[allow(dead_code)] // not every test file that shares this module convolves
pub fn geometry(
    [batch, c, h, w]: [usize; 4],
    o: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
    dilation: (usize, usize),
) -> ConvGeometry {
    ConvGeometry::conv2d([batch, c, h, w], [o, c, kernel.0, kernel.1], stride, padding, dilation).unwrap()
}
