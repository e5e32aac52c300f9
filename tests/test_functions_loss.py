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


def test_categorical_cross_entropy_ignores_negative_labels():
    x = nn.Variable.from_numpy_array(uniform(0.2, 1.0, 3, 4), need_grad=True)
    t = nn.Variable.from_numpy_array(np.array([[1], [-1], [3]], np.int32))
    y = F.categorical_cross_entropy(x, t)
    y.forward()
    x.g = 0
    y.backward(np.ones((3, 1), np.float32))
    np.testing.assert_allclose(y.d[:, 0], [-np.log(x.d[0, 1]), 0, -np.log(x.d[2, 3])],
                               rtol=1e-6)
    assert (x.g[1] == 0).all()
    np.testing.assert_allclose(x.g[0, 1], -1 / x.d[0, 1], rtol=1e-6)


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
    kl = (p * (np.log(p + 1e-8) - np.log(q + 1e-8))).sum(axis=tuple(range(base_axis, p.ndim)))
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


# --------------------------------------------------------------------------
# nms_detection2d
# --------------------------------------------------------------------------

def _iou_ref(a, b):
    ax0, ay0, ax1, ay1 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx0, by0, bx1, by1 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    w = min(ax1, bx1) - max(ax0, bx0)
    h = min(ay1, by1) - max(ay0, by0)
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def nms_ref(x, thresh=0.5, nms=0.45, nms_per_class=True):
    """NMS box by box, as written in the definition."""
    x = x.astype(np.float64)
    y = x.copy()
    B, N, _ = x.shape
    for b in range(B):
        obj = np.where(x[b, :, 4] < thresh, 0, x[b, :, 4])
        prob = obj[:, None] * x[b, :, 5:]
        prob[prob < thresh] = 0
        if nms_per_class:      # greedy: suppressed boxes suppress nothing
            for k in range(prob.shape[1]):
                order = sorted(range(N), key=lambda i: -prob[i, k])
                for ii, i in enumerate(order):
                    if prob[i, k] == 0:
                        continue
                    for j in order[ii + 1:]:
                        if _iou_ref(x[b, i, :4], x[b, j, :4]) > nms:
                            prob[j, k] = 0
        else:                  # any better-ranked overlapping box suppresses
            order = sorted(range(N), key=lambda i: -obj[i])
            gone = [any(_iou_ref(x[b, order[r], :4], x[b, order[q], :4]) > nms
                        for q in range(r)) for r in range(N)]
            for r, i in enumerate(order):
                if gone[r]:
                    obj[i] = 0
                    prob[i] = 0
        y[b, :, 4] = obj
        y[b, :, 5:] = prob
    return y


def _detections(B, N, C):
    r = np.random.RandomState(B * 100 + N + C)
    xy = r.uniform(0.2, 0.8, size=(B, N, 2))
    wh = r.uniform(0.1, 0.4, size=(B, N, 2))
    obj = r.uniform(0, 1, size=(B, N, 1))
    cls = r.uniform(0, 1, size=(B, N, C))
    return np.concatenate([xy, wh, obj, cls], -1).astype(np.float32)


@pytest.mark.parametrize('per_class', [True, False])
@pytest.mark.parametrize('B,N,C,thresh,nms', [(1, 6, 1, 0.1, 0.3), (2, 30, 3, 0.2, 0.45),
                                              (3, 40, 4, 0.05, 0.2)])
def test_nms_detection2d(B, N, C, thresh, nms, per_class):
    x = _detections(B, N, C)
    args = {'thresh': thresh, 'nms': nms, 'nms_per_class': per_class}
    res = check_function(F.nms_detection2d, [x], nms_ref, args, grad_inputs=[False],
                         atol=1e-6, rtol=1e-6)
    # some boxes are suppressed, some survive
    y = res.outputs[0][..., 5:]
    assert (y > 0).any()


def test_nms_detection2d_errors():
    check_raises(F.nms_detection2d, [np.zeros((2, 3, 5), np.float32)], match_words=['x'])
    check_raises(F.nms_detection2d, [np.zeros((3, 6), np.float32)], match_words=['x'])
    check_raises(F.nms_detection2d, [np.zeros((1, 3, 6), np.float32)], {'nms': 1.5},
                 match_words=['nms'])


# --------------------------------------------------------------------------
# interpolate
# --------------------------------------------------------------------------

def _src(n_in, n_out, mode, align_corners, half_pixel, half_pixel_for_nn):
    o = np.arange(n_out, dtype=np.float64)
    if n_out <= 1:
        s = 0.0
    elif align_corners:
        s = (n_in - 1) / (n_out - 1)
    else:
        s = n_in / n_out
    if mode == 'nearest' and half_pixel_for_nn:
        return (o + 0.5) * n_in / n_out
    return (o + 0.5) * s - 0.5 if half_pixel else o * s


def interpolate_ref(x, scale=None, output_size=None, mode='linear', align_corners=False,
                    half_pixel=False, half_pixel_for_nn=False, channel_last=False):
    y = x.astype(np.float64)
    k = len(output_size if output_size is not None else scale)
    last = x.ndim - 1 if channel_last else x.ndim
    for j, ax in enumerate(range(last - k, last)):
        n_in = x.shape[ax]
        n_out = output_size[j] if output_size is not None else int(np.floor(scale[j] * n_in))
        src = _src(n_in, n_out, mode, align_corners, half_pixel, half_pixel_for_nn)
        if mode == 'nearest':
            y = np.take(y, np.clip(np.floor(src), 0, n_in - 1).astype(int), axis=ax)
            continue
        src = np.clip(src, 0, n_in - 1)
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        shape = [1] * y.ndim
        shape[ax] = n_out
        w = (src - i0).reshape(shape)
        y = np.take(y, i0, axis=ax) * (1 - w) + np.take(y, i1, axis=ax) * w
    return y


INTERP_CASES = [
    ((2, 3, 4), {'scale': (2.0,)}),
    ((2, 3, 4), {'output_size': (3,), 'align_corners': True}),
    ((1, 2, 3, 4), {'output_size': (5, 7), 'half_pixel': True}),
    ((1, 2, 4, 6), {'scale': (0.5, 0.75)}),
    ((1, 2, 3, 4), {'output_size': (6, 8), 'mode': 'nearest'}),
    ((1, 2, 4, 6), {'output_size': (3, 5), 'mode': 'nearest', 'half_pixel_for_nn': True}),
    ((1, 2, 4, 6), {'output_size': (3, 9), 'mode': 'nearest', 'half_pixel': True}),
    ((1, 2, 4, 6), {'output_size': (3, 9), 'mode': 'nearest', 'align_corners': True}),
    ((1, 2, 4, 6), {'output_size': (1, 4), 'half_pixel': True}),
    ((1, 2, 4, 6), {'output_size': (5, 4), 'mode': 'nearest', 'align_corners': True,
                    'half_pixel_for_nn': True}),
    ((1, 3, 4, 2), {'output_size': (5, 3), 'channel_last': True}),
    ((1, 2, 3, 4, 2), {'scale': (1.5, 2.0, 1.0), 'align_corners': True}),
    ((2, 3, 2, 4, 3), {'output_size': (3, 2, 5), 'mode': 'nearest', 'channel_last': True}),
]


@pytest.mark.parametrize('shape,args', INTERP_CASES, ids=[str(a) for _, a in INTERP_CASES])
def test_interpolate(shape, args):
    x = randn(*shape)
    check_function(F.interpolate, [x], interpolate_ref, args, atol=1e-5, rtol=1e-5)


def test_interpolate_values():
    x = nn.NdArray.from_numpy_array(np.array([[0.0, 2.0]], np.float32))
    np.testing.assert_allclose(F.interpolate(x, output_size=(3,), align_corners=True).data,
                               [[0.0, 1.0, 2.0]])
    np.testing.assert_allclose(F.interpolate(x, scale=(2,)).data, [[0.0, 1.0, 2.0, 2.0]])
    np.testing.assert_allclose(F.interpolate(x, scale=(2,), mode='nearest').data,
                               [[0.0, 0.0, 2.0, 2.0]])


def test_interpolate_errors():
    x = randn(1, 2, 3, 4)
    check_raises(F.interpolate, [x], {}, match_words=['output_size'])
    check_raises(F.interpolate, [x], {'scale': (2, 2), 'mode': 'cubic'}, match_words=['mode'])
    check_raises(F.interpolate, [x], {'scale': (2, 2), 'align_corners': True,
                                      'half_pixel': True}, match_words=['half_pixel'])
    check_raises(F.interpolate, [x], {'output_size': (1, 2, 3, 4, 5)},
                 match_words=['output_size'])
    check_raises(F.interpolate, [x], {'output_size': (0, 2)}, match_words=['output_size'])
    check_raises(F.interpolate, [x], {'scale': (-1.0, 2.0)}, match_words=['scale'])


# --------------------------------------------------------------------------
# binary_connect_affine, binary_weight_affine
# --------------------------------------------------------------------------

def _sign0(w, zero_to):
    return np.where(w > 0, 1.0, np.where(w < 0, -1.0, zero_to))


def bin_affine_ref(scaled):
    def ref(x, w, bw, *rest, base_axis=1, quantize_zero_to=1.0):
        alpha = rest[0] if scaled else None
        b = rest[-1] if len(rest) > int(scaled) else None
        k = int(np.prod(x.shape[base_axis:]))
        sw = _sign0(w.reshape(k, -1).astype(np.float64), quantize_zero_to)
        y = x.reshape(-1, k).astype(np.float64) @ sw
        if scaled:
            y = y * np.abs(w.reshape(k, -1).astype(np.float64)).mean(0)
        if b is not None:
            y = y + b.reshape(1, -1)
        return y.reshape(x.shape[:base_axis] + w.shape[1:])
    return ref


def bin_affine_grad(scaled):
    def grad(x, w, bw, *rest, base_axis=1, quantize_zero_to=1.0):
        dy = rest[-1]
        rest = rest[:-1]
        b = rest[-1] if len(rest) > int(scaled) else None
        k = int(np.prod(x.shape[base_axis:]))
        w2 = w.reshape(k, -1).astype(np.float64)
        sw = _sign0(w2, quantize_zero_to)
        g = dy.reshape(-1, w2.shape[1]).astype(np.float64)
        if scaled:
            sw = sw * np.abs(w2).mean(0)
        gx = (g @ sw.T).reshape(x.shape)
        gw = (x.reshape(-1, k).astype(np.float64).T @ g).reshape(w.shape)
        out = [gx, gw, None] + ([None] if scaled else [])
        if b is not None:
            out.append(dy.reshape(-1, w2.shape[1]).sum(0).reshape(b.shape))
        return out
    return grad


@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('scaled', [False, True])
@pytest.mark.parametrize('xshape,wshape,base_axis,zero_to', [
    ((3, 4), (4, 5), 1, 1.0), ((2, 3, 2), (6, 2, 2), 1, -1.0), ((2, 3, 4), (4, 3), 2, 0.0)])
def test_binary_affine(xshape, wshape, base_axis, zero_to, scaled, bias):
    fn = F.binary_weight_affine if scaled else F.binary_connect_affine
    x = randn(*xshape)
    w = randn(*wshape)
    w.reshape(-1)[::5] = 0.0      # zeros go to quantize_zero_to
    inputs = [x, w, np.zeros_like(w)]
    if scaled:
        inputs.append(np.zeros(wshape[1:], np.float32))
    inputs.append(randn(*wshape[1:]) if bias else None)
    grad_inputs = [True, True, False] + ([False] if scaled else []) + [bias]
    res = check_function(fn, inputs, bin_affine_ref(scaled),
                         {'base_axis': base_axis, 'quantize_zero_to': zero_to},
                         grad_inputs=grad_inputs, check_fd=False,
                         ref_grad=bin_affine_grad(scaled), atol=1e-5, rtol=1e-5,
                         grad_atol=1e-5, grad_rtol=1e-5)
    # forward wrote the binarized weight (and alpha) into their variables
    np.testing.assert_array_equal(res.variables[2].d, _sign0(w, zero_to))
    if scaled:
        np.testing.assert_allclose(res.variables[3].d,
                                   np.abs(w.reshape(w.shape[0], -1)).mean(0).reshape(wshape[1:]),
                                   rtol=1e-6)


def test_binary_affine_errors():
    x, w = randn(3, 4), randn(4, 5)
    check_raises(F.binary_connect_affine, [x, w, randn(4, 4)], match_words=['binary_weight'])
    check_raises(F.binary_connect_affine, [x, randn(3, 5), randn(3, 5)], match_words=['weight'])
    check_raises(F.binary_weight_affine, [x, w, randn(4, 5), randn(4)], match_words=['alpha'])
    check_raises(F.binary_connect_affine, [x, w, randn(4, 5), randn(6)], match_words=['bias'])
    check_raises(F.binary_connect_affine, [x, w, randn(4, 5)], {'base_axis': 2},
                 match_words=['base_axis'])


# --------------------------------------------------------------------------
# min_max_quantize
# --------------------------------------------------------------------------

def _mmq_range(x, qr_min, qr_max, ql_min, ql_max, decay, x_min_max, ema, eps):
    x = x.astype(np.float64)
    lo, hi = qr_min.astype(np.float64), qr_max.astype(np.float64)
    if x_min_max:
        lead = x.ndim - lo.ndim
        axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(lo.shape) if n == 1)
        xl = x.min(axis=axes, keepdims=True).reshape(lo.shape)
        xh = x.max(axis=axes, keepdims=True).reshape(lo.shape)
        lo, hi = (decay * lo + (1 - decay) * xl, decay * hi + (1 - decay) * xh) if ema \
            else (xl, xh)
    hi = np.maximum(hi, lo + eps)
    scale = (hi - lo) / (ql_max - ql_min)
    zp = np.clip(np.round(ql_min - lo / scale), ql_min, ql_max)
    return (ql_min - zp) * scale, (ql_max - zp) * scale, scale


def mmq_ref(x, qr_min, qr_max, ql_min, ql_max, decay=0.999, x_min_max=False, ema=False,
            ste_fine_grained=True, eps=0.01, quantize=True):
    if not quantize:
        return x.astype(np.float64)
    m, big, scale = _mmq_range(x, qr_min, qr_max, ql_min, ql_max, decay, x_min_max, ema, eps)
    return np.round((np.clip(x, m, big) - m) / scale) * scale + m


def mmq_grad(x, qr_min, qr_max, ql_min, ql_max, dy, decay=0.999, x_min_max=False,
             ema=False, ste_fine_grained=True, eps=0.01, quantize=True):
    m, big, _ = _mmq_range(x, qr_min, qr_max, ql_min, ql_max, decay, x_min_max, ema, eps)
    gx = dy * ((x >= m) & (x <= big)) if ste_fine_grained and quantize else dy
    if x_min_max or ema:
        return [gx, None, None, None, None]
    red = tuple(range(x.ndim - qr_min.ndim)) + tuple(
        x.ndim - qr_min.ndim + i for i, n in enumerate(qr_min.shape) if n == 1)
    gmin = (dy * (x < m)).sum(axis=red, keepdims=True).reshape(qr_min.shape)
    gmax = (dy * (x > big)).sum(axis=red, keepdims=True).reshape(qr_max.shape)
    return [gx, gmin, gmax, None, None]


def _off_levels(shape, lo, hi, levels=255):
    """Values away from the rounding boundaries of the quantizer over [lo, hi]."""
    step = (hi - lo) / levels
    k = R.randint(-20, levels + 20, size=shape)
    return np.asarray(lo + (k + 0.25) * step, np.float32)


@pytest.mark.parametrize('args', [{}, {'ste_fine_grained': False}, {'quantize': False}],
                         ids=str)
def test_min_max_quantize_learnt_range(args):
    x = _off_levels((3, 4), -1.0, 2.0)
    qmin, qmax = np.array([-1.0], np.float32), np.array([2.0], np.float32)
    lmin, lmax = np.array([0.0], np.float32), np.array([255.0], np.float32)
    check_function(F.min_max_quantize, [x, qmin, qmax, lmin, lmax], mmq_ref, args,
                   grad_inputs=[True, True, True, False, False], check_fd=False,
                   ref_grad=mmq_grad, atol=1e-5, rtol=1e-5)


def test_min_max_quantize_per_channel():
    x = randn(2, 3, 4)
    qmin = np.array([[-1.0], [-0.5], [-2.0]], np.float32)
    qmax = np.array([[1.0], [0.7], [2.0]], np.float32)
    lmin, lmax = np.array([[0.0]], np.float32), np.array([[15.0]], np.float32)
    check_function(F.min_max_quantize, [x, qmin, qmax, lmin, lmax], mmq_ref, {},
                   grad_inputs=[True, True, True, False, False], check_fd=False,
                   ref_grad=mmq_grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('ema', [False, True])
def test_min_max_quantize_x_min_max(ema):
    x = randn(4, 5)
    qmin, qmax = np.array([-0.5], np.float32), np.array([0.5], np.float32)
    lmin, lmax = np.array([0.0], np.float32), np.array([255.0], np.float32)
    vs = [nn.Variable.from_numpy_array(a) for a in (x, qmin, qmax, lmin, lmax)]
    y = F.min_max_quantize(*vs, x_min_max=True, ema=ema, decay=0.9)
    y.forward()
    lo = 0.9 * -0.5 + 0.1 * x.min() if ema else x.min()
    hi = 0.9 * 0.5 + 0.1 * x.max() if ema else x.max()
    np.testing.assert_allclose(vs[1].d, [lo], rtol=1e-5)
    np.testing.assert_allclose(vs[2].d, [hi], rtol=1e-5)
    want = mmq_ref(x, qmin, qmax, lmin, lmax, decay=0.9, x_min_max=True, ema=ema)
    np.testing.assert_allclose(y.d, want, atol=1e-5)


def test_min_max_quantize_widens_a_narrow_range():
    x = randn(4)
    vs = [nn.Variable.from_numpy_array(np.array(a, np.float32))
          for a in (x, [0.5], [0.5], [0.0], [255.0])]
    F.min_max_quantize(*vs, eps=0.25).forward()
    np.testing.assert_allclose(vs[2].d, [0.75])


def test_min_max_quantize_errors():
    x = randn(2, 3)
    one = np.array([0.0], np.float32)
    check_raises(F.min_max_quantize, [x, np.zeros(4, np.float32), one, one, one],
                 match_words=['qr_min'])
    check_raises(F.min_max_quantize, [x, one, one, one, one], {'decay': 1.5},
                 match_words=['decay'])
    check_raises(F.min_max_quantize, [x, one, one, one, one], {'eps': 0.0},
                 match_words=['eps'])


# --------------------------------------------------------------------------
# vat_noise, warp_by_flow
# --------------------------------------------------------------------------

def vat_ref(x, w, base_axis=1, eps=1.0):
    x = x.astype(np.float64)
    axes = tuple(range(base_axis, x.ndim))
    return eps * x / np.sqrt((x * x).sum(axis=axes, keepdims=True) + 1e-8)


@pytest.mark.parametrize('shape,args', [((3, 4), {}), ((2, 3, 4), {'eps': 2.5}),
                                        ((2, 3, 4), {'base_axis': 2})])
def test_vat_noise(shape, args):
    x = randn(*shape)
    res = check_function(F.vat_noise, [x, np.zeros(shape, np.float32)], vat_ref, args,
                         grad_inputs=[True, False], check_fd=False,
                         ref_grad=lambda x, w, dy, **a: [np.zeros_like(x), None])
    # backward stored eps * dy in w
    np.testing.assert_allclose(res.variables[1].d, args.get('eps', 1.0) * res.dys[0],
                               rtol=1e-6)


def test_vat_noise_errors():
    check_raises(F.vat_noise, [randn(3, 4), randn(5)], match_words=['w'])
    check_raises(F.vat_noise, [randn(3, 4), randn(3, 4)], {'base_axis': 2},
                 match_words=['base_axis'])


def warp_ref(data, flow):
    data = data.astype(np.float64)
    n, c, h, w = data.shape
    out = np.empty_like(data)
    for b in range(n):
        for yy in range(h):
            for xx in range(w):
                sx = min(max(xx + flow[b, 0, yy, xx], 0), w - 1)
                sy = min(max(yy + flow[b, 1, yy, xx], 0), h - 1)
                x0, y0 = int(np.floor(sx)), int(np.floor(sy))
                x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
                ax, ay = sx - x0, sy - y0
                out[b, :, yy, xx] = ((1 - ay) * ((1 - ax) * data[b, :, y0, x0]
                                                 + ax * data[b, :, y0, x1])
                                     + ay * ((1 - ax) * data[b, :, y1, x0]
                                             + ax * data[b, :, y1, x1]))
    return out


def _flow(n, h, w, reach=2):
    """Displacements whose fractional parts stay in [0.2, 0.8]: off the kinks."""
    k = R.randint(-reach, reach + 1, size=(n, 2, h, w))
    return np.asarray(k + R.uniform(0.2, 0.8, size=(n, 2, h, w)), np.float32)


@pytest.mark.parametrize('n,c,h,w', [(1, 1, 3, 4), (2, 3, 4, 5)])
def test_warp_by_flow(n, c, h, w):
    data = randn(n, c, h, w)
    check_function(F.warp_by_flow, [data, _flow(n, h, w)], warp_ref, atol=1e-5, rtol=1e-5)


def test_warp_by_flow_zero_flow_is_identity():
    data = randn(2, 3, 4, 5)
    y = F.warp_by_flow(nn.NdArray.from_numpy_array(data),
                       nn.NdArray.from_numpy_array(np.zeros((2, 2, 4, 5), np.float32)))
    np.testing.assert_allclose(y.data, data, rtol=1e-6)


def test_warp_by_flow_errors():
    check_raises(F.warp_by_flow, [randn(2, 3, 4), randn(2, 2, 4)], match_words=['data'])
    check_raises(F.warp_by_flow, [randn(1, 3, 4, 5), randn(1, 3, 4, 5)], match_words=['flow'])


# --------------------------------------------------------------------------
# inq_affine
# --------------------------------------------------------------------------

def _inq_q(w, num_bits):
    s = np.abs(w).max()
    n1 = int(np.floor(np.log2(4 * s / 3)))
    n2 = n1 + 1 - 2 ** (num_bits - 2)
    levels = [0.0] + [2.0 ** k for k in range(n2, n1 + 1)]
    out = np.empty(w.shape)
    for i, v in enumerate(w.reshape(-1)):      # nearest level, one weight at a time
        best = min(levels, key=lambda L: (abs(abs(v) - L), -L))
        out.reshape(-1)[i] = np.sign(v) * best
    return out


def inq_ref(x, w, ind, b=None, base_axis=1, num_bits=4, **kw):
    k = int(np.prod(x.shape[base_axis:]))
    wq = np.where(ind != 0, _inq_q(w.astype(np.float64), num_bits), w)
    y = x.reshape(-1, k).astype(np.float64) @ wq.reshape(k, -1)
    if b is not None:
        y = y + b.reshape(1, -1)
    return y.reshape(x.shape[:base_axis] + w.shape[1:])


def inq_grad(x, w, ind, b, dy, base_axis=1, num_bits=4, **kw):
    k = int(np.prod(x.shape[base_axis:]))
    wq = np.where(ind != 0, _inq_q(w.astype(np.float64), num_bits), w).reshape(k, -1)
    g = dy.reshape(-1, wq.shape[1]).astype(np.float64)
    gx = (g @ wq.T).reshape(x.shape)
    gw = ((x.reshape(-1, k).T @ g) * (ind.reshape(k, -1) == 0)).reshape(w.shape)
    return [gx, gw, None, g.sum(0).reshape(b.shape)]


@pytest.mark.parametrize('num_bits', [3, 4])
def test_inq_affine(num_bits):
    x = randn(3, 2, 2)
    w = distinct(4, 5, gap=0.11)
    ind = (R.rand(4, 5) < 0.5).astype(np.float32)
    ind.reshape(-1)[np.argmax(np.abs(w))] = 0     # the largest weight stays learnable
    b = randn(5)
    check_function(F.inq_affine, [x, w, ind, b], inq_ref, {'num_bits': num_bits},
                   grad_inputs=[True, True, False, True], check_fd=False,
                   ref_grad=inq_grad, atol=1e-5, rtol=1e-5, grad_atol=1e-5, grad_rtol=1e-5)


@pytest.mark.parametrize('algo', ['largest_abs', 'random'])
def test_inq_affine_schedule(algo):
    w0 = distinct(4, 6)
    x = nn.Variable.from_numpy_array(randn(2, 4))
    w = nn.Variable.from_numpy_array(w0.copy())
    ind = nn.Variable.from_numpy_array(np.zeros((4, 6), np.float32))
    y = F.inq_affine(x, w, ind, inq_iterations=(1, 3), selection_algorithm=algo, seed=3)
    y.forward()                                  # count 0: nothing fixed
    assert ind.d.sum() == 0
    np.testing.assert_array_equal(w.d, w0)
    y.forward()                                  # count 1: half of the weights fixed
    fixed = ind.d != 0
    if algo == 'largest_abs':
        assert fixed.sum() == 12
        assert np.abs(w0[fixed]).min() >= np.abs(w0[~fixed]).max()
    else:
        assert 0 < fixed.sum() < 24
    np.testing.assert_allclose(w.d[fixed], _inq_q(w0, 4)[fixed])
    np.testing.assert_array_equal(w.d[~fixed], w0[~fixed])
    w.d[fixed] = 5.0                             # a solver step on fixed weights ...
    y.forward()                                  # ... is undone
    np.testing.assert_allclose(w.d[fixed], _inq_q(w0, 4)[fixed])
    y.forward()                                  # count 3, the last: all fixed
    assert ind.d.sum() == 24
    y.backward(np.ones((2, 6), np.float32))
    np.testing.assert_array_equal(w.g, 0)


def test_inq_affine_errors():
    x, w, ind = randn(3, 4), randn(4, 5), np.zeros((4, 5), np.float32)
    check_raises(F.inq_affine, [x, w, np.zeros((4, 4), np.float32)],
                 match_words=['indicator_fixedweights'])
    check_raises(F.inq_affine, [x, w, ind], {'num_bits': 1}, match_words=['num_bits'])
    check_raises(F.inq_affine, [x, w, ind], {'inq_iterations': (5, 2)},
                 match_words=['inq_iterations'])
    check_raises(F.inq_affine, [x, w, ind], {'selection_algorithm': 'smallest'},
                 match_words=['selection_algorithm'])


# --------------------------------------------------------------------------
# stft / istft
# --------------------------------------------------------------------------

def _win_ref(kind, size, n):
    if kind in (None, 'rectangular'):
        w = np.ones(size)
    else:
        m = np.arange(size)
        a = 0.5 if kind == 'hanning' else 0.54
        w = a - (1 - a) * np.cos(2 * np.pi * m / size)     # periodic window
    out = np.zeros(n)
    out[(n - size) // 2:(n - size) // 2 + size] = w
    return out


def stft_ref(x, window_size, stride, fft_size, window_type='hanning', center=True,
             pad_mode='reflect'):
    x = x.astype(np.float64)
    if center:
        x = np.pad(x, ((0, 0), (fft_size // 2, fft_size // 2)),
                   mode='reflect' if pad_mode == 'reflect' else 'constant')
    win = _win_ref(window_type, window_size, fft_size)
    t = (x.shape[1] - fft_size) // stride + 1
    k = np.arange(fft_size // 2 + 1)[:, None]
    e = np.exp(-2j * np.pi * k * np.arange(fft_size)[None, :] / fft_size)   # (K, N)
    out = np.empty((x.shape[0], fft_size // 2 + 1, t), complex)
    for f in range(t):
        out[:, :, f] = (x[:, f * stride:f * stride + fft_size] * win) @ e.T
    return out.real, out.imag


def istft_ref(yr, yi, window_size, stride, fft_size, window_type='hanning', center=True):
    win = _win_ref(window_type, window_size, fft_size)
    sq = np.zeros(fft_size)
    for i in range(0, fft_size, stride):
        for j in range(fft_size):
            sq[j] += win[(j - i) % fft_size] ** 2
    b, _, t = yr.shape
    total = (t - 1) * stride + fft_size
    sig = np.zeros((b, total))
    for f in range(t):
        fr = np.fft.irfft(yr[:, :, f] + 1j * yi[:, :, f].astype(np.float64), n=fft_size)
        sig[:, f * stride:f * stride + fft_size] += fr * win / sq
    cut = fft_size // 2 if center else 0
    return sig[:, cut:total - cut]


STFT_CASES = [
    ((2, 32), dict(window_size=8, stride=4, fft_size=8)),
    ((1, 40), dict(window_size=6, stride=3, fft_size=10, window_type='hamming')),
    ((2, 30), dict(window_size=8, stride=2, fft_size=8, window_type=None, center=False)),
    ((1, 25), dict(window_size=8, stride=4, fft_size=8, pad_mode='constant')),
    ((2, 17), dict(window_size=5, stride=2, fft_size=7, window_type='rectangular')),
]


@pytest.mark.parametrize('shape,args', STFT_CASES, ids=[str(a) for _, a in STFT_CASES])
def test_stft(shape, args):
    check_function(F.stft, [randn(*shape)], stft_ref, args, atol=1e-5, rtol=1e-5)


ISTFT_CASES = [c for c in STFT_CASES if 'pad_mode' not in c[1] and
               c[1]['fft_size'] % c[1]['stride'] == 0]


@pytest.mark.parametrize('shape,args', ISTFT_CASES, ids=[str(a) for _, a in ISTFT_CASES])
def test_istft(shape, args):
    yr, yi = (np.asarray(a, np.float32) for a in stft_ref(randn(*shape), **args))
    check_function(F.istft, [yr, yi], istft_ref, args, atol=1e-5, rtol=1e-4)


def test_stft_istft_roundtrip():
    x = randn(3, 64)
    v = nn.Variable.from_numpy_array(x)
    yr, yi = F.stft(v, 16, 4, 16)
    z = F.istft(yr, yi, 16, 4, 16)
    z.forward()
    # exact away from the first and last fft_size - stride samples
    np.testing.assert_allclose(z.d[:, 12:-12], x[:, 12:-12], atol=1e-5)


def test_stft_errors():
    x = randn(2, 32)
    check_raises(F.stft, [x], {'window_size': 16, 'stride': 4, 'fft_size': 8},
                 match_words=['window_size'])
    check_raises(F.stft, [x], {'window_size': 8, 'stride': 0, 'fft_size': 8},
                 match_words=['stride'])
    check_raises(F.stft, [x], {'window_size': 8, 'stride': 4, 'fft_size': 8,
                               'window_type': 'kaiser'}, match_words=['window_type'])
    check_raises(F.stft, [x], {'window_size': 8, 'stride': 4, 'fft_size': 8,
                               'pad_mode': 'edge'}, match_words=['pad_mode'])
    check_raises(F.stft, [randn(32)], {'window_size': 8, 'stride': 4, 'fft_size': 8},
                 match_words=['x'])
    y = randn(2, 5, 3)
    check_raises(F.istft, [y, y], {'window_size': 8, 'stride': 4, 'fft_size': 16},
                 match_words=['y_r'])
    check_raises(F.istft, [randn(2, 9, 3), y], {'window_size': 8, 'stride': 4,
                                                 'fft_size': 16}, match_words=['y_i'])
    y = randn(2, 9, 3)
    check_raises(F.istft, [y, y], {'window_size': 8, 'stride': 3, 'fft_size': 16},
                 match_words=['stride'])
