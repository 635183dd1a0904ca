// A CPU model of the parts of CUDA that earthmover's kernels use, so that the same .cu sources
// compile with the host C++ compiler and run without a GPU (crates/kernels, feature
// `emulator`). It is built for checking, not for speed:
//
// - a launch runs the blocks of its grid one after another, on one OS thread per CUDA thread
//   of a block, so __syncthreads() is a real barrier between them;
// - __shared__ variables are `static`: one copy for the running block (blocks never overlap,
//   and launches are serialised by a lock);
// - warp shuffles exchange values through a per-warp buffer between two barriers of the warp's
//   threads, so every lane of a warp must take part, as with a full mask on a GPU;
// - atomics take one process-wide lock.
//
// Code that only a GPU can run sits behind `#ifndef EARTHMOVER_EMULATOR`.
#pragma once

#define EARTHMOVER_EMULATOR 1

#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <thread>
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

struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
};

// The coordinates of the calling CUDA thread, set by the launcher in each OS thread.
inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;
constexpr int warpSize = 32;

using std::max;
using std::min;
// CUDA's device math overloads the C names for float and double; so does <cmath>'s std::.
using std::cos;
using std::exp;
using std::fabs;
using std::fmax;
using std::fmin;
using std::log;
using std::log1p;
using std::pow;
using std::sin;
using std::sqrt;
using std::tanh;

namespace emulator {

// A reusable barrier for `count` threads (a generation counter, so that a thread racing ahead
// to the next barrier cannot be counted in the current one).
class Barrier {
  public:
    explicit Barrier(unsigned count) : count_(count) {}
    void wait() {
        std::unique_lock<std::mutex> lock(mutex_);
        unsigned generation = generation_;
        if (++arrived_ == count_) {
            arrived_ = 0;
            ++generation_;
            cv_.notify_all();
        } else {
            cv_.wait(lock, [&] { return generation != generation_; });
        }
    }

  private:
    std::mutex mutex_;
    std::condition_variable cv_;
    unsigned count_, arrived_ = 0, generation_ = 0;
};

// What the threads of the running block share: its barrier, and per warp a barrier and a
// buffer for shuffles.
struct Block {
    explicit Block(unsigned threads) : barrier(threads) {
        for (unsigned first = 0; first < threads; first += warpSize) {
            unsigned lanes = std::min<unsigned>(warpSize, threads - first);
            warps.push_back(std::make_unique<Warp>(lanes));
        }
    }
    struct Warp {
        explicit Warp(unsigned lanes) : barrier(lanes) {}
        Barrier barrier;
        uint64_t exchange[warpSize] = {};
    };
    Barrier barrier;
    std::vector<std::unique_ptr<Warp>> warps;
};

inline thread_local Block *current_block = nullptr;

inline unsigned linear_thread_index() {
    return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}

inline std::mutex &atomic_lock() {
    static std::mutex lock;
    return lock;
}

inline std::mutex &launch_lock() {
    static std::mutex lock;
    return lock;
}

// Every lane writes its value, all wait, each reads its source lane's, all wait again (so
// that the buffer is not overwritten by a later shuffle before everyone has read it).
template <typename T> T shuffle(T value, int source_lane) {
    static_assert(sizeof(T) <= sizeof(uint64_t), "shuffle of a type wider than 64 bits");
    unsigned index = linear_thread_index();
    Block::Warp &warp = *current_block->warps[index / warpSize];
    unsigned lane = index % warpSize;
    uint64_t bits = 0;
    std::memcpy(&bits, &value, sizeof(T));
    warp.exchange[lane] = bits;
    warp.barrier.wait();
    T result = value;
    if (source_lane >= 0 && source_lane < warpSize) {
        std::memcpy(&result, &warp.exchange[source_lane], sizeof(T));
    }
    warp.barrier.wait();
    return result;
}

// Call `kernel` with the arguments that `params[i]` points to, as cuLaunchKernel does.
template <typename... Args, std::size_t... I>
void call_with_params(void (*kernel)(Args...), void **params, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_cv_t<std::remove_reference_t<Args>> *>(params[I])...);
}

template <typename... Args> void launch(void (*kernel)(Args...), dim3 grid, dim3 block, void **params) {
    std::lock_guard<std::mutex> serialised(launch_lock());
    const unsigned threads = block.x * block.y * block.z;
    // One OS thread per CUDA thread of a block, reused for every block of the grid in turn:
    // all of them finish a block (the barrier) before any starts the next, since the next
    // block reuses the same __shared__ variables.
    Block shared(threads);
    Barrier block_done(threads);
    std::vector<std::thread> workers;
    workers.reserve(threads);
    for (unsigned t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
            current_block = &shared;
            gridDim = grid;
            blockDim = block;
            threadIdx = dim3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
            for (unsigned bz = 0; bz < grid.z; ++bz)
                for (unsigned by = 0; by < grid.y; ++by)
                    for (unsigned bx = 0; bx < grid.x; ++bx) {
                        blockIdx = dim3{bx, by, bz};
                        call_with_params(kernel, params, std::index_sequence_for<Args...>{});
                        block_done.wait();
                    }
        });
    }
    for (auto &w : workers) w.join();
}

}  // namespace emulator

inline void __syncthreads() { emulator::current_block->barrier.wait(); }

// Every kernel here syncs its whole warp: a full mask is the only one modelled.
template <typename T> T __shfl_down_sync(unsigned, T value, unsigned delta) {
    unsigned lane = emulator::linear_thread_index() % warpSize;
    int source = lane + delta < warpSize ? int(lane + delta) : int(lane);
    return emulator::shuffle(value, source);
}
template <typename T> T __shfl_xor_sync(unsigned, T value, int mask) {
    unsigned lane = emulator::linear_thread_index() % warpSize;
    return emulator::shuffle(value, int(lane ^ unsigned(mask)));
}
template <typename T> T __shfl_sync(unsigned, T value, int source_lane) {
    return emulator::shuffle(value, source_lane % warpSize);
}

template <typename T> T atomicAdd(T *address, T value) {
    std::lock_guard<std::mutex> guard(emulator::atomic_lock());
    T old = *address;
    *address = old + value;
    return old;
}
template <typename T> T atomicMax(T *address, T value) {
    std::lock_guard<std::mutex> guard(emulator::atomic_lock());
    T old = *address;
    *address = old > value ? old : value;
    return old;
}

inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
