"""The normalization family on the cuda backend (nncy/cuda/norm.py) against
the CPU backend: batch (plain, fused, sync), layer, instance and group
normalization, weight standardization, mean subtraction, clipping by value and
by norm, and PReLU."""
import numpy as np
import pytest
import nncy as nn
import nncy.functions as F
from test_functions_nn import INSTANCE_CASES
from cuda_check import CPU, CUDA, TOL, cupy, run, same  # noqa: F401  (cupy is an autouse fixture)

NORM_TOL = dict(rtol=1e-3, atol=1e-4, equal_nan=True)


def randn(rng, *shape, scale=1.0, offset=0.0):
    return np.asarray(rng.randn(*shape) * scale + offset, np.float32).reshape(shape)


def _joined(outs, rng_seed=7):
    """One output from (y, mean, variance): a weighted sum, so that backward
    sends a different gradient to every element of each."""
    r = np.random.RandomState(rng_seed)
    total = None
    for o in outs:
        w = nn.Variable.from_numpy_array(r.randn(*o.shape).astype(np.float32).reshape(o.shape))
        s = F.sum(o * w)
        total = s if total is None else total + s
    return total


def _out(res, output_stat):
    return _joined(res) if output_stat else res


def _kept(axes, nd):
    axes = (axes,) if isinstance(axes, int) else axes
    return [a % nd for a in axes]


def _bn_arrays(rng, xs, axes, beta=True, gamma=True):
    kept = _kept(axes, len(xs))
    ps = tuple(n if i in kept else 1 for i, n in enumerate(xs))
    arrays = [randn(rng, *xs, offset=0.5)]
    if beta:
        arrays.append(randn(rng, *ps))
    if gamma:
        arrays.append((rng.rand(*ps) + 0.5).astype(np.float32).reshape(ps))
    arrays += [randn(rng, *ps, scale=0.1), (rng.rand(*ps) + 0.5).astype(np.float32).reshape(ps)]
    return arrays


def _bn_fn(fn, beta=True, gamma=True, output_stat=False, **kw):
    """fn(x, beta, gamma, mean, var, **kw) on the arrays of _bn_arrays."""
    def call(x, *rest):
        rest = list(rest)
        b = rest.pop(0) if beta else None
        g = rest.pop(0) if gamma else None
        return _out(fn(x, b, g, *rest, output_stat=output_stat, **kw), output_stat)
    return call


def _bn_grads(beta=True, gamma=True):
    return [True] + [True] * (beta + gamma) + [False, False]


BN_CASES = [((4, 3, 2, 5), (1,)), ((4, 3), (1,)), ((6, 5, 3), (2,)), ((3, 4, 5), (0,)),
            ((2, 3, 4, 2), (1, 3)), ((2, 3, 4), (0, 1)), ((4, 3, 20), (1,)), ((5, 3), -1)]


# ---------------------------------------------------------------------------
# batch normalization

@pytest.mark.parametrize('output_stat', [False, True])
@pytest.mark.parametrize('xs,axes', BN_CASES, ids=str)
def test_batch_normalization_training(rng, xs, axes, output_stat):
    same(_bn_fn(F.batch_normalization, output_stat=output_stat, axes=axes),
         _bn_arrays(rng, xs, axes), tol=NORM_TOL, need_grad=_bn_grads())


@pytest.mark.parametrize('xs,axes', BN_CASES[:6], ids=str)
def test_batch_normalization_inference(rng, xs, axes):
    same(_bn_fn(F.batch_normalization, axes=axes, batch_stat=False),
         _bn_arrays(rng, xs, axes), tol=NORM_TOL, need_grad=_bn_grads())


@pytest.mark.parametrize('beta,gamma', [(False, True), (True, False), (False, False)])
@pytest.mark.parametrize('batch_stat', [True, False])
def test_batch_normalization_without_beta_gamma(rng, beta, gamma, batch_stat):
    same(_bn_fn(F.batch_normalization, beta, gamma, batch_stat=batch_stat),
         _bn_arrays(rng, (4, 3, 5), (1,), beta, gamma), tol=NORM_TOL,
         need_grad=_bn_grads(beta, gamma))


def test_batch_normalization_without_running_stats(rng):
    x, b, g, _, _ = _bn_arrays(rng, (5, 3, 4), (1,))
    same(lambda x, b, g: _joined(F.batch_normalization(x, b, g, None, None, output_stat=True)),
         [x, b, g], tol=NORM_TOL)


@pytest.mark.filterwarnings('ignore::RuntimeWarning')   # one sample per group: 0 / 0
@pytest.mark.parametrize('xs,axes', [((6, 3, 4), (1,)), ((2, 3, 4, 2), (1, 3)), ((5, 1), (0,))],
                         ids=str)
def test_batch_normalization_running_update(rng, xs, axes):
    """The running mean and variance are updated in place on the device as on
    the CPU (decay, unbiased variance), and inference leaves them alone."""
    arrays = _bn_arrays(rng, xs, axes)
    result = {}
    for name, ctx in (('cpu', CPU), ('cuda', CUDA)):
        vs = [nn.Variable.from_numpy_array(a) for a in arrays]
        with nn.context_scope(ctx):
            y = F.batch_normalization(*vs, axes=axes, decay_rate=0.7)
            yi = F.batch_normalization(*vs, axes=axes, batch_stat=False)
        got = []
        for _ in range(2):
            y.forward()
            got += [vs[3].d.copy(), vs[4].d.copy()]
        yi.forward()
        got += [vs[3].d.copy(), vs[4].d.copy(), yi.d.copy()]
        result[name] = got
    assert not np.array_equal(result['cuda'][0], arrays[3])
    for g, r in zip(result['cuda'], result['cpu']):
        np.testing.assert_allclose(g, r, **NORM_TOL)


@pytest.mark.parametrize('with_z', [True, False])
@pytest.mark.parametrize('batch_stat,output_stat', [(True, False), (True, True), (False, False)])
def test_fused_batch_normalization(rng, with_z, batch_stat, output_stat):
    arrays = _bn_arrays(rng, (4, 3, 6), (1,))
    grads = _bn_grads()
    if with_z:
        arrays.append(randn(rng, 4, 3, 6))
        grads.append(True)

    def fn(x, b, g, m, v, z=None):
        return _out(F.fused_batch_normalization(x, b, g, m, v, z, batch_stat=batch_stat,
                                                output_stat=output_stat), output_stat)
    same(fn, arrays, tol=NORM_TOL, need_grad=grads)


def test_fused_batch_normalization_channel_last(rng):
    arrays = _bn_arrays(rng, (5, 4, 3), (2,)) + [randn(rng, 5, 4, 3)]
    same(lambda x, b, g, m, v, z: F.fused_batch_normalization(x, b, g, m, v, z, axes=(2,)),
         arrays, tol=NORM_TOL, need_grad=_bn_grads() + [True])


def test_sync_batch_normalization_single_process(rng):
    same(_bn_fn(lambda *a, **k: F.sync_batch_normalization(*a[:5], None, **k),
                output_stat=True), _bn_arrays(rng, (4, 3, 5), (1,)), tol=NORM_TOL,
         need_grad=_bn_grads())


def test_batch_normalization_accumulates(rng):
    """x, beta and gamma feed two nodes: the second backward adds."""
    def fn(x, b, g, m, v):
        return F.add2(F.batch_normalization(x, b, g, m, v, batch_stat=False),
                      F.batch_normalization(x, b, g, m, v, output_stat=False) * 2.0)
    same(fn, _bn_arrays(rng, (4, 3, 5), (1,)), tol=NORM_TOL, need_grad=_bn_grads())

    def fused(x, b, g, m, v, z):
        return F.add2(F.fused_batch_normalization(x, b, g, m, v, z),
                      F.fused_batch_normalization(x, b, g, m, v, z, batch_stat=False))
    same(fused, _bn_arrays(rng, (4, 3, 5), (1,)) + [randn(rng, 4, 3, 5)], tol=NORM_TOL,
         need_grad=_bn_grads() + [True])


# ---------------------------------------------------------------------------
# layer, instance, group normalization, weight standardization

@pytest.mark.parametrize('output_stat', [False, True])
@pytest.mark.parametrize('xs,batch_axis', [((4, 3, 5), 0), ((4, 3, 5), (0, 1)), ((3, 40), 0),
                                           ((2, 3, 4), (0, 2)), ((5, 6), 1), ((2, 3, 20), -1)],
                         ids=str)
def test_layer_normalization(rng, xs, batch_axis, output_stat):
    kept = _kept(batch_axis, len(xs))
    ps = tuple(1 if i in kept else n for i, n in enumerate(xs))
    same(lambda x, b, g: _out(F.layer_normalization(x, b, g, batch_axis=batch_axis,
                                                    output_stat=output_stat), output_stat),
         [randn(rng, *xs), randn(rng, *ps), randn(rng, *ps)], tol=NORM_TOL)


def test_layer_normalization_without_params(rng):
    same(lambda x: F.layer_normalization(x, None, None), [randn(rng, 3, 4, 5)], tol=NORM_TOL)
    same(lambda x, g: _joined(F.layer_normalization(x, None, g, output_stat=True)),
         [randn(rng, 3, 4, 5), randn(rng, 1, 4, 5)], tol=NORM_TOL)
    same(lambda x, b: F.layer_normalization(x, b, None),
         [randn(rng, 3, 4, 5), randn(rng, 1, 4, 5)], tol=NORM_TOL)


@pytest.mark.parametrize('output_stat', [False, True])
@pytest.mark.parametrize('xs,ch,batch,ps', INSTANCE_CASES, ids=str)
def test_instance_normalization(rng, xs, ch, batch, ps, output_stat):
    same(lambda x, b, g: _out(F.instance_normalization(
        x, b, g, channel_axis=ch, batch_axis=batch, output_stat=output_stat), output_stat),
        [randn(rng, *xs), randn(rng, *ps), randn(rng, *ps)], tol=NORM_TOL)


@pytest.mark.parametrize('output_stat', [False, True])
@pytest.mark.parametrize('xs,groups,ch', [((2, 6, 3, 4), 3, 1), ((2, 6, 5), 2, 1),
                                          ((2, 3, 4, 6), 2, 3), ((3, 4), 4, 1),
                                          ((2, 4, 10), 1, 1)], ids=str)
def test_group_normalization(rng, xs, groups, ch, output_stat):
    ps = tuple(n if i == ch else 1 for i, n in enumerate(xs))
    same(lambda x, b, g: _out(F.group_normalization(
        x, b, g, num_groups=groups, channel_axis=ch, output_stat=output_stat), output_stat),
        [randn(rng, *xs), randn(rng, *ps), randn(rng, *ps)], tol=NORM_TOL)


def test_group_normalization_without_params(rng):
    same(lambda x: F.group_normalization(x, None, None, num_groups=2), [randn(rng, 2, 4, 3)],
         tol=NORM_TOL)


@pytest.mark.parametrize('output_stat', [False, True])
@pytest.mark.parametrize('ws,ch', [((4, 3, 3, 3), 0), ((5, 6), 1), ((6, 5), 0), ((3, 4, 5), -1)],
                         ids=str)
def test_weight_standardization(rng, ws, ch, output_stat):
    same(lambda w: _out(F.weight_standardization(w, channel_axis=ch, output_stat=output_stat),
                        output_stat), [randn(rng, *ws)], tol=NORM_TOL)


def test_tensor_normalizations_accumulate(rng):
    x, p = randn(rng, 2, 4, 3), randn(rng, 1, 4, 1)
    same(lambda x, b, g: F.add2(F.layer_normalization(x, b, g, batch_axis=(0, 2)),
                                F.group_normalization(x, b, g, num_groups=2)),
         [x, p, p + 1], tol=NORM_TOL)
    same(lambda x, b, g: F.add2(F.instance_normalization(x, b, g),
                                F.instance_normalization(x, b, g, eps=0.1)),
         [x, p, p + 1], tol=NORM_TOL)
    same(lambda w: F.add2(F.weight_standardization(w), F.weight_standardization(w, eps=0.1)),
         [x], tol=NORM_TOL)


# ---------------------------------------------------------------------------
# mean subtraction

@pytest.mark.parametrize('base_axis,xs', [(1, (4, 3, 5)), (2, (2, 3, 4)), (1, (6, 20))], ids=str)
@pytest.mark.parametrize('t_dtype', [np.int64, np.float32])
def test_mean_subtraction_training(rng, base_axis, xs, t_dtype):
    """Two forward steps update the running mean and the counter on the
    device as on the CPU; backward scales by 1 - 1 / (t M), and adds."""
    x, rm = randn(rng, *xs), randn(rng, *xs[base_axis:], scale=0.1)
    dy = randn(rng, *xs)
    result = {}
    for name, ctx in (('cpu', CPU), ('cuda', CUDA)):
        vx = nn.Variable.from_numpy_array(x, need_grad=True)
        vm = nn.Variable.from_numpy_array(rm)
        vt = nn.Variable.from_numpy_array(np.array([2], t_dtype))
        with nn.context_scope(ctx):
            y = F.mean_subtraction(vx, vm, vt, base_axis=base_axis)
        got = []
        for _ in range(2):
            y.forward()
            got += [y.d.copy(), vm.d.copy(), vt.d.copy()]
        vx.g = 1.0
        y.backward(dy)
        got.append(vx.g.copy())
        result[name] = got
    assert result['cuda'][-2].dtype == np.dtype(t_dtype) and result['cuda'][-2][0] == 4
    for g, r in zip(result['cuda'], result['cpu']):
        np.testing.assert_allclose(g, r, **TOL)


def test_mean_subtraction_inference(rng):
    t = np.array([7], np.float32)
    same(lambda x, m, t: F.mean_subtraction(x, m, t, update_running_mean=False),
         [randn(rng, 4, 3, 5), randn(rng, 3, 5), t], need_grad=[True, False, False])


# ---------------------------------------------------------------------------
# clipping

@pytest.mark.parametrize('ls,hs', [((2, 3, 4), (2, 3, 4)), ((3, 1), (4,)), ((), (2, 3, 4)),
                                   ((1, 1, 1), ())], ids=str)
def test_clip_by_value_variables(rng, ls, hs):
    lo = (-rng.uniform(0.2, 1.0, size=ls)).astype(np.float32).reshape(ls)
    hi = rng.uniform(0.2, 1.0, size=hs).astype(np.float32).reshape(hs)
    same(F.clip_by_value, [randn(rng, 2, 3, 4), lo, hi])


def test_clip_by_value_numbers_crossed_and_nan(rng):
    x = randn(rng, 3, 5)
    x[0, 0] = np.nan
    same(lambda x: F.clip_by_value(x, -0.5, 0.5), [x])
    same(lambda x: F.clip_by_value(x, 1.0, -1.0), [x])          # min > max: max wins
    lo, hi = randn(rng, 3, 5), randn(rng, 3, 5)                  # crossed in places
    same(lambda x, lo, hi: F.add2(F.clip_by_value(x, lo, hi), F.clip_by_value(x, hi, lo)),
         [x, lo, hi])


def test_clip_grad_by_value(rng):
    x = randn(rng, 2, 3, 4)
    lo = np.full((2, 3, 4), -0.5, np.float32)
    hi = rng.uniform(0.2, 1.0, size=(2, 3, 4)).astype(np.float32)
    same(F.clip_grad_by_value, [x, lo, hi], need_grad=[True, False, False])
    same(lambda x, lo, hi: F.add2(F.clip_grad_by_value(x, lo, hi),
                                  F.clip_grad_by_value(x, hi, lo)),
         [x, np.full((), -0.1, np.float32), np.full((4,), 0.3, np.float32)],
         need_grad=[True, False, False])


@pytest.mark.parametrize('axis', [None, 1, (0, 2), -1], ids=str)
@pytest.mark.parametrize('clip', [0.8, 30.0])
def test_clip_by_norm(rng, axis, clip):
    same(lambda x: F.clip_by_norm(x, clip, axis=axis), [randn(rng, 3, 4, 5)])


@pytest.mark.parametrize('axis', [None, (1,)], ids=str)
def test_clip_by_norm_variable(rng, axis):
    x, c = randn(rng, 3, 4), np.array([1.5], np.float32)
    same(lambda x, c: F.add2(F.clip_by_norm(x, c, axis=axis), F.clip_by_norm(x, c * 3.0)),
         [x, c])


def test_clip_by_norm_rejects_non_positive(rng):
    with nn.context_scope(CUDA):
        y = F.clip_by_norm(nn.Variable.from_numpy_array(randn(rng, 3, 4)), -1.0)
    with pytest.raises(ValueError, match='clip_norm'):
        y.forward()


@pytest.mark.parametrize('clip_norm,axes', [(None, None), (0.5, None), (2.0, (1,)),
                                            (1.0, (0, 2)), (0.3, (-1,))], ids=str)
def test_clip_grad_by_norm(rng, clip_norm, axes):
    x = randn(rng, 3, 4, 5)
    same(lambda x: F.clip_grad_by_norm(x, clip_norm=clip_norm, axes=axes), [x])
    same(lambda x: F.add2(F.clip_grad_by_norm(x, clip_norm=clip_norm, axes=axes), x * 3.0), [x])


# ---------------------------------------------------------------------------
# PReLU

@pytest.mark.parametrize('xs,ws,base_axis', [((2, 3, 4), (1,), 1), ((2, 3, 4), (3,), 1),
                                             ((2, 3, 4), (4,), 2), ((5, 3), (5,), 0),
                                             ((2, 3, 4), (), 1), ((7,), (7,), 0)], ids=str)
def test_prelu(rng, xs, ws, base_axis):
    same(lambda x, w: F.prelu(x, w, base_axis=base_axis),
         [randn(rng, *xs), randn(rng, *ws, scale=0.3)])


def test_prelu_accumulates(rng):
    x, w = randn(rng, 2, 3, 4), randn(rng, 3)
    same(lambda x, w: F.add2(F.prelu(x, w), F.prelu(x * 2.0, w)), [x, w])
