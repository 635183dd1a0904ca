//! The device counters (`GpuDevice::counters`) count exactly what each operation asks of the
//! device: known operations on small inputs, each checked for every counter, the ones it must
//! not touch included.
//!
//! Its own test binary: the counters are the device's, for the whole process, and the tests
//! of other files would add to them while these run. On the emulator (`--features emulator`)
//! and on GPU 0 when there is one, which must count alike. Its tests take turns (`lock_devices`).

mod common;

use common::cuda_devices;
use earthmover_kernels::cuda::counters::{DeviceCounters, PoolCounters};
use earthmover_kernels::cuda::device::{GpuDevice, InitialContents};
use earthmover_kernels::cuda::storage::GpuStorage;
use earthmover_kernels::{
    BinaryOp, ConvGeometry, CpuStorage, DType, Device, MatmulProblem, OptimizerUpdate, ParamStep, Storage, UnaryOp,
};
use std::sync::{Mutex, MutexGuard};

/// Held by each test while it uses a device: the tests of this file run in parallel threads,
/// and one test's work would show in another's counts.
static DEVICES: Mutex<()> = Mutex::new(());

fn lock_devices() -> MutexGuard<'static, ()> {
    DEVICES.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What `work` returns, and what the device counted while it ran.
fn counted<T>(device: Device, work: impl FnOnce() -> T) -> (T, DeviceCounters) {
    let gpu = GpuDevice::get(device).unwrap();
    let before = gpu.counters();
    let value = work();
    (value, gpu.counters().since(&before))
}

/// `n` launches and `n` allocations of `bytes` in all, none zero-filled (the kernels write
/// their outputs whole): what `n` operations that each make one output cost.
fn launches_with_outputs(n: u64, bytes: u64) -> DeviceCounters {
    DeviceCounters {
        launches: n,
        allocations: n,
        allocation_bytes: bytes,
        ..DeviceCounters::default()
    }
}

#[test]
fn each_operation_counts_its_launches_copies_allocations_and_waits() {
    let _devices = lock_devices();
    for device in cuda_devices() {
        // An upload: one copy and the buffer it fills, not zero-filled first; no wait.
        let (x, upload) = counted(device, || {
            Storage::from_f64_slice(&[1.0, -2.0, 3.0], DType::F32, device).unwrap()
        });
        assert_eq!(
            upload,
            DeviceCounters {
                uploads: 1,
                upload_bytes: 12,
                allocations: 1,
                allocation_bytes: 12,
                ..DeviceCounters::default()
            },
            "{device}: an upload of 3 f32"
        );

        let (y, unary) = counted(device, || x.unary(UnaryOp::Neg));
        assert_eq!(unary, launches_with_outputs(1, 12), "{device}: a unary op");

        let (z, binary) = counted(device, || y.binary(BinaryOp::Mul, &[3, 1], &x, &[1, 3], &[3, 3]));
        assert_eq!(binary, launches_with_outputs(1, 36), "{device}: a broadcast binary op");

        let (product, matmul) = counted(device, || z.matmul(&z, &MatmulProblem::plain(3, 3, 3)));
        assert_eq!(matmul, launches_with_outputs(1, 36), "{device}: a matmul");

        // A download waits for the device: one copy, one host synchronisation, nothing else.
        let (values, download) = counted(device, || product.try_to_f64_vec().unwrap());
        assert_eq!(values.len(), 9);
        assert_eq!(
            download,
            DeviceCounters {
                downloads: 1,
                download_bytes: 36,
                host_syncs: 1,
                ..DeviceCounters::default()
            },
            "{device}: a download of 9 f32"
        );

        let ((), sync) = counted(device, || GpuDevice::get(device).unwrap().synchronize().unwrap());
        assert_eq!(
            sync,
            DeviceCounters {
                host_syncs: 1,
                ..DeviceCounters::default()
            },
            "{device}: a synchronisation"
        );

        // Convolutions are implicit GEMMs: the forward pass and the input adjoint one launch
        // and their output each, with a bias and an activation too (both in the epilogue);
        // the weight gradient in split-K slices (K = 16 x 64 output
        // pixels: 4 slices) one launch into the slices' partial sums whose last blocks add them
        // into the output.
        let g = ConvGeometry::conv2d([16, 3, 15, 15], [5, 3, 5, 5], (2, 2), (2, 2), (1, 1)).unwrap();
        let full = |value, len| Storage::full(value, len, DType::F64, device).unwrap();
        let (input, weight, map, bias_o, bias_c) = (
            full(0.5, 16 * 3 * 15 * 15),
            full(0.25, 5 * 3 * 5 * 5),
            full(1.0, 16 * 5 * 8 * 8),
            full(0.125, 5),
            full(-0.125, 3),
        );
        let (
            Storage::Cuda(input),
            Storage::Cuda(weight),
            Storage::Cuda(map),
            Storage::Cuda(bias_o),
            Storage::Cuda(bias_c),
        ) = (&input, &weight, &map, &bias_o, &bias_c)
        else {
            panic!("{device}: storage on the CPU")
        };
        let leaky = Some(UnaryOp::LeakyRelu(0.2));
        let (_, conv) = counted(device, || input.conv2d_forward(weight, None, None, &g));
        assert_eq!(conv, launches_with_outputs(1, 8 * 16 * 5 * 8 * 8), "{device}: conv2d");
        let (_, conv) = counted(device, || input.conv2d_forward(weight, Some(bias_o), leaky, &g));
        assert_eq!(
            conv,
            launches_with_outputs(1, 8 * 16 * 5 * 8 * 8),
            "{device}: leaky_relu(conv2d + bias)"
        );
        let (_, adjoint) = counted(device, || map.conv2d_input_adjoint(weight, None, None, &g));
        assert_eq!(
            adjoint,
            launches_with_outputs(1, 8 * 16 * 3 * 15 * 15),
            "{device}: input adjoint"
        );
        let (_, adjoint) = counted(device, || {
            map.conv2d_input_adjoint(weight, Some(bias_c), Some(UnaryOp::Tanh), &g)
        });
        assert_eq!(
            adjoint,
            launches_with_outputs(1, 8 * 16 * 3 * 15 * 15),
            "{device}: tanh(input adjoint + bias)"
        );
        assert_eq!(GpuStorage::weight_grad_slices(&g), 4);
        let (_, weight_grad) = counted(device, || input.conv2d_weight_grad(map, &g));
        let weight_bytes = 8 * 5 * 3 * 5 * 5;
        assert_eq!(
            weight_grad,
            DeviceCounters {
                allocations: 2,
                ..launches_with_outputs(1, weight_bytes * (1 + 4))
            },
            "{device}: weight gradient in 4 slices (the gradient and the partial sums)"
        );

        // A filled buffer: its allocation and the fill kernel.
        let (_, full) = counted(device, || Storage::full(1.0, 10, DType::F64, device).unwrap());
        assert_eq!(full, launches_with_outputs(1, 80), "{device}: full");

        // The weight gradient of an empty batch is zeros that no kernel writes: zero-filled.
        let empty = ConvGeometry::conv2d([0, 2, 5, 5], [4, 2, 3, 3], (1, 1), (1, 1), (1, 1)).unwrap();
        let (no_input, no_grad) = (
            Storage::full(0.0, 0, DType::F64, device).unwrap(),
            Storage::full(0.0, 0, DType::F64, device).unwrap(),
        );
        let (Storage::Cuda(no_input), Storage::Cuda(no_grad)) = (&no_input, &no_grad) else {
            panic!("{device}: storage on the CPU")
        };
        let (zeros, empty_grad) = counted(device, || no_input.conv2d_weight_grad(no_grad, &empty));
        assert_eq!(
            empty_grad,
            DeviceCounters {
                allocations: 1,
                allocation_bytes: 8 * 4 * 18,
                zero_fills: 1,
                zero_fill_bytes: 8 * 4 * 18,
                ..DeviceCounters::default()
            },
            "{device}: the weight gradient of an empty batch"
        );
        assert_eq!(zeros.download().unwrap(), CpuStorage::F64(vec![0.0; 4 * 18]));
    }
}

/// An optimiser step of a list of tensors is one launch per 24 of them (and the histogram
/// names the kernel); an empty buffer costs no launch, as weight clipping's empty gradient, and
/// neither does a buffer that concat overwrites whole.
#[test]
fn a_list_of_parameters_is_stepped_in_one_launch_per_24() {
    let _devices = lock_devices();
    for device in cuda_devices() {
        let gpu = GpuDevice::get(device).unwrap();
        let tensors = |n: usize| -> Vec<Storage> {
            (0..n)
                .map(|i| Storage::full(0.5, 3 + i, DType::F32, device).unwrap())
                .collect()
        };
        let (mut params, grads, mut avg, mut avg_sq) = (tensors(30), tensors(30), tensors(30), tensors(30));
        let mut steps: Vec<ParamStep<'_>> = params
            .iter_mut()
            .zip(&grads)
            .zip(avg.iter_mut().zip(&mut avg_sq))
            .map(|((param, grad), (m, v))| ParamStep {
                param,
                grad,
                state: vec![m, v],
            })
            .collect();
        let adam = OptimizerUpdate::Adam {
            lr: 1e-3,
            betas: (0.5, 0.9),
            eps: 1e-8,
            step: 1,
        };
        let histogram = gpu.launch_histogram();
        let ((), counters) = counted(device, || Storage::optimizer_step_list(&mut steps, adam));
        assert_eq!(
            counters,
            DeviceCounters {
                launches: 2,
                ..DeviceCounters::default()
            },
            "{device}: Adam on 30 tensors"
        );
        assert_eq!(
            gpu.launch_histogram().since(&histogram).by_count(),
            vec![("adam_f32", 2)]
        );

        let (_, empty) = counted(device, || Storage::full(0.0, 0, DType::F32, device).unwrap());
        assert_eq!(
            empty,
            DeviceCounters {
                allocations: 1,
                ..DeviceCounters::default()
            },
            "{device}: an empty full"
        );
        // A buffer for concat to overwrite: allocated, not filled.
        let (_, overwrite) = counted(device, || Storage::for_overwrite(10, DType::F32, device).unwrap());
        assert_eq!(
            overwrite,
            DeviceCounters {
                allocations: 1,
                allocation_bytes: 40,
                ..DeviceCounters::default()
            },
            "{device}: for_overwrite"
        );
    }
}

/// On the emulator, a buffer allocated for a kernel to write whole holds NaNs until it does,
/// so that an element a kernel leaves unwritten fails the comparisons with the CPU (a GPU
/// gives no zeros there either).
#[test]
fn unwritten_buffers_read_as_nan_on_the_emulator() {
    let _devices = lock_devices();
    let Ok(emulator) = GpuDevice::get(Device::CudaEmulator) else {
        eprintln!("skipped: the emulator is not built in (--features emulator)");
        return;
    };
    for dtype in [DType::F32, DType::F64, DType::BF16, DType::F16] {
        let buffer = emulator.alloc(dtype, 5, InitialContents::Unwritten).unwrap();
        let values = emulator.download(&buffer).unwrap();
        let values = Storage::Cpu(values).to_f64_vec();
        assert!(
            values.len() == 5 && values.iter().all(|v| v.is_nan()),
            "{dtype}: {values:?}"
        );
        let zeros = emulator.alloc(dtype, 5, InitialContents::Zeros).unwrap();
        assert_eq!(
            Storage::Cpu(emulator.download(&zeros).unwrap()).to_f64_vec(),
            vec![0.0; 5]
        );
    }
}

/// What `work` returns, and what the device's pool did while it ran.
fn pooled<T>(device: Device, work: impl FnOnce() -> T) -> (T, PoolCounters) {
    let gpu = GpuDevice::get(device).unwrap();
    let before = gpu.pool_counters();
    let value = work();
    (value, gpu.pool_counters().since(&before))
}

/// A freed buffer goes back to the pool and serves the next allocation of its size class:
/// counted as an allocation (what was asked) and a reuse (how it was served), not a device
/// allocation; a size of another class gets new memory. Sizes here are odd enough that no
/// other test of this file leaves buffers of their classes idle.
#[test]
fn a_freed_buffer_serves_the_next_allocation_of_its_size_class() {
    let _devices = lock_devices();
    for device in cuda_devices() {
        let gpu = GpuDevice::get(device).unwrap();
        gpu.empty_pool();
        // 40,001 f32: 160,004 bytes, class 163,840 (steps of 16 KiB from 128 KiB).
        let (first, fresh) = pooled(device, || {
            gpu.alloc(DType::F32, 40_001, InitialContents::Unwritten).unwrap()
        });
        assert_eq!(
            (fresh.device_allocations, fresh.device_allocation_bytes, fresh.reuses),
            (1, 163_840, 0),
            "{device}: a first buffer is new: {fresh}"
        );
        let address = gpu.address(&first);
        drop(first);
        assert_eq!(gpu.pool_counters().idle_bytes, 163_840, "{device}: freed, it is idle");
        // The same class (a smaller f64 buffer of it), from the pool: the same memory.
        let ((second, counted), reused) = pooled(device, || {
            counted(device, || {
                gpu.alloc(DType::F64, 20_000, InitialContents::Unwritten).unwrap()
            })
        });
        assert_eq!(gpu.address(&second), address, "{device}: the freed memory is reused");
        assert_eq!(
            counted,
            DeviceCounters {
                allocations: 1,
                allocation_bytes: 160_000,
                ..DeviceCounters::default()
            },
            "{device}: a reuse is still an allocation"
        );
        assert_eq!(
            reused,
            PoolCounters {
                reuses: 1,
                reused_bytes: 163_840,
                ..PoolCounters::default()
            },
            "{device}: {reused}"
        );
        // Another class while the first is in use: new memory.
        let (third, other) = pooled(device, || {
            gpu.alloc(DType::F32, 70_001, InitialContents::Unwritten).unwrap()
        });
        assert_eq!((other.device_allocations, other.reuses), (1, 0), "{device}: {other}");
        drop((second, third));
        // Released to the driver: idle memory is gone, and the next buffer is new again.
        let released = gpu.empty_pool();
        assert!(released >= 163_840 + 294_912, "{device}: {released} bytes released");
        assert_eq!(gpu.pool_counters().idle_bytes, 0, "{device}");
        let (_, after_release) = pooled(device, || {
            gpu.alloc(DType::F32, 40_001, InitialContents::Unwritten).unwrap()
        });
        assert_eq!(
            (after_release.device_allocations, after_release.reuses),
            (1, 0),
            "{device}"
        );
    }
}

/// The same operations run twice: the second time every buffer comes from the pool, as a
/// training iteration after the first does. Uploads too: their buffers are pooled.
#[test]
fn repeated_work_allocates_no_new_device_memory() {
    let _devices = lock_devices();
    for device in cuda_devices() {
        let work = || {
            let x = Storage::from_f64_slice(&[0.5; 777], DType::F32, device).unwrap();
            let y = x.unary(UnaryOp::Exp).binary(BinaryOp::Mul, &[777], &x, &[777], &[777]);
            let product = y.matmul(&y, &MatmulProblem::plain(21, 37, 21));
            product.try_to_f64_vec().unwrap()
        };
        let (first_values, _) = pooled(device, work);
        let ((second_values, counted), pool) = pooled(device, || counted(device, work));
        assert_eq!(first_values, second_values, "{device}: the same work, the same values");
        assert_eq!((counted.allocations, counted.uploads), (4, 1), "{device}: {counted}");
        assert_eq!(
            (pool.device_allocations, pool.reuses),
            (0, 4),
            "{device}: every buffer of the second run is reused: {pool}"
        );
    }
}

/// A reused buffer is no shortcut past the emulator's NaN fill: a buffer that held values
/// (here ones) and is handed out again for a kernel to write whole holds NaN until it does, so
/// a kernel that skips an element still fails; one handed out as zeros holds zeros.
#[test]
fn a_reused_buffer_reads_as_nan_again_on_the_emulator() {
    let _devices = lock_devices();
    let Ok(emulator) = GpuDevice::get(Device::CudaEmulator) else {
        eprintln!("skipped: the emulator is not built in (--features emulator)");
        return;
    };
    for dtype in [DType::F32, DType::F64, DType::BF16, DType::F16] {
        // 333 values: a class of its own in every dtype here (at most 2,664 bytes).
        let Storage::Cuda(ones) = Storage::full(1.0, 333, dtype, Device::CudaEmulator).unwrap() else {
            panic!("storage on the CPU")
        };
        let address = emulator.address(&ones.buffer);
        drop(ones);
        let reused = emulator.alloc(dtype, 333, InitialContents::Unwritten).unwrap();
        assert_eq!(
            emulator.address(&reused),
            address,
            "{dtype}: the ones' memory is reused"
        );
        let values = Storage::Cpu(emulator.download(&reused).unwrap()).to_f64_vec();
        assert!(values.iter().all(|v| v.is_nan()), "{dtype}: {values:?}");
        drop(reused);
        let zeros = emulator.alloc(dtype, 333, InitialContents::Zeros).unwrap();
        assert_eq!(emulator.address(&zeros), address, "{dtype}");
        assert_eq!(
            Storage::Cpu(emulator.download(&zeros).unwrap()).to_f64_vec(),
            vec![0.0; 333]
        );
    }
}

/// With an idle limit of 0 the pool keeps nothing: every freed buffer is given back at once.
#[test]
fn a_pool_limited_to_nothing_keeps_nothing() {
    let _devices = lock_devices();
    for device in cuda_devices() {
        let gpu = GpuDevice::get(device).unwrap();
        gpu.set_pool_limit(0);
        let (_, pool) = pooled(device, || {
            drop(gpu.alloc(DType::F32, 12_345, InitialContents::Unwritten).unwrap());
            drop(gpu.alloc(DType::F32, 12_345, InitialContents::Unwritten).unwrap());
        });
        gpu.set_pool_limit(earthmover_kernels::cuda::pool::DEFAULT_IDLE_LIMIT);
        assert_eq!(
            (pool.device_allocations, pool.reuses, pool.releases, pool.idle_bytes),
            (2, 0, 2, 0),
            "{device}: {pool}"
        );
    }
}

/// A CUDA graph: work captured once and replayed gives, bit for bit, what the same work run
/// uncaptured gives, step after step (an SGD step with momentum, in place, on a gradient of
/// elementwise ops and a matmul); each replay is one graph launch and nothing else: no kernel
/// launch, allocation, copy or wait. On the emulator the capture records the launches and a
/// replay runs them; on a GPU it is CUDA's stream capture.
#[test]
fn a_captured_graph_replays_the_work_bit_for_bit_as_one_launch() {
    let _devices = lock_devices();
    for device in cuda_devices() {
        let gpu = GpuDevice::get(device).unwrap();
        let start: Vec<f64> = (0..20 * 20).map(|i| (i as f64 * 0.37).sin()).collect();
        let step = |param: &mut Storage, momentum: &mut Storage| {
            let square = param.matmul(param, &MatmulProblem::plain(20, 20, 20));
            let grad = square
                .unary(UnaryOp::Tanh)
                .binary(BinaryOp::Mul, &[400], param, &[400], &[400]);
            let sgd = OptimizerUpdate::Sgd {
                lr: 0.05,
                momentum: 0.9,
            };
            param.optimizer_step(&grad, &mut [momentum], sgd);
        };
        let fresh = || {
            (
                Storage::from_f64_slice(&start, DType::F32, device).unwrap(),
                Storage::full(0.0, 400, DType::F32, device).unwrap(),
            )
        };
        let (mut plain, mut plain_momentum) = fresh();
        for _ in 0..4 {
            step(&mut plain, &mut plain_momentum);
        }

        let (mut param, mut momentum) = fresh();
        // Once uncaptured: the pool then holds every buffer the capture needs.
        step(&mut param, &mut momentum);
        gpu.begin_capture().unwrap();
        let (_, capture) = counted(device, || step(&mut param, &mut momentum));
        let graph = gpu.end_capture().unwrap();
        assert_eq!(graph.kernels(), 4, "{device}: matmul, tanh, mul, sgd");
        // Made after the capture, of the size class of the graph's intermediates: it must get
        // memory the replays do not write.
        let bystander = Storage::full(7.0, 400, DType::F32, device).unwrap();
        assert_eq!(
            (capture.launches, capture.graph_launches, capture.host_syncs),
            (0, 0, 0),
            "{device}: captured, not run: {capture}"
        );
        for replay in 1..=3 {
            // SAFETY: the parameter and its momentum, made before the capture, are alive.
            let (_, counters) = counted(device, || unsafe { gpu.replay(&graph) }.unwrap());
            assert_eq!(
                counters,
                DeviceCounters {
                    graph_launches: 1,
                    ..DeviceCounters::default()
                },
                "{device}: replay {replay}"
            );
        }
        assert_eq!(
            param.to_f64_vec(),
            plain.to_f64_vec(),
            "{device}: the parameter after 4 steps"
        );
        assert_eq!(
            momentum.to_f64_vec(),
            plain_momentum.to_f64_vec(),
            "{device}: the momentum"
        );
        assert_eq!(
            bystander.to_f64_vec(),
            vec![7.0; 400],
            "{device}: the graph's memory is its own"
        );
        drop(graph);
    }
}

/// Inside a capture a graph can hold no host wait, no upload and no new device memory: each is
/// an error naming it, and the device is not failed by it.
#[test]
fn a_capture_refuses_waits_uploads_and_new_memory() {
    let _devices = lock_devices();
    for device in cuda_devices() {
        let gpu = GpuDevice::get(device).unwrap();
        let x = Storage::from_f64_slice(&[1.0, 2.0], DType::F32, device).unwrap();
        gpu.begin_capture().unwrap();
        let download = x.try_to_f64_vec().unwrap_err();
        assert!(
            download.contains("a download") && download.contains("captured"),
            "{download}"
        );
        let sync = gpu.synchronize().unwrap_err();
        assert!(sync.contains("a synchronisation"), "{sync}");
        let upload = Storage::from_f64_slice(&[3.0], DType::F32, device).unwrap_err();
        assert!(upload.contains("an upload"), "{upload}");
        // 54,321 f64: a size class nothing of this file leaves idle.
        let new_memory = gpu.alloc(DType::F64, 54_321, InitialContents::Unwritten).unwrap_err();
        assert!(new_memory.contains("no idle buffer"), "{new_memory}");
        assert!(gpu.begin_capture().is_err(), "{device}: one capture at a time");
        drop(gpu.end_capture().unwrap());
        assert!(gpu.end_capture().is_err(), "{device}: no capture under way");
        assert_eq!(gpu.failure(), None, "{device}");
        assert_eq!(x.try_to_f64_vec().unwrap(), vec![1.0, 2.0]);
    }
}

/// The `_at` operations read their count when their kernel runs: work captured once, with the
/// counts advanced in place inside it, draws, gathers and steps at each replay what the by-value
/// operations give at the counts' new values on the same device, bit for bit (Philox numbers
/// keyed by `sequence_key(seed, index)`, rows from the position, Adam's bias correction at the
/// step count; on the emulator those are the CPU's numbers too). And a zero-filled allocation made during a capture is zeroed again at each replay, as
/// a GPU's captured memset is.
#[test]
fn captured_counts_give_each_replay_the_next_draw_batch_and_step() {
    use earthmover_kernels::cpu::random::sequence_key;
    use earthmover_kernels::Distribution;
    let _devices = lock_devices();
    let normal = Distribution::Normal { mean: 0.0, std: 1.0 };
    let uniform = Distribution::Uniform { low: -1.0, high: 2.0 };
    let adam = |step| OptimizerUpdate::Adam {
        lr: 0.01,
        betas: (0.5, 0.9),
        eps: 1e-8,
        step,
    };
    let rows: Vec<f64> = (0..7 * 3).map(|i| i as f64).collect();
    let start: Vec<f64> = (0..29).map(|i| (i as f64 * 0.7).cos()).collect();
    let grad: Vec<f64> = (0..29).map(|i| (i as f64 * 0.3).sin()).collect();
    for device in cuda_devices() {
        let gpu = GpuDevice::get(device).unwrap();
        let on = |values: &[f64], dtype| Storage::from_f64_slice(values, dtype, device).unwrap();
        let (mut index, mut position, mut step) =
            (on(&[0.0], DType::F64), on(&[0.0], DType::F64), on(&[0.0], DType::F64));
        let (data, g) = (on(&rows, DType::F32), on(&grad, DType::F32));
        let (mut param, mut m, mut v) = (
            on(&start, DType::F32),
            on(&[0.0; 29], DType::F32),
            on(&[0.0; 29], DType::F32),
        );
        let mut iteration = || {
            let drawn = [
                Storage::random_at(normal, 37, 11, &index, 0, DType::F32).unwrap(),
                Storage::random_at(uniform, 37, 11, &index, 1, DType::F64).unwrap(),
                data.gather_shuffled_rows_at(3, 5, &position, 99).unwrap(),
            ];
            let mut zeroed = GpuStorage {
                device: gpu.clone(),
                buffer: gpu.alloc(DType::F32, 1000, InitialContents::Zeros).unwrap(),
            };
            zeroed.add_scalar_in_place(1.0);
            index.add_scalar_in_place(1.0).unwrap();
            position.add_scalar_in_place(5.0).unwrap();
            step.add_scalar_in_place(1.0).unwrap();
            let mut list = [ParamStep {
                param: &mut param,
                grad: &g,
                state: vec![&mut m, &mut v],
            }];
            Storage::optimizer_step_list_at(&mut list, adam(0), &step);
            (drawn, zeroed)
        };
        // Once uncaptured (the pool then holds what the capture needs), then captured: the
        // capture runs nothing, so each replay r sees the counts at r.
        iteration();
        gpu.begin_capture().unwrap();
        let (drawn, zeroed) = iteration();
        let graph = gpu.end_capture().unwrap();
        assert_eq!(
            graph.kernels(),
            9,
            "{device}: 2 draws and a gather, a zero-fill and an add, 3 advances, Adam"
        );
        // The by-value operations on the same device: the numbers the counts must give.
        let fresh = |values: &[f64], dtype| Storage::from_f64_slice(values, dtype, device).unwrap();
        for replay in 1..=3u64 {
            // SAFETY: every buffer the graph addresses that it did not allocate (the counts, the
            // rows, the parameter, its gradient and moments) is alive.
            unsafe { gpu.replay(&graph) }.unwrap();
            let key = sequence_key(11, replay);
            let expected = [
                Storage::random(normal, 37, key, 0, DType::F32, device).unwrap(),
                Storage::random(uniform, 37, key, 1, DType::F64, device).unwrap(),
                fresh(&rows, DType::F32)
                    .gather_shuffled_rows(3, 5, 5 * replay, 99)
                    .unwrap(),
            ];
            for (what, (got, want)) in ["normal", "uniform", "rows"].iter().zip(drawn.iter().zip(&expected)) {
                assert_eq!(
                    got.to_f64_vec(),
                    want.to_f64_vec(),
                    "{device}: {what} at replay {replay}"
                );
            }
            assert_eq!(
                Storage::Cuda(zeroed.duplicate()).to_f64_vec(),
                vec![1.0; 1000],
                "{device}: zeroed again at replay {replay}"
            );
        }
        assert_eq!(step.to_f64_vec(), vec![4.0], "{device}");
        let (mut by_value, mut by_value_m, mut by_value_v) = (
            fresh(&start, DType::F32),
            fresh(&[0.0; 29], DType::F32),
            fresh(&[0.0; 29], DType::F32),
        );
        for t in 1..=4 {
            by_value.optimizer_step(
                &fresh(&grad, DType::F32),
                &mut [&mut by_value_m, &mut by_value_v],
                adam(t),
            );
        }
        assert_eq!(param.to_f64_vec(), by_value.to_f64_vec(), "{device}: Adam's 4 steps");
        assert_eq!(
            v.to_f64_vec(),
            by_value_v.to_f64_vec(),
            "{device}: Adam's second moment"
        );
        drop((drawn, zeroed, graph));
    }
}
