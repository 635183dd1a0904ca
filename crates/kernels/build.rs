//! 1. Write `op_codes.cuh` into `OUT_DIR`: the elementwise ops' codes for the CUDA kernels,
//!    from the Rust enums of `src/op.rs` (compiled into this script as a module of its own), so
//!    that Rust and CUDA take their codes from one declaration.
//! 2. With the `emulator` feature, compile every `kernels/*.cu` with the host C++ compiler
//!    against our model of CUDA (`kernels/emulator/cuda_emulator.h`), and export each kernel as
//!    `emulate_<name>(grid, block, params)` plus a table of them by name, for `cuda::emulator`.

#[path = "src/op.rs"]
#[allow(dead_code)]
mod op;

fn main() {
    let kernels = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kernels");
    println!("cargo:rerun-if-changed={}", kernels.display());
    println!("cargo:rerun-if-changed=src/op.rs");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("op_codes.cuh"), op::op_codes_header()).expect("OUT_DIR is writable");
    #[cfg(feature = "emulator")]
    emulator::build(&kernels, &out);
}

#[cfg(feature = "emulator")]
mod emulator {
    use std::fmt::Write as _;
    use std::path::{Path, PathBuf};

    /// `out` is `OUT_DIR`, which holds `op_codes.cuh`.
    pub fn build(kernels: &Path, out: &Path) {
        let mut sources: Vec<PathBuf> = std::fs::read_dir(kernels)
            .expect("the kernels/ folder")
            .map(|e| e.expect("a readable entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "cu"))
            .collect();
        sources.sort();

        let mut build = cc::Build::new();
        build
            .cpp(true)
            .std("c++17")
            .opt_level(2)
            .include(kernels)
            .include(out)
            .include(kernels.join("emulator"))
            .flag_if_supported("-pthread")
            // The fibers switch stacks with _longjmp, which a fortified glibc would refuse.
            .flag_if_supported("-U_FORTIFY_SOURCE")
            .flag_if_supported("-Wno-unused-parameter")
            .warnings(false);
        let mut table = String::from("#include \"cuda_emulator.h\"\n");
        let mut entries = String::new();
        let mut count = 0;
        for source in &sources {
            println!("cargo:rerun-if-changed={}", source.display());
            let text = std::fs::read_to_string(source).expect("a readable .cu file");
            let names = kernel_names(&text);
            // Files whose kernels never synchronise run without fibers (much faster).
            let synchronises = ["__syncthreads", "__shfl", "block_reduce", "mma_m16n8k16"]
                .iter()
                .any(|s| text.contains(s));
            let stem = source.file_stem().unwrap().to_string_lossy().into_owned();
            let mut unit = format!("#include \"cuda_emulator.h\"\n#include \"{}\"\n", source.display());
            for name in &names {
                writeln!(
                unit,
                "extern \"C\" void emulate_{name}(dim3 grid, dim3 block, void **params) {{ emulator::launch({name}, grid, block, params, {synchronises}); }}"
            )
            .unwrap();
                writeln!(table, "extern \"C\" void emulate_{name}(dim3, dim3, void **);").unwrap();
                writeln!(entries, "    {{\"{name}\", emulate_{name}}},").unwrap();
                count += 1;
            }
            let path = out.join(format!("emulate_{stem}.cpp"));
            std::fs::write(&path, unit).expect("OUT_DIR is writable");
            build.file(path);
        }
        write!(
            table,
            "struct EmulatedKernel {{ const char *name; void (*launch)(dim3, dim3, void **); }};\n\
         extern \"C\" const EmulatedKernel earthmover_emulated_kernels[] = {{\n{entries}}};\n\
         extern \"C\" const unsigned long earthmover_emulated_kernel_count = {count};\n"
        )
        .unwrap();
        let path = out.join("emulated_kernels.cpp");
        std::fs::write(&path, table).expect("OUT_DIR is writable");
        build.file(path);
        build.compile("earthmover_emulator");
    }

    /// The names of the `__global__` functions of a .cu source.
    fn kernel_names(text: &str) -> Vec<String> {
        text.match_indices("__global__ void ")
            .map(|(at, marker)| {
                text[at + marker.len()..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect()
            })
            .collect()
    }
}
