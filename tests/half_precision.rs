//! bf16 and f16 tensors end to end: WGAN-GP's gradient penalty through a small conv critic,
//! with its gradient in the critic's parameters (a double backward), computed in each 16-bit
//! dtype and compared with f64 on the same rounded values. Every op rounds once to 16 bits
//! (benches and kernels/tests/half.rs check the ops one by one); through the critic's layers
//! and both backward passes those roundings add up, hence the tolerances below: a few of the
//! format's ulps (bf16: 2^-8 = 0.4%, f16: 2^-11 = 0.05%) over a dozen ops.

use earthmover::wgan::penalty::{gradient_penalty, interpolate, interpolation_weights};
use earthmover::{grad, ConvOptions, DType, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn critic_params(dtype: DType) -> Vec<Tensor> {
    let shapes: [&[usize]; 6] = [&[4, 1, 3, 3], &[4], &[6, 4, 3, 3], &[6], &[1, 6 * 4 * 4], &[1]];
    shapes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Tensor::randn(s, DType::F32, 100 + i as u64)
                .mul_scalar(0.3)
                .to_dtype(dtype)
                .requires_grad_(true)
        })
        .collect()
}

fn critic(p: &[Tensor], x: &Tensor) -> Tensor {
    let s2 = ConvOptions::new().stride(2).padding(1);
    let h = x.conv2d(&p[0], Some(&p[1]), s2).leaky_relu(0.2);
    let h = h.conv2d(&p[2], Some(&p[3]), s2).leaky_relu(0.2);
    h.flatten(1).linear(&p[4], Some(&p[5]))
}

/// The penalty and its gradient in every parameter, all in `dtype`, from inputs and
/// parameters first rounded to `rounded_to` (so that f64 sees the 16-bit run's exact values).
fn penalty_and_gradients(dtype: DType, rounded_to: DType) -> (f64, Vec<Vec<f64>>, Vec<DType>) {
    let params: Vec<Tensor> = critic_params(rounded_to)
        .iter()
        .map(|p| p.detach().to_dtype(dtype).requires_grad_(true))
        .collect();
    let real = Tensor::randn(&[5, 1, 13, 13], DType::F32, 1)
        .to_dtype(rounded_to)
        .to_dtype(dtype);
    let fake = Tensor::randn(&[5, 1, 13, 13], DType::F32, 2)
        .to_dtype(rounded_to)
        .to_dtype(dtype);
    let eps = interpolation_weights(&real, &mut StdRng::seed_from_u64(3))
        .unwrap()
        .to_dtype(rounded_to)
        .to_dtype(dtype);
    let x_hat = interpolate(&real, &fake, &eps);
    let penalty = gradient_penalty(|x| critic(&params, x), &x_hat, 10.0).penalty;
    let refs: Vec<&Tensor> = params.iter().collect();
    let grads = grad(&[&penalty], &refs, None, false);
    (
        penalty.item(),
        grads.iter().map(|g| g.to_vec_f64()).collect(),
        grads.iter().map(|g| g.dtype()).collect(),
    )
}

/// The largest of the parameters' relative errors, each as the norm of the difference over
/// the norm of the f64 gradient.
fn worst_relative_error(got: &[Vec<f64>], exact: &[Vec<f64>]) -> f64 {
    got.iter()
        .zip(exact)
        .map(|(g, e)| {
            let diff: f64 = g.iter().zip(e).map(|(a, b)| (a - b) * (a - b)).sum::<f64>().sqrt();
            let norm: f64 = e.iter().map(|b| b * b).sum::<f64>().sqrt();
            diff / norm
        })
        .fold(0.0, f64::max)
}

#[test]
fn the_gradient_penalty_and_its_double_backward_in_bf16_and_f16_track_f64() {
    for (half, tolerance) in [(DType::BF16, 0.04), (DType::F16, 0.003)] {
        let (penalty, grads, dtypes) = penalty_and_gradients(half, half);
        let (exact_penalty, exact_grads, _) = penalty_and_gradients(DType::F64, half);
        assert!(dtypes.iter().all(|d| *d == half), "{half}: gradients in {dtypes:?}");
        let penalty_error = (penalty - exact_penalty).abs() / exact_penalty.abs();
        assert!(
            penalty_error < tolerance,
            "{half}: penalty {penalty} against {exact_penalty}"
        );
        let error = worst_relative_error(&grads, &exact_grads);
        println!("{half}: penalty off by {penalty_error:.2e}, gradients by {error:.2e} (relative to f64)");
        assert!(
            error < tolerance,
            "{half}: gradients off by {error:.4} (tolerance {tolerance})"
        );
        // The tolerance is not loose: an f32 run is far closer.
        let (_, f32_grads, _) = penalty_and_gradients(DType::F32, half);
        assert!(worst_relative_error(&f32_grads, &exact_grads) < tolerance / 20.0);
    }
}

#[test]
fn a_16_bit_tensor_converts_and_prints_like_pytorchs() {
    let x = Tensor::from_vec(vec![1.0f32, 1.0 + 1.0 / 256.0, 65520.0, -0.1], &[4]).unwrap();
    let bf = x.to_dtype(DType::BF16);
    assert_eq!(bf.dtype(), DType::BF16);
    assert_eq!(bf.to_vec_f64()[..3], [1.0, 1.0, 65536.0]);
    let f = x.to_dtype(DType::F16);
    assert_eq!(f.to_vec_f64()[2], f64::INFINITY, "65,520 is past f16's range");
    assert!(bf.to_string().contains("dtype=bf16"), "{bf}");
    assert!(format!("{f:?}").contains("dtype=f16"), "{f:?}");
    // Built from 16-bit host values directly.
    let h = Tensor::from_vec(vec![earthmover::tensor::bf16::from_f32(0.5); 3], &[3]).unwrap();
    assert_eq!((h.dtype(), h.to_vec_f64()), (DType::BF16, vec![0.5; 3]));
    // The gradient of a conversion goes back to the source's dtype.
    let w = Tensor::from_vec(vec![0.25f32, 2.0], &[2]).unwrap().requires_grad_(true);
    w.to_dtype(DType::BF16).square().sum().backward();
    let g = w.grad().unwrap();
    assert_eq!((g.dtype(), g.to_vec_f64()), (DType::F32, vec![0.5, 4.0]));
}

/// Layers the size of the DCGAN networks' (batch 32, 32 and 64 channels, 5x5, stride 2), in
/// bf16 through the tensor API: a convolution and a transposed one, forward and both
/// gradients. Their channels and batch are what the CPU's AMX kernels take (multiples of 32),
/// so on a processor with AMX every product here runs on the AMX tiles, elsewhere on the bf16
/// vector tile. Each result against f64 on the same bf16 values: one rounding to bf16 (2^-8
/// relative) plus the f32 sums' error.
#[test]
fn bf16_convolutions_of_dcgan_layers_track_f64() {
    let bf16 = |shape: &[usize], seed: u64| Tensor::randn(shape, DType::F32, seed).to_dtype(DType::BF16);
    let opts = ConvOptions::new().stride(2).padding(2);
    let cases = [
        // (input, weight, transposed)
        (bf16(&[32, 32, 14, 14], 1), bf16(&[64, 32, 5, 5], 2), false),
        (bf16(&[32, 64, 7, 7], 3), bf16(&[64, 32, 5, 5], 4), true),
    ];
    for (x, w, transposed) in cases {
        let run = |dtype: DType| -> Vec<Vec<f64>> {
            let x = x.to_dtype(dtype).detach().requires_grad_(true);
            let w = w.to_dtype(dtype).detach().requires_grad_(true);
            let b = bf16(&[if transposed { 32 } else { 64 }], 5)
                .to_dtype(dtype)
                .detach()
                .requires_grad_(true);
            let y = if transposed {
                x.conv_transpose2d(&w, Some(&b), opts.output_padding(1))
            } else {
                x.conv2d(&w, Some(&b), opts)
            };
            // A bf16 weighting of the outputs: the gradient of y is exactly these values.
            let weighting = bf16(y.shape(), 6).to_dtype(dtype);
            let loss = y.mul(&weighting).sum();
            let grads = grad(&[&loss], &[&x, &w], None, false);
            assert_eq!(y.dtype(), dtype);
            [y.to_vec_f64(), grads[0].to_vec_f64(), grads[1].to_vec_f64()].to_vec()
        };
        let (half, exact) = (run(DType::BF16), run(DType::F64));
        for (what, (got, want)) in ["output", "input gradient", "weight gradient"]
            .iter()
            .zip(half.iter().zip(&exact))
        {
            let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for (i, (g, w)) in got.iter().zip(want).enumerate() {
                assert!(
                    (g - w).abs() <= 2f64.powi(-8) * w.abs() + 1e-4 * scale,
                    "transposed {transposed}, {what}, element {i}: {g} against {w}"
                );
            }
        }
    }
}
