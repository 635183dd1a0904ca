// Matrix multiplication `C = A B`, batched, with either operand read through its strides, so
// that transposes cost no copies, in f32 and f64. CPU twin: crates/kernels/src/cpu/matmul.rs.
// Three versions; `crates/kernels/src/cuda/matmul.rs` chooses one per problem:
//
// - `matmul_tiled`: the fast one, for every problem whose offsets within a tile fit 32 bits.
//   128 x 128 outputs per block of 256 threads, 8 x 8 per thread held in registers; k in
//   slices (16 in f32, 8 in f64) staged in shared memory by `cp.async` into two buffers, so
//   that the copies of slice t + 1 run while slice t is multiplied; 16-byte copies where the
//   staged rows are contiguous and aligned, 4- or 8-byte ones elsewhere; 128-bit shared reads.
//   `matmul_tiled_a_rows` is the same for A as is (k contiguous, the common case): A staged as
//   rows along k, so that its copies are 16 bytes too (`matmul_tiled` stages both k-major).
// - `gemv_rows`, `gemv_columns`: N = 1 or M = 1 (a matrix times a vector), which is memory
//   bound and would leave 127 of a tile's 128 rows idle: one warp per output, reading rows
//   contiguous along k, with a shuffle sum in a fixed order; or one thread per output, when
//   the outputs are the contiguous direction.
// - `matmul_plain`: the first version, kept for problems whose sizes or strides are too large
//   for the tiled kernel's 32-bit offsets: 64 x 64 tiles, 4 x 4 per thread, 64-bit indices.
//
// Every version reads zeros past the edges of A and B, so any M, N, K works; blockIdx.z is the
// batch. Tests: `cargo test -p earthmover-kernels --features emulator --test cuda_kernels
// matmul` (every version against the CPU on odd sizes, each transpose, batched, f32 and f64).

#include "common.cuh"
#include "async_copy.cuh"

// ---------------------------------------------------------------------------------------------
// matmul_tiled

#define TILED_TILE 128    // rows of C (and A) and columns of C (and B) per block
#define TILED_HALF 64     // a thread's 8 rows are 4 in each half of the tile, as are its columns
#define TILED_THREADS 256 // 16 x 16, each 8 x 8 outputs
// Shared rows are padded by 4 elements: a row stays a multiple of 16 bytes (128-bit reads),
// and the element copies of a warp, 8 or 16 consecutive k of 4 or 2 columns, spread over the
// banks instead of landing in one.
#define TILED_ROW (TILED_TILE + 4)

template <typename T> struct TiledSlice;
// f32: two buffers of A and B, 16 x 132 floats each: 33 KiB of shared memory (37 KiB with A
// as 128 rows of 20 floats, matmul_tiled_a_rows).
template <> struct TiledSlice<float> {
    static constexpr int K = 16;
};
// f64: 8 x 132 doubles, the same 33 KiB (41 KiB with A as rows of 12 doubles; under the 48 KiB
// a block has without opting in).
template <> struct TiledSlice<double> {
    static constexpr int K = 8;
};

__device__ __forceinline__ bool aligned_16(const void *p) { return ((unsigned long long)p & 15ull) == 0; }

// Stage one slice of an operand's tile in shared memory: tile[kk][x] = the element at
// origin + x * x_stride + kk * k_stride (x along the tile's 128 rows of A or columns of B, kk
// along k), for x < x_left and kk < k_left, and zero past them. Every thread of the block
// calls it. With `vectors` (x_stride 1, every 16-byte group aligned) whole 16-byte groups are
// copied at once; otherwise element by element, consecutive threads on consecutive addresses
// of whichever direction is contiguous in memory, so that a warp's reads coalesce.
template <typename T, int SLICE>
__device__ __forceinline__ void stage_slice(T (*tile)[TILED_ROW], const T *origin, int x_stride, int k_stride,
                                            int x_left, int k_left, bool vectors) {
    constexpr int PER_VECTOR = 16 / sizeof(T);
    if (vectors) {
        constexpr int VECTORS_PER_ROW = TILED_TILE / PER_VECTOR;
        // Rolled: unrolled, the precomputed offsets of every copy of both operands stay live
        // across the k loop (f32: 197 registers instead of 119, one block per SM instead of two).
#pragma unroll 1
        for (int i = 0; i < SLICE * VECTORS_PER_ROW / TILED_THREADS; ++i) {
            const int v = threadIdx.x + i * TILED_THREADS;
            const int kk = v / VECTORS_PER_ROW, x = (v % VECTORS_PER_ROW) * PER_VECTOR;
            T *dst = &tile[kk][x];
            const T *src = origin + kk * k_stride + x;
            if (kk < k_left && x + PER_VECTOR <= x_left) {
                async_copy<16>(dst, src);
            } else {
                for (int e = 0; e < PER_VECTOR; ++e) {
                    if (kk < k_left && x + e < x_left) async_copy<sizeof(T)>(dst + e, src + e);
                    else dst[e] = T(0);
                }
            }
        }
    } else {
        const bool k_fastest = k_stride == 1;
#pragma unroll 1  // as above
        for (int i = 0; i < SLICE * TILED_TILE / TILED_THREADS; ++i) {
            const int e = threadIdx.x + i * TILED_THREADS;
            const int kk = k_fastest ? e % SLICE : e / TILED_TILE;
            const int x = k_fastest ? e / SLICE : e % TILED_TILE;
            if (kk < k_left && x < x_left) async_copy<sizeof(T)>(&tile[kk][x], origin + x * x_stride + kk * k_stride);
            else tile[kk][x] = T(0);
        }
    }
}

// Stage one slice of A as rows along k: rows[x][kk] = the element at origin + x * x_stride + kk
// (A as is: k contiguous), zero past x_left and k_left. With `vectors` (x_stride and every
// 16-byte group aligned) 16 bytes of a row at once; otherwise element by element, consecutive
// threads on consecutive k.
template <typename T, int SLICE>
__device__ __forceinline__ void stage_rows(T (*rows)[SLICE + 4], const T *origin, int x_stride, int x_left, int k_left,
                                           bool vectors) {
    constexpr int PER_VECTOR = 16 / sizeof(T);
    if (vectors) {
        constexpr int VECTORS_PER_ROW = SLICE / PER_VECTOR;
#pragma unroll 1  // as in stage_slice
        for (int i = 0; i < TILED_TILE * VECTORS_PER_ROW / TILED_THREADS; ++i) {
            const int v = threadIdx.x + i * TILED_THREADS;
            const int x = v / VECTORS_PER_ROW, kk = (v % VECTORS_PER_ROW) * PER_VECTOR;
            T *dst = &rows[x][kk];
            const T *src = origin + x * x_stride + kk;
            if (x < x_left && kk + PER_VECTOR <= k_left) {
                async_copy<16>(dst, src);
            } else {
                for (int e = 0; e < PER_VECTOR; ++e) {
                    if (x < x_left && kk + e < k_left) async_copy<sizeof(T)>(dst + e, src + e);
                    else dst[e] = T(0);
                }
            }
        }
    } else {
#pragma unroll 1
        for (int i = 0; i < SLICE * TILED_TILE / TILED_THREADS; ++i) {
            const int e = threadIdx.x + i * TILED_THREADS;
            const int kk = e % SLICE, x = e / SLICE;
            if (kk < k_left && x < x_left) async_copy<sizeof(T)>(&rows[x][kk], origin + x * x_stride + kk);
            else rows[x][kk] = T(0);
        }
    }
}

// The caller (cuda/matmul.rs) guarantees m, n, k < 2^30 and every stride times 256 < 2^31, so
// that offsets within a tile and the step from one slice to the next are 32-bit; the block's
// origin and C's rows are 64-bit.
template <typename T, bool A_ROWS>
__device__ void matmul_tiled(const T *__restrict__ a, const T *__restrict__ b, T *__restrict__ c, MatmulShape s) {
    constexpr int SLICE = TiledSlice<T>::K;
    constexpr int PER_VECTOR = 16 / sizeof(T);
    // Slice t lives in buffer t % 2. k-major in both: a thread's 4 + 4 rows of A (columns of
    // B) at one k are two 16-byte groups.
    // A_ROWS (A as is, rows contiguous along k): A staged as rows along k instead, so that
    // its copies are 16 bytes too; a thread then reads 4 k of each of its rows at once.
    constexpr int A_ELEMENTS = A_ROWS ? TILED_TILE * (SLICE + 4) : SLICE * TILED_ROW;
    __shared__ __align__(16) T a_store[2][A_ELEMENTS];
    __shared__ __align__(16) T b_tiles[2][SLICE][TILED_ROW];

    const int m = int(s.m), n = int(s.n), k = int(s.k);
    const int a_row_stride = int(s.a_row_stride), a_col_stride = int(s.a_col_stride);
    const int b_row_stride = int(s.b_row_stride), b_col_stride = int(s.b_col_stride);
    const int row0 = blockIdx.y * TILED_TILE, col0 = blockIdx.x * TILED_TILE;
    const long long batch = blockIdx.z;
    const T *a_slice = a + batch * s.a_batch_stride + (long long)row0 * s.a_row_stride;
    const T *b_slice = b + batch * s.b_batch_stride + (long long)col0 * s.b_col_stride;
    // 16-byte copies: the staged rows contiguous in memory (A as is with A_ROWS, else A read
    // transposed; B as is) and every 16-byte group of the operand aligned, in every batch and
    // slice.
    const bool a_vectors = (A_ROWS ? a_col_stride == 1 && a_row_stride % PER_VECTOR == 0
                                   : a_row_stride == 1 && a_col_stride % PER_VECTOR == 0) &&
                           s.a_batch_stride % PER_VECTOR == 0 && aligned_16(a);
    auto stage_a = [&](int buffer, const T *origin, int k_left) {
        if (A_ROWS) {
            T(*rows)[SLICE + 4] = reinterpret_cast<T(*)[SLICE + 4]>(a_store[buffer]);
            stage_rows<T, SLICE>(rows, origin, a_row_stride, m - row0, k_left, a_vectors);
        } else {
            T(*tile)[TILED_ROW] = reinterpret_cast<T(*)[TILED_ROW]>(a_store[buffer]);
            stage_slice<T, SLICE>(tile, origin, a_row_stride, a_col_stride, m - row0, k_left, a_vectors);
        }
    };
    const bool b_vectors = b_col_stride == 1 && b_row_stride % PER_VECTOR == 0 && s.b_batch_stride % PER_VECTOR == 0 &&
                           aligned_16(b);

    T acc[8][8];
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = T(0);

    const int slices = (k + SLICE - 1) / SLICE;
    stage_a(0, a_slice, k);
    stage_slice<T, SLICE>(b_tiles[0], b_slice, b_col_stride, b_row_stride, n - col0, k, b_vectors);
    async_copy_commit();
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    for (int t = 0; t < slices; ++t) {
        const int buffer = t & 1;
        if (t + 1 < slices) {
            // The other buffer was last read in iteration t - 1, before its closing barrier.
            a_slice += SLICE * a_col_stride;
            b_slice += SLICE * b_row_stride;
            const int k_left = k - (t + 1) * SLICE;
            stage_a(buffer ^ 1, a_slice, k_left);
            stage_slice<T, SLICE>(b_tiles[buffer ^ 1], b_slice, b_col_stride, b_row_stride, n - col0, k_left, b_vectors);
        }
        // Always a group (empty after the last slice), so that waiting for all but the newest
        // one is waiting for slice t's.
        async_copy_commit();
        async_copy_wait<1>();
        __syncthreads();  // every thread's copies of slice t have arrived
        if (A_ROWS) {
            const T(*a_rows)[SLICE + 4] = reinterpret_cast<const T(*)[SLICE + 4]>(a_store[buffer]);
#pragma unroll
            for (int k4 = 0; k4 < SLICE; k4 += 4) {
                T a_part[8][4];
#pragma unroll
                for (int i = 0; i < 8; ++i)
#pragma unroll
                    for (int v = 0; v < 4; v += PER_VECTOR)
                        load_16_bytes(&a_part[i][v], &a_rows[(i / 4) * TILED_HALF + ty * 4 + i % 4][k4 + v]);
#pragma unroll
                for (int q = 0; q < 4; ++q) {
                    T b_part[8];
#pragma unroll
                    for (int half = 0; half < 2; ++half)
#pragma unroll
                        for (int v = 0; v < 4; v += PER_VECTOR)
                            load_16_bytes(&b_part[half * 4 + v], &b_tiles[buffer][k4 + q][half * TILED_HALF + tx * 4 + v]);
#pragma unroll
                    for (int i = 0; i < 8; ++i)
#pragma unroll
                        for (int j = 0; j < 8; ++j) acc[i][j] += a_part[i][q] * b_part[j];
                }
            }
        } else {
            const T(*a_tiles)[TILED_ROW] = reinterpret_cast<const T(*)[TILED_ROW]>(a_store[buffer]);
#pragma unroll
        for (int kk = 0; kk < SLICE; ++kk) {
            T a_part[8], b_part[8];
#pragma unroll
            for (int half = 0; half < 2; ++half)
#pragma unroll
                for (int v = 0; v < 4; v += PER_VECTOR) {
                    load_16_bytes(&a_part[half * 4 + v], &a_tiles[kk][half * TILED_HALF + ty * 4 + v]);
                    load_16_bytes(&b_part[half * 4 + v], &b_tiles[buffer][kk][half * TILED_HALF + tx * 4 + v]);
                }
#pragma unroll
            for (int i = 0; i < 8; ++i)
#pragma unroll
                for (int j = 0; j < 8; ++j) acc[i][j] += a_part[i] * b_part[j];
        }
        }
        __syncthreads();  // every thread is done with `buffer` before slice t + 2 is staged in it
    }

    // Row i of the thread is row (i / 4) * 64 + ty * 4 + i % 4 of the tile; likewise columns.
    c += batch * s.m * s.n;
    const bool c_vectors = n % PER_VECTOR == 0 && aligned_16(c);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const int row = row0 + (i / 4) * TILED_HALF + ty * 4 + i % 4;
        if (row >= m) continue;
        T *c_row = c + (long long)row * n;
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int col = col0 + half * TILED_HALF + tx * 4;
            if (c_vectors && col + 4 <= n) {
#pragma unroll
                for (int v = 0; v < 4; v += PER_VECTOR) store_16_bytes(c_row + col + v, &acc[i][half * 4 + v]);
            } else {
#pragma unroll
                for (int j = 0; j < 4; ++j)
                    if (col + j < n) c_row[col + j] = acc[i][half * 4 + j];
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// gemv_rows, gemv_columns: out[i] = sum over kk of X[i, kk] v[kk], for i < s.m, with X read
// through (a_row_stride, a_col_stride, a_batch_stride) and v through (b_row_stride,
// b_batch_stride); `out` is contiguous, s.m per batch. cuda/matmul.rs maps N = 1 (X = A,
// v = B's column) and M = 1 (X = B transposed, v = A's row) onto it.

#define GEMV_THREADS 256

// One warp per output: lane l sums k = l, l + 32, ... in order, then a shuffle tree in a fixed
// order, so the result does not depend on timing. For X's rows contiguous along k.
template <typename T> __device__ void gemv_rows(const T *__restrict__ x, const T *__restrict__ v, T *__restrict__ out, MatmulShape s) {
    const int lane = threadIdx.x % 32;
    const long long row = (long long)blockIdx.x * (GEMV_THREADS / 32) + threadIdx.x / 32;
    if (row >= s.m) return;  // the whole warp: its lanes share the row
    const long long batch = blockIdx.z;
    const T *x_at = x + batch * s.a_batch_stride + row * s.a_row_stride + lane * s.a_col_stride;
    const T *v_at = v + batch * s.b_batch_stride + lane * s.b_row_stride;
    const long long x_step = 32 * s.a_col_stride, v_step = 32 * s.b_row_stride;
    T sum = T(0);
    for (long long kk = lane; kk < s.k; kk += 32, x_at += x_step, v_at += v_step) sum += *x_at * *v_at;
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(0xffffffffu, sum, offset);
    if (lane == 0) out[batch * s.m + row] = sum;
}

// One thread per output, k in order: for X's columns contiguous along the outputs, where a
// warp then reads 32 neighbouring elements per k.
template <typename T>
__device__ void gemv_columns(const T *__restrict__ x, const T *__restrict__ v, T *__restrict__ out, MatmulShape s) {
    const long long row = (long long)blockIdx.x * GEMV_THREADS + threadIdx.x;
    if (row >= s.m) return;
    const long long batch = blockIdx.z;
    const T *x_at = x + batch * s.a_batch_stride + row * s.a_row_stride;
    const T *v_at = v + batch * s.b_batch_stride;
    T sum = T(0);
    for (long long kk = 0; kk < s.k; ++kk, x_at += s.a_col_stride, v_at += s.b_row_stride) sum += *x_at * *v_at;
    out[batch * s.m + row] = sum;
}

// ---------------------------------------------------------------------------------------------
// matmul_plain: the first version, for strides past the tiled kernel's 32-bit offsets. A block
// of 16 x 16 threads computes a 64 x 64 tile of C; each thread owns a 4 x 4 sub-tile, spread
// with a stride of 16 so that neighbouring threads read neighbouring shared words; k in slices
// of 16 staged in shared memory by all 256 threads.

#define PLAIN_TILE 64
#define PLAIN_SLICE 16
#define PLAIN_SIDE 16     // threads per side of the block
#define PLAIN_PER_SIDE 4  // PLAIN_TILE / PLAIN_SIDE

template <typename T> __device__ void matmul_plain(const T *__restrict__ a, const T *__restrict__ b, T *__restrict__ c, MatmulShape s) {
    // +1 column of padding: the transposed stores of A below then hit different banks.
    __shared__ T a_tile[PLAIN_SLICE][PLAIN_TILE + 1];
    __shared__ T b_tile[PLAIN_SLICE][PLAIN_TILE + 1];
    const long long batch = blockIdx.z;
    a += batch * s.a_batch_stride;
    b += batch * s.b_batch_stride;
    c += batch * s.m * s.n;
    const int tx = threadIdx.x % PLAIN_SIDE, ty = threadIdx.x / PLAIN_SIDE;
    const long long row0 = (long long)blockIdx.y * PLAIN_TILE, col0 = (long long)blockIdx.x * PLAIN_TILE;

    T acc[PLAIN_PER_SIDE][PLAIN_PER_SIDE];
    for (int i = 0; i < PLAIN_PER_SIDE; ++i)
        for (int j = 0; j < PLAIN_PER_SIDE; ++j) acc[i][j] = T(0);

    for (long long k0 = 0; k0 < s.k; k0 += PLAIN_SLICE) {
        for (int e = threadIdx.x; e < PLAIN_TILE * PLAIN_SLICE; e += PLAIN_SIDE * PLAIN_SIDE) {
            int r = e / PLAIN_SLICE, kk = e % PLAIN_SLICE;  // A: row r of the tile, column kk of the slice
            long long gr = row0 + r, gk = k0 + kk;
            a_tile[kk][r] = (gr < s.m && gk < s.k) ? a[gr * s.a_row_stride + gk * s.a_col_stride] : T(0);
            int kb = e / PLAIN_TILE, cc = e % PLAIN_TILE;  // B: row kb of the slice, column cc of the tile
            long long gkb = k0 + kb, gc = col0 + cc;
            b_tile[kb][cc] = (gkb < s.k && gc < s.n) ? b[gkb * s.b_row_stride + gc * s.b_col_stride] : T(0);
        }
        __syncthreads();
        for (int kk = 0; kk < PLAIN_SLICE; ++kk) {
            T a_reg[PLAIN_PER_SIDE], b_reg[PLAIN_PER_SIDE];
            for (int i = 0; i < PLAIN_PER_SIDE; ++i) a_reg[i] = a_tile[kk][ty + i * PLAIN_SIDE];
            for (int j = 0; j < PLAIN_PER_SIDE; ++j) b_reg[j] = b_tile[kk][tx + j * PLAIN_SIDE];
            for (int i = 0; i < PLAIN_PER_SIDE; ++i)
                for (int j = 0; j < PLAIN_PER_SIDE; ++j) acc[i][j] += a_reg[i] * b_reg[j];
        }
        __syncthreads();
    }
    for (int i = 0; i < PLAIN_PER_SIDE; ++i) {
        long long r = row0 + ty + i * PLAIN_SIDE;
        if (r >= s.m) continue;
        for (int j = 0; j < PLAIN_PER_SIDE; ++j) {
            long long col = col0 + tx + j * PLAIN_SIDE;
            if (col < s.n) c[r * s.n + col] = acc[i][j];
        }
    }
}

extern "C" {
__global__ void matmul_tiled_f32(const float *a, const float *b, float *c, MatmulShape s) {
    matmul_tiled<float, false>(a, b, c, s);
}
__global__ void matmul_tiled_f64(const double *a, const double *b, double *c, MatmulShape s) {
    matmul_tiled<double, false>(a, b, c, s);
}
__global__ void matmul_tiled_a_rows_f32(const float *a, const float *b, float *c, MatmulShape s) {
    matmul_tiled<float, true>(a, b, c, s);
}
__global__ void matmul_tiled_a_rows_f64(const double *a, const double *b, double *c, MatmulShape s) {
    matmul_tiled<double, true>(a, b, c, s);
}
__global__ void gemv_rows_f32(const float *x, const float *v, float *out, MatmulShape s) { gemv_rows(x, v, out, s); }
__global__ void gemv_rows_f64(const double *x, const double *v, double *out, MatmulShape s) { gemv_rows(x, v, out, s); }
__global__ void gemv_columns_f32(const float *x, const float *v, float *out, MatmulShape s) { gemv_columns(x, v, out, s); }
__global__ void gemv_columns_f64(const double *x, const double *v, double *out, MatmulShape s) { gemv_columns(x, v, out, s); }
__global__ void matmul_plain_f32(const float *a, const float *b, float *c, MatmulShape s) { matmul_plain(a, b, c, s); }
__global__ void matmul_plain_f64(const double *a, const double *b, double *c, MatmulShape s) { matmul_plain(a, b, c, s); }
}
