"""A reusable checker for ``nncy.functions``.

Every function test goes through :func:`check_function`, which compares one
``F.*`` call against a NumPy reference written from the math and then exercises
the graph machinery around it:

(a) forward against the reference;
(b) the backward pass against a central finite-difference gradient of
    ``sum(y * dy)`` computed by perturbing the inputs of nncy's *own* forward
    (the reference is never differentiated); optionally also against an
    analytic gradient reference (``ref_grad``) with tight tolerances;
(c) accumulation: a leaf's pre-filled gradient is added to, both through
    ``Variable.backward`` and through ``Function.backward(..., accum=[True]..)``,
    while ``accum=[False]...`` overwrites;
(d) static graph, ``nn.auto_forward()`` and imperative (``NdArray``) calls agree;
(e) ``forward(clear_buffer=True)``, ``forward(clear_no_need_grad=True)`` and
    ``backward(clear_buffer=True)`` on a small chain built around the function
    change no result.

:func:`check_raises` asserts that a bad call raises the expected exception at
graph-construction time, with a message that names the function and the
offending argument.
"""

import numpy as np
import pytest

import nncy as nn
import nncy.functions as F

from nncy import _table


__all__ = ['check_function', 'check_raises', 'CheckResult', 'unbroadcast',
           'as_tuple', 'function_names']


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------

def as_tuple(x):
    """Normalise a single value / list / tuple of outputs to a tuple."""
    if isinstance(x, (tuple, list)):
        return tuple(x)
    return (x,)


def unbroadcast(g, shape):
    """Sum a broadcast gradient ``g`` back to ``shape`` (NumPy rules)."""
    g = np.asarray(g)
    shape = tuple(shape)
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for ax, n in enumerate(shape):
        if n == 1 and g.shape[ax] != 1:
            g = g.sum(axis=ax, keepdims=True)
    return g.reshape(shape)


def function_names(fn):
    """Names by which an error message may refer to ``fn``: its ``F.*`` name and,
    when the table knows it, its type name (``relu`` / ``ReLU``)."""
    name = getattr(fn, '__name__', str(fn))
    names = [name]
    if name in _table.BY_NAME:
        names.append(_table.BY_NAME[name].type_name)
    return names


def _is_float(a):
    return a is not None and np.issubdtype(np.asarray(a).dtype, np.floating)


def _randn(rng, shape):
    return np.asarray(rng.randn(*shape), dtype=np.float32).reshape(shape)


def _fmt(a):
    a = np.asarray(a)
    if a.size > 12:
        return 'array%s' % (a.shape,)
    return np.array2string(a, precision=6)


def _close(actual, expected, atol, rtol, what):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (
        '%s: shape %s, expected %s' % (what, actual.shape, expected.shape))
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=rtol,
                               err_msg=what, equal_nan=True)


class CheckResult:
    """What :func:`check_function` computed, for further assertions."""

    def __init__(self, outputs, grads, dys, variables, function):
        self.outputs = outputs      # tuple of numpy arrays (static forward)
        self.grads = grads          # list (per input) of numpy arrays or None
        self.dys = dys              # upstream gradients used
        self.variables = variables  # the leaf Variables of the static graph
        self.function = function    # the Function node (parent of outputs)


# --------------------------------------------------------------------------
# graph helpers
# --------------------------------------------------------------------------

def _make_leaves(inputs, diff):
    leaves = []
    for a, d in zip(inputs, diff):
        if a is None:
            leaves.append(None)
            continue
        v = nn.Variable.from_numpy_array(np.array(a, copy=True), need_grad=bool(d))
        leaves.append(v)
    return leaves


def _call(fn, args_in, args):
    return as_tuple(fn(*args_in, **args))


def _backward(outputs, dys, clear_buffer=False):
    """Back-propagate ``dys`` from ``outputs`` (one or several)."""
    if len(outputs) == 1:
        outputs[0].backward(dys[0], clear_buffer=clear_buffer)
        return
    for o, d in zip(outputs, dys):
        o.g = d
    F.sink(*outputs, one_input_grad=False).backward(clear_buffer=clear_buffer)


def _forward(outputs, **kw):
    if len(outputs) == 1:
        outputs[0].forward(**kw)
    else:
        # all outputs are roots: clear_buffer / clear_no_need_grad keep them
        nn.forward_all(list(outputs), **kw)


def _zero_grads(leaves, diff):
    for v, d in zip(leaves, diff):
        if v is not None and d:
            v.g = 0


def _objective(outputs, dys):
    return float(sum(np.sum(np.asarray(o.d, dtype=np.float64) * d.astype(np.float64))
                     for o, d in zip(outputs, dys)))


# --------------------------------------------------------------------------
# the checker
# --------------------------------------------------------------------------

def check_function(fn, inputs, ref, args=None, *, grad_inputs=None,
                   atol=1e-5, rtol=1e-5,
                   fd_eps=1e-3, fd_atol=5e-3, fd_rtol=1e-2, fd_max_elems=48,
                   ref_grad=None, grad_atol=1e-5, grad_rtol=1e-5,
                   check_fd=True, check_accum=True, check_modes=True,
                   check_clear_buffer=True, seed=313):
    """Check ``fn(*inputs, **args)`` against ``ref(*inputs, **args)``.

    Parameters
    ----------
    fn : the ``F.*`` function.
    inputs : list of numpy arrays; ``None`` stands for an omitted optional input.
        Float arrays are stored in the dtype given (use float32), integer arrays
        (labels) as given.
    ref : ``ref(*inputs, **args)`` -> array or tuple of arrays, from the math.
    grad_inputs : list of bool, which inputs are differentiated; default: every
        floating point input.
    ref_grad : optional ``ref_grad(*inputs, *dys, **args)`` -> one gradient (or
        None) per input, an analytic reference compared with tight tolerances.
    fd_max_elems : at most this many elements per input are checked by finite
        differences (a random subset for larger inputs).

    Returns a :class:`CheckResult`.
    """
    args = dict(args or {})
    inputs = [None if a is None else np.asarray(a) for a in inputs]
    if grad_inputs is None:
        grad_inputs = [_is_float(a) for a in inputs]
    diff = [bool(g) and a is not None for g, a in zip(grad_inputs, inputs)]
    rng = np.random.RandomState(seed)
    name = getattr(fn, '__name__', str(fn))

    expected = tuple(np.asarray(e) for e in as_tuple(ref(*inputs, **args)))

    # ---- (a) static forward vs the reference --------------------------------
    leaves = _make_leaves(inputs, diff)
    outs = _call(fn, leaves, args)
    assert len(outs) == len(expected), (
        '%s: %d outputs, reference gives %d' % (name, len(outs), len(expected)))
    for o, e in zip(outs, expected):
        assert tuple(o.shape) == e.shape, (
            '%s: output shape %s before forward, expected %s'
            % (name, tuple(o.shape), e.shape))
    _forward(outs)
    y = tuple(np.array(o.d, copy=True) for o in outs)
    for k, (yk, ek) in enumerate(zip(y, expected)):
        _close(yk, ek, atol, rtol, '%s: forward output %d' % (name, k))
    # forward is repeatable
    _forward(outs)
    for k, (o, yk) in enumerate(zip(outs, y)):
        _close(o.d, yk, 0, 0, '%s: second forward output %d' % (name, k))

    function = outs[0].parent
    dys = [_randn(rng, e.shape) for e in expected]
    grads = [None] * len(inputs)
    if not any(diff):
        return CheckResult(y, grads, dys, leaves, function)

    # ---- (b) backward vs finite differences --------------------------------
    _zero_grads(leaves, diff)
    _backward(outs, dys)
    grads = [np.array(v.g, copy=True) if d else None for v, d in zip(leaves, diff)]
    for i, g in enumerate(grads):
        if g is not None:
            assert g.shape == inputs[i].shape, (
                '%s: grad of input %d has shape %s, expected %s'
                % (name, i, g.shape, inputs[i].shape))
            assert np.all(np.isfinite(g)), '%s: non-finite grad of input %d' % (name, i)
    # inputs that are not differentiated keep need_grad False and get no grad
    if ref_grad is not None:
        gexp = as_tuple(ref_grad(*inputs, *dys, **args))
        for i, (g, ge) in enumerate(zip(grads, gexp)):
            if g is not None and ge is not None:
                _close(g, ge, grad_atol, grad_rtol,
                       '%s: grad of input %d vs analytic reference' % (name, i))

    if check_fd:
        for i, d in enumerate(diff):
            if not d:
                continue
            v = leaves[i]
            base = np.array(inputs[i], copy=True)
            n = base.size
            idx = np.arange(n) if n <= fd_max_elems else rng.choice(n, fd_max_elems, replace=False)
            num = np.empty(len(idx))
            for k, j in enumerate(idx):
                xp = base.copy().reshape(-1)
                xm = base.copy().reshape(-1)
                xp[j] += fd_eps
                xm[j] -= fd_eps
                v.d = xp.reshape(base.shape)
                _forward(outs)
                fp = _objective(outs, dys)
                v.d = xm.reshape(base.shape)
                _forward(outs)
                fm = _objective(outs, dys)
                step = float(xp[j]) - float(xm[j])   # the step actually stored
                num[k] = (fp - fm) / step
            v.d = base
            ana = grads[i].reshape(-1)[idx]
            _close(ana, num, fd_atol, fd_rtol,
                   '%s: grad of input %d vs finite differences (elements %s)'
                   % (name, i, _fmt(idx)))
        _forward(outs)

    # ---- (c) accumulation ---------------------------------------------------
    if check_accum:
        # pre + grad in float32; the engine may round a fused update differently
        acc_atol, acc_rtol = max(10 * atol, 1e-6), max(10 * rtol, 1e-6)
        pre = [_randn(rng, a.shape) if d else None for a, d in zip(inputs, diff)]
        for v, p in zip(leaves, pre):
            if p is not None:
                v.g = p
        _backward(outs, dys)
        for i, (v, p) in enumerate(zip(leaves, pre)):
            if p is not None:
                _close(v.g, p + grads[i], acc_atol, acc_rtol,
                       '%s: leaf grad of input %d does not accumulate over backward'
                       % (name, i))

        # Function.backward called directly
        f = outs[0].parent
        f_in = [v for v in leaves if v is not None]
        f_pre = [p for v, p in zip(leaves, pre) if v is not None]
        f_grads = [g for v, g in zip(leaves, grads) if v is not None]
        for o, d in zip(outs, dys):
            o.g = d
        for v, p in zip(f_in, f_pre):
            if p is not None:
                v.g = p
        f.backward(f_in, list(outs), accum=[True] * len(f_in))
        for i, (v, p, g) in enumerate(zip(f_in, f_pre, f_grads)):
            if p is not None:
                _close(v.g, p + g, acc_atol, acc_rtol,
                       '%s: Function.backward(accum=True) on input %d' % (name, i))
        for v, p in zip(f_in, f_pre):
            if p is not None:
                v.g = p
        f.backward(f_in, list(outs), accum=[False] * len(f_in))
        for i, (v, p, g) in enumerate(zip(f_in, f_pre, f_grads)):
            if p is not None:
                _close(v.g, g, atol, rtol,
                       '%s: Function.backward(accum=False) on input %d' % (name, i))

    # ---- (d) static, auto_forward and imperative agree ----------------------
    if check_modes:
        with nn.auto_forward():
            a_leaves = _make_leaves(inputs, diff)
            a_outs = _call(fn, a_leaves, args)
            for k, (o, yk) in enumerate(zip(a_outs, y)):
                _close(o.d, yk, atol, rtol, '%s: auto_forward output %d' % (name, k))
            _zero_grads(a_leaves, diff)
            _backward(a_outs, dys)
        for i, (v, g) in enumerate(zip(a_leaves, grads)):
            if g is not None:
                _close(v.g, g, atol, rtol, '%s: auto_forward grad of input %d' % (name, i))

        nd_in = [None if a is None else nn.NdArray.from_numpy_array(np.array(a, copy=True))
                 for a in inputs]
        nd_out = _call(fn, nd_in, args)
        for k, (o, yk) in enumerate(zip(nd_out, y)):
            assert isinstance(o, nn.NdArray), (
                '%s: imperative call returned %s, expected NdArray' % (name, type(o)))
            _close(o.data, yk, atol, rtol, '%s: imperative output %d' % (name, k))

    # ---- (e) clear_buffer on a chain ----------------------------------------
    if check_clear_buffer:
        c_leaves = _make_leaves(inputs, diff)
        c_in = [F.identity(v) if d else v for v, d in zip(c_leaves, diff)]
        c_mid = _call(fn, c_in, args)
        c_outs = tuple(F.identity(o) for o in c_mid)
        if len(c_outs) > 1:
            # several outputs run under one F.sink, which would free them as
            # intermediates: keep them to compare
            for o in c_outs:
                o.persistent = True
        for rep in range(2):
            _forward(c_outs, clear_no_need_grad=True)
            for k, (o, yk) in enumerate(zip(c_outs, y)):
                _close(o.d, yk, atol, rtol,
                       '%s: output %d after forward(clear_no_need_grad=True), run %d'
                       % (name, k, rep))
            _zero_grads(c_leaves, diff)
            _backward(c_outs, dys, clear_buffer=True)
            for i, (v, g) in enumerate(zip(c_leaves, grads)):
                if g is not None:
                    _close(v.g, g, atol, rtol,
                           '%s: grad of input %d after backward(clear_buffer=True), run %d'
                           % (name, i, rep))
        _forward(c_outs, clear_buffer=True)
        for k, (o, yk) in enumerate(zip(c_outs, y)):
            _close(o.d, yk, atol, rtol,
                   '%s: output %d after forward(clear_buffer=True)' % (name, k))

    return CheckResult(y, grads, dys, leaves, function)


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------

def check_raises(fn, inputs, args=None, exc=(ValueError, TypeError), match_words=(),
                 name_function=True):
    """Assert that building ``fn(*inputs, **args)`` raises ``exc``.

    ``inputs`` are numpy arrays (turned into Variables; ``None`` stays None) or
    ready-made Variables / other objects, passed through unchanged.  The message
    must contain every word of ``match_words`` (case-insensitive) and, when
    ``name_function``, the function's ``F.*`` name or type name.
    Returns the exception.
    """
    args = dict(args or {})
    call_in = []
    for a in inputs:
        if isinstance(a, np.ndarray):
            call_in.append(nn.Variable.from_numpy_array(a))
        else:
            call_in.append(a)
    with pytest.raises(exc) as info:
        fn(*call_in, **args)
    msg = str(info.value)
    low = msg.lower()
    if name_function:
        names = function_names(fn)
        assert any(n.lower() in low for n in names), (
            'error message %r does not name the function (%s)' % (msg, ' / '.join(names)))
    for w in match_words:
        assert str(w).lower() in low, 'error message %r does not mention %r' % (msg, w)
    return info.value
