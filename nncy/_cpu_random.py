"""CPU implementations of the stochastic functions: rand, randint, randn,
rand_binomial, rand_beta, rand_gamma, dropout, random_choice, random_crop,
random_flip and random_shift.

Generators: ``seed=-1`` draws from the global ``nncy.random.prng`` (looked up at
each forward, so ``nncy.random.seed(n)`` resets it); any other seed gives the
function node its own ``numpy.random.RandomState(seed)``, created with the node,
so two nodes built with one seed draw the same samples, and successive
forwards of one node continue its stream (as NNabla does).  Samples are drawn
with NumPy's vectorised generators."""
import numpy as np

from nncy import random as _random
from nncy._core import Impl, register, d32, dout, g32, gout
from nncy._cpu_array import _gather_axes, _scatter_axes, shift_maps, _BORDER_MODES

F32 = np.float32


def _prod(shape):
    n = 1
    for s in shape:
        n *= s
    return n


class _Random(Impl):
    def make_rng(self):
        seed = self.args['seed']
        if seed < -1 or seed >= 2 ** 32:
            raise self.error('seed', 'must be -1 (global generator) or in [0, 2**32), got %d'
                             % seed)
        self._rng = None if seed == -1 else np.random.RandomState(seed)

    @property
    def rng(self):
        return self._rng if self._rng is not None else _random.prng


class _Sampler(_Random):
    """A function without inputs that fills its output with samples."""
    def setup(self, inputs):
        shape = tuple(self.args['shape'])
        if any(s < 0 for s in shape):
            raise self.error('shape', 'must not hold negative sizes, got %r' % (shape,))
        self.check()
        self.make_rng()
        return [shape]

    def check(self):
        pass

    def forward(self, inputs, outputs):
        y = outputs[0]
        dout(y)[...] = self.sample(y.shape)

    def backward(self, inputs, outputs, propagate_down, accum):
        pass


@register('Rand')
class Rand(_Sampler):
    def check(self):
        if not self.args['low'] < self.args['high']:
            raise self.error('high', 'must exceed low=%r, got %r'
                             % (self.args['low'], self.args['high']))

    def sample(self, shape):
        lo, hi = self.args['low'], self.args['high']
        return lo + (hi - lo) * self.rng.random_sample(shape)


@register('Randint')
class Randint(_Sampler):
    def check(self):
        if not self.args['low'] < self.args['high']:
            raise self.error('high', 'must exceed low=%r, got %r'
                             % (self.args['low'], self.args['high']))

    def forward(self, inputs, outputs):
        y = outputs[0]
        v = self.rng.randint(self.args['low'], self.args['high'], size=y.shape)
        y.data.set_array(np.asarray(v, dtype=np.int32).reshape(y.shape))


@register('Randn')
class Randn(_Sampler):
    def check(self):
        if not self.args['sigma'] >= 0:
            raise self.error('sigma', 'must not be negative, got %r' % self.args['sigma'])

    def sample(self, shape):
        return self.rng.normal(self.args['mu'], self.args['sigma'], shape)


@register('RandBinomial')
class RandBinomial(_Sampler):
    def check(self):
        if self.args['n'] < 0:
            raise self.error('n', 'must not be negative, got %d' % self.args['n'])
        if not 0 <= self.args['p'] <= 1:
            raise self.error('p', 'must lie in [0, 1], got %r' % self.args['p'])

    def sample(self, shape):
        return self.rng.binomial(self.args['n'], self.args['p'], shape)


@register('RandBeta')
class RandBeta(_Sampler):
    def check(self):
        for k in ('alpha', 'beta'):
            if not self.args[k] > 0:
                raise self.error(k, 'must be positive, got %r' % self.args[k])

    def sample(self, shape):
        return self.rng.beta(self.args['alpha'], self.args['beta'], shape)


@register('RandGamma')
class RandGamma(_Sampler):
    def check(self):
        for k in ('k', 'theta'):
            if not self.args[k] > 0:
                raise self.error(k, 'must be positive, got %r' % self.args[k])

    def sample(self, shape):
        return self.rng.gamma(self.args['k'], self.args['theta'], shape)


@register('Dropout')
class Dropout(_Random):
    def setup(self, inputs):
        p = self.args['p']
        if not 0 <= p < 1:
            raise self.error('p', 'must lie in [0, 1), got %r' % p)
        self.make_rng()
        self.mask = None
        return [inputs[0].shape]

    def forward(self, inputs, outputs):
        x = inputs[0]
        p = self.args['p']
        # mask holds 1/(1-p) where kept, 0 where dropped
        keep = self.rng.random_sample(x.shape) >= p
        self.mask = keep.astype(F32) * F32(1.0 / (1.0 - p))
        np.multiply(d32(x), self.mask, out=dout(outputs[0]))

    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        if self.mask is None:
            raise RuntimeError('dropout: backward before forward (no mask drawn yet)')
        g = g32(outputs[0]) * self.mask
        gx = gout(inputs[0], accum[0])
        if accum[0]:
            gx += g
        else:
            gx[...] = g

    def grad_depends_input_data(self, i, j):
        return False


@register('RandomChoice')
class RandomChoice(_Random):
    def setup(self, inputs):
        x, w = inputs
        if len(x.shape) == 0 or x.shape != w.shape:
            raise self.error('w', 'must have the shape of x (at least 1-D), got x %s and w %s'
                             % (x.shape, w.shape))
        shape = tuple(self.args['shape'])
        if any(s < 0 for s in shape):
            raise self.error('shape', 'must not hold negative sizes, got %r' % (shape,))
        self.k = _prod(shape)
        self.n = x.shape[-1]
        self.b = _prod(x.shape[:-1])
        if not self.args['replace'] and self.k > self.n:
            raise self.error('shape', 'asks for %d draws without replacement from %d values'
                             % (self.k, self.n))
        self.make_rng()
        self.idx = None
        return [x.shape[:-1] + shape]

    def forward(self, inputs, outputs):
        x, w = inputs
        wv = d32(w).reshape(self.b, self.n).astype(np.float64)
        if not np.isfinite(wv).all() or (wv < 0).any():
            raise self.error('w', 'must hold finite, non-negative weights')
        tot = wv.sum(axis=1, keepdims=True)
        if (tot <= 0).any():
            raise self.error('w', 'must have a positive sum in every row')
        prob = wv / tot
        replace = self.args['replace']
        if not replace and ((prob > 0).sum(axis=1) < self.k).any():
            raise self.error('w', 'has fewer than %d non-zero weights in a row, needed for '
                             'draws without replacement' % self.k)
        rng = self.rng
        if replace:   # inverse-CDF sampling of all rows at once
            cdf = np.cumsum(prob, axis=1)
            cdf[:, -1] = 1.0
            u = rng.random_sample((self.b, self.k))
            idx = (u[:, :, None] >= cdf[:, None, :]).sum(axis=2)
            idx = np.minimum(idx, self.n - 1)
        else:
            idx = np.stack([rng.choice(self.n, self.k, replace=False, p=pr) for pr in prob]) \
                if self.b else np.zeros((0, self.k), np.int64)
        self.idx = idx
        y = dout(outputs[0]).reshape(self.b, self.k)
        y[...] = np.take_along_axis(d32(x).reshape(self.b, self.n), idx, 1)

    def backward(self, inputs, outputs, propagate_down, accum):
        gy = g32(outputs[0]).reshape(self.b, self.k)
        for i, v in enumerate(inputs):
            if not propagate_down[i]:
                continue
            g = np.zeros((self.b, self.n), F32)
            if i == 0:   # x: each drawn value's gradient goes back to where it came from
                for j in range(self.k):
                    np.add.at(g, (np.arange(self.b), self.idx[:, j]), gy[:, j])
            gx = gout(v, accum[i]).reshape(self.b, self.n)
            if accum[i]:
                gx += g
            else:
                gx[...] = g

    def grad_depends_input_data(self, i, j):
        return False


def _sample_axes(impl, shape):
    base = impl.args['base_axis']
    if not 0 <= base <= len(shape):
        raise impl.error('base_axis', 'must lie in [0, %d] for x of shape %s, got %d'
                         % (len(shape), shape, base))
    return base


@register('RandomCrop')
class RandomCrop(_Random):
    def setup(self, inputs):
        s = inputs[0].shape
        base = _sample_axes(self, s)
        shape = self.args['shape']
        shape = tuple(s[base:]) if shape is None else tuple(shape)
        if len(shape) > len(s) - base:
            raise self.error('shape', '%r has more axes than the samples of x (shape %s, '
                             'base_axis=%d)' % (shape, s, base))
        lead = len(s) - len(shape)
        if any(c < 0 or c > n for c, n in zip(shape, s[lead:])):
            raise self.error('shape', '%r must fit inside the last axes of x (shape %s)'
                             % (shape, s))
        self.base, self.lead, self.crop = base, lead, shape
        self.m = _prod(s[:base])
        self.make_rng()
        self.offsets = None
        return [s[:lead] + shape]

    def _views(self, x):
        """One (source window) per sample, over x reshaped (m, ...)."""
        xs = x.reshape((self.m,) + x.shape[self.base:])
        k = self.lead - self.base
        for i in range(self.m):
            sl = (i,) + (slice(None),) * k + tuple(
                slice(o, o + c) for o, c in zip(self.offsets[i], self.crop))
            yield i, xs, sl

    def forward(self, inputs, outputs):
        x = inputs[0]
        room = np.array([n - c for n, c in zip(x.shape[self.lead:], self.crop)], np.int64)
        self.offsets = (self.rng.random_sample((self.m, len(room))) * (room + 1)).astype(
            np.int64) if len(room) else np.zeros((self.m, 0), np.int64)
        y = dout(outputs[0]).reshape((self.m,) + outputs[0].shape[self.base:])
        xd = d32(x)
        for i, xs, sl in self._views(xd):
            y[i] = xs[sl]

    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        x = inputs[0]
        gy = g32(outputs[0]).reshape((self.m,) + outputs[0].shape[self.base:])
        g = np.zeros(x.shape, F32)
        for i, gs, sl in self._views(g):
            gs[sl] = gy[i]
        gx = gout(x, accum[0])
        if accum[0]:
            gx += g
        else:
            gx[...] = g

    def grad_depends_input_data(self, i, j):
        return False


@register('RandomFlip')
class RandomFlip(_Random):
    def setup(self, inputs):
        s = inputs[0].shape
        base = _sample_axes(self, s)
        axes = self.args['axes']
        axes = [len(s) - 1] if axes is None else list(axes)
        for a in axes:
            if not base <= (a % len(s) if -len(s) <= a < len(s) else -1) < len(s):
                raise self.error('axes', 'must name sample axes in [%d, %d) of x (shape %s), '
                                 'got %r' % (base, len(s), s, tuple(axes)))
        self.axes = [a % len(s) for a in axes]
        self.m = _prod(s[:base])
        self.base = base
        self.make_rng()
        self.flips = None
        return [s]

    def _apply(self, a):
        """a with each sample flipped along the drawn axes (an involution)."""
        a = a.reshape((self.m,) + a.shape[self.base:])
        for j, ax in enumerate(self.axes):
            f = self.flips[:, j].reshape((self.m,) + (1,) * (a.ndim - 1))
            a = np.where(f, np.flip(a, ax - self.base + 1), a)
        return a

    def forward(self, inputs, outputs):
        self.flips = self.rng.random_sample((self.m, len(self.axes))) < 0.5
        y = outputs[0]
        dout(y)[...] = self._apply(d32(inputs[0])).reshape(y.shape)

    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        x = inputs[0]
        # flips along distinct axes commute, so the same flips undo them
        g = self._apply(g32(outputs[0])).reshape(x.shape)
        gx = gout(x, accum[0])
        if accum[0]:
            gx += g
        else:
            gx[...] = g

    def grad_depends_input_data(self, i, j):
        return False


@register('RandomShift')
class RandomShift(_Random):
    def setup(self, inputs):
        s = inputs[0].shape
        base = _sample_axes(self, s)
        shifts = self.args['shifts']
        shifts = (0,) * (len(s) - base) if shifts is None else tuple(shifts)
        if len(shifts) > len(s) - base or any(v < 0 for v in shifts):
            raise self.error('shifts', 'must hold at most %d non-negative amounts for x of '
                             'shape %s with base_axis=%d, got %r' % (len(s) - base, s, base,
                                                                      shifts))
        if self.args['border_mode'] not in _BORDER_MODES:
            raise self.error('border_mode', 'must be nearest or reflect, got %r'
                             % (self.args['border_mode'],))
        self.shifts = shifts
        self.base = base
        self.m = _prod(s[:base])
        self.make_rng()
        self.drawn = None
        return [s]

    def _maps(self, i, shape):
        return shift_maps(shape, tuple(int(v) for v in self.drawn[i]),
                          self.args['border_mode'])

    def forward(self, inputs, outputs):
        x = d32(inputs[0])
        lim = np.array(self.shifts, np.int64)
        self.drawn = (np.floor(self.rng.random_sample((self.m, len(lim))) * (2 * lim + 1))
                      .astype(np.int64) - lim) if len(lim) else np.zeros((self.m, 0), np.int64)
        xs = x.reshape((self.m,) + x.shape[self.base:])
        y = dout(outputs[0]).reshape(xs.shape)
        for i in range(self.m):
            y[i] = _gather_axes(xs[i], self._maps(i, xs.shape[1:]))

    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        x = inputs[0]
        inner = x.shape[self.base:]
        gy = g32(outputs[0]).reshape((self.m,) + inner)
        g = np.empty((self.m,) + inner, F32)
        for i in range(self.m):
            g[i] = _scatter_axes(gy[i], self._maps(i, inner), inner)
        gx = gout(x, accum[0])
        if accum[0]:
            gx += g.reshape(x.shape)
        else:
            gx[...] = g.reshape(x.shape)

    def grad_depends_input_data(self, i, j):
        return False
