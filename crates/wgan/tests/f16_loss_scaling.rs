//! f16 mixed precision with dynamic loss scaling (`Precision::F16`, `GradScaler`): a short
//! WGAN-GP run tracks the f32 run; the gradient penalty's inner gradient, taken of scaled
//! scores, keeps gradients that plain f16 loses; an overflow skips the step and halves the
//! scale instead of stopping the run, while a non-finite loss still does; a resumed run goes on
//! at the same scales, bit for bit.

use earthmover_tensor::{autocast, DType, Tensor};
use earthmover_wgan::amp::GradScaler;
use earthmover_wgan::checkpoint::{load_checkpoint, save_checkpoint};
use earthmover_wgan::data::Mnist;
use earthmover_wgan::nn::init::Init;
use earthmover_wgan::nn::{Activation, Linear, Module, Sequential};
use earthmover_wgan::optim::{Adam, Optimizer, Sgd};
use earthmover_wgan::penalty::{gradient_penalty, interpolate, interpolation_weights, scaled_gradient_penalty};
use earthmover_wgan::train::{
    critic_step, generator_step, Algo, Diverged, Objective, Precision, StepError, TrainConfig, Trainer,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn tiny_config(precision: Precision) -> TrainConfig {
    let mut config = TrainConfig::new(Algo::WganGp);
    (config.dim, config.batch_size, config.n_critic, config.test_every) = (8, 16, 2, 1000);
    config.precision = precision;
    config
}

/// The scaler's default start, 2^16, overflows f16 (largest finite 65,504) where the
/// penalty's inner gradient enters the critic (the gradient of the scores' sum, times the
/// scale): the first critic step is skipped and at half the scale the rest fit. The
/// generator's loss is a mean, so its gradients stay far below.
#[test]
fn an_f16_run_skips_its_first_critic_step_and_settles_at_half_the_scale() {
    let data = Mnist::synthetic(64);
    let mut run = Trainer::new(tiny_config(Precision::F16), data.train.len()).unwrap();
    for iteration in 1..=3 {
        let log = run.step(&data).unwrap();
        let scaling = log.loss_scaling.expect("an f16 run logs its scales");
        let skipped = if iteration == 1 { 1 } else { 0 };
        assert_eq!(
            (scaling.critic_skipped, scaling.generator_skipped),
            (skipped, 0),
            "{log:?}"
        );
        assert_eq!((scaling.critic_scale, scaling.generator_scale), (32768.0, 65536.0));
        assert!(
            log.critic_loss.is_finite(),
            "the last critic step of each iteration went through"
        );
    }
    assert_eq!(run.critic_scaler.as_ref().unwrap().skipped_steps(), 1);
}

/// With the critic's scale where the run settles (above), every step goes through and the
/// f16 run differs from the f32 run only by f16's rounding (11 bits: each product rounds by up
/// to 2^-12). A loss scale that is not undone exactly, a skipped step or a lost gradient moves
/// these far more.
#[test]
fn an_f16_wgan_gp_run_tracks_the_f32_run_and_keeps_f32_masters() {
    let data = Mnist::synthetic(64);
    let mut f32_run = Trainer::new(tiny_config(Precision::F32), data.train.len()).unwrap();
    let mut f16_run = Trainer::new(tiny_config(Precision::F16), data.train.len()).unwrap();
    assert!(f32_run.critic_scaler.is_none() && f32_run.generator_scaler.is_none());
    f16_run.critic_scaler = Some(GradScaler::with_options(32768.0, 2.0, 0.5, 2000).unwrap());
    for iteration in 1..=8 {
        let (a, b) = (f32_run.step(&data).unwrap(), f16_run.step(&data).unwrap());
        let scaling = b.loss_scaling.expect("an f16 run logs its scales");
        assert_eq!(
            (scaling.critic_skipped, scaling.generator_skipped),
            (0, 0),
            "{iteration}"
        );
        for (what, x, y) in [
            ("critic loss", a.critic_loss, b.critic_loss),
            ("wasserstein", a.wasserstein, b.wasserstein),
            ("penalty", a.penalty, b.penalty),
            ("grad norm", a.grad_norm, b.grad_norm),
            ("generator loss", a.generator_loss, b.generator_loss),
        ] {
            let tolerance = 1e-3 * (1.0 + x.abs());
            assert!(
                (x - y).abs() <= tolerance,
                "iteration {iteration}, {what}: f32 {x}, f16 {y}"
            );
        }
        assert!(
            relative_error(b.grad_norm, a.grad_norm) < 0.01,
            "iteration {iteration}: {a:?} {b:?}"
        );
    }
    for (name, t) in f16_run
        .critic
        .state_dict()
        .into_iter()
        .chain(f16_run.generator.state_dict())
    {
        assert_eq!(t.dtype(), DType::F32, "{name}");
        if let Some(g) = t.grad() {
            assert_eq!(g.dtype(), DType::F32, "{name}'s gradient");
        }
    }
}

/// A critic `64 -> 16 -> 1` whose input gradients are about 3e-8: far below f16's smallest
/// normal (6.1e-5), about half its smallest subnormal (6e-8). Its weights are f16 values already,
/// so that casting them for the products loses nothing and only the backward pass rounds.
fn faint_critic(rng: &mut StdRng) -> Sequential {
    let net = Sequential::new()
        .push(Linear::new(64, 16, Init::PyTorch, rng))
        .push(Activation::LeakyRelu(0.2))
        .push(Linear::new(16, 1, Init::PyTorch, rng));
    let params = net.parameters();
    for (i, p) in params.iter().enumerate() {
        // The last layer's weight and bias scaled down: the critic's scores, and their
        // gradient in its input, shrink with it.
        let factor = if i >= 2 { 1e-6 } else { 1.0 };
        p.set_data(&p.detach().mul_scalar(factor).to_dtype(DType::F16).to_dtype(DType::F32));
    }
    net
}

fn f16_forward(net: &Sequential, x: &Tensor) -> Tensor {
    autocast(DType::F16, || net.forward(x)).to_dtype(DType::F32)
}

fn relative_error(got: f64, exact: f64) -> f64 {
    (got - exact).abs() / exact.abs()
}

/// The penalty's mean gradient norm in f16 against f32, with the inner gradient taken of
/// plain scores and of scores times 2^15.
#[test]
fn the_penalty_keeps_faint_gradients_in_f16_only_with_its_inner_gradient_scaled() {
    let mut rng = StdRng::seed_from_u64(11);
    let critic = faint_critic(&mut rng);
    let (real, fake) = (
        Tensor::randn_with(&[8, 64], DType::F32, &mut rng),
        Tensor::randn_with(&[8, 64], DType::F32, &mut rng),
    );
    let x_hat = interpolate(&real, &fake, &interpolation_weights(&real, &mut rng).unwrap());
    let exact = gradient_penalty(|x| critic.forward(x), &x_hat, 10.0)
        .mean_grad_norm
        .item();
    let plain = gradient_penalty(|x| f16_forward(&critic, x), &x_hat, 10.0)
        .mean_grad_norm
        .item();
    let scaled = scaled_gradient_penalty(|x| f16_forward(&critic, x), &x_hat, 10.0, 32768.0)
        .mean_grad_norm
        .item();
    println!("exact {exact:e}, plain f16 {plain:e}, scaled f16 {scaled:e}");
    assert!(
        exact > 1e-8 && exact < 1e-6,
        "the gradients are as faint as intended: {exact:e}"
    );
    assert!(
        relative_error(scaled, exact) < 2e-3,
        "scaled: {scaled:e} against {exact:e}"
    );
    assert!(
        relative_error(plain, exact) > 0.1,
        "plain f16 kept them: {plain:e} against {exact:e}"
    );
}

fn objective(algo: Algo, precision: Precision) -> Objective {
    Objective {
        algo,
        clip: 0.01,
        lambda: 10.0,
        joint_critic_pass: true,
        precision,
    }
}

fn values(net: &dyn Module) -> Vec<f64> {
    net.parameters().iter().flat_map(|p| p.to_vec_f64()).collect()
}

/// The training step's own use of the penalty: an f16 critic step on the faint critic logs the
/// f32 step's gradient norm and makes its update (the penalty's double backward, scaled by the
/// outer loss's scale and unscaled before Adam's step), to f16's rounding.
#[test]
fn an_f16_critic_step_scales_the_penalty_inner_gradient_and_its_update() {
    let step = |precision: Precision, scaler: Option<&mut GradScaler>| {
        let mut rng = StdRng::seed_from_u64(12);
        let critic = faint_critic(&mut rng);
        let real = Tensor::randn_with(&[8, 64], DType::F32, &mut rng);
        let fake = Tensor::randn_with(&[8, 64], DType::F32, &mut rng);
        let before = values(&critic);
        // Plain SGD, so that the update is the gradient itself (Adam's would hide its size).
        let mut optim = Sgd::new(critic.parameters(), 1e-3, 0.0);
        let objective = objective(Algo::WganGp, precision);
        let log = critic_step(&objective, &critic, &mut optim, scaler, &real, &fake, &mut rng).unwrap();
        let update: Vec<f64> = values(&critic).iter().zip(before).map(|(a, b)| a - b).collect();
        (log, update)
    };
    let (exact, exact_update) = step(Precision::F32, None);
    // The scaler's own search, on the same batches: from 2^16 down, halving at each overflow.
    // (This critic's penalty has large gradients in its last layer's weights: multiplied by
    // the scale they overflow f16 at the larger scales.)
    let mut scaler = GradScaler::new();
    let (f16, f16_update) = loop {
        let skipped = scaler.skipped_steps();
        let (log, update) = step(Precision::F16, Some(&mut scaler));
        if scaler.skipped_steps() == skipped {
            break (log, update);
        }
        assert!(update.iter().all(|u| *u == 0.0), "a skipped step moved the critic");
        assert!(skipped < 16, "no scale fits");
    };
    println!("went through at scale {}", scaler.get_scale());
    // The inner gradients (3e-8) came out of the critic scaled into f16's normal range.
    assert!(scaler.get_scale() * 3e-8 > 6.1e-5, "scale {}", scaler.get_scale());
    assert!(
        relative_error(f16.grad_norm, exact.grad_norm) < 2e-3,
        "f16 {f16:?} against f32 {exact:?}"
    );
    let diff: f64 = f16_update
        .iter()
        .zip(&exact_update)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = exact_update.iter().map(|b| b * b).sum::<f64>().sqrt();
    assert!(
        norm > 0.0 && diff / norm < 0.01,
        "the f16 update is off by {:.3e}",
        diff / norm
    );
}

/// Under a scaler an overflow is a skipped step (no weight moves, the scale halves, the run
/// goes on), while a non-finite loss is still a divergence: the loss comes from the forward
/// pass, which no scale changes.
#[test]
fn an_overflow_skips_the_step_and_a_non_finite_loss_still_diverges() {
    let mut rng = StdRng::seed_from_u64(13);
    let critic = Sequential::new()
        .push(Linear::new(4, 8, Init::PyTorch, &mut rng))
        .push(Activation::LeakyRelu(0.2))
        .push(Linear::new(8, 1, Init::PyTorch, &mut rng));
    let generator = Sequential::new().push(Linear::new(3, 4, Init::PyTorch, &mut rng));
    let (real, fake) = (
        Tensor::randn_with(&[6, 4], DType::F32, &mut rng),
        Tensor::randn_with(&[6, 4], DType::F32, &mut rng),
    );
    let noise = Tensor::randn_with(&[6, 3], DType::F32, &mut rng);
    let objective = objective(Algo::WganGp, Precision::F16);
    let mut critic_optim = Adam::new(critic.parameters(), 1e-3, (0.5, 0.9));
    let mut generator_optim = Adam::new(generator.parameters(), 1e-3, (0.5, 0.9));

    // 2^16 times the scores' gradient overflows f16 inside the penalty, and this critic's
    // penalty gradients overflow at a few scales below that: each overflow is a skipped step
    // that halves the scale, until a step goes through.
    let mut scaler = GradScaler::new();
    let first = critic_step(
        &objective,
        &critic,
        &mut critic_optim,
        Some(&mut scaler),
        &real,
        &fake,
        &mut rng,
    )
    .expect("an overflow is not a divergence");
    assert!(!first.penalty.is_finite() && first.wasserstein.is_finite(), "{first:?}");
    let before = values(&critic);
    assert_eq!(critic_optim.state_dict()[0].1.item(), 0.0, "Adam took no step");
    let mut expected_scale = 32768.0;
    loop {
        assert_eq!(values(&critic), before, "a skipped step moved the critic");
        assert_eq!(scaler.get_scale(), expected_scale);
        let skipped = scaler.skipped_steps();
        let log = critic_step(
            &objective,
            &critic,
            &mut critic_optim,
            Some(&mut scaler),
            &real,
            &fake,
            &mut rng,
        )
        .expect("an overflow is not a divergence");
        if scaler.skipped_steps() == skipped {
            assert!(log.loss.is_finite() && values(&critic) != before, "{log:?}");
            break;
        }
        expected_scale /= 2.0;
        assert!(skipped < 16, "no scale fits");
    }
    assert_eq!(
        critic_optim.state_dict()[0].1.item(),
        1.0,
        "Adam counted only the step it took"
    );

    // The generator's gradients overflow at a scale of 2^100.
    let mut scaler = GradScaler::with_options(2f64.powi(100), 2.0, 0.5, 2000).unwrap();
    let before = values(&generator);
    let loss = generator_step(
        &objective,
        &generator,
        &mut generator_optim,
        Some(&mut scaler),
        &critic,
        &noise,
    )
    .unwrap();
    assert!(loss.is_finite());
    assert_eq!(values(&generator), before, "a skipped step moved the generator");
    assert_eq!((scaler.get_scale(), scaler.skipped_steps()), (2f64.powi(99), 1));

    // NaN in the forward pass: no scale can help, so the step reports it as before.
    let poisoned = real.mul_scalar(f64::NAN);
    let mut scaler = GradScaler::new();
    let diverged = critic_step(
        &objective,
        &critic,
        &mut critic_optim,
        Some(&mut scaler),
        &poisoned,
        &fake,
        &mut rng,
    );
    assert!(
        matches!(
            diverged,
            Err(StepError::Diverged(Diverged {
                loss: "critic_loss",
                ..
            }))
        ),
        "{diverged:?}"
    );
    let diverged = generator_step(
        &objective,
        &generator,
        &mut generator_optim,
        Some(&mut scaler),
        &critic,
        &noise.mul_scalar(f64::NAN),
    );
    assert!(
        matches!(
            diverged,
            Err(StepError::Diverged(Diverged {
                loss: "generator_loss",
                ..
            }))
        ),
        "{diverged:?}"
    );
    assert_eq!(
        (scaler.get_scale(), scaler.skipped_steps()),
        (65536.0, 0),
        "no step was scaled"
    );
}

/// A checkpoint of an f16 run keeps both scalers: the resumed run goes on at the same scales
/// and trains what the unbroken run trains, bit for bit.
#[test]
fn a_resumed_f16_run_continues_at_the_same_scales_bit_for_bit() {
    let data = Mnist::synthetic(64);
    let mut config = tiny_config(Precision::F16);
    config.dim = 4;
    let mut straight = Trainer::new(config.clone(), data.train.len()).unwrap();
    let mut first = Trainer::new(config, data.train.len()).unwrap();
    for _ in 0..2 {
        straight.step(&data).unwrap();
        first.step(&data).unwrap();
    }
    let dir = std::env::temp_dir().join(format!("em-f16-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.safetensors");
    save_checkpoint(&first, &path).unwrap();
    let mut resumed = load_checkpoint(&path, data.train.len()).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    for (a, b) in [
        (&first.critic_scaler, &resumed.critic_scaler),
        (&first.generator_scaler, &resumed.generator_scaler),
    ] {
        assert_eq!(a.as_ref().unwrap().state_dict(), b.as_ref().unwrap().state_dict());
    }
    assert_eq!(
        resumed.critic_scaler.as_ref().unwrap().get_scale(),
        32768.0,
        "the skip is remembered"
    );
    for _ in 0..2 {
        let (a, b) = (straight.step(&data).unwrap(), resumed.step(&data).unwrap());
        assert_eq!(a.loss_scaling, b.loss_scaling);
    }
    assert_eq!(values(&straight.critic), values(&resumed.critic));
    assert_eq!(values(&straight.generator), values(&resumed.generator));
}
