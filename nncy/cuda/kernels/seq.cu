// Kernels of the sequence layers (nncy/cuda/seq.py): the embedding gradient
// (a scatter-add) and the elementwise part of one recurrent time step, forward
// and backward, over a batch of b rows of h hidden units.  The matrix products
// around a step run on cuBLAS.  The cell formulas are those of
// rust/src/recurrent.rs; gate blocks lie side by side in a row (LSTM i, f, g,
// o; GRU r, z, n).
#include "common.cuh"

// @instantiate nncy_embed_grad
// @instantiate nncy_rnn_cell_fwd<{RELU}> RELU=0,1
// @instantiate nncy_rnn_cell_bwd<{RELU}> RELU=0,1
// @instantiate nncy_lstm_cell_fwd
// @instantiate nncy_lstm_cell_bwd
// @instantiate nncy_gru_cell_fwd
// @instantiate nncy_gru_cell_bwd

__device__ __forceinline__ float nncy_sigmoid(float x) {
    const float e = expf(-fabsf(x));
    return (x >= 0.0f ? 1.0f : e) / (1.0f + e);
}

// gw[idx[k], j] += gy[k, j] for the n = len(idx) * width elements of gy; the
// indices were checked by the caller.  Rows picked twice add up (atomically).
__global__ void nncy_embed_grad(long long n, long long width, const long long* idx,
                                const float* gy, float* gw) {
    NNCY_LOOP(i, n) {
        const long long k = i / width, j = i - k * width;
        atomicAdd(gw + idx[k] * width + j, gy[i]);
    }
}

// Elman step: h = tanh(pre), or max(pre, 0).
template <int RELU>
__global__ void nncy_rnn_cell_fwd(long long n, const float* pre, float* h) {
    NNCY_LOOP(i, n) {
        const float p = pre[i];
        h[i] = RELU ? (p > 0.0f ? p : 0.0f) : tanhf(p);
    }
}

// dpre = (dy + dh) act'(pre), from the step's output h.
template <int RELU>
__global__ void nncy_rnn_cell_bwd(long long n, const float* h, const float* dy, const float* dh,
                                  float* dpre) {
    NNCY_LOOP(i, n) {
        const float g = dy[i] + dh[i], hv = h[i];
        dpre[i] = RELU ? (hv > 0.0f ? g : 0.0f) : g * (1.0f - hv * hv);
    }
}

// LSTM step over n = b * h units: gates (b, 4h) holds the pre-activations and
// gets the activations; c = f c_prev + i g, hout = o tanh(c).
__global__ void nncy_lstm_cell_fwd(long long n, long long h, float* gates, const float* c_prev,
                                   float* c, float* hout) {
    NNCY_LOOP(u, n) {
        const long long r = u / h, k = u - r * h;
        float* g = gates + r * 4 * h + k;
        const float ai = nncy_sigmoid(g[0]), af = nncy_sigmoid(g[h]);
        const float ag = tanhf(g[2 * h]), ao = nncy_sigmoid(g[3 * h]);
        g[0] = ai;
        g[h] = af;
        g[2 * h] = ag;
        g[3 * h] = ao;
        const float ct = af * c_prev[u] + ai * ag;
        c[u] = ct;
        hout[u] = ao * tanhf(ct);
    }
}

// LSTM step backward: dc holds dL/dc on entry and dL/dc_prev on exit; dgates
// (b, 4h) gets the gradients of the pre-activations.
__global__ void nncy_lstm_cell_bwd(long long n, long long h, const float* gates,
                                   const float* c_prev, const float* c, const float* dy,
                                   const float* dh, float* dc, float* dgates) {
    NNCY_LOOP(u, n) {
        const long long r = u / h, k = u - r * h;
        const float* g = gates + r * 4 * h + k;
        float* dg = dgates + r * 4 * h + k;
        const float i = g[0], f = g[h], gv = g[2 * h], o = g[3 * h];
        const float tc = tanhf(c[u]);
        const float dht = dy[u] + dh[u];
        const float dct = dc[u] + dht * o * (1.0f - tc * tc);
        dg[0] = dct * gv * i * (1.0f - i);
        dg[h] = dct * c_prev[u] * f * (1.0f - f);
        dg[2 * h] = dct * i * (1.0f - gv * gv);
        dg[3 * h] = dht * tc * o * (1.0f - o);
        dc[u] = dct * f;
    }
}

// GRU step: gates (b, 3h) holds the input-side pre-activations and gets r, z,
// n; hw (b, 3h) the hidden projections, whose n block gets the hidden bias bhn
// added (when has_bhn) for backward.
__global__ void nncy_gru_cell_fwd(long long n, long long h, float* gates, float* hw,
                                  const float* bhn, int has_bhn, const float* h_prev,
                                  float* hout) {
    NNCY_LOOP(u, n) {
        const long long r = u / h, k = u - r * h;
        float* g = gates + r * 3 * h + k;
        float* w = hw + r * 3 * h + k;
        const float rv = nncy_sigmoid(g[0] + w[0]);
        const float z = nncy_sigmoid(g[h] + w[h]);
        const float hn = w[2 * h] + (has_bhn ? bhn[k] : 0.0f);
        const float nv = tanhf(g[2 * h] + rv * hn);
        w[2 * h] = hn;
        g[0] = rv;
        g[h] = z;
        g[2 * h] = nv;
        hout[u] = (1.0f - z) * nv + z * h_prev[u];
    }
}

// GRU step backward: dgx (b, 3h) gets the gradients of the input-side
// pre-activations, dgh (b, 3h) those of the hidden projections, dh_prev the
// direct part (dy + dh) z of the gradient of h_prev.
__global__ void nncy_gru_cell_bwd(long long n, long long h, const float* gates, const float* hw,
                                  const float* h_prev, const float* dy, const float* dh,
                                  float* dgx, float* dgh, float* dh_prev) {
    NNCY_LOOP(u, n) {
        const long long row = u / h, k = u - row * h;
        const float* g = gates + row * 3 * h + k;
        float* dx = dgx + row * 3 * h + k;
        float* dw = dgh + row * 3 * h + k;
        const float r = g[0], z = g[h], nv = g[2 * h];
        const float hn = hw[row * 3 * h + 2 * h + k];
        const float dht = dy[u] + dh[u];
        const float dpn = dht * (1.0f - z) * (1.0f - nv * nv);
        const float dpr = dpn * hn * r * (1.0f - r);
        const float dpz = dht * (h_prev[u] - nv) * z * (1.0f - z);
        dx[0] = dpr;
        dx[h] = dpz;
        dx[2 * h] = dpn;
        dw[0] = dpr;
        dw[h] = dpz;
        dw[2 * h] = dpn * r;
        dh_prev[u] = dht * z;
    }
}
