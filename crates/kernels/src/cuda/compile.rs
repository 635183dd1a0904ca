//! NVRTC: compile a kernel source to PTX for a GPU architecture, at run time. libnvrtc is
//! loaded dynamically; [`nvrtc_available`] says whether it can be, so that callers never hit
//! cudarc's panic on a missing library.

use super::KernelSource;
use cudarc::nvrtc::{compile_ptx_with_opts, CompileError, CompileOptions};

/// Whether libnvrtc can be loaded (from the library path, e.g. `LD_LIBRARY_PATH`; the PyPI
/// package `nvidia-cuda-nvrtc` puts it under `nvidia/cu13/lib`).
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to open the library and closes it again.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// NVRTC's version as (major, minor), when it is available.
pub fn nvrtc_version() -> Option<(i32, i32)> {
    if !nvrtc_available() {
        return None;
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two out-parameters; the library is present.
    let status = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    (status == cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS).then_some((major, minor))
}

/// Compile `source` for `sm_<arch>` (e.g. 90 for an H100) and return its PTX, or NVRTC's log.
pub fn compile(source: &KernelSource, arch: u32) -> Result<String, String> {
    if !nvrtc_available() {
        return Err(
            "libnvrtc cannot be loaded: install CUDA 13's NVRTC (pip install nvidia-cuda-nvrtc) \
                    and put its lib folder on LD_LIBRARY_PATH"
                .to_string(),
        );
    }
    let options = CompileOptions {
        options: vec![format!("--gpu-architecture=sm_{arch}"), "--std=c++17".to_string()],
        name: Some(source.file.to_string()),
        ..Default::default()
    };
    match compile_ptx_with_opts(source.self_contained(), options) {
        Ok(ptx) => Ok(ptx.to_src()),
        Err(CompileError::CompileError { log, .. }) => Err(format!(
            "{} does not compile for sm_{arch}:\n{}",
            source.file,
            log.to_string_lossy()
        )),
        Err(e) => Err(format!("NVRTC failed on {}: {e}", source.file)),
    }
}
