"""asv suites over the function table.

Each suite is parametrised by table row and size; the NumPy and PyTorch suites
time the same computation so that one ``asv run`` yields nncy/NumPy and
nncy/PyTorch ratios (quote those, not absolute times).  Rows without an
equivalent raise NotImplementedError in ``setup``, which asv reports as skipped.
"""
import numpy as np

try:
    from .cases import CASES, SIZES
except ImportError:  # run as a plain module
    from cases import CASES, SIZES

import nncy as nn
import nncy.functions as F
from nncy._table import FUNCTIONS, BY_NAME

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None

NAMES = [s.name for s in FUNCTIONS]
SIZE_NAMES = list(SIZES)


def _case(name, size):
    if name not in CASES:
        raise NotImplementedError('no benchmark case for %s' % name)
    return CASES[name](size)


def _build(name, size, need_grad):
    inputs, args, _, _ = _case(name, size)
    vs = [nn.Variable.from_numpy_array(a, need_grad=need_grad and a.dtype.kind == 'f')
          for a in inputs]
    spec = BY_NAME[name]
    if spec.signature:   # NNabla's order mixes inputs and arguments: name the inputs
        y = getattr(F, name)(**dict(zip([i.name for i in spec.inputs], vs)), **args)
    else:
        y = getattr(F, name)(*vs, **args)
    if isinstance(y, (tuple, list)):
        y = F.sink(*y)
    return vs, y


class TimeForward:
    """Static-graph forward of one function."""
    params = (NAMES, SIZE_NAMES)
    param_names = ['function', 'size']
    timeout = 120

    def setup(self, name, size):
        self.vs, self.y = _build(name, size, need_grad=False)
        self.y.forward()

    def time_forward(self, name, size):
        self.y.forward()


class TimeBackward:
    """Static-graph backward of one function (forward done in setup)."""
    params = (NAMES, SIZE_NAMES)
    param_names = ['function', 'size']
    timeout = 120

    def setup(self, name, size):
        if name == 'sink':
            raise NotImplementedError('sink has nothing to differentiate')
        self.vs, self.y = _build(name, size, need_grad=True)
        self.y.forward()
        self.y.backward()

    def time_backward(self, name, size):
        self.y.backward()


class TimeNumpy:
    """The same forward written with NumPy."""
    params = (NAMES, SIZE_NAMES)
    param_names = ['function', 'size']

    def setup(self, name, size):
        inputs, args, np_fn, _ = _case(name, size)
        if np_fn is None:
            raise NotImplementedError
        self.inputs, self.args, self.fn = inputs, args, np_fn
        if name == 'reshape':   # a NumPy reshape is free; time the copy nncy may make
            self.fn = lambda x, shape: x.reshape(shape).copy()
        for k in ('val', 'inplace'):
            self.args.pop(k, None)

    def time_forward(self, name, size):
        self.fn(*self.inputs, **self.args)


class TimeTorch:
    """The same forward and backward with PyTorch (skipped where not installed)."""
    params = (NAMES, SIZE_NAMES)
    param_names = ['function', 'size']

    def setup(self, name, size):
        if torch is None:
            raise NotImplementedError('PyTorch is not installed')
        inputs, _, _, torch_fn = _case(name, size)
        if torch_fn is None:
            raise NotImplementedError
        torch.set_grad_enabled(True)
        self.ts = [torch.from_numpy(a).requires_grad_(a.dtype.kind == 'f') for a in inputs]
        self.fn = torch_fn
        self.y = torch_fn(torch, *self.ts)
        self.gy = torch.ones_like(self.y)

    def time_forward(self, name, size):
        with torch.no_grad():
            self.fn(torch, *self.ts)

    def time_backward(self, name, size):
        self.y.backward(self.gy, retain_graph=True)


class TimeOverhead:
    """Dispatch cost of one tiny function (relu on 1 element): auto_forward,
    static forward, imperative NdArray call.  Compare with TimeOverheadTorch."""

    def setup(self):
        self.x = nn.Variable.from_numpy_array(np.ones(1, np.float32))
        self.nd = nn.NdArray.from_numpy_array(np.ones(1, np.float32))
        self.y = F.relu(self.x)

    def teardown(self):
        nn.set_auto_forward(False)

    def time_auto_forward_relu(self):
        nn.set_auto_forward(True)
        F.relu(self.x)

    def time_static_forward_relu(self):
        self.y.forward()

    def time_imperative_relu(self):
        F.relu(self.nd)


class TimeOverheadTorch:
    """torch.relu on a 1-element tensor."""

    def setup(self):
        if torch is None:
            raise NotImplementedError('PyTorch is not installed')
        self.t = torch.ones(1)

    def time_torch_relu(self):
        torch.relu(self.t)
