//! Every differentiable operation, one module per family. In each, an op's forward pass (a
//! kernel call) sits next to its backward rule, written with differentiable tensor ops.

pub mod conv;
mod elementwise;
mod layout;
mod loss;
mod matmul;
mod norm;
mod reduce;

pub use elementwise::Activation;
