// Reductions: sum and max of `x` over any set of dims, down to a tensor whose shape has a 1 in
// each reduced dim. CPU twin: crates/kernels/src/cpu/reduce.rs (`reduce_to`).
//
// One block per output element (a grid-stride loop over outputs when the grid is smaller):
// each thread folds a strided share of the reduced elements, then the block combines the
// threads' partial results with `block_reduce`. In f32 and f64, and in bf16 and f16 with f32
// sums and one rounding (checked against the f32 kernel between casts, bit for bit, in
// crates/kernels/tests/half_kernels.rs).

#include "common.cuh"
// Bf16, F16, widen and store: the 16-bit kernels sum and compare in f32 and round once.
#include "half.cuh"

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

extern "C" {
__global__ void reduce_sum_f32(const float *x, float *out, ReduceShape s) { reduce<float, SumOp<float>>(x, out, s); }
__global__ void reduce_sum_f64(const double *x, double *out, ReduceShape s) { reduce<double, SumOp<double>>(x, out, s); }
__global__ void reduce_max_f32(const float *x, float *out, ReduceShape s) { reduce<float, MaxOp<float>>(x, out, s); }
__global__ void reduce_max_f64(const double *x, double *out, ReduceShape s) { reduce<double, MaxOp<double>>(x, out, s); }
__global__ void reduce_sum_bf16(const Bf16 *x, Bf16 *out, ReduceShape s) { reduce<Bf16, SumOp<float>>(x, out, s); }
__global__ void reduce_sum_f16(const F16 *x, F16 *out, ReduceShape s) { reduce<F16, SumOp<float>>(x, out, s); }
__global__ void reduce_max_bf16(const Bf16 *x, Bf16 *out, ReduceShape s) { reduce<Bf16, MaxOp<float>>(x, out, s); }
__global__ void reduce_max_f16(const F16 *x, F16 *out, ReduceShape s) { reduce<F16, MaxOp<float>>(x, out, s); }
}
