//! Baseline benchmarks for the kernels that dominate WGAN training: square matmuls, and the
//! convolutions of the reference WGAN-GP MNIST critic and generator at batch 64, all in f32.
//!
//! Run with `cargo bench --bench kernels` (or `cargo bench --bench kernels -- conv` to filter).
//!
//! Throughput: every case sets `Throughput::Elements(flops)`, so criterion's "elem/s" column
//! reads as floating-point operations per second (`Gelem/s` = GFLOP/s). A multiply-add counts
//! as 2 FLOPs; convolutions are counted as nominal dense work, `2 * N * O * Ho * Wo * C * kh *
//! kw`, including taps that fall on padding. conv2d's input gradient (a `conv_transpose2d`)
//! and its weight gradient (`conv2d_weight_grad`) each do the same count as its forward; a
//! transposed conv from `[N, Cin, H, W]` with weight `[Cin, Cout, kh, kw]` does
//! `2 * N * Cin * H * W * Cout * kh * kw`. The bias add is not counted.
//!
//! Every case runs with 10 samples, a 1 s warm-up and a 3 s measurement so that the whole
//! run stays around two minutes on a 2-core machine; cases of tens of milliseconds are sampled
//! flat (see [`set_flops`]).

use criterion::measurement::Measurement;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode, Throughput};
use earthmover_tensor::{grad, no_grad, ConvOptions, DType, Tensor};
use std::hint::black_box;
use std::time::Duration;

const BATCH: usize = 64;
const KERNEL: usize = 5;

fn configure<M: Measurement>(group: &mut BenchmarkGroup<'_, M>) {
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
}

/// Set the FLOP count of the next cases, and sample cases of at least `FLAT_ABOVE` FLOPs (tens
/// of milliseconds each) flat: a fixed number of iterations per sample rather than criterion's
/// linear ramp, which would take 55 iterations for 10 samples.
fn set_flops<M: Measurement>(group: &mut BenchmarkGroup<'_, M>, flops: u64) {
    const FLAT_ABOVE: u64 = 500_000_000;
    group.throughput(Throughput::Elements(flops));
    group.sampling_mode(if flops >= FLAT_ABOVE {
        SamplingMode::Flat
    } else {
        SamplingMode::Auto
    });
}

// ---------------------------------------------------------------- matmul

fn bench_matmul(c: &mut Criterion) {
    let mut group = c.benchmark_group("matmul_f32");
    configure(&mut group);
    for n in [64usize, 128, 256, 512, 1024] {
        let a = Tensor::randn(&[n, n], DType::F32, 1);
        let b = Tensor::randn(&[n, n], DType::F32, 2);
        // Elements = FLOPs: n^3 multiply-adds.
        set_flops(&mut group, 2 * (n as u64).pow(3));
        group.bench_function(format!("{n}x{n}x{n}"), |bench| {
            no_grad(|| bench.iter(|| black_box(a.matmul(&b))))
        });
    }
    group.finish();
}

// ---------------------------------------------------------------- convolutions

/// One conv2d layer: `[N, c, h, w]` -> `[N, o, ho, wo]` with a square `KERNEL`, stride 2,
/// padding 2. `output_padding` makes the input gradient (a transposed conv) come back at
/// `h x w` exactly.
struct ConvLayer {
    name: &'static str,
    c: usize,
    o: usize,
    h: usize,
    ho: usize,
    output_padding: usize,
}

impl ConvLayer {
    fn opts(&self) -> ConvOptions {
        ConvOptions::new().stride(2).padding(2)
    }
    fn transpose_opts(&self) -> ConvOptions {
        self.opts().output_padding(self.output_padding)
    }
    /// FLOPs of the forward pass; each of the two gradients does as many.
    fn flops(&self) -> u64 {
        (2 * BATCH * self.o * self.ho * self.ho * self.c * KERNEL * KERNEL) as u64
    }
}

/// The reference critic (WGAN-GP, MNIST): 1x28x28 -> 64x14x14 -> 128x7x7 -> 256x4x4.
const CRITIC: [ConvLayer; 3] = [
    ConvLayer {
        name: "c1_1x28_to_64x14",
        c: 1,
        o: 64,
        h: 28,
        ho: 14,
        output_padding: 1,
    },
    ConvLayer {
        name: "c2_64x14_to_128x7",
        c: 64,
        o: 128,
        h: 14,
        ho: 7,
        output_padding: 1,
    },
    ConvLayer {
        name: "c3_128x7_to_256x4",
        c: 128,
        o: 256,
        h: 7,
        ho: 4,
        output_padding: 0,
    },
];

fn bench_critic_conv(c: &mut Criterion) {
    let mut group = c.benchmark_group("critic_conv_f32_b64");
    configure(&mut group);
    for (i, layer) in CRITIC.iter().enumerate() {
        let seed = 100 * (i as u64 + 1);
        let x = Tensor::randn(&[BATCH, layer.c, layer.h, layer.h], DType::F32, seed);
        let w = Tensor::randn(&[layer.o, layer.c, KERNEL, KERNEL], DType::F32, seed + 1);
        let b = Tensor::randn(&[layer.o], DType::F32, seed + 2);
        let gy = Tensor::randn(&[BATCH, layer.o, layer.ho, layer.ho], DType::F32, seed + 3);
        let (opts, topts) = (layer.opts(), layer.transpose_opts());

        // Check the geometry once, outside the timing.
        no_grad(|| {
            assert_eq!(
                x.conv2d(&w, Some(&b), opts).shape(),
                gy.shape(),
                "{}: forward shape",
                layer.name
            );
            assert_eq!(
                gy.conv_transpose2d(&w, None, topts).shape(),
                x.shape(),
                "{}: input grad shape",
                layer.name
            );
        });

        set_flops(&mut group, layer.flops());
        group.bench_function(format!("{}/forward", layer.name), |bench| {
            no_grad(|| bench.iter(|| black_box(x.conv2d(&w, Some(&b), opts))))
        });
        group.bench_function(format!("{}/grad_input", layer.name), |bench| {
            no_grad(|| bench.iter(|| black_box(gy.conv_transpose2d(&w, None, topts))))
        });
        group.bench_function(format!("{}/grad_weight", layer.name), |bench| {
            no_grad(|| bench.iter(|| black_box(x.conv2d_weight_grad(&gy, (KERNEL, KERNEL), opts))))
        });

        // Forward with the graph recorded, then both gradients through the autograd engine.
        let xg = x.detach().requires_grad_(true);
        let wg = w.detach().requires_grad_(true);
        set_flops(&mut group, 3 * layer.flops());
        group.bench_function(format!("{}/forward_backward", layer.name), |bench| {
            bench.iter(|| {
                let y = xg.conv2d(&wg, Some(&b), opts);
                black_box(grad(&[&y], &[&xg, &wg], Some(&[&gy]), false))
            })
        });
    }
    group.finish();
}

/// One generator layer: conv_transpose2d `[N, cin, h, h]` -> `[N, cout, ho, ho]` with a square
/// `KERNEL`, stride 2, padding 2.
struct DeconvLayer {
    name: &'static str,
    cin: usize,
    cout: usize,
    h: usize,
    ho: usize,
    output_padding: usize,
}

impl DeconvLayer {
    fn flops(&self) -> u64 {
        (2 * BATCH * self.cin * self.h * self.h * self.cout * KERNEL * KERNEL) as u64
    }
}

/// The reference generator's transposed convs: 256x4x4 -> 128x8x8 (cropped to 7x7 in the
/// model) -> 64x14x14 -> 1x28x28.
const GENERATOR: [DeconvLayer; 3] = [
    DeconvLayer {
        name: "g1_256x4_to_128x8",
        cin: 256,
        cout: 128,
        h: 4,
        ho: 8,
        output_padding: 1,
    },
    DeconvLayer {
        name: "g2_128x7_to_64x14",
        cin: 128,
        cout: 64,
        h: 7,
        ho: 14,
        output_padding: 1,
    },
    DeconvLayer {
        name: "g3_64x14_to_1x28",
        cin: 64,
        cout: 1,
        h: 14,
        ho: 28,
        output_padding: 1,
    },
];

fn bench_generator_deconv(c: &mut Criterion) {
    let mut group = c.benchmark_group("generator_deconv_f32_b64");
    configure(&mut group);
    for (i, layer) in GENERATOR.iter().enumerate() {
        let seed = 1000 * (i as u64 + 1);
        let x = Tensor::randn(&[BATCH, layer.cin, layer.h, layer.h], DType::F32, seed);
        let w = Tensor::randn(&[layer.cin, layer.cout, KERNEL, KERNEL], DType::F32, seed + 1);
        let b = Tensor::randn(&[layer.cout], DType::F32, seed + 2);
        let opts = ConvOptions::new()
            .stride(2)
            .padding(2)
            .output_padding(layer.output_padding);
        no_grad(|| {
            let y = x.conv_transpose2d(&w, Some(&b), opts);
            assert_eq!(
                y.shape(),
                &[BATCH, layer.cout, layer.ho, layer.ho],
                "{}: output shape",
                layer.name
            );
        });
        set_flops(&mut group, layer.flops());
        group.bench_function(format!("{}/forward", layer.name), |bench| {
            no_grad(|| bench.iter(|| black_box(x.conv_transpose2d(&w, Some(&b), opts))))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_matmul, bench_critic_conv, bench_generator_deconv);
criterion_main!(benches);
