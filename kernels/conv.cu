// Convolution as matrix products: im2col unfolds a chunk of images into columns, so that
// conv2d's forward pass and weight gradient are one matmul each (matmul.cu); col2im folds
// columns back onto images for the input gradient (and for conv_transpose2d's forward pass).
// CPU twins: crates/kernels/src/cpu/conv.rs (`im2col`, `col2im`, applied per sample there;
// here a chunk of samples side by side, as conv2d_forward lays them out).

#include "common.cuh"

// ConvGeometry of crates/kernels/src/shape.rs, with the chunk: samples `first` to
// `first + samples - 1` of the batch.
struct ConvShape {
    long long batch, in_channels, out_channels, in_h, in_w, kernel_h, kernel_w;
    long long stride_h, stride_w, padding_h, padding_w, dilation_h, dilation_w, out_h, out_w;
    long long first, samples;
};

// cols[K, samples * P]: row (c, ki, kj), column (s, oh, ow) holds x[first + s, c, ih, iw]
// with ih = oh * stride + ki * dilation - padding (zero outside the image).
template <typename T> __device__ void im2col(const T *__restrict__ x, T *__restrict__ cols, ConvShape g) {
    const long long P = g.out_h * g.out_w, columns = g.samples * P;
    const long long total = g.in_channels * g.kernel_h * g.kernel_w * columns;
    for (long long i = grid_index(); i < total; i += grid_stride()) {
        long long row = i / columns, column = i % columns;
        long long s = column / P, p = column % P, oh = p / g.out_w, ow = p % g.out_w;
        long long kj = row % g.kernel_w, ki = (row / g.kernel_w) % g.kernel_h, c = row / (g.kernel_w * g.kernel_h);
        long long ih = oh * g.stride_h + ki * g.dilation_h - g.padding_h;
        long long iw = ow * g.stride_w + kj * g.dilation_w - g.padding_w;
        bool inside = ih >= 0 && ih < g.in_h && iw >= 0 && iw < g.in_w;
        cols[i] = inside ? x[(((g.first + s) * g.in_channels + c) * g.in_h + ih) * g.in_w + iw] : T(0);
    }
}

// The adjoint: x[first + s, c, ih, iw] = sum of the column entries that im2col copied it to.
// Written as a gather (each image element sums its own entries) so that it needs no atomics
// and adds in a fixed order.
template <typename T> __device__ void col2im(const T *__restrict__ cols, T *__restrict__ x, ConvShape g) {
    const long long P = g.out_h * g.out_w, columns = g.samples * P;
    const long long total = g.samples * g.in_channels * g.in_h * g.in_w;
    for (long long i = grid_index(); i < total; i += grid_stride()) {
        long long iw = i % g.in_w, ih = (i / g.in_w) % g.in_h;
        long long c = (i / (g.in_w * g.in_h)) % g.in_channels, s = i / (g.in_w * g.in_h * g.in_channels);
        T sum = T(0);
        for (long long ki = 0; ki < g.kernel_h; ++ki) {
            long long top = ih + g.padding_h - ki * g.dilation_h;  // = oh * stride_h
            if (top < 0 || top % g.stride_h != 0) continue;
            long long oh = top / g.stride_h;
            if (oh >= g.out_h) continue;
            for (long long kj = 0; kj < g.kernel_w; ++kj) {
                long long left = iw + g.padding_w - kj * g.dilation_w;
                if (left < 0 || left % g.stride_w != 0) continue;
                long long ow = left / g.stride_w;
                if (ow >= g.out_w) continue;
                long long row = (c * g.kernel_h + ki) * g.kernel_w + kj;
                sum += cols[row * columns + s * P + oh * g.out_w + ow];
            }
        }
        x[(((g.first + s) * g.in_channels + c) * g.in_h + ih) * g.in_w + iw] = sum;
    }
}

extern "C" {
__global__ void im2col_f32(const float *x, float *cols, ConvShape g) { im2col(x, cols, g); }
__global__ void im2col_f64(const double *x, double *cols, ConvShape g) { im2col(x, cols, g); }
__global__ void col2im_f32(const float *cols, float *x, ConvShape g) { col2im(cols, x, g); }
__global__ void col2im_f64(const double *cols, double *x, ConvShape g) { col2im(cols, x, g); }
}
