//! earthmover's compute kernels.
//!
//! Kernels see plain buffers and shapes, never tensors or graphs: the autodiff engine in
//! `earthmover-tensor` calls them through [`Storage`], which holds a buffer on one device and
//! dispatches each operation to that device's kernels.
//!
//! Layout:
//! - [`op`]: what the kernels compute ([`UnaryOp`], [`BinaryOp`], [`ReduceOp`],
//!   [`MatmulProblem`], [`Epilogue`], [`OptimizerUpdate`]), described once for every backend;
//!   [`shape`] beside it holds the shape arithmetic and [`ConvGeometry`].
//! - [`cpu`] and [`cuda`]: the two backends, siblings that both read [`op`] and never each
//!   other. `cpu` is one module per family of kernels (`elementwise`, `reduce`, `layout`,
//!   `matmul`, `conv/`, `optim`, `random`), generic over the element type [`Element`]; `cuda`
//!   launches the kernels of `kernels/*.cu` (the same families, by name) on a GPU through
//!   NVRTC and cudarc, or on the CPU through the emulator (feature `emulator`).
//! - [`Storage`]: a buffer on one device, and the one place where each op is dispatched to a
//!   backend (`storage.rs`; the fused ops, a unary op folded into a reduction or a copy, in
//!   `storage_fused.rs`).

pub mod cpu;
pub mod cuda;
mod element;
pub mod op;
pub mod shape;
mod storage;
mod storage_counted;
mod storage_fused;
mod storage_optim;

pub use element::Element;
/// The 16-bit float types of [`DType::BF16`] and [`DType::F16`] (the `half` crate's).
pub use half::{bf16, f16};
pub use op::{BinaryOp, Distribution, Epilogue, MatmulProblem, MatrixLayout, OptimizerUpdate, ReduceOp, UnaryOp};
pub use shape::{broadcast_shapes, broadcast_strides, checked_numel, contiguous_strides, numel, ConvGeometry};
pub use storage::{CpuStorage, DType, Device, Storage};
pub use storage_optim::ParamStep;
