//! Layers, shaped like PyTorch's `torch.nn`: each holds its parameters as tensors in PyTorch's
//! layouts and names them with dotted paths (`conv2.weight`), so that a state dict maps one to
//! one onto a PyTorch model's.

pub mod init;
mod layers;
mod norm;
mod sequential;

pub use earthmover_tensor::Activation;
pub use layers::{Conv2d, ConvTranspose2d, Crop2d, Linear, Unflatten};
pub use norm::{BatchNorm, LayerNorm};
pub use sequential::Sequential;

use earthmover_tensor::{DType, Tensor};

/// Whether a named tensor is trained (a parameter) or only tracked (a buffer, such as
/// batch-norm's running statistics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorKind {
    Parameter,
    Buffer,
}

/// A layer or a model: a forward pass and named tensors.
pub trait Module: Send + Sync {
    fn forward(&self, x: &Tensor) -> Tensor;

    /// Call `visit` on every parameter and buffer, named `prefix` + its dotted path.
    fn visit(&self, prefix: &str, visit: &mut dyn FnMut(&str, &Tensor, TensorKind));

    /// Switch between training and evaluation behaviour (batch-norm's statistics).
    fn set_training(&self, _training: bool) {}

    /// `activation(self.forward(x))` as one op, where the layer can fuse the two (the
    /// convolutions apply it as they write their output); `None` where it cannot.
    /// [`Sequential`] calls it for a layer followed by an activation layer.
    fn forward_activated(&self, _x: &Tensor, _activation: Activation) -> Option<Tensor> {
        None
    }

    /// The activation this layer applies, if it is an activation layer and nothing else.
    fn as_activation(&self) -> Option<Activation> {
        None
    }

    /// Parameters in registration order.
    fn parameters(&self) -> Vec<Tensor> {
        self.named_parameters().into_iter().map(|(_, t)| t).collect()
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.named_tensors(Some(TensorKind::Parameter))
    }

    /// Parameters and buffers: what a checkpoint saves.
    fn state_dict(&self) -> Vec<(String, Tensor)> {
        self.named_tensors(None)
    }

    fn named_tensors(&self, kind: Option<TensorKind>) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        self.visit("", &mut |name, t, k| {
            if kind.is_none_or(|want| want == k) {
                out.push((name.to_string(), t.clone()));
            }
        });
        out
    }

    /// Convert every parameter and buffer to `dtype` in place, as PyTorch's `model.to(dtype)`:
    /// `to_dtype(DType::F64)` is `model.double()`, `to_dtype(DType::F32)` is `model.float()`.
    /// Parameters keep requiring grad; inputs must then be of the same dtype. Optimisers
    /// built over the parameters before keep state of the old dtype: build them after.
    fn to_dtype(&self, dtype: DType) {
        self.visit("", &mut |_, t, _| t.to_dtype_(dtype));
    }

    /// The dtype of the first parameter or buffer (f32 for a module without any): what its
    /// inputs should be.
    fn dtype(&self) -> DType {
        let mut dtype = None;
        self.visit("", &mut |_, t, _| {
            dtype.get_or_insert(t.dtype());
        });
        dtype.unwrap_or(DType::F32)
    }

    /// Forget every parameter's gradient.
    fn zero_grad(&self) {
        for p in self.parameters() {
            p.zero_grad();
        }
    }

    /// The number of trainable values.
    fn num_parameters(&self) -> usize {
        self.parameters().iter().map(|p| p.numel()).sum()
    }
}

/// `prefix.name`, or `name` at the top.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}
