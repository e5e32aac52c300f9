"""``nn.grad`` for layers and array manipulation: their gradients as graphs of
other functions, so that they can be differentiated again.

* Rearranging functions whose output elements are copies of input elements
  at positions fixed by the shapes (pad, tile, shift, strided slice, ...) get an
  *index map*: the function is run once on the 1-based positions of its
  inputs' elements, and the gradient scatters the output gradient back with
  ``scatter_nd(add=True)``.  ``gather_nd`` and ``scatter_nd`` are each other's
  gradients, so these are differentiable any number of times.
* Poolings, patch correlation and adaptive separable convolution get a *graph
  form* (see ``_grad_norm``): the forward rewritten with a static
  ``gather_nd`` of the windows and reductions; recurrent networks and
  attention get theirs from affine steps and cells.
* Convolutions and deconvolutions use each other for the input gradient and
  a convolution of transposed tensors for the weight gradient (channel-last
  and depthwise ones go through the channel-first grouped ones).
* Data-dependent ones (max, embed, where, dropout, ...) and the commonest
  rearrangements (transpose, slice, concatenate, ...) are written directly.
"""
import numpy as np

import nncy.functions as F
from nncy import _grad as G
from nncy._core import Variable
from nncy._grad_norm import _backprop, _impl, graph_form

_const = G._const


def _ints(a):
    return Variable.from_numpy_array(np.ascontiguousarray(a, dtype=np.int64), need_grad=False)


def _flat(v):
    n = int(np.prod(v.shape))
    return v if v.shape == (n,) else F.reshape(v, (n,), inplace=False)


def _reshape(v, shape):
    shape = tuple(shape)
    return v if v.shape == shape else F.reshape(v, shape, inplace=False)


def _gather_static(x, idx, fill=0.0):
    """Elements of x at flat positions ``idx`` (a NumPy array of any shape;
    -1 reads ``fill``)."""
    xf = _flat(x)
    n = xf.shape[0]
    idx = np.asarray(idx, np.int64)
    if (idx < 0).any():
        xf = F.concatenate(xf, _const(np.float32(fill), (1,)), axis=0)
        idx = np.where(idx < 0, n, idx)
    return F.gather_nd(xf, _ints(idx.reshape((1,) + idx.shape)))


def _scatter_static(v, idx, shape):
    """The adjoint of a gather: adds the elements of v into an array of
    ``shape`` at flat positions ``idx`` (of v's shape; -1 drops)."""
    size = int(np.prod(shape))
    idx = np.asarray(idx, np.int64)
    drop = (idx < 0).any()
    if drop:
        idx = np.where(idx < 0, size, idx)
    out = F.scatter_nd(v, _ints(idx.reshape((1,) + idx.shape)),
                       shape=(size + 1 if drop else size,), add=True)
    if drop:
        out = F.slice(out, (0,), (size,), (1,))
    return _reshape(out, shape)


# ---- gather_nd / scatter_nd ------------------------------------------------------

@G.grad_builder('GatherNd')
def _gather_nd(f, inputs, outputs, gys):
    data, idx = inputs
    return [F.scatter_nd(gys[0], idx, shape=data.shape, add=True), None]


@G.grad_builder('ScatterNd')
def _scatter_nd(f, inputs, outputs, gys):
    # (also into out=: the earlier values of out are no input)
    data, idx = inputs
    return [F.gather_nd(gys[0], idx), None]


# ---- index maps ------------------------------------------------------------------

def _run_on(f, values):
    """Outputs (NumPy) of node ``f``'s function applied to constant inputs."""
    args = dict(f.args)
    if f.spec.type_name == 'Pad':
        args['constant_value'] = 0.0
    outs = getattr(F, f.spec.name)(*[Variable.from_numpy_array(v) for v in values], **args)
    outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
    res = []
    for o in outs:
        o.forward()
        res.append(np.rint(np.asarray(o.d, np.float64)).astype(np.int64))
    return res


def _index_maps(f, inputs, outputs):
    """Per output: the flat position (over the inputs laid end to end) of the
    input element each output element copies, -1 where it is a constant.
    The function runs on the 1-based positions (0 marks the constants), in
    two parts (high and low digits) when float32 cannot hold them exactly."""
    sizes = [int(np.prod(x.shape)) for x in inputs]
    total = int(np.sum(sizes))
    pos, off = [], 0
    for x, n in zip(inputs, sizes):
        pos.append((np.arange(n, dtype=np.int64) + off).reshape(x.shape))
        off += n
    if total < 2 ** 24:
        maps = _run_on(f, [(p + 1).astype(np.float32) for p in pos])
        return [m - 1 for m in maps], sizes
    base = 4096
    hi = _run_on(f, [(p // base + 1).astype(np.float32) for p in pos])
    lo = _run_on(f, [(p % base + 1).astype(np.float32) for p in pos])
    return [np.where(h > 0, (h - 1) * base + (l - 1), -1) for h, l in zip(hi, lo)], sizes


def _by_index_map(f, inputs, outputs, gys):
    maps, sizes = _index_maps(f, inputs, outputs)
    total = int(np.sum(sizes))
    g = [_flat(gy) for gy in gys]
    idx = np.concatenate([m.reshape(-1) for m in maps])
    g = g[0] if len(g) == 1 else F.concatenate(*g, axis=0)
    gall = _scatter_static(g, idx, (total,))
    out, off = [], 0
    for x, n in zip(inputs, sizes):
        if not x.need_grad:
            out.append(None)
        else:
            part = gall if n == total else F.slice(gall, (off,), (off + n,), (1,))
            out.append(_reshape(part, x.shape))
        off += n
    return out


# (slice with steps other than 1 uses it too; see _slice below)
for _t in ('Pad', 'Tile', 'Shift', 'MatrixDiag', 'MatrixDiagPart', 'Unpooling', 'BroadcastTo'):
    G.grad_builder(_t)(_by_index_map)


@G.grad_builder('Transpose')
def _transpose(f, inputs, outputs, gys):
    axes = [a % len(inputs[0].shape) for a in f.args['axes']]
    return [F.transpose(gys[0], tuple(int(i) for i in np.argsort(axes)))]


@G.grad_builder('Broadcast')
def _broadcast(f, inputs, outputs, gys):
    return [G._sum_to(gys[0], inputs[0].shape)]


@G.grad_builder('Flip')
def _flip(f, inputs, outputs, gys):
    return [F.flip(gys[0], f.args['axes'])]


# ---- data-dependent functions ------------------------------------------------------

def _extreme(name):
    def build(f, inputs, outputs, gys):
        x = inputs[0]
        if f.args['only_index']:
            return [None]
        axes = sorted(G._reduction_axes(f, x))
        kept = tuple(1 if i in axes else s for i, s in enumerate(x.shape))
        # (a fresh index node: the node's own index output may be gone)
        ind = getattr(F, name)(x, axis=f.args['axis'], keepdims=True, only_index=True)
        ind = _reshape(ind, kept)
        span = tuple(x.shape[i] if i in axes else 1 for i in range(len(x.shape)))
        iota = np.arange(int(np.prod(span)), dtype=np.float32).reshape(span)
        mask = F.equal(_const(iota, span), ind)
        return [F.mul2(mask, _reshape(gys[0], kept))]
    return build


G.grad_builder('Max')(_extreme('max'))
G.grad_builder('Min')(_extreme('min'))


def _products_of_others(x, axes):
    """For each element, the product of the other elements of its group (the
    axes reduced), as prod over j of (x_j off the diagonal, 1 on it): exact
    and smooth with zeros, at n * n memory per group of n."""
    nd = len(x.shape)
    rest = [i for i in range(nd) if i not in axes]
    perm = tuple(rest + list(axes))
    n = int(np.prod([x.shape[a] for a in axes]))
    m = int(np.prod([x.shape[a] for a in rest]))
    xt = F.transpose(x, perm) if perm != tuple(range(nd)) else x
    x2 = _reshape(xt, (m, 1, n))
    eye = np.eye(n, dtype=np.float32)
    rep = F.add2(F.mul2(x2, _const(1.0 - eye, (n, n))), _const(eye, (n, n)))
    others = _reshape(F.prod(rep, 2), tuple(xt.shape))
    if perm != tuple(range(nd)):
        others = F.transpose(others, tuple(int(i) for i in np.argsort(perm)))
    return others


@G.grad_builder('Prod')
def _prod(f, inputs, outputs, gys):
    x = inputs[0]
    axis = f.args['axis']
    axes = tuple(sorted(G._reduction_axes(f, x)))
    kept = tuple(1 if i in axes else s for i, s in enumerate(x.shape))
    n = int(np.prod([x.shape[a] for a in axes]))
    if n * n * (int(np.prod(x.shape)) // max(n, 1)) <= 2 ** 22:
        others = _products_of_others(x, axes)
    else:
        # Exact values with zeros (z the zero mask, p the product of the
        # non-zeros): p / x_i where the group has no zero, p at the zero of a
        # group with exactly one, else 0; its own gradient is exact away
        # from zeros only.
        z = F.equal_scalar(x, 0.0)
        nonzero = F.r_sub_scalar(z, 1.0)
        xs = F.add2(F.mul2(x, nonzero), z)             # the zeros replaced by ones
        p = _reshape(F.prod(xs, axis, keepdims=True), kept)
        nz = _reshape(F.sum(z, axis, keepdims=True), kept)
        others = F.add2(F.mul2(F.mul2(nonzero, F.equal_scalar(nz, 0.0)), F.div2(p, xs)),
                        F.mul2(F.mul2(z, F.equal_scalar(nz, 1.0)), p))
    return [F.mul2(_reshape(gys[0], kept), others)]


@G.grad_builder('Where')
def _where(f, inputs, outputs, gys):
    c, xt, xf = inputs
    gy = gys[0]
    zero = _const(0.0, gy.shape)
    return [None, F.where(c, gy, zero), F.where(c, zero, gy)]


@G.grad_builder('Embed')
def _embed(f, inputs, outputs, gys):
    x0, w = inputs
    ind = _reshape(x0, (1,) + tuple(x0.shape))
    return [None, F.scatter_nd(gys[0], ind, shape=w.shape, add=True)]


@G.grad_builder('Dropout')
def _dropout(f, inputs, outputs, gys):
    # the mask (0 or 1 / (1 - p)) of the node's last forward
    impl = _impl(f)
    mask = _state_variable(f, tuple(outputs[0].shape), lambda: impl.mask, 'mask')
    return [F.mul2(gys[0], mask)]


def _spread_all(x, gy, scale):
    g = _reshape(gy, (1,) * len(x.shape))
    if scale != 1.0:
        g = F.mul_scalar(g, scale)
    return F.add2(_const(0.0, x.shape), g)


@G.grad_builder('ReduceSum')
def _reduce_sum(f, inputs, outputs, gys):
    return [_spread_all(inputs[0], gys[0], 1.0)]


@G.grad_builder('ReduceMean')
def _reduce_mean(f, inputs, outputs, gys):
    return [_spread_all(inputs[0], gys[0], 1.0 / max(int(np.prod(inputs[0].shape)), 1))]


@G.grad_builder('GlobalAveragePooling')
def _global_average_pooling(f, inputs, outputs, gys):
    x = inputs[0]
    size = int(np.prod(x.shape[2:]))
    g = _reshape(gys[0], tuple(x.shape[:2]) + (1,) * (len(x.shape) - 2))
    g = F.mul_scalar(g, 1.0 / size if size else float('nan'))
    return [F.add2(_const(0.0, x.shape), g)]


@G.grad_builder('AddN')
def _add_n(f, inputs, outputs, gys):
    return [gys[0] for _ in inputs]


@G.grad_builder('MulN')
def _mul_n(f, inputs, outputs, gys):
    out = []
    for i in range(len(inputs)):
        others = [x for j, x in enumerate(inputs) if j != i]
        p = others[0] if len(others) == 1 else F.mul_n(*others)
        out.append(F.mul2(gys[0], p))
    return out


@G.grad_builder('BatchInv')
def _batch_inv(f, inputs, outputs, gys):
    y = outputs[0]
    g = F.batch_matmul(F.batch_matmul(y, gys[0], transpose_a=True), y, transpose_b=True)
    return [F.mul_scalar(g, -1.0)]


@G.grad_builder('BatchDet')
def _batch_det(f, inputs, outputs, gys):
    x = inputs[0]
    b = x.shape[0]
    s = _reshape(F.mul2(gys[0], outputs[0]), (b, 1, 1))
    return [F.mul2(s, F.transpose(F.batch_inv(x), (0, 2, 1)))]


# ---- convolutions and poolings as graph forms -----------------------------------------

def _per(v, n, default):
    if v is None:
        return (default,) * n
    if isinstance(v, int):
        return (v,) * n
    v = tuple(v)
    return v * n if len(v) == 1 and n > 1 else v


def _grid(*sizes):
    return np.meshgrid(*[np.arange(s) for s in sizes], indexing='ij', sparse=False) \
        if sizes else []


def _xwb(inputs):
    return inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None


@graph_form('DepthwiseConvolution')
def _depthwise_convolution(f, inputs):
    # a convolution with one group per input channel
    x, w, b = _xwb(inputs)
    c = x.shape[f.args['base_axis']]
    a = f.args
    return F.convolution(x, _reshape(w, (w.shape[0], 1) + tuple(w.shape[1:])), b,
                         base_axis=a['base_axis'], pad=a['pad'], stride=a['stride'],
                         dilation=a['dilation'], group=c)


@graph_form('DepthwiseDeconvolution')
def _depthwise_deconvolution(f, inputs):
    # a deconvolution with one group per output channel
    x, w, b = _xwb(inputs)
    c = x.shape[f.args['base_axis']]
    a = f.args
    return F.deconvolution(x, _reshape(w, (w.shape[0], 1) + tuple(w.shape[1:])), b,
                           base_axis=a['base_axis'], pad=a['pad'], stride=a['stride'],
                           dilation=a['dilation'], group=c // a['divisor'])


def _pool_index(f, x, out_shape):
    kernel = tuple(f.args['kernel'])
    nk = len(kernel)
    stride = _per(f.args['stride'], nk, None)
    stride = kernel if stride[0] is None else stride
    pad = _per(f.args['pad'], nk, 0)
    cl = f.args['channel_last']
    nd = len(x.shape)
    first = nd - nk - (1 if cl else 0)
    grids = _grid(*(tuple(out_shape) + kernel))
    coords, valid = [], np.ones(grids[0].shape if grids else (), bool)
    for a in range(nd):
        if first <= a < first + nk:
            i = a - first
            s = grids[a] * stride[i] - pad[i] + grids[nd + i]
            valid &= (s >= 0) & (s < x.shape[a])
            coords.append(np.clip(s, 0, x.shape[a] - 1))
        else:
            coords.append(grids[a])
    idx = np.ravel_multi_index(coords, x.shape)
    idx = np.where(valid, idx, -1)
    return idx.reshape(tuple(out_shape) + (-1,))


@graph_form('MaxPooling')
def _max_pooling(f, inputs):
    x = inputs[0]
    out_shape = f.outputs[0].shape
    idx = _pool_index(f, x, out_shape)
    patches = _gather_static(x, idx, fill=float(np.finfo(np.float32).min))
    return F.max(patches, axis=len(out_shape))


@graph_form('SumPooling')
def _sum_pooling(f, inputs):
    x = inputs[0]
    out_shape = f.outputs[0].shape
    idx = _pool_index(f, x, out_shape)
    return F.sum(_gather_static(x, idx), axis=len(out_shape))


@graph_form('AveragePooling')
def _average_pooling(f, inputs):
    x = inputs[0]
    out_shape = f.outputs[0].shape
    idx = _pool_index(f, x, out_shape)
    ones = Variable.from_numpy_array(np.ones(x.shape, np.float32))
    avg = F.average_pooling(ones, **f.args)
    avg.forward()
    n = np.maximum((idx >= 0).sum(-1), 1).astype(np.float32)
    weight = np.asarray(avg.d, np.float32) / n
    s = F.sum(_gather_static(x, idx), axis=len(out_shape))
    return F.mul2(s, _const(weight, out_shape))


# ---- sorting and top-k ------------------------------------------------------------------

def _scatter_by(gy, flat_ind, shape):
    """Adds gy into an array of ``shape`` at the flat positions held by the
    Variable ``flat_ind`` (of gy's shape)."""
    n = int(np.prod(gy.shape))
    ind = _reshape(flat_ind, (1, n))
    size = int(np.prod(shape))
    return _reshape(F.scatter_nd(_flat(gy), ind, shape=(size,), add=True), shape)


@G.grad_builder('Sort')
def _sort(f, inputs, outputs, gys):
    x = inputs[0]
    if f.args['only_index']:
        return [None]
    nd = len(x.shape)
    axis = f.args['axis'] % nd
    ind = F.sort(x, axis=f.args['axis'], reverse=f.args['reverse'], only_index=True)
    stride = int(np.prod(x.shape[axis + 1:]))
    grids = _grid(*x.shape)
    base = np.ravel_multi_index([g if i != axis else np.zeros_like(g)
                                 for i, g in enumerate(grids)], x.shape)
    flat = F.add2(F.mul_scalar(ind, float(stride)), _const(base.astype(np.float32), x.shape))
    return [_scatter_by(gys[0], flat, x.shape)]


def _top_k_positions(x, k, use_abs, base):
    """Flat positions in x of the k largest entries (by magnitude with abs) of
    each sample, (m, k)."""
    m = int(np.prod(x.shape[:base]))
    n = int(np.prod(x.shape[base:]))
    key = _reshape(x, (m, n))
    if use_abs:
        key = F.abs(key)
    ind = F.sort(key, axis=1, reverse=True, only_index=True)
    ind = F.slice(ind, (0, 0), (m, k), (1, 1)) if k < n else ind
    rows = (np.arange(m, dtype=np.float32) * n).reshape(m, 1)
    return F.add2(ind, _const(rows, (m, 1)))


@G.grad_builder('TopKData')
def _top_k_data(f, inputs, outputs, gys):
    x = inputs[0]
    k, base = f.args['k'], f.args['base_axis'] % max(len(x.shape), 1)
    pos = _top_k_positions(x, k, f.args['abs'], base)
    gy = gys[0]
    if f.args['reduce']:
        return [_scatter_by(gy, pos, x.shape)]
    ones = _const(1.0, pos.shape)
    mask = _scatter_by(ones, pos, x.shape)
    return [F.mul2(gy, mask)]


@G.grad_builder('TopKGrad')
def _top_k_grad(f, inputs, outputs, gys):
    return [F.top_k_data(gys[0], f.args['k'], abs=f.args['abs'], reduce=False,
                         base_axis=f.args['base_axis'])]


@G.grad_builder('Assign')
def _assign(f, inputs, outputs, gys):
    return [gys[0], None]


def _no_gradient(f, inputs, outputs, gys):
    return [None] * len(inputs)


# generators and integer-valued outputs: nothing flows back
for _t in ('Constant', 'Arange', 'Rand', 'Randint', 'Randn', 'RandBinomial', 'RandBeta',
           'RandGamma', 'OneHot'):
    G.grad_builder(_t)(_no_gradient)


# ---- recurrent networks as graph forms ---------------------------------------------------

def _take(v, axis, i):
    """v[..., i, ...] along ``axis`` with the axis removed."""
    start = [0] * len(v.shape)
    stop = list(v.shape)
    start[axis], stop[axis] = i, i + 1
    out = F.slice(v, tuple(start), tuple(stop), (1,) * len(v.shape))
    return _reshape(out, tuple(s for k, s in enumerate(v.shape) if k != axis))


def _cols(v, a, b):
    """v[:, a:b] of a 2-D v."""
    return F.slice(v, (0, a), (v.shape[0], b), (1, 1))


def _recurrent_form(cell):
    gates = {'rnn': 1, 'lstm': 4, 'gru': 3}[cell]
    blocks = {'rnn': 1, 'lstm': 4, 'gru': 4}[cell]

    def form(f, inputs):
        from nncy._grad_norm import _by_name
        v = _by_name(f, inputs)
        a = f.args
        x, h_init = v['x'], v['h']
        T, B, I = x.shape
        L, D, _, H = h_init.shape
        GH = gates * H
        impl = _impl(f)
        dropout = bool(a['training'] and a['dropout'] and L > 1)
        relu = a.get('nonlinearity') == 'relu'
        bias = v.get('bias')
        if bias is not None:
            bias = _reshape(bias, (L, D, blocks * H))
        layer_in = _reshape(x, (T * B, I))
        hn, cn = [], []
        for l in range(L):
            if l == 0:
                W_all = _reshape(v['weight_l0'], (D, GH, I + H))
            else:
                W_all = _reshape(_take(v['weight'], 0, l - 1), (D, GH, D * H + H))
            n_in = layer_in.shape[1]
            seqs, hn_l, cn_l = [], [], []
            for d in range(D):
                W = _take(W_all, 0, d)
                wx, wh = _cols(W, 0, n_in), _cols(W, n_in, n_in + H)
                gx = F.batch_matmul(layer_in, wx, transpose_b=True)
                bhn = None
                if bias is not None:
                    bld = _take(_take(bias, 0, l), 0, d)
                    gx = F.add2(gx, _reshape(F.slice(bld, (0,), (GH,), (1,)), (1, GH)))
                    if cell == 'gru':
                        bhn = _reshape(F.slice(bld, (GH,), (GH + H,), (1,)), (1, H))
                gx = _reshape(gx, (T, B, GH))
                h = _take(_take(h_init, 0, l), 0, d)
                c = _take(_take(v['c'], 0, l), 0, d) if cell == 'lstm' else None
                outs = [None] * T
                for t in (range(T) if d == 0 else range(T - 1, -1, -1)):
                    g = _take(gx, 0, t)
                    hw = F.batch_matmul(h, wh, transpose_b=True)
                    if cell == 'rnn':
                        pre = F.add2(g, hw)
                        h = F.relu(pre) if relu else F.tanh(pre)
                    elif cell == 'lstm':
                        pre = F.add2(g, hw)
                        i_, f_, g_, o_ = [_cols(pre, k * H, (k + 1) * H) for k in range(4)]
                        c = F.add2(F.mul2(F.sigmoid(f_), c), F.mul2(F.sigmoid(i_), F.tanh(g_)))
                        h = F.mul2(F.sigmoid(o_), F.tanh(c))
                    else:
                        r = F.sigmoid(F.add2(_cols(g, 0, H), _cols(hw, 0, H)))
                        z = F.sigmoid(F.add2(_cols(g, H, 2 * H), _cols(hw, H, 2 * H)))
                        hn_pre = _cols(hw, 2 * H, 3 * H)
                        if bhn is not None:
                            hn_pre = F.add2(hn_pre, bhn)
                        n = F.tanh(F.add2(_cols(g, 2 * H, 3 * H), F.mul2(r, hn_pre)))
                        h = F.add2(F.mul2(F.r_sub_scalar(z, 1.0), n), F.mul2(z, h))
                    outs[t] = h
                seqs.append(F.stack(*outs, axis=0))
                hn_l.append(h)
                if c is not None:
                    cn_l.append(c)
            y_l = seqs[0] if D == 1 else F.concatenate(*seqs, axis=2)
            hn.append(F.stack(*hn_l, axis=0))
            if cn_l:
                cn.append(F.stack(*cn_l, axis=0))
            layer_in = _reshape(y_l, (T * B, D * H))
            if dropout and l < L - 1:   # the mask of the node's last forward
                mask = _state_variable(f, (T * B, D * H),
                                       lambda l=l: impl._cache[l][2], '_cache')
                layer_in = F.mul2(layer_in, mask)
        outs = [y_l, F.stack(*hn, axis=0)]
        if cell == 'lstm':
            outs.append(F.stack(*cn, axis=0))
        return outs
    return form


def _stateful_form(form):
    """Builder from a graph form that reads the node's own outputs (random
    state variables): the gradient pass stops at those outputs too."""
    def build(f, inputs, outputs, gys):
        outs = form(f, list(inputs))
        outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
        stop = list(inputs) + list(f.outputs)
        return _backprop(outs, stop, gys[:len(outs)])[:len(inputs)]
    return build


for _t, _cell in (('RNN', 'rnn'), ('LSTM', 'lstm'), ('GRU', 'gru')):
    G.grad_builder(_t)(_stateful_form(_recurrent_form(_cell)))


# ---- multi-head attention as a graph form --------------------------------------------------

def _project(x, w, b, scale=1.0):
    """(L, B, D) x (D, E) + b, times scale."""
    L, B, D = x.shape
    y = F.batch_matmul(_reshape(x, (L * B, D)), w)
    if b is not None:
        y = F.add2(y, _reshape(b, (1, w.shape[1])))
    if scale != 1.0:
        y = F.mul_scalar(y, scale)
    return _reshape(y, (L, B, w.shape[1]))


def _multi_head_attention(f, inputs):
    from nncy._grad_norm import _by_name
    v = _by_name(f, inputs)
    H = f.args['num_heads']
    query, key, value = v['query'], v['key'], v['value']
    Lt, B, _ = query.shape
    Ls = key.shape[0]
    E, Ev = v['q_weight'].shape[1], v['v_weight'].shape[1]
    hd, hv = E // H, Ev // H
    Q = _project(query, v['q_weight'], v.get('q_bias'), float(hd) ** -0.5)
    Kp = _project(key, v['k_weight'], v.get('k_bias'))
    Vp = _project(value, v['v_weight'], v.get('v_bias'))
    S = Ls
    if v.get('attn_bias_k') is not None:
        S = Ls + 1
        Kp = F.concatenate(Kp, F.broadcast(_reshape(v['attn_bias_k'], (1, 1, E)), (1, B, E)),
                           axis=0)
        Vp = F.concatenate(Vp, F.broadcast(_reshape(v['attn_bias_v'], (1, 1, Ev)),
                                           (1, B, Ev)), axis=0)
    BH = B * H
    Qb = F.transpose(_reshape(Q, (Lt, BH, hd)), (1, 0, 2))
    Kb = F.transpose(_reshape(Kp, (S, BH, hd)), (1, 0, 2))
    Vb = F.transpose(_reshape(Vp, (S, BH, hv)), (1, 0, 2))
    A = _reshape(F.batch_matmul(Qb, Kb, transpose_b=True), (B, H, Lt, S))
    if v.get('additive_mask') is not None:
        m = v['additive_mask']
        if S > Ls:
            m = F.pad(m, (0, S - Ls))
        A = F.add2(A, m)
    if v.get('key_padding_mask') is not None:
        m = F.not_equal_scalar(v['key_padding_mask'], 0.0)
        if S > Ls:
            m = F.pad(m, (0, S - Ls))
        m = _reshape(m, (B, 1, 1, S))
        A = F.add2(F.mul2(A, F.r_sub_scalar(m, 1.0)), F.mul_scalar(m, -1e30))
    P = F.softmax(A, axis=3)
    if f.args['dropout']:   # the mask of the node's last forward
        impl = _impl(f)
        P = F.mul2(P, _state_variable(f, (B, H, Lt, S), lambda: impl._cache[4], '_cache'))
    O = F.batch_matmul(_reshape(P, (BH, Lt, S)), Vb)                 # (BH, Lt, hv)
    O = F.transpose(O, (1, 0, 2))                                    # (Lt, BH, hv)
    y = _project(_reshape(O, (Lt, B, Ev)), v['out_weight'], v.get('out_bias'))
    return [y, F.mean(P, axis=1)]


G.grad_builder('MultiHeadAttention')(_stateful_form(_multi_head_attention))


# ---- convolutions with the engine's own kernels ---------------------------------------------
# Channel-first convolutions and deconvolutions get their gradients from each
# other: the input gradient of a convolution is a deconvolution of gy by the
# same weight (and the reverse), and the weight gradient is a convolution of
# the transposed (channel <-> batch) input by the transposed output gradient.
# Channel-last ones go through transposes to the channel-first ones.

def _channel_first_3d(v, base):
    """(lead..., C, S...) -> (B, C, S...)."""
    lead = int(np.prod(v.shape[:base]))
    return _reshape(v, (lead,) + tuple(v.shape[base:]))


def _filter_grad(x, gy, kernel, pad, stride, dil, group):
    """Weight gradient (OC, C / group, K...) of the convolution of x (B, C, S...)
    giving gy (B, OC, O...): one grouped convolution of x as (C / group,
    group * B, S...) by gy as (OC, B, O...), stride and dilation swapped."""
    ns = len(kernel)
    sp = tuple(range(2, ns + 2))
    B, C = x.shape[0], x.shape[1]
    OC = gy.shape[1]
    Cg = C // group
    xt = _reshape(x, (B, group, Cg) + tuple(x.shape[2:]))
    xt = _reshape(F.transpose(xt, (2, 1, 0) + tuple(a + 1 for a in sp)),
                  (Cg, group * B) + tuple(x.shape[2:]))
    gyt = F.transpose(gy, (1, 0) + sp)
    w = F.convolution(xt, gyt, None, base_axis=1, pad=pad, stride=dil, dilation=stride,
                      group=group)                                   # (Cg, OC, K'...)
    if tuple(w.shape[2:]) != tuple(kernel):
        w = F.slice(w, (0,) * (ns + 2), (Cg, OC) + tuple(kernel), (1,) * (ns + 2))
    return F.transpose(w, (1, 0) + sp)


def _bias_grad(gy, base):
    axes = tuple(i for i in range(len(gy.shape)) if i != base)
    return F.sum(gy, axes)


def _window_args(f, ns):
    return (_per(f.args['pad'], ns, 0), _per(f.args['stride'], ns, 1),
            _per(f.args['dilation'], ns, 1))


def _channel_last_form(fn):
    """Graph form of a channel-last (de)convolution: the channel-first one
    between transposes."""
    def form(f, inputs):
        x, w, b = _xwb(inputs)
        base = f.args['base_axis']
        nd = len(x.shape)
        ns = nd - base - 1
        lead = tuple(range(base))
        args = dict(f.args, channel_last=False)
        y = fn(F.transpose(x, lead + (nd - 1,) + tuple(range(base, nd - 1))),
               F.transpose(w, (0, ns + 1) + tuple(range(1, ns + 1))), b, **args)
        return F.transpose(y, lead + tuple(range(base + 1, nd)) + (base,))

    def build(f, inputs, outputs, gys):
        return _backprop([form(f, list(inputs))], list(inputs), gys[:1])
    return build


_conv_channel_last = _channel_last_form(F.convolution)
_deconv_channel_last = _channel_last_form(F.deconvolution)


@G.grad_builder('Convolution')
def _convolution_grad(f, inputs, outputs, gys):
    if f.args['channel_last']:
        return _conv_channel_last(f, inputs, outputs, gys)
    x, w = inputs[0], inputs[1]
    gy = gys[0]
    base, group = f.args['base_axis'], f.args['group']
    ns = len(x.shape) - base - 1
    pad, stride, dil = _window_args(f, ns)
    kernel = tuple(w.shape[2:])
    S = x.shape[base + 1:]
    out = [None] * len(inputs)
    if x.need_grad:
        opad = tuple((S[i] + 2 * pad[i] - dil[i] * (kernel[i] - 1) - 1) % stride[i]
                     for i in range(ns))
        out[0] = F.deconvolution(gy, w, None, base_axis=base, pad=pad, stride=stride,
                                 dilation=dil, group=group,
                                 output_padding=opad if any(opad) else None)
    if w.need_grad:
        out[1] = _filter_grad(_channel_first_3d(x, base), _channel_first_3d(gy, base),
                              kernel, pad, stride, dil, group)
    if len(inputs) > 2 and inputs[2].need_grad:
        out[2] = _bias_grad(gy, base)
    return out


@G.grad_builder('Deconvolution')
def _deconvolution_grad(f, inputs, outputs, gys):
    if f.args['channel_last']:
        return _deconv_channel_last(f, inputs, outputs, gys)
    x, w = inputs[0], inputs[1]
    gy = gys[0]
    base, group = f.args['base_axis'], f.args['group']
    ns = len(x.shape) - base - 1
    pad, stride, dil = _window_args(f, ns)
    kernel = tuple(w.shape[2:])
    out = [None] * len(inputs)
    if x.need_grad:
        out[0] = F.convolution(gy, w, None, base_axis=base, pad=pad, stride=stride,
                               dilation=dil, group=group)
    if w.need_grad:
        out[1] = _filter_grad(_channel_first_3d(gy, base), _channel_first_3d(x, base),
                              kernel, pad, stride, dil, group)
    if len(inputs) > 2 and inputs[2].need_grad:
        out[2] = _bias_grad(gy, base)
    return out


@graph_form('AdaptiveSeparableConvolution')
def _adaptive_separable_convolution(f, inputs):
    # y[b, c, h, w] = sum_{j, i} kv[b, j, h, w] kh[b, i, h, w] x[b, c, h + j, w + i]
    x, kv, kh = inputs
    B, C, Hx, Wx = x.shape
    Kv, Kh = kv.shape[1], kh.shape[1]
    OH, OW = Hx - Kv + 1, Wx - Kh + 1
    b, c, j, i, h, w = _grid(B, C, Kv, Kh, OH, OW)
    idx = np.ravel_multi_index((b, c, h + j, w + i), x.shape)
    patches = _gather_static(x, idx)
    kv = F.slice(kv, (0, 0, 0, 0), (B, Kv, OH, OW), (1, 1, 1, 1))
    kh = F.slice(kh, (0, 0, 0, 0), (B, Kh, OH, OW), (1, 1, 1, 1))
    prod = F.mul2(F.mul2(patches, _reshape(kv, (B, 1, Kv, 1, OH, OW))),
                  _reshape(kh, (B, 1, 1, Kh, OH, OW)))
    return F.sum(prod, (2, 3))


def _pair_arg(v, n=2):
    v = tuple(v)
    if len(v) == 1:
        v = v * n
    elif n == 4 and len(v) == 2:
        v = (v[0], v[0], v[1], v[1])
    return v


@graph_form('PatchCorrelation')
def _patch_correlation(f, inputs):
    # y[n, iy, ix, oy, ox] = sum_{c, ky, kx} x1[n, c, y + ky, x + kx]
    #                                        * x2[n, c, y + ky + sy, x + kx + sx]
    # with y = oy * step_h - pad_top, x = ox * step_w - pad_left, (sy, sx) the
    # shift number (iy, ix); zero outside the image.
    x1, x2 = inputs
    a = f.args
    patch, shift = _pair_arg(a['patch']), _pair_arg(a['shift'])
    step, sstep = _pair_arg(a['patch_step']), _pair_arg(a['shift_step'])
    pad = _pair_arg(a['padding'], 4)
    cl = a['channel_last']
    out_shape = f.outputs[0].shape
    if cl:
        N, Hh, W, C = x1.shape
        _, oh, ow, cy, cx = out_shape
        n, oy, ox, iy, ix, c, ky, kx = _grid(N, oh, ow, cy, cx, C, patch[0], patch[1])
    else:
        N, C, Hh, W = x1.shape
        _, cy, cx, oh, ow = out_shape
        n, iy, ix, oy, ox, c, ky, kx = _grid(N, cy, cx, oh, ow, C, patch[0], patch[1])
    y = oy * step[0] - pad[0] + ky
    x = ox * step[1] - pad[2] + kx
    sy = iy * sstep[0] - shift[0]
    sx = ix * sstep[1] - shift[1]

    def index(yy, xx, valid):
        valid = valid & (yy >= 0) & (yy < Hh) & (xx >= 0) & (xx < W)
        yy, xx = np.clip(yy, 0, Hh - 1), np.clip(xx, 0, W - 1)
        coords = (n, yy, xx, c) if cl else (n, c, yy, xx)
        return valid, np.ravel_multi_index(coords, x1.shape)

    v1, i1 = index(y, x, np.ones(y.shape, bool))
    v2, i2 = index(y + sy, x + sx, v1)
    i1 = np.where(v2, i1, -1)
    i2 = np.where(v2, i2, -1)
    prod = F.mul2(_gather_static(x1, i1), _gather_static(x2, i2))
    return F.sum(prod, (5, 6, 7))


# ---- direct forms of the commonest rearrangements (no index map) ------------------------------

@G.grad_builder('Slice')
def _slice(f, inputs, outputs, gys):
    x = inputs[0]
    widths = []
    for i, n in enumerate(x.shape):
        sl = getattr(_impl(f), 'slices', ())
        if i >= len(sl):
            widths += [0, 0]
            continue
        a, b, s = sl[i].indices(n)
        if s != 1:
            return _by_index_map(f, inputs, outputs, gys)
        length = len(range(a, b, s))
        widths += [a, n - a - length]
    if not any(widths):
        return [gys[0]]
    return [F.pad(gys[0], tuple(widths))]


def _axis_pieces(gy, axis, sizes):
    """gy cut along ``axis`` into pieces of the given sizes."""
    out, off = [], 0
    nd = len(gy.shape)
    for n in sizes:
        start = [0] * nd
        stop = list(gy.shape)
        start[axis], stop[axis] = off, off + n
        out.append(F.slice(gy, tuple(start), tuple(stop), (1,) * nd))
        off += n
    return out


@G.grad_builder('Concatenate')
def _concatenate(f, inputs, outputs, gys):
    nd = len(inputs[0].shape)
    axis = f.args['axis']
    axis = nd - 1 if axis is None else axis % nd
    pieces = _axis_pieces(gys[0], axis, [x.shape[axis] for x in inputs])
    return [p if x.need_grad else None for p, x in zip(pieces, inputs)]


@G.grad_builder('Stack')
def _stack(f, inputs, outputs, gys):
    nd = len(outputs[0].shape)
    axis = f.args['axis'] % nd
    pieces = _axis_pieces(gys[0], axis, [1] * len(inputs))
    return [_reshape(p, x.shape) if x.need_grad else None for p, x in zip(pieces, inputs)]


@G.grad_builder('Split')
def _split(f, inputs, outputs, gys):
    return [F.stack(*gys, axis=f.args['axis'] % len(inputs[0].shape))]


# ---- random crops, flips and shifts ------------------------------------------------------------
# Their outputs copy input elements at positions drawn anew by every forward.
# The gradient graph scatters gy back through an index Variable that the node
# refreshes after each of its forwards (its forward is wrapped once), so it
# always follows the last draw, as backward does.

def _flip_sources(impl, shape, out_shape):
    return impl._apply(np.arange(int(np.prod(shape))).reshape(shape))


def _crop_sources(impl, shape, out_shape):
    src = np.arange(int(np.prod(shape))).reshape(shape)
    y = np.empty((impl.m,) + tuple(out_shape[impl.base:]), np.int64)
    for i, xs, sl in impl._views(src):
        y[i] = xs[sl]
    return y


def _shift_sources(impl, shape, out_shape):
    from nncy._cpu_array import _gather_axes
    src = np.arange(int(np.prod(shape))).reshape((impl.m,) + tuple(shape[impl.base:]))
    return np.stack([_gather_axes(src[i], impl._maps(i, src.shape[1:]))
                     for i in range(impl.m)])


def _choice_sources(impl, shape, out_shape):
    # row r's draw idx[r, j] comes from x's flat position r * n + idx[r, j]
    return np.arange(impl.b)[:, None] * impl.n + impl.idx


_SOURCES = {'RandomFlip': (_flip_sources, 'flips'), 'RandomCrop': (_crop_sources, 'offsets'),
            'RandomShift': (_shift_sources, 'drawn'), 'RandomChoice': (_choice_sources, 'idx')}


def _state_variable(f, shape, compute, drawn):
    """A Variable of ``shape`` holding ``compute()`` (the node's random state
    of its last forward): refreshed after every forward of node ``f`` (its
    forward is wrapped once), and read only after the node has run."""
    impl = _impl(f)
    var = Variable.from_numpy_array(np.zeros(shape, np.float32), need_grad=False)

    def refresh(v):
        v.d = np.asarray(compute(), np.float32).reshape(shape)

    sinks = impl.__dict__.get('_grad_state_sinks')
    if sinks is None:
        sinks = impl._grad_state_sinks = []
        inner = impl.forward

        def forward(ins, outs):
            inner(ins, outs)
            for v, fn in sinks:
                fn(v)
        impl.forward = forward
    sinks.append((var, refresh))
    if getattr(impl, drawn, None) is not None:
        refresh(var)
    # var + 0 * (y == y): an input that depends on the node's output
    y = f.outputs[0]
    after = F.mul_scalar(F.equal(y, y), 0.0)
    if int(np.prod(shape)) == int(np.prod(y.shape)):
        return F.add2(var, _reshape(after, shape))
    return F.add2(var, F.sum(after))


def _random_selection(f, inputs, outputs, gys):
    x, y = inputs[0], outputs[0]
    impl = _impl(f)
    sources, drawn = _SOURCES[f.spec.type_name]
    shape, out_shape = tuple(x.shape), tuple(y.shape)
    size = int(np.prod(shape))
    if size >= 2 ** 24:
        raise NotImplementedError('grad: %s: input too large for an index map' % f.spec.name)
    idx = _state_variable(f, (1,) + out_shape, lambda: sources(impl, shape, out_shape), drawn)
    return [_reshape(F.scatter_nd(gys[0], idx, shape=(size,), add=True), shape)]


for _t in _SOURCES:
    G.grad_builder(_t)(_random_selection)


@G.grad_builder('RandomErase')
def _random_erase(f, inputs, outputs, gys):
    if not f.args['ste_fine_grained']:
        return [gys[0]]
    impl = _impl(f)
    keep = _state_variable(f, tuple(outputs[0].shape), lambda: ~impl.mask, 'mask')
    return [F.mul2(gys[0], keep)]


# image_augmentation passes no gradient back (as in NNabla)
G.grad_builder('ImageAugmentation')(_no_gradient)
