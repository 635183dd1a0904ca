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
    read_gathered(&gather_scalars(values))
}

/// `values` (scalars) side by side in one tensor, on their device: what [`read_gathered`]
/// reads in one download.
fn gather_scalars(values: &[&Tensor]) -> Tensor {
    let scalars: Vec<Tensor> = values.iter().map(|v| v.detach().reshape(&[1])).collect();
    match scalars.as_slice() {
        [one] => one.clone(),
        many => Tensor::concat(&many.iter().collect::<Vec<_>>(), 0),
    }
}

/// The values of [`gather_scalars`]' tensor, or the device's error.
fn read_gathered(gathered: &Tensor) -> Result<Vec<f64>, StepError> {
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
    let eps = (objective.algo == Algo::WganGp)
        .then(|| interpolation_weights(real, rng))
        .transpose()
        .map_err(|e| StepError::Device(e.0))?;
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
    queue_generator_iteration(objective, critic_steps, gan, inputs)?.read()
}

/// A generator iteration queued on its device, its logged values gathered there and not yet
/// read: [`QueuedIteration::read`] reads them (the iteration's one wait for a GPU). Apart, so
/// that the queued work can be captured as a CUDA graph and the read made after each replay
/// (the MNIST trainer's `use_cuda_graphs`).
pub(crate) struct QueuedIteration {
    /// The last critic step's logged values, the sum of the critic steps' checked losses (when
    /// there were critic steps) and the generator's loss, side by side.
    pub(crate) scalars: Tensor,
    /// How many of them are the last critic step's.
    logged: usize,
    critic_steps: usize,
    critic_skipped: u64,
    generator_skipped: u64,
}

impl QueuedIteration {
    /// The iteration's log, read from [`QueuedIteration::scalars`] in one download, or why it
    /// failed (see [`generator_iteration_with`]).
    pub(crate) fn read(&self) -> Result<StepLog, StepError> {
        let values = read_gathered(&self.scalars)?;
        let mut log = StepLog {
            generator_loss: values[values.len() - 1],
            critic_skipped: self.critic_skipped,
            generator_skipped: self.generator_skipped,
            ..StepLog::default()
        };
        if self.critic_steps > 0 {
            let n = self.logged;
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
}

/// [`generator_iteration_with`]'s work, queued, with nothing read back but what a loss scaler
/// reads at each of its steps.
pub(crate) fn queue_generator_iteration(
    objective: &Objective,
    critic_steps: usize,
    gan: Gan<'_>,
    inputs: &mut dyn IterationInputs,
) -> Result<QueuedIteration, StepError> {
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
    Ok(QueuedIteration {
        scalars: gather_scalars(&scalars),
        logged: last_logged.len(),
        critic_steps,
        critic_skipped: skipped(&critic_scaler) - critic_skipped,
        generator_skipped: skipped(&generator_scaler) - generator_skipped,
    })
}

#[cfg(test)]
mod tests;
