//! CUDA graphs: a stretch of a device's work captured once ([`GpuDevice::begin_capture`],
//! [`GpuDevice::end_capture`]) and replayed as one launch ([`GpuDevice::replay`]), so that
//! hundreds of kernel launches cost one. On a GPU this is CUDA's stream capture (cudarc's
//! `CudaStream::begin_capture` / `end_capture`, `CudaGraph::launch`); the emulator models it:
//! while capturing, a launch is recorded (kernel, shape, argument values) instead of run, and a
//! replay runs the recorded list in order.
//!
//! What a graph replays is fixed at capture: the same kernels on the same addresses with the
//! same argument values. Hence the rules, enforced here and on the emulator alike:
//!
//! - no host synchronisation (download, `synchronize`) and no upload inside a capture;
//! - no new device memory: an allocation during capture is served by the memory pool, so run
//!   the work once uncaptured first to fill it. Every buffer allocated during capture belongs
//!   to the graph's private pool: freed (during or after the capture) it goes back there, never
//!   to allocations outside the graph, so that a replay writing it cannot clobber another
//!   tensor. Dropping the graph hands its private buffers back to the device's pool.
//! - a value that changes between replays must live in device memory that the graph reads (a
//!   buffer written before each replay), not in a kernel argument;
//! - a capture takes the whole device: the device has one stream, so work queued on it by
//!   another thread during the capture would be captured too (on a GPU it would break the
//!   capture). The caller keeps other threads off the device meanwhile.

use super::device::{sync_each_launch, Arg, Backend, GpuDevice};
use super::pool::BufferPool;
use super::LaunchShape;
use crate::storage::Device;
use std::sync::Arc;

/// A kernel launch as the emulator captured it: what a replay launches again.
pub(super) struct RecordedLaunch {
    pub kernel: String,
    pub shape: LaunchShape,
    pub args: Vec<Arg>,
}

// SAFETY: the pointers inside the arguments (buffer addresses, `ParamList`'s) are never
// dereferenced by the host, only by the kernels a replay launches, on the thread that replays;
// the buffers they address belong to the graph's private pool or are the caller's to keep alive
// (the contract of `GpuDevice::replay`).
unsafe impl Send for RecordedLaunch {}

/// A device's state while it captures.
pub(super) struct Capture {
    /// Where the buffers allocated during the capture go back to.
    pub private: Arc<BufferPool>,
    /// The emulator's recorded launches (a GPU's are in its stream's capture).
    pub launches: Vec<RecordedLaunch>,
    /// Kernels captured, on either.
    pub kernels: usize,
}

/// What a replay runs.
pub(super) enum GraphBody {
    Cuda(cudarc::driver::CudaGraph),
    Emulated(Vec<RecordedLaunch>),
}

/// A captured graph of one device's work: replay it with [`super::device::GpuDevice::replay`].
pub struct DeviceGraph {
    pub(super) device: Device,
    pub(super) body: GraphBody,
    /// Kernels captured.
    pub(super) kernels: usize,
    pub(super) private: Arc<BufferPool>,
    pub(super) main: Arc<BufferPool>,
}

impl DeviceGraph {
    /// The device it was captured on, and replays on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The kernels it launches per replay.
    pub fn kernels(&self) -> usize {
        self.kernels
    }
}

impl Drop for DeviceGraph {
    fn drop(&mut self) {
        // Nothing replays into the private buffers any more: idle ones, and those still in
        // use when they are freed, go back to the device's pool.
        self.private.forward_to(self.main.clone());
    }
}

/// Capture and replay (the rules are in the module's description).
impl GpuDevice {
    pub(super) fn capture(&self) -> std::sync::MutexGuard<'_, Option<Capture>> {
        // A capture's state is a list and a pool, consistent after any panic.
        self.capture.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An error when a graph is being captured: `what` (a host synchronisation or an upload)
    /// cannot be part of a graph.
    pub(super) fn refuse_during_capture(&self, what: &str) -> Result<(), String> {
        if self.capture().is_some() {
            return Err(self.error(
                what,
                "not allowed while a CUDA graph is being captured (a graph holds no host waits or copies)",
            ));
        }
        Ok(())
    }

    /// Start capturing this device's work into a CUDA graph (see [`super::graph`]): until
    /// [`Self::end_capture`], launches are captured instead of run, allocations come from the
    /// memory pool only, and downloads, uploads and synchronisations are errors.
    pub fn begin_capture(&self) -> Result<(), String> {
        self.check_not_failed()?;
        let mut capture = self.capture();
        if capture.is_some() {
            return Err(self.error("beginning a capture", "a capture is already under way"));
        }
        if let Backend::Cuda { stream, .. } = &self.backend {
            // Thread-local: our own calls on other threads are not this capture's business.
            stream
                .begin_capture(cudarc::driver::sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
                .map_err(|e| self.error("beginning a capture", e))?;
        }
        *capture = Some(Capture {
            private: Arc::new(BufferPool::private()),
            launches: Vec::new(),
            kernels: 0,
        });
        // A buffer from before the capture freed during it goes back to the device's pool,
        // which must not hand it to the driver meanwhile (a free on the capturing stream).
        self.pool.hold_all(true);
        Ok(())
    }

    /// The graph of everything captured since [`Self::begin_capture`]; an error when none was
    /// under way, or when the device failed during the capture (the graph would replay a
    /// stretch of work that did not all happen).
    pub fn end_capture(&self) -> Result<DeviceGraph, String> {
        let Some(capture) = self.capture().take() else {
            return Err(self.error("ending a capture", "no capture is under way"));
        };
        self.pool.hold_all(false);
        let body = match &self.backend {
            Backend::Cuda { stream, .. } => {
                let graph = stream
                    .end_capture(cudarc::driver::sys::CUgraphInstantiate_flags(0))
                    .map_err(|e| self.error("ending a capture", e))?
                    .ok_or_else(|| self.error("ending a capture", "the driver returned no graph"))?;
                GraphBody::Cuda(graph)
            }
            Backend::Emulator => GraphBody::Emulated(capture.launches),
        };
        self.check_not_failed()?;
        Ok(DeviceGraph {
            device: self.device,
            body,
            kernels: capture.kernels,
            private: capture.private,
            main: self.pool.clone(),
        })
    }

    /// Run `graph`'s kernels once, in their captured order, as one launch (counted as a graph
    /// launch, not as its kernels' launches).
    ///
    /// # Safety
    /// Every buffer the captured kernels address must be alive: those allocated during the
    /// capture are the graph's, but those the captured work found made (inputs, weights) are
    /// the caller's to keep.
    pub unsafe fn replay(&self, graph: &DeviceGraph) -> Result<(), String> {
        self.check_not_failed()?;
        self.refuse_during_capture("replaying a graph")?;
        if graph.device != self.device {
            return Err(self.error(
                "replaying a graph",
                format!("the graph was captured on {}", graph.device),
            ));
        }
        match &graph.body {
            GraphBody::Cuda(cuda) => cuda.launch().map_err(|e| self.error("launching a graph", e))?,
            GraphBody::Emulated(launches) => {
                for recorded in launches {
                    let mut args = recorded.args.clone();
                    // SAFETY: the arguments were checked when captured; the buffers they
                    // address are alive (forwarded to the caller).
                    unsafe { self.run_emulated(&recorded.kernel, recorded.shape, &mut args) }?;
                }
            }
        }
        self.counters.graph_launch();
        if sync_each_launch() {
            self.synchronize()?;
        }
        Ok(())
    }
}
