// The elementwise ops' arithmetic, one `case` per code of `UnaryOp` and `BinaryOp`
// (crates/kernels/src/op.rs): the elementwise kernels (elementwise.cu) apply them, and the
// convolutions (conv.cu) apply an activation in their epilogue with the same function, so a
// fused activation computes exactly what the separate pass did. Include after common.cuh and
// op_codes.cuh (its U_ and B_ codes). CPU twin: crates/kernels/src/cpu/elementwise.rs.
#pragma once

template <typename T> __device__ __forceinline__ T unary_apply(int op, T x, T p, T q) {
    const T zero = T(0), one = T(1);
    switch (op) {
    case U_NEG: return -x;
    case U_EXP: return exp(x);
    case U_LOG: return log(x);
    case U_SQRT: return sqrt(x);
    case U_ABS: return fabs(x);
    case U_SIGN: return x > zero ? one : (x < zero ? -one : zero);
    // `x < 0`, not `x <= 0`: NaN and -0 pass through, as in PyTorch.
    case U_RELU: return x < zero ? zero : x;
    case U_LEAKY_RELU: return x > zero ? x : x * p;
    case U_TANH: return tanh(x);
    // Two branches so that exp never overflows.
    case U_SIGMOID: return x >= zero ? one / (one + exp(-x)) : exp(x) / (one + exp(x));
    case U_SOFTPLUS: return fmax(x, zero) + log1p(exp(-fabs(x)));
    case U_POW: return p == T(2) ? x * x : pow(x, p);
    // Two selects, as the CPU's: NaN fails both comparisons and passes (fmax would drop it),
    // -0 passes a bound of 0, and with p > q every number becomes q (PyTorch's clamp).
    case U_CLAMP: {
        const T v = x < p ? p : x;
        return v > q ? q : v;
    }
    case U_IN_RANGE: return (x >= p && x <= q) ? one : zero;
    case U_ADD_SCALAR: return x + p;
    case U_MUL_SCALAR: return x * p;
    case U_DIV_SCALAR: return x / p;
    case U_GT_SCALAR: return x > p ? one : zero;
    case U_LT_SCALAR: return x < p ? one : zero;
    case U_EQ_SCALAR: return x == p ? one : zero;
    default: return x;
    }
}

// `p` is the op's parameter (the slope of B_LEAKY_RELU_GRAD).
template <typename T> __device__ __forceinline__ T binary_apply(int op, T a, T b, T p) {
    switch (op) {
    case B_ADD: return a + b;
    case B_SUB: return a - b;
    case B_MUL: return a * b;
    case B_DIV: return a / b;
    // NaN in either operand gives NaN, as in PyTorch (fmax/fmin would drop it).
    case B_MAXIMUM: return (a > b || isnan(a)) ? a : b;
    case B_MINIMUM: return (a < b || isnan(a)) ? a : b;
    case B_GT: return a > b ? T(1) : T(0);
    case B_GE: return a >= b ? T(1) : T(0);
    case B_LT: return a < b ? T(1) : T(0);
    case B_LE: return a <= b ? T(1) : T(0);
    case B_EQ: return a == b ? T(1) : T(0);
    // A gradient `a` through relu at `b` (PyTorch's threshold_backward: NaN passes `a`).
    case B_RELU_GRAD: return b <= T(0) ? T(0) : a;
    // A gradient `a` through leaky_relu at `b`.
    case B_LEAKY_RELU_GRAD: return b > T(0) ? a : a * p;
    // `a / 1` where `b == 0`: a gradient through a norm that is 0 at 0.
    case B_DIV_NONZERO: return b != T(0) ? a / b : a;
    default: return a;
    }
}
