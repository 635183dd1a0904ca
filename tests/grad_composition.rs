//! The ops of the other `grad_*` files composed as a small WGAN-GP critic, checked end to end
//! at first and second order on every device (see `common::devices`). Second order through
//! the whole chain also checks that gradients from several paths are accumulated with
//! create_graph.
//!
//! `cargo test --test grad_composition` (add `--features emulator` for the CUDA emulator).

mod common;

use common::{check2, for_each_device, randn};
use earthmover::{ConvOptions, Tensor};

#[test]
fn small_critic_passes_gradgradcheck_end_to_end() {
    // conv, bias, leaky_relu, layer-norm statistics, flatten, linear.
    let critic = |xs: &[Tensor]| {
        let s2 = ConvOptions::new().stride(2).padding(1);
        let h = xs[0].conv2d(&xs[1], Some(&xs[2]), s2).leaky_relu(0.2); // [3, 2, 3, 4]
        let h = h.normalize(&[1, 2, 3], 1e-5).tanh();
        h.flatten(1).linear(&xs[3], None).sigmoid().sum() // [3, 1] -> scalar
    };
    for_each_device(|device| {
        let inputs = [
            randn(&[3, 1, 5, 7], 900),
            randn(&[2, 1, 3, 3], 901),
            randn(&[2], 902),
            randn(&[1, 24], 903),
        ];
        check2(device, "a small critic", critic, &inputs);
    });
}
