// Window pooling (max, sum, average) over N-D windows, patch correlation and
// warping by a flow field.  Everything computes and stores float32.
#include "common.cuh"

// ---------------------------------------------------------------------------
// Pooling.  The geometry g is the CPU class's: [outer, nd, including_pad,
// then per axis (len, out, kernel, stride, pad)].  The input is `outer`
// contiguous planes of the axes' lengths; output o of an axis covers padded
// positions [o s, o s + k).  Taps in the padding are skipped.

#define NNCY_POOL_AXES 8

// OP: 0 max, 1 sum, 2 average.
#define NNCY_POOL_MAX 0
#define NNCY_POOL_AVG 2

struct NncyWindow {
    int nd;
    long long pin, pout, taps;
    const long long* ax;   // (len, out, k, s, p) per axis

    __device__ NncyWindow(const long long* g) : nd((int)g[1]), pin(1), pout(1), taps(1), ax(g + 3) {
        for (int j = 0; j < nd; ++j) {
            pin *= ax[5 * j];
            pout *= ax[5 * j + 1];
            taps *= ax[5 * j + 2];
        }
    }

    // The output coordinates of position r of a plane.
    __device__ void coords(long long r, long long* o) const {
        for (int j = nd - 1; j >= 0; --j) {
            long long n = ax[5 * j + 1];
            o[j] = r % n;
            r /= n;
        }
    }

    // Plane index of tap t (row-major over the window) of output o, or -1 in
    // the padding.
    __device__ long long tap(const long long* o, long long t) const {
        long long idx = 0, stride = 1;
        for (int j = nd - 1; j >= 0; --j) {
            const long long* a = ax + 5 * j;
            long long k = a[2];
            long long pos = o[j] * a[3] + t % k - a[4];
            t /= k;
            if (pos < 0 || pos >= a[0]) return -1;
            idx += pos * stride;
            stride *= a[0];
        }
        return idx;
    }

    // Divisor of average pooling: the window positions inside the padded
    // input (including_pad) or inside the input.
    __device__ float count(const long long* o, bool incl) const {
        float c = 1.0f;
        for (int j = 0; j < nd; ++j) {
            const long long* a = ax + 5 * j;
            long long start = o[j] * a[3], end = start + a[2];
            long long n;
            if (incl) {
                long long hi = a[0] + 2 * a[4];
                n = (end < hi ? end : hi) - start;
            } else {
                long long hi = a[0] + a[4];
                long long lo = start > a[4] ? start : a[4];
                n = (end < hi ? end : hi) - lo;
            }
            c *= (float)(n > 0 ? n : 0);
        }
        return c;
    }
};

// y (+)= pool(x), one thread per output.
template <int OP>
__global__ void nncy_pool_fwd(long long n, const long long* g, const float* x, float* y, int accum) {
    NncyWindow w(g);
    long long o[NNCY_POOL_AXES];
    NNCY_LOOP(q, n) {
        long long plane = q / w.pout;
        w.coords(q % w.pout, o);
        const float* xp = x + plane * w.pin;
        float r = OP == NNCY_POOL_MAX ? -__int_as_float(0x7f800000) : 0.0f;
        for (long long t = 0; t < w.taps; ++t) {
            long long i = w.tap(o, t);
            if (i < 0) continue;
            float u = xp[i];
            if (OP == NNCY_POOL_MAX) {
                if (u > r) r = u;   // NaN never wins, as on the CPU
            } else {
                r += u;
            }
        }
        if (OP == NNCY_POOL_AVG) r /= w.count(o, g[2] != 0);
        y[q] = accum ? y[q] + r : r;
    }
}

// gx += d pool / dx applied to gy, one thread per output, scattered with
// atomicAdd (windows overlap).  Max pooling routes gy to the first tap, in
// row-major order, that beats all earlier ones (x is read by max only).
template <int OP>
__global__ void nncy_pool_bwd(long long n, const long long* g, const float* x, const float* gy,
                              float* gx) {
    NncyWindow w(g);
    long long o[NNCY_POOL_AXES];
    NNCY_LOOP(q, n) {
        long long plane = q / w.pout;
        w.coords(q % w.pout, o);
        float* gp = gx + plane * w.pin;
        float v = gy[q];
        if (OP == NNCY_POOL_MAX) {
            const float* xp = x + plane * w.pin;
            float best = 0.0f;
            long long arg = -1;
            for (long long t = 0; t < w.taps; ++t) {
                long long i = w.tap(o, t);
                if (i < 0) continue;
                float u = xp[i];
                if (arg < 0 || u > best) {
                    best = u;
                    arg = i;
                }
            }
            if (arg >= 0) atomicAdd(gp + arg, v);
        } else {
            if (OP == NNCY_POOL_AVG) v /= w.count(o, g[2] != 0);
            for (long long t = 0; t < w.taps; ++t) {
                long long i = w.tap(o, t);
                if (i >= 0) atomicAdd(gp + i, v);
            }
        }
    }
}

// @instantiate nncy_pool_fwd<{OP}> OP=0,1,2
// @instantiate nncy_pool_bwd<{OP}> OP=0,1,2

// ---------------------------------------------------------------------------
// Patch correlation on NCHW arrays.  m = [N, H, W, C, patch h, w, shift h, w,
// patch_step h, w, shift_step h, w, pad top, bottom, left, right, out h, w,
// shifts h, w].  y is (N, shifts h, shifts w, out h, out w):
//   y[n, iy, ix, oy, ox] = sum over ky, kx, c of x1[n, c, y, x] * x2[n, c, y + sy, x + sx]
// with (y, x) = (oy step_h - pad_t + ky, ox step_w - pad_l + kx) and
// (sy, sx) = (iy shift_step_h - shift_h, ix shift_step_w - shift_w); pairs
// with either sample outside the image contribute nothing.

__global__ void nncy_patch_corr_fwd(long long n, const long long* m, const float* x1,
                                    const float* x2, float* y) {
    long long H = m[1], W = m[2], C = m[3];
    long long oh = m[16], ow = m[17], cy = m[18], cx = m[19];
    NNCY_LOOP(q, n) {
        long long r = q;
        long long ox = r % ow; r /= ow;
        long long oy = r % oh; r /= oh;
        long long ix = r % cx; r /= cx;
        long long iy = r % cy;
        long long b = r / cy;
        long long y0 = oy * m[8] - m[12], x0 = ox * m[9] - m[14];
        long long sy = iy * m[10] - m[6], sx = ix * m[11] - m[7];
        float acc = 0.0f;
        for (long long ky = 0; ky < m[4]; ++ky) {
            long long ya = y0 + ky, yb = ya + sy;
            if (ya < 0 || ya >= H || yb < 0 || yb >= H) continue;
            for (long long kx = 0; kx < m[5]; ++kx) {
                long long xa = x0 + kx, xb = xa + sx;
                if (xa < 0 || xa >= W || xb < 0 || xb >= W) continue;
                for (long long c = 0; c < C; ++c) {
                    long long plane = (b * C + c) * H * W;
                    acc += x1[plane + ya * W + xa] * x2[plane + yb * W + xb];
                }
            }
        }
        y[q] = acc;
    }
}

// The first and one past the last patch number o (< out) whose patch
// [o step - pad, o step - pad + patch) covers position p.
__device__ __forceinline__ void nncy_covering(long long p, long long patch, long long step,
                                              long long pad, long long out, long long* first,
                                              long long* last) {
    long long lo = p - patch + 1 + pad, hi = p + pad;
    *first = lo <= 0 ? 0 : (lo + step - 1) / step;
    long long l = hi / step + 1;
    *last = l < out ? l : out;
}

// gx += the gradient with respect to x1 (WHICH 0) or x2 (WHICH 1), one
// thread per input element, gathering over the shifts and covering patches.
template <int WHICH>
__global__ void nncy_patch_corr_bwd(long long n, const long long* m, const float* x1,
                                    const float* x2, const float* gy, float* gx) {
    long long H = m[1], W = m[2], C = m[3];
    long long oh = m[16], ow = m[17], cy = m[18], cx = m[19];
    NNCY_LOOP(i, n) {
        long long xx = i % W, yy = (i / W) % H;
        long long pc = i / (H * W);   // plane (n, c)
        long long b = pc / C;
        const float* other = (WHICH == 0 ? x2 : x1) + pc * H * W;
        float acc = 0.0f;
        for (long long iy = 0; iy < cy; ++iy) {
            long long sy = iy * m[10] - m[6];
            long long ya = WHICH == 0 ? yy : yy - sy;   // the x1 row of the pair
            long long yo = WHICH == 0 ? yy + sy : ya;   // the other input's row
            if (ya < 0 || ya >= H || (WHICH == 0 && (yo < 0 || yo >= H))) continue;
            long long oy0, oy1;
            nncy_covering(ya, m[4], m[8], m[12], oh, &oy0, &oy1);
            for (long long ix = 0; ix < cx; ++ix) {
                long long sx = ix * m[11] - m[7];
                long long xa = WHICH == 0 ? xx : xx - sx;
                long long xo = WHICH == 0 ? xx + sx : xa;
                if (xa < 0 || xa >= W || (WHICH == 0 && (xo < 0 || xo >= W))) continue;
                long long ox0, ox1;
                nncy_covering(xa, m[5], m[9], m[14], ow, &ox0, &ox1);
                float s = 0.0f;
                const float* g = gy + ((b * cy + iy) * cx + ix) * oh * ow;
                for (long long oy = oy0; oy < oy1; ++oy)
                    for (long long ox = ox0; ox < ox1; ++ox) s += g[oy * ow + ox];
                acc += s * other[yo * W + xo];
            }
        }
        gx[i] += acc;
    }
}

// @instantiate nncy_patch_corr_fwd
// @instantiate nncy_patch_corr_bwd<{WHICH}> WHICH=0,1

// ---------------------------------------------------------------------------
// Warp by flow: bilinear sampling of data (N, C, H, W) at (y + flow[:, 1],
// x + flow[:, 0]), coordinates clamped to the image.  Coordinates and weights
// in double, as the CPU class computes them.

struct NncyWarpPoint {
    long long x0, x1, y0, y1;
    double wx, wy;
    bool inx, iny;   // strictly inside (the clamp passes the gradient)

    __device__ NncyWarpPoint(const float* flow, long long b, long long y, long long x, long long H,
                             long long W) {
        long long hw = H * W, at = y * W + x;
        double xs = (double)x + (double)flow[(b * 2) * hw + at];
        double ys = (double)y + (double)flow[(b * 2 + 1) * hw + at];
        inx = xs > 0 && xs < (double)(W - 1);
        iny = ys > 0 && ys < (double)(H - 1);
        xs = xs < 0 ? 0.0 : (xs > (double)(W - 1) ? (double)(W - 1) : xs);
        ys = ys < 0 ? 0.0 : (ys > (double)(H - 1) ? (double)(H - 1) : ys);
        x0 = (long long)floor(xs);
        y0 = (long long)floor(ys);
        x0 = x0 < 0 ? 0 : (x0 > W - 1 ? W - 1 : x0);   // NaN flow: stay in bounds
        y0 = y0 < 0 ? 0 : (y0 > H - 1 ? H - 1 : y0);
        x1 = x0 + 1 < W ? x0 + 1 : W - 1;
        y1 = y0 + 1 < H ? y0 + 1 : H - 1;
        wx = xs - (double)x0;
        wy = ys - (double)y0;
    }
};

__global__ void nncy_warp_fwd(long long n, long long C, long long H, long long W, const float* d,
                              const float* flow, float* y) {
    NNCY_LOOP(i, n) {
        long long x = i % W, yy = (i / W) % H, b = i / (C * H * W);
        NncyWarpPoint p(flow, b, yy, x, H, W);
        const float* dp = d + (i / (H * W)) * H * W;
        double a = dp[p.y0 * W + p.x0], bb = dp[p.y0 * W + p.x1];
        double c = dp[p.y1 * W + p.x0], e = dp[p.y1 * W + p.x1];
        y[i] = (float)((1 - p.wy) * ((1 - p.wx) * a + p.wx * bb) +
                       p.wy * ((1 - p.wx) * c + p.wx * e));
    }
}

// gd += the gradient with respect to data, scattered to the four neighbours.
__global__ void nncy_warp_bwd_data(long long n, long long C, long long H, long long W,
                                   const float* flow, const float* gy, float* gd) {
    NNCY_LOOP(i, n) {
        long long x = i % W, yy = (i / W) % H, b = i / (C * H * W);
        NncyWarpPoint p(flow, b, yy, x, H, W);
        float* gp = gd + (i / (H * W)) * H * W;
        double g = gy[i];
        atomicAdd(gp + p.y0 * W + p.x0, (float)(g * (1 - p.wy) * (1 - p.wx)));
        atomicAdd(gp + p.y0 * W + p.x1, (float)(g * (1 - p.wy) * p.wx));
        atomicAdd(gp + p.y1 * W + p.x0, (float)(g * p.wy * (1 - p.wx)));
        atomicAdd(gp + p.y1 * W + p.x1, (float)(g * p.wy * p.wx));
    }
}

// gf += the gradient with respect to flow, one thread per (n, y, x) summing
// over the channels.
__global__ void nncy_warp_bwd_flow(long long n, long long C, long long H, long long W,
                                   const float* d, const float* flow, const float* gy,
                                   float* gf) {
    NNCY_LOOP(i, n) {
        long long hw = H * W, at = i % hw, b = i / hw;
        NncyWarpPoint p(flow, b, at / W, at % W, H, W);
        double dx = 0, dy = 0;
        for (long long c = 0; c < C; ++c) {
            const float* dp = d + (b * C + c) * hw;
            double a = dp[p.y0 * W + p.x0], bb = dp[p.y0 * W + p.x1];
            double cc = dp[p.y1 * W + p.x0], e = dp[p.y1 * W + p.x1];
            double g = gy[(b * C + c) * hw + at];
            dx += ((1 - p.wy) * (bb - a) + p.wy * (e - cc)) * g;
            dy += ((1 - p.wx) * (cc - a) + p.wx * (e - bb)) * g;
        }
        // times the mask, as the CPU class (NaN stays NaN)
        gf[(b * 2) * hw + at] += (float)(dx * (p.inx ? 1.0 : 0.0));
        gf[(b * 2 + 1) * hw + at] += (float)(dy * (p.iny ? 1.0 : 0.0));
    }
}

// @instantiate nncy_warp_fwd
// @instantiate nncy_warp_bwd_data
// @instantiate nncy_warp_bwd_flow
