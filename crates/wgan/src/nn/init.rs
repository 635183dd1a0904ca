//! Weight initialisers.
//!
//! PyTorch's defaults for `Linear` and `Conv*`: weights from kaiming-uniform with `a = sqrt(5)`,
//! which is uniform on `+-1/sqrt(fan_in)`, and biases uniform on `+-1/sqrt(fan_in)`. DCGAN's:
//! weights from normal(0, 0.02), biases 0.

use earthmover_tensor::{DType, Tensor};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// How to initialise a new layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Init {
    /// PyTorch's default for the layer type.
    #[default]
    #[serde(rename = "pytorch")]
    PyTorch,
    /// normal(0, 0.02) weights and zero biases (Radford et al.'s DCGAN).
    #[serde(rename = "dcgan")]
    Dcgan,
}

impl std::str::FromStr for Init {
    type Err = String;
    fn from_str(s: &str) -> Result<Init, String> {
        match s {
            "pytorch" => Ok(Init::PyTorch),
            "dcgan" => Ok(Init::Dcgan),
            other => Err(format!("unknown initialisation `{other}`: expected pytorch or dcgan")),
        }
    }
}

impl std::fmt::Display for Init {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Init::PyTorch => "pytorch",
            Init::Dcgan => "dcgan",
        })
    }
}

/// A weight of `shape` whose fan-in is `fan_in`.
pub fn weight<R: Rng + ?Sized>(init: Init, shape: &[usize], fan_in: usize, rng: &mut R) -> Tensor {
    match init {
        Init::PyTorch => uniform(shape, 1.0 / (fan_in as f64).sqrt(), rng),
        Init::Dcgan => Tensor::randn_with(shape, DType::F32, rng).mul_scalar(0.02).detach(),
    }
    .requires_grad_(true)
}

/// A bias of `len` values for a layer whose fan-in is `fan_in`.
pub fn bias<R: Rng + ?Sized>(init: Init, len: usize, fan_in: usize, rng: &mut R) -> Tensor {
    match init {
        Init::PyTorch => uniform(&[len], 1.0 / (fan_in as f64).sqrt(), rng),
        Init::Dcgan => Tensor::zeros(&[len], DType::F32),
    }
    .requires_grad_(true)
}

fn uniform<R: Rng + ?Sized>(shape: &[usize], bound: f64, rng: &mut R) -> Tensor {
    Tensor::rand_uniform_with(shape, -bound, bound, DType::F32, rng)
}
