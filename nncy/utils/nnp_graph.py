"""``NnpLoader``: graphs of nncy Variables from NNP files.

    from nncy.utils.nnp_graph import NnpLoader
    nnp = NnpLoader('model.nnp')
    net = nnp.get_network(nnp.get_network_names()[0], batch_size=1)
    x = net.inputs['x']
    y = net.outputs['y']
    x.d = data
    y.forward(clear_buffer=True)

The graph is rebuilt by calling the ``F.*`` wrappers with the arguments the
file holds (decoded through the function table, see ``nncy._nnp``), so it
can be trained further or extended like any graph.  Parameters are read into
the loader; ``get_network`` registers them in the current parameter scope
(a parameter that already exists there with the same name is used instead,
as NNabla does).  Loading parses data only and never executes code from the
file; a malformed file raises ``ValueError``.
"""
import os
from collections import OrderedDict

from nncy import _nnp

__all__ = ['NnpLoader', 'NnpNetwork']


class NnpNetwork:
    """A network built from an NNP file: ``variables``, ``inputs`` and
    ``outputs`` (dicts of name -> Variable), ``name`` and ``batch_size``."""

    def __init__(self, plan, params, batch_size=None):
        import nncy as nn
        import nncy.functions as F
        from nncy.parameter import get_parameter, set_parameter

        self.name = plan.name
        self.batch_size = int(batch_size if batch_size is not None else plan.batch_size)
        if self.batch_size < 1 and any(v.shape and v.shape[0] < 0
                                       for v in plan.variables.values()):
            raise ValueError('network %r: batch size %d; give get_network a positive '
                             'batch_size' % (plan.name, self.batch_size))
        plan.check_parameters(params, lambda n: _array_or_none(get_parameter(n)))
        made = {}

        def variable(name):
            v = made.get(name)
            if v is not None:
                return v
            vd = plan.variables[name]
            shape = vd.resolve(self.batch_size)
            if vd.is_parameter:
                p = get_parameter(name)
                if p is None:
                    arr, need_grad = params[name]
                    p = nn.Variable.from_numpy_array(arr, need_grad=need_grad)
                    set_parameter(name, p)
                v = p.get_unlinked_variable()
            else:
                v = nn.Variable(shape)
            v.name = name
            made[name] = v
            return v

        for fd in plan.functions:
            ins = [variable(n) for n in fd.inputs]
            spec = fd.spec
            fn = getattr(F, spec.name)
            try:
                args = _nnp.function_args(fd, [tuple(v.shape) for v in ins], self.batch_size,
                                          plan.batch_size)
                kwargs = dict(zip(spec.arg_names, args))
                present = _nnp.present_inputs(spec, kwargs, len(ins))
                if present is None:
                    outs = fn(*ins, **kwargs)
                else:
                    kwargs.update(zip(present, ins))
                    outs = fn(**kwargs)
            except (ValueError, TypeError) as e:
                raise ValueError('network %r, function %r (%s): %s'
                                 % (plan.name, fd.name, spec.type_name, e)) from None
            if not isinstance(outs, tuple):
                outs = (outs,)
            if len(fd.outputs) > len(outs):
                raise ValueError('network %r, function %r (%s): the file lists %d outputs, the '
                                 'function gives %d' % (plan.name, fd.name, spec.type_name,
                                                        len(fd.outputs), len(outs)))
            outs[0].parent.name = fd.name
            for name, o in zip(fd.outputs, outs):
                o.name = name
                made[name] = o
        for name in plan.inputs:
            variable(name)
        self.variables = OrderedDict((n, made[n]) for n in plan.variables if n in made)
        self.inputs = OrderedDict((n, made[n]) for n in plan.inputs)
        self.outputs = OrderedDict((n, made[n]) for n in plan.outputs)


def _array_or_none(v):
    return None if v is None else v.d


class NnpLoader:
    """Reads an NNP file (``.nnp``, ``.nntxt``/``.prototxt`` or
    ``.protobuf``; a binary file object with ``extension``).  ``scope``, a
    dict, receives the parameters read (a fresh one by default)."""

    def __init__(self, filepath, scope=None, extension='.nntxt', max_bytes=None):
        ext = extension
        if isinstance(filepath, (str, os.PathLike)):
            ext = None
        self._contents = _nnp.read(filepath, max_bytes=max_bytes, extension=ext)
        self._params = self._contents.params if scope is None else scope
        if scope is not None:
            scope.update(self._contents.params)
        self.proto = self._contents.proto
        self.network_dict = OrderedDict((n.name, n) for n in self.proto.network)

    def get_network_names(self):
        """Names of the networks in the file."""
        return list(self.network_dict)

    def get_executor_names(self):
        return [e.name for e in self.proto.executor]

    def get_network(self, name, batch_size=None, callback=None):
        """An ``NnpNetwork`` for network ``name``, built for ``batch_size``
        (default: the file's)."""
        if callback is not None:
            raise NotImplementedError('NnpLoader.get_network: callback passes are not '
                                      'supported by nncy')
        if name not in self.network_dict:
            raise ValueError('NnpLoader.get_network: no network %r; the file holds %s'
                             % (name, ', '.join(repr(n) for n in self.network_dict) or 'none'))
        plan = _nnp.NetPlan(self.network_dict[name])
        return NnpNetwork(plan, self._params, batch_size)
