"""Checker runs and argument errors for the structured loss, validation,
quantization and signal-processing functions (categorical_cross_entropy,
kl_multinomial, top_n_error, confusion_matrix, prune, fft, ifft), and the
behaviour of the pointwise losses and quantizers that the generic pointwise
tests do not pin down (stability at large logits, straight-through gradients,
unlink stopping gradients)."""
import numpy as np
import pytest

import nncy as nn
import nncy.functions as F

from checker import check_function, check_raises

R = np.random.RandomState(7)


def randn(*shape, scale=1.0):
    return np.asarray(R.randn(*shape) * scale, dtype=np.float32).reshape(shape)


def uniform(lo, hi, *shape):
    return np.asarray(R.uniform(lo, hi, size=shape), dtype=np.float32).reshape(shape)


def labels(c, *shape):
    return R.randint(0, c, size=shape).astype(np.int32)


def distinct(*shape, gap=0.05):
    n = int(np.prod(shape))
    v = (np.arange(n) - n / 2) * gap
    return np.asarray(R.permutation(v), dtype=np.float32).reshape(shape)


def _take(x, t, axis):
    axis = axis % x.ndim
    return np.take_along_axis(x, t.astype(np.int64).reshape(
        x.shape[:axis] + (1,) + x.shape[axis + 1:]), axis)


# --------------------------------------------------------------------------
# categorical_cross_entropy
# --------------------------------------------------------------------------

def cce_ref(x, t, axis=None):
    return -np.log(_take(x.astype(np.float64), t, -1 if axis is None else axis))


@pytest.mark.parametrize('shape,axis,tshape', [
    ((3, 5), None, (3, 1)),
    ((4, 6), 1, (4,)),
    ((2, 4, 3), 1, (2, 1, 3)),
    ((5, 2, 3), 0, (1, 2, 3)),
])
def test_categorical_cross_entropy(shape, axis, tshape):
    ax = -1 if axis is None else axis
    x = uniform(0.2, 1.0, *shape)
    t = labels(shape[ax], *tshape)
    args = {} if axis is None else {'axis': axis}
    check_function(F.categorical_cross_entropy, [x, t], cce_ref, args,
                   grad_inputs=[True, False], atol=1e-6, rtol=1e-5)


def test_categorical_cross_entropy_errors():
    x = uniform(0.2, 1.0, 3, 4)
    check_raises(F.categorical_cross_entropy, [x, labels(4, 3, 2)], match_words=['target'])
    check_raises(F.categorical_cross_entropy, [x, labels(4, 3, 1)], {'axis': 2},
                 match_words=['axis'])
    v = nn.Variable.from_numpy_array(x)
    y = F.categorical_cross_entropy(v, nn.Variable.from_numpy_array(
        np.array([[0], [4], [1]], np.int32)))
    with pytest.raises(ValueError, match='target'):
        y.forward()


def test_categorical_cross_entropy_zero_probability_is_finite():
    x = nn.Variable.from_numpy_array(np.array([[0.0, 1.0]], np.float32), need_grad=True)
    t = nn.Variable.from_numpy_array(np.array([[0]], np.int32))
    y = F.categorical_cross_entropy(x, t)
    y.forward()
    y.backward()
    assert np.isfinite(y.d).all() and np.isfinite(x.g).all()
    assert y.d[0, 0] > 80


# --------------------------------------------------------------------------
# kl_multinomial
# --------------------------------------------------------------------------

def kl_ref(p, q, base_axis=1):
    p, q = p.astype(np.float64), q.astype(np.float64)
    kl = (p * np.log(p / q)).sum(axis=tuple(range(base_axis, p.ndim)))
    return kl.reshape(p.shape[:base_axis] + (1,))


@pytest.mark.parametrize('shape,base_axis', [((3, 4), 1), ((2, 3, 4), 1), ((2, 3, 4), 2),
                                             ((5,), 0)])
def test_kl_multinomial(shape, base_axis):
    p = uniform(0.1, 1.0, *shape)
    q = uniform(0.1, 1.0, *shape)
    args = {} if base_axis == 1 else {'base_axis': base_axis}
    check_function(F.kl_multinomial, [p, q], kl_ref, args, atol=1e-5, rtol=1e-5)


def test_kl_multinomial_errors():
    p = uniform(0.1, 1.0, 3, 4)
    check_raises(F.kl_multinomial, [p, uniform(0.1, 1.0, 3, 5)], match_words=['q'])
    check_raises(F.kl_multinomial, [p, p.copy()], {'base_axis': 2}, match_words=['base_axis'])


# --------------------------------------------------------------------------
# top_n_error, binary_error, confusion_matrix
# --------------------------------------------------------------------------

def top_n_ref(x, t, axis=None, n=1):
    ax = -1 if axis is None else axis
    thresh = _take(x, t, ax)
    return ((x >= thresh).sum(axis=ax % x.ndim, keepdims=True) > n).astype(np.float64)


@pytest.mark.parametrize('shape,axis,n', [((6, 5), None, 1), ((6, 5), 1, 3),
                                          ((2, 4, 3), 1, 2), ((4, 3), 0, 1)])
def test_top_n_error(shape, axis, n):
    ax = -1 if axis is None else axis
    x = distinct(*shape)
    tshape = shape[:ax % len(shape)] + (1,) + shape[ax % len(shape) + 1:]
    t = labels(shape[ax], *tshape)
    args = {'n': n} if axis is None else {'axis': axis, 'n': n}
    res = check_function(F.top_n_error, [x, t], top_n_ref, args, grad_inputs=[False, False])
    assert set(np.unique(res.outputs[0])) <= {0.0, 1.0}


def test_top_n_error_values_and_errors():
    x = np.array([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05]], np.float32)
    t = np.array([[2], [0]], np.int32)
    y = F.top_n_error(nn.NdArray.from_numpy_array(x), nn.NdArray.from_numpy_array(t))
    np.testing.assert_array_equal(y.data, [[1], [0]])
    y = F.top_n_error(nn.NdArray.from_numpy_array(x), nn.NdArray.from_numpy_array(t), n=2)
    np.testing.assert_array_equal(y.data, [[0], [0]])
    check_raises(F.top_n_error, [x, t], {'n': 0}, match_words=['n'])
    check_raises(F.top_n_error, [x, labels(3, 3, 1)], match_words=['target'])


def test_binary_error_values():
    x = nn.NdArray.from_numpy_array(np.array([0.2, 0.5, 0.7, 0.49], np.float32))
    t = nn.NdArray.from_numpy_array(np.array([0.0, 0.0, 1.0, 1.0], np.float32))
    np.testing.assert_array_equal(F.binary_error(x, t).data, [0, 1, 0, 1])


def confusion_ref(x, t, axis=None):
    ax = -1 if axis is None else axis
    c = x.shape[ax]
    pred = np.moveaxis(x, ax, -1).argmax(-1).reshape(-1)
    lab = np.moveaxis(t.reshape(x.shape[:ax % x.ndim] + (1,) + x.shape[ax % x.ndim + 1:]),
                      ax, -1).reshape(-1)
    m = np.zeros((c, c))
    np.add.at(m, (lab, pred), 1)
    return m


@pytest.mark.parametrize('shape,axis', [((20, 4), None), ((3, 5, 4), 1)])
def test_confusion_matrix(shape, axis):
    ax = -1 if axis is None else axis
    x = distinct(*shape)
    tshape = shape[:ax % len(shape)] + (1,) + shape[ax % len(shape) + 1:]
    t = labels(shape[ax], *tshape)
    args = {} if axis is None else {'axis': axis}
    res = check_function(F.confusion_matrix, [x, t], confusion_ref, args,
                         grad_inputs=[False, False])
    assert res.outputs[0].sum() == np.prod(tshape)


# --------------------------------------------------------------------------
# elementwise losses: stability and argument handling
# --------------------------------------------------------------------------

def _fb(fn, *xs, **args):
    vs = [nn.Variable.from_numpy_array(x, need_grad=True) for x in xs]
    for v in vs:
        v.g = 0
    y = fn(*vs, **args)
    y.forward()
    y.backward(np.ones(y.shape, np.float32))
    return y.d.copy(), [v.g.copy() for v in vs]


def test_sigmoid_cross_entropy_large_logits():
    x = np.array([-1e4, -200.0, -90.0, -20.0, 0.0, 20.0, 90.0, 200.0, 1e4], np.float32)
    t = np.array([1, 1, 0, 1, 0.5, 0, 1, 0, 0], np.float32)
    y, (gx, gt) = _fb(F.sigmoid_cross_entropy, x, t)
    x64 = x.astype(np.float64)
    ref = np.maximum(x64, 0) - x64 * t + np.log1p(np.exp(-np.abs(x64)))
    np.testing.assert_allclose(y, ref, rtol=1e-6)
    assert np.isfinite(gx).all() and np.isfinite(gt).all()
    np.testing.assert_allclose(gx, 0.5 * (1 + np.tanh(0.5 * x64)) - t, atol=1e-7)
    assert y[6] == pytest.approx(0.0, abs=1e-30) and y[-1] == pytest.approx(1e4)


def test_binary_cross_entropy_at_zero_and_one_is_finite():
    x = np.array([0.0, 1.0, 0.0, 1.0], np.float32)
    t = np.array([0.0, 1.0, 1.0, 0.0], np.float32)
    y, (gx, gt) = _fb(F.binary_cross_entropy, x, t)
    assert np.isfinite(y).all() and np.isfinite(gt).all()
    np.testing.assert_allclose(y[:2], 0.0, atol=1e-6)
    assert y[2] > 80 and y[3] > 80


def test_huber_and_epsilon_values():
    a = nn.NdArray.from_numpy_array(np.array([0.0, 0.5, 3.0, -3.0], np.float32))
    b = nn.NdArray.from_numpy_array(np.zeros(4, np.float32))
    np.testing.assert_allclose(F.huber_loss(a, b).data, [0, 0.25, 5.0, 5.0])
    np.testing.assert_allclose(F.huber_loss(a, b, delta=2.0).data, [0, 0.25, 8.0, 8.0])
    np.testing.assert_allclose(F.epsilon_insensitive_loss(a, b, 1.0).data, [0, 0, 2.0, 2.0])
    with pytest.raises(TypeError):
        F.epsilon_insensitive_loss(a, b)


# --------------------------------------------------------------------------
# quantization
# --------------------------------------------------------------------------

def test_binary_sigmoid_tanh_straight_through():
    x = np.array([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0], np.float32)
    y, (g,) = _fb(F.binary_sigmoid, x)
    np.testing.assert_array_equal(y, [0, 0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(g, [0, 0, 0.5, 0.5, 0.5, 0, 0])
    y, (g,) = _fb(F.binary_tanh, x)
    np.testing.assert_array_equal(y, [-1, -1, -1, -1, 1, 1, 1])
    np.testing.assert_array_equal(g, [0, 0, 1, 1, 1, 0, 0])


def test_fixed_point_quantize_values():
    x = np.array([-9.0, -0.1, 0.03, 0.04, 1.0, 100.0], np.float32)
    y, (g,) = _fb(F.fixed_point_quantize, x)
    np.testing.assert_allclose(y, [-7.9375, -0.125, 0.0, 0.0625, 1.0, 7.9375])
    np.testing.assert_array_equal(g, [0, 1, 1, 1, 1, 0])
    y, (g,) = _fb(F.fixed_point_quantize, x, sign=False, n=2, delta=0.5,
                  ste_fine_grained=False)
    np.testing.assert_allclose(y, [0, 0, 0, 0, 1.0, 1.5])
    np.testing.assert_array_equal(g, 1)


def prune_ref(x, rate=0.9):
    a = np.abs(x).reshape(-1)
    thresh = np.sort(a)[int((a.size - 1) * rate)]
    return np.where(np.abs(x) < thresh, 0, x)


@pytest.mark.parametrize('rate', [0.0, 0.5, 0.9, 1.0])
def test_prune(rate):
    x = distinct(3, 7)
    check_function(F.prune, [x], prune_ref, {'rate': rate}, check_fd=False,
                   ref_grad=lambda x, dy, rate: [dy])


def test_prune_errors():
    check_raises(F.prune, [randn(3)], {'rate': 1.5}, match_words=['rate'])
    check_raises(F.prune, [randn(3)], {'rate': -0.1}, match_words=['rate'])


# --------------------------------------------------------------------------
# fft / ifft
# --------------------------------------------------------------------------

def _fft_ref(inverse):
    def ref(x, signal_ndim, normalized=False):
        c = x[..., 0].astype(np.float64) + 1j * x[..., 1]
        axes = tuple(range(x.ndim - 1 - signal_ndim, x.ndim - 1))
        fn = np.fft.ifftn if inverse else np.fft.fftn
        z = fn(c, axes=axes, norm='ortho' if normalized else 'backward')
        return np.stack([z.real, z.imag], -1)
    return ref


FFT_CASES = [((6, 2), 1), ((3, 5, 2), 1), ((4, 3, 2), 2), ((2, 3, 4, 2), 2),
             ((2, 3, 2, 2), 3), ((2, 2, 3, 2, 2), 3)]


@pytest.mark.parametrize('normalized', [False, True])
@pytest.mark.parametrize('shape,ndim', FFT_CASES)
@pytest.mark.parametrize('fn,inverse', [(F.fft, False), (F.ifft, True)], ids=['fft', 'ifft'])
def test_fft(fn, inverse, shape, ndim, normalized):
    x = randn(*shape)
    check_function(fn, [x], _fft_ref(inverse), {'signal_ndim': ndim, 'normalized': normalized},
                   atol=2e-5, rtol=1e-4)


def test_fft_roundtrip():
    x = randn(2, 4, 3, 2)
    v = nn.Variable.from_numpy_array(x)
    z = F.ifft(F.fft(v, signal_ndim=2, normalized=True), signal_ndim=2, normalized=True)
    z.forward()
    np.testing.assert_allclose(z.d, x, atol=1e-5)


def test_fft_errors():
    check_raises(F.fft, [randn(4, 2)], {'signal_ndim': 4}, match_words=['signal_ndim'])
    check_raises(F.ifft, [randn(4, 3)], {'signal_ndim': 1}, match_words=['x'])
    check_raises(F.fft, [randn(4, 2)], {'signal_ndim': 2}, match_words=['x'])


# --------------------------------------------------------------------------
# unlink
# --------------------------------------------------------------------------

def test_unlink_stops_gradient():
    x = nn.Variable.from_numpy_array(randn(2, 3), need_grad=True)
    x.g = 0
    y = F.add2(F.mul_scalar(F.unlink(x), 3.0), x)
    y.forward()
    y.backward(np.ones((2, 3), np.float32))
    np.testing.assert_allclose(y.d, 4 * x.d, rtol=1e-6)
    np.testing.assert_array_equal(x.g, 1.0)
