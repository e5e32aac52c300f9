"""``nn.grad``: gradients as graphs of nncy functions, so they can be
differentiated again (second-order gradients, gradient penalties).

Pointwise rows need no extra code: their gradient expressions from the table
are compiled into function calls here (``gy * y * (1 - y)`` becomes
``mul2(mul2(gy, y), r_sub_scalar(y, 1))``).  Structured functions register a
builder with :func:`grad_builder`.
"""
import ast

import numpy as np

import nncy.functions as F
from nncy._core import Variable, sorted_functions
from nncy._table import BY_TYPE

_BUILDERS = {}


def grad_builder(type_name):
    """Decorator: ``fn(f, inputs, outputs, grad_outputs) -> [grad or None per
    input]`` builds the input gradients of function node ``f`` as a graph."""
    def deco(fn):
        _BUILDERS[type_name] = fn
        return fn
    return deco


def _const(value, shape):
    v = Variable(tuple(shape))
    v.d = value
    return v


def _sum_to(g, shape):
    """Sum a broadcast gradient back to ``shape``."""
    shape = tuple(shape)
    if g.shape == shape:
        return g
    lead = len(g.shape) - len(shape)
    axes = [i for i in range(len(g.shape))
            if i < lead or (shape[i - lead] == 1 and g.shape[i] != 1)]
    if axes:
        g = F.sum(g, axes, keepdims=True)
    return F.reshape(g, shape, inplace=False) if g.shape != shape else g


# ---- pointwise rows: compile the table's gradient expressions ---------------

_SCALAR_OPS = {  # (op, variable on the left) -> function of (x, c)
    (ast.Add, True): lambda x, c: F.add_scalar(x, c),
    (ast.Add, False): lambda x, c: F.add_scalar(x, c),
    (ast.Sub, True): lambda x, c: F.add_scalar(x, -c),
    (ast.Sub, False): lambda x, c: F.r_sub_scalar(x, c),
    (ast.Mult, True): lambda x, c: F.mul_scalar(x, c),
    (ast.Mult, False): lambda x, c: F.mul_scalar(x, c),
    (ast.Div, True): lambda x, c: F.mul_scalar(x, 1.0 / c),
    (ast.Div, False): lambda x, c: F.r_div_scalar(x, c),
    (ast.Pow, True): lambda x, c: F.pow_scalar(x, c),
    (ast.Pow, False): lambda x, c: F.r_pow_scalar(x, c),
}
_ARRAY_OPS = {ast.Add: F.add2, ast.Sub: F.sub2, ast.Mult: F.mul2, ast.Div: F.div2,
              ast.Pow: F.pow2}
_PY_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
           ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b,
           ast.Pow: lambda a, b: a ** b}
# comparison -> (array function, scalar function with the variable on the left,
# the same comparison with operands swapped)
_COMPARE = {ast.Gt: ('greater', 'greater_scalar', ast.Lt),
            ast.GtE: ('greater_equal', 'greater_equal_scalar', ast.LtE),
            ast.Lt: ('less', 'less_scalar', ast.Gt),
            ast.LtE: ('less_equal', 'less_equal_scalar', ast.GtE),
            ast.Eq: ('equal', 'equal_scalar', ast.Eq),
            ast.NotEq: ('not_equal', 'not_equal_scalar', ast.NotEq)}
_CALLS = {
    'pow': lambda a, b: _binop(ast.Pow, a, b),
    'max': lambda a, b: (F.maximum2(a, b) if _is_var(a) and _is_var(b)
                         else F.maximum_scalar(*((a, b) if _is_var(a) else (b, a)))),
    'min': lambda a, b: (F.minimum2(a, b) if _is_var(a) and _is_var(b)
                         else F.minimum_scalar(*((a, b) if _is_var(a) else (b, a)))),
    'sqrt': lambda a: F.pow_scalar(a, 0.5),
    'log1p': lambda a: F.log(F.add_scalar(a, 1.0)),
    'expm1': lambda a: F.add_scalar(F.exp(a), -1.0),
}


def _is_var(v):
    return isinstance(v, Variable)


def _binop(op, a, b):
    if not _is_var(a) and not _is_var(b):
        return _PY_OPS[op](a, b)
    if _is_var(a) and _is_var(b):
        return _ARRAY_OPS[op](a, b)
    return _SCALAR_OPS[(op, _is_var(a))](a if _is_var(a) else b, b if _is_var(a) else a)


def _select(c, a, b):
    """``a where c else b`` for a 0/1 condition ``c``, as b + c * (a - b)."""
    if not _is_var(c):
        return a if c else b
    return _binop(ast.Add, b, _binop(ast.Mult, c, _binop(ast.Sub, a, b)))


class _Compiler:
    def __init__(self, names, row):
        self.names = names
        self.row = row

    def __call__(self, node):
        return getattr(self, type(node).__name__)(node)

    def Expression(self, n):
        return self(n.body)

    def Name(self, n):
        return self.names[n.id]

    def Constant(self, n):
        return float(n.value)

    def BinOp(self, n):
        return _binop(type(n.op), self(n.left), self(n.right))

    def UnaryOp(self, n):
        v = self(n.operand)
        if isinstance(n.op, ast.USub):
            return F.mul_scalar(v, -1.0) if _is_var(v) else -v
        if isinstance(n.op, ast.Not):
            return F.logical_not(v) if _is_var(v) else float(not v)
        return v

    def Compare(self, n):
        result, left = None, self(n.left)
        for op, comp in zip(n.ops, n.comparators):
            right = self(comp)
            arr, scal, swapped = _COMPARE[type(op)]
            if _is_var(left) and _is_var(right):
                c = getattr(F, arr)(left, right)
            elif _is_var(left):
                c = getattr(F, scal)(left, right)
            elif _is_var(right):
                c = getattr(F, _COMPARE[swapped][1])(right, left)
            else:
                c = float(_PY_COMPARE[type(op)](left, right))
            result = c if result is None else _binop(ast.Mult, result, c)
            left = right
        return result

    def BoolOp(self, n):
        vals = [self(v) for v in n.values]
        out = vals[0]
        for v in vals[1:]:
            if isinstance(n.op, ast.And):
                out = _binop(ast.Mult, out, v)
            else:   # a or b == max(a, b) for 0/1 values
                out = _CALLS['max'](out, v) if (_is_var(out) or _is_var(v)) else max(out, v)
        return out

    def IfExp(self, n):
        return _select(self(n.test), self(n.body), self(n.orelse))

    def Call(self, n):
        name = n.func.id
        args = [self(a) for a in n.args]
        if name in _CALLS:
            return _CALLS[name](*args)
        fn = getattr(F, name, None)
        if fn is None or not all(_is_var(a) for a in args):
            raise NotImplementedError('nn.grad: %s: no function graph for %s() in its '
                                      'gradient' % (self.row, name))
        return fn(*args)

    def generic_visit(self, n):
        raise NotImplementedError('nn.grad: %s: unsupported expression %s'
                                  % (self.row, type(n).__name__))


_PY_COMPARE = {ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b,
               ast.Lt: lambda a, b: a < b, ast.LtE: lambda a, b: a <= b,
               ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b}


def _pointwise(f, inputs, outputs, gys):
    spec = f.spec
    names = {i.name: x for i, x in zip(spec.inputs, inputs)}
    names.update(f.args)
    names.update(y=outputs[0], gy=gys[0])
    out = []
    for x, expr in zip(inputs, spec.grads):
        if expr is None:
            out.append(None)
            continue
        g = _Compiler(names, spec.name)(ast.parse(expr, mode='eval'))
        if not _is_var(g):   # a constant gradient, e.g. 'gy' folded to a number
            g = _const(g, outputs[0].shape)
        out.append(_sum_to(g, x.shape))
    return out


# ---- structured functions --------------------------------------------------

@grad_builder('Affine')
def _affine(f, inputs, outputs, gys):
    x, w = inputs[0], inputs[1]
    base = f.args['base_axis']
    m, k = int(np.prod(x.shape[:base])), w.shape[0]
    n = int(np.prod(w.shape[1:]))
    gy = F.reshape(gys[0], (m, n), inplace=False)
    x2 = F.reshape(x, (m, k), inplace=False)
    w2 = F.reshape(w, (k, n), inplace=False)
    gx = F.reshape(F.batch_matmul(gy, w2, transpose_b=True), x.shape, inplace=False)
    gw = F.reshape(F.batch_matmul(x2, gy, transpose_a=True), w.shape, inplace=False)
    out = [gx, gw]
    if len(inputs) > 2:
        out.append(F.reshape(F.sum(gy, 0), inputs[2].shape, inplace=False))
    return out


@grad_builder('BatchMatmul')
def _batch_matmul(f, inputs, outputs, gys):
    a, b = inputs
    g = gys[0]
    ta, tb = f.args['transpose_a'], f.args['transpose_b']
    mm = F.batch_matmul
    if not ta:
        ga = mm(g, b, False, not tb)
    else:
        ga = mm(b, g, tb, True)
    if not tb:
        gb = mm(a, g, not ta, False)
    else:
        gb = mm(g, a, True, ta)
    return [_sum_to(ga, a.shape), _sum_to(gb, b.shape)]


def _reduction_axes(f, x):
    axis = f.args['axis']
    if axis is None:
        return tuple(range(len(x.shape)))
    axes = (axis,) if isinstance(axis, int) else axis
    return tuple(a % len(x.shape) for a in axes)


def _spread(f, x, gy, scale=1.0):
    """gy of a reduction, broadcast back over the reduced axes of x."""
    axes = _reduction_axes(f, x)
    kept = tuple(1 if i in axes else s for i, s in enumerate(x.shape))
    g = F.reshape(gy, kept, inplace=False) if gy.shape != kept else gy
    if scale != 1.0:
        g = F.mul_scalar(g, scale)
    return F.add2(_const(0.0, x.shape), g)


@grad_builder('Sum')
def _sum(f, inputs, outputs, gys):
    return [_spread(f, inputs[0], gys[0])]


@grad_builder('Mean')
def _mean(f, inputs, outputs, gys):
    x = inputs[0]
    n = int(np.prod([x.shape[a] for a in _reduction_axes(f, x)]))
    return [_spread(f, x, gys[0], 1.0 / n)]


def _softmax_axis(f, x):
    axis = f.args['axis']
    return len(x.shape) - 1 if axis is None else axis % len(x.shape)


@grad_builder('Softmax')
def _softmax(f, inputs, outputs, gys):
    y, gy = outputs[0], gys[0]
    s = F.sum(F.mul2(gy, y), _softmax_axis(f, y), keepdims=True)
    return [F.mul2(y, F.sub2(gy, s))]


@grad_builder('LogSoftmax')
def _log_softmax(f, inputs, outputs, gys):
    y, gy = outputs[0], gys[0]
    s = F.sum(gy, _softmax_axis(f, y), keepdims=True)
    return [F.sub2(gy, F.mul2(F.exp(y), s))]


@grad_builder('SoftmaxCrossEntropy')
def _softmax_cross_entropy(f, inputs, outputs, gys):
    x, t = inputs
    axis = _softmax_axis(f, x)
    iota = np.arange(x.shape[axis], dtype=np.float32).reshape(
        [x.shape[axis] if i == axis else 1 for i in range(len(x.shape))])
    target = F.reshape(t, outputs[0].shape, inplace=False) if t.shape != outputs[0].shape \
        else t
    onehot = F.equal(_const(iota, iota.shape), target)
    return [F.mul2(F.sub2(F.softmax(x, axis), onehot), gys[0]), None]


@grad_builder('Reshape')
def _reshape(f, inputs, outputs, gys):
    return [F.reshape(gys[0], inputs[0].shape, inplace=False)]


@grad_builder('Sink')
def _sink(f, inputs, outputs, gys):
    if not f.args['one_input_grad']:
        return [None] * len(inputs)
    return [_const(1.0, x.shape) for x in inputs]


def grad(outputs, inputs, grad_outputs=None, persistent_outputs=None,
         bind_grad_output=False):
    """Gradients of ``outputs`` (weighted by ``grad_outputs``, ones by default)
    with respect to ``inputs``, as Variables of a new graph that can be
    differentiated again.  Inputs the outputs do not depend on get None."""
    outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    if grad_outputs is None:
        grad_outputs = [None] * len(outputs)
    if len(grad_outputs) != len(outputs):
        raise ValueError('grad: argument grad_outputs has %d entries for %d outputs'
                         % (len(grad_outputs), len(outputs)))
    grads = {}
    for o, g in zip(outputs, grad_outputs):
        if g is None:
            g = 1.0
        if not isinstance(g, Variable):
            g = _const(np.asarray(g, np.float32), o.shape)
        grads[id(o)] = g
    for f in reversed(sorted_functions(outputs)):
        outs = f.outputs
        gys = [grads.get(id(o)) for o in outs]
        if all(g is None for g in gys):
            continue
        gys = [g if g is not None else _const(0.0, o.shape) for g, o in zip(gys, outs)]
        spec = BY_TYPE[f.info.type_name]
        builder = _pointwise if spec.kind == 'pointwise' else _BUILDERS.get(spec.type_name)
        if builder is None:
            raise NotImplementedError('grad: %s has no gradient graph yet' % spec.name)
        for x, gx in zip(f.inputs, builder(f, f.inputs, outs, gys)):
            if gx is None or not x.need_grad:
                continue
            prev = grads.get(id(x))
            grads[id(x)] = gx if prev is None else F.add2(prev, gx)
    return [grads.get(id(x)) for x in inputs]


from nncy import _grad_norm  # noqa: E402,F401  (activation and normalization rows)

from nncy import _grad_layers  # noqa: E402,F401  (layers and array manipulation)

from nncy import _grad_loss  # noqa: E402,F401  (losses, quantization, signal processing)
