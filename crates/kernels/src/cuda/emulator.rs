//! The CUDA kernels run on the CPU: `build.rs` compiles `kernels/*.cu` with the host C++
//! compiler against `kernels/emulator/cuda_emulator.h` (a block's threads modelled as fibers
//! that switch at barriers and warp shuffles; kernels that never synchronise run their threads
//! as plain loops) and exports each kernel by name. [`launch`] runs one of them, given the
//! same launch shape and argument list as a GPU launch: `cuda::device` calls it for a device
//! opened as `Device::CudaEmulator`, so the launches written once in `cuda::storage` run here
//! unchanged, and tests compare them with the CPU backend through `Storage`.
//!
//! Slow by design: for small, odd-sized inputs.

use super::LaunchShape;
use std::ffi::{c_char, c_void, CStr};

#[repr(C)]
#[derive(Clone, Copy)]
struct Dim3 {
    x: u32,
    y: u32,
    z: u32,
}

#[repr(C)]
struct EmulatedKernel {
    name: *const c_char,
    launch: unsafe extern "C" fn(Dim3, Dim3, *mut *mut c_void),
}

unsafe extern "C" {
    static earthmover_emulated_kernels: [EmulatedKernel; 0];
    static earthmover_emulated_kernel_count: std::ffi::c_ulong;
}

/// The names of every emulated kernel.
pub fn kernel_names() -> Vec<String> {
    table().iter().map(|k| name_of(k).to_string()).collect()
}

fn table() -> &'static [EmulatedKernel] {
    // SAFETY: build.rs defines the array with exactly `earthmover_emulated_kernel_count`
    // entries, each a static string and a function.
    unsafe {
        std::slice::from_raw_parts(
            earthmover_emulated_kernels.as_ptr(),
            earthmover_emulated_kernel_count as usize,
        )
    }
}

fn name_of(kernel: &EmulatedKernel) -> &'static str {
    // SAFETY: the names are NUL-terminated literals of the generated table.
    unsafe { CStr::from_ptr(kernel.name) }
        .to_str()
        .expect("ASCII kernel names")
}

/// Launch kernel `name` with `params[i]` pointing at its i-th argument, as cuLaunchKernel
/// takes them.
///
/// # Safety
/// `params` must match the kernel's parameter list in number and types, and every buffer
/// pointer must be valid for the elements the kernel touches.
pub unsafe fn launch(name: &str, shape: LaunchShape, params: &mut [*mut c_void]) -> Result<(), String> {
    let kernel = table()
        .iter()
        .find(|k| name_of(k) == name)
        .ok_or_else(|| format!("no emulated kernel `{name}`"))?;
    let dim = |(x, y, z): (u32, u32, u32)| Dim3 { x, y, z };
    // SAFETY: forwarded to the caller.
    unsafe { (kernel.launch)(dim(shape.grid), dim(shape.block), params.as_mut_ptr()) };
    Ok(())
}
