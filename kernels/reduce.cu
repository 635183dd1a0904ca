// Reductions: sum and max of `x` over any set of dims, down to a tensor whose shape has a 1 in
// each reduced dim, and a sum with a unary op before and after it (`reduce_sum_mapped`). CPU
// twin: crates/kernels/src/cpu/reduce.rs (`reduce_to`; with cpu/elementwise.rs's `unary`).
//
// One block per output element (a grid-stride loop over outputs when the grid is smaller):
// each thread folds a strided share of the reduced elements, then the block combines the
// threads' partial results with `block_reduce`. In f32 and f64, and in bf16 and f16 with f32
// sums and one rounding (checked against the f32 kernel between casts, bit for bit, in
// crates/kernels/tests/half_kernels.rs).

#include "common.cuh"
// Bf16, F16, widen and store: the 16-bit kernels sum and compare in f32 and round once.
#include "half.cuh"
// U_ codes and unary_apply: reduce_sum_mapped's ops before and after the sum.
#include "op_codes.cuh"
#include "elementwise_ops.cuh"

// No op before or after the sum (reduce_sum_mapped); the others are `UnaryOp` codes.
#define REDUCE_NO_OP (-1)

// The dims of `x` split into the kept ones (which index the output) and the reduced ones,
// with their sizes and strides in `x`.
struct ReduceShape {
    int kept_rank;
    long long kept_sizes[EARTHMOVER_MAX_RANK];
    long long kept_strides[EARTHMOVER_MAX_RANK];
    int reduced_rank;
    long long reduced_sizes[EARTHMOVER_MAX_RANK];
    long long reduced_strides[EARTHMOVER_MAX_RANK];
    long long outputs;
    long long reduced;
};

__device__ __forceinline__ long long offset_of(long long index, int rank, const long long *sizes,
                                               const long long *strides) {
    long long offset = 0;
    for (int d = rank - 1; d >= 0; --d) {
        offset += (index % sizes[d]) * strides[d];
        index /= sizes[d];
    }
    return offset;
}

template <typename T> struct SumOp {
    __device__ T identity() const { return T(0); }
    __device__ T operator()(T a, T b) const { return a + b; }
};
// NaN propagates, as in PyTorch.
template <typename T> struct MaxOp {
    __device__ T identity() const { return T(-EARTHMOVER_INFINITY); }
    __device__ T operator()(T acc, T x) const { return (x > acc || x != x) ? x : acc; }
};

// T is the stored type; Op combines values of MathOf<T>::Type (f32 for the 16-bit types).
template <typename T, typename Op> __device__ void reduce(const T *__restrict__ x, T *__restrict__ out, ReduceShape s) {
    Op op;
    for (long long o = blockIdx.x; o < s.outputs; o += gridDim.x) {
        const long long base = offset_of(o, s.kept_rank, s.kept_sizes, s.kept_strides);
        typename MathOf<T>::Type acc = op.identity();
        for (long long r = threadIdx.x; r < s.reduced; r += blockDim.x)
            acc = op(acc, widen(x[base + offset_of(r, s.reduced_rank, s.reduced_sizes, s.reduced_strides)]));
        acc = block_reduce(acc, op);
        if (threadIdx.x == 0) store(&out[o], acc);
    }
}

// A `UnaryOp` (its code and parameters) applied to each value, or nothing.
struct UnaryMap {
    int op;
    double p, q;
};
template <typename T> __device__ __forceinline__ T map_value(const UnaryMap &m, T x) {
    return m.op == REDUCE_NO_OP ? x : unary_apply(m.op, x, T(m.p), T(m.q));
}

// out = after(sum of before(x)) over the reduced dims: a mean (after: `* 1/n`) or a norm
// (before: `x^2`, after: `sqrt`) in one launch. The same arithmetic, in the same order, as
// the unary kernel, reduce_sum and the unary kernel again, so the same bits; f32 and f64 (the
// 16-bit types would round between the ops: storage_fused.rs runs them as three launches).
template <typename T>
__device__ void reduce_sum_mapped(const T *__restrict__ x, T *__restrict__ out, ReduceShape s, UnaryMap before,
                                  UnaryMap after) {
    SumOp<T> op;
    for (long long o = blockIdx.x; o < s.outputs; o += gridDim.x) {
        const long long base = offset_of(o, s.kept_rank, s.kept_sizes, s.kept_strides);
        T acc = op.identity();
        for (long long r = threadIdx.x; r < s.reduced; r += blockDim.x)
            acc = op(acc, map_value(before, x[base + offset_of(r, s.reduced_rank, s.reduced_sizes, s.reduced_strides)]));
        acc = block_reduce(acc, op);
        if (threadIdx.x == 0) out[o] = map_value(after, acc);
    }
}

extern "C" {
__global__ void reduce_sum_mapped_f32(const float *x, float *out, ReduceShape s, int before, double before_p,
                                      double before_q, int after, double after_p, double after_q) {
    reduce_sum_mapped(x, out, s, UnaryMap{before, before_p, before_q}, UnaryMap{after, after_p, after_q});
}
__global__ void reduce_sum_mapped_f64(const double *x, double *out, ReduceShape s, int before, double before_p,
                                      double before_q, int after, double after_p, double after_q) {
    reduce_sum_mapped(x, out, s, UnaryMap{before, before_p, before_q}, UnaryMap{after, after_p, after_q});
}
__global__ void reduce_sum_f32(const float *x, float *out, ReduceShape s) { reduce<float, SumOp<float>>(x, out, s); }
__global__ void reduce_sum_f64(const double *x, double *out, ReduceShape s) { reduce<double, SumOp<double>>(x, out, s); }
__global__ void reduce_max_f32(const float *x, float *out, ReduceShape s) { reduce<float, MaxOp<float>>(x, out, s); }
__global__ void reduce_max_f64(const double *x, double *out, ReduceShape s) { reduce<double, MaxOp<double>>(x, out, s); }
__global__ void reduce_sum_bf16(const Bf16 *x, Bf16 *out, ReduceShape s) { reduce<Bf16, SumOp<float>>(x, out, s); }
__global__ void reduce_sum_f16(const F16 *x, F16 *out, ReduceShape s) { reduce<F16, SumOp<float>>(x, out, s); }
__global__ void reduce_max_bf16(const Bf16 *x, Bf16 *out, ReduceShape s) { reduce<Bf16, MaxOp<float>>(x, out, s); }
__global__ void reduce_max_f16(const F16 *x, F16 *out, ReduceShape s) { reduce<F16, MaxOp<float>>(x, out, s); }
}
