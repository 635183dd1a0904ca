//! Batch-norm and layer-norm layers.

use super::{join, Module, TensorKind};
use earthmover_tensor::{no_grad, DType, Tensor};
use std::sync::atomic::{AtomicBool, Ordering};

/// PyTorch's `nn.BatchNorm1d` (input `[N, C]`) and `nn.BatchNorm2d` (input `[N, C, H, W]`): in
/// training, normalise each channel with the batch's mean and (biased) variance and update the
/// running statistics (momentum 0.1, unbiased variance, as PyTorch); in evaluation, normalise
/// with the running statistics.
pub struct BatchNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    /// PyTorch's `num_batches_tracked`, kept so that state dicts match one to one.
    pub num_batches_tracked: Tensor,
    pub eps: f64,
    pub momentum: f64,
    training: AtomicBool,
}

impl BatchNorm {
    pub fn new(channels: usize) -> BatchNorm {
        BatchNorm {
            weight: Tensor::ones(&[channels], DType::F32).requires_grad_(true),
            bias: Tensor::zeros(&[channels], DType::F32).requires_grad_(true),
            running_mean: Tensor::zeros(&[channels], DType::F32),
            running_var: Tensor::ones(&[channels], DType::F32),
            num_batches_tracked: Tensor::zeros(&[], DType::F32),
            eps: 1e-5,
            momentum: 0.1,
            training: AtomicBool::new(true),
        }
    }

    pub fn is_training(&self) -> bool {
        self.training.load(Ordering::Relaxed)
    }
}

impl Module for BatchNorm {
    fn forward(&self, x: &Tensor) -> Tensor {
        let c = self.weight.numel();
        assert!(
            x.rank() >= 2 && x.shape()[1] == c,
            "BatchNorm: input of shape {:?} does not have {c} channels in dim 1",
            x.shape()
        );
        let mut channel_shape = vec![1; x.rank()];
        channel_shape[1] = c;
        let (mean, var) = if self.is_training() {
            let (mean, var) = x.batch_stats();
            let count = (x.numel() / c) as f64;
            no_grad(|| {
                let m = self.momentum;
                let unbiased = var.mul_scalar(count / (count - 1.0).max(1.0));
                // Written into their own buffers (`copy_`, not `set_data`), so that a training
                // iteration captured as a CUDA graph updates them at each replay.
                let updated = [
                    (
                        &self.running_mean,
                        self.running_mean.mul_scalar(1.0 - m).add(&mean.mul_scalar(m)),
                    ),
                    (
                        &self.running_var,
                        self.running_var.mul_scalar(1.0 - m).add(&unbiased.mul_scalar(m)),
                    ),
                    (&self.num_batches_tracked, self.num_batches_tracked.add_scalar(1.0)),
                ];
                for (statistic, value) in updated {
                    statistic
                        .copy_(&value)
                        .expect("a running statistic's update has its shape, dtype and device");
                }
            });
            (mean, var)
        } else {
            (self.running_mean.clone(), self.running_var.clone())
        };
        let normalized = x
            .sub(&mean.reshape(&channel_shape))
            .div(&var.add_scalar(self.eps).sqrt().reshape(&channel_shape));
        normalized
            .mul(&self.weight.reshape(&channel_shape))
            .add(&self.bias.reshape(&channel_shape))
    }

    fn visit(&self, prefix: &str, visit: &mut dyn FnMut(&str, &Tensor, TensorKind)) {
        visit(&join(prefix, "weight"), &self.weight, TensorKind::Parameter);
        visit(&join(prefix, "bias"), &self.bias, TensorKind::Parameter);
        visit(&join(prefix, "running_mean"), &self.running_mean, TensorKind::Buffer);
        visit(&join(prefix, "running_var"), &self.running_var, TensorKind::Buffer);
        visit(
            &join(prefix, "num_batches_tracked"),
            &self.num_batches_tracked,
            TensorKind::Buffer,
        );
    }

    fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
    }
}

/// PyTorch's `nn.LayerNorm(shape)`: normalise each sample over its last `shape.len()` dims,
/// with elementwise affine weight and bias of that shape.
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    pub fn new(shape: &[usize]) -> LayerNorm {
        LayerNorm {
            weight: Tensor::ones(shape, DType::F32).requires_grad_(true),
            bias: Tensor::zeros(shape, DType::F32).requires_grad_(true),
            eps: 1e-5,
        }
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.layer_norm(self.weight.rank(), Some(&self.weight), Some(&self.bias), self.eps)
    }
    fn visit(&self, prefix: &str, visit: &mut dyn FnMut(&str, &Tensor, TensorKind)) {
        visit(&join(prefix, "weight"), &self.weight, TensorKind::Parameter);
        visit(&join(prefix, "bias"), &self.bias, TensorKind::Parameter);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_norm_tracks_running_statistics_like_pytorch() {
        // Two channels over a batch of 4 (values chosen so the statistics are easy by hand).
        let x = Tensor::from_vec(vec![1.0f32, 10.0, 2.0, 20.0, 3.0, 30.0, 6.0, 60.0], &[4, 2]).unwrap();
        let bn = BatchNorm::new(2);
        let y = bn.forward(&x).to_vec_f32();
        // Channel 0: mean 3, biased variance 3.5, unbiased 14/3.
        let expect0 = (1.0 - 3.0) / (3.5f32 + 1e-5).sqrt();
        assert!((y[0] - expect0).abs() < 1e-5, "{} vs {expect0}", y[0]);
        let mean = bn.running_mean.to_vec_f32();
        let var = bn.running_var.to_vec_f32();
        assert!((mean[0] - 0.3).abs() < 1e-6 && (mean[1] - 3.0).abs() < 1e-5, "{mean:?}");
        assert!((var[0] - (0.9 + 0.1 * 14.0 / 3.0)).abs() < 1e-5, "{var:?}");
        assert_eq!(bn.num_batches_tracked.item(), 1.0);
        // Evaluation mode normalises with the running statistics and leaves them alone.
        bn.set_training(false);
        let y = bn.forward(&x).to_vec_f32();
        let expect = (1.0 - mean[0]) / (var[0] + 1e-5).sqrt();
        assert!((y[0] - expect).abs() < 1e-5);
        assert_eq!(bn.running_mean.to_vec_f32(), mean);
    }

    #[test]
    fn layer_norm_normalises_each_sample() {
        let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 14.0], &[2, 4]).unwrap();
        let y = LayerNorm::new(&[4]).forward(&x).to_vec_f32();
        for sample in y.chunks(4) {
            let mean: f32 = sample.iter().sum::<f32>() / 4.0;
            let var: f32 = sample.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 4.0;
            assert!(mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-3, "{sample:?}");
        }
    }
}
