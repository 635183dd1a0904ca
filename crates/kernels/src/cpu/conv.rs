//! 2-D convolution by im2col and our matmul.
//!
//! Three kernels cover conv2d, conv_transpose2d and all their derivatives:
//! - [`conv2d_forward`]: `y = conv(x, w)`;
//! - [`conv2d_input_adjoint`]: the adjoint of `x -> conv(x, w)`, which is both conv2d's input
//!   gradient and conv_transpose2d's forward pass;
//! - [`conv2d_weight_grad`]: the gradient of `<conv(x, w), gy>` with respect to `w`.
//!
//! Shapes follow PyTorch: images `[N, C, H, W]`, conv weights `[O, C, kh, kw]`, maps
//! `[N, O, Ho, Wo]`. All three are described by one [`ConvGeometry`] in conv2d's terms.

use super::matmul::{gemm, MatrixLayout};
use crate::{ConvGeometry, Element};
use rayon::prelude::*;

/// Unfold one image `[C, H, W]` into columns `[C*kh*kw, Ho*Wo]`: column `(oh, ow)` holds the
/// receptive field of output pixel `(oh, ow)`, zeros where it hangs over the padding.
pub fn im2col<T: Element>(g: &ConvGeometry, image: &[T], cols: &mut [T]) {
    let (ho, wo) = (g.out_h, g.out_w);
    for c in 0..g.in_channels {
        for ki in 0..g.kernel_h {
            for kj in 0..g.kernel_w {
                let row = (c * g.kernel_h + ki) * g.kernel_w + kj;
                let dst = &mut cols[row * ho * wo..(row + 1) * ho * wo];
                for oh in 0..ho {
                    let ih = (oh * g.stride.0 + ki * g.dilation.0) as isize - g.padding.0 as isize;
                    let dst_row = &mut dst[oh * wo..(oh + 1) * wo];
                    if ih < 0 || ih >= g.in_h as isize {
                        dst_row.iter_mut().for_each(|v| *v = T::ZERO);
                        continue;
                    }
                    let src = &image[(c * g.in_h + ih as usize) * g.in_w..][..g.in_w];
                    for (ow, v) in dst_row.iter_mut().enumerate() {
                        let iw = (ow * g.stride.1 + kj * g.dilation.1) as isize - g.padding.1 as isize;
                        *v = if iw < 0 || iw >= g.in_w as isize {
                            T::ZERO
                        } else {
                            src[iw as usize]
                        };
                    }
                }
            }
        }
    }
}

/// Fold columns `[C*kh*kw, Ho*Wo]` back onto an image `[C, H, W]`, adding where receptive
/// fields overlap: the adjoint of [`im2col`].
pub fn col2im<T: Element>(g: &ConvGeometry, cols: &[T], image: &mut [T]) {
    let (ho, wo) = (g.out_h, g.out_w);
    image.iter_mut().for_each(|v| *v = T::ZERO);
    for c in 0..g.in_channels {
        for ki in 0..g.kernel_h {
            for kj in 0..g.kernel_w {
                let row = (c * g.kernel_h + ki) * g.kernel_w + kj;
                let src = &cols[row * ho * wo..(row + 1) * ho * wo];
                for oh in 0..ho {
                    let ih = (oh * g.stride.0 + ki * g.dilation.0) as isize - g.padding.0 as isize;
                    if ih < 0 || ih >= g.in_h as isize {
                        continue;
                    }
                    let dst = &mut image[(c * g.in_h + ih as usize) * g.in_w..][..g.in_w];
                    for ow in 0..wo {
                        let iw = (ow * g.stride.1 + kj * g.dilation.1) as isize - g.padding.1 as isize;
                        if iw >= 0 && iw < g.in_w as isize {
                            dst[iw as usize] += src[oh * wo + ow];
                        }
                    }
                }
            }
        }
    }
}

/// `y[n] = W (O x C*kh*kw) @ im2col(x[n])`: conv2d without bias. `x: [N, C, H, W]`,
/// `w: [O, C, kh, kw]`, returns `[N, O, Ho, Wo]`.
pub fn conv2d_forward<T: Element>(g: &ConvGeometry, x: &[T], w: &[T]) -> Vec<T> {
    let (k, pix) = (g.patch_len(), g.out_h * g.out_w);
    let image_len = g.in_channels * g.in_h * g.in_w;
    let mut y = vec![T::ZERO; g.batch * g.out_channels * pix];
    y.par_chunks_mut(g.out_channels * pix).enumerate().for_each(|(n, y)| {
        let mut cols = vec![T::ZERO; k * pix];
        im2col(g, &x[n * image_len..(n + 1) * image_len], &mut cols);
        gemm(
            g.out_channels,
            pix,
            k,
            w,
            MatrixLayout::row_major(k),
            &cols,
            MatrixLayout::row_major(pix),
            y,
            false,
            false,
        );
    });
    y
}

/// `x[n] = col2im(W^T (C*kh*kw x O) @ y[n])`: the adjoint of conv2d in its input. `y: [N, O,
/// Ho, Wo]`, `w: [O, C, kh, kw]`, returns `[N, C, H, W]`. This is conv2d's input gradient and
/// conv_transpose2d's forward pass (whose weight `[in, out, kh, kw]` is this `w`).
pub fn conv2d_input_adjoint<T: Element>(g: &ConvGeometry, y: &[T], w: &[T]) -> Vec<T> {
    let (k, pix) = (g.patch_len(), g.out_h * g.out_w);
    let image_len = g.in_channels * g.in_h * g.in_w;
    let mut x = vec![T::ZERO; g.batch * image_len];
    x.par_chunks_mut(image_len).enumerate().for_each(|(n, image)| {
        let mut cols = vec![T::ZERO; k * pix];
        let y_n = &y[n * g.out_channels * pix..(n + 1) * g.out_channels * pix];
        gemm(
            k,
            pix,
            g.out_channels,
            w,
            MatrixLayout::transposed(k),
            y_n,
            MatrixLayout::row_major(pix),
            &mut cols,
            false,
            false,
        );
        col2im(g, &cols, image);
    });
    x
}

/// `gw = sum_n gy[n] (O x Ho*Wo) @ im2col(x[n])^T`: the gradient of `<conv2d(x, w), gy>` with
/// respect to `w`. `x: [N, C, H, W]`, `gy: [N, O, Ho, Wo]`, returns `[O, C, kh, kw]`.
///
/// The batch is cut into fixed chunks, each summed in order, and the chunks' sums are added in
/// order: the result does not depend on how rayon schedules the work, so a run is
/// reproducible bit for bit.
pub fn conv2d_weight_grad<T: Element>(g: &ConvGeometry, x: &[T], gy: &[T]) -> Vec<T> {
    const SAMPLES_PER_CHUNK: usize = 4;
    let (k, pix) = (g.patch_len(), g.out_h * g.out_w);
    let image_len = g.in_channels * g.in_h * g.in_w;
    let wlen = g.out_channels * k;
    let chunks: Vec<usize> = (0..g.batch.div_ceil(SAMPLES_PER_CHUNK)).collect();
    let partials: Vec<Vec<T>> = chunks
        .par_iter()
        .map(|&chunk| {
            let mut gw = vec![T::ZERO; wlen];
            let mut cols = vec![T::ZERO; k * pix];
            for n in chunk * SAMPLES_PER_CHUNK..((chunk + 1) * SAMPLES_PER_CHUNK).min(g.batch) {
                im2col(g, &x[n * image_len..(n + 1) * image_len], &mut cols);
                let gy_n = &gy[n * g.out_channels * pix..(n + 1) * g.out_channels * pix];
                gemm(
                    g.out_channels,
                    k,
                    pix,
                    gy_n,
                    MatrixLayout::row_major(pix),
                    &cols,
                    MatrixLayout::transposed(pix),
                    &mut gw,
                    true,
                    false,
                );
            }
            gw
        })
        .collect();
    let mut total = vec![T::ZERO; wlen];
    for partial in partials {
        total.iter_mut().zip(&partial).for_each(|(a, &b)| *a += b);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::too_many_arguments)]
    fn geometry(c: usize, o: usize, h: usize, w: usize, k: usize, s: usize, p: usize, d: usize) -> ConvGeometry {
        ConvGeometry {
            batch: 1,
            in_channels: c,
            out_channels: o,
            in_h: h,
            in_w: w,
            kernel_h: k,
            kernel_w: k,
            stride: (s, s),
            padding: (p, p),
            dilation: (d, d),
            out_h: ConvGeometry::conv_out_size(h, k, s, p, d).unwrap(),
            out_w: ConvGeometry::conv_out_size(w, k, s, p, d).unwrap(),
        }
    }

    #[test]
    fn conv2d_hand_computed() {
        // 1x3x3 image, 2x2 kernel of ones plus a second channel-out of [1, 0; 0, -1].
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
        let w = [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, -1.0];
        let g = geometry(1, 2, 3, 3, 2, 1, 0, 1);
        let y = conv2d_forward(&g, &x, &w);
        assert_eq!(y, vec![12.0, 16.0, 24.0, 28.0, -4.0, -4.0, -4.0, -4.0]);
        // Stride 2 with padding 1: four corners of the padded image.
        let g = geometry(1, 1, 3, 3, 2, 2, 1, 1);
        let y = conv2d_forward(&g, &x, &w[..4]);
        assert_eq!(y, vec![1.0, 5.0, 11.0, 28.0]);
        // Dilation 2: the 2x2 kernel touches the four corners of the 3x3 image.
        let g = geometry(1, 1, 3, 3, 2, 1, 0, 2);
        assert_eq!(conv2d_forward(&g, &x, &w[..4]), vec![20.0]);
    }

    #[test]
    fn transposed_conv_hand_computed() {
        // A 2x2 map through a 2x2 kernel with stride 2 tiles the kernel, scaled.
        let y = [1.0, 2.0, 3.0, 4.0];
        let w = [1.0, 10.0, 100.0, 1000.0];
        let g = geometry(1, 1, 4, 4, 2, 2, 0, 1);
        let x = conv2d_input_adjoint(&g, &y, &w);
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
        let y = conv2d_forward(&g, &x, &w);
        let lhs: f64 = y.iter().zip(&gy).map(|(a, b)| a * b).sum();
        let gw = conv2d_weight_grad(&g, &x, &gy);
        let rhs: f64 = w.iter().zip(&gw).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-9, "{lhs} vs {rhs}");
        let gx = conv2d_input_adjoint(&g, &gy, &w);
        let rhs: f64 = x.iter().zip(&gx).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-9, "{lhs} vs {rhs}");
    }
}
