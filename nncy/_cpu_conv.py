"""CPU implementations of the convolution and pooling layers.

Every class checks its arguments and shapes in ``setup`` (raising ValueError /
TypeError that name the function and the argument) and computes a geometry
tuple for the Rust kernels in ``nncy._kernels``:

- ``K.conv`` runs a convolution's forward, input gradient ('data') or weight
  gradient ('filter'); deconvolution is the transpose of a convolution, so
  its forward is the convolution's input gradient and so on.  Depthwise
  convolution and deconvolution are grouped convolutions with one input
  channel per group, which the kernel runs with direct SIMD loops.
- ``K.pool`` / ``K.pool_grad`` run max, sum and average pooling over N-D
  windows; channel-last data adds the channel axis as a last axis of one tap.
- ``K.asconv`` runs the adaptive separable convolution and its gradients.

Unpooling is the transpose of sum pooling with stride = kernel; bias
gradients and global average pooling use the generic reduction and
strided-copy kernels.
"""
import numpy as np

from nncy import _kernels as K
from nncy._core import Impl, register, d32, dout, g32, gout

F32 = np.float32

#: Most spatial axes the kernels take.
MAX_AXES = 8


def _prod(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def _per_axis(impl, name, value, n, default, minimum):
    """A tuple of ``n`` ints for ``name`` (``default`` each when None), each
    at least ``minimum``."""
    if value is None:
        return (default,) * n
    value = tuple(value)
    if len(value) != n:
        raise impl.error(name, 'must have %d entries (one per spatial axis), got %r'
                         % (n, value))
    if any(v < minimum for v in value):
        raise impl.error(name, 'entries must be at least %d, got %r' % (minimum, value))
    return value


def _conv_out(length, k, s, p, d):
    """Convolution output length, or None when the dilated kernel does not fit."""
    span = d * (k - 1) + 1
    if length + 2 * p < span:
        return None
    return (length + 2 * p - span) // s + 1


def _channel_sum(name, gy, batch, channels, positions, channel_last, out, accum):
    """out (+)= gy summed over everything but the channel axis (bias gradients)."""
    if channel_last:
        K.reduce(name, 'sum', gy.reshape(batch * positions, channels), (0,), out, 1.0, accum)
    else:
        K.reduce(name, 'sum', gy.reshape(batch, channels, positions), (0, 2), out, 1.0, accum)


class _ConvBase(Impl):
    """Shared argument handling of the convolution family.

    Subclasses set in ``setup``: ``geom`` (the kernel geometry of the
    underlying convolution), ``transposed`` (True for deconvolutions: the
    layer's forward is the convolution's input gradient), ``channel_last``,
    and ``batch``, ``out_channels``, ``out_positions`` for the bias gradient.
    """
    transposed = False

    def _layout(self, x, channel_last):
        """(batch, channels, spatial shape) of x with ``base_axis``, checked."""
        base = self.args['base_axis']
        nd = len(x.shape)
        if not 0 <= base < nd - 1:
            raise self.error('base_axis', 'must lie in [0, %d) for input x of shape %s '
                             '(one channel axis and at least one spatial axis follow it), '
                             'got %d' % (max(nd - 1, 0), x.shape, base))
        ns = nd - base - 1
        if ns > MAX_AXES:
            raise self.error('x', 'has %d spatial axes; at most %d are supported'
                             % (ns, MAX_AXES))
        if channel_last:
            return _prod(x.shape[:base]), x.shape[-1], tuple(x.shape[base:-1])
        return _prod(x.shape[:base]), x.shape[base], tuple(x.shape[base + 1:])

    def _window(self, ns):
        """pad, stride, dilation checked for ``ns`` spatial axes."""
        return (_per_axis(self, 'pad', self.args['pad'], ns, 0, 0),
                _per_axis(self, 'stride', self.args['stride'], ns, 1, 1),
                _per_axis(self, 'dilation', self.args['dilation'], ns, 1, 1))

    def _check_weight_ndim(self, w, ndim, what):
        if len(w.shape) != ndim:
            raise self.error('weight', 'must be a %d-D array (%s), got shape %s'
                             % (ndim, what, w.shape))

    def _check_bias(self, inputs, channels):
        if len(inputs) > 2 and tuple(inputs[2].shape) != (channels,):
            raise self.error('bias', 'must have shape (%d,), got %s'
                             % (channels, inputs[2].shape))

    def _output_shape(self, x, channels, spatial):
        base = self.args['base_axis']
        lead = tuple(x.shape[:base])
        if self.channel_last:
            return lead + tuple(spatial) + (channels,)
        return lead + (channels,) + tuple(spatial)

    @staticmethod
    def _geometry(batch, channels, out_channels, group, channel_last, axes):
        """Kernel geometry; ``axes``: per spatial axis (len, out, k, pad, stride,
        dilation) of the underlying convolution."""
        g = [batch, channels, out_channels, group, len(axes), int(channel_last)]
        for a in axes:
            g.extend(a)
        return tuple(int(v) for v in g)

    def _check_kernel(self, w, kernel):
        if 0 in kernel:
            raise self.error('weight', 'has an empty kernel: shape %s' % (w.shape,))

    def _conv_outputs(self, spatial, kernel, pad, stride, dil):
        """Output sizes of a convolution over ``spatial``, checked."""
        out = []
        for i in range(len(spatial)):
            o = _conv_out(spatial[i], kernel[i], stride[i], pad[i], dil[i])
            if o is None:
                raise self.error('x', 'spatial axis %d has size %d, smaller than the dilated '
                                 'kernel %d minus twice the padding %d'
                                 % (i, spatial[i], dil[i] * (kernel[i] - 1) + 1, pad[i]))
            out.append(o)
        return out

    def _finish(self, inputs, x, batch, channels, out_channels, group, spatial, out, kernel,
                pad, stride, dil):
        """Checks the bias, records what backward needs and returns the output
        shape.  A transposed layer is the input gradient of the convolution
        from its output (``out``, ``out_channels``) back to its input."""
        self._check_bias(inputs, out_channels)
        self.batch, self.out_channels, self.out_positions = batch, out_channels, _prod(out)
        if self.transposed:
            src, dst, c, oc = out, spatial, out_channels, channels
        else:
            src, dst, c, oc = spatial, out, channels, out_channels
        self.geom = self._geometry(batch, c, oc, group, self.channel_last,
                                   [(src[i], dst[i], kernel[i], pad[i], stride[i], dil[i])
                                    for i in range(len(out))])
        return [self._output_shape(x, out_channels, out)]

    # -- running ---------------------------------------------------------------

    def forward(self, inputs, outputs):
        x, w = d32(inputs[0]), d32(inputs[1])
        b = d32(inputs[2]) if len(inputs) > 2 else None
        y = dout(outputs[0])
        K.conv(self.spec.name, 'data' if self.transposed else 'forward', x, w, y, b,
               self.geom, False)

    def backward(self, inputs, outputs, propagate_down, accum):
        name = self.spec.name
        gy = g32(outputs[0])
        if propagate_down[0]:
            K.conv(name, 'forward' if self.transposed else 'data', gy, d32(inputs[1]),
                   gout(inputs[0], accum[0]), None, self.geom, accum[0])
        if propagate_down[1]:
            x = d32(inputs[0])
            if self.transposed:   # the convolution's input is this layer's output
                a, b = gy, x
            else:
                a, b = x, gy
            K.conv(name, 'filter', a, b, gout(inputs[1], accum[1]), None, self.geom,
                   accum[1])
        if len(inputs) > 2 and propagate_down[2]:
            _channel_sum(name, gy, self.batch, self.out_channels, self.out_positions,
                         self.channel_last, gout(inputs[2], accum[2]), accum[2])

    def grad_depends_input_data(self, i, j):
        return (i, j) in ((0, 1), (1, 0))


@register('Convolution')
class Convolution(_ConvBase):
    def setup(self, inputs):
        x, w = inputs[0], inputs[1]
        self.channel_last = cl = self.args['channel_last']
        batch, c, spatial = self._layout(x, cl)
        ns = len(spatial)
        pad, stride, dil = self._window(ns)
        group = self.args['group']
        if group < 1:
            raise self.error('group', 'must be at least 1, got %d' % group)
        self._check_weight_ndim(w, ns + 2, '(C_out, C / group, K...)' if not cl
                                else '(C_out, K..., C / group)')
        oc = w.shape[0]
        kernel = tuple(w.shape[1:-1]) if cl else tuple(w.shape[2:])
        cg = w.shape[-1] if cl else w.shape[1]
        if c % group or oc % group:
            raise self.error('group', 'must divide the input channels (%d) and the output '
                             'channels (%d), got %d' % (c, oc, group))
        if cg != c // group:
            raise self.error('weight', 'has %d input channels per group, expected %d '
                             '(input channels %d / group %d); weight shape %s'
                             % (cg, c // group, c, group, w.shape))
        self._check_kernel(w, kernel)
        out = self._conv_outputs(spatial, kernel, pad, stride, dil)
        return self._finish(inputs, x, batch, c, oc, group, spatial, out, kernel, pad, stride,
                            dil)


@register('DepthwiseConvolution')
class DepthwiseConvolution(_ConvBase):
    channel_last = False

    def setup(self, inputs):
        x, w = inputs[0], inputs[1]
        batch, c, spatial = self._layout(x, False)
        ns = len(spatial)
        pad, stride, dil = self._window(ns)
        m = self.args['multiplier']
        if m < 1:
            raise self.error('multiplier', 'must be at least 1, got %d' % m)
        self._check_weight_ndim(w, ns + 1, '(C * multiplier, K...)')
        if w.shape[0] != c * m:
            raise self.error('weight', 'must have %d kernels (input channels %d x multiplier '
                             '%d), got shape %s' % (c * m, c, m, w.shape))
        kernel = tuple(w.shape[1:])
        self._check_kernel(w, kernel)
        out = self._conv_outputs(spatial, kernel, pad, stride, dil)
        return self._finish(inputs, x, batch, c, c * m, c, spatial, out, kernel, pad, stride,
                            dil)


def _deconv_out(impl, i, length, k, s, p, d, extra=0):
    o = s * (length - 1) - 2 * p + d * (k - 1) + 1 + extra
    if o < 1:
        raise impl.error('pad', 'leaves no output on spatial axis %d: input %d, kernel %d, '
                         'pad %d, stride %d, dilation %d give size %d'
                         % (i, length, k, p, s, d, o))
    return o


@register('Deconvolution')
class Deconvolution(_ConvBase):
    transposed = True

    def setup(self, inputs):
        x, w = inputs[0], inputs[1]
        self.channel_last = cl = self.args['channel_last']
        batch, ic, spatial = self._layout(x, cl)
        ns = len(spatial)
        pad, stride, dil = self._window(ns)
        opad = _per_axis(self, 'output_padding', self.args['output_padding'], ns, 0, 0)
        for i in range(ns):
            if opad[i] >= stride[i]:
                raise self.error('output_padding', 'must be smaller than the stride on every '
                                 'axis, got output_padding %r with stride %r'
                                 % (opad, stride))
        group = self.args['group']
        if group < 1:
            raise self.error('group', 'must be at least 1, got %d' % group)
        self._check_weight_ndim(w, ns + 2, '(C_in, C_out / group, K...)' if not cl
                                else '(C_in, K..., C_out / group)')
        if w.shape[0] != ic:
            raise self.error('weight', 'must have %d kernels (one per input channel), got '
                             'shape %s' % (ic, w.shape))
        if ic % group:
            raise self.error('group', 'must divide the input channels (%d), got %d'
                             % (ic, group))
        ocg = w.shape[-1] if cl else w.shape[1]
        kernel = tuple(w.shape[1:-1]) if cl else tuple(w.shape[2:])
        self._check_kernel(w, kernel)
        oc = ocg * group
        out = [_deconv_out(self, i, spatial[i], kernel[i], stride[i], pad[i], dil[i], opad[i])
               for i in range(ns)]
        return self._finish(inputs, x, batch, ic, oc, group, spatial, out, kernel, pad, stride,
                            dil)


@register('DepthwiseDeconvolution')
class DepthwiseDeconvolution(_ConvBase):
    transposed = True
    channel_last = False

    def setup(self, inputs):
        x, w = inputs[0], inputs[1]
        batch, c, spatial = self._layout(x, False)
        ns = len(spatial)
        pad, stride, dil = self._window(ns)
        dv = self.args['divisor']
        if dv < 1 or c % dv:
            raise self.error('divisor', 'must be at least 1 and divide the input channels '
                             '(%d), got %d' % (c, dv))
        self._check_weight_ndim(w, ns + 1, '(C, K...)')
        if w.shape[0] != c:
            raise self.error('weight', 'must have %d kernels (one per input channel), got '
                             'shape %s' % (c, w.shape))
        kernel = tuple(w.shape[1:])
        self._check_kernel(w, kernel)
        oc = c // dv
        out = [_deconv_out(self, i, spatial[i], kernel[i], stride[i], pad[i], dil[i])
               for i in range(ns)]
        # transpose of a depthwise convolution with multiplier `divisor`
        return self._finish(inputs, x, batch, c, oc, oc, spatial, out, kernel, pad, stride, dil)


@register('AdaptiveSeparableConvolution')
class AdaptiveSeparableConvolution(Impl):
    def setup(self, inputs):
        x, kv, kh = inputs
        for name, v in (('x', x), ('vertical_kernel', kv), ('horizontal_kernel', kh)):
            if len(v.shape) != 4:
                raise self.error(name, 'must be a 4-D array, got shape %s' % (v.shape,))
        b, c, h, w = x.shape
        if kv.shape[0] != b or kh.shape[0] != b:
            raise self.error('vertical_kernel', 'and horizontal_kernel must have the batch '
                             'size of x (%d), got shapes %s and %s' % (b, kv.shape, kh.shape))
        oh, ow = h - kv.shape[1] + 1, w - kh.shape[1] + 1
        if kv.shape[1] < 1 or oh < 1:
            raise self.error('vertical_kernel', 'has %d taps; it needs 1 to %d for x of '
                             'height %d' % (kv.shape[1], h, h))
        if kh.shape[1] < 1 or ow < 1:
            raise self.error('horizontal_kernel', 'has %d taps; it needs 1 to %d for x of '
                             'width %d' % (kh.shape[1], w, w))
        if not (oh <= kv.shape[2] <= h and kv.shape[3] >= ow):
            raise self.error('vertical_kernel', 'must have height in [%d, %d] and width at '
                             'least %d, got shape %s' % (oh, h, ow, kv.shape))
        if not (ow <= kh.shape[3] <= w and kh.shape[2] >= oh):
            raise self.error('horizontal_kernel', 'must have width in [%d, %d] and height at '
                             'least %d, got shape %s' % (ow, w, oh, kh.shape))
        self.dims = (b, c, h, w) + tuple(kv.shape[1:]) + tuple(kh.shape[1:])
        return [(b, c, oh, ow)]

    def forward(self, inputs, outputs):
        x, kv, kh = (d32(v) for v in inputs)
        K.asconv(self.spec.name, 'forward', self.dims, x, kv, kh, None, dout(outputs[0]))

    def backward(self, inputs, outputs, propagate_down, accum):
        gy = g32(outputs[0])
        x, kv, kh = (d32(v) for v in inputs)
        for i, which in enumerate(('x', 'vertical_kernel', 'horizontal_kernel')):
            if propagate_down[i]:
                K.asconv(self.spec.name, which, self.dims, x, kv, kh, gy,
                         gout(inputs[i], accum[i]), accum[i])

    def grad_depends_input_data(self, i, j):
        return i != j


# ---------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------

class _Pool(Impl):
    op = None             # 'max', 'sum' or 'average'
    empty_windows = True  # whether a window may lie entirely in the padding

    def setup(self, inputs):
        x = inputs[0]
        kernel = self.args['kernel']
        if kernel is None:
            raise self.error('kernel', 'is required (a tuple of window sizes)', TypeError)
        nk = len(kernel)
        if nk == 0 or any(k < 1 for k in kernel):
            raise self.error('kernel', 'must hold one size of at least 1 per pooled axis, '
                             'got %r' % (kernel,))
        stride = self.args['stride']
        stride = tuple(kernel) if stride is None else _per_axis(self, 'stride', stride, nk, 1, 1)
        pad = _per_axis(self, 'pad', self.args['pad'], nk, 0, 0)
        cl = self.args['channel_last']
        nd = len(x.shape)
        first = nd - nk - (1 if cl else 0)
        if first < 0:
            raise self.error('kernel', 'has %d axes but x of shape %s has only %d%s'
                             % (nk, x.shape, nd - (1 if cl else 0),
                                ' besides the channel axis' if cl else ''))
        if nk + (1 if cl else 0) > MAX_AXES:
            raise self.error('kernel', 'pools %d axes; at most %d are supported'
                             % (nk, MAX_AXES - (1 if cl else 0)))
        ignore = self.args['ignore_border']
        spatial = x.shape[first:first + nk]
        out = []
        for i, (n, k, s, p) in enumerate(zip(spatial, kernel, stride, pad)):
            if ignore and n + 2 * p < k:
                raise self.error('kernel', 'window %d on axis %d is larger than the padded '
                                 'input %d (size %d, pad %d)' % (k, first + i, n + 2 * p, n, p))
            o = (n + p - ((k - p) if ignore else 1)) // s + 1
            o = max(o, 0)
            if not self.empty_windows and o > 0 and n > 0:
                # windows move monotonically: only the first and the last can miss x
                if k <= p or (o - 1) * s - p >= n:
                    raise self.error('pad', 'puts a whole window of axis %d in the padding '
                                     '(kernel %d, stride %d, pad %d, size %d)'
                                     % (first + i, k, s, p, n))
            out.append(o)
        axes = [(n, o, k, s, p) for n, o, k, s, p in zip(spatial, out, kernel, stride, pad)]
        if cl:
            axes.append((x.shape[-1], x.shape[-1], 1, 1, 0))
        incl = self.args['including_pad'] if 'including_pad' in self.args else True
        self.geom = tuple(int(v) for v in
                          [_prod(x.shape[:first]), len(axes), int(incl)]
                          + [v for a in axes for v in a])
        return [tuple(x.shape[:first]) + tuple(out) + tuple(x.shape[first + nk:])]

    def forward(self, inputs, outputs):
        K.pool(self.spec.name, self.op, d32(inputs[0]), dout(outputs[0]), self.geom)

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0]:
            x = d32(inputs[0]) if self.op == 'max' else None
            K.pool_grad(self.spec.name, self.op, x, g32(outputs[0]),
                        gout(inputs[0], accum[0]), self.geom, accum[0])

    def grad_depends_input_data(self, i, j):
        return self.op == 'max'


@register('MaxPooling')
class MaxPooling(_Pool):
    op = 'max'
    empty_windows = False


@register('AveragePooling')
class AveragePooling(_Pool):
    op = 'average'

    def setup(self, inputs):
        self.empty_windows = bool(self.args['including_pad'])
        return _Pool.setup(self, inputs)


@register('SumPooling')
class SumPooling(_Pool):
    op = 'sum'


@register('GlobalAveragePooling')
class GlobalAveragePooling(Impl):
    def setup(self, inputs):
        x = inputs[0]
        if len(x.shape) < 2:
            raise self.error('x', 'must have at least 2 dimensions (batch, channel, ...), '
                             'got shape %s' % (x.shape,))
        self.rows = x.shape[0] * x.shape[1]
        self.size = _prod(x.shape[2:])
        return [(x.shape[0], x.shape[1], 1, 1)]

    def forward(self, inputs, outputs):
        scale = 1.0 / self.size if self.size else float('nan')
        K.reduce(self.spec.name, 'sum', d32(inputs[0]).reshape(self.rows, self.size), (1,),
                 dout(outputs[0]), scale)

    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        g = g32(outputs[0]).reshape(self.rows, 1)
        if self.size:
            g = g * F32(1.0 / self.size)
        gx = gout(inputs[0], accum[0]).reshape(self.rows, self.size)
        K.strided_copy(self.spec.name, np.broadcast_to(g, gx.shape), gx, accum[0])

    def grad_depends_input_data(self, i, j):
        return False


@register('Unpooling')
class Unpooling(Impl):
    """Each element spread over a block of ``kernel`` outputs: the transpose of
    sum pooling with windows of ``kernel`` and stride ``kernel``, so forward is
    that pooling's gradient and backward that pooling."""

    def setup(self, inputs):
        x = inputs[0]
        kernel = self.args['kernel']
        if kernel is None:
            raise self.error('kernel', 'is required (a tuple of spread factors)', TypeError)
        nk = len(kernel)
        cl = self.args['channel_last']
        nd = len(x.shape)
        first = nd - nk - (1 if cl else 0)
        if nk == 0 or any(k < 1 for k in kernel):
            raise self.error('kernel', 'must hold one factor of at least 1 per axis, got %r'
                             % (kernel,))
        if first < 0:
            raise self.error('kernel', 'has %d axes but x of shape %s has only %d%s'
                             % (nk, x.shape, nd - (1 if cl else 0),
                                ' besides the channel axis' if cl else ''))
        if nk + (1 if cl else 0) > MAX_AXES:
            raise self.error('kernel', 'spreads %d axes; at most %d are supported'
                             % (nk, MAX_AXES - (1 if cl else 0)))
        spatial = x.shape[first:first + nk]
        axes = [(n * k, n, k, k, 0) for n, k in zip(spatial, kernel)]
        if cl:
            axes.append((x.shape[-1], x.shape[-1], 1, 1, 0))
        self.geom = tuple(int(v) for v in [_prod(x.shape[:first]), len(axes), 1]
                          + [v for a in axes for v in a])
        return [tuple(x.shape[:first]) + tuple(n * k for n, k in zip(spatial, kernel))
                + tuple(x.shape[first + nk:])]

    def forward(self, inputs, outputs):
        K.pool_grad(self.spec.name, 'sum', None, d32(inputs[0]), dout(outputs[0]), self.geom)

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0]:
            K.pool(self.spec.name, 'sum', g32(outputs[0]), gout(inputs[0], accum[0]),
                   self.geom, accum[0])

    def grad_depends_input_data(self, i, j):
        return False
