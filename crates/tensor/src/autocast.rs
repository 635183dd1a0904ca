//! Mixed precision, as `torch.autocast`: inside [`autocast`]`(DType::BF16, || ...)` the
//! convolutions, transposed convolutions and matrix products (`linear` included) take their
//! f32 operands in bf16 (or f16) and give a bf16 result; every other op runs in the dtype of
//! its inputs, and an op on two dtypes promotes to the wider ([`promote`]), so that what follows
//! a bf16 layer and an f32 tensor is f32 again.
//!
//! The f32 weights stay the masters: a layer casts them for its product, and the cast's
//! backward rule ([`Tensor::to_dtype`]) hands their gradient back in f32. The backward passes
//! of the products run in bf16 too, because they read the bf16 operands the forward pass
//! saved. What a training step must keep in f32 (losses, the gradient penalty's norms, the
//! Wasserstein estimate) it casts back with `to_dtype(DType::F32)` before reducing.
//!
//! The setting belongs to the calling thread and is restored when the closure returns, also by
//! a panic.

use crate::{DType, Tensor};
use std::cell::Cell;

thread_local! {
    static AUTOCAST: Cell<Option<DType>> = const { Cell::new(None) };
}

/// Run `f` with the convolutions and matrix products inside computing in `dtype` (`BF16` or
/// `F16`; `F32` turns autocast off inside `f`). Nested calls override the outer one.
///
/// # Panics
/// When `dtype` is `F64`: autocast narrows, it never widens.
pub fn autocast<R>(dtype: DType, f: impl FnOnce() -> R) -> R {
    assert!(
        dtype != DType::F64,
        "autocast: f64 is not a lower precision (use to_dtype)"
    );
    struct Restore(Option<DType>);
    impl Drop for Restore {
        fn drop(&mut self) {
            AUTOCAST.with(|a| a.set(self.0));
        }
    }
    let inner = (dtype != DType::F32).then_some(dtype);
    let _restore = Restore(AUTOCAST.with(|a| a.replace(inner)));
    f()
}

/// The dtype the products compute in on this thread ([`autocast`]), if any.
pub fn autocast_dtype() -> Option<DType> {
    AUTOCAST.with(|a| a.get())
}

/// `t` as a product under autocast reads it: an f32 tensor in the autocast dtype, anything
/// else as it is (f64 stays f64, as in PyTorch).
pub(crate) fn product_operand(t: &Tensor) -> Tensor {
    match autocast_dtype() {
        Some(dtype) if t.dtype() == DType::F32 => t.to_dtype(dtype),
        _ => t.clone(),
    }
}

/// The dtype an op on `a` and `b` computes in: the wider of the two (f64 over f32 over the
/// 16-bit floats); bf16 with f16 is f32, which holds both exactly. PyTorch's promotion.
pub fn promote(a: DType, b: DType) -> DType {
    fn rank(d: DType) -> u8 {
        match d {
            DType::BF16 | DType::F16 => 0,
            DType::F32 => 1,
            DType::F64 => 2,
        }
    }
    match (a, b) {
        _ if a == b => a,
        (DType::BF16, DType::F16) | (DType::F16, DType::BF16) => DType::F32,
        _ if rank(a) >= rank(b) => a,
        _ => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConvOptions;

    #[test]
    fn products_compute_in_the_autocast_dtype_and_gradients_reach_f32_masters() {
        let x = Tensor::randn(&[2, 3, 6, 6], DType::F32, 1);
        let w = Tensor::randn(&[4, 3, 3, 3], DType::F32, 2).requires_grad_(true);
        let b = Tensor::randn(&[4], DType::F32, 3).requires_grad_(true);
        let lin = Tensor::randn(&[5, 4 * 4 * 4], DType::F32, 4).requires_grad_(true);
        let out = autocast(DType::BF16, || {
            let h = x.conv2d(&w, Some(&b), ConvOptions::new()).leaky_relu(0.2);
            assert_eq!(h.dtype(), DType::BF16, "conv2d under autocast");
            let y = h.flatten(1).linear(&lin, None);
            assert_eq!(y.dtype(), DType::BF16, "linear under autocast");
            y
        });
        assert_eq!(autocast_dtype(), None, "restored");
        assert_eq!(
            x.conv2d(&w, None, ConvOptions::new()).dtype(),
            DType::F32,
            "off outside"
        );
        let loss = out.to_dtype(DType::F32).square().mean();
        loss.backward();
        for p in [&w, &b, &lin] {
            assert_eq!(p.grad().unwrap().dtype(), DType::F32);
        }
        // Close to the f32 computation: bf16 keeps 8 bits.
        let exact = x
            .conv2d(&w.detach(), Some(&b.detach()), ConvOptions::new())
            .leaky_relu(0.2)
            .flatten(1)
            .linear(&lin.detach(), None);
        for (got, want) in out.to_vec_f64().iter().zip(exact.to_vec_f64()) {
            assert!((got - want).abs() <= 0.03 * (1.0 + want.abs()), "{got} against {want}");
        }
    }

    #[test]
    fn mixed_dtypes_promote_to_the_wider() {
        assert_eq!(promote(DType::BF16, DType::F32), DType::F32);
        assert_eq!(promote(DType::F64, DType::F16), DType::F64);
        assert_eq!(promote(DType::BF16, DType::F16), DType::F32);
        let a = Tensor::from_vec(vec![1.5f32, 2.0], &[2])
            .unwrap()
            .to_dtype(DType::BF16)
            .requires_grad_(true);
        let b = Tensor::from_vec(vec![0.25f32, 0.5], &[2]).unwrap().requires_grad_(true);
        let sum = a.add(&b);
        assert_eq!((sum.dtype(), sum.to_vec_f64()), (DType::F32, vec![1.75, 2.5]));
        sum.mul(&b).sum().backward();
        assert_eq!(
            a.grad().unwrap().dtype(),
            DType::BF16,
            "each input's gradient in its own dtype"
        );
        assert_eq!(b.grad().unwrap().to_vec_f64(), vec![2.0, 3.0]);
    }

    #[test]
    fn a_0d_tensor_takes_the_dtype_of_one_with_dims_as_pytorch_promotes() {
        let v = Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap().requires_grad_(true);
        let s = Tensor::scalar(2.0, DType::F64).requires_grad_(true);
        let product = v.mul(&s);
        assert_eq!((product.dtype(), product.to_vec_f64()), (DType::F32, vec![2.0, 4.0]));
        product.sum().backward();
        assert_eq!(
            s.grad().unwrap().dtype(),
            DType::F64,
            "the 0-d operand's gradient in its dtype"
        );
        assert_eq!(s.grad().unwrap().to_vec_f64(), [3.0]);
        let h = v.detach().to_dtype(DType::BF16);
        assert_eq!(h.add(&Tensor::scalar(1.0, DType::F32)).dtype(), DType::BF16);
        // Two 0-d tensors, or two with dims, promote to the wider.
        assert_eq!(Tensor::scalar(1.0, DType::F32).add(&s).dtype(), DType::F64);
        assert_eq!(v.add(&v.detach().to_dtype(DType::F64)).dtype(), DType::F64);
    }

    #[test]
    fn masks_of_another_dtype_and_concatenations_of_mixed_dtypes_promote() {
        let x = Tensor::from_vec(vec![-1.0f32, 2.0, 0.0], &[3]).unwrap();
        let (on, off) = (
            Tensor::from_vec(vec![10.0f64, 20.0, 30.0], &[3]).unwrap(),
            Tensor::zeros(&[3], DType::F64),
        );
        let picked = Tensor::where_cond(&x.gt_scalar(0.0), &on, &off);
        assert_eq!(
            (picked.dtype(), picked.to_vec_f64()),
            (DType::F64, vec![0.0, 20.0, 0.0])
        );
        // A nonzero too small for f32 still counts as true.
        let tiny = Tensor::from_vec(vec![1e-300f64, 0.0, -1e-300], &[3]).unwrap();
        let picked = Tensor::where_cond(&tiny, &x, &x.neg());
        assert_eq!(picked.to_vec_f64(), [-1.0, -2.0, 0.0]);

        let a = Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap().requires_grad_(true);
        let b = Tensor::from_vec(vec![3.0f64], &[1]).unwrap().requires_grad_(true);
        let joined = Tensor::concat(&[&a, &b], 0);
        assert_eq!((joined.dtype(), joined.to_vec_f64()), (DType::F64, vec![1.0, 2.0, 3.0]));
        joined.mul_scalar(2.0).sum().backward();
        assert_eq!(a.grad().unwrap().dtype(), DType::F32);
        assert_eq!(b.grad().unwrap().to_vec_f64(), [2.0]);
    }

    #[test]
    fn autocast_is_restored_after_a_panic_and_nests() {
        let caught = std::panic::catch_unwind(|| autocast(DType::BF16, || panic!("inside")));
        assert!(caught.is_err());
        assert_eq!(autocast_dtype(), None);
        autocast(DType::BF16, || {
            autocast(DType::F16, || assert_eq!(autocast_dtype(), Some(DType::F16)));
            autocast(DType::F32, || assert_eq!(autocast_dtype(), None));
            assert_eq!(autocast_dtype(), Some(DType::BF16));
        });
    }
}
