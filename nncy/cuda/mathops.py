"""cuda implementations of the structured math functions of ``nncy._cpu_math``
(max, min, prod, reduce_sum, reduce_mean, add_n, mul_n, where, constant,
arange, matrix_diag, matrix_diag_part) and of the composite rows crelu and
celu.  Each reuses the CPU class's ``setup``; the axis reductions reuse its
(outer, r, inner) view of the input too, so their kernels in ``mathops.cu``
see the same lines, in the same order, as the CPU kernels."""
import numpy as np

from nncy import _composite, _cpu_math
from nncy._cpu import _prod
from nncy._core import dev_data, dev_data_out, dev_grad, dev_grad_out, register
from nncy.cuda._common import blocks, contiguous, cp, device, launch, store
from nncy.cuda._module import function
from nncy.cuda.functions import _Reduce

FILE = 'mathops.cu'
F32 = np.float32
I64 = np.int64

# Lines at least this long are reduced by a block each (else a thread each).
_ROWS_FROM = 64
_ROWS_B = 256


# ---------------------------------------------------------------------------
# Reductions over axes in the CPU classes' (outer, r, inner) layout.

class _Lines:
    """Mixin for ``_cpu_math._AxisReduce``: the input as the kernels read it,
    and gradients written back from that layout."""

    def lines(self, x):
        """x (float32, contiguous) itself, or its copy with the kept axes
        first and the reduced ones after them in order (inner = 1)."""
        x = contiguous(x, F32)
        return x if self.block else cp.ascontiguousarray(x.transpose(self.perm))

    def dims(self):
        return I64(self.outer * self.inner), I64(self.r), I64(self.inner)

    def grad_buffer(self, gx, accum):
        """Where a kernel writes the gradient: gx itself when the layout is
        that of x and nothing is added, else a fresh buffer (see put_grad)."""
        if self.block and not accum:
            return gx
        return cp.empty(self.outer * self.r * self.inner, F32)

    def put_grad(self, buf, gx, accum):
        """gx (+)= buf unless buf is gx."""
        if buf is gx:
            return
        if self.block:
            store(gx, buf.reshape(gx.shape), accum)
        else:
            store(gx, buf.reshape(self.tshape).transpose(self.inv), accum)


class _Extreme(_Lines):
    def extremes(self, x, vals, idx, empty):
        """vals, idx (flat, n_out each) = extremes of the lines of x and their
        indices; an all-NaN line gives ``empty`` (NaN for the arg outputs, the
        reduction's identity for the plain ones, as on the CPU)."""
        n_out, r, inner = self.dims()
        if n_out == 0:
            return
        name = 'nncy_extreme_%s<%d' % ('rows' if r >= _ROWS_FROM else 'cols', self.op == 'max')
        args = (n_out, r, inner, self.lines(x), vals, idx, F32(empty))
        if r >= _ROWS_FROM:
            function(FILE, '%s, %d>' % (name, _ROWS_B))((blocks(int(n_out), 1),), (_ROWS_B,), args)
        else:
            launch(FILE, name + '>', int(n_out), args)

    def forward(self, inputs, outputs):
        with device(self):
            x = dev_data(inputs[0])
            n = self.outer * self.inner
            if not self.with_index:
                ident = -np.inf if self.op == 'max' else np.inf
                self.extremes(x, dev_data_out(outputs[0]), cp.empty(n, I64), ident)
                return
            iv = outputs[-1]
            idx = cp.empty(iv.shape, I64)
            vals = cp.empty(n, F32) if self.only_index else dev_data_out(outputs[0])
            self.extremes(x, vals, idx, np.nan)
            iv.data.set_array(idx)

    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        with device(self):
            x = inputs[0]
            gx = dev_grad_out(x, accum[0])
            if self.only_index:   # an index has no gradient
                if not accum[0]:
                    gx.fill(0)
                return
            n_out, r, inner = self.dims()
            idx = cp.empty(int(n_out), I64)      # the extremes again, from the data
            self.extremes(dev_data(x), cp.empty(int(n_out), F32), idx, np.nan)
            # the kernel adds: into gx itself when the layout is that of x
            if self.block:
                buf = gx
                if not accum[0]:
                    gx.fill(0)
            else:
                buf = cp.zeros(self.outer * self.r, F32)
            gy = contiguous(dev_grad(outputs[0]), F32)
            launch(FILE, 'nncy_arg_scatter', int(n_out), (n_out, r, inner, gy, idx, buf))
            self.put_grad(buf, gx, accum[0])


@register('Max', 'cuda')
class Max(_Extreme, _cpu_math.Max):
    pass


@register('Min', 'cuda')
class Min(_Extreme, _cpu_math.Min):
    pass


@register('Prod', 'cuda')
class Prod(_Lines, _cpu_math.Prod):
    def forward(self, inputs, outputs):
        with device(self):
            # in float64, as on the CPU: the product is rounded once
            x = self.lines(dev_data(inputs[0])).reshape(self.outer, self.r, self.inner)
            y = dev_data_out(outputs[0])
            y[...] = x.astype(np.float64).prod(axis=1).astype(F32).reshape(y.shape)

    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        with device(self):
            x = inputs[0]
            gx = dev_grad_out(x, accum[0])
            n_out, r, inner = self.dims()
            buf = self.grad_buffer(gx, accum[0])
            gy = contiguous(dev_grad(outputs[0]), F32)
            launch(FILE, 'nncy_prod_grad', int(n_out),
                   (n_out, r, inner, self.lines(dev_data(x)), gy, buf))
            self.put_grad(buf, gx, accum[0])


@register('ReduceSum', 'cuda')
class ReduceSum(_Reduce, _cpu_math.ReduceSum):
    pass


@register('ReduceMean', 'cuda')
class ReduceMean(_Reduce, _cpu_math.ReduceMean):
    pass


# ---------------------------------------------------------------------------
# n-ary arithmetic: inputs combined one after another in the CPU kernel's
# order (sum from 0, product from 1, gradient product from gy).

def _fold(xs, first, op, skip=None):
    out = first
    for k, x in enumerate(xs):
        if k != skip:
            out = op(out, x)
    return out


@register('AddN', 'cuda')
class AddN(_cpu_math.AddN):
    def forward(self, inputs, outputs):
        with device(self):
            y = dev_data_out(outputs[0])
            y.fill(0)
            for v in inputs:
                y += dev_data(v).astype(F32, copy=False)

    def backward(self, inputs, outputs, propagate_down, accum):
        with device(self):
            gy = dev_grad(outputs[0])
            for v, p, a in zip(inputs, propagate_down, accum):
                if p:
                    store(dev_grad_out(v, a), gy, a)


@register('MulN', 'cuda')
class MulN(_cpu_math.MulN):
    def forward(self, inputs, outputs):
        with device(self):
            xs = [dev_data(v).astype(F32, copy=False) for v in inputs]
            dev_data_out(outputs[0])[...] = _fold(xs[1:], xs[0], cp.multiply)

    def backward(self, inputs, outputs, propagate_down, accum):
        with device(self):
            gy = dev_grad(outputs[0]).astype(F32, copy=False)
            xs = [dev_data(v).astype(F32, copy=False) for v in inputs]
            # one input at a time, so that a variable given twice adds up
            for i, (v, p, a) in enumerate(zip(inputs, propagate_down, accum)):
                if p:
                    store(dev_grad_out(v, a), _fold(xs, gy, cp.multiply, skip=i), a)


# ---------------------------------------------------------------------------
# where

@register('Where', 'cuda')
class Where(_cpu_math.Where):
    def _mask(self, inputs):
        """condition != 0 (NaN counts as true) shaped to broadcast over x."""
        c = dev_data(inputs[0])
        extra = len(inputs[1].shape) - len(inputs[0].shape)
        return (c != 0).reshape(c.shape + (1,) * extra)

    def forward(self, inputs, outputs):
        with device(self):
            y = dev_data_out(outputs[0])
            y[...] = cp.where(self._mask(inputs), dev_data(inputs[1]), dev_data(inputs[2]))

    def backward(self, inputs, outputs, propagate_down, accum):
        with device(self):
            if propagate_down[0] and not accum[0]:   # the condition gets no gradient
                dev_grad_out(inputs[0], False).fill(0)
            if not (propagate_down[1] or propagate_down[2]):
                return
            mask = self._mask(inputs)
            gy = dev_grad(outputs[0])
            zero = F32(0)
            for i, g in ((1, cp.where(mask, gy, zero)), (2, cp.where(mask, zero, gy))):
                if propagate_down[i]:
                    store(dev_grad_out(inputs[i], accum[i]), g, accum[i])


# ---------------------------------------------------------------------------
# generators (no inputs, no gradient)

@register('Constant', 'cuda')
class Constant(_cpu_math.Constant):
    def forward(self, inputs, outputs):
        with device(self):
            dev_data_out(outputs[0]).fill(F32(self.args['val']))


@register('Arange', 'cuda')
class Arange(_cpu_math.Arange):
    def forward(self, inputs, outputs):
        with device(self):
            y = dev_data_out(outputs[0])
            if y.size:
                function(FILE, 'nncy_arange')((1,), (1,), (
                    I64(y.size), F32(self.args['start']), F32(self.args['step']), y))


# ---------------------------------------------------------------------------
# diagonal matrices: the diagonals of (batch, n, n) are every (n + 1)-th
# element of the (batch, n * n) rows, a strided view.

def _diagonals(a, batch, n):
    return a.reshape(batch, n * n)[:, ::n + 1]


@register('MatrixDiag', 'cuda')
class MatrixDiag(_cpu_math.MatrixDiag):
    def forward(self, inputs, outputs):
        with device(self):
            x = inputs[0]
            b, n = self._sizes(x)
            y = dev_data_out(outputs[0])
            y.fill(0)
            _diagonals(y, b, n)[...] = dev_data(x).reshape(b, n)

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0]:
            with device(self):
                x = inputs[0]
                g = _diagonals(dev_grad(outputs[0]), *self._sizes(x)).reshape(x.shape)
                store(dev_grad_out(x, accum[0]), g, accum[0])


@register('MatrixDiagPart', 'cuda')
class MatrixDiagPart(_cpu_math.MatrixDiagPart):
    def _sizes(self, x):
        return _prod(x.shape[:-2]), x.shape[-1]

    def forward(self, inputs, outputs):
        with device(self):
            y = dev_data_out(outputs[0])
            y[...] = _diagonals(dev_data(inputs[0]), *self._sizes(inputs[0])).reshape(y.shape)

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0]:
            with device(self):
                gx = dev_grad_out(inputs[0], accum[0])
                if not accum[0]:
                    gx.fill(0)
                d = _diagonals(gx, *self._sizes(inputs[0]))
                d += dev_grad(outputs[0]).reshape(d.shape)


# ---------------------------------------------------------------------------
# composite rows: the private graph runs on the device by itself (its nodes
# were created under the cuda context); only the copies in and out move here.

class Composite(_composite.Composite):
    def copy_out(self, o, y):
        with device(self):
            dev_data_out(y)[...] = dev_data(o)

    def zero_grad(self, x):
        with device(self):
            dev_grad_out(x, False).fill(0)


for _t in ('CReLU', 'CELU'):
    register(_t, 'cuda')(Composite)
