"""The cuda backend's sequence layers (embed, rnn, lstm, gru,
multi_head_attention) against the CPU backend: outputs and input gradients."""
import numpy as np
import pytest
import nncy as nn
import nncy.functions as F
from test_functions_seq import MHA_INPUTS, mha_inputs as cpu_mha_inputs
from cuda_check import CPU, CUDA, TOL, cupy, run, same  # noqa: F401  (cupy is an autouse fixture)

R = np.random.RandomState(0)


def randn(*shape, scale=1.0):
    return np.asarray(R.randn(*shape) * scale, np.float32).reshape(shape)


def weighted(outs, weights):
    """One scalar from several outputs: sum_k sum(outs[k] * weights[k]), so
    that every output receives its own (random) gradient."""
    total = None
    for o, w in zip(outs, weights):
        s = F.sum(F.mul2(o, w))
        total = s if total is None else F.add2(total, s)
    return total


def same_multi(fn, arrays, need_grad, n_out, tol=TOL, seed=None):
    """``same`` for a function of several outputs: ``fn(*vars)`` returns them,
    and random weights (extra constant inputs) combine them into one scalar.
    With ``seed``, the global generator is reseeded when the graph is built
    (dropout draws its masks at the forward right after)."""
    shapes = [o.shape for o in _outputs(fn, arrays, n_out)]
    weights = [randn(*s) for s in shapes]

    def combined(*vs):
        if seed is not None:
            nn.random.seed(seed)
        return weighted(fn(*vs[:len(arrays)]), vs[len(arrays):])

    same(combined, list(arrays) + weights, tol=tol,
         need_grad=list(need_grad) + [False] * len(weights))


def _outputs(fn, arrays, n_out):
    outs = fn(*[nn.Variable.from_numpy_array(a) for a in arrays])
    assert len(outs) == n_out
    return outs


# ---------------------------------------------------------------------------
# embed

@pytest.mark.parametrize('xshape,wshape,dtype', [
    ((5,), (7, 3), np.int32),
    ((2, 3), (4,), np.int64),
    ((2, 4), (6, 2, 3), np.float32),    # float indices are truncated, as on the CPU
], ids=str)
def test_embed(xshape, wshape, dtype):
    x = R.randint(0, wshape[0], size=xshape).astype(dtype)
    if dtype == np.float32:
        x += 0.5
    w = randn(*wshape)
    same(F.embed, [x, w], need_grad=[False, True])


def test_embed_repeated_and_accumulated():
    """Repeated indices add up (atomicAdd), and a table used twice accumulates."""
    x = np.array([[1, 1, 3], [1, 0, 3]], np.int32)
    w = randn(4, 5)
    same(lambda a, b: F.add2(F.embed(a, b), F.embed(a, b)), [x, w], need_grad=[False, True])


@pytest.mark.parametrize('bad', [-1, 6])
def test_embed_index_out_of_range(bad):
    x = np.array([0, bad, 2], np.int32)
    w = randn(6, 2)
    with pytest.raises(ValueError) as info:
        run(CUDA, F.embed, [x, w], need_grad=[False, True], on_gpu=True)
    msg = str(info.value)
    assert 'embed' in msg and 'x0' in msg and str(bad) in msg, msg


def test_embed_no_index_gradient():
    with pytest.raises(ValueError, match='x0'):
        run(CUDA, F.embed, [np.array([0, 1], np.int32), randn(3, 2)], on_gpu=True)


# ---------------------------------------------------------------------------
# rnn / lstm / gru

def rnn_inputs(cell, T, B, I, H, L, D, bias):
    """The inputs in call order, None for the weight of one layer and a
    missing bias."""
    G = {'rnn': (), 'lstm': (4,), 'gru': (3,)}[cell]
    GB = {'rnn': (), 'lstm': (4,), 'gru': (4,)}[cell]
    ins = [randn(T, B, I), randn(L, D, B, H)]
    if cell == 'lstm':
        ins.append(randn(L, D, B, H))
    ins.append(randn(*((D,) + G + (H, I + H)), scale=0.6))
    ins.append(randn(*((L - 1, D) + G + (H, D * H + H)), scale=0.6) if L > 1 else None)
    ins.append(randn(*((L, D) + GB + (H,)), scale=0.5) if bias else None)
    return ins


FNS = {'rnn': F.rnn, 'lstm': F.lstm, 'gru': F.gru}


def recurrent(cell, inputs, **args):
    """(fn of the given inputs, those inputs): fn puts None back for the
    optional inputs left out."""
    given = [a for a in inputs if a is not None]
    where = [a is not None for a in inputs]

    def fn(*vs):
        it = iter(vs)
        return FNS[cell](*[next(it) if w else None for w in where], **args)
    return fn, given


RNN_CASES = [
    # cell, nonlinearity, num_layers, bidirectional, bias
    ('rnn', 'tanh', 1, False, True),
    ('rnn', 'tanh', 2, True, True),
    ('rnn', 'relu', 2, False, False),
    ('lstm', None, 1, False, True),
    ('lstm', None, 2, True, True),
    ('lstm', None, 1, True, False),
    ('gru', None, 1, False, True),
    ('gru', None, 2, True, True),
    ('gru', None, 2, False, False),
]


@pytest.mark.parametrize('cell,nonlin,L,bidir,bias', RNN_CASES, ids=str)
def test_recurrent(cell, nonlin, L, bidir, bias):
    args = {'num_layers': L, 'bidirectional': bidir}
    if nonlin:
        args['nonlinearity'] = nonlin
    fn, given = recurrent(cell, rnn_inputs(cell, 3, 2, 3, 4, L, 2 if bidir else 1, bias),
                          **args)
    n_out = 3 if cell == 'lstm' else 2
    same_multi(fn, given, [True] * len(given), n_out)


@pytest.mark.parametrize('cell', ['rnn', 'lstm', 'gru'])
def test_recurrent_dropout(cell):
    """Training dropout between layers: the masks come from the global
    generator as on the CPU, so under one seed both backends agree."""
    fn, given = recurrent(cell, rnn_inputs(cell, 3, 2, 2, 3, 3, 2, True), num_layers=3,
                          bidirectional=True, dropout=0.4)
    same_multi(fn, given, [True] * len(given), 3 if cell == 'lstm' else 2, seed=7)
    # and the dropout does act
    plain, _ = recurrent(cell, rnn_inputs(cell, 3, 2, 2, 3, 3, 2, True), num_layers=3,
                         bidirectional=True)
    y_drop = run(CUDA, lambda *vs: fn(*vs)[0], given, backward=False)[0]
    y_plain = run(CUDA, lambda *vs: plain(*vs)[0], given, backward=False)[0]
    assert not np.allclose(y_drop, y_plain)


@pytest.mark.parametrize('cell', ['rnn', 'lstm', 'gru'])
def test_recurrent_inference(cell):
    """training=False: no dropout, the same forward, and backward is refused."""
    fn, given = recurrent(cell, rnn_inputs(cell, 3, 2, 2, 3, 2, 2, True), num_layers=2,
                          bidirectional=True, dropout=0.5, training=False)
    for k in range(3 if cell == 'lstm' else 2):
        same(lambda *vs: fn(*vs)[k], given, backward=False)
    with pytest.raises(RuntimeError, match='training'):
        run(CUDA, lambda *vs: fn(*vs)[0], given, on_gpu=True)


def test_recurrent_shared_weights_accumulate():
    """Two LSTMs on the same weights and states: gradients accumulate."""
    fn, given = recurrent('lstm', rnn_inputs('lstm', 4, 2, 3, 2, 2, 1, True), num_layers=2)

    def twice(*vs):
        a, b = fn(*vs), fn(*vs)
        return [F.add2(p, q) for p, q in zip(a, b)]
    same_multi(twice, given, [True] * len(given), 3)


@pytest.mark.parametrize('cell,T', [('lstm', 7), ('gru', 1), ('rnn', 5)])
def test_recurrent_wider(cell, T):
    """A wider network (and a one-step sequence)."""
    fn, given = recurrent(cell, rnn_inputs(cell, T, 5, 9, 12, 2, 2, True), num_layers=2,
                          bidirectional=True)
    for a in given[2:]:
        a *= 0.4
    same_multi(fn, given, [True] * len(given), 3 if cell == 'lstm' else 2,
               tol=dict(TOL, rtol=1e-3, atol=1e-4))


def test_recurrent_some_gradients():
    """Only some inputs need a gradient (the others are skipped)."""
    fn, given = recurrent('gru', rnn_inputs('gru', 3, 2, 3, 2, 2, 2, True), num_layers=2,
                          bidirectional=True)
    same_multi(fn, given, [False, True, False, True, False], 2)


# ---------------------------------------------------------------------------
# multi_head_attention

def mha_inputs(**kw):
    """The CPU tests' attention inputs, by name (the ones given)."""
    return {n: v for n, v in zip(MHA_INPUTS, cpu_mha_inputs(**kw)) if v is not None}


def mha(inputs, heads, dropout=0.0):
    """(fn of the given inputs, those inputs, their need_grad)."""
    names = [n for n in MHA_INPUTS if n in inputs]

    def fn(*vs):
        kw = dict(zip(names, vs))
        return F.multi_head_attention(num_heads=heads, dropout=dropout, **kw)
    return fn, [inputs[n] for n in names], [n != 'key_padding_mask' for n in names]


MHA_CASES = [
    # num_heads, options
    (2, dict()),
    (1, dict(biases=False, additive=True)),
    (2, dict(attn_bias=True, additive=True, padding=True)),
    (3, dict(E=6, Ev=3, biases=False, attn_bias=True, padding=True)),
    (2, dict(Lt=1, Ls=1, B=1, additive=True)),
]


@pytest.mark.parametrize('heads,opts', MHA_CASES, ids=str)
def test_multi_head_attention(heads, opts):
    fn, given, need = mha(mha_inputs(**opts), heads)
    same_multi(fn, given, need, 2)


def test_multi_head_attention_dropout():
    """Dropout on the attention weights: the same masks as on the CPU under one
    seed, and some weights are dropped."""
    fn, given, need = mha(mha_inputs(attn_bias=True, padding=True), 2, dropout=0.3)
    same_multi(fn, given, need, 2, seed=3)
    plain, _, _ = mha(mha_inputs(attn_bias=True, padding=True), 2)
    a_drop = run(CUDA, lambda *vs: fn(*vs)[1], given, backward=False)[0]
    a_plain = run(CUDA, lambda *vs: plain(*vs)[1], given, backward=False)[0]
    assert not np.allclose(a_drop, a_plain)


def test_self_attention_accumulates():
    """query = key = value: one input receives three gradient contributions."""
    a = mha_inputs(Ls=3, Dk=5, Dv=5, additive=True, padding=True)
    names = [n for n in MHA_INPUTS if n in a and n not in ('key', 'value')]

    def fn(*vs):
        kw = dict(zip(names, vs))
        kw['key'] = kw['value'] = kw['query']
        return F.multi_head_attention(num_heads=2, **kw)
    same_multi(fn, [a[n] for n in names], [n != 'key_padding_mask' for n in names], 2)


def test_multi_head_attention_some_gradients():
    fn, given, need = mha(mha_inputs(attn_bias=True), 2)
    need = [k % 2 == 0 for k in range(len(given))]
    same_multi(fn, given, need, 2)
