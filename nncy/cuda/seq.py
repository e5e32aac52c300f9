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
from nncy._cpu_seq import _dropout_mask, _named, _positions
from nncy.cuda._common import contiguous, cp, device, launch

SEQ = 'seq.cu'
F32 = np.float32


def _d32(v):
    """Data of a Variable as a contiguous float32 device array."""
    return contiguous(dev_data(v), F32)


def _g32(v):
    """Gradient of a Variable as a contiguous float32 device array."""
    return contiguous(dev_grad(v), F32)


def _zeroed_grads(impl, inputs, propagate_down, accum):
    """{table name: gradient buffer} of the inputs that need one (zeroed
    unless accumulating; all zeroing happens before any write)."""
    out = {}
    for name, k in _positions(impl).items():
        if not propagate_down[k]:
            continue
        g = dev_grad_out(inputs[k], accum[k])
        if not accum[k]:
            g.fill(0)
        out[name] = g
    return out


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
        if propagate_down[0]:
            raise self.error('x0', 'holds indices and has no gradient; set its need_grad '
                             'to False')
        if not propagate_down[1]:
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
# Recurrent networks: the CPU class's forward and backward (_cpu_seq._Recurrent)
# on device arrays; products through cuBLAS, time steps as seq.cu kernels.

class _Recurrent:
    xp = cp
    _data = staticmethod(_d32)
    _data_out = staticmethod(dev_data_out)
    _grad = staticmethod(_g32)
    _grad_out = staticmethod(dev_grad_out)
    _draw_mask = staticmethod(_mask)

    @staticmethod
    def _hidden_weight(w):
        return cp.ascontiguousarray(w)

    @staticmethod
    def _matmul(a, b, out, beta):
        if beta:
            out += cp.matmul(a, b)
        else:
            cp.matmul(a, b, out=out)

    @staticmethod
    def _add_to(src, dst):
        dst += src

    @staticmethod
    def _add_col_sums(src, dst):
        dst += src.sum(axis=0)

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

    def forward(self, inputs, outputs):
        with device(self):
            super().forward(inputs, outputs)

    def backward(self, inputs, outputs, propagate_down, accum):
        with device(self):
            super().backward(inputs, outputs, propagate_down, accum)


@register('RNN', 'cuda')
class RNN(_Recurrent, _cpu_seq.RNN):
    pass


@register('LSTM', 'cuda')
class LSTM(_Recurrent, _cpu_seq.LSTM):
    pass


@register('GRU', 'cuda')
class GRU(_Recurrent, _cpu_seq.GRU):
    pass


# ---------------------------------------------------------------------------
# Multi-head attention (the CPU class's computation, batched over B * heads).

def _heads(a, rows, bh):
    """(rows, B, E) -> the (B * heads, rows, E / heads) view of its heads."""
    return a.reshape(rows, bh, -1).transpose(1, 0, 2)


def _unheads(a, rows):
    """(B * heads, rows, e) -> contiguous (rows, B * heads * e)."""
    return cp.ascontiguousarray(a.transpose(1, 0, 2)).reshape(rows, -1)


@register('MultiHeadAttention', 'cuda')
class MultiHeadAttention(_cpu_seq.MultiHeadAttention):
    # (input, its weight, its bias) of the three projections
    PROJ = (('query', 'q_weight', 'q_bias'), ('key', 'k_weight', 'k_bias'),
            ('value', 'v_weight', 'v_bias'))

    def forward(self, inputs, outputs):
        with device(self):
            self._forward(inputs, outputs)

    def _forward(self, inputs, outputs):
        v = _named(self, inputs)
        Lt, Ls, S, B, H, E, Ev, Eo = self.dims
        hd, BH = E // H, B * H

        def proj(x, w, b):
            y = cp.matmul(_d32(v[x]).reshape(-1, v[w].shape[0]), _d32(v[w]))
            if v[b] is not None:
                y += _d32(v[b])
            return y

        Q = proj(*self.PROJ[0]) * F32(float(hd) ** -0.5)          # (Lt * B, E)
        Kp = cp.empty((S, B, E), F32)
        Vp = cp.empty((S, B, Ev), F32)
        Kp[:Ls] = proj(*self.PROJ[1]).reshape(Ls, B, E)
        Vp[:Ls] = proj(*self.PROJ[2]).reshape(Ls, B, Ev)
        if S > Ls:
            Kp[Ls] = _d32(v['attn_bias_k'])
            Vp[Ls] = _d32(v['attn_bias_v'])
        A = cp.matmul(_heads(Q, Lt, BH), _heads(Kp, S, BH).transpose(0, 2, 1))
        A4 = A.reshape(B, H, Lt, S)
        if v['additive_mask'] is not None:
            A4[..., :Ls] += _d32(v['additive_mask'])
        if v['key_padding_mask'] is not None:
            pad = (dev_data(v['key_padding_mask']) != 0)[:, None, None, :]
            A4[..., :Ls] = cp.where(pad, F32(-np.inf), A4[..., :Ls])
        P = cp.exp(A - A.max(axis=2, keepdims=True))
        P /= P.sum(axis=2, keepdims=True)
        mask = None
        Pd = P
        if self.p > 0:
            mask = _mask(P.shape, self.p)
            Pd = P * mask
        O = _unheads(cp.matmul(Pd, _heads(Vp, S, BH)), Lt * B)   # (Lt * B, Ev)
        y = dev_data_out(outputs[0]).reshape(Lt * B, Eo)
        cp.matmul(O, _d32(v['out_weight']), out=y)
        if v['out_bias'] is not None:
            y += _d32(v['out_bias'])
        attn = dev_data_out(outputs[1])
        attn[...] = Pd.reshape(B, H, Lt, S).sum(axis=1) * F32(1.0 / H)
        self._cache = (Q, Kp, Vp, P, mask, Pd, O)

    def backward(self, inputs, outputs, propagate_down, accum):
        if not any(propagate_down):
            return
        with device(self):
            if self._cache is None:
                self._forward(inputs, outputs)
            self._backward(inputs, outputs, propagate_down, accum)

    def _backward(self, inputs, outputs, propagate_down, accum):
        v = _named(self, inputs)
        grads = _zeroed_grads(self, inputs, propagate_down, accum)
        Lt, Ls, S, B, H, E, Ev, Eo = self.dims
        hd, BH = E // H, B * H
        scale = F32(float(hd) ** -0.5)
        Q, Kp, Vp, P, mask, Pd, O = self._cache
        gy = _g32(outputs[0]).reshape(Lt * B, Eo)
        # output projection
        if 'out_weight' in grads:
            grads['out_weight'] += cp.matmul(O.T, gy)
        if 'out_bias' in grads:
            grads['out_bias'] += gy.sum(axis=0)
        gOb = _heads(cp.matmul(gy, _d32(v['out_weight']).T), Lt, BH)
        # attention weights: from the head-averaged output and through P V
        gPd = cp.matmul(gOb, _heads(Vp, S, BH).transpose(0, 2, 1))     # (BH, Lt, S)
        gP4 = gPd.reshape(B, H, Lt, S)
        gP4 += (_g32(outputs[1]) * F32(1.0 / H))[:, None]
        gVp = _unheads(cp.matmul(Pd.transpose(0, 2, 1), gOb), S).reshape(S, B, Ev)
        if mask is not None:
            gPd *= mask
        gA = P * (gPd - (gPd * P).sum(axis=2, keepdims=True))
        if 'additive_mask' in grads:
            grads['additive_mask'] += gA.sum(axis=0)[:, :Ls]
        gQ = _unheads(cp.matmul(gA, _heads(Kp, S, BH)), Lt)
        gKp = _unheads(cp.matmul(gA.transpose(0, 2, 1), _heads(Q, Lt, BH)), S).reshape(S, B, E)
        for n, g in (('attn_bias_k', gKp), ('attn_bias_v', gVp)):
            if n in grads:
                grads[n] += g[Ls].sum(axis=0)
        # input projections (q was scaled after its projection)
        for (x, w, b), g, rows, s in zip(self.PROJ, (gQ, gKp, gVp), (Lt, Ls, Ls),
                                         (scale, F32(1), F32(1))):
            g2 = g[:rows].reshape(rows * B, -1) * s
            if x in grads:
                gx = grads[x].reshape(rows * B, -1)
                gx += cp.matmul(g2, _d32(v[w]).T)
            if w in grads:
                grads[w] += cp.matmul(_d32(v[x]).reshape(rows * B, -1).T, g2)
            if b in grads:
                grads[b] += g2.sum(axis=0)
        # key_padding_mask selects positions: its gradient is zero (zeroed above).
