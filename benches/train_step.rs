//! Seconds per generator iteration of whole training steps (n_critic critic steps, then one
//! generator step) with the reference DCGAN networks at batch 64, on the CPU, or on GPU 0 with
//! `cuda` among the arguments. Run with `cargo bench --bench train_step`; pass dims to time,
//! e.g. `cargo bench --bench train_step -- 32` or `cargo bench --bench train_step -- cuda 64`.
//! Every step reads its losses back to the host, so GPU timings include the wait for the GPU.

use earthmover::wgan::data::Mnist;
use earthmover::wgan::train::{Algo, TrainConfig, Trainer};
use earthmover::Device;
use std::time::Instant;

fn peak_resident_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = Mnist::load_dir(&root.join("data/mnist")).expect("the repository's data/mnist");
    let dims: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let device = if std::env::args().any(|a| a == "cuda") {
        Device::Cuda(0)
    } else {
        Device::Cpu
    };
    println!("device: {device}");
    let dims = if dims.is_empty() { vec![32, 64] } else { dims };
    println!(
        "{:<8} {:>4} {:>6} {:>14} {:>14}",
        "algo", "dim", "batch", "s/iteration", "min s/iter"
    );
    for &dim in &dims {
        for algo in [Algo::WganGp, Algo::Wgan] {
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
            let mut times: Vec<f64> = (0..5)
                .map(|_| {
                    let start = Instant::now();
                    trainer.step(&data).expect("finite losses");
                    start.elapsed().as_secs_f64()
                })
                .collect();
            times.sort_by(f64::total_cmp);
            println!(
                "{:<8} {:>4} {:>6} {:>14.3} {:>14.3}",
                algo.to_string(),
                dim,
                64,
                times[2],
                times[0]
            );
        }
    }
    if let Some(mb) = peak_resident_mb() {
        println!("peak resident memory: {mb:.0} MB");
    }
}
