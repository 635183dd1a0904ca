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

/// Draw `n` digits from the generator in `checkpoint` (noise from `seed`) into the PNG grid `out`.
pub fn sample(checkpoint: &Path, n: usize, out: &Path, seed: u64) -> Result<()> {
    if n == 0 {
        bail!("--n must be at least 1");
    }
    let (generator, _) = load_generator(checkpoint)?;
    let noise = Generator::noise(n, &mut StdRng::seed_from_u64(seed));
    let images = sample_eval(&generator, &noise);
    let columns = (n as f64).sqrt().ceil() as usize;
    write_atomic(out, &sample_grid(&images, generator.output_range, columns, 2))?;
    eprintln!("wrote {n} samples to {}", out.display());
    Ok(())
}
