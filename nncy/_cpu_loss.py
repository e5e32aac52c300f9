"""CPU implementations of the structured loss, validation, quantization and
signal-processing functions: categorical_cross_entropy, kl_multinomial,
top_n_error, confusion_matrix, prune, fft and ifft.  (The elementwise losses --
sigmoid_cross_entropy, binary_cross_entropy, squared_error, absolute_error,
huber_loss, epsilon_insensitive_loss -- and binary_error, binary_sigmoid,
binary_tanh, fixed_point_quantize and unlink are pointwise rows of the table.)

As elsewhere, ``setup`` checks every argument and shape before any work is
done; the work itself is whole-array NumPy (pocketfft for the transforms),
without per-element Python loops.
"""
import numpy as np

from nncy._core import Impl, register, d32, dout, g32, gout
from nncy._cpu import _axis, _split

F32 = np.float32
_TINY = np.finfo(np.float32).tiny


def _store(gx, value, accum):
    """gx (+)= value."""
    if accum:
        gx += value
    else:
        np.copyto(gx, value)


class _LabelAxis(Impl):
    """x with classes along ``axis`` and one integer label per sample in
    ``target`` (the class axis of size 1, or left out)."""

    def setup_labels(self, inputs):
        x, t = inputs[0], inputs[1]
        if len(x.shape) == 0:
            raise self.error('x', 'must have at least one dimension, got shape ()')
        self.axis = _axis(self, len(x.shape), self.args['axis'])
        want = x.shape[:self.axis] + (1,) + x.shape[self.axis + 1:]
        if t.shape != want and t.shape != x.shape[:self.axis] + x.shape[self.axis + 1:]:
            raise self.error('target', 'must have shape %s for x of shape %s and axis=%d, '
                             'got %s' % (want, x.shape, self.axis, t.shape))
        self.outer, self.c, self.inner = _split(x.shape, self.axis)
        return want

    def labels(self, t):
        """The labels as int64 (outer, 1, inner), checked against the class count."""
        ti = np.asarray(t.d).astype(np.int64).reshape(self.outer, 1, self.inner)
        bad = (ti < 0) | (ti >= self.c)
        if bad.any():
            raise ValueError("%s: argument 'target' holds label %d; labels must lie in [0, %d)"
                             % (self.spec.name, ti[bad][0], self.c))
        return ti

    def x3(self, x):
        return d32(x).reshape(self.outer, self.c, self.inner)

    def no_target_grad(self, propagate_down):
        if propagate_down[1]:
            raise NotImplementedError('%s: no gradient with respect to the target labels; '
                                      'set target.need_grad = False' % self.spec.name)


@register('CategoricalCrossEntropy')
class CategoricalCrossEntropy(_LabelAxis):
    def setup(self, inputs):
        return [self.setup_labels(inputs)]

    def forward(self, inputs, outputs):
        x, t = inputs
        p = np.take_along_axis(self.x3(x), self.labels(t), 1)
        np.copyto(dout(outputs[0]), -np.log(np.maximum(p, _TINY)).reshape(outputs[0].shape))

    def backward(self, inputs, outputs, propagate_down, accum):
        self.no_target_grad(propagate_down)
        if not propagate_down[0]:
            return
        x, t = inputs
        ti = self.labels(t)
        p = np.take_along_axis(self.x3(x), ti, 1)
        gy = g32(outputs[0]).reshape(self.outer, 1, self.inner)
        g = np.zeros((self.outer, self.c, self.inner), F32)
        np.put_along_axis(g, ti, -gy / np.maximum(p, _TINY), 1)
        _store(gout(x, accum[0]), g.reshape(x.shape), accum[0])


@register('TopNError')
class TopNError(_LabelAxis):
    def setup(self, inputs):
        want = self.setup_labels(inputs)
        if self.args['n'] < 1:
            raise self.error('n', 'must be at least 1, got %d' % self.args['n'])
        return [want]

    def forward(self, inputs, outputs):
        x, t = inputs
        x3 = self.x3(x)
        thresh = np.take_along_axis(x3, self.labels(t), 1)
        rank = (x3 >= thresh).sum(axis=1, keepdims=True)   # the label's place, ties counted
        np.copyto(dout(outputs[0]), (rank > self.args['n']).reshape(outputs[0].shape))

    def backward(self, inputs, outputs, propagate_down, accum):
        for i, (v, p, a) in enumerate(zip(inputs, propagate_down, accum)):
            if p and not a:
                gout(v, False).fill(0)    # a step function: zero gradient

    def grad_depends_input_data(self, i, j):
        return False


@register('ConfusionMatrix')
class ConfusionMatrix(_LabelAxis):
    def setup(self, inputs):
        self.setup_labels(inputs)
        return [(self.c, self.c)]

    def forward(self, inputs, outputs):
        x, t = inputs
        pred = self.x3(x).argmax(axis=1).reshape(-1)
        label = self.labels(t).reshape(-1)
        counts = np.bincount(label * self.c + pred, minlength=self.c * self.c)
        np.copyto(dout(outputs[0]), counts.reshape(self.c, self.c))

    def backward(self, inputs, outputs, propagate_down, accum):
        for v, p, a in zip(inputs, propagate_down, accum):
            if p and not a:
                gout(v, False).fill(0)    # counts: zero gradient

    def grad_depends_input_data(self, i, j):
        return False


@register('KLMultinomial')
class KLMultinomial(Impl):
    def setup(self, inputs):
        p, q = inputs
        if p.shape != q.shape:
            raise self.error('q', 'must have the shape of p %s, got %s' % (p.shape, q.shape))
        base = self.args['base_axis']
        if not 0 <= base < max(len(p.shape), 1):
            raise self.error('base_axis', 'must lie in [0, %d) for p of shape %s, got %d'
                             % (len(p.shape), p.shape, base))
        self.axes = tuple(range(base, len(p.shape)))
        return [p.shape[:base] + (1,)]

    def forward(self, inputs, outputs):
        p, q = (d32(v).astype(np.float64) for v in inputs)
        kl = (p * (np.log(p) - np.log(q))).sum(axis=self.axes)
        np.copyto(dout(outputs[0]), kl.reshape(outputs[0].shape))

    def backward(self, inputs, outputs, propagate_down, accum):
        p, q = (d32(v) for v in inputs)
        gy = g32(outputs[0]).reshape(outputs[0].shape[:-1] + (1,) * len(self.axes))
        if propagate_down[0]:
            _store(gout(inputs[0], accum[0]), gy * (np.log(p) - np.log(q) + 1), accum[0])
        if propagate_down[1]:
            _store(gout(inputs[1], accum[1]), -gy * p / q, accum[1])


@register('Prune')
class Prune(Impl):
    def setup(self, inputs):
        rate = self.args['rate']
        if not 0.0 <= rate <= 1.0:
            raise self.error('rate', 'must lie in [0, 1], got %r' % (rate,))
        return [inputs[0].shape]

    def forward(self, inputs, outputs):
        x = d32(inputs[0])
        y = dout(outputs[0])
        if x.size == 0:
            return
        a = np.abs(x).reshape(-1)
        k = int((a.size - 1) * self.args['rate'])
        thresh = np.partition(a, k)[k]
        np.copyto(y, np.where(np.abs(x) < thresh, F32(0), x))

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0]:   # straight through
            _store(gout(inputs[0], accum[0]), g32(outputs[0]), accum[0])

    def grad_depends_input_data(self, i, j):
        return False


class _FFT(Impl):
    """Complex transforms over the signal_ndim axes before the last, which holds
    (real, imaginary); any leading axes are a batch."""
    inverse = False

    def setup(self, inputs):
        x = inputs[0]
        d = self.args['signal_ndim']
        if d not in (1, 2, 3):
            raise self.error('signal_ndim', 'must be 1, 2 or 3, got %r' % (d,))
        if len(x.shape) < d + 1 or x.shape[-1] != 2:
            raise self.error('x', 'must have at least %d dimensions with a last one of size 2 '
                             '(real, imaginary) for signal_ndim=%d, got shape %s'
                             % (d + 1, d, x.shape))
        self.axes = tuple(range(len(x.shape) - 1 - d, len(x.shape) - 1))
        return [x.shape]

    def forward(self, inputs, outputs):
        x = d32(inputs[0])
        c = x[..., 0] + 1j * x[..., 1].astype(np.float64)
        fn = np.fft.ifftn if self.inverse else np.fft.fftn
        z = fn(c, axes=self.axes, norm='ortho' if self.args['normalized'] else 'backward')
        y = dout(outputs[0])
        y[..., 0] = z.real
        y[..., 1] = z.imag

    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        g = g32(outputs[0])
        c = g[..., 0] + 1j * g[..., 1].astype(np.float64)
        # The adjoint of the forward map: the transform in the other direction,
        # with the scale of the forward one.
        fn = np.fft.fftn if self.inverse else np.fft.ifftn
        if self.args['normalized']:
            norm = 'ortho'
        else:
            norm = 'forward'
        z = fn(c, axes=self.axes, norm=norm)
        gx = gout(inputs[0], accum[0])
        _store(gx, np.stack([z.real, z.imag], axis=-1).astype(F32), accum[0])

    def grad_depends_input_data(self, i, j):
        return False


@register('FFT')
class FFT(_FFT):
    pass


@register('IFFT')
class IFFT(_FFT):
    inverse = True
