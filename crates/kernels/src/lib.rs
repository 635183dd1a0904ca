//! earthmover's compute kernels.
//!
//! Kernels see plain buffers and shapes, never tensors or graphs: the autodiff engine in
//! `earthmover-tensor` calls them through [`Storage`], which holds a buffer on one device and
//! dispatches each operation to that device's implementation. Today that is the CPU (the
//! [`cpu`] module, parallel with rayon); a CUDA backend slots in as a second variant of
//! [`Storage`] without the tensor crate changing.
//!
//! Layout: one module per family of kernels (`elementwise`, `reduce`, `layout`, `matmul`,
//! `conv`), each a set of functions generic over the element type [`Element`].

pub mod cpu;
pub mod cuda;
mod element;
mod shape;
mod storage;

pub use cpu::elementwise::{BinaryOp, UnaryOp};
pub use element::Element;
pub use shape::{broadcast_shapes, broadcast_strides, contiguous_strides, numel, ConvGeometry};
pub use storage::{CpuStorage, DType, Device, MatmulProblem, MatrixLayout, OptimizerUpdate, ReduceOp, Storage};
