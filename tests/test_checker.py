"""The checker catches what it claims to catch.

Deliberately broken implementations of ``Sum`` are registered on a private
backend ('checkerfault'), selected through a Context whose backend list puts it
first; each must make :func:`check_function` fail at the right step, while the
real CPU implementation passes."""
import numpy as np
import pytest

import nncy as nn
import nncy.functions as F
from nncy._core import d32, dout, g32, gout
from nncy.function import Impl, register

from checker import check_function, check_raises

BACKEND = 'checkerfault'


class _SumAll(Impl):
    """A correct sum over all axes; subclasses break one thing."""
    scale_fwd = 1.0
    scale_bwd = 1.0
    honour_accum = True

    def setup(self, inputs):
        return [()]

    def forward(self, inputs, outputs):
        dout(outputs[0])[...] = self.scale_fwd * np.sum(d32(inputs[0]), dtype=np.float64)

    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        acc = accum[0] and self.honour_accum
        g = gout(inputs[0], acc)
        delta = self.scale_bwd * float(g32(outputs[0]))
        if acc:
            g += delta
        else:
            g.fill(delta)


class _WrongForward(_SumAll):
    scale_fwd = 1.01


class _WrongGrad(_SumAll):
    scale_bwd = 2.0


class _NoAccum(_SumAll):
    honour_accum = False


def _run_with(cls, x):
    register('Sum', backend=BACKEND)(cls)
    ctx = nn.Context(backend=[BACKEND + ':float', 'cpu:float'])
    with nn.context_scope(ctx):
        return check_function(F.sum, [x], lambda x: np.sum(x.astype(np.float64)),
                              atol=1e-5, rtol=1e-5)


X = np.random.RandomState(3).randn(3, 4).astype(np.float32)


def test_correct_implementation_passes():
    _run_with(_SumAll, X)


def test_wrong_forward_is_caught():
    with pytest.raises(AssertionError, match='forward output'):
        _run_with(_WrongForward, X)


def test_wrong_gradient_is_caught():
    with pytest.raises(AssertionError, match='finite differences'):
        _run_with(_WrongGrad, X)


def test_ignored_accum_is_caught():
    with pytest.raises(AssertionError, match='accumulate'):
        _run_with(_NoAccum, X)


def test_check_raises_requires_function_name_and_words():
    x = np.ones((2, 3), np.float32)
    check_raises(F.sum, [x], {'axis': 5}, exc=ValueError, match_words=['axis'])
    with pytest.raises(AssertionError, match='does not mention'):
        check_raises(F.sum, [x], {'axis': 5}, exc=ValueError, match_words=['no-such-word'])
    with pytest.raises(pytest.fail.Exception):
        check_raises(F.sum, [x], {'axis': 1}, exc=ValueError)
