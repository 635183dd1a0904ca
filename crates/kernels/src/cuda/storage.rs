//! Tensor storage on a GPU (or the emulator): each operation of [`crate::Storage`] as launches
//! of the kernels in `kernels/*.cu`. Convolutions are implicit GEMMs (conv.cu): one launch for
//! the forward pass and for the input gradient (bias and activation included), one split-K
//! launch that also adds its slices in a fixed order for the weight gradient; no im2col buffer.
//! Those of 16-bit operands run on the tensor cores (conv_mma.cu, [`conv_mma`]).

use super::device::{Arg, GpuBuffer, GpuDevice, InitialContents};
use super::fused::unary_args;
use super::matmul::MatmulKernel;
use super::shapes::{BroadcastShape, ConvShape, MatmulShape, PadShape, ReduceShape, StridedShape, MAX_RANK};
use super::LaunchShape;
use crate::op::{BinaryOp, MatmulProblem, ReduceOp, UnaryOp};
use crate::storage::{CpuStorage, DType};
use crate::ConvGeometry;
use std::sync::Arc;

mod conv_mma;
mod counted;
mod optim;
mod random;

/// Thread blocks that conv2d's weight gradient aims for: two per SM of a 132-SM H100.
const WEIGHT_GRAD_BLOCKS: usize = 264;
/// The shortest slice of a split-K weight gradient, in sums per output.
const MIN_SLICE_LEN: usize = 256;
/// The most slices of a split-K weight gradient.
const MAX_SLICES: usize = 64;

/// Where a split-K weight gradient adds its slices' partial sums (the same additions, in the
/// same order, so the same bits either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SliceSum {
    /// The last block of each output tile to finish adds them: one launch.
    InLaunch,
    /// A launch of its own after the partial sums.
    SecondLaunch,
}

/// One tensor of a list stepped by [`GpuStorage::optimizer_step_list`]: the parameter, its
/// gradient and its optimiser state (none, one or two buffers, as the update needs).
pub struct GpuParamStep<'a> {
    pub param: &'a mut GpuStorage,
    pub grad: &'a GpuStorage,
    pub state: Vec<&'a mut GpuStorage>,
}

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
    pub(super) fn new_output(&self, dtype: DType, len: usize) -> GpuStorage {
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

    pub(super) fn ptr(&self) -> Arg {
        Arg::Ptr(self.device.address(&self.buffer))
    }

    pub(super) fn kernel(&self, family: &str) -> String {
        format!("{family}_{}", suffix(self.dtype()))
    }

    pub(super) fn check_same(&self, other: &GpuStorage, op: &str) {
        assert!(
            Arc::ptr_eq(&self.device, &other.device) && self.dtype() == other.dtype(),
            "{op}: operands must share dtype and device, got {} on {} and {} on {}",
            self.dtype(),
            self.device.device,
            other.dtype(),
            other.device.device
        );
    }

    /// The refusal of a shape past the kernels' [`MAX_RANK`] dims, kept as the device's failure
    /// (the ops have no error path; the next read returns the message), in one wording for
    /// every shape kind: the op, the rank, `what` (the shapes involved) and the device.
    fn fail_past_max_rank(&self, op: &str, rank: usize, what: std::fmt::Arguments) {
        self.device.record_failure(format!(
            "{op} on a GPU supports at most {MAX_RANK} dims; got {rank} ({what} on {})",
            self.device.device
        ));
    }

    /// `a_shape` and `b_shape` broadcast to `out_shape` for elementwise.cu's kernels, or, past
    /// their [`MAX_RANK`] dims, `None`: the device's failure and nothing to launch (the caller
    /// returns its output buffer unwritten).
    pub(super) fn broadcast_shape(
        &self,
        op: &str,
        a_shape: &[usize],
        b_shape: &[usize],
        out_shape: &[usize],
    ) -> Option<BroadcastShape> {
        if out_shape.contains(&0) {
            // Nothing to write, of any rank: no launch, and no failure.
            return None;
        }
        let s = BroadcastShape::new(a_shape, b_shape, out_shape);
        if s.is_none() {
            let what = format_args!("{a_shape:?} and {b_shape:?} broadcast to {out_shape:?}");
            self.fail_past_max_rank(op, out_shape.len(), what);
        }
        s
    }

    /// `shape` reduced to `out_shape` for reduce.cu's kernels, or, past their [`MAX_RANK`]
    /// dims, `None`: the device's failure and nothing to launch. Panics, as the CPU's
    /// `reduce_to`, on an `out_shape` that is not `shape` with some dims 1 (the callers'
    /// error, not their users').
    pub(super) fn reduce_shape(&self, op: &str, shape: &[usize], out_shape: &[usize]) -> Option<ReduceShape> {
        if out_shape.contains(&0) {
            // Nothing to write, of any rank: no launch, and no failure.
            return None;
        }
        if shape.len() > MAX_RANK {
            self.fail_past_max_rank(op, shape.len(), format_args!("{shape:?} reduced to {out_shape:?}"));
            return None;
        }
        let s = ReduceShape::new(shape, out_shape);
        Some(s.unwrap_or_else(|| panic!("{op}: {shape:?} cannot be reduced to {out_shape:?} (each dim equal or 1)")))
    }

    /// The strided view `(offset, strides, shape)` for layout.cu's kernels, or, past their
    /// [`MAX_RANK`] dims, `None`: the device's failure and nothing to launch. Panics on
    /// `strides` of another rank than `shape` (the callers' error, not their users').
    pub(super) fn strided_shape(
        &self,
        op: &str,
        offset: usize,
        strides: &[usize],
        shape: &[usize],
    ) -> Option<StridedShape> {
        if shape.contains(&0) {
            // Nothing to copy, of any rank: no launch, and no failure.
            return None;
        }
        if shape.len() > MAX_RANK {
            let what = format_args!("a view of shape {shape:?}, strides {strides:?}");
            self.fail_past_max_rank(op, shape.len(), what);
            return None;
        }
        let s = StridedShape::new(offset, strides, shape);
        Some(s.unwrap_or_else(|| panic!("{op}: strides {strides:?} for a view of shape {shape:?}")))
    }

    /// A box of shape `inner` at `before` inside `outer` for layout.cu's `padded_copy`, or,
    /// past its [`MAX_RANK`] dims, `Ok(None)`: the device's failure and nothing to launch. A
    /// box not inside `outer` is an error, of any rank.
    pub(super) fn pad_shape(
        &self,
        op: &str,
        inner: &[usize],
        before: &[usize],
        outer: &[usize],
    ) -> Result<Option<PadShape>, String> {
        if !PadShape::inside(inner, before, outer) {
            return Err(format!(
                "{op}: a box of shape {inner:?} at {before:?} is not inside {outer:?}"
            ));
        }
        if outer.len() > MAX_RANK && !outer.contains(&0) {
            let what = format_args!("a box of shape {inner:?} at {before:?} inside {outer:?}");
            self.fail_past_max_rank(op, outer.len(), what);
            return Ok(None);
        }
        Ok(PadShape::new(inner, before, outer))
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
    pub(super) fn launch(&self, kernel: &str, shape: LaunchShape, args: &mut [Arg]) {
        if let Err(e) = self.try_launch(kernel, shape, args) {
            self.device.record_failure(e);
        }
    }

    pub fn full(device: Arc<GpuDevice>, value: f64, len: usize, dtype: DType) -> Result<GpuStorage, String> {
        let out = GpuStorage {
            buffer: device.alloc(dtype, len, InitialContents::Unwritten)?,
            device,
        };
        if len == 0 {
            // Nothing to write: an empty buffer costs no launch (weight clipping passes an
            // empty gradient).
            return Ok(out);
        }
        let kernel = out.kernel("fill");
        out.try_launch(
            &kernel,
            LaunchShape::elementwise(len),
            &mut [out.ptr(), Arg::F64(value), Arg::I64(len as i64)],
        )?;
        Ok(out)
    }

    /// [`Self::full`] for the ops on a device already open (that of an existing tensor): a
    /// failed allocation or fill becomes the device's failure, read back as an error by the
    /// next read, and a lost buffer of the same size stands in, as for every op's output.
    pub fn full_or_fail(device: Arc<GpuDevice>, value: f64, len: usize, dtype: DType) -> GpuStorage {
        let out = GpuStorage {
            buffer: device.alloc_or_fail(dtype, len, InitialContents::Unwritten),
            device,
        };
        if len > 0 {
            let kernel = out.kernel("fill");
            out.launch(
                &kernel,
                LaunchShape::elementwise(len),
                &mut [out.ptr(), Arg::F64(value), Arg::I64(len as i64)],
            );
        }
        out
    }

    /// [`Self::unwritten`] as [`Self::full_or_fail`]: a failure becomes the device's.
    pub fn unwritten_or_fail(device: Arc<GpuDevice>, dtype: DType, len: usize) -> GpuStorage {
        let buffer = device.alloc_or_fail(dtype, len, InitialContents::Unwritten);
        GpuStorage { device, buffer }
    }

    /// A buffer of `len` elements that the caller's kernels will write whole: no fill.
    pub fn unwritten(device: Arc<GpuDevice>, dtype: DType, len: usize) -> Result<GpuStorage, String> {
        let buffer = device.alloc(dtype, len, InitialContents::Unwritten)?;
        Ok(GpuStorage { device, buffer })
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
        let Some(s) = self.broadcast_shape("binary op", shape, other_shape, out_shape) else {
            return out;
        };
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
        let out = self.new_output(self.dtype(), out_shape.iter().product());
        let (family, name) = match op {
            ReduceOp::Sum => ("reduce_sum", "sum"),
            ReduceOp::Max => ("reduce_max", "max"),
        };
        let Some(s) = self.reduce_shape(name, shape, out_shape) else {
            return out;
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
        let Some(s) = self.strided_shape("strided copy", offset, strides, shape) else {
            return out;
        };
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
        let Some(s) = self.strided_shape("strided write", offset, strides, shape) else {
            return;
        };
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

    /// A buffer for a convolution's output, the geometry in conv.cu's 32 bits, and whether
    /// there is anything to launch; a geometry too large for 32-bit indices becomes the
    /// device's failure (the op has no error path; the next read returns the message).
    fn conv_output(&self, g: &ConvGeometry, len: usize, extra: usize) -> (GpuStorage, Option<ConvShape>) {
        let out = self.new_output(self.dtype(), len);
        if out.is_empty() {
            return (out, None);
        }
        match ConvShape::new(g, extra) {
            Ok(shape) => (out, Some(shape)),
            Err(e) => {
                self.device.record_failure(e);
                (out, None)
            }
        }
    }

    /// A null pointer for a missing bias, which the kernels skip.
    fn bias_ptr(&self, bias: Option<&GpuStorage>, op: &str) -> Arg {
        match bias {
            Some(b) => {
                self.check_same(b, op);
                b.ptr()
            }
            None => Arg::Ptr(0),
        }
    }

    /// `activation(conv2d + bias)` with an optional bias `[O]` and activation, one launch
    /// (conv.cu's implicit GEMM, both in its epilogue): `self` `[N, C, H, W]`, `weight`
    /// `[O, C, kh, kw]`. 16-bit operands take conv_mma.cu's tensor-core kernel, whose epilogue
    /// does the same in f32 before its one rounding (as the CPU's 16-bit convolutions).
    pub fn conv2d_forward(
        &self,
        weight: &GpuStorage,
        bias: Option<&GpuStorage>,
        activation: Option<UnaryOp>,
        g: &ConvGeometry,
    ) -> GpuStorage {
        if self.dtype().is_half() {
            return self.conv2d_forward_mma(weight, bias, activation, g, self.dtype());
        }
        let pixels = g.batch * g.out_h * g.out_w;
        self.conv_pass(
            "conv2d_forward",
            "conv2d",
            pixels * g.out_channels,
            LaunchShape::conv(pixels, g.out_channels, 1),
            weight,
            bias,
            activation,
            g,
        )
    }

    /// `activation(conv2d^T + bias)`: the adjoint of conv2d in its input with an optional bias
    /// `[C]` and activation (conv_transpose2d's forward pass), one launch (conv.cu's gathering
    /// implicit GEMM): `self` `[N, O, Ho, Wo]`, `weight` `[O, C, kh, kw]`. 16-bit operands as
    /// [`Self::conv2d_forward`].
    pub fn conv2d_input_adjoint(
        &self,
        weight: &GpuStorage,
        bias: Option<&GpuStorage>,
        activation: Option<UnaryOp>,
        g: &ConvGeometry,
    ) -> GpuStorage {
        if self.dtype().is_half() {
            return self.conv2d_input_adjoint_mma(weight, bias, activation, g, self.dtype());
        }
        let (pixels, layers) = Self::input_adjoint_layers(g);
        self.conv_pass(
            "conv2d_input_adjoint",
            "conv_transpose2d",
            g.batch * g.in_channels * g.in_h * g.in_w,
            LaunchShape::conv(pixels, g.in_channels, layers),
            weight,
            bias,
            activation,
            g,
        )
    }

    /// The rows (input pixels over the batch) and grid layers of an input adjoint's launch
    /// (conv.cu's and conv_mma.cu's): with dilation 1, one layer per phase of the stride, each
    /// summing only the taps that reach its pixels (`kernels/conv_phase.cuh`), its rows as
    /// many as the largest phase's; else one layer of every pixel.
    pub(crate) fn input_adjoint_layers(g: &ConvGeometry) -> (usize, usize) {
        if g.dilation == (1, 1) {
            let (sh, sw) = g.stride;
            (g.batch * g.in_h.div_ceil(sh) * g.in_w.div_ceil(sw), sh * sw)
        } else {
            (g.batch * g.in_h * g.in_w, 1)
        }
    }

    /// conv.cu's forward pass or input adjoint (`family`), which differ only in their kernel,
    /// output length and grid: one launch (`grid`) with the bias and the activation in its
    /// epilogue (`op` names the op in messages).
    #[allow(clippy::too_many_arguments)]
    fn conv_pass(
        &self,
        family: &str,
        op: &str,
        out_len: usize,
        grid: LaunchShape,
        weight: &GpuStorage,
        bias: Option<&GpuStorage>,
        activation: Option<UnaryOp>,
        g: &ConvGeometry,
    ) -> GpuStorage {
        self.check_same(weight, op);
        let (out, shape) = self.conv_output(g, out_len, 0);
        if let Some(shape) = shape {
            let [code, p, q] = unary_args(activation);
            self.launch(
                &self.kernel(family),
                grid,
                &mut [
                    self.ptr(),
                    weight.ptr(),
                    self.bias_ptr(bias, op),
                    code,
                    p,
                    q,
                    out.ptr(),
                    Arg::Conv(shape),
                ],
            );
        }
        out
    }

    /// Slices of K that conv2d's weight gradient is split into: enough 64 x 64 tiles times
    /// slices to fill a large GPU (`WEIGHT_GRAD_BLOCKS`), none shorter than
    /// `MIN_SLICE_LEN`. A function of the geometry alone, so the sums' order, and with it
    /// every bit of the result, is the same on every device.
    pub fn weight_grad_slices(g: &ConvGeometry) -> usize {
        let tiles = g.out_channels.div_ceil(64).max(1) * g.patch_len().div_ceil(64).max(1);
        let k = g.batch * g.out_h * g.out_w;
        WEIGHT_GRAD_BLOCKS
            .div_ceil(tiles)
            .min(k.div_ceil(MIN_SLICE_LEN))
            .clamp(1, MAX_SLICES)
    }

    /// conv2d's weight gradient `[O, C, kh, kw]`: `self` `[N, C, H, W]`, `grad_out`
    /// `[N, O, Ho, Wo]`; split-K over [`Self::weight_grad_slices`].
    pub fn conv2d_weight_grad(&self, grad_out: &GpuStorage, g: &ConvGeometry) -> GpuStorage {
        self.conv2d_weight_grad_in_slices(grad_out, g, Self::weight_grad_slices(g), SliceSum::InLaunch)
    }

    /// [`Self::conv2d_weight_grad`] with K in `slices` slices (at least 1) added as `sum` says
    /// (tests choose both): one launch of partial sums per slice, whose last block of each
    /// tile adds the tile's slices in slice order ([`GpuDevice::tile_counters`]), or a second
    /// launch that adds them (also for a launch of more tiles than the device counts). 16-bit
    /// operands take conv_mma.cu's split-K kernel and its slice sum (`sum` is f32's).
    pub fn conv2d_weight_grad_in_slices(
        &self,
        grad_out: &GpuStorage,
        g: &ConvGeometry,
        slices: usize,
        sum: SliceSum,
    ) -> GpuStorage {
        if self.dtype().is_half() {
            return self.conv2d_weight_grad_mma(grad_out, g, slices, self.dtype());
        }
        self.check_same(grad_out, "conv2d_weight_grad");
        let len = g.out_channels * g.patch_len();
        let k = g.batch * g.out_h * g.out_w;
        if k == 0 {
            // An empty batch (or map) has no sums: its gradient is zeros.
            return self.new_zeros(self.dtype(), len);
        }
        // Slices of a whole number of conv.cu's K steps (16), none of them empty.
        let slice_len = k.div_ceil(slices.max(1)).next_multiple_of(16);
        let slices = k.div_ceil(slice_len);
        let partial_len = if slices > 1 { slices * len } else { 0 };
        let (out, shape) = self.conv_output(g, len, partial_len);
        let Some(shape) = shape else { return out };
        // One slice writes the result itself; the partial sums live until the launches are queued.
        let partial = (slices > 1).then(|| self.new_output(self.dtype(), partial_len));
        let launch_shape = LaunchShape::conv(g.out_channels, g.patch_len(), slices);
        let (tiles_x, tiles_y, _) = launch_shape.grid;
        let counters = match sum {
            SliceSum::InLaunch => self.device.tile_counters(tiles_x as usize * tiles_y as usize),
            SliceSum::SecondLaunch => None,
        };
        self.launch(
            &self.kernel("conv2d_weight_grad"),
            launch_shape,
            &mut [
                self.ptr(),
                grad_out.ptr(),
                partial.as_ref().unwrap_or(&out).ptr(),
                out.ptr(),
                Arg::Ptr(counters.unwrap_or(0)),
                Arg::Conv(shape),
                Arg::I32(slice_len as i32),
            ],
        );
        if let (Some(partial), None) = (&partial, counters) {
            self.launch(
                &self.kernel("conv2d_weight_grad_sum_slices"),
                LaunchShape::elementwise(len),
                &mut [partial.ptr(), out.ptr(), Arg::I32(len as i32), Arg::I32(slices as i32)],
            );
        }
        out
    }
}
