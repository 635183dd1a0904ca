//! 2-D convolution on a register tile, or as GEMMs over the taps that fall inside the image.
//!
//! Three kernels cover conv2d, conv_transpose2d and all their derivatives:
//! - [`conv2d_forward`]: `y = activation(conv(x, w) + bias)`;
//! - [`conv2d_input_adjoint`]: the adjoint of `x -> conv(x, w)` (plus a bias, through an
//!   activation: the [`Epilogue`]), which is both conv2d's input gradient and
//!   conv_transpose2d's forward pass;
//! - [`conv2d_weight_grad`]: the gradient of `<conv(x, w), gy>` with respect to `w`.
//!
//! Shapes follow PyTorch: images `[N, C, H, W]`, conv weights `[O, C, kh, kw]`, maps
//! `[N, O, Ho, Wo]`. All three are described by one [`ConvGeometry`] in conv2d's terms.
//!
//! ## Two ways to compute a convolution
//! - **On the register tile** ([`super::tile`]), whenever the channels fill its rows and
//!   columns:
//!   - the forward pass and the input adjoint (at least [`TILE_ROWS`] output channels for the
//!     forward pass, input channels for the adjoint): per chunk of [`TILE_SAMPLES`] samples,
//!     the operands are laid out `[pixel, channel, sample]` and the weights packed by tiles of
//!     channels, so that every (output pixel, kernel row) of the forward pass, and every
//!     (input pixel, kernel tap) of the adjoint, is one contiguous run of both operands. The
//!     adjoint gathers onto each input pixel what it receives instead of scattering. Passes go
//!     kernel row by kernel row, so that the row of input a pass reads stays in L2 while every
//!     tile of weights goes over it.
//!   - the weight gradient (at least [`TILE_SAMPLES`] input and [`TILE_ROWS`] output channels):
//!     the tile's rows are output channels and its columns input channels, and every (kernel
//!     tap, output pixel) is a run of samples in both operands (`weight_grad_by_tiles`).
//!
//!   No columns are copied and no padding tap is multiplied. The layout changes are blocked
//!   transposes ([`super::layout::transpose_block`]); the packed weights and laid-out operands
//!   live in reused work arrays ([`super::scratch`]).
//!   - the weight gradient of a layer with few input channels (a single-channel image) and
//!     at least [`TILE_SAMPLES`] output channels, on the tile turned around: rows are kernel
//!     columns, columns output channels (`weight_grad_by_kernel_columns`).
//! - **By rectangles of GEMMs** (below): the forward pass or adjoint of layers with fewer
//!   channels than that, where the tile would leave most of its rows idle, and the weight
//!   gradient of layers too narrow for either tile.
//!
//! ## Lowering to GEMMs
//! im2col writes a zero for every tap that falls on the padding, and the GEMM then multiplies
//! by it. On the small maps of a GAN that is a large share of the work: a 5x5 kernel with
//! padding 2 on a 7x7 -> 4x4 map has 36% of its taps on the padding. So the output grid is cut
//! into rectangles of pixels that see the same run of kernel taps inside the image (`TapClass`,
//! per axis: the rows near the top and bottom edges, the interior, ...), and each rectangle is
//! one GEMM over its valid taps only, with no zeros and no bounds tests in the copies.
//!
//! The columns of a rectangle are `(pixel, sample)` pairs with the sample fastest, read from
//! the input laid out `[C, H, W, S]` for a chunk of `S` samples (`samples_last`): every tap
//! of every pixel is then one contiguous run of `S` values, however small the map or large
//! the stride. The rows are `(kernel row, kernel column, channel)`, matching the weights
//! permuted to `[O, kh, kw, C]` (`taps_first`), so that the taps of one kernel row are one
//! contiguous block of a weight row.
//!
//! - The forward pass and the input adjoint run their chunks of samples in parallel, each GEMM
//!   on one thread; every output element comes from one chunk.
//! - The weight gradient walks bigger chunks in order, and splits the gradient among threads by
//!   blocks of output channels: each block is summed by one thread, chunk after chunk, so there
//!   are no per-thread partial sums.
//!
//! On both paths, chunk sizes and blocks depend only on the geometry, never on the thread
//! count or on scheduling, and every output element is summed by one thread in a fixed order:
//! results are reproducible bit for bit.

use super::elementwise::{unary_in_place, UnaryOp};
use super::layout::{transpose_block, TRANSPOSE_BLOCK};
use super::matmul::{count_flops, gemm, gemm_into, MatrixLayout};
use super::scratch::Scratch;
use super::tile::{accumulate_rows_unchecked, check_runs, Run, TILE_LEN, TILE_ROWS, TILE_SAMPLES};
use super::{as_slots, assume_init_vec, uninit_vec};
use crate::{ConvGeometry, Element};
use rayon::prelude::*;
use std::mem::MaybeUninit;
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
struct TapClass {
    outputs: Range<usize>,
    taps: Range<usize>,
}

/// The `TapClass`es of one axis, in order. Outputs whose every tap falls on the padding are
/// in no class: they see only zeros.
fn tap_classes(
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

/// What the forward pass and the adjoint do to their sums before they are written: add a bias
/// per channel, then apply an activation. On the tile the sums start at the bias, and the
/// activation is applied to a task's sums while they are still in cache, so neither costs a
/// pass over the output of its own.
#[derive(Clone, Copy, Debug)]
pub struct Epilogue<'a, T> {
    pub bias: Option<&'a [T]>,
    pub activation: Option<UnaryOp>,
}

impl<T> Epilogue<'_, T> {
    /// Neither bias nor activation: the bare sums.
    pub const NONE: Self = Epilogue {
        bias: None,
        activation: None,
    };
}

/// `y = activation(conv2d(x, w) + bias)`. `x: [N, C, H, W]`, `w: [O, C, kh, kw]`, `bias: [O]`,
/// returns `[N, O, Ho, Wo]`.
///
/// On the register tile (`forward_by_tiles`) when there are at least [`TILE_ROWS`] output
/// channels to fill its rows; by rectangles of GEMMs otherwise.
pub fn conv2d_forward<T: Element>(g: &ConvGeometry, x: &[T], w: &[T], epilogue: Epilogue<T>) -> Vec<T> {
    check_bias(epilogue.bias, g.out_channels, "conv2d");
    if g.out_channels >= TILE_ROWS {
        forward_by_tiles(g, x, w, epilogue)
    } else {
        forward_by_rectangles(g, x, w, epilogue)
    }
}

/// `x = activation(conv2d^T(y, w) + bias)`: the adjoint of conv2d in its input. `y: [N, O, Ho,
/// Wo]`, `w: [O, C, kh, kw]`, `bias: [C]`, returns `[N, C, H, W]`. This is conv2d's input
/// gradient (with [`Epilogue::NONE`]) and conv_transpose2d's forward pass (whose weight `[in,
/// out, kh, kw]` is this `w`).
///
/// On the register tile (`input_adjoint_by_tiles`) when there are at least [`TILE_ROWS`]
/// input channels to fill its rows (a single-channel image would leave five of six idle); by
/// rectangles of GEMMs otherwise.
pub fn conv2d_input_adjoint<T: Element>(g: &ConvGeometry, y: &[T], w: &[T], epilogue: Epilogue<T>) -> Vec<T> {
    check_bias(epilogue.bias, g.in_channels, "conv_transpose2d");
    if g.in_channels >= TILE_ROWS {
        input_adjoint_by_tiles(g, y, w, epilogue)
    } else {
        input_adjoint_by_rectangles(g, y, w, epilogue)
    }
}

fn check_bias<T>(bias: Option<&[T]>, channels: usize, op: &str) {
    if let Some(b) = bias {
        assert_eq!(
            b.len(),
            channels,
            "{op}: a bias of {} values for {channels} channels",
            b.len()
        );
    }
}

/// `maps[n, c, p] = activation(maps[n, c, p] + bias[c])` for maps `[N, channels, pixels]`, in
/// one pass: the epilogue of the paths that do not start their sums from the bias.
fn finish_maps<T: Element>(maps: &mut [T], channels: usize, pixels: usize, epilogue: Epilogue<T>) {
    if maps.is_empty() || (epilogue.bias.is_none() && epilogue.activation.is_none()) {
        return;
    }
    // By maps, so that a batch of one still spreads over the threads.
    maps.par_chunks_mut(pixels).enumerate().for_each(|(i, map)| {
        if let Some(bias) = epilogue.bias {
            let b = bias[i % channels];
            map.iter_mut().for_each(|v| *v += b);
        }
        if let Some(op) = epilogue.activation {
            unary_in_place(op, map);
        }
    });
}

/// Start the tile kernels' sums `[pixels, padded, TILE_SAMPLES]` at each channel's bias (zero
/// without one, and for the channels past `bias.len()`).
fn start_sums<T: Element>(sums: &mut [T], padded: usize, bias: Option<&[T]>) {
    match bias {
        None => sums.fill(T::ZERO),
        Some(bias) => {
            for pixel in sums.chunks_exact_mut(padded * TILE_SAMPLES) {
                for (c, lanes) in pixel.chunks_exact_mut(TILE_SAMPLES).enumerate() {
                    lanes.fill(bias.get(c).copied().unwrap_or(T::ZERO));
                }
            }
        }
    }
}

/// [`conv2d_forward`] by rectangles of GEMMs: per chunk of samples and per rectangle: `out (O x pixels*S) = sum over kernel rows ki of
/// W[:, ki, taps, :] (O x K') @ columns[ki] (K' x pixels*S)`, then `out` is written to `y`.
fn forward_by_rectangles<T: Element>(g: &ConvGeometry, x: &[T], w: &[T], epilogue: Epilogue<T>) -> Vec<T> {
    let (pix, o) = (g.out_h * g.out_w, g.out_channels);
    let image_len = g.in_channels * g.in_h * g.in_w;
    let mut y = vec![T::ZERO; g.batch * o * pix];
    if y.is_empty() || image_len == 0 {
        finish_maps(&mut y, o, pix, epilogue);
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
    finish_maps(&mut y, o, pix, epilogue);
    y
}

/// [`conv2d_input_adjoint`] by rectangles of GEMMs: per chunk of samples and per rectangle: `columns[ki] (K' x pixels*S) = W[:, ki, taps, :]^T
/// (K' x O) @ maps (O x pixels*S)` for each kernel row, each column added onto its input
/// position.
fn input_adjoint_by_rectangles<T: Element>(g: &ConvGeometry, y: &[T], w: &[T], epilogue: Epilogue<T>) -> Vec<T> {
    let (pix, o) = (g.out_h * g.out_w, g.out_channels);
    let image_len = g.in_channels * g.in_h * g.in_w;
    let mut x = vec![T::ZERO; g.batch * image_len];
    if x.is_empty() || pix == 0 {
        finish_maps(&mut x, g.in_channels, g.in_h * g.in_w, epilogue);
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
    finish_maps(&mut x, g.in_channels, g.in_h * g.in_w, epilogue);
    x
}

/// `gw = sum_n gy[n] (O x Ho*Wo) @ im2col(x[n])^T`: the gradient of `<conv2d(x, w), gy>` with
/// respect to `w`. `x: [N, C, H, W]`, `gy: [N, O, Ho, Wo]`, returns `[O, C, kh, kw]`.
///
/// On the register tile (`weight_grad_by_tiles`) when there are at least [`TILE_SAMPLES`]
/// input channels and [`TILE_ROWS`] output channels to fill it; with fewer input channels (a
/// single-channel image) and at least [`TILE_SAMPLES`] output channels, on the tile turned
/// around (`weight_grad_by_kernel_columns`); by rectangles of GEMMs otherwise.
pub fn conv2d_weight_grad<T: Element>(g: &ConvGeometry, x: &[T], gy: &[T]) -> Vec<T> {
    if g.in_channels >= TILE_SAMPLES && g.out_channels >= TILE_ROWS {
        weight_grad_by_tiles(g, x, gy)
    } else if g.out_channels >= TILE_SAMPLES {
        weight_grad_by_kernel_columns(g, x, gy)
    } else {
        weight_grad_by_rectangles(g, x, gy)
    }
}

/// [`conv2d_weight_grad`] by rectangles of GEMMs.
///
/// Per chunk of samples, in order: the columns and maps of every rectangle are gathered (in
/// parallel over rectangles), then for each block of [`WEIGHT_GRAD_ROWS`] output channels (in
/// parallel over blocks) and each rectangle and kernel row, `gW[block, ki, taps, :] (+)= maps
/// (rows x pixels*S) @ columns[ki]^T (pixels*S x K')`. Every element of `gW` is summed by one
/// thread in an order fixed by the geometry, so a run is reproducible bit for bit.
fn weight_grad_by_rectangles<T: Element>(g: &ConvGeometry, x: &[T], gy: &[T]) -> Vec<T> {
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

// ---- direct kernels on the register tile (samples fastest) ----

/// The taps `k` of one axis for which output position `o` reads inside the input: `padding
/// <= o * stride + k * dilation < padding + input`.
fn taps_inside(o: usize, input: usize, kernel: usize, stride: usize, dilation: usize, padding: usize) -> Range<usize> {
    let start = o * stride;
    let lo = padding.saturating_sub(start).div_ceil(dilation).min(kernel);
    let hi = (padding + input).saturating_sub(start).div_ceil(dilation).min(kernel);
    lo..hi.max(lo)
}

/// Samples `[S, C, P]` (`S <= TILE_SAMPLES`) as `out` `[P, C, TILE_SAMPLES]`, the missing
/// samples zero.
fn to_tile_layout<T: Element>(x: &[T], channels: usize, pixels: usize, out: &mut [T]) {
    let samples = x.len() / (channels * pixels).max(1);
    if samples < TILE_SAMPLES {
        out.fill(T::ZERO);
    }
    // SAFETY: the transposes below write values of `x`, nothing uninitialised.
    let out = unsafe { as_slots(out) };
    // By 8x8 blocks of (sample, pixel), pixels outermost and samples innermost: each
    // (pixel, channel) line of the output is written whole at once. (With the channels a
    // power of two, a pixel's lines are a multiple of 4 KiB apart and share cache sets, so
    // lines left half-written would be evicted before their second half comes.)
    for p0 in (0..pixels).step_by(TRANSPOSE_BLOCK) {
        let cols = TRANSPOSE_BLOCK.min(pixels - p0);
        for c in 0..channels {
            for s0 in (0..samples).step_by(TRANSPOSE_BLOCK) {
                transpose_block(
                    &x[(s0 * channels + c) * pixels + p0..],
                    channels * pixels,
                    TRANSPOSE_BLOCK.min(samples - s0),
                    cols,
                    &mut out[(p0 * channels + c) * TILE_SAMPLES + s0..],
                    channels * TILE_SAMPLES,
                );
            }
        }
    }
}

/// The inverse of [`to_tile_layout`] for the first `channels` of `padded` channels: `[P,
/// padded, TILE_SAMPLES]` into `out` `[S, channels, P]`, every element of which it writes.
fn from_tile_layout<T: Element>(t: &[T], channels: usize, padded: usize, pixels: usize, out: &mut [MaybeUninit<T>]) {
    let samples = out.len() / (channels * pixels).max(1);
    // By 8x8 blocks of (pixel, sample), samples innermost: each (pixel, channel) line of the
    // tile layout is read whole at once (see `to_tile_layout`).
    for p0 in (0..pixels).step_by(TRANSPOSE_BLOCK) {
        let rows = TRANSPOSE_BLOCK.min(pixels - p0);
        for c in 0..channels {
            for s0 in (0..samples).step_by(TRANSPOSE_BLOCK) {
                transpose_block(
                    &t[(p0 * padded + c) * TILE_SAMPLES + s0..],
                    padded * TILE_SAMPLES,
                    rows,
                    TRANSPOSE_BLOCK.min(samples - s0),
                    &mut out[(s0 * channels + c) * pixels + p0..],
                    channels * pixels,
                );
            }
        }
    }
}

/// Weights `[O, C, taps]` packed by tiles of [`TILE_ROWS`] rows, `[tiles, taps, reduced,
/// TILE_ROWS]`, zero past the last row. With `rows_are_outputs` the tile rows are the output
/// channels and the reduction runs over the input channels (conv2d's forward pass); without,
/// the other way round (its adjoint).
fn pack_weights<T: Element>(g: &ConvGeometry, w: &[T], rows_are_outputs: bool) -> Scratch<T> {
    let (o, c, taps) = (g.out_channels, g.in_channels, g.kernel_h * g.kernel_w);
    let (rows, reduced) = if rows_are_outputs { (o, c) } else { (c, o) };
    let tiles = rows.div_ceil(TILE_ROWS);
    let mut packed = Scratch::take(tiles * taps * reduced * TILE_ROWS);
    // Tile by tile in parallel. For one reduced channel, the tile's rows are `TILE_ROWS` runs
    // of `taps` weights in `w`, read in order and written tap by tap.
    // SAFETY: the loops below write values of `w` or zeros, nothing uninitialised.
    unsafe { as_slots(&mut packed) }
        .par_chunks_mut((taps * reduced * TILE_ROWS).max(1))
        .enumerate()
        .for_each(|(tile, packed)| {
            let filled = (rows - tile * TILE_ROWS).min(TILE_ROWS);
            for red in 0..reduced {
                let (first, row_stride) = if rows_are_outputs {
                    ((tile * TILE_ROWS * c + red) * taps, c * taps)
                } else {
                    ((red * c + tile * TILE_ROWS) * taps, taps)
                };
                for tap in 0..taps {
                    let dst = &mut packed[(tap * reduced + red) * TILE_ROWS..][..TILE_ROWS];
                    let (rows_in_w, past_the_last) = dst.split_at_mut(filled);
                    for (k, d) in rows_in_w.iter_mut().enumerate() {
                        d.write(w[first + k * row_stride + tap]);
                    }
                    past_the_last.iter_mut().for_each(|d| {
                        d.write(T::ZERO);
                    });
                }
            }
        });
    packed
}

/// The (output pixel, kernel tap) pairs of one image that read inside it: the multiply-adds
/// of one sample, per input and output channel pair, once the padding is skipped.
fn taps_inside_image(g: &ConvGeometry) -> usize {
    let rows: usize = (0..g.out_h)
        .map(|oh| taps_inside(oh, g.in_h, g.kernel_h, g.stride.0, g.dilation.0, g.padding.0).len())
        .sum();
    let columns: usize = (0..g.out_w)
        .map(|ow| taps_inside(ow, g.in_w, g.kernel_w, g.stride.1, g.dilation.1, g.padding.1).len())
        .sum();
    rows * columns
}

/// One pass of the tile kernels over a row of pixels: for every tile of `packed` weights and
/// every pixel `i` of the row, the tile summed over `runs[bounds[i]..bounds[i + 1]]` into that
/// pixel's tile of `row` (`[pixels, tiles * TILE_ROWS, TILE_SAMPLES]`), for the first
/// `channels` rows (the last tile's padding rows are skipped). The runs are checked once for
/// the whole row ([`check_runs`]), not once per tile.
fn accumulate_row<T: Element>(
    packed: &[T],
    tiles: usize,
    channels: usize,
    operand: &[T],
    runs: &[Run],
    bounds: &[usize],
    row: &mut [T],
) {
    let tile_weights = packed.len() / tiles;
    // Every tile of the row reads the same runs, with weights of the same length: check them once.
    check_runs(runs, tile_weights, operand.len());
    for (i, pixel) in row.chunks_exact_mut(tiles * TILE_LEN).enumerate() {
        for (tile, out) in pixel.chunks_exact_mut(TILE_LEN).enumerate() {
            let weights = &packed[tile * tile_weights..][..tile_weights];
            let rows = (channels - tile * TILE_ROWS).min(TILE_ROWS);
            // SAFETY: `weights` is `tile_weights` long and these runs are among those checked.
            unsafe { accumulate_rows_unchecked(rows, weights, operand, &runs[bounds[i]..bounds[i + 1]], out) };
        }
    }
}

/// Bands of output rows per chunk of samples in the tile kernels: with the chunks, enough tasks
/// that a thread held up (preempted by another process) delays the call by a small share.
const ROW_BANDS: usize = 4;

/// The frame shared by the forward pass and the input adjoint on the tile: the kernel's source
/// `[N, source_channels, source_pixels]` (the image, or the map), and its output `[N,
/// channels, rows * row_len]` summed over `kernel_rows` kernel rows.
struct TileFrame {
    source_channels: usize,
    source_pixels: usize,
    channels: usize,
    rows: usize,
    row_len: usize,
    kernel_rows: usize,
    /// The longest run a pixel can have in one kernel row: below [`SHORT_RUN`], each pixel's
    /// runs of every kernel row go to the tile in one call.
    longest_run: usize,
}

/// Runs shorter than this many steps are summed kernel row after kernel row in one tile call
/// per pixel: loading and storing the tile's [`TILE_LEN`] sums once per kernel row would cost
/// more than the L2 reuse that going kernel row by kernel row buys (a single-channel image's
/// runs are a few kernel columns long).
const SHORT_RUN: usize = 32;

impl TileFrame {
    /// In three parallel phases:
    /// 1. the source, by chunks of [`TILE_SAMPLES`] samples, laid out `[pixel, channel,
    ///    sample]` ([`to_tile_layout`]);
    /// 2. the sums, started at the bias, by tasks of one chunk and one of [`ROW_BANDS`] bands of
    ///    output rows: kernel row by kernel row (the source rows a pass reads stay in L2 while
    ///    every tile of `packed` weights goes over them), `runs_of(ki, row, runs, bounds)`
    ///    pushes the runs of every pixel of output row `row` for kernel row `ki`, or returns
    ///    false where the kernel row reads only padding, and [`accumulate_row`] sums them (with
    ///    short runs, every kernel row of an output row in one call instead); then the task's
    ///    sums go through the activation, while they are in cache;
    /// 3. the sums back to `out`, by chunks ([`from_tile_layout`]), which writes every element.
    ///
    /// `runs_of`'s contract: it is called with `bounds` holding one entry, the offset into
    /// `runs` where its runs start (not always 0: `runs` may hold other kernel rows' runs
    /// already). When it returns true it has appended, for each of the row's `row_len` pixels
    /// in order, that pixel's runs to `runs` and then `runs.len()` to `bounds`, so that pixel
    /// `i`'s runs are `runs[bounds[i]..bounds[i + 1]]` (the forward pass takes the pixel's index
    /// from `bounds.len() - 1`). When it returns false it has pushed nothing.
    fn run<T: Element>(
        &self,
        source: &[T],
        packed: &[T],
        tiles: usize,
        epilogue: Epilogue<T>,
        out: &mut [MaybeUninit<T>],
        runs_of: impl Fn(usize, usize, &mut Vec<Run>, &mut Vec<usize>) -> bool + Sync,
    ) {
        let source_len = self.source_channels * self.source_pixels;
        let (pixels, padded) = (self.rows * self.row_len, tiles * TILE_ROWS);
        let chunks = (source.len() / source_len).div_ceil(TILE_SAMPLES);
        let chunk_source = source_len * TILE_SAMPLES;
        let chunk_sums = pixels * padded * TILE_SAMPLES;
        let mut laid_out = Scratch::take(chunks * chunk_source);
        laid_out
            .par_chunks_mut(chunk_source)
            .zip(source.par_chunks(chunk_source))
            .for_each(|(laid_out, source)| to_tile_layout(source, self.source_channels, self.source_pixels, laid_out));
        let band_rows = self.rows.div_ceil(ROW_BANDS).max(1);
        let row_sums = self.row_len * padded * TILE_SAMPLES;
        let mut sums = Scratch::take(chunks * chunk_sums);
        let laid_out = &laid_out[..];
        sums.par_chunks_mut(chunk_sums)
            .enumerate()
            .flat_map(|(chunk, sums)| {
                sums.par_chunks_mut(band_rows * row_sums)
                    .enumerate()
                    .map(move |(band, sums)| (chunk, band, sums))
            })
            .for_each_init(
                || (Vec::new(), Vec::new(), Vec::new(), Vec::new()),
                |(runs, bounds, row_runs, row_bounds): &mut (Vec<Run>, Vec<usize>, Vec<Run>, Vec<usize>),
                 (chunk, band, sums)| {
                    start_sums(sums, padded, epilogue.bias);
                    let operand = &laid_out[chunk * chunk_source..][..chunk_source];
                    let first_row = band * band_rows;
                    if self.longest_run < SHORT_RUN {
                        for (i, row) in sums.chunks_exact_mut(row_sums).enumerate() {
                            self.runs_of_every_kernel_row(first_row + i, &runs_of, runs, bounds, row_runs, row_bounds);
                            accumulate_row(packed, tiles, self.channels, operand, runs, bounds, row);
                        }
                    } else {
                        for ki in 0..self.kernel_rows {
                            for (i, row) in sums.chunks_exact_mut(row_sums).enumerate() {
                                runs.clear();
                                if self.push_runs(&runs_of, ki, first_row + i, runs, bounds) {
                                    accumulate_row(packed, tiles, self.channels, operand, runs, bounds, row);
                                }
                            }
                        }
                    }
                    // The activation is elementwise, so the tile layout does not matter to it
                    // (the padding channels it also maps are never read).
                    if let Some(op) = epilogue.activation {
                        unary_in_place(op, sums);
                    }
                },
            );
        out.par_chunks_mut(TILE_SAMPLES * self.channels * pixels)
            .zip(sums.par_chunks(chunk_sums))
            .for_each(|(out, sums)| from_tile_layout(sums, self.channels, padded, pixels, out));
    }

    /// `runs_of(ki, row, runs, bounds)` after it, with `bounds` set to the one entry its
    /// contract asks for (`runs.len()`, where the row's runs will start).
    fn push_runs(
        &self,
        runs_of: &impl Fn(usize, usize, &mut Vec<Run>, &mut Vec<usize>) -> bool,
        ki: usize,
        row: usize,
        runs: &mut Vec<Run>,
        bounds: &mut Vec<usize>,
    ) -> bool {
        bounds.clear();
        bounds.push(runs.len());
        let read = runs_of(ki, row, runs, bounds);
        debug_assert!(!read || bounds.len() == self.row_len + 1, "runs_of's bounds");
        read
    }

    /// The runs of every pixel of output row `row` over all kernel rows, kernel row after
    /// kernel row (the order in which the row-by-row passes would add them), into `runs` and
    /// `bounds` as `runs_of` gives them for one kernel row. `row_runs` and `row_bounds` are
    /// work space: each kernel row's runs, and its `row_len + 1` bounds into them.
    fn runs_of_every_kernel_row(
        &self,
        row: usize,
        runs_of: &impl Fn(usize, usize, &mut Vec<Run>, &mut Vec<usize>) -> bool,
        runs: &mut Vec<Run>,
        bounds: &mut Vec<usize>,
        row_runs: &mut Vec<Run>,
        row_bounds: &mut Vec<usize>,
    ) {
        row_runs.clear();
        row_bounds.clear();
        for ki in 0..self.kernel_rows {
            if self.push_runs(runs_of, ki, row, row_runs, bounds) {
                row_bounds.extend_from_slice(bounds);
            }
        }
        runs.clear();
        bounds.clear();
        bounds.push(0);
        for pixel in 0..self.row_len {
            for kernel_row in row_bounds.chunks_exact(self.row_len + 1) {
                runs.extend_from_slice(&row_runs[kernel_row[pixel]..kernel_row[pixel + 1]]);
            }
            bounds.push(runs.len());
        }
    }
}

/// `y = activation(conv2d(x, w) + bias)` on the register tile: per chunk of [`TILE_SAMPLES`] samples, per
/// output pixel and tile of [`TILE_ROWS`] output channels, one tile summed over a run per
/// kernel row inside the image (a run covers the row's kernel columns inside the image and
/// all input channels, contiguous in both the input `[H, W, C, S]` and the packed weights).
fn forward_by_tiles<T: Element>(g: &ConvGeometry, x: &[T], w: &[T], epilogue: Epilogue<T>) -> Vec<T> {
    let (pix, o, c) = (g.out_h * g.out_w, g.out_channels, g.in_channels);
    let image_len = c * g.in_h * g.in_w;
    if g.batch * o * pix == 0 || image_len == 0 {
        let mut y = vec![T::ZERO; g.batch * o * pix];
        finish_maps(&mut y, o, pix, epilogue);
        return y;
    }
    let mut y = uninit_vec(g.batch * o * pix);
    let packed = pack_weights(g, w, true);
    let tiles = o.div_ceil(TILE_ROWS);
    let (kh, kw) = (g.kernel_h, g.kernel_w);
    let row_taps: Vec<Range<usize>> = (0..g.out_h)
        .map(|oh| taps_inside(oh, g.in_h, kh, g.stride.0, g.dilation.0, g.padding.0))
        .collect();
    let column_taps: Vec<Range<usize>> = (0..g.out_w)
        .map(|ow| taps_inside(ow, g.in_w, kw, g.stride.1, g.dilation.1, g.padding.1))
        .collect();
    count_flops(2 * (taps_inside_image(g) * c * o * g.batch) as u64);
    let runs_of = |ki: usize, oh: usize, runs: &mut Vec<Run>, bounds: &mut Vec<usize>| {
        if !row_taps[oh].contains(&ki) {
            return false;
        }
        let ih = oh * g.stride.0 + ki * g.dilation.0 - g.padding.0;
        for kjs in &column_taps {
            let ow = bounds.len() - 1;
            let mut push = |kj: Range<usize>| {
                let iw = ow * g.stride.1 + kj.start * g.dilation.1 - g.padding.1;
                runs.push(Run {
                    weights: (ki * kw + kj.start) * c * TILE_ROWS,
                    inputs: (ih * g.in_w + iw) * c * TILE_SAMPLES,
                    len: kj.len() * c,
                });
            };
            if g.dilation.1 > 1 {
                kjs.clone().for_each(|kj| push(kj..kj + 1));
            } else if !kjs.is_empty() {
                // (A pixel whose every kernel column falls on the padding has no run: its empty
                // range of taps does not start at a column inside the image.)
                push(kjs.clone());
            }
            bounds.push(runs.len());
        }
        true
    };
    let frame = TileFrame {
        source_channels: c,
        source_pixels: g.in_h * g.in_w,
        channels: o,
        rows: g.out_h,
        row_len: g.out_w,
        kernel_rows: kh,
        // With dilation each kernel column is a run of its own.
        longest_run: if g.dilation.1 > 1 { c } else { kw * c },
    };
    frame.run(x, &packed, tiles, epilogue, &mut y, runs_of);
    // SAFETY: every chunk of `y` went through `from_tile_layout`, which writes all of it.
    unsafe { assume_init_vec(y) }
}

/// `x = activation(conv2d^T(y, w) + bias)` on the register tile: per chunk of samples, per input pixel and tile
/// of input channels, one tile summed over a run per kernel tap that reaches an output
/// pixel (a run covers all output channels, contiguous in the maps `[Ho, Wo, O, S]` and in
/// the packed weights). Each input pixel gathers what it receives, so nothing is scattered.
fn input_adjoint_by_tiles<T: Element>(g: &ConvGeometry, gy: &[T], w: &[T], epilogue: Epilogue<T>) -> Vec<T> {
    let (pix, o, c) = (g.out_h * g.out_w, g.out_channels, g.in_channels);
    let (image_pix, image_len) = (g.in_h * g.in_w, c * g.in_h * g.in_w);
    if g.batch * image_len == 0 || pix == 0 || o == 0 {
        let mut x = vec![T::ZERO; g.batch * image_len];
        finish_maps(&mut x, c, image_pix, epilogue);
        return x;
    }
    let mut x = uninit_vec(g.batch * image_len);
    let packed = pack_weights(g, w, false);
    let tiles = c.div_ceil(TILE_ROWS);
    let (kh, kw) = (g.kernel_h, g.kernel_w);
    // Along one axis: the (tap, output position) pairs that read input position i.
    let sources = |i: usize, kernel: usize, stride: usize, dilation: usize, padding: usize, out: usize| {
        (0..kernel).filter_map(move |k| {
            let t = (i + padding).checked_sub(k * dilation)?;
            (t % stride == 0 && t / stride < out).then_some((k, t / stride))
        })
    };
    count_flops(2 * (taps_inside_image(g) * c * o * g.batch) as u64);
    let runs_of = |ki: usize, ih: usize, runs: &mut Vec<Run>, bounds: &mut Vec<usize>| {
        let Some(t) = (ih + g.padding.0).checked_sub(ki * g.dilation.0) else {
            return false;
        };
        let oh = t / g.stride.0;
        if t % g.stride.0 != 0 || oh >= g.out_h {
            return false;
        }
        for iw in 0..g.in_w {
            for (kj, ow) in sources(iw, kw, g.stride.1, g.dilation.1, g.padding.1, g.out_w) {
                runs.push(Run {
                    weights: (ki * kw + kj) * o * TILE_ROWS,
                    inputs: (oh * g.out_w + ow) * o * TILE_SAMPLES,
                    len: o,
                });
            }
            bounds.push(runs.len());
        }
        true
    };
    let frame = TileFrame {
        source_channels: o,
        source_pixels: pix,
        channels: c,
        rows: g.in_h,
        row_len: g.in_w,
        kernel_rows: kh,
        longest_run: o,
    };
    frame.run(gy, &packed, tiles, epilogue, &mut x, runs_of);
    // SAFETY: every chunk of `x` went through `from_tile_layout`, which writes all of it.
    unsafe { assume_init_vec(x) }
}

/// Steps of the weight gradient's reduction that one group of runs spans: a block of input
/// channels over a group (`STEPS_PER_GROUP * TILE_SAMPLES` values, 16 KiB in f32) stays in L1
/// while every tile of output channels goes over it.
const STEPS_PER_GROUP: usize = 256;
/// Tiles of output channels per task of the weight gradient: the maps of a group for a
/// task's tiles (`STEPS_PER_GROUP * TILE_ROWS * TASK_TILES` values, 96 KiB in f32) stay in L2
/// while every block of input channels goes over them.
const TASK_TILES: usize = 16;

/// `[N, C, P]` as `[ceil(C / block), P, N, block]`: channels by blocks of `block`, the block
/// fastest, then the sample; channels past `C` are zero.
fn to_channel_blocks<T: Element>(x: &[T], batch: usize, channels: usize, pixels: usize, block: usize) -> Scratch<T> {
    let blocks = channels.div_ceil(block);
    let mut out = Scratch::take(blocks * pixels * batch * block);
    if out.is_empty() {
        return out;
    }
    // SAFETY: the transposes below write values of `x` or zeros, nothing uninitialised.
    unsafe { as_slots(&mut out) }
        .par_chunks_mut(pixels * batch * block)
        .enumerate()
        .for_each(|(b, out)| {
            let (c0, c1) = (b * block, ((b + 1) * block).min(channels));
            // By 8x8 blocks of (channel, pixel), channels innermost: each (pixel, sample) run
            // of the output is written whole at once (see `to_tile_layout`).
            let width = c1 - c0;
            for p0 in (0..pixels).step_by(TRANSPOSE_BLOCK) {
                let cols = TRANSPOSE_BLOCK.min(pixels - p0);
                for n in 0..batch {
                    for k0 in (0..width).step_by(TRANSPOSE_BLOCK) {
                        transpose_block(
                            &x[(n * channels + c0 + k0) * pixels + p0..],
                            pixels,
                            TRANSPOSE_BLOCK.min(width - k0),
                            cols,
                            &mut out[(p0 * batch + n) * block + k0..],
                            batch * block,
                        );
                    }
                }
            }
            // The lanes past the last channel.
            for lanes in out.chunks_exact_mut(block) {
                lanes[c1 - c0..].iter_mut().for_each(|d| {
                    d.write(T::ZERO);
                });
            }
        });
    out
}

/// `gw = conv2d_weight_grad(x, gy)` on the register tile: the tile's rows are
/// [`TILE_ROWS`] output channels, its columns [`TILE_SAMPLES`] input channels, and its
/// reduction runs over (output pixel, sample). With `gy` laid out `[O / 6, Ho, Wo, N, 6]` and
/// `x` `[C / 16, H, W, N, 16]` ([`to_channel_blocks`]), one kernel tap and one output pixel
/// is one contiguous run of `N` steps in both, and taps on the padding are in no run.
///
/// A task is one kernel tap and up to [`TASK_TILES`] tiles of output channels, tasks in
/// parallel. It is a GEMM blocked as usual: the runs are cut into groups of about
/// [`STEPS_PER_GROUP`] steps; for each group, each block of input channels (in L1) goes under
/// each of the task's tiles of output channels (their maps in L2). Every output tile is summed
/// by one task in an order fixed by the geometry: reproducible bit for bit.
fn weight_grad_by_tiles<T: Element>(g: &ConvGeometry, x: &[T], gy: &[T]) -> Vec<T> {
    let (n, o, c) = (g.batch, g.out_channels, g.in_channels);
    let (pix, image_pix, taps) = (g.out_h * g.out_w, g.in_h * g.in_w, g.kernel_h * g.kernel_w);
    if n == 0 || pix == 0 || o * c * taps == 0 {
        return vec![T::ZERO; o * c * taps];
    }
    let (otiles, ctiles) = (o.div_ceil(TILE_ROWS), c.div_ceil(TILE_SAMPLES));
    let maps = to_channel_blocks(gy, n, o, pix, TILE_ROWS);
    let inputs = to_channel_blocks(x, n, c, image_pix, TILE_SAMPLES);
    let (maps_per_tile, inputs_per_block) = (pix * n * TILE_ROWS, image_pix * n * TILE_SAMPLES);
    count_flops(2 * (taps_inside_image(g) * c * o * n) as u64);
    // Tile `((tap * otiles + otile) * ctiles + block)` sums gw[otile's rows, block's columns, tap].
    let mut tiles = Scratch::take(taps * otiles * ctiles * TILE_LEN);
    let tasks = tiles
        .par_chunks_mut(otiles * ctiles * TILE_LEN)
        .enumerate()
        .flat_map(|(tap, per_tap)| {
            per_tap
                .par_chunks_mut(TASK_TILES * ctiles * TILE_LEN)
                .enumerate()
                .map(move |(i, out)| (tap, i * TASK_TILES, out))
        });
    tasks.for_each_init(Vec::new, |runs: &mut Vec<Run>, (tap, first_otile, out)| {
        out.fill(T::ZERO);
        let (ki, kj) = (tap / g.kernel_w, tap % g.kernel_w);
        runs.clear();
        for oh in 0..g.out_h {
            let Some(ih) = (oh * g.stride.0 + ki * g.dilation.0).checked_sub(g.padding.0) else {
                continue;
            };
            if ih >= g.in_h {
                continue;
            }
            for ow in 0..g.out_w {
                let Some(iw) = (ow * g.stride.1 + kj * g.dilation.1).checked_sub(g.padding.1) else {
                    continue;
                };
                if iw < g.in_w {
                    runs.push(Run {
                        weights: (oh * g.out_w + ow) * n * TILE_ROWS,
                        inputs: (ih * g.in_w + iw) * n * TILE_SAMPLES,
                        len: n,
                    });
                }
            }
        }
        // Every tile of the task reads these runs, from maps and inputs of the same lengths:
        // check them once.
        check_runs(runs, maps_per_tile, inputs_per_block);
        let per_group = STEPS_PER_GROUP.div_ceil(n).max(1);
        for group in runs.chunks(per_group) {
            for block in 0..ctiles {
                let block_inputs = &inputs[block * inputs_per_block..][..inputs_per_block];
                for (i, per_otile) in out.chunks_exact_mut(ctiles * TILE_LEN).enumerate() {
                    let tile_maps = &maps[(first_otile + i) * maps_per_tile..][..maps_per_tile];
                    let tile = &mut per_otile[block * TILE_LEN..][..TILE_LEN];
                    let rows = (o - (first_otile + i) * TILE_ROWS).min(TILE_ROWS);
                    // SAFETY: the slices have the checked lengths, and `group` is among the
                    // checked runs.
                    unsafe { accumulate_rows_unchecked(rows, tile_maps, block_inputs, group, tile) };
                }
            }
        }
    });
    // Output channel by output channel, in parallel: gw[oc, ic, tap] is element (oc % 6,
    // ic % 16) of tile `((tap * otiles + oc / 6) * ctiles + ic / 16)`.
    let mut gw = uninit_vec(o * c * taps);
    gw.par_chunks_mut(c * taps).enumerate().for_each(|(oc, row)| {
        let (otile, r) = (oc / TILE_ROWS, oc % TILE_ROWS);
        // Tap by tap: the tiles of one tap and output tile are contiguous.
        for tap in 0..taps {
            let per_tap = &tiles[(tap * otiles + otile) * ctiles * TILE_LEN..][..ctiles * TILE_LEN];
            for ic in 0..c {
                let (block, s) = (ic / TILE_SAMPLES, ic % TILE_SAMPLES);
                row[ic * taps + tap].write(per_tap[block * TILE_LEN + r * TILE_SAMPLES + s]);
            }
        }
    });
    // SAFETY: the chunks of `c * taps` cover `gw`, and each writes all of its slots.
    unsafe { assume_init_vec(gw) }
}

/// Output rows per task of `weight_grad_by_kernel_columns`: enough tasks for every thread on
/// a single-channel layer (a 14-row map gives 4 per kernel row).
const ROWS_PER_TASK: usize = 4;

/// `gw = conv2d_weight_grad(x, gy)` for layers with few input channels (a single-channel
/// image), on the register tile turned around: its rows are [`TILE_ROWS`] kernel columns and
/// its columns [`TILE_SAMPLES`] output channels, and it sums over (output pixel, sample). For
/// one input channel and kernel row, the input each output pixel sees through those kernel
/// columns is gathered as `[pixel, sample, kernel column]` (zero on the padding), and the
/// output gradient is laid out `[O / 16, pixel, sample, 16]`: one output row is one run of
/// both. (`weight_grad_by_tiles` would leave 15 of its 16 columns idle on a single channel.)
///
/// A task is (input channel, kernel row, group of kernel columns, band of
/// [`ROWS_PER_TASK`] output rows), in parallel; the bands' partial sums are added in band
/// order, so a run is reproducible bit for bit.
fn weight_grad_by_kernel_columns<T: Element>(g: &ConvGeometry, x: &[T], gy: &[T]) -> Vec<T> {
    let (n, o, c) = (g.batch, g.out_channels, g.in_channels);
    let (pix, kh, kw) = (g.out_h * g.out_w, g.kernel_h, g.kernel_w);
    if n == 0 || pix == 0 || o * c * kh * kw == 0 {
        return vec![T::ZERO; o * c * kh * kw];
    }
    let (oblocks, groups, bands) = (
        o.div_ceil(TILE_SAMPLES),
        kw.div_ceil(TILE_ROWS),
        g.out_h.div_ceil(ROWS_PER_TASK),
    );
    let maps = to_channel_blocks(gy, n, o, pix, TILE_SAMPLES);
    let maps_per_block = pix * n * TILE_SAMPLES;
    count_flops(2 * (taps_inside_image(g) * c * o * n) as u64);
    let tasks = c * kh * groups * bands;
    let mut tiles = Scratch::take(tasks * oblocks * TILE_LEN);
    tiles.par_chunks_mut(oblocks * TILE_LEN).enumerate().for_each_init(
        || (Vec::new(), Vec::new()),
        |(seen, runs): &mut (Vec<T>, Vec<Run>), (task, out)| {
            out.fill(T::ZERO);
            let (band, group) = (task % bands, task / bands % groups);
            let (ki, ci) = (task / bands / groups % kh, task / bands / groups / kh);
            seen.clear();
            runs.clear();
            for oh in band * ROWS_PER_TASK..((band + 1) * ROWS_PER_TASK).min(g.out_h) {
                let Some(ih) = (oh * g.stride.0 + ki * g.dilation.0).checked_sub(g.padding.0) else {
                    continue;
                };
                if ih >= g.in_h {
                    continue;
                }
                runs.push(Run {
                    weights: seen.len(),
                    inputs: oh * g.out_w * n * TILE_SAMPLES,
                    len: g.out_w * n,
                });
                for ow in 0..g.out_w {
                    for sample in 0..n {
                        let row = &x[((sample * c + ci) * g.in_h + ih) * g.in_w..][..g.in_w];
                        for kj in group * TILE_ROWS..(group + 1) * TILE_ROWS {
                            let iw = (ow * g.stride.1 + kj * g.dilation.1).checked_sub(g.padding.1);
                            seen.push(match iw {
                                Some(iw) if kj < kw && iw < g.in_w => row[iw],
                                _ => T::ZERO,
                            });
                        }
                    }
                }
            }
            check_runs(runs, seen.len(), maps_per_block);
            for (block, tile) in out.chunks_exact_mut(TILE_LEN).enumerate() {
                let block_maps = &maps[block * maps_per_block..][..maps_per_block];
                let rows = (kw - group * TILE_ROWS).min(TILE_ROWS);
                // SAFETY: the runs were checked against `seen` and maps of this length.
                unsafe { accumulate_rows_unchecked(rows, seen, block_maps, runs, tile) };
            }
        },
    );
    // gw[oc, ci, ki, kj] is the sum over bands of element (kj % 6, oc % 16) of tile
    // `(task * oblocks + oc / 16)`, task = (ci, ki, kj / 6, band).
    let mut gw = uninit_vec(o * c * kh * kw);
    gw.par_chunks_mut(c * kh * kw).enumerate().for_each(|(oc, per_oc)| {
        let (block, lane) = (oc / TILE_SAMPLES, oc % TILE_SAMPLES);
        for (tap, v) in per_oc.iter_mut().enumerate() {
            let (ci, ki, kj) = (tap / (kh * kw), tap / kw % kh, tap % kw);
            let first = ((ci * kh + ki) * groups + kj / TILE_ROWS) * bands;
            let sum = (first..first + bands).fold(T::ZERO, |sum, task| {
                sum + tiles[(task * oblocks + block) * TILE_LEN + (kj % TILE_ROWS) * TILE_SAMPLES + lane]
            });
            v.write(sum);
        }
    });
    // SAFETY: the chunks of `c * kh * kw` cover `gw`, and each writes all of its slots.
    unsafe { assume_init_vec(gw) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::elementwise::unary;

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
            // Two blocks of input channels for the tiled weight gradient (16 + 1), three tiles
            // of output channels (6 + 6 + 1).
            (17, 13, 6, 5, 3, 3, (1, 2), (1, 1), (1, 1), 3),
            // More than 16 tiles of output channels (the weight gradient's tasks take 16: a
            // second, shorter block).
            (17, 100, 6, 5, 3, 3, (1, 2), (1, 1), (1, 1), 3),
            // Padding wider than a 1x1 kernel's reach, on the tile: the border pixels see
            // only padding (the forward pass must give them no run, only the bias).
            (7, 7, 3, 3, 1, 1, (1, 1), (2, 2), (1, 1), 2),
            // One input channel, a kernel wider than the tile has rows (two groups of kernel
            // columns), two blocks of output channels, two bands of output rows.
            (1, 17, 9, 10, 3, 7, (2, 1), (1, 3), (1, 1), 4),
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
            // A bias for the forward pass (per output channel) and for the adjoint (per input
            // channel), as conv2d and conv_transpose2d add them.
            let bias_o: Vec<f64> = (0..o).map(|v| v as f64 / 4.0 - 1.0).collect();
            let bias_c: Vec<f64> = (0..c).map(|v| 0.5 - v as f64 / 3.0).collect();
            let (mut y_ref, mut gx_ref, mut gw_ref) = (Vec::new(), Vec::new(), vec![0.0; o * k]);
            for n in 0..batch {
                let mut cols = vec![0.0; k * pix];
                im2col(&g, &x[n * image_len..(n + 1) * image_len], &mut cols);
                let gy_n = &gy[n * o * pix..(n + 1) * o * pix];
                for oc in 0..o {
                    for q in 0..pix {
                        y_ref.push(bias_o[oc] + (0..k).map(|r| wt[oc * k + r] * cols[r * pix + q]).sum::<f64>());
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
                gx_ref.extend(image.iter().enumerate().map(|(i, v)| v + bias_c[i / (h * w)]));
            }
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
                    forward_by_tiles(&g, &x, &wt, biased(&bias_o)),
                    &y_ref,
                ),
                (
                    "adjoint by tiles",
                    input_adjoint_by_tiles(&g, &gy, &wt, biased(&bias_c)),
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
                    forward_by_tiles(&g, &x, &wt, activated(&bias_o, lrelu)),
                    &y_lrelu,
                ),
                (
                    "activated adjoint by tiles",
                    input_adjoint_by_tiles(&g, &gy, &wt, activated(&bias_c, tanh)),
                    &gx_tanh,
                ),
                (
                    "weight grad by rectangles",
                    weight_grad_by_rectangles(&g, &x, &gy),
                    &gw_ref,
                ),
                ("weight grad by tiles", weight_grad_by_tiles(&g, &x, &gy), &gw_ref),
                (
                    "weight grad by kernel columns",
                    weight_grad_by_kernel_columns(&g, &x, &gy),
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
            let f32_paths = [
                (
                    "forward by tiles",
                    forward_by_tiles(&g, &x32, &w32, biased(&bias_o32)),
                    &y_ref,
                ),
                (
                    "adjoint by tiles",
                    input_adjoint_by_tiles(&g, &gy32, &w32, biased(&bias_c32)),
                    &gx_ref,
                ),
                (
                    "activated forward by tiles",
                    forward_by_tiles(&g, &x32, &w32, activated(&bias_o32, lrelu)),
                    &y_lrelu,
                ),
                (
                    "activated adjoint by tiles",
                    input_adjoint_by_tiles(&g, &gy32, &w32, activated(&bias_c32, tanh)),
                    &gx_tanh,
                ),
                ("weight grad by tiles", weight_grad_by_tiles(&g, &x32, &gy32), &gw_ref),
                (
                    "weight grad by kernel columns",
                    weight_grad_by_kernel_columns(&g, &x32, &gy32),
                    &gw_ref,
                ),
            ];
            for (path, got, want) in &f32_paths {
                assert!(close32(got, want), "f32 {path} {:?}", (c, o, h, w, s, p, d));
            }
        }
    }
}
