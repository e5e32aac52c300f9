"""CPU implementations of the structured reduction, arithmetic, logical and math
functions: max, min, prod, reduce_sum, reduce_mean, add_n, mul_n, where,
constant, arange, matrix_diag, matrix_diag_part and batch_matmul (the
pointwise ones are rows of the table, served by ``nncy._core.Pointwise``).

As in ``nncy._cpu``: ``setup`` checks every argument before a kernel runs, and
the work is done by the Rust kernels through ``nncy._kernels``.
"""
import math

import numpy as np

from nncy import _kernels as K
from nncy._core import Impl, register, d32, dout, g32, gout, sum_to
from nncy._cpu import Mean, Sum, _axis, _prod

F32 = np.float32
I64 = np.int64


def _ordered_axes(impl, ndim, axis):
    """Reduction axes, non-negative, in the order given (None: all, in order)."""
    if axis is None:
        return list(range(ndim))
    if isinstance(axis, int):
        axis = (axis,)
    out = [_axis(impl, ndim, a) for a in axis]
    if len(set(out)) != len(out):
        raise impl.error('axis', 'repeats an axis: %r' % (tuple(axis),))
    return out


def _reduced_shape(shape, axes, keepdims):
    if keepdims:
        return tuple(1 if i in axes else s for i, s in enumerate(shape))
    return tuple(s for i, s in enumerate(shape) if i not in axes)


class _AxisReduce(Impl):
    """A reduction over ``axis`` whose kernels see the input as (outer, r, inner).

    When the axes (in the order given) are a block of consecutive axes the
    input is used as it is; otherwise it is transposed (kept axes first, then
    the reduced ones in the order given) into a copy seen as (outer, r, 1)."""
    ordered = True     # the order of the axes matters (flat indices)

    def setup_axes(self, x):
        shape = x.shape
        nd = len(shape)
        axes = _ordered_axes(self, nd, self.args['axis'])
        if not self.ordered:
            axes = sorted(axes)
        self.axes = axes
        self.kept = [i for i in range(nd) if i not in axes]
        self.r = _prod(shape[a] for a in axes)
        lo = axes[0] if axes else nd
        self.block = axes == list(range(lo, lo + len(axes)))
        if self.block:
            self.outer = _prod(shape[:lo])
            self.inner = _prod(shape[lo + len(axes):])
        else:
            self.outer = _prod(shape[i] for i in self.kept)
            self.inner = 1
            self.perm = self.kept + axes
            self.tshape = tuple(shape[i] for i in self.perm)
            self.inv = tuple(int(i) for i in np.argsort(self.perm))
        return _reduced_shape(shape, axes, self.args['keepdims'])

    def source(self, x):
        """x (float32) as the kernels read it: itself or its transposed copy."""
        if self.block:
            return x
        t = np.empty(self.tshape, F32)
        K.strided_copy(self.spec.name, x.transpose(self.perm), t)
        return t

    def scatter_back(self, tmp, gx, accum):
        """gx (+)= tmp, a gradient in the transposed layout."""
        K.strided_copy(self.spec.name, tmp.reshape(self.tshape).transpose(self.inv), gx, accum)


class _Extreme(_AxisReduce):
    """Max and Min, with the flat index (within the reduced axes, in the order
    given) of the first extreme as a second output or as the only one."""
    op = 'max'

    def setup(self, inputs):
        x = inputs[0]
        out = self.setup_axes(x)
        if self.r == 0 and _prod(out) > 0:
            raise self.error('axis', 'reduces over zero elements (x has shape %s): the %s '
                             'of nothing is undefined' % (x.shape, self.op))
        self.only_index = self.args['only_index']
        self.with_index = self.args['with_index'] or self.only_index
        return [out] if self.only_index or not self.with_index else [out, out]

    def arg(self, x):
        """(values, indices) of the extremes of float32 x, flat."""
        n = self.outer * self.inner
        vals, idx = np.empty(n, F32), np.empty(n, I64)
        K.arg_reduce(self.spec.name, self.op, self.source(x), vals, idx, self.outer, self.r,
                     self.inner)
        return vals, idx

    def forward(self, inputs, outputs):
        x = d32(inputs[0])
        name = self.spec.name
        if not self.with_index:
            K.reduce(name, self.op, x, tuple(sorted(self.axes)), dout(outputs[0]))
            return
        iv = outputs[-1]
        idx = iv.data.cast(I64)
        if not idx.flags.c_contiguous:
            idx = np.empty(iv.shape, I64)
            iv.data.set_array(idx)
        vals = np.empty(iv.shape, F32) if self.only_index else dout(outputs[0])
        K.arg_reduce(name, self.op, self.source(x), vals, idx, self.outer, self.r, self.inner)

    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        x = inputs[0]
        gx = gout(x, accum[0])
        if self.only_index:   # an index has no gradient
            if not accum[0]:
                K.fill(self.spec.name, gx, 0.0)
            return
        gy = g32(outputs[0])
        _, idx = self.arg(d32(x))     # the extremes again, from the data
        if self.block:
            K.arg_scatter(self.spec.name, gy, idx, gx, self.outer, self.r, self.inner,
                          accum[0])
        else:
            tmp = np.empty(self.outer * self.r, F32)
            K.arg_scatter(self.spec.name, gy, idx, tmp, self.outer, self.r, 1, False)
            self.scatter_back(tmp, gx, accum[0])

    def grad_depends_input_data(self, i, j):
        return not self.only_index


@register('Max')
class Max(_Extreme):
    op = 'max'


@register('Min')
class Min(_Extreme):
    op = 'min'


@register('Prod')
class Prod(_AxisReduce):
    ordered = False

    def setup(self, inputs):
        return [self.setup_axes(inputs[0])]

    def forward(self, inputs, outputs):
        # accumulated in float64: a float32 product of n factors is off by ~sqrt(n) ulp
        K.prod(self.spec.name, self.source(d32(inputs[0])), dout(outputs[0]), self.outer,
               self.r, self.inner)

    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        x = inputs[0]
        gy = g32(outputs[0])
        gx = gout(x, accum[0])
        src = self.source(d32(x))
        if self.block:
            K.prod_grad(self.spec.name, src, gy, gx, self.outer, self.r, self.inner, accum[0])
        else:
            tmp = np.empty(src.size, F32)
            K.prod_grad(self.spec.name, src, gy, tmp, self.outer, self.r, 1, False)
            self.scatter_back(tmp, gx, accum[0])


class _ReduceAll:
    """Mixin: a reduction of every element to a scalar (no arguments)."""
    def setup(self, inputs):
        self.axes = tuple(range(len(inputs[0].shape)))
        return [()]


@register('ReduceSum')
class ReduceSum(_ReduceAll, Sum):
    pass


@register('ReduceMean')
class ReduceMean(_ReduceAll, Mean):
    pass


# ---------------------------------------------------------------------------
# n-ary arithmetic

class _Nary(Impl):
    op = 'sum'

    def setup(self, inputs):
        if len(inputs) < 2:
            raise self.error('x', 'needs at least 2 input variables, got %d' % len(inputs))
        shape = inputs[0].shape
        for k, v in enumerate(inputs):
            if v.shape != shape:
                raise self.error('x', 'inputs must all have one shape: input 0 has shape %s, '
                                 'input %d has shape %s' % (shape, k, v.shape))
        return [shape]

    def forward(self, inputs, outputs):
        K.nary(self.spec.name, self.op, [d32(v) for v in inputs], dout(outputs[0]))


@register('AddN')
class AddN(_Nary):
    op = 'sum'

    def backward(self, inputs, outputs, propagate_down, accum):
        gy = g32(outputs[0])
        for v, p, a in zip(inputs, propagate_down, accum):
            if p:
                K.strided_copy(self.spec.name, gy, gout(v, a), a)

    def grad_depends_input_data(self, i, j):
        return False


@register('MulN')
class MulN(_Nary):
    op = 'prod'

    def backward(self, inputs, outputs, propagate_down, accum):
        gy = g32(outputs[0])
        xs = [d32(v) for v in inputs]
        # one input at a time, so that a variable given twice adds up correctly
        for i, (v, p, a) in enumerate(zip(inputs, propagate_down, accum)):
            if p:
                K.nary(self.spec.name, 'prod', xs, gout(v, a), skip=i, gy=gy, accum=a)

    def grad_depends_input_data(self, i, j):
        return i != j


# ---------------------------------------------------------------------------
# where

@register('Where')
class Where(Impl):
    def setup(self, inputs):
        c, t, f = (v.shape for v in inputs)
        if t != f:
            raise self.error('x_false', 'must have the shape of x_true %s, got %s' % (t, f))
        if len(c) > len(t) or t[:len(c)] != c:
            raise self.error('condition', 'must have the leading dimensions of x_true: '
                             'condition has shape %s, x_true %s' % (c, t))
        self.outer = _prod(c)
        self.inner = _prod(t[len(c):])
        return [t]

    def forward(self, inputs, outputs):
        c, t, f = (d32(v) for v in inputs)
        K.where(self.spec.name, c, t, f, dout(outputs[0]), self.outer, self.inner)

    def backward(self, inputs, outputs, propagate_down, accum):
        name = self.spec.name
        if propagate_down[0] and not accum[0]:   # the condition gets no gradient
            K.fill(name, gout(inputs[0], False), 0.0)
        if not (propagate_down[1] or propagate_down[2]):
            return
        c, gy = d32(inputs[0]), g32(outputs[0])
        for i, on_true in ((1, True), (2, False)):
            if propagate_down[i]:
                K.where_grad(name, c, gy, gout(inputs[i], accum[i]), self.outer, self.inner,
                             on_true, accum[i])

    def grad_depends_input_data(self, i, j):
        return j == 0 and i != 0


# ---------------------------------------------------------------------------
# generators

@register('Constant')
class Constant(Impl):
    def setup(self, inputs):
        shape = self.args['shape']
        if any(s < 0 for s in shape):
            raise self.error('shape', 'must not hold negative sizes, got %r' % (shape,))
        return [tuple(shape)]

    def forward(self, inputs, outputs):
        K.fill(self.spec.name, dout(outputs[0]), self.args['val'])

    def backward(self, inputs, outputs, propagate_down, accum):
        pass


# Most values arange may produce.
_ARANGE_CAP = 1 << 31


@register('Arange')
class Arange(Impl):
    def setup(self, inputs):
        start, stop, step = (self.args[k] for k in ('start', 'stop', 'step'))
        for k, v in (('start', start), ('stop', stop), ('step', step)):
            if not math.isfinite(v):
                raise self.error(k, 'must be finite, got %r' % v)
        if F32(step) == 0:
            raise self.error('step', 'must not be zero')
        if (stop - start) / step > _ARANGE_CAP:
            raise self.error('step', 'gives more than %d values from start=%r to stop=%r'
                             % (_ARANGE_CAP, start, stop))
        return [(K.arange_count(self.spec.name, start, stop, step, _ARANGE_CAP),)]

    def forward(self, inputs, outputs):
        K.arange(self.spec.name, self.args['start'], self.args['step'], dout(outputs[0]))

    def backward(self, inputs, outputs, propagate_down, accum):
        pass


# ---------------------------------------------------------------------------
# diagonal matrices

def _diagonal(a):
    """The diagonals of the matrices over a's last two axes (a strided view)."""
    return np.diagonal(a, axis1=-2, axis2=-1)


@register('MatrixDiag')
class MatrixDiag(Impl):
    def setup(self, inputs):
        shape = inputs[0].shape
        if not shape:
            raise self.error('x', 'must have at least one dimension, got shape ()')
        return [shape + shape[-1:]]

    def _sizes(self, x):
        n = x.shape[-1]
        return _prod(x.shape[:-1]), n

    def forward(self, inputs, outputs):
        x = inputs[0]
        K.matrix_diag(self.spec.name, d32(x), dout(outputs[0]), *self._sizes(x), False)

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0]:
            K.strided_copy(self.spec.name, _diagonal(g32(outputs[0])),
                           gout(inputs[0], accum[0]), accum[0])

    def grad_depends_input_data(self, i, j):
        return False


@register('MatrixDiagPart')
class MatrixDiagPart(Impl):
    def setup(self, inputs):
        shape = inputs[0].shape
        if len(shape) < 2 or shape[-1] != shape[-2]:
            raise self.error('x', 'must hold square matrices over its last two dimensions, '
                             'got shape %s' % (shape,))
        return [shape[:-1]]

    def forward(self, inputs, outputs):
        K.strided_copy(self.spec.name, _diagonal(d32(inputs[0])), dout(outputs[0]))

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0]:
            x = inputs[0]
            n = x.shape[-1]
            K.matrix_diag(self.spec.name, g32(outputs[0]), gout(x, accum[0]),
                          _prod(x.shape[:-2]), n, accum[0])

    def grad_depends_input_data(self, i, j):
        return False


# ---------------------------------------------------------------------------
# batch_matmul

def _broadcast(impl, a, b):
    """NumPy broadcast of two batch shapes, or a ValueError naming both."""
    n = max(len(a), len(b))
    pa, pb = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
    out = []
    for da, db in zip(pa, pb):
        if da != db and da != 1 and db != 1:
            raise impl.error('b', 'has batch dimensions %s that do not broadcast with those '
                             'of a, %s' % (b, a))
        out.append(db if da == 1 else da)
    return tuple(out)


def _batched(name, v, batch):
    """v (..., rows, cols) as a 3-D (batch, rows, cols) view walking the batch
    axes with one stride, or as a contiguous copy when they cannot be."""
    dims = [(s, t) for s, t in zip(v.shape[:-2], v.strides[:-2]) if s != 1]
    if all(t1 == t2 * s2 for (_, t1), (s2, t2) in zip(dims, dims[1:])):
        bs = dims[-1][1] if dims else 0
        return np.lib.stride_tricks.as_strided(v, (batch,) + v.shape[-2:],
                                               (bs,) + v.strides[-2:], writeable=False)
    c = np.empty(v.shape, F32)
    K.strided_copy(name, v, c)
    return c.reshape((batch,) + v.shape[-2:])


@register('BatchMatmul')
class BatchMatmul(Impl):
    def setup(self, inputs):
        a, b = inputs[0].shape, inputs[1].shape
        for arg, s in (('a', a), ('b', b)):
            if len(s) < 2:
                raise self.error(arg, 'must have at least 2 dimensions, got shape %s' % (s,))
        ta, tb = self.args['transpose_a'], self.args['transpose_b']
        m, k = (a[-1], a[-2]) if ta else (a[-2], a[-1])
        kb, n = (b[-1], b[-2]) if tb else (b[-2], b[-1])
        if k != kb:
            raise self.error('b', 'of shape %s (transpose_b=%s) does not match a of shape %s '
                             '(transpose_a=%s): inner sizes %d and %d differ'
                             % (b, tb, a, ta, k, kb))
        self.bshape = _broadcast(self, a[:-2], b[:-2])
        self.batch = _prod(self.bshape)
        self.mkn = m, k, n
        return [self.bshape + (m, n)]

    def _operands(self, inputs):
        """a and b as 3-D (batch, m, k) and (batch, k, n) views (or copies)."""
        out = []
        for v, t in zip(inputs, (self.args['transpose_a'], self.args['transpose_b'])):
            d = d32(v)
            mat = np.swapaxes(d, -1, -2) if t else d
            full = np.broadcast_to(mat, self.bshape + mat.shape[-2:])
            out.append(_batched(self.spec.name, full, self.batch))
        return out

    def forward(self, inputs, outputs):
        a3, b3 = self._operands(inputs)
        m, _, n = self.mkn
        K.batch_gemm(self.spec.name, a3, b3, dout(outputs[0]).reshape(self.batch, m, n),
                     0.0, 1.0)

    def backward(self, inputs, outputs, propagate_down, accum):
        if not (propagate_down[0] or propagate_down[1]):
            return
        m, _, n = self.mkn
        a3, b3 = self._operands(inputs)
        gy = g32(outputs[0]).reshape(self.batch, m, n)
        gyt = gy.transpose(0, 2, 1)
        ta, tb = self.args['transpose_a'], self.args['transpose_b']
        # each gradient is computed in its input's own layout:
        #   da = dy b^T (a^T: b dy^T),   db = a^T dy (b^T: dy^T a)
        if propagate_down[0]:
            lhs, rhs = (b3, gyt) if ta else (gy, b3.transpose(0, 2, 1))
            self._grad(inputs[0], accum[0], lhs, rhs)
        if propagate_down[1]:
            lhs, rhs = (gyt, a3) if tb else (a3.transpose(0, 2, 1), gy)
            self._grad(inputs[1], accum[1], lhs, rhs)

    def _grad(self, v, accum, lhs, rhs):
        """v's gradient (+)= lhs @ rhs, summed over the batch axes v was broadcast along."""
        mat = v.shape[-2:]
        if _prod(v.shape[:-2]) == self.batch:
            g = gout(v, accum)
            K.batch_gemm(self.spec.name, lhs, rhs, g.reshape((self.batch,) + mat),
                         float(accum), 1.0)
        else:
            tmp = np.empty(self.bshape + mat, F32)
            K.batch_gemm(self.spec.name, lhs, rhs, tmp.reshape((self.batch,) + mat), 0.0, 1.0)
            sum_to(self.spec.name, tmp, v.shape, gout(v, accum), accum)

    def grad_depends_input_data(self, i, j):
        return i != j
