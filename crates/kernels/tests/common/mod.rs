//! What the CUDA test files share.

use earthmover_kernels::cuda::device::cuda_device_count;
use earthmover_kernels::Device;

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
