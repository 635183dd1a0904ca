//! Every kernel source compiles with NVRTC for the GPUs we target: sm_80 (A100) and sm_90
//! (H100). Without libnvrtc the test says so and passes, unless `EARTHMOVER_REQUIRE_NVRTC=1`
//! (as `.ci/run` sets it after installing NVRTC), where a missing NVRTC is a failure. With
//! `EARTHMOVER_PTX_DIR=<dir>` it also writes each source's PTX there (scripts/ptxas-report.sh).

use earthmover_kernels::cuda::compile::{compile, compile_cubin, nvrtc_available, nvrtc_version};
use earthmover_kernels::cuda::{KernelSource, SOURCES};

/// Whether NVRTC can be loaded; without it a test says so and passes, unless
/// `EARTHMOVER_REQUIRE_NVRTC=1`, where it fails.
fn nvrtc_or_skip() -> bool {
    if nvrtc_available() {
        return true;
    }
    if std::env::var("EARTHMOVER_REQUIRE_NVRTC").is_ok_and(|v| v == "1") {
        panic!("EARTHMOVER_REQUIRE_NVRTC=1 but libnvrtc cannot be loaded (LD_LIBRARY_PATH?)");
    }
    eprintln!("skipped: libnvrtc is not on the library path (pip install nvidia-cuda-nvrtc)");
    false
}

#[test]
fn every_kernel_source_compiles_for_sm80_and_sm90() {
    if !nvrtc_or_skip() {
        return;
    }
    eprintln!("NVRTC {:?}", nvrtc_version());
    for source in SOURCES {
        for arch in [80, 90] {
            let ptx = compile(source, arch).unwrap_or_else(|e| panic!("{e}"));
            // scripts/ptxas-report.sh reads the PTX from here.
            if let Ok(dir) = std::env::var("EARTHMOVER_PTX_DIR") {
                let path = std::path::Path::new(&dir).join(format!("{}.sm_{arch}.ptx", source.file));
                std::fs::write(&path, &ptx).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
            assert!(
                ptx.contains(&format!(".target sm_{arch}")),
                "{}: no sm_{arch} target",
                source.file
            );
            for kernel in source.kernel_names() {
                assert!(
                    ptx.contains(&format!(".entry {kernel}(")),
                    "{}: kernel {kernel} missing from the PTX",
                    source.file
                );
            }
        }
    }
}

/// The tensor-core kernels (matmul_tc.cu, conv_mma.cu) issue the mma instruction of their
/// input type (mma.cuh's inline PTX), each of them (but the split-K sums of conv_mma.cu, which
/// only add), for both architectures: not a fallback, and not optimised away.
#[test]
fn the_tensor_core_kernels_issue_mma_sync() {
    if !nvrtc_or_skip() {
        return;
    }
    let sources = SOURCES
        .iter()
        .filter(|s| ["matmul_tc.cu", "conv_mma.cu"].contains(&s.file));
    for (source, arch) in sources.flat_map(|s| [(s, 80), (s, 90)]) {
        let ptx = compile(source, arch).unwrap_or_else(|e| panic!("{e}"));
        for kernel in source.kernel_names().into_iter().filter(|k| !k.contains("sum_slices")) {
            let entry = &ptx[ptx.find(&format!(".entry {kernel}(")).unwrap()..];
            let body = &entry[..entry[1..].find(".entry ").map_or(entry.len(), |end| end + 1)];
            let input = if kernel.contains("bf16") { "bf16" } else { "f16" };
            let instruction = format!("mma.sync.aligned.m16n8k16.row.col.f32.{input}.{input}.f32");
            assert!(body.contains(&instruction), "sm_{arch}: {kernel} has no {instruction}");
        }
    }
}

/// The tiled matmul (matmul.cu) stages its tiles with `cp.async` (async_copy.cuh's inline PTX):
/// 16-byte copies, element copies, commit and wait groups, in both precisions and for both
/// architectures; and the plain kernel, which does not, stays without them.
#[test]
fn the_tiled_matmul_copies_with_cp_async() {
    if !nvrtc_or_skip() {
        return;
    }
    let source = SOURCES.iter().find(|s| s.file == "matmul.cu").unwrap();
    for arch in [80, 90] {
        let ptx = compile(source, arch).unwrap_or_else(|e| panic!("{e}"));
        let body_of = |kernel: &str| {
            let entry = &ptx[ptx.find(&format!(".entry {kernel}(")).unwrap()..];
            entry[..entry[1..].find(".entry ").map_or(entry.len(), |end| end + 1)].to_string()
        };
        for (kernel, element_bytes) in [
            ("matmul_tiled_f32", 4),
            ("matmul_tiled_f64", 8),
            ("matmul_tiled_a_rows_f32", 4),
            ("matmul_tiled_a_rows_f64", 8),
        ] {
            let body = body_of(kernel);
            let element_copy = format!(", {element_bytes};");
            assert!(
                body.lines()
                    .any(|l| l.contains("cp.async.ca.shared.global") && l.trim_end().ends_with(&element_copy)),
                "sm_{arch}: {kernel} has no cp.async.ca of {element_bytes} bytes"
            );
            for instruction in [
                "cp.async.cg.shared.global",
                "cp.async.commit_group",
                "cp.async.wait_group 1",
                "ld.shared.v",
            ] {
                assert!(body.contains(instruction), "sm_{arch}: {kernel} has no {instruction}");
            }
        }
        assert!(!body_of("matmul_plain_f32").contains("cp.async"), "sm_{arch}");
    }
}

/// What the GPU loads: every source as CUBIN for sm_90 (the H100 and H200), made by NVRTC
/// without a GPU. It must be an ELF image for the CUDA machine (`e_machine` 190, EM_CUDA) whose
/// symbols name every kernel of the file.
#[test]
fn every_kernel_source_compiles_to_cubin_for_sm90() {
    if !nvrtc_or_skip() {
        return;
    }
    for source in SOURCES {
        let cubin = compile_cubin(source, 90).unwrap_or_else(|e| panic!("{e}"));
        assert!(cubin.starts_with(b"\x7fELF"), "{}: not an ELF image", source.file);
        const EM_CUDA: u16 = 190;
        assert_eq!(u16::from_le_bytes([cubin[18], cubin[19]]), EM_CUDA, "{}", source.file);
        for kernel in source.kernel_names() {
            let symbol = format!("\0{kernel}\0");
            assert!(
                cubin.windows(symbol.len()).any(|w| w == symbol.as_bytes()),
                "{}: kernel {kernel} missing from the CUBIN's symbols",
                source.file
            );
        }
    }
}

/// A source that does not compile is an error carrying NVRTC's log, for CUBIN as for PTX.
#[test]
fn a_compile_error_carries_nvrtcs_log() {
    if !nvrtc_or_skip() {
        return;
    }
    let broken = KernelSource {
        file: "broken.cu",
        text: "extern \"C\" __global__ void broken_f32(float *x) { x[0] = undeclared_name; }",
        cpu_twin: "none",
    };
    for result in [compile(&broken, 90).map(|_| ()), compile_cubin(&broken, 90).map(|_| ())] {
        let message = result.unwrap_err();
        assert!(
            message.contains("broken.cu") && message.contains("undeclared_name"),
            "{message}"
        );
    }
}
