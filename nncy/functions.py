"""``F.*``: one wrapper per row of the function table, generated at import with
the row's real signature and a docstring built from the row.

    import nncy.functions as F
    y = F.relu(F.affine(x, w, b))
"""
import numpy as np

from nncy import _core, _cpu  # noqa: F401  (_cpu registers the CPU implementations)
from nncy import _cpu_math  # noqa: F401  (reduction, logical and math functions)
from nncy import _cpu_array  # noqa: F401  (array manipulation)
from nncy import _cpu_random  # noqa: F401  (stochasticity)
from nncy import _composite  # noqa: F401  (composite rows: builders from F.* calls)
from nncy import _cpu_loss  # noqa: F401  (losses, validation, quantization, fft)
from nncy._table import FUNCTIONS, REQUIRED

__all__ = []

_TEMPLATE = '''def {name}({params}):
{prelude}    return _call(_spec, ({inputs}), ({args}), outputs)
'''


def _number_input(value, like):
    """A number passed for an input that accepts one (``#`` in the table), as a
    constant array of shape (): an NdArray when ``like`` (the first input) is
    one, else a Variable without gradient.  Anything else is returned as it is
    (the call checks it)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, float, np.integer, np.floating)):
        return value
    arr = np.array(value, dtype=np.float32)
    if isinstance(like, _core.NdArray):
        return _core.NdArray.from_numpy_array(arr)
    return _core.Variable.from_numpy_array(arr)


def _docstring(spec):
    lines = [spec.doc, '', 'Inputs:']
    for i in spec.inputs:
        tags = [t for t, on in (('optional', i.optional), ('variadic', i.variadic),
                                ('parameter', i.parameter)) if on]
        lines.append('    %s (Variable or NdArray%s)%s' % (
            i.name, ' or number' if i.scalar else '', ' [%s]' % ', '.join(tags) if tags else ''))
    if spec.args:
        lines.append('Arguments:')
        for name, typ, default in spec.args:
            lines.append('    %s (%s) [%s]' % (name, typ, 'required' if default is REQUIRED
                                               else 'default=%r' % (default,)))
    lines += ['Outputs: %s' % ', '.join(spec.outputs),
              '', 'NNabla function %s.' % spec.type_name]
    return '\n'.join(lines)


def _param(spec, name):
    """One parameter of the wrapper's signature."""
    for i in spec.inputs:
        if i.name == name:
            return ('*' if i.variadic else '') + name + ('=None' if i.optional else '')
    default = spec.defaults[name]
    return name if default is REQUIRED else '%s=%r' % (name, default)


def _make(spec):
    inputs = [i.name for i in spec.inputs if not i.variadic]
    variadic = any(i.variadic for i in spec.inputs)
    order = spec.signature or [i.name for i in spec.inputs] + list(spec.arg_names)
    params = [_param(spec, n) for n in order]
    prelude = ['    %s = _number(%s, %s)\n' % (i.name, i.name, spec.inputs[0].name)
               for i in spec.inputs if i.scalar]
    params += ['n_outputs=-1', 'outputs=None']
    if variadic:
        input_expr = spec.inputs[0].name
    else:
        input_expr = ''.join(n + ', ' for n in inputs)
    src = _TEMPLATE.format(name=spec.name, params=', '.join(params), inputs=input_expr,
                           args=''.join(a + ', ' for a in spec.arg_names),
                           prelude=''.join(prelude))
    scope = {'_call': _core.call, '_spec': spec, '_number': _number_input}
    exec(compile(src, '<nncy.functions.%s>' % spec.name, 'exec'), scope)
    fn = scope[spec.name]
    fn.__doc__ = _docstring(spec)
    fn.__module__ = __name__
    return fn


for _s in FUNCTIONS:
    globals()[_s.name] = _make(_s)
    __all__.append(_s.name)
del _s

# gather_nd and scatter_nd also take indices as lists or NumPy arrays, and scatter_nd out=.
_cpu_array.wrap(globals())
