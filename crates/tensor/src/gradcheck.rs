//! Finite-difference checks of analytic gradients, first and second order, in f64.
//!
//! [`gradcheck`] compares `grad(f)` with central differences of `f`; [`gradgradcheck`] does the
//! same for the function `inputs -> grad(f)(inputs)`, which checks every backward rule's own
//! backward. Both project vector outputs onto fixed random directions, as PyTorch's do.

use crate::autograd::grad;
use crate::{DType, Tensor};

/// Tolerances: an analytic value `a` matches a numeric `n` when `|a - n| <= atol + rtol |n|`.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    /// The finite-difference step.
    pub eps: f64,
    pub atol: f64,
    pub rtol: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance {
            eps: 1e-6,
            atol: 1e-5,
            rtol: 1e-3,
        }
    }
}

/// Check the gradient of `f` at `inputs` (f64 tensors) against central differences.
/// Returns a description of the first mismatch.
pub fn gradcheck(f: impl Fn(&[Tensor]) -> Tensor, inputs: &[Tensor], tol: Tolerance) -> Result<(), String> {
    for (i, x) in inputs.iter().enumerate() {
        if x.dtype() != DType::F64 {
            return Err(format!(
                "gradcheck: input {i} is {}, finite differences need f64",
                x.dtype()
            ));
        }
    }
    let leaves: Vec<Tensor> = inputs.iter().map(|x| x.detach().requires_grad_(true)).collect();
    let out = f(&leaves);
    // Project the output on a fixed random direction: the check covers every output element.
    let direction = on_device_of(Tensor::randn(out.shape(), DType::F64, 0x5eed), &out);
    let projected = |out: &Tensor| -> f64 {
        out.to_vec_f64()
            .iter()
            .zip(direction.to_vec_f64())
            .map(|(a, b)| a * b)
            .sum()
    };
    let leaf_refs: Vec<&Tensor> = leaves.iter().collect();
    let analytic = if out.requires_grad() {
        grad(&[&out], &leaf_refs, Some(&[&direction]), false)
    } else {
        leaves.iter().map(|l| l.zeros_like()).collect()
    };
    for (i, x) in leaves.iter().enumerate() {
        let base = x.to_vec_f64();
        let analytic = analytic[i].to_vec_f64();
        for j in 0..base.len() {
            let at = |delta: f64| {
                let mut values = base.clone();
                values[j] += delta;
                // Fresh leaves that require grad, evaluated with grad mode on: `f` may itself
                // differentiate (a gradient penalty, or gradgradcheck's first derivative).
                let mut moved: Vec<Tensor> = leaves.iter().map(|l| l.detach().requires_grad_(true)).collect();
                moved[i] =
                    on_device_of(Tensor::from_vec(values, x.shape()).expect("same shape"), x).requires_grad_(true);
                projected(&f(&moved))
            };
            let numeric = (at(tol.eps) - at(-tol.eps)) / (2.0 * tol.eps);
            let a = analytic[j];
            if !a.is_finite() || (a - numeric).abs() > tol.atol + tol.rtol * numeric.abs() {
                return Err(format!(
                    "gradient mismatch at input {i} (shape {:?}) element {j}: analytic {a:.9e}, numeric {numeric:.9e}",
                    x.shape()
                ));
            }
        }
    }
    Ok(())
}

/// Check the second derivatives of `f`: gradcheck of `(inputs, v) -> grad(f(inputs), inputs, v)`
/// with `create_graph`, projected on random directions.
pub fn gradgradcheck(f: impl Fn(&[Tensor]) -> Tensor, inputs: &[Tensor], tol: Tolerance) -> Result<(), String> {
    let out_shape = f(inputs).shape().to_vec();
    let v = on_device_of(Tensor::randn(&out_shape, DType::F64, 0xface), &inputs[0]);
    let n = inputs.len();
    let directions: Vec<Tensor> = inputs
        .iter()
        .enumerate()
        .map(|(i, x)| on_device_of(Tensor::randn(x.shape(), DType::F64, 1000 + i as u64), x))
        .collect();
    let first_derivative = |all: &[Tensor]| -> Tensor {
        let (xs, v) = (&all[..n], &all[n]);
        let out = f(xs);
        let refs: Vec<&Tensor> = xs.iter().collect();
        let grads = if out.requires_grad() {
            grad(&[&out], &refs, Some(&[v]), true)
        } else {
            xs.iter().map(|x| x.zeros_like()).collect()
        };
        grads
            .iter()
            .zip(&directions)
            .map(|(g, d)| g.mul(d).sum())
            .reduce(|a, b| a.add(&b))
            .expect("at least one input")
    };
    let mut all: Vec<Tensor> = inputs.to_vec();
    all.push(v);
    gradcheck(first_derivative, &all, tol).map_err(|e| format!("second order: {e}"))
}

/// `t` moved to `like`'s device, so that the checks run on whatever device their inputs are.
fn on_device_of(t: Tensor, like: &Tensor) -> Tensor {
    t.to_device(like.device()).expect("the device of an existing tensor")
}
