// Convolution family: im2col / col2im over N-D windows (the matrix products
// run in cuBLAS) and the adaptive separable convolution.
#include "common.cuh"

// @instantiate nncy_im2col
// @instantiate nncy_col2im
// @instantiate nncy_asconv_fwd
// @instantiate nncy_asconv_gx
// @instantiate nncy_asconv_gk<{V}> V=0,1

// Geometry of a grouped convolution over ns spatial axes: m[6 * a + j] holds,
// for spatial axis a, j = 0 input length, 1 output length, 2 kernel size,
// 3 pad, 4 stride, 5 dilation.  x has `nb` samples of C channels (channel
// first: (nb, C, L...), channel last: (nb, L..., C)); the C channels form G
// groups of Cg.  A column row r of group g holds one (input channel, kernel
// tap) pair ordered like the weight: channel first r = cg * Kp + k, channel
// last r = k * Cg + cg.  col is (G, Cg * Kp, nb, Op), Op output positions.

struct NncyGeom {
    long long lp, op, kp;  // products of the input, output and kernel sizes
};

__device__ __forceinline__ NncyGeom nncy_geom(const long long* m, int ns) {
    NncyGeom g{1, 1, 1};
    for (int a = 0; a < ns; ++a) {
        g.lp *= m[6 * a];
        g.op *= m[6 * a + 1];
        g.kp *= m[6 * a + 2];
    }
    return g;
}

__global__ void nncy_im2col(long long n, const float* x, float* col, const long long* m,
                            int ns, long long nb, long long C, long long G, int cl) {
    const NncyGeom s = nncy_geom(m, ns);
    const long long cg_n = C / G, rows = cg_n * s.kp;
    NNCY_LOOP(i, n) {
        long long o = i % s.op, t = i / s.op;
        const long long b = t % nb;
        t /= nb;
        const long long r = t % rows, g = t / rows;
        long long k = cl ? r / cg_n : r % s.kp;
        const long long c = g * cg_n + (cl ? r % cg_n : r / s.kp);
        long long lin = 0, mult = 1;
        bool inside = true;
        for (int a = ns - 1; a >= 0; --a) {
            const long long* d = m + 6 * a;
            const long long p = (o % d[1]) * d[4] - d[3] + (k % d[2]) * d[5];
            o /= d[1];
            k /= d[2];
            if (p < 0 || p >= d[0]) inside = false;
            lin += p * mult;
            mult *= d[0];
        }
        const long long xi = cl ? (b * s.lp + lin) * C + c : (b * C + c) * s.lp + lin;
        col[i] = inside ? x[xi] : 0.0f;
    }
}

// The transpose of nncy_im2col: every x element gathers the column entries
// that read it (no atomics), x = (accum ? x : 0) + sum.
__global__ void nncy_col2im(long long n, const float* col, float* x, const long long* m,
                            int ns, long long nb, long long C, long long G, int cl, int accum) {
    const NncyGeom s = nncy_geom(m, ns);
    const long long cg_n = C / G, rows = cg_n * s.kp;
    NNCY_LOOP(i, n) {
        long long c, lin, b;
        if (cl) {
            c = i % C;
            lin = (i / C) % s.lp;
            b = i / C / s.lp;
        } else {
            lin = i % s.lp;
            c = (i / s.lp) % C;
            b = i / s.lp / C;
        }
        const long long g = c / cg_n, cg = c % cg_n;
        long long pos[8];
        for (int a = ns - 1; a >= 0; --a) {
            pos[a] = lin % m[6 * a];
            lin /= m[6 * a];
        }
        float sum = 0.0f;
        for (long long k = 0; k < s.kp; ++k) {
            long long kk = k, o = 0, omult = 1;
            bool hit = true;
            for (int a = ns - 1; a >= 0 && hit; --a) {
                const long long* d = m + 6 * a;
                const long long t = pos[a] + d[3] - (kk % d[2]) * d[5];
                kk /= d[2];
                if (t < 0 || t % d[4] != 0 || t / d[4] >= d[1]) hit = false;
                o += (t / d[4]) * omult;
                omult *= d[1];
            }
            if (!hit) continue;
            const long long r = cl ? k * cg_n + cg : cg * s.kp + k;
            sum += col[((g * rows + r) * nb + b) * s.op + o];
        }
        x[i] = accum ? x[i] + sum : sum;
    }
}

// Adaptive separable convolution (NCHW), d = {B, C, H, W, Kv, Hv, Wv, Kh, Hh, Wh}:
//   y[b, c, h, w] = sum_{j < Kv, i < Kh} kv[b, j, h, w] kh[b, i, h, w] x[b, c, h + j, w + i]
// with y of size (H - Kv + 1, W - Kh + 1); kv and kh may be larger than y
// (entries beyond it are unused and get a zero gradient).

__global__ void nncy_asconv_fwd(long long n, const float* x, const float* kv, const float* kh,
                                float* y, const long long* d) {
    const long long C = d[1], H = d[2], W = d[3], KV = d[4], HV = d[5], WV = d[6];
    const long long KH = d[7], HH = d[8], WH = d[9], oh = H - KV + 1, ow = W - KH + 1;
    NNCY_LOOP(i, n) {
        const long long w = i % ow, h = (i / ow) % oh, bc = i / ow / oh, b = bc / C;
        const float* xp = x + (bc * H + h) * W + w;
        float sum = 0.0f;
        for (long long j = 0; j < KV; ++j) {
            float t = 0.0f;
            for (long long q = 0; q < KH; ++q)
                t += kh[((b * KH + q) * HH + h) * WH + w] * xp[j * W + q];
            sum += kv[((b * KV + j) * HV + h) * WV + w] * t;
        }
        y[i] = sum;
    }
}

// gx[b, c, h, w] (+)= sum over the outputs (h - j, w - q) that read x[b, c, h, w].
__global__ void nncy_asconv_gx(long long n, const float* gy, const float* kv, const float* kh,
                               float* gx, const long long* d, int accum) {
    const long long C = d[1], H = d[2], W = d[3], KV = d[4], HV = d[5], WV = d[6];
    const long long KH = d[7], HH = d[8], WH = d[9], oh = H - KV + 1, ow = W - KH + 1;
    NNCY_LOOP(i, n) {
        const long long w = i % W, h = (i / W) % H, bc = i / W / H, b = bc / C;
        float sum = 0.0f;
        for (long long j = 0; j < KV; ++j) {
            const long long y0 = h - j;
            if (y0 < 0 || y0 >= oh) continue;
            for (long long q = 0; q < KH; ++q) {
                const long long x0 = w - q;
                if (x0 < 0 || x0 >= ow) continue;
                sum += gy[(bc * oh + y0) * ow + x0] * kv[((b * KV + j) * HV + y0) * WV + x0]
                       * kh[((b * KH + q) * HH + y0) * WH + x0];
            }
        }
        gx[i] = accum ? gx[i] + sum : sum;
    }
}

// Gradient of the vertical (V = 1) or horizontal (V = 0) kernel: element
// (b, tap, h, w) sums over the channels and the other kernel's taps.
template <int V>
__global__ void nncy_asconv_gk(long long n, const float* x, const float* other, const float* gy,
                               float* gk, const long long* d, int accum) {
    const long long C = d[1], H = d[2], W = d[3], KV = d[4], KH = d[7];
    const long long oh = H - KV + 1, ow = W - KH + 1;
    const long long K = V ? KV : KH, HK = V ? d[5] : d[8], WK = V ? d[6] : d[9];
    const long long KO = V ? KH : KV, HO = V ? d[8] : d[5], WO = V ? d[9] : d[6];
    NNCY_LOOP(i, n) {
        const long long w = i % WK, h = (i / WK) % HK, tap = (i / WK / HK) % K;
        const long long b = i / WK / HK / K;
        float sum = 0.0f;
        if (h < oh && w < ow) {
            for (long long u = 0; u < KO; ++u) {
                const float ko = other[((b * KO + u) * HO + h) * WO + w];
                const long long j = V ? tap : u, q = V ? u : tap;
                float t = 0.0f;
                for (long long c = 0; c < C; ++c) {
                    const long long bc = b * C + c;
                    t += gy[(bc * oh + h) * ow + w] * x[(bc * H + h + j) * W + w + q];
                }
                sum += ko * t;
            }
        }
        gk[i] = accum ? gk[i] + sum : sum;
    }
}
