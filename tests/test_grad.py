"""nn.grad: first-order gradients agree with backward, and gradients of
gradients agree with finite differences."""
import numpy as np
import pytest

import nncy as nn
import nncy.functions as F


def _leaf(a):
    return nn.Variable.from_numpy_array(np.asarray(a, np.float32), need_grad=True)


def _value(var):
    var.forward()
    return var.d.copy()


GRAPHS = {
    'pointwise': lambda x, w, t: F.sum(F.mul2(F.tanh(x), F.sigmoid(F.mul_scalar(x, 2.0)))),
    'broadcast': lambda x, w, t: F.mean(F.pow_scalar(F.sub2(x, F.exp(F.mul_scalar(
        F.sum(x, 1, keepdims=True), 0.1))), 2.0)),
    'relu_affine': lambda x, w, t: F.sum(F.pow_scalar(F.affine(F.relu(x), w), 2.0)),
    'softmax': lambda x, w, t: F.sum(F.mul2(F.softmax(x), F.log_softmax(F.mul_scalar(x, 3.0)))),
    'cross_entropy': lambda x, w, t: F.mean(F.softmax_cross_entropy(F.affine(
        F.tanh(x), w), t)),
}


@pytest.mark.parametrize('name', sorted(GRAPHS))
def test_first_order_matches_backward(name):
    rng = np.random.RandomState(0)
    x, w = _leaf(rng.randn(3, 4)), _leaf(rng.randn(4, 5) * 0.5)
    t = nn.Variable.from_numpy_array(rng.randint(0, 5, size=(3, 1)))
    y = GRAPHS[name](x, w, t)
    gx, gw = nn.grad([y], [x, w])
    y.forward()
    x.grad.zero()
    w.grad.zero()
    y.backward()
    np.testing.assert_allclose(_value(gx), x.g, rtol=1e-4, atol=1e-5)
    if gw is not None:
        np.testing.assert_allclose(_value(gw), w.g, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('name', sorted(GRAPHS))
def test_second_order_by_finite_differences(name):
    """d/dx <grad_x y, v> (a Hessian-vector product) against central
    differences of the first-order gradient."""
    rng = np.random.RandomState(1)
    x0 = rng.randn(3, 4)
    x, w = _leaf(x0), _leaf(rng.randn(4, 5) * 0.5)
    t = nn.Variable.from_numpy_array(rng.randint(0, 5, size=(3, 1)))
    v = rng.randn(3, 4).astype(np.float32)
    y = GRAPHS[name](x, w, t)
    (gx,) = nn.grad([y], [x])
    hv_var = nn.grad([F.sum(F.mul2(gx, nn.Variable.from_numpy_array(v)))], [x])[0]
    hv = _value(hv_var)
    eps = 1e-2
    fd = np.zeros_like(x0)
    for i in np.ndindex(x0.shape):
        vals = []
        for s in (eps, -eps):
            xp = x0.copy()
            xp[i] += s
            x.d = xp
            vals.append(float(np.sum(_value(gx).astype(np.float64) * v)))
        fd[i] = (vals[0] - vals[1]) / (2 * eps)
    x.d = x0
    np.testing.assert_allclose(hv, fd, rtol=2e-2, atol=2e-3)


def test_gradient_penalty_trains():
    """A critic trained with a gradient-norm penalty (as in WGAN-GP) moves its
    gradient norm towards 1."""
    rng = np.random.RandomState(2)
    x = nn.Variable.from_numpy_array(rng.randn(16, 3).astype(np.float32) * 0.5, need_grad=True)
    w = _leaf(rng.randn(3, 1) * 0.3)
    out = F.sum(F.tanh(F.affine(x, w)))
    (gx,) = nn.grad([out], [x])
    norm = F.pow_scalar(F.add_scalar(F.sum(F.pow_scalar(gx, 2.0), 1), 1e-6), 0.5)
    penalty = F.mean(F.pow_scalar(F.add_scalar(norm, -1.0), 2.0))
    first = None
    for _ in range(100):
        penalty.forward()
        first = float(penalty.d) if first is None else first
        w.grad.zero()
        penalty.backward()
        w.d -= 0.2 * w.g
    penalty.forward()
    assert float(penalty.d) < 0.2 * first


def test_function_without_gradient_graph_is_a_clear_error(monkeypatch):
    from nncy import _grad
    monkeypatch.delitem(_grad._BUILDERS, 'Transpose')
    x = _leaf(np.ones((2, 3)))
    y = F.sum(F.transpose(x, (1, 0)))
    with pytest.raises(NotImplementedError, match='transpose'):
        nn.grad([y], [x])


def test_scatter_nd_into_out():
    x = _leaf([1.0, 2.0])
    out = nn.Variable.from_numpy_array(np.full(4, 5.0, np.float32))
    y = F.sum(F.mul2(F.scatter_nd(x, [[0, 2]], out=out), nn.Variable.from_numpy_array(
        np.arange(4, dtype=np.float32))))
    (gx,) = nn.grad([y], [x])
    np.testing.assert_allclose(_value(gx), [0.0, 2.0])
