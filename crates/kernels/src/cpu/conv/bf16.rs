//! Convolutions of bf16 operands on the bf16 register tile ([`super::tile_pairs`]): the
//! operands stay bf16 (half the bytes of f32 through every layout change and every pass of the
//! tile), the products are summed in f32, and the output is rounded to bf16 once, after the
//! bias and the activation: the half rule (`Storage`), with the multiply-adds of AVX512_BF16.
//!
//! The frame is the f32 tile's ([`super::tile_frame::TileFrame`]), with its reduced axis
//! counted in pairs: the source laid out `[pixel, pair of channels, sample]` (each element a
//! [`Bf16Pair`]) and the weights packed `[tap, pair of channels, row]` (`bf16_pack.rs`), an
//! odd channel count padded with a zero channel. Layers the tile does not take (fewer than
//! [`TILE_ROWS`] channels in its rows), and for now the weight gradient, widen to f32 and take
//! the f32 kernels.

use super::bf16_pack::{pack_weight_pairs, pack_weight_rows};
use super::bf16_weight_grad::{amx_takes, dot_takes, weight_grad_on_amx, weight_grad_on_dot};
use super::scratch::Scratch;
use super::tile::{check_runs, Run, TILE_LEN, TILE_ROWS, TILE_SAMPLES};
use super::tile_amx::{self, amx_available, runs_fit, AMX_BLOCK};
use super::tile_frame::{start_sums, AdjointRuns, ForwardRuns, Start, TileKernels};
use super::tile_layout::{from_tile_layout, to_tile_layout};
use super::tile_pairs::{
    accumulate_pairs_two_blocks_unchecked, accumulate_pairs_unchecked, bf16_pair, dot_outpaces_fma, has_avx512_bf16,
    Bf16Pair, HalfFormat, PairKernel, PairWeights,
};
use super::{conv2d_forward, conv2d_input_adjoint, conv2d_weight_grad, taps_inside_image};
use crate::cpu::convert::bf16_bits_from_f32;
use crate::cpu::matmul::count_flops;
use crate::cpu::simd::{active_path, SimdPath};
use crate::cpu::{as_slots, assume_init_vec, uninit_vec};
use crate::op::{Epilogue, UnaryOp};
use crate::ConvGeometry;
use half::{bf16, f16};
use std::mem::MaybeUninit;

/// The 16-bit floats the convolutions here take: bf16 on every kernel, f16 on the widening
/// kernel (AMX and `vdpbf16ps` multiply bf16 only). Sealed: the kernels hand out buffers as
/// initialised because `narrow_into` writes every slot, which a type from outside could break.
pub trait HalfFloat: sealed::Sealed + Copy + Send + Sync + 'static {
    const FORMAT: HalfFormat;
    fn bits(self) -> u16;
    /// `v` rounded to this format, to nearest-even.
    fn from_f32_rounded(v: f32) -> Self;
    fn widen_all(v: &[Self]) -> Vec<f32>;
    /// `v` widened (exactly) into `out`, of the same length, on this thread.
    fn widen_into(v: &[Self], out: &mut [f32]);
    fn narrow_all(v: &[f32]) -> Vec<Self>;
    /// `v` rounded into `out` on this thread (for parallel tasks).
    fn narrow_into(v: &[f32], out: &mut [MaybeUninit<Self>]) {
        for (o, &v) in out.iter_mut().zip(v) {
            o.write(Self::from_f32_rounded(v));
        }
    }
}

mod sealed {
    /// Only `half::bf16` and `half::f16` are [`super::HalfFloat`]s.
    pub trait Sealed {}
    impl Sealed for half::bf16 {}
    impl Sealed for half::f16 {}
}

impl HalfFloat for bf16 {
    const FORMAT: HalfFormat = HalfFormat::Bf16;
    fn bits(self) -> u16 {
        self.to_bits()
    }
    fn from_f32_rounded(v: f32) -> bf16 {
        bf16::from_bits(bf16_bits_from_f32(v))
    }
    fn widen_all(v: &[bf16]) -> Vec<f32> {
        crate::cpu::convert::f32_from_bf16(v)
    }
    fn widen_into(v: &[bf16], out: &mut [f32]) {
        crate::cpu::convert::f32_from_bf16_into(v, out)
    }
    fn narrow_all(v: &[f32]) -> Vec<bf16> {
        crate::cpu::convert::bf16_from_f32(v)
    }
    fn narrow_into(v: &[f32], out: &mut [MaybeUninit<bf16>]) {
        crate::cpu::convert::bf16_from_f32_into(v, out)
    }
}

impl HalfFloat for f16 {
    const FORMAT: HalfFormat = HalfFormat::F16;
    fn bits(self) -> u16 {
        self.to_bits()
    }
    fn from_f32_rounded(v: f32) -> f16 {
        f16::from_f32(v)
    }
    fn widen_all(v: &[f16]) -> Vec<f32> {
        use half::slice::HalfFloatSliceExt;
        v.to_f32_vec()
    }
    fn widen_into(v: &[f16], out: &mut [f32]) {
        use half::slice::HalfFloatSliceExt;
        v.convert_to_f32_slice(out)
    }
    fn narrow_all(v: &[f32]) -> Vec<f16> {
        use half::vec::HalfFloatVecExt;
        Vec::from_f32_slice(v)
    }
    /// As [`Self::narrow_all`] (the `half` crate's slice conversion, F16C where it can).
    fn narrow_into(v: &[f32], out: &mut [MaybeUninit<f16>]) {
        use half::slice::HalfFloatSliceExt;
        assert_eq!(v.len(), out.len(), "narrow_into: lengths differ");
        // SAFETY: `MaybeUninit<f16>` has f16's layout, and the conversion writes every element
        // without reading any.
        let out = unsafe { &mut *(out as *mut [MaybeUninit<f16>] as *mut [f16]) };
        out.convert_from_f32_slice(v)
    }
}

/// What sums a bf16 convolution on the tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bf16Kernel {
    /// The AMX tiles ([`super::tile_amx`]), for layers whose reduced channels come in
    /// multiples of 32; the others take the vector kernel of the active SIMD path.
    Amx,
    /// A vector kernel on the six-row tile ([`super::tile_pairs`]).
    Vector(PairKernel),
}

impl Bf16Kernel {
    /// The fastest this process has: AMX on the AVX-512 path where Linux grants it (every
    /// processor with AMX has AVX-512, so forcing a narrower path with `EARTHMOVER_SIMD` also
    /// leaves AMX out, and reproduces that path's bits elsewhere); else `vdpbf16ps` on the
    /// AVX-512 path where it outpaces the f32 FMAs (AMD's Zen 4 and 5, [`dot_outpaces_fma`];
    /// not this project's Xeon, where it retires one every two cycles); else the widening
    /// kernel of the active SIMD path. The dot and widening kernels give the same bits.
    pub fn active() -> Bf16Kernel {
        if active_path() == SimdPath::Avx512 && amx_available() {
            Bf16Kernel::Amx
        } else if active_path() == SimdPath::Avx512 && dot_outpaces_fma() {
            Bf16Kernel::Vector(PairKernel::Dot)
        } else {
            Bf16Kernel::Vector(PairKernel::Widening(active_path()))
        }
    }

    /// Every kernel this process can run.
    pub fn supported() -> Vec<Bf16Kernel> {
        let amx = amx_available().then_some(Bf16Kernel::Amx);
        amx.into_iter()
            .chain(PairKernel::supported().into_iter().map(Bf16Kernel::Vector))
            .collect()
    }

    /// The kernel for the layer `g` (its tile rows the output channels with
    /// `rows_are_outputs`, else the input channels), with its weights packed for it: AMX only
    /// for bf16 layers whose runs fit its tiles, `vdpbf16ps` only for bf16; otherwise the
    /// widening kernel of the active path.
    ///
    /// Panics if this processor cannot run the kernel asked for: AMX and `vdpbf16ps` are
    /// instructions a processor may lack (or, for AMX, Linux may not grant), and running them
    /// regardless would be undefined behaviour, not a wrong result.
    fn engine<T: HalfFloat>(self, g: &ConvGeometry, w: &[T], rows_are_outputs: bool) -> Bf16Engine {
        match self {
            Bf16Kernel::Amx => assert!(
                amx_available(),
                "bf16 convolution: the AMX kernel was asked for on a processor (or under a kernel) without AMX"
            ),
            Bf16Kernel::Vector(PairKernel::Dot) => assert!(
                has_avx512_bf16(),
                "bf16 convolution: the vdpbf16ps kernel was asked for on a processor without AVX512_BF16"
            ),
            Bf16Kernel::Vector(PairKernel::Widening(_)) => {}
        }
        let reduced = if rows_are_outputs {
            g.in_channels
        } else {
            g.out_channels
        };
        let bf16 = T::FORMAT == HalfFormat::Bf16;
        let kernel = match self {
            Bf16Kernel::Amx if bf16 && runs_fit(reduced.div_ceil(2)) => {
                let (weights, steps) = pack_weight_rows(g, w, rows_are_outputs);
                return Bf16Engine::Amx { weights, steps };
            }
            Bf16Kernel::Vector(PairKernel::Dot) if bf16 => PairKernel::Dot,
            Bf16Kernel::Vector(PairKernel::Widening(path)) => PairKernel::Widening(path),
            _ => PairKernel::Widening(active_path()),
        };
        Bf16Engine::Vector {
            kernel,
            packed: PairWeights::new(kernel, T::FORMAT, pack_weight_pairs(g, w, rows_are_outputs)),
        }
    }
}

impl std::fmt::Display for Bf16Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bf16Kernel::Amx => f.write_str("amx"),
            Bf16Kernel::Vector(kernel) => kernel.fmt(f),
        }
    }
}

/// A kernel with its weights packed for it.
enum Bf16Engine {
    /// `weights` `[channels padded to 16, steps]` pairs.
    Amx {
        weights: Scratch<Bf16Pair>,
        steps: usize,
    },
    Vector {
        kernel: PairKernel,
        packed: PairWeights,
    },
}

/// `y = activation(conv2d(x, w) + bias)` of 16-bit operands: [`super::conv2d_forward`]'s sums
/// in f32 from the 16-bit products, rounded once.
pub fn conv2d_forward_half<T: HalfFloat>(
    g: &ConvGeometry,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    activation: Option<UnaryOp>,
) -> Vec<T> {
    conv2d_forward_half_on(Bf16Kernel::active(), g, x, w, bias, activation)
}

/// [`conv2d_forward_half`] with the tile summed by `kernel` (which this processor runs; for
/// f16, AMX and `vdpbf16ps` stand for the widening kernel).
pub fn conv2d_forward_half_on<T: HalfFloat>(
    kernel: Bf16Kernel,
    g: &ConvGeometry,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    activation: Option<UnaryOp>,
) -> Vec<T> {
    let (pix, o, c) = (g.out_h * g.out_w, g.out_channels, g.in_channels);
    let bias = bias.map(T::widen_all);
    let epilogue = Epilogue {
        bias: bias.as_deref(),
        activation,
    };
    if o < TILE_ROWS || g.batch * o * pix == 0 || c * g.in_h * g.in_w == 0 {
        return T::narrow_all(&conv2d_forward(g, &T::widen_all(x), &T::widen_all(w), epilogue));
    }
    let mut y = uninit_vec(g.batch * o * pix);
    let pairs = c.div_ceil(2);
    count_flops(2 * (taps_inside_image(g) * c * o * g.batch) as u64);
    let kernels = HalfTiles::<T>::new(kernel.engine(g, w, true), o);
    let runs = ForwardRuns::new(g, pairs, kernels.weights_step());
    runs.frame()
        .run(x, &kernels, epilogue, &mut y, |ki, oh, r, b| runs.runs_of(ki, oh, r, b));
    // SAFETY: every chunk of `y` went through `write_back`, which writes all of it.
    unsafe { assume_init_vec(y) }
}

/// `x = activation(conv2d^T(y, w) + bias)` of 16-bit operands:
/// [`super::conv2d_input_adjoint`]'s sums in f32 from the 16-bit products, rounded once.
pub fn conv2d_input_adjoint_half<T: HalfFloat>(
    g: &ConvGeometry,
    gy: &[T],
    w: &[T],
    bias: Option<&[T]>,
    activation: Option<UnaryOp>,
) -> Vec<T> {
    conv2d_input_adjoint_half_on(Bf16Kernel::active(), g, gy, w, bias, activation)
}

/// [`conv2d_input_adjoint_half`] with the tile summed by `kernel`, as
/// [`conv2d_forward_half_on`].
pub fn conv2d_input_adjoint_half_on<T: HalfFloat>(
    kernel: Bf16Kernel,
    g: &ConvGeometry,
    gy: &[T],
    w: &[T],
    bias: Option<&[T]>,
    activation: Option<UnaryOp>,
) -> Vec<T> {
    let (pix, o, c) = (g.out_h * g.out_w, g.out_channels, g.in_channels);
    let bias = bias.map(T::widen_all);
    let epilogue = Epilogue {
        bias: bias.as_deref(),
        activation,
    };
    let image_len = c * g.in_h * g.in_w;
    if c < TILE_ROWS || g.batch * image_len == 0 || pix == 0 || o == 0 {
        return T::narrow_all(&conv2d_input_adjoint(g, &T::widen_all(gy), &T::widen_all(w), epilogue));
    }
    let mut x = uninit_vec(g.batch * image_len);
    let pairs = o.div_ceil(2);
    count_flops(2 * (taps_inside_image(g) * c * o * g.batch) as u64);
    let kernels = HalfTiles::<T>::new(kernel.engine(g, w, false), c);
    let runs = AdjointRuns::new(g, pairs, kernels.weights_step());
    runs.frame().run(gy, &kernels, epilogue, &mut x, |ki, ih, r, b| {
        runs.runs_of(ki, ih, r, b)
    });
    // SAFETY: every chunk of `x` went through `write_back`, which writes all of it.
    unsafe { assume_init_vec(x) }
}

/// conv2d's weight gradient of bf16 operands, summed in f32 and rounded once: on the AMX
/// tiles where it takes the geometry (`bf16_weight_grad`), on `vdpbf16ps` where that is the
/// active kernel and takes the geometry, else by the f32 kernels on the widened operands.
pub fn conv2d_weight_grad_bf16(g: &ConvGeometry, x: &[bf16], gy: &[bf16]) -> Vec<bf16> {
    if amx_takes(g) {
        return weight_grad_on_amx(g, x, gy);
    }
    if Bf16Kernel::active() == Bf16Kernel::Vector(PairKernel::Dot) && dot_takes(g) {
        return weight_grad_on_dot(g, x, gy);
    }
    bf16::narrow_all(&conv2d_weight_grad(g, &bf16::widen_all(x), &bf16::widen_all(gy)))
}

/// `u32`s as the f32 of the same bits, for the block transposes, which only move them.
pub(super) fn bits_as_f32(v: &[u32]) -> &[f32] {
    // SAFETY: f32 and u32 have the same size and alignment, and every bit pattern is an f32.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const f32, v.len()) }
}

pub(super) fn bits_as_f32_mut(v: &mut [u32]) -> &mut [f32] {
    // SAFETY: as `bits_as_f32`, and what is written through it is read back as u32 bits.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut f32, v.len()) }
}

/// Samples `[S, C, P]` of bf16 (`S <= TILE_SAMPLES`) as `out` `[P, ceil(C / 2),
/// TILE_SAMPLES]` of pairs of channels, the missing samples and the channel past an odd `C`
/// zero: the channels paired within each sample (`[S, ceil(C / 2), P]`), then the f32 tile's
/// layout change on the pairs' bits. For the band of pixels `first_pixel..` that `out` holds
/// (the frame's [`super::tile_frame::TileKernels::lay_out`]).
fn to_pair_layout<T: HalfFloat>(
    path: SimdPath,
    x: &[T],
    channels: usize,
    pixels: usize,
    first_pixel: usize,
    out: &mut [Bf16Pair],
) {
    let samples = x.len() / (channels * pixels).max(1);
    let pairs = channels.div_ceil(2);
    // The band's pixels: as many as `out` holds, those of the image past the last band.
    let band = (out.len() / (pairs * TILE_SAMPLES).max(1)).min(pixels.saturating_sub(first_pixel));
    let mut paired = Scratch::<Bf16Pair>::take(samples * pairs * band);
    for (sample, paired) in x
        .chunks_exact(channels * pixels)
        .zip(paired.chunks_exact_mut(pairs * band))
    {
        for (j, paired) in paired.chunks_exact_mut(band).enumerate() {
            // Channel `2j` of the band, and `2j + 1` unless it is past the last (odd `C`).
            let channel = |c: usize| &sample[c * pixels + first_pixel..][..band];
            let first = channel(2 * j);
            if 2 * j + 1 < channels {
                for ((p, a), b) in paired.iter_mut().zip(first).zip(channel(2 * j + 1)) {
                    *p = bf16_pair(a.bits(), b.bits());
                }
            } else {
                for (p, a) in paired.iter_mut().zip(first) {
                    *p = bf16_pair(a.bits(), 0);
                }
            }
        }
    }
    to_tile_layout(path, bits_as_f32(&paired), pairs, band, bits_as_f32_mut(out));
}

/// The 16-bit tile for the frame: pairs laid out and packed, sums in f32, output in `T`.
struct HalfTiles<T> {
    engine: Bf16Engine,
    /// The SIMD path of the layout changes.
    path: SimdPath,
    /// The channels of the output (the tile rows that are not padding).
    channels: usize,
    format: std::marker::PhantomData<T>,
}

impl<T: HalfFloat> HalfTiles<T> {
    fn new(engine: Bf16Engine, channels: usize) -> HalfTiles<T> {
        let path = match engine {
            Bf16Engine::Vector {
                kernel: PairKernel::Widening(path),
                ..
            } => path,
            _ => active_path(),
        };
        HalfTiles {
            engine,
            path,
            channels,
            format: std::marker::PhantomData,
        }
    }

    /// [`TileKernels::accumulate_row`] on a vector kernel; with a `second` chunk (its operand
    /// and its row, laid out alike), the same row of both in one pass per pair of tiles, so
    /// that each weight loaded serves both chunks.
    #[allow(clippy::too_many_arguments)]
    fn accumulate_vector_row(
        &self,
        kernel: PairKernel,
        packed: &PairWeights,
        operand: &[Bf16Pair],
        runs: &[Run],
        bounds: &[usize],
        row: &mut [f32],
        mut second: Option<(&[Bf16Pair], &mut [f32])>,
    ) {
        let tiles = self.channels.div_ceil(TILE_ROWS);
        let tile_weights = packed.len() / tiles;
        // Every tile of the row reads the same runs, with weights of the same length: check
        // them once.
        check_runs(runs, tile_weights, operand.len());
        if let Some((second_operand, second_row)) = &second {
            assert!(
                second_operand.len() == operand.len() && second_row.len() == row.len(),
                "bf16 tile: the second chunk is laid out unlike the first"
            );
        }
        let rows = |tile: usize| (self.channels - tile * TILE_ROWS).min(TILE_ROWS);
        // The outputs of a pair of tiles at `at` (`span` long), or of one tile and an empty one.
        fn split(out: &mut [f32], at: usize, span: usize) -> [&mut [f32]; 2] {
            let (out0, out1) = out[at..at + span].split_at_mut(TILE_LEN);
            [out0, out1]
        }
        let pixel_len = tiles * TILE_LEN;
        for i in 0..row.len() / pixel_len {
            let pixel_runs = &runs[bounds[i]..bounds[i + 1]];
            for tile in (0..tiles).step_by(2) {
                let at = i * pixel_len + tile * TILE_LEN;
                let both_tiles = tile + 1 < tiles;
                let span = if both_tiles { 2 * TILE_LEN } else { TILE_LEN };
                let weights = (tile * tile_weights, tile_weights);
                let (first_rows, second_tile) = if both_tiles {
                    (TILE_ROWS, Some(((tile + 1) * tile_weights, rows(tile + 1))))
                } else {
                    (rows(tile), None)
                };
                // SAFETY: every tile's weights are `tile_weights` long and lie inside the
                // packed weights, these runs are among those checked (the second chunk's
                // operand is as long as the first's), and the kernel was chosen among those
                // this processor runs.
                unsafe {
                    match &mut second {
                        None => accumulate_pairs_unchecked(
                            kernel,
                            first_rows,
                            packed,
                            weights,
                            second_tile,
                            operand,
                            pixel_runs,
                            split(row, at, span),
                        ),
                        Some((second_operand, second_row)) => accumulate_pairs_two_blocks_unchecked(
                            kernel,
                            first_rows,
                            packed,
                            weights,
                            second_tile,
                            [operand, *second_operand],
                            pixel_runs,
                            [split(row, at, span), split(second_row, at, span)],
                        ),
                    }
                }
            }
        }
    }

    /// Packed weights per reduced pair step in a run (the runs' `weights_step`).
    fn weights_step(&self) -> usize {
        match self.engine {
            Bf16Engine::Amx { .. } => 1,
            Bf16Engine::Vector { .. } => TILE_ROWS,
        }
    }
}

impl<T: HalfFloat> TileKernels for HalfTiles<T> {
    type Source = T;
    type LaidOut = Bf16Pair;
    type Sum = f32;
    type Out = T;

    fn path(&self) -> SimdPath {
        self.path
    }

    fn padded_channels(&self) -> usize {
        let block = match self.engine {
            Bf16Engine::Amx { .. } => AMX_BLOCK,
            Bf16Engine::Vector { .. } => TILE_ROWS,
        };
        self.channels.div_ceil(block) * block
    }

    fn laid_out_len(&self, channels: usize, pixels: usize) -> usize {
        channels.div_ceil(2) * pixels * TILE_SAMPLES
    }

    fn lay_out(&self, source: &[T], channels: usize, pixels: usize, first_pixel: usize, out: &mut [Bf16Pair]) {
        to_pair_layout(self.path, source, channels, pixels, first_pixel, out)
    }

    /// Every tile of the packed weights over the runs of every pixel of the row: on AMX, four
    /// blocks of 16 channels at a time; on the vector kernels, in pairs of six-row tiles (as
    /// the f32 tile's `accumulate_row`).
    fn accumulate_row(
        &self,
        operand: &[Bf16Pair],
        runs: &[Run],
        bounds: &[usize],
        row: &mut [f32],
        start: Start<'_, f32>,
    ) {
        if let Start::Bias(bias) = start {
            start_sums(self.path, row, self.padded_channels(), bias);
        }
        let (kernel, packed) = match &self.engine {
            Bf16Engine::Amx { weights, steps } => {
                // SAFETY: the AMX engine is only built where `amx_available` (`Bf16Kernel::engine`).
                unsafe { tile_amx::accumulate_row(weights, *steps, operand, runs, bounds, row) };
                return;
            }
            Bf16Engine::Vector { kernel, packed } => (*kernel, packed),
        };
        self.accumulate_vector_row(kernel, packed, operand, runs, bounds, row, None)
    }

    /// On `vdpbf16ps`, whose 32 registers hold two tiles' sums over two chunks: each weight
    /// pair broadcast serves both chunks ([`accumulate_pairs_two_blocks_unchecked`]).
    fn pairs_chunks(&self) -> bool {
        matches!(
            self.engine,
            Bf16Engine::Vector {
                kernel: PairKernel::Dot,
                ..
            }
        )
    }

    fn accumulate_two_rows(
        &self,
        operands: [&[Bf16Pair]; 2],
        runs: &[Run],
        bounds: &[usize],
        rows: [&mut [f32]; 2],
        start: Start<'_, f32>,
    ) {
        let [row0, row1] = rows;
        match &self.engine {
            Bf16Engine::Vector { kernel, packed } => {
                if let Start::Bias(bias) = start {
                    start_sums(self.path, row0, self.padded_channels(), bias);
                    start_sums(self.path, row1, self.padded_channels(), bias);
                }
                let second = Some((operands[1], row1));
                self.accumulate_vector_row(*kernel, packed, operands[0], runs, bounds, row0, second)
            }
            Bf16Engine::Amx { .. } => {
                self.accumulate_row(operands[0], runs, bounds, row0, start);
                self.accumulate_row(operands[1], runs, bounds, row1, start);
            }
        }
    }

    /// The f32 tile's layout change back, then each value rounded to `T`.
    fn write_back(&self, sums: &[f32], channels: usize, pixels: usize, out: &mut [MaybeUninit<T>]) {
        let mut wide = Scratch::<f32>::take(out.len());
        // SAFETY: `from_tile_layout` writes every element of `wide` (initialised f32 already).
        from_tile_layout(self.path, sums, channels, self.padded_channels(), pixels, unsafe {
            as_slots(&mut wide)
        });
        T::narrow_into(&wide, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::conv::reference;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    #[test]
    fn a_kernel_the_processor_lacks_is_refused_not_run() {
        let g = ConvGeometry::conv2d([16, 8, 6, 6], [8, 8, 3, 3], (1, 1), (1, 1), (1, 1)).unwrap();
        let (x, w) = (values::<bf16>(16 * 8 * 36, 1), values::<bf16>(8 * 8 * 9, 2));
        let widened = conv2d_forward_half_on(
            Bf16Kernel::Vector(PairKernel::Widening(active_path())),
            &g,
            &x,
            &w,
            None,
            None,
        );
        for (kernel, runs) in [
            (Bf16Kernel::Amx, amx_available()),
            (Bf16Kernel::Vector(PairKernel::Dot), has_avx512_bf16()),
        ] {
            let result = catch_unwind(AssertUnwindSafe(|| {
                conv2d_forward_half_on(kernel, &g, &x, &w, None, None)
            }));
            match (runs, result) {
                // Where it runs, it sums the same products (in pairs: the bits may differ).
                (true, Ok(y)) => assert_eq!(y.len(), widened.len()),
                (false, Err(message)) => {
                    // A panic without arguments carries a `&str`, one with them a `String`.
                    let message = (message.downcast_ref::<&str>().map(|s| s.to_string()))
                        .or_else(|| message.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    assert!(message.contains("was asked for on a processor"), "{message}")
                }
                (true, Err(_)) => panic!("{kernel} failed on a processor that has it"),
                (false, Ok(_)) => panic!("{kernel} ran on a processor without it"),
            }
        }
    }

    #[test]
    #[should_panic(expected = "tile frame: a source of")]
    fn an_input_shorter_than_its_batch_is_refused() {
        // 17 samples in the geometry, 16 in `x`: the 17th output sample would be handed out
        // unwritten.
        let g = ConvGeometry::conv2d([17, 8, 6, 6], [8, 8, 3, 3], (1, 1), (1, 1), (1, 1)).unwrap();
        let (x, w) = (values::<bf16>(16 * 8 * 36, 1), values::<bf16>(8 * 8 * 9, 2));
        conv2d_forward_half(&g, &x, &w, None, None);
    }

    fn values<T: HalfFloat>(n: usize, seed: u64) -> Vec<T> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                T::from_f32_rounded((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0)
            })
            .collect()
    }

    /// The forward pass and the adjoint on every kernel this processor runs, over geometries
    /// with odd channel counts, strides, padding, dilation and partial chunks of samples,
    /// against the f64 reference on the same 16-bit values: within the rounding of the output
    /// to `T` (`ulp`, relative: 2^-8 for bf16, 2^-11 for f16) and of the f32 sums.
    fn check_every_kernel<T: HalfFloat>(ulp: f64) {
        let geometries = [
            // (batch, in, out, h, w, kernel, stride, padding, dilation)
            (3, 1, 7, 9, 8, 5, 2, 2, 1),
            (17, 13, 6, 7, 7, 5, 2, 2, 1),
            (16, 8, 13, 4, 5, 3, 1, 1, 2),
            (5, 14, 9, 6, 5, 4, 2, 1, 1),
            // Reduced channels in multiples of 32 (the AMX tiles): the forward pass of the
            // first, the adjoint of the second, both of the third.
            (5, 32, 17, 6, 5, 5, 2, 2, 1),
            (4, 20, 64, 5, 5, 3, 1, 1, 1),
            (18, 64, 32, 4, 4, 5, 2, 2, 1),
        ];
        for (n, c, o, h, w, k, s, p, d) in geometries {
            let g = ConvGeometry::conv2d([n, c, h, w], [o, c, k, k], (s, s), (p, p), (d, d)).unwrap();
            let x = values::<T>(n * c * h * w, 1 + n as u64);
            let wt = values::<T>(o * c * k * k, 2 + o as u64);
            let bias = values::<T>(o.max(c), 3);
            let gy = values::<T>(n * o * g.out_h * g.out_w, 4);
            let f64s = |v: &[T]| T::widen_all(v).iter().map(|&x| x as f64).collect::<Vec<f64>>();
            let bias64 = f64s(&bias);
            let epilogue = |channels: usize| Epilogue {
                bias: Some(&bias64[..channels]),
                activation: Some(UnaryOp::Relu),
            };
            let want_y = reference::conv2d_forward(&g, &f64s(&x), &f64s(&wt), epilogue(o));
            let want_x = reference::conv2d_input_adjoint(&g, &f64s(&gy), &f64s(&wt), epilogue(c));
            let check = |got: &[T], want: &[f64], what: &str| {
                assert_eq!(got.len(), want.len(), "{what}");
                for (i, (g, &w)) in f64s(got).iter().zip(want).enumerate() {
                    // The output's rounding to T, and the f32 sums' (far smaller).
                    let tolerance = ulp * w.abs() + 1e-5;
                    assert!((g - w).abs() <= tolerance, "{what}: element {i}: {g} against {w}");
                }
            };
            for kernel in Bf16Kernel::supported() {
                let what = format!("{:?} on {kernel}, {g:?}", T::FORMAT);
                let y = conv2d_forward_half_on(kernel, &g, &x, &wt, Some(&bias[..o]), Some(UnaryOp::Relu));
                check(&y, &want_y, &format!("forward, {what}"));
                let xs = conv2d_input_adjoint_half_on(kernel, &g, &gy, &wt, Some(&bias[..c]), Some(UnaryOp::Relu));
                check(&xs, &want_x, &format!("adjoint, {what}"));
            }
        }
    }

    /// The vector kernels give the same bits through the frame, where `vdpbf16ps` sums two
    /// chunks of samples per task and the widening kernels one: three chunks (16 + 16 + 3: a
    /// pair and a single) and three tiles of output channels (6 + 6 + 1: a pair and a single),
    /// for the forward pass and the adjoint.
    #[test]
    fn vector_kernels_give_the_same_bits_over_pairs_of_chunks() {
        for (n, c, o, h, w, k, s, p, d) in [(35, 13, 13, 5, 4, 3, 1, 1, 1), (35, 15, 9, 6, 5, 4, 2, 1, 1)] {
            let g = ConvGeometry::conv2d([n, c, h, w], [o, c, k, k], (s, s), (p, p), (d, d)).unwrap();
            let x = values::<bf16>(n * c * h * w, 5);
            let wt = values::<bf16>(o * c * k * k, 6);
            let bias = values::<bf16>(o.max(c), 7);
            let gy = values::<bf16>(n * o * g.out_h * g.out_w, 8);
            let bits = |v: Vec<bf16>| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            let mut first: Option<(PairKernel, Vec<u16>, Vec<u16>)> = None;
            for kernel in PairKernel::supported() {
                let on = Bf16Kernel::Vector(kernel);
                let y = bits(conv2d_forward_half_on(on, &g, &x, &wt, Some(&bias[..o]), None));
                let xs = bits(conv2d_input_adjoint_half_on(on, &g, &gy, &wt, Some(&bias[..c]), None));
                match &first {
                    None => first = Some((kernel, y, xs)),
                    Some((first, want_y, want_x)) => {
                        assert!(y == *want_y, "forward on {kernel}: other bits than on {first}, {g:?}");
                        assert!(xs == *want_x, "adjoint on {kernel}: other bits than on {first}, {g:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn bf16_convolutions_match_the_reference_on_every_kernel() {
        check_every_kernel::<bf16>(2f64.powi(-8));
    }

    /// f16 on the widening kernel of every path (F16C on x86-64).
    #[test]
    fn f16_convolutions_match_the_reference_on_every_kernel() {
        check_every_kernel::<f16>(2f64.powi(-11));
    }
}
