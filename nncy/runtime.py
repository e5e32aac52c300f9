"""Lean CPU inference of NNP files.

    from nncy import runtime
    model = runtime.load('model.nnp')            # first executor, else first network
    y = model.run(x)['y']                          # or model.run(x=x); model(x)

No training graph is built: the function implementations are created and
set up once per batch size (a *plan*), with argument and shape checks done
then, and each ``run`` calls their forward methods in order.  Parameters need
no gradient and no gradient buffer is ever allocated.  The plan also records,
for every intermediate buffer, the step after which nothing reads it: the
buffer is released right there (as ``forward(clear_buffer=True)`` does), so
a run holds only the live intermediates at any time.  Output arrays are
handed to the caller and not reused by the next run.

Importing this module and running a model whose parameters are stored as
``parameter.protobuf`` imports neither h5py nor CuPy.
"""
from collections import OrderedDict

import numpy as np

from nncy import _nnp

__all__ = ['load', 'Model']


class _Step:
    __slots__ = ('impl', 'ins', 'outs', 'release', 'name', 'type_name')

    def __init__(self, impl, ins, outs, name, type_name):
        self.impl, self.ins, self.outs, self.name, self.type_name = \
            impl, ins, outs, name, type_name
        self.release = []


class _Plan:
    def __init__(self, model, batch_size):
        from nncy._core import Variable, implementation, normalize_args
        plan = model._net
        self.batch_size = batch_size
        made = {}
        self.inputs = []
        for name in model.input_names:
            shape = plan.variables[name].resolve(batch_size)
            v = Variable(shape)
            made[name] = v
            self.inputs.append(v)
        self.steps = []
        ctx = model._ctx
        for fd in plan.functions:
            spec = fd.spec
            ins = []
            for n in fd.inputs:
                if n not in made:
                    vd = plan.variables[n]
                    if vd.is_parameter:
                        made[n] = model._param_vars[n]
                    else:
                        raise ValueError('network %r: function %r reads %r, which is neither '
                                         'an input of the run nor written by an earlier '
                                         'function' % (plan.name, fd.name, n))
                ins.append(made[n])
            where = 'network %r, function %r (%s)' % (plan.name, fd.name, spec.type_name)
            try:
                values = _nnp.function_args(fd, [tuple(v.shape) for v in ins], batch_size,
                                            plan.batch_size)
                args = normalize_args(spec, values)
                present = _nnp.present_inputs(spec, args, len(ins))
                cls = implementation(spec.type_name, 'cpu')
                if cls is None:
                    raise ValueError('no CPU implementation')
                impl = cls(spec, args, ctx)
                if present is not None and len(present) < len(spec.inputs):
                    impl.omitted = tuple(i.name for i in spec.inputs if i.name not in present)
                shapes = impl.setup(ins)
            except (ValueError, TypeError, NotImplementedError) as e:
                raise ValueError('%s: %s' % (where, e)) from None
            if len(fd.outputs) > len(shapes):
                raise ValueError('%s: the file lists %d outputs, the function gives %d'
                                 % (where, len(fd.outputs), len(shapes)))
            outs = [Variable(tuple(s)) for s in shapes]
            for n, o in zip(fd.outputs, outs):
                made[n] = o
            self.steps.append(_Step(impl, ins, outs, fd.name, spec.type_name))
        missing = [n for n in model.output_names if n not in made]
        if missing:
            raise ValueError('network %r: outputs %s are not computed by any function'
                             % (plan.name, missing))
        self.outputs = [made[n] for n in model.output_names]
        # Liveness: release each intermediate after the last step that reads it
        # (or right after the step that writes it, when nothing reads it).
        keep = {id(v) for v in self.outputs} | {id(v) for v in model._param_vars.values()}
        last = {}
        for k, st in enumerate(self.steps):
            for v in st.outs:
                last[id(v)] = (k, v)
            for v in st.ins:
                last[id(v)] = (k, v)
        for k, v in last.values():
            if id(v) not in keep:
                self.steps[k].release.append(v.data)


class Model:
    """An NNP network ready for inference.  ``input_names``/``output_names``
    in order; ``input_shapes(batch_size)``; ``run`` (or calling the model)
    with arrays by position or by name returns an ordered dict of output
    name -> NumPy array."""

    def __init__(self, source, network=None, executor=None, max_bytes=None, extension=None):
        from nncy._core import Context, Variable
        contents = source if isinstance(source, _nnp.Contents) else \
            _nnp.read(source, max_bytes=max_bytes, extension=extension)
        proto = contents.proto
        ex = None
        if executor is not None:
            ex = next((e for e in proto.executor if e.name == executor), None)
            if ex is None:
                raise ValueError('no executor %r; the file holds %s' % (
                    executor, ', '.join(repr(e.name) for e in proto.executor) or 'none'))
        elif network is None and proto.executor:
            ex = proto.executor[0]
        if ex is not None:
            network = ex.network_name
        self._net = _nnp.plan_network(proto, network)
        self.network_name = self._net.name
        self.executor_name = ex.name if ex is not None else None
        if ex is not None and ex.data_variable:
            self.input_names = [d.variable_name for d in ex.data_variable]
        else:
            self.input_names = list(self._net.inputs)
        if ex is not None and ex.output_variable:
            self.output_names = [o.variable_name for o in ex.output_variable]
        else:
            self.output_names = list(self._net.outputs)
        for n in self.input_names + self.output_names:
            if n not in self._net.variables:
                raise ValueError('executor %r names variable %r, which network %r does not '
                                 'declare' % (self.executor_name, n, self.network_name))
        missing = [n for n in self._net.inputs if n not in self.input_names]
        if missing:
            raise ValueError('network %r reads %s, which the executor %r does not supply'
                             % (self.network_name, missing, self.executor_name))
        self._net.check_parameters(contents.params)
        self._ctx = Context(['cpu:float'])
        self._param_vars = OrderedDict()
        for n in self._net.parameters:
            arr = contents.params[n][0]
            if arr.dtype.kind == 'f' and arr.dtype != np.float32:
                arr = arr.astype(np.float32)
            self._param_vars[n] = Variable.from_numpy_array(arr)
        self._plans = {}
        if self._net.batch_size >= 1:
            self.plan()       # argument and shape errors show at loading

    # ---- shapes ----------------------------------------------------------
    @property
    def batch_size(self):
        """The batch size the file was saved with."""
        return self._net.batch_size

    def input_shapes(self, batch_size=None):
        b = self._net.batch_size if batch_size is None else batch_size
        return OrderedDict((n, self._net.variables[n].resolve(b)) for n in self.input_names)

    def plan(self, batch_size=None):
        """The plan for ``batch_size`` (made on first use and kept)."""
        b = self._net.batch_size if batch_size is None else int(batch_size)
        p = self._plans.get(b)
        if p is None:
            if b < 1 and any(self._net.variables[n].shape[:1] and
                             self._net.variables[n].shape[0] < 0 for n in self.input_names):
                raise ValueError('network %r: batch size must be positive, got %d'
                                 % (self.network_name, b))
            p = self._plans[b] = _Plan(self, b)
        return p

    # ---- running ---------------------------------------------------------
    def _arrays(self, args, kwargs):
        if len(args) == 1 and isinstance(args[0], dict) and not kwargs:
            kwargs, args = dict(args[0]), ()
        if len(args) > len(self.input_names):
            raise TypeError('run: %d inputs given, the network takes %d (%s)'
                            % (len(args), len(self.input_names), ', '.join(self.input_names)))
        named = dict(zip(self.input_names, args))
        for k, v in kwargs.items():
            if k not in self.input_names:
                raise TypeError('run: unknown input %r; the inputs are %s'
                                % (k, ', '.join(self.input_names)))
            if k in named:
                raise TypeError('run: input %r given twice' % k)
            named[k] = v
        out = []
        for n in self.input_names:
            if n not in named:
                raise TypeError('run: input %r is missing' % n)
            a = np.asarray(named[n])
            if a.dtype.kind == 'f' and a.dtype != np.float32 or a.dtype.kind == 'b':
                a = a.astype(np.float32)
            elif a.dtype.kind not in 'fiu':
                raise TypeError('run: input %r must hold numbers, got dtype %s' % (n, a.dtype))
            out.append(np.ascontiguousarray(a))
        return out

    def _batch_of(self, arrays):
        b = None
        for n, a in zip(self.input_names, arrays):
            decl = self._net.variables[n].shape
            if decl and decl[0] < 0 and a.ndim == len(decl):
                if b is None:
                    b = a.shape[0]
                elif a.shape[0] != b:
                    raise ValueError('run: inputs disagree on the batch size (%d and %d)'
                                     % (b, a.shape[0]))
        return self._net.batch_size if b is None else b

    def run(self, *args, **kwargs):
        arrays = self._arrays(args, kwargs)
        plan = self.plan(self._batch_of(arrays))
        for n, v, a in zip(self.input_names, plan.inputs, arrays):
            if a.shape != v.shape:
                raise ValueError('run: input %r has shape %s, the network expects %s'
                                 % (n, a.shape, v.shape))
            v.data.set_array(a)
        try:
            for st in plan.steps:
                st.impl.forward(st.ins, st.outs)
                for nd in st.release:
                    nd.clear()
            result = OrderedDict((n, v.d) for n, v in zip(self.output_names, plan.outputs))
        except BaseException:
            for st in plan.steps:
                for nd in st.release:
                    nd.clear()
            raise
        finally:
            for v in plan.outputs:
                v.data.clear()
            for v in plan.inputs:
                v.data.clear()
        return result

    __call__ = run

    def __repr__(self):
        return '<nncy.runtime.Model network=%r inputs=%s outputs=%s>' % (
            self.network_name, self.input_names, self.output_names)


def load(path, network=None, executor=None, max_bytes=None, extension=None):
    """A ``Model`` for an NNP file (``.nnp``, ``.nntxt``, ``.protobuf``; or a
    list of files read together, e.g. ``['net.nntxt', 'params.h5']``).  By
    default the first executor's network, inputs and outputs are used, else
    the first network's."""
    return Model(path, network=network, executor=executor, max_bytes=max_bytes,
                 extension=extension)
