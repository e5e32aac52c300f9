// Shared by the kernel files (not compiled on its own): storage-type
// conversions, the grid-stride loop and a block-wide sum.
#ifndef NNCY_COMMON_CUH
#define NNCY_COMMON_CUH

#include <cuda_fp16.h>

// Kernels compute in float; T is the storage type (float or __half).
__device__ __forceinline__ float nncy_f(float x) { return x; }
__device__ __forceinline__ float nncy_f(__half x) { return __half2float(x); }
template <typename T> __device__ __forceinline__ T nncy_t(float v);
template <> __device__ __forceinline__ float nncy_t<float>(float v) { return v; }
template <> __device__ __forceinline__ __half nncy_t<__half>(float v) { return __float2half(v); }

// Every index in [0, n) once, over the whole grid.
#define NNCY_LOOP(i, n) \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); \
         i += (long long)blockDim.x * gridDim.x)

// Sum of v over the block's threads (B = blockDim.x, a power of two), returned
// to every thread.  s is __shared__ float[B]; every thread must call this.
template <int B>
__device__ __forceinline__ float nncy_block_sum(float v, float* s) {
    s[threadIdx.x] = v;
    __syncthreads();
    for (int w = B / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) s[threadIdx.x] += s[threadIdx.x + w];
        __syncthreads();
    }
    float r = s[0];
    __syncthreads();
    return r;
}

#endif  // NNCY_COMMON_CUH
