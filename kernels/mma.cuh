// The tensor cores' warp-wide matrix multiply-add, as one inline function for both builds:
//
//     mma_m16n8k16_bf16(d, a, b, c):  D (16 x 8, f32) = A (16 x 16, bf16) B (16 x 8, bf16) + C
//     mma_m16n8k16_f16(d, a, b, c):   the same with A and B in f16
//
// Under NVRTC each is the PTX instruction `mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32`
// (or `.f16.f16`; sm_80 and later); in the CPU emulator it is `emulator::mma_m16n8k16_bf16`
// (`_f16`; emulator/cuda_emulator.h), a warp-collective operation that gathers the 32 lanes'
// fragments and computes each lane's share of D from them, with the same fragment layout. So the kernels
// that call it run, and are checked against the CPU, without a GPU.
//
// Every lane of the warp must call it together (`.sync.aligned`), each with its own fragments.
// A lane's fragments, from the PTX ISA ("Matrix Fragments for mma.m16n8k16 with floating point
// type"), with g = lane / 4 (the group) and t = lane % 4 (the thread in the group); each
// 32-bit register of A or B holds two 16-bit values, the lower-indexed one in its low 16 bits:
//
//     a[0] = A[g    ][2t, 2t+1]      a[2] = A[g    ][2t+8, 2t+9]
//     a[1] = A[g + 8][2t, 2t+1]      a[3] = A[g + 8][2t+8, 2t+9]
//     b[0] = B[2t, 2t+1    ][g]      b[1] = B[2t+8, 2t+9][g]        (a column's k-pairs: ".col")
//     c[0], c[1] = C[g    ][2t], C[g    ][2t+1]   (and d likewise)
//     c[2], c[3] = C[g + 8][2t], C[g + 8][2t+1]
//
// Products of two bf16 (or f16) values are exact in f32 and the sums are f32. The order and rounding
// of the hardware's internal sums are not specified, so results may differ from the emulator's
// (c, then k = 0..15 in order, each sum rounded to nearest) in their last bits: tests compare
// with tolerances. `d` may be `c` (accumulate in place).
#pragma once

// The instruction for inputs of `type` (bf16 or f16: the same shape and fragment layout).
#define EARTHMOVER_MMA_M16N8K16(type, d, a, b, c)                                                       \
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." type "." type ".f32 "                       \
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"             \
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])                                        \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), \
                   "f"(c[2]), "f"(c[3]))

__device__ __forceinline__ void mma_m16n8k16_bf16(float d[4], const unsigned a[4], const unsigned b[2],
                                                  const float c[4]) {
#ifdef EARTHMOVER_EMULATOR
    emulator::mma_m16n8k16_bf16(d, a, b, c);
#else
    EARTHMOVER_MMA_M16N8K16("bf16", d, a, b, c);
#endif
}

// The same with f16 inputs (exact products in f32 too: 11 x 11 significand bits).
__device__ __forceinline__ void mma_m16n8k16_f16(float d[4], const unsigned a[4], const unsigned b[2],
                                                 const float c[4]) {
#ifdef EARTHMOVER_EMULATOR
    emulator::mma_m16n8k16_f16(d, a, b, c);
#else
    EARTHMOVER_MMA_M16N8K16("f16", d, a, b, c);
#endif
}

// The two 16-bit input types, for the kernels templated on them (matmul_tc.cu, conv_mma.cu):
// their mma, their exact widening to f32 and their rounding from f32 (half.cuh, which must be
// included before this header).
struct Bf16Inputs {
    static __device__ __forceinline__ void mma(float d[4], const unsigned a[4], const unsigned b[2], const float c[4]) {
        mma_m16n8k16_bf16(d, a, b, c);
    }
    static __device__ __forceinline__ float widen(unsigned short h) { return bf16_to_f32(h); }
    static __device__ __forceinline__ unsigned short round(float x) { return f32_to_bf16(x); }
};
struct F16Inputs {
    static __device__ __forceinline__ void mma(float d[4], const unsigned a[4], const unsigned b[2], const float c[4]) {
        mma_m16n8k16_f16(d, a, b, c);
    }
    static __device__ __forceinline__ float widen(unsigned short h) { return f16_to_f32(h); }
    static __device__ __forceinline__ unsigned short round(float x) { return f32_to_f16(x); }
};

// One staged slice of k (`PAIRS` 16-bit pairs, a multiple of 8) multiplied into a warp's 32 x 32
// block of C, `acc` [m16 tile][n8 tile][c fragment]: the block's 64 rows of A and 64 columns of B
// in shared memory as pairs along k (`[row][ROW_WORDS]`, padded so that the fragment reads fall
// on distinct banks), the warp's rows from `warp_row` and columns from `warp_col`, `group` and
// `in_group` the g and t of the fragment layout above. Shared by matmul_tc.cu and conv_mma.cu,
// whose tiles differ only in how they are staged.
template <typename Inputs, int PAIRS, int ROW_WORDS>
__device__ __forceinline__ void mma_warp_slice(float acc[2][4][4], const unsigned (*a_tile)[ROW_WORDS],
                                               const unsigned (*b_tile)[ROW_WORDS], int warp_row, int warp_col,
                                               int group, int in_group) {
#pragma unroll
    for (int step = 0; step < PAIRS; step += 8) {  // 16 of k: 8 pairs
        unsigned a_frag[2][4], b_frag[4][2];
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const unsigned *upper = a_tile[warp_row + 16 * i + group];
            const unsigned *lower = a_tile[warp_row + 16 * i + group + 8];
            a_frag[i][0] = upper[step + in_group];
            a_frag[i][1] = lower[step + in_group];
            a_frag[i][2] = upper[step + in_group + 4];
            a_frag[i][3] = lower[step + in_group + 4];
        }
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const unsigned *column = b_tile[warp_col + 8 * j + group];
            b_frag[j][0] = column[step + in_group];
            b_frag[j][1] = column[step + in_group + 4];
        }
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) Inputs::mma(acc[i][j], a_frag[i], b_frag[j], acc[i][j]);
    }
}
