"""The rest of the PF module: low-rank layers, lstm_cell, spectral and weight
normalization, transformer -- parameter names, shapes and values."""
import numpy as np
import pytest

import nncy as nn
import nncy.functions as F
import nncy.initializer as I
import nncy.parametric_functions as PF


@pytest.fixture(autouse=True)
def fresh_parameters():
    nn.clear_parameters()
    yield
    nn.clear_parameters()


def shapes():
    return {k: tuple(v.shape) for k, v in nn.get_parameters(grad_only=False).items()}


def params():
    return nn.get_parameters(grad_only=False)


def test_svd_affine_is_affine_with_u_times_v():
    rng = np.random.RandomState(0)
    x = nn.Variable.from_numpy_array(rng.randn(4, 2, 3).astype(np.float32))
    w = rng.randn(6, 5).astype(np.float32)
    y = PF.svd_affine(x, 5, 5, uv_init=w, b_init=I.ConstantInitializer(0.5))
    assert shapes() == {'svd_affine/U': (6, 5), 'svd_affine/V': (5, 5), 'svd_affine/b': (5,)}
    y.forward()
    p = params()
    u, v = p['svd_affine/U'].d, p['svd_affine/V'].d
    np.testing.assert_allclose(u @ v, w, rtol=1e-4, atol=1e-4)     # full rank: exact
    ref = x.d.reshape(4, 6) @ u @ v + 0.5
    np.testing.assert_allclose(y.d, ref, rtol=1e-4, atol=1e-4)
    # a lower rank keeps the dominant singular directions
    y2 = PF.svd_affine(x, (2, 3), 2, name='low', with_bias=False)
    assert shapes()['low/U'] == (6, 2) and shapes()['low/V'] == (2, 2, 3)
    assert 'low/b' not in shapes() and y2.shape == (4, 2, 3)


def test_svd_affine_reuses_existing_factors():
    x = nn.Variable((2, 4))
    PF.svd_affine(x, 3, 2)
    u = params()['svd_affine/U'].d.copy()
    PF.svd_affine(x, 3, 2, uv_init=np.ones((4, 3), np.float32))
    np.testing.assert_array_equal(params()['svd_affine/U'].d, u)


def test_svd_convolution_matches_full_convolution_at_full_rank():
    rng = np.random.RandomState(1)
    x = nn.Variable.from_numpy_array(rng.randn(2, 3, 5, 5).astype(np.float32))
    w = rng.randn(4, 3, 2, 2).astype(np.float32)
    # per input map the kernels form a (K=4, O=4) matrix: rank 4 is exact
    y = PF.svd_convolution(x, 4, (2, 2), 4, pad=(1, 1), uv_init=w)
    s = shapes()
    assert s['svd_conv/U'] == (12, 2, 2) and s['svd_conv/V'] == (4, 12, 1, 1)
    assert s['svd_conv/b'] == (4,)
    ref = F.convolution(x, nn.Variable.from_numpy_array(w), None, pad=(1, 1))
    F.sink(y, ref).forward()
    assert y.shape == ref.shape == (2, 4, 6, 6)
    np.testing.assert_allclose(y.d, ref.d, rtol=1e-3, atol=1e-3)


def test_cpd3_convolution_shapes_and_exact_rank1():
    rng = np.random.RandomState(2)
    a, b, c = rng.randn(4), rng.randn(3), rng.randn(9)
    w = np.einsum('o,i,k->oik', a, b, c).reshape(4, 3, 3, 3).astype(np.float32)
    x = nn.Variable.from_numpy_array(rng.randn(2, 3, 6, 6).astype(np.float32))
    y = PF.cpd3_convolution(x, 4, (3, 3), 1, pad=(1, 1), oik_init=w, rng=rng)
    s = shapes()
    assert s['cpd3_conv/I'] == (1, 3, 1, 1) and s['cpd3_conv/K'] == (1, 3, 3)
    assert s['cpd3_conv/O'] == (4, 1, 1, 1) and s['cpd3_conv/b'] == (4,)
    ref = F.convolution(x, nn.Variable.from_numpy_array(w), None, pad=(1, 1))
    F.sink(y, ref).forward()
    np.testing.assert_allclose(y.d, ref.d, rtol=1e-3, atol=1e-3)
    PF.cpd3_convolution(x, 5, (3, 3), 3, name='r3', max_iter=20)
    assert shapes()['r3/K'] == (3, 3, 3) and shapes()['r3/O'] == (5, 3, 1, 1)


def test_lstm_cell_against_numpy():
    rng = np.random.RandomState(3)
    x = nn.Variable.from_numpy_array(rng.randn(2, 3).astype(np.float32))
    h = nn.Variable.from_numpy_array(rng.randn(2, 4).astype(np.float32))
    c = nn.Variable.from_numpy_array(rng.randn(2, 4).astype(np.float32))
    ht, ct = PF.lstm_cell(x, h, c, 4, b_init=I.UniformInitializer((-1, 1), rng=rng))
    assert shapes() == {'lstm/affine/W': (7, 4, 4), 'lstm/affine/b': (4, 4)}
    F.sink(ht, ct).forward()
    w, b = params()['lstm/affine/W'].d, params()['lstm/affine/b'].d
    g = np.einsum('bi,igs->bgs', np.concatenate([x.d, h.d], 1), w) + b
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    c_ref = sig(g[:, 2]) * c.d + sig(g[:, 0]) * np.tanh(g[:, 3])
    np.testing.assert_allclose(ct.d, c_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ht.d, sig(g[:, 1]) * np.tanh(c_ref), rtol=1e-4, atol=1e-5)


def test_lstm_cell_class_steps():
    cell = PF.LSTMCell(2, 3, name='cell')
    x = nn.Variable.from_numpy_array(np.ones((2, 5), np.float32))
    h1 = cell(x)
    h2 = cell(x)
    h2.forward()
    assert h2.shape == (2, 3) and h1 is not h2
    assert shapes() == {'cell/affine/W': (8, 4, 3), 'cell/affine/b': (4, 3)}
    cell.reset_state()


def _np_spectral(w, u, dim, itr, eps=1e-12):
    perm = [dim] + [i for i in range(w.ndim) if i != dim]
    wm = w.transpose(perm).reshape(w.shape[dim], -1).astype(np.float64)
    u = u.astype(np.float64)
    for _ in range(itr):
        v = u @ wm
        v = v / np.sqrt((v ** 2).sum() + eps)
        u = wm @ v
        u = u / np.sqrt((u ** 2).sum() + eps)
    sigma = u @ wm @ v
    out = (wm / sigma).reshape(w.transpose(perm).shape).transpose(np.argsort(perm))
    return out, u


@pytest.mark.parametrize('dim', [0, 1, 2])
def test_spectral_norm_power_iteration(dim):
    rng = np.random.RandomState(4)
    wd = rng.randn(4, 3, 5).astype(np.float32)
    w = nn.Variable.from_numpy_array(wd, need_grad=True)
    y = PF.spectral_norm(w, dim=dim, itr=3)
    assert shapes() == {'spectral-norm/u': (wd.shape[dim],)}
    u0 = params()['spectral-norm/u'].d.copy()
    y.forward()
    ref, u_ref = _np_spectral(wd, u0, dim, 3)
    np.testing.assert_allclose(y.d, ref, rtol=1e-4, atol=1e-5)
    # the stored u advanced by the iteration
    np.testing.assert_allclose(params()['spectral-norm/u'].d, u_ref, rtol=1e-4, atol=1e-5)
    y.backward()
    assert w.g.shape == wd.shape and np.isfinite(w.g).all()


def test_spectral_norm_converges_to_unit_spectral_norm():
    rng = np.random.RandomState(5)
    wd = rng.randn(6, 4).astype(np.float32)
    w = nn.Variable.from_numpy_array(wd)
    y = PF.spectral_norm(w, itr=50)
    y.forward()
    np.testing.assert_allclose(np.linalg.svd(y.d, compute_uv=False)[0], 1.0, rtol=1e-3)
    yt = PF.spectral_norm(w, test=True)
    u_before = params()['spectral-norm/u'].d.copy()
    yt.forward()
    np.testing.assert_array_equal(params()['spectral-norm/u'].d, u_before)
    np.testing.assert_allclose(yt.d, y.d, rtol=1e-3, atol=1e-4)


def test_weight_normalization_values_and_default_scale():
    rng = np.random.RandomState(6)
    wd = rng.randn(3, 4, 2).astype(np.float32)
    w = nn.Variable.from_numpy_array(wd, need_grad=True)
    y = PF.weight_normalization(w, dim=1)
    assert shapes() == {'wn/g': (4,)}
    y.forward()
    np.testing.assert_allclose(y.d, wd, rtol=1e-4, atol=1e-5)   # g starts at ||w||
    g = params()['wn/g']
    g.d = np.arange(1, 5, dtype=np.float32)
    y.forward()
    norm = np.sqrt((wd ** 2).sum(axis=(0, 2), keepdims=True) + 1e-12)
    ref = wd / norm * np.arange(1, 5).reshape(1, 4, 1)
    np.testing.assert_allclose(y.d, ref, rtol=1e-4, atol=1e-5)
    y.backward()
    assert np.isfinite(w.g).all()


def test_weight_normalization_as_apply_w():
    x = nn.Variable.from_numpy_array(np.ones((2, 3), np.float32))
    y = PF.affine(x, 4, apply_w=lambda w: PF.weight_normalization(w, dim=1),
                  w_init=I.NormalInitializer(0.05))
    assert shapes() == {'affine/W': (3, 4), 'affine/wn/g': (4,), 'affine/b': (4,)}
    y.forward()
    np.testing.assert_allclose(y.d, np.ones((2, 3)) @ params()['affine/W'].d,
                               rtol=1e-4, atol=1e-5)


def test_transformer_forward_backward_and_parameters():
    rng = np.random.RandomState(7)
    src = nn.Variable.from_numpy_array(rng.randn(5, 2, 8).astype(np.float32), need_grad=True)
    tgt = nn.Variable.from_numpy_array(rng.randn(4, 2, 8).astype(np.float32), need_grad=True)
    y = PF.transformer(src, tgt, embed_dim=8, num_heads=2, num_encoder_layers=2,
                       num_decoder_layers=1, dim_feedforward=16, dropout=0.1, rng=rng)
    assert y.shape == (4, 2, 8)
    s = shapes()
    assert s['transformer/encoder00/src_self_attn/q_weight'] == (8, 8)
    assert s['transformer/encoder01/enc_affine1/W'] == (8, 16)
    assert s['transformer/encoder01/enc_affine2/W'] == (16, 8)
    assert s['transformer/encoder00/enc_layer_norm1/gamma'] == (1, 1, 8)
    assert s['transformer/decoder00/tgt_memory_attn/k_weight'] == (8, 8)
    assert s['transformer/decoder00/dec_layer_norm3/beta'] == (1, 1, 8)
    assert not any(k.startswith('transformer/decoder01') for k in s)
    loss = F.sum(y * y)
    loss.forward()
    loss.backward()
    assert np.isfinite(y.d).all()
    assert np.abs(src.g).sum() > 0 and np.abs(tgt.g).sum() > 0
    g = params()['transformer/encoder00/src_self_attn/q_weight'].g
    assert np.abs(g).sum() > 0


def test_transformer_encode_decode_layers():
    x = nn.Variable.from_numpy_array(np.random.RandomState(8).randn(3, 2, 4).astype(np.float32))
    m = PF.transformer_encode(x, 4, 2, dim_feedforward=8, dropout=0.0)
    y = PF.transformer_decode(x, m, 4, 2, dim_feedforward=8, dropout=0.0)
    y.forward()
    s = shapes()
    assert s['transformer_encode/enc_affine1/b'] == (8,)
    assert s['transformer_decode/dec_affine2/W'] == (8, 4)
    # each layer ends with a layer normalization (gamma 1, beta 0)
    np.testing.assert_allclose(y.d.mean(axis=2), 0, atol=1e-5)
    np.testing.assert_allclose(y.d.var(axis=2), 1, rtol=1e-3)


def test_spectral_norm_gradient_treats_u_v_as_constants():
    rng = np.random.RandomState(9)
    wd = rng.randn(3, 5).astype(np.float32)
    gd = rng.randn(3, 5).astype(np.float32)
    w = nn.Variable.from_numpy_array(wd, need_grad=True)
    y = PF.spectral_norm(w, itr=2)
    u0 = params()['spectral-norm/u'].d.copy()
    loss = F.sum(y * nn.Variable.from_numpy_array(gd))
    loss.forward()
    w.grad.zero()
    loss.backward()
    u = u0.astype(np.float64)
    for _ in range(2):
        v = u @ wd
        v /= np.linalg.norm(v)
        u = wd @ v
        u /= np.linalg.norm(u)
    sigma = u @ wd @ v
    ref = gd / sigma - (gd * wd).sum() / sigma ** 2 * np.outer(u, v)
    np.testing.assert_allclose(w.g, ref, rtol=1e-3, atol=1e-4)


def test_low_rank_fix_parameters():
    x = nn.Variable((2, 3, 4, 4))
    y = PF.svd_convolution(x, 2, (3, 3), 1, fix_parameters=True)
    assert not any(v.need_grad for v in y.parent.inputs[1:])
    y2 = PF.svd_affine(nn.Variable((2, 4)), 3, 2, fix_parameters=True)
    assert not y2.parent.inputs[1].need_grad and not y2.parent.inputs[2].need_grad
    assert set(shapes()) == {'svd_conv/U', 'svd_conv/V', 'svd_conv/b',
                             'svd_affine/U', 'svd_affine/V', 'svd_affine/b'}
