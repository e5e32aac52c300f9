"""CPU implementations of the stochastic functions: rand, randint, randn,
rand_binomial, rand_beta, rand_gamma, dropout, random_choice, random_crop,
random_flip, random_shift, random_erase and image_augmentation.

Generators: ``seed=-1`` draws from the global ``nncy.random.prng`` (looked up at
each forward, so ``nncy.random.seed(n)`` resets it); any other seed gives the
function node its own Philox stream (``nncy.random.generator(seed)``), created with the node,
so two nodes built with one seed draw the same samples, and successive
forwards of one node continue its stream (as NNabla does).  Samples are drawn
with NumPy's vectorised generators."""
import numpy as np

from nncy import random as _random
from nncy._core import Impl, register, d32, dout, g32, gout, inplace_out
from nncy._cpu import store
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
        self._rng = None if seed == -1 else _random.generator(seed)

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


def _positive_parameter_sampler(type_name, method, a, b):
    """A sampler of ``rng.<method>(args[a], args[b], shape)``, both positive."""
    class Sampler(_Sampler):
        def check(self):
            for k in (a, b):
                if not self.args[k] > 0:
                    raise self.error(k, 'must be positive, got %r' % self.args[k])

        def sample(self, shape):
            return getattr(self.rng, method)(self.args[a], self.args[b], shape)
    Sampler.__name__ = Sampler.__qualname__ = type_name
    return register(type_name)(Sampler)


RandBeta = _positive_parameter_sampler('RandBeta', 'beta', 'alpha', 'beta')
RandGamma = _positive_parameter_sampler('RandGamma', 'gamma', 'k', 'theta')


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
        store(gout(inputs[0], accum[0]), g, accum[0])

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
            # one sorted search over all rows: row r's CDF is shifted by 2r
            shift = 2.0 * np.arange(self.b)[:, None]
            pos = np.searchsorted((cdf + shift).ravel(), (u + shift).ravel(), side='right')
            idx = np.minimum(pos.reshape(self.b, self.k) - np.arange(self.b)[:, None] * self.n,
                             self.n - 1)
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
        store(gout(x, accum[0]), g, accum[0])

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
        store(gout(x, accum[0]), g, accum[0])

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
        store(gout(x, accum[0]), g.reshape(x.shape), accum[0])

    def grad_depends_input_data(self, i, j):
        return False


def _pair(impl, name, lo_min=None):
    v = impl.args[name]
    if v is None or len(v) != 2 or not v[0] <= v[1] or (lo_min is not None and v[0] < lo_min):
        raise impl.error(name, 'must be a (low, high) pair with low <= high%s, got %r'
                         % ('' if lo_min is None else ' and low >= %g' % lo_min, v))
    return v


@register('RandomErase')
class RandomErase(_Random):
    """Per sample (and per feature when share is False) up to n boxes over the two
    spatial axes, each erased with probability prob and filled with uniform values
    from replacements.  Layout: (samples..., features..., H, W), or with
    channel_last (samples..., H, W, C).

    inplace=True writes the erased values into x's buffer, which y then shares
    (as in NNabla), wherever the engine's in-place rules allow it (x an
    intermediate that owns its buffer, feeds only this function and is not read
    by its producer's backward); elsewhere (a leaf, a persistent variable, a
    view) it is a hint and y gets its own buffer.  Backward never reads x, so
    the gradient is the same either way."""
    def setup(self, inputs):
        s = inputs[0].shape
        base = _sample_axes(self, s)
        a = self.args
        if not 0 <= a['prob'] <= 1:
            raise self.error('prob', 'must lie in [0, 1], got %r' % a['prob'])
        self.area = _pair(self, 'area_ratios', 0.0)
        self.aspect = _pair(self, 'aspect_ratios', 1e-12)
        self.repl = _pair(self, 'replacements')
        self.n = 1 if a['n'] is None else a['n']
        if self.n < 1:
            raise self.error('n', 'must be at least 1, got %r' % a['n'])
        feat = s[base:]
        if a['channel_last']:
            if len(feat) != 3:
                raise self.error('channel_last', 'needs samples of shape (H, W, C) after '
                                 'base_axis=%d, got x of shape %s' % (base, s))
            self.h, self.w, self.c = feat
        else:
            if len(feat) < 2:
                raise self.error('x', 'needs two spatial axes after base_axis=%d, got shape %s'
                                 % (base, s))
            self.h, self.w = feat[-2:]
            self.c = _prod(feat[:-2])
        self.b = _prod(s[:base])
        self.make_rng()
        self.mask = None
        return [s]

    def _mask(self):
        """Erased pixels, (B, C or 1, H, W) booleans."""
        rng, a = self.rng, self.args
        c = 1 if a['share'] else self.c
        shp = (self.b, self.n, c)
        h, w = self.h, self.w
        erase = rng.random_sample(shp) < a['prob']
        area = rng.uniform(self.area[0], self.area[1], shp) * h * w
        ratio = rng.uniform(self.aspect[0], self.aspect[1], shp)
        he = np.minimum(np.sqrt(area * ratio).astype(np.int64), h)
        we = np.minimum(np.sqrt(area / ratio).astype(np.int64), w)
        ye = (rng.random_sample(shp) * (h - he + 1)).astype(np.int64)
        xe = (rng.random_sample(shp) * (w - we + 1)).astype(np.int64)
        rows = np.arange(h)
        cols = np.arange(w)
        in_r = (rows >= ye[..., None]) & (rows < (ye + he)[..., None])     # (B, n, c, H)
        in_c = (cols >= xe[..., None]) & (cols < (xe + we)[..., None])     # (B, n, c, W)
        box = in_r[..., :, None] & in_c[..., None, :] & erase[..., None, None]
        return box.any(axis=1)

    def _layout(self, m, shape):
        """The (B, C or 1, H, W) mask in x's layout, broadcastable to x's shape."""
        if self.args['channel_last']:
            return m.transpose(0, 2, 3, 1).reshape(shape[:len(shape) - 3] + m.shape[2:]
                                                   + m.shape[1:2])
        lead = shape[:len(shape) - 2]
        if m.shape[1] == 1:
            return m.reshape(shape[:self.args['base_axis']] + (1,) * (len(lead) - self.args[
                'base_axis']) + m.shape[2:])
        return m.reshape(shape)

    def forward(self, inputs, outputs):
        x, y = inputs[0], outputs[0]
        m = np.broadcast_to(self._layout(self._mask(), x.shape), x.shape)
        self.mask = m
        lo, hi = self.repl
        vals = self.rng.uniform(lo, hi, x.shape)
        xa = d32(x)
        ya = inplace_out(x, y) if self.args['inplace'] else dout(y)
        if ya is not xa:
            ya[...] = xa
        np.copyto(ya, vals, where=m, casting='unsafe')

    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        gy = g32(outputs[0])
        g = np.where(self.mask, 0, gy) if self.args['ste_fine_grained'] else gy
        store(gout(inputs[0], accum[0]), g, accum[0])

    def grad_depends_input_data(self, i, j):
        return False

    def inplace_data(self, i):
        return int(self.args['inplace'])


@register('ImageAugmentation')
class ImageAugmentation(_Random):
    """Per image (the axes before the last three; the third-last is the channel
    axis): a random similarity transform (scale, aspect ratio, rotation, flips,
    translation by up to pad pixels), preceded by a random radial lens
    distortion when distortion > 0, sampled bilinearly into the output size
    (zero outside the input), then random brightness, contrast and noise.  No
    gradient flows back (as in NNabla).

    Distortion, as in NNabla: per image k = exp(u) - 1 with u uniform in
    [-distortion, distortion]; each output pixel's offset p from the output
    centre, normalised so the border pixels' centres lie at +-1 on each axis
    (NNabla measures from size/2 in units of size/2; the centred pixel grid
    keeps flips exact), becomes p (1 + k |p|^2) / (1 + k) before the
    similarity transform.  The
    centre and the midpoints of the borders stay put, the corners (|p|^2 = 2)
    move outwards (k > 0) or inwards (k < 0), and no pixel moves by more than
    (e^distortion - 1) times half the output size along either axis."""
    def setup(self, inputs):
        s = inputs[0].shape
        a = self.args
        if len(s) < 2:
            raise self.error('x', 'must have at least two (spatial) axes, got shape %s' % (s,))
        shape = s if a['shape'] is None else tuple(a['shape'])
        if len(shape) < 2 or len(shape) > len(s) or \
                tuple(shape[:-2]) != s[len(s) - len(shape):-2] or min(shape[-2:]) < 1:
            raise self.error('shape', 'must be the output size, (..., H, W) with the leading '
                             'sizes of x (shape %s), got %r' % (s, a['shape']))
        pad = tuple(a['pad'])
        if len(pad) != 2 or min(pad) < 0:
            raise self.error('pad', 'must be two non-negative ints, got %r' % (pad,))
        if not 0 < a['min_scale'] <= a['max_scale']:
            raise self.error('min_scale', 'must satisfy 0 < min_scale <= max_scale, got %r, %r'
                             % (a['min_scale'], a['max_scale']))
        if not a['aspect_ratio'] >= 1.0:
            raise self.error('aspect_ratio', 'must be at least 1.0, got %r' % a['aspect_ratio'])
        if not a['contrast'] > 0:
            raise self.error('contrast', 'must be positive, got %r' % a['contrast'])
        for k in ('angle', 'distortion', 'brightness', 'noise'):
            if not a[k] >= 0:
                raise self.error(k, 'must not be negative, got %r' % a[k])
        self.oh, self.ow = shape[-2:]
        self.ih, self.iw = s[-2:]
        self.c = s[-3] if len(s) >= 3 else 1
        self.b = _prod(s[:-3]) if len(s) >= 3 else 1
        self.make_rng()
        return [s[:-2] + (self.oh, self.ow)]

    def _coords(self, rng):
        """Source (y, x) coordinates, each (B, oh, ow)."""
        a, b = self.args, self.b
        scale = rng.uniform(a['min_scale'], a['max_scale'], b)
        lr = np.log(a['aspect_ratio'])
        ratio = np.exp(rng.uniform(-lr, lr, b))
        sy, sx = scale / np.sqrt(ratio), scale * np.sqrt(ratio)
        th = rng.uniform(-a['angle'], a['angle'], b)
        fy = np.where(rng.random_sample(b) < 0.5, -1.0, 1.0) if a['flip_ud'] else np.ones(b)
        fx = np.where(rng.random_sample(b) < 0.5, -1.0, 1.0) if a['flip_lr'] else np.ones(b)
        py, px = a['pad']
        ty = rng.randint(-py, py + 1, b)
        tx = rng.randint(-px, px + 1, b)
        oy = (np.arange(self.oh) - (self.oh - 1) / 2.0)[None, :, None]
        ox = (np.arange(self.ow) - (self.ow - 1) / 2.0)[None, None, :]
        if a['distortion'] > 0:
            # drawn last of the geometric draws and only when asked, so the
            # other draws of a seeded stream stay where they were
            k = (np.exp(rng.uniform(-a['distortion'], a['distortion'], b)) - 1)[:, None, None]
            r2 = (oy / max((self.oh - 1) / 2.0, 0.5)) ** 2 + \
                (ox / max((self.ow - 1) / 2.0, 0.5)) ** 2
            f = (1 + k * r2) / (1 + k)
            oy, ox = oy * f, ox * f
        c, s = np.cos(th)[:, None, None], np.sin(th)[:, None, None]
        # output offsets, rotated back, unscaled, unflipped, into the input
        ry = (c * oy - s * ox) / sy[:, None, None] * fy[:, None, None]
        rx = (s * oy + c * ox) / sx[:, None, None] * fx[:, None, None]
        return (ry + (self.ih - 1) / 2.0 + ty[:, None, None],
                rx + (self.iw - 1) / 2.0 + tx[:, None, None])

    def forward(self, inputs, outputs):
        rng, a = self.rng, self.args
        x = d32(inputs[0]).reshape(self.b, self.c, self.ih, self.iw)
        yy, xx = self._coords(rng)
        y0, x0 = np.floor(yy), np.floor(xx)
        wy, wx = (yy - y0)[:, None], (xx - x0)[:, None]
        y0, x0 = y0.astype(np.int64), x0.astype(np.int64)
        bi = np.arange(self.b)[:, None, None]
        out = np.zeros((self.b, self.c, self.oh, self.ow))
        for dy, dx, wgt in ((0, 0, (1 - wy) * (1 - wx)), (0, 1, (1 - wy) * wx),
                            (1, 0, wy * (1 - wx)), (1, 1, wy * wx)):
            r, q = y0 + dy, x0 + dx
            ok = (r >= 0) & (r < self.ih) & (q >= 0) & (q < self.iw)
            v = x[bi, :, np.clip(r, 0, self.ih - 1), np.clip(q, 0, self.iw - 1)]  # (B,oh,ow,C)
            out += np.moveaxis(v * ok[..., None], -1, 1) * wgt
        nb = (self.b, self.c if a['brightness_each'] else 1, 1, 1)
        if a['brightness'] > 0:
            out += rng.uniform(-a['brightness'], a['brightness'], nb)
        if a['contrast'] != 1.0:
            lc = np.log(a['contrast'])
            nc = (self.b, self.c if a['contrast_each'] else 1, 1, 1)
            k = np.exp(rng.uniform(-lc, lc, nc))
            out = (out - a['contrast_center']) * k + a['contrast_center']
        if a['noise'] > 0:
            out += rng.normal(0.0, a['noise'], out.shape)
        y = outputs[0]
        dout(y)[...] = out.reshape(y.shape)

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0] and not accum[0]:
            gout(inputs[0], False).fill(0)

    def grad_depends_input_data(self, i, j):
        return False
