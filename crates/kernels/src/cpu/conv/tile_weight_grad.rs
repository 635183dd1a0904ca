//! The weight gradient on the register tile ([`super::tile`]): `weight_grad_by_tiles` for
//! layers with channels enough to fill it both ways, and `weight_grad_by_kernel_columns`, the
//! tile turned around, for a single-channel image.

use super::scratch::Scratch;
use super::taps_inside_image;
use super::tile::{
    accumulate_rows_unchecked, accumulate_two_blocks_unchecked, accumulate_two_tiles_two_blocks_unchecked,
    accumulate_two_tiles_unchecked, check_runs, Run, TILE_LEN, TILE_ROWS, TILE_SAMPLES,
};
use crate::cpu::layout::{transpose_block_unchecked, ByElement, InRegisters, Transpose8x8, TRANSPOSE_BLOCK};
use crate::cpu::matmul::count_flops;
use crate::cpu::simd::{dispatch, F32Simd, SimdKernel, SimdPath};
use crate::cpu::{as_f32, as_f32_slots, as_slots, assume_init_vec, uninit_vec};
use crate::{ConvGeometry, Element};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Steps of the weight gradient's reduction that one group of runs spans: a block of input
/// channels over a group (`STEPS_PER_GROUP * TILE_SAMPLES` values, 16 KiB in f32) stays in L1
/// while every tile of output channels goes over it.
const STEPS_PER_GROUP: usize = 256;
/// Tiles of output channels per task of the weight gradient, at most: the maps of a group
/// for a task's tiles (`STEPS_PER_GROUP * TILE_ROWS * TASK_TILES` values, 96 KiB in f32) stay
/// in L2 while every block of input channels and every kernel column goes over them.
const TASK_TILES: usize = 16;

/// `[N, C, P]` as `[ceil(C / block), P, N, block]`: channels by blocks of `block`, the block
/// fastest, then the sample; channels past `C` are zero.
fn to_channel_blocks<T: Element>(
    path: SimdPath,
    x: &[T],
    batch: usize,
    channels: usize,
    pixels: usize,
    block: usize,
) -> Scratch<T> {
    let blocks = channels.div_ceil(block);
    let mut out = Scratch::take(blocks * pixels * batch * block);
    if out.is_empty() {
        return out;
    }
    assert!(
        x.len() >= batch * channels * pixels,
        "to_channel_blocks: input too short"
    );
    // SAFETY: the transposes below write values of `x` or zeros, nothing uninitialised.
    unsafe { as_slots(&mut out) }
        .par_chunks_mut(pixels * batch * block)
        .enumerate()
        .for_each(|(b, out)| {
            let blocks = ChannelBlock {
                first: b * block,
                end: ((b + 1) * block).min(channels),
                batch,
                channels,
                pixels,
                block,
            };
            // SAFETY: `x` holds every sample's channels and pixels (asserted above) and `out`
            // is this block's `pixels * batch * block` slots.
            unsafe {
                match as_f32(x) {
                    Some(x) => {
                        let out = as_f32_slots(out).expect("f32 slots when the input is f32");
                        dispatch(path, ChannelBlockF32 { blocks, x, out })
                    }
                    None => blocks.write::<T, ByElement>(x, out),
                }
            }
        });
    out
}

/// Block `[first, end)` of the channels of [`to_channel_blocks`], written once over the block
/// transpose `X`.
#[derive(Clone, Copy)]
struct ChannelBlock {
    first: usize,
    end: usize,
    batch: usize,
    channels: usize,
    pixels: usize,
    block: usize,
}

impl ChannelBlock {
    /// # Safety
    /// `x` holds `batch * channels * pixels` values and `out` `pixels * batch * block` slots.
    #[inline(always)]
    unsafe fn write<T: Element, X: Transpose8x8<T>>(self, x: &[T], out: &mut [MaybeUninit<T>]) {
        let ChannelBlock {
            first,
            end,
            batch,
            channels,
            pixels,
            block,
        } = self;
        let width = end - first;
        let (src, dst) = (x.as_ptr(), out.as_mut_ptr() as *mut T);
        // By 8x8 blocks of (channel, pixel), channels innermost: each (pixel, sample) run of the
        // output is written whole at once (see `to_tile_layout`).
        for p0 in (0..pixels).step_by(TRANSPOSE_BLOCK) {
            let cols = TRANSPOSE_BLOCK.min(pixels - p0);
            for n in 0..batch {
                for k0 in (0..width).step_by(TRANSPOSE_BLOCK) {
                    let rows = TRANSPOSE_BLOCK.min(width - k0);
                    let at = (n * channels + first + k0) * pixels + p0;
                    let to = dst.add((p0 * batch + n) * block + k0);
                    // A block of fewer channels than 8 (the blocks of TILE_ROWS = 6 output
                    // channels) whose 8 source rows exist (the next block's channels, or the
                    // next sample's): transposed whole, and only its rows' first lanes stored.
                    let whole_source =
                        cols == TRANSPOSE_BLOCK && at + (TRANSPOSE_BLOCK - 1) * pixels + TRANSPOSE_BLOCK <= x.len();
                    // SAFETY: inside both buffers, by the caller's contract (and the source
                    // rows past the block's inside `x`, checked above).
                    unsafe {
                        if rows < TRANSPOSE_BLOCK && whole_source {
                            X::transpose_8x8_first_lanes(src.add(at), pixels, to, batch * block, rows);
                        } else {
                            transpose_block_unchecked::<T, X>(src.add(at), pixels, rows, cols, to, batch * block)
                        }
                    };
                }
            }
        }
        // The lanes past the last channel.
        for lanes in out.chunks_exact_mut(block) {
            lanes[width..].iter_mut().for_each(|d| {
                d.write(T::ZERO);
            });
        }
    }
}

/// [`ChannelBlock::write`] of f32 in registers.
struct ChannelBlockF32<'a> {
    blocks: ChannelBlock,
    x: &'a [f32],
    out: &'a mut [MaybeUninit<f32>],
}

impl SimdKernel for ChannelBlockF32<'_> {
    type Output = ();
    #[inline(always)]
    unsafe fn run<S: F32Simd>(self) {
        // SAFETY: `to_channel_blocks` checked the bounds; `dispatch` compiled this for S.
        unsafe { self.blocks.write::<f32, InRegisters<S>>(self.x, self.out) }
    }
}

/// `gw = conv2d_weight_grad(x, gy)` on the register tile: the tile's rows are
/// [`TILE_ROWS`] output channels, its columns [`TILE_SAMPLES`] input channels, and its
/// reduction runs over (output pixel, sample). With `gy` laid out `[O / 6, Ho, Wo, N, 6]` and
/// `x` `[C / 16, H, W, N, 16]` ([`to_channel_blocks`]), one kernel tap and one output pixel
/// is one contiguous run of `N` steps in both, and taps on the padding are in no run.
///
/// A task is one kernel row and up to [`TASK_TILES`] tiles of output channels, tasks in
/// parallel. It is a GEMM per tap blocked as usual: the output pixels are cut into groups of
/// about [`STEPS_PER_GROUP`] steps; for each group and each kernel column of the row, each
/// block of input channels (in L1) goes under each of the task's tiles of output channels
/// (their maps in L2, where they serve all the row's columns). Every output tile is summed by
/// one task in an order fixed by the geometry: reproducible bit for bit.
pub(super) fn weight_grad_by_tiles<T: Element>(path: SimdPath, g: &ConvGeometry, x: &[T], gy: &[T]) -> Vec<T> {
    let (n, o, c) = (g.batch, g.out_channels, g.in_channels);
    let (pix, image_pix, taps) = (g.out_h * g.out_w, g.in_h * g.in_w, g.kernel_h * g.kernel_w);
    if n == 0 || pix == 0 || o * c * taps == 0 {
        return vec![T::ZERO; o * c * taps];
    }
    let (otiles, ctiles) = (o.div_ceil(TILE_ROWS), c.div_ceil(TILE_SAMPLES));
    let maps = to_channel_blocks(path, gy, n, o, pix, TILE_ROWS);
    let inputs = to_channel_blocks(path, x, n, c, image_pix, TILE_SAMPLES);
    let (maps_per_tile, inputs_per_block) = (pix * n * TILE_ROWS, image_pix * n * TILE_SAMPLES);
    count_flops(2 * (taps_inside_image(g) * c * o * n) as u64);
    // On AVX-512 in f32, two blocks of input channels at a time under each pair of output
    // tiles: its 32 registers hold the four tiles' sums, and each map value loaded serves both.
    let blocks_at_once = if path == SimdPath::Avx512 && as_f32(x).is_some() {
        2
    } else {
        1
    };
    // Tasks by kernel row, group of `group_tiles` tiles of output channels (as even a split
    // of the tiles as pairs allow) and span of `span` kernel columns: the whole row, unless
    // that leaves fewer than two tasks a thread (16 threads and more, at DIM 64), where the
    // row is cut. The sums do not depend on the cut: each tile is summed by one task, over
    // the same groups of pixels in the same order. Task `(ki * groups + g) * spans + j` sums,
    // for each kernel column `kj` of its span, the tiles `((kj - j * span) * TASK_TILES + t)
    // * ctiles + block` of its chunk: gw[rows of otile `g * group_tiles + t`, columns of
    // `block`, tap (ki, kj)].
    let groups = otiles.div_ceil(TASK_TILES);
    let group_tiles = otiles.div_ceil(groups).next_multiple_of(2).min(TASK_TILES);
    let groups = otiles.div_ceil(group_tiles);
    let (kh, kw) = (g.kernel_h, g.kernel_w);
    let cuts = (2 * rayon::current_num_threads()).div_ceil(kh * groups).clamp(1, kw);
    let span = kw.div_ceil(cuts);
    let spans = kw.div_ceil(span);
    let section = TASK_TILES * ctiles * TILE_LEN;
    let tile_at = |tap: usize, otile: usize, block: usize| {
        let (ki, kj) = (tap / kw, tap % kw);
        let task = (ki * groups + otile / group_tiles) * spans + kj / span;
        task * span * section + (((kj % span) * TASK_TILES + otile % group_tiles) * ctiles + block) * TILE_LEN
    };
    let mut tiles = Scratch::take(kh * groups * spans * span * section);
    let tasks = tiles.par_chunks_mut(span * section).enumerate();
    tasks.for_each_init(
        || (Vec::new(), Vec::new()),
        |(runs, pixels): &mut (Vec<Run>, Vec<usize>), (task, out)| {
            let (row_task, first_column) = (task / spans, (task % spans) * span);
            let (ki, first_otile) = (row_task / groups, (row_task % groups) * group_tiles);
            let tiles_here = (otiles - first_otile).min(group_tiles);
            let columns = first_column..(first_column + span).min(kw);
            // The output pixels whose rows read inside the image through kernel row `ki`, and
            // for each kernel column of the span its runs over them (in pixel order),
            // `pixels[i]` the output pixel of run `i`; `starts[j]` where the runs of the
            // span's column `j` begin.
            runs.clear();
            pixels.clear();
            let mut starts = Vec::with_capacity(span + 1);
            for kj in columns.clone() {
                starts.push(runs.len());
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
                            pixels.push(oh * g.out_w + ow);
                        }
                    }
                }
            }
            starts.push(runs.len());
            // Every tile of the task reads these runs, from maps and inputs of the same
            // lengths: check them once.
            check_runs(runs, maps_per_tile, inputs_per_block);
            // Whether each kernel column's tiles have had their first group (which starts
            // them at zero, each tile right before the kernel adds into it).
            let mut started = vec![false; columns.len()];
            // By groups of output pixels (about `STEPS_PER_GROUP` steps), and in each, kernel
            // column by column: the maps of a group serve every column (from L2), and the
            // inputs a column reads overlap the next one's. (Task by tap, each task read all
            // of the maps and inputs of its tap from memory: in a WGAN step on the Intel Xeon,
            // critic conv2's weight gradient moved about 175 MB for 2.2 GFLOP.)
            let per_group = STEPS_PER_GROUP.div_ceil(n).max(1);
            let pixel_count = g.out_h * g.out_w;
            for group_start in (0..pixel_count).step_by(per_group) {
                let group_end = (group_start + per_group).min(pixel_count);
                for (j, section) in out.chunks_mut(section).take(columns.len()).enumerate() {
                    let (lo, hi) = (starts[j], starts[j + 1]);
                    let from = lo + pixels[lo..hi].partition_point(|&p| p < group_start);
                    let to = lo + pixels[lo..hi].partition_point(|&p| p < group_end);
                    if from == to {
                        continue;
                    }
                    let group = &runs[from..to];
                    let section = &mut section[..tiles_here * ctiles * TILE_LEN];
                    accumulate_group(
                        path,
                        o,
                        first_otile,
                        ctiles,
                        blocks_at_once,
                        (&maps, maps_per_tile),
                        (&inputs, inputs_per_block),
                        group,
                        section,
                        !started[j],
                    );
                    started[j] = true;
                }
            }
            // A kernel column that reads only padding has no runs: its gradient is zero.
            for (section, _) in out.chunks_mut(section).zip(&started).filter(|(_, &started)| !started) {
                section[..tiles_here * ctiles * TILE_LEN].fill(T::ZERO);
            }
        },
    );
    // Tile of output channels by tile, in parallel: gw[oc, ic, tap] is element (oc % 6, ic %
    // 16) of the tile at `tile_at(tap, oc / 6, ic / 16)`. Each task takes its output
    // tile's blocks of 16 input channels one by one: the block's tile of every tap (each read
    // whole) goes into a local `[rows, 16 * taps]` array, element by element in L1, and each
    // row of that array is then one contiguous run of `gw` (`16 * taps` values). Written into
    // `gw` directly, a tap apart (a line each, over 77 KB of `gw` per task for a 256 x 128 x 5
    // x 5 weight), the values took 0.57 ms of that weight gradient's 7 ms; this way 0.44-0.46.
    let mut gw = uninit_vec(o * c * taps);
    gw.par_chunks_mut(TILE_ROWS * c * taps).enumerate().for_each_init(
        || vec![T::ZERO; TILE_ROWS * TILE_SAMPLES * taps],
        |staged, (otile, rows)| {
            let rows_here = rows.len() / (c * taps);
            for block in 0..ctiles {
                let (first, width) = (block * TILE_SAMPLES, TILE_SAMPLES.min(c - block * TILE_SAMPLES));
                for tap in 0..taps {
                    let tile = &tiles[tile_at(tap, otile, block)..][..TILE_LEN];
                    for r in 0..rows_here {
                        let lanes = &tile[r * TILE_SAMPLES..][..width];
                        let staged_row = &mut staged[r * TILE_SAMPLES * taps..][..width * taps];
                        for (s, &v) in lanes.iter().enumerate() {
                            staged_row[s * taps + tap] = v;
                        }
                    }
                }
                for (r, row) in rows.chunks_exact_mut(c * taps).enumerate() {
                    let run = &staged[r * TILE_SAMPLES * taps..][..width * taps];
                    for (slot, &v) in row[first * taps..][..width * taps].iter_mut().zip(run) {
                        slot.write(v);
                    }
                }
            }
        },
    );
    // SAFETY: the chunks of `TILE_ROWS * c * taps` cover `gw`, and each writes all of its
    // slots (every tap of every input channel of each of its rows).
    unsafe { assume_init_vec(gw) }
}

/// One group of runs of the weight gradient on the register tile, added onto `out`, the
/// tiles `t * ctiles + block` of output channels `first_otile + t` and input channel blocks
/// `block`: each block of input channels (in L1) goes under each of the tiles, the tiles in
/// pairs which share the inputs and the runs (and with `blocks_at_once` 2, each pair goes
/// over two blocks). `maps` and `inputs` are the channel blocks with the length of one
/// block, the lengths the runs were checked against. With `first`, `out` holds anything and
/// each tile is set to zero right before the kernel adds into it (in L1; a pass that zeroed
/// all of `out` first wrote it out to L2 and read it back).
#[allow(clippy::too_many_arguments)]
fn accumulate_group<T: Element>(
    path: SimdPath,
    o: usize,
    first_otile: usize,
    ctiles: usize,
    blocks_at_once: usize,
    (maps, maps_per_tile): (&[T], usize),
    (inputs, inputs_per_block): (&[T], usize),
    group: &[Run],
    out: &mut [T],
    first: bool,
) {
    let start = |tiles: &mut [T]| {
        if first {
            tiles.fill(T::ZERO);
        }
    };
    for block in (0..ctiles).step_by(blocks_at_once) {
        let block_inputs = |block: usize| &inputs[block * inputs_per_block..][..inputs_per_block];
        let tile_maps = |otile: usize| &maps[(first_otile + otile) * maps_per_tile..][..maps_per_tile];
        let rows = |otile: usize| (o - (first_otile + otile) * TILE_ROWS).min(TILE_ROWS);
        let both_blocks = blocks_at_once == 2 && block + 1 < ctiles;
        for (pair, per_pair) in out.chunks_mut(2 * ctiles * TILE_LEN).enumerate() {
            let otile = 2 * pair;
            let (first, second) = per_pair.split_at_mut(ctiles * TILE_LEN);
            // SAFETY: the slices have the lengths the caller checked the runs against
            // (`maps_per_tile`, `inputs_per_block`), and `group` is among the checked runs.
            unsafe {
                match (second.is_empty(), both_blocks) {
                    (true, false) => {
                        let tile0 = &mut first[block * TILE_LEN..][..TILE_LEN];
                        start(tile0);
                        let x = block_inputs(block);
                        accumulate_rows_unchecked(path, rows(otile), tile_maps(otile), x, group, tile0);
                    }
                    (false, false) => {
                        let tile0 = &mut first[block * TILE_LEN..][..TILE_LEN];
                        let tile1 = &mut second[block * TILE_LEN..][..TILE_LEN];
                        start(tile0);
                        start(tile1);
                        let maps = [tile_maps(otile), tile_maps(otile + 1)];
                        let x = block_inputs(block);
                        accumulate_two_tiles_unchecked(path, rows(otile + 1), maps, x, group, [tile0, tile1]);
                    }
                    (true, true) => {
                        start(&mut first[block * TILE_LEN..][..2 * TILE_LEN]);
                        let (tile0, tile1) = first[block * TILE_LEN..][..2 * TILE_LEN].split_at_mut(TILE_LEN);
                        let x = [block_inputs(block), block_inputs(block + 1)];
                        accumulate_two_blocks_unchecked(path, rows(otile), tile_maps(otile), x, group, [tile0, tile1]);
                    }
                    (false, true) => {
                        start(&mut first[block * TILE_LEN..][..2 * TILE_LEN]);
                        start(&mut second[block * TILE_LEN..][..2 * TILE_LEN]);
                        let (tile00, tile01) = first[block * TILE_LEN..][..2 * TILE_LEN].split_at_mut(TILE_LEN);
                        let (tile10, tile11) = second[block * TILE_LEN..][..2 * TILE_LEN].split_at_mut(TILE_LEN);
                        let maps = [tile_maps(otile), tile_maps(otile + 1)];
                        let x = [block_inputs(block), block_inputs(block + 1)];
                        let outs = [[tile00, tile01], [tile10, tile11]];
                        accumulate_two_tiles_two_blocks_unchecked(path, rows(otile + 1), maps, x, group, outs);
                    }
                }
            }
        }
    }
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
pub(super) fn weight_grad_by_kernel_columns<T: Element>(path: SimdPath, g: &ConvGeometry, x: &[T], gy: &[T]) -> Vec<T> {
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
    let maps = to_channel_blocks(path, gy, n, o, pix, TILE_SAMPLES);
    let maps_per_block = pix * n * TILE_SAMPLES;
    count_flops(2 * (taps_inside_image(g) * c * o * n) as u64);
    let tasks = c * kh * groups * bands;
    let mut tiles = Scratch::take(tasks * oblocks * TILE_LEN);
    // Per output column, the (slot among the group's TILE_ROWS kernel columns, input column)
    // pairs that read inside the image (the same for every row, sample and input channel);
    // the group's other slots gather zeros.
    let inside: Vec<Vec<(usize, usize)>> = (0..groups * g.out_w)
        .map(|i| {
            let (group, ow) = (i / g.out_w, i % g.out_w);
            (0..TILE_ROWS)
                .filter_map(|slot| {
                    let kj = group * TILE_ROWS + slot;
                    let iw = (ow * g.stride.1 + kj * g.dilation.1).checked_sub(g.padding.1)?;
                    (kj < kw && iw < g.in_w).then_some((slot, iw))
                })
                .collect()
        })
        .collect();
    tiles.par_chunks_mut(oblocks * TILE_LEN).enumerate().for_each_init(
        || (Vec::new(), Vec::new()),
        |(seen, runs): &mut (Vec<T>, Vec<Run>), (task, out)| {
            out.fill(T::ZERO);
            let (band, group) = (task % bands, task / bands % groups);
            let (ki, ci) = (task / bands / groups % kh, task / bands / groups / kh);
            seen.clear();
            runs.clear();
            let row_len = g.out_w * n * TILE_ROWS;
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
                // Zeros first, then the taps inside the image over them: with the pairs of
                // `inside` worked out once per call, not a bounds test per value.
                let start = seen.len();
                seen.resize(start + row_len, T::ZERO);
                let gathered = &mut seen[start..];
                for ow in 0..g.out_w {
                    let pairs = &inside[group * g.out_w + ow];
                    let per_ow = &mut gathered[ow * n * TILE_ROWS..][..n * TILE_ROWS];
                    for (sample, slots) in per_ow.chunks_exact_mut(TILE_ROWS).enumerate() {
                        let row = &x[((sample * c + ci) * g.in_h + ih) * g.in_w..][..g.in_w];
                        for &(slot, iw) in pairs {
                            slots[slot] = row[iw];
                        }
                    }
                }
            }
            check_runs(runs, seen.len(), maps_per_block);
            let block_maps = |block: usize| &maps[block * maps_per_block..][..maps_per_block];
            let rows = (kw - group * TILE_ROWS).min(TILE_ROWS);
            // Blocks of output channels in pairs, which share the gathered values and the runs.
            for (pair, tiles) in out.chunks_mut(2 * TILE_LEN).enumerate() {
                let block = 2 * pair;
                // SAFETY: the runs were checked against `seen` and maps of this length.
                unsafe {
                    if tiles.len() == 2 * TILE_LEN {
                        let (tile0, tile1) = tiles.split_at_mut(TILE_LEN);
                        let maps = [block_maps(block), block_maps(block + 1)];
                        accumulate_two_blocks_unchecked(path, rows, seen, maps, runs, [tile0, tile1]);
                    } else {
                        accumulate_rows_unchecked(path, rows, seen, block_maps(block), runs, tiles);
                    }
                }
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
    use crate::cpu::conv::reference;

    /// The weight gradient on the tile gives the same bits on 1, 3 and 16 threads, where its
    /// kernel rows are whole, cut in two spans (of 2 and 1 columns) and cut column by column,
    /// on every SIMD path, and agrees with the reference.
    #[test]
    fn weight_grad_bits_do_not_depend_on_the_threads() {
        let g = ConvGeometry::conv2d([21, 17, 6, 5], [13, 17, 3, 3], (1, 2), (1, 1), (1, 1)).unwrap();
        let x: Vec<f32> = (0..21 * 17 * 30).map(|v| ((v * 37 % 101) as f32) / 7.3 - 6.0).collect();
        let gy: Vec<f32> = (0..21 * 13 * g.out_h * g.out_w)
            .map(|v| ((v * 11 % 53) as f32) / 3.1 - 8.0)
            .collect();
        let want = reference::conv2d_weight_grad(&g, &x, &gy);
        for path in SimdPath::supported() {
            let on = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| weight_grad_by_tiles(path, &g, &x, &gy))
            };
            let one = on(1);
            for (got, want) in one.iter().zip(&want) {
                assert!(
                    (got - want).abs() <= 1e-3 * want.abs().max(1.0),
                    "{path}: {got} against {want}"
                );
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
            for threads in [3, 16] {
                assert_eq!(bits(&on(threads)), bits(&one), "{path}: {threads} threads");
            }
        }
    }
}
