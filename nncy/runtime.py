"""Lean CPU inference of NNP files.

    from nncy import runtime
    model = runtime.load('model.nnp')            # first executor, else first network
    y = model.run(x)['y']                          # or model.run(x=x); model(x)

No training graph is built: the function implementations are created and
set up once per batch size (a *plan*), with argument and shape checks done
then, and each ``run`` calls their forward methods in order.  Parameters need
no gradient and no gradient buffer is ever allocated.

The plan also lays out the memory once: every intermediate gets a buffer
that outlives the run, and buffers are shared between intermediates whose
lifetimes (from the step that writes them to the last step that reads them)
do not overlap, so a run allocates only its output arrays, which are handed
to the caller and never reused by the next run.  Steps between planned
buffers run through the implementation's ``bind`` where it has one (a call
with its array views made once), else through ``forward``.

At planning, a batch normalization in inference mode (``batch_stat`` False)
whose input is a convolution's output read by nothing else is folded into
that convolution: the weights are scaled per output channel by
gamma / sqrt(var + eps) and the bias becomes beta + (bias - mean) * scale,
computed in double precision; results agree with the two functions run
apart to float rounding.  The model's own parameters are left untouched.

A ReLU that is the only reader of a convolution's or an affine's output is
merged into that step (the same values are clipped where they were written).

Where every step allows it, the plan is also compiled into one
``nncy._kernels.Program``: small 2-D convolutions, max pooling without
padding, dense layers (with the merged ReLU), ReLU and softmax run as lean
kernel calls whose arrays, geometry and packed weights were fixed at
planning, back to back in one call without the GIL; reshapes become views;
other steps on planned buffers run through their bound calls.  The run's
float32 inputs of the planned shapes are copied into the program's own
arrays and its outputs copied out; anything else takes the step-by-step
path above.

Importing this module and running a model whose parameters are stored as
``parameter.protobuf`` imports neither h5py nor CuPy.
"""
from collections import OrderedDict

import numpy as np

from nncy import _nnp

__all__ = ['load', 'Model']


class _Step:
    __slots__ = ('impl', 'ins', 'outs', 'name', 'type_name', 'spec', 'args', 'cls', 'relu')

    def __init__(self, impl, ins, outs, name, type_name, spec=None, args=None, cls=None,
                 relu=False):
        self.impl, self.ins, self.outs, self.name, self.type_name = \
            impl, ins, outs, name, type_name
        self.spec, self.args, self.cls, self.relu = spec, args, cls, relu

    def named_inputs(self):
        """Input name (from the function table) -> Variable, for the inputs given."""
        omitted = self.impl.omitted
        names = [i.name for i in self.spec.inputs if i.name not in omitted]
        return dict(zip(names, self.ins))


def _fold_batch_norm(conv, bn, params, ctx):
    """A Convolution step computing conv followed by bn, or None when the pair
    does not fold (bn trains or normalizes other axes, or a weight, bias or
    statistic is not a parameter of the model).  Scale and shift are worked
    out in double precision."""
    from nncy._core import Variable
    a = bn.args
    if a['batch_stat'] or a['output_stat'] or len(bn.outs) != 1:
        return None
    cin, bin_ = conv.named_inputs(), bn.named_inputs()
    if bin_.get('x') is not conv.outs[0] or 'mean' not in bin_ or 'variance' not in bin_:
        return None
    y = conv.outs[0]
    channel_axis = len(y.shape) - 1 if conv.args['channel_last'] else conv.args['base_axis']
    if tuple(a['axes']) != (channel_axis,):
        return None
    oc = y.shape[channel_axis]
    if any(id(v) not in params for n, v in cin.items() if n != 'x'):
        return None
    stats = {}
    for n in ('beta', 'gamma', 'mean', 'variance'):
        v = bin_.get(n)
        if v is None:
            continue
        if id(v) not in params or v.size != oc:
            return None
        stats[n] = v.d.reshape(oc).astype(np.float64)
    w = cin['weight'].d
    scale = 1.0 / np.sqrt(stats['variance'] + a['eps'])
    if 'gamma' in stats:
        scale = scale * stats['gamma']
    bias = -stats['mean'] * scale
    if 'bias' in cin:
        bias += cin['bias'].d.astype(np.float64) * scale
    if 'beta' in stats:
        bias += stats['beta']
    w2 = Variable.from_numpy_array(
        (w.astype(np.float64) * scale.reshape((oc,) + (1,) * (w.ndim - 1))).astype(np.float32))
    b2 = Variable.from_numpy_array(bias.astype(np.float32))
    impl = conv.cls(conv.spec, conv.args, ctx)
    ins = [cin['x'], w2, b2]
    try:
        shapes = impl.setup(ins)
    except (ValueError, TypeError, NotImplementedError):
        return None
    if [tuple(s) for s in shapes] != [tuple(bn.outs[0].shape)]:
        return None
    return _Step(impl, ins, bn.outs, conv.name, conv.type_name, conv.spec, conv.args,
                 conv.cls)


def _bind(st, moving):
    """The step as a call without arguments: the implementation's ``bind``
    where it has one and the step's storage stays put from run to run (no
    run input or output, no view set at run time, float32 throughout), else
    its forward."""
    impl, ins, outs = st.impl, st.ins, st.outs
    bind = getattr(impl, 'bind', None)
    if bind is not None and not any(id(v) in moving for v in ins + outs) and \
            all(not v.data.clear_called and v.d.dtype == np.float32 for v in ins + outs):
        call = bind(ins, outs)
        if call is not None:
            return call
    return lambda: impl.forward(ins, outs)


def _readers(steps):
    n = {}
    for st in steps:
        for v in st.ins:
            n[id(v)] = n.get(id(v), 0) + 1
    return n


def _fold(steps, keep, params, ctx):
    """Steps with inference batch normalizations folded into the convolutions
    before them (where the convolution's output has no other use)."""
    readers = _readers(steps)
    out = []
    k = 0
    while k < len(steps):
        st = steps[k]
        if st.type_name == 'Convolution' and k + 1 < len(steps) and \
                steps[k + 1].type_name == 'BatchNormalization' and \
                readers.get(id(st.outs[0])) == 1 and id(st.outs[0]) not in keep:
            folded = _fold_batch_norm(st, steps[k + 1], params, ctx)
            if folded is not None:
                out.append(folded)
                k += 2
                continue
        out.append(st)
        k += 1
    return out


def _relu_in_place(a):
    """a = a if a > 0 else 0, element by element (NaN and -0 become 0, as
    ReLU gives them)."""
    np.copyto(a, 0.0, where=~(a > 0))


class _ThenReLU:
    """A convolution or affine implementation followed by ReLU on its output
    (in place): the pair as one step, whose output is the ReLU's."""

    def __init__(self, impl):
        self.base = impl

    def link(self, inputs, outputs):
        pass

    def forward(self, inputs, outputs):
        self.base.forward(inputs, outputs)
        _relu_in_place(outputs[0].d)

    def bind(self, inputs, outputs):
        bind = getattr(self.base, 'bind', None)
        call = bind(inputs, outputs) if bind is not None else None
        if call is None:
            return None
        y = outputs[0].d

        def run():
            call()
            _relu_in_place(y)
        return run


_RELU_FUSES = ('Convolution', 'Affine')


def _fuse_relu(steps, keep):
    """Steps with each ReLU that is the only reader of a convolution's or an
    affine's output merged into that step (an exact rewrite: the same values
    are clipped, where the first step wrote them)."""
    readers = _readers(steps)
    out = []
    k = 0
    while k < len(steps):
        st = steps[k]
        nxt = steps[k + 1] if k + 1 < len(steps) else None
        if st.type_name in _RELU_FUSES and not st.relu and len(st.outs) == 1 and \
                nxt is not None and nxt.type_name == 'ReLU' and len(nxt.ins) == 1 and \
                nxt.ins[0] is st.outs[0] and readers.get(id(st.outs[0])) == 1 and \
                id(st.outs[0]) not in keep and \
                tuple(nxt.outs[0].shape) == tuple(st.outs[0].shape):
            out.append(_Step(_ThenReLU(st.impl), st.ins, nxt.outs, st.name,
                             st.type_name, st.spec, st.args, st.cls, relu=True))
            k += 2
            continue
        out.append(st)
        k += 1
    return out


# Sizes below which the lean kernels of the program beat the general ones
# (which split work across threads and pack for large products).
_LEAN_CONV_MACS = 1 << 20
_LEAN_DENSE_MACS = 1 << 18


def _base_impl(st):
    return st.impl.base if st.relu else st.impl


def _lean_step(prog, st, src, dst):
    """Adds ``st`` to ``prog`` as a lean kernel call; False when it has none."""
    impl = _base_impl(st)
    t = st.type_name
    if t == 'Convolution':
        g = getattr(impl, 'geom', None)
        if g is None or len(g) != 18 or g[3] != 1 or g[4] != 2 or g[5] != 0 or \
                g[11] != 1 or g[17] != 1:
            return False
        batch, c, oc = g[0], g[1], g[2]
        (h, oh, kh, ph, sh, _), (w, ow, kw, pw, sw, _) = g[6:12], g[12:18]
        if batch * oc * oh * ow * c * kh * kw > _LEAN_CONV_MACS * max(batch, 1) or batch > 8:
            return False
        x, wt = src(st.ins[0]), src(st.ins[1])
        b = src(st.ins[2]) if len(st.ins) > 2 else None
        y = dst(st.outs[0])
        if x is None or wt is None or y is None or (len(st.ins) > 2 and b is None):
            return False
        prog.conv2d(x, wt, b, y, (batch, c, h, w, oc, oh, ow, kh, kw, ph, pw, sh, sw), st.relu)
        return True
    if t == 'MaxPooling':
        g = getattr(impl, 'geom', None)
        if g is None or len(g) != 13 or g[1] != 2:
            return False
        (h, oh, kh, sh, ph), (w, ow, kw, sw, pw) = g[3:8], g[8:13]
        if ph or pw or oh < 1 or ow < 1 or (oh - 1) * sh + kh > h or (ow - 1) * sw + kw > w:
            return False
        x, y = src(st.ins[0]), dst(st.outs[0])
        if x is None or y is None:
            return False
        prog.max_pool2d(x, y, (g[0], h, w, oh, ow, kh, kw, sh, sw))
        return True
    if t == 'Affine':
        m, k, n = impl._mats(st.ins, st.outs[0])
        if m * k * n > _LEAN_DENSE_MACS:
            return False
        x, wt, y = src(st.ins[0]), src(st.ins[1]), dst(st.outs[0])
        b = src(st.ins[2]) if len(st.ins) > 2 else None
        if x is None or wt is None or y is None or (len(st.ins) > 2 and b is None):
            return False
        prog.dense(x, wt, b, y, m, k, n, st.relu)
        return True
    if t == 'ReLU' and len(st.ins) == 1:
        x, y = src(st.ins[0]), dst(st.outs[0])
        if x is None or y is None or x.size != y.size:
            return False
        prog.relu(x, y)
        return True
    if t in ('Softmax', 'LogSoftmax') and hasattr(impl, 'axis'):
        x, y = src(st.ins[0]), dst(st.outs[0])
        if x is None or y is None:
            return False
        shape, a = tuple(st.ins[0].shape), impl.axis
        outer = int(np.prod(shape[:a], dtype=np.int64))
        inner = int(np.prod(shape[a + 1:], dtype=np.int64))
        prog.softmax(x, y, outer, shape[a], inner, bool(getattr(impl, 'log', False)))
        return True
    return False


def _program(plan):
    """The plan as one ``Program`` of kernel calls (the run's inputs copied
    into arrays of its own, its outputs copied out), or None where a step
    has neither a lean kernel nor a call on planned buffers."""
    from nncy import _kernels as K
    prog = K.Program()
    arr = {}
    ins = []
    for v in plan.inputs:
        if id(v) in arr:
            return None
        arr[id(v)] = a = np.empty(v.shape, np.float32)
        ins.append(a)
    outputs = {id(v) for v in plan.outputs}

    def planned(v):
        if v.data.clear_called or id(v) in plan.aliased:
            return None
        a = v.d
        if a.dtype != np.float32 or not a.flags.c_contiguous:
            return None
        return a

    def src(v):
        a = arr.get(id(v))
        return planned(v) if a is None else a

    def dst(v):
        if id(v) in arr:
            return None              # written twice
        if id(v) in outputs:
            a = np.empty(v.shape, np.float32)
        else:
            a = planned(v)
        if a is not None:
            arr[id(v)] = a
        return a

    for st in plan.steps:
        if st.type_name == 'Reshape' and len(st.ins) == 1 and len(st.outs) == 1:
            x = src(st.ins[0])
            if x is not None and id(st.outs[0]) not in arr and \
                    x.size == st.outs[0].size:
                arr[id(st.outs[0])] = x.reshape(st.outs[0].shape)
                continue
        if _lean_step(prog, st, src, dst):
            continue
        # a planned call on the plan's own buffers
        for v in st.ins:
            if id(v) in arr and (v.data.clear_called or arr[id(v)] is not v.d and
                                 not np.shares_memory(arr[id(v)], v.d)):
                return None
        if any(id(v) in arr or id(v) in outputs for v in st.outs):
            return None
        call = _bind(st, {id(v) for v in plan.inputs} | outputs | plan.aliased)
        if getattr(call, '__name__', '') == '<lambda>' and \
                any(planned(v) is None and id(v) not in arr for v in st.ins + st.outs):
            return None
        for v in st.outs:
            if planned(v) is None:
                return None
            arr[id(v)] = v.d
        prog.call(call)
    try:
        prog.set_io(ins, [arr[id(v)] for v in plan.outputs])
    except (KeyError, TypeError, ValueError):
        return None
    return prog


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
        steps = []
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
            steps.append(_Step(impl, ins, outs, fd.name, spec.type_name, spec, args, cls))
        missing = [n for n in model.output_names if n not in made]
        if missing:
            raise ValueError('network %r: outputs %s are not computed by any function'
                             % (plan.name, missing))
        self.outputs = [made[n] for n in model.output_names]
        outside = {id(v) for v in self.outputs} | {id(v) for v in self.inputs}
        params = {id(v) for v in model._param_vars.values()}
        self.steps = _fuse_relu(_fold(steps, outside, params, ctx), outside)
        self._lay_out(outside | params)
        fixed = outside | self.aliased
        self.calls = [_bind(st, fixed) for st in self.steps]
        self.program = _program(self)

    def _lay_out(self, outside):
        """Gives every intermediate a buffer, shared with intermediates whose
        lifetimes do not overlap (greedy, smallest free buffer that fits).
        Outputs that a function makes views of its inputs (in-place reshape,
        through ``link``) keep their input's buffer alive as long as they live.
        The run's inputs and outputs keep their own storage."""
        last = {}
        for k, st in enumerate(self.steps):
            for v in st.ins + st.outs:
                last[id(v)] = k
        owner = {}         # id(variable) -> index of its buffer
        users = []         # per buffer: how many live variables use it
        sizes = []
        free = []          # indices of buffers nobody uses
        self.buffers = []
        self.aliased = set()
        for k, st in enumerate(self.steps):
            st.impl.link(st.ins, st.outs)
            for v in st.outs:
                if not v.data.clear_called:      # a view set by link
                    src = next((u for u in st.ins if id(u) in owner or id(u) in outside
                                if not u.data.clear_called and np.shares_memory(u.d, v.d)),
                               None)
                    if src is not None:
                        self.aliased.add(id(v))
                        if id(src) in owner:
                            owner[id(v)] = owner[id(src)]
                            users[owner[id(v)]] += 1
                    continue
                if id(v) in outside:
                    continue
                nbytes = v.size * np.dtype(np.float32).itemsize
                fit = [i for i in free if sizes[i] >= nbytes]
                if fit:
                    i = min(fit, key=lambda i: sizes[i])
                    free.remove(i)
                else:
                    i = len(self.buffers)
                    self.buffers.append(np.empty(max(nbytes, 1), np.uint8))
                    sizes.append(self.buffers[i].nbytes)
                    users.append(0)
                users[i] += 1
                owner[id(v)] = i
                v.data.set_array(self.buffers[i][:nbytes].view(np.float32).reshape(v.shape))
            for v in st.ins + st.outs:
                if last.get(id(v)) == k and id(v) in owner:
                    i = owner.pop(id(v))
                    del last[id(v)]
                    users[i] -= 1
                    if users[i] == 0:
                        free.append(i)


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
        if not kwargs and len(args) == len(self.input_names) and \
                all(type(a) is np.ndarray and a.dtype == np.float32 and a.flags.c_contiguous
                    for a in args):
            return args            # the common case, with nothing to convert
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
        if not kwargs:
            # the common case: float32 arrays of the saved batch size by position
            plan = self._plans.get(self._net.batch_size)
            if plan is not None and plan.program is not None:
                outs = plan.program.run(args)
                if outs is not None:
                    return OrderedDict(zip(self.output_names, outs))
        arrays = self._arrays(args, kwargs)
        b = self._batch_of(arrays)
        plan = self._plans.get(b) or self.plan(b)
        if plan.program is not None:
            outs = plan.program.run(arrays)
            if outs is not None:
                return OrderedDict(zip(self.output_names, outs))
        for n, v, a in zip(self.input_names, plan.inputs, arrays):
            if a.shape != v.shape:
                raise ValueError('run: input %r has shape %s, the network expects %s'
                                 % (n, a.shape, v.shape))
            v.data.set_array(a)
        try:
            for call in plan.calls:
                call()
            result = OrderedDict(
                (n, v.d.copy() if id(v) in plan.aliased else v.d)
                for n, v in zip(self.output_names, plan.outputs))
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
