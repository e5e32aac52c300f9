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


CASES = {
    'affine': _affine,
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
