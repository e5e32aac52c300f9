# Cython view of the Rust kernel library (rust/include/nncy_kernels.h).  The
# library is linked into nncy._kernels only; other modules call the cdef
# functions declared below, which Cython exports from that module.
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
cimport numpy as cnp

cdef extern from "nncy_kernels.h" nogil:
    uint64_t nncy_ops_signature()
    size_t nncy_num_threads()
    int32_t nncy_heap_bytes(size_t* current, size_t* peak, int32_t reset)
    int32_t nncy_unary_f32(uint32_t op, const float* x, float* y, size_t n,
                           const float* p, size_t np)
    int32_t nncy_unary_grad_f32(uint32_t op, const float* x, const float* y,
                                const float* gy, float* gx, size_t n,
                                const float* p, size_t np, int32_t accum)
    int32_t nncy_binary_f32(uint32_t op, const float* x0, const ssize_t* s0,
                            const float* x1, const ssize_t* s1, float* y,
                            const size_t* shape, size_t ndim, const float* p, size_t np)
    int32_t nncy_binary_grad_f32(uint32_t op, uint32_t which,
                                 const float* x0, const ssize_t* s0,
                                 const float* x1, const ssize_t* s1,
                                 const float* y, const float* gy, float* g,
                                 const size_t* shape, size_t ndim,
                                 const float* p, size_t np, int32_t accum)
    int32_t nncy_strided_copy_f32(const float* x, const ssize_t* xs, float* y,
                                  const size_t* shape, size_t ndim, int32_t accum)
    int32_t nncy_reduce_f32(uint32_t op, const float* x, float* y, size_t outer,
                            size_t r, size_t inner, float scale, int32_t accum)
    int32_t nncy_softmax_f32(const float* x, float* y, size_t outer, size_t c,
                             size_t inner, int32_t log)
    int32_t nncy_softmax_grad_f32(const float* y, const float* gy, float* gx,
                                  size_t outer, size_t c, size_t inner,
                                  int32_t log, int32_t accum)
    int32_t nncy_softmax_ce_f32(const float* x, const int64_t* t, float* y,
                                size_t outer, size_t c, size_t inner)
    int32_t nncy_softmax_ce_grad_f32(const float* x, const int64_t* t,
                                     const float* gy, float* gx, size_t outer,
                                     size_t c, size_t inner, int32_t accum)
    int32_t nncy_gemm_f32(size_t m, size_t n, size_t k,
                          float* dst, ssize_t dst_rs, ssize_t dst_cs,
                          const float* lhs, ssize_t lhs_rs, ssize_t lhs_cs,
                          const float* rhs, ssize_t rhs_rs, ssize_t rhs_cs,
                          float alpha, float beta)
    int32_t nncy_batch_gemm_f32(size_t batch, size_t m, size_t n, size_t k,
                                float* dst, ssize_t dst_bs, ssize_t dst_rs, ssize_t dst_cs,
                                const float* lhs, ssize_t lhs_bs, ssize_t lhs_rs, ssize_t lhs_cs,
                                const float* rhs, ssize_t rhs_bs, ssize_t rhs_rs, ssize_t rhs_cs,
                                float alpha, float beta)
    int32_t nncy_norm_moments_f32(const float* x, size_t p, size_t a, size_t c, size_t b,
                                  float* mean, float* var)
    int32_t nncy_norm_sums_f32(const float* u, const float* v, const float* center,
                               const float* mask, size_t p, size_t a, size_t c, size_t b,
                               float* su, float* suv)
    int32_t nncy_norm_affine_f32(const float* x, size_t p, size_t a, size_t c, size_t b,
                                 const float* center, const float* sa, const float* sb,
                                 const float* z, int32_t relu, float* y)
    int32_t nncy_norm_combine_f32(const float* u, const float* v, const float* mask,
                                  size_t p, size_t a, size_t c, size_t b,
                                  const float* ca, const float* cb, const float* center,
                                  const float* cc, float* out, int32_t accum)
    int32_t nncy_relu_mask_f32(const float* y, const float* dy, float* out, size_t n,
                               int32_t accum)
    int32_t nncy_prelu_f32(const float* x, const float* w, size_t p, size_t a, size_t c,
                           size_t b, float* y)
    int32_t nncy_prelu_grad_f32(const float* x, const float* w, const float* dy,
                                size_t p, size_t a, size_t c, size_t b,
                                float* dx, int32_t accum_x, float* dw, int32_t accum_w)
    int32_t nncy_clip_f32(const float* x, const float* lo, float lo_v, const float* hi,
                          float hi_v, float* y, size_t n, int32_t accum)
    int32_t nncy_clip_grad_f32(const float* x, const float* lo, float lo_v,
                               const float* hi, float hi_v, const float* gy,
                               uint32_t which, float* g, size_t n, int32_t accum)

# Convolution and pooling (neural-network layers)
cdef extern from "nncy_kernels.h" nogil:
    int32_t nncy_conv_f32(uint32_t op, const size_t* geom, size_t ngeom, const float* a,
                          const float* b, float* out, const float* bias, int32_t accum)
    int32_t nncy_pool_f32(uint32_t op, const size_t* geom, size_t ngeom, const float* x,
                          float* y, int32_t accum)
    int32_t nncy_pool_grad_f32(uint32_t op, const size_t* geom, size_t ngeom,
                               const float* x, const float* gy, float* gx, int32_t accum)
    int32_t nncy_asconv_f32(uint32_t which, const size_t* dims, const float* x,
                            const float* kv, const float* kh, const float* gy, float* out,
                            int32_t accum)

# Fast entry points for the Cython core (arrays are float32, C-contiguous).
cdef int unary(const char* name, uint32_t op, cnp.ndarray x, cnp.ndarray y,
               cnp.ndarray p) except -1
cdef int unary_grad(const char* name, uint32_t op, cnp.ndarray x, cnp.ndarray y,
                    cnp.ndarray gy, cnp.ndarray gx, cnp.ndarray p, bint accum) except -1
cdef int check(int32_t status, name) except -1

# Neural-network layers: recurrent cells, embedding, patch correlation.
cdef extern from "nncy_kernels.h" nogil:
    int32_t nncy_rnn_cell_f32(int32_t relu, size_t n, const float* pre, float* h)
    int32_t nncy_rnn_cell_grad_f32(int32_t relu, size_t n, const float* h, const float* dy,
                                   const float* dh, float* dpre)
    int32_t nncy_lstm_cell_f32(size_t b, size_t h, float* gates, const float* c_prev,
                               float* c, float* hout)
    int32_t nncy_lstm_cell_grad_f32(size_t b, size_t h, const float* gates,
                                    const float* c_prev, const float* c, const float* dy,
                                    const float* dh, float* dc, float* dgates)
    int32_t nncy_gru_cell_f32(size_t b, size_t h, float* gates, float* hw, const float* bhn,
                              const float* h_prev, float* hout)
    int32_t nncy_gru_cell_grad_f32(size_t b, size_t h, const float* gates, const float* hw,
                                   const float* h_prev, const float* dy, const float* dh,
                                   float* dgx, float* dgh, float* dh_prev)
    int32_t nncy_embed_f32(const int64_t* idx, size_t n, const float* w, size_t rows,
                           size_t width, float* y)
    int32_t nncy_embed_grad_f32(const int64_t* idx, size_t n, const float* gy, size_t rows,
                                size_t width, float* gw)
    int32_t nncy_patch_correlation_f32(const float* x1, const float* x2, float* y,
                                       const size_t* dims, const int64_t* params)
    int32_t nncy_patch_correlation_grad_f32(uint32_t which, const float* x1, const float* x2,
                                            const float* gy, float* gx, const size_t* dims,
                                            const int64_t* params, int32_t accum)


# Solver family (rust/src/optim.rs: update, Rule) and the solvers' gradient helpers.
cdef extern from "nncy_kernels.h" nogil:
    int32_t nncy_solver_update_f32(uint32_t rule, float* w, const float* g, float* s0,
                                   float* s1, float* s2, size_t n, const float* p,
                                   size_t np)
    int32_t nncy_solver_grad_f32(uint32_t op, float* g, const float* w, size_t n, float a)
    int32_t nncy_sum_squares_f32(const float* x, size_t n, double* out)
    int32_t nncy_nonfinite_f32(const float* x, size_t n, uint32_t* out)
