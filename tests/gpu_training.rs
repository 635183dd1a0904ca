//! WGAN-GP, WGAN and the standard GAN trained on a GPU, step for step beside the same run on
//! the CPU: same seed, same batches, same initial weights, so the logged losses must track.
//!
//! On GPU 0, or without one on the emulator (`--features emulator`): the first 3 iterations of
//! each algorithm at DIM 4, compared value for value; on a GPU also 300 WGAN-GP iterations at
//! DIM 16, the curves compared after smoothing (float rounding differs between devices and
//! compounds over training). Otherwise it says why it skipped.
//!
//! Both devices draw the same inputs (noise, interpolation weights and batches are functions of
//! the seed, drawn where the networks are), checked here number for number; and an iteration
//! on a CUDA device uploads nothing, waits for the device once and, after the first, takes
//! every buffer from the device's memory pool (its device counters); so does the test-set
//! estimate, but for one more wait. The
//! tests take turns (`lock_devices`): the counters are the device's, for the whole process.

use earthmover::kernels::cuda::device::cuda_device_count;
use earthmover::tensor::{device_counters, device_pool_counters};
use earthmover::wgan::data::Mnist;
use earthmover::wgan::nn::Module;
use earthmover::wgan::plot::median_filter;
use earthmover::wgan::train::{Algo, IterationInputs, IterationLog, TrainConfig, Trainer};
use earthmover::{DType, Device};
use std::sync::{Mutex, MutexGuard};

static DEVICES: Mutex<()> = Mutex::new(());

fn lock_devices() -> MutexGuard<'static, ()> {
    DEVICES.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The CUDA device these tests train on: GPU 0 when there is one, else the emulator when built
/// in, else none (and the test says why it skipped).
fn cuda_device() -> Option<Device> {
    if cuda_device_count() > 0 {
        Some(Device::Cuda(0))
    } else if cfg!(feature = "emulator") {
        Some(Device::CudaEmulator)
    } else {
        eprintln!("skipped: no CUDA GPU here, and the emulator is not built in (--features emulator)");
        None
    }
}

/// A configuration small enough for the emulator: DIM 4, batches of 8, 2 critic steps.
fn small(algo: Algo) -> TrainConfig {
    let mut config = TrainConfig::new(algo);
    (
        config.dim,
        config.batch_size,
        config.n_critic,
        config.iters,
        config.test_every,
    ) = (4, 8, 2, 3, 1000);
    config.critic_warmup = false;
    config
}

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
    let _devices = lock_devices();
    // The data first, even where the test then skips: the GPU bundle's rehearsal in CI checks
    // from this test's log that a bundle finds its own copy (`data: ...`).
    let data = data();
    let Some(device) = cuda_device() else { return };
    // The first iterations, value for value: both devices start from the same weights and draw
    // the same inputs, so the losses differ only by the rounding of sums taken in another
    // order. The emulator measured 1.3e-8 (WGAN-GP), 2.3e-10 (WGAN) and 1.0e-7 (GAN); a GPU
    // has not been measured yet, so it gets the looser bound until it has.
    let tolerance = if device == Device::CudaEmulator { 1e-6 } else { 1e-4 };
    for algo in [Algo::WganGp, Algo::Wgan, Algo::Gan] {
        let config = small(algo);
        let cpu = losses(&run(&config, Device::Cpu, &data));
        let gpu = losses(&run(&config, device, &data));
        let worst = cpu
            .iter()
            .flatten()
            .zip(gpu.iter().flatten())
            .map(|(x, y)| (x - y).abs() / (1.0 + x.abs()))
            .fold(0.0, f64::max);
        eprintln!("{algo}: the largest gap between the CPU's and {device}'s losses, relative: {worst:.2e}");
        for (i, (c, g)) in cpu.iter().zip(&gpu).enumerate() {
            for (x, y) in c.iter().zip(g) {
                assert!(
                    (x - y).abs() <= tolerance * (1.0 + x.abs()),
                    "{algo} iteration {}: cpu {c:?} {device} {g:?}",
                    i + 1
                );
            }
        }
    }
    if device == Device::CudaEmulator {
        return;
    }
    // On a GPU, also a longer run: the curves, smoothed (rounding compounds over training).
    let mut config = TrainConfig::new(Algo::WganGp);
    (config.dim, config.iters, config.test_every) = (16, 300, 1000);
    let (cpu, gpu) = (run(&config, Device::Cpu, &data), run(&config, device, &data));
    let smooth = |rows: &[IterationLog]| median_filter(&rows.iter().map(|r| r.wasserstein).collect::<Vec<_>>(), 25);
    let (a, b) = (smooth(&cpu), smooth(&gpu));
    let scale = a.iter().map(|v| v.abs()).fold(0.0, f64::max);
    let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    eprintln!("WGAN-GP, 300 iterations: largest gap between smoothed W curves {worst:.4} (scale {scale:.4})");
    assert!(
        worst <= 0.15 * scale,
        "the GPU run drifts from the CPU's: {worst} vs scale {scale}"
    );
}

/// The inputs of an iteration, drawn on the CPU and on a CUDA device from one seed: the same
/// batches and interpolation weights exactly, and the same noise (exactly on the emulator, whose
/// math library is the CPU's; within f32's last bits on a GPU, whose log, sin and cos may round
/// otherwise), in f32 and f64.
#[test]
fn every_device_draws_the_same_inputs_from_a_seed() {
    let _devices = lock_devices();
    let Some(device) = cuda_device() else { return };
    let data = data();
    for dtype in [DType::F32, DType::F64] {
        let draws = |on: Device| -> Vec<Vec<f64>> {
            let mut trainer = Trainer::new(small(Algo::WganGp), data.train.len()).unwrap();
            trainer.to_dtype(dtype).unwrap();
            trainer.to_device(on).unwrap();
            let mut inputs = trainer.next_inputs(&data).unwrap();
            let mut drawn = Vec::new();
            for _ in 0..2 {
                let real = inputs.real_batch().unwrap();
                let noise = inputs.noise().unwrap();
                let eps = inputs.interpolation_weights(&real).unwrap();
                assert_eq!((real.device(), noise.device(), eps.device()), (on, on, on));
                assert_eq!((real.dtype(), noise.dtype(), eps.dtype()), (dtype, dtype, dtype));
                drawn.extend([real, noise, eps].iter().map(|t| t.to_vec_f64()));
            }
            drawn
        };
        let (cpu, gpu) = (draws(Device::Cpu), draws(device));
        let exact_noise = device == Device::CudaEmulator;
        for (i, (c, g)) in cpu.iter().zip(&gpu).enumerate() {
            let what = ["real batch", "noise", "interpolation weights"][i % 3];
            if what != "noise" || exact_noise {
                assert_eq!(c, g, "{dtype} {what} of critic step {}", i / 3);
            } else {
                let worst = c
                    .iter()
                    .zip(g)
                    .map(|(x, y)| (x - y).abs() / (1.0 + x.abs()))
                    .fold(0.0, f64::max);
                assert!(worst <= 1e-6, "{dtype} noise of critic step {}: {worst}", i / 3);
            }
        }
        // The two critic steps' batches are different images, and real batches are images.
        assert_ne!(cpu[0], cpu[3], "{dtype}");
    }
}

/// After the first iteration (which uploads the training images), a WGAN-GP or WGAN iteration
/// on a CUDA device copies nothing to it and waits for it once: the read of its logged values.
#[test]
fn an_iteration_uploads_nothing_and_waits_once() {
    let _devices = lock_devices();
    let Some(device) = cuda_device() else { return };
    let data = data();
    for algo in [Algo::WganGp, Algo::Wgan] {
        let mut trainer = Trainer::new(small(algo), data.train.len()).unwrap();
        trainer.to_device(device).unwrap();
        let before = device_counters(device).unwrap();
        trainer.step(&data).unwrap();
        let first = device_counters(device).unwrap().since(&before);
        // The first uploads the images once, 784 f32 each.
        assert_eq!(first.uploads, 1, "{algo}, the first iteration: {first}");
        assert_eq!(first.upload_bytes, data.train.len() as u64 * 784 * 4, "{algo}: {first}");
        for i in 2..=3 {
            let (before, pool_before) = (device_counters(device).unwrap(), device_pool_counters(device).unwrap());
            trainer.step(&data).unwrap();
            let counted = device_counters(device).unwrap().since(&before);
            let pool = device_pool_counters(device).unwrap().since(&pool_before);
            eprintln!("{algo}, iteration {i}: {counted}; memory pool: {pool}");
            assert_eq!(
                (counted.uploads, counted.host_syncs, counted.downloads),
                (0, 1, 1),
                "{algo}, iteration {i}: {counted}"
            );
            // The memory pool serves the allocations: the second iteration still asks the driver
            // for a few small buffers (measured: 7 of 290 for WGAN-GP, live at once in the second
            // iteration's pattern; without the pool it would be all of them), the third for none.
            assert_eq!(
                pool.reuses + pool.device_allocations,
                counted.allocations,
                "{algo}: {pool}"
            );
            let most_new = if i == 2 { counted.allocations / 20 } else { 0 };
            assert!(
                pool.device_allocations <= most_new,
                "{algo}, iteration {i}: {counted}; memory pool: {pool}"
            );
        }
    }
}

/// The test-set estimate is drawn where the networks are, as a training iteration's inputs:
/// after the first estimate (which uploads the test images once) an iteration with an estimate
/// uploads nothing, and reads the estimate's two means in one more download; and the CPU and
/// the CUDA device draw the same images and noise, so their estimates agree.
#[test]
fn the_test_set_estimate_uploads_nothing_and_matches_the_cpu() {
    let _devices = lock_devices();
    let Some(device) = cuda_device() else { return };
    let data = data();
    let mut config = small(Algo::WganGp);
    config.test_every = 1;
    let mut cpu = Trainer::new(config.clone(), data.train.len()).unwrap();
    let mut gpu = Trainer::new(config, data.train.len()).unwrap();
    gpu.to_device(device).unwrap();
    let before = device_counters(device).unwrap();
    let (cpu_first, gpu_first) = (cpu.step(&data).unwrap(), gpu.step(&data).unwrap());
    let first = device_counters(device).unwrap().since(&before);
    // The training images and the test images, 784 f32 each, once.
    let images = (data.train.len() + data.test.len()) as u64;
    assert_eq!(
        (first.uploads, first.upload_bytes),
        (2, images * 784 * 4),
        "the first: {first}"
    );
    let mut estimates = vec![(cpu_first.test_wasserstein.unwrap(), gpu_first.test_wasserstein.unwrap())];
    for i in 2..=3 {
        let before = device_counters(device).unwrap();
        let (cpu_log, gpu_log) = (cpu.step(&data).unwrap(), gpu.step(&data).unwrap());
        let counted = device_counters(device).unwrap().since(&before);
        assert_eq!(
            (counted.uploads, counted.host_syncs, counted.downloads),
            (0, 2, 2),
            "iteration {i}, with its estimate: {counted}"
        );
        estimates.push((cpu_log.test_wasserstein.unwrap(), gpu_log.test_wasserstein.unwrap()));
    }
    let tolerance = if device == Device::CudaEmulator { 1e-6 } else { 1e-4 };
    for (i, (on_cpu, on_gpu)) in estimates.iter().enumerate() {
        assert!(
            (on_cpu - on_gpu).abs() <= tolerance * (1.0 + on_cpu.abs()),
            "the estimate of iteration {}: cpu {on_cpu}, {device} {on_gpu}",
            i + 1
        );
    }
    // Each estimate draws other images and noise.
    assert_ne!(estimates[0].0, estimates[1].0);
}

/// Every tensor a trainer keeps (the networks, the generator's average, the optimisers' state
/// and step counts), named, as f64 bits.
fn trained_state(trainer: &Trainer) -> Vec<(String, Vec<u64>)> {
    let bits = |(name, t): (String, earthmover::Tensor)| (name, t.to_vec_f64().iter().map(|v| v.to_bits()).collect());
    let mut state: Vec<(String, Vec<u64>)> = trainer.generator.state_dict().into_iter().map(bits).collect();
    state.extend(trainer.critic.state_dict().into_iter().map(bits));
    state.extend(trainer.generator_ema.iter().flat_map(|g| g.state_dict()).map(bits));
    for optim in [&trainer.generator_optim, &trainer.critic_optim] {
        state.extend(optim.state_dict().into_iter().map(bits));
    }
    state
}

/// A run whose iterations are captured as CUDA graphs and replayed (`Trainer::use_cuda_graphs`)
/// is the run without them, bit for bit: the first two iterations run uncaptured, the third is
/// captured and replayed, the rest replayed, and every logged value, weight, batch-norm
/// statistic, optimiser moment and step count, and the data order, equal the uncaptured run's.
/// WGAN-GP with an average of the generator and a test-set estimate between replays (work
/// outside the graph); WGAN with neither, where a replayed iteration is one graph launch, no
/// kernel launch, no allocation, no upload and one wait (its read); and WGAN-GP in mixed
/// precision bf16 (the tensor-core convolutions, the casts).
#[test]
fn iterations_replayed_as_cuda_graphs_are_the_uncaptured_ones_bit_for_bit() {
    let _devices = lock_devices();
    let Some(device) = cuda_device() else { return };
    let data = data();
    use earthmover::wgan::train::Precision;
    for (algo, precision) in [
        (Algo::WganGp, Precision::F32),
        (Algo::Wgan, Precision::F32),
        (Algo::WganGp, Precision::Bf16),
    ] {
        let mut config = small(algo);
        config.precision = precision;
        if (algo, precision) == (Algo::WganGp, Precision::F32) {
            (config.ema, config.test_every) = (Some(0.9), 4);
        }
        let algo = format!("{algo} {precision}");
        let mut plain = Trainer::new(config.clone(), data.train.len()).unwrap();
        let mut graphed = Trainer::new(config, data.train.len()).unwrap();
        for trainer in [&mut plain, &mut graphed] {
            trainer.to_device(device).unwrap();
        }
        graphed.use_cuda_graphs().unwrap();
        for i in 1..=6 {
            let before = device_counters(device).unwrap();
            let replayed = graphed.step(&data).unwrap();
            let counted = device_counters(device).unwrap().since(&before);
            let reference = plain.step(&data).unwrap();
            let values = |log: &IterationLog| {
                [
                    log.critic_loss,
                    log.generator_loss,
                    log.wasserstein,
                    log.penalty,
                    log.grad_norm,
                ]
                .map(f64::to_bits)
            };
            assert_eq!(values(&replayed), values(&reference), "{algo}, iteration {i}");
            assert_eq!(
                replayed.test_wasserstein.map(f64::to_bits),
                reference.test_wasserstein.map(f64::to_bits),
                "{algo}, iteration {i}"
            );
            eprintln!("{algo}, iteration {i} with CUDA graphs: {counted}");
            assert_eq!(
                counted.graph_launches,
                u64::from(i >= 3),
                "{algo}, iteration {i}: {counted}"
            );
            if algo == "wgan f32" && i > 3 {
                assert_eq!(
                    (
                        counted.launches,
                        counted.allocations,
                        counted.uploads,
                        counted.host_syncs
                    ),
                    (0, 0, 0, 1),
                    "{algo}, iteration {i}: {counted}"
                );
            }
        }
        assert_eq!(
            (graphed.iteration, graphed.order.position),
            (plain.iteration, plain.order.position),
            "{algo}"
        );
        for ((name, a), (_, b)) in trained_state(&graphed).iter().zip(trained_state(&plain)) {
            assert!(*a == b, "{algo}: {name} differs after 6 iterations");
        }
        // The data moved on: the replays drew new batches, not the captured one again.
        assert_eq!(plain.order.position, 6 * 2 * 8, "{algo}");
    }
}

/// CUDA graphs are refused, with the reason, where they cannot run: on the CPU, and for f16's
/// dynamic loss scaling.
#[test]
fn cuda_graphs_are_refused_where_they_cannot_run() {
    let mut trainer = Trainer::new(small(Algo::WganGp), 16).unwrap();
    let err = trainer.use_cuda_graphs().unwrap_err().0;
    assert!(err.contains("need a CUDA device"), "{err}");
    let _devices = lock_devices();
    let Some(device) = cuda_device() else { return };
    let mut config = small(Algo::WganGp);
    config.precision = earthmover::wgan::train::Precision::F16;
    let mut trainer = Trainer::new(config, 16).unwrap();
    trainer.to_device(device).unwrap();
    let err = trainer.use_cuda_graphs().unwrap_err().0;
    assert!(err.contains("loss scaling"), "{err}");
    // 16-bit networks (not mixed precision) step their optimisers on the host's count.
    let mut trainer = Trainer::new(small(Algo::WganGp), 16).unwrap();
    trainer.to_device(device).unwrap();
    trainer.use_cuda_graphs().unwrap();
    trainer.to_dtype(DType::BF16).unwrap();
    assert!(!trainer.uses_cuda_graphs(), "off with bf16 networks");
    let err = trainer.use_cuda_graphs().unwrap_err().0;
    assert!(err.contains("need f32 or f64 networks, not bf16"), "{err}");
    trainer.to_dtype(DType::F64).unwrap();
    assert!(!trainer.uses_cuda_graphs());
    trainer.use_cuda_graphs().unwrap();
    trainer.to_dtype(DType::F32).unwrap();
    assert!(trainer.uses_cuda_graphs(), "kept through a conversion it can run in");
}

/// Graphs through what a run does between iterations: saved after a capture and resumed (the
/// optimisers' step counts read back from the device, the position from the host's mirror),
/// and both learning rates changed mid-run (captured by value: the graph is captured anew).
/// Every iteration's log and the final state equal an uncaptured run's, bit for bit.
#[test]
fn graphs_survive_a_checkpoint_and_a_new_learning_rate() {
    use earthmover::wgan::checkpoint::{load_checkpoint, save_checkpoint};
    let _devices = lock_devices();
    let Some(device) = cuda_device() else { return };
    let data = data();
    let config = small(Algo::WganGp);
    let mut plain = Trainer::new(config.clone(), data.train.len()).unwrap();
    let mut graphed = Trainer::new(config, data.train.len()).unwrap();
    for trainer in [&mut plain, &mut graphed] {
        trainer.to_device(device).unwrap();
    }
    graphed.use_cuda_graphs().unwrap();
    let dir = std::env::temp_dir().join(format!("em-graph-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let values = |log: &IterationLog| [log.critic_loss, log.generator_loss, log.wasserstein].map(f64::to_bits);
    for i in 1..=11 {
        if i == 4 {
            // After the capture (iteration 3): saved, and resumed in a new trainer.
            save_checkpoint(&graphed, &dir.join("c.safetensors")).unwrap();
            graphed = load_checkpoint(&dir.join("c.safetensors"), data.train.len()).unwrap();
            graphed.to_device(device).unwrap();
            graphed.use_cuda_graphs().unwrap();
        }
        if i == 8 {
            for trainer in [&mut plain, &mut graphed] {
                trainer.generator_optim.set_learning_rate(5e-5);
                trainer.critic_optim.set_learning_rate(2e-4);
            }
        }
        let before = device_counters(device).unwrap();
        let replayed = graphed.step(&data).unwrap();
        let counted = device_counters(device).unwrap().since(&before);
        let reference = plain.step(&data).unwrap();
        assert_eq!(values(&replayed), values(&reference), "iteration {i}");
        // Captured at 3, 6 (resumed at 4) and 10 (new rates at 8), replayed after.
        let graph_launch = [3, 6, 7, 10, 11].contains(&i);
        assert_eq!(
            counted.graph_launches,
            u64::from(graph_launch),
            "iteration {i}: {counted}"
        );
    }
    assert_eq!(graphed.order.position, plain.order.position);
    for ((name, a), (_, b)) in trained_state(&graphed).iter().zip(trained_state(&plain)) {
        assert!(*a == b, "{name} differs after 11 iterations");
    }
    std::fs::remove_dir_all(&dir).ok();
}
