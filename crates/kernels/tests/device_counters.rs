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
use earthmover_kernels::cuda::storage::GpuStorage;
use earthmover_kernels::{BinaryOp, ConvGeometry, CpuStorage, DType, Device, MatmulProblem, Storage, UnaryOp};
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
        // and their output each; the weight gradient in split-K slices (K = 16 x 64 output
        // pixels: 4 slices) one launch into the slices' partial sums, one adding them into
        // the output.
        let g = ConvGeometry::conv2d([16, 3, 15, 15], [5, 3, 5, 5], (2, 2), (2, 2), (1, 1)).unwrap();
        let full = |value, len| Storage::full(value, len, DType::F64, device).unwrap();
        let (input, weight, map) = (
            full(0.5, 16 * 3 * 15 * 15),
            full(0.25, 5 * 3 * 5 * 5),
            full(1.0, 16 * 5 * 8 * 8),
        );
        let (Storage::Cuda(input), Storage::Cuda(weight), Storage::Cuda(map)) = (&input, &weight, &map) else {
            panic!("{device}: storage on the CPU")
        };
        let (_, conv) = counted(device, || input.conv2d_forward(weight, None, &g));
        assert_eq!(conv, launches_with_outputs(1, 8 * 16 * 5 * 8 * 8), "{device}: conv2d");
        let (_, adjoint) = counted(device, || map.conv2d_input_adjoint(weight, None, &g));
        assert_eq!(
            adjoint,
            launches_with_outputs(1, 8 * 16 * 3 * 15 * 15),
            "{device}: input adjoint"
        );
        assert_eq!(GpuStorage::weight_grad_slices(&g), 4);
        let (_, weight_grad) = counted(device, || input.conv2d_weight_grad(map, &g));
        let weight_bytes = 8 * 5 * 3 * 5 * 5;
        assert_eq!(
            weight_grad,
            launches_with_outputs(2, weight_bytes * (1 + 4)),
            "{device}: weight gradient in 4 slices"
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
