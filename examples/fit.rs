//! Fit a small network to y = sin(3x) with plain gradient descent, printing the loss as it
//! falls. Run it with `cargo run --release --example fit`.

use earthmover::{no_grad, DType, Tensor};
use std::time::Instant;

fn main() {
    // 256 points on [-1, 1] and their targets.
    let x = Tensor::arange(-1.0, 1.0, 2.0 / 256.0, DType::F32)
        .expect("a valid range")
        .reshape(&[256, 1]);
    let y = x
        .mul_scalar(3.0)
        .to_vec_f32()
        .iter()
        .map(|v| v.sin())
        .collect::<Vec<f32>>();
    let y = Tensor::from_vec(y, &[256, 1]).expect("256 targets");

    // A 1 -> 64 -> 64 -> 1 multilayer perceptron with tanh, PyTorch's default initialisation
    // (uniform in +-1/sqrt(fan_in)).
    let layer = |fan_in: usize, fan_out: usize, seed: u64| {
        let bound = 1.0 / (fan_in as f64).sqrt();
        let w = Tensor::rand_uniform(&[fan_out, fan_in], -bound, bound, DType::F32, seed).requires_grad_(true);
        let b = Tensor::rand_uniform(&[fan_out], -bound, bound, DType::F32, seed + 100).requires_grad_(true);
        (w, b)
    };
    let params = [layer(1, 64, 1), layer(64, 64, 2), layer(64, 1, 3)];
    let forward = |x: &Tensor| {
        let h = x.linear(&params[0].0, Some(&params[0].1)).tanh();
        let h = h.linear(&params[1].0, Some(&params[1].1)).tanh();
        h.linear(&params[2].0, Some(&params[2].1))
    };

    let (steps, lr, momentum) = (3000, 0.05, 0.9);
    let mut velocity: Vec<Tensor> = params
        .iter()
        .flat_map(|(w, b)| [w.zeros_like(), b.zeros_like()])
        .collect();
    let start = Instant::now();
    println!("fitting y = sin(3x) with a 1-64-64-1 tanh network, SGD lr {lr} momentum {momentum}");
    for step in 0..=steps {
        let loss = forward(&x).sub(&y).square().mean();
        if step % 300 == 0 {
            println!("step {step:>5}  mse {:.6}", loss.item());
        }
        loss.backward();
        no_grad(|| {
            let tensors = params.iter().flat_map(|(w, b)| [w, b]);
            for (p, v) in tensors.zip(velocity.iter_mut()) {
                let g = p.grad().expect("every parameter is used");
                *v = v.mul_scalar(momentum).add(&g);
                p.set_data(&p.sub(&v.mul_scalar(lr)));
                p.zero_grad();
            }
        });
    }
    println!("{steps} steps in {:.2} s", start.elapsed().as_secs_f64());
}
