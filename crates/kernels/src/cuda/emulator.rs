//! The CUDA kernels run on the CPU: `build.rs` compiles `kernels/*.cu` with the host C++
//! compiler against `kernels/emulator/cuda_emulator.h` (threads, barriers and shared memory
//! modelled with OS threads) and exports each kernel by name. The functions here launch them
//! with the same launch shapes and arguments as the GPU backend, over host buffers, and mirror
//! the signatures of their CPU twins so that tests compare the two directly.
//!
//! Slow by design (an OS thread per CUDA thread): for small, odd-sized inputs.

use super::shapes::{BroadcastShape, ConvShape, MatmulShape, ParamList, ReduceShape, StridedShape};
use super::{adam_step_scalars, binary_code, unary_code, KernelElement, LaunchShape};
use crate::cpu::reduce::ReduceOp;
use crate::{BinaryOp, ConvGeometry, MatmulProblem, OptimizerUpdate, UnaryOp};
use std::ffi::{c_char, c_void, CStr};

#[repr(C)]
#[derive(Clone, Copy)]
struct Dim3 {
    x: u32,
    y: u32,
    z: u32,
}

#[repr(C)]
struct EmulatedKernel {
    name: *const c_char,
    launch: unsafe extern "C" fn(Dim3, Dim3, *mut *mut c_void),
}

unsafe extern "C" {
    static earthmover_emulated_kernels: [EmulatedKernel; 0];
    static earthmover_emulated_kernel_count: std::ffi::c_ulong;
}

/// The names of every emulated kernel.
pub fn kernel_names() -> Vec<String> {
    table().iter().map(|k| name_of(k).to_string()).collect()
}

fn table() -> &'static [EmulatedKernel] {
    // SAFETY: build.rs defines the array with exactly `earthmover_emulated_kernel_count`
    // entries, each a static string and a function.
    unsafe {
        std::slice::from_raw_parts(
            earthmover_emulated_kernels.as_ptr(),
            earthmover_emulated_kernel_count as usize,
        )
    }
}

fn name_of(kernel: &EmulatedKernel) -> &'static str {
    // SAFETY: the names are NUL-terminated literals of the generated table.
    unsafe { CStr::from_ptr(kernel.name) }
        .to_str()
        .expect("ASCII kernel names")
}

/// Launch kernel `name` with `params[i]` pointing at its i-th argument, as cuLaunchKernel
/// takes them.
///
/// # Safety
/// `params` must match the kernel's parameter list in number and types, and every buffer
/// pointer must be valid for the elements the kernel touches.
pub unsafe fn launch(name: &str, shape: LaunchShape, params: &mut [*mut c_void]) {
    let kernel = table()
        .iter()
        .find(|k| name_of(k) == name)
        .unwrap_or_else(|| panic!("no emulated kernel `{name}`"));
    let dim = |(x, y, z): (u32, u32, u32)| Dim3 { x, y, z };
    // SAFETY: forwarded to the caller.
    unsafe { (kernel.launch)(dim(shape.grid), dim(shape.block), params.as_mut_ptr()) }
}

/// A pointer to an argument, as `params` holds them.
fn arg<T>(value: &mut T) -> *mut c_void {
    value as *mut T as *mut c_void
}

fn name<T: KernelElement>(family: &str) -> String {
    format!("{family}_{}", T::SUFFIX)
}

/// `cpu::elementwise::unary`.
pub fn unary<T: KernelElement>(op: UnaryOp, x: &[T]) -> Vec<T> {
    let mut out = vec![T::ZERO; x.len()];
    let (mut code, mut p, mut q) = unary_code(op);
    let (mut x_ptr, mut out_ptr, mut n) = (x.as_ptr(), out.as_mut_ptr(), x.len() as i64);
    let mut params = [
        arg(&mut code),
        arg(&mut p),
        arg(&mut q),
        arg(&mut x_ptr),
        arg(&mut out_ptr),
        arg(&mut n),
    ];
    // SAFETY: unary_<T>(int, double, double, const T*, T*, long long) over n elements.
    unsafe { launch(&name::<T>("unary"), LaunchShape::elementwise(x.len()), &mut params) };
    out
}

/// `cpu::elementwise::binary`.
pub fn binary<T: KernelElement>(
    op: BinaryOp,
    a: &[T],
    a_shape: &[usize],
    b: &[T],
    b_shape: &[usize],
    out_shape: &[usize],
) -> Vec<T> {
    let n = out_shape.iter().product::<usize>();
    let mut out = vec![T::ZERO; n];
    let mut shape = BroadcastShape::new(a_shape, b_shape, out_shape).expect("rank within the limit");
    let (mut code, mut parameter) = binary_code(op);
    let (mut a_ptr, mut b_ptr, mut out_ptr, mut count) = (a.as_ptr(), b.as_ptr(), out.as_mut_ptr(), n as i64);
    let mut params = [
        arg(&mut code),
        arg(&mut parameter),
        arg(&mut a_ptr),
        arg(&mut b_ptr),
        arg(&mut out_ptr),
        arg(&mut count),
        arg(&mut shape),
    ];
    // SAFETY: binary_<T>(int, double, const T*, const T*, T*, long long, BroadcastShape).
    unsafe { launch(&name::<T>("binary"), LaunchShape::elementwise(n), &mut params) };
    out
}

/// `cpu::elementwise::where_cond`.
pub fn where_cond<T: KernelElement>(cond: &[T], a: &[T], b: &[T]) -> Vec<T> {
    let mut out = vec![T::ZERO; cond.len()];
    let (mut c, mut a_ptr, mut b_ptr) = (cond.as_ptr(), a.as_ptr(), b.as_ptr());
    let (mut out_ptr, mut n) = (out.as_mut_ptr(), cond.len() as i64);
    let mut params = [
        arg(&mut c),
        arg(&mut a_ptr),
        arg(&mut b_ptr),
        arg(&mut out_ptr),
        arg(&mut n),
    ];
    // SAFETY: where_cond_<T>(const T*, const T*, const T*, T*, long long).
    unsafe {
        launch(
            &name::<T>("where_cond"),
            LaunchShape::elementwise(cond.len()),
            &mut params,
        )
    };
    out
}

/// `n` copies of `value`.
pub fn fill<T: KernelElement>(n: usize, value: f64) -> Vec<T> {
    let mut out = vec![T::ZERO; n];
    let (mut out_ptr, mut v, mut count) = (out.as_mut_ptr(), value, n as i64);
    let mut params = [arg(&mut out_ptr), arg(&mut v), arg(&mut count)];
    // SAFETY: fill_<T>(T*, double, long long).
    unsafe { launch(&name::<T>("fill"), LaunchShape::elementwise(n), &mut params) };
    out
}

/// f32 to f64 and back.
pub fn cast_f32_f64(x: &[f32]) -> Vec<f64> {
    let mut out = vec![0.0; x.len()];
    let (mut x_ptr, mut out_ptr, mut n) = (x.as_ptr(), out.as_mut_ptr(), x.len() as i64);
    let mut params = [arg(&mut x_ptr), arg(&mut out_ptr), arg(&mut n)];
    // SAFETY: cast_f32_f64(const float*, double*, long long).
    unsafe { launch("cast_f32_f64", LaunchShape::elementwise(x.len()), &mut params) };
    out
}

pub fn cast_f64_f32(x: &[f64]) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    let (mut x_ptr, mut out_ptr, mut n) = (x.as_ptr(), out.as_mut_ptr(), x.len() as i64);
    let mut params = [arg(&mut x_ptr), arg(&mut out_ptr), arg(&mut n)];
    // SAFETY: cast_f64_f32(const double*, float*, long long).
    unsafe { launch("cast_f64_f32", LaunchShape::elementwise(x.len()), &mut params) };
    out
}

/// `cpu::reduce::reduce_to`.
pub fn reduce_to<T: KernelElement>(op: ReduceOp, x: &[T], shape: &[usize], out_shape: &[usize]) -> Vec<T> {
    let mut s = ReduceShape::new(shape, out_shape).expect("a valid reduction");
    let mut out = vec![T::ZERO; s.outputs as usize];
    let family = match op {
        ReduceOp::Sum => "reduce_sum",
        ReduceOp::Max => "reduce_max",
    };
    let (mut x_ptr, mut out_ptr) = (x.as_ptr(), out.as_mut_ptr());
    let mut params = [arg(&mut x_ptr), arg(&mut out_ptr), arg(&mut s)];
    // SAFETY: reduce_<op>_<T>(const T*, T*, ReduceShape).
    unsafe { launch(&name::<T>(family), LaunchShape::per_output(out.len()), &mut params) };
    out
}

/// `cpu::layout::strided_copy`.
pub fn strided_copy<T: KernelElement>(src: &[T], offset: usize, strides: &[usize], shape: &[usize]) -> Vec<T> {
    let n = shape.iter().product::<usize>();
    let mut out = vec![T::ZERO; n];
    let mut s = StridedShape::new(offset, strides, shape).expect("rank within the limit");
    let (mut src_ptr, mut out_ptr, mut count) = (src.as_ptr(), out.as_mut_ptr(), n as i64);
    let mut params = [arg(&mut src_ptr), arg(&mut out_ptr), arg(&mut count), arg(&mut s)];
    // SAFETY: strided_copy_<T>(const T*, T*, long long, StridedShape).
    unsafe { launch(&name::<T>("strided_copy"), LaunchShape::elementwise(n), &mut params) };
    out
}

/// `cpu::layout::strided_write`.
pub fn strided_write<T: KernelElement>(dst: &mut [T], offset: usize, strides: &[usize], src: &[T], shape: &[usize]) {
    let n = shape.iter().product::<usize>();
    let mut s = StridedShape::new(offset, strides, shape).expect("rank within the limit");
    let (mut dst_ptr, mut src_ptr, mut count) = (dst.as_mut_ptr(), src.as_ptr(), n as i64);
    let mut params = [arg(&mut dst_ptr), arg(&mut src_ptr), arg(&mut count), arg(&mut s)];
    // SAFETY: strided_write_<T>(T*, const T*, long long, StridedShape).
    unsafe { launch(&name::<T>("strided_write"), LaunchShape::elementwise(n), &mut params) };
}

/// `cpu::matmul::matmul`.
pub fn matmul<T: KernelElement>(p: &MatmulProblem, a: &[T], b: &[T]) -> Vec<T> {
    let mut out = vec![T::ZERO; p.batch * p.m * p.n];
    if out.is_empty() {
        return out;
    }
    let mut s = MatmulShape::from(p);
    let (mut a_ptr, mut b_ptr, mut c_ptr) = (a.as_ptr(), b.as_ptr(), out.as_mut_ptr());
    let mut params = [arg(&mut a_ptr), arg(&mut b_ptr), arg(&mut c_ptr), arg(&mut s)];
    // SAFETY: matmul_<T>(const T*, const T*, T*, MatmulShape).
    unsafe {
        launch(
            &name::<T>("matmul"),
            LaunchShape::matmul(p.m, p.n, p.batch),
            &mut params,
        )
    };
    out
}

/// The im2col columns `[C*kh*kw, samples*Ho*Wo]` of samples `first..first + samples` of `x`.
pub fn im2col<T: KernelElement>(g: &ConvGeometry, x: &[T], first: usize, samples: usize) -> Vec<T> {
    let mut s = ConvShape::new(g, first, samples);
    let n = g.patch_len() * samples * g.out_h * g.out_w;
    let mut cols = vec![T::ZERO; n];
    let (mut x_ptr, mut cols_ptr) = (x.as_ptr(), cols.as_mut_ptr());
    let mut params = [arg(&mut x_ptr), arg(&mut cols_ptr), arg(&mut s)];
    // SAFETY: im2col_<T>(const T*, T*, ConvShape).
    unsafe { launch(&name::<T>("im2col"), LaunchShape::elementwise(n), &mut params) };
    cols
}

/// Fold `cols` of samples `first..first + samples` onto those samples of `x` (overwriting them).
pub fn col2im<T: KernelElement>(g: &ConvGeometry, cols: &[T], first: usize, samples: usize, x: &mut [T]) {
    let mut s = ConvShape::new(g, first, samples);
    let n = samples * g.in_channels * g.in_h * g.in_w;
    let (mut cols_ptr, mut x_ptr) = (cols.as_ptr(), x.as_mut_ptr());
    let mut params = [arg(&mut cols_ptr), arg(&mut x_ptr), arg(&mut s)];
    // SAFETY: col2im_<T>(const T*, T*, ConvShape).
    unsafe { launch(&name::<T>("col2im"), LaunchShape::elementwise(n), &mut params) };
}

/// One tensor of an optimiser update: the parameter, its gradient and up to two state buffers
/// (empty where the optimiser has none).
pub struct ParamSlot<'a, T> {
    pub param: &'a mut [T],
    pub grad: &'a [T],
    pub state1: &'a mut [T],
    pub state2: &'a mut [T],
}

fn param_list<T>(slots: &mut [ParamSlot<'_, T>]) -> ParamList<T> {
    let mut list = ParamList::new();
    for s in slots.iter_mut() {
        let ok = list.push(
            s.param.len(),
            s.param.as_mut_ptr(),
            s.grad.as_ptr(),
            s.state1.as_mut_ptr(),
            s.state2.as_mut_ptr(),
        );
        assert!(ok, "at most {} tensors per launch", super::shapes::MAX_PARAMS);
    }
    list
}

/// `cpu::optim::{sgd, rmsprop, adam, clamp_in_place}` over every slot in one launch.
pub fn update<T: KernelElement>(update: OptimizerUpdate, slots: &mut [ParamSlot<'_, T>]) {
    let mut list = param_list(slots);
    let shape = LaunchShape::elementwise(list.total());
    let l = arg(&mut list);
    // SAFETY: each kernel takes (ParamList<T>, doubles...) as listed in optim.cu.
    unsafe {
        match update {
            OptimizerUpdate::Sgd { mut lr, mut momentum } => {
                launch(&name::<T>("sgd"), shape, &mut [l, arg(&mut lr), arg(&mut momentum)])
            }
            OptimizerUpdate::RmsProp {
                mut lr,
                mut alpha,
                mut eps,
            } => launch(
                &name::<T>("rmsprop"),
                shape,
                &mut [l, arg(&mut lr), arg(&mut alpha), arg(&mut eps)],
            ),
            OptimizerUpdate::Adam {
                lr,
                betas,
                mut eps,
                step,
            } => {
                let (mut step_size, mut inv_bc2) = adam_step_scalars(lr, betas, step);
                let (mut b1, mut b2) = betas;
                let mut params = [
                    l,
                    arg(&mut step_size),
                    arg(&mut b1),
                    arg(&mut b2),
                    arg(&mut inv_bc2),
                    arg(&mut eps),
                ];
                launch(&name::<T>("adam"), shape, &mut params)
            }
            OptimizerUpdate::Clamp { mut min, mut max } => {
                launch(&name::<T>("clamp"), shape, &mut [l, arg(&mut min), arg(&mut max)])
            }
        }
    }
}

/// `cpu::random::uniform`.
pub fn uniform<T: KernelElement>(n: usize, seed: u64, stream: u64, low: f64, high: f64) -> Vec<T> {
    random::<T>("uniform", n, seed, stream, low, high)
}

/// `cpu::random::normal`.
pub fn normal<T: KernelElement>(n: usize, seed: u64, stream: u64, mean: f64, std: f64) -> Vec<T> {
    random::<T>("normal", n, seed, stream, mean, std)
}

fn random<T: KernelElement>(family: &str, n: usize, seed: u64, stream: u64, a: f64, b: f64) -> Vec<T> {
    let mut out = vec![T::ZERO; n];
    let (mut out_ptr, mut count, mut seed, mut stream, mut a, mut b) = (out.as_mut_ptr(), n as i64, seed, stream, a, b);
    let mut params = [
        arg(&mut out_ptr),
        arg(&mut count),
        arg(&mut seed),
        arg(&mut stream),
        arg(&mut a),
        arg(&mut b),
    ];
    // SAFETY: <family>_<T>(T*, long long, unsigned long long, unsigned long long, double, double).
    unsafe { launch(&name::<T>(family), LaunchShape::elementwise(n), &mut params) };
    out
}
