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
