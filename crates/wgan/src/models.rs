//! The generator and critic networks: the DCGAN-style pair of the WGAN-GP paper's MNIST code,
//! and a multilayer-perceptron pair.

use crate::nn::init::Init;
use crate::nn::{
    Activation, BatchNorm, Conv2d, ConvTranspose2d, LayerNorm, Linear, Module, Sequential, TensorKind, Unflatten,
};
use earthmover_tensor::{ConvOptions, DType, Tensor};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The size of the generator's input noise.
pub const LATENT_DIM: usize = 128;

/// Which pair of networks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// Convolutional: the WGAN-GP paper's MNIST networks, width `dim`.
    Dcgan,
    /// Fully connected: generator z -> 128 -> 256 -> 784 with batch-norm and tanh, critic
    /// 784 -> 128 -> 64 -> 1 with leaky_relu.
    Mlp,
}

/// How the critic normalises its hidden layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CriticNorm {
    #[serde(rename = "none")]
    /// None: WGAN-GP's default, since batch-norm couples the samples of a batch and breaks the
    /// per-sample gradient penalty.
    None,
    #[serde(rename = "layer")]
    /// Layer-norm over each sample's features: per sample, so safe with the penalty.
    LayerNorm,
    #[serde(rename = "batch")]
    /// Batch-norm: allowed with weight clipping and the standard GAN only.
    BatchNorm,
}

macro_rules! str_enum {
    ($t:ty, $what:literal, $($name:literal => $v:expr),+) => {
        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($name => Ok($v),)+
                    other => Err(format!(concat!("unknown ", $what, " `{}`: expected one of {}"), other, [$($name),+].join(", "))),
                }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                $(if *self == $v { return f.write_str($name); })+
                unreachable!()
            }
        }
    };
}
str_enum!(ModelKind, "model", "dcgan" => ModelKind::Dcgan, "mlp" => ModelKind::Mlp);
str_enum!(CriticNorm, "critic normalisation", "none" => CriticNorm::None, "layer" => CriticNorm::LayerNorm, "batch" => CriticNorm::BatchNorm);

/// Maps noise `[N, 128]` to images `[N, 1, 28, 28]`.
pub struct Generator {
    net: Sequential,
    /// The range of the output pixels: (0, 1) after a sigmoid, (-1, 1) after a tanh.
    pub output_range: (f64, f64),
}

/// Maps images `[N, 1, 28, 28]` to scores `[N, 1]`.
pub struct Critic {
    net: Sequential,
}

impl Generator {
    pub fn new<R: Rng + ?Sized>(kind: ModelKind, dim: usize, init: Init, rng: &mut R) -> Generator {
        match kind {
            ModelKind::Dcgan => {
                let up = ConvOptions::new().stride(2).padding(2).output_padding(1);
                // The reference's first transposed convolution makes 8x8 maps and crops them to
                // 7x7; without the output padding it makes those 7x7 directly: the same values
                // (each output pixel sums the same taps, in the same order), and the eighth row
                // and column, which the crop dropped, are never computed (11% of the layer's
                // multiply-adds, and the crop's copy and its gradient's padded copy).
                let up_to_7 = ConvOptions::new().stride(2).padding(2);
                let net = Sequential::new()
                    .named("fc", Linear::new(LATENT_DIM, 4 * 4 * 4 * dim, init, rng))
                    .named("relu0", Activation::Relu)
                    .named("unflatten", Unflatten(vec![4 * dim, 4, 4]))
                    .named("deconv1", ConvTranspose2d::new(4 * dim, 2 * dim, 5, up_to_7, init, rng)) // 7x7
                    .named("relu1", Activation::Relu)
                    .named("deconv2", ConvTranspose2d::new(2 * dim, dim, 5, up, init, rng)) // 14x14
                    .named("relu2", Activation::Relu)
                    .named("deconv3", ConvTranspose2d::new(dim, 1, 5, up, init, rng)) // 28x28
                    .named("sigmoid", Activation::Sigmoid);
                Generator {
                    net,
                    output_range: (0.0, 1.0),
                }
            }
            ModelKind::Mlp => {
                let net = Sequential::new()
                    .named("fc1", Linear::new(LATENT_DIM, 128, init, rng))
                    .named("bn1", BatchNorm::new(128))
                    .named("relu1", Activation::Relu)
                    .named("fc2", Linear::new(128, 256, init, rng))
                    .named("bn2", BatchNorm::new(256))
                    .named("relu2", Activation::Relu)
                    .named("fc3", Linear::new(256, 784, init, rng))
                    .named("tanh", Activation::Tanh)
                    .named("unflatten", Unflatten(vec![1, 28, 28]));
                Generator {
                    net,
                    output_range: (-1.0, 1.0),
                }
            }
        }
    }

    /// Standard normal noise for `n` samples, in f32 (the dtype of a new generator; see
    /// [`Generator::noise_like`] for one converted with [`Module::to_dtype`]).
    pub fn noise<R: Rng + ?Sized>(n: usize, rng: &mut R) -> Tensor {
        Generator::noise_of(n, DType::F32, rng)
    }

    /// Standard normal noise for `n` samples in `dtype`. The same `rng` gives the same values
    /// in each dtype (drawn in f64, then rounded).
    pub fn noise_of<R: Rng + ?Sized>(n: usize, dtype: DType, rng: &mut R) -> Tensor {
        Tensor::randn_with(&[n, LATENT_DIM], dtype, rng)
    }

    /// Noise for `n` samples in this generator's dtype (on the CPU).
    pub fn noise_like<R: Rng + ?Sized>(&self, n: usize, rng: &mut R) -> Tensor {
        Generator::noise_of(n, self.dtype(), rng)
    }
}

impl Critic {
    pub fn new<R: Rng + ?Sized>(kind: ModelKind, dim: usize, norm: CriticNorm, init: Init, rng: &mut R) -> Critic {
        let normalise = |net: Sequential, name: &str, shape: &[usize]| match norm {
            CriticNorm::None => net,
            CriticNorm::LayerNorm => net.named(name, LayerNorm::new(shape)),
            CriticNorm::BatchNorm => net.named(name, BatchNorm::new(shape[0])),
        };
        let lrelu = Activation::LeakyRelu(0.2);
        let net = match kind {
            ModelKind::Dcgan => {
                let down = ConvOptions::new().stride(2).padding(2);
                let net = Sequential::new()
                    .named("conv1", Conv2d::new(1, dim, 5, down, init, rng)) // 14x14
                    .named("lrelu1", lrelu)
                    .named("conv2", Conv2d::new(dim, 2 * dim, 5, down, init, rng)); // 7x7
                let net = normalise(net, "norm2", &[2 * dim, 7, 7])
                    .named("lrelu2", lrelu)
                    .named("conv3", Conv2d::new(2 * dim, 4 * dim, 5, down, init, rng)); // 4x4
                normalise(net, "norm3", &[4 * dim, 4, 4])
                    .named("lrelu3", lrelu)
                    .named("flatten", Unflatten(vec![]))
                    .named("fc", Linear::new(4 * 4 * 4 * dim, 1, init, rng))
            }
            ModelKind::Mlp => {
                let net = Sequential::new()
                    .named("flatten", Unflatten(vec![]))
                    .named("fc1", Linear::new(784, 128, init, rng));
                let net = normalise(net, "norm1", &[128])
                    .named("lrelu1", lrelu)
                    .named("fc2", Linear::new(128, 64, init, rng));
                normalise(net, "norm2", &[64])
                    .named("lrelu2", lrelu)
                    .named("fc3", Linear::new(64, 1, init, rng))
            }
        };
        Critic { net }
    }
}

macro_rules! delegate_module {
    ($t:ty) => {
        impl Module for $t {
            fn forward(&self, x: &Tensor) -> Tensor {
                self.net.forward(x)
            }
            fn visit(&self, prefix: &str, visit: &mut dyn FnMut(&str, &Tensor, TensorKind)) {
                self.net.visit(prefix, visit)
            }
            fn set_training(&self, training: bool) {
                self.net.set_training(training)
            }
        }
    };
}
delegate_module!(Generator);
delegate_module!(Critic);

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn reference_networks_have_the_papers_shapes_and_names() {
        let mut rng = StdRng::seed_from_u64(0);
        let g = Generator::new(ModelKind::Dcgan, 8, Init::Dcgan, &mut rng);
        let c = Critic::new(ModelKind::Dcgan, 8, CriticNorm::None, Init::Dcgan, &mut rng);
        let z = Generator::noise(3, &mut rng);
        let x = g.forward(&z);
        assert_eq!(x.shape(), &[3, 1, 28, 28]);
        assert_eq!(c.forward(&x).shape(), &[3, 1]);
        let names: Vec<String> = c.named_parameters().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "conv1.weight",
                "conv1.bias",
                "conv2.weight",
                "conv2.bias",
                "conv3.weight",
                "conv3.bias",
                "fc.weight",
                "fc.bias"
            ]
        );
        let shapes: Vec<Vec<usize>> = g
            .named_parameters()
            .into_iter()
            .map(|(_, t)| t.shape().to_vec())
            .collect();
        assert_eq!(shapes[0], vec![4 * 4 * 4 * 8, 128]);
        assert_eq!(
            shapes[2],
            vec![32, 16, 5, 5],
            "conv-transpose weights are [in, out, k, k]"
        );
    }

    /// The generator's first transposed convolution made at 7x7 (no output padding) gives the
    /// reference's 8x8 cropped to 7x7 bit for bit, and its gradients to rounding: the same sums,
    /// but the weight's and the bias's group the pixels of 49-pixel maps, not of 64-pixel maps
    /// whose extra pixels add zeros (DIM 8, a batch of 3, in f32 on this process's SIMD path).
    #[test]
    fn direct_7x7_is_the_cropped_8x8() {
        let mut rng = StdRng::seed_from_u64(2);
        let h = Tensor::randn_with(&[3, 32, 4, 4], DType::F32, &mut rng).requires_grad_(true);
        let w = Tensor::randn_with(&[32, 16, 5, 5], DType::F32, &mut rng).requires_grad_(true);
        let b = Tensor::randn_with(&[16], DType::F32, &mut rng).requires_grad_(true);
        let upstream = Tensor::randn_with(&[3, 16, 7, 7], DType::F32, &mut rng);
        let run = |output_padding: usize| {
            let opts = ConvOptions::new().stride(2).padding(2).output_padding(output_padding);
            let y = h.conv_transpose2d_activated(&w, Some(&b), opts, Activation::Relu);
            let y = if output_padding == 1 {
                assert_eq!(y.shape(), &[3, 16, 8, 8]);
                y.narrow_box(&[0, 0, 0, 0], &[3, 16, 7, 7])
            } else {
                y
            };
            let grads = earthmover_tensor::grad(&[&y.mul(&upstream).sum()], &[&h, &w, &b], None, false);
            (y.to_vec_f64(), grads.iter().map(Tensor::to_vec_f64).collect::<Vec<_>>())
        };
        let ((direct, direct_grads), (cropped, cropped_grads)) = (run(0), run(1));
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&direct), bits(&cropped), "values");
        for (name, (a, b)) in ["input", "weight", "bias"]
            .iter()
            .zip(direct_grads.iter().zip(&cropped_grads))
        {
            let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            let worst = a.iter().zip(b).fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
            assert!(
                a.len() == b.len() && worst <= 1e-5 * scale,
                "{name} gradient: off by {worst} (scale {scale})"
            );
        }
    }

    #[test]
    fn mlp_pair_and_every_critic_norm_run() {
        let mut rng = StdRng::seed_from_u64(1);
        let g = Generator::new(ModelKind::Mlp, 0, Init::PyTorch, &mut rng);
        let x = g.forward(&Generator::noise(4, &mut rng));
        assert_eq!(x.shape(), &[4, 1, 28, 28]);
        for kind in [ModelKind::Mlp, ModelKind::Dcgan] {
            for norm in [CriticNorm::None, CriticNorm::LayerNorm, CriticNorm::BatchNorm] {
                let c = Critic::new(kind, 4, norm, Init::PyTorch, &mut rng);
                assert_eq!(c.forward(&x).shape(), &[4, 1], "{kind} {norm}");
            }
        }
        assert_eq!("layer".parse::<CriticNorm>(), Ok(CriticNorm::LayerNorm));
        assert!("group"
            .parse::<CriticNorm>()
            .unwrap_err()
            .contains("none, layer, batch"));
    }
}
