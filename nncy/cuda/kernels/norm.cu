// Elementwise passes of the normalization functions (nncy/cuda/norm.py).
// Statistics are CuPy reductions; these kernels apply per-group coefficients.
//
// Element i of an array (C order) belongs to group g and, for parameters that
// vary along the normalized axes, to parameter slot q.  Both come from the
// element's coordinates: meta holds nd sizes, then nd group strides, then nd
// parameter strides (0 along broadcast axes), with adjacent axes merged by
// the caller so that nd stays small.
#include "common.cuh"

// @instantiate nncy_norm_fwd<{T}> T=float
// @instantiate nncy_norm_bwd<{T}> T=float
// @instantiate nncy_prelu_fwd<{T}> T=float
// @instantiate nncy_prelu_bwd<{T}> T=float

// Flags of nncy_norm_fwd.
#define NNCY_NORM_RELU 1   // max(., 0) at the end
#define NNCY_NORM_Z 2      // add the residual z before the ReLU
#define NNCY_NORM_ELEM 4   // then * pg[q] + pb[q]
// Flags of nncy_norm_bwd.
#define NNCY_NORM_MASK 1   // u only where mask > 0
#define NNCY_NORM_ACCUM 2  // add to out

__device__ __forceinline__ void nncy_norm_index(long long i, int nd, const long long* meta,
                                                long long& g, long long& q) {
    g = 0;
    q = 0;
    for (int d = nd - 1; d >= 0; --d) {
        const long long s = meta[d];
        const long long c = i % s;
        i /= s;
        g += c * meta[nd + d];
        q += c * meta[2 * nd + d];
    }
}

// y = (x - center[g]) * a[g] + b[g], then (ELEM) * pg[q] + pb[q], (Z) + z,
// (RELU) max(., 0).
template <typename T>
__global__ void nncy_norm_fwd(long long n, int nd, const long long* meta, const T* x,
                              const T* z, const float* center, const float* a, const float* b,
                              const float* pg, const float* pb, T* y, int flags) {
    NNCY_LOOP(i, n) {
        long long g, q;
        nncy_norm_index(i, nd, meta, g, q);
        float v = (nncy_f(x[i]) - center[g]) * a[g] + b[g];
        if (flags & NNCY_NORM_ELEM) v = v * pg[q] + pb[q];
        if (flags & NNCY_NORM_Z) v += nncy_f(z[i]);
        if ((flags & NNCY_NORM_RELU) && !(v > 0.0f)) v = 0.0f;
        y[i] = nncy_t<T>(v);
    }
}

// out (+)= a[g] u' + b[g] (v - center[g]) + c[g], where u' = u, or (MASK) u
// where mask > 0 and 0 elsewhere.
template <typename T>
__global__ void nncy_norm_bwd(long long n, int nd, const long long* meta, const T* u,
                              const T* v, const T* mask, const float* a, const float* b,
                              const float* center, const float* c, T* out, int flags) {
    NNCY_LOOP(i, n) {
        long long g, q;
        nncy_norm_index(i, nd, meta, g, q);
        float ui = nncy_f(u[i]);
        if ((flags & NNCY_NORM_MASK) && !(nncy_f(mask[i]) > 0.0f)) ui = 0.0f;
        float r = a[g] * ui + b[g] * (nncy_f(v[i]) - center[g]) + c[g];
        if (flags & NNCY_NORM_ACCUM) r += nncy_f(out[i]);
        out[i] = nncy_t<T>(r);
    }
}

// PReLU over x seen as (outer, channels, inner): y = x where x >= 0, else
// w[channel] x (channels 1: one shared slope).
template <typename T>
__global__ void nncy_prelu_fwd(long long n, long long channels, long long inner, const T* x,
                               const float* w, T* y) {
    NNCY_LOOP(i, n) {
        const float v = nncy_f(x[i]);
        y[i] = nncy_t<T>(v >= 0.0f ? v : v * w[(i / inner) % channels]);
    }
}

// dx (+)= dy where x >= 0, else w[channel] dy.
template <typename T>
__global__ void nncy_prelu_bwd(long long n, long long channels, long long inner, const T* x,
                               const float* w, const T* dy, T* dx, int accum) {
    NNCY_LOOP(i, n) {
        const float g = nncy_f(dy[i]);
        float r = nncy_f(x[i]) >= 0.0f ? g : g * w[(i / inner) % channels];
        if (accum) r += nncy_f(dx[i]);
        dx[i] = nncy_t<T>(r);
    }
}
