// Fused optimiser updates and weight clipping, in place, PyTorch's formulas (no weight
// decay). CPU twins: crates/kernels/src/cpu/optim.rs (`sgd`, `rmsprop`, `adam`,
// `clamp_in_place`).
//
// Each kernel updates a whole list of parameters in one launch: `ParamList` holds up to
// EARTHMOVER_MAX_PARAMS device pointers and lengths, and the grid strides over their
// concatenation, so a network's dozen small tensors cost one launch, not a dozen.

#include "common.cuh"

#define EARTHMOVER_MAX_PARAMS 24

template <typename T> struct ParamList {
    int count;
    long long starts[EARTHMOVER_MAX_PARAMS + 1];  // prefix sums of the lengths
    T *param[EARTHMOVER_MAX_PARAMS];
    const T *grad[EARTHMOVER_MAX_PARAMS];
    T *state1[EARTHMOVER_MAX_PARAMS];  // momentum buffer / square average / exp_avg
    T *state2[EARTHMOVER_MAX_PARAMS];  // exp_avg_sq (Adam)
};

// Which tensor of the list holds element `i` of the concatenation (a short linear scan: the
// lists are small and the scan stays in registers and constant cache).
template <typename T> __device__ __forceinline__ int tensor_of(const ParamList<T> &l, long long i) {
    int t = 0;
    while (t + 1 < l.count && i >= l.starts[t + 1]) ++t;
    return t;
}

template <typename T> __device__ void sgd(ParamList<T> l, double lr, double momentum) {
    for (long long i = grid_index(); i < l.starts[l.count]; i += grid_stride()) {
        int t = tensor_of(l, i);
        long long j = i - l.starts[t];
        T g = l.grad[t][j];
        if (momentum != 0.0) {
            T b = T(momentum) * l.state1[t][j] + g;
            l.state1[t][j] = b;
            g = b;
        }
        l.param[t][j] -= T(lr) * g;
    }
}

template <typename T> __device__ void rmsprop(ParamList<T> l, double lr, double alpha, double eps) {
    for (long long i = grid_index(); i < l.starts[l.count]; i += grid_stride()) {
        int t = tensor_of(l, i);
        long long j = i - l.starts[t];
        T g = l.grad[t][j];
        T s = T(alpha) * l.state1[t][j] + T(1.0 - alpha) * g * g;
        l.state1[t][j] = s;
        l.param[t][j] -= T(lr) * g / (sqrt(s) + T(eps));
    }
}

// `step_size = lr / (1 - b1^t)`, `inv_bc2 = 1 / sqrt(1 - b2^t)`, computed on the host in f64.
template <typename T>
__device__ void adam(ParamList<T> l, double step_size, double beta1, double beta2, double inv_bc2, double eps) {
    for (long long i = grid_index(); i < l.starts[l.count]; i += grid_stride()) {
        int t = tensor_of(l, i);
        long long j = i - l.starts[t];
        T g = l.grad[t][j];
        T m = T(beta1) * l.state1[t][j] + T(1.0 - beta1) * g;
        T v = T(beta2) * l.state2[t][j] + T(1.0 - beta2) * g * g;
        l.state1[t][j] = m;
        l.state2[t][j] = v;
        l.param[t][j] -= T(step_size) * m / (sqrt(v) * T(inv_bc2) + T(eps));
    }
}

// base^exp by binary exponentiation, the products of `op::pow_by_squaring` on the host in the
// same order; `__dmul_rn` keeps NVRTC from fusing the last product into the `1 - ...` that
// follows, so host and device get the same bits.
__device__ double pow_by_squaring(double base, unsigned long long exp) {
    double result = 1.0, square = base;
    while (exp > 0) {
        if (exp & 1) result = __dmul_rn(result, square);
        exp >>= 1;
        if (exp > 0) square = __dmul_rn(square, square);
    }
    return result;
}

// Adam at the step count held in the one-element f64 buffer `step` when the kernel runs (an
// exact integer), its scalars computed as `OptimizerUpdate::adam_step_scalars` does on the
// host (every thread alike: a few dozen f64 operations): a CUDA graph that captured it steps
// with the right bias correction at each replay, once the count has been advanced in place.
template <typename T>
__device__ void adam_at(ParamList<T> l, const double *step, double lr, double beta1, double beta2, double eps) {
    unsigned long long t = (unsigned long long)*step;
    double step_size = lr / __dsub_rn(1.0, pow_by_squaring(beta1, t));
    double inv_bc2 = 1.0 / sqrt(__dsub_rn(1.0, pow_by_squaring(beta2, t)));
    adam(l, step_size, beta1, beta2, inv_bc2, eps);
}

// x[i] += c in place, in the element type (as elementwise.cu's AddScalar): the advance of a
// count held on the device (see `adam_at` and random.cu's `_at` kernels), and
// `Tensor::add_scalar_`. The buffer stays where it is, so a CUDA graph that captured its
// readers reads the new count at the next replay.
template <typename T> __device__ void add_scalar_in_place(T *x, long long n, double c) {
    for (long long i = grid_index(); i < n; i += grid_stride()) x[i] = x[i] + T(c);
}

template <typename T> __device__ void clamp_params(ParamList<T> l, double lo, double hi) {
    for (long long i = grid_index(); i < l.starts[l.count]; i += grid_stride()) {
        int t = tensor_of(l, i);
        long long j = i - l.starts[t];
        // Two selects, as the CPU's `clamp_in_place`: NaN fails both comparisons and stays NaN,
        // so that a diverged parameter is not hidden by the clipping; -0 passes a bound of 0;
        // with lo > hi every number becomes hi (PyTorch's clamp_).
        const T p = l.param[t][j];
        const T v = p < T(lo) ? T(lo) : p;
        l.param[t][j] = v > T(hi) ? T(hi) : v;
    }
}

extern "C" {
__global__ void sgd_f32(ParamList<float> l, double lr, double momentum) { sgd(l, lr, momentum); }
__global__ void sgd_f64(ParamList<double> l, double lr, double momentum) { sgd(l, lr, momentum); }
__global__ void rmsprop_f32(ParamList<float> l, double lr, double alpha, double eps) { rmsprop(l, lr, alpha, eps); }
__global__ void rmsprop_f64(ParamList<double> l, double lr, double alpha, double eps) { rmsprop(l, lr, alpha, eps); }
__global__ void adam_f32(ParamList<float> l, double step_size, double beta1, double beta2, double inv_bc2, double eps) {
    adam(l, step_size, beta1, beta2, inv_bc2, eps);
}
__global__ void adam_f64(ParamList<double> l, double step_size, double beta1, double beta2, double inv_bc2, double eps) {
    adam(l, step_size, beta1, beta2, inv_bc2, eps);
}
__global__ void adam_at_f32(ParamList<float> l, const double *step, double lr, double beta1, double beta2, double eps) {
    adam_at(l, step, lr, beta1, beta2, eps);
}
__global__ void adam_at_f64(ParamList<double> l, const double *step, double lr, double beta1, double beta2, double eps) {
    adam_at(l, step, lr, beta1, beta2, eps);
}
__global__ void add_scalar_in_place_f32(float *x, long long n, double c) { add_scalar_in_place(x, n, c); }
__global__ void add_scalar_in_place_f64(double *x, long long n, double c) { add_scalar_in_place(x, n, c); }
__global__ void clamp_f32(ParamList<float> l, double lo, double hi) { clamp_params(l, lo, hi); }
__global__ void clamp_f64(ParamList<double> l, double lo, double hi) { clamp_params(l, lo, hi); }
}
