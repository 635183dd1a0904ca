//! conv2d's weight gradient of bf16 operands on the AMX tiles ([`super::tile_amx`]), or on
//! the `vdpbf16ps` register tile ([`super::tile_pairs`]) where that is the bf16 kernel.
//!
//! For one kernel tap, the gradient is a product `gw[o, c] = sum over (output pixel p, sample
//! n) of gy[n, o, p] * x[n, c, p']`, `p'` the input pixel that `p` reads through the tap: rows
//! output channels, columns input channels, the reduction over pixels and samples. The
//! samples are paired for `tdpbf16ps` and `vdpbf16ps`: the input is laid out as blocks of 16
//! channels, `[C / 16, pixel, pair of samples, 16 channels]` (AMX's `B`, and the 16 lanes of
//! the vector tile), and the maps as rows: for AMX `[O padded to 16, pixel, pair of samples]`
//! (`A` rows), for the vector tile `[O / 6, pixel, pair of samples, 6 rows]` (its weights).
//! One output pixel's samples are then one run in both operands, of `N / 2` pair steps, and a
//! tap on the padding is in no run. A task is a tap and a block of output channels (16 for
//! AMX, two tiles of 6 for the vector tile), and for the vector tile two blocks of 16 input
//! channels (summed in one pass, each map pair serving both); tasks run in parallel, each summing in its own tiles in an order fixed by the
//! geometry: reproducible bit for bit.
//!
//! The AMX tiles take whole 16-step chunks, so that path takes batches that are multiples of
//! 32; the vector tile takes even batches of layers with at least 6 output and 16 input
//! channels (it would waste most of its lanes on fewer). Other geometries, and processors with
//! neither, widen to the f32 kernels.

use super::bf16::{bits_as_f32, bits_as_f32_mut};
use super::scratch::Scratch;
use super::taps_inside_image;
use super::tile::{check_runs, Run, TILE_LEN, TILE_ROWS, TILE_SAMPLES};
use super::tile_amx::{accumulate_products, amx_available, runs_fit, AMX_BLOCK};
use super::tile_pairs::{
    accumulate_pairs_two_blocks_unchecked, accumulate_pairs_unchecked, bf16_pair, has_avx512_bf16, Bf16Pair,
    HalfFormat, PairKernel, PairWeights,
};
use crate::cpu::as_slots;
use crate::cpu::convert::{bf16_bits_from_f32, bf16_from_f32};
use crate::cpu::layout::{transpose_block, TRANSPOSE_BLOCK};
use crate::cpu::matmul::count_flops;
use crate::cpu::simd::active_path;
use crate::ConvGeometry;
use half::bf16;
use rayon::prelude::*;

/// Whether [`weight_grad_on_amx`] takes this geometry: AMX here, and a batch of whole
/// `tdpbf16ps` chunks of sample pairs.
pub(super) fn amx_takes(g: &ConvGeometry) -> bool {
    amx_available() && g.batch.is_multiple_of(2) && runs_fit(g.batch / 2)
}

/// `gw = conv2d_weight_grad(x, gy)` on the AMX tiles, summed in f32 and rounded once to bf16.
///
/// Panics unless [`amx_takes`] the geometry.
pub(super) fn weight_grad_on_amx(g: &ConvGeometry, x: &[bf16], gy: &[bf16]) -> Vec<bf16> {
    assert!(amx_takes(g), "conv2d_weight_grad: not an AMX geometry");
    let (n, o, c) = (g.batch, g.out_channels, g.in_channels);
    let (pix, image_pix, taps) = (g.out_h * g.out_w, g.in_h * g.in_w, g.kernel_h * g.kernel_w);
    assert!(
        x.len() >= n * c * image_pix && gy.len() >= n * o * pix,
        "conv2d_weight_grad: operands too short"
    );
    if pix == 0 || o * c * taps == 0 {
        return vec![bf16::ZERO; o * c * taps];
    }
    let pairs = n / 2;
    let (oblocks, cblocks) = (o.div_ceil(AMX_BLOCK), c.div_ceil(AMX_BLOCK));
    let maps = maps_as_rows(gy, n, o, pix);
    let inputs = inputs_as_blocks(x, n, c, image_pix);
    let (a_steps, b_block) = (pix * pairs, image_pix * pairs * TILE_SAMPLES);
    count_flops(2 * (taps_inside_image(g) * c * o * n) as u64);
    let tile = AMX_BLOCK * TILE_SAMPLES;
    // Tile `(tap * oblocks + ob) * cblocks + cb` sums gw[ob's 16 rows, cb's 16 columns, tap].
    let mut tiles = Scratch::<f32>::take(taps * oblocks * cblocks * tile);
    tiles
        .par_chunks_mut(cblocks * tile)
        .enumerate()
        .for_each_init(Vec::new, |runs: &mut Vec<Run>, (task, out)| {
            let (tap, ob) = (task / oblocks, task % oblocks);
            out.fill(0.0);
            tap_runs(g, tap, pairs, 1, runs);
            let a = &maps[ob * AMX_BLOCK * a_steps..][..AMX_BLOCK * a_steps];
            // SAFETY: `amx_takes` checked AMX (asserted above).
            unsafe { accumulate_products(a, a_steps, &inputs, b_block, runs, out) };
        });
    // gw[oc, ic, tap] is element (oc % 16, ic % 16) of tile ((tap * oblocks + oc / 16) *
    // cblocks + ic / 16), rounded to bf16.
    let mut gw = vec![bf16::ZERO; o * c * taps];
    gw.par_chunks_mut(c * taps).enumerate().for_each(|(oc, row)| {
        let (ob, r) = (oc / AMX_BLOCK, oc % AMX_BLOCK);
        for (i, v) in row.iter_mut().enumerate() {
            let (ic, tap) = (i / taps, i % taps);
            let at = ((tap * oblocks + ob) * cblocks + ic / AMX_BLOCK) * tile + r * TILE_SAMPLES + ic % AMX_BLOCK;
            *v = bf16::from_bits(bf16_bits_from_f32(tiles[at]));
        }
    });
    gw
}

/// The runs of one kernel tap into `runs`: per output pixel whose tap falls inside the image,
/// its `pairs` pair steps, in maps of `rows` pairs a step (`[pixel, pair, rows]`: 1 for AMX's
/// `A` rows, [`TILE_ROWS`] for the vector tile's weights) and in the input blocks (`[pixel,
/// pair, 16]`).
fn tap_runs(g: &ConvGeometry, tap: usize, pairs: usize, rows: usize, runs: &mut Vec<Run>) {
    let (ki, kj) = (tap / g.kernel_w, tap % g.kernel_w);
    runs.clear();
    for oh in 0..g.out_h {
        let ih = (oh * g.stride.0 + ki * g.dilation.0).checked_sub(g.padding.0);
        let Some(ih) = ih.filter(|&ih| ih < g.in_h) else {
            continue;
        };
        for ow in 0..g.out_w {
            let iw = (ow * g.stride.1 + kj * g.dilation.1).checked_sub(g.padding.1);
            if let Some(iw) = iw.filter(|&iw| iw < g.in_w) {
                runs.push(Run {
                    weights: (oh * g.out_w + ow) * pairs * rows,
                    inputs: (ih * g.in_w + iw) * pairs * TILE_SAMPLES,
                    len: pairs,
                });
            }
        }
    }
}

// The input blocks serve both kernels: AMX's `B` columns are the vector tile's lanes.
const _: () = assert!(AMX_BLOCK == TILE_SAMPLES);

/// Whether [`weight_grad_on_dot`] takes this geometry: AVX512_BF16 here, a batch of whole
/// sample pairs, and at least a tile of output channels and a block of input channels.
pub(super) fn dot_takes(g: &ConvGeometry) -> bool {
    has_avx512_bf16()
        && g.batch > 0
        && g.batch.is_multiple_of(2)
        && g.out_channels >= TILE_ROWS
        && g.in_channels >= TILE_SAMPLES
}

/// `gw = conv2d_weight_grad(x, gy)` on the `vdpbf16ps` tile, summed in f32 and rounded once
/// to bf16.
///
/// Panics unless [`dot_takes`] the geometry.
pub(super) fn weight_grad_on_dot(g: &ConvGeometry, x: &[bf16], gy: &[bf16]) -> Vec<bf16> {
    weight_grad_on_dot_by(2, g, x, gy)
}

/// [`weight_grad_on_dot`] with tasks of `blocks_per_task` blocks of input channels (1 or 2):
/// the same bits either way (the tests compare them).
fn weight_grad_on_dot_by(blocks_per_task: usize, g: &ConvGeometry, x: &[bf16], gy: &[bf16]) -> Vec<bf16> {
    assert!(
        matches!(blocks_per_task, 1 | 2),
        "conv2d_weight_grad: {blocks_per_task} blocks per task"
    );
    assert!(dot_takes(g), "conv2d_weight_grad: not a vdpbf16ps geometry");
    let (n, o, c) = (g.batch, g.out_channels, g.in_channels);
    let (pix, image_pix, taps) = (g.out_h * g.out_w, g.in_h * g.in_w, g.kernel_h * g.kernel_w);
    assert!(
        x.len() >= n * c * image_pix && gy.len() >= n * o * pix,
        "conv2d_weight_grad: operands too short"
    );
    if pix == 0 || image_pix == 0 || taps == 0 {
        return vec![bf16::ZERO; o * c * taps];
    }
    let pairs = n / 2;
    let (row_tiles, cblocks) = (o.div_ceil(TILE_ROWS), c.div_ceil(TILE_SAMPLES));
    // Tasks take the row tiles two at a time (12 sums per input load) over two blocks of input
    // channels (each map pair broadcast serves 2 x 12 sums).
    let tile_pairs = row_tiles.div_ceil(2);
    let maps = PairWeights::new(PairKernel::Dot, HalfFormat::Bf16, maps_as_row_tiles(gy, n, o, pix));
    let inputs = inputs_as_blocks(x, n, c, image_pix);
    let (tile_steps, block_len) = (pix * pairs * TILE_ROWS, image_pix * pairs * TILE_SAMPLES);
    count_flops(2 * (taps_inside_image(g) * c * o * n) as u64);
    // Tile pair `(tap * tile_pairs + tp) * cblocks + cb` sums gw[row tiles 2 tp and 2 tp + 1,
    // cb's 16 input channels, tap] into its two tiles. A task takes `blocks_per_task` blocks
    // of input channels (with two, the last of an odd count alone), neighbours in `sums`, and
    // sums them in one pass: each map pair broadcast serves both blocks.
    let mut sums = Scratch::<f32>::take(taps * tile_pairs * cblocks * 2 * TILE_LEN);
    let tasks = sums
        .par_chunks_mut(cblocks * 2 * TILE_LEN)
        .enumerate()
        .flat_map(|(rest, sums)| {
            sums.par_chunks_mut(blocks_per_task * 2 * TILE_LEN)
                .enumerate()
                .map(move |(task, out)| (rest, blocks_per_task * task, out))
        });
    tasks.for_each_init(Vec::new, |runs: &mut Vec<Run>, (rest, cb, out)| {
        let (tap, tp) = (rest / tile_pairs, rest % tile_pairs);
        tap_runs(g, tap, pairs, TILE_ROWS, runs);
        let block = |cb: usize| &inputs[cb * block_len..][..block_len];
        check_runs(runs, tile_steps, block_len);
        out.fill(0.0);
        let tile = 2 * tp;
        let rows = |tile: usize| TILE_ROWS.min(o - tile * TILE_ROWS);
        let second_tile = (tile + 1 < row_tiles).then(|| ((tile + 1) * tile_steps, rows(tile + 1)));
        let weights = (tile * tile_steps, tile_steps);
        // A tile pair's sums as its two tiles.
        fn tiles_of(out: &mut [f32]) -> [&mut [f32]; 2] {
            let (first, second) = out.split_at_mut(TILE_LEN);
            [first, second]
        }
        // SAFETY (both branches): the runs were checked against one tile of maps and a block
        // (every block is `block_len` long); both tiles lie inside the maps; `dot_takes`
        // checked AVX512_BF16.
        unsafe {
            if out.len() == 2 * 2 * TILE_LEN {
                let (first, second) = out.split_at_mut(2 * TILE_LEN);
                let out = [tiles_of(first), tiles_of(second)];
                let blocks = [block(cb), block(cb + 1)];
                accumulate_pairs_two_blocks_unchecked(
                    PairKernel::Dot,
                    rows(tile),
                    &maps,
                    weights,
                    second_tile,
                    blocks,
                    runs,
                    out,
                )
            } else {
                let out = tiles_of(out);
                accumulate_pairs_unchecked(
                    PairKernel::Dot,
                    rows(tile),
                    &maps,
                    weights,
                    second_tile,
                    block(cb),
                    runs,
                    out,
                )
            }
        };
    });
    // gw[oc, ic, tap] is row oc % 12 (of the two tiles) and lane ic % 16 of tile pair
    // ((tap * tile_pairs + oc / 12) * cblocks + ic / 16): gathered in f32 row by row (16
    // lanes read in order, written `taps` apart), then rounded to bf16 by the vector casts.
    let mut gw = Scratch::<f32>::take(o * c * taps);
    gw.par_chunks_mut(c * taps).enumerate().for_each(|(oc, row)| {
        let (tp, r) = (oc / (2 * TILE_ROWS), oc % (2 * TILE_ROWS));
        for tap in 0..taps {
            for cb in 0..cblocks {
                let task = (tap * tile_pairs + tp) * cblocks + cb;
                let lanes = &sums[task * 2 * TILE_LEN + r * TILE_SAMPLES..][..TILE_SAMPLES];
                for (lane, &v) in lanes.iter().take(c - cb * TILE_SAMPLES).enumerate() {
                    row[(cb * TILE_SAMPLES + lane) * taps + tap] = v;
                }
            }
        }
    });
    bf16_from_f32(&gw)
}

/// The maps `gy` `[N, O, P]` as the vector tile's weights: `[O / 6, P, N / 2, 6]` pairs of
/// samples (the rows past `O` zero).
fn maps_as_row_tiles(gy: &[bf16], n: usize, o: usize, pix: usize) -> Scratch<Bf16Pair> {
    let pairs = n / 2;
    let tile_len = pix * pairs * TILE_ROWS;
    let mut tiles = Scratch::take(o.div_ceil(TILE_ROWS) * tile_len);
    tiles.par_chunks_mut(tile_len).enumerate().for_each(|(t, tile)| {
        for r in 0..TILE_ROWS {
            let oc = t * TILE_ROWS + r;
            for j in 0..pairs {
                for p in 0..pix {
                    tile[(p * pairs + j) * TILE_ROWS + r] = if oc < o {
                        let first = gy[((2 * j) * o + oc) * pix + p];
                        let second = gy[((2 * j + 1) * o + oc) * pix + p];
                        bf16_pair(first.to_bits(), second.to_bits())
                    } else {
                        0
                    };
                }
            }
        }
    });
    tiles
}

/// The maps `gy` `[N, O, P]` as `A` rows: `[O padded to 16, P, N / 2]` pairs of samples (the
/// padding rows zero).
fn maps_as_rows(gy: &[bf16], n: usize, o: usize, pix: usize) -> Scratch<Bf16Pair> {
    let pairs = n / 2;
    let mut rows = Scratch::take(o.div_ceil(AMX_BLOCK) * AMX_BLOCK * pix * pairs);
    rows.par_chunks_mut(pix * pairs).enumerate().for_each(|(oc, row)| {
        if oc >= o {
            row.fill(0);
            return;
        }
        for j in 0..pairs {
            let first = &gy[((2 * j) * o + oc) * pix..][..pix];
            let second = &gy[((2 * j + 1) * o + oc) * pix..][..pix];
            for (p, (a, b)) in first.iter().zip(second).enumerate() {
                row[p * pairs + j] = bf16_pair(a.to_bits(), b.to_bits());
            }
        }
    });
    rows
}

/// The input `x` `[N, C, P]` as `B` blocks: `[C / 16, P, N / 2, 16]` pairs of samples (the
/// channels past `C` zero). Per block and pair of samples, the 16 channels are paired along
/// whole rows of pixels (`[16, P]`, contiguous reads), then turned to `[P, 16]` by the 8x8
/// block transposes of f32 (on the pairs' bits, which they only move).
fn inputs_as_blocks(x: &[bf16], n: usize, c: usize, image_pix: usize) -> Scratch<Bf16Pair> {
    let pairs = n / 2;
    let block_len = image_pix * pairs * TILE_SAMPLES;
    let mut blocks = Scratch::take(c.div_ceil(AMX_BLOCK) * block_len);
    let path = active_path();
    blocks
        .par_chunks_mut(block_len)
        .enumerate()
        .for_each_init(Vec::new, |rows: &mut Vec<Bf16Pair>, (cb, block)| {
            rows.resize(AMX_BLOCK * image_pix, 0);
            // SAFETY: the transposes below write values of `rows`, nothing uninitialised.
            let block = unsafe { as_slots(bits_as_f32_mut(block)) };
            for j in 0..pairs {
                for (lane, row) in rows.chunks_exact_mut(image_pix).enumerate() {
                    let ic = cb * AMX_BLOCK + lane;
                    if ic >= c {
                        row.fill(0);
                        continue;
                    }
                    let first = &x[((2 * j) * c + ic) * image_pix..][..image_pix];
                    let second = &x[((2 * j + 1) * c + ic) * image_pix..][..image_pix];
                    for ((r, a), b) in row.iter_mut().zip(first).zip(second) {
                        *r = bf16_pair(a.to_bits(), b.to_bits());
                    }
                }
                let rows = bits_as_f32(rows);
                for p0 in (0..image_pix).step_by(TRANSPOSE_BLOCK) {
                    let cols = TRANSPOSE_BLOCK.min(image_pix - p0);
                    for l0 in (0..AMX_BLOCK).step_by(TRANSPOSE_BLOCK) {
                        let dst = &mut block[(p0 * pairs + j) * TILE_SAMPLES + l0..];
                        transpose_block(
                            path,
                            &rows[l0 * image_pix + p0..],
                            image_pix,
                            TRANSPOSE_BLOCK,
                            cols,
                            dst,
                            pairs * TILE_SAMPLES,
                        );
                    }
                }
            }
        });
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::conv::reference;

    /// (batch, in, out, h, w, kernel, stride, padding, dilation).
    type Layer = (usize, usize, usize, usize, usize, usize, usize, usize, usize);

    /// `weight_grad` against the f64 reference on the same bf16 values over `geometries`
    /// (batch, in, out, h, w, kernel, stride, padding, dilation): within the output's rounding
    /// to bf16.
    fn check_against_reference(weight_grad: fn(&ConvGeometry, &[bf16], &[bf16]) -> Vec<bf16>, geometries: &[Layer]) {
        let mut state = 11u64;
        let mut values = |len: usize| -> Vec<bf16> {
            (0..len)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    bf16::from_f32((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0)
                })
                .collect()
        };
        for &(n, c, o, h, w, k, s, p, d) in geometries {
            let g = ConvGeometry::conv2d([n, c, h, w], [o, c, k, k], (s, s), (p, p), (d, d)).unwrap();
            let x = values(n * c * h * w);
            let gy = values(n * o * g.out_h * g.out_w);
            let f64s = |v: &[bf16]| v.iter().map(|x| x.to_f64()).collect::<Vec<f64>>();
            let want = reference::conv2d_weight_grad(&g, &f64s(&x), &f64s(&gy));
            let got = weight_grad(&g, &x, &gy);
            assert_eq!(got.len(), want.len());
            for (i, (got, want)) in got.iter().zip(&want).enumerate() {
                let tolerance = 2f64.powi(-8) * want.abs() + 1e-4;
                assert!(
                    (got.to_f64() - want).abs() <= tolerance,
                    "{g:?}: element {i}: {got} against {want}"
                );
            }
        }
    }

    #[test]
    fn amx_weight_grad_matches_the_reference() {
        let probe = ConvGeometry::conv2d([32, 1, 4, 4], [1, 1, 3, 3], (1, 1), (1, 1), (1, 1)).unwrap();
        if !amx_takes(&probe) {
            eprintln!("skipped: this processor (or its kernel) has no AMX-BF16");
            return;
        }
        check_against_reference(
            weight_grad_on_amx,
            &[
                (32, 1, 7, 9, 8, 5, 2, 2, 1),
                (64, 17, 33, 7, 7, 5, 2, 2, 1),
                (32, 64, 70, 5, 6, 3, 1, 1, 2),
            ],
        );
    }

    /// The vector tile on odd channel counts (a last row tile of 1 to 5 rows, an odd count of
    /// row tiles, a last block of input channels part padding), batches of 1 to 35 pairs,
    /// stride, padding and dilation.
    #[test]
    fn dot_weight_grad_matches_the_reference() {
        if !has_avx512_bf16() {
            eprintln!("skipped: this processor has no AVX512_BF16");
            return;
        }
        check_against_reference(
            weight_grad_on_dot,
            &[
                (2, 16, 6, 4, 5, 3, 1, 0, 1),
                (70, 17, 33, 7, 7, 5, 2, 2, 1),
                (10, 64, 70, 5, 6, 3, 1, 1, 2),
                (6, 35, 13, 8, 7, 5, 3, 2, 1),
            ],
        );
    }

    /// Two blocks of input channels per task give the bits of one: input channels in three
    /// blocks (16 + 16 + 1: a pair and a single), output channels in three row tiles (6 + 6 +
    /// 1: a pair of tiles and a single).
    #[test]
    fn dot_weight_grad_gives_the_same_bits_by_pairs_of_blocks() {
        if !has_avx512_bf16() {
            eprintln!("skipped: this processor has no AVX512_BF16");
            return;
        }
        let g = ConvGeometry::conv2d([6, 33, 7, 6], [13, 33, 3, 3], (1, 1), (1, 1), (1, 1)).unwrap();
        let values = |len: usize, seed: usize| -> Vec<bf16> {
            (0..len)
                .map(|i| bf16::from_f32((((i + seed) * 2654435761) % 1021) as f32 / 511.0 - 1.0))
                .collect()
        };
        let (x, gy) = (values(6 * 33 * 7 * 6, 3), values(6 * 13 * 7 * 6, 5));
        let bits = |v: Vec<bf16>| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(weight_grad_on_dot_by(2, &g, &x, &gy)),
            bits(weight_grad_on_dot_by(1, &g, &x, &gy))
        );
    }

    #[test]
    fn dot_takes_even_batches_of_wide_layers_only() {
        let geometry = |n, c, o| ConvGeometry::conv2d([n, c, 7, 7], [o, c, 5, 5], (2, 2), (2, 2), (1, 1)).unwrap();
        assert_eq!(dot_takes(&geometry(64, 64, 128)), has_avx512_bf16());
        assert!(!dot_takes(&geometry(63, 64, 128)));
        assert!(!dot_takes(&geometry(64, 1, 64)));
        assert!(!dot_takes(&geometry(64, 64, 5)));
    }
}
