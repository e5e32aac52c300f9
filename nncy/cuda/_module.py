"""Loads the kernels of ``kernels/*.cu``: each file is compiled by CuPy's
RawModule (NVRTC) with the name expressions of ``_sources``, once per process
and device (CuPy also keeps compiled code in its disk cache)."""
import numpy as np

from nncy.cuda import cupy, _sources

_modules = {}     # (file, device) -> RawModule
_functions = {}   # (file, device, name expression) -> RawKernel

THREADS = 256
MAX_BLOCKS = 65535


def _options():
    opts = list(_sources.NVRTC_OPTIONS)
    try:   # the CUDA headers (cuda_fp16.h) of the pip-installed toolkit, if any
        from cuda import pathfinder
        inc = pathfinder.find_nvidia_header_directory('cudart')
        if inc:
            opts.append('-I' + inc)
    except Exception:
        pass
    return tuple(opts)


def module(filename):
    cp = cupy()
    key = (filename, cp.cuda.runtime.getDevice())
    mod = _modules.get(key)
    if mod is None:
        code = _sources.source(filename)
        mod = cp.RawModule(code=code, options=_options(),
                           name_expressions=_sources.name_expressions(filename))
        _modules[key] = mod
    return mod


def function(filename, name):
    """The kernel ``name`` (a name expression listed in ``_sources``)."""
    cp = cupy()
    key = (filename, cp.cuda.runtime.getDevice(), name)
    fn = _functions.get(key)
    if fn is None:
        fn = _functions[key] = module(filename).get_function(name)
    return fn


def launch(filename, name, n, args):
    """Run a grid-stride kernel over ``n`` elements."""
    if n == 0:
        return
    blocks = min((n + THREADS - 1) // THREADS, MAX_BLOCKS)
    function(filename, name)((blocks,), (THREADS,), args)


def ctype(dtype):
    """The kernels' storage type for ``dtype`` (float32 or float16)."""
    try:
        return _sources.CTYPES[np.dtype(dtype).name]
    except KeyError:
        raise TypeError('nncy.cuda: no kernels for dtype %s (float32 and float16 only)'
                        % np.dtype(dtype)) from None
