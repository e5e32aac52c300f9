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
}
