// A CPU model of the parts of CUDA that earthmover's kernels use, so that the same .cu sources
// compile with the host C++ compiler and run without a GPU (crates/kernels, feature
// `emulator`). It is built for checking, not for speed:
//
// - a launch runs the blocks of its grid one after another on the calling OS thread; the CUDA
//   threads of a block are fibers, each with its own stack, switched cooperatively (kernels of
//   a source file that never synchronises run as plain calls instead: build.rs). A fiber is
//   started once on its stack (ucontext) and then kept from block to block and launch to
//   launch, running one block's body per round; switches are _setjmp/_longjmp, which unlike
//   swapcontext make no system call (swapcontext's signal-mask call was 40% of the emulator's
//   time). Launches are serialised by a lock, so the thread's coordinates are plain globals,
//   never thread-locals that a fiber resumed by another OS thread would read stale;
// - __syncthreads() parks the calling fiber until every live fiber of the block has reached a
//   barrier; a warp shuffle parks it until every live lane of its warp has, exchanging values
//   through a per-warp buffer. When no fiber can run and some wait, the kernel's barriers
//   diverge (a deadlock on a GPU too): the emulator stops with a message;
// - __shared__ variables are `static`: one copy, for the running block (blocks never overlap,
//   and launches are serialised by a lock);
// - atomics are plain read-modify-writes, since one fiber runs at a time;
// - the tensor cores' mma.sync (m16n8k16, bf16 or f16 inputs, f32 sums) is a warp-collective
//   operation like a shuffle: the lanes deposit their fragments, wait for the whole warp, and
//   each computes its share of the product from all 32 lanes' fragments (mma_m16n8k16);
// - cp.async (async_copy.cuh) is a copy that lands late: issuing one reads its source and
//   fills its destination with 0xff bytes (NaN), and the bytes arrive only at the
//   cp.async.wait_group that covers its commit group (async_copy below), so a kernel that reads
//   shared memory before waiting, or before the __syncthreads after another thread's wait,
//   reads NaN and fails its test.
//
// Code that only a GPU can run sits behind `#ifndef EARTHMOVER_EMULATOR`.
#pragma once

#define EARTHMOVER_EMULATOR 1

#include <setjmp.h>
#include <ucontext.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <type_traits>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))

struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
};

// The coordinates of the running CUDA thread, set by the scheduler before it resumes a fiber.
// Plain globals: launches are serialised (see above).
inline dim3 threadIdx, blockIdx, blockDim, gridDim;
constexpr int warpSize = 32;

using std::max;
using std::min;
// CUDA's device math overloads the C names for float and double; so does <cmath>'s std::.
using std::cos;
using std::exp;
using std::fabs;
using std::fmax;
using std::fmin;
using std::isnan;
using std::log;
using std::log1p;
using std::pow;
using std::sin;
using std::sqrt;
using std::tanh;

namespace emulator {

enum class State { Ready, AtBlockBarrier, AtWarpBarrier, Done };

struct Fiber {
    jmp_buf context;  // where the fiber resumes, once started
    std::unique_ptr<char[]> stack;
    State state = State::Ready;
    bool started = false;
};

// One lane's operands of a warp-wide mma (see mma_m16n8k16 below), left for its warp to
// gather: A's and B's fragment registers (two bf16 each) and C's four floats.
struct MmaOperands {
    uint32_t a[4] = {}, b[2] = {};
    float c[4] = {};
    bool deposited = false;
};

// Bytes of stack per CUDA thread: kernels keep a few small arrays in registers, nothing more.
constexpr std::size_t STACK_BYTES = 64 * 1024;

// One thread's cp.async copies in flight (async_copy below): the open group, then the
// committed groups, oldest first. Each copy holds its source's bytes, read when it was issued.
struct PendingCopy {
    void *destination;
    unsigned char bytes[16];
    unsigned size;
};
struct AsyncCopies {
    std::vector<PendingCopy> open;
    std::vector<std::vector<PendingCopy>> committed;
};

struct Scheduler {
    std::vector<Fiber> fibers;
    jmp_buf scheduler_context;  // where a fiber that parks returns to
    ucontext_t start_context;   // a fiber's first entry onto its stack
    unsigned current = 0;
    dim3 block;
    unsigned threads = 0;  // of the running launch's blocks
    std::vector<uint64_t> exchange;  // one slot per thread, for warp shuffles
    std::vector<MmaOperands> mma_operands;  // one per thread, for warp-wide mma
    std::vector<AsyncCopies> async_copies;  // one per thread, for cp.async
    void (*body)(void *) = nullptr;
    void *body_arg = nullptr;
};

inline Scheduler *scheduler = nullptr;

// One scheduler for every launch (they are serialised), so that fibers and stacks are reused.
inline Scheduler &shared_scheduler() {
    static Scheduler s;
    return s;
}

inline void barrier_in_direct_mode();

// From a fiber: remember where it is and go back to the scheduler.
inline void yield_to_scheduler() {
    Scheduler &s = *scheduler;
    if (_setjmp(s.fibers[s.current].context) == 0) _longjmp(s.scheduler_context, 1);
}

inline void park(State state) {
    if (scheduler == nullptr) barrier_in_direct_mode();
    scheduler->fibers[scheduler->current].state = state;
    yield_to_scheduler();
}

// Every fiber runs this forever: one block's body per round, then it waits, done, for the
// scheduler to resume it for the next block.
inline void fiber_main() {
    for (;;) {
        scheduler->body(scheduler->body_arg);
        scheduler->fibers[scheduler->current].state = State::Done;
        yield_to_scheduler();
    }
}

inline void set_thread_index(unsigned t, dim3 block) {
    threadIdx = dim3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
}

// From the scheduler: run fiber `t` until it parks or finishes its round. Its first time, it
// is started on its stack with ucontext; after that it is resumed where it parked.
inline void resume(Scheduler &s, unsigned t) {
    s.current = t;
    set_thread_index(t, s.block);
    Fiber &f = s.fibers[t];
    if (_setjmp(s.scheduler_context) != 0) return;  // the fiber parked or finished its round
    if (f.started) _longjmp(f.context, 1);
    f.started = true;
    getcontext(&s.start_context);
    s.start_context.uc_stack.ss_sp = f.stack.get();
    s.start_context.uc_stack.ss_size = STACK_BYTES;
    s.start_context.uc_link = nullptr;  // fiber_main never returns
    makecontext(&s.start_context, fiber_main, 0);
    setcontext(&s.start_context);
}

// A block's copies still in flight when its threads end arrive then (as on a GPU, where the
// block's shared memory then dies with it).
inline void finish_async_copies(Scheduler &s) {
    for (AsyncCopies &copies : s.async_copies) {
        for (auto &group : copies.committed)
            for (PendingCopy &c : group) std::memcpy(c.destination, c.bytes, c.size);
        for (PendingCopy &c : copies.open) std::memcpy(c.destination, c.bytes, c.size);
        copies.committed.clear();
        copies.open.clear();
    }
}

// Run one block: every fiber from the start of `body` until all are done, releasing barriers
// as they fill.
inline void run_block(Scheduler &s, unsigned threads) {
    for (unsigned t = 0; t < threads; ++t) s.fibers[t].state = State::Ready;
    for (;;) {
        bool ran = false;
        for (unsigned t = 0; t < threads; ++t) {
            if (s.fibers[t].state != State::Ready) continue;
            resume(s, t);
            ran = true;
        }
        // Release each warp whose live lanes all wait at a shuffle.
        for (unsigned first = 0; first < threads; first += warpSize) {
            unsigned last = std::min<unsigned>(first + warpSize, threads);
            bool all_waiting = true, any_waiting = false;
            for (unsigned t = first; t < last; ++t) {
                State st = s.fibers[t].state;
                if (st == State::AtWarpBarrier) any_waiting = true;
                else if (st != State::Done) all_waiting = false;
            }
            if (any_waiting && all_waiting) {
                for (unsigned t = first; t < last; ++t)
                    if (s.fibers[t].state == State::AtWarpBarrier) s.fibers[t].state = State::Ready, ran = true;
            }
        }
        if (ran) continue;
        // Nothing ran and no warp was released: either every fiber is done, or all live ones
        // wait at __syncthreads (release them), or the barriers diverge.
        bool all_done = true, all_at_block = true;
        for (unsigned t = 0; t < threads; ++t) {
            State st = s.fibers[t].state;
            if (st != State::Done) all_done = false;
            if (st != State::Done && st != State::AtBlockBarrier) all_at_block = false;
        }
        if (all_done) return finish_async_copies(s);
        if (all_at_block) {
            for (unsigned t = 0; t < threads; ++t)
                if (s.fibers[t].state == State::AtBlockBarrier) s.fibers[t].state = State::Ready;
            continue;
        }
        std::fprintf(stderr,
                     "cuda emulator: block (%u, %u, %u) deadlocks: its threads wait at different barriers "
                     "(__syncthreads or a warp shuffle not reached by all threads)\n",
                     blockIdx.x, blockIdx.y, blockIdx.z);
        std::abort();
    }
}

inline std::mutex &launch_lock() {
    static std::mutex lock;
    return lock;
}

// Every lane writes its value, all wait, each reads its source lane's, all wait again (so
// that the buffer is not overwritten by a later shuffle before everyone has read it).
template <typename T> T shuffle(T value, int source_lane) {
    static_assert(sizeof(T) <= sizeof(uint64_t), "shuffle of a type wider than 64 bits");
    if (scheduler == nullptr) barrier_in_direct_mode();
    Scheduler &s = *scheduler;
    unsigned index = s.current, warp_first = index - index % warpSize;
    uint64_t bits = 0;
    std::memcpy(&bits, &value, sizeof(T));
    s.exchange[index] = bits;
    park(State::AtWarpBarrier);
    T result = value;
    unsigned source = warp_first + unsigned(source_lane);
    if (source_lane >= 0 && source_lane < warpSize && source < s.threads) {
        std::memcpy(&result, &s.exchange[source], sizeof(T));
    }
    park(State::AtWarpBarrier);
    return result;
}

// A bf16 value (its 16 bits) widened to f32, exactly: bf16 is f32's top half.
inline float bf16_bits_to_f32(uint32_t bits) {
    const uint32_t wide = (bits & 0xffffu) << 16;
    float value;
    std::memcpy(&value, &wide, sizeof value);
    return value;
}

// An f16 value (its 16 bits) widened to f32, exactly: 5 exponent bits (bias 15), 10 mantissa
// bits, subnormal below 2^-14.
inline float f16_bits_to_f32(uint32_t bits) {
    const uint32_t exponent = (bits >> 10) & 0x1fu, mantissa = bits & 0x3ffu;
    float magnitude;
    if (exponent == 0x1fu) magnitude = mantissa ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
    else if (exponent == 0u) magnitude = std::ldexp(float(mantissa), -24);
    else magnitude = std::ldexp(float(mantissa | 0x400u), int(exponent) - 25);
    return (bits & 0x8000u) ? -magnitude : magnitude;
}

// The calling lane's part of `mma.sync.aligned.m16n8k16.row.col.f32.<bf16|f16>.<bf16|f16>.f32`
// (mma.cuh has the fragment layout), its 16-bit inputs widened by `widen`: every lane deposits
// its fragments, all 32 lanes of the warp wait for each other as at a shuffle, then each lane
// assembles A (16 x 16) and B (16 x 8) from the 32 lanes' registers and computes its four
// elements of D = A B + C: exact products (both 16-bit formats' products fit f32), summed in f32
// from C's element in the order k = 0..15. Then all wait again, so that no lane deposits the
// operands of its next mma before every lane has read this one's. A warp whose 32 lanes do not
// all take part (a lane exited, or the block is not whole warps) stops the emulator with a
// message: mma.sync needs every lane, on a GPU too.
template <float (*widen)(uint32_t)>
inline void mma_m16n8k16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
    if (scheduler == nullptr) barrier_in_direct_mode();
    Scheduler &s = *scheduler;
    const unsigned index = s.current, lane = index % warpSize, first = index - lane;
    MmaOperands &mine = s.mma_operands[index];
    for (int i = 0; i < 4; ++i) mine.a[i] = a[i], mine.c[i] = c[i];
    for (int i = 0; i < 2; ++i) mine.b[i] = b[i];
    mine.deposited = true;
    park(State::AtWarpBarrier);

    bool whole_warp = first + warpSize <= s.threads;
    for (unsigned l = 0; whole_warp && l < unsigned(warpSize); ++l) whole_warp = s.mma_operands[first + l].deposited;
    if (!whole_warp) {
        std::fprintf(stderr,
                     "cuda emulator: block (%u, %u, %u), warp %u: mma.sync without all 32 lanes of the warp "
                     "(every lane must execute it together)\n",
                     blockIdx.x, blockIdx.y, blockIdx.z, first / warpSize);
        std::abort();
    }
    float matrix_a[16][16], matrix_b[16][8];
    for (unsigned l = 0; l < unsigned(warpSize); ++l) {
        const MmaOperands &from = s.mma_operands[first + l];
        const unsigned g = l / 4, t = l % 4;
        for (unsigned r = 0; r < 4; ++r)
            for (unsigned h = 0; h < 2; ++h)  // a[r]: rows g (r even) or g + 8; columns 2t (r < 2) or 2t + 8
                matrix_a[g + 8 * (r % 2)][2 * t + h + 8 * (r / 2)] = widen(from.a[r] >> (16 * h));
        for (unsigned r = 0; r < 2; ++r)
            for (unsigned h = 0; h < 2; ++h)  // b[r]: rows 2t (r = 0) or 2t + 8, column g
                matrix_b[2 * t + h + 8 * r][g] = widen(from.b[r] >> (16 * h));
    }
    const unsigned g = lane / 4, t = lane % 4;
    float result[4];
    for (unsigned i = 0; i < 4; ++i) {  // c[i]: row g (i < 2) or g + 8, column 2t + i % 2
        const unsigned row = g + 8 * (i / 2), col = 2 * t + i % 2;
        float sum = mine.c[i];
        for (unsigned k = 0; k < 16; ++k) sum += matrix_a[row][k] * matrix_b[k][col];
        result[i] = sum;
    }
    park(State::AtWarpBarrier);
    mine.deposited = false;
    for (int i = 0; i < 4; ++i) d[i] = result[i];
}

inline void mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
    mma_m16n8k16<bf16_bits_to_f32>(d, a, b, c);
}
inline void mma_m16n8k16_f16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
    mma_m16n8k16<f16_bits_to_f32>(d, a, b, c);
}

// cp.async.{ca,cg}.shared.global of `size` bytes (4, 8 or 16): the source is read now, the
// destination is filled with 0xff bytes (a NaN in every float type) and gets the source's
// bytes only when the calling thread waits for the copy's group (async_copy_wait). Only
// kernels that synchronise (fibers) may use it: its state is per thread of the block.
inline void async_copy(void *destination, const void *source, unsigned size) {
    if (scheduler == nullptr) barrier_in_direct_mode();
    if (size != 4 && size != 8 && size != 16) {
        std::fprintf(stderr, "cuda emulator: cp.async of %u bytes (PTX allows 4, 8 or 16)\n", size);
        std::abort();
    }
    if (reinterpret_cast<std::uintptr_t>(destination) % size != 0 || reinterpret_cast<std::uintptr_t>(source) % size != 0) {
        std::fprintf(stderr, "cuda emulator: cp.async of %u bytes from or to an address not aligned to %u\n", size, size);
        std::abort();
    }
    PendingCopy copy{destination, {}, size};
    std::memcpy(copy.bytes, source, size);
    std::memset(destination, 0xff, size);
    scheduler->async_copies[scheduler->current].open.push_back(copy);
}

// cp.async.commit_group: the calling thread's copies issued since its last commit become a
// group (possibly empty).
inline void async_copy_commit() {
    if (scheduler == nullptr) barrier_in_direct_mode();
    AsyncCopies &copies = scheduler->async_copies[scheduler->current];
    copies.committed.push_back(std::move(copies.open));
    copies.open.clear();
}

// cp.async.wait_group `pending`: every committed group of the calling thread but the newest
// `pending` has arrived: their bytes are written now, oldest first. Copies not yet committed
// are not waited for (as in PTX).
inline void async_copy_wait(unsigned pending) {
    if (scheduler == nullptr) barrier_in_direct_mode();
    AsyncCopies &copies = scheduler->async_copies[scheduler->current];
    while (copies.committed.size() > pending) {
        for (PendingCopy &c : copies.committed.front()) std::memcpy(c.destination, c.bytes, c.size);
        copies.committed.erase(copies.committed.begin());
    }
}

// Call `kernel` with the arguments that `params[i]` points to, as cuLaunchKernel does.
template <typename... Args, std::size_t... I>
void call_with_params(void (*kernel)(Args...), void **params, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_cv_t<std::remove_reference_t<Args>> *>(params[I])...);
}

template <typename... Args> struct Call {
    void (*kernel)(Args...);
    void **params;
    static void run(void *self) {
        auto *call = static_cast<Call *>(self);
        call_with_params(call->kernel, call->params, std::index_sequence_for<Args...>{});
    }
};

// Threads of kernels that never wait for each other run as plain calls, one after another,
// without fibers (build.rs decides per source file, from whether it synchronises at all).
template <typename... Args>
void launch_direct(void (*kernel)(Args...), dim3 grid, dim3 block, void **params) {
    const unsigned threads = block.x * block.y * block.z;
    gridDim = grid;
    blockDim = block;
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                blockIdx = dim3{bx, by, bz};
                for (unsigned t = 0; t < threads; ++t) {
                    set_thread_index(t, block);
                    call_with_params(kernel, params, std::index_sequence_for<Args...>{});
                }
            }
}

inline void barrier_in_direct_mode() {
    std::fprintf(stderr, "cuda emulator: a kernel of a file without __syncthreads or shuffles synchronised; "
                         "build.rs must run that file's kernels as fibers\n");
    std::abort();
}

template <typename... Args>
void launch(void (*kernel)(Args...), dim3 grid, dim3 block, void **params, bool synchronises) {
    std::lock_guard<std::mutex> serialised(launch_lock());
    if (!synchronises) return launch_direct(kernel, grid, block, params);
    const unsigned threads = block.x * block.y * block.z;
    // Fibers and their stacks are kept from launch to launch: allocating 16 MiB of stacks per
    // launch costs more than most kernels.
    Scheduler &s = shared_scheduler();
    s.threads = threads;
    if (s.fibers.size() < threads) {
        s.fibers.resize(threads);
        for (auto &f : s.fibers)
            if (!f.stack) f.stack.reset(new char[STACK_BYTES]);
    }
    s.exchange.assign(threads, 0);
    s.mma_operands.assign(threads, MmaOperands{});
    s.async_copies.assign(threads, AsyncCopies{});
    s.block = block;
    Call<Args...> call{kernel, params};
    s.body = &Call<Args...>::run;
    s.body_arg = &call;
    scheduler = &s;
    gridDim = grid;
    blockDim = block;
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                blockIdx = dim3{bx, by, bz};
                run_block(s, threads);
            }
    scheduler = nullptr;
}

}  // namespace emulator

inline void __syncthreads() { emulator::park(emulator::State::AtBlockBarrier); }

// Every kernel here syncs its whole warp: a full mask is the only one modelled.
template <typename T> T __shfl_down_sync(unsigned, T value, unsigned delta) {
    if (emulator::scheduler == nullptr) emulator::barrier_in_direct_mode();
    unsigned lane = emulator::scheduler->current % warpSize;
    int source = lane + delta < warpSize ? int(lane + delta) : int(lane);
    return emulator::shuffle(value, source);
}
template <typename T> T __shfl_xor_sync(unsigned, T value, int mask) {
    if (emulator::scheduler == nullptr) emulator::barrier_in_direct_mode();
    unsigned lane = emulator::scheduler->current % warpSize;
    return emulator::shuffle(value, int(lane ^ unsigned(mask)));
}
template <typename T> T __shfl_sync(unsigned, T value, int source_lane) {
    return emulator::shuffle(value, source_lane % warpSize);
}

// Blocks run one after another, each to its end: every write is seen by the blocks after it.
inline void __threadfence() {}

// One fiber runs at a time: a read-modify-write is atomic.
template <typename T> T atomicAdd(T *address, T value) {
    T old = *address;
    *address = old + value;
    return old;
}
template <typename T> T atomicMax(T *address, T value) {
    T old = *address;
    *address = old > value ? old : value;
    return old;
}

// Rounded adds, subtractions and products that NVRTC never contracts into an FMA; the host
// compiler contracts nothing in ISO C++ mode, so plain operators are the same roundings here.
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }

inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
