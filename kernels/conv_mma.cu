// Convolutions of bf16 (or f16) operands on the tensor cores: conv.cu's three implicit GEMMs
// with 16-bit inputs, f32 sums through mma.cuh's m16n8k16 mma, and the output written once,
// either rounded to the inputs' 16-bit type (the half rule: f32 sums, rounded once) or in f32:
//
//   conv2d_forward_mma_bf16         y = act(conv2d(x, w) + bias), GEMM M = N*Ho*Wo output pixels,
//                                   N = O channels, K = C*kh*kw taps.
//   conv2d_input_adjoint_mma_bf16   x = act(conv2d^T(gy, w) + bias) (the input gradient, and
//                                   conv_transpose2d's forward pass), M = N*H*W input pixels,
//                                   N = C channels, K = O*kh*kw: each input pixel gathers the
//                                   taps that reach it, so no atomics.
//   conv2d_weight_grad_mma_bf16     gw = sum over (n, oh, ow) of gy x, M = O, N = C*kh*kw,
//                                   K = N*Ho*Wo, split-K: blockIdx.z sums one slice of K; with
//                                   more than one slice the `_f32` kernel writes each slice's
//                                   partial sums (f32) and
//   conv2d_weight_grad_mma_sum_slices_bf16 adds them in slice order and rounds once (for an
//                                   f32 result, conv.cu's `conv2d_weight_grad_sum_slices_f32`,
//                                   the same sum), so the result is the same bits on every run.
//
// Each comes for bf16 and f16 inputs (`_f16`), with the output in the inputs' type or, with the
// suffix `_f32`, in f32. The bias is in the inputs' type, widened and added to the f32 sum, and
// the activation (a `UnaryOp` code, as conv.cu's epilogue; -1 for none) applied to that f32
// value, before the one rounding: the CPU's 16-bit convolutions round once after the same
// epilogue, so a layer's `act(conv + b)` is one launch and one rounding on both. Index arithmetic is 32-bit, as conv.cu (storage.rs refuses larger tensors).
//
// The GEMM on the fragments. A block of 128 threads (4 warps, 2 x 2) computes a 64 x 64 tile
// of C; each warp 32 x 32 of it, as 2 x 4 m16n8 tiles accumulated in registers by
// `mma_m16n8k16`, as matmul_tc.cu. K is walked in slices of 32 (two mma steps of 16). Each
// slice of A (64 rows x 32 k) and of B (64 columns x 32 k) is gathered straight from the NCHW
// tensors into shared memory as 16-bit pairs along k, one 32-bit word per pair, which is how an
// A or B fragment register holds them: each fragment register is then one shared-memory read
// (rows padded to 20 words, so that the 8 rows x 4 words of a fragment fall in 32 banks). The
// gather stages zeros outside the image, for taps that reach no output pixel, past the edges
// of the matrices and past the end of the block's K range: so channel counts and K of any
// size work (MNIST's first conv: C = 1, K = 25, one slice whose last 7 k are zeros), no padding of
// the tensors themselves. Each operand (`Gather` below) says whether its memory runs along its
// rows or along k; its staging thread layout follows (`Stager`), so that a warp's loads are
// mostly consecutive addresses; the per-row part of an address is computed once per thread, the
// per-k part once per slice: by each thread for its one pair (k-fast), or by the block's first
// warp into a shared table, a slice ahead (row-fast). The epilogue writes NCHW.
//
// A first version: scalar 16-bit loads, no double buffering, no ldmatrix.
//
// Tests (the emulator runs this file on the CPU, the mma modelled warp-wide; NVRTC compiles it
// for sm_80 and sm_90):
//   cargo test -p earthmover-kernels --features emulator --test conv_tensor_cores
//   cargo test -p earthmover-kernels --test nvrtc

#include "common.cuh"
#include "conv_phase.cuh"
#include "half.cuh"
#include "mma.cuh"
// U_ codes (op_codes.cuh) and unary_apply (elementwise_ops.cuh): the epilogue's activation, the
// same f32 arithmetic as the CPU's epilogue and as conv.cu's.
#include "op_codes.cuh"
#include "elementwise_ops.cuh"

#define CM_TILE 64                                 // rows and columns of C per block
#define CM_SLICE 32                                // k per shared-memory slice
#define CM_PAIRS (CM_SLICE / 2)                    // 16-bit pairs (words) per staged row
#define CM_ROW_WORDS (CM_PAIRS + 4)                // padded: conflict-free fragment reads
#define CM_THREADS 128                             // 4 warps
#define CM_WARP_TILE 32                            // rows and columns of C per warp
#define CM_STAGED (CM_TILE * CM_PAIRS / CM_THREADS) // words each thread stages per operand

// The emulator links every file's functions into one library: names of our own, so that none
// of them meets a different definition of the same name in conv.cu or matmul_tc.cu.
namespace conv_mma {

// One output element, in f32 or rounded once to the inputs' type.
template <typename Inputs> __device__ __forceinline__ void write(float *out, int at, float value) { out[at] = value; }
template <typename Inputs> __device__ __forceinline__ void write(unsigned short *out, int at, float value) {
    out[at] = Inputs::round(value);
}

// What the forward pass and the input adjoint do to an f32 sum before it is written: add the
// bias of its channel (16-bit, widened; `bias` may be null), then apply the activation `op`
// (-1: none) with its parameters, all in f32, as conv.cu's `Epilogue` and the CPU's.
template <typename Inputs> struct Epilogue {
    const unsigned short *bias;
    int op;
    float p, q;
    __device__ float apply(float sum, int channel) const {
        const float biased = bias ? sum + Inputs::widen(bias[channel]) : sum;
        return op < 0 ? biased : unary_apply(op, biased, p, q);
    }
};

// Stages one operand's slices into a tile `[CM_TILE][CM_ROW_WORDS]`: word p of tile row r holds
// the operand's elements (line first + r, k0 + 2p) and (.., k0 + 2p + 1), low and high half.
// `Gather` gives `Line line(int)` (the per-row part of the addresses), `Step step(int k)` (the
// per-k part) and `unsigned at(Line, Step)` (the element's bits, 0 outside).
template <typename Gather, bool K_FAST = Gather::K_FAST> struct Stager;

// Memory runs along the lines: each thread keeps one line (consecutive threads, consecutive
// lines) and stages its pairs tid / 64, + 2, + 4, ...: 16 k a thread and slice, whose
// decompositions (divisions by kh*kw and kw) the block's first warp makes once each into a
// shared table (`prepare`), one slice ahead.
template <typename Gather> struct Stager<Gather, false> {
    typename Gather::Line line;
    int r;
    __device__ Stager(const Gather &gather, int first) : r(threadIdx.x % CM_TILE) { line = gather.line(first + r); }
    __device__ static typename Gather::Step *steps() {
        __shared__ typename Gather::Step table[CM_SLICE];  // the slice's k, decomposed
        return table;
    }
    // The decompositions of [k0, k0 + CM_SLICE) (those below k_end); a barrier must separate
    // this from the reads of the previous slice's and from `stage`.
    __device__ void prepare(const Gather &gather, int k0, int k_end) const {
        if (threadIdx.x < CM_SLICE && k0 + (int)threadIdx.x < k_end) steps()[threadIdx.x] = gather.step(k0 + threadIdx.x);
    }
    __device__ void stage(const Gather &gather, unsigned (*tile)[CM_ROW_WORDS], int k0, int k_end) const {
        const typename Gather::Step *table = steps();
#pragma unroll
        for (int i = 0; i < CM_STAGED; ++i) {
            const int pair = threadIdx.x / CM_TILE + i * (CM_THREADS / CM_TILE), k = k0 + 2 * pair;
            const unsigned low = k < k_end ? gather.at(line, table[2 * pair]) : 0u;
            const unsigned high = k + 1 < k_end ? gather.at(line, table[2 * pair + 1]) : 0u;
            tile[r][pair] = low | (high << 16);
        }
    }
};

// Memory runs along k: each thread keeps one pair (consecutive threads, consecutive pairs) and
// stages it for lines tid / 16, + 8, + 16, ...: one k-decomposition per slice.
template <typename Gather> struct Stager<Gather, true> {
    typename Gather::Line lines[CM_STAGED];
    __device__ Stager(const Gather &gather, int first) {
#pragma unroll
        for (int i = 0; i < CM_STAGED; ++i) lines[i] = gather.line(first + threadIdx.x / CM_PAIRS + i * (CM_THREADS / CM_PAIRS));
    }
    __device__ void prepare(const Gather &, int, int) const {}  // each thread decomposes its own k
    __device__ void stage(const Gather &gather, unsigned (*tile)[CM_ROW_WORDS], int k0, int k_end) const {
        const int pair = threadIdx.x % CM_PAIRS, k = k0 + 2 * pair;
        const bool has_low = k < k_end, has_high = k + 1 < k_end;
        const typename Gather::Step low_step = has_low ? gather.step(k) : typename Gather::Step{};
        const typename Gather::Step high_step = has_high ? gather.step(k + 1) : typename Gather::Step{};
#pragma unroll
        for (int i = 0; i < CM_STAGED; ++i) {
            const unsigned low = has_low ? gather.at(lines[i], low_step) : 0u;
            const unsigned high = has_high ? gather.at(lines[i], high_step) : 0u;
            tile[threadIdx.x / CM_PAIRS + i * (CM_THREADS / CM_PAIRS)][pair] = low | (high << 16);
        }
    }
};

// C[m, n] = sum over k in [k_begin, k_end) of A[m, k] B[k, n] for the tile of block
// (blockIdx.x, blockIdx.y); `P` holds the gathers of A (`p.a`) and B (`p.b`) and stores C.
template <typename Inputs, typename P> __device__ void implicit_gemm_mma(const P &p, int k_begin, int k_end) {
    __shared__ unsigned a_tile[CM_TILE][CM_ROW_WORDS];  // 64 rows of A, a slice of k each
    __shared__ unsigned b_tile[CM_TILE][CM_ROW_WORDS];  // 64 columns of B, a slice of k each
    const int row0 = blockIdx.x * CM_TILE, col0 = blockIdx.y * CM_TILE;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int group = lane / 4, in_group = lane % 4;  // g and t of mma.cuh's fragment layout
    const int warp_row = (warp / 2) * CM_WARP_TILE, warp_col = (warp % 2) * CM_WARP_TILE;
    const Stager<typename P::A> a_stager(p.a, row0);
    const Stager<typename P::B> b_stager(p.b, col0);

    float acc[2][4][4];  // [m16 tile][n8 tile][c fragment]
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

    a_stager.prepare(p.a, k_begin, k_end);
    b_stager.prepare(p.b, k_begin, k_end);
    __syncthreads();
    for (int k0 = k_begin; k0 < k_end; k0 += CM_SLICE) {
        a_stager.stage(p.a, a_tile, k0, k_end);
        b_stager.stage(p.b, b_tile, k0, k_end);
        __syncthreads();
        // The next slice's k decompositions, while this one is multiplied: every read of the
        // table for this slice was before the barrier above, the next is after the one below.
        a_stager.prepare(p.a, k0 + CM_SLICE, k_end);
        b_stager.prepare(p.b, k0 + CM_SLICE, k_end);
        mma_warp_slice<Inputs, CM_PAIRS, CM_ROW_WORDS>(acc, a_tile, b_tile, warp_row, warp_col, group, in_group);
        __syncthreads();
    }
    const int rows = p.rows(), columns = p.columns();
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int m = row0 + warp_row + 16 * i + group + 8 * (e / 2);
                const int n = col0 + warp_col + 8 * j + 2 * in_group + e % 2;
                if (m < rows && n < columns) p.store(m, n, acc[i][j][e]);
            }
}

// ------------------------------------------------------------------- conv2d's forward pass

// A[m, k]: x under tap k = (c, ki, kj) of output pixel m = (n, oh, ow).
struct ForwardInput {
    static const bool K_FAST = false;  // consecutive output pixels: consecutive x
    const unsigned short *x;
    ConvShape g;
    struct Line { int base, top, left; };  // the sample's offset (-1 past the last pixel), the window's corner
    struct Step { int offset, dy, dx; };   // the channel's offset, the tap's shift
    __device__ Line line(int m) const {
        const int pixels = g.out_h * g.out_w;
        if (m >= g.batch * pixels) return Line{-1, 0, 0};
        const int n = m / pixels, pixel = m % pixels, oh = pixel / g.out_w, ow = pixel % g.out_w;
        return Line{n * g.in_channels * g.in_h * g.in_w, oh * g.stride_h - g.padding_h, ow * g.stride_w - g.padding_w};
    }
    __device__ Step step(int k) const {
        const int taps = g.kernel_h * g.kernel_w, c = k / taps, tap = k % taps;
        return Step{c * g.in_h * g.in_w, (tap / g.kernel_w) * g.dilation_h, (tap % g.kernel_w) * g.dilation_w};
    }
    __device__ unsigned at(const Line &l, const Step &s) const {
        const int ih = l.top + s.dy, iw = l.left + s.dx;
        if (l.base < 0 || ih < 0 || ih >= g.in_h || iw < 0 || iw >= g.in_w) return 0u;
        return x[l.base + s.offset + ih * g.in_w + iw];
    }
};

// B[k, o] = w[o, k], as rows of k: one per output channel.
struct ForwardWeights {
    static const bool K_FAST = true;  // consecutive taps: consecutive w
    const unsigned short *w;
    ConvShape g;
    struct Line { int base; };  // o * K (-1 past the last channel)
    struct Step { int k; };
    __device__ Line line(int o) const {
        return Line{o < g.out_channels ? o * g.in_channels * g.kernel_h * g.kernel_w : -1};
    }
    __device__ Step step(int k) const { return Step{k}; }
    __device__ unsigned at(const Line &l, const Step &s) const { return l.base < 0 ? 0u : w[l.base + s.k]; }
};

template <typename Inputs, typename Out> struct ForwardProblem {
    using A = ForwardInput;
    using B = ForwardWeights;
    A a;
    B b;
    Epilogue<Inputs> epilogue;
    Out *y;
    __device__ int rows() const { return a.g.batch * a.g.out_h * a.g.out_w; }
    __device__ int columns() const { return a.g.out_channels; }
    __device__ void store(int m, int o, float sum) const {
        const int pixels = a.g.out_h * a.g.out_w, n = m / pixels, pixel = m % pixels;
        write<Inputs>(y, (n * a.g.out_channels + o) * pixels + pixel, epilogue.apply(sum, o));
    }
};

// ------------------------------------------------------------------- the input adjoint

// A[m, k]: gy at input pixel m = (n, ih, iw) under tap k = (o, ki, kj), when the tap reaches a
// whole output pixel inside the map (zero otherwise). Over one phase of the stride
// (conv_phase.cuh): its pixels, and only the taps that reach them.
struct AdjointGradient {
    static const bool K_FAST = false;  // consecutive input pixels: mostly consecutive gy
    const unsigned short *gy;
    ConvShape g;
    ConvPhase phase;
    struct Line { int base, ih, iw; };  // the sample's offset (-1 past the last pixel), the padded pixel
    struct Step { int offset, dy, dx; };  // the channel's offset in a sample, the tap's shift
    __device__ Line line(int m) const {
        if (m >= phase.rows(g)) return Line{-1, 0, 0};
        int n, ih, iw;
        phase.pixel(m, n, ih, iw);
        return Line{n * g.out_channels * g.out_h * g.out_w, ih + g.padding_h, iw + g.padding_w};
    }
    __device__ Step step(int k) const {
        int o, ki, kj;
        phase.tap(k, o, ki, kj);
        return Step{o * g.out_h * g.out_w, ki * g.dilation_h, kj * g.dilation_w};
    }
    __device__ unsigned at(const Line &l, const Step &s) const {
        const int top = l.ih - s.dy, left = l.iw - s.dx;  // = oh * stride_h, ow * stride_w for a tap
        if (l.base < 0 || top < 0 || left < 0 || top % g.stride_h != 0 || left % g.stride_w != 0) return 0u;
        const int oh = top / g.stride_h, ow = left / g.stride_w;
        if (oh >= g.out_h || ow >= g.out_w) return 0u;
        return gy[l.base + s.offset + oh * g.out_w + ow];
    }
};

// B[k, c] = w[o, c, ki, kj] with k = (o, ki, kj) of the phase, as rows of k: one per input
// channel.
struct AdjointWeights {
    static const bool K_FAST = true;  // consecutive taps of one o: mostly consecutive w
    const unsigned short *w;
    ConvShape g;
    ConvPhase phase;
    struct Line { int offset; };  // c * kh*kw (-1 past the last channel)
    struct Step { int offset; };  // o * C*kh*kw + ki * kw + kj
    __device__ Line line(int c) const { return Line{c < g.in_channels ? c * g.kernel_h * g.kernel_w : -1}; }
    __device__ Step step(int k) const {
        int o, ki, kj;
        phase.tap(k, o, ki, kj);
        return Step{o * g.in_channels * g.kernel_h * g.kernel_w + ki * g.kernel_w + kj};
    }
    __device__ unsigned at(const Line &l, const Step &s) const { return l.offset < 0 ? 0u : w[s.offset + l.offset]; }
};

template <typename Inputs, typename Out> struct InputAdjointProblem {
    using A = AdjointGradient;
    using B = AdjointWeights;
    A a;
    B b;
    Epilogue<Inputs> epilogue;
    Out *x;
    __device__ int rows() const { return a.phase.rows(a.g); }
    __device__ int columns() const { return a.g.in_channels; }
    __device__ void store(int m, int c, float sum) const {
        int n, ih, iw;
        a.phase.pixel(m, n, ih, iw);
        write<Inputs>(x, ((n * a.g.in_channels + c) * a.g.in_h + ih) * a.g.in_w + iw, epilogue.apply(sum, c));
    }
};

// ------------------------------------------------------------------- the weight gradient

// A[o, r] = gy[n, o, oh, ow] with r = (n, oh, ow).
struct WeightGradGradient {
    static const bool K_FAST = true;  // consecutive output pixels: consecutive gy
    const unsigned short *gy;
    ConvShape g;
    struct Line { int offset; };  // o * Ho*Wo (-1 past the last channel)
    struct Step { int offset; };  // n * O*Ho*Wo + pixel
    __device__ Line line(int o) const { return Line{o < g.out_channels ? o * g.out_h * g.out_w : -1}; }
    __device__ Step step(int r) const {
        const int pixels = g.out_h * g.out_w;
        return Step{(r / pixels) * g.out_channels * pixels + r % pixels};
    }
    __device__ unsigned at(const Line &l, const Step &s) const { return l.offset < 0 ? 0u : gy[l.offset + s.offset]; }
};

// B[r, q] = x under tap q = (c, ki, kj) of output pixel r = (n, oh, ow), as rows of r: one per q.
struct WeightGradInput {
    static const bool K_FAST = true;  // consecutive output pixels: mostly consecutive x
    const unsigned short *x;
    ConvShape g;
    struct Line { int offset, dy, dx; };    // c * H*W (-1 past the last tap), the tap's shift
    struct Step { int offset, top, left; };  // n * C*H*W, the window's corner
    __device__ Line line(int q) const {
        const int taps = g.kernel_h * g.kernel_w, c = q / taps, tap = q % taps;
        if (c >= g.in_channels) return Line{-1, 0, 0};
        return Line{c * g.in_h * g.in_w, (tap / g.kernel_w) * g.dilation_h - g.padding_h,
                    (tap % g.kernel_w) * g.dilation_w - g.padding_w};
    }
    __device__ Step step(int r) const {
        const int pixels = g.out_h * g.out_w, n = r / pixels, pixel = r % pixels;
        return Step{n * g.in_channels * g.in_h * g.in_w, (pixel / g.out_w) * g.stride_h, (pixel % g.out_w) * g.stride_w};
    }
    __device__ unsigned at(const Line &l, const Step &s) const {
        const int ih = s.top + l.dy, iw = s.left + l.dx;
        if (l.offset < 0 || ih < 0 || ih >= g.in_h || iw < 0 || iw >= g.in_w) return 0u;
        return x[s.offset + l.offset + ih * g.in_w + iw];
    }
};

// C = [O, C*kh*kw]; slice z of K written at z * O * C*kh*kw (the result itself for one slice).
template <typename Inputs, typename Out> struct WeightGradProblem {
    using A = WeightGradGradient;
    using B = WeightGradInput;
    A a;
    B b;
    Out *out;
    __device__ int rows() const { return a.g.out_channels; }
    __device__ int columns() const { return a.g.in_channels * a.g.kernel_h * a.g.kernel_w; }
    __device__ void store(int o, int q, float sum) const {
        write<Inputs>(out, ((int)blockIdx.z * rows() + o) * columns() + q, sum);
    }
};

template <typename Inputs, typename Out>
__device__ void forward(const unsigned short *x, const unsigned short *w, const unsigned short *bias, int op,
                        double p_op, double q_op, Out *y, ConvShape g) {
    const ForwardProblem<Inputs, Out> p{{x, g}, {w, g}, {bias, op, (float)p_op, (float)q_op}, y};
    implicit_gemm_mma<Inputs>(p, 0, g.in_channels * g.kernel_h * g.kernel_w);
}

template <typename Inputs, typename Out>
__device__ void input_adjoint(const unsigned short *gy, const unsigned short *w, const unsigned short *bias, int op,
                              double p_op, double q_op, Out *x, ConvShape g) {
    const ConvPhase phase = ConvPhase::of(g, blockIdx.z, gridDim.z);
    const InputAdjointProblem<Inputs, Out> p{{gy, g, phase}, {w, g, phase}, {bias, op, (float)p_op, (float)q_op}, x};
    // The grid covers the largest phase: the blocks past this one's pixels have nothing to do
    // (the whole block returns, before any barrier).
    if ((int)blockIdx.x * CM_TILE >= p.rows()) return;
    implicit_gemm_mma<Inputs>(p, 0, phase.depth(g));
}

// Slice blockIdx.z of K = N*Ho*Wo: [z * slice_len, (z + 1) * slice_len), slice_len a multiple
// of CM_SLICE.
template <typename Inputs, typename Out>
__device__ void weight_grad(const unsigned short *x, const unsigned short *gy, Out *out, ConvShape g, int slice_len) {
    const WeightGradProblem<Inputs, Out> p{{gy, g}, {x, g}, out};
    const int k = g.batch * g.out_h * g.out_w, begin = blockIdx.z * slice_len;
    implicit_gemm_mma<Inputs>(p, begin, min(k, begin + slice_len));
}

// out[i] = partial[0][i] + partial[1][i] + ... in slice order (conv.cu's order), rounded once.
template <typename Inputs> __device__ void sum_slices(const float *partial, unsigned short *out, int len, int slices) {
    for (long long i = grid_index(); i < len; i += grid_stride()) {
        float sum = partial[i];
        for (int s = 1; s < slices; ++s) sum += partial[(long long)s * len + i];
        out[i] = Inputs::round(sum);
    }
}

}  // namespace conv_mma

extern "C" {
// clang-format off
__global__ void conv2d_forward_mma_bf16(const unsigned short *x, const unsigned short *w, const unsigned short *bias, int op, double p_op, double q_op,
        unsigned short *y, ConvShape g) {
    conv_mma::forward<Bf16Inputs>(x, w, bias, op, p_op, q_op, y, g);
}
__global__ void conv2d_forward_mma_bf16_f32(const unsigned short *x, const unsigned short *w, const unsigned short *bias, int op, double p_op, double q_op,
        float *y, ConvShape g) {
    conv_mma::forward<Bf16Inputs>(x, w, bias, op, p_op, q_op, y, g);
}
__global__ void conv2d_forward_mma_f16(const unsigned short *x, const unsigned short *w, const unsigned short *bias, int op, double p_op, double q_op,
        unsigned short *y, ConvShape g) {
    conv_mma::forward<F16Inputs>(x, w, bias, op, p_op, q_op, y, g);
}
__global__ void conv2d_forward_mma_f16_f32(const unsigned short *x, const unsigned short *w, const unsigned short *bias, int op, double p_op, double q_op,
        float *y, ConvShape g) {
    conv_mma::forward<F16Inputs>(x, w, bias, op, p_op, q_op, y, g);
}
__global__ void conv2d_input_adjoint_mma_bf16(const unsigned short *gy, const unsigned short *w, const unsigned short *bias, int op, double p_op, double q_op,
        unsigned short *x, ConvShape g) {
    conv_mma::input_adjoint<Bf16Inputs>(gy, w, bias, op, p_op, q_op, x, g);
}
__global__ void conv2d_input_adjoint_mma_bf16_f32(const unsigned short *gy, const unsigned short *w, const unsigned short *bias, int op, double p_op, double q_op,
        float *x, ConvShape g) {
    conv_mma::input_adjoint<Bf16Inputs>(gy, w, bias, op, p_op, q_op, x, g);
}
__global__ void conv2d_input_adjoint_mma_f16(const unsigned short *gy, const unsigned short *w, const unsigned short *bias, int op, double p_op, double q_op,
        unsigned short *x, ConvShape g) {
    conv_mma::input_adjoint<F16Inputs>(gy, w, bias, op, p_op, q_op, x, g);
}
__global__ void conv2d_input_adjoint_mma_f16_f32(const unsigned short *gy, const unsigned short *w, const unsigned short *bias, int op, double p_op, double q_op,
        float *x, ConvShape g) {
    conv_mma::input_adjoint<F16Inputs>(gy, w, bias, op, p_op, q_op, x, g);
}
__global__ void conv2d_weight_grad_mma_bf16(const unsigned short *x, const unsigned short *gy, unsigned short *out, ConvShape g, int slice_len) {
    conv_mma::weight_grad<Bf16Inputs>(x, gy, out, g, slice_len);
}
__global__ void conv2d_weight_grad_mma_bf16_f32(const unsigned short *x, const unsigned short *gy, float *out, ConvShape g, int slice_len) {
    conv_mma::weight_grad<Bf16Inputs>(x, gy, out, g, slice_len);
}
__global__ void conv2d_weight_grad_mma_f16(const unsigned short *x, const unsigned short *gy, unsigned short *out, ConvShape g, int slice_len) {
    conv_mma::weight_grad<F16Inputs>(x, gy, out, g, slice_len);
}
__global__ void conv2d_weight_grad_mma_f16_f32(const unsigned short *x, const unsigned short *gy, float *out, ConvShape g, int slice_len) {
    conv_mma::weight_grad<F16Inputs>(x, gy, out, g, slice_len);
}
__global__ void conv2d_weight_grad_mma_sum_slices_bf16(const float *partial, unsigned short *out, int len, int slices) {
    conv_mma::sum_slices<Bf16Inputs>(partial, out, len, slices);
}
__global__ void conv2d_weight_grad_mma_sum_slices_f16(const float *partial, unsigned short *out, int len, int slices) {
    conv_mma::sum_slices<F16Inputs>(partial, out, len, slices);
}
// clang-format on
}
