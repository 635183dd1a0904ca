//! A chain of layers.

use super::{join, Module, TensorKind};
use earthmover_tensor::Tensor;

/// Layers applied in order. Children are named like PyTorch's `nn.Sequential`: by index
/// (`0.weight`), or by the names given to [`Sequential::named`].
///
/// A layer followed by an activation layer runs as one op where the layer can fuse them
/// ([`Module::forward_activated`]: a convolution then a ReLU, for instance): the same values
/// and gradients, one stored tensor fewer, and on the CPU one pass fewer.
#[derive(Default)]
pub struct Sequential {
    layers: Vec<(String, Box<dyn Module>)>,
}

impl Sequential {
    pub fn new() -> Sequential {
        Sequential::default()
    }

    /// Append a layer named by its index.
    pub fn push(mut self, layer: impl Module + 'static) -> Sequential {
        let name = self.layers.len().to_string();
        self.layers.push((name, Box::new(layer)));
        self
    }

    /// Append a layer under a name of its own.
    pub fn named(mut self, name: &str, layer: impl Module + 'static) -> Sequential {
        self.layers.push((name.to_string(), Box::new(layer)));
        self
    }

    pub fn len(&self) -> usize {
        self.layers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

impl Module for Sequential {
    fn forward(&self, x: &Tensor) -> Tensor {
        let mut h = x.clone();
        let mut layers = self.layers.iter().map(|(_, layer)| layer).peekable();
        while let Some(layer) = layers.next() {
            let activation = layers.peek().and_then(|next| next.as_activation());
            let fused = activation.and_then(|act| layer.forward_activated(&h, act));
            h = match fused {
                Some(y) => {
                    layers.next(); // the activation, applied already
                    y
                }
                None => layer.forward(&h),
            };
        }
        h
    }
    fn visit(&self, prefix: &str, visit: &mut dyn FnMut(&str, &Tensor, TensorKind)) {
        for (name, layer) in &self.layers {
            layer.visit(&join(prefix, name), visit);
        }
    }
    fn set_training(&self, training: bool) {
        for (_, layer) in &self.layers {
            layer.set_training(training);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::init::Init;
    use crate::nn::{Activation, Conv2d, ConvTranspose2d, Crop2d};
    use earthmover_tensor::{grad, ConvOptions, DType};
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn a_convolution_and_the_activation_after_it_run_as_one_op_with_the_same_results() {
        let mut rng = StdRng::seed_from_u64(3);
        let (down, up) = (
            ConvOptions::new().stride(2).padding(2),
            ConvOptions::new().stride(2).padding(1),
        );
        let net = Sequential::new()
            .named("conv", Conv2d::new(2, 7, 5, down, Init::PyTorch, &mut rng))
            .named("lrelu", Activation::LeakyRelu(0.2))
            .named("deconv", ConvTranspose2d::new(7, 3, 4, up, Init::PyTorch, &mut rng))
            .named("relu", Activation::Relu)
            // An activation after a layer that does not fuse: applied on its own.
            .named("crop", Crop2d(5, 5))
            .named("tanh", Activation::Tanh);
        let x = Tensor::randn(&[3, 2, 11, 9], DType::F32, 4).requires_grad_(true);
        // The same layers one by one, unfused.
        let separate = |x: &Tensor| net.layers.iter().fold(x.clone(), |h, (_, layer)| layer.forward(&h));
        let (y, y_separate) = (net.forward(&x), separate(&x));
        assert_eq!(y.to_vec_f32(), y_separate.to_vec_f32());
        // Fused, the activation leaves no node of its own.
        let first_two = Sequential::new()
            .push(Conv2d::new(2, 7, 5, down, Init::PyTorch, &mut rng))
            .push(Activation::LeakyRelu(0.2));
        assert_eq!(first_two.forward(&x).grad_fn_name(), Some("conv2d_activated"));
        assert_eq!(y.grad_fn_name(), Some("tanh"));
        let params = net.parameters();
        let inputs: Vec<&Tensor> = std::iter::once(&x).chain(&params).collect();
        let grads = grad(&[&y.square().sum()], &inputs, None, false);
        let grads_separate = grad(&[&y_separate.square().sum()], &inputs, None, false);
        for (g, s) in grads.iter().zip(&grads_separate) {
            assert_eq!(g.to_vec_f32(), s.to_vec_f32());
        }
    }
}
