//! Affine and convolution layers, activations, and shape adapters.

use super::init::{self, Init};
use super::{join, Module, TensorKind};
use earthmover_tensor::{Activation, ConvOptions, Tensor};
use rand::Rng;

/// Name a layer's `weight` and optional `bias` as PyTorch does.
fn visit_weight_and_bias(
    prefix: &str,
    weight: &Tensor,
    bias: Option<&Tensor>,
    visit: &mut dyn FnMut(&str, &Tensor, TensorKind),
) {
    visit(&join(prefix, "weight"), weight, TensorKind::Parameter);
    if let Some(b) = bias {
        visit(&join(prefix, "bias"), b, TensorKind::Parameter);
    }
}

/// `y = x W^T + b`, PyTorch's `nn.Linear`: `weight: [out, in]`, `bias: [out]`.
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn new<R: Rng + ?Sized>(in_features: usize, out_features: usize, init: Init, rng: &mut R) -> Linear {
        let weight = init::weight(init, &[out_features, in_features], in_features, rng);
        let bias = Some(init::bias(init, out_features, in_features, rng));
        Linear { weight, bias }
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, self.bias.as_ref())
    }
    fn forward_activated(&self, x: &Tensor, activation: Activation) -> Option<Tensor> {
        Some(x.linear_activated(&self.weight, self.bias.as_ref(), activation))
    }
    fn visit(&self, prefix: &str, visit: &mut dyn FnMut(&str, &Tensor, TensorKind)) {
        visit_weight_and_bias(prefix, &self.weight, self.bias.as_ref(), visit);
    }
}

/// PyTorch's `nn.Conv2d` with a square kernel: `weight: [out, in, k, k]`, `bias: [out]`.
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub options: ConvOptions,
}

impl Conv2d {
    pub fn new<R: Rng + ?Sized>(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        options: ConvOptions,
        init: Init,
        rng: &mut R,
    ) -> Conv2d {
        let fan_in = in_channels * kernel * kernel;
        let weight = init::weight(init, &[out_channels, in_channels, kernel, kernel], fan_in, rng);
        let bias = Some(init::bias(init, out_channels, fan_in, rng));
        Conv2d { weight, bias, options }
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.conv2d(&self.weight, self.bias.as_ref(), self.options)
    }
    fn forward_activated(&self, x: &Tensor, activation: Activation) -> Option<Tensor> {
        Some(x.conv2d_activated(&self.weight, self.bias.as_ref(), self.options, activation))
    }
    fn visit(&self, prefix: &str, visit: &mut dyn FnMut(&str, &Tensor, TensorKind)) {
        visit_weight_and_bias(prefix, &self.weight, self.bias.as_ref(), visit);
    }
}

/// PyTorch's `nn.ConvTranspose2d` with a square kernel: `weight: [in, out, k, k]`, `bias: [out]`.
pub struct ConvTranspose2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub options: ConvOptions,
}

impl ConvTranspose2d {
    pub fn new<R: Rng + ?Sized>(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        options: ConvOptions,
        init: Init,
        rng: &mut R,
    ) -> ConvTranspose2d {
        // PyTorch computes the fan-in of a transposed conv's weight [in, out, k, k] from its
        // dim 1, like any conv weight: out * k * k.
        let fan_in = out_channels * kernel * kernel;
        let weight = init::weight(init, &[in_channels, out_channels, kernel, kernel], fan_in, rng);
        let bias = Some(init::bias(init, out_channels, fan_in, rng));
        ConvTranspose2d { weight, bias, options }
    }
}

impl Module for ConvTranspose2d {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.conv_transpose2d(&self.weight, self.bias.as_ref(), self.options)
    }
    fn forward_activated(&self, x: &Tensor, activation: Activation) -> Option<Tensor> {
        Some(x.conv_transpose2d_activated(&self.weight, self.bias.as_ref(), self.options, activation))
    }
    fn visit(&self, prefix: &str, visit: &mut dyn FnMut(&str, &Tensor, TensorKind)) {
        visit_weight_and_bias(prefix, &self.weight, self.bias.as_ref(), visit);
    }
}

/// An activation function as a layer (the tensor crate's [`Activation`]).
impl Module for Activation {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.activation(*self)
    }
    fn visit(&self, _: &str, _: &mut dyn FnMut(&str, &Tensor, TensorKind)) {}
    fn as_activation(&self) -> Option<Activation> {
        Some(*self)
    }
}

/// Reshape `[N, features]` to `[N, shape...]` (PyTorch's `nn.Unflatten(1, shape)`); with an
/// empty shape list it flattens `[N, ...]` to `[N, features]` instead.
pub struct Unflatten(pub Vec<usize>);

impl Module for Unflatten {
    fn forward(&self, x: &Tensor) -> Tensor {
        if self.0.is_empty() {
            return x.flatten(1);
        }
        let mut shape = vec![x.shape()[0]];
        shape.extend(&self.0);
        x.reshape(&shape)
    }
    fn visit(&self, _: &str, _: &mut dyn FnMut(&str, &Tensor, TensorKind)) {}
}

/// Keep the top-left `h x w` of each feature map (the DCGAN generator crops 8x8 to 7x7).
pub struct Crop2d(pub usize, pub usize);

impl Module for Crop2d {
    fn forward(&self, x: &Tensor) -> Tensor {
        // One copy of the box, not a narrow per dim (one launch each on a GPU).
        let [n, c, _, _] = x
            .shape()
            .try_into()
            .unwrap_or_else(|_| panic!("Crop2d: expects [N, C, H, W], got shape {:?}", x.shape()));
        x.narrow_box(&[0, 0, 0, 0], &[n, c, self.0, self.1])
    }
    fn visit(&self, _: &str, _: &mut dyn FnMut(&str, &Tensor, TensorKind)) {}
}
