"""GPU backend (CuPy).  Imported only when a CUDA context is used; ``import
nncy`` never imports this package's submodules that need CuPy, nor CuPy.

* ``_sources``: which kernels each ``.cu`` file provides (no CuPy);
* ``_module``: compiles those files with NVRTC through CuPy's RawModule,
  once per process and device;
* ``functions``: the implementations registered for the ``cuda`` backend.
"""
import pathlib

KERNEL_DIR = pathlib.Path(__file__).with_name('kernels')

_cp = None


class _CupyArrays:
    """The device-array operations that ``nncy._core.NdArray`` calls to keep a
    device copy beside its host copy."""

    def __init__(self, cp):
        self.cp = cp

    def zeros(self, shape, dtype):
        return self.cp.zeros(shape, dtype)

    def empty(self, shape, dtype):
        return self.cp.empty(shape, dtype)

    def upload(self, host, dev):
        cp = self.cp
        if (dev is not None and dev.shape == host.shape and dev.dtype == host.dtype
                and dev.flags.c_contiguous and host.flags.c_contiguous):
            dev.set(host)
            return dev
        dev = cp.asarray(host)
        return dev if dev.flags.c_contiguous else dev.copy()

    def download(self, dev, host):
        if (host is not None and host.shape == dev.shape and host.dtype == dev.dtype
                and host.flags.c_contiguous and host.flags.writeable
                and dev.flags.c_contiguous):
            dev.get(out=host)
            return host
        return dev.get()

    def asarray(self, obj):
        return self.cp.asarray(obj)

    def from_dlpack(self, obj):
        return self.cp.from_dlpack(obj)

    def owns(self, obj):
        """Whether ``obj`` is a device array."""
        return isinstance(obj, self.cp.ndarray)


def cupy():
    """CuPy, imported on first use (with a clear error when it is missing);
    the first call also gives NdArray its device copies."""
    global _cp
    if _cp is None:
        try:
            import cupy as cp
        except ImportError as e:  # pragma: no cover - depends on the machine
            raise ImportError('nncy.cuda needs CuPy for the cuda backend; install nncy[cuda]') from e
        from nncy import _core
        _core.set_device_backend(_CupyArrays(cp))
        _cp = cp
    return _cp


def is_available():
    """Whether CuPy is installed and sees a GPU (never raises)."""
    try:
        return cupy().cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False
