//! The tile layout of one chunk of samples: `[S, channels, pixels]` (a batch's images or maps,
//! `S <= TILE_SAMPLES`) as `[pixels, channels, TILE_SAMPLES]`, where the register tile
//! ([`super::tile`]) reads a step's samples as one vector, and back. Both ways by 8x8 block
//! transposes, in registers for f32. And the weights packed by tiles of rows for the tile
//! ([`pack_weights`]).

use super::scratch::Scratch;
use super::tile::{TILE_ROWS, TILE_SAMPLES};
use crate::cpu::layout::{transpose_block_unchecked, ByElement, InRegisters, Transpose8x8, TRANSPOSE_BLOCK};
use crate::cpu::simd::{dispatch, F32Simd, SimdKernel, SimdPath};
use crate::cpu::{as_f32, as_f32_slots, as_slots};
use crate::{ConvGeometry, Element};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Samples `[S, C, P]` (`S <= TILE_SAMPLES`) as `out` `[P, C, TILE_SAMPLES]`, the missing
/// samples zero.
pub(super) fn to_tile_layout<T: Element>(path: SimdPath, x: &[T], channels: usize, pixels: usize, out: &mut [T]) {
    to_tile_layout_band(path, x, channels, pixels, 0, out)
}

/// A band of [`to_tile_layout`]'s output: pixels `first_pixel..` of `[S, C, P]`, as many as
/// `out` holds (`out.len() / (C * TILE_SAMPLES)`), as `out` `[band pixels, C, TILE_SAMPLES]`,
/// which is that part of the whole layout. The frame lays a chunk out by bands in parallel,
/// so that a call has more tasks than chunks. A band that starts on a multiple of
/// [`TILE_SAMPLES`] pixels goes by the same blocks as the whole.
pub(super) fn to_tile_layout_band<T: Element>(
    path: SimdPath,
    x: &[T],
    channels: usize,
    pixels: usize,
    first_pixel: usize,
    out: &mut [T],
) {
    let samples = x.len() / (channels * pixels).max(1);
    let band_pixels = out.len() / (channels * TILE_SAMPLES).max(1);
    if samples < TILE_SAMPLES {
        out.fill(T::ZERO);
    }
    assert!(
        samples <= TILE_SAMPLES && first_pixel + band_pixels <= pixels,
        "to_tile_layout: {samples} samples of {channels} x {pixels}, pixels {first_pixel}.. into {}",
        out.len()
    );
    let layout = TileLayout {
        samples,
        channels,
        pixels: band_pixels,
        padded: channels,
        out_row: pixels,
    };
    let (x, row_left) = (&x[first_pixel.min(x.len())..], pixels - first_pixel);
    // SAFETY: the transposes below write values of `x`, nothing uninitialised; the blocks lie
    // inside both slices (the bounds asserted above: `x` from the band's first pixel holds
    // `(samples * channels - 1) * pixels + band_pixels` values).
    unsafe {
        let out = as_slots(&mut out[..band_pixels * channels * TILE_SAMPLES]);
        match as_f32(x) {
            Some(x) => {
                let out = as_f32_slots(out).expect("f32 slots when the input is f32");
                dispatch(
                    path,
                    ToTileLayout {
                        layout,
                        x,
                        row_left,
                        out,
                    },
                )
            }
            None => layout.into_tiles::<T, ByElement>(x, row_left, out),
        }
    }
}

/// The inverse of [`to_tile_layout`] for the first `channels` of `padded` channels: `[P,
/// padded, TILE_SAMPLES]` into `out` `[S, channels, P]`, every element of which it writes.
pub(super) fn from_tile_layout<T: Element>(
    path: SimdPath,
    t: &[T],
    channels: usize,
    padded: usize,
    pixels: usize,
    out: &mut [MaybeUninit<T>],
) {
    let samples = out.len() / (channels * pixels).max(1);
    assert!(
        samples <= TILE_SAMPLES && channels <= padded && t.len() >= pixels * padded * TILE_SAMPLES,
        "from_tile_layout: {samples} samples of {channels} x {pixels} from {}",
        t.len()
    );
    // SAFETY: `out` holds `samples * channels * pixels` slots, rows of `pixels` from its start,
    // and nothing else writes to it meanwhile (it is borrowed mutably).
    unsafe { band_from_tile_layout(path, t, channels, padded, pixels, samples, out.as_mut_ptr(), pixels) }
}

/// [`from_tile_layout`] for a band of `band_pixels` consecutive pixels of maps whose rows are
/// `out_pixels` long: `t` `[band_pixels, padded, TILE_SAMPLES]` into the `samples * channels`
/// rows of `out`, `band_pixels` values of each, from `out` on (which points at the band's
/// first pixel in the first row). The tile frame writes each band back as soon as its sums
/// are done, while they are in cache, into the bands of the other tasks' rows.
///
/// # Safety
/// `out` points at `(samples * channels - 1) * out_pixels + band_pixels` slots (rows
/// `out_pixels` apart), which nothing else reads or writes meanwhile, and `t` holds
/// `band_pixels * padded * TILE_SAMPLES` values; `samples <= TILE_SAMPLES`, `channels <=
/// padded`, `band_pixels <= out_pixels`.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn band_from_tile_layout<T: Element>(
    path: SimdPath,
    t: &[T],
    channels: usize,
    padded: usize,
    band_pixels: usize,
    samples: usize,
    out: *mut MaybeUninit<T>,
    out_pixels: usize,
) {
    debug_assert!(samples <= TILE_SAMPLES && channels <= padded && band_pixels <= out_pixels);
    debug_assert!(t.len() >= band_pixels * padded * TILE_SAMPLES);
    let layout = TileLayout {
        samples,
        channels,
        pixels: band_pixels,
        padded,
        out_row: out_pixels,
    };
    // SAFETY: the blocks lie inside `t` and the rows at `out` (the caller's contract).
    unsafe {
        match as_f32(t) {
            Some(t) => dispatch(
                path,
                FromTileLayout {
                    layout,
                    t,
                    out: out as *mut f32,
                },
            ),
            None => layout.tiles_back::<T, ByElement>(t, out as *mut T),
        }
    }
}

/// Reduced channels that [`pack_weights`] packs at a time.
const PACK_GROUP: usize = 16;

/// Weights `[O, C, taps]` packed by tiles of [`TILE_ROWS`] rows, `[tiles, taps, reduced,
/// TILE_ROWS]`, zero past the last row. With `rows_are_outputs` the tile rows are the output
/// channels and the reduction runs over the input channels (conv2d's forward pass); without,
/// the other way round (its adjoint).
pub(super) fn pack_weights<T: Element>(g: &ConvGeometry, w: &[T], rows_are_outputs: bool) -> Scratch<T> {
    let (o, c, taps) = (g.out_channels, g.in_channels, g.kernel_h * g.kernel_w);
    let (rows, reduced) = if rows_are_outputs { (o, c) } else { (c, o) };
    // Where weight (row, reduced channel, tap) lies in `w`: `row * row_stride + red *
    // reduced_stride + tap`.
    let (row_stride, reduced_stride) = if rows_are_outputs {
        (c * taps, taps)
    } else {
        (taps, c * taps)
    };
    let tiles = rows.div_ceil(TILE_ROWS);
    let tile_len = taps * reduced * TILE_ROWS;
    let mut packed = Scratch::take(tiles * tile_len);
    if packed.is_empty() {
        return packed;
    }
    assert!(
        w.len() >= o * c * taps,
        "pack_weights: {} weights for {o} x {c} x {taps}",
        w.len()
    );
    // Tile by tile in parallel, and in each tile by groups of `PACK_GROUP` reduced channels:
    // the group's weights (`TILE_ROWS` runs of `taps` per channel) stay in L1 while they are
    // written out tap by tap, each tap's `PACK_GROUP * TILE_ROWS` values one contiguous run of
    // whole cache lines. (Channel by channel, every channel wrote `taps` pieces of 24 bytes
    // a tap apart, which with 256 reduced channels fall on the same few cache sets.) Through
    // pointers: the indexed loop's bounds checks cost more than the copy.
    packed.par_chunks_mut(tile_len).enumerate().for_each(|(tile, packed)| {
        let filled = (rows - tile * TILE_ROWS).min(TILE_ROWS);
        let src = w[tile * TILE_ROWS * row_stride..].as_ptr();
        let dst = packed.as_mut_ptr();
        for group in (0..reduced).step_by(PACK_GROUP) {
            let group_end = (group + PACK_GROUP).min(reduced);
            for tap in 0..taps {
                for red in group..group_end {
                    // SAFETY: weight (tile * TILE_ROWS + k, red, tap) for k < filled, red <
                    // reduced and tap < taps is inside `w`, which holds `o * c * taps`
                    // (asserted above); element (tap, red, k) for k < TILE_ROWS is inside this
                    // tile's `tile_len`.
                    unsafe {
                        let s = src.add(red * reduced_stride + tap);
                        let d = dst.add((tap * reduced + red) * TILE_ROWS);
                        if filled == TILE_ROWS {
                            for k in 0..TILE_ROWS {
                                *d.add(k) = *s.add(k * row_stride);
                            }
                        } else {
                            for k in 0..TILE_ROWS {
                                *d.add(k) = if k < filled { *s.add(k * row_stride) } else { T::ZERO };
                            }
                        }
                    }
                }
            }
        }
    });
    packed
}

/// One chunk's layout change between `[S, channels, P]` and the tile layout `[P, padded,
/// TILE_SAMPLES]`, written once over the block transpose `X`.
#[derive(Clone, Copy)]
struct TileLayout {
    samples: usize,
    channels: usize,
    pixels: usize,
    padded: usize,
    /// The length of a row (one sample's channel) of the `[S, channels, P]` side: `pixels`,
    /// or more when [`TileLayout::tiles_back`] writes a band of the pixels.
    out_row: usize,
}

impl TileLayout {
    /// `[S, channels, P]` to `[P, channels, TILE_SAMPLES]` (`padded` is `channels` here), for
    /// a band of `pixels` pixels of rows `out_row` long, `x` from the band's first pixel,
    /// `row_left` pixels from there to the end of its row.
    ///
    /// # Safety
    /// `x` holds `(samples * channels - 1) * out_row + pixels` values and `out` `pixels *
    /// channels * TILE_SAMPLES` slots.
    #[inline(always)]
    unsafe fn into_tiles<T: Copy, X: Transpose8x8<T>>(self, x: &[T], row_left: usize, out: &mut [MaybeUninit<T>]) {
        let TileLayout {
            samples,
            channels,
            pixels,
            out_row: row,
            ..
        } = self;
        let (x, out) = (x.as_ptr(), out.as_mut_ptr() as *mut T);
        // Pixels outermost, samples innermost: each (pixel, channel) line of the output is
        // written whole at once. (With the channels a power of two, a pixel's lines are a
        // multiple of 4 KiB apart and share cache sets, so lines left half-written would be
        // evicted before their second half comes; channels outermost, which reads the source
        // in order, ran 1.5x slower in a WGAN step for that reason.)
        //
        // A full chunk's whole blocks of 16 pixels go by 16x16 blocks: on AVX-512 each line
        // of the output is one store. Each (sample, channel) row of the source is visited once
        // a block, with every other row of the chunk between two visits: more rows than any
        // prefetcher follows, so every line would be a demand miss (the source was just
        // written by the op before, and is out of L2). The lines `READ_AHEAD` pixels on are
        // prefetched instead. In a WGAN step on the Intel Xeon, both together took the
        // lay-out of critic conv2's input (64 channels of 14x14) from 1.1 to 0.65 ns an
        // element (docs/benchmarks/intel-xeon.md).
        const READ_AHEAD: usize = 32;
        let mut whole = 0;
        if samples == TILE_SAMPLES && TILE_SAMPLES == 2 * TRANSPOSE_BLOCK {
            whole = pixels - pixels % TILE_SAMPLES;
            for p0 in (0..whole).step_by(TILE_SAMPLES) {
                for c in 0..channels {
                    // Up to the end of the row, past the band's (its lines start the next
                    // band's).
                    if p0 + READ_AHEAD < row_left {
                        for s in 0..TILE_SAMPLES {
                            let source_row = x.wrapping_add((s * channels + c) * row);
                            X::prefetch(source_row.wrapping_add(p0 + READ_AHEAD));
                        }
                    }
                    // SAFETY: a 16x16 block inside both buffers, by the caller's contract.
                    unsafe {
                        X::transpose_16x16(
                            x.add(c * row + p0),
                            channels * row,
                            out.add((p0 * channels + c) * TILE_SAMPLES),
                            channels * TILE_SAMPLES,
                        )
                    };
                }
            }
        }
        // The rest (a partial chunk, the pixels past the last whole block) by 8x8 blocks.
        for p0 in (whole..pixels).step_by(TRANSPOSE_BLOCK) {
            let cols = TRANSPOSE_BLOCK.min(pixels - p0);
            for c in 0..channels {
                for s0 in (0..samples).step_by(TRANSPOSE_BLOCK) {
                    // SAFETY: inside both buffers, by the caller's contract.
                    unsafe {
                        transpose_block_unchecked::<T, X>(
                            x.add((s0 * channels + c) * row + p0),
                            channels * row,
                            TRANSPOSE_BLOCK.min(samples - s0),
                            cols,
                            out.add((p0 * channels + c) * TILE_SAMPLES + s0),
                            channels * TILE_SAMPLES,
                        )
                    };
                }
            }
        }
    }

    /// `[P, padded, TILE_SAMPLES]` to `[S, channels, P]`, rows `out_row` apart.
    ///
    /// # Safety
    /// `t` holds `pixels * padded * TILE_SAMPLES` values and `out` points at `(samples *
    /// channels - 1) * out_row + pixels` writable values.
    #[inline(always)]
    unsafe fn tiles_back<T: Copy, X: Transpose8x8<T>>(self, t: &[T], out: *mut T) {
        let TileLayout {
            samples,
            channels,
            pixels,
            padded,
            out_row,
        } = self;
        let t = t.as_ptr();
        // Channel by channel, and in each, 8 samples by 8 samples, every pixel of the band: each
        // (sample, channel) row of `out` is written whole before the next (the tile layout's
        // lines, read by halves, stay in L1 meanwhile). Those rows are in no cache: the output
        // is fresh, or was last written long ago. Their lines are prefetched `WRITE_AHEAD`
        // channels ahead, so that the misses overlap instead of each store waiting for its line
        // in turn: in a WGAN step on the Intel Xeon, that halved the time of the write-back,
        // which had run at 2.2 ns an element (docs/benchmarks/intel-xeon.md).
        const WRITE_AHEAD: usize = 2;
        for c in 0..channels {
            for s0 in (0..samples).step_by(TRANSPOSE_BLOCK) {
                let block_samples = TRANSPOSE_BLOCK.min(samples - s0);
                // (`pixels > 0`: an empty band has no last pixel to prefetch.)
                if pixels > 0 && c + WRITE_AHEAD < channels {
                    for s in s0..s0 + block_samples {
                        // SAFETY: a row of `out` (the caller's contract); a prefetch never faults.
                        let row = unsafe { out.add((s * channels + c + WRITE_AHEAD) * out_row) };
                        for p in (0..pixels).step_by(LINE_FLOATS).chain([pixels - 1]) {
                            X::prefetch(row.wrapping_add(p));
                        }
                    }
                }
                for p0 in (0..pixels).step_by(TRANSPOSE_BLOCK) {
                    // SAFETY: inside both buffers, by the caller's contract.
                    unsafe {
                        transpose_block_unchecked::<T, X>(
                            t.add((p0 * padded + c) * TILE_SAMPLES + s0),
                            padded * TILE_SAMPLES,
                            TRANSPOSE_BLOCK.min(pixels - p0),
                            block_samples,
                            out.add((s0 * channels + c) * out_row + p0),
                            channels * out_row,
                        )
                    };
                }
            }
        }
    }
}

/// f32 in a 64-byte cache line: how far apart [`TileLayout::tiles_back`]'s prefetches go.
const LINE_FLOATS: usize = 16;

/// [`to_tile_layout`] of f32 in registers.
struct ToTileLayout<'a> {
    layout: TileLayout,
    x: &'a [f32],
    row_left: usize,
    out: &'a mut [MaybeUninit<f32>],
}

impl SimdKernel for ToTileLayout<'_> {
    type Output = ();
    #[inline(always)]
    unsafe fn run<S: F32Simd>(self) {
        // SAFETY: `to_tile_layout` checked the bounds; `dispatch` compiled this for S.
        unsafe {
            self.layout
                .into_tiles::<f32, InRegisters<S>>(self.x, self.row_left, self.out)
        }
    }
}

/// [`band_from_tile_layout`] of f32 in registers.
struct FromTileLayout<'a> {
    layout: TileLayout,
    t: &'a [f32],
    out: *mut f32,
}

impl SimdKernel for FromTileLayout<'_> {
    type Output = ();
    #[inline(always)]
    unsafe fn run<S: F32Simd>(self) {
        // SAFETY: `band_from_tile_layout`'s caller vouches for the bounds; `dispatch` compiled
        // this for S.
        unsafe { self.layout.tiles_back::<f32, InRegisters<S>>(self.t, self.out) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tile layout by indexing, on every SIMD path: full chunks (the 16x16 blocks, with
    /// pixels left over past the last whole block) and partial ones (8x8 blocks, the missing
    /// samples zero).
    #[test]
    fn tile_layout_matches_indexing() {
        fn check<T: Element + std::fmt::Debug>(path: SimdPath, to: impl Fn(usize) -> T) {
            for (samples, channels, pixels) in [(16, 3, 37), (16, 2, 16), (16, 5, 7), (13, 3, 37), (9, 4, 21)] {
                let x: Vec<T> = (0..samples * channels * pixels).map(|i| to(i + 1)).collect();
                let mut out = vec![T::from_f64(-1.0); pixels * channels * TILE_SAMPLES];
                to_tile_layout(path, &x, channels, pixels, &mut out);
                for p in 0..pixels {
                    for c in 0..channels {
                        for s in 0..TILE_SAMPLES {
                            let want = if s < samples {
                                x[(s * channels + c) * pixels + p]
                            } else {
                                T::ZERO
                            };
                            let got = out[(p * channels + c) * TILE_SAMPLES + s];
                            assert_eq!(got, want, "{path}: {samples} x {channels} x {pixels}, at {s} {c} {p}");
                        }
                    }
                }
            }
        }
        for path in SimdPath::supported() {
            check(path, |v| v as f32);
            check(path, |v| v as f64);
        }
    }

    /// Laying a chunk out band by band of pixels gives the whole layout, on every SIMD path:
    /// bands on multiples of 16 pixels and not, full chunks and partial ones.
    #[test]
    fn tile_layout_by_bands_is_the_whole() {
        fn check<T: Element + std::fmt::Debug>(path: SimdPath, to: impl Fn(usize) -> T) {
            for (samples, channels, pixels, band) in
                [(16, 3, 150, 64), (16, 2, 37, 13), (11, 5, 70, 32), (16, 4, 40, 7)]
            {
                let x: Vec<T> = (0..samples * channels * pixels).map(|i| to(i + 1)).collect();
                let mut whole = vec![T::from_f64(-1.0); pixels * channels * TILE_SAMPLES];
                to_tile_layout(path, &x, channels, pixels, &mut whole);
                let mut banded = vec![T::from_f64(-2.0); pixels * channels * TILE_SAMPLES];
                for (b, out) in banded.chunks_mut(band * channels * TILE_SAMPLES).enumerate() {
                    to_tile_layout_band(path, &x, channels, pixels, b * band, out);
                }
                assert_eq!(
                    banded, whole,
                    "{path}: {samples} x {channels} x {pixels} in bands of {band}"
                );
            }
        }
        for path in SimdPath::supported() {
            check(path, |v| v as f32);
            check(path, |v| v as f64);
        }
    }

    /// Writing the sums back band by band gives the bits of writing them back whole, on every
    /// SIMD path, with bands, samples and channels that leave partial 8x8 blocks.
    #[test]
    fn bands_write_back_the_bits_of_whole_chunks() {
        fn check<T: Element + std::fmt::Debug>(path: SimdPath, to: impl Fn(usize) -> T) {
            let (samples, channels, padded, pixels) = (13, 7, 12, 23);
            let t: Vec<T> = (0..pixels * padded * TILE_SAMPLES).map(&to).collect();
            let sentinel = T::from_f64(-1.0);
            let mut whole = vec![MaybeUninit::new(sentinel); samples * channels * pixels];
            from_tile_layout(path, &t, channels, padded, pixels, &mut whole);
            let mut banded = vec![MaybeUninit::new(sentinel); samples * channels * pixels];
            for band in [0..5, 5..16, 16..23] {
                let band_t = &t[band.start * padded * TILE_SAMPLES..band.end * padded * TILE_SAMPLES];
                // SAFETY: the rows of `banded` from the band's first pixel on are inside it, and
                // the band's sums are `band.len() * padded * TILE_SAMPLES` values.
                unsafe {
                    band_from_tile_layout(
                        path,
                        band_t,
                        channels,
                        padded,
                        band.len(),
                        samples,
                        banded.as_mut_ptr().add(band.start),
                        pixels,
                    )
                };
            }
            // SAFETY: every slot was initialised (to the sentinel, then by the write-backs).
            let read = |v: &[MaybeUninit<T>]| v.iter().map(|x| unsafe { x.assume_init() }).collect::<Vec<T>>();
            let (whole, banded) = (read(&whole), read(&banded));
            assert!(!whole.contains(&sentinel), "{path}: a slot left unwritten");
            assert_eq!(whole, banded, "{path}");
        }
        for path in SimdPath::supported() {
            check(path, |v| v as f32);
            check(path, |v| v as f64);
        }
    }
}
