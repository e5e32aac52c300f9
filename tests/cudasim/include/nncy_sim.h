// Runs CUDA C++ kernels on the host, for tests on machines without a GPU.
// Included before each kernel file.  The blocks of a launch run one after
// another; within a block, kernels that synchronise (__syncthreads) run each
// thread as a fiber that yields at the barrier, others run the threads in
// turn.  __shared__ variables become function statics, which is exact when
// blocks do not overlap.  Warp-level intrinsics are not provided: kernels
// must not use them.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <cfloat>
#include <climits>
#include <type_traits>
#include <utility>
#include <vector>
#include <ucontext.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __restrict__ __restrict

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
typedef dim3 uint3;

namespace nncy_sim {
inline thread_local uint3 thread_idx, block_idx;
inline thread_local dim3 block_dim, grid_dim;
// Fiber state of the current block (used when a kernel synchronises).
inline thread_local std::vector<ucontext_t>* fibers = nullptr;
inline thread_local ucontext_t* scheduler = nullptr;
inline thread_local unsigned current = 0;
inline thread_local std::vector<uint3>* fiber_idx = nullptr;
}  // namespace nncy_sim

#define threadIdx (nncy_sim::thread_idx)
#define blockIdx (nncy_sim::block_idx)
#define blockDim (nncy_sim::block_dim)
#define gridDim (nncy_sim::grid_dim)

inline void __syncthreads() {
    using namespace nncy_sim;
    if (!fibers) return;   // one thread per block: nothing to wait for
    unsigned me = current;
    swapcontext(&(*fibers)[me], scheduler);
    thread_idx = (*fiber_idx)[me];
}
inline void __threadfence() {}

// Threads run one at a time, so atomics are plain read-modify-writes.
template <typename T> inline T atomicAdd(T* p, T v) { T o = *p; *p = o + v; return o; }
template <typename T> inline T atomicMax(T* p, T v) { T o = *p; if (v > o) *p = v; return o; }
template <typename T> inline T atomicMin(T* p, T v) { T o = *p; if (v < o) *p = v; return o; }
template <typename T> inline T atomicExch(T* p, T v) { T o = *p; *p = v; return o; }
template <typename T> inline T atomicCAS(T* p, T cmp, T v) { T o = *p; if (o == cmp) *p = v; return o; }

inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
inline unsigned __float_as_uint(float f) { unsigned i; std::memcpy(&i, &f, 4); return i; }
inline float __uint_as_float(unsigned i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
inline unsigned __umulhi(unsigned a, unsigned b) {
    return (unsigned)(((unsigned long long)a * b) >> 32);
}
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
template <typename T> inline T __ldg(const T* p) { return *p; }
using std::isinf;
using std::isnan;
using std::isfinite;

namespace nncy_sim {

enum ArgKind { PTR = 0, I32 = 1, I64 = 2, F32 = 3, F64 = 4 };

template <typename A> constexpr int kind_of() {
    using T = std::remove_cv_t<std::remove_reference_t<A>>;
    if constexpr (std::is_pointer_v<T>) return PTR;
    else if constexpr (std::is_floating_point_v<T>) return sizeof(T) == 4 ? F32 : F64;
    else if constexpr (std::is_integral_v<T>) return sizeof(T) == 4 ? I32 : I64;
    else return -1;
}

template <typename... A, std::size_t... I>
inline void call(void (*f)(A...), void** args, std::index_sequence<I...>) {
    f(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(args[I])...);
}

template <typename... A> struct Entry {
    static void (*fn)(A...);
    static void** args;
    static void run() { call(fn, args, std::index_sequence_for<A...>{}); }
};
template <typename... A> void (*Entry<A...>::fn)(A...);
template <typename... A> void** Entry<A...>::args;

inline thread_local void (*fiber_body)() = nullptr;
inline void fiber_main() {
    fiber_body();
    // Finished: mark and return to the scheduler for good.
    (*fiber_idx)[current].x = UINT_MAX;
    swapcontext(&(*fibers)[current], scheduler);
}

// Checks the argument kinds, then runs the grid.  Returns 0, or -(1 + i) when
// argument i has the wrong kind, or -1000 - n when the count is wrong.
template <typename... A>
int launch(void (*f)(A...), void** args, const int* kinds, int nargs, const unsigned* g,
           const unsigned* b, int sync) {
    constexpr int n = sizeof...(A);
    if (nargs != n) return -1000 - n;
    const int want[] = {kind_of<A>()..., 0};
    for (int i = 0; i < n; ++i)
        if (want[i] != kinds[i]) return -(1 + i);
    Entry<A...>::fn = f;
    Entry<A...>::args = args;
    grid_dim = dim3(g[0], g[1], g[2]);
    block_dim = dim3(b[0], b[1], b[2]);
    const unsigned nt = b[0] * b[1] * b[2];
    std::vector<uint3> idx(nt);
    for (unsigned t = 0; t < nt; ++t)
        idx[t] = uint3(t % b[0], (t / b[0]) % b[1], t / (b[0] * b[1]));
    std::vector<ucontext_t> ctx(sync ? nt : 0);
    std::vector<std::vector<char>> stacks(sync ? nt : 0);
    ucontext_t sched;
    for (unsigned bz = 0; bz < g[2]; ++bz)
        for (unsigned by = 0; by < g[1]; ++by)
            for (unsigned bx = 0; bx < g[0]; ++bx) {
                block_idx = uint3(bx, by, bz);
                if (!sync) {
                    for (unsigned t = 0; t < nt; ++t) {
                        thread_idx = idx[t];
                        Entry<A...>::run();
                    }
                    continue;
                }
                std::vector<uint3> state(idx);
                fibers = &ctx;
                fiber_idx = &state;
                scheduler = &sched;
                fiber_body = &Entry<A...>::run;
                for (unsigned t = 0; t < nt; ++t) {
                    stacks[t].resize(256 * 1024);
                    getcontext(&ctx[t]);
                    ctx[t].uc_stack.ss_sp = stacks[t].data();
                    ctx[t].uc_stack.ss_size = stacks[t].size();
                    ctx[t].uc_link = nullptr;
                    makecontext(&ctx[t], fiber_main, 0);
                }
                // Round-robin until every thread has returned; each turn runs a
                // thread up to its next barrier.
                for (bool live = true; live;) {
                    live = false;
                    for (unsigned t = 0; t < nt; ++t) {
                        if (state[t].x == UINT_MAX) continue;
                        current = t;
                        thread_idx = state[t];
                        swapcontext(&sched, &ctx[t]);
                        live = live || state[t].x != UINT_MAX;
                    }
                }
                fibers = nullptr;
            }
    return 0;
}

}  // namespace nncy_sim
