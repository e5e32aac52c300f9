# Entry points of the kernels of the reduction, arithmetic, logical and math
# functions (rust/src/math.rs, batched matrix products); included by
# _kernels.pyx.  As there: every array's dtype, contiguity and size is checked
# here before a pointer reaches Rust, and the GIL is released for the kernel.
from libc.stdlib cimport malloc, free

cdef extern from "nncy_kernels.h" nogil:
    int32_t nncy_arg_reduce_f32(uint32_t op, const float* x, float* vals, int64_t* idx,
                                size_t outer, size_t r, size_t inner)
    int32_t nncy_arg_scatter_f32(const float* gy, const int64_t* idx, float* gx, size_t outer,
                                 size_t r, size_t inner, int32_t accum)
    int32_t nncy_prod_f32(const float* x, float* y, size_t outer, size_t r, size_t inner)
    int32_t nncy_prod_grad_f32(const float* x, const float* gy, float* gx, size_t outer,
                               size_t r, size_t inner, int32_t accum)
    int32_t nncy_nary_f32(uint32_t op, const float* const* xs, size_t n_in, size_t skip,
                          const float* gy, float* y, size_t n, int32_t accum)
    int32_t nncy_where_f32(const float* cond, const float* xt, const float* xf, float* y,
                           size_t outer, size_t inner)
    int32_t nncy_where_grad_f32(const float* cond, const float* gy, float* g, size_t outer,
                                size_t inner, int32_t on_true, int32_t accum)
    int32_t nncy_matrix_diag_f32(const float* x, float* y, size_t batch, size_t n,
                                 int32_t accum)
    int32_t nncy_arange_count_f32(float start, float stop, float step, size_t cap,
                                  size_t* count)
    int32_t nncy_arange_f32(float start, float step, float* y, size_t n)
    int32_t nncy_fill_f32(float* y, size_t n, float v)


_ARG_OPS = {'max': 0, 'min': 1}
_NARY_OPS = {'sum': 0, 'prod': 1}


cdef int _need_size(cnp.ndarray a, size_t n, name, what) except -1:
    if <size_t>cnp.PyArray_SIZE(a) != n:
        raise ValueError('%s: %s has %d elements, expected %d'
                         % (name, what, cnp.PyArray_SIZE(a), n))
    return 0


cdef inline int64_t* i64(cnp.ndarray a, name) except? NULL:
    """The data of `a`, once checked to be a C-contiguous int64 array."""
    if cnp.PyArray_TYPE(a) != cnp.NPY_INT64 or not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise TypeError('%s: expected a C-contiguous int64 index array, got %s' % (name, a.dtype))
    return iptr(a)


def arg_reduce(name, op, cnp.ndarray x, cnp.ndarray vals, cnp.ndarray idx, size_t outer,
               size_t r, size_t inner):
    """vals, idx (outer, inner) = max / min of x (outer, r, inner) over r and the
    first index of it (NaN skipped unless all are NaN)."""
    cdef uint32_t code = _ARG_OPS[op]
    cdef float* _x = f32(x, name)
    cdef float* _v = f32(vals, name)
    cdef int64_t* _i = i64(idx, name)
    _need_size(x, outer * r * inner, name, 'the input')
    _need_size(vals, outer * inner, name, 'the output')
    _need_size(idx, outer * inner, name, 'the index output')
    if r == 0 and outer * inner:
        raise ValueError('%s: cannot reduce over zero elements' % name)
    cdef int32_t st
    with nogil:
        st = nncy_arg_reduce_f32(code, _x, _v, _i, outer, r, inner)
    check(st, name)


def arg_scatter(name, cnp.ndarray gy, cnp.ndarray idx, cnp.ndarray gx, size_t outer,
                size_t r, size_t inner, bint accum):
    """gx (outer, r, inner) (+)= gy (outer, inner) placed at the rows idx."""
    cdef float* _g = f32(gy, name)
    cdef int64_t* _i = i64(idx, name)
    cdef float* _gx = f32(gx, name)
    _need_size(gy, outer * inner, name, 'the output gradient')
    _need_size(idx, outer * inner, name, 'the index')
    _need_size(gx, outer * r * inner, name, 'the input gradient')
    cdef int32_t st
    with nogil:
        st = nncy_arg_scatter_f32(_g, _i, _gx, outer, r, inner, accum)
    check(st, name)


def prod(name, cnp.ndarray x, cnp.ndarray y, size_t outer, size_t r, size_t inner):
    """y (outer, inner) = product of x (outer, r, inner) over r, accumulated in float64."""
    cdef float* _x = f32(x, name)
    cdef float* _y = f32(y, name)
    _need_size(x, outer * r * inner, name, 'the input')
    _need_size(y, outer * inner, name, 'the output')
    cdef int32_t st
    with nogil:
        st = nncy_prod_f32(_x, _y, outer, r, inner)
    check(st, name)


def prod_grad(name, cnp.ndarray x, cnp.ndarray gy, cnp.ndarray gx, size_t outer, size_t r,
              size_t inner, bint accum):
    """gx (+)= gy times the product of the other elements along r."""
    cdef float* _x = f32(x, name)
    cdef float* _g = f32(gy, name)
    cdef float* _gx = f32(gx, name)
    _need_size(x, outer * r * inner, name, 'the input')
    _need_size(gy, outer * inner, name, 'the output gradient')
    _need_size(gx, outer * r * inner, name, 'the input gradient')
    cdef int32_t st
    with nogil:
        st = nncy_prod_grad_f32(_x, _g, _gx, outer, r, inner, accum)
    check(st, name)


def nary(name, op, list xs, cnp.ndarray y, skip=None, cnp.ndarray gy=None, bint accum=False):
    """y (+)= sum or product of the arrays xs (all of y's size) except xs[skip];
    a product is also multiplied by gy when given."""
    cdef uint32_t code = _NARY_OPS[op]
    cdef size_t n = cnp.PyArray_SIZE(y), k, nin = len(xs)
    cdef size_t sk = nin if skip is None else <size_t>skip
    cdef float* _y = f32(y, name)
    for a in xs:
        need_f32(a, name)
        _need_size(a, n, name, 'an input')
    cdef const float* _g = NULL
    if gy is not None:
        _g = f32(gy, name)
        _need_size(gy, n, name, 'the output gradient')
    cdef const float** ptrs = <const float**>malloc(max(nin, 1) * sizeof(float*))
    if ptrs == NULL:
        raise MemoryError()
    cdef int32_t st
    try:
        for k in range(nin):
            ptrs[k] = fptr(<cnp.ndarray>xs[k])
        with nogil:
            st = nncy_nary_f32(code, ptrs, nin, sk, _g, _y, n, accum)
    finally:
        free(ptrs)
    check(st, name)


def where(name, cnp.ndarray cond, cnp.ndarray xt, cnp.ndarray xf, cnp.ndarray y,
          size_t outer, size_t inner):
    """y (outer, inner) = cond[o] != 0 ? xt : xf."""
    cdef float* _c = f32(cond, name)
    cdef float* _t = f32(xt, name)
    cdef float* _f = f32(xf, name)
    cdef float* _y = f32(y, name)
    _need_size(cond, outer, name, 'the condition')
    for a, what in ((xt, 'x_true'), (xf, 'x_false'), (y, 'the output')):
        _need_size(a, outer * inner, name, what)
    cdef int32_t st
    with nogil:
        st = nncy_where_f32(_c, _t, _f, _y, outer, inner)
    check(st, name)


def where_grad(name, cnp.ndarray cond, cnp.ndarray gy, cnp.ndarray g, size_t outer,
               size_t inner, bint on_true, bint accum):
    """g (+)= gy where the condition selects this input (on_true: x_true), else 0."""
    cdef float* _c = f32(cond, name)
    cdef float* _gy = f32(gy, name)
    cdef float* _g = f32(g, name)
    _need_size(cond, outer, name, 'the condition')
    _need_size(gy, outer * inner, name, 'the output gradient')
    _need_size(g, outer * inner, name, 'the input gradient')
    cdef int32_t st
    with nogil:
        st = nncy_where_grad_f32(_c, _gy, _g, outer, inner, on_true, accum)
    check(st, name)


def matrix_diag(name, cnp.ndarray x, cnp.ndarray y, size_t batch, size_t n, bint accum):
    """y (batch, n, n) = diagonal matrices of x (batch, n) (added to y's diagonals
    when accum)."""
    cdef float* _x = f32(x, name)
    cdef float* _y = f32(y, name)
    _need_size(x, batch * n, name, 'the diagonal')
    _need_size(y, batch * n * n, name, 'the matrices')
    cdef int32_t st
    with nogil:
        st = nncy_matrix_diag_f32(_x, _y, batch, n, accum)
    check(st, name)


def arange_count(name, float start, float stop, float step, size_t cap):
    """Number of values of arange(start, stop, step) accumulated in float32;
    ValueError for a zero or non-finite step, more than ``cap`` values or a
    range that never reaches stop."""
    cdef size_t count = 0
    cdef int32_t st = nncy_arange_count_f32(start, stop, step, cap, &count)
    if st == 2:
        raise ValueError('%s: the range from start=%r to stop=%r by step=%r has more than '
                         '%d values or never reaches stop in float32'
                         % (name, start, stop, step, cap))
    check(st, name)
    return count


def arange(name, float start, float step, cnp.ndarray y):
    """y[i] = start plus i steps, accumulated in float32."""
    cdef float* _y = f32(y, name)
    cdef size_t n = cnp.PyArray_SIZE(y)
    cdef int32_t st
    with nogil:
        st = nncy_arange_f32(start, step, _y, n)
    check(st, name)


def fill(name, cnp.ndarray y, float v):
    """y[...] = v."""
    cdef float* _y = f32(y, name)
    cdef size_t n = cnp.PyArray_SIZE(y)
    cdef int32_t st
    with nogil:
        st = nncy_fill_f32(_y, n, v)
    check(st, name)


def batch_gemm(name, cnp.ndarray a, cnp.ndarray b, cnp.ndarray out, float alpha=0.0,
               float beta=1.0):
    """out[i] = alpha * out[i] + beta * a[i] @ b[i] for 3-D float32 arrays of any
    strides (a batch stride of 0 repeats a matrix); out's matrices must not
    overlap one another."""
    if a.ndim != 3 or b.ndim != 3 or out.ndim != 3:
        raise ValueError('%s: batch_gemm needs 3-D arrays' % name)
    for arr in (a, b, out):
        if cnp.PyArray_TYPE(arr) != cnp.NPY_FLOAT32:
            raise TypeError('%s: batch_gemm needs float32 arrays' % name)
    cdef size_t batch = out.shape[0], m = a.shape[1], k = a.shape[2], n = b.shape[2]
    if (a.shape[0] != <cnp.npy_intp>batch or b.shape[0] != <cnp.npy_intp>batch
            or b.shape[1] != <cnp.npy_intp>k or out.shape[1] != <cnp.npy_intp>m
            or out.shape[2] != <cnp.npy_intp>n):
        raise ValueError('%s: matrix shapes %s @ %s -> %s do not agree'
                         % (name, (<object>a).shape, (<object>b).shape, (<object>out).shape))
    if batch > 1 and m * n and out.strides[0] == 0:
        raise ValueError('%s: batch_gemm output matrices overlap' % name)
    cdef ssize_t abs_ = a.strides[0] // 4, ars = a.strides[1] // 4, acs = a.strides[2] // 4
    cdef ssize_t bbs = b.strides[0] // 4, brs = b.strides[1] // 4, bcs = b.strides[2] // 4
    cdef ssize_t obs = out.strides[0] // 4, ors = out.strides[1] // 4, ocs = out.strides[2] // 4
    cdef int32_t st
    cdef float* _o = fptr(out)
    cdef float* _a = fptr(a)
    cdef float* _b = fptr(b)
    with nogil:
        st = nncy_batch_gemm_f32(batch, m, n, k, _o, obs, ors, ocs, _a, abs_, ars, acs,
                                 _b, bbs, brs, bcs, alpha, beta)
    check(st, name)
