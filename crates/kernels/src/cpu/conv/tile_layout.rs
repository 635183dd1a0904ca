//! The tile layout of one chunk of samples: `[S, channels, pixels]` (a batch's images or maps,
//! `S <= TILE_SAMPLES`) as `[pixels, channels, TILE_SAMPLES]`, where the register tile
//! ([`super::tile`]) reads a step's samples as one vector, and back. Both ways by 8x8 block
//! transposes, in registers for f32.

use super::tile::TILE_SAMPLES;
use crate::cpu::layout::{transpose_block_unchecked, ByElement, InRegisters, Transpose8x8, TRANSPOSE_BLOCK};
use crate::cpu::simd::{dispatch, F32Simd, SimdKernel, SimdPath};
use crate::cpu::{as_f32, as_f32_slots, as_slots};
use crate::Element;
use std::mem::MaybeUninit;

/// Samples `[S, C, P]` (`S <= TILE_SAMPLES`) as `out` `[P, C, TILE_SAMPLES]`, the missing
/// samples zero.
pub(super) fn to_tile_layout<T: Element>(path: SimdPath, x: &[T], channels: usize, pixels: usize, out: &mut [T]) {
    let samples = x.len() / (channels * pixels).max(1);
    if samples < TILE_SAMPLES {
        out.fill(T::ZERO);
    }
    assert!(
        samples <= TILE_SAMPLES && out.len() >= pixels * channels * TILE_SAMPLES,
        "to_tile_layout: {samples} samples of {channels} x {pixels} into {}",
        out.len()
    );
    let layout = TileLayout {
        samples,
        channels,
        pixels,
        padded: channels,
    };
    // SAFETY: the transposes below write values of `x`, nothing uninitialised; the blocks lie
    // inside both slices (the bounds asserted above).
    unsafe {
        let out = as_slots(out);
        match as_f32(x) {
            Some(x) => {
                let out = as_f32_slots(out).expect("f32 slots when the input is f32");
                dispatch(path, ToTileLayout { layout, x, out })
            }
            None => layout.into_tiles::<T, ByElement>(x, out),
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
    let layout = TileLayout {
        samples,
        channels,
        pixels,
        padded,
    };
    // SAFETY: the blocks lie inside both slices (the bounds asserted above).
    unsafe {
        match as_f32(t) {
            Some(t) => {
                let out = as_f32_slots(out).expect("f32 slots when the input is f32");
                dispatch(path, FromTileLayout { layout, t, out })
            }
            None => layout.tiles_back::<T, ByElement>(t, out),
        }
    }
}

/// One chunk's layout change between `[S, channels, P]` and the tile layout `[P, padded,
/// TILE_SAMPLES]`, written once over the block transpose `X`.
#[derive(Clone, Copy)]
struct TileLayout {
    samples: usize,
    channels: usize,
    pixels: usize,
    padded: usize,
}

impl TileLayout {
    /// `[S, channels, P]` to `[P, channels, TILE_SAMPLES]` (`padded` is `channels` here).
    ///
    /// # Safety
    /// `x` holds `samples * channels * pixels` values and `out` `pixels * channels *
    /// TILE_SAMPLES` slots.
    #[inline(always)]
    unsafe fn into_tiles<T: Copy, X: Transpose8x8<T>>(self, x: &[T], out: &mut [MaybeUninit<T>]) {
        let TileLayout {
            samples,
            channels,
            pixels,
            ..
        } = self;
        let (x, out) = (x.as_ptr(), out.as_mut_ptr() as *mut T);
        // By 8x8 blocks of (sample, pixel), pixels outermost and samples innermost: each
        // (pixel, channel) line of the output is written whole at once. (With the channels a
        // power of two, a pixel's lines are a multiple of 4 KiB apart and share cache sets, so
        // lines left half-written would be evicted before their second half comes.)
        for p0 in (0..pixels).step_by(TRANSPOSE_BLOCK) {
            let cols = TRANSPOSE_BLOCK.min(pixels - p0);
            for c in 0..channels {
                for s0 in (0..samples).step_by(TRANSPOSE_BLOCK) {
                    // SAFETY: inside both buffers, by the caller's contract.
                    unsafe {
                        transpose_block_unchecked::<T, X>(
                            x.add((s0 * channels + c) * pixels + p0),
                            channels * pixels,
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

    /// `[P, padded, TILE_SAMPLES]` to `[S, channels, P]`.
    ///
    /// # Safety
    /// `t` holds `pixels * padded * TILE_SAMPLES` values and `out` `samples * channels *
    /// pixels` slots.
    #[inline(always)]
    unsafe fn tiles_back<T: Copy, X: Transpose8x8<T>>(self, t: &[T], out: &mut [MaybeUninit<T>]) {
        let TileLayout {
            samples,
            channels,
            pixels,
            padded,
        } = self;
        let (t, out) = (t.as_ptr(), out.as_mut_ptr() as *mut T);
        // By 8x8 blocks of (pixel, sample), samples innermost: each (pixel, channel) line of the
        // tile layout is read whole at once (see `into_tiles`).
        for p0 in (0..pixels).step_by(TRANSPOSE_BLOCK) {
            let rows = TRANSPOSE_BLOCK.min(pixels - p0);
            for c in 0..channels {
                for s0 in (0..samples).step_by(TRANSPOSE_BLOCK) {
                    // SAFETY: inside both buffers, by the caller's contract.
                    unsafe {
                        transpose_block_unchecked::<T, X>(
                            t.add((p0 * padded + c) * TILE_SAMPLES + s0),
                            padded * TILE_SAMPLES,
                            rows,
                            TRANSPOSE_BLOCK.min(samples - s0),
                            out.add((s0 * channels + c) * pixels + p0),
                            channels * pixels,
                        )
                    };
                }
            }
        }
    }
}

/// [`to_tile_layout`] of f32 in registers.
struct ToTileLayout<'a> {
    layout: TileLayout,
    x: &'a [f32],
    out: &'a mut [MaybeUninit<f32>],
}

impl SimdKernel for ToTileLayout<'_> {
    type Output = ();
    #[inline(always)]
    unsafe fn run<S: F32Simd>(self) {
        // SAFETY: `to_tile_layout` checked the bounds; `dispatch` compiled this for S.
        unsafe { self.layout.into_tiles::<f32, InRegisters<S>>(self.x, self.out) }
    }
}

/// [`from_tile_layout`] of f32 in registers.
struct FromTileLayout<'a> {
    layout: TileLayout,
    t: &'a [f32],
    out: &'a mut [MaybeUninit<f32>],
}

impl SimdKernel for FromTileLayout<'_> {
    type Output = ();
    #[inline(always)]
    unsafe fn run<S: F32Simd>(self) {
        // SAFETY: `from_tile_layout` checked the bounds; `dispatch` compiled this for S.
        unsafe { self.layout.tiles_back::<f32, InRegisters<S>>(self.t, self.out) }
    }
}
