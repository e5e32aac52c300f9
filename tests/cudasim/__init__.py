"""A stand-in for CuPy that runs on the host, so that the cuda backend's code
and its CUDA kernels are tested on machines without a GPU.

* Device arrays are a NumPy subclass (``ndarray``) with CuPy's ``get``/``set``;
  ``asarray`` copies host data (device memory is separate), ``empty`` fills
  with NaN so that unwritten elements show up, and ufuncs refuse host arrays,
  as CuPy does.
* ``RawModule`` compiles the CUDA source for the host with g++ and
  ``include/nncy_sim.h`` (blocks run one after another, threads in turn or as
  fibers when the kernel synchronises).  A launch checks each argument's kind
  against the kernel's parameter (pointer, 32/64-bit integer or float) and
  refuses host arrays and non-contiguous device arrays.

Only what the cuda backend uses is provided; anything else is looked up in
NumPy and its results are moved "to the device"."""
import ctypes
import hashlib
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import threading
import types

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
INCLUDE = HERE / 'include'
KERNEL_DIR = HERE.parent.parent / 'nncy' / 'cuda' / 'kernels'
CACHE = pathlib.Path(os.environ.get('NNCY_CUDASIM_CACHE')
                     or pathlib.Path(tempfile.gettempdir()) / 'nncy-cudasim')


def available():
    return shutil.which('g++') is not None


class ndarray(np.ndarray):
    """A device array."""

    def get(self, stream=None, out=None):
        host = np.array(self.view(np.ndarray))
        if out is not None:
            out[...] = host
            return out
        return host

    def set(self, arr, stream=None):
        arr = np.asarray(arr)
        if arr.shape != self.shape:
            raise ValueError('set: shape %s does not match %s' % (arr.shape, self.shape))
        self.view(np.ndarray)[...] = arr

    @property
    def data(self):
        """CuPy's memory pointer (``.data.ptr``: the address)."""
        return types.SimpleNamespace(ptr=self.ctypes.data)

    @property
    def __cuda_array_interface__(self):
        d = dict(self.view(np.ndarray).__array_interface__)
        d['version'] = 3
        return d

    def __dlpack_device__(self):
        return (2, 0)   # kDLCUDA, device 0

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kw):
        args = [_host_view(a, ufunc.__name__) for a in inputs]
        if out is not None:
            kw['out'] = tuple(_host_view(o, ufunc.__name__) for o in out)
        r = getattr(ufunc, method)(*args, **kw)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _to_device(r)

    def __setitem__(self, key, value):
        _refuse_host('__setitem__', [value])
        np.ndarray.__setitem__(self, _unwrap(key), _unwrap(value))

    def __array_function__(self, func, types_, args, kwargs):
        _refuse_host(func.__name__, args, kwargs)
        return _to_device(func(*_unwrap(args), **_unwrap(kwargs)))

    def __float__(self):
        return float(self.view(np.ndarray))

    def __int__(self):
        return int(self.view(np.ndarray))

    def __bool__(self):
        return bool(self.view(np.ndarray))


def _host_view(a, what):
    if isinstance(a, ndarray):
        return a.view(np.ndarray)
    if isinstance(a, np.ndarray) and a.ndim > 0:
        raise TypeError('%s: a host (NumPy) array was given where a device array is '
                        'needed' % what)
    return a


def _refuse_host(what, args, kwargs=None):
    """CuPy's functions take device arrays (and scalars), not NumPy arrays."""
    for a in list(args) + list((kwargs or {}).values()):
        items = a if isinstance(a, (list, tuple)) else [a]
        for x in items:
            if isinstance(x, np.ndarray) and not isinstance(x, ndarray) and x.ndim > 0:
                raise TypeError('%s: a host (NumPy) array was given where a device array '
                                'is needed' % what)


def _unwrap(obj):
    if isinstance(obj, ndarray):
        return obj.view(np.ndarray)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unwrap(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _unwrap(v) for k, v in obj.items()}
    return obj


def _to_device(r):
    if isinstance(r, tuple):
        return tuple(_to_device(x) for x in r)
    if isinstance(r, list):
        return [_to_device(x) for x in r]
    if isinstance(r, np.ndarray):
        return r.view(ndarray)
    if isinstance(r, np.generic):   # CuPy returns 0-d arrays, not scalars
        return np.asarray(r).view(ndarray)
    return r


# ---------------------------------------------------------------------------
# array creation

def asarray(obj, dtype=None, order=None):
    if isinstance(obj, ndarray):
        return obj if dtype is None else obj.astype(dtype, copy=False)
    if hasattr(obj, '__cuda_array_interface__') and not isinstance(obj, np.ndarray):
        holder = types.SimpleNamespace(__array_interface__=obj.__cuda_array_interface__)
        return np.asarray(holder).view(ndarray)
    return np.array(obj, dtype=dtype, order=order or 'K').view(ndarray)


def from_dlpack(obj):
    """A device array sharing the memory of a (simulated) GPU DLPack producer."""
    if isinstance(obj, ndarray):
        return obj
    if obj.__dlpack_device__()[0] != 2:
        raise TypeError('from_dlpack: not a GPU array')
    return asarray(obj)


def array(obj, dtype=None, copy=True, order='K'):
    if isinstance(obj, ndarray) and not copy:
        return asarray(obj, dtype)
    return np.array(_unwrap(obj), dtype=dtype, order=order).view(ndarray)


def empty(shape, dtype=np.float32, order='C'):
    a = np.empty(shape, dtype, order)
    if a.dtype.kind in 'fc':
        a.fill(np.nan)
    elif a.dtype.kind in 'iu':
        a.fill(np.iinfo(a.dtype).max)
    return a.view(ndarray)


def empty_like(a, dtype=None):
    return empty(a.shape, dtype or a.dtype)


def __getattr__(name):
    """Everything else: NumPy's function of that name, on device arrays."""
    if name.startswith('__'):
        raise AttributeError(name)
    fn = getattr(np, name)
    if isinstance(fn, (type, np.dtype)) or not callable(fn) or isinstance(fn, np.ufunc):
        return fn

    def on_device(*args, **kwargs):
        _refuse_host(name, args, kwargs)
        return _to_device(fn(*_unwrap(args), **_unwrap(kwargs)))
    on_device.__name__ = name
    return on_device


# ---------------------------------------------------------------------------
# cupy.cuda

class _Device:
    def __init__(self, device=None):
        self.id = int(device or 0)
        if self.id != 0:
            raise RuntimeError('cudasim: only device 0 exists, got %d' % self.id)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def synchronize(self):
        pass


class _Stream:
    null = None
    ptr = 0

    def synchronize(self):
        pass


_Stream.null = _Stream()

cuda = types.SimpleNamespace(
    Device=_Device,
    Stream=_Stream,
    get_current_stream=lambda: _Stream.null,
    runtime=types.SimpleNamespace(getDevice=lambda: 0, getDeviceCount=lambda: 1),
)


# ---------------------------------------------------------------------------
# kernels

_KINDS = {np.dtype(np.int32): (1, ctypes.c_int32), np.dtype(np.uint32): (1, ctypes.c_uint32),
          np.dtype(np.int64): (2, ctypes.c_int64), np.dtype(np.uint64): (2, ctypes.c_uint64),
          np.dtype(np.float32): (3, ctypes.c_float), np.dtype(np.float64): (4, ctypes.c_double)}
_lock = threading.Lock()


def _compile(code, options, names):
    defines = [o for o in options if o.startswith('-D')]
    sync = '__syncthreads' in code
    wrappers = ''.join(
        'extern "C" int nncy_sim_k%d(void** a, const int* k, int n, const unsigned* g, '
        'const unsigned* b, int s) { return nncy_sim::launch(&%s, a, k, n, g, b, s); }\n'
        % (i, expr) for i, expr in enumerate(names))
    src = code + '\n// ---- host entry points ----\n' + wrappers
    headers = ''.join(p.read_text() for p in sorted(INCLUDE.iterdir()))
    key = hashlib.sha256('\0'.join([src, headers] + defines).encode()).hexdigest()[:24]
    lib = CACHE / ('%s.so' % key)
    with _lock:
        if not lib.exists():
            CACHE.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
                cpp = pathlib.Path(tmp) / 'kernels.cpp'
                cpp.write_text(src)
                out = pathlib.Path(tmp) / 'kernels.so'
                cmd = ['g++', '-std=c++17', '-O1', '-shared', '-fPIC', '-w',
                       '-I', str(INCLUDE), '-I', str(KERNEL_DIR), '-include', 'nncy_sim.h',
                       *defines, str(cpp), '-o', str(out)]
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode:
                    raise RuntimeError('cudasim: g++ failed\n' + r.stderr[-8000:])
                os.replace(out, lib)
    return ctypes.CDLL(str(lib)), sync


class RawKernel:
    def __init__(self, fn, name, sync):
        self.fn, self.name, self.sync = fn, name, sync
        fn.restype = ctypes.c_int

    def __call__(self, grid, block, args, shared_mem=0, stream=None):
        grid = tuple(grid) + (1,) * (3 - len(grid))
        block = tuple(block) + (1,) * (3 - len(block))
        if min(grid + block) < 1 or block[0] * block[1] * block[2] > 1024:
            raise ValueError('%s: bad launch grid %s block %s' % (self.name, grid, block))
        keep, ptrs, kinds = [], [], []
        for i, a in enumerate(args):
            if isinstance(a, ndarray):
                if not a.flags.c_contiguous:
                    raise ValueError('%s: argument %d is a non-contiguous device array'
                                     % (self.name, i))
                c = ctypes.c_void_p(a.ctypes.data)
                kinds.append(0)
            elif isinstance(a, np.generic) and a.dtype in _KINDS:
                k, ct = _KINDS[a.dtype]
                c = ct(a.item())
                kinds.append(k)
            else:
                raise TypeError('%s: argument %d has type %s; pass device arrays or NumPy '
                                'scalars' % (self.name, i, type(a).__name__))
            keep.append(c)
            ptrs.append(ctypes.cast(ctypes.pointer(c), ctypes.c_void_p))
        n = len(args)
        rc = self.fn((ctypes.c_void_p * max(n, 1))(*ptrs), (ctypes.c_int * max(n, 1))(*kinds),
                     n, (ctypes.c_uint * 3)(*grid), (ctypes.c_uint * 3)(*block),
                     int(self.sync))
        if rc <= -1000:
            raise TypeError('%s: takes %d arguments, got %d' % (self.name, -1000 - rc, n))
        if rc < 0:
            raise TypeError('%s: argument %d has the wrong kind (%s given)'
                            % (self.name, -rc - 1, type(args[-rc - 1]).__name__))


_file_names = {}   # source text -> every kernel its nncy file declares


def _all_names(code, names):
    """Every kernel of the nncy source file ``code`` is (one g++ run per file
    serves the per-kernel modules the loader asks for), else ``names``."""
    if not _file_names:
        from nncy.cuda import _sources
        for f in _sources.sources():
            _file_names[_sources.source(f)] = _sources.name_expressions(f)
    return _file_names.get(code, names)


class RawModule:
    def __init__(self, code=None, options=(), name_expressions=None, **kw):
        names = list(name_expressions or [])
        if not names:
            names = re.findall(r'extern\s+"C"\s+__global__\s+void\s+(\w+)', code)
        self.wanted = names
        self.names = _all_names(code, names)
        self.lib, self.sync = _compile(code, tuple(options), self.names)

    def get_function(self, name):
        if name not in self.wanted:
            raise KeyError('cudasim: %s is not a kernel of this module' % name)
        return RawKernel(getattr(self.lib, 'nncy_sim_k%d' % self.names.index(name)), name,
                         self.sync)
