//! The weights of the 16-bit convolutions ([`super::bf16`]) packed in pairs of reduced
//! channels for their kernels: by tiles of [`TILE_ROWS`] rows for the vector kernels
//! ([`pack_weight_pairs`]), row by row for AMX ([`pack_weight_rows`]). The weights change at
//! every step, so this runs at every convolution call: a pure data movement, by groups of
//! reduced channels as the f32 tile's `pack_weights`, and through block transposes in
//! registers.

use super::bf16::HalfFloat;
use super::scratch::Scratch;
use super::tile::TILE_ROWS;
use super::tile_amx::AMX_BLOCK;
use super::tile_pairs::{bf16_pair, Bf16Pair};
use crate::cpu::layout::{transpose_block_unchecked, InRegisters, TRANSPOSE_BLOCK};
use crate::cpu::simd::{active_path, dispatch, F32Simd, SimdKernel};
use crate::ConvGeometry;
use rayon::prelude::*;

/// Pairs of reduced channels that [`pack_weight_pairs`] packs at a time: each tap's
/// `PAIR_GROUP * TILE_ROWS` pairs are 384 bytes, six whole cache lines.
const PAIR_GROUP: usize = 16;

/// The weights `[O, C, taps]` seen as tile rows by pairs of reduced channels: with
/// `rows_are_outputs` the rows are the output channels and the pairs the input channels (the
/// forward pass); without, the other way round (the adjoint).
#[derive(Clone, Copy)]
struct WeightPairs<'a, T> {
    w: &'a [T],
    rows: usize,
    reduced: usize,
    taps: usize,
    /// Where weight (row, reduced channel `red`, tap) lies in `w`: at `row * row_stride + red
    /// * reduced_stride + tap`.
    row_stride: usize,
    reduced_stride: usize,
}

impl<'a, T: HalfFloat> WeightPairs<'a, T> {
    fn new(g: &ConvGeometry, w: &'a [T], rows_are_outputs: bool) -> WeightPairs<'a, T> {
        let (o, c, taps) = (g.out_channels, g.in_channels, g.kernel_h * g.kernel_w);
        assert!(w.len() >= o * c * taps, "conv2d: weights too short");
        let (rows, reduced, row_stride, reduced_stride) = if rows_are_outputs {
            (o, c, c * taps, taps)
        } else {
            (c, o, taps, c * taps)
        };
        WeightPairs {
            w,
            rows,
            reduced,
            taps,
            row_stride,
            reduced_stride,
        }
    }

    /// Pairs of reduced channels (an odd count padded with a zero channel).
    fn pairs(&self) -> usize {
        self.reduced.div_ceil(2)
    }

    /// The pairs of reduced channels `2j` and `2j + 1` of `row` tap by tap into `out` (`taps`
    /// long), the second zero past an odd count: both are runs of `taps` in `w`.
    #[inline(always)]
    fn pair_taps(&self, row: usize, j: usize, out: &mut [Bf16Pair]) {
        let start = row * self.row_stride + 2 * j * self.reduced_stride;
        let first = &self.w[start..][..self.taps];
        if 2 * j + 1 < self.reduced {
            let second = &self.w[start + self.reduced_stride..][..self.taps];
            for ((out, a), b) in out.iter_mut().zip(first).zip(second) {
                *out = bf16_pair(a.bits(), b.bits());
            }
        } else {
            for (out, a) in out.iter_mut().zip(first) {
                *out = bf16_pair(a.bits(), 0);
            }
        }
    }
}

/// Weights packed in pairs by tiles of [`TILE_ROWS`] rows for the vector kernels: `[tiles,
/// taps, pairs, TILE_ROWS]`, zero past the last row.
pub(super) fn pack_weight_pairs<T: HalfFloat>(g: &ConvGeometry, w: &[T], rows_are_outputs: bool) -> Scratch<Bf16Pair> {
    let weights = WeightPairs::new(g, w, rows_are_outputs);
    let (taps, pairs) = (weights.taps, weights.pairs());
    let tile_len = taps * pairs * TILE_ROWS;
    let mut packed = Scratch::take(weights.rows.div_ceil(TILE_ROWS) * tile_len);
    if packed.is_empty() {
        return packed;
    }
    let path = active_path();
    // A work array per rayon job, not per tile: each takes the pool's lock.
    packed.par_chunks_mut(tile_len).enumerate().for_each_init(
        || Scratch::take(PAIR_GROUP * TILE_ROWS * taps),
        |paired, (tile, packed)| {
            dispatch(
                path,
                PackTile {
                    weights,
                    tile,
                    paired: &mut paired[..],
                    packed,
                },
            )
        },
    );
    packed
}

/// One tile of [`pack_weight_pairs`], by groups of [`PAIR_GROUP`] pairs: the group's pairs
/// formed (pair, row) by (pair, row), each a run of `taps` (`paired`: `[pair, row, tap]`),
/// then written out transposed, `[tap, pair, row]`, by 8x8 block transposes in registers of
/// the pairs' bits. Each tap's `PAIR_GROUP * TILE_ROWS` pairs are one contiguous run of whole
/// cache lines. (Element by element, with two 16-bit reads from scattered runs per pair, this
/// took six times as long as copying the packed weights.)
struct PackTile<'a, T> {
    weights: WeightPairs<'a, T>,
    tile: usize,
    /// Room for a group's pairs: `PAIR_GROUP * TILE_ROWS * taps`.
    paired: &'a mut [Bf16Pair],
    /// The tile's packed weights, `[taps, pairs, TILE_ROWS]`.
    packed: &'a mut [Bf16Pair],
}

impl<T: HalfFloat> SimdKernel for PackTile<'_, T> {
    type Output = ();

    #[inline(always)]
    unsafe fn run<S: F32Simd>(self) {
        let PackTile {
            weights,
            tile,
            paired,
            packed,
        } = self;
        let (taps, pairs) = (weights.taps, weights.pairs());
        let line = pairs * TILE_ROWS;
        assert!(
            packed.len() == taps * line && paired.len() >= PAIR_GROUP * TILE_ROWS * taps,
            "pack_weight_pairs: a tile of {} for {taps} x {pairs} pairs",
            packed.len()
        );
        let first_row = tile * TILE_ROWS;
        let filled = (weights.rows - first_row).min(TILE_ROWS);
        // The transposes move the pairs as f32 of the same bits.
        let packed = packed.as_mut_ptr() as *mut f32;
        for group in (0..pairs).step_by(PAIR_GROUP) {
            // The group's (pair, row)s: `lines` runs of `taps`.
            let lines = PAIR_GROUP.min(pairs - group) * TILE_ROWS;
            for (i, run) in paired.chunks_exact_mut(taps).take(lines).enumerate() {
                let (j, k) = (group + i / TILE_ROWS, i % TILE_ROWS);
                if k < filled {
                    weights.pair_taps(first_row + k, j, run);
                } else {
                    run.fill(0);
                }
            }
            // Taps outermost: each tap's run is written whole, block after block.
            for t0 in (0..taps).step_by(TRANSPOSE_BLOCK) {
                for i0 in (0..lines).step_by(TRANSPOSE_BLOCK) {
                    // SAFETY: the block of lines `i0..` and taps `t0..` (at most 8 of each)
                    // lies inside the `lines * taps` pairs of `paired`, and its transpose, taps
                    // `t0..` of `line` pairs each from pair `group * TILE_ROWS + i0` on,
                    // inside the `taps * line` of `packed` (asserted above); `dispatch`
                    // compiled this for S. (f32 and u32 have the same size and alignment.)
                    unsafe {
                        transpose_block_unchecked::<f32, InRegisters<S>>(
                            (paired.as_ptr() as *const f32).add(i0 * taps + t0),
                            taps,
                            TRANSPOSE_BLOCK.min(lines - i0),
                            TRANSPOSE_BLOCK.min(taps - t0),
                            packed.add(t0 * line + group * TILE_ROWS + i0),
                            line,
                        )
                    };
                }
            }
        }
    }
}

/// Weights packed in pairs row by row for the AMX tile: `[rows padded to 16, steps]`, `steps`
/// = `taps * pairs`, step `tap * pairs + j` of a row its pair `j` at `tap`, zero past the last
/// row. Returns the weights and `steps`.
pub(super) fn pack_weight_rows<T: HalfFloat>(
    g: &ConvGeometry,
    w: &[T],
    rows_are_outputs: bool,
) -> (Scratch<Bf16Pair>, usize) {
    let weights = WeightPairs::new(g, w, rows_are_outputs);
    let (rows, taps, pairs) = (weights.rows, weights.taps, weights.pairs());
    let steps = taps * pairs;
    let mut packed = Scratch::take(rows.div_ceil(AMX_BLOCK) * AMX_BLOCK * steps);
    if packed.is_empty() {
        return (packed, steps);
    }
    // Row by row in parallel: the row's pairs formed pair by pair, `[pairs, taps]`, then
    // written out transposed.
    packed.par_chunks_mut(steps).enumerate().for_each_init(
        || Scratch::take(steps),
        |paired, (row, packed)| {
            if row >= rows {
                packed.fill(0);
                return;
            }
            for (j, run) in paired.chunks_exact_mut(taps).enumerate() {
                weights.pair_taps(row, j, run);
            }
            for (tap, packed) in packed.chunks_exact_mut(pairs).enumerate() {
                for (j, packed) in packed.iter_mut().enumerate() {
                    *packed = paired[j * taps + tap];
                }
            }
        },
    );
    (packed, steps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    /// Weight (row, reduced channel, tap)'s bits, zero past the last row or reduced channel:
    /// plain indexing of `[O, C, taps]`, what both packings are checked against.
    fn weight_bits<T: HalfFloat>(
        g: &ConvGeometry,
        w: &[T],
        rows_are_outputs: bool,
        row: usize,
        red: usize,
        tap: usize,
    ) -> u16 {
        let (o, c, taps) = (g.out_channels, g.in_channels, g.kernel_h * g.kernel_w);
        let (rows, reduced) = if rows_are_outputs { (o, c) } else { (c, o) };
        if row >= rows || red >= reduced {
            return 0;
        }
        let (oc, ic) = if rows_are_outputs { (row, red) } else { (red, row) };
        w[(oc * c + ic) * taps + tap].bits()
    }

    /// Leaves a pooled buffer of nonzero bits, so that a slot the packing skipped (rather than
    /// zeroed) shows.
    fn dirty_the_pool(len: usize) {
        let mut dirty = Scratch::<Bf16Pair>::take(len);
        dirty.fill(0xdead_beef);
    }

    /// Both packings give the bits of plain indexing, in both directions, on odd sizes: an odd
    /// count of reduced channels (the zero-padded pair), rows not a multiple of the tiles',
    /// more pairs than a group (and a partial group), a single tap.
    fn check_packings<T: HalfFloat>(value: impl Fn(usize) -> T) {
        // (out channels, in channels, kernel_h, kernel_w)
        for (o, c, kh, kw) in [
            (13, 7, 3, 2),
            (5, 33, 5, 5),
            (40, 17, 1, 1),
            (14, 37, 2, 3),
            (32, 64, 5, 5),
        ] {
            let g = ConvGeometry::conv2d([2, c, 8, 8], [o, c, kh, kw], (1, 1), (0, 0), (1, 1)).unwrap();
            let taps = kh * kw;
            let w: Vec<T> = (0..o * c * taps).map(&value).collect();
            for rows_are_outputs in [true, false] {
                let (rows, reduced) = if rows_are_outputs { (o, c) } else { (c, o) };
                let pairs = reduced.div_ceil(2);
                let bits = |row, j: usize, tap| {
                    bf16_pair(
                        weight_bits(&g, &w, rows_are_outputs, row, 2 * j, tap),
                        weight_bits(&g, &w, rows_are_outputs, row, 2 * j + 1, tap),
                    )
                };
                let what = format!("{o} x {c} x {kh} x {kw}, rows_are_outputs {rows_are_outputs}");

                let tiles = rows.div_ceil(TILE_ROWS);
                let mut want = Vec::new();
                for tile in 0..tiles {
                    for tap in 0..taps {
                        for j in 0..pairs {
                            for k in 0..TILE_ROWS {
                                want.push(bits(tile * TILE_ROWS + k, j, tap));
                            }
                        }
                    }
                }
                dirty_the_pool(want.len());
                assert!(
                    *pack_weight_pairs(&g, &w, rows_are_outputs) == want[..],
                    "pack_weight_pairs: {what}"
                );

                let mut want = Vec::new();
                for row in 0..rows.div_ceil(AMX_BLOCK) * AMX_BLOCK {
                    for tap in 0..taps {
                        for j in 0..pairs {
                            want.push(bits(row, j, tap));
                        }
                    }
                }
                dirty_the_pool(want.len());
                let (packed, steps) = pack_weight_rows(&g, &w, rows_are_outputs);
                assert_eq!(steps, taps * pairs, "pack_weight_rows: {what}");
                assert!(*packed == want[..], "pack_weight_rows: {what}");
            }
        }
    }

    #[test]
    fn packings_give_the_bits_of_plain_indexing() {
        // Distinct nonzero bits for every weight (none of them a zero that padding could fake).
        check_packings(|i| bf16::from_bits(1 + (i % 0xfffe) as u16));
        check_packings(|i| f16::from_bits(1 + (i % 0xfffe) as u16));
    }
}
