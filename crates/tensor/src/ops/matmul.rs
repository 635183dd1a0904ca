//! Matrix products: batched matmul and linear layers.

use crate::autocast::product_operand;
use crate::{Activation, Tensor};
use earthmover_kernels::{broadcast_shapes, numel, MatmulProblem, MatrixLayout};

impl Tensor {
    /// Matrix product with NumPy's and PyTorch's `matmul` semantics: of the last two dims,
    /// batched over the leading ones, which broadcast (`[2, 1, 3, 4] @ [5, 4, 2]` is `[2, 5,
    /// 3, 2]`). A 1-D left operand is a row vector and a 1-D right operand a column vector,
    /// whose dim is dropped from the result (`[4] @ [4, 3]` is `[3]`, `[4] @ [4]` a scalar).
    /// The gradient of a broadcast operand is summed over the dims it was broadcast along.
    #[track_caller]
    pub fn matmul(&self, other: &Tensor) -> Tensor {
        match (self.rank(), other.rank()) {
            (0, _) | (_, 0) => panic!(
                "matmul: both operands need at least 1 dim, got shapes {:?} and {:?}",
                self.shape(),
                other.shape()
            ),
            (1, 1) => self.unsqueeze(0).matmul(&other.unsqueeze(1)).reshape(&[]),
            (1, _) => self.unsqueeze(0).matmul(other).squeeze(-2),
            (_, 1) => self.matmul(&other.unsqueeze(1)).squeeze(-1),
            _ => self.matmul_transposed(other, false, false),
        }
    }

    /// `op(self) @ op(other)`, where `op` transposes the last two dims when its flag is set;
    /// both operands have at least 2 dims, and the batch dims broadcast as in
    /// [`Tensor::matmul`]. The kernel reads the transposes through strides, so no copy is
    /// made; matmul's backward rules use this to stay copy-free at every order.
    #[track_caller]
    pub fn matmul_transposed(&self, other: &Tensor, transpose_self: bool, transpose_other: bool) -> Tensor {
        // Under autocast, f32 operands are multiplied in its 16-bit dtype; two dtypes promote.
        let (a, b) = (product_operand(self), product_operand(other));
        let dtype = crate::promote(a.dtype(), b.dtype());
        let (a, b) = (&a.to_dtype(dtype), &b.to_dtype(dtype));
        assert!(
            a.rank() >= 2 && b.rank() >= 2,
            "matmul: both operands need at least 2 dims here, got shapes {:?} and {:?}",
            a.shape(),
            b.shape()
        );
        let (ar, ac) = (a.shape()[a.rank() - 2], a.shape()[a.rank() - 1]);
        let (br, bc) = (b.shape()[b.rank() - 2], b.shape()[b.rank() - 1]);
        let (m, k) = if transpose_self { (ac, ar) } else { (ar, ac) };
        let (kb, n) = if transpose_other { (bc, br) } else { (br, bc) };
        let (a_batch, b_batch) = (&a.shape()[..a.rank() - 2], &b.shape()[..b.rank() - 2]);
        let batch_shape = broadcast_shapes(a_batch, b_batch).filter(|_| k == kb);
        let Some(batch_shape) = batch_shape else {
            panic!(
                "matmul: shapes {:?}{} and {:?}{} do not multiply",
                a.shape(),
                if transpose_self { "^T" } else { "" },
                b.shape(),
                if transpose_other { "^T" } else { "" }
            )
        };
        // An operand that is one matrix is read for every batch (batch stride 0); one whose
        // batch dims are the broadcast's is read in place; any other is broadcast first.
        let batched = |t: &Tensor, t_batch: &[usize]| -> Option<Tensor> {
            if numel(t_batch) == 1 || numel(t_batch) == numel(&batch_shape) {
                None
            } else {
                let mut shape = batch_shape.clone();
                shape.extend_from_slice(&t.shape()[t.rank() - 2..]);
                Some(t.broadcast_to(&shape))
            }
        };
        if let Some(a) = batched(a, a_batch) {
            return a.matmul_transposed(b, transpose_self, transpose_other);
        }
        if let Some(b) = batched(b, b_batch) {
            return a.matmul_transposed(&b, transpose_self, transpose_other);
        }
        let batch: usize = batch_shape.iter().product();
        let layout = |transposed, cols| {
            if transposed {
                MatrixLayout::transposed(cols)
            } else {
                MatrixLayout::row_major(cols)
            }
        };
        let problem = MatmulProblem {
            batch,
            m,
            n,
            k,
            a_layout: layout(transpose_self, ac),
            a_batch_stride: if numel(a_batch) == 1 { 0 } else { ar * ac },
            b_layout: layout(transpose_other, bc),
            b_batch_stride: if numel(b_batch) == 1 { 0 } else { br * bc },
        };
        let storage = a.storage().matmul(&b.storage(), &problem);
        let mut out_shape = batch_shape.to_vec();
        out_shape.extend([m, n]);
        let (ta, tb) = (transpose_self, transpose_other);
        Tensor::from_op(storage, out_shape, "matmul", &[a, b], move |args| {
            let (a, b, g) = (&args.inputs[0], &args.inputs[1], args.grad);
            let grad_a = args.needs[0].then(|| {
                let ga = if ta {
                    b.matmul_transposed(g, tb, true)
                } else {
                    g.matmul_transposed(b, false, !tb)
                };
                ga.sum_to(a.shape())
            });
            let grad_b = args.needs[1].then(|| {
                let gb = if tb {
                    g.matmul_transposed(a, true, ta)
                } else {
                    a.matmul_transposed(g, !ta, false)
                };
                gb.sum_to(b.shape())
            });
            vec![grad_a, grad_b]
        })
    }

    /// `x W^T + b` for `x: [..., in]`, `weight: [out, in]`, `bias: [out]` (PyTorch's layout).
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
        self.linear_with(weight, bias, None)
    }

    /// `activation(x W^T + b)`: with a bias, the bias and the activation in one op
    /// ([`Tensor::add_activated`], one launch on a GPU); the same values and gradients as
    /// `linear` then `activation`, bit for bit.
    pub fn linear_activated(&self, weight: &Tensor, bias: Option<&Tensor>, activation: Activation) -> Tensor {
        self.linear_with(weight, bias, Some(activation))
    }

    fn linear_with(&self, weight: &Tensor, bias: Option<&Tensor>, activation: Option<Activation>) -> Tensor {
        assert!(
            weight.rank() == 2 && self.rank() >= 1 && self.shape()[self.rank() - 1] == weight.shape()[1],
            "linear: input of shape {:?} does not fit weight of shape {:?} ([out, in])",
            self.shape(),
            weight.shape()
        );
        let x = if self.rank() == 1 {
            self.unsqueeze(0)
        } else {
            self.clone()
        };
        let mut y = x.matmul_transposed(weight, false, true);
        if let Some(b) = bias {
            assert_eq!(
                b.shape(),
                &[weight.shape()[0]],
                "linear: bias of shape {:?} for {} outputs",
                b.shape(),
                weight.shape()[0]
            );
            y = match activation {
                Some(act) => y.add_activated(&product_operand(b), act),
                None => y.add(&product_operand(b)),
            };
        } else if let Some(act) = activation {
            y = y.activation(act);
        }
        if self.rank() == 1 {
            y.squeeze(0)
        } else {
            y
        }
    }
}
