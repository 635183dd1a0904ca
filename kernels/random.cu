// Random numbers from Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as
// 1, 2, 3", SC 2011): a counter-based generator, so element i of a stream is a pure function
// of (key, counter) and any thread computes it without shared state. Same seed, same numbers,
// whatever the launch shape. CPU twin: crates/kernels/src/cpu/random.rs (the same generator
// and transforms, element for element).
//
// Counter (i / 4, stream offset, 0, 0) with key (seed low, seed high) gives four 32-bit words;
// element i takes word i % 4. Uniforms are (word + 0.5) / 2^32 in (0, 1); normals pair
// elements 2j and 2j + 1 through Box-Muller.
//
// The `_at` kernels read a per-iteration value from device memory when they run instead of
// taking it as an argument: `uniform_at` / `normal_at` the index of the draw in the sequence
// of `seed` (their key is `sequence_key(seed, index)`), `gather_shuffled_rows_at` the
// position. A CUDA graph that captured them draws new numbers and the next batch at each
// replay, once the index and the position (one-element f64 buffers, exact integers below
// 2^53) have been advanced in place. CPU twins: `Storage::random_at`,
// `Storage::gather_shuffled_rows_at` (which read the value and draw as above).
//
// `gather_shuffled_rows` copies a batch of rows of a resident dataset in a shuffled order that
// is a pure function too: position p of the endless sequence of epochs over n rows is row
// perm_e(p % n) of epoch e = p / n, where perm_e is a bijection of [0, n) keyed by (seed, e):
// a 4-round Feistel network over the smallest even number of bits that holds n, whose rounds
// are Philox words, walked again until it lands inside [0, n) ("cycle walking"). Every row
// once per epoch, a new order each epoch, no permutation stored anywhere. CPU twin:
// crates/kernels/src/cpu/gather.rs.

#include "common.cuh"

struct Philox4 {
    unsigned int v[4];
};

__device__ __forceinline__ void mul_hi_lo(unsigned int a, unsigned int b, unsigned int *hi, unsigned int *lo) {
    unsigned long long product = (unsigned long long)a * b;
    *hi = (unsigned int)(product >> 32);
    *lo = (unsigned int)product;
}

__device__ Philox4 philox(unsigned long long counter_lo, unsigned long long counter_hi, unsigned long long seed) {
    unsigned int c0 = (unsigned int)counter_lo, c1 = (unsigned int)(counter_lo >> 32);
    unsigned int c2 = (unsigned int)counter_hi, c3 = (unsigned int)(counter_hi >> 32);
    unsigned int k0 = (unsigned int)seed, k1 = (unsigned int)(seed >> 32);
    for (int round = 0; round < 10; ++round) {
        unsigned int hi0, lo0, hi1, lo1;
        mul_hi_lo(0xD2511F53u, c0, &hi0, &lo0);
        mul_hi_lo(0xCD9E8D57u, c2, &hi1, &lo1);
        unsigned int n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    Philox4 out = {{c0, c1, c2, c3}};
    return out;
}

__device__ __forceinline__ double word_to_unit(unsigned int word) { return (word + 0.5) * (1.0 / 4294967296.0); }

template <typename T> __device__ void uniform(T *out, long long n, unsigned long long seed, unsigned long long stream, double low, double high) {
    for (long long i = grid_index(); i < n; i += grid_stride()) {
        Philox4 r = philox((unsigned long long)(i / 4), stream, seed);
        out[i] = T(low + (high - low) * word_to_unit(r.v[i % 4]));
    }
}

// Box-Muller in double precision for both dtypes, so that f32 output is the rounding of the
// same double as the CPU twin computes.
template <typename T> __device__ void normal(T *out, long long n, unsigned long long seed, unsigned long long stream, double mean, double std) {
    for (long long i = grid_index(); i < n; i += grid_stride()) {
        long long pair = i / 2;
        Philox4 r = philox((unsigned long long)(pair / 2), stream, seed);
        int first = (int)(pair % 2) * 2;
        double u1 = word_to_unit(r.v[first]), u2 = word_to_unit(r.v[first + 1]);
        double radius = sqrt(-2.0 * log(u1)), angle = 6.283185307179586 * u2;
        double z = (i % 2 == 0) ? radius * cos(angle) : radius * sin(angle);
        out[i] = T(mean + std * z);
    }
}

// The Philox key of draw `index` of the sequence seeded by `seed`: splitmix64's finaliser of
// seed ^ (index + 1) * golden ratio. CPU twin: `cpu::random::sequence_key`.
__device__ unsigned long long sequence_key(unsigned long long seed, unsigned long long index) {
    unsigned long long x = seed ^ ((index + 1) * 0x9E3779B97F4A7C15ull);
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

// A count held in a one-element f64 buffer (an exact integer below 2^53).
__device__ __forceinline__ unsigned long long read_count(const double *count) { return (unsigned long long)*count; }

// The row at `position` of the shuffled sequence of epochs over `source_rows` rows (see the
// top of the file). Integer arithmetic only, so the CPU twin gives the same rows.
__device__ unsigned long long shuffled_row(unsigned long long position, unsigned long long source_rows, unsigned long long seed) {
    unsigned long long epoch = position / source_rows, x = position % source_rows;
    int bits = 2;
    while (bits < 64 && (1ull << bits) < source_rows) bits += 2;
    int half = bits / 2;
    unsigned long long mask = (1ull << half) - 1;
    do {
        unsigned long long left = x >> half, right = x & mask;
        for (unsigned long long round = 0; round < 4; ++round) {
            unsigned long long f = philox(right | (round << 32), epoch, seed).v[0] & mask;
            unsigned long long next = left ^ f;
            left = right;
            right = next;
        }
        x = (left << half) | right;
    } while (x >= source_rows);
    return x;
}

// out[r, j] = src[shuffled_row(position + r), j] for r < rows, j < row_len.
template <typename T>
__device__ void gather_shuffled_rows(const T *__restrict__ src, T *__restrict__ out, long long rows, long long row_len, long long source_rows, unsigned long long position, unsigned long long seed) {
    long long n = rows * row_len;
    for (long long i = grid_index(); i < n; i += grid_stride()) {
        long long r = i / row_len;
        unsigned long long row = shuffled_row(position + (unsigned long long)r, (unsigned long long)source_rows, seed);
        out[i] = src[(long long)row * row_len + i % row_len];
    }
}

extern "C" {
__global__ void gather_shuffled_rows_f32(const float *src, float *out, long long rows, long long row_len, long long source_rows, unsigned long long position, unsigned long long seed) {
    gather_shuffled_rows(src, out, rows, row_len, source_rows, position, seed);
}
__global__ void gather_shuffled_rows_f64(const double *src, double *out, long long rows, long long row_len, long long source_rows, unsigned long long position, unsigned long long seed) {
    gather_shuffled_rows(src, out, rows, row_len, source_rows, position, seed);
}
__global__ void gather_shuffled_rows_at_f32(const float *src, float *out, long long rows, long long row_len, long long source_rows, const double *position, unsigned long long seed) {
    gather_shuffled_rows(src, out, rows, row_len, source_rows, read_count(position), seed);
}
__global__ void gather_shuffled_rows_at_f64(const double *src, double *out, long long rows, long long row_len, long long source_rows, const double *position, unsigned long long seed) {
    gather_shuffled_rows(src, out, rows, row_len, source_rows, read_count(position), seed);
}
__global__ void uniform_at_f32(float *out, long long n, unsigned long long seed, const double *index, unsigned long long stream, double low, double high) {
    uniform(out, n, sequence_key(seed, read_count(index)), stream, low, high);
}
__global__ void uniform_at_f64(double *out, long long n, unsigned long long seed, const double *index, unsigned long long stream, double low, double high) {
    uniform(out, n, sequence_key(seed, read_count(index)), stream, low, high);
}
__global__ void normal_at_f32(float *out, long long n, unsigned long long seed, const double *index, unsigned long long stream, double mean, double std) {
    normal(out, n, sequence_key(seed, read_count(index)), stream, mean, std);
}
__global__ void normal_at_f64(double *out, long long n, unsigned long long seed, const double *index, unsigned long long stream, double mean, double std) {
    normal(out, n, sequence_key(seed, read_count(index)), stream, mean, std);
}
__global__ void uniform_f32(float *out, long long n, unsigned long long seed, unsigned long long stream, double low, double high) {
    uniform(out, n, seed, stream, low, high);
}
__global__ void uniform_f64(double *out, long long n, unsigned long long seed, unsigned long long stream, double low, double high) {
    uniform(out, n, seed, stream, low, high);
}
__global__ void normal_f32(float *out, long long n, unsigned long long seed, unsigned long long stream, double mean, double std) {
    normal(out, n, seed, stream, mean, std);
}
__global__ void normal_f64(double *out, long long n, unsigned long long seed, unsigned long long stream, double mean, double std) {
    normal(out, n, seed, stream, mean, std);
}
}
