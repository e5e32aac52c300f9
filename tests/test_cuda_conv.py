"""cuda backend of the convolution family against the CPU implementations."""
import numpy as np
import pytest
import nncy as nn
import nncy.functions as F
from cuda_check import CPU, CUDA, TOL, cupy, run, same  # noqa: F401  (cupy is an autouse fixture)


def _r(rng, *shape):
    return rng.randn(*shape).astype(np.float32)


# (x shape, weight shape, keyword arguments) of F.convolution
CONV_CASES = [
    ((2, 3, 7), (4, 3, 3), {}),
    ((2, 4, 6, 5), (6, 2, 3, 2), dict(pad=(1, 0), stride=(2, 1), dilation=(1, 2), group=2)),
    ((2, 6, 5, 4), (6, 2, 3, 3), dict(pad=(1, 1), group=3, channel_last=True)),
    ((1, 2, 4, 3, 4), (3, 2, 2, 2, 3), dict(pad=(1, 0, 1), stride=(1, 2, 2))),
    ((2, 2, 3, 5, 5), (4, 3, 1, 2), dict(base_axis=2, pad=(0, 1), stride=(2, 2))),
]


@pytest.mark.parametrize('xs,ws,kw', CONV_CASES)
def test_convolution(xs, ws, kw, rng):
    cl = kw.get('channel_last', False)
    if cl:   # (B, C, H, W) -> (B, H, W, C), weight (O, C/g, K...) -> (O, K..., C/g)
        xs = (xs[0],) + xs[2:] + (xs[1],)
        ws = (ws[0],) + ws[2:] + (ws[1],)
    x, w, b = _r(rng, *xs), _r(rng, *ws), _r(rng, ws[0])
    same(lambda x, w, b: F.convolution(x, w, b, **kw), [x, w, b])
    same(lambda x, w: F.convolution(x, w, **kw), [x, w])


def test_convolution_accumulates(rng):
    x, w, b = _r(rng, 2, 2, 5, 5), _r(rng, 3, 2, 3, 3), _r(rng, 3)
    f = lambda x, w, b: F.convolution(x, w, b, pad=(1, 1))  # noqa: E731
    same(lambda x, w, b: F.add2(f(x, w, b), f(x, w, b)), [x, w, b])
    same(lambda x, w: F.convolution(x, w), [x, w], need_grad=[False, True])
    same(lambda x, w: F.convolution(x, w), [x, w], need_grad=[True, False])


def test_convolution_in_chunks(rng, monkeypatch):
    from nncy.cuda import conv
    monkeypatch.setattr(conv, 'COL_LIMIT', 100)   # one sample per chunk
    x, w, b = _r(rng, 3, 2, 5, 4), _r(rng, 4, 2, 2, 2), _r(rng, 4)
    same(lambda x, w, b: F.convolution(x, w, b, pad=(1, 0)), [x, w, b])
    same(lambda x, w, b: F.deconvolution(x, w, b, stride=(2, 1)), [x, _r(rng, 2, 3, 2, 2),
                                                                     _r(rng, 3)])


@pytest.mark.parametrize('m,kw', [(1, {}), (2, dict(pad=(1, 0), stride=(2, 1), dilation=(1, 2)))])
def test_depthwise_convolution(m, kw, rng):
    x, w, b = _r(rng, 2, 3, 6, 5), _r(rng, 3 * m, 3, 2), _r(rng, 3 * m)
    same(lambda x, w, b: F.depthwise_convolution(x, w, b, multiplier=m, **kw), [x, w, b])
    same(lambda x, w: F.add2(F.depthwise_convolution(x, w, multiplier=m, **kw),
                             F.depthwise_convolution(x, w, multiplier=m, **kw)), [x, w])


# (x shape, weight shape, keyword arguments) of F.deconvolution
DECONV_CASES = [
    ((2, 3, 5), (3, 2, 3), {}),
    ((2, 4, 3, 4), (4, 3, 3, 2), dict(pad=(1, 0), stride=(2, 3), dilation=(1, 2), group=2,
                                      output_padding=(1, 2))),
    ((2, 4, 3, 3), (4, 1, 2, 3), dict(stride=(2, 1), group=2, channel_last=True)),
    ((1, 2, 2, 3, 2), (2, 2, 2, 2, 2), dict(stride=(2, 1, 2), pad=(0, 1, 0))),
]


@pytest.mark.parametrize('xs,ws,kw', DECONV_CASES)
def test_deconvolution(xs, ws, kw, rng):
    cl = kw.get('channel_last', False)
    if cl:
        xs = (xs[0],) + xs[2:] + (xs[1],)
        ws = (ws[0],) + ws[2:] + (ws[1],)
    oc = (ws[-1] if cl else ws[1]) * kw.get('group', 1)
    x, w, b = _r(rng, *xs), _r(rng, *ws), _r(rng, oc)
    same(lambda x, w, b: F.deconvolution(x, w, b, **kw), [x, w, b])
    same(lambda x, w: F.add2(F.deconvolution(x, w, **kw), F.deconvolution(x, w, **kw)), [x, w])


@pytest.mark.parametrize('dv,kw', [(1, {}), (2, dict(pad=(1, 0), stride=(2, 1), dilation=(2, 1)))])
def test_depthwise_deconvolution(dv, kw, rng):
    x, w, b = _r(rng, 2, 4, 4, 3), _r(rng, 4, 3, 2), _r(rng, 4 // dv)
    same(lambda x, w, b: F.depthwise_deconvolution(x, w, b, divisor=dv, **kw), [x, w, b])
    same(lambda x, w: F.add2(F.depthwise_deconvolution(x, w, divisor=dv, **kw),
                             F.depthwise_deconvolution(x, w, divisor=dv, **kw)), [x, w])


def test_convolution_bad_weight_raises_under_cuda(rng):
    x = nn.Variable.from_numpy_array(_r(rng, 1, 4, 5, 5))
    w = nn.Variable.from_numpy_array(_r(rng, 2, 3, 3, 3))
    with nn.context_scope(CUDA), pytest.raises(ValueError, match='weight'):
        F.convolution(x, w)


@pytest.mark.parametrize('kvs,khs', [((3, 4, 5), (2, 4, 5)), ((2, 6, 7), (4, 5, 6))])
def test_adaptive_separable_convolution(kvs, khs, rng):
    # x (2, 3, 6, 6): output (6 - Kv + 1, 6 - Kh + 1); kernels may extend beyond it
    x, kv, kh = _r(rng, 2, 3, 6, 6), _r(rng, 2, *kvs), _r(rng, 2, *khs)
    f = F.adaptive_separable_convolution
    same(f, [x, kv, kh])
    same(lambda x, kv, kh: F.add2(f(x, kv, kh), f(x, kv, kh)), [x, kv, kh])
    same(f, [x, kv, kh], need_grad=[False, True, False])


@pytest.mark.parametrize('scaled', [False, True])
def test_binary_convolutions(scaled, rng):
    fn = F.binary_weight_convolution if scaled else F.binary_connect_convolution
    x, w, b = _r(rng, 2, 4, 5, 5), _r(rng, 6, 2, 3, 3), _r(rng, 6)
    w[0, 0, 0, 0] = 0                     # goes to quantize_zero_to
    side = [np.zeros_like(w)] + ([np.zeros(6, np.float32)] if scaled else [])
    ng = [True, True] + [False] * len(side)
    kw = dict(pad=(1, 0), stride=(1, 2), group=2, quantize_zero_to=-1.0)
    same(lambda x, w, *s: fn(x, w, *s, **kw), [x, w] + side + [b], need_grad=ng + [True])
    same(lambda x, w, *s: F.add2(fn(x, w, *s, group=2), fn(x, w, *s, group=2)), [x, w] + side,
         need_grad=ng)
    same(lambda x, w, *s: fn(x, w, *s, group=2), [x, w] + side, need_grad=[True] * len(ng))
    # the side inputs hold the binary weight (and its scale) after forward
    for ctx in (CPU, CUDA):
        vs = [nn.Variable.from_numpy_array(a) for a in [x, w] + side]
        with nn.context_scope(ctx):
            fn(*vs, **kw).forward()
        got = [v.d.copy() for v in vs[2:]]
        if ctx is CPU:
            ref = got
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=1e-6)


@pytest.mark.parametrize('algo,bias', [('largest_abs', True), ('random', False)])
def test_inq_convolution(algo, bias, rng):
    x, w, b = _r(rng, 2, 3, 5, 5), _r(rng, 4, 3, 3, 3), _r(rng, 4)
    ind = (rng.rand(*w.shape) < 0.2).astype(np.float32)
    kw = dict(pad=(1, 1), num_bits=3, inq_iterations=(1, 2, 4), selection_algorithm=algo,
              seed=5)
    res = {}
    for ctx in (CPU, CUDA):
        vs = [nn.Variable.from_numpy_array(a, need_grad=True) for a in (x, w, ind)]
        args = vs + ([nn.Variable.from_numpy_array(b, need_grad=True)] if bias else [])
        with nn.context_scope(ctx):
            y = F.inq_convolution(*args, **kw)
        steps = []
        for _ in range(5):      # passes 0..4: fixes at 1 and 2, all at 4
            y.forward()
            steps.append([y.d.copy(), vs[1].d.copy(), vs[2].d.copy()])
        for v in args:
            v.grad.zero()
        y.backward(np.random.RandomState(1).randn(*y.shape).astype(np.float32))
        y.backward(np.random.RandomState(2).randn(*y.shape).astype(np.float32))  # accumulates
        res[ctx is CUDA] = steps, [v.g.copy() for v in args]
    for got, ref in zip(res[True][0] + [res[True][1]], res[False][0] + [res[False][1]]):
        for g, r in zip(got, ref):
            np.testing.assert_allclose(g, r, **TOL)
    assert res[True][0][-1][2].all()    # every weight fixed at the last pass


def test_inq_convolution_gradient_masks_fixed_weights(rng):
    x, w = _r(rng, 1, 2, 4, 4), _r(rng, 3, 2, 2, 2)
    ind = (rng.rand(*w.shape) < 0.5).astype(np.float32)
    same(lambda x, w, i: F.inq_convolution(x, w, i), [x, w, ind], need_grad=[True, True, False])
    same(lambda x, w, i: F.add2(F.inq_convolution(x, w, i), F.inq_convolution(x, w, i)),
         [x, w, ind], need_grad=[True, True, True])
