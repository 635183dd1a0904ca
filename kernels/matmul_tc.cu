// Matrix multiplication on the tensor cores: `C = A B` with A and B in bf16 (or f16) and the
// sums in f32, batched, either operand read through its strides (transposes cost no copies),
// any m, n and k. `matmul_tc_bf16` (`_f16`) rounds C to the inputs' type once at the end (what
// the CPU's half rule gives, up to the order of the f32 sums); `matmul_tc_bf16_f32`
// (`matmul_tc_f16_f32`) writes C in f32.
// Checked in crates/kernels/tests/tensor_cores.rs against the CPU's f32 matmul of the widened
// inputs (crates/kernels/src/cpu/matmul.rs), in the emulator, where the mma instruction is a
// modelled warp-wide operation (mma.cuh); `mma_m16n8k16_bf16_fragments` (`_f16_`) below is there
// to check the instruction alone against a product on the CPU, lane by lane.
//
// A block of 128 threads (4 warps, 2 x 2) computes a 64 x 64 tile of C; each warp owns 32 x 32
// of it: 2 x 4 tiles of m16n8, each accumulated by mma_m16n8k16_bf16 (_f16) in registers. The k
// dimension is walked in slices of 32 (two mma steps of 16): each slice of A (64 x 32) and of B
// (32 x 64, staged transposed, as 64 columns of 32) is staged in shared memory as 16-bit pairs
// along k, one 32-bit word each, which is how the fragments hold them, so that each fragment
// register is one shared-memory read. Rows are padded to 20 words: the 8 rows x 4 words that a
// warp reads for one fragment fall in 32 different banks. Loads past the edge of A or B stage
// zeros (rows, columns and k alike), so any size works; C is written only within its bounds.
// blockIdx.z is the batch.
//
// A first version: scalar 16-bit global loads, no double buffering, no ldmatrix.

#include "common.cuh"
#include "half.cuh"
#include "mma.cuh"

#define TC_TILE 64                     // rows and columns of C per block
#define TC_SLICE 32                    // k per shared-memory slice
#define TC_PAIRS (TC_SLICE / 2)        // bf16 pairs (32-bit words) per staged row of a slice
#define TC_ROW_WORDS (TC_PAIRS + 4)    // with the padding that spreads fragment reads over banks
#define TC_THREADS 128                 // 4 warps
#define TC_WARP_TILE 32                // rows and columns of C per warp

// Stage rows [row0, row0 + TC_TILE) and k [k0, k0 + TC_SLICE) of an operand seen as `rows x k`
// (element (r, kk) at `src[r * row_stride + kk * k_stride]`) into `tile`: word p of row r holds
// k0 + 2p in its low 16 bits and k0 + 2p + 1 in its high ones; zeros past any edge.
// Neighbouring threads read neighbouring addresses: along k when k is contiguous, along the
// rows otherwise.
__device__ void stage_slice(unsigned (*tile)[TC_ROW_WORDS], const unsigned short *__restrict__ src, long long row0,
                            long long rows, long long row_stride, long long k0, long long k, long long k_stride) {
    const bool k_contiguous = k_stride == 1;
    for (int e = threadIdx.x; e < TC_TILE * TC_PAIRS; e += TC_THREADS) {
        const int r = k_contiguous ? e / TC_PAIRS : e % TC_TILE;
        const int p = k_contiguous ? e % TC_PAIRS : e / TC_TILE;
        const long long gr = row0 + r, gk = k0 + 2 * p;
        unsigned low = 0, high = 0;
        if (gr < rows) {
            if (gk < k) low = src[gr * row_stride + gk * k_stride];
            if (gk + 1 < k) high = src[gr * row_stride + (gk + 1) * k_stride];
        }
        tile[r][p] = low | (high << 16);
    }
}

// C in f32, or rounded once to the inputs' 16-bit type.
template <typename Inputs> __device__ __forceinline__ void store_element(float *c, long long at, float value) {
    c[at] = value;
}
template <typename Inputs>
__device__ __forceinline__ void store_element(unsigned short *c, long long at, float value) {
    c[at] = Inputs::round(value);
}

template <typename Inputs, typename Out>
__device__ void matmul_tc(const unsigned short *__restrict__ a, const unsigned short *__restrict__ b,
                          Out *__restrict__ c, MatmulShape s) {
    __shared__ unsigned a_tile[TC_TILE][TC_ROW_WORDS];  // 64 rows of A, a slice of k each
    __shared__ unsigned b_tile[TC_TILE][TC_ROW_WORDS];  // 64 columns of B, a slice of k each
    const long long batch = blockIdx.z;
    a += batch * s.a_batch_stride;
    b += batch * s.b_batch_stride;
    c += batch * s.m * s.n;
    const long long row0 = (long long)blockIdx.y * TC_TILE, col0 = (long long)blockIdx.x * TC_TILE;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int group = lane / 4, in_group = lane % 4;  // g and t of mma.cuh's fragment layout
    const int warp_row = (warp / 2) * TC_WARP_TILE, warp_col = (warp % 2) * TC_WARP_TILE;

    float acc[2][4][4];  // [m16 tile][n8 tile][c fragment]
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

    for (long long k0 = 0; k0 < s.k; k0 += TC_SLICE) {
        stage_slice(a_tile, a, row0, s.m, s.a_row_stride, k0, s.k, s.a_col_stride);
        // B's column n is a row of the staged tile: rows stride by B's column stride.
        stage_slice(b_tile, b, col0, s.n, s.b_col_stride, k0, s.k, s.b_row_stride);
        __syncthreads();
        mma_warp_slice<Inputs, TC_PAIRS, TC_ROW_WORDS>(acc, a_tile, b_tile, warp_row, warp_col, group, in_group);
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const long long r = row0 + warp_row + 16 * i + group + 8 * (e / 2);
                const long long col = col0 + warp_col + 8 * j + 2 * in_group + e % 2;
                if (r < s.m && col < s.n) store_element<Inputs>(c, r * s.n + col, acc[i][j][e]);
            }
}

// One warp, one mma: each lane's fragment registers as they are, lane-major (`a`: 32 x 4
// words, `b`: 32 x 2, `c` and `d`: 32 x 4 floats), so that a test can lay out A, B and C by the
// PTX ISA's table on the CPU and read D back the same way. Launched with one block of 32.
template <typename Inputs>
__device__ void mma_fragments(const unsigned *a, const unsigned *b, const float *c, float *d) {
    const int lane = threadIdx.x % 32;
    unsigned a_frag[4], b_frag[2];
    float c_frag[4], d_frag[4];
    for (int i = 0; i < 4; ++i) a_frag[i] = a[4 * lane + i], c_frag[i] = c[4 * lane + i];
    for (int i = 0; i < 2; ++i) b_frag[i] = b[2 * lane + i];
    Inputs::mma(d_frag, a_frag, b_frag, c_frag);
    for (int i = 0; i < 4; ++i) d[4 * lane + i] = d_frag[i];
}

extern "C" {
__global__ void matmul_tc_bf16(const unsigned short *a, const unsigned short *b, unsigned short *c, MatmulShape s) {
    matmul_tc<Bf16Inputs>(a, b, c, s);
}
__global__ void matmul_tc_bf16_f32(const unsigned short *a, const unsigned short *b, float *c, MatmulShape s) {
    matmul_tc<Bf16Inputs>(a, b, c, s);
}
__global__ void matmul_tc_f16(const unsigned short *a, const unsigned short *b, unsigned short *c, MatmulShape s) {
    matmul_tc<F16Inputs>(a, b, c, s);
}
__global__ void matmul_tc_f16_f32(const unsigned short *a, const unsigned short *b, float *c, MatmulShape s) {
    matmul_tc<F16Inputs>(a, b, c, s);
}
__global__ void mma_m16n8k16_bf16_fragments(const unsigned *a, const unsigned *b, const float *c, float *d) {
    mma_fragments<Bf16Inputs>(a, b, c, d);
}
__global__ void mma_m16n8k16_f16_fragments(const unsigned *a, const unsigned *b, const float *c, float *d) {
    mma_fragments<F16Inputs>(a, b, c, d);
}
}
