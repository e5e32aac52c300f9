"""nncy.initializer: NNabla's initializers and scale helpers."""
import inspect

import numpy as np
import pytest

import nncy as nn
import nncy.initializer as I


def test_signatures_and_defaults():
    expect = {
        'ConstantInitializer': dict(value=0),
        'NormalInitializer': dict(sigma=1.0, rng=None),
        'UniformInitializer': dict(lim=(-1, 1), rng=None),
        'UniformIntInitializer': dict(lim=(0, 10), rng=None),
        'RangeInitializer': dict(start=0, step=1),
        'OrthogonalInitializer': dict(gain=1.0, rng=None),
    }
    for name, d in expect.items():
        sig = inspect.signature(getattr(I, name))
        assert {k: p.default for k, p in sig.parameters.items()} == d, name
        assert isinstance(getattr(I, name)(), I.BaseInitializer)
    for f in (I.calc_normal_std_he_forward, I.calc_normal_std_he_backward,
              I.calc_normal_std_glorot, I.calc_uniform_lim_glorot):
        assert list(inspect.signature(f).parameters) == ['inmaps', 'outmaps', 'kernel']
        assert inspect.signature(f).parameters['kernel'].default == (1, 1)


def test_constant_and_range():
    c = I.ConstantInitializer(0.5)((2, 3))
    assert c.dtype == np.float32 and c.shape == (2, 3) and np.all(c == 0.5)
    assert I.ConstantInitializer()((4,)).sum() == 0
    r = I.RangeInitializer(start=2, step=3)((2, 4))
    assert r.dtype == np.float32 and r.flags.writeable
    np.testing.assert_array_equal(r, [[2, 5, 8, 11]] * 2)
    assert I.RangeInitializer(7)(()) == 7


def test_random_initializers_use_rng_or_the_global_generator():
    n = I.NormalInitializer(0.5, rng=np.random.RandomState(3))((1000,))
    assert n.dtype == np.float32
    np.testing.assert_allclose(n, np.random.RandomState(3).randn(1000) * 0.5, rtol=1e-6)
    u = I.UniformInitializer((-2, 3), rng=np.random.RandomState(4))((50, 40))
    assert u.dtype == np.float32 and u.min() >= -2 and u.max() < 3
    np.testing.assert_allclose(u, np.random.RandomState(4).uniform(-2, 3, (50, 40)), rtol=1e-6)
    i = I.UniformIntInitializer((-1, 2), rng=np.random.RandomState(5))((100,))
    assert np.issubdtype(i.dtype, np.integer) and set(np.unique(i)) == {-1, 0, 1}
    # default rng: nncy.random.prng at call time, so nn.seed() repeats draws
    init = I.NormalInitializer()
    nn.seed(11)
    a = init((5,))
    nn.seed(11)
    b = init((5,))
    np.testing.assert_array_equal(a, b)
    assert init.rng is nn.random.prng
    u1 = I.UniformInitializer()((3,))
    assert np.all(np.abs(u1) <= 1)


def test_orthogonal():
    for shape in [(6, 4), (4, 6), (8, 2, 3, 3)]:
        q = I.OrthogonalInitializer(gain=2.0, rng=np.random.RandomState(0))(shape)
        assert q.shape == shape and q.dtype == np.float32
        m = q.reshape(shape[0], -1).astype(np.float64) / 2.0
        if m.shape[0] <= m.shape[1]:
            np.testing.assert_allclose(m @ m.T, np.eye(m.shape[0]), atol=1e-5)
        else:
            np.testing.assert_allclose(m.T @ m, np.eye(m.shape[1]), atol=1e-5)
    with pytest.raises(ValueError, match='at least 2'):
        I.OrthogonalInitializer()((3,))


def test_weight_normalization_scale():
    w = nn.Variable.from_numpy_array(np.arange(12, dtype=np.float32).reshape(3, 4))
    s = I.WeightNormalizationScaleInitializer(w, dim=0, eps=0.0)((3,))
    np.testing.assert_allclose(s, np.linalg.norm(w.d, axis=1), rtol=1e-6)


def test_scale_helpers():
    assert I.calc_normal_std_he_forward(16, 32) == pytest.approx(np.sqrt(2 / 16))
    assert I.calc_normal_std_he_forward(16, 32, (3, 3)) == pytest.approx(np.sqrt(2 / 144))
    assert I.calc_normal_std_he_backward(16, 32, (3, 3)) == pytest.approx(np.sqrt(2 / 288))
    assert I.calc_normal_std_glorot(16, 32, (3, 3)) == pytest.approx(np.sqrt(2 / (9 * 48)))
    lo, hi = I.calc_uniform_lim_glorot(16, 32, (5,))
    assert hi == pytest.approx(np.sqrt(6 / (5 * 48))) and lo == -hi


def test_bad_shapes():
    with pytest.raises(ValueError, match='negative'):
        I.ConstantInitializer()((2, -1))
    with pytest.raises(TypeError, match='sequence of int'):
        I.NormalInitializer()(3)


def test_as_parameter_initializer():
    from nncy.parameter import get_parameter_or_create
    nn.clear_parameters()
    try:
        with nn.parameter_scope('init'):
            v = get_parameter_or_create('W', (3, 4), I.UniformInitializer((0, 1)))
        assert v.shape == (3, 4) and v.d.dtype == np.float32 and v.d.min() >= 0
    finally:
        nn.clear_parameters()
