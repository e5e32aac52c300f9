"""Composite functions: table rows of kind ``composite``, written with other
functions.

A *builder*, registered with ``@composite('TypeName')``, takes the row's
inputs (Variables; None for an optional input the call left out) and its
arguments by name, and returns the output Variable (or a tuple of them) built
from ``F.*`` calls.  Every composite row is served by one class,
:class:`Composite`: at setup it runs the builder once on private leaf
variables of the input shapes, and its forward and backward run that private
graph.  So the user's graph holds a single node with the row's type name and
arguments (what NNP files and ``Function.info`` show), and its gradients come
from the building functions' own backward passes.

Builders validate their arguments first and raise ``ValueError``/``TypeError``
naming the row's function (errors from the building functions would name
those instead).
"""
import numpy as np

from nncy import _core
from nncy import _kernels as K
from nncy._core import Impl, Variable, d32, dout, register
from nncy._table import BY_TYPE

_BUILDERS = {}

# Backends a composite row is registered for.  The building functions dispatch
# by the context themselves, but the output copy below is a CPU kernel.
_BACKENDS = ('cpu',)


def composite(type_name):
    """Decorator: ``fn`` builds the composite row ``type_name``."""
    spec = BY_TYPE.get(type_name)
    if spec is None or spec.kind != 'composite':
        raise KeyError('composite: %r is not a composite row of the function table'
                       % type_name)

    def deco(fn):
        _BUILDERS[type_name] = fn
        for backend in _BACKENDS:
            register(type_name, backend)(Composite)
        return fn
    return deco


def builder(type_name):
    """The builder of a composite row, or None."""
    return _BUILDERS.get(type_name)


class Composite(Impl):
    """One node running a private graph built by the row's builder."""

    def setup(self, inputs):
        from nncy import functions as F
        build = _BUILDERS[self.spec.type_name]
        self.leaves = [Variable(x.shape, need_grad=True) for x in inputs]
        given = iter(self.leaves)
        args_in = [None if i.name in self.omitted else next(given) for i in self.spec.inputs]
        prev = _core.get_auto_forward()
        _core.set_auto_forward(False)     # build only; run in forward()
        try:
            outs = build(*args_in, **self.args)
        finally:
            _core.set_auto_forward(prev)
        self.outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
        if len(self.outs) == 1:
            self.root = self.outs[0]
        else:
            self.root = F.sink(*self.outs, one_input_grad=False)
        return [o.shape for o in self.outs]

    def _bind(self, inputs):
        for leaf, x in zip(self.leaves, inputs):
            leaf.data = x.data

    def copy_out(self, o, y):
        """y's data = o's (a backend computing on device arrays overrides this)."""
        K.strided_copy(self.spec.name, d32(o), dout(y))

    def zero_grad(self, x):
        x.grad.zero()

    def forward(self, inputs, outputs):
        self._bind(inputs)
        self.root.forward()
        for o, y in zip(self.outs, outputs):
            self.copy_out(o, y)

    def backward(self, inputs, outputs, propagate_down, accum):
        if not any(propagate_down):
            return
        self._bind(inputs)
        for leaf, x, pd, acc in zip(self.leaves, inputs, propagate_down, accum):
            leaf.need_grad = pd
            if pd:
                if not acc:
                    self.zero_grad(x)
                leaf.grad = x.grad      # the private leaves accumulate into it
        for o, y in zip(self.outs, outputs):
            o.grad = y.grad
        self.root.backward(None)


# ---------------------------------------------------------------------------
# Builders


def _axis(name, x, axis):
    nd = len(x.shape)
    if not isinstance(axis, int) or not -nd <= axis < nd:
        raise ValueError('%s: argument %r must lie in [%d, %d) for input x of shape %s, '
                         'got %r' % (name, 'axis', -nd, nd, x.shape, axis))
    return axis % nd


def _signed_pair(name, x, axis, act):
    """act(x) and act(-x) joined along ``axis``: x times [1, -1] along a new
    axis before ``axis`` (exact, and inf stays inf), the activation, then a
    reshape that merges the new axis into ``axis``."""
    from nncy import functions as F
    a = _axis(name, x, axis)
    shape = tuple(x.shape)
    nd = len(shape)
    signs = Variable.from_numpy_array(
        np.array([1, -1], np.float32).reshape((1,) * a + (2,) + (1,) * (nd - a)))
    t = F.mul2(F.reshape(x, shape[:a] + (1,) + shape[a:]), signs)
    return F.reshape(act(t), shape[:a] + (2 * shape[a],) + shape[a + 1:])


@composite('CReLU')
def crelu(x, axis=1):
    from nncy import functions as F
    return _signed_pair('crelu', x, axis, F.relu)


@composite('CELU')
def celu(x, alpha=1.0, axis=1):
    from nncy import functions as F
    return _signed_pair('celu', x, axis, lambda t: F.elu(t, alpha))
