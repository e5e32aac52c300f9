// Kernels of nncy/cuda/mathops.py: the extremes (max / min with their
// index), their gradient scatter, the product gradient and arange.  The
// reductions see their input as (outer, r, inner) and reduce the middle axis;
// "line" k = (o, i) of the n_out = outer * inner lines starts at
// x[o * r * inner + i] and steps by inner.
#include "common.cuh"

// @instantiate nncy_extreme_cols<{MAX}> MAX=0,1
// @instantiate nncy_extreme_rows<{MAX},{B}> MAX=0,1 B=256
// @instantiate nncy_arg_scatter
// @instantiate nncy_prod_grad
// @instantiate nncy_arange

// Whether candidate (v, j) wins over the current best (bv, bj) under the
// rule of the CPU kernels: NaN loses to any number, a strictly better value
// wins, and ties (NaN included) go to the smaller index.  j < 0: no candidate.
template <int MAX>
__device__ __forceinline__ bool nncy_extreme_wins(float v, long long j, float bv, long long bj) {
    if (j < 0) return false;
    if (bj < 0) return true;
    const bool vn = v != v, bn = bv != bv;
    if (vn != bn) return bn;
    if (!vn) {
        if (MAX ? v > bv : v < bv) return true;
        if (MAX ? v < bv : v > bv) return false;
    }
    return j < bj;
}

// The result of line k: its extreme (or `empty` when the line is all NaN)
// and the index along r.
__device__ __forceinline__ void nncy_extreme_put(long long k, float bv, long long bj,
                                                 float empty, float* vals, long long* idx) {
    vals[k] = bv != bv ? empty : bv;
    idx[k] = bj;
}

// One thread per line (narrow r, or many lines).
template <int MAX>
__global__ void nncy_extreme_cols(long long n_out, long long r, long long inner, const float* x,
                                  float* vals, long long* idx, float empty) {
    NNCY_LOOP(k, n_out) {
        const float* line = x + (k / inner) * r * inner + k % inner;
        float bv = line[0];
        long long bj = 0;
        for (long long j = 1; j < r; ++j) {
            const float v = line[j * inner];
            if (nncy_extreme_wins<MAX>(v, j, bv, bj)) { bv = v; bj = j; }
        }
        nncy_extreme_put(k, bv, bj, empty, vals, idx);
    }
}

// One block of B threads per line (long r): each thread folds every B-th
// element, then the block folds the B partial results.
template <int MAX, int B>
__global__ void nncy_extreme_rows(long long n_out, long long r, long long inner, const float* x,
                                  float* vals, long long* idx, float empty) {
    __shared__ float sv[B];
    __shared__ long long sj[B];
    for (long long k = blockIdx.x; k < n_out; k += gridDim.x) {
        const float* line = x + (k / inner) * r * inner + k % inner;
        float bv = 0.0f;
        long long bj = -1;
        for (long long j = threadIdx.x; j < r; j += B) {
            const float v = line[j * inner];
            if (nncy_extreme_wins<MAX>(v, j, bv, bj)) { bv = v; bj = j; }
        }
        sv[threadIdx.x] = bv;
        sj[threadIdx.x] = bj;
        __syncthreads();
        for (int w = B / 2; w > 0; w >>= 1) {
            if (threadIdx.x < w &&
                nncy_extreme_wins<MAX>(sv[threadIdx.x + w], sj[threadIdx.x + w],
                                       sv[threadIdx.x], sj[threadIdx.x])) {
                sv[threadIdx.x] = sv[threadIdx.x + w];
                sj[threadIdx.x] = sj[threadIdx.x + w];
            }
            __syncthreads();
        }
        if (threadIdx.x == 0) nncy_extreme_put(k, sv[0], sj[0], empty, vals, idx);
        __syncthreads();
    }
}

// gx[o, idx[k], i] += gy[k] for every line k = (o, i); each line owns its
// element, so there are no conflicts.
__global__ void nncy_arg_scatter(long long n_out, long long r, long long inner, const float* gy,
                                 const long long* idx, float* gx) {
    NNCY_LOOP(k, n_out) {
        gx[((k / inner) * r + idx[k]) * inner + k % inner] += gy[k];
    }
}

// gx[o, j, i] = gy[k] * (product of the line without element j), from prefix
// and suffix products in the CPU kernel's order (no division: exact where
// the line holds zeros).
__global__ void nncy_prod_grad(long long n_out, long long r, long long inner, const float* x,
                               const float* gy, float* gx) {
    NNCY_LOOP(k, n_out) {
        const long long base = (k / inner) * r * inner + k % inner;
        float acc = 1.0f;
        for (long long j = 0; j < r; ++j) {
            gx[base + j * inner] = acc;
            acc *= x[base + j * inner];
        }
        acc = gy[k];
        for (long long j = r - 1; j >= 0; --j) {
            gx[base + j * inner] *= acc;
            acc *= x[base + j * inner];
        }
    }
}

// y[i] = start + step + ... + step (i steps, accumulated in float as the CPU
// kernel does, so the values match it exactly): one thread.
__global__ void nncy_arange(long long n, float start, float step, float* y) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    float v = start;
    for (long long i = 0; i < n; ++i) {
        y[i] = v;
        v += step;
    }
}
