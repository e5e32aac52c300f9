"""cuda implementations of the array-manipulation functions: joining and
cutting (concatenate, split, stack, slice), views (reshape, transpose,
broadcast, broadcast_to, tile, flip), index maps (pad, shift, gather_nd,
scatter_nd, one_hot), sorting (sort, top_k_data, top_k_grad), batched linear
algebra (batch_inv, batch_det) and assign and sink.

Data moves through CuPy array operations; where several values are summed
into one place (the adjoints of gathers) the ``nncy_scatter_rows_add`` kernel
adds them with atomicAdd.  Each class reuses its CPU class's ``setup``."""
import numpy as np

from nncy import _cpu, _cpu_array as A
from nncy._core import dev_data, dev_data_out, dev_grad, dev_grad_out, register
from nncy.cuda._common import CopyForward, contiguous, cp, device, launch, store, sum_to

KERNELS = 'array.cu'
F32 = np.float32
I64 = np.int64


def _f32(v):
    """The data of v on the device as float32."""
    return dev_data(v).astype(F32, copy=False)


def _g32(v):
    """The gradient of v on the device as float32."""
    return dev_grad(v).astype(F32, copy=False)


def _zero_grad(v, accum):
    if not accum:
        dev_grad_out(v, False).fill(0)


def _scatter_rows_add(src, dst, rows):
    """dst (outer, n, inner) += src (outer, len(rows), inner) with source row l
    added to row rows[l] (rows: int64 device array of values in [0, n); dst:
    a contiguous float32 array)."""
    _, n, inner = dst.shape
    src = contiguous(src, F32)
    launch(KERNELS, 'nncy_scatter_rows_add', src.size,
           (I64(src.size), I64(rows.size), I64(n), I64(inner), contiguous(rows, I64),
            src, dst))


# ---------------------------------------------------------------------------
# joining and cutting

def _take(a, axis, index):
    """a[..., index, ...] with index on ``axis`` (a view)."""
    return a[(slice(None),) * axis + (index,)]


@register('Concatenate', 'cuda')
class Concatenate(A.Concatenate):
    def forward(self, inputs, outputs):
        with device(self):
            y = dev_data_out(outputs[0])
            lo = 0
            for x, n in zip(inputs, self.sizes):
                _take(y, self.axis, slice(lo, lo + n))[...] = dev_data(x)
                lo += n

    def backward(self, inputs, outputs, propagate_down, accum):
        with device(self):
            gy = dev_grad(outputs[0])
            lo = 0
            for x, n, p, a in zip(inputs, self.sizes, propagate_down, accum):
                if p:
                    store(dev_grad_out(x, a), _take(gy, self.axis, slice(lo, lo + n)), a)
                lo += n


@register('Split', 'cuda')
class Split(A.Split):
    def forward(self, inputs, outputs):
        with device(self):
            x = dev_data(inputs[0])
            for i, y in enumerate(outputs):
                dev_data_out(y)[...] = _take(x, self.axis, i)

    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        with device(self):
            gx = dev_grad_out(inputs[0], accum[0])
            for i, y in enumerate(outputs):
                store(_take(gx, self.axis, i), dev_grad(y), accum[0])


@register('Stack', 'cuda')
class Stack(A.Stack):
    def forward(self, inputs, outputs):
        with device(self):
            y = dev_data_out(outputs[0])
            for i, x in enumerate(inputs):
                _take(y, self.axis, i)[...] = dev_data(x)

    def backward(self, inputs, outputs, propagate_down, accum):
        with device(self):
            gy = dev_grad(outputs[0])
            for i, (x, p, a) in enumerate(zip(inputs, propagate_down, accum)):
                if p:
                    store(dev_grad_out(x, a), _take(gy, self.axis, i), a)


@register('Slice', 'cuda')
class Slice(_cpu.Slice):
    def forward(self, inputs, outputs):
        with device(self):
            dev_data_out(outputs[0])[...] = dev_data(inputs[0])[self.slices]

    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        with device(self):
            gx = dev_grad_out(inputs[0], accum[0])
            if not accum[0]:
                gx.fill(0)
            gx[self.slices] += dev_grad(outputs[0])   # the slices never repeat an index


# ---------------------------------------------------------------------------
# views

@register('Reshape', 'cuda')
class Reshape(_cpu.Reshape):
    """In place (the default), the output shares the input's storage: its
    device array is a reshaped view of the input's (or, while the input has
    only host data, a view of the host array, as on the CPU)."""

    def link(self, inputs, outputs):
        if self.args['inplace']:
            arr = inputs[0].data.data   # the device array when there is one
            outputs[0].data.set_array(arr.reshape(outputs[0].shape))

    def forward(self, inputs, outputs):
        x, y = inputs[0], outputs[0]
        with device(self):
            if self.args['inplace']:
                y.data.set_array(dev_data(x).reshape(y.shape))
            else:
                dev_data_out(y)[...] = dev_data(x).reshape(y.shape)

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0]:
            with device(self):
                x = inputs[0]
                store(dev_grad_out(x, accum[0]), dev_grad(outputs[0]).reshape(x.shape),
                      accum[0])


@register('Transpose', 'cuda')
class Transpose(A.Transpose):
    def forward(self, inputs, outputs):
        with device(self):
            dev_data_out(outputs[0])[...] = dev_data(inputs[0]).transpose(self.axes)

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0]:
            with device(self):
                store(dev_grad_out(inputs[0], accum[0]),
                      dev_grad(outputs[0]).transpose(self.inv), accum[0])


@register('Broadcast', 'cuda')
class Broadcast(A.Broadcast):
    def forward(self, inputs, outputs):
        with device(self):
            y = dev_data_out(outputs[0])
            y[...] = cp.broadcast_to(dev_data(inputs[0]), y.shape)

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0]:
            with device(self):
                x = inputs[0]
                g = sum_to(_g32(outputs[0]), x.shape)
                store(dev_grad_out(x, accum[0]), g.reshape(x.shape), accum[0])


@register('BroadcastTo', 'cuda')
class BroadcastTo(A.BroadcastTo):
    def forward(self, inputs, outputs):
        with device(self):
            y = dev_data_out(outputs[0])
            y[...] = cp.broadcast_to(dev_data(inputs[1]).reshape(self.view), y.shape)

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0]:
            with device(self):
                _zero_grad(inputs[0], accum[0])
        if propagate_down[1]:
            with device(self):
                y = inputs[1]
                axes = tuple(i for i, n in enumerate(self.view) if n == 1
                             and outputs[0].shape[i] != 1)
                gy = _g32(outputs[0])
                g = gy.sum(axis=axes) if axes else gy
                store(dev_grad_out(y, accum[1]), g.reshape(y.shape), accum[1])


@register('Tile', 'cuda')
class Tile(A.Tile):
    def forward(self, inputs, outputs):
        with device(self):
            y = dev_data_out(outputs[0]).reshape(self.wide)
            y[...] = cp.broadcast_to(dev_data(inputs[0]).reshape(self.view), self.wide)

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0]:
            with device(self):
                x = inputs[0]
                gy = _g32(outputs[0]).reshape(self.wide)
                g = gy.sum(axis=tuple(range(0, len(self.wide), 2)))
                store(dev_grad_out(x, accum[0]), g.reshape(x.shape), accum[0])


@register('Flip', 'cuda')
class Flip(A.Flip):
    def forward(self, inputs, outputs):
        with device(self):
            dev_data_out(outputs[0])[...] = dev_data(inputs[0])[self.sl]

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0]:
            with device(self):
                store(dev_grad_out(inputs[0], accum[0]), dev_grad(outputs[0])[self.sl],
                      accum[0])


# ---------------------------------------------------------------------------
# coordinate maps per axis (pad in reflect/repeat mode, shift): y gathers x
# along each mapped axis; the gradient scatter-adds back axis by axis.

class _AxisMaps:
    def _dev_maps(self):
        """self.maps (host int arrays, None for unmapped axes) on the device."""
        key = cp.cuda.runtime.getDevice()
        cache = self.__dict__.setdefault('_maps_dev', {})
        if key not in cache:
            cache[key] = [None if m is None else cp.asarray(np.asarray(m, I64))
                          for m in self.maps]
        return cache[key]

    def gather(self, x):
        for a, m in enumerate(self._dev_maps()):
            if m is not None:
                x = cp.take(x, m, axis=a)
        return x

    def scatter(self, g, shape):
        for a, m in enumerate(self._dev_maps()):
            if m is None:
                continue
            outer, inner = A._prod(g.shape[:a]), A._prod(g.shape[a + 1:])
            acc = cp.zeros(g.shape[:a] + (shape[a],) + g.shape[a + 1:], F32)
            _scatter_rows_add(g, acc.reshape(outer, shape[a], inner), m)
            g = acc
        return g

    def forward(self, inputs, outputs):
        with device(self):
            dev_data_out(outputs[0])[...] = self.gather(dev_data(inputs[0]))

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0]:
            with device(self):
                x = inputs[0]
                store(dev_grad_out(x, accum[0]), self.scatter(_g32(outputs[0]), x.shape),
                      accum[0])


@register('Pad', 'cuda')
class Pad(_AxisMaps, A.Pad):
    def forward(self, inputs, outputs):
        if self.args['mode'] != 'constant':
            return _AxisMaps.forward(self, inputs, outputs)
        with device(self):
            y = dev_data_out(outputs[0])
            y.fill(self.args['constant_value'])
            y[self.inner] = dev_data(inputs[0])

    def backward(self, inputs, outputs, propagate_down, accum):
        if self.args['mode'] != 'constant':
            return _AxisMaps.backward(self, inputs, outputs, propagate_down, accum)
        if propagate_down[0]:
            with device(self):
                store(dev_grad_out(inputs[0], accum[0]), dev_grad(outputs[0])[self.inner],
                      accum[0])


@register('Shift', 'cuda')
class Shift(_AxisMaps, A.Shift):
    pass


# ---------------------------------------------------------------------------
# gather_nd / scatter_nd: the M index rows address rows of the array seen as
# (prod(shape[:M]), prod(shape[M:])).

def _int_data(v):
    """The data of an index or label input on the device as int64 (rounded
    from floats, as on the CPU)."""
    a = dev_data(v)
    return cp.rint(a).astype(I64) if a.dtype.kind == 'f' else a.astype(I64, copy=False)


def _strides(shape):
    """Row-major element strides of ``shape`` (int64, on the device)."""
    st = np.cumprod((1,) + tuple(shape[1:])[::-1])[::-1]
    return cp.asarray(np.ascontiguousarray(st, I64))


def _flat_rows(impl, idx_var, shape, what):
    """Row numbers (int64, flat) of the index columns of idx_var into the first
    M axes of ``shape``; negative coordinates wrap.  Out-of-range coordinates
    raise the CPU's error."""
    idx = _int_data(idx_var)
    m = idx.shape[0]
    c = idx.reshape(m, -1)
    lim = cp.asarray(np.array(shape[:m], I64)).reshape(m, 1)
    if c.size and bool(((c < -lim) | (c >= lim)).any()):
        A._coords(impl, idx_var, shape, what)   # raises the error (reads on the host)
    c = cp.where(c < 0, c + lim, c)
    return (c * _strides(shape[:m]).reshape(m, 1)).sum(axis=0), m


@register('GatherNd', 'cuda')
class GatherNd(A.GatherNd):
    def forward(self, inputs, outputs):
        data, idx = inputs
        with device(self):
            rows, m = _flat_rows(self, idx, data.shape, 'data')
            x = dev_data(data).reshape(A._prod(data.shape[:m]), -1)
            y = dev_data_out(outputs[0])
            y[...] = cp.take(x, rows, axis=0).reshape(y.shape)

    def backward(self, inputs, outputs, propagate_down, accum):
        data, idx = inputs
        with device(self):
            if propagate_down[0]:
                rows, m = _flat_rows(self, idx, data.shape, 'data')
                gx = dev_grad_out(data, accum[0])
                if not accum[0]:
                    gx.fill(0)
                acc = gx if gx.dtype == F32 else cp.zeros(gx.shape, F32)
                _scatter_rows_add(dev_grad(outputs[0]),
                                  acc.reshape(1, A._prod(data.shape[:m]), -1), rows)
                if acc is not gx:
                    gx += acc.astype(gx.dtype)
            if propagate_down[1]:
                _zero_grad(idx, accum[1])


@register('ScatterNd', 'cuda')
class ScatterNd(A.ScatterNd):
    def forward(self, inputs, outputs):
        data, idx = inputs
        y = outputs[0]
        with device(self):
            rows, m = _flat_rows(self, idx, self.shape, 'the output')
            if self.keep:   # scatter into out='s values
                arr = dev_data(y)
                if arr.dtype != F32:
                    y.data.set_array(arr.astype(F32))
                    arr = dev_data(y)
            else:
                arr = dev_data_out(y)
                arr.fill(0)
            n = A._prod(self.shape[:m])
            if self.args['add']:
                _scatter_rows_add(dev_data(data), arr.reshape(1, n, -1), rows)
            else:
                arr.reshape(n, -1)[rows] = dev_data(data).reshape(rows.size, -1)

    def backward(self, inputs, outputs, propagate_down, accum):
        data, idx = inputs
        with device(self):
            if propagate_down[0]:
                rows, m = _flat_rows(self, idx, self.shape, 'the output')
                gy = dev_grad(outputs[0]).reshape(A._prod(self.shape[:m]), -1)
                store(dev_grad_out(data, accum[0]),
                      cp.take(gy, rows, axis=0).reshape(data.shape), accum[0])
            if propagate_down[1]:
                _zero_grad(idx, accum[1])


@register('OneHot', 'cuda')
class OneHot(A.OneHot):
    def forward(self, inputs, outputs):
        with device(self):
            k = len(self.shape)
            lab = _int_data(inputs[0]).reshape(-1, k)
            lim = cp.asarray(np.array(self.shape, I64))
            if lab.size and bool(((lab < 0) | (lab >= lim)).any()):
                A.OneHot.forward(self, inputs, outputs)   # raises the error (on the host)
            flat = (lab * _strides(self.shape)).sum(axis=1)
            y = dev_data_out(outputs[0]).reshape(lab.shape[0], -1)
            y.fill(0)
            y[cp.arange(lab.shape[0]), flat] = 1

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0]:
            with device(self):
                _zero_grad(inputs[0], accum[0])


# ---------------------------------------------------------------------------
# sort and top-k (CuPy's sorts are stable, as the CPU's)

@register('Sort', 'cuda')
class Sort(A.Sort):
    def order(self, x):
        key = -x if self.args['reverse'] else x
        return cp.argsort(key, axis=self.axis, kind='stable')

    def forward(self, inputs, outputs):
        with device(self):
            x = _f32(inputs[0])
            idx = self.order(x)
            if not self.only_index:
                dev_data_out(outputs[0])[...] = cp.take_along_axis(x, idx, self.axis)
            if self.with_index:
                outputs[-1].data.set_array(contiguous(idx, I64))

    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        with device(self):
            x = inputs[0]
            if self.only_index:
                _zero_grad(x, accum[0])
                return
            # the output position of each input element: the inverse permutation
            inv = cp.argsort(self.order(_f32(x)), axis=self.axis, kind='stable')
            g = cp.take_along_axis(_g32(outputs[0]), inv, self.axis)
            store(dev_grad_out(x, accum[0]), g, accum[0])


def _top_k(v, k, use_abs):
    """Indices of the k largest entries (by value or magnitude, ties to the
    first) of each row of 2-D v."""
    key = cp.abs(v) if use_abs else v
    return cp.argsort(-key, axis=1, kind='stable')[:, :k]


def _put_rows(m, n, idx, vals):
    """An (m, n) float32 array of zeros with vals put at idx in each row."""
    g = cp.zeros((m, n), F32)
    g[cp.arange(m).reshape(m, 1), idx] = vals
    return g


@register('TopKData', 'cuda')
class TopKData(A.TopKData):
    def forward(self, inputs, outputs):
        with device(self):
            x = _f32(inputs[0]).reshape(self.m, self.n)
            idx = _top_k(x, self.args['k'], self.args['abs'])
            vals = cp.take_along_axis(x, idx, 1)
            y = dev_data_out(outputs[0])
            if self.args['reduce']:
                y[...] = vals.reshape(y.shape)
            else:
                y[...] = _put_rows(self.m, self.n, idx, vals).reshape(y.shape)

    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        with device(self):
            x = inputs[0]
            idx = _top_k(_f32(x).reshape(self.m, self.n), self.args['k'], self.args['abs'])
            gy = _g32(outputs[0]).reshape(self.m, -1)
            vals = gy if self.args['reduce'] else cp.take_along_axis(gy, idx, 1)
            store(dev_grad_out(x, accum[0]),
                  _put_rows(self.m, self.n, idx, vals).reshape(x.shape), accum[0])


@register('TopKGrad', 'cuda')
class TopKGrad(CopyForward, A.TopKGrad):
    def backward(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        with device(self):
            x = inputs[0]
            gy = _g32(outputs[0]).reshape(self.m, self.n)
            idx = _top_k(gy, self.args['k'], self.args['abs'])
            g = _put_rows(self.m, self.n, idx, cp.take_along_axis(gy, idx, 1))
            store(dev_grad_out(x, accum[0]), g.reshape(x.shape), accum[0])


# ---------------------------------------------------------------------------
# batch_inv, batch_det (in float64, as on the CPU), assign, sink

@register('BatchInv', 'cuda')
class BatchInv(A.BatchInv):
    def forward(self, inputs, outputs):
        with device(self):
            dev_data_out(outputs[0])[...] = cp.linalg.inv(dev_data(inputs[0]).astype(np.float64))

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0]:
            with device(self):
                it = dev_data(outputs[0]).astype(np.float64).transpose(0, 2, 1)
                g = -cp.matmul(cp.matmul(it, dev_grad(outputs[0]).astype(np.float64)), it)
                store(dev_grad_out(inputs[0], accum[0]), g, accum[0])


@register('BatchDet', 'cuda')
class BatchDet(A.BatchDet):
    def forward(self, inputs, outputs):
        with device(self):
            dev_data_out(outputs[0])[...] = cp.linalg.det(dev_data(inputs[0]).astype(np.float64))

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0]:
            with device(self):
                x = dev_data(inputs[0]).astype(np.float64)
                gd = dev_grad(outputs[0]).astype(np.float64) * cp.linalg.det(x)
                g = gd.reshape(-1, 1, 1) * cp.linalg.inv(x).transpose(0, 2, 1)
                store(dev_grad_out(inputs[0], accum[0]), g, accum[0])


@register('Assign', 'cuda')
class Assign(A.Assign):
    """dst's data is overwritten with src's (on the device); the output is a
    copy of src."""

    def forward(self, inputs, outputs):
        dst, src = inputs
        with device(self):
            s = dev_data(src)
            d = dev_data(dst)
            if d.dtype != F32:   # float32 storage, as the CPU's cast
                dst.data.set_array(cp.empty(d.shape, F32))
                d = dev_data(dst)
            d[...] = s
            dev_data_out(outputs[0])[...] = s

    def backward(self, inputs, outputs, propagate_down, accum):
        with device(self):
            if propagate_down[0]:
                store(dev_grad_out(inputs[0], accum[0]), dev_grad(outputs[0]), accum[0])
            if propagate_down[1]:
                _zero_grad(inputs[1], accum[1])


@register('Sink', 'cuda')
class Sink(_cpu.Sink):
    def forward(self, inputs, outputs):
        with device(self):
            dev_data_out(outputs[0]).fill(0)

    def backward(self, inputs, outputs, propagate_down, accum):
        if not self.args['one_input_grad']:
            return
        with device(self):
            for x, p, a in zip(inputs, propagate_down, accum):
                if p:
                    store(dev_grad_out(x, a), 1, a)
