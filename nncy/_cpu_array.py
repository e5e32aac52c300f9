"""CPU implementations of the array-manipulation functions: concatenate, split,
stack, gather_nd, scatter_nd, pad, transpose, broadcast, broadcast_to, tile,
flip, shift, sort, one_hot, batch_inv, batch_det, assign, top_k_data and
top_k_grad.

Data moves through ``strided_copy`` (transposed, broadcast, flipped, sliced
views) and ``reduce`` where a view expresses the function, otherwise through
vectorised NumPy indexing.  Arguments are checked in ``setup``."""
import numpy as np

from nncy import _kernels as K
from nncy._core import Impl, register, d32, dout, g32, gout, sum_to, NdArray, Variable
from nncy._cpu import store
from nncy._table import BY_NAME

F32 = np.float32
I64 = np.int64


def _prod(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def _norm_axis(impl, ndim, axis, name='axis', extra=0):
    """A non-negative axis of a ``ndim + extra``-D array (extra=1: a new axis)."""
    n = ndim + extra
    if not -n <= axis < n:
        raise impl.error(name, 'must lie in [%d, %d) for a %d-D input, got %d'
                         % (-n, n, ndim, axis))
    return axis % n


def _copy(name, view, out, accum=False):
    """out (+)= view through the strided-copy kernel (float32 view of out's shape)."""
    if view.dtype != F32:
        view = view.astype(F32)
    K.strided_copy(name, view, out, accum)


def _zero_grad(x, accum):
    if not accum:
        gout(x, False).fill(0)


def _int_data(v):
    """The data of an index or label input as int64 (rounded from floats)."""
    a = np.asarray(v.d)
    if a.dtype.kind == 'f':
        return np.rint(a).astype(I64)
    return a.astype(I64, copy=False)


# ---------------------------------------------------------------------------
# joining and cutting

@register('Concatenate')
class Concatenate(Impl):
    def setup(self, inputs):
        if not inputs:
            raise self.error('x', 'needs at least one input variable')
        s0 = inputs[0].shape
        if len(s0) == 0:
            raise self.error('x', 'must have at least one dimension, got shape ()')
        axis = self.args['axis']
        self.axis = _norm_axis(self, len(s0), len(s0) - 1 if axis is None else axis)
        for i, x in enumerate(inputs):
            s = x.shape
            if len(s) != len(s0) or s[:self.axis] != s0[:self.axis] or \
                    s[self.axis + 1:] != s0[self.axis + 1:]:
                raise self.error('x', 'input %d has shape %s, which does not match %s '
                                 'except along axis %d' % (i, s, s0, self.axis))
        self.sizes = [x.shape[self.axis] for x in inputs]
        return [s0[:self.axis] + (sum(self.sizes),) + s0[self.axis + 1:]]

    def forward(self, inputs, outputs):
        np.concatenate([d32(x) for x in inputs], axis=self.axis, out=dout(outputs[0]))

    def backward(self, inputs, outputs, propagate_down, accum):
        gy = g32(outputs[0])
        lo = 0
        for x, n, p, a in zip(inputs, self.sizes, propagate_down, accum):
            if p:
                sl = (slice(None),) * self.axis + (slice(lo, lo + n),)
                _copy(self.spec.name, gy[sl], gout(x, a), a)
            lo += n

    def grad_depends_input_data(self, i, j):
        return False


@register('Split')
class Split(Impl):
    def setup(self, inputs):
        s = inputs[0].shape
        if len(s) == 0:
            raise self.error('x', 'must have at least one dimension, got shape ()')
        self.axis = _norm_axis(self, len(s), self.args['axis'])
        if s[self.axis] == 0:
            raise self.error('axis', 'has size 0 in x of shape %s: nothing to split' % (s,))
        return [s[:self.axis] + s[self.axis + 1:]] * s[self.axis]

    def min_outputs(self):
        return 1

    def forward(self, inputs, outputs):
        x = d32(inputs[0])
        for i, y in enumerate(outputs):
            _copy(self.spec.name, np.take(x, i, axis=self.axis), dout(y))

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0]:
            gx = np.moveaxis(gout(inputs[0], accum[0]), self.axis, 0)
            for i, y in enumerate(outputs):
                store(gx[i], g32(y), accum[0])

    def grad_depends_input_data(self, i, j):
        return False


@register('Stack')
class Stack(Impl):
    def setup(self, inputs):
        if not inputs:
            raise self.error('x', 'needs at least one input variable')
        s0 = inputs[0].shape
        for i, x in enumerate(inputs):
            if x.shape != s0:
                raise self.error('x', 'input %d has shape %s, expected %s like input 0'
                                 % (i, x.shape, s0))
        self.axis = _norm_axis(self, len(s0), self.args['axis'], extra=1)
        return [s0[:self.axis] + (len(inputs),) + s0[self.axis:]]

    def forward(self, inputs, outputs):
        np.stack([d32(x) for x in inputs], axis=self.axis, out=dout(outputs[0]))

    def backward(self, inputs, outputs, propagate_down, accum):
        gy = g32(outputs[0])
        for i, (x, p, a) in enumerate(zip(inputs, propagate_down, accum)):
            if p:
                _copy(self.spec.name, np.take(gy, i, axis=self.axis), gout(x, a), a)

    def grad_depends_input_data(self, i, j):
        return False


# ---------------------------------------------------------------------------
# gather_nd / scatter_nd

def _coords(impl, idx_var, shape, what):
    """Index tuple from an (M, ...) integer array over the first M axes of
    ``shape``; negative coordinates wrap, others out of range raise ValueError."""
    idx = _int_data(idx_var)
    m = idx.shape[0]
    out = []
    for j in range(m):
        c = idx[j]
        n = shape[j]
        if c.size and (c.min() < -n or c.max() >= n):
            bad = c[(c < -n) | (c >= n)].ravel()[0]
            raise impl.error('indices', 'holds %d, out of bounds for axis %d of size %d '
                             'of %s' % (bad, j, n, what))
        out.append(np.where(c < 0, c + n, c))
    return tuple(out)


def _check_indices(impl, ishape, tshape, tname):
    if len(ishape) < 1 or ishape[0] == 0:
        raise impl.error('indices', 'must have shape (M, ...) with M >= 1, got %s'
                         % (ishape,))
    if ishape[0] > len(tshape):
        raise impl.error('indices', 'indexes %d axes but %s has only %d (shape %s)'
                         % (ishape[0], tname, len(tshape), tshape))


@register('GatherNd')
class GatherNd(Impl):
    def setup(self, inputs):
        data, idx = inputs
        _check_indices(self, idx.shape, data.shape, 'data')
        return [idx.shape[1:] + data.shape[idx.shape[0]:]]

    def forward(self, inputs, outputs):
        data, idx = inputs
        c = _coords(self, idx, data.shape, 'data')
        dout(outputs[0])[...] = d32(data)[c]

    def backward(self, inputs, outputs, propagate_down, accum):
        data, idx = inputs
        if propagate_down[0]:
            gx = gout(data, accum[0])
            if not accum[0]:
                gx.fill(0)
            np.add.at(gx, _coords(self, idx, data.shape, 'data'), g32(outputs[0]))
        if propagate_down[1]:
            _zero_grad(idx, accum[1])

    def grad_depends_input_data(self, i, j):
        return j == 1


@register('ScatterNd')
class ScatterNd(Impl):
    def setup(self, inputs):
        data, idx = inputs
        shape = self.args['shape']
        if shape is None:
            raise self.error('shape', 'is required (or give out=)', TypeError)
        shape = tuple(shape)
        if any(s < 0 for s in shape):
            raise self.error('shape', 'must not hold negative sizes, got %r' % (shape,))
        _check_indices(self, idx.shape, shape, 'the output')
        want = idx.shape[1:] + shape[idx.shape[0]:]
        if data.shape != want:
            raise self.error('data', 'must have shape %s for indices of shape %s and output '
                             'shape %s, got %s' % (want, idx.shape, shape, data.shape))
        self.shape = shape
        self.keep = False
        return [shape]

    def link(self, inputs, outputs):
        # An output array that already holds data is scatter_nd's ``out=``: the
        # data is scattered into its values, which are kept elsewhere.
        self.keep = not outputs[0].data.clear_called

    def forward(self, inputs, outputs):
        data, idx = inputs
        c = _coords(self, idx, self.shape, 'the output')
        y = outputs[0]
        if self.keep:
            arr = y.data.cast(F32)
        else:
            arr = dout(y)
            arr.fill(0)
        if self.args['add']:
            np.add.at(arr, c, d32(data))
        else:
            arr[c] = d32(data)

    def backward(self, inputs, outputs, propagate_down, accum):
        data, idx = inputs
        if propagate_down[0]:
            c = _coords(self, idx, self.shape, 'the output')
            store(gout(data, accum[0]), g32(outputs[0])[c], accum[0])
        if propagate_down[1]:
            _zero_grad(idx, accum[1])

    def grad_depends_input_data(self, i, j):
        return j == 1


def _index_input(indices, like):
    """Indices given as a list or NumPy array become a constant Variable (an
    NdArray when ``like`` is one)."""
    if isinstance(indices, (Variable, NdArray)):
        return indices
    arr = np.asarray(indices)
    if arr.dtype.kind not in 'iuf' and arr.size:
        raise TypeError('gather_nd/scatter_nd: argument \'indices\' must hold integers, '
                        'got %r' % (indices,))
    arr = arr.astype(np.int64)
    if isinstance(like, NdArray):
        return NdArray.from_numpy_array(arr)
    return Variable.from_numpy_array(arr, need_grad=False)


def wrap(namespace):
    """Replace the generated ``F.gather_nd`` / ``F.scatter_nd`` by wrappers taking
    indices as a list, NumPy array, Variable or NdArray, and scatter_nd's ``out``."""
    gen_gather = namespace['gather_nd']
    gen_scatter = namespace['scatter_nd']
    from nncy._core import call
    scatter_spec = BY_NAME['scatter_nd']

    def gather_nd(data, indices, n_outputs=-1, outputs=None):
        return gen_gather(data, _index_input(indices, data), outputs=outputs)

    def scatter_nd(data, indices, shape=None, out=None, add=False, n_outputs=-1,
                   outputs=None):
        indices = _index_input(indices, data)
        if out is None:
            if shape is None:
                raise TypeError("scatter_nd: one of the arguments 'shape' and 'out' "
                                "must be given")
            if isinstance(shape, np.ndarray):
                shape = shape.tolist()
            return gen_scatter(data, indices, shape, add, outputs=outputs)
        if shape is not None:
            raise TypeError("scatter_nd: give only one of the arguments 'shape' and 'out'")
        if isinstance(out, Variable):
            out = out.data
        if not isinstance(out, NdArray):
            raise TypeError("scatter_nd: argument 'out' must be a Variable or NdArray, got %s"
                            % type(out).__name__)
        return call(scatter_spec, (data, indices), (out.shape, add), [out])

    for fn, gen in ((gather_nd, gen_gather), (scatter_nd, gen_scatter)):
        fn.__doc__ = gen.__doc__
        fn.__module__ = gen.__module__
        namespace[fn.__name__] = fn


# ---------------------------------------------------------------------------
# views: transpose, broadcast, broadcast_to, tile, flip

@register('Transpose')
class Transpose(Impl):
    def setup(self, inputs):
        s = inputs[0].shape
        axes = tuple(self.args['axes'])
        nd = len(s)
        if len(axes) != nd or any(not -nd <= a < nd for a in axes) or \
                sorted(a % nd for a in axes) != list(range(nd)):
            raise self.error('axes', 'must be a permutation of range(%d) for x of shape %s, '
                             'got %r' % (len(s), s, axes))
        self.axes = tuple(a % nd for a in axes)
        self.inv = tuple(np.argsort(self.axes))
        return [tuple(s[a] for a in self.axes)]

    def forward(self, inputs, outputs):
        _copy(self.spec.name, d32(inputs[0]).transpose(self.axes), dout(outputs[0]))

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0]:
            _copy(self.spec.name, g32(outputs[0]).transpose(self.inv),
                  gout(inputs[0], accum[0]), accum[0])

    def grad_depends_input_data(self, i, j):
        return False


def _broadcastable(xs, shape):
    if len(xs) > len(shape):
        return False
    return all(a == 1 or a == b for a, b in zip(xs[::-1], shape[::-1]))


@register('Broadcast')
class Broadcast(Impl):
    def setup(self, inputs):
        xs = inputs[0].shape
        shape = tuple(self.args['shape'])
        if any(s < 0 for s in shape) or not _broadcastable(xs, shape):
            raise self.error('shape', '%r cannot be reached by broadcasting x of shape %s'
                             % (shape, xs))
        return [shape]

    def forward(self, inputs, outputs):
        y = outputs[0]
        _copy(self.spec.name, np.broadcast_to(d32(inputs[0]), y.shape), dout(y))

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0]:
            x = inputs[0]
            sum_to(self.spec.name, g32(outputs[0]), x.shape, gout(x, accum[0]), accum[0])

    def grad_depends_input_data(self, i, j):
        return False


@register('BroadcastTo')
class BroadcastTo(Impl):
    def setup(self, inputs):
        xs, ys = inputs[0].shape, inputs[1].shape
        axis = self.args['axis']
        if axis is None or axis == -1:
            axis = len(xs) - len(ys)
        if not 0 <= axis <= len(xs) - len(ys) or xs[axis:axis + len(ys)] != ys:
            raise self.error('axis', 'y of shape %s must match the axes of x (shape %s) '
                             'from axis on, got axis=%r' % (ys, xs, self.args['axis']))
        self.view = (1,) * axis + ys + (1,) * (len(xs) - axis - len(ys))
        return [xs]

    def forward(self, inputs, outputs):
        y = outputs[0]
        _copy(self.spec.name, np.broadcast_to(d32(inputs[1]).reshape(self.view), y.shape),
              dout(y))

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0]:
            _zero_grad(inputs[0], accum[0])
        if propagate_down[1]:
            y = inputs[1]
            axes = tuple(i for i, n in enumerate(self.view) if n == 1
                         and outputs[0].shape[i] != 1)
            g = gout(y, accum[1])
            K.reduce(self.spec.name, 'sum', g32(outputs[0]), axes, g, 1.0, accum[1])

    def grad_depends_input_data(self, i, j):
        return False


@register('Tile')
class Tile(Impl):
    def setup(self, inputs):
        xs = inputs[0].shape
        reps = tuple(self.args['reps'])
        if any(r < 0 for r in reps):
            raise self.error('reps', 'must not hold negative counts, got %r' % (reps,))
        nd = max(len(reps), len(xs))
        self.xs = (1,) * (nd - len(xs)) + xs
        self.reps = (1,) * (nd - len(reps)) + reps
        # (r0, s0, r1, s1, ...): x broadcast over the repeat axes
        self.wide = tuple(v for r, s in zip(self.reps, self.xs) for v in (r, s))
        self.view = tuple(v for s in self.xs for v in (1, s))
        return [tuple(r * s for r, s in zip(self.reps, self.xs))]

    def forward(self, inputs, outputs):
        y = dout(outputs[0]).reshape(self.wide)
        _copy(self.spec.name, np.broadcast_to(d32(inputs[0]).reshape(self.view), self.wide), y)

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0]:
            gy = g32(outputs[0]).reshape(self.wide)
            axes = tuple(range(0, len(self.wide), 2))
            K.reduce(self.spec.name, 'sum', gy, axes, gout(inputs[0], accum[0]), 1.0,
                     accum[0])

    def grad_depends_input_data(self, i, j):
        return False


def _axes_list(impl, ndim, axes, name='axes'):
    """Non-negative axes (None: the last one)."""
    if axes is None:
        return [ndim - 1] if ndim else []
    return [_norm_axis(impl, ndim, a, name) for a in axes]


@register('Flip')
class Flip(Impl):
    def setup(self, inputs):
        s = inputs[0].shape
        axes = _axes_list(self, len(s), self.args['axes'])
        flip = [False] * len(s)
        for a in axes:
            flip[a] = not flip[a]
        self.sl = tuple(slice(None, None, -1) if f else slice(None) for f in flip)
        return [s]

    def forward(self, inputs, outputs):
        _copy(self.spec.name, d32(inputs[0])[self.sl], dout(outputs[0]))

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0]:
            _copy(self.spec.name, g32(outputs[0])[self.sl], gout(inputs[0], accum[0]),
                  accum[0])

    def grad_depends_input_data(self, i, j):
        return False


# ---------------------------------------------------------------------------
# index maps per axis: pad (reflect, repeat) and shift

def _reflect(i, n):
    """Mirror coordinates into [0, n) without repeating the edge (numpy 'reflect')."""
    if n == 1:
        return np.zeros_like(i)
    period = 2 * (n - 1)
    i = np.abs(i) % period
    return np.where(i >= n, period - i, i)


def _gather_axes(x, maps):
    """x indexed by one coordinate map per axis (None: the axis as it is)."""
    idx = tuple(np.arange(n) if m is None else m for n, m in zip(x.shape, maps))
    return x[np.ix_(*idx)] if idx else x


def _scatter_axes(g, maps, shape):
    """The adjoint of _gather_axes: sums g back along each mapped axis."""
    for a, m in enumerate(maps):
        if m is None:
            continue
        moved = np.moveaxis(g, a, 0)
        acc = np.zeros((shape[a],) + moved.shape[1:], F32)
        np.add.at(acc, m, moved)
        g = np.moveaxis(acc, 0, a)
    return g


_PAD_MODES = ('constant', 'reflect', 'repeat')


@register('Pad')
class Pad(Impl):
    def setup(self, inputs):
        s = inputs[0].shape
        pw = tuple(self.args['pad_width'])
        mode = self.args['mode']
        if mode not in _PAD_MODES:
            raise self.error('mode', 'must be one of %s, got %r' % (', '.join(_PAD_MODES), mode))
        if len(pw) % 2 or len(pw) // 2 > len(s):
            raise self.error('pad_width', 'must hold an even number of values, at most two '
                             'per axis of x (shape %s), got %r' % (s, pw))
        if any(p < 0 for p in pw):
            raise self.error('pad_width', 'must not hold negative values, got %r' % (pw,))
        lead = len(s) - len(pw) // 2
        self.pairs = [(0, 0)] * lead + [(pw[2 * i], pw[2 * i + 1]) for i in range(len(pw) // 2)]
        out = tuple(n + a + b for n, (a, b) in zip(s, self.pairs))
        if mode != 'constant':
            for n, (a, b) in zip(s, self.pairs):
                if n == 0 and a + b:
                    raise self.error('mode', '%r cannot pad an axis of size 0' % mode)
            self.maps = []
            for n, (a, b) in zip(s, self.pairs):
                if not a and not b:
                    self.maps.append(None)
                    continue
                i = np.arange(-a, n + b)
                self.maps.append(_reflect(i, n) if mode == 'reflect' else np.clip(i, 0, n - 1))
        self.inner = tuple(slice(a, a + n) for n, (a, b) in zip(s, self.pairs))
        return [out]

    def forward(self, inputs, outputs):
        x, y = d32(inputs[0]), dout(outputs[0])
        if self.args['mode'] == 'constant':
            y.fill(self.args['constant_value'])
            y[self.inner] = x
        else:
            y[...] = _gather_axes(x, self.maps)

    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        x = inputs[0]
        gy = g32(outputs[0])
        if self.args['mode'] == 'constant':
            _copy(self.spec.name, gy[self.inner], gout(x, accum[0]), accum[0])
        else:
            store(gout(x, accum[0]), _scatter_axes(gy, self.maps, x.shape), accum[0])

    def grad_depends_input_data(self, i, j):
        return False


_BORDER_MODES = ('nearest', 'reflect')


def shift_maps(shape, shifts, mode):
    """Coordinate maps of a shift of the innermost len(shifts) axes:
    y[i] = x[i - shift], the border nearest or reflected."""
    lead = len(shape) - len(shifts)
    maps = [None] * lead
    for n, s in zip(shape[lead:], shifts):
        if s == 0 or n == 0:
            maps.append(None)
            continue
        i = np.arange(n) - s
        maps.append(np.clip(i, 0, n - 1) if mode == 'nearest' else _reflect(i, n))
    return maps


@register('Shift')
class Shift(Impl):
    def setup(self, inputs):
        s = inputs[0].shape
        shifts = self.args['shifts']
        shifts = (0,) * len(s) if shifts is None else tuple(shifts)
        if len(shifts) > len(s):
            raise self.error('shifts', 'has %d entries for x of shape %s' % (len(shifts), s))
        if self.args['border_mode'] not in _BORDER_MODES:
            raise self.error('border_mode', 'must be nearest or reflect, got %r'
                             % (self.args['border_mode'],))
        self.maps = shift_maps(s, shifts, self.args['border_mode'])
        return [s]

    def forward(self, inputs, outputs):
        dout(outputs[0])[...] = _gather_axes(d32(inputs[0]), self.maps)

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0]:
            x = inputs[0]
            store(gout(x, accum[0]), _scatter_axes(g32(outputs[0]), self.maps, x.shape),
                 accum[0])

    def grad_depends_input_data(self, i, j):
        return False


# ---------------------------------------------------------------------------
# sort, top-k

def _set_index(v, idx):
    """Store int64 indices as v's data."""
    v.data.set_array(np.ascontiguousarray(idx, dtype=I64))


@register('Sort')
class Sort(Impl):
    def setup(self, inputs):
        s = inputs[0].shape
        if len(s) == 0:
            raise self.error('x', 'must have at least one dimension, got shape ()')
        self.axis = _norm_axis(self, len(s), self.args['axis'])
        self.only_index = self.args['only_index']
        self.with_index = self.args['with_index'] or self.only_index
        if self.only_index:
            return [s]
        return [s, s] if self.with_index else [s]

    def order(self, x):
        key = -x if self.args['reverse'] else x
        return np.argsort(key, axis=self.axis, kind='stable')

    def forward(self, inputs, outputs):
        x = d32(inputs[0])
        idx = self.order(x)
        if not self.only_index:
            dout(outputs[0])[...] = np.take_along_axis(x, idx, self.axis)
        if self.with_index:
            _set_index(outputs[-1], idx)

    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        x = inputs[0]
        if self.only_index:
            _zero_grad(x, accum[0])
            return
        idx = self.order(d32(x))
        g = np.empty(x.shape, F32)
        np.put_along_axis(g, idx, g32(outputs[0]), self.axis)
        store(gout(x, accum[0]), g, accum[0])


def _top_k(impl, v, k, use_abs):
    """Indices (descending by value or magnitude, ties to the first) of the k
    largest entries in each row of 2-D v."""
    key = np.abs(v) if use_abs else v
    return np.argsort(-key, axis=1, kind='stable')[:, :k]


def _samples(impl, shape):
    base = impl.args['base_axis']
    if not 0 <= base < max(len(shape), 1):
        raise impl.error('base_axis', 'must lie in [0, %d) for x of shape %s, got %d'
                         % (len(shape), shape, base))
    k = impl.args['k']
    n = _prod(shape[base:])
    if not 1 <= k <= n:
        raise impl.error('k', 'must lie in [1, %d] for samples of %d elements, got %d'
                         % (n, n, k))
    return base, _prod(shape[:base]), n


@register('TopKData')
class TopKData(Impl):
    def setup(self, inputs):
        s = inputs[0].shape
        self.base, self.m, self.n = _samples(self, s)
        if self.args['reduce']:
            return [s[:self.base] + (self.args['k'],)]
        return [s]

    def forward(self, inputs, outputs):
        x = d32(inputs[0]).reshape(self.m, self.n)
        self.idx = idx = _top_k(self, x, self.args['k'], self.args['abs'])
        vals = np.take_along_axis(x, idx, 1)
        y = dout(outputs[0]).reshape(self.m, -1)
        if self.args['reduce']:
            y[...] = vals
        else:
            y.fill(0)
            np.put_along_axis(y, idx, vals, 1)

    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        x = inputs[0]
        idx = _top_k(self, d32(x).reshape(self.m, self.n), self.args['k'], self.args['abs'])
        gy = g32(outputs[0]).reshape(self.m, -1)
        g = np.zeros((self.m, self.n), F32)
        vals = gy if self.args['reduce'] else np.take_along_axis(gy, idx, 1)
        np.put_along_axis(g, idx, vals, 1)
        store(gout(x, accum[0]), g.reshape(x.shape), accum[0])


@register('TopKGrad')
class TopKGrad(Impl):
    def setup(self, inputs):
        s = inputs[0].shape
        self.base, self.m, self.n = _samples(self, s)
        return [s]

    def forward(self, inputs, outputs):
        _copy(self.spec.name, d32(inputs[0]), dout(outputs[0]))

    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        x = inputs[0]
        gy = g32(outputs[0]).reshape(self.m, self.n)
        idx = _top_k(self, gy, self.args['k'], self.args['abs'])
        g = np.zeros((self.m, self.n), F32)
        np.put_along_axis(g, idx, np.take_along_axis(gy, idx, 1), 1)
        store(gout(x, accum[0]), g.reshape(x.shape), accum[0])

    def grad_depends_input_data(self, i, j):
        return False


# ---------------------------------------------------------------------------
# one_hot, batch_inv, batch_det, assign

@register('OneHot')
class OneHot(Impl):
    def setup(self, inputs):
        s = inputs[0].shape
        shape = tuple(self.args['shape'])
        if not shape or any(n <= 0 for n in shape):
            raise self.error('shape', 'must hold one or more positive class counts, got %r'
                             % (shape,))
        if len(s) == 0 or s[-1] != len(shape):
            raise self.error('x', 'must have shape (..., %d) for shape=%r, got %s'
                             % (len(shape), shape, s))
        self.shape = shape
        return [s[:-1] + shape]

    def forward(self, inputs, outputs):
        lab = _int_data(inputs[0]).reshape(-1, len(self.shape))
        lim = np.array(self.shape)
        if lab.size and ((lab < 0).any() or (lab >= lim).any()):
            bad = lab[((lab < 0) | (lab >= lim)).any(axis=1)][0]
            raise self.error('x', 'holds label %s outside shape %r' % (tuple(bad), self.shape))
        y = dout(outputs[0]).reshape(lab.shape[0], -1)
        y.fill(0)
        flat = np.ravel_multi_index(tuple(lab.T), self.shape) if lab.size else lab[:, 0]
        y[np.arange(lab.shape[0]), flat] = 1

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0]:
            _zero_grad(inputs[0], accum[0])

    def grad_depends_input_data(self, i, j):
        return False


def _check_square(impl, s):
    if len(s) != 3 or s[1] != s[2]:
        raise impl.error('x', 'must be a batch of square matrices (B, N, N), got shape %s'
                         % (s,))


@register('BatchInv')
class BatchInv(Impl):
    def setup(self, inputs):
        _check_square(self, inputs[0].shape)
        return [inputs[0].shape]

    def forward(self, inputs, outputs):
        dout(outputs[0])[...] = np.linalg.inv(d32(inputs[0]).astype(np.float64))

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0]:
            inv = d32(outputs[0]).astype(np.float64)
            it = inv.transpose(0, 2, 1)
            g = -it @ g32(outputs[0]) @ it
            store(gout(inputs[0], accum[0]), g, accum[0])

    def grad_depends_output_data(self, i, o):
        return True

    def grad_depends_input_data(self, i, j):
        return False


@register('BatchDet')
class BatchDet(Impl):
    def setup(self, inputs):
        _check_square(self, inputs[0].shape)
        return [inputs[0].shape[:1]]

    def forward(self, inputs, outputs):
        dout(outputs[0])[...] = np.linalg.det(d32(inputs[0]).astype(np.float64))

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0]:
            x = d32(inputs[0]).astype(np.float64)
            det = np.linalg.det(x)
            g = (g32(outputs[0]) * det)[:, None, None] * np.linalg.inv(x).transpose(0, 2, 1)
            store(gout(inputs[0], accum[0]), g, accum[0])


@register('Assign')
class Assign(Impl):
    def setup(self, inputs):
        dst, src = inputs
        if dst.shape != src.shape:
            raise self.error('src', 'must have the shape of dst %s, got %s'
                             % (dst.shape, src.shape))
        return [dst.shape]

    def forward(self, inputs, outputs):
        dst, src = inputs
        s = d32(src)
        d = dst.data.cast(F32)
        d[...] = s
        dout(outputs[0])[...] = s

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0]:
            store(gout(inputs[0], accum[0]), g32(outputs[0]), accum[0])
        if propagate_down[1]:
            _zero_grad(inputs[1], accum[1])

    def grad_depends_input_data(self, i, j):
        return False
