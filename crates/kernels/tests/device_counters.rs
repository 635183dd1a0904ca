//! The device counters (`GpuDevice::counters`) count exactly what each operation asks of the
//! device: known operations on small inputs, each checked for every counter, the ones it must
//! not touch included.
//!
//! Its own test binary: the counters are the device's, for the whole process, and the tests
//! of other files would add to them while these run. On the emulator (`--features emulator`)
//! and on GPU 0 when there is one, which must count alike. Its tests take turns (`lock_devices`).

mod common;

use common::cuda_devices;
use earthmover_kernels::cuda::counters::DeviceCounters;
use earthmover_kernels::cuda::device::{GpuDevice, InitialContents};
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

        // A convolution over 2 chunks of samples (2, then 1): per chunk im2col's columns and
        // the matmul's product (a launch and an output each) and the strided write into the
        // output, which is one more allocation.
        let g = ConvGeometry::conv2d([3, 2, 5, 5], [4, 2, 3, 3], (1, 1), (1, 1), (1, 1)).unwrap();
        let input = Storage::full(0.5, 3 * 2 * 5 * 5, DType::F64, device).unwrap();
        let weight = Storage::full(0.25, 4 * 2 * 3 * 3, DType::F64, device).unwrap();
        let (Storage::Cuda(input), Storage::Cuda(weight)) = (&input, &weight) else {
            panic!("{device}: storage on the CPU")
        };
        let (_, conv) = counted(device, || input.conv2d_forward_by_chunks(weight, &g, 2));
        // Columns are [K = 18, S * P] for S samples of P = 25 pixels, products [O = 4, S * P].
        let column_bytes = 8 * 18 * 25 * (2 + 1);
        let product_bytes = 8 * 4 * 25 * (2 + 1);
        let output_bytes = 8 * 3 * 4 * 25;
        assert_eq!(
            conv,
            DeviceCounters {
                launches: 6,
                ..launches_with_outputs(5, column_bytes + product_bytes + output_bytes)
            },
            "{device}: conv2d over 2 chunks"
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
