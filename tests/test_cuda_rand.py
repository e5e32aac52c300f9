import numpy as np
import pytest
import nncy as nn
import nncy.functions as F
from cuda_check import CPU, CUDA, TOL, cupy, run, same  # noqa: F401  (cupy is an autouse fixture)
from cuda_check import backends

import math

from nncy._cpu_array import _gather_axes, _scatter_axes, shift_maps
from nncy.cuda._module import function

# The GPU streams are not the CPU's, so the random functions are checked by
# their properties: the Philox generator against its published answers, the
# samplers' distributions against NumPy's (moments and two-sample
# Kolmogorov-Smirnov distances), seeds for repeatability, and the structured
# functions for doing what they say to each sample, forward and backward.

N = 20000
KS2 = 1.95 * math.sqrt(2.0 / N)    # two-sample KS, 0.1% level


def randn(rng, *shape):
    return np.asarray(rng.randn(*shape), np.float32).reshape(shape)


def draw(fn):
    """fn's output, built and computed under the cuda context."""
    return run(CUDA, fn, [], on_gpu=True, backward=False)[0]


def gpu_graph(fn, *arrays):
    xs = [nn.Variable.from_numpy_array(a, need_grad=True) for a in arrays]
    with nn.context_scope(CUDA):
        y = fn(*xs)
    cpu = {t: m for t, m in backends(y).items() if not m.startswith('nncy.cuda')}
    assert not cpu, 'ran on the CPU under the cuda context: %s' % sorted(cpu)
    return xs, y


def forward_backward(y, seed=0):
    """y's forward and a backward with a random dy; returns dy."""
    y.forward()
    dy = randn(np.random.RandomState(seed), *y.shape)
    y.backward(dy)
    return dy


def ks2(a, b):
    """Two-sample Kolmogorov-Smirnov distance."""
    a, b = np.sort(a), np.sort(b)
    v = np.concatenate([a, b])
    return np.max(np.abs(np.searchsorted(a, v, 'right') / a.size
                         - np.searchsorted(b, v, 'right') / b.size))


def moments_ok(s, mean, var, k=5.0):
    n = s.size
    assert abs(s.mean() - mean) < k * math.sqrt(var / n), (s.mean(), mean)
    assert abs(s.var() - var) < 2 * k * var * math.sqrt(2.0 / n), (s.var(), var)


# ---------------------------------------------------------------------------
# The generator

# Known answers of Philox4x32-10 (Random123's kat_vectors): key, counter, output.
KAT = [
    ((0, 0), (0, 0, 0, 0), (0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8)),
    ((0xffffffff, 0xffffffff), (0xffffffff,) * 4,
     (0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd)),
    ((0xa4093822, 0x299f31d0), (0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344),
     (0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1)),
]


@pytest.mark.parametrize('key,ctr,want', KAT)
def test_philox_known_answers(cupy, key, ctr, want):
    c = cupy.asarray(np.array(ctr, np.uint32))
    out = cupy.zeros(4, np.uint32)
    function('rand.cu', 'nncy_philox_raw')((1,), (32,), (np.int64(1), np.uint32(key[0]),
                                                          np.uint32(key[1]), c, out))
    assert [int(v) for v in out.get()] == list(want)


# ---------------------------------------------------------------------------
# Samplers

def test_rand_and_randn():
    s = draw(lambda: F.rand(-2.0, 3.0, shape=(N,), seed=1)).astype(np.float64)
    assert s.dtype == np.float64 and s.min() >= -2 and s.max() < 3
    moments_ok(s, 0.5, 25 / 12)
    assert ks2(s, np.random.RandomState(0).uniform(-2, 3, N)) < KS2
    s = draw(lambda: F.randn(1.5, 2.0, shape=(100, 200), seed=2)).ravel()
    moments_ok(s, 1.5, 4.0)
    assert ks2(s, np.random.RandomState(0).normal(1.5, 2.0, N)) < KS2


def test_randint():
    s = draw(lambda: F.randint(-3, 5, shape=(N,), seed=3))
    assert s.dtype == np.int32 and set(np.unique(s)) == set(range(-3, 5))
    moments_ok(s.astype(np.float64), 0.5, (64 - 1) / 12)


@pytest.mark.parametrize('n,p', [(20, 0.3), (500, 0.8), (1, 0.5), (7, 0.0), (7, 1.0), (0, 0.4)])
def test_rand_binomial(n, p):
    s = draw(lambda: F.rand_binomial(n, p, shape=(N,), seed=4)).astype(np.float64)
    assert np.all(s == np.round(s)) and s.min() >= 0 and s.max() <= n
    if 0 < p < 1 and n > 0:
        moments_ok(s, n * p, n * p * (1 - p))
        assert ks2(s, np.random.RandomState(0).binomial(n, p, N)) < KS2
    else:
        assert np.all(s == n * p)


@pytest.mark.parametrize('k,theta', [(0.3, 2.0), (1.0, 1.0), (4.5, 0.5)])
def test_rand_gamma(k, theta):
    s = draw(lambda: F.rand_gamma(k, theta, shape=(N,), seed=5)).astype(np.float64)
    assert s.min() >= 0
    moments_ok(s, k * theta, k * theta ** 2, k=6.0)
    assert ks2(s, np.random.RandomState(0).gamma(k, theta, N)) < KS2


@pytest.mark.parametrize('a,b', [(0.5, 0.5), (0.2, 0.9), (2.0, 3.0), (0.7, 4.0)])
def test_rand_beta(a, b):
    s = draw(lambda: F.rand_beta(a, b, shape=(N,), seed=6)).astype(np.float64)
    assert s.min() >= 0 and s.max() <= 1
    moments_ok(s, a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1)), k=6.0)
    assert ks2(s, np.random.RandomState(0).beta(a, b, N)) < KS2


def test_sampler_shapes_and_errors():
    assert draw(lambda: F.rand(shape=(2, 0, 3))).shape == (2, 0, 3)
    assert draw(lambda: F.randn(shape=())).shape == ()
    with nn.context_scope(CUDA):
        with pytest.raises(Exception, match='seed'):
            F.rand(shape=(2,), seed=-2)
        with pytest.raises(Exception, match='high'):
            F.rand(1.0, 1.0, shape=(2,))


def test_seeds_repeat_and_forwards_differ():
    a = draw(lambda: F.rand(shape=(50,), seed=9))
    b = draw(lambda: F.rand(shape=(50,), seed=9))
    np.testing.assert_array_equal(a, b)    # two nodes, one seed: one stream
    assert not np.array_equal(a, draw(lambda: F.rand(shape=(50,), seed=10)))
    _, y = gpu_graph(lambda: F.randn(shape=(50,), seed=9))
    y.forward()
    first = y.d.copy()
    y.forward()
    assert not np.array_equal(first, y.d)   # the counter moves on
    # seed -1 follows nncy.random.seed
    outs = []
    for _ in range(2):
        nn.random.seed(77)
        _, y = gpu_graph(lambda: F.rand_gamma(2.0, 1.0, shape=(50,)))
        y.forward()
        outs.append(y.d.copy())
        y.forward()
        assert not np.array_equal(outs[-1], y.d)
    np.testing.assert_array_equal(outs[0], outs[1])


# ---------------------------------------------------------------------------
# Dropout and random choice

@pytest.mark.parametrize('p', [0.3, 0.75])
def test_dropout_mask(rng, p):
    xa = rng.uniform(1, 2, (40, 50)).astype(np.float32)
    (x,), y = gpu_graph(lambda x: F.dropout(x, p), xa)
    dy = forward_backward(y)
    kept = y.d != 0
    np.testing.assert_allclose(y.d[kept], xa[kept] / (1 - p), rtol=1e-6)
    assert abs(kept.mean() - (1 - p)) < 5 * math.sqrt(p * (1 - p) / xa.size)
    np.testing.assert_allclose(x.g, np.where(kept, dy / (1 - p), 0), rtol=1e-6)


def test_dropout_accumulates_with_one_seed(rng):
    xa = rng.uniform(1, 2, (6, 7)).astype(np.float32)
    (x,), y = gpu_graph(lambda x: F.add2(F.dropout(x, 0.4, seed=3), F.dropout(x, 0.4, seed=3)),
                        xa)
    dy = forward_backward(y)
    kept = y.d != 0
    np.testing.assert_allclose(y.d[kept], 2 * xa[kept] / 0.6, rtol=1e-6)
    np.testing.assert_allclose(x.g, np.where(kept, 2 * dy / 0.6, 0), rtol=1e-6)


def test_dropout_p0_is_identity(rng):
    same(lambda x: F.add2(F.dropout(x, 0.0), F.dropout(x, 0.0)), [randn(rng, 3, 4)])


def test_random_choice_with_replacement(rng):
    xa = np.arange(12, dtype=np.float32).reshape(3, 4) + 0.5
    wa = np.array([[1, 2, 3, 4], [0, 0, 1, 0], [5, 0, 5, 0]], np.float32)
    (x, w), y = gpu_graph(lambda x, w: F.random_choice(x, w, shape=(2000,), seed=1), xa, wa)
    dy = forward_backward(y)
    idx = (y.d - 0.5 - 4 * np.arange(3)[:, None]).astype(np.int64)
    assert y.shape == (3, 2000) and idx.min() >= 0 and idx.max() < 4
    freq = np.stack([np.bincount(r, minlength=4) for r in idx]) / 2000.0
    np.testing.assert_allclose(freq, wa / wa.sum(1, keepdims=True), atol=0.05)
    want = np.zeros_like(xa)
    for r in range(3):
        np.add.at(want[r], idx[r], dy[r])
    np.testing.assert_allclose(x.g, want, rtol=1e-4, atol=1e-4)
    assert not w.g.any()


def test_random_choice_without_replacement(rng):
    xa = randn(rng, 2, 3, 6)
    wa = np.abs(randn(rng, 2, 3, 6)) + 0.1
    wa[0, 1, 2] = 0
    (x, w), y = gpu_graph(lambda x, w: F.add2(F.random_choice(x, w, shape=(5,), replace=False,
                                                             seed=2),
                                             F.random_choice(x, w, shape=(5,), replace=False,
                                                             seed=2)), xa, wa)
    dy = forward_backward(y)
    assert y.shape == (2, 3, 5)
    want = np.zeros_like(xa)
    for i in np.ndindex(2, 3):
        idx = [int(np.flatnonzero(xa[i] == v / 2)[0]) for v in y.d[i]]
        assert len(set(idx)) == 5
        want[i][idx] += 2 * dy[i]
    assert want[0, 1, 2] == 0
    np.testing.assert_allclose(x.g, want, rtol=1e-5)


def test_random_choice_bad_weights():
    xa = np.ones((2, 3), np.float32)
    for wa, kw, msg in [([[1, -1, 1], [1, 1, 1]], {}, 'non-negative'),
                        ([[0, 0, 0], [1, 1, 1]], {}, 'positive sum'),
                        ([[1, 0, 0], [1, 1, 1]], {'replace': False}, 'non-zero')]:
        _, y = gpu_graph(lambda x, w: F.random_choice(x, w, shape=(2,), **kw), xa,
                         np.array(wa, np.float32))
        with pytest.raises(Exception, match=msg):
            y.forward()


# ---------------------------------------------------------------------------
# Crops, flips and shifts: each sample a crop/flip/shift of its input, and the
# backward the adjoint of that map.

def _match(ys, xs, candidates):
    """The candidate maps (name, f) with f(xs) == ys."""
    return [k for k, f in candidates if np.array_equal(f(xs), ys)]


@pytest.mark.parametrize('shape,base', [((3, 4), 1), ((2, 3, 4), 1), ((4,), 2), ((6, 7), 2)])
def test_random_crop(rng, shape, base):
    xa = randn(rng, 3, 2, 6, 7)
    (x,), y = gpu_graph(lambda x: F.random_crop(x, shape, base_axis=base, seed=4), xa)
    dy = forward_backward(y)
    lead = 4 - len(shape)
    assert y.shape == xa.shape[:lead] + shape
    m = int(np.prod(xa.shape[:base]))
    xs, ys = xa.reshape((m,) + xa.shape[base:]), y.d.reshape((m,) + y.shape[base:])
    dys = dy.reshape(ys.shape)
    want = np.zeros_like(xs)
    rooms = [range(n - c + 1) for n, c in zip(xa.shape[lead:], shape)]
    for i in range(m):
        def window(o):
            return (slice(None),) * (lead - base) + tuple(slice(a, a + c)
                                                          for a, c in zip(o, shape))
        hit = _match(ys[i], xs[i], [(o, lambda a, o=o: a[window(o)])
                                    for o in np.ndindex(*[len(r) for r in rooms])])
        assert hit, 'sample %d is no window of its input' % i
        want[i][window(hit[0])] = dys[i]
    np.testing.assert_array_equal(x.g, want.reshape(xa.shape))


def test_random_crop_whole_is_identity(rng):
    same(lambda x: F.add2(F.random_crop(x), F.random_crop(x, (5, 6))), [randn(rng, 2, 5, 6)])


@pytest.mark.parametrize('axes,base', [(None, 1), ((2, 3), 1), ((1, -1), 1), ((3,), 3)])
def test_random_flip(rng, axes, base):
    xa = randn(rng, 12, 2, 3, 4)
    (x,), y = gpu_graph(lambda x: F.random_flip(x, axes, base_axis=base, seed=5), xa)
    dy = forward_backward(y)
    ax = sorted({a % 4 for a in (axes or (3,))})
    m = int(np.prod(xa.shape[:base]))
    xs, ys = xa.reshape((m,) + xa.shape[base:]), y.d.reshape((m,) + xa.shape[base:])
    dys, gs = dy.reshape(ys.shape), x.g.reshape(xs.shape)
    seen = set()
    for i in range(m):
        subsets = [tuple(a for a, f in zip(ax, bits) if f)
                   for bits in np.ndindex(*(2,) * len(ax))]
        hit = _match(ys[i], xs[i], [(s, lambda a, s=s: np.flip(a, [v - base for v in s]))
                                    for s in subsets])
        assert hit
        seen.add(hit[0])
        np.testing.assert_array_equal(gs[i], np.flip(dys[i], [v - base for v in hit[0]]))
    assert len(seen) > 1


def test_random_flip_accumulates(rng):
    xa = randn(rng, 4, 3, 5)
    (x,), y = gpu_graph(lambda x: F.add2(F.random_flip(x, seed=1), F.random_flip(x, seed=1)), xa)
    dy = forward_backward(y)
    for i in range(4):
        flipped = not np.allclose(y.d[i], 2 * xa[i])
        np.testing.assert_allclose(x.g[i], 2 * (np.flip(dy[i], -1) if flipped else dy[i]))


@pytest.mark.parametrize('shifts,mode,base', [((1, 2), 'nearest', 1), ((2, 3), 'reflect', 1),
                                              ((1,), 'reflect', 2), ((0, 1, 1), 'nearest', 1)])
def test_random_shift(rng, shifts, mode, base):
    xa = randn(rng, 6, 2, 4, 5)
    (x,), y = gpu_graph(lambda x: F.random_shift(x, shifts, border_mode=mode, base_axis=base,
                                                 seed=6), xa)
    dy = forward_backward(y)
    m = int(np.prod(xa.shape[:base]))
    inner = xa.shape[base:]
    xs, ys = xa.reshape((m,) + inner), y.d.reshape((m,) + inner)
    dys, gs = dy.reshape(ys.shape), x.g.reshape(xs.shape)
    for i in range(m):
        drawn = [tuple(v - w for v, w in zip(s, shifts))
                 for s in np.ndindex(*[2 * v + 1 for v in shifts])]
        hit = _match(ys[i], xs[i], [(s, lambda a, s=s: _gather_axes(a, shift_maps(inner, s, mode)))
                                    for s in drawn])
        assert hit, 'sample %d is no shift of its input' % i
        want = _scatter_axes(dys[i], shift_maps(inner, hit[0], mode), inner)
        np.testing.assert_allclose(gs[i], want, rtol=1e-5, atol=1e-6)


def test_random_shift_zero_is_identity(rng):
    same(lambda x: F.add2(F.random_shift(x), F.random_shift(x, (0, 0))), [randn(rng, 2, 3, 4)])


# ---------------------------------------------------------------------------
# Random erasing

@pytest.mark.parametrize('kw', [dict(share=True), dict(share=False, n=3),
                                dict(channel_last=True), dict(ste_fine_grained=False),
                                dict(inplace=True)])
def test_random_erase(rng, kw):
    xa = rng.uniform(-2, -1, (8, 3, 10, 12)).astype(np.float32)
    (x,), y = gpu_graph(lambda x: F.random_erase(x, prob=0.7, area_ratios=(0.1, 0.3),
                                                 replacements=(0.0, 1.0), seed=7, **kw), xa)
    dy = forward_backward(y)
    erased = y.d >= 0
    np.testing.assert_array_equal(y.d[~erased], xa[~erased])
    assert y.d[erased].max() < 1 and 0.05 < erased.mean() < 0.6
    cl = kw.get('channel_last', False)
    per_image = erased.any(axis=3 if cl else 1)
    if kw.get('share', True):   # one mask for every channel
        np.testing.assert_array_equal(erased.all(axis=3 if cl else 1), per_image)
    if kw.get('n', 1) == 1:     # each image or channel: a single rectangle
        planes = np.moveaxis(erased, 3, 1) if cl else erased
        for plane in planes.reshape(-1, *planes.shape[2:]):
            if plane.any():
                r, c = np.flatnonzero(plane.any(1)), np.flatnonzero(plane.any(0))
                assert plane[r[0]:r[-1] + 1, c[0]:c[-1] + 1].all()
    want = np.where(erased, 0, dy) if kw.get('ste_fine_grained', True) else dy
    np.testing.assert_array_equal(x.g, want)


def test_random_erase_inplace_on_an_intermediate(rng):
    xa = rng.uniform(-2, -1, (4, 2, 6, 7)).astype(np.float32)
    (x,), y = gpu_graph(lambda x: F.random_erase(F.mul_scalar(x, 2.0), prob=1.0, inplace=True,
                                                 replacements=(0.0, 1.0), seed=1), xa)
    dy = forward_backward(y)
    erased = y.d >= 0
    assert erased.any() and not erased.all()
    np.testing.assert_array_equal(y.d[~erased], 2 * xa[~erased])
    np.testing.assert_array_equal(x.g, np.where(erased, 0, 2 * dy))


def test_random_erase_prob0_is_identity(rng):
    same(lambda x: F.add2(F.random_erase(x, prob=0.0), F.random_erase(x, prob=0.0)),
         [randn(rng, 2, 3, 5, 6)])


# ---------------------------------------------------------------------------
# Image augmentation

def test_image_augmentation_off_is_identity_or_centre_crop(rng):
    xa = randn(rng, 2, 3, 6, 7)
    same(lambda x: F.add2(F.image_augmentation(x), F.image_augmentation(x)), [xa])
    same(lambda x: F.image_augmentation(x, shape=(3, 4, 5)), [xa])


def test_image_augmentation_geometry(rng):
    xa = randn(rng, 16, 2, 5, 6)
    y = run(CUDA, lambda x: F.image_augmentation(x, flip_lr=True, flip_ud=True, seed=3), [xa],
            on_gpu=True)[0]
    seen = set()
    for i in range(16):
        hit = _match(y[i], xa[i], [(s, lambda a, s=s: np.flip(a, s) if s else a)
                                   for s in [(), (1,), (2,), (1, 2)]])
        assert hit
        seen.add(hit[0])
    assert len(seen) > 2
    y = run(CUDA, lambda x: F.image_augmentation(x, pad=(1, 2), seed=4), [xa], on_gpu=True)[0]
    for i in range(16):   # an integer translation, zero where it leaves the image
        pad = np.pad(xa[i], ((0, 0), (1, 1), (2, 2)))
        assert _match(y[i], pad, [((a, b), lambda p, a=a, b=b: p[:, a:a + 5, b:b + 6])
                                  for a in range(3) for b in range(5)])
    # rotation, scaling and distortion keep the values within the image's range
    xa = rng.uniform(0, 1, (4, 2, 9, 9)).astype(np.float32)
    y, (g,) = run(CUDA, lambda x: F.image_augmentation(x, min_scale=0.8, max_scale=1.3,
                                                       angle=0.5, aspect_ratio=1.3,
                                                       distortion=0.3, seed=5), [xa],
                  on_gpu=True)
    assert y.shape == xa.shape and np.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
    assert not np.allclose(y, xa) and not g.any()


def test_image_augmentation_photometric(rng):
    xa = randn(rng, 8, 3, 4, 5)
    y = run(CUDA, lambda x: F.image_augmentation(x, brightness=0.5, brightness_each=True,
                                                 seed=6), [xa], on_gpu=True)[0]
    d = (y - xa).reshape(8, 3, -1)
    np.testing.assert_allclose(d, d[..., :1] + 0 * d, atol=1e-5)
    assert np.abs(d).max() <= 0.5 and len(np.unique(d[:, :, 0].round(5))) > 8
    y = run(CUDA, lambda x: F.image_augmentation(x, contrast=2.0, contrast_center=0.5,
                                                 seed=7), [xa], on_gpu=True)[0]
    k = ((y - 0.5) / (xa - 0.5)).reshape(8, -1)
    np.testing.assert_allclose(k, k[:, :1] + 0 * k, rtol=1e-3)
    assert k.min() >= 0.5 - 1e-4 and k.max() <= 2 + 1e-4
    xa = np.zeros((4, 2, 50, 50), np.float32)
    y = run(CUDA, lambda x: F.image_augmentation(x, noise=0.3, seed=8), [xa], on_gpu=True)[0]
    moments_ok(y.ravel().astype(np.float64), 0.0, 0.09)
