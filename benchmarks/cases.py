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
