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


cdef inline float* f32(cnp.ndarray a, name) except? NULL:
    """The data of `a`, once checked to be a C-contiguous float32 array."""
    need_f32(a, name)
    return fptr(a)


def signature():
    """The hash of the pointwise op table that the library was generated from."""
    return nncy_ops_signature()


def num_threads():
    return nncy_num_threads()


def heap_bytes(reset=False):
    """(bytes the Rust kernels hold now, the most they held since the last
    ``heap_bytes(reset=True)``); NumPy buffers are not included."""
    cdef size_t cur = 0, peak = 0
    nncy_heap_bytes(&cur, &peak, 1 if reset else 0)
    return cur, peak


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
    cdef float* yp = f32(y, name)
    _shape(shape, shp)
    _strides(x0, shape, s0)
    _strides(x1, shape, s1)
    cdef size_t nd = len(shape), npar = cnp.PyArray_SIZE(p)
    cdef float* x0p = fptr(x0)
    cdef float* x1p = fptr(x1)
    cdef float* pp = fptr(p)
    with nogil:
        st = nncy_binary_f32(op, x0p, s0, x1p, s1, yp, shp, nd, pp, npar)
    check(st, name)


def binary_grad(name, uint32_t op, uint32_t which, cnp.ndarray x0, cnp.ndarray x1,
                cnp.ndarray y, cnp.ndarray gy, cnp.ndarray g, cnp.ndarray p, bint accum):
    """g (full output shape) (+)= d op / d x_which * gy, elementwise."""
    cdef ssize_t s0[16]
    cdef ssize_t s1[16]
    cdef size_t shp[16]
    cdef tuple shape = (<object>gy).shape
    cdef int32_t st
    cdef float* gp = f32(g, name)
    cdef float* gyp = f32(gy, name)
    _shape(shape, shp)
    _strides(x0, shape, s0)
    _strides(x1, shape, s1)
    cdef size_t nd = len(shape), npar = cnp.PyArray_SIZE(p)
    cdef const float* yp = fptr(y) if y is not None else NULL
    cdef float* x0p = fptr(x0)
    cdef float* x1p = fptr(x1)
    cdef float* pp = fptr(p)
    with nogil:
        st = nncy_binary_grad_f32(op, which, x0p, s0, x1p, s1, yp, gyp, gp, shp, nd,
                                  pp, npar, accum)
    check(st, name)


def strided_copy(name, cnp.ndarray x, cnp.ndarray y, bint accum=False):
    """y (+)= x, where x is any float32 view of y's shape (transposed, broadcast, sliced)."""
    cdef ssize_t xs[16]
    cdef size_t shp[16]
    cdef int32_t st
    cdef tuple shape = (<object>y).shape
    cdef float* yp = f32(y, name)
    if (<object>x).shape != shape or cnp.PyArray_TYPE(x) != cnp.NPY_FLOAT32:
        raise ValueError('%s: strided_copy needs a float32 view of shape %s' % (name, shape))
    _shape(shape, shp)
    for i in range(len(shape)):
        xs[i] = x.strides[i] // 4
    cdef size_t nd = len(shape)
    cdef float* xp = fptr(x)
    with nogil:
        st = nncy_strided_copy_f32(xp, xs, yp, shp, nd, accum)
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
    cdef float* xp
    cdef float* yp
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
        xp = fptr(src)
        yp = fptr(dst)
        with nogil:
            st = nncy_reduce_f32(code, xp, yp, outer, r, inner, sc, acc)
        check(st, name)
        src = dst


def softmax(name, cnp.ndarray x, cnp.ndarray y, size_t outer, size_t c, size_t inner,
            bint log):
    cdef float* xp = f32(x, name)
    cdef float* yp = f32(y, name)
    cdef int32_t st
    with nogil:
        st = nncy_softmax_f32(xp, yp, outer, c, inner, log)
    check(st, name)


def softmax_grad(name, cnp.ndarray y, cnp.ndarray gy, cnp.ndarray gx, size_t outer,
                 size_t c, size_t inner, bint log, bint accum):
    cdef float* yp = f32(y, name)
    cdef float* gyp = f32(gy, name)
    cdef float* gxp = f32(gx, name)
    cdef int32_t st
    with nogil:
        st = nncy_softmax_grad_f32(yp, gyp, gxp, outer, c, inner, log, accum)
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
    cdef float* xp = f32(x, name)
    cdef float* yp = f32(y, name)
    cdef cnp.ndarray ti = _labels(name, t, outer * inner)
    cdef int64_t* tp = iptr(ti)
    cdef int32_t st
    with nogil:
        st = nncy_softmax_ce_f32(xp, tp, yp, outer, c, inner)
    if st == 2:
        _bad_label(name, ti, c)
    check(st, name)


def softmax_ce_grad(name, cnp.ndarray x, t, cnp.ndarray gy, cnp.ndarray gx,
                    size_t outer, size_t c, size_t inner, bint accum):
    cdef float* xp = f32(x, name)
    cdef float* gyp = f32(gy, name)
    cdef float* gxp = f32(gx, name)
    cdef cnp.ndarray ti = _labels(name, t, outer * inner)
    cdef int64_t* tp = iptr(ti)
    cdef int32_t st
    with nogil:
        st = nncy_softmax_ce_grad_f32(xp, tp, gyp, gxp, outer, c, inner, accum)
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
    cdef float* op = fptr(out)
    cdef float* ap = fptr(a)
    cdef float* bp = fptr(b)
    with nogil:
        st = nncy_gemm_f32(m, n, k, op, ors, ocs, ap, ars, acs, bp, brs, bcs, alpha, beta)
    check(st, name)


cdef float* _sized(cnp.ndarray a, Py_ssize_t n, name) except? NULL:
    """The data of `a`, once checked to be a C-contiguous float32 array of `n`
    elements."""
    need_f32(a, name)
    if cnp.PyArray_SIZE(a) != n:
        raise ValueError('%s: buffer of %d elements, expected %d'
                         % (name, cnp.PyArray_SIZE(a), n))
    return fptr(a)


def rnn_cell(name, bint relu, cnp.ndarray pre, cnp.ndarray h):
    """h = tanh(pre), or max(pre, 0) when relu."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(h)
    cdef float* pp = _sized(pre, n, name)
    cdef float* hp = _sized(h, n, name)
    cdef int32_t st
    with nogil:
        st = nncy_rnn_cell_f32(relu, n, pp, hp)
    check(st, name)


def rnn_cell_grad(name, bint relu, cnp.ndarray h, cnp.ndarray dy, cnp.ndarray dh,
                  cnp.ndarray dpre):
    """dpre = (dy + dh) * act'(pre), from the cell output h."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(h)
    cdef float* hp = _sized(h, n, name)
    cdef float* dyp = _sized(dy, n, name)
    cdef float* dhp = _sized(dh, n, name)
    cdef float* dpp = _sized(dpre, n, name)
    cdef int32_t st
    with nogil:
        st = nncy_rnn_cell_grad_f32(relu, n, hp, dyp, dhp, dpp)
    check(st, name)


def lstm_cell(name, cnp.ndarray gates, cnp.ndarray c_prev, cnp.ndarray c, cnp.ndarray h):
    """One LSTM step over (b, hid) states; gates (b, 4 hid) in place."""
    if h.ndim != 2:
        raise ValueError('%s: lstm_cell needs (batch, hidden) states' % name)
    cdef size_t b = h.shape[0], hid = h.shape[1]
    cdef float* gp = _sized(gates, b * 4 * hid, name)
    cdef float* cpp = _sized(c_prev, b * hid, name)
    cdef float* cp = _sized(c, b * hid, name)
    cdef float* hp = _sized(h, b * hid, name)
    cdef int32_t st
    with nogil:
        st = nncy_lstm_cell_f32(b, hid, gp, cpp, cp, hp)
    check(st, name)


def lstm_cell_grad(name, cnp.ndarray gates, cnp.ndarray c_prev, cnp.ndarray c,
                   cnp.ndarray dy, cnp.ndarray dh, cnp.ndarray dc, cnp.ndarray dgates):
    """One LSTM step backward; dc in: dL/dc, out: dL/dc_prev."""
    if c.ndim != 2:
        raise ValueError('%s: lstm_cell_grad needs (batch, hidden) states' % name)
    cdef size_t b = c.shape[0], hid = c.shape[1]
    cdef float* gp = _sized(gates, b * 4 * hid, name)
    cdef float* dgp = _sized(dgates, b * 4 * hid, name)
    cdef float* cpp = _sized(c_prev, b * hid, name)
    cdef float* cp = _sized(c, b * hid, name)
    cdef float* dyp = _sized(dy, b * hid, name)
    cdef float* dhp = _sized(dh, b * hid, name)
    cdef float* dcp = _sized(dc, b * hid, name)
    cdef int32_t st
    with nogil:
        st = nncy_lstm_cell_grad_f32(b, hid, gp, cpp, cp, dyp, dhp, dcp, dgp)
    check(st, name)


def gru_cell(name, cnp.ndarray gates, cnp.ndarray hw, bhn, cnp.ndarray h_prev,
             cnp.ndarray h):
    """One GRU step; gates and hw (b, 3 hid) in place; bhn (hid,) or None."""
    if h.ndim != 2:
        raise ValueError('%s: gru_cell needs (batch, hidden) states' % name)
    cdef size_t b = h.shape[0], hid = h.shape[1]
    cdef float* gp = _sized(gates, b * 3 * hid, name)
    cdef float* hwp = _sized(hw, b * 3 * hid, name)
    cdef float* hpp = _sized(h_prev, b * hid, name)
    cdef float* hp = _sized(h, b * hid, name)
    cdef const float* bp = NULL if bhn is None else _sized(bhn, hid, name)
    cdef int32_t st
    with nogil:
        st = nncy_gru_cell_f32(b, hid, gp, hwp, bp, hpp, hp)
    check(st, name)


def gru_cell_grad(name, cnp.ndarray gates, cnp.ndarray hw, cnp.ndarray h_prev,
                  cnp.ndarray dy, cnp.ndarray dh, cnp.ndarray dgx, cnp.ndarray dgh,
                  cnp.ndarray dh_prev):
    """One GRU step backward; dh_prev gets only the direct part (dy + dh) z."""
    if h_prev.ndim != 2:
        raise ValueError('%s: gru_cell_grad needs (batch, hidden) states' % name)
    cdef size_t b = h_prev.shape[0], hid = h_prev.shape[1]
    cdef float* gp = _sized(gates, b * 3 * hid, name)
    cdef float* hwp = _sized(hw, b * 3 * hid, name)
    cdef float* dgxp = _sized(dgx, b * 3 * hid, name)
    cdef float* dghp = _sized(dgh, b * 3 * hid, name)
    cdef float* hpp = _sized(h_prev, b * hid, name)
    cdef float* dyp = _sized(dy, b * hid, name)
    cdef float* dhp = _sized(dh, b * hid, name)
    cdef float* dhpp = _sized(dh_prev, b * hid, name)
    cdef int32_t st
    with nogil:
        st = nncy_gru_cell_grad_f32(b, hid, gp, hwp, hpp, dyp, dhp, dgxp, dghp, dhpp)
    check(st, name)


cdef int _indices(name, cnp.ndarray idx) except -1:
    if cnp.PyArray_TYPE(idx) != cnp.NPY_INT64 or not cnp.PyArray_IS_C_CONTIGUOUS(idx):
        raise TypeError('%s: indices must be a C-contiguous int64 array' % name)
    return 0


def _bad_index(name, idx, rows):
    bad = idx[(idx < 0) | (idx >= rows)]
    raise ValueError("%s: argument 'x0' holds index %d; indices must lie in [0, %d)"
                     % (name, bad[0], rows))


ctypedef int32_t (*_embed_fn)(const int64_t*, size_t, const float*, size_t, size_t,
                              float*) noexcept nogil


cdef _embed(name, _embed_fn fn, cnp.ndarray idx, cnp.ndarray table, cnp.ndarray rows_in,
            cnp.ndarray rows_out):
    """fn over indices ``idx`` into the 2-D ``table``; ``rows_in``/``rows_out``
    are (len(idx), width) or the table, whichever the direction reads/writes."""
    _indices(name, idx)
    if table.ndim != 2:
        raise ValueError('%s: the embedding table must be 2-D' % name)
    cdef size_t n = cnp.PyArray_SIZE(idx), rows = table.shape[0], width = table.shape[1]
    _sized(table, rows * width, name)
    _sized(rows_out if rows_in is table else rows_in, n * width, name)
    cdef int32_t st
    cdef int64_t* ip = iptr(idx)
    cdef float* src = fptr(rows_in)
    cdef float* dst = fptr(rows_out)
    with nogil:
        st = fn(ip, n, src, rows, width, dst)
    if st == 2:
        _bad_index(name, idx, rows)
    check(st, name)


def embed(name, cnp.ndarray idx, cnp.ndarray w, cnp.ndarray y):
    """y[k] = w[idx[k]]; w is (rows, width), y (len(idx), width)."""
    _embed(name, nncy_embed_f32, idx, w, w, y)


def embed_grad(name, cnp.ndarray idx, cnp.ndarray gy, cnp.ndarray gw):
    """gw[idx[k]] += gy[k]; gw is (rows, width)."""
    _embed(name, nncy_embed_grad_f32, idx, gw, gy, gw)


def _correlation_sizes(name, tuple dims, tuple params):
    """(input size, output size) of a patch correlation; ValueError when the
    geometry is invalid (the kernel would refuse it too)."""
    if len(dims) != 4 or len(params) != 12:
        raise ValueError('%s: patch correlation geometry needs 4 dims and 12 parameters' % name)
    n, h, w, c = dims
    ph, pw, sh, sw, ah, aw, bh, bw, pt, pb, pl, pr = params
    if (min(dims) < 0 or min(ph, pw, ah, aw, bh, bw) <= 0 or min(sh, sw, pt, pb, pl, pr) < 0
            or h + pt + pb < ph or w + pl + pr < pw):
        raise ValueError('%s: invalid patch correlation geometry %s %s' % (name, dims, params))
    oh, ow = (h + pt + pb - ph) // ah + 1, (w + pl + pr - pw) // aw + 1
    return n * h * w * c, n * oh * ow * (2 * sh // bh + 1) * (2 * sw // bw + 1)


cdef int _geometry(name, tuple dims, tuple params, size_t* d, int64_t* p, list arrays,
                   list sizes) except -1:
    ni, no = _correlation_sizes(name, dims, params)
    for arr, which in zip(arrays, sizes):
        _sized(arr, ni if which == 0 else no, name)
    for i in range(4):
        d[i] = dims[i]
    for i in range(12):
        p[i] = params[i]
    return 0


def patch_correlation(name, cnp.ndarray x1, cnp.ndarray x2, cnp.ndarray y, tuple dims,
                      tuple params):
    """y (n, cy, cx, oh, ow) = correlation of NCHW x1 and x2 (dims n, h, w, c);
    params: patch, shift, patch_step, shift_step (h, w each), padding t, b, l, r."""
    cdef size_t d[4]
    cdef int64_t p[12]
    _geometry(name, dims, params, d, p, [x1, x2, y], [0, 0, 1])
    cdef int32_t st
    cdef float* x1p = fptr(x1)
    cdef float* x2p = fptr(x2)
    cdef float* yp = fptr(y)
    with nogil:
        st = nncy_patch_correlation_f32(x1p, x2p, yp, d, p)
    check(st, name)


def patch_correlation_grad(name, uint32_t which, cnp.ndarray x1, cnp.ndarray x2,
                           cnp.ndarray gy, cnp.ndarray gx, tuple dims, tuple params,
                           bint accum):
    """gx (+)= gradient of the correlation with respect to x1 (which 0) or x2 (1)."""
    cdef size_t d[4]
    cdef int64_t p[12]
    _geometry(name, dims, params, d, p, [x1, x2, gy, gx], [0, 0, 1, 0])
    cdef int32_t st
    cdef float* x1p = fptr(x1)
    cdef float* x2p = fptr(x2)
    cdef float* gyp = fptr(gy)
    cdef float* gxp = fptr(gx)
    with nogil:
        st = nncy_patch_correlation_grad_f32(which, x1p, x2p, gyp, gxp, d, p, accum)
    check(st, name)
include "_kernels_math.pxi"



# ---- solver family --------------------------------------------------------

cdef float* _opt_state(s, cnp.ndarray w, name) except? NULL:
    """The buffer of an optional solver state (NULL when None), checked."""
    if s is None:
        return NULL
    cdef cnp.ndarray a = s
    cdef float* ap = f32(a, name)
    if cnp.PyArray_SIZE(a) != cnp.PyArray_SIZE(w):
        raise ValueError('%s: a state has %d elements, the parameter %d'
                         % (name, cnp.PyArray_SIZE(a), cnp.PyArray_SIZE(w)))
    return ap


def solver_update(name, uint32_t rule, cnp.ndarray w, cnp.ndarray g, s0, s1, s2,
                  cnp.ndarray p):
    """One fused solver step over a parameter (see rust/src/optim.rs, Rule):
    w, g and the states (None when the rule keeps fewer) are float32,
    C-contiguous and of one size; p holds the rule's parameters (float32)."""
    cdef float* wp = f32(w, name)
    cdef const float* gp = f32(g, name)
    cdef const float* pp = f32(p, name)
    if cnp.PyArray_SIZE(g) != cnp.PyArray_SIZE(w):
        raise ValueError('%s: gradient has %d elements, the parameter %d'
                         % (name, cnp.PyArray_SIZE(g), cnp.PyArray_SIZE(w)))
    cdef float* a0 = _opt_state(s0, w, name)
    cdef float* a1 = _opt_state(s1, w, name)
    cdef float* a2 = _opt_state(s2, w, name)
    cdef size_t n = cnp.PyArray_SIZE(w), npar = cnp.PyArray_SIZE(p)
    cdef int32_t st
    with nogil:
        st = nncy_solver_update_f32(rule, wp, gp, a0, a1, a2, n, pp, npar)
    check(st, name)


def solver_grad(name, uint32_t op, cnp.ndarray g, w, float a):
    """op 0: g += a * w (weight decay); op 1: g *= a.  Float32, C-contiguous."""
    cdef float* gp = f32(g, name)
    cdef cnp.ndarray wa
    cdef const float* wp = NULL
    if op == 0:
        wa = w
        wp = f32(wa, name)
        if cnp.PyArray_SIZE(wa) != cnp.PyArray_SIZE(g):
            raise ValueError('%s: parameter and gradient sizes differ' % name)
    cdef size_t n = cnp.PyArray_SIZE(g)
    cdef int32_t st
    with nogil:
        st = nncy_solver_grad_f32(op, gp, wp, n, a)
    check(st, name)


def sum_squares(name, cnp.ndarray x):
    """Σ x² of a float32, C-contiguous array, in double precision."""
    cdef const float* xp = f32(x, name)
    cdef double out = 0
    cdef size_t n = cnp.PyArray_SIZE(x)
    cdef int32_t st
    with nogil:
        st = nncy_sum_squares_f32(xp, n, &out)
    check(st, name)
    return out


def nonfinite(name, cnp.ndarray x):
    """1 if the float32 array holds an infinity, | 2 if it holds a NaN."""
    cdef const float* xp = f32(x, name)
    cdef uint32_t out = 0
    cdef size_t n = cnp.PyArray_SIZE(x)
    cdef int32_t st
    with nogil:
        st = nncy_nonfinite_f32(xp, n, &out)
    check(st, name)
    return out


# ---------------------------------------------------------------------------
# Normalization, PReLU and clipping (rust/src/norm.rs).  An array is seen as
# `pat` = (p, a, c, b); group g = (p, c) holds x[p, :, c, :]; per-group
# arrays hold p * c values.  Sizes are checked here, before any pointer is
# handed to Rust.

cdef size_t _pat_size(name, tuple pat, size_t* dims) except? 0:
    if len(pat) != 4:
        raise ValueError('%s: a grouping pattern has 4 sizes, got %r' % (name, pat))
    cdef size_t n = 1
    for i in range(4):
        if pat[i] < 0:
            raise ValueError('%s: negative size in pattern %r' % (name, pat))
        dims[i] = pat[i]
        n *= dims[i]
    return n


cdef float* _arr(name, a, size_t n, what) except? NULL:
    """The data of a C-contiguous float32 array of n values; NULL for None."""
    if a is None:
        return NULL
    cdef cnp.ndarray arr = a
    cdef float* p = f32(arr, name)
    if <size_t>cnp.PyArray_SIZE(arr) != n:
        raise ValueError('%s: %s has %d values, expected %d'
                         % (name, what, cnp.PyArray_SIZE(arr), n))
    return p


def norm_moments(name, x, tuple pat, mean, var):
    """mean, var (per group) = mean and biased variance of each group of x."""
    cdef size_t d[4]
    cdef size_t n = _pat_size(name, pat, d)
    cdef size_t g = d[0] * d[2]
    cdef float* xp = _arr(name, x, n, 'x')
    cdef float* mp = _arr(name, mean, g, 'mean')
    cdef float* vp = _arr(name, var, g, 'var')
    cdef int32_t st
    with nogil:
        st = nncy_norm_moments_f32(xp, d[0], d[1], d[2], d[3], mp, vp)
    check(st, name)


def norm_sums(name, u, v, center, mask, tuple pat, su, suv):
    """su = sum of u', suv = sum of u' (v - center) per group, where u' is u
    masked to mask > 0; v None means u, center None means 0, mask None: none."""
    cdef size_t d[4]
    cdef size_t n = _pat_size(name, pat, d)
    cdef size_t g = d[0] * d[2]
    cdef float* up = _arr(name, u, n, 'u')
    cdef float* vp = _arr(name, v, n, 'v')
    cdef float* cp = _arr(name, center, g, 'center')
    cdef float* mp = _arr(name, mask, n, 'mask')
    cdef float* sp = _arr(name, su, g, 'su')
    cdef float* svp = _arr(name, suv, g, 'suv')
    cdef int32_t st
    with nogil:
        st = nncy_norm_sums_f32(up, vp, cp, mp, d[0], d[1], d[2], d[3], sp, svp)
    check(st, name)


def norm_affine(name, x, tuple pat, center, sa, sb, z, bint relu, y):
    """y = (x - center) * sa + sb (+ z) per group, then ReLU when `relu`."""
    cdef size_t d[4]
    cdef size_t n = _pat_size(name, pat, d)
    cdef size_t g = d[0] * d[2]
    cdef float* xp = _arr(name, x, n, 'x')
    cdef float* cp = _arr(name, center, g, 'center')
    cdef float* ap = _arr(name, sa, g, 'scale')
    cdef float* bp = _arr(name, sb, g, 'shift')
    cdef float* zp = _arr(name, z, n, 'z')
    cdef float* yp = _arr(name, y, n, 'y')
    if cp == NULL or ap == NULL or bp == NULL or xp == NULL or yp == NULL:
        raise ValueError('%s: norm_affine needs x, center, scale, shift and y' % name)
    cdef int32_t st
    with nogil:
        st = nncy_norm_affine_f32(xp, d[0], d[1], d[2], d[3], cp, ap, bp, zp, relu, yp)
    check(st, name)


def norm_combine(name, u, v, mask, tuple pat, ca, cb, center, cc, out, bint accum):
    """out (+)= ca u' + cb (v - center) + cc per group (u' as in norm_sums)."""
    cdef size_t d[4]
    cdef size_t n = _pat_size(name, pat, d)
    cdef size_t g = d[0] * d[2]
    cdef float* up = _arr(name, u, n, 'u')
    cdef float* vp = _arr(name, v, n, 'v')
    cdef float* mp = _arr(name, mask, n, 'mask')
    cdef float* ap = _arr(name, ca, g, 'ca')
    cdef float* bp = _arr(name, cb, g, 'cb')
    cdef float* mcp = _arr(name, center, g, 'center')
    cdef float* ccp = _arr(name, cc, g, 'cc')
    cdef float* op = _arr(name, out, n, 'out')
    if up == NULL or ap == NULL or bp == NULL or mcp == NULL or ccp == NULL or op == NULL:
        raise ValueError('%s: norm_combine needs u, ca, cb, center, cc and out' % name)
    cdef int32_t st
    with nogil:
        st = nncy_norm_combine_f32(up, vp, mp, d[0], d[1], d[2], d[3], ap, bp, mcp, ccp,
                                   op, accum)
    check(st, name)


def relu_mask(name, y, dy, out, bint accum):
    """out (+)= dy where y > 0."""
    cdef size_t n = cnp.PyArray_SIZE(<cnp.ndarray?>out)
    cdef float* yp = _arr(name, y, n, 'y')
    cdef float* gp = _arr(name, dy, n, 'dy')
    cdef float* op = _arr(name, out, n, 'out')
    cdef int32_t st
    with nogil:
        st = nncy_relu_mask_f32(yp, gp, op, n, accum)
    check(st, name)


def prelu(name, x, w, tuple pat, y):
    cdef size_t d[4]
    cdef size_t n = _pat_size(name, pat, d)
    cdef float* xp = _arr(name, x, n, 'x')
    cdef float* wp = _arr(name, w, d[0] * d[2], 'slope')
    cdef float* yp = _arr(name, y, n, 'y')
    cdef int32_t st
    with nogil:
        st = nncy_prelu_f32(xp, wp, d[0], d[1], d[2], d[3], yp)
    check(st, name)


def prelu_grad(name, x, w, dy, tuple pat, dx, bint accum_x, dw, bint accum_w):
    cdef size_t d[4]
    cdef size_t n = _pat_size(name, pat, d)
    cdef size_t g = d[0] * d[2]
    cdef float* xp = _arr(name, x, n, 'x')
    cdef float* wp = _arr(name, w, g, 'slope')
    cdef float* gp = _arr(name, dy, n, 'dy')
    cdef float* dxp = _arr(name, dx, n, 'dx')
    cdef float* dwp = _arr(name, dw, g, 'dw')
    cdef int32_t st
    with nogil:
        st = nncy_prelu_grad_f32(xp, wp, gp, d[0], d[1], d[2], d[3], dxp, accum_x, dwp,
                                 accum_w)
    check(st, name)


def clip(name, x, lo, float lo_v, hi, float hi_v, y, bint accum):
    """y (+)= min(max(x, lo), hi); lo / hi are arrays of x's size, or None for
    the numbers lo_v / hi_v."""
    cdef size_t n = cnp.PyArray_SIZE(<cnp.ndarray?>y)
    cdef float* xp = _arr(name, x, n, 'x')
    cdef float* lp = _arr(name, lo, n, 'min')
    cdef float* hp = _arr(name, hi, n, 'max')
    cdef float* yp = _arr(name, y, n, 'y')
    cdef int32_t st
    with nogil:
        st = nncy_clip_f32(xp, lp, lo_v, hp, hi_v, yp, n, accum)
    check(st, name)


def clip_grad(name, x, lo, float lo_v, hi, float hi_v, gy, uint32_t which, g, bint accum):
    """g (+)= gy where operand `which` (0 x, 1 min, 2 max) passes through the clip."""
    cdef size_t n = cnp.PyArray_SIZE(<cnp.ndarray?>g)
    cdef float* xp = _arr(name, x, n, 'x')
    cdef float* lp = _arr(name, lo, n, 'min')
    cdef float* hp = _arr(name, hi, n, 'max')
    cdef float* gyp = _arr(name, gy, n, 'gy')
    cdef float* gp = _arr(name, g, n, 'g')
    cdef int32_t st
    with nogil:
        st = nncy_clip_grad_f32(xp, lp, lo_v, hp, hi_v, gyp, which, gp, n, accum)
    check(st, name)


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


def conv(name, op, cnp.ndarray a, cnp.ndarray b, cnp.ndarray out, bias, tuple geom,
         bint accum=False):
    """Convolution kernel ``op`` ('forward', 'data' or 'filter') on C-contiguous
    float32 arrays; ``geom`` as in ``nncy_conv_f32``: (batch, channels,
    out_channels, group, ndim, channel_last, then per spatial axis len, out,
    kernel, pad, stride, dilation).  forward: out (+)= conv(a=x, b=w) [+ bias];
    data: out (+)= conv^T(a=gy, b=w) [+ bias]; filter: out (+)= dconv/dw (a=x, b=gy)."""
    cdef size_t g[MAXGEOM]
    cdef uint32_t code = _CONV_OPS[op]
    cdef float* ap = f32(a, name)
    cdef float* bp = f32(b, name)
    cdef float* outp = f32(out, name)
    cdef float* biasp = NULL if bias is None else f32(bias, name)
    _geom(geom, g)
    cdef size_t ng = len(geom)
    cdef int32_t st
    with nogil:
        st = nncy_conv_f32(code, g, ng, ap, bp, outp, biasp, accum)
    check(st, name)


def pool(name, op, cnp.ndarray x, cnp.ndarray y, tuple geom, bint accum=False):
    """y (+)= pooling ``op`` ('max', 'sum', 'average') of x; ``geom`` as in
    ``nncy_pool_f32``: (outer, ndim, including_pad, then per axis len, out,
    kernel, stride, pad)."""
    cdef size_t g[MAXGEOM]
    cdef uint32_t code = _POOL_OPS[op]
    cdef float* xp = f32(x, name)
    cdef float* yp = f32(y, name)
    _geom(geom, g)
    cdef size_t ng = len(geom)
    cdef int32_t st
    with nogil:
        st = nncy_pool_f32(code, g, ng, xp, yp, accum)
    check(st, name)


def pool_grad(name, op, x, cnp.ndarray gy, cnp.ndarray gx, tuple geom, bint accum=False):
    """gx (+)= gradient of :func:`pool`; ``x`` is read by max pooling only."""
    cdef size_t g[MAXGEOM]
    cdef uint32_t code = _POOL_OPS[op]
    cdef float* gyp = f32(gy, name)
    cdef float* gxp = f32(gx, name)
    cdef float* xp = NULL if x is None else f32(x, name)
    _geom(geom, g)
    cdef size_t ng = len(geom)
    cdef int32_t st
    with nogil:
        st = nncy_pool_grad_f32(code, g, ng, xp, gyp, gxp, accum)
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
    cdef float* xp = f32(x, name)
    cdef float* kvp = f32(kv, name)
    cdef float* khp = f32(kh, name)
    cdef float* op = f32(out, name)
    cdef float* gyp = NULL if gy is None else f32(gy, name)
    _geom(dims, d)
    cdef int32_t st
    with nogil:
        st = nncy_asconv_f32(code, d, xp, kvp, khp, gyp, op, accum)
    check(st, name)
include "_kernels_infer.pxi"
