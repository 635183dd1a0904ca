//! Every CUDA kernel, run on the CPU by the emulator, against its CPU twin on random inputs of
//! odd sizes (no multiple of a block or a tile). Tolerances are per kernel: exact where the
//! kernel does the same arithmetic in the same order, a few ulps where the order or the math
//! library differs.
//!
//! `cargo test -p earthmover-kernels --features emulator --test emulator`
#![cfg(feature = "emulator")]

use earthmover_kernels::cpu;
use earthmover_kernels::cpu::reduce::ReduceOp;
use earthmover_kernels::cuda::emulator::{self, ParamSlot};
use earthmover_kernels::{
    broadcast_shapes, BinaryOp, ConvGeometry, MatmulProblem, MatrixLayout, OptimizerUpdate, UnaryOp,
};

/// Deterministic values in [-2, 2) (xorshift), so failures reproduce.
fn random(n: usize, seed: u64) -> Vec<f64> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0
        })
        .collect()
}

fn random_f32(n: usize, seed: u64) -> Vec<f32> {
    random(n, seed).into_iter().map(|v| v as f32).collect()
}

/// Every element within `rel` of the larger magnitude (or `abs` absolutely).
fn assert_close<T: Into<f64> + Copy>(what: &str, got: &[T], want: &[T], rel: f64, abs: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (g, w): (f64, f64) = (g.into(), w.into());
        if g.is_nan() && w.is_nan() || g == w {
            continue;
        }
        let tolerance = abs.max(rel * g.abs().max(w.abs()));
        assert!((g - w).abs() <= tolerance, "{what}[{i}]: emulator {g}, cpu {w}");
    }
}

#[test]
fn every_kernel_is_built_into_the_emulator() {
    let names = emulator::kernel_names();
    for source in earthmover_kernels::cuda::SOURCES {
        for kernel in source.kernel_names() {
            assert!(names.iter().any(|n| n == kernel), "{kernel} of {}", source.file);
        }
    }
}

#[test]
fn unary_ops_match_their_cpu_twins() {
    let ops = [
        UnaryOp::Neg,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Abs,
        UnaryOp::Sign,
        UnaryOp::Relu,
        UnaryOp::LeakyRelu(0.2),
        UnaryOp::LeakyReluSlope(0.2),
        UnaryOp::Tanh,
        UnaryOp::Sigmoid,
        UnaryOp::Softplus,
        UnaryOp::Pow(2.0),
        UnaryOp::Pow(3.0),
        UnaryOp::Pow(0.5),
        UnaryOp::Clamp(-0.5, 0.7),
        UnaryOp::InRange(-0.5, 0.7),
        UnaryOp::AddScalar(1.5),
        UnaryOp::MulScalar(-3.0),
        UnaryOp::GtScalar(0.1),
        UnaryOp::LtScalar(0.1),
        UnaryOp::EqScalar(0.0),
    ];
    let mut x = random(1031, 1);
    x[5] = 0.0;
    x[7] = 0.0;
    let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    for op in ops {
        // Log, sqrt and fractional powers of negatives are NaN on both sides.
        assert_close(
            &format!("{op:?} f64"),
            &emulator::unary(op, &x),
            &cpu::elementwise::unary(op, &x),
            1e-14,
            1e-300,
        );
        assert_close(
            &format!("{op:?} f32"),
            &emulator::unary(op, &x32),
            &cpu::elementwise::unary(op, &x32),
            1e-6,
            1e-37,
        );
    }
}

#[test]
fn broadcasting_binary_ops_match_their_cpu_twins() {
    let cases: [(&[usize], &[usize]); 5] = [
        (&[3, 37], &[3, 37]),
        (&[5, 1, 7], &[3, 1]),
        (&[1], &[13, 3]),
        (&[2, 3, 1, 5], &[3, 11, 1]),
        (&[], &[4]),
    ];
    let ops = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Maximum,
        BinaryOp::Minimum,
        BinaryOp::Gt,
        BinaryOp::Ge,
        BinaryOp::Lt,
        BinaryOp::Le,
        BinaryOp::Eq,
        BinaryOp::LeakyReluGrad(0.2),
    ];
    for (i, (a_shape, b_shape)) in cases.iter().enumerate() {
        let out_shape = broadcast_shapes(a_shape, b_shape).unwrap();
        let a = random(a_shape.iter().product(), 10 + i as u64);
        let mut b = random(b_shape.iter().product(), 20 + i as u64);
        b[0] = a[0]; // one equal pair for the comparisons
        for op in ops {
            let want = cpu::elementwise::binary(op, &a, a_shape, &b, b_shape, &out_shape);
            let got = emulator::binary(op, &a, a_shape, &b, b_shape, &out_shape);
            assert_eq!(got, want, "{op:?} {a_shape:?} {b_shape:?}");
        }
        let (a32, b32): (Vec<f32>, Vec<f32>) = (
            a.iter().map(|&v| v as f32).collect(),
            b.iter().map(|&v| v as f32).collect(),
        );
        let want = cpu::elementwise::binary(BinaryOp::Div, &a32, a_shape, &b32, b_shape, &out_shape);
        assert_eq!(
            emulator::binary(BinaryOp::Div, &a32, a_shape, &b32, b_shape, &out_shape),
            want
        );
    }
}

#[test]
fn select_fill_and_cast_match() {
    let cond: Vec<f64> = random(777, 3)
        .iter()
        .map(|&v| if v > 0.0 { 1.0 } else { 0.0 })
        .collect();
    let (a, b) = (random(777, 4), random(777, 5));
    assert_eq!(
        emulator::where_cond(&cond, &a, &b),
        cpu::elementwise::where_cond(&cond, &a, &b)
    );
    assert_eq!(emulator::fill::<f32>(300, 0.25), vec![0.25f32; 300]);
    let x = random_f32(301, 6);
    let wide = emulator::cast_f32_f64(&x);
    assert_eq!(wide, x.iter().map(|&v| v as f64).collect::<Vec<_>>());
    assert_eq!(emulator::cast_f64_f32(&wide), x);
}

#[test]
fn reductions_match_over_every_kind_of_dim_set() {
    let shape = [3, 5, 7, 9];
    let x = random(shape.iter().product(), 7);
    let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let targets: [[usize; 4]; 6] = [
        [1, 1, 1, 1],
        [3, 1, 1, 1],
        [1, 5, 1, 1],
        [3, 5, 7, 1],
        [1, 5, 1, 9],
        [3, 5, 7, 9],
    ];
    for out_shape in targets {
        for op in [ReduceOp::Sum, ReduceOp::Max] {
            let want = cpu::reduce::reduce_to(op, &x, &shape, &out_shape);
            // Sums add in another order: rounding differs, by ulps of the partial sums.
            assert_close(
                &format!("{op:?} to {out_shape:?}"),
                &emulator::reduce_to(op, &x, &shape, &out_shape),
                &want,
                1e-13,
                1e-12,
            );
            let want = cpu::reduce::reduce_to(op, &x32, &shape, &out_shape);
            assert_close(
                &format!("{op:?} f32 to {out_shape:?}"),
                &emulator::reduce_to(op, &x32, &shape, &out_shape),
                &want,
                1e-5,
                1e-4,
            );
        }
    }
    // NaN propagates through max.
    let mut with_nan = x.clone();
    with_nan[100] = f64::NAN;
    assert!(emulator::reduce_to(ReduceOp::Max, &with_nan, &shape, &[1, 1, 1, 1])[0].is_nan());
}

#[test]
fn strided_copies_and_writes_match() {
    // A permute of [3, 5, 7] to [7, 3, 5], a narrow, and a broadcast.
    let src = random(3 * 5 * 7, 8);
    let cases: [(usize, Vec<usize>, Vec<usize>); 3] = [
        (0, vec![1, 35, 7], vec![7, 3, 5]),
        (7 + 1, vec![35, 7, 1], vec![2, 3, 5]),
        (3, vec![0, 7, 0], vec![4, 5, 3]),
    ];
    for (offset, strides, shape) in &cases {
        assert_eq!(
            emulator::strided_copy(&src, *offset, strides, shape),
            cpu::layout::strided_copy(&src, *offset, strides, shape),
            "{strides:?} {shape:?}"
        );
    }
    // Pad a [3, 5] block into a [5, 9] buffer at (1, 2).
    let block = random(15, 9);
    let (mut got, mut want) = (vec![0.0; 45], vec![0.0; 45]);
    emulator::strided_write(&mut got, 9 + 2, &[9, 1], &block, &[3, 5]);
    cpu::layout::strided_write(&mut want, 9 + 2, &[9, 1], &block, &[3, 5]);
    assert_eq!(got, want);
}

#[test]
fn matmul_matches_with_transposes_batches_and_odd_sizes() {
    let shapes = [(1, 1, 1), (37, 29, 23), (65, 3, 129), (70, 67, 1), (5, 130, 17)];
    for &(m, n, k) in &shapes {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let batch = 3;
            let a = random(batch * m * k, (m * n + k) as u64);
            let b = random(batch * k * n, (m + n * k) as u64);
            let layout = |transposed: bool, rows: usize, cols: usize| {
                if transposed {
                    MatrixLayout::transposed(rows)
                } else {
                    MatrixLayout::row_major(cols)
                }
            };
            let p = MatmulProblem {
                batch,
                m,
                n,
                k,
                a_layout: layout(ta, m, k),
                a_batch_stride: m * k,
                b_layout: layout(tb, k, n),
                b_batch_stride: k * n,
            };
            let want = cpu::matmul::matmul(&p, &a, &b);
            let got = emulator::matmul(&p, &a, &b);
            assert_close(&format!("{m}x{n}x{k} t{ta}{tb}"), &got, &want, 1e-12, 1e-12);
            let (a32, b32): (Vec<f32>, Vec<f32>) = (
                a.iter().map(|&v| v as f32).collect(),
                b.iter().map(|&v| v as f32).collect(),
            );
            let want = cpu::matmul::matmul(&p, &a32, &b32);
            assert_close(
                &format!("f32 {m}x{n}x{k}"),
                &emulator::matmul(&p, &a32, &b32),
                &want,
                1e-4,
                1e-4,
            );
        }
    }
    // One matrix broadcast over the batch (batch stride 0).
    let (m, n, k) = (9, 11, 13);
    let p = MatmulProblem {
        batch: 2,
        m,
        n,
        k,
        a_layout: MatrixLayout::row_major(k),
        a_batch_stride: 0,
        b_layout: MatrixLayout::row_major(n),
        b_batch_stride: k * n,
    };
    let (a, b) = (random(m * k, 1), random(2 * k * n, 2));
    assert_close(
        "broadcast A",
        &emulator::matmul(&p, &a, &b),
        &cpu::matmul::matmul(&p, &a, &b),
        1e-12,
        1e-12,
    );
}

/// A geometry with input `[batch, c, h, w]`, `kernel`, `stride`, `pad`, `dilation` (h, w).
fn geometry(
    input: [usize; 4],
    kernel: (usize, usize),
    stride: (usize, usize),
    pad: (usize, usize),
    dil: (usize, usize),
) -> ConvGeometry {
    let [batch, c, h, w] = input;
    let k = kernel;
    let out_h = ConvGeometry::conv_out_size(h, k.0, stride.0, pad.0, dil.0).unwrap();
    let out_w = ConvGeometry::conv_out_size(w, k.1, stride.1, pad.1, dil.1).unwrap();
    ConvGeometry {
        batch,
        in_channels: c,
        out_channels: 2,
        in_h: h,
        in_w: w,
        kernel_h: k.0,
        kernel_w: k.1,
        stride,
        padding: pad,
        dilation: dil,
        out_h,
        out_w,
    }
}

#[test]
fn im2col_and_col2im_match_per_sample_twins_over_a_chunk() {
    let geometries = [
        geometry([3, 2, 7, 9], (3, 3), (1, 1), (1, 1), (1, 1)),
        geometry([2, 3, 11, 8], (5, 5), (2, 2), (2, 2), (1, 1)),
        geometry([2, 1, 10, 13], (3, 2), (2, 3), (0, 1), (2, 1)),
    ];
    for g in &geometries {
        let x = random(g.batch * g.in_channels * g.in_h * g.in_w, 11);
        let (first, samples) = (1, g.batch - 1);
        let p = g.out_h * g.out_w;
        let cols = emulator::im2col(g, &x, first, samples);
        let image = g.in_channels * g.in_h * g.in_w;
        for s in 0..samples {
            let mut want = vec![0.0; g.patch_len() * p];
            cpu::conv::im2col(g, &x[(first + s) * image..][..image], &mut want);
            for row in 0..g.patch_len() {
                let got = &cols[row * samples * p + s * p..][..p];
                assert_eq!(got, &want[row * p..][..p], "{g:?} sample {s} row {row}");
            }
        }
        // col2im of random columns against the CPU's, sample by sample.
        let columns = random(g.patch_len() * samples * p, 12);
        let mut folded = vec![f64::NAN; x.len()];
        emulator::col2im(g, &columns, first, samples, &mut folded);
        for s in 0..samples {
            let per_sample: Vec<f64> = (0..g.patch_len())
                .flat_map(|row| columns[row * samples * p + s * p..][..p].to_vec())
                .collect();
            let mut want = vec![0.0; image];
            cpu::conv::col2im(g, &per_sample, &mut want);
            assert_close(
                &format!("col2im {g:?}"),
                &folded[(first + s) * image..][..image],
                &want,
                1e-13,
                1e-13,
            );
        }
        assert!(
            folded[..image].iter().all(|v| v.is_nan()),
            "samples outside the chunk are untouched"
        );
    }
}

#[test]
fn optimiser_updates_match_over_a_list_of_tensors_in_one_launch() {
    let sizes = [7, 300, 1, 65];
    let updates = [
        (OptimizerUpdate::Sgd { lr: 0.1, momentum: 0.0 }, "sgd"),
        (OptimizerUpdate::Sgd { lr: 0.1, momentum: 0.9 }, "sgd momentum"),
        (
            OptimizerUpdate::RmsProp {
                lr: 5e-5,
                alpha: 0.99,
                eps: 1e-8,
            },
            "rmsprop",
        ),
        (
            OptimizerUpdate::Adam {
                lr: 1e-4,
                betas: (0.0, 0.9),
                eps: 1e-8,
                step: 3,
            },
            "adam",
        ),
        (OptimizerUpdate::Clamp { min: -0.01, max: 0.01 }, "clamp"),
    ];
    for (update, what) in updates {
        let init = |seed: u64| -> Vec<Vec<f64>> { sizes.iter().map(|&n| random(n, seed + n as u64)).collect() };
        let (mut p, g, mut s1, mut s2) = (init(1), init(2), init(3), init(4));
        // The state buffers hold running averages of squares: keep them positive.
        s1.iter_mut().chain(s2.iter_mut()).flatten().for_each(|v| *v = v.abs());
        let (mut p_cpu, mut s1_cpu, mut s2_cpu) = (p.clone(), s1.clone(), s2.clone());
        for t in 0..sizes.len() {
            match update {
                OptimizerUpdate::Sgd { lr, momentum } => {
                    cpu::optim::sgd(&mut p_cpu[t], &g[t], &mut s1_cpu[t], lr, momentum)
                }
                OptimizerUpdate::RmsProp { lr, alpha, eps } => {
                    cpu::optim::rmsprop(&mut p_cpu[t], &g[t], &mut s1_cpu[t], lr, alpha, eps)
                }
                OptimizerUpdate::Adam { lr, betas, eps, step } => cpu::optim::adam(
                    &mut p_cpu[t],
                    &g[t],
                    &mut s1_cpu[t],
                    &mut s2_cpu[t],
                    lr,
                    betas,
                    eps,
                    step,
                ),
                OptimizerUpdate::Clamp { min, max } => cpu::optim::clamp_in_place(&mut p_cpu[t], min, max),
            }
        }
        let mut slots: Vec<ParamSlot<'_, f64>> = p
            .iter_mut()
            .zip(&g)
            .zip(s1.iter_mut().zip(s2.iter_mut()))
            .map(|((param, grad), (state1, state2))| ParamSlot {
                param,
                grad,
                state1,
                state2,
            })
            .collect();
        emulator::update(update, &mut slots);
        for t in 0..sizes.len() {
            assert_close(&format!("{what} param {t}"), &p[t], &p_cpu[t], 1e-14, 1e-15);
            assert_close(&format!("{what} state {t}"), &s1[t], &s1_cpu[t], 1e-14, 1e-15);
            assert_close(&format!("{what} state2 {t}"), &s2[t], &s2_cpu[t], 1e-14, 1e-15);
        }
    }
}

#[test]
fn random_streams_match_the_cpu_generator() {
    for (seed, stream) in [(0, 0), (42, 3), (u64::MAX, 7)] {
        let n = 1001;
        assert_eq!(
            emulator::uniform::<f64>(n, seed, stream, -1.0, 2.0),
            cpu::random::uniform::<f64>(n, seed, stream, -1.0, 2.0)
        );
        assert_close(
            "normal f64",
            &emulator::normal::<f64>(n, seed, stream, 0.5, 2.0),
            &cpu::random::normal::<f64>(n, seed, stream, 0.5, 2.0),
            1e-14,
            1e-14,
        );
        assert_close(
            "normal f32",
            &emulator::normal::<f32>(n, seed, stream, 0.0, 1.0),
            &cpu::random::normal::<f32>(n, seed, stream, 0.0, 1.0),
            1e-6,
            1e-6,
        );
    }
}
