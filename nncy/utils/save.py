"""``nncy.utils.save.save``: networks (and their parameters) to NNabla's file
formats.

    contents = {
        'networks': [{'name': 'net', 'batch_size': 1,
                      'outputs': {'y': y}, 'names': {'x': x}}],
        'executors': [{'name': 'runtime', 'network': 'net',
                       'data': ['x'], 'output': ['y']}]}
    save('model.nnp', contents)

A network is found by walking back from its outputs.  Each variable becomes
a ``Variable`` message: ``Parameter`` when it is a registered parameter (by
identity of its data, so unlinked copies count) or an unnamed leaf that a
function reads as a parameter input (or that needs a gradient), ``Buffer``
otherwise.  With ``variable_batch_size`` a buffer whose first dimension equals
the network's batch size is written with -1 there, to be filled in on
loading.  Variables take the name given in ``names``/``outputs``, the
parameter's name, the Variable's ``name`` attribute, or
``<Function>_Input``/``<Function>_Output``; functions are named by their type
(``Affine``, ``Affine_2``, ...) unless their ``name`` was set.  Function
arguments go to ``<snake>_param`` through the function table (see
``nncy._nnp``).
"""
import os
from collections import OrderedDict

import numpy as np

from nncy import _nnp

__all__ = ['save', 'create_proto']


def _unique(base, taken):
    name, k = base, 2
    while name in taken:
        name = '%s_%d' % (base, k)
        k += 1
    return name


def _functions_of(outputs):
    """Function nodes of the graphs ending at ``outputs``, inputs first."""
    order, seen = [], set()

    def add(f):
        if id(f) not in seen:
            seen.add(id(f))
            order.append(f)
    for v in outputs:
        v.visit(add)
    return order


def _omitted(f):
    impl = f.impl
    return tuple(getattr(getattr(impl, 'inner', impl), 'omitted', ()) or ())


def _create_network(proto, net, params, variable_batch_size, extra_params, used):
    n = proto.network.add()
    n.name = net['name']
    outputs = net['outputs']
    if not isinstance(outputs, dict):
        raise TypeError("save: network %r: 'outputs' must be a dict of name -> Variable"
                        % net['name'])
    names_in = dict(net.get('names', {}) or {})
    batch_size = net.get('batch_size')
    if batch_size is None:
        first = next(iter(names_in.values()), None)
        batch_size = first.shape[0] if first is not None and first.shape else 1
    n.batch_size = int(batch_size)

    keep = []            # holds every variable seen, so ids stay unique
    given = {}           # id(data NdArray) -> name from names/outputs
    for name, v in list(names_in.items()) + list(outputs.items()):
        keep.append(v)
        given[id(v.data)] = name
    param_of = {id(v.data): k for k, v in params.items()}

    funcs = _functions_of(list(outputs.values()))
    taken_f = set()
    var_names = {}       # id(data) -> name
    var_list = []        # (name, Variable, is_param)
    reserved = set(params) | set(given.values())
    taken_v = set()

    def register(v, base, slot_is_param):
        key = id(v.data)
        if key in var_names:
            return var_names[key]
        keep.append(v)
        is_param = False
        if key in param_of:
            name, is_param = param_of[key], True
        elif key in given:
            name = given[key]
        else:
            own = getattr(v, 'name', None)
            leaf = v.parent is None
            if leaf and (slot_is_param or v.need_grad):
                is_param = True
                name = _unique(own if isinstance(own, str) and own else base,
                               taken_v | reserved)
                extra_params[name] = v
            else:
                name = _unique(own if isinstance(own, str) and own else base,
                               taken_v | reserved)
        if name in taken_v:
            raise ValueError('save: network %r: two different variables are named %r'
                             % (net['name'], name))
        taken_v.add(name)
        var_names[key] = name
        var_list.append((name, v, is_param))
        return name

    for f in funcs:
        spec = f.spec
        fname = f.name if f.name != spec.type_name else _unique(spec.type_name, taken_f)
        if fname in taken_f:
            fname = _unique(fname, taken_f)
        taken_f.add(fname)
        fp = n.function.add()
        fp.name = fname
        fp.type = spec.type_name
        ins = f.inputs
        omitted = _omitted(f)
        slots = [i for i in spec.inputs if i.name not in omitted]
        for k, v in enumerate(ins):
            slot = slots[min(k, len(slots) - 1)] if slots else None
            fp.input.append(register(v, '%s_Input' % fname,
                                     slot is not None and slot.parameter))
        for v in f.outputs:
            fp.output.append(register(v, '%s_Output' % fname, False))
        _nnp.encode_args(fp, spec, f.args, [tuple(v.shape) for v in ins])
        present = _nnp.present_inputs(spec, f.args, len(ins))
        if present is not None and present != [s.name for s in slots]:
            raise ValueError('save: %s (function %r) with inputs %s cannot be saved in an NNP '
                             'file: a reader would take them as %s'
                             % (spec.type_name, fname, [s.name for s in slots], present))

    for name, v, is_param in var_list:
        if is_param:
            used.add(name)
        vp = n.variable.add()
        vp.name = name
        shape = [int(s) for s in v.shape]
        if is_param:
            vp.type = 'Parameter'
        else:
            vp.type = 'Buffer'
            if variable_batch_size and shape and shape[0] == n.batch_size:
                shape[0] = -1
        vp.shape.dim.extend(shape)
    for name in list(outputs) + list(names_in):
        if name not in taken_v:
            raise ValueError('save: network %r: variable %r (in outputs/names) is not part of '
                             'the graph' % (net['name'], name))
    return n


def _create_executor(proto, e, networks):
    net = networks.get(e['network'])
    if net is None:
        raise ValueError('save: executor %r refers to network %r, which contents do not '
                         'define' % (e['name'], e['network']))
    declared = {v.name: v for v in net.variable}
    ex = proto.executor.add()
    ex.name = e['name']
    ex.network_name = net.name
    for vname in e.get('data', []):
        if vname not in declared:
            raise ValueError('save: executor %r: data variable %r is not in network %r'
                             % (e['name'], vname, net.name))
        dv = ex.data_variable.add()
        dv.variable_name = dv.data_name = vname
    for vname in e.get('output', []):
        if vname not in declared:
            raise ValueError('save: executor %r: output variable %r is not in network %r'
                             % (e['name'], vname, net.name))
        ov = ex.output_variable.add()
        ov.variable_name = ov.data_name = vname
    for v in net.variable:
        if v.type == 'Parameter':
            ex.parameter_variable.add().variable_name = v.name
    return ex


def create_proto(contents, variable_batch_size=True, parameters=None):
    """(``NNablaProtoBuf`` without parameters, parameters name -> Variable)
    for ``contents``.  The parameters are those the networks read (all of
    ``parameters`` when it is given), under their scope names."""
    from nncy.parameter import get_parameters
    from nncy.proto import nnabla_pb2
    params = OrderedDict(parameters.items() if parameters is not None
                         else get_parameters(grad_only=False).items())
    proto = nnabla_pb2.NNablaProtoBuf()
    extra = OrderedDict()
    used = set()
    networks = {}
    for net in contents.get('networks', []):
        if net['name'] in networks:
            raise ValueError('save: two networks are named %r' % net['name'])
        networks[net['name']] = _create_network(proto, net, params, variable_batch_size, extra,
                                                used)
    for e in contents.get('executors', []):
        _create_executor(proto, e, networks)
    if parameters is None and networks:
        # the scope's parameters that the networks read (not every one in scope)
        params = OrderedDict((k, v) for k, v in params.items() if k in used)
    params.update(extra)
    return proto, params


def _as_arrays(params):
    return OrderedDict((k, (np.asarray(v.d), bool(v.need_grad))) for k, v in params.items())


def save(filename, contents, include_params=False, variable_batch_size=True,
         extension='.nnp', parameters=None, parameter_format='.h5',
         network_format='.nntxt'):
    """Save networks and executors (``contents``, see the module docstring).

    ``filename``'s extension picks the format: ``.nnp`` (a zip of
    ``nnp_version.txt``, ``network.nntxt`` -- or ``network.protobuf`` with
    ``network_format='.protobuf'`` -- and ``parameter.h5`` or, with
    ``parameter_format='.protobuf'``, ``parameter.protobuf``); ``.nntxt`` /
    ``.prototxt`` (text) or ``.protobuf`` (binary), holding the parameters
    too when ``include_params``.  A binary file object is accepted with
    ``extension``.  ``parameters`` (name -> Variable) replaces the current
    scope's parameters as the set that is saved and named.  A path is written
    through a temporary file renamed over it, so a failed save leaves the old
    file as it was.
    """
    if isinstance(filename, (str, os.PathLike)):
        ext = os.path.splitext(os.fspath(filename))[1].lower()
    else:
        ext = (extension or '').lower()
    proto, params = create_proto(contents, variable_batch_size, parameters)
    arrays = _as_arrays(params)
    if ext == '.nnp':
        _nnp.write_nnp(filename, proto, arrays, network_format, parameter_format)
        return
    if ext not in ('.nntxt', '.prototxt', '.protobuf'):
        raise ValueError("save: unsupported file type %r; expected '.nnp', '.nntxt', "
                         "'.prototxt' or '.protobuf'" % ext)
    if include_params:
        from nncy._param_io import to_proto, _AsVars
        to_proto(_AsVars(arrays), proto)
    if ext == '.protobuf':
        data = proto.SerializeToString()
    else:
        from google.protobuf import text_format
        data = text_format.MessageToString(proto).encode('utf-8')
    if hasattr(filename, 'write'):
        filename.write(data)
    else:
        _nnp.atomic_write(filename, lambda f: f.write(data))
