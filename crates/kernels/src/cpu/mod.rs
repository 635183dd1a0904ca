//! The CPU backend: every kernel, parallel with rayon where the work is large enough to pay for
//! it. The CUDA kernels ([`crate::cuda`], a sibling) are checked against these CPU twins, and
//! the fast paths here against the plain references (`conv::reference`, `matmul::gemm_reference`).

pub mod conv;
pub mod convert;
pub mod denormals;
pub mod elementwise;
pub mod gather;
pub mod layout;
pub mod matmul;
pub mod optim;
pub mod random;
pub mod reduce;
pub mod simd;
pub mod storage;

/// Below this many elements a kernel runs on the calling thread: splitting small work across
/// threads costs more than it saves.
pub const PARALLEL_THRESHOLD: usize = 1 << 15;

/// `f()` compiled for the active SIMD path ([`simd::active_path`]): its plain loops vectorised
/// at that path's width ([`simd::compiled_for`]). Each parallel task of the elementwise,
/// reduction, optimiser and layout kernels runs its loop through this.
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    simd::compiled_for(simd::active_path(), f)
}

/// Threads the CPU kernels run on: rayon's global pool (set `RAYON_NUM_THREADS` to change it).
pub fn current_num_threads() -> usize {
    rayon::current_num_threads()
}

/// Keep freed memory in the process for the next allocations, instead of handing it back to
/// the operating system (glibc on Linux; elsewhere this does nothing).
///
/// A training step frees and allocates the same multi-megabyte tensors over and over. By
/// default glibc returns large freed blocks to the system (`munmap`, or trimming the heap
/// top, also in the rayon threads' arenas), so the next step gets them back as fresh pages and
/// pays a page fault on the first write to each 4 KiB. A `train_step -- 64 wgan` bench run (a
/// warm-up and five WGAN iterations at DIM 64) faulted 129-149 K times before, 34.5 K after,
/// and ran about 7% faster (docs/benchmarks/amd-zen3.md). With the thresholds raised, those blocks are
/// reused from malloc's free lists; the bench's peak resident memory stayed at 130 MB, but
/// freed memory is not given back until the process ends. It is a policy of the whole
/// process, so programs set it in their `main` (`wgan-mnist`, `gan-experiments` and the
/// `train_step` bench do); a library never does.
pub fn retain_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::sync::Once;
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            // Blocks up to 32 MiB (glibc's largest threshold) come from the heap, and the heap
            // is trimmed only when 1 GiB at its top is free. A refused setting leaves glibc's
            // default, which is correct, only slower.
            // SAFETY: mallopt only changes malloc's tuning parameters.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
                libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
            }
        });
    }
}

/// A pointer that parallel tasks share (raw pointers are neither `Send` nor `Sync`), each
/// task reading or writing its own part of what it points at: the caller's SAFETY comment says
/// which part, and that nothing else touches it meanwhile.
#[derive(Clone, Copy)]
pub(crate) struct SharedPtr<T>(*mut T);

// SAFETY: the tasks that share it touch disjoint parts of the memory (or only read), as each
// user states; moving or sharing the pointer itself moves or shares `T`s across threads.
unsafe impl<T: Send + Sync> Send for SharedPtr<T> {}
unsafe impl<T: Send + Sync> Sync for SharedPtr<T> {}

impl<T> SharedPtr<T> {
    pub(crate) fn new(p: *mut T) -> SharedPtr<T> {
        SharedPtr(p)
    }

    /// The pointer `i` elements on (a method, so that closures capture the whole wrapper).
    pub(crate) fn at(self, i: usize) -> *mut T {
        self.0.wrapping_add(i)
    }
}

/// `len` slots for a kernel that writes every element of its output: the vector is built in
/// place, without first filling it with zeros that would only be overwritten (on large
/// outputs that fill is a serial memset, and the first touch of fresh pages).
pub(crate) fn uninit_vec<T>(len: usize) -> Vec<std::mem::MaybeUninit<T>> {
    let mut v = Vec::with_capacity(len);
    v.resize_with(len, std::mem::MaybeUninit::uninit);
    v
}

/// The vector of [`uninit_vec`] once written.
///
/// # Safety
/// Every element of `v` has been written.
pub(crate) unsafe fn assume_init_vec<T>(v: Vec<std::mem::MaybeUninit<T>>) -> Vec<T> {
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: MaybeUninit<T> has T's layout, and the caller vouches for every element.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr() as *mut T, v.len(), v.capacity()) }
}

/// `&mut [T]` seen as slots to write, for kernels that write through `MaybeUninit` so that
/// they can fill fresh buffers ([`uninit_vec`]) and reused ones alike.
///
/// # Safety
/// Only initialised values may be written through the slots (`MaybeUninit::write`, never
/// `MaybeUninit::uninit()`): `x` is read as `[T]` afterwards.
pub(crate) unsafe fn as_slots<T>(x: &mut [T]) -> &mut [std::mem::MaybeUninit<T>] {
    // SAFETY: MaybeUninit<T> has T's layout; the caller writes only initialised values.
    unsafe { &mut *(x as *mut [T] as *mut [std::mem::MaybeUninit<T>]) }
}

/// `x` as f32, when `T` is f32: the key to the kernels' f32-only SIMD paths.
pub(crate) fn as_f32<T: 'static>(x: &[T]) -> Option<&[f32]> {
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>())
        // SAFETY: T is f32, so the slice is one of f32.
        .then(|| unsafe { std::slice::from_raw_parts(x.as_ptr() as *const f32, x.len()) })
}

/// `v` as a vector of `T`, which must be f32: the way back from an f32-only path.
///
/// Panics if `T` is not f32.
pub(crate) fn f32_vec_as<T: 'static>(v: Vec<f32>) -> Vec<T> {
    assert!(
        std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>(),
        "f32_vec_as: the element type is not f32"
    );
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: T is f32; the allocation passes whole from the f32 vector, not dropped.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr() as *mut T, v.len(), v.capacity()) }
}

/// Slots to write as f32 slots, when `T` is f32.
pub(crate) fn as_f32_slots<T: 'static>(
    x: &mut [std::mem::MaybeUninit<T>],
) -> Option<&mut [std::mem::MaybeUninit<f32>]> {
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>())
        // SAFETY: T is f32, so these are slots of f32.
        .then(|| unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr() as *mut std::mem::MaybeUninit<f32>, x.len()) })
}
