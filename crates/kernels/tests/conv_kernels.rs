//! The CUDA convolutions (conv.cu's implicit GEMMs, their fused bias and activation, and the
//! split-K weight gradient) against their CPU twins, through the one launch code the GPU runs
//! (`cuda::storage`, reached through `Storage`), on random inputs of odd sizes; split out of
//! cuda_kernels.rs, whose comparison helpers they share (tests/common/).
//!
//! It runs on every CUDA device this machine has: the emulator (`Device::CudaEmulator`) when
//! built with the `emulator` feature, and GPU 0 when there is one; otherwise it says why it ran
//! on none.
//!
//! `cargo test -p earthmover-kernels --features emulator --test conv_kernels`

mod common;

use common::{assert_close, cuda_devices, geometry, on_cpu, pair, random, rounding, DTYPES};
use earthmover_kernels::cuda::storage::{GpuStorage, SliceSum};
use earthmover_kernels::{DType, Storage, UnaryOp};

/// The GPU convolutions (conv.cu's implicit GEMMs) and their epilogue (bias, activation), against the CPU's paths, with and without a bias and an
/// activation. Odd sizes, stride 2 with padding (the critic's), rectangular and dilated
/// kernels, a kernel narrower than its stride.
#[test]
fn convolutions_and_their_gradients_match() {
    let geometries = [
        geometry([3, 4, 9, 11], 2, (5, 5), (2, 2), (2, 2), (1, 1)),
        geometry([2, 2, 7, 6], 3, (3, 3), (1, 1), (1, 1), (2, 2)),
        geometry([3, 2, 7, 9], 2, (3, 3), (1, 1), (1, 1), (1, 1)),
        geometry([2, 1, 10, 13], 2, (3, 2), (2, 3), (0, 1), (2, 1)),
        // The input adjoint by phases of the stride: a kernel narrower than the stride along h
        // (the rows of phase 2 have no taps: the bias and activation alone), wider along w.
        geometry([2, 3, 11, 10], 2, (2, 5), (3, 2), (1, 2), (1, 1)),
    ];
    for device in cuda_devices() {
        for g in &geometries {
            for dtype in DTYPES {
                let (rel, abs) = rounding(dtype);
                let (x_cpu, x_gpu) = pair(&random(g.batch * g.in_channels * g.in_h * g.in_w, 6), dtype, device);
                let (w_cpu, w_gpu) = pair(&random(g.out_channels * g.patch_len(), 7), dtype, device);
                let map_len = g.batch * g.out_channels * g.out_h * g.out_w;
                let (y_cpu, y_gpu) = pair(&random(map_len, 8), dtype, device);
                let (bo_cpu, bo_gpu) = pair(&random(g.out_channels, 9), dtype, device);
                let (bc_cpu, bc_gpu) = pair(&random(g.in_channels, 10), dtype, device);
                // Bare, with a bias, and with a bias and an activation (the fused epilogue):
                // the forward pass's activation, then the adjoint's.
                let with_bias = (Some((&bo_gpu, &bo_cpu)), Some((&bc_gpu, &bc_cpu)));
                let cases = [
                    ((None, None), None, None),
                    (with_bias, None, None),
                    (with_bias, Some(UnaryOp::LeakyRelu(0.2)), Some(UnaryOp::Sigmoid)),
                ];
                for ((bo, bc), forward_act, adjoint_act) in cases {
                    let case = format!(
                        "{g:?} {dtype}, bias {}, {forward_act:?} / {adjoint_act:?}",
                        bo.is_some()
                    );
                    assert_close(
                        &format!("conv2d, {case}"),
                        &x_gpu.conv2d_forward(&w_gpu, bo.map(|b| b.0), forward_act, g),
                        &x_cpu.conv2d_forward(&w_cpu, bo.map(|b| b.1), forward_act, g),
                        rel,
                        abs,
                    );
                    assert_close(
                        &format!("input adjoint, {case}"),
                        &y_gpu.conv2d_input_adjoint(&w_gpu, bc.map(|b| b.0), adjoint_act, g),
                        &y_cpu.conv2d_input_adjoint(&w_cpu, bc.map(|b| b.1), adjoint_act, g),
                        rel,
                        abs,
                    );
                }
                let (got, want) = (x_gpu.conv2d_weight_grad(&y_gpu, g), x_cpu.conv2d_weight_grad(&y_cpu, g));
                assert_close(&format!("weight grad {g:?} {dtype}"), &got, &want, rel, abs);
            }
        }
    }
}

/// The implicit GEMMs on problems of several tiles each way, with edges that cut every kind of
/// tile: output pixels (batch x Ho x Wo) and channels past 64 and no multiple of it, K (C x kh
/// x kw) past several slices of 16, stride 2 with padding, dilation, rectangles; each with a
/// bias. The weight gradient in 1, 2, 3 and 7 split-K slices (the last slice short) and in the
/// slices the device chooses.
#[test]
fn convolutions_over_several_tiles_and_slices_match() {
    let geometries = [
        // DCGAN's critic's first conv, smaller: 1 channel in, 65 out, 5 x 5, stride 2.
        geometry([3, 1, 13, 15], 65, (5, 5), (2, 2), (2, 2), (1, 1)),
        // 67 channels in, 3 out: input gradient's N and forward's K past a tile.
        geometry([2, 67, 5, 7], 3, (3, 3), (1, 1), (1, 1), (1, 1)),
        // Stride 2, dilation 2 and rectangles, channels over a tile both ways.
        geometry([5, 66, 9, 8], 70, (3, 2), (2, 1), (2, 0), (2, 3)),
        // The transposed conv of a generator: stride 2, output pixels not covered by any tap.
        geometry([7, 3, 12, 11], 2, (4, 4), (3, 2), (1, 1), (1, 1)),
    ];
    for device in cuda_devices() {
        for (i, g) in geometries.iter().enumerate() {
            for dtype in DTYPES {
                // Up to 1,650 sums of products of numbers in [-2, 2]: f32's rounding of the
                // sums in another order than the CPU's reaches 1e-5 absolute.
                let (rel, abs) = match dtype {
                    DType::F32 => (1e-5, 1e-4),
                    _ => rounding(dtype),
                };
                let seed = 20 + 5 * i as u64;
                let (x_cpu, x_gpu) = pair(&random(g.batch * g.in_channels * g.in_h * g.in_w, seed), dtype, device);
                let (w_cpu, w_gpu) = pair(&random(g.out_channels * g.patch_len(), seed + 1), dtype, device);
                let map_len = g.batch * g.out_channels * g.out_h * g.out_w;
                let (y_cpu, y_gpu) = pair(&random(map_len, seed + 2), dtype, device);
                let (bo_cpu, bo_gpu) = pair(&random(g.out_channels, seed + 3), dtype, device);
                let (bc_cpu, bc_gpu) = pair(&random(g.in_channels, seed + 4), dtype, device);
                let case = format!("{g:?} {dtype}");
                // The activations of the networks, in the epilogue of every tile.
                let (forward_act, adjoint_act) = match i % 2 {
                    0 => (Some(UnaryOp::LeakyRelu(0.2)), Some(UnaryOp::Relu)),
                    _ => (None, Some(UnaryOp::Tanh)),
                };
                assert_close(
                    &format!("conv2d, {forward_act:?}, {case}"),
                    &x_gpu.conv2d_forward(&w_gpu, Some(&bo_gpu), forward_act, g),
                    &x_cpu.conv2d_forward(&w_cpu, Some(&bo_cpu), forward_act, g),
                    rel,
                    abs,
                );
                assert_close(
                    &format!("input adjoint, {adjoint_act:?}, {case}"),
                    &y_gpu.conv2d_input_adjoint(&w_gpu, Some(&bc_gpu), adjoint_act, g),
                    &y_cpu.conv2d_input_adjoint(&w_cpu, Some(&bc_cpu), adjoint_act, g),
                    rel,
                    abs,
                );
                let want = x_cpu.conv2d_weight_grad(&y_cpu, g);
                assert_close(
                    &format!("weight grad, {case}"),
                    &x_gpu.conv2d_weight_grad(&y_gpu, g),
                    &want,
                    rel,
                    abs,
                );
                let (Storage::Cuda(x), Storage::Cuda(y)) = (&x_gpu, &y_gpu) else {
                    unreachable!("on the GPU")
                };
                for slices in [1, 2, 3, 7] {
                    for sum in [SliceSum::InLaunch, SliceSum::SecondLaunch] {
                        assert_close(
                            &format!("weight grad in {slices} slices, {sum:?}, {case}"),
                            &Storage::Cuda(x.conv2d_weight_grad_in_slices(y, g, slices, sum)),
                            &want,
                            rel,
                            abs,
                        );
                    }
                }
            }
        }
    }
}

/// The split-K weight gradient adds its slices in a fixed order: the same bits from run to
/// run, and whichever launch adds them. (Its launches are counted in tests/device_counters.rs.)
#[test]
fn split_weight_grads_repeat_bit_for_bit() {
    let g = geometry([16, 3, 15, 15], 5, (5, 5), (2, 2), (2, 2), (1, 1));
    assert!(GpuStorage::weight_grad_slices(&g) > 1, "this geometry is split");
    for device in cuda_devices() {
        let x = on_cpu(&random(g.batch * g.in_channels * g.in_h * g.in_w, 40), DType::F32)
            .to_device(device)
            .unwrap();
        let y = on_cpu(&random(g.batch * g.out_channels * g.out_h * g.out_w, 41), DType::F32)
            .to_device(device)
            .unwrap();
        let bits = |s: &Storage| s.to_f64_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let first = bits(&x.conv2d_weight_grad(&y, &g));
        // Again: the first launch left its tile counters at zero for the second.
        assert_eq!(first, bits(&x.conv2d_weight_grad(&y, &g)), "{device}");
        // The slices added by the launch's last blocks or by a launch of their own: the same
        // additions in the same order.
        let (Storage::Cuda(xg), Storage::Cuda(yg)) = (&x, &y) else {
            unreachable!("on the GPU")
        };
        let slices = GpuStorage::weight_grad_slices(&g);
        let second_launch = xg.conv2d_weight_grad_in_slices(yg, &g, slices, SliceSum::SecondLaunch);
        assert_eq!(first, bits(&Storage::Cuda(second_launch)), "{device}");
    }
}
