//! The CPU kernels that a training step spends its time in, each against the machine's measured
//! FMA peak, in a form that prints one table and runs in about a minute:
//!
//! ```sh
//! cargo bench --bench cpu_kernels                      # earthmover
//! python benches/reference/cpu_kernels.py              # PyTorch, same shapes, same table
//! ```
//!
//! - the machine: the CPU model, the SIMD path in use (`EARTHMOVER_SIMD` chooses another), and
//!   that path's FMA peak: independent chains of vector multiply-adds on one thread and on every
//!   rayon thread;
//! - square f32 matmuls, 128 to 2048;
//! - every convolution of the reference networks at DIM 64, batch 64: forward, input gradient and
//!   weight gradient, counted as nominal dense work (`2 * N * O * Ho * Wo * C * kh * kw` for a
//!   conv, taps on the padding included), the count PyTorch's side uses too.
//!
//! Each figure is the median of several runs after a warm-up.

mod common;

use earthmover::tensor::{no_grad, ConvOptions, DType, Tensor};
use std::hint::black_box;
use std::time::Instant;

const BATCH: usize = 64;
const KERNEL: usize = 5;

/// Median seconds of `runs` calls of `f`, after two warm-up calls.
fn median_seconds(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    f();
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}

/// The convolutions' register tile alone, on operands that fit in L1 (runs of 256 steps over
/// the same 16 KiB of inputs): the ceiling of every tile path, per thread, against the FMA peak
/// of one thread. One tile (6 rows), two tiles sharing their inputs (12 rows), two blocks of
/// inputs sharing their weights, and both (12 x 32, what AVX-512 is given in f32).
fn register_tile(peak: &common::Peak) {
    use earthmover::kernels::cpu::conv::tile::{
        accumulate_rows_unchecked, accumulate_two_tiles_unchecked, check_runs, Run, TILE_LEN, TILE_ROWS, TILE_SAMPLES,
    };
    let path = earthmover::kernels::cpu::simd::active_path();
    const STEPS: usize = 256;
    let weights: Vec<f32> = (0..STEPS * TILE_ROWS).map(|v| (v % 7) as f32 * 0.01).collect();
    let inputs: Vec<f32> = (0..STEPS * TILE_SAMPLES).map(|v| (v % 5) as f32 * 0.01).collect();
    let runs = vec![
        Run {
            weights: 0,
            inputs: 0,
            len: STEPS,
        };
        64
    ];
    check_runs(&runs, weights.len(), inputs.len());
    let (mut a, mut b) = (vec![0f32; TILE_LEN], vec![0f32; TILE_LEN]);
    let flops = (2 * runs.len() * STEPS * TILE_LEN) as f64;
    // SAFETY: the runs were checked against these operands, and the path is this process's.
    let one = median_seconds(21, || unsafe {
        accumulate_rows_unchecked(path, TILE_ROWS, &weights, &inputs, &runs, &mut a)
    });
    let two = median_seconds(21, || unsafe {
        accumulate_two_tiles_unchecked(path, TILE_ROWS, [&weights, &weights], &inputs, &runs, [&mut a, &mut b])
    });
    let blocks = median_seconds(21, || unsafe {
        earthmover::kernels::cpu::conv::tile::accumulate_two_blocks_unchecked(
            path,
            TILE_ROWS,
            &weights,
            [&inputs, &inputs],
            &runs,
            [&mut a, &mut b],
        )
    });
    let (mut c, mut d) = (vec![0f32; TILE_LEN], vec![0f32; TILE_LEN]);
    let four = median_seconds(21, || unsafe {
        earthmover::kernels::cpu::conv::tile::accumulate_two_tiles_two_blocks_unchecked(
            path,
            TILE_ROWS,
            [&weights, &weights],
            [&inputs, &inputs],
            &runs,
            [[&mut a, &mut b], [&mut c, &mut d]],
        )
    });
    black_box((&a, &b, &c, &d));
    println!("\nregister tile ({path}), operands in L1, one thread");
    println!("{:<32} {:>10} {:>8}", "", "GFLOP/s", "of peak");
    for (name, seconds, flops) in [
        ("one tile (6 x 16)", one, flops),
        ("two tiles (12 x 16)", two, 2.0 * flops),
        ("two input blocks (6 x 32)", blocks, 2.0 * flops),
        ("two tiles, two blocks (12 x 32)", four, 4.0 * flops),
    ] {
        let gflops = flops / seconds / 1e9;
        println!("{name:<32} {gflops:>10.1} {:>7.0}%", 100.0 * gflops / peak.one);
    }
}

/// The bf16 register tile on `vdpbf16ps` alone (where the processor has AVX512_BF16), on
/// operands in L1 as [`register_tile`]: two tiles over one block of 16 samples (12 x 16) and
/// over two blocks (12 x 32, what the bf16 convolutions are given), against the `vdpbf16ps`
/// peak of one thread.
fn bf16_register_tile() {
    use earthmover::kernels::cpu::conv::scratch::Scratch;
    use earthmover::kernels::cpu::conv::tile::{check_runs, Run, TILE_LEN, TILE_ROWS, TILE_SAMPLES};
    use earthmover::kernels::cpu::conv::tile_pairs::{
        accumulate_pairs_two_blocks_unchecked, accumulate_pairs_unchecked, dot_peak_gflops, HalfFormat, PairKernel,
        PairWeights,
    };
    let Some(peak) = dot_peak_gflops(1) else {
        return;
    };
    const STEPS: usize = 256;
    let mut pairs = Scratch::take(2 * STEPS * TILE_ROWS);
    pairs
        .iter_mut()
        .enumerate()
        .for_each(|(i, p)| *p = 0x3c00_3c00 + (i % 7) as u32);
    let weights = PairWeights::new(PairKernel::Dot, HalfFormat::Bf16, pairs);
    let inputs: Vec<u32> = (0..STEPS * TILE_SAMPLES)
        .map(|i| 0x3c00_3c00 + (i % 5) as u32)
        .collect();
    let runs = vec![
        Run {
            weights: 0,
            inputs: 0,
            len: STEPS,
        };
        64
    ];
    check_runs(&runs, STEPS * TILE_ROWS, inputs.len());
    let [mut a, mut b, mut c, mut d] = [(); 4].map(|_| vec![0f32; TILE_LEN]);
    // Per tile and block: two multiply-adds per pair step and sum.
    let flops = (2 * 2 * runs.len() * STEPS * TILE_LEN) as f64;
    let (tiles, second) = ((0, STEPS * TILE_ROWS), Some((STEPS * TILE_ROWS, TILE_ROWS)));
    // SAFETY: the runs were checked against a tile of these weights and these inputs, both
    // tiles lie inside the weights, and the processor has AVX512_BF16.
    let one = median_seconds(21, || unsafe {
        accumulate_pairs_unchecked(
            PairKernel::Dot,
            TILE_ROWS,
            &weights,
            tiles,
            second,
            &inputs,
            &runs,
            [&mut a, &mut b],
        )
    });
    let two = median_seconds(21, || unsafe {
        let out = [[&mut a[..], &mut b[..]], [&mut c[..], &mut d[..]]];
        accumulate_pairs_two_blocks_unchecked(
            PairKernel::Dot,
            TILE_ROWS,
            &weights,
            tiles,
            second,
            [&inputs, &inputs],
            &runs,
            out,
        )
    });
    black_box((&a, &b, &c, &d));
    println!(
        "
bf16 register tile (avx512bf16 dot), operands in L1, one thread, of the vdpbf16ps peak"
    );
    println!("{:<32} {:>10} {:>8}", "", "GFLOP/s", "of peak");
    for (name, seconds, flops) in [
        ("two tiles (12 x 16)", one, 2.0 * flops),
        ("two tiles, two blocks (12 x 32)", two, 4.0 * flops),
    ] {
        let gflops = flops / seconds / 1e9;
        println!("{name:<32} {gflops:>10.1} {:>7.0}%", 100.0 * gflops / peak);
    }
}

/// One convolution of the reference networks, in conv2d's terms: `[N, c, h, h]` -> `[N, o, ho,
/// ho]`, 5x5, stride 2, padding 2. A generator layer is the transpose of such a conv (its
/// forward pass is this conv's input gradient), so it is listed with its roles swapped.
struct Conv {
    name: &'static str,
    c: usize,
    o: usize,
    h: usize,
    ho: usize,
    output_padding: usize,
    transposed: bool,
}

const CONVS: [Conv; 6] = [
    Conv {
        name: "critic conv1 1x28 -> 64x14",
        c: 1,
        o: 64,
        h: 28,
        ho: 14,
        output_padding: 1,
        transposed: false,
    },
    Conv {
        name: "critic conv2 64x14 -> 128x7",
        c: 64,
        o: 128,
        h: 14,
        ho: 7,
        output_padding: 1,
        transposed: false,
    },
    Conv {
        name: "critic conv3 128x7 -> 256x4",
        c: 128,
        o: 256,
        h: 7,
        ho: 4,
        output_padding: 0,
        transposed: false,
    },
    Conv {
        name: "gen deconv1 256x4 -> 128x8",
        c: 128,
        o: 256,
        h: 8,
        ho: 4,
        output_padding: 1,
        transposed: true,
    },
    Conv {
        name: "gen deconv2 128x7 -> 64x14",
        c: 64,
        o: 128,
        h: 14,
        ho: 7,
        output_padding: 1,
        transposed: true,
    },
    Conv {
        name: "gen deconv3 64x14 -> 1x28",
        c: 1,
        o: 64,
        h: 28,
        ho: 14,
        output_padding: 1,
        transposed: true,
    },
];

fn main() {
    let threads = earthmover::kernels::cpu::current_num_threads();
    println!("earthmover, {threads} threads");
    let peak = common::print_machine(threads);
    let percent = |gflops: f64| format!("{:.0}%", 100.0 * gflops / peak.all);

    register_tile(&peak);
    bf16_register_tile();

    println!("\nmatmul, f32, n x n x n");
    println!("{:>6} {:>10} {:>10} {:>8}", "n", "ms", "GFLOP/s", "of peak");
    for n in [128usize, 256, 512, 1024, 2048] {
        let a = Tensor::randn(&[n, n], DType::F32, 1);
        let b = Tensor::randn(&[n, n], DType::F32, 2);
        let runs = if n >= 1024 { 5 } else { 21 };
        let s = no_grad(|| median_seconds(runs, || drop(black_box(a.matmul(&b)))));
        let gflops = 2.0 * (n as f64).powi(3) / s / 1e9;
        println!("{n:>6} {:>10.3} {gflops:>10.1} {:>8}", s * 1e3, percent(gflops));
    }

    // The generator's linear layer at DIM 64 (128 noise values to 4 x 4 x 256 features, batch
    // 64): its forward product, and its weight gradient.
    println!("\nthe generator's linear layer (batch 64, 128 -> 4096), f32");
    println!("{:<30} {:>10} {:>10} {:>8}", "product", "ms", "GFLOP/s", "of peak");
    let (x, w, gy) = (
        Tensor::randn(&[BATCH, 128], DType::F32, 3),
        Tensor::randn(&[4096, 128], DType::F32, 4),
        Tensor::randn(&[BATCH, 4096], DType::F32, 5),
    );
    let forward = || x.matmul_transposed(&w, false, true);
    let weight_grad = || gy.matmul_transposed(&x, true, false);
    let linear: [(&str, &dyn Fn() -> Tensor); 2] = [
        ("forward x w^T (64x4096x128)", &forward),
        ("weight grad gy^T x (4096x128x64)", &weight_grad),
    ];
    for (name, product) in linear {
        let s = no_grad(|| median_seconds(21, || drop(black_box(product()))));
        let gflops = 2.0 * (BATCH * 4096 * 128) as f64 / s / 1e9;
        println!("{name:<30} {:>10.3} {gflops:>10.1} {:>8}", s * 1e3, percent(gflops));
    }

    println!("\nconvolutions of the reference networks (DIM 64, batch 64, 5x5, stride 2, padding 2), f32");
    println!(
        "{:<30} {:>11} {:>11} {:>11} {:>9} {:>8}",
        "layer", "forward ms", "input ms", "weight ms", "GFLOP/s", "of peak"
    );
    for (i, conv) in CONVS.iter().enumerate() {
        let seed = 100 * (i as u64 + 1);
        let opts = ConvOptions::new().stride(2).padding(2);
        let topts = opts.output_padding(conv.output_padding);
        let x = Tensor::randn(&[BATCH, conv.c, conv.h, conv.h], DType::F32, seed);
        let w = Tensor::randn(&[conv.o, conv.c, KERNEL, KERNEL], DType::F32, seed + 1);
        let y = Tensor::randn(&[BATCH, conv.o, conv.ho, conv.ho], DType::F32, seed + 2);
        let runs = 11;
        let (direct, adjoint, weight) = no_grad(|| {
            let direct = median_seconds(runs, || drop(black_box(x.conv2d(&w, None, opts))));
            let adjoint = median_seconds(runs, || drop(black_box(y.conv_transpose2d(&w, None, topts))));
            let weight = median_seconds(runs, || {
                drop(black_box(x.conv2d_weight_grad(&y, (KERNEL, KERNEL), opts)))
            });
            (direct, adjoint, weight)
        });
        // A transposed conv's forward pass is the conv's input gradient, and its input gradient
        // is the conv's forward pass; its weight gradient is the conv's, roles swapped.
        let (forward, input) = if conv.transposed {
            (adjoint, direct)
        } else {
            (direct, adjoint)
        };
        let flops = (2 * BATCH * conv.o * conv.ho * conv.ho * conv.c * KERNEL * KERNEL) as f64;
        let gflops = 3.0 * flops / (forward + input + weight) / 1e9;
        println!(
            "{:<30} {:>11.3} {:>11.3} {:>11.3} {gflops:>9.1} {:>8}",
            conv.name,
            forward * 1e3,
            input * 1e3,
            weight * 1e3,
            percent(gflops),
        );
    }
}
