//! The `train-classifier` command: train the digit classifier behind the quality metrics.

use earthmover_wgan::checkpoint::save_module;
use earthmover_wgan::classifier::Classifier;
use earthmover_wgan::data::Mnist;
use earthmover_wgan::io::ensure_writable_dir;
use earthmover_wgan::{bail, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::path::Path;

/// Train the classifier for `epochs` passes (on `data`, or the built-in digits) and save it to
/// `out` with its test accuracy.
pub fn train_classifier(epochs: usize, out: &Path, data: Option<&Path>, seed: u64) -> Result<()> {
    if epochs == 0 {
        bail!("--epochs must be at least 1");
    }
    let data = match data {
        Some(dir) => Mnist::load_dir(dir)?,
        None => crate::embedded::load()?,
    };
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        ensure_writable_dir(parent)?;
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let classifier = Classifier::new(&mut rng);
    let start = std::time::Instant::now();
    classifier.fit(&data.train, epochs, &mut rng, |epoch, loss| {
        eprintln!(
            "epoch {epoch}: mean cross-entropy {loss:.4} ({:.0} s)",
            start.elapsed().as_secs_f64()
        );
    });
    let accuracy = classifier.accuracy(&data.test);
    let command = format!("wgan-mnist train-classifier --epochs {epochs} --seed {seed}");
    let metadata = std::collections::HashMap::from([
        ("format".to_string(), "earthmover-mnist-classifier-1".to_string()),
        ("command".to_string(), command),
        ("train_images".to_string(), data.train.len().to_string()),
        ("test_accuracy".to_string(), format!("{accuracy:.4}")),
    ]);
    save_module(&classifier, metadata, out)?;
    eprintln!(
        "test accuracy {:.2}% on {} images; wrote {} in {:.0} s",
        100.0 * accuracy,
        data.test.len(),
        out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
