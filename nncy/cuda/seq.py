"""cuda implementations of the sequence layers: embed, rnn, lstm, gru and
multi_head_attention.

The matrix products (projections, per-step hidden products, their gradients,
attention scores) run on cuBLAS through ``cp.matmul``; the elementwise part
of a recurrent time step and the embedding's scatter-add run as kernels of
``kernels/seq.cu``.  As on the CPU, a Python loop runs over layers,
directions and time steps only.

Dropout masks are drawn from the global generator (``nncy.random``) on the
host, exactly as the CPU classes draw them, and uploaded: under the same seed
both backends drop the same units.

Gradients follow the CPU classes: the buffers to overwrite are zeroed first
and then only added to, so an input given twice (self-attention with
query = key = value) receives the sum of both contributions."""
import numpy as np

from nncy import _cpu_seq
from nncy._core import dev_data, dev_data_out, dev_grad, dev_grad_out, register
from nncy._cpu_seq import _dropout_mask
from nncy.cuda._common import contiguous, cp, device, launch

SEQ = 'seq.cu'
F32 = np.float32


def _d32(v):
    """Data of a Variable as a contiguous float32 device array."""
    return contiguous(dev_data(v), F32)


def _g32(v):
    """Gradient of a Variable as a contiguous float32 device array."""
    return contiguous(dev_grad(v), F32)


def _mask(shape, p):
    """An inverted-dropout mask on the device (drawn as the CPU draws it)."""
    return cp.asarray(_dropout_mask(shape, p))


# ---------------------------------------------------------------------------
# Embed: a gather forward, an atomicAdd scatter backward.

@register('Embed', 'cuda')
class Embed(_cpu_seq.Embed):
    def _dev_indices(self, x, rows):
        """x's indices as a flat int64 device array, checked against rows."""
        idx = dev_data(x)
        if idx.dtype.kind not in 'iubf':
            raise self.error('x0', 'must hold integer indices, got dtype %s' % idx.dtype,
                             TypeError)
        idx = contiguous(idx, np.int64).reshape(-1)
        if bool(((idx < 0) | (idx >= rows)).any()):
            host = idx.get()
            bad = host[(host < 0) | (host >= rows)]
            raise ValueError("%s: argument 'x0' holds index %d; indices must lie in [0, %d)"
                             % (self.spec.name, bad[0], rows))
        return idx

    def forward(self, inputs, outputs):
        with device(self):
            x, w = inputs
            rows, width = self._table(w)
            idx = self._dev_indices(x, rows)
            y = dev_data_out(outputs[0]).reshape(idx.size, width)
            cp.take(_d32(w).reshape(rows, width), idx, axis=0, out=y)

    def backward(self, inputs, outputs, propagate_down, accum):
        x, w = inputs
        if not self._wants_grad(propagate_down):
            return
        with device(self):
            rows, width = self._table(w)
            idx = self._dev_indices(x, rows)
            gw = dev_grad_out(w, accum[1])
            if not accum[1]:
                gw.fill(0)
            n = idx.size * width
            launch(SEQ, 'nncy_embed_grad', n,
                   (np.int64(n), np.int64(width), idx, _g32(outputs[0]), gw))


# ---------------------------------------------------------------------------
# Recurrent networks and multi-head attention: the CPU classes' forward and
# backward (_cpu_seq._Recurrent, _cpu_seq.MultiHeadAttention) on device
# arrays, through the hooks below; products on cuBLAS, time steps as seq.cu
# kernels.

class _DeviceOps:
    """_cpu_seq._ArrayOps on the device, and forward / backward run on the
    node's device."""
    xp = cp
    _data = staticmethod(_d32)
    _data_out = staticmethod(dev_data_out)
    _grad = staticmethod(_g32)
    _grad_out = staticmethod(dev_grad_out)
    _draw_mask = staticmethod(_mask)

    @staticmethod
    def _matmul(a, b, out, beta, alpha=1.0):
        if alpha != 1:
            a = a * F32(alpha)
        if beta:
            out += cp.matmul(a, b)
        elif out.flags.c_contiguous:
            cp.matmul(a, b, out=out)
        else:
            out[...] = cp.matmul(a, b)

    def _step_matmul(self):
        return self._matmul

    @staticmethod
    def _add_to(src, dst):
        dst += src

    @staticmethod
    def _add_col_sums(src, dst, alpha=1.0):
        if alpha != 1:
            src = src * F32(alpha)
        dst += src.sum(axis=0)

    def forward(self, inputs, outputs):
        with device(self):
            super().forward(inputs, outputs)

    def backward(self, inputs, outputs, propagate_down, accum):
        with device(self):
            super().backward(inputs, outputs, propagate_down, accum)


class _Recurrent(_DeviceOps):
    @staticmethod
    def _hidden_weight(w):
        return cp.ascontiguousarray(w)

    @staticmethod
    def _input_gates(layer_in, wx, b):
        gates = cp.matmul(layer_in, wx.T)
        if b is not None:
            gates += b
        return gates

    def _step(self, grad):
        T, B, I, L, D, H = self.dims
        n, hh = np.int64(B * H), np.int64(H)
        what = 'bwd' if grad else 'fwd'
        if self.cell == 'rnn':
            kernel = 'nncy_rnn_cell_%s<%d>' % (what, self.args['nonlinearity'] == 'relu')
            return lambda *arrays: launch(SEQ, kernel, B * H, (n,) + arrays)
        kernel = 'nncy_%s_cell_%s' % (self.cell, what)
        if self.cell == 'gru' and not grad:
            # the kernel takes the hidden n bias (or any array) and whether it is there
            def gru_fwd(gates, hw, bhn, h_prev, h):
                launch(SEQ, kernel, B * H, (n, hh, gates, hw, h if bhn is None else bhn,
                                            np.int32(bhn is not None), h_prev, h))
            return gru_fwd
        return lambda *arrays: launch(SEQ, kernel, B * H, (n, hh) + arrays)


@register('RNN', 'cuda')
class RNN(_Recurrent, _cpu_seq.RNN):
    pass


@register('LSTM', 'cuda')
class LSTM(_Recurrent, _cpu_seq.LSTM):
    pass


@register('GRU', 'cuda')
class GRU(_Recurrent, _cpu_seq.GRU):
    pass


@register('MultiHeadAttention', 'cuda')
class MultiHeadAttention(_DeviceOps, _cpu_seq.MultiHeadAttention):
    @staticmethod
    def _affine(x2, w, b, out2, scale=1.0):
        cp.matmul(x2, w, out=out2)
        if b is not None:
            out2 += b
        if scale != 1:
            out2 *= F32(scale)

    _index_data = staticmethod(dev_data)

    @staticmethod
    def _softmax(A):
        P = cp.exp(A - A.max(axis=2, keepdims=True))
        P /= P.sum(axis=2, keepdims=True)
        return P

    @staticmethod
    def _softmax_grad(P, gP):
        return P * (gP - (gP * P).sum(axis=2, keepdims=True))

    @staticmethod
    def _sum_axis(x, axis, out, scale=1.0):
        x.sum(axis=axis, out=out)
        if scale != 1:
            out *= F32(scale)

    @staticmethod
    def _scaled(g, s):
        # scaled once here rather than in each of the three products
        return (g * F32(s) if s != 1 else g), 1.0
