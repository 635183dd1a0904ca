//! The convolutions by rectangles of GEMMs over the taps that fall inside the image: the path
//! for layers with too few channels to fill the register tile (see [`super`]'s "Lowering to
//! GEMMs"). The GEMMs choose their own instructions (the `gemm` crate dispatches at run
//! time); the bias and activation run on the process's SIMD path.

use super::finish_maps;
use super::taps_inside;
use crate::cpu::matmul::{gemm, gemm_into};
use crate::cpu::simd::active_path;
use crate::op::{Epilogue, MatrixLayout};
use crate::{ConvGeometry, Element};
use rayon::prelude::*;
use std::ops::Range;

/// Fewest chunks a batch is cut into (when it has that many samples) in the forward pass and
/// the input adjoint, which run chunks in parallel.
const MIN_CHUNKS: usize = 4;
/// Output channels per parallel block of the weight gradient (by rectangles): small enough
/// that a 64-channel layer is shared among threads.
const WEIGHT_GRAD_ROWS: usize = 16;
/// Elements of im2col columns (all taps, padding included) that one chunk of samples may
/// span, so that a chunk's buffers stay a few MiB.
const CHUNK_COLUMN_ELEMS: usize = 1 << 20;

/// Samples per chunk: with `parallel` (chunks run side by side), at most a [`MIN_CHUNKS`]th of
/// the batch and [`CHUNK_COLUMN_ELEMS`] worth of columns; without (chunks run one after the
/// other), four times that many columns. At least one; it depends on the geometry alone.
fn samples_per_chunk(g: &ConvGeometry, parallel: bool) -> usize {
    let per_sample = (g.patch_len() * g.out_h * g.out_w).max(1);
    let (by_memory, by_chunks) = if parallel {
        (CHUNK_COLUMN_ELEMS / per_sample, g.batch.div_ceil(MIN_CHUNKS))
    } else {
        (4 * CHUNK_COLUMN_ELEMS / per_sample, g.batch)
    };
    let most = by_memory.min(by_chunks).max(1);
    // As many chunks as that takes, evened out: 64 samples by at most 53 is two chunks of 32.
    g.batch.div_ceil(g.batch.div_ceil(most).max(1)).max(1)
}

/// Output positions along one axis that see the same run of kernel taps inside the input:
/// for every `o` in `outputs` and `k` in `taps`, input position `o * stride + k * dilation -
/// padding` is inside the image, and no other tap of `o` is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct TapClass {
    pub(super) outputs: Range<usize>,
    pub(super) taps: Range<usize>,
}

/// The `TapClass`es of one axis, in order. Outputs whose every tap falls on the padding are
/// in no class: they see only zeros.
pub(super) fn tap_classes(
    out: usize,
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    padding: usize,
) -> Vec<TapClass> {
    let mut classes: Vec<TapClass> = Vec::new();
    for o in 0..out {
        let taps = taps_inside(o, input, kernel, stride, dilation, padding);
        if taps.is_empty() {
            continue;
        }
        match classes.last_mut() {
            Some(last) if last.outputs.end == o && last.taps == taps => last.outputs.end = o + 1,
            _ => classes.push(TapClass {
                outputs: o..o + 1,
                taps,
            }),
        }
    }
    classes
}

/// One rectangle of the output grid: output rows `rows.outputs` by columns `columns.outputs`,
/// through kernel rows `rows.taps` and kernel columns `columns.taps`.
struct Rectangle<'a> {
    rows: &'a TapClass,
    columns: &'a TapClass,
}

impl Rectangle<'_> {
    fn pixels(&self) -> usize {
        self.rows.outputs.len() * self.columns.outputs.len()
    }
    /// GEMM rows (taps) per kernel row: `(kernel column, channel)` pairs.
    fn taps_per_kernel_row(&self, channels: usize) -> usize {
        self.columns.taps.len() * channels
    }
    /// Every (output pixel, kernel tap) pair of the rectangle with its input position, in the
    /// order of the GEMM's rows (kernel row, kernel column) and columns (output pixel): calls
    /// `f(tap, pixel, ih, iw)`, `tap` and `pixel` counted from 0 within the rectangle.
    fn for_each_tap(&self, g: &ConvGeometry, mut f: impl FnMut(usize, usize, usize, usize)) {
        let (tap_columns, pixel_columns) = (self.columns.taps.len(), self.columns.outputs.len());
        for (a, ki) in self.rows.taps.clone().enumerate() {
            for (b, kj) in self.columns.taps.clone().enumerate() {
                for (i, oh) in self.rows.outputs.clone().enumerate() {
                    let ih = oh * g.stride.0 + ki * g.dilation.0 - g.padding.0;
                    for (j, ow) in self.columns.outputs.clone().enumerate() {
                        let iw = ow * g.stride.1 + kj * g.dilation.1 - g.padding.1;
                        f(a * tap_columns + b, i * pixel_columns + j, ih, iw);
                    }
                }
            }
        }
    }
}

/// The rectangles of the output grid that see at least one tap inside the image.
fn rectangles<'a>(rows: &'a [TapClass], columns: &'a [TapClass]) -> impl Iterator<Item = Rectangle<'a>> + 'a {
    rows.iter()
        .flat_map(move |r| columns.iter().map(move |c| Rectangle { rows: r, columns: c }))
}

/// The tap classes of the output rows and of the output columns.
fn classes_of(g: &ConvGeometry) -> (Vec<TapClass>, Vec<TapClass>) {
    (
        tap_classes(g.out_h, g.in_h, g.kernel_h, g.stride.0, g.dilation.0, g.padding.0),
        tap_classes(g.out_w, g.in_w, g.kernel_w, g.stride.1, g.dilation.1, g.padding.1),
    )
}

/// `w [O, C, kh, kw]` as `[O, kh, kw, C]`: the GEMMs' row order.
fn taps_first<T: Element>(g: &ConvGeometry, w: &[T]) -> Vec<T> {
    let (c, taps) = (g.in_channels, g.kernel_h * g.kernel_w);
    let mut out = vec![T::ZERO; w.len()];
    for (src, dst) in w.chunks_exact(c * taps).zip(out.chunks_exact_mut(c * taps)) {
        for t in 0..taps {
            for ci in 0..c {
                dst[t * c + ci] = src[ci * taps + t];
            }
        }
    }
    out
}

/// The inverse of `taps_first`: `[O, kh, kw, C]` back to `[O, C, kh, kw]`.
fn channels_first<T: Element>(g: &ConvGeometry, w: &[T]) -> Vec<T> {
    let (c, taps) = (g.in_channels, g.kernel_h * g.kernel_w);
    let mut out = vec![T::ZERO; w.len()];
    for (src, dst) in w.chunks_exact(c * taps).zip(out.chunks_exact_mut(c * taps)) {
        for ci in 0..c {
            for t in 0..taps {
                dst[ci * taps + t] = src[t * c + ci];
            }
        }
    }
    out
}

/// Make `buf` at least `len` long for a caller that overwrites the elements it reads: it only
/// grows (zeroing only the growth), so that a buffer reused for a smaller block and then a
/// larger one is not filled with zeros each time.
fn overwritten_buffer<T: Element>(buf: &mut Vec<T>, len: usize) {
    if buf.len() < len {
        buf.resize(len, T::ZERO);
    }
}

/// `samples` consecutive arrays of `len` values, `[S, len]`, transposed to `[len, S]`.
fn samples_last<T: Element>(x: &[T], samples: usize, len: usize, out: &mut Vec<T>) {
    overwritten_buffer(out, len * samples);
    // Blocks of `BLOCK` positions: the writes of one block stay within a few cache lines.
    const BLOCK: usize = 64;
    for start in (0..len).step_by(BLOCK) {
        let end = (start + BLOCK).min(len);
        for s in 0..samples {
            let src = &x[s * len + start..s * len + end];
            for (i, &v) in src.iter().enumerate() {
                out[(start + i) * samples + s] = v;
            }
        }
    }
}

/// The inverse of `samples_last`: `[len, S]` back to `[S, len]`.
fn samples_first<T: Element>(t: &[T], samples: usize, len: usize, out: &mut [T]) {
    const BLOCK: usize = 64;
    for start in (0..len).step_by(BLOCK) {
        let end = (start + BLOCK).min(len);
        for s in 0..samples {
            let dst = &mut out[s * len + start..s * len + end];
            for (i, d) in dst.iter_mut().enumerate() {
                *d = t[(start + i) * samples + s];
            }
        }
    }
}

/// The columns of one rectangle for a chunk of `samples` samples: row `(tap, c)`, column
/// `(pixel, s)`, from the chunk's input laid out `[C, H, W, S]`. `K' x pixels*S`.
fn gather_columns<T: Element>(g: &ConvGeometry, rect: &Rectangle, xt: &[T], samples: usize, cols: &mut Vec<T>) {
    let (c, n) = (g.in_channels, rect.pixels() * samples);
    let taps = rect.rows.taps.len() * rect.columns.taps.len();
    overwritten_buffer(cols, taps * c * n);
    rect.for_each_tap(g, |tap, pixel, ih, iw| {
        for ci in 0..c {
            let src = &xt[((ci * g.in_h + ih) * g.in_w + iw) * samples..][..samples];
            let dst = &mut cols[(tap * c + ci) * n + pixel * samples..][..samples];
            // A plain loop, not `copy_from_slice`: runs of a few samples are too short to pay
            // for a call to memcpy.
            dst.iter_mut().zip(src).for_each(|(d, &v)| *d = v);
        }
    });
}

/// The inverse of [`gather_columns`], adding: each column value onto its input position in
/// `xt` (`[C, H, W, S]`).
fn scatter_add_columns<T: Element>(g: &ConvGeometry, rect: &Rectangle, cols: &[T], samples: usize, xt: &mut [T]) {
    let (c, n) = (g.in_channels, rect.pixels() * samples);
    rect.for_each_tap(g, |tap, pixel, ih, iw| {
        for ci in 0..c {
            let dst = &mut xt[((ci * g.in_h + ih) * g.in_w + iw) * samples..][..samples];
            let src = &cols[(tap * c + ci) * n + pixel * samples..][..samples];
            dst.iter_mut().zip(src).for_each(|(d, &v)| *d += v);
        }
    });
}

/// The maps of one rectangle for a chunk of samples, `[O, pixels * S]` (sample fastest), from
/// the chunk's maps laid out `[O, Ho, Wo, S]`: one contiguous run of `S` per pixel.
fn gather_maps<T: Element>(g: &ConvGeometry, rect: &Rectangle, maps: &[T], samples: usize, out: &mut Vec<T>) {
    let n = rect.pixels() * samples;
    overwritten_buffer(out, g.out_channels * n);
    for_each_pixel_run(g, rect, samples, |oc, run, at| {
        out[oc * n + run..][..samples].copy_from_slice(&maps[at..][..samples]);
    });
}

/// The inverse of [`gather_maps`]: write a rectangle's `[O, pixels * S]` into `maps`, laid out
/// `[O, Ho, Wo, S]`.
fn scatter_maps<T: Element>(g: &ConvGeometry, rect: &Rectangle, block: &[T], samples: usize, maps: &mut [T]) {
    let n = rect.pixels() * samples;
    for_each_pixel_run(g, rect, samples, |oc, run, at| {
        maps[at..][..samples].copy_from_slice(&block[oc * n + run..][..samples]);
    });
}

/// For every output channel and pixel of a rectangle: `f(channel, offset of its run in the
/// rectangle's row, offset of its run in the maps [O, Ho, Wo, S])`.
fn for_each_pixel_run(g: &ConvGeometry, rect: &Rectangle, samples: usize, mut f: impl FnMut(usize, usize, usize)) {
    let width = rect.columns.outputs.len();
    for oc in 0..g.out_channels {
        for (i, oh) in rect.rows.outputs.clone().enumerate() {
            for (j, ow) in rect.columns.outputs.clone().enumerate() {
                f(
                    oc,
                    (i * width + j) * samples,
                    ((oc * g.out_h + oh) * g.out_w + ow) * samples,
                );
            }
        }
    }
}

/// The GEMMs of one rectangle: one per kernel row, or a single one over all its kernel rows
/// when it uses every kernel column (then the rows' taps are contiguous both in the permuted
/// weights and in the columns). Each is `(first row of the columns, GEMM depth K', offset of
/// its block in the permuted weights)`; the block is `O x K'`, rows `patch_len` apart.
fn kernel_row_blocks(g: &ConvGeometry, rect: &Rectangle) -> Vec<(usize, usize, usize)> {
    let per_row = rect.taps_per_kernel_row(g.in_channels);
    let offset = |ki: usize| (ki * g.kernel_w + rect.columns.taps.start) * g.in_channels;
    if rect.columns.taps.len() == g.kernel_w {
        let rows = rect.rows.taps.len();
        vec![(0, rows * per_row, offset(rect.rows.taps.start))]
    } else {
        (rect.rows.taps.clone())
            .enumerate()
            .map(|(a, ki)| (a * per_row, per_row, offset(ki)))
            .collect()
    }
}

/// The permuted weights `[O, kh, kw, C]` as an `O x patch_len` matrix.
fn weight_layout(g: &ConvGeometry) -> MatrixLayout {
    MatrixLayout::row_major(g.patch_len())
}

/// [`conv2d_forward`] by rectangles of GEMMs: per chunk of samples and per rectangle: `out (O x pixels*S) = sum over kernel rows ki of
/// W[:, ki, taps, :] (O x K') @ columns[ki] (K' x pixels*S)`, then `out` is written to `y`.
pub(super) fn forward_by_rectangles<T: Element>(g: &ConvGeometry, x: &[T], w: &[T], epilogue: Epilogue<T>) -> Vec<T> {
    let (pix, o) = (g.out_h * g.out_w, g.out_channels);
    let image_len = g.in_channels * g.in_h * g.in_w;
    let mut y = vec![T::ZERO; g.batch * o * pix];
    if y.is_empty() || image_len == 0 {
        finish_maps(active_path(), &mut y, o, pix, epilogue);
        return y;
    }
    let wt = taps_first(g, w);
    let (rows, columns) = classes_of(g);
    let spc = samples_per_chunk(g, true);
    // Pixels that no tap reaches see only padding: their outputs are zeros.
    let covered: usize =
        rows.iter().map(|r| r.outputs.len()).sum::<usize>() * columns.iter().map(|c| c.outputs.len()).sum::<usize>();
    y.par_chunks_mut(spc * o * pix).enumerate().for_each_init(
        || (Vec::new(), Vec::new(), Vec::new(), Vec::new()),
        |(xt, cols, out, yt): &mut (Vec<T>, Vec<T>, Vec<T>, Vec<T>), (chunk, y)| {
            let samples = y.len() / (o * pix);
            let n0 = chunk * spc;
            samples_last(&x[n0 * image_len..(n0 + samples) * image_len], samples, image_len, xt);
            // The chunk's maps, `[O, Ho, Wo, S]`, then transposed into `y`.
            if covered == pix {
                overwritten_buffer(yt, o * pix * samples);
            } else {
                yt.clear();
                yt.resize(o * pix * samples, T::ZERO);
            }
            for rect in rectangles(&rows, &columns) {
                let n = rect.pixels() * samples;
                gather_columns(g, &rect, xt, samples, cols);
                overwritten_buffer(out, o * n);
                for (i, (row, k, offset)) in kernel_row_blocks(g, &rect).into_iter().enumerate() {
                    let (a, b) = (&wt[offset..], &cols[row * n..(row + k) * n]);
                    gemm(
                        o,
                        n,
                        k,
                        a,
                        weight_layout(g),
                        b,
                        MatrixLayout::row_major(n),
                        out,
                        i > 0,
                        false,
                    );
                }
                scatter_maps(g, &rect, out, samples, yt);
            }
            samples_first(yt, samples, o * pix, y);
        },
    );
    finish_maps(active_path(), &mut y, o, pix, epilogue);
    y
}

/// [`conv2d_input_adjoint`] by rectangles of GEMMs: per chunk of samples and per rectangle: `columns[ki] (K' x pixels*S) = W[:, ki, taps, :]^T
/// (K' x O) @ maps (O x pixels*S)` for each kernel row, each column added onto its input
/// position.
pub(super) fn input_adjoint_by_rectangles<T: Element>(
    g: &ConvGeometry,
    y: &[T],
    w: &[T],
    epilogue: Epilogue<T>,
) -> Vec<T> {
    let (pix, o) = (g.out_h * g.out_w, g.out_channels);
    let image_len = g.in_channels * g.in_h * g.in_w;
    let mut x = vec![T::ZERO; g.batch * image_len];
    // No output pixel or no output channel: nothing reaches the input but the bias.
    if x.is_empty() || pix == 0 || o == 0 {
        finish_maps(active_path(), &mut x, g.in_channels, g.in_h * g.in_w, epilogue);
        return x;
    }
    let wt = taps_first(g, w);
    let (rows, columns) = classes_of(g);
    let spc = samples_per_chunk(g, true);
    x.par_chunks_mut(spc * image_len).enumerate().for_each_init(
        || (Vec::new(), Vec::new(), Vec::new(), Vec::new()),
        |(xt, yt, maps, cols): &mut (Vec<T>, Vec<T>, Vec<T>, Vec<T>), (chunk, x)| {
            let samples = x.len() / image_len;
            let n0 = chunk * spc;
            xt.clear();
            xt.resize(image_len * samples, T::ZERO);
            samples_last(&y[n0 * o * pix..(n0 + samples) * o * pix], samples, o * pix, yt);
            for rect in rectangles(&rows, &columns) {
                let n = rect.pixels() * samples;
                let taps = rect.rows.taps.len() * rect.taps_per_kernel_row(g.in_channels);
                gather_maps(g, &rect, yt, samples, maps);
                overwritten_buffer(cols, taps * n);
                // The weight block read transposed: `K' x O`.
                let transposed = MatrixLayout::transposed(g.patch_len());
                for (row, k, offset) in kernel_row_blocks(g, &rect) {
                    let c = &mut cols[row * n..(row + k) * n];
                    gemm(
                        k,
                        n,
                        o,
                        &wt[offset..],
                        transposed,
                        maps,
                        MatrixLayout::row_major(n),
                        c,
                        false,
                        false,
                    );
                }
                scatter_add_columns(g, &rect, cols, samples, xt);
            }
            samples_first(xt, samples, image_len, x);
        },
    );
    finish_maps(active_path(), &mut x, g.in_channels, g.in_h * g.in_w, epilogue);
    x
}

/// [`conv2d_weight_grad`] by rectangles of GEMMs.
///
/// Per chunk of samples, in order: the columns and maps of every rectangle are gathered (in
/// parallel over rectangles), then for each block of [`WEIGHT_GRAD_ROWS`] output channels (in
/// parallel over blocks) and each rectangle and kernel row, `gW[block, ki, taps, :] (+)= maps
/// (rows x pixels*S) @ columns[ki]^T (pixels*S x K')`. Every element of `gW` is summed by one
/// thread in an order fixed by the geometry, so a run is reproducible bit for bit.
pub(super) fn weight_grad_by_rectangles<T: Element>(g: &ConvGeometry, x: &[T], gy: &[T]) -> Vec<T> {
    let (pix, o, patch) = (g.out_h * g.out_w, g.out_channels, g.patch_len());
    let image_len = g.in_channels * g.in_h * g.in_w;
    let mut gwt = vec![T::ZERO; o * patch];
    if g.batch == 0 || pix == 0 || gwt.is_empty() {
        return gwt;
    }
    let (rows, columns) = classes_of(g);
    let rects: Vec<Rectangle> = rectangles(&rows, &columns).collect();
    let spc = samples_per_chunk(g, false);
    let (mut xt, mut yt) = (Vec::new(), Vec::new());
    // Each rectangle's columns and maps, reused from chunk to chunk.
    let mut gathered: Vec<(Vec<T>, Vec<T>)> = rects.iter().map(|_| (Vec::new(), Vec::new())).collect();
    for n0 in (0..g.batch).step_by(spc) {
        let samples = spc.min(g.batch - n0);
        samples_last(
            &x[n0 * image_len..(n0 + samples) * image_len],
            samples,
            image_len,
            &mut xt,
        );
        samples_last(&gy[n0 * o * pix..(n0 + samples) * o * pix], samples, o * pix, &mut yt);
        gathered.par_iter_mut().zip(&rects).for_each(|((cols, maps), rect)| {
            gather_columns(g, rect, &xt, samples, cols);
            gather_maps(g, rect, &yt, samples, maps);
        });
        gwt.par_chunks_mut(WEIGHT_GRAD_ROWS * patch)
            .enumerate()
            .for_each(|(block, gw)| {
                let (first, m) = (block * WEIGHT_GRAD_ROWS, gw.len() / patch);
                for (rect, (cols, maps)) in rects.iter().zip(&gathered) {
                    let n = rect.pixels() * samples;
                    for (row, k, offset) in kernel_row_blocks(g, rect) {
                        let (a, b) = (&maps[first * n..], &cols[row * n..(row + k) * n]);
                        let layouts = (MatrixLayout::row_major(n), MatrixLayout::transposed(n));
                        gemm_into(
                            m,
                            k,
                            n,
                            a,
                            layouts.0,
                            b,
                            layouts.1,
                            &mut gw[offset..],
                            patch,
                            true,
                            false,
                        );
                    }
                }
            });
    }
    channels_first(g, &gwt)
}
