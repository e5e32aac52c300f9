import numpy as np
import pytest
import nncy as nn
import nncy.functions as F
from test_functions_loss import STFT_CASES
from cuda_check import CPU, CUDA, TOL, cupy, run, same  # noqa: F401  (cupy is an autouse fixture)

from cuda_check import backends


def randn(rng, *shape):
    return rng.randn(*shape).astype(np.float32)


def twice(f):
    """f applied twice to the same inputs and summed: backward accumulates."""
    return lambda *v: F.add2(f(*v), f(*v))


def on_both(fn, arrays, steps):
    """Variables of ``arrays`` under the CPU and the cuda context; ``steps(y, vs)``
    runs on each and returns a list of host arrays to compare."""
    out = []
    for ctx in (CPU, CUDA):
        vs = [nn.Variable.from_numpy_array(a.copy()) for a in arrays]
        with nn.context_scope(ctx):
            y = fn(*vs)
        if ctx is CUDA:
            assert all(m.startswith('nncy.cuda') for m in backends(y).values())
        out.append(steps(y, vs))
    for got, want in zip(out[1], out[0]):
        np.testing.assert_allclose(got, want, **TOL)


# ---------------------------------------------------------------------------
# losses and validation over labels

LABEL_CASES = [((3, 5), -1, (3, 1)), ((4, 6), 1, (4,)), ((2, 4, 3), 1, (2, 1, 3)),
               ((5, 2, 3), 0, (1, 2, 3))]


@pytest.mark.parametrize('shape,axis,tshape', LABEL_CASES)
def test_categorical_cross_entropy(rng, shape, axis, tshape):
    x = rng.uniform(0.1, 1.0, shape).astype(np.float32)
    t = rng.randint(0, shape[axis], tshape).astype(np.int32)
    t.reshape(-1)[0] = -1                        # ignored sample
    same(lambda a, b: F.categorical_cross_entropy(a, b, axis=axis), [x, t],
         need_grad=[True, False])
    same(twice(lambda a, b: F.categorical_cross_entropy(a, b, axis=axis)), [x, t],
         need_grad=[True, False])


def test_categorical_cross_entropy_bad_label(rng):
    x = nn.Variable.from_numpy_array(rng.uniform(0.1, 1, (3, 4)).astype(np.float32))
    t = nn.Variable.from_numpy_array(np.array([[0], [4], [1]], np.int32))
    with nn.context_scope(CUDA):
        y = F.categorical_cross_entropy(x, t)
    with pytest.raises(ValueError, match='target'):
        y.forward()


@pytest.mark.parametrize('n', [1, 3])
@pytest.mark.parametrize('shape,axis,tshape', LABEL_CASES)
def test_top_n_error(rng, shape, axis, tshape, n):
    x = randn(rng, *shape)
    x.reshape(-1)[:4] = 0.5                      # ties count against the label
    t = rng.randint(0, shape[axis], tshape).astype(np.int32)
    same(lambda a, b: F.top_n_error(a, b, axis=axis, n=n), [x, t])
    same(twice(lambda a, b: F.top_n_error(a, b, axis=axis, n=n)), [x, t])


def test_top_n_error_bad_label(rng):
    x = nn.Variable.from_numpy_array(randn(rng, 3, 4))
    t = nn.Variable.from_numpy_array(np.array([[0], [-1], [1]], np.int32))
    with nn.context_scope(CUDA):
        y = F.top_n_error(x, t)
    with pytest.raises(ValueError, match='target'):
        y.forward()


@pytest.mark.parametrize('shape,axis,tshape', LABEL_CASES)
def test_confusion_matrix(rng, shape, axis, tshape):
    x = randn(rng, *shape)
    t = rng.randint(0, shape[axis], tshape).astype(np.int32)
    same(lambda a, b: F.confusion_matrix(a, b, axis=axis), [x, t])


@pytest.mark.parametrize('shape,base_axis', [((3, 4), 1), ((2, 3, 4), 1), ((2, 3, 4), 2),
                                              ((5,), 0)])
def test_kl_multinomial(rng, shape, base_axis):
    p = rng.uniform(0.05, 1, shape).astype(np.float32)
    q = rng.uniform(0.05, 1, shape).astype(np.float32)
    same(lambda a, b: F.kl_multinomial(a, b, base_axis=base_axis), [p, q])
    same(twice(lambda a, b: F.kl_multinomial(a, b, base_axis=base_axis)), [p, q])


# ---------------------------------------------------------------------------
# prune, quantization

@pytest.mark.parametrize('rate', [0.0, 0.3, 0.9, 1.0])
def test_prune(rng, rate):
    x = randn(rng, 4, 7)
    same(lambda a: F.prune(a, rate=rate), [x])
    same(twice(lambda a: F.prune(a, rate=rate)), [x])


def _off_levels(rng, shape, lo, hi, levels):
    """Values away from the rounding boundaries of the quantizer over [lo, hi]."""
    k = rng.randint(-20, levels + 20, size=shape)
    return np.asarray(lo + (k + 0.25) * (hi - lo) / levels, np.float32)


@pytest.mark.parametrize('args', [{}, {'ste_fine_grained': False}, {'quantize': False}],
                         ids=str)
def test_min_max_quantize_learnt_range(rng, args):
    x = _off_levels(rng, (3, 4), -1.0, 2.0, 255)
    r = [np.array([v], np.float32) for v in (-1.0, 2.0, 0.0, 255.0)]
    fn = (lambda *v: F.min_max_quantize(*v, **args))
    same(fn, [x] + r, need_grad=[True, True, True, True, True])
    same(twice(fn), [x] + r, need_grad=[True, True, True, False, False])


def test_min_max_quantize_per_channel(rng):
    x = randn(rng, 2, 3, 4)
    qmin = np.array([[-1.0], [-0.5], [-2.0]], np.float32)
    qmax = np.array([[1.0], [0.7], [2.0]], np.float32)
    lmin, lmax = np.array([[0.0]], np.float32), np.array([[15.0]], np.float32)
    same(F.min_max_quantize, [x, qmin, qmax, lmin, lmax])


@pytest.mark.parametrize('ema', [False, True])
def test_min_max_quantize_x_min_max(rng, ema):
    x = randn(rng, 4, 5)
    arrays = [x] + [np.array([v], np.float32) for v in (-0.5, 0.5, 0.0, 255.0)]

    def steps(y, vs):
        y.forward()
        y.backward(np.ones(y.shape, np.float32))
        return [y.d, vs[1].d, vs[2].d, vs[0].g, vs[1].g, vs[2].g]
    on_both(lambda *v: F.min_max_quantize(*v, x_min_max=True, ema=ema, decay=0.9),
            arrays, steps)


def test_min_max_quantize_widens_a_narrow_range(rng):
    arrays = [randn(rng, 4)] + [np.array([v], np.float32) for v in (0.5, 0.5, 0.0, 255.0)]

    def steps(y, vs):
        y.forward()
        return [y.d, vs[2].d]
    on_both(lambda *v: F.min_max_quantize(*v, eps=0.25), arrays, steps)


@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('scaled', [False, True])
@pytest.mark.parametrize('xshape,wshape,base_axis,zero_to', [
    ((3, 4), (4, 5), 1, 1.0), ((2, 3, 2), (6, 2, 2), 1, -1.0), ((2, 3, 4), (4, 3), 2, 0.0)])
def test_binary_affine(rng, xshape, wshape, base_axis, zero_to, scaled, bias):
    fn = F.binary_weight_affine if scaled else F.binary_connect_affine
    w = randn(rng, *wshape)
    w.reshape(-1)[::5] = 0.0                     # zeros go to quantize_zero_to
    arrays = [randn(rng, *xshape), w, np.zeros_like(w)]
    if scaled:
        arrays.append(np.zeros(wshape[1:], np.float32))
    if bias:
        arrays.append(randn(rng, *wshape[1:]))
    need = [True, True, False] + [False] * scaled + [True] * bias
    f = (lambda *v: fn(*v, base_axis=base_axis, quantize_zero_to=zero_to))
    same(f, arrays, need_grad=need)
    same(twice(f), arrays, need_grad=need)

    def steps(y, vs):           # the binarized weight (and alpha) written into the inputs
        y.forward()
        return [v.d for v in vs[2:2 + 1 + scaled]]
    on_both(f, arrays, steps)


@pytest.mark.parametrize('num_bits', [3, 4])
def test_inq_affine(rng, num_bits):
    x = randn(rng, 3, 2, 2)
    w = (rng.permutation(20) - 10).astype(np.float32).reshape(4, 5) * 0.11
    ind = (rng.rand(4, 5) < 0.5).astype(np.float32)
    b = randn(rng, 5)
    f = (lambda *v: F.inq_affine(*v, num_bits=num_bits))
    same(f, [x, w, ind, b], need_grad=[True, True, False, True])
    same(twice(f), [x, w, ind, b], need_grad=[True, True, True, True])


def test_inq_affine_schedule_largest_abs(rng):
    w0 = randn(rng, 4, 6)
    w0.reshape(-1)[:4] = w0.reshape(-1)[4]       # ties, taken by index
    arrays = [randn(rng, 2, 4), w0, np.zeros((4, 6), np.float32)]

    def steps(y, vs):
        out = []
        for k in range(4):
            if k == 2:
                vs[1].d[...] = 5.0               # a solver step, undone for fixed weights
            y.forward()
            out += [y.d.copy(), vs[1].d.copy(), vs[2].d.copy()]
        y.backward(np.ones(y.shape, np.float32))
        return out + [vs[0].g, vs[1].g]
    on_both(lambda *v: F.inq_affine(*v, inq_iterations=(1, 2, 3), seed=3), arrays, steps)


def test_inq_affine_schedule_random(rng):
    arrays = [randn(rng, 2, 4), randn(rng, 4, 6), np.zeros((4, 6), np.float32)]
    arrays[2][0] = 1.0                           # some weights fixed from the start

    def steps(y, vs):
        y.forward()
        y.forward()                              # count 1: the first random selection
        return [y.d, vs[1].d, vs[2].d]
    on_both(lambda *v: F.inq_affine(*v, inq_iterations=(1, 3), selection_algorithm='random',
                                     seed=5), arrays, steps)


@pytest.mark.parametrize('shape,args', [((3, 4), {}), ((2, 3, 4), {'eps': 2.5}),
                                        ((2, 3, 4), {'base_axis': 2})])
def test_vat_noise(rng, shape, args):
    arrays = [randn(rng, *shape), np.zeros(shape, np.float32)]
    same(lambda a, b: F.vat_noise(a, b, **args), arrays, need_grad=[True, False])

    def steps(y, vs):           # backward stores eps * dy in w
        y.forward()
        y.backward(np.arange(y.size, dtype=np.float32).reshape(y.shape))
        return [y.d, vs[1].d]
    on_both(lambda a, b: F.vat_noise(a, b, **args), arrays, steps)


# ---------------------------------------------------------------------------
# nms_detection2d

def _detections(rng, b, n, c):
    xy = rng.uniform(0.2, 0.8, size=(b, n, 2))
    wh = rng.uniform(0.1, 0.4, size=(b, n, 2))
    obj = rng.uniform(0, 1, size=(b, n, 1))
    cls = rng.uniform(0, 1, size=(b, n, c))
    x = np.concatenate([xy, wh, obj, cls], -1).astype(np.float32)
    x[0, :3, 4:] = x[0, 3, 4:]                   # tied objectness and class scores
    x[0, 6, 4:] = 0.9
    x[0, 5] = x[0, 6]                            # identical boxes: the first one stays
    return x


@pytest.mark.parametrize('per_class', [True, False])
@pytest.mark.parametrize('b,n,c,thresh,nms', [(1, 8, 1, 0.1, 0.3), (2, 30, 3, 0.2, 0.45),
                                              (2, 40, 4, 0.05, 0.2)])
def test_nms_detection2d(rng, b, n, c, thresh, nms, per_class):
    x = _detections(rng, b, n, c)
    args = dict(thresh=thresh, nms=nms, nms_per_class=per_class)
    same(lambda v: F.nms_detection2d(v, **args), [x], need_grad=[False], backward=False)


# ---------------------------------------------------------------------------
# fft, ifft, stft, istft

@pytest.mark.parametrize('normalized', [False, True])
@pytest.mark.parametrize('shape,ndim', [((6, 2), 1), ((3, 5, 2), 1), ((2, 4, 6, 2), 2),
                                        ((3, 4, 2, 2), 3)])
@pytest.mark.parametrize('fn', [F.fft, F.ifft], ids=['fft', 'ifft'])
def test_fft(rng, fn, shape, ndim, normalized):
    x = randn(rng, *shape)
    same(lambda v: fn(v, signal_ndim=ndim, normalized=normalized), [x])
    same(twice(lambda v: fn(v, signal_ndim=ndim, normalized=normalized)), [x])


def _both(f):
    """The two outputs of f as one (both receive gradients)."""
    def g(*v):
        a, b = f(*v)
        return F.add2(a, F.mul_scalar(b, 0.5))
    return g


@pytest.mark.parametrize('shape,args', STFT_CASES, ids=[str(a) for _, a in STFT_CASES])
def test_stft(rng, shape, args):
    x = randn(rng, *shape)
    same(_both(lambda v: F.stft(v, **args)), [x])
    same(twice(_both(lambda v: F.stft(v, **args))), [x])


def test_stft_outputs_apart(rng):
    x = randn(rng, 2, 32)
    for i in range(2):
        same(lambda v: F.stft(v, window_size=8, stride=4, fft_size=8)[i], [x])


ISTFT_CASES = [((2, 3), dict(window_size=8, stride=4, fft_size=8)),
               ((1, 6), dict(window_size=6, stride=2, fft_size=10, window_type='hamming')),
               ((2, 5), dict(window_size=8, stride=2, fft_size=8, window_type=None,
                             center=False)),
               ((2, 4), dict(window_size=5, stride=7, fft_size=7, window_type='rectangular'))]


@pytest.mark.parametrize('shape,args', ISTFT_CASES, ids=[str(a) for _, a in ISTFT_CASES])
def test_istft(rng, shape, args):
    k = args['fft_size'] // 2 + 1
    yr, yi = randn(rng, shape[0], k, shape[1]), randn(rng, shape[0], k, shape[1])
    f = (lambda a, b: F.istft(a, b, **args))
    same(f, [yr, yi])
    same(twice(f), [yr, yi])
    same(f, [yr, yi], need_grad=[False, True])
