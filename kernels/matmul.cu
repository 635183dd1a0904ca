// Matrix multiplication `C = A B`, batched, with either operand read through its strides, so
// that transposes cost no copies. CPU twin: crates/kernels/src/cpu/matmul.rs (`matmul`).
//
// Tiled in shared memory with register blocking: a block of 16 x 16 threads computes a
// 64 x 64 tile of C; each thread owns a 4 x 4 sub-tile, spread out with a stride of 16 so
// that neighbouring threads read neighbouring shared-memory words. The k dimension is walked
// in slices of 16: each slice of A (64 x 16) and B (16 x 64) is staged in shared memory by
// all 256 threads, then every thread does 4 x 4 x 16 multiply-adds from it. Loads past the
// edge of A or B read zeros, so any size works. blockIdx.z is the batch.

#include "common.cuh"

#define TILE 64
#define SLICE 16
#define THREADS_PER_SIDE 16
#define PER_THREAD 4  // TILE / THREADS_PER_SIDE

template <typename T> __device__ void matmul(const T *__restrict__ a, const T *__restrict__ b, T *__restrict__ c, MatmulShape s) {
    // +1 column of padding: the transposed stores of A below then hit different banks.
    __shared__ T a_tile[SLICE][TILE + 1];
    __shared__ T b_tile[SLICE][TILE + 1];
    const long long batch = blockIdx.z;
    a += batch * s.a_batch_stride;
    b += batch * s.b_batch_stride;
    c += batch * s.m * s.n;
    const int tx = threadIdx.x % THREADS_PER_SIDE, ty = threadIdx.x / THREADS_PER_SIDE;
    const long long row0 = (long long)blockIdx.y * TILE, col0 = (long long)blockIdx.x * TILE;

    T acc[PER_THREAD][PER_THREAD];
    for (int i = 0; i < PER_THREAD; ++i)
        for (int j = 0; j < PER_THREAD; ++j) acc[i][j] = T(0);

    for (long long k0 = 0; k0 < s.k; k0 += SLICE) {
        // 256 threads stage 64 x 16 elements of each operand: 4 each.
        for (int e = threadIdx.x; e < TILE * SLICE; e += THREADS_PER_SIDE * THREADS_PER_SIDE) {
            int r = e / SLICE, kk = e % SLICE;  // A: row r of the tile, column kk of the slice
            long long gr = row0 + r, gk = k0 + kk;
            a_tile[kk][r] = (gr < s.m && gk < s.k) ? a[gr * s.a_row_stride + gk * s.a_col_stride] : T(0);
            int kb = e / TILE, cc = e % TILE;  // B: row kb of the slice, column cc of the tile
            long long gkb = k0 + kb, gc = col0 + cc;
            b_tile[kb][cc] = (gkb < s.k && gc < s.n) ? b[gkb * s.b_row_stride + gc * s.b_col_stride] : T(0);
        }
        __syncthreads();
        for (int kk = 0; kk < SLICE; ++kk) {
            T a_reg[PER_THREAD], b_reg[PER_THREAD];
            for (int i = 0; i < PER_THREAD; ++i) a_reg[i] = a_tile[kk][ty + i * THREADS_PER_SIDE];
            for (int j = 0; j < PER_THREAD; ++j) b_reg[j] = b_tile[kk][tx + j * THREADS_PER_SIDE];
            for (int i = 0; i < PER_THREAD; ++i)
                for (int j = 0; j < PER_THREAD; ++j) acc[i][j] += a_reg[i] * b_reg[j];
        }
        __syncthreads();
    }
    for (int i = 0; i < PER_THREAD; ++i) {
        long long r = row0 + ty + i * THREADS_PER_SIDE;
        if (r >= s.m) continue;
        for (int j = 0; j < PER_THREAD; ++j) {
            long long col = col0 + tx + j * THREADS_PER_SIDE;
            if (col < s.n) c[r * s.n + col] = acc[i][j];
        }
    }
}

extern "C" {
__global__ void matmul_f32(const float *a, const float *b, float *c, MatmulShape s) { matmul(a, b, c, s); }
__global__ void matmul_f64(const double *a, const double *b, double *c, MatmulShape s) { matmul(a, b, c, s); }
}
