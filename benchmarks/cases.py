"""Benchmark inputs for every row of the function table.

``CASES[name](size)`` returns ``(inputs, args, numpy_fn, torch_fn)``: a list of
float32 (or int32 label) NumPy arrays, the keyword arguments of the ``F.*``
call, and the same computation written with NumPy and with PyTorch (``None``
where there is no sensible equivalent).  ``torch_fn`` takes torch tensors.
A new table row must add an entry here; tests/test_registry.py checks that.
"""
import numpy as np

SIZES = {'small': 1 << 10, 'large': 1 << 20}


def _rng():
    return np.random.RandomState(0)


def _vec(n, lo=None, hi=None):
    r = _rng()
    if lo is None:
        return r.randn(n).astype(np.float32)
    return r.uniform(lo, hi, n).astype(np.float32)


def _mat(n):
    """A (rows, 256)-ish matrix with about n elements."""
    cols = 256 if n >= 256 else n
    return _rng().randn(max(n // cols, 1), cols).astype(np.float32)


def unary(np_fn, torch_name, lo=None, hi=None, args=None, torch_fn=None):
    def make(size):
        n = SIZES[size]
        tf = torch_fn or (lambda t, x: getattr(t, torch_name)(x))
        return [_vec(n, lo, hi)], dict(args or {}), np_fn, tf
    return make


def binary(np_fn, torch_name, dom0=(None, None), dom1=(None, None)):
    """dom0 / dom1: (lo, hi) of a uniform domain for each input (None: normal)."""
    def make(size):
        n = SIZES[size]
        return ([_vec(n, *dom0), _vec(n, *dom1)[::-1].copy()], {}, np_fn,
                lambda t, a, b: getattr(t, torch_name)(a, b))
    return make


def _affine(size):
    n = 64 if size == 'small' else 1024
    r = _rng()
    x = r.randn(n, n).astype(np.float32)
    w = r.randn(n, n).astype(np.float32)
    b = r.randn(n).astype(np.float32)
    return ([x, w, b], {}, lambda x, w, b: x @ w + b,
            lambda t, x, w, b: t.addmm(b, x, w))


def _reduce(np_fn, torch_name):
    def make(size):
        x = _mat(SIZES[size])
        return ([x], {'axis': 1}, lambda x, axis=1: np_fn(x, axis=axis),
                lambda t, x: getattr(t, torch_name)(x, dim=1))
    return make


def _np_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _np_log_softmax(x, axis=-1):
    m = x - x.max(axis=axis, keepdims=True)
    return m - np.log(np.exp(m).sum(axis=axis, keepdims=True))


def _softmax(kind):
    def make(size):
        x = _mat(SIZES[size])
        if kind == 'softmax':
            return [x], {}, _np_softmax, lambda t, x: t.softmax(x, dim=-1)
        return [x], {}, _np_log_softmax, lambda t, x: t.log_softmax(x, dim=-1)
    return make


def _sce(size):
    x = _mat(SIZES[size])
    t = _rng().randint(0, x.shape[1], size=(x.shape[0], 1)).astype(np.int32)

    def np_fn(x, t):
        return -np.take_along_axis(_np_log_softmax(x), t.astype(np.int64), axis=1)

    def torch_fn(torch, x, t):
        return torch.nn.functional.cross_entropy(x, t[:, 0].long(), reduction='none')
    return [x, t], {}, np_fn, torch_fn


def _reshape(size):
    x = _mat(SIZES[size])
    return ([x], {'shape': (-1,)}, lambda x, shape=(-1,): x.reshape(shape),
            lambda t, x: x.reshape(-1))


def _slice(size):
    x = _mat(SIZES[size])
    args = {'start': (0, 0), 'stop': x.shape, 'step': (1, 2)}
    return ([x], args, lambda x, **a: x[:, ::2].copy(),
            lambda t, x: x[:, ::2].clone())


def _sink(size):
    return [_vec(SIZES[size])], {}, None, None


# ---- neural-network layers ---------------------------------------

def _embed(size):
    rows, width, n = (1000, 64, (16, 64)) if size == 'small' else (30000, 256, (64, 256))
    r = _rng()
    x = r.randint(0, rows, size=n).astype(np.int32)
    w = r.randn(rows, width).astype(np.float32)
    return ([x, w], {}, lambda x, w: w[x],
            lambda t, x, w: t.nn.functional.embedding(x.long(), w))


def _recurrent_np(cell, x, h, c, w0, w, b, num_layers=1, nonlinearity='tanh',
                  bidirectional=False):
    """The recurrent layers step by step in NumPy (NNabla's weight layouts)."""
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    T, B, _ = x.shape
    L, D, _, H = h.shape
    inp = x
    for l in range(num_layers):
        W = w0 if l == 0 else w[l - 1]
        n_in = inp.shape[2]
        out = np.empty((T, B, D * H), np.float32)
        for d in range(D):
            hc = h[l, d]
            cc = c[l, d] if c is not None else None
            Wd = W[d].reshape(-1, n_in + H)
            bd = b[l, d].reshape(-1)
            for t in (range(T) if d == 0 else range(T - 1, -1, -1)):
                if cell == 'gru':
                    g = inp[t] @ Wd[:, :n_in].T + bd[:3 * H]
                    u = hc @ Wd[:, n_in:].T
                    r = sig(g[:, :H] + u[:, :H])
                    z = sig(g[:, H:2 * H] + u[:, H:2 * H])
                    n = np.tanh(g[:, 2 * H:] + r * (u[:, 2 * H:] + bd[3 * H:]))
                    hc = (1 - z) * n + z * hc
                else:
                    g = np.concatenate([inp[t], hc], axis=1) @ Wd.T + bd
                    if cell == 'rnn':
                        hc = np.tanh(g) if nonlinearity == 'tanh' else np.maximum(g, 0)
                    else:
                        i, f, o = sig(g[:, :H]), sig(g[:, H:2 * H]), sig(g[:, 3 * H:])
                        cc = f * cc + i * np.tanh(g[:, 2 * H:3 * H])
                        hc = o * np.tanh(cc)
                out[t, :, d * H:(d + 1) * H] = hc
        inp = out
    return inp


def _recurrent(cell):
    def make(size):
        T, B, I, H, L, D = (8, 4, 32, 32, 1, 1) if size == 'small' else (32, 16, 128, 128, 2, 2)
        r = _rng()
        G = {'rnn': (), 'lstm': (4,), 'gru': (3,)}[cell]
        GB = {'rnn': (), 'lstm': (4,), 'gru': (4,)}[cell]
        x = r.randn(T, B, I).astype(np.float32)
        h = r.randn(L, D, B, H).astype(np.float32)
        c = r.randn(L, D, B, H).astype(np.float32)
        s = 1.0 / np.sqrt(I + H)
        w0 = (r.randn(*((D,) + G + (H, I + H))) * s).astype(np.float32)
        w = (r.randn(*((max(L - 1, 1), D) + G + (H, D * H + H))) * s).astype(np.float32)
        b = r.randn(*((L, D) + GB + (H,))).astype(np.float32)
        args = {'num_layers': L, 'bidirectional': D == 2}
        if cell == 'lstm':
            return ([x, h, c, w0, w, b], args,
                    lambda x, h, c, w0, w, b, **a: _recurrent_np('lstm', x, h, c, w0, w, b, **a),
                    None)
        return ([x, h, w0, w, b], args,
                lambda x, h, w0, w, b, **a: _recurrent_np(cell, x, h, None, w0, w, b, **a), None)
    return make


def _mha_any(xp, softmax, q, k, v, qw, kw, vw, ow, qb, kb, vb, ob, num_heads):
    """Multi-head attention with NumPy or PyTorch (``xp``)."""
    Lt, B, _ = q.shape
    Ls = k.shape[0]
    E, Ev = qw.shape[1], vw.shape[1]
    hd, hv = E // num_heads, Ev // num_heads
    qp = ((q @ qw + qb) * hd ** -0.5).reshape(Lt, B, num_heads, hd)
    kp = (k @ kw + kb).reshape(Ls, B, num_heads, hd)
    vp = (v @ vw + vb).reshape(Ls, B, num_heads, hv)
    p = softmax(xp.einsum('tbhd,sbhd->bhts', qp, kp))
    o = xp.einsum('bhts,sbhd->tbhd', p, vp).reshape(Lt, B, Ev)
    return o @ ow + ob


def _np_softmax_last(a):
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _mha(size):
    Lt, Ls, B, E, H = (16, 16, 4, 64, 4) if size == 'small' else (128, 128, 16, 256, 8)
    r = _rng()
    q, k, v = (r.randn(n, B, E).astype(np.float32) for n in (Lt, Ls, Ls))
    ws = [(r.randn(E, E) / np.sqrt(E)).astype(np.float32) for _ in range(4)]
    bs = [r.randn(E).astype(np.float32) for _ in range(4)]
    return ([q, k, v] + ws + bs, {'num_heads': H},
            lambda *a, num_heads: _mha_any(np, _np_softmax_last, *a, num_heads),
            lambda t, *a: _mha_any(t, lambda s: t.softmax(s, dim=-1), *a, H))


def _patch_correlation(size):
    N, C, Hh, W, shift = (1, 8, 16, 16, 2) if size == 'small' else (2, 64, 48, 64, 4)
    r = _rng()
    x1, x2 = (r.randn(N, C, Hh, W).astype(np.float32) for _ in range(2))
    args = {'shift': shift}

    def np_fn(x1, x2, shift):
        p2 = np.pad(x2, ((0, 0), (0, 0), (shift, shift), (shift, shift)))
        return np.stack([np.stack([np.sum(x1 * p2[:, :, sy:sy + Hh, sx:sx + W], axis=1)
                                   for sx in range(2 * shift + 1)], axis=1)
                         for sy in range(2 * shift + 1)], axis=1)
    return [x1, x2], args, np_fn, None
def _axis1(np_fn, torch_fn, positive=False):
    """A reduction over axis 1 of a (rows, 256) matrix."""
    def make(size):
        x = _mat(SIZES[size])
        if positive:   # products stay finite
            x = (1.0 + 1e-3 * x).astype(np.float32)
        return [x], {'axis': 1}, lambda x, axis=1: np_fn(x, axis=axis), torch_fn
    return make


def _reduce_all(np_fn, torch_name):
    def make(size):
        return [_vec(SIZES[size])], {}, np_fn, lambda t, x: getattr(t, torch_name)(x)
    return make


def _nary(np_fn, torch_fn):
    def make(size):
        n = SIZES[size]
        xs = [_vec(n), _vec(n, 0.5, 1.5), _vec(n)[::-1].copy()]
        return xs, {}, np_fn, torch_fn
    return make


def _grid(n):
    """Values from a small set, with zeros and ties."""
    return _rng().choice(np.array([-1.0, 0.0, 0.5, 1.0], np.float32), size=n)


def _logical(np_fn, torch_name):
    def make(size):
        n = SIZES[size]
        return ([_grid(n), _grid(n)[::-1].copy()], {}, np_fn,
                lambda t, a, b: getattr(t, torch_name)(a, b))
    return make


def _scalar_cmp(np_op, torch_op, val=0.5):
    return unary(lambda x: np_op(x, val), None, args={'val': val},
                 torch_fn=lambda t, x: torch_op(x, val))


def _logical_scalar(np_fn, torch_fn):
    def make(size):
        return ([_grid(SIZES[size])], {'val': True}, lambda x: np_fn(x != 0, True),
                lambda t, x: torch_fn(t, x))
    return make


def _specials(n, nan=True, inf=True):
    x = _vec(n)
    extra = np.array(([np.nan] if nan else []) + ([np.inf, -np.inf] if inf else []), np.float32)
    r = _rng()
    mask = r.rand(n) < 0.1
    x[mask] = r.choice(extra, size=int(mask.sum()))
    return x


def _special_unary(np_fn, torch_fn, nan=True, inf=True):
    def make(size):
        return [_specials(SIZES[size], nan, inf)], {}, np_fn, torch_fn
    return make


def _where(size):
    n = SIZES[size]
    return ([_grid(n), _vec(n), _vec(n)[::-1].copy()], {},
            lambda c, a, b: np.where(c != 0, a, b), lambda t, c, a, b: t.where(c != 0, a, b))


def _constant(size):
    n = SIZES[size]
    return ([], {'val': 1.5, 'shape': (n,)}, lambda shape: np.full(shape, 1.5, np.float32),
            None)


def _arange(size):
    n = SIZES[size]
    return ([], {'start': 0.0, 'stop': float(n), 'step': 1.0},
            lambda start, stop, step: np.arange(start, stop, step, dtype=np.float32), None)


def _np_matrix_diag(x):
    k = x.shape[-1]
    y = np.zeros(x.shape + (k,), x.dtype)
    i = np.arange(k)
    y[..., i, i] = x
    return y


def _matrix_diag(size):
    x = _rng().randn(SIZES[size] // 8, 8).astype(np.float32)
    return [x], {}, _np_matrix_diag, lambda t, x: t.diag_embed(x)


def _matrix_diag_part(size):
    x = _rng().randn(max(SIZES[size] // 1024, 1), 32, 32).astype(np.float32)
    return ([x], {}, lambda x: np.diagonal(x, axis1=-2, axis2=-1).copy(),
            lambda t, x: t.diagonal(x, dim1=-2, dim2=-1).clone())


def _batch_matmul(size):
    b, m = (4, 16) if size == 'small' else (64, 128)
    r = _rng()
    a = r.randn(b, m, m).astype(np.float32)
    w = r.randn(b, m, m).astype(np.float32)
    return [a, w], {}, np.matmul, lambda t, a, w: t.matmul(a, w)


# ---- activations and normalization ----------------------------

def _nchw(size, c=16):
    """An (N, c, H, W) float32 array of about SIZES[size] elements."""
    n = SIZES[size]
    hw = 4 if n <= 4096 else 32
    return _rng().randn(max(n // (c * hw * hw), 1), c, hw, hw).astype(np.float32)


def _cparams(c=16, nd=4, axis=1):
    r = _rng()
    shape = tuple(c if i == axis else 1 for i in range(nd))
    return (r.randn(*shape).astype(np.float32),                      # beta
            r.uniform(0.5, 1.5, size=shape).astype(np.float32))     # gamma


def _np_standardize(x, kept, eps=1e-5):
    red = tuple(i for i in range(x.ndim) if i not in kept)
    return (x - x.mean(axis=red, keepdims=True)) / np.sqrt(x.var(axis=red, keepdims=True) + eps)


def _bn(kind):
    def make(size):
        x = _nchw(size)
        beta, gamma = _cparams()
        mean, var = np.zeros_like(beta), np.ones_like(beta)
        inputs = [x, beta, gamma, mean, var]
        if kind == 'fused':
            inputs.append(_rng().randn(*x.shape).astype(np.float32))

        def np_fn(x, beta, gamma, mean, var, z=None, **kw):
            y = _np_standardize(x, (1,)) * gamma + beta
            return y if z is None else np.maximum(y + z, 0)

        def torch_fn(t, x, beta, gamma, mean, var, z=None):
            y = t.nn.functional.batch_norm(x, mean.detach().reshape(-1), var.detach().reshape(-1),
                                           gamma.reshape(-1), beta.reshape(-1), training=True)
            return y if z is None else t.relu(y + z)
        return inputs, {}, np_fn, torch_fn
    return make


def _concat_act(np_act, torch_act):
    def make(size):
        x = _mat(SIZES[size])
        return ([x], {}, lambda x, **kw: np.concatenate([np_act(x), np_act(-x)], axis=1),
                lambda t, x: t.cat([torch_act(t, x), torch_act(t, -x)], 1))
    return make


def _prelu(size):
    x = _nchw(size)
    w = _rng().uniform(0.0, 0.5, size=16).astype(np.float32)
    return ([x, w], {}, lambda x, w: np.where(x >= 0, x, x * w.reshape(1, -1, 1, 1)),
            lambda t, x, w: t.nn.functional.prelu(x, w))


def _mean_subtraction(size):
    x = _mat(SIZES[size])
    return ([x, np.zeros(x.shape[1], np.float32), np.zeros(1, np.float32)], {},
            lambda x, m, t: x - x.mean(axis=0), None)


def _clip_value(grad):
    def make(size):
        x = _vec(SIZES[size])
        lo, hi = np.full_like(x, -0.5), np.full_like(x, 0.5)
        if grad:
            return [x, lo, hi], {}, lambda x, lo, hi: x.copy(), None
        return [x, lo, hi], {}, np.clip, lambda t, x, lo, hi: t.clamp(x, lo, hi)
    return make


def _clip_norm(size):
    x = _mat(SIZES[size])

    def torch_fn(t, x):
        return x / t.clamp(t.linalg.vector_norm(x, dim=1, keepdim=True), min=1.0)
    return ([x], {'clip_norm': 1.0, 'axis': 1},
            lambda x, **kw: x / np.maximum(np.sqrt((x * x).sum(axis=1, keepdims=True)), 1.0),
            torch_fn)


def _clip_grad_norm(size):
    return [_mat(SIZES[size])], {'clip_norm': 1.0, 'axes': (1,)}, lambda x, **kw: x.copy(), None


def _layer_norm(size):
    x = _mat(SIZES[size])
    beta, gamma = _cparams(x.shape[1], 2, 1)
    return ([x, beta, gamma], {},
            lambda x, b, g, **kw: _np_standardize(x, (0,)) * g + b,
            lambda t, x, b, g: t.nn.functional.layer_norm(x, x.shape[1:], g.reshape(-1),
                                                          b.reshape(-1)))


def _instance_norm(size):
    x = _nchw(size)
    beta, gamma = _cparams()
    return ([x, beta, gamma], {},
            lambda x, b, g, **kw: _np_standardize(x, (0, 1)) * g + b,
            lambda t, x, b, g: t.nn.functional.instance_norm(x, weight=g.reshape(-1),
                                                             bias=b.reshape(-1)))


def _group_norm(size):
    x = _nchw(size)
    beta, gamma = _cparams()

    def np_fn(x, b, g, num_groups=4, **kw):
        s = x.shape
        v = x.reshape(s[0], num_groups, -1)
        return _np_standardize(v, (0, 1)).reshape(s) * g + b
    return ([x, beta, gamma], {'num_groups': 4}, np_fn,
            lambda t, x, b, g: t.nn.functional.group_norm(x, 4, g.reshape(-1), b.reshape(-1)))


def _weight_std(size):
    n = SIZES[size]
    w = _rng().randn(max(n // 256, 1), 16, 4, 4).astype(np.float32)

    def torch_fn(t, w):
        m = w.mean(dim=(1, 2, 3), keepdim=True)
        v = w.var(dim=(1, 2, 3), keepdim=True, unbiased=False)
        return (w - m) / t.sqrt(v + 1e-5)
    return [w], {}, lambda w, **kw: _np_standardize(w, (0,)), torch_fn


def _np_elu(x, alpha=1.0):
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


def _np_softplus(x):
    return np.logaddexp(0, x)



# ---- neural network layers: convolution and pooling -----------------------

def _img(size, small=(2, 16, 16, 16), large=(16, 64, 56, 56)):
    return _rng().randn(*(small if size == 'small' else large)).astype(np.float32)


def _conv(size):
    x = _img(size)
    c = x.shape[1]
    r = _rng()
    w = (r.randn(c, c, 3, 3) * 0.1).astype(np.float32)
    b = r.randn(c).astype(np.float32)
    return ([x, w, b], {'pad': (1, 1)}, None,
            lambda t, x, w, b: t.nn.functional.conv2d(x, w, b, padding=1))


def _depthwise_conv(size):
    x = _img(size)
    c = x.shape[1]
    r = _rng()
    w = (r.randn(c, 3, 3) * 0.1).astype(np.float32)
    b = r.randn(c).astype(np.float32)
    return ([x, w, b], {'pad': (1, 1)}, None,
            lambda t, x, w, b: t.nn.functional.conv2d(x, w.unsqueeze(1), b, padding=1,
                                                      groups=x.shape[1]))


def _deconv(size):
    x = _img(size, (2, 16, 8, 8), (16, 64, 28, 28))
    c = x.shape[1]
    r = _rng()
    w = (r.randn(c, c // 2, 4, 4) * 0.1).astype(np.float32)
    b = r.randn(c // 2).astype(np.float32)
    return ([x, w, b], {'pad': (1, 1), 'stride': (2, 2)}, None,
            lambda t, x, w, b: t.nn.functional.conv_transpose2d(x, w, b, stride=2, padding=1))


def _depthwise_deconv(size):
    x = _img(size, (2, 16, 8, 8), (16, 64, 28, 28))
    c = x.shape[1]
    r = _rng()
    w = (r.randn(c, 4, 4) * 0.1).astype(np.float32)
    b = r.randn(c).astype(np.float32)
    return ([x, w, b], {'pad': (1, 1), 'stride': (2, 2)}, None,
            lambda t, x, w, b: t.nn.functional.conv_transpose2d(
                x, w.unsqueeze(1), b, stride=2, padding=1, groups=x.shape[1]))


def _asconv(size):
    b, c, h, k = (2, 3, 16, 5) if size == 'small' else (4, 3, 64, 13)
    r = _rng()
    o = h - k + 1
    x = r.randn(b, c, h, h).astype(np.float32)
    kv = r.randn(b, k, o, o).astype(np.float32)
    kh = r.randn(b, k, o, o).astype(np.float32)
    return [x, kv, kh], {}, None, None


def _pool(kind):
    def np_fn(x, kernel, **_):
        n, c, h, w = x.shape
        v = x[:, :, :h // 2 * 2, :w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2)
        return {'max': v.max, 'average': v.mean, 'sum': v.sum}[kind](axis=(3, 5))

    def torch_fn(t, x):
        f = t.nn.functional
        if kind == 'max':
            return f.max_pool2d(x, 2)
        return f.avg_pool2d(x, 2) * (4.0 if kind == 'sum' else 1.0)

    def make(size):
        return [_img(size)], {'kernel': (2, 2)}, np_fn, torch_fn
    return make


def _global_avg(size):
    return ([_img(size)], {}, lambda x: x.mean(axis=(2, 3), keepdims=True),
            lambda t, x: x.mean(dim=(2, 3), keepdim=True))


def _unpool(size):
    x = _img(size, (2, 16, 8, 8), (16, 64, 28, 28))
    return ([x], {'kernel': (2, 2)},
            lambda x, kernel: np.repeat(np.repeat(x, 2, axis=2), 2, axis=3),
            lambda t, x: x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))

CASES = {
    'affine': _affine,
    'embed': _embed,
    'rnn': _recurrent('rnn'),
    'lstm': _recurrent('lstm'),
    'gru': _recurrent('gru'),
    'multi_head_attention': _mha,
    'patch_correlation': _patch_correlation,
    'convolution': _conv,
    'depthwise_convolution': _depthwise_conv,
    'deconvolution': _deconv,
    'depthwise_deconvolution': _depthwise_deconv,
    'adaptive_separable_convolution': _asconv,
    'max_pooling': _pool('max'),
    'average_pooling': _pool('average'),
    'sum_pooling': _pool('sum'),
    'global_average_pooling': _global_avg,
    'unpooling': _unpool,
    'relu': unary(lambda x: np.maximum(x, 0), 'relu'),
    'sigmoid': unary(lambda x: 1 / (1 + np.exp(-x)), 'sigmoid'),
    'tanh': unary(np.tanh, 'tanh'),
    'softmax': _softmax('softmax'),
    'log_softmax': _softmax('log_softmax'),
    'sum': _reduce(np.sum, 'sum'),
    'mean': _reduce(np.mean, 'mean'),
    'add2': binary(np.add, 'add'),
    'sub2': binary(np.subtract, 'sub'),
    'mul2': binary(np.multiply, 'mul'),
    'div2': binary(np.divide, 'div', dom1=(0.5, 2.0)),
    'add_scalar': unary(lambda x: x + 1.5, None, args={'val': 1.5},
                        torch_fn=lambda t, x: x + 1.5),
    'mul_scalar': unary(lambda x: x * 1.5, None, args={'val': 1.5},
                        torch_fn=lambda t, x: x * 1.5),
    'pow_scalar': unary(lambda x: np.power(x, 1.5), None, 0.5, 2.0, args={'val': 1.5},
                        torch_fn=lambda t, x: t.pow(x, 1.5)),
    'r_sub_scalar': unary(lambda x: 1.5 - x, None, args={'val': 1.5},
                          torch_fn=lambda t, x: 1.5 - x),
    'r_div_scalar': unary(lambda x: 1.5 / x, None, 0.5, 2.0, args={'val': 1.5},
                          torch_fn=lambda t, x: 1.5 / x),
    'r_pow_scalar': unary(lambda x: np.power(1.5, x), None, args={'val': 1.5},
                          torch_fn=lambda t, x: t.pow(1.5, x)),
    'pow2': binary(np.power, 'pow', dom0=(0.5, 2.0)),
    'abs': unary(np.abs, 'abs'),
    'exp': unary(np.exp, 'exp'),
    'log': unary(np.log, 'log', 0.5, 2.0),
    'identity': unary(np.copy, 'clone'),
    'softmax_cross_entropy': _sce,
    'reshape': _reshape,
    'slice': _slice,
    'sink': _sink,
    # reduction
    'max': _axis1(np.max, lambda t, x: t.amax(x, dim=1)),
    'min': _axis1(np.min, lambda t, x: t.amin(x, dim=1)),
    'prod': _axis1(np.prod, lambda t, x: t.prod(x, dim=1), positive=True),
    'reduce_sum': _reduce_all(np.sum, 'sum'),
    'reduce_mean': _reduce_all(np.mean, 'mean'),
    # arithmetic
    'add_n': _nary(lambda a, b, c: a + b + c, lambda t, a, b, c: a + b + c),
    'mul_n': _nary(lambda a, b, c: a * b * c, lambda t, a, b, c: a * b * c),
    # logical
    'equal': _logical(np.equal, 'eq'),
    'not_equal': _logical(np.not_equal, 'ne'),
    'greater': _logical(np.greater, 'gt'),
    'greater_equal': _logical(np.greater_equal, 'ge'),
    'less': _logical(np.less, 'lt'),
    'less_equal': _logical(np.less_equal, 'le'),
    'logical_and': _logical(lambda a, b: np.logical_and(a != 0, b != 0), 'logical_and'),
    'logical_or': _logical(lambda a, b: np.logical_or(a != 0, b != 0), 'logical_or'),
    'logical_xor': _logical(lambda a, b: np.logical_xor(a != 0, b != 0), 'logical_xor'),
    'equal_scalar': _scalar_cmp(np.equal, lambda x, v: x == v),
    'not_equal_scalar': _scalar_cmp(np.not_equal, lambda x, v: x != v),
    'greater_scalar': _scalar_cmp(np.greater, lambda x, v: x > v),
    'greater_equal_scalar': _scalar_cmp(np.greater_equal, lambda x, v: x >= v),
    'less_scalar': _scalar_cmp(np.less, lambda x, v: x < v),
    'less_equal_scalar': _scalar_cmp(np.less_equal, lambda x, v: x <= v),
    'logical_and_scalar': _logical_scalar(np.logical_and, lambda t, x: t.logical_and(x, t.tensor(True))),
    'logical_or_scalar': _logical_scalar(np.logical_or, lambda t, x: t.logical_or(x, t.tensor(True))),
    'logical_xor_scalar': _logical_scalar(np.logical_xor, lambda t, x: t.logical_xor(x, t.tensor(True))),
    'logical_not': unary(np.logical_not, 'logical_not'),
    'sign': unary(np.sign, 'sign'),
    'minimum2': binary(np.minimum, 'minimum'),
    'maximum2': binary(np.maximum, 'maximum'),
    'minimum_scalar': unary(lambda x: np.minimum(x, 0.5), None, args={'val': 0.5},
                            torch_fn=lambda t, x: t.clamp(x, max=0.5)),
    'maximum_scalar': unary(lambda x: np.maximum(x, 0.5), None, args={'val': 0.5},
                            torch_fn=lambda t, x: t.clamp(x, min=0.5)),
    'isnan': _special_unary(np.isnan, lambda t, x: t.isnan(x)),
    'isinf': _special_unary(np.isinf, lambda t, x: t.isinf(x)),
    'reset_nan': _special_unary(lambda x: np.where(np.isnan(x), np.float32(0), x),
                                lambda t, x: t.where(t.isnan(x), 0.0, x), inf=False),
    'reset_inf': _special_unary(lambda x: np.where(np.isinf(x), np.float32(0), x),
                                lambda t, x: t.where(t.isinf(x), 0.0, x), nan=False),
    'where': _where,
    # math
    'constant': _constant,
    'arange': _arange,
    'round': unary(np.round, 'round'),
    'ceil': unary(np.ceil, 'ceil'),
    'floor': unary(np.floor, 'floor'),
    'matrix_diag': _matrix_diag,
    'matrix_diag_part': _matrix_diag_part,
    'batch_matmul': _batch_matmul,
    'sin': unary(np.sin, 'sin'),
    'cos': unary(np.cos, 'cos'),
    'tan': unary(np.tan, 'tan', -1.2, 1.2),
    'sinh': unary(np.sinh, 'sinh'),
    'cosh': unary(np.cosh, 'cosh'),
    'asin': unary(np.arcsin, 'asin', -0.9, 0.9),
    'acos': unary(np.arccos, 'acos', -0.9, 0.9),
    'atan': unary(np.arctan, 'atan'),
    'atan2': binary(np.arctan2, 'atan2'),
    'asinh': unary(np.arcsinh, 'asinh'),
    'acosh': unary(np.arccosh, 'acosh', 1.2, 3.0),
    'atanh': unary(np.arctanh, 'atanh', -0.8, 0.8),
    # activations
    'swish': unary(lambda x: x / (1 + np.exp(-x)), None,
                   torch_fn=lambda t, x: t.nn.functional.silu(x)),
    'elu': unary(_np_elu, None, torch_fn=lambda t, x: t.nn.functional.elu(x)),
    'selu': unary(lambda x: 1.05070098735548 * _np_elu(x, 1.673263242354377), None,
                  torch_fn=lambda t, x: t.nn.functional.selu(x)),
    'crelu': _concat_act(lambda x: np.maximum(x, 0), lambda t, x: t.relu(x)),
    'celu': _concat_act(_np_elu, lambda t, x: t.nn.functional.elu(x)),
    'gelu': unary(lambda x: 0.5 * x * (1 + np.tanh(0.7978845608 * (x + 0.044715 * x ** 3))),
                  None, torch_fn=lambda t, x: t.nn.functional.gelu(x, approximate='tanh')),
    'prelu': _prelu,
    'leaky_relu': unary(lambda x, alpha=0.1: np.where(x > 0, x, alpha * x), None,
                        args={'alpha': 0.1},
                        torch_fn=lambda t, x: t.nn.functional.leaky_relu(x, 0.1)),
    'relu6': unary(lambda x: np.clip(x, 0, 6), None, torch_fn=lambda t, x: t.nn.functional.relu6(x)),
    'hard_sigmoid': unary(lambda x: np.clip(0.2 * x + 0.5, 0, 1), None,
                          torch_fn=lambda t, x: t.clamp(0.2 * x + 0.5, 0, 1)),
    'hard_tanh': unary(lambda x: np.clip(x, -1, 1), None,
                       torch_fn=lambda t, x: t.nn.functional.hardtanh(x)),
    'log_sigmoid': unary(lambda x: -_np_softplus(-x), None,
                         torch_fn=lambda t, x: t.nn.functional.logsigmoid(x)),
    'softplus': unary(_np_softplus, None, torch_fn=lambda t, x: t.nn.functional.softplus(x)),
    'softsign': unary(lambda x: x / (1 + np.abs(x)), None,
                      torch_fn=lambda t, x: t.nn.functional.softsign(x)),
    'tanh_shrink': unary(lambda x: x - np.tanh(x), None,
                         torch_fn=lambda t, x: t.nn.functional.tanhshrink(x)),
    'sinc': unary(lambda x: np.sinc(x / np.pi), None, torch_fn=lambda t, x: t.sinc(x / np.pi)),
    # normalization
    'batch_normalization': _bn('bn'),
    'fused_batch_normalization': _bn('fused'),
    'sync_batch_normalization': _bn('sync'),
    'mean_subtraction': _mean_subtraction,
    'clip_by_value': _clip_value(False),
    'clip_grad_by_value': _clip_value(True),
    'clip_by_norm': _clip_norm,
    'clip_grad_by_norm': _clip_grad_norm,
    'layer_normalization': _layer_norm,
    'instance_normalization': _instance_norm,
    'group_normalization': _group_norm,
    'weight_standardization': _weight_std,
}


# ---- array manipulation ---------------------------------------------

def _arr(shape_small, shape_large):
    def shape(size):
        return shape_small if size == 'small' else shape_large
    return shape


_img_shape = _arr((4, 4, 8, 8), (32, 16, 64, 64))


def _x4(size):
    return _rng().randn(*_img_shape(size)).astype(np.float32)


def _plain(fn):
    """fn called without the F.* keyword arguments (the NumPy form has them built in)."""
    return None if fn is None else (lambda *xs, **_: fn(*xs))


def _case(np_fn, torch_fn=None, args=None, n=1):
    def make(size):
        xs = [_x4(size) for _ in range(n)]
        return xs, dict(args or {}), _plain(np_fn), torch_fn
    return make


def _gather_nd(size):
    x = _x4(size)
    r = _rng()
    idx = np.stack([r.randint(0, x.shape[0], 64), r.randint(0, x.shape[1], 64)])
    return [x, idx], {}, _plain(lambda x, i: x[tuple(i)]), None


def _scatter_nd(size):
    x = _x4(size)
    idx = np.stack([np.arange(x.shape[0]), np.zeros(x.shape[0], np.int64)])
    shape = (x.shape[0], 2) + x.shape[1:]
    data = x

    def ref(d, i, shape=shape):
        y = np.zeros(shape, np.float32)
        y[tuple(i)] = d
        return y
    return [data, idx], {'shape': shape}, ref, None


def _one_hot(size):
    n = 64 if size == 'small' else 4096
    lab = _rng().randint(0, 100, (n, 1)).astype(np.int32)
    return [lab], {'shape': (100,)}, _plain(lambda l: np.eye(100, dtype=np.float32)[l[:, 0]]), None


def _square(size):
    b, n = (8, 4) if size == 'small' else (256, 32)
    r = _rng()
    return r.randn(b, n, n).astype(np.float32) + 4 * np.eye(n, dtype=np.float32)


def _linalg(np_fn):
    def make(size):
        return [_square(size)], {}, _plain(np_fn), None
    return make


def _sampler(args, np_fn=None):
    def make(size):
        return [], dict(args, shape=(SIZES[size],)), np_fn, None
    return make


def _random_choice(size):
    x = _mat(SIZES[size])
    w = np.abs(x) + 0.1
    return [x, w], {'shape': (8,)}, None, None


CASES.update({
    'concatenate': _case(lambda a, b: np.concatenate([a, b], -1),
                         lambda t, a, b: t.cat([a, b], -1), n=2),
    'split': _case(lambda x: tuple(np.moveaxis(x, 0, 0)), lambda t, x: t.unbind(x, 0)),
    'stack': _case(lambda a, b: np.stack([a, b]), lambda t, a, b: t.stack([a, b]), n=2),
    'gather_nd': _gather_nd,
    'scatter_nd': _scatter_nd,
    'pad': _case(lambda x: np.pad(x, [(0, 0), (0, 0), (1, 1), (2, 2)], 'reflect'), None,
                 {'pad_width': (1, 1, 2, 2), 'mode': 'reflect'}),
    'transpose': _case(lambda x: x.transpose(0, 2, 3, 1).copy(),
                       lambda t, x: x.permute(0, 2, 3, 1).contiguous(), {'axes': (0, 2, 3, 1)}),
    'broadcast': lambda size: ([_x4(size)[:, :1]], {'shape': _img_shape(size)},
                               _plain(lambda x: np.broadcast_to(x, _img_shape(size)).copy()), None),
    'broadcast_to': lambda size: ([_x4(size), _x4(size)[0, 0]], {},
                                  _plain(lambda x, y: np.broadcast_to(y, x.shape).copy()), None),
    'tile': _case(lambda x: np.tile(x, (1, 1, 2, 2)), lambda t, x: x.repeat(1, 1, 2, 2),
                  {'reps': (1, 1, 2, 2)}),
    'flip': _case(lambda x: x[..., ::-1].copy(), lambda t, x: t.flip(x, [-1]), {'axes': (3,)}),
    'shift': _case(None, None, {'shifts': (1, -2)}),
    'sort': _case(lambda x: np.sort(x, -1), lambda t, x: t.sort(x, -1)[0]),
    'one_hot': _one_hot,
    'batch_inv': _linalg(np.linalg.inv),
    'batch_det': _linalg(np.linalg.det),
    'assign': _case(lambda a, b: b.copy(), None, n=2),
    'top_k_data': _case(None, None, {'k': 5}),
    'top_k_grad': _case(lambda x: x.copy(), None, {'k': 5}),
    # stochasticity
    'rand': _sampler({}),
    'randint': _sampler({'high': 10}),
    'randn': _sampler({}),
    'rand_binomial': _sampler({'n': 4}),
    'rand_beta': _sampler({}),
    'rand_gamma': _sampler({}),
    'dropout': _case(None, lambda t, x: t.nn.functional.dropout(x, 0.5)),
    'random_choice': _random_choice,
    'random_crop': lambda size: ([_x4(size)], {'shape': (_img_shape(size)[2] - 2,) * 2}, None, None),
    'random_flip': _case(None, None, {'axes': (2, 3)}),
    'random_shift': _case(None, None, {'shifts': (2, 2)}),
})
CASES.update({
    'random_erase': _case(None, None, {'prob': 0.5, 'replacements': (0.0, 1.0)}),
    'image_augmentation': _case(None, None, {'flip_lr': True, 'angle': 0.2, 'min_scale': 0.9,
                                             'max_scale': 1.1, 'brightness': 0.1}),
})


def _with_args(make, args, torch_fn=None):
    """``make`` with extra keyword arguments; ``torch_fn`` replaces its PyTorch
    version (None: no PyTorch equivalent)."""
    def wrapped(size):
        inputs, a, np_fn, _ = make(size)
        return inputs, dict(a, **args), np_fn, torch_fn
    return wrapped


# ---- losses, validation, quantization, signal processing ----------

def _labelled(np_fn, torch_fn=None, probs=False):
    def make(size):
        x = _mat(SIZES[size])
        if probs:
            x = _np_softmax(x)
        t = _rng().randint(0, x.shape[1], size=(x.shape[0], 1)).astype(np.int32)
        return [x, t], {}, np_fn, torch_fn
    return make


def _cce_np(x, t):
    return -np.log(np.take_along_axis(x, t.astype(np.int64), axis=1))


def _top1_np(x, t):
    thresh = np.take_along_axis(x, t.astype(np.int64), axis=1)
    return ((x >= thresh).sum(axis=1, keepdims=True) > 1).astype(np.float32)


def _confusion_np(x, t):
    c = x.shape[1]
    return np.bincount(t[:, 0] * c + x.argmax(axis=1), minlength=c * c).reshape(c, c)


def _kl(size):
    x = _np_softmax(_mat(SIZES[size]))
    y = _np_softmax(_mat(SIZES[size])[::-1].copy())
    return ([x, y], {}, lambda p, q: (p * np.log(p / q)).sum(axis=1, keepdims=True),
            lambda t, p, q: (p * (p / q).log()).sum(dim=1, keepdim=True))


def _prune(size):
    x = _vec(SIZES[size])
    def np_fn(x, rate=0.9):
        a = np.abs(x)
        return np.where(a < np.sort(a)[int((a.size - 1) * rate)], 0, x)
    return [x], {}, np_fn, None


def _fft(inverse):
    def make(size):
        n = 64 if size == 'small' else 1024
        x = _rng().randn(16, n, 2).astype(np.float32)
        fn = np.fft.ifft if inverse else np.fft.fft

        def np_fn(x, signal_ndim=1):
            z = fn(x[..., 0] + 1j * x[..., 1])
            return np.stack([z.real, z.imag], -1)
        return [x], {'signal_ndim': 1}, np_fn, None
    return make


def _nms(size):
    n = 64 if size == 'small' else 1024
    r = _rng()
    x = np.concatenate([r.uniform(0.2, 0.8, (2, n, 2)), r.uniform(0.05, 0.3, (2, n, 2)),
                        r.uniform(0, 1, (2, n, 1)), r.uniform(0, 1, (2, n, 4))], -1)
    return [x.astype(np.float32)], {}, None, None


def _interpolate(size):
    n = 16 if size == 'small' else 128
    x = _rng().randn(2, 4, n, n).astype(np.float32)
    return ([x], {'output_size': (2 * n, 2 * n), 'half_pixel': True}, None,
            lambda t, x: t.nn.functional.interpolate(x, size=(2 * n, 2 * n), mode='bilinear',
                                                     align_corners=False))


def _binary_affine(scaled):
    def make(size):
        n = 64 if size == 'small' else 1024
        r = _rng()
        x = r.randn(n, n).astype(np.float32)
        w = r.randn(n, n).astype(np.float32)
        extra = [np.zeros(n, np.float32)] if scaled else []

        def np_fn(x, w, bw, *rest):
            y = x @ np.where(w >= 0, 1.0, -1.0).astype(np.float32)
            return y * np.abs(w).mean(0) if scaled else y
        return [x, w, np.zeros_like(w)] + extra, {}, np_fn, None
    return make


def _min_max_quantize(size):
    x = _vec(SIZES[size])
    one = np.ones(1, np.float32)
    return [x, -2 * one, 2 * one, 0 * one, 255 * one], {}, None, None


CASES.update({
    'sigmoid_cross_entropy': _with_args(
        binary(lambda x, t: np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x))), None,
               dom1=(0.0, 1.0)), {},
        lambda t, x, y: t.nn.functional.binary_cross_entropy_with_logits(x, y, reduction='none')),
    'binary_cross_entropy': _with_args(
        binary(lambda x, t: -(t * np.log(x) + (1 - t) * np.log(1 - x)), None,
               dom0=(0.05, 0.95), dom1=(0.0, 1.0)), {},
        lambda t, x, y: t.nn.functional.binary_cross_entropy(x, y, reduction='none')),
    'squared_error': _with_args(binary(lambda a, b: (a - b) ** 2, None), {},
                                lambda t, a, b: (a - b) ** 2),
    'absolute_error': _with_args(binary(lambda a, b: np.abs(a - b), None), {},
                                 lambda t, a, b: (a - b).abs()),
    'huber_loss': _with_args(binary(lambda a, b: np.where(np.abs(a - b) < 1, (a - b) ** 2,
                                                          2 * np.abs(a - b) - 1), None), {}),
    'epsilon_insensitive_loss': _with_args(binary(lambda a, b, epsilon=0.1: np.maximum(
        np.abs(a - b) - epsilon, 0), None), {'epsilon': 0.1}),
    'binary_error': _with_args(binary(lambda a, b: ((a >= 0.5) != (b >= 0.5)).astype(np.float32),
                                      None), {}),
    'binary_sigmoid': unary(lambda x: (x > 0).astype(np.float32), None,
                            torch_fn=lambda t, x: (x > 0).float()),
    'binary_tanh': unary(lambda x: np.where(x > 0, 1.0, -1.0).astype(np.float32), None,
                         torch_fn=lambda t, x: t.where(x > 0, 1.0, -1.0)),
    'fixed_point_quantize': unary(lambda x, **a: np.clip(np.sign(x) * np.floor(np.abs(x) / 0.0625 + 0.5)
                                                         * 0.0625, -7.9375, 7.9375), None,
                                  torch_fn=lambda t, x: t.clamp(t.round(x / 0.0625) * 0.0625,
                                                                -7.9375, 7.9375)),
    'unlink': unary(np.copy, 'clone'),
    'categorical_cross_entropy': _labelled(_cce_np, probs=True),
    'kl_multinomial': _kl,
    'top_n_error': _labelled(_top1_np),
    'confusion_matrix': _labelled(_confusion_np),
    'prune': _prune,
    'fft': _fft(False),
    'ifft': _fft(True),
    'nms_detection2d': _nms,
    'interpolate': _interpolate,
    'binary_connect_affine': _binary_affine(False),
    'binary_weight_affine': _binary_affine(True),
    'min_max_quantize': _min_max_quantize,
})
CASES['pow2_quantize'] = unary(lambda x: np.sign(x) * np.clip(2.0 ** np.round(np.log2(np.abs(x))),
                                                             2.0 ** -62, 2.0), None,
                               torch_fn=lambda t, x: t.sign(x) * t.clamp(
                                   2.0 ** t.round(t.log2(x.abs())), 2.0 ** -62, 2.0))


def _vat_noise(size):
    x = _mat(SIZES[size])
    return [x, np.zeros_like(x)], {}, None, None


def _warp_by_flow(size):
    n = 16 if size == 'small' else 128
    r = _rng()
    data = r.randn(2, 3, n, n).astype(np.float32)
    flow = (2 * r.randn(2, 2, n, n)).astype(np.float32)
    return [data, flow], {}, None, None


CASES['vat_noise'] = _vat_noise
CASES['warp_by_flow'] = _warp_by_flow


def _inq_affine(size):
    n = 64 if size == 'small' else 1024
    r = _rng()
    x = r.randn(n, n).astype(np.float32)
    w = r.randn(n, n).astype(np.float32)
    return [x, w, np.zeros_like(w)], {}, lambda x, w, i: x @ w, None


CASES['inq_affine'] = _inq_affine


def _stft(size):
    n = 1 << 12 if size == 'small' else 1 << 16
    x = _rng().randn(4, n).astype(np.float32)
    return [x], {'window_size': 256, 'stride': 64, 'fft_size': 256}, None, None


def _istft(size):
    x, args, _, _ = _stft(size)
    win = np.hanning(257)[:-1]
    xp = np.pad(x[0], ((0, 0), (128, 128)), mode='reflect')
    t = (xp.shape[1] - 256) // 64 + 1
    frames = np.stack([xp[:, i * 64:i * 64 + 256] * win for i in range(t)], 1)
    z = np.fft.rfft(frames, axis=-1).transpose(0, 2, 1)
    return ([z.real.astype(np.float32), z.imag.astype(np.float32)], args, None, None)


CASES['stft'] = _stft
CASES['istft'] = _istft


def _quantized_conv(kind):
    """binary_connect / binary_weight / inq convolution: 3x3 convolutions whose
    weights are replaced by their quantized forms."""
    def make(size):
        x = _img(size)
        c = x.shape[1]
        w = (_rng().randn(c, c, 3, 3) * 0.1).astype(np.float32)
        side = [np.zeros_like(w)] + ([np.zeros(c, np.float32)] if kind == 'binary_weight'
                                     else [])
        return [x, w] + side, {'pad': (1, 1)}, None, None
    return make


CASES.update({
    'binary_connect_convolution': _quantized_conv('binary_connect'),
    'binary_weight_convolution': _quantized_conv('binary_weight'),
    'inq_convolution': _quantized_conv('inq'),
})
