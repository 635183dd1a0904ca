//! Where a training iteration's kernel launches go, phase by phase: one WGAN-GP critic step,
//! one WGAN critic step (with its clipping) and one generator step of the paper's MNIST
//! networks at batch 64, taken apart into the pieces `train::step` runs, each with its launches
//! per kernel name (the device's `LaunchHistogram` before and after it). Runs on the CUDA
//! emulator (or GPU 0 with `cuda`), where launches count the same as on a GPU:
//!
//! ```sh
//! cargo bench --features emulator --bench launch_breakdown -- emulator 8
//! ```
//!
//! The dim (8 by default) changes the bytes, not the launches. The pieces follow
//! `critic_losses`, `critic_update` and `generator_update` of `crates/wgan/src/train/step.rs`;
//! the sum of the phases is one critic step's (or generator step's) launches, which
//! `train_step`'s counters give for a whole iteration (5 critic steps and a generator step).

use earthmover::tensor::{device_launch_histogram, no_grad, DType, Device, Distribution, LaunchHistogram, Tensor};
use earthmover::wgan::models::{Critic, CriticNorm, Generator, ModelKind};
use earthmover::wgan::nn::init::Init;
use earthmover::wgan::nn::Module;
use earthmover::wgan::optim::{clip_weights, Adam, Optimizer};
use earthmover::wgan::penalty::{gradient_penalty, interpolate};
use rand::SeedableRng;

const BATCH: usize = 64;

/// Runs `phase` and prints the launches it made, per kernel.
fn measure<R>(device: Device, name: &str, phase: impl FnOnce() -> R) -> (R, u64) {
    let before = device_launch_histogram(device).expect("a CUDA device");
    let result = phase();
    let launches = device_launch_histogram(device).expect("a CUDA device").since(&before);
    print_phase(name, &launches);
    (result, launches.total())
}

fn print_phase(name: &str, launches: &LaunchHistogram) {
    let kernels: Vec<String> = launches
        .by_count()
        .iter()
        .map(|(kernel, count)| format!("{count} {kernel}"))
        .collect();
    println!("{:>5}  {name}: {}", launches.total(), kernels.join(", "));
}

fn on(device: Device, t: Tensor) -> Tensor {
    t.to_device(device).expect("the device")
}

fn main() {
    let device = if std::env::args().any(|a| a == "cuda") {
        Device::Cuda(0)
    } else {
        Device::CudaEmulator
    };
    let dim = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(8);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let generator = Generator::new(ModelKind::Dcgan, dim, Init::PyTorch, &mut rng);
    let critic = Critic::new(ModelKind::Dcgan, dim, CriticNorm::None, Init::PyTorch, &mut rng);
    for module in [&generator as &dyn Module, &critic] {
        for p in module.parameters() {
            p.set_data(&on(device, p.clone()));
        }
    }
    let mut critic_optim = Adam::new(critic.parameters(), 1e-4, (0.5, 0.9));
    let mut generator_optim = Adam::new(generator.parameters(), 1e-4, (0.5, 0.9));
    let normal = Distribution::Normal { mean: 0.0, std: 1.0 };
    let draw = |shape: &[usize], stream| Tensor::random(normal, shape, 7, stream, DType::F32, device).expect("draw");
    let uniform = Distribution::Uniform { low: 0.0, high: 1.0 };
    println!("launches per phase on {device:?} at DIM {dim}, batch {BATCH} (launches per kernel)");

    println!("WGAN-GP critic step:");
    let mut total = 0;
    let (real, n) = measure(device, "real batch (stands for the gather)", || {
        draw(&[BATCH, 1, 28, 28], 1).sigmoid()
    });
    total += n;
    let (noise, n) = measure(device, "noise", || draw(&[BATCH, 128], 2));
    total += n;
    let (fake, n) = measure(device, "generator forward (no grad)", || {
        no_grad(|| generator.forward(&noise))
    });
    total += n;
    let (eps, n) = measure(device, "interpolation weights", || {
        Tensor::random(uniform, &[BATCH, 1, 1, 1], 7, 3, DType::F32, device).expect("draw")
    });
    total += n;
    let ((real_scores, fake_scores), n) = measure(device, "critic forward on real and fake (concat)", || {
        let scores = critic.forward(&Tensor::concat(&[&real, &fake], 0));
        (scores.narrow(0, 0, BATCH), scores.narrow(0, BATCH, BATCH))
    });
    total += n;
    let (wasserstein, n) = measure(device, "Wasserstein estimate (two means, a sub)", || {
        real_scores.mean().sub(&fake_scores.mean())
    });
    total += n;
    let (x_hat, n) = measure(device, "interpolates", || interpolate(&real, &fake, &eps));
    total += n;
    let (gp, n) = measure(device, "gradient penalty (critic forward, inner grad, norms)", || {
        gradient_penalty(|x| critic.forward(x), &x_hat, 10.0)
    });
    total += n;
    let (loss, n) = measure(device, "loss (neg, add)", || wasserstein.neg().add(&gp.penalty));
    total += n;
    let (_, n) = measure(device, "zero_grad, backward", || {
        critic_optim.zero_grad();
        loss.backward();
    });
    total += n;
    let (_, n) = measure(device, "Adam step", || critic_optim.step());
    total += n;
    let (_, n) = measure(device, "loss sum and logged values (concat of 4)", || {
        let logged = [
            loss.detach(),
            wasserstein.detach(),
            gp.penalty.detach(),
            gp.mean_grad_norm,
        ];
        let sum = loss.detach().add(&loss.detach());
        let scalars: Vec<Tensor> = logged.iter().map(|v| v.reshape(&[1])).collect();
        (sum, Tensor::concat(&scalars.iter().collect::<Vec<_>>(), 0))
    });
    total += n;
    println!("{total:>5}  the WGAN-GP critic step");

    println!("WGAN critic step (the phases that differ):");
    let (loss, n) = measure(device, "critic forward on real and fake, loss", || {
        let scores = critic.forward(&Tensor::concat(&[&real, &fake], 0));
        scores
            .narrow(0, 0, BATCH)
            .mean()
            .sub(&scores.narrow(0, BATCH, BATCH).mean())
            .neg()
    });
    let mut wgan_total = n;
    let (_, n) = measure(device, "zero_grad, backward", || {
        critic_optim.zero_grad();
        loss.backward();
    });
    wgan_total += n;
    let (_, n) = measure(device, "weight clipping", || clip_weights(&critic.parameters(), 0.01));
    wgan_total += n;
    println!("{wgan_total:>5}  those phases of the WGAN critic step");

    println!("generator step:");
    let trainable = critic.parameters();
    trainable.iter().for_each(|p| p.set_requires_grad(false));
    let (loss, n) = measure(device, "generator and critic forward, loss", || {
        critic.forward(&generator.forward(&noise)).mean().neg()
    });
    let mut generator_total = n;
    let (_, n) = measure(device, "zero_grad, backward", || {
        generator_optim.zero_grad();
        loss.backward();
    });
    generator_total += n;
    let (_, n) = measure(device, "Adam step", || generator_optim.step());
    generator_total += n;
    trainable.iter().for_each(|p| p.set_requires_grad(true));
    println!("{generator_total:>5}  the generator step (without its noise)");
}
