"""binary_connect_convolution, binary_weight_convolution and inq_convolution:
forward against a NumPy convolution of the effective weight, straight-through
weight gradients, and argument errors."""
import numpy as np
import pytest

import nncy as nn
import nncy.functions as F

from checker import check_function, check_raises

R = np.random.RandomState(11)


def conv_ref(x, w, b=None, pad=(0, 0)):
    """2-D cross-correlation in float64 (N, C, H, W) * (O, C, kh, kw)."""
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad[0],) * 2, (pad[1],) * 2))
    o, c, kh, kw = w.shape
    n, _, h, wd = x.shape
    y = np.zeros((n, o, h - kh + 1, wd - kw + 1))
    for i in range(kh):
        for j in range(kw):
            y += np.einsum('nchw,oc->nohw', x[:, :, i:i + y.shape[2], j:j + y.shape[3]],
                           w[:, :, i, j].astype(np.float64))
    return y if b is None else y + b.reshape(1, -1, 1, 1)


def conv_grads(x, w, dy, pad):
    """(dx, dw) of conv_ref by its adjoint, in float64."""
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad[0],) * 2, (pad[1],) * 2))
    dxp, dw = np.zeros_like(xp), np.zeros(w.shape)
    kh, kw = w.shape[2:]
    for i in range(kh):
        for j in range(kw):
            win = (slice(None), slice(None), slice(i, i + dy.shape[2]), slice(j, j + dy.shape[3]))
            dxp[win] += np.einsum('nohw,oc->nchw', dy, w[:, :, i, j])
            dw[:, :, i, j] = np.einsum('nohw,nchw->oc', dy, xp[win])
    return dxp[:, :, pad[0]:xp.shape[2] - pad[0], pad[1]:xp.shape[3] - pad[1]], dw


def sign0(w, zero_to):
    return np.where(w > 0, 1.0, np.where(w < 0, -1.0, zero_to))


def alpha_of(w):
    return np.abs(w).reshape(w.shape[0], -1).mean(axis=1)


def binary_ref(x, w, bw, b=None, pad=(0, 0), quantize_zero_to=1.0, **_):
    return conv_ref(x, sign0(w, quantize_zero_to), b, pad)


def binary_weight_ref(x, w, bw, alpha, b=None, pad=(0, 0), quantize_zero_to=1.0, **_):
    weff = sign0(w, quantize_zero_to) * alpha_of(w).reshape(-1, 1, 1, 1)
    return conv_ref(x, weff, b, pad)


def _inputs(scaled, bias):
    x = R.randn(2, 3, 5, 5).astype(np.float32)
    w = R.randn(4, 3, 3, 3).astype(np.float32)
    w.reshape(-1)[0] = 0.0                          # exercises quantize_zero_to
    side = [np.zeros_like(w)] + ([np.zeros(4, np.float32)] if scaled else [])
    return [x, w] + side + ([R.randn(4).astype(np.float32)] if bias else [])


@pytest.mark.parametrize('bias', [False, True])
@pytest.mark.parametrize('scaled', [False, True])
def test_binary_convolutions(scaled, bias):
    fn = F.binary_weight_convolution if scaled else F.binary_connect_convolution
    ref = binary_weight_ref if scaled else binary_ref
    eff = ((lambda w, z: sign0(w, z) * alpha_of(w).reshape(-1, 1, 1, 1)) if scaled
           else (lambda w, z: sign0(w, z)))
    inputs = _inputs(scaled, bias)
    n_side = 2 if scaled else 1
    grad_inputs = [True, True] + [False] * n_side + ([True] if bias else [])

    def ref_grad(*xs_dy, **a):
        xs, dy = xs_dy[:-1], xs_dy[-1]
        dx, dw = conv_grads(xs[0], eff(xs[1], a.get('quantize_zero_to', 1.0)), dy,
                            a.get('pad', (0, 0)))
        out = [dx, dw] + [None] * n_side
        return out + ([dy.sum(axis=(0, 2, 3))] if bias else [])

    for args in ({'pad': (1, 1)}, {'quantize_zero_to': -1.0}):
        # the weight's gradient is straight-through (not the derivative of sign):
        # checked against the analytic reference, finite differences only for x
        check_function(fn, inputs, ref, args, grad_inputs=grad_inputs, check_fd=False,
                       ref_grad=ref_grad, atol=1e-4, rtol=1e-4, grad_atol=1e-4,
                       grad_rtol=1e-4)


def test_binary_convolution_writes_its_side_inputs():
    x, w, bw, al = _inputs(True, False)
    vs = [nn.Variable.from_numpy_array(a) for a in (x, w, bw, al)]
    F.binary_weight_convolution(*vs).forward()
    np.testing.assert_array_equal(vs[2].d, sign0(w, 1.0))
    np.testing.assert_allclose(vs[3].d, alpha_of(w), rtol=1e-6)


def test_inq_convolution_quantizes_and_masks():
    x = nn.Variable.from_numpy_array(R.randn(2, 3, 5, 5).astype(np.float32), need_grad=True)
    w0 = R.uniform(0.05, 1.0, (4, 3, 3, 3)).astype(np.float32) * \
        np.where(R.rand(4, 3, 3, 3) < 0.5, -1, 1).astype(np.float32)
    w = nn.Variable.from_numpy_array(w0.copy(), need_grad=True)
    ind = nn.Variable.from_numpy_array(np.zeros(w0.shape, np.float32))
    y = F.inq_convolution(x, w, ind, inq_iterations=(1,), pad=(1, 1))
    y.forward()                                     # count 0: plain convolution
    np.testing.assert_allclose(y.d, conv_ref(x.d, w0, pad=(1, 1)), rtol=1e-4, atol=1e-4)
    y.forward()                                     # count 1, the last: all fixed
    assert ind.d.sum() == w0.size
    mag = np.abs(w.d)
    assert np.allclose(np.log2(mag[mag > 0]), np.round(np.log2(mag[mag > 0])))
    np.testing.assert_allclose(y.d, conv_ref(x.d, w.d, pad=(1, 1)), rtol=1e-4, atol=1e-4)
    w.grad.zero()
    x.grad.zero()
    y.backward(np.ones(y.shape, np.float32))
    np.testing.assert_array_equal(w.g, 0)          # fixed weights learn nothing
    dx, _ = conv_grads(x.d, w.d, np.ones(y.shape), (1, 1))
    np.testing.assert_allclose(x.g, dx, rtol=1e-4, atol=1e-4)


def test_quantized_convolution_errors():
    x, w, bw = _inputs(False, False)
    check_raises(F.binary_connect_convolution, [x, w, np.zeros((4, 3), np.float32)],
                 match_words=['binary_weight'])
    check_raises(F.binary_weight_convolution, [x, w, bw, np.zeros(3, np.float32)],
                 match_words=['alpha'])
    check_raises(F.inq_convolution, [x, w, bw], {'num_bits': 1}, match_words=['num_bits'])
    check_raises(F.binary_connect_convolution, [x, w[:, :2], np.zeros((4, 2, 3, 3),
                                                                      np.float32)],
                 match_words=['weight'])


@pytest.mark.parametrize('half', [False, True])
def test_written_inputs_survive_a_half_context(rng, half):
    """Functions that write into inputs (quantized weights, VAT noise) keep
    those writes when a half context runs them on float32 copies."""
    ctx = nn.Context(['cpu:half' if half else 'cpu:float'])
    x = nn.Variable.from_numpy_array(rng.randn(2, 3).astype(np.float32))
    w = nn.Variable.from_numpy_array(rng.randn(3, 4).astype(np.float32), need_grad=True)
    bw = nn.Variable.from_numpy_array(np.zeros((3, 4), np.float32))
    alpha = nn.Variable.from_numpy_array(np.zeros(4, np.float32))
    with nn.context_scope(ctx):
        F.binary_weight_affine(x, w, bw, alpha).forward()
    np.testing.assert_array_equal(bw.d, np.where(w.d > 0, 1, -1))
    np.testing.assert_allclose(alpha.d, np.abs(w.d).mean(axis=0), rtol=1e-3)
    noise = nn.Variable.from_numpy_array(np.zeros((2, 3), np.float32))
    v = nn.Variable.from_numpy_array(rng.randn(2, 3).astype(np.float32), need_grad=True)
    with nn.context_scope(ctx):
        y = F.vat_noise(v, noise, eps=2.0)
    y.forward()
    y.backward(np.ones((2, 3), np.float32))
    np.testing.assert_allclose(noise.d, 2.0)
