//! Convolutions of bf16 and f16 operands on a CUDA device: conv_mma.cu's implicit GEMMs on the
//! tensor cores (16-bit inputs, f32 sums, the output written once in f32 or rounded to the
//! inputs' type), which [`GpuStorage::conv2d_forward`], [`GpuStorage::conv2d_input_adjoint`]
//! and [`GpuStorage::conv2d_weight_grad`] launch for 16-bit operands. On a GPU older than the
//! tensor cores (sm_80) the same entry points run conv.cu's f32 kernels between casts.

use super::{suffix, GpuStorage, SliceSum};
use crate::cuda::device::Arg;
use crate::cuda::fused::unary_args;
use crate::cuda::shapes::ConvShape;
use crate::cuda::LaunchShape;
use crate::storage::DType;
use crate::{ConvGeometry, UnaryOp};

/// conv_mma.cu's K slice: a split weight gradient's slices are whole multiples of it.
const MMA_SLICE: usize = 32;

impl GpuStorage {
    /// `activation(conv2d + bias)` of 16-bit operands with an optional bias `[O]` (all of one
    /// 16-bit dtype) and activation, one launch of conv_mma.cu's `conv2d_forward_mma`: `self`
    /// `[N, C, H, W]`, `weight` `[O, C, kh, kw]`, the bias and the activation applied to the f32
    /// sums, the output in `out`: f32, or the operands' dtype (rounded once). Another
    /// `out`, or operands that are not 16-bit, become the device's failure (read back by its next
    /// read), as a geometry past the kernels' 32-bit indices does.
    pub fn conv2d_forward_mma(
        &self,
        weight: &GpuStorage,
        bias: Option<&GpuStorage>,
        activation: Option<UnaryOp>,
        g: &ConvGeometry,
        out: DType,
    ) -> GpuStorage {
        let pass = MmaPass {
            family: "conv2d_forward",
            op: "conv2d",
            pixels: g.batch * g.out_h * g.out_w,
            channels: g.out_channels,
            grid: (g.batch * g.out_h * g.out_w, 1),
        };
        self.conv_pass_mma(pass, weight, bias, activation, g, out, |x, w, b| {
            x.conv2d_forward(w, b, activation, g)
        })
    }

    /// `activation(conv2d^T + bias)`: the adjoint of conv2d in its input (conv_transpose2d's
    /// forward pass) of 16-bit operands with an optional bias `[C]` and activation, one launch of
    /// conv_mma.cu's `conv2d_input_adjoint_mma`:
    /// `self` `[N, O, Ho, Wo]`, `weight` `[O, C, kh, kw]`, the output in `out` as
    /// [`Self::conv2d_forward_mma`].
    pub fn conv2d_input_adjoint_mma(
        &self,
        weight: &GpuStorage,
        bias: Option<&GpuStorage>,
        activation: Option<UnaryOp>,
        g: &ConvGeometry,
        out: DType,
    ) -> GpuStorage {
        let (grid_pixels, layers) = GpuStorage::input_adjoint_layers(g);
        let pass = MmaPass {
            family: "conv2d_input_adjoint",
            op: "conv_transpose2d",
            pixels: g.batch * g.in_h * g.in_w,
            channels: g.in_channels,
            grid: (grid_pixels, layers),
        };
        self.conv_pass_mma(pass, weight, bias, activation, g, out, |y, w, b| {
            y.conv2d_input_adjoint(w, b, activation, g)
        })
    }

    /// The forward pass or the adjoint (`pass`), which differ only in their kernel and output
    /// shape: one launch, or `f32_kernel` (which applies `activation` too) between casts on a
    /// GPU without tensor cores.
    #[allow(clippy::too_many_arguments)]
    fn conv_pass_mma(
        &self,
        pass: MmaPass,
        weight: &GpuStorage,
        bias: Option<&GpuStorage>,
        activation: Option<UnaryOp>,
        g: &ConvGeometry,
        out: DType,
        f32_kernel: impl FnOnce(&GpuStorage, &GpuStorage, Option<&GpuStorage>) -> GpuStorage,
    ) -> GpuStorage {
        self.check_same(weight, pass.op);
        let kernel = format!("{}_mma", pass.family);
        let len = pass.pixels * pass.channels;
        if !self.device.has_tensor_cores() {
            return self.through_f32(&kernel, out, len, |wide| {
                let bias = bias.map(|b| b.cast(DType::F32));
                f32_kernel(wide, &weight.cast(DType::F32), bias.as_ref())
            });
        }
        let (result, shape) = self.mma_output(&kernel, out, len, g, 0);
        if let Some(shape) = shape {
            let [code, p, q] = unary_args(activation);
            self.launch(
                &mma_kernel(pass.family, self.dtype(), out),
                LaunchShape::conv_tensor_cores(pass.grid.0, pass.channels, pass.grid.1),
                &mut [
                    self.ptr(),
                    weight.ptr(),
                    self.bias_ptr(bias, pass.op),
                    code,
                    p,
                    q,
                    result.ptr(),
                    Arg::Conv(shape),
                ],
            );
        }
        result
    }

    /// conv2d's weight gradient `[O, C, kh, kw]` of 16-bit operands, in `out` (as
    /// [`Self::conv2d_forward_mma`]): `self` `[N, C, H, W]`, `grad_out` `[N, O, Ho, Wo]`; K split
    /// into `slices` slices (at least 1; [`Self::weight_grad_slices`] is the usual choice): one
    /// launch of f32 partial sums per slice, then one that adds them in slice order and rounds
    /// once (none when there is one slice: it writes the result). The same bits on every run.
    pub fn conv2d_weight_grad_mma(
        &self,
        grad_out: &GpuStorage,
        g: &ConvGeometry,
        slices: usize,
        out: DType,
    ) -> GpuStorage {
        self.check_same(grad_out, "conv2d_weight_grad");
        let len = g.out_channels * g.patch_len();
        if !self.device.has_tensor_cores() {
            return self.through_f32("conv2d_weight_grad_mma", out, len, |x| {
                x.conv2d_weight_grad_in_slices(&grad_out.cast(DType::F32), g, slices, SliceSum::InLaunch)
            });
        }
        let k = g.batch * g.out_h * g.out_w;
        if k == 0 {
            // An empty batch (or map) has no sums: its gradient is zeros.
            return self.new_zeros(out, len);
        }
        let slice_len = k.div_ceil(slices.max(1)).next_multiple_of(MMA_SLICE);
        let slices = k.div_ceil(slice_len);
        let partial_len = if slices > 1 { slices * len } else { 0 };
        let (result, shape) = self.mma_output("conv2d_weight_grad_mma", out, len, g, partial_len);
        let Some(shape) = shape else { return result };
        // One slice writes the result itself; the partial sums live until both launches are queued.
        let partial = (slices > 1).then(|| self.new_output(DType::F32, partial_len));
        let slices_out = if slices > 1 { DType::F32 } else { out };
        self.launch(
            &mma_kernel("conv2d_weight_grad", self.dtype(), slices_out),
            LaunchShape::conv_tensor_cores(g.out_channels, g.patch_len(), slices),
            &mut [
                self.ptr(),
                grad_out.ptr(),
                partial.as_ref().unwrap_or(&result).ptr(),
                Arg::Conv(shape),
                Arg::I32(slice_len as i32),
            ],
        );
        if let Some(partial) = &partial {
            // conv.cu's f32 sum, or conv_mma.cu's with the same order and one rounding.
            let sum = match out {
                DType::F32 => "conv2d_weight_grad_sum_slices_f32".to_string(),
                half => format!("conv2d_weight_grad_mma_sum_slices_{}", suffix(half)),
            };
            self.launch(
                &sum,
                LaunchShape::elementwise(len),
                &mut [
                    partial.ptr(),
                    result.ptr(),
                    Arg::I32(len as i32),
                    Arg::I32(slices as i32),
                ],
            );
        }
        result
    }

    /// The output buffer of a conv_mma.cu kernel (`out` for the result, f32 or the operands'
    /// dtype), the geometry in 32 bits (with `extra` elements of split-K partial sums), and
    /// whether there is anything to launch: an output dtype or an operand dtype the kernels do
    /// not have, or a geometry past their 32-bit indices, becomes the device's failure.
    fn mma_output(
        &self,
        kernel: &str,
        out: DType,
        len: usize,
        g: &ConvGeometry,
        extra: usize,
    ) -> (GpuStorage, Option<ConvShape>) {
        let result = self.new_output(out, len);
        if !self.mma_dtypes_ok(kernel, out) || result.is_empty() {
            return (result, None);
        }
        match ConvShape::new(g, extra) {
            Ok(shape) => (result, Some(shape)),
            Err(e) => {
                self.device.record_failure(e);
                (result, None)
            }
        }
    }

    /// Whether conv_mma.cu has `kernel` for these operands and `out` (bf16 or f16 operands, an
    /// f32 output or one of theirs); if not, that becomes the device's failure.
    fn mma_dtypes_ok(&self, kernel: &str, out: DType) -> bool {
        let ok = self.dtype().is_half() && (out == DType::F32 || out == self.dtype());
        if !ok {
            self.device.record_failure(format!(
                "{kernel}: needs bf16 or f16 operands and an output in f32 or in their dtype, got {} \
                 operands and a {out} output",
                self.dtype()
            ));
        }
        ok
    }

    /// `f(self in f32)` in `out`: `kernel`'s convolution on a GPU without tensor cores.
    fn through_f32(
        &self,
        kernel: &str,
        out: DType,
        len: usize,
        f: impl FnOnce(&GpuStorage) -> GpuStorage,
    ) -> GpuStorage {
        if !self.mma_dtypes_ok(kernel, out) {
            return self.new_output(out, len);
        }
        let wide = f(&self.cast(DType::F32));
        if out == DType::F32 {
            wide
        } else {
            wide.cast(out)
        }
    }
}

/// What tells a forward pass from an adjoint for [`GpuStorage::conv_pass_mma`].
struct MmaPass {
    /// The kernel family (conv_mma.cu's names: `<family>_mma_<dtype>`).
    family: &'static str,
    /// The op's name in messages.
    op: &'static str,
    /// The output's pixels (over the batch) and channels: the GEMM's rows and columns.
    pixels: usize,
    channels: usize,
    /// The launch's rows and grid layers: `(pixels, 1)`, or the input adjoint's phases
    /// ([`GpuStorage::input_adjoint_layers`]).
    grid: (usize, usize),
}

/// `<family>_mma_<bf16|f16>`, with `_f32` for an f32 output.
fn mma_kernel(family: &str, inputs: DType, out: DType) -> String {
    let output = if out == DType::F32 { "_f32" } else { "" };
    format!("{family}_mma_{}{output}", suffix(inputs))
}
