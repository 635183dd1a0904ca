//! Finite-difference checks of the convolutions (`crates/tensor/src/ops/conv.rs`: conv2d,
//! conv_transpose2d, their fused-activation forms, conv2d_weight_grad), first and second
//! order across a grid of strides, paddings, dilations and output paddings, on every device
//! (see `common::devices`); and the fused activations against the separate ops, bit for bit.
//!
//! Batch 3, 2 -> 3 channels on 5x7 images (3x4 maps for the transpose): odd sizes, so that a
//! swapped axis or an off-by-one in the geometry shows.
//!
//! `cargo test --test grad_conv` (add `--features emulator` for the CUDA emulator).

mod common;

use common::{check, check2, check_second_order, for_each_device, on, randn};
use earthmover::tensor::Activation;
use earthmover::{grad, ConvOptions, DType};

/// Kernel shapes of the conv grids: square, and non-square to catch swapped axes.
const KERNELS: [(usize, usize); 2] = [(3, 3), (3, 2)];

fn conv_options(stride: usize, padding: usize, dilation: usize) -> ConvOptions {
    ConvOptions::new().stride(stride).padding(padding).dilation(dilation)
}

/// conv2d's grid: strides 1 and 2, paddings 0, 1 and 2, dilations 1 and 2, plus options that
/// differ between the axes (so that a swapped h and w shows) and a stride larger than the
/// kernel.
fn conv2d_grid() -> Vec<ConvOptions> {
    let mut grid = Vec::new();
    for stride in [1, 2] {
        for padding in [0, 1, 2] {
            for dilation in [1, 2] {
                grid.push(conv_options(stride, padding, dilation));
            }
        }
    }
    grid.push(ConvOptions {
        stride: (2, 1),
        padding: (1, 2),
        dilation: (1, 2),
        output_padding: (0, 0),
    });
    grid.push(ConvOptions {
        stride: (1, 2),
        padding: (0, 1),
        dilation: (2, 1),
        output_padding: (0, 0),
    });
    // A stride of 3 with kernel width 2 skips input columns entirely.
    grid.push(ConvOptions {
        stride: (3, 3),
        padding: (1, 0),
        dilation: (1, 1),
        output_padding: (0, 0),
    });
    grid
}

/// conv_transpose2d's grid: conv2d's, times output_padding 0 and 1 where it is smaller than
/// max(stride, dilation) (so stride 1 with dilation 2 gets output_padding 1 too).
fn conv_transpose2d_grid() -> Vec<ConvOptions> {
    let mut grid = Vec::new();
    for base in conv2d_grid() {
        for output_padding in [0, 1] {
            let allowed = |stride: usize, dilation: usize| output_padding < stride.max(dilation);
            if allowed(base.stride.0, base.dilation.0) && allowed(base.stride.1, base.dilation.1) {
                grid.push(ConvOptions {
                    output_padding: (output_padding, output_padding),
                    ..base
                });
            }
        }
    }
    grid
}

/// One case of a sweep over a grid: kernel shape `KERNELS[k]` with option `i` of the grid.
#[derive(Clone, Copy, Debug)]
struct GridCase {
    k: usize,
    i: usize,
    kernel: (usize, usize),
    opts: ConvOptions,
}

/// Every kernel shape with every option of `grid`, kernel by kernel.
fn with_each_kernel(grid: &[ConvOptions]) -> Vec<GridCase> {
    let mut cases = Vec::new();
    for (k, kernel) in KERNELS.into_iter().enumerate() {
        for (i, &opts) in grid.iter().enumerate() {
            cases.push(GridCase { k, i, kernel, opts });
        }
    }
    cases
}

/// The size of conv2d's output along one axis.
fn conv_out(input: usize, kernel: usize, stride: usize, padding: usize, dilation: usize) -> usize {
    (input + 2 * padding - dilation * (kernel - 1) - 1) / stride + 1
}

#[test]
fn conv_grids_cover_what_they_claim() {
    // Of the grids themselves, so on no device: 12 uniform options, 2 per-axis ones and
    // stride 3; of these 15, the 3 with stride 1 and dilation 1 allow no output padding, the
    // other 12 allow 0 and 1.
    assert_eq!(conv2d_grid().len(), 15);
    assert_eq!(conv_transpose2d_grid().len(), 15 + 12);
    assert!(conv_transpose2d_grid()
        .iter()
        .any(|o| o.stride == (1, 1) && o.output_padding == (1, 1)));
}

#[test]
fn conv2d_passes_gradcheck_across_the_grid_with_and_without_bias() {
    for_each_device(|device| {
        // Batch 3, 2 -> 3 channels, 5x7 images.
        let x = randn(&[3, 2, 5, 7], 600);
        let b = randn(&[3], 601);
        for (k, (kh, kw)) in KERNELS.into_iter().enumerate() {
            let w = randn(&[3, 2, kh, kw], 602 + k as u64);
            for opts in conv2d_grid() {
                check(
                    device,
                    &format!("conv2d kernel {kh}x{kw} without bias, {opts:?}"),
                    |xs| xs[0].conv2d(&xs[1], None, opts),
                    &[x.clone(), w.clone()],
                );
                check(
                    device,
                    &format!("conv2d kernel {kh}x{kw} with bias, {opts:?}"),
                    |xs| xs[0].conv2d(&xs[1], Some(&xs[2]), opts),
                    &[x.clone(), w.clone(), b.clone()],
                );
            }
        }
    });
}

#[test]
fn conv2d_passes_gradgradcheck_across_the_grid() {
    // Second order on the whole grid, both kernel shapes, with the bias (the critic's layer).
    for_each_device(|device| {
        let x = randn(&[3, 2, 5, 7], 610);
        let b = randn(&[3], 611);
        let sweep = with_each_kernel(&conv2d_grid());
        for GridCase {
            k,
            kernel: (kh, kw),
            opts,
            ..
        } in sweep
        {
            let w = randn(&[3, 2, kh, kw], 612 + k as u64);
            check_second_order(
                device,
                &format!("conv2d kernel {kh}x{kw} with bias, {opts:?}"),
                |xs| xs[0].conv2d(&xs[1], Some(&xs[2]), opts),
                &[x.clone(), w, b.clone()],
            );
        }
    });
}

#[test]
fn conv_transpose2d_passes_gradcheck_across_the_grid_with_and_without_bias() {
    for_each_device(|device| {
        // Batch 3, 2 -> 3 channels, from a 3x4 map; the weight is [in, out, kh, kw].
        let x = randn(&[3, 2, 3, 4], 620);
        let b = randn(&[3], 621);
        for (k, (kh, kw)) in KERNELS.into_iter().enumerate() {
            let w = randn(&[2, 3, kh, kw], 622 + k as u64);
            for opts in conv_transpose2d_grid() {
                check(
                    device,
                    &format!("conv_transpose2d kernel {kh}x{kw} without bias, {opts:?}"),
                    |xs| xs[0].conv_transpose2d(&xs[1], None, opts),
                    &[x.clone(), w.clone()],
                );
                check(
                    device,
                    &format!("conv_transpose2d kernel {kh}x{kw} with bias, {opts:?}"),
                    |xs| xs[0].conv_transpose2d(&xs[1], Some(&xs[2]), opts),
                    &[x.clone(), w.clone(), b.clone()],
                );
            }
        }
    });
}

#[test]
fn conv_transpose2d_passes_gradgradcheck_across_the_grid() {
    // The generator's layer. Its backward is made of conv2d and conv2d_weight_grad, so this
    // also differentiates their backward rules in the transpose's geometry (output padding
    // included).
    for_each_device(|device| {
        let x = randn(&[3, 2, 3, 4], 630);
        let b = randn(&[3], 631);
        let sweep = with_each_kernel(&conv_transpose2d_grid());
        for GridCase {
            k,
            kernel: (kh, kw),
            opts,
            ..
        } in sweep
        {
            let w = randn(&[2, 3, kh, kw], 632 + k as u64);
            check_second_order(
                device,
                &format!("conv_transpose2d kernel {kh}x{kw} with bias, {opts:?}"),
                |xs| xs[0].conv_transpose2d(&xs[1], Some(&xs[2]), opts),
                &[x.clone(), w, b.clone()],
            );
        }
    });
}

#[test]
fn convolutions_on_the_register_tile_pass_gradcheck_and_gradgradcheck() {
    // The grids above have too few channels for the CPU's register tile, so they run its
    // rectangle paths. 16 -> 6 channels fill it: conv2d's forward pass, its input adjoint
    // (conv_transpose2d's forward pass) and its weight gradient all run on the tile, here in
    // f64, with the critic's stride and a padding wider than a 2x2 kernel's reach. (The GPU
    // has no tile: there these are one more geometry.)
    let opts = conv_options(2, 2, 1);
    for_each_device(|device| {
        let x = randn(&[2, 16, 4, 5], 640);
        let w = randn(&[6, 16, 2, 2], 641);
        let b = randn(&[6], 642);
        check2(
            device,
            "conv2d on the tile",
            |xs| xs[0].conv2d(&xs[1], Some(&xs[2]), opts),
            &[x, w.clone(), b],
        );
        // The transpose of a 16 -> 6 conv: 6 -> 16 channels, weight [6, 16, 2, 2].
        let y = randn(&[2, 6, 4, 3], 643);
        let bt = randn(&[16], 644);
        check2(
            device,
            "conv_transpose2d on the tile",
            |xs| xs[0].conv_transpose2d(&xs[1], Some(&xs[2]), opts),
            &[y, w, bt],
        );
    });
}

#[test]
fn convolutions_with_a_fused_activation_pass_gradcheck_and_gradgradcheck() {
    // The fused ops keep only the activated output and read the activation's derivative from
    // it: a mask from its sign for the ReLUs, 1 - y^2 and y (1 - y) for tanh and sigmoid, which
    // must differentiate again through the output. Each activation on the tile (16 -> 6
    // channels) and on the rectangle paths (2 -> 3); a leaky ReLU of negative slope, whose
    // derivative the output does not give, falls back to the separate ops. (3 -> 7 channels
    // puts the forward pass on the tile's short runs, a kernel row of 3 x 2 values.)

    let opts = conv_options(2, 2, 1);
    let activations = [
        Activation::Relu,
        Activation::LeakyRelu(0.2),
        Activation::Tanh,
        Activation::Sigmoid,
        Activation::LeakyRelu(-0.5),
    ];
    // The sweep: each activation with each channel count.
    let sweep: Vec<(usize, Activation, (usize, usize))> = activations
        .into_iter()
        .enumerate()
        .flat_map(|(i, act)| [(16, 6), (3, 7), (2, 3)].map(|channels| (i, act, channels)))
        .collect();
    for_each_device(|device| {
        for &(i, act, (c, o)) in &sweep {
            let seed = 700 + 10 * i as u64;
            let x = randn(&[2, c, 4, 5], seed);
            let leaf = on(device, &x).requires_grad_(true);
            let y = leaf.conv2d_activated(&on(device, &randn(&[o, c, 2, 2], seed + 1)), None, opts, act);
            let want = if act.has_derivative_from_output() {
                "conv2d_activated"
            } else {
                "leaky_relu"
            };
            assert_eq!(y.grad_fn_name(), Some(want), "{act:?} on {device}");
            let w = randn(&[o, c, 2, 2], seed + 1);
            check2(
                device,
                &format!("conv2d_activated {act:?}, {c} -> {o} channels"),
                |xs| xs[0].conv2d_activated(&xs[1], Some(&xs[2]), opts, act),
                &[x, w.clone(), randn(&[o], seed + 2)],
            );
            // The transpose of a c -> o conv: o -> c channels, weight [o, c, 2, 2].
            check2(
                device,
                &format!("conv_transpose2d_activated {act:?}, {o} -> {c} channels"),
                |xs| xs[0].conv_transpose2d_activated(&xs[1], Some(&xs[2]), opts, act),
                &[randn(&[2, o, 4, 3], seed + 3), w, randn(&[c], seed + 4)],
            );
        }
    });
}

#[test]
fn a_fused_activation_gives_the_separate_ops_values_and_gradients_bit_for_bit() {
    // In f32, on the CPU's tile and rectangle paths and on each other device: the values, the
    // gradients (with and without a graph of them), and the gradient penalty's second-order
    // gradient (of the input gradient's norm, with respect to the weight) of activation(conv(x))
    // are those of conv then activation. Compared on each device with itself, not with the
    // CPU: the GPU applies the activation as a pass of its own after the same conv kernels, so
    // fusing must not change a bit there either.
    let opts = conv_options(2, 2, 1);
    for_each_device(|device| {
        let f32 = |shape: &[usize], seed| on(device, &randn(shape, seed).to_dtype(DType::F32));
        for act in [
            Activation::Relu,
            Activation::LeakyRelu(0.2),
            Activation::Tanh,
            Activation::Sigmoid,
        ] {
            for (c, o) in [(16, 6), (3, 1)] {
                let x = f32(&[5, c, 9, 7], 800).requires_grad_(true);
                let w = f32(&[o, c, 5, 5], 801).requires_grad_(true);
                let b = f32(&[o], 802).requires_grad_(true);
                let t = f32(&[5, o, 5, 4], 803).requires_grad_(true);
                let wt = f32(&[o, c, 5, 5], 804).requires_grad_(true);
                let bt = f32(&[c], 805).requires_grad_(true);
                let forward = |fused: bool| {
                    if fused {
                        (
                            x.conv2d_activated(&w, Some(&b), opts, act),
                            t.conv_transpose2d_activated(&wt, Some(&bt), opts, act),
                        )
                    } else {
                        (
                            x.conv2d(&w, Some(&b), opts).activation(act),
                            t.conv_transpose2d(&wt, Some(&bt), opts).activation(act),
                        )
                    }
                };
                let outputs = |fused: bool| {
                    let (y, u) = forward(fused);
                    let loss = y.square().sum().add(&u.square().sum());
                    let inputs = [&x, &w, &b, &t, &wt, &bt];
                    let grads = grad(&[&loss], &inputs, None, true);
                    let penalty = grads[0].square().sum().add(&grads[3].square().sum());
                    let second = grad(&[&penalty], &[&w, &wt], None, false);
                    // And a backward pass that builds no graph (WGAN's), on a fresh forward
                    // pass (the one above was freed by the second-order pass).
                    let (y2, u2) = forward(fused);
                    let plain = grad(&[&y2.square().sum().add(&u2.square().sum())], &inputs, None, false);
                    [y, u]
                        .into_iter()
                        .chain(grads)
                        .chain(second)
                        .chain(plain)
                        .map(|t| t.to_vec_f32())
                        .collect::<Vec<_>>()
                };
                let (fused, separate) = (outputs(true), outputs(false));
                for (k, (f, s)) in fused.iter().zip(&separate).enumerate() {
                    assert!(
                        f.len() == s.len() && f.iter().zip(s).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{act:?}, {c} -> {o} channels on {device}: result {k} differs between fused and separate ops"
                    );
                }
            }
        }
    });
}

#[test]
fn conv2d_weight_grad_passes_gradcheck_and_gradgradcheck_across_the_grid() {
    // Bilinear in (x, grad_output): the op behind conv2d's weight gradient, and so behind the
    // gradient penalty's second derivatives.
    for_each_device(|device| {
        let x = randn(&[3, 2, 5, 7], 640);
        let sweep = with_each_kernel(&conv2d_grid());
        for GridCase {
            k,
            i,
            kernel: (kh, kw),
            opts,
        } in sweep
        {
            let ho = conv_out(5, kh, opts.stride.0, opts.padding.0, opts.dilation.0);
            let wo = conv_out(7, kw, opts.stride.1, opts.padding.1, opts.dilation.1);
            let gy = randn(&[3, 3, ho, wo], 641 + (100 * k + i) as u64);
            check2(
                device,
                &format!("conv2d_weight_grad kernel {kh}x{kw}, {opts:?}"),
                |xs| xs[0].conv2d_weight_grad(&xs[1], (kh, kw), opts),
                &[x.clone(), gy],
            );
        }
    });
}
