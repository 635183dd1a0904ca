//! The tensor cores' bf16 and f16 matmuls (`kernels/matmul_tc.cu`) and the mma instructions
//! under them (`kernels/mma.cuh`), against the CPU, on every CUDA device here: the emulator (where the
//! mma is a modelled warp-wide operation) when built with `--features emulator`, and GPU 0 when
//! there is one.
//!
//! `cargo test -p earthmover-kernels --features emulator --test tensor_cores`
//!
//! - the mma alone, one warp: A, B and C laid out into each lane's registers by the PTX ISA's
//!   fragment table (written out here, independently of the kernels and the emulator), D read
//!   back the same way and compared with the product on the CPU: a lane or register layout
//!   that differs from the table fails it;
//! - the matmul kernel with f32 output against the CPU's f32 matmul of the widened inputs, on
//!   sizes that are no multiple of a tile, transposed operands and a batch;
//! - `Storage::matmul` on 16-bit operands on a CUDA device: one launch of the tensor-core
//!   kernel (no widening), and the CPU's half-rule result within one rounding;
//! - on the emulator, an mma reached by fewer than 32 lanes stops it with a message.
//!
//! Each for bf16 and f16. Tolerances: products of two bf16 or two f16 values are exact in f32, so the only differences are the f32
//! sums' order and rounding (the hardware's accumulation order is unspecified): `k + 2` f32
//! roundings of the sum of the products' magnitudes, for each side.

mod common;

use common::{cuda_devices, random};
use earthmover_kernels::cuda::device::{Arg, GpuDevice, InitialContents};
use earthmover_kernels::cuda::shapes::MatmulShape;
use earthmover_kernels::cuda::LaunchShape;
use earthmover_kernels::{CpuStorage, DType, Device, MatmulProblem, MatrixLayout, Storage};
use std::sync::{Mutex, MutexGuard};

/// Held by every test: one counts a device's launches, which the others' would disturb.
static DEVICE: Mutex<()> = Mutex::new(());

fn lock_device() -> MutexGuard<'static, ()> {
    DEVICE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

const F32_EPS: f64 = f32::EPSILON as f64;

/// The 16-bit types, each with its tensor-core kernels.
const HALVES: [DType; 2] = [DType::BF16, DType::F16];

/// `values` in `dtype` on the host (rounded to nearest-even).
fn host(values: &[f64], dtype: DType) -> CpuStorage {
    let Storage::Cpu(host) = Storage::from_f64_slice(values, dtype, Device::Cpu).unwrap() else {
        unreachable!("a CPU storage")
    };
    host
}

/// `values` rounded to `dtype`, as f64.
fn rounded(values: &[f64], dtype: DType) -> Vec<f64> {
    Storage::Cpu(host(values, dtype)).to_f64_vec()
}

// The m16n8k16 fragments of .bf16 (and .f16) A and B and .f32 C and D, as the PTX ISA states them
// ("Matrix Fragments for mma.m16n8k16 with floating point type"): groupID = lane >> 2,
// threadID_in_group = lane % 4; element i of a lane's fragment is in register i / 2, in its
// low 16 bits when i is even (A and B); C and D hold one f32 per register.

/// (row, column) of A's element `i` (0..8) in lane `lane`.
fn a_element(lane: usize, i: usize) -> (usize, usize) {
    let (group, thread) = (lane >> 2, lane % 4);
    let row = if i < 2 || (4..6).contains(&i) { group } else { group + 8 };
    let col = if i < 4 {
        thread * 2 + (i & 1)
    } else {
        thread * 2 + (i & 1) + 8
    };
    (row, col)
}

/// (row, column) of B's element `i` (0..4) in lane `lane`.
fn b_element(lane: usize, i: usize) -> (usize, usize) {
    let (group, thread) = (lane >> 2, lane % 4);
    let row = if i < 2 {
        thread * 2 + (i & 1)
    } else {
        thread * 2 + (i & 1) + 8
    };
    (row, group)
}

/// (row, column) of C's (and D's) element `i` (0..4) in lane `lane`.
fn c_element(lane: usize, i: usize) -> (usize, usize) {
    let (group, thread) = (lane >> 2, lane % 4);
    let row = if i < 2 { group } else { group + 8 };
    (row, thread * 2 + (i & 1))
}

/// The mma alone: one warp, one m16n8k16 product with C, every lane's registers laid out by the
/// table above.
#[test]
fn mma_m16n8k16_matches_the_product_lane_by_lane() {
    let _device = lock_device();
    for device in cuda_devices() {
        let gpu = GpuDevice::get(device).unwrap();
        for (dtype, seed) in HALVES.into_iter().flat_map(|d| (0..3u64).map(move |s| (d, s))) {
            let a = rounded(&random(16 * 16, 10 + seed), dtype); // row-major 16 x 16
            let b = rounded(&random(16 * 8, 20 + seed), dtype); // row-major 16 x 8
            let c = rounded(&random(16 * 8, 30 + seed), DType::F32);
            // Lane-major registers: A 4 words (8 halves) a lane, B 2 words (4 halves), C 4 floats.
            let mut a_frags = vec![0.0; 32 * 8];
            let mut b_frags = vec![0.0; 32 * 4];
            let mut c_frags = vec![0.0; 32 * 4];
            for lane in 0..32 {
                for i in 0..8 {
                    let (r, k) = a_element(lane, i);
                    a_frags[lane * 8 + i] = a[r * 16 + k];
                }
                for i in 0..4 {
                    let (k, col) = b_element(lane, i);
                    b_frags[lane * 4 + i] = b[k * 8 + col];
                    let (r, col) = c_element(lane, i);
                    c_frags[lane * 4 + i] = c[r * 8 + col];
                }
            }
            let a_buf = gpu.upload(&host(&a_frags, dtype)).unwrap();
            let b_buf = gpu.upload(&host(&b_frags, dtype)).unwrap();
            let c_buf = gpu.upload(&host(&c_frags, DType::F32)).unwrap();
            let d_buf = gpu.alloc(DType::F32, 32 * 4, InitialContents::Unwritten).unwrap();
            let mut args = [&a_buf, &b_buf, &c_buf, &d_buf].map(|buffer| Arg::Ptr(gpu.address(buffer)));
            let one_warp = LaunchShape {
                grid: (1, 1, 1),
                block: (32, 1, 1),
            };
            // SAFETY: the kernel reads 32 x 4 words of A, 32 x 2 of B, 32 x 4 floats of C and
            // writes 32 x 4 floats of D: the buffers' sizes.
            let kernel = format!("mma_m16n8k16_{dtype}_fragments");
            unsafe { gpu.launch(&kernel, one_warp, &mut args) }.unwrap();
            let CpuStorage::F32(d_frags) = gpu.download(&d_buf).unwrap() else {
                unreachable!("an f32 buffer")
            };
            for lane in 0..32 {
                for i in 0..4 {
                    let (r, col) = c_element(lane, i);
                    let (mut exact, mut magnitude) = (c[r * 8 + col], c[r * 8 + col].abs());
                    for k in 0..16 {
                        let product = a[r * 16 + k] * b[k * 8 + col];
                        exact += product;
                        magnitude += product.abs();
                    }
                    let got = d_frags[lane * 4 + i] as f64;
                    let tolerance = 18.0 * F32_EPS * magnitude;
                    assert!(
                        (got - exact).abs() <= tolerance,
                        "{device} {dtype} seed {seed}: lane {lane} d[{i}] = D[{r}][{col}]: {got}, exact {exact}"
                    );
                }
            }
        }
    }
}

/// A batch of `m x k` by `k x n` products, 16-bit values (as f64) laid out per `problem`.
struct Case {
    dtype: DType,
    problem: MatmulProblem,
    a: Vec<f64>,
    b: Vec<f64>,
}

impl Case {
    /// Plain row-major operands, or stored transposed, `batch` of each.
    fn new(dtype: DType, batch: usize, m: usize, n: usize, k: usize, a_transposed: bool, b_transposed: bool) -> Case {
        let problem = MatmulProblem {
            batch,
            a_layout: if a_transposed {
                MatrixLayout::transposed(m)
            } else {
                MatrixLayout::row_major(k)
            },
            a_batch_stride: m * k,
            b_layout: if b_transposed {
                MatrixLayout::transposed(k)
            } else {
                MatrixLayout::row_major(n)
            },
            b_batch_stride: k * n,
            ..MatmulProblem::plain(m, n, k)
        };
        let seed = (m * 1_000_000 + n * 1000 + k) as u64;
        Case {
            dtype,
            problem,
            a: rounded(&random(batch * m * k, seed), dtype),
            b: rounded(&random(batch * k * n, seed + 1), dtype),
        }
    }

    /// `sum_k |a_ik b_kj|` for every output element, the scale of its sum's rounding.
    fn magnitudes(&self) -> Vec<f64> {
        let p = &self.problem;
        let mut out = Vec::with_capacity(p.batch * p.m * p.n);
        for batch in 0..p.batch {
            for i in 0..p.m {
                for j in 0..p.n {
                    let sum = (0..p.k)
                        .map(|kk| {
                            let a = self.a
                                [batch * p.a_batch_stride + i * p.a_layout.row_stride + kk * p.a_layout.col_stride];
                            let b = self.b
                                [batch * p.b_batch_stride + kk * p.b_layout.row_stride + j * p.b_layout.col_stride];
                            (a * b).abs()
                        })
                        .sum();
                    out.push(sum);
                }
            }
        }
        out
    }

    /// The CPU's f32 matmul of the (exactly widened) 16-bit inputs.
    fn cpu_f32(&self) -> Vec<f64> {
        let a = Storage::from_f64_slice(&self.a, DType::F32, Device::Cpu).unwrap();
        let b = Storage::from_f64_slice(&self.b, DType::F32, Device::Cpu).unwrap();
        a.matmul(&b, &self.problem).to_f64_vec()
    }

    fn name(&self) -> String {
        let p = &self.problem;
        let t = |l: MatrixLayout| {
            if l.row_stride == 1 && l.col_stride != 1 {
                "T"
            } else {
                ""
            }
        };
        format!(
            "{}: {} x [{} x {}]{} @ [{} x {}]{}",
            self.dtype,
            p.batch,
            p.m,
            p.k,
            t(p.a_layout),
            p.k,
            p.n,
            t(p.b_layout)
        )
    }
}

fn cases() -> Vec<Case> {
    HALVES
        .into_iter()
        .flat_map(|d| {
            [
                Case::new(d, 1, 1, 1, 1, false, false),
                Case::new(d, 1, 17, 33, 65, false, false),
                Case::new(d, 1, 64, 64, 64, false, false),
                Case::new(d, 1, 100, 7, 129, false, false),
                Case::new(d, 1, 70, 65, 31, true, false), // conv's input adjoint: A transposed
                Case::new(d, 1, 9, 80, 47, false, true),  // conv's weight gradient: B transposed
                Case::new(d, 3, 33, 17, 40, true, true),  // a batch, both transposed
                Case::new(d, 1, 130, 129, 16, false, false), // blocks each way, one mma step of k
            ]
        })
        .collect()
}

/// The kernels with f32 output against the CPU's f32 matmul, element by element.
#[test]
fn matmul_tc_with_f32_output_matches_the_cpus_f32_matmul() {
    let _device = lock_device();
    for device in cuda_devices() {
        let gpu = GpuDevice::get(device).unwrap();
        for case in cases() {
            let p = &case.problem;
            let a = gpu.upload(&host(&case.a, case.dtype)).unwrap();
            let b = gpu.upload(&host(&case.b, case.dtype)).unwrap();
            // Unwritten: NaN on the emulator, so an element the kernel skips fails below.
            let c = gpu
                .alloc(DType::F32, p.batch * p.m * p.n, InitialContents::Unwritten)
                .unwrap();
            let mut args = [
                Arg::Ptr(gpu.address(&a)),
                Arg::Ptr(gpu.address(&b)),
                Arg::Ptr(gpu.address(&c)),
                Arg::Matmul(MatmulShape::from(p)),
            ];
            let shape = LaunchShape::matmul_tensor_cores(p.m, p.n, p.batch);
            // SAFETY: the operands hold `batch` matrices at their batch strides, C `batch * m * n`.
            let kernel = format!("matmul_tc_{}_f32", case.dtype);
            unsafe { gpu.launch(&kernel, shape, &mut args) }.unwrap();
            let got = Storage::Cpu(gpu.download(&c).unwrap()).to_f64_vec();
            let want = case.cpu_f32();
            let tolerance = 2.0 * (p.k as f64 + 2.0) * F32_EPS;
            for (i, ((&g, &w), &scale)) in got.iter().zip(&want).zip(&case.magnitudes()).enumerate() {
                assert!(
                    (g - w).abs() <= tolerance * scale + 1e-30,
                    "{device} {}: C[{i}] {g}, cpu {w}",
                    case.name()
                );
            }
        }
    }
}

/// `Storage::matmul` of 16-bit operands on a CUDA device runs the tensor-core kernel, once,
/// with no casts, and gives the CPU's half-rule result (f32 sums, rounded once to 16 bits) up
/// to the sums' order: within one 16-bit rounding of the f32 sums' difference.
#[test]
fn half_storage_matmul_on_a_cuda_device_is_one_tensor_core_launch() {
    let _device = lock_device();
    for device in cuda_devices() {
        let gpu = GpuDevice::get(device).unwrap();
        for case in cases() {
            let p = &case.problem;
            let on = |values: &[f64], device| Storage::from_f64_slice(values, case.dtype, device).unwrap();
            let (a, b) = (on(&case.a, device), on(&case.b, device));
            let before = gpu.counters();
            let got = a.matmul(&b, p);
            let counted = gpu.counters().since(&before);
            assert_eq!(counted.launches, 1, "{device} {}: {counted}", case.name());
            assert_eq!(got.dtype(), case.dtype);
            assert_eq!(got.device(), device);
            let want = on(&case.a, Device::Cpu).matmul(&on(&case.b, Device::Cpu), p);
            assert_eq!(want.dtype(), case.dtype);
            // The relative size of one rounding step: 2^-7 in bf16, 2^-10 in f16.
            let step = match case.dtype {
                DType::BF16 => 1.0 / 128.0,
                _ => 1.0 / 1024.0,
            };
            let f32_error = 2.0 * (p.k as f64 + 2.0) * F32_EPS;
            let (got, want) = (got.to_f64_vec(), want.to_f64_vec());
            for (i, ((&g, &w), &scale)) in got.iter().zip(&want).zip(&case.magnitudes()).enumerate() {
                // Two f32 sums within f32_error * scale of each other round to 16-bit values
                // at most one step plus that apart.
                let tolerance = w.abs().max(g.abs()) * step + f32_error * scale + 1e-30;
                assert!(
                    (g - w).abs() <= tolerance,
                    "{device} {}: C[{i}] {g}, cpu {w}",
                    case.name()
                );
            }
        }
    }
}

/// mma.sync needs all 32 lanes of the warp (on a GPU, anything else is undefined); the emulator
/// stops with a message naming it rather than computing from stale fragments. A block of 16
/// threads runs the one-warp kernel in a child process (an abort cannot be caught in this one).
#[cfg(feature = "emulator")]
#[test]
fn an_mma_without_the_whole_warp_stops_the_emulator_with_a_message() {
    const CHILD: &str = "EARTHMOVER_TEST_MMA_HALF_WARP";
    let test = "an_mma_without_the_whole_warp_stops_the_emulator_with_a_message";
    if std::env::var(CHILD).is_ok() {
        let gpu = GpuDevice::get(Device::CudaEmulator).unwrap();
        let buffers: Vec<_> = [
            (DType::BF16, 32 * 8),
            (DType::BF16, 32 * 4),
            (DType::F32, 32 * 4),
            (DType::F32, 32 * 4),
        ]
        .map(|(dtype, len)| gpu.alloc(dtype, len, InitialContents::Zeros).unwrap())
        .into_iter()
        .collect();
        let mut args: Vec<Arg> = buffers.iter().map(|b| Arg::Ptr(gpu.address(b))).collect();
        let half_warp = LaunchShape {
            grid: (1, 1, 1),
            block: (16, 1, 1),
        };
        // SAFETY: the buffers are the sizes the kernel indexes for 32 lanes.
        let _ = unsafe { gpu.launch("mma_m16n8k16_bf16_fragments", half_warp, &mut args) };
        return;
    }
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&child.stderr);
    assert!(!child.status.success(), "the child ran to the end: {stderr}");
    assert!(
        stderr.contains("warp 0: mma.sync without all 32 lanes of the warp"),
        "{stderr}"
    );
}
