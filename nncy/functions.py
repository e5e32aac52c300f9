"""``F.*``: one wrapper per row of the function table, generated at import with
the row's real signature and a docstring built from the row.

    import nncy.functions as F
    y = F.relu(F.affine(x, w, b))
"""
import numpy as np

from nncy import _core, _cpu, _composite  # noqa: F401  (they register the implementations)
from nncy._table import FUNCTIONS

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
            lines.append('    %s (%s) [default=%r]' % (name, typ, default))
    lines += ['Outputs: %s' % ', '.join(spec.outputs),
              '', 'NNabla function %s.' % spec.type_name]
    return '\n'.join(lines)


def _make(spec):
    params, inputs, prelude = [], [], []
    variadic = False
    for i in spec.inputs:
        if i.scalar:
            prelude.append('    %s = _number(%s, %s)\n' % (i.name, i.name, spec.inputs[0].name))
        if i.variadic:
            params.append('*' + i.name)
            variadic = True
        else:
            params.append(i.name + ('=None' if i.optional else ''))
            inputs.append(i.name)
    for name, _, default in spec.args:
        params.append('%s=%r' % (name, default))
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
