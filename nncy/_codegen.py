"""Generates the pointwise kernels from the function table.

Each pointwise row of ``nncy/_table.py`` gives its forward expression and one
gradient expression per input, in a small Python-syntax language.  This module
parses them with :mod:`ast` and writes

* ``rust/src/ops_gen.rs``: one ``#[inline(always)]`` scalar function per
  expression, the dispatch functions that instantiate the generic SIMD and
  threaded kernels of ``rust/src/pointwise.rs`` with them (one loop per op),
  the op descriptions used for argument checks, f64 reference versions for the
  Rust tests, and the table signature;
* ``nncy/cuda/kernels/pointwise_gen.cu``: the same expressions as CUDA device
  functions ``nncy_fwd_<name>`` and ``nncy_grad<i>_<name>``, selected by op
  code in four ``__global__`` kernel templates (unary and binary, forward and
  gradient, binary ones over a broadcast layout) that serve every row;
  ``nncy/cuda/_sources.py`` lists the instantiations.

Usage::

    python -m nncy._codegen           # regenerate both files
    python -m nncy._codegen --check   # exit 1 if they are stale
    python nncy/_codegen.py [--check] # the same without importing nncy

The build does not run the generator: the generated files are committed.

The expression language
-----------------------
Names: the row's inputs (``x``, or ``x0``, ``x1``), its numeric arguments
(types int and float, passed to the kernels as f32 parameters p[0], p[1], ...
in row order), ``y`` and ``gy`` (gradients only), and the constants in
``CONSTANTS``.  Numbers, ``+ - * / **``, unary ``-``, comparisons (chains
allowed), ``a if c else b``, ``and``/``or``/``not``, and the calls in
``CALLS``.  Comparisons and ``isnan``/``isinf`` give booleans, which become
1.0/0.0 where a number is needed; a number used as a condition is true when
non-zero.

:func:`signature` (cheap, no side effects) hashes the rows; ``import nncy``
compares it with the value compiled into the library.
"""
import math
import os
import sys

# Bump when the generator's output semantics change.
GENERATOR_VERSION = 1

_HERE = os.path.dirname(os.path.abspath(__file__))
RUST_OUT = os.path.join(_HERE, os.pardir, 'rust', 'src', 'ops_gen.rs')
CUDA_OUT = os.path.join(_HERE, 'cuda', 'kernels', 'pointwise_gen.cu')


def _table():
    if __package__:  # imported as nncy._codegen
        from . import _table
        return _table
    # Run as a script (python nncy/_codegen.py): load the table by path,
    # without importing the nncy package (which needs the compiled library).
    import importlib.util
    spec = importlib.util.spec_from_file_location('_nncy_table', os.path.join(_HERE, '_table.py'))
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    return table


# ---------------------------------------------------------------------------
# Signature


def _numeric_args(spec):
    """The arguments passed to the kernels as f32 parameters (``Spec.params``)."""
    return list(spec.params)


def canonical_text(table=None):
    """The text that :func:`signature` hashes: one line per pointwise row."""
    t = table or _table()
    lines = ['nncy-pointwise v%d' % GENERATOR_VERSION]
    for kind, specs in (('unary', t.UNARY), ('binary', t.BINARY)):
        for s in specs:
            grads = '|'.join('None' if g is None else g for g in (s.grads or ()))
            lines.append('\t'.join([kind, str(s.code), s.type_name,
                                    ','.join(i.name for i in s.inputs),
                                    ','.join(_numeric_args(s)), s.fwd or '', grads]))
    return '\n'.join(lines) + '\n'


def fnv1a64(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
    return h


_signature = None


def signature():
    """u64 hash of the pointwise rows; equals ``nncy_ops_signature()`` of a
    library generated from the same table."""
    global _signature
    if _signature is None:
        _signature = fnv1a64(canonical_text().encode())
    return _signature


# ---------------------------------------------------------------------------
# Calls and constants of the expression language.  To support a new function,
# add a row: (number of arguments, Rust f32 function, CUDA function, Rust f64
# function for the reference tests, cost, returns a boolean).  Hot functions
# should map to vectorisable code (rust/src/vmath.rs); std's scalar methods are
# fine for rarely used ones.  The cost (0 for a few vector instructions, 2 for
# a vectorised polynomial, 8 for a scalar libm call) sets, summed over an
# expression, from what size the kernels use threads.

# Relative cost per element of an expression: 1 + the costs of its calls,
# at most MAX_COST (the kernels' scale, rust/src/par.rs).
MAX_COST = 8


class Call:
    __slots__ = ('nargs', 'rust', 'cuda', 'ref', 'cost', 'boolean')

    def __init__(self, nargs, rust, cuda, ref, cost, boolean=False):
        self.nargs, self.rust, self.cuda, self.ref = nargs, rust, cuda, ref
        self.cost, self.boolean = cost, boolean


def _std(name, cuda, nargs=1, rust=None, cost=8):
    rust = rust or name
    return Call(nargs, 'f32::' + rust, cuda, 'f64::' + rust, cost)


CALLS = {
    'exp': Call(1, 'vmath::exp', 'expf', 'f64::exp', 2),
    'log': Call(1, 'vmath::ln', 'logf', 'f64::ln', 2),
    'tanh': Call(1, 'vmath::tanh', 'tanhf', 'f64::tanh', 2),
    'sigmoid': Call(1, 'vmath::sigmoid', 'nncy_sigmoidf', 'vref::sigmoid', 2),
    'sign': Call(1, 'vmath::sign', 'nncy_signf', 'vref::sign', 0),
    'erf': Call(1, 'vmath::erf', 'erff', 'vref::erf', 8),
    'abs': _std('abs', 'fabsf', cost=0),
    'sqrt': _std('sqrt', 'sqrtf', cost=1),
    'pow': _std('pow', 'powf', 2, rust='powf'),
    'max': _std('max', 'fmaxf', 2, cost=0),
    'min': _std('min', 'fminf', 2, cost=0),
    'sin': _std('sin', 'sinf'),
    'cos': _std('cos', 'cosf'),
    'tan': _std('tan', 'tanf'),
    'asin': _std('asin', 'asinf'),
    'acos': _std('acos', 'acosf'),
    'atan': _std('atan', 'atanf'),
    'atan2': _std('atan2', 'atan2f', 2),
    'sinh': _std('sinh', 'sinhf'),
    'cosh': _std('cosh', 'coshf'),
    'asinh': _std('asinh', 'asinhf'),
    'acosh': _std('acosh', 'acoshf'),
    'atanh': _std('atanh', 'atanhf'),
    'floor': _std('floor', 'floorf', cost=0),
    'ceil': _std('ceil', 'ceilf', cost=0),
    'round': _std('round', 'roundf', cost=2),   # half away from zero
    'log1p': Call(1, 'vmath::log1p', 'log1pf', 'f64::ln_1p', 3),
    'expm1': Call(1, 'vmath::expm1', 'expm1f', 'f64::exp_m1', 3),
    'isnan': Call(1, 'f32::is_nan', 'isnan', 'f64::is_nan', 0, boolean=True),
    'isinf': Call(1, 'f32::is_infinite', 'isinf', 'f64::is_infinite', 0, boolean=True),
}

CONSTANTS = {'pi': math.pi}

_F32_MAX = 3.4028234663852886e38

# Names that cannot be Rust or C identifiers as they are.
_RESERVED = set('''as break const continue crate else enum extern false fn for if impl in let loop
match mod move mut pub ref return self Self static struct super trait true type unsafe use where
while async await dyn abstract become box do final macro override priv typeof unsized virtual
yield try gen union auto char double float int long short signed unsigned void volatile
register default goto switch case sizeof typedef inline restrict bool
f32 f64 vmath vref pointwise param Result Error Ok Err Some None Input Layout Operand Uses
OpInfo'''.split())
# Argument names of the generated dispatch functions, which parameters must not shadow.
_DISPATCH = set('x y x0 x1 gy gx g p lay op which accum'.split())


def ident(name, param=False):
    """`name` as a Rust/C identifier (an underscore appended when it clashes)."""
    return name + '_' if name in _RESERVED or (param and name in _DISPATCH) else name


class CodegenError(ValueError):
    pass


# ---------------------------------------------------------------------------
# Expression translation

# Precedence levels (higher binds tighter), shared by Rust and C for the
# operators we emit.
_P_COND, _P_OR, _P_AND, _P_CMP, _P_ADD, _P_MUL, _P_UNARY, _P_ATOM = range(8)


class _Lang:
    """Syntax of one target language."""

    def __init__(self, name, suffix, true, false, cond, call_attr):
        self.name, self.suffix, self.true, self.false = name, suffix, true, false
        self.cond = cond            # format with c, a, b
        self.call_attr = call_attr  # which Call field names the function

    def number(self, v):
        r = repr(float(v))
        if r in ('inf', '-inf', 'nan'):
            raise CodegenError('non-finite constant')
        return r + self.suffix


RUST = _Lang('rust', 'f32', 'true', 'false', 'if {c} {{ {a} }} else {{ {b} }}', 'rust')
RUST64 = _Lang('rust64', 'f64', 'true', 'false', 'if {c} {{ {a} }} else {{ {b} }}', 'ref')
CUDA = _Lang('cuda', 'f', 'true', 'false', '{c} ? {a} : {b}', 'cuda')


class _Translator:
    """Translates one parsed expression; results are (text, precedence, type)
    with type 'f' (number) or 'b' (boolean)."""

    _BIN = None

    def __init__(self, lang, names, where):
        import ast
        self.ast = ast
        self.lang = lang
        self.names = names      # expression name -> target identifier
        self.where = where
        self.used = set()
        self.cost = 1
        if _Translator._BIN is None:
            _Translator._BIN = {ast.Add: ('+', _P_ADD), ast.Sub: ('-', _P_ADD),
                                ast.Mult: ('*', _P_MUL), ast.Div: ('/', _P_MUL)}
            _Translator._CMP = {ast.Lt: '<', ast.LtE: '<=', ast.Gt: '>', ast.GtE: '>=',
                                ast.Eq: '==', ast.NotEq: '!='}

    def fail(self, node, msg):
        raise CodegenError('%s: %s (at column %d)' % (self.where, msg, getattr(node, 'col_offset', 0) + 1))

    @staticmethod
    def wrap(t, p, need):
        return '(%s)' % t if p < need else t

    def num(self, node):
        """As a number: (text, prec)."""
        t, p, ty = self.visit(node)
        if ty == 'b':
            return self.lang.cond.format(c=t, a=self.lang.number(1), b=self.lang.number(0)), _P_COND
        return t, p

    def cond(self, node):
        """As a boolean: (text, prec)."""
        t, p, ty = self.visit(node)
        if ty == 'f':
            return '%s != %s' % (self.wrap(t, p, _P_CMP + 1), self.lang.number(0)), _P_CMP
        return t, p

    def visit(self, node):
        ast = self.ast
        if isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, bool):
                return (self.lang.true if v else self.lang.false), _P_ATOM, 'b'
            if not isinstance(v, (int, float)):
                self.fail(node, 'unsupported constant %r' % (v,))
            if not abs(v) <= _F32_MAX:
                self.fail(node, 'constant %r does not fit in float32' % (v,))
            return self.lang.number(v), _P_ATOM, 'f'
        if isinstance(node, ast.Name):
            if node.id in self.names:
                self.used.add(node.id)
                return self.names[node.id], _P_ATOM, 'f'
            if node.id in CONSTANTS:
                return self.lang.number(CONSTANTS[node.id]), _P_ATOM, 'f'
            self.fail(node, 'unknown name %r (allowed: %s)'
                      % (node.id, ', '.join(sorted(self.names) + sorted(CONSTANTS))))
        if isinstance(node, ast.BinOp):
            if isinstance(node.op, ast.Pow):
                return self.call(node, 'pow', [node.left, node.right])
            if type(node.op) not in self._BIN:
                self.fail(node, 'unsupported operator %s' % type(node.op).__name__)
            sym, prec = self._BIN[type(node.op)]
            (a, pa), (b, pb) = self.num(node.left), self.num(node.right)
            # left-associative: an equal-precedence right operand keeps its parentheses
            return '%s %s %s' % (self.wrap(a, pa, prec), sym, self.wrap(b, pb, prec + 1)), prec, 'f'
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.Not):
                t, p = self.cond(node.operand)
                return '!' + self.wrap(t, p, _P_UNARY), _P_UNARY, 'b'
            if isinstance(node.op, (ast.USub, ast.UAdd)):
                t, p = self.num(node.operand)
                if isinstance(node.op, ast.UAdd):
                    return t, p, 'f'
                t = self.wrap(t, p, _P_UNARY)
                if t.startswith('-'):
                    t = '(%s)' % t
                return '-' + t, _P_UNARY, 'f'
            self.fail(node, 'unsupported unary operator %s' % type(node.op).__name__)
        if isinstance(node, ast.Compare):
            parts = []
            left = node.left
            for op, right in zip(node.ops, node.comparators):
                if type(op) not in self._CMP:
                    self.fail(node, 'unsupported comparison %s' % type(op).__name__)
                (a, pa), (b, pb) = self.num(left), self.num(right)
                parts.append('%s %s %s' % (self.wrap(a, pa, _P_CMP + 1), self._CMP[type(op)],
                                           self.wrap(b, pb, _P_CMP + 1)))
                left = right
            if len(parts) == 1:
                return parts[0], _P_CMP, 'b'
            return ' && '.join(parts), _P_AND, 'b'
        if isinstance(node, ast.BoolOp):
            sym, prec = ('&&', _P_AND) if isinstance(node.op, ast.And) else ('||', _P_OR)
            items = []
            for v in node.values:
                t, p = self.cond(v)
                items.append(self.wrap(t, p, prec + 1))
            return (' %s ' % sym).join(items), prec, 'b'
        if isinstance(node, ast.IfExp):
            c, pc = self.cond(node.test)
            c = self.wrap(c, pc, _P_OR)
            (ta, pa, tya), (tb, pb, tyb) = self.visit(node.body), self.visit(node.orelse)
            if tya == tyb == 'b':
                ty = 'b'
            else:
                ty = 'f'
                (ta, pa), (tb, pb) = self.num(node.body), self.num(node.orelse)
            if self.lang is CUDA:  # nested ?: read better in parentheses
                ta, tb = self.wrap(ta, pa, _P_OR), self.wrap(tb, pb, _P_OR)
            elif tb.startswith('if '):  # else if
                return 'if %s { %s } else %s' % (c, ta, tb), _P_COND, ty
            return self.lang.cond.format(c=c, a=ta, b=tb), _P_COND, ty
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                self.fail(node, 'only calls of plain function names are supported')
            if node.keywords:
                self.fail(node, 'keyword arguments are not supported')
            return self.call(node, node.func.id, node.args)
        self.fail(node, 'unsupported syntax %s' % type(node).__name__)

    def call(self, node, name, args):
        fn = CALLS.get(name)
        if fn is None:
            self.fail(node, 'unknown function %r (supported: %s)' % (name, ', '.join(sorted(CALLS))))
        if len(args) != fn.nargs or any(isinstance(a, self.ast.Starred) for a in args):
            self.fail(node, '%s takes %d argument(s)' % (name, fn.nargs))
        self.cost += fn.cost
        text = '%s(%s)' % (getattr(fn, self.lang.call_attr), ', '.join(self.num(a)[0] for a in args))
        return text, _P_ATOM, 'b' if fn.boolean else 'f'


def translate(expr, lang, names, where):
    """Translates `expr` (a Python-syntax string) to a `lang` expression of
    type float; returns (text, set of names used, cost)."""
    import ast
    try:
        tree = ast.parse(expr.strip(), mode='eval')
    except SyntaxError as e:
        raise CodegenError('%s: syntax error in %r: %s' % (where, expr, e.msg)) from None
    tr = _Translator(lang, names, '%s %r' % (where, expr))
    text, _ = tr.num(tree.body)
    return text, tr.used, min(tr.cost, MAX_COST)


# ---------------------------------------------------------------------------
# Ops


class Op:
    """One pointwise row, checked and translated."""

    def __init__(self, spec):
        where = '%s (%s)' % (spec.type_name, spec.name)
        self.spec = spec
        self.name = spec.name
        self.code = spec.code
        if not spec.name.isidentifier():
            raise CodegenError('%s: name is not an identifier' % where)
        self.inputs = [i.name for i in spec.inputs]
        if len(self.inputs) not in (1, 2):
            raise CodegenError('%s: pointwise rows need 1 or 2 inputs, got %d' % (where, len(self.inputs)))
        if not spec.fwd:
            raise CodegenError('%s: pointwise row without a forward expression' % where)
        grads = list(spec.grads or [])
        if len(grads) != len(self.inputs):
            raise CodegenError('%s: %d gradient expressions for %d inputs'
                               % (where, len(grads), len(self.inputs)))
        self.params = _numeric_args(spec)
        if len(self.params) > 16:
            raise CodegenError('%s: more than 16 numeric arguments' % where)
        names = self.inputs + self.params
        for n in names + ['y', 'gy']:
            if not n.isidentifier():
                raise CodegenError('%s: %r is not an identifier' % (where, n))
        if len(set(names + ['y', 'gy'])) != len(names) + 2:
            raise CodegenError('%s: input and argument names must be distinct and not y or gy' % where)
        self.fwd_expr = spec.fwd
        self.grad_exprs = grads
        self.fwd_names = {n: ident(n) for n in self.inputs}
        self.fwd_names.update({n: ident(n, param=True) for n in self.params})
        self.grad_names = dict(self.fwd_names, y='y', gy='gy')
        # Translate to each language (this also validates the expressions).
        self.fwd, self.grads = {}, {}
        self.uses = [None] * len(grads)   # per input: (reads inputs [2], reads y)
        self.grad_costs = [None] * len(grads)
        for lang in (RUST, RUST64, CUDA):
            self.fwd[lang.name], _, self.fwd_cost = translate(spec.fwd, lang, self.fwd_names,
                                                              where + ' forward')
            self.grads[lang.name] = []
            for i, g in enumerate(grads):
                text, used, cost = (None, None, None) if g is None else translate(
                    g, lang, self.grad_names, '%s gradient %d' % (where, i))
                self.grads[lang.name].append(text)
                if g is not None and lang is RUST:
                    self.uses[i] = ([n in used for n in self.inputs] + [False])[:2], 'y' in used
                    self.grad_costs[i] = cost

    @property
    def unary(self):
        return len(self.inputs) == 1

    def fwd_args(self):
        return [self.fwd_names[n] for n in self.inputs + self.params]

    def grad_args(self):
        return [self.fwd_names[n] for n in self.inputs] + ['y', 'gy'] + [self.fwd_names[n] for n in self.params]


def load_ops(table=None):
    t = table or _table()
    unary = [Op(s) for s in t.UNARY]
    binary = [Op(s) for s in t.BINARY]
    for ops in (unary, binary):
        for i, op in enumerate(ops):
            assert op.code == i, op.name
    names = [op.name for op in unary + binary]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise CodegenError('duplicate pointwise names: %s' % ', '.join(dup))
    return unary, binary


def _test_params(op):
    """Parameter values for the generated reference tests: float arguments at
    their default + 0.5 (so that e.g. pow's exponent is not 1), ints as given."""
    vals = []
    types = {a[0]: a[1:] for a in op.spec.args}
    for name in op.params:
        typ, default = types[name]
        number = isinstance(default, (int, float)) and not isinstance(default, bool)
        if typ == 'float':
            vals.append(float(default if number else 0.0) + 0.5)
        elif typ == 'int':
            vals.append(float(default if number else 1))
        else:   # bool
            vals.append(1.0)
    return vals


# ---------------------------------------------------------------------------
# Rust

_RUST_HEADER = '''\
//! Pointwise ops -- GENERATED by `python -m nncy._codegen` from nncy/_table.py.
//! Do not edit: change the table (or nncy/_codegen.py) and regenerate.
//!
//! For each row: scalar functions for the forward and gradient expressions,
//! instantiated by the dispatch functions below with the generic kernels of
//! `pointwise.rs` (one specialised, vectorised loop per op).
#![allow(unused_variables, unused_parens, clippy::all)]

use crate::pointwise::{self, param, OpInfo, Operand, Uses};
use crate::strided::{Input, Layout};
use crate::vmath;
use crate::{Error, Result};

/// Hash of the table's pointwise rows (`nncy._codegen.signature()`).
pub const SIGNATURE: u64 = 0x%016x;
'''


def _rust_info(op):
    grads = []
    for u in op.uses:
        if u is None:
            grads.append('None')
        else:
            ins, y = u
            grads.append('Some(Uses { inputs: [%s, %s], y: %s })'
                         % (str(ins[0]).lower(), str(ins[1]).lower(), str(y).lower()))
    return '    OpInfo { name: "%s", n_params: %d, grads: &[%s] },' % (op.name, len(op.params), ', '.join(grads))


def _fn(name, args, body, ty='f32'):
    sig = ', '.join('%s: %s' % (a, ty) for a in args)
    return '#[inline(always)]\nfn %s(%s) -> %s {\n    %s\n}\n' % (name, sig, ty, body)


def _params_prelude(op, indent):
    return ''.join('%slet %s = param(p, %d)?;\n' % (indent, op.fwd_names[n], i) for i, n in enumerate(op.params))


def _closure(args, call):
    return '#[inline(always)] move |%s| %s' % (', '.join(args), call)


def rust_source(unary, binary, sig):
    out = [_RUST_HEADER % sig]
    out.append('\n/// Unary ops, by op code.\npub static UNARY: [OpInfo; %d] = [\n%s\n];\n'
               % (len(unary), '\n'.join(_rust_info(op) for op in unary)))
    out.append('\n/// Binary ops, by op code.\npub static BINARY: [OpInfo; %d] = [\n%s\n];\n'
               % (len(binary), '\n'.join(_rust_info(op) for op in binary)))
    for op in unary + binary:
        kind = 'unary' if op.unary else 'binary'
        out.append('\n// %s (%s op %d): %s\n' % (op.spec.type_name, kind, op.code, op.fwd_expr))
        out.append(_fn('%s_fwd' % op.name, op.fwd_args(), op.fwd['rust']))
        for i, g in enumerate(op.grads['rust']):
            if g is not None:
                out.append(_fn('%s_grad%d' % (op.name, i), op.grad_args(), g))

    ins = lambda op: [ident(n) for n in op.inputs]  # noqa: E731
    ps = lambda op: [op.fwd_names[n] for n in op.params]  # noqa: E731

    def arm(pattern, op, body):
        pre = _params_prelude(op, '            ')
        if pre:
            return '        %s => {\n%s            %s\n        }\n' % (pattern, pre, body)
        return '        %s => %s,\n' % (pattern, body)

    # unary forward
    arms = []
    for op in unary:
        call = '%s_fwd(%s)' % (op.name, ', '.join(ins(op) + ps(op)))
        arms.append(arm(op.code, op, 'pointwise::unary(x, y, %d, %s)'
                        % (op.fwd_cost, _closure(ins(op), call))))
    out.append('''
/// y = op(x) elementwise (in place when `x` is `None`).
pub fn unary(op: u32, x: Option<&[f32]>, y: &mut [f32], p: &[f32]) -> Result {
    match op {
%s        _ => return Err(Error::Invalid),
    }
    Ok(())
}
''' % ''.join(arms))
    # unary gradient
    arms = []
    for op in unary:
        if op.grads['rust'][0] is None:
            continue
        args = op.grad_args()
        call = '%s_grad0(%s)' % (op.name, ', '.join(args))
        arms.append(arm(op.code, op, 'pointwise::unary_grad(x, y, gy, gx, accum, %d, %s)'
                        % (op.grad_costs[0], _closure(ins(op) + ['y', 'gy'], call))))
    out.append('''
/// gx = (accum ? gx : 0) + grad_op(x, y, gy) elementwise.
pub fn unary_grad(op: u32, x: &[f32], y: &[f32], gy: &[f32], gx: &mut [f32], p: &[f32], accum: bool) -> Result {
    match op {
%s        _ => return Err(Error::Invalid),
    }
    Ok(())
}
''' % ''.join(arms))
    # binary forward
    arms = []
    for op in binary:
        call = '%s_fwd(%s)' % (op.name, ', '.join(ins(op) + ps(op)))
        arms.append(arm(op.code, op, 'pointwise::binary(lay, x0, x1, y, %d, %s)'
                        % (op.fwd_cost, _closure(ins(op), call))))
    out.append('''
/// y = op(x0, x1) elementwise over `lay`.
pub fn binary(op: u32, lay: &Layout<2>, x0: Operand, x1: Operand, y: &mut [f32], p: &[f32]) -> Result {
    match op {
%s        _ => return Err(Error::Invalid),
    }
    Ok(())
}
''' % ''.join(arms))
    # binary gradients
    arms = []
    for op in binary:
        for i, g in enumerate(op.grads['rust']):
            if g is None:
                continue
            call = '%s_grad%d(%s)' % (op.name, i, ', '.join(op.grad_args()))
            arms.append(arm('(%d, %d)' % (op.code, i), op,
                            'pointwise::binary_grad(lay, x0, x1, y, gy, g, accum, %d, %s)'
                            % (op.grad_costs[i], _closure(ins(op) + ['y', 'gy'], call))))
    out.append('''
/// g = (accum ? g : 0) + grad_op_which(x0, x1, y, gy) elementwise over `lay`.
#[allow(clippy::too_many_arguments)]
pub fn binary_grad(
    op: u32,
    which: u32,
    lay: &Layout<2>,
    x0: Input,
    x1: Input,
    y: &[f32],
    gy: &[f32],
    g: &mut [f32],
    p: &[f32],
    accum: bool,
) -> Result {
    match (op, which) {
%s        _ => return Err(Error::Invalid),
    }
    Ok(())
}
''' % ''.join(arms))
    out.append(_rust_reference(unary, binary))
    return ''.join(out)


def _rust_reference(unary, binary):
    """f64 versions of every expression, for the generated-op tests.  The
    functions take the inputs as x (unary) or x0, x1 (binary)."""
    def arm(pattern, op, expr):
        canonical = ['x'] if op.unary else ['x0', 'x1']
        binds = ''.join('let %s = %s; ' % (ident(n), c)
                        for n, c in zip(op.inputs, canonical) if ident(n) != c)
        binds += ''.join('let %s = p[%d]; ' % (op.fwd_names[n], i) for i, n in enumerate(op.params))
        return '            %s => { %s%s }\n' % (pattern, binds, expr)

    def arms(ops, grads):
        out = []
        for op in ops:
            if not grads:
                out.append(arm(op.code, op, op.fwd['rust64']))
                continue
            for i, g in enumerate(op.grads['rust64']):
                if g is not None:
                    out.append(arm(op.code if op.unary else '(%d, %d)' % (op.code, i), op, g))
        return ''.join(out) + '            _ => f64::NAN,\n'

    def params(ops):
        return '\n'.join('        &[%s],' % ', '.join('%rf64' % v for v in _test_params(op)) for op in ops)

    def ste(ops):
        return ', '.join(str(bool(op.spec.straight_through)).lower() for op in ops)

    return '''
/// f64 references of the expressions above (tests only).
#[cfg(test)]
pub mod reference {
    #![allow(unused_variables, unused_parens, clippy::all)]
    use crate::vmath::reference as vref;

    /// Parameter values for the tests, per unary op.
    pub static UNARY_PARAMS: [&[f64]; %d] = [
%s
    ];
    /// Parameter values for the tests, per binary op.
    pub static BINARY_PARAMS: [&[f64]; %d] = [
%s
    ];
    /// Per unary op: the gradient is a straight-through estimate, not the derivative.
    pub static UNARY_STRAIGHT_THROUGH: [bool; %d] = [%s];
    /// Per binary op: the gradient is a straight-through estimate, not the derivative.
    pub static BINARY_STRAIGHT_THROUGH: [bool; %d] = [%s];

    pub fn unary(op: u32, x: f64, p: &[f64]) -> f64 {
        match op {
%s        }
    }

    pub fn unary_grad(op: u32, x: f64, y: f64, gy: f64, p: &[f64]) -> f64 {
        match op {
%s        }
    }

    pub fn binary(op: u32, x0: f64, x1: f64, p: &[f64]) -> f64 {
        match op {
%s        }
    }

    pub fn binary_grad(op: u32, which: u32, x0: f64, x1: f64, y: f64, gy: f64, p: &[f64]) -> f64 {
        match (op, which) {
%s        }
    }
}
''' % (len(unary), params(unary), len(binary), params(binary),
       len(unary), ste(unary), len(binary), ste(binary),
       arms(unary, False), arms(unary, True), arms(binary, False), arms(binary, True))


# ---------------------------------------------------------------------------
# CUDA

_CUDA_HEADER = '''\
// Pointwise ops as CUDA device functions -- GENERATED by `python -m nncy._codegen`
// from nncy/_table.py.  Do not edit: change the table (or nncy/_codegen.py) and
// regenerate.
//
//   float nncy_fwd_<name>(inputs..., params...)
//   float nncy_grad<i>_<name>(inputs..., y, gy, params...)   gradient for input i
//
// NNCY_UNARY_OPS(X) / NNCY_BINARY_OPS(X) list the ops as X(name, code, n_params),
// codes as in the Rust kernels.  At the end, __global__ kernels templated on
// the storage type and the op code serve every row:
//
//   nncy_unary_fwd<T, OP>, nncy_unary_grad<T, OP>,
//   nncy_binary_fwd<T, OP>, nncy_binary_grad<T, OP, I>
#ifndef NNCY_POINTWISE_GEN_CU
#define NNCY_POINTWISE_GEN_CU

#include "common.cuh"

#define NNCY_OPS_SIGNATURE 0x%016xULL

__device__ __forceinline__ float nncy_sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ float nncy_signf(float x) { return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : x); }
'''

# The kernels: templated on the storage type T (float or __half; arithmetic is
# always float) and on the op code, which selects the specialisation of
# nncy_unary_fwd_op<OP> etc. generated per row below.  The Python loader
# (nncy/cuda/_sources.py) lists the instantiations it needs.
_CUDA_KERNELS = '''
// ---- kernels ----------------------------------------------------------------
// Inputs of the binary kernels are read through a broadcast layout: nd == 0
// means that x0, x1 and y are contiguous arrays of n elements; otherwise
// m[0..nd) is the output shape and m[nd..2nd), m[2nd..3nd) are the element
// strides of x0 and x1 (0 along broadcast axes).  The gradient kernels of
// binary ops write an output-shaped g; reducing it to a broadcast input's
// shape is left to the caller.  Parameters are float values at p[0], p[1], ...

__device__ __forceinline__ void nncy_offsets(long long i, int nd, const long long* m,
                                             long long& o0, long long& o1) {
    if (nd == 0) { o0 = o1 = i; return; }
    o0 = o1 = 0;
    for (int d = nd - 1; d >= 0; --d) {
        long long k = i % m[d];
        i /= m[d];
        o0 += k * m[nd + d];
        o1 += k * m[2 * nd + d];
    }
}

template <typename T, int OP>
__global__ void nncy_unary_fwd(long long n, const T* x, T* y, const float* p) {
    NNCY_LOOP(i, n) y[i] = nncy_t<T>(nncy_unary_fwd_op<OP>(nncy_f(x[i]), p));
}

// gx = (accum ? gx : 0) + grad(x, y, gy); x and y may alias gy when the
// gradient does not read them.
template <typename T, int OP>
__global__ void nncy_unary_grad(long long n, const T* x, const T* y, const T* gy, T* gx,
                                const float* p, int accum) {
    NNCY_LOOP(i, n) {
        float g = nncy_unary_grad_op<OP>(nncy_f(x[i]), nncy_f(y[i]), nncy_f(gy[i]), p);
        gx[i] = nncy_t<T>(accum ? nncy_f(gx[i]) + g : g);
    }
}

template <typename T, int OP>
__global__ void nncy_binary_fwd(long long n, int nd, const long long* m, const T* x0,
                                const T* x1, T* y, const float* p) {
    NNCY_LOOP(i, n) {
        long long o0, o1;
        nncy_offsets(i, nd, m, o0, o1);
        y[i] = nncy_t<T>(nncy_binary_fwd_op<OP>(nncy_f(x0[o0]), nncy_f(x1[o1]), p));
    }
}

// g (output-shaped) = (accum ? g : 0) + gradient for input I.
template <typename T, int OP, int I>
__global__ void nncy_binary_grad(long long n, int nd, const long long* m, const T* x0,
                                 const T* x1, const T* y, const T* gy, T* g, const float* p,
                                 int accum) {
    NNCY_LOOP(i, n) {
        long long o0, o1;
        nncy_offsets(i, nd, m, o0, o1);
        float v = nncy_binary_grad_op<OP, I>(nncy_f(x0[o0]), nncy_f(x1[o1]), nncy_f(y[i]),
                                             nncy_f(gy[i]), p);
        g[i] = nncy_t<T>(accum ? nncy_f(g[i]) + v : v);
    }
}
'''


def _cuda_dispatch(unary, binary):
    """Specialisations selecting each row's device functions by op code."""
    def call(op, fn, lead):
        ps = ['p[%d]' % k for k in range(len(op.params))]
        return '%s(%s)' % (fn, ', '.join(lead + ps))
    out = ['\n// ---- dispatch by op code ------------------------------------------------------\n',
           'template <int OP> __device__ float nncy_unary_fwd_op(float x, const float* p);\n',
           'template <int OP> __device__ float nncy_unary_grad_op(float x, float y, float gy, '
           'const float* p);\n',
           'template <int OP> __device__ float nncy_binary_fwd_op(float x0, float x1, '
           'const float* p);\n',
           'template <int OP, int I> __device__ float nncy_binary_grad_op(float x0, float x1, '
           'float y, float gy, const float* p);\n']
    spec = 'template <> __device__ __forceinline__ float '
    for op in unary:
        out.append('%snncy_unary_fwd_op<%d>(float x, const float* p) { return %s; }\n'
                   % (spec, op.code, call(op, 'nncy_fwd_' + op.name, ['x'])))
        if op.grads['cuda'][0] is not None:
            out.append('%snncy_unary_grad_op<%d>(float x, float y, float gy, const float* p) '
                       '{ return %s; }\n'
                       % (spec, op.code, call(op, 'nncy_grad0_' + op.name, ['x', 'y', 'gy'])))
    for op in binary:
        out.append('%snncy_binary_fwd_op<%d>(float x0, float x1, const float* p) { return %s; }\n'
                   % (spec, op.code, call(op, 'nncy_fwd_' + op.name, ['x0', 'x1'])))
        for i, g in enumerate(op.grads['cuda']):
            if g is not None:
                out.append('%snncy_binary_grad_op<%d, %d>(float x0, float x1, float y, float gy, '
                           'const float* p) { return %s; }\n'
                           % (spec, op.code, i, call(op, 'nncy_grad%d_%s' % (i, op.name),
                                                     ['x0', 'x1', 'y', 'gy'])))
    return ''.join(out)


def cuda_source(unary, binary, sig):
    out = [_CUDA_HEADER % sig]
    for title, ops in (('UNARY', unary), ('BINARY', binary)):
        out.append('\n#define NNCY_%s_OPS(X) \\\n%s\n'
                   % (title, ' \\\n'.join('    X(%s, %d, %d)' % (op.name, op.code, len(op.params))
                                          for op in ops)))
    for op in unary + binary:
        kind = 'unary' if op.unary else 'binary'
        out.append('\n// %s (%s op %d): %s\n' % (op.spec.type_name, kind, op.code, op.fwd_expr))
        sig_args = ', '.join('float %s' % a for a in op.fwd_args())
        out.append('__device__ __forceinline__ float nncy_fwd_%s(%s) { return %s; }\n'
                   % (op.name, sig_args, op.fwd['cuda']))
        for i, g in enumerate(op.grads['cuda']):
            if g is None:
                continue
            sig_args = ', '.join('float %s' % a for a in op.grad_args())
            out.append('__device__ __forceinline__ float nncy_grad%d_%s(%s) { return %s; }\n'
                       % (i, op.name, sig_args, g))
    out.append(_cuda_dispatch(unary, binary))
    out.append(_CUDA_KERNELS)
    out.append('\n#endif  // NNCY_POINTWISE_GEN_CU\n')
    return ''.join(out)


# ---------------------------------------------------------------------------


def generate(table=None):
    """{path: text} of the generated files."""
    t = table or _table()
    unary, binary = load_ops(t)
    sig = fnv1a64(canonical_text(t).encode())
    return {os.path.normpath(RUST_OUT): rust_source(unary, binary, sig),
            os.path.normpath(CUDA_OUT): cuda_source(unary, binary, sig)}


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    check = '--check' in args
    unknown = [a for a in args if a != '--check']
    if unknown:
        print('usage: python -m nncy._codegen [--check]', file=sys.stderr)
        return 2
    try:
        files = generate()
    except CodegenError as e:
        print('nncy._codegen: %s' % e, file=sys.stderr)
        return 1
    stale = []
    for path, text in files.items():
        try:
            with open(path, encoding='utf-8') as f:
                current = f.read()
        except OSError:
            current = None
        if current == text:
            continue
        stale.append(path)
        if not check:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, 'w', encoding='utf-8', newline='\n') as f:
                f.write(text)
    rel = [os.path.relpath(p) for p in stale]
    if check:
        if stale:
            print('nncy._codegen: stale generated files (run `python -m nncy._codegen`): %s'
                  % ', '.join(rel), file=sys.stderr)
            return 1
        return 0
    print('nncy._codegen: %s' % ('wrote ' + ', '.join(rel) if rel else 'up to date'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
