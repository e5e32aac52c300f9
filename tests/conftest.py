"""Shared pytest set-up: the tests directory is importable (``checker``), runs
are reproducible, and no test leaks auto_forward mode or a context into the next."""
import os
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)


@pytest.fixture(autouse=True)
def _isolate_state():
    import nncy as nn
    np.random.seed(0)
    ctx = nn.get_current_context()
    auto = nn.get_auto_forward()
    yield
    if nn.get_auto_forward() != auto:
        nn.set_auto_forward(auto)
    nn.set_default_context(ctx)


@pytest.fixture
def rng():
    return np.random.RandomState(1234)
