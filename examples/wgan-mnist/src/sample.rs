//! The `sample` command, and drawing from a generator without changing its state (also for
//! the training run's sample grids and the quality probe).

use earthmover_tensor::{Device, Tensor};
use earthmover_wgan::checkpoint::load_generator;
use earthmover_wgan::io::write_atomic;
use earthmover_wgan::models::Generator;
use earthmover_wgan::nn::Module;
use earthmover_wgan::plot::sample_grid;
use earthmover_wgan::{bail, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::path::Path;

/// Generator output in evaluation mode (batch-norm uses its running statistics and does not
/// update them), so that drawing samples never changes the training state; on the CPU,
/// wherever the generator is, and the noise converted to the generator's dtype.
pub fn sample_eval(generator: &Generator, noise: &Tensor) -> Tensor {
    let device = generator.parameters().first().map_or(Device::Cpu, |p| p.device());
    let noise = noise.to_dtype(generator.dtype());
    generator.set_training(false);
    let images =
        earthmover_tensor::no_grad(|| generator.forward(&noise.to_device(device).expect("the generator's device")));
    generator.set_training(true);
    images.to_device(Device::Cpu).expect("the CPU is always available")
}

/// The most samples `sample` draws into one grid: 100 x 100 digits, a PNG of about 3,000 pixels
/// a side (a larger `--n` would ask for an image, and memory, out of all proportion).
pub const MAX_GRID_SAMPLES: usize = 10_000;

/// Samples the generator draws at a time, so that memory stays that of one batch.
const SAMPLE_BATCH: usize = 500;

/// Draw `n` digits from the generator in `checkpoint` (noise from `seed`) into the PNG grid `out`.
pub fn sample(checkpoint: &Path, n: usize, out: &Path, seed: u64) -> Result<()> {
    if n == 0 || n > MAX_GRID_SAMPLES {
        bail!("--n must be between 1 and {MAX_GRID_SAMPLES} (one grid of at most 100 x 100 digits), got {n}");
    }
    let (generator, _) = load_generator(checkpoint)?;
    let noise = Generator::noise(n, &mut StdRng::seed_from_u64(seed));
    let batches: Vec<Tensor> = (0..n)
        .step_by(SAMPLE_BATCH)
        .map(|first| sample_eval(&generator, &noise.narrow(0, first, SAMPLE_BATCH.min(n - first))))
        .collect();
    let images = Tensor::concat(&batches.iter().collect::<Vec<_>>(), 0);
    let columns = (n as f64).sqrt().ceil() as usize;
    write_atomic(out, &sample_grid(&images, generator.output_range, columns, 2))?;
    eprintln!("wrote {n} samples to {}", out.display());
    Ok(())
}
