"""cuda implementations of the stochastic functions: rand, randint, randn,
rand_binomial, rand_beta, rand_gamma, dropout, random_choice, random_crop,
random_flip, random_shift, random_erase and image_augmentation.

Samples come from the Philox4x32-10 kernels of ``rand.cu``.  The key of a
node is its seed when seed != -1 (so two nodes built with one seed repeat each
other), else two words drawn from the global ``nncy.random.prng`` at each
forward (so ``nncy.random.seed(n)`` makes runs repeat).  Each draw of a node
uses the next value of the node's counter, so successive forwards differ.
The streams are not the CPU's: the same seed gives other (equally
distributed) samples on the two backends."""
import numpy as np

from nncy import _cpu_random as R
from nncy import random as _random
from nncy._core import dev_data, dev_data_out, dev_grad, dev_grad_out, register
from nncy.cuda._common import contiguous, cp, device, launch, store

FILE = 'rand.cu'
F32 = np.float32
UNIFORM, NORMAL, BINOMIAL, GAMMA, BETA = range(5)
MAX_AXES = 8   # the index-map kernel's limit


class _Philox:
    """Mixed in before a CPU class of ``_cpu_random``: draws on the device."""

    def make_rng(self):
        R._Random.make_rng(self)   # checks the seed
        self._count = 0
        self._key = None

    def _begin(self):
        """Pick this forward's key (call at the start of every forward)."""
        seed = self.args['seed']
        if seed == -1:
            k = _random.prng.randint(0, 2 ** 32, size=2, dtype=np.int64)
            self._key = (np.uint32(k[0]), np.uint32(k[1]))
        else:
            self._key = (np.uint32(seed), np.uint32(0))

    def _counter(self):
        c = np.uint32(self._count & 0xFFFFFFFF)
        self._count += 1
        return c

    def _draw(self, shape, dist=UNIFORM, a=0.0, b=1.0, out=None):
        """A float32 device array of samples (into ``out`` when given)."""
        y = cp.empty(shape, F32) if out is None else out
        launch(FILE, 'nncy_rand_sample<%d>' % dist, y.size,
               (np.int64(y.size),) + self._key + (self._counter(), np.float64(a),
                                                  np.float64(b), y))
        return y

    def _uniform(self, shape, lo, hi):
        return self._draw(shape, UNIFORM, lo, hi)

    def _below(self, shape, counts):
        """Uniform int64 draws in [0, counts) (counts broadcasts to shape)."""
        counts = cp.asarray(counts).astype(np.int64)
        v = (self._draw(shape) * counts.astype(F32)).astype(np.int64)
        return cp.minimum(v, counts - 1)   # float rounding must not reach counts


def _map(src, out_shape, tables, backward=False, dst=None):
    """The index-map gather of ``rand.cu`` over arrays whose axis 0 counts
    samples: ``tables[d]`` is None (axis d as it is) or an int array
    (samples, out_shape[d]) of input coordinates.  Forward returns the gathered
    array of ``out_shape``; backward scatter-adds ``src`` (of out_shape) into
    ``dst`` (the input's shape, contiguous float32)."""
    nd = len(out_shape)
    if nd > MAX_AXES:
        raise ValueError('nncy.cuda: random index maps handle at most %d axes, got %d'
                         % (MAX_AXES, nd))
    in_shape = dst.shape if backward else src.shape
    strides, acc = [0] * nd, 1
    for d in range(nd - 1, -1, -1):
        strides[d] = acc
        acc *= in_shape[d]
    offs, parts, at = [], [], 0
    for t in tables:
        if t is None:
            offs.append(-1)
        else:
            offs.append(at)
            parts.append(t.astype(np.int64).ravel())
            at += t.size
    meta = cp.asarray(np.array(list(out_shape) + strides + offs, np.int64))
    table = cp.concatenate(parts) if parts else cp.zeros(1, np.int64)
    if not backward:
        dst = cp.empty(out_shape, F32)
    n = int(np.prod(out_shape))
    launch(FILE, 'nncy_rand_map<%d>' % int(backward), n,
           (np.int64(n), np.int32(nd), meta, table, contiguous(src, F32), dst))
    return dst


def _scatter_grad(x, gy, out_shape, tables, accum):
    """x's gradient (+)= the adjoint of the index map applied to gy."""
    g = cp.zeros((out_shape[0],) + tuple(x.shape[len(x.shape) - len(out_shape) + 1:]), F32)
    _map(gy.reshape(out_shape), out_shape, tables, backward=True, dst=g)
    store(dev_grad_out(x, accum), g.reshape(x.shape), accum)


# ---------------------------------------------------------------------------
# Samplers.

def _sampler(cpu, dist, a, b):
    """The cuda class of a CPU sampler: y = samples of ``dist`` with
    parameters args[a], args[b]."""
    class Sampler(_Philox, cpu):
        def forward(self, inputs, outputs):
            with device(self):
                self._begin()
                y = dev_data_out(outputs[0])
                if y.dtype == F32 and y.flags.c_contiguous:
                    self._draw(y.shape, dist, self.args[a], self.args[b], out=y)
                else:
                    y[...] = self._draw(y.shape, dist, self.args[a], self.args[b])
    Sampler.__name__ = Sampler.__qualname__ = cpu.__name__
    return register(cpu.__name__, 'cuda')(Sampler)


Rand = _sampler(R.Rand, UNIFORM, 'low', 'high')
Randn = _sampler(R.Randn, NORMAL, 'mu', 'sigma')
RandBinomial = _sampler(R.RandBinomial, BINOMIAL, 'n', 'p')
RandGamma = _sampler(R.RandGamma, GAMMA, 'k', 'theta')
RandBeta = _sampler(R.RandBeta, BETA, 'alpha', 'beta')


@register('Randint', 'cuda')
class Randint(_Philox, R.Randint):
    def forward(self, inputs, outputs):
        with device(self):
            self._begin()
            y = outputs[0]
            lo, hi = int(self.args['low']), int(self.args['high'])
            v = cp.empty(y.shape, np.int32)
            launch(FILE, 'nncy_rand_int', v.size,
                   (np.int64(v.size),) + self._key + (self._counter(), np.int64(lo),
                                                      np.uint64(hi - lo), v))
            y.data.set_array(v)


# ---------------------------------------------------------------------------
# Dropout and random choice.

@register('Dropout', 'cuda')
class Dropout(_Philox, R.Dropout):
    def forward(self, inputs, outputs):
        with device(self):
            self._begin()
            x = inputs[0]
            p = self.args['p']
            keep = self._draw(x.shape) >= F32(p)
            self.mask = keep.astype(F32) * F32(1.0 / (1.0 - p))
            y = dev_data_out(outputs[0])
            y[...] = dev_data(x).astype(F32, copy=False) * self.mask

    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        if self.mask is None:
            raise RuntimeError('dropout: backward before forward (no mask drawn yet)')
        with device(self):
            g = dev_grad(outputs[0]).astype(F32, copy=False) * self.mask
            store(dev_grad_out(inputs[0], accum[0]), g, accum[0])


@register('RandomChoice', 'cuda')
class RandomChoice(_Philox, R.RandomChoice):
    """With replacement: inverse-CDF sampling of every row at once.  Without:
    the k smallest of -log(u) / w per row (Efraimidis and Spirakis), which
    draws as weighted sampling one value after another does."""

    def forward(self, inputs, outputs):
        with device(self):
            self._begin()
            x, w = inputs
            b, n, k = self.b, self.n, self.k
            wv = dev_data(w).reshape(b, n).astype(np.float64)
            if not bool(cp.isfinite(wv).all()) or bool((wv < 0).any()):
                raise self.error('w', 'must hold finite, non-negative weights')
            tot = wv.sum(axis=1, keepdims=True)
            if bool((tot <= 0).any()):
                raise self.error('w', 'must have a positive sum in every row')
            prob = wv / tot
            if self.args['replace']:
                cdf = cp.cumsum(prob, axis=1)
                cdf[:, -1] = 1.0
                u = self._draw((b, k)).astype(np.float64)
                # one sorted search over all rows: row r's CDF is shifted by 2r
                shift = 2.0 * cp.arange(b, dtype=np.float64)[:, None]
                pos = cp.searchsorted((cdf + shift).ravel(), (u + shift).ravel(), side='right')
                idx = cp.minimum(pos.reshape(b, k) - cp.arange(b)[:, None] * n, n - 1)
            else:
                if bool(((prob > 0).sum(axis=1) < k).any()):
                    raise self.error('w', 'has fewer than %d non-zero weights in a row, needed '
                                     'for draws without replacement' % k)
                e = -cp.log(self._draw((b, n), UNIFORM, 1.0, 0.0).astype(np.float64))
                keys = cp.where(prob > 0, e / cp.maximum(prob, 1e-300), np.inf)
                idx = cp.argsort(keys, axis=1)[:, :k]
            self.idx = idx.astype(np.int64)
            y = _map(dev_data(x).reshape(b, n), (b, k), [None, self.idx])
            dev_data_out(outputs[0])[...] = y.reshape(outputs[0].shape)

    def backward(self, inputs, outputs, propagate_down, accum):
        with device(self):
            gy = dev_grad(outputs[0]).reshape(self.b, self.k)
            for i, v in enumerate(inputs):
                if not propagate_down[i]:
                    continue
                if i == 0:   # each drawn value's gradient goes back where it came from
                    _scatter_grad(v, gy, (self.b, self.k), [None, self.idx], accum[i])
                elif not accum[i]:
                    dev_grad_out(v, False)[...] = 0


# ---------------------------------------------------------------------------
# Per-sample crops, flips and shifts: index maps per axis.

class _Mapped(_Philox):
    """forward: y = x gathered through the maps that ``_tables`` draws;
    backward scatters gy back through the same maps."""

    def _views(self, x_shape, y_shape):
        return (self.m,) + tuple(x_shape[self.base:]), (self.m,) + tuple(y_shape[self.base:])

    def forward(self, inputs, outputs):
        with device(self):
            self._begin()
            x, y = inputs[0], outputs[0]
            xs, ys = self._views(x.shape, y.shape)
            self.tables = self._tables(xs, ys)
            out = _map(dev_data(x).reshape(xs), ys, self.tables)
            dev_data_out(y)[...] = out.reshape(y.shape)

    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        with device(self):
            x, y = inputs[0], outputs[0]
            xs, ys = self._views(x.shape, y.shape)
            _scatter_grad(x, dev_grad(y), ys, self.tables, accum[0])


@register('RandomCrop', 'cuda')
class RandomCrop(_Mapped, R.RandomCrop):
    def _tables(self, xs, ys):
        lead = self.lead - self.base + 1   # first cropped axis of the views
        room = [n - c for n, c in zip(xs[lead:], self.crop)]
        tables = [None] * lead
        if room:
            off = self.offsets = self._below((self.m, len(room)),
                                             np.array(room, np.int64) + 1)
            for d, c in enumerate(self.crop):
                tables.append(off[:, d:d + 1] + cp.arange(c, dtype=np.int64)[None, :])
        return tables


@register('RandomFlip', 'cuda')
class RandomFlip(_Mapped, R.RandomFlip):
    def _tables(self, xs, ys):
        tables = [None] * len(xs)
        if self.axes:
            self.flips = self._draw((self.m, len(self.axes))) < F32(0.5)
        for j, ax in enumerate(self.axes):
            a = ax - self.base + 1
            i = cp.arange(xs[a], dtype=np.int64)[None, :]
            prev = tables[a] if tables[a] is not None else cp.broadcast_to(i, (self.m, xs[a]))
            tables[a] = cp.where(self.flips[:, j:j + 1], xs[a] - 1 - prev, prev)
        return tables


@register('RandomShift', 'cuda')
class RandomShift(_Mapped, R.RandomShift):
    def _tables(self, xs, ys):
        lim = self.shifts
        tables = [None] * (len(xs) - len(lim))
        if not lim:
            return tables
        lv = np.array(lim, np.int64)
        self.drawn = self._below((self.m, len(lim)), 2 * lv + 1) - cp.asarray(lv)
        for d, n in enumerate(xs[len(tables):]):
            i = cp.arange(n, dtype=np.int64)[None, :] - self.drawn[:, d:d + 1]
            if self.args['border_mode'] == 'nearest':
                i = cp.clip(i, 0, n - 1)
            elif n == 1:
                i = cp.zeros_like(i)
            else:   # mirror into [0, n) without repeating the edge
                period = 2 * (n - 1)
                i = cp.abs(i) % period
                i = cp.where(i >= n, period - i, i)
            tables.append(i)
        return tables


# ---------------------------------------------------------------------------
# Random erasing and image augmentation.

@register('RandomErase', 'cuda')
class RandomErase(_Philox, R.RandomErase):
    def inplace_data(self, i):
        return 0   # y always gets its own buffer on the device

    def _mask(self):
        """Erased pixels, (B, C or 1, H, W) booleans (as the CPU class)."""
        a = self.args
        c = 1 if a['share'] else self.c
        shp = (self.b, self.n, c)
        h, w = self.h, self.w
        erase = self._draw(shp) < F32(a['prob'])
        area = self._uniform(shp, *self.area) * F32(h * w)
        ratio = self._uniform(shp, *self.aspect)
        he = cp.minimum(cp.sqrt(area * ratio).astype(np.int64), h)
        we = cp.minimum(cp.sqrt(area / ratio).astype(np.int64), w)
        ye = self._below(shp, h - he + 1)
        xe = self._below(shp, w - we + 1)
        rows = cp.arange(h)
        cols = cp.arange(w)
        in_r = (rows >= ye[..., None]) & (rows < (ye + he)[..., None])     # (B, n, c, H)
        in_c = (cols >= xe[..., None]) & (cols < (xe + we)[..., None])     # (B, n, c, W)
        box = in_r[..., :, None] & in_c[..., None, :] & erase[..., None, None]
        return box.any(axis=1)

    def forward(self, inputs, outputs):
        with device(self):
            self._begin()
            x, y = inputs[0], outputs[0]
            m = self._layout(self._mask(), x.shape)
            self.mask = m
            vals = self._uniform(x.shape, *self.repl)
            dev_data_out(y)[...] = cp.where(m, vals, dev_data(x).astype(F32, copy=False))

    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        with device(self):
            gy = dev_grad(outputs[0]).astype(F32, copy=False)
            g = cp.where(self.mask, F32(0), gy) if self.args['ste_fine_grained'] else gy
            store(dev_grad_out(inputs[0], accum[0]), g, accum[0])


@register('ImageAugmentation', 'cuda')
class ImageAugmentation(_Philox, R.ImageAugmentation):
    def _coords(self):
        """Source (y, x) coordinates, each (B, oh, ow) float32 (as the CPU class)."""
        a, b = self.args, self.b
        scale = self._uniform(b, a['min_scale'], a['max_scale'])
        lr = float(np.log(a['aspect_ratio']))
        ratio = cp.exp(self._uniform(b, -lr, lr))
        sy, sx = scale / cp.sqrt(ratio), scale * cp.sqrt(ratio)
        th = self._uniform(b, -a['angle'], a['angle'])
        one = cp.ones(b, F32)
        fy = cp.where(self._draw(b) < F32(0.5), F32(-1), F32(1)) if a['flip_ud'] else one
        fx = cp.where(self._draw(b) < F32(0.5), F32(-1), F32(1)) if a['flip_lr'] else one
        py, px = a['pad']
        ty = (self._below(b, 2 * py + 1) - py).astype(F32)
        tx = (self._below(b, 2 * px + 1) - px).astype(F32)
        oy = (cp.arange(self.oh, dtype=F32) - F32((self.oh - 1) / 2.0))[None, :, None]
        ox = (cp.arange(self.ow, dtype=F32) - F32((self.ow - 1) / 2.0))[None, None, :]
        if a['distortion'] > 0:
            k = (cp.exp(self._uniform(b, -a['distortion'], a['distortion'])) - 1)[:, None, None]
            r2 = (oy / F32(max((self.oh - 1) / 2.0, 0.5))) ** 2 + \
                (ox / F32(max((self.ow - 1) / 2.0, 0.5))) ** 2
            f = (1 + k * r2) / (1 + k)
            oy, ox = oy * f, ox * f
        c, s = cp.cos(th)[:, None, None], cp.sin(th)[:, None, None]
        # output offsets, rotated back, unscaled, unflipped, into the input
        ry = (c * oy - s * ox) / sy[:, None, None] * fy[:, None, None]
        rx = (s * oy + c * ox) / sx[:, None, None] * fx[:, None, None]
        yy = ry + F32((self.ih - 1) / 2.0) + ty[:, None, None]
        xx = rx + F32((self.iw - 1) / 2.0) + tx[:, None, None]
        shape = (b, self.oh, self.ow)
        return (contiguous(cp.broadcast_to(yy, shape), F32),
                contiguous(cp.broadcast_to(xx, shape), F32))

    def forward(self, inputs, outputs):
        with device(self):
            self._begin()
            a = self.args
            x = contiguous(dev_data(inputs[0]), F32)
            yy, xx = self._coords()
            out = cp.empty((self.b, self.c, self.oh, self.ow), F32)
            launch(FILE, 'nncy_rand_bilinear', out.size,
                   (np.int64(out.size), np.int64(self.c), np.int64(self.ih),
                    np.int64(self.iw), np.int64(self.oh), np.int64(self.ow), yy, xx, x, out))
            nb = (self.b, self.c if a['brightness_each'] else 1, 1, 1)
            if a['brightness'] > 0:
                out += self._uniform(nb, -a['brightness'], a['brightness'])
            if a['contrast'] != 1.0:
                lc = float(np.log(a['contrast']))
                nc = (self.b, self.c if a['contrast_each'] else 1, 1, 1)
                k = cp.exp(self._uniform(nc, -lc, lc))
                cc = F32(a['contrast_center'])
                out = (out - cc) * k + cc
            if a['noise'] > 0:
                out += self._draw(out.shape, NORMAL, 0.0, a['noise'])
            dev_data_out(outputs[0])[...] = out.reshape(outputs[0].shape)

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0] and not accum[0]:
            with device(self):
                dev_grad_out(inputs[0], False)[...] = 0
