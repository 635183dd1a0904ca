//! A chain of layers.

use super::{join, Module, TensorKind};
use earthmover_tensor::Tensor;

/// Layers applied in order. Children are named like PyTorch's `nn.Sequential`: by index
/// (`0.weight`), or by the names given to [`Sequential::named`].
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
        self.layers.iter().fold(x.clone(), |h, (_, layer)| layer.forward(&h))
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
