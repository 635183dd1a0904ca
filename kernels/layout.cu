// Layout kernels: strided gathers (permute, narrow, broadcast), the same with a unary op
// (strided_unary), strided writes (concat) and padded copies (pad, narrow's gradient). CPU twins: crates/kernels/src/cpu/layout.rs (`strided_copy`, `strided_write`).
// For f32, f64, bf16 and f16 (the 16-bit ones move bits: exact).

#include "common.cuh"
// Bf16 and F16: the 16-bit kernels move bits, no arithmetic.
#include "half.cuh"
// U_ codes and unary_apply: strided_unary's op.
#include "op_codes.cuh"
#include "elementwise_ops.cuh"

// A contiguous shape and, for each of its dims, the stride of the strided side.
struct StridedShape {
    int rank;
    long long shape[EARTHMOVER_MAX_RANK];
    long long strides[EARTHMOVER_MAX_RANK];
    long long offset;
};

__device__ __forceinline__ long long strided_offset(long long i, const StridedShape &s) {
    long long offset = s.offset;
    for (int d = s.rank - 1; d >= 0; --d) {
        offset += (i % s.shape[d]) * s.strides[d];
        i /= s.shape[d];
    }
    return offset;
}

// out[i] = src[offset + sum_d i[d] * strides[d]]
template <typename T> __device__ void strided_copy(const T *__restrict__ src, T *__restrict__ out, long long n, StridedShape s) {
    for (long long i = grid_index(); i < n; i += grid_stride()) out[i] = src[strided_offset(i, s)];
}

// dst[offset + sum_d i[d] * strides[d]] = src[i]; the positions must not repeat.
template <typename T> __device__ void strided_write(T *__restrict__ dst, const T *__restrict__ src, long long n, StridedShape s) {
    for (long long i = grid_index(); i < n; i += grid_stride()) dst[strided_offset(i, s)] = src[i];
}

// A box of shape `inner` at offsets `before` inside a contiguous `outer` shape (PadShape in
// crates/kernels/src/cuda/shapes.rs).
struct PadShape {
    int rank;
    long long outer[EARTHMOVER_MAX_RANK];
    long long before[EARTHMOVER_MAX_RANK];
    long long inner[EARTHMOVER_MAX_RANK];
};

// out = src (contiguous, of shape `inner`) padded with `value` out to `outer`: a pad (and
// narrow's gradient, zeros around the box) in one pass, where a fill and a strided_write took
// two. Each output element is written once. Moves values, no arithmetic: every dtype.
template <typename T>
__device__ void padded_copy(const T *__restrict__ src, T *__restrict__ out, long long n, T value, PadShape s) {
    for (long long i = grid_index(); i < n; i += grid_stride()) {
        long long rest = i, offset = 0, stride = 1;
        bool inside = true;
        for (int d = s.rank - 1; d >= 0; --d) {
            const long long at = rest % s.outer[d] - s.before[d];
            rest /= s.outer[d];
            inside = inside && at >= 0 && at < s.inner[d];
            offset += at * stride;
            stride *= s.inner[d];
        }
        out[i] = inside ? src[offset] : value;
    }
}

// out[i] = op(src[offset + sum_d i[d] * strides[d]]): a strided copy and a unary op in one
// pass (a mean's gradient: its broadcast times 1/n). The unary kernel's arithmetic, so the
// same bits as a strided_copy then a unary; f32 and f64.
template <typename T>
__device__ void strided_unary(int op, double p, double q, const T *__restrict__ src, T *__restrict__ out, long long n,
                              StridedShape s) {
    for (long long i = grid_index(); i < n; i += grid_stride()) out[i] = unary_apply(op, src[strided_offset(i, s)], T(p), T(q));
}

extern "C" {
__global__ void strided_unary_f32(int op, double p, double q, const float *src, float *out, long long n, StridedShape s) {
    strided_unary(op, p, q, src, out, n, s);
}
__global__ void strided_unary_f64(int op, double p, double q, const double *src, double *out, long long n,
                                  StridedShape s) {
    strided_unary(op, p, q, src, out, n, s);
}
__global__ void padded_copy_f32(const float *src, float *out, long long n, double value, PadShape s) {
    padded_copy(src, out, n, float(value), s);
}
__global__ void padded_copy_f64(const double *src, double *out, long long n, double value, PadShape s) {
    padded_copy(src, out, n, value, s);
}
__global__ void strided_copy_f32(const float *src, float *out, long long n, StridedShape s) { strided_copy(src, out, n, s); }
__global__ void strided_copy_f64(const double *src, double *out, long long n, StridedShape s) { strided_copy(src, out, n, s); }
__global__ void strided_write_f32(float *dst, const float *src, long long n, StridedShape s) { strided_write(dst, src, n, s); }
__global__ void strided_write_f64(double *dst, const double *src, long long n, StridedShape s) { strided_write(dst, src, n, s); }
__global__ void strided_copy_bf16(const Bf16 *src, Bf16 *out, long long n, StridedShape s) { strided_copy(src, out, n, s); }
__global__ void strided_copy_f16(const F16 *src, F16 *out, long long n, StridedShape s) { strided_copy(src, out, n, s); }
__global__ void strided_write_bf16(Bf16 *dst, const Bf16 *src, long long n, StridedShape s) { strided_write(dst, src, n, s); }
__global__ void strided_write_f16(F16 *dst, const F16 *src, long long n, StridedShape s) { strided_write(dst, src, n, s); }
}
