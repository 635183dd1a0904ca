//! Reductions (sum, mean, max over dims) and their adjoint, broadcasting (scaled for a mean).

use crate::Tensor;
use earthmover_kernels::{broadcast_shapes, broadcast_strides, ReduceOp, UnaryOp};

impl Tensor {
    /// Sum over `dims` keeping them as size 1.
    fn sum_keepdim(&self, dims: &[usize]) -> Tensor {
        self.sum_keepdim_scaled(dims, 1.0)
    }

    /// Sum over `dims` keeping them as size 1, times `scale`: the primitive behind every sum
    /// (`scale` 1) and mean (`1 / count`). The scale is applied to the sum as a `mul_scalar`
    /// would (the same bits), in the reduction's launch on a GPU; the gradient is the output
    /// gradient broadcast back and scaled, one launch too.
    fn sum_keepdim_scaled(&self, dims: &[usize], scale: f64) -> Tensor {
        let mut out_shape = self.shape().to_vec();
        for &d in dims {
            out_shape[d] = 1;
        }
        if out_shape == self.shape() {
            return if scale == 1.0 {
                self.clone()
            } else {
                self.mul_scalar(scale)
            };
        }
        let storage = if scale == 1.0 {
            self.storage().reduce(ReduceOp::Sum, self.shape(), &out_shape)
        } else {
            let scale = Some(UnaryOp::MulScalar(scale));
            self.storage().sum_mapped(None, self.shape(), &out_shape, scale)
        };
        let in_shape = self.shape().to_vec();
        let name = if scale == 1.0 { "sum" } else { "mean" };
        Tensor::from_op(storage, out_shape, name, &[self], move |a| {
            vec![Some(a.grad.broadcast_scaled(&in_shape, scale))]
        })
    }

    /// `dims` as sorted indices. Dim 0 or -1 of a 0-dimensional tensor is accepted and
    /// reduces nothing, as in PyTorch; a dim named twice is an error, as in PyTorch.
    #[track_caller]
    fn resolve_dims(&self, dims: &[isize], op: &str) -> Vec<usize> {
        let mut ds: Vec<usize> = dims.iter().filter_map(|&d| self.dim_index_or_scalar(d, op)).collect();
        ds.sort_unstable();
        if let Some(pair) = ds.windows(2).find(|pair| pair[0] == pair[1]) {
            panic!(
                "{op}: dim {} appears more than once in {dims:?} (shape {:?})",
                pair[0],
                self.shape()
            );
        }
        ds
    }

    /// The shape after reducing `dims` away (or to 1 with `keepdim`).
    fn reduced_shape(&self, dims: &[usize], keepdim: bool) -> Vec<usize> {
        let mut shape = Vec::new();
        for (d, &s) in self.shape().iter().enumerate() {
            if !dims.contains(&d) {
                shape.push(s);
            } else if keepdim {
                shape.push(1);
            }
        }
        shape
    }

    /// The sum of all elements, as a 0-dimensional tensor.
    pub fn sum(&self) -> Tensor {
        let all: Vec<usize> = (0..self.rank()).collect();
        self.sum_keepdim(&all).reshape(&[])
    }

    /// Sum over `dims` (negative counts from the end), keeping them as size 1 with `keepdim`.
    pub fn sum_dims(&self, dims: &[isize], keepdim: bool) -> Tensor {
        let ds = self.resolve_dims(dims, "sum_dims");
        let out = self.sum_keepdim(&ds);
        if keepdim {
            out
        } else {
            out.reshape(&self.reduced_shape(&ds, false))
        }
    }

    /// The mean of all elements, as a 0-dimensional tensor; NaN for an empty tensor (0 / 0),
    /// as in PyTorch.
    pub fn mean(&self) -> Tensor {
        let all: Vec<usize> = (0..self.rank()).collect();
        self.sum_keepdim_scaled(&all, 1.0 / self.numel() as f64).reshape(&[])
    }

    /// The mean over `dims`; NaN where they are empty, as in PyTorch.
    pub fn mean_dims(&self, dims: &[isize], keepdim: bool) -> Tensor {
        let ds = self.resolve_dims(dims, "mean_dims");
        let count: usize = ds.iter().map(|&d| self.shape()[d]).product();
        let out = self.sum_keepdim_scaled(&ds, 1.0 / count as f64);
        if keepdim {
            out
        } else {
            out.reshape(&self.reduced_shape(&ds, false))
        }
    }

    /// Maximum over `dims` (PyTorch's `amax`); NaN wins. The gradient goes to the maximal
    /// elements, split evenly at ties (a NaN maximum gives NaN gradients, as `amax`'s). A
    /// reduced dim of size 0 is an error, as in PyTorch: an empty maximum has no value.
    #[track_caller]
    pub fn max_dims(&self, dims: &[isize], keepdim: bool) -> Tensor {
        let ds = self.resolve_dims(dims, "max_dims");
        if let Some(&d) = ds.iter().find(|&&d| self.shape()[d] == 0) {
            panic!(
                "max_dims: reduction dim {d} of shape {:?} is empty, and an empty maximum has no value",
                self.shape()
            );
        }
        let keep_shape = self.reduced_shape(&ds, true);
        let storage = self.storage().reduce(ReduceOp::Max, self.shape(), &keep_shape);
        let dims_owned = ds.clone();
        let out = Tensor::from_op(storage, keep_shape, "max", &[self], move |a| {
            let x = &a.inputs[0];
            let winners = x.eq(&a.output.detach());
            let count = winners.sum_keepdim(&dims_owned);
            vec![Some(winners.div(&count).mul(a.grad))]
        });
        if keepdim {
            out
        } else {
            out.reshape(&self.reduced_shape(&ds, false))
        }
    }

    /// The maximum of all elements, as a 0-dimensional tensor; NaN wins. The gradient is
    /// split evenly among the maximal elements, or among the NaNs when there are any
    /// (PyTorch's `max()`). An empty tensor is an error, as in PyTorch.
    #[track_caller]
    pub fn max(&self) -> Tensor {
        assert!(
            self.numel() > 0,
            "max: the tensor of shape {:?} is empty, and an empty maximum has no value (max_dims \
             over a non-empty dim gives an empty result)",
            self.shape()
        );
        let all: Vec<usize> = (0..self.rank()).collect();
        let keep_shape = vec![1; self.rank()];
        let storage = self.storage().reduce(ReduceOp::Max, self.shape(), &keep_shape);
        let out = Tensor::from_op(storage, keep_shape, "max", &[self], move |a| {
            let (x, max) = (&a.inputs[0], a.output.detach());
            // `x == max` finds no element when the maximum is NaN: then the NaNs win. (The two
            // terms are never 1 together.)
            let winners = x.eq(&max).add(&x.isnan().mul(&max.isnan()));
            let count = winners.sum_keepdim(&all);
            vec![Some(winners.div(&count).mul(a.grad))]
        });
        out.reshape(&[])
    }

    /// Variance over `dims` (the population variance, dividing by the count: batch-norm's and
    /// layer-norm's statistic). Built from differentiable ops, so it has every derivative.
    pub fn var_dims(&self, dims: &[isize], keepdim: bool) -> Tensor {
        let centered = self.sub(&self.mean_dims(dims, true));
        centered.square().mean_dims(dims, keepdim)
    }

    /// Repeat along size-1 (or missing leading) dims to `shape`, NumPy-style. The gradient is
    /// summed back with [`Tensor::sum_to`].
    pub fn broadcast_to(&self, shape: &[usize]) -> Tensor {
        if self.shape() == shape {
            return self.clone();
        }
        let ok = broadcast_shapes(self.shape(), shape).is_some_and(|s| s == shape);
        assert!(
            ok,
            "broadcast_to: shape {:?} cannot be broadcast to {:?}",
            self.shape(),
            shape
        );
        let strides = broadcast_strides(self.shape(), shape);
        let storage = self.storage().strided_copy(0, &strides, shape);
        let in_shape = self.shape().to_vec();
        Tensor::from_op(storage, shape.to_vec(), "broadcast_to", &[self], move |a| {
            vec![Some(a.grad.sum_to(&in_shape))]
        })
    }

    /// `broadcast_to(shape)` times `scale`, in one pass (a mean's gradient: the output
    /// gradient spread over the inputs, times `1 / count`): the same bits as the broadcast
    /// then a `mul_scalar`. The gradient is [`Tensor::sum_to`] scaled, one reduction.
    fn broadcast_scaled(&self, shape: &[usize], scale: f64) -> Tensor {
        if scale == 1.0 {
            return self.broadcast_to(shape);
        }
        if self.shape() == shape {
            return self.mul_scalar(scale);
        }
        let ok = broadcast_shapes(self.shape(), shape).is_some_and(|s| s == shape);
        assert!(
            ok,
            "broadcast_to: shape {:?} cannot be broadcast to {:?}",
            self.shape(),
            shape
        );
        let strides = broadcast_strides(self.shape(), shape);
        let storage = self
            .storage()
            .strided_unary(0, &strides, shape, UnaryOp::MulScalar(scale));
        let in_shape = self.shape().to_vec();
        Tensor::from_op(storage, shape.to_vec(), "broadcast_scaled", &[self], move |a| {
            vec![Some(a.grad.sum_to_scaled(&in_shape, scale))]
        })
    }

    /// Sum a broadcast result back down to `shape`: the adjoint of [`Tensor::broadcast_to`].
    pub fn sum_to(&self, shape: &[usize]) -> Tensor {
        self.sum_to_scaled(shape, 1.0)
    }

    /// [`Tensor::sum_to`] times `scale`: the adjoint of [`Tensor::broadcast_scaled`].
    fn sum_to_scaled(&self, shape: &[usize], scale: f64) -> Tensor {
        if self.shape() == shape {
            return if scale == 1.0 {
                self.clone()
            } else {
                self.mul_scalar(scale)
            };
        }
        let ok = broadcast_shapes(shape, self.shape()).is_some_and(|s| s == self.shape());
        assert!(
            ok,
            "sum_to: shape {:?} cannot be summed down to {:?}",
            self.shape(),
            shape
        );
        let lead = self.rank() - shape.len();
        let dims: Vec<usize> = (0..self.rank())
            .filter(|&d| d < lead || shape[d - lead] == 1 && self.shape()[d] != 1)
            .collect();
        self.sum_keepdim_scaled(&dims, scale).reshape(shape)
    }
}
