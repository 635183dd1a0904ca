//! The register tile ([`super::tile`]) on bf16 operands: the reduction taken two steps at a
//! time, the sums in f32.
//!
//! AVX512_BF16's `vdpbf16ps` multiplies, in each of its sixteen f32 lanes, two pairs of bf16
//! and adds both products to the lane's sum: twice the multiply-adds of an f32 FMA, for the
//! same cost. To feed it, the bf16 operands are laid out with two consecutive steps of the
//! reduction side by side: a [`Bf16Pair`] holds step `2k` in its low half and step `2k + 1`
//! in its high half, the operands are `[.., pair step, TILE_SAMPLES]` and `[.., pair step,
//! TILE_ROWS]` in pairs, and the layouts pad the reduced axis to an even length with zeros.
//! A [`Run`] then counts pair steps: it is the f32 tile's run over half as many steps.
//!
//! Two kernels sum the same tile ([`PairKernel`]):
//! - `dot` (AVX512_BF16): per pair step, one load of the inputs and one `vdpbf16ps` per row,
//!   the row's weight pair broadcast from memory; given two blocks of inputs
//!   ([`accumulate_pairs_two_blocks_unchecked`]), each broadcast serves both blocks;
//! - `widening` (every SIMD path): the inputs widened to f32 in registers (a bf16 is the upper
//!   half of its f32: a shift or a mask, [`F32Simd::widen_bf16_pairs`]), the weights packed
//!   already widened, and two multiply-adds per row, the second step of the pair first, as
//!   `vdpbf16ps` is defined (Intel's SDM: the odd element, then the even, each added with
//!   one rounding). A product of two bf16 (8-bit significands) is exact in f32, so fused or
//!   not, every path rounds the same sums the same way: the two kernels give the same bits on
//!   every path, except that `vdpbf16ps` always treats subnormal inputs and results as zero
//!   (the widening kernel does too when denormals are flushed: `cpu::denormals`).

use super::scratch::Scratch;
use super::tile::{Run, TILE_LEN, TILE_ROWS, TILE_SAMPLES};
use crate::cpu::simd::SimdPath;
use rayon::prelude::*;

/// Two 16-bit floats (bf16, or f16 for [`HalfFormat::F16`]) of consecutive reduction steps:
/// the first in the low 16 bits.
pub type Bf16Pair = u32;

/// Which 16-bit float the pairs hold. The dot kernel and AMX take bf16 only; the widening
/// kernel either (f16 through F16C's `vcvtph2ps` on x86-64).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HalfFormat {
    Bf16,
    F16,
}

impl HalfFormat {
    /// The f32 value of 16 bits in this format (exact).
    pub fn widen(self, bits: u16) -> f32 {
        match self {
            HalfFormat::Bf16 => f32::from_bits((bits as u32) << 16),
            HalfFormat::F16 => half::f16::from_bits(bits).to_f32(),
        }
    }
}

/// The pair of `first` and `second` (bf16 bit patterns).
#[inline(always)]
pub fn bf16_pair(first: u16, second: u16) -> Bf16Pair {
    first as u32 | (second as u32) << 16
}

/// How the bf16 tile is summed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairKernel {
    /// `vdpbf16ps` (x86-64 AVX512_BF16).
    Dot,
    /// Widened to f32 in registers, on a SIMD path.
    Widening(SimdPath),
}

impl PairKernel {
    /// The kernel for `path`: `vdpbf16ps` on the AVX-512 path of a processor that has
    /// AVX512_BF16, the widening kernel on `path` otherwise.
    pub fn for_path(path: SimdPath) -> PairKernel {
        if path == SimdPath::Avx512 && has_avx512_bf16() {
            PairKernel::Dot
        } else {
            PairKernel::Widening(path)
        }
    }

    /// Every kernel this processor can run: `vdpbf16ps` where it has it, and the widening
    /// kernel on every supported path.
    pub fn supported() -> Vec<PairKernel> {
        let dot = has_avx512_bf16().then_some(PairKernel::Dot);
        dot.into_iter()
            .chain(SimdPath::supported().into_iter().map(PairKernel::Widening))
            .collect()
    }

    /// Whether the kernel wants its weights widened to f32 ([`PairWeights::widened`]).
    pub fn widens_weights(self) -> bool {
        matches!(self, PairKernel::Widening(_))
    }
}

impl std::fmt::Display for PairKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PairKernel::Dot => f.write_str("avx512bf16 dot"),
            PairKernel::Widening(path) => write!(f, "{path} widening"),
        }
    }
}

/// Whether `vdpbf16ps` does more multiply-adds a cycle than the f32 FMAs on this processor,
/// so that the dot kernel beats the f32 tile: true of AMD's processors with AVX512_BF16 (Zen 4
/// and 5; on this project's Zen 5, 812 GFLOP/s of `vdpbf16ps` against 440 of f32 FMAs on two
/// cores), not of Intel's (this project's Xeon retires one every two cycles: half the
/// multiply-adds of its two FMAs a cycle; its bf16 goes to AMX). The two kernels give the same
/// bits, so the choice changes the speed only. docs/benchmarks/amd-zen5.md and
/// intel-xeon-early.md have the measurements.
pub fn dot_outpaces_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // Asked once: every bf16 convolution chooses its kernel, and CPUID exits to the
        // hypervisor in a virtual machine.
        static AMD_WITH_BF16: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AMD_WITH_BF16.get_or_init(|| {
            // CPUID leaf 0 names the vendor in EBX, EDX, ECX: "Auth" "enti" "cAMD".
            #[allow(unused_unsafe)]
            // SAFETY: leaf 0 exists on every x86-64 processor.
            let id = unsafe { std::arch::x86_64::__cpuid(0) };
            let amd = [id.ebx, id.edx, id.ecx] == [0x6874_7541, 0x6974_6e65, 0x444d_4163];
            amd && has_avx512_bf16()
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this processor has AVX512_BF16 (with AVX-512F).
pub fn has_avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        SimdPath::Avx512.is_supported() && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Packed weights in pairs, as the kernel that reads them wants them: bf16 pairs for `dot`,
/// each pair widened to two f32 (`[.., TILE_ROWS, 2]`) for `widening`, which then broadcasts
/// them straight from memory instead of widening one per row and step.
pub struct PairWeights {
    pairs: Scratch<Bf16Pair>,
    widened: Option<Scratch<f32>>,
    format: HalfFormat,
}

impl PairWeights {
    /// `pairs` of `format` for `kernel`, widened if it wants them so.
    ///
    /// Panics if `kernel` does not take `format` (the dot kernel takes bf16 only).
    pub fn new(kernel: PairKernel, format: HalfFormat, pairs: Scratch<Bf16Pair>) -> PairWeights {
        assert!(
            kernel.widens_weights() || format == HalfFormat::Bf16,
            "tile_pairs: {kernel} takes bf16 only"
        );
        let widened = kernel.widens_weights().then(|| {
            let mut widened = Scratch::take(2 * pairs.len());
            widened
                .par_chunks_mut(2 * 4096)
                .zip(pairs.par_chunks(4096))
                .for_each(|(out, pairs)| {
                    for (out, &pair) in out.chunks_exact_mut(2).zip(pairs) {
                        out[0] = format.widen(pair as u16);
                        out[1] = format.widen((pair >> 16) as u16);
                    }
                });
            widened
        });
        PairWeights { pairs, widened, format }
    }

    /// Pair steps times rows: the length the runs are checked against.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there are no weights.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The weights of `range` (in pairs) for `kernel`.
    fn slice(&self, kernel: PairKernel, start: usize, len: usize) -> WeightsRef<'_> {
        match (&self.widened, kernel.widens_weights()) {
            (Some(w), true) => WeightsRef::Widened(&w[2 * start..][..2 * len]),
            (None, false) => WeightsRef::Pairs(&self.pairs[start..][..len]),
            _ => panic!("tile_pairs: weights packed for another kernel than {kernel}"),
        }
    }
}

#[derive(Clone, Copy)]
enum WeightsRef<'a> {
    Pairs(&'a [Bf16Pair]),
    Widened(&'a [f32]),
}

impl WeightsRef<'_> {
    fn pairs_ptr(self) -> *const u32 {
        match self {
            WeightsRef::Pairs(w) => w.as_ptr(),
            WeightsRef::Widened(_) => unreachable!("the dot kernel reads pairs"),
        }
    }
    fn widened_ptr(self) -> *const f32 {
        match self {
            WeightsRef::Widened(w) => w.as_ptr(),
            WeightsRef::Pairs(_) => unreachable!("the widening kernel reads widened weights"),
        }
    }
}

/// `out[r * TILE_SAMPLES + s] += sum over runs, pair steps k and j in 0..2 of w[k][r][j] *
/// x[k][s][j]` for the first `rows` rows, where the tile's weights are the `weights.1` pairs
/// at `weights.0` of `packed` and pair step `k` of a run reads the pairs at `run.weights +
/// k * TILE_ROWS` and at `run.inputs + k * TILE_SAMPLES`. With `second`, a second tile of weights
/// (at `second.0`, its first `second.1` rows) over the same runs into `out[1]`, in one pass
/// where the kernel has registers for both (the dot kernel and AVX-512: its padding rows,
/// whose weights are zero, are summed too and left as garbage). The real rows get the same
/// sums in the same order either way.
///
/// # Safety
/// [`super::tile::check_runs`] passes (in pairs) for `runs` with `weights_len` and `inputs.len()`, both tiles' weights
/// lie inside `packed`, and `kernel` runs on this processor.
#[allow(clippy::too_many_arguments)]
pub unsafe fn accumulate_pairs_unchecked(
    kernel: PairKernel,
    rows: usize,
    packed: &PairWeights,
    weights: (usize, usize),
    second: Option<(usize, usize)>,
    inputs: &[Bf16Pair],
    runs: &[Run],
    out: [&mut [f32]; 2],
) {
    let [out0, out1] = out;
    assert!((1..=TILE_ROWS).contains(&rows), "tile_pairs: {rows} rows");
    assert!(out0.len() >= TILE_LEN, "tile_pairs: output too small");
    let w0 = packed.slice(kernel, weights.0, weights.1);
    let x = inputs.as_ptr();
    let Some((second_start, second_rows)) = second else {
        // SAFETY: the caller's contract, and `out0` holds a tile.
        unsafe { kernels::grid(kernel, packed.format, rows, [w0], x, runs, [out0.as_mut_ptr()]) };
        return;
    };
    assert!(out1.len() >= TILE_LEN, "tile_pairs: output too small");
    let w1 = packed.slice(kernel, second_start, weights.1);
    // SAFETY (both branches): as above, for both tiles.
    unsafe {
        if matches!(kernel, PairKernel::Dot | PairKernel::Widening(SimdPath::Avx512)) {
            let out = [out0.as_mut_ptr(), out1.as_mut_ptr()];
            kernels::grid(kernel, packed.format, TILE_ROWS, [w0, w1], x, runs, out);
        } else {
            kernels::grid(kernel, packed.format, rows, [w0], x, runs, [out0.as_mut_ptr()]);
            kernels::grid(kernel, packed.format, second_rows, [w1], x, runs, [out1.as_mut_ptr()]);
        }
    }
}

/// [`accumulate_pairs_unchecked`] over the same runs of two blocks of inputs, `inputs[x]`
/// into `out[x]` (each as that function's `out`): with the dot kernel in one pass, each weight
/// pair broadcast once for both blocks (two tiles by two blocks: 24 sums, two loads and twelve
/// broadcasts per 24 `vdpbf16ps`); with the others, one block after the other. The same sums
/// in the same order either way.
///
/// # Safety
/// As [`accumulate_pairs_unchecked`], for both inputs.
#[allow(clippy::too_many_arguments)]
pub unsafe fn accumulate_pairs_two_blocks_unchecked(
    kernel: PairKernel,
    rows: usize,
    packed: &PairWeights,
    weights: (usize, usize),
    second: Option<(usize, usize)>,
    inputs: [&[Bf16Pair]; 2],
    runs: &[Run],
    out: [[&mut [f32]; 2]; 2],
) {
    let [out0, out1] = out;
    if kernel != PairKernel::Dot {
        // SAFETY: forwarded to the caller.
        unsafe {
            accumulate_pairs_unchecked(kernel, rows, packed, weights, second, inputs[0], runs, out0);
            accumulate_pairs_unchecked(kernel, rows, packed, weights, second, inputs[1], runs, out1);
        }
        return;
    }
    let ([a0, a1], [b0, b1]) = (out0, out1);
    assert!((1..=TILE_ROWS).contains(&rows), "tile_pairs: {rows} rows");
    assert!(
        a0.len() >= TILE_LEN && b0.len() >= TILE_LEN,
        "tile_pairs: output too small"
    );
    let w0 = packed.slice(kernel, weights.0, weights.1).pairs_ptr();
    let x = inputs.map(<[Bf16Pair]>::as_ptr);
    // SAFETY (both branches): the caller's contract, for both blocks, and every output holds
    // a tile.
    unsafe {
        match second {
            None => kernels::dot_grid::<1, 2>(rows, [w0], x, runs, [[a0.as_mut_ptr(), b0.as_mut_ptr()]]),
            Some((second_start, _)) => {
                assert!(
                    a1.len() >= TILE_LEN && b1.len() >= TILE_LEN,
                    "tile_pairs: output too small"
                );
                let w1 = packed.slice(kernel, second_start, weights.1).pairs_ptr();
                // Both tiles' padding rows are summed too, as in `accumulate_pairs_unchecked`.
                let out = [[a0.as_mut_ptr(), b0.as_mut_ptr()], [a1.as_mut_ptr(), b1.as_mut_ptr()]];
                kernels::dot_grid::<2, 2>(TILE_ROWS, [w0, w1], x, runs, out)
            }
        }
    }
}

#[path = "tile_pairs_kernels.rs"]
mod kernels;

/// Independent `vdpbf16ps` chains of [`dot_peak_gflops`], as the f32 peak runs (24, as many as
/// the dot kernel's sums, read lower on Zen 5: the loop kept its array in memory).
pub(crate) const DOT_CHAINS: usize = 12;

/// The rate of bf16 multiply-adds `vdpbf16ps` reaches with `threads` threads (each running
/// [`DOT_CHAINS`] independent chains of 512-bit `vdpbf16ps`), in GFLOP/s (two per
/// multiply-add), the best of three windows of about a tenth of a second (a peak: another
/// tenant on a shared machine only lowers a window), or `None` without AVX512_BF16: beside
/// [`crate::cpu::simd::fma_peak_gflops`], what says whether the dot kernel pays on a processor.
pub fn dot_peak_gflops(threads: usize) -> Option<f64> {
    if !has_avx512_bf16() {
        return None;
    }
    // 25e9 multiply-adds a thread and window: 0.1 s at 500 GFLOP/s a core.
    let iterations: u64 = 25_000_000_000 / (DOT_CHAINS as u64 * 32);
    let window = || {
        let start = std::time::Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..threads.max(1) {
                // SAFETY: AVX512_BF16 was checked above.
                scope.spawn(move || std::hint::black_box(unsafe { kernels::dot_chains(iterations) }));
            }
        });
        let flops = threads.max(1) as f64 * iterations as f64 * (DOT_CHAINS * 32 * 2) as f64;
        flops / start.elapsed().as_secs_f64() / 1e9
    };
    Some((0..3).map(|_| window()).fold(0.0, f64::max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::conv::tile::check_runs;
    use half::bf16;

    fn bits(v: f32) -> u16 {
        bf16::from_f32(v).to_bits()
    }

    /// Every kernel and row count, one tile and two, against plain f64 sums of the same bf16
    /// values (exact products, so only the f32 rounding of the sums differs), and every kernel
    /// against the first one bit for bit.
    #[test]
    fn every_kernel_gives_the_plain_sums_and_the_same_bits() {
        let steps = 2 * 40; // pair steps * 2 of weights per row, over two tiles' worth
                            // Full 8-bit significands over a few binades, so that the sums round (a mutation
                            // that swaps the order of a pair's two multiply-adds changes bits).
        let mut state = 0x2545_f491_u64;
        let mut value = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let unit = (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
            bf16::from_f32(unit * [1.0, 0.37, 5.5, 0.021][(state >> 20) as usize % 4]).to_f32()
        };
        let w_values: Vec<f32> = (0..2 * steps * TILE_ROWS).map(|_| value()).collect();
        let x_values: Vec<f32> = (0..steps * TILE_SAMPLES).map(|_| value()).collect();
        // Pairs: weights [tile][pair step][row], inputs [pair step][sample].
        let pairs_of = |values: &[f32], width: usize| -> Vec<u32> {
            let pair_steps = values.len() / width / 2;
            (0..pair_steps * width)
                .map(|i| {
                    let (k, j) = (i / width, i % width);
                    bf16_pair(bits(values[2 * k * width + j]), bits(values[(2 * k + 1) * width + j]))
                })
                .collect()
        };
        let w_pairs = pairs_of(&w_values, TILE_ROWS);
        let x_pairs = pairs_of(&x_values, TILE_SAMPLES);
        let tile_pairs = w_pairs.len() / 2;
        let runs = [
            Run {
                weights: 0,
                inputs: 0,
                len: 7,
            },
            Run {
                weights: 13 * TILE_ROWS,
                inputs: 2 * TILE_SAMPLES,
                len: 20,
            },
            Run {
                weights: 5 * TILE_ROWS,
                inputs: 30 * TILE_SAMPLES,
                len: 1,
            },
        ];
        check_runs(&runs, tile_pairs, x_pairs.len());
        let start = |i: usize| (i % 7) as f32 - 3.0;
        let want = |tile: usize, rows: usize| -> Vec<f64> {
            let mut out: Vec<f64> = (0..TILE_LEN).map(|i| start(i) as f64).collect();
            for run in &runs {
                for k in 0..run.len {
                    for r in 0..rows {
                        for s in 0..TILE_SAMPLES {
                            let pair_w = w_pairs[tile * tile_pairs + run.weights + k * TILE_ROWS + r];
                            let pair_x = x_pairs[run.inputs + k * TILE_SAMPLES + s];
                            let f = |p: u32, high: bool| {
                                f32::from_bits(if high { p & 0xffff_0000 } else { p << 16 }) as f64
                            };
                            out[r * TILE_SAMPLES + s] +=
                                f(pair_w, false) * f(pair_x, false) + f(pair_w, true) * f(pair_x, true);
                        }
                    }
                }
            }
            out
        };
        let mut first_bits: Option<Vec<u32>> = None;
        for kernel in PairKernel::supported() {
            let pairs = {
                let mut s = Scratch::take(w_pairs.len());
                s.copy_from_slice(&w_pairs);
                s
            };
            let packed = PairWeights::new(kernel, HalfFormat::Bf16, pairs);
            for rows in 1..=TILE_ROWS {
                let (mut a, mut b): (Vec<f32>, Vec<f32>) =
                    ((0..TILE_LEN).map(start).collect(), (0..TILE_LEN).map(start).collect());
                // SAFETY: the runs were checked, both tiles lie inside the weights, and the
                // kernel is supported.
                unsafe {
                    accumulate_pairs_unchecked(
                        kernel,
                        TILE_ROWS,
                        &packed,
                        (0, tile_pairs),
                        Some((tile_pairs, rows)),
                        &x_pairs,
                        &runs,
                        [&mut a, &mut b],
                    )
                };
                for (tile, got, rows) in [(0, &a, TILE_ROWS), (1, &b, rows)] {
                    let want = want(tile, rows);
                    for i in 0..rows * TILE_SAMPLES {
                        assert!(
                            (got[i] as f64 - want[i]).abs() <= 1e-5 * want[i].abs().max(1.0),
                            "{kernel}: tile {tile}, {rows} rows, element {i}: {} against {}",
                            got[i],
                            want[i]
                        );
                    }
                }
                let mut single: Vec<f32> = (0..TILE_LEN).map(start).collect();
                // SAFETY: as above.
                unsafe {
                    accumulate_pairs_unchecked(
                        kernel,
                        rows,
                        &packed,
                        (tile_pairs, tile_pairs),
                        None,
                        &x_pairs,
                        &runs,
                        [&mut single, &mut []],
                    )
                };
                let real = rows * TILE_SAMPLES;
                assert_eq!(
                    single[..real].iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    b[..real].iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{kernel}: one tile at a time gives the bits of two, {rows} rows"
                );
                assert_eq!(&single[real..], &(real..TILE_LEN).map(start).collect::<Vec<_>>()[..]);
                if rows == TILE_ROWS {
                    let got: Vec<u32> = a.iter().chain(&b).map(|v| v.to_bits()).collect();
                    match &first_bits {
                        None => first_bits = Some(got),
                        Some(first) => assert_eq!(first, &got, "{kernel}: other bits than the first kernel's"),
                    }
                }
            }
        }
    }

    /// Two blocks of inputs at a time, with one tile or two, give in their real rows the bits
    /// of one block at a time, on every kernel (the dot kernel sums both blocks in one pass).
    #[test]
    fn two_blocks_give_the_bits_of_one_block_at_a_time() {
        let pairs_of = |len: usize, seed: u32| -> Vec<u32> {
            // Full 8-bit significands over a few binades, so that the sums round.
            (0..len as u32)
                .map(|i| {
                    let v = |k: u32| ((k.wrapping_mul(2654435761) >> 8) % 511) as f32 / 97.0 - 2.6;
                    bf16_pair(bits(v(2 * i + seed)), bits(v(2 * i + 1 + seed) * 0.03))
                })
                .collect()
        };
        let steps = 40;
        let w_pairs = pairs_of(2 * steps * TILE_ROWS, 1);
        let x_pairs = pairs_of(2 * steps * TILE_SAMPLES, 7);
        let (tile_pairs, block) = (steps * TILE_ROWS, steps * TILE_SAMPLES);
        let blocks = [&x_pairs[..block], &x_pairs[block..]];
        let runs = [
            Run {
                weights: 3 * TILE_ROWS,
                inputs: TILE_SAMPLES,
                len: 33,
            },
            Run {
                weights: 0,
                inputs: 0,
                len: 9,
            },
        ];
        check_runs(&runs, tile_pairs, block);
        let start = || -> Vec<f32> { (0..TILE_LEN).map(|v| v as f32 / 7.0).collect() };
        let bits_of = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for kernel in PairKernel::supported() {
            let mut pairs = Scratch::take(w_pairs.len());
            pairs.copy_from_slice(&w_pairs);
            let packed = PairWeights::new(kernel, HalfFormat::Bf16, pairs);
            for rows in 1..=TILE_ROWS {
                for two_tiles in [false, true] {
                    let (first_rows, second) = if two_tiles {
                        (TILE_ROWS, Some((tile_pairs, rows)))
                    } else {
                        (rows, None)
                    };
                    let one_block = |x: &[u32]| {
                        let (mut a, mut b) = (start(), start());
                        // SAFETY: the runs were checked against a tile of weights and a block
                        // of inputs, both tiles lie inside the weights, and the kernel is
                        // supported.
                        unsafe {
                            accumulate_pairs_unchecked(
                                kernel,
                                first_rows,
                                &packed,
                                (0, tile_pairs),
                                second,
                                x,
                                &runs,
                                [&mut a, &mut b],
                            )
                        };
                        [a, b]
                    };
                    let mut four = [start(), start(), start(), start()];
                    let [a, b, c, d] = &mut four;
                    // SAFETY: as above, for both blocks.
                    unsafe {
                        accumulate_pairs_two_blocks_unchecked(
                            kernel,
                            first_rows,
                            &packed,
                            (0, tile_pairs),
                            second,
                            blocks,
                            &runs,
                            [[a, b], [c, d]],
                        )
                    };
                    for (x, input) in blocks.iter().enumerate() {
                        let want = one_block(input);
                        let what = format!("{kernel}, block {x}, {rows} rows, two tiles: {two_tiles}");
                        let real = first_rows * TILE_SAMPLES;
                        assert_eq!(
                            bits_of(&four[2 * x][..real]),
                            bits_of(&want[0][..real]),
                            "{what}: first tile"
                        );
                        if two_tiles {
                            let real = rows * TILE_SAMPLES;
                            assert_eq!(
                                bits_of(&four[2 * x + 1][..real]),
                                bits_of(&want[1][..real]),
                                "{what}: second tile"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_dot_kernel_is_taken_where_the_processor_has_it() {
        assert_eq!(
            PairKernel::for_path(SimdPath::Avx512) == PairKernel::Dot,
            has_avx512_bf16() && SimdPath::Avx512.is_supported()
        );
        assert_eq!(
            PairKernel::for_path(SimdPath::Portable),
            PairKernel::Widening(SimdPath::Portable)
        );
    }
}
