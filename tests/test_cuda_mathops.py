import numpy as np
import pytest
import nncy as nn
import nncy.functions as F
from cuda_check import CPU, CUDA, TOL, cupy, run, same  # noqa: F401  (cupy is an autouse fixture)


def _ties(rng, shape):
    """Small integers: many ties, so the index rule is exercised."""
    return rng.randint(-2, 3, size=shape).astype(np.float32)


def _both(fn, arrays, **kw):
    """The outputs of fn (a tuple of variables, no backward) under both contexts."""
    out = []
    for ctx in (CPU, CUDA):
        xs = [nn.Variable.from_numpy_array(a) for a in arrays]
        with nn.context_scope(ctx):
            ys = fn(*xs)
        ys = ys if isinstance(ys, tuple) else (ys,)
        F.sink(*ys).forward() if len(ys) > 1 else ys[0].forward()
        out.append([y.d.copy() for y in ys])
    return out


# ---------------------------------------------------------------------------
# max, min

AXES = [None, 1, -1, (0, 1), (1, 2), (2, 0), (0, 2, 1)]


@pytest.mark.parametrize('op', [F.max, F.min])
@pytest.mark.parametrize('axis', AXES, ids=str)
@pytest.mark.parametrize('keepdims', [False, True])
def test_extreme(rng, op, axis, keepdims):
    x = _ties(rng, (3, 4, 5))
    same(lambda v: op(v, axis=axis, keepdims=keepdims), [x])


@pytest.mark.parametrize('op', [F.max, F.min])
@pytest.mark.parametrize('axis', [None, 1, (2, 0)], ids=str)
def test_extreme_with_index(rng, op, axis):
    x = _ties(rng, (3, 4, 5))
    (vc, ic), (vg, ig) = _both(lambda v: op(v, axis=axis, with_index=True), [x])
    np.testing.assert_array_equal(vg, vc)
    assert ig.dtype == ic.dtype == np.int64
    np.testing.assert_array_equal(ig, ic)
    # the gradient flows through the values; the index output is ignored
    same(lambda v: op(v, axis=axis, with_index=True)[0], [x])


@pytest.mark.parametrize('op', [F.max, F.min])
@pytest.mark.parametrize('axis', [None, 0, (1, 2), (2, 0)], ids=str)
def test_extreme_only_index(rng, op, axis):
    x = _ties(rng, (3, 4, 5))
    (ic,), (ig,) = _both(lambda v: op(v, axis=axis, only_index=True, keepdims=True), [x])
    assert ig.dtype == ic.dtype == np.int64
    np.testing.assert_array_equal(ig, ic)


def test_extreme_only_index_gradient_is_zero(rng):
    x = rng.randn(3, 4).astype(np.float32)
    # added to a value output, so the only_index node runs backward (into
    # zero first, then accumulated into)
    same(lambda v: F.add2(F.max(v, axis=1, only_index=True), F.min(v, axis=1)), [x])
    same(lambda v: F.add2(F.min(v, axis=1), F.max(v, axis=1, only_index=True)), [x])


@pytest.mark.parametrize('op', [F.max, F.min])
def test_extreme_nan(op):
    x = np.array([[np.nan, 1, 3, 3], [np.nan] * 4, [-np.inf, np.nan, -np.inf, 2],
                  [np.inf, np.inf, np.nan, -np.inf]], np.float32)
    for axis in (1, 0):
        (vc, ic), (vg, ig) = _both(lambda v: op(v, axis=axis, with_index=True), [x])
        np.testing.assert_array_equal(vg, vc)
        np.testing.assert_array_equal(ig, ic)
        same(lambda v: op(v, axis=axis), [x])
        same(lambda v: op(v, axis=axis, with_index=True)[0], [x])


@pytest.mark.parametrize('op', [F.max, F.min])
@pytest.mark.parametrize('shape,axis', [((300,), None), ((2, 130, 3), 1), ((3, 70), 1),
                                        ((70, 3, 2), (0, 2))], ids=str)
def test_extreme_long_lines(rng, op, shape, axis):
    """Lines of 64 and more are reduced by a block each."""
    x = _ties(rng, shape)
    x.flat[rng.randint(x.size, size=5)] = np.nan
    same(lambda v: op(v, axis=axis), [x])
    (vc, ic), (vg, ig) = _both(lambda v: op(v, axis=axis, with_index=True), [x])
    np.testing.assert_array_equal(ig, ic)
    np.testing.assert_array_equal(vg, vc)
    same(lambda v: op(v, axis=axis, with_index=True)[0], [x])


@pytest.mark.parametrize('op', [F.max, F.min])
@pytest.mark.parametrize('axis', [1, (2, 0)], ids=str)
def test_extreme_accumulates(rng, op, axis):
    x = _ties(rng, (3, 4, 5))
    same(lambda v: F.add2(op(v, axis=axis), op(v, axis=axis)), [x])


def test_extreme_empty(rng):
    x = np.zeros((0, 3), np.float32)
    same(lambda v: F.max(v, axis=1), [x])
    same(lambda v: F.min(v, axis=1, with_index=True)[0], [x])
    with pytest.raises(ValueError, match='zero elements'):
        with nn.context_scope(CUDA):
            F.max(nn.Variable((3, 0)), axis=1)


# ---------------------------------------------------------------------------
# prod

def _with_zeros(rng, shape):
    x = rng.uniform(0.5, 1.5, size=shape).astype(np.float32)
    x *= rng.choice([-1, 1], size=shape)
    x.flat[[1, 7, 8, 30]] = 0     # lines with one and with two zeros
    return x


@pytest.mark.parametrize('axis', AXES + [()], ids=str)
@pytest.mark.parametrize('keepdims', [False, True])
def test_prod(rng, axis, keepdims):
    x = _with_zeros(rng, (3, 4, 5))
    same(lambda v: F.prod(v, axis=axis, keepdims=keepdims), [x])


@pytest.mark.parametrize('axis', [1, (2, 0)], ids=str)
def test_prod_accumulates(rng, axis):
    x = _with_zeros(rng, (3, 4, 5))
    same(lambda v: F.add2(F.prod(v, axis=axis), F.prod(v, axis=axis)), [x])


def test_prod_empty():
    x = np.zeros((2, 0, 3), np.float32)
    same(lambda v: F.prod(v, axis=1), [x])          # products of nothing: 1
    same(lambda v: F.prod(v, axis=(0, 2)), [x])     # no products at all


# ---------------------------------------------------------------------------
# reduce_sum, reduce_mean

@pytest.mark.parametrize('op', [F.reduce_sum, F.reduce_mean])
@pytest.mark.parametrize('shape', [(), (7,), (3, 4, 5)], ids=str)
def test_reduce_all(rng, op, shape):
    x = np.asarray(rng.randn(*shape), np.float32)
    same(op, [x])
    same(lambda v: F.add2(op(v), op(v)), [x])


# ---------------------------------------------------------------------------
# add_n, mul_n

@pytest.mark.parametrize('op', [F.add_n, F.mul_n])
def test_nary(rng, op):
    xs = [rng.randn(3, 4).astype(np.float32) for _ in range(3)]
    xs[1][0, :2] = 0
    xs[2][0, 1] = 0       # a zero in two inputs at one place
    same(op, xs)
    same(lambda a, b, c: op(a, b, a, c), xs)               # a variable given twice
    same(op, xs, need_grad=[True, False, True])
    same(lambda a, b, c: F.add2(op(a, b), op(b, c)), xs)   # accumulation across nodes


# ---------------------------------------------------------------------------
# where

@pytest.mark.parametrize('cshape', [(2, 3, 4), (2, 3), (2,), ()], ids=str)
def test_where(rng, cshape):
    c = rng.randint(-1, 2, size=cshape).astype(np.float32)
    if c.size:
        c.flat[0] = np.nan        # counts as true
    t, f = (rng.randn(2, 3, 4).astype(np.float32) for _ in range(2))
    same(F.where, [c, t, f])
    same(F.where, [c, t, f], need_grad=[True, False, True])
    same(lambda a, b, d: F.add2(F.where(a, b, d), F.where(a, d, b)), [c, t, f])


# ---------------------------------------------------------------------------
# constant, arange

@pytest.mark.parametrize('shape', [(), (0,), (2, 3)], ids=str)
def test_constant(shape):
    ref, _ = run(CPU, lambda: F.constant(-1.5, shape), [], backward=False)
    got, _ = run(CUDA, lambda: F.constant(-1.5, shape), [], on_gpu=True, backward=False)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize('args', [(0, 10, 1), (0.1, 3.3, 0.1), (5, -2.5, -0.7), (1, 1, 1),
                                  (-3, 1000, 0.37)], ids=str)
def test_arange(args):
    ref, _ = run(CPU, lambda: F.arange(*args), [], backward=False)
    got, _ = run(CUDA, lambda: F.arange(*args), [], on_gpu=True, backward=False)
    np.testing.assert_array_equal(got, ref)    # the same accumulation: exact


def test_constant_in_graph(rng):
    x = rng.randn(2, 3).astype(np.float32)
    same(lambda v: F.add2(v, F.constant(2.0, (2, 3))), [x])


# ---------------------------------------------------------------------------
# matrix_diag, matrix_diag_part

@pytest.mark.parametrize('shape', [(4,), (2, 3), (2, 1, 3), (2, 0)], ids=str)
def test_matrix_diag(rng, shape):
    x = rng.randn(*shape).astype(np.float32)
    same(F.matrix_diag, [x])
    same(lambda v: F.add2(F.matrix_diag(v), F.matrix_diag(v)), [x])


@pytest.mark.parametrize('shape', [(4, 4), (2, 3, 3), (2, 1, 2, 2), (1, 1)], ids=str)
def test_matrix_diag_part(rng, shape):
    x = rng.randn(*shape).astype(np.float32)
    same(F.matrix_diag_part, [x])
    same(lambda v: F.add2(F.matrix_diag_part(v), F.matrix_diag_part(v)), [x])
    same(lambda v: F.matrix_diag(F.matrix_diag_part(v)), [x])


# ---------------------------------------------------------------------------
# crelu, celu (composite rows)

@pytest.mark.parametrize('axis', [0, 1, -1], ids=str)
def test_crelu_celu(rng, axis):
    x = rng.randn(2, 3, 4).astype(np.float32)
    same(lambda v: F.crelu(v, axis=axis), [x])
    same(lambda v: F.celu(v, alpha=0.7, axis=axis), [x])
    same(lambda v: F.add2(F.crelu(v, axis), F.crelu(v, axis)), [x])
    same(lambda v: F.add2(F.celu(v, 1.3, axis), F.celu(v, 1.3, axis)), [x])


def test_crelu_outputs_on_device(rng, cupy):
    v = nn.Variable.from_numpy_array(rng.randn(2, 3).astype(np.float32))
    with nn.context_scope(CUDA), nn.auto_forward():
        y = F.crelu(v)
    assert isinstance(y.data.data, cupy.ndarray)
