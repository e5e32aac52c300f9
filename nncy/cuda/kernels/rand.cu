// Random numbers for the stochastic functions: a counter-based Philox4x32-10
// generator (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
// SC 2011), the samplers built on it, and the index maps that random crops,
// flips, shifts and choices apply.
//
// Every element i of a draw owns the stream with key (k0, k1) and counter
// words (block, ctr, i low, i high): ctr tells draws apart, i elements, and
// block counts the 128-bit blocks the element has used, so samplers that
// reject and retry simply read on.
#include "common.cuh"

// @instantiate nncy_philox_raw
// @instantiate nncy_rand_sample<{D}> D=0,1,2,3,4
// @instantiate nncy_rand_int
// @instantiate nncy_rand_map<{BWD}> BWD=0,1
// @instantiate nncy_rand_bilinear

struct nncy_philox {
    unsigned k0, k1, c[4], buf[4];
    int pos;

    __device__ nncy_philox(unsigned key0, unsigned key1, unsigned ctr, long long i)
        : k0(key0), k1(key1), pos(4) {
        c[0] = 0u;
        c[1] = ctr;
        c[2] = (unsigned)(unsigned long long)i;
        c[3] = (unsigned)((unsigned long long)i >> 32);
    }

    // One Philox4x32-10 block: out = philox(ctr, key).
    static __device__ void block(const unsigned* ctr, unsigned key0, unsigned key1,
                                 unsigned* out) {
        unsigned x0 = ctr[0], x1 = ctr[1], x2 = ctr[2], x3 = ctr[3];
        for (int r = 0; r < 10; ++r) {
            if (r) {
                key0 += 0x9E3779B9u;
                key1 += 0xBB67AE85u;
            }
            unsigned hi0 = __umulhi(0xD2511F53u, x0), lo0 = 0xD2511F53u * x0;
            unsigned hi1 = __umulhi(0xCD9E8D57u, x2), lo1 = 0xCD9E8D57u * x2;
            x0 = hi1 ^ x1 ^ key0;
            x1 = lo1;
            x2 = hi0 ^ x3 ^ key1;
            x3 = lo0;
        }
        out[0] = x0;
        out[1] = x1;
        out[2] = x2;
        out[3] = x3;
    }

    __device__ unsigned next() {
        if (pos == 4) {
            block(c, k0, k1, buf);
            ++c[0];
            pos = 0;
        }
        return buf[pos++];
    }

    // Uniform in [0, 1) with 24 random bits, and in (0, 1] (safe under log).
    __device__ float uniform() { return (next() >> 8) * (1.0f / 16777216.0f); }
    __device__ float uniform_pos() { return ((next() >> 8) + 1u) * (1.0f / 16777216.0f); }
    // Uniform in [0, 1) with 32 bits, for the binomial's double arithmetic.
    __device__ double uniform_d() { return next() * (1.0 / 4294967296.0); }

    // Standard normal (Box-Muller, one of the pair).
    __device__ float normal() {
        float r = sqrtf(-2.0f * logf(uniform_pos()));
        return r * cosf(6.2831853071795865f * uniform());
    }
};

// Gamma(k, 1): Marsaglia and Tsang's squeeze for k >= 1, boosted for k < 1
// with Gamma(k) = Gamma(k + 1) U^(1/k).
__device__ float nncy_gamma(nncy_philox& g, float k) {
    float boost = 1.0f;
    if (k < 1.0f) {
        boost = powf(g.uniform_pos(), 1.0f / k);
        k += 1.0f;
    }
    float d = k - 1.0f / 3.0f, c = 1.0f / sqrtf(9.0f * d);
    for (;;) {
        float x = g.normal(), v = 1.0f + c * x;
        if (v <= 0.0f) continue;
        v = v * v * v;
        float u = g.uniform_pos(), x2 = x * x;
        if (u < 1.0f - 0.0331f * x2 * x2 ||
            logf(u) < 0.5f * x2 + d * (1.0f - v + logf(v)))
            return boost * d * v;
    }
}

// Beta(a, b): Johnk's method when both are at most 1 (where the ratio of two
// gammas loses everything to underflow), else the ratio of two gammas.
__device__ float nncy_beta(nncy_philox& g, float a, float b) {
    if (a > 1.0f || b > 1.0f) {
        float x = nncy_gamma(g, a), y = nncy_gamma(g, b);
        return x / (x + y);
    }
    for (;;) {
        float u = g.uniform_pos(), v = g.uniform_pos();
        float x = powf(u, 1.0f / a), y = powf(v, 1.0f / b), s = x + y;
        if (s > 1.0f) continue;
        if (s > 0.0f) return x / s;
        float lx = logf(u) / a, ly = logf(v) / b, lm = fmaxf(lx, ly);
        lx -= lm;
        ly -= lm;
        return expf(lx - logf(expf(lx) + expf(ly)));
    }
}

// log k! minus its Stirling approximation.
__device__ double nncy_stirling_tail(double k) {
    return lgamma(k + 1.0) - ((k + 0.5) * log(k + 1.0) - (k + 1.0) + 0.91893853320467274);
}

// Binomial(n, p): inversion when n min(p, 1-p) < 10, else Hormann's BTRS.
__device__ double nncy_binomial(nncy_philox& g, double n, double p) {
    if (n <= 0.0 || p <= 0.0) return 0.0;
    if (p >= 1.0) return n;
    bool flip = p > 0.5;
    if (flip) p = 1.0 - p;
    double q = 1.0 - p, k;
    if (n * p < 10.0) {
        double s = p / q, a = (n + 1.0) * s;
        double bound = fmin(n, n * p + 10.0 * sqrt(n * p * q + 1.0));
        for (;;) {
            double f = pow(q, n), u = g.uniform_d();
            k = 0.0;
            while (u > f && k <= bound) {
                u -= f;
                k += 1.0;
                f *= a / k - s;
            }
            if (k <= bound) break;   // rounding ran past the tail: draw again
        }
    } else {
        double sd = sqrt(n * p * q), b = 1.15 + 2.53 * sd;
        double a = -0.0873 + 0.0248 * b + 0.01 * p, c = n * p + 0.5;
        double vr = 0.92 - 4.2 / b, r = p / q, alpha = (2.83 + 5.1 / b) * sd;
        double m = floor((n + 1.0) * p);
        for (;;) {
            double u = g.uniform_d() - 0.5, v = g.uniform_d(), us = 0.5 - fabs(u);
            k = floor((2.0 * a / us + b) * u + c);
            if (!(k >= 0.0 && k <= n)) continue;
            if (us >= 0.07 && v <= vr) break;
            v = log(v * alpha / (a / (us * us) + b));
            double ub = (m + 0.5) * log((m + 1.0) / (r * (n - m + 1.0))) +
                        (n + 1.0) * log((n - m + 1.0) / (n - k + 1.0)) +
                        (k + 0.5) * log(r * (n - k + 1.0) / (k + 1.0)) +
                        nncy_stirling_tail(m) + nncy_stirling_tail(n - m) -
                        nncy_stirling_tail(k) - nncy_stirling_tail(n - k);
            if (v <= ub) break;
        }
    }
    return flip ? n - k : k;
}

// The raw generator, for known-answer tests: out[4j..4j+3] = philox(ctr[4j..], key).
__global__ void nncy_philox_raw(long long n, unsigned k0, unsigned k1, const unsigned* ctr,
                                unsigned* out) {
    NNCY_LOOP(j, n) { nncy_philox::block(ctr + 4 * j, k0, k1, out + 4 * j); }
}

// y[i] = one sample of distribution D with parameters (a, b):
// 0 uniform in [a, b), 1 normal (mean a, sd b), 2 binomial (n = a, p = b),
// 3 gamma (shape a, scale b), 4 beta (a, b).
template <int D>
__global__ void nncy_rand_sample(long long n, unsigned k0, unsigned k1, unsigned ctr,
                                 double a, double b, float* y) {
    NNCY_LOOP(i, n) {
        nncy_philox g(k0, k1, ctr, i);
        float v;
        if (D == 0) v = (float)a + ((float)b - (float)a) * g.uniform();
        else if (D == 1) v = (float)a + (float)b * g.normal();
        else if (D == 2) v = (float)nncy_binomial(g, a, b);
        else if (D == 3) v = nncy_gamma(g, (float)a) * (float)b;
        else v = nncy_beta(g, (float)a, (float)b);
        y[i] = v;
    }
}

// y[i] = low + (a 64-bit draw mod range): integers in [low, low + range).
__global__ void nncy_rand_int(long long n, unsigned k0, unsigned k1, unsigned ctr,
                              long long low, unsigned long long range, int* y) {
    NNCY_LOOP(i, n) {
        nncy_philox g(k0, k1, ctr, i);
        unsigned long long hi = g.next();
        unsigned long long v = (hi << 32) | g.next();
        y[i] = (int)(low + (long long)(v % range));
    }
}

// A gather along every axis of an (nd)-axis array whose axis 0 counts the
// samples: output coordinate c_d reads input coordinate table[off_d + c_0 *
// size_d + c_d] (each sample its own map of axis d), or c_d where off_d < 0.
// meta = [out sizes (nd), input element strides (nd), off (nd)].
// Forward (BWD 0): dst[o] = src[in(o)].  Backward (BWD 1): dst[in(o)] += src[o]
// (atomic: a map may send several outputs to one input).
template <int BWD>
__global__ void nncy_rand_map(long long n, int nd, const long long* meta,
                              const long long* table, const float* src, float* dst) {
    const long long *size = meta, *stride = meta + nd, *off = meta + 2 * nd;
    NNCY_LOOP(o, n) {
        long long rest = o, at = 0, sample = 0;
        long long coord[8];
        for (int d = nd - 1; d >= 0; --d) {
            coord[d] = rest % size[d];
            rest /= size[d];
        }
        sample = coord[0];
        for (int d = 0; d < nd; ++d) {
            long long c = off[d] < 0 ? coord[d] : table[off[d] + sample * size[d] + coord[d]];
            at += c * stride[d];
        }
        if (BWD) atomicAdd(dst + at, src[o]);
        else dst[o] = src[at];
    }
}

// Bilinear sampling of images x (B, C, ih, iw) at source points (yy, xx), each
// (B, oh, ow), into y (B, C, oh, ow); neighbours outside the image count as 0.
__global__ void nncy_rand_bilinear(long long n, long long c, long long ih, long long iw,
                                   long long oh, long long ow, const float* yy,
                                   const float* xx, const float* x, float* y) {
    NNCY_LOOP(i, n) {
        long long q = i % ow, r = (i / ow) % oh, ch = (i / (ow * oh)) % c,
                  b = i / (ow * oh * c);
        long long p = (b * oh + r) * ow + q;
        float fy = yy[p], fx = xx[p], y0 = floorf(fy), x0 = floorf(fx);
        float wy = fy - y0, wx = fx - x0;
        long long iy = (long long)y0, ix = (long long)x0;
        const float* img = x + (b * c + ch) * ih * iw;
        float s = 0.0f;
        for (int dy = 0; dy < 2; ++dy)
            for (int dx = 0; dx < 2; ++dx) {
                long long yr = iy + dy, xr = ix + dx;
                if (yr < 0 || yr >= ih || xr < 0 || xr >= iw) continue;
                s += (dy ? wy : 1.0f - wy) * (dx ? wx : 1.0f - wx) * img[yr * iw + xr];
            }
        y[i] = s;
    }
}
