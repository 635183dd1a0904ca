//! The bf16 convolutions' sums on Intel's AMX tiles (Sapphire Rapids and later Xeons).
//!
//! AMX adds eight tile registers of up to 16 rows of 64 bytes, and `tdpbf16ps`, which adds to
//! a 16 x 16 tile of f32 sums `C` the product of a 16 x 32 tile of bf16 `A` and a 32 x 16
//! tile of bf16 `B`, the latter with pairs of its rows interleaved: row `k` of `B` holds, for
//! each of the 16 columns, the pair of rows `2k` and `2k + 1`. That is the bf16 tile's
//! operand layout ([`super::tile_pairs`]): a pair step of 16 samples is one row of `B`, and
//! 16 pair steps of a run are a whole `B`. The weights are packed row by row instead
//! (`[blocks of 16 channels, channel, pair step]`, [`super::bf16`]), so that 16 pair steps of
//! 16 channels are one `A`, read with the row stride of all the steps. One `tdpbf16ps` is
//! 8,192 multiply-adds; this processor family runs one every 16 cycles: 512 per cycle,
//! against 32 for AVX-512 FMAs on f32 (measured on this project's Xeon: 1.8 T multiply-adds a
//! second on one core, 15x its f32 FMA rate).
//!
//! Per output pixel, [`accumulate_row`] keeps the sums of four blocks of 16 channels (64
//! channels, four tiles) in tile registers while the runs go by: each 16 pair steps load one
//! `B` and, per block, one `A`, for four `tdpbf16ps`. It needs every run to be a whole number
//! of 16 pair steps (32 channels at each tap), which the callers check
//! ([`runs_fit`]); other layers take the vector kernels.
//!
//! Rust has no AMX intrinsics on its stable channel, so the instructions are inline
//! assembly naming the tile registers outright (nothing else in the process uses them). Linux
//! hands the tiles' state to a process only when it asks (`arch_prctl(ARCH_REQ_XCOMP_PERM)`,
//! [`amx_available`]); each call configures the tiles (`ldtilecfg`) and releases them at the end
//! (`tilerelease`), so that a thread carries no tile state between calls.

// Outside x86-64 `amx_available` is false and the kernels are never entered.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_variables, unreachable_code))]

use super::tile::{Run, TILE_SAMPLES};
use super::tile_pairs::Bf16Pair;

/// Channels of one tile of sums (its rows), and pair steps of one `tdpbf16ps`.
pub const AMX_BLOCK: usize = 16;

/// Whether this process can run the AMX kernel: an x86-64 processor with AMX-TILE and AMX-BF16
/// under a Linux that granted the tile data state. Asked once per process.
pub fn amx_available() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        use std::sync::OnceLock;
        static AVAILABLE: OnceLock<bool> = OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            // CPUID leaf 7: EDX bit 22 is AMX-BF16, bit 24 AMX-TILE (`is_x86_feature_detected`
            // does not take them on stable Rust).
            let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
            let (bf16, tile) = (leaf7.edx >> 22 & 1 == 1, leaf7.edx >> 24 & 1 == 1);
            bf16 && tile && request_tile_data()
        })
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        false
    }
}

/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: Linux (5.16 and later) lets a process
/// use the AMX tiles only once it has asked; true when granted.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_tile_data() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let result: i64;
    // SAFETY: a system call that only changes which state the kernel saves for this process;
    // it clobbers rcx and r11, as every x86-64 Linux system call does.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => result,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    result == 0
}

/// The rate of bf16 multiply-adds the AMX tiles reach with `threads` threads (each running
/// four independent `tdpbf16ps` chains on tiles in registers for about a quarter of a
/// second), in GFLOP/s (two per multiply-add), or `None` without AMX.
pub fn amx_peak_gflops(threads: usize) -> Option<f64> {
    if !amx_available() {
        return None;
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("AMX outside x86-64: `amx_available` is false there");
    #[cfg(target_arch = "x86_64")]
    let iterations: u64 = 200_000;
    #[cfg(target_arch = "x86_64")]
    let start = std::time::Instant::now();
    #[cfg(target_arch = "x86_64")]
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(move || {
                // SAFETY: AMX is available; the tiles are configured, only register tiles are
                // used (zeroed, never loaded from memory) and released at the end.
                unsafe {
                    std::arch::asm!("ldtilecfg [{0}]", in(reg) &CONFIG, options(nostack, readonly));
                    std::arch::asm!(
                        "tilezero tmm0",
                        "tilezero tmm1",
                        "tilezero tmm2",
                        "tilezero tmm3",
                        "tilezero tmm4",
                        "tilezero tmm6",
                        options(nostack, nomem)
                    );
                    for _ in 0..iterations {
                        std::arch::asm!(
                            "tdpbf16ps tmm0, tmm4, tmm6",
                            "tdpbf16ps tmm1, tmm4, tmm6",
                            "tdpbf16ps tmm2, tmm4, tmm6",
                            "tdpbf16ps tmm3, tmm4, tmm6",
                            options(nostack, nomem)
                        );
                    }
                    std::arch::asm!("tilerelease", options(nostack, nomem));
                }
            });
        }
    });
    #[cfg(target_arch = "x86_64")]
    let flops = threads.max(1) as f64 * iterations as f64 * 4.0 * (16 * 16 * 32 * 2) as f64;
    #[cfg(target_arch = "x86_64")]
    Some(flops / start.elapsed().as_secs_f64() / 1e9)
}

/// Whether every run of `runs` is a whole number of `tdpbf16ps` steps: the AMX kernel's
/// condition, met when the reduced channels at each tap come in multiples of 32.
pub fn runs_fit(reduced_pairs: usize) -> bool {
    reduced_pairs > 0 && reduced_pairs.is_multiple_of(AMX_BLOCK)
}

/// `ldtilecfg`'s operand: palette 1, every tile 16 rows of 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

const CONFIG: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    bytes_per_row: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
};

/// For every pixel `i` of a row of sums `[pixels, blocks * AMX_BLOCK, TILE_SAMPLES]`, every block
/// of 16 channels summed over `runs[bounds[i]..bounds[i + 1]]`: `sums[i][c][s] += sum over
/// runs and their pair steps k of pair(weights[c][run.weights + k]) . pair(operand[run.inputs + k
/// * TILE_SAMPLES + s])`, where `weights` is `[blocks * AMX_BLOCK, steps]` pairs.
///
/// Panics if a run is not a whole number of [`AMX_BLOCK`] steps or reaches past its operands.
///
/// # Safety
/// [`amx_available`] is true.
pub unsafe fn accumulate_row(
    weights: &[Bf16Pair],
    steps: usize,
    operand: &[Bf16Pair],
    runs: &[Run],
    bounds: &[usize],
    row: &mut [f32],
) {
    let blocks = weights.len() / (steps * AMX_BLOCK).max(1);
    let pixel_len = blocks * AMX_BLOCK * TILE_SAMPLES;
    assert!(
        blocks > 0 && weights.len() == blocks * AMX_BLOCK * steps,
        "amx: weights of {steps} steps"
    );
    assert!(row.len().is_multiple_of(pixel_len), "amx: a row of {} sums", row.len());
    for run in runs {
        let fits = run.len.is_multiple_of(AMX_BLOCK)
            && run.weights.checked_add(run.len).is_some_and(|end| end <= steps)
            && run
                .len
                .checked_mul(TILE_SAMPLES)
                .and_then(|n| n.checked_add(run.inputs))
                .is_some_and(|end| end <= operand.len());
        assert!(fits, "amx: run {run:?} outside its operands or not whole tiles");
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("AMX outside x86-64: `amx_available` is false there");
    #[cfg(target_arch = "x86_64")]
    let (a_stride, b_stride) = (steps * 4, TILE_SAMPLES * 4);
    // SAFETY: the caller vouches for AMX; every tile loaded or stored below lies inside the
    // runs checked above (A: 16 rows of 16 pairs at a stride of `steps` pairs, in a block of
    // the weights; B: 16 steps of 16 pairs of a run) or inside one pixel's sums (16 channels
    // of 16 f32 per block).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::asm!("ldtilecfg [{0}]", in(reg) &CONFIG, options(nostack, readonly));
        for (i, sums) in row.chunks_exact_mut(pixel_len).enumerate() {
            let pixel_runs = &runs[bounds[i]..bounds[i + 1]];
            let mut block = 0;
            while block + 4 <= blocks {
                four_blocks(weights, steps, block, operand, pixel_runs, sums, a_stride, b_stride);
                block += 4;
            }
            while block < blocks {
                one_block(weights, steps, block, operand, pixel_runs, sums, a_stride, b_stride);
                block += 1;
            }
        }
        std::arch::asm!("tilerelease", options(nostack, nomem));
    }
}

/// Tiles 0-3 loaded with four blocks of sums from `c` (each 16 rows of 16 f32, one after the
/// other), and stored back: the sums a group of four blocks keeps in registers.
///
/// # Safety
/// `c` holds four blocks of sums, and the tiles are configured.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn load_four_sums(c: *mut f32) {
    let (block, stride) = (AMX_BLOCK * TILE_SAMPLES, TILE_SAMPLES * 4);
    // SAFETY: forwarded to the caller.
    unsafe {
        std::arch::asm!(
            "tileloadd tmm0, [{c0} + {s}*1]",
            "tileloadd tmm1, [{c1} + {s}*1]",
            "tileloadd tmm2, [{c2} + {s}*1]",
            "tileloadd tmm3, [{c3} + {s}*1]",
            c0 = in(reg) c,
            c1 = in(reg) c.add(block),
            c2 = in(reg) c.add(2 * block),
            c3 = in(reg) c.add(3 * block),
            s = in(reg) stride,
            options(nostack, readonly),
        );
    }
}

/// See [`load_four_sums`].
///
/// # Safety
/// As [`load_four_sums`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn store_four_sums(c: *mut f32) {
    let (block, stride) = (AMX_BLOCK * TILE_SAMPLES, TILE_SAMPLES * 4);
    // SAFETY: forwarded to the caller.
    unsafe {
        std::arch::asm!(
            "tilestored [{c0} + {s}*1], tmm0",
            "tilestored [{c1} + {s}*1], tmm1",
            "tilestored [{c2} + {s}*1], tmm2",
            "tilestored [{c3} + {s}*1], tmm3",
            c0 = in(reg) c,
            c1 = in(reg) c.add(block),
            c2 = in(reg) c.add(2 * block),
            c3 = in(reg) c.add(3 * block),
            s = in(reg) stride,
            options(nostack),
        );
    }
}

/// Four blocks of sums, from `first`, in tiles 0-3 (A in tiles 4 and 5, B in tile 6).
///
/// # Safety
/// As [`accumulate_row`], inside its checks, with the tiles configured.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn four_blocks(
    weights: &[Bf16Pair],
    steps: usize,
    first: usize,
    operand: &[Bf16Pair],
    runs: &[Run],
    sums: &mut [f32],
    a_stride: usize,
    b_stride: usize,
) {
    let block_sums = AMX_BLOCK * TILE_SAMPLES;
    let block_weights = AMX_BLOCK * steps;
    // SAFETY: forwarded to the caller.
    unsafe {
        let c = sums.as_mut_ptr().add(first * block_sums);
        load_four_sums(c);
        for run in runs {
            let a = weights.as_ptr().add(first * block_weights + run.weights);
            let b = operand.as_ptr().add(run.inputs);
            for k in (0..run.len).step_by(AMX_BLOCK) {
                let a = a.add(k);
                std::arch::asm!(
                    "tileloadd tmm6, [{b} + {sb}*1]",
                    "tileloadd tmm4, [{a0} + {sa}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tileloadd tmm5, [{a1} + {sa}*1]",
                    "tdpbf16ps tmm1, tmm5, tmm6",
                    "tileloadd tmm4, [{a2} + {sa}*1]",
                    "tdpbf16ps tmm2, tmm4, tmm6",
                    "tileloadd tmm5, [{a3} + {sa}*1]",
                    "tdpbf16ps tmm3, tmm5, tmm6",
                    b = in(reg) b.add(k * TILE_SAMPLES),
                    a0 = in(reg) a,
                    a1 = in(reg) a.add(block_weights),
                    a2 = in(reg) a.add(2 * block_weights),
                    a3 = in(reg) a.add(3 * block_weights),
                    sb = in(reg) b_stride,
                    sa = in(reg) a_stride,
                    options(nostack, readonly),
                );
            }
        }
        store_four_sums(c);
    }
}

/// One block of sums, `block`, in tile 0 (A in tile 4, B in tile 6).
///
/// # Safety
/// As [`four_blocks`].
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn one_block(
    weights: &[Bf16Pair],
    steps: usize,
    block: usize,
    operand: &[Bf16Pair],
    runs: &[Run],
    sums: &mut [f32],
    a_stride: usize,
    b_stride: usize,
) {
    // SAFETY: forwarded to the caller.
    unsafe {
        let c = sums.as_mut_ptr().add(block * AMX_BLOCK * TILE_SAMPLES);
        std::arch::asm!("tileloadd tmm0, [{c} + {s}*1]", c = in(reg) c, s = in(reg) b_stride, options(nostack, readonly));
        for run in runs {
            let a = weights.as_ptr().add(block * AMX_BLOCK * steps + run.weights);
            let b = operand.as_ptr().add(run.inputs);
            for k in (0..run.len).step_by(AMX_BLOCK) {
                std::arch::asm!(
                    "tileloadd tmm6, [{b} + {sb}*1]",
                    "tileloadd tmm4, [{a} + {sa}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    b = in(reg) b.add(k * TILE_SAMPLES),
                    a = in(reg) a.add(k),
                    sb = in(reg) b_stride,
                    sa = in(reg) a_stride,
                    options(nostack, readonly),
                );
            }
        }
        std::arch::asm!("tilestored [{c} + {s}*1], tmm0", c = in(reg) c, s = in(reg) b_stride, options(nostack));
    }
}

/// For `blocks` blocks of 16 columns: `out[b][r][col] += sum over runs and their pair steps k
/// of pair(a[r][run.weights + k]) . pair(b[b][run.inputs + k * 16 + col])`, where `a` is 16 rows
/// of `a_steps` pairs and `b` holds `blocks` blocks of `b_block` pairs, each `[.., pair step,
/// 16]`, and `out` is `[blocks, 16, 16]` f32: the weight gradient's product (rows output
/// channels, columns input channels, the reduction over pixels and pairs of samples). Four
/// blocks at a time share each `A`.
///
/// Panics if a run is not a whole number of [`AMX_BLOCK`] steps or reaches past its operands.
///
/// # Safety
/// [`amx_available`] is true.
pub unsafe fn accumulate_products(
    a: &[Bf16Pair],
    a_steps: usize,
    b: &[Bf16Pair],
    b_block: usize,
    runs: &[Run],
    out: &mut [f32],
) {
    let tile = AMX_BLOCK * TILE_SAMPLES;
    let blocks = out.len() / tile;
    assert!(
        a.len() >= AMX_BLOCK * a_steps && out.len() == blocks * tile,
        "amx: operands of the products"
    );
    assert!(
        b.len() >= blocks * b_block,
        "amx: {blocks} blocks of {b_block} past the operand"
    );
    for run in runs {
        let fits = run.len.is_multiple_of(AMX_BLOCK)
            && run.weights.checked_add(run.len).is_some_and(|end| end <= a_steps)
            && run
                .len
                .checked_mul(TILE_SAMPLES)
                .and_then(|n| n.checked_add(run.inputs))
                .is_some_and(|end| end <= b_block);
        assert!(fits, "amx: run {run:?} outside its operands or not whole tiles");
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("AMX outside x86-64: `amx_available` is false there");
    #[cfg(target_arch = "x86_64")]
    let (a_stride, b_stride) = (a_steps * 4, TILE_SAMPLES * 4);
    // SAFETY: the caller vouches for AMX; every A lies in `a`'s 16 rows inside a checked run,
    // every B in its block inside a checked run, every C in `out`.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::asm!("ldtilecfg [{0}]", in(reg) &CONFIG, options(nostack, readonly));
        let mut block = 0;
        while block < blocks {
            let c = out.as_mut_ptr().add(block * tile);
            if block + 4 <= blocks {
                load_four_sums(c);
                for run in runs {
                    let a = a.as_ptr().add(run.weights);
                    let b = b.as_ptr().add(block * b_block + run.inputs);
                    for k in (0..run.len).step_by(AMX_BLOCK) {
                        let b = b.add(k * TILE_SAMPLES);
                        std::arch::asm!(
                            "tileloadd tmm4, [{a} + {sa}*1]",
                            "tileloadd tmm6, [{b0} + {sb}*1]",
                            "tdpbf16ps tmm0, tmm4, tmm6",
                            "tileloadd tmm7, [{b1} + {sb}*1]",
                            "tdpbf16ps tmm1, tmm4, tmm7",
                            "tileloadd tmm6, [{b2} + {sb}*1]",
                            "tdpbf16ps tmm2, tmm4, tmm6",
                            "tileloadd tmm7, [{b3} + {sb}*1]",
                            "tdpbf16ps tmm3, tmm4, tmm7",
                            a = in(reg) a.add(k),
                            b0 = in(reg) b,
                            b1 = in(reg) b.add(b_block),
                            b2 = in(reg) b.add(2 * b_block),
                            b3 = in(reg) b.add(3 * b_block),
                            sa = in(reg) a_stride,
                            sb = in(reg) b_stride,
                            options(nostack, readonly),
                        );
                    }
                }
                store_four_sums(c);
                block += 4;
            } else {
                std::arch::asm!("tileloadd tmm0, [{c} + {s}*1]", c = in(reg) c, s = in(reg) b_stride, options(nostack, readonly));
                for run in runs {
                    let a = a.as_ptr().add(run.weights);
                    let b = b.as_ptr().add(block * b_block + run.inputs);
                    for k in (0..run.len).step_by(AMX_BLOCK) {
                        std::arch::asm!(
                            "tileloadd tmm4, [{a} + {sa}*1]",
                            "tileloadd tmm6, [{b} + {sb}*1]",
                            "tdpbf16ps tmm0, tmm4, tmm6",
                            a = in(reg) a.add(k),
                            b = in(reg) b.add(k * TILE_SAMPLES),
                            sa = in(reg) a_stride,
                            sb = in(reg) b_stride,
                            options(nostack, readonly),
                        );
                    }
                }
                std::arch::asm!("tilestored [{c} + {s}*1], tmm0", c = in(reg) c, s = in(reg) b_stride, options(nostack));
                block += 1;
            }
        }
        std::arch::asm!("tilerelease", options(nostack, nomem));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::conv::tile_pairs::bf16_pair;
    use half::bf16;

    /// Five blocks (a group of four and one alone) over runs of 16 and 48 pair steps, against
    /// f64 sums of the same bf16 values.
    #[test]
    fn amx_sums_match_plain_sums() {
        if !amx_available() {
            eprintln!("skipped: this processor (or its kernel) has no AMX-BF16");
            return;
        }
        let (blocks, steps, pixels) = (5, 64, 2);
        let mut state = 7u64;
        let mut value = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            bf16::from_f32((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0).to_bits()
        };
        let weights: Vec<u32> = (0..blocks * AMX_BLOCK * steps)
            .map(|_| bf16_pair(value(), value()))
            .collect();
        let operand: Vec<u32> = (0..steps * TILE_SAMPLES).map(|_| bf16_pair(value(), value())).collect();
        let runs = [
            Run {
                weights: 16,
                inputs: 0,
                len: 48,
            },
            Run {
                weights: 0,
                inputs: 32 * TILE_SAMPLES,
                len: 16,
            },
            Run {
                weights: 48,
                inputs: 16 * TILE_SAMPLES,
                len: 16,
            },
        ];
        let bounds = [0, 2, 3];
        let pixel_len = blocks * AMX_BLOCK * TILE_SAMPLES;
        let start = |i: usize| (i % 5) as f32 - 2.0;
        let mut row: Vec<f32> = (0..pixels * pixel_len).map(start).collect();
        // SAFETY: AMX is available.
        unsafe { accumulate_row(&weights, steps, &operand, &runs, &bounds, &mut row) };
        let half = |p: u32, high: bool| f32::from_bits(if high { p & 0xffff_0000 } else { p << 16 }) as f64;
        for pixel in 0..pixels {
            for c in 0..blocks * AMX_BLOCK {
                for s in 0..TILE_SAMPLES {
                    let i = pixel * pixel_len + c * TILE_SAMPLES + s;
                    let mut want = start(i) as f64;
                    for run in &runs[bounds[pixel]..bounds[pixel + 1]] {
                        for k in 0..run.len {
                            let (w, x) = (
                                weights[c * steps + run.weights + k],
                                operand[run.inputs + k * TILE_SAMPLES + s],
                            );
                            want += half(w, false) * half(x, false) + half(w, true) * half(x, true);
                        }
                    }
                    assert!(
                        (row[i] as f64 - want).abs() < 1e-4,
                        "pixel {pixel}, channel {c}, sample {s}: {} against {want}",
                        row[i]
                    );
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "not whole tiles")]
    fn a_run_of_a_partial_tile_is_refused() {
        let weights = vec![0u32; AMX_BLOCK * 32];
        let operand = vec![0u32; 32 * TILE_SAMPLES];
        let mut row = vec![0.0f32; AMX_BLOCK * TILE_SAMPLES];
        let run = Run {
            weights: 0,
            inputs: 0,
            len: 8,
        };
        // SAFETY: the run is refused before any AMX instruction.
        unsafe { accumulate_row(&weights, 32, &operand, &[run], &[0, 1], &mut row) };
    }
}
