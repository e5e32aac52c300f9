# Planned inference: a list of kernel calls whose arrays, geometry and packed
# weights are fixed when the plan is made, run back to back without argument
# checks (they were done once, when each call was added).

from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcpy, memset

cdef extern from "nncy_kernels.h" nogil:
    int32_t nncy_infer_pack_conv_f32(const size_t* dims, const float* w, float* out)
    int32_t nncy_infer_conv_sizes(const size_t* dims, size_t* packed, size_t* scratch)
    int32_t nncy_infer_conv2d_f32(const size_t* dims, const float* x, const float* wp,
                                  const float* bias, int32_t relu, float* scratch, float* y)
    int32_t nncy_infer_max_pool2d_f32(const size_t* dims, const float* x, float* y)
    int32_t nncy_infer_dense_f32(size_t m, size_t k, size_t n, const float* x, const float* w,
                                 const float* bias, int32_t relu, float* y)

cdef enum:
    _P_CONV = 0
    _P_POOL = 1
    _P_DENSE = 2
    _P_RELU = 3
    _P_SOFTMAX = 4
    _P_PYTHON = 5

cdef struct _PStep:
    int kind
    size_t dims[13]
    const float* a
    const float* b
    const float* c
    float* s
    float* y
    int32_t flag


cdef float* _pf32(a, Py_ssize_t n, what) except NULL:
    """The data of ``a``, a C-contiguous float32 array of ``n`` elements."""
    if type(a) is not np.ndarray:
        raise TypeError('program: %s must be a NumPy array' % what)
    cdef cnp.ndarray arr = a
    need_f32(arr, 'program')
    if arr.size != n:
        raise ValueError('program: %s has %d elements, expected %d' % (what, arr.size, n))
    return fptr(arr)


cdef class Program:
    """Kernel calls planned once and run in order by :meth:`run`.

    ``conv2d``, ``max_pool2d``, ``dense``, ``relu`` and ``softmax`` add calls
    on float32 arrays that must stay alive and in place (the program keeps a
    reference to each); ``call`` adds a Python callable.  ``set_io`` names the
    input arrays (copied into by ``run``) and the output arrays (copied out)."""
    cdef _PStep* steps
    cdef Py_ssize_t n, cap
    cdef list keep
    cdef list pycalls
    cdef list ins
    cdef list outs

    def __cinit__(self):
        self.steps = NULL
        self.n = self.cap = 0
        self.keep = []
        self.pycalls = []
        self.ins = []
        self.outs = []

    def __dealloc__(self):
        free(self.steps)

    cdef _PStep* _add(self, int kind) except NULL:
        cdef _PStep* grown
        if self.n == self.cap:
            grown = <_PStep*>realloc(self.steps, (self.cap * 2 + 8) * sizeof(_PStep))
            if grown == NULL:
                raise MemoryError()
            self.steps = grown
            self.cap = self.cap * 2 + 8
        cdef _PStep* s = &self.steps[self.n]
        memset(s, 0, sizeof(_PStep))
        s.kind = kind
        self.n += 1
        return s

    def __len__(self):
        return self.n

    def conv2d(self, x, w, bias, y, tuple dims, bint relu):
        """y = conv2d(x, w) + bias (None: none), ReLU'd where ``relu``; ``dims``
        (batch, c, h, w, oc, oh, ow, kh, kw, ph, pw, sh, sw)."""
        cdef size_t d[13]
        cdef size_t npacked = 0, nscratch = 0
        if len(dims) != 13:
            raise ValueError('program: conv2d takes 13 sizes')
        for i in range(13):
            d[i] = dims[i]
        check(nncy_infer_conv_sizes(d, &npacked, &nscratch), 'program conv2d')
        cdef float* px = _pf32(x, d[0] * d[1] * d[2] * d[3], 'x')
        cdef float* pw = _pf32(w, d[4] * d[1] * d[7] * d[8], 'weight')
        cdef float* pb = NULL if bias is None else _pf32(bias, d[4], 'bias')
        cdef float* py = _pf32(y, d[0] * d[4] * d[5] * d[6], 'y')
        packed = np.empty(max(npacked, 1), np.float32)
        scratch = np.empty(max(nscratch, 1), np.float32)
        check(nncy_infer_pack_conv_f32(d, pw, fptr(packed)), 'program conv2d')
        cdef _PStep* s = self._add(_P_CONV)
        memcpy(s.dims, d, sizeof(d))
        s.a, s.b, s.c, s.s, s.y, s.flag = px, fptr(packed), pb, fptr(scratch), py, relu
        self.keep.extend((x, packed, bias, scratch, y))

    def max_pool2d(self, x, y, tuple dims):
        """y = max pooling of x; ``dims`` (planes, h, w, oh, ow, kh, kw, sh, sw),
        no padding, every window inside."""
        if len(dims) != 9:
            raise ValueError('program: max_pool2d takes 9 sizes')
        cdef _PStep* s = self._add(_P_POOL)
        for i in range(9):
            s.dims[i] = dims[i]
        s.a = _pf32(x, dims[0] * dims[1] * dims[2], 'x')
        s.y = _pf32(y, dims[0] * dims[3] * dims[4], 'y')
        self.keep.extend((x, y))

    def dense(self, x, w, bias, y, size_t m, size_t k, size_t n, bint relu):
        """y (m, n) = x (m, k) w (k, n) + bias (None: none), ReLU'd where ``relu``."""
        cdef _PStep* s = self._add(_P_DENSE)
        s.dims[0], s.dims[1], s.dims[2] = m, k, n
        s.a = _pf32(x, m * k, 'x')
        s.b = _pf32(w, k * n, 'weight')
        s.c = NULL if bias is None else _pf32(bias, n, 'bias')
        s.y = _pf32(y, m * n, 'y')
        s.flag = relu
        self.keep.extend((x, w, bias, y))

    def relu(self, x, y):
        """y = max(x, 0) (x if x > 0 else 0), same sizes."""
        cdef _PStep* s = self._add(_P_RELU)
        s.dims[0] = x.size
        s.a = _pf32(x, x.size, 'x')
        s.y = _pf32(y, x.size, 'y')
        self.keep.extend((x, y))

    def softmax(self, x, y, size_t outer, size_t c, size_t inner, bint log):
        """y = (log) softmax of x over the middle of (outer, c, inner)."""
        cdef _PStep* s = self._add(_P_SOFTMAX)
        s.dims[0], s.dims[1], s.dims[2] = outer, c, inner
        s.a = _pf32(x, outer * c * inner, 'x')
        s.y = _pf32(y, outer * c * inner, 'y')
        s.flag = log
        self.keep.extend((x, y))

    def call(self, f):
        """Adds a Python callable taking no arguments."""
        cdef _PStep* s = self._add(_P_PYTHON)
        s.dims[0] = len(self.pycalls)
        self.pycalls.append(f)

    def set_io(self, list ins, list outs):
        for a in ins + outs:
            _pf32(a, a.size, 'input or output')
        self.ins, self.outs = list(ins), list(outs)

    cdef int _run_range(self, Py_ssize_t i0, Py_ssize_t i1) except -1:
        cdef int32_t st = 0
        cdef Py_ssize_t i = i0
        cdef _PStep* s
        with nogil:
            while i < i1:
                s = &self.steps[i]
                if s.kind == _P_CONV:
                    st = nncy_infer_conv2d_f32(s.dims, s.a, s.b, s.c, s.flag, s.s, s.y)
                elif s.kind == _P_POOL:
                    st = nncy_infer_max_pool2d_f32(s.dims, s.a, s.y)
                elif s.kind == _P_DENSE:
                    st = nncy_infer_dense_f32(s.dims[0], s.dims[1], s.dims[2], s.a, s.b,
                                              s.c, s.flag, s.y)
                elif s.kind == _P_RELU:
                    st = nncy_unary_f32(0, s.a, s.y, s.dims[0], NULL, 0)
                elif s.kind == _P_SOFTMAX:
                    st = nncy_softmax_f32(s.a, s.y, s.dims[0], s.dims[1], s.dims[2], s.flag)
                if st != 0:
                    break
                i += 1
        return check(st, 'program step %d' % i)

    def run(self, arrays):
        """Copies ``arrays`` (float32, C-contiguous, the input shapes) into the
        inputs, runs the calls and returns copies of the outputs; None (and
        nothing run) when an array does not fit."""
        cdef Py_ssize_t k, i, i0
        cdef cnp.ndarray a, dst
        if len(arrays) != len(self.ins):
            return None
        for k in range(len(self.ins)):
            src = arrays[k]
            if type(src) is not np.ndarray:
                return None
            a = src
            dst = self.ins[k]
            if cnp.PyArray_TYPE(a) != cnp.NPY_FLOAT32 or not cnp.PyArray_IS_C_CONTIGUOUS(a) \
                    or (<object>a).shape != (<object>dst).shape:
                return None
        for k in range(len(self.ins)):
            a = arrays[k]
            dst = self.ins[k]
            memcpy(cnp.PyArray_DATA(dst), cnp.PyArray_DATA(a), cnp.PyArray_NBYTES(dst))
        i0 = 0
        for i in range(self.n):
            if self.steps[i].kind == _P_PYTHON:
                self._run_range(i0, i)
                self.pycalls[self.steps[i].dims[0]]()
                i0 = i + 1
        self._run_range(i0, self.n)
        return [cnp.PyArray_NewCopy(<cnp.ndarray>o, cnp.NPY_CORDER) for o in self.outs]
