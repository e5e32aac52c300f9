// Solver updates on the device: one fused pass over a parameter w, its
// gradient g and up to three state buffers s0..s2 per rule, mirroring the
// rules of rust/src/optim.rs (same codes, same parameter lists p, computed by
// nncy/solvers.py).  Two rules run in phases with norms taken in between by
// the caller: LARS (code 11) here is only its final step, with p = [local lr,
// momentum, decay]; LAMB (code 12) here only updates the moments, with
// p = [eta, beta1, beta2, ...].
#ifndef NNCY_SOLVERS_CU
#define NNCY_SOLVERS_CU

#include "common.cuh"

__device__ __forceinline__ float nncy_solver_sign(float x) {
    return (float)((x > 0.0f) - (x < 0.0f));
}

template <int RULE>
__global__ void nncy_solver_update(long long n, float* w, const float* g, float* s0, float* s1,
                                   float* s2, const float* p, int has_s2) {
    NNCY_LOOP(i, n) {
        const float gi = g[i];
        float wi = w[i];
        if constexpr (RULE == 0) {            // SGD
            wi -= p[0] * gi;
        } else if constexpr (RULE == 1) {     // momentum
            s0[i] = p[1] * s0[i] + p[0] * gi;
            wi -= s0[i];
        } else if constexpr (RULE == 2) {     // Nesterov
            const float prev = s0[i];
            s0[i] = p[1] * prev - p[0] * gi;
            wi += -p[1] * prev + (1.0f + p[1]) * s0[i];
        } else if constexpr (RULE == 3) {     // Adadelta
            const float decay = p[1], eps = p[2];
            s0[i] = s0[i] * decay + gi * gi * (1.0f - decay);
            const float delta = sqrtf((s1[i] + eps) / (s0[i] + eps)) * gi;
            s1[i] = s1[i] * decay + delta * delta * (1.0f - decay);
            wi -= p[0] * delta;
        } else if constexpr (RULE == 4) {     // Adagrad
            s0[i] += gi * gi;
            wi -= p[0] * gi / (sqrtf(s0[i]) + p[1]);
        } else if constexpr (RULE == 5) {     // RMSprop
            s0[i] = s0[i] * p[1] + gi * gi * (1.0f - p[1]);
            wi -= p[0] / (sqrtf(s0[i]) + p[2]) * gi;
        } else if constexpr (RULE == 6) {     // RMSprop (Graves)
            const float decay = p[1];
            s0[i] = decay * s0[i] + (1.0f - decay) * gi * gi;
            s1[i] = decay * s1[i] + (1.0f - decay) * gi;
            s2[i] = p[2] * s2[i] - p[0] * gi / sqrtf(s0[i] - s1[i] * s1[i] + p[3]);
            wi += s2[i];
        } else if constexpr (RULE == 7) {     // Adam, AMSGrad, AdaBound, AdamW
            const float b1 = p[1], b2 = p[2], lo = p[5], hi = p[6];
            s0[i] = b1 * s0[i] + (1.0f - b1) * gi;
            s1[i] = b2 * s1[i] + (1.0f - b2) * gi * gi;
            float v = s1[i];
            if (has_s2) { s2[i] = fmaxf(s2[i], v); v = s2[i]; }
            float eta = p[0] / (sqrtf(v) + p[3]);
            const float inf = __int_as_float(0x7f800000);
            if (lo > -inf || hi < inf) eta = fminf(hi, fmaxf(eta, lo));
            wi = wi - eta * s0[i] - p[4] * wi;
        } else if constexpr (RULE == 8) {     // AdaBelief
            const float b1 = p[1], b2 = p[2], eps = p[3];
            s0[i] = b1 * s0[i] + (1.0f - b1) * gi;
            const float d = gi - s0[i];
            s1[i] = b2 * s1[i] + (1.0f - b2) * d * d;
            float s = s1[i];
            if (has_s2) { s2[i] = fmaxf(s2[i], s); s = s2[i]; }
            wi -= wi * p[4];
            wi -= p[5] != 0.0f ? p[0] * s0[i] : p[0] * s0[i] / (sqrtf(s + eps) + eps);
        } else if constexpr (RULE == 9) {     // Adamax
            s0[i] = p[1] * s0[i] + (1.0f - p[1]) * gi;
            s1[i] = fmaxf(p[2] * s1[i], fabsf(gi));
            wi -= p[0] * s0[i] / (s1[i] + p[3]);
        } else if constexpr (RULE == 10) {    // Lion
            const float u = nncy_solver_sign(gi + p[1] * (s0[i] - gi));
            s0[i] = gi + p[2] * (s0[i] - gi);
            wi -= p[0] * (u + p[3] * wi);
        } else if constexpr (RULE == 11) {    // LARS, final step
            s0[i] = p[1] * s0[i] + p[0] * (gi + p[2] * wi);
            wi -= s0[i];
        } else if constexpr (RULE == 12) {    // LAMB, moments only
            s0[i] = p[1] * s0[i] + (1.0f - p[1]) * gi;
            s1[i] = p[2] * s1[i] + (1.0f - p[2]) * gi * gi;
        }
        w[i] = wi;
    }
}

#endif  // NNCY_SOLVERS_CU
