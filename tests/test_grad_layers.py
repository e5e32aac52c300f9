"""nn.grad of layers and array manipulation (nncy/_grad_layers.py): first-order
gradients agree with backward, and Hessian-vector products built by a second
nn.grad agree with central differences of the first-order gradients."""
import numpy as np
import pytest

import nncy as nn
import nncy.functions as F


def _conv(**kw):
    return lambda x, w, b: F.convolution(x, w, b, **kw)


def _deconv(**kw):
    return lambda x, w, b: F.deconvolution(x, w, b, **kw)


def _const(shape, seed=7):
    return nn.Variable.from_numpy_array(
        (0.5 * np.random.RandomState(seed).randn(*shape)).astype(np.float32))


def _idx(a):
    return nn.Variable.from_numpy_array(np.asarray(a))


# name: (shapes of the differentiated inputs, function of them)
CASES = {
    'convolution': ([(2, 3, 5, 5), (4, 3, 3, 3), (4,)], _conv(pad=(1, 1), stride=(2, 1))),
    'convolution_group_dilation': ([(1, 4, 6, 5), (2, 2, 2, 2), (2,)],
                                   _conv(pad=(1, 0), dilation=(2, 1), group=2)),
    'convolution_channel_last': ([(2, 4, 5, 3), (4, 3, 2, 3), (4,)],
                                 _conv(pad=(1, 1), channel_last=True)),
    'convolution_1d': ([(2, 2, 7), (3, 2, 3)],
                       lambda x, w: F.convolution(x, w, stride=(2,))),
    'convolution_base_axis_group': ([(2, 2, 4, 6), (4, 2, 3), (4,)],
                                    _conv(base_axis=2, group=2, stride=(2,), pad=(2,))),
    'deconvolution_base_axis': ([(2, 2, 3, 4), (3, 2, 2), (2,)],
                                _deconv(base_axis=2, stride=(3,), pad=(1,))),
    'deconvolution': ([(2, 3, 3, 4), (3, 2, 3, 3), (2,)], _deconv(pad=(1, 1), stride=(2, 2))),
    'deconvolution_group': ([(1, 4, 3, 3), (4, 1, 2, 2), (2,)],
                            _deconv(group=2, stride=(2, 2), output_padding=(1, 1),
                                    dilation=(1, 2))),
    'deconvolution_channel_last': ([(2, 3, 3, 2), (2, 2, 2, 3), (3,)],
                                   _deconv(channel_last=True, stride=(2, 1))),
    'depthwise_convolution': ([(2, 3, 5, 5), (6, 3, 3), (6,)],
                              lambda x, w, b: F.depthwise_convolution(x, w, b, pad=(1, 1),
                                                                      multiplier=2)),
    'depthwise_convolution_dilation': ([(1, 2, 7, 6), (2, 2, 3)],
                                       lambda x, w: F.depthwise_convolution(
                                           x, w, stride=(2, 1), dilation=(2, 2))),
    'depthwise_deconvolution': ([(2, 4, 3, 3), (4, 2, 2), (2,)],
                                lambda x, w, b: F.depthwise_deconvolution(
                                    x, w, b, stride=(2, 2), divisor=2)),
    'adaptive_separable_convolution': ([(2, 2, 5, 4), (2, 2, 5, 4), (2, 3, 4, 3)],
                                       lambda x, kv, kh: F.adaptive_separable_convolution(
                                           x, kv, kh)),
    'patch_correlation': ([(2, 2, 5, 6), (2, 2, 5, 6)],
                          lambda a, b: F.patch_correlation(a, b, (2, 3), (1, 2), (2, 1), (1, 2),
                                                           (1, 0, 1, 2))),
    'patch_correlation_channel_last': ([(1, 4, 5, 2), (1, 4, 5, 2)],
                                       lambda a, b: F.patch_correlation(
                                           a, b, (1, 2), (1, 1), channel_last=True)),
    'max_pooling': ([(2, 3, 6, 5)], lambda x: F.max_pooling(x, (2, 2))),
    'max_pooling_pad': ([(1, 2, 5, 6)], lambda x: F.max_pooling(x, (3, 3), (2, 2),
                                                                pad=(1, 1))),
    'max_pooling_border': ([(1, 2, 5, 5)], lambda x: F.max_pooling(x, (2, 2),
                                                                   ignore_border=False)),
    'max_pooling_channel_last': ([(2, 4, 4, 3)], lambda x: F.max_pooling(
        x, (2, 2), (1, 2), channel_last=True)),
    'average_pooling': ([(2, 2, 5, 5)], lambda x: F.average_pooling(x, (3, 3), (2, 2),
                                                                     pad=(1, 1))),
    'average_pooling_excluding_pad': ([(2, 2, 5, 5)], lambda x: F.average_pooling(
        x, (3, 2), (2, 2), pad=(1, 1), including_pad=False, ignore_border=False)),
    'sum_pooling': ([(2, 2, 5, 4)], lambda x: F.sum_pooling(x, (2, 3), (1, 1))),
    'global_average_pooling': ([(2, 3, 3, 2)], lambda x: F.global_average_pooling(x)),
    'unpooling': ([(2, 2, 2, 3)], lambda x: F.unpooling(x, (2, 3))),
    'slice': ([(3, 5)], lambda x: F.slice(x, (1, 0), (3, 4), (1, 2))),
    'slice_negative_step': ([(4, 5)], lambda x: F.slice(x, (3, 4), (0, 0), (-2, -1))),
    'slice_getitem': ([(3, 4, 2)], lambda x: x[1:, :3]),
    'concatenate_default_axis': ([(2, 3), (2, 2), (2, 1)], lambda a, b, c: F.concatenate(a, b, c)),
    'stack_last': ([(2, 3), (2, 3)], lambda a, b: F.stack(a, b, axis=-1)),
    'split_axis1': ([(2, 3)], lambda x: F.mul2(F.split(x, axis=1)[0], F.split(x, axis=1)[1])),
    'concatenate': ([(2, 3), (2, 2)], lambda a, b: F.concatenate(a, b, axis=1)),
    'split': ([(3, 4)], lambda x: F.mul2(F.split(x, axis=0)[0], F.split(x, axis=0)[2])),
    'stack': ([(2, 3), (2, 3)], lambda a, b: F.stack(a, F.tanh(b), axis=1)),
    'transpose': ([(2, 3, 4)], lambda x: F.transpose(x, (2, 0, 1))),
    'broadcast': ([(3, 1)], lambda x: F.broadcast(x, (2, 3, 4))),
    'broadcast_to': ([(3, 4), (3,)], lambda x, y: F.add2(x, F.broadcast_to(x, y, axis=0))),
    'tile': ([(2, 3)], lambda x: F.tile(x, (2, 1, 2))),
    'flip': ([(3, 4)], lambda x: F.flip(x, (0, 1))),
    'pad_constant': ([(2, 3)], lambda x: F.pad(x, (1, 0, 2, 1), constant_value=0.5)),
    'pad_reflect': ([(2, 4)], lambda x: F.pad(x, (1, 2, 2, 1), mode='reflect')),
    'pad_repeat': ([(2, 3)], lambda x: F.pad(x, (2, 1), mode='repeat')),
    'shift': ([(3, 4)], lambda x: F.shift(x, (1, -2))),
    'matrix_diag': ([(2, 3)], lambda x: F.matrix_diag(x)),
    'matrix_diag_part': ([(2, 3, 3)], lambda x: F.matrix_diag_part(x)),
    'embed': ([(5, 3)], lambda w: F.embed(_idx([[0, 2], [4, 2]]), w)),
    'gather_nd': ([(3, 4)], lambda x: F.gather_nd(x, [[0, 2, 2], [1, 3, 1]])),
    'scatter_nd': ([(3,)], lambda x: F.scatter_nd(x, [[0, 2, 0]], shape=(4,), add=True)),
    'max': ([(3, 4, 2)], lambda x: F.max(x, axis=(0, 2), keepdims=True)),
    'max_with_index': ([(3, 4)], lambda x: F.max(x, axis=1, with_index=True)[0]),
    'min': ([(3, 4)], lambda x: F.min(x, axis=0)),
    'min_all': ([(3, 4)], lambda x: F.min(x)),
    'reduce_sum': ([(2, 3)], lambda x: F.mul_scalar(F.reduce_sum(F.tanh(x)), 0.5)),
    'reduce_mean': ([(2, 3)], lambda x: F.reduce_mean(F.mul2(x, x))),
    'prod': ([(3, 4)], lambda x: F.prod(x, axis=1)),
    'prod_with_zeros': ([(3, 4)], lambda x: F.prod(x, axis=1, keepdims=True)),
    'prod_all': ([(2, 3)], lambda x: F.prod(x)),
    'where': ([(2, 3), (2, 3)], lambda a, b: F.where(_idx([[1, 0, 1], [0, 0, 1]]), a, b)),
    'add_n': ([(2, 3), (2, 3)], lambda a, b: F.add_n(a, F.tanh(b), a)),
    'mul_n': ([(2, 3), (2, 3)], lambda a, b: F.mul_n(a, b, F.tanh(b))),
    'batch_inv': ([(2, 3, 3)], lambda x: F.batch_inv(F.add2(x, nn.Variable.from_numpy_array(
        np.eye(3, dtype=np.float32) * 3)))),
    'sort': ([(3, 4)], lambda x: F.mul2(F.sort(x, axis=0), F.sort(x, axis=1, reverse=True))),
    'top_k_data': ([(2, 6)], lambda x: F.top_k_data(x, 3)),
    'top_k_data_abs_full': ([(2, 2, 3)], lambda x: F.top_k_data(x, 2, abs=True, reduce=False)),
    'top_k_grad': ([(2, 5)], lambda x: F.mul2(F.top_k_grad(F.tanh(x), 2, abs=True), x)),
    'generators': ([(2, 3)], lambda x: F.add2(x, F.add2(F.constant(1.0, (2, 3)),
                                                        F.arange(0, 3)))),
    'rnn': ([(3, 2, 3), (2, 2, 2, 2), (2, 2, 5), (1, 2, 2, 6), (2, 2, 2)],
            lambda x, h, w0, w, b: F.mul2(*F.rnn(x, h, w0, w, b, num_layers=2,
                                                 bidirectional=True)[:1] * 2)),
    'rnn_relu': ([(3, 2, 3), (1, 1, 2, 2), (1, 2, 5)],
                 lambda x, h, w0: F.rnn(x, h, w0, nonlinearity='relu')[1]),
    'lstm': ([(3, 2, 3), (1, 2, 2, 2), (1, 2, 2, 2), (2, 4, 2, 5), (1, 2, 4, 2)],
             lambda x, h, c, w0, b: F.add2(F.lstm(x, h, c, w0, None, b, bidirectional=True)[2],
                                           F.lstm(x, h, c, w0, None, b,
                                                  bidirectional=True)[1])),
    'gru': ([(3, 2, 3), (2, 1, 2, 2), (1, 3, 2, 5), (1, 1, 3, 2, 4), (2, 1, 4, 2)],
            lambda x, h, w0, w, b: F.gru(x, h, w0, w, b, num_layers=2)[0]),
    'mha': ([(3, 2, 4), (2, 2, 3), (2, 2, 3), (4, 4), (3, 4), (3, 2), (2, 3), (4,), (4,), (2,),
             (3,), (4,), (2,)],
            lambda q, k, val, wq, wk, wv, wo, bq, bk, bv, bo, abk, abv: F.mul2(
                F.multi_head_attention(q, k, val, 2, wq, wk, wv, wo, bq, bk, bv, bo, abk, abv,
                                       additive_mask=nn.Variable.from_numpy_array(
                                           np.array([[0, -1], [0.5, 0], [0, 0]], np.float32)),
                                       key_padding_mask=_idx([[0, 1], [0, 0]]))[0],
                F.sum(F.multi_head_attention(q, k, val, 2, wq, wk, wv, wo)[1]))),
    'batch_det': ([(2, 3, 3)], lambda x: F.batch_det(x)),
    # nncy/_grad_loss.py
    'categorical_cross_entropy': ([(3, 4)], lambda x: F.categorical_cross_entropy(
        F.softmax(x), _idx([[1], [-1], [3]]))),
    'categorical_cross_entropy_axis0': ([(4, 3)], lambda x: F.categorical_cross_entropy(
        F.softmax(x, axis=0), _idx([2, 0, 3]), axis=0)),
    'kl_multinomial': ([(2, 3), (2, 3)], lambda p, q: F.kl_multinomial(F.softmax(p),
                                                                       F.softmax(q))),
    'prune': ([(3, 4)], lambda x: F.prune(x, rate=0.5)),
    'binary_connect_affine': ([(2, 3), (3, 4), (4,)], lambda x, w, b: F.binary_connect_affine(
        x, w, _const((3, 4)), b)),
    'binary_weight_affine': ([(2, 3), (3, 4)], lambda x, w: F.binary_weight_affine(
        x, w, _const((3, 4)), _const((4,)))),
    'binary_connect_convolution': ([(2, 2, 4, 4), (3, 2, 2, 2), (3,)],
                                   lambda x, w, b: F.binary_connect_convolution(
                                       x, w, _const((3, 2, 2, 2)), b, pad=(1, 0))),
    'binary_weight_convolution': ([(2, 2, 4, 4), (3, 2, 2, 2)],
                                  lambda x, w: F.binary_weight_convolution(
                                      x, w, _const((3, 2, 2, 2)), _const((3,)), stride=(2, 1))),
    'inq_affine': ([(2, 3), (3, 4), (4,)], lambda x, w, b: F.inq_affine(
        x, w, _idx(np.array([[1, 0, 0, 1], [0, 0, 1, 0], [0, 1, 0, 0]], np.float32)), b)),
    'inq_convolution': ([(2, 2, 4, 4), (3, 2, 2, 2)], lambda x, w: F.inq_convolution(
        x, w, _idx((np.arange(24).reshape(3, 2, 2, 2) % 3 == 0).astype(np.float32)),
        pad=(1, 1))),
    'min_max_quantize': ([(3, 4), (1,), (1,)], lambda x, lo, hi: F.min_max_quantize(
        x, F.add_scalar(F.mul_scalar(lo, 0.1), -0.5), F.add_scalar(F.mul_scalar(hi, 0.1), 0.5),
        _idx(np.zeros(1, np.float32)), _idx(np.full(1, 255.0, np.float32)))),
    'min_max_quantize_off': ([(3, 4)], lambda x: F.min_max_quantize(
        x, _idx(np.full(1, -0.5, np.float32)), _idx(np.full(1, 0.5, np.float32)),
        _idx(np.zeros(1, np.float32)), _idx(np.full(1, 255.0, np.float32)), quantize=False)),
    'interpolate_linear': ([(2, 2, 3, 4)], lambda x: F.interpolate(x, output_size=(5, 3))),
    'interpolate_nearest_channel_last': ([(1, 3, 2, 2)], lambda x: F.interpolate(
        x, scale=(2.0,), mode='nearest', channel_last=True)),
    'fft': ([(2, 4, 3, 2)], lambda x: F.fft(x, 2)),
    'ifft_normalized': ([(3, 5, 2)], lambda x: F.ifft(x, 1, normalized=True)),
    'ifft': ([(2, 3, 4, 2)], lambda x: F.ifft(x, 1)),
    'stft': ([(2, 16)], lambda x: F.mul2(*F.stft(x, 6, 3, 8))),
    'stft_constant': ([(1, 12)], lambda x: F.stft(x, 4, 2, 4, window_type='hamming',
                                                  pad_mode='constant')[1]),
    'istft': ([(2, 5, 4), (2, 5, 4)], lambda r, i: F.istft(r, i, 8, 4, 8)),
    'warp_by_flow': ([(2, 2, 4, 5), (2, 2, 4, 5)],
                     lambda d, fl: F.warp_by_flow(d, F.mul_scalar(fl, 2.0))),
}


# leaves with exact zeros: none, one and two in a row
ZEROS = {'prod_with_zeros': [(0, 1), (2, 0), (2, 3)]}


def _build(name, seed):
    rng = np.random.RandomState(seed)
    shapes, fn = CASES[name]
    data = [(0.5 * rng.randn(*s)).astype(np.float32) for s in shapes]
    for i in ZEROS.get(name, ()):
        data[0][i] = 0.0
    leaves = [nn.Variable.from_numpy_array(d, need_grad=True) for d in data]
    y = fn(*leaves)
    r = nn.Variable.from_numpy_array(np.asarray(rng.randn(*y.shape), np.float32))
    loss = F.sum(F.mul2(F.tanh(y), r))
    return leaves, loss, rng


def _value(v):
    v.forward()
    return v.d.copy()


@pytest.mark.parametrize('name', sorted(CASES))
def test_first_order_matches_backward(name):
    leaves, loss, _ = _build(name, 0)
    grads = nn.grad([loss], leaves)
    values = [_value(g) for g in grads]
    loss.forward()
    for x in leaves:
        x.grad.zero()
    loss.backward()
    for x, g in zip(leaves, values):
        np.testing.assert_allclose(g, x.g, rtol=1e-4, atol=1e-5)


# top_k_grad's gradient is not the derivative of its (identity) forward
# nor are the straight-through ones of steps (prune, binarized and quantized weights)
NOT_DERIVATIVES = {'top_k_grad', 'prune', 'binary_connect_affine', 'binary_weight_affine',
                   'binary_connect_convolution', 'binary_weight_convolution',
                   'min_max_quantize'}


@pytest.mark.parametrize('name', sorted(set(CASES) - NOT_DERIVATIVES))
def test_second_order_by_finite_differences(name):
    """The Hessian-vector product H v against central differences of the
    gradients along v."""
    leaves, loss, rng = _build(name, 1)
    grads = nn.grad([loss], leaves)
    vs = [rng.randn(*x.shape).astype(np.float32) for x in leaves]
    dot = F.add_n(*[F.sum(F.mul2(g, nn.Variable.from_numpy_array(v)))
                    for g, v in zip(grads, vs)]) if len(leaves) > 1 else \
        F.sum(F.mul2(grads[0], nn.Variable.from_numpy_array(vs[0])))
    hv = nn.grad([dot], leaves)
    hv = [np.zeros(x.shape, np.float32) if h is None else _value(h) for h, x in zip(hv, leaves)]
    x0 = [x.d.copy() for x in leaves]
    eps = 3e-3
    sides = []
    for s in (eps, -eps):
        for x, d, v in zip(leaves, x0, vs):
            x.d = d + s * v
        sides.append([_value(g).astype(np.float64) for g in grads])
    for x, d in zip(leaves, x0):
        x.d = d
    for h, gp, gm in zip(hv, *sides):
        np.testing.assert_allclose(h, (gp - gm) / (2 * eps), rtol=3e-2, atol=3e-3)


def test_dropout_uses_the_forward_mask():
    rng = np.random.RandomState(0)
    a = rng.randn(4, 5).astype(np.float32)
    a[0, :3] = 0.0
    x = nn.Variable.from_numpy_array(a, need_grad=True)
    r = nn.Variable.from_numpy_array(rng.randn(4, 5).astype(np.float32))
    d = F.dropout(x, p=0.3)
    loss = F.sum(F.mul2(F.tanh(d), r))
    (gx,) = nn.grad([loss], [x])
    for _ in range(3):
        gx.forward()             # draws a new mask
        x.grad.zero()
        loss.backward()          # with the same mask
        np.testing.assert_allclose(gx.d, x.g, rtol=1e-5, atol=1e-6)


def test_random_generators_have_no_gradient():
    x = nn.Variable.from_numpy_array(np.ones((2, 3), np.float32), need_grad=True)
    y = F.sum(F.mul2(x, F.add2(F.randn(shape=(2, 3)), F.rand(shape=(2, 3)))))
    (gx,) = nn.grad([y], [x])
    gx.forward()
    assert gx.shape == (2, 3)


def test_gradient_penalty_of_a_small_cnn_trains():
    """WGAN-GP style: the input-gradient norm of a conv / pool / affine critic is
    pushed towards 1 by gradient descent on the penalty."""
    rng = np.random.RandomState(3)
    x = nn.Variable.from_numpy_array(rng.randn(4, 1, 6, 6).astype(np.float32), need_grad=True)
    w = nn.Variable.from_numpy_array((0.3 * rng.randn(3, 1, 3, 3)).astype(np.float32),
                                     need_grad=True)
    b = nn.Variable.from_numpy_array(np.zeros(3, np.float32), need_grad=True)
    a = nn.Variable.from_numpy_array((0.3 * rng.randn(12, 1)).astype(np.float32),
                                     need_grad=True)
    h = F.max_pooling(F.tanh(F.convolution(x, w, b, pad=(1, 1))), (3, 3))
    out = F.sum(F.affine(h, a))
    (gx,) = nn.grad([out], [x])
    norm = F.pow_scalar(F.add_scalar(F.sum(F.pow_scalar(gx, 2.0), (1, 2, 3)), 1e-6), 0.5)
    penalty = F.mean(F.pow_scalar(F.add_scalar(norm, -1.0), 2.0))
    penalty.forward()
    first = float(penalty.d)
    for _ in range(60):
        penalty.forward()
        for p in (w, b, a):
            p.grad.zero()
        penalty.backward()
        for p in (w, b, a):
            p.d -= 0.1 * p.g
    penalty.forward()
    assert float(penalty.d) < 0.3 * first


def test_prod_of_long_groups_with_zeros():
    """Long groups take the division form of prod's gradient; its values are
    exact with zeros too."""
    rng = np.random.RandomState(4)
    a = (1 + 0.01 * rng.randn(3, 1500)).astype(np.float32)
    a[1, 7] = 0.0
    a[2, 3] = a[2, 9] = 0.0
    x = nn.Variable.from_numpy_array(a, need_grad=True)
    y = F.sum(F.mul2(F.prod(x, axis=1), nn.Variable.from_numpy_array(
        np.array([1.0, 2.0, 3.0], np.float32))))
    (gx,) = nn.grad([y], [x])
    gx.forward()
    y.forward()
    x.grad.zero()
    y.backward()
    np.testing.assert_allclose(gx.d, x.g, rtol=1e-3, atol=1e-6)
    assert gx.d[1, 7] != 0 and gx.d[1, 8] == 0 and not gx.d[2].any()


@pytest.mark.parametrize('make', [
    lambda x: F.random_flip(x, axes=(2, 3)),
    lambda x: F.random_crop(x, shape=(3, 2)),
    lambda x: F.random_shift(x, shifts=(1, 2), border_mode='reflect'),
    lambda x: F.random_choice(F.reshape(x, (6, 16)), nn.Variable.from_numpy_array(
        np.ones((6, 16), np.float32)), shape=(5,)),
    lambda x: F.random_erase(x, prob=0.8, area_ratios=(0.1, 0.3), n=2),
    lambda x: F.lstm(F.reshape(x, (3, 2, 16)), _const((2, 1, 2, 3)), _const((2, 1, 2, 3)),
                     _const((1, 4, 3, 19)), _const((1, 1, 4, 3, 6)), num_layers=2,
                     dropout=0.5)[0],
    lambda x: F.multi_head_attention(
        F.reshape(x, (3, 2, 16)), F.reshape(x, (3, 2, 16)), F.reshape(x, (3, 2, 16)), 2,
        _const((16, 4)), _const((16, 4)), _const((16, 4)), _const((4, 5)), dropout=0.4)[0],
], ids=['random_flip', 'random_crop', 'random_shift', 'random_choice', 'random_erase',
        'lstm_dropout', 'multi_head_attention_dropout'])
def test_random_selections_follow_the_last_draw(make):
    rng = np.random.RandomState(5)
    x = nn.Variable.from_numpy_array(rng.randn(3, 2, 4, 4).astype(np.float32), need_grad=True)
    y = make(x)
    r = nn.Variable.from_numpy_array(rng.randn(*y.shape).astype(np.float32))
    loss = F.sum(F.mul2(F.tanh(y), r))
    (gx,) = nn.grad([loss], [x])
    for _ in range(3):
        gx.forward()             # draws anew
        x.grad.zero()
        loss.backward()          # the same draw
        np.testing.assert_allclose(gx.d, x.g, rtol=1e-5, atol=1e-6)
    # second order: d/dx of <gx, v> against backward of the same quantity
    v = nn.Variable.from_numpy_array(rng.randn(*x.shape).astype(np.float32))
    dot = F.sum(F.mul2(gx, v))
    (hv,) = nn.grad([dot], [x])
    hv.forward()
    x.grad.zero()
    dot.backward()
    np.testing.assert_allclose(hv.d, x.g, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('make', [
    lambda x: F.top_n_error(x, _idx([[1], [0], [2]]), n=2),
    lambda x: F.confusion_matrix(x, _idx([[1], [0], [2]])),
    lambda x: F.vat_noise(x, nn.Variable((3, 4))),
], ids=['top_n_error', 'confusion_matrix', 'vat_noise'])
def test_steps_and_counts_pass_no_gradient(make):
    x = nn.Variable.from_numpy_array(np.random.RandomState(6).randn(3, 4).astype(np.float32),
                                     need_grad=True)
    (gx,) = nn.grad([F.sum(make(x))], [x])
    assert gx is None


def test_nms_detection2d_passes_no_gradient():
    x = nn.Variable.from_numpy_array(np.random.RandomState(6).rand(1, 4, 7).astype(np.float32),
                                     need_grad=True)
    (gx,) = nn.grad([F.sum(F.nms_detection2d(x))], [x])
    assert gx is None
