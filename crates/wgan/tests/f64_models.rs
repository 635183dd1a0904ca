//! The real networks in double precision: each one converts to f64 in place (parameters and
//! buffers, still trainable), runs forward and backward in f64, agrees with its f32 self, and
//! a WGAN-GP training step (the penalty's second-order gradients included) runs in f64.

use earthmover_tensor::{DType, Tensor};
use earthmover_wgan::data::Mnist;
use earthmover_wgan::models::{Critic, CriticNorm, Generator, ModelKind};
use earthmover_wgan::nn::init::Init;
use earthmover_wgan::nn::Module;
use earthmover_wgan::optim::{Adam, Optimizer};
use earthmover_wgan::penalty::{gradient_penalty, interpolate, interpolation_weights};
use earthmover_wgan::train::{Algo, TrainConfig, Trainer};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// A network built twice from the same seed: one to stay f32, one to convert.
fn twins<M: Module>(build: impl Fn(&mut StdRng) -> M) -> (M, M) {
    (
        build(&mut StdRng::seed_from_u64(3)),
        build(&mut StdRng::seed_from_u64(3)),
    )
}

fn assert_all_f64(module: &dyn Module, what: &str) {
    for (name, t) in module.state_dict() {
        assert_eq!(t.dtype(), DType::F64, "{what}: {name}");
    }
    assert!(
        module.parameters().iter().all(|p| p.requires_grad() && p.is_leaf()),
        "{what}: parameters must stay trainable leaves"
    );
    assert_eq!(module.dtype(), DType::F64, "{what}");
}

/// The largest difference between two tensors, relative to the larger's scale.
fn relative_difference(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let (a, b) = (a.to_vec_f64(), b.to_vec_f64());
    let scale = a.iter().chain(&b).fold(1e-12f64, |m, v| m.max(v.abs()));
    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max) / scale
}

/// Forward and backward of `loss(module(input))` in f32 and, converted, in f64: the outputs
/// and every parameter's gradient agree, and the f64 ones are f64.
fn check_against_f32(f32_net: &dyn Module, f64_net: &dyn Module, input: &Tensor, what: &str) -> Tensor {
    f64_net.to_dtype(DType::F64);
    assert_all_f64(f64_net, what);
    let out32 = f32_net.forward(input);
    let out64 = f64_net.forward(&input.to_dtype(DType::F64));
    assert_eq!(out64.dtype(), DType::F64, "{what}");
    let difference = relative_difference(&out32, &out64);
    assert!(difference < 1e-4, "{what}: outputs differ by {difference:e}");
    // A loss that weighs every output differently, so that each gradient is exercised.
    let loss = |out: &Tensor| out.mul(out).mean().add(&out.mean());
    loss(&out32).backward();
    loss(&out64).backward();
    // Relative to the largest gradient of the network: a gradient that is 0 in exact maths
    // (a convolution's bias before batch-norm) is rounding noise in f32.
    let grads: Vec<(String, Vec<f64>, Tensor)> = f32_net
        .named_parameters()
        .into_iter()
        .zip(f64_net.parameters())
        .map(|((name, p32), p64)| {
            (
                name,
                p32.grad().expect("f32 grad").to_vec_f64(),
                p64.grad().expect("f64 grad"),
            )
        })
        .collect();
    let scale = grads.iter().flat_map(|g| &g.1).fold(1e-12f64, |m, v| m.max(v.abs()));
    for (name, g32, g64) in &grads {
        assert_eq!(g64.dtype(), DType::F64, "{what}: {name}");
        let difference = g32
            .iter()
            .zip(g64.to_vec_f64())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max)
            / scale;
        assert!(
            difference < 1e-4,
            "{what}: gradient of {name} differs by {difference:e}"
        );
    }
    out64
}

#[test]
fn every_network_converts_to_f64_and_matches_its_f32_self() {
    let mut rng = StdRng::seed_from_u64(11);
    for kind in [ModelKind::Dcgan, ModelKind::Mlp] {
        let (g32, g64) = twins(|rng| Generator::new(kind, 4, Init::PyTorch, rng));
        let noise = Generator::noise(6, &mut rng);
        let images = check_against_f32(&g32, &g64, &noise, &format!("{kind} generator"));
        assert_eq!(images.shape(), &[6, 1, 28, 28]);
        // Noise follows the model's dtype, and is the f32 noise's values before rounding.
        let (z32, z64) = (
            g32.noise_like(6, &mut StdRng::seed_from_u64(5)),
            g64.noise_like(6, &mut StdRng::seed_from_u64(5)),
        );
        assert_eq!((z32.dtype(), z64.dtype()), (DType::F32, DType::F64));
        assert_eq!(z64.to_dtype(DType::F32).to_vec_f32(), z32.to_vec_f32());
        for norm in [CriticNorm::None, CriticNorm::LayerNorm, CriticNorm::BatchNorm] {
            let (c32, c64) = twins(|rng| Critic::new(kind, 4, norm, Init::Dcgan, rng));
            let input = Tensor::rand_uniform_with(&[6, 1, 28, 28], 0.0, 1.0, DType::F32, &mut rng);
            let scores = check_against_f32(&c32, &c64, &input, &format!("{kind} critic, {norm} norm"));
            assert_eq!(scores.shape(), &[6, 1]);
        }
    }
}

#[test]
fn converting_back_to_f32_restores_the_weights() {
    let (original, converted) = twins(|rng| Generator::new(ModelKind::Mlp, 0, Init::PyTorch, rng));
    converted.to_dtype(DType::F64);
    converted.to_dtype(DType::F32);
    for ((name, a), (_, b)) in original.state_dict().into_iter().zip(converted.state_dict()) {
        assert_eq!((b.dtype(), a.to_vec_f32()), (DType::F32, b.to_vec_f32()), "{name}");
    }
}

/// The gradient penalty in f64: its gradient with respect to the critic's weights goes through
/// the gradient of the critic (second order), and an Adam step applies it.
#[test]
fn a_wgan_gp_critic_step_runs_in_f64_with_second_order_gradients() {
    let mut rng = StdRng::seed_from_u64(2);
    for kind in [ModelKind::Dcgan, ModelKind::Mlp] {
        let critic = Critic::new(kind, 4, CriticNorm::LayerNorm, Init::PyTorch, &mut rng);
        let generator = Generator::new(kind, 4, Init::PyTorch, &mut rng);
        critic.to_dtype(DType::F64);
        generator.to_dtype(DType::F64);
        let mut optim = Adam::new(critic.parameters(), 1e-4, (0.5, 0.9));
        let real = Tensor::rand_uniform_with(&[4, 1, 28, 28], 0.0, 1.0, DType::F64, &mut rng);
        let fake = generator.forward(&generator.noise_like(4, &mut rng)).detach();
        let x_hat = interpolate(&real, &fake, &interpolation_weights(&real, &mut rng).unwrap());
        assert_eq!(x_hat.dtype(), DType::F64);
        let gp = gradient_penalty(|x| critic.forward(x), &x_hat, 10.0);
        let loss = critic
            .forward(&fake)
            .mean()
            .sub(&critic.forward(&real).mean())
            .add(&gp.penalty);
        assert_eq!(loss.dtype(), DType::F64);
        assert!(loss.item().is_finite() && gp.mean_grad_norm.item() > 0.0, "{kind}");
        let before: Vec<f64> = critic.parameters().iter().flat_map(|p| p.to_vec_f64()).collect();
        optim.zero_grad();
        loss.backward();
        for (name, p) in critic.named_parameters() {
            let g = p.grad().unwrap_or_else(|| panic!("{kind}: {name} has no gradient"));
            assert_eq!(g.dtype(), DType::F64, "{kind}: {name}");
            assert!(g.to_vec_f64().iter().all(|v| v.is_finite()), "{kind}: {name}");
        }
        optim.step();
        assert_all_f64(&critic, &format!("{kind} critic after a step"));
        let after: Vec<f64> = critic.parameters().iter().flat_map(|p| p.to_vec_f64()).collect();
        assert_ne!(before, after, "{kind}: the step changed nothing");
    }
}

/// The MNIST trainer converted to f64 (its optimisers' state too) trains whole iterations in
/// f64, and stays close to the same run in f32 over its first iteration.
#[test]
fn the_trainer_trains_wgan_gp_in_f64() {
    let data = Mnist::synthetic(16);
    let mut config = TrainConfig::new(Algo::WganGp);
    (
        config.dim,
        config.batch_size,
        config.n_critic,
        config.test_every,
        config.iters,
    ) = (4, 4, 2, 2, 2);
    config.ema = Some(0.9);
    let mut f32_run = Trainer::new(config.clone(), data.train.len()).unwrap();
    let mut f64_run = Trainer::new(config, data.train.len()).unwrap();
    f64_run.to_dtype(DType::F64).unwrap();
    assert_eq!((f32_run.dtype(), f64_run.dtype()), (DType::F32, DType::F64));
    let (log32, log64) = (f32_run.step(&data).unwrap(), f64_run.step(&data).unwrap());
    assert!(log64.penalty > 0.0 && log64.critic_loss.is_finite(), "{log64:?}");
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-3 * (1.0 + a.abs().max(b.abs()));
    assert!(
        close(log32.wasserstein, log64.wasserstein) && close(log32.generator_loss, log64.generator_loss),
        "f32 {log32:?}\nf64 {log64:?}"
    );
    let log = f64_run.step(&data).unwrap();
    assert!(log.test_wasserstein.is_some_and(f64::is_finite), "{log:?}");
    for (what, net) in [
        ("generator", &f64_run.generator as &dyn Module),
        ("critic", &f64_run.critic),
        ("average", f64_run.generator_ema.as_ref().unwrap()),
    ] {
        assert_all_f64(net, what);
    }
    let samples = f64_run.sample(&Generator::noise(3, &mut StdRng::seed_from_u64(1)));
    assert_eq!((samples.dtype(), samples.shape()), (DType::F64, &[3, 1, 28, 28][..]));
}

/// `Trainer::sample` draws in evaluation mode, as PyTorch's `model.eval()`: the MLP generator's
/// batch-norm uses its running statistics and leaves them alone (in training mode a sample
/// moved them, and a single noise vector normalised to the bias: every image the same).
#[test]
fn sampling_from_the_trainer_leaves_batch_norm_as_it_was() {
    let mut config = TrainConfig::new(Algo::WganGp);
    config.model = ModelKind::Mlp;
    let trainer = Trainer::new(config, 16).unwrap();
    let running = |t: &Trainer| -> Vec<f64> {
        t.sampler()
            .named_tensors(Some(earthmover_wgan::nn::TensorKind::Buffer))
            .iter()
            .flat_map(|(_, b)| b.to_vec_f64())
            .collect()
    };
    let before = running(&trainer);
    assert!(!before.is_empty(), "the MLP generator has batch-norm buffers");
    let one = |seed| {
        trainer
            .sample(&Generator::noise(1, &mut StdRng::seed_from_u64(seed)))
            .to_vec_f64()
    };
    let (a, b) = (one(1), one(2));
    assert_ne!(a, b, "two noise vectors drew the same image");
    assert_eq!(running(&trainer), before, "sampling moved the running statistics");
}
