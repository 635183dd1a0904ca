//! A long training loop must not grow: graphs are freed after backward, gradients of
//! gradients included, and `create_graph = false` records nothing.

use earthmover::tensor::live_tensor_count;
use earthmover::wgan::penalty::{gradient_penalty, interpolate, interpolation_weights};
use earthmover::{grad, no_grad, ConvOptions, DType, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

struct Net {
    conv_w: Tensor,
    conv_b: Tensor,
    lin_w: Tensor,
    lin_b: Tensor,
}

impl Net {
    fn new() -> Net {
        let p = |shape: &[usize], seed| {
            Tensor::randn(shape, DType::F32, seed)
                .mul_scalar(0.1)
                .requires_grad_(true)
        };
        Net {
            conv_w: p(&[4, 1, 3, 3], 1),
            conv_b: p(&[4], 2),
            lin_w: p(&[1, 4 * 4 * 4], 3),
            lin_b: p(&[1], 4),
        }
    }
    fn params(&self) -> [&Tensor; 4] {
        [&self.conv_w, &self.conv_b, &self.lin_w, &self.lin_b]
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        let h = x.conv2d(
            &self.conv_w,
            Some(&self.conv_b),
            ConvOptions::new().stride(2).padding(1),
        );
        h.leaky_relu(0.2).flatten(1).linear(&self.lin_w, Some(&self.lin_b))
    }
    /// One WGAN-GP critic step: forward, penalty (a double backward), backward, SGD update.
    fn step(&self, real: &Tensor, fake: &Tensor, rng: &mut StdRng) -> f64 {
        let eps = interpolation_weights(real, rng).unwrap();
        let x_hat = interpolate(real, fake, &eps);
        let gp = gradient_penalty(|x| self.forward(x), &x_hat, 10.0);
        let loss = self
            .forward(fake)
            .mean()
            .sub(&self.forward(real).mean())
            .add(&gp.penalty);
        loss.backward();
        no_grad(|| {
            for p in self.params() {
                let g = p.grad().expect("every parameter gets a gradient");
                p.set_data(&p.sub(&g.mul_scalar(1e-3)));
                p.zero_grad();
            }
        });
        loss.item()
    }
}

#[test]
fn thousand_training_steps_keep_the_live_tensor_count_flat() {
    let net = Net::new();
    let real = Tensor::randn(&[4, 1, 8, 8], DType::F32, 10);
    let fake = Tensor::randn(&[4, 1, 8, 8], DType::F32, 11);
    let mut rng = StdRng::seed_from_u64(0);
    for _ in 0..10 {
        net.step(&real, &fake, &mut rng);
    }
    let after_warmup = live_tensor_count();
    for i in 0..1000 {
        let loss = net.step(&real, &fake, &mut rng);
        assert!(loss.is_finite(), "step {i}: loss {loss}");
    }
    // Other tests in this binary run on other threads and create tensors too, so allow a
    // little slack; a leak of even one tensor per step would add 1,000.
    let after = live_tensor_count();
    assert!(
        after <= after_warmup + 50,
        "live tensors grew from {after_warmup} to {after} over 1,000 steps"
    );
}

#[test]
fn backward_frees_the_graph() {
    let net = Net::new();
    let x = Tensor::randn(&[2, 1, 8, 8], DType::F32, 5);
    let loss = net.forward(&x).mean();
    let y = net.forward(&x); // a second graph kept alive through `y`
    loss.backward();
    // The freed graph cannot be walked again; the retained one can.
    let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| loss.backward()));
    let message = again.expect_err("a second backward through a freed graph must fail");
    let message = message.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("second time"), "{message}");
    y.sum().backward_with(&Tensor::ones(&[], DType::F32), true, false);
    y.sum().backward();
}

#[test]
fn grad_without_create_graph_records_nothing() {
    let net = Net::new();
    let x = Tensor::randn(&[2, 1, 8, 8], DType::F32, 6).requires_grad_(true);
    let out = net.forward(&x).sum();
    let grads = grad(&[&out], &[&x, &net.conv_w], None, false);
    for g in &grads {
        assert!(!g.requires_grad() && g.is_leaf(), "{g:?} carries a graph");
    }
    // Nothing was accumulated into .grad() either.
    assert!(net.conv_w.grad().is_none());
    // With create_graph the gradients are differentiable.
    let out = net.forward(&x).sum();
    let gx = grad(&[&out], &[&x], None, true).remove(0);
    assert!(gx.requires_grad());
}
