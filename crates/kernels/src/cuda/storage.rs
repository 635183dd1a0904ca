//! Tensor storage on a GPU (or the emulator): each operation of [`crate::Storage`] as launches
//! of the kernels in `kernels/*.cu`. Convolutions are lowered as on the CPU: im2col over a
//! chunk of samples, one matmul, and a strided write into NCHW (see `cpu::conv::reference`).

use super::device::{Arg, GpuBuffer, GpuDevice, InitialContents};
use super::matmul::MatmulKernel;
use super::shapes::{BroadcastShape, ConvShape, MatmulShape, ParamList, ReduceShape, StridedShape};
use super::LaunchShape;
use crate::op::{BinaryOp, Distribution, MatmulProblem, MatrixLayout, OptimizerUpdate, ReduceOp, UnaryOp};
use crate::storage::{CpuStorage, DType};
use crate::ConvGeometry;
use std::sync::Arc;

/// Elements of one im2col chunk at most: 64 Mi (256 MiB in f32).
const CHUNK_ELEMENTS: usize = 64 << 20;

/// A buffer and the device it lives on.
pub struct GpuStorage {
    pub device: Arc<GpuDevice>,
    pub buffer: GpuBuffer,
}

impl std::fmt::Debug for GpuStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} on {}", self.buffer, self.device.device)
    }
}

fn suffix(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "f32",
        DType::F64 => "f64",
        DType::BF16 => "bf16",
        DType::F16 => "f16",
    }
}

impl GpuStorage {
    pub fn dtype(&self) -> DType {
        self.buffer.dtype
    }

    pub fn len(&self) -> usize {
        self.buffer.len
    }

    pub fn is_empty(&self) -> bool {
        self.buffer.len == 0
    }

    pub fn upload(device: Arc<GpuDevice>, data: &CpuStorage) -> Result<GpuStorage, String> {
        let buffer = device.upload(data)?;
        Ok(GpuStorage { device, buffer })
    }

    pub fn download(&self) -> Result<CpuStorage, String> {
        self.device.download(&self.buffer)
    }

    /// A new buffer on this storage's device for an output that its kernels write whole
    /// (every kernel here writes each element of its output, once): no zero-fill.
    fn new_output(&self, dtype: DType, len: usize) -> GpuStorage {
        GpuStorage {
            device: self.device.clone(),
            buffer: self.device.alloc_or_fail(dtype, len, InitialContents::Unwritten),
        }
    }

    /// A new zero-filled buffer on this storage's device: zeros that no kernel writes.
    fn new_zeros(&self, dtype: DType, len: usize) -> GpuStorage {
        GpuStorage {
            device: self.device.clone(),
            buffer: self.device.alloc_or_fail(dtype, len, InitialContents::Zeros),
        }
    }

    fn ptr(&self) -> Arg {
        Arg::Ptr(self.device.address(&self.buffer))
    }

    fn kernel(&self, family: &str) -> String {
        format!("{family}_{}", suffix(self.dtype()))
    }

    fn check_same(&self, other: &GpuStorage, op: &str) {
        assert!(
            Arc::ptr_eq(&self.device, &other.device) && self.dtype() == other.dtype(),
            "{op}: operands must share dtype and device, got {} on {} and {} on {}",
            self.dtype(),
            self.device.device,
            other.dtype(),
            other.device.device
        );
    }

    /// Launch on this storage's device; the arguments are built by the callers below from
    /// buffers they hold, so the addresses stay valid for the launch.
    fn try_launch(&self, kernel: &str, shape: LaunchShape, args: &mut [Arg]) -> Result<(), String> {
        // SAFETY: every call site passes the kernel's parameter list of kernels/*.cu, with
        // the addresses of live buffers sized for the kernel's indexing.
        unsafe { self.device.launch(kernel, shape, args) }
    }

    /// [`Self::try_launch`] for the operations that have no error path: an error becomes the
    /// device's failure, returned by its next read ([`GpuDevice::failure`]).
    fn launch(&self, kernel: &str, shape: LaunchShape, args: &mut [Arg]) {
        if let Err(e) = self.try_launch(kernel, shape, args) {
            self.device.record_failure(e);
        }
    }

    pub fn full(device: Arc<GpuDevice>, value: f64, len: usize, dtype: DType) -> Result<GpuStorage, String> {
        let out = GpuStorage {
            buffer: device.alloc(dtype, len, InitialContents::Unwritten)?,
            device,
        };
        let kernel = out.kernel("fill");
        out.try_launch(
            &kernel,
            LaunchShape::elementwise(len),
            &mut [out.ptr(), Arg::F64(value), Arg::I64(len as i64)],
        )?;
        Ok(out)
    }

    /// `len` numbers from `distribution` (the Philox kernels of random.cu).
    pub fn random(
        device: Arc<GpuDevice>,
        distribution: Distribution,
        len: usize,
        seed: u64,
        stream: u64,
        dtype: DType,
    ) -> Result<GpuStorage, String> {
        let out = GpuStorage {
            buffer: device.alloc(dtype, len, InitialContents::Unwritten)?,
            device,
        };
        let (family, a, b) = match distribution {
            Distribution::Uniform { low, high } => ("uniform", low, high),
            Distribution::Normal { mean, std } => ("normal", mean, std),
        };
        out.try_launch(
            &out.kernel(family),
            LaunchShape::elementwise(len),
            &mut [
                out.ptr(),
                Arg::I64(len as i64),
                Arg::U64(seed),
                Arg::U64(stream),
                Arg::F64(a),
                Arg::F64(b),
            ],
        )?;
        Ok(out)
    }

    /// `rows` rows of `row_len` values in the shuffled order of `cpu::gather` (the kernel
    /// `gather_shuffled_rows` of random.cu): a batch gathered where the dataset lives.
    pub fn gather_shuffled_rows(
        &self,
        row_len: usize,
        rows: usize,
        position: u64,
        seed: u64,
    ) -> Result<GpuStorage, String> {
        let n = rows * row_len;
        let out = GpuStorage {
            buffer: self.device.alloc(self.dtype(), n, InitialContents::Unwritten)?,
            device: self.device.clone(),
        };
        if n == 0 {
            return Ok(out);
        }
        out.try_launch(
            &self.kernel("gather_shuffled_rows"),
            LaunchShape::elementwise(n),
            &mut [
                self.ptr(),
                out.ptr(),
                Arg::I64(rows as i64),
                Arg::I64(row_len as i64),
                Arg::I64((self.len() / row_len) as i64),
                Arg::U64(position),
                Arg::U64(seed),
            ],
        )?;
        Ok(out)
    }

    pub fn duplicate(&self) -> GpuStorage {
        self.strided_copy(0, &[1], &[self.len()])
    }

    pub fn cast(&self, dtype: DType) -> GpuStorage {
        if dtype == self.dtype() {
            return self.duplicate();
        }
        // One kernel per pair with f32 on one side; the others go through f32 (f64 to a 16-bit
        // float rounds twice, as on the CPU and in PyTorch).
        if self.dtype() != DType::F32 && dtype != DType::F32 {
            return self.cast(DType::F32).cast(dtype);
        }
        let out = self.new_output(dtype, self.len());
        let kernel = format!("cast_{}_{}", suffix(self.dtype()), suffix(dtype));
        self.launch(
            &kernel,
            LaunchShape::elementwise(self.len()),
            &mut [self.ptr(), out.ptr(), Arg::I64(self.len() as i64)],
        );
        out
    }

    pub fn unary(&self, op: UnaryOp) -> GpuStorage {
        let out = self.new_output(self.dtype(), self.len());
        let (code, (p, q)) = (op.code(), op.parameters());
        self.launch(
            &self.kernel("unary"),
            LaunchShape::elementwise(self.len()),
            &mut [
                Arg::I32(code),
                Arg::F64(p),
                Arg::F64(q),
                self.ptr(),
                out.ptr(),
                Arg::I64(self.len() as i64),
            ],
        );
        out
    }

    pub fn binary(
        &self,
        op: BinaryOp,
        shape: &[usize],
        other: &GpuStorage,
        other_shape: &[usize],
        out_shape: &[usize],
    ) -> GpuStorage {
        self.check_same(other, "binary op");
        let n: usize = out_shape.iter().product();
        let out = self.new_output(self.dtype(), n);
        let s = BroadcastShape::new(shape, other_shape, out_shape).expect("at most 8 dims on a GPU");
        let (code, parameter) = (op.code(), op.parameter());
        self.launch(
            &self.kernel("binary"),
            LaunchShape::elementwise(n),
            &mut [
                Arg::I32(code),
                Arg::F64(parameter),
                self.ptr(),
                other.ptr(),
                out.ptr(),
                Arg::I64(n as i64),
                Arg::Broadcast(s),
            ],
        );
        out
    }

    pub fn where_cond(&self, a: &GpuStorage, b: &GpuStorage) -> GpuStorage {
        self.check_same(a, "where");
        self.check_same(b, "where");
        let out = self.new_output(self.dtype(), self.len());
        self.launch(
            &self.kernel("where_cond"),
            LaunchShape::elementwise(self.len()),
            &mut [self.ptr(), a.ptr(), b.ptr(), out.ptr(), Arg::I64(self.len() as i64)],
        );
        out
    }

    pub fn reduce(&self, op: ReduceOp, shape: &[usize], out_shape: &[usize]) -> GpuStorage {
        let s = ReduceShape::new(shape, out_shape).expect("a reduction of at most 8 dims");
        let out = self.new_output(self.dtype(), out_shape.iter().product());
        let family = match op {
            ReduceOp::Sum => "reduce_sum",
            ReduceOp::Max => "reduce_max",
        };
        if out.is_empty() {
            return out;
        }
        self.launch(
            &self.kernel(family),
            LaunchShape::per_output(out.len()),
            &mut [self.ptr(), out.ptr(), Arg::Reduce(s)],
        );
        out
    }

    pub fn strided_copy(&self, offset: usize, strides: &[usize], shape: &[usize]) -> GpuStorage {
        let n: usize = shape.iter().product();
        let out = self.new_output(self.dtype(), n);
        let s = StridedShape::new(offset, strides, shape).expect("at most 8 dims on a GPU");
        self.launch(
            &self.kernel("strided_copy"),
            LaunchShape::elementwise(n),
            &mut [self.ptr(), out.ptr(), Arg::I64(n as i64), Arg::Strided(s)],
        );
        out
    }

    pub fn strided_write(&mut self, offset: usize, strides: &[usize], src: &GpuStorage, shape: &[usize]) {
        self.check_same(src, "strided_write");
        let n: usize = shape.iter().product();
        let s = StridedShape::new(offset, strides, shape).expect("at most 8 dims on a GPU");
        self.launch(
            &self.kernel("strided_write"),
            LaunchShape::elementwise(n),
            &mut [self.ptr(), src.ptr(), Arg::I64(n as i64), Arg::Strided(s)],
        );
    }

    /// `C = A B` in the operands' dtype: f32 and f64 on matmul.cu's kernels; bf16 and f16 on the
    /// tensor cores (matmul_tc.cu: f32 sums, C rounded to 16 bits once, as the half rule gives
    /// up to the order of the sums), or on a GPU older than them through f32.
    pub fn matmul(&self, other: &GpuStorage, p: &MatmulProblem) -> GpuStorage {
        self.check_same(other, "matmul");
        let half = self.dtype();
        if half.is_half() && !self.device.has_tensor_cores() {
            return self.cast(DType::F32).matmul(&other.cast(DType::F32), p).cast(half);
        }
        let out = self.new_output(self.dtype(), p.batch * p.m * p.n);
        if out.is_empty() {
            return out;
        }
        match self.dtype() {
            DType::BF16 | DType::F16 => self.launch(
                &self.kernel("matmul_tc"),
                LaunchShape::matmul_tensor_cores(p.m, p.n, p.batch),
                &mut [self.ptr(), other.ptr(), out.ptr(), Arg::Matmul(MatmulShape::from(p))],
            ),
            DType::F32 | DType::F64 => self.matmul_into(other, p, MatmulKernel::choose(p), &out),
        }
        out
    }

    /// `C = A B` in f32 or f64 on one given version of matmul.cu ([`Self::matmul`] chooses;
    /// the tests run each). Panics if `kernel` cannot run `p` (a GEMV with N and M over 1).
    pub fn matmul_with(&self, other: &GpuStorage, p: &MatmulProblem, kernel: MatmulKernel) -> GpuStorage {
        self.check_same(other, "matmul");
        assert!(
            matches!(self.dtype(), DType::F32 | DType::F64),
            "matmul_with: f32 or f64 only"
        );
        let out = self.new_output(self.dtype(), p.batch * p.m * p.n);
        if !out.is_empty() {
            self.matmul_into(other, p, kernel, &out);
        }
        out
    }

    fn matmul_into(&self, other: &GpuStorage, p: &MatmulProblem, kernel: MatmulKernel, out: &GpuStorage) {
        let launch = kernel.launch(p).unwrap_or_else(|e| panic!("{e}"));
        let (x, v) = if launch.swap_operands {
            (other, self)
        } else {
            (self, other)
        };
        self.launch(
            &self.kernel(launch.family),
            launch.shape,
            &mut [x.ptr(), v.ptr(), out.ptr(), Arg::Matmul(launch.args)],
        );
    }

    /// Samples per im2col chunk: as many as keep the chunk's columns within `CHUNK_ELEMENTS`.
    pub fn samples_per_chunk(g: &ConvGeometry) -> usize {
        let per_sample = (g.patch_len() * g.out_h * g.out_w).max(1);
        (CHUNK_ELEMENTS / per_sample).clamp(1, g.batch.max(1))
    }

    fn im2col(&self, g: &ConvGeometry, first: usize, samples: usize) -> GpuStorage {
        let n = g.patch_len() * samples * g.out_h * g.out_w;
        let cols = self.new_output(self.dtype(), n);
        self.launch(
            &self.kernel("im2col"),
            LaunchShape::elementwise(n),
            &mut [self.ptr(), cols.ptr(), Arg::Conv(ConvShape::new(g, first, samples))],
        );
        cols
    }

    /// conv2d without bias: `self` `[N, C, H, W]`, `weight` `[O, C, kh, kw]`.
    pub fn conv2d_forward(&self, weight: &GpuStorage, g: &ConvGeometry) -> GpuStorage {
        self.conv2d_forward_by_chunks(weight, g, Self::samples_per_chunk(g))
    }

    /// [`Self::conv2d_forward`] over chunks of `chunk` samples (tests give small chunks, so
    /// that small batches take the path of large ones).
    pub fn conv2d_forward_by_chunks(&self, weight: &GpuStorage, g: &ConvGeometry, chunk: usize) -> GpuStorage {
        self.check_same(weight, "conv2d");
        let (k, p, o) = (g.patch_len(), g.out_h * g.out_w, g.out_channels);
        let mut y = self.new_output(self.dtype(), g.batch * o * p);
        let chunk = chunk.max(1);
        for first in (0..g.batch).step_by(chunk) {
            let s = chunk.min(g.batch - first);
            let cols = self.im2col(g, first, s);
            // [O, K] @ [K, S*P] = [O, S*P]: sample-major columns, written to y as [S, O, P].
            let product = weight.matmul(&cols, &MatmulProblem::plain(o, s * p, k));
            y.strided_write(first * o * p, &[p, o * p, 1], &product, &[o, s, p]);
        }
        y
    }

    /// The adjoint of conv2d in its input: `self` `[N, O, Ho, Wo]`, `weight` `[O, C, kh, kw]`.
    pub fn conv2d_input_adjoint(&self, weight: &GpuStorage, g: &ConvGeometry) -> GpuStorage {
        self.conv2d_input_adjoint_by_chunks(weight, g, Self::samples_per_chunk(g))
    }

    /// [`Self::conv2d_input_adjoint`] over chunks of `chunk` samples.
    pub fn conv2d_input_adjoint_by_chunks(&self, weight: &GpuStorage, g: &ConvGeometry, chunk: usize) -> GpuStorage {
        self.check_same(weight, "conv_transpose2d");
        let (k, p, o) = (g.patch_len(), g.out_h * g.out_w, g.out_channels);
        let x = self.new_output(self.dtype(), g.batch * g.in_channels * g.in_h * g.in_w);
        let chunk = chunk.max(1);
        for first in (0..g.batch).step_by(chunk) {
            let s = chunk.min(g.batch - first);
            // The chunk of the map as [O, S*P], then W^T [K, O] @ it = columns [K, S*P].
            let grad = self.strided_copy(first * o * p, &[p, o * p, 1], &[o, s, p]);
            let transposed = MatmulProblem {
                a_layout: MatrixLayout::transposed(k),
                ..MatmulProblem::plain(k, s * p, o)
            };
            let cols = weight.matmul(&grad, &transposed);
            cols.launch(
                &cols.kernel("col2im"),
                LaunchShape::elementwise(s * g.in_channels * g.in_h * g.in_w),
                &mut [cols.ptr(), x.ptr(), Arg::Conv(ConvShape::new(g, first, s))],
            );
        }
        x
    }

    /// conv2d's weight gradient `[O, C, kh, kw]`: `self` `[N, C, H, W]`, `grad_out`
    /// `[N, O, Ho, Wo]`.
    pub fn conv2d_weight_grad(&self, grad_out: &GpuStorage, g: &ConvGeometry) -> GpuStorage {
        self.conv2d_weight_grad_by_chunks(grad_out, g, Self::samples_per_chunk(g))
    }

    /// [`Self::conv2d_weight_grad`] over chunks of `chunk` samples.
    pub fn conv2d_weight_grad_by_chunks(&self, grad_out: &GpuStorage, g: &ConvGeometry, chunk: usize) -> GpuStorage {
        self.check_same(grad_out, "conv2d_weight_grad");
        let (k, p, o) = (g.patch_len(), g.out_h * g.out_w, g.out_channels);
        let chunk = chunk.max(1);
        let mut total: Option<GpuStorage> = None;
        for first in (0..g.batch).step_by(chunk) {
            let s = chunk.min(g.batch - first);
            let cols = self.im2col(g, first, s);
            let grad = grad_out.strided_copy(first * o * p, &[p, o * p, 1], &[o, s, p]);
            // [O, S*P] @ cols^T [S*P, K] = [O, K].
            let problem = MatmulProblem {
                b_layout: MatrixLayout::transposed(s * p),
                ..MatmulProblem::plain(o, k, s * p)
            };
            let part = grad.matmul(&cols, &problem);
            total = Some(match total {
                None => part,
                Some(t) => t.binary(BinaryOp::Add, &[o * k], &part, &[o * k], &[o * k]),
            });
        }
        // An empty batch has no chunk: its gradient is zeros.
        total.unwrap_or_else(|| self.new_zeros(self.dtype(), o * k))
    }

    /// One fused optimiser step in place (a one-tensor list of optim.cu's kernels).
    pub fn optimizer_step(&mut self, grad: &GpuStorage, state: &mut [&mut GpuStorage], update: OptimizerUpdate) {
        self.check_same(grad, "optimizer step");
        state.iter().for_each(|s| self.check_same(s, "optimizer step"));
        let address = |s: &GpuStorage| s.device.address(&s.buffer);
        let (s1, s2) = match state {
            [] => (0, 0),
            [a] => (address(a), 0),
            [a, b, ..] => (address(a), address(b)),
        };
        let (param, g) = (address(self), address(grad));
        let list = match self.dtype() {
            DType::F32 => {
                let mut l = ParamList::<f32>::new();
                l.push(
                    self.len(),
                    param as *mut f32,
                    g as *const f32,
                    s1 as *mut f32,
                    s2 as *mut f32,
                );
                Arg::ParamsF32(l)
            }
            DType::F64 => {
                let mut l = ParamList::<f64>::new();
                l.push(
                    self.len(),
                    param as *mut f64,
                    g as *const f64,
                    s1 as *mut f64,
                    s2 as *mut f64,
                );
                Arg::ParamsF64(l)
            }
            half => unreachable!("{half} parameters are stepped in f32 (Storage::optimizer_step)"),
        };
        let shape = LaunchShape::elementwise(self.len());
        match update {
            OptimizerUpdate::Sgd { lr, momentum } => self.launch(
                &self.kernel("sgd"),
                shape,
                &mut [list, Arg::F64(lr), Arg::F64(momentum)],
            ),
            OptimizerUpdate::RmsProp { lr, alpha, eps } => self.launch(
                &self.kernel("rmsprop"),
                shape,
                &mut [list, Arg::F64(lr), Arg::F64(alpha), Arg::F64(eps)],
            ),
            OptimizerUpdate::Adam { lr, betas, eps, step } => {
                let (step_size, inv_bc2) = OptimizerUpdate::adam_step_scalars(lr, betas, step);
                self.launch(
                    &self.kernel("adam"),
                    shape,
                    &mut [
                        list,
                        Arg::F64(step_size),
                        Arg::F64(betas.0),
                        Arg::F64(betas.1),
                        Arg::F64(inv_bc2),
                        Arg::F64(eps),
                    ],
                )
            }
            OptimizerUpdate::Clamp { min, max } => {
                self.launch(&self.kernel("clamp"), shape, &mut [list, Arg::F64(min), Arg::F64(max)])
            }
        }
    }
}
