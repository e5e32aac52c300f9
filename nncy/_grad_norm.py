"""``nn.grad`` for the structured and composite activation and normalization
rows: their gradients as graphs of other functions, so that they can be
differentiated again.

Most rows get theirs from a *graph form*: the row's forward written with
primitive functions (mean, sub2, pow_scalar, ...), differentiated by the same
reverse pass as ``nn.grad`` and stopped at the node's inputs.  Composite rows
use their builder as graph form.  Rows whose backward is not the derivative of
their forward (clip_grad_by_value, clip_grad_by_norm, mean_subtraction's
approximation in training) build their gradient graph directly.  The graph
forms never touch running statistics.
"""
import numpy as np

import nncy.functions as F
from nncy import _composite
from nncy import _grad as G
from nncy._table import BY_TYPE


def _functions_between(outputs, stop):
    """Functions producing ``outputs`` down to the variables in ``stop``,
    inputs before consumers."""
    order, seen = [], set()
    stack = [(o.parent, False) for o in outputs if o.parent is not None and id(o) not in stop]
    while stack:
        f, done = stack.pop()
        if done:
            order.append(f)
            continue
        if id(f) in seen:
            continue
        seen.add(id(f))
        stack.append((f, True))
        for x in f.inputs:
            p = x.parent
            if p is not None and id(x) not in stop and id(p) not in seen:
                stack.append((p, False))
    return order


def _backprop(outputs, inputs, gys):
    """Gradient graphs of ``outputs`` (weighted by ``gys``) with respect to
    ``inputs``, over the functions between them only."""
    stop = {id(x) for x in inputs}
    grads = {id(o): g for o, g in zip(outputs, gys) if g is not None}
    for f in reversed(_functions_between(outputs, stop)):
        outs = f.outputs
        g_out = [grads.get(id(o)) for o in outs]
        if all(g is None for g in g_out):
            continue
        g_out = [g if g is not None else G._const(0.0, o.shape) for g, o in zip(g_out, outs)]
        spec = BY_TYPE[f.info.type_name]
        build = G._pointwise if spec.kind == 'pointwise' else G._BUILDERS.get(spec.type_name)
        if build is None:
            raise NotImplementedError('grad: %s has no gradient graph yet' % spec.name)
        for x, gx in zip(f.inputs, build(f, f.inputs, outs, g_out)):
            if gx is None or not x.need_grad:
                continue
            prev = grads.get(id(x))
            grads[id(x)] = gx if prev is None else F.add2(prev, gx)
    return [grads.get(id(x)) for x in inputs]


def _impl(f):
    """The implementation of node ``f`` (inside a float16-storage wrapper)."""
    return getattr(f.impl, 'inner', f.impl)


def _by_name(f, inputs):
    """{input name: Variable} of node ``f`` (left-out optional inputs absent)."""
    omitted = getattr(_impl(f), 'omitted', ())
    names = [i.name for i in f.spec.inputs if i.name not in omitted]
    return dict(zip(names, inputs))


def graph_form(*type_names):
    """Decorator: ``form(f, inputs) -> output(s)`` rewrites the forward of node
    ``f`` with primitive functions; the rows' gradient graphs are its gradients."""
    def deco(form):
        def build(f, inputs, outputs, gys):
            outs = form(f, list(inputs))
            outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
            return _backprop(outs, list(inputs), gys[:len(outs)])
        for t in type_names:
            G.grad_builder(t)(build)
        return form
    return deco


# ---- composite rows ----------------------------------------------------------

def _composite_form(f, inputs):
    given = iter(inputs)
    omitted = getattr(_impl(f), 'omitted', ())
    args_in = [None if i.name in omitted else next(given) for i in f.spec.inputs]
    return _composite.builder(f.spec.type_name)(*args_in, **f.args)


for _s in BY_TYPE.values():
    if _s.kind == 'composite':
        graph_form(_s.type_name)(_composite_form)


# ---- normalizations ------------------------------------------------------------

def _standardize(x, kept, eps, mean=None, var=None):
    """(x - mean) / sqrt(var + eps) over the axes not in ``kept``, with the
    statistics of x unless given; returns it with the mean and variance."""
    red = tuple(i for i in range(len(x.shape)) if i not in kept)
    if mean is None:
        mean = F.mean(x, red, keepdims=True)
        d = F.sub2(x, mean)
        var = F.mean(F.mul2(d, d), red, keepdims=True)
    else:
        d = F.sub2(x, mean)
    return F.div2(d, F.pow_scalar(F.add_scalar(var, eps), 0.5)), mean, var


def _affine(y, gamma, beta):
    if gamma is not None:
        y = F.mul2(y, gamma)
    if beta is not None:
        y = F.add2(y, beta)
    return y


def _stats_out(f, y, mean, var):
    return (y, mean, var) if f.args.get('output_stat') else y


def _bn(f, v):
    kept = _impl(f).grp.kept
    if f.args['batch_stat']:
        xhat, mean, var = _standardize(v['x'], kept, f.args['eps'])
    else:
        xhat, mean, var = _standardize(v['x'], kept, f.args['eps'], v['mean'], v['variance'])
    return _affine(xhat, v.get('gamma'), v.get('beta')), mean, var


@graph_form('BatchNormalization', 'SyncBatchNormalization')
def _batch_norm(f, inputs):
    return _stats_out(f, *_bn(f, _by_name(f, inputs)))


@graph_form('FusedBatchNormalization')
def _fused_batch_norm(f, inputs):
    v = _by_name(f, inputs)
    y, mean, var = _bn(f, v)
    return _stats_out(f, F.relu(F.add2(y, v['z']) if 'z' in v else y), mean, var)


@graph_form('LayerNormalization', 'InstanceNormalization', 'WeightStandardization',
            'GroupNormalization')
def _tensor_norm(f, inputs):
    v = _by_name(f, inputs)
    x = v.get('x', v.get('w'))
    impl = _impl(f)
    xv = F.reshape(x, impl.view, inplace=False) if tuple(impl.view) != tuple(x.shape) else x
    xhat, mean, var = _standardize(xv, impl.grp.kept, f.args['eps'])
    if xv is not x:
        xhat = F.reshape(xhat, x.shape, inplace=False)
    return _stats_out(f, _affine(xhat, v.get('gamma'), v.get('beta')), mean, var)


# ---- mean subtraction, clipping, prelu ---------------------------------------------

@G.grad_builder('MeanSubtraction')
def _mean_subtraction(f, inputs, outputs, gys):
    factor = 1.0
    if f.args['update_running_mean']:
        count = int(inputs[2].d.reshape(-1)[0])
        factor = 1.0 - 1.0 / max(count * _impl(f).grp.m, 1)
    return [F.mul_scalar(gys[0], factor), None, None]


@graph_form('ClipByValue')
def _clip_by_value(f, inputs):
    x, lo, hi = inputs
    return F.minimum2(F.maximum2(x, lo), hi)


@G.grad_builder('ClipGradByValue')
def _clip_grad_by_value(f, inputs, outputs, gys):
    return [F.clip_by_value(gys[0], inputs[1], inputs[2]), None, None]


def _l2(x, kept):
    red = tuple(i for i in range(len(x.shape)) if i not in kept)
    return F.pow_scalar(F.sum(F.mul2(x, x), red, keepdims=True), 0.5)


@graph_form('ClipByNorm')
def _clip_by_norm(f, inputs):
    x, c = inputs
    c = F.reshape(c, (), inplace=False) if c.shape != () else c
    n = _l2(x, _impl(f).grp.kept)
    return F.div2(F.mul2(x, c), F.maximum2(n, c))


@G.grad_builder('ClipGradByNorm')
def _clip_grad_by_norm(f, inputs, outputs, gys):
    c = f.args['clip_norm']
    g = gys[0]
    return [F.mul_scalar(F.div2(g, _l2(g, _impl(f).grp.kept)), 1.0 if c is None else c)]


@graph_form('PReLU')
def _prelu(f, inputs):
    x, w = inputs
    if int(np.prod(w.shape)) == 1:
        wb = F.reshape(w, (), inplace=False) if w.shape != () else w
    else:
        base = f.args['base_axis'] % len(x.shape)
        wb = F.reshape(w, tuple(n if i == base else 1 for i, n in enumerate(x.shape)),
                       inplace=False)
    return F.add2(F.relu(x), F.mul2(wb, F.minimum_scalar(x, 0.0)))
