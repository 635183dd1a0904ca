//! The default dataset, compiled into the binary: 10,000 real MNIST digits (9,000 train, 1,000
//! test) from `data/mnist/` (see its README for provenance and licence), so that the run
//! command works offline on a fresh clone.

use earthmover_wgan::data::{Mnist, MNIST_FILES};
use earthmover_wgan::Result;

const TRAIN_IMAGES: &[u8] = include_bytes!("../../../data/mnist/train-images-idx3-ubyte.gz");
const TRAIN_LABELS: &[u8] = include_bytes!("../../../data/mnist/train-labels-idx1-ubyte.gz");
const TEST_IMAGES: &[u8] = include_bytes!("../../../data/mnist/t10k-images-idx3-ubyte.gz");
const TEST_LABELS: &[u8] = include_bytes!("../../../data/mnist/t10k-labels-idx1-ubyte.gz");

pub fn load() -> Result<Mnist> {
    let name = |i: usize| MNIST_FILES[i];
    Mnist::from_files([
        (name(0), TRAIN_IMAGES),
        (name(1), TRAIN_LABELS),
        (name(2), TEST_IMAGES),
        (name(3), TEST_LABELS),
    ])
}

/// The committed digit classifier of the quality metrics (data/classifier/README.md).
pub const CLASSIFIER: &[u8] = include_bytes!("../../../data/classifier/mnist-cnn.safetensors");
