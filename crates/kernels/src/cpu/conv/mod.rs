//! 2-D convolution on a register tile, or as GEMMs over the taps that fall inside the image.
//!
//! The files of this folder:
//! - `mod.rs` (here): the three entry points and which path each takes;
//! - [`reference`]: the plain versions (im2col / col2im and loops), the CPU twins of
//!   `kernels/conv.cu` and what the tests check the fast paths against;
//! - `rectangles.rs`: the paths by rectangles of GEMMs;
//! - `tile.rs`: the register tile (the inner loop, with its SIMD versions);
//! - `tile_frame.rs`: the forward pass and the input adjoint on the tile;
//! - `tile_layout.rs`: a chunk of samples into the tile's layout and back, and the weights
//!   packed for the tile;
//! - `tile_weight_grad.rs`: the weight gradient on the tile;
//! - `single_channel.rs`: the input adjoint onto an image of one channel (a critic's first
//!   layer's input gradient, a generator's last layer) and such a layer's weight gradient, by
//!   phases of the stride and vectors along the rows of the maps;
//! - `scratch.rs`: work arrays reused from call to call;
//! - `tests.rs`: every path against the reference, over odd geometries;
//! - [`bf16`]: the convolutions of bf16 and f16 operands (the half rule without widening): the
//!   operands in pairs of the reduction, summed in f32 on [`tile_amx`] (Intel AMX) or on
//!   [`tile_pairs`] (the register tile on pairs: `vdpbf16ps`, or widened in registers),
//!   `bf16_pack.rs`, their weights packed in pairs, and `bf16_weight_grad.rs`, the weight
//!   gradient on AMX.
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
//! ## Three ways to compute a convolution
//! - **On the register tile** ([`tile`]), whenever the channels fill its rows and
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
//!   transposes ([`crate::cpu::layout::transpose_block`]); the packed weights and laid-out operands
//!   live in reused work arrays ([`scratch`]).
//!   - the weight gradient of a layer with few input channels (a single-channel image) and
//!     at least [`TILE_SAMPLES`] output channels, on the tile turned around: rows are kernel
//!     columns, columns output channels (`weight_grad_by_kernel_columns`).
//! - **By vectors along the rows of the maps** (`single_channel`): in f32, the adjoint onto
//!   an image of one channel, where the tile would have one busy row in six and a GEMM would
//!   be a matrix-vector product, and the weight gradient of such a layer (its maps read in
//!   place, not laid out by blocks of channels).
//! - **By rectangles of GEMMs** (below): the forward pass or adjoint of other layers with
//!   fewer channels than that, where the tile would leave most of its rows idle, and the
//!   weight gradient of layers too narrow for either tile.
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

pub mod bf16;
mod bf16_pack;
mod bf16_weight_grad;
mod rectangles;
pub mod reference;
pub mod scratch;
mod single_channel;
#[cfg(test)]
mod tests;
pub mod tile;
pub mod tile_amx;
mod tile_frame;
mod tile_layout;
pub mod tile_pairs;
mod tile_weight_grad;

use super::elementwise::unary_in_place;
use super::simd::{active_path, compiled_for, SimdPath};
use super::{as_f32, f32_vec_as};
use crate::op::Epilogue;
use crate::{ConvGeometry, Element};
use rayon::prelude::*;
use rectangles::{forward_by_rectangles, input_adjoint_by_rectangles, weight_grad_by_rectangles};
use single_channel::{input_adjoint_single_channel, weight_grad_single_channel};
use std::ops::Range;
use tile::{TILE_ROWS, TILE_SAMPLES};
use tile_frame::{forward_by_tiles, input_adjoint_by_tiles};
use tile_weight_grad::{weight_grad_by_kernel_columns, weight_grad_by_tiles};

/// `y = activation(conv2d(x, w) + bias)`. `x: [N, C, H, W]`, `w: [O, C, kh, kw]`, `bias: [O]`,
/// returns `[N, O, Ho, Wo]`.
///
/// On the register tile (`forward_by_tiles`) when there are at least [`TILE_ROWS`] output
/// channels to fill its rows; by rectangles of GEMMs otherwise.
pub fn conv2d_forward<T: Element>(g: &ConvGeometry, x: &[T], w: &[T], epilogue: Epilogue<T>) -> Vec<T> {
    check_bias(epilogue.bias, g.out_channels, "conv2d");
    if g.out_channels >= TILE_ROWS {
        forward_by_tiles(active_path(), g, x, w, epilogue)
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
/// input channels to fill its rows; onto a single-channel image in f32, by vectors along the
/// rows of the maps (`single_channel`, where each phase of the stride has at most three
/// column taps); by rectangles of GEMMs otherwise.
pub fn conv2d_input_adjoint<T: Element>(g: &ConvGeometry, y: &[T], w: &[T], epilogue: Epilogue<T>) -> Vec<T> {
    check_bias(epilogue.bias, g.in_channels, "conv_transpose2d");
    if let Some((y, w, epilogue)) = single_channel_f32(g, y, w, epilogue) {
        f32_vec_as(input_adjoint_single_channel(active_path(), g, y, w, epilogue))
    } else if g.in_channels >= TILE_ROWS {
        input_adjoint_by_tiles(active_path(), g, y, w, epilogue)
    } else {
        input_adjoint_by_rectangles(g, y, w, epilogue)
    }
}

/// The operands as f32 where the adjoint goes to [`single_channel`]: `T` is f32 and
/// [`single_channel::adjoint_fits`] (an image of one channel).
#[allow(clippy::type_complexity)]
fn single_channel_f32<'a, T: Element>(
    g: &ConvGeometry,
    maps: &'a [T],
    w: &'a [T],
    epilogue: Epilogue<'a, T>,
) -> Option<(&'a [f32], &'a [f32], Epilogue<'a, f32>)> {
    if !single_channel::adjoint_fits(g) {
        return None;
    }
    let bias = match epilogue.bias {
        Some(b) => Some(as_f32(b)?),
        None => None,
    };
    let epilogue = Epilogue {
        bias,
        activation: epilogue.activation,
    };
    Some((as_f32(maps)?, as_f32(w)?, epilogue))
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
/// one pass with its loops compiled for `path`: the epilogue of the paths that do not start
/// their sums from the bias.
fn finish_maps<T: Element>(path: SimdPath, maps: &mut [T], channels: usize, pixels: usize, epilogue: Epilogue<T>) {
    if maps.is_empty() || (epilogue.bias.is_none() && epilogue.activation.is_none()) {
        return;
    }
    // By maps, so that a batch of one still spreads over the threads.
    maps.par_chunks_mut(pixels).enumerate().for_each(|(i, map)| {
        if let Some(bias) = epilogue.bias {
            let b = bias[i % channels];
            compiled_for(path, || map.iter_mut().for_each(|v| *v += b));
        }
        if let Some(op) = epilogue.activation {
            unary_in_place(path, op, map);
        }
    });
}

/// `gw = sum_n gy[n] (O x Ho*Wo) @ im2col(x[n])^T`: the gradient of `<conv2d(x, w), gy>` with
/// respect to `w`. `x: [N, C, H, W]`, `gy: [N, O, Ho, Wo]`, returns `[O, C, kh, kw]`.
///
/// For a single-channel image in f32 (a kernel up to 5 wide), by vectors along the rows of
/// the maps (`single_channel`); on the register tile (`weight_grad_by_tiles`) when there are at
/// least [`TILE_SAMPLES`] input channels and [`TILE_ROWS`] output channels to fill it; with
/// fewer input channels and at least [`TILE_SAMPLES`] output channels (a single-channel image
/// in f64, say), on the tile turned around (`weight_grad_by_kernel_columns`); by rectangles of
/// GEMMs otherwise.
pub fn conv2d_weight_grad<T: Element>(g: &ConvGeometry, x: &[T], gy: &[T]) -> Vec<T> {
    if let (true, Some(x), Some(gy)) = (single_channel::weight_grad_fits(g), as_f32(x), as_f32(gy)) {
        f32_vec_as(weight_grad_single_channel(active_path(), g, x, gy))
    } else if g.in_channels >= TILE_SAMPLES && g.out_channels >= TILE_ROWS {
        weight_grad_by_tiles(active_path(), g, x, gy)
    } else if g.out_channels >= TILE_SAMPLES {
        weight_grad_by_kernel_columns(active_path(), g, x, gy)
    } else {
        weight_grad_by_rectangles(g, x, gy)
    }
}

/// The taps `k` of one axis for which output position `o` reads inside the input: `padding
/// <= o * stride + k * dilation < padding + input`.
fn taps_inside(o: usize, input: usize, kernel: usize, stride: usize, dilation: usize, padding: usize) -> Range<usize> {
    let start = o * stride;
    let lo = padding.saturating_sub(start).div_ceil(dilation).min(kernel);
    let hi = (padding + input).saturating_sub(start).div_ceil(dilation).min(kernel);
    lo..hi.max(lo)
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
