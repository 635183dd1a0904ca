//! An MNIST training run: the networks, their optimisers and the data order, advanced one
//! generator iteration at a time through the shared step ([`generator_iteration_with`]).
//!
//! An iteration's random inputs are drawn where the networks are, by functions of the seed
//! alone, so that the CPU and a GPU draw the same numbers and a GPU iteration uploads nothing
//! (docs/training.md, "Randomness"): the noise and WGAN-GP's interpolation weights are Philox
//! numbers ([`Tensor::random`]) keyed by the iteration, one stream per draw; the real batches
//! follow the [`ShuffledOrder`], assembled from the split's bytes on the CPU and gathered on a
//! GPU from the training images, uploaded once ([`Tensor::gather_shuffled_rows`]).

use super::graphs::{buffer_ids, IterationGraphs};
use super::{generator_iteration_with, Gan, IterationInputs, Precision, StepError, TrainConfig};
use crate::amp::GradScaler;
use crate::classifier::Quality;
use crate::data::{Mnist, ShuffledOrder, Split};
use crate::ema::{copy_weights, ExponentialMovingAverage};
use crate::models::{Critic, Generator, LATENT_DIM};
use crate::nn::Module;
use crate::optim::Optimizer;
use crate::{Error, Result};
use earthmover_tensor::{no_grad, sequence_key, DType, Device, Distribution, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::time::Instant;

/// What one generator iteration measured.
#[derive(Clone, Debug, PartialEq)]
pub struct IterationLog {
    /// 1-based: the number of generator steps done.
    pub iteration: usize,
    /// Seconds since training started (this process, plus earlier runs when resumed).
    pub seconds: f64,
    /// The critic's loss at its last step (WGAN-GP: penalty included).
    pub critic_loss: f64,
    pub generator_loss: f64,
    /// `mean(C(real)) - mean(C(fake))` at the last critic step, without the penalty.
    pub wasserstein: f64,
    /// The gradient penalty (WGAN-GP; 0 otherwise).
    pub penalty: f64,
    /// The mean per-sample gradient norm on the interpolates (WGAN-GP; 0 otherwise).
    pub grad_norm: f64,
    /// The same estimate on held-out test images, every `test_every` iterations.
    pub test_wasserstein: Option<f64>,
    /// Sample quality as the digit classifier sees it, where the caller measured it
    /// (`wgan-mnist --eval-every`); [`Trainer::step`] leaves it empty.
    pub quality: Option<Quality>,
    /// Dynamic loss scaling (f16 runs); `None` when the run does not scale its losses.
    pub loss_scaling: Option<LossScaleLog>,
}

/// What dynamic loss scaling did in one generator iteration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossScaleLog {
    /// The critic's loss scale after the iteration: the one its next step uses.
    pub critic_scale: f64,
    /// The generator's loss scale after the iteration.
    pub generator_scale: f64,
    /// Critic steps of the iteration skipped for an inf or NaN gradient.
    pub critic_skipped: u64,
    /// Generator steps skipped (0 or 1).
    pub generator_skipped: u64,
}

/// The state of a run: networks, optimisers, data order, and the iteration count.
pub struct Trainer {
    pub config: TrainConfig,
    /// The generator being trained.
    pub generator: Generator,
    /// The exponential moving average of its weights (`config.ema`), updated after each
    /// generator step; [`Trainer::sampler`] draws from it when there is one.
    pub generator_ema: Option<Generator>,
    pub critic: Critic,
    pub generator_optim: Box<dyn Optimizer>,
    pub critic_optim: Box<dyn Optimizer>,
    /// The critic's dynamic loss scaler, in f16 runs ([`Precision::F16`]); `None` otherwise.
    /// Saved in checkpoints, so a resumed run continues at the same scale.
    pub critic_scaler: Option<GradScaler>,
    /// The generator's dynamic loss scaler, in f16 runs.
    pub generator_scaler: Option<GradScaler>,
    /// The order of the training images: the run's whole data-order state.
    pub order: ShuffledOrder,
    /// Generator iterations done.
    pub iteration: usize,
    /// Training seconds of earlier runs of this training, when resumed.
    pub seconds_before: f64,
    /// Where the networks, their optimiser states and each batch live.
    pub device: Device,
    /// The training images on `device` (not the CPU), uploaded at the first step there.
    resident: Option<ResidentImages>,
    /// The test images on `device` (not the CPU), uploaded at the first test-set estimate there.
    resident_test: Option<ResidentImages>,
    /// The iterations captured as CUDA graphs, once [`Trainer::use_cuda_graphs`] was called.
    graphs: Option<IterationGraphs>,
    started: Instant,
}

/// A split's images, mapped onto the generator's output range, kept on a device: the source of
/// every real batch drawn there.
struct ResidentImages {
    images: Tensor,
    /// Which split they are (its pixels' address, length, and every 4,099th byte: other data
    /// loaded where dropped data was is told apart) and how they were mapped, so that a step
    /// given other data uploads that instead.
    source: (usize, usize, Vec<u8>),
    range: (f64, f64),
}

/// splitmix64's finaliser: neighbouring inputs get unrelated outputs.
fn splitmix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The key of a run's data order, derived from its seed apart from every iteration's key.
fn order_seed(seed: u64) -> u64 {
    splitmix64(seed ^ 0x6F72_6465_725F_6B65)
}

/// Test images (and as many samples) per test-set estimate, at most.
const TEST_SAMPLES: usize = 256;

/// The order of the test images for the estimate of iteration `key`: a permutation of its own,
/// whose first images are a uniform draw without repeats.
fn test_order_seed(key: u64) -> u64 {
    splitmix64(key ^ 0x7465_7374_5F6F_7264)
}

/// The Philox key of the estimate's noise, apart from the iteration's own draws.
fn test_noise_key(key: u64) -> u64 {
    splitmix64(key ^ 0x7465_7374_5F6E_6F69)
}

/// `split`'s images, mapped onto `range`, kept in `slot` on `device` (not the CPU): uploaded
/// when the slot is empty or holds other data (another split, or other data loaded where
/// dropped data was), and only then.
fn keep_resident(slot: &mut Option<ResidentImages>, split: &Split, range: (f64, f64), device: Device) -> Result<bool> {
    if device == Device::Cpu {
        return Ok(false);
    }
    let sampled = split.pixels.iter().step_by(4099).copied().collect();
    let source = (split.pixels.as_ptr() as usize, split.pixels.len(), sampled);
    if !slot.as_ref().is_some_and(|r| r.source == source && r.range == range) {
        *slot = None;
        let all: Vec<usize> = (0..split.len()).collect();
        let images = split.images(&all, range).to_device(device)?;
        *slot = Some(ResidentImages { images, source, range });
        return Ok(true);
    }
    Ok(false)
}

/// The algorithm's optimisers over the two networks' parameters (their state is created on the
/// parameters' device).
fn optimizers(
    config: &TrainConfig,
    generator: &Generator,
    critic: &Critic,
) -> (Box<dyn Optimizer>, Box<dyn Optimizer>) {
    let optimizer = |params, lr| config.algo.optimizer(params, lr, config.betas);
    (
        optimizer(generator.parameters(), config.generator_lr()),
        optimizer(critic.parameters(), config.critic_lr()),
    )
}

impl Trainer {
    /// A trainer for `config` on a training set of `train_len` images.
    ///
    /// A training step frees and allocates the same large tensors every step, so a program that
    /// trains should have its process keep freed memory for reuse: that is a process-wide malloc
    /// policy, so its `main` sets it (`earthmover_tensor::retain_freed_memory`), not the library.
    pub fn new(config: TrainConfig, train_len: usize) -> Result<Trainer> {
        config.validate()?;
        let seed = config.seed;
        let mut rng = StdRng::seed_from_u64(config.seed);
        let init = config.init;
        let generator = Generator::new(config.model, config.dim, init, &mut rng);
        let critic = Critic::new(config.model, config.dim, config.critic_norm, init, &mut rng);
        let (generator_optim, critic_optim) = optimizers(&config, &generator, &critic);
        // The average starts as a copy of the initial generator; building it draws from a
        // stream of its own, so that a run's weights and data order are the same with or
        // without it.
        let generator_ema = config.ema.map(|_| {
            let copy = Generator::new(config.model, config.dim, init, &mut StdRng::seed_from_u64(0));
            copy_weights(&copy, &generator);
            copy
        });
        // f16 needs its losses scaled; f32 and bf16 have f32's exponent range and do not.
        let scaler = || (config.precision == Precision::F16).then(GradScaler::new);
        let (critic_scaler, generator_scaler) = (scaler(), scaler());
        Ok(Trainer {
            config,
            generator,
            generator_ema,
            critic,
            generator_optim,
            critic_optim,
            critic_scaler,
            generator_scaler,
            order: ShuffledOrder::new(train_len, order_seed(seed)),
            iteration: 0,
            seconds_before: 0.0,
            device: Device::Cpu,
            resident: None,
            resident_test: None,
            graphs: None,
            started: Instant::now(),
        })
    }

    /// Move the networks and their optimisers' state to `device` (a GPU, say); every batch is
    /// then moved there too. Initialisation happens on the CPU, so a seed gives the same
    /// starting weights on every device.
    pub fn to_device(&mut self, device: Device) -> Result<()> {
        if device == self.device {
            return Ok(());
        }
        // A graph replays on the device it was captured on: taken up again on the new one.
        let graphs = self.graphs.take().is_some();
        self.convert(&|t| {
            t.set_data(&t.to_device(device)?);
            Ok(())
        })?;
        self.device = device;
        (self.resident, self.resident_test) = (None, None);
        if graphs {
            self.take_up_graphs_again()?;
        }
        Ok(())
    }

    /// Convert the networks (the average of the generator's weights included) and their
    /// optimisers' state to `dtype` (f64, say: PyTorch's `.double()`); every batch and all noise
    /// are then drawn in it. A new trainer is f32.
    pub fn to_dtype(&mut self, dtype: DType) -> Result<()> {
        if dtype == self.dtype() {
            return Ok(());
        }
        self.convert(&|t| {
            t.to_dtype_(dtype);
            Ok(())
        })
    }

    /// Capture each shape of iteration as a CUDA graph once and replay it from then on
    /// (`wgan-mnist --cuda-graph`): one graph launch per iteration instead of hundreds of
    /// kernel launches, the same losses and weights bit for bit (see `graphs.rs`). For a run
    /// on a CUDA device (a GPU or the emulator) in f32 or bf16: f16's loss scaling decides on
    /// the host at every step. Call it after [`Trainer::to_device`]; it stays on through
    /// [`Trainer::to_dtype`] and [`Trainer::to_device`] onto another CUDA device (off on the
    /// CPU or with 16-bit networks). What a graph captured is fixed: a changed learning rate,
    /// objective or batch size is captured anew at the next iteration. Not yet run on a GPU:
    /// the uncaptured path is the reference.
    pub fn use_cuda_graphs(&mut self) -> Result<()> {
        if self.device == Device::Cpu {
            return Err(Error(
                "CUDA graphs need a CUDA device: move the trainer to one first (to_device)".into(),
            ));
        }
        if self.dtype().is_half() {
            return Err(Error(format!(
                "CUDA graphs need f32 or f64 networks, not {} ones: their 16-bit optimiser steps read \
                 the step count on the host (mixed precision, --precision bf16, keeps f32 weights and can)",
                self.dtype()
            )));
        }
        if self.critic_scaler.is_some() || self.generator_scaler.is_some() {
            return Err(Error(format!(
                "CUDA graphs cannot capture {} training: its dynamic loss scaling reads the gradients on the host at every step",
                self.config.precision
            )));
        }
        for optim in [&mut self.generator_optim, &mut self.critic_optim] {
            optim.count_steps_on_device().map_err(Error)?;
        }
        self.graphs = Some(IterationGraphs::new(self.iteration, self.order.position, self.device)?);
        Ok(())
    }

    /// Whether iterations are captured as CUDA graphs ([`Trainer::use_cuda_graphs`]).
    pub fn uses_cuda_graphs(&self) -> bool {
        self.graphs.is_some()
    }

    /// Every tensor of the networks and their optimisers' state that a captured iteration
    /// reads or writes in place (the step counts excepted: they are read back, not kept).
    fn graph_buffers(&self) -> Vec<Tensor> {
        let networks = self.generator.state_dict().into_iter().chain(self.critic.state_dict());
        let optimizers = [&self.generator_optim, &self.critic_optim]
            .into_iter()
            .flat_map(|o| o.state_dict())
            .filter(|(name, _)| name != "step");
        networks.chain(optimizers).map(|(_, t)| t).collect()
    }

    /// The dtype of the networks, their batches and noise.
    pub fn dtype(&self) -> DType {
        self.generator.dtype()
    }

    /// Apply `convert` in place to every tensor of the networks, and rebuild the optimisers
    /// over them with their state carried over (converted as the parameters were).
    fn convert(&mut self, convert: &dyn Fn(&Tensor) -> Result<()>) -> Result<()> {
        let saved =
            |o: &dyn Optimizer| -> std::collections::HashMap<String, Tensor> { o.state_dict().into_iter().collect() };
        let (g_state, c_state) = (saved(&*self.generator_optim), saved(&*self.critic_optim));
        let ema = self.generator_ema.iter().flat_map(|g| g.state_dict());
        for (_, t) in self
            .generator
            .state_dict()
            .into_iter()
            .chain(self.critic.state_dict())
            .chain(ema)
        {
            convert(&t)?;
        }
        let (mut g, mut c) = optimizers(&self.config, &self.generator, &self.critic);
        g.load_state_dict(&g_state).map_err(crate::Error)?;
        c.load_state_dict(&c_state).map_err(crate::Error)?;
        (self.generator_optim, self.critic_optim) = (g, c);
        // The tensors were replaced: graphs captured over the old ones are stale, and the new
        // optimisers count on the host until graphs are taken up again.
        if self.graphs.take().is_some() {
            self.take_up_graphs_again()?;
        }
        Ok(())
    }

    /// After a conversion or a move: graphs again where they can run (a CUDA device, f32 or
    /// f64 networks), else off.
    fn take_up_graphs_again(&mut self) -> Result<()> {
        if self.device != Device::Cpu && !self.dtype().is_half() {
            self.use_cuda_graphs()?;
        }
        Ok(())
    }

    /// The key of one iteration's random numbers, derived from the seed and the iteration
    /// number, so that a run resumed from a checkpoint draws exactly what an unbroken run would.
    fn iteration_key(&self) -> u64 {
        // splitmix64 of seed ^ (iteration + 1) * golden ratio, which the device computes too
        // for an iteration captured as a CUDA graph (`Tensor::random_at`).
        sequence_key(self.config.seed, self.iteration as u64)
    }

    /// Check that `data` is the run's, and keep its training images on the training device.
    fn prepare(&mut self, data: &Mnist) -> Result<()> {
        if data.train.len() != self.order.len {
            return Err(Error(format!(
                "this run trains on {} images, but the data given holds {}",
                self.order.len,
                data.train.len()
            )));
        }
        let uploaded = keep_resident(
            &mut self.resident,
            &data.train,
            self.generator.output_range,
            self.device,
        )?;
        if let (true, Some(graphs)) = (uploaded, &mut self.graphs) {
            // The graphs gather from the images they were captured with.
            graphs.drop_captured();
        }
        Ok(())
    }

    /// The random inputs of the next iteration (see the module's description), drawn as its
    /// step would draw them, without advancing the trainer: for comparing what two devices
    /// draw from one seed.
    pub fn next_inputs<'a>(&'a mut self, data: &'a Mnist) -> Result<impl IterationInputs + 'a> {
        self.prepare(data)?;
        Ok(DrawnInputs {
            split: &data.train,
            resident: self.resident.as_ref().map(|r| &r.images),
            order: self.order.clone(),
            range: self.generator.output_range,
            batch_size: self.config.batch_size,
            dtype: self.dtype(),
            device: self.device,
            key: self.iteration_key(),
            stream: 0,
            counts: None,
        })
    }

    /// One generator iteration: the critic's steps, then the generator's. An error, naming the
    /// quantity, when a loss turns non-finite; the losses are read once, at the end of the
    /// iteration, so the networks then hold that iteration's updates, possibly non-finite
    /// weights: the iteration is not counted, and the trainer is not to be saved or trained on
    /// (restart from the last checkpoint).
    pub fn step(&mut self, data: &Mnist) -> Result<IterationLog> {
        self.prepare(data)?;
        let key = self.iteration_key();
        let (objective, critic_steps) = (
            self.config.objective(),
            self.config.critic_schedule().critic_steps(self.iteration),
        );
        // What a graph captures by value: graphs captured with other values are stale.
        let settings = (
            self.generator_optim.learning_rate(),
            self.critic_optim.learning_rate(),
            objective,
            self.config.batch_size,
        );
        if let Some(graphs) = &mut self.graphs {
            graphs.captured_with(settings);
        }
        // Where the tensors a CUDA graph addresses are, before an iteration that captures one.
        let capturing = self.graphs.as_ref().is_some_and(|g| g.will_capture(critic_steps));
        let before = capturing.then(|| buffer_ids(&self.graph_buffers()));
        let mut inputs = DrawnInputs {
            split: &data.train,
            resident: self.resident.as_ref().map(|r| &r.images),
            order: self.order.clone(),
            range: self.generator.output_range,
            batch_size: self.config.batch_size,
            dtype: self.dtype(),
            device: self.device,
            key,
            stream: 0,
            counts: self.graphs.as_ref().map(|g| DrawCounts {
                seed: self.config.seed,
                iteration: g.iteration.clone(),
                position: g.position.clone(),
            }),
        };
        let gan = Gan {
            generator: &self.generator,
            critic: &self.critic,
            generator_optim: &mut *self.generator_optim,
            critic_optim: &mut *self.critic_optim,
            critic_scaler: self.critic_scaler.as_mut(),
            generator_scaler: self.generator_scaler.as_mut(),
        };
        let step = match &mut self.graphs {
            Some(graphs) => {
                let step = graphs.step(&objective, critic_steps, gan, &mut inputs, self.device);
                if step.is_err() {
                    // The device's counts may have moved past the host's: back to the
                    // uncaptured path, as a run without graphs would go on.
                    self.graphs = None;
                }
                // A replay draws no inputs on the host: the position it moved past is the
                // batches of its critic steps.
                inputs.order.position = self.order.position + (critic_steps * self.config.batch_size) as u64;
                step
            }
            None => generator_iteration_with(&objective, critic_steps, gan, &mut inputs),
        }
        .map_err(|e| e.at_iteration(self.iteration + 1))?;
        if let Some(before) = before {
            let after = buffer_ids(&self.graph_buffers());
            if let Some(Err(e)) = self.graphs.as_mut().map(|g| g.check_unmoved(&before, &after)) {
                // The replay after the capture advanced the device's counts, not the host's:
                // graphs off, and this run is not to go on (restart from its checkpoint).
                self.graphs = None;
                return Err(e.at_iteration(self.iteration + 1));
            }
        }
        self.order = inputs.order;
        if let (Some(average), Some(decay)) = (&self.generator_ema, self.config.ema) {
            // One average update per generator step, numbered by the iteration, so that a
            // resumed run continues the same schedule.
            ExponentialMovingAverage { decay }.update(average, &self.generator, self.iteration);
        }
        self.iteration += 1;
        let mut log = IterationLog {
            iteration: self.iteration,
            seconds: 0.0,
            critic_loss: step.critic.loss,
            generator_loss: step.generator_loss,
            wasserstein: step.critic.wasserstein,
            penalty: step.critic.penalty,
            grad_norm: step.critic.grad_norm,
            test_wasserstein: None,
            quality: None,
            loss_scaling: self.loss_scale_log(step.critic_skipped, step.generator_skipped),
        };
        if self.iteration.is_multiple_of(self.config.test_every) {
            // Every `test_every` iterations, outside the step, from the iteration's key.
            log.test_wasserstein = Some(self.test_wasserstein(data, key)?);
        }
        log.seconds = self.seconds();
        Ok(log)
    }

    /// The scalers' state after an iteration that skipped these steps; `None` without scalers.
    fn loss_scale_log(&self, critic_skipped: u64, generator_skipped: u64) -> Option<LossScaleLog> {
        match (&self.critic_scaler, &self.generator_scaler) {
            (Some(critic), Some(generator)) => Some(LossScaleLog {
                critic_scale: critic.get_scale(),
                generator_scale: generator.get_scale(),
                critic_skipped,
                generator_skipped,
            }),
            _ => None,
        }
    }

    /// `mean(C(real)) - mean(C(fake))` on up to [`TEST_SAMPLES`] test images and as many fresh
    /// samples, with both networks in evaluation mode, so that measuring changes no state. Its
    /// inputs are drawn from `key` where the networks are, as a training iteration's
    /// ([`DrawnInputs`]): the images are the first of a permutation of the test split of their
    /// own (gathered on a GPU from the test images, uploaded at the first estimate there), the
    /// noise Philox numbers; so the CPU and a GPU measure on the same inputs, and an estimate
    /// on a GPU uploads nothing after the first and reads its two means in one download.
    pub fn test_wasserstein(&mut self, data: &Mnist, key: u64) -> Result<f64> {
        let range = self.generator.output_range;
        keep_resident(&mut self.resident_test, &data.test, range, self.device)?;

        let n = data.test.len().min(TEST_SAMPLES);
        let order = ShuffledOrder::new(data.test.len(), test_order_seed(key));
        self.generator.set_training(false);
        self.critic.set_training(false);
        let estimate = no_grad(|| -> Result<f64> {
            let real = match &self.resident_test {
                Some(resident) => resident.images.gather_shuffled_rows(n, 0, order.seed)?,
                None => data.test.images(&order.indices(0, n), range),
            }
            .to_dtype(self.dtype());
            let standard = Distribution::Normal { mean: 0.0, std: 1.0 };
            let noise = Tensor::random(
                standard,
                &[n, LATENT_DIM],
                test_noise_key(key),
                0,
                self.dtype(),
                self.device,
            )?;
            let fake = self.generator.forward(&noise);
            let (real_mean, fake_mean) = (
                self.critic.forward(&real).mean().reshape(&[1]),
                self.critic.forward(&fake).mean().reshape(&[1]),
            );
            let means = Tensor::concat(&[&real_mean, &fake_mean], 0).try_to_vec_f64()?;
            Ok(means[0] - means[1])
        });
        self.generator.set_training(true);
        self.critic.set_training(true);
        estimate
    }

    /// Training seconds so far, earlier runs of a resumed training included.
    pub fn seconds(&self) -> f64 {
        self.seconds_before + self.started.elapsed().as_secs_f64()
    }

    /// Start this process's share of [`Trainer::seconds`] now: what a program does between
    /// building the trainer and its first step (reading data, setting up a quality probe,
    /// moving to a device) is not training time.
    pub fn start_clock(&mut self) {
        self.started = Instant::now();
    }

    /// The generator that draws the run's samples: the average of the generator's weights when
    /// the run keeps one (`config.ema`), else the generator itself.
    pub fn sampler(&self) -> &Generator {
        self.generator_ema.as_ref().unwrap_or(&self.generator)
    }

    /// Images from [`Trainer::sampler`] for `noise` (no graph recorded; the noise is converted
    /// to the networks' dtype), in evaluation mode: batch-norm normalises by its running
    /// statistics and leaves them as they are, so that sampling never changes the training
    /// state (and one noise vector does not normalise to the bias alone), as PyTorch's
    /// `model.eval()`.
    pub fn sample(&self, noise: &Tensor) -> Tensor {
        let sampler = self.sampler();
        sampler.set_training(false);
        let images = no_grad(|| sampler.forward(&on_device(noise.to_dtype(self.dtype()), self.device)));
        sampler.set_training(true);
        images
    }
}

/// An iteration's random inputs, drawn where the networks are (see the module's description):
/// a stream of the iteration's key per draw, in the order the iteration asks.
struct DrawnInputs<'a> {
    split: &'a Split,
    /// The split's images on `device`; `None` on the CPU, where a batch is assembled from the
    /// split's bytes (the same values: both map a byte through the same f32 arithmetic).
    resident: Option<&'a Tensor>,
    /// A copy of the trainer's, kept by it when the iteration succeeds.
    order: ShuffledOrder,
    range: (f64, f64),
    batch_size: usize,
    dtype: DType,
    device: Device,
    key: u64,
    stream: u64,
    /// When the iteration may be captured as a CUDA graph: the counts it draws through
    /// instead of `key` and the order's position (the run's seed with the iteration's count,
    /// the position's count), advanced in place (see `graphs.rs`).
    counts: Option<DrawCounts>,
}

/// What [`DrawnInputs`] draws through for an iteration that a CUDA graph may replay.
struct DrawCounts {
    seed: u64,
    iteration: Tensor,
    position: Tensor,
}

impl DrawnInputs<'_> {
    /// `shape` numbers of `distribution` in `dtype` on `device`, from the next stream.
    fn draw(
        &mut self,
        distribution: Distribution,
        shape: &[usize],
        dtype: DType,
        device: Device,
    ) -> std::result::Result<Tensor, StepError> {
        let stream = self.stream;
        self.stream += 1;
        match &self.counts {
            // The same numbers: the key is `sequence_key(seed, iteration)`, computed on the
            // device from the count.
            Some(c) => Tensor::random_at(distribution, shape, c.seed, &c.iteration, stream, dtype),
            None => Tensor::random(distribution, shape, self.key, stream, dtype, device),
        }
        .map_err(|e| StepError::Device(e.0))
    }
}

impl IterationInputs for DrawnInputs<'_> {
    fn real_batch(&mut self) -> std::result::Result<Tensor, StepError> {
        let start = self.order.take(self.batch_size);
        let device_error = |e: earthmover_tensor::Error| StepError::Device(e.0);
        let images = match (self.resident, &self.counts) {
            (Some(images), Some(c)) => {
                // The rows at the position's count, which then moves past them.
                let batch = images
                    .gather_shuffled_rows_at(self.batch_size, &c.position, self.order.seed)
                    .map_err(device_error)?;
                c.position.add_scalar_(self.batch_size as f64).map_err(device_error)?;
                batch
            }
            (Some(images), None) => images
                .gather_shuffled_rows(self.batch_size, start, self.order.seed)
                .map_err(device_error)?,
            (None, _) => self
                .split
                .images(&self.order.indices(start, self.batch_size), self.range),
        };
        Ok(images.to_dtype(self.dtype))
    }

    fn noise(&mut self) -> std::result::Result<Tensor, StepError> {
        let standard = Distribution::Normal { mean: 0.0, std: 1.0 };
        self.draw(standard, &[self.batch_size, LATENT_DIM], self.dtype, self.device)
    }

    fn interpolation_weights(&mut self, real: &Tensor) -> std::result::Result<Tensor, StepError> {
        let mut shape = vec![1; real.rank()];
        shape[0] = real.shape()[0];
        let unit = Distribution::Uniform { low: 0.0, high: 1.0 };
        self.draw(unit, &shape, real.dtype(), real.device())
    }
}

/// `t` on the training `device`, which [`Trainer::to_device`] has opened.
fn on_device(t: Tensor, device: Device) -> Tensor {
    // The device was opened by `to_device`; what can fail now is the device itself, whose
    // failure a step returns at its first read (`StepError::Device`) before the next upload.
    t.to_device(device).unwrap_or_else(|e| panic!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::CriticNorm;
    use crate::train::Algo;

    fn tiny_data() -> Mnist {
        Mnist::synthetic(16)
    }

    #[test]
    fn weight_clipping_bounds_every_critic_parameter_after_a_step() {
        let mut config = TrainConfig::new(Algo::Wgan);
        (config.dim, config.batch_size, config.critic_warmup) = (4, 8, false);
        config.critic_norm = CriticNorm::BatchNorm;
        let mut trainer = Trainer::new(config, 16).unwrap();
        let log = trainer.step(&tiny_data()).unwrap();
        assert!(log.critic_loss.is_finite() && log.generator_loss.is_finite());
        for (name, p) in trainer.critic.named_parameters() {
            let max = p.to_vec_f32().iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert!(max <= 0.01, "{name}: |w| reaches {max}");
        }
    }

    #[test]
    fn wgan_gp_logs_its_penalty_and_gradient_norm() {
        let mut config = TrainConfig::new(Algo::WganGp);
        (config.dim, config.batch_size, config.test_every) = (4, 8, 1);
        let mut trainer = Trainer::new(config, 16).unwrap();
        let log = trainer.step(&tiny_data()).unwrap();
        assert!(log.penalty > 0.0 && log.grad_norm > 0.0, "{log:?}");
        // critic loss = -W + penalty at the last critic step
        assert!(
            (log.critic_loss - (-log.wasserstein + log.penalty)).abs() < 1e-4,
            "{log:?}"
        );
        assert!(log.test_wasserstein.is_some());
        assert_eq!(trainer.iteration, 1);
    }

    /// A loss that diverges is reported at the end of its iteration, which is not counted, and
    /// the order of the data is not advanced by it.
    #[test]
    fn a_diverged_iteration_is_reported_and_not_counted() {
        let mut config = TrainConfig::new(Algo::WganGp);
        (config.dim, config.batch_size) = (4, 8);
        let mut trainer = Trainer::new(config, 16).unwrap();
        let (_, weight) = trainer.critic.named_parameters().remove(0);
        weight.set_data(&weight.mul_scalar(f64::NAN));
        let err = trainer.step(&tiny_data()).unwrap_err().0;
        assert_eq!(err, "training diverged at iteration 1: critic_loss is NaN");
        assert_eq!((trainer.iteration, trainer.order.position), (0, 0));
        let err = trainer.step(&Mnist::synthetic(15)).unwrap_err().0;
        assert!(
            err.contains("trains on 16 images, but the data given holds 15"),
            "{err}"
        );
    }

    #[test]
    fn each_network_gets_its_own_learning_rate_when_given() {
        let mut config = TrainConfig::new(Algo::WganGp);
        config.dim = 4;
        let trainer = Trainer::new(config.clone(), 16).unwrap();
        assert_eq!(trainer.critic_optim.learning_rate(), 1e-4);
        assert_eq!(trainer.generator_optim.learning_rate(), 1e-4);
        (config.lr_critic, config.lr_generator) = (Some(4e-4), Some(1e-5));
        let trainer = Trainer::new(config.clone(), 16).unwrap();
        assert_eq!(trainer.critic_optim.learning_rate(), 4e-4);
        assert_eq!(trainer.generator_optim.learning_rate(), 1e-5);
        config.lr_critic = Some(0.0);
        let err = Trainer::new(config, 16).err().expect("a zero rate cannot train").0;
        assert!(err.contains("critic learning rate must be positive"), "{err}");
    }

    /// Every tensor of each module in `a` equals its twin in `b`, bit for bit.
    fn assert_same_weights(a: &dyn Module, b: &dyn Module, what: &str) {
        for ((name, x), (_, y)) in a.state_dict().iter().zip(b.state_dict()) {
            assert_eq!(x.to_vec_f32(), y.to_vec_f32(), "{what}: {name}");
        }
    }

    #[test]
    fn the_average_changes_no_training_and_resumes_bit_for_bit() {
        use crate::checkpoint::{load_checkpoint, load_generator, save_checkpoint, save_generator};
        let data = tiny_data();
        let mut config = TrainConfig::new(Algo::WganGp);
        (config.dim, config.batch_size, config.test_every) = (4, 8, 1000);
        let mut plain = Trainer::new(config.clone(), 16).unwrap();
        config.ema = Some(0.9);
        let mut straight = Trainer::new(config.clone(), 16).unwrap();
        for _ in 0..4 {
            plain.step(&data).unwrap();
            straight.step(&data).unwrap();
        }
        // The average only watches: the trained networks are those of a run without it.
        assert_same_weights(&plain.generator, &straight.generator, "generator");
        assert_same_weights(&plain.critic, &straight.critic, "critic");
        let average = straight.generator_ema.as_ref().unwrap();
        let (a, g) = (
            average.parameters()[0].to_vec_f32(),
            straight.generator.parameters()[0].to_vec_f32(),
        );
        assert_ne!(a, g, "the average lags the generator");

        let dir = std::env::temp_dir().join(format!("em-ema-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut first = Trainer::new(config, 16).unwrap();
        first.step(&data).unwrap();
        first.step(&data).unwrap();
        save_checkpoint(&first, &dir.join("c.safetensors")).unwrap();
        save_generator(&first, &dir.join("g.safetensors")).unwrap();
        // Both files give the averaged generator, for `sample` and `eval`.
        for file in ["c.safetensors", "g.safetensors"] {
            let (loaded, _) = load_generator(&dir.join(file)).unwrap();
            assert_same_weights(&loaded, first.sampler(), file);
        }
        let mut resumed = load_checkpoint(&dir.join("c.safetensors"), 16).unwrap();
        resumed.step(&data).unwrap();
        resumed.step(&data).unwrap();
        assert_same_weights(&resumed.generator, &straight.generator, "resumed generator");
        assert_same_weights(
            resumed.generator_ema.as_ref().unwrap(),
            straight.generator_ema.as_ref().unwrap(),
            "resumed average",
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
