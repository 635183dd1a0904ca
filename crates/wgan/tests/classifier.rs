//! The committed classifier weights (data/classifier/mnist-cnn.safetensors, trained by
//! `cargo run --release -p wgan-mnist -- train-classifier`) still load and still reach 98% on
//! the test split: the quality metrics stand on them.

use earthmover_wgan::checkpoint::load_module;
use earthmover_wgan::classifier::Classifier;
use earthmover_wgan::data::Mnist;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::path::Path;

#[test]
fn committed_classifier_reaches_98_percent_on_the_test_split() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let data = Mnist::load_dir(&root.join("data/mnist")).unwrap();
    let classifier = Classifier::new(&mut StdRng::seed_from_u64(1));
    let untrained = classifier.accuracy(&data.test);
    let metadata = load_module(&classifier, &root.join("data/classifier/mnist-cnn.safetensors")).unwrap();
    assert!(metadata["command"].contains("train-classifier"), "{metadata:?}");
    let accuracy = classifier.accuracy(&data.test);
    assert!(accuracy >= 0.98, "test accuracy {accuracy}");
    assert!(
        untrained < 0.5,
        "a random network scored {untrained}: the check would not tell"
    );
}
