"""GPU backend (CuPy).  Imported only when a CUDA context is used; ``import
nncy`` never imports this package or CuPy."""
import pathlib

KERNEL_DIR = pathlib.Path(__file__).with_name('kernels')


def cupy():
    """CuPy, imported on first use, with a clear error when it is missing."""
    try:
        import cupy as cp
    except ImportError as e:  # pragma: no cover - depends on the machine
        raise ImportError('nncy.cuda needs CuPy; install nncy[cuda]') from e
    return cp
