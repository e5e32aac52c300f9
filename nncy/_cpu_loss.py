"""CPU implementations of the structured functions of the loss, validation,
detection, quantization, signal-processing and special-use groups:
categorical_cross_entropy, kl_multinomial, top_n_error, confusion_matrix,
nms_detection2d, prune, binary_connect_affine, binary_weight_affine,
min_max_quantize, inq_affine, fft, ifft, interpolate, stft, istft, vat_noise
and warp_by_flow.  (sigmoid_cross_entropy, binary_cross_entropy,
squared_error, absolute_error, huber_loss, epsilon_insensitive_loss,
binary_error, binary_sigmoid, binary_tanh, fixed_point_quantize,
pow2_quantize and unlink are pointwise rows of the table.)

As elsewhere, ``setup`` checks every argument and shape before any work is
done.  The work is whole-array NumPy (pocketfft for the transforms, BLAS for
the matrix products), without per-element Python loops; the only loops run
over a handful of axes or corners, or (nms_detection2d) over rounds of
suppression, each covering all boxes at once.
"""
import numpy as np

from nncy._core import Impl, Variable, implementation, register, d32, dout, g32, gout
from nncy._table import BY_TYPE
from nncy import random as _random
from nncy._cpu import _axis, _prod, _split, store

F32 = np.float32
_TINY = np.finfo(np.float32).tiny


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

    ignore_negative = False   # labels below 0 mark samples to skip

    def labels(self, t):
        """The labels as int64 (outer, 1, inner), checked against the class count."""
        ti = np.asarray(t.d).astype(np.int64).reshape(self.outer, 1, self.inner)
        bad = (ti >= self.c) if self.ignore_negative else (ti < 0) | (ti >= self.c)
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
    """-log x[label]; a negative label gives 0 and no gradient."""
    ignore_negative = True

    def setup(self, inputs):
        return [self.setup_labels(inputs)]

    def forward(self, inputs, outputs):
        x, t = inputs
        ti = self.labels(t)
        p = np.take_along_axis(self.x3(x), np.maximum(ti, 0), 1)
        y = np.where(ti < 0, F32(0), -np.log(np.maximum(p, _TINY)))
        np.copyto(dout(outputs[0]), y.reshape(outputs[0].shape))

    def backward(self, inputs, outputs, propagate_down, accum):
        self.no_target_grad(propagate_down)
        if not propagate_down[0]:
            return
        x, t = inputs
        ti = self.labels(t)
        keep = np.maximum(ti, 0)
        p = np.take_along_axis(self.x3(x), keep, 1)
        gy = g32(outputs[0]).reshape(self.outer, 1, self.inner)
        g = np.zeros((self.outer, self.c, self.inner), F32)
        np.put_along_axis(g, keep, np.where(ti < 0, F32(0), -gy / np.maximum(p, _TINY)), 1)
        store(gout(x, accum[0]), g.reshape(x.shape), accum[0])


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
        kl = (p * (np.log(p + 1e-8) - np.log(q + 1e-8))).sum(axis=self.axes)
        np.copyto(dout(outputs[0]), kl.reshape(outputs[0].shape))

    def backward(self, inputs, outputs, propagate_down, accum):
        p, q = (d32(v) for v in inputs)
        gy = g32(outputs[0]).reshape(outputs[0].shape[:-1] + (1,) * len(self.axes))
        if propagate_down[0]:
            store(gout(inputs[0], accum[0]), gy * (np.log(p + F32(1e-8)) - np.log(q + F32(1e-8))
                                                     + 1), accum[0])
        if propagate_down[1]:
            store(gout(inputs[1], accum[1]), -gy * p / q, accum[1])


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
            store(gout(inputs[0], accum[0]), g32(outputs[0]), accum[0])

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
        store(gx, np.stack([z.real, z.imag], axis=-1).astype(F32), accum[0])

    def grad_depends_input_data(self, i, j):
        return False


@register('FFT')
class FFT(_FFT):
    pass


@register('IFFT')
class IFFT(_FFT):
    inverse = True


def _iou_xywh(b):
    """IoU of every pair of boxes (..., N, 4) given as (centre x, centre y, w, h):
    (..., N, N)."""
    lo = b[..., :2] - b[..., 2:] / 2
    hi = b[..., :2] + b[..., 2:] / 2
    side = np.minimum(hi[..., :, None, :], hi[..., None, :, :]) - \
        np.maximum(lo[..., :, None, :], lo[..., None, :, :])
    inter = np.where((side > 0).all(-1), side[..., 0] * side[..., 1], 0.0)
    area = b[..., 2] * b[..., 3]
    union = area[..., :, None] + area[..., None, :] - inter
    with np.errstate(divide='ignore', invalid='ignore'):
        return np.where(union > 0, inter / union, 0.0)


def _greedy_keep(score, over):
    """Greedy non-maximum suppression, vectorised: boxes are visited by falling
    score (ties by index); a box with a positive score is kept unless a kept box
    ranked above it overlaps it (``over``).  ``score`` (..., N), ``over`` (..., N, N)
    broadcastable; returns the kept mask (..., N).

    Iterating ``keep = valid & ~any(keep_j & above_j & over_ij)`` from all-kept
    settles the top k boxes after k rounds; it stops when nothing changes, after
    as many rounds as the longest chain of suppressions, each over all boxes."""
    n = score.shape[-1]
    order = np.argsort(-score, axis=-1, kind='stable')
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(n), order.shape), -1)
    above = rank[..., None, :] < rank[..., :, None]           # j ranked above i
    block = above & over
    valid = score > 0
    keep = valid.copy()
    for _ in range(n + 1):
        new = valid & ~(block & keep[..., None, :]).any(-1)
        if np.array_equal(new, keep):
            break
        keep = new
    return keep


@register('NmsDetection2d')
class NmsDetection2d(Impl):
    def setup(self, inputs):
        x = inputs[0]
        if len(x.shape) != 3 or x.shape[2] < 6:
            raise self.error('x', 'must have shape (B, N, 5 + C) with C >= 1, got %s'
                             % (x.shape,))
        for k in ('thresh', 'nms'):
            if not 0.0 <= self.args[k] <= 1.0:
                raise self.error(k, 'must lie in [0, 1], got %r' % (self.args[k],))
        return [x.shape]

    def forward(self, inputs, outputs):
        x = d32(inputs[0]).astype(np.float64)
        thresh = self.args['thresh']
        obj = np.where(x[..., 4] < thresh, 0.0, x[..., 4])
        prob = obj[..., None] * x[..., 5:]
        prob = np.where(prob < thresh, 0.0, prob)
        over = _iou_xywh(x[..., :4]) > self.args['nms']                # (B, N, N)
        if self.args['nms_per_class']:
            keep = _greedy_keep(np.swapaxes(prob, 1, 2), over[:, None])   # (B, C, N)
            prob = prob * np.swapaxes(keep, 1, 2)
        else:
            # by objectness: a box goes when any box ranked above it overlaps it,
            # whether or not that box survives itself
            n = obj.shape[-1]
            order = np.argsort(-obj, axis=-1, kind='stable')
            rank = np.empty_like(order)
            np.put_along_axis(rank, order, np.broadcast_to(np.arange(n), order.shape), -1)
            above = rank[..., None, :] < rank[..., :, None]
            keep = ~(above & over).any(-1)
            obj = obj * keep
            prob = prob * keep[..., None]
        y = dout(outputs[0])
        y[..., :4] = x[..., :4]
        y[..., 4] = obj
        y[..., 5:] = prob

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0]:
            raise NotImplementedError('nms_detection2d: has no gradient; set x.need_grad = '
                                      'False')


def _interp_matrix(n_in, n_out, mode, align_corners, half_pixel, half_pixel_for_nn):
    """The (n_out, n_in) matrix of 1-D resampling along one axis."""
    o = np.arange(n_out, dtype=np.float64)
    if n_out <= 1:
        scale = 0.0          # a single output samples the first input
    elif align_corners:
        scale = (n_in - 1) / (n_out - 1)
    else:
        scale = n_in / n_out
    m = np.zeros((n_out, n_in), np.float64)
    rows = np.arange(n_out)
    if mode == 'nearest':
        if half_pixel_for_nn:     # the older rule: centres, scale in / out
            src = (o + 0.5) * (n_in / n_out)
        elif half_pixel:
            src = (o + 0.5) * scale - 0.5
        else:
            src = o * scale
        idx = np.clip(np.floor(src), 0, n_in - 1).astype(np.int64)
        m[rows, idx] = 1.0
        return m
    src = (o + 0.5) * scale - 0.5 if half_pixel else o * scale
    src = np.clip(src, 0, n_in - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w = src - i0
    np.add.at(m, (rows, i0), 1 - w)
    np.add.at(m, (rows, i1), w)
    return m


@register('Interpolate')
class Interpolate(Impl):
    """Separable resampling: one (out, in) matrix per spatial axis, applied to
    the array axis by axis; the backward pass applies the transposes."""

    def setup(self, inputs):
        x = inputs[0]
        a = self.args
        scale, size = a['scale'], a['output_size']
        if a['mode'] not in ('linear', 'nearest'):
            raise self.error('mode', "must be 'linear' or 'nearest', got %r" % (a['mode'],))
        if a['align_corners'] and a['half_pixel']:
            raise self.error('align_corners', 'and half_pixel cannot both be True')
        if scale is None and size is None:
            raise self.error('output_size', 'or scale must be given', TypeError)
        k = len(size) if size is not None else len(scale)
        last = len(x.shape) - 1 if a['channel_last'] else len(x.shape)
        if k == 0 or k > last:
            raise self.error('output_size' if size is not None else 'scale',
                             'must name 1 to %d spatial dimensions of x of shape %s, got %d'
                             % (last, x.shape, k))
        self.axes = list(range(last - k, last))
        in_sizes = [x.shape[i] for i in self.axes]
        if size is None:
            if any(s <= 0 for s in scale):
                raise self.error('scale', 'must be positive, got %r' % (tuple(scale),))
            size = [int(np.floor(s * n)) for s, n in zip(scale, in_sizes)]
        if any(s <= 0 for s in size) or any(n <= 0 for n in in_sizes):
            raise self.error('output_size', 'must give sizes of at least 1 from spatial sizes '
                             '%s, got %r' % (tuple(in_sizes), tuple(size)))
        self.mats = [_interp_matrix(n, s, a['mode'], a['align_corners'], a['half_pixel'],
                                    a['half_pixel_for_nn']).astype(F32)
                     for n, s in zip(in_sizes, size)]
        out = list(x.shape)
        for i, s in zip(self.axes, size):
            out[i] = s
        return [tuple(out)]

    def _apply(self, z, transpose):
        for ax, m in zip(self.axes, self.mats):
            z = np.moveaxis(np.moveaxis(z, ax, -1) @ (m if transpose else m.T), -1, ax)
        return z

    def forward(self, inputs, outputs):
        np.copyto(dout(outputs[0]), self._apply(d32(inputs[0]), False))

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0]:
            store(gout(inputs[0], accum[0]), self._apply(g32(outputs[0]), True), accum[0])

    def grad_depends_input_data(self, i, j):
        return False


class _WritesWeights:
    """forward writes the quantized weight (and, scaled, alpha) inputs."""
    scaled = False

    def updated_inputs(self):
        return (2, 3) if self.scaled else (2,)


class _BinaryAffine(_WritesWeights, Impl):
    """Affine layers over binarized weights.  forward writes sign(weight)
    (zero mapped to quantize_zero_to) into binary_weight (and, scaled, the
    per-output mean |weight| into alpha) and computes with binary_weight * alpha;
    backward passes the gradient of that effective weight straight through to
    weight.  binary_weight and alpha receive no gradient."""

    def setup(self, inputs):
        nfixed = 4 if self.scaled else 3
        x, w, bw = inputs[0], inputs[1], inputs[2]
        base = self.args['base_axis']
        if not 0 <= base < len(x.shape):
            raise self.error('base_axis', 'must lie in [0, %d) for input x of shape %s, got %d'
                             % (len(x.shape), x.shape, base))
        k = _prod(x.shape[base:])
        if len(w.shape) < 2 or w.shape[0] != k:
            raise self.error('weight', 'must have shape (%d, ...) to match x of shape %s '
                             'with base_axis=%d, got %s' % (k, x.shape, base, w.shape))
        if bw.shape != w.shape:
            raise self.error('binary_weight', 'must have the shape of weight %s, got %s'
                             % (w.shape, bw.shape))
        if self.scaled and inputs[3].shape != w.shape[1:]:
            raise self.error('alpha', 'must have shape %s, got %s' % (w.shape[1:], inputs[3].shape))
        self.has_bias = len(inputs) > nfixed
        if self.has_bias and inputs[nfixed].shape != w.shape[1:]:
            raise self.error('bias', 'must have shape %s, got %s'
                             % (w.shape[1:], inputs[nfixed].shape))
        self.k, self.n = k, _prod(w.shape[1:])
        self.base = base
        return [x.shape[:base] + w.shape[1:]]

    def _binary(self, inputs):
        w = d32(inputs[1]).reshape(self.k, self.n)
        bw = np.where(w > 0, F32(1), np.where(w < 0, F32(-1), F32(self.args['quantize_zero_to'])))
        np.copyto(dout(inputs[2]), bw.reshape(inputs[2].shape))
        scale = None
        if self.scaled:
            scale = np.abs(w).mean(axis=0, dtype=np.float64).astype(F32)
            np.copyto(dout(inputs[3]), scale.reshape(inputs[3].shape))
        return bw, scale

    def forward(self, inputs, outputs):
        bw, scale = self._binary(inputs)
        x = d32(inputs[0]).reshape(-1, self.k)
        y = x @ bw
        if scale is not None:
            y *= scale
        if self.has_bias:
            y += d32(inputs[-1]).reshape(1, self.n)
        np.copyto(dout(outputs[0]), y.reshape(outputs[0].shape))

    def backward(self, inputs, outputs, propagate_down, accum):
        gy = g32(outputs[0]).reshape(-1, self.n)
        bw = d32(inputs[2]).reshape(self.k, self.n)
        if propagate_down[0]:
            x = inputs[0]
            if self.scaled:       # the effective weight is alpha * binary_weight
                bw = bw * d32(inputs[3]).reshape(1, self.n)
            store(gout(x, accum[0]), (gy @ bw.T).reshape(x.shape), accum[0])
        if propagate_down[1]:
            # the gradient of the effective (binarized, scaled) weight, straight
            # through to weight
            w = inputs[1]
            xd = d32(inputs[0]).reshape(-1, self.k)
            store(gout(w, accum[1]), (xd.T @ gy).reshape(w.shape), accum[1])
        if self.has_bias and propagate_down[-1]:
            b = inputs[-1]
            gb = g32(outputs[0]).reshape(-1, self.n).sum(axis=0)
            store(gout(b, accum[-1]), gb.reshape(b.shape), accum[-1])


@register('BinaryConnectAffine')
class BinaryConnectAffine(_BinaryAffine):
    pass


@register('BinaryWeightAffine')
class BinaryWeightAffine(_BinaryAffine):
    scaled = True


def _reduce_to(a, shape):
    """Sum of ``a`` over the axes along which ``shape`` (same ndim or fewer) broadcasts."""
    lead = a.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape)
                                      if n == 1 and a.shape[lead + i] != 1)
    return a.sum(axis=axes, keepdims=True).reshape(shape)


@register('MinMaxQuantize')
class MinMaxQuantize(Impl):
    """Uniform quantization over the range [qr_min, qr_max] with the quantization
    levels [ql_min, ql_max], the range nudged so that 0 falls on a level.  The
    range inputs broadcast against x (per tensor or per channel)."""

    def updated_inputs(self):
        return (1, 2)   # qr_min, qr_max (when they track the data)

    def setup(self, inputs):
        x = inputs[0]
        nd = len(x.shape)
        for name, v in zip(('qr_min', 'qr_max', 'ql_min', 'ql_max'), inputs[1:]):
            s = v.shape
            if len(s) > nd or any(a not in (1, b) for a, b in zip(s[::-1], x.shape[::-1])):
                raise self.error(name, 'must broadcast to x of shape %s, got %s' % (x.shape, s))
        if inputs[1].shape != inputs[2].shape:
            raise self.error('qr_max', 'must have the shape of qr_min %s, got %s'
                             % (inputs[1].shape, inputs[2].shape))
        if not 0.0 <= self.args['decay'] <= 1.0:
            raise self.error('decay', 'must lie in [0, 1], got %r' % (self.args['decay'],))
        if self.args['eps'] <= 0:
            raise self.error('eps', 'must be positive, got %r' % (self.args['eps'],))
        return [x.shape]

    def _range(self, inputs, update):
        """The nudged (m, M, scale) as float64 arrays broadcasting against x."""
        a = self.args
        x = d32(inputs[0])
        qr_min, qr_max = inputs[1], inputs[2]
        if update and a['x_min_max']:
            shape = qr_min.shape
            xm = x.astype(np.float64)
            lead = x.ndim - len(shape)
            axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1)
            lo = xm.min(axis=axes, keepdims=True).reshape(shape)
            hi = xm.max(axis=axes, keepdims=True).reshape(shape)
            if a['ema']:
                d = a['decay']
                lo = d * d32(qr_min) + (1 - d) * lo
                hi = d * d32(qr_max) + (1 - d) * hi
            np.copyto(dout(qr_min), lo)
            np.copyto(dout(qr_max), hi)
        m = d32(qr_min).astype(np.float64)
        big = d32(qr_max).astype(np.float64)
        if update and (big - m < a['eps']).any():   # widen the range to eps, stored
            big = np.where(big - m < a['eps'], m + a['eps'], big)
            np.copyto(dout(qr_max), big)
        lq = d32(inputs[3]).astype(np.float64)
        hq = d32(inputs[4]).astype(np.float64)
        scale = (big - m) / (hq - lq)
        zp = np.clip(np.floor(lq - m / scale + 0.5), lq, hq)
        return (lq - zp) * scale, (hq - zp) * scale, scale

    def forward(self, inputs, outputs):
        x = d32(inputs[0])
        y = dout(outputs[0])
        m, big, scale = self._range(inputs, True)
        if not self.args['quantize']:
            np.copyto(y, x)
            return
        c = np.clip(x, m, big)
        np.copyto(y, np.floor((c - m) / scale + 0.5) * scale + m)

    def backward(self, inputs, outputs, propagate_down, accum):
        a = self.args
        gy = g32(outputs[0])
        x = d32(inputs[0])
        m, big, _ = self._range(inputs, False)
        if propagate_down[0]:
            g = gy * ((x >= m) & (x <= big)) if a['ste_fine_grained'] and a['quantize'] else gy
            store(gout(inputs[0], accum[0]), g, accum[0])
        learn = not a['x_min_max'] and not a['ema']
        for i, mask in ((1, x < m), (2, x > big)):
            if propagate_down[i]:
                v = inputs[i]
                g = _reduce_to(gy * mask, v.shape) if learn else np.zeros(v.shape, F32)
                store(gout(v, accum[i]), g, accum[i])
        for i in (3, 4):
            if propagate_down[i] and not accum[i]:
                gout(inputs[i], False).fill(0)


@register('VATNoise')
class VATNoise(Impl):
    """y = eps x / sqrt(sum x^2 + c) per sample; backward writes eps * dy into
    w's data and gives x no gradient."""
    C = 1e-8

    def updated_inputs_in_backward(self):
        return (1,)

    def setup(self, inputs):
        x, w = inputs
        base = self.args['base_axis']
        if not 0 <= base < max(len(x.shape), 1):
            raise self.error('base_axis', 'must lie in [0, %d) for x of shape %s, got %d'
                             % (len(x.shape), x.shape, base))
        if _prod(w.shape) != _prod(x.shape):
            raise self.error('w', 'must have as many elements as x %s, got shape %s'
                             % (x.shape, w.shape))
        self.axes = tuple(range(base, len(x.shape)))
        return [x.shape]

    def forward(self, inputs, outputs):
        x = d32(inputs[0]).astype(np.float64)
        norm = np.sqrt((x * x).sum(axis=self.axes, keepdims=True) + self.C)
        np.copyto(dout(outputs[0]), self.args['eps'] * x / norm)

    def backward(self, inputs, outputs, propagate_down, accum):
        x, w = inputs
        np.copyto(dout(w), (self.args['eps'] * g32(outputs[0])).reshape(w.shape))
        if propagate_down[0] and not accum[0]:
            gout(x, False).fill(0)

    def grad_depends_input_data(self, i, j):
        return False


@register('WarpByFlow')
class WarpByFlow(Impl):
    """Bilinear sampling of data (N, C, H, W) at (y + flow[:, 1], x + flow[:, 0]),
    coordinates clamped to the image (border replication)."""

    def setup(self, inputs):
        data, flow = inputs
        if len(data.shape) != 4:
            raise self.error('data', 'must be 4-D (N, C, H, W), got shape %s' % (data.shape,))
        n, c, h, w = data.shape
        if flow.shape != (n, 2, h, w):
            raise self.error('flow', 'must have shape %s for data of shape %s, got %s'
                             % ((n, 2, h, w), data.shape, flow.shape))
        return [data.shape]

    def _coords(self, flow):
        n, _, h, w = flow.shape
        f = flow.astype(np.float64)
        xs = np.arange(w)[None, None, :] + f[:, 0]
        ys = np.arange(h)[None, :, None] + f[:, 1]
        inx = (xs > 0) & (xs < w - 1)
        iny = (ys > 0) & (ys < h - 1)
        xs = np.clip(xs, 0, w - 1)
        ys = np.clip(ys, 0, h - 1)
        x0 = np.floor(xs).astype(np.int64)
        y0 = np.floor(ys).astype(np.int64)
        x1 = np.minimum(x0 + 1, w - 1)
        y1 = np.minimum(y0 + 1, h - 1)
        return x0, x1, y0, y1, xs - x0, ys - y0, inx, iny

    def _corners(self, d, x0, x1, y0, y1):
        """The four neighbours of every sample point: (N, C, H, W) each."""
        n = d.shape[0]
        b = np.arange(n)[:, None, None]
        return [d[b, :, yy, xx].transpose(0, 3, 1, 2)
                for yy, xx in ((y0, x0), (y0, x1), (y1, x0), (y1, x1))]

    def forward(self, inputs, outputs):
        d = d32(inputs[0]).astype(np.float64)
        x0, x1, y0, y1, wx, wy, _, _ = self._coords(d32(inputs[1]))
        a, b, c, e = self._corners(d, x0, x1, y0, y1)
        wx, wy = wx[:, None], wy[:, None]
        out = (1 - wy) * ((1 - wx) * a + wx * b) + wy * ((1 - wx) * c + wx * e)
        np.copyto(dout(outputs[0]), out)

    def backward(self, inputs, outputs, propagate_down, accum):
        data, flow = inputs
        n, ch, h, w = data.shape
        gy = g32(outputs[0]).astype(np.float64)
        x0, x1, y0, y1, wx, wy, inx, iny = self._coords(d32(flow))
        if propagate_down[0]:
            base = (np.arange(n)[:, None, None, None] * ch + np.arange(ch)[None, :, None, None]) \
                * (h * w)
            g = np.zeros(n * ch * h * w)
            wx4, wy4 = wx[:, None], wy[:, None]
            for yy, xx, wgt in ((y0, x0, (1 - wy4) * (1 - wx4)), (y0, x1, (1 - wy4) * wx4),
                                (y1, x0, wy4 * (1 - wx4)), (y1, x1, wy4 * wx4)):
                idx = base + (yy * w + xx)[:, None]
                g += np.bincount(idx.reshape(-1), (gy * wgt).reshape(-1), n * ch * h * w)
            store(gout(data, accum[0]), g.reshape(data.shape), accum[0])
        if propagate_down[1]:
            d = d32(data).astype(np.float64)
            a, b, c, e = self._corners(d, x0, x1, y0, y1)
            wx4, wy4 = wx[:, None], wy[:, None]
            dx = ((1 - wy4) * (b - a) + wy4 * (e - c)) * gy
            dy = ((1 - wx4) * (c - a) + wx4 * (e - b)) * gy
            gf = np.stack([dx.sum(1) * inx, dy.sum(1) * iny], axis=1)
            store(gout(flow, accum[1]), gf, accum[1])


def _inq_quantize(w, num_bits):
    """Powers of two for incremental network quantization: the levels
    {0, +-2^n2, ..., +-2^n1} with n1 = floor(log2(4 max|w| / 3)) and
    n2 = n1 + 1 - 2^(num_bits - 2); each weight goes to the nearest level."""
    a = np.abs(w).astype(np.float64)
    s = a.max() if a.size else 0.0
    if s == 0:
        return np.zeros_like(w)
    n1 = int(np.floor(np.log2(4 * s / 3)))
    n2 = n1 + 1 - 2 ** (num_bits - 2)
    levels = np.concatenate([[0.0], 2.0 ** np.arange(n2, n1 + 1)])
    mids = (levels[:-1] + levels[1:]) / 2
    q = levels[np.searchsorted(mids, a, side='right')]
    return (np.sign(w) * q).astype(F32)


class _INQWeights:
    """The weight schedule of incremental network quantization, shared by
    INQAffine and INQConvolution."""

    def updated_inputs(self):
        return (1, 2)   # weight, indicator

    def _setup_inq(self):
        a = self.args
        if a['num_bits'] < 2:
            raise self.error('num_bits', 'must be at least 2, got %d' % a['num_bits'])
        its = tuple(a['inq_iterations'] or ())
        if any(i < 0 for i in its) or list(its) != sorted(its):
            raise self.error('inq_iterations', 'must be non-negative and non-decreasing, got %r'
                             % (its,))
        if a['selection_algorithm'] not in ('largest_abs', 'random'):
            raise self.error('selection_algorithm', "must be 'largest_abs' or 'random', got %r"
                             % (a['selection_algorithm'],))
        self.its = its
        self.count = 0
        self.old = None      # (weights, fixed mask) after the last forward pass
        self.rng = _random.generator(a['seed']) if a['seed'] >= 0 else _random.prng

    def weight(self, inputs):
        """One forward pass of the schedule: fix more weights when due, write
        weight and indicator back, and return the weights (flat)."""
        wv, iv = inputs[1], inputs[2]
        w = np.array(d32(wv), copy=True).reshape(-1)
        if self.old is not None:    # weights fixed by an earlier pass keep their values
            w = np.where(self.old[1], self.old[0], w)
        fixed = d32(iv).reshape(-1) != 0
        self._fix_more(w, fixed)
        self.count += 1
        w = np.where(fixed, _inq_quantize(w, self.args['num_bits']), w)
        self.old = (w.copy(), fixed.copy())
        np.copyto(dout(wv), w.reshape(wv.shape))
        np.copyto(dout(iv), fixed.reshape(iv.shape))
        return w

    def weight_grad_mask(self, inputs):
        """Only the learnable (not yet fixed) weights get gradients."""
        return d32(inputs[2]) == 0

    def _fix_more(self, w, fixed):
        for it in self.its:
            if it != self.count:
                continue
            free = np.flatnonzero(~fixed)
            if it == self.its[-1]:
                fixed[:] = True
                continue
            if self.args['selection_algorithm'] == 'largest_abs':
                m = max(len(free) // 2, 1) if len(free) else 0
                fixed[free[np.argsort(-np.abs(w[free]), kind='stable')[:m]]] = True
            else:                   # each learnable weight with probability 1/2
                fixed[free[self.rng.rand(len(free)) < 0.5]] = True


@register('INQAffine')
class INQAffine(_INQWeights, Impl):
    """Affine layer whose weights are fixed to powers of two step by step
    (incremental network quantization).  Each forward pass counts; at a count
    listed in inq_iterations half of the still learnable weights become fixed
    (all of them at the last listed count), chosen by largest magnitude or each
    with probability 1/2.  Fixed weights (indicator 1) are written back
    quantized, and restored at the next pass should anything change them; only
    the learnable ones receive a gradient."""

    def setup(self, inputs):
        x, w, ind = inputs[0], inputs[1], inputs[2]
        a = self.args
        base = a['base_axis']
        if not 0 <= base < len(x.shape):
            raise self.error('base_axis', 'must lie in [0, %d) for input x of shape %s, got %d'
                             % (len(x.shape), x.shape, base))
        k = _prod(x.shape[base:])
        if len(w.shape) < 2 or w.shape[0] != k:
            raise self.error('weight', 'must have shape (%d, ...) to match x of shape %s '
                             'with base_axis=%d, got %s' % (k, x.shape, base, w.shape))
        if ind.shape != w.shape:
            raise self.error('indicator_fixedweights', 'must have the shape of weight %s, '
                             'got %s' % (w.shape, ind.shape))
        self.has_bias = len(inputs) > 3
        if self.has_bias and inputs[3].shape != w.shape[1:]:
            raise self.error('bias', 'must have shape %s, got %s' % (w.shape[1:], inputs[3].shape))
        self._setup_inq()
        self.k, self.n = k, _prod(w.shape[1:])
        return [x.shape[:base] + w.shape[1:]]

    def forward(self, inputs, outputs):
        w = self.weight(inputs)
        y = d32(inputs[0]).reshape(-1, self.k) @ w.reshape(self.k, self.n)
        if self.has_bias:
            y += d32(inputs[3]).reshape(1, self.n)
        np.copyto(dout(outputs[0]), y.reshape(outputs[0].shape))

    def backward(self, inputs, outputs, propagate_down, accum):
        gy = g32(outputs[0]).reshape(-1, self.n)
        w = d32(inputs[1]).reshape(self.k, self.n)
        if propagate_down[0]:
            x = inputs[0]
            store(gout(x, accum[0]), (gy @ w.T).reshape(x.shape), accum[0])
        if propagate_down[1]:
            wv = inputs[1]
            free = d32(inputs[2]).reshape(self.k, self.n) == 0
            g = (d32(inputs[0]).reshape(-1, self.k).T @ gy) * free
            store(gout(wv, accum[1]), g.reshape(wv.shape), accum[1])
        if propagate_down[2] and not accum[2]:
            gout(inputs[2], False).fill(0)
        if self.has_bias and propagate_down[3]:
            b = inputs[3]
            store(gout(b, accum[3]), gy.sum(axis=0).reshape(b.shape), accum[3])


class _ConvOverWeight(Impl):
    """A convolution whose weight is replaced by an effective one (binarized,
    scaled, quantized) computed by ``weight(inputs)``; the weight's gradient is
    that of the effective weight times ``weight_grad_mask(inputs)`` (straight
    through).  ``n_side`` inputs after the weight receive no gradient."""
    n_side = 1

    def setup(self, inputs):
        x, w = inputs[0], inputs[1]
        for name, v in zip(self.spec.inputs[2:2 + self.n_side], inputs[2:2 + self.n_side]):
            want = w.shape if name.name != 'alpha' else w.shape[:1]
            if v.shape != want:
                raise self.error(name.name, 'must have shape %s, got %s' % (want, v.shape))
        conv = BY_TYPE['Convolution']
        args = {k: self.args.get(k, d) for k, _, d in conv.args}
        # the inner convolution reports errors under this function's name
        self.conv = implementation('Convolution')(self.spec, args, self.ctx)
        self.bias = list(inputs[2 + self.n_side:])
        return self.conv.setup([x, w] + self.bias)

    def weight_grad_mask(self, inputs):
        return None

    def forward(self, inputs, outputs):
        w = Variable.from_numpy_array(np.asarray(self.weight(inputs), F32).reshape(inputs[1].shape))
        self.conv.forward([inputs[0], w] + self.bias, outputs)

    def backward(self, inputs, outputs, propagate_down, accum):
        w = Variable.from_numpy_array(self._effective(inputs))
        nb = 2 + self.n_side          # the bias, if any, follows the side inputs
        self.conv.backward([inputs[0], w] + self.bias, outputs,
                           [propagate_down[0], propagate_down[1]] + list(propagate_down[nb:]),
                           [accum[0], False] + list(accum[nb:]))
        if propagate_down[1]:
            g = w.g
            mask = self.weight_grad_mask(inputs)
            store(gout(inputs[1], accum[1]), g if mask is None else g * mask, accum[1])
        for i in range(2, 2 + self.n_side):
            if propagate_down[i] and not accum[i]:
                gout(inputs[i], False).fill(0)


class _BinaryConv(_WritesWeights, _ConvOverWeight):

    def weight(self, inputs):
        w = d32(inputs[1])
        bw = np.where(w > 0, F32(1), np.where(w < 0, F32(-1), F32(self.args['quantize_zero_to'])))
        np.copyto(dout(inputs[2]), bw)
        if not self.scaled:
            return bw
        alpha = np.abs(w).reshape(w.shape[0], -1).mean(axis=1, dtype=np.float64).astype(F32)
        np.copyto(dout(inputs[3]), alpha.reshape(inputs[3].shape))
        return bw * alpha.reshape((-1,) + (1,) * (w.ndim - 1))

    def _effective(self, inputs):
        bw = d32(inputs[2])
        if not self.scaled:
            return bw
        return bw * d32(inputs[3]).reshape((-1,) + (1,) * (bw.ndim - 1))


@register('BinaryConnectConvolution')
class BinaryConnectConvolution(_BinaryConv):
    pass


@register('BinaryWeightConvolution')
class BinaryWeightConvolution(_BinaryConv):
    scaled = True
    n_side = 2


@register('INQConvolution')
class INQConvolution(_INQWeights, _ConvOverWeight):
    def setup(self, inputs):
        shapes = _ConvOverWeight.setup(self, inputs)
        self._setup_inq()
        return shapes

    def _effective(self, inputs):
        return d32(inputs[1])

    def weight_grad_mask(self, inputs):
        return _INQWeights.weight_grad_mask(self, inputs)


def _window(impl, kind, size, fft_size):
    """The analysis window (periodic Hann or Hamming, or rectangular), zero-padded
    to fft_size and centred."""
    if kind in (None, 'rectangular'):
        w = np.ones(size)
    elif kind == 'hanning':
        w = np.hanning(size + 1)[:-1]
    elif kind == 'hamming':
        w = np.hamming(size + 1)[:-1]
    else:
        raise impl.error('window_type', "must be 'hanning', 'hamming', 'rectangular' or None, "
                         'got %r' % (kind,))
    left = (fft_size - size) // 2
    out = np.zeros(fft_size)
    out[left:left + size] = w
    return out


def _check_stft_sizes(impl):
    a = impl.args
    for k in ('window_size', 'stride', 'fft_size'):
        if a[k] < 1:
            raise impl.error(k, 'must be positive, got %d' % a[k])
    if a['window_size'] > a['fft_size']:
        raise impl.error('window_size', 'must not exceed fft_size=%d, got %d'
                         % (a['fft_size'], a['window_size']))


def _dft_mats(n, half_only=True):
    """cos and sin of 2 pi k m / n for k < n // 2 + 1 (rows) and m < n (columns)."""
    k = np.arange(n // 2 + 1)[:, None]
    m = np.arange(n)[None, :]
    ang = 2 * np.pi * ((k * m) % n) / n
    return np.cos(ang), np.sin(ang)


@register('STFT')
class STFT(Impl):
    """Frames of x (B, L) (padded by fft_size // 2 on both sides when centred),
    windowed and transformed by a real FFT: outputs (B, fft_size // 2 + 1, frames)."""

    def setup(self, inputs):
        x = inputs[0]
        a = self.args
        _check_stft_sizes(self)
        if len(x.shape) != 2:
            raise self.error('x', 'must be 2-D (batch, samples), got shape %s' % (x.shape,))
        if a['pad_mode'] not in ('reflect', 'constant'):
            raise self.error('pad_mode', "must be 'reflect' or 'constant', got %r"
                             % (a['pad_mode'],))
        n, L = a['fft_size'], x.shape[1]
        self.win = _window(self, a['window_type'], a['window_size'], n)
        src = np.arange(L)
        if a['center']:
            p = n // 2
            if a['pad_mode'] == 'reflect':
                if L <= p:
                    raise self.error('x', 'needs more than %d samples for reflect padding, got %d'
                                     % (p, L))
                src = np.pad(src, p, mode='reflect')
            else:
                src = np.concatenate([np.full(p, -1), src, np.full(p, -1)])
        if len(src) < n:
            raise self.error('fft_size', 'is longer than the (padded) signal: %d > %d'
                             % (n, len(src)))
        frames = (len(src) - n) // a['stride'] + 1
        self.idx = src[np.arange(frames)[:, None] * a['stride'] + np.arange(n)[None, :]]
        self.L = L
        shape = (x.shape[0], n // 2 + 1, frames)
        return [shape, shape]

    def _frames(self, x):
        xp = np.concatenate([x, np.zeros((x.shape[0], 1), x.dtype)], axis=1)   # -1: zero
        return xp[:, self.idx] * self.win                                      # (B, T, N)

    def forward(self, inputs, outputs):
        z = np.fft.rfft(self._frames(d32(inputs[0]).astype(np.float64)), axis=-1)
        np.copyto(dout(outputs[0]), z.real.transpose(0, 2, 1))
        np.copyto(dout(outputs[1]), z.imag.transpose(0, 2, 1))

    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        x = inputs[0]
        b = x.shape[0]
        c, s = _dft_mats(self.args['fft_size'])
        gr = g32(outputs[0]).astype(np.float64).transpose(0, 2, 1)           # (B, T, K)
        gi = g32(outputs[1]).astype(np.float64).transpose(0, 2, 1)
        gf = (gr @ c - gi @ s) * self.win                                   # (B, T, N)
        idx = np.broadcast_to(self.idx, gf.shape)
        keep = idx >= 0
        flat = (np.arange(b)[:, None, None] * self.L + idx)[keep]
        g = np.bincount(flat, gf[keep], b * self.L).reshape(b, self.L)
        store(gout(x, accum[0]), g, accum[0])

    def grad_depends_input_data(self, i, j):
        return False


@register('ISTFT')
class ISTFT(Impl):
    """Inverse of stft: inverse real FFT of every frame, weighted by the window
    over its squared sum along a frame's circular shifts by stride (one fixed
    weight per position in the frame), overlap-added; the centre padding is
    cut off.  The first and last fft_size - stride samples are therefore not
    exactly reconstructed."""

    def setup(self, inputs):
        yr, yi = inputs
        a = self.args
        _check_stft_sizes(self)
        n = a['fft_size']
        if len(yr.shape) != 3 or yr.shape[1] != n // 2 + 1:
            raise self.error('y_r', 'must have shape (batch, %d, frames), got %s'
                             % (n // 2 + 1, yr.shape))
        if yi.shape != yr.shape:
            raise self.error('y_i', 'must have the shape of y_r %s, got %s' % (yr.shape, yi.shape))
        if n % a['stride']:
            raise self.error('stride', 'must divide fft_size=%d, got %d' % (n, a['stride']))
        win = _window(self, a['window_type'], a['window_size'], n)
        sq = sum(np.roll(win ** 2, i) for i in range(0, n, a['stride']))
        self.win = np.where(sq > 0, win / np.where(sq > 0, sq, 1.0), 0.0)
        t = yr.shape[2]
        total = (t - 1) * a['stride'] + n
        self.pos = np.arange(t)[:, None] * a['stride'] + np.arange(n)[None, :]   # (T, N)
        self.cut = n // 2 if a['center'] else 0
        self.total = total
        length = total - 2 * self.cut
        if length < 1:
            raise self.error('y_r', 'has too few frames (%d) for fft_size=%d' % (t, n))
        # irfft as matrices: frame = Yr @ C + Yi @ S (imaginary DC / Nyquist ignored)
        c, s = _dft_mats(n)
        wk = np.full(n // 2 + 1, 2.0)
        wk[0] = 1.0
        if n % 2 == 0:
            wk[-1] = 1.0
        self.C = wk[:, None] * c / n
        self.S = -wk[:, None] * s / n
        return [(yr.shape[0], length)]

    def forward(self, inputs, outputs):
        yr = d32(inputs[0]).astype(np.float64).transpose(0, 2, 1)              # (B, T, K)
        yi = d32(inputs[1]).astype(np.float64).transpose(0, 2, 1)
        frames = (yr @ self.C + yi @ self.S) * self.win                       # (B, T, N)
        b = frames.shape[0]
        flat = (np.arange(b)[:, None, None] * self.total + self.pos[None]).reshape(-1)
        sig = np.bincount(flat, frames.reshape(-1), b * self.total).reshape(b, self.total)
        np.copyto(dout(outputs[0]), sig[:, self.cut:self.total - self.cut])

    def backward(self, inputs, outputs, propagate_down, accum):
        g = g32(outputs[0]).astype(np.float64)
        b = g.shape[0]
        full = np.zeros((b, self.total))
        full[:, self.cut:self.total - self.cut] = g
        gf = full[:, self.pos] * self.win                                     # (B, T, N)
        for i, m in ((0, self.C), (1, self.S)):
            if propagate_down[i]:
                v = inputs[i]
                store(gout(v, accum[i]), (gf @ m.T).transpose(0, 2, 1), accum[i])

    def grad_depends_input_data(self, i, j):
        return False
