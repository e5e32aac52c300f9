"""CPU implementations of the normalization functions (batch, fused batch,
sync batch, layer, instance and group normalization, weight standardization,
mean subtraction), clipping by value and by norm, and PReLU.

All of them see their input through :class:`_Grouping`: statistics over every
axis but some kept ones, computed by the Rust kernels of ``rust/src/norm.rs``
on an ``(p, a, c, b)`` view (group ``(p, c)``), or on a transposed copy when
the kept axes do not fit that view.  Per-group coefficients (a few values per
channel) are computed here with NumPy in float64; every pass over the data is
a Rust kernel.

Normalizations: with ``xhat = (x - mean) * rstd`` and ``rstd = 1 / sqrt(var +
eps)`` over each group of ``M`` elements, ``y = xhat * gamma + beta``.  When
gamma and beta vary per group (batch and instance normalization) the affine
map is fused into the normalizing pass; otherwise (layer and group
normalization, whose gamma and beta vary along the normalized axes) it is
applied afterwards by the broadcasting pointwise kernels.  The gradient with
respect to x, with ``g = dy * gamma`` and the gradients ``dmean``, ``dvar`` of
the statistics outputs (``output_stat``), is

    dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) + dmean / M
         + 2 * dvar * (x - mean) / M

written as one pass ``dx = ca * dy + cb * (x - mean) + cc`` per group after a
pass that sums ``g`` and ``g * (x - mean)``.
"""
import numpy as np

from nncy import _kernels as K
from nncy._core import Impl, register, d32, dout, g32, gout, sum_to
from nncy._table import BY_NAME

F32 = np.float32
F64 = np.float64
_NO_PARAMS = np.zeros(1, F32)
_MUL2 = BY_NAME['mul2'].code
_ADD2 = BY_NAME['add2'].code


def _prod(shape):
    n = 1
    for s in shape:
        n *= s
    return n


# The (p, a, c, b) view for each sequence of kept (K) and reduced (R) runs of
# axes, given the run sizes.
_FORMS = {
    '': lambda s: (1, 1, 1, 1),
    'K': lambda s: (1, 1, s[0], 1),
    'R': lambda s: (1, 1, 1, s[0]),
    'KR': lambda s: (1, 1, s[0], s[1]),
    'RK': lambda s: (1, s[0], s[1], 1),
    'RKR': lambda s: (1, s[0], s[1], s[2]),
    'KRK': lambda s: (s[0], s[1], s[2], 1),
    'KRKR': lambda s: (s[0], s[1], s[2], s[3]),
}


class _Grouping:
    """Groups of an array of ``shape``: one per index of the ``kept`` axes,
    holding the elements along the other axes, numbered in C order of the kept
    axes (the order of ``stats_shape``, the shape with the other axes 1)."""

    def __init__(self, shape, kept):
        self.shape = tuple(shape)
        kept = set(kept)
        self.kept = sorted(kept)
        nd = len(self.shape)
        self.stats_shape = tuple(n if i in kept else 1 for i, n in enumerate(self.shape))
        self.groups = _prod(self.stats_shape)
        self.m = _prod(n for i, n in enumerate(self.shape) if i not in kept)
        runs = []
        for i, n in enumerate(self.shape):
            if n == 1:
                continue
            k = i in kept
            if runs and runs[-1][0] == k:
                runs[-1][1] *= n
            else:
                runs.append([k, n])
        key = ''.join('K' if k else 'R' for k, _ in runs)
        self.perm = None
        if key in _FORMS:
            self.pattern = _FORMS[key]([n for _, n in runs])
        else:
            self.perm = ([i for i in range(nd) if i in kept]
                         + [i for i in range(nd) if i not in kept])
            self.tshape = tuple(self.shape[i] for i in self.perm)
            self.inv = tuple(int(i) for i in np.argsort(self.perm))
            self.pattern = (1, 1, self.groups, self.m)

    def gather(self, name, a):
        """``a`` (of ``shape``) laid out for the kernels."""
        if self.perm is None or a is None:
            return a
        t = np.empty(self.tshape, F32)
        K.strided_copy(name, a.transpose(self.perm), t)
        return t

    def buffer(self, out):
        """Where a kernel writes a result meant for ``out``."""
        return out if self.perm is None else np.empty(self.tshape, F32)

    def scatter(self, name, buf, out, accum=False):
        """out (+)= buf, where buf came from :meth:`buffer` and was written
        without accumulation unless no transpose is needed."""
        if self.perm is not None:
            K.strided_copy(name, buf.reshape(self.tshape).transpose(self.inv), out, accum)


def _axes(impl, arg, values, nd, allow_empty=True):
    """Distinct non-negative axes from ``values`` (int or sequence), checked."""
    if isinstance(values, (int, np.integer)):
        values = (values,)
    out = []
    for a in values:
        if not -nd <= a < nd:
            raise impl.error(arg, 'must hold axes in [%d, %d) for a %d-D input, got %r'
                             % (-nd, nd, nd, tuple(values)))
        out.append(a % nd)
    if len(set(out)) != len(out):
        raise impl.error(arg, 'repeats an axis: %r' % (tuple(values),))
    if not out and not allow_empty:
        raise impl.error(arg, 'must name at least one axis')
    return out


def _axis(impl, arg, a, nd):
    if a is None or not -nd <= a < nd:
        raise impl.error(arg, 'must lie in [%d, %d) for a %d-D input, got %r'
                         % (-nd, nd, nd, a))
    return a % nd


def _f32(v):
    return np.ascontiguousarray(v, dtype=F32)


def _zeros(n):
    return np.zeros(n, F32)


# ---------------------------------------------------------------------------
# Normalizations


class _Normalization(Impl):
    """Shared forward and backward.  ``configure`` (per function) checks the
    arguments and sets:

    view     the shape x is seen in (x.shape, or a reshape of it)
    grp      the _Grouping of the view
    mode     'group': gamma / beta broadcast to the statistics shape;
             'elem': they broadcast to the view (pview: their view shape)
    batch_stat, relu (fused ReLU with optional residual z), running (update
    the running mean / variance inputs)
    """
    relu = False
    running = False

    def setup(self, inputs):
        self.ix = {}
        for i in self.spec.inputs:
            if i.name not in self.omitted:
                self.ix[i.name] = len(self.ix)
        x = inputs[0]
        self.batch_stat = True
        self.mode = 'group'
        self.pview = None
        self.configure(inputs, x.shape)
        self.n_stat = 2 if self.args.get('output_stat') else 0
        shapes = [tuple(x.shape)]
        if self.n_stat:
            shapes += [self.grp.stats_shape] * 2
        return shapes

    def input(self, inputs, name):
        k = self.ix.get(name)
        return None if k is None else inputs[k]

    def check_params(self, inputs, want, names=('beta', 'gamma')):
        x = inputs[0]
        for n in names:
            v = self.input(inputs, n)
            if v is not None and tuple(v.shape) != tuple(want):
                raise self.error(n, 'must have shape %s for x of shape %s, got %s'
                                 % (want, tuple(x.shape), tuple(v.shape)))

    # ---- parameters as kernels want them
    def _group_param(self, v):
        """A gamma / beta Variable as one value per group."""
        return _f32(np.broadcast_to(d32(v), self.grp.stats_shape)).reshape(-1)

    def _stats(self, name, inputs, xg):
        grp = self.grp
        eps = self.args['eps']
        if self.batch_stat:
            mean, var = np.empty(grp.groups, F32), np.empty(grp.groups, F32)
            K.norm_moments(name, xg, grp.pattern, mean, var)
            self.update_running(inputs, mean, var)
        else:
            mean = _f32(d32(self.input(inputs, 'mean')).reshape(-1))
            var = _f32(d32(self.input(inputs, 'variance')).reshape(-1))
        with np.errstate(all='ignore'):
            rstd = (1.0 / np.sqrt(var.astype(F64) + eps)).astype(F32)
        return mean, var, rstd

    def update_running(self, inputs, mean, var):
        pass

    def forward(self, inputs, outputs):
        name = self.spec.name
        grp = self.grp
        x = d32(inputs[0]).reshape(self.view)
        xg = grp.gather(name, x)
        mean, var, rstd = self._stats(name, inputs, xg)
        self.saved = (mean, var, rstd)
        y = dout(outputs[0]).reshape(self.view)
        gamma, beta = self.input(inputs, 'gamma'), self.input(inputs, 'beta')
        buf = grp.buffer(y)
        if self.mode == 'group' or (gamma is None and beta is None):
            a = rstd if gamma is None else (rstd * self._group_param(gamma)).astype(F32)
            b = _zeros(grp.groups) if beta is None else self._group_param(beta)
            z = self.input(inputs, 'z')
            zg = None if z is None else grp.gather(name, d32(z).reshape(self.view))
            K.norm_affine(name, xg, grp.pattern, mean, a, b, zg, self.relu, buf)
            grp.scatter(name, buf, y)
        else:
            K.norm_affine(name, xg, grp.pattern, mean, rstd, _zeros(grp.groups), None,
                          False, buf)
            grp.scatter(name, buf, y)
            if gamma is not None:
                K.binary(name, _MUL2, y, d32(gamma).reshape(self.pview), y, _NO_PARAMS)
            if beta is not None:
                K.binary(name, _ADD2, y, d32(beta).reshape(self.pview), y, _NO_PARAMS)
        if self.n_stat:
            dout(outputs[1]).reshape(-1)[...] = mean
            dout(outputs[2]).reshape(-1)[...] = var

    def backward(self, inputs, outputs, propagate_down, accum):
        name = self.spec.name
        grp = self.grp
        ix = self.ix
        pd = {n: propagate_down[k] for n, k in ix.items()}
        ac = {n: accum[k] for n, k in ix.items()}
        pd['x'], ac['x'] = propagate_down[0], accum[0]     # x, or w
        if not any(pd.get(n) for n in ('x', 'beta', 'gamma', 'z')):
            return
        mean, var, rstd = self.saved
        view = self.view
        x = d32(inputs[0]).reshape(view)
        dy = g32(outputs[0]).reshape(view)
        mask = d32(outputs[0]).reshape(view) if self.relu else None
        gamma, beta = self.input(inputs, 'gamma'), self.input(inputs, 'beta')
        if pd.get('z'):
            z = self.input(inputs, 'z')
            K.relu_mask(name, mask, dy, gout(z, ac['z']).reshape(view), ac['z'])
        xg = grp.gather(name, x)
        M = F64(grp.m)      # 0 for empty groups: NaN / inf, not an exception
        G = grp.groups
        if self.n_stat and self.batch_stat:
            dm = g32(outputs[1]).reshape(-1).astype(F64)
            dv = g32(outputs[2]).reshape(-1).astype(F64)
        else:
            dm = dv = 0.0
        r = rstd.astype(F64)
        if self.mode == 'group' or (gamma is None and beta is None):
            dyg, mg = grp.gather(name, dy), grp.gather(name, mask)
            su, suv = np.empty(G, F32), np.empty(G, F32)
            need_sums = pd.get('beta') or pd.get('gamma') or (pd['x'] and self.batch_stat)
            if need_sums:
                K.norm_sums(name, dyg, xg, mean, mg, grp.pattern, su, suv)
            if pd.get('beta'):
                sum_to(name, su.reshape(grp.stats_shape), tuple(beta.shape),
                       gout(beta, ac['beta']), ac['beta'])
            if pd.get('gamma'):
                sum_to(name, (suv * rstd).astype(F32).reshape(grp.stats_shape),
                       tuple(gamma.shape), gout(gamma, ac['gamma']), ac['gamma'])
            if pd['x']:
                gs = 1.0 if gamma is None else self._group_param(gamma).astype(F64)
                self._dx(name, inputs[0], dyg, xg, mg, mean, r * gs, gs, su, suv, dm, dv, M,
                         ac['x'])
            return
        # 'elem': gamma and beta vary along the normalized axes
        if pd.get('beta'):
            sum_to(name, dy, tuple(self.pview), gout(beta, ac['beta']).reshape(self.pview),
                   ac['beta'])
        if pd.get('gamma'):
            xhat = grp.buffer(np.empty(view, F32))
            K.norm_affine(name, xg, grp.pattern, mean, rstd, _zeros(G), None, False, xhat)
            if grp.perm is not None:
                t = np.empty(view, F32)
                grp.scatter(name, xhat, t)
                xhat = t
            xhat = xhat.reshape(view)
            K.binary(name, _MUL2, xhat, dy, xhat, _NO_PARAMS)
            sum_to(name, xhat, tuple(self.pview), gout(gamma, ac['gamma']).reshape(self.pview),
                   ac['gamma'])
        if pd['x']:
            if gamma is not None:
                g = np.empty(view, F32)
                K.binary(name, _MUL2, dy, d32(gamma).reshape(self.pview), g, _NO_PARAMS)
            else:
                g = dy
            gg = grp.gather(name, g)
            su, suv = np.empty(G, F32), np.empty(G, F32)
            K.norm_sums(name, gg, xg, mean, None, grp.pattern, su, suv)
            self._dx(name, inputs[0], gg, xg, None, mean, r, 1.0, su, suv, dm, dv, M, ac['x'])

    def _dx(self, name, xv, g, xg, mg, mean, ca, gs, su, suv, dm, dv, M, acc):
        """dx (+)= ca g' + cb (x - mean) + cc per group (g' = g masked by mg)."""
        grp = self.grp
        G = grp.groups
        ca = np.broadcast_to(np.asarray(ca, F64), (G,))
        if self.batch_stat:
            r = self.saved[2].astype(F64)
            with np.errstate(all='ignore'):
                cb = 2.0 * dv / M - r ** 3 * gs * suv.astype(F64) / M
                cc = -ca * su.astype(F64) / M + dm / M
        else:
            cb = cc = np.zeros(G)
        cb = np.broadcast_to(cb, (G,))
        cc = np.broadcast_to(cc, (G,))
        dx = gout(xv, acc).reshape(self.view)
        buf = grp.buffer(dx)
        K.norm_combine(name, g, xg, mg, grp.pattern, _f32(ca), _f32(cb), mean, _f32(cc), buf,
                       acc and grp.perm is None)
        grp.scatter(name, buf, dx, acc)

    def grad_depends_output_data(self, i, o):
        return self.relu and o == 0


class _BatchNorm(_Normalization):
    running = True

    def configure(self, inputs, shape):
        nd = len(shape)
        if nd == 0:
            raise self.error('x', 'must have at least one dimension, got shape ()')
        a = self.args
        axes = _axes(self, 'axes', a['axes'], nd, allow_empty=False)
        self.view = tuple(shape)
        self.grp = _Grouping(shape, axes)
        stats = self.grp.stats_shape
        self.check_params(inputs, stats, ('beta', 'gamma', 'mean', 'variance'))
        self.batch_stat = a['batch_stat']
        if a['output_stat'] and not self.batch_stat:
            raise self.error('output_stat', 'needs batch_stat=True (there are no batch '
                             'statistics to output otherwise)')
        missing = [n for n in ('mean', 'variance') if n not in self.ix]
        if not self.batch_stat and missing:
            raise self.error(missing[0], 'is required when batch_stat is False, got None')
        if self.batch_stat:
            for n in ('mean', 'variance'):
                v = self.input(inputs, n)
                if v is not None and v.parent is not None:
                    raise self.error(n, 'must not have a parent function when batch_stat is '
                                     'True (it is updated in place)')

    def updated_inputs(self):
        if not self.batch_stat:
            return ()
        return tuple(self.ix[n] for n in ('mean', 'variance') if n in self.ix)

    def update_running(self, inputs, mean, var):
        d = self.args['decay_rate']
        m = self.grp.m
        rm, rv = self.input(inputs, 'mean'), self.input(inputs, 'variance')
        with np.errstate(all='ignore'):
            if rm is not None:
                a = d32(rm).reshape(-1)
                a[...] = d * a.astype(F64) + (1 - d) * mean.astype(F64)
            if rv is not None:
                a = d32(rv).reshape(-1)
                a[...] = d * a.astype(F64) + (1 - d) * var.astype(F64) * m / (m - 1)


@register('BatchNormalization')
class BatchNormalization(_BatchNorm):
    pass


@register('FusedBatchNormalization')
class FusedBatchNormalization(_BatchNorm):
    relu = True

    def configure(self, inputs, shape):
        if self.args['nonlinearity'] != 'relu':
            raise self.error('nonlinearity', "must be 'relu', got %r" % (self.args['nonlinearity'],))
        _BatchNorm.configure(self, inputs, shape)
        z = self.input(inputs, 'z')
        if z is not None and tuple(z.shape) != tuple(shape):
            raise self.error('z', 'must have the shape of x, %s, got %s'
                             % (tuple(shape), tuple(z.shape)))


@register('SyncBatchNormalization')
class SyncBatchNormalization(_BatchNorm):
    def configure(self, inputs, shape):
        comm = self.args['comm']
        size = getattr(comm, 'size', 1) if comm is not None else 1
        if not isinstance(size, (int, np.integer)) or size > 1:
            raise self.error('comm', 'has %r processes; only a single-process communicator '
                             'is supported' % (size,), NotImplementedError)
        _BatchNorm.configure(self, inputs, shape)


@register('LayerNormalization')
class LayerNormalization(_Normalization):
    def configure(self, inputs, shape):
        nd = len(shape)
        batch = _axes(self, 'batch_axis', self.args['batch_axis'], nd)
        self.view = tuple(shape)
        self.grp = _Grouping(shape, batch)
        self.mode = 'elem'
        self.pview = tuple(1 if i in batch else n for i, n in enumerate(shape))
        self.check_params(inputs, self.pview)


@register('InstanceNormalization')
class InstanceNormalization(_Normalization):
    def configure(self, inputs, shape):
        nd = len(shape)
        ch = _axis(self, 'channel_axis', self.args['channel_axis'], nd)
        batch = _axes(self, 'batch_axis', self.args['batch_axis'], nd)
        if ch in batch:
            raise self.error('batch_axis', 'must not hold the channel axis %d' % ch)
        self.view = tuple(shape)
        self.grp = _Grouping(shape, batch + [ch])
        stats = self.grp.stats_shape
        for n in ('beta', 'gamma'):
            v = self.input(inputs, n)
            if v is None:
                continue
            s = tuple(v.shape)
            ok = len(s) == nd and s[ch] == shape[ch] and all(
                d == 1 or d == stats[i] for i, d in enumerate(s))
            if not ok:
                raise self.error(n, 'must have shape %s (or 1 along the batch axes) for x of '
                                 'shape %s, got %s' % (stats, tuple(shape), s))


@register('GroupNormalization')
class GroupNormalization(_Normalization):
    def configure(self, inputs, shape):
        nd = len(shape)
        g = self.args['num_groups']
        if g is None:
            raise self.error('num_groups', 'is required', TypeError)
        ch = _axis(self, 'channel_axis', self.args['channel_axis'], nd)
        batch = _axes(self, 'batch_axis', self.args['batch_axis'], nd)
        if ch in batch:
            raise self.error('batch_axis', 'must not hold the channel axis %d' % ch)
        c = shape[ch]
        if g <= 0 or c % g:
            raise self.error('num_groups', 'must be a positive divisor of the %d channels of x '
                             '(axis %d), got %d' % (c, ch, g))
        # x seen as (..., num_groups, channels / num_groups, ...)
        self.view = tuple(shape[:ch]) + (g, c // g) + tuple(shape[ch + 1:])
        kept = [a if a < ch else a + 1 for a in batch] + [ch]
        self.grp = _Grouping(self.view, kept)
        self.mode = 'elem'
        want = tuple(c if i == ch else 1 for i in range(nd))
        self.check_params(inputs, want)
        self.pview = (1,) * ch + (g, c // g) + (1,) * (nd - ch - 1)


@register('WeightStandardization')
class WeightStandardization(_Normalization):
    def configure(self, inputs, shape):
        nd = len(shape)
        ch = _axis(self, 'channel_axis', self.args['channel_axis'], nd)
        self.view = tuple(shape)
        self.grp = _Grouping(shape, [ch])


# ---------------------------------------------------------------------------
# Mean subtraction


def _scale(name, src, out, factor, accum):
    """out (+)= factor * src (one group over the whole array)."""
    n = src.size
    f = np.array([factor], F32)
    z = _zeros(1)
    K.norm_combine(name, src, None, None, (1, 1, 1, n), f, z, z, z, out, accum)


@register('MeanSubtraction')
class MeanSubtraction(Impl):
    def setup(self, inputs):
        x, mean, t = inputs
        shape = tuple(x.shape)
        nd = len(shape)
        base = self.args['base_axis']
        if not 0 <= base < nd:
            raise self.error('base_axis', 'must lie in [0, %d) for input x of shape %s, got %d'
                             % (nd, shape, base))
        if tuple(mean.shape) != shape[base:]:
            raise self.error('mean', 'must have shape %s (x.shape[base_axis:]), got %s'
                             % (shape[base:], tuple(mean.shape)))
        if _prod(t.shape) != 1:
            raise self.error('t', 'must hold one value (the update count), got shape %s'
                             % (tuple(t.shape),))
        self.grp = _Grouping(shape, range(base, nd))
        return [shape]

    def forward(self, inputs, outputs):
        name = self.spec.name
        x, mean, t = inputs
        xa = d32(x)
        rm = d32(mean).reshape(-1)
        grp = self.grp
        if self.args['update_running_mean']:
            su, suv = np.empty(grp.groups, F32), np.empty(grp.groups, F32)
            K.norm_sums(name, xa, None, None, None, grp.pattern, su, suv)
            tc = t.d.reshape(-1)
            count = int(tc[0])
            with np.errstate(all='ignore'):
                batch = su.astype(F64) / grp.m
                rm[...] = rm + (batch - rm) * (1.0 / (count + 1))
            tc[0] = min(count + 1, 2 ** 31 - 1)
        n = grp.groups
        K.norm_affine(name, xa, grp.pattern, rm, np.ones(n, F32), _zeros(n), None, False,
                      dout(outputs[0]))

    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        x, mean, t = inputs
        factor = 1.0
        if self.args['update_running_mean']:
            count = int(t.d.reshape(-1)[0])
            with np.errstate(all='ignore'):
                factor = 1.0 - 1.0 / F64(count * self.grp.m)
        _scale(self.spec.name, g32(outputs[0]), gout(x, accum[0]), factor, accum[0])

    def grad_depends_input_data(self, i, j):
        return j == 2

    def updated_inputs(self):
        return (1, 2) if self.args['update_running_mean'] else ()


# ---------------------------------------------------------------------------
# Clipping


class _NumberInputs(Impl):
    """Rows whose trailing inputs may be given as numbers (``#`` in the table):
    the wrapper makes those constant variables, so ``Function.forward`` /
    ``backward`` called with the caller's own variables only get the node's
    constants appended."""

    def keep_inputs(self, inputs):
        self.given = list(inputs)

    def complete(self, inputs, pd=None, accum=None):
        extra = self.given[len(inputs):]
        if not extra:
            return inputs, pd, accum
        more = [False] * len(extra)
        return (list(inputs) + extra, pd and list(pd) + more,
                accum and list(accum) + more)


class _Bounded(_NumberInputs):
    """Checks that the min and max inputs broadcast to x's shape."""

    def setup(self, inputs):
        self.keep_inputs(inputs)
        x = inputs[0]
        shape = tuple(x.shape)
        for v, n in zip(inputs[1:], ('min', 'max')):
            s = tuple(v.shape)
            ok = len(s) <= len(shape) and all(
                d == 1 or d == shape[len(shape) - len(s) + i] for i, d in enumerate(s))
            if not ok:
                raise self.error(n, 'must have the shape of x, %s, or broadcast to it, got %s'
                                 % (shape, s))
        return [shape]

    def bound(self, v, shape):
        """(array of x's shape or None, number) for the kernels."""
        a = d32(v)
        if a.size == 1:
            return None, float(a.reshape(-1)[0])
        if a.shape == shape:
            return a, 0.0
        t = np.empty(shape, F32)
        K.strided_copy(self.spec.name, np.broadcast_to(a, shape), t)
        return t, 0.0


@register('ClipByValue')
class ClipByValue(_Bounded):
    def forward(self, inputs, outputs):
        inputs = self.complete(inputs)[0]
        x = d32(inputs[0])
        (lo, lv), (hi, hv) = (self.bound(v, x.shape) for v in inputs[1:])
        K.clip(self.spec.name, x, lo, lv, hi, hv, dout(outputs[0]), False)

    def backward(self, inputs, outputs, propagate_down, accum):
        if not any(propagate_down):
            return
        inputs, propagate_down, accum = self.complete(inputs, propagate_down, accum)
        name = self.spec.name
        x = d32(inputs[0])
        (lo, lv), (hi, hv) = (self.bound(v, x.shape) for v in inputs[1:])
        gy = g32(outputs[0])
        for i, v in enumerate(inputs):
            if not propagate_down[i]:
                continue
            if tuple(v.shape) == x.shape:
                K.clip_grad(name, x, lo, lv, hi, hv, gy, i, gout(v, accum[i]), accum[i])
            else:
                t = np.empty(x.shape, F32)
                K.clip_grad(name, x, lo, lv, hi, hv, gy, i, t, False)
                sum_to(name, t, tuple(v.shape), gout(v, accum[i]), accum[i])


@register('ClipGradByValue')
class ClipGradByValue(_Bounded):
    def forward(self, inputs, outputs):
        K.strided_copy(self.spec.name, d32(inputs[0]), dout(outputs[0]))

    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        inputs = self.complete(inputs)[0]
        gy = g32(outputs[0])
        (lo, lv), (hi, hv) = (self.bound(v, gy.shape) for v in inputs[1:])
        K.clip(self.spec.name, gy, lo, lv, hi, hv, gout(inputs[0], accum[0]), accum[0])

    def grad_depends_input_data(self, i, j):
        return j > 0


def _norm_axes(impl, arg, axes, nd):
    """Kept axes of an L2 norm over ``axes`` (None: all)."""
    red = range(nd) if axes is None else _axes(impl, arg, axes, nd)
    return [i for i in range(nd) if i not in red]


@register('ClipByNorm')
class ClipByNorm(_NumberInputs):
    def setup(self, inputs):
        self.keep_inputs(inputs)
        x, c = inputs
        shape = tuple(x.shape)
        if _prod(c.shape) != 1:
            raise self.error('clip_norm', 'must be a number or hold one value, got shape %s'
                             % (tuple(c.shape),))
        self.grp = _Grouping(shape, _norm_axes(self, 'axis', self.args['axis'], len(shape)))
        return [shape]

    def _norms(self, name, xg, c):
        if not c > 0:
            raise self.error('clip_norm', 'must be positive, got %r' % c)
        grp = self.grp
        su, ss = np.empty(grp.groups, F32), np.empty(grp.groups, F32)
        K.norm_sums(name, xg, None, None, None, grp.pattern, su, ss)
        n = np.sqrt(ss.astype(F64))
        return n, np.maximum(n, c)

    def forward(self, inputs, outputs):
        inputs = self.complete(inputs)[0]
        name = self.spec.name
        grp = self.grp
        x = d32(inputs[0])
        c = float(d32(inputs[1]).reshape(-1)[0])
        xg = grp.gather(name, x)
        n, m = self._norms(name, xg, c)
        y = dout(outputs[0])
        buf = grp.buffer(y)
        z = _zeros(grp.groups)
        K.norm_affine(name, xg, grp.pattern, z, _f32(c / m), z, None, False, buf)
        grp.scatter(name, buf, y)

    def backward(self, inputs, outputs, propagate_down, accum):
        if not any(propagate_down):
            return
        inputs, propagate_down, accum = self.complete(inputs, propagate_down, accum)
        name = self.spec.name
        grp = self.grp
        x = d32(inputs[0])
        c = float(d32(inputs[1]).reshape(-1)[0])
        xg = grp.gather(name, x)
        gg = grp.gather(name, g32(outputs[0]))
        n, m = self._norms(name, xg, c)
        su, dot = np.empty(grp.groups, F32), np.empty(grp.groups, F32)
        K.norm_sums(name, gg, xg, None, None, grp.pattern, su, dot)
        dot = dot.astype(F64)
        big = n >= c      # maximum(n, c) passes n (ties too)
        with np.errstate(all='ignore'):
            if propagate_down[0]:
                z = _zeros(grp.groups)
                cb = np.where(big, -c * dot / n ** 3, 0.0)
                dx = gout(inputs[0], accum[0])
                buf = grp.buffer(dx)
                K.norm_combine(name, gg, xg, None, grp.pattern, _f32(c / m), _f32(cb), z, z,
                               buf, accum[0] and grp.perm is None)
                grp.scatter(name, buf, dx, accum[0])
            if propagate_down[1]:
                dc = float(np.sum(np.where(big, dot / n, 0.0)))
                g = gout(inputs[1], accum[1])
                if accum[1]:
                    g += F32(dc)
                else:
                    g.fill(dc)


@register('ClipGradByNorm')
class ClipGradByNorm(Impl):
    def setup(self, inputs):
        shape = tuple(inputs[0].shape)
        c = self.args['clip_norm']
        if c is not None and not c > 0:
            raise self.error('clip_norm', 'must be positive, got %r' % c)
        self.grp = _Grouping(shape, _norm_axes(self, 'axes', self.args['axes'], len(shape)))
        return [shape]

    def forward(self, inputs, outputs):
        K.strided_copy(self.spec.name, d32(inputs[0]), dout(outputs[0]))

    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        name = self.spec.name
        grp = self.grp
        c = self.args['clip_norm']
        c = 1.0 if c is None else c
        gg = grp.gather(name, g32(outputs[0]))
        su, ss = np.empty(grp.groups, F32), np.empty(grp.groups, F32)
        K.norm_sums(name, gg, None, None, None, grp.pattern, su, ss)
        n = np.sqrt(ss.astype(F64))
        with np.errstate(all='ignore'):
            scale = np.where(n > 0, c / n, 0.0)     # a zero gradient stays zero
        z = _zeros(grp.groups)
        dx = gout(inputs[0], accum[0])
        buf = grp.buffer(dx)
        K.norm_combine(name, gg, None, None, grp.pattern, _f32(scale), z, z, z, buf,
                       accum[0] and grp.perm is None)
        grp.scatter(name, buf, dx, accum[0])

    def grad_depends_input_data(self, i, j):
        return False


# ---------------------------------------------------------------------------
# PReLU


@register('PReLU')
class PReLU(Impl):
    def setup(self, inputs):
        x, w = inputs
        shape = tuple(x.shape)
        nd = len(shape)
        if nd == 0:
            raise self.error('x0', 'must have at least one dimension, got shape ()')
        base = _axis(self, 'base_axis', self.args['base_axis'], nd)
        ws = tuple(w.shape)
        if _prod(ws) == 1:
            self.pattern = (1, 1, 1, _prod(shape))
        elif len(ws) == 1 and ws[0] == shape[base]:
            self.pattern = (1, _prod(shape[:base]), shape[base], _prod(shape[base + 1:]))
        else:
            raise self.error('x1', 'must hold one slope or one per channel, shape (%d,) for x0 '
                             'of shape %s and base_axis=%d, got %s'
                             % (shape[base], shape, base, ws))
        return [shape]

    def forward(self, inputs, outputs):
        x, w = inputs
        K.prelu(self.spec.name, d32(x), _f32(d32(w).reshape(-1)), self.pattern,
                dout(outputs[0]))

    def backward(self, inputs, outputs, propagate_down, accum):
        if not any(propagate_down):
            return
        x, w = inputs
        dx = gout(x, accum[0]) if propagate_down[0] else None
        dw = gout(w, accum[1]).reshape(-1) if propagate_down[1] else None
        K.prelu_grad(self.spec.name, d32(x), _f32(d32(w).reshape(-1)), g32(outputs[0]),
                     self.pattern, dx, accum[0], dw, accum[1])
