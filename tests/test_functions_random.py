"""Stochastic functions: rand, randint, randn, rand_binomial, rand_beta,
rand_gamma, dropout, random_choice, random_crop, random_flip, random_shift,
random_erase, image_augmentation.

Distributions are checked statistically with fixed seeds (moments within a few
standard errors, and a Kolmogorov-Smirnov distance against the CDF); seeds
are checked for repeatability (a fixed seed repeats, seed -1 follows
``nncy.random.seed``)."""
import math

import numpy as np
import pytest

import nncy as nn
import nncy.functions as F
import nncy.random

from checker import check_raises

R = np.random.RandomState(5)
N = 20000


def randn(*shape):
    return np.asarray(R.randn(*shape), dtype=np.float32).reshape(shape)


def sample(fn, **kw):
    y = fn(shape=(N,), **kw)
    y.forward()
    return np.asarray(y.d, dtype=np.float64)


def moments_ok(s, mean, var, k=5.0):
    """Sample mean and variance within k standard errors of the truth."""
    n = s.size
    assert abs(s.mean() - mean) < k * math.sqrt(var / n), (s.mean(), mean)
    assert abs(s.var() - var) < k * var * math.sqrt(2.0 / n) * 2, (s.var(), var)


def ks_distance(s, cdf):
    s = np.sort(s)
    n = s.size
    c = cdf(s)
    return max(np.max(np.arange(1, n + 1) / n - c), np.max(c - np.arange(n) / n))


KS_CRIT = 1.63 / math.sqrt(N)    # 1% level


def test_rand_uniform():
    s = sample(F.rand, low=-2.0, high=3.0, seed=11)
    assert s.min() >= -2 and s.max() < 3
    moments_ok(s, 0.5, 25 / 12)
    assert ks_distance(s, lambda v: (v + 2) / 5) < KS_CRIT


def test_randn_normal():
    s = sample(F.randn, mu=1.5, sigma=2.0, seed=12)
    moments_ok(s, 1.5, 4.0)
    erf = np.vectorize(math.erf)
    assert ks_distance(s, lambda v: 0.5 * (1 + erf((v - 1.5) / (2.0 * math.sqrt(2))))) < KS_CRIT


def test_randint():
    y = F.randint(low=-3, high=5, shape=(N,), seed=13)
    y.forward()
    s = np.asarray(y.d)
    assert s.dtype.kind == 'i'
    assert set(np.unique(s)) == set(range(-3, 5))
    moments_ok(s.astype(np.float64), 0.5, (8 ** 2 - 1) / 12)


def test_rand_binomial():
    s = sample(F.rand_binomial, n=10, p=0.3, seed=14)
    assert np.all(s == np.round(s)) and s.min() >= 0 and s.max() <= 10
    moments_ok(s, 3.0, 2.1)


def test_rand_beta():
    s = sample(F.rand_beta, alpha=2.0, beta=3.0, seed=15)
    a, b = 2.0, 3.0
    moments_ok(s, a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1)))
    assert s.min() >= 0 and s.max() <= 1


def test_rand_gamma():
    s = sample(F.rand_gamma, k=2.5, theta=1.5, seed=16)
    moments_ok(s, 2.5 * 1.5, 2.5 * 1.5 ** 2)
    assert s.min() > 0


def test_fixed_seed_repeats_and_global_seed():
    a = sample(F.randn, seed=7)
    b = sample(F.randn, seed=7)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, sample(F.randn, seed=8))
    nncy.random.seed(99)
    c = sample(F.rand)
    d = sample(F.rand)
    assert not np.array_equal(c, d)
    nncy.random.seed(99)
    np.testing.assert_array_equal(sample(F.rand), c)


def test_sampler_errors():
    check_raises(F.rand, [], {'low': 1.0, 'high': 1.0}, match_words=['rand', 'high'])
    check_raises(F.randint, [], {'low': 3, 'high': 2}, match_words=['randint', 'high'])
    check_raises(F.randn, [], {'sigma': -1.0}, match_words=['randn', 'sigma'])
    check_raises(F.rand_binomial, [], {'p': 1.5}, match_words=['rand_binomial', 'p'])
    check_raises(F.rand_binomial, [], {'n': -1}, match_words=['n'])
    check_raises(F.rand_beta, [], {'alpha': 0.0}, match_words=['rand_beta', 'alpha'])
    check_raises(F.rand_gamma, [], {'theta': -1.0}, match_words=['rand_gamma', 'theta'])
    check_raises(F.rand, [], {'shape': (2, -1)}, match_words=['shape'])
    check_raises(F.rand, [], {'seed': -2}, match_words=['seed'])
    check_raises(F.rand, [], {'seed': 'a'}, exc=TypeError, match_words=['seed'])


# --------------------------------------------------------------------------
# dropout

@pytest.mark.parametrize('p', [0.0, 0.25, 0.5, 0.9])
def test_dropout_scale_and_mask(p):
    x = nn.Variable.from_numpy_array(np.full((200, 100), 2.0, np.float32), need_grad=True)
    y = F.dropout(x, p=p, seed=3)
    y.forward()
    kept = y.d != 0
    np.testing.assert_allclose(y.d[kept], 2.0 / (1 - p), rtol=1e-6)
    n = kept.size
    assert abs(kept.mean() - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n) + 1e-12
    g = randn(200, 100)
    x.g = 1.0
    y.backward(g, clear_buffer=False)    # accumulates, with the forward's mask
    np.testing.assert_allclose(x.g, 1.0 + np.where(kept, g / (1 - p), 0), rtol=1e-6, atol=1e-6)


def test_dropout_seed_and_modes():
    a = randn(50)
    y1 = F.dropout(nn.Variable.from_numpy_array(a), p=0.5, seed=21)
    y1.forward()
    y2 = F.dropout(nn.Variable.from_numpy_array(a), p=0.5, seed=21)
    y2.forward()
    np.testing.assert_array_equal(y1.d, y2.d)
    z = F.dropout(nn.NdArray.from_numpy_array(a), p=0.5, seed=21)
    np.testing.assert_array_equal(z.data, y1.d)
    check_raises(F.dropout, [a], {'p': 1.0}, match_words=['dropout', 'p'])
    check_raises(F.dropout, [a], {'p': -0.1}, match_words=['p'])


# --------------------------------------------------------------------------
# random_choice

def test_random_choice_with_replacement_frequencies():
    x = nn.Variable.from_numpy_array(np.array([[10, 20, 30, 40], [1, 2, 3, 4]], np.float32))
    w = nn.Variable.from_numpy_array(np.array([[1, 2, 3, 4], [0, 0, 1, 0]], np.float32))
    y = F.random_choice(x, w, shape=(N,), seed=4)
    y.forward()
    assert y.shape == (2, N)
    vals, counts = np.unique(y.d[0], return_counts=True)
    np.testing.assert_array_equal(vals, [10, 20, 30, 40])
    p = np.array([0.1, 0.2, 0.3, 0.4])
    assert np.all(np.abs(counts / N - p) < 5 * np.sqrt(p * (1 - p) / N))
    np.testing.assert_array_equal(y.d[1], 3)


def test_random_choice_without_replacement_and_grad():
    xa = randn(3, 6)
    x = nn.Variable.from_numpy_array(xa, need_grad=True)
    w = nn.Variable.from_numpy_array(np.ones((3, 6), np.float32))
    y = F.random_choice(x, w, shape=(2, 3), replace=False, seed=9)
    y.forward()
    assert y.shape == (3, 2, 3)
    for b in range(3):
        d = y.d[b].ravel()
        assert len(set(d.tolist())) == 6 and set(d.tolist()) == set(xa[b].tolist())
    y.backward(np.ones((3, 2, 3), np.float32))
    np.testing.assert_array_equal(x.g, np.ones((3, 6)))


def test_random_choice_errors():
    x, w = randn(2, 4), np.ones((2, 4), np.float32)
    check_raises(F.random_choice, [x, np.ones((2, 3), np.float32)],
                 match_words=['random_choice', 'w'])
    check_raises(F.random_choice, [x, w], {'shape': (5,), 'replace': False}, match_words=['shape'])
    for bad in (-w, 0 * w):
        with pytest.raises(ValueError, match='random_choice.*w'):
            F.random_choice(nn.Variable.from_numpy_array(x), nn.Variable.from_numpy_array(bad),
                            shape=(2,)).forward()
    wz = w.copy()
    wz[:, 1:] = 0
    with pytest.raises(ValueError, match='random_choice.*w'):
        F.random_choice(nn.Variable.from_numpy_array(x), nn.Variable.from_numpy_array(wz),
                        shape=(2,), replace=False).forward()


# --------------------------------------------------------------------------
# random_crop, random_flip, random_shift

def test_random_crop():
    xa = np.arange(2 * 3 * 6 * 7, dtype=np.float32).reshape(2, 3, 6, 7)
    x = nn.Variable.from_numpy_array(xa, need_grad=True)
    y = F.random_crop(x, shape=(4, 5), seed=2)
    y.forward()
    assert y.shape == (2, 3, 4, 5)
    for b in range(2):   # each sample is a window of its input
        o = y.d[b, 0, 0, 0] - xa[b, 0, 0, 0]
        r, c = divmod(int(o), 7)
        np.testing.assert_array_equal(y.d[b], xa[b, :, r:r + 4, c:c + 5])
    y.backward(np.ones(y.shape, np.float32))
    assert x.g.sum() == y.size and set(np.unique(x.g)) <= {0.0, 1.0}
    check_raises(F.random_crop, [xa], {'shape': (7, 5)}, match_words=['random_crop', 'shape'])
    check_raises(F.random_crop, [xa], {'base_axis': 5}, match_words=['base_axis'])


def test_random_flip():
    xa = randn(64, 2, 3, 4)
    x = nn.Variable.from_numpy_array(xa, need_grad=True)
    y = F.random_flip(x, axes=(2, 3), seed=5)
    y.forward()
    seen = set()
    for b in range(64):
        opts = {(i, j): np.flip(xa[b], [a for a, f in ((1, i), (2, j)) if f])
                for i in (0, 1) for j in (0, 1)}
        hit = [k for k, v in opts.items() if np.array_equal(v, y.d[b])]
        assert hit
        seen.add(hit[0])
    assert len(seen) == 4
    g = randn(*xa.shape)
    y.backward(g)
    np.testing.assert_allclose((x.g * xa).sum(), (g * y.d).sum(), rtol=1e-4)
    check_raises(F.random_flip, [xa], {'axes': (0,)}, match_words=['random_flip', 'axes'])


def test_random_shift():
    xa = randn(32, 5, 6)
    x = nn.Variable.from_numpy_array(xa, need_grad=True)
    y = F.random_shift(x, shifts=(1, 2), border_mode='reflect', seed=8)
    y.forward()
    for b in range(32):
        ok = any(np.array_equal(y.d[b], F.shift(nn.NdArray.from_numpy_array(xa[b]), (i, j),
                                                border_mode='reflect').data)
                 for i in range(-1, 2) for j in range(-2, 3))
        assert ok
    g = randn(*xa.shape)
    y.backward(g)
    # the backward is the adjoint of the forward's linear map
    np.testing.assert_allclose((x.g * xa).sum(), (g * y.d).sum(), rtol=1e-4)
    check_raises(F.random_shift, [xa], {'shifts': (-1,)}, match_words=['random_shift', 'shifts'])
    check_raises(F.random_shift, [xa], {'shifts': (1,), 'border_mode': 'x'},
                 match_words=['border_mode'])


# --------------------------------------------------------------------------
# random_erase

@pytest.mark.parametrize('share', [True, False])
def test_random_erase_boxes(share):
    xa = np.full((200, 3, 10, 12), -1.0, np.float32)
    x = nn.Variable.from_numpy_array(xa, need_grad=True)
    y = F.random_erase(x, prob=0.5, area_ratios=(0.1, 0.3), aspect_ratios=(0.5, 2.0),
                       replacements=(2.0, 3.0), share=share, seed=6)
    y.forward()
    er = y.d != -1
    assert np.all((y.d[er] >= 2) & (y.d[er] < 3))
    per_sample = er.any(axis=(1, 2, 3))
    # each channel has its own draw when share is False
    assert abs(per_sample.mean() - (0.5 if share else 1 - 0.5 ** 3)) < 0.12
    for b in np.nonzero(per_sample)[0][:20]:
        for c in range(3):
            m = er[b, c]
            if not m.any():
                continue
            rows, cols = np.nonzero(m.any(1))[0], np.nonzero(m.any(0))[0]
            # one rectangle
            assert m[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()
            assert m.sum() == len(rows) * len(cols)
            area = m.sum() / 120
            assert 0.03 <= area <= 0.35
        if share:
            assert (er[b] == er[b, :1]).all()
    g = randn(*xa.shape)
    y.backward(g)
    np.testing.assert_array_equal(x.g, np.where(er, 0, g))


def test_random_erase_channel_last_and_ste():
    xa = np.zeros((50, 8, 8, 2), np.float32)
    x = nn.Variable.from_numpy_array(xa, need_grad=True)
    y = F.random_erase(x, prob=1.0, replacements=(1.0, 2.0), channel_last=True,
                       ste_fine_grained=False, n=2, seed=1)
    y.forward()
    er = y.d != 0
    assert er.any(axis=(1, 2, 3)).all()
    assert (er[..., 0] == er[..., 1]).all()
    g = randn(*xa.shape)
    y.backward(g)
    np.testing.assert_array_equal(x.g, g)
    check_raises(F.random_erase, [xa], {'prob': 2.0}, match_words=['random_erase', 'prob'])
    check_raises(F.random_erase, [xa], {'area_ratios': (0.5, 0.1)}, match_words=['area_ratios'])
    check_raises(F.random_erase, [xa], {'n': 0}, match_words=['n'])
    check_raises(F.random_erase, [xa[:, 0, 0]], match_words=['x'])


# random_erase(inplace=True): x's buffer takes the erased values where the
# engine's in-place rules allow it; the values, the stream and the gradient
# are those of inplace=False.

ERASE = dict(prob=0.7, area_ratios=(0.1, 0.3), aspect_ratios=(0.5, 2.0),
             replacements=(2.0, 3.0), seed=11)


def _erase_pair(xa, producer=F.identity, **kw):
    """(leaf, x, y) for inplace=True and the same for inplace=False."""
    out = []
    for inplace in (True, False):
        leaf = nn.Variable.from_numpy_array(xa, need_grad=True)
        x = producer(leaf)
        out.append((leaf, x, F.random_erase(x, inplace=inplace, **dict(ERASE, **kw))))
    return out


@pytest.mark.parametrize('ste', [True, False])
def test_random_erase_inplace_writes_through(ste):
    xa = np.full((30, 2, 6, 7), -1.0, np.float32)
    (leaf, x, y), (leaf0, x0, y0) = _erase_pair(xa, ste_fine_grained=ste)
    g = randn(*xa.shape)
    for _ in range(2):      # a static graph: the producer rewrites x, the stream goes on
        y.forward()
        y0.forward()
        np.testing.assert_array_equal(y.d, y0.d)
        er = y.d != -1
        assert 0 < er.mean() < 0.5
        np.testing.assert_array_equal(x.d, y.d)           # x holds the erased result
        assert np.shares_memory(x.d, y.d)
        np.testing.assert_array_equal(leaf.d, xa)         # the leaf is not touched
        np.testing.assert_array_equal(x0.d, xa)           # inplace=False leaves x alone
        for v in (leaf, leaf0):
            v.g = 0
        y.backward(g)
        y0.backward(g)
        np.testing.assert_array_equal(leaf.g, np.where(er, 0, g) if ste else g)
        np.testing.assert_array_equal(leaf.g, leaf0.g)
    x.d = 5.0                                             # write-through, both ways
    assert (y.d == 5.0).all()


def test_random_erase_inplace_auto_forward_and_clear_buffer():
    xa = randn(20, 3, 5, 5)
    with nn.auto_forward():
        (leaf, x, y), (_, _, y0) = _erase_pair(xa, share=False)
        np.testing.assert_array_equal(y.d, y0.d)
        np.testing.assert_array_equal(x.d, y.d)
        assert np.shares_memory(x.d, y.d)
        assert (y.d != xa).any()
        np.testing.assert_array_equal(leaf.d, xa)
        g = randn(*xa.shape)
        y.backward(g)
        np.testing.assert_array_equal(leaf.g, np.where(y.d != xa, 0, g))
    (leaf, x, y), (leaf0, _, y0) = _erase_pair(xa)
    s = F.sum(F.mul_scalar(y, 2.0))
    s0 = F.sum(F.mul_scalar(y0, 2.0))
    for v in (s, s0):
        v.forward(clear_buffer=True)
        v.backward(clear_buffer=True)
    np.testing.assert_allclose(s.d, s0.d, rtol=1e-6)
    np.testing.assert_array_equal(leaf.g, leaf0.g)


def test_random_erase_inplace_is_a_hint_where_overwriting_is_unsafe():
    xa = randn(20, 3, 5, 5)
    ref = F.random_erase(nn.Variable.from_numpy_array(xa), **ERASE)
    ref.forward()
    # a leaf, a persistent intermediate, a view of a leaf: never overwritten
    leaf = nn.Variable.from_numpy_array(xa)
    y = F.random_erase(leaf, inplace=True, **ERASE)
    y.forward()
    np.testing.assert_array_equal(y.d, ref.d)
    np.testing.assert_array_equal(leaf.d, xa)
    leaf = nn.Variable.from_numpy_array(xa)
    h = F.identity(leaf)
    h.persistent = True
    y = F.random_erase(h, inplace=True, **ERASE)
    y.forward()
    np.testing.assert_array_equal(y.d, ref.d)
    np.testing.assert_array_equal(h.d, xa)
    leaf = nn.Variable.from_numpy_array(xa.reshape(20, 75))
    y = F.random_erase(F.reshape(leaf, xa.shape), inplace=True, **ERASE)
    y.forward()
    np.testing.assert_array_equal(y.d, ref.d)
    np.testing.assert_array_equal(leaf.d, xa.reshape(20, 75))
    # another consumer of x sees x, whichever runs first
    for first in (True, False):
        leaf = nn.Variable.from_numpy_array(xa)
        h = F.identity(leaf)
        if first:
            other = F.mul_scalar(h, 2.0)
        y = F.random_erase(h, inplace=True, **ERASE)
        if not first:
            other = F.mul_scalar(h, 2.0)
        F.sink(y, other).forward()
        np.testing.assert_array_equal(y.d, ref.d)
        np.testing.assert_allclose(other.d, 2 * xa, rtol=1e-6)
    # a producer whose backward reads its output (exp) keeps it
    leaf = nn.Variable.from_numpy_array(xa, need_grad=True)
    h = F.exp(leaf)
    y = F.random_erase(h, inplace=True, **ERASE)
    y.forward()
    np.testing.assert_allclose(h.d, np.exp(xa), rtol=1e-6)
    g = randn(*xa.shape)
    leaf.g = 0
    y.backward(g)
    er = y.d != h.d
    assert er.any()
    np.testing.assert_allclose(leaf.g, np.where(er, 0, g) * np.exp(xa), rtol=1e-5)


# --------------------------------------------------------------------------
# image_augmentation

def test_image_augmentation_identity_and_crop():
    xa = randn(2, 3, 6, 8)
    y = F.image_augmentation(nn.Variable.from_numpy_array(xa))
    y.forward()
    np.testing.assert_allclose(y.d, xa, atol=1e-6)
    y = F.image_augmentation(nn.Variable.from_numpy_array(xa), shape=(2, 3, 4, 4))
    y.forward()
    np.testing.assert_allclose(y.d, xa[:, :, 1:5, 2:6], atol=1e-6)


def test_image_augmentation_flips_and_pad():
    xa = randn(40, 2, 5, 5)
    y = F.image_augmentation(nn.Variable.from_numpy_array(xa), flip_lr=True, flip_ud=True,
                             seed=3)
    y.forward()
    kinds = set()
    for b in range(40):
        hits = [(i, j) for i in (0, 1) for j in (0, 1)
                if np.allclose(y.d[b], np.flip(xa[b], [a for a, f in ((1, i), (2, j)) if f]),
                               atol=1e-5)]
        assert hits
        kinds.add(hits[0])
    assert len(kinds) == 4
    y = F.image_augmentation(nn.Variable.from_numpy_array(xa), shape=(40, 2, 3, 3),
                             pad=(1, 1), seed=4)
    y.forward()
    for b in range(40):
        assert any(np.allclose(y.d[b], xa[b, :, i:i + 3, j:j + 3], atol=1e-5)
                   for i in range(3) for j in range(3))


def test_image_augmentation_photometric():
    xa = np.full((400, 3, 4, 4), 0.5, np.float32)
    y = F.image_augmentation(nn.Variable.from_numpy_array(xa), brightness=0.2, seed=5)
    y.forward()
    d = y.d - 0.5
    assert np.abs(d).max() <= 0.2 + 1e-6
    assert np.allclose(d, d[:, :1, :1, :1], atol=1e-6)     # one value per image
    moments_ok(d[:, 0, 0, 0].astype(np.float64), 0.0, 0.04 / 3)
    y = F.image_augmentation(nn.Variable.from_numpy_array(xa), contrast=2.0,
                             contrast_center=0.25, contrast_each=True, seed=6)
    y.forward()
    k = (y.d[:, :, 0, 0] - 0.25) / 0.25
    assert k.min() >= 0.5 - 1e-5 and k.max() <= 2.0 + 1e-5
    assert not np.allclose(k[:, 0], k[:, 1])
    y = F.image_augmentation(nn.Variable.from_numpy_array(xa), noise=0.1, seed=7)
    y.forward()
    moments_ok((y.d - 0.5).ravel().astype(np.float64), 0.0, 0.01)


def test_image_augmentation_rotation_scale_keeps_centre():
    xa = randn(10, 1, 7, 7)
    y = F.image_augmentation(nn.Variable.from_numpy_array(xa), angle=0.5, min_scale=0.8,
                             max_scale=1.3, aspect_ratio=1.2, seed=8)
    y.forward()
    np.testing.assert_allclose(y.d[:, :, 3, 3], xa[:, :, 3, 3], atol=1e-5)
    assert not np.allclose(y.d, xa)


def test_image_augmentation_errors():
    xa = randn(2, 3, 6, 8)
    check_raises(F.image_augmentation, [xa], {'shape': (2, 4, 6, 8)},
                 match_words=['image_augmentation', 'shape'])
    check_raises(F.image_augmentation, [xa], {'min_scale': 2.0, 'max_scale': 1.0},
                 match_words=['min_scale'])
    check_raises(F.image_augmentation, [xa], {'contrast': 0.0}, match_words=['contrast'])
    check_raises(F.image_augmentation, [xa], {'pad': (1, -1)}, match_words=['pad'])
    check_raises(F.image_augmentation, [xa], {'distortion': -0.1}, match_words=['distortion'])


# --------------------------------------------------------------------------
# image_augmentation(distortion=...): the radial distortion of NNabla, per image
# k = exp(U(-d, d)) - 1 and each normalised output offset p -> p (1 + k|p|^2) / (1 + k).

def _coord_image(b, h, w):
    """Images whose two channels hold each pixel's row and column."""
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32),
                         indexing='ij')
    return np.broadcast_to(np.stack([yy, xx]), (b, 2, h, w)).copy()


def _augment(xa, **kw):
    y = F.image_augmentation(nn.Variable.from_numpy_array(xa), **kw)
    y.forward()
    return y.d.copy()


def test_image_augmentation_distortion_zero_and_seed():
    xa = randn(6, 3, 7, 9)
    kw = dict(angle=0.3, min_scale=0.8, max_scale=1.2, aspect_ratio=1.3, flip_lr=True,
              pad=(1, 2), brightness=0.1, contrast=1.5, noise=0.05, seed=4)
    np.testing.assert_array_equal(_augment(xa, distortion=0.0, **kw), _augment(xa, **kw))
    a = _augment(xa, distortion=0.3, **kw)
    np.testing.assert_array_equal(a, _augment(xa, distortion=0.3, **kw))   # a fixed seed
    assert not np.allclose(a, _augment(xa, distortion=0.3, **dict(kw, seed=5)))
    assert not np.allclose(a, _augment(xa, **kw))
    nncy.random.seed(3)
    b = _augment(xa, distortion=0.3)
    nncy.random.seed(3)
    np.testing.assert_array_equal(b, _augment(xa, distortion=0.3))
    # no gradient, as for the other transforms: x.g gets nothing added
    x = nn.Variable.from_numpy_array(xa, need_grad=True)
    y = F.image_augmentation(x, distortion=0.3, seed=1)
    y.forward()
    x.g = 1.0
    y.backward(randn(*y.shape))
    assert (x.g == 1).all()


def test_image_augmentation_distortion_keeps_values_in_range():
    # scale 2 keeps every (distorted, rotated) sample inside the image
    kw = dict(distortion=0.3, min_scale=2.0, max_scale=2.0, angle=0.5, flip_lr=True,
              flip_ud=True, seed=2)
    xa = np.broadcast_to(np.array([0.5, -2.0, 3.0], np.float32)[None, :, None, None],
                         (8, 3, 9, 9)).copy()
    np.testing.assert_allclose(_augment(xa, **kw), xa, rtol=1e-6)      # constant stays
    xa = randn(8, 3, 9, 9)
    y = _augment(xa, **kw)
    lo, hi = xa.min(axis=(1, 2, 3)), xa.max(axis=(1, 2, 3))
    assert (y.min(axis=(1, 2, 3)) >= lo - 1e-5).all() and (y.max(axis=(1, 2, 3)) <= hi + 1e-5).all()


@pytest.mark.parametrize('d', [0.1, 0.4])
def test_image_augmentation_distortion_moves_samples_radially_and_boundedly(d):
    b, h, w, s = 300, 9, 13, 2.0
    xa = _coord_image(b, h, w)
    base = _augment(xa, min_scale=s, max_scale=s, seed=7)
    y = _augment(xa, min_scale=s, max_scale=s, distortion=d, seed=7)
    # the pixel values are the sampled (row, column): undistorted, the centred grid over s
    oy = np.arange(h) - (h - 1) / 2.0
    ox = np.arange(w) - (w - 1) / 2.0
    np.testing.assert_allclose(base[:, 0] - (h - 1) / 2.0, np.broadcast_to(oy[:, None] / s,
                               (b, h, w)), atol=1e-5)
    dy, dx = y[:, 0] - base[:, 0], y[:, 1] - base[:, 1]
    # bounded: within (e^d - 1) half sizes (over the scale), so within d * size
    assert np.abs(dy).max() <= (np.exp(d) - 1) * (h - 1) / 2 / s + 1e-4
    assert np.abs(dx).max() <= (np.exp(d) - 1) * (w - 1) / 2 / s + 1e-4
    assert np.abs(dy).max() <= d * h and np.abs(dx).max() <= d * w
    # radial with one factor per image: the centre and the border midpoints stay
    np.testing.assert_allclose(dy[:, h // 2, w // 2], 0, atol=1e-5)
    np.testing.assert_allclose(dx[:, h // 2, w // 2], 0, atol=1e-5)
    np.testing.assert_allclose(dy[:, [0, -1], w // 2], 0, atol=1e-4)
    np.testing.assert_allclose(dx[:, h // 2, [0, -1]], 0, atol=1e-4)
    py = oy[:, None] / ((h - 1) / 2.0)
    px = ox[None, :] / ((w - 1) / 2.0)
    r2 = py ** 2 + px ** 2
    f_corner = (y[:, 0, 0, 0] - (h - 1) / 2.0) * s / oy[0]     # (1 + 2k) / (1 + k)
    k = (f_corner - 1) / (2 - f_corner)
    assert (k >= np.exp(-d) - 1 - 1e-4).all() and (k <= np.exp(d) - 1 + 1e-4).all()
    assert (k < -d / 4).any() and (k > d / 4).any()       # both signs occur
    model = (1 + k[:, None, None] * r2) / (1 + k[:, None, None])
    np.testing.assert_allclose(y[:, 0] - (h - 1) / 2.0, oy[:, None] * model / s, atol=1e-4)
    np.testing.assert_allclose(y[:, 1] - (w - 1) / 2.0, ox[None, :] * model / s, atol=1e-4)
    # k = exp(u) - 1 with u uniform in [-d, d]
    u = np.log1p(k)
    assert abs(u.mean()) < 4 * d / math.sqrt(3 * b)
    assert abs(u.var() - d * d / 3) < 0.3 * d * d / 3


def test_image_augmentation_distortion_with_rotation_and_flips_is_bounded():
    b, h, w, s, d = 100, 11, 11, 2.0, 0.3
    xa = _coord_image(b, h, w)
    kw = dict(min_scale=s, max_scale=s, angle=0.7, flip_lr=True, flip_ud=True, seed=12)
    base = _augment(xa, **kw)
    y = _augment(xa, distortion=d, **kw)
    moved = np.hypot(y[:, 0] - base[:, 0], y[:, 1] - base[:, 1])
    assert moved.max() <= math.sqrt(2) * (np.exp(d) - 1) * (h - 1) / 2 / s + 1e-4
    assert moved.max() > 0.05
    np.testing.assert_allclose(moved[:, h // 2, w // 2], 0, atol=1e-5)


def test_streams_are_counter_based_philox():
    """The global generator and per-node seeded streams use Philox, so a
    fixed seed repeats its samples and seed -1 follows nncy.random.seed."""
    import nncy.random as R
    assert isinstance(R.prng._bit_generator, np.random.Philox)
    a = F.rand(shape=(4,), seed=5)
    b = F.rand(shape=(4,), seed=5)
    nn.forward_all([a, b])
    np.testing.assert_array_equal(a.d, b.d)
    np.testing.assert_array_equal(
        a.d, np.random.RandomState(np.random.Philox(5)).random_sample(4).astype(np.float32))
    R.seed(7)
    c = F.rand(shape=(3,))
    c.forward()
    first = c.d.copy()
    R.seed(7)
    c.forward()
    np.testing.assert_array_equal(c.d, first)
