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
