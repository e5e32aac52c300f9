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
# Recurrent networks (the layout and the order of the dropout draws are those
# of the CPU class, see _cpu_seq._Recurrent).

class _Recurrent:
    def _weights(self, v):
        T, B, I, L, D, H = self.dims
        GH = self.gates * H
        ws = [_d32(v['weight_l0']).reshape(D, GH, I + H)]
        if L > 1:
            w = _d32(v['weight']).reshape(L - 1, D, GH, D * H + H)
            ws += [w[l] for l in range(L - 1)]
        b = None
        if v['bias'] is not None:
            b = _d32(v['bias']).reshape(L, D, self.bias_blocks * H)
        return ws, b

    def _kernel(self, what):
        if self.cell == 'rnn':
            return 'nncy_rnn_cell_%s<%d>' % (what, self.args['nonlinearity'] == 'relu')
        return 'nncy_%s_cell_%s' % (self.cell, what)

    def forward(self, inputs, outputs):
        with device(self):
            self._forward(inputs, outputs)

    def _forward(self, inputs, outputs):
        v = _named(self, inputs)
        T, B, I, L, D, H = self.dims
        GH = self.gates * H
        training = self.args['training']
        p = self.dropout if training else 0.0
        lstm, gru = self.cell == 'lstm', self.cell == 'gru'
        ws, bias = self._weights(v)
        h0 = _d32(v['h'])
        c0 = _d32(v['c']) if lstm else None
        y = dev_data_out(outputs[0])
        hn = dev_data_out(outputs[1])
        cn = dev_data_out(outputs[2]) if lstm else None
        step = self._kernel('fwd')
        n, hh = np.int64(B * H), np.int64(H)
        layer_in = _d32(v['x']).reshape(T * B, I)
        cache = []
        for l in range(L):
            n_in = layer_in.shape[1]
            y_l = y if l == L - 1 else cp.empty((T, B, D * H), F32)
            dirs = []
            for d in range(D):
                W = ws[l][d]
                whT = cp.ascontiguousarray(W[:, n_in:].T)
                gates = cp.matmul(layer_in, W[:, :n_in].T).reshape(T, B, GH)
                bhn = None
                if bias is not None:
                    gates += bias[l, d, :GH]
                    if gru:
                        bhn = bias[l, d, GH:]
                # hs[t] / hs[t + 1]: the state before / after time t (forward
                # direction); the backward direction runs the other way.
                hs = cp.empty((T + 1, B, H), F32)
                hs[0 if d == 0 else T] = h0[l, d]
                cs = hw = None
                if lstm:
                    cs = cp.empty((T + 1, B, H), F32)
                    cs[0 if d == 0 else T] = c0[l, d]
                elif gru:
                    hw = cp.empty((T, B, GH), F32)
                for t in (range(T) if d == 0 else range(T - 1, -1, -1)):
                    prev, cur = (t, t + 1) if d == 0 else (t + 1, t)
                    if self.cell == 'rnn':
                        gates[t] += cp.matmul(hs[prev], whT)
                        launch(SEQ, step, B * H, (n, gates[t], hs[cur]))
                    elif lstm:
                        gates[t] += cp.matmul(hs[prev], whT)
                        launch(SEQ, step, B * H, (n, hh, gates[t], cs[prev], cs[cur], hs[cur]))
                    else:
                        hw[t] = cp.matmul(hs[prev], whT)
                        launch(SEQ, step, B * H,
                               (n, hh, gates[t], hw[t], hs if bhn is None else bhn,
                                np.int32(bhn is not None), hs[prev], hs[cur]))
                y_l[:, :, d * H:(d + 1) * H] = hs[1:] if d == 0 else hs[:T]
                last = T if d == 0 else 0
                hn[l, d] = hs[last]
                if lstm:
                    cn[l, d] = cs[last]
                dirs.append((gates, hs, cs, hw))
            mask = None
            if l < L - 1:
                nxt = y_l.reshape(T * B, D * H)
                if p > 0:
                    mask = _mask(nxt.shape, p)
                    nxt = nxt * mask
            cache.append((layer_in, dirs, mask))
            if l < L - 1:
                layer_in = nxt
        self._cache = cache if training else None

    def backward(self, inputs, outputs, propagate_down, accum):
        if not any(propagate_down):
            return
        if not self.args['training']:
            raise RuntimeError('%s: backward needs training=True (this function was created '
                               'with training=False)' % self.spec.name)
        with device(self):
            if self._cache is None:
                self._forward(inputs, outputs)
            self._backward(inputs, outputs, propagate_down, accum)

    def _backward(self, inputs, outputs, propagate_down, accum):
        v = _named(self, inputs)
        grads = _zeroed_grads(self, inputs, propagate_down, accum)
        T, B, I, L, D, H = self.dims
        GH = self.gates * H
        lstm, gru = self.cell == 'lstm', self.cell == 'gru'
        ws, _ = self._weights(v)
        gx, gh, gc = grads.get('x'), grads.get('h'), grads.get('c')
        gw0, gwl, gb = grads.get('weight_l0'), grads.get('weight'), grads.get('bias')
        gws = [None if gw0 is None else gw0.reshape(D, GH, I + H)]
        if L > 1:
            gw = None if gwl is None else gwl.reshape(L - 1, D, GH, D * H + H)
            gws += [None if gw is None else gw[l] for l in range(L - 1)]
        if gb is not None:
            gb = gb.reshape(L, D, self.bias_blocks * H)
        ghn = _g32(outputs[1])
        gcn = _g32(outputs[2]) if lstm else None
        step = self._kernel('bwd')
        n, hh = np.int64(B * H), np.int64(H)
        d_out = _g32(outputs[0])     # gradient of the current layer's output
        for l in range(L - 1, -1, -1):
            layer_in, dirs, _ = self._cache[l]
            n_in = layer_in.shape[1]
            d_in = None
            if l > 0 or gx is not None:
                d_in = cp.zeros((T * B, n_in), F32) if l > 0 else gx.reshape(T * B, I)
            for d in range(D):
                gates, hs, cs, hw = dirs[d]
                W = ws[l][d]
                wx, wh = W[:, :n_in], cp.ascontiguousarray(W[:, n_in:])
                dy = cp.ascontiguousarray(d_out[:, :, d * H:(d + 1) * H])
                dh = ghn[l, d].copy()
                dc = gcn[l, d].copy() if lstm else None
                dpre = cp.empty((T, B, GH), F32)
                dgh = cp.empty((T, B, GH), F32) if gru else dpre
                dh_next = cp.empty((B, H), F32) if gru else None
                for t in (range(T - 1, -1, -1) if d == 0 else range(T)):
                    prev, cur = (t, t + 1) if d == 0 else (t + 1, t)
                    if self.cell == 'rnn':
                        launch(SEQ, step, B * H, (n, hs[cur], dy[t], dh, dpre[t]))
                        dh = cp.matmul(dpre[t], wh)
                    elif lstm:
                        launch(SEQ, step, B * H,
                               (n, hh, gates[t], cs[prev], cs[cur], dy[t], dh, dc, dpre[t]))
                        dh = cp.matmul(dpre[t], wh)
                    else:
                        launch(SEQ, step, B * H, (n, hh, gates[t], hw[t], hs[prev], dy[t], dh,
                                                  dpre[t], dgh[t], dh_next))
                        dh_next += cp.matmul(dgh[t], wh)
                        dh, dh_next = dh_next, dh
                if gh is not None:
                    gh[l, d] += dh
                if gc is not None:
                    gc[l, d] += dc
                dpre2 = dpre.reshape(T * B, GH)
                dgh2 = dgh.reshape(T * B, GH)
                gW = gws[l][d] if gws[l] is not None else None
                if gW is not None:
                    h_prev = (hs[:T] if d == 0 else hs[1:]).reshape(T * B, H)
                    gW[:, :n_in] += cp.matmul(dpre2.T, layer_in)
                    gW[:, n_in:] += cp.matmul(dgh2.T, h_prev)
                if gb is not None:
                    gb[l, d, :GH] += dpre2.sum(axis=0)
                    if gru:
                        gb[l, d, GH:] += dgh2[:, 2 * H:].sum(axis=0)
                if d_in is not None:
                    d_in += cp.matmul(dpre2, wx)
            if l > 0:
                mask = self._cache[l - 1][2]    # dropout on layer l - 1's output
                if mask is not None:
                    d_in *= mask
                d_out = d_in.reshape(T, B, n_in)


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
