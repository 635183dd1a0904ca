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
pub fn train_classifier(epochs: usize, out: &Path, data_dir: Option<&Path>, seed: u64) -> Result<()> {
    if epochs == 0 {
        bail!("--epochs must be at least 1");
    }
    let data = match data_dir {
        Some(dir) => Mnist::load_dir(dir)?,
        None => crate::embedded::load()?,
    };
    // The classifier has ten classes (its head and the quality metrics' class columns).
    if let Some(label) = data.train.labels.iter().chain(&data.test.labels).find(|&&l| l >= 10) {
        bail!("the classifier has 10 classes (labels 0-9), but this data has label {label}");
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        ensure_writable_dir(parent)?;
    }
    // Before the training, not after it: the weights are written onto `out` by a rename.
    if out.is_dir() {
        bail!(
            "--out {} is a folder; give the file to write the weights to",
            out.display()
        );
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
    let data_flag = data_dir.map_or(String::new(), |d| format!(" --data {}", d.display()));
    let command = format!("wgan-mnist train-classifier --epochs {epochs} --seed {seed}{data_flag}");
    let metadata = std::collections::HashMap::from([
        ("format".to_string(), crate::quality::CLASSIFIER_FORMAT.to_string()),
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
