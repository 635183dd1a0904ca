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
    let direction = on_device_of(Tensor::randn(out.shape(), DType::F64, 0x5eed), &out)?;
    let direction_values = read(&direction)?;
    let projected = |out: &Tensor| -> Result<f64, String> {
        Ok(read(out)?.iter().zip(&direction_values).map(|(a, b)| a * b).sum())
    };
    let leaf_refs: Vec<&Tensor> = leaves.iter().collect();
    let analytic = if out.requires_grad() {
        grad(&[&out], &leaf_refs, Some(&[&direction]), false)
    } else {
        leaves.iter().map(|l| l.zeros_like()).collect()
    };
    for (i, x) in leaves.iter().enumerate() {
        let base = read(x)?;
        let analytic = read(&analytic[i])?;
        for j in 0..base.len() {
            let at = |delta: f64| {
                let mut values = base.clone();
                values[j] += delta;
                // Fresh leaves that require grad, evaluated with grad mode on: `f` may itself
                // differentiate (a gradient penalty, or gradgradcheck's first derivative).
                let mut moved: Vec<Tensor> = leaves.iter().map(|l| l.detach().requires_grad_(true)).collect();
                let values = Tensor::from_vec(values, x.shape()).map_err(|e| e.0)?;
                moved[i] = on_device_of(values, x)?.requires_grad_(true);
                projected(&f(&moved))
            };
            let numeric = (at(tol.eps)? - at(-tol.eps)?) / (2.0 * tol.eps);
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
    let Some(first) = inputs.first() else {
        return Err("gradgradcheck: no inputs to differentiate".into());
    };
    let out_shape = f(inputs).shape().to_vec();
    let v = on_device_of(Tensor::randn(&out_shape, DType::F64, 0xface), first)?;
    let n = inputs.len();
    let directions: Vec<Tensor> = inputs
        .iter()
        .enumerate()
        .map(|(i, x)| on_device_of(Tensor::randn(x.shape(), DType::F64, 1000 + i as u64), x))
        .collect::<Result<_, _>>()?;
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
            .expect("at least one input, checked above")
    };
    let mut all: Vec<Tensor> = inputs.to_vec();
    all.push(v);
    gradcheck(first_derivative, &all, tol).map_err(|e| format!("second order: {e}"))
}

/// `t` moved to `like`'s device, so that the checks run on whatever device their inputs are;
/// the device's error when it has failed.
fn on_device_of(t: Tensor, like: &Tensor) -> Result<Tensor, String> {
    t.to_device(like.device()).map_err(|e| e.0)
}

/// `t`'s values, or its device's error (a check on a failed GPU reports it, not a panic).
fn read(t: &Tensor) -> Result<Vec<f64>, String> {
    t.try_to_vec_f64().map_err(|e| e.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_checks_are_errors_not_panics() {
        let square = |x: &[Tensor]| x[0].mul(&x[0]).sum();
        let err = gradgradcheck(square, &[], Tolerance::default()).unwrap_err();
        assert!(err.contains("no inputs"), "{err}");
        let f32_input = Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap();
        let err = gradcheck(square, &[f32_input], Tolerance::default()).unwrap_err();
        assert!(err.contains("finite differences need f64"), "{err}");
        // And a right one passes, first and second order; a wrong rule would not.
        let x = Tensor::from_vec(vec![0.5f64, -1.5, 2.0], &[3]).unwrap();
        gradcheck(square, std::slice::from_ref(&x), Tolerance::default()).unwrap();
        gradgradcheck(square, &[x], Tolerance::default()).unwrap();
    }
}
