//! WGAN-GP, WGAN and the standard GAN trained on a GPU, step for step beside the same run on
//! the CPU: same seed, same batches, same initial weights, so the logged losses must track.
//!
//! On a CUDA GPU: 300 WGAN-GP iterations at DIM 16, the curves compared after smoothing
//! (float rounding differs between devices and compounds over training). Without one, with
//! `--features emulator`: a few iterations of each algorithm on the emulator at DIM 4, compared
//! value for value. Otherwise it says why it skipped.

use earthmover::kernels::cuda::device::cuda_device_count;
use earthmover::wgan::data::Mnist;
use earthmover::wgan::plot::median_filter;
use earthmover::wgan::train::{Algo, IterationLog, TrainConfig, Trainer};
use earthmover::Device;

fn data() -> Mnist {
    // Found at run time: this binary also runs from the GPU bundle, on another machine.
    let dir = Mnist::find_dir().unwrap_or_else(|e| panic!("{e}"));
    eprintln!("data: {}", dir.display());
    Mnist::load_dir(&dir).unwrap_or_else(|e| panic!("{e}"))
}

fn run(config: &TrainConfig, device: Device, data: &Mnist) -> Vec<IterationLog> {
    let mut trainer = Trainer::new(config.clone(), data.train.len()).unwrap();
    trainer.to_device(device).unwrap();
    (0..config.iters).map(|_| trainer.step(data).unwrap()).collect()
}

fn losses(rows: &[IterationLog]) -> Vec<[f64; 3]> {
    rows.iter()
        .map(|r| [r.critic_loss, r.generator_loss, r.wasserstein])
        .collect()
}

#[test]
fn training_on_the_gpu_tracks_the_cpu() {
    let data = data();
    if cuda_device_count() > 0 {
        let mut config = TrainConfig::new(Algo::WganGp);
        (config.dim, config.iters, config.test_every) = (16, 300, 1000);
        let (cpu, gpu) = (run(&config, Device::Cpu, &data), run(&config, Device::Cuda(0), &data));
        let smooth = |rows: &[IterationLog]| median_filter(&rows.iter().map(|r| r.wasserstein).collect::<Vec<_>>(), 25);
        let (a, b) = (smooth(&cpu), smooth(&gpu));
        let scale = a.iter().map(|v| v.abs()).fold(0.0, f64::max);
        let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
        eprintln!("WGAN-GP, 300 iterations: largest gap between smoothed W curves {worst:.4} (scale {scale:.4})");
        assert!(
            worst <= 0.15 * scale,
            "the GPU run drifts from the CPU's: {worst} vs scale {scale}"
        );
        return;
    }
    if !cfg!(feature = "emulator") {
        eprintln!("skipped: no CUDA GPU here, and the emulator is not built in (--features emulator)");
        return;
    }
    for algo in [Algo::WganGp, Algo::Wgan, Algo::Gan] {
        let mut config = TrainConfig::new(algo);
        (
            config.dim,
            config.batch_size,
            config.n_critic,
            config.iters,
            config.test_every,
        ) = (4, 8, 2, 3, 1000);
        config.critic_warmup = false;
        let cpu = losses(&run(&config, Device::Cpu, &data));
        let gpu = losses(&run(&config, Device::CudaEmulator, &data));
        for (i, (c, g)) in cpu.iter().zip(&gpu).enumerate() {
            for (x, y) in c.iter().zip(g) {
                assert!(
                    (x - y).abs() <= 1e-4 * (1.0 + x.abs()),
                    "{algo} iteration {}: cpu {c:?} gpu {g:?}",
                    i + 1
                );
            }
        }
    }
}
