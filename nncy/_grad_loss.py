"""``nn.grad`` for the loss, validation, detection, quantization, signal
processing and special-use rows (nncy/_cpu_loss.py): their gradients as graphs
of other functions, so that they can be differentiated again.

* Losses (categorical_cross_entropy, kl_multinomial) write the engine's
  backward formulas with functions; the label one-hot is a comparison of the
  target with the class positions, so it follows the target's data.
* Quantized layers (binary_*, inq_*) are affine / convolution over an
  effective weight whose gradient reaches weight straight through (masked to
  the learnable weights for inq_*); binarization is rebuilt from weight with
  comparisons, the inq weights are read after the node's forward.
* Linear maps (interpolate, fft, ifft, stft, istft) get graph forms with static
  matrices and index maps; warp_by_flow a graph form of bilinear sampling.
* Steps and counts (top_n_error, confusion_matrix, nms_detection2d) and
  vat_noise (whose backward only stores into w) pass no gradient.
"""
import numpy as np

import nncy.functions as F
from nncy import _grad as G
from nncy._core import Variable
from nncy._grad_norm import _backprop, graph_form
from nncy._grad_layers import (_gather_static, _no_gradient, _reshape, _scatter_static,
                               _state_variable)
from nncy._table import BY_TYPE

_const = G._const


def _array(a):
    return Variable.from_numpy_array(np.ascontiguousarray(a, dtype=np.float32),
                                     need_grad=False)


def _impl(f):
    """The implementation of node ``f`` (inside a float16-storage wrapper); not
    ``_grad_norm._impl``: label-axis rows have an ``inner`` size of their own."""
    impl = f.impl
    return impl.inner if type(impl).__name__ == 'HalfStorage' else impl


def _by_name(f, inputs):
    """{input name: Variable} of node ``f`` (left-out optional inputs absent)."""
    omitted = getattr(_impl(f), 'omitted', ())
    names = [i.name for i in f.spec.inputs if i.name not in omitted]
    return dict(zip(names, inputs))


def _after(f, v):
    """v, read only after node ``f`` has run (v + 0 * sum(y == y))."""
    y = f.outputs[0]
    return F.add2(v, F.sum(F.mul_scalar(F.equal(y, y), 0.0)))


# ---- losses ------------------------------------------------------------------------

@G.grad_builder('CategoricalCrossEntropy')
def _categorical_cross_entropy(f, inputs, outputs, gys):
    x, t = inputs
    impl = _impl(f)
    axis = impl.axis
    nd = len(x.shape)
    want = x.shape[:axis] + (1,) + x.shape[axis + 1:]
    pos = np.arange(x.shape[axis], dtype=np.float32).reshape(
        (1,) * axis + (x.shape[axis],) + (1,) * (nd - axis - 1))
    tb = F.broadcast(_reshape(t, want), x.shape)
    onehot = F.equal(tb, F.broadcast(_array(pos), x.shape))        # 0 for negative labels
    p = F.sum(F.mul2(onehot, x), axis, keepdims=True)               # x[label] (0 if none)
    valid = F.sum(onehot, axis, keepdims=True)
    p = F.maximum_scalar(F.add2(p, F.r_sub_scalar(valid, 1.0)), float(np.finfo(np.float32).tiny))
    g = F.div2(F.mul_scalar(_reshape(gys[0], want), -1.0), p)
    return [F.mul2(onehot, F.broadcast(g, x.shape)), None]


@G.grad_builder('KLMultinomial')
def _kl_multinomial(f, inputs, outputs, gys):
    p, q = inputs
    base = f.args['base_axis']
    gy = F.broadcast(_reshape(gys[0], p.shape[:base] + (1,) * (len(p.shape) - base)), p.shape)
    out = [None, None]
    if p.need_grad:
        d = F.sub2(F.log(F.add_scalar(p, 1e-8)), F.log(F.add_scalar(q, 1e-8)))
        out[0] = F.mul2(gy, F.add_scalar(d, 1.0))
    if q.need_grad:
        out[1] = F.mul_scalar(F.div2(F.mul2(gy, p), q), -1.0)
    return out


@G.grad_builder('Prune')
def _prune(f, inputs, outputs, gys):
    return [gys[0]]   # straight through


for _t in ('TopNError', 'ConfusionMatrix', 'NmsDetection2d', 'VATNoise'):
    G.grad_builder(_t)(_no_gradient)


# ---- quantized layers -----------------------------------------------------------------

def _sign(w, zero_to):
    """sign(w) with 0 mapped to zero_to, as comparisons (no gradient)."""
    s = F.sub2(F.greater_scalar(w, 0.0), F.less_scalar(w, 0.0))
    if zero_to != 0:
        s = F.add2(s, F.mul_scalar(F.equal_scalar(w, 0.0), float(zero_to)))
    return s


def _conv_args(f):
    names = [k for k, _, _ in BY_TYPE['Convolution'].args]
    return {k: f.args[k] for k in names if k in f.args}


def _over_effective(f, inputs, gys, weff, layer):
    """Gradients of ``layer(x, weff, bias)``: x's and bias's, and weff's for weight."""
    named = _by_name(f, inputs)
    x, b = named['x'], named.get('bias')
    ins = [x, weff] + ([b] if b is not None else [])
    y = layer(*ins)
    grads = _backprop([y], ins, gys[:1])
    out = [None] * len(inputs)
    for i, v in enumerate(inputs):
        if v is x:
            out[i] = grads[0]
        elif v is named['weight']:
            out[i] = grads[1]
        elif b is not None and v is b:
            out[i] = grads[2]
    return out


def _binary(affine):
    def build(f, inputs, outputs, gys):
        named = _by_name(f, inputs)
        w = named['weight']
        weff = _sign(w, f.args['quantize_zero_to'])
        if 'alpha' in named:
            if affine:
                alpha = _reshape(F.mean(F.abs(w), 0, keepdims=True), (1,) + tuple(w.shape[1:]))
            else:
                red = tuple(range(1, len(w.shape)))
                alpha = F.mean(F.abs(w), red, keepdims=True)
            weff = F.mul2(weff, F.broadcast(alpha, w.shape))
        if affine:
            base = f.args['base_axis']
            layer = lambda *a: F.affine(*a, base_axis=base)          # noqa: E731
        else:
            args = _conv_args(f)
            layer = lambda *a: F.convolution(*a, **args)             # noqa: E731
        return _over_effective(f, inputs, gys, weff, layer)
    return build


G.grad_builder('BinaryConnectAffine')(_binary(True))
G.grad_builder('BinaryWeightAffine')(_binary(True))
G.grad_builder('BinaryConnectConvolution')(_binary(False))
G.grad_builder('BinaryWeightConvolution')(_binary(False))


def _inq(affine):
    def build(f, inputs, outputs, gys):
        named = _by_name(f, inputs)
        # the weights as the node's forward left them; fixed ones are constants
        w = _after(f, named['weight'])
        free = F.equal_scalar(_after(f, named['indicator_fixedweights']), 0.0)
        # (the effective weight: a stop for the backward pass below; the
        # second-order pass reaches the learnable weights only)
        weff = F.add2(F.mul2(w, free), F.mul2(F.unlink(w), F.r_sub_scalar(free, 1.0)))
        if affine:
            base = f.args['base_axis']
            layer = lambda *a: F.affine(*a, base_axis=base)          # noqa: E731
        else:
            args = _conv_args(f)
            layer = lambda *a: F.convolution(*a, **args)             # noqa: E731
        x, b = named['x'], named.get('bias')
        ins = [x, weff] + ([b] if b is not None else [])
        grads = _backprop([layer(*ins)], ins, gys[:1])    # stops at weff
        grads[1] = F.mul2(grads[1], free)
        out = [None] * len(inputs)
        for i, v in enumerate(inputs):
            for u, g in zip([x, named['weight']] + ins[2:], grads):
                if v is u:
                    out[i] = g
        return out
    return build


G.grad_builder('INQAffine')(_inq(True))
G.grad_builder('INQConvolution')(_inq(False))


@G.grad_builder('MinMaxQuantize')
def _min_max_quantize(f, inputs, outputs, gys):
    a = f.args
    impl = _impl(f)
    x = inputs[0]
    gy = gys[0]
    shape = tuple(x.shape)

    def masks():
        m, big, _ = impl._range(list(f.inputs), False)
        xd = np.asarray(f.inputs[0].d, np.float32)
        return xd, m, big

    out = [None] * 5
    if x.need_grad:
        if a['ste_fine_grained'] and a['quantize']:
            def inside():
                xd, m, big = masks()
                return (xd >= m) & (xd <= big)
            out[0] = F.mul2(gy, _state_variable(f, shape, inside, '_never_drawn'))
        else:
            out[0] = gy
    if not a['x_min_max'] and not a['ema']:
        for i, side in ((1, 'lo'), (2, 'hi')):
            v = inputs[i]
            if not v.need_grad:
                continue

            def outside(side=side):
                xd, m, big = masks()
                return np.broadcast_to(xd < m if side == 'lo' else xd > big, shape)
            g = F.mul2(gy, _state_variable(f, shape, outside, '_never_drawn'))
            out[i] = G._sum_to(g, v.shape)
    return out


# ---- linear maps -------------------------------------------------------------------

def _along(z, axis, m):
    """z with its ``axis`` mapped by the (n_in, n_out) matrix m: sum_i z[.., i, ..] m[i, j]."""
    nd = len(z.shape)
    perm = tuple(i for i in range(nd) if i != axis) + (axis,)
    zt = F.transpose(z, perm) if axis != nd - 1 else z
    lead = tuple(zt.shape[:-1])
    r = F.affine(_reshape(zt, (int(np.prod(lead)), zt.shape[-1])), _array(m), base_axis=1)
    r = _reshape(r, lead + (m.shape[1],))
    if axis == nd - 1:
        return r
    inv = tuple(np.argsort(perm))
    return F.transpose(r, inv)


@graph_form('Interpolate')
def _interpolate(f, inputs):
    impl = _impl(f)
    z = inputs[0]
    for ax, m in zip(impl.axes, impl.mats):
        z = _along(z, ax, np.asarray(m, np.float32).T)
    return z


@G.grad_builder('FFT')
def _fft(f, inputs, outputs, gys):
    d, norm = f.args['signal_ndim'], f.args['normalized']
    g = F.ifft(gys[0], d, norm)
    if not norm:
        g = F.mul_scalar(g, float(np.prod(inputs[0].shape[-1 - d:-1])))
    return [g]


@G.grad_builder('IFFT')
def _ifft(f, inputs, outputs, gys):
    d, norm = f.args['signal_ndim'], f.args['normalized']
    g = F.fft(gys[0], d, norm)
    if not norm:
        g = F.mul_scalar(g, 1.0 / float(np.prod(inputs[0].shape[-1 - d:-1])))
    return [g]


@graph_form('STFT')
def _stft(f, inputs):
    from nncy._cpu_loss import _dft_mats
    impl = _impl(f)
    x = inputs[0]
    B, L = x.shape
    n = f.args['fft_size']
    idx = impl.idx                                                   # (T, N), -1: zero
    T = idx.shape[0]
    flat = np.where(idx[None] >= 0, np.arange(B)[:, None, None] * L + idx[None], -1)
    frames = F.mul2(_gather_static(x, flat), F.broadcast(
        _array(impl.win.reshape(1, 1, n)), (B, T, n)))              # (B, T, N)
    c, s = _dft_mats(n)
    fr = _reshape(frames, (B * T, n))
    outs = []
    for m in (c.T, -s.T):
        z = F.affine(fr, _array(m), base_axis=1)                     # (B*T, K)
        outs.append(F.transpose(_reshape(z, (B, T, m.shape[1])), (0, 2, 1)))
    return outs


@graph_form('ISTFT')
def _istft(f, inputs):
    impl = _impl(f)
    yr, yi = inputs
    B, K, T = yr.shape
    n = f.args['fft_size']
    parts = [F.affine(_reshape(F.transpose(v, (0, 2, 1)), (B * T, K)), _array(m), base_axis=1)
             for v, m in ((yr, impl.C), (yi, impl.S))]
    frames = F.mul2(F.add2(*parts), F.broadcast(_array(impl.win.reshape(1, n)), (B * T, n)))
    idx = (np.arange(B)[:, None, None] * impl.total + impl.pos[None]).reshape(B * T, n)
    sig = _scatter_static(frames, idx, (B, impl.total))
    return F.slice(sig, (0, impl.cut), (B, impl.total - impl.cut), (1, 1))


@graph_form('WarpByFlow')
def _warp_by_flow(f, inputs):
    data, flow = inputs
    N, C, H, W = data.shape

    def coord(k, size, grid):
        s = F.add2(_reshape(F.slice(flow, (0, k, 0, 0), (N, k + 1, H, W), (1, 1, 1, 1)),
                            (N, H, W)), F.broadcast(_array(grid), (N, H, W)))
        s = F.minimum_scalar(F.maximum_scalar(s, 0.0), float(size - 1))
        s0 = F.unlink(F.floor(s))
        s1 = F.minimum_scalar(F.add_scalar(s0, 1.0), float(size - 1))
        return s0, s1, F.sub2(s, s0)

    x0, x1, wx = coord(0, W, np.arange(W, dtype=np.float32).reshape(1, 1, W))
    y0, y1, wy = coord(1, H, np.arange(H, dtype=np.float32).reshape(1, H, 1))
    base = (np.arange(N)[:, None, None, None] * C + np.arange(C)[None, :, None, None]) * (H * W)
    base = _array(np.broadcast_to(base, (N, C, H, W)))
    flat = _reshape(data, (N * C * H * W,))

    def corner(yy, xx):
        pos = F.add2(F.mul_scalar(yy, float(W)), xx)                 # (N, H, W)
        pos = F.add2(base, F.broadcast(_reshape(pos, (N, 1, H, W)), (N, C, H, W)))
        return F.gather_nd(flat, _reshape(pos, (1, N, C, H, W)))

    wx4 = F.broadcast(_reshape(wx, (N, 1, H, W)), (N, C, H, W))
    wy4 = F.broadcast(_reshape(wy, (N, 1, H, W)), (N, C, H, W))
    a, b, c, e = corner(y0, x0), corner(y0, x1), corner(y1, x0), corner(y1, x1)
    top = F.add2(a, F.mul2(wx4, F.sub2(b, a)))
    bottom = F.add2(c, F.mul2(wx4, F.sub2(e, c)))
    return F.add2(top, F.mul2(wy4, F.sub2(bottom, top)))
