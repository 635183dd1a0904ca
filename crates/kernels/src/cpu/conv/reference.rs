//! The plain convolution, the reference: `im2col` and `col2im` (the CPU twins of the kernels
//! of the same names in `kernels/conv.cu`), and the three convolutions written with them and
//! plain loops, one sample at a time. Nothing here is fast; the paths of [`super`] are tested
//! against these.

use crate::op::Epilogue;
use crate::{ConvGeometry, Element};

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

/// `activation(conv2d(x, w) + bias)`: per sample, the columns of [`im2col`] times the weights
/// `[O, C*kh*kw]`. `x: [N, C, H, W]`, `w: [O, C, kh, kw]`, returns `[N, O, Ho, Wo]`.
pub fn conv2d_forward<T: Element>(g: &ConvGeometry, x: &[T], w: &[T], epilogue: Epilogue<T>) -> Vec<T> {
    let (k, pixels, o) = (g.patch_len(), g.out_h * g.out_w, g.out_channels);
    let image_len = g.in_channels * g.in_h * g.in_w;
    let mut y = Vec::with_capacity(g.batch * o * pixels);
    let mut cols = vec![T::ZERO; k * pixels];
    for n in 0..g.batch {
        im2col(g, &x[n * image_len..(n + 1) * image_len], &mut cols);
        for oc in 0..o {
            let bias = epilogue.bias.map_or(T::ZERO, |b| b[oc]);
            for p in 0..pixels {
                let sum = (0..k).fold(T::ZERO, |sum, r| sum + w[oc * k + r] * cols[r * pixels + p]);
                y.push(bias + sum);
            }
        }
    }
    activate(y, epilogue)
}

/// `activation(conv2d^T(y, w) + bias)`, the adjoint of conv2d in its input: per sample, the
/// weights transposed times the map, folded back by [`col2im`]. `y: [N, O, Ho, Wo]`, `w: [O,
/// C, kh, kw]`, returns `[N, C, H, W]`.
pub fn conv2d_input_adjoint<T: Element>(g: &ConvGeometry, y: &[T], w: &[T], epilogue: Epilogue<T>) -> Vec<T> {
    let (k, pixels, o) = (g.patch_len(), g.out_h * g.out_w, g.out_channels);
    let (image_pixels, image_len) = (g.in_h * g.in_w, g.in_channels * g.in_h * g.in_w);
    let mut x = vec![T::ZERO; g.batch * image_len];
    let mut cols = vec![T::ZERO; k * pixels];
    for n in 0..g.batch {
        let map = &y[n * o * pixels..(n + 1) * o * pixels];
        for (i, col) in cols.iter_mut().enumerate() {
            let (r, p) = (i / pixels, i % pixels);
            *col = (0..o).fold(T::ZERO, |sum, oc| sum + w[oc * k + r] * map[oc * pixels + p]);
        }
        let image = &mut x[n * image_len..(n + 1) * image_len];
        col2im(g, &cols, image);
        if let Some(bias) = epilogue.bias {
            image
                .iter_mut()
                .enumerate()
                .for_each(|(i, v)| *v += bias[i / image_pixels]);
        }
    }
    activate(x, epilogue)
}

/// The gradient of `<conv2d(x, w), gy>` in `w`: `sum_n gy[n] (O x Ho*Wo) @ im2col(x[n])^T`.
/// `x: [N, C, H, W]`, `gy: [N, O, Ho, Wo]`, returns `[O, C, kh, kw]`.
pub fn conv2d_weight_grad<T: Element>(g: &ConvGeometry, x: &[T], gy: &[T]) -> Vec<T> {
    let (k, pixels, o) = (g.patch_len(), g.out_h * g.out_w, g.out_channels);
    let image_len = g.in_channels * g.in_h * g.in_w;
    let mut gw = vec![T::ZERO; o * k];
    let mut cols = vec![T::ZERO; k * pixels];
    for n in 0..g.batch {
        im2col(g, &x[n * image_len..(n + 1) * image_len], &mut cols);
        let map = &gy[n * o * pixels..(n + 1) * o * pixels];
        for oc in 0..o {
            for r in 0..k {
                let sum = (0..pixels).fold(T::ZERO, |sum, p| sum + map[oc * pixels + p] * cols[r * pixels + p]);
                gw[oc * k + r] += sum;
            }
        }
    }
    gw
}

/// The epilogue's activation over a whole output.
fn activate<T: Element>(out: Vec<T>, epilogue: Epilogue<T>) -> Vec<T> {
    match epilogue.activation {
        Some(op) => crate::cpu::elementwise::unary(op, &out),
        None => out,
    }
}
