//! The `eval` command: score a trained generator's samples beside the real images'.

use crate::quality::{QualityProbe, Ruler};
use crate::EvalArgs;
use earthmover_wgan::checkpoint::load_generator;
use earthmover_wgan::data::Mnist;
use earthmover_wgan::{bail, Result};

/// Score `--n` samples of the generator in `--checkpoint` and print them beside the real
/// images (the built-in digits, or `--data`), measured by `--classifier` or the digit
/// classifier.
pub fn eval(args: &EvalArgs) -> Result<()> {
    let n = args.n;
    if n < 2 {
        bail!("--n must be at least 2");
    }
    // The samples are kept until scored (784 values each, and their features): more than the
    // machine holds would abort the process at an allocation, not end in an error.
    if let Some(total) = crate::train::memory_total_bytes() {
        let bytes = 2.0 * 4.0 * 784.0 * n as f64;
        if bytes > total as f64 {
            bail!(
                "--n {n} samples would need about {:.0} GB of memory, more than this machine's {:.0} GB",
                bytes / 1e9,
                total as f64 / 1e9
            );
        }
    }
    let (generator, config) = load_generator(&args.checkpoint)?;
    let data = match &args.data {
        Some(dir) => Mnist::load_dir(dir)?,
        None => crate::embedded::load()?,
    };
    let probe = QualityProbe::new(&data, Ruler::choose(args.classifier.as_deref(), args.data.is_none()))?;
    let generated = probe.measure(&generator, n, args.seed);
    let real = &probe.real;
    println!(
        "{} ({}, dim {}), {n} samples, scored against the {} test images by {}",
        args.checkpoint.display(),
        config.algo,
        config.dim,
        data.test.len(),
        probe.ruler()
    );
    println!("{:<32} {:>12} {:>12}", "", "generated", "real");
    println!(
        "{:<32} {:>12.3} {:>12.3}",
        "Frechet distance to test", generated.frechet_distance, real.frechet_distance
    );
    if let (Some(generated), Some(real)) = (&generated.classes, &real.classes) {
        let (g, r) = (&generated.coverage, &real.coverage);
        println!(
            "{:<32} {:>12.3} {:>12.3}",
            "classifier score (1-10)", generated.classifier_score, real.classifier_score
        );
        println!("{:<32} {:>12} {:>12}", "classes covered", g.covered, r.covered);
        println!(
            "{:<32} {:>12.4} {:>12.4}",
            "KL(class histogram || uniform)", g.kl_from_uniform, r.kl_from_uniform
        );
        println!(
            "{:<32} {:>12.3} {:>12.3}",
            "confidently classified (p>=0.9)", g.confident_share, r.confident_share
        );
        println!("class histogram of the samples: {:?}", g.histogram);
    }
    println!("(real: the test split itself; its Frechet distance is the train split's to the test split)");
    Ok(())
}
