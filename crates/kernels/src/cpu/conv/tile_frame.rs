//! The forward pass and the input adjoint on the register tile ([`super::tile`]): the
//! operands laid out `[pixel, channel, sample]` ([`super::tile_layout`]), the weights packed by
//! tiles of channels, and [`TileFrame`], the three parallel phases both passes share.

use super::scratch::{Pooled, Scratch};
use super::tile::{
    accumulate_rows_unchecked, accumulate_two_blocks_unchecked, accumulate_two_tiles_two_blocks_unchecked,
    accumulate_two_tiles_unchecked, check_runs, Run, TILE_LEN, TILE_ROWS, TILE_SAMPLES,
};
use super::tile_layout::{band_from_tile_layout, from_tile_layout, pack_weights, to_tile_layout_band};
use super::{finish_maps, taps_inside, taps_inside_image};
use crate::cpu::elementwise::unary_in_place;
use crate::cpu::matmul::count_flops;
use crate::cpu::simd::SimdPath;
use crate::cpu::{as_f32, assume_init_vec, uninit_vec, SharedPtr};
use crate::op::Epilogue;
use crate::{ConvGeometry, Element};
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::ops::Range;

/// Where a pass of the tile kernels over a row starts its sums.
#[derive(Clone, Copy)]
pub(super) enum Start<'a, T> {
    /// From the sums in the row: an earlier kernel row's pass wrote them.
    Sums,
    /// From each channel's bias (zero without one, and for the channels past `bias.len()`):
    /// the row's first pass, whose buffer holds anything.
    Bias(Option<&'a [T]>),
}

/// Start the tile kernels' sums `[pixels, padded, TILE_SAMPLES]` at each channel's bias (zero
/// without one, and for the channels past `bias.len()`), the loop compiled for `path`.
pub(super) fn start_sums<T: Element>(path: SimdPath, sums: &mut [T], padded: usize, bias: Option<&[T]>) {
    crate::cpu::simd::compiled_for(path, || match bias {
        None => sums.fill(T::ZERO),
        Some(bias) => {
            for pixel in sums.chunks_exact_mut(padded * TILE_SAMPLES) {
                for (c, lanes) in pixel.chunks_exact_mut(TILE_SAMPLES).enumerate() {
                    lanes.fill(bias.get(c).copied().unwrap_or(T::ZERO));
                }
            }
        }
    })
}

/// The tiles of sums in `out` (`[tiles * TILE_ROWS, TILE_SAMPLES]`, the first row channel
/// `first_channel`) set to their channels' bias (zero without one, and past its channels).
/// A few lines of stores, once per tile and kernel call: plain, not worth a dispatch.
fn start_tiles<T: Element>(out: &mut [T], first_channel: usize, bias: Option<&[T]>) {
    for (r, lanes) in out.chunks_exact_mut(TILE_SAMPLES).enumerate() {
        lanes.fill(bias.and_then(|b| b.get(first_channel + r)).copied().unwrap_or(T::ZERO));
    }
}

/// One pass of the tile kernels over a row of pixels: for every tile of `packed` weights and
/// every pixel `i` of the row, the tile summed over `runs[bounds[i]..bounds[i + 1]]` into that
/// pixel's tile of `row` (`[pixels, tiles * TILE_ROWS, TILE_SAMPLES]`), for the first
/// `channels` rows (the last tile's padding rows are skipped). With [`Start::Bias`], each tile
/// is set to the bias right before the kernel adds into it (in L1: a pass that filled the whole
/// row first wrote it out to L2 and read it back). Tiles go to the kernel in pairs,
/// which share their runs (AVX-512 sums both in one pass); with a `second` chunk of samples
/// (its operand and its row, laid out alike), each kernel call also sums the same tiles over
/// it, so that each weight loaded serves both chunks. The runs are checked once for the whole
/// row ([`check_runs`]), not once per tile.
#[allow(clippy::too_many_arguments)]
fn accumulate_row<T: Element>(
    path: SimdPath,
    packed: &[T],
    tiles: usize,
    channels: usize,
    operand: &[T],
    runs: &[Run],
    bounds: &[usize],
    row: &mut [T],
    mut second: Option<(&[T], &mut [T])>,
    start: Start<'_, T>,
) {
    let tile_weights = packed.len() / tiles;
    // Every tile of the row reads the same runs, with weights of the same length: check them once.
    check_runs(runs, tile_weights, operand.len());
    if let Some((second_operand, second_row)) = &second {
        assert!(
            second_operand.len() == operand.len() && second_row.len() == row.len(),
            "tile frame: the second chunk is laid out unlike the first"
        );
    }
    let weights = |tile: usize| &packed[tile * tile_weights..][..tile_weights];
    let rows = |tile: usize| (channels - tile * TILE_ROWS).min(TILE_ROWS);
    let pixel_len = tiles * TILE_LEN;
    for pixel in 0..row.len() / pixel_len {
        let pixel_runs = &runs[bounds[pixel]..bounds[pixel + 1]];
        for tile in (0..tiles).step_by(2) {
            let at = pixel * pixel_len + tile * TILE_LEN;
            let both_tiles = tile + 1 < tiles;
            let span = if both_tiles { 2 * TILE_LEN } else { TILE_LEN };
            let out = &mut row[at..at + span];
            if let Start::Bias(bias) = start {
                start_tiles(out, tile * TILE_ROWS, bias);
                if let Some((_, second_row)) = &mut second {
                    start_tiles(&mut second_row[at..at + span], tile * TILE_ROWS, bias);
                }
            }
            // SAFETY: each tile's weights are `tile_weights` long, these runs are among those
            // checked, and the second chunk's operand is as long as the first's.
            unsafe {
                match &mut second {
                    None if both_tiles => {
                        let (out0, out1) = out.split_at_mut(TILE_LEN);
                        let w = [weights(tile), weights(tile + 1)];
                        accumulate_two_tiles_unchecked(path, rows(tile + 1), w, operand, pixel_runs, [out0, out1]);
                    }
                    None => accumulate_rows_unchecked(path, rows(tile), weights(tile), operand, pixel_runs, out),
                    Some((second_operand, second_row)) => {
                        let second_out = &mut second_row[at..at + span];
                        let operands = [operand, *second_operand];
                        if both_tiles {
                            let (first0, first1) = out.split_at_mut(TILE_LEN);
                            let (second0, second1) = second_out.split_at_mut(TILE_LEN);
                            let w = [weights(tile), weights(tile + 1)];
                            let outs = [[first0, second0], [first1, second1]];
                            accumulate_two_tiles_two_blocks_unchecked(
                                path,
                                rows(tile + 1),
                                w,
                                operands,
                                pixel_runs,
                                outs,
                            );
                        } else {
                            let outs = [out, second_out];
                            accumulate_two_blocks_unchecked(
                                path,
                                rows(tile),
                                weights(tile),
                                operands,
                                pixel_runs,
                                outs,
                            );
                        }
                    }
                }
            }
        }
    }
}

/// What the frame's phases run on: the tile of [`Element`]s ([`ElementTiles`]), or the bf16
/// tile in pairs (`super::bf16::Bf16Tiles`).
pub(super) trait TileKernels: Sync {
    /// The SIMD path these kernels run on, and the frame's plain loops with them.
    fn path(&self) -> SimdPath;
    /// The elements of the source (the image or the map).
    type Source: Copy + Sync;
    /// The elements of the source laid out for the tile.
    type LaidOut: Pooled;
    /// The elements of the sums.
    type Sum: Element;
    /// The elements of the output.
    type Out: Copy + Send + Sync;
    /// The output channels padded to whole tiles: the channels of the sums.
    fn padded_channels(&self) -> usize;
    /// Laid-out elements of one chunk of [`TILE_SAMPLES`] samples of `channels x pixels`.
    fn laid_out_len(&self, channels: usize, pixels: usize) -> usize;
    /// A band of one chunk of the source `[S, channels, pixels]` laid out for the tile into
    /// `out`: pixels `first_pixel..`, as many as `out` holds ([`TileKernels::laid_out_len`]
    /// of them), the missing samples zero. The laid-out chunk is its bands one after another.
    fn lay_out(
        &self,
        source: &[Self::Source],
        channels: usize,
        pixels: usize,
        first_pixel: usize,
        out: &mut [Self::LaidOut],
    );
    /// [`accumulate_row`]'s pass, over this kind of operand, its sums started as `start` says.
    fn accumulate_row(
        &self,
        operand: &[Self::LaidOut],
        runs: &[Run],
        bounds: &[usize],
        row: &mut [Self::Sum],
        start: Start<'_, Self::Sum>,
    );
    /// Whether [`TileKernels::accumulate_two_rows`] sums two chunks of samples faster than two
    /// passes: the frame then gives each of its tasks two chunks.
    fn pairs_chunks(&self) -> bool {
        false
    }
    /// [`TileKernels::accumulate_row`] for the same row of two chunks (`operands[i]` into
    /// `rows[i]`), which share their runs.
    fn accumulate_two_rows(
        &self,
        operands: [&[Self::LaidOut]; 2],
        runs: &[Run],
        bounds: &[usize],
        rows: [&mut [Self::Sum]; 2],
        start: Start<'_, Self::Sum>,
    ) {
        let [row0, row1] = rows;
        self.accumulate_row(operands[0], runs, bounds, row0, start);
        self.accumulate_row(operands[1], runs, bounds, row1, start);
    }
    /// One chunk's sums `[pixels, tiles * TILE_ROWS, TILE_SAMPLES]` into `out` `[S, channels,
    /// pixels]`, every element of which it writes.
    fn write_back(&self, sums: &[Self::Sum], channels: usize, pixels: usize, out: &mut [MaybeUninit<Self::Out>]);
    /// Whether the frame writes each task's band of sums back as soon as the task has summed
    /// it ([`TileKernels::write_back_band`]), instead of every chunk after all the tasks.
    fn writes_back_bands(&self) -> bool {
        false
    }
    /// A band of `band_pixels` pixels of one chunk's sums `[band_pixels, tiles * TILE_ROWS,
    /// TILE_SAMPLES]` into the `samples * channels` rows at `out`, `out_pixels` apart, from
    /// the band's first pixel on. Only called where [`TileKernels::writes_back_bands`].
    ///
    /// # Safety
    /// As [`band_from_tile_layout`].
    unsafe fn write_back_band(
        &self,
        sums: &[Self::Sum],
        channels: usize,
        band_pixels: usize,
        samples: usize,
        out: *mut MaybeUninit<Self::Out>,
        out_pixels: usize,
    ) {
        let _ = (sums, channels, band_pixels, samples, out, out_pixels);
        unreachable!("tile frame: these kernels write back whole chunks");
    }
}

/// The tile of [`Element`]s: f32 on the SIMD paths, f64 in plain loops.
pub(super) struct ElementTiles<'a, T: Element> {
    pub path: SimdPath,
    pub packed: &'a [T],
    pub tiles: usize,
    /// The channels of the output (the rows of the tiles that are not padding).
    pub channels: usize,
}

impl<T: Element> TileKernels for ElementTiles<'_, T> {
    type Source = T;
    type LaidOut = T;
    type Sum = T;
    type Out = T;
    fn path(&self) -> SimdPath {
        self.path
    }
    fn padded_channels(&self) -> usize {
        self.tiles * TILE_ROWS
    }
    fn laid_out_len(&self, channels: usize, pixels: usize) -> usize {
        channels * pixels * TILE_SAMPLES
    }
    fn lay_out(&self, source: &[T], channels: usize, pixels: usize, first_pixel: usize, out: &mut [T]) {
        to_tile_layout_band(self.path, source, channels, pixels, first_pixel, out)
    }
    fn accumulate_row(&self, operand: &[T], runs: &[Run], bounds: &[usize], row: &mut [T], start: Start<'_, T>) {
        accumulate_row(
            self.path,
            self.packed,
            self.tiles,
            self.channels,
            operand,
            runs,
            bounds,
            row,
            None,
            start,
        )
    }
    /// On AVX-512, in f32: its 32 registers hold the sums of two tiles over two chunks (see
    /// [`accumulate_two_tiles_two_blocks_unchecked`]).
    fn pairs_chunks(&self) -> bool {
        self.path == SimdPath::Avx512 && as_f32(self.packed).is_some()
    }
    fn accumulate_two_rows(
        &self,
        operands: [&[T]; 2],
        runs: &[Run],
        bounds: &[usize],
        rows: [&mut [T]; 2],
        start: Start<'_, T>,
    ) {
        let [row0, row1] = rows;
        let second = Some((operands[1], row1));
        accumulate_row(
            self.path,
            self.packed,
            self.tiles,
            self.channels,
            operands[0],
            runs,
            bounds,
            row0,
            second,
            start,
        )
    }
    fn write_back(&self, sums: &[T], channels: usize, pixels: usize, out: &mut [MaybeUninit<T>]) {
        from_tile_layout(self.path, sums, channels, self.tiles * TILE_ROWS, pixels, out)
    }
    fn writes_back_bands(&self) -> bool {
        true
    }
    unsafe fn write_back_band(
        &self,
        sums: &[T],
        channels: usize,
        band_pixels: usize,
        samples: usize,
        out: *mut MaybeUninit<T>,
        out_pixels: usize,
    ) {
        let padded = self.tiles * TILE_ROWS;
        // SAFETY: forwarded to the caller.
        unsafe { band_from_tile_layout(self.path, sums, channels, padded, band_pixels, samples, out, out_pixels) }
    }
}

/// A task's work space in [`TileFrame::run`]: the runs and bounds of its rows, and of each
/// kernel row where short runs go to the tile all at once.
#[derive(Default)]
struct BandWork {
    runs: Vec<Run>,
    bounds: Vec<usize>,
    row_runs: Vec<Run>,
    row_bounds: Vec<usize>,
    /// Whether each row of the band has had its first pass.
    started: Vec<bool>,
}

/// Bands of output rows per chunk of samples in the tile kernels: with the chunks, enough tasks
/// that a thread held up (preempted by another process) delays the call by a small share.
const ROW_BANDS: usize = 4;

/// The frame shared by the forward pass and the input adjoint on the tile: the kernel's source
/// `[N, source_channels, source_pixels]` (the image, or the map), and its output `[N,
/// channels, rows * row_len]` summed over `kernel_rows` kernel rows.
pub(super) struct TileFrame {
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
    /// 1. the source, by chunks of [`TILE_SAMPLES`] samples (and bands of their pixels where
    ///    the threads outnumber the chunks), laid out `[pixel, channel, sample]`
    ///    (`kernels.lay_out`: [`to_tile_layout_band`], or in pairs of channels);
    /// 2. the sums, started at the bias (by each row's first pass, tile by tile: [`Start`]), by
    ///    tasks of one chunk and one of [`ROW_BANDS`] bands of
    ///    output rows (or, where `kernels.pairs_chunks()`, of two chunks and one of twice as
    ///    many bands, summed together: `accumulate_two_rows`): kernel row by kernel row (the source rows a pass reads stay in L2 while
    ///    every tile of `packed` weights goes over them), `runs_of(ki, row, runs, bounds)`
    ///    pushes the runs of every pixel of output row `row` for kernel row `ki`, or returns
    ///    false where the kernel row reads only padding, and `kernels.accumulate_row` sums them (with
    ///    short runs, every kernel row of an output row in one call instead); then the task's
    ///    sums go through the activation, while they are in cache;
    /// 3. the sums back to `out`, which writes every element: where
    ///    `kernels.writes_back_bands()`, by each task as soon as its band is summed
    ///    (`write_back_band`, from the thread's own buffers of sums, which stay in L2); else by
    ///    chunks after all the tasks (`write_back`).
    ///
    /// `runs_of`'s contract: it is called with `bounds` holding one entry, the offset into
    /// `runs` where its runs start (not always 0: `runs` may hold other kernel rows' runs
    /// already). When it returns true it has appended, for each of the row's `row_len` pixels
    /// in order, that pixel's runs to `runs` and then `runs.len()` to `bounds`, so that pixel
    /// `i`'s runs are `runs[bounds[i]..bounds[i + 1]]` (the forward pass takes the pixel's index
    /// from `bounds.len() - 1`). When it returns false it has pushed nothing.
    pub(super) fn run<K: TileKernels>(
        &self,
        source: &[K::Source],
        kernels: &K,
        epilogue: Epilogue<K::Sum>,
        out: &mut [MaybeUninit<K::Out>],
        runs_of: impl Fn(usize, usize, &mut Vec<Run>, &mut Vec<usize>) -> bool + Sync,
    ) {
        let source_len = self.source_channels * self.source_pixels;
        let (pixels, padded) = (self.rows * self.row_len, kernels.padded_channels());
        // Both write-backs fill `out` chunk by chunk of the source: every element is written
        // only when the source holds as many samples as `out` (the callers hand it out as
        // initialised).
        assert!(
            source_len > 0
                && source.len() % source_len == 0
                && out.len() == source.len() / source_len * self.channels * pixels,
            "tile frame: a source of {} values for {} samples of {} values and an output of {}",
            source.len(),
            out.len() / (self.channels * pixels).max(1),
            source_len,
            out.len()
        );
        let chunks = (source.len() / source_len).div_ceil(TILE_SAMPLES);
        let chunk_source = source_len * TILE_SAMPLES;
        let chunk_laid_out = kernels.laid_out_len(self.source_channels, self.source_pixels);
        let chunk_sums = pixels * padded * TILE_SAMPLES;
        let mut laid_out = Scratch::take(chunks * chunk_laid_out);
        // By chunk, and where that leaves fewer than two tasks a thread, by bands of pixels of
        // each chunk (a multiple of 16 pixels, so that a full chunk's bands go by whole 16x16
        // blocks as the whole chunk does): a batch of 128 is 8 chunks, and at 16 threads most
        // would wait. (A permutation: the split does not change what is laid out.)
        let pixel_bands = (2 * rayon::current_num_threads()).div_ceil(chunks.max(1));
        let band_pixels = self.source_pixels.div_ceil(pixel_bands).next_multiple_of(TILE_SAMPLES);
        let band_laid_out = kernels.laid_out_len(self.source_channels, band_pixels);
        laid_out
            .par_chunks_mut(chunk_laid_out)
            .zip(source.par_chunks(chunk_source))
            .flat_map(|(laid_out, source)| {
                laid_out
                    .par_chunks_mut(band_laid_out)
                    .enumerate()
                    .map(move |(band, laid_out)| (source, band * band_pixels, laid_out))
            })
            .for_each(|(source, first_pixel, laid_out)| {
                kernels.lay_out(source, self.source_channels, self.source_pixels, first_pixel, laid_out)
            });
        // The tasks: a band of rows of one chunk, or of two chunks where the kernels sum two at
        // once (the same band of both, `(first chunk, band, its sums, the second's)`), then in
        // twice as many bands, so that there are as many tasks either way; more bands where
        // that leaves fewer than two tasks a thread (each output row is summed the same way
        // whatever band it falls in, so the count does not change the sums).
        let chunks_per_task = if kernels.pairs_chunks() { 2 } else { 1 };
        let groups = chunks.div_ceil(chunks_per_task).max(1);
        let bands = (ROW_BANDS * chunks_per_task).max((2 * rayon::current_num_threads()).div_ceil(groups));
        let band_rows = self.rows.div_ceil(bands).max(1);
        let row_sums = self.row_len * padded * TILE_SAMPLES;
        let laid_out = &laid_out[..];
        let operand = |chunk: usize| &laid_out[chunk * chunk_laid_out..][..chunk_laid_out];
        // The sums of band `band` of chunk `chunk` (and of the next chunk, in `second_sums`),
        // started at the bias, through the activation.
        let sum_band = |work: &mut BandWork,
                        chunk: usize,
                        band: usize,
                        sums: &mut [K::Sum],
                        mut second_sums: Option<&mut [K::Sum]>| {
            let BandWork {
                runs,
                bounds,
                row_runs,
                row_bounds,
                started,
            } = work;
            let first_row = band * band_rows;
            let band_rows_here = sums.len() / row_sums;
            // Row `i` of the band, summed over `runs` (in each chunk of the task), its sums
            // started at the bias by its first pass.
            let mut accumulate = |i: usize, runs: &[Run], bounds: &[usize], first: bool| {
                let start = if first { Start::Bias(epilogue.bias) } else { Start::Sums };
                let row = &mut sums[i * row_sums..][..row_sums];
                match &mut second_sums {
                    None => kernels.accumulate_row(operand(chunk), runs, bounds, row, start),
                    Some(second) => {
                        let operands = [operand(chunk), operand(chunk + 1)];
                        let second_row = &mut second[i * row_sums..][..row_sums];
                        kernels.accumulate_two_rows(operands, runs, bounds, [row, second_row], start)
                    }
                }
            };
            if self.longest_run < SHORT_RUN {
                for i in 0..band_rows_here {
                    self.runs_of_every_kernel_row(first_row + i, &runs_of, runs, bounds, row_runs, row_bounds);
                    accumulate(i, runs, bounds, true);
                }
            } else {
                started.clear();
                started.resize(band_rows_here, false);
                for ki in 0..self.kernel_rows {
                    for (i, started) in started.iter_mut().enumerate() {
                        runs.clear();
                        if self.push_runs(&runs_of, ki, first_row + i, runs, bounds) {
                            accumulate(i, runs, bounds, !*started);
                            *started = true;
                        }
                    }
                }
                // A row whose every kernel row reads only padding is its bias.
                for (i, _) in started.iter().enumerate().filter(|(_, &started)| !started) {
                    start_sums(
                        kernels.path(),
                        &mut sums[i * row_sums..][..row_sums],
                        padded,
                        epilogue.bias,
                    );
                    if let Some(second) = &mut second_sums {
                        start_sums(
                            kernels.path(),
                            &mut second[i * row_sums..][..row_sums],
                            padded,
                            epilogue.bias,
                        );
                    }
                }
            }
            // The activation is elementwise, so the tile layout does not matter to it
            // (the padding channels it also maps are never read).
            if let Some(op) = epilogue.activation {
                unary_in_place(kernels.path(), op, sums);
                if let Some(second) = second_sums {
                    unary_in_place(kernels.path(), op, second);
                }
            }
        };
        if kernels.writes_back_bands() {
            // Each task sums its band into its thread's own buffers and writes it back at once,
            // while the sums are in L2: the sums of the whole call (up to 6.6 MB for a WGAN
            // layer) never go out to memory and back.
            let samples = source.len() / source_len;
            let chunk_out = TILE_SAMPLES * self.channels * pixels;
            // Shared by the tasks, each of which writes its own band of pixels of its chunks.
            let out = SharedPtr::new(out.as_mut_ptr());
            let bands = self.rows.div_ceil(band_rows);
            let tasks: Vec<(usize, usize)> = (0..chunks)
                .step_by(chunks_per_task)
                .flat_map(|chunk| (0..bands).map(move |band| (chunk, band)))
                .collect();
            tasks.into_par_iter().for_each_init(
                || (BandWork::default(), Vec::new(), Vec::new()),
                |(work, first, second): &mut (BandWork, Vec<K::Sum>, Vec<K::Sum>), (chunk, band)| {
                    let first_row = band * band_rows;
                    let rows_here = band_rows.min(self.rows - first_row);
                    let len = rows_here * row_sums;
                    let paired = chunks_per_task == 2 && chunk + 1 < chunks;
                    for buffer in [&mut *first, &mut *second] {
                        if buffer.len() < len {
                            buffer.resize(len, K::Sum::ZERO);
                        }
                    }
                    let (first, second) = (&mut first[..len], &mut second[..len]);
                    sum_band(work, chunk, band, first, paired.then_some(&mut *second));
                    let written: &[(usize, &[K::Sum])] = if paired {
                        &[(chunk, first), (chunk + 1, second)]
                    } else {
                        &[(chunk, first)]
                    };
                    for &(chunk, sums) in written {
                        let chunk_samples = (samples - chunk * TILE_SAMPLES).min(TILE_SAMPLES);
                        let at = chunk * chunk_out + first_row * self.row_len;
                        // SAFETY: the chunk's `chunk_samples * channels` rows of `pixels` lie
                        // inside `out` (its length asserted above), and this task alone writes
                        // their band of pixels `first_row * row_len..` (`rows_here * row_len`
                        // of them); nothing reads `out` until every task is done.
                        unsafe {
                            kernels.write_back_band(
                                sums,
                                self.channels,
                                rows_here * self.row_len,
                                chunk_samples,
                                out.at(at),
                                pixels,
                            )
                        };
                    }
                },
            );
            return;
        }
        let mut sums = Scratch::take(chunks * chunk_sums);
        let band_len = band_rows * row_sums;
        let mut tasks = Vec::new();
        for (group, group_sums) in sums.chunks_mut(chunks_per_task * chunk_sums).enumerate() {
            let (first, second) = group_sums.split_at_mut(chunk_sums.min(group_sums.len()));
            let mut second_bands = second.chunks_mut(band_len);
            for (band, first_band) in first.chunks_mut(band_len).enumerate() {
                tasks.push((group * chunks_per_task, band, first_band, second_bands.next()));
            }
        }
        tasks
            .into_par_iter()
            .for_each_init(BandWork::default, |work, (chunk, band, sums, second_sums)| {
                sum_band(work, chunk, band, sums, second_sums)
            });
        out.par_chunks_mut(TILE_SAMPLES * self.channels * pixels)
            .zip(sums.par_chunks(chunk_sums))
            .for_each(|(out, sums)| kernels.write_back(sums, self.channels, pixels, out));
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

/// The runs of conv2d's forward pass on the tile, over `reduced` steps per input pixel (its
/// channels, or for the bf16 tile its pairs of channels): per output pixel and kernel row
/// inside the image, one run over the row's kernel columns inside the image (each a run of its
/// own with dilation) and every reduced step, contiguous in the laid-out input `[H, W,
/// reduced, S]` and in the packed weights `[kh, kw, reduced, TILE_ROWS]`.
pub(super) struct ForwardRuns<'a> {
    g: &'a ConvGeometry,
    reduced: usize,
    /// Weights per reduced step in the packed weights: [`TILE_ROWS`], or 1 for weights
    /// packed row by row (the AMX tile's).
    weights_step: usize,
    row_taps: Vec<Range<usize>>,
    column_taps: Vec<Range<usize>>,
}

impl<'a> ForwardRuns<'a> {
    pub(super) fn new(g: &'a ConvGeometry, reduced: usize, weights_step: usize) -> ForwardRuns<'a> {
        let (kh, kw) = (g.kernel_h, g.kernel_w);
        ForwardRuns {
            g,
            reduced,
            weights_step,
            row_taps: (0..g.out_h)
                .map(|oh| taps_inside(oh, g.in_h, kh, g.stride.0, g.dilation.0, g.padding.0))
                .collect(),
            column_taps: (0..g.out_w)
                .map(|ow| taps_inside(ow, g.in_w, kw, g.stride.1, g.dilation.1, g.padding.1))
                .collect(),
        }
    }

    /// The frame of the forward pass.
    pub(super) fn frame(&self) -> TileFrame {
        let g = self.g;
        TileFrame {
            source_channels: g.in_channels,
            source_pixels: g.in_h * g.in_w,
            channels: g.out_channels,
            rows: g.out_h,
            row_len: g.out_w,
            kernel_rows: g.kernel_h,
            // With dilation each kernel column is a run of its own.
            longest_run: if g.dilation.1 > 1 {
                self.reduced
            } else {
                g.kernel_w * self.reduced
            },
        }
    }

    /// [`TileFrame::run`]'s `runs_of` for the forward pass.
    pub(super) fn runs_of(&self, ki: usize, oh: usize, runs: &mut Vec<Run>, bounds: &mut Vec<usize>) -> bool {
        let (g, reduced) = (self.g, self.reduced);
        if !self.row_taps[oh].contains(&ki) {
            return false;
        }
        let ih = oh * g.stride.0 + ki * g.dilation.0 - g.padding.0;
        for kjs in &self.column_taps {
            let ow = bounds.len() - 1;
            let mut push = |kj: Range<usize>| {
                let iw = ow * g.stride.1 + kj.start * g.dilation.1 - g.padding.1;
                runs.push(Run {
                    weights: (ki * g.kernel_w + kj.start) * reduced * self.weights_step,
                    inputs: (ih * g.in_w + iw) * reduced * TILE_SAMPLES,
                    len: kj.len() * reduced,
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
    }
}

/// The runs of conv2d's input adjoint on the tile, over `reduced` steps per output pixel (the
/// output channels, or their pairs): per input pixel, one run per kernel tap that reaches an
/// output pixel, over every reduced step, contiguous in the laid-out maps `[Ho, Wo, reduced,
/// S]` and in the packed weights. Each input pixel gathers what it receives, so nothing is
/// scattered.
pub(super) struct AdjointRuns<'a> {
    g: &'a ConvGeometry,
    reduced: usize,
    /// As [`ForwardRuns`]'s.
    weights_step: usize,
}

impl<'a> AdjointRuns<'a> {
    pub(super) fn new(g: &'a ConvGeometry, reduced: usize, weights_step: usize) -> AdjointRuns<'a> {
        AdjointRuns {
            g,
            reduced,
            weights_step,
        }
    }

    /// The frame of the input adjoint.
    pub(super) fn frame(&self) -> TileFrame {
        let g = self.g;
        TileFrame {
            source_channels: g.out_channels,
            source_pixels: g.out_h * g.out_w,
            channels: g.in_channels,
            rows: g.in_h,
            row_len: g.in_w,
            kernel_rows: g.kernel_h,
            longest_run: self.reduced,
        }
    }

    /// [`TileFrame::run`]'s `runs_of` for the input adjoint.
    pub(super) fn runs_of(&self, ki: usize, ih: usize, runs: &mut Vec<Run>, bounds: &mut Vec<usize>) -> bool {
        let (g, reduced) = (self.g, self.reduced);
        let Some(t) = (ih + g.padding.0).checked_sub(ki * g.dilation.0) else {
            return false;
        };
        let oh = t / g.stride.0;
        if t % g.stride.0 != 0 || oh >= g.out_h {
            return false;
        }
        for iw in 0..g.in_w {
            // The (kernel column, output column) pairs that read input column iw.
            for kj in 0..g.kernel_w {
                let Some(t) = (iw + g.padding.1).checked_sub(kj * g.dilation.1) else {
                    continue;
                };
                let ow = t / g.stride.1;
                if t % g.stride.1 == 0 && ow < g.out_w {
                    runs.push(Run {
                        weights: (ki * g.kernel_w + kj) * reduced * self.weights_step,
                        inputs: (oh * g.out_w + ow) * reduced * TILE_SAMPLES,
                        len: reduced,
                    });
                }
            }
            bounds.push(runs.len());
        }
        true
    }
}

/// `y = activation(conv2d(x, w) + bias)` on the register tile: per chunk of [`TILE_SAMPLES`]
/// samples, per output pixel and tile of [`TILE_ROWS`] output channels, one tile summed over
/// the [`ForwardRuns`].
pub(super) fn forward_by_tiles<T: Element>(
    path: SimdPath,
    g: &ConvGeometry,
    x: &[T],
    w: &[T],
    epilogue: Epilogue<T>,
) -> Vec<T> {
    let (pix, o, c) = (g.out_h * g.out_w, g.out_channels, g.in_channels);
    if g.batch * o * pix == 0 || c * g.in_h * g.in_w == 0 {
        let mut y = vec![T::ZERO; g.batch * o * pix];
        finish_maps(path, &mut y, o, pix, epilogue);
        return y;
    }
    let mut y = uninit_vec(g.batch * o * pix);
    let packed = pack_weights(g, w, true);
    count_flops(2 * (taps_inside_image(g) * c * o * g.batch) as u64);
    let runs = ForwardRuns::new(g, c, TILE_ROWS);
    let kernels = ElementTiles {
        path,
        packed: &packed,
        tiles: o.div_ceil(TILE_ROWS),
        channels: o,
    };
    runs.frame()
        .run(x, &kernels, epilogue, &mut y, |ki, oh, r, b| runs.runs_of(ki, oh, r, b));
    // SAFETY: every chunk of `y` went through `write_back`, which writes all of it.
    unsafe { assume_init_vec(y) }
}

/// `x = activation(conv2d^T(y, w) + bias)` on the register tile: per chunk of samples, per
/// input pixel and tile of input channels, one tile summed over the [`AdjointRuns`].
pub(super) fn input_adjoint_by_tiles<T: Element>(
    path: SimdPath,
    g: &ConvGeometry,
    gy: &[T],
    w: &[T],
    epilogue: Epilogue<T>,
) -> Vec<T> {
    let (pix, o, c) = (g.out_h * g.out_w, g.out_channels, g.in_channels);
    let (image_pix, image_len) = (g.in_h * g.in_w, c * g.in_h * g.in_w);
    if g.batch * image_len == 0 || pix == 0 || o == 0 {
        let mut x = vec![T::ZERO; g.batch * image_len];
        finish_maps(path, &mut x, c, image_pix, epilogue);
        return x;
    }
    let mut x = uninit_vec(g.batch * image_len);
    let packed = pack_weights(g, w, false);
    count_flops(2 * (taps_inside_image(g) * c * o * g.batch) as u64);
    let runs = AdjointRuns::new(g, o, TILE_ROWS);
    let kernels = ElementTiles {
        path,
        packed: &packed,
        tiles: c.div_ceil(TILE_ROWS),
        channels: c,
    };
    runs.frame().run(gy, &kernels, epilogue, &mut x, |ki, ih, r, b| {
        runs.runs_of(ki, ih, r, b)
    });
    // SAFETY: every chunk of `x` went through `write_back`, which writes all of it.
    unsafe { assume_init_vec(x) }
}
