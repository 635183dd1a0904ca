//! 2-D convolutions, with PyTorch's weight layouts and options.
//!
//! Three primitives, closed under differentiation (each one's backward is made of the three,
//! and of a sum for the bias):
//! - `conv2d`: `y = C_w(x) + b` (through an activation, optionally);
//! - `conv2d_input_adjoint` (the transpose `C_w^T`, plus a bias, through an activation):
//!   conv2d's input gradient (neither), and conv_transpose2d's forward;
//! - [`Tensor::conv2d_weight_grad`]: conv2d's weight gradient, bilinear in `(x, gy)`.
//!
//! The kernels add the bias as their sums start; its gradient is the output gradient summed
//! over all but the channels. So the gradient penalty's second derivatives need no new kernel.
//!
//! `conv2d_activated` and `conv_transpose2d_activated` also apply an activation as the kernel
//! writes its output, and keep only the activated output: the activation's derivative is read
//! from it ([`Activation::has_derivative_from_output`]), then the backward rule is the plain one.

use crate::autocast::product_operand;
use crate::autograd::BackwardArgs;
use crate::{Activation, Tensor};
use earthmover_kernels::ConvGeometry;

/// Stride, padding, dilation and (for transposed convs) output padding, per spatial axis
/// `(h, w)`. `ConvOptions::default()` is PyTorch's: stride 1, no padding, dilation 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvOptions {
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub dilation: (usize, usize),
    pub output_padding: (usize, usize),
}

impl Default for ConvOptions {
    fn default() -> Self {
        ConvOptions {
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            output_padding: (0, 0),
        }
    }
}

impl ConvOptions {
    pub fn new() -> Self {
        Self::default()
    }
    /// The same stride on both axes.
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = (s, s);
        self
    }
    pub fn padding(mut self, p: usize) -> Self {
        self.padding = (p, p);
        self
    }
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = (d, d);
        self
    }
    pub fn output_padding(mut self, p: usize) -> Self {
        self.output_padding = (p, p);
        self
    }
}

/// A convolution's input, weight and bias as it computes with them: in the autocast dtype
/// under [`crate::autocast`], and all in one dtype (the widest, [`crate::promote`]).
fn product_operands(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> (Tensor, Tensor, Option<Tensor>) {
    let (x, weight, bias) = (product_operand(x), product_operand(weight), bias.map(product_operand));
    let dtype = bias.iter().fold(crate::promote(x.dtype(), weight.dtype()), |d, b| {
        crate::promote(d, b.dtype())
    });
    (
        x.to_dtype(dtype),
        weight.to_dtype(dtype),
        bias.map(|b| b.to_dtype(dtype)),
    )
}

fn dims4(t: &Tensor, what: &str, op: &str) -> [usize; 4] {
    t.shape()
        .try_into()
        .unwrap_or_else(|_| panic!("{op}: {what} must have 4 dims, got shape {:?}", t.shape()))
}

impl Tensor {
    /// 2-D convolution: `self: [N, C, H, W]`, `weight: [O, C, kh, kw]`, `bias: [O]`; returns
    /// `[N, O, Ho, Wo]`.
    pub fn conv2d(&self, weight: &Tensor, bias: Option<&Tensor>, opts: ConvOptions) -> Tensor {
        self.conv2d_with(weight, bias, opts, None)
    }

    /// `activation(conv2d(...))` in one op: only the activated output is kept, and the kernel
    /// (CPU or GPU) applies the activation as it writes the output, so the pre-activation
    /// output is never stored and costs no pass of its own. The same values and gradients as
    /// `conv2d` then `activation`, bit for bit on the CPU.
    pub fn conv2d_activated(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        opts: ConvOptions,
        activation: Activation,
    ) -> Tensor {
        fused_or_separate(activation, |act| self.conv2d_with(weight, bias, opts, act))
    }

    fn conv2d_with(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        opts: ConvOptions,
        activation: Option<Activation>,
    ) -> Tensor {
        assert_eq!(
            opts.output_padding,
            (0, 0),
            "conv2d: output_padding applies to conv_transpose2d only"
        );
        let input = dims4(self, "input", "conv2d");
        let weight_shape = dims4(weight, "weight", "conv2d");
        let g = ConvGeometry::conv2d(input, weight_shape, opts.stride, opts.padding, opts.dilation)
            .unwrap_or_else(|e| panic!("{e}"));
        let o = g.out_channels;
        check_bias(bias, o, "conv2d");
        let (x, weight, bias) = product_operands(self, weight, bias);
        conv2d_primitive(&x, &weight, bias.as_ref(), activation, g)
    }

    /// 2-D transposed convolution: `self: [N, Cin, H, W]`, `weight: [Cin, Cout, kh, kw]`
    /// (PyTorch's layout), `bias: [Cout]`; returns `[N, Cout, Ho, Wo]` with
    /// `Ho = (H - 1) stride - 2 padding + dilation (kh - 1) + output_padding + 1`.
    pub fn conv_transpose2d(&self, weight: &Tensor, bias: Option<&Tensor>, opts: ConvOptions) -> Tensor {
        self.conv_transpose2d_with(weight, bias, opts, None)
    }

    /// `activation(conv_transpose2d(...))` in one op, as [`Tensor::conv2d_activated`].
    pub fn conv_transpose2d_activated(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        opts: ConvOptions,
        activation: Activation,
    ) -> Tensor {
        fused_or_separate(activation, |act| self.conv_transpose2d_with(weight, bias, opts, act))
    }

    fn conv_transpose2d_with(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        opts: ConvOptions,
        activation: Option<Activation>,
    ) -> Tensor {
        let input = dims4(self, "input", "conv_transpose2d");
        let weight_shape = dims4(weight, "weight", "conv_transpose2d");
        let (s, p, d, op) = (opts.stride, opts.padding, opts.dilation, opts.output_padding);
        let g = ConvGeometry::conv_transpose2d(input, weight_shape, s, p, op, d).unwrap_or_else(|e| panic!("{e}"));
        let cout = g.in_channels;
        check_bias(bias, cout, "conv_transpose2d");
        let (x, weight, bias) = product_operands(self, weight, bias);
        conv2d_input_adjoint(&x, &weight, bias.as_ref(), activation, g)
    }

    /// The gradient of `<conv2d(self, w), grad_output>` with respect to a conv weight of
    /// `kernel_size`: conv2d's weight gradient, as a differentiable op of its own.
    /// `self: [N, C, H, W]`, `grad_output: [N, O, Ho, Wo]`; returns `[O, C, kh, kw]`.
    pub fn conv2d_weight_grad(&self, grad_output: &Tensor, kernel_size: (usize, usize), opts: ConvOptions) -> Tensor {
        let [n, c, h, w] = dims4(self, "input", "conv2d_weight_grad");
        let [gn, o, ho, wo] = dims4(grad_output, "grad_output", "conv2d_weight_grad");
        let weight = [o, c, kernel_size.0, kernel_size.1];
        let g = ConvGeometry::conv2d([n, c, h, w], weight, opts.stride, opts.padding, opts.dilation)
            .unwrap_or_else(|e| panic!("conv2d_weight_grad: {e}"));
        assert!(
            n == gn && (g.out_h, g.out_w) == (ho, wo),
            "conv2d_weight_grad: grad_output of shape {:?} is not the output of input {:?} with kernel {kernel_size:?} and {opts:?}",
            grad_output.shape(),
            self.shape()
        );
        conv2d_weight_grad(self, grad_output, g)
    }
}

/// `op(Some(activation))`, the activation fused into the op, where its derivative can be read
/// from the output; `op(None)` then the activation as an op of its own where it cannot.
fn fused_or_separate(activation: Activation, op: impl FnOnce(Option<Activation>) -> Tensor) -> Tensor {
    if activation.has_derivative_from_output() {
        op(Some(activation))
    } else {
        op(None).activation(activation)
    }
}

fn check_bias(bias: Option<&Tensor>, channels: usize, op: &str) {
    if let Some(b) = bias {
        assert_eq!(
            b.shape(),
            &[channels],
            "{op}: bias of shape {:?} for {channels} output channels",
            b.shape()
        );
    }
}

/// The inputs of a convolution with an optional bias, in the order of their gradients.
fn with_bias<'a>(a: &'a Tensor, w: &'a Tensor, bias: Option<&'a Tensor>) -> Vec<&'a Tensor> {
    [a, w].into_iter().chain(bias).collect()
}

/// The bias's gradient: the output gradient `[N, C, H, W]` summed over all but the channels.
fn bias_grad(grad: &Tensor) -> Tensor {
    grad.sum_dims(&[0, 2, 3], false)
}

/// The gradient with respect to the sums of an op that applied `activation` to them, from the
/// gradient of its output.
fn through_activation(activation: Option<Activation>, a: &BackwardArgs) -> Tensor {
    match activation {
        None => a.grad.clone(),
        Some(act) => act.backward_from_output(a.grad, a.output),
    }
}

/// `act(C_w x + b)`, the bias added by the kernel as its sums start, the activation as it
/// writes them.
fn conv2d_primitive(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    activation: Option<Activation>,
    g: ConvGeometry,
) -> Tensor {
    let bias_storage = bias.map(|b| b.storage());
    let op = activation.map(Activation::kernel_op);
    let storage = x
        .storage()
        .conv2d_forward(&w.storage(), bias_storage.as_deref(), op, &g);
    let shape = vec![g.batch, g.out_channels, g.out_h, g.out_w];
    let name = if activation.is_some() {
        "conv2d_activated"
    } else {
        "conv2d"
    };
    Tensor::from_op(storage, shape, name, &with_bias(x, w, bias), move |a| {
        let gy = &through_activation(activation, a);
        let (x, w) = (&a.inputs[0], &a.inputs[1]);
        vec![
            a.needs[0].then(|| conv2d_input_adjoint(gy, w, None, None, g)),
            a.needs[1].then(|| conv2d_weight_grad(x, gy, g)),
        ]
        .into_iter()
        .chain(a.needs.get(2).map(|&needed| needed.then(|| bias_grad(gy))))
        .collect()
    })
}

/// `act(C_w^T y + b)`: maps a conv output `[N, O, Ho, Wo]` back to an input `[N, C, H, W]`.
fn conv2d_input_adjoint(
    y: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    activation: Option<Activation>,
    g: ConvGeometry,
) -> Tensor {
    let bias_storage = bias.map(|b| b.storage());
    let op = activation.map(Activation::kernel_op);
    let storage = y
        .storage()
        .conv2d_input_adjoint(&w.storage(), bias_storage.as_deref(), op, &g);
    let shape = vec![g.batch, g.in_channels, g.in_h, g.in_w];
    let name = if activation.is_some() {
        "conv_transpose2d_activated"
    } else {
        "conv_transpose2d"
    };
    Tensor::from_op(storage, shape, name, &with_bias(y, w, bias), move |a| {
        // <C_w^T y, G> = <y, C_w G>: linear in y through C_w, and in w through the weight grad.
        let gx = &through_activation(activation, a);
        let (y, w) = (&a.inputs[0], &a.inputs[1]);
        vec![
            a.needs[0].then(|| conv2d_primitive(gx, w, None, None, g)),
            a.needs[1].then(|| conv2d_weight_grad(gx, y, g)),
        ]
        .into_iter()
        .chain(a.needs.get(2).map(|&needed| needed.then(|| bias_grad(gx))))
        .collect()
    })
}

/// `W(x, gy)` with `<C_w x, gy> = <w, W(x, gy)>`.
fn conv2d_weight_grad(x: &Tensor, gy: &Tensor, g: ConvGeometry) -> Tensor {
    let storage = x.storage().conv2d_weight_grad(&gy.storage(), &g);
    let shape = vec![g.out_channels, g.in_channels, g.kernel_h, g.kernel_w];
    Tensor::from_op(storage, shape, "conv2d_weight_grad", &[x, gy], move |a| {
        // <W(x, gy), G> = <C_G x, gy>: in x that is C_G^T gy, in gy it is C_G x.
        let (x, gy, gw) = (&a.inputs[0], &a.inputs[1], a.grad);
        vec![
            a.needs[0].then(|| conv2d_input_adjoint(gy, gw, None, None, g)),
            a.needs[1].then(|| conv2d_primitive(x, gw, None, None, g)),
        ]
    })
}
