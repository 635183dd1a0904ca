//! `Storage` on the emulated GPU (`Device::CudaEmulator`) against `Storage` on the CPU: every
//! operation the tensor crate uses, through the same GPU code path a real GPU takes (launch
//! shapes, argument structs, the conv lowering over im2col chunks), only the kernels' executor
//! differs.
//!
//! `cargo test -p earthmover-kernels --features emulator --test emulated_storage`
#![cfg(feature = "emulator")]

use earthmover_kernels::cpu::reduce::ReduceOp;
use earthmover_kernels::{
    BinaryOp, ConvGeometry, DType, Device, MatmulProblem, MatrixLayout, OptimizerUpdate, Storage, UnaryOp,
};

fn random(n: usize, seed: u64) -> Vec<f64> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect()
}

/// The same values on the CPU and on the emulated GPU.
fn pair(n: usize, seed: u64, dtype: DType) -> (Storage, Storage) {
    let cpu = Storage::from_f64_slice(&random(n, seed), dtype, Device::Cpu).unwrap();
    let gpu = cpu.to_device(Device::CudaEmulator).unwrap();
    assert_eq!(gpu.device(), Device::CudaEmulator);
    (cpu, gpu)
}

fn assert_close(what: &str, gpu: &Storage, cpu: &Storage, tolerance: f64) {
    assert_eq!(gpu.device(), Device::CudaEmulator, "{what}: result left the device");
    assert_eq!(gpu.dtype(), cpu.dtype(), "{what}: dtype");
    let (g, c) = (gpu.to_f64_vec(), cpu.to_f64_vec());
    assert_eq!(g.len(), c.len(), "{what}: length");
    for (i, (a, b)) in g.iter().zip(&c).enumerate() {
        assert!(
            (a - b).abs() <= tolerance * (1.0 + b.abs()),
            "{what}[{i}]: gpu {a}, cpu {b}"
        );
    }
}

#[test]
fn copies_casts_and_fills_round_trip() {
    let (cpu, gpu) = pair(517, 1, DType::F64);
    assert_eq!(gpu.to_device(Device::Cpu).unwrap(), cpu);
    assert_close("cast", &gpu.cast(DType::F32), &cpu.cast(DType::F32), 0.0);
    assert_close("clone", &gpu.clone(), &cpu, 0.0);
    let full = Storage::full(2.5, 33, DType::F32, Device::CudaEmulator).unwrap();
    assert_eq!(full.to_f32_vec(), vec![2.5; 33]);
    // A CUDA GPU that is not there is an error, not a panic.
    assert!(Storage::full(0.0, 1, DType::F32, Device::Cuda(99)).is_err());
}

#[test]
fn elementwise_reduce_and_layout_ops_match() {
    for dtype in [DType::F32, DType::F64] {
        let tol = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
        let (a_cpu, a_gpu) = pair(3 * 5 * 7, 2, dtype);
        let (b_cpu, b_gpu) = pair(5, 3, dtype);
        for op in [
            UnaryOp::Tanh,
            UnaryOp::LeakyRelu(0.2),
            UnaryOp::Softplus,
            UnaryOp::Pow(2.0),
        ] {
            assert_close(&format!("{op:?}"), &a_gpu.unary(op), &a_cpu.unary(op), tol);
        }
        let (sa, sb, so) = ([3, 5, 7], [5, 1], [3, 5, 7]);
        assert_close(
            "mul broadcast",
            &a_gpu.binary(BinaryOp::Mul, &sa, &b_gpu, &sb, &so),
            &a_cpu.binary(BinaryOp::Mul, &sa, &b_cpu, &sb, &so),
            tol,
        );
        let cond_cpu = a_cpu.unary(UnaryOp::GtScalar(0.0));
        let cond_gpu = a_gpu.unary(UnaryOp::GtScalar(0.0));
        let neg_cpu = a_cpu.unary(UnaryOp::Neg);
        let neg_gpu = a_gpu.unary(UnaryOp::Neg);
        assert_close(
            "where",
            &cond_gpu.where_cond(&a_gpu, &neg_gpu),
            &cond_cpu.where_cond(&a_cpu, &neg_cpu),
            0.0,
        );
        for (out, op) in [
            ([1, 5, 1], ReduceOp::Sum),
            ([3, 1, 7], ReduceOp::Max),
            ([1, 1, 1], ReduceOp::Sum),
        ] {
            assert_close(
                &format!("{op:?} {out:?}"),
                &a_gpu.reduce(op, &sa, &out),
                &a_cpu.reduce(op, &sa, &out),
                tol,
            );
        }
        // Permute [3, 5, 7] to [7, 3, 5], then write it into a padded buffer.
        let (strides, shape) = ([1, 35, 7], [7, 3, 5]);
        let p_cpu = a_cpu.strided_copy(0, &strides, &shape);
        let p_gpu = a_gpu.strided_copy(0, &strides, &shape);
        assert_close("permute", &p_gpu, &p_cpu, 0.0);
        let mut big_cpu = Storage::full(0.0, 9 * 5 * 7, dtype, Device::Cpu).unwrap();
        let mut big_gpu = Storage::full(0.0, 9 * 5 * 7, dtype, Device::CudaEmulator).unwrap();
        big_cpu.strided_write(35, &[35, 7, 1], &a_cpu, &sa);
        big_gpu.strided_write(35, &[35, 7, 1], &a_gpu, &sa);
        assert_close("pad", &big_gpu, &big_cpu, 0.0);
    }
}

#[test]
fn matmul_with_a_transposed_operand_matches() {
    let (m, n, k) = (19, 23, 37);
    let (a_cpu, a_gpu) = pair(k * m, 4, DType::F32);
    let (b_cpu, b_gpu) = pair(k * n, 5, DType::F32);
    let p = MatmulProblem {
        batch: 1,
        m,
        n,
        k,
        a_layout: MatrixLayout::transposed(m),
        a_batch_stride: 0,
        b_layout: MatrixLayout::row_major(n),
        b_batch_stride: 0,
    };
    assert_close("A^T B", &a_gpu.matmul(&b_gpu, &p), &a_cpu.matmul(&b_cpu, &p), 1e-5);
}

#[test]
fn convolutions_and_their_gradients_match() {
    // Odd sizes, stride 2 with padding (the critic's), and a dilated one.
    let geometries = [(3, 2, 4, 9, 11, 5, 2, 2, 1), (2, 3, 2, 7, 6, 3, 1, 1, 2)];
    for (batch, c, o, h, w, k, stride, pad, dil) in geometries {
        let out_h = ConvGeometry::conv_out_size(h, k, stride, pad, dil).unwrap();
        let out_w = ConvGeometry::conv_out_size(w, k, stride, pad, dil).unwrap();
        let g = ConvGeometry {
            batch,
            in_channels: c,
            out_channels: o,
            in_h: h,
            in_w: w,
            kernel_h: k,
            kernel_w: k,
            stride: (stride, stride),
            padding: (pad, pad),
            dilation: (dil, dil),
            out_h,
            out_w,
        };
        for dtype in [DType::F32, DType::F64] {
            let tol = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
            let (x_cpu, x_gpu) = pair(batch * c * h * w, 6, dtype);
            let (w_cpu, w_gpu) = pair(o * c * k * k, 7, dtype);
            let (y_cpu, y_gpu) = pair(batch * o * out_h * out_w, 8, dtype);
            let (bo_cpu, bo_gpu) = pair(o, 9, dtype);
            let (bc_cpu, bc_gpu) = pair(c, 10, dtype);
            // Bare, with a bias, and with a bias and an activation (the fused epilogue): the
            // forward pass's activation, then the adjoint's.
            let with_bias = (Some((&bo_gpu, &bo_cpu)), Some((&bc_gpu, &bc_cpu)));
            let cases = [
                ((None, None), None, None),
                (with_bias, None, None),
                (with_bias, Some(UnaryOp::LeakyRelu(0.2)), Some(UnaryOp::Sigmoid)),
            ];
            for ((bo, bc), forward_act, adjoint_act) in cases {
                let case = format!("bias {}, activations {forward_act:?} / {adjoint_act:?}", bo.is_some());
                assert_close(
                    &format!("conv2d, {case}"),
                    &x_gpu.conv2d_forward(&w_gpu, bo.map(|b| b.0), forward_act, &g),
                    &x_cpu.conv2d_forward(&w_cpu, bo.map(|b| b.1), forward_act, &g),
                    tol,
                );
                assert_close(
                    &format!("input adjoint, {case}"),
                    &y_gpu.conv2d_input_adjoint(&w_gpu, bc.map(|b| b.0), adjoint_act, &g),
                    &y_cpu.conv2d_input_adjoint(&w_cpu, bc.map(|b| b.1), adjoint_act, &g),
                    tol,
                );
            }
            assert_close(
                "weight grad",
                &x_gpu.conv2d_weight_grad(&y_gpu, &g),
                &x_cpu.conv2d_weight_grad(&y_cpu, &g),
                tol,
            );
        }
    }
}

#[test]
fn optimizer_steps_update_in_place_like_the_cpu() {
    let updates = [
        OptimizerUpdate::Sgd { lr: 0.1, momentum: 0.5 },
        OptimizerUpdate::RmsProp {
            lr: 5e-5,
            alpha: 0.99,
            eps: 1e-8,
        },
        OptimizerUpdate::Adam {
            lr: 1e-4,
            betas: (0.0, 0.9),
            eps: 1e-8,
            step: 2,
        },
        OptimizerUpdate::Clamp { min: -0.01, max: 0.01 },
    ];
    for update in updates {
        let (mut p_cpu, mut p_gpu) = pair(301, 9, DType::F64);
        let (g_cpu, g_gpu) = pair(301, 10, DType::F64);
        let (mut m_cpu, mut m_gpu) = pair(301, 11, DType::F64);
        let (v_cpu, _) = pair(301, 12, DType::F64);
        let mut v_cpu = v_cpu.unary(UnaryOp::Abs);
        let mut v_gpu = v_cpu.to_device(Device::CudaEmulator).unwrap();
        let states = match update {
            OptimizerUpdate::Clamp { .. } => 0,
            OptimizerUpdate::Adam { .. } => 2,
            _ => 1,
        };
        if let OptimizerUpdate::RmsProp { .. } = update {
            m_cpu = m_cpu.unary(UnaryOp::Abs);
            m_gpu = m_cpu.to_device(Device::CudaEmulator).unwrap();
        }
        {
            let mut cpu_state: Vec<&mut Storage> = vec![&mut m_cpu, &mut v_cpu];
            cpu_state.truncate(states);
            p_cpu.optimizer_step(&g_cpu, &mut cpu_state, update);
            let mut gpu_state: Vec<&mut Storage> = vec![&mut m_gpu, &mut v_gpu];
            gpu_state.truncate(states);
            p_gpu.optimizer_step(&g_gpu, &mut gpu_state, update);
        }
        assert_close(&format!("{update:?} param"), &p_gpu, &p_cpu, 1e-13);
        assert_close(&format!("{update:?} state"), &m_gpu, &m_cpu, 1e-13);
        assert_close(&format!("{update:?} state 2"), &v_gpu, &v_cpu, 1e-13);
    }
}
