"""Every pointwise row of the function table, checked from one list of NumPy
references.

A new pointwise row must add an entry to ``REFS`` below (its forward from the
math, its analytic gradient, an input domain and argument cases);
``test_every_pointwise_row_has_a_reference`` fails until it does.
"""
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nncy as nn
import nncy.functions as F
from nncy import _table

from checker import check_function, check_raises, unbroadcast

POINTWISE = [s for s in _table.FUNCTIONS if s.kind == 'pointwise']
UNARY = [s for s in POINTWISE if s.n_inputs == 1]
BINARY = [s for s in POINTWISE if s.n_inputs == 2]


# --------------------------------------------------------------------------
# input domains: functions (rng, shape) -> float32 array
# --------------------------------------------------------------------------

def normal(scale=1.0):
    def gen(rng, shape):
        return np.asarray(rng.randn(*shape) * scale, dtype=np.float32).reshape(shape)
    return gen


def away_from_zero(lo=0.2, hi=2.0):
    """|x| in [lo, hi], random sign: keeps finite differences off kinks and poles."""
    def gen(rng, shape):
        mag = rng.uniform(lo, hi, size=shape)
        sign = np.where(rng.rand(*shape) < 0.5, -1.0, 1.0)
        return np.asarray(mag * sign, dtype=np.float32).reshape(shape)
    return gen


def positive(lo=0.5, hi=2.0):
    def gen(rng, shape):
        return np.asarray(rng.uniform(lo, hi, size=shape), dtype=np.float32).reshape(shape)
    return gen


def uniform(lo, hi):
    return positive(lo, hi)


def grid(values=(-1.0, -0.5, 0.0, 0.5, 1.0)):
    """Values from a small set: ties, zeros and exact matches are common."""
    def gen(rng, shape):
        return np.asarray(rng.choice(values, size=shape), dtype=np.float32).reshape(shape)
    return gen


def specials(nan=True, inf=True):
    """Normal values with NaN and/or +-inf mixed in."""
    extra = ([np.nan] if nan else []) + ([np.inf, -np.inf] if inf else [])

    def gen(rng, shape):
        x = np.asarray(rng.randn(*shape)).reshape(shape)
        mask = np.asarray(rng.rand(*shape)).reshape(shape) < 0.3
        picks = rng.choice(extra, size=shape)
        return np.asarray(np.where(mask, picks, x), dtype=np.float32).reshape(shape)
    return gen


# Tolerances.  EXACT: one correctly rounded float32 operation per element.
# TRANSC: transcendental functions (a few ulp of float32).
EXACT = dict(atol=1e-7, rtol=1e-6, grad_atol=2e-6, grad_rtol=1e-5)
TRANSC = dict(atol=1e-6, rtol=4e-6, grad_atol=2e-6, grad_rtol=2e-5)


# Comparisons and logical functions: a zero gradient by definition, which
# finite differences contradict at ties (so they are not checked by them);
# straight-through gradients (round, sign) are not the derivative either.
NO_FD = dict(EXACT, check_fd=False)


class PW:
    """Reference for one pointwise row.

    ref(*xs, **args) -> y, in float64; grad(xs, y, dy, **args) -> one full-shape
    (broadcast) gradient per input; cases: list of (args, domains) where
    domains holds one generator per input.  nan: whether a NaN input gives a
    NaN output.
    """

    def __init__(self, ref, grad, cases, tol=EXACT, nan=True):
        self.ref = ref
        self.grad = grad
        self.cases = cases
        self.tol = tol
        self.nan = nan


def _sig(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))   # stable logistic in float64


def avoiding(lo, hi, kinks, gap=0.05):
    """Uniform in [lo, hi], at least ``gap`` away from each kink (a point
    where the function or its derivative jumps)."""
    def gen(rng, shape):
        v = rng.uniform(lo, hi, size=shape)
        for k in kinks:
            near = np.abs(v - k) < gap
            v = np.where(near, k + np.where(v >= k, gap, -gap) * 2, v)
        return np.asarray(v, dtype=np.float32).reshape(shape)
    return gen


_K_GELU = np.sqrt(2.0 / np.pi)


def _gelu(x):
    return 0.5 * x * (1.0 + np.tanh(_K_GELU * (x + 0.044715 * x ** 3)))


def _gelu_grad(x):
    t = np.tanh(_K_GELU * (x + 0.044715 * x ** 3))
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _K_GELU * (1 + 3 * 0.044715 * x * x)


def _sinc(x):
    with np.errstate(all='ignore'):
        return np.where(x == 0, 1.0, np.sin(x) / np.where(x == 0, 1.0, x))


def _sinc_grad(x):
    with np.errstate(all='ignore'):
        xs = np.where(x == 0, 1.0, x)
        return np.where(x == 0, 0.0, (np.cos(xs) - np.sin(xs) / xs) / xs)


_SELU = dict(scale=1.05070098735548, alpha=1.673263242354377)


N = normal()
REFS = {
    'relu': PW(lambda x, inplace=False: np.maximum(x, 0.0),
               lambda xs, y, dy, **a: [dy * (xs[0] > 0)],
               [({}, [away_from_zero()])]),
    'sigmoid': PW(lambda x: _sig(x),
                  lambda xs, y, dy: [dy * y * (1 - y)],
                  [({}, [normal(2.0)])], TRANSC),
    'tanh': PW(lambda x: np.tanh(x),
               lambda xs, y, dy: [dy * (1 - y * y)],
               [({}, [normal(1.5)])], TRANSC),
    'add2': PW(lambda a, b, inplace=False: a + b,
               lambda xs, y, dy, **k: [dy, dy],
               [({}, [N, N])]),
    'sub2': PW(lambda a, b, inplace=False: a - b,
               lambda xs, y, dy, **k: [dy, -dy],
               [({}, [N, N])]),
    'mul2': PW(lambda a, b, inplace=False: a * b,
               lambda xs, y, dy, **k: [dy * xs[1], dy * xs[0]],
               [({}, [N, N])]),
    'div2': PW(lambda a, b, inplace=False: a / b,
               lambda xs, y, dy, **k: [dy / xs[1], -dy * xs[0] / xs[1] ** 2],
               [({}, [N, away_from_zero(0.5, 2.0)])]),
    'add_scalar': PW(lambda x, val=1.0: x + val,
                     lambda xs, y, dy, **a: [dy],
                     [({}, [N]), ({'val': -2.5}, [N])]),
    'mul_scalar': PW(lambda x, val=1.0: x * val,
                     lambda xs, y, dy, val=1.0: [dy * val],
                     [({}, [N]), ({'val': -0.5}, [N]), ({'val': 3.0}, [N])]),
    'pow_scalar': PW(lambda x, val=1.0: np.power(x, val),
                     lambda xs, y, dy, val=1.0: [dy * val * np.power(xs[0], val - 1)],
                     [({}, [N]), ({'val': 2.0}, [N]), ({'val': 3.0}, [N]),
                      ({'val': 0.5}, [positive()]), ({'val': -1.5}, [positive()])],
                     TRANSC),
    'r_sub_scalar': PW(lambda x, val=1.0: val - x,
                       lambda xs, y, dy, **a: [-dy],
                       [({}, [N]), ({'val': 2.5}, [N])]),
    'r_div_scalar': PW(lambda x, val=1.0: val / x,
                       lambda xs, y, dy, val=1.0: [-dy * val / xs[0] ** 2],
                       [({}, [away_from_zero(0.5, 2.0)]),
                        ({'val': -3.0}, [away_from_zero(0.5, 2.0)])]),
    'r_pow_scalar': PW(lambda x, val=1.0: np.power(val, x),
                       lambda xs, y, dy, val=1.0: [dy * y * np.log(val)],
                       [({}, [N]), ({'val': 2.0}, [N]), ({'val': 0.5}, [N])],
                       TRANSC),
    'pow2': PW(lambda a, b, inplace=False: np.power(a, b),
               lambda xs, y, dy, **k: [dy * xs[1] * np.power(xs[0], xs[1] - 1),
                                       dy * y * np.log(xs[0])],
               [({}, [positive(), N])], TRANSC),
    'abs': PW(lambda x: np.abs(x),
              lambda xs, y, dy: [dy * np.sign(xs[0])],
              [({}, [away_from_zero()])]),
    'exp': PW(lambda x: np.exp(x),
              lambda xs, y, dy: [dy * y],
              [({}, [normal(2.0)])], TRANSC),
    'log': PW(lambda x: np.log(x),
              lambda xs, y, dy: [dy / xs[0]],
              [({}, [positive(0.2, 4.0)])], TRANSC),
    'identity': PW(lambda x: x.copy(),
                   lambda xs, y, dy: [dy],
                   [({}, [N])]),
    # ---- activations (issue 4)
    'swish': PW(lambda x: x * _sig(x),
                lambda xs, y, dy: [dy * _sig(xs[0]) * (1 + xs[0] * (1 - _sig(xs[0])))],
                [({}, [normal(3.0)])], TRANSC),
    'elu': PW(lambda x, alpha=1.0: np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))),
              lambda xs, y, dy, alpha=1.0: [dy * np.where(xs[0] > 0, 1.0, alpha * np.exp(np.minimum(xs[0], 0)))],
              [({}, [away_from_zero(0.05, 3.0)]), ({'alpha': 0.3}, [away_from_zero(0.05, 3.0)])],
              TRANSC),
    'selu': PW(lambda x, scale=_SELU['scale'], alpha=_SELU['alpha']:
               scale * np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))),
               lambda xs, y, dy, scale=_SELU['scale'], alpha=_SELU['alpha']:
               [dy * scale * np.where(xs[0] > 0, 1.0, alpha * np.exp(np.minimum(xs[0], 0)))],
               [({}, [away_from_zero(0.05, 3.0)]),
                ({'scale': 2.0, 'alpha': 0.5}, [away_from_zero(0.05, 3.0)])], TRANSC),
    'gelu': PW(_gelu, lambda xs, y, dy: [dy * _gelu_grad(xs[0])],
               [({}, [normal(2.5)])], TRANSC),
    'leaky_relu': PW(lambda x, alpha=0.1, inplace=False: np.where(x > 0, x, alpha * x),
                     lambda xs, y, dy, alpha=0.1, inplace=False:
                     [dy * np.where(xs[0] > 0, 1.0, alpha)],
                     [({}, [away_from_zero()]), ({'alpha': 0.3}, [away_from_zero()]),
                      ({'alpha': -0.2}, [away_from_zero()])]),
    'relu6': PW(lambda x: np.clip(x, 0.0, 6.0),
                lambda xs, y, dy: [dy * ((xs[0] > 0) & (xs[0] < 6))],
                [({}, [avoiding(-3.0, 9.0, [0.0, 6.0])])]),
    'hard_sigmoid': PW(lambda x: np.clip(0.2 * x + 0.5, 0.0, 1.0),
                       lambda xs, y, dy: [dy * 0.2 * ((xs[0] > -2.5) & (xs[0] < 2.5))],
                       [({}, [avoiding(-4.0, 4.0, [-2.5, 2.5])])]),
    'hard_tanh': PW(lambda x: np.clip(x, -1.0, 1.0),
                    lambda xs, y, dy: [dy * ((xs[0] > -1) & (xs[0] < 1))],
                    [({}, [avoiding(-2.5, 2.5, [-1.0, 1.0])])]),
    'log_sigmoid': PW(lambda x: -np.logaddexp(0.0, -x),
                      lambda xs, y, dy: [dy * _sig(-xs[0])],
                      [({}, [normal(3.0)])], TRANSC),
    'softplus': PW(lambda x, beta=1.0: np.logaddexp(0.0, beta * x) / beta,
                   lambda xs, y, dy, beta=1.0: [dy * _sig(beta * xs[0])],
                   [({}, [normal(3.0)]), ({'beta': 2.5}, [normal(2.0)]),
                    ({'beta': 0.5}, [normal(2.0)])], TRANSC),
    'softsign': PW(lambda x: x / (1 + np.abs(x)),
                   lambda xs, y, dy: [dy / (1 + np.abs(xs[0])) ** 2],
                   [({}, [away_from_zero(0.05, 4.0)])], TRANSC),
    'tanh_shrink': PW(lambda x: x - np.tanh(x),
                      lambda xs, y, dy: [dy * np.tanh(xs[0]) ** 2],
                      [({}, [normal(1.5)]), ({}, [normal(0.08)])], TRANSC),
    'sinc': PW(_sinc, lambda xs, y, dy: [dy * _sinc_grad(xs[0])],
               [({}, [normal(3.0)]), ({}, [normal(0.3)])], TRANSC),
}


def _f(b):
    return np.asarray(b, dtype=np.float64)


def _zero2(xs, y, dy, **a):
    return [0 * dy, 0 * dy]


def _zero1(xs, y, dy, **a):
    return [0 * dy]


def _compare2(op):
    return PW(lambda a, b: _f(op(a, b)), _zero2, [({}, [grid(), grid()]), ({}, [N, N])],
              NO_FD, nan=False)


def _compare1(op):
    return PW(lambda x, val=1.0: _f(op(x, val)), _zero1,
              [({}, [grid()]), ({'val': -0.5}, [grid()]), ({'val': 0.3}, [N])],
              NO_FD, nan=False)


def _logical1(op):
    return PW(lambda x, val: _f(op(x != 0, bool(val))), _zero1,
              [({'val': True}, [grid()]), ({'val': False}, [grid()])], NO_FD, nan=False)


def _round_half_away(x):
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _ste(fn):
    return PW(fn, lambda xs, y, dy: [dy], [({}, [normal(3.0)])], NO_FD)


REFS.update({
    # logical
    'equal': _compare2(np.equal),
    'not_equal': _compare2(np.not_equal),
    'greater': _compare2(np.greater),
    'greater_equal': _compare2(np.greater_equal),
    'less': _compare2(np.less),
    'less_equal': _compare2(np.less_equal),
    'logical_and': PW(lambda a, b: _f((a != 0) & (b != 0)), _zero2,
                      [({}, [grid(), grid()])], NO_FD, nan=False),
    'logical_or': PW(lambda a, b: _f((a != 0) | (b != 0)), _zero2,
                     [({}, [grid(), grid()])], NO_FD, nan=False),
    'logical_xor': PW(lambda a, b: _f((a != 0) ^ (b != 0)), _zero2,
                      [({}, [grid(), grid()])], NO_FD, nan=False),
    'equal_scalar': _compare1(np.equal),
    'not_equal_scalar': _compare1(np.not_equal),
    'greater_scalar': _compare1(np.greater),
    'greater_equal_scalar': _compare1(np.greater_equal),
    'less_scalar': _compare1(np.less),
    'less_equal_scalar': _compare1(np.less_equal),
    'logical_and_scalar': _logical1(np.logical_and),
    'logical_or_scalar': _logical1(np.logical_or),
    'logical_xor_scalar': _logical1(np.logical_xor),
    'logical_not': PW(lambda x: _f(x == 0), _zero1, [({}, [grid()])], NO_FD, nan=False),
    'sign': PW(lambda x, alpha=1.0: np.where(x > 0, 1.0, np.where(x < 0, -1.0, alpha)),
               lambda xs, y, dy, **a: [dy],
               [({}, [grid()]), ({'alpha': 0.0}, [grid()]), ({'alpha': -0.25}, [N])],
               NO_FD, nan=False),
    'minimum2': PW(lambda a, b: np.where(a < b, a, b),
                   lambda xs, y, dy: [dy * (xs[0] < xs[1]), dy * (xs[0] >= xs[1])],
                   [({}, [N, N])]),
    'maximum2': PW(lambda a, b: np.where(a > b, a, b),
                   lambda xs, y, dy: [dy * (xs[0] > xs[1]), dy * (xs[0] <= xs[1])],
                   [({}, [N, N])]),
    'minimum_scalar': PW(lambda x, val=1.0: np.where(x < val, x, val),
                         lambda xs, y, dy, val=1.0: [dy * (xs[0] < val)],
                         [({}, [N]), ({'val': -0.3}, [N])], nan=False),
    'maximum_scalar': PW(lambda x, val=1.0: np.where(x > val, x, val),
                         lambda xs, y, dy, val=1.0: [dy * (xs[0] > val)],
                         [({}, [N]), ({'val': -0.3}, [N])], nan=False),
    # (finite differences are undefined at NaN and inf inputs)
    'isnan': PW(lambda x: _f(np.isnan(x)), _zero1, [({}, [specials()])], NO_FD, nan=False),
    'isinf': PW(lambda x: _f(np.isinf(x)), _zero1, [({}, [specials()])], NO_FD, nan=False),
    'reset_nan': PW(lambda x, val=0.0: np.where(np.isnan(x), val, x),
                    lambda xs, y, dy, **a: [np.where(np.isnan(xs[0]), 0.0, dy)],
                    [({}, [specials(inf=False)]), ({'val': -2.5}, [specials(inf=False)])],
                    NO_FD, nan=False),
    'reset_inf': PW(lambda x, val=0.0: np.where(np.isinf(x), val, x),
                    lambda xs, y, dy, **a: [np.where(np.isinf(xs[0]), 0.0, dy)],
                    [({}, [specials(nan=False)]), ({'val': 7.0}, [specials(nan=False)])],
                    NO_FD),
    # math
    'round': _ste(_round_half_away),
    'ceil': _ste(np.ceil),
    'floor': _ste(np.floor),
    'sin': PW(np.sin, lambda xs, y, dy: [dy * np.cos(xs[0])], [({}, [normal(2.0)])], TRANSC),
    'cos': PW(np.cos, lambda xs, y, dy: [-dy * np.sin(xs[0])], [({}, [normal(2.0)])], TRANSC),
    'tan': PW(np.tan, lambda xs, y, dy: [dy / np.cos(xs[0]) ** 2],
              [({}, [uniform(-1.2, 1.2)])], TRANSC),
    'sinh': PW(np.sinh, lambda xs, y, dy: [dy * np.cosh(xs[0])], [({}, [normal(1.5)])],
               TRANSC),
    'cosh': PW(np.cosh, lambda xs, y, dy: [dy * np.sinh(xs[0])], [({}, [normal(1.5)])],
               TRANSC),
    'asin': PW(np.arcsin, lambda xs, y, dy: [dy / np.sqrt(1 - xs[0] ** 2)],
               [({}, [uniform(-0.9, 0.9)])], TRANSC),
    'acos': PW(np.arccos, lambda xs, y, dy: [-dy / np.sqrt(1 - xs[0] ** 2)],
               [({}, [uniform(-0.9, 0.9)])], TRANSC),
    'atan': PW(np.arctan, lambda xs, y, dy: [dy / (1 + xs[0] ** 2)], [({}, [normal(2.0)])],
               TRANSC),
    'atan2': PW(np.arctan2,
                lambda xs, y, dy: [dy * xs[1] / (xs[0] ** 2 + xs[1] ** 2),
                                   -dy * xs[0] / (xs[0] ** 2 + xs[1] ** 2)],
                [({}, [away_from_zero(), away_from_zero()])], TRANSC),
    'asinh': PW(np.arcsinh, lambda xs, y, dy: [dy / np.sqrt(xs[0] ** 2 + 1)],
                [({}, [normal(2.0)])], TRANSC),
    'acosh': PW(np.arccosh, lambda xs, y, dy: [dy / np.sqrt(xs[0] ** 2 - 1)],
                [({}, [uniform(1.2, 3.0)])], TRANSC),
    'atanh': PW(np.arctanh, lambda xs, y, dy: [dy / (1 - xs[0] ** 2)],
                [({}, [uniform(-0.8, 0.8)])], TRANSC),
})



# ---- losses, validation, quantization, special use (issue 7) -----------------

def _sce_ref(x, t):
    return np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))


def _bce_ref(x, t):
    tiny = np.finfo(np.float32).tiny
    return -(t * np.log(np.maximum(x, tiny)) + (1 - t) * np.log(np.maximum(1 - x, tiny)))


def _huber_ref(a, b, delta=1.0):
    d = a - b
    return np.where(np.abs(d) < delta, d * d, delta * (2 * np.abs(d) - delta))


def _huber_grad(xs, y, dy, delta=1.0):
    d = xs[0] - xs[1]
    g = dy * np.where(np.abs(d) < delta, 2 * d, 2 * delta * np.sign(d))
    return [g, -g]


def _eps_ref(a, b, epsilon):
    d = np.abs(a - b)
    return np.where(d > epsilon, d - epsilon, 0.0)


def _eps_grad(xs, y, dy, epsilon):
    d = xs[0] - xs[1]
    g = dy * np.where(np.abs(d) > epsilon, np.where(d > 0, 1.0, -1.0), 0.0)
    return [g, -g]


def _fpq_range(sign=True, n=8, delta=0.0625):
    if sign:
        hi = (2 ** (n - 1) - 1) * delta
        return -hi, hi
    return 0.0, (2 ** n - 1) * delta


def _fpq_ref(x, sign=True, n=8, delta=0.0625, quantize=True, ste_fine_grained=True):
    if not quantize:
        return x.copy()
    lo, hi = _fpq_range(sign, n, delta)
    q = np.sign(x) * np.floor(np.abs(x) / delta + 0.5) * delta
    return np.where(x > hi, hi, np.where(x < lo, lo, q))


def _fpq_grad(xs, y, dy, sign=True, n=8, delta=0.0625, quantize=True,
              ste_fine_grained=True):
    if not quantize or not ste_fine_grained:
        return [dy]
    lo, hi = _fpq_range(sign, n, delta)
    return [dy * ((xs[0] <= hi) & (xs[0] >= lo))]


def off_grid(step, lo, hi):
    """Multiples of ``step`` in [lo, hi], moved by +-0.3 step: away from rounding
    boundaries (also after float16 storage)."""
    def gen(rng, shape):
        k = rng.randint(int(lo / step), int(hi / step) + 1, size=shape)
        off = np.where(rng.rand(*shape) < 0.5, -0.3, 0.3)
        return np.asarray((k + off) * step, dtype=np.float32).reshape(shape)
    return gen



def _p2q_range(sign=True, with_zero=True, n=8, m=1):
    k = n - int(sign) - int(with_zero)
    return 2.0 ** (m - (2 ** k - 1)), 2.0 ** m


def _p2q_ref(x, sign=True, with_zero=True, n=8, m=1, quantize=True, ste_fine_grained=True):
    if not quantize:
        return x.copy()
    pmin, pmax = _p2q_range(sign, with_zero, n, m)
    a = np.abs(x)
    q = np.clip(2.0 ** np.round(np.log2(np.maximum(a, 1e-30))), pmin, pmax)
    if with_zero:
        q = np.where(a < pmin * 2 ** -0.5, 0.0, q)
    if sign:
        return np.where(x >= 0, q, -q)
    return np.where(x >= 0, q, 0.0 if with_zero else pmin)


def _p2q_grad(xs, y, dy, sign=True, with_zero=True, n=8, m=1, quantize=True,
              ste_fine_grained=True):
    if not quantize or not ste_fine_grained:
        return [dy]
    keep = np.abs(xs[0]) < 2.0 ** (m + 0.5)          # |x| does not round above 2^m
    if not sign:
        keep = keep & (xs[0] >= 0)
    return [dy * keep]


def pow2_off_grid(lo, hi):
    """+-2^(k + u), k integer in [lo, hi], |u| <= 0.4: away from the rounding
    boundaries of a power-of-two quantizer (also after float16 storage)."""
    def gen(rng, shape):
        e = rng.randint(lo, hi + 1, size=shape) + rng.uniform(-0.4, 0.4, size=shape)
        sign = np.where(rng.rand(*shape) < 0.5, -1.0, 1.0)
        return np.asarray(sign * 2.0 ** e, dtype=np.float32).reshape(shape)
    return gen


FAR = away_from_zero(1.0, 2.0)     # with NEAR: |x0 - x1| >= 0.7, off the kink at 0
NEAR = uniform(-0.3, 0.3)
PROB = uniform(0.0, 1.0)

REFS.update({
    'sigmoid_cross_entropy': PW(_sce_ref,
                                lambda xs, y, dy: [dy * (_sig(xs[0]) - xs[1]), -dy * xs[0]],
                                [({}, [normal(2.0), PROB]), ({}, [normal(30.0), grid((0.0, 1.0))])],
                                dict(TRANSC, atol=2e-5)),
    'binary_cross_entropy': PW(_bce_ref,
                               lambda xs, y, dy: [dy * (xs[0] - xs[1]) / (xs[0] * (1 - xs[0])),
                                                  dy * (np.log(1 - xs[0]) - np.log(xs[0]))],
                               [({}, [uniform(0.1, 0.9), PROB])], TRANSC),
    'squared_error': PW(lambda a, b: (a - b) ** 2,
                        lambda xs, y, dy: [2 * dy * (xs[0] - xs[1]), -2 * dy * (xs[0] - xs[1])],
                        [({}, [N, N])], dict(EXACT, atol=1e-6, grad_atol=4e-6)),
    'absolute_error': PW(lambda a, b: np.abs(a - b),
                         lambda xs, y, dy: [dy * np.sign(xs[0] - xs[1]),
                                            -dy * np.sign(xs[0] - xs[1])],
                         [({}, [FAR, NEAR])], dict(EXACT, atol=1e-6)),
    'huber_loss': PW(_huber_ref, _huber_grad,
                     [({}, [N, N]), ({'delta': 0.5}, [N, N])],
                     dict(EXACT, atol=1e-6, grad_atol=4e-6)),
    'epsilon_insensitive_loss': PW(_eps_ref, _eps_grad,
                                   [({'epsilon': 0.5}, [FAR, NEAR]),
                                    ({'epsilon': 1.5}, [off_grid(1.0, -2.0, 2.0), uniform(-0.1, 0.1)])],
                                   dict(EXACT, atol=1e-6)),
    'binary_error': PW(lambda a, b: _f((a >= 0.5) != (b >= 0.5)), _zero2,
                       [({}, [grid((0.0, 0.25, 0.5, 0.75, 1.0)), grid((0.0, 0.5, 1.0))]),
                        ({}, [N, N])], NO_FD, nan=False),
    'binary_sigmoid': PW(lambda x: _f(x > 0),
                         lambda xs, y, dy: [0.5 * dy * (np.abs(xs[0]) < 1)],
                         [({}, [normal(2.0)])], NO_FD, nan=False),
    'binary_tanh': PW(lambda x: np.where(x > 0, 1.0, -1.0),
                      lambda xs, y, dy: [dy * (np.abs(xs[0]) < 1)],
                      [({}, [normal(2.0)])], NO_FD, nan=False),
    'fixed_point_quantize': PW(_fpq_ref, _fpq_grad,
                               [({}, [off_grid(0.0625, -10.0, 10.0)]),
                                ({'sign': False, 'n': 4, 'delta': 0.25},
                                 [off_grid(0.25, -1.0, 5.0)]),
                                ({'ste_fine_grained': False}, [off_grid(0.0625, -10.0, 10.0)]),
                                ({'quantize': False}, [N])], NO_FD),
    'pow2_quantize': PW(_p2q_ref, _p2q_grad,
                        [({}, [pow2_off_grid(-3, 2)]),
                         ({'n': 3, 'm': 1}, [pow2_off_grid(-3, 2)]),
                         ({'sign': False, 'n': 3, 'm': 2}, [pow2_off_grid(-2, 3)]),
                         ({'with_zero': False, 'n': 3, 'm': 0, 'ste_fine_grained': False},
                          [pow2_off_grid(-3, 2)]),
                         ({'sign': False, 'with_zero': False, 'n': 3, 'm': 1},
                          [pow2_off_grid(-3, 2)]),
                         ({'quantize': False}, [N])], NO_FD, nan=False),
    'unlink': PW(lambda x: x.copy(), lambda xs, y, dy: [0 * dy], [({}, [N])], NO_FD),
})

def _fn(spec):
    fn = getattr(F, spec.name, None)
    assert fn is not None, 'nncy.functions has no %s' % spec.name
    return fn


def _ref64(entry):
    def ref(*xs, **args):
        xs = [x.astype(np.float64) for x in xs]
        return entry.ref(*xs, **args)
    return ref


def _ref_grad64(entry, n_in):
    def ref_grad(*xs_and_dy, **args):
        xs = [x.astype(np.float64) for x in xs_and_dy[:n_in]]
        dy = xs_and_dy[n_in].astype(np.float64)
        y = entry.ref(*xs, **args)
        full = entry.grad(xs, y, dy, **args)
        return [unbroadcast(g * np.ones_like(y), x.shape) for g, x in zip(full, xs)]
    return ref_grad


def _seed(*key):
    return zlib.crc32(repr(key).encode())


def _entry(spec):
    if spec.name not in REFS:
        pytest.fail('pointwise row %r has no reference in tests/test_pointwise.py REFS'
                    % spec.name)
    return REFS[spec.name]


def _cases(rows):
    out = []
    for s in rows:
        entry = REFS.get(s.name)
        n = len(entry.cases) if entry else 1
        for k in range(n):
            out.append(pytest.param(s, k, id='%s-%d' % (s.name, k)))
    return out


# --------------------------------------------------------------------------
# coverage of the table
# --------------------------------------------------------------------------

def test_every_pointwise_row_has_a_reference():
    missing = [s.name for s in POINTWISE if s.name not in REFS]
    assert not missing, 'pointwise rows without a NumPy reference: %s' % missing


def test_no_stale_references():
    names = {s.name for s in POINTWISE}
    stale = sorted(set(REFS) - names)
    assert not stale, 'REFS entries that are not pointwise rows of the table: %s' % stale


# --------------------------------------------------------------------------
# the full checker on small shapes
# --------------------------------------------------------------------------

UNARY_SHAPES = [(), (5,), (2, 3, 4)]


@pytest.mark.parametrize('shape', UNARY_SHAPES, ids=str)
@pytest.mark.parametrize('spec,case', _cases(UNARY))
def test_unary(spec, case, shape):
    entry = _entry(spec)
    args, domains = entry.cases[case]
    rng = np.random.RandomState(_seed(spec.name, case, shape))
    x = domains[0](rng, shape)
    tol = entry.tol
    check_function(_fn(spec), [x], _ref64(entry), args,
                   ref_grad=_ref_grad64(entry, 1), **tol)


BINARY_SHAPES = [
    ((2, 3, 4), (2, 3, 4)),
    ((2, 3, 4), (3, 1)),
    ((3, 1), (2, 3, 4)),
    ((1,), (2, 3)),
    ((), (2, 3)),
    ((2, 3), ()),
    ((2, 1, 4), (3, 1)),
    ((4,), (2, 3, 4)),
    ((), ()),
]


@pytest.mark.parametrize('shapes', BINARY_SHAPES, ids=str)
@pytest.mark.parametrize('spec,case', _cases(BINARY))
def test_binary(spec, case, shapes):
    entry = _entry(spec)
    args, domains = entry.cases[case]
    rng = np.random.RandomState(_seed(spec.name, case, shapes))
    xs = [d(rng, s) for d, s in zip(domains, shapes)]
    check_function(_fn(spec), xs, _ref64(entry), args,
                   ref_grad=_ref_grad64(entry, 2), **entry.tol)


# --------------------------------------------------------------------------
# sizes that cross SIMD widths and thread splits: forward + analytic grad
# --------------------------------------------------------------------------

SIZES = [1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 64, 255, 1023, 4099, 65537]


def _forward_backward(fn, xs, args, dy):
    vs = [nn.Variable.from_numpy_array(x, need_grad=True) for x in xs]
    for v in vs:
        v.g = 0
    y = fn(*vs, **args)
    y.forward()
    y.backward(dy)
    return y, vs


@pytest.mark.parametrize('spec', POINTWISE, ids=lambda s: s.name)
def test_sizes(spec):
    entry = _entry(spec)
    fn = _fn(spec)
    ref = _ref64(entry)
    ref_grad = _ref_grad64(entry, spec.n_inputs)
    for args, domains in entry.cases:
        for n in SIZES:
            rng = np.random.RandomState(n)
            xs = [d(rng, (n,)) for d in domains]
            dy = rng.randn(n).astype(np.float32)
            y, vs = _forward_backward(fn, xs, args, dy)
            msg = '%s%s size %d' % (spec.name, args, n)
            assert y.d.dtype == np.float32, msg
            np.testing.assert_allclose(y.d, ref(*xs, **args), atol=entry.tol['atol'],
                                       rtol=entry.tol['rtol'], err_msg=msg)
            for v, g in zip(vs, ref_grad(*xs, dy, **args)):
                np.testing.assert_allclose(v.g, g, atol=entry.tol['grad_atol'],
                                           rtol=entry.tol['grad_rtol'], err_msg=msg)


# --------------------------------------------------------------------------
# broadcasting, property based
# --------------------------------------------------------------------------

@pytest.mark.parametrize('spec', BINARY, ids=lambda s: s.name)
@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_broadcast_property(spec, data):
    entry = _entry(spec)
    shapes = data.draw(hnp.mutually_broadcastable_shapes(
        num_shapes=2, min_dims=0, max_dims=4, max_side=3), label='shapes')
    args, domains = entry.cases[0]
    seed = data.draw(st.integers(0, 2 ** 31 - 1), label='seed')
    rng = np.random.RandomState(seed)
    xs = [d(rng, s) for d, s in zip(domains, shapes.input_shapes)]
    dy = np.asarray(rng.randn(*shapes.result_shape), np.float32).reshape(shapes.result_shape)
    y, vs = _forward_backward(_fn(spec), xs, args, dy)
    assert y.shape == shapes.result_shape
    np.testing.assert_allclose(y.d, _ref64(entry)(*xs, **args),
                               atol=entry.tol['atol'], rtol=entry.tol['rtol'])
    for v, g, x in zip(vs, _ref_grad64(entry, 2)(*xs, dy, **args), xs):
        assert v.g.shape == x.shape
        np.testing.assert_allclose(v.g, g, atol=entry.tol['grad_atol'],
                                   rtol=entry.tol['grad_rtol'])


@pytest.mark.parametrize('spec', BINARY, ids=lambda s: s.name)
def test_incompatible_shapes_raise(spec):
    a = np.ones((2, 3), np.float32)
    b = np.ones((4,), np.float32)
    args = _entry(spec).cases[0][0]   # required arguments (epsilon_insensitive_loss)
    check_raises(_fn(spec), [a, b], args, exc=ValueError, match_words=['2, 3'])


# --------------------------------------------------------------------------
# inplace, graph info
# --------------------------------------------------------------------------

INPLACE = [s for s in POINTWISE if 'inplace' in s.arg_names]


PRODUCERS = {
    'mul_scalar': lambda v: F.mul_scalar(v, 1.0),
    'tanh': F.tanh,          # backward reads its output: it must not be overwritten
    'exp': F.exp,
}


@pytest.mark.parametrize('producer', sorted(PRODUCERS))
@pytest.mark.parametrize('spec', INPLACE, ids=lambda s: s.name)
def test_inplace_changes_no_result(spec, producer):
    """inplace=True on an intermediate gives the same values and gradients, also
    when the intermediate's producer needs its output for its own backward."""
    entry = _entry(spec)
    args, domains = entry.cases[0]
    shapes = [(2, 3, 4)] + [(3, 1)] * (spec.n_inputs - 1)
    rng = np.random.RandomState(5)
    xs = [d(rng, s) for d, s in zip(domains, shapes)]
    dy = rng.randn(2, 3, 4).astype(np.float32)
    results = []
    for inplace in (False, True):
        vs = [nn.Variable.from_numpy_array(x, need_grad=True) for x in xs]
        hs = [PRODUCERS[producer](v) for v in vs]
        y = F.mul_scalar(_fn(spec)(*hs, **dict(args, inplace=inplace)), 2.0)
        for v in vs:
            v.g = 0
        y.forward()
        y.backward(dy)
        results.append((y.d.copy(), [v.g.copy() for v in vs], [v.d.copy() for v in vs]))
    (y0, g0, d0), (y1, g1, d1) = results
    np.testing.assert_allclose(y1, y0, rtol=1e-6, atol=1e-7)
    for a, b in zip(g1, g0):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, x in zip(d1, xs):   # leaves are never overwritten
        np.testing.assert_array_equal(a, x)


@pytest.mark.parametrize('spec', INPLACE, ids=lambda s: s.name)
def test_inplace_does_not_corrupt_other_consumers(spec):
    """An input computed in place must not change what its other consumers see,
    whichever runs first: the engine either declines the in-place update or
    raises a ValueError naming 'inplace'."""
    entry = _entry(spec)
    args, domains = entry.cases[0]
    rng = np.random.RandomState(9)
    xs = [d(rng, (2, 3)) for d in domains]
    expect = _ref64(entry)(*xs, **args)
    for order in ('inplace-first', 'other-first'):
        vs = [nn.Variable.from_numpy_array(x) for x in xs]
        h = F.identity(vs[0])
        if order == 'other-first':
            other = F.mul_scalar(h, 2.0)
            y = _fn(spec)(h, *vs[1:], **dict(args, inplace=True))
            outs = (other, y)
        else:
            y = _fn(spec)(h, *vs[1:], **dict(args, inplace=True))
            other = F.mul_scalar(h, 2.0)
            outs = (y, other)
        try:
            F.sink(*outs).forward()
        except ValueError as e:
            assert 'inplace' in str(e), e
            continue
        np.testing.assert_allclose(y.d, expect, rtol=1e-5, atol=1e-6, err_msg=order)
        np.testing.assert_allclose(other.d, 2 * xs[0], rtol=1e-6, err_msg=order)


@pytest.mark.parametrize('spec', POINTWISE, ids=lambda s: s.name)
def test_function_info(spec):
    entry = _entry(spec)
    args, domains = entry.cases[-1]
    rng = np.random.RandomState(0)
    vs = [nn.Variable.from_numpy_array(d(rng, (2, 3)), need_grad=False) for d in domains]
    y = _fn(spec)(*vs, **args)
    f = y.parent
    assert f.info.type_name == spec.type_name
    assert f.name == spec.type_name
    expected = dict(spec.defaults)
    expected.update(args)
    for k, v in expected.items():
        assert f.info.args[k] == v, (k, f.info.args)
    assert len(f.inputs) == spec.n_inputs
    assert y.need_grad is False


# --------------------------------------------------------------------------
# numerical stability
# --------------------------------------------------------------------------

EXTREMES = np.array([-1e4, -200.0, -90.0, -20.0, -1e-3, 0.0, 1e-3, 20.0, 90.0, 200.0, 1e4],
                    np.float32)


def _run(fn, x, **args):
    v = nn.Variable.from_numpy_array(x, need_grad=True)
    v.g = 0
    y = fn(v, **args)
    y.forward()
    y.backward(np.ones(x.shape, np.float32))
    return y.d.copy(), v.g.copy()


def test_sigmoid_extremes():
    y, g = _run(F.sigmoid, EXTREMES)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(g))
    assert y[0] == 0.0 and y[-1] == 1.0
    assert np.all((y >= 0) & (y <= 1))
    np.testing.assert_allclose(y, _sig(EXTREMES.astype(np.float64)), atol=1e-7, rtol=4e-6)
    assert g[0] == 0.0 and g[-1] == 0.0
    np.testing.assert_allclose(g[5], 0.25, rtol=1e-6)


def test_tanh_extremes():
    y, g = _run(F.tanh, EXTREMES)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(g))
    assert y[0] == -1.0 and y[-1] == 1.0 and y[1] == -1.0 and y[-2] == 1.0
    np.testing.assert_allclose(y, np.tanh(EXTREMES.astype(np.float64)), atol=1e-7, rtol=4e-6)
    assert g[0] == 0.0 and g[-1] == 0.0


def test_relu_extremes():
    x = np.array([-3e38, -1.0, 0.0, 1.0, 3e38, np.inf, -np.inf], np.float32)
    y, g = _run(F.relu, x)
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    np.testing.assert_array_equal(g, (x > 0).astype(np.float32))


def test_exp_log_extremes():
    y, _ = _run(F.exp, np.array([-200.0, 0.0, 88.0], np.float32))
    assert y[0] == 0.0 and y[1] == 1.0 and np.isfinite(y[2])
    y, _ = _run(F.log, np.array([1e-30, 1.0, 3e38], np.float32))
    np.testing.assert_allclose(y, np.log([1e-30, 1.0, 3e38]), rtol=4e-6)


STABLE = ['sigmoid', 'swish', 'softplus', 'log_sigmoid', 'gelu', 'elu', 'selu', 'tanh_shrink',
          'softsign', 'sinc', 'hard_sigmoid', 'hard_tanh', 'relu6', 'leaky_relu']


@pytest.mark.parametrize('name', STABLE)
def test_activation_extremes(name):
    """No overflow or NaN for |x| up to 1e4; values and gradients match the
    float64 references (which are evaluated stably)."""
    entry = REFS[name]
    fn = getattr(F, name)
    for args, _ in entry.cases:
        y, g = _run(fn, EXTREMES, **args)
        assert np.all(np.isfinite(y)) and np.all(np.isfinite(g)), (name, args, y, g)
        x64 = EXTREMES.astype(np.float64)
        want = entry.ref(x64, **args)
        np.testing.assert_allclose(y, want, atol=1e-6, rtol=4e-6, err_msg=name)
        gwant = entry.grad([x64], want, np.ones_like(x64), **args)[0]
        np.testing.assert_allclose(g, gwant, atol=1e-6, rtol=2e-5, err_msg=name)


def test_softplus_family_tails():
    """Deep tails keep their tiny values instead of rounding to 0 or 1."""
    x = np.array([-80.0, -30.0, 30.0, 80.0], np.float32)
    y, _ = _run(F.log_sigmoid, x)
    np.testing.assert_allclose(y, -np.logaddexp(0, -x.astype(np.float64)), rtol=4e-6)
    y, _ = _run(F.softplus, x)
    np.testing.assert_allclose(y, np.logaddexp(0, x.astype(np.float64)), rtol=4e-6)
    y, _ = _run(F.elu, np.array([-1e-6, -1e-3], np.float32))
    np.testing.assert_allclose(y, np.expm1([-1e-6, -1e-3]), rtol=4e-6)


def test_nan_propagates():
    x = np.array([np.nan, 1.0], np.float32)
    for spec in UNARY:
        if spec.name in ('relu',) or not _entry(spec).nan:
            continue   # max(nan, 0) is implementation-defined; NaN tests give numbers
        v = nn.Variable.from_numpy_array(x)
        y = _fn(spec)(v, **_entry(spec).cases[0][0])
        y.forward()
        if spec.name == 'r_pow_scalar' and _entry(spec).cases[0][0].get('val', 1.0) == 1.0:
            continue   # 1 ** nan is 1
        if spec.name == 'pow_scalar' and _entry(spec).cases[0][0].get('val', 1.0) == 0.0:
            continue
        assert np.isnan(y.d[0]), spec.name


# --------------------------------------------------------------------------
# float16 storage (type_config='half')
# --------------------------------------------------------------------------

HALF_TOL = dict(atol=2e-2, rtol=2e-2, fd_eps=3e-2, fd_atol=0.15, fd_rtol=0.1,
                grad_atol=3e-2, grad_rtol=3e-2)


@pytest.mark.parametrize('spec', POINTWISE, ids=lambda s: s.name)
def test_half_context(spec):
    """The whole checker under a float16-storage context, with half tolerances."""
    from nncy.ext_utils import get_extension_context
    entry = _entry(spec)
    args, domains = entry.cases[0]
    rng = np.random.RandomState(_seed(spec.name, 'half'))
    xs = [d(rng, (2, 3)) for d in domains]
    with nn.context_scope(get_extension_context('cpu', type_config='half')):
        tol = dict(HALF_TOL, check_fd=entry.tol.get('check_fd', True))
        check_function(_fn(spec), xs, _ref64(entry), args,
                       ref_grad=_ref_grad64(entry, spec.n_inputs), **tol)
