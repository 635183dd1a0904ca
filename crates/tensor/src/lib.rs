//! earthmover's tensor: n-dimensional arrays with reverse-mode automatic differentiation.
//!
//! ```
//! use earthmover_tensor::{grad, DType, Tensor};
//!
//! let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0], &[3]).unwrap().requires_grad_(true);
//! let y = x.pow(3.0).sum(); // sum(x^3)
//! // dy/dx = 3x^2, kept differentiable so that we can differentiate again.
//! let dx = grad(&[&y], &[&x], None, true).remove(0);
//! assert_eq!(dx.to_vec_f64(), vec![3.0, 12.0, 27.0]);
//! dx.sum().backward(); // d/dx sum(3x^2) = 6x
//! assert_eq!(x.grad().unwrap().to_vec_f64(), vec![6.0, 12.0, 18.0]);
//! # let _ = DType::F32;
//! ```
//!
//! Every operation is defined in `ops/` with its forward pass (a kernel call through
//! [`earthmover_kernels::Storage`]) next to its backward rule. Backward rules are written with
//! differentiable tensor operations, so derivatives of any order work: WGAN-GP's gradient
//! penalty differentiates a gradient. The engine itself is in [`autograd`].

mod autocast;
pub mod autograd;
mod counted;
mod device;
mod error;
pub mod gradcheck;
mod ops;
mod tensor;

pub use autocast::{autocast, autocast_dtype, promote};
pub use autograd::{grad, is_grad_enabled, no_grad, NoGradGuard};
pub use device::{
    capture_graph, configure_flush_denormal, cpu_simd_path, cuda_device_count, device_counters,
    device_launch_histogram, device_name, device_pool_counters, flush_denormal, replay_graph, set_flush_denormal,
    DeviceGraph,
};
pub use earthmover_kernels::cpu::gather::shuffled_row;
pub use earthmover_kernels::cpu::random::sequence_key;
pub use earthmover_kernels::cpu::retain_freed_memory;
pub use earthmover_kernels::cpu::simd::SimdPath;
pub use earthmover_kernels::cuda::counters::{DeviceCounters, LaunchHistogram, PoolCounters};
pub use earthmover_kernels::{bf16, f16, DType, Device, Distribution, OptimizerUpdate};
pub use error::{Error, Result};
pub use ops::conv::ConvOptions;
pub use ops::Activation;
pub use tensor::{live_tensor_count, Tensor};
