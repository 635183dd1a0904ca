// Helpers every kernel file includes. NVRTC gets this file as an include; the emulator build
// includes it after its model of CUDA (emulator/cuda_emulator.h).
#pragma once

// Positive infinity as a double, for identities of max-reductions (NVRTC has no <cmath>).
#ifdef EARTHMOVER_EMULATOR
#define EARTHMOVER_INFINITY (std::numeric_limits<double>::infinity())
#else
#define EARTHMOVER_INFINITY (__longlong_as_double(0x7ff0000000000000ULL))
#endif

// The most dims a broadcast or strided operation handles (the tensor crate's limit too).
#define EARTHMOVER_MAX_RANK 8

// A shape and two operands' strides in it, passed by value to a kernel (mirrored by a
// `#[repr(C)]` struct on the Rust side).
struct BroadcastShape {
    int rank;
    long long shape[EARTHMOVER_MAX_RANK];
    long long a_strides[EARTHMOVER_MAX_RANK];
    long long b_strides[EARTHMOVER_MAX_RANK];
};

// A batch of products C = A B, `m x k` by `k x n` (matmul.cu, matmul_tc.cu): element (r, c)
// of an operand is at `batch * batch_stride + r * row_stride + c * col_stride`, so either can
// be read transposed; C is contiguous, `m x n` per batch.
struct MatmulShape {
    long long m, n, k;
    long long a_row_stride, a_col_stride, a_batch_stride;
    long long b_row_stride, b_col_stride, b_batch_stride;
};

// ConvGeometry of crates/kernels/src/shape.rs, in 32 bits (`ConvShape` in shapes.rs): the
// convolutions' geometry (conv.cu, conv_mma.cu).
struct ConvShape {
    int batch, in_channels, out_channels, in_h, in_w, kernel_h, kernel_w;
    int stride_h, stride_w, padding_h, padding_w, dilation_h, dilation_w, out_h, out_w;
};

__device__ __forceinline__ long long grid_index() {
    return (long long)blockIdx.x * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ long long grid_stride() { return (long long)gridDim.x * blockDim.x; }

// Reduce `value` over the calling block with `combine`, for blocks of a multiple of 32 threads
// (at most 1024): a shuffle tree within each warp, then the first warp over the warps'
// results. Every thread of the block must call it; thread 0 gets the result. The order of
// combination is fixed by the block size, so results are deterministic.
template <typename T, typename Combine> __device__ T block_reduce(T value, Combine combine) {
    __shared__ T warp_results[32];
    const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    for (int offset = 16; offset > 0; offset /= 2) value = combine(value, __shfl_down_sync(0xffffffffu, value, offset));
    if (lane == 0) warp_results[warp] = value;
    __syncthreads();
    if (warp == 0) {
        value = lane < warps ? warp_results[lane] : warp_results[0];
        // Lanes past the last warp repeat warp 0's value; they are masked out below.
        for (int offset = 16; offset > 0; offset /= 2) {
            T other = __shfl_down_sync(0xffffffffu, value, offset);
            if (lane + offset < warps) value = combine(value, other);
        }
    }
    __syncthreads();  // warp_results may be reused by the caller's next reduction
    return value;
}
