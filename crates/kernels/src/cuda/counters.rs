//! What a CUDA device (a GPU or the emulator) has been asked to do: kernel launches, host
//! synchronisations, copies each way, allocations and zero-fills. A training step's cost on a
//! GPU is dominated by these round trips and per-launch overheads long before the kernels'
//! arithmetic, and they can be counted on a machine without a GPU: the counts are taken in
//! [`super::device::GpuDevice`], above the point where the emulator and a GPU part ways, so the
//! same program counts the same on both.
//!
//! Each device keeps relaxed atomic counters (a handful of uncontended increments per call,
//! nothing next to a launch). [`DeviceCounters`] is a snapshot of them; the difference of two
//! snapshots ([`DeviceCounters::since`]) is what the code between them did.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A snapshot of one device's counters, from when the device was opened (in this process).
/// Bytes are the buffers' sizes as requested (elements times element size), the same on a GPU
/// and on the emulator whatever either pads them to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceCounters {
    /// Kernels launched (a failed launch is not counted; nor are the kernels of a CUDA graph
    /// while captured or replayed: see `graph_launches`).
    pub launches: u64,
    /// CUDA graphs replayed, each one launch however many kernels it holds.
    pub graph_launches: u64,
    /// Times the host waited for the device: every download (a device-to-host copy waits for
    /// every kernel queued before it), every explicit synchronisation, and, with
    /// `EARTHMOVER_CUDA_SYNC=1`, the wait after every launch.
    pub host_syncs: u64,
    /// Host-to-device copies.
    pub uploads: u64,
    pub upload_bytes: u64,
    /// Device-to-host copies.
    pub downloads: u64,
    pub download_bytes: u64,
    /// Device buffers allocated, those that uploads fill included.
    pub allocations: u64,
    pub allocation_bytes: u64,
    /// Allocations zero-filled before use (a memset on a GPU).
    pub zero_fills: u64,
    pub zero_fill_bytes: u64,
}

impl DeviceCounters {
    /// What was counted between `earlier` (a snapshot of the same device) and this snapshot.
    /// Counters only grow, so a count that would go below zero (an `earlier` taken after this
    /// one) is 0 rather than a wrapped number or a panic.
    pub fn since(&self, earlier: &DeviceCounters) -> DeviceCounters {
        let d = |now: u64, before: u64| now.saturating_sub(before);
        DeviceCounters {
            launches: d(self.launches, earlier.launches),
            graph_launches: d(self.graph_launches, earlier.graph_launches),
            host_syncs: d(self.host_syncs, earlier.host_syncs),
            uploads: d(self.uploads, earlier.uploads),
            upload_bytes: d(self.upload_bytes, earlier.upload_bytes),
            downloads: d(self.downloads, earlier.downloads),
            download_bytes: d(self.download_bytes, earlier.download_bytes),
            allocations: d(self.allocations, earlier.allocations),
            allocation_bytes: d(self.allocation_bytes, earlier.allocation_bytes),
            zero_fills: d(self.zero_fills, earlier.zero_fills),
            zero_fill_bytes: d(self.zero_fill_bytes, earlier.zero_fill_bytes),
        }
    }
}

/// One line: `1,234 launches, 21 host syncs, 16 uploads (1.2 MiB), ...`.
impl fmt::Display for DeviceCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} launches, {} graph launches, {} host syncs, {} uploads ({}), {} downloads ({}), {} allocations ({}), {} zero-filled ({})",
            thousands(self.launches),
            thousands(self.graph_launches),
            thousands(self.host_syncs),
            thousands(self.uploads),
            bytes(self.upload_bytes),
            thousands(self.downloads),
            bytes(self.download_bytes),
            thousands(self.allocations),
            bytes(self.allocation_bytes),
            thousands(self.zero_fills),
            bytes(self.zero_fill_bytes),
        )
    }
}

/// A snapshot of one device's memory pool (`cuda::pool`): how the allocations that
/// [`DeviceCounters::allocations`] counts were served. Each is either a reuse of an idle buffer
/// of its size class or a new buffer from the driver (on the emulator, from the host), so after
/// a warm-up a training iteration's allocations are (almost) all reuses. Bytes are size classes
/// (a request rounded up), not the requests' sizes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolCounters {
    /// Buffers the pool had to get from the driver (`cuMemAlloc`), uploads' included.
    pub device_allocations: u64,
    pub device_allocation_bytes: u64,
    /// Allocations served by an idle buffer of the pool.
    pub reuses: u64,
    pub reused_bytes: u64,
    /// Idle buffers given back to the driver: past the pool's idle limit, by
    /// `GpuDevice::empty_pool`, or before retrying an allocation the driver refused.
    pub releases: u64,
    pub released_bytes: u64,
    /// Bytes idle in the pool at the snapshot (a level, not a count: [`PoolCounters::since`]
    /// keeps the later snapshot's).
    pub idle_bytes: u64,
}

impl PoolCounters {
    /// What the pool did between `earlier` and this snapshot; `idle_bytes` is this one's.
    pub fn since(&self, earlier: &PoolCounters) -> PoolCounters {
        let d = |now: u64, before: u64| now.saturating_sub(before);
        PoolCounters {
            device_allocations: d(self.device_allocations, earlier.device_allocations),
            device_allocation_bytes: d(self.device_allocation_bytes, earlier.device_allocation_bytes),
            reuses: d(self.reuses, earlier.reuses),
            reused_bytes: d(self.reused_bytes, earlier.reused_bytes),
            releases: d(self.releases, earlier.releases),
            released_bytes: d(self.released_bytes, earlier.released_bytes),
            idle_bytes: self.idle_bytes,
        }
    }
}

/// One line: `3 device allocations (1.5 KiB), 927 reuses (1.5 GiB), 0 released (0 B), 12.0 MiB idle`.
impl fmt::Display for PoolCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} device allocations ({}), {} reuses ({}), {} released ({}), {} idle",
            thousands(self.device_allocations),
            bytes(self.device_allocation_bytes),
            thousands(self.reuses),
            bytes(self.reused_bytes),
            thousands(self.releases),
            bytes(self.released_bytes),
            bytes(self.idle_bytes),
        )
    }
}

/// `n` with thousands separators: launch counts run to thousands per training step.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A byte count in B, KiB, MiB or GiB, one decimal past bytes.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 3] = ["KiB", "MiB", "GiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A snapshot of one device's launches per kernel name (`binary_f32`, `reduce_sum_f64`, ...),
/// from when the device was opened: where the [`DeviceCounters::launches`] go. Like the
/// counters, the difference of two snapshots ([`LaunchHistogram::since`]) is what ran between
/// them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LaunchHistogram {
    counts: BTreeMap<String, u64>,
}

impl LaunchHistogram {
    /// The launches counted between `earlier` (a snapshot of the same device) and this one;
    /// kernels launched no time in between are left out.
    pub fn since(&self, earlier: &LaunchHistogram) -> LaunchHistogram {
        let counts = self
            .counts
            .iter()
            .map(|(name, &count)| (name.clone(), count.saturating_sub(earlier.get(name))))
            .filter(|&(_, count)| count > 0)
            .collect();
        LaunchHistogram { counts }
    }

    /// Launches of the kernel named `kernel` (0 if it never ran).
    pub fn get(&self, kernel: &str) -> u64 {
        self.counts.get(kernel).copied().unwrap_or(0)
    }

    /// Launches of every kernel together.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// `(kernel, launches)`, the most launched first (ties by name).
    pub fn by_count(&self) -> Vec<(&str, u64)> {
        let mut rows: Vec<(&str, u64)> = self
            .counts
            .iter()
            .map(|(name, &count)| (name.as_str(), count))
            .collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        rows
    }
}

/// One kernel a line, the most launched first: `  312  binary_f32`.
impl fmt::Display for LaunchHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, count) in self.by_count() {
            writeln!(f, "{:>7}  {name}", thousands(count))?;
        }
        Ok(())
    }
}

/// The live counters of one device, incremented by its calls. Relaxed ordering: each counter
/// is a tally on its own, and a snapshot read while another thread works on the device may
/// see some of that work and not the rest.
#[derive(Debug, Default)]
pub(crate) struct CounterCells {
    launches: AtomicU64,
    graph_launches: AtomicU64,
    host_syncs: AtomicU64,
    uploads: AtomicU64,
    upload_bytes: AtomicU64,
    downloads: AtomicU64,
    download_bytes: AtomicU64,
    allocations: AtomicU64,
    allocation_bytes: AtomicU64,
    zero_fills: AtomicU64,
    zero_fill_bytes: AtomicU64,
    /// Launches per kernel name. A lock per launch is nothing next to a launch (microseconds
    /// on a GPU, far more on the emulator), and the names are few, so after the first launch
    /// of a kernel its entry is found without allocating.
    launches_by_kernel: Mutex<HashMap<String, u64>>,
}

fn add(cell: &AtomicU64, n: usize) {
    cell.fetch_add(n as u64, Ordering::Relaxed);
}

impl CounterCells {
    /// A launch of the kernel named `kernel`.
    pub(crate) fn launch(&self, kernel: &str) {
        add(&self.launches, 1);
        let mut by_kernel = self.launches_by_kernel.lock().unwrap_or_else(|e| e.into_inner());
        match by_kernel.get_mut(kernel) {
            Some(count) => *count += 1,
            None => {
                by_kernel.insert(kernel.to_string(), 1);
            }
        }
    }

    pub(crate) fn launch_histogram(&self) -> LaunchHistogram {
        let by_kernel = self.launches_by_kernel.lock().unwrap_or_else(|e| e.into_inner());
        LaunchHistogram {
            counts: by_kernel.iter().map(|(name, &count)| (name.clone(), count)).collect(),
        }
    }

    pub(crate) fn graph_launch(&self) {
        add(&self.graph_launches, 1);
    }

    pub(crate) fn host_sync(&self) {
        add(&self.host_syncs, 1);
    }

    /// An upload of `bytes` into a buffer of its own (counted as an allocation as well).
    pub(crate) fn upload(&self, bytes: usize) {
        add(&self.uploads, 1);
        add(&self.upload_bytes, bytes);
        self.allocation(bytes, false);
    }

    /// A blocking download of `bytes` (counted as a host synchronisation as well).
    pub(crate) fn download(&self, bytes: usize) {
        add(&self.downloads, 1);
        add(&self.download_bytes, bytes);
        self.host_sync();
    }

    pub(crate) fn allocation(&self, bytes: usize, zero_filled: bool) {
        add(&self.allocations, 1);
        add(&self.allocation_bytes, bytes);
        if zero_filled {
            add(&self.zero_fills, 1);
            add(&self.zero_fill_bytes, bytes);
        }
    }

    pub(crate) fn snapshot(&self) -> DeviceCounters {
        let get = |cell: &AtomicU64| cell.load(Ordering::Relaxed);
        DeviceCounters {
            launches: get(&self.launches),
            graph_launches: get(&self.graph_launches),
            host_syncs: get(&self.host_syncs),
            uploads: get(&self.uploads),
            upload_bytes: get(&self.upload_bytes),
            downloads: get(&self.downloads),
            download_bytes: get(&self.download_bytes),
            allocations: get(&self.allocations),
            allocation_bytes: get(&self.allocation_bytes),
            zero_fills: get(&self.zero_fills),
            zero_fill_bytes: get(&self.zero_fill_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_call_counts_what_it_does_and_only_that() {
        let cells = CounterCells::default();
        cells.launch("binary_f32");
        cells.launch("binary_f32");
        cells.graph_launch();
        cells.upload(40);
        cells.download(8);
        cells.allocation(100, true);
        cells.allocation(12, false);
        cells.host_sync();
        let expected = DeviceCounters {
            launches: 2,
            graph_launches: 1,
            host_syncs: 2,
            uploads: 1,
            upload_bytes: 40,
            downloads: 1,
            download_bytes: 8,
            allocations: 3,
            allocation_bytes: 152,
            zero_fills: 1,
            zero_fill_bytes: 100,
        };
        assert_eq!(cells.snapshot(), expected);
    }

    #[test]
    fn since_is_the_difference_and_never_wraps() {
        let cells = CounterCells::default();
        cells.allocation(64, true);
        let earlier = cells.snapshot();
        cells.launch("fill_f32");
        cells.download(4);
        let later = cells.snapshot();
        let between = later.since(&earlier);
        assert_eq!(
            between,
            DeviceCounters {
                launches: 1,
                host_syncs: 1,
                downloads: 1,
                download_bytes: 4,
                ..DeviceCounters::default()
            }
        );
        assert_eq!(earlier.since(&later), DeviceCounters::default());
        assert_eq!(later.since(&DeviceCounters::default()), later);
    }

    #[test]
    fn the_histogram_counts_launches_per_kernel_and_subtracts() {
        let cells = CounterCells::default();
        cells.launch("fill_f32");
        let earlier = cells.launch_histogram();
        for kernel in ["binary_f32", "unary_f32", "binary_f32", "fill_f32"] {
            cells.launch(kernel);
        }
        let now = cells.launch_histogram();
        assert_eq!(now.get("fill_f32"), 2);
        assert_eq!(now.total(), cells.snapshot().launches);
        let between = now.since(&earlier);
        assert_eq!(
            between.by_count(),
            vec![("binary_f32", 2), ("fill_f32", 1), ("unary_f32", 1)]
        );
        assert_eq!(between.get("matmul_f32"), 0);
        assert_eq!(
            between.to_string(),
            "      2  binary_f32\n      1  fill_f32\n      1  unary_f32\n"
        );
        assert_eq!(earlier.since(&now), LaunchHistogram::default());
    }

    #[test]
    fn display_reads_as_one_line_with_units() {
        let counters = DeviceCounters {
            launches: 1234,
            graph_launches: 0,
            host_syncs: 21,
            uploads: 16,
            upload_bytes: 3 << 20,
            downloads: 21,
            download_bytes: 84,
            allocations: 1_000_000,
            allocation_bytes: 1536,
            zero_fills: 0,
            zero_fill_bytes: 0,
        };
        assert_eq!(
            counters.to_string(),
            "1,234 launches, 0 graph launches, 21 host syncs, 16 uploads (3.0 MiB), 21 downloads (84 B), \
             1,000,000 allocations (1.5 KiB), 0 zero-filled (0 B)"
        );
        assert_eq!(bytes(5 << 30), "5.0 GiB");
        assert_eq!(bytes(5000 << 30), "5000.0 GiB");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
    }

    #[test]
    fn pool_counters_subtract_counts_but_keep_the_idle_level() {
        let earlier = PoolCounters {
            device_allocations: 3,
            device_allocation_bytes: 3 << 20,
            reuses: 10,
            reused_bytes: 5120,
            releases: 0,
            released_bytes: 0,
            idle_bytes: 4096,
        };
        let later = PoolCounters {
            reuses: 15,
            reused_bytes: 7680,
            idle_bytes: 1024,
            ..earlier
        };
        let between = later.since(&earlier);
        assert_eq!(
            between,
            PoolCounters {
                reuses: 5,
                reused_bytes: 2560,
                idle_bytes: 1024,
                ..PoolCounters::default()
            }
        );
        assert_eq!(
            earlier.to_string(),
            "3 device allocations (3.0 MiB), 10 reuses (5.0 KiB), 0 released (0 B), 4.0 KiB idle"
        );
    }
}
