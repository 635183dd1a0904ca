//! Shape ops: reshape (a view), permute, narrow, pad, concat, stack.

use crate::Tensor;
use earthmover_kernels::{contiguous_strides, numel, Storage};

impl Tensor {
    /// The same elements with a new shape of the same size. A view: no data is copied.
    pub fn reshape(&self, shape: &[usize]) -> Tensor {
        assert_eq!(
            numel(shape),
            self.numel(),
            "reshape: cannot view shape {:?} ({} elements) as {:?} ({} elements)",
            self.shape(),
            self.numel(),
            shape,
            numel(shape)
        );
        if shape == self.shape() {
            return self.clone();
        }
        let in_shape = self.shape().to_vec();
        Tensor::from_op(self.storage(), shape.to_vec(), "reshape", &[self], move |a| {
            vec![Some(a.grad.reshape(&in_shape))]
        })
    }

    /// Merge dims `start_dim..` into one: `[N, C, H, W].flatten(1)` is `[N, C*H*W]`. A
    /// 0-dimensional tensor flattens to `[1]`, as in PyTorch.
    pub fn flatten(&self, start_dim: isize) -> Tensor {
        let Some(d) = self.dim_index_or_scalar(start_dim, "flatten") else {
            return self.reshape(&[1]);
        };
        let mut shape = self.shape()[..d].to_vec();
        shape.push(self.shape()[d..].iter().product());
        self.reshape(&shape)
    }

    /// Insert a dim of size 1 at `dim` (which may equal the rank, to append).
    pub fn unsqueeze(&self, dim: usize) -> Tensor {
        assert!(
            dim <= self.rank(),
            "unsqueeze: dim {dim} out of range for shape {:?}",
            self.shape()
        );
        let mut shape = self.shape().to_vec();
        shape.insert(dim, 1);
        self.reshape(&shape)
    }

    /// Remove `dim` if its size is 1; a dim of another size is left, as in PyTorch.
    pub fn squeeze(&self, dim: isize) -> Tensor {
        let d = match self.dim_index_or_scalar(dim, "squeeze") {
            Some(d) if self.shape()[d] == 1 => d,
            _ => return self.clone(),
        };
        let mut shape = self.shape().to_vec();
        shape.remove(d);
        self.reshape(&shape)
    }

    /// Reorder dims: output dim `i` is input dim `dims[i]`.
    pub fn permute(&self, dims: &[usize]) -> Tensor {
        let rank = self.rank();
        let mut seen = vec![false; rank];
        let valid = dims.len() == rank && dims.iter().all(|&d| d < rank && !std::mem::replace(&mut seen[d], true));
        assert!(
            valid,
            "permute: {dims:?} is not a permutation of the dims of shape {:?}",
            self.shape()
        );
        if dims.iter().enumerate().all(|(i, &d)| i == d) {
            return self.clone();
        }
        let strides = contiguous_strides(self.shape());
        let out_shape: Vec<usize> = dims.iter().map(|&d| self.shape()[d]).collect();
        let out_strides: Vec<usize> = dims.iter().map(|&d| strides[d]).collect();
        let storage = self.storage().strided_copy(0, &out_strides, &out_shape);
        let mut inverse = vec![0; rank];
        for (i, &d) in dims.iter().enumerate() {
            inverse[d] = i;
        }
        Tensor::from_op(storage, out_shape, "permute", &[self], move |a| {
            vec![Some(a.grad.permute(&inverse))]
        })
    }

    /// Swap two dims.
    pub fn transpose(&self, dim0: isize, dim1: isize) -> Tensor {
        let (a, b) = (self.dim_index(dim0, "transpose"), self.dim_index(dim1, "transpose"));
        let mut dims: Vec<usize> = (0..self.rank()).collect();
        dims.swap(a, b);
        self.permute(&dims)
    }

    /// The transpose of a matrix.
    pub fn t(&self) -> Tensor {
        assert_eq!(self.rank(), 2, "t: expects a matrix, got shape {:?}", self.shape());
        self.transpose(0, 1)
    }

    /// Elements `start..start + len` along `dim` (PyTorch's `narrow`).
    pub fn narrow(&self, dim: isize, start: usize, len: usize) -> Tensor {
        let d = self.dim_index(dim, "narrow");
        assert!(
            start.checked_add(len).is_some_and(|end| end <= self.shape()[d]),
            "narrow: {len} elements from {start} are out of bounds for dim {d} of shape {:?}",
            self.shape()
        );
        let mut offsets = vec![0; self.rank()];
        offsets[d] = start;
        let mut sizes = self.shape().to_vec();
        sizes[d] = len;
        self.slice_box(&offsets, &sizes)
    }

    /// Elements `offsets[d]..offsets[d] + sizes[d]` along every dim `d` at once: what a
    /// `narrow` per dim gives, in one copy (and one padded copy back in the backward pass)
    /// where chained narrows make one each.
    pub fn narrow_box(&self, offsets: &[usize], sizes: &[usize]) -> Tensor {
        assert!(
            offsets.len() == self.rank() && sizes.len() == self.rank(),
            "narrow_box: offsets {offsets:?} and sizes {sizes:?} for a tensor of shape {:?}",
            self.shape()
        );
        for d in 0..self.rank() {
            assert!(
                offsets[d]
                    .checked_add(sizes[d])
                    .is_some_and(|end| end <= self.shape()[d]),
                "narrow_box: {} elements from {} are out of bounds for dim {d} of shape {:?}",
                sizes[d],
                offsets[d],
                self.shape()
            );
        }
        self.slice_box(offsets, sizes)
    }

    /// The box of `sizes` starting at `offsets`, in every dim at once. The adjoint of
    /// [`Tensor::pad_box`].
    fn slice_box(&self, offsets: &[usize], sizes: &[usize]) -> Tensor {
        if sizes == self.shape() {
            return self.clone();
        }
        let strides = contiguous_strides(self.shape());
        let offset: usize = offsets.iter().zip(&strides).map(|(o, s)| o * s).sum();
        let storage = self.storage().strided_copy(offset, &strides, sizes);
        let before = offsets.to_vec();
        let after: Vec<usize> = (0..self.rank())
            .map(|d| self.shape()[d] - offsets[d] - sizes[d])
            .collect();
        Tensor::from_op(storage, sizes.to_vec(), "narrow", &[self], move |a| {
            vec![Some(a.grad.pad_box(&before, &after, 0.0))]
        })
    }

    /// Pad every dim `d` with `before[d]` and `after[d]` elements of `value`.
    fn pad_box(&self, before: &[usize], after: &[usize], value: f64) -> Tensor {
        if before.iter().chain(after).all(|&p| p == 0) {
            return self.clone();
        }
        let out_shape: Vec<usize> = (0..self.rank())
            .map(|d| {
                let padded = before[d]
                    .checked_add(self.shape()[d])
                    .and_then(|n| n.checked_add(after[d]));
                padded.unwrap_or_else(|| {
                    panic!(
                        "pad: padding dim {d} of shape {:?} by {} and {} overflows",
                        self.shape(),
                        before[d],
                        after[d]
                    )
                })
            })
            .collect();
        let storage = self
            .storage()
            .padded_copy(self.shape(), before, &out_shape, value)
            .expect("the box lies inside the padded shape, by construction");
        let offsets = before.to_vec();
        let in_shape = self.shape().to_vec();
        Tensor::from_op(storage, out_shape, "pad", &[self], move |a| {
            vec![Some(a.grad.slice_box(&offsets, &in_shape))]
        })
    }

    /// Constant padding of the last `pads.len()` dims: `pads[i] = (before, after)` for dim
    /// `rank - pads.len() + i`. `x.pad(&[(1, 1), (2, 2)], 0.0)` pads H by 1 and W by 2.
    pub fn pad(&self, pads: &[(usize, usize)], value: f64) -> Tensor {
        assert!(
            pads.len() <= self.rank(),
            "pad: {} pads for a tensor of shape {:?}",
            pads.len(),
            self.shape()
        );
        let lead = self.rank() - pads.len();
        let mut before = vec![0; self.rank()];
        let mut after = vec![0; self.rank()];
        for (i, &(b, a)) in pads.iter().enumerate() {
            before[lead + i] = b;
            after[lead + i] = a;
        }
        self.pad_box(&before, &after, value)
    }

    /// Join tensors along an existing dim; all other dims must agree.
    pub fn concat(tensors: &[&Tensor], dim: isize) -> Tensor {
        assert!(!tensors.is_empty(), "concat: no tensors");
        let dtype = tensors
            .iter()
            .skip(1)
            .fold(tensors[0].dtype(), |d, t| crate::promote(d, t.dtype()));
        if tensors.iter().any(|t| t.dtype() != dtype) {
            // Mixed dtypes are promoted to the widest, as `torch.cat` does (differentiably).
            let promoted: Vec<Tensor> = tensors.iter().map(|t| t.to_dtype(dtype)).collect();
            return Tensor::concat(&promoted.iter().collect::<Vec<_>>(), dim);
        }
        let first = tensors[0];
        let d = first.dim_index(dim, "concat");
        for t in tensors {
            let same =
                t.rank() == first.rank() && (0..first.rank()).all(|i| i == d || t.shape()[i] == first.shape()[i]);
            assert!(
                same,
                "concat: shapes {:?} and {:?} differ outside dim {d}",
                first.shape(),
                t.shape()
            );
        }
        let mut out_shape = first.shape().to_vec();
        out_shape[d] = tensors.iter().map(|t| t.shape()[d]).sum();
        let strides = contiguous_strides(&out_shape);
        // The writes below cover the output whole: no fill first.
        let mut storage = Storage::for_overwrite_or_fail(numel(&out_shape), first.dtype(), first.device());
        let mut starts = Vec::with_capacity(tensors.len());
        let mut start = 0;
        for t in tensors {
            storage.strided_write(start * strides[d], &strides, &t.storage(), t.shape());
            starts.push((start, t.shape()[d]));
            start += t.shape()[d];
        }
        Tensor::from_op(storage, out_shape, "concat", tensors, move |a| {
            starts
                .iter()
                .zip(a.needs)
                .map(|(&(s, len), &need)| need.then(|| a.grad.narrow(d as isize, s, len)))
                .collect()
        })
    }

    /// Join tensors of one shape along a new dim.
    pub fn stack(tensors: &[&Tensor], dim: usize) -> Tensor {
        let expanded: Vec<Tensor> = tensors.iter().map(|t| t.unsqueeze(dim)).collect();
        let refs: Vec<&Tensor> = expanded.iter().collect();
        Tensor::concat(&refs, dim as isize)
    }
}
