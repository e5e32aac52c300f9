"""Checker runs and argument errors for the neural-network layers: embed, rnn,
lstm, gru, multi_head_attention and patch_correlation.  The NumPy references
are written from the math (float64), with NNabla's weight layouts."""
import numpy as np
import pytest

import nncy as nn
import nncy.functions as F

from checker import check_function, check_raises

R = np.random.RandomState(11)


def randn(*shape, scale=1.0):
    return np.asarray(R.randn(*shape) * scale, dtype=np.float32).reshape(shape)


def _f64(a):
    return None if a is None else np.asarray(a, np.float64)


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


# --------------------------------------------------------------------------
# embed
# --------------------------------------------------------------------------

def embed_ref(x0, w):
    return w.astype(np.float64)[x0.astype(np.int64)]


def embed_grad_ref(x0, w, dy):
    g = np.zeros(w.shape, np.float64)
    np.add.at(g, x0.astype(np.int64), dy)
    return None, g


@pytest.mark.parametrize('xshape,wshape,dtype', [
    ((3, 4), (5, 3), np.int32),
    ((6,), (4, 2, 2), np.int64),
    ((2, 2, 2), (3,), np.int32),
    ((), (4, 3), np.int32),
], ids=str)
def test_embed(xshape, wshape, dtype):
    x0 = R.randint(0, wshape[0], size=xshape).astype(dtype)
    if x0.size > 1:
        x0.reshape(-1)[-1] = x0.reshape(-1)[0]     # a repeated index accumulates
    w = randn(*wshape)
    check_function(F.embed, [x0, w], embed_ref, ref_grad=embed_grad_ref,
                   atol=0, rtol=0, grad_atol=1e-6, grad_rtol=1e-6)


@pytest.mark.parametrize('bad', [5, -1, 100], ids=str)
def test_embed_index_out_of_range(bad):
    w = randn(5, 3)
    x0 = np.array([[0, bad], [1, 2]], np.int32)
    y = F.embed(nn.Variable.from_numpy_array(x0), nn.Variable.from_numpy_array(w))
    with pytest.raises(ValueError) as info:
        y.forward()
    msg = str(info.value)
    assert 'embed' in msg and 'x0' in msg and str(bad) in msg, msg
    with pytest.raises(ValueError):
        with nn.auto_forward():
            F.embed(nn.Variable.from_numpy_array(x0), nn.Variable.from_numpy_array(w))
    with pytest.raises(ValueError):
        F.embed(nn.NdArray.from_numpy_array(x0), nn.NdArray.from_numpy_array(w))


def test_embed_larger_table():
    """Enough rows and indices for the threaded gradient."""
    w = randn(300, 64)
    x0 = R.randint(0, 300, size=(40, 50)).astype(np.int32)
    wv = nn.Variable.from_numpy_array(w, need_grad=True)
    y = F.embed(nn.Variable.from_numpy_array(x0), wv)
    y.forward()
    np.testing.assert_array_equal(y.d, w[x0])
    dy = randn(40, 50, 64)
    wv.g = 0
    y.backward(dy)
    np.testing.assert_allclose(wv.g, embed_grad_ref(x0, w, dy.astype(np.float64))[1],
                               rtol=1e-5, atol=1e-4)


def test_embed_bad_arguments():
    check_raises(F.embed, [np.zeros(3, np.int32), np.zeros((), np.float32)], exc=ValueError,
                 match_words=['w'])
    check_raises(F.embed, [np.zeros(3, np.int32), 'table'], exc=TypeError, match_words=['w'])


# --------------------------------------------------------------------------
# rnn / lstm / gru
# --------------------------------------------------------------------------

def recurrent_ref(cell, x, h, c, w0, w, b, num_layers=1, nonlinearity='tanh', dropout=None,
                  bidirectional=False, training=True, masks=None):
    """NNabla's stacked (bi)directional recurrent layers, step by step."""
    x, h, c, w0, w, b = map(_f64, (x, h, c, w0, w, b))
    T, B, _ = x.shape
    L, D, _, H = h.shape
    layer_in = x
    hn = np.zeros((L, D, B, H))
    cn = np.zeros((L, D, B, H))
    for l in range(L):
        W = w0 if l == 0 else w[l - 1]
        n_in = layer_in.shape[2]
        out = np.zeros((T, B, D * H))
        for d in range(D):
            hc = h[l, d]
            cc = c[l, d] if c is not None else None
            for t in (range(T) if d == 0 else range(T - 1, -1, -1)):
                xt = layer_in[t]
                xh = np.concatenate([xt, hc], axis=1)
                bias = b[l, d] if b is not None else None
                if cell == 'rnn':
                    pre = xh @ W[d].T + (bias if bias is not None else 0)
                    hc = np.tanh(pre) if nonlinearity == 'tanh' else np.maximum(pre, 0)
                elif cell == 'lstm':
                    def gate(k):
                        return xh @ W[d][k].T + (bias[k] if bias is not None else 0)
                    i, f, g, o = _sig(gate(0)), _sig(gate(1)), np.tanh(gate(2)), _sig(gate(3))
                    cc = f * cc + i * g
                    hc = o * np.tanh(cc)
                else:
                    def lin(k, a, wpart):
                        return a @ wpart.T + (bias[k] if bias is not None else 0)
                    r = _sig(lin(0, xh, W[d][0]))
                    z = _sig(lin(1, xh, W[d][1]))
                    n = np.tanh(lin(2, xt, W[d][2][:, :n_in])
                                + r * lin(3, hc, W[d][2][:, n_in:]))
                    hc = (1 - z) * n + z * hc
                out[t, :, d * H:(d + 1) * H] = hc
            hn[l, d] = hc
            if cc is not None:
                cn[l, d] = cc
        layer_in = out
        if masks is not None and l < L - 1:
            layer_in = layer_in * masks[l]
    if cell == 'lstm':
        return out, hn, cn
    return out, hn


def rnn_inputs(cell, T, B, I, H, L, D, bias):
    G = {'rnn': (), 'lstm': (4,), 'gru': (3,)}[cell]
    GB = {'rnn': (), 'lstm': (4,), 'gru': (4,)}[cell]
    x = randn(T, B, I)
    h = randn(L, D, B, H)
    w0 = randn(*((D,) + G + (H, I + H)), scale=0.6)
    w = randn(*((L - 1, D) + G + (H, D * H + H)), scale=0.6) if L > 1 else None
    b = randn(*((L, D) + GB + (H,)), scale=0.5) if bias else None
    if cell == 'lstm':
        return [x, h, randn(L, D, B, H), w0, w, b]
    return [x, h, w0, w, b]


FNS = {'rnn': F.rnn, 'lstm': F.lstm, 'gru': F.gru}

RNN_CASES = [
    # cell, nonlinearity, num_layers, bidirectional, bias
    ('rnn', 'tanh', 1, False, True),
    ('rnn', 'tanh', 2, True, True),
    ('rnn', 'relu', 2, False, False),
    ('rnn', 'relu', 1, True, True),
    ('lstm', None, 1, False, True),
    ('lstm', None, 2, True, True),
    ('lstm', None, 2, False, False),
    ('lstm', None, 1, True, False),
    ('gru', None, 1, False, True),
    ('gru', None, 2, True, True),
    ('gru', None, 2, False, False),
    ('gru', None, 1, True, False),
]


@pytest.mark.parametrize('cell,nonlin,L,bidir,bias', RNN_CASES, ids=str)
def test_recurrent(cell, nonlin, L, bidir, bias):
    D = 2 if bidir else 1
    inputs = rnn_inputs(cell, 3, 2, 3, 2, L, D, bias)
    args = {'num_layers': L, 'bidirectional': bidir}
    if nonlin:
        args['nonlinearity'] = nonlin

    def ref(*ins, **a):
        if cell == 'lstm':
            return recurrent_ref(cell, *ins, **a)
        x, h, w0, w, b = ins
        return recurrent_ref(cell, x, h, None, w0, w, b, **a)

    check_function(FNS[cell], inputs, ref, args, atol=2e-5, rtol=2e-5,
                   fd_atol=1e-2, fd_rtol=1e-2, fd_max_elems=24)


@pytest.mark.parametrize('cell', ['rnn', 'lstm', 'gru'])
def test_recurrent_inference(cell):
    """training=False: the same forward, and backward is refused (as NNabla)."""
    inputs = rnn_inputs(cell, 4, 3, 2, 3, 2, 2, True)
    args = {'num_layers': 2, 'bidirectional': True, 'training': False, 'dropout': 0.5}

    def ref(*ins, **a):
        a = dict(a, dropout=None)
        if cell == 'lstm':
            return recurrent_ref(cell, *ins, **a)
        x, h, w0, w, b = ins
        return recurrent_ref(cell, x, h, None, w0, w, b, **a)

    check_function(FNS[cell], inputs, ref, args, grad_inputs=[False] * len(inputs),
                   atol=2e-5, rtol=2e-5)
    vs = [nn.Variable.from_numpy_array(a, need_grad=True) for a in inputs]
    outs = FNS[cell](*vs, **args)
    outs[0].forward()
    with pytest.raises(RuntimeError) as info:
        outs[0].backward()
    assert cell in str(info.value) and 'training' in str(info.value)


@pytest.mark.parametrize('cell', ['rnn', 'lstm', 'gru'])
def test_recurrent_dropout(cell):
    """Dropout acts between layers when training: layer 0 is unchanged, the
    output changes, and the gradients are those of the masked network."""
    L, D = 3, 2
    inputs = rnn_inputs(cell, 3, 2, 2, 2, L, D, True)
    fn = FNS[cell]
    vs = [None if a is None else nn.Variable.from_numpy_array(a, need_grad=True)
          for a in inputs]
    plain = fn(*vs, num_layers=L, bidirectional=True)
    drop = fn(*vs, num_layers=L, bidirectional=True, dropout=0.5)
    nn.forward_all(list(plain) + list(drop))
    np.testing.assert_allclose(drop[1].d[0], plain[1].d[0], rtol=1e-6, atol=1e-6)
    assert not np.allclose(drop[0].d, plain[0].d)
    # Same seed, same masks: a repeatable function whose gradients we check
    # against finite differences (resetting the seed before every forward).
    dys = [randn(*o.shape) for o in drop]
    sink = F.sink(*drop, one_input_grad=False)

    def objective():
        nn.random.seed(5)
        sink.forward()
        return sum(float(np.sum(o.d.astype(np.float64) * dy)) for o, dy in zip(drop, dys))

    base = objective()
    for v in vs:
        if v is not None:
            v.g = 0
    for o, dy in zip(drop, dys):
        o.g = dy
    sink.backward()
    grads = [None if v is None else v.g.copy() for v in vs]
    assert objective() == base
    eps = 1e-3
    rng = np.random.RandomState(0)
    for v, g in zip(vs, grads):
        if v is None:
            continue
        flat = v.d.reshape(-1)
        for j in rng.choice(flat.size, min(6, flat.size), replace=False):
            old = flat[j]
            flat[j] = old + eps
            fp = objective()
            flat[j] = old - eps
            fm = objective()
            flat[j] = old
            num = (fp - fm) / (2 * eps)
            assert abs(num - g.reshape(-1)[j]) <= 1e-2 + 2e-2 * abs(num), (cell, j, num, g)


def test_recurrent_weight_ignored_for_one_layer():
    """With num_layers=1 only weight_l0 is used; a weight given anyway does not
    change the result."""
    x, h, w0, _, b = rnn_inputs('gru', 3, 2, 3, 2, 1, 1, True)
    args = [nn.Variable.from_numpy_array(a) for a in (x, h, w0)]
    y0 = F.gru(*args, bias=nn.Variable.from_numpy_array(b))[0]
    y1 = F.gru(*args, weight=nn.Variable.from_numpy_array(randn(1, 1, 3, 2, 4)),
               bias=nn.Variable.from_numpy_array(b))[0]
    nn.forward_all([y0, y1])
    np.testing.assert_array_equal(y0.d, y1.d)


def test_recurrent_longer_sequence():
    """A longer, wider sequence where the products go through the blocked gemm."""
    T, B, I, H = 12, 8, 40, 48
    x, h, c, w0, w, b = rnn_inputs('lstm', T, B, I, H, 2, 2, True)
    w0 *= 0.2
    w *= 0.2
    vs = [nn.Variable.from_numpy_array(a) for a in (x, h, c, w0, w, b)]
    outs = F.lstm(*vs, num_layers=2, bidirectional=True)
    nn.forward_all(list(outs))
    for o, e in zip(outs, recurrent_ref('lstm', x, h, c, w0, w, b, 2, bidirectional=True)):
        np.testing.assert_allclose(o.d, e, rtol=1e-4, atol=1e-4)


def test_recurrent_bad_arguments():
    x, h, w0, w, b = rnn_inputs('rnn', 3, 2, 3, 2, 2, 1, True)
    check_raises(F.rnn, [x, h, w0, w, b], {'num_layers': 2, 'nonlinearity': 'sigmoid'},
                 exc=ValueError, match_words=['nonlinearity'])
    check_raises(F.rnn, [x, h[:1], w0, w, b], {'num_layers': 2}, exc=ValueError,
                 match_words=['h'])
    check_raises(F.rnn, [x, h, w0[..., :-1], w, b], {'num_layers': 2}, exc=ValueError,
                 match_words=['weight_l0'])
    check_raises(F.rnn, [x, h, w0, None, b], {'num_layers': 2}, exc=ValueError,
                 match_words=['weight'])
    check_raises(F.rnn, [x, h, w0, w, b[:, :, :1]], {'num_layers': 2}, exc=ValueError,
                 match_words=['bias'])
    check_raises(F.rnn, [x, h, w0, w, b], {'num_layers': 0}, exc=ValueError,
                 match_words=['num_layers'])
    check_raises(F.rnn, [x, h, w0, w, b], {'num_layers': 2, 'dropout': 1.5}, exc=ValueError,
                 match_words=['dropout'])
    check_raises(F.rnn, [x[0], h, w0, w, b], {'num_layers': 2}, exc=ValueError,
                 match_words=['x'])
    check_raises(F.rnn, [x, h, w0, w, b], {'num_layers': 'two'}, exc=TypeError,
                 match_words=['num_layers'])
    check_raises(F.rnn, [x, h, w0, w, b], {'num_layers': 2, 'bidirectional': 'yes'},
                 exc=TypeError, match_words=['bidirectional'])
    check_raises(F.rnn, [x, h, w0, w, b], {'num_layers': 2, 'dropout': 'half'},
                 exc=TypeError, match_words=['dropout'])
    x, h, c, w0, w, b = rnn_inputs('lstm', 3, 2, 3, 2, 1, 2, True)
    check_raises(F.lstm, [x, h, c[:, :1], w0, None, b], {'bidirectional': True},
                 exc=ValueError, match_words=['c'])
    check_raises(F.lstm, [x, h, c, w0[:, :3], None, b], {'bidirectional': True},
                 exc=ValueError, match_words=['weight_l0'])
    x, h, w0, w, b = rnn_inputs('gru', 3, 2, 3, 2, 1, 1, True)
    check_raises(F.gru, [x, h, w0, None, b[:, :, :3]], exc=ValueError, match_words=['bias'])


# --------------------------------------------------------------------------
# multi_head_attention
# --------------------------------------------------------------------------

MHA_INPUTS = ['query', 'key', 'value', 'q_weight', 'k_weight', 'v_weight', 'out_weight',
              'q_bias', 'k_bias', 'v_bias', 'out_bias', 'attn_bias_k', 'attn_bias_v',
              'additive_mask', 'key_padding_mask']


def mha(query, key, value, q_weight, k_weight, v_weight, out_weight, q_bias=None,
        k_bias=None, v_bias=None, out_bias=None, attn_bias_k=None, attn_bias_v=None,
        additive_mask=None, key_padding_mask=None, num_heads=1, dropout=0.0):
    """F.multi_head_attention with its inputs first (the checker's calling order)."""
    return F.multi_head_attention(query, key, value, num_heads, q_weight, k_weight, v_weight,
                                  out_weight, q_bias, k_bias, v_bias, out_bias, attn_bias_k,
                                  attn_bias_v, dropout, additive_mask, key_padding_mask)


mha.__name__ = 'multi_head_attention'


def mha_ref(query, key, value, q_weight, k_weight, v_weight, out_weight, q_bias=None,
            k_bias=None, v_bias=None, out_bias=None, attn_bias_k=None, attn_bias_v=None,
            additive_mask=None, key_padding_mask=None, num_heads=1, dropout=0.0):
    q, k, v = _f64(query), _f64(key), _f64(value)
    Lt, B, _ = q.shape
    Ls = k.shape[0]
    E, Ev = q_weight.shape[1], v_weight.shape[1]
    hd, hv = E // num_heads, Ev // num_heads

    def proj(x, w, b):
        y = x @ _f64(w)
        return y + _f64(b) if b is not None else y

    qp = proj(q, q_weight, q_bias) * hd ** -0.5
    kp, vp = proj(k, k_weight, k_bias), proj(v, v_weight, v_bias)
    am = None if additive_mask is None else _f64(additive_mask)
    kpm = None if key_padding_mask is None else np.asarray(key_padding_mask) != 0
    if attn_bias_k is not None:
        kp = np.concatenate([kp, np.broadcast_to(_f64(attn_bias_k), (1, B, E))])
        vp = np.concatenate([vp, np.broadcast_to(_f64(attn_bias_v), (1, B, Ev))])
        if am is not None:
            am = np.pad(am, ((0, 0), (0, 1)))
        if kpm is not None:
            kpm = np.pad(kpm, ((0, 0), (0, 1)))
    S = kp.shape[0]
    q4 = qp.reshape(Lt, B, num_heads, hd)
    k4 = kp.reshape(S, B, num_heads, hd)
    v4 = vp.reshape(S, B, num_heads, hv)
    scores = np.einsum('tbhd,sbhd->bhts', q4, k4)
    if am is not None:
        scores = scores + am
    if kpm is not None:
        scores = np.where(kpm[:, None, None, :], -np.inf, scores)
    scores = scores - scores.max(axis=-1, keepdims=True)
    p = np.exp(scores)
    p /= p.sum(axis=-1, keepdims=True)
    o = np.einsum('bhts,sbhd->tbhd', p, v4).reshape(Lt, B, Ev)
    y = proj(o, out_weight, out_bias)
    return y, p.mean(axis=1)


def mha_inputs(Lt=3, Ls=4, B=2, Dq=5, Dk=3, Dv=4, E=4, Ev=6, Eo=3, biases=True,
               attn_bias=False, additive=False, padding=False):
    a = dict(query=randn(Lt, B, Dq), key=randn(Ls, B, Dk), value=randn(Ls, B, Dv),
             q_weight=randn(Dq, E, scale=0.5), k_weight=randn(Dk, E, scale=0.5),
             v_weight=randn(Dv, Ev, scale=0.5), out_weight=randn(Ev, Eo, scale=0.5))
    if biases:
        a.update(q_bias=randn(E), k_bias=randn(E), v_bias=randn(Ev), out_bias=randn(Eo))
    if attn_bias:
        a.update(attn_bias_k=randn(E), attn_bias_v=randn(Ev))
    if additive:
        a['additive_mask'] = randn(Lt, Ls)
    if padding:
        m = np.zeros((B, Ls), np.float32)
        m[0, -1] = 1
        m[-1, 0] = 1
        a['key_padding_mask'] = m
    return [a.get(n) for n in MHA_INPUTS]


MHA_CASES = [
    # num_heads, options
    (2, dict()),
    (1, dict(biases=False, additive=True)),
    (2, dict(attn_bias=True, additive=True, padding=True)),
    (3, dict(E=6, Ev=3, biases=False, attn_bias=True, padding=True)),
    (2, dict(Lt=1, Ls=1, B=1, padding=False, additive=True)),
]


@pytest.mark.parametrize('heads,opts', MHA_CASES, ids=str)
def test_multi_head_attention(heads, opts):
    inputs = mha_inputs(**opts)
    grad_inputs = [a is not None and n != 'key_padding_mask'
                   for n, a in zip(MHA_INPUTS, inputs)]
    check_function(mha, inputs, mha_ref, {'num_heads': heads}, grad_inputs=grad_inputs,
                   atol=2e-5, rtol=2e-5, fd_atol=1e-2, fd_rtol=1e-2, fd_max_elems=16)


def test_multi_head_attention_positional_call_and_shapes():
    """NNabla's signature: num_heads is the fourth positional argument."""
    ins = [nn.Variable.from_numpy_array(a) for a in mha_inputs(attn_bias=True)[:7]]
    y, w = F.multi_head_attention(ins[0], ins[1], ins[2], 2, *ins[3:7])
    assert y.shape == (3, 2, 3) and w.shape == (2, 3, 4)
    y, w = F.multi_head_attention(*ins[:3], 2, *ins[3:7],
                                  attn_bias_k=nn.Variable.from_numpy_array(randn(4)),
                                  attn_bias_v=nn.Variable.from_numpy_array(randn(6)))
    assert w.shape == (2, 3, 5)
    with pytest.raises(TypeError):
        F.multi_head_attention(*ins[:3])


def test_multi_head_attention_self_attention_grads_add_up():
    """query, key and value as one variable: its gradient sums all three paths."""
    x = randn(3, 2, 4)
    ws = [randn(4, 4, scale=0.5) for _ in range(3)] + [randn(4, 2, scale=0.5)]
    xv = nn.Variable.from_numpy_array(x, need_grad=True)
    wv = [nn.Variable.from_numpy_array(w) for w in ws]
    y, _ = F.multi_head_attention(xv, xv, xv, 2, *wv)
    dy = randn(3, 2, 2)
    y.forward()
    xv.g = 0
    y.backward(dy)
    eps = 1e-3
    flat = xv.d.reshape(-1)
    for j in range(0, flat.size, 3):
        old = flat[j]
        vals = []
        for step in (eps, -eps):
            flat[j] = old + step
            y.forward()
            vals.append(float(np.sum(y.d.astype(np.float64) * dy)))
        flat[j] = old
        num = (vals[0] - vals[1]) / (2 * eps)
        assert abs(num - xv.g.reshape(-1)[j]) < 5e-3 + 1e-2 * abs(num), (j, num)


def test_multi_head_attention_dropout():
    inputs = mha_inputs(attn_bias=True)
    vs = [None if a is None else nn.Variable.from_numpy_array(a, need_grad=True)
          for a in inputs]
    kw = dict(zip(MHA_INPUTS, vs))
    plain = mha(**kw, num_heads=2)
    drop = mha(**kw, num_heads=2, dropout=0.5)
    nn.random.seed(3)
    nn.forward_all(list(plain) + list(drop))
    # dropped weights are zero, kept ones scaled by 1 / (1 - p); averaged over heads
    assert not np.allclose(drop[1].d, plain[1].d)
    assert np.any(drop[1].d == 0)
    # repeatable with a seed; gradients match finite differences of the masked function
    dys = [randn(*o.shape) for o in drop]
    sink = F.sink(*drop, one_input_grad=False)

    def objective():
        nn.random.seed(9)
        sink.forward()
        return sum(float(np.sum(o.d.astype(np.float64) * dy)) for o, dy in zip(drop, dys))

    objective()
    for v in vs:
        if v is not None:
            v.g = 0
    for o, dy in zip(drop, dys):
        o.g = dy
    sink.backward()
    rng = np.random.RandomState(1)
    for v in vs:
        if v is None:
            continue
        g = v.g.copy()
        flat = v.d.reshape(-1)
        for j in rng.choice(flat.size, min(4, flat.size), replace=False):
            old = flat[j]
            flat[j] = old + 1e-3
            fp = objective()
            flat[j] = old - 1e-3
            fm = objective()
            flat[j] = old
            num = (fp - fm) / 2e-3
            assert abs(num - g.reshape(-1)[j]) < 1e-2 + 2e-2 * abs(num), (j, num)


def test_multi_head_attention_bad_arguments():
    base = mha_inputs(attn_bias=True, additive=True, padding=True)

    def with_(**kw):
        a = dict(zip(MHA_INPUTS, base))
        a.update(kw)
        return [a[n] for n in MHA_INPUTS]

    check_raises(mha, base, {'num_heads': 3}, exc=ValueError, match_words=['num_heads'])
    check_raises(mha, base, {'num_heads': 0}, exc=ValueError, match_words=['num_heads'])
    check_raises(mha, base, {'num_heads': 'two'}, exc=TypeError, match_words=['num_heads'])
    check_raises(mha, base, {'num_heads': 2, 'dropout': 1.0}, exc=ValueError,
                 match_words=['dropout'])
    check_raises(mha, with_(k_weight=randn(3, 6)), {'num_heads': 2}, exc=ValueError,
                 match_words=['k_weight'])
    check_raises(mha, with_(q_weight=randn(4, 4)), {'num_heads': 2}, exc=ValueError,
                 match_words=['q_weight'])
    check_raises(mha, with_(out_weight=randn(5, 3)), {'num_heads': 2}, exc=ValueError,
                 match_words=['out_weight'])
    check_raises(mha, with_(attn_bias_v=None), {'num_heads': 2}, exc=ValueError,
                 match_words=['attn_bias_v'])
    check_raises(mha, with_(additive_mask=randn(3, 5)), {'num_heads': 2}, exc=ValueError,
                 match_words=['additive_mask'])
    check_raises(mha, with_(key_padding_mask=np.zeros((3, 4), np.float32)), {'num_heads': 2},
                 exc=ValueError, match_words=['key_padding_mask'])
    check_raises(mha, with_(value=randn(5, 2, 4)), {'num_heads': 2}, exc=ValueError,
                 match_words=['value'])
    check_raises(mha, with_(key=randn(4, 3, 3)), {'num_heads': 2}, exc=ValueError,
                 match_words=['key'])
    check_raises(mha, with_(v_bias=randn(4)), {'num_heads': 2}, exc=ValueError,
                 match_words=['v_bias'])


# --------------------------------------------------------------------------
# patch_correlation
# --------------------------------------------------------------------------

def _expand(v, n):
    v = (v,) if isinstance(v, int) else tuple(v)
    if len(v) == 1:
        v = v * n
    if n == 4 and len(v) == 2:
        v = (v[0], v[0], v[1], v[1])
    return v


def patch_correlation_ref(x1, x2, patch=(1, 1), shift=(0, 0), patch_step=(1, 1),
                          shift_step=(1, 1), padding=(0, 0, 0, 0), channel_last=False):
    """The definition, with every sample outside the image taken as zero."""
    ph, pw = _expand(patch, 2)
    sh, sw = _expand(shift, 2)
    ah, aw = _expand(patch_step, 2)
    bh, bw = _expand(shift_step, 2)
    pt, pb, pl, pr = _expand(padding, 4)
    a, b = _f64(x1), _f64(x2)
    if not channel_last:
        a, b = a.transpose(0, 2, 3, 1), b.transpose(0, 2, 3, 1)
    N, H, W, C = a.shape
    m = max(pt, pb, pl, pr) + max(sh, sw) + max(ph, pw) + 1
    ap = np.pad(a, ((0, 0), (m, m), (m, m), (0, 0)))
    bp = np.pad(b, ((0, 0), (m, m), (m, m), (0, 0)))
    oh, ow = (H + pt + pb - ph) // ah + 1, (W + pl + pr - pw) // aw + 1
    ys = range(-sh, sh + 1, bh)
    xs = range(-sw, sw + 1, bw)
    out = np.zeros((N, oh, ow, len(ys), len(xs)))
    for oy in range(oh):
        for ox in range(ow):
            y0, x0 = oy * ah - pt + m, ox * aw - pl + m
            p1 = ap[:, y0:y0 + ph, x0:x0 + pw]
            for iy, sy in enumerate(ys):
                for ix, sx in enumerate(xs):
                    p2 = bp[:, y0 + sy:y0 + sy + ph, x0 + sx:x0 + sx + pw]
                    out[:, oy, ox, iy, ix] = np.sum(p1 * p2, axis=(1, 2, 3))
    return out if channel_last else out.transpose(0, 3, 4, 1, 2)


def test_patch_correlation_reference_examples():
    """The examples of NNabla's documentation, with their exact outputs."""
    N, C, H, W = 1, 2, 3, 4
    x = nn.Variable.from_numpy_array(np.ones([N, C, H, W]))

    def run(*a, **k):
        y = F.patch_correlation(x, x, *a, **k)
        y.forward()
        return y

    np.testing.assert_array_equal(run(patch=(H, W)).d, [[[[[24.]]]]])
    np.testing.assert_array_equal(run(patch=(H - 1, W - 1)).d, [[[[[12., 12.], [12., 12.]]]]])
    np.testing.assert_array_equal(run(patch=(H - 1, W - 1), patch_step=(2, 1)).d,
                                  [[[[[12., 12.]]]]])
    y = run((H, 1), shift=(0, 1))
    assert y.shape == (1, 1, 3, 1, 4)
    np.testing.assert_array_equal(y.d, [[[[[0., 6., 6., 6.]], [[6., 6., 6., 6.]],
                                          [[6., 6., 6., 0.]]]]])
    np.testing.assert_array_equal(run((H, 1), shift=(0, 1), shift_step=(1, 2)).d,
                                  [[[[[0., 6., 6., 6.]], [[6., 6., 6., 0.]]]]])
    np.testing.assert_array_equal(
        run(patch=(H, W), padding=(0, 1, W, W)).d,
        [[[[[0., 6., 12., 18., 24., 18., 12., 6., 0.],
            [0., 4., 8., 12., 16., 12., 8., 4., 0.]]]]])
    x1 = nn.Variable((1, 256, 44, 60))
    assert F.patch_correlation(x1, x1, shift=20, shift_step=2).shape == (1, 21, 21, 44, 60)


PC_CASES = [
    dict(),
    dict(patch=(2, 3)),
    dict(patch=2, shift=1),
    dict(patch=(3, 2), shift=(1, 2), patch_step=(2, 1), shift_step=(1, 2)),
    dict(patch=(2, 2), shift=(2, 1), padding=(1, 2)),
    dict(patch=(3, 3), shift=(1, 1), padding=(0, 1, 2, 1), patch_step=2),
    dict(patch=1, shift=(3, 3), shift_step=2, padding=1),
]


@pytest.mark.parametrize('channel_last', [False, True])
@pytest.mark.parametrize('args', PC_CASES, ids=str)
def test_patch_correlation(args, channel_last):
    shape = (2, 4, 5, 3) if channel_last else (2, 3, 4, 5)
    x1, x2 = randn(*shape), randn(*shape)
    check_function(F.patch_correlation, [x1, x2], patch_correlation_ref,
                   dict(args, channel_last=channel_last), atol=1e-5, rtol=1e-5,
                   fd_max_elems=24)


def test_patch_correlation_single_channel_and_same_input():
    """C == 1 (NCHW needs no transpose) and x1 is x2 (gradients add up)."""
    a = randn(1, 1, 5, 6)
    x = nn.Variable.from_numpy_array(a, need_grad=True)
    y = F.patch_correlation(x, x, patch=(2, 2), shift=(1, 1))
    y.forward()
    np.testing.assert_allclose(y.d, patch_correlation_ref(a, a, (2, 2), (1, 1)), rtol=1e-5,
                               atol=1e-5)
    dy = randn(*y.shape)
    x.g = 0
    y.backward(dy)
    eps = 1e-3
    flat = x.d.reshape(-1)
    for j in range(0, flat.size, 4):
        old = flat[j]
        flat[j] = old + eps
        y.forward()
        fp = float(np.sum(y.d.astype(np.float64) * dy))
        flat[j] = old - eps
        y.forward()
        fm = float(np.sum(y.d.astype(np.float64) * dy))
        flat[j] = old
        num = (fp - fm) / (2 * eps)
        assert abs(num - x.g.reshape(-1)[j]) < 5e-3 + 1e-2 * abs(num), (j, num)


def test_patch_correlation_larger():
    """Enough output rows for the threaded kernels."""
    a, b = randn(2, 8, 20, 24), randn(2, 8, 20, 24)
    args = dict(patch=(3, 3), shift=(4, 4), shift_step=2, padding=1)
    va = nn.Variable.from_numpy_array(a, need_grad=True)
    vb = nn.Variable.from_numpy_array(b, need_grad=True)
    y = F.patch_correlation(va, vb, **args)
    y.forward()
    np.testing.assert_allclose(y.d, patch_correlation_ref(a, b, **args), rtol=1e-4, atol=1e-4)
    va.g = 0
    vb.g = 0
    y.backward(np.ones(y.shape, np.float32))
    assert np.all(np.isfinite(va.g)) and np.all(np.isfinite(vb.g))
    # sum over all outputs is linear in each input: check one direction exactly
    d = randn(*a.shape)
    yp = F.patch_correlation(nn.Variable.from_numpy_array(a + d), vb, **args)
    yp.forward()
    np.testing.assert_allclose(np.sum(yp.d, dtype=np.float64) - np.sum(y.d, dtype=np.float64),
                               np.sum(va.g * d, dtype=np.float64), rtol=1e-3)


def test_patch_correlation_bad_arguments():
    x = randn(1, 2, 4, 5)
    check_raises(F.patch_correlation, [x, x], {'patch': (0, 1)}, exc=ValueError,
                 match_words=['patch'])
    check_raises(F.patch_correlation, [x, x], {'shift': (-1, 0)}, exc=ValueError,
                 match_words=['shift'])
    check_raises(F.patch_correlation, [x, x], {'patch_step': 0}, exc=ValueError,
                 match_words=['patch_step'])
    check_raises(F.patch_correlation, [x, x], {'shift_step': (1, 0)}, exc=ValueError,
                 match_words=['shift_step'])
    check_raises(F.patch_correlation, [x, x], {'padding': (1, 1, 1)}, exc=ValueError,
                 match_words=['padding'])
    check_raises(F.patch_correlation, [x, x], {'padding': (0, -1)}, exc=ValueError,
                 match_words=['padding'])
    check_raises(F.patch_correlation, [x, x], {'patch': (5, 1)}, exc=ValueError,
                 match_words=['patch'])
    check_raises(F.patch_correlation, [x, x], {'patch': (1, 2, 3)}, exc=ValueError,
                 match_words=['patch'])
    check_raises(F.patch_correlation, [x[0], x[0]], exc=ValueError, match_words=['x1'])
    check_raises(F.patch_correlation, [x, randn(1, 2, 4, 4)], exc=ValueError,
                 match_words=['x2'])
    check_raises(F.patch_correlation, [x, x], {'patch': 'big'}, exc=TypeError,
                 match_words=['patch'])
    check_raises(F.patch_correlation, [x, x], {'channel_last': 'no'}, exc=TypeError,
                 match_words=['channel_last'])
