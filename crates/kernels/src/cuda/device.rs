//! A device that runs the kernels of `kernels/*.cu`: a CUDA GPU (NVRTC compiles each source
//! at first use for the GPU's architecture; cudarc launches on one stream), or, with the
//! `emulator` feature, the emulator, which runs the same kernels on the CPU. Both take the
//! same launch shapes and arguments, so everything above this module ([`super::storage`]) is
//! shared and can be tested without a GPU.
//!
//! Buffers are untyped bytes here (device memory, or 8-byte aligned host memory in the
//! emulator); kernels get their addresses as pointer arguments. One stream per device, of its
//! own (not the legacy default stream), orders every launch and copy, so cudarc's per-buffer
//! event tracking is switched off, and a freed buffer goes back to the device's memory pool
//! ([`super::pool`]) for the next allocation of its size class.

use super::compile::{compile, compile_cubin, nvrtc_available};
use super::counters::{CounterCells, DeviceCounters, LaunchHistogram, PoolCounters};
use super::graph::{Capture, RecordedLaunch};
use super::pool::{size_class, BufferPool, Memory};
use super::shapes::{BroadcastShape, ConvShape, MatmulShape, PadShape, ParamList, ReduceShape, StridedShape};
use super::{KernelSource, LaunchShape, SOURCES};
use crate::storage::{CpuStorage, DType, Device};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream, DevicePtr, LaunchConfig, PushKernelArg};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, OnceLock};

/// A kernel argument, by value, as the kernel's parameter list declares it.
#[derive(Clone, Copy, Debug)]
pub enum Arg {
    I32(i32),
    I64(i64),
    U64(u64),
    F64(f64),
    /// A buffer's address (`T*` in the kernel).
    Ptr(u64),
    Broadcast(BroadcastShape),
    Reduce(ReduceShape),
    Strided(StridedShape),
    Pad(PadShape),
    Matmul(MatmulShape),
    Conv(ConvShape),
    ParamsF32(ParamList<f32>),
    ParamsF64(ParamList<f64>),
}

// SAFETY: plain `#[repr(C)]` data laid out as the kernels' structs (see `shapes`); pointers in
// ParamList are device addresses that the kernel dereferences, never the host.
unsafe impl cudarc::driver::DeviceRepr for BroadcastShape {}
unsafe impl cudarc::driver::DeviceRepr for ReduceShape {}
unsafe impl cudarc::driver::DeviceRepr for StridedShape {}
unsafe impl cudarc::driver::DeviceRepr for PadShape {}
unsafe impl cudarc::driver::DeviceRepr for MatmulShape {}
unsafe impl cudarc::driver::DeviceRepr for ConvShape {}
unsafe impl<T> cudarc::driver::DeviceRepr for ParamList<T> {}

impl Arg {
    /// A pointer to the value, as the `params` array of a launch holds it.
    fn as_param(&mut self) -> *mut c_void {
        match self {
            Arg::I32(v) => v as *mut i32 as *mut c_void,
            Arg::I64(v) => v as *mut i64 as *mut c_void,
            Arg::U64(v) | Arg::Ptr(v) => v as *mut u64 as *mut c_void,
            Arg::F64(v) => v as *mut f64 as *mut c_void,
            Arg::Broadcast(v) => v as *mut BroadcastShape as *mut c_void,
            Arg::Reduce(v) => v as *mut ReduceShape as *mut c_void,
            Arg::Strided(v) => v as *mut StridedShape as *mut c_void,
            Arg::Pad(v) => v as *mut PadShape as *mut c_void,
            Arg::Matmul(v) => v as *mut MatmulShape as *mut c_void,
            Arg::Conv(v) => v as *mut ConvShape as *mut c_void,
            Arg::ParamsF32(v) => v as *mut ParamList<f32> as *mut c_void,
            Arg::ParamsF64(v) => v as *mut ParamList<f64> as *mut c_void,
        }
    }
}

/// Device memory of `len` elements of `dtype`: a buffer of the device's pool, to which it
/// returns when dropped.
pub struct GpuBuffer {
    pub dtype: DType,
    pub len: usize,
    memory: Memory,
    /// The size class of `memory` (at least `len` elements) and the pool it goes back to.
    class: usize,
    pool: Option<Arc<BufferPool>>,
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.give_back(self.class, std::mem::replace(&mut self.memory, Memory::Lost));
        }
    }
}

impl GpuBuffer {
    /// A buffer without memory, for an operation after its device failed.
    fn lost(dtype: DType, len: usize) -> GpuBuffer {
        GpuBuffer {
            dtype,
            len,
            memory: Memory::Lost,
            class: 0,
            pool: None,
        }
    }
}

impl std::fmt::Debug for GpuBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuBuffer({} x {})", self.len, self.dtype)
    }
}

pub(super) enum Backend {
    Cuda {
        context: Arc<CudaContext>,
        stream: Arc<CudaStream>,
        arch: u32,
        modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
        functions: Mutex<HashMap<String, CudaFunction>>,
    },
    Emulator,
}

/// What a new buffer holds before a kernel writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitialContents {
    /// Zeros (a memset on a GPU): for outputs that a kernel accumulates into or writes in part.
    Zeros,
    /// Whatever the memory held: for outputs that a kernel writes whole, where zeros would be
    /// overwritten unread. The emulator fills such buffers with all-one bytes, a NaN in every
    /// dtype (f32, f64, bf16, f16), so that an element a kernel leaves unwritten shows as NaN in
    /// the tests against the CPU instead of passing as a zero that a GPU would not promise.
    Unwritten,
}

/// The emulator's content of an [`InitialContents::Unwritten`] buffer: all-one bytes, NaN.
const UNWRITTEN_WORD: u64 = u64::MAX;

/// A GPU, or the emulator.
pub struct GpuDevice {
    pub device: Device,
    /// The GPU's name ("NVIDIA H100 80GB HBM3"), or "CUDA emulator".
    pub name: String,
    pub(super) backend: Backend,
    /// The first error of an operation that had no way to return it (see [`Self::failure`]).
    failure: Mutex<Option<String>>,
    /// What this device has been asked to do (see [`Self::counters`]).
    pub(super) counters: CounterCells,
    /// Freed buffers, kept for later allocations (see [`super::pool`]).
    pub(super) pool: Arc<BufferPool>,
    /// The CUDA graph being captured, if one is (see [`super::graph`]).
    pub(super) capture: Mutex<Option<Capture>>,
    /// Zeros, one per output tile of a split-K launch, that its blocks count themselves done
    /// in, so that the last of a tile adds the slices (conv.cu's weight gradient); each launch
    /// leaves them zero again. Allocated when the device is opened, so that no operation's
    /// allocations depend on whether one ran before it (see [`Self::tile_counters`]).
    tile_counters: OnceLock<GpuBuffer>,
}

/// Tiles of a split-K launch that [`GpuDevice::tile_counters`] can count: 16 KiB of counters.
pub const TILE_COUNTERS: usize = 4096;

/// The process's devices, created at first use and kept.
fn registry() -> &'static Mutex<HashMap<Device, Arc<GpuDevice>>> {
    static DEVICES: OnceLock<Mutex<HashMap<Device, Arc<GpuDevice>>>> = OnceLock::new();
    DEVICES.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Whether the CUDA driver library can be loaded (not whether a GPU is there).
pub fn driver_available() -> bool {
    // SAFETY: only tries to open the library and closes it again.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// The number of CUDA GPUs, 0 where there is no driver or no GPU.
pub fn cuda_device_count() -> usize {
    if !driver_available() {
        return 0;
    }
    CudaContext::device_count().map_or(0, |n| n.max(0) as usize)
}

impl GpuDevice {
    /// The device for `device` (`Cuda(n)` or `CudaEmulator`), or why it cannot be had.
    pub fn get(device: Device) -> Result<Arc<GpuDevice>, String> {
        let mut devices = registry().lock().expect("device registry");
        if let Some(d) = devices.get(&device) {
            return Ok(d.clone());
        }
        let created = Arc::new(match device {
            Device::Cuda(ordinal) => GpuDevice::open_cuda(ordinal)?,
            Device::CudaEmulator => GpuDevice::open_emulator()?,
            Device::Cpu => return Err("the CPU is not a GPU device".to_string()),
        });
        let counters = created.alloc(DType::F32, TILE_COUNTERS, InitialContents::Zeros)?;
        created.tile_counters.get_or_init(|| counters);
        devices.insert(device, created.clone());
        Ok(created)
    }

    fn open_cuda(ordinal: usize) -> Result<GpuDevice, String> {
        if !driver_available() {
            return Err(format!(
                "cuda:{ordinal} is not available: the CUDA driver (libcuda) cannot be loaded"
            ));
        }
        if !nvrtc_available() {
            return Err(format!(
                "cuda:{ordinal} is not available: NVRTC (libnvrtc, CUDA 13) cannot be loaded; \
                 pip install nvidia-cuda-nvrtc and add its nvidia/cu13/lib to LD_LIBRARY_PATH"
            ));
        }
        let count = cuda_device_count();
        if ordinal >= count {
            return Err(format!("cuda:{ordinal} is not available: {count} CUDA GPU(s) found"));
        }
        let context = CudaContext::new(ordinal).map_err(|e| format!("cuda:{ordinal}: {e}"))?;
        let (major, minor) = context
            .compute_capability()
            .map_err(|e| format!("cuda:{ordinal}: {e}"))?;
        let name = context.name().unwrap_or_else(|_| "CUDA GPU".to_string());
        // SAFETY: every launch and copy of this device goes to one stream, which orders them.
        unsafe { context.disable_event_tracking() };
        // A stream of our own: the legacy default stream synchronises with every other
        // blocking stream of the context (a library's, a profiler's), and CUDA graphs cannot
        // be captured on it.
        let stream = context
            .new_stream()
            .map_err(|e| format!("cuda:{ordinal}: creating a stream: {e}"))?;
        Ok(GpuDevice {
            device: Device::Cuda(ordinal),
            name,
            failure: Mutex::new(None),
            counters: CounterCells::default(),
            pool: Arc::new(BufferPool::new()),
            capture: Mutex::new(None),
            tile_counters: OnceLock::new(),
            backend: Backend::Cuda {
                context,
                stream,
                arch: (major * 10 + minor) as u32,
                modules: Mutex::new(HashMap::new()),
                functions: Mutex::new(HashMap::new()),
            },
        })
    }

    fn open_emulator() -> Result<GpuDevice, String> {
        if cfg!(feature = "emulator") {
            Ok(GpuDevice {
                device: Device::CudaEmulator,
                name: "CUDA emulator".to_string(),
                backend: Backend::Emulator,
                failure: Mutex::new(None),
                counters: CounterCells::default(),
                pool: Arc::new(BufferPool::new()),
                capture: Mutex::new(None),
                tile_counters: OnceLock::new(),
            })
        } else {
            Err("the CUDA emulator is not built in (earthmover-kernels feature `emulator`)".to_string())
        }
    }

    /// Whether this device has the tensor cores' bf16 and f16 `mma.sync` m16n8k16 (matmul_tc.cu):
    /// compute capability 8.0 or later; the emulator models them.
    pub fn has_tensor_cores(&self) -> bool {
        match &self.backend {
            Backend::Cuda { arch, .. } => *arch >= 80,
            Backend::Emulator => true,
        }
    }

    /// The first error of an operation that could not return it: the tensor ops have no
    /// error path (an op returns a tensor), so a failed allocation or launch inside one is
    /// kept here, the device does no more work (CUDA's errors are sticky: after a kernel's
    /// fault every call fails), and every call that can return an error returns this one,
    /// which names what failed first: the next read of a value (`Storage::try_to_f64_vec`,
    /// `Tensor::try_item`) reports it to the program instead of a panic deep in an op.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().expect("device failure").clone()
    }

    /// Keep `error` as the device's failure, unless it failed before.
    pub fn record_failure(&self, error: String) {
        self.failure.lock().expect("device failure").get_or_insert(error);
    }

    /// Launches, host synchronisations, copies and allocations since the device was opened,
    /// counted the same way on a GPU and on the emulator: what a step costs in round trips,
    /// measurable without a GPU. Subtract an earlier snapshot ([`DeviceCounters::since`]) to
    /// count a stretch of work.
    pub fn counters(&self) -> DeviceCounters {
        self.counters.snapshot()
    }

    /// This device's launches per kernel name since it was opened (see [`LaunchHistogram`]).
    pub fn launch_histogram(&self) -> LaunchHistogram {
        self.counters.launch_histogram()
    }

    /// How the memory pool served this device's allocations: buffers reused against buffers
    /// got from the driver, and what it holds idle now.
    pub fn pool_counters(&self) -> PoolCounters {
        self.pool.counters()
    }

    /// Give every idle buffer of the pool back to the driver (PyTorch's `empty_cache`): the
    /// bytes released. Buffers in use are not touched, and go back to the pool when dropped.
    pub fn empty_pool(&self) -> usize {
        self.pool.release_all()
    }

    /// Keep at most `bytes` idle in the pool from now on (0: none; every freed buffer goes back
    /// to the driver), releasing everything idle now if more is.
    pub fn set_pool_limit(&self, bytes: usize) {
        self.pool.set_limit(bytes);
    }

    pub(super) fn check_not_failed(&self) -> Result<(), String> {
        self.failure().map_or(Ok(()), Err)
    }

    /// `len` elements of `dtype` holding `contents`, or the driver's refusal (out of memory, or
    /// an earlier kernel's fault, which CUDA reports at every call after it). From the pool
    /// when it holds a buffer of the size class; from the driver otherwise.
    pub fn alloc(&self, dtype: DType, len: usize, contents: InitialContents) -> Result<GpuBuffer, String> {
        self.check_not_failed()?;
        let bytes = len
            .checked_mul(dtype.size_in_bytes())
            .ok_or_else(|| self.error("an allocation", format!("{len} elements of {dtype} overflow")))?;
        let zeroed = contents == InitialContents::Zeros;
        let (class, mut memory, reused, pool) = self.pooled_or_new(bytes)?;
        match &mut memory {
            Memory::Cuda(slice) => {
                if zeroed {
                    let Backend::Cuda { stream, .. } = &self.backend else {
                        unreachable!("CUDA memory on the emulator")
                    };
                    stream
                        .memset_zeros(slice)
                        .map_err(|e| self.error(&format!("zero-filling {bytes} bytes"), e))?;
                    // Captured as a memset node of the graph: counted with its kernels, as
                    // the emulator's recorded fill below is.
                    if let Some(capture) = self.capture().as_mut() {
                        capture.kernels += 1;
                    }
                }
            }
            // A reused buffer is filled again: zeros, or NaN in every dtype where the contents
            // are not to be read, so that it shows a kernel's unwritten element as NaN just as
            // a new one (made all NaN) does, never a value of its last use.
            Memory::Emulated(words) if zeroed || reused => {
                words.fill(if zeroed { 0 } else { UNWRITTEN_WORD });
                if zeroed {
                    // A GPU's stream captures the memset as a node of the graph, run again at
                    // every replay; the emulator records it as the fill it is.
                    if let Some(capture) = self.capture().as_mut() {
                        capture.kernels += 1;
                        capture.launches.push(RecordedLaunch {
                            kernel: "fill_f64".to_string(),
                            shape: LaunchShape::elementwise(words.len()),
                            args: vec![
                                Arg::Ptr(words.as_ptr() as u64),
                                Arg::F64(0.0),
                                Arg::I64(words.len() as i64),
                            ],
                        });
                    }
                }
            }
            Memory::Emulated(_) => {}
            Memory::Lost => unreachable!("the pool holds no lost buffers"),
        }
        self.counters.allocation(bytes, zeroed);
        Ok(GpuBuffer {
            dtype,
            len,
            memory,
            class,
            pool: Some(pool),
        })
    }

    /// Memory for `bytes`: an idle buffer of its size class from the pool, else a new one
    /// from the driver; when the driver refuses, the pool releases what it holds and the
    /// driver is asked once more. Also whether it was reused, and the pool it goes back to:
    /// during a capture, the graph's private pool, and only idle memory will do.
    fn pooled_or_new(&self, bytes: usize) -> Result<(usize, Memory, bool, Arc<BufferPool>), String> {
        let class = size_class(bytes);
        if let Some(capture) = self.capture().as_ref() {
            let memory = capture
                .private
                .take(class)
                .or_else(|| self.pool.take(class))
                .ok_or_else(|| {
                    self.error(
                        &format!("an allocation of {bytes} bytes during a CUDA graph capture"),
                        "the memory pool holds no idle buffer of its size class (run the work once \
                     uncaptured first, so that the pool holds what it needs)",
                    )
                })?;
            return Ok((class, memory, true, capture.private.clone()));
        }
        if let Some(memory) = self.pool.take(class) {
            return Ok((class, memory, true, self.pool.clone()));
        }
        let memory = match self.new_memory(class) {
            Ok(memory) => memory,
            Err(_) if self.pool.release_all() > 0 => self.new_memory(class)?,
            Err(e) => return Err(e),
        };
        self.pool.count_device_allocation(class);
        Ok((class, memory, false, self.pool.clone()))
    }

    /// `bytes` of new memory from the driver, contents unset (on the emulator, from the host,
    /// all NaN).
    fn new_memory(&self, bytes: usize) -> Result<Memory, String> {
        let what = || format!("an allocation of {bytes} bytes");
        Ok(match &self.backend {
            // SAFETY: device bytes, any pattern of which is a valid u8; the host never reads
            // them but through a download, which copies whatever they hold.
            Backend::Cuda { stream, .. } => {
                Memory::Cuda(unsafe { stream.alloc::<u8>(bytes) }.map_err(|e| self.error(&what(), e))?)
            }
            Backend::Emulator => {
                // Refused rather than aborting the process, as a GPU refuses what it cannot hold.
                let words = bytes.div_ceil(8);
                let mut memory = Vec::new();
                memory.try_reserve_exact(words).map_err(|e| self.error(&what(), e))?;
                memory.resize(words, UNWRITTEN_WORD);
                Memory::Emulated(memory)
            }
        })
    }

    /// [`Self::alloc`] for an operation without an error path: on an error, the device keeps
    /// it as its failure and the buffer has no memory.
    pub fn alloc_or_fail(&self, dtype: DType, len: usize, contents: InitialContents) -> GpuBuffer {
        self.alloc(dtype, len, contents).unwrap_or_else(|e| {
            self.record_failure(e);
            GpuBuffer::lost(dtype, len)
        })
    }

    /// A copy of host data on the device.
    pub fn upload(&self, data: &CpuStorage) -> Result<GpuBuffer, String> {
        self.check_not_failed()?;
        self.refuse_during_capture("an upload")?;
        let (dtype, len, bytes): (DType, usize, &[u8]) = match data {
            CpuStorage::F32(v) => (DType::F32, v.len(), bytes_of(v)),
            CpuStorage::F64(v) => (DType::F64, v.len(), bytes_of(v)),
            CpuStorage::BF16(v) => (DType::BF16, v.len(), bytes_of(v)),
            CpuStorage::F16(v) => (DType::F16, v.len(), bytes_of(v)),
        };
        let (class, mut memory, _, pool) = self.pooled_or_new(bytes.len())?;
        match &mut memory {
            // Nothing to copy (CUDA takes no empty copies).
            Memory::Cuda(_) if bytes.is_empty() => {}
            Memory::Cuda(slice) => {
                let Backend::Cuda { stream, .. } = &self.backend else {
                    unreachable!("CUDA memory on the emulator")
                };
                stream
                    .memcpy_htod(bytes, &mut slice.slice_mut(0..bytes.len()))
                    .map_err(|e| self.error("an upload", e))?;
            }
            Memory::Emulated(words) => {
                // The padding past the data zeroed, as a new buffer's was before the pool.
                words.fill(0);
                bytes_of_mut(words)[..bytes.len()].copy_from_slice(bytes);
            }
            Memory::Lost => unreachable!("the pool holds no lost buffers"),
        }
        self.counters.upload(bytes.len());
        Ok(GpuBuffer {
            dtype,
            len,
            memory,
            class,
            pool: Some(pool),
        })
    }

    /// The buffer's values on the host (waits for the work queued before, so an error here
    /// may be an earlier kernel's: `EARTHMOVER_CUDA_SYNC=1` names it).
    pub fn download(&self, buffer: &GpuBuffer) -> Result<CpuStorage, String> {
        self.check_not_failed()?;
        self.refuse_during_capture("a download")?;
        let bytes = buffer.len * buffer.dtype.size_in_bytes();
        let what = "a download";
        let host: Vec<u8> = match (&self.backend, &buffer.memory) {
            (Backend::Cuda { stream, .. }, Memory::Cuda(_)) if bytes == 0 => {
                stream.synchronize().map_err(|e| self.error(what, e))?;
                Vec::new()
            }
            (Backend::Cuda { stream, .. }, Memory::Cuda(slice)) => {
                // The buffer's own bytes, not the rest of its size class.
                let host = stream
                    .clone_dtoh(&slice.slice(0..bytes))
                    .map_err(|e| self.error(what, e))?;
                stream.synchronize().map_err(|e| self.error(what, e))?;
                host
            }
            (Backend::Emulator, Memory::Emulated(words)) => bytes_of(words)[..bytes].to_vec(),
            _ => panic!("a buffer of another device"),
        };
        self.counters.download(bytes);
        Ok(match buffer.dtype {
            DType::F32 => CpuStorage::F32(
                host.chunks_exact(4)
                    .map(|b| f32::from_ne_bytes(b.try_into().unwrap()))
                    .collect(),
            ),
            DType::F64 => CpuStorage::F64(
                host.chunks_exact(8)
                    .map(|b| f64::from_ne_bytes(b.try_into().unwrap()))
                    .collect(),
            ),
            DType::BF16 => CpuStorage::BF16(
                host.chunks_exact(2)
                    .map(|b| half::bf16::from_bits(u16::from_ne_bytes(b.try_into().unwrap())))
                    .collect(),
            ),
            DType::F16 => CpuStorage::F16(
                host.chunks_exact(2)
                    .map(|b| half::f16::from_bits(u16::from_ne_bytes(b.try_into().unwrap())))
                    .collect(),
            ),
        })
    }

    /// The buffer's address, for a kernel's pointer argument.
    /// The address of [`TILE_COUNTERS`] zeroed `unsigned int`s for a split-K launch of `tiles`
    /// output tiles, which must leave them zero; `None` for more tiles than that.
    pub fn tile_counters(&self, tiles: usize) -> Option<u64> {
        let counters = self.tile_counters.get()?;
        (tiles <= TILE_COUNTERS).then(|| self.address(counters))
    }

    pub fn address(&self, buffer: &GpuBuffer) -> u64 {
        match (&self.backend, &buffer.memory) {
            (Backend::Cuda { stream, .. }, Memory::Cuda(slice)) => slice.device_ptr(stream).0,
            (Backend::Emulator, Memory::Emulated(words)) => words.as_ptr() as u64,
            // Never launched on: the device failed before this buffer was made.
            (_, Memory::Lost) => 0,
            _ => panic!("a buffer of another device"),
        }
    }

    /// Launch `kernel` with `args`. Launches are asynchronous: a kernel that faults is reported
    /// by a later call, under that call's name, unless `EARTHMOVER_CUDA_SYNC=1`, which waits for
    /// each kernel here and names it in the error (slow: for finding a fault).
    ///
    /// # Safety
    /// `args` must match the kernel's parameters in number and types, and every pointer must
    /// address a live buffer of this device large enough for what the kernel touches.
    pub unsafe fn launch(&self, kernel: &str, shape: LaunchShape, args: &mut [Arg]) -> Result<(), String> {
        self.check_not_failed()?;
        shape.check().map_err(|e| self.error(&format!("kernel {kernel}"), e))?;
        // While capturing: the emulator records the launch; a GPU's stream captures it below.
        // Either way it is not run now, so neither counted as a launch nor waited for.
        let capturing = match self.capture().as_mut() {
            Some(capture) => {
                capture.kernels += 1;
                if let Backend::Emulator = self.backend {
                    capture.launches.push(RecordedLaunch {
                        kernel: kernel.to_string(),
                        shape,
                        args: args.to_vec(),
                    });
                    return Ok(());
                }
                true
            }
            None => false,
        };
        match &self.backend {
            Backend::Cuda { stream, .. } => {
                let function = self.function(kernel)?;
                let mut builder = stream.launch_builder(&function);
                for arg in args.iter() {
                    match arg {
                        Arg::I32(v) => builder.arg(v),
                        Arg::I64(v) => builder.arg(v),
                        Arg::U64(v) | Arg::Ptr(v) => builder.arg(v),
                        Arg::F64(v) => builder.arg(v),
                        Arg::Broadcast(v) => builder.arg(v),
                        Arg::Reduce(v) => builder.arg(v),
                        Arg::Strided(v) => builder.arg(v),
                        Arg::Pad(v) => builder.arg(v),
                        Arg::Matmul(v) => builder.arg(v),
                        Arg::Conv(v) => builder.arg(v),
                        Arg::ParamsF32(v) => builder.arg(v),
                        Arg::ParamsF64(v) => builder.arg(v),
                    };
                }
                let config = LaunchConfig {
                    grid_dim: shape.grid,
                    block_dim: shape.block,
                    shared_mem_bytes: 0,
                };
                let what = || format!("kernel {kernel} (grid {:?}, block {:?})", shape.grid, shape.block);
                // SAFETY: forwarded to the caller.
                unsafe { builder.launch(config) }.map_err(|e| self.error(&format!("launching {}", what()), e))?;
                if capturing {
                    return Ok(());
                }
                self.counters.launch(kernel);
                if sync_each_launch() {
                    self.counters.host_sync();
                    stream.synchronize().map_err(|e| self.error(&what(), e))?;
                }
                Ok(())
            }
            Backend::Emulator => {
                // SAFETY: forwarded to the caller.
                unsafe { self.run_emulated(kernel, shape, args) }?;
                // Counted as on a GPU, where the launch is queued and the wait follows.
                self.counters.launch(kernel);
                if sync_each_launch() {
                    self.counters.host_sync();
                }
                Ok(())
            }
        }
    }

    /// Run `kernel` on the emulator now.
    ///
    /// # Safety
    /// As [`Self::launch`].
    pub(super) unsafe fn run_emulated(&self, kernel: &str, shape: LaunchShape, args: &mut [Arg]) -> Result<(), String> {
        let mut params: Vec<*mut c_void> = args.iter_mut().map(Arg::as_param).collect();
        #[cfg(feature = "emulator")]
        {
            // SAFETY: forwarded to the caller.
            unsafe { super::emulator::launch(kernel, shape, &mut params) }
                .map_err(|e| self.error(&format!("kernel {kernel}"), e))
        }
        #[cfg(not(feature = "emulator"))]
        {
            let _ = (&mut params, shape);
            unreachable!("the emulator device cannot be created without the feature: {kernel}");
        }
    }

    /// Wait for everything queued on the device; an error may be any queued kernel's.
    pub fn synchronize(&self) -> Result<(), String> {
        self.check_not_failed()?;
        self.refuse_during_capture("a synchronisation")?;
        self.counters.host_sync();
        if let Backend::Cuda { stream, .. } = &self.backend {
            stream.synchronize().map_err(|e| self.error("a synchronisation", e))?;
        }
        Ok(())
    }

    /// The compiled kernel, compiling its source file on first use.
    fn function(&self, kernel: &str) -> Result<CudaFunction, String> {
        let Backend::Cuda {
            context,
            arch,
            modules,
            functions,
            ..
        } = &self.backend
        else {
            unreachable!()
        };
        if let Some(f) = functions.lock().expect("kernel cache").get(kernel) {
            return Ok(f.clone());
        }
        let source = SOURCES
            .iter()
            .find(|s| s.kernel_names().contains(&kernel))
            .ok_or_else(|| format!("no kernel named {kernel} in kernels/*.cu"))?;
        let module = {
            let mut modules = modules.lock().expect("module cache");
            match modules.get(source.file) {
                Some(m) => m.clone(),
                None => {
                    let module = load_module(context, source, *arch).map_err(|e| self.error(source.file, e))?;
                    modules.insert(source.file, module.clone());
                    module
                }
            }
        };
        let function = module
            .load_function(kernel)
            .map_err(|e| self.error(&format!("loading kernel {kernel}"), e))?;
        functions
            .lock()
            .expect("kernel cache")
            .insert(kernel.to_string(), function.clone());
        Ok(function)
    }

    /// A driver error as a message naming the device and what failed; on a GPU without
    /// `EARTHMOVER_CUDA_SYNC=1`, with the reminder that it may be an earlier kernel's.
    pub(super) fn error(&self, what: &str, error: impl std::fmt::Display) -> String {
        let hint = match self.backend {
            Backend::Cuda { .. } if !sync_each_launch() => {
                " (launches are asynchronous: this may be an earlier kernel's fault; EARTHMOVER_CUDA_SYNC=1 names it)"
            }
            _ => "",
        };
        format!("{} ({}): CUDA error in {what}: {error}{hint}", self.device, self.name)
    }
}

/// Whether `EARTHMOVER_CUDA_SYNC=1`: wait after every launch, so that a kernel's fault is
/// reported under its own name rather than at the next download. Read once per process.
pub fn sync_each_launch() -> bool {
    static SYNC: OnceLock<bool> = OnceLock::new();
    *SYNC.get_or_init(|| std::env::var("EARTHMOVER_CUDA_SYNC").is_ok_and(|v| v == "1"))
}

/// `source` compiled by NVRTC and loaded into `context`: CUBIN for the device's own
/// architecture, which the driver takes as it is; PTX, which the driver compiles again (and
/// refuses when it is older than NVRTC), only when the CUBIN cannot be made or loaded. The
/// first fallback in the process says why on stderr, once.
fn load_module(context: &Arc<CudaContext>, source: &KernelSource, arch: u32) -> Result<Arc<CudaModule>, String> {
    let cubin = compile_cubin(source, arch).and_then(|cubin| {
        context
            .load_module(cudarc::nvrtc::Ptx::from_binary(cubin))
            .map_err(|e| format!("the driver refused the CUBIN of {} for sm_{arch}: {e}", source.file))
    });
    let reason = match cubin {
        Ok(module) => return Ok(module),
        Err(reason) => reason,
    };
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| eprintln!("earthmover: loading kernels as PTX instead of CUBIN: {reason}"));
    let ptx = compile(source, arch)?;
    context.load_module(cudarc::nvrtc::Ptx::from_src(ptx)).map_err(|e| {
        format!(
            "the driver refused the PTX of {} for sm_{arch} as well: {e}",
            source.file
        )
    })
}

fn bytes_of<T: Copy>(values: &[T]) -> &[u8] {
    // SAFETY: f32, f64, bf16, f16 and u64 have no padding and any bytes are valid to read.
    unsafe { std::slice::from_raw_parts(values.as_ptr() as *const u8, std::mem::size_of_val(values)) }
}

fn bytes_of_mut(values: &mut [u64]) -> &mut [u8] {
    // SAFETY: u64 has no padding and every byte pattern is a valid u64.
    unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr() as *mut u8, std::mem::size_of_val(values)) }
}
