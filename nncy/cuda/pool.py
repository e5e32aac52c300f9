"""cuda implementations of pooling (max, average, sum, global average,
unpooling), patch correlation, interpolation and warping by a flow field.

The window functions share one kernel family of ``pool.cu`` templated on the
mode, driven by the geometry tuple the CPU class's ``setup`` computes
(unpooling is the transpose of sum pooling, as on the CPU).  Interpolation
applies the CPU class's per-axis resampling matrices with cuBLAS; global
average pooling is a CuPy reduction.  Kernels compute and store float32;
other storage dtypes go through a float32 buffer."""
import numpy as np

from nncy import _cpu_conv, _cpu_loss, _cpu_seq
from nncy._core import dev_data, dev_data_out, dev_grad, dev_grad_out, register
from nncy.cuda._common import contiguous, cp, device, launch, store

FILE = 'pool.cu'
F32 = np.float32
_MODES = {'max': 0, 'sum': 1, 'average': 2}


def _f32(a):
    return contiguous(a, F32)


def _meta(impl, values):
    """``values`` (ints) as an int64 device array, cached on the node per
    device and values."""
    cache = impl.__dict__.setdefault('_dev_meta', {})
    key = (cp.cuda.runtime.getDevice(), tuple(values))
    m = cache.get(key)
    if m is None:
        m = cache[key] = cp.asarray(np.array(values, np.int64))
    return m


def _produce(dst, accum, run, scatter=False):
    """Writes (adds into, when ``accum``) ``dst`` through ``run(buf, add)``,
    which fills the float32 contiguous ``buf``: ``dst`` itself when it is one,
    else a temporary.  ``add`` tells a kernel with an accumulate flag to add.
    Scatter kernels (``scatter``) always add: their buffer is zeroed first
    unless it already holds the gradient to accumulate into."""
    direct = dst.dtype == F32 and dst.flags.c_contiguous
    buf = dst if direct else cp.empty(dst.shape, F32)
    add = accum and direct
    if scatter and not add:
        buf.fill(0)
    run(buf, add)
    if not direct:
        store(dst, buf.astype(dst.dtype), accum)


def _pool(impl, mode, x, dst, accum):
    """dst (+)= pooling ``mode`` of x over impl.geom (one thread per output)."""
    x = _f32(x)
    g = _meta(impl, impl.geom)

    def run(buf, add):
        launch(FILE, 'nncy_pool_fwd<%d>' % _MODES[mode], buf.size,
               (np.int64(buf.size), g, x, buf, np.int32(add)))
    _produce(dst, accum, run)


def _pool_grad(impl, mode, x, gy, dst, accum):
    """dst (+)= the gradient of :func:`_pool` applied to gy (x read by max)."""
    gy = _f32(gy)
    x = _f32(x) if mode == 'max' else gy   # any float array when unread
    g = _meta(impl, impl.geom)

    def run(buf, add):
        launch(FILE, 'nncy_pool_bwd<%d>' % _MODES[mode], gy.size,
               (np.int64(gy.size), g, x, gy, buf))
    _produce(dst, accum, run, scatter=True)


# ---------------------------------------------------------------------------
# Window pooling and its transpose.

class _Pool:
    def forward(self, inputs, outputs):
        with device(self):
            _pool(self, self.op, dev_data(inputs[0]), dev_data_out(outputs[0]), False)

    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        with device(self):
            x = inputs[0]
            _pool_grad(self, self.op, dev_data(x), dev_grad(outputs[0]),
                       dev_grad_out(x, accum[0]), accum[0])


@register('MaxPooling', 'cuda')
class MaxPooling(_Pool, _cpu_conv.MaxPooling):
    pass


@register('AveragePooling', 'cuda')
class AveragePooling(_Pool, _cpu_conv.AveragePooling):
    pass


@register('SumPooling', 'cuda')
class SumPooling(_Pool, _cpu_conv.SumPooling):
    pass


@register('Unpooling', 'cuda')
class Unpooling(_cpu_conv.Unpooling):
    """Forward is sum pooling's gradient, backward sum pooling (geom as set up
    by the CPU class: the output is the pooled input)."""

    def forward(self, inputs, outputs):
        with device(self):
            x = dev_data(inputs[0])
            _pool_grad(self, 'sum', x, x, dev_data_out(outputs[0]), False)

    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        with device(self):
            x = inputs[0]
            _pool(self, 'sum', dev_grad(outputs[0]), dev_grad_out(x, accum[0]), accum[0])


@register('GlobalAveragePooling', 'cuda')
class GlobalAveragePooling(_cpu_conv.GlobalAveragePooling):
    def _scale(self):
        return F32(1.0 / self.size) if self.size else F32('nan')

    def forward(self, inputs, outputs):
        with device(self):
            x = dev_data(inputs[0]).reshape(self.rows, self.size)
            y = dev_data_out(outputs[0])
            y[...] = (x.sum(axis=1, dtype=F32) * self._scale()).reshape(y.shape)

    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        with device(self):
            x = inputs[0]
            g = dev_grad(outputs[0]).astype(F32).reshape(self.rows, 1)
            if self.size:
                g = g * self._scale()
            gx = dev_grad_out(x, accum[0]).reshape(self.rows, self.size)
            store(gx, g, accum[0])


# ---------------------------------------------------------------------------
# Patch correlation: the kernels work on NCHW; NHWC is transposed around them.

@register('PatchCorrelation', 'cuda')
class PatchCorrelation(_cpu_seq.PatchCorrelation):
    def _m(self):
        _, cy, cx, oh, ow = self.nchw_out
        return _meta(self, self.dims + tuple(self.params) + (oh, ow, cy, cx))

    def _nchw(self, a):
        a = _f32(a)
        if self.args['channel_last']:
            a = cp.ascontiguousarray(a.transpose(0, 3, 1, 2))
        return a

    def forward(self, inputs, outputs):
        with device(self):
            a, b = (self._nchw(dev_data(v)) for v in inputs)
            y = dev_data_out(outputs[0])
            cl = self.args['channel_last']

            def run(buf, add):
                launch(FILE, 'nncy_patch_corr_fwd', buf.size,
                       (np.int64(buf.size), self._m(), a, b, buf))
            if cl:
                tmp = cp.empty(self.nchw_out, F32)
                run(tmp, False)
                y[...] = tmp.transpose(0, 3, 4, 1, 2)
            else:
                _produce(y, False, run)

    def backward(self, inputs, outputs, propagate_down, accum):
        if not any(propagate_down):
            return
        with device(self):
            a, b = (self._nchw(dev_data(v)) for v in inputs)
            gy = _f32(dev_grad(outputs[0]))
            cl = self.args['channel_last']
            if cl:
                gy = cp.ascontiguousarray(gy.transpose(0, 3, 4, 1, 2))
            for i, v in enumerate(inputs):
                if not propagate_down[i]:
                    continue

                def run(buf, add, i=i):
                    launch(FILE, 'nncy_patch_corr_bwd<%d>' % i, buf.size,
                           (np.int64(buf.size), self._m(), a, b, gy, buf))
                gx = dev_grad_out(v, accum[i])
                if cl:   # NCHW gradient, then added (or written) as NHWC
                    tmp = cp.zeros(a.shape, F32)
                    run(tmp, False)
                    store(gx, tmp.transpose(0, 2, 3, 1), accum[i])
                else:
                    _produce(gx, accum[i], run, scatter=True)


# ---------------------------------------------------------------------------
# Interpolation: the CPU class's resampling matrices, one per axis, applied
# (or transposed, backward) with matrix products.

@register('Interpolate', 'cuda')
class Interpolate(_cpu_loss.Interpolate):
    def _dev_mats(self):
        """self.mats on the device, uploaded again after a new setup or on
        another device."""
        dev = cp.cuda.runtime.getDevice()
        cached = getattr(self, '_mats_dev', None)
        if cached is None or cached[0] != dev or cached[1] is not self.mats:
            cached = self._mats_dev = (dev, self.mats, [cp.asarray(m) for m in self.mats])
        return cached[2]

    def _apply_dev(self, z, transpose):
        for ax, m in zip(self.axes, self._dev_mats()):
            z = cp.moveaxis(cp.matmul(cp.moveaxis(z, ax, -1), m if transpose else m.T), -1, ax)
        return z

    def forward(self, inputs, outputs):
        with device(self):
            dev_data_out(outputs[0])[...] = self._apply_dev(_f32(dev_data(inputs[0])), False)

    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        with device(self):
            x = inputs[0]
            g = self._apply_dev(_f32(dev_grad(outputs[0])), True)
            store(dev_grad_out(x, accum[0]), g, accum[0])


# ---------------------------------------------------------------------------
# Warp by flow.

@register('WarpByFlow', 'cuda')
class WarpByFlow(_cpu_loss.WarpByFlow):
    def _dims(self, data):
        """(elements of data, C, H, W) as kernel arguments."""
        n, c, h, w = data.shape
        return np.int64(n * c * h * w), np.int64(c), np.int64(h), np.int64(w)

    def forward(self, inputs, outputs):
        with device(self):
            d, f = (_f32(dev_data(v)) for v in inputs)
            n, c, h, w = self._dims(d)

            def run(buf, add):
                launch(FILE, 'nncy_warp_fwd', buf.size, (n, c, h, w, d, f, buf))
            _produce(dev_data_out(outputs[0]), False, run)

    def backward(self, inputs, outputs, propagate_down, accum):
        data, flow = inputs
        with device(self):
            f = _f32(dev_data(flow))
            gy = _f32(dev_grad(outputs[0]))
            n, c, h, w = self._dims(gy)
            if propagate_down[0]:
                def run_data(buf, add):
                    launch(FILE, 'nncy_warp_bwd_data', gy.size, (n, c, h, w, f, gy, buf))
                _produce(dev_grad_out(data, accum[0]), accum[0], run_data, scatter=True)
            if propagate_down[1]:
                d = _f32(dev_data(data))

                def run_flow(buf, add):   # one thread per (sample, y, x)
                    m = buf.size // 2
                    launch(FILE, 'nncy_warp_bwd_flow', m, (np.int64(m), c, h, w, d, f, gy, buf))
                _produce(dev_grad_out(flow, accum[1]), accum[1], run_flow, scatter=True)
