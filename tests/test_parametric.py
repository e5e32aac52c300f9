"""Parametric functions: parameter names, shapes, reuse, fix_parameters and
that a PF model trains."""
import numpy as np
import pytest

import nncy as nn
import nncy.functions as F
import nncy.parametric_functions as PF
import nncy.solvers as S


@pytest.fixture(autouse=True)
def fresh_parameters():
    nn.clear_parameters()
    yield
    nn.clear_parameters()


def shapes():
    return {k: v.shape for k, v in nn.get_parameters(grad_only=False).items()}


def test_affine_names_shapes_and_reuse():
    x = nn.Variable((4, 3, 2))
    with nn.parameter_scope('fc1'):
        y = PF.affine(x, 5)
    y2 = PF.affine(x, (2, 3), name='fc2', with_bias=False)
    assert shapes() == {'fc1/affine/W': (6, 5), 'fc1/affine/b': (5,), 'fc2/W': (6, 2, 3)}
    assert y.shape == (4, 5) and y2.shape == (4, 2, 3)
    with nn.parameter_scope('fc1'):
        PF.affine(x, 5)                       # reuses, creates nothing new
    assert len(shapes()) == 3
    w = nn.get_parameters()['fc1/affine/W']
    x.d = np.random.randn(*x.shape)
    y.forward()
    np.testing.assert_allclose(y.d, x.d.reshape(4, 6) @ w.d, rtol=1e-5, atol=1e-5)


def test_glorot_default_and_rng():
    x = nn.Variable((2, 100))
    PF.affine(x, 50, rng=np.random.RandomState(0), name='a')
    w = nn.get_parameters()['a/W'].d
    lim = np.sqrt(6.0 / 150)
    assert np.abs(w).max() <= lim and np.abs(w).max() > 0.9 * lim
    PF.affine(x, 50, rng=np.random.RandomState(0), name='b')
    np.testing.assert_array_equal(nn.get_parameters()['b/W'].d, w)


def test_fix_parameters_gives_no_grad():
    x = nn.Variable((2, 3))
    y = PF.affine(x, 4, fix_parameters=True)
    # the graph sees unlinked copies without gradients; the registry keeps the
    # parameters themselves, as NNabla does
    assert not y.parent.inputs[1].need_grad and not y.parent.inputs[2].need_grad
    assert set(nn.get_parameters(grad_only=False)) == {'affine/W', 'affine/b'}
    y.parent.inputs[1].d = 7.0
    np.testing.assert_array_equal(nn.get_parameters()['affine/W'].d, 7.0)


def test_embed_and_recurrent_parameter_layouts():
    idx = nn.Variable.from_numpy_array(np.array([[0, 2], [1, 3]]))
    e = PF.embed(idx, 5, 3)
    assert e.shape == (2, 2, 3)
    x = nn.Variable((6, 2, 3))
    h = nn.Variable((2, 1, 2, 4))             # (num_layers, directions, batch, hidden)
    c = nn.Variable((2, 1, 2, 4))
    y, hn, cn = PF.lstm(x, h, c, num_layers=2)
    PF.gru(x, nn.Variable((2, 1, 2, 4)), num_layers=2)
    yr, hr = PF.rnn(x, nn.Variable((1, 1, 2, 4)))
    assert y.shape == (6, 2, 4) and yr.shape == (6, 2, 4)
    s = shapes()
    assert s['embed/W'] == (5, 3)
    assert s['lstm/weight_l0'] == (1, 4, 4, 7)
    assert s['lstm/weight'] == (1, 1, 4, 4, 8)
    assert s['lstm/bias'] == (2, 1, 4, 4)
    assert s['gru/weight_l0'] == (1, 3, 4, 7)
    assert s['rnn/weight_l0'] == (1, 4, 7) and 'rnn/weight' not in s


def test_multi_head_attention_parameters():
    q = nn.Variable((3, 2, 8))
    y, w = PF.multi_head_attention(q, q, q, num_heads=2, add_attn_bias=True)
    assert y.shape == (3, 2, 8)
    s = shapes()
    for k in ('q_weight', 'k_weight', 'v_weight', 'out_weight'):
        assert s['multi_head_attention/' + k] == (8, 8)
    for k in ('q_bias', 'k_bias', 'v_bias', 'out_bias'):
        assert s['multi_head_attention/' + k] == (8,)
    assert s['multi_head_attention/attn_bias_k'] == (8,)


def test_pf_mlp_trains_with_adam():
    rng = np.random.RandomState(0)
    xs = rng.randn(64, 4).astype(np.float32)
    ts = (xs[:, :1] + xs[:, 1:2] > 0).astype(np.int64)
    x = nn.Variable.from_numpy_array(xs)
    t = nn.Variable.from_numpy_array(ts)
    h = F.relu(PF.affine(x, 16, name='l1', rng=rng))
    loss = F.mean(F.softmax_cross_entropy(PF.affine(h, 2, name='l2', rng=rng), t))
    solver = S.Adam(0.05)
    solver.set_parameters(nn.get_parameters())
    losses = []
    for _ in range(60):
        loss.forward()
        solver.zero_grad()
        loss.backward()
        solver.update()
        losses.append(float(loss.d))
    assert losses[-1] < 0.2 * losses[0]


def test_convolution_family_parameters():
    x = nn.Variable((2, 3, 8, 8))
    y = PF.convolution(x, 4, (3, 3), pad=(1, 1), name='c1')
    PF.convolution(nn.Variable((2, 8, 8, 3)), 4, (3, 3), channel_last=True, name='c2')
    PF.depthwise_convolution(x, (3, 3), multiplier=2, name='dw')
    d = PF.deconvolution(x, 6, (2, 2), stride=(2, 2), group=3, name='dc')
    PF.depthwise_deconvolution(x, (3, 3), name='ddc')
    s = shapes()
    assert s['c1/W'] == (4, 3, 3, 3) and s['c1/b'] == (4,)
    assert s['c2/W'] == (4, 3, 3, 3)          # (outmaps, *kernel, inmaps) for channel_last
    assert s['dw/W'] == (6, 3, 3) and s['dw/b'] == (6,)
    assert s['dc/W'] == (3, 2, 2, 2) and s['dc/b'] == (6,)
    assert s['ddc/W'] == (3, 3, 3) and s['ddc/b'] == (3,)
    assert y.shape == (2, 4, 8, 8) and d.shape == (2, 6, 16, 16)


def test_small_cnn_trains():
    """convolution + pooling + batch_matmul layers built with PF: the loss falls."""
    rng = np.random.RandomState(3)
    xs = rng.randn(32, 1, 8, 8).astype(np.float32)
    ts = (xs[:, 0, :4].sum(axis=(1, 2)) > xs[:, 0, 4:].sum(axis=(1, 2))).astype(np.int64)
    x = nn.Variable.from_numpy_array(xs)
    t = nn.Variable.from_numpy_array(ts.reshape(-1, 1))
    h = F.max_pooling(F.relu(PF.convolution(x, 4, (3, 3), pad=(1, 1), rng=rng)), (2, 2))
    h = F.reshape(h, (32, 1, 64))
    w = nn.parameter.get_parameter_or_create('head/W', (64, 2),
                                             lambda s: rng.randn(*s).astype(np.float32) * 0.1)
    logits = F.reshape(F.batch_matmul(h, F.reshape(w, (1, 64, 2))), (32, 2))
    loss = F.mean(F.softmax_cross_entropy(logits, t))
    solver = S.Adam(0.02)
    solver.set_parameters(nn.get_parameters())
    losses = []
    for _ in range(40):
        loss.forward()
        solver.zero_grad()
        loss.backward()
        solver.update()
        losses.append(float(loss.d))
    assert losses[-1] < 0.5 * losses[0]


def test_parameter_registry_scopes_and_dict_scopes():
    from nncy import parameter as P
    x = nn.Variable((2, 3))
    with nn.parameter_scope('net'):
        with nn.parameter_scope('conv1/inner'):
            PF.affine(x, 4)
            assert nn.parameter.get_current_parameter_scope() == 'net/conv1/inner'
    assert set(shapes()) == {'net/conv1/inner/affine/W', 'net/conv1/inner/affine/b'}
    with nn.parameter_scope('net'):
        assert set(nn.get_parameters()) == {'conv1/inner/affine/W', 'conv1/inner/affine/b'}
        w = P.get_parameter('conv1/inner/affine/W')
        assert w is not None and w.shape == (3, 4)
        P.set_parameter('extra/v', nn.Variable((5,), need_grad=False))
        assert 'extra/v' not in nn.get_parameters(grad_only=True)
        assert 'extra/v' in nn.get_parameters(grad_only=False)
        assert P.pop_parameter('extra/v').shape == (5,)
        assert P.get_parameter('extra/v') is None
    store = {}
    with nn.parameter_scope('side', store):      # a dict as the scope's storage
        PF.affine(x, 2, name='fc')
    assert set(store['fc']) == {'W', 'b'}
    assert not any(k.startswith('side') or k.startswith('fc') for k in shapes())
    v = P.get_parameter_or_create('made/z', (2, 2), lambda s: np.ones(s))
    np.testing.assert_array_equal(v.d, 1.0)
    assert P.get_parameter_or_create('made/z') is v
    with pytest.raises(ValueError, match='made/z'):
        P.get_parameter_or_create('made/z', (3,))
    nn.clear_parameters()
    assert shapes() == {}
