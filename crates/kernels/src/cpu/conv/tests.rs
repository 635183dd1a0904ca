//! Every convolution path against the plain reference, over odd geometries.

use super::rectangles::{
    forward_by_rectangles, input_adjoint_by_rectangles, tap_classes, weight_grad_by_rectangles, TapClass,
};
use super::*;
use crate::cpu::elementwise::unary;
use crate::cpu::simd::SimdPath;
use crate::op::UnaryOp;

/// One image of `c` channels, `h x w`, through `o` filters of `k x k`, with stride `s`,
/// padding `p` and dilation `d` on both axes.
#[allow(clippy::too_many_arguments)]
fn geometry(c: usize, o: usize, h: usize, w: usize, k: usize, s: usize, p: usize, d: usize) -> ConvGeometry {
    ConvGeometry::conv2d([1, c, h, w], [o, c, k, k], (s, s), (p, p), (d, d)).unwrap()
}

#[test]
fn conv2d_hand_computed() {
    // 1x3x3 image, 2x2 kernel of ones plus a second channel-out of [1, 0; 0, -1].
    let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
    let w = [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, -1.0];
    let g = geometry(1, 2, 3, 3, 2, 1, 0, 1);
    let y = conv2d_forward(&g, &x, &w, Epilogue::NONE);
    assert_eq!(y, vec![12.0, 16.0, 24.0, 28.0, -4.0, -4.0, -4.0, -4.0]);
    // Stride 2 with padding 1: four corners of the padded image.
    let g = geometry(1, 1, 3, 3, 2, 2, 1, 1);
    let y = conv2d_forward(&g, &x, &w[..4], Epilogue::NONE);
    assert_eq!(y, vec![1.0, 5.0, 11.0, 28.0]);
    // Dilation 2: the 2x2 kernel touches the four corners of the 3x3 image.
    let g = geometry(1, 1, 3, 3, 2, 1, 0, 2);
    assert_eq!(conv2d_forward(&g, &x, &w[..4], Epilogue::NONE), vec![20.0]);
}

#[test]
fn transposed_conv_hand_computed() {
    // A 2x2 map through a 2x2 kernel with stride 2 tiles the kernel, scaled.
    let y = [1.0, 2.0, 3.0, 4.0];
    let w = [1.0, 10.0, 100.0, 1000.0];
    let g = geometry(1, 1, 4, 4, 2, 2, 0, 1);
    let x = conv2d_input_adjoint(&g, &y, &w, Epilogue::NONE);
    #[rustfmt::skip]
    let want = vec![
        1.0, 10.0, 2.0, 20.0,
        100.0, 1000.0, 200.0, 2000.0,
        3.0, 30.0, 4.0, 40.0,
        300.0, 3000.0, 400.0, 4000.0,
    ];
    assert_eq!(x, want);
}

#[test]
fn weight_grad_is_the_adjoint_in_w() {
    // <conv(x, w), gy> == <w, weight_grad(x, gy)> for arbitrary data.
    let mut g = geometry(3, 2, 5, 7, 3, 2, 1, 1);
    g.batch = 2;
    let x: Vec<f64> = (0..2 * 3 * 35).map(|v| ((v * 37 % 17) as f64) / 7.0 - 1.0).collect();
    let w: Vec<f64> = (0..2 * 27).map(|v| ((v * 13 % 11) as f64) / 5.0 - 1.0).collect();
    let gy: Vec<f64> = (0..2 * 2 * g.out_h * g.out_w)
        .map(|v| ((v * 7 % 5) as f64) - 2.0)
        .collect();
    let y = conv2d_forward(&g, &x, &w, Epilogue::NONE);
    let lhs: f64 = y.iter().zip(&gy).map(|(a, b)| a * b).sum();
    let gw = conv2d_weight_grad(&g, &x, &gy);
    let rhs: f64 = w.iter().zip(&gw).map(|(a, b)| a * b).sum();
    assert!((lhs - rhs).abs() < 1e-9, "{lhs} vs {rhs}");
    let gx = conv2d_input_adjoint(&g, &gy, &w, Epilogue::NONE);
    let rhs: f64 = x.iter().zip(&gx).map(|(a, b)| a * b).sum();
    assert!((lhs - rhs).abs() < 1e-9, "{lhs} vs {rhs}");
}

#[test]
fn a_single_channel_adjoint_whose_taps_all_fall_past_the_maps() {
    // A 1x1 image under padding 20 and dilation 40: every column tap of a phase but one reads
    // past the maps' padded rows (a shift beyond them once panicked slicing the partial sums).
    let g = ConvGeometry::conv2d([1, 1, 1, 1], [2, 1, 2, 2], (1, 1), (20, 20), (40, 40)).unwrap();
    let y: Vec<f32> = (0..2 * g.out_h * g.out_w).map(|v| (v % 7) as f32 - 3.0).collect();
    let w = [1.0f32, -2.0, 0.5, 3.0, 0.25, -1.0, 2.0, 1.5];
    let want = reference::conv2d_input_adjoint(&g, &y, &w, Epilogue::NONE);
    assert_eq!(conv2d_input_adjoint(&g, &y, &w, Epilogue::NONE), want);
}

#[test]
fn tap_classes_of_the_reference_critic() {
    // 7 -> 4, k5 s2 p2: row 0 reaches two rows above the image, row 3 two below.
    let class = |outputs: Range<usize>, taps: Range<usize>| TapClass { outputs, taps };
    assert_eq!(
        tap_classes(4, 7, 5, 2, 1, 2),
        vec![class(0..1, 2..5), class(1..3, 0..5), class(3..4, 0..3)]
    );
    // 14 -> 7: only the last row loses a tap below (14 = 2 * 6 + 4 - 2).
    assert_eq!(
        tap_classes(7, 14, 5, 2, 1, 2),
        vec![class(0..1, 2..5), class(1..6, 0..5), class(6..7, 0..4)]
    );
    // Padding wider than the kernel's reach: the first output sees no tap at all.
    assert_eq!(tap_classes(3, 2, 1, 1, 1, 1), vec![class(1..3, 0..1)]);
    // Dilation 2: output 0 reads positions -2, 0, 2 and output 2 reads 0, 2, 4.
    assert_eq!(
        tap_classes(3, 5, 3, 1, 2, 2),
        vec![class(0..2, 1..3), class(2..3, 0..3)]
    );
}

/// The chunked, padding-free kernels agree with the plain per-sample im2col/col2im
/// reference over strides, paddings (including more than the kernel), dilations and odd
/// sizes, and over several chunks of samples.
#[test]
fn chunked_kernels_match_per_sample_reference() {
    let cases = [
        // (c, o, h, w, kh, kw, s, p, d, batch)
        (3, 2, 5, 7, 3, 3, (2, 1), (1, 0), (1, 1), 5),
        (2, 3, 6, 6, 2, 3, (1, 2), (0, 2), (2, 1), 9),
        (1, 4, 4, 5, 5, 5, (2, 2), (2, 2), (1, 1), 3),
        (2, 2, 3, 3, 1, 1, (3, 3), (4, 1), (1, 1), 2),
        (2, 3, 7, 4, 3, 2, (1, 3), (2, 1), (2, 2), 11),
        // Large enough that the weight gradient lowers the batch in two chunks (7 + 3).
        (16, 2, 32, 32, 3, 3, (1, 1), (1, 1), (1, 1), 10),
        // Two chunks of samples for the tile kernels (16 + 4), seven output channels.
        (7, 7, 5, 6, 3, 2, (2, 1), (1, 1), (1, 2), 20),
        // Three chunks of samples (16 + 16 + 3: on AVX-512 a pair and a single), three tiles
        // of output channels (a pair and a single); the weight gradient's input channels in
        // three blocks (16 + 16 + 1: a pair and a single).
        (33, 13, 4, 5, 3, 3, (1, 1), (1, 1), (1, 1), 35),
        // Two blocks of input channels for the tiled weight gradient (16 + 1), three tiles
        // of output channels (6 + 6 + 1).
        (17, 13, 6, 5, 3, 3, (1, 2), (1, 1), (1, 1), 3),
        // More than 16 tiles of output channels (the weight gradient's tasks take 16: a
        // second, shorter block).
        (17, 100, 6, 5, 3, 3, (1, 2), (1, 1), (1, 1), 3),
        // Padding wider than a 1x1 kernel's reach, on the tile: the border pixels see
        // only padding (the forward pass must give them no run, only the bias).
        (7, 7, 3, 3, 1, 1, (1, 1), (2, 2), (1, 1), 2),
        // The same with runs long enough to go kernel row by kernel row (40 channels): the
        // border rows get no pass at all, and must still start at the bias.
        (40, 7, 3, 3, 1, 1, (1, 1), (2, 2), (1, 1), 2),
        // Kernel columns that read only padding (an image one pixel wide, a stride as wide as
        // the kernel): the tiled weight gradient has no runs for them, and must give zero.
        (17, 7, 3, 1, 1, 5, (1, 5), (0, 2), (1, 1), 3),
        // One input channel, a kernel wider than the tile has rows (two groups of kernel
        // columns), two blocks of output channels, two bands of output rows.
        (1, 17, 9, 10, 3, 7, (2, 1), (1, 3), (1, 1), 4),
        // Adjoints onto a single channel (`single_channel`): the reference critic's first
        // layer with 11 maps (rows of 14: a partial vector on every path, phases of 14 rows:
        // blocks of 8, 4 and 2); odd strides and dilations, a row longer than two vectors;
        // padding past a 1x1 kernel's reach (maps wider than the image); one column tap per
        // phase; a stride wider than the kernel (phases no tap reaches: the bias alone).
        (1, 11, 28, 28, 5, 5, (2, 2), (2, 2), (1, 1), 3),
        (1, 5, 13, 37, 4, 3, (3, 2), (1, 2), (2, 1), 2),
        (1, 3, 4, 4, 1, 1, (1, 1), (4, 4), (1, 1), 2),
        (1, 9, 7, 19, 1, 5, (1, 3), (0, 4), (1, 2), 5),
        (1, 4, 11, 13, 2, 2, (3, 3), (1, 0), (1, 1), 2),
    ];
    for &(c, o, h, w, kh, kw, s, p, d, batch) in &cases {
        let g = ConvGeometry::conv2d([batch, c, h, w], [o, c, kh, kw], s, p, d).unwrap();
        let (k, pix, image_len) = (g.patch_len(), g.out_h * g.out_w, c * h * w);
        let x: Vec<f64> = (0..batch * image_len)
            .map(|v| ((v * 37 % 17) as f64) / 7.0 - 1.0)
            .collect();
        let wt: Vec<f64> = (0..o * k).map(|v| ((v * 13 % 11) as f64) / 5.0 - 1.0).collect();
        let gy: Vec<f64> = (0..batch * o * pix).map(|v| ((v * 7 % 5) as f64) - 2.0).collect();
        let bias_o: Vec<f64> = (0..o).map(|v| v as f64 / 4.0 - 1.0).collect();
        let bias_c: Vec<f64> = (0..c).map(|v| 0.5 - v as f64 / 3.0).collect();
        // The plain reference, with a bias for the forward pass (per output channel) and for
        // the adjoint (per input channel), as conv2d and conv_transpose2d add them.
        let y_ref = reference::conv2d_forward(&g, &x, &wt, biased(&bias_o));
        let gx_ref = reference::conv2d_input_adjoint(&g, &gy, &wt, biased(&bias_c));
        let gw_ref = reference::conv2d_weight_grad(&g, &x, &gy);
        fn biased<T>(bias: &[T]) -> Epilogue<'_, T> {
            Epilogue {
                bias: Some(bias),
                activation: None,
            }
        }
        // With an activation as well: the paths must give the activation of their sums.
        fn activated<T>(bias: &[T], op: UnaryOp) -> Epilogue<'_, T> {
            Epilogue {
                bias: Some(bias),
                activation: Some(op),
            }
        }
        let (lrelu, tanh) = (UnaryOp::LeakyRelu(0.2), UnaryOp::Tanh);
        let (y_lrelu, gx_tanh) = (unary(lrelu, &y_ref), unary(tanh, &gx_ref));
        let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9) && a.len() == b.len();
        let f64_paths = [
            (
                "forward by rectangles",
                forward_by_rectangles(&g, &x, &wt, biased(&bias_o)),
                &y_ref,
            ),
            (
                "adjoint by rectangles",
                input_adjoint_by_rectangles(&g, &gy, &wt, biased(&bias_c)),
                &gx_ref,
            ),
            (
                "forward by tiles",
                forward_by_tiles(SimdPath::Portable, &g, &x, &wt, biased(&bias_o)),
                &y_ref,
            ),
            (
                "adjoint by tiles",
                input_adjoint_by_tiles(SimdPath::Portable, &g, &gy, &wt, biased(&bias_c)),
                &gx_ref,
            ),
            (
                "activated forward by rectangles",
                forward_by_rectangles(&g, &x, &wt, activated(&bias_o, lrelu)),
                &y_lrelu,
            ),
            (
                "activated adjoint by rectangles",
                input_adjoint_by_rectangles(&g, &gy, &wt, activated(&bias_c, tanh)),
                &gx_tanh,
            ),
            (
                "activated forward by tiles",
                forward_by_tiles(SimdPath::Portable, &g, &x, &wt, activated(&bias_o, lrelu)),
                &y_lrelu,
            ),
            (
                "activated adjoint by tiles",
                input_adjoint_by_tiles(SimdPath::Portable, &g, &gy, &wt, activated(&bias_c, tanh)),
                &gx_tanh,
            ),
            (
                "weight grad by rectangles",
                weight_grad_by_rectangles(&g, &x, &gy),
                &gw_ref,
            ),
            (
                "weight grad by tiles",
                weight_grad_by_tiles(SimdPath::Portable, &g, &x, &gy),
                &gw_ref,
            ),
            (
                "weight grad by kernel columns",
                weight_grad_by_kernel_columns(SimdPath::Portable, &g, &x, &gy),
                &gw_ref,
            ),
        ];
        for (path, got, want) in &f64_paths {
            assert!(close(got, want), "{path} {:?}", (c, o, h, w, s, p, d));
        }
        // The tile paths in f32: the AVX2 tile and transposes where the processor has them.
        let to32 = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<f32>>();
        let (x32, w32, gy32) = (to32(&x), to32(&wt), to32(&gy));
        let (bias_o32, bias_c32) = (to32(&bias_o), to32(&bias_c));
        // f32 sums of up to ten thousand terms that cancel: 1e-4 off at worst here, where a
        // misplaced index is off by whole units.
        let close32 = |a: &[f32], b: &[f64]| {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|(&x, &y)| (x as f64 - y).abs() <= 1e-3 * (1.0 + y.abs()))
        };
        let f32_paths = |simd: SimdPath| {
            let mut paths = vec![
                (
                    "forward by tiles",
                    forward_by_tiles(simd, &g, &x32, &w32, biased(&bias_o32)),
                    &y_ref,
                ),
                (
                    "adjoint by tiles",
                    input_adjoint_by_tiles(simd, &g, &gy32, &w32, biased(&bias_c32)),
                    &gx_ref,
                ),
                (
                    "activated forward by tiles",
                    forward_by_tiles(simd, &g, &x32, &w32, activated(&bias_o32, lrelu)),
                    &y_lrelu,
                ),
                (
                    "activated adjoint by tiles",
                    input_adjoint_by_tiles(simd, &g, &gy32, &w32, activated(&bias_c32, tanh)),
                    &gx_tanh,
                ),
                (
                    "weight grad by tiles",
                    weight_grad_by_tiles(simd, &g, &x32, &gy32),
                    &gw_ref,
                ),
                (
                    "weight grad by kernel columns",
                    weight_grad_by_kernel_columns(simd, &g, &x32, &gy32),
                    &gw_ref,
                ),
            ];
            if single_channel::weight_grad_fits(&g) {
                paths.push((
                    "weight grad of a single channel",
                    weight_grad_single_channel(simd, &g, &x32, &gy32),
                    &gw_ref,
                ));
            }
            if single_channel::adjoint_fits(&g) {
                paths.extend([
                    (
                        "adjoint onto a single channel",
                        input_adjoint_single_channel(simd, &g, &gy32, &w32, biased(&bias_c32)),
                        &gx_ref,
                    ),
                    (
                        "activated adjoint onto a single channel",
                        input_adjoint_single_channel(simd, &g, &gy32, &w32, activated(&bias_c32, tanh)),
                        &gx_tanh,
                    ),
                ]);
            }
            paths
        };
        // Every SIMD path this processor has; the fused paths (AVX2, AVX-512) sum in the same
        // order, two tiles at a time or one, so they agree bit for bit.
        let mut fused: Option<Vec<Vec<f32>>> = None;
        for simd in SimdPath::supported() {
            let results = f32_paths(simd);
            for (path, got, want) in &results {
                assert!(close32(got, want), "f32 {simd} {path} {:?}", (c, o, h, w, s, p, d));
            }
            if matches!(simd, SimdPath::Avx2 | SimdPath::Avx512) {
                let bits: Vec<Vec<f32>> = results.into_iter().map(|r| r.1).collect();
                match &fused {
                    None => fused = Some(bits),
                    Some(first) => assert!(
                        first
                            .iter()
                            .zip(&bits)
                            .all(|(a, b)| a.iter().map(|v| v.to_bits()).eq(b.iter().map(|v| v.to_bits()))),
                        "{simd} differs from the other fused path in the last bits {:?}",
                        (c, o, h, w, s, p, d)
                    ),
                }
            }
        }
    }
}

/// The forward pass and the input adjoint on the tile give the same bits on 1, 3 and 16
/// threads, on every SIMD path, in f32 and in the 16-bit tile on every kernel this processor
/// has, and agree with the reference. 37 samples are three chunks (the last partial), so
/// that 3 threads lay each chunk out in two bands of pixels (80 and 76 of the 12 x 13) and 16
/// threads in bands of 16, and sum in more bands of rows than the chunks alone give.
#[test]
fn tile_frame_bits_do_not_depend_on_the_threads() {
    use super::bf16::{conv2d_forward_half_on, conv2d_input_adjoint_half_on, Bf16Kernel};
    use crate::bf16;
    let g = ConvGeometry::conv2d([37, 9, 12, 13], [14, 9, 3, 3], (1, 1), (1, 1), (1, 1)).unwrap();
    let x: Vec<f32> = (0..37 * 9 * 156).map(|v| ((v * 37 % 101) as f32) / 7.3 - 6.0).collect();
    let w: Vec<f32> = (0..14 * 9 * 9).map(|v| ((v * 11 % 29) as f32) / 13.0 - 1.0).collect();
    let gy: Vec<f32> = (0..37 * 14 * g.out_h * g.out_w)
        .map(|v| ((v * 13 % 53) as f32) / 9.1 - 3.0)
        .collect();
    let bias: Vec<f32> = (0..14).map(|v| v as f32 / 5.0 - 1.0).collect();
    let epilogue = Epilogue {
        bias: Some(&bias),
        activation: Some(UnaryOp::LeakyRelu(0.2)),
    };
    let want_forward = reference::conv2d_forward(&g, &x, &w, epilogue);
    let want_adjoint = reference::conv2d_input_adjoint(&g, &gy, &w, Epilogue::NONE);
    let on = |threads: usize, f: &(dyn Fn() -> Vec<u32> + Sync)| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(f)
    };
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<u32>>();
    let close = |got: &[u32], want: &[f32], what: &str| {
        for (&got, &want) in got.iter().zip(want) {
            let got = f32::from_bits(got);
            assert!(
                (got - want).abs() <= 1e-3 * want.abs().max(1.0),
                "{what}: {got} against {want}"
            );
        }
    };
    for path in SimdPath::supported() {
        let forward = || bits(tile_frame::forward_by_tiles(path, &g, &x, &w, epilogue));
        let adjoint = || bits(tile_frame::input_adjoint_by_tiles(path, &g, &gy, &w, Epilogue::NONE));
        let (forward_one, adjoint_one) = (on(1, &forward), on(1, &adjoint));
        close(&forward_one, &want_forward, &format!("{path}: forward"));
        close(&adjoint_one, &want_adjoint, &format!("{path}: input adjoint"));
        for threads in [3, 16] {
            assert_eq!(on(threads, &forward), forward_one, "{path}: forward, {threads} threads");
            assert_eq!(on(threads, &adjoint), adjoint_one, "{path}: adjoint, {threads} threads");
        }
    }
    let half = |v: &[f32]| v.iter().map(|&v| bf16::from_f32(v)).collect::<Vec<bf16>>();
    let (x16, w16, gy16, bias16) = (half(&x), half(&w), half(&gy), half(&bias));
    for kernel in Bf16Kernel::supported() {
        let bf16_bits = |v: Vec<bf16>| v.into_iter().map(|v| v.to_bits() as u32).collect::<Vec<u32>>();
        let forward = || {
            let act = Some(UnaryOp::LeakyRelu(0.2));
            bf16_bits(conv2d_forward_half_on(kernel, &g, &x16, &w16, Some(&bias16), act))
        };
        let adjoint = || bf16_bits(conv2d_input_adjoint_half_on(kernel, &g, &gy16, &w16, None, None));
        let (forward_one, adjoint_one) = (on(1, &forward), on(1, &adjoint));
        for threads in [3, 16] {
            assert_eq!(
                on(threads, &forward),
                forward_one,
                "{kernel:?}: forward, {threads} threads"
            );
            assert_eq!(
                on(threads, &adjoint),
                adjoint_one,
                "{kernel:?}: adjoint, {threads} threads"
            );
        }
    }
}
