//! Which devices this machine can compute on, for programs that choose one (`--device auto`)
//! or report it, without reaching into the kernels crate.

use crate::{Device, Error, Result};
use earthmover_kernels::cpu::simd::SimdPath;
use earthmover_kernels::cuda::counters::{DeviceCounters, LaunchHistogram, PoolCounters};
use earthmover_kernels::cuda::device::GpuDevice;

/// How many CUDA GPUs the driver reports: 0 where there is no driver or no GPU.
pub fn cuda_device_count() -> usize {
    earthmover_kernels::cuda::device::cuda_device_count()
}

/// The name of `device` (a GPU's model, such as "NVIDIA H100 80GB HBM3"; "CPU" for the CPU),
/// opening it first: an error saying why where it cannot be used (no driver, no NVRTC, no such
/// GPU, the emulator not built in). A device opened here stays open for the tensors put on it.
pub fn device_name(device: Device) -> Result<String> {
    match device {
        Device::Cpu => Ok("CPU".to_string()),
        Device::Cuda(_) | Device::CudaEmulator => GpuDevice::get(device).map(|gpu| gpu.name.clone()).map_err(Error),
    }
}

/// What a CUDA device (a GPU or the emulator) has done since it was opened: kernel launches,
/// host synchronisations, copies each way, allocations and zero-fills, counted the same on
/// both, so that a program's round trips to the GPU can be measured without one. Take a
/// snapshot before and after a piece of work and subtract ([`DeviceCounters::since`]). The
/// device is opened if it was not (its counters then start at zero); the CPU has no such
/// layer, so asking for its counters is an error, as is a device that cannot be opened.
pub fn device_counters(device: Device) -> Result<DeviceCounters> {
    match device {
        Device::Cpu => Err(Error(
            "the CPU has no device counters: they count the launches, copies and allocations of a CUDA device"
                .to_string(),
        )),
        Device::Cuda(_) | Device::CudaEmulator => GpuDevice::get(device).map(|gpu| gpu.counters()).map_err(Error),
    }
}

/// A CUDA device's launches per kernel name since it was opened: where
/// [`DeviceCounters::launches`] go. Subtract an earlier snapshot ([`LaunchHistogram::since`])
/// to see a stretch of work's. The CPU has none, as for [`device_counters`].
pub fn device_launch_histogram(device: Device) -> Result<LaunchHistogram> {
    match device {
        Device::Cpu => Err(Error(
            "the CPU has no launch histogram: it counts the kernel launches of a CUDA device".to_string(),
        )),
        Device::Cuda(_) | Device::CudaEmulator => {
            GpuDevice::get(device).map(|gpu| gpu.launch_histogram()).map_err(Error)
        }
    }
}

/// How a CUDA device's memory pool served its allocations (reuses of freed buffers against
/// new memory from the driver, and the bytes it holds idle), the same on a GPU and on the
/// emulator; an error for the CPU or a device that cannot be opened, as [`device_counters`].
pub fn device_pool_counters(device: Device) -> Result<PoolCounters> {
    match device {
        Device::Cpu => Err(Error(
            "the CPU has no device memory pool: it pools the buffers of a CUDA device".to_string(),
        )),
        Device::Cuda(_) | Device::CudaEmulator => GpuDevice::get(device).map(|gpu| gpu.pool_counters()).map_err(Error),
    }
}

/// The SIMD path the CPU kernels of this process run (`avx512`, `avx2`, `neon`, `portable`):
/// the widest the processor has, or the one `EARTHMOVER_SIMD` names; an error when it names an
/// unknown path or one this processor lacks. Programs check it at start and report it.
pub fn cpu_simd_path() -> Result<SimdPath> {
    earthmover_kernels::cpu::simd::configured_path().map_err(Error)
}

/// Flush denormal floats to zero in the CPU kernels, or keep them, as `EARTHMOVER_FLUSH_DENORMAL`
/// says (`1`/`0`; `default` when unset): returns whether they are now flushed, or an error
/// naming a value it does not know. Programs call it at start; a library leaves the default
/// (kept, as in PyTorch) unless asked ([`set_flush_denormal`]).
pub fn configure_flush_denormal(default: bool) -> Result<bool> {
    earthmover_kernels::cpu::denormals::configure_flush_denormal(default).map_err(Error)
}

pub use earthmover_kernels::cpu::denormals::{flush_denormal, set_flush_denormal};

/// A stretch of a CUDA device's work captured once and replayed as one launch (see
/// `earthmover_kernels::cuda::graph` for the rules a capture keeps).
pub use earthmover_kernels::cuda::graph::DeviceGraph;

/// Run `work` with `device`'s launches captured into a CUDA graph instead of run (on the
/// emulator, recorded): the graph, and what `work` returned (its tensors are the graph's
/// outputs, written at each replay). While capturing, a read of the device (a download, an
/// upload, a wait) is an error, and so is an allocation the memory pool cannot serve: run the
/// same work once uncaptured first. The capture is ended whatever `work` does; an error for
/// the CPU, for a capture under way, or for a device that failed meanwhile.
pub fn capture_graph<R>(device: Device, work: impl FnOnce() -> R) -> Result<(DeviceGraph, R)> {
    let gpu = match device {
        Device::Cpu => {
            return Err(Error(
                "the CPU has no CUDA graphs: capture on a CUDA device".to_string(),
            ))
        }
        Device::Cuda(_) | Device::CudaEmulator => GpuDevice::get(device).map_err(Error)?,
    };
    gpu.begin_capture().map_err(Error)?;
    let result = work();
    let graph = gpu.end_capture().map_err(Error)?;
    Ok((graph, result))
}

/// Run `graph`'s kernels once, as one launch on its device, queued like any other work.
///
/// # Safety
/// Every buffer the captured kernels address must still be alive and where it was: those the
/// capture allocated are the graph's own, but those it found (weights, optimiser state,
/// counts, data) are the caller's to keep, and not to replace ([`crate::Tensor::set_data`]
/// gives a tensor another buffer; [`crate::Tensor::copy_`] and the in-place updates keep it).
pub unsafe fn replay_graph(graph: &DeviceGraph) -> Result<()> {
    let gpu = GpuDevice::get(graph.device()).map_err(Error)?;
    // SAFETY: the caller keeps the buffers alive (this function's contract).
    unsafe { gpu.replay(graph) }.map_err(Error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_is_always_there() {
        assert_eq!(device_name(Device::Cpu), Ok("CPU".to_string()));
    }

    #[test]
    fn a_gpu_past_the_last_one_is_refused_by_name() {
        let missing = Device::Cuda(cuda_device_count());
        let error = device_name(missing).unwrap_err();
        assert!(error.0.contains(&missing.to_string()), "{error}");
    }

    #[test]
    fn the_cpu_has_no_counters_and_a_missing_gpu_says_why() {
        let cpu = device_counters(Device::Cpu).unwrap_err();
        assert!(cpu.0.contains("CPU has no device counters"), "{cpu}");
        let missing = Device::Cuda(cuda_device_count());
        let error = device_counters(missing).unwrap_err();
        assert!(error.0.contains(&missing.to_string()), "{error}");
    }

    #[test]
    fn the_emulator_is_named_or_said_to_be_missing() {
        match device_name(Device::CudaEmulator) {
            Ok(name) => assert_eq!(name, "CUDA emulator"),
            Err(e) => assert!(e.0.contains("emulator is not built in"), "{e}"),
        }
    }
}
