// Copies from global to shared memory that run while the thread computes (`cp.async`, sm_80
// and later), and 16-byte shared-memory accesses, for both builds (matmul.cu uses them):
//
//     async_copy<BYTES>(shared_dst, global_src)  // start a copy of 4, 8 or 16 bytes, both
//                                                // addresses aligned to BYTES
//     async_copy_commit()                        // the copies started since the last commit
//                                                // form a group (possibly empty)
//     async_copy_wait<PENDING>()                 // wait until at most the newest PENDING
//                                                // groups of this thread are still in flight
//     load_16_bytes(values, address)             // one 128-bit access (float4, double2) of
//     store_16_bytes(address, values)            // 16-byte aligned memory
//
// A copy is visible to the thread that started it only after the wait that covers its group,
// and to the other threads of the block only after a __syncthreads() that follows that wait.
//
// Under NVRTC these are the PTX instructions `cp.async.ca.shared.global` (4 and 8 bytes: cached
// in L1), `cp.async.cg.shared.global` (16 bytes: L2 only, as streamed tiles want),
// `cp.async.commit_group` and `cp.async.wait_group`; on a GPU older than sm_80 they are plain
// copies (nothing to wait for). In the CPU emulator they are `emulator::async_copy`,
// `async_copy_commit` and `async_copy_wait` (emulator/cuda_emulator.h): the destination holds
// NaN bytes from the start of a copy until the wait that covers it, so a kernel that reads too
// early fails its tests there.
#pragma once

#ifdef EARTHMOVER_EMULATOR

template <int BYTES> inline void async_copy(void *shared_dst, const void *global_src) {
    emulator::async_copy(shared_dst, global_src, BYTES);
}
inline void async_copy_commit() { emulator::async_copy_commit(); }
template <int PENDING> inline void async_copy_wait() { emulator::async_copy_wait(PENDING); }
// memcpy, not a float4 lvalue: the host compiler's aliasing rules stay satisfied.
template <typename T> inline void load_16_bytes(T *values, const T *address) {
    if (reinterpret_cast<std::uintptr_t>(address) % 16 != 0) {
        std::fprintf(stderr, "cuda emulator: a 16-byte load from an address not aligned to 16\n");
        std::abort();
    }
    std::memcpy(values, address, 16);
}
template <typename T> inline void store_16_bytes(T *address, const T *values) {
    if (reinterpret_cast<std::uintptr_t>(address) % 16 != 0) {
        std::fprintf(stderr, "cuda emulator: a 16-byte store to an address not aligned to 16\n");
        std::abort();
    }
    std::memcpy(address, values, 16);
}

#else

// The shared-memory address (a 32-bit offset in the shared window) of a generic pointer.
__device__ __forceinline__ unsigned shared_address(const void *pointer) {
    return static_cast<unsigned>(__cvta_generic_to_shared(pointer));
}

#if __CUDA_ARCH__ >= 800
template <int BYTES> __device__ __forceinline__ void async_copy(void *shared_dst, const void *global_src) {
    static_assert(BYTES == 4 || BYTES == 8 || BYTES == 16, "cp.async copies 4, 8 or 16 bytes");
    if (BYTES == 16) {
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(shared_address(shared_dst)), "l"(global_src) : "memory");
    } else {
        asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n" ::"r"(shared_address(shared_dst)), "l"(global_src), "n"(BYTES)
                     : "memory");
    }
}
__device__ __forceinline__ void async_copy_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int PENDING> __device__ __forceinline__ void async_copy_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(PENDING) : "memory");
}
#else
// Before sm_80: a plain copy, complete when it returns.
template <int BYTES> __device__ __forceinline__ void async_copy(void *shared_dst, const void *global_src) {
    if (BYTES == 16) *static_cast<float4 *>(shared_dst) = *static_cast<const float4 *>(global_src);
    else if (BYTES == 8) *static_cast<float2 *>(shared_dst) = *static_cast<const float2 *>(global_src);
    else *static_cast<float *>(shared_dst) = *static_cast<const float *>(global_src);
}
__device__ __forceinline__ void async_copy_commit() {}
template <int PENDING> __device__ __forceinline__ void async_copy_wait() {}
#endif

// Element by element on the register side, so that `values` (an array the compiler keeps in
// registers) needs no alignment of its own; `address` must be 16-byte aligned.
__device__ __forceinline__ void load_16_bytes(float *values, const float *address) {
    const float4 v = *reinterpret_cast<const float4 *>(address);
    values[0] = v.x, values[1] = v.y, values[2] = v.z, values[3] = v.w;
}
__device__ __forceinline__ void load_16_bytes(double *values, const double *address) {
    const double2 v = *reinterpret_cast<const double2 *>(address);
    values[0] = v.x, values[1] = v.y;
}
__device__ __forceinline__ void store_16_bytes(float *address, const float *values) {
    *reinterpret_cast<float4 *>(address) = make_float4(values[0], values[1], values[2], values[3]);
}
__device__ __forceinline__ void store_16_bytes(double *address, const double *values) {
    *reinterpret_cast<double2 *>(address) = make_double2(values[0], values[1]);
}

#endif
