"""Checker runs and argument errors for the structured reduction, arithmetic,
logical and math functions: max, min, prod, reduce_sum, reduce_mean, add_n,
mul_n, where, constant, arange, matrix_diag, matrix_diag_part and
batch_matmul; plus behaviour of pointwise ones that the generic pointwise
tests do not pin down (round's halves, sign at zero, NaN in comparisons) and
the comparison and ``@`` operators of Variable and NdArray."""
import numpy as np
import pytest

import nncy as nn
import nncy.functions as F

from checker import check_function, check_raises

R = np.random.RandomState(11)


def randn(*shape, scale=1.0):
    return np.asarray(R.randn(*shape) * scale, dtype=np.float32).reshape(shape)


def distinct(*shape, gap=0.05):
    """Values at least ``gap`` apart (finite differences never swap an extreme)."""
    n = int(np.prod(shape))
    v = (np.arange(n) - n / 2) * gap
    return np.asarray(R.permutation(v), dtype=np.float32).reshape(shape)


def _norm_axes(axis, ndim):
    if axis is None:
        return list(range(ndim))
    if isinstance(axis, int):
        axis = (axis,)
    return [a % ndim for a in axis]


def _reduced(shape, axes, keepdims):
    if keepdims:
        return tuple(1 if i in axes else s for i, s in enumerate(shape))
    return tuple(s for i, s in enumerate(shape) if i not in axes)


# --------------------------------------------------------------------------
# max / min
# --------------------------------------------------------------------------

def extreme_ref(op):
    """max / min from NumPy; the index is the flat index within the reduced
    axes taken in the order given (kept axes first after a transpose)."""
    def ref(x, axis=None, keepdims=False, with_index=False, only_index=False):
        x = x.astype(np.float64)
        axes = _norm_axes(axis, x.ndim)
        kept = [i for i in range(x.ndim) if i not in axes]
        t = x.transpose(kept + axes).reshape([x.shape[i] for i in kept] + [-1])
        val = (t.max if op == 'max' else t.min)(axis=-1)
        idx = (t.argmax if op == 'max' else t.argmin)(axis=-1)
        out = _reduced(x.shape, axes, keepdims)
        val, idx = val.reshape(out), idx.reshape(out)
        if only_index:
            return idx
        return (val, idx) if with_index else val
    return ref


AXES = [None, 0, 1, 2, -1, -3, (0, 2), (2, 0), (-1, 1), (1, 0), (0, 1, 2), (2, 1, 0), ()]


@pytest.mark.parametrize('op', ['max', 'min'])
@pytest.mark.parametrize('keepdims', [False, True])
@pytest.mark.parametrize('axis', AXES, ids=str)
def test_max_min(op, axis, keepdims):
    x = distinct(2, 3, 4)
    fn = getattr(F, op)
    args = {'axis': axis, 'keepdims': keepdims}
    check_function(fn, [x], extreme_ref(op), args, atol=0, rtol=0)
    res = check_function(fn, [x], extreme_ref(op), dict(args, with_index=True), atol=0, rtol=0,
                         check_clear_buffer=(axis == 1))
    assert res.outputs[1].dtype == np.int64
    check_function(fn, [x], extreme_ref(op), dict(args, only_index=True), atol=0, rtol=0,
                   check_clear_buffer=False)


@pytest.mark.parametrize('op', ['max', 'min'])
@pytest.mark.parametrize('shape,axis', [((7,), None), ((5, 1), 0), ((3, 40), 1), ((40, 3), 0),
                                        ((2, 20, 17), 1), ((), None), ((4, 3, 5), (0, 2))],
                         ids=str)
def test_max_min_shapes(op, shape, axis):
    x = distinct(*shape)
    check_function(getattr(F, op), [x], extreme_ref(op), {'axis': axis, 'with_index': True},
                   atol=0, rtol=0, check_clear_buffer=False)


def test_max_min_ties_nan_and_defaults():
    x = np.array([[1.0, 3.0, 3.0, -1.0], [np.nan, 2.0, np.nan, 2.0], [np.nan] * 4],
                 np.float32)
    v = nn.Variable.from_numpy_array(x, need_grad=True)
    y, i = F.max(v, axis=1, with_index=True)
    m, j = F.min(v, axis=1, with_index=True)
    F.sink(y, i, m, j).forward()
    # the first extreme wins; NaN is skipped unless everything is NaN
    np.testing.assert_array_equal(i.d, [1, 1, 0])
    np.testing.assert_array_equal(y.d[:2], [3.0, 2.0])
    assert np.isnan(y.d[2])
    np.testing.assert_array_equal(j.d, [3, 1, 0])
    v.g = 0
    y.backward(np.ones(3, np.float32))
    np.testing.assert_array_equal(v.g, [[0, 1, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0]])
    # defaults: all axes, a scalar
    assert F.max(v).shape == () and F.min(v, keepdims=True).shape == (1, 1)
    assert F.max(v, only_index=True).parent.info.args['only_index'] is True
    # values beyond NNabla's -1e8 start value
    big = nn.Variable.from_numpy_array(np.array([-3e8, -2e8], np.float32))
    with nn.auto_forward():
        yb, ib = F.max(big, with_index=True)
    assert yb.d == np.float32(-2e8) and ib.d == 1


def test_max_imperative_with_index():
    x = distinct(3, 5)
    y, i = F.max(nn.NdArray.from_numpy_array(x), axis=1, with_index=True)
    assert isinstance(y, nn.NdArray) and isinstance(i, nn.NdArray)
    np.testing.assert_array_equal(i.data, x.argmax(1))
    only = F.min(nn.NdArray.from_numpy_array(x), axis=0, only_index=True)
    np.testing.assert_array_equal(only.data, x.argmin(0))


def test_max_min_bad_arguments():
    x = randn(2, 3)
    for fn in (F.max, F.min):
        check_raises(fn, [x], {'axis': 2}, exc=ValueError, match_words=['axis'])
        check_raises(fn, [x], {'axis': (0, -2)}, exc=ValueError, match_words=['axis'])
        check_raises(fn, [x], {'axis': 'rows'}, exc=TypeError, match_words=['axis'])
        check_raises(fn, [x], {'with_index': 'yes'}, exc=TypeError, match_words=['with_index'])
        check_raises(fn, [np.zeros((2, 0), np.float32)], {'axis': 1}, exc=ValueError,
                     match_words=['axis'])


# --------------------------------------------------------------------------
# prod, reduce_sum, reduce_mean
# --------------------------------------------------------------------------

def prod_ref(x, axis=None, keepdims=False):
    return np.prod(x.astype(np.float64), axis=None if axis is None else tuple(np.atleast_1d(axis)),
                   keepdims=keepdims)


def prod_grad_ref(x, dy, axis=None, keepdims=False):
    """Exclusive products, from the definition (no division)."""
    x64 = x.astype(np.float64)
    axes = _norm_axes(axis, x.ndim)
    dyk = dy.astype(np.float64).reshape(_reduced(x.shape, axes, True))
    g = np.empty_like(x64)
    for idx in np.ndindex(*x.shape):
        sel = tuple(slice(None) if i in axes else idx[i] for i in range(x.ndim))
        block = np.array(x64[sel])
        pos = tuple(idx[i] for i in range(x.ndim) if i in axes)
        block[pos] = 1.0
        g[idx] = np.prod(block) * dyk[tuple(0 if i in axes else idx[i] for i in range(x.ndim))]
    return [g]


def signed_uniform(*shape):
    mag = R.uniform(0.6, 1.4, size=shape)
    return np.asarray(mag * np.where(R.rand(*shape) < 0.5, -1, 1), np.float32).reshape(shape)


@pytest.mark.parametrize('keepdims', [False, True])
@pytest.mark.parametrize('axis', [None, 0, 1, 2, -1, (0, 2), (2, 0), (0, 1, 2), ()], ids=str)
def test_prod(axis, keepdims):
    x = signed_uniform(2, 3, 4)
    check_function(F.prod, [x], prod_ref, {'axis': axis, 'keepdims': keepdims},
                   ref_grad=lambda x, dy, **a: prod_grad_ref(x, dy, **a))


@pytest.mark.parametrize('axis', [None, 1, (0, 2)], ids=str)
def test_prod_gradient_with_zeros(axis):
    """One and two zeros in a reduced group: the gradient is exact (no x / 0)."""
    x = signed_uniform(2, 3, 4)
    x[0, 1, 2] = 0.0
    x[1, 0, 0] = 0.0
    x[1, 2, 0] = 0.0
    res = check_function(F.prod, [x], prod_ref, {'axis': axis},
                         ref_grad=lambda x, dy, **a: prod_grad_ref(x, dy, **a))
    assert np.all(np.isfinite(res.grads[0]))


def test_reduce_sum_mean():
    for shape in [(2, 3, 4), (5,), ()]:
        x = randn(*shape)
        check_function(F.reduce_sum, [x], lambda x: np.sum(x.astype(np.float64)))
        check_function(F.reduce_mean, [x], lambda x: np.mean(x.astype(np.float64)))
    assert F.reduce_sum(nn.Variable((2, 3))).shape == ()


def test_reductions_accurate_on_a_million():
    """float32 accumulation within 1e-5 relative of float64 on 1e6 elements."""
    rng = np.random.RandomState(3)
    x = rng.uniform(0.0, 1.0, 1000000).astype(np.float32)
    p = (1 + rng.randn(1000000) * 1e-3).astype(np.float32)
    x64, p64 = x.astype(np.float64), p.astype(np.float64)
    cases = [(F.sum, x, x64.sum()), (F.mean, x, x64.mean()), (F.reduce_sum, x, x64.sum()),
             (F.reduce_mean, x, x64.mean()), (F.prod, p, np.prod(p64))]
    for fn, a, want in cases:
        y = fn(nn.NdArray.from_numpy_array(a))
        assert abs(float(y.data) - want) <= 1e-5 * abs(want), (fn.__name__, float(y.data), want)
    for fn, npf in ((F.max, np.argmax), (F.min, np.argmin)):
        v, i = fn(nn.NdArray.from_numpy_array(x), with_index=True)
        assert int(i.data) == npf(x) and float(v.data) == x[npf(x)]
        v, i = fn(nn.NdArray.from_numpy_array(x.reshape(1000, 1000)), axis=0, with_index=True)
        np.testing.assert_array_equal(i.data, npf(x.reshape(1000, 1000), axis=0))


def test_prod_bad_arguments():
    check_raises(F.prod, [randn(2, 3)], {'axis': 3}, exc=ValueError, match_words=['axis'])
    check_raises(F.prod, [randn(2, 3)], {'axis': (1, 1)}, exc=ValueError, match_words=['axis'])


# --------------------------------------------------------------------------
# add_n, mul_n
# --------------------------------------------------------------------------

def _mul_grads(*args):
    n = len(args) - 1
    xs, dy = [a.astype(np.float64) for a in args[:n]], args[n].astype(np.float64)
    return [dy * np.prod([x for j, x in enumerate(xs) if j != i], axis=0) for i in range(n)]


@pytest.mark.parametrize('n', [2, 3, 4])
def test_add_n_mul_n(n):
    xs = [randn(2, 3) for _ in range(n)]
    check_function(F.add_n, xs, lambda *xs: np.sum([x.astype(np.float64) for x in xs], axis=0),
                   ref_grad=lambda *a: [a[n].astype(np.float64)] * n)
    xs[0][0, 1] = 0.0   # a zero: the other inputs' gradients see it, its own does not
    check_function(F.mul_n, xs, lambda *xs: np.prod([x.astype(np.float64) for x in xs], axis=0),
                   ref_grad=lambda *a: _mul_grads(*a))


def test_add_n_mul_n_repeated_input():
    a = randn(4)
    for fn, want in ((F.add_n, lambda x: 3 * np.ones_like(x)), (F.mul_n, lambda x: 3 * x * x)):
        v = nn.Variable.from_numpy_array(a, need_grad=True)
        v.g = 0
        h = F.identity(v)
        y = fn(h, h, h)
        y.forward()
        y.backward(np.ones(4, np.float32))
        np.testing.assert_allclose(v.g, want(a.astype(np.float64)), rtol=1e-6)


def test_add_n_mul_n_bad_arguments():
    for fn in (F.add_n, F.mul_n):
        check_raises(fn, [randn(2, 3), randn(3, 2)], exc=ValueError, match_words=['x', '(3, 2)'])
        check_raises(fn, [], exc=ValueError, match_words=['x', '2'])
        check_raises(fn, [randn(3)], exc=ValueError, match_words=['x', '2'])
        check_raises(fn, [randn(2), 'x'], exc=TypeError)


# --------------------------------------------------------------------------
# where
# --------------------------------------------------------------------------

def where_ref(c, t, f):
    c = c.reshape(c.shape + (1,) * (t.ndim - c.ndim))
    return np.where(c != 0, t, f).astype(np.float64)


@pytest.mark.parametrize('cshape,xshape', [((2, 3), (2, 3)), ((2, 3), (2, 3, 4)), ((), (3,)),
                                           ((4,), (4, 2, 2)), ((), ())], ids=str)
def test_where(cshape, xshape):
    c = np.asarray(R.choice([0.0, 1.0, -2.0, 0.5], size=cshape), np.float32).reshape(cshape)
    t, f = randn(*xshape), randn(*xshape)
    check_function(F.where, [c, t, f], where_ref, grad_inputs=[False, True, True])


def test_where_condition_gets_zero_gradient():
    c = np.array([0.0, 1.0, np.nan], np.float32)   # NaN counts as true
    cv = nn.Variable.from_numpy_array(c, need_grad=True)
    t = nn.Variable.from_numpy_array(np.ones(3, np.float32), need_grad=True)
    f = nn.Variable.from_numpy_array(-np.ones(3, np.float32), need_grad=True)
    y = F.where(F.identity(cv), t, f)
    y.forward()
    np.testing.assert_array_equal(y.d, [-1, 1, 1])
    for v in (cv, t, f):
        v.g = 0
    y.backward(np.full(3, 2.0, np.float32))
    np.testing.assert_array_equal(cv.g, 0)
    np.testing.assert_array_equal(t.g, [0, 2, 2])
    np.testing.assert_array_equal(f.g, [2, 0, 0])


def test_where_bad_arguments():
    check_raises(F.where, [randn(2), randn(2, 3), randn(2, 4)], exc=ValueError,
                 match_words=['x_false'])
    check_raises(F.where, [randn(3), randn(2, 3), randn(2, 3)], exc=ValueError,
                 match_words=['condition'])
    check_raises(F.where, [randn(2, 3, 1), randn(2, 3), randn(2, 3)], exc=ValueError,
                 match_words=['condition'])


# --------------------------------------------------------------------------
# constant, arange
# --------------------------------------------------------------------------

def test_constant():
    check_function(F.constant, [], lambda val=0.0, shape=(): np.full(shape, val),
                   {'val': 2.5, 'shape': (2, 3)})
    y = F.constant()
    y.forward()
    assert y.shape == () and y.d == 0 and y.d.dtype == np.float32
    with nn.auto_forward():
        z = F.constant(-1, [4])
    np.testing.assert_array_equal(z.d, -np.ones(4))
    assert z.parent.info.args == {'val': -1.0, 'shape': (4,)}
    check_raises(F.constant, [], {'shape': (2, -1)}, exc=ValueError, match_words=['shape'])
    check_raises(F.constant, [], {'val': 'a'}, exc=TypeError, match_words=['val'])


def arange_ref(start, stop, step=1.0):
    """NNabla's arange: the value accumulated in float32, step after step."""
    f = np.float32
    out, v = [], f(start)
    while (step > 0 and v < f(stop)) or (step < 0 and v > f(stop)):
        out.append(v)
        v = f(v + f(step))
    return np.array(out, np.float64)


@pytest.mark.parametrize('args', [(0, 5), (0, 5, 2), (1.5, -2, -0.5), (0, 2.5, 0.1), (3, 1),
                                  (-1, 1, 0.3), (0, 1000, 0.7)], ids=str)
def test_arange(args):
    names = ('start', 'stop', 'step')
    kw = dict(zip(names, args))
    check_function(F.arange, [], lambda **a: arange_ref(**a), kw, atol=0, rtol=0)
    assert F.arange(*args).shape == arange_ref(*args).shape


def test_arange_bad_arguments():
    check_raises(F.arange, [], {'start': 0, 'stop': 1, 'step': 0}, exc=ValueError,
                 match_words=['step'])
    check_raises(F.arange, [], {'start': 0, 'stop': float('inf')}, exc=ValueError,
                 match_words=['stop'])
    check_raises(F.arange, [], {'start': 0, 'stop': 1e12, 'step': 1e-3}, exc=ValueError,
                 match_words=['step'])
    # float32 accumulation that stalls: an endless range in NNabla, an error here
    check_raises(F.arange, [], {'start': 1e8, 'stop': 1e8 + 100, 'step': 1}, exc=ValueError,
                 match_words=['step'])
    check_raises(F.arange, [], {'stop': 1}, exc=TypeError, match_words=['start'])


# --------------------------------------------------------------------------
# matrix_diag, matrix_diag_part
# --------------------------------------------------------------------------

@pytest.mark.parametrize('shape', [(3,), (2, 3), (2, 2, 4), (1,), (0, 3)], ids=str)
def test_matrix_diag(shape):
    x = randn(*shape)
    check_function(F.matrix_diag, [x],
                   lambda x: x[..., :, None].astype(np.float64) * np.eye(x.shape[-1]))


@pytest.mark.parametrize('shape', [(3, 3), (2, 4, 4), (2, 1, 2, 2), (1, 1)], ids=str)
def test_matrix_diag_part(shape):
    x = randn(*shape)
    check_function(F.matrix_diag_part, [x],
                   lambda x: np.diagonal(x, axis1=-2, axis2=-1).astype(np.float64))


def test_matrix_diag_bad_arguments():
    check_raises(F.matrix_diag, [np.ones((), np.float32)], exc=ValueError, match_words=['x'])
    check_raises(F.matrix_diag_part, [randn(3)], exc=ValueError, match_words=['x'])
    check_raises(F.matrix_diag_part, [randn(2, 3, 4)], exc=ValueError, match_words=['x'])


# --------------------------------------------------------------------------
# batch_matmul
# --------------------------------------------------------------------------

def bmm_ref(a, b, transpose_a=False, transpose_b=False):
    a, b = a.astype(np.float64), b.astype(np.float64)
    if transpose_a:
        a = np.swapaxes(a, -1, -2)
    if transpose_b:
        b = np.swapaxes(b, -1, -2)
    return a @ b


BMM_CASES = [
    ((2, 3, 4), (2, 4, 5)),
    ((3, 4), (4, 5)),
    ((2, 1, 3, 4), (1, 3, 4, 2)),   # both broadcast
    ((4, 3, 4), (4, 2)),            # b shared by every batch
    ((3, 4), (2, 2, 4, 3)),         # a shared, fewer dimensions
    ((1, 3, 4), (5, 4, 2)),
    ((2, 1, 3, 4), (2, 3, 4, 2)),   # a's batch strides cannot be merged: copied
    ((2, 3, 0), (2, 0, 4)),         # empty inner dimension: zeros
]


@pytest.mark.parametrize('ta', [False, True])
@pytest.mark.parametrize('tb', [False, True])
@pytest.mark.parametrize('sa,sb', BMM_CASES, ids=str)
def test_batch_matmul(sa, sb, ta, tb):
    a, b = randn(*sa), randn(*sb)
    if ta:
        a = np.ascontiguousarray(np.swapaxes(a, -1, -2))
    if tb:
        b = np.ascontiguousarray(np.swapaxes(b, -1, -2))
    check_function(F.batch_matmul, [a, b], bmm_ref, {'transpose_a': ta, 'transpose_b': tb},
                   atol=2e-5, rtol=2e-5, fd_atol=1e-2, fd_rtol=1e-2, fd_max_elems=12)


def test_batch_matmul_larger():
    a, b = randn(3, 40, 70), randn(3, 70, 50, scale=0.2)
    check_function(F.batch_matmul, [a, b], bmm_ref, atol=1e-4, rtol=1e-4, fd_max_elems=4,
                   fd_atol=2e-2, fd_rtol=2e-2, check_clear_buffer=False)


def test_batch_matmul_bad_arguments():
    check_raises(F.batch_matmul, [randn(2, 3, 4), randn(2, 5, 6)], exc=ValueError,
                 match_words=['b'])
    check_raises(F.batch_matmul, [randn(4), randn(4, 2)], exc=ValueError, match_words=['a'])
    check_raises(F.batch_matmul, [randn(2, 3, 4), randn(3, 4, 2)], exc=ValueError,
                 match_words=['batch'])
    check_raises(F.batch_matmul, [randn(3, 4), randn(3, 2)], {'transpose_a': 1.5},
                 exc=TypeError, match_words=['transpose_a'])


# --------------------------------------------------------------------------
# pointwise details
# --------------------------------------------------------------------------

def _eval(fn, x, **args):
    with nn.auto_forward():
        return fn(nn.Variable.from_numpy_array(np.asarray(x, np.float32)), **args).d


def test_round_halves_away_from_zero():
    x = [-2.5, -1.5, -0.5, -0.49999997, 0.5, 1.5, 2.5, 0.49999997, 3.7]
    np.testing.assert_array_equal(_eval(F.round, x), [-3, -2, -1, 0, 1, 2, 3, 0, 4])
    np.testing.assert_array_equal(_eval(F.ceil, [-1.5, -0.0, 0.2]), [-1, 0, 1])
    np.testing.assert_array_equal(_eval(F.floor, [-1.5, 0.0, 0.2]), [-2, 0, 0])


def test_sign_alpha_and_nan():
    np.testing.assert_array_equal(_eval(F.sign, [-2.0, 0.0, 3.0]), [-1, 1, 1])
    np.testing.assert_array_equal(_eval(F.sign, [-2.0, 0.0, 3.0], alpha=0.0), [-1, 0, 1])
    assert _eval(F.sign, [np.nan], alpha=0.5)[0] == 0.5


def test_logical_with_nan_and_infinity():
    nan = np.nan
    a = [nan, nan, 1.0, np.inf]
    b = [nan, 1.0, nan, np.inf]
    with nn.auto_forward():
        va, vb = (nn.Variable.from_numpy_array(np.array(v, np.float32)) for v in (a, b))
        np.testing.assert_array_equal(F.equal(va, vb).d, [0, 0, 0, 1])
        np.testing.assert_array_equal(F.not_equal(va, vb).d, [1, 1, 1, 0])
        np.testing.assert_array_equal(F.greater_equal(va, vb).d, [0, 0, 0, 1])
        np.testing.assert_array_equal(F.logical_and(va, vb).d, [1, 1, 1, 1])   # NaN is true
        np.testing.assert_array_equal(F.logical_xor_scalar(va, True).d, [0, 0, 0, 0])
        np.testing.assert_array_equal(F.logical_not(va).d, [0, 0, 0, 0])
        np.testing.assert_array_equal(F.isinf(va).d, [0, 0, 0, 1])
        np.testing.assert_array_equal(F.reset_inf(va, val=5).d[2:], [1, 5])
        np.testing.assert_array_equal(F.maximum2(va, vb).d[1:], [1, nan, np.inf])


def test_logical_scalar_val_is_required():
    x = nn.Variable((2,))
    for fn in (F.logical_and_scalar, F.logical_or_scalar, F.logical_xor_scalar):
        with pytest.raises(TypeError, match=fn.__name__):
            fn(x)
        check_raises(fn, [randn(2)], {'val': 'yes'}, exc=TypeError, match_words=['val'])
    assert F.logical_or_scalar(x, False).parent.info.args == {'val': False}


# --------------------------------------------------------------------------
# operators
# --------------------------------------------------------------------------

def test_comparison_operators():
    a, b = randn(2, 3), randn(2, 3)
    a[0, 0] = b[0, 0]
    cases = [(lambda x, y: x < y, 'Less', np.less), (lambda x, y: x <= y, 'LessEqual',
             np.less_equal), (lambda x, y: x > y, 'Greater', np.greater),
             (lambda x, y: x >= y, 'GreaterEqual', np.greater_equal)]
    for op, type_name, npop in cases:
        x, y = nn.Variable.from_numpy_array(a), nn.Variable.from_numpy_array(b)
        z = op(x, y)
        assert z.parent.info.type_name == type_name
        z.forward()
        np.testing.assert_array_equal(z.d, npop(a, b))
        s = op(x, 0.25)
        assert s.parent.info.type_name == type_name + 'Scalar'
        assert s.parent.info.args['val'] == 0.25
        s.forward()
        np.testing.assert_array_equal(s.d, npop(a, np.float32(0.25)))
        r = op(0.25, x)      # reflected: 0.25 < x is x > 0.25
        r.forward()
        np.testing.assert_array_equal(r.d, npop(np.float32(0.25), a))
        nd = op(nn.NdArray.from_numpy_array(a), nn.NdArray.from_numpy_array(b))
        assert isinstance(nd, nn.NdArray)
        np.testing.assert_array_equal(nd.data, npop(a, b))
        np.testing.assert_array_equal(op(nn.NdArray.from_numpy_array(a), 1).data, npop(a, 1))
    x = nn.Variable.from_numpy_array(a)
    with pytest.raises(TypeError):
        x < 'a'
    # == and != compare identity; variables and arrays stay hashable
    y = nn.Variable.from_numpy_array(a)
    assert (x == x) is True and (x == y) is False and (x != y) is True
    nd = nn.NdArray((2,))
    assert nd == nd and nd != nn.NdArray((2,))
    assert len({x, y, x}) == 2 and len({nd, nd}) == 1


def test_matmul_operator_batched():
    a, b = randn(2, 3, 4), randn(4, 5)
    x, w = nn.Variable.from_numpy_array(a), nn.Variable.from_numpy_array(b)
    y = x @ w
    assert y.parent.info.type_name == 'BatchMatmul'
    y.forward()
    np.testing.assert_allclose(y.d, a @ b, rtol=1e-5, atol=1e-5)
    z = nn.NdArray.from_numpy_array(a) @ nn.NdArray.from_numpy_array(b)
    np.testing.assert_allclose(z.data, a @ b, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match='@'):
        x @ nn.Variable.from_numpy_array(randn(4))
