//! The `eval` command: score a trained generator's samples beside the real digits'.

use crate::quality::QualityProbe;
use earthmover_wgan::checkpoint::load_generator;
use earthmover_wgan::{bail, Result};
use std::path::Path;

/// Score `n` samples of the generator in `checkpoint` and print them beside the real digits.
pub fn eval(checkpoint: &Path, n: usize, seed: u64) -> Result<()> {
    if n < 2 {
        bail!("--n must be at least 2");
    }
    let (generator, config) = load_generator(checkpoint)?;
    let data = crate::embedded::load()?;
    let probe = QualityProbe::new(&data)?;
    let generated = probe.measure(&generator, n, seed);
    let real = &probe.real;
    println!(
        "{} ({}, dim {}), {n} samples, scored against the {} test digits",
        checkpoint.display(),
        config.algo,
        config.dim,
        data.test.len()
    );
    println!("{:<32} {:>12} {:>12}", "", "generated", "real");
    println!(
        "{:<32} {:>12.3} {:>12.3}",
        "classifier score (1-10)", generated.classifier_score, real.classifier_score
    );
    println!(
        "{:<32} {:>12.3} {:>12.3}",
        "Frechet distance to test", generated.frechet_distance, real.frechet_distance
    );
    println!(
        "{:<32} {:>12} {:>12}",
        "classes covered", generated.coverage.covered, real.coverage.covered
    );
    println!(
        "{:<32} {:>12.4} {:>12.4}",
        "KL(class histogram || uniform)", generated.coverage.kl_from_uniform, real.coverage.kl_from_uniform
    );
    println!(
        "{:<32} {:>12.3} {:>12.3}",
        "confidently classified (p>=0.9)", generated.coverage.confident_share, real.coverage.confident_share
    );
    println!("class histogram of the samples: {:?}", generated.coverage.histogram);
    println!("(real: the test split itself; its Frechet distance is the train split's to the test split)");
    Ok(())
}
