//! The CUDA kernels: their sources (`kernels/*.cu` at the top of the repository, embedded
//! here), the structs and op codes they take, and the launch shapes, shared by the two ways of
//! running them: a GPU through NVRTC and cudarc, and `emulator` (feature `emulator`), which
//! runs the same sources on the CPU to check them against their CPU twins in [`crate::cpu`].

pub mod compile;
pub mod device;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod shapes;
pub mod storage;

use crate::{BinaryOp, Element, UnaryOp};

/// One `.cu` file: its name, its text, and the CPU module its kernels are checked against.
pub struct KernelSource {
    pub file: &'static str,
    pub text: &'static str,
    pub cpu_twin: &'static str,
}

/// `kernels/common.cuh`, which every source includes.
pub const COMMON_HEADER: &str = include_str!("../../../../kernels/common.cuh");

/// Every kernel source, in the order of `kernels/`.
pub const SOURCES: &[KernelSource] = &[
    KernelSource {
        file: "conv.cu",
        text: include_str!("../../../../kernels/conv.cu"),
        cpu_twin: "cpu::conv (im2col, col2im)",
    },
    KernelSource {
        file: "elementwise.cu",
        text: include_str!("../../../../kernels/elementwise.cu"),
        cpu_twin: "cpu::elementwise",
    },
    KernelSource {
        file: "layout.cu",
        text: include_str!("../../../../kernels/layout.cu"),
        cpu_twin: "cpu::layout",
    },
    KernelSource {
        file: "matmul.cu",
        text: include_str!("../../../../kernels/matmul.cu"),
        cpu_twin: "cpu::matmul",
    },
    KernelSource {
        file: "optim.cu",
        text: include_str!("../../../../kernels/optim.cu"),
        cpu_twin: "cpu::optim",
    },
    KernelSource {
        file: "random.cu",
        text: include_str!("../../../../kernels/random.cu"),
        cpu_twin: "cpu::random",
    },
    KernelSource {
        file: "reduce.cu",
        text: include_str!("../../../../kernels/reduce.cu"),
        cpu_twin: "cpu::reduce",
    },
];

impl KernelSource {
    /// The source with `common.cuh` pasted in place of its `#include`, as NVRTC compiles it
    /// (the sources are embedded in the binary; no include path exists at run time).
    pub fn self_contained(&self) -> String {
        self.text
            .replace("#include \"common.cuh\"", COMMON_HEADER)
            .replace("#pragma once", "")
    }

    /// The names of its kernels (`__global__` functions).
    pub fn kernel_names(&self) -> Vec<&'static str> {
        self.text
            .match_indices("__global__ void ")
            .map(|(at, marker)| {
                let rest = &self.text[at + marker.len()..];
                let end = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                &rest[..end]
            })
            .collect()
    }
}

/// An element type the kernels come in: `_f32` or `_f64` after a kernel's family name.
pub trait KernelElement: Element {
    const SUFFIX: &'static str;
}
impl KernelElement for f32 {
    const SUFFIX: &'static str = "f32";
}
impl KernelElement for f64 {
    const SUFFIX: &'static str = "f64";
}

/// `UnaryCode` in elementwise.cu and the op's two scalar parameters.
pub fn unary_code(op: UnaryOp) -> (i32, f64, f64) {
    match op {
        UnaryOp::Neg => (0, 0.0, 0.0),
        UnaryOp::Exp => (1, 0.0, 0.0),
        UnaryOp::Log => (2, 0.0, 0.0),
        UnaryOp::Sqrt => (3, 0.0, 0.0),
        UnaryOp::Abs => (4, 0.0, 0.0),
        UnaryOp::Sign => (5, 0.0, 0.0),
        UnaryOp::Relu => (6, 0.0, 0.0),
        UnaryOp::LeakyRelu(s) => (7, s, 0.0),
        UnaryOp::LeakyReluSlope(s) => (8, s, 0.0),
        UnaryOp::Tanh => (9, 0.0, 0.0),
        UnaryOp::Sigmoid => (10, 0.0, 0.0),
        UnaryOp::Softplus => (11, 0.0, 0.0),
        UnaryOp::Pow(p) => (12, p, 0.0),
        UnaryOp::Clamp(lo, hi) => (13, lo, hi),
        UnaryOp::InRange(lo, hi) => (14, lo, hi),
        UnaryOp::AddScalar(c) => (15, c, 0.0),
        UnaryOp::MulScalar(c) => (16, c, 0.0),
        UnaryOp::GtScalar(c) => (17, c, 0.0),
        UnaryOp::LtScalar(c) => (18, c, 0.0),
        UnaryOp::EqScalar(c) => (19, c, 0.0),
    }
}

/// The two scalars the `adam` kernel of optim.cu takes for step `step` (from 1): the step size
/// `lr / (1 - beta1^step)` and `1 / sqrt(1 - beta2^step)`, PyTorch's bias corrections folded in
/// once per launch instead of once per element.
pub fn adam_step_scalars(lr: f64, betas: (f64, f64), step: u64) -> (f64, f64) {
    let step = step as i32;
    (lr / (1.0 - betas.0.powi(step)), 1.0 / (1.0 - betas.1.powi(step)).sqrt())
}

/// `BinaryCode` in elementwise.cu, and the op's parameter.
pub fn binary_code(op: BinaryOp) -> (i32, f64) {
    match op {
        BinaryOp::Add => (0, 0.0),
        BinaryOp::Sub => (1, 0.0),
        BinaryOp::Mul => (2, 0.0),
        BinaryOp::Div => (3, 0.0),
        BinaryOp::Maximum => (4, 0.0),
        BinaryOp::Minimum => (5, 0.0),
        BinaryOp::Gt => (6, 0.0),
        BinaryOp::Ge => (7, 0.0),
        BinaryOp::Lt => (8, 0.0),
        BinaryOp::Le => (9, 0.0),
        BinaryOp::Eq => (10, 0.0),
        BinaryOp::LeakyReluGrad(slope) => (11, slope),
    }
}

/// A launch's grid and block dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchShape {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
}

/// Threads per block of every one-dimensional kernel.
pub const BLOCK: u32 = 256;
/// Most blocks of a grid-stride kernel: enough to fill an H100 (132 SMs x 8 blocks of 256),
/// few enough that the emulator does not start needless threads.
const MAX_GRID: usize = 1056;

impl LaunchShape {
    /// A grid-stride kernel over `n` elements.
    pub fn elementwise(n: usize) -> LaunchShape {
        let blocks = n.div_ceil(BLOCK as usize).clamp(1, MAX_GRID) as u32;
        LaunchShape {
            grid: (blocks, 1, 1),
            block: (BLOCK, 1, 1),
        }
    }

    /// One block per output element (reductions), grid-strided past `MAX_GRID` x 16.
    pub fn per_output(outputs: usize) -> LaunchShape {
        LaunchShape {
            grid: (outputs.clamp(1, MAX_GRID * 16) as u32, 1, 1),
            block: (BLOCK, 1, 1),
        }
    }

    /// matmul.cu's 64 x 64 tiles of an `m x n` output, `batch` of them.
    pub fn matmul(m: usize, n: usize, batch: usize) -> LaunchShape {
        LaunchShape {
            grid: (n.div_ceil(64) as u32, m.div_ceil(64) as u32, batch as u32),
            block: (BLOCK, 1, 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_names_its_kernels_in_both_precisions() {
        let mut names: Vec<&str> = SOURCES.iter().flat_map(|s| s.kernel_names()).collect();
        assert!(names.len() >= 30, "{names:?}");
        for name in &names {
            let family = name.trim_end_matches("_f32").trim_end_matches("_f64");
            if !name.starts_with("cast_") {
                assert!(names.contains(&format!("{family}_f32").as_str()), "{name}");
                assert!(names.contains(&format!("{family}_f64").as_str()), "{name}");
            }
        }
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "kernel names are unique across files");
        assert!(SOURCES.iter().all(|s| !s.self_contained().contains("#include")));
    }

    #[test]
    fn op_codes_follow_the_enums_declared_in_elementwise_cu() {
        let source = SOURCES.iter().find(|s| s.file == "elementwise.cu").unwrap().text;
        let declared = |enum_name: &str| -> Vec<String> {
            let start = source.find(&format!("enum {enum_name} {{")).unwrap();
            let body = &source[start..start + source[start..].find('}').unwrap()];
            body.split('{')
                .nth(1)
                .unwrap()
                .split(',')
                .map(|s| s.trim().to_string())
                .collect()
        };
        let unary = declared("UnaryCode");
        assert_eq!(unary.len(), 20);
        assert_eq!(unary[unary_code(UnaryOp::Softplus).0 as usize], "U_SOFTPLUS");
        assert_eq!(unary[unary_code(UnaryOp::EqScalar(0.0)).0 as usize], "U_EQ_SCALAR");
        let binary = declared("BinaryCode");
        assert_eq!(binary[binary_code(BinaryOp::Minimum).0 as usize], "B_MINIMUM");
        assert_eq!(binary[binary_code(BinaryOp::Eq).0 as usize], "B_EQ");
        assert_eq!(
            binary[binary_code(BinaryOp::LeakyReluGrad(0.2)).0 as usize],
            "B_LEAKY_RELU_GRAD"
        );
    }
}
