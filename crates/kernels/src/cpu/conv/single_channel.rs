//! The input adjoint onto an image of a single channel (conv2d's input gradient of a critic's
//! first layer, and a generator's last layer, a `conv_transpose2d` to one channel), and the
//! weight gradient of such a layer ([`weight_grad_single_channel`], documented there), in f32:
//! vectors along the rows of the maps.
//!
//! With one image channel the register tile would have one busy row in six, and the GEMMs by
//! rectangles are matrix-vector products: both leave most of the processor idle (the
//! reference generator's last layer at batch 64 took 0.45 ms by rectangles on a Zen 5,
//! against PyTorch's 0.17, and 0.27 this way; a call made seven times per WGAN iteration).
//! Here:
//!
//! - The image is computed by **phases** of the stride, `x[pr + sh * a, pc + sw * b]` for
//!   row phase `pr` and column phase `pc`: within one phase every pixel receives from the
//!   same kernel taps, tap `(ki, kj)` reading map pixel `(a + rs(ki), b + cs(kj))` for fixed
//!   shifts (`Axis::adjoint_taps`).
//! - Per column tap `kj`, a partial sum `P_kj[a, m] = sum over channels c and row taps ki of
//!   w[c, ki, kj] * y[c, a + rs(ki), m]` is taken over whole rows of the maps: every vector
//!   load is one aligned run of a map row (a copy of the sample's maps, zero rows above and
//!   below, rows padded to whole vectors), and each load serves every column tap of the phase.
//!   A block of up to [`BLOCK`] rows of a phase and its column taps (at most
//!   [`MAX_COLUMN_TAPS`]) stay in registers over all channels.
//! - Then `x[pr + sh * a, pc + sw * b] = bias + sum over kj of P_kj[a, b + cs(kj)]`.
//!
//! Every pixel is summed by one task in an order fixed by the geometry (each partial sum over
//! channels and row taps in order, then the column taps in order), the same on every thread
//! count, and the same bits on AVX2 and AVX-512 (each lane fuses the same multiply-adds in
//! the same order, whatever the vector width).

use crate::cpu::elementwise::unary_in_place;
use crate::cpu::matmul::count_flops;
use crate::cpu::simd::{dispatch, F32Simd, SimdKernel, SimdPath};
use crate::cpu::{assume_init_vec, uninit_vec};
use crate::op::Epilogue;
use crate::ConvGeometry;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Rows of a phase summed at once: with [`MAX_COLUMN_TAPS`] partial sums each, 24 vector
/// registers of AVX-512's 32 (AVX2, with 16, takes half as many rows).
const BLOCK: usize = 8;
/// Column taps of a phase the kernel keeps partial sums for: `ceil(kernel_w / stride_w)`, 3
/// for the 5x5 kernels of stride 2 of a DCGAN. Geometries with more take the other paths.
const MAX_COLUMN_TAPS: usize = 3;

/// How one axis of the convolution reaches the image (conv2d's terms: output position `o`
/// reads input `o * stride + k * dilation - padding` at kernel tap `k`).
#[derive(Clone, Copy)]
struct Axis {
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    padding: usize,
}

impl Axis {
    fn rows(g: &ConvGeometry) -> Axis {
        Axis {
            input: g.in_h,
            kernel: g.kernel_h,
            stride: g.stride.0,
            dilation: g.dilation.0,
            padding: g.padding.0,
        }
    }

    fn columns(g: &ConvGeometry) -> Axis {
        Axis {
            input: g.in_w,
            kernel: g.kernel_w,
            stride: g.stride.1,
            dilation: g.dilation.1,
            padding: g.padding.1,
        }
    }

    /// Tap `k` reads input `stride * (o + shift) + phase` for output `o`: `(phase, shift)`.
    fn forward_tap(&self, k: usize) -> (usize, isize) {
        let offset = (k * self.dilation) as isize - self.padding as isize;
        let s = self.stride as isize;
        (offset.rem_euclid(s) as usize, offset.div_euclid(s))
    }

    /// The taps that reach input positions `phase + stride * a`, and the output position
    /// each reads for them, `a + shift`: `(k, shift)`.
    fn adjoint_taps(&self, phase: usize) -> Vec<(usize, isize)> {
        let s = self.stride as isize;
        (0..self.kernel)
            .filter_map(|k| {
                let offset = (phase + self.padding) as isize - (k * self.dilation) as isize;
                (offset.rem_euclid(s) == 0).then_some((k, offset.div_euclid(s)))
            })
            .collect()
    }

    /// Input positions `phase + stride * a` of one phase.
    fn phase_len(&self, phase: usize) -> usize {
        self.input.saturating_sub(phase).div_ceil(self.stride)
    }
}

/// Whether [`input_adjoint_single_channel`] takes this geometry: an image of one channel, and
/// at most [`MAX_COLUMN_TAPS`] column taps per phase.
pub(super) fn adjoint_fits(g: &ConvGeometry) -> bool {
    let columns = Axis::columns(g);
    g.in_channels == 1
        && g.in_h * g.in_w > 0
        && (0..columns.stride).all(|p| columns.adjoint_taps(p).len() <= MAX_COLUMN_TAPS)
}

/// `x = activation(conv2d^T(y, w) + bias)` onto an image of one channel: `y: [N, O, Ho, Wo]`,
/// `w: [O, 1, kh, kw]`, `bias: [1]`, returns `[N, 1, H, W]`.
///
/// Panics unless [`adjoint_fits`].
pub(super) fn input_adjoint_single_channel(
    path: SimdPath,
    g: &ConvGeometry,
    y: &[f32],
    w: &[f32],
    epilogue: Epilogue<f32>,
) -> Vec<f32> {
    assert!(
        adjoint_fits(g),
        "input_adjoint_single_channel: a geometry it does not take"
    );
    let image_len = g.in_h * g.in_w;
    let maps_len = g.out_channels * g.out_h * g.out_w;
    let bias = epilogue.bias.and_then(|b| b.first()).copied().unwrap_or(0.0);
    if g.batch == 0 || maps_len == 0 {
        // No maps: the image is the bias alone.
        let mut x = vec![bias; g.batch * image_len];
        if let Some(op) = epilogue.activation {
            unary_in_place(path, op, &mut x);
        }
        return x;
    }
    assert!(
        y.len() >= g.batch * maps_len && w.len() >= g.out_channels * g.kernel_h * g.kernel_w,
        "input_adjoint_single_channel: operands too short"
    );
    count_flops(2 * (super::taps_inside_image(g) * g.out_channels * g.batch) as u64);
    let (rows, columns) = (Axis::rows(g), Axis::columns(g));
    let row_taps: Vec<Vec<(usize, isize)>> = (0..rows.stride).map(|p| rows.adjoint_taps(p)).collect();
    let column_taps: Vec<Vec<(usize, isize)>> = (0..columns.stride).map(|p| columns.adjoint_taps(p)).collect();
    // The padded copy of a sample's maps: `top` zero rows above, at least as many below as
    // the farthest row tap reaches, and each row `span` long (whole vectors, zeros past Wo).
    let longest_phase = (0..rows.stride).map(|p| rows.phase_len(p)).max().unwrap_or(0);
    let shifts = row_taps.iter().flatten().map(|&(_, s)| s);
    let top = (-shifts.clone().min().unwrap_or(0).min(0)) as usize;
    let height = top + longest_phase.max(g.out_h) + shifts.max().unwrap_or(0).max(0) as usize;
    let span = g.out_w.div_ceil(path.f32_lanes()) * path.f32_lanes();
    let copy = MapsCopy {
        channels: g.out_channels,
        top,
        height,
        span,
    };
    let mut x = uninit_vec::<f32>(g.batch * image_len);
    x.par_chunks_mut(image_len).zip(y.par_chunks(maps_len)).for_each_init(
        || (Vec::new(), Vec::new(), Vec::new()),
        |(maps, partial, line): &mut (Vec<f32>, Vec<f32>, Vec<f32>), (x, y)| {
            let maps = copy.fill(path, maps, y, g.out_h, g.out_w);
            for (row_phase, row_phase_taps) in row_taps.iter().enumerate() {
                for (column_phase, column_phase_taps) in column_taps.iter().enumerate() {
                    let phase_rows = rows.phase_len(row_phase);
                    // `partial[(k * phase_rows + a) * span + m]`: P of column tap k, row a.
                    partial.clear();
                    partial.resize(column_phase_taps.len() * phase_rows * span, 0.0);
                    if !row_phase_taps.is_empty() && !column_phase_taps.is_empty() {
                        let kernel = PartialSums {
                            copy: &copy,
                            w,
                            taps_per_channel: g.kernel_h * g.kernel_w,
                            kernel_w: g.kernel_w,
                            maps,
                            row_taps: row_phase_taps,
                            column_taps: column_phase_taps,
                            rows: phase_rows,
                            partial,
                        };
                        dispatch(path, kernel);
                    }
                    // Each pixel of the phase: the bias, then its column taps' partial sums in
                    // order (a partial sum past the maps' columns is zero: none is added).
                    let width = columns.phase_len(column_phase);
                    line.clear();
                    line.resize(width, bias);
                    for a in 0..phase_rows {
                        line.fill(bias);
                        for (k, &(_, shift)) in column_phase_taps.iter().enumerate() {
                            let row = &partial[(k * phase_rows + a) * span..][..span];
                            // Pixels b with 0 <= b + shift < span.
                            let first = (-shift).clamp(0, width as isize) as usize;
                            let end = (span as isize - shift).clamp(first as isize, width as isize) as usize;
                            if first == end {
                                // The tap reads past the maps for every pixel of the phase (a
                                // dilation wider than the image, say).
                                continue;
                            }
                            let from = (first as isize + shift) as usize;
                            for (sum, &p) in line[first..end].iter_mut().zip(&row[from..]) {
                                *sum += p;
                            }
                        }
                        let image_row = &mut x[(row_phase + rows.stride * a) * g.in_w..][..g.in_w];
                        for (pixel, &sum) in image_row
                            .iter_mut()
                            .skip(column_phase)
                            .step_by(columns.stride)
                            .zip(&*line)
                        {
                            pixel.write(sum);
                        }
                    }
                }
            }
            // SAFETY: the phases cover every pixel of the image, each written above.
            let x = unsafe { &mut *(x as *mut [MaybeUninit<f32>] as *mut [f32]) };
            if let Some(op) = epilogue.activation {
                unary_in_place(path, op, x);
            }
        },
    );
    // SAFETY: every sample's image was written whole.
    unsafe { assume_init_vec(x) }
}

/// The layout of a sample's maps copied for the kernel: `[channels, height, span]`, map row
/// `oh` at row `top + oh`, zeros around.
struct MapsCopy {
    channels: usize,
    top: usize,
    height: usize,
    span: usize,
}

impl MapsCopy {
    /// The copy of one sample's maps `y` (`[channels, map_h, map_w]`) in `buffer`, starting
    /// at a multiple of 64 bytes, so that every row (`span` f32, whole vectors) is loaded by
    /// aligned vectors. Rows past `height` reach no pixel of the image and are left out.
    fn fill<'a>(&self, path: SimdPath, buffer: &'a mut Vec<f32>, y: &[f32], map_h: usize, map_w: usize) -> &'a [f32] {
        let len = self.channels * self.height * self.span;
        // Every sample of a call has this layout, and the rows below overwrite the same
        // places each time: the zeros around them stay from the first sample of the buffer.
        if buffer.len() != len + 16 {
            buffer.clear();
            buffer.resize(len + 16, 0.0);
        }
        let skip = buffer.as_ptr().align_offset(64).min(16);
        let copy = &mut buffer[skip..skip + len];
        let rows = map_h.min(self.height - self.top);
        assert!(
            y.len() >= self.channels * map_h * map_w && map_w <= self.span,
            "single-channel adjoint: maps larger than their copy"
        );
        dispatch(
            path,
            CopyRows {
                copy: self,
                y,
                rows,
                map_h,
                map_w,
                out: copy,
            },
        );
        &buffer[skip..skip + len]
    }
}

/// The rows of a sample's maps into their copy, by vectors under lane masks (a row of a
/// DCGAN's maps is one vector: not a `memcpy` call per row).
struct CopyRows<'a> {
    copy: &'a MapsCopy,
    y: &'a [f32],
    rows: usize,
    map_h: usize,
    map_w: usize,
    out: &'a mut [f32],
}

impl SimdKernel for CopyRows<'_> {
    type Output = ();
    #[inline(always)]
    unsafe fn run<S: F32Simd>(self) {
        let CopyRows {
            copy,
            y,
            rows,
            map_h,
            map_w,
            out,
        } = self;
        for c in 0..copy.channels {
            for oh in 0..rows {
                let src = y[(c * map_h + oh) * map_w..][..map_w].as_ptr();
                let dst = out[((c * copy.height) + copy.top + oh) * copy.span..].as_mut_ptr();
                for m in (0..map_w).step_by(S::LANES) {
                    let count = (map_w - m).min(S::LANES);
                    // SAFETY: `count` values of the row are read, and stored inside the copy's
                    // row (`map_w <= span`, asserted by `fill`).
                    unsafe { S::store_first(dst.add(m), S::load_first(src.add(m), count), count) };
                }
            }
        }
    }
}

/// The partial sums of one phase on a SIMD path (see the module's documentation).
struct PartialSums<'a> {
    copy: &'a MapsCopy,
    w: &'a [f32],
    taps_per_channel: usize,
    kernel_w: usize,
    maps: &'a [f32],
    /// The phase's row taps and column taps, `(k, shift)`.
    row_taps: &'a [(usize, isize)],
    column_taps: &'a [(usize, isize)],
    rows: usize,
    partial: &'a mut [f32],
}

impl SimdKernel for PartialSums<'_> {
    type Output = ();
    #[inline(always)]
    unsafe fn run<S: F32Simd>(self) {
        // Blocks of BLOCK rows (half as many on paths with 16 registers), then the rest by
        // halves; each with as many partial sums as the phase has column taps.
        let widest = if S::LANES >= 16 { BLOCK } else { BLOCK / 2 };
        let mut first = 0;
        for block in [BLOCK, 4, 2, 1] {
            if block > widest {
                continue;
            }
            while self.rows - first >= block {
                // SAFETY: compiled for S by `dispatch`; the block's rows are the phase's, and
                // 1 <= column taps <= MAX_COLUMN_TAPS (`adjoint_fits`, and the caller skips
                // phases without taps).
                unsafe {
                    match (block, self.column_taps.len()) {
                        (BLOCK, 1) => self.block::<S, BLOCK, 1>(first),
                        (BLOCK, 2) => self.block::<S, BLOCK, 2>(first),
                        (BLOCK, _) => self.block::<S, BLOCK, 3>(first),
                        (4, 1) => self.block::<S, 4, 1>(first),
                        (4, 2) => self.block::<S, 4, 2>(first),
                        (4, _) => self.block::<S, 4, 3>(first),
                        (2, 1) => self.block::<S, 2, 1>(first),
                        (2, 2) => self.block::<S, 2, 2>(first),
                        (2, _) => self.block::<S, 2, 3>(first),
                        (_, 1) => self.block::<S, 1, 1>(first),
                        (_, 2) => self.block::<S, 1, 2>(first),
                        (_, _) => self.block::<S, 1, 3>(first),
                    }
                }
                first += block;
            }
        }
    }
}

impl PartialSums<'_> {
    /// Rows `first..first + B` of the phase, `K` column taps, every vector of their rows.
    ///
    /// # Safety
    /// Compiled for `S`; `first + B <= self.rows`; `K == self.column_taps.len()`.
    #[inline(always)]
    unsafe fn block<S: F32Simd, const B: usize, const K: usize>(&self, first: usize) {
        let copy = self.copy;
        let partial = self.partial.as_ptr() as *mut f32;
        let column_taps: [usize; K] = std::array::from_fn(|k| self.column_taps[k].0);
        for m in (0..copy.span).step_by(S::LANES) {
            // SAFETY (the block): map row `top + first + r + shift` of every channel lies in the
            // copy (its `top` rows above and the rows below cover every shift), `m` is a whole
            // vector of a row, the weights are channel `c < O`'s taps, and the partial sums are
            // the phase's rows and vectors.
            unsafe {
                let mut sums = [[S::zero(); K]; B];
                for c in 0..copy.channels {
                    let plane = self.maps.as_ptr().add(c * copy.height * copy.span);
                    let weights = self.w.as_ptr().add(c * self.taps_per_channel);
                    for &(ki, shift) in self.row_taps {
                        let taps: [S::V; K] =
                            std::array::from_fn(|k| S::broadcast(weights.add(ki * self.kernel_w + column_taps[k])));
                        let row0 = (copy.top as isize + first as isize + shift) as usize;
                        for (r, row_sums) in sums.iter_mut().enumerate() {
                            let v = S::load(plane.add((row0 + r) * copy.span + m));
                            for (sum, &tap) in row_sums.iter_mut().zip(&taps) {
                                *sum = S::mul_add(tap, v, *sum);
                            }
                        }
                    }
                }
                for (r, row_sums) in sums.iter().enumerate() {
                    for (k, &sum) in row_sums.iter().enumerate() {
                        S::store(partial.add((k * self.rows + first + r) * copy.span + m), sum);
                    }
                }
            }
        }
    }
}

/// Samples per pass of the weight gradient: the maps of a task's channels and the image rows
/// of that many samples (about 80 KiB at DIM 64) stay in L2 while each block of channels goes
/// over them.
const WEIGHT_GRAD_SAMPLES: usize = 8;

/// The widest kernel row the weight gradient keeps sums in registers for (a DCGAN's 5x5).
const MAX_KERNEL_W: usize = 5;

/// Whether [`weight_grad_single_channel`] takes this geometry: an image of one channel and a
/// kernel at most [`MAX_KERNEL_W`] wide.
pub(super) fn weight_grad_fits(g: &ConvGeometry) -> bool {
    g.in_channels == 1 && (1..=MAX_KERNEL_W).contains(&g.kernel_w)
}

/// `gw = conv2d_weight_grad(x, gy)` for an image of one channel (`g.in_channels == 1`): `x:
/// [N, 1, H, W]`, `gy: [N, O, Ho, Wo]`, returns `[O, 1, kh, kw]`.
///
/// The image is split by the phases of its column stride (`[phase, H, row_len]` per sample,
/// zeros past its edges), so that kernel tap `(ki, kj)` meets a row of a map, `gy[n, o, oh,
/// ..]`, in one contiguous run of a phase. Per output channel and tap, a vector of sums, one
/// lane per column of the maps, over samples and rows; the lanes summed in order at the end.
/// A task is a block of 4 output channels, its samples in passes of [`WEIGHT_GRAD_SAMPLES`]
/// (the maps read from memory once): per kernel row, for each sample and row of the maps,
/// each map vector is loaded once for the row's taps and each image vector once for the
/// block's channels, the sums in registers. Every weight is summed by one task in an
/// order fixed by the geometry; AVX2 and AVX-512 give the same bits (a lane is a column of the
/// maps on both).
///
/// Panics unless [`weight_grad_fits`].
pub(super) fn weight_grad_single_channel(path: SimdPath, g: &ConvGeometry, x: &[f32], gy: &[f32]) -> Vec<f32> {
    assert!(
        weight_grad_fits(g),
        "weight_grad_single_channel: a geometry it does not take"
    );
    let (o, taps) = (g.out_channels, g.kernel_h * g.kernel_w);
    let (maps_len, image_len) = (o * g.out_h * g.out_w, g.in_h * g.in_w);
    if g.batch * maps_len * image_len * taps == 0 {
        return vec![0.0; o * taps];
    }
    assert!(
        x.len() >= g.batch * image_len && gy.len() >= g.batch * maps_len,
        "weight_grad_single_channel: operands too short"
    );
    count_flops(2 * (super::taps_inside_image(g) * o * g.batch) as u64);
    let lanes = path.f32_lanes();
    let span = g.out_w.div_ceil(lanes) * lanes;
    let columns = Axis::columns(g);
    let column_taps: Vec<(usize, isize)> = (0..g.kernel_w).map(|k| columns.forward_tap(k)).collect();
    // Positions `lead + shift + [0, span)` of a phase's rows, for every column tap's shift.
    let low = column_taps.iter().map(|&(_, s)| s).min().unwrap_or(0).min(0);
    let high = column_taps.iter().map(|&(_, s)| s).max().unwrap_or(0).max(0);
    let lead = (-low) as usize;
    let row_len = lead + span + high as usize;
    let per_sample = columns.stride * g.in_h * row_len;
    let mut phases = vec![0f32; g.batch * per_sample];
    phases
        .par_chunks_mut(per_sample)
        .zip(x.par_chunks(image_len))
        .for_each(|(out, x)| {
            for (phase, per_phase) in out.chunks_exact_mut(g.in_h * row_len).enumerate() {
                for (line, image_row) in per_phase.chunks_exact_mut(row_len).zip(x.chunks_exact(g.in_w)) {
                    // Columns past the row's end are read by no output.
                    let phase_columns = image_row.iter().skip(phase).step_by(columns.stride);
                    for (slot, &v) in line[lead..].iter_mut().zip(phase_columns) {
                        *slot = v;
                    }
                }
            }
        });
    // `sums[((channel * taps) + tap) * span + m]`: the sums of lane (map column) m. Tasks of
    // 4 channels, every kernel row (the maps are read from memory once), each on its own
    // channels' sums.
    let block = 4;
    let mut sums = vec![0f32; o * taps * span];
    sums.par_chunks_mut(block * taps * span)
        .enumerate()
        .for_each(|(b, sums)| {
            let kernel = WeightGradTask {
                g,
                gy,
                phases: &phases,
                per_sample,
                row_len,
                lead,
                span,
                column_taps: &column_taps,
                first: b * block,
                channels: sums.len() / (taps * span),
                sums,
            };
            dispatch(path, kernel);
        });
    // Each weight: its lanes over the maps' columns, in order.
    sums.chunks_exact(span)
        .map(|lanes| lanes[..g.out_w].iter().fold(0.0f32, |acc, &v| acc + v))
        .collect()
}

/// The outputs `o < outputs` whose tap `k` reads inside the input: `0 <= o * stride + k *
/// dilation - padding < input`.
fn outputs_inside(
    outputs: usize,
    input: usize,
    stride: usize,
    dilation: usize,
    padding: usize,
    k: usize,
) -> std::ops::Range<usize> {
    let start = padding.saturating_sub(k * dilation).div_ceil(stride);
    let end = (input + padding)
        .saturating_sub(k * dilation)
        .div_ceil(stride)
        .min(outputs);
    start.min(end)..end
}

/// One task of the weight gradient on a SIMD path: channels `first..first + channels`, every
/// tap.
struct WeightGradTask<'a> {
    g: &'a ConvGeometry,
    gy: &'a [f32],
    phases: &'a [f32],
    per_sample: usize,
    row_len: usize,
    lead: usize,
    span: usize,
    column_taps: &'a [(usize, isize)],
    first: usize,
    channels: usize,
    /// The sums of channels `first..first + channels`: `[channels, taps, span]`.
    sums: &'a mut [f32],
}

impl SimdKernel for WeightGradTask<'_> {
    type Output = ();
    #[inline(always)]
    unsafe fn run<S: F32Simd>(mut self) {
        // Blocks of channels (4 on 32 registers, 2 on 16: with the taps of a kernel row, their
        // sums stay in registers), the kernel row's width a constant.
        let widest = if S::LANES >= 16 { 4 } else { 2 };
        // Samples in passes: a pass's maps of the task's channels and its image rows stay in
        // L2 while every block of channels goes over them.
        for n0 in (0..self.g.batch).step_by(WEIGHT_GRAD_SAMPLES) {
            let samples = n0..(n0 + WEIGHT_GRAD_SAMPLES).min(self.g.batch);
            let mut done = 0;
            for width in [4, 2, 1] {
                if width > widest {
                    continue;
                }
                while self.channels - done >= width {
                    // SAFETY: compiled for S by `dispatch`; the block's channels exist, and the
                    // kernel is at most MAX_KERNEL_W wide (`weight_grad_fits`).
                    unsafe {
                        macro_rules! by_width {
                            ($b:literal, $ki:expr) => {
                                match self.g.kernel_w {
                                    1 => self.block::<S, $b, 1>(done, samples.clone(), $ki),
                                    2 => self.block::<S, $b, 2>(done, samples.clone(), $ki),
                                    3 => self.block::<S, $b, 3>(done, samples.clone(), $ki),
                                    4 => self.block::<S, $b, 4>(done, samples.clone(), $ki),
                                    _ => self.block::<S, $b, 5>(done, samples.clone(), $ki),
                                }
                            };
                        }
                        for ki in 0..self.g.kernel_h {
                            match width {
                                4 => by_width!(4, ki),
                                2 => by_width!(2, ki),
                                _ => by_width!(1, ki),
                            }
                        }
                    }
                    done += width;
                }
            }
        }
    }
}

impl WeightGradTask<'_> {
    /// The task's channels `offset..offset + B`, the `KW` taps of kernel row `ki`, over
    /// `samples`.
    ///
    /// # Safety
    /// Compiled for `S`; `offset + B <= self.channels`; `KW == kernel_w`.
    #[inline(always)]
    unsafe fn block<S: F32Simd, const B: usize, const KW: usize>(
        &mut self,
        offset: usize,
        samples: std::ops::Range<usize>,
        ki: usize,
    ) {
        let g = self.g;
        let (taps, map_len) = (g.kernel_h * g.kernel_w, g.out_h * g.out_w);
        let maps_per_sample = g.out_channels * map_len;
        let (sh, dh, ph) = (g.stride.0, g.dilation.0, g.padding.0);
        // Output rows whose image row `oh * sh + ki * dh - ph` lies inside the image.
        let inside = outputs_inside(g.out_h, g.in_h, sh, dh, ph, ki);
        let columns: [(usize, usize); KW] = std::array::from_fn(|kj| {
            let (phase, shift) = self.column_taps[kj];
            (phase * g.in_h * self.row_len, (self.lead as isize + shift) as usize)
        });
        for m in (0..self.span).step_by(S::LANES) {
            let count = g.out_w.saturating_sub(m).min(S::LANES);
            // SAFETY (the block): the sums are this task's channels' and kernel row's; each
            // image vector lies in its sample's phase row (`lead + shift + [0, span)`), and each
            // map vector reads `count` values of a row of the maps.
            unsafe {
                let sums = self.sums.as_mut_ptr();
                let at = |c: usize, kj: usize| sums.add(((offset + c) * taps + ki * g.kernel_w + kj) * self.span + m);
                let mut acc: [[S::V; KW]; B] = std::array::from_fn(|c| std::array::from_fn(|kj| S::load(at(c, kj))));
                for n in samples.clone() {
                    let phases = self.phases.as_ptr().add(n * self.per_sample);
                    let maps = self
                        .gy
                        .as_ptr()
                        .add(n * maps_per_sample + (self.first + offset) * map_len + m);
                    for oh in inside.clone() {
                        let image_row = (oh * sh + ki * dh - ph) * self.row_len + m;
                        let map: [S::V; B] =
                            std::array::from_fn(|c| S::load_first(maps.add(c * map_len + oh * g.out_w), count));
                        for (kj, &(phase_at, column)) in columns.iter().enumerate() {
                            let v = S::load(phases.add(phase_at + image_row + column));
                            for (sums, &map) in acc.iter_mut().zip(&map) {
                                sums[kj] = S::mul_add(v, map, sums[kj]);
                            }
                        }
                    }
                }
                for (c, sums) in acc.iter().enumerate() {
                    for (kj, &sum) in sums.iter().enumerate() {
                        S::store(at(c, kj), sum);
                    }
                }
            }
        }
    }
}
