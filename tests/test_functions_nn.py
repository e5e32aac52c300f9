"""Checker runs and argument errors for the structured and composite
activation and normalization functions: crelu, celu, prelu,
batch_normalization, fused_batch_normalization, sync_batch_normalization,
mean_subtraction, clip_by_value, clip_grad_by_value, clip_by_norm,
clip_grad_by_norm, layer_normalization, instance_normalization,
group_normalization and weight_standardization.  The references are written
from the math in float64."""
import numpy as np
import pytest

import nncy as nn
import nncy.functions as F
import nncy.solvers as S

from checker import check_function, check_raises

R = np.random.RandomState(11)


def randn(*shape, scale=1.0, offset=0.0):
    return np.asarray(R.randn(*shape) * scale + offset, dtype=np.float32).reshape(shape)


def away(*shape, lo=0.1, hi=2.0):
    """|x| in [lo, hi] with random signs (off the kinks at 0)."""
    mag = R.uniform(lo, hi, size=shape)
    return np.asarray(mag * np.where(R.rand(*shape) < 0.5, -1, 1), np.float32).reshape(shape)


def f64(a):
    return None if a is None else np.asarray(a, np.float64)


NORM_TOL = dict(atol=2e-5, rtol=2e-5, fd_atol=1e-2, fd_rtol=2e-2)


# --------------------------------------------------------------------------
# crelu / celu (composite)
# --------------------------------------------------------------------------

def _elu(x, alpha):
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


@pytest.mark.parametrize('shape,axis', [((2, 3, 4), 1), ((2, 3, 4), 0), ((2, 3, 4), -1),
                                        ((5,), 0), ((3, 2), 1)], ids=str)
def test_crelu(shape, axis):
    x = away(*shape)
    check_function(F.crelu, [x],
                   lambda x, axis=1: np.concatenate([np.maximum(f64(x), 0),
                                                     np.maximum(-f64(x), 0)], axis=axis),
                   {'axis': axis})


@pytest.mark.parametrize('shape,axis,alpha', [((2, 3, 4), 1, 1.0), ((2, 3, 4), -1, 0.5),
                                              ((4, 2), 0, 2.0)], ids=str)
def test_celu(shape, axis, alpha):
    x = away(*shape, lo=0.05)
    check_function(F.celu, [x],
                   lambda x, alpha=1.0, axis=1: np.concatenate(
                       [_elu(f64(x), alpha), _elu(-f64(x), alpha)], axis=axis),
                   {'axis': axis, 'alpha': alpha}, atol=1e-6, rtol=4e-6)


def test_crelu_keeps_infinities_and_info():
    x = nn.Variable.from_numpy_array(np.array([[np.inf, -np.inf, 1.0]], np.float32))
    y = F.crelu(x, axis=1)
    y.forward()
    np.testing.assert_array_equal(y.d, [[np.inf, 0, 1, 0, np.inf, 0]])
    assert y.parent.info.type_name == 'CReLU' and y.parent.info.args == {'axis': 1}
    z = F.celu(x, 0.5, axis=0)
    assert z.shape == (2, 3) and z.parent.info.args == {'alpha': 0.5, 'axis': 0}
    assert len(y.parent.inputs) == 1


def test_crelu_celu_errors():
    check_raises(F.crelu, [randn(2, 3)], {'axis': 2}, exc=ValueError, match_words=['axis'])
    check_raises(F.celu, [randn(3)], {'axis': -2}, exc=ValueError, match_words=['axis'])
    check_raises(F.crelu, [np.float32(1.0)], {'axis': 0}, exc=(ValueError, TypeError))


# --------------------------------------------------------------------------
# prelu
# --------------------------------------------------------------------------

def prelu_ref(x, w, base_axis=1):
    x = f64(x)
    w = f64(w).reshape(-1)
    if w.size > 1:
        shape = [1] * x.ndim
        shape[base_axis] = w.size
        w = w.reshape(shape)
    return np.where(x >= 0, x, x * w)


@pytest.mark.parametrize('xs,ws,base_axis', [((2, 3, 4), (3,), 1), ((2, 3, 4), (1,), 1),
                                             ((2, 3, 4), (), 1), ((2, 3, 4), (4,), 2),
                                             ((6, 5), (6,), 0), ((4, 20), (20,), 1),
                                             ((2, 3, 4), (3,), -2)], ids=str)
def test_prelu(xs, ws, base_axis):
    x = away(*xs)
    w = np.asarray(R.uniform(-0.5, 0.5, size=ws), np.float32).reshape(ws)
    check_function(F.prelu, [x, w], prelu_ref, {'base_axis': base_axis})


def test_prelu_errors():
    check_raises(F.prelu, [randn(2, 3), randn(2)], exc=ValueError, match_words=['x1', '3'])
    check_raises(F.prelu, [randn(2, 3), randn(3, 1)], exc=ValueError, match_words=['x1'])
    check_raises(F.prelu, [randn(2, 3), randn(3)], {'base_axis': 2}, exc=ValueError,
                 match_words=['base_axis'])
    check_raises(F.prelu, [randn(2, 3), randn(1)], {'base_axis': 'a'}, exc=TypeError,
                 match_words=['base_axis'])


# --------------------------------------------------------------------------
# batch normalization (and fused, sync)
# --------------------------------------------------------------------------

def _norm_ref(x, kept, eps, gamma=None, beta=None, mean=None, var=None):
    x = f64(x)
    red = tuple(i for i in range(x.ndim) if i not in kept)
    m = x.mean(axis=red, keepdims=True) if mean is None else f64(mean)
    v = x.var(axis=red, keepdims=True) if var is None else f64(var)
    y = (x - m) / np.sqrt(v + eps)
    if gamma is not None:
        y = y * f64(gamma)
    if beta is not None:
        y = y + f64(beta)
    return y, m, v


def _kept(axes, nd):
    axes = (axes,) if isinstance(axes, int) else axes
    return [a % nd for a in axes]


def bn_ref(x, beta, gamma, mean, variance, axes=(1,), decay_rate=0.9, eps=1e-5,
           batch_stat=True, output_stat=False):
    kept = _kept(axes, x.ndim)
    if batch_stat:
        y, m, v = _norm_ref(x, kept, eps, gamma, beta)
    else:
        y, m, v = _norm_ref(x, kept, eps, gamma, beta, mean, variance)
    return (y, m, v) if output_stat else y


def _bn_inputs(xs, axes, with_beta=True, with_gamma=True, offset=0.0):
    x = randn(*xs, offset=offset)
    kept = _kept(axes, len(xs))
    ps = tuple(n if i in kept else 1 for i, n in enumerate(xs))
    beta = randn(*ps) if with_beta else None
    gamma = np.asarray(R.uniform(0.5, 1.5, size=ps), np.float32).reshape(ps) if with_gamma else None
    mean = randn(*ps, scale=0.1)
    var = np.asarray(R.uniform(0.5, 2.0, size=ps), np.float32).reshape(ps)
    return [x, beta, gamma, mean, var]


BN_CASES = [
    ((4, 3, 2, 5), (1,)),
    ((4, 3), (1,)),
    ((6, 5, 3), (2,)),           # channel last
    ((3, 4, 5), (0,)),
    ((2, 3, 4, 2), (1, 3)),      # two kept axes, not adjacent: transposed copy
    ((2, 3, 4), (0, 1)),
    ((4, 3, 20), (1,)),          # inner run >= 16: row-wise loops
    ((5, 3), -1),
]


@pytest.mark.parametrize('output_stat', [False, True])
@pytest.mark.parametrize('xs,axes', BN_CASES, ids=str)
def test_batch_normalization_training(xs, axes, output_stat):
    inputs = _bn_inputs(xs, axes)
    check_function(F.batch_normalization, inputs, bn_ref,
                   {'axes': axes, 'output_stat': output_stat},
                   grad_inputs=[True, True, True, False, False], **NORM_TOL)


@pytest.mark.parametrize('xs,axes', BN_CASES[:4], ids=str)
def test_batch_normalization_inference(xs, axes):
    inputs = _bn_inputs(xs, axes)
    check_function(F.batch_normalization, inputs, bn_ref, {'axes': axes, 'batch_stat': False},
                   grad_inputs=[True, True, True, False, False], **NORM_TOL)


@pytest.mark.parametrize('beta,gamma', [(False, True), (True, False), (False, False)])
@pytest.mark.parametrize('batch_stat', [True, False])
def test_batch_normalization_without_beta_gamma(beta, gamma, batch_stat):
    inputs = _bn_inputs((4, 3, 5), (1,), beta, gamma)
    r = check_function(F.batch_normalization, inputs, bn_ref, {'batch_stat': batch_stat},
                       grad_inputs=[True, True, True, False, False], **NORM_TOL)
    assert len(r.function.inputs) == 3 + beta + gamma


def test_batch_normalization_without_running_stats():
    x, beta, gamma, _, _ = _bn_inputs((5, 3, 4), (1,))
    check_function(F.batch_normalization, [x, beta, gamma, None, None], bn_ref,
                   {'output_stat': True}, **NORM_TOL)


def test_batch_normalization_large_mean_and_sizes():
    """One-pass statistics stay accurate when the mean dwarfs the spread, for
    sizes that cross the SIMD widths and the thread split."""
    for xs in [(1000, 3, 7), (70000, 3), (2, 3, 40001)]:
        x = randn(*xs, offset=1000.0)
        g = np.ones((1, 3, 1) if len(xs) == 3 else (1, 3), np.float32)
        axes = (1,)
        vs = [nn.Variable.from_numpy_array(a) for a in (x, g * 0, g)]
        y, m, v = F.batch_normalization(vs[0], vs[1], vs[2], None, None, axes=axes,
                                        output_stat=True)
        F.sink(y, m, v).forward()
        ye, me, ve = bn_ref(x, None, None, None, None, axes=axes, output_stat=True)
        np.testing.assert_allclose(m.d, me, rtol=1e-7)
        np.testing.assert_allclose(v.d, ve, rtol=1e-4)
        np.testing.assert_allclose(y.d, ye, atol=2e-4, rtol=1e-4)


def test_batch_normalization_running_update():
    x, beta, gamma, mean, var = _bn_inputs((6, 3, 4), (1,))
    vs = [nn.Variable.from_numpy_array(a) for a in (x, beta, gamma, mean, var)]
    y = F.batch_normalization(*vs, decay_rate=0.7)
    for step in range(3):
        y.forward()
        xm = f64(x).mean(axis=(0, 2), keepdims=True)
        xv = f64(x).var(axis=(0, 2), keepdims=True)
        mean = 0.7 * f64(mean) + 0.3 * xm
        var = 0.7 * f64(var) + 0.3 * xv * 24 / 23      # unbiased, as NNabla
        np.testing.assert_allclose(vs[3].d, mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(vs[4].d, var, rtol=1e-5, atol=1e-6)
    # inference does not touch them
    before = vs[3].d.copy(), vs[4].d.copy()
    F.batch_normalization(*vs, batch_stat=False).forward()
    np.testing.assert_array_equal(vs[3].d, before[0])
    np.testing.assert_array_equal(vs[4].d, before[1])


def fused_ref(x, beta, gamma, mean, variance, z=None, axes=(1,), decay_rate=0.9, eps=1e-5,
              batch_stat=True, nonlinearity='relu', output_stat=False):
    out = bn_ref(x, beta, gamma, mean, variance, axes, decay_rate, eps, batch_stat, output_stat)
    y = out[0] if output_stat else out
    if z is not None:
        y = y + f64(z)
    y = np.maximum(y, 0)
    return (y, out[1], out[2]) if output_stat else y


def _fused_inputs(xs, axes, with_z, batch_stat):
    """Inputs whose ReLU inputs stay clear of 0, so that finite differences
    do not straddle the kink."""
    while True:
        inputs = _bn_inputs(xs, axes)
        z = randn(*xs) if with_z else None
        pre = bn_ref(*inputs, axes=axes, batch_stat=batch_stat)
        if z is not None:
            pre = pre + z
        if np.abs(pre).min() > 0.03:
            return inputs + [z]


@pytest.mark.parametrize('with_z', [True, False])
@pytest.mark.parametrize('batch_stat,output_stat', [(True, False), (True, True), (False, False)])
def test_fused_batch_normalization(with_z, batch_stat, output_stat):
    inputs = _fused_inputs((4, 3, 6), (1,), with_z, batch_stat)
    check_function(F.fused_batch_normalization, inputs, fused_ref,
                   {'batch_stat': batch_stat, 'output_stat': output_stat},
                   grad_inputs=[True, True, True, False, False, True], **NORM_TOL)


def test_fused_batch_normalization_channel_last():
    inputs = _fused_inputs((5, 4, 3), (2,), True, True)
    check_function(F.fused_batch_normalization, inputs, fused_ref,
                   {'axes': (2,)}, grad_inputs=[True, True, True, False, False, True],
                   **NORM_TOL)


class _Comm:
    def __init__(self, size):
        self.size = size


@pytest.mark.parametrize('comm', [None, _Comm(1)])
def test_sync_batch_normalization_single_process(comm):
    inputs = _bn_inputs((4, 3, 5), (1,))
    r = check_function(F.sync_batch_normalization, inputs,
                       lambda *a, comm=None, group='world', **k: bn_ref(*a, **k),
                       {'comm': comm, 'group': 'world', 'output_stat': True},
                       grad_inputs=[True, True, True, False, False], **NORM_TOL)
    assert r.function.info.type_name == 'SyncBatchNormalization'


def test_batch_normalization_errors():
    x, beta, gamma, mean, var = _bn_inputs((4, 3, 5), (1,))
    bn = F.batch_normalization
    check_raises(bn, [x, randn(1, 4, 1), gamma, mean, var], exc=ValueError,
                 match_words=['beta', '(1, 3, 1)'])
    check_raises(bn, [x, beta, randn(3), mean, var], exc=ValueError, match_words=['gamma'])
    check_raises(bn, [x, beta, gamma, randn(1, 3), var], exc=ValueError, match_words=['mean'])
    check_raises(bn, [x, beta, gamma, mean, var], {'axes': (3,)}, exc=ValueError,
                 match_words=['axes'])
    check_raises(bn, [x, beta, gamma, mean, var], {'axes': (1, 1)}, exc=ValueError,
                 match_words=['axes'])
    check_raises(bn, [x, beta, gamma, None, var], {'batch_stat': False}, exc=ValueError,
                 match_words=['mean'])
    check_raises(bn, [x, beta, gamma, mean, var], {'batch_stat': False, 'output_stat': True},
                 exc=ValueError, match_words=['output_stat'])
    check_raises(bn, [x, beta, gamma, mean, var], {'decay_rate': 'x'}, exc=TypeError,
                 match_words=['decay_rate'])
    check_raises(bn, [np.float32(1)] + [None] * 4, exc=(ValueError, TypeError))
    vm = F.identity(nn.Variable.from_numpy_array(mean))
    check_raises(bn, [x, beta, gamma, vm, var], exc=ValueError, match_words=['mean', 'parent'])
    check_raises(F.fused_batch_normalization, [x, beta, gamma, mean, var, randn(4, 3)],
                 exc=ValueError, match_words=['z'])
    check_raises(F.fused_batch_normalization, [x, beta, gamma, mean, var],
                 {'nonlinearity': 'tanh'}, exc=ValueError, match_words=['nonlinearity'])
    check_raises(F.sync_batch_normalization, [x, beta, gamma, mean, var],
                 {'comm': _Comm(2)}, exc=NotImplementedError, match_words=['comm'])


def test_batch_normalization_train_then_evaluate():
    """A small network with batch normalization trained a few steps, then
    evaluated with batch_stat=False: the running statistics equal a NumPy
    re-computation from the BN inputs seen in training, and so does the
    inference output."""
    rng = np.random.RandomState(3)
    xs = rng.randn(32, 5).astype(np.float32)
    ts = (xs[:, :1] * 2 - xs[:, 1:2] + 0.5).astype(np.float32)
    w1 = nn.Variable.from_numpy_array(rng.randn(5, 8).astype(np.float32) * 0.5, need_grad=True)
    b1 = nn.Variable.from_numpy_array(np.zeros(8, np.float32), need_grad=True)
    beta = nn.Variable.from_numpy_array(np.zeros((1, 8), np.float32), need_grad=True)
    gamma = nn.Variable.from_numpy_array(np.ones((1, 8), np.float32), need_grad=True)
    rmean = nn.Variable.from_numpy_array(np.zeros((1, 8), np.float32))
    rvar = nn.Variable.from_numpy_array(np.ones((1, 8), np.float32))
    w2 = nn.Variable.from_numpy_array(rng.randn(8, 1).astype(np.float32) * 0.5, need_grad=True)
    x = nn.Variable((16, 5))
    t = nn.Variable((16, 1))

    h = F.affine(x, w1, b1)
    a = F.relu(F.batch_normalization(h, beta, gamma, rmean, rvar, decay_rate=0.8))
    d = F.sub2(F.affine(a, w2), t)
    loss = F.mean(F.mul2(d, d))
    solver = S.Sgd(0.05)
    params = {'w1': w1, 'b1': b1, 'beta': beta, 'gamma': gamma, 'w2': w2}
    solver.set_parameters(params)

    m_ref = np.zeros((1, 8))
    v_ref = np.ones((1, 8))
    losses = []
    for step in range(12):
        i = (step % 2) * 16
        x.d, t.d = xs[i:i + 16], ts[i:i + 16]
        loss.forward()
        hd = f64(h.d)
        m_ref = 0.8 * m_ref + 0.2 * hd.mean(axis=0, keepdims=True)
        v_ref = 0.8 * v_ref + 0.2 * hd.var(axis=0, keepdims=True) * 16 / 15
        losses.append(float(loss.d))
        solver.zero_grad()
        loss.backward()
        solver.update()
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(rmean.d, m_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rvar.d, v_ref, rtol=1e-5, atol=1e-6)

    # evaluation with the running statistics
    x.d = xs[:16]
    y = F.batch_normalization(h, beta, gamma, rmean, rvar, batch_stat=False)
    y.forward()
    hd = f64(h.d)
    want = (hd - m_ref) / np.sqrt(v_ref + 1e-5) * f64(gamma.d) + f64(beta.d)
    np.testing.assert_allclose(y.d, want, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------
# layer / instance / group normalization, weight standardization
# --------------------------------------------------------------------------

def layer_ref(x, beta, gamma, batch_axis=0, eps=1e-5, output_stat=False):
    kept = _kept(batch_axis, x.ndim)
    y, m, v = _norm_ref(x, kept, eps, gamma, beta)
    return (y, m, v) if output_stat else y


LAYER_CASES = [((4, 3, 5), 0), ((4, 3, 5), (0, 1)), ((3, 40), 0), ((2, 3, 4), (0, 2)),
               ((5, 6), 1), ((2, 3, 20), -1)]


@pytest.mark.parametrize('output_stat', [False, True])
@pytest.mark.parametrize('xs,batch_axis', LAYER_CASES, ids=str)
def test_layer_normalization(xs, batch_axis, output_stat):
    kept = _kept(batch_axis, len(xs))
    ps = tuple(1 if i in kept else n for i, n in enumerate(xs))
    check_function(F.layer_normalization, [randn(*xs), randn(*ps), randn(*ps)], layer_ref,
                   {'batch_axis': batch_axis, 'output_stat': output_stat}, **NORM_TOL)


def test_layer_normalization_without_params():
    check_function(F.layer_normalization, [randn(3, 4, 5), None, None], layer_ref, **NORM_TOL)
    check_function(F.layer_normalization, [randn(3, 4, 5), None, randn(1, 4, 5)], layer_ref,
                   {'output_stat': True}, **NORM_TOL)


def instance_ref(x, beta, gamma, channel_axis=1, batch_axis=0, eps=1e-5, output_stat=False):
    kept = _kept(batch_axis, x.ndim) + [channel_axis % x.ndim]
    y, m, v = _norm_ref(x, kept, eps, gamma, beta)
    return (y, m, v) if output_stat else y


# (x shape, channel axis, batch axis, param shape) of the instance-norm tests.
INSTANCE_CASES = [
    ((2, 3, 4, 5), 1, 0, (1, 3, 1, 1)),
    ((2, 3, 4, 5), 1, 0, (2, 3, 1, 1)),
    ((2, 4, 5, 3), 3, 0, (1, 1, 1, 3)),     # channel last
    ((3, 2, 20), 1, 0, (1, 2, 1)),
    ((2, 3, 4), 2, (0, 1), (1, 1, 4)),
]


@pytest.mark.parametrize('output_stat', [False, True])
@pytest.mark.parametrize('xs,ch,batch,ps', INSTANCE_CASES, ids=str)
def test_instance_normalization(xs, ch, batch, ps, output_stat):
    check_function(F.instance_normalization, [randn(*xs), randn(*ps), randn(*ps)],
                   instance_ref, {'channel_axis': ch, 'batch_axis': batch,
                                  'output_stat': output_stat}, **NORM_TOL)


def group_ref(x, beta, gamma, num_groups=None, channel_axis=1, batch_axis=0, eps=1e-5,
              output_stat=False):
    shape = x.shape
    ch = channel_axis % x.ndim
    c = shape[ch]
    view = shape[:ch] + (num_groups, c // num_groups) + shape[ch + 1:]
    kept = [a if a < ch else a + 1 for a in _kept(batch_axis, x.ndim)] + [ch]
    y, m, v = _norm_ref(np.reshape(x, view), kept, eps)
    y = y.reshape(shape)
    if gamma is not None:
        y = y * f64(gamma)
    if beta is not None:
        y = y + f64(beta)
    return (y, m, v) if output_stat else y


@pytest.mark.parametrize('output_stat', [False, True])
@pytest.mark.parametrize('xs,groups,ch', [((2, 6, 3, 4), 3, 1), ((2, 6, 5), 2, 1),
                                          ((2, 3, 4, 6), 2, 3), ((3, 4), 4, 1),
                                          ((2, 4, 10), 1, 1)], ids=str)
def test_group_normalization(xs, groups, ch, output_stat):
    ps = tuple(n if i == ch else 1 for i, n in enumerate(xs))
    r = check_function(F.group_normalization, [randn(*xs), randn(*ps), randn(*ps)], group_ref,
                       {'num_groups': groups, 'channel_axis': ch, 'output_stat': output_stat},
                       **NORM_TOL)
    if output_stat:     # statistics in the grouped shape, as NNabla
        view = xs[:ch] + (groups, xs[ch] // groups) + xs[ch + 1:]
        assert r.outputs[1].shape == tuple(n if i in (0, ch) else 1 for i, n in enumerate(view))


def test_group_normalization_without_params():
    check_function(F.group_normalization, [randn(2, 4, 3), None, None], group_ref,
                   {'num_groups': 2}, **NORM_TOL)


def ws_ref(w, channel_axis=0, eps=1e-5, output_stat=False):
    y, m, v = _norm_ref(w, [channel_axis % w.ndim], eps)
    return (y, m, v) if output_stat else y


@pytest.mark.parametrize('output_stat', [False, True])
@pytest.mark.parametrize('ws,ch', [((4, 3, 3, 3), 0), ((5, 6), 1), ((6, 5), 0), ((3, 4, 5), -1)],
                         ids=str)
def test_weight_standardization(ws, ch, output_stat):
    check_function(F.weight_standardization, [randn(*ws)], ws_ref,
                   {'channel_axis': ch, 'output_stat': output_stat}, **NORM_TOL)


def test_tensor_normalization_errors():
    x = randn(2, 6, 3)
    check_raises(F.layer_normalization, [x, randn(1, 6, 2), None], exc=ValueError,
                 match_words=['beta', '(1, 6, 3)'])
    check_raises(F.layer_normalization, [x, None, None], {'batch_axis': 3}, exc=ValueError,
                 match_words=['batch_axis'])
    check_raises(F.instance_normalization, [x, randn(1, 5, 1), None], exc=ValueError,
                 match_words=['beta'])
    check_raises(F.instance_normalization, [x, None, None], {'channel_axis': 3}, exc=ValueError,
                 match_words=['channel_axis'])
    check_raises(F.instance_normalization, [x, None, None], {'batch_axis': 1}, exc=ValueError,
                 match_words=['batch_axis'])
    check_raises(F.group_normalization, [x, None, None], {'num_groups': 4}, exc=ValueError,
                 match_words=['num_groups', '6'])
    check_raises(F.group_normalization, [x, None, None], exc=TypeError,
                 match_words=['num_groups'])
    check_raises(F.group_normalization, [x, randn(6), None], {'num_groups': 2}, exc=ValueError,
                 match_words=['beta'])
    check_raises(F.weight_standardization, [x], {'channel_axis': -4}, exc=ValueError,
                 match_words=['channel_axis'])
    check_raises(F.weight_standardization, [x], {'eps': None}, exc=TypeError,
                 match_words=['eps'])


# --------------------------------------------------------------------------
# mean subtraction
# --------------------------------------------------------------------------

def test_mean_subtraction_inference():
    x, m = randn(4, 3, 5), randn(3, 5)
    t = np.array([7], np.float32)
    check_function(F.mean_subtraction, [x, m, t],
                   lambda x, mean, t, base_axis=1, update_running_mean=True: f64(x) - f64(mean),
                   {'update_running_mean': False}, grad_inputs=[True, False, False])


@pytest.mark.parametrize('base_axis,xs', [(1, (4, 3, 5)), (2, (2, 3, 4)), (1, (6, 20))], ids=str)
def test_mean_subtraction_training(base_axis, xs):
    x = randn(*xs)
    rm0 = randn(*xs[base_axis:], scale=0.1)
    vx = nn.Variable.from_numpy_array(x, need_grad=True)
    vm = nn.Variable.from_numpy_array(rm0)
    vt = nn.Variable.from_numpy_array(np.array([2]))     # an integer count, kept integer
    y = F.mean_subtraction(vx, vm, vt, base_axis=base_axis)
    size0 = int(np.prod(xs[:base_axis]))
    rm = f64(rm0)
    for count in (2, 3, 4):
        y.forward()
        batch = f64(x).reshape(size0, -1).mean(axis=0).reshape(rm.shape)
        rm = rm + (batch - rm) / (count + 1)
        np.testing.assert_allclose(vm.d, rm, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(y.d, f64(x) - rm, rtol=1e-5, atol=1e-6)
        assert int(vt.d[0]) == count + 1 and vt.d.dtype.kind == 'i'
    dy = randn(*xs)
    vx.g = 1.0
    y.backward(dy)
    np.testing.assert_allclose(vx.g, 1.0 + dy * (1 - 1.0 / (5 * size0)), rtol=1e-6)
    # imperative call agrees
    nds = [nn.NdArray.from_numpy_array(a) for a in (x, rm0, np.array([2], np.float32))]
    out = F.mean_subtraction(*nds, base_axis=base_axis)
    np.testing.assert_allclose(out.data, f64(x) - (f64(rm0) + (batch - f64(rm0)) / 3),
                               rtol=1e-5, atol=1e-6)
    assert nds[2].data[0] == 3


def test_mean_subtraction_errors():
    x = randn(4, 3)
    ms = F.mean_subtraction
    check_raises(ms, [x, randn(4), np.zeros(1, np.float32)], exc=ValueError, match_words=['mean'])
    check_raises(ms, [x, randn(3), np.zeros(2, np.float32)], exc=ValueError, match_words=['t'])
    check_raises(ms, [x, randn(3), np.zeros(1, np.float32)], {'base_axis': 2}, exc=ValueError,
                 match_words=['base_axis'])


# --------------------------------------------------------------------------
# clipping
# --------------------------------------------------------------------------

def clip_ref(x, lo, hi):
    return np.minimum(np.maximum(f64(x), f64(lo)), f64(hi))


def clip_grads(x, lo, hi, dy):
    x, lo, hi, dy = f64(x), f64(lo), f64(hi), f64(dy)
    t = np.maximum(x, lo)
    gx = dy * (x >= lo) * (t <= hi)
    glo = dy * (x < lo) * (lo <= hi)
    ghi = dy * (t > hi)

    def to(g, shape):
        g = g * np.ones_like(x)
        while g.ndim > len(shape):
            g = g.sum(axis=0)
        for i, n in enumerate(shape):
            if n == 1 and g.shape[i] != 1:
                g = g.sum(axis=i, keepdims=True)
        return g.reshape(shape)
    return [gx, to(glo, np.shape(lo)), to(ghi, np.shape(hi))]


def _bounds_away(x, lo, hi):
    """Push x off the bounds (the kinks) by at least 0.05."""
    lo_b, hi_b = np.broadcast_to(lo, x.shape), np.broadcast_to(hi, x.shape)
    for b in (lo_b, hi_b):
        near = np.abs(x - b) < 0.05
        x = np.where(near, b + 0.1, x)
    return x.astype(np.float32)


@pytest.mark.parametrize('ls,hs', [((2, 3, 4), (2, 3, 4)), ((3, 1), (4,)), ((), (2, 3, 4)),
                                   ((1, 1, 1), ())], ids=str)
def test_clip_by_value_variables(ls, hs):
    lo = np.asarray(R.uniform(-1.0, -0.2, size=ls), np.float32).reshape(ls)
    hi = np.asarray(R.uniform(0.2, 1.0, size=hs), np.float32).reshape(hs)
    x = _bounds_away(randn(2, 3, 4), lo, hi)
    check_function(F.clip_by_value, [x, lo, hi], clip_ref,
                   ref_grad=lambda x, lo, hi, dy: clip_grads(x, lo, hi, dy))


def test_clip_by_value_numbers_and_crossed_bounds():
    x = _bounds_away(randn(3, 5), -0.5, 0.5)
    r = check_function(F.clip_by_value, [x], lambda x, min, max: clip_ref(x, min, max),
                       {'min': -0.5, 'max': 0.5})
    assert r.outputs[0].min() >= -0.5 and r.outputs[0].max() <= 0.5
    y = F.clip_by_value(nn.Variable.from_numpy_array(x), 1.0, -1.0)     # min > max: max wins
    y.forward()
    np.testing.assert_array_equal(y.d, -np.ones_like(x))
    nd = F.clip_by_value(nn.NdArray.from_numpy_array(x), -0.5, 0.5)
    np.testing.assert_allclose(nd.data, clip_ref(x, -0.5, 0.5))
    y = F.clip_by_value(nn.Variable.from_numpy_array(np.array([np.nan, 3.0], np.float32)), 0, 1)
    y.forward()
    assert np.isnan(y.d[0]) and y.d[1] == 1.0


def test_clip_grad_by_value():
    x, dy_scale = randn(2, 3, 4), 2.0
    lo = np.full((2, 3, 4), -0.5, np.float32)
    hi = np.asarray(R.uniform(0.2, 1.0, size=(2, 3, 4)), np.float32)
    check_function(F.clip_grad_by_value, [x, lo, hi], lambda x, lo, hi: f64(x),
                   grad_inputs=[True, False, False], check_fd=False,
                   ref_grad=lambda x, lo, hi, dy: [np.clip(f64(dy), f64(lo), f64(hi)), None, None])
    # broadcast bounds
    vx = nn.Variable.from_numpy_array(x, need_grad=True)
    y = F.clip_grad_by_value(vx, nn.Variable.from_numpy_array(np.float32(-0.1)),
                             nn.Variable.from_numpy_array(np.full((4,), 0.3, np.float32)))
    y.forward()
    dy = randn(2, 3, 4, scale=dy_scale)
    y.backward(dy)
    np.testing.assert_allclose(vx.g, np.clip(dy, -0.1, 0.3))


def clip_norm_ref(x, clip_norm, axis=None):
    x = f64(x)
    red = tuple(range(x.ndim)) if axis is None else axis
    n = np.sqrt(np.sum(x * x, axis=red, keepdims=True))
    c = f64(clip_norm)
    return x * c / np.maximum(n, c)


@pytest.mark.parametrize('axis', [None, 1, (0, 2), -1], ids=str)
@pytest.mark.parametrize('clip', [0.8, 30.0])
def test_clip_by_norm(axis, clip):
    x = randn(3, 4, 5)
    check_function(F.clip_by_norm, [x], lambda x, clip_norm, axis=None:
                   clip_norm_ref(x, clip_norm, axis), {'clip_norm': clip, 'axis': axis})


@pytest.mark.parametrize('axis', [None, (1,)], ids=str)
def test_clip_by_norm_variable(axis):
    x = randn(3, 4)
    c = np.array([1.5], np.float32)
    check_function(F.clip_by_norm, [x, c], clip_norm_ref, {'axis': axis})


def test_clip_by_norm_errors():
    x = randn(3, 4)
    check_raises(F.clip_by_norm, [x, randn(2)], exc=ValueError, match_words=['clip_norm'])
    check_raises(F.clip_by_norm, [x], {'clip_norm': 1.0, 'axis': 2}, exc=ValueError,
                 match_words=['axis'])
    y = F.clip_by_norm(nn.Variable.from_numpy_array(x), -1.0)
    with pytest.raises(ValueError, match='clip_norm'):
        y.forward()
    check_raises(F.clip_by_value, [x, randn(4, 1), 1.0], exc=ValueError, match_words=['min'])
    check_raises(F.clip_by_value, [x, 0.0, 'a'], exc=TypeError, match_words=['max'])
    check_raises(F.clip_grad_by_value, [x, randn(3, 4), randn(2)], exc=ValueError,
                 match_words=['max'])


def clip_grad_norm_grad(x, dy, clip_norm=None, axes=None):
    dy = f64(dy)
    red = tuple(range(dy.ndim)) if axes is None else axes
    n = np.sqrt(np.sum(dy * dy, axis=red, keepdims=True))
    return [(1.0 if clip_norm is None else clip_norm) * dy / n]


@pytest.mark.parametrize('clip_norm,axes', [(None, None), (0.5, (1,)), (2.0, (0, 2)), (3.0, -1)],
                         ids=str)
def test_clip_grad_by_norm(clip_norm, axes):
    x = randn(3, 4, 5)
    check_function(F.clip_grad_by_norm, [x], lambda x, clip_norm=None, axes=None: f64(x),
                   {'clip_norm': clip_norm, 'axes': axes}, check_fd=False,
                   ref_grad=lambda x, dy, **a: clip_grad_norm_grad(x, dy, **a))


def test_clip_grad_by_norm_zero_gradient_and_errors():
    vx = nn.Variable.from_numpy_array(randn(2, 3), need_grad=True)
    y = F.clip_grad_by_norm(vx, 1.0)
    y.forward()
    y.backward(np.zeros((2, 3), np.float32))
    np.testing.assert_array_equal(vx.g, 0)
    check_raises(F.clip_grad_by_norm, [randn(2, 3)], {'clip_norm': 0.0}, exc=ValueError,
                 match_words=['clip_norm'])
    check_raises(F.clip_grad_by_norm, [randn(2, 3)], {'axes': (2,)}, exc=ValueError,
                 match_words=['axes'])


# --------------------------------------------------------------------------
# float16 storage, degenerate shapes
# --------------------------------------------------------------------------

def test_running_statistics_update_in_half_contexts():
    from nncy.ext_utils import get_extension_context
    x = randn(8, 3, 4)
    with nn.context_scope(get_extension_context('cpu', type_config='half')):
        vs = [nn.Variable.from_numpy_array(a.astype(np.float16))
              for a in (x, np.zeros((1, 3, 1)), np.ones((1, 3, 1)))]
        y = F.batch_normalization(vs[0], None, None, vs[1], vs[2], decay_rate=0.5)
        y.forward()
        xh = f64(x.astype(np.float16))
        np.testing.assert_allclose(vs[1].d, 0.5 * xh.mean(axis=(0, 2), keepdims=True),
                                   rtol=2e-3, atol=1e-3)
        t = nn.Variable.from_numpy_array(np.array([0]))
        m = nn.Variable.from_numpy_array(np.zeros((3, 4), np.float16))
        F.mean_subtraction(vs[0], m, t).forward()
        assert int(t.d[0]) == 1
        np.testing.assert_allclose(m.d, xh.mean(axis=0), rtol=2e-3, atol=1e-3)


@pytest.mark.parametrize('fn,shapes,args', [
    (F.batch_normalization, [(0, 3), (1, 3), (1, 3), (1, 3), (1, 3)], {}),
    (F.batch_normalization, [(1, 3), (1, 3), (1, 3), (1, 3), (1, 3)], {}),
    (F.batch_normalization, [(4, 0, 2), None, None, None, None], {}),
    (F.layer_normalization, [(0, 5), None, None], {}),
    (F.group_normalization, [(0, 4, 2), None, None], {'num_groups': 2}),
    (F.mean_subtraction, [(0, 3), (3,), (1,)], {}),
    (F.clip_by_norm, [(0, 3)], {'clip_norm': 1.0}),
    (F.clip_grad_by_norm, [(0, 3)], {}),
    (F.prelu, [(0, 3), (3,)], {}),
    (F.crelu, [(2, 0, 3)], {}),
], ids=lambda v: getattr(v, '__name__', None))
def test_degenerate_shapes_do_not_fail(fn, shapes, args):
    """Empty arrays and one-element groups run (NaN statistics where NNabla
    divides by zero) without an exception or a crash."""
    vs = [None if s is None else nn.Variable.from_numpy_array(np.ones(s, np.float32),
                                                             need_grad=True) for s in shapes]
    y = fn(*vs, **args)
    y.forward()
    y.backward()
    assert y.shape == vs[0].shape or fn is F.crelu


def test_parametric_normalization_layers():
    """PF layers built on these functions: parameter shapes, running statistics
    kept in the registered parameters, and a backward pass to every parameter."""
    import nncy.parametric_functions as PF
    nn.clear_parameters()
    try:
        x = nn.Variable.from_numpy_array(randn(4, 6, 3, 2), need_grad=True)
        outs = [PF.batch_normalization(x, name='bn'),
                PF.fused_batch_normalization(x, x, name='fbn'),
                PF.mean_subtraction(x, name='ms'),
                PF.layer_normalization(x, name='ln'),
                PF.instance_normalization(x, name='in'),
                PF.group_normalization(x, 3, name='gn'),
                PF.prelu(x, shared=False, name='pr')]
        loss = F.sum(F.add_n(*[F.mul2(o, o) for o in outs]))
        loss.forward()
        loss.backward()
        p = nn.get_parameters(grad_only=False)
        assert p['bn/gamma'].shape == (1, 6, 1, 1) and p['ln/gamma'].shape == (1, 6, 3, 2)
        np.testing.assert_allclose(p['bn/mean'].d.reshape(-1),
                                   0.1 * f64(x.d).mean(axis=(0, 2, 3)), rtol=1e-5, atol=1e-7)
        assert float(p['ms/t'].d[0]) == 1.0
        for k, v in nn.get_parameters().items():
            assert np.any(v.g != 0), k
    finally:
        nn.clear_parameters()


# --------------------------------------------------------------------------
# nn.grad: gradient graphs (nncy/_grad_norm.py)
# --------------------------------------------------------------------------

def _leaf(*shape, scale=1.0):
    a = away(*shape, lo=0.2, hi=2.0) * scale
    return nn.Variable.from_numpy_array(a, need_grad=True)


def _const(a):
    return nn.Variable.from_numpy_array(np.asarray(a, np.float32))


def _total(outs):
    t = None
    for o in outs:
        s = F.sum(F.mul2(o, o))
        t = s if t is None else F.add2(t, s)
    return t


GRAD_CASES = {
    'crelu': (lambda: [_leaf(2, 3, 4)], lambda x: F.crelu(x, 1)),
    'celu': (lambda: [_leaf(2, 3, 4)], lambda x: F.celu(x, 0.7, -1)),
    'prelu': (lambda: [_leaf(2, 3, 4), _leaf(3, scale=0.3)], F.prelu),
    'prelu_shared': (lambda: [_leaf(2, 3, 4), _leaf(1, scale=0.3)], F.prelu),
    'batch_normalization': (lambda: [_leaf(4, 3, 5), _leaf(1, 3, 1), _leaf(1, 3, 1)],
                            lambda x, b, g: _total(F.batch_normalization(
                                x, b, g, None, None, output_stat=True))),
    'batch_normalization_inference': (
        lambda: [_leaf(4, 3, 5), _leaf(1, 3, 1), _leaf(1, 3, 1)],
        lambda x, b, g: F.batch_normalization(x, b, g, _const(np.zeros((1, 3, 1))),
                                              _const(np.full((1, 3, 1), 2.0)), batch_stat=False)),
    'batch_normalization_two_axes': (
        lambda: [_leaf(2, 3, 4, 2), _leaf(1, 3, 1, 2), _leaf(1, 3, 1, 2)],
        lambda x, b, g: F.batch_normalization(x, b, g, None, None, axes=(1, 3))),
    'fused_batch_normalization': (
        lambda: [_leaf(4, 3, 5), _leaf(1, 3, 1), _leaf(1, 3, 1), _leaf(4, 3, 5)],
        lambda x, b, g, z: F.fused_batch_normalization(x, b, g, None, None, z)),
    'sync_batch_normalization': (lambda: [_leaf(4, 3, 5)],
                                 lambda x: F.sync_batch_normalization(x, None, None, None, None,
                                                                      None)),
    'layer_normalization': (lambda: [_leaf(3, 4, 5), _leaf(1, 4, 5), _leaf(1, 4, 5)],
                            F.layer_normalization),
    'instance_normalization': (lambda: [_leaf(2, 3, 5), _leaf(1, 3, 1), _leaf(1, 3, 1)],
                               F.instance_normalization),
    'group_normalization': (lambda: [_leaf(2, 4, 3), _leaf(1, 4, 1), _leaf(1, 4, 1)],
                            lambda x, b, g: F.group_normalization(x, b, g, 2)),
    'group_normalization_stats': (lambda: [_leaf(2, 4, 3)], lambda x: _total(
        F.group_normalization(x, None, None, 2, output_stat=True))),
    'weight_standardization': (lambda: [_leaf(4, 3, 2)], F.weight_standardization),
    'mean_subtraction': (lambda: [_leaf(4, 3)], lambda x: F.mean_subtraction(
        x, _const(np.zeros(3)), _const([2]), update_running_mean=False)),
    'clip_by_value': (lambda: [_leaf(3, 4), _leaf(3, 1, scale=0.1)],
                      lambda x, lo: F.clip_by_value(x, lo, 0.5)),
    'clip_by_norm': (lambda: [_leaf(3, 4)], lambda x: F.clip_by_norm(x, 1.0, axis=1)),
    'clip_by_norm_variable': (lambda: [_leaf(3, 4), _leaf(1)], lambda x, c: F.clip_by_norm(
        x, F.add_scalar(F.abs(c), 1.0))),
    # first order only: their backward is not the derivative of their forward
    'clip_grad_by_value': (lambda: [_leaf(3, 4)], lambda x: F.clip_grad_by_value(
        F.mul2(x, x), _const(np.full((3, 4), -0.5)), _const(np.full((3, 4), 0.5)))),
    'clip_grad_by_norm': (lambda: [_leaf(3, 4)], lambda x: F.clip_grad_by_norm(
        F.mul2(x, x), 2.0, axes=(1,))),
}


@pytest.mark.parametrize('name', sorted(GRAD_CASES))
def test_grad_graphs(name):
    """nn.grad's first-order gradients equal backward; the gradient of
    <grad_x, u> (a Hessian-vector product) equals central differences of the
    backward pass."""
    make, fn = GRAD_CASES[name]
    ins = make()
    y = fn(*ins)
    obj = F.sum(F.mul2(F.sin(y), F.sin(y)))
    gs = nn.grad([obj], ins)
    F.sink(*gs).forward()
    first = [g.d.copy() for g in gs]

    def backward_at(xv):
        ins[0].d = xv
        obj.forward()
        for v in ins:
            v.grad.zero()
        obj.backward()
        return [v.g.copy() for v in ins]

    x0 = ins[0].d.copy()
    for a, b in zip(first, backward_at(x0)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    if name.startswith('clip_grad'):
        return
    u = randn(*x0.shape)
    (hu,) = nn.grad([F.sum(F.mul2(gs[0], _const(u)))], [ins[0]])
    hu.forward()
    eps = 3e-3
    fd = (backward_at(x0 + eps * u)[0] - backward_at(x0 - eps * u)[0]) / (2 * eps)
    np.testing.assert_allclose(hu.d, fd, rtol=3e-3, atol=3e-3 * (1 + np.abs(fd).max()))
