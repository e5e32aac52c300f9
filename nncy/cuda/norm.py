"""cuda implementations of the normalization family (``nncy/_cpu_norm.py``):
batch (plain, fused, single-process sync), layer, instance and group
normalization, weight standardization, mean subtraction, clipping by value and
by norm, and PReLU.

Statistics and per-group sums are CuPy reductions over the normalized axes
(accumulated in float64), per-group coefficients are small CuPy arrays, and
the passes over the data are the kernels of ``kernels/norm.cu``: an element's
group (and its slot in a gamma / beta that varies along the normalized axes)
comes from its coordinates, so no layout needs a transposed copy."""
import numpy as np

from nncy import _cpu_norm as C
from nncy._core import dev_data, dev_data_out, dev_grad, dev_grad_out, register
from nncy.cuda._common import CopyForward, contiguous, cp, device, launch, store, sum_to

FILE = 'norm.cu'
F32 = np.float32
F64 = np.float64
RELU, WITH_Z, ELEM = 1, 2, 4        # flags of nncy_norm_fwd
MASK, ACCUM = 1, 2                  # flags of nncy_norm_bwd


def _strides(shape, target):
    """Element strides of a C-ordered array of ``target`` (``shape`` with 1
    along broadcast axes), 0 along those axes."""
    out, acc = [0] * len(shape), 1
    for d in range(len(shape) - 1, -1, -1):
        if target[d] != 1:
            out[d] = acc
            acc *= target[d]
    return out


def _index_meta(shape, groups, params=None):
    """(nd, meta) for the kernels: the sizes of ``shape`` with size-1 axes
    dropped and neighbours merged where both index maps allow it, then the
    strides of the group index (``groups``: the statistics shape) and of the
    parameter index (``params``, or none)."""
    params = params or (1,) * len(shape)
    tables = [_strides(shape, groups), _strides(shape, params)]
    dims = []   # [size, [group stride, param stride]] from outer to inner
    for d, n in enumerate(shape):
        if n == 1:
            continue
        st = [t[d] for t in tables]
        if dims and all(p == s * n for p, s in zip(dims[-1][1], st)):
            dims[-1][0] *= n
            dims[-1][1] = st
        else:
            dims.append([n, st])
    meta = [n for n, _ in dims] + [s[0] for _, s in dims] + [s[1] for _, s in dims]
    return len(dims), np.array(meta or [0], np.int64)


class _Indexed:
    """Kernel index metadata, uploaded once per node, device and layout."""

    def index(self, shape, groups, params=None):
        key = (cp.cuda.runtime.getDevice(), tuple(shape), tuple(groups),
               None if params is None else tuple(params))
        cache = self.__dict__.setdefault('_index_cache', {})
        if key not in cache:
            nd, meta = _index_meta(*key[1:])
            cache[key] = (np.int32(nd), cp.asarray(meta))
        return cache[key]

    def grouped_bwd(self, shape, groups, u, v, mask, a, b, center, c, out, accum):
        """out (+)= a[g] u' + b[g] (v - center[g]) + c[g] (u' = u, or u where
        mask > 0): a, b, center, c broadcast to the statistics shape ``groups``."""
        nd, meta = self.index(shape, groups)
        a, b, center, c = (_per_group(p, groups) for p in (a, b, center, c))
        flags = (MASK if mask is not None else 0) | (ACCUM if accum else 0)
        launch(FILE, 'nncy_norm_bwd<float>', out.size,
               (np.int64(out.size), nd, meta, u, v, u if mask is None else mask,
                a, b, center, c, out, np.int32(flags)))


def _per_group(p, shape):
    """A number or device array as a contiguous float32 array of ``shape``."""
    if not isinstance(p, cp.ndarray):
        return cp.full(shape, p, F32)
    return contiguous(cp.broadcast_to(p.astype(F32, copy=False), shape), F32)


def _f32(v, shape=None):
    """Data of Variable v on the device, contiguous float32 (reshaped)."""
    a = contiguous(dev_data(v), F32)
    return a if shape is None else a.reshape(shape)


# ---------------------------------------------------------------------------
# Normalizations


class _Norm(_Indexed):
    """Forward and backward of ``_cpu_norm._Normalization`` on the device,
    with the same ``configure`` (view, grp, mode, pview, batch_stat)."""

    def _reduced(self):
        return tuple(i for i in range(len(self.view)) if i not in self.grp.kept)

    def _stats(self, inputs, x):
        shape = self.grp.stats_shape
        if self.batch_stat:
            red = self._reduced()
            mean = x.mean(axis=red, dtype=F64, keepdims=True).astype(F32)
            var = x.var(axis=red, dtype=F64, keepdims=True).astype(F32)
            if self.running:
                self._update_running(inputs, mean, var)
        else:
            mean = _f32(self.input(inputs, 'mean'), shape)
            var = _f32(self.input(inputs, 'variance'), shape)
        rstd = (1.0 / cp.sqrt(var.astype(F64) + self.args['eps'])).astype(F32)
        return mean, var, rstd

    def _update_running(self, inputs, mean, var):
        """The running statistics, in place: decay, and the unbiased variance."""
        d = self.args['decay_rate']
        m = self.grp.m
        for name, new in (('mean', mean.astype(F64)), ('variance', var.astype(F64) * m / (m - 1))):
            v = self.input(inputs, name)
            if v is not None:
                a = dev_data(v)
                a[...] = (d * a.astype(F64) + (1 - d) * new.reshape(a.shape)).astype(a.dtype)

    def _params(self, inputs):
        g, b = self.input(inputs, 'gamma'), self.input(inputs, 'beta')
        return (None if g is None else _f32(g)), (None if b is None else _f32(b))

    def _per_group_mode(self, gamma, beta):
        return self.mode == 'group' or (gamma is None and beta is None)

    def forward(self, inputs, outputs):
        with device(self):
            view, stats = self.view, self.grp.stats_shape
            x = _f32(inputs[0], view)
            mean, var, rstd = self._stats(inputs, x)
            self.saved = (mean, var, rstd)
            gamma, beta = self._params(inputs)
            y = dev_data_out(outputs[0])
            z = self.input(inputs, 'z')
            if self._per_group_mode(gamma, beta):
                a = _per_group(rstd if gamma is None else rstd * gamma, stats)
                b = 0.0 if beta is None else beta
                pg = pb = a         # unused
                params = None
                flags = (RELU if self.relu else 0) | (WITH_Z if z is not None else 0)
            else:       # gamma and beta vary along the normalized axes
                a, b, params, flags = rstd, 0.0, self.pview, ELEM
                pg = cp.ones(params, F32) if gamma is None else gamma
                pb = cp.zeros(params, F32) if beta is None else beta
            nd, meta = self.index(view, stats, params)
            zd = x if z is None else _f32(z)
            launch(FILE, 'nncy_norm_fwd<float>', y.size,
                   (np.int64(y.size), nd, meta, x, zd, mean, a, _per_group(b, stats), pg, pb, y,
                    np.int32(flags)))
            if self.n_stat:
                dev_data_out(outputs[1])[...] = mean.reshape(outputs[1].shape)
                dev_data_out(outputs[2])[...] = var.reshape(outputs[2].shape)

    def backward(self, inputs, outputs, propagate_down, accum):
        pd = {n: propagate_down[k] for n, k in self.ix.items()}
        ac = {n: accum[k] for n, k in self.ix.items()}
        pd['x'], ac['x'] = propagate_down[0], accum[0]     # x, or w
        if not any(pd.get(n) for n in ('x', 'beta', 'gamma', 'z')):
            return
        with device(self):
            self._backward(inputs, outputs, pd, ac)

    def _backward(self, inputs, outputs, pd, ac):
        mean, var, rstd = self.saved
        view, stats, red = self.view, self.grp.stats_shape, self._reduced()
        x = _f32(inputs[0], view)
        dy = contiguous(dev_grad(outputs[0]), F32).reshape(view)
        ym = contiguous(dev_data(outputs[0]), F32).reshape(view) if self.relu else None
        gamma, beta = self._params(inputs)
        if pd.get('z'):
            z = self.input(inputs, 'z')
            store(dev_grad_out(z, ac['z']).reshape(view), cp.where(ym > 0, dy, F32(0)), ac['z'])
        sums = None
        if self._per_group_mode(gamma, beta):
            if pd.get('beta') or pd.get('gamma') or (pd['x'] and self.batch_stat):
                g = dy if ym is None else cp.where(ym > 0, dy, F32(0))
                sums = self._sums(g, x, mean, red)
            if pd.get('beta'):
                bv = self.input(inputs, 'beta')
                store(dev_grad_out(bv, ac['beta']), sum_to(sums[0].astype(F32), bv.shape),
                      ac['beta'])
            if pd.get('gamma'):
                gv = self.input(inputs, 'gamma')
                store(dev_grad_out(gv, ac['gamma']),
                      sum_to((sums[1] * rstd).astype(F32), gv.shape), ac['gamma'])
            if pd['x']:
                gs = 1.0 if gamma is None else _per_group(gamma, stats).astype(F64)
                self._dx(inputs[0], outputs, dy, x, ym, gs, sums, ac['x'])
            return
        # gamma and beta vary along the normalized axes
        pview = self.pview
        if pd.get('beta'):
            bv = self.input(inputs, 'beta')
            store(dev_grad_out(bv, ac['beta']).reshape(pview), sum_to(dy, pview), ac['beta'])
        if pd.get('gamma'):
            gv = self.input(inputs, 'gamma')
            xhat = (x - mean) * rstd
            store(dev_grad_out(gv, ac['gamma']).reshape(pview), sum_to(xhat * dy, pview),
                  ac['gamma'])
        if pd['x']:
            g = dy if gamma is None else dy * gamma.reshape(pview)
            sums = self._sums(g, x, mean, red) if self.batch_stat else None
            self._dx(inputs[0], outputs, g, x, None, 1.0, sums, ac['x'])

    @staticmethod
    def _sums(g, x, mean, red):
        """Per group: sum of g and of g (x - mean), in float64."""
        return (g.sum(axis=red, dtype=F64, keepdims=True),
                (g * (x - mean)).sum(axis=red, dtype=F64, keepdims=True))

    def _dx(self, xv, outputs, g, x, mask, gs, sums, acc):
        """dx (+)= ca g' + cb (x - mean) + cc per group: the gradient through
        the normalization, and through the statistics when computed from x."""
        mean, _, rstd = self.saved
        stats = self.grp.stats_shape
        r = rstd.astype(F64)
        ca = r * gs
        cb = cc = 0.0
        if self.batch_stat:
            M = F64(self.grp.m)
            su, suv = sums
            cb = -(r ** 3) * gs * suv / M
            cc = -ca * su / M
            if self.n_stat:
                cb = cb + 2.0 * dev_grad(outputs[2]).reshape(stats).astype(F64) / M
                cc = cc + dev_grad(outputs[1]).reshape(stats).astype(F64) / M
        dx = dev_grad_out(xv, acc).reshape(self.view)
        self.grouped_bwd(self.view, stats, g, x, mask, ca, cb, mean, cc, dx, acc)


@register('BatchNormalization', 'cuda')
class BatchNormalization(_Norm, C.BatchNormalization):
    pass


@register('FusedBatchNormalization', 'cuda')
class FusedBatchNormalization(_Norm, C.FusedBatchNormalization):
    pass


@register('SyncBatchNormalization', 'cuda')
class SyncBatchNormalization(_Norm, C.SyncBatchNormalization):
    pass


@register('LayerNormalization', 'cuda')
class LayerNormalization(_Norm, C.LayerNormalization):
    pass


@register('InstanceNormalization', 'cuda')
class InstanceNormalization(_Norm, C.InstanceNormalization):
    pass


@register('GroupNormalization', 'cuda')
class GroupNormalization(_Norm, C.GroupNormalization):
    pass


@register('WeightStandardization', 'cuda')
class WeightStandardization(_Norm, C.WeightStandardization):
    pass


# ---------------------------------------------------------------------------
# Mean subtraction


@register('MeanSubtraction', 'cuda')
class MeanSubtraction(C.MeanSubtraction):
    """The running mean and its counter t are updated on the device."""

    def forward(self, inputs, outputs):
        x, mean, t = inputs
        with device(self):
            rows, cols = self.grp.m, self.grp.groups
            xa = _f32(x, (rows, cols))
            rm = dev_data(mean).reshape(cols)
            if self.args['update_running_mean']:
                tv = dev_data(t)
                count = tv.reshape(()).astype(F64)
                old = rm.astype(F64)
                batch = xa.mean(axis=0, dtype=F64)
                rm[...] = (old + (batch - old) / (count + 1)).astype(rm.dtype)
                tv[...] = cp.minimum(count + 1, 2 ** 31 - 1).astype(tv.dtype)
            y = dev_data_out(outputs[0]).reshape(rows, cols)
            cp.subtract(xa, rm.astype(F32, copy=False), out=y)

    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        x, mean, t = inputs
        with device(self):
            gy = contiguous(dev_grad(outputs[0]), F32)
            if self.args['update_running_mean']:
                count = dev_data(t).reshape(()).astype(F64)
                gy = gy * (1.0 - 1.0 / (count * self.grp.m)).astype(F32)
            store(dev_grad_out(x, accum[0]), gy, accum[0])


# ---------------------------------------------------------------------------
# Clipping


def _clamp_parts(x, lo, hi):
    """(max(x, lo), min(that, hi)) as std::max / std::min (a NaN x stays NaN)."""
    t = cp.where(x < lo, lo, x)
    return t, cp.where(hi < t, hi, t)


def _bounds(inputs):
    return _f32(inputs[1]), _f32(inputs[2])


@register('ClipByValue', 'cuda')
class ClipByValue(C.ClipByValue):
    def forward(self, inputs, outputs):
        inputs = self.complete(inputs)[0]
        with device(self):
            dev_data_out(outputs[0])[...] = _clamp_parts(_f32(inputs[0]), *_bounds(inputs))[1]

    def backward(self, inputs, outputs, propagate_down, accum):
        if not any(propagate_down):
            return
        inputs, propagate_down, accum = self.complete(inputs, propagate_down, accum)
        with device(self):
            x = _f32(inputs[0])
            lo, hi = _bounds(inputs)
            gy = contiguous(dev_grad(outputs[0]), F32)
            below = x < lo
            passes = (~below & ~(hi < x),           # x itself
                      below & ~(hi < lo),           # lo
                      hi < _clamp_parts(x, lo, hi)[0])   # hi
            for i, v in enumerate(inputs):
                if propagate_down[i]:
                    g = cp.where(passes[i], gy, F32(0))
                    store(dev_grad_out(v, accum[i]), sum_to(g, tuple(v.shape)), accum[i])


@register('ClipGradByValue', 'cuda')
class ClipGradByValue(CopyForward, C.ClipGradByValue):
    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        inputs = self.complete(inputs)[0]
        with device(self):
            gy = contiguous(dev_grad(outputs[0]), F32)
            store(dev_grad_out(inputs[0], accum[0]), _clamp_parts(gy, *_bounds(inputs))[1],
                  accum[0])


class _ByNorm(_Indexed):
    """L2 norms per group of ``self.grp`` (the kept axes)."""

    def _norm(self, a):
        red = tuple(i for i in range(a.ndim) if i not in self.grp.kept)
        return cp.sqrt(cp.square(a).sum(axis=red, dtype=F64, keepdims=True))

    def _dot(self, a, b):
        red = tuple(i for i in range(a.ndim) if i not in self.grp.kept)
        return (a * b).sum(axis=red, dtype=F64, keepdims=True)

    def _scaled(self, u, v, a, b, out, accum):
        """out (+)= a u + b v per group."""
        self.grouped_bwd(u.shape, self.grp.stats_shape, u, v, None, a, b, 0.0, 0.0, out, accum)


@register('ClipByNorm', 'cuda')
class ClipByNorm(_ByNorm, C.ClipByNorm):
    def _clip(self, inputs):
        c = dev_data(inputs[1]).reshape(()).astype(F64)
        if not bool(c > 0):     # the one value of clip_norm, checked as the CPU does
            raise self.error('clip_norm', 'must be positive, got %r' % float(c))
        return c

    def forward(self, inputs, outputs):
        inputs = self.complete(inputs)[0]
        with device(self):
            c = self._clip(inputs)
            x = _f32(inputs[0])
            scale = (c / cp.maximum(self._norm(x), c)).astype(F32)
            cp.multiply(x, scale, out=dev_data_out(outputs[0]))

    def backward(self, inputs, outputs, propagate_down, accum):
        if not any(propagate_down):
            return
        inputs, propagate_down, accum = self.complete(inputs, propagate_down, accum)
        with device(self):
            c = self._clip(inputs)
            x = _f32(inputs[0])
            gy = contiguous(dev_grad(outputs[0]), F32).reshape(x.shape)
            n = self._norm(x)
            dot = self._dot(gy, x)
            big = n >= c        # maximum(n, c) passes n (ties too)
            ns = cp.where(big, n, 1.0)
            if propagate_down[0]:
                dx = dev_grad_out(inputs[0], accum[0]).reshape(x.shape)
                self._scaled(gy, x, c / cp.maximum(n, c), cp.where(big, -c * dot / ns ** 3, 0.0),
                             dx, accum[0])
            if propagate_down[1]:
                dc = cp.where(big, dot / ns, 0.0).sum().astype(F32)
                store(dev_grad_out(inputs[1], accum[1]), dc, accum[1])


@register('ClipGradByNorm', 'cuda')
class ClipGradByNorm(CopyForward, _ByNorm, C.ClipGradByNorm):
    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        with device(self):
            c = self.args['clip_norm']
            c = 1.0 if c is None else c
            gy = contiguous(dev_grad(outputs[0]), F32)
            n = self._norm(gy)
            scale = cp.where(n > 0, c / cp.where(n > 0, n, 1.0), 0.0)   # zero stays zero
            dx = dev_grad_out(inputs[0], accum[0])
            self._scaled(gy, gy, scale, 0.0, dx, accum[0])


# ---------------------------------------------------------------------------
# PReLU


@register('PReLU', 'cuda')
class PReLU(C.PReLU):
    def _geometry(self):
        _, outer, channels, inner = self.pattern
        return outer, channels, inner

    def forward(self, inputs, outputs):
        x, w = inputs
        with device(self):
            _, channels, inner = self._geometry()
            y = dev_data_out(outputs[0])
            launch(FILE, 'nncy_prelu_fwd<float>', y.size,
                   (np.int64(y.size), np.int64(channels), np.int64(inner), _f32(x),
                    _f32(w), y))

    def backward(self, inputs, outputs, propagate_down, accum):
        if not any(propagate_down):
            return
        x, w = inputs
        with device(self):
            outer, channels, inner = self._geometry()
            xa, wa = _f32(x), _f32(w)
            gy = contiguous(dev_grad(outputs[0]), F32)
            if propagate_down[0]:
                dx = dev_grad_out(x, accum[0])
                launch(FILE, 'nncy_prelu_bwd<float>', dx.size,
                       (np.int64(dx.size), np.int64(channels), np.int64(inner), xa, wa, gy, dx,
                        np.int32(accum[0])))
            if propagate_down[1]:
                dw = cp.where(xa < 0, gy * xa, F32(0)).reshape(outer, channels, inner)
                store(dev_grad_out(w, accum[1]).reshape(channels),
                      dw.sum(axis=(0, 2), dtype=F64).astype(F32), accum[1])
