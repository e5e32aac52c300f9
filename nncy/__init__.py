"""nncy: NNabla's API on a Cython graph engine with Rust CPU kernels.

    import nncy as nn
    import nncy.functions as F
"""
from contextlib import contextmanager

from nncy._core import (Context, NdArray, Variable, get_current_context, forward_all,
                        set_default_context, set_auto_forward, get_auto_forward,
                        set_global_recompute, get_global_recompute)
from nncy._core import Function  # noqa: F401  (the node class behind y.parent)
from nncy import _core as _c
from nncy.parameter import (parameter_scope, get_parameters, clear_parameters,
                            get_current_parameter_scope)

__version__ = '0.1.0'

_c.check_library()


@contextmanager
def context_scope(ctx):
    """Run the enclosed block under ``ctx``."""
    prev = get_current_context()
    set_default_context(ctx)
    try:
        yield ctx
    finally:
        set_default_context(prev)


@contextmanager
def auto_forward(auto=True):
    """Within the block, every function runs as soon as it is called."""
    prev = get_auto_forward()
    set_auto_forward(auto)
    try:
        yield
    finally:
        set_auto_forward(prev)


_prefer_cached = True


def prefer_cached_array(prefer):
    """Accepted for compatibility: NumPy's allocator already caches memory."""
    global _prefer_cached
    _prefer_cached = bool(prefer)


def seed(s):
    """Seed the global random generator (alias of ``nncy.random.seed``)."""
    from nncy import random
    random.seed(s)


from nncy import functions, random  # noqa: E402,F401
from nncy._param_io import save_parameters, load_parameters  # noqa: E402,F401
from nncy._grad import grad  # noqa: E402,F401
