// The phases of a strided convolution's input adjoint (conv_transpose2d's forward pass),
// shared by conv.cu and conv_mma.cu: which input pixels and which taps one grid layer of the
// launch takes. The launch code (crates/kernels/src/cuda/storage.rs,
// `GpuStorage::input_adjoint_layers`) sizes the grid to match.
//
// With stride s and dilation 1, input row ih is reached only by the kernel rows ki with
// ki = ih + padding (mod s): of a 5x5 kernel at stride 2, rows 0, 2, 4 or rows 1, 3, a third
// or a half. A product over every tap would multiply gathered zeros for the others (3 taps in
// 4 at stride 2). So the launch has one grid layer (blockIdx.z) per phase (rh, rw) of the
// stride: its input pixels are those with ih + padding_h = rh (mod stride_h) (and the same
// along w), its K only the taps of that phase, O x ceil((kh - rh) / sh) x ceil((kw - rw) / sw)
// (none where the kernel is narrower than the stride: the output is then the bias and
// activation alone). Each input pixel still sums its own taps in the same order (o, ki, kj),
// less the zeros. With dilation, one layer of every pixel and tap.
#pragma once

struct ConvPhase {
    int first_h, first_w;   // the phase's first input row and column
    int step_h, step_w;     // between its rows and columns: the stride (1 unphased)
    int count_h, count_w;   // its input rows and columns
    int tap_h, tap_w;       // its first kernel row and column
    int taps_h, taps_w;     // its kernel rows and columns, `step` apart

    // Layer `z` of a launch of `layers` layers (1: unphased, every pixel and tap).
    __device__ static ConvPhase of(const ConvShape &g, int z, int layers) {
        if (layers == 1) return ConvPhase{0, 0, 1, 1, g.in_h, g.in_w, 0, 0, g.kernel_h, g.kernel_w};
        const int rh = z / g.stride_w, rw = z % g.stride_w;
        const int first_h = ((rh - g.padding_h) % g.stride_h + g.stride_h) % g.stride_h;
        const int first_w = ((rw - g.padding_w) % g.stride_w + g.stride_w) % g.stride_w;
        return ConvPhase{first_h, first_w, g.stride_h, g.stride_w,
                         count(g.in_h, first_h, g.stride_h), count(g.in_w, first_w, g.stride_w),
                         rh, rw, count(g.kernel_h, rh, g.stride_h), count(g.kernel_w, rw, g.stride_w)};
    }
    // Of `len` places, those from `first` on, `step` apart.
    __device__ static int count(int len, int first, int step) { return first < len ? (len - first + step - 1) / step : 0; }

    // Input pixels of one sample in the phase, and rows of the GEMM (over the batch).
    __device__ int pixels() const { return count_h * count_w; }
    __device__ int rows(const ConvShape &g) const { return g.batch * pixels(); }
    // The GEMM's depth: the phase's taps of every output channel.
    __device__ int depth(const ConvShape &g) const { return g.out_channels * taps_h * taps_w; }
    // The input pixel (sample n, ih, iw) of row m < rows().
    __device__ void pixel(int m, int &n, int &ih, int &iw) const {
        const int p = m % pixels();
        n = m / pixels();
        ih = first_h + (p / count_w) * step_h;
        iw = first_w + (p % count_w) * step_w;
    }
    // Tap k < depth(): its output channel o and kernel row and column.
    __device__ void tap(int k, int &o, int &ki, int &kj) const {
        const int taps = taps_h * taps_w, t = k % taps;
        o = k / taps;
        ki = tap_h + (t / taps_w) * step_h;
        kj = tap_w + (t % taps_w) * step_w;
    }
};
