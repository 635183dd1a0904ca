//! A device that fails inside an operation (which has no error path: an op returns a storage)
//! keeps the first error, does no more work, and returns that error at the next call that can
//! return one, so that a program reports it instead of panicking deep inside an op.
//!
//! Its own test binary: the failure is the device's for the rest of the process, and other
//! tests share the process's devices. On the emulator (`--features emulator`) and on GPU 0
//! when there is one, each made to fail by an allocation no device can hold (which the memory
//! pool first tries to make room for by releasing what it holds idle).

mod common;

use common::cuda_devices;
use earthmover_kernels::cuda::device::GpuDevice;
use earthmover_kernels::{DType, Device, Distribution, Storage, UnaryOp};

#[test]
fn a_failure_inside_an_op_is_returned_by_the_next_read() {
    for device in cuda_devices() {
        let one = Storage::from_f64_slice(&[1.5], DType::F32, device).unwrap();
        let earlier = one.unary(UnaryOp::Neg);
        assert_eq!(earlier.try_to_f64_vec().unwrap(), vec![-1.5]);
        // A freed buffer idle in the memory pool, which a refused allocation releases before
        // asking the driver again.
        drop(one.unary(UnaryOp::Exp));
        let gpu = GpuDevice::get(device).unwrap();
        let pool_before = gpu.pool_counters();
        assert!(pool_before.idle_bytes > 0, "{device}: {pool_before}");
        // A broadcast of one value to 2^58 elements (2^60 bytes): its allocation fails.
        let huge = one.strided_copy(0, &[0], &[1 << 58]);
        let pool = gpu.pool_counters().since(&pool_before);
        assert!(
            pool.releases > 0 && pool.idle_bytes == 0,
            "{device}: the pool gave its idle memory back before the retry: {pool}"
        );
        let after = huge.unary(UnaryOp::Exp).unary(UnaryOp::Neg);
        let first = GpuDevice::get(device).unwrap().failure().expect("the device failed");
        assert!(
            first.contains(&device.to_string()) && first.contains("an allocation of 1152921504606846976 bytes"),
            "{first}"
        );
        // Every read and every fallible call now returns that first error, even for a storage
        // made before it.
        assert_eq!(after.try_to_f64_vec().unwrap_err(), first);
        assert_eq!(earlier.try_to_f64_vec().unwrap_err(), first);
        assert_eq!(Storage::full(0.0, 4, DType::F32, device).unwrap_err(), first);
        // What the tensor ops make on their inputs' device (`full_like`, `concat`'s output, a
        // scalar operand): no panic, a lost buffer whose read returns the error.
        for dtype in [DType::F32, DType::BF16] {
            let filled = Storage::full_or_fail(2.0, 3, dtype, device);
            assert_eq!(filled.len(), 3);
            assert_eq!(filled.try_to_f64_vec().unwrap_err(), first);
            let unwritten = Storage::for_overwrite_or_fail(5, dtype, device);
            assert_eq!(unwritten.len(), 5);
            assert_eq!(unwritten.try_to_f64_vec().unwrap_err(), first);
        }
        let normal = Distribution::Normal { mean: 0.0, std: 1.0 };
        assert_eq!(Storage::random(normal, 4, 0, 0, DType::F32, device).unwrap_err(), first);
        assert_eq!(earlier.to_device(Device::Cpu).unwrap_err(), first);
        assert_eq!(GpuDevice::get(device).unwrap().synchronize().unwrap_err(), first);
        // The CPU is not affected.
        assert_eq!(
            Storage::from_f64(vec![2.0]).unary(UnaryOp::Neg).to_f64_vec(),
            vec![-2.0]
        );
    }
}
