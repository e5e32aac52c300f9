// Scatter-adds for the array functions' backward passes (and scatter_nd with
// add=True): several source rows may land on one destination row, so the
// sums go through atomicAdd.
#include "common.cuh"

// Rows of a (outer, len, inner) source added into a (outer, n, inner)
// destination: source row l of each outer block lands on row map[l].
// map values lie in [0, n).
// @instantiate nncy_scatter_rows_add
__global__ void nncy_scatter_rows_add(long long total, long long len, long long n,
                                      long long inner, const long long* map,
                                      const float* src, float* dst) {
    NNCY_LOOP(k, total) {
        const long long i = k % inner;
        const long long l = (k / inner) % len;
        const long long o = k / (inner * len);
        atomicAdd(dst + (o * n + map[l]) * inner + i, src[k]);
    }
}
