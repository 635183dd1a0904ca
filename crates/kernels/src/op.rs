//! What the kernels compute, described once for every backend: the op enums, the matmul
//! problem, the convolutions' epilogue and the optimiser updates. [`crate::cpu`] and
//! [`crate::cuda`] are siblings that both read these; neither imports the other.
//!
//! The elementwise ops reach the CUDA kernels as integer codes. The codes are not written by
//! hand anywhere: [`UnaryOp::code`] and [`BinaryOp::code`] are each variant's position in its
//! enum, and `build.rs` compiles this file on its own to write the same positions into
//! `op_codes.cuh` (as `U_<NAME>` and `B_<NAME>`), which `kernels/elementwise.cu` includes. So
//! the two sides read their codes from the declarations below and cannot disagree; a test
//! (`cuda::tests`) checks that the CUDA switch handles every code.
//!
//! This file is also compiled by `build.rs`: it must not depend on the rest of the crate.

/// Declares an op enum whose variants are numbered for the CUDA kernels: besides the enum, it
/// gives `VARIANT_NAMES` (every variant's name, in order) and `code()` (the variant's position
/// in that list), from the one list of variants.
macro_rules! numbered_for_cuda {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$variant_meta:meta])* $variant:ident $( ( $($field:ty),* ) )? ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        pub enum $name {
            $( $(#[$variant_meta])* $variant $( ( $($field),* ) )? ),*
        }

        impl $name {
            /// Every variant's name in declaration order: variant `i` has code `i` in the
            /// CUDA kernels (`build.rs` writes this list into `op_codes.cuh`).
            pub const VARIANT_NAMES: &'static [&'static str] = &[$(stringify!($variant)),*];

            /// This op's code in the CUDA kernels: its position in [`Self::VARIANT_NAMES`].
            pub fn code(&self) -> i32 {
                // A fieldless twin of the enum, whose discriminants are the positions.
                #[allow(dead_code)]
                enum Position { $($variant),* }
                match self {
                    $( Self::$variant { .. } => Position::$variant as i32 ),*
                }
            }
        }
    };
}

numbered_for_cuda! {
    /// A unary elementwise operation. Scalar parameters are `f64` and cast to the element type.
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub enum UnaryOp {
        Neg,
        Exp,
        Log,
        Sqrt,
        Abs,
        /// -1, 0 or 1.
        Sign,
        /// `max(x, 0)`; NaN stays NaN.
        Relu,
        LeakyRelu(f64),
        Tanh,
        Sigmoid,
        /// log(1 + e^x), computed without overflow.
        Softplus,
        /// x^p for a constant p.
        Pow(f64),
        /// Into `[lo, hi]`; NaN stays NaN, and with `lo > hi` every number becomes `hi` (as in
        /// PyTorch).
        Clamp(f64, f64),
        /// 1 where lo <= x <= hi, else 0 (the derivative of `Clamp(lo, hi)`).
        InRange(f64, f64),
        AddScalar(f64),
        MulScalar(f64),
        /// x / c, divided (not multiplied by 1 / c, which rounds twice and overflows for a
        /// subnormal c), as PyTorch's CPU divides by a number.
        DivScalar(f64),
        /// 1 where x > c, else 0.
        GtScalar(f64),
        /// 1 where x < c, else 0.
        LtScalar(f64),
        /// 1 where x == c, else 0.
        EqScalar(f64),
    }
}

impl UnaryOp {
    /// The op's two scalar parameters as the CUDA kernel takes them (0 where it has fewer).
    pub fn parameters(&self) -> (f64, f64) {
        match *self {
            UnaryOp::LeakyRelu(p) | UnaryOp::Pow(p) => (p, 0.0),
            UnaryOp::AddScalar(c) | UnaryOp::MulScalar(c) | UnaryOp::DivScalar(c) => (c, 0.0),
            UnaryOp::GtScalar(c) | UnaryOp::LtScalar(c) | UnaryOp::EqScalar(c) => (c, 0.0),
            UnaryOp::Clamp(lo, hi) | UnaryOp::InRange(lo, hi) => (lo, hi),
            UnaryOp::Neg
            | UnaryOp::Exp
            | UnaryOp::Log
            | UnaryOp::Sqrt
            | UnaryOp::Abs
            | UnaryOp::Sign
            | UnaryOp::Relu
            | UnaryOp::Tanh
            | UnaryOp::Sigmoid
            | UnaryOp::Softplus => (0.0, 0.0),
        }
    }

    /// One of each unary op in declaration order (`Pow` three times: a square, a cube and a
    /// square root), with parameters inside the range of the tests' inputs: the one list that
    /// every backend's elementwise tests go over (the CPU's SIMD paths, the half-precision
    /// paths, the CUDA kernels). A test here checks it against [`Self::VARIANT_NAMES`], so an op
    /// added to the enum and not here fails it.
    pub const EVERY: [UnaryOp; 22] = [
        UnaryOp::Neg,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Abs,
        UnaryOp::Sign,
        UnaryOp::Relu,
        UnaryOp::LeakyRelu(0.2),
        UnaryOp::Tanh,
        UnaryOp::Sigmoid,
        UnaryOp::Softplus,
        UnaryOp::Pow(2.0),
        UnaryOp::Pow(3.0),
        UnaryOp::Pow(0.5),
        UnaryOp::Clamp(-0.5, 0.7),
        UnaryOp::InRange(-0.5, 0.7),
        UnaryOp::AddScalar(1.5),
        UnaryOp::MulScalar(-3.0),
        UnaryOp::DivScalar(-3.0),
        UnaryOp::GtScalar(0.1),
        UnaryOp::LtScalar(0.1),
        UnaryOp::EqScalar(0.0),
    ];
}

numbered_for_cuda! {
    /// A binary elementwise operation. Comparisons give 1 where true and 0 where false.
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub enum BinaryOp {
        Add,
        Sub,
        Mul,
        Div,
        Maximum,
        Minimum,
        Gt,
        Ge,
        Lt,
        Le,
        Eq,
        /// 0 where `b <= 0`, else `a`: a gradient `a` through `Relu` at `b` (its input or its
        /// output), in one pass. PyTorch's `threshold_backward`: a NaN `b` passes `a`.
        ReluGrad,
        /// `a` where `b > 0`, else `a * slope`: a gradient `a` through `LeakyRelu(slope)` at
        /// `b`, in one pass (PyTorch's `leaky_relu_backward`).
        LeakyReluGrad(f64),
        /// `a / b`, or `a` where `b == 0` (dividing by 1 instead): a gradient through a norm
        /// that is 0 at 0 (`per_sample_norm`), in one pass.
        DivNonzero,
    }
}

impl BinaryOp {
    /// The op's scalar parameter as the CUDA kernel takes it (0 where it has none).
    pub fn parameter(&self) -> f64 {
        match *self {
            BinaryOp::LeakyReluGrad(slope) => slope,
            _ => 0.0,
        }
    }

    /// One of each binary op in declaration order: the list that every backend's elementwise
    /// tests go over (see [`UnaryOp::EVERY`]).
    pub const EVERY: [BinaryOp; 14] = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Maximum,
        BinaryOp::Minimum,
        BinaryOp::Gt,
        BinaryOp::Ge,
        BinaryOp::Lt,
        BinaryOp::Le,
        BinaryOp::Eq,
        BinaryOp::ReluGrad,
        BinaryOp::LeakyReluGrad(0.2),
        BinaryOp::DivNonzero,
    ];
}

/// A reduction over a set of dims.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    /// NaN propagates, as in PyTorch.
    Max,
}

/// How to read one matmul operand: element (row r, column c) is at `offset + r * row_stride +
/// c * col_stride`.
#[derive(Clone, Copy, Debug)]
pub struct MatrixLayout {
    pub row_stride: usize,
    pub col_stride: usize,
}

impl MatrixLayout {
    /// A contiguous row-major `rows x cols` matrix, read as is.
    pub fn row_major(cols: usize) -> Self {
        MatrixLayout {
            row_stride: cols,
            col_stride: 1,
        }
    }
    /// A contiguous row-major `rows x cols` matrix, read as its transpose.
    pub fn transposed(cols: usize) -> Self {
        MatrixLayout {
            row_stride: 1,
            col_stride: cols,
        }
    }
}

/// One batched matmul problem: `batch` products of `m x k` by `k x n`. Batch `i` of an operand
/// starts at `i * batch_stride` (0 broadcasts one matrix over the batch).
#[derive(Clone, Copy, Debug)]
pub struct MatmulProblem {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a_layout: MatrixLayout,
    pub a_batch_stride: usize,
    pub b_layout: MatrixLayout,
    pub b_batch_stride: usize,
}

impl MatmulProblem {
    /// One product of a row-major `m x k` by a row-major `k x n`.
    pub fn plain(m: usize, n: usize, k: usize) -> MatmulProblem {
        MatmulProblem {
            batch: 1,
            m,
            n,
            k,
            a_layout: MatrixLayout::row_major(k),
            a_batch_stride: 0,
            b_layout: MatrixLayout::row_major(n),
            b_batch_stride: 0,
        }
    }
}

/// What the convolutions do to their sums before writing them: add a bias per channel, then
/// apply an activation. (The CPU's tile kernels start their sums at the bias and apply the
/// activation while a task's sums are in cache; the GPU applies both as passes of their own.)
#[derive(Clone, Copy, Debug)]
pub struct Epilogue<'a, T> {
    pub bias: Option<&'a [T]>,
    pub activation: Option<UnaryOp>,
}

impl<T> Epilogue<'_, T> {
    /// Neither bias nor activation: the bare sums.
    pub const NONE: Self = Epilogue {
        bias: None,
        activation: None,
    };
}

/// A distribution to draw from with the counter-based generator (Philox4x32-10) that the CPU
/// (`cpu::random`) and the CUDA kernels (`kernels/random.cu`) share: element `i` of stream
/// `stream` under key `seed` is the same number on every device.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Distribution {
    /// Uniform on `(low, high)`.
    Uniform { low: f64, high: f64 },
    /// Normal with mean `mean` and standard deviation `std`.
    Normal { mean: f64, std: f64 },
}

/// The fused in-place optimiser updates, with their hyperparameters. The state buffers each
/// needs, in order: SGD with momentum its momentum buffer; RMSProp its square average; Adam
/// its first and second moments; Clamp none (and ignores the gradient).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptimizerUpdate {
    Sgd {
        lr: f64,
        momentum: f64,
    },
    RmsProp {
        lr: f64,
        alpha: f64,
        eps: f64,
    },
    Adam {
        lr: f64,
        betas: (f64, f64),
        eps: f64,
        step: u64,
    },
    Clamp {
        min: f64,
        max: f64,
    },
}

impl OptimizerUpdate {
    /// Adam's two scalars for step `step` (from 1): the step size `lr / (1 - beta1^step)` and
    /// `1 / sqrt(1 - beta2^step)`, PyTorch's bias corrections, computed once per update rather
    /// than once per element (by the CPU kernel and the CUDA launch alike). The powers are
    /// [`pow_by_squaring`], which `optim.cu`'s `adam_at` kernels repeat on the device (for a step
    /// count read there), so that both give the same bits.
    pub fn adam_step_scalars(lr: f64, betas: (f64, f64), step: u64) -> (f64, f64) {
        (
            lr / (1.0 - pow_by_squaring(betas.0, step)),
            1.0 / (1.0 - pow_by_squaring(betas.1, step)).sqrt(),
        )
    }
}

/// `base^exp` by binary exponentiation in f64, products only, in a fixed order (the bits of
/// the exponent from the lowest): `optim.cu`'s `pow_by_squaring` is the same sequence of
/// correctly rounded products, so host and device agree to the bit (`powi` leaves its
/// algorithm to the compiler).
pub fn pow_by_squaring(base: f64, exp: u64) -> f64 {
    let (mut result, mut square, mut exp) = (1.0, base, exp);
    while exp > 0 {
        if exp & 1 == 1 {
            result *= square;
        }
        exp >>= 1;
        if exp > 0 {
            square *= square;
        }
    }
    result
}

/// A variant's name as the CUDA code spells it: `LeakyReluGrad` as `LEAKY_RELU_GRAD`.
pub fn screaming_snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// The text of `op_codes.cuh`, which `build.rs` writes: one C enum per numbered op enum,
/// `U_<NAME> = code` for [`UnaryOp`] and `B_<NAME> = code` for [`BinaryOp`].
pub fn op_codes_header() -> String {
    let mut text = String::from(
        "// Generated by crates/kernels/build.rs from the enums of crates/kernels/src/op.rs: do not\n\
         // edit. A variant's code is its position in the Rust enum.\n#pragma once\n",
    );
    for (c_name, prefix, variants) in [
        ("UnaryCode", "U_", UnaryOp::VARIANT_NAMES),
        ("BinaryCode", "B_", BinaryOp::VARIANT_NAMES),
    ] {
        text.push_str(&format!("\nenum {c_name} {{\n"));
        for (code, variant) in variants.iter().enumerate() {
            text.push_str(&format!("    {prefix}{} = {code},\n", screaming_snake_case(variant)));
        }
        text.push_str("};\n");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pow_by_squaring_is_the_power() {
        assert_eq!(pow_by_squaring(0.9, 0), 1.0);
        assert_eq!(pow_by_squaring(0.0, 5), 0.0);
        assert_eq!(pow_by_squaring(2.0, 40), 2f64.powi(40));
        // The same bits as `powi` computed at run time (compiler-rt's `__powidf2`: the same
        // products in the same order; a constant `powi` may be folded otherwise), so Adam's
        // steps did not change when it came in.
        for (base, t) in [
            (0.9, 1),
            (0.999, 2),
            (0.9, 3),
            (0.5, 17),
            (0.999, 12_345),
            (0.9, 99_999),
        ] {
            let (base, t) = std::hint::black_box((base, t));
            assert_eq!(
                pow_by_squaring(base, t).to_bits(),
                base.powi(t as i32).to_bits(),
                "{base}^{t}"
            );
        }
        for t in [1, 2, 3, 7, 100, 12_345] {
            let exact = 0.9f64.powf(t as f64);
            let ours = pow_by_squaring(0.9, t);
            assert!((ours - exact).abs() <= 1e-13 * exact, "0.9^{t}: {ours} vs {exact}");
        }
    }

    /// The lists the elementwise tests of every backend go over hold every variant.
    #[test]
    fn every_list_holds_every_variant() {
        let mut unary: Vec<i32> = UnaryOp::EVERY.iter().map(UnaryOp::code).collect();
        let mut binary: Vec<i32> = BinaryOp::EVERY.iter().map(BinaryOp::code).collect();
        unary.dedup();
        binary.dedup();
        assert_eq!(unary, (0..UnaryOp::VARIANT_NAMES.len() as i32).collect::<Vec<_>>());
        assert_eq!(binary, (0..BinaryOp::VARIANT_NAMES.len() as i32).collect::<Vec<_>>());
    }

    #[test]
    fn codes_are_positions_in_the_declaration() {
        assert_eq!(UnaryOp::Neg.code(), 0);
        assert_eq!(UnaryOp::EqScalar(1.0).code() as usize, UnaryOp::VARIANT_NAMES.len() - 1);
        let softplus = UnaryOp::VARIANT_NAMES.iter().position(|n| *n == "Softplus").unwrap();
        assert_eq!(UnaryOp::Softplus.code() as usize, softplus);
        assert_eq!(UnaryOp::Clamp(0.0, 1.0).parameters(), (0.0, 1.0));
        assert_eq!(BinaryOp::DivNonzero.code() as usize, BinaryOp::VARIANT_NAMES.len() - 1);
        assert_eq!(BinaryOp::LeakyReluGrad(0.2).parameter(), 0.2);
        assert_eq!(BinaryOp::Minimum.code(), 5);
    }

    #[test]
    fn the_header_names_each_code_as_cuda_spells_it() {
        assert_eq!(screaming_snake_case("LeakyReluGrad"), "LEAKY_RELU_GRAD");
        assert_eq!(screaming_snake_case("Neg"), "NEG");
        let header = op_codes_header();
        assert!(header.contains("enum UnaryCode {\n    U_NEG = 0,\n"), "{header}");
        assert!(
            header.contains("    B_LEAKY_RELU_GRAD = 12,\n    B_DIV_NONZERO = 13,\n};"),
            "{header}"
        );
    }
}
