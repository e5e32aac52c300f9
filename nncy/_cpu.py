"""CPU implementations of the structured functions (pointwise rows are served
by ``nncy._core.Pointwise``).  Each class checks its arguments in ``setup``
(before any kernel runs) and calls the Rust kernels through ``nncy._kernels``."""
import numpy as np

from nncy import _kernels as K
from nncy._core import Impl, register, d32, dout, g32, gout

F32 = np.float32


def store(gx, value, accum):
    """gx (+)= value: a gradient written, or added when accumulating (value may
    broadcast to gx's shape)."""
    if accum:
        gx += value
    else:
        gx[...] = value


def _prod(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def _axis(impl, ndim, axis, name='axis'):
    """One axis, negative allowed, checked against ``ndim``."""
    if axis is None:
        axis = ndim - 1
    if not -ndim <= axis < max(ndim, 1):
        raise impl.error(name, 'must lie in [%d, %d) for a %d-D input, got %d'
                         % (-ndim, ndim, ndim, axis))
    return axis % ndim if ndim else 0


def _axes(impl, ndim, axis):
    """Sorted, distinct, non-negative reduction axes (None: all)."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        axis = (axis,)
    out = sorted({_axis(impl, ndim, a) for a in axis})
    if len(out) != len(axis):
        raise impl.error('axis', 'repeats an axis: %r' % (axis,))
    return tuple(out)


def _split(shape, axis):
    """(outer, size, inner) of ``shape`` around ``axis``."""
    return _prod(shape[:axis]), shape[axis], _prod(shape[axis + 1:])


_SMALL_COPY = 1 << 16     # elements below which a plain NumPy copy beats the kernel call


@register('Affine')
class Affine(Impl):
    def setup(self, inputs):
        x, w = inputs[0], inputs[1]
        base = self.args['base_axis']
        if not 0 <= base < len(x.shape) + (len(x.shape) == 0):
            raise self.error('base_axis', 'must lie in [0, %d) for input x of shape %s, got %d'
                             % (len(x.shape), x.shape, base))
        k = _prod(x.shape[base:])
        if len(w.shape) < 2 or w.shape[0] != k:
            raise self.error('weight', 'must have shape (%d, ...) to match x of shape %s '
                             'with base_axis=%d, got %s' % (k, x.shape, base, w.shape))
        if len(inputs) > 2 and inputs[2].shape != w.shape[1:]:
            raise self.error('bias', 'must have shape %s, got %s'
                             % (w.shape[1:], inputs[2].shape))
        return [x.shape[:base] + w.shape[1:]]

    def _mats(self, inputs, y):
        x, w = inputs[0], inputs[1]
        m = _prod(x.shape[:self.args['base_axis']])
        return m, w.shape[0], _prod(w.shape[1:])

    def forward(self, inputs, outputs):
        y = outputs[0]
        m, k, n = self._mats(inputs, y)
        ya = dout(y).reshape(m, n)
        alpha = 0.0
        if len(inputs) > 2:
            if m * n <= _SMALL_COPY:
                # small outputs (batch-1 inference): NumPy's broadcasting copy
                # costs a fraction of building a broadcast view in Python
                np.copyto(ya, d32(inputs[2]).reshape(1, n))
            else:
                K.strided_copy('affine', np.broadcast_to(d32(inputs[2]).reshape(1, n), (m, n)),
                               ya)
            alpha = 1.0
        K.gemm('affine', d32(inputs[0]).reshape(m, k), d32(inputs[1]).reshape(k, n), ya,
               alpha)

    def bind(self, inputs, outputs):
        """``forward`` as a call without arguments, for storage that stays put
        (the inference runtime's planned buffers): views made once."""
        m, k, n = self._mats(inputs, outputs[0])
        x, w = d32(inputs[0]).reshape(m, k), d32(inputs[1]).reshape(k, n)
        y = dout(outputs[0]).reshape(m, n)
        gemm = K.gemm
        if len(inputs) < 3:
            return lambda: gemm('affine', x, w, y)
        b = d32(inputs[2]).reshape(1, n)
        if m * n > _SMALL_COPY:
            return None
        copyto = np.copyto

        def run():
            copyto(y, b)
            gemm('affine', x, w, y, 1.0)
        return run

    def backward(self, inputs, outputs, propagate_down, accum):
        y = outputs[0]
        m, k, n = self._mats(inputs, y)
        gy = g32(y).reshape(m, n)
        if propagate_down[0]:
            gx = gout(inputs[0], accum[0]).reshape(m, k)
            K.gemm('affine', gy, d32(inputs[1]).reshape(k, n).T, gx, float(accum[0]))
        if propagate_down[1]:
            gw = gout(inputs[1], accum[1]).reshape(k, n)
            K.gemm('affine', d32(inputs[0]).reshape(m, k).T, gy, gw, float(accum[1]))
        if len(inputs) > 2 and propagate_down[2]:
            K.reduce('affine', 'sum', gy, (0,), gout(inputs[2], accum[2]), 1.0, accum[2])

    def grad_depends_input_data(self, i, j):
        return (i, j) in ((0, 1), (1, 0))


class _Reduce(Impl):
    """Sum and Mean over a set of axes."""
    def setup(self, inputs):
        x = inputs[0]
        self.axes = _axes(self, len(x.shape), self.args['axis'])
        if self.args['keepdims']:
            return [tuple(1 if i in self.axes else s for i, s in enumerate(x.shape))]
        return [tuple(s for i, s in enumerate(x.shape) if i not in self.axes)]

    def scale(self, x):
        return 1.0

    def forward(self, inputs, outputs):
        x = d32(inputs[0])
        K.reduce(self.spec.name, 'sum', x, self.axes, dout(outputs[0]), self.scale(x))

    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        x = inputs[0]
        kept = tuple(1 if i in self.axes else s for i, s in enumerate(x.shape))
        gy = g32(outputs[0]).reshape(kept)
        s = self.scale(x)
        if s != 1.0:
            gy = gy * F32(s)
        K.strided_copy(self.spec.name, np.broadcast_to(gy, x.shape), gout(x, accum[0]),
                       accum[0])

    def grad_depends_input_data(self, i, j):
        return False


@register('Sum')
class Sum(_Reduce):
    pass


@register('Mean')
class Mean(_Reduce):
    def scale(self, x):
        n = _prod(x.shape[i] for i in self.axes)
        return 1.0 / n if n else float('nan')


class _Softmax(Impl):
    log = False

    def setup(self, inputs):
        x = inputs[0]
        if len(x.shape) == 0:
            raise self.error('x', 'must have at least one dimension, got shape ()')
        self.axis = _axis(self, len(x.shape), self.args['axis'])
        return [x.shape]

    def forward(self, inputs, outputs):
        x = inputs[0]
        K.softmax(self.spec.name, d32(x), dout(outputs[0]), *_split(x.shape, self.axis),
                  self.log)

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0]:
            y = outputs[0]
            K.softmax_grad(self.spec.name, d32(y), g32(y), gout(inputs[0], accum[0]),
                           *_split(y.shape, self.axis), self.log, accum[0])

    def grad_depends_output_data(self, i, o):
        return True

    def grad_depends_input_data(self, i, j):
        return False


@register('Softmax')
class Softmax(_Softmax):
    pass


@register('LogSoftmax')
class LogSoftmax(_Softmax):
    log = True


@register('SoftmaxCrossEntropy')
class SoftmaxCrossEntropy(Impl):
    def setup(self, inputs):
        x, t = inputs
        if len(x.shape) == 0:
            raise self.error('x', 'must have at least one dimension, got shape ()')
        self.axis = _axis(self, len(x.shape), self.args['axis'])
        want = x.shape[:self.axis] + (1,) + x.shape[self.axis + 1:]
        if t.shape != want and t.shape != x.shape[:self.axis] + x.shape[self.axis + 1:]:
            raise self.error('target', 'must have shape %s for x of shape %s and axis=%d, '
                             'got %s' % (want, x.shape, self.axis, t.shape))
        return [want]

    def forward(self, inputs, outputs):
        x, t = inputs
        K.softmax_ce(self.spec.name, d32(x), t.d, dout(outputs[0]),
                     *_split(x.shape, self.axis))

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[1]:
            raise NotImplementedError('softmax_cross_entropy: no gradient with respect to '
                                      'the target labels; set target.need_grad = False')
        if propagate_down[0]:
            x, t = inputs
            K.softmax_ce_grad(self.spec.name, d32(x), t.d, g32(outputs[0]),
                              gout(x, accum[0]), *_split(x.shape, self.axis), accum[0])


@register('Reshape')
class Reshape(Impl):
    def setup(self, inputs):
        x = inputs[0]
        shape = self.args['shape']
        if shape is None:
            raise self.error('shape', 'is required', TypeError)
        shape = list(shape)
        n = _prod(x.shape)
        if shape.count(-1) > 1 or any(s < -1 for s in shape):
            raise self.error('shape', 'may hold one -1 and no other negative size, got %r'
                             % (tuple(shape),))
        if -1 in shape:
            known = _prod(s for s in shape if s != -1)
            if known == 0 or n % known:
                raise self.error('shape', 'cannot infer -1 in %r for %d elements'
                                 % (tuple(shape), n))
            shape[shape.index(-1)] = n // known
        if _prod(shape) != n:
            raise self.error('shape', '%r has %d elements but x of shape %s has %d'
                             % (tuple(shape), _prod(shape), x.shape, n))
        return [tuple(shape)]

    def link(self, inputs, outputs):
        if self.args['inplace']:
            outputs[0].data.set_array(inputs[0].d.reshape(outputs[0].shape))

    def forward(self, inputs, outputs):
        x, y = inputs[0], outputs[0]
        if self.args['inplace']:
            self.link(inputs, outputs)
        else:
            np.copyto(dout(y), d32(x).reshape(y.shape))

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0]:
            x = inputs[0]
            store(gout(x, accum[0]), g32(outputs[0]).reshape(x.shape), accum[0])

    def grad_depends_input_data(self, i, j):
        return False

    def inplace_data(self, i):
        return int(self.args['inplace'])


@register('Sink')
class Sink(Impl):
    def setup(self, inputs):
        if not inputs:
            raise self.error('x', 'needs at least one input variable')
        return [()]

    def forward(self, inputs, outputs):
        outputs[0].data.fill(0)

    def backward(self, inputs, outputs, propagate_down, accum):
        if not self.args['one_input_grad']:
            return
        for x, p, a in zip(inputs, propagate_down, accum):
            if p:
                g = gout(x, a)
                if a:
                    g += 1
                else:
                    g.fill(1)

    def grad_depends_input_data(self, i, j):
        return False


@register('Slice')
class Slice(Impl):
    def setup(self, inputs):
        shape = inputs[0].shape
        nd = len(shape)
        start, stop, step = (self.args[k] for k in ('start', 'stop', 'step'))
        step = step if step is not None else (1,) * nd
        start = start if start is not None else tuple(0 if s > 0 else -1 for s in step)
        stop = stop if stop is not None else tuple(
            n if s > 0 else -n - 1 for n, s in zip(shape, step))
        for name, v in (('start', start), ('stop', stop), ('step', step)):
            if len(v) > nd:
                raise self.error(name, 'has %d entries for a %d-D input' % (len(v), nd))
        if len({len(start), len(stop), len(step)}) != 1:
            raise self.error('start', 'start, stop and step must have the same length, got '
                             '%r, %r, %r' % (start, stop, step))
        if 0 in step:
            raise self.error('step', 'must not contain 0, got %r' % (step,))
        self.slices = tuple(slice(a, b, c) for a, b, c in zip(start, stop, step))
        return [tuple(len(range(*sl.indices(n))) for sl, n in zip(self.slices, shape))
                + shape[len(step):]]

    def forward(self, inputs, outputs):
        K.strided_copy('slice', d32(inputs[0])[self.slices], dout(outputs[0]))

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0]:
            gx = gout(inputs[0], accum[0])
            if not accum[0]:
                gx.fill(0)
            gx[self.slices] += g32(outputs[0])

    def grad_depends_input_data(self, i, j):
        return False


from nncy import _cpu_seq  # noqa: E402,F401  (embed, rnn, lstm, gru, multi_head_attention, patch_correlation)
from nncy import _cpu_conv  # noqa: E402,F401  (convolution and pooling layers)
from nncy import _cpu_norm  # noqa: E402,F401  (normalization, clipping and PReLU)
