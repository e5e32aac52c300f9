"""cuda implementations of the convolution family.

Every layer of the family is a grouped N-D convolution (the CPU classes'
``geom``): deconvolutions are its input gradient, depthwise layers have one
input channel per group.  A convolution runs as im2col (``conv.cu``) and one
batched matrix product per group (cuBLAS), over chunks of samples so that
the column buffer stays bounded; col2im gathers the input gradient.  The
binary and INQ convolutions compute their effective weight on the device and
run the same convolution.
"""
import numpy as np

from nncy import _cpu_conv, _cpu_loss
from nncy._core import dev_data, dev_data_out, dev_grad, dev_grad_out, register
from nncy.cuda._common import contiguous, cp, device, launch, store

FILE = 'conv.cu'
F32 = np.float32

#: Most column-buffer elements per chunk of samples (256 MiB of float32).
COL_LIMIT = 1 << 26


def _f32(a):
    return contiguous(a, F32)


def _prod(shape):
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _on_device(cache, host):
    """``host`` (a small int64 table) on the current device, uploaded once."""
    key = cp.cuda.runtime.getDevice()
    if key not in cache:
        cache[key] = cp.asarray(host)
    return cache[key]


def _written(a, accum, fill):
    """Runs ``fill(out, accum)`` on a contiguous float32 array and leaves the
    result in ``a`` (through a temporary when ``a`` is not such an array)."""
    if a.dtype == F32 and a.flags.c_contiguous:
        fill(a, accum)
        return
    tmp = cp.empty(a.shape, F32)
    fill(tmp, False)
    store(a, tmp, accum)


class _Geometry:
    """The grouped convolution of a CPU class's ``geom`` tuple (batch,
    channels, out_channels, group, ns, channel_last, then per spatial axis
    len, out, kernel, pad, stride, dilation)."""

    def __init__(self, geom):
        self.batch, self.c, self.oc, self.g, ns, cl = geom[:6]
        axes = [geom[6 + 6 * a:12 + 6 * a] for a in range(ns)]
        self.ns, self.cl = ns, bool(cl)
        self.lp = _prod(a[0] for a in axes)
        self.op = _prod(a[1] for a in axes)
        self.kp = _prod(a[2] for a in axes)
        self.cg, self.ocg = self.c // self.g, self.oc // self.g
        self.rows = self.cg * self.kp          # column rows per group
        self.meta_host = np.array(geom[6:], np.int64)
        per_sample = max(self.c * self.kp * self.op, 1)
        self.chunk = max(1, min(self.batch, COL_LIMIT // per_sample))
        self._meta = {}

    def meta(self):
        return _on_device(self._meta, self.meta_host)

    def chunks(self):
        for b0 in range(0, self.batch, self.chunk):
            yield b0, min(b0 + self.chunk, self.batch)

    def _args(self, nb):
        return (self.meta(), np.int32(self.ns), np.int64(nb), np.int64(self.c),
                np.int64(self.g), np.int32(self.cl))

    def im2col(self, x, b0, b1):
        """Columns (G, rows, nb * Op) of samples b0:b1 of x (convolution input)."""
        nb = b1 - b0
        col = cp.empty((self.g, self.rows, nb * self.op), F32)
        xs = x.reshape(self.batch, -1)[b0:b1]
        launch(FILE, 'nncy_im2col', col.size, (np.int64(col.size), xs, col) + self._args(nb))
        return col

    def col2im(self, col, x, b0, b1, accum):
        """Samples b0:b1 of x (+)= the transpose of im2col applied to col."""
        nb = b1 - b0
        xs = x.reshape(self.batch, -1)[b0:b1]
        launch(FILE, 'nncy_col2im', xs.size,
               (np.int64(xs.size), col, xs) + self._args(nb) + (np.int32(accum),))

    def out_view(self, y, b0, b1):
        """Samples b0:b1 of y (convolution output) as a (G, OCg, nb, Op) view."""
        nb = b1 - b0
        ys = y.reshape(self.batch, -1)[b0:b1]
        if self.cl:
            return ys.reshape(nb, self.op, self.g, self.ocg).transpose(2, 3, 0, 1)
        return ys.reshape(nb, self.g, self.ocg, self.op).transpose(1, 2, 0, 3)

    def out_matrix(self, y, b0, b1):
        """Samples b0:b1 of y as contiguous (G, OCg, nb * Op) matrices."""
        return cp.ascontiguousarray(self.out_view(y, b0, b1)).reshape(
            self.g, self.ocg, (b1 - b0) * self.op)

    def weight_matrix(self, w):
        return w.reshape(self.g, self.ocg, self.rows)


class _Conv:
    """cuda computation of a CPU convolution class (``geom``, ``transposed``,
    ``channel_last``, ``batch``, ``out_channels``, ``out_positions``).

    The three products of the underlying convolution, on contiguous float32
    device arrays in the layer's layouts: ``conv_forward`` (input, weight ->
    output), ``conv_data`` (output gradient, weight -> input gradient) and
    ``conv_filter`` (input, output gradient -> weight gradient); a
    deconvolution's forward is ``conv_data`` and so on."""

    def setup(self, inputs):
        shapes = super().setup(inputs)
        self.cgeom = _Geometry(self.geom)
        return shapes

    # -- the underlying convolution --------------------------------------------

    def conv_forward(self, x, w, y, accum):
        """y (+)= conv(x, w)."""
        s = self.cgeom
        wm = s.weight_matrix(w)

        def fill(out, acc):
            for b0, b1 in s.chunks():
                r = cp.matmul(wm, s.im2col(x, b0, b1))
                store(s.out_view(out, b0, b1), r.reshape(s.g, s.ocg, b1 - b0, s.op), acc)
        _written(y, accum, fill)

    def conv_data(self, gy, w, gx, accum):
        """gx (+)= the gradient of conv(x, w) with respect to x for output gradient gy."""
        s = self.cgeom
        wt = s.weight_matrix(w).transpose(0, 2, 1)

        def fill(out, acc):
            for b0, b1 in s.chunks():
                s.col2im(cp.matmul(wt, s.out_matrix(gy, b0, b1)), out, b0, b1, acc)
            if s.batch == 0 and not acc:
                out.fill(0)
        _written(gx, accum, fill)

    def conv_filter(self, x, gy, gw, accum):
        """gw (+)= the gradient of conv(x, w) with respect to w for output gradient gy."""
        s = self.cgeom
        total = cp.zeros((s.g, s.ocg, s.rows), F32)
        for b0, b1 in s.chunks():
            col = s.im2col(x, b0, b1)
            total += cp.matmul(s.out_matrix(gy, b0, b1), col.transpose(0, 2, 1))
        store(gw, total.reshape(gw.shape), accum)

    # -- bias (over the layer's output channels) --------------------------------

    def _channel_view(self, y):
        n, c, p = self.batch, self.out_channels, self.out_positions
        return y.reshape(n * p, c) if self.channel_last else y.reshape(n, c, p)

    def add_bias(self, y, b):
        b = b.astype(F32, copy=False)
        v = self._channel_view(y)
        v += b.reshape(1, -1) if self.channel_last else b.reshape(1, -1, 1)

    def bias_grad(self, gy, gb, accum):
        v = self._channel_view(gy)
        store(gb, v.sum(axis=0 if self.channel_last else (0, 2)).reshape(gb.shape), accum)

    # -- the layer -------------------------------------------------------------

    def forward_arrays(self, x, w, b, y):
        """y = layer(x, w) (+ b), device arrays."""
        if self.transposed:
            self.conv_data(x, w, y, False)
        else:
            self.conv_forward(x, w, y, False)
        if b is not None:
            self.add_bias(y, b)

    def backward_arrays(self, x, w, gy, gx, gw, gb):
        """The layer's gradients: gx, gw, gb are (array, accum) pairs or None."""
        if gx is not None:
            if self.transposed:
                self.conv_forward(gy, w, *gx)
            else:
                self.conv_data(gy, w, *gx)
        if gw is not None:
            if self.transposed:   # the convolution's input is this layer's output
                self.conv_filter(gy, x, *gw)
            else:
                self.conv_filter(x, gy, *gw)
        if gb is not None:
            self.bias_grad(gy, *gb)

    def forward(self, inputs, outputs):
        with device(self):
            b = _f32(dev_data(inputs[2])) if len(inputs) > 2 else None
            self.forward_arrays(_f32(dev_data(inputs[0])), _f32(dev_data(inputs[1])), b,
                                dev_data_out(outputs[0]))

    def backward(self, inputs, outputs, propagate_down, accum):
        if not any(propagate_down):
            return
        with device(self):
            def target(i):
                ok = i < len(inputs) and propagate_down[i]
                return (dev_grad_out(inputs[i], accum[i]), accum[i]) if ok else None
            x = _f32(dev_data(inputs[0])) if propagate_down[1] else None
            w = _f32(dev_data(inputs[1])) if propagate_down[0] else None
            self.backward_arrays(x, w, _f32(dev_grad(outputs[0])), target(0), target(1),
                                 target(2))


@register('Convolution', 'cuda')
class Convolution(_Conv, _cpu_conv.Convolution):
    pass


@register('DepthwiseConvolution', 'cuda')
class DepthwiseConvolution(_Conv, _cpu_conv.DepthwiseConvolution):
    pass


@register('Deconvolution', 'cuda')
class Deconvolution(_Conv, _cpu_conv.Deconvolution):
    pass


@register('DepthwiseDeconvolution', 'cuda')
class DepthwiseDeconvolution(_Conv, _cpu_conv.DepthwiseDeconvolution):
    pass


@register('AdaptiveSeparableConvolution', 'cuda')
class AdaptiveSeparableConvolution(_cpu_conv.AdaptiveSeparableConvolution):
    def setup(self, inputs):
        shapes = super().setup(inputs)
        self._dev_dims = {}
        return shapes

    def _dims(self):
        return _on_device(self._dev_dims, np.array(self.dims, np.int64))

    def forward(self, inputs, outputs):
        with device(self):
            x, kv, kh = (_f32(dev_data(v)) for v in inputs)

            def fill(y, acc):
                launch(FILE, 'nncy_asconv_fwd', y.size,
                       (np.int64(y.size), x, kv, kh, y, self._dims()))
            _written(dev_data_out(outputs[0]), False, fill)

    def backward(self, inputs, outputs, propagate_down, accum):
        if not any(propagate_down):
            return
        with device(self):
            x, kv, kh = (_f32(dev_data(v)) for v in inputs)
            gy = _f32(dev_grad(outputs[0]))
            # kernel and its leading arrays per input: gx from the kernels,
            # each kernel's gradient from x and the other kernel
            how = (('nncy_asconv_gx', gy, kv, kh), ('nncy_asconv_gk<1>', x, kh, gy),
                   ('nncy_asconv_gk<0>', x, kv, gy))
            for i, (name, a0, a1, a2) in enumerate(how):
                if not propagate_down[i]:
                    continue

                def fill(g, acc):
                    launch(FILE, name, g.size, (np.int64(g.size), a0, a1, a2, g, self._dims(),
                                                np.int32(acc)))
                _written(dev_grad_out(inputs[i], accum[i]), accum[i], fill)


# ---------------------------------------------------------------------------
# Convolutions over an effective weight (binarized, scaled, quantized).

class _OverWeight:
    """cuda form of ``_cpu_loss._ConvOverWeight``: the inner convolution is
    the cuda Convolution; subclasses give ``dev_weight(inputs)`` (the
    effective weight of a forward pass, writing the side inputs),
    ``dev_effective(inputs)`` (the one backward uses) and ``dev_grad_mask``."""

    def setup(self, inputs):
        shapes = super().setup(inputs)
        inner = Convolution(self.conv.spec, self.conv.args, self.ctx)
        inner.setup([inputs[0], inputs[1]] + self.bias)
        self.conv = inner
        return shapes

    def dev_grad_mask(self, inputs):
        return None

    def forward(self, inputs, outputs):
        with device(self):
            w = self.dev_weight(inputs)
            b = _f32(dev_data(self.bias[0])) if self.bias else None
            self.conv.forward_arrays(_f32(dev_data(inputs[0])), w, b, dev_data_out(outputs[0]))

    def backward(self, inputs, outputs, propagate_down, accum):
        if not any(propagate_down):
            return
        with device(self):
            nb = 2 + self.n_side          # the bias, if any, follows the side inputs
            gx = (dev_grad_out(inputs[0], accum[0]), accum[0]) if propagate_down[0] else None
            has_b = len(inputs) > nb and propagate_down[nb]
            gb = (dev_grad_out(inputs[nb], accum[nb]), accum[nb]) if has_b else None
            gw = cp.empty(inputs[1].shape, F32) if propagate_down[1] else None
            x = _f32(dev_data(inputs[0])) if gw is not None else None
            w = self.dev_effective(inputs) if gx is not None else None
            self.conv.backward_arrays(x, w, _f32(dev_grad(outputs[0])), gx,
                                      None if gw is None else (gw, False), gb)
            if gw is not None:     # straight through to the weight
                mask = self.dev_grad_mask(inputs)
                store(dev_grad_out(inputs[1], accum[1]), gw if mask is None else gw * mask,
                      accum[1])
            for i in range(2, nb):
                if propagate_down[i] and not accum[i]:
                    dev_grad_out(inputs[i], False).fill(0)


class _Binary(_OverWeight):
    def _alpha_shape(self, w):
        return (-1,) + (1,) * (w.ndim - 1)

    def dev_weight(self, inputs):
        w = _f32(dev_data(inputs[1]))
        bw = cp.where(w > 0, F32(1), cp.where(w < 0, F32(-1), F32(self.args['quantize_zero_to'])))
        bw = bw.astype(F32, copy=False)
        dev_data_out(inputs[2])[...] = bw
        if not self.scaled:
            return bw
        alpha = cp.abs(w).reshape(w.shape[0], -1).mean(axis=1, dtype=np.float64).astype(F32)
        dev_data_out(inputs[3])[...] = alpha.reshape(inputs[3].shape)
        return bw * alpha.reshape(self._alpha_shape(w))

    def dev_effective(self, inputs):
        bw = _f32(dev_data(inputs[2]))
        if not self.scaled:
            return bw
        return bw * _f32(dev_data(inputs[3])).reshape(self._alpha_shape(bw))


@register('BinaryConnectConvolution', 'cuda')
class BinaryConnectConvolution(_Binary, _cpu_loss.BinaryConnectConvolution):
    pass


@register('BinaryWeightConvolution', 'cuda')
class BinaryWeightConvolution(_Binary, _cpu_loss.BinaryWeightConvolution):
    pass


def _inq_quantize(w, num_bits):
    """``_cpu_loss._inq_quantize`` on the device: each weight to the nearest of
    {0, +-2^n2, ..., +-2^n1}, n1 = floor(log2(4 max|w| / 3)), n2 = n1 + 1 -
    2^(num_bits - 2); n1 stays on the device."""
    a = cp.abs(w).astype(np.float64)
    count = 2 ** (num_bits - 2)
    n1 = cp.floor(cp.log2(a.max() * 4 / 3))     # -inf when every weight is 0
    levels = cp.concatenate([cp.zeros(1), 2.0 ** (n1 + 1 - count + cp.arange(count))])
    mids = (levels[:-1] + levels[1:]) / 2
    q = levels[cp.searchsorted(mids, a, side='right')]
    return (cp.sign(w) * q).astype(F32)


@register('INQConvolution', 'cuda')
class INQConvolution(_OverWeight, _cpu_loss.INQConvolution):
    """The schedule of ``_cpu_loss._INQWeights`` on device arrays.  The passes
    listed in inq_iterations read the number of learnable weights back (and
    the 'random' selection draws on the host generator, as on the CPU)."""

    def dev_weight(self, inputs):
        wv, iv = inputs[1], inputs[2]
        w = _f32(dev_data(wv)).reshape(-1).copy()
        if self.old is not None:    # weights fixed by an earlier pass keep their values
            w = cp.where(self.old[1], self.old[0], w)
        fixed = _f32(dev_data(iv)).reshape(-1) != 0
        self._fix_more_dev(w, fixed)
        self.count += 1
        if w.size:
            w = cp.where(fixed, _inq_quantize(w, self.args['num_bits']), w)
        self.old = (w.copy(), fixed.copy())
        dev_data_out(wv)[...] = w.reshape(wv.shape)
        dev_data_out(iv)[...] = fixed.reshape(iv.shape)
        return w.reshape(wv.shape)

    def _fix_more_dev(self, w, fixed):
        for it in self.its:
            if it != self.count:
                continue
            if it == self.its[-1]:
                fixed[...] = True
                continue
            free = cp.flatnonzero(~fixed)
            n = int(free.size)
            if self.args['selection_algorithm'] == 'largest_abs':
                m = max(n // 2, 1) if n else 0
                # by decreasing magnitude, ties in index order (a stable sort)
                keys = cp.stack([cp.arange(n, dtype=np.float64),
                                 -cp.abs(w[free]).astype(np.float64)])
                fixed[free[cp.lexsort(keys)[:m]]] = True
            else:                   # each learnable weight with probability 1/2
                fixed[free[cp.asarray(self.rng.rand(n) < 0.5)]] = True

    def dev_effective(self, inputs):
        return _f32(dev_data(inputs[1]))

    def dev_grad_mask(self, inputs):
        return _f32(dev_data(inputs[2])) == 0
