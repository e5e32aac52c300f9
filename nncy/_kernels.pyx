# cython: language_level=3
"""NumPy-level entry points to the Rust kernels.

Every function takes NumPy arrays, checks dtypes, contiguity and shapes before
any pointer is handed to Rust, releases the GIL for the kernel, and turns a
non-zero status into a Python exception naming the caller.
"""
cimport cython
cimport numpy as cnp
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
import numpy as np

cnp.import_array()

cdef object _F32 = np.dtype(np.float32)
cdef object _I64 = np.dtype(np.int64)
cdef int MAXDIM = 16

_MESSAGES = {1: 'invalid argument', 2: 'index out of range', 3: 'internal error'}


cdef int check(int32_t status, name) except -1:
    if status == 0:
        return 0
    if isinstance(name, bytes):
        name = name.decode()
    msg = '%s: %s' % (name, _MESSAGES.get(status, 'status %d' % status))
    if status == 3:
        raise RuntimeError(msg)
    raise ValueError(msg)


cdef inline float* fptr(cnp.ndarray a):
    return <float*>cnp.PyArray_DATA(a)


cdef inline int need_f32(cnp.ndarray a, name) except -1:
    if cnp.PyArray_TYPE(a) != cnp.NPY_FLOAT32 or not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise TypeError('%s: expected a C-contiguous float32 array, got %s %s'
                        % (name, a.dtype, 'contiguous' if a.flags.c_contiguous else 'strided'))
    return 0


def signature():
    """The hash of the pointwise op table that the library was generated from."""
    return nncy_ops_signature()


def num_threads():
    return nncy_num_threads()


cdef int unary(const char* name, uint32_t op, cnp.ndarray x, cnp.ndarray y,
               cnp.ndarray p) except -1:
    cdef size_t n = cnp.PyArray_SIZE(y)
    cdef int32_t st
    if cnp.PyArray_SIZE(x) != <cnp.npy_intp>n:
        raise ValueError('%s: input and output sizes differ' % name.decode())
    cdef float* xp = fptr(x)
    cdef float* yp = fptr(y)
    cdef float* pp = fptr(p)
    cdef size_t npar = cnp.PyArray_SIZE(p)
    if n < 65536:
        st = nncy_unary_f32(op, xp, yp, n, pp, npar)
    else:
        with nogil:
            st = nncy_unary_f32(op, xp, yp, n, pp, npar)
    return check(st, name)


cdef int unary_grad(const char* name, uint32_t op, cnp.ndarray x, cnp.ndarray y,
                    cnp.ndarray gy, cnp.ndarray gx, cnp.ndarray p, bint accum) except -1:
    cdef size_t n = cnp.PyArray_SIZE(gx)
    cdef int32_t st
    cdef const float* xp = fptr(x) if x is not None else NULL
    cdef const float* yp = fptr(y) if y is not None else NULL
    cdef float* gyp = fptr(gy)
    cdef float* gxp = fptr(gx)
    cdef float* pp = fptr(p)
    cdef size_t npar = cnp.PyArray_SIZE(p)
    with nogil:
        st = nncy_unary_grad_f32(op, xp, yp, gyp, gxp, n, pp, npar, accum)
    return check(st, name)


cdef int _strides(cnp.ndarray a, tuple out_shape, ssize_t* s) except -1:
    """Element strides of `a` broadcast against `out_shape` (0 on broadcast axes)."""
    cdef int nd = len(out_shape), ad = cnp.PyArray_NDIM(a), i, j
    cdef cnp.npy_intp* dims = cnp.PyArray_DIMS(a)
    cdef cnp.npy_intp* st = cnp.PyArray_STRIDES(a)
    for i in range(nd):
        j = i - (nd - ad)
        if j < 0 or dims[j] == 1:
            s[i] = 0
        else:
            s[i] = st[j] // 4
    return 0


cdef int _shape(tuple shape, size_t* out) except -1:
    if len(shape) > MAXDIM:
        raise ValueError('arrays of more than %d dimensions are not supported' % MAXDIM)
    for i, d in enumerate(shape):
        out[i] = d
    return 0


def binary(name, uint32_t op, cnp.ndarray x0, cnp.ndarray x1, cnp.ndarray y,
           cnp.ndarray p):
    """y = op(x0, x1) with NumPy broadcasting; y is contiguous with the result shape."""
    cdef ssize_t s0[16]
    cdef ssize_t s1[16]
    cdef size_t shp[16]
    cdef tuple shape = (<object>y).shape
    cdef int32_t st
    need_f32(y, name)
    _shape(shape, shp)
    _strides(x0, shape, s0)
    _strides(x1, shape, s1)
    cdef size_t nd = len(shape)
    cdef float* _t0 = fptr(x0)
    cdef float* _t1 = fptr(x1)
    cdef float* _t2 = fptr(y)
    cdef float* _t3 = fptr(p)
    cdef size_t _t4 = cnp.PyArray_SIZE(p)
    with nogil:
        st = nncy_binary_f32(op, _t0, s0, _t1, s1, _t2, shp, nd,
                             _t3, _t4)
    check(st, name)


def binary_grad(name, uint32_t op, uint32_t which, cnp.ndarray x0, cnp.ndarray x1,
                cnp.ndarray y, cnp.ndarray gy, cnp.ndarray g, cnp.ndarray p, bint accum):
    """g (full output shape) (+)= d op / d x_which * gy, elementwise."""
    cdef ssize_t s0[16]
    cdef ssize_t s1[16]
    cdef size_t shp[16]
    cdef tuple shape = (<object>gy).shape
    cdef int32_t st
    need_f32(g, name)
    need_f32(gy, name)
    _shape(shape, shp)
    _strides(x0, shape, s0)
    _strides(x1, shape, s1)
    cdef size_t nd = len(shape)
    cdef const float* yp = fptr(y) if y is not None else NULL
    cdef float* _t0 = fptr(x0)
    cdef float* _t1 = fptr(x1)
    cdef float* _t2 = fptr(gy)
    cdef float* _t3 = fptr(g)
    cdef float* _t4 = fptr(p)
    cdef size_t _t5 = cnp.PyArray_SIZE(p)
    with nogil:
        st = nncy_binary_grad_f32(op, which, _t0, s0, _t1, s1, yp, _t2,
                                  _t3, shp, nd, _t4, _t5, accum)
    check(st, name)


def strided_copy(name, cnp.ndarray x, cnp.ndarray y, bint accum=False):
    """y (+)= x, where x is any float32 view of y's shape (transposed, broadcast, sliced)."""
    cdef ssize_t xs[16]
    cdef size_t shp[16]
    cdef int32_t st
    cdef tuple shape = (<object>y).shape
    need_f32(y, name)
    if (<object>x).shape != shape or cnp.PyArray_TYPE(x) != cnp.NPY_FLOAT32:
        raise ValueError('%s: strided_copy needs a float32 view of shape %s' % (name, shape))
    _shape(shape, shp)
    for i in range(len(shape)):
        xs[i] = x.strides[i] // 4
    cdef size_t nd = len(shape)
    cdef float* _t0 = fptr(x)
    cdef float* _t1 = fptr(y)
    with nogil:
        st = nncy_strided_copy_f32(_t0, xs, _t1, shp, nd, accum)
    check(st, name)


_REDUCE_OPS = {'sum': 0, 'max': 1, 'min': 2, 'prod': 3}


def reduce(name, op, cnp.ndarray x, tuple axes, cnp.ndarray out, float scale=1.0,
           bint accum=False):
    """out (+)= scale * op-reduction of x over `axes` (sorted, non-negative).

    `out` holds the kept axes in order (any shape of that size).  Axes that form
    one block go in one pass over x viewed as (outer, r, inner); scattered axes
    take one pass per block, last block first."""
    cdef uint32_t code = _REDUCE_OPS[op]
    cdef int32_t st
    cdef size_t outer, r, inner
    need_f32(x, name)
    need_f32(out, name)
    shape = list((<object>x).shape)
    blocks = []
    for a in axes:
        if blocks and blocks[-1][1] == a:
            blocks[-1][1] = a + 1
        else:
            blocks.append([a, a + 1])
    if not blocks:
        blocks = [[0, 0]]
    cdef cnp.ndarray src = x, dst
    cdef float* _t0
    cdef float* _t1
    cdef float sc
    cdef int32_t acc
    cdef bint last
    for bi in range(len(blocks) - 1, -1, -1):
        lo, hi = blocks[bi]
        outer = 1
        for d in shape[:lo]:
            outer *= d
        r = 1
        for d in shape[lo:hi]:
            r *= d
        inner = 1
        for d in shape[hi:]:
            inner *= d
        shape[lo:hi] = []
        last = bi == 0
        sc = scale if last else 1.0
        acc = accum if last else 0
        dst = out if last else np.empty(shape, np.float32)
        if last and cnp.PyArray_SIZE(out) != <cnp.npy_intp>(outer * inner):
            raise ValueError('%s: reduction output has the wrong size' % name)
        _t0 = fptr(src)
        _t1 = fptr(dst)
        with nogil:
            st = nncy_reduce_f32(code, _t0, _t1, outer, r, inner,
                                 sc, acc)
        check(st, name)
        src = dst


def softmax(name, cnp.ndarray x, cnp.ndarray y, size_t outer, size_t c, size_t inner,
            bint log):
    need_f32(x, name); need_f32(y, name)
    cdef int32_t st
    cdef float* _t0 = fptr(x)
    cdef float* _t1 = fptr(y)
    with nogil:
        st = nncy_softmax_f32(_t0, _t1, outer, c, inner, log)
    check(st, name)


def softmax_grad(name, cnp.ndarray y, cnp.ndarray gy, cnp.ndarray gx, size_t outer,
                 size_t c, size_t inner, bint log, bint accum):
    need_f32(y, name); need_f32(gy, name); need_f32(gx, name)
    cdef int32_t st
    cdef float* _t0 = fptr(y)
    cdef float* _t1 = fptr(gy)
    cdef float* _t2 = fptr(gx)
    with nogil:
        st = nncy_softmax_grad_f32(_t0, _t1, _t2, outer, c, inner, log, accum)
    check(st, name)


cdef inline int64_t* iptr(cnp.ndarray a):
    return <int64_t*>cnp.PyArray_DATA(a)


cdef cnp.ndarray _labels(name, t, size_t n):
    cdef cnp.ndarray ti = np.ascontiguousarray(t, dtype=np.int64)
    if cnp.PyArray_SIZE(ti) != <cnp.npy_intp>n:
        raise ValueError('%s: target has %d elements, expected %d'
                         % (name, cnp.PyArray_SIZE(ti), n))
    return ti


def _bad_label(name, ti, c):
    bad = ti[(ti < 0) | (ti >= <long>c)]
    raise ValueError("%s: argument 'target' holds label %d; labels must lie in [0, %d)"
                     % (name, bad[0], c))


def softmax_ce(name, cnp.ndarray x, t, cnp.ndarray y, size_t outer, size_t c,
               size_t inner):
    need_f32(x, name); need_f32(y, name)
    cdef cnp.ndarray ti = _labels(name, t, outer * inner)
    cdef int32_t st
    cdef float* _t0 = fptr(x)
    cdef int64_t* _t1 = iptr(ti)
    cdef float* _t2 = fptr(y)
    with nogil:
        st = nncy_softmax_ce_f32(_t0, _t1, _t2, outer, c, inner)
    if st == 2:
        _bad_label(name, ti, c)
    check(st, name)


def softmax_ce_grad(name, cnp.ndarray x, t, cnp.ndarray gy, cnp.ndarray gx,
                    size_t outer, size_t c, size_t inner, bint accum):
    need_f32(x, name); need_f32(gy, name); need_f32(gx, name)
    cdef cnp.ndarray ti = _labels(name, t, outer * inner)
    cdef int32_t st
    cdef float* _t0 = fptr(x)
    cdef int64_t* _t1 = iptr(ti)
    cdef float* _t2 = fptr(gy)
    cdef float* _t3 = fptr(gx)
    with nogil:
        st = nncy_softmax_ce_grad_f32(_t0, _t1, _t2, _t3, outer, c,
                                      inner, accum)
    if st == 2:
        _bad_label(name, ti, c)
    check(st, name)


def gemm(name, cnp.ndarray a, cnp.ndarray b, cnp.ndarray out, float alpha=0.0,
         float beta=1.0):
    """out = alpha * out + beta * a @ b for 2-D float32 arrays of any strides."""
    if a.ndim != 2 or b.ndim != 2 or out.ndim != 2:
        raise ValueError('%s: gemm needs 2-D arrays' % name)
    cdef size_t m = a.shape[0], k = a.shape[1], n = b.shape[1]
    if b.shape[0] != <cnp.npy_intp>k or out.shape[0] != <cnp.npy_intp>m or out.shape[1] != <cnp.npy_intp>n:
        raise ValueError('%s: matrix shapes %s @ %s -> %s do not agree'
                         % (name, (<object>a).shape, (<object>b).shape, (<object>out).shape))
    for arr in (a, b, out):
        if cnp.PyArray_TYPE(arr) != cnp.NPY_FLOAT32:
            raise TypeError('%s: gemm needs float32 arrays' % name)
    cdef ssize_t ars = a.strides[0] // 4, acs = a.strides[1] // 4
    cdef ssize_t brs = b.strides[0] // 4, bcs = b.strides[1] // 4
    cdef ssize_t ors = out.strides[0] // 4, ocs = out.strides[1] // 4
    cdef int32_t st
    cdef float* _t0 = fptr(out)
    cdef float* _t1 = fptr(a)
    cdef float* _t2 = fptr(b)
    with nogil:
        st = nncy_gemm_f32(m, n, k, _t0, ors, ocs, _t1, ars, acs,
                           _t2, brs, bcs, alpha, beta)
    check(st, name)


def sgd_update(cnp.ndarray w, cnp.ndarray g, float lr):
    need_f32(w, 'Sgd'); need_f32(g, 'Sgd')
    if w.size != g.size:
        raise ValueError('Sgd: parameter and gradient sizes differ')
    cdef int32_t st
    cdef float* _t0 = fptr(w)
    cdef float* _t1 = fptr(g)
    cdef size_t _t2 = cnp.PyArray_SIZE(w)
    with nogil:
        st = nncy_sgd_update_f32(_t0, _t1, _t2, lr)
    check(st, 'Sgd')


def momentum_update(cnp.ndarray w, cnp.ndarray g, cnp.ndarray v, float lr, float momentum):
    for a in (w, g, v):
        need_f32(a, 'Momentum')
    if not w.size == g.size == v.size:
        raise ValueError('Momentum: parameter, gradient and state sizes differ')
    cdef int32_t st
    cdef float* _t0 = fptr(w)
    cdef float* _t1 = fptr(g)
    cdef float* _t2 = fptr(v)
    cdef size_t _t3 = cnp.PyArray_SIZE(w)
    with nogil:
        st = nncy_momentum_update_f32(_t0, _t1, _t2, _t3,
                                      lr, momentum)
    check(st, 'Momentum')


def adam_update(cnp.ndarray w, cnp.ndarray g, cnp.ndarray m, cnp.ndarray v,
                float alpha_t, float beta1, float beta2, float eps):
    for a in (w, g, m, v):
        need_f32(a, 'Adam')
    if not w.size == g.size == m.size == v.size:
        raise ValueError('Adam: parameter, gradient and state sizes differ')
    cdef int32_t st
    cdef float* _t0 = fptr(w)
    cdef float* _t1 = fptr(g)
    cdef float* _t2 = fptr(m)
    cdef float* _t3 = fptr(v)
    cdef size_t _t4 = cnp.PyArray_SIZE(w)
    with nogil:
        st = nncy_adam_update_f32(_t0, _t1, _t2, _t3, _t4,
                                  alpha_t, beta1, beta2, eps)
    check(st, 'Adam')


# ---------------------------------------------------------------------------
# Convolution and pooling (neural-network layers)
# ---------------------------------------------------------------------------

_CONV_OPS = {'forward': 0, 'data': 1, 'filter': 2}
_POOL_OPS = {'max': 0, 'sum': 1, 'average': 2}
_ASCONV_OPS = {'forward': 0, 'x': 1, 'vertical_kernel': 2, 'horizontal_kernel': 3}
cdef enum:
    MAXGEOM = 64


cdef int _geom(tuple g, size_t* out) except -1:
    if len(g) > MAXGEOM:
        raise ValueError('geometry of %d entries; at most %d' % (len(g), MAXGEOM))
    for i, v in enumerate(g):
        if v < 0:
            raise ValueError('negative size in geometry %r' % (g,))
        out[i] = v
    return 0


cdef inline float* _fptr_or_null(a):
    return NULL if a is None else fptr(<cnp.ndarray>a)


def conv(name, op, cnp.ndarray a, cnp.ndarray b, cnp.ndarray out, bias, tuple geom,
         bint accum=False):
    """Convolution kernel ``op`` ('forward', 'data' or 'filter') on C-contiguous
    float32 arrays; ``geom`` as in ``nncy_conv_f32``: (batch, channels,
    out_channels, group, ndim, channel_last, then per spatial axis len, out,
    kernel, pad, stride, dilation).  forward: out (+)= conv(a=x, b=w) [+ bias];
    data: out (+)= conv^T(a=gy, b=w) [+ bias]; filter: out (+)= dconv/dw (a=x, b=gy)."""
    cdef size_t g[MAXGEOM]
    cdef uint32_t code = _CONV_OPS[op]
    for arr in (a, b, out):
        need_f32(arr, name)
    if bias is not None:
        need_f32(bias, name)
    _geom(geom, g)
    cdef size_t ng = len(geom)
    cdef float* _t0 = fptr(a)
    cdef float* _t1 = fptr(b)
    cdef float* _t2 = fptr(out)
    cdef float* _t3 = _fptr_or_null(bias)
    cdef int32_t st
    with nogil:
        st = nncy_conv_f32(code, g, ng, _t0, _t1, _t2, _t3, accum)
    check(st, name)


def pool(name, op, cnp.ndarray x, cnp.ndarray y, tuple geom, bint accum=False):
    """y (+)= pooling ``op`` ('max', 'sum', 'average') of x; ``geom`` as in
    ``nncy_pool_f32``: (outer, ndim, including_pad, then per axis len, out,
    kernel, stride, pad)."""
    cdef size_t g[MAXGEOM]
    cdef uint32_t code = _POOL_OPS[op]
    need_f32(x, name); need_f32(y, name)
    _geom(geom, g)
    cdef size_t ng = len(geom)
    cdef float* _t0 = fptr(x)
    cdef float* _t1 = fptr(y)
    cdef int32_t st
    with nogil:
        st = nncy_pool_f32(code, g, ng, _t0, _t1, accum)
    check(st, name)


def pool_grad(name, op, x, cnp.ndarray gy, cnp.ndarray gx, tuple geom, bint accum=False):
    """gx (+)= gradient of :func:`pool`; ``x`` is read by max pooling only."""
    cdef size_t g[MAXGEOM]
    cdef uint32_t code = _POOL_OPS[op]
    need_f32(gy, name); need_f32(gx, name)
    if x is not None:
        need_f32(x, name)
    _geom(geom, g)
    cdef size_t ng = len(geom)
    cdef float* _t0 = _fptr_or_null(x)
    cdef float* _t1 = fptr(gy)
    cdef float* _t2 = fptr(gx)
    cdef int32_t st
    with nogil:
        st = nncy_pool_grad_f32(code, g, ng, _t0, _t1, _t2, accum)
    check(st, name)


def asconv(name, which, tuple dims, cnp.ndarray x, cnp.ndarray kv, cnp.ndarray kh, gy,
           cnp.ndarray out, bint accum=False):
    """Adaptive separable convolution: ``which`` 'forward' (out = y) or the
    gradient for 'x', 'vertical_kernel', 'horizontal_kernel' (out (+)= ...).
    ``dims``: (B, C, H, W, Kv, Hv, Wv, Kh, Hh, Wh)."""
    cdef size_t d[10]
    cdef uint32_t code = _ASCONV_OPS[which]
    if len(dims) != 10:
        raise ValueError('%s: asconv needs 10 sizes' % name)
    for arr in (x, kv, kh, out):
        need_f32(arr, name)
    if gy is not None:
        need_f32(gy, name)
    _geom(dims, d)
    cdef float* _t0 = fptr(x)
    cdef float* _t1 = fptr(kv)
    cdef float* _t2 = fptr(kh)
    cdef float* _t3 = _fptr_or_null(gy)
    cdef float* _t4 = fptr(out)
    cdef int32_t st
    with nogil:
        st = nncy_asconv_f32(code, d, _t0, _t1, _t2, _t3, _t4, accum)
    check(st, name)
