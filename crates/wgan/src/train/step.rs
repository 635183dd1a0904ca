//! One generator iteration of the three objectives over any pair of networks: the critic's
//! steps, then the generator's. The MNIST [`Trainer`](super::Trainer) and the 2-D experiments
//! of `gan-experiments` both train through these functions, so each loss, the penalty, the
//! clipping, the schedule and what is logged are written once.
//!
//! | objective | critic loss | generator loss | after the critic's update |
//! | --- | --- | --- | --- |
//! | WGAN | `-(mean C(real) - mean C(fake))` | `-mean C(G(z))` | weights clipped to [-c, c] |
//! | WGAN-GP | the same `+ lambda * penalty` | `-mean C(G(z))` | |
//! | GAN | `BCE(C(real), 1) + BCE(C(fake), 0)` | `BCE(C(G(z)), 1)` (non-saturating) | |

use super::inputs::{HostInputs, IterationInputs};
use super::{Algo, Precision};
use crate::amp::{GradScaler, MIN_SCALE};
use crate::nn::Module;
use crate::optim::{clip_weights, Optimizer};
use crate::penalty::{interpolate, interpolation_weights, scaled_gradient_penalty};
use crate::Error;
use earthmover_tensor::{autocast, no_grad, DType, Tensor};
use rand::Rng;
use std::fmt;

/// An objective with its constants: what a critic step and a generator step compute.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Objective {
    pub algo: Algo,
    /// Weight-clipping bound c (WGAN).
    pub clip: f64,
    /// Gradient-penalty weight lambda (WGAN-GP).
    pub lambda: f64,
    /// Score the real and the fake batch in one forward pass of the critic: one pass over its
    /// weights and half the calls. When the critic scores each sample on its own this is the
    /// same maths, rounded differently; with batch-norm it is not (the batch statistics would
    /// mix real and fake), so such a critic needs `false`.
    pub joint_critic_pass: bool,
    /// What the networks' products compute in: under [`Precision::Bf16`] and
    /// [`Precision::F16`] the forward passes run inside [`autocast`] and their outputs
    /// (scores, images) come back as f32, so every loss, norm and estimate is accumulated in
    /// f32. (f16 also wants a [`GradScaler`] per network: see [`Gan`].)
    pub precision: Precision,
}

impl Objective {
    /// `module(x)` in the objective's precision, returned in f32.
    fn forward(&self, module: &dyn Module, x: &Tensor) -> Tensor {
        match self.precision {
            Precision::F32 => module.forward(x),
            half => autocast(half.dtype(), || module.forward(x)).to_dtype(DType::F32),
        }
    }
}

/// How many critic steps come before each generator step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CriticSchedule {
    pub n_critic: usize,
    /// WGAN's reference schedule: 100 critic steps for the first 25 generator iterations and
    /// every 500th, so that the critic is near its optimum whenever the generator learns from it.
    pub warmup: bool,
}

impl CriticSchedule {
    /// Critic steps before generator iteration `iteration` (counted from 0).
    pub fn critic_steps(&self, iteration: usize) -> usize {
        if self.warmup && (iteration < 25 || iteration.is_multiple_of(500)) {
            100
        } else {
            self.n_critic
        }
    }
}

/// A generator and a critic with their optimisers (each over its network's parameters) and,
/// for f16, their loss scalers, borrowed for one generator iteration.
pub struct Gan<'a> {
    pub generator: &'a dyn Module,
    pub critic: &'a dyn Module,
    pub generator_optim: &'a mut dyn Optimizer,
    pub critic_optim: &'a mut dyn Optimizer,
    /// The critic's dynamic loss scaler ([`GradScaler`]); `None`: its loss is not scaled
    /// (f32, bf16). One per network, not one shared: an overflow in the critic's backward
    /// pass (whose penalty adds second-order terms) must not skip the generator's step or
    /// halve its scale, and the critic takes several steps per generator step.
    pub critic_scaler: Option<&'a mut GradScaler>,
    /// The generator's dynamic loss scaler; `None`: not scaled.
    pub generator_scaler: Option<&'a mut GradScaler>,
}

/// What one critic step measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CriticLog {
    /// The critic's loss (WGAN-GP: penalty included).
    pub loss: f64,
    /// `mean(C(real)) - mean(C(fake))`, without the penalty.
    pub wasserstein: f64,
    /// The gradient penalty (WGAN-GP; 0 otherwise).
    pub penalty: f64,
    /// The mean per-sample gradient norm on the interpolates (WGAN-GP; 0 otherwise).
    pub grad_norm: f64,
}

/// What one generator iteration measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepLog {
    /// The last critic step's measurements.
    pub critic: CriticLog,
    pub generator_loss: f64,
    /// Critic steps of this iteration that its loss scaler skipped (a non-finite scaled
    /// gradient); 0 without a scaler.
    pub critic_skipped: u64,
    /// Generator steps skipped (0 or 1).
    pub generator_skipped: u64,
}

/// A loss that came out non-finite. A single [`critic_step`] or [`generator_step`] reads its
/// loss before its backward pass, so no weight was changed by it. A [`generator_iteration`]
/// reads its losses once, at its end (one wait for a GPU per iteration, not one per step): the
/// updates of the iteration in which a loss diverged have been applied, so the networks may hold
/// non-finite weights, and a training loop must not keep them (the MNIST
/// [`Trainer`](super::Trainer) does not count the iteration, and
/// [`save_checkpoint`](crate::checkpoint::save_checkpoint) refuses non-finite weights).
///
/// A loss scale (`critic_loss_scale`, `generator_loss_scale`) that backed off below
/// [`MIN_SCALE`] because the gradients were inf or NaN at every scale is reported as one too.
/// Under dynamic loss scaling a non-finite *gradient* is not divergence: the scaler skips the
/// step and lowers the scale. A non-finite *loss* is, with or without scaling: the loss is
/// computed in the forward pass, which the scale does not touch, so no lower scale could
/// make it finite. The gradient penalty is the exception: its inner gradient is taken of
/// scaled scores, so under a scaler an inf or NaN penalty is an overflow of the scale and a
/// skipped step, and only the rest of the critic's loss is checked.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Diverged {
    /// Which loss: `critic_loss` or `generator_loss`; or which loss scale:
    /// `critic_loss_scale` or `generator_loss_scale`.
    pub loss: &'static str,
    pub value: f64,
}

impl Diverged {
    /// The error a training loop reports, naming the (1-based) generator iteration.
    pub fn at_iteration(self, iteration: usize) -> Error {
        Error(format!("training diverged at iteration {iteration}: {self}"))
    }
}

impl fmt::Display for Diverged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is {}", self.loss, self.value)?;
        if self.loss.ends_with("_scale") {
            write!(
                f,
                " (its gradients were inf or NaN at every loss scale down to f32's smallest normal)"
            )?;
        }
        Ok(())
    }
}

impl From<Diverged> for Error {
    fn from(diverged: Diverged) -> Error {
        Error(format!("training diverged: {diverged}"))
    }
}

/// Why a step stopped: a loss that diverged, or the device (a GPU kernel's fault, memory),
/// which shows where the step reads a value back and reaches the training loop as a message
/// to report instead of a panic.
#[derive(Clone, Debug, PartialEq)]
pub enum StepError {
    Diverged(Diverged),
    Device(String),
}

impl StepError {
    /// The error a training loop reports, naming the (1-based) generator iteration.
    pub fn at_iteration(self, iteration: usize) -> Error {
        match self {
            StepError::Diverged(diverged) => diverged.at_iteration(iteration),
            StepError::Device(message) => Error(format!("the device failed at iteration {iteration}: {message}")),
        }
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepError::Diverged(diverged) => write!(f, "training diverged: {diverged}"),
            StepError::Device(message) => write!(f, "the device failed: {message}"),
        }
    }
}

impl From<StepError> for Error {
    fn from(e: StepError) -> Error {
        Error(e.to_string())
    }
}

/// The logged scalars, read back from their device in one download: on a GPU every read waits
/// for the work queued before it (a host synchronisation), so values are read together, not
/// one at a time.
fn read_all(values: &[&Tensor]) -> Result<Vec<f64>, StepError> {
    let scalars: Vec<Tensor> = values.iter().map(|v| v.detach().reshape(&[1])).collect();
    let gathered = match scalars.as_slice() {
        [one] => one.clone(),
        many => Tensor::concat(&many.iter().collect::<Vec<_>>(), 0),
    };
    gathered.try_to_vec_f64().map_err(|e| StepError::Device(e.0))
}

/// A loss's value, or why training cannot go on with it.
fn finite(loss: &'static str, value: f64) -> Result<f64, StepError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(StepError::Diverged(Diverged { loss, value }))
    }
}

/// The critic's scores of a real and a fake batch, in one forward pass or in one each (see
/// [`Objective::joint_critic_pass`]).
fn critic_scores(objective: &Objective, critic: &dyn Module, real: &Tensor, fake: &Tensor) -> (Tensor, Tensor) {
    if !objective.joint_critic_pass {
        return (objective.forward(critic, real), objective.forward(critic, fake));
    }
    let n = real.shape()[0];
    let scores = objective.forward(critic, &Tensor::concat(&[real, fake], 0));
    (scores.narrow(0, 0, n), scores.narrow(0, n, fake.shape()[0]))
}

/// A critic step's loss (in the graph) and its logged values, not yet read.
struct CriticLosses {
    loss: Tensor,
    /// Detached scalars in the order of [`CriticLosses::log`]: the loss, the Wasserstein
    /// estimate, and for WGAN-GP the penalty and the mean gradient norm.
    logged: Vec<Tensor>,
    /// The detached value whose being non-finite is divergence (see [`Diverged`]): the loss,
    /// or under a loss scaler with a penalty the loss without it.
    checked: Tensor,
}

impl CriticLosses {
    /// The log of `values`, read back from [`CriticLosses::logged`] in its order.
    fn log(values: &[f64]) -> CriticLog {
        let mut log = CriticLog {
            loss: values[0],
            wasserstein: values[1],
            ..CriticLog::default()
        };
        if let [_, _, penalty, grad_norm] = values {
            (log.penalty, log.grad_norm) = (*penalty, *grad_norm);
        }
        log
    }
}

/// The critic's loss on a real and a fake batch; WGAN-GP's penalty at the interpolates of
/// weights `eps` (which its callers always draw for WGAN-GP; ignored otherwise), the scores
/// it differentiates scaled by `loss_scale` (1 without a loss scaler;
/// [`scaled_gradient_penalty`]).
fn critic_losses(
    objective: &Objective,
    critic: &dyn Module,
    real: &Tensor,
    fake: &Tensor,
    eps: Option<&Tensor>,
    loss_scale: Option<f64>,
) -> CriticLosses {
    let (real_scores, fake_scores) = critic_scores(objective, critic, real, fake);
    let wasserstein = real_scores.mean().sub(&fake_scores.mean());
    let mut loss = match objective.algo {
        Algo::Wgan | Algo::WganGp => wasserstein.neg(),
        Algo::Gan => real_scores
            .binary_cross_entropy_with_logits(&real_scores.ones_like())
            .add(&fake_scores.binary_cross_entropy_with_logits(&fake_scores.zeros_like())),
    };
    let penalty = eps.filter(|_| objective.algo == Algo::WganGp).map(|eps| {
        let x_hat = interpolate(real, fake, eps);
        let scale = loss_scale.unwrap_or(1.0);
        scaled_gradient_penalty(|x| objective.forward(critic, x), &x_hat, objective.lambda, scale)
    });
    if let Some(gp) = &penalty {
        loss = loss.add(&gp.penalty);
    }
    let checked = match (&penalty, loss_scale) {
        (Some(_), Some(_)) => wasserstein.neg().detach(),
        _ => loss.detach(),
    };
    let mut logged = vec![loss.detach(), wasserstein.detach()];
    if let Some(gp) = penalty {
        logged.extend([gp.penalty.detach(), gp.mean_grad_norm]);
    }
    CriticLosses { loss, logged, checked }
}

/// `loss.backward()` and the optimiser's step, through `scaler` when there is one: the scaled
/// loss's backward, the gradients unscaled, the step skipped when one is inf or NaN, and the
/// scale updated. `which` names the network in a [`Diverged`] scale.
fn backward_and_step(
    loss: &Tensor,
    optim: &mut dyn Optimizer,
    scaler: Option<&mut GradScaler>,
    which: &'static str,
) -> Result<(), StepError> {
    optim.zero_grad();
    let Some(scaler) = scaler else {
        loss.backward();
        optim.step();
        return Ok(());
    };
    let device = |e: crate::Error| StepError::Device(e.0);
    scaler.scale(loss).backward();
    scaler.step(optim).map_err(device)?;
    scaler.update().map_err(device)?;
    if scaler.get_scale() < MIN_SCALE {
        return Err(StepError::Diverged(Diverged {
            loss: which,
            value: scaler.get_scale(),
        }));
    }
    Ok(())
}

/// The critic's update from `loss` (through `scaler` when there is one); WGAN clips the
/// weights after it.
fn critic_update(
    objective: &Objective,
    critic: &dyn Module,
    critic_optim: &mut dyn Optimizer,
    scaler: Option<&mut GradScaler>,
    loss: &Tensor,
) -> Result<(), StepError> {
    backward_and_step(loss, critic_optim, scaler, "critic_loss_scale")?;
    if objective.algo == Algo::Wgan {
        clip_weights(&critic.parameters(), objective.clip);
    }
    Ok(())
}

/// One update of the critic on a real batch and a fake one (generator output; no graph back
/// to the generator is needed). WGAN-GP draws its interpolation weights from `rng`; WGAN clips
/// the critic's weights after the update. The logged values are read before the backward pass
/// (one read), so a non-finite loss stops the step before it changes a weight. With a `scaler`
/// (f16) the loss is scaled for the backward pass, and so are the scores whose gradient the
/// penalty takes ([`scaled_gradient_penalty`]); a step whose gradients overflow is skipped.
pub fn critic_step<R: Rng + ?Sized>(
    objective: &Objective,
    critic: &dyn Module,
    critic_optim: &mut dyn Optimizer,
    scaler: Option<&mut GradScaler>,
    real: &Tensor,
    fake: &Tensor,
    rng: &mut R,
) -> Result<CriticLog, StepError> {
    let eps = (objective.algo == Algo::WganGp).then(|| interpolation_weights(real, rng));
    let loss_scale = scaler.as_ref().map(|s| s.get_scale());
    let losses = critic_losses(objective, critic, real, fake, eps.as_ref(), loss_scale);
    let mut logged: Vec<&Tensor> = losses.logged.iter().collect();
    logged.push(&losses.checked);
    let values = read_all(&logged)?;
    let log = CriticLosses::log(&values[..values.len() - 1]);
    if !values[values.len() - 1].is_finite() {
        finite("critic_loss", log.loss)?;
    }
    critic_update(objective, critic, critic_optim, scaler, &losses.loss)?;
    Ok(log)
}

/// The generator's loss on the critic's scores of `G(noise)`, handed to `check` before the
/// backward pass, then its update unless `check` failed. The critic's weights are constants
/// here: they are frozen (no gradient is computed for them) for the step, and unfrozen after
/// it, also when `check` fails.
fn generator_update<T>(
    objective: &Objective,
    generator: &dyn Module,
    generator_optim: &mut dyn Optimizer,
    scaler: Option<&mut GradScaler>,
    critic: &dyn Module,
    noise: &Tensor,
    check: impl FnOnce(&Tensor) -> Result<T, StepError>,
) -> Result<(Tensor, T), StepError> {
    let trainable: Vec<Tensor> = critic.parameters().into_iter().filter(|p| p.requires_grad()).collect();
    trainable.iter().for_each(|p| p.set_requires_grad(false));
    let scores = objective.forward(critic, &objective.forward(generator, noise));
    let loss = match objective.algo {
        Algo::Wgan | Algo::WganGp => scores.mean().neg(),
        // Non-saturating: maximise log D(G(z)).
        Algo::Gan => scores.binary_cross_entropy_with_logits(&scores.ones_like()),
    };
    let stepped = check(&loss).and_then(|value| {
        backward_and_step(&loss, generator_optim, scaler, "generator_loss_scale")?;
        Ok(value)
    });
    trainable.iter().for_each(|p| p.set_requires_grad(true));
    Ok((loss.detach(), stepped?))
}

/// One update of the generator on the critic's scores of `G(noise)`; returns its loss, read
/// before the backward pass, so a non-finite loss changes no weight. The critic's weights are
/// frozen for the step and unfrozen after it, also when the loss diverges. With a `scaler`
/// (f16) the loss is scaled for the backward pass and a step whose gradients overflow is
/// skipped.
pub fn generator_step(
    objective: &Objective,
    generator: &dyn Module,
    generator_optim: &mut dyn Optimizer,
    scaler: Option<&mut GradScaler>,
    critic: &dyn Module,
    noise: &Tensor,
) -> Result<f64, StepError> {
    let read = |loss: &Tensor| read_all(&[loss]).and_then(|values| finite("generator_loss", values[0]));
    generator_update(objective, generator, generator_optim, scaler, critic, noise, read).map(|(_, value)| value)
}

/// One generator iteration: `critic_steps` critic steps, each on a fresh real batch and a fake
/// batch made from fresh noise, then one generator step on fresh noise. Everything random comes
/// from `rng`, in this order: for each critic step the real batch (`draw_real`), its noise
/// (`draw_noise`) and, for WGAN-GP, the interpolation weights; then the generator's noise. A
/// caller that seeds `rng` the same way gets the same iteration. See
/// [`generator_iteration_with`] for what is read back and when.
pub fn generator_iteration<R: Rng + ?Sized>(
    objective: &Objective,
    critic_steps: usize,
    gan: Gan<'_>,
    draw_real: impl FnMut(&mut R) -> Tensor,
    draw_noise: impl FnMut(&mut R) -> Tensor,
    rng: &mut R,
) -> Result<StepLog, StepError> {
    let mut inputs = HostInputs::new(rng, draw_real, draw_noise);
    generator_iteration_with(objective, critic_steps, gan, &mut inputs)
}

/// One generator iteration on the inputs of `inputs` (see [`IterationInputs`]), with a single
/// read of the device: every step's update is queued without waiting, and at the end the
/// logged values of the last critic step, the sum of every critic step's loss (under a loss
/// scaler with a penalty, of the loss without it: see [`Diverged`]) and the generator's loss
/// are read in one download. (A loss scaler reads its own flag at each step.) A non-finite sum means a critic loss diverged
/// (a NaN or an infinity stays one in a sum); it is reported with the last critic loss when
/// that is non-finite, else with the sum. A diverged iteration has applied its updates (see
/// [`Diverged`]).
pub fn generator_iteration_with(
    objective: &Objective,
    critic_steps: usize,
    gan: Gan<'_>,
    inputs: &mut dyn IterationInputs,
) -> Result<StepLog, StepError> {
    let Gan {
        generator,
        critic,
        generator_optim,
        critic_optim,
        mut critic_scaler,
        mut generator_scaler,
    } = gan;
    let skipped = |scaler: &Option<&mut GradScaler>| scaler.as_ref().map_or(0, |s| s.skipped_steps());
    let (critic_skipped, generator_skipped) = (skipped(&critic_scaler), skipped(&generator_scaler));
    let mut last_logged: Vec<Tensor> = Vec::new();
    let mut critic_loss_sum: Option<Tensor> = None;
    for _ in 0..critic_steps {
        let real = inputs.real_batch()?;
        let noise = inputs.noise()?;
        let fake = no_grad(|| objective.forward(generator, &noise));
        let eps = match objective.algo {
            Algo::WganGp => Some(inputs.interpolation_weights(&real)?),
            _ => None,
        };
        let scaler = critic_scaler.as_deref_mut();
        let loss_scale = scaler.as_ref().map(|s| s.get_scale());
        let losses = critic_losses(objective, critic, &real, &fake, eps.as_ref(), loss_scale);
        critic_update(objective, critic, critic_optim, scaler, &losses.loss)?;
        let checked = &losses.checked;
        critic_loss_sum = Some(critic_loss_sum.map_or_else(|| checked.clone(), |sum| sum.add(checked)));
        last_logged = losses.logged;
    }
    let noise = inputs.noise()?;
    let scaler = generator_scaler.as_deref_mut();
    let (generator_loss, ()) =
        generator_update(
            objective,
            generator,
            generator_optim,
            scaler,
            critic,
            &noise,
            |_| Ok(()),
        )?;
    let mut scalars: Vec<&Tensor> = last_logged.iter().chain(&critic_loss_sum).collect();
    scalars.push(&generator_loss);
    let values = read_all(&scalars)?;
    let mut log = StepLog {
        generator_loss: values[values.len() - 1],
        critic_skipped: skipped(&critic_scaler) - critic_skipped,
        generator_skipped: skipped(&generator_scaler) - generator_skipped,
        ..StepLog::default()
    };
    if critic_steps > 0 {
        let n = last_logged.len();
        log.critic = CriticLosses::log(&values[..n]);
        let sum = values[n];
        if !sum.is_finite() {
            let value = if log.critic.loss.is_finite() {
                sum
            } else {
                log.critic.loss
            };
            return Err(StepError::Diverged(Diverged {
                loss: "critic_loss",
                value,
            }));
        }
    }
    finite("generator_loss", log.generator_loss)?;
    Ok(log)
}

#[cfg(test)]
mod tests {
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
            let (real_alone, fake_alone, separate) =
                gradients(critic_scores(&joint_pass(false), &critic, &real, &fake));
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
        let eps = interpolation_weights(&real, &mut StdRng::seed_from_u64(4));
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
}
