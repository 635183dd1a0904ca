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
//!
//! The kernels lower a chunk of several samples at once into one column matrix
//! `[C*kh*kw, S*Ho*Wo]` (sample `s` in columns `s*Ho*Wo..(s+1)*Ho*Wo`), so that each GEMM has
//! a hundred columns or more even for 4x4 maps, and the weights are packed once per chunk
//! rather than once per sample:
//! - the forward pass and the input adjoint run their chunks in parallel, each GEMM on one
//!   thread; every output element comes from exactly one GEMM;
//! - the weight gradient lowers a few MiB of columns at a time (im2col in parallel over input
//!   channels), and one GEMM on all threads sums the whole chunk, accumulating into `gw` chunk
//!   after chunk, so there are no per-thread partial sums.
//!
//! Chunk sizes depend only on the geometry, never on the thread count or on scheduling, and
//! the `gemm` crate's threads split the output, not the depth of the sum: results are
//! reproducible bit for bit.
//!
//! The padding taps of a column buffer sit at the same places for every sample, so a buffer is
//! zeroed once and then refilled with the taps inside the image only.

use super::matmul::{gemm, MatrixLayout};
use crate::{ConvGeometry, Element};
use rayon::prelude::*;
use std::ops::Range;

/// Columns of the forward GEMM that one chunk of samples aims for.
const FORWARD_COLUMNS: usize = 64;
/// Columns of the input adjoint's GEMM that one chunk of samples aims for.
const ADJOINT_COLUMNS: usize = 256;
/// Elements of the block of columns the input adjoint computes at once (256 KiB of f32).
const ADJOINT_BLOCK_ELEMS: usize = 1 << 16;
/// Elements of the column matrix the weight gradient lowers at once (2 MiB of f32), so that it
/// stays in cache between im2col and the GEMM that reads it.
const BATCH_COLS_ELEMS: usize = 1 << 19;
/// Fewest chunks a batch is cut into (when it has that many samples), to keep both cores busy.
const MIN_CHUNKS: usize = 4;

/// Samples per chunk for this geometry: about `columns` output pixels, at least one, and at
/// most a [`MIN_CHUNKS`]th of the batch. It depends on the geometry alone.
fn samples_per_chunk(g: &ConvGeometry, columns: usize) -> usize {
    let pix = (g.out_h * g.out_w).max(1);
    let by_columns = columns.div_ceil(pix);
    let by_chunks = g.batch.div_ceil(MIN_CHUNKS).max(1);
    by_columns.min(by_chunks).max(1)
}

/// Make `buf` `len` zeros, unless it already has that length: the callers only ever write the
/// same positions of a buffer of a given length (see [`im2col_channels`]'s `zeroed`), so the
/// rest is still zero from the last fill.
fn zeroed_buffer<T: Element>(buf: &mut Vec<T>, len: usize) {
    if buf.len() != len {
        buf.clear();
        buf.resize(len, T::ZERO);
    }
}

/// For kernel offset `k` along one axis: the range `lo..hi` of output positions whose input
/// position `o * stride + k * dilation - padding` falls inside `0..input`, and the input
/// position of `lo`.
fn valid_range(
    out: usize,
    input: usize,
    k: usize,
    stride: usize,
    dilation: usize,
    padding: usize,
) -> (usize, usize, usize) {
    let shift = k * dilation;
    // First o with o * stride + shift >= padding.
    let lo = if shift >= padding {
        0
    } else {
        (padding - shift).div_ceil(stride)
    };
    // Last o with o * stride + shift - padding < input, i.e. o * stride < input + padding - shift.
    let hi = if input + padding <= shift {
        0
    } else {
        (input + padding - shift).div_ceil(stride)
    };
    let (lo, hi) = (lo.min(out), hi.min(out));
    if lo >= hi {
        return (0, 0, 0);
    }
    (lo, hi, lo * stride + shift - padding)
}

/// [`im2col`] of input channels `channels` only, into columns with leading dimension `ld`:
/// row `r` (counted from channel `channels.start`) of this image's columns is
/// `cols[r * ld..r * ld + Ho*Wo]`. With `zeroed`, the taps that fall on the padding are
/// taken to hold zero already and are not written: the padding sits at the same places for
/// every sample, so a buffer zeroed once and refilled with the same `ld` keeps its zeros.
fn im2col_channels<T: Element>(
    g: &ConvGeometry,
    channels: Range<usize>,
    image: &[T],
    cols: &mut [T],
    ld: usize,
    zeroed: bool,
) {
    let (ho, wo) = (g.out_h, g.out_w);
    let (sh, sw) = g.stride;
    let c0 = channels.start;
    // The valid ranges depend on the kernel offset only, not on the channel: work them out once.
    let (rows, columns) = valid_ranges(g);
    // With a stride, each plane is first split into its `sh * sw` phases (every sh-th row from
    // row ph, every sw-th column from column pw), so that every copy below reads a contiguous
    // run instead of every other element. Input (ih0 + i * sh, iw0 + j * sw) is element
    // (ih0 / sh + i, iw0 / sw + j) of phase (ih0 % sh, iw0 % sw): the divisions are done here,
    // once, rather than in the loops.
    let (phase_h, phase_w) = (g.in_h.div_ceil(sh), g.in_w.div_ceil(sw));
    let rows: Vec<_> = rows.iter().map(|&(lo, hi, ih0)| (lo, hi, ih0 % sh, ih0 / sh)).collect();
    let columns: Vec<_> = columns
        .iter()
        .map(|&(lo, hi, iw0)| (lo, hi, iw0 % sw, iw0 / sw))
        .collect();
    let mut phases = Vec::new();
    for c in channels {
        let plane = &image[c * g.in_h * g.in_w..(c + 1) * g.in_h * g.in_w];
        let source: &[T] = if sh == 1 && sw == 1 {
            plane
        } else {
            split_phases(plane, g.in_h, g.in_w, sh, sw, &mut phases);
            &phases
        };
        for (ki, &(oh_lo, oh_hi, phase_row, row0)) in rows.iter().enumerate() {
            for (kj, &(ow_lo, ow_hi, phase_column, column0)) in columns.iter().enumerate() {
                let row = ((c - c0) * g.kernel_h + ki) * g.kernel_w + kj;
                let dst = &mut cols[row * ld..row * ld + ho * wo];
                if ow_lo >= ow_hi {
                    if !zeroed {
                        dst.fill(T::ZERO);
                    }
                    continue;
                }
                if !zeroed {
                    dst[..oh_lo * wo].fill(T::ZERO);
                    dst[oh_hi * wo..].fill(T::ZERO);
                }
                let span = ow_hi - ow_lo;
                let phase = &source[(phase_row * sw + phase_column) * phase_h * phase_w..];
                for i in 0..oh_hi - oh_lo {
                    let src = &phase[(row0 + i) * phase_w + column0..][..span];
                    let dst_row = &mut dst[(oh_lo + i) * wo..][..wo];
                    if !zeroed {
                        dst_row[..ow_lo].fill(T::ZERO);
                        dst_row[ow_hi..].fill(T::ZERO);
                    }
                    // A plain loop rather than `copy_from_slice`: runs are a handful of
                    // elements, too short to pay for a call to memcpy.
                    for (d, &v) in dst_row[ow_lo..ow_hi].iter_mut().zip(src) {
                        *d = v;
                    }
                }
            }
        }
    }
}

/// Split an `h x w` plane into its `sh * sw` phases, each `ceil(h / sh) x ceil(w / sw)`: phase
/// `(ph, pw)` holds rows `ph, ph + sh, ..` and columns `pw, pw + sw, ..` (the cells past the edge
/// of a shorter phase are left as they are: nothing reads them).
fn split_phases<T: Element>(plane: &[T], h: usize, w: usize, sh: usize, sw: usize, phases: &mut Vec<T>) {
    let (phase_h, phase_w) = (h.div_ceil(sh), w.div_ceil(sw));
    phases.resize(sh * sw * phase_h * phase_w, T::ZERO);
    for (r, row) in plane.chunks_exact(w).enumerate() {
        let (ph, pr) = (r % sh, r / sh);
        for pw in 0..sw {
            let start = ((ph * sw + pw) * phase_h + pr) * phase_w;
            for (d, &v) in phases[start..start + phase_w]
                .iter_mut()
                .zip(row[pw..].iter().step_by(sw))
            {
                *d = v;
            }
        }
    }
}

/// [`valid_range`] for every kernel row (`ki`) and every kernel column (`kj`).
type Ranges = Vec<(usize, usize, usize)>;
fn valid_ranges(g: &ConvGeometry) -> (Ranges, Ranges) {
    let rows = (0..g.kernel_h)
        .map(|ki| valid_range(g.out_h, g.in_h, ki, g.stride.0, g.dilation.0, g.padding.0))
        .collect();
    let columns = (0..g.kernel_w)
        .map(|kj| valid_range(g.out_w, g.in_w, kj, g.stride.1, g.dilation.1, g.padding.1))
        .collect();
    (rows, columns)
}

/// [`col2im`] from columns with leading dimension `ld`, adding onto `image` (not zeroing it).
fn col2im_add_strided<T: Element>(g: &ConvGeometry, channels: Range<usize>, cols: &[T], ld: usize, image: &mut [T]) {
    let (ho, wo) = (g.out_h, g.out_w);
    let (sh, sw) = g.stride;
    let c0 = channels.start;
    let (rows, columns) = valid_ranges(g);
    for c in channels {
        let plane = &mut image[c * g.in_h * g.in_w..(c + 1) * g.in_h * g.in_w];
        for (ki, &(oh_lo, oh_hi, ih0)) in rows.iter().enumerate() {
            for (kj, &(ow_lo, ow_hi, iw0)) in columns.iter().enumerate() {
                if ow_lo >= ow_hi {
                    continue;
                }
                let row = ((c - c0) * g.kernel_h + ki) * g.kernel_w + kj;
                let src = &cols[row * ld..row * ld + ho * wo];
                let span = ow_hi - ow_lo;
                for i in 0..oh_hi - oh_lo {
                    let src_row = &src[(oh_lo + i) * wo + ow_lo..][..span];
                    let dst = &mut plane[(ih0 + i * sh) * g.in_w + iw0..][..(span - 1) * sw + 1];
                    // An indexed loop, not `step_by`, whose length costs a division per run.
                    for (j, &s) in src_row.iter().enumerate() {
                        dst[j * sw] += s;
                    }
                }
            }
        }
    }
}

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
///
/// Per chunk of `S` samples: `cols = [im2col(x[n0]) .. im2col(x[n0+S-1])]` (`K x S*P`),
/// `out = W @ cols` (`O x S*P`), then `out` is scattered to `y[n0..n0+S]`.
pub fn conv2d_forward<T: Element>(g: &ConvGeometry, x: &[T], w: &[T]) -> Vec<T> {
    let (k, pix, o) = (g.patch_len(), g.out_h * g.out_w, g.out_channels);
    let image_len = g.in_channels * g.in_h * g.in_w;
    let mut y = vec![T::ZERO; g.batch * o * pix];
    if y.is_empty() {
        return y;
    }
    let spc = samples_per_chunk(g, FORWARD_COLUMNS);
    y.par_chunks_mut(spc * o * pix).enumerate().for_each_init(
        || (Vec::new(), Vec::new()),
        |(cols, out): &mut (Vec<T>, Vec<T>), (chunk, y)| {
            let samples = y.len() / (o * pix);
            let ld = samples * pix;
            zeroed_buffer(cols, k * ld);
            out.resize(o * ld, T::ZERO);
            for s in 0..samples {
                let n = chunk * spc + s;
                let image = &x[n * image_len..(n + 1) * image_len];
                im2col_channels(g, 0..g.in_channels, image, &mut cols[s * pix..], ld, true);
            }
            gemm(
                o,
                ld,
                k,
                w,
                MatrixLayout::row_major(k),
                cols,
                MatrixLayout::row_major(ld),
                out,
                false,
                false,
            );
            for (s, y_n) in y.chunks_exact_mut(o * pix).enumerate() {
                for (c, y_c) in y_n.chunks_exact_mut(pix).enumerate() {
                    y_c.copy_from_slice(&out[c * ld + s * pix..c * ld + (s + 1) * pix]);
                }
            }
        },
    );
    y
}

/// `x[n] = col2im(W^T (C*kh*kw x O) @ y[n])`: the adjoint of conv2d in its input. `y: [N, O,
/// Ho, Wo]`, `w: [O, C, kh, kw]`, returns `[N, C, H, W]`. This is conv2d's input gradient and
/// conv_transpose2d's forward pass (whose weight `[in, out, kh, kw]` is this `w`).
///
/// Per chunk of `S` samples: `y[n0..n0+S]` is gathered into `O x S*P`, one GEMM gives the
/// columns of all `S` samples, and each sample's columns are folded onto its image.
pub fn conv2d_input_adjoint<T: Element>(g: &ConvGeometry, y: &[T], w: &[T]) -> Vec<T> {
    let (k, pix, o) = (g.patch_len(), g.out_h * g.out_w, g.out_channels);
    let image_len = g.in_channels * g.in_h * g.in_w;
    let mut x = vec![T::ZERO; g.batch * image_len];
    if x.is_empty() || pix == 0 {
        return x;
    }
    let spc = samples_per_chunk(g, ADJOINT_COLUMNS);
    x.par_chunks_mut(spc * image_len).enumerate().for_each_init(
        || (Vec::new(), Vec::new()),
        |(cols, gathered): &mut (Vec<T>, Vec<T>), (chunk, x)| {
            let samples = x.len() / image_len;
            let ld = samples * pix;
            let n0 = chunk * spc;
            let y_chunk = &y[n0 * o * pix..(n0 + samples) * o * pix];
            gather_maps(y_chunk, o, pix, samples, gathered);
            // The columns are computed a block of input channels at a time and folded at
            // once, so that they stay in cache between the GEMM and col2im.
            let taps = g.kernel_h * g.kernel_w;
            let block = (ADJOINT_BLOCK_ELEMS / (taps * ld).max(1)).clamp(1, g.in_channels);
            cols.resize(block * taps * ld, T::ZERO);
            for c0 in (0..g.in_channels).step_by(block) {
                let c1 = (c0 + block).min(g.in_channels);
                let rows = (c1 - c0) * taps;
                gemm(
                    rows,
                    ld,
                    o,
                    &w[c0 * taps..],
                    MatrixLayout::transposed(k),
                    gathered,
                    MatrixLayout::row_major(ld),
                    cols,
                    false,
                    false,
                );
                for (s, image) in x.chunks_exact_mut(image_len).enumerate() {
                    col2im_add_strided(g, c0..c1, &cols[s * pix..], ld, image);
                }
            }
        },
    );
    x
}

/// Rearrange `samples` maps `[S, O, P]` into one matrix `[O, S*P]` (row `o` holds channel `o`
/// of every sample in turn).
fn gather_maps<T: Element>(maps: &[T], o: usize, pix: usize, samples: usize, out: &mut Vec<T>) {
    out.clear();
    out.reserve(o * samples * pix);
    for c in 0..o {
        for s in 0..samples {
            out.extend_from_slice(&maps[(s * o + c) * pix..(s * o + c + 1) * pix]);
        }
    }
}

/// `gw = sum_n gy[n] (O x Ho*Wo) @ im2col(x[n])^T`: the gradient of `<conv2d(x, w), gy>` with
/// respect to `w`. `x: [N, C, H, W]`, `gy: [N, O, Ho, Wo]`, returns `[O, C, kh, kw]`.
///
/// Per chunk of `S` samples, one GEMM `[gy[n0] .. gy[n0+S-1]] (O x S*P) @ cols^T (S*P x K)`,
/// on all threads, adds the chunk's samples onto `gw`. The chunks are cut by the geometry
/// alone and added in order, and the GEMM's threads split `gw`, not the sum, so the result
/// does not depend on how rayon schedules the work and a run is reproducible bit for bit.
pub fn conv2d_weight_grad<T: Element>(g: &ConvGeometry, x: &[T], gy: &[T]) -> Vec<T> {
    let (k, pix, o) = (g.patch_len(), g.out_h * g.out_w, g.out_channels);
    let image_len = g.in_channels * g.in_h * g.in_w;
    let taps = g.kernel_h * g.kernel_w;
    let mut gw = vec![T::ZERO; o * k];
    if g.batch == 0 || pix == 0 || gw.is_empty() {
        return gw;
    }
    let spc = (BATCH_COLS_ELEMS / (k * pix)).clamp(1, g.batch);
    let (mut cols, mut gathered) = (Vec::new(), Vec::new());
    for n0 in (0..g.batch).step_by(spc) {
        let samples = spc.min(g.batch - n0);
        let ld = samples * pix;
        zeroed_buffer(&mut cols, k * ld);
        cols.par_chunks_mut(taps * ld).enumerate().for_each(|(c, rows)| {
            for s in 0..samples {
                let image = &x[(n0 + s) * image_len..(n0 + s + 1) * image_len];
                im2col_channels(g, c..c + 1, image, &mut rows[s * pix..], ld, true);
            }
        });
        gather_maps(
            &gy[n0 * o * pix..(n0 + samples) * o * pix],
            o,
            pix,
            samples,
            &mut gathered,
        );
        gemm(
            o,
            k,
            ld,
            &gathered,
            MatrixLayout::row_major(ld),
            &cols,
            MatrixLayout::transposed(ld),
            &mut gw,
            n0 > 0,
            true,
        );
    }
    gw
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

    /// The fast, strided im2col/col2im and the chunked kernels agree with the plain reference
    /// im2col/col2im, per sample, over strides, paddings (including more than the kernel),
    /// dilations and odd sizes.
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
            (8, 2, 32, 32, 3, 3, (1, 1), (1, 1), (1, 1), 10),
        ];
        for &(c, o, h, w, kh, kw, s, p, d, batch) in &cases {
            let g = ConvGeometry {
                batch,
                in_channels: c,
                out_channels: o,
                in_h: h,
                in_w: w,
                kernel_h: kh,
                kernel_w: kw,
                stride: s,
                padding: p,
                dilation: d,
                out_h: ConvGeometry::conv_out_size(h, kh, s.0, p.0, d.0).unwrap(),
                out_w: ConvGeometry::conv_out_size(w, kw, s.1, p.1, d.1).unwrap(),
            };
            let (k, pix, image_len) = (g.patch_len(), g.out_h * g.out_w, c * h * w);
            let x: Vec<f64> = (0..batch * image_len)
                .map(|v| ((v * 37 % 17) as f64) / 7.0 - 1.0)
                .collect();
            let wt: Vec<f64> = (0..o * k).map(|v| ((v * 13 % 11) as f64) / 5.0 - 1.0).collect();
            let gy: Vec<f64> = (0..batch * o * pix).map(|v| ((v * 7 % 5) as f64) - 2.0).collect();
            let (mut y_ref, mut gx_ref, mut gw_ref) = (Vec::new(), Vec::new(), vec![0.0; o * k]);
            for n in 0..batch {
                let mut cols = vec![0.0; k * pix];
                im2col(&g, &x[n * image_len..(n + 1) * image_len], &mut cols);
                let mut fast = vec![f64::NAN; k * pix + 3];
                im2col_channels(&g, 0..c, &x[n * image_len..(n + 1) * image_len], &mut fast, pix, false);
                assert_eq!(&fast[..k * pix], &cols[..], "im2col {:?}", (c, h, w, kh, kw, s, p, d));
                // Into a zeroed buffer, writing only the taps inside the image.
                let mut fast = vec![0.0; k * pix];
                im2col_channels(&g, 0..c, &x[n * image_len..(n + 1) * image_len], &mut fast, pix, true);
                assert_eq!(fast, cols, "im2col into zeros {:?}", (c, h, w, kh, kw, s, p, d));
                let gy_n = &gy[n * o * pix..(n + 1) * o * pix];
                for oc in 0..o {
                    for q in 0..pix {
                        y_ref.push((0..k).map(|r| wt[oc * k + r] * cols[r * pix + q]).sum::<f64>());
                        for r in 0..k {
                            gw_ref[oc * k + r] += gy_n[oc * pix + q] * cols[r * pix + q];
                        }
                    }
                }
                let back: Vec<f64> = (0..k * pix)
                    .map(|i| (0..o).map(|oc| wt[oc * k + i / pix] * gy_n[oc * pix + i % pix]).sum())
                    .collect();
                let mut image = vec![1.0; image_len];
                col2im(&g, &back, &mut image);
                let mut fast = vec![0.0; image_len];
                col2im_add_strided(&g, 0..c, &back, pix, &mut fast);
                assert_eq!(fast, image, "col2im {:?}", (c, h, w, kh, kw, s, p, d));
                gx_ref.extend(image);
            }
            let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9) && a.len() == b.len();
            assert!(
                close(&conv2d_forward(&g, &x, &wt), &y_ref),
                "forward {:?}",
                (c, h, w, s, p, d)
            );
            assert!(
                close(&conv2d_input_adjoint(&g, &gy, &wt), &gx_ref),
                "adjoint {:?}",
                (c, h, w, s, p, d)
            );
            assert!(
                close(&conv2d_weight_grad(&g, &x, &gy), &gw_ref),
                "weight grad {:?}",
                (c, h, w, s, p, d)
            );
        }
    }
}
