"""Parametric functions (``import nncy.parametric_functions as PF``).

Each one creates (or reuses) its parameters in a parameter scope named after
the layer (``affine``, ``conv``, ``bn``, ...), or after ``name=`` when given, and
calls the matching ``F.*`` function: ``PF.convolution(x, 16, (3, 3),
name='conv1')`` owns ``conv1/W`` and ``conv1/b``.  ``fix_parameters=True``
returns the parameters with ``need_grad`` off; ``rng`` seeds the default
random initializers.
"""
import functools

import numpy as np

import nncy.functions as F
from nncy import initializer as I
from nncy.parameter import get_parameter_or_create, parameter_scope


def parametric_function_api(scope_name=None, param_desc=None):
    """Decorator: run the function inside ``parameter_scope(name or
    scope_name)``, adding the keyword argument ``name``."""
    def deco(func):
        @functools.wraps(func)
        def wrapped(*args, name=None, **kwargs):
            with parameter_scope(name or scope_name or func.__name__):
                return func(*args, **kwargs)
        return wrapped
    return deco


def _param(name, shape, init, fix_parameters=False, need_grad=True):
    """A trainable (need_grad) or state (not need_grad) parameter of the scope."""
    as_need_grad = need_grad and not fix_parameters
    return get_parameter_or_create(name, tuple(int(s) for s in shape), init, need_grad,
                                   as_need_grad)


def _glorot(inmaps, outmaps, kernel=(1, 1), rng=None):
    return I.UniformInitializer(I.calc_uniform_lim_glorot(inmaps, outmaps, tuple(kernel)),
                                rng=rng)


def _weight_and_bias(w_shape, w_init, b_shape, b_init, fix_parameters, with_bias,
                     apply_w=None, apply_b=None):
    w = _param('W', w_shape, w_init, fix_parameters)
    if apply_w is not None:
        w = apply_w(w)
    b = None
    if with_bias:
        b = _param('b', b_shape, b_init if b_init is not None else I.ConstantInitializer(),
                   fix_parameters)
        if apply_b is not None:
            b = apply_b(b)
    return w, b


def _as_list(v):
    return list(v) if isinstance(v, (list, tuple)) else [v]


@parametric_function_api('affine')
def affine(inp, n_outmaps, base_axis=1, w_init=None, b_init=None, fix_parameters=False,
           rng=None, with_bias=True, apply_w=None, apply_b=None):
    """Fully connected layer with weight ``W`` (inmaps, *n_outmaps) and bias ``b``."""
    outs = _as_list(n_outmaps)
    inmaps = int(np.prod(inp.shape[base_axis:]))
    if w_init is None:
        w_init = _glorot(inmaps, int(np.prod(outs)), rng=rng)
    w, b = _weight_and_bias([inmaps] + outs, w_init, outs, b_init, fix_parameters, with_bias,
                            apply_w, apply_b)
    return F.affine(inp, w, b, base_axis)


def _conv_channels(inp, base_axis, channel_last):
    return inp.shape[-1] if channel_last else inp.shape[base_axis]


@parametric_function_api('conv')
def convolution(inp, outmaps, kernel, pad=None, stride=None, dilation=None, group=1,
                channel_last=False, w_init=None, b_init=None, base_axis=1,
                fix_parameters=False, rng=None, with_bias=True, apply_w=None, apply_b=None):
    """N-D convolution with weight ``W`` (outmaps, inmaps / group, *kernel)."""
    kernel = tuple(kernel)
    inmaps = _conv_channels(inp, base_axis, channel_last)
    if w_init is None:
        w_init = _glorot(inmaps, outmaps, kernel, rng)
    w_shape = ((outmaps,) + kernel + (inmaps // group,) if channel_last
               else (outmaps, inmaps // group) + kernel)
    w, b = _weight_and_bias(w_shape, w_init, (outmaps,), b_init, fix_parameters, with_bias,
                            apply_w, apply_b)
    return F.convolution(inp, w, b, base_axis, pad, stride, dilation, group, channel_last)


@parametric_function_api('depthwise_conv')
def depthwise_convolution(inp, kernel, pad=None, stride=None, dilation=None, multiplier=1,
                          w_init=None, b_init=None, base_axis=1, fix_parameters=False,
                          rng=None, with_bias=True):
    """Depthwise convolution with weight ``W`` (inmaps * multiplier, *kernel)."""
    kernel = tuple(kernel)
    inmaps = inp.shape[base_axis]
    if w_init is None:
        w_init = _glorot(inmaps, inmaps * multiplier, kernel, rng)
    w, b = _weight_and_bias((inmaps * multiplier,) + kernel, w_init, (inmaps * multiplier,),
                            b_init, fix_parameters, with_bias)
    return F.depthwise_convolution(inp, w, b, base_axis, pad, stride, dilation, multiplier)


@parametric_function_api('deconv')
def deconvolution(inp, outmaps, kernel, pad=None, stride=None, dilation=None, group=1,
                  channel_last=False, output_padding=None, w_init=None, b_init=None,
                  base_axis=1, fix_parameters=False, rng=None, with_bias=True,
                  apply_w=None, apply_b=None):
    """N-D transposed convolution with weight ``W`` (inmaps, outmaps / group, *kernel)."""
    kernel = tuple(kernel)
    inmaps = _conv_channels(inp, base_axis, channel_last)
    if w_init is None:
        w_init = _glorot(inmaps, outmaps, kernel, rng)
    w_shape = ((inmaps,) + kernel + (outmaps // group,) if channel_last
               else (inmaps, outmaps // group) + kernel)
    w, b = _weight_and_bias(w_shape, w_init, (outmaps,), b_init, fix_parameters, with_bias,
                            apply_w, apply_b)
    return F.deconvolution(inp, w, b, base_axis, pad, stride, dilation, group, channel_last,
                           output_padding)


@parametric_function_api('depthwise_deconv')
def depthwise_deconvolution(inp, kernel, pad=None, stride=None, dilation=None, divisor=1,
                            w_init=None, b_init=None, base_axis=1, fix_parameters=False,
                            rng=None, with_bias=True):
    """Depthwise transposed convolution with weight ``W`` (inmaps, *kernel)."""
    kernel = tuple(kernel)
    inmaps = inp.shape[base_axis]
    if w_init is None:
        w_init = _glorot(inmaps, inmaps // divisor, kernel, rng)
    w, b = _weight_and_bias((inmaps,) + kernel, w_init, (inmaps // divisor,), b_init,
                            fix_parameters, with_bias)
    return F.depthwise_deconvolution(inp, w, b, base_axis, pad, stride, dilation, divisor)


@parametric_function_api('embed')
def embed(inp, n_inputs, n_features, initializer=None, fix_parameters=False, apply_w=None):
    """Embedding table ``W`` (n_inputs, n_features) looked up by integer indices."""
    if initializer is None:
        initializer = I.UniformInitializer((-np.sqrt(3.0), np.sqrt(3.0)))
    w = _param('W', (n_inputs, n_features), initializer, fix_parameters)
    if apply_w is not None:
        w = apply_w(w)
    return F.embed(inp, w)


@parametric_function_api('prelu')
def prelu(inp, base_axis=1, shared=True, fix_parameters=False, slope_init=None):
    """PReLU with one slope ``slope`` (shared) or one per channel of ``base_axis``."""
    shape = () if shared else (inp.shape[base_axis],)
    if slope_init is None:
        slope_init = I.ConstantInitializer(0.25)
    w = _param('slope', shape, slope_init, fix_parameters)
    return F.prelu(inp, w, base_axis)


# ---- normalization -------------------------------------------------------

def _stat_shape(inp, keep_axes):
    """Shape with the sizes of ``keep_axes`` and 1 elsewhere."""
    keep = {a % len(inp.shape) for a in keep_axes}
    return tuple(s if i in keep else 1 for i, s in enumerate(inp.shape))


def _norm_params(shape, fix_parameters, param_init, no_bias=False, no_scale=False,
                 stats=False):
    """beta, gamma (and the running mean, var) of a normalization layer."""
    init = dict(param_init or {})
    beta = None if no_bias else _param(
        'beta', shape, init.get('beta', I.ConstantInitializer(0)), fix_parameters)
    gamma = None if no_scale else _param(
        'gamma', shape, init.get('gamma', I.ConstantInitializer(1)), fix_parameters)
    if not stats:
        return beta, gamma
    mean = _param('mean', shape, init.get('mean', I.ConstantInitializer(0)), need_grad=False)
    var = _param('var', shape, init.get('var', I.ConstantInitializer(1)), need_grad=False)
    return beta, gamma, mean, var


@parametric_function_api('bn')
def batch_normalization(inp, axes=[1], decay_rate=0.9, eps=1e-05, batch_stat=True,
                        output_stat=False, fix_parameters=False, param_init=None,
                        no_scale=False, no_bias=False):
    """Batch normalization owning ``beta``, ``gamma`` and the running ``mean``/``var``."""
    beta, gamma, mean, var = _norm_params(_stat_shape(inp, axes), fix_parameters, param_init,
                                          no_bias, no_scale, stats=True)
    return F.batch_normalization(inp, beta, gamma, mean, var, axes=axes,
                                 decay_rate=decay_rate, eps=eps, batch_stat=batch_stat,
                                 output_stat=output_stat)


@parametric_function_api('bn')
def fused_batch_normalization(inp, z=None, axes=[1], decay_rate=0.9, eps=1e-05,
                              batch_stat=True, nonlinearity='relu', output_stat=False,
                              fix_parameters=False, param_init=None):
    """Batch normalization, an optional residual ``z``, then the nonlinearity."""
    beta, gamma, mean, var = _norm_params(_stat_shape(inp, axes), fix_parameters, param_init,
                                          stats=True)
    return F.fused_batch_normalization(inp, beta, gamma, mean, var, z, axes=axes,
                                       decay_rate=decay_rate, eps=eps, batch_stat=batch_stat,
                                       nonlinearity=nonlinearity, output_stat=output_stat)


@parametric_function_api('bn')
def sync_batch_normalization(inp, comm, group='world', axes=[1], decay_rate=0.9, eps=1e-05,
                             batch_stat=True, output_stat=False, fix_parameters=False,
                             param_init=None):
    """Batch normalization with statistics shared over the communicator."""
    beta, gamma, mean, var = _norm_params(_stat_shape(inp, axes), fix_parameters, param_init,
                                          stats=True)
    return F.sync_batch_normalization(inp, beta, gamma, mean, var, comm, group=group,
                                      axes=axes, decay_rate=decay_rate, eps=eps,
                                      batch_stat=batch_stat, output_stat=output_stat)


@parametric_function_api('mean_subtraction')
def mean_subtraction(inp, base_axis=1, update_running_mean=True, fix_parameters=False):
    """Subtracts a running mean (``mean``, counter ``t``) over the batch axes."""
    mean = _param('mean', inp.shape[base_axis:], I.ConstantInitializer(0), need_grad=False)
    t = _param('t', (1,), I.ConstantInitializer(0), need_grad=False)
    return F.mean_subtraction(inp, mean, t, base_axis=base_axis,
                              update_running_mean=update_running_mean)


@parametric_function_api('layer_normalization')
def layer_normalization(inp, batch_axis=0, eps=1e-05, output_stat=False, fix_parameters=False,
                        param_init=None):
    """Layer normalization with ``beta``/``gamma`` over the non-batch axes."""
    batch = {a % len(inp.shape) for a in _as_list(batch_axis)}
    shape = _stat_shape(inp, [i for i in range(len(inp.shape)) if i not in batch])
    beta, gamma = _norm_params(shape, fix_parameters, param_init)
    return F.layer_normalization(inp, beta, gamma, batch_axis=batch_axis, eps=eps,
                                 output_stat=output_stat)


@parametric_function_api('instance_normalization')
def instance_normalization(inp, channel_axis=1, batch_axis=0, eps=1e-05, output_stat=False,
                           fix_parameters=False, param_init=None):
    """Instance normalization with per-channel ``beta``/``gamma``."""
    beta, gamma = _norm_params(_stat_shape(inp, [channel_axis]), fix_parameters, param_init)
    return F.instance_normalization(inp, beta, gamma, channel_axis=channel_axis,
                                    batch_axis=batch_axis, eps=eps, output_stat=output_stat)


@parametric_function_api('group_normalization')
def group_normalization(inp, num_groups, channel_axis=1, batch_axis=0, eps=1e-05,
                        output_stat=False, fix_parameters=False, param_init=None):
    """Group normalization with per-channel ``beta``/``gamma``."""
    beta, gamma = _norm_params(_stat_shape(inp, [channel_axis]), fix_parameters, param_init)
    return F.group_normalization(inp, beta, gamma, num_groups=num_groups,
                                 channel_axis=channel_axis, batch_axis=batch_axis, eps=eps,
                                 output_stat=output_stat)


# ---- recurrent and attention layers ----------------------------------------

def _recurrent(fn, gates, x, h, c, w0_init, w_init, b_init, num_layers, dropout,
               bidirectional, training, rng, with_bias, fix_parameters, bias_gates=None,
               **extra):
    """Creates ``weight_l0``, ``weight`` and ``bias`` as the recurrent functions
    lay them out (``bias_gates`` bias blocks per layer, GRU has 4), then calls
    ``fn``."""
    d = 2 if bidirectional else 1
    hidden = h.shape[-1]
    in_size = x.shape[-1]
    gshape = (gates,) if gates > 1 else ()
    lim = np.sqrt(1.0 / hidden)
    default = I.UniformInitializer((-lim, lim), rng=rng)
    w0 = _param('weight_l0', (d,) + gshape + (hidden, in_size + hidden),
                w0_init or default, fix_parameters)
    w = None
    if num_layers > 1:
        w = _param('weight', (num_layers - 1, d) + gshape + (hidden, d * hidden + hidden),
                   w_init or default, fix_parameters)
    b = None
    if with_bias:
        bg = bias_gates or gates
        b = _param('bias', (num_layers, d) + ((bg,) if bg > 1 else ()) + (hidden,),
                   b_init or default, fix_parameters)
    inputs = (x, h) if c is None else (x, h, c)
    return fn(*inputs, w0, w, b, num_layers=num_layers, dropout=dropout,
              bidirectional=bidirectional, training=training, **extra)


@parametric_function_api('rnn')
def rnn(x, h, w0_init=None, w_init=None, b_init=None, num_layers=1, nonlinearity='tanh',
        dropout=0.0, bidirectional=False, training=True, rng=None, with_bias=True,
        fix_parameters=False):
    """Elman RNN layers over a (T, B, I) sequence; returns (y, h_n)."""
    return _recurrent(F.rnn, 1, x, h, None, w0_init, w_init, b_init, num_layers, dropout,
                      bidirectional, training, rng, with_bias, fix_parameters,
                      nonlinearity=nonlinearity)


@parametric_function_api('lstm')
def lstm(x, h, c, w0_init=None, w_init=None, b_init=None, num_layers=1, dropout=0.0,
         bidirectional=False, training=True, rng=None, with_bias=True, fix_parameters=False):
    """LSTM layers over a (T, B, I) sequence; returns (y, h_n, c_n)."""
    return _recurrent(F.lstm, 4, x, h, c, w0_init, w_init, b_init, num_layers, dropout,
                      bidirectional, training, rng, with_bias, fix_parameters)


@parametric_function_api('gru')
def gru(x, h, w0_init=None, w_init=None, b_init=None, num_layers=1, dropout=0.0,
        bidirectional=False, training=True, rng=None, with_bias=True, fix_parameters=False):
    """GRU layers over a (T, B, I) sequence; returns (y, h_n)."""
    return _recurrent(F.gru, 3, x, h, None, w0_init, w_init, b_init, num_layers, dropout,
                      bidirectional, training, rng, with_bias, fix_parameters, bias_gates=4)


@parametric_function_api('multi_head_attention')
def multi_head_attention(query, key, value, num_heads=12, dropout=0.0, rng=None,
                         with_bias=True, add_attn_bias=False, additive_mask=None,
                         key_padding_mask=None, fix_parameters=False, param_init=None):
    """Multi-head attention with projections ``q_weight``, ``k_weight``,
    ``v_weight``, ``out_weight`` (and biases); returns (y, attention weights)."""
    e, kd, vd = query.shape[-1], key.shape[-1], value.shape[-1]
    init = dict(param_init or {})

    def w(name, shape, fan_in, fan_out):
        return _param(name, shape, init.get(name, _glorot(fan_in, fan_out, rng=rng)),
                      fix_parameters)

    def b(name, shape):
        if not with_bias:
            return None
        return _param(name, shape, init.get(name, I.ConstantInitializer(0)), fix_parameters)

    qw, kw, vw = w('q_weight', (e, e), e, e), w('k_weight', (kd, e), kd, e), \
        w('v_weight', (vd, e), vd, e)
    ow = w('out_weight', (e, e), e, e)
    qb, kb, vb, ob = b('q_bias', (e,)), b('k_bias', (e,)), b('v_bias', (e,)), b('out_bias', (e,))
    bk = bv = None
    if add_attn_bias:
        bk = _param('attn_bias_k', (e,), init.get('attn_bias_k', I.ConstantInitializer(0)),
                    fix_parameters)
        bv = _param('attn_bias_v', (e,), init.get('attn_bias_v', I.ConstantInitializer(0)), fix_parameters)
    return F.multi_head_attention(query, key, value, num_heads, qw, kw, vw, ow, qb, kb, vb, ob,
                                  bk, bv, dropout, additive_mask, key_padding_mask)


# ---- low-rank (factorized) layers ------------------------------------------

def _existing(*names):
    """The parameters ``names`` of the current scope, or None unless all exist."""
    from nncy.parameter import get_parameter
    vs = [get_parameter(n) for n in names]
    return None if any(v is None for v in vs) else vs


def _drop(*names):
    from nncy.parameter import pop_parameter
    for n in names:
        pop_parameter(n)


def _dense_weight(init, shape):
    """The array an ``*_init`` argument stands for: itself when it is an array,
    else the initializer's draw for ``shape``."""
    if isinstance(init, np.ndarray):
        return np.asarray(init, dtype=np.float64)
    return np.asarray(init(tuple(int(s) for s in shape)), dtype=np.float64)


def _bias(shape, b_init, fix_parameters, with_bias):
    if not with_bias:
        return None
    return _param('b', shape, b_init if b_init is not None else I.ConstantInitializer(),
                  fix_parameters)


@parametric_function_api('svd_affine')
def svd_affine(inp, n_outmaps, r, base_axis=1, uv_init=None, b_init=None,
               fix_parameters=False, rng=None, with_bias=True):
    """Low-rank affine layer ``y = x U V + b``: ``U`` (inmaps, r) and ``V``
    (r, *n_outmaps) are the rank-``r`` truncated SVD of ``uv_init`` (an array,
    or an initializer drawn for the full (inmaps, *n_outmaps) weight), the
    singular values folded into ``U``.  ``U`` and ``V`` already in the scope
    take precedence over ``uv_init``."""
    outs = _as_list(n_outmaps)
    inmaps = int(np.prod(inp.shape[base_axis:]))
    n_out = int(np.prod(outs))
    if _existing('U', 'V') is None:
        if r <= 0:
            raise ValueError('svd_affine: the rank r must be positive, got %r' % (r,))
        if uv_init is None:
            uv_init = _glorot(inmaps, n_out, rng=rng)
        uv = _dense_weight(uv_init, [inmaps] + outs).reshape(inmaps, n_out)
        u_, s_, vt = np.linalg.svd(uv, full_matrices=False)
        k = min(r, s_.size)                       # a rank above min(I, O) pads zeros
        u_low, v_low = np.zeros((inmaps, r)), np.zeros((r, n_out))
        u_low[:, :k], v_low[:k] = (u_ * s_)[:, :k], vt[:k]
        _drop('U', 'V')
        _param('U', (inmaps, r), u_low, fix_parameters)
        _param('V', [r] + outs, v_low.reshape([r] + outs), fix_parameters)
    u = _param('U', (inmaps, r), None, fix_parameters)
    v = _param('V', [r] + outs, None, fix_parameters)
    b = _bias(outs, b_init, fix_parameters, with_bias)
    return F.affine(F.affine(inp, u, None, base_axis), v, b, base_axis)


@parametric_function_api('svd_conv')
def svd_convolution(inp, outmaps, kernel, r, pad=None, stride=None, dilation=None,
                    uv_init=None, b_init=None, base_axis=1, fix_parameters=False, rng=None,
                    with_bias=True):
    """Low-rank convolution: a depthwise convolution with ``r`` kernels per
    input map (``U``, (inmaps * r, *kernel)) followed by a 1x1 convolution
    (``V``, (outmaps, inmaps * r, 1, ...)).  For each input map ``i`` the
    kernels ``W[:, i]`` of ``uv_init`` (outmaps, inmaps, *kernel) are
    approximated by their rank-``r`` truncated SVD."""
    if r <= 0:
        raise ValueError('svd_convolution: the rank r must be positive, got %r' % (r,))
    kernel = tuple(int(k) for k in kernel)
    inmaps = inp.shape[base_axis]
    ksize = int(np.prod(kernel))
    ones = (1,) * len(kernel)
    u_shape, v_shape = (inmaps * r,) + kernel, (outmaps, inmaps * r) + ones
    if _existing('U', 'V') is None:
        if uv_init is None:
            uv_init = _glorot(inmaps, outmaps, kernel, rng)
        uv = _dense_weight(uv_init, (outmaps, inmaps) + kernel).reshape(outmaps, inmaps, ksize)
        u_low = np.zeros((inmaps, r, ksize))
        v_low = np.zeros((inmaps, r, outmaps))
        for i in range(inmaps):
            uu, ss, vt = np.linalg.svd(uv[:, i, :].T, full_matrices=False)   # (K, O)
            k = min(r, ss.size)
            u_low[i, :k] = (uu[:, :k] * ss[:k]).T
            v_low[i, :k] = vt[:k]
        _drop('U', 'V')
        _param('U', u_shape, u_low.reshape(u_shape), fix_parameters)
        _param('V', v_shape, v_low.transpose(2, 0, 1).reshape(v_shape), fix_parameters)
    u = _param('U', u_shape, None, fix_parameters)
    v = _param('V', v_shape, None, fix_parameters)
    b = _bias((outmaps,), b_init, fix_parameters, with_bias)
    y = F.depthwise_convolution(inp, u, None, base_axis, pad, stride, dilation, r)
    return F.convolution(y, v, b, base_axis)


def _cp_als(x, rank, max_iter=500, stopping_criterion=1e-5, lambda_reg=0.0, rng=None):
    """Rank-``rank`` CP decomposition of a 3-way array by alternating least
    squares: returns unit-norm factors [A, B, C] and weights ``lmbda`` with
    ``x ~ sum_r lmbda[r] A[:, r] o B[:, r] o C[:, r]``."""
    if rng is None:
        from nncy import random as _random
        rng = _random.prng
    x = np.asarray(x, dtype=np.float64)
    factors = [rng.randn(n, rank) for n in x.shape]
    specs = ['oik,ir,kr->or', 'oik,or,kr->ir', 'oik,or,ir->kr']
    xnorm = np.linalg.norm(x) or 1.0
    prev = None
    lmbda = np.ones(rank)
    for it in range(max(int(max_iter), 1)):
        for m in range(3):
            others = [factors[j] for j in range(3) if j != m]
            gram = (others[0].T @ others[0]) * (others[1].T @ others[1])
            rhs = np.einsum(specs[m], x, *others)
            factors[m] = rhs @ np.linalg.pinv(gram + lambda_reg * np.eye(rank))
            lmbda = np.linalg.norm(factors[m], axis=0)
            lmbda[lmbda == 0] = 1.0
            factors[m] = factors[m] / lmbda
        approx = np.einsum('or,ir,kr->oik', factors[0] * lmbda, factors[1], factors[2])
        err = np.linalg.norm(x - approx) / xnorm
        if stopping_criterion >= 0 and prev is not None and abs(prev - err) < stopping_criterion:
            break
        prev = err
    return factors, lmbda


@parametric_function_api('cpd3_conv')
def cpd3_convolution(inp, outmaps, kernel, r, pad=None, stride=None, dilation=None,
                     oik_init=None, b_init=None, base_axis=1, fix_parameters=False, rng=None,
                     with_bias=True, max_iter=500, stopping_criterion=1e-5, lambda_reg=0.0):
    """CP-decomposed convolution: a 1x1 convolution to ``r`` maps (``I``,
    (r, inmaps, 1, ...)), a depthwise convolution of each (``K``, (r, *kernel))
    and a 1x1 convolution to ``outmaps`` (``O``, (outmaps, r, 1, ...)).  The
    factors come from a rank-``r`` CP decomposition (alternating least
    squares) of ``oik_init`` seen as (outmaps, inmaps, prod(kernel))."""
    kernel = tuple(int(k) for k in kernel)
    inmaps = inp.shape[base_axis]
    ones = (1,) * len(kernel)
    i_shape, k_shape, o_shape = (r, inmaps) + ones, (r,) + kernel, (outmaps, r) + ones
    if _existing('O', 'I', 'K') is None:
        if r <= 0:
            raise ValueError('cpd3_convolution: the rank r must be positive, got %r' % (r,))
        if oik_init is None:
            oik_init = _glorot(inmaps, outmaps, kernel, rng)
        oik = _dense_weight(oik_init, (outmaps, inmaps) + kernel).reshape(
            outmaps, inmaps, int(np.prod(kernel)))
        (a, bb, c), lmbda = _cp_als(oik, r, max_iter, stopping_criterion, lambda_reg, rng)
        _drop('O', 'I', 'K')
        _param('I', i_shape, bb.T.reshape(i_shape), fix_parameters)
        _param('K', k_shape, c.T.reshape(k_shape), fix_parameters)
        _param('O', o_shape, (a * lmbda).reshape(o_shape), fix_parameters)
    wi = _param('I', i_shape, None, fix_parameters)
    wk = _param('K', k_shape, None, fix_parameters)
    wo = _param('O', o_shape, None, fix_parameters)
    b = _bias((outmaps,), b_init, fix_parameters, with_bias)
    y = F.convolution(inp, wi, None, base_axis)
    y = F.depthwise_convolution(y, wk, None, base_axis, pad, stride, dilation, 1)
    return F.convolution(y, wo, b, base_axis)


# ---- LSTM cell ---------------------------------------------------------------

@parametric_function_api('lstm')
def lstm_cell(x, h, c, state_size, w_init=None, b_init=None, fix_parameters=False):
    """One LSTM step on (batch, input) ``x`` with state ``h``, ``c`` (batch,
    state_size); the four gate blocks (i, o, f, g) share the affine layer
    ``affine/W`` (inmaps + state_size, 4, state_size), ``affine/b`` (4, state_size).
    Returns (h_t, c_t)."""
    xh = F.concatenate(x, h, axis=1)
    gates = affine(xh, (4, state_size), w_init=w_init, b_init=b_init,
                   fix_parameters=fix_parameters)
    i_t, o_t, f_t, g_t = F.split(gates, axis=1)
    c_t = F.sigmoid(f_t) * c + F.sigmoid(i_t) * F.tanh(g_t)
    h_t = F.sigmoid(o_t) * F.tanh(c_t)
    return h_t, c_t


class LSTMCell:
    """An LSTM cell holding its state ``h``, ``c`` (batch_size, state_size),
    zero unless given; each call advances the state by :func:`lstm_cell`."""

    def __init__(self, batch_size, state_size, h=None, c=None, name=None):
        from nncy._core import Variable
        self.batch_size = batch_size
        self.state_size = state_size
        self.name = name
        zeros = np.zeros((batch_size, state_size), np.float32)
        self.h = h if h is not None else Variable.from_numpy_array(zeros)
        self.c = c if c is not None else Variable.from_numpy_array(zeros.copy())

    def reset_state(self):
        """Sets ``h`` and ``c`` to zero."""
        self.h.d = 0
        self.c.d = 0

    def __call__(self, x, w_init=None, b_init=None, fix_parameters=False):
        self.h, self.c = lstm_cell(x, self.h, self.c, self.state_size, w_init, b_init,
                                   fix_parameters=fix_parameters, name=self.name)
        return self.h


# ---- weight reparametrizations ---------------------------------------------

def _l2_normalize(v, eps):
    norm = F.pow_scalar(F.add_scalar(F.sum(F.pow_scalar(v, 2.0), keepdims=True), eps), 0.5)
    return F.div2(v, norm)


@parametric_function_api('spectral-norm')
def spectral_norm(w, dim=0, itr=1, eps=1e-12, test=False, u_init=None, fix_parameters=True):
    """Spectral normalization ``W / sigma(W)``, ``sigma`` estimated by ``itr``
    steps of power iteration with the left singular vector ``u``
    (w.shape[dim],), a state parameter that each forward updates (not in
    ``test`` mode, where the stored ``u`` is used as it is).  ``W`` is seen as
    a matrix (w.shape[dim], rest); no gradient flows through ``u`` and ``v``."""
    ndim = len(w.shape)
    if not 0 <= dim < ndim:
        raise ValueError('spectral_norm: dim must be in [0, %d), got %r' % (ndim, dim))
    if itr < 1 and not test:
        raise ValueError('spectral_norm: itr must be positive, got %r' % (itr,))
    if u_init is None:
        u_init = I.NormalInitializer()
    d0 = w.shape[dim]
    d1 = int(np.prod(w.shape)) // d0 if d0 else 0
    u0 = _param('u', (d0,), u_init, need_grad=False)
    perm = [dim] + [i for i in range(ndim) if i != dim]
    wt = F.transpose(w, perm) if dim != 0 else w
    wm = F.reshape(wt, (d0, d1))
    u = F.reshape(u0, (1, d0))
    if test:
        v = _l2_normalize(F.affine(u, wm), eps)                       # (1, d1)
    else:
        for _ in range(itr):
            v = _l2_normalize(F.affine(u, wm), eps)                   # (1, d1)
            u = F.reshape(_l2_normalize(F.affine(wm, F.reshape(v, (d1, 1))), eps), (1, d0))
        u.need_grad = False
        u = F.reshape(F.assign(u0, F.reshape(u, (d0,))), (1, d0))    # store the new u
    u.need_grad = False
    v.need_grad = False
    sigma = F.affine(u, F.affine(wm, F.reshape(v, (d1, 1))))          # (1, 1)
    w_sn = F.reshape(F.div2(wm, sigma), wt.shape)
    if dim != 0:
        w_sn = F.transpose(w_sn, [perm.index(i) for i in range(ndim)])
    return w_sn


@parametric_function_api('wn')
def weight_normalization(w, dim=0, eps=1e-12, g_init=None, fix_parameters=False):
    """Weight normalization ``g * w / ||w||``, the L2 norm taken over every
    axis but ``dim`` and ``g`` (w.shape[dim],) a trainable scale, by default
    the initial norms (so the layer starts from ``w``)."""
    ndim = len(w.shape)
    dim = dim % ndim
    if g_init is None:
        g_init = I.WeightNormalizationScaleInitializer(w, dim, eps)
    g = _param('g', (w.shape[dim],), g_init, fix_parameters)
    axes = tuple(i for i in range(ndim) if i != dim)
    sq = F.pow_scalar(w, 2.0)
    if axes:
        sq = F.sum(sq, axis=axes, keepdims=True)
    norm = F.pow_scalar(F.add_scalar(sq, eps), 0.5)
    gshape = tuple(w.shape[dim] if i == dim else 1 for i in range(ndim))
    return F.mul2(F.div2(w, norm), F.reshape(g, gshape))


# ---- transformer -------------------------------------------------------------

def _maybe_dropout(x, p):
    return F.dropout(x, p) if p > 0 else x


def _post_norm_layer(x, attentions, prefix, embed_dim, num_heads, dim_feedforward, dropout,
                     activation, rng, add_attn_bias, fix_parameters):
    """The body of a post-norm transformer layer on (L, B, E) ``x``: each of
    ``attentions`` (name, key and value or None for x itself, additive mask,
    key padding mask) in turn, then the feed-forward ``<prefix>_affine1``,
    ``<prefix>_affine2``; each step adds a residual and is followed by a layer
    normalization ``<prefix>_layer_norm1``, ``<prefix>_layer_norm2``, ..."""
    activation = activation or F.relu

    def add_and_norm(x, y, i):
        return layer_normalization(x + _maybe_dropout(y, dropout), batch_axis=(0, 1),
                                   fix_parameters=fix_parameters,
                                   name='%s_layer_norm%d' % (prefix, i))

    for i, (name, kv, additive_mask, key_padding_mask) in enumerate(attentions, 1):
        kv = x if kv is None else kv
        a = multi_head_attention(x, kv, kv, num_heads=num_heads, rng=rng,
                                 add_attn_bias=add_attn_bias, additive_mask=additive_mask,
                                 key_padding_mask=key_padding_mask,
                                 fix_parameters=fix_parameters, name=name)[0]
        x = add_and_norm(x, a, i)
    h = activation(affine(x, dim_feedforward, base_axis=2, rng=rng,
                          fix_parameters=fix_parameters, name=prefix + '_affine1'))
    h = affine(_maybe_dropout(h, dropout), embed_dim, base_axis=2, rng=rng,
               fix_parameters=fix_parameters, name=prefix + '_affine2')
    return add_and_norm(x, h, len(attentions) + 1)


@parametric_function_api('transformer_encode')
def transformer_encode(src, embed_dim, num_heads, dim_feedforward=2048, dropout=0.1,
                       activation=None, src_additive_mask=None, src_key_padding_mask=None,
                       rng=None, add_attn_bias=False, fix_parameters=False):
    """One post-norm transformer encoder layer on (L_S, B, E) ``src``:
    self-attention ``src_self_attn`` and the feed-forward ``enc_affine1``,
    ``enc_affine2``, each with a residual and a layer normalization
    (``enc_layer_norm1``, ``enc_layer_norm2``)."""
    attentions = [('src_self_attn', None, src_additive_mask, src_key_padding_mask)]
    return _post_norm_layer(src, attentions, 'enc', embed_dim, num_heads, dim_feedforward,
                            dropout, activation, rng, add_attn_bias, fix_parameters)


@parametric_function_api('transformer_decode')
def transformer_decode(tgt, memory, embed_dim, num_heads, dim_feedforward=2048, dropout=0.1,
                       activation=None, tgt_additive_mask=None, memory_additive_mask=None,
                       tgt_key_padding_mask=None, memory_key_padding_mask=None, rng=None,
                       add_attn_bias=False, fix_parameters=False):
    """One post-norm transformer decoder layer on (L_T, B, E) ``tgt`` with the
    encoder output ``memory`` (L_S, B, E): self-attention ``tgt_self_attn``,
    attention over the memory ``tgt_memory_attn`` and the feed-forward
    ``dec_affine1``, ``dec_affine2``, each followed by a residual and a layer
    normalization (``dec_layer_norm1`` .. ``dec_layer_norm3``)."""
    attentions = [('tgt_self_attn', None, tgt_additive_mask, tgt_key_padding_mask),
                  ('tgt_memory_attn', memory, memory_additive_mask, memory_key_padding_mask)]
    return _post_norm_layer(tgt, attentions, 'dec', embed_dim, num_heads, dim_feedforward,
                            dropout, activation, rng, add_attn_bias, fix_parameters)


@parametric_function_api('transformer')
def transformer(src, tgt, embed_dim=512, num_heads=8, num_encoder_layers=6,
                num_decoder_layers=6, dim_feedforward=2048, dropout=0.1, activation=None,
                src_additive_mask=None, tgt_additive_mask=None, memory_additive_mask=None,
                src_key_padding_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, rng=None, add_attn_bias=False,
                fix_parameters=False):
    """Encoder-decoder transformer (Vaswani et al.): ``num_encoder_layers``
    :func:`transformer_encode` layers ``encoder00``, ... on (L_S, B, E) ``src``,
    then ``num_decoder_layers`` :func:`transformer_decode` layers ``decoder00``,
    ... on (L_T, B, E) ``tgt``; returns (L_T, B, E)."""
    if src.shape[1] != tgt.shape[1]:
        raise ValueError('transformer: src and tgt must have the same batch size, got %s, %s'
                         % (src.shape, tgt.shape))
    if src.shape[2] != embed_dim or tgt.shape[2] != embed_dim:
        raise ValueError('transformer: the last axis of src and tgt must be embed_dim=%d, '
                         'got %s, %s' % (embed_dim, src.shape, tgt.shape))
    memory = src
    for i in range(num_encoder_layers):
        memory = transformer_encode(
            memory, embed_dim, num_heads, dim_feedforward=dim_feedforward, dropout=dropout,
            activation=activation, src_additive_mask=src_additive_mask,
            src_key_padding_mask=src_key_padding_mask, rng=rng, add_attn_bias=add_attn_bias,
            fix_parameters=fix_parameters, name='encoder{:02d}'.format(i))
    out = tgt
    for i in range(num_decoder_layers):
        out = transformer_decode(
            out, memory, embed_dim, num_heads, dim_feedforward=dim_feedforward,
            dropout=dropout, activation=activation, tgt_additive_mask=tgt_additive_mask,
            memory_additive_mask=memory_additive_mask,
            tgt_key_padding_mask=tgt_key_padding_mask,
            memory_key_padding_mask=memory_key_padding_mask, rng=rng,
            add_attn_bias=add_attn_bias, fix_parameters=fix_parameters,
            name='decoder{:02d}'.format(i))
    return out


# ---- binary and INQ layers ---------------------------------------------------

def _quantized_layer(inp, fn, shape_w, inmaps, outmaps, kernel, side, w_init, b_init,
                     fix_parameters, rng, with_bias, layer_args):
    """A layer whose function takes ``W``, then state parameters ``side``
    ({name: (shape, initializer)}, no gradient), then the bias."""
    if w_init is None:
        w_init = _glorot(inmaps, outmaps, kernel, rng)
    w = _param('W', shape_w, w_init, fix_parameters)
    extra = [_param(n, s, init, need_grad=False) for n, (s, init) in side.items()]
    b = _param('b', (outmaps,), b_init or I.ConstantInitializer(), fix_parameters) \
        if with_bias else None
    return fn(inp, w, *extra, b, **layer_args)


@parametric_function_api('bicon_affine')
def binary_connect_affine(inp, n_outmaps, base_axis=1, quantize_zero_to=1.0, w_init=None,
                          wb_init=None, b_init=None, fix_parameters=False, rng=None,
                          with_bias=True):
    """Affine layer over sign(W) (kept in ``Wb``), straight-through to ``W``."""
    inmaps = int(np.prod(inp.shape[base_axis:]))
    shape = (inmaps, n_outmaps)
    return _quantized_layer(inp, F.binary_connect_affine, shape, inmaps, n_outmaps, (1, 1),
                            {'Wb': (shape, wb_init or I.ConstantInitializer(0))}, w_init,
                            b_init, fix_parameters,
                            rng, with_bias, dict(base_axis=base_axis,
                                                 quantize_zero_to=quantize_zero_to))


@parametric_function_api('bwn_affine')
def binary_weight_affine(inp, n_outmaps, base_axis=1, quantize_zero_to=1.0, w_init=None,
                         wb_init=None, b_init=None, fix_parameters=False, rng=None,
                         with_bias=True):
    """Affine layer over sign(W) scaled by ``alpha`` = mean |W| per output."""
    inmaps = int(np.prod(inp.shape[base_axis:]))
    shape = (inmaps, n_outmaps)
    side = {'Wb': (shape, wb_init or I.ConstantInitializer(0)),
            'alpha': ((n_outmaps,), I.ConstantInitializer(0))}
    return _quantized_layer(inp, F.binary_weight_affine, shape, inmaps, n_outmaps, (1, 1),
                            side, w_init, b_init, fix_parameters, rng, with_bias,
                            dict(base_axis=base_axis, quantize_zero_to=quantize_zero_to))


def _conv_layer_args(base_axis, pad, stride, dilation, group):
    return dict(base_axis=base_axis, pad=pad, stride=stride, dilation=dilation, group=group)


@parametric_function_api('bicon_conv')
def binary_connect_convolution(inp, outmaps, kernel, pad=None, stride=None, dilation=None,
                               group=1, quantize_zero_to=1.0, w_init=None, wb_init=None,
                               b_init=None, base_axis=1, fix_parameters=False, rng=None,
                               with_bias=True):
    """Convolution over sign(W) (kept in ``Wb``), straight-through to ``W``."""
    inmaps = inp.shape[base_axis]
    shape = (outmaps, inmaps // group) + tuple(kernel)
    return _quantized_layer(inp, F.binary_connect_convolution, shape, inmaps, outmaps,
                            tuple(kernel), {'Wb': (shape, wb_init or I.ConstantInitializer(0))},
                            w_init, b_init, fix_parameters, rng, with_bias,
                            dict(_conv_layer_args(base_axis, pad, stride, dilation, group),
                                 quantize_zero_to=quantize_zero_to))


@parametric_function_api('bwn_conv')
def binary_weight_convolution(inp, outmaps, kernel, pad=None, stride=None, dilation=None,
                              group=1, quantize_zero_to=1.0, w_init=None, wb_init=None,
                              b_init=None, base_axis=1, fix_parameters=False, rng=None,
                              with_bias=True):
    """Convolution over sign(W) scaled by ``alpha`` = mean |W| per output map."""
    inmaps = inp.shape[base_axis]
    shape = (outmaps, inmaps // group) + tuple(kernel)
    side = {'Wb': (shape, wb_init or I.ConstantInitializer(0)),
            'alpha': ((outmaps,), I.ConstantInitializer(0))}
    return _quantized_layer(inp, F.binary_weight_convolution, shape, inmaps, outmaps,
                            tuple(kernel), side, w_init, b_init, fix_parameters, rng,
                            with_bias,
                            dict(_conv_layer_args(base_axis, pad, stride, dilation, group),
                                 quantize_zero_to=quantize_zero_to))


def _inq_args(num_bits, inq_iterations, selection_algorithm, seed):
    return dict(num_bits=num_bits, inq_iterations=tuple(inq_iterations),
                selection_algorithm=selection_algorithm, seed=seed)


@parametric_function_api('inq_affine')
def inq_affine(inp, n_outmaps, base_axis=1, num_bits=4, inq_iterations=(),
               selection_algorithm='random', seed=-1, w_init=None, i_init=None, b_init=None,
               fix_parameters=False, rng=None, with_bias=True):
    """Affine layer with incremental network quantization (indicator ``I``)."""
    inmaps = int(np.prod(inp.shape[base_axis:]))
    shape = (inmaps, n_outmaps)
    return _quantized_layer(inp, F.inq_affine, shape, inmaps, n_outmaps, (1, 1),
                            {'I': (shape, i_init or I.ConstantInitializer(0))}, w_init,
                            b_init, fix_parameters, rng, with_bias,
                            dict(_inq_args(num_bits, inq_iterations, selection_algorithm,
                                           seed), base_axis=base_axis))


@parametric_function_api('inq_conv')
def inq_convolution(inp, outmaps, kernel, pad=None, stride=None, dilation=None, group=1,
                    num_bits=4, inq_iterations=(), selection_algorithm='random', seed=-1,
                    w_init=None, i_init=None, b_init=None, base_axis=1,
                    fix_parameters=False, rng=None, with_bias=True):
    """Convolution with incremental network quantization (indicator ``I``)."""
    inmaps = inp.shape[base_axis]
    shape = (outmaps, inmaps // group) + tuple(kernel)
    return _quantized_layer(inp, F.inq_convolution, shape, inmaps, outmaps, tuple(kernel),
                            {'I': (shape, i_init or I.ConstantInitializer(0))}, w_init,
                            b_init, fix_parameters, rng, with_bias,
                            dict(_inq_args(num_bits, inq_iterations, selection_algorithm,
                                           seed),
                                 **_conv_layer_args(base_axis, pad, stride, dilation, group)))


# ---- layers over quantized (or pruned) weights ------------------------------

def _quantized_params(w_shape, w_init, b_shape, b_init, fix_parameters, with_bias,
                      quantize_w, quantize_b):
    """``W`` (and ``b``) plus the quantized copies ``W_q`` (``b_q``) that the
    quantizer writes into and the layer reads."""
    w = _param('W', w_shape, w_init, fix_parameters)
    wq = _param('W_q', w_shape, w_init, need_grad=False)
    qw = quantize_w(w, outputs=[wq.data])
    qb = None
    if with_bias:
        b = _param('b', b_shape, b_init or I.ConstantInitializer(), fix_parameters)
        bq = _param('b_q', b_shape, b_init or I.ConstantInitializer(), need_grad=False)
        qb = quantize_b(b, outputs=[bq.data])
    return qw, qb


def _quantizer(fn, **args):
    return lambda v, outputs: fn(v, outputs=outputs, **args)


def _affine_over(inp, n_outmaps, base_axis, w_init, b_init, fix_parameters, rng, with_bias,
                 qw, qb):
    outs = _as_list(n_outmaps)
    inmaps = int(np.prod(inp.shape[base_axis:]))
    w_init = w_init or _glorot(inmaps, int(np.prod(outs)), rng=rng)
    w, b = _quantized_params([inmaps] + outs, w_init, outs, b_init, fix_parameters,
                             with_bias, qw, qb)
    return F.affine(inp, w, b, base_axis)


def _conv_over(inp, outmaps, kernel, pad, stride, dilation, group, base_axis, w_init, b_init,
               fix_parameters, rng, with_bias, qw, qb):
    kernel = tuple(kernel)
    inmaps = inp.shape[base_axis]
    w_init = w_init or _glorot(inmaps, outmaps, kernel, rng)
    w, b = _quantized_params((outmaps, inmaps // group) + kernel, w_init, (outmaps,), b_init,
                             fix_parameters, with_bias, qw, qb)
    return F.convolution(inp, w, b, base_axis, pad, stride, dilation, group)


def _fixed_point(prefix, kw):
    return _quantizer(F.fixed_point_quantize, sign=kw['sign_' + prefix], n=kw['n_' + prefix],
                      delta=kw['delta_' + prefix], quantize=kw['quantize_' + prefix],
                      ste_fine_grained=kw['ste_fine_grained_' + prefix])


def _pow2(prefix, kw):
    return _quantizer(F.pow2_quantize, sign=kw['sign_' + prefix],
                      with_zero=kw['with_zero_' + prefix], n=kw['n_' + prefix],
                      m=kw['m_' + prefix], quantize=kw['quantize_' + prefix],
                      ste_fine_grained=kw['ste_fine_grained_' + prefix])


_FP_DEFAULTS = dict(quantize_w=True, sign_w=True, n_w=8, delta_w=2 ** -4,
                    ste_fine_grained_w=True, quantize_b=True, sign_b=True, n_b=8,
                    delta_b=2 ** -4, ste_fine_grained_b=True)
_P2_DEFAULTS = dict(quantize_w=True, sign_w=True, with_zero_w=False, n_w=8, m_w=2,
                    ste_fine_grained_w=True, quantize_b=True, sign_b=True, with_zero_b=False,
                    n_b=8, m_b=2, ste_fine_grained_b=True)


def _with_defaults(defaults, kw, who):
    unknown = set(kw) - set(defaults)
    if unknown:
        raise TypeError('%s: unexpected arguments %s' % (who, sorted(unknown)))
    return dict(defaults, **kw)


@parametric_function_api('fp_quantized_affine')
def fixed_point_quantized_affine(inp, n_outmaps, base_axis=1, w_init=None, b_init=None,
                                 fix_parameters=False, rng=None, with_bias=True, **quant):
    """Affine layer over fixed-point quantized ``W``/``b`` (kept in ``W_q``/``b_q``);
    quantizer arguments ``quantize_w, sign_w, n_w, delta_w, ste_fine_grained_w``
    and the same with ``_b``."""
    kw = _with_defaults(_FP_DEFAULTS, quant, 'fixed_point_quantized_affine')
    return _affine_over(inp, n_outmaps, base_axis, w_init, b_init, fix_parameters, rng,
                        with_bias, _fixed_point('w', kw), _fixed_point('b', kw))


@parametric_function_api('fp_quantized_conv')
def fixed_point_quantized_convolution(inp, outmaps, kernel, pad=None, stride=None,
                                      dilation=None, group=1, w_init=None, b_init=None,
                                      base_axis=1, fix_parameters=False, rng=None,
                                      with_bias=True, **quant):
    """Convolution over fixed-point quantized ``W``/``b``."""
    kw = _with_defaults(_FP_DEFAULTS, quant, 'fixed_point_quantized_convolution')
    return _conv_over(inp, outmaps, kernel, pad, stride, dilation, group, base_axis, w_init,
                      b_init, fix_parameters, rng, with_bias, _fixed_point('w', kw),
                      _fixed_point('b', kw))


@parametric_function_api('pow2_quantized_affine')
def pow2_quantized_affine(inp, n_outmaps, base_axis=1, w_init=None, b_init=None,
                          fix_parameters=False, rng=None, with_bias=True, **quant):
    """Affine layer over power-of-two quantized ``W``/``b``; quantizer arguments
    ``quantize_w, sign_w, with_zero_w, n_w, m_w, ste_fine_grained_w`` and ``_b``."""
    kw = _with_defaults(_P2_DEFAULTS, quant, 'pow2_quantized_affine')
    return _affine_over(inp, n_outmaps, base_axis, w_init, b_init, fix_parameters, rng,
                        with_bias, _pow2('w', kw), _pow2('b', kw))


@parametric_function_api('pow2_quantized_conv')
def pow2_quantized_convolution(inp, outmaps, kernel, pad=None, stride=None, dilation=None,
                               group=1, w_init=None, b_init=None, base_axis=1,
                               fix_parameters=False, rng=None, with_bias=True, **quant):
    """Convolution over power-of-two quantized ``W``/``b``."""
    kw = _with_defaults(_P2_DEFAULTS, quant, 'pow2_quantized_convolution')
    return _conv_over(inp, outmaps, kernel, pad, stride, dilation, group, base_axis, w_init,
                      b_init, fix_parameters, rng, with_bias, _pow2('w', kw), _pow2('b', kw))


def _pruner(on, rate):
    """F.prune at ``rate``, or a plain copy when pruning is off."""
    if on:
        return _quantizer(F.prune, rate=rate)
    return lambda v, outputs: F.identity(v, outputs=outputs)


@parametric_function_api('pruned_affine')
def pruned_affine(inp, n_outmaps, base_axis=1, w_init=None, b_init=None,
                  fix_parameters=False, rng=None, with_bias=True, prune_w=True, rate_w=0.9,
                  prune_b=True, rate_b=0.9):
    """Affine layer over pruned ``W``/``b`` (the smallest ``rate`` zeroed)."""
    return _affine_over(inp, n_outmaps, base_axis, w_init, b_init, fix_parameters, rng,
                        with_bias, _pruner(prune_w, rate_w), _pruner(prune_b, rate_b))


@parametric_function_api('pruned_conv')
def pruned_convolution(inp, outmaps, kernel, pad=None, stride=None, dilation=None, group=1,
                       w_init=None, b_init=None, base_axis=1, fix_parameters=False, rng=None,
                       with_bias=True, prune_w=True, rate_w=0.9, prune_b=True, rate_b=0.9):
    """Convolution over pruned ``W``/``b``."""
    return _conv_over(inp, outmaps, kernel, pad, stride, dilation, group, base_axis, w_init,
                      b_init, fix_parameters, rng, with_bias, _pruner(prune_w, rate_w),
                      _pruner(prune_b, rate_b))


# ---- min-max quantization ----------------------------------------------------

@parametric_function_api('min_max_quantize')
def min_max_quantize(x, ql_min=0, ql_max=255, decay=0.999, x_min_max=False, ema=False,
                     ste_fine_grained=True, eps=0.01, qr_min_init=None, qr_max_init=None,
                     fix_parameters=False, outputs=None):
    """Min-max quantization of ``x`` with the range parameters ``qr_min`` and
    ``qr_max`` (learnt unless both x_min_max and ema) and, for numbers given as
    ``ql_min``/``ql_max``, the level parameters ``ql_min``/``ql_max``."""
    levels = []
    for pname, v in (('ql_min', ql_min), ('ql_max', ql_max)):
        if isinstance(v, (int, float)):
            shape = (1,) * len(x.shape)
            v = _param(pname, shape, np.full(shape, v, np.float32), need_grad=False)
        levels.append(v)
    ql_min, ql_max = levels
    learnt = not (x_min_max and ema)
    qr = [_param(pname, ql_min.shape, init or I.ConstantInitializer(default), fix_parameters,
                 need_grad=learnt)
          for pname, init, default in (('qr_min', qr_min_init, -6.0),
                                       ('qr_max', qr_max_init, 6.0))]
    return F.min_max_quantize(x, qr[0], qr[1], ql_min, ql_max, decay=decay,
                              x_min_max=x_min_max, ema=ema,
                              ste_fine_grained=ste_fine_grained, eps=eps, outputs=outputs)


_MM_DEFAULTS = dict(quantize_w=True, ql_min_w=0, ql_max_w=255, w_min_max=False,
                    qr_min_w_init=None, qr_max_w_init=None, ste_fine_grained_w=True,
                    quantize_b=True, ql_min_b=0, ql_max_b=255, b_min_max=False,
                    qr_min_b_init=None, qr_max_b_init=None, ste_fine_grained_b=True,
                    eps=0.01)


def _min_max(prefix, kw, fix_parameters):
    """The quantizer of W (prefix 'w', range -2..2 by default) or b ('b', -6..6),
    its parameters in the scope ``min_max_quantize_<prefix>`` (as NNabla)."""
    default = 2.0 if prefix == 'w' else 6.0

    def quantize(v, outputs):
        if not kw['quantize_' + prefix]:
            return F.identity(v, outputs=outputs)
        with parameter_scope('min_max_quantize_' + prefix):
            return min_max_quantize(
                v, kw['ql_min_' + prefix], kw['ql_max_' + prefix], 0.999,
                kw[prefix + '_min_max'], False, kw['ste_fine_grained_' + prefix], kw['eps'],
                kw['qr_min_%s_init' % prefix] or I.ConstantInitializer(-default),
                kw['qr_max_%s_init' % prefix] or I.ConstantInitializer(default),
                fix_parameters, outputs)
    return quantize


@parametric_function_api('min_max_quantized_affine')
def min_max_quantized_affine(inp, n_outmaps, base_axis=1, w_init=None, b_init=None,
                             fix_parameters=False, rng=None, with_bias=True, **quant):
    """Affine layer over min-max quantized ``W``/``b`` (kept in ``W_q``/``b_q``);
    quantizer arguments ``quantize_w, ql_min_w, ql_max_w, w_min_max, qr_min_w_init,
    qr_max_w_init, ste_fine_grained_w``, the same for ``b`` and ``eps``."""
    kw = _with_defaults(_MM_DEFAULTS, quant, 'min_max_quantized_affine')
    return _affine_over(inp, n_outmaps, base_axis, w_init, b_init, fix_parameters, rng,
                        with_bias, _min_max('w', kw, fix_parameters),
                        _min_max('b', kw, fix_parameters))


@parametric_function_api('min_max_quantized_conv')
def min_max_quantized_convolution(inp, outmaps, kernel, pad=None, stride=None, dilation=None,
                                  group=1, w_init=None, b_init=None, base_axis=1,
                                  fix_parameters=False, rng=None, with_bias=True, **quant):
    """Convolution over min-max quantized ``W``/``b``."""
    kw = _with_defaults(_MM_DEFAULTS, quant, 'min_max_quantized_convolution')
    return _conv_over(inp, outmaps, kernel, pad, stride, dilation, group, base_axis, w_init,
                      b_init, fix_parameters, rng, with_bias, _min_max('w', kw, fix_parameters),
                      _min_max('b', kw, fix_parameters))
