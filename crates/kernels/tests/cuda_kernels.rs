//! Every CUDA kernel against its CPU twin, through the one launch code the GPU runs
//! (`cuda::storage`, reached through `Storage`): the same operation on a `Storage` on the CPU
//! and on a CUDA device, on random inputs of odd sizes (no multiple of a block or a tile).
//!
//! It runs on every CUDA device this machine has: the emulator (`Device::CudaEmulator`, the
//! kernels executed on the CPU) when built with the `emulator` feature, and GPU 0 when there is
//! one; otherwise it says why it ran on none.
//!
//! `cargo test -p earthmover-kernels --features emulator --test cuda_kernels`
//!
//! Tolerances are per kernel: exact where the kernel does the same arithmetic in the same
//! order, a few ulps where the order (sums, matmuls) or the math library (exp, tanh, ...)
//! differs.
//!
//! The convolutions are in conv_kernels.rs, which shares the comparison helpers (tests/common/).

mod common;

use common::{assert_close, cuda_devices, on_cpu, pair, random, DTYPES};
use earthmover_kernels::cuda::device::{Arg, GpuDevice, InitialContents};
use earthmover_kernels::cuda::matmul::MatmulKernel;
use earthmover_kernels::cuda::LaunchShape;
use earthmover_kernels::{
    broadcast_shapes, BinaryOp, CpuStorage, DType, Device, Distribution, MatmulProblem, MatrixLayout, OptimizerUpdate,
    ParamStep, ReduceOp, Storage, UnaryOp,
};

#[cfg(feature = "emulator")]
#[test]
fn every_kernel_is_built_into_the_emulator() {
    let names = earthmover_kernels::cuda::emulator::kernel_names();
    for source in earthmover_kernels::cuda::SOURCES {
        for kernel in source.kernel_names() {
            assert!(names.iter().any(|n| n == kernel), "{kernel} of {}", source.file);
        }
    }
}

#[test]
fn copies_casts_and_fills_round_trip() {
    for device in cuda_devices() {
        let (cpu, gpu) = pair(&random(517, 1), DType::F64, device);
        assert_eq!(gpu.to_device(Device::Cpu).unwrap(), cpu);
        assert_close("cast to f32", &gpu.cast(DType::F32), &cpu.cast(DType::F32), 0.0, 0.0);
        let (cpu32, gpu32) = pair(&random(301, 2), DType::F32, device);
        assert_close(
            "cast to f64",
            &gpu32.cast(DType::F64),
            &cpu32.cast(DType::F64),
            0.0,
            0.0,
        );
        assert_close("clone", &gpu.clone(), &cpu, 0.0, 0.0);
        let full = Storage::full(2.5, 33, DType::F32, device).unwrap();
        assert_eq!(full.to_f32_vec(), vec![2.5; 33]);
    }
    // A CUDA GPU that is not there is an error, not a panic.
    assert!(Storage::full(0.0, 1, DType::F32, Device::Cuda(99)).is_err());
}

#[test]
fn unary_ops_match_their_cpu_twins() {
    let ops = UnaryOp::EVERY;
    let mut x = random(1031, 1);
    x[5] = 0.0;
    x[7] = 0.0;
    for device in cuda_devices() {
        for dtype in DTYPES {
            // Log, sqrt and fractional powers of negatives are NaN on both sides.
            let (rel, abs) = match dtype {
                DType::F32 => (1e-6, 1e-37),
                DType::F64 => (1e-14, 1e-300),
                other => unreachable!("{other}: these tests run DTYPES, f32 and f64"),
            };
            let (cpu, gpu) = pair(&x, dtype, device);
            for op in ops {
                let what = format!("{op:?} {dtype} on {device}");
                assert_close(&what, &gpu.unary(op), &cpu.unary(op), rel, abs);
            }
        }
    }
}

#[test]
fn broadcasting_binary_ops_match_their_cpu_twins_exactly() {
    let cases: [(&[usize], &[usize]); 5] = [
        (&[3, 37], &[3, 37]),
        (&[5, 1, 7], &[3, 1]),
        (&[1], &[13, 3]),
        (&[2, 3, 1, 5], &[3, 11, 1]),
        (&[], &[4]),
    ];
    let ops = BinaryOp::EVERY;
    for device in cuda_devices() {
        for (i, (a_shape, b_shape)) in cases.iter().enumerate() {
            let out_shape = broadcast_shapes(a_shape, b_shape).unwrap();
            let a = random(a_shape.iter().product(), 10 + i as u64);
            let mut b = random(b_shape.iter().product(), 20 + i as u64);
            b[0] = a[0]; // one equal pair for the comparisons
            for dtype in DTYPES {
                let ((a_cpu, a_gpu), (b_cpu, b_gpu)) = (pair(&a, dtype, device), pair(&b, dtype, device));
                for op in ops {
                    assert_close(
                        &format!("{op:?} {a_shape:?} {b_shape:?} {dtype}"),
                        &a_gpu.binary(op, a_shape, &b_gpu, b_shape, &out_shape),
                        &a_cpu.binary(op, a_shape, &b_cpu, b_shape, &out_shape),
                        0.0,
                        0.0,
                    );
                }
            }
        }
    }
}

#[test]
fn select_matches_exactly() {
    let cond: Vec<f64> = random(777, 3)
        .iter()
        .map(|&v| if v > 0.0 { 1.0 } else { 0.0 })
        .collect();
    for device in cuda_devices() {
        for dtype in DTYPES {
            let (c_cpu, c_gpu) = pair(&cond, dtype, device);
            let (a_cpu, a_gpu) = pair(&random(777, 4), dtype, device);
            let (b_cpu, b_gpu) = pair(&random(777, 5), dtype, device);
            let (got, want) = (c_gpu.where_cond(&a_gpu, &b_gpu), c_cpu.where_cond(&a_cpu, &b_cpu));
            assert_close("where", &got, &want, 0.0, 0.0);
        }
    }
}

#[test]
fn reductions_match_over_every_kind_of_dim_set() {
    let shape = [3, 5, 7, 9];
    let x = random(shape.iter().product(), 7);
    let targets: [[usize; 4]; 6] = [
        [1, 1, 1, 1],
        [3, 1, 1, 1],
        [1, 5, 1, 1],
        [3, 5, 7, 1],
        [1, 5, 1, 9],
        [3, 5, 7, 9],
    ];
    for device in cuda_devices() {
        for dtype in DTYPES {
            // Sums add in another order: rounding differs by ulps of the partial sums.
            let (rel, abs) = match dtype {
                DType::F32 => (1e-5, 1e-4),
                DType::F64 => (1e-13, 1e-12),
                other => unreachable!("{other}: these tests run DTYPES, f32 and f64"),
            };
            let (cpu, gpu) = pair(&x, dtype, device);
            for out_shape in targets {
                for op in [ReduceOp::Sum, ReduceOp::Max] {
                    let what = format!("{op:?} {dtype} to {out_shape:?}");
                    assert_close(
                        &what,
                        &gpu.reduce(op, &shape, &out_shape),
                        &cpu.reduce(op, &shape, &out_shape),
                        rel,
                        abs,
                    );
                }
            }
        }
        // NaN propagates through max.
        let mut with_nan = x.clone();
        with_nan[100] = f64::NAN;
        let (_, gpu) = pair(&with_nan, DType::F64, device);
        assert!(gpu.reduce(ReduceOp::Max, &shape, &[1, 1, 1, 1]).to_f64_vec()[0].is_nan());
    }
}

#[test]
fn strided_copies_and_writes_match_exactly() {
    // A permute of [3, 5, 7] to [7, 3, 5], a narrow, and a broadcast.
    let cases: [(usize, [usize; 3], [usize; 3]); 3] = [
        (0, [1, 35, 7], [7, 3, 5]),
        (7 + 1, [35, 7, 1], [2, 3, 5]),
        (3, [0, 7, 0], [4, 5, 3]),
    ];
    for device in cuda_devices() {
        for dtype in DTYPES {
            let (src_cpu, src_gpu) = pair(&random(3 * 5 * 7, 8), dtype, device);
            for (offset, strides, shape) in &cases {
                assert_close(
                    &format!("strided copy {strides:?} {shape:?}"),
                    &src_gpu.strided_copy(*offset, strides, shape),
                    &src_cpu.strided_copy(*offset, strides, shape),
                    0.0,
                    0.0,
                );
            }
            // Pad a [3, 5] block into a [5, 9] buffer at (1, 2).
            let (block_cpu, block_gpu) = pair(&random(15, 9), dtype, device);
            let (mut want, mut got) = pair(&[0.0; 45], dtype, device);
            want.strided_write(9 + 2, &[9, 1], &block_cpu, &[3, 5]);
            got.strided_write(9 + 2, &[9, 1], &block_gpu, &[3, 5]);
            assert_close("strided write", &got, &want, 0.0, 0.0);
        }
    }
}

/// A contiguous `rows x cols` matrix, read as is or transposed.
fn layout(transposed: bool, rows: usize, cols: usize) -> MatrixLayout {
    if transposed {
        MatrixLayout::transposed(rows)
    } else {
        MatrixLayout::row_major(cols)
    }
}

/// `batch` products of contiguous `m x k` and `k x n` matrices, either read transposed.
fn matmul_problem(batch: usize, (m, n, k): (usize, usize, usize), ta: bool, tb: bool) -> MatmulProblem {
    MatmulProblem {
        batch,
        m,
        n,
        k,
        a_layout: layout(ta, m, k),
        a_batch_stride: m * k,
        b_layout: layout(tb, k, n),
        b_batch_stride: k * n,
    }
}

/// Tolerances of a matmul over `k` products: the CPU's order of the sums differs.
fn matmul_tolerance(dtype: DType, k: usize) -> (f64, f64) {
    match dtype {
        DType::F32 => (1e-4, 1e-4 + 1e-6 * k as f64),
        DType::F64 => (1e-12, 1e-12 + 1e-14 * k as f64),
        other => unreachable!("{other}: these tests run DTYPES, f32 and f64"),
    }
}

/// The versions of matmul.cu that can run `p`: the tiled and the plain kernel always, the
/// tiled one with A as rows along k when A's column stride is 1, the GEMVs for N = 1 or M = 1.
fn matmul_versions(p: &MatmulProblem) -> Vec<MatmulKernel> {
    let mut versions = vec![MatmulKernel::Tiled, MatmulKernel::Plain];
    if p.a_layout.col_stride == 1 {
        versions.push(MatmulKernel::TiledARows);
    }
    if p.n == 1 || p.m == 1 {
        versions.extend([MatmulKernel::GemvRows, MatmulKernel::GemvColumns]);
    }
    versions
}

/// `p` on `a` and `b` (held by a CUDA device), through every version of matmul.cu, and through
/// `Storage::matmul`'s choice, against the CPU's product.
fn check_every_matmul_version(what: &str, p: &MatmulProblem, a: (&Storage, &Storage), b: (&Storage, &Storage)) {
    let (rel, abs) = matmul_tolerance(a.0.dtype(), p.k);
    let want = a.0.matmul(b.0, p);
    assert_close(&format!("{what} (chosen)"), &a.1.matmul(b.1, p), &want, rel, abs);
    let (Storage::Cuda(a_gpu), Storage::Cuda(b_gpu)) = (a.1, b.1) else {
        unreachable!("on a CUDA device")
    };
    for version in matmul_versions(p) {
        let got = Storage::Cuda(a_gpu.matmul_with(b_gpu, p, version));
        assert_close(&format!("{what} {version:?}"), &got, &want, rel, abs);
    }
}

/// Every version of the f32 and f64 matmul against the CPU's on sizes that are no multiple of
/// a tile or a slice (1, 7, 33, 129, 257, ...), the four transpose combinations, a batch of 3;
/// N = 1 and M = 1 on the GEMVs too.
#[test]
fn matmul_matches_with_transposes_batches_and_odd_sizes() {
    let shapes = [
        (1, 1, 1),
        (37, 29, 23),
        (65, 3, 129),
        (70, 67, 1),
        (5, 130, 17),
        (129, 257, 33),
        (7, 1, 257),
        (1, 7, 33),
        (33, 1, 7),
        (1, 129, 1),
    ];
    for device in cuda_devices() {
        for &(m, n, k) in &shapes {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let batch = 3;
                let p = matmul_problem(batch, (m, n, k), ta, tb);
                for dtype in DTYPES {
                    let (a_cpu, a_gpu) = pair(&random(batch * m * k, (m * n + k) as u64), dtype, device);
                    let (b_cpu, b_gpu) = pair(&random(batch * k * n, (m + n * k) as u64), dtype, device);
                    let what = format!("{dtype} {m}x{n}x{k} t{ta}{tb}");
                    check_every_matmul_version(&what, &p, (&a_cpu, &a_gpu), (&b_cpu, &b_gpu));
                }
            }
        }
        // One matrix broadcast over the batch (batch stride 0).
        let (m, n, k) = (9, 11, 13);
        let p = MatmulProblem {
            batch: 2,
            a_batch_stride: 0,
            b_batch_stride: k * n,
            ..MatmulProblem::plain(m, n, k)
        };
        let (a_cpu, a_gpu) = pair(&random(m * k, 1), DType::F64, device);
        let (b_cpu, b_gpu) = pair(&random(2 * k * n, 2), DType::F64, device);
        check_every_matmul_version("broadcast A", &p, (&a_cpu, &a_gpu), (&b_cpu, &b_gpu));
    }
}

/// The tiled kernel's 16-byte copies and their edges: operands that are views with row strides
/// of 40 (a multiple of every 16-byte group) around 37 x 37 matrices, so that the last group of
/// a row is partly outside the matrix; then the same with a batch stride that breaks the
/// alignment (element copies), and K past one slice.
#[test]
fn matmul_reads_strided_views_with_and_without_vectors() {
    let (m, n, k, row) = (37, 37, 37, 40);
    for device in cuda_devices() {
        for batch_stride in [row * row + 4, row * row + 1] {
            for (ta, tb) in [(true, false), (false, true), (true, true), (false, false)] {
                let view = |transposed: bool| {
                    if transposed {
                        MatrixLayout {
                            row_stride: 1,
                            col_stride: row,
                        }
                    } else {
                        MatrixLayout {
                            row_stride: row,
                            col_stride: 1,
                        }
                    }
                };
                let p = MatmulProblem {
                    batch: 2,
                    m,
                    n,
                    k,
                    a_layout: view(ta),
                    a_batch_stride: batch_stride,
                    b_layout: view(tb),
                    b_batch_stride: batch_stride,
                };
                for dtype in DTYPES {
                    let len = batch_stride + row * row;
                    let (a_cpu, a_gpu) = pair(&random(len, 3), dtype, device);
                    let (b_cpu, b_gpu) = pair(&random(len, 4), dtype, device);
                    let what = format!("{dtype} views, batch stride {batch_stride}, t{ta}{tb}");
                    check_every_matmul_version(&what, &p, (&a_cpu, &a_gpu), (&b_cpu, &b_gpu));
                }
            }
        }
    }
}

#[test]
fn optimiser_updates_match_in_place() {
    let updates = [
        OptimizerUpdate::Sgd { lr: 0.1, momentum: 0.0 },
        OptimizerUpdate::Sgd { lr: 0.1, momentum: 0.9 },
        OptimizerUpdate::RmsProp {
            lr: 5e-5,
            alpha: 0.99,
            eps: 1e-8,
        },
        OptimizerUpdate::Adam {
            lr: 1e-4,
            betas: (0.0, 0.9),
            eps: 1e-8,
            step: 3,
        },
        OptimizerUpdate::Clamp { min: -0.01, max: 0.01 },
    ];
    for device in cuda_devices() {
        for update in updates {
            let states = match update {
                OptimizerUpdate::Clamp { .. } => 0,
                OptimizerUpdate::Sgd { momentum: 0.0, .. } => 0,
                OptimizerUpdate::Adam { .. } => 2,
                _ => 1,
            };
            for (i, n) in [7, 300, 1, 65].into_iter().enumerate() {
                let seed = 10 * i as u64;
                let (mut p_cpu, mut p_gpu) = pair(&random(n, seed + 1), DType::F64, device);
                let (g_cpu, g_gpu) = pair(&random(n, seed + 2), DType::F64, device);
                // The state buffers hold running averages (of squares): keep them positive.
                let positive = |seed| random(n, seed).iter().map(|v| v.abs()).collect::<Vec<_>>();
                let (mut m_cpu, mut m_gpu) = pair(&positive(seed + 3), DType::F64, device);
                let (mut v_cpu, mut v_gpu) = pair(&positive(seed + 4), DType::F64, device);
                {
                    let mut cpu_state: Vec<&mut Storage> = vec![&mut m_cpu, &mut v_cpu];
                    cpu_state.truncate(states);
                    p_cpu.optimizer_step(&g_cpu, &mut cpu_state, update);
                    let mut gpu_state: Vec<&mut Storage> = vec![&mut m_gpu, &mut v_gpu];
                    gpu_state.truncate(states);
                    p_gpu.optimizer_step(&g_gpu, &mut gpu_state, update);
                }
                let what = format!("{update:?} on {n} elements");
                assert_close(&format!("{what}: param"), &p_gpu, &p_cpu, 1e-14, 1e-15);
                assert_close(&format!("{what}: state"), &m_gpu, &m_cpu, 1e-14, 1e-15);
                assert_close(&format!("{what}: state 2"), &v_gpu, &v_cpu, 1e-14, 1e-15);
            }
        }
    }
}

/// A list of 30 tensors of odd sizes (two launches of 24 and 6 on a GPU) stepped at once
/// against each stepped on its own on the CPU, for every update; one of f32 besides.
#[test]
fn optimiser_updates_of_a_list_match_each_tensor_stepped_alone() {
    let updates = [
        OptimizerUpdate::Sgd { lr: 0.1, momentum: 0.9 },
        OptimizerUpdate::RmsProp {
            lr: 5e-5,
            alpha: 0.99,
            eps: 1e-8,
        },
        OptimizerUpdate::Adam {
            lr: 1e-4,
            betas: (0.5, 0.9),
            eps: 1e-8,
            step: 2,
        },
        OptimizerUpdate::Clamp { min: -0.3, max: 0.2 },
    ];
    for device in cuda_devices() {
        for (update, dtype) in updates
            .into_iter()
            .map(|u| (u, DType::F64))
            .chain([(updates[2], DType::F32)])
        {
            let states = match update {
                OptimizerUpdate::Clamp { .. } => 0,
                OptimizerUpdate::Adam { .. } => 2,
                _ => 1,
            };
            let sizes: Vec<usize> = (0..30).map(|i| [1, 7, 65, 300, 0, 33][i % 6] + i).collect();
            let positive = |n, seed| random(n, seed).iter().map(|v: &f64| v.abs()).collect::<Vec<_>>();
            let (mut cpu, mut gpu): (Vec<[Storage; 4]>, Vec<[Storage; 4]>) = sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    let seed = 10 * i as u64;
                    let values = [
                        random(n, seed),
                        random(n, seed + 1),
                        positive(n, seed + 2),
                        positive(n, seed + 3),
                    ];
                    let cpu = values.clone().map(|v| on_cpu(&v, dtype));
                    let gpu = values.map(|v| on_cpu(&v, dtype).to_device(device).unwrap());
                    (cpu, gpu)
                })
                .unzip();
            for [p, g, m, v] in &mut cpu {
                let mut state: Vec<&mut Storage> = vec![m, v];
                state.truncate(states);
                p.optimizer_step(g, &mut state, update);
            }
            let mut steps: Vec<ParamStep<'_>> = gpu
                .iter_mut()
                .map(|[p, g, m, v]| {
                    let mut state: Vec<&mut Storage> = vec![m, v];
                    state.truncate(states);
                    ParamStep {
                        param: p,
                        grad: g,
                        state,
                    }
                })
                .collect();
            Storage::optimizer_step_list(&mut steps, update);
            let (rel, abs) = if dtype == DType::F32 {
                (1e-6, 1e-7)
            } else {
                (1e-14, 1e-15)
            };
            for (i, (c, g)) in cpu.iter().zip(&gpu).enumerate() {
                for (k, what) in [(0, "param"), (2, "state"), (3, "state 2")] {
                    let what = format!("{update:?} in {dtype}, tensor {i} of {} elements: {what}", sizes[i]);
                    assert_close(&what, &g[k], &c[k], rel, abs);
                }
            }
        }
    }
}

#[test]
fn random_streams_match_the_cpu_generator() {
    let uniform = Distribution::Uniform { low: -1.0, high: 2.0 };
    let normal = Distribution::Normal { mean: 0.5, std: 2.0 };
    for device in cuda_devices() {
        for (seed, stream) in [(0, 0), (42, 3), (u64::MAX, 7)] {
            for dtype in DTYPES {
                let draw = |d: Distribution, on: Device| Storage::random(d, 1001, seed, stream, dtype, on).unwrap();
                // Uniform is one multiply-add of the same word: exact. Normal goes through
                // log, sqrt, cos and sin, whose last bits differ between math libraries.
                let what = format!("{dtype} seed {seed} stream {stream}");
                let (got, want) = (draw(uniform, device), draw(uniform, Device::Cpu));
                assert_close(&format!("uniform {what}"), &got, &want, 0.0, 0.0);
                let (rel, abs) = match dtype {
                    DType::F32 => (1e-6, 1e-6),
                    DType::F64 => (1e-14, 1e-14),
                    other => unreachable!("{other}: these tests run DTYPES, f32 and f64"),
                };
                let (got, want) = (draw(normal, device), draw(normal, Device::Cpu));
                assert_close(&format!("normal {what}"), &got, &want, rel, abs);
            }
        }
    }
}

/// Batches of a dataset kept on the device, in the shuffled order: the same rows as the CPU
/// twin (`cpu::gather`), exactly, for odd row counts and lengths, batches that cross an epoch
/// boundary or are longer than an epoch, and positions past 2^32.
#[test]
fn shuffled_row_gathers_match_the_cpu_twin() {
    for device in cuda_devices() {
        for dtype in DTYPES {
            for (source_rows, row_len, rows, position) in [
                (1, 3, 4, 0),
                (7, 1, 23, 5),
                (29, 13, 37, 20),
                (1000, 29, 9, (1 << 33) + 995),
            ] {
                let (cpu, gpu) = pair(&random(source_rows * row_len, 13), dtype, device);
                let seed = 0x5EED ^ position;
                let want = cpu.gather_shuffled_rows(row_len, rows, position, seed).unwrap();
                let got = gpu.gather_shuffled_rows(row_len, rows, position, seed).unwrap();
                let what = format!("{dtype}: {rows} of {source_rows} rows of {row_len} from {position}");
                assert_close(&what, &got, &want, 0.0, 0.0);
                // The rows are the source's: the first value of each names which.
                let source = cpu.to_f64_vec();
                let first_of_each: Vec<f64> = want.to_f64_vec().chunks(row_len).map(|r| r[0]).collect();
                assert!(
                    first_of_each.iter().all(|v| source.chunks(row_len).any(|r| r[0] == *v)),
                    "{what}"
                );
            }
            let (_, gpu) = pair(&random(10, 14), dtype, device);
            let err = gpu.gather_shuffled_rows(3, 2, 0, 0).unwrap_err();
            assert!(err.contains("no whole number of rows of 3"), "{err}");
        }
    }
}

/// A launch the device refuses is an error that names the kernel and the device, returned to
/// the caller rather than a panic, and leaves the device usable: a block over CUDA's 1,024
/// threads (which a GPU refuses too) and a kernel that does not exist.
#[test]
fn a_refused_launch_is_an_error_naming_the_kernel() {
    for device in cuda_devices() {
        let gpu = GpuDevice::get(device).unwrap();
        let buffer = gpu.alloc(DType::F32, 4, InitialContents::Zeros).unwrap();
        let mut args = [Arg::Ptr(gpu.address(&buffer)), Arg::F64(2.5), Arg::I64(4)];
        let too_wide = LaunchShape {
            grid: (1, 1, 1),
            block: (2048, 1, 1),
        };
        // SAFETY: fill_f32(out, value, n) with a live buffer of 4 floats.
        let e = unsafe { gpu.launch("fill_f32", too_wide, &mut args) }.unwrap_err();
        assert!(
            e.contains("fill_f32") && e.contains(&device.to_string()) && e.contains("1,024"),
            "{e}"
        );
        // SAFETY: never launched: no such kernel.
        let e = unsafe { gpu.launch("no_such_kernel_f32", LaunchShape::elementwise(4), &mut args) }.unwrap_err();
        assert!(
            e.contains("no_such_kernel_f32") && e.contains(&device.to_string()),
            "{e}"
        );
        // SAFETY: as above, with a shape CUDA accepts.
        unsafe { gpu.launch("fill_f32", LaunchShape::elementwise(4), &mut args) }.unwrap();
        assert_eq!(gpu.download(&buffer).unwrap(), CpuStorage::F32(vec![2.5; 4]));
    }
}
