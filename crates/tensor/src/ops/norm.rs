//! Norms and normalisation statistics.

use crate::Tensor;
use earthmover_kernels::UnaryOp;

impl Tensor {
    /// The L2 norm of each sample over all its non-batch dims: `[N, ...] -> [N]`. This is the
    /// norm in WGAN-GP's penalty `(||grad_x C(x_hat)||_2 - 1)^2`. Its gradient `x / ||x||` is
    /// taken as 0 for a sample that is all zeros, so it stays finite there (where sqrt's
    /// would be infinite).
    pub fn per_sample_norm(&self) -> Tensor {
        assert!(self.rank() >= 1, "per_sample_norm: needs a batch dim, got a scalar");
        let n = self.shape()[0];
        let mut keep = vec![1; self.rank()];
        keep[0] = n;
        // sqrt(sum of x^2): one launch on a GPU, the same ops (and bits) as three.
        let norms = self
            .storage()
            .sum_mapped(Some(UnaryOp::Pow(2.0)), self.shape(), &keep, Some(UnaryOp::Sqrt));
        Tensor::from_op(norms, vec![n], "per_sample_norm", &[self], |a| {
            let x = &a.inputs[0];
            let mut col = vec![1; x.rank()];
            col[0] = x.shape()[0];
            let norm = a.output.reshape(&col);
            // Divided by 1 where the norm is 0: there x is 0 and so is the gradient.
            vec![Some(x.mul(&a.grad.reshape(&col).div_nonzero(&norm)))]
        })
    }

    /// `(x - mean) / sqrt(var + eps)` with mean and (population) variance over `dims`: the core
    /// of layer-norm (the feature dims) and batch-norm (the batch and spatial dims).
    pub fn normalize(&self, dims: &[isize], eps: f64) -> Tensor {
        let mean = self.mean_dims(dims, true);
        let centered = self.sub(&mean);
        let var = centered.square().mean_dims(dims, true);
        centered.div(&var.add_scalar(eps).sqrt())
    }

    /// Layer normalisation over the last `normalized_dims` dims, with optional elementwise
    /// affine `weight` and `bias` of those dims' shape (PyTorch's `F.layer_norm`).
    pub fn layer_norm(
        &self,
        normalized_dims: usize,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Tensor {
        assert!(
            normalized_dims >= 1 && normalized_dims <= self.rank(),
            "layer_norm: cannot normalise {normalized_dims} dims of shape {:?}",
            self.shape()
        );
        let dims: Vec<isize> = (self.rank() - normalized_dims..self.rank())
            .map(|d| d as isize)
            .collect();
        let mut y = self.normalize(&dims, eps);
        let feature_shape = &self.shape()[self.rank() - normalized_dims..];
        if let Some(w) = weight {
            assert_eq!(
                w.shape(),
                feature_shape,
                "layer_norm: weight of shape {:?} for features {:?}",
                w.shape(),
                feature_shape
            );
            y = y.mul(w);
        }
        if let Some(b) = bias {
            assert_eq!(
                b.shape(),
                feature_shape,
                "layer_norm: bias of shape {:?} for features {:?}",
                b.shape(),
                feature_shape
            );
            y = y.add(b);
        }
        y
    }

    /// Batch statistics for batch-norm: the mean and population variance of each channel (dim
    /// 1) over the batch and any spatial dims, each of shape `[C]`.
    pub fn batch_stats(&self) -> (Tensor, Tensor) {
        assert!(
            self.rank() >= 2,
            "batch_stats: expects [N, C, ...], got {:?}",
            self.shape()
        );
        let dims: Vec<isize> = std::iter::once(0).chain(2..self.rank() as isize).collect();
        (self.mean_dims(&dims, false), self.var_dims(&dims, false))
    }
}
