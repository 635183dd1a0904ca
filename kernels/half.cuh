// The 16-bit floats: conversions (bf16 and f16 to and from f32), shared by the cast kernels
// (elementwise.cu) and the tensor-core matmul's output (matmul_tc.cu), and the types and
// load/store helpers through which the elementwise, reduction and layout kernels handle them.
// Include after common.cuh.
#pragma once

// 16-bit floats are stored as their bits (`unsigned short`): the conversions below are integer
// arithmetic, so NVRTC and the emulator's C++ give the same bits, and both match the `half`
// crate's on the CPU (round to nearest-even; a NaN stays a quiet NaN of the same sign).
__device__ __forceinline__ unsigned int float_bits(float x) {
#ifdef EARTHMOVER_EMULATOR
    unsigned int bits;
    std::memcpy(&bits, &x, sizeof bits);
    return bits;
#else
    return __float_as_uint(x);
#endif
}
__device__ __forceinline__ float bits_float(unsigned int bits) {
#ifdef EARTHMOVER_EMULATOR
    float x;
    std::memcpy(&x, &bits, sizeof x);
    return x;
#else
    return __uint_as_float(bits);
#endif
}

// bf16 is f32's top half: round the lower 16 bits away, to nearest-even.
__device__ __forceinline__ unsigned short f32_to_bf16(float x) {
    const unsigned int bits = float_bits(x);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((bits >> 16) | 0x0040u);
    return (unsigned short)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}
__device__ __forceinline__ float bf16_to_f32(unsigned short h) { return bits_float((unsigned int)h << 16); }

// f16: 5 exponent bits (bias 15), 10 mantissa bits; below 2^-14 it is subnormal.
__device__ __forceinline__ unsigned short f32_to_f16(float x) {
    const unsigned int bits = float_bits(x);
    const unsigned int sign = (bits >> 16) & 0x8000u;
    const unsigned int exponent = (bits >> 23) & 0xffu;
    unsigned int mantissa = bits & 0x7fffffu;
    if (exponent == 0xffu)  // infinity, or NaN (kept quiet, with the mantissa's top bits)
        return (unsigned short)(sign | 0x7c00u | (mantissa ? 0x0200u | (mantissa >> 13) : 0u));
    const int e = (int)exponent - 127 + 15;
    if (e >= 0x1f) return (unsigned short)(sign | 0x7c00u);  // too large: infinity
    if (e <= 0) {                                             // subnormal in f16, or zero
        if (14 - e > 24) return (unsigned short)sign;
        mantissa |= 0x800000u;  // the implicit leading bit
        const int shift = 14 - e;
        unsigned int half_mantissa = mantissa >> shift;
        const unsigned int round_bit = 1u << (shift - 1);
        // Round up when past halfway, or at halfway with an odd result (to even).
        if ((mantissa & round_bit) && (mantissa & (3u * round_bit - 1u))) half_mantissa += 1u;
        return (unsigned short)(sign | half_mantissa);
    }
    const unsigned int rounded = sign | ((unsigned int)e << 10) | (mantissa >> 13);
    const unsigned int round_bit = 0x1000u;
    // A carry out of the mantissa moves into the exponent, which is the right result (up to
    // infinity).
    if ((mantissa & round_bit) && (mantissa & (3u * round_bit - 1u))) return (unsigned short)(rounded + 1u);
    return (unsigned short)rounded;
}
__device__ __forceinline__ float f16_to_f32(unsigned short h) {
    const unsigned int sign = ((unsigned int)h & 0x8000u) << 16;
    const unsigned int exponent = ((unsigned int)h >> 10) & 0x1fu;
    const unsigned int mantissa = (unsigned int)h & 0x3ffu;
    if (exponent == 0x1fu) return bits_float(sign | 0x7f800000u | (mantissa << 13));
    if (exponent == 0u) {  // zero or subnormal: mantissa * 2^-24, exact in f32
        const float magnitude = (float)mantissa * 5.9604644775390625e-8f;
        return sign ? -magnitude : magnitude;
    }
    return bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

// A 16-bit float in a kernel's buffers, by its bits; the type says which format. The kernels
// of elementwise.cu, reduce.cu and layout.cu instantiate their templates for these as for
// float and double, computing in `MathOf<T>::Type`: f32 for both 16-bit formats (the half
// rule: widened exactly on load, rounded once to nearest-even on store, so a kernel's result
// is bit for bit the f32 kernel's between two casts).
struct Bf16 {
    unsigned short bits;
};
struct F16 {
    unsigned short bits;
};

template <typename T> struct MathOf {
    using Type = T;
};
template <> struct MathOf<Bf16> {
    using Type = float;
};
template <> struct MathOf<F16> {
    using Type = float;
};

__device__ __forceinline__ float widen(float x) { return x; }
__device__ __forceinline__ double widen(double x) { return x; }
__device__ __forceinline__ float widen(Bf16 x) { return bf16_to_f32(x.bits); }
__device__ __forceinline__ float widen(F16 x) { return f16_to_f32(x.bits); }

__device__ __forceinline__ void store(float *at, float value) { *at = value; }
__device__ __forceinline__ void store(double *at, double value) { *at = value; }
__device__ __forceinline__ void store(Bf16 *at, float value) { at->bits = f32_to_bf16(value); }
__device__ __forceinline__ void store(F16 *at, float value) { at->bits = f32_to_f16(value); }
