//! [`Storage`]: a buffer on one device, and the one place where operations are dispatched to a
//! device's kernels. The tensor crate only ever talks to `Storage`, so adding a device means
//! adding a variant here and its arms below.

use crate::cpu::random;
pub use crate::cpu::storage::CpuStorage;
use crate::cpu::{conv, elementwise, layout, matmul, reduce};
use crate::cuda::device::GpuDevice;
use crate::cuda::storage::GpuStorage;
use crate::op::{BinaryOp, Distribution, Epilogue, MatmulProblem, ReduceOp, UnaryOp};
use crate::ConvGeometry;
use std::fmt;

/// Where a tensor's data lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    Cpu,
    /// A CUDA GPU by ordinal: the kernels of `kernels/*.cu`, compiled by NVRTC at first use.
    Cuda(usize),
    /// The same kernels run on the CPU by our model of CUDA (feature `emulator`): slow, for
    /// testing the GPU code paths on machines without a GPU.
    CudaEmulator,
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
            Device::CudaEmulator => write!(f, "cuda-emulator"),
        }
    }
}

/// The element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F64,
    /// bfloat16 ([`half::bf16`]): f32's range with 8 bits of precision.
    BF16,
    /// IEEE half precision ([`half::f16`]): 11 bits of precision, largest finite 65,504.
    F16,
}

impl DType {
    /// Every dtype.
    pub const ALL: [DType; 4] = [DType::F32, DType::F64, DType::BF16, DType::F16];

    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 => 8,
            DType::BF16 | DType::F16 => 2,
        }
    }

    /// Whether this is a 16-bit float, whose ops compute in f32 ([`Storage`]'s half rule).
    pub fn is_half(self) -> bool {
        matches!(self, DType::BF16 | DType::F16)
    }

    /// The name PyTorch and this crate print (`f32`, `f64`, `bf16`, `f16`).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::BF16 => "bf16",
            DType::F16 => "f16",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A dtype by name (`f32`, `float32`, `bf16`, `bfloat16`, `f16`, `float16`, `half`, `f64`,
/// `float64`), as flags and files spell it.
impl std::str::FromStr for DType {
    type Err = String;

    fn from_str(name: &str) -> Result<DType, String> {
        match name.trim().to_ascii_lowercase().as_str() {
            "f32" | "float32" | "float" => Ok(DType::F32),
            "f64" | "float64" | "double" => Ok(DType::F64),
            "bf16" | "bfloat16" => Ok(DType::BF16),
            "f16" | "float16" | "half" => Ok(DType::F16),
            _ => Err(format!("unknown dtype `{name}`: expected f32, f64, bf16 or f16")),
        }
    }
}

/// A buffer on one device. Contiguous, row-major; the shape lives with the tensor.
#[derive(Debug)]
pub enum Storage {
    Cpu(CpuStorage),
    /// On a GPU or the emulator ([`Device::Cuda`], [`Device::CudaEmulator`]).
    Cuda(GpuStorage),
}

impl Clone for Storage {
    fn clone(&self) -> Self {
        match self {
            Storage::Cpu(c) => Storage::Cpu(c.clone()),
            Storage::Cuda(g) => Storage::Cuda(g.duplicate()),
        }
    }
}

/// Equal when on the same device with the same dtype and values (GPU buffers are compared on
/// the host).
impl PartialEq for Storage {
    fn eq(&self, other: &Self) -> bool {
        self.device() == other.device() && self.dtype() == other.dtype() && self.host() == other.host()
    }
}

/// Run `$body` with `$v` bound to the buffer of `$s`, whatever its dtype, and wrap a `Vec`
/// result back into a storage of the same dtype. The CPU dispatches (these macros and the few
/// ops that match by hand) first bring the calling thread's denormal mode up to date
/// ([`crate::cpu::denormals`]).
macro_rules! map_storage {
    ($s:expr, |$v:ident| $body:expr) => {{
        crate::cpu::denormals::sync_this_thread();
        match $s {
            Storage::Cpu(CpuStorage::F32($v)) => Storage::Cpu(CpuStorage::F32($body)),
            Storage::Cpu(CpuStorage::F64($v)) => Storage::Cpu(CpuStorage::F64($body)),
            Storage::Cpu(CpuStorage::BF16(_) | CpuStorage::F16(_)) => {
                unreachable!("16-bit floats are widened before map_storage!")
            }
            Storage::Cuda(_) => unreachable!("GPU storage is dispatched before map_storage!"),
        }
    }};
}

/// Like `map_storage!` for two operands, which must share dtype and device.
macro_rules! map_storage2 {
    ($op:expr, $a:expr, $b:expr, |$x:ident, $y:ident| $body:expr) => {{
        crate::cpu::denormals::sync_this_thread();
        match ($a, $b) {
            (Storage::Cpu(CpuStorage::F32($x)), Storage::Cpu(CpuStorage::F32($y))) => {
                Storage::Cpu(CpuStorage::F32($body))
            }
            (Storage::Cpu(CpuStorage::F64($x)), Storage::Cpu(CpuStorage::F64($y))) => {
                Storage::Cpu(CpuStorage::F64($body))
            }
            (a, b) => panic!(
                "{}: operands must share dtype and device, got {} on {} and {} on {}",
                $op,
                a.dtype(),
                a.device(),
                b.dtype(),
                b.device()
            ),
        }
    }};
}

/// Like `map_storage2!` with an optional third operand of the same dtype and device (a bias),
/// bound to `$z` as `Option<&[T]>`.
macro_rules! map_storage2_bias {
    ($op:expr, $a:expr, $b:expr, $bias:expr, |$x:ident, $y:ident, $z:ident| $body:expr) => {{
        crate::cpu::denormals::sync_this_thread();
        match ($a, $b, $bias) {
            (Storage::Cpu(CpuStorage::F32($x)), Storage::Cpu(CpuStorage::F32($y)), None) => {
                let $z: Option<&[f32]> = None;
                Storage::Cpu(CpuStorage::F32($body))
            }
            (
                Storage::Cpu(CpuStorage::F32($x)),
                Storage::Cpu(CpuStorage::F32($y)),
                Some(Storage::Cpu(CpuStorage::F32(bias))),
            ) => {
                let $z = Some(&bias[..]);
                Storage::Cpu(CpuStorage::F32($body))
            }
            (Storage::Cpu(CpuStorage::F64($x)), Storage::Cpu(CpuStorage::F64($y)), None) => {
                let $z: Option<&[f64]> = None;
                Storage::Cpu(CpuStorage::F64($body))
            }
            (
                Storage::Cpu(CpuStorage::F64($x)),
                Storage::Cpu(CpuStorage::F64($y)),
                Some(Storage::Cpu(CpuStorage::F64(bias))),
            ) => {
                let $z = Some(&bias[..]);
                Storage::Cpu(CpuStorage::F64($body))
            }
            (a, b, bias) => panic!(
                "{}: operands must share dtype and device, got {} on {}, {} on {}{}",
                $op,
                a.dtype(),
                a.device(),
                b.dtype(),
                b.device(),
                bias.map_or(String::new(), |c| format!(
                    " and a bias of {} on {}",
                    c.dtype(),
                    c.device()
                ))
            ),
        }
    }};
}

impl Storage {
    pub fn from_f32(v: Vec<f32>) -> Self {
        Storage::Cpu(CpuStorage::F32(v))
    }
    pub fn from_f64(v: Vec<f64>) -> Self {
        Storage::Cpu(CpuStorage::F64(v))
    }

    /// `len` copies of `value` in `dtype` on `device`.
    pub fn full(value: f64, len: usize, dtype: DType, device: Device) -> Result<Self, String> {
        if dtype.is_half() {
            return Ok(Storage::full(value, len, DType::F32, device)?.cast(dtype));
        }
        match device {
            Device::Cpu => Ok(match dtype {
                DType::F32 => Storage::from_f32(vec![value as f32; len]),
                _ => Storage::from_f64(vec![value; len]),
            }),
            gpu => Ok(Storage::Cuda(GpuStorage::full(
                GpuDevice::get(gpu)?,
                value,
                len,
                dtype,
            )?)),
        }
    }

    /// [`Self::full`] on a device that holds a tensor already (the device of an op's inputs),
    /// where a failure is the device's, not the caller's: on a GPU a failed allocation or fill
    /// is recorded and read back as an error by the next read (a lost buffer stands in), as
    /// for every op's output; never a panic.
    pub fn full_or_fail(value: f64, len: usize, dtype: DType, device: Device) -> Self {
        if dtype.is_half() {
            return Storage::full_or_fail(value, len, DType::F32, device).cast(dtype);
        }
        match device {
            Device::Cpu => Storage::full(value, len, dtype, device).expect("the CPU is always available"),
            gpu => Storage::Cuda(GpuStorage::full_or_fail(open_device(gpu), value, len, dtype)),
        }
    }

    /// [`Self::for_overwrite`] as [`Self::full_or_fail`]: a failure is the device's.
    pub fn for_overwrite_or_fail(len: usize, dtype: DType, device: Device) -> Self {
        match device {
            Device::Cpu => Storage::full_or_fail(0.0, len, dtype, device),
            gpu => Storage::Cuda(GpuStorage::unwritten_or_fail(open_device(gpu), dtype, len)),
        }
    }

    /// `len` elements for the caller to overwrite whole: zeros on the CPU, unfilled elsewhere.
    pub fn for_overwrite(len: usize, dtype: DType, device: Device) -> Result<Self, String> {
        match device {
            Device::Cpu => Storage::full(0.0, len, dtype, device),
            gpu => Ok(Storage::Cuda(GpuStorage::unwritten(GpuDevice::get(gpu)?, dtype, len)?)),
        }
    }

    /// `len` numbers from `distribution`, drawn on `device` by the counter-based generator keyed
    /// by `seed` and `stream`: the same numbers (to the last bit in f64) on every device.
    pub fn random(
        distribution: Distribution,
        len: usize,
        seed: u64,
        stream: u64,
        dtype: DType,
        device: Device,
    ) -> Result<Self, String> {
        if dtype.is_half() {
            return Ok(Storage::random(distribution, len, seed, stream, DType::F32, device)?.cast(dtype));
        }
        macro_rules! draw {
            ($t:ty) => {
                match distribution {
                    Distribution::Uniform { low, high } => random::uniform::<$t>(len, seed, stream, low, high),
                    Distribution::Normal { mean, std } => random::normal::<$t>(len, seed, stream, mean, std),
                }
            };
        }
        Ok(match device {
            Device::Cpu => match dtype {
                DType::F32 => Storage::from_f32(draw!(f32)),
                _ => Storage::from_f64(draw!(f64)),
            },
            gpu => Storage::Cuda(GpuStorage::random(
                GpuDevice::get(gpu)?,
                distribution,
                len,
                seed,
                stream,
                dtype,
            )?),
        })
    }

    /// `rows` rows of this buffer, seen as rows of `row_len` values, in the shuffled order of
    /// `cpu::gather` (`gather_shuffled_rows` of `random.cu` on a GPU): row `r` of the result is
    /// row `shuffled_row(position + r)` of the epochs keyed by `seed`. A batch of a dataset
    /// that stays on its device.
    pub fn gather_shuffled_rows(
        &self,
        row_len: usize,
        rows: usize,
        position: u64,
        seed: u64,
    ) -> Result<Storage, String> {
        self.check_whole_rows(row_len, "gather_shuffled_rows")?;
        if let Some(half) = Storage::all_half(&[self]) {
            return Ok(self
                .widened()
                .gather_shuffled_rows(row_len, rows, position, seed)?
                .cast(half));
        }
        if let Storage::Cuda(g) = self {
            return g.gather_shuffled_rows(row_len, rows, position, seed).map(Storage::Cuda);
        }
        Ok(map_storage!(self, |v| crate::cpu::gather::gather_shuffled_rows(
            v, row_len, rows, position, seed
        )))
    }

    /// An error, naming `op`, unless this buffer is a whole number (at least one) of rows of
    /// `row_len` values.
    pub(crate) fn check_whole_rows(&self, row_len: usize, op: &str) -> Result<(), String> {
        if row_len == 0 || self.is_empty() || !self.len().is_multiple_of(row_len) {
            return Err(format!(
                "{op}: {} values are no whole number of rows of {row_len}",
                self.len()
            ));
        }
        Ok(())
    }

    /// The host buffer: this storage's own, or a download of a GPU buffer, or the device's
    /// error (a download waits for every kernel queued before it, so it is where a kernel's
    /// fault shows).
    fn try_host(&self) -> Result<std::borrow::Cow<'_, CpuStorage>, String> {
        Ok(match self {
            Storage::Cpu(c) => std::borrow::Cow::Borrowed(c),
            Storage::Cuda(g) => std::borrow::Cow::Owned(g.download()?),
        })
    }

    /// [`Self::try_host`] for the callers without an error path: a device error stops there.
    fn host(&self) -> std::borrow::Cow<'_, CpuStorage> {
        self.try_host().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Host values converted to `dtype`, on `device`.
    pub fn from_f64_slice(values: &[f64], dtype: DType, device: Device) -> Result<Self, String> {
        let cpu = match dtype {
            DType::F64 => CpuStorage::F64(values.to_vec()),
            DType::F32 => CpuStorage::F32(values.iter().map(|&v| v as f32).collect()),
            // Through f32, as every cast from f64 to 16 bits goes.
            half => CpuStorage::F32(values.iter().map(|&v| v as f32).collect()).cast(half),
        };
        Storage::Cpu(cpu).to_device(device)
    }

    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(CpuStorage::F32(_)) => DType::F32,
            Storage::Cpu(CpuStorage::F64(_)) => DType::F64,
            Storage::Cpu(CpuStorage::BF16(_)) => DType::BF16,
            Storage::Cpu(CpuStorage::F16(_)) => DType::F16,
            Storage::Cuda(g) => g.dtype(),
        }
    }

    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Cuda(g) => g.device.device,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Storage::Cpu(CpuStorage::F32(v)) => v.len(),
            Storage::Cpu(CpuStorage::F64(v)) => v.len(),
            Storage::Cpu(CpuStorage::BF16(v)) => v.len(),
            Storage::Cpu(CpuStorage::F16(v)) => v.len(),
            Storage::Cuda(g) => g.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where this buffer's memory is (a host address, or a device address on a GPU): the
    /// identity of the memory kernels write, which a CUDA graph captured with it keeps
    /// addressing. 0 for a buffer without memory (a failed device's).
    pub fn buffer_address(&self) -> usize {
        match self {
            Storage::Cpu(CpuStorage::F32(v)) => v.as_ptr() as usize,
            Storage::Cpu(CpuStorage::F64(v)) => v.as_ptr() as usize,
            Storage::Cpu(CpuStorage::BF16(v)) => v.as_ptr() as usize,
            Storage::Cpu(CpuStorage::F16(v)) => v.as_ptr() as usize,
            Storage::Cuda(g) => g.device.address(&g.buffer) as usize,
        }
    }

    pub fn size_in_bytes(&self) -> usize {
        self.len() * self.dtype().size_in_bytes()
    }

    /// Copy to `device` (a clone when it is already there), or why that device cannot be had.
    pub fn to_device(&self, device: Device) -> Result<Self, String> {
        if device == self.device() {
            return Ok(self.clone());
        }
        match device {
            Device::Cpu => Ok(Storage::Cpu(self.try_host()?.into_owned())),
            gpu => Ok(Storage::Cuda(GpuStorage::upload(
                GpuDevice::get(gpu)?,
                &*self.try_host()?,
            )?)),
        }
    }

    /// The values as f64 on the host (panics on a device error: [`Self::try_to_f64_vec`]).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        self.try_to_f64_vec().unwrap_or_else(|e| panic!("{e}"))
    }

    /// The values as f64 on the host, or the device's error: where a program reads its results
    /// (a training step's losses), so that a GPU's fault reaches it as a message to report.
    pub fn try_to_f64_vec(&self) -> Result<Vec<f64>, String> {
        Ok(self.try_host()?.to_f64())
    }

    /// The values as f32 on the host.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        self.host().to_f32()
    }

    /// These values in `dtype` on the same device, rounded to nearest-even where it is narrower
    /// (f64 to bf16 or f16 through f32, as PyTorch converts).
    pub fn cast(&self, dtype: DType) -> Storage {
        match (self, dtype) {
            (s, d) if s.dtype() == d => s.clone(),
            (Storage::Cuda(g), d) => Storage::Cuda(g.cast(d)),
            (Storage::Cpu(c), d) => Storage::Cpu(c.cast(d)),
        }
    }

    // ------------------------------------------------------------------------------- ops
    //
    // The half rule: an op on bf16 or f16 operands computes in f32 and rounds once on the way
    // out. Each op below widens its 16-bit operands to f32 here, on their device, runs the f32
    // kernel and narrows the result, so every device has every op in every dtype: reductions
    // accumulate in f32, matmuls and convolutions multiply and add in f32. Native 16-bit
    // kernels replace the widening where they pay: on a CUDA device, the elementwise ops,
    // reductions, layout copies, matmuls and convolutions (tensor cores) run in 16 bits with f32
    // math (`half_to_widen`); on the CPU, the 16-bit convolutions (`cpu_slices`: AMX or the bf16
    // tile, the f16 tile).

    /// Whether every operand is of the same 16-bit dtype: the ops' cue for the half rule.
    pub(crate) fn all_half(operands: &[&Storage]) -> Option<DType> {
        let dtype = operands[0].dtype();
        (dtype.is_half() && operands.iter().all(|s| s.dtype() == dtype)).then_some(dtype)
    }

    /// The operands of a convolution as slices of one 16-bit type when all are of it on the
    /// CPU (`as_half` picks the type: [`CpuStorage::as_bf16`], [`CpuStorage::as_f16`]): the cue
    /// for the 16-bit convolution kernels (`cpu::conv::bf16`), which replace the half rule's
    /// widening there.
    #[allow(clippy::type_complexity)]
    fn cpu_slices<'a, T>(
        a: &'a Storage,
        b: &'a Storage,
        bias: Option<&'a Storage>,
        as_half: impl Fn(&'a CpuStorage) -> Option<&'a [T]>,
    ) -> Option<(&'a [T], &'a [T], Option<&'a [T]>)> {
        let half = |s: &'a Storage| match s {
            Storage::Cpu(c) => as_half(c),
            Storage::Cuda(_) => None,
        };
        let bias = match bias {
            None => None,
            Some(b) => Some(half(b)?),
        };
        Some((half(a)?, half(b)?, bias))
    }

    pub(crate) fn widened(&self) -> Storage {
        self.cast(DType::F32)
    }

    /// [`Self::all_half`] for the ops that a CUDA device runs in 16 bits itself (elementwise,
    /// reductions, layout, matmul, convolutions: f32 math in the kernel, one rounding, so the
    /// same rule): only CPU operands are widened here.
    fn half_to_widen(operands: &[&Storage]) -> Option<DType> {
        Storage::all_half(operands).filter(|_| operands.iter().all(|s| matches!(s, Storage::Cpu(_))))
    }

    pub fn unary(&self, op: UnaryOp) -> Storage {
        // 16-bit on the CPU: the half rule a block at a time (the widened op's bits).
        match self {
            Storage::Cpu(CpuStorage::BF16(x)) => {
                crate::cpu::denormals::sync_this_thread();
                return Storage::Cpu(CpuStorage::BF16(elementwise::unary_half(op, x)));
            }
            Storage::Cpu(CpuStorage::F16(x)) => {
                crate::cpu::denormals::sync_this_thread();
                return Storage::Cpu(CpuStorage::F16(elementwise::unary_half(op, x)));
            }
            _ => {}
        }
        if let Storage::Cuda(g) = self {
            return Storage::Cuda(g.unary(op));
        }
        map_storage!(self, |v| elementwise::unary(op, v))
    }

    pub fn binary(
        &self,
        op: BinaryOp,
        shape: &[usize],
        other: &Storage,
        other_shape: &[usize],
        out_shape: &[usize],
    ) -> Storage {
        // 16-bit operands of one shape on the CPU: the half rule a block at a time (the widened
        // op's bits); broadcasts widen the operands whole.
        if shape == other_shape && shape == out_shape {
            crate::cpu::denormals::sync_this_thread();
            match (self, other) {
                (Storage::Cpu(CpuStorage::BF16(a)), Storage::Cpu(CpuStorage::BF16(b))) => {
                    return Storage::Cpu(CpuStorage::BF16(elementwise::binary_half(op, a, b)));
                }
                (Storage::Cpu(CpuStorage::F16(a)), Storage::Cpu(CpuStorage::F16(b))) => {
                    return Storage::Cpu(CpuStorage::F16(elementwise::binary_half(op, a, b)));
                }
                _ => {}
            }
        }
        if let Some(half) = Storage::half_to_widen(&[self, other]) {
            return self
                .widened()
                .binary(op, shape, &other.widened(), other_shape, out_shape)
                .cast(half);
        }
        if let (Storage::Cuda(a), Storage::Cuda(b)) = (self, other) {
            return Storage::Cuda(a.binary(op, shape, b, other_shape, out_shape));
        }
        map_storage2!("binary op", self, other, |a, b| elementwise::binary(
            op,
            a,
            shape,
            b,
            other_shape,
            out_shape
        ))
    }

    /// `if self != 0 { a } else { b }`, elementwise, all of one shape.
    pub fn where_cond(&self, a: &Storage, b: &Storage) -> Storage {
        if let Some(half) = Storage::half_to_widen(&[self, a, b]) {
            return self.widened().where_cond(&a.widened(), &b.widened()).cast(half);
        }
        crate::cpu::denormals::sync_this_thread();
        match (self, a, b) {
            (Storage::Cuda(c), Storage::Cuda(a), Storage::Cuda(b)) => Storage::Cuda(c.where_cond(a, b)),
            (Storage::Cpu(CpuStorage::F32(c)), Storage::Cpu(CpuStorage::F32(a)), Storage::Cpu(CpuStorage::F32(b))) => {
                Storage::from_f32(elementwise::where_cond(c, a, b))
            }
            (Storage::Cpu(CpuStorage::F64(c)), Storage::Cpu(CpuStorage::F64(a)), Storage::Cpu(CpuStorage::F64(b))) => {
                Storage::from_f64(elementwise::where_cond(c, a, b))
            }
            _ => panic!("where: condition and values must share dtype and device"),
        }
    }

    pub fn reduce(&self, op: ReduceOp, shape: &[usize], out_shape: &[usize]) -> Storage {
        if let Some(half) = Storage::half_to_widen(&[self]) {
            return self.widened().reduce(op, shape, out_shape).cast(half);
        }
        if let Storage::Cuda(g) = self {
            return Storage::Cuda(g.reduce(op, shape, out_shape));
        }
        map_storage!(self, |v| reduce::reduce_to(op, v, shape, out_shape))
    }

    /// A contiguous copy of the strided view `(offset, strides, shape)` of this buffer.
    pub fn strided_copy(&self, offset: usize, strides: &[usize], shape: &[usize]) -> Storage {
        if let Some(half) = Storage::half_to_widen(&[self]) {
            return self.widened().strided_copy(offset, strides, shape).cast(half);
        }
        if let Storage::Cuda(g) = self {
            return Storage::Cuda(g.strided_copy(offset, strides, shape));
        }
        map_storage!(self, |v| layout::strided_copy(v, offset, strides, shape))
    }

    /// Write `src` (contiguous, of `shape`) into this buffer at the strided positions.
    pub fn strided_write(&mut self, offset: usize, strides: &[usize], src: &Storage, shape: &[usize]) {
        if let Some(half) = Storage::half_to_widen(&[self, src]) {
            let mut wide = self.widened();
            wide.strided_write(offset, strides, &src.widened(), shape);
            *self = wide.cast(half);
            return;
        }
        crate::cpu::denormals::sync_this_thread();
        match (self, src) {
            (Storage::Cuda(d), Storage::Cuda(s)) => d.strided_write(offset, strides, s, shape),
            (Storage::Cpu(CpuStorage::F32(d)), Storage::Cpu(CpuStorage::F32(s))) => {
                layout::strided_write(d, offset, strides, s, shape)
            }
            (Storage::Cpu(CpuStorage::F64(d)), Storage::Cpu(CpuStorage::F64(s))) => {
                layout::strided_write(d, offset, strides, s, shape)
            }
            _ => panic!("strided_write: source and destination must share dtype and device"),
        }
    }

    pub fn matmul(&self, other: &Storage, problem: &MatmulProblem) -> Storage {
        // On a CUDA device, 16-bit operands run on the tensor cores (f32 sums, rounded once).
        if let Some(half) = Storage::half_to_widen(&[self, other]) {
            return self.widened().matmul(&other.widened(), problem).cast(half);
        }
        if let (Storage::Cuda(a), Storage::Cuda(b)) = (self, other) {
            return Storage::Cuda(a.matmul(b, problem));
        }
        map_storage2!("matmul", self, other, |a, b| matmul::matmul(problem, a, b))
    }

    /// `activation(conv2d + bias)`, with an optional bias `[O]` and activation; `self` is the
    /// input `[N, C, H, W]`, `weight` is `[O, C, kh, kw]`.
    pub fn conv2d_forward(
        &self,
        weight: &Storage,
        bias: Option<&Storage>,
        activation: Option<UnaryOp>,
        g: &ConvGeometry,
    ) -> Storage {
        check_geometry(g, "conv2d_forward");
        if let Some((x, w, b)) = Storage::cpu_slices(self, weight, bias, CpuStorage::as_bf16) {
            crate::cpu::denormals::sync_this_thread();
            let y = conv::bf16::conv2d_forward_half(g, x, w, b, activation);
            return Storage::Cpu(CpuStorage::BF16(y));
        }
        if let Some((x, w, b)) = Storage::cpu_slices(self, weight, bias, CpuStorage::as_f16) {
            crate::cpu::denormals::sync_this_thread();
            let y = conv::bf16::conv2d_forward_half(g, x, w, b, activation);
            return Storage::Cpu(CpuStorage::F16(y));
        }
        if let Some(half) = Storage::half_to_widen(&[&[self, weight][..], bias.as_slice()].concat()) {
            let bias = bias.map(Storage::widened);
            return self
                .widened()
                .conv2d_forward(&weight.widened(), bias.as_ref(), activation, g)
                .cast(half);
        }
        if let (Storage::Cuda(a), Storage::Cuda(b)) = (self, weight) {
            let bias = bias.map(|b| b.on_gpu("conv2d's bias"));
            return Storage::Cuda(a.conv2d_forward(b, bias, activation, g));
        }
        map_storage2_bias!("conv2d", self, weight, bias, |x, w, b| conv::conv2d_forward(
            g,
            x,
            w,
            Epilogue { bias: b, activation }
        ))
    }

    /// `activation(conv2d^T + bias)`: the adjoint of conv2d in its input, with an optional bias
    /// `[C]` and activation (conv_transpose2d's forward pass); `self` is a map `[N, O, Ho, Wo]`.
    pub fn conv2d_input_adjoint(
        &self,
        weight: &Storage,
        bias: Option<&Storage>,
        activation: Option<UnaryOp>,
        g: &ConvGeometry,
    ) -> Storage {
        check_geometry(g, "conv2d_input_adjoint");
        if let Some((y, w, b)) = Storage::cpu_slices(self, weight, bias, CpuStorage::as_bf16) {
            crate::cpu::denormals::sync_this_thread();
            let x = conv::bf16::conv2d_input_adjoint_half(g, y, w, b, activation);
            return Storage::Cpu(CpuStorage::BF16(x));
        }
        if let Some((y, w, b)) = Storage::cpu_slices(self, weight, bias, CpuStorage::as_f16) {
            crate::cpu::denormals::sync_this_thread();
            let x = conv::bf16::conv2d_input_adjoint_half(g, y, w, b, activation);
            return Storage::Cpu(CpuStorage::F16(x));
        }
        if let Some(half) = Storage::half_to_widen(&[&[self, weight][..], bias.as_slice()].concat()) {
            let bias = bias.map(Storage::widened);
            return self
                .widened()
                .conv2d_input_adjoint(&weight.widened(), bias.as_ref(), activation, g)
                .cast(half);
        }
        if let (Storage::Cuda(a), Storage::Cuda(b)) = (self, weight) {
            let bias = bias.map(|b| b.on_gpu("conv_transpose2d's bias"));
            return Storage::Cuda(a.conv2d_input_adjoint(b, bias, activation, g));
        }
        map_storage2_bias!("conv_transpose2d", self, weight, bias, |y, w, b| {
            conv::conv2d_input_adjoint(g, y, w, Epilogue { bias: b, activation })
        })
    }

    /// The GPU storage of an operand that must be on the same GPU as the others.
    fn on_gpu(&self, what: &str) -> &GpuStorage {
        match self {
            Storage::Cuda(s) => s,
            Storage::Cpu(_) => panic!("{what} is on the CPU, the other operands on a CUDA device"),
        }
    }

    /// conv2d's weight gradient; `self` is the input `[N, C, H, W]`, `grad_out` `[N, O, Ho, Wo]`.
    pub fn conv2d_weight_grad(&self, grad_out: &Storage, g: &ConvGeometry) -> Storage {
        check_geometry(g, "conv2d_weight_grad");
        if let (Storage::Cpu(CpuStorage::BF16(x)), Storage::Cpu(CpuStorage::BF16(gy))) = (self, grad_out) {
            crate::cpu::denormals::sync_this_thread();
            return Storage::Cpu(CpuStorage::BF16(conv::bf16::conv2d_weight_grad_bf16(g, x, gy)));
        }
        if let Some(half) = Storage::half_to_widen(&[self, grad_out]) {
            return self.widened().conv2d_weight_grad(&grad_out.widened(), g).cast(half);
        }
        if let (Storage::Cuda(a), Storage::Cuda(b)) = (self, grad_out) {
            return Storage::Cuda(a.conv2d_weight_grad(b, g));
        }
        map_storage2!("conv2d_weight_grad", self, grad_out, |x, gy| conv::conv2d_weight_grad(
            g, x, gy
        ))
    }
}

/// A convolution's geometry is checked once, here at the kernels' entry, so that a geometry
/// built by hand that does not add up fails with its fields rather than deep in a kernel.
#[track_caller]
fn check_geometry(g: &ConvGeometry, op: &str) {
    if let Err(e) = g.check() {
        panic!("{op}: {e}");
    }
}

/// The GPU device of a tensor that exists: open since the tensor was made there, so `get`
/// returns it from the registry and cannot fail.
fn open_device(device: Device) -> std::sync::Arc<GpuDevice> {
    GpuDevice::get(device).expect("a device that holds a tensor is open")
}
