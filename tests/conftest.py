"""Shared pytest set-up: the tests directory is importable (``checker``), runs
are reproducible, and no test leaks auto_forward mode or a context into the next."""
import os
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
try:
    import nncy  # noqa: F401  (an installed nncy wins)
except ImportError:
    # not installed: use the in-place build of this checkout
    sys.path.insert(0, os.path.dirname(HERE))


@pytest.fixture(autouse=True)
def _isolate_state():
    import nncy as nn
    np.random.seed(0)
    nn.random.seed(0)      # parameter initializers draw from it
    ctx = nn.get_current_context()
    auto = nn.get_auto_forward()
    yield
    if nn.get_auto_forward() != auto:
        nn.set_auto_forward(auto)
    nn.set_default_context(ctx)


@pytest.fixture
def rng():
    return np.random.RandomState(1234)


@pytest.fixture
def py_env():
    """Environment for a child ``python`` that must import the same nncy as this
    process (also when nncy is built in place rather than installed)."""
    import nncy
    root = os.path.dirname(os.path.dirname(os.path.abspath(nncy.__file__)))
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([root] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p])
    return env
