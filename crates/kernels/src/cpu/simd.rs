//! SIMD on the CPU: which vector instructions the hot loops use, chosen once per process, and
//! the f32 vector type they are written over.
//!
//! The paths ([`SimdPath`]), widest first:
//! - `avx512`: x86-64 with AVX-512F (and AVX2, FMA and F16C, which every such processor has):
//!   16-lane vectors, 32 registers;
//! - `avx2`: x86-64 with AVX2, FMA and F16C (every AVX2 processor has all three): 8 lanes, 16 registers;
//! - `neon`: aarch64 (Apple silicon, Graviton): 4 lanes, 32 registers;
//! - `portable`: plain Rust on any processor (what the compiler makes of 8-lane arrays, without
//!   fused multiply-adds).
//!
//! A process uses the widest path its processor has, or the one `EARTHMOVER_SIMD=avx512|avx2|
//! neon|portable` names (read once, at the first kernel that asks). A path's results are the
//! same bit for bit from run to run; different paths may differ in the last bits (`portable`
//! rounds the product before the add, the others fuse them), so forcing one path reproduces a
//! run across machines that have it.
//!
//! Kernels are written once, generic over [`F32Simd`], and entered through one function per
//! path compiled for that path's instructions (`#[target_feature]`): the generic body is
//! inlined into each, so each path gets its own machine code from one source. Each kernel
//! takes the path as an argument, so that tests can run every path the machine supports in
//! one process; [`active_path`] is what the kernels are given outside tests.

use std::fmt;
use std::sync::OnceLock;

/// The vector instructions a kernel runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SimdPath {
    /// Plain Rust, for any processor.
    Portable,
    /// x86-64 AVX2 and FMA.
    Avx2,
    /// x86-64 AVX-512F (with AVX2 and FMA).
    Avx512,
    /// aarch64 NEON.
    Neon,
}

impl SimdPath {
    /// Every path, widest first.
    pub const ALL: [SimdPath; 4] = [SimdPath::Avx512, SimdPath::Avx2, SimdPath::Neon, SimdPath::Portable];

    /// The name `EARTHMOVER_SIMD` takes.
    pub fn name(self) -> &'static str {
        match self {
            SimdPath::Portable => "portable",
            SimdPath::Avx2 => "avx2",
            SimdPath::Avx512 => "avx512",
            SimdPath::Neon => "neon",
        }
    }

    /// The path of a name, or an error that lists the names.
    pub fn from_name(name: &str) -> Result<SimdPath, String> {
        SimdPath::ALL
            .into_iter()
            .find(|p| p.name() == name.trim().to_ascii_lowercase())
            .ok_or_else(|| format!("unknown SIMD path `{name}`: expected one of avx512, avx2, neon, portable"))
    }

    /// Whether this processor can run the path.
    pub fn is_supported(self) -> bool {
        match self {
            SimdPath::Portable => true,
            #[cfg(target_arch = "x86_64")]
            SimdPath::Avx2 => {
                is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            SimdPath::Avx512 => {
                is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "aarch64")]
            SimdPath::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The widest path this processor supports.
    pub fn widest_supported() -> SimdPath {
        SimdPath::ALL
            .into_iter()
            .find(|p| p.is_supported())
            .unwrap_or(SimdPath::Portable)
    }

    /// Every path this processor supports, widest first.
    pub fn supported() -> Vec<SimdPath> {
        SimdPath::ALL.into_iter().filter(|p| p.is_supported()).collect()
    }

    /// f32 lanes of one vector.
    pub fn f32_lanes(self) -> usize {
        match self {
            SimdPath::Avx512 => 16,
            SimdPath::Avx2 | SimdPath::Portable => 8,
            SimdPath::Neon => 4,
        }
    }
}

impl fmt::Display for SimdPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The path `EARTHMOVER_SIMD` asks for (the widest supported when it is unset or empty), or
/// why it cannot be had: an unknown name, or a path this processor lacks. Programs call it at
/// start to refuse a bad setting with a message; the kernels use [`active_path`].
pub fn configured_path() -> Result<SimdPath, String> {
    match std::env::var("EARTHMOVER_SIMD") {
        Ok(name) if !name.trim().is_empty() => {
            let path = SimdPath::from_name(&name).map_err(|e| format!("EARTHMOVER_SIMD: {e}"))?;
            if path.is_supported() {
                Ok(path)
            } else {
                Err(format!(
                    "EARTHMOVER_SIMD={name}: this processor cannot run the {path} path (it supports {})",
                    SimdPath::supported()
                        .iter()
                        .map(|p| p.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
        }
        _ => Ok(SimdPath::widest_supported()),
    }
}

/// The path the kernels of this process run: [`configured_path`], read once. A bad setting is
/// reported on standard error and the widest supported path used instead (programs refuse it
/// at start through `configured_path`; a library must not stop its caller).
pub fn active_path() -> SimdPath {
    static PATH: OnceLock<SimdPath> = OnceLock::new();
    *PATH.get_or_init(|| {
        configured_path().unwrap_or_else(|e| {
            let fallback = SimdPath::widest_supported();
            eprintln!("earthmover: {e}; using {fallback}");
            fallback
        })
    })
}

/// The rate of f32 multiply-adds this processor reaches on `path` with `threads` threads (each
/// running twelve independent chains of vector multiply-adds), in GFLOP/s (two per
/// multiply-add), the best of three windows of about a tenth of a second (a peak: another
/// tenant on a shared machine only lowers a window): the ceiling the benchmarks compare
/// kernels with.
///
/// Panics if `path` is not supported here.
pub fn fma_peak_gflops(path: SimdPath, threads: usize) -> f64 {
    assert!(
        path.is_supported(),
        "fma_peak_gflops: the {path} path is not supported here"
    );
    const CHAINS: usize = 12;
    // 12.5e9 multiply-adds a thread and window: 0.1 s at 250 GFLOP/s a core.
    let iterations: u64 = 12_500_000_000 / (CHAINS as u64 * path.f32_lanes() as u64);
    let window = || {
        let start = std::time::Instant::now();
        let sum: f32 = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads.max(1))
                .map(|_| scope.spawn(move || fma_chains(path, iterations)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
        });
        std::hint::black_box(sum);
        let flops = threads.max(1) as f64 * iterations as f64 * (CHAINS * path.f32_lanes() * 2) as f64;
        flops / start.elapsed().as_secs_f64() / 1e9
    };
    (0..3).map(|_| window()).fold(0.0, f64::max)
}

/// `iterations` rounds of twelve independent vector multiply-add chains on `path`.
fn fma_chains(path: SimdPath, iterations: u64) -> f32 {
    struct Chains(u64);
    impl SimdKernel for Chains {
        type Output = f32;
        #[inline(always)]
        unsafe fn run<S: F32Simd>(self) -> f32 {
            let (a, b) = (0.999_999_9f32, 1e-7f32);
            // SAFETY: register arithmetic, and stores into a local array of LANES f32 (at most
            // 16), compiled for S by `dispatch`.
            unsafe {
                let (a, b) = (S::broadcast(&a), S::broadcast(&b));
                let mut acc = [S::zero(); 12];
                for _ in 0..self.0 {
                    for v in acc.iter_mut() {
                        *v = S::mul_add(*v, a, b);
                    }
                }
                let mut lanes = [0f32; 16];
                acc.iter()
                    .map(|&v| {
                        S::store(lanes.as_mut_ptr(), v);
                        lanes.iter().sum::<f32>()
                    })
                    .sum()
            }
        }
    }
    dispatch(path, Chains(iterations))
}

/// A kernel written once over [`F32Simd`], with its arguments as fields: [`dispatch`] calls
/// `run::<S>` for a path's `S` inside a function compiled for that path's instructions, so
/// that the generic body (which must be `#[inline(always)]`) becomes machine code of that path.
pub(crate) trait SimdKernel {
    type Output;
    /// # Safety
    /// The processor has `S`'s instructions, and the caller runs this only inside a function
    /// compiled for them ([`dispatch`] does both).
    unsafe fn run<S: F32Simd>(self) -> Self::Output;
}

/// Run `kernel` on `path`. Panics if this processor does not support `path`.
pub(crate) fn dispatch<K: SimdKernel>(path: SimdPath, kernel: K) -> K::Output {
    assert!(
        path.is_supported(),
        "the {path} SIMD path is not supported by this processor"
    );
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2<K: SimdKernel>(kernel: K) -> K::Output {
        // SAFETY: compiled for AVX2 and FMA, which `dispatch` checked.
        unsafe { kernel.run::<Avx2>() }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn avx512<K: SimdKernel>(kernel: K) -> K::Output {
        // SAFETY: compiled for AVX-512F, which `dispatch` checked.
        unsafe { kernel.run::<Avx512>() }
    }
    #[cfg(target_arch = "aarch64")]
    #[target_feature(enable = "neon")]
    unsafe fn neon<K: SimdKernel>(kernel: K) -> K::Output {
        // SAFETY: compiled for NEON, which `dispatch` checked.
        unsafe { kernel.run::<Neon>() }
    }
    // SAFETY: the path is supported (asserted above).
    unsafe {
        match path {
            #[cfg(target_arch = "x86_64")]
            SimdPath::Avx512 => avx512(kernel),
            #[cfg(target_arch = "x86_64")]
            SimdPath::Avx2 => avx2(kernel),
            #[cfg(target_arch = "aarch64")]
            SimdPath::Neon => neon(kernel),
            _ => kernel.run::<Portable>(),
        }
    }
}

/// `f()` compiled for `path`'s instructions: the plain loops in `f`, inlined into a function
/// compiled for the path, are vectorised by the compiler at that path's width, where the
/// crate itself is compiled for its target's baseline (SSE2 on x86-64: four f32 lanes). The
/// elementwise, reduction and optimiser loops run this way ([`super::vectorized`]); they
/// use only operations that round the same at any width (no reassociation, no contraction
/// into multiply-adds), so every path gives the same bits. Panics if this processor does not
/// support `path`.
#[inline(always)]
pub(crate) fn compiled_for<R>(path: SimdPath, f: impl FnOnce() -> R) -> R {
    assert!(
        path.is_supported(),
        "the {path} SIMD path is not supported by this processor"
    );
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
    match path {
        // SAFETY: the path is supported (asserted above); `f` is safe code either way.
        #[cfg(target_arch = "x86_64")]
        SimdPath::Avx512 => unsafe { avx512(f) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        SimdPath::Avx2 => unsafe { avx2(f) },
        // NEON is in aarch64's baseline: the crate is compiled for it already.
        _ => f(),
    }
}

/// f32 vectors of one instruction set, for kernels written once over them. The methods are
/// `unsafe` because they are only sound inside a function compiled for the instruction set
/// (`#[target_feature]`) on a processor that has it, and because the loads and stores take
/// raw pointers: each names what it reads or writes.
pub(crate) trait F32Simd {
    /// One vector of [`F32Simd::LANES`] f32.
    type V: Copy;
    const LANES: usize;

    /// All lanes 0.
    unsafe fn zero() -> Self::V;
    /// All lanes the f32 at `p` (a broadcast load).
    unsafe fn broadcast(p: *const f32) -> Self::V;
    /// `LANES` f32 from `p` (no alignment needed).
    unsafe fn load(p: *const f32) -> Self::V;
    /// `v` to the `LANES` f32 at `p`.
    unsafe fn store(p: *mut f32, v: Self::V);
    /// `a * b + c`, fused where the instruction set has it.
    unsafe fn mul_add(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// The first `count` lanes of `v` (at most `LANES`) to the `count` f32 at `p`, the memory
    /// past them untouched: the last, partial vector of a row. By a lane mask where the
    /// instruction set has one; through a local array otherwise.
    #[inline(always)]
    unsafe fn store_first(p: *mut f32, v: Self::V, count: usize) {
        let mut lanes = [0f32; 16];
        // SAFETY: `LANES <= 16`; the caller vouches for `count <= LANES` f32 at `p`.
        unsafe {
            Self::store(lanes.as_mut_ptr(), v);
            std::ptr::copy_nonoverlapping(lanes.as_ptr(), p, count.min(Self::LANES));
        }
    }
    /// The `count` f32 at `p` (at most `LANES`) in the first lanes, zeros in the others, the
    /// memory past them not read: the last, partial vector of a row. By a lane mask where the
    /// instruction set has one; through a local array otherwise.
    #[inline(always)]
    unsafe fn load_first(p: *const f32, count: usize) -> Self::V {
        let mut lanes = [0f32; 16];
        // SAFETY: `LANES <= 16`; the caller vouches for `count <= LANES` f32 at `p`.
        unsafe {
            std::ptr::copy_nonoverlapping(p, lanes.as_mut_ptr(), count.min(Self::LANES));
            Self::load(lanes.as_ptr())
        }
    }
    /// Ask for the cache line of `p` ahead of its use (a hint; `p` need not be valid).
    unsafe fn prefetch(p: *const f32);
    /// The 8x8 block of f32 at `src` (rows `src_stride` apart) written transposed at `dst`
    /// (rows `dst_stride` apart).
    unsafe fn transpose_8x8(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize);

    /// A 16x16 block transposed, as [`F32Simd::transpose_8x8`]: as four 8x8 blocks, or whole
    /// in the registers of a 16-lane path, where each row of the result is one full store.
    ///
    /// # Safety
    /// As [`F32Simd::transpose_8x8`], for 16x16 blocks.
    #[inline(always)]
    unsafe fn transpose_16x16(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
        for (i, j) in [(0, 0), (0, 8), (8, 0), (8, 8)] {
            // SAFETY: each quarter lies inside the blocks the caller vouches for.
            unsafe {
                Self::transpose_8x8(
                    src.add(i * src_stride + j),
                    src_stride,
                    dst.add(j * dst_stride + i),
                    dst_stride,
                )
            }
        }
    }
    /// `LANES` pairs of bf16 at `p` (each a `u32`, the first of the pair in its low half)
    /// widened to f32: `(first of each pair, second of each pair)`. A bf16 is the upper half
    /// of the f32 it stands for, so widening is a shift (the low half) or a mask (the high
    /// half), exact.
    unsafe fn widen_bf16_pairs(p: *const u32) -> (Self::V, Self::V);
    /// As [`F32Simd::widen_bf16_pairs`], for pairs of IEEE f16 (exact too; F16C's
    /// `vcvtph2ps` on x86-64, which the x86 paths' callers must enable).
    unsafe fn widen_f16_pairs(p: *const u32) -> (Self::V, Self::V);
}

/// Plain Rust: 8-lane arrays, which the compiler maps onto whatever vectors the target has.
#[derive(Clone, Copy)]
pub(crate) struct Portable;

impl F32Simd for Portable {
    type V = [f32; 8];
    const LANES: usize = 8;

    #[inline(always)]
    unsafe fn zero() -> [f32; 8] {
        [0.0; 8]
    }
    #[inline(always)]
    unsafe fn broadcast(p: *const f32) -> [f32; 8] {
        // SAFETY: the caller vouches for `p`.
        [unsafe { *p }; 8]
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> [f32; 8] {
        // SAFETY: the caller vouches for eight f32 at `p`; `read_unaligned` needs no alignment.
        unsafe { (p as *const [f32; 8]).read_unaligned() }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: [f32; 8]) {
        // SAFETY: as `load`.
        unsafe { (p as *mut [f32; 8]).write_unaligned(v) }
    }
    #[inline(always)]
    unsafe fn mul_add(a: [f32; 8], b: [f32; 8], c: [f32; 8]) -> [f32; 8] {
        // Rounded twice: a fused `f32::mul_add` is a slow library call where the processor
        // has no FMA, and this path is for processors we have no vector path for.
        std::array::from_fn(|i| a[i] * b[i] + c[i])
    }
    #[inline(always)]
    unsafe fn prefetch(_: *const f32) {}
    #[inline(always)]
    unsafe fn transpose_8x8(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
        for j in 0..8 {
            for i in 0..8 {
                // SAFETY: the caller vouches for both 8x8 blocks.
                unsafe { *dst.add(j * dst_stride + i) = *src.add(i * src_stride + j) };
            }
        }
    }
    #[inline(always)]
    unsafe fn widen_bf16_pairs(p: *const u32) -> ([f32; 8], [f32; 8]) {
        // SAFETY: the caller vouches for eight u32 at `p`.
        let v = unsafe { (p as *const [u32; 8]).read_unaligned() };
        (
            v.map(|pair| f32::from_bits(pair << 16)),
            v.map(|pair| f32::from_bits(pair & 0xffff_0000)),
        )
    }
    #[inline(always)]
    unsafe fn widen_f16_pairs(p: *const u32) -> ([f32; 8], [f32; 8]) {
        // SAFETY: the caller vouches for eight u32 at `p`.
        let v = unsafe { (p as *const [u32; 8]).read_unaligned() };
        let f16 = |bits: u32| half::f16::from_bits(bits as u16).to_f32();
        (v.map(|pair| f16(pair & 0xffff)), v.map(|pair| f16(pair >> 16)))
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(target_arch = "aarch64")]
pub(crate) use arm::Neon;

#[cfg(target_arch = "aarch64")]
mod arm;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_the_widest_path_is_supported() {
        for path in SimdPath::ALL {
            assert_eq!(SimdPath::from_name(path.name()), Ok(path));
        }
        assert_eq!(SimdPath::from_name(" AVX2 "), Ok(SimdPath::Avx2));
        assert!(SimdPath::from_name("sse9")
            .unwrap_err()
            .contains("avx512, avx2, neon, portable"));
        assert!(SimdPath::Portable.is_supported());
        assert!(SimdPath::widest_supported().is_supported());
        assert_eq!(SimdPath::supported()[0], SimdPath::widest_supported());
        // What this machine runs, for the test log.
        eprintln!("SIMD paths here: {:?}", SimdPath::supported());
    }

    /// `load_first` reads the first lanes and zeros the rest; `store_first` writes the first
    /// lanes and nothing past them: every count of lanes, on every path this processor has.
    #[test]
    fn first_lanes_load_and_store_nothing_past_them() {
        struct FirstLanes<'a> {
            src: &'a [f32],
            dst: &'a mut [f32],
            count: usize,
        }
        impl SimdKernel for FirstLanes<'_> {
            type Output = usize;
            #[inline(always)]
            unsafe fn run<S: F32Simd>(self) -> usize {
                // SAFETY: both slices hold at least `count <= LANES` values past position 1.
                unsafe {
                    let v = S::load_first(self.src.as_ptr().add(1), self.count);
                    S::store_first(self.dst.as_mut_ptr().add(1), v, self.count);
                    // The whole vector, zeros past `count`, into the rest of `dst`.
                    S::store(self.dst.as_mut_ptr().add(20), v);
                }
                S::LANES
            }
        }
        let src: Vec<f32> = (0..40).map(|v| v as f32 + 1.0).collect();
        for path in SimdPath::supported() {
            for count in 0..=16 {
                let mut dst = vec![-1.0f32; 40];
                let lanes = dispatch(
                    path,
                    FirstLanes {
                        src: &src,
                        dst: &mut dst,
                        count: count.min(path.f32_lanes()),
                    },
                );
                let count = count.min(lanes);
                for (i, &v) in dst[..20].iter().enumerate() {
                    let want = if (1..=count).contains(&i) { src[i] } else { -1.0 };
                    assert_eq!(v, want, "{path}: store_first of {count} lanes, position {i}");
                }
                for (lane, &v) in dst[20..20 + lanes].iter().enumerate() {
                    let want = if lane < count { src[1 + lane] } else { 0.0 };
                    assert_eq!(v, want, "{path}: load_first of {count} lanes, lane {lane}");
                }
            }
        }
    }
}
