//! Seconds per generator iteration of whole training steps (n_critic critic steps, then one
//! generator step) with the reference DCGAN networks at batch 64, on the CPU, or on GPU 0 with
//! `cuda` among the arguments. Run with `cargo bench --bench train_step`; pass dims and
//! algorithms to time, e.g. `cargo bench --bench train_step -- 32`, `cargo bench --bench
//! train_step -- 64 wgan` or `cargo bench --bench train_step -- cuda 64`.
//! Every step reads its losses back to the host, so GPU timings include the wait for the GPU.
//!
//! Beside the time it prints, per configuration:
//! - the dense work of one iteration (the FLOPs of every CPU matmul and convolution, counted by
//!   the GEMM as it runs) and the effective GFLOP/s it was done at (CPU only);
//! - the peak resident memory of the process during that configuration (the high-water mark
//!   is reset between configurations), and before the first one the resident memory of the
//!   process with the data loaded, which every configuration's peak includes.
//!
//! `benches/reference/train_step.py` prints the same table for PyTorch.

use earthmover::kernels::cpu::matmul::gemm_flops;
use earthmover::wgan::data::Mnist;
use earthmover::wgan::train::{Algo, TrainConfig, Trainer};
use earthmover::Device;
use std::time::Instant;

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
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = Mnist::load_dir(&root.join("data/mnist")).expect("the repository's data/mnist");
    let dims: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let device = if std::env::args().any(|a| a == "cuda") {
        Device::Cuda(0)
    } else {
        Device::Cpu
    };
    println!(
        "device: {device}, {} threads",
        earthmover::kernels::cpu::current_num_threads()
    );
    if let Some(mb) = resident_mb("VmRSS:") {
        println!("resident before training (binary and data): {mb:.0} MB");
    }
    let dims = if dims.is_empty() { vec![32, 64] } else { dims };
    let algos: Vec<Algo> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let algos = if algos.is_empty() {
        vec![Algo::WganGp, Algo::Wgan]
    } else {
        algos
    };
    println!(
        "{:<8} {:>4} {:>6} {:>12} {:>11} {:>12} {:>9} {:>9}",
        "algo", "dim", "batch", "s/iteration", "min s/iter", "GFLOP/iter", "GFLOP/s", "peak MB"
    );
    for &dim in &dims {
        for &algo in &algos {
            reset_peak_resident();
            let mut config = TrainConfig::new(algo);
            config.dim = dim;
            // Time the steady state: 5 critic steps per generator step, no warm-up schedule.
            config.critic_warmup = false;
            config.test_every = usize::MAX;
            let mut trainer = Trainer::new(config, data.train.len()).expect("a valid configuration");
            if let Err(e) = trainer.to_device(device) {
                eprintln!("skipped: {e}");
                return;
            }
            trainer.step(&data).expect("finite losses");
            const RUNS: usize = 5;
            let flops_before = gemm_flops();
            let mut times: Vec<f64> = (0..RUNS)
                .map(|_| {
                    let start = Instant::now();
                    trainer.step(&data).expect("finite losses");
                    start.elapsed().as_secs_f64()
                })
                .collect();
            let gflop = (gemm_flops() - flops_before) as f64 / RUNS as f64 / 1e9;
            times.sort_by(f64::total_cmp);
            let median = times[RUNS / 2];
            let (gflop, rate) = if device == Device::Cpu {
                (format!("{gflop:.1}"), format!("{:.1}", gflop / median))
            } else {
                ("-".into(), "-".into())
            };
            let peak = resident_mb("VmHWM:").map_or("-".into(), |mb| format!("{mb:.0}"));
            println!(
                "{:<8} {:>4} {:>6} {:>12.3} {:>11.3} {gflop:>12} {rate:>9} {peak:>9}",
                algo.to_string(),
                dim,
                64,
                median,
                times[0],
            );
        }
    }
}
