# cython: language_level=3
"""The graph engine: NdArray, Variable, Function, contexts and the dispatch of
function calls to backend implementations.

Buffers are NumPy arrays owned by NdArray; ``Variable.d``/``.g`` hand out those
arrays themselves (zero-copy).  A Function node keeps its inputs strongly and
its outputs weakly (plus their data arrays), so a graph is freed as soon as the
user drops its last variable, without waiting for the cycle collector.
"""
cimport cython
cimport numpy as cnp
from cpython.buffer cimport PyBUF_WRITABLE
from libc.stdint cimport uint32_t
from nncy cimport _kernels as K

import weakref
import numpy as np
import nncy._kernels as _K

from nncy._table import BY_NAME, BY_TYPE

cnp.import_array()

cdef object _F32 = np.dtype(np.float32)
cdef object _F16 = np.dtype(np.float16)
cdef object _np_empty = np.empty
cdef object _np_zeros = np.zeros
cdef object _wref = weakref.ref
cdef cnp.ndarray _NO_PARAMS = np.zeros(1, np.float32)


# ---------------------------------------------------------------------------
# Contexts
# ---------------------------------------------------------------------------

cdef class Context:
    """Where and how functions run: an ordered list of backends
    (``'cudnn:float'``, ``'cuda:float'``, ``'cpu:float'``), an array class and a
    device id.  The first backend that implements a function is used."""

    def __init__(self, backend=None, array_class='', device_id='0'):
        self.backend = backend if backend is not None else ['cpu:float']
        self.array_class = array_class
        self.device_id = str(device_id)

    @property
    def backend(self):
        return self._backend

    @backend.setter
    def backend(self, value):
        if isinstance(value, str):
            value = [value]
        self._backend = list(value)
        self._key = tuple(b.split(':')[0] for b in self._backend)
        half = bool(self._backend) and self._backend[0].split(':')[-1] == 'half'
        self._dtype = _F16 if half else _F32

    @property
    def type_config(self):
        return self._backend[0].split(':')[-1] if self._backend else 'float'

    def __eq__(self, other):
        return (isinstance(other, Context) and self._backend == (<Context>other)._backend
                and self.array_class == (<Context>other).array_class
                and self.device_id == (<Context>other).device_id)

    def __hash__(self):
        return hash((tuple(self._backend), self.array_class, self.device_id))

    def __repr__(self):
        return 'Context(backend=%r, array_class=%r, device_id=%r)' % (
            self._backend, self.array_class, self.device_id)


cdef Context _ctx = Context()
cdef bint _auto_forward = False
cdef bint _global_recompute = False


def get_current_context():
    return _ctx


def set_default_context(Context ctx):
    global _ctx
    _ctx = ctx


def set_auto_forward(bint auto):
    global _auto_forward
    _auto_forward = auto


def get_auto_forward():
    return _auto_forward


def set_global_recompute(bint recompute):
    global _global_recompute
    _global_recompute = recompute


def get_global_recompute():
    return _global_recompute


# ---------------------------------------------------------------------------
# NdArray
# ---------------------------------------------------------------------------

cdef tuple _as_shape(shape):
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        out = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError('shape must be a sequence of int, got %r' % (shape,))
    for s in out:
        if s < 0:
            raise ValueError('shape must not have negative sizes, got %r' % (out,))
    return out


cdef NdArray _ndarray_from(object arr):
    cdef NdArray a = NdArray.__new__(NdArray)
    a._arr = arr
    a._shape = arr.shape
    a._dtype = arr.dtype
    return a


cdef class Operand:
    """Python operators shared by NdArray and Variable, mapped onto functions
    by nncy._operators (NdArray operands compute at once).  ``==`` and ``!=``
    stay identity comparisons, as in NNabla, so both stay hashable."""

    def __neg__(self): return _ops().neg(self)
    def __pos__(self): return self
    def __abs__(self): return _ops().abs_(self)
    def __add__(self, other): return _ops().add(self, other)
    def __radd__(self, other): return _ops().add(self, other)
    def __sub__(self, other): return _ops().sub(self, other)
    def __rsub__(self, other): return _ops().rsub(self, other)
    def __mul__(self, other): return _ops().mul(self, other)
    def __rmul__(self, other): return _ops().mul(self, other)
    def __truediv__(self, other): return _ops().div(self, other)
    def __rtruediv__(self, other): return _ops().rdiv(self, other)
    def __pow__(self, other, mod): return _ops().pow_(self, other)
    def __rpow__(self, other, mod): return _ops().rpow(self, other)
    def __matmul__(self, other): return _ops().matmul(self, other)
    def __lt__(self, other): return _ops().lt(self, other)
    def __le__(self, other): return _ops().le(self, other)
    def __gt__(self, other): return _ops().gt(self, other)
    def __ge__(self, other): return _ops().ge(self, other)
    def __hash__(self): return object.__hash__(self)


cdef dict _BUFFER_FORMATS = {}

# DLPack device types of GPU memory: CUDA, CUDA host-pinned, CUDA managed.
_DLPACK_GPU = (2, 3, 13)

# The GPU backend's array operations (nncy.cuda sets it; None on CPU only):
# an object with zeros(shape, dtype), empty(shape, dtype), upload(host, dev)
# -> dev (reusing ``dev`` when it fits), download(dev, host) -> host (reusing
# ``host`` when it fits), asarray(obj) for objects with
# __cuda_array_interface__, from_dlpack(obj) for GPU DLPack producers and
# owns(obj) (whether obj is one of its arrays).
cdef object _device = None


def set_device_backend(backend):
    """Install the array operations of a GPU backend (see ``_device``)."""
    global _device
    _device = backend


def get_device_backend():
    return _device


cdef object _need_device():
    """The GPU backend's array operations, loading nncy.cuda (and CuPy) on
    first use; ImportError naming CuPy when it is missing."""
    if _device is None:
        import importlib
        importlib.import_module('nncy.cuda').cupy()
    return _device


# A training step frees and allocates the same large buffers on every step.
# glibc serves large blocks with mmap and hands freed memory back to the
# system, so every step would pay a page fault per 4 KiB of fresh memory.
# Raising the mmap and trim thresholds keeps freed memory in the heap, where
# any later allocation reuses it: the resident size stays at the peak of live
# buffers (not above it), and steps stop faulting.
cdef extern from *:
    """
    #if defined(__GLIBC__)
    #include <malloc.h>
    static void nncy_keep_freed_memory(void) {
        mallopt(M_MMAP_THRESHOLD, 32 << 20);
        mallopt(M_TRIM_THRESHOLD, 256 << 20);
    }
    #else
    static void nncy_keep_freed_memory(void) {}
    #endif
    """
    void nncy_keep_freed_memory()

nncy_keep_freed_memory()


cdef class NdArray(Operand):
    """An n-dimensional buffer.  ``.data`` is the NumPy array itself; storage is
    allocated on first use.

    Under a GPU backend an NdArray may also hold a device copy.  Whichever side
    was accessed last is current: reading the host array (``.d``, NumPy
    interop, CPU kernels) first copies a newer device copy back, and device
    access uploads a host copy that may have been written since.  For arrays
    with a device copy, ``.data`` is the device array (CuPy)."""

    def __init__(self, shape=(), dtype=None):
        self._shape = _as_shape(shape)
        self._arr = None
        self._dtype = _ctx._dtype if dtype is None else np.dtype(dtype)

    cdef object get(self):
        if self._on_dev:
            self._pull()
        if self._arr is None:
            self._arr = _np_zeros(self._shape, self._dtype)
        return self._arr

    cdef object get_empty(self):
        self._on_dev = False   # the caller overwrites every element
        if self._arr is None:
            self._arr = _np_empty(self._shape, self._dtype)
        return self._arr

    cdef _pull(self):
        """Copy the (newer) device copy to the host."""
        self._arr = _device.download(self._dev, self._arr)
        self._on_dev = False

    cdef object device(self):
        """The device copy, up to date (uploaded from the host if needed)."""
        if not self._on_dev:
            dev = _need_device()
            if self._arr is None:
                self._dev = dev.zeros(self._shape, self._dtype)
            else:
                self._dev = dev.upload(self._arr, self._dev)
            self._on_dev = True
        return self._dev

    cdef object device_empty(self):
        """A device array that the caller overwrites entirely."""
        d = self._dev
        if d is None or d.shape != self._shape or d.dtype != self._dtype:
            self._dev = _need_device().empty(self._shape, self._dtype)
        self._on_dev = True
        return self._dev

    cdef drop(self):
        self._arr = None
        self._dev = None
        self._on_dev = False

    cdef bint has_data(self):
        return self._arr is not None or self._on_dev

    @property
    def device_array(self):
        """The device copy, up to date, or None when the array has none."""
        return self.device() if self._dev is not None else None

    @staticmethod
    def from_numpy_array(nparr):
        """A new NdArray holding a copy of ``nparr``."""
        return _ndarray_from(np.array(nparr, order='C', copy=True))

    @property
    def data(self):
        return self.device() if self._dev is not None else self.get()

    @data.setter
    def data(self, value):
        if self._dev is not None:
            self.device()[...] = _device.asarray(value)
        else:
            self.get()[...] = value

    @property
    def __cuda_array_interface__(self):
        if _device is None:   # absent on CPU only, so that probing with hasattr works
            raise AttributeError('__cuda_array_interface__: no GPU backend is loaded')
        return self.device().__cuda_array_interface__

    def writable(self):
        """The storage array, allocated without initialisation if absent (for
        kernels that overwrite every element)."""
        return self.get_empty()

    def set_array(self, arr):
        """Make ``arr`` (of this shape; NumPy, or a device array under a GPU
        backend) the storage, without copying."""
        if tuple(arr.shape) != self._shape:
            raise ValueError('NdArray.set_array: shape %s differs from %s'
                             % (arr.shape, self._shape))
        if _device is not None and _device.owns(arr):
            self._dev = _device.asarray(arr)
            self._on_dev = True
        else:
            self._arr = arr
            self._on_dev = False
        self._dtype = arr.dtype

    @property
    def shape(self):
        return self._shape

    @property
    def ndim(self):
        return len(self._shape)

    @property
    def size(self):
        cdef Py_ssize_t n = 1
        for s in self._shape:
            n *= s
        return n

    @property
    def dtype(self):
        if self._on_dev:
            return self._dev.dtype
        return self._dtype if self._arr is None else self._arr.dtype

    @property
    def clear_called(self):
        return not self.has_data()

    def zero(self):
        self.fill(0)

    def fill(self, value):
        self._on_dev = False
        if self._arr is None:
            self._arr = np.full(self._shape, value, self._dtype)
        else:
            self._arr.fill(value)

    def clear(self):
        """Release the storage; it is allocated again (zero-filled) on next use."""
        self.drop()

    def cast(self, dtype, ctx=None):
        """Convert the storage to ``dtype`` in place (if needed).  Returns the
        storage array, or None when a context is given (as NNabla does); a
        GPU context moves the array to the device."""
        dtype = np.dtype(dtype)
        if self._on_dev:
            self._pull()
        if self._arr is None:
            self._dtype = dtype
            self.get()
        elif self._arr.dtype != dtype:
            self._arr = self._arr.astype(dtype)
        self._dtype = dtype
        if ctx is None:
            return self._arr
        if isinstance(ctx, Context) and (<Context>ctx)._key and \
                (<Context>ctx)._key[0] in ('cuda', 'cudnn'):
            self.device()   # a GPU context: make the device copy current
        return None

    def copy_from(self, NdArray other):
        self.get()[...] = other.get()

    def __array__(self, dtype=None, copy=None):
        arr = self.get()
        if dtype is not None and np.dtype(dtype) != arr.dtype:
            return arr.astype(dtype)
        return arr.copy() if copy else arr

    def __getbuffer__(self, Py_buffer* buffer, int flags):
        cdef cnp.ndarray arr = self.get()
        fmt = _BUFFER_FORMATS.get(arr.dtype.char)
        if fmt is None:
            fmt = _BUFFER_FORMATS[arr.dtype.char] = arr.dtype.char.encode()
        buffer.buf = cnp.PyArray_DATA(arr)
        buffer.obj = arr
        buffer.len = arr.nbytes
        buffer.itemsize = arr.itemsize
        buffer.readonly = 0
        buffer.ndim = arr.ndim
        buffer.format = <char*>fmt
        buffer.shape = <Py_ssize_t*>cnp.PyArray_DIMS(arr)
        buffer.strides = <Py_ssize_t*>cnp.PyArray_STRIDES(arr)
        buffer.suboffsets = NULL
        buffer.internal = NULL

    def __releasebuffer__(self, Py_buffer* buffer):
        pass

    def __dlpack__(self, *args, **kwargs):
        """DLPack export of the current copy: the device array when it is the
        newer one, else the host array."""
        return (self._dev if self._on_dev else self.get()).__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return (self._dev if self._on_dev else self.get()).__dlpack_device__()

    @staticmethod
    def from_dlpack(obj):
        """An NdArray sharing the memory of a DLPack-capable object: a GPU
        array becomes its device copy, a host array its host copy."""
        kind = obj.__dlpack_device__()[0] if hasattr(obj, '__dlpack_device__') else 1
        if kind in _DLPACK_GPU:
            arr = _need_device().from_dlpack(obj)
            a = NdArray(arr.shape, arr.dtype)
            a.set_array(arr)
            return a
        return _ndarray_from(np.from_dlpack(obj))

    def __repr__(self):
        return '<NdArray((%s)) at %s>' % (', '.join(map(str, self._shape)), hex(id(self)))



cdef object _ops_module = None


cdef object _ops():
    global _ops_module
    if _ops_module is None:
        from nncy import _operators
        _ops_module = _operators
    return _ops_module


# ---------------------------------------------------------------------------
# Variable
# ---------------------------------------------------------------------------

cdef Variable _new_variable(NdArray data, bint need_grad):
    cdef Variable v = Variable.__new__(Variable)
    v._data = data
    v._grad = NdArray.__new__(NdArray)
    v._grad._shape = data._shape
    v._grad._dtype = data._dtype
    v._need_grad = need_grad
    return v


cdef class Variable(Operand):
    """A node of the computation graph: data and gradient arrays, a parent
    function and a ``need_grad`` flag."""

    def __init__(self, shape=(), need_grad=False):
        self._data = NdArray(shape)
        self._grad = NdArray(shape)
        self._need_grad = need_grad

    @staticmethod
    def from_numpy_array(data, grad=None, need_grad=None):
        """A leaf Variable holding copies of ``data`` (and ``grad``)."""
        cdef Variable v = _new_variable(NdArray.from_numpy_array(data),
                                        bool(need_grad) if need_grad is not None else False)
        if grad is not None:
            g = np.asarray(grad)
            if g.shape != v._data._shape:
                raise ValueError('Variable.from_numpy_array: grad shape %s differs from '
                                 'data shape %s' % (g.shape, v._data._shape))
            v._grad = NdArray.from_numpy_array(g)
        return v

    # ---- buffers -------------------------------------------------------
    @property
    def d(self):
        return self._data.get()

    @d.setter
    def d(self, value):
        self._data.get()[...] = value

    @property
    def g(self):
        return self._grad.get()

    @g.setter
    def g(self, value):
        self._grad.get()[...] = value

    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, NdArray value):
        if value._shape != self._data._shape:
            raise ValueError('Variable.data: shape %s differs from %s'
                             % (value._shape, self._data._shape))
        self._data = value

    @property
    def grad(self):
        return self._grad

    @grad.setter
    def grad(self, NdArray value):
        if value._shape != self._data._shape:
            raise ValueError('Variable.grad: shape %s differs from %s'
                             % (value._shape, self._data._shape))
        self._grad = value

    # ---- attributes ----------------------------------------------------
    @property
    def shape(self):
        return self._data._shape

    @property
    def ndim(self):
        return len(self._data._shape)

    @property
    def size(self):
        return self._data.size

    def size_from_axis(self, axis=-1):
        cdef Py_ssize_t n = 1
        shape = self._data._shape
        if axis < 0:
            axis += len(shape)
        for s in shape[axis:]:
            n *= s
        return n

    @property
    def need_grad(self):
        return self._need_grad

    @need_grad.setter
    def need_grad(self, bint value):
        self._need_grad = value

    @property
    def parent(self):
        return self._parent

    @parent.setter
    def parent(self, value):
        if value is not None:
            raise ValueError('Variable.parent: only None can be assigned (to cut the graph)')
        self._parent = None

    @property
    def recompute(self):
        return bool(self._recompute) if self._recompute is not None else _global_recompute

    @recompute.setter
    def recompute(self, value):
        self._recompute = bool(value)

    def apply(self, **kwargs):
        for k, v in kwargs.items():
            setattr(self, k, v)
        return self

    def reset_shape(self, shape, force=False):
        """Give the variable a new shape.  Data survives when the size is
        unchanged; a different size needs ``force=True`` and drops the data."""
        shape = _as_shape(shape)
        cdef Py_ssize_t n = 1
        for s in shape:
            n *= s
        if n != self._data.size:
            if not force:
                raise ValueError('Variable.reset_shape: size of %s differs from that of %s; '
                                 'pass force=True to drop the data' % (shape, self._data._shape))
            self._data.drop()
            self._grad.drop()
        else:
            for a in (self._data, self._grad):
                if (<NdArray>a)._arr is not None:
                    (<NdArray>a)._arr = (<NdArray>a)._arr.reshape(shape)
                if (<NdArray>a)._dev is not None:
                    (<NdArray>a)._dev = (<NdArray>a)._dev.reshape(shape)
        self._data._shape = shape
        self._grad._shape = shape

    def reshape(self, shape, unlink=False):
        """A variable with a new shape sharing this one's buffers; connected to
        the graph through F.reshape unless ``unlink``."""
        if not unlink:
            from nncy import functions as F
            return F.reshape(self, shape, inplace=True)
        shape = tuple(shape)
        cdef Variable v = _new_variable(_ndarray_from(self._data.get().reshape(shape)),
                                        self._need_grad)
        v._grad = _ndarray_from(self._grad.get().reshape(shape))
        return v

    def unlinked(self, need_grad=None):
        """A new leaf variable sharing this variable's data and grad arrays."""
        cdef Variable v = _new_variable(self._data, self._need_grad if need_grad is None
                                        else bool(need_grad))
        v._grad = self._grad
        return v

    get_unlinked_variable = unlinked

    def rewire_on(self, Variable var):
        """Take ``var``'s buffers and parent function, so that the graph feeding
        ``var`` now feeds this variable's consumers.  ``var`` loses its parent."""
        if var._data._shape != self._data._shape:
            raise ValueError('Variable.rewire_on: argument var has shape %s, expected %s '
                             '(the shape of this variable)' % (var._data._shape, self._data._shape))
        self._data = var._data
        self._grad = var._grad
        self._parent = var._parent
        if self._parent is not None:
            f = self._parent
            for i, w in enumerate(f._outputs):
                if w() is var:
                    f._outputs[i] = _wref(self)
        var._parent = None

    def clear_all_graph_links(self):
        for f in _sorted_functions(self):
            (<Function>f)._inputs = []
        self._parent = None

    def visit(self, f):
        """Call ``f(function)`` on every function of the graph, inputs first."""
        for fn in _sorted_functions(self):
            f(fn)

    def __repr__(self):
        return '<Variable((%s), need_grad=%s) at %s>' % (
            ', '.join(map(str, self._data._shape)), self._need_grad, hex(id(self)))

    # ---- execution -----------------------------------------------------
    def forward(self, bint clear_buffer=False, bint clear_no_need_grad=False,
                function_pre_hook=None, function_post_hook=None):
        """Run every function of the graph that ends here, in order."""
        _forward_graph(self, clear_buffer, clear_no_need_grad, function_pre_hook,
                       function_post_hook)

    def backward(self, grad=1, bint clear_buffer=False, communicator_callbacks=None,
                 function_pre_hook=None, function_post_hook=None):
        """Backpropagate from this variable.  ``grad`` sets its gradient (None
        keeps the current one).  Leaf gradients accumulate across calls."""
        _backward_graph(self, grad, clear_buffer, function_pre_hook, function_post_hook)

    def __getitem__(self, key): return _ops().getitem(self, key)


# ---------------------------------------------------------------------------
# Function nodes
# ---------------------------------------------------------------------------

class FunctionInfo:
    """``type_name`` and ``args`` of a function node."""
    __slots__ = ('type_name', 'args', 'tags')

    def __init__(self, type_name, args):
        self.type_name = type_name
        self.args = args
        self.tags = {}

    def __repr__(self):
        return 'FunctionInfo(%s, %r)' % (self.type_name, self.args)


cdef class Function:
    """A function node of the graph (``y.parent``).  Its ``forward``/``backward``
    can also be called directly with lists of Variables, as in NNabla."""

    cdef list outs(self):
        cdef list res = []
        cdef Variable v
        for i, w in enumerate(self._outputs):
            v = w()
            if v is None:
                v = _new_variable(self._out_data[i], False)
            res.append(v)
        return res

    @property
    def info(self):
        return FunctionInfo(self.spec.type_name, dict(self.args))

    @property
    def name(self):
        return self._name if self._name is not None else self.spec.type_name

    @name.setter
    def name(self, value):
        self._name = value

    @property
    def inputs(self):
        return list(self._inputs)

    @property
    def outputs(self):
        return self.outs()

    @property
    def tags(self):
        return {}

    @property
    def context(self):
        return self._ctx

    def min_outputs(self):
        return self.impl.min_outputs()

    def setup(self, inputs, outputs):
        shapes = self.impl.setup(inputs)
        for o, s in zip(outputs, shapes):
            o.reset_shape(s, True)

    def forward(self, inputs, outputs):
        self.impl.forward(inputs, outputs)

    def backward(self, inputs, outputs, accum=None):
        pd = [(<Variable>v)._need_grad for v in inputs]
        if accum is None:
            accum = [False] * len(inputs)
        self.impl.backward(inputs, outputs, pd, list(accum))

    def grad_depends_output_data(self, int i, int o):
        return self.impl.grad_depends_output_data(i, o)

    def grad_depends_input_data(self, int i, int j):
        return self.impl.grad_depends_input_data(i, j)

    def inplace_data(self, int i):
        return self.impl.inplace_data(i)

    def inplace_data_with(self, int i):
        return 0

    def inplace_grad(self, int i):
        return 0

    def inplace_grad_with(self, int i):
        return 0

    def __repr__(self):
        return '<Function %s at %s>' % (self.name, hex(id(self)))


cdef class Impl:
    """Base of backend implementations.  Subclasses define
    ``setup(inputs) -> list of output shapes``, ``forward(inputs, outputs)`` and
    ``backward(inputs, outputs, propagate_down, accum)``; inputs and outputs are
    lists of Variables.  ``accum[i]`` says whether input i's gradient is added
    to (True) or overwritten (False)."""

    # Names of the optional inputs the call left out (given as None); the
    # inputs list an implementation receives holds only those given.
    omitted = ()
    # True for implementations that compute on float16 storage themselves;
    # the others run on float32 copies under a half context (HalfStorage).
    native_half = False

    def __init__(self, spec, args, ctx):
        self.spec = spec
        self.args = args
        self.ctx = ctx

    def error(self, arg, msg, exc=ValueError):
        """An exception naming the function and the argument."""
        return exc('%s: argument %r %s' % (self.spec.name, arg, msg))

    def min_outputs(self):
        return len(self.spec.outputs)

    def link(self, inputs, outputs):
        """Called once the outputs exist: functions whose outputs share the
        inputs' memory (in-place reshape) connect them here."""

    def grad_depends_output_data(self, i, o):
        return False

    def grad_depends_input_data(self, i, j):
        return True

    def inplace_data(self, i):
        return 0

    def updated_inputs(self):
        """Indices of the inputs whose data forward updates in place (running
        statistics, quantized weights)."""
        return ()

    def updated_inputs_in_backward(self):
        """Indices of the inputs whose data backward writes (rare)."""
        return ()


cdef Variable _f32_twin(Variable v, bint with_grad):
    """A float32 copy of ``v`` (data, and grad when asked) for HalfStorage."""
    cdef Variable t = _new_variable(_ndarray_from(np.array(v._data.get(), np.float32)),
                                    v._need_grad)
    if with_grad:
        t._grad = _ndarray_from(np.array(v._grad.get(), np.float32))
    else:
        t._grad._dtype = _F32
    return t


class HalfStorage(Impl):
    """Runs an implementation for a ``type_config='half'`` context: storage
    stays float16, arithmetic is done on float32 copies."""

    def __init__(self, inner):
        Impl.__init__(self, inner.spec, inner.args, inner.ctx)
        self.inner = inner

    def setup(self, inputs):
        return self.inner.setup(inputs)

    def forward(self, inputs, outputs):
        tin = [_f32_twin(v, False) for v in inputs]
        tout = [_new_variable(NdArray(o.shape, _F32), False) for o in outputs]
        self.inner.forward(tin, tout)
        for o, t in zip(outputs, tout):
            (<Variable>o)._data.get_empty()[...] = (<Variable>t)._data.get()
        for i in self.inner.updated_inputs():
            (<Variable>inputs[i])._data.get()[...] = (<Variable>tin[i])._data.get()

    def backward(self, inputs, outputs, propagate_down, accum):
        twins = {}   # one twin per distinct input, so repeated inputs accumulate
        for v, p, a in zip(inputs, propagate_down, accum):
            if id(v) not in twins:
                twins[id(v)] = (v, _f32_twin(v, p and a))
        tin = [twins[id(v)][1] for v in inputs]
        tout = [_f32_twin(o, True) for o in outputs]
        self.inner.backward(tin, tout, propagate_down, accum)
        for i in self.inner.updated_inputs_in_backward():
            (<Variable>inputs[i])._data.get()[...] = (<Variable>tin[i])._data.get()
        for v, t in twins.values():
            if (<Variable>t)._grad.has_data():   # written on the host or the device
                (<Variable>v)._grad.get_empty()[...] = (<Variable>t)._grad.get()

    def grad_depends_output_data(self, i, o):
        return self.inner.grad_depends_output_data(i, o)

    def grad_depends_input_data(self, i, j):
        return self.inner.grad_depends_input_data(i, j)


# ---------------------------------------------------------------------------
# Registry and calls
# ---------------------------------------------------------------------------

cdef dict _registry = {}      # (type_name, backend) -> Impl subclass
cdef dict _impl_cache = {}    # (type_name, backend key) -> Impl subclass


def register(type_name, backend='cpu'):
    """Class decorator: ``cls`` implements ``type_name`` on ``backend``."""
    if type_name not in BY_TYPE:
        raise KeyError('register: %r is not in the function table' % type_name)

    def deco(cls):
        _registry[(type_name, backend)] = cls
        _impl_cache.clear()
        return cls
    return deco


def unregister(type_name, backend):
    """Remove the implementation of ``type_name`` on ``backend``; returns it
    (or None).  Nodes created afterwards fall back to the next backend."""
    _impl_cache.clear()
    return _registry.pop((type_name, backend), None)


def implementation(type_name, backend='cpu'):
    """The class implementing ``type_name`` on ``backend``, or None."""
    return _registry.get((type_name, backend))


cdef bint _gpu_loaded = False


cdef _load_gpu():
    """Import the GPU backend, which registers its implementations (and needs
    CuPy: the ImportError says so)."""
    global _gpu_loaded
    import importlib
    importlib.import_module('nncy.cuda').cupy()
    importlib.import_module('nncy.cuda.functions')
    _gpu_loaded = True


cdef object _lookup(spec, Context ctx):
    key = (spec.type_name, ctx._key)
    cls = _impl_cache.get(key)
    if cls is not None:
        return cls
    if not _gpu_loaded and ('cuda' in ctx._key or 'cudnn' in ctx._key):
        _load_gpu()
    for b in ctx._key:
        cls = _registry.get((spec.type_name, b))
        if cls is not None:
            _impl_cache[key] = cls
            return cls
    raise NotImplementedError('%s: no implementation for backends %s'
                              % (spec.name, ctx._backend))


cdef object _bad_arg(spec, name, expected, value):
    return TypeError('%s: argument %r must be %s, got %r (%s)'
                     % (spec.name, name, expected, value, type(value).__name__))


cdef object _ints(spec, name, value, bint allow_none):
    if value is None and allow_none:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (int(value),)
    if isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype.kind in 'iu':
        return tuple(int(v) for v in value)
    if not isinstance(value, (tuple, list)):
        raise _bad_arg(spec, name, 'a tuple of int', value)
    out = []
    for v in value:
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise _bad_arg(spec, name, 'a tuple of int', value)
        out.append(int(v))
    return tuple(out)


cdef dict _make_args(spec, tuple values):
    """Check and normalise argument values by the types in the table."""
    cdef dict out = {}
    for (name, typ, default), v in zip(spec.args, values):
        if typ == 'bool':
            if not isinstance(v, (bool, np.bool_, int)):
                raise _bad_arg(spec, name, 'a bool', v)
            v = bool(v)
        elif typ == 'int':
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
                if not (v is None and default is None):
                    raise _bad_arg(spec, name, 'an int', v)
            else:
                v = int(v)
        elif typ == 'float':
            if v is None and default is None:
                pass
            elif not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(v, bool):
                raise _bad_arg(spec, name, 'a number', v)
            else:
                v = float(v)
        elif typ == 'axis':
            if v is not None and not isinstance(v, (int, np.integer)):
                v = _ints(spec, name, v, True)
            elif v is not None:
                v = int(v)
        elif typ in ('ints', 'shape'):
            v = _ints(spec, name, v, default is None)
        elif typ == 'floats':
            if v is not None:
                try:
                    v = tuple(float(x) for x in v)
                except TypeError:
                    raise _bad_arg(spec, name, 'a sequence of numbers', v)
        elif typ == 'str':
            if not isinstance(v, str):
                raise _bad_arg(spec, name, 'a str', v)
        out[name] = v
    return out


def normalize_args(spec, tuple values):
    """Argument values (in table order) checked and normalised as ``call``
    does, as a dict: for callers that build implementations themselves
    (``nncy.runtime``)."""
    if len(values) != len(spec.args):
        raise TypeError('%s: %d argument values given, the table lists %d'
                        % (spec.name, len(values), len(spec.args)))
    return _make_args(spec, values)


def call(spec, tuple inputs, tuple args, outputs=None):
    """Create a function node for ``spec`` on ``inputs`` with argument values
    ``args`` (in table order); run it at once in auto-forward or imperative
    mode.  Returns the output Variable(s); when any input is an NdArray the call
    is imperative and returns NdArray(s) (Variables then count as their data)."""
    cdef Context ctx = _ctx
    cdef list ins = []
    cdef int n_nd = 0, i = 0
    cdef bint need_grad = False
    cdef Variable v
    cdef tuple omitted = ()
    specs_in = spec.inputs
    for x in inputs:
        if isinstance(x, Variable):
            v = <Variable>x
            v._consumers += 1
            if v._need_grad:
                need_grad = True
            ins.append(v)
        elif isinstance(x, NdArray):
            n_nd += 1
            ins.append(_new_variable(<NdArray>x, False))
        elif x is None and i < len(specs_in) and specs_in[i].optional:
            omitted += (specs_in[i].name,)
        else:
            iname = specs_in[min(i, len(specs_in) - 1)].name if specs_in else 'x'
            raise TypeError('%s: input %r must be a Variable or NdArray, got %s'
                            % (spec.name, iname, type(x).__name__))
        i += 1
    cls = _lookup(spec, ctx)
    cdef dict a = _make_args(spec, args)
    impl = cls(spec, a, ctx)
    if omitted:
        impl.omitted = omitted   # optional inputs given as None (absent from ins)
    if ctx._dtype is not _F32 and not cls.native_half:
        impl = HalfStorage(impl)
    shapes = impl.setup(ins)
    cdef Function f = Function.__new__(Function)
    f.spec = spec
    f.impl = impl
    f.args = a
    f._ctx = ctx
    f._inputs = ins
    cdef list outs = []
    cdef list wouts = []
    cdef list datas = []
    cdef NdArray nd
    cdef bint imperative = n_nd > 0
    for i, s in enumerate(shapes):
        if outputs is not None and i < len(outputs) and outputs[i] is not None:
            nd = outputs[i]
            if nd._shape != tuple(s):
                raise ValueError('%s: output %d has shape %s, expected %s'
                                 % (spec.name, i, nd._shape, tuple(s)))
        else:
            nd = NdArray.__new__(NdArray)
            nd._shape = s if type(s) is tuple else tuple(s)
            nd._dtype = ctx._dtype
        v = _new_variable(nd, need_grad)
        v._parent = f
        outs.append(v)
        datas.append(nd)
        if not imperative:
            wouts.append(_wref(v))
    f._out_data = datas
    f._outputs = wouts
    if type(impl) is not Pointwise:
        impl.link(ins, outs)
    if imperative:
        impl.forward(ins, outs)
        if len(outs) == 1:
            return (<Variable>outs[0])._data
        return tuple((<Variable>o)._data for o in outs)
    if _auto_forward:
        impl.forward(ins, outs)
    if len(outs) == 1:
        return outs[0]
    return tuple(outs)


# ---------------------------------------------------------------------------
# Graph execution
# ---------------------------------------------------------------------------

cdef list _sorted_functions(Variable root):
    return _sorted_functions_of([root])


def sorted_functions(roots):
    """Function nodes of the graphs ending at ``roots``, inputs first."""
    return _sorted_functions_of(list(roots))


cdef list _sorted_functions_of(list roots):
    """Functions of the graphs ending at ``roots`` in a topological order
    (inputs before consumers), by an iterative depth-first search."""
    cdef list order = []
    cdef set seen = set()
    cdef list stack = []
    cdef Function f
    # One search per root: seeding the stack with every root's parent at once
    # would mark a parent as seen before it is ordered, and a root whose
    # parent is an ancestor of another root's parent would then run late.
    for root in roots:
        p = (<Variable>root)._parent
        if p is None or id(p) in seen:
            continue
        seen.add(id(p))
        stack.append((p, 0))
        while stack:
            f, i = stack[-1]
            if i < len(f._inputs):
                stack[-1] = (f, i + 1)
                p = (<Variable>f._inputs[i])._parent
                if p is not None and id(p) not in seen:
                    seen.add(id(p))
                    stack.append((p, 0))
            else:
                stack.pop()
                order.append(f)
    return order


cdef _run_forward(Function f, list outs, pre, post):
    if pre is not None:
        pre(f)
    f.impl.forward(f._inputs, outs)
    if post is not None:
        post(f)


def forward_all(variables, bint clear_buffer=False, bint clear_no_need_grad=False,
                function_pre_hook=None, function_post_hook=None):
    """Run the graphs ending at all ``variables`` together, each function once."""
    cdef list roots = list(variables)
    for v in roots:
        if not isinstance(v, Variable):
            raise TypeError('forward_all: argument variables must hold Variables, got %s'
                            % type(v).__name__)
    _forward_graph(roots, clear_buffer, clear_no_need_grad, function_pre_hook,
                   function_post_hook)


cdef _forward_graph(object roots, bint clear_buffer, bint clear_no_need_grad, pre, post):
    if isinstance(roots, Variable):
        roots = [roots]
    cdef list funcs = _sorted_functions_of(roots)
    cdef set root_ids = {id(r) for r in roots}
    cdef Function f, g
    cdef Variable v
    cdef dict remaining = {}
    cdef set keep = set()
    if clear_buffer or clear_no_need_grad:
        # How many functions still read each variable, and which variables
        # backward will need (clear_no_need_grad keeps those).
        for f in funcs:
            for v in f._inputs:
                remaining[id(v)] = remaining.get(id(v), 0) + 1
        if clear_no_need_grad and not clear_buffer:
            for f in funcs:
                if not any((<Variable>v)._need_grad for v in f._inputs):
                    continue
                for j, v in enumerate(f._inputs):
                    if any(f.impl.grad_depends_input_data(i, j) for i in range(len(f._inputs))
                           if (<Variable>f._inputs[i])._need_grad):
                        if not v.recompute:
                            keep.add(id(v))
                for o, w in enumerate(f._outputs):
                    if any(f.impl.grad_depends_output_data(i, o)
                           for i in range(len(f._inputs))):
                        ov = w()
                        if ov is not None and not ov.recompute:
                            keep.add(id(ov))
    for f in funcs:
        _run_forward(f, f.outs(), pre, post)
        if not remaining:
            continue
        for v in f._inputs:
            k = id(v)
            remaining[k] -= 1
            if (remaining[k] == 0 and v._parent is not None and not v.persistent
                    and k not in root_ids and k not in keep):
                v._data.drop()


cdef _ensure_data(Variable v):
    """Recompute a freed intermediate (``recompute``) from its parent."""
    cdef Function p = v._parent
    if v._data.has_data() or p is None:
        return
    for x in p._inputs:
        _ensure_data(<Variable>x)
    p.impl.forward(p._inputs, p.outs())


cdef _backward_graph(Variable root, grad, bint clear_buffer, pre, post):
    cdef list funcs = _sorted_functions(root)
    cdef Function f
    cdef Variable v, o
    cdef dict need = {}
    cdef set written = set()
    cdef list outs, pd, accum
    cdef bint any_pd
    # A non-leaf needs a gradient when it asks for one and its parent has an
    # input that does.
    for f in funcs:
        any_pd = False
        for v in f._inputs:
            if need.get(id(v), v._need_grad) if v._parent is not None else v._need_grad:
                any_pd = True
                break
        for w in f._outputs:
            o = w()
            if o is not None:
                need[id(o)] = any_pd and o._need_grad
    if grad is not None:
        if isinstance(grad, NdArray):
            root._grad.get_empty()[...] = (<NdArray>grad).get()
        else:
            root._grad.get_empty()[...] = grad
    written.add(id(root))
    for f in reversed(funcs):
        pd = []
        any_pd = False
        for v in f._inputs:
            nv = need.get(id(v), v._need_grad) if v._parent is not None else v._need_grad
            pd.append(nv)
            if nv:
                any_pd = True
        outs = f.outs()
        if any_pd:
            for o in outs:
                if id(o) not in written:
                    o._grad.get_empty().fill(0)
                    written.add(id(o))
                _ensure_data(o)
            for v in f._inputs:
                _ensure_data(v)
            accum = []
            for i, v in enumerate(f._inputs):
                accum.append(v._parent is None or id(v) in written)
                if pd[i]:
                    written.add(id(v))
            if pre is not None:
                pre(f)
            f.impl.backward(f._inputs, outs, pd, accum)
            if post is not None:
                post(f)
        if clear_buffer:
            for o in outs:
                if not o.persistent and o is not root:
                    o._grad.drop()
                    o._data.drop()


# ---------------------------------------------------------------------------
# Pointwise functions: one Cython class serves every pointwise table row.
# ---------------------------------------------------------------------------

cdef inline cnp.ndarray _f32(NdArray a):
    """The storage as a C-contiguous float32 array; other dtypes are converted
    in place (as NNabla casts an array when a function reads it as float)."""
    arr = a.get()
    if cnp.PyArray_TYPE(arr) == cnp.NPY_FLOAT32 and cnp.PyArray_IS_C_CONTIGUOUS(arr):
        return arr
    a._arr = np.ascontiguousarray(arr, dtype=np.float32)
    a._dtype = _F32
    return a._arr


cdef inline cnp.ndarray _out32(NdArray a):
    """A float32 storage array that a kernel will overwrite entirely."""
    a._on_dev = False
    arr = a._arr
    if arr is None or cnp.PyArray_TYPE(arr) != cnp.NPY_FLOAT32 or \
            not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        a._arr = arr = _np_empty(a._shape, _F32)
        a._dtype = _F32
    return arr


cdef inline cnp.ndarray _grad_out(NdArray g, bint accum):
    return _f32(g) if accum else _out32(g)


# Accessors for implementations written in Python.
def d32(Variable v):
    """Data of ``v`` as float32 (read)."""
    return _f32(v._data)


def dout(Variable v):
    """Data of ``v`` as float32, to be overwritten."""
    return _out32(v._data)


def g32(Variable v):
    """Gradient of ``v`` as float32 (read)."""
    return _f32(v._grad)


def gout(Variable v, bint accum):
    """Gradient of ``v`` to write: the existing one when accumulating."""
    return _grad_out(v._grad, accum)


# The same for implementations on a GPU backend: device arrays (in the
# storage dtype; conversions are the implementation's business).
def dev_data(Variable v):
    """Data of ``v`` on the device (read)."""
    return v._data.device()


def dev_data_out(Variable v):
    """Data of ``v`` on the device, to be overwritten."""
    return v._data.device_empty()


def dev_grad(Variable v):
    """Gradient of ``v`` on the device (read)."""
    return v._grad.device()


def dev_grad_out(Variable v, bint accum):
    """Gradient of ``v`` on the device to write: the existing one when
    accumulating."""
    return v._grad.device() if accum else v._grad.device_empty()


cdef tuple _broadcast_shape(spec, tuple a, tuple b):
    cdef int n = max(len(a), len(b))
    cdef list out = []
    for i in range(n):
        da = a[len(a) - n + i] if len(a) - n + i >= 0 else 1
        db = b[len(b) - n + i] if len(b) - n + i >= 0 else 1
        if da == db or db == 1:
            out.append(da)
        elif da == 1:
            out.append(db)
        else:
            raise ValueError('%s: input shapes %s (x0) and %s (x1) cannot be broadcast '
                             'together' % (spec.name, a, b))
    return tuple(out)


cdef bint _reads_output(Variable v):
    """Whether the backward of v's producer reads v's data."""
    cdef Function p = v._parent
    for o, w in enumerate(p._outputs):
        if w() is v:
            return any(p.impl.grad_depends_output_data(i, o) for i in range(len(p._inputs)))
    return True


cdef cnp.ndarray _inplace_out(Variable x, cnp.ndarray xa, Variable y, bint want):
    """The float32 array that y's data is written to, for a function asked
    (``want``) to write its output over its input x, whose float32 storage is
    ``xa``.  In place only over an intermediate that owns its buffer, feeds only
    this function, and whose producer does not read it in backward: never into
    a leaf, a persistent variable, or memory shared through a view.  Then y
    shares xa (and it is returned); otherwise y gets its own storage, never xa
    (an earlier forward may have shared it)."""
    cdef cnp.ndarray ya
    if want and x._parent is not None and not x.persistent and x._consumers == 1 and \
            xa is x._data._arr and cnp.PyArray_BASE(xa) == NULL and \
            y._data._shape == (<object>xa).shape and not _reads_output(x):
        y._data._arr = xa
        y._data._dtype = _F32
        return xa
    ya = _out32(y._data)
    if ya is xa:
        y._data._arr = ya = _np_empty(y._data._shape, _F32)
    return ya


def inplace_out(Variable x, Variable y):
    """For implementations written in Python with an ``inplace`` argument: the
    float32 array to write y's data into, x's own storage (``d32(x)``, then
    shared by y) where the in-place rules allow overwriting x, else y's own
    storage."""
    return _inplace_out(x, _f32(x._data), y, True)


cdef class Pointwise(Impl):
    """Forward and gradient of a pointwise row, by op code, in the generic Rust
    kernels generated from the table's expressions."""
    cdef uint32_t code
    cdef int nin
    cdef cnp.ndarray params
    cdef bint inplace
    cdef bytes cname
    cdef bint uses_x, uses_y

    def __init__(self, spec, dict args, Context ctx):
        self.spec = spec
        self.args = args
        self.ctx = ctx
        self.code = spec.code
        self.nin = len(spec.inputs)
        self.cname = spec.name.encode()
        nums = [args[n] for n in spec.params]
        self.params = np.array(nums, np.float32) if nums else _NO_PARAMS
        self.inplace = args.get('inplace', False) and spec.inplace_ok
        self.uses_x = spec.grad_uses_inputs
        self.uses_y = spec.grad_uses_output

    def setup(self, list inputs):
        if self.nin == 1:
            return [(<Variable>inputs[0])._data._shape]
        return [_broadcast_shape(self.spec, (<Variable>inputs[0])._data._shape,
                                 (<Variable>inputs[1])._data._shape)]

    def forward(self, list inputs, list outputs):
        cdef Variable y = outputs[0]
        cdef cnp.ndarray xa = _f32((<Variable>inputs[0])._data)
        cdef cnp.ndarray ya = _inplace_out(inputs[0], xa, y, self.inplace)
        if self.nin == 1:
            K.unary(self.cname, self.code, xa, ya, self.params)
        else:
            _K.binary(self.spec.name, self.code, xa, _f32((<Variable>inputs[1])._data), ya,
                     self.params)

    def backward(self, list inputs, list outputs, list propagate_down, list accum):
        cdef Variable y = outputs[0]
        cdef Variable x
        cdef cnp.ndarray gy = _f32(y._grad)
        cdef cnp.ndarray ya = _f32(y._data) if self.uses_y else None
        cdef cnp.ndarray gx, tmp
        if self.nin == 1:
            if not propagate_down[0]:
                return
            x = inputs[0]
            gx = _grad_out(x._grad, accum[0])
            K.unary_grad(self.cname, self.code, _f32(x._data) if self.uses_x else None, ya,
                         gy, gx, self.params, accum[0])
            return
        x0 = _f32((<Variable>inputs[0])._data)
        x1 = _f32((<Variable>inputs[1])._data)
        for i in range(2):
            if not propagate_down[i]:
                continue
            x = inputs[i]
            if x._data._shape == y._data._shape:
                gx = _grad_out(x._grad, accum[i])
                _K.binary_grad(self.spec.name, self.code, i, x0, x1, ya, gy, gx, self.params,
                              accum[i])
            else:
                tmp = _np_empty(y._data._shape, _F32)
                _K.binary_grad(self.spec.name, self.code, i, x0, x1, ya, gy, tmp, self.params,
                              False)
                gx = _grad_out(x._grad, accum[i])
                _sum_to(self.spec.name, tmp, x._data._shape, gx, accum[i])

    def grad_depends_output_data(self, i, o):
        return self.uses_y

    def grad_depends_input_data(self, i, j):
        return self.uses_x

    def inplace_data(self, i):
        return 1 if self.inplace and i == 0 else 0


def sum_to(name, cnp.ndarray full, tuple shape, cnp.ndarray out, bint accum):
    _sum_to(name, full, shape, out, accum)


cdef _sum_to(name, cnp.ndarray full, tuple shape, cnp.ndarray out, bint accum):
    """out (+)= ``full`` summed over the axes along which ``shape`` was broadcast."""
    cdef int nd = full.ndim, lead = nd - len(shape)
    axes = []
    for i in range(nd):
        if i < lead or (shape[i - lead] == 1 and full.shape[i] != 1):
            axes.append(i)
    _K.reduce(name, 'sum', full, tuple(axes), out, 1.0, accum)


def check_library():
    """Fail loudly when the compiled kernels were generated from another table."""
    from nncy._codegen import signature
    if _K.signature() != signature():
        raise ImportError('nncy: the compiled Rust kernels do not match nncy/_table.py; '
                          'run `python -m nncy._codegen` and rebuild')


for _spec in BY_NAME.values():
    if _spec.kind == 'pointwise':
        _registry[(_spec.type_name, 'cpu')] = Pointwise
