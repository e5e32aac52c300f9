"""Checker runs and argument errors for the structured and composite core
functions: affine, sum, mean, softmax, log_softmax, softmax_cross_entropy,
identity, reshape, slice and sink."""
import numpy as np
import pytest

import nncy as nn
import nncy.functions as F

from checker import check_function, check_raises

R = np.random.RandomState(7)


def randn(*shape, scale=1.0):
    return np.asarray(R.randn(*shape) * scale, dtype=np.float32).reshape(shape)


# --------------------------------------------------------------------------
# affine
# --------------------------------------------------------------------------

def affine_ref(x, w, b=None, base_axis=1):
    outer = x.shape[:base_axis]
    x2 = x.astype(np.float64).reshape(int(np.prod(outer)), -1)
    w2 = w.astype(np.float64).reshape(w.shape[0], -1)
    y = x2 @ w2
    if b is not None:
        y = y + b.astype(np.float64).reshape(-1)
    return y.reshape(outer + w.shape[1:])


AFFINE_CASES = [
    # x shape, w shape, b shape (None: no bias), base_axis
    ((3, 5), (5, 4), (4,), 1),
    ((3, 5), (5, 4), None, 1),
    ((1, 7), (7, 1), (1,), 1),
    ((2, 3, 4), (12, 6), (6,), 1),
    ((2, 3, 4, 5), (20, 6), (6,), 2),
    ((2, 3, 4, 5), (20, 6), None, 2),
    ((2, 3, 4), (12, 2, 3), (2, 3), 1),
    ((2, 3, 4), (4, 2, 3), None, 2),
]


@pytest.mark.parametrize('xs,ws,bs,base_axis', AFFINE_CASES, ids=str)
def test_affine(xs, ws, bs, base_axis):
    x, w = randn(*xs), randn(*ws, scale=0.5)
    b = None if bs is None else randn(*bs)
    check_function(F.affine, [x, w, b], affine_ref, {'base_axis': base_axis},
                   atol=2e-5, rtol=2e-5, fd_atol=1e-2, fd_rtol=1e-2)


def test_affine_larger_matches_numpy():
    """A size where the matrix product goes through the blocked kernel."""
    x, w, b = randn(67, 129), randn(129, 65, scale=0.1), randn(65)
    check_function(F.affine, [x, w, b], affine_ref, atol=1e-4, rtol=1e-4,
                   fd_max_elems=8, fd_atol=2e-2, fd_rtol=2e-2, check_clear_buffer=False)


def test_affine_positional_bias_none():
    x, w = randn(3, 5), randn(5, 4)
    y = F.affine(nn.Variable.from_numpy_array(x), nn.Variable.from_numpy_array(w), None, 1)
    y.forward()
    np.testing.assert_allclose(y.d, affine_ref(x, w), rtol=1e-5, atol=1e-5)
    assert len(y.parent.inputs) == 2


def test_affine_bad_arguments():
    x = randn(3, 5)
    check_raises(F.affine, [x, randn(4, 4)], exc=ValueError, match_words=['weight'])
    check_raises(F.affine, [x, randn(5, 4), randn(3)], exc=ValueError, match_words=['bias'])
    check_raises(F.affine, [x, randn(5, 4)], {'base_axis': 2}, exc=ValueError,
                 match_words=['base_axis'])
    check_raises(F.affine, [x, randn(5, 4)], {'base_axis': 5}, exc=ValueError,
                 match_words=['base_axis'])
    check_raises(F.affine, [x, randn(5)], exc=ValueError, match_words=['weight'])
    check_raises(F.affine, [x, randn(5, 4)], {'base_axis': 'one'}, exc=TypeError,
                 match_words=['base_axis'])
    check_raises(F.affine, [x, 'weights'], exc=TypeError, match_words=['weight'])


# --------------------------------------------------------------------------
# sum / mean
# --------------------------------------------------------------------------

AXES = [None, 0, 1, 2, -1, -3, (0, 2), (2, 0), (-1, 1), (0, 1, 2), ()]




@pytest.mark.parametrize('keepdims', [False, True])
@pytest.mark.parametrize('axis', AXES, ids=str)
def test_sum(axis, keepdims):
    x = randn(2, 3, 4)
    check_function(F.sum, [x],
                   lambda x, axis=None, keepdims=False: np.sum(
                       x.astype(np.float64), axis=axis, keepdims=keepdims),
                   {'axis': axis, 'keepdims': keepdims}, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('keepdims', [False, True])
@pytest.mark.parametrize('axis', AXES, ids=str)
def test_mean(axis, keepdims):
    x = randn(2, 3, 4)
    check_function(F.mean, [x],
                   lambda x, axis=None, keepdims=False: np.mean(
                       x.astype(np.float64), axis=axis, keepdims=keepdims),
                   {'axis': axis, 'keepdims': keepdims}, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('fn', [F.sum, F.mean], ids=['sum', 'mean'])
def test_reduction_defaults_and_large(fn):
    x = randn(300, 257)
    npfn = {'sum': np.sum, 'mean': np.mean}[fn.__name__]
    y = fn(nn.Variable.from_numpy_array(x))
    assert y.shape == ()
    y.forward()
    np.testing.assert_allclose(y.d, npfn(x.astype(np.float64)), rtol=1e-4, atol=1e-3)
    for axis in (0, 1):
        y = fn(nn.Variable.from_numpy_array(x), axis=axis)
        y.forward()
        np.testing.assert_allclose(y.d, npfn(x.astype(np.float64), axis=axis),
                                   rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize('fn', [F.sum, F.mean], ids=['sum', 'mean'])
def test_reduction_bad_arguments(fn):
    x = randn(2, 3, 4)
    check_raises(fn, [x], {'axis': 3}, exc=ValueError, match_words=['axis', '3'])
    check_raises(fn, [x], {'axis': -4}, exc=ValueError, match_words=['axis'])
    check_raises(fn, [x], {'axis': (0, 0)}, exc=ValueError, match_words=['axis'])
    check_raises(fn, [x], {'axis': 1.5}, exc=TypeError, match_words=['axis'])
    check_raises(fn, [x], {'axis': 'rows'}, exc=TypeError, match_words=['axis'])


# --------------------------------------------------------------------------
# softmax / log_softmax
# --------------------------------------------------------------------------

def log_softmax_ref(x, axis=None):
    x = x.astype(np.float64)
    axis = x.ndim - 1 if axis is None else axis
    m = np.max(x, axis=axis, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


def softmax_ref(x, axis=None):
    return np.exp(log_softmax_ref(x, axis))


SM_AXES = [None, 0, 1, 2, -1]


@pytest.mark.parametrize('axis', SM_AXES, ids=str)
def test_softmax(axis):
    x = randn(2, 3, 4, scale=2.0)
    check_function(F.softmax, [x], softmax_ref, {'axis': axis}, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize('axis', SM_AXES, ids=str)
def test_log_softmax(axis):
    x = randn(2, 3, 4, scale=2.0)
    check_function(F.log_softmax, [x], log_softmax_ref, {'axis': axis},
                   atol=1e-5, rtol=1e-5)


def test_softmax_default_axis_is_last():
    x = randn(3, 5)
    for fn, ref in [(F.softmax, softmax_ref), (F.log_softmax, log_softmax_ref)]:
        y = fn(nn.Variable.from_numpy_array(x))
        y.forward()
        np.testing.assert_allclose(y.d, ref(x, 1), atol=1e-6, rtol=1e-5)


LARGE = np.array([[1e4, 0.0, -1e4], [1e4, 1e4, 0.0], [-1e4, -1e4, -1e4]], np.float32)


@pytest.mark.parametrize('fn,ref', [(F.softmax, softmax_ref), (F.log_softmax, log_softmax_ref)],
                         ids=['softmax', 'log_softmax'])
def test_softmax_large_logits(fn, ref):
    for axis in (0, 1):
        x = nn.Variable.from_numpy_array(LARGE, need_grad=True)
        x.g = 0
        y = fn(x, axis=axis)
        y.forward()
        assert np.all(np.isfinite(y.d)), y.d
        np.testing.assert_allclose(y.d, ref(LARGE, axis), atol=1e-6, rtol=1e-6)
        y.backward(np.ones_like(LARGE))
        assert np.all(np.isfinite(x.g)), x.g
    # an equal row gives an exact uniform distribution
    x = nn.Variable.from_numpy_array(LARGE[2:])
    y = F.softmax(x)
    y.forward()
    np.testing.assert_allclose(y.d, np.full((1, 3), 1 / 3), rtol=1e-6)


@pytest.mark.parametrize('fn', [F.softmax, F.log_softmax], ids=['softmax', 'log_softmax'])
def test_softmax_bad_axis(fn):
    x = randn(2, 3)
    check_raises(fn, [x], {'axis': 2}, exc=ValueError, match_words=['axis'])
    check_raises(fn, [x], {'axis': -3}, exc=ValueError, match_words=['axis'])
    check_raises(fn, [x], {'axis': 0.5}, exc=TypeError, match_words=['axis'])


# --------------------------------------------------------------------------
# softmax_cross_entropy
# --------------------------------------------------------------------------

def sce_ref(x, t, axis=None):
    axis = x.ndim - 1 if axis is None else axis
    ls = log_softmax_ref(x, axis)
    return -np.take_along_axis(ls, t.astype(np.int64), axis=axis)


def labels(shape, n_class, axis, dtype=np.int32):
    s = list(shape)
    s[axis] = 1
    return R.randint(0, n_class, size=s).astype(dtype)


@pytest.mark.parametrize('label_dtype', [np.int32, np.float32], ids=['int', 'float'])
@pytest.mark.parametrize('shape,axis', [((5, 4), None), ((5, 4), 1), ((6, 3), 0),
                                         ((2, 3, 4), None), ((2, 3, 2, 2), 1),
                                         ((2, 3, 2, 2), -3)], ids=str)
def test_softmax_cross_entropy(shape, axis, label_dtype):
    x = randn(*shape, scale=2.0)
    ax = len(shape) - 1 if axis is None else axis % len(shape)
    t = labels(shape, shape[ax], ax, label_dtype)
    args = {} if axis is None else {'axis': axis}
    res = check_function(F.softmax_cross_entropy, [x, t], sce_ref, args,
                         grad_inputs=[True, False], atol=1e-5, rtol=1e-5)
    assert res.outputs[0].shape == t.shape


def test_softmax_cross_entropy_shapes_as_nnabla():
    x = nn.Variable((8, 10))
    t = nn.Variable((8, 1))
    assert F.softmax_cross_entropy(x, t).shape == (8, 1)
    x = nn.Variable((2, 5, 3, 3))
    t = nn.Variable((2, 1, 3, 3))
    assert F.softmax_cross_entropy(x, t, axis=1).shape == (2, 1, 3, 3)


def test_softmax_cross_entropy_large_logits():
    x = LARGE
    t = np.array([[0], [2], [1]], np.int32)
    xv = nn.Variable.from_numpy_array(x, need_grad=True)
    xv.g = 0
    y = F.softmax_cross_entropy(xv, nn.Variable.from_numpy_array(t))
    y.forward()
    assert np.all(np.isfinite(y.d))
    np.testing.assert_allclose(y.d, sce_ref(x, t), rtol=1e-6, atol=1e-6)
    y.backward(np.ones((3, 1), np.float32))
    assert np.all(np.isfinite(xv.g))
    np.testing.assert_allclose(xv.g, softmax_ref(x) - np.eye(3)[t[:, 0]], atol=1e-6)


@pytest.mark.parametrize('bad', [4, -1, 100], ids=str)
def test_softmax_cross_entropy_label_out_of_range(bad):
    x = randn(3, 4)
    t = np.array([[0], [bad], [1]], np.int32)
    y = F.softmax_cross_entropy(nn.Variable.from_numpy_array(x),
                                nn.Variable.from_numpy_array(t))
    with pytest.raises(ValueError) as info:
        y.forward()
    msg = str(info.value).lower()
    assert 'softmax_cross_entropy' in msg or 'softmaxcrossentropy' in msg, msg
    assert str(bad) in msg, msg
    # auto_forward and imperative calls raise too
    with pytest.raises(ValueError):
        with nn.auto_forward():
            F.softmax_cross_entropy(nn.Variable.from_numpy_array(x),
                                    nn.Variable.from_numpy_array(t))
    with pytest.raises(ValueError):
        F.softmax_cross_entropy(nn.NdArray.from_numpy_array(x), nn.NdArray.from_numpy_array(t))


def test_softmax_cross_entropy_bad_arguments():
    x = randn(5, 4)
    check_raises(F.softmax_cross_entropy, [x, np.zeros((5, 2), np.int32)],
                 exc=ValueError, match_words=['target'])
    check_raises(F.softmax_cross_entropy, [x, np.zeros((4, 1), np.int32)],
                 exc=ValueError, match_words=['target'])
    check_raises(F.softmax_cross_entropy, [x, np.zeros((5, 1), np.int32)], {'axis': 2},
                 exc=ValueError, match_words=['axis'])
    check_raises(F.softmax_cross_entropy, [x, np.zeros((5, 1), np.int32)], {'axis': 'c'},
                 exc=TypeError, match_words=['axis'])


# --------------------------------------------------------------------------
# identity
# --------------------------------------------------------------------------

@pytest.mark.parametrize('shape', [(), (1,), (3, 4), (2, 3, 4)], ids=str)
def test_identity(shape):
    x = randn(*shape)
    res = check_function(F.identity, [x], lambda x: x.copy(), atol=0, rtol=0)
    xv = res.variables[0]
    # identity is a copy: writing the output leaves the input alone
    y = F.identity(xv)
    y.forward()
    y.d = 42.0
    np.testing.assert_array_equal(xv.d, x)


# --------------------------------------------------------------------------
# reshape
# --------------------------------------------------------------------------

@pytest.mark.parametrize('inplace', [True, False])
@pytest.mark.parametrize('shape', [(3, 8), (3, -1), (-1,), (24,), (2, 12, 1), (1, -1, 4), (4, 3, 2)],
                         ids=str)
def test_reshape(shape, inplace):
    x = randn(2, 3, 4)
    check_function(F.reshape, [x], lambda x, shape, inplace: x.reshape(shape),
                   {'shape': shape, 'inplace': inplace}, atol=0, rtol=0)


def test_reshape_default_is_inplace_and_shares_data():
    x = nn.Variable.from_numpy_array(randn(2, 3, 4))
    y = F.reshape(x, (6, 4))
    assert y.shape == (6, 4)
    y.forward()
    assert np.shares_memory(np.asarray(y.d), np.asarray(x.d))
    y.d[...] = 7.0
    np.testing.assert_array_equal(x.d, np.full((2, 3, 4), 7.0, np.float32))


def test_reshape_not_inplace_copies():
    a = randn(2, 3, 4)
    x = nn.Variable.from_numpy_array(a)
    y = F.reshape(x, (6, 4), inplace=False)
    y.forward()
    np.testing.assert_array_equal(y.d, a.reshape(6, 4))
    y.d[...] = 7.0
    np.testing.assert_array_equal(x.d, a)


def test_reshape_bad_arguments():
    x = randn(2, 3, 4)
    check_raises(F.reshape, [x], {'shape': (5, 5)}, exc=ValueError, match_words=['shape', '24'])
    check_raises(F.reshape, [x], {'shape': (-1, -1)}, exc=ValueError, match_words=['shape'])
    check_raises(F.reshape, [x], {'shape': (5, -1)}, exc=ValueError, match_words=['shape'])
    check_raises(F.reshape, [x], {'shape': (-2, 12)}, exc=ValueError, match_words=['shape'])
    check_raises(F.reshape, [x], {'shape': 'abc'}, exc=TypeError, match_words=['shape'])
    check_raises(F.reshape, [x], {'shape': (2.5, 4)}, exc=TypeError, match_words=['shape'])


# --------------------------------------------------------------------------
# slice
# --------------------------------------------------------------------------

def slice_ref(x, start=None, stop=None, step=None):
    nd = x.ndim
    step = step if step is not None else (1,) * nd
    start = start if start is not None else tuple(0 if s > 0 else -1 for s in step)
    stop = stop if stop is not None else tuple(
        n if s > 0 else -n - 1 for n, s in zip(x.shape, step))
    return x[tuple(slice(a, b, c) for a, b, c in zip(start, stop, step))].copy()


SLICE_CASES = [
    dict(),
    dict(start=(0, 1), stop=(2, 3), step=(1, 1)),
    dict(start=(0, 0), stop=(3, 4), step=(2, 3)),
    dict(start=(1, -3), stop=(3, -1), step=(1, 1)),
    dict(start=(0, 0), stop=(10, 10), step=(1, 1)),         # stops clip like Python
    dict(start=(-1, -1), stop=(-4, -5), step=(-1, -1)),     # full flip
    dict(start=(2, 3), stop=(0, 0), step=(-1, -2)),
    dict(start=(0, 2), stop=(3, 2), step=(1, 1)),           # empty axis
]


@pytest.mark.parametrize('args', SLICE_CASES, ids=str)
def test_slice(args):
    x = randn(3, 4)
    expect = slice_ref(x, **args)
    if expect.size == 0:
        y = F.slice(nn.Variable.from_numpy_array(x), **args)
        assert y.shape == expect.shape
        return
    check_function(F.slice, [x], slice_ref, args, atol=0, rtol=0)


def test_slice_3d_with_steps():
    x = randn(4, 5, 6)
    check_function(F.slice, [x], slice_ref,
                   dict(start=(1, 0, 5), stop=(4, 5, 0), step=(2, 2, -2)), atol=0, rtol=0)


def test_slice_bad_arguments():
    x = randn(3, 4)
    check_raises(F.slice, [x], dict(start=(0, 0), stop=(1, 1), step=(1, 0)),
                 exc=ValueError, match_words=['step'])
    check_raises(F.slice, [x], dict(start=(0, 0, 0), stop=(1, 1, 1), step=(1, 1, 1)),
                 exc=ValueError, match_words=['start'])
    check_raises(F.slice, [x], dict(start=(0, 0), stop=(1,), step=(1, 1)),
                 exc=ValueError, match_words=['stop'])
    check_raises(F.slice, [x], dict(start='ab', stop=(1, 1), step=(1, 1)),
                 exc=TypeError, match_words=['start'])


# --------------------------------------------------------------------------
# sink
# --------------------------------------------------------------------------

def test_sink_forward_runs_all_branches():
    a = nn.Variable.from_numpy_array(randn(3))
    b = nn.Variable.from_numpy_array(randn(2, 2))
    ya, yb = F.mul_scalar(a, 2.0), F.add_scalar(b, 1.0)
    s = F.sink(ya, yb)
    assert s.shape == ()
    assert s.parent.info.type_name == 'Sink'
    s.forward()
    np.testing.assert_allclose(ya.d, a.d * 2)
    np.testing.assert_allclose(yb.d, b.d + 1)


def test_sink_one_input_grad_true_sets_ones():
    a = nn.Variable.from_numpy_array(randn(3), need_grad=True)
    b = nn.Variable.from_numpy_array(randn(2, 2), need_grad=True)
    a.g = 0
    b.g = 0
    ya, yb = F.mul_scalar(a, 3.0), F.mul_scalar(b, -2.0)
    s = F.sink(ya, yb)
    s.forward()
    ya.g = 123.0   # overwritten with ones by sink
    s.backward()
    np.testing.assert_allclose(a.g, np.full(3, 3.0))
    np.testing.assert_allclose(b.g, np.full((2, 2), -2.0))


def test_sink_one_input_grad_false_uses_given_grads():
    a = nn.Variable.from_numpy_array(randn(3), need_grad=True)
    b = nn.Variable.from_numpy_array(randn(2, 2), need_grad=True)
    a.g = 0
    b.g = 0
    ya, yb = F.mul_scalar(a, 3.0), F.mul_scalar(b, -2.0)
    s = F.sink(ya, yb, one_input_grad=False)
    s.forward()
    ga, gb = randn(3), randn(2, 2)
    ya.g = ga
    yb.g = gb
    s.backward()
    np.testing.assert_allclose(a.g, 3.0 * ga, rtol=1e-6)
    np.testing.assert_allclose(b.g, -2.0 * gb, rtol=1e-6)
    # the grads given to the sink's inputs are left as they were
    np.testing.assert_array_equal(ya.g, ga)


def test_sink_of_leaf_sets_leaf_grad():
    a = nn.Variable.from_numpy_array(randn(3), need_grad=True)
    a.g = 0
    s = F.sink(a)
    s.forward()
    s.backward()
    np.testing.assert_array_equal(a.g, np.ones(3, np.float32))


def test_sink_bad_arguments():
    with pytest.raises((ValueError, TypeError)) as info:
        F.sink()
    assert 'sink' in str(info.value).lower()
    check_raises(F.sink, [randn(3)], {'one_input_grad': 'yes'}, exc=TypeError,
                 match_words=['one_input_grad'])
