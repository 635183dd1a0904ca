//! The critic's ops on a GPU against the CPU: forward values and first- and second-order
//! gradients (the gradient penalty's), and finite-difference checks run on the GPU itself.
//!
//! Runs on CUDA GPU 0 when there is one; otherwise on the CUDA emulator when built with
//! `--features emulator` (the same GPU code path, kernels executed on the CPU); otherwise it
//! says why it skipped. `cargo test --features emulator --test gpu_parity`

use earthmover::kernels::cuda::device::cuda_device_count;
use earthmover::tensor::gradcheck::{gradcheck, gradgradcheck, Tolerance};
use earthmover::wgan::penalty::{gradient_penalty, interpolate, interpolation_weights};
use earthmover::{ConvOptions, DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn gpu() -> Option<Device> {
    if cuda_device_count() > 0 {
        return Some(Device::Cuda(0));
    }
    if cfg!(feature = "emulator") {
        return Some(Device::CudaEmulator);
    }
    eprintln!("skipped: no CUDA GPU here, and the emulator is not built in (--features emulator)");
    None
}

fn params(dtype: DType) -> Vec<Tensor> {
    let shapes: [&[usize]; 6] = [&[2, 1, 3, 3], &[2], &[3, 2, 3, 3], &[3], &[1, 3 * 2 * 2], &[1]];
    shapes
        .iter()
        .enumerate()
        .map(|(i, s)| Tensor::randn(s, dtype, 100 + i as u64).mul_scalar(0.5))
        .collect()
}

/// The reference critic's layers shrunk to 5x7 images: conv s2, leaky relu, conv s2, linear.
fn critic(p: &[Tensor], x: &Tensor) -> Tensor {
    let s2 = ConvOptions::new().stride(2).padding(1);
    let h = x.conv2d(&p[0], Some(&p[1]), s2).leaky_relu(0.2);
    let h = h.conv2d(&p[2], Some(&p[3]), s2).leaky_relu(0.2);
    h.flatten(1).linear(&p[4], Some(&p[5]))
}

fn on(device: Device, tensors: &[Tensor]) -> Vec<Tensor> {
    tensors.iter().map(|t| t.to_device(device).unwrap()).collect()
}

/// Critic loss with the gradient penalty, and its gradient in every parameter.
fn loss_and_grads(p: &[Tensor], real: &Tensor, fake: &Tensor, eps: &Tensor) -> (f64, Vec<Vec<f64>>) {
    let p: Vec<Tensor> = p.iter().map(|t| t.detach().requires_grad_(true)).collect();
    let x_hat = interpolate(real, fake, eps);
    let gp = gradient_penalty(|x| critic(&p, x), &x_hat, 10.0);
    let loss = critic(&p, fake).mean().sub(&critic(&p, real).mean()).add(&gp.penalty);
    let refs: Vec<&Tensor> = p.iter().collect();
    let grads = earthmover::grad(&[&loss], &refs, None, false);
    (loss.item(), grads.iter().map(|g| g.to_vec_f64()).collect())
}

#[test]
fn critic_loss_with_penalty_and_its_gradients_match_the_cpu() {
    let Some(device) = gpu() else { return };
    for (dtype, tolerance) in [(DType::F64, 1e-10), (DType::F32, 2e-4)] {
        let p = params(dtype);
        let real = Tensor::randn(&[4, 1, 5, 7], dtype, 1);
        let fake = Tensor::randn(&[4, 1, 5, 7], dtype, 2);
        let eps = interpolation_weights(&real, &mut StdRng::seed_from_u64(3)).unwrap();
        let (cpu_loss, cpu_grads) = loss_and_grads(&p, &real, &fake, &eps);
        let moved = on(device, &[real, fake, eps]);
        let (gpu_loss, gpu_grads) = loss_and_grads(&on(device, &p), &moved[0], &moved[1], &moved[2]);
        assert!(
            (gpu_loss - cpu_loss).abs() <= tolerance * (1.0 + cpu_loss.abs()),
            "{dtype}: loss {gpu_loss} vs {cpu_loss}"
        );
        for (i, (g, c)) in gpu_grads.iter().zip(&cpu_grads).enumerate() {
            for (a, b) in g.iter().zip(c) {
                assert!(
                    (a - b).abs() <= tolerance * (1.0 + b.abs()),
                    "{dtype}: parameter {i}: {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn critic_ops_pass_gradcheck_and_gradgradcheck_on_the_gpu() {
    let Some(device) = gpu() else { return };
    let p = on(device, &params(DType::F64));
    let x = Tensor::randn(&[2, 1, 5, 7], DType::F64, 4).to_device(device).unwrap();
    // In the first conv's weight and the input; the other parameters are constants here.
    let f = |inputs: &[Tensor]| {
        let mut all = p.clone();
        all[0] = inputs[0].clone();
        critic(&all, &inputs[1])
    };
    let tol = Tolerance::default();
    gradcheck(f, &[p[0].clone(), x.clone()], tol).unwrap();
    gradgradcheck(f, &[p[0].clone(), x], tol).unwrap();
}
