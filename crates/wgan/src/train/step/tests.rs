//! The training step's unit tests (beside `step.rs`, which they test).
use super::*;
use crate::nn::init::Init;
use crate::nn::{Activation, LayerNorm, Linear, Sequential};
use crate::optim::{Adam, RmsProp, Sgd};
use earthmover_tensor::DType;
use rand::rngs::StdRng;
use rand::SeedableRng;

/// A small critic `2 -> 8 -> 1`, layer-normalised where asked (per sample, so a joint pass
/// must agree with two). Leaky relu, as in the DCGAN critic: it passes NaN on, where this
/// engine's relu turns it into 0.
fn critic(layer_norm: bool, rng: &mut StdRng) -> Sequential {
    let net = Sequential::new().push(Linear::new(2, 8, Init::PyTorch, rng));
    let net = if layer_norm {
        net.push(LayerNorm::new(&[8]))
    } else {
        net
    };
    net.push(Activation::LeakyRelu(0.2))
        .push(Linear::new(8, 1, Init::PyTorch, rng))
}

fn generator(rng: &mut StdRng) -> Sequential {
    Sequential::new()
        .push(Linear::new(2, 8, Init::PyTorch, rng))
        .push(Activation::LeakyRelu(0.2))
        .push(Linear::new(8, 2, Init::PyTorch, rng))
}

fn objective(algo: Algo) -> Objective {
    Objective {
        algo,
        clip: 0.01,
        lambda: 10.0,
        joint_critic_pass: true,
        precision: Precision::F32,
    }
}

fn batch(n: usize, rng: &mut StdRng) -> Tensor {
    Tensor::randn_with(&[n, 2], DType::F32, rng)
}

fn values(params: &[Tensor]) -> Vec<f32> {
    params.iter().flat_map(|p| p.to_vec_f32()).collect()
}

fn close(a: &Tensor, b: &Tensor) -> bool {
    a.shape() == b.shape()
        && a.to_vec_f64()
            .iter()
            .zip(b.to_vec_f64())
            .all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs()))
}

#[test]
fn wgan_warm_up_schedule_follows_the_reference_code() {
    let schedule = CriticSchedule {
        n_critic: 5,
        warmup: true,
    };
    let steps: Vec<usize> = [0, 24, 25, 499, 500, 501].map(|i| schedule.critic_steps(i)).to_vec();
    assert_eq!(steps, [100, 100, 5, 5, 100, 5]);
    let plain = CriticSchedule {
        warmup: false,
        ..schedule
    };
    assert_eq!(plain.critic_steps(0), 5);
}

/// Without batch normalisation the real and fake batches may share one forward pass; the
/// scores, and the gradients they send to the critic, are those of two separate passes.
#[test]
fn one_pass_over_real_and_fake_scores_each_batch_as_its_own_pass() {
    let mut rng = StdRng::seed_from_u64(7);
    for layer_norm in [false, true] {
        let critic = critic(layer_norm, &mut rng);
        let (real, fake) = (batch(5, &mut rng), batch(3, &mut rng));
        let params = critic.parameters();
        let gradients = |(real_scores, fake_scores): (Tensor, Tensor)| {
            let loss = real_scores.mean().sub(&fake_scores.mean());
            let grads = earthmover_tensor::grad(&[&loss], &params.iter().collect::<Vec<_>>(), None, false);
            (real_scores, fake_scores, grads)
        };
        let joint_pass = |joint_critic_pass| Objective {
            joint_critic_pass,
            ..objective(Algo::WganGp)
        };
        let (real_joint, fake_joint, joint) = gradients(critic_scores(&joint_pass(true), &critic, &real, &fake));
        let (real_alone, fake_alone, separate) = gradients(critic_scores(&joint_pass(false), &critic, &real, &fake));
        assert!(
            close(&real_joint, &real_alone) && close(&fake_joint, &fake_alone),
            "layer norm {layer_norm}"
        );
        for (a, b) in joint.iter().zip(&separate) {
            assert!(close(a, b), "layer norm {layer_norm}: gradients differ");
        }
    }
}

#[test]
fn the_critic_step_lowers_each_objectives_loss_on_fixed_batches() {
    for algo in [Algo::Wgan, Algo::WganGp, Algo::Gan] {
        let mut rng = StdRng::seed_from_u64(1);
        let critic = critic(false, &mut rng);
        // Real points around (2, 2), fake around the origin: easy to tell apart.
        let real = batch(32, &mut rng).add_scalar(2.0);
        let fake = batch(32, &mut rng);
        let mut optim = Adam::new(critic.parameters(), 1e-2, (0.5, 0.9));
        // Clipping at 0.01 would hold a WGAN critic near 0: give it room to learn.
        let objective = Objective {
            clip: 1.0,
            ..objective(algo)
        };
        let first = critic_step(&objective, &critic, &mut optim, None, &real, &fake, &mut rng).unwrap();
        let mut last = first;
        for _ in 0..30 {
            last = critic_step(&objective, &critic, &mut optim, None, &real, &fake, &mut rng).unwrap();
        }
        assert!(last.loss < first.loss - 0.1, "{algo}: {first:?} -> {last:?}");
        assert!(last.wasserstein > first.wasserstein, "{algo}: {first:?} -> {last:?}");
        let has_penalty = algo == Algo::WganGp;
        assert_eq!(
            last.penalty > 0.0 && last.grad_norm > 0.0,
            has_penalty,
            "{algo}: {last:?}"
        );
        let expected_loss = match algo {
            Algo::Wgan => -last.wasserstein,
            Algo::WganGp => -last.wasserstein + last.penalty,
            Algo::Gan => last.loss,
        };
        assert!((last.loss - expected_loss).abs() < 1e-5, "{algo}: {last:?}");
    }
}

/// The logged values, read back together in one download, are each the one they name:
/// computed again here from the same critic, batches and interpolation weights.
#[test]
fn a_critic_step_logs_each_value_under_its_own_name() {
    let mut rng = StdRng::seed_from_u64(3);
    let critic = critic(false, &mut rng);
    let (real, fake) = (batch(6, &mut rng), batch(6, &mut rng));
    let objective = objective(Algo::WganGp);
    let wasserstein = critic.forward(&real).mean().sub(&critic.forward(&fake).mean()).item();
    // The step draws its interpolation weights first, from a generator seeded alike.
    let eps = interpolation_weights(&real, &mut StdRng::seed_from_u64(4)).unwrap();
    let gp = crate::penalty::gradient_penalty(
        |x| critic.forward(x),
        &interpolate(&real, &fake, &eps),
        objective.lambda,
    );
    let (penalty, grad_norm) = (gp.penalty.item(), gp.mean_grad_norm.item());
    let mut optim = Sgd::new(critic.parameters(), 0.1, 0.0);
    let log = critic_step(
        &objective,
        &critic,
        &mut optim,
        None,
        &real,
        &fake,
        &mut StdRng::seed_from_u64(4),
    )
    .unwrap();
    let near = |a: f64, b: f64| (a - b).abs() <= 1e-5 * (1.0 + b.abs());
    assert!(
        near(log.wasserstein, wasserstein)
            && near(log.penalty, penalty)
            && near(log.grad_norm, grad_norm)
            && near(log.loss, penalty - wasserstein),
        "{log:?}: expected W {wasserstein}, penalty {penalty}, grad norm {grad_norm}"
    );
    assert!(
        penalty != grad_norm && penalty != wasserstein,
        "distinct values, so a swap shows"
    );
}

#[test]
fn wgan_critic_steps_clip_every_weight_and_the_others_do_not() {
    for algo in [Algo::Wgan, Algo::WganGp] {
        let mut rng = StdRng::seed_from_u64(2);
        let critic = critic(false, &mut rng);
        let mut optim = RmsProp::new(critic.parameters(), 5e-2);
        let (real, fake) = (batch(8, &mut rng), batch(8, &mut rng));
        critic_step(&objective(algo), &critic, &mut optim, None, &real, &fake, &mut rng).unwrap();
        let largest = values(&critic.parameters()).iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert_eq!(largest <= 0.01, algo == Algo::Wgan, "{algo}: |w| reaches {largest}");
    }
}

#[test]
fn the_generator_step_moves_only_the_generator_and_leaves_the_critic_trainable() {
    for algo in [Algo::Wgan, Algo::WganGp, Algo::Gan] {
        let mut rng = StdRng::seed_from_u64(3);
        let (generator, critic) = (generator(&mut rng), critic(false, &mut rng));
        let mut optim = Sgd::new(generator.parameters(), 0.1, 0.0);
        let (generator_before, critic_before) = (values(&generator.parameters()), values(&critic.parameters()));
        let loss = generator_step(
            &objective(algo),
            &generator,
            &mut optim,
            None,
            &critic,
            &batch(16, &mut rng),
        )
        .unwrap();
        assert!(loss.is_finite(), "{algo}");
        assert_ne!(values(&generator.parameters()), generator_before, "{algo}");
        assert_eq!(values(&critic.parameters()), critic_before, "{algo}");
        assert!(
            critic
                .parameters()
                .iter()
                .all(|p| p.requires_grad() && p.grad().is_none()),
            "{algo}"
        );
    }
}

#[test]
fn a_non_finite_loss_is_reported_and_changes_no_weight() {
    let mut rng = StdRng::seed_from_u64(4);
    let (generator, critic) = (generator(&mut rng), critic(false, &mut rng));
    let mut critic_optim = Adam::new(critic.parameters(), 1e-3, (0.5, 0.9));
    let mut generator_optim = Adam::new(generator.parameters(), 1e-3, (0.5, 0.9));
    let before = values(&critic.parameters());
    let poisoned = batch(4, &mut rng).mul_scalar(f64::NAN);
    let objective = objective(Algo::WganGp);
    let diverged = critic_step(
        &objective,
        &critic,
        &mut critic_optim,
        None,
        &poisoned,
        &batch(4, &mut rng),
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
    let diverged = match generator_step(&objective, &generator, &mut generator_optim, None, &critic, &poisoned) {
        Err(StepError::Diverged(diverged)) => diverged,
        other => panic!("{other:?}"),
    };
    assert_eq!(diverged.loss, "generator_loss");
    assert!(diverged.value.is_nan());
    assert_eq!(values(&critic.parameters()), before);
    assert!(critic.parameters().iter().all(|p| p.requires_grad()));
    let message = diverged.at_iteration(7).0;
    assert_eq!(message, "training diverged at iteration 7: generator_loss is NaN");
    assert_eq!(Error::from(diverged).0, "training diverged: generator_loss is NaN");
}

/// An iteration reads its losses once, at its end: a critic loss that was non-finite at any
/// of its steps is reported then (through the sum of the steps' losses when the last one is
/// finite again), and so is the generator's.
#[test]
fn an_iteration_reports_a_loss_that_diverged_at_any_of_its_steps() {
    let run = |poisoned_real: Option<usize>, poisoned_noise: Option<usize>| {
        let mut rng = StdRng::seed_from_u64(6);
        let (generator, critic) = (generator(&mut rng), critic(false, &mut rng));
        let mut generator_optim = Adam::new(generator.parameters(), 1e-3, (0.5, 0.9));
        // No parameters: the critic keeps its finite weights, so a later step's loss is
        // finite again and only the sum shows the poisoned one.
        let mut critic_optim = Sgd::new(Vec::new(), 0.1, 0.0);
        let gan = Gan {
            generator: &generator,
            critic: &critic,
            generator_optim: &mut generator_optim,
            critic_optim: &mut critic_optim,
            critic_scaler: None,
            generator_scaler: None,
        };
        let (mut reals, mut noises) = (0, 0);
        let poison = |t: Tensor, at: Option<usize>, count: &mut usize| {
            *count += 1;
            if at == Some(*count - 1) {
                t.mul_scalar(f64::NAN)
            } else {
                t
            }
        };
        generator_iteration(
            &objective(Algo::Wgan),
            3,
            gan,
            |rng| poison(batch(4, rng), poisoned_real, &mut reals),
            |rng| poison(batch(4, rng), poisoned_noise, &mut noises),
            &mut rng,
        )
    };
    run(None, None).unwrap();
    for step in [0, 2] {
        match run(Some(step), None) {
            Err(StepError::Diverged(Diverged {
                loss: "critic_loss",
                value,
            })) => assert!(value.is_nan(), "step {step}: {value}"),
            other => panic!("step {step}: {other:?}"),
        }
    }
    // The fourth noise is the generator step's.
    match run(None, Some(3)) {
        Err(StepError::Diverged(Diverged {
            loss: "generator_loss",
            value,
        })) => assert!(value.is_nan(), "{value}"),
        other => panic!("{other:?}"),
    }
}

/// Gradients that are inf or NaN at every scale (here the square root's at 0, under a
/// finite loss) halve the scale down to f32's smallest normal, and then stop the run.
#[test]
fn gradients_non_finite_at_every_scale_end_in_divergence() {
    let x = Tensor::zeros(&[2], DType::F32).requires_grad_(true);
    let mut optim = Sgd::new(vec![x.clone()], 0.1, 0.0);
    let mut scaler = GradScaler::with_options(4.0 * MIN_SCALE, 2.0, 0.5, 2000).unwrap();
    let mut step = || backward_and_step(&x.sqrt().sum(), &mut optim, Some(&mut scaler), "critic_loss_scale");
    step().unwrap();
    step().unwrap();
    let err = step().unwrap_err();
    let expected = Diverged {
        loss: "critic_loss_scale",
        value: MIN_SCALE / 2.0,
    };
    assert_eq!(err, StepError::Diverged(expected));
    let message = err.at_iteration(3).0;
    assert!(message.contains("at every loss scale"), "{message}");
    assert_eq!(x.to_vec_f32(), [0.0, 0.0], "no step was taken");
}

/// A device's failure reaches the training loop as a message naming the iteration.
#[test]
fn a_device_error_is_reported_with_its_iteration() {
    let e = StepError::Device("cuda:0 (GPU): CUDA error in kernel matmul_f32: an illegal memory access".into());
    assert_eq!(
        e.clone().at_iteration(3).0,
        "the device failed at iteration 3: cuda:0 (GPU): CUDA error in kernel matmul_f32: an illegal memory access"
    );
    assert!(Error::from(e).0.starts_with("the device failed: cuda:0"));
}

#[test]
fn an_iteration_takes_the_scheduled_critic_steps_and_draws_in_a_fixed_order() {
    let run = |critic_steps: usize| {
        let mut rng = StdRng::seed_from_u64(5);
        let (generator, critic) = (generator(&mut rng), critic(false, &mut rng));
        let mut generator_optim = Adam::new(generator.parameters(), 1e-3, (0.5, 0.9));
        let mut critic_optim = Adam::new(critic.parameters(), 1e-3, (0.5, 0.9));
        let draws = std::cell::RefCell::new(Vec::new());
        let gan = Gan {
            generator: &generator,
            critic: &critic,
            generator_optim: &mut generator_optim,
            critic_optim: &mut critic_optim,
            critic_scaler: None,
            generator_scaler: None,
        };
        let log = generator_iteration(
            &objective(Algo::WganGp),
            critic_steps,
            gan,
            |rng| {
                draws.borrow_mut().push("real");
                batch(8, rng).add_scalar(1.0)
            },
            |rng| {
                draws.borrow_mut().push("noise");
                batch(8, rng)
            },
            &mut rng,
        )
        .unwrap();
        (log, draws.into_inner(), values(&generator.parameters()))
    };
    let (log, draws, weights) = run(2);
    assert_eq!(draws, ["real", "noise", "real", "noise", "noise"]);
    assert!(log.critic.penalty > 0.0 && log.generator_loss.is_finite(), "{log:?}");
    // The same seed gives the same iteration.
    assert_eq!(run(2).2, weights);
    let (log, draws, _) = run(0);
    assert_eq!((draws.len(), log.critic), (1, CriticLog::default()));
}
