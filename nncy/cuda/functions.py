"""Implementations for the ``cuda`` backend.  Each reuses the CPU class's
``setup`` (argument checks and shapes) and computes on device arrays:
pointwise rows through the generated kernels of ``pointwise_gen.cu``, the
others through CuPy (matrix products run on cuBLAS)."""
import numpy as np

from nncy import _cpu, _cpu_math, _table
from nncy import _core
from nncy._core import dev_data, dev_data_out, dev_grad, dev_grad_out, register
from nncy.cuda._common import contiguous, cp, ctype, device, launch, store, sum_to

POINTWISE = 'pointwise_gen.cu'


def _layout(out, s0, s1):
    """(nd, meta) for the binary kernels: nd 0 when no input is broadcast,
    else the output shape and both inputs' element strides (0 where broadcast)."""
    if s0 == s1 == out:
        return 0, None
    nd = len(out)
    meta = list(out)
    for s in (s0, s1):
        s = (1,) * (nd - len(s)) + tuple(s)
        strides, acc = [0] * nd, 1
        for d in range(nd - 1, -1, -1):
            strides[d] = acc if s[d] != 1 else 0
            acc *= s[d]
        meta += strides
    return nd, np.array(meta, np.int64)


# ---------------------------------------------------------------------------
# Pointwise rows: one class, the op chosen by the row's code.

class Pointwise(_core.Pointwise):
    native_half = True

    def __init__(self, spec, args, ctx):
        _core.Pointwise.__init__(self, spec, args, ctx)
        self.kind = 'unary' if len(spec.inputs) == 1 else 'binary'
        nums = [args[n] for n in spec.params]
        self._params = np.array(nums or [0.0], np.float32)
        self._dev = {}   # per device: parameters and broadcast layout

    def inplace_data(self, i):
        return 0   # outputs are always fresh device arrays

    def _consts(self, shapes):
        key = (cp.cuda.runtime.getDevice(), shapes)
        c = self._dev.get(key)
        if c is None:
            nd, meta = _layout(*shapes) if shapes else (0, None)
            p = cp.asarray(self._params)
            c = self._dev[key] = (p, np.int32(nd), p if meta is None else cp.asarray(meta))
        return c

    def _name(self, what, dtype, *extra):
        return 'nncy_%s_%s<%s>' % (self.kind, what,
                                   ', '.join((ctype(dtype), str(self.spec.code)) + extra))

    def forward(self, inputs, outputs):
        with device(self):
            y = dev_data_out(outputs[0])
            xs = [contiguous(dev_data(v), y.dtype) for v in inputs]
            n = np.int64(y.size)
            if self.kind == 'unary':
                p, _, _ = self._consts(None)
                launch(POINTWISE, self._name('fwd', y.dtype), y.size, (n, xs[0], y, p))
            else:
                p, nd, m = self._consts((y.shape, xs[0].shape, xs[1].shape))
                launch(POINTWISE, self._name('fwd', y.dtype), y.size,
                       (n, nd, m, xs[0], xs[1], y, p))

    def backward(self, inputs, outputs, propagate_down, accum):
        if not any(propagate_down):
            return
        with device(self):
            yv = outputs[0]
            gy = contiguous(dev_grad(yv), yv.data.dtype)
            dt = gy.dtype
            ya = contiguous(dev_data(yv), dt) if self.spec.grad_uses_output else gy
            xs = [contiguous(dev_data(v), dt) if self.spec.grad_uses_inputs else gy for v in inputs]
            n = np.int64(gy.size)
            if self.kind == 'unary':
                p, _, _ = self._consts(None)
                gx = dev_grad_out(inputs[0], accum[0])
                direct = gx.dtype == dt
                g = gx if direct else cp.empty(gy.shape, dt)
                launch(POINTWISE, self._name('grad', dt), gy.size,
                       (n, xs[0], ya, gy, g, p, np.int32(accum[0] and direct)))
                if not direct:
                    store(gx, g, accum[0])
                return
            shapes = (gy.shape,) + tuple(v.shape for v in inputs)
            p, nd, m = self._consts(shapes)
            if not self.spec.grad_uses_inputs:   # the kernel indexes them anyway
                xs = [cp.empty(s, dt) if s != gy.shape else gy for s in shapes[1:]]
            for i, v in enumerate(inputs):
                if not propagate_down[i]:
                    continue
                gx = dev_grad_out(v, accum[i])
                direct = v.shape == gy.shape and gx.dtype == dt
                g = gx if direct else cp.empty(gy.shape, dt)
                launch(POINTWISE, self._name('grad', dt, str(i)), gy.size,
                       (n, nd, m, xs[0], xs[1], ya, gy, g, p, np.int32(accum[i] and direct)))
                if not direct:
                    store(gx, sum_to(g, v.shape), accum[i])


for _spec in _table.BY_NAME.values():
    if _spec.kind == 'pointwise':
        register(_spec.type_name, 'cuda')(Pointwise)


# ---------------------------------------------------------------------------
# Matrix products (cuBLAS through CuPy).

@register('Affine', 'cuda')
class Affine(_cpu.Affine):
    def forward(self, inputs, outputs):
        with device(self):
            y = outputs[0]
            m, k, n = self._mats(inputs, y)
            out = dev_data_out(y).reshape(m, n)
            x = contiguous(dev_data(inputs[0]), out.dtype).reshape(m, k)
            w = contiguous(dev_data(inputs[1]), out.dtype).reshape(k, n)
            cp.matmul(x, w, out=out)
            if len(inputs) > 2:
                out += dev_data(inputs[2]).reshape(1, n).astype(out.dtype, copy=False)

    def backward(self, inputs, outputs, propagate_down, accum):
        with device(self):
            y = outputs[0]
            m, k, n = self._mats(inputs, y)
            gy = dev_grad(y).reshape(m, n)
            if propagate_down[0]:
                w = contiguous(dev_data(inputs[1]), gy.dtype).reshape(k, n)
                store(dev_grad_out(inputs[0], accum[0]).reshape(m, k), gy @ w.T, accum[0])
            if propagate_down[1]:
                x = contiguous(dev_data(inputs[0]), gy.dtype).reshape(m, k)
                store(dev_grad_out(inputs[1], accum[1]).reshape(k, n), x.T @ gy, accum[1])
            if len(inputs) > 2 and propagate_down[2]:
                store(dev_grad_out(inputs[2], accum[2]).reshape(n), gy.sum(axis=0), accum[2])


@register('BatchMatmul', 'cuda')
class BatchMatmul(_cpu_math.BatchMatmul):
    def _mats(self, inputs):
        out = []
        for v, t in zip(inputs, (self.args['transpose_a'], self.args['transpose_b'])):
            d = dev_data(v)
            out.append(cp.swapaxes(d, -1, -2) if t else d)
        return out

    def forward(self, inputs, outputs):
        with device(self):
            y = dev_data_out(outputs[0])
            a, b = self._mats(inputs)
            y[...] = cp.matmul(a.astype(y.dtype, copy=False), b.astype(y.dtype, copy=False))

    def backward(self, inputs, outputs, propagate_down, accum):
        with device(self):
            a, b = self._mats(inputs)
            gy = dev_grad(outputs[0])
            ga = cp.matmul(gy, cp.swapaxes(b, -1, -2))   # d(a op)
            gb = cp.matmul(cp.swapaxes(a, -1, -2), gy)   # d(b op)
            for i, (v, g, t) in enumerate(zip(inputs, (ga, gb), (self.args['transpose_a'],
                                                                 self.args['transpose_b']))):
                if not propagate_down[i]:
                    continue
                if t:
                    g = cp.swapaxes(g, -1, -2)
                store(dev_grad_out(v, accum[i]), sum_to(g, v.shape), accum[i])


# ---------------------------------------------------------------------------
# Reductions.

class _Reduce:
    def forward(self, inputs, outputs):
        with device(self):
            y = dev_data_out(outputs[0])
            x = dev_data(inputs[0])
            s = x.sum(axis=self.axes, dtype=np.float32) * np.float32(self.scale(x))
            y[...] = s.reshape(y.shape)

    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        with device(self):
            x = inputs[0]
            kept = tuple(1 if i in self.axes else s for i, s in enumerate(x.shape))
            gy = dev_grad(outputs[0]).reshape(kept) * np.float32(self.scale(x))
            store(dev_grad_out(x, accum[0]), gy, accum[0])


@register('Sum', 'cuda')
class Sum(_Reduce, _cpu.Sum):
    pass


@register('Mean', 'cuda')
class Mean(_Reduce, _cpu.Mean):
    pass


# ---------------------------------------------------------------------------
# Softmax and its cross entropy (max-shifted, computed in float32).

class _Softmax:
    def forward(self, inputs, outputs):
        with device(self):
            x = dev_data(inputs[0]).astype(np.float32)
            z = x - x.max(axis=self.axis, keepdims=True)
            if self.log:
                r = z - cp.log(cp.exp(z).sum(axis=self.axis, keepdims=True))
            else:
                e = cp.exp(z)
                r = e / e.sum(axis=self.axis, keepdims=True)
            dev_data_out(outputs[0])[...] = r

    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        with device(self):
            y = dev_data(outputs[0]).astype(np.float32)
            gy = dev_grad(outputs[0]).astype(np.float32)
            if self.log:
                g = gy - cp.exp(y) * gy.sum(axis=self.axis, keepdims=True)
            else:
                g = y * (gy - (gy * y).sum(axis=self.axis, keepdims=True))
            store(dev_grad_out(inputs[0], accum[0]), g, accum[0])


@register('Softmax', 'cuda')
class Softmax(_Softmax, _cpu.Softmax):
    pass


@register('LogSoftmax', 'cuda')
class LogSoftmax(_Softmax, _cpu.LogSoftmax):
    pass


@register('SoftmaxCrossEntropy', 'cuda')
class SoftmaxCrossEntropy(_cpu.SoftmaxCrossEntropy):
    def _log_softmax(self, inputs):
        x = dev_data(inputs[0]).astype(np.float32)
        z = x - x.max(axis=self.axis, keepdims=True)
        return z - cp.log(cp.exp(z).sum(axis=self.axis, keepdims=True))

    def _labels(self, inputs):
        x, t = inputs
        c = x.shape[self.axis]
        want = x.shape[:self.axis] + (1,) + x.shape[self.axis + 1:]
        lab = dev_data(t).reshape(want)
        li = lab.astype(np.int64)
        if bool(((li < 0) | (li >= c) | (li != lab)).any()):
            bad = lab.get().ravel()
            raise ValueError('%s: target labels must be integers in [0, %d), got values '
                             'such as %s' % (self.spec.name, c, bad[(bad < 0) | (bad >= c)][:3]))
        return li

    def forward(self, inputs, outputs):
        with device(self):
            ls = self._log_softmax(inputs)
            li = self._labels(inputs)
            dev_data_out(outputs[0])[...] = -cp.take_along_axis(ls, li, axis=self.axis)

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[1]:
            raise NotImplementedError('softmax_cross_entropy: no gradient with respect to '
                                      'the target labels; set target.need_grad = False')
        if not propagate_down[0]:
            return
        with device(self):
            x = inputs[0]
            li = self._labels(inputs)
            classes = cp.arange(x.shape[self.axis]).reshape(
                (-1,) + (1,) * (len(x.shape) - self.axis - 1))
            g = cp.exp(self._log_softmax(inputs)) - (classes == li)
            gy = dev_grad(outputs[0]).astype(np.float32)
            store(dev_grad_out(x, accum[0]), g * gy, accum[0])


# The other families, one module each (importing registers them).
from nncy.cuda import (array, conv, loss, mathops, norm, pool, rand, seq)  # noqa: E402,F401
from nncy.cuda import cudnn_conv  # noqa: E402

cudnn_conv.register_layers()


def implemented():
    """Type names of the functions with a cuda implementation."""
    return sorted(t for t in _table.BY_TYPE if _core.implementation(t, 'cuda') is not None)
