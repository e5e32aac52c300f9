// Kernels of nncy/cuda/loss.py: non-maximum suppression, the power-of-two
// rounding of incremental network quantization, the overlap-add of
// short-time Fourier frames and the counts of the confusion matrix.
#include "common.cuh"

// @instantiate nncy_nms_greedy
// @instantiate nncy_nms_by_objectness
// @instantiate nncy_inq_quantize
// @instantiate nncy_overlap_add
// @instantiate nncy_count

// Products that the compiler must not fuse into an FMA, so that the IoU is
// rounded as the host computes it.
#if defined(__CUDACC_RTC__) || defined(__CUDACC__)
__device__ __forceinline__ double nncy_dmul(double a, double b) { return __dmul_rn(a, b); }
#else
__device__ __forceinline__ double nncy_dmul(double a, double b) { return a * b; }
#endif

// Whether boxes i and j, given as (centre x, centre y, w, h), overlap with an
// intersection over union above nms.
__device__ __forceinline__ bool nncy_overlaps(const float* bi, const float* bj, double nms) {
    double side[2];
    for (int d = 0; d < 2; ++d) {
        double ci = bi[d], ri = (double)bi[d + 2] / 2, cj = bj[d], rj = (double)bj[d + 2] / 2;
        side[d] = fmin(ci + ri, cj + rj) - fmax(ci - ri, cj - rj);   // centre +- half size
    }
    double inter = (side[0] > 0 && side[1] > 0) ? nncy_dmul(side[0], side[1]) : 0.0;
    double ai = nncy_dmul((double)bi[2], (double)bi[3]);
    double aj = nncy_dmul((double)bj[2], (double)bj[3]);
    double uni = ai + aj - inter;
    double iou = uni > 0 ? inter / uni : 0.0;
    return iou > nms;
}

// Greedy suppression, one block per problem p = (b, c), whose N boxes score
// score[(b * N + i) * C + c] and come in order[p * N + r] by falling score.
// Boxes are visited in that order; one with a positive score that no kept box
// has suppressed is kept (keep at (b, i, c) set to 1, else 0) and suppresses
// the boxes it overlaps.  sup holds P * N zeros on entry.  x is (B, N, D) with
// the box in its first 4 columns.
__global__ void nncy_nms_greedy(long long P, long long N, long long C, long long D,
                                const double* score, const long long* order, const float* x,
                                double nms, int* sup, float* keep) {
    for (long long p = blockIdx.x; p < P; p += gridDim.x) {
        long long b = p / C, c = p % C;
        const long long* ord = order + p * N;
        int* s = sup + p * N;
        const float* xb = x + b * N * D;
        for (long long k = 0; k < N; ++k) {
            long long i = ord[k];
            // s[i] is not written during this step (only j != i are), so every
            // thread sees the same value
            bool alive = score[(b * N + i) * C + c] > 0 && !s[i];
            if (alive) {
                for (long long j = threadIdx.x; j < N; j += blockDim.x)
                    if (j != i && !s[j] && nncy_overlaps(xb + i * D, xb + j * D, nms)) s[j] = 1;
            }
            if (threadIdx.x == 0) keep[(b * N + i) * C + c] = alive ? 1.0f : 0.0f;
            __syncthreads();
        }
    }
}

// Suppression by objectness: box i goes (keep 0) when any box ranked above it
// (higher objectness, ties by index) overlaps it, kept or not.
__global__ void nncy_nms_by_objectness(long long B, long long N, long long D, const double* obj,
                                       const float* x, double nms, float* keep) {
    NNCY_LOOP(e, B * N) {
        long long b = e / N, i = e % N;
        const double* o = obj + b * N;
        const float* xb = x + b * N * D;
        bool kept = true;
        for (long long j = 0; j < N && kept; ++j) {
            bool above = o[j] > o[i] || (o[j] == o[i] && j < i);
            if (above && nncy_overlaps(xb + i * D, xb + j * D, nms)) kept = false;
        }
        keep[e] = kept ? 1.0f : 0.0f;
    }
}

// out = w rounded to the nearest of {0, +-2^n2, ..., +-2^n1} where fixed,
// else w; n1 = floor(log2(4 amax / 3)), n2 = n1 + 1 - 2^(num_bits - 2).
__global__ void nncy_inq_quantize(long long n, const float* w, const bool* fixed,
                                  const float* amax, int num_bits, float* out) {
    double s = amax[0];
    long long n1 = s > 0 ? (long long)floor(log2(4.0 * s / 3.0)) : 0;
    long long span = num_bits - 2 < 62 ? (1LL << (num_bits - 2)) : (1LL << 62);
    long long n2 = n1 + 1 - span;
    if (n2 < -1100) n2 = -1100;   // below every double: the same levels
    NNCY_LOOP(i, n) {
        float v = w[i];
        if (!fixed[i]) {
            out[i] = v;
            continue;
        }
        double a = fabs((double)v), q = 0.0;
        if (s > 0 && a >= ldexp(1.0, (int)(n2 - 1))) {
            // the midpoint between 2^(k-1) and 2^k is 1.5 * 2^(k-1)
            int e;
            frexp(a, &e);
            long long k = e - 1;          // 2^k <= a < 2^(k+1)
            if (a >= ldexp(1.5, (int)k)) ++k;
            k = k < n2 ? n2 : (k > n1 ? n1 : k);
            q = ldexp(1.0, (int)k);
        }
        out[i] = (float)(v > 0 ? q : (v < 0 ? -q : 0.0));
    }
}

// out (B, L) += frames (B, TN) at positions idx (TN); positions outside
// [0, L) are skipped.
__global__ void nncy_overlap_add(long long n, const float* frames, const long long* idx,
                                 long long tn, long long L, float* out) {
    NNCY_LOOP(e, n) {
        long long b = e / tn, j = idx[e % tn];
        if (j >= 0 && j < L) atomicAdd(out + b * L + j, frames[e]);
    }
}

// counts[cell[i]] += 1 for every i (a histogram of cell indices).
__global__ void nncy_count(long long n, const long long* cell, int* counts) {
    NNCY_LOOP(i, n) atomicAdd(counts + cell[i], 1);
}
