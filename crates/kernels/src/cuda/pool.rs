//! The device memory pool: buffers freed by a [`super::device::GpuDevice`] are kept, by size
//! class, and handed to later allocations of the same class, so that a training iteration after
//! the first gets (almost) all of its buffers from the pool instead of the driver.
//!
//! Our own caching allocator rather than cudarc's stream-ordered allocation (`cuMemAllocAsync`,
//! which cudarc uses when the driver has it): the driver's default pool gives its memory back at
//! every synchronisation unless its release threshold is raised through the raw driver API, and,
//! above all, the emulator has no driver. One pool written once for both means the counters and
//! the tests see on the emulator exactly what a GPU does.
//!
//! Stream-ordered without events: every launch and copy of a device goes to its one stream, so
//! a buffer freed while kernels that read it are still queued can be handed out at once: any
//! kernel that writes it next is queued after them. A download waits for the stream, so the
//! host never reads a reused buffer early either.
//!
//! Idle memory is capped ([`DEFAULT_IDLE_LIMIT`], or `EARTHMOVER_POOL_LIMIT_MIB`): a freed
//! buffer that would take the pool past it is given back to the driver. An allocation the driver
//! refuses is retried once after the pool has released everything it holds
//! ([`BufferPool::release_all`]), as PyTorch's caching allocator does.

use super::counters::PoolCounters;
use cudarc::driver::CudaSlice;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// The memory behind a buffer.
pub(super) enum Memory {
    Cuda(CudaSlice<u8>),
    /// Host memory, 8-byte aligned for f64.
    Emulated(Vec<u64>),
    /// None: the output of an operation after its device failed (see
    /// [`super::device::GpuDevice::failure`]).
    Lost,
}

/// Idle bytes a pool keeps at most unless `EARTHMOVER_POOL_LIMIT_MIB` says otherwise: 4 GiB, a
/// few times what a WGAN-GP iteration at DIM 64 has live at once.
pub const DEFAULT_IDLE_LIMIT: usize = 4 << 30;

/// The idle limit of every pool of this process: `EARTHMOVER_POOL_LIMIT_MIB` (0 keeps nothing:
/// every buffer goes straight back to the driver), else [`DEFAULT_IDLE_LIMIT`]. Read once.
fn idle_limit_from_env() -> usize {
    static LIMIT: OnceLock<usize> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        std::env::var("EARTHMOVER_POOL_LIMIT_MIB")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .map_or(DEFAULT_IDLE_LIMIT, |mib| mib.saturating_mul(1 << 20))
    })
}

/// The size a request of `bytes` is rounded up to, and the key it is pooled under: at least
/// 512 bytes, then steps of an eighth of the largest power of two not above it (at most 12.5%
/// more than asked), so that the same shapes, iteration after iteration, land in the same
/// classes, and sizes close to each other share one.
pub fn size_class(bytes: usize) -> usize {
    const SMALLEST: usize = 512;
    if bytes <= SMALLEST {
        return SMALLEST;
    }
    let step = (1usize << (usize::BITS - 1 - bytes.leading_zeros())) / 8;
    // Past the largest class: the size itself (no device will hold it anyway).
    bytes.div_ceil(step).checked_mul(step).unwrap_or(bytes)
}

/// What a pool holds while idle.
struct Idle {
    by_class: HashMap<usize, Vec<Memory>>,
    bytes: usize,
}

/// One device's pool. Counters are relaxed atomics, as the device's own.
pub(super) struct BufferPool {
    idle: Mutex<Idle>,
    /// Where freed buffers go instead, once set: a CUDA graph's private pool hands its buffers
    /// to the device's pool when the graph is dropped ([`BufferPool::forward_to`]).
    forward: Mutex<Option<Arc<BufferPool>>>,
    limit: AtomicU64,
    /// While a CUDA graph is captured on the device: nothing is given back to the driver (on a
    /// GPU, freeing memory there would be a free on the capturing stream), whatever the limit.
    holding: AtomicBool,
    device_allocations: AtomicU64,
    device_allocation_bytes: AtomicU64,
    reuses: AtomicU64,
    reused_bytes: AtomicU64,
    releases: AtomicU64,
    released_bytes: AtomicU64,
}

impl BufferPool {
    pub(super) fn new() -> BufferPool {
        BufferPool {
            idle: Mutex::new(Idle {
                by_class: HashMap::new(),
                bytes: 0,
            }),
            forward: Mutex::new(None),
            limit: AtomicU64::new(idle_limit_from_env() as u64),
            holding: AtomicBool::new(false),
            device_allocations: AtomicU64::new(0),
            device_allocation_bytes: AtomicU64::new(0),
            reuses: AtomicU64::new(0),
            reused_bytes: AtomicU64::new(0),
            releases: AtomicU64::new(0),
            released_bytes: AtomicU64::new(0),
        }
    }

    /// A pool without an idle limit, for the buffers of one CUDA graph (`super::graph`): what
    /// its replays write must stay the graph's, however much that is.
    pub(super) fn private() -> BufferPool {
        let pool = BufferPool::new();
        pool.limit.store(u64::MAX, Ordering::Relaxed);
        pool
    }

    /// From now on, send every freed buffer to `main`, and hand it what is idle now.
    pub(super) fn forward_to(&self, main: Arc<BufferPool>) {
        *self.forward.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(main.clone());
        let idle: Vec<(usize, Vec<Memory>)> = {
            let mut idle = self.idle();
            idle.bytes = 0;
            idle.by_class.drain().collect()
        };
        for (class, buffers) in idle {
            for memory in buffers {
                main.give_back(class, memory);
            }
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Idle> {
        // A panic while the lock was held leaves the maps consistent (every change is one
        // push or pop and a sum), so a poisoned lock is taken as it is.
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An idle buffer of `class` bytes, if the pool holds one (counted as a reuse).
    pub(super) fn take(&self, class: usize) -> Option<Memory> {
        let mut idle = self.idle();
        let memory = idle.by_class.get_mut(&class)?.pop()?;
        idle.bytes -= class;
        self.reuses.fetch_add(1, Ordering::Relaxed);
        self.reused_bytes.fetch_add(class as u64, Ordering::Relaxed);
        Some(memory)
    }

    /// Count a buffer of `class` bytes that came from the driver (or the host, on the emulator).
    pub(super) fn count_device_allocation(&self, class: usize) {
        self.device_allocations.fetch_add(1, Ordering::Relaxed);
        self.device_allocation_bytes.fetch_add(class as u64, Ordering::Relaxed);
    }

    /// Keep `memory`, a buffer of `class` bytes no longer used, for a later allocation; past the
    /// idle limit it is dropped (given back to the driver) instead.
    pub(super) fn give_back(&self, class: usize, memory: Memory) {
        if matches!(memory, Memory::Lost) {
            return;
        }
        let forward = self
            .forward
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        if let Some(main) = forward {
            return main.give_back(class, memory);
        }
        let mut idle = self.idle();
        let holding = self.holding.load(Ordering::Relaxed);
        if !holding && idle.bytes + class > self.limit.load(Ordering::Relaxed) as usize {
            drop(idle);
            self.count_release(class);
            drop(memory);
            return;
        }
        idle.bytes += class;
        idle.by_class.entry(class).or_default().push(memory);
    }

    /// Keep every freed buffer, past the idle limit too, while `hold` (a capture under way);
    /// the limit applies again at the next buffer given back after.
    pub(super) fn hold_all(&self, hold: bool) {
        self.holding.store(hold, Ordering::Relaxed);
    }

    fn count_release(&self, bytes: usize) {
        self.releases.fetch_add(1, Ordering::Relaxed);
        self.released_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Give every idle buffer back to the driver; the bytes released.
    pub(super) fn release_all(&self) -> usize {
        let released: Vec<(usize, Vec<Memory>)> = {
            let mut idle = self.idle();
            idle.bytes = 0;
            idle.by_class.drain().collect()
        };
        let mut bytes = 0;
        for (class, buffers) in released {
            for memory in buffers {
                self.count_release(class);
                bytes += class;
                drop(memory);
            }
        }
        bytes
    }

    /// Keep at most `bytes` idle from now on, releasing everything idle now if more is.
    pub(super) fn set_limit(&self, bytes: usize) {
        self.limit.store(bytes as u64, Ordering::Relaxed);
        if self.idle().bytes > bytes {
            self.release_all();
        }
    }

    pub(super) fn counters(&self) -> PoolCounters {
        let get = |cell: &AtomicU64| cell.load(Ordering::Relaxed);
        PoolCounters {
            device_allocations: get(&self.device_allocations),
            device_allocation_bytes: get(&self.device_allocation_bytes),
            reuses: get(&self.reuses),
            reused_bytes: get(&self.reused_bytes),
            releases: get(&self.releases),
            released_bytes: get(&self.released_bytes),
            idle_bytes: self.idle().bytes as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes_round_up_by_at_most_an_eighth() {
        assert_eq!(size_class(0), 512);
        assert_eq!(size_class(1), 512);
        assert_eq!(size_class(512), 512);
        assert_eq!(size_class(513), 576);
        assert_eq!(size_class(1024), 1024);
        assert_eq!(size_class(1025), 1152);
        assert_eq!(size_class(160_004), 163_840);
        assert_eq!(size_class(3 << 20), 3 << 20);
        for bytes in [600, 5000, 123_457, 26_880_000, (1 << 40) + 1] {
            let class = size_class(bytes);
            assert!(class >= bytes && class - bytes <= bytes / 8, "{bytes} -> {class}");
            assert_eq!(size_class(class), class, "a class is its own class");
        }
        assert_eq!(size_class(usize::MAX), usize::MAX);
    }

    #[test]
    fn a_buffer_given_back_is_taken_again_and_the_limit_releases() {
        let pool = BufferPool::new();
        pool.set_limit(2048);
        assert!(pool.take(1024).is_none());
        pool.give_back(1024, Memory::Emulated(vec![7; 128]));
        pool.give_back(1024, Memory::Emulated(vec![8; 128]));
        // Past the limit: released at once.
        pool.give_back(512, Memory::Emulated(vec![9; 64]));
        let counters = pool.counters();
        assert_eq!(
            (counters.idle_bytes, counters.releases, counters.released_bytes),
            (2048, 1, 512)
        );
        assert!(matches!(pool.take(1024), Some(Memory::Emulated(words)) if words[0] == 8));
        assert!(pool.take(512).is_none());
        assert_eq!(pool.release_all(), 1024);
        let counters = pool.counters();
        assert_eq!(
            (counters.reuses, counters.reused_bytes, counters.idle_bytes),
            (1, 1024, 0)
        );
        assert_eq!(counters.releases, 2);
        assert!(pool.take(1024).is_none());
    }
}
