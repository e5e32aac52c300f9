"""Checker runs and argument errors for the convolution and pooling layers:
convolution, depthwise_convolution, deconvolution, depthwise_deconvolution,
adaptive_separable_convolution, max_pooling, average_pooling, sum_pooling,
global_average_pooling and unpooling.

The NumPy references are written from the definitions (sums over window taps
of a zero-padded input), independently of the im2col / direct kernels."""
import itertools

import numpy as np
import pytest

import nncy as nn
import nncy.functions as F

from checker import check_function, check_raises

R = np.random.RandomState(11)


def randn(*shape, scale=1.0):
    return np.asarray(R.randn(*shape) * scale, dtype=np.float32).reshape(shape)


def distinct(*shape):
    """Values at least 0.05 apart (max pooling's argmax survives a finite-difference step)."""
    n = int(np.prod(shape))
    return (R.permutation(n).astype(np.float32) * 0.05 - n * 0.025).reshape(shape)


def _defaults(ns, pad, stride, dilation):
    return (tuple(pad) if pad is not None else (0,) * ns,
            tuple(stride) if stride is not None else (1,) * ns,
            tuple(dilation) if dilation is not None else (1,) * ns)


def _taps(kernel):
    return itertools.product(*[range(k) for k in kernel])


# --------------------------------------------------------------------------
# references
# --------------------------------------------------------------------------

def conv_ref(x, w, b=None, base_axis=1, pad=None, stride=None, dilation=None, group=1,
             channel_last=False):
    """y[n, o, p] = b[o] + sum_{c in o's group, taps t} w[o, c, t] x_pad[n, c, p s + t d]."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    if channel_last:
        x, w = np.moveaxis(x, -1, base_axis), np.moveaxis(w, -1, 1)
    lead = x.shape[:base_axis]
    x = x.reshape((-1,) + x.shape[base_axis:])
    ns = x.ndim - 2
    pad, stride, dilation = _defaults(ns, pad, stride, dilation)
    oc, cg, kernel = w.shape[0], w.shape[1], w.shape[2:]
    ocg = oc // group
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in pad])
    out = [(n + 2 * p - d * (k - 1) - 1) // s + 1
           for n, p, d, k, s in zip(x.shape[2:], pad, dilation, kernel, stride)]
    y = np.zeros((x.shape[0], oc) + tuple(out))
    for g in range(group):
        xg, wg = xp[:, g * cg:(g + 1) * cg], w[g * ocg:(g + 1) * ocg]
        for t in _taps(kernel):
            sl = tuple(slice(ti * d, ti * d + (o - 1) * s + 1, s)
                       for ti, d, o, s in zip(t, dilation, out, stride))
            patch = xg[(slice(None), slice(None)) + sl]
            y[:, g * ocg:(g + 1) * ocg] += np.einsum('nc...,oc->no...', patch,
                                                      wg[(slice(None), slice(None)) + t])
    if b is not None:
        y += b.astype(np.float64).reshape((1, oc) + (1,) * ns)
    y = y.reshape(lead + y.shape[1:])
    return np.moveaxis(y, base_axis, -1) if channel_last else y


def deconv_ref(x, w, b=None, base_axis=1, pad=None, stride=None, dilation=None, group=1,
               channel_last=False, output_padding=None):
    """The transpose of conv_ref: every input element spreads w-weighted over the
    output positions p s + t d of the padded output, which is then cropped."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    if channel_last:
        x, w = np.moveaxis(x, -1, base_axis), np.moveaxis(w, -1, 1)
    lead = x.shape[:base_axis]
    x = x.reshape((-1,) + x.shape[base_axis:])
    ns = x.ndim - 2
    pad, stride, dilation = _defaults(ns, pad, stride, dilation)
    opad = tuple(output_padding) if output_padding is not None else (0,) * ns
    ic, ocg, kernel = w.shape[0], w.shape[1], w.shape[2:]
    icg = ic // group
    lin = x.shape[2:]
    out = [s * (n - 1) - 2 * p + d * (k - 1) + 1 + op
           for n, p, d, k, s, op in zip(lin, pad, dilation, kernel, stride, opad)]
    yp = np.zeros((x.shape[0], ocg * group) + tuple(o + 2 * p for o, p in zip(out, pad)))
    for g in range(group):
        xg, wg = x[:, g * icg:(g + 1) * icg], w[g * icg:(g + 1) * icg]
        for t in _taps(kernel):
            sl = tuple(slice(ti * d, ti * d + (n - 1) * s + 1, s)
                       for ti, d, n, s in zip(t, dilation, lin, stride))
            yp[(slice(None), slice(g * ocg, (g + 1) * ocg)) + sl] += np.einsum(
                'nc...,co->no...', xg, wg[(slice(None), slice(None)) + t])
    y = yp[(slice(None), slice(None)) + tuple(slice(p, p + o) for p, o in zip(pad, out))]
    if b is not None:
        y = y + b.astype(np.float64).reshape((1, -1) + (1,) * ns)
    y = y.reshape(lead + y.shape[1:])
    return np.moveaxis(y, base_axis, -1) if channel_last else y


def depthwise_conv_ref(x, w, b=None, base_axis=1, pad=None, stride=None, dilation=None,
                       multiplier=1):
    """Output channel c m + j convolves input channel c with kernel w[c m + j]."""
    c = x.shape[base_axis]
    return conv_ref(x, w.reshape((w.shape[0], 1) + w.shape[1:]), b, base_axis, pad, stride,
                    dilation, group=c)


def depthwise_deconv_ref(x, w, b=None, base_axis=1, pad=None, stride=None, dilation=None,
                         divisor=1):
    """Output channel o sums the deconvolutions of input channels o d + i, i < d."""
    c = x.shape[base_axis]
    return deconv_ref(x, w.reshape((w.shape[0], 1) + w.shape[1:]), b, base_axis, pad, stride,
                      dilation, group=c // divisor)


def pool_ref(mode, x, kernel, stride=None, ignore_border=True, pad=None, channel_last=False,
             including_pad=True):
    """Pooling over windows [o s - p, o s - p + k) of each pooled axis; padded
    positions are skipped (max, sum) and the average divides by the number of
    positions inside the padded input (including_pad) or inside x."""
    x = x.astype(np.float64)
    nk = len(kernel)
    stride = tuple(stride) if stride is not None else tuple(kernel)
    pad = tuple(pad) if pad is not None else (0,) * nk
    if channel_last:
        x = np.moveaxis(x, -1, 0)
    lens = x.shape[-nk:]
    out = [(n + p - ((k - p) if ignore_border else 1)) // s + 1
           for n, k, s, p in zip(lens, kernel, stride, pad)]
    ext = [max(n + 2 * p, (o - 1) * s + k) for n, o, s, k, p in zip(lens, out, stride, kernel, pad)]
    lead = x.shape[:-nk]
    fill = -np.inf if mode == 'max' else 0.0
    xp = np.full(lead + tuple(ext), fill)
    inner = tuple(slice(p, p + n) for p, n in zip(pad, lens))
    xp[(Ellipsis,) + inner] = x
    cnt = np.zeros(ext)
    if including_pad:
        cnt[tuple(slice(0, n + 2 * p) for n, p in zip(lens, pad))] = 1
    else:
        cnt[inner] = 1
    y = np.full(lead + tuple(out), fill)
    ysum = np.zeros(tuple(out))
    for t in _taps(kernel):
        sl = tuple(slice(ti, ti + (o - 1) * s + 1, s) for ti, o, s in zip(t, out, stride))
        v = xp[(Ellipsis,) + sl]
        y = np.maximum(y, v) if mode == 'max' else y + v
        ysum += cnt[sl]
    if mode == 'average':
        y = y / ysum
    return np.moveaxis(y, 0, -1) if channel_last else y


def pool_grad_ref(mode, x, gy, kernel, stride=None, ignore_border=True, pad=None,
                  channel_last=False, including_pad=True):
    """Gradient of pool_ref: gy spread over each window (divided by the window
    count for the average); for max, all of it to the window's first maximum
    in row-major tap order."""
    x, gy = x.astype(np.float64), gy.astype(np.float64)
    nk = len(kernel)
    stride = tuple(stride) if stride is not None else tuple(kernel)
    pad = tuple(pad) if pad is not None else (0,) * nk
    if channel_last:
        x, gy = np.moveaxis(x, -1, 0), np.moveaxis(gy, -1, 0)
    lens, out = x.shape[-nk:], gy.shape[-nk:]
    ext = [max(n + 2 * p, (o - 1) * s + k) for n, o, s, k, p in zip(lens, out, stride, kernel, pad)]
    lead = x.shape[:-nk]
    inner = tuple(slice(p, p + n) for p, n in zip(pad, lens))
    xp = np.full(lead + tuple(ext), -np.inf)
    xp[(Ellipsis,) + inner] = x
    cnt = np.zeros(ext)
    cnt[tuple(slice(0, n + 2 * p) for n, p in zip(lens, pad)) if including_pad else inner] = 1
    taps = list(_taps(kernel))
    sls = [tuple(slice(ti, ti + (o - 1) * s + 1, s) for ti, o, s in zip(t, out, stride))
           for t in taps]
    gxp = np.zeros(lead + tuple(ext))
    if mode == 'max':
        best = np.full(gy.shape, -np.inf)
        arg = np.full(gy.shape, -1)
        for i, sl in enumerate(sls):
            v = xp[(Ellipsis,) + sl]
            take = v > best
            best, arg = np.where(take, v, best), np.where(take, i, arg)
        for i, sl in enumerate(sls):
            gxp[(Ellipsis,) + sl] += np.where(arg == i, gy, 0.0)
    else:
        g = gy
        if mode == 'average':
            g = gy / sum(cnt[sl] for sl in sls)
        for sl in sls:
            gxp[(Ellipsis,) + sl] += g
    gx = gxp[(Ellipsis,) + inner]
    return np.moveaxis(gx, 0, -1) if channel_last else gx


def max_ref(x, **kw):
    return pool_ref('max', x, **kw)


def sum_ref(x, **kw):
    return pool_ref('sum', x, **kw)


def avg_ref(x, **kw):
    return pool_ref('average', x, **kw)


def asconv_ref(x, kv, kh):
    """y[b, c, h, w] = sum_{j, i} kv[b, j, h, w] kh[b, i, h, w] x[b, c, h + j, w + i]."""
    x, kv, kh = (a.astype(np.float64) for a in (x, kv, kh))
    oh, ow = x.shape[2] - kv.shape[1] + 1, x.shape[3] - kh.shape[1] + 1
    y = np.zeros(x.shape[:2] + (oh, ow))
    for j in range(kv.shape[1]):
        for i in range(kh.shape[1]):
            k = kv[:, j, :oh, :ow] * kh[:, i, :oh, :ow]
            y += k[:, None] * x[:, :, j:j + oh, i:i + ow]
    return y


# --------------------------------------------------------------------------
# convolution
# --------------------------------------------------------------------------

CONV_CASES = [
    # x shape, w shape, bias, args
    ((2, 3, 7), (4, 3, 3), True, dict(pad=(1,), stride=(2,))),
    ((2, 4, 5, 6), (6, 2, 3, 2), True,
     dict(pad=(1, 0), stride=(1, 2), dilation=(2, 1), group=2)),
    ((1, 2, 4, 4), (3, 2, 3, 3), False, {}),
    ((1, 2, 4, 3, 5), (2, 2, 2, 2, 3), True, dict(pad=(1, 0, 1), stride=(2, 1, 2))),
    ((2, 2, 3, 5, 5), (4, 3, 3, 3), True, dict(base_axis=2, pad=(1, 1))),
    ((2, 5, 6, 4), (6, 3, 2, 2), True,
     dict(pad=(1, 1), stride=(2, 1), dilation=(1, 2), group=2, channel_last=True)),
    ((2, 7, 3), (4, 3, 3), False, dict(channel_last=True, dilation=(2,))),
    ((1, 3, 4, 3, 2), (2, 2, 3, 2, 2), True,
     dict(pad=(1, 0, 1), stride=(1, 2, 1), channel_last=True)),
    ((2, 4, 3, 3), (5, 4, 1, 1), True, {}),                       # 1x1: no im2col
    ((2, 3, 3, 4), (5, 1, 1, 4), True, dict(channel_last=True)),  # 1x1 channel-last
    ((2, 3, 5, 5), (6, 1, 3, 3), True, dict(group=3, pad=(1, 1))),  # depthwise kernels
    ((2, 2, 5, 6, 3), (4, 2, 2, 3), True, dict(base_axis=2, channel_last=True)),
]


@pytest.mark.parametrize('xs,ws,bias,args', CONV_CASES, ids=str)
def test_convolution(xs, ws, bias, args):
    x, w = randn(*xs), randn(*ws, scale=0.5)
    oc = ws[0]
    b = randn(oc) if bias else None
    check_function(F.convolution, [x, w, b], conv_ref, args, atol=2e-5, rtol=2e-5,
                   fd_atol=2e-2, fd_rtol=2e-2, fd_max_elems=24)


def test_convolution_batch_parallel_matches_numpy():
    """Enough work that samples run in parallel (one column buffer per thread)."""
    x, w, b = randn(4, 16, 12, 12), randn(16, 16, 3, 3, scale=0.2), randn(16)
    for cl in (False, True):
        xa = np.ascontiguousarray(np.moveaxis(x, 1, -1)) if cl else x
        wa = np.ascontiguousarray(np.moveaxis(w, 1, -1)) if cl else w
        check_function(F.convolution, [xa, wa, b], conv_ref,
                       dict(pad=(1, 1), channel_last=cl), atol=1e-4, rtol=1e-4,
                       fd_max_elems=4, fd_atol=5e-2, fd_rtol=5e-2, check_clear_buffer=False,
                       check_modes=False)


def test_convolution_single_sample_threaded_matches_numpy():
    """One large sample: threaded products, im2col / col2im split across threads."""
    x, w, b = randn(1, 16, 30, 30), randn(12, 8, 3, 3, scale=0.2), randn(12)
    for cl in (False, True):
        xa = np.ascontiguousarray(np.moveaxis(x, 1, -1)) if cl else x
        wa = np.ascontiguousarray(np.moveaxis(w, 1, -1)) if cl else w
        check_function(F.convolution, [xa, wa, b], conv_ref,
                       dict(pad=(2, 1), dilation=(2, 1), group=2, channel_last=cl),
                       atol=1e-4, rtol=1e-4, fd_max_elems=4, fd_atol=5e-2, fd_rtol=5e-2,
                       check_clear_buffer=False, check_modes=False)


@pytest.mark.parametrize('xs,oc,pad', [((3, 17, 11, 13), 20, (1, 2)),
                                        ((2, 24, 10, 9), 19, (0, 1)),
                                        ((1, 16, 9, 12), 32, (2, 0)),
                                        ((2, 64, 9, 7), 65, (1, 0)),
                                        ((4, 64, 24, 23), 64, (1, 1))], ids=str)
def test_convolution_winograd_matches_numpy(xs, oc, pad):
    """3x3, stride 1, at least 16 channels and 64 output positions: the
    Winograd tiles (odd output sizes leave partial tiles), forward and both
    gradients against the definitions, and finite differences."""
    x, w, b = randn(*xs), randn(oc, xs[1], 3, 3, scale=0.2), randn(oc)
    xv = nn.Variable.from_numpy_array(x, need_grad=True)
    wv = nn.Variable.from_numpy_array(w, need_grad=True)
    bv = nn.Variable.from_numpy_array(b, need_grad=True)
    y = F.convolution(xv, wv, bv, pad=pad)
    y.forward()
    np.testing.assert_allclose(y.d, conv_ref(x, w, b, pad=pad), rtol=1e-4, atol=1e-4)
    gy = randn(*y.shape)
    xv.grad.zero()
    wv.grad.zero()
    y.backward(gy)
    np.testing.assert_allclose(xv.g, deconv_ref(gy, w, pad=pad), rtol=1e-4, atol=1e-4)
    # weight gradient: gw[o, c, t] = sum over samples and positions of gy x_pad
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])])
    oh, ow = y.shape[2:]
    gw = np.zeros(w.shape)
    for t in _taps((3, 3)):
        gw[:, :, t[0], t[1]] = np.einsum('nohw,nchw->oc', gy, xp[:, :, t[0]:t[0] + oh, t[1]:t[1] + ow])
    np.testing.assert_allclose(wv.g, gw, rtol=1e-4, atol=1e-4)
    # deconvolution's forward is the same input gradient
    d = F.deconvolution(nn.Variable.from_numpy_array(gy), wv, None, pad=pad)
    d.forward()
    np.testing.assert_allclose(d.d, deconv_ref(gy, w, pad=pad), rtol=1e-4, atol=1e-4)
    check_function(F.convolution, [x, w, b], conv_ref, dict(pad=pad), atol=1e-4, rtol=1e-4,
                   fd_max_elems=4, fd_atol=5e-2, fd_rtol=5e-2, check_clear_buffer=False,
                   check_modes=False)


def test_convolution_positional_and_need_grad():
    x, w = randn(1, 2, 5, 5), randn(3, 2, 3, 3)
    xv, wv = nn.Variable.from_numpy_array(x), nn.Variable.from_numpy_array(w, need_grad=True)
    y = F.convolution(xv, wv, None, 1, (1, 1), (2, 2))
    assert y.shape == (1, 3, 3, 3)
    y.forward()
    np.testing.assert_allclose(y.d, conv_ref(x, w, pad=(1, 1), stride=(2, 2)),
                               rtol=1e-5, atol=1e-5)
    y.backward(np.ones(y.shape, np.float32))
    assert np.all(np.isfinite(wv.g))


def test_convolution_bad_arguments():
    x, w = randn(2, 4, 5, 5), randn(6, 2, 3, 3)
    conv = F.convolution
    check_raises(conv, [x, w], {'group': 2, 'base_axis': 3}, exc=ValueError,
                 match_words=['base_axis'])
    check_raises(conv, [x, w], exc=ValueError, match_words=['weight'])       # C/group mismatch
    check_raises(conv, [x, w], {'group': 3}, exc=ValueError, match_words=['group'])
    check_raises(conv, [x, w], {'group': 0}, exc=ValueError, match_words=['group'])
    check_raises(conv, [x, randn(6, 4, 3)], exc=ValueError, match_words=['weight'])
    check_raises(conv, [x, w], {'group': 2, 'pad': (1,)}, exc=ValueError, match_words=['pad'])
    check_raises(conv, [x, w], {'group': 2, 'pad': (-1, 0)}, exc=ValueError,
                 match_words=['pad'])
    check_raises(conv, [x, w], {'group': 2, 'stride': (0, 1)}, exc=ValueError,
                 match_words=['stride'])
    check_raises(conv, [x, w], {'group': 2, 'dilation': (1, 0)}, exc=ValueError,
                 match_words=['dilation'])
    check_raises(conv, [x, w], {'group': 2, 'dilation': (3, 1)}, exc=ValueError,
                 match_words=['x'])                                         # kernel too big
    check_raises(conv, [x, w, randn(5)], {'group': 2}, exc=ValueError, match_words=['bias'])
    check_raises(conv, [x, w], {'group': 2, 'pad': 'same'}, exc=TypeError,
                 match_words=['pad'])
    check_raises(conv, [x, w], {'group': 2.0}, exc=TypeError, match_words=['group'])
    check_raises(conv, [x, w], {'group': 2, 'channel_last': 'yes'}, exc=TypeError,
                 match_words=['channel_last'])
    check_raises(conv, [randn(4, 5), randn(3, 4)], exc=ValueError, match_words=['base_axis'])


# --------------------------------------------------------------------------
# depthwise convolution
# --------------------------------------------------------------------------

DW_CASES = [
    ((2, 3, 8), (6, 3), True, dict(multiplier=2, pad=(1,), stride=(2,))),
    ((2, 3, 6, 5), (3, 3, 3), True, dict(pad=(1, 2), stride=(1, 2), dilation=(2, 1))),
    ((1, 2, 6, 6), (2, 2, 2), False, {}),
    ((1, 2, 4, 3, 5), (4, 2, 2, 3), True, dict(multiplier=2, pad=(1, 0, 1))),
    ((2, 2, 3, 7), (6, 3), True, dict(base_axis=2, multiplier=2, dilation=(2,))),
]


@pytest.mark.parametrize('xs,ws,bias,args', DW_CASES, ids=str)
def test_depthwise_convolution(xs, ws, bias, args):
    x, w = randn(*xs), randn(*ws, scale=0.5)
    b = randn(ws[0]) if bias else None
    check_function(F.depthwise_convolution, [x, w, b], depthwise_conv_ref, args,
                   atol=2e-5, rtol=2e-5, fd_atol=2e-2, fd_rtol=2e-2, fd_max_elems=24)


def test_depthwise_convolution_bad_arguments():
    x = randn(2, 3, 5, 5)
    dw = F.depthwise_convolution
    check_raises(dw, [x, randn(4, 3, 3)], exc=ValueError, match_words=['weight'])
    check_raises(dw, [x, randn(3, 3, 3)], {'multiplier': 2}, exc=ValueError,
                 match_words=['weight'])
    check_raises(dw, [x, randn(3, 3, 3)], {'multiplier': 0}, exc=ValueError,
                 match_words=['multiplier'])
    check_raises(dw, [x, randn(3, 3, 3, 3)], exc=ValueError, match_words=['weight'])
    check_raises(dw, [x, randn(3, 3, 3), randn(6)], exc=ValueError, match_words=['bias'])
    check_raises(dw, [x, randn(3, 3, 3)], {'stride': (1,)}, exc=ValueError,
                 match_words=['stride'])


# --------------------------------------------------------------------------
# deconvolution
# --------------------------------------------------------------------------

DECONV_CASES = [
    ((2, 3, 4), (3, 2, 3), True, dict(stride=(2,), pad=(1,), output_padding=(1,))),
    ((2, 4, 3, 4), (4, 3, 2, 3), True,
     dict(stride=(2, 1), dilation=(1, 2), pad=(0, 1), group=2)),
    ((1, 2, 2, 3, 2), (2, 2, 2, 2, 2), False,
     dict(stride=(2, 1, 2), output_padding=(1, 0, 1))),
    ((2, 3, 4, 4), (4, 2, 3, 2), True,
     dict(stride=(2, 2), pad=(1, 0), output_padding=(1, 1), group=2, channel_last=True)),
    ((2, 3, 2, 3, 3), (2, 3, 2, 2), True, dict(base_axis=2, stride=(2, 1))),
    ((2, 4, 3, 3), (4, 5, 1, 1), True, {}),                      # 1x1
    ((2, 3, 4, 4), (3, 1, 3, 3), True, dict(group=3, stride=(2, 2), pad=(1, 1))),  # depthwise
    ((1, 5, 3), (3, 3, 2), False, dict(channel_last=True, stride=(3,), output_padding=(2,))),
]


@pytest.mark.parametrize('xs,ws,bias,args', DECONV_CASES, ids=str)
def test_deconvolution(xs, ws, bias, args):
    x, w = randn(*xs), randn(*ws, scale=0.5)
    cl = args.get('channel_last', False)
    oc = (ws[-1] if cl else ws[1]) * args.get('group', 1)
    b = randn(oc) if bias else None
    check_function(F.deconvolution, [x, w, b], deconv_ref, args, atol=2e-5, rtol=2e-5,
                   fd_atol=2e-2, fd_rtol=2e-2, fd_max_elems=24)


def test_deconvolution_inverts_convolution_shape():
    """With output_padding, deconvolution restores the shape a strided convolution
    reduced."""
    x = nn.Variable((2, 3, 9, 8))
    w = nn.Variable((4, 3, 3, 3))
    y = F.convolution(x, w, pad=(1, 1), stride=(2, 2))
    assert y.shape == (2, 4, 5, 4)
    z = F.deconvolution(y, w, pad=(1, 1), stride=(2, 2), output_padding=(0, 1))
    assert z.shape == x.shape


def test_deconvolution_bad_arguments():
    x = randn(2, 4, 3, 3)
    dc = F.deconvolution
    check_raises(dc, [x, randn(3, 2, 3, 3)], exc=ValueError, match_words=['weight'])
    check_raises(dc, [x, randn(4, 2, 3, 3)], {'group': 3}, exc=ValueError,
                 match_words=['group'])
    check_raises(dc, [x, randn(4, 2, 3, 3)], {'stride': (2, 2), 'output_padding': (2, 0)},
                 exc=ValueError, match_words=['output_padding'])
    check_raises(dc, [x, randn(4, 2, 3, 3)], {'output_padding': (0,)}, exc=ValueError,
                 match_words=['output_padding'])
    check_raises(dc, [x, randn(4, 2, 3, 3)], {'pad': (3, 3)}, exc=ValueError,
                 match_words=['pad'])
    check_raises(dc, [x, randn(4, 2, 3, 3), randn(4)], exc=ValueError, match_words=['bias'])
    check_raises(dc, [x, randn(4, 2, 3)], exc=ValueError, match_words=['weight'])


# --------------------------------------------------------------------------
# depthwise deconvolution
# --------------------------------------------------------------------------

DWD_CASES = [
    ((2, 4, 5), (4, 3), True, dict(divisor=2, stride=(2,), pad=(1,))),
    ((2, 3, 3, 4), (3, 2, 3), True, dict(stride=(2, 1), pad=(0, 1), dilation=(1, 2))),
    ((1, 3, 2, 3, 2), (3, 2, 2, 2), False, dict(divisor=3, stride=(1, 2, 2))),
    ((2, 2, 2, 5), (2, 3), True, dict(base_axis=2, divisor=2)),
]


@pytest.mark.parametrize('xs,ws,bias,args', DWD_CASES, ids=str)
def test_depthwise_deconvolution(xs, ws, bias, args):
    x, w = randn(*xs), randn(*ws, scale=0.5)
    base = args.get('base_axis', 1)
    b = randn(xs[base] // args.get('divisor', 1)) if bias else None
    check_function(F.depthwise_deconvolution, [x, w, b], depthwise_deconv_ref, args,
                   atol=2e-5, rtol=2e-5, fd_atol=2e-2, fd_rtol=2e-2, fd_max_elems=24)


def test_depthwise_deconvolution_bad_arguments():
    x = randn(2, 4, 5, 5)
    dd = F.depthwise_deconvolution
    check_raises(dd, [x, randn(4, 3, 3)], {'divisor': 3}, exc=ValueError,
                 match_words=['divisor'])
    check_raises(dd, [x, randn(2, 3, 3)], exc=ValueError, match_words=['weight'])
    check_raises(dd, [x, randn(4, 3, 3), randn(4)], {'divisor': 2}, exc=ValueError,
                 match_words=['bias'])


# --------------------------------------------------------------------------
# adaptive separable convolution
# --------------------------------------------------------------------------

@pytest.mark.parametrize('kvs,khs', [((2, 3, 4, 6), (2, 2, 4, 6)),
                                     ((2, 3, 5, 7), (2, 2, 5, 7))], ids=str)
def test_adaptive_separable_convolution(kvs, khs):
    x, kv, kh = randn(2, 3, 6, 7), randn(*kvs), randn(*khs)
    check_function(F.adaptive_separable_convolution, [x, kv, kh], asconv_ref,
                   atol=2e-5, rtol=2e-5, fd_atol=2e-2, fd_rtol=2e-2, fd_max_elems=24)


def test_adaptive_separable_convolution_bad_arguments():
    x = randn(2, 3, 6, 7)
    asc = F.adaptive_separable_convolution
    check_raises(asc, [x, randn(2, 3, 4), randn(2, 2, 4, 6)], exc=ValueError,
                 match_words=['vertical_kernel'])
    check_raises(asc, [x, randn(1, 3, 4, 6), randn(2, 2, 4, 6)], exc=ValueError,
                 match_words=['batch'])
    check_raises(asc, [x, randn(2, 7, 4, 6), randn(2, 2, 4, 6)], exc=ValueError,
                 match_words=['vertical_kernel'])
    check_raises(asc, [x, randn(2, 3, 3, 6), randn(2, 2, 4, 6)], exc=ValueError,
                 match_words=['vertical_kernel'])
    check_raises(asc, [x, randn(2, 3, 4, 6), randn(2, 2, 4, 5)], exc=ValueError,
                 match_words=['horizontal_kernel'])


# --------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------

POOL_CASES = [
    # x shape, args
    ((2, 3, 4, 6), dict(kernel=(2, 2))),
    ((2, 2, 5, 5), dict(kernel=(3, 2), stride=(2, 2), pad=(1, 0), ignore_border=False)),
    ((2, 2, 5, 7), dict(kernel=(3, 3), stride=(2, 2), pad=(1, 1))),
    ((2, 3, 7), dict(kernel=(3,), stride=(2,), pad=(1,))),
    ((1, 2, 4, 5, 3), dict(kernel=(2, 3, 2), stride=(2, 2, 1), pad=(1, 1, 0),
                           ignore_border=False)),
    ((2, 5, 4, 3), dict(kernel=(2, 2), stride=(1, 2), pad=(1, 0), channel_last=True)),
    ((2, 5, 3), dict(kernel=(3,), stride=(2,), ignore_border=False, channel_last=True)),
    ((4, 6), dict(kernel=(2, 3))),
    ((1, 2, 6, 6), dict(kernel=(2, 2), stride=(1, 1))),
]


@pytest.mark.parametrize('xs,args', POOL_CASES, ids=str)
def test_max_pooling(xs, args):
    check_function(F.max_pooling, [distinct(*xs)], max_ref, args, atol=1e-6, rtol=1e-6,
                   fd_max_elems=32,
                   ref_grad=lambda x, gy, **kw: (pool_grad_ref('max', x, gy, **kw),))


@pytest.mark.parametrize('including_pad', [True, False])
@pytest.mark.parametrize('xs,args', POOL_CASES, ids=str)
def test_average_pooling(xs, args, including_pad):
    args = dict(args, including_pad=including_pad)
    check_function(F.average_pooling, [randn(*xs)], avg_ref, args, atol=1e-6, rtol=1e-5,
                   fd_max_elems=32,
                   ref_grad=lambda x, gy, **kw: (pool_grad_ref('average', x, gy, **kw),))


@pytest.mark.parametrize('xs,args', POOL_CASES, ids=str)
def test_sum_pooling(xs, args):
    check_function(F.sum_pooling, [randn(*xs)], sum_ref, args, atol=1e-5, rtol=1e-5,
                   fd_max_elems=32,
                   ref_grad=lambda x, gy, **kw: (pool_grad_ref('sum', x, gy, **kw),))


def test_max_pooling_gradient_goes_to_first_maximum():
    x = np.array([[[[1, 3, 3, 0], [3, 2, 0, 0]]]], np.float32)
    xv = nn.Variable.from_numpy_array(x, need_grad=True)
    y = F.max_pooling(xv, (2, 2))
    y.forward()
    np.testing.assert_array_equal(y.d, [[[[3, 3]]]])
    xv.g = 0
    y.backward(np.array([[[[1, 2]]]], np.float32))
    np.testing.assert_array_equal(xv.g, [[[[0, 1, 2, 0], [0, 0, 0, 0]]]])


def test_pooling_large_matches_numpy():
    """Sizes where pooling runs on several threads; gradients against the
    analytic reference."""
    x = distinct(4, 8, 20, 22)
    for fn, mode, args in [(F.max_pooling, 'max', dict(kernel=(2, 2))),
                           (F.max_pooling, 'max', dict(kernel=(3, 3), stride=(2, 2),
                                                       pad=(1, 1), channel_last=True)),
                           (F.average_pooling, 'average',
                            dict(kernel=(3, 3), stride=(2, 2), pad=(1, 1),
                                 ignore_border=False)),
                           (F.sum_pooling, 'sum', dict(kernel=(2, 3), channel_last=True))]:
        def ref(x, **kw):
            return pool_ref(mode, x, **kw)

        def ref_grad(x, gy, **kw):
            return (pool_grad_ref(mode, x, gy, **kw),)
        check_function(fn, [x], ref, args, atol=1e-4, rtol=1e-5, check_fd=False,
                       ref_grad=ref_grad, grad_atol=1e-5, grad_rtol=1e-5,
                       check_clear_buffer=False, check_modes=False)


@pytest.mark.parametrize('fn', [F.max_pooling, F.average_pooling, F.sum_pooling],
                         ids=['max', 'average', 'sum'])
def test_pooling_bad_arguments(fn):
    x = randn(2, 3, 4, 4)
    check_raises(fn, [x], {}, exc=TypeError, match_words=['kernel'])
    check_raises(fn, [x], {'kernel': (2, 2, 2, 2, 2)}, exc=ValueError, match_words=['kernel'])
    check_raises(fn, [x], {'kernel': (2, 0)}, exc=ValueError, match_words=['kernel'])
    check_raises(fn, [x], {'kernel': (2, 2), 'stride': (1,)}, exc=ValueError,
                 match_words=['stride'])
    check_raises(fn, [x], {'kernel': (2, 2), 'stride': (0, 1)}, exc=ValueError,
                 match_words=['stride'])
    check_raises(fn, [x], {'kernel': (2, 2), 'pad': (1, 1, 1)}, exc=ValueError,
                 match_words=['pad'])
    check_raises(fn, [x], {'kernel': (6, 2)}, exc=ValueError, match_words=['kernel'])
    check_raises(fn, [x], {'kernel': (2, 2, 2, 2), 'channel_last': True}, exc=ValueError,
                 match_words=['kernel'])
    check_raises(fn, [x], {'kernel': 'two'}, exc=TypeError, match_words=['kernel'])


def test_max_pooling_rejects_windows_in_padding():
    x = randn(1, 1, 4, 4)
    check_raises(F.max_pooling, [x], {'kernel': (2, 2), 'pad': (2, 0)}, exc=ValueError,
                 match_words=['pad'])
    check_raises(F.average_pooling, [x], {'kernel': (2, 2), 'pad': (2, 0),
                                          'including_pad': False},
                 exc=ValueError, match_words=['pad'])
    # average counting the padding and sum pooling accept them (the window sums to 0)
    y = F.average_pooling(nn.Variable.from_numpy_array(x), (2, 2), pad=(2, 0))
    y.forward()
    np.testing.assert_allclose(y.d, avg_ref(x, kernel=(2, 2), pad=(2, 0)), atol=1e-6)


# --------------------------------------------------------------------------
# global average pooling and unpooling
# --------------------------------------------------------------------------

@pytest.mark.parametrize('xs', [(2, 3, 4, 5), (2, 3), (1, 4, 3), (2, 2, 3, 2, 2)], ids=str)
def test_global_average_pooling(xs):
    def ref(x):
        x = x.astype(np.float64)
        return x.reshape(x.shape[0], x.shape[1], -1).mean(-1)[:, :, None, None]
    check_function(F.global_average_pooling, [randn(*xs)], ref, atol=1e-6, rtol=1e-5)


def test_global_average_pooling_bad_arguments():
    check_raises(F.global_average_pooling, [randn(5)], exc=ValueError, match_words=['x'])


def unpool_ref(x, kernel, channel_last=False):
    nk = len(kernel)
    first = x.ndim - nk - (1 if channel_last else 0)
    y = x.astype(np.float64)
    for i, k in enumerate(kernel):
        y = np.repeat(y, k, axis=first + i)
    return y


UNPOOL_CASES = [((2, 3, 2, 3), dict(kernel=(2, 3))),
                ((2, 3, 4), dict(kernel=(2,))),
                ((2, 2, 2, 3), dict(kernel=(2, 1, 2))),
                ((2, 3, 2, 4), dict(kernel=(3, 2), channel_last=True)),
                ((3, 2), dict(kernel=(2, 2)))]


@pytest.mark.parametrize('xs,args', UNPOOL_CASES, ids=str)
def test_unpooling(xs, args):
    check_function(F.unpooling, [randn(*xs)], unpool_ref, args, atol=0, rtol=0,
                   fd_max_elems=24)


def test_unpooling_bad_arguments():
    x = randn(2, 3, 4)
    check_raises(F.unpooling, [x], {}, exc=TypeError, match_words=['kernel'])
    check_raises(F.unpooling, [x], {'kernel': (2, 2, 2, 2)}, exc=ValueError,
                 match_words=['kernel'])
    check_raises(F.unpooling, [x], {'kernel': (2, 2, 2), 'channel_last': True},
                 exc=ValueError, match_words=['kernel'])
    check_raises(F.unpooling, [x], {'kernel': (0,)}, exc=ValueError, match_words=['kernel'])
