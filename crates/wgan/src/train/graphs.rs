//! A run's iterations captured as CUDA graphs and replayed ([`Trainer::use_cuda_graphs`]): a
//! whole generator iteration (its critic steps, the generator's step, the gathering of its
//! logged values) becomes one graph launch instead of hundreds of kernel launches, and the
//! iteration's one read stays outside, after each replay.
//!
//! A replay repeats the captured kernels' arguments, so everything that changes from one
//! iteration to the next is read from device memory by the kernels ([`Tensor::count`]): the
//! iteration number (the key of its noise and interpolation weights:
//! [`Tensor::random_at`]), the data order's position ([`Tensor::gather_shuffled_rows_at`]) and
//! each optimiser's step count ([`crate::optim::Optimizer::count_steps_on_device`]), each
//! advanced in place by the captured work itself. Every other buffer the graph touches stays
//! where it is: the weights and the optimisers' state are updated in place, batch norm's
//! running statistics copied into their own buffers, the training images kept resident (new
//! images drop the graphs). The trainer mirrors on the host what a replay did on the device
//! (the iteration number, the position), for its logs, schedules and checkpoints.
//!
//! One graph per number of critic steps (WGAN's warm-up schedule has two), captured at the
//! third iteration of that shape: the first two run uncaptured (with the same counts), so
//! that the device's memory pool holds every buffer the capture asks for. An uncaptured
//! iteration is the reference: the tests check that replays give its losses and weights bit
//! for bit.

use super::step::{queue_generator_iteration, Objective, QueuedIteration};
use super::{Gan, IterationInputs, StepError, StepLog};
use earthmover_tensor::{capture_graph, replay_graph, Device, DeviceGraph, Tensor};

/// Uncaptured iterations of a shape before its capture.
const WARM_ITERATIONS: usize = 2;

/// The counts the captured kernels read, and the graphs captured so far.
pub(super) struct IterationGraphs {
    /// The generator iteration the next draws belong to (their key:
    /// `sequence_key(seed, iteration)`), on the training device.
    pub(super) iteration: Tensor,
    /// The data order's position of the next real batch, on the training device.
    pub(super) position: Tensor,
    captured: Vec<CapturedIteration>,
    /// Uncaptured iterations run so far, per number of critic steps.
    warm: Vec<(usize, usize)>,
    /// What the graphs captured by value: the learning rates, the objective, the batch size.
    settings: Option<CapturedSettings>,
}

/// The values an iteration's kernels take by value that a trainer's user may change: the two
/// learning rates, the objective (clipping bound, penalty weight, ...) and the batch size.
pub(super) type CapturedSettings = (f64, f64, Objective, usize);

/// One iteration's work as a graph, and the tensor of logged values each replay writes.
struct CapturedIteration {
    critic_steps: usize,
    graph: DeviceGraph,
    queued: QueuedIteration,
}

impl IterationGraphs {
    /// Counts at the trainer's `iteration` and data `position`, on `device`; nothing captured.
    pub(super) fn new(iteration: usize, position: u64, device: Device) -> crate::Result<IterationGraphs> {
        let count = |value: u64| Tensor::count(value, device).map_err(|e| crate::Error(e.0));
        Ok(IterationGraphs {
            iteration: count(iteration as u64)?,
            position: count(position)?,
            captured: Vec::new(),
            warm: Vec::new(),
            settings: None,
        })
    }

    /// The settings of the next iteration: when they differ from those the graphs were
    /// captured with, the graphs are dropped (and captured again, with these).
    pub(super) fn captured_with(&mut self, settings: CapturedSettings) {
        if self.settings != Some(settings) {
            self.drop_captured();
            self.settings = Some(settings);
        }
    }

    /// Forget the captured graphs (the buffers they address are about to change); the counts
    /// stay.
    pub(super) fn drop_captured(&mut self) {
        self.captured.clear();
        self.warm.clear();
    }

    /// Whether the next iteration of `critic_steps` critic steps will be captured: the caller
    /// then notes where its tensors' buffers are before it ([`buffer_ids`]), and checks after
    /// it that the capture moved none ([`IterationGraphs::check_unmoved`]).
    pub(super) fn will_capture(&self, critic_steps: usize) -> bool {
        !self.captured.iter().any(|c| c.critic_steps == critic_steps)
            && self
                .warm
                .iter()
                .any(|&(steps, runs)| steps == critic_steps && runs >= WARM_ITERATIONS)
    }

    /// An error, and the graphs dropped, when a tensor a captured graph addresses was given
    /// another buffer during the capture (its ids `before` and `after` differ): a replay would
    /// still use the old one.
    pub(super) fn check_unmoved(&mut self, before: &[usize], after: &[usize]) -> Result<(), StepError> {
        match before.iter().zip(after).position(|(a, b)| a != b) {
            None => Ok(()),
            Some(i) => {
                self.drop_captured();
                Err(StepError::Device(format!(
                    "capturing an iteration as a CUDA graph: tensor {i} of the networks and optimisers \
                     was given a new buffer during the iteration, which a replay would not follow"
                )))
            }
        }
    }

    /// One generator iteration of `critic_steps` critic steps: a replay of its graph when one
    /// was captured, else the work queued (captured first, when this shape has been run
    /// uncaptured often enough: [`IterationGraphs::will_capture`]), then its logged values
    /// read. `inputs` must draw through the counts ([`IterationGraphs::iteration`],
    /// [`IterationGraphs::position`]).
    pub(super) fn step(
        &mut self,
        objective: &Objective,
        critic_steps: usize,
        gan: Gan<'_>,
        inputs: &mut dyn IterationInputs,
        device: Device,
    ) -> Result<StepLog, StepError> {
        let device_error = |e: earthmover_tensor::Error| StepError::Device(e.0);
        if let Some(captured) = self.captured.iter().find(|c| c.critic_steps == critic_steps) {
            // SAFETY: the graph addresses its own buffers, the counts (kept here), and the
            // weights, optimiser state, batch-norm statistics and training images, which the
            // trainer keeps in place while it keeps this graph (the capture checked that none
            // moved; new images or a conversion drop the graphs).
            unsafe { replay_graph(&captured.graph) }.map_err(device_error)?;
            return captured.queued.read();
        }
        let runs = match self.warm.iter_mut().find(|(steps, _)| *steps == critic_steps) {
            Some((_, runs)) => runs,
            None => {
                self.warm.push((critic_steps, 0));
                &mut self.warm.last_mut().expect("just pushed").1
            }
        };
        let iteration = &self.iteration;
        let queue = || -> Result<QueuedIteration, StepError> {
            let queued = queue_generator_iteration(objective, critic_steps, gan, inputs)?;
            iteration.add_scalar_(1.0).map_err(device_error)?;
            Ok(queued)
        };
        if *runs < WARM_ITERATIONS {
            *runs += 1;
            return queue()?.read();
        }
        let (graph, queued) = capture_graph(device, queue).map_err(device_error)?;
        let queued = queued?;
        // SAFETY: as for the replays above; the capture only recorded the work, the replay
        // runs it.
        unsafe { replay_graph(&graph) }.map_err(device_error)?;
        let log = queued.read();
        self.captured.push(CapturedIteration {
            critic_steps,
            graph,
            queued,
        });
        log
    }
}

/// Where each tensor's memory is (`Storage::buffer_address`: a tensor given another buffer, by
/// a new storage or a storage given new memory, has another). Addresses, not tensors, are
/// kept: a tensor kept would share its storage, and the in-place updates would then copy it
/// away (copy on write).
pub(super) fn buffer_ids(tensors: &[Tensor]) -> Vec<usize> {
    tensors.iter().map(|t| t.storage().buffer_address()).collect()
}
