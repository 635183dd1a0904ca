//! NVRTC: compile a kernel source at run time, to CUBIN (machine code for one GPU
//! architecture) or to PTX. libnvrtc is loaded dynamically; [`nvrtc_available`] says whether it
//! can be, so that callers never hit cudarc's panic on a missing library.
//!
//! A GPU loads CUBIN: PTX has to be compiled again by the driver, which refuses PTX from an
//! NVRTC newer than itself (CUDA_ERROR_UNSUPPORTED_PTX_VERSION: PyPI's NVRTC 13.5 against a
//! 13.0 driver), while CUBIN from any 13.x NVRTC loads on any 13.x driver. PTX stays as the
//! fallback (`device.rs`), for an architecture this NVRTC cannot emit machine code for.

use super::KernelSource;
use cudarc::nvrtc::{result, sys};
use std::ffi::{c_char, CStr, CString};

/// Whether libnvrtc can be loaded (from the library path, e.g. `LD_LIBRARY_PATH`; the PyPI
/// package `nvidia-cuda-nvrtc` puts it under `nvidia/cu13/lib`).
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to open the library and closes it again.
    unsafe { sys::is_culib_present() }
}

/// NVRTC's version as (major, minor), when it is available.
pub fn nvrtc_version() -> Option<(i32, i32)> {
    if !nvrtc_available() {
        return None;
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two out-parameters; the library is present.
    let status = unsafe { sys::nvrtcVersion(&mut major, &mut minor) };
    (status == sys::nvrtcResult::NVRTC_SUCCESS).then_some((major, minor))
}

/// What to take out of a compiled program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Ptx,
    Cubin,
}

/// Compile `source` for `sm_<arch>` (e.g. 90 for an H100) and return its PTX, or NVRTC's log.
pub fn compile(source: &KernelSource, arch: u32) -> Result<String, String> {
    let ptx = nvrtc_compile(source, arch, Output::Ptx)?;
    // NVRTC's PTX ends with a NUL.
    let text = ptx.strip_suffix(&[0]).unwrap_or(&ptx);
    String::from_utf8(text.to_vec()).map_err(|e| format!("NVRTC's PTX of {} is not UTF-8: {e}", source.file))
}

/// Compile `source` to CUBIN for `sm_<arch>`: an ELF image the driver loads as it is. Needs no
/// GPU, only NVRTC.
pub fn compile_cubin(source: &KernelSource, arch: u32) -> Result<Vec<u8>, String> {
    nvrtc_compile(source, arch, Output::Cubin)
}

/// One NVRTC program from creation to destruction; the error names the file, the
/// architecture and NVRTC's log.
fn nvrtc_compile(source: &KernelSource, arch: u32, output: Output) -> Result<Vec<u8>, String> {
    if !nvrtc_available() {
        return Err(
            "libnvrtc cannot be loaded: install CUDA 13's NVRTC (pip install nvidia-cuda-nvrtc) \
             and put its lib folder on LD_LIBRARY_PATH"
                .to_string(),
        );
    }
    let fail =
        |what: &str, e: result::NvrtcError| format!("NVRTC failed to {what} {} for sm_{arch}: {e:?}", source.file);
    let text = CString::new(source.self_contained()).map_err(|_| format!("{} holds a NUL byte", source.file))?;
    let name = CString::new(source.file).expect("file names hold no NUL");
    let program = result::create_program(&text, Some(&name)).map_err(|e| fail("create a program of", e))?;
    // `--gpu-architecture=sm_XX` (a real architecture, not `compute_XX`) makes NVRTC emit
    // machine code as well as PTX.
    let options = [format!("--gpu-architecture=sm_{arch}"), "--std=c++17".to_string()];
    // SAFETY: `program` is live until the destroy below; `text` and `name` outlive it.
    let compiled = unsafe {
        match result::compile_program(program, &options) {
            Ok(()) => match output {
                // `c_char` is i8 on x86-64 and u8 on aarch64: the cast is a no-op on the latter.
                #[allow(clippy::unnecessary_cast)]
                Output::Ptx => result::get_ptx(program)
                    .map(|chars| chars.into_iter().map(|c| c as u8).collect())
                    .map_err(|e| fail("get the PTX of", e)),
                Output::Cubin => cubin_of(program).map_err(|e| fail("get the CUBIN of", e)),
            },
            Err(e) => Err(match result::get_program_log(program) {
                Ok(log) => format!(
                    "{} does not compile for sm_{arch} ({e:?}):\n{}",
                    source.file,
                    CStr::from_ptr(log.as_ptr()).to_string_lossy()
                ),
                Err(_) => fail("compile", e),
            }),
        }
    };
    // SAFETY: created above, destroyed once.
    unsafe { result::destroy_program(program) }.map_err(|e| fail("release the program of", e))?;
    compiled
}

/// The CUBIN of a compiled program (cudarc's safe layer only gives PTX).
///
/// # Safety
/// `program` must be a live NVRTC program that compiled for a real architecture.
unsafe fn cubin_of(program: sys::nvrtcProgram) -> Result<Vec<u8>, result::NvrtcError> {
    let mut size = 0usize;
    // SAFETY: forwarded to the caller; `size` is an out-parameter.
    unsafe { sys::nvrtcGetCUBINSize(program, &mut size) }.result()?;
    let mut cubin = vec![0u8; size];
    // SAFETY: `cubin` holds the `size` bytes NVRTC writes.
    unsafe { sys::nvrtcGetCUBIN(program, cubin.as_mut_ptr() as *mut c_char) }.result()?;
    Ok(cubin)
}
