"""Python operators of Variable and NdArray, mapped onto functions as NNabla
maps them (``x + 1`` is add_scalar, ``x + y`` is add2, ...)."""
import numbers

import numpy as np

from nncy import functions as F
from nncy._core import NdArray, Variable


def _scalar(v):
    return isinstance(v, (numbers.Number, np.number)) and not isinstance(v, bool)


def _arraylike(v):
    return isinstance(v, (Variable, NdArray))


def _binary(name, array_fn, scalar_fn):
    def op(x, y):
        if _arraylike(y):
            return array_fn(x, y)
        if _scalar(y):
            return scalar_fn(x, y)
        return NotImplemented
    op.__name__ = name
    return op


add = _binary('add', F.add2, F.add_scalar)
mul = _binary('mul', F.mul2, F.mul_scalar)
div = _binary('div', F.div2, lambda x, v: F.mul_scalar(x, 1.0 / v))
pow_ = _binary('pow', F.pow2, F.pow_scalar)
sub = _binary('sub', F.sub2, lambda x, v: F.add_scalar(x, -v))


def _reflected(name, scalar_fn):
    def op(x, y):
        return scalar_fn(x, y) if _scalar(y) else NotImplemented
    op.__name__ = name
    return op


rsub = _reflected('rsub', F.r_sub_scalar)
rdiv = _reflected('rdiv', F.r_div_scalar)
rpow = _reflected('rpow', F.r_pow_scalar)


def neg(x):
    return F.mul_scalar(x, -1.0)


def abs_(x):
    return F.abs(x)


# Comparisons: less / less_scalar etc.  (== and != stay identity comparisons,
# as for NNabla's Variable.)  A reflected comparison (2 < x) reaches x.__gt__.
lt = _binary('lt', F.less, F.less_scalar)
le = _binary('le', F.less_equal, F.less_equal_scalar)
gt = _binary('gt', F.greater, F.greater_scalar)
ge = _binary('ge', F.greater_equal, F.greater_equal_scalar)


def matmul(x, y):
    """x @ y: batch_matmul of operands with at least 2 dimensions."""
    if not _arraylike(y):
        return NotImplemented
    if len(x.shape) < 2 or len(y.shape) < 2:
        raise ValueError('@: operands need at least 2 dimensions, got shapes %s and %s'
                         % (x.shape, y.shape))
    return F.batch_matmul(x, y)


def getitem(x, key):
    """Basic indexing (ints, slices, None, Ellipsis) as F.slice + F.reshape."""
    if not isinstance(key, tuple):
        key = (key,)
    if sum(k is Ellipsis for k in key) > 1:
        raise IndexError('Variable.__getitem__: at most one Ellipsis, got %r' % (key,))
    nd = len(x.shape)
    used = sum(1 for k in key if k is not None and k is not Ellipsis)
    if used > nd:
        raise IndexError('Variable.__getitem__: too many indices (%d) for %d-D variable'
                         % (used, nd))
    if Ellipsis in key:
        i = key.index(Ellipsis)
        key = key[:i] + (slice(None),) * (nd - used) + key[i + 1:]
    else:
        key = key + (slice(None),) * (nd - used)
    start, stop, step, shape = [], [], [], []
    axis = 0
    for k in key:
        if k is None:
            shape.append(1)
            continue
        n = x.shape[axis]
        if isinstance(k, slice):
            a, b, c = k.indices(n)
            start.append(a)
            stop.append(b if b >= 0 else -n - 1)
            step.append(c)
            shape.append(len(range(a, b, c)))
        elif isinstance(k, (int, np.integer)):
            i = int(k)
            if not -n <= i < n:
                raise IndexError('Variable.__getitem__: index %d is out of bounds for axis %d '
                                 'with size %d' % (i, axis, n))
            i %= n
            start.append(i)
            stop.append(i + 1)
            step.append(1)
        else:
            raise TypeError('Variable.__getitem__: unsupported index %r' % (k,))
        axis += 1
    y = F.slice(x, start, stop, step)
    if tuple(shape) != y.shape:
        y = F.reshape(y, shape, inplace=False)
    return y
