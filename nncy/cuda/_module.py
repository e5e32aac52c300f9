"""Loads the kernels of ``kernels/*.cu``: each kernel (a name expression of
``_sources``) is compiled by CuPy's RawModule (NVRTC) at its first use, once
per process and device; CuPy also keeps compiled code in its disk cache."""
import numpy as np

from nncy.cuda import cupy, _sources

_code = {}             # file -> source text
_declared_names = {}   # file -> the name expressions it declares
_functions = {}        # (file, device, name expression) -> RawKernel

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


def _declared(filename):
    names = _declared_names.get(filename)
    if names is None:
        names = _declared_names[filename] = frozenset(_sources.name_expressions(filename))
    return names


def function(filename, name):
    """The kernel ``name`` (a name expression that ``_sources`` lists for the
    file).  Each kernel is compiled on its first use, on its own: a program
    that uses a few of a file's instantiations compiles only those."""
    cp = cupy()
    key = (filename, cp.cuda.runtime.getDevice(), name)
    fn = _functions.get(key)
    if fn is None:
        if name not in _declared(filename):
            raise KeyError('nncy.cuda: %s does not declare the kernel %s' % (filename, name))
        code = _code.get(filename)
        if code is None:
            code = _code[filename] = _sources.source(filename)
        mod = cp.RawModule(code=code, options=_options(), name_expressions=[name])
        fn = _functions[key] = mod.get_function(name)
    return fn


def blocks(n, threads=THREADS):
    """Grid size for ``n`` work items of ``threads`` each (at least 1, at most
    MAX_BLOCKS; grid-stride kernels cover the rest)."""
    return max(1, min((n + threads - 1) // threads, MAX_BLOCKS))


def launch(filename, name, n, args):
    """Run a grid-stride kernel over ``n`` elements."""
    if n == 0:
        return
    function(filename, name)((blocks(n),), (THREADS,), args)


def ctype(dtype):
    """The kernels' storage type for ``dtype`` (float32 or float16)."""
    try:
        return _sources.CTYPES[np.dtype(dtype).name]
    except KeyError:
        raise TypeError('nncy.cuda: no kernels for dtype %s (float32 and float16 only)'
                        % np.dtype(dtype)) from None
