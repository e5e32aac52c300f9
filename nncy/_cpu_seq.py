"""CPU implementations of the neural-network layers: embed, the recurrent
networks (rnn, lstm, gru), multi_head_attention and patch_correlation.

Matrix products go through the shared gemm kernels (``K.gemm``,
``K.batch_gemm``), the elementwise work of a time step through the recurrent
cell kernels, lookups and correlations through their own Rust kernels.  Python
loops run only over layers, directions and time steps, each iteration calling
kernels on a whole batch.

Gradients: every implementation first zeroes the gradient buffers it is to
overwrite (``accum`` False) and then only adds to them, so that an input given
twice (``F.patch_correlation(x, x)``, self-attention with query = key = value)
receives the sum of both contributions.
"""
from functools import partial

import numpy as np

from nncy import _kernels as K
from nncy import random as _random
from nncy._core import Impl, register, d32, dout, g32, gout

F32 = np.float32


def _prod(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def _named(impl, inputs):
    """The inputs by table name; None for the optional inputs left out."""
    given = [i.name for i in impl.spec.inputs if i.name not in impl.omitted]
    out = {i.name: None for i in impl.spec.inputs}
    out.update(zip(given, inputs))
    return out


def _positions(impl):
    """Table name -> position in the inputs list (given inputs only)."""
    given = [i.name for i in impl.spec.inputs if i.name not in impl.omitted]
    return {n: k for k, n in enumerate(given)}


def _zeroed_grads(inputs, propagate_down, accum, grad_out=gout):
    """Per input: its gradient buffer (zeroed unless accumulating), or None
    when it needs no gradient.  All zeroing happens before any write.
    grad_out gives the buffer (the device one on the cuda backend)."""
    out = []
    for v, p, a in zip(inputs, propagate_down, accum):
        if not p:
            out.append(None)
            continue
        g = grad_out(v, a)
        if not a:
            g.fill(0)
        out.append(g)
    return out


def _dropout_mask(shape, p):
    """Inverted-dropout mask: 0 with probability p, else 1 / (1 - p)."""
    keep = _random.prng.rand(*shape) >= p
    return keep.astype(F32) * F32(1.0 / (1.0 - p))


def _ones(n):
    return np.ones((1, n), F32)


def _check_dropout(impl, p, allow_none=False):
    if p is None and allow_none:
        return 0.0
    if not 0.0 <= p < 1.0:
        raise impl.error('dropout', 'must lie in [0, 1), got %r' % (p,))
    return p


class _ArrayOps:
    """The array operations of the recurrent and attention layers, as hooks:
    the array module (``xp``), how inputs and outputs are read and written,
    and the operations whose CPU form is a Rust kernel.  The layers' forward
    and backward are written against these only; the cuda classes override
    them with CuPy."""
    xp = np
    _data = staticmethod(d32)
    _data_out = staticmethod(dout)
    _grad = staticmethod(g32)
    _grad_out = staticmethod(gout)
    _draw_mask = staticmethod(_dropout_mask)

    def _matmul(self, a, b, out, beta, alpha=1.0):
        """out = beta * out + alpha * a @ b (beta 0 or 1) for 2-D operands or
        3-D batches of them; out may be any view."""
        fn = K.gemm if a.ndim == 2 else K.batch_gemm
        fn(self.spec.name, a, b, out, beta, alpha)

    def _step_matmul(self):
        """_matmul for 2-D operands as a plain function (a, b, out, beta), for
        the time-step loops where a call's overhead counts."""
        return partial(K.gemm, self.spec.name)

    def _add_to(self, src, dst):
        """dst += src."""
        K.strided_copy(self.spec.name, src, dst, True)

    def _add_col_sums(self, src, dst, alpha=1.0):
        """dst += alpha * the sum of the rows of the 2-D src."""
        K.gemm(self.spec.name, _ones(src.shape[0]), src, dst.reshape(1, -1), 1.0, alpha)


# ---------------------------------------------------------------------------
# Embed
# ---------------------------------------------------------------------------

@register('Embed')
class Embed(Impl):
    def setup(self, inputs):
        x, w = inputs
        if len(w.shape) < 1:
            raise self.error('w', 'must have at least one dimension, got shape ()')
        return [tuple(x.shape) + tuple(w.shape[1:])]

    def _table(self, w):
        return w.shape[0], _prod(w.shape[1:])

    def _indices(self, x):
        idx = x.d
        if idx.dtype.kind not in 'iubf':
            raise self.error('x0', 'must hold integer indices, got dtype %s' % idx.dtype,
                             TypeError)
        return np.ascontiguousarray(idx, dtype=np.int64).reshape(-1)

    def forward(self, inputs, outputs):
        x, w = inputs
        rows, width = self._table(w)
        idx = self._indices(x)
        K.embed(self.spec.name, idx, d32(w).reshape(rows, width),
                dout(outputs[0]).reshape(idx.size, width))

    def _wants_grad(self, propagate_down):
        """Whether w needs a gradient (x, the indices, must not ask for one)."""
        if propagate_down[0]:
            raise self.error('x0', 'holds indices and has no gradient; set its need_grad '
                             'to False')
        return propagate_down[1]

    def backward(self, inputs, outputs, propagate_down, accum):
        x, w = inputs
        if not self._wants_grad(propagate_down):
            return
        rows, width = self._table(w)
        idx = self._indices(x)
        gw = gout(w, accum[1])
        if not accum[1]:
            gw.fill(0)
        K.embed_grad(self.spec.name, idx, g32(outputs[0]).reshape(idx.size, width),
                     gw.reshape(rows, width))

    def grad_depends_input_data(self, i, j):
        return j == 0


# ---------------------------------------------------------------------------
# Recurrent networks
# ---------------------------------------------------------------------------

class _Recurrent(_ArrayOps, Impl):
    """RNN, LSTM and GRU over a (T, B, I) sequence: ``num_layers`` stacked
    layers of one or two directions; layer l > 0 reads the (T, B, D * H)
    output of layer l - 1, with dropout between layers when training.

    Weights (NNabla's layout): weight_l0 (D, G, H, I + H) and weight
    (L - 1, D, G, H, D * H + H), the input columns first, then the hidden
    ones; bias (L, D, G', H).  G gates: RNN 1 (no gate axis), LSTM 4 (i, f,
    g, o), GRU 3 (r, z, n); GRU's bias has 4 blocks: r, z, input n, hidden n.
    """
    gates = 1
    bias_blocks = 1
    cell = 'rnn'

    # ---- shapes ----------------------------------------------------------
    def _w_shape(self, d, h, in_size):
        g = () if self.gates == 1 else (self.gates,)
        return (d,) + g + (h, in_size + h)

    def _b_shape(self, l, d, h):
        g = () if self.bias_blocks == 1 else (self.bias_blocks,)
        return (l, d) + g + (h,)

    def setup(self, inputs):
        v = _named(self, inputs)
        a = self.args
        x, h = v['x'], v['h']
        L = a['num_layers']
        if L < 1:
            raise self.error('num_layers', 'must be at least 1, got %d' % L)
        D = 2 if a['bidirectional'] else 1
        self.dropout = _check_dropout(self, a['dropout'], allow_none=True)
        if self.cell == 'rnn' and a['nonlinearity'] not in ('tanh', 'relu'):
            raise self.error('nonlinearity', "must be 'tanh' or 'relu', got %r"
                             % (a['nonlinearity'],))
        if len(x.shape) != 3 or 0 in x.shape:
            raise self.error('x', 'must have a non-empty shape (T, B, I), got %s' % (x.shape,))
        T, B, I = x.shape
        if len(h.shape) != 4 or h.shape[:3] != (L, D, B) or h.shape[3] < 1:
            raise self.error('h', 'must have shape (num_layers, D, B, H) = (%d, %d, %d, H) '
                             'for x of shape %s, got %s' % (L, D, B, x.shape, h.shape))
        H = h.shape[3]
        if self.cell == 'lstm' and v['c'].shape != h.shape:
            raise self.error('c', 'must have the shape of h, %s, got %s'
                             % (h.shape, v['c'].shape))
        want = self._w_shape(D, H, I)
        if v['weight_l0'].shape != want:
            raise self.error('weight_l0', 'must have shape %s, got %s'
                             % (want, v['weight_l0'].shape))
        if L > 1:
            want = (L - 1,) + self._w_shape(D, H, D * H)
            if v['weight'] is None:
                raise self.error('weight', 'is required when num_layers > 1 (shape %s)'
                                 % (want,))
            if v['weight'].shape != want:
                raise self.error('weight', 'must have shape %s, got %s'
                                 % (want, v['weight'].shape))
        if v['bias'] is not None and v['bias'].shape != self._b_shape(L, D, H):
            raise self.error('bias', 'must have shape %s, got %s'
                             % (self._b_shape(L, D, H), v['bias'].shape))
        self.dims = (T, B, I, L, D, H)
        self._cache = None
        outs = [(T, B, D * H), (L, D, B, H)]
        if self.cell == 'lstm':
            outs.append((L, D, B, H))
        return outs

    # ---- hooks besides those of _ArrayOps ------------------------------------
    @staticmethod
    def _hidden_weight(w):
        """A hidden-to-hidden weight block as the step products take it."""
        return w

    def _input_gates(self, layer_in, wx, b):
        """(T * B, G * H) gate inputs from the layer input: layer_in wx^T + b."""
        GH = wx.shape[0]
        g2 = np.empty((layer_in.shape[0], GH), F32)
        if b is not None:
            K.strided_copy(self.spec.name, np.broadcast_to(b, g2.shape), g2)
        K.gemm(self.spec.name, layer_in, wx.T, g2, 1.0 if b is not None else 0.0)
        return g2

    def _step(self, grad):
        """The elementwise part of one time step (its gradient with grad), as
        a function of the step's arrays."""
        fn = getattr(K, '%s_cell%s' % (self.cell, '_grad' if grad else ''))
        if self.cell == 'rnn':
            return partial(fn, self.spec.name, self.args['nonlinearity'] == 'relu')
        return partial(fn, self.spec.name)

    # ---- forward ---------------------------------------------------------
    def _weights(self, v):
        T, B, I, L, D, H = self.dims
        GH = self.gates * H
        ws = [self._data(v['weight_l0']).reshape(D, GH, I + H)]
        if L > 1:
            w = self._data(v['weight']).reshape(L - 1, D, GH, D * H + H)
            ws += [w[l] for l in range(L - 1)]
        b = None
        if v['bias'] is not None:
            b = self._data(v['bias']).reshape(L, D, self.bias_blocks * H)
        return ws, b

    def forward(self, inputs, outputs):
        xp = self.xp
        v = _named(self, inputs)
        T, B, I, L, D, H = self.dims
        GH = self.gates * H
        lstm, gru = self.cell == 'lstm', self.cell == 'gru'
        training = self.args['training']
        p = self.dropout if training else 0.0
        ws, bias = self._weights(v)
        h0 = self._data(v['h'])
        c0 = self._data(v['c']) if lstm else None
        y = self._data_out(outputs[0])
        hn = self._data_out(outputs[1])
        cn = self._data_out(outputs[2]) if lstm else None
        layer_in = self._data(v['x']).reshape(T * B, I)
        step, mm = self._step(False), self._step_matmul()
        cache = []
        for l in range(L):
            n_in = layer_in.shape[1]
            y_l = y if l == L - 1 else xp.empty((T, B, D * H), F32)
            dirs = []
            for d in range(D):
                W = ws[l][d]
                whT = self._hidden_weight(W[:, n_in:].T)
                bhn = None
                if bias is not None and gru:
                    bhn = bias[l, d, GH:]
                gates = self._input_gates(layer_in, W[:, :n_in],
                                          None if bias is None else bias[l, d, :GH])
                gates = gates.reshape(T, B, GH)
                # hs[t] / hs[t + 1]: the state before / after time t (forward
                # direction); the backward direction runs the other way.
                hs = xp.empty((T + 1, B, H), F32)
                hs[0 if d == 0 else T] = h0[l, d]
                cs = hw = None
                if lstm:
                    cs = xp.empty((T + 1, B, H), F32)
                    cs[0 if d == 0 else T] = c0[l, d]
                elif gru:
                    hw = xp.empty((T, B, GH), F32)
                for t in (range(T) if d == 0 else range(T - 1, -1, -1)):
                    prev, cur = (t, t + 1) if d == 0 else (t + 1, t)
                    if self.cell == 'rnn':
                        mm(hs[prev], whT, gates[t], 1.0)
                        step(gates[t], hs[cur])
                    elif lstm:
                        mm(hs[prev], whT, gates[t], 1.0)
                        step(gates[t], cs[prev], cs[cur], hs[cur])
                    else:
                        mm(hs[prev], whT, hw[t], 0.0)
                        step(gates[t], hw[t], bhn, hs[prev], hs[cur])
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
                    mask = self._draw_mask(nxt.shape, p)
                    nxt = nxt * mask
            cache.append((layer_in, dirs, mask))
            if l < L - 1:
                layer_in = nxt
        # What backward needs (kept only when training: no backward otherwise).
        self._cache = cache if training else None

    # ---- backward --------------------------------------------------------
    def backward(self, inputs, outputs, propagate_down, accum):
        if not any(propagate_down):
            return
        if not self.args['training']:
            raise RuntimeError('%s: backward needs training=True (this function was created '
                               'with training=False)' % self.spec.name)
        if self._cache is None:
            self.forward(inputs, outputs)
        xp = self.xp
        v = _named(self, inputs)
        grads = _zeroed_grads(inputs, propagate_down, accum, self._grad_out)
        pos = _positions(self)

        def grad(n):
            return grads[pos[n]] if n in pos else None

        T, B, I, L, D, H = self.dims
        GH = self.gates * H
        lstm, gru = self.cell == 'lstm', self.cell == 'gru'
        ws, _ = self._weights(v)
        gx, gh, gc = grad('x'), grad('h'), grad('c')
        gw0, gwl, gb = grad('weight_l0'), grad('weight'), grad('bias')
        gws = [None if gw0 is None else gw0.reshape(D, GH, I + H)]
        if L > 1:
            gw = None if gwl is None else gwl.reshape(L - 1, D, GH, D * H + H)
            gws += [None if gw is None else gw[l] for l in range(L - 1)]
        if gb is not None:
            gb = gb.reshape(L, D, self.bias_blocks * H)
        ghn = self._grad(outputs[1])
        gcn = self._grad(outputs[2]) if lstm else None
        step, mm = self._step(True), self._step_matmul()
        d_out = self._grad(outputs[0])   # gradient of the current layer's output
        for l in range(L - 1, -1, -1):
            layer_in, dirs, _ = self._cache[l]
            n_in = layer_in.shape[1]
            d_in = None
            if l > 0 or gx is not None:
                d_in = xp.zeros((T * B, n_in), F32) if l > 0 else gx.reshape(T * B, I)
            for d in range(D):
                gates, hs, cs, hw = dirs[d]
                W = ws[l][d]
                wx, wh = W[:, :n_in], self._hidden_weight(W[:, n_in:])
                dy = xp.ascontiguousarray(d_out[:, :, d * H:(d + 1) * H])
                dh = ghn[l, d].copy()
                dc = gcn[l, d].copy() if lstm else None
                dpre = xp.empty((T, B, GH), F32)
                dgh = xp.empty((T, B, GH), F32) if gru else dpre
                dh_next = xp.empty((B, H), F32) if gru else None
                for t in (range(T - 1, -1, -1) if d == 0 else range(T)):
                    prev, cur = (t, t + 1) if d == 0 else (t + 1, t)
                    if self.cell == 'rnn':
                        step(hs[cur], dy[t], dh, dpre[t])
                        mm(dpre[t], wh, dh, 0.0)
                    elif lstm:
                        step(gates[t], cs[prev], cs[cur], dy[t], dh, dc, dpre[t])
                        mm(dpre[t], wh, dh, 0.0)
                    else:
                        step(gates[t], hw[t], hs[prev], dy[t], dh, dpre[t],
                                   dgh[t], dh_next)
                        mm(dgh[t], wh, dh_next, 1.0)
                        dh, dh_next = dh_next, dh
                if gh is not None:
                    self._add_to(dh, gh[l, d])
                if gc is not None:
                    self._add_to(dc, gc[l, d])
                dpre2 = dpre.reshape(T * B, GH)
                dgh2 = dgh.reshape(T * B, GH)
                gW = gws[l][d] if gws[l] is not None else None
                if gW is not None:
                    h_prev = (hs[:T] if d == 0 else hs[1:]).reshape(T * B, H)
                    self._matmul(dpre2.T, layer_in, gW[:, :n_in], 1.0)
                    self._matmul(dgh2.T, h_prev, gW[:, n_in:], 1.0)
                if gb is not None:
                    self._add_col_sums(dpre2, gb[l, d, :GH])
                    if gru:
                        self._add_col_sums(dgh2[:, 2 * H:], gb[l, d, GH:])
                if d_in is not None:
                    self._matmul(dpre2, wx, d_in, 1.0)
            if l > 0:
                mask = self._cache[l - 1][2]    # dropout on layer l - 1's output
                if mask is not None:
                    d_in *= mask
                d_out = d_in.reshape(T, B, n_in)

    def grad_depends_input_data(self, i, j):
        return True


@register('RNN')
class RNN(_Recurrent):
    pass


@register('LSTM')
class LSTM(_Recurrent):
    gates = 4
    bias_blocks = 4
    cell = 'lstm'


@register('GRU')
class GRU(_Recurrent):
    gates = 3
    bias_blocks = 4
    cell = 'gru'


# ---------------------------------------------------------------------------
# Multi-head attention
# ---------------------------------------------------------------------------

def _heads(a, bh):
    """(rows, B, E) -> the (B * heads, rows, E / heads) view of its heads."""
    return a.reshape(a.shape[0], bh, -1).transpose(1, 0, 2)


@register('MultiHeadAttention')
class MultiHeadAttention(_ArrayOps, Impl):
    """NNabla's multi_head_attention as one function.  Projections
    q = (query Wq + bq) / sqrt(E / heads), k = key Wk + bk, v = value Wv + bv
    (attn_bias_k / attn_bias_v appended as one more source position), per
    head softmax(q k^T + masks) (dropout) v, heads concatenated and projected
    by out_weight.  Outputs: y (L_T, B, E_out) and the attention weights
    averaged over the heads (B, L_T, L_S)."""
    # (input, its weight, its bias) of the three projections
    PROJ = (('query', 'q_weight', 'q_bias'), ('key', 'k_weight', 'k_bias'),
            ('value', 'v_weight', 'v_bias'))

    def setup(self, inputs):
        v = _named(self, inputs)
        H = self.args['num_heads']
        if H is None or H < 1:
            raise self.error('num_heads', 'must be a positive int, got %r' % (H,))
        self.p = _check_dropout(self, self.args['dropout'])
        q, k, val = v['query'], v['key'], v['value']
        for n, x in (('query', q), ('key', k), ('value', val)):
            if len(x.shape) != 3 or 0 in x.shape:
                raise self.error(n, 'must have a non-empty shape (L, B, D), got %s' % (x.shape,))
        Lt, B, Dq = q.shape
        Ls, Bk, Dk = k.shape
        if Bk != B:
            raise self.error('key', 'must have batch size %d (that of query), got shape %s'
                             % (B, k.shape))
        if val.shape[:2] != (Ls, B):
            raise self.error('value', 'must have shape (%d, %d, D_v) to match key, got %s'
                             % (Ls, B, val.shape))
        Dv = val.shape[2]

        def mat(n, rows):
            w = v[n]
            if len(w.shape) != 2 or w.shape[0] != rows or w.shape[1] < 1:
                raise self.error(n, 'must have shape (%d, E), got %s' % (rows, w.shape))
            return w.shape[1]

        E = mat('q_weight', Dq)
        if mat('k_weight', Dk) != E:
            raise self.error('k_weight', 'must have shape (%d, %d) (E of q_weight), got %s'
                             % (Dk, E, v['k_weight'].shape))
        Ev = mat('v_weight', Dv)
        Eo = mat('out_weight', Ev)
        if E % H:
            raise self.error('num_heads', 'must divide the embedding size E=%d, got %d' % (E, H))
        if Ev % H:
            raise self.error('num_heads', 'must divide the value embedding size E_v=%d, got %d'
                             % (Ev, H))
        for n, size in (('q_bias', E), ('k_bias', E), ('v_bias', Ev), ('out_bias', Eo),
                        ('attn_bias_k', E), ('attn_bias_v', Ev)):
            if v[n] is not None and tuple(v[n].shape) != (size,):
                raise self.error(n, 'must have shape (%d,), got %s' % (size, v[n].shape))
        if (v['attn_bias_k'] is None) != (v['attn_bias_v'] is None):
            raise self.error('attn_bias_v' if v['attn_bias_v'] is None else 'attn_bias_k',
                             'must be given together with %s'
                             % ('attn_bias_k' if v['attn_bias_v'] is None else 'attn_bias_v'))
        if v['additive_mask'] is not None and v['additive_mask'].shape != (Lt, Ls):
            raise self.error('additive_mask', 'must have shape (L_T, L_S) = %s, got %s'
                             % ((Lt, Ls), v['additive_mask'].shape))
        if v['key_padding_mask'] is not None and v['key_padding_mask'].shape != (B, Ls):
            raise self.error('key_padding_mask', 'must have shape (B, L_S) = %s, got %s'
                             % ((B, Ls), v['key_padding_mask'].shape))
        S = Ls + (v['attn_bias_k'] is not None)
        self.dims = (Lt, Ls, S, B, H, E, Ev, Eo)
        self._cache = None
        return [(Lt, B, Eo), (B, Lt, S)]

    # ---- hooks besides those of _ArrayOps ----------------------------------
    def _affine(self, x2, w, b, out2, scale=1.0):
        """out2 = scale * (x2 @ w + b)."""
        name = self.spec.name
        if b is not None:
            K.strided_copy(name, np.broadcast_to(b.reshape(1, -1), out2.shape), out2)
            K.gemm(name, x2, w, out2, scale, scale)
        else:
            K.gemm(name, x2, w, out2, 0.0, scale)

    @staticmethod
    def _index_data(v):
        """The data of an index (mask) input as it is stored."""
        return np.asarray(v.d)

    def _softmax(self, A):
        """Softmax over the last axis of the (B * heads, L_T, S) scores."""
        P = np.empty_like(A)
        K.softmax(self.spec.name, A, P, A.shape[0] * A.shape[1], A.shape[2], 1, False)
        return P

    def _softmax_grad(self, P, gP):
        gA = np.empty_like(gP)
        K.softmax_grad(self.spec.name, P, gP, gA, P.shape[0] * P.shape[1], P.shape[2], 1,
                       False, False)
        return gA

    def _sum_axis(self, x, axis, out, scale=1.0):
        """out = scale * the sum of x over one axis."""
        K.reduce(self.spec.name, 'sum', x, (axis,), out, scale)

    def _scaled(self, g, s):
        """(array, factor) for products with the gradient s * g: the gemm
        kernel takes the factor, so g is left as it is."""
        return g, s

    # ---- forward and backward ----------------------------------------------
    def _opt(self, v, n):
        return None if v[n] is None else self._data(v[n])

    def forward(self, inputs, outputs):
        xp = self.xp
        v = _named(self, inputs)
        Lt, Ls, S, B, H, E, Ev, Eo = self.dims
        hd, BH = E // H, B * H
        scale = float(hd) ** -0.5
        Q = xp.empty((Lt, B, E), F32)
        Kp = xp.empty((S, B, E), F32)
        Vp = xp.empty((S, B, Ev), F32)
        for (x, w, b), out, rows, s in zip(self.PROJ, (Q, Kp, Vp), (Lt, Ls, Ls), (scale, 1, 1)):
            self._affine(self._data(v[x]).reshape(rows * B, -1), self._data(v[w]),
                         self._opt(v, b), out[:rows].reshape(rows * B, -1), s)
        if S > Ls:
            Kp[Ls] = self._data(v['attn_bias_k'])
            Vp[Ls] = self._data(v['attn_bias_v'])
        A = xp.empty((BH, Lt, S), F32)
        self._matmul(_heads(Q, BH), _heads(Kp, BH).transpose(0, 2, 1), A, 0.0)
        A4 = A.reshape(B, H, Lt, S)
        if v['additive_mask'] is not None:
            A4[..., :Ls] += self._data(v['additive_mask'])
        if v['key_padding_mask'] is not None:
            pad = self._index_data(v['key_padding_mask']) != 0
            xp.copyto(A4[..., :Ls], F32(-np.inf), where=pad[:, None, None, :])
        P = self._softmax(A)
        mask = None
        Pd = P
        if self.p > 0:
            mask = self._draw_mask(P.shape, self.p)
            Pd = P * mask
        O = xp.empty((Lt, B, Ev), F32)
        self._matmul(Pd, _heads(Vp, BH), _heads(O, BH), 0.0)
        self._affine(O.reshape(Lt * B, Ev), self._data(v['out_weight']),
                     self._opt(v, 'out_bias'), self._data_out(outputs[0]).reshape(Lt * B, Eo))
        self._sum_axis(Pd.reshape(B, H, Lt * S), 1,
                       self._data_out(outputs[1]).reshape(B, Lt * S), 1.0 / H)
        self._cache = (Q, Kp, Vp, P, mask, Pd, O)

    def backward(self, inputs, outputs, propagate_down, accum):
        if not any(propagate_down):
            return
        if self._cache is None:
            self.forward(inputs, outputs)
        xp = self.xp
        v = _named(self, inputs)
        pos = _positions(self)
        grads = _zeroed_grads(inputs, propagate_down, accum, self._grad_out)

        def grad(n):
            return grads[pos[n]] if n in pos else None

        Lt, Ls, S, B, H, E, Ev, Eo = self.dims
        hd, BH = E // H, B * H
        scale = float(hd) ** -0.5
        Q, Kp, Vp, P, mask, Pd, O = self._cache
        gy2 = self._grad(outputs[0]).reshape(Lt * B, Eo)
        # output projection
        if grad('out_weight') is not None:
            self._matmul(O.reshape(Lt * B, Ev).T, gy2, grad('out_weight'), 1.0)
        if grad('out_bias') is not None:
            self._add_col_sums(gy2, grad('out_bias'))
        gO = xp.empty((Lt, B, Ev), F32)
        self._matmul(gy2, self._data(v['out_weight']).T, gO.reshape(Lt * B, Ev), 0.0)
        gOb = _heads(gO, BH)
        # attention weights: from the head-averaged output and through P V
        gPd = xp.empty((BH, Lt, S), F32)
        gPd.reshape(B, H, Lt, S)[...] = (self._grad(outputs[1]) * F32(1.0 / H))[:, None]
        self._matmul(gOb, _heads(Vp, BH).transpose(0, 2, 1), gPd, 1.0)
        gVp = xp.empty((S, B, Ev), F32)
        self._matmul(Pd.transpose(0, 2, 1), gOb, _heads(gVp, BH), 0.0)
        if mask is not None:
            gPd *= mask
        gA = self._softmax_grad(P, gPd)
        gam = grad('additive_mask')
        if gam is not None:
            tmp = xp.empty((Lt, S), F32)
            self._sum_axis(gA, 0, tmp)
            gam += tmp[:, :Ls]
        gQ = xp.empty((Lt, B, E), F32)
        self._matmul(gA, _heads(Kp, BH), _heads(gQ, BH), 0.0)
        gKp = xp.empty((S, B, E), F32)
        self._matmul(gA.transpose(0, 2, 1), _heads(Q, BH), _heads(gKp, BH), 0.0)
        if S > Ls:
            for n, g in (('attn_bias_k', gKp), ('attn_bias_v', gVp)):
                if grad(n) is not None:
                    self._add_col_sums(g[Ls], grad(n))
        # input projections (q was scaled after its projection)
        for (x, w, b), g, rows, s in zip(self.PROJ, (gQ, gKp, gVp), (Lt, Ls, Ls),
                                         (scale, 1.0, 1.0)):
            g2, s = self._scaled(g[:rows].reshape(rows * B, -1), s)
            if grad(x) is not None:
                self._matmul(g2, self._data(v[w]).T, grad(x).reshape(rows * B, -1), 1.0, s)
            if grad(w) is not None:
                self._matmul(self._data(v[x]).reshape(rows * B, -1).T, g2, grad(w), 1.0, s)
            if grad(b) is not None:
                self._add_col_sums(g2, grad(b), s)
        # key_padding_mask selects positions: its gradient is zero (already zeroed).

    def grad_depends_input_data(self, i, j):
        return True


# ---------------------------------------------------------------------------
# Patch correlation
# ---------------------------------------------------------------------------

@register('PatchCorrelation')
class PatchCorrelation(Impl):
    """NNabla's patch_correlation; the kernel works on NCHW arrays (it runs
    along image rows), NHWC inputs and outputs are transposed around it."""

    def _pair(self, arg, n=2):
        val = tuple(self.args[arg])
        if len(val) == 1:
            val = val * n
        elif n == 4 and len(val) == 2:
            val = (val[0], val[0], val[1], val[1])
        if len(val) != n:
            raise self.error(arg, 'must be an int or a tuple of %s ints, got %r'
                             % ('2' if n == 2 else '2 or 4', self.args[arg]))
        return val

    def setup(self, inputs):
        x1, x2 = inputs
        if len(x1.shape) != 4:
            raise self.error('x1', 'must have 4 dimensions, got shape %s' % (x1.shape,))
        if x2.shape != x1.shape:
            raise self.error('x2', 'must have the shape of x1, %s, got %s'
                             % (x1.shape, x2.shape))
        patch, shift = self._pair('patch'), self._pair('shift')
        pstep, sstep = self._pair('patch_step'), self._pair('shift_step')
        pad = self._pair('padding', 4)
        for arg, val, low in (('patch', patch, 1), ('shift', shift, 0),
                              ('patch_step', pstep, 1), ('shift_step', sstep, 1),
                              ('padding', pad, 0)):
            if min(val) < low:
                raise self.error(arg, 'must be %s, got %r'
                                 % ('positive' if low else 'non-negative', self.args[arg]))
        if self.args['channel_last']:
            N, Hh, W, C = x1.shape
        else:
            N, C, Hh, W = x1.shape
        if Hh + pad[0] + pad[1] < patch[0] or W + pad[2] + pad[3] < patch[1]:
            raise self.error('patch', '%r does not fit in the padded input of size %s'
                             % (self.args['patch'], (Hh + pad[0] + pad[1], W + pad[2] + pad[3])))
        oh = (Hh + pad[0] + pad[1] - patch[0]) // pstep[0] + 1
        ow = (W + pad[2] + pad[3] - patch[1]) // pstep[1] + 1
        cy, cx = 2 * shift[0] // sstep[0] + 1, 2 * shift[1] // sstep[1] + 1
        self.dims = (N, Hh, W, C)
        self.params = patch + shift + pstep + sstep + pad
        self.nchw_out = (N, cy, cx, oh, ow)
        if self.args['channel_last']:
            return [(N, oh, ow, cy, cx)]
        return [(N, cy, cx, oh, ow)]

    def _nchw(self, a):
        """An input as a contiguous NCHW array (a view unless NHWC with C > 1)."""
        N, Hh, W, C = self.dims
        if not self.args['channel_last'] or C == 1:
            return a.reshape(N, C, Hh, W)
        out = np.empty((N, C, Hh, W), F32)
        K.strided_copy(self.spec.name, a.transpose(0, 3, 1, 2), out)
        return out

    def forward(self, inputs, outputs):
        name = self.spec.name
        a, b = self._nchw(d32(inputs[0])), self._nchw(d32(inputs[1]))
        y = dout(outputs[0])
        if not self.args['channel_last']:
            K.patch_correlation(name, a, b, y, self.dims, self.params)
        else:
            tmp = np.empty(self.nchw_out, F32)
            K.patch_correlation(name, a, b, tmp, self.dims, self.params)
            K.strided_copy(name, tmp.transpose(0, 3, 4, 1, 2), y)

    def backward(self, inputs, outputs, propagate_down, accum):
        if not any(propagate_down):
            return
        name = self.spec.name
        grads = _zeroed_grads(inputs, propagate_down, accum)
        a, b = self._nchw(d32(inputs[0])), self._nchw(d32(inputs[1]))
        gy = g32(outputs[0])
        if self.args['channel_last']:
            tmp = np.empty(self.nchw_out, F32)
            K.strided_copy(name, gy.transpose(0, 3, 4, 1, 2), tmp)
            gy = tmp
        direct = not self.args['channel_last'] or self.dims[3] == 1
        for which, g in enumerate(grads):
            if g is None:
                continue
            if direct:
                K.patch_correlation_grad(name, which, a, b, gy, g, self.dims, self.params, True)
            else:
                N, Hh, W, C = self.dims
                tmp = np.empty((N, C, Hh, W), F32)
                K.patch_correlation_grad(name, which, a, b, gy, tmp, self.dims, self.params,
                                         False)
                K.strided_copy(name, tmp.transpose(0, 2, 3, 1), g, True)

    def grad_depends_input_data(self, i, j):
        return i != j
