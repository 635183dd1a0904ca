// Convolutions as implicit GEMMs: conv2d's forward pass, its input gradient (which is also
// conv_transpose2d's forward pass) and its weight gradient, each a matrix product whose
// operands are gathered from the NCHW tensors as the tiles are staged, so that no im2col
// buffer is ever written. CPU twins: crates/kernels/src/cpu/conv/ (`reference.rs` is the
// plain definition); launched by crates/kernels/src/cuda/storage.rs.
//
//   conv2d_forward          y[n, o, oh, ow] = bias[o] + sum over (c, ki, kj) of
//                           x[n, c, oh*sh + ki*dh - ph, ow*sw + kj*dw - pw] w[o, c, ki, kj]
//                           GEMM: M = N*Ho*Wo output pixels, N = O channels, K = C*kh*kw.
//   conv2d_input_adjoint    x[n, c, ih, iw] = bias[c] + sum over (o, ki, kj) of gy[n, o, oh, ow]
//                           w[o, c, ki, kj], over the taps with ih = oh*sh + ki*dh - ph (and
//                           the same in w) for a whole oh inside the map: a gather, each input
//                           pixel summing its own taps in a fixed order, so no atomics.
//                           GEMM: M = N*H*W input pixels, N = C channels, K = O*kh*kw.
//   conv2d_weight_grad      gw[o, c, ki, kj] = sum over (n, oh, ow) of gy[n, o, oh, ow]
//                           x[n, c, oh*sh + ki*dh - ph, ow*sw + kj*dw - pw]
//                           GEMM: M = O, N = C*kh*kw, K = N*Ho*Wo, tall and skinny (DCGAN's first
//                           conv: M 64, N 25, K 12,544 at batch 64), so split-K: blockIdx.z
//                           takes one slice of K and writes its partial sums; the last block
//                           of a tile to finish (counted by an atomic per tile) adds the
//                           tile's slices in slice order, so the result is the same bits on
//                           every run and device, in one launch. Without counters,
//   conv2d_weight_grad_sum_slices adds them in a launch of its own (one thread per weight).
//
// The one tile engine (`implicit_gemm`): a block of 256 threads computes a 64 x 64 tile of C,
// each thread a 4 x 4 register tile spread with a stride of 16 (neighbouring threads read
// neighbouring shared-memory words), as matmul.cu. K is walked in slices of 16: each thread
// gathers 4 elements of A and 4 of B into shared memory (zeros outside the image, past the
// edges of the matrices, and past the end of the block's K range), then does 4 x 4 x 16
// multiply-adds. Each problem says which way its loads run along memory (`A_K_FAST`,
// `B_K_FAST`) so that a warp's loads are mostly consecutive addresses; the per-row part of
// each gather's address (sample, top-left corner of the window) is computed once per thread,
// not per slice, and the per-k part (`Step`) once per k and block, into a shared table one
// slice ahead, so that no gather divides. The epilogue writes NCHW directly, adds the bias and applies the activation
// (`Epilogue`: a `UnaryOp` code, or none), so a layer's `act(conv + b)` is one launch.
//
// Index arithmetic is 32-bit: storage.rs refuses (with a message) tensors of 2^31 elements or
// more. Every kernel comes in f32 and f64.
//
// Tests (the emulator runs this file on the CPU; NVRTC compiles it for sm_80 and sm_90):
//   cargo test -p earthmover-kernels --features emulator --test conv_kernels
//   cargo test -p earthmover-kernels --test nvrtc

#include "common.cuh"
#include "conv_phase.cuh"
// U_ codes (op_codes.cuh) and unary_apply (elementwise_ops.cuh): the epilogue's activation, the
// same arithmetic as elementwise.cu's `unary` pass that it replaces.
#include "op_codes.cuh"
#include "elementwise_ops.cuh"

#define CONV_TILE 64
#define CONV_SLICE 16
#define CONV_THREADS 256
#define CONV_SIDE 16                       // threads along each side of the tile
#define CONV_PER_THREAD 4                  // CONV_TILE / CONV_SIDE outputs each way per thread
#define CONV_STAGED 4                      // CONV_TILE * CONV_SLICE / CONV_THREADS loads per operand
// No activation in the epilogue (`Epilogue::op`); the others are `UnaryOp` codes.
#define CONV_NO_ACTIVATION (-1)

// What the forward pass and the input adjoint do to a sum as they store it: add the bias of
// its channel (`bias` may be null), then apply the activation `op` with its parameters (the
// `UnaryOp`'s `parameters()`), as the CPU's `Epilogue` does.
template <typename T> struct Epilogue {
    const T *bias;
    int op;
    double p, q;
    __device__ T apply(T sum, int channel) const {
        const T biased = bias ? sum + bias[channel] : sum;
        return op == CONV_NO_ACTIVATION ? biased : unary_apply(op, biased, T(p), T(q));
    }
};

// C[m, n] = sum over k in [k_begin, k_end) of A[m, k] B[k, n], for the tile of block
// (blockIdx.x, blockIdx.y); `P` gathers A and B and stores C (the problems below).
//
// The per-k part of the gathers' addresses (`P::Step`: a channel, a tap, a sample and pixel,
// each a division or two of k) is the same for every row and column of the tile: the first
// CONV_SLICE threads decompose a slice's k into a shared table, one slice ahead, while the
// others multiply; every thread's staging then reads its k's decomposition from the table
// instead of dividing for each element it stages (8 a slice).
template <typename T, typename P> __device__ void implicit_gemm(const P &p, int k_begin, int k_end) {
    // +1 column of padding: the transposed stores of the k-fast loads then hit different banks.
    __shared__ T a_tile[CONV_SLICE][CONV_TILE + 1];
    __shared__ T b_tile[CONV_SLICE][CONV_TILE + 1];
    __shared__ typename P::Step steps[CONV_SLICE];
    const int tid = threadIdx.x;
    const int row0 = blockIdx.x * CONV_TILE, col0 = blockIdx.y * CONV_TILE;

    // Where each of this thread's staged elements sits in the tiles, and its row's (or column's)
    // part of the gather, fixed for the whole K loop.
    typename P::Row a_rows[CONV_STAGED];
    typename P::Column b_columns[CONV_STAGED];
    int a_r[CONV_STAGED], a_k[CONV_STAGED], b_c[CONV_STAGED], b_k[CONV_STAGED];
    for (int i = 0; i < CONV_STAGED; ++i) {
        const int e = tid + i * CONV_THREADS;
        a_r[i] = P::A_K_FAST ? e / CONV_SLICE : e % CONV_TILE;
        a_k[i] = P::A_K_FAST ? e % CONV_SLICE : e / CONV_TILE;
        b_c[i] = P::B_K_FAST ? e / CONV_SLICE : e % CONV_TILE;
        b_k[i] = P::B_K_FAST ? e % CONV_SLICE : e / CONV_TILE;
        a_rows[i] = p.row(row0 + a_r[i]);
        b_columns[i] = p.column(col0 + b_c[i]);
    }

    T acc[CONV_PER_THREAD][CONV_PER_THREAD];
    for (int i = 0; i < CONV_PER_THREAD; ++i)
        for (int j = 0; j < CONV_PER_THREAD; ++j) acc[i][j] = T(0);

    const int tx = tid % CONV_SIDE, ty = tid / CONV_SIDE;
    if (tid < CONV_SLICE && k_begin + tid < k_end) steps[tid] = p.step(k_begin + tid);
    __syncthreads();
    for (int k0 = k_begin; k0 < k_end; k0 += CONV_SLICE) {
        for (int i = 0; i < CONV_STAGED; ++i) {
            const int ka = k0 + a_k[i], kb = k0 + b_k[i];
            a_tile[a_k[i]][a_r[i]] = ka < k_end ? p.a(a_rows[i], steps[a_k[i]]) : T(0);
            b_tile[b_k[i]][b_c[i]] = kb < k_end ? p.b(b_columns[i], steps[b_k[i]]) : T(0);
        }
        __syncthreads();
        // The next slice's table: every read of this one is behind the barrier above, and the
        // next staging is behind the barrier below.
        if (tid < CONV_SLICE && k0 + CONV_SLICE + tid < k_end) steps[tid] = p.step(k0 + CONV_SLICE + tid);
        for (int kk = 0; kk < CONV_SLICE; ++kk) {
            T a_reg[CONV_PER_THREAD], b_reg[CONV_PER_THREAD];
            for (int i = 0; i < CONV_PER_THREAD; ++i) a_reg[i] = a_tile[kk][ty + i * CONV_SIDE];
            for (int j = 0; j < CONV_PER_THREAD; ++j) b_reg[j] = b_tile[kk][tx + j * CONV_SIDE];
            for (int i = 0; i < CONV_PER_THREAD; ++i)
                for (int j = 0; j < CONV_PER_THREAD; ++j) acc[i][j] += a_reg[i] * b_reg[j];
        }
        __syncthreads();
    }
    for (int i = 0; i < CONV_PER_THREAD; ++i) {
        const int m = row0 + ty + i * CONV_SIDE;
        if (m >= p.rows()) continue;
        for (int j = 0; j < CONV_PER_THREAD; ++j) {
            const int n = col0 + tx + j * CONV_SIDE;
            if (n < p.columns()) p.store(m, n, acc[i][j]);
        }
    }
}

// conv2d: A[m, k] = x at output pixel m = (n, oh, ow) and tap k = (c, ki, kj); B[k, o] = w[o, k].
template <typename T> struct ForwardProblem {
    const T *x, *w;
    T *y;
    Epilogue<T> epilogue;
    ConvShape g;
    static const bool A_K_FAST = false;  // consecutive output pixels: consecutive x
    static const bool B_K_FAST = true;   // consecutive taps: consecutive w
    // The sample's offset in x (-1 past the last pixel) and the window's top-left corner.
    struct Row { int base, top, left; };
    struct Column { int base; };  // o * K (-1 past the last channel)
    // Tap k = (c, ki, kj): the channel's offset in a sample of x, the tap's shift, and k.
    struct Step { int channel, dy, dx, k; };

    __device__ int rows() const { return g.batch * g.out_h * g.out_w; }
    __device__ int columns() const { return g.out_channels; }
    __device__ Row row(int m) const {
        if (m >= rows()) return Row{-1, 0, 0};
        const int pixels = g.out_h * g.out_w, n = m / pixels, pixel = m % pixels;
        const int oh = pixel / g.out_w, ow = pixel % g.out_w;
        return Row{n * g.in_channels * g.in_h * g.in_w, oh * g.stride_h - g.padding_h, ow * g.stride_w - g.padding_w};
    }
    __device__ Column column(int o) const {
        return Column{o < g.out_channels ? o * g.in_channels * g.kernel_h * g.kernel_w : -1};
    }
    __device__ Step step(int k) const {
        const int taps = g.kernel_h * g.kernel_w, c = k / taps, tap = k % taps;
        return Step{c * g.in_h * g.in_w, (tap / g.kernel_w) * g.dilation_h, (tap % g.kernel_w) * g.dilation_w, k};
    }
    __device__ T a(const Row &r, const Step &s) const {
        if (r.base < 0) return T(0);
        const int ih = r.top + s.dy, iw = r.left + s.dx;
        if (ih < 0 || ih >= g.in_h || iw < 0 || iw >= g.in_w) return T(0);
        return x[r.base + s.channel + ih * g.in_w + iw];
    }
    __device__ T b(const Column &col, const Step &s) const { return col.base < 0 ? T(0) : w[col.base + s.k]; }
    __device__ void store(int m, int o, T sum) const {
        const int pixels = g.out_h * g.out_w, n = m / pixels, pixel = m % pixels;
        y[(n * g.out_channels + o) * pixels + pixel] = epilogue.apply(sum, o);
    }
};

// The input adjoint: A[m, k] = gy at input pixel m = (n, ih, iw) and tap k = (o, ki, kj) when
// that tap reaches a whole output pixel inside the map (zero otherwise); B[k, c] = w[o, c, ki, kj].
// One grid layer per phase of the stride (conv_phase.cuh): its pixels, and only the taps that
// reach them.
template <typename T> struct InputAdjointProblem {
    const T *gy, *w;
    T *x;
    Epilogue<T> epilogue;
    ConvShape g;
    ConvPhase phase;
    static const bool A_K_FAST = false;  // consecutive input pixels: mostly consecutive gy
    static const bool B_K_FAST = true;   // consecutive taps of one o: consecutive w
    // The sample's offset in gy (-1 past the last pixel) and the pixel shifted by the padding.
    struct Row { int base, ih, iw; };
    struct Column { int c; };  // -1 past the last channel
    // Tap k = (o, ki, kj) of the phase: the channel's offset in a sample of gy, the tap's
    // shift, and its weight's offset for channel 0.
    struct Step { int map, dy, dx, weight; };

    __device__ int rows() const { return phase.rows(g); }
    __device__ int columns() const { return g.in_channels; }
    __device__ Row row(int m) const {
        if (m >= rows()) return Row{-1, 0, 0};
        int n, ih, iw;
        phase.pixel(m, n, ih, iw);
        return Row{n * g.out_channels * g.out_h * g.out_w, ih + g.padding_h, iw + g.padding_w};
    }
    __device__ Column column(int c) const { return Column{c < g.in_channels ? c : -1}; }
    __device__ Step step(int k) const {
        int o, ki, kj;
        phase.tap(k, o, ki, kj);
        return Step{o * g.out_h * g.out_w, ki * g.dilation_h, kj * g.dilation_w,
                    (o * g.in_channels * g.kernel_h + ki) * g.kernel_w + kj};
    }
    __device__ T a(const Row &r, const Step &s) const {
        if (r.base < 0) return T(0);
        const int top = r.ih - s.dy;  // = oh * stride_h when a tap (always, phased)
        const int left = r.iw - s.dx;
        if (top < 0 || left < 0 || top % g.stride_h != 0 || left % g.stride_w != 0) return T(0);
        const int oh = top / g.stride_h, ow = left / g.stride_w;
        if (oh >= g.out_h || ow >= g.out_w) return T(0);
        return gy[r.base + s.map + oh * g.out_w + ow];
    }
    __device__ T b(const Column &col, const Step &s) const {
        return col.c < 0 ? T(0) : w[s.weight + col.c * g.kernel_h * g.kernel_w];
    }
    __device__ void store(int m, int c, T sum) const {
        int n, ih, iw;
        phase.pixel(m, n, ih, iw);
        x[((n * g.in_channels + c) * g.in_h + ih) * g.in_w + iw] = epilogue.apply(sum, c);
    }
};

// The weight gradient: A[o, r] = gy at (o, r) with r = (n, oh, ow); B[r, q] = x under tap
// q = (c, ki, kj) of output pixel r. C = [O, C*kh*kw], slice z of K written at z * O * C*kh*kw.
template <typename T> struct WeightGradProblem {
    const T *x, *gy;
    T *partial;
    ConvShape g;
    int slice;                          // blockIdx.z
    static const bool A_K_FAST = true;  // consecutive output pixels: consecutive gy
    static const bool B_K_FAST = true;  // consecutive output pixels: mostly consecutive x
    struct Row { int base; };           // o * Ho*Wo (-1 past the last channel)
    // The channel's offset in a sample of x (-1 past the last tap) and the tap's shift.
    struct Column { int base, dy, dx; };
    // Output pixel k = (n, oh, ow): its offset in gy for channel 0, the sample's offset in x,
    // and the window's corner before the tap's shift.
    struct Step { int map, sample, top, left; };

    __device__ int rows() const { return g.out_channels; }
    __device__ int columns() const { return g.in_channels * g.kernel_h * g.kernel_w; }
    __device__ Row row(int o) const { return Row{o < g.out_channels ? o * g.out_h * g.out_w : -1}; }
    __device__ Column column(int q) const {
        if (q >= columns()) return Column{-1, 0, 0};
        const int taps = g.kernel_h * g.kernel_w, c = q / taps, tap = q % taps;
        return Column{c * g.in_h * g.in_w, (tap / g.kernel_w) * g.dilation_h - g.padding_h,
                      (tap % g.kernel_w) * g.dilation_w - g.padding_w};
    }
    __device__ Step step(int k) const {
        const int pixels = g.out_h * g.out_w, n = k / pixels, pixel = k % pixels;
        return Step{n * g.out_channels * pixels + pixel, n * g.in_channels * g.in_h * g.in_w,
                    (pixel / g.out_w) * g.stride_h, (pixel % g.out_w) * g.stride_w};
    }
    __device__ T a(const Row &r, const Step &s) const { return r.base < 0 ? T(0) : gy[s.map + r.base]; }
    __device__ T b(const Column &col, const Step &s) const {
        if (col.base < 0) return T(0);
        const int ih = s.top + col.dy, iw = s.left + col.dx;
        if (ih < 0 || ih >= g.in_h || iw < 0 || iw >= g.in_w) return T(0);
        return x[s.sample + col.base + ih * g.in_w + iw];
    }
    __device__ void store(int o, int q, T sum) const { partial[(slice * g.out_channels + o) * columns() + q] = sum; }
};

template <typename T>
__device__ void conv2d_forward(const T *x, const T *w, const T *bias, int op, double p_op, double q_op, T *y,
                               ConvShape g) {
    const ForwardProblem<T> p{x, w, y, Epilogue<T>{bias, op, p_op, q_op}, g};
    implicit_gemm<T>(p, 0, g.in_channels * g.kernel_h * g.kernel_w);
}

template <typename T>
__device__ void conv2d_input_adjoint(const T *gy, const T *w, const T *bias, int op, double p_op, double q_op, T *x,
                                     ConvShape g) {
    const ConvPhase phase = ConvPhase::of(g, blockIdx.z, gridDim.z);
    const InputAdjointProblem<T> p{gy, w, x, Epilogue<T>{bias, op, p_op, q_op}, g, phase};
    // The grid covers the largest phase: the blocks past this one's pixels have nothing to do
    // (the whole block returns, before any barrier).
    if (blockIdx.x * CONV_TILE >= p.rows()) return;
    implicit_gemm<T>(p, 0, phase.depth(g));
}

// The tile's sums of every slice, added in slice order into `out` by the block that finishes
// the tile last: the same additions as conv2d_weight_grad_sum_slices, so the same bits.
// `tile_counters[tile]` counts the tile's finished blocks; the last one sets it back to 0 for
// the next launch (launches on one stream never overlap, so one array serves them all).
template <typename T>
__device__ void add_slices_if_last(const T *partial, T *out, unsigned int *tile_counters, int rows, int columns) {
    __shared__ bool last;
    // Each thread's partial sums reach global memory before its block is counted as done.
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned int *counter = &tile_counters[blockIdx.y * gridDim.x + blockIdx.x];
        last = atomicAdd(counter, 1u) == gridDim.z - 1;
        if (last) *counter = 0;
    }
    __syncthreads();
    if (!last) return;
    const long long len = (long long)rows * columns;
    for (int e = threadIdx.x; e < CONV_TILE * CONV_TILE; e += blockDim.x) {
        const int m = blockIdx.x * CONV_TILE + e / CONV_TILE, n = blockIdx.y * CONV_TILE + e % CONV_TILE;
        if (m >= rows || n >= columns) continue;
        const long long i = (long long)m * columns + n;
        // volatile: other SMs wrote these; read them from L2, never from a stale L1 line.
        const volatile T *sums = partial;
        T sum = sums[i];
        for (unsigned int s = 1; s < gridDim.z; ++s) sum += sums[s * len + i];
        out[i] = sum;
    }
}

// Slice blockIdx.z of K = N*Ho*Wo: [z * slice_len, (z + 1) * slice_len), slice_len a multiple
// of CONV_SLICE. With one slice `partial` is the output; with more and `tile_counters` (zeros,
// one per tile of the grid) the slices are added into `out` by the launch itself, without
// them by conv2d_weight_grad_sum_slices.
template <typename T>
__device__ void conv2d_weight_grad(const T *x, const T *gy, T *partial, T *out, unsigned int *tile_counters,
                                   ConvShape g, int slice_len) {
    const WeightGradProblem<T> p{x, gy, partial, g, (int)blockIdx.z};
    const int k = g.batch * g.out_h * g.out_w, begin = blockIdx.z * slice_len;
    implicit_gemm<T>(p, begin, min(k, begin + slice_len));
    if (gridDim.z > 1 && tile_counters) add_slices_if_last(partial, out, tile_counters, p.rows(), p.columns());
}

// out[i] = partial[0][i] + partial[1][i] + ... in slice order: one thread per weight.
template <typename T> __device__ void conv2d_weight_grad_sum_slices(const T *partial, T *out, int len, int slices) {
    for (long long i = grid_index(); i < len; i += grid_stride()) {
        T sum = partial[i];
        for (int s = 1; s < slices; ++s) sum += partial[(long long)s * len + i];
        out[i] = sum;
    }
}

extern "C" {
__global__ void conv2d_forward_f32(const float *x, const float *w, const float *bias, int op, double p, double q, float *y,
                                   ConvShape g) {
    conv2d_forward(x, w, bias, op, p, q, y, g);
}
__global__ void conv2d_forward_f64(const double *x, const double *w, const double *bias, int op, double p, double q, double *y,
                                   ConvShape g) {
    conv2d_forward(x, w, bias, op, p, q, y, g);
}
__global__ void conv2d_input_adjoint_f32(const float *gy, const float *w, const float *bias, int op, double p, double q,
                                         float *x, ConvShape g) {
    conv2d_input_adjoint(gy, w, bias, op, p, q, x, g);
}
__global__ void conv2d_input_adjoint_f64(const double *gy, const double *w, const double *bias, int op, double p, double q,
                                         double *x, ConvShape g) {
    conv2d_input_adjoint(gy, w, bias, op, p, q, x, g);
}
__global__ void conv2d_weight_grad_f32(const float *x, const float *gy, float *partial, float *out,
                                       unsigned int *tile_counters, ConvShape g, int slice_len) {
    conv2d_weight_grad(x, gy, partial, out, tile_counters, g, slice_len);
}
__global__ void conv2d_weight_grad_f64(const double *x, const double *gy, double *partial, double *out,
                                       unsigned int *tile_counters, ConvShape g, int slice_len) {
    conv2d_weight_grad(x, gy, partial, out, tile_counters, g, slice_len);
}
__global__ void conv2d_weight_grad_sum_slices_f32(const float *partial, float *out, int len, int slices) {
    conv2d_weight_grad_sum_slices(partial, out, len, slices);
}
__global__ void conv2d_weight_grad_sum_slices_f64(const double *partial, double *out, int len, int slices) {
    conv2d_weight_grad_sum_slices(partial, out, len, slices);
}
}
