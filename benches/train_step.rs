//! Seconds per generator iteration of whole training steps (n_critic critic steps, then one
//! generator step) with the reference DCGAN networks at batch 64, on the CPU, or on GPU 0 with
//! `cuda` among the arguments. Run with `cargo bench --bench train_step`; pass dims and
//! algorithms to time, e.g. `cargo bench --bench train_step -- 32`, `cargo bench --bench
//! train_step -- 64 wgan` or `cargo bench --bench train_step -- cuda 64`, and `threads=1,2`
//! to time the CPU step on pools of those many threads (default: all of rayon's), and `bf16`
//! to time mixed precision (`--precision bf16`; the twin's `bf16` uses torch.autocast), `f16`
//! its f16 form with dynamic loss scaling (`--precision f16`, no twin). Every step
//! reads its losses back to the host, so GPU timings include the wait for the GPU.
//!
//! `emulator` instead of `cuda` runs the GPU path on the CUDA emulator (build with `--features
//! emulator`): `cargo bench --features emulator --bench train_step -- emulator 32`. Its times
//! say nothing about a GPU; what it is for is the device's counters (launches, host
//! synchronisations, copies, allocations and zero-fills; `DeviceCounters`), which count the
//! same there as on a GPU. On a GPU device (either) every iteration's counters are printed
//! under its row, the first iteration's included, each with a line of the memory pool's
//! (`PoolCounters`: buffers reused against buffers got from the driver), then the last
//! iteration's launches per kernel name (`LaunchHistogram`), the most launched first; the
//! emulator times 2 iterations after the first instead of 5. `graph` (with `cuda` or
//! `emulator`) captures each iteration as a CUDA graph and replays it (`wgan-mnist
//! --cuda-graph`): the first three iterations (two uncaptured, the capture) come before the
//! timed ones, and a replayed iteration counts one graph launch.
//!
//! On the CPU it first prints the processor, the SIMD path in use (`EARTHMOVER_SIMD` chooses
//! another) and that path's measured FMA peak. Beside the time it prints, per configuration:
//! - the dense work of one iteration (the FLOPs of every CPU matmul and convolution, counted by
//!   the GEMM as it runs), the effective GFLOP/s it was done at, and that as a share of the FMA
//!   peak on as many threads (CPU only);
//! - the peak resident memory of the process during that configuration (the high-water mark
//!   is reset between configurations), and before the first one the resident memory of the
//!   process with the data loaded, which every configuration's peak includes.
//!
//! `benches/reference/train_step.py` prints the same table for PyTorch.

use earthmover::kernels::cpu::matmul::gemm_flops;
use earthmover::tensor::{device_counters, device_launch_histogram, device_pool_counters, LaunchHistogram};
use earthmover::wgan::data::Mnist;
use earthmover::wgan::train::{Algo, Precision, TrainConfig, Trainer};
use earthmover::Device;
use std::time::Instant;

mod common;

/// A field of `/proc/self/status` in MB (`VmRSS`: resident now, `VmHWM`: the high-water mark).
fn resident_mb(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Start a new high-water mark of resident memory (Linux: `clear_refs` value 5).
fn reset_peak_resident() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn main() {
    // As the training programs do: keep freed memory in the process for the next step's tensors.
    earthmover::tensor::retain_freed_memory();
    // As the training programs do: denormals flushed (EARTHMOVER_FLUSH_DENORMAL=0 keeps them);
    // PyTorch's twin sets torch.set_flush_denormal to match.
    let flush = earthmover::tensor::configure_flush_denormal(true).unwrap_or_else(|e| panic!("{e}"));
    println!("denormals: {}", if flush { "flushed" } else { "kept" });
    // Found at run time (`EARTHMOVER_DATA`, then beside the binary): it also runs from the GPU
    // bundle, on another machine.
    let dir = Mnist::find_dir().unwrap_or_else(|e| panic!("{e}"));
    println!("data: {}", dir.display());
    let data = Mnist::load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    let dims: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let device = if std::env::args().any(|a| a == "cuda") {
        Device::Cuda(0)
    } else if std::env::args().any(|a| a == "emulator") {
        Device::CudaEmulator
    } else {
        Device::Cpu
    };
    let all_threads = earthmover::kernels::cpu::current_num_threads();
    println!("device: {device}, {all_threads} threads");
    let thread_counts: Vec<usize> = std::env::args()
        .filter_map(|a| a.strip_prefix("threads=").map(str::to_string))
        .flat_map(|list| list.split(',').filter_map(|t| t.parse().ok()).collect::<Vec<usize>>())
        .collect();
    let thread_counts = if thread_counts.is_empty() || device != Device::Cpu {
        vec![all_threads]
    } else {
        thread_counts
    };
    // The FMA peak on each thread count, to read the step's GFLOP/s against: the printed
    // measurements where they cover the count (a second measurement can read another load of
    // a shared machine than the printed one, and the column would disagree with the header).
    let peaks: Vec<f64> = if device == Device::Cpu {
        let printed = common::print_machine(all_threads);
        let path = earthmover::kernels::cpu::simd::active_path();
        thread_counts
            .iter()
            .map(|&t| match t {
                t if t == all_threads => printed.all,
                1 => printed.one,
                t => earthmover::kernels::cpu::simd::fma_peak_gflops(path, t),
            })
            .collect()
    } else {
        vec![f64::NAN; thread_counts.len()]
    };
    if let Some(mb) = resident_mb("VmRSS:") {
        println!("resident before training (binary and data): {mb:.0} MB");
    }
    let dims = if dims.is_empty() { vec![32, 64] } else { dims };
    let algos: Vec<Algo> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    // `bf16`: mixed precision (`--precision bf16`), beside PyTorch's autocast twin; `f16` the
    // same in f16 with dynamic loss scaling (`--precision f16`; ours only).
    let has = |word: &str| std::env::args().skip(1).any(|a| a == word);
    let precision = if has("bf16") {
        Precision::Bf16
    } else if has("f16") {
        Precision::F16
    } else {
        Precision::F32
    };
    println!("precision: {precision}");
    if has("graph") {
        println!("iterations: captured as CUDA graphs and replayed");
    }
    if precision == Precision::Bf16 && device == Device::Cpu {
        // The bf16 convolutions run on AMX or the bf16 tile, past the f32 FMA peak of the
        // "of peak" column: print their own ceilings beside it.
        use earthmover::kernels::cpu::conv::{bf16::Bf16Kernel, tile_amx, tile_pairs};
        let rate = |r: Option<f64>| r.map_or("not here".to_string(), |g| format!("{g:.0} GFLOP/s"));
        println!(
            "bf16 convolutions on {}; bf16 peaks on {all_threads} threads: AMX {}, vdpbf16ps {} (\"of peak\" is the f32 FMA peak)",
            Bf16Kernel::active(),
            rate(tile_amx::amx_peak_gflops(all_threads)),
            rate(tile_pairs::dot_peak_gflops(all_threads)),
        );
    }
    let algos = if algos.is_empty() {
        vec![Algo::WganGp, Algo::Wgan]
    } else {
        algos
    };
    println!(
        "{:<8} {:>4} {:>6} {:>7} {:>12} {:>11} {:>12} {:>9} {:>8} {:>9}",
        "algo", "dim", "batch", "threads", "s/iteration", "min s/iter", "GFLOP/iter", "GFLOP/s", "of peak", "peak MB"
    );
    for (&threads, &peak) in thread_counts.iter().zip(&peaks) {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a thread pool");
        pool.install(|| {
            // The denormal setting reaches rayon's global pool by itself; a pool of our own
            // must be told inside it.
            earthmover::tensor::set_flush_denormal(flush);
            time_configurations(&data, device, &dims, &algos, precision, threads, peak, has("graph"))
        });
    }
}

/// Time every (dim, algorithm) on the current rayon pool of `threads` threads and print a row
/// for each; `peak` is the FMA peak on that many threads (NaN on a GPU); `graphs`: iterations
/// replayed as CUDA graphs.
#[allow(clippy::too_many_arguments)]
fn time_configurations(
    data: &Mnist,
    device: Device,
    dims: &[usize],
    algos: &[Algo],
    precision: Precision,
    threads: usize,
    peak: f64,
    graphs: bool,
) {
    for &dim in dims {
        for &algo in algos {
            reset_peak_resident();
            let mut config = TrainConfig::new(algo);
            config.dim = dim;
            config.precision = precision;
            // Time the steady state: 5 critic steps per generator step, no warm-up schedule.
            config.critic_warmup = false;
            config.test_every = usize::MAX;
            let mut trainer = Trainer::new(config, data.train.len()).expect("a valid configuration");
            if let Err(e) = trainer.to_device(device) {
                eprintln!("skipped: {e}");
                return;
            }
            if graphs {
                trainer.use_cuda_graphs().unwrap_or_else(|e| panic!("graph: {e}"));
            }
            // Each step's device counters (a GPU or the emulator), the first's included.
            let mut counters = Vec::new();
            let mut last_histogram = LaunchHistogram::default();
            let mut step = |trainer: &mut Trainer| {
                let histogram_before = device_launch_histogram(device).ok();
                let before = device_counters(device).ok().zip(device_pool_counters(device).ok());
                trainer.step(data).unwrap_or_else(|e| panic!("{e}"));
                if let (Some((before, pool_before)), Ok(after), Ok(pool_after)) =
                    (before, device_counters(device), device_pool_counters(device))
                {
                    counters.push((after.since(&before), pool_after.since(&pool_before)));
                }
                if let (Some(before), Ok(after)) = (histogram_before, device_launch_histogram(device)) {
                    last_histogram = after.since(&before);
                }
            };
            // Untimed: the first iteration (the images' upload, the pool's first buffers); with
            // graphs, the two that run uncaptured and the capture.
            for _ in 0..if graphs { 3 } else { 1 } {
                step(&mut trainer);
            }
            let runs = if device == Device::CudaEmulator { 2 } else { 5 };
            let flops_before = gemm_flops();
            let mut times: Vec<f64> = (0..runs)
                .map(|_| {
                    let start = Instant::now();
                    step(&mut trainer);
                    start.elapsed().as_secs_f64()
                })
                .collect();
            let gflop = (gemm_flops() - flops_before) as f64 / runs as f64 / 1e9;
            times.sort_by(f64::total_cmp);
            let median = times[runs / 2];
            let (gflop, rate, share) = if device == Device::Cpu {
                let rate = gflop / median;
                (
                    format!("{gflop:.1}"),
                    format!("{rate:.1}"),
                    format!("{:.0}%", 100.0 * rate / peak),
                )
            } else {
                ("-".into(), "-".into(), "-".into())
            };
            let memory = resident_mb("VmHWM:").map_or("-".into(), |mb| format!("{mb:.0}"));
            println!(
                "{:<8} {:>4} {:>6} {threads:>7} {:>12.3} {:>11.3} {gflop:>12} {rate:>9} {share:>8} {memory:>9}",
                algo.to_string(),
                dim,
                64,
                median,
                times[0],
            );
            for (i, (c, pool)) in counters.iter().enumerate() {
                let first = if i == 0 { " (the first)" } else { "" };
                println!("  iteration {}{first}: {c}", i + 1);
                println!("    memory pool: {pool}");
            }
            if last_histogram.total() > 0 {
                println!("  launches of the last iteration, per kernel:");
                for line in last_histogram.to_string().lines() {
                    println!("  {line}");
                }
            }
        }
    }
}
