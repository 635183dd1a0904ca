//! Elementwise ops: arithmetic with NumPy broadcasting, activations, and masks.

use crate::autograd::BackwardArgs;
use crate::Tensor;
use earthmover_kernels::{broadcast_shapes, BinaryOp, Storage, UnaryOp};

impl Tensor {
    fn unary_op<F>(&self, op: UnaryOp, name: &'static str, backward: F) -> Tensor
    where
        F: Fn(&BackwardArgs) -> Tensor + Send + Sync + 'static,
    {
        let storage = self.storage().unary(op);
        Tensor::from_op(storage, self.shape().to_vec(), name, &[self], move |a| {
            vec![Some(backward(a))]
        })
    }

    /// A mask or other value that no gradient flows through.
    fn constant_unary(&self, op: UnaryOp) -> Tensor {
        Tensor::constant(self.storage().unary(op), self.shape().to_vec())
    }

    pub fn neg(&self) -> Tensor {
        self.unary_op(UnaryOp::Neg, "neg", |a| a.grad.neg())
    }

    pub fn exp(&self) -> Tensor {
        self.unary_op(UnaryOp::Exp, "exp", |a| a.grad.mul(a.output))
    }

    /// Natural logarithm.
    pub fn log(&self) -> Tensor {
        self.unary_op(UnaryOp::Log, "log", |a| a.grad.div(&a.inputs[0]))
    }

    pub fn sqrt(&self) -> Tensor {
        self.unary_op(UnaryOp::Sqrt, "sqrt", |a| a.grad.div(&a.output.mul_scalar(2.0)))
    }

    /// `|x|`; its gradient at 0 is 0.
    pub fn abs(&self) -> Tensor {
        self.unary_op(UnaryOp::Abs, "abs", |a| a.grad.mul(&a.inputs[0].sign()))
    }

    /// -1, 0 or 1; not differentiable (no gradient flows).
    pub fn sign(&self) -> Tensor {
        self.constant_unary(UnaryOp::Sign)
    }

    /// `max(x, 0)`; NaN stays NaN.
    pub fn relu(&self) -> Tensor {
        self.unary_op(UnaryOp::Relu, "relu", |a| relu_backward(a.grad, a.output))
    }

    /// `x` where positive, `negative_slope * x` elsewhere.
    pub fn leaky_relu(&self, negative_slope: f64) -> Tensor {
        self.unary_op(UnaryOp::LeakyRelu(negative_slope), "leaky_relu", move |a| {
            leaky_relu_backward(a.grad, &a.inputs[0], negative_slope)
        })
    }

    pub fn tanh(&self) -> Tensor {
        self.unary_op(UnaryOp::Tanh, "tanh", |a| {
            Activation::Tanh.backward_from_output(a.grad, a.output)
        })
    }

    pub fn sigmoid(&self) -> Tensor {
        self.unary_op(UnaryOp::Sigmoid, "sigmoid", |a| {
            Activation::Sigmoid.backward_from_output(a.grad, a.output)
        })
    }

    /// `activation(self)`.
    pub fn activation(&self, activation: Activation) -> Tensor {
        match activation {
            Activation::Relu => self.relu(),
            Activation::LeakyRelu(slope) => self.leaky_relu(slope),
            Activation::Tanh => self.tanh(),
            Activation::Sigmoid => self.sigmoid(),
        }
    }

    /// `log(1 + exp(x))`, stable for large `|x|`.
    pub fn softplus(&self) -> Tensor {
        self.unary_op(UnaryOp::Softplus, "softplus", |a| a.grad.mul(&a.inputs[0].sigmoid()))
    }

    /// `x^exponent` for a constant exponent.
    pub fn pow(&self, exponent: f64) -> Tensor {
        self.unary_op(UnaryOp::Pow(exponent), "pow", move |a| {
            if exponent == 0.0 {
                a.grad.zeros_like()
            } else if exponent == 1.0 {
                a.grad.clone()
            } else {
                a.grad.mul(&a.inputs[0].pow(exponent - 1.0).mul_scalar(exponent))
            }
        })
    }

    /// `x * x`.
    pub fn square(&self) -> Tensor {
        self.pow(2.0)
    }

    /// Clamp into `[min, max]`; the gradient is zero outside. NaN stays NaN, and with `min >
    /// max` every number becomes `max` (as in PyTorch).
    pub fn clamp(&self, min: f64, max: f64) -> Tensor {
        self.unary_op(UnaryOp::Clamp(min, max), "clamp", move |a| {
            a.grad.mul(&a.inputs[0].constant_unary(UnaryOp::InRange(min, max)))
        })
    }

    pub fn add_scalar(&self, value: f64) -> Tensor {
        self.unary_op(UnaryOp::AddScalar(value), "add_scalar", |a| a.grad.clone())
    }

    pub fn sub_scalar(&self, value: f64) -> Tensor {
        self.add_scalar(-value)
    }

    pub fn mul_scalar(&self, value: f64) -> Tensor {
        self.unary_op(UnaryOp::MulScalar(value), "mul_scalar", move |a| {
            a.grad.mul_scalar(value)
        })
    }

    /// `self / value`, divided as PyTorch's CPU divides by a number (not multiplied by `1 /
    /// value`, which rounds twice and overflows for a subnormal `value`).
    pub fn div_scalar(&self, value: f64) -> Tensor {
        self.unary_op(UnaryOp::DivScalar(value), "div_scalar", move |a| {
            a.grad.div_scalar(value)
        })
    }

    /// 1 where `x > value`, else 0. A mask: no gradient flows.
    pub fn gt_scalar(&self, value: f64) -> Tensor {
        self.constant_unary(UnaryOp::GtScalar(value))
    }

    /// 1 where `x < value`, else 0.
    pub fn lt_scalar(&self, value: f64) -> Tensor {
        self.constant_unary(UnaryOp::LtScalar(value))
    }

    /// 1 where `x == value`, else 0.
    pub fn eq_scalar(&self, value: f64) -> Tensor {
        self.constant_unary(UnaryOp::EqScalar(value))
    }

    /// 1 where the value is NaN, else 0 (`x != x`). A mask: no gradient flows.
    pub fn isnan(&self) -> Tensor {
        self.eq(self).neg().add_scalar(1.0).detach()
    }

    // ------------------------------------------------------------ binary, broadcasting

    fn broadcast_shape_with(&self, other: &Tensor, op: &str) -> Vec<usize> {
        broadcast_shapes(self.shape(), other.shape()).unwrap_or_else(|| {
            panic!(
                "{op}: shapes {:?} and {:?} cannot be broadcast together",
                self.shape(),
                other.shape()
            )
        })
    }

    /// `op(self, other)`, broadcasting; operands of two dtypes are first converted to one
    /// (differentiably), as PyTorch promotes: the wider ([`crate::promote`]), except that a
    /// 0-d tensor takes the dtype of a tensor with dims (`f32[n] * f64[]` is f32, as a Python
    /// number would leave it).
    fn binary_op<F>(&self, other: &Tensor, op: BinaryOp, name: &'static str, backward: F) -> Tensor
    where
        F: Fn(&BackwardArgs) -> [Option<Tensor>; 2] + Send + Sync + 'static,
    {
        if self.dtype() != other.dtype() {
            let dtype = match (self.rank(), other.rank()) {
                (0, r) if r > 0 => other.dtype(),
                (r, 0) if r > 0 => self.dtype(),
                _ => crate::promote(self.dtype(), other.dtype()),
            };
            return self
                .to_dtype(dtype)
                .binary_op(&other.to_dtype(dtype), op, name, backward);
        }
        let out_shape = self.broadcast_shape_with(other, name);
        let storage = self
            .storage()
            .binary(op, self.shape(), &other.storage(), other.shape(), &out_shape);
        Tensor::from_op(storage, out_shape, name, &[self, other], move |a| backward(a).into())
    }

    fn constant_binary(&self, other: &Tensor, op: BinaryOp, name: &str) -> Tensor {
        if self.dtype() != other.dtype() {
            let dtype = crate::promote(self.dtype(), other.dtype());
            return self
                .detach()
                .to_dtype(dtype)
                .constant_binary(&other.detach().to_dtype(dtype), op, name);
        }
        let out_shape = self.broadcast_shape_with(other, name);
        Tensor::constant(
            self.storage()
                .binary(op, self.shape(), &other.storage(), other.shape(), &out_shape),
            out_shape,
        )
    }

    pub fn add(&self, other: &Tensor) -> Tensor {
        self.binary_op(other, BinaryOp::Add, "add", |a| {
            let [x, y] = [&a.inputs[0], &a.inputs[1]];
            [
                a.needs[0].then(|| a.grad.sum_to(x.shape())),
                a.needs[1].then(|| a.grad.sum_to(y.shape())),
            ]
        })
    }

    pub fn sub(&self, other: &Tensor) -> Tensor {
        self.binary_op(other, BinaryOp::Sub, "sub", |a| {
            let [x, y] = [&a.inputs[0], &a.inputs[1]];
            [
                a.needs[0].then(|| a.grad.sum_to(x.shape())),
                a.needs[1].then(|| a.grad.neg().sum_to(y.shape())),
            ]
        })
    }

    pub fn mul(&self, other: &Tensor) -> Tensor {
        self.binary_op(other, BinaryOp::Mul, "mul", |a| {
            let [x, y] = [&a.inputs[0], &a.inputs[1]];
            [
                a.needs[0].then(|| a.grad.mul(y).sum_to(x.shape())),
                a.needs[1].then(|| a.grad.mul(x).sum_to(y.shape())),
            ]
        })
    }

    pub fn div(&self, other: &Tensor) -> Tensor {
        self.binary_op(other, BinaryOp::Div, "div", |a| {
            let [x, y] = [&a.inputs[0], &a.inputs[1]];
            // d(x/y)/dy = -(x/y)/y = -out/y.
            [
                a.needs[0].then(|| a.grad.div(y).sum_to(x.shape())),
                a.needs[1].then(|| a.grad.mul(a.output).div(y).neg().sum_to(y.shape())),
            ]
        })
    }

    /// `activation(self + other)` in one op, broadcasting as `add`: a linear layer's bias and
    /// activation in one launch on a GPU (f32, f64). Keeps only the activated output (the
    /// derivative is read from it, as [`Tensor::conv2d_activated`] does); the same values and
    /// gradients as `add` then `activation`, bit for bit.
    pub fn add_activated(&self, other: &Tensor, activation: Activation) -> Tensor {
        if self.dtype() != other.dtype() || !activation.has_derivative_from_output() {
            return self.add(other).activation(activation);
        }
        let out_shape = self.broadcast_shape_with(other, "add");
        let storage = self.storage().binary_activated(
            BinaryOp::Add,
            self.shape(),
            &other.storage(),
            other.shape(),
            &out_shape,
            activation.kernel_op(),
        );
        Tensor::from_op(storage, out_shape, "add_activated", &[self, other], move |a| {
            let [x, y] = [&a.inputs[0], &a.inputs[1]];
            let sums = activation.backward_from_output(a.grad, a.output);
            vec![
                a.needs[0].then(|| sums.sum_to(x.shape())),
                a.needs[1].then(|| sums.sum_to(y.shape())),
            ]
        })
    }

    /// `self + (end - self) * weight`, rounded after the subtraction, the product and the sum
    /// (not PyTorch's two-branch `lerp` formula): `end` of this shape, `weight` broadcast to
    /// it (one weight per sample: WGAN-GP's interpolates). One launch on a GPU in f32 and
    /// f64, the three ops elsewhere; the same bits either way.
    pub fn lerp(&self, end: &Tensor, weight: &Tensor) -> Tensor {
        let fusable = end.shape() == self.shape()
            && end.dtype() == self.dtype()
            && weight.dtype() == self.dtype()
            && broadcast_shapes(weight.shape(), self.shape()).is_some_and(|s| s == self.shape());
        if !fusable {
            return self.add(&end.sub(self).mul(weight));
        }
        let storage = self
            .storage()
            .lerp(&end.storage(), &weight.storage(), self.shape(), weight.shape());
        Tensor::from_op(storage, self.shape().to_vec(), "lerp", &[self, end, weight], |a| {
            let [start, end, weight] = [&a.inputs[0], &a.inputs[1], &a.inputs[2]];
            // d/dstart = 1 - weight, d/dend = weight, d/dweight = end - start.
            let through_weight = || a.grad.mul(weight);
            vec![
                a.needs[0].then(|| a.grad.sub(&through_weight())),
                a.needs[1].then(through_weight),
                a.needs[2].then(|| a.grad.mul(&end.sub(start)).sum_to(weight.shape())),
            ]
        })
    }

    /// `self / other`, or `self` where `other` is 0 (dividing by 1 there instead): a gradient
    /// through a norm that is 0 at 0 ([`Tensor::per_sample_norm`]), in one pass. The gradient
    /// is 0 with respect to `other` where it is 0 (the function is `self` there).
    pub fn div_nonzero(&self, other: &Tensor) -> Tensor {
        self.binary_op(other, BinaryOp::DivNonzero, "div_nonzero", |a| {
            let [x, y] = [&a.inputs[0], &a.inputs[1]];
            // Where y != 0 as div's: d/dy = -out / y.
            let grad_y = || {
                let through_div = a.grad.mul(a.output).div_nonzero(y).neg();
                Tensor::where_cond(&y.eq_scalar(0.0), &through_div.zeros_like(), &through_div).sum_to(y.shape())
            };
            [
                a.needs[0].then(|| a.grad.div_nonzero(y).sum_to(x.shape())),
                a.needs[1].then(grad_y),
            ]
        })
    }

    /// Elementwise maximum; NaN in either operand gives NaN. At ties the gradient is split
    /// evenly; where either is NaN both operands get all of it (PyTorch's rule).
    pub fn maximum(&self, other: &Tensor) -> Tensor {
        self.binary_op(other, BinaryOp::Maximum, "maximum", |a| {
            let [x, y] = [&a.inputs[0], &a.inputs[1]];
            // 1 - [x loses] - [tie] / 2: comparisons with NaN are all false, so a NaN pair
            // passes the gradient to both.
            let half_ties = x.eq(y).mul_scalar(0.5);
            let share = |loses: Tensor| loses.add(&half_ties).neg().add_scalar(1.0);
            [
                a.needs[0].then(|| a.grad.mul(&share(x.lt(y))).sum_to(x.shape())),
                a.needs[1].then(|| a.grad.mul(&share(x.gt(y))).sum_to(y.shape())),
            ]
        })
    }

    /// Elementwise minimum, as [`Tensor::maximum`].
    pub fn minimum(&self, other: &Tensor) -> Tensor {
        self.neg().maximum(&other.neg()).neg()
    }

    /// 1 where `self > other` (broadcasting), else 0. A mask: no gradient flows.
    pub fn gt(&self, other: &Tensor) -> Tensor {
        self.constant_binary(other, BinaryOp::Gt, "gt")
    }
    pub fn ge(&self, other: &Tensor) -> Tensor {
        self.constant_binary(other, BinaryOp::Ge, "ge")
    }
    pub fn lt(&self, other: &Tensor) -> Tensor {
        self.constant_binary(other, BinaryOp::Lt, "lt")
    }
    pub fn le(&self, other: &Tensor) -> Tensor {
        self.constant_binary(other, BinaryOp::Le, "le")
    }
    pub fn eq(&self, other: &Tensor) -> Tensor {
        self.constant_binary(other, BinaryOp::Eq, "eq")
    }

    /// `if condition != 0 { self } else { other }`, elementwise with broadcasting of all three.
    /// The condition is a mask (no gradient flows into it).
    pub fn where_cond(condition: &Tensor, on_true: &Tensor, on_false: &Tensor) -> Tensor {
        if on_true.dtype() != on_false.dtype() {
            let dtype = crate::promote(on_true.dtype(), on_false.dtype());
            return Tensor::where_cond(condition, &on_true.to_dtype(dtype), &on_false.to_dtype(dtype));
        }
        if condition.dtype() != on_true.dtype() {
            // A mask of another dtype (PyTorch takes any): `condition == 0`, a mask of zeros
            // and ones in the condition's own dtype, converts exactly (a tiny nonzero f64 would
            // round to a zero f32), and picks the branches the other way round.
            let is_zero = condition.detach().eq_scalar(0.0).to_dtype(on_true.dtype());
            return Tensor::where_cond(&is_zero, on_false, on_true);
        }
        let shape = on_true.broadcast_shape_with(on_false, "where");
        let shape = broadcast_shapes(&shape, condition.shape()).unwrap_or_else(|| {
            panic!(
                "where: condition of shape {:?} does not broadcast to {:?}",
                condition.shape(),
                shape
            )
        });
        let cond = condition.detach().broadcast_to(&shape);
        let (t, f) = (on_true.broadcast_to(&shape), on_false.broadcast_to(&shape));
        let storage = cond.storage().where_cond(&t.storage(), &f.storage());
        Tensor::from_op(storage, shape, "where", &[&t, &f], move |a| {
            let zeros = a.grad.zeros_like();
            vec![
                a.needs[0].then(|| Tensor::where_cond(&cond, a.grad, &zeros)),
                a.needs[1].then(|| Tensor::where_cond(&cond, &zeros, a.grad)),
            ]
        })
    }
}

/// An activation function as a value: what an activation layer applies, or what a convolution
/// applies to its output in the same op ([`Tensor::conv2d_activated`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Relu,
    /// `x` where positive, `negative_slope * x` elsewhere.
    LeakyRelu(f64),
    Tanh,
    Sigmoid,
}

impl Activation {
    /// The elementwise kernel that computes it.
    pub fn kernel_op(self) -> UnaryOp {
        match self {
            Activation::Relu => UnaryOp::Relu,
            Activation::LeakyRelu(slope) => UnaryOp::LeakyRelu(slope),
            Activation::Tanh => UnaryOp::Tanh,
            Activation::Sigmoid => UnaryOp::Sigmoid,
        }
    }

    /// Whether its derivative can be read from its output alone, which an op that keeps only
    /// the activated output needs. True of all but a leaky ReLU of negative slope, which maps
    /// negative inputs to positive outputs (or of NaN slope).
    pub fn has_derivative_from_output(self) -> bool {
        match self {
            Activation::LeakyRelu(slope) => slope >= 0.0,
            _ => true,
        }
    }

    /// `grad` through the activation whose output is `y`. A (leaky) ReLU's `y > 0` exactly
    /// where its input is (for a slope >= 0); tanh' = 1 - y^2 and sigmoid' = y (1 - y), with
    /// `y` attached, so that these differentiate again.
    pub(crate) fn backward_from_output(self, grad: &Tensor, y: &Tensor) -> Tensor {
        match self {
            Activation::Relu => relu_backward(grad, y),
            Activation::LeakyRelu(slope) => {
                debug_assert!(
                    slope >= 0.0,
                    "a leaky ReLU of slope {slope} has no derivative from its output"
                );
                leaky_relu_backward(grad, y, slope)
            }
            Activation::Tanh => grad.mul(&y.square().neg().add_scalar(1.0)),
            Activation::Sigmoid => grad.mul(&y.mul(&y.neg().add_scalar(1.0))),
        }
    }
}

/// `grad` through `relu`, read from its output `y` (PyTorch's rule): 0 where `y <= 0`, else
/// `grad`, in one pass. Linear in `grad`, a step function of `y` (see [`leaky_relu_backward`]).
fn relu_backward(grad: &Tensor, y: &Tensor) -> Tensor {
    grad.binary_op(&y.detach(), BinaryOp::ReluGrad, "relu_backward", move |a| {
        [a.needs[0].then(|| relu_backward(a.grad, &a.inputs[1])), None]
    })
}

/// `grad` through `leaky_relu(x)`: `grad` where `x > 0`, `grad * slope` elsewhere, in one
/// pass. Linear in `grad` (its backward is itself, at the same `x`); a step function of `x`,
/// whose derivative is zero, so `x` enters as a constant.
fn leaky_relu_backward(grad: &Tensor, x: &Tensor, slope: f64) -> Tensor {
    grad.binary_op(
        &x.detach(),
        BinaryOp::LeakyReluGrad(slope),
        "leaky_relu_backward",
        move |a| {
            [
                a.needs[0].then(|| leaky_relu_backward(a.grad, &a.inputs[1], slope)),
                None,
            ]
        },
    )
}

macro_rules! std_op {
    ($trait:ident, $method:ident, $impl:ident) => {
        impl std::ops::$trait<&Tensor> for &Tensor {
            type Output = Tensor;
            fn $method(self, rhs: &Tensor) -> Tensor {
                self.$impl(rhs)
            }
        }
        impl std::ops::$trait<Tensor> for Tensor {
            type Output = Tensor;
            fn $method(self, rhs: Tensor) -> Tensor {
                Tensor::$impl(&self, &rhs)
            }
        }
        impl std::ops::$trait<f64> for &Tensor {
            type Output = Tensor;
            fn $method(self, rhs: f64) -> Tensor {
                // The scalar filled where `self` is (a launch on a GPU, not an upload); a
                // failure there is the device's, read back by the next read.
                let rhs = Storage::full_or_fail(rhs, 1, self.dtype(), self.device());
                self.$impl(&Tensor::constant(rhs, Vec::new()))
            }
        }
    };
}
std_op!(Add, add, add);
std_op!(Sub, sub, sub);
std_op!(Mul, mul, mul);
std_op!(Div, div, div);

impl std::ops::Neg for &Tensor {
    type Output = Tensor;
    fn neg(self) -> Tensor {
        Tensor::neg(self)
    }
}
