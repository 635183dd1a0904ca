//! Our CUDA kernels on GPU 0, timed with the GPU synchronised before each clock stops:
//! square matmuls from 128 to 4096 (GFLOP/s), the reference critic's convolutions at batch 64
//! and DIM 64 (forward, input gradient, weight gradient) in f32 and in bf16 (the tensor cores),
//! and the fused Adam update over the
//! critic's parameter count (GB/s moved). Without a GPU it says so and exits.
//!
//! `cargo bench --bench gpu_kernels`; PyTorch's figures for the same shapes on the same GPU:
//! `python benches/reference/gpu_kernels.py`.

use earthmover::kernels::cuda::device::{cuda_device_count, GpuDevice};
use earthmover::kernels::{ConvGeometry, DType, Device, MatmulProblem, MatrixLayout, OptimizerUpdate, Storage};
use std::time::Instant;

/// Median seconds of `runs` calls of `f`, after two warm-up calls (the first compiles).
fn time(gpu: &GpuDevice, runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    f();
    gpu.synchronize().unwrap_or_else(|e| panic!("{e}"));
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            gpu.synchronize().unwrap_or_else(|e| panic!("{e}"));
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}

fn random(n: usize, device: Device) -> Storage {
    random_in(n, device, DType::F32)
}

fn random_in(n: usize, device: Device, dtype: DType) -> Storage {
    let values: Vec<f64> = (0..n).map(|i| ((i * 7919 % 1000) as f64 / 500.0) - 1.0).collect();
    Storage::from_f64_slice(&values, dtype, device).unwrap()
}

fn main() {
    if cuda_device_count() == 0 {
        println!("skipped: no CUDA GPU");
        return;
    }
    let device = Device::Cuda(0);
    let gpu = match GpuDevice::get(device) {
        Ok(gpu) => gpu,
        Err(e) => {
            println!("skipped: {e}");
            return;
        }
    };
    println!("{} ({device})", gpu.name);

    println!("\nmatmul, f32, C = A B, n x n x n");
    println!("{:>6} {:>12} {:>10}", "n", "ms", "GFLOP/s");
    for n in [128, 256, 512, 1024, 2048, 4096] {
        let (a, b) = (random(n * n, device), random(n * n, device));
        let p = MatmulProblem {
            batch: 1,
            m: n,
            n,
            k: n,
            a_layout: MatrixLayout::row_major(n),
            a_batch_stride: 0,
            b_layout: MatrixLayout::row_major(n),
            b_batch_stride: 0,
        };
        let runs = if n >= 2048 { 10 } else { 50 };
        let s = time(&gpu, runs, || drop(a.matmul(&b, &p)));
        println!("{n:>6} {:>12.3} {:>10.0}", s * 1e3, 2.0 * (n as f64).powi(3) / s / 1e9);
    }

    // f32 on conv.cu's kernels; bf16 on the tensor cores (conv_mma.cu, output rounded to bf16).
    for dtype in [DType::F32, DType::BF16] {
        println!("\nthe reference critic's convolutions (DIM 64, batch 64, 5x5, stride 2, padding 2), {dtype}");
        println!(
            "{:<28} {:>10} {:>12} {:>12}",
            "layer", "forward ms", "input grad ms", "weight grad ms"
        );
        for (name, c, o, hw) in [
            ("conv1 1->64, 28->14", 1, 64, 28),
            ("conv2 64->128, 14->7", 64, 128, 14),
            ("conv3 128->256, 7->4", 128, 256, 7),
        ] {
            let g =
                ConvGeometry::conv2d([64, c, hw, hw], [o, c, 5, 5], (2, 2), (2, 2), (1, 1)).expect("a valid geometry");
            let out = g.out_h;
            let x = random_in(64 * c * hw * hw, device, dtype);
            let w = random_in(o * c * 25, device, dtype);
            let y = random_in(64 * o * out * out, device, dtype);
            let forward = time(&gpu, 50, || drop(x.conv2d_forward(&w, None, None, &g)));
            let input = time(&gpu, 50, || drop(y.conv2d_input_adjoint(&w, None, None, &g)));
            let weight = time(&gpu, 50, || drop(x.conv2d_weight_grad(&y, &g)));
            println!(
                "{name:<28} {:>10.3} {:>12.3} {:>12.3}",
                forward * 1e3,
                input * 1e3,
                weight * 1e3
            );
        }
    }

    // The DIM 64 critic has 4.3 M parameters; Adam reads p, g, m, v and writes p, m, v.
    let n = 4_300_000;
    let (mut p, g, mut m, mut v) = (
        random(n, device),
        random(n, device),
        random(n, device),
        random(n, device),
    );
    let update = OptimizerUpdate::Adam {
        lr: 1e-4,
        betas: (0.0, 0.9),
        eps: 1e-8,
        step: 1,
    };
    let s = time(&gpu, 50, || p.optimizer_step(&g, &mut [&mut m, &mut v], update));
    println!(
        "\nAdam over {n} f32 parameters: {:.3} ms, {:.0} GB/s",
        s * 1e3,
        7.0 * 4.0 * n as f64 / s / 1e9
    );
}
