"""A stand-in for the part of ``nvidia-cudnn-frontend``'s graph API that
nncy's cudnn backend uses, for tests on the host: graphs are recorded, and
``execute`` reads the operands through their addresses, dims and element
strides (as cuDNN does), computes the convolution with nncy's CPU functions,
and writes the output through its strides.  Calls are counted in ``log``."""
import ctypes
import types

import numpy as np

data_type = types.SimpleNamespace(FLOAT='FLOAT', HALF='HALF')
heur_mode = types.SimpleNamespace(A='A', FALLBACK='FALLBACK')
numerical_note = types.SimpleNamespace(NONDETERMINISTIC='NONDETERMINISTIC')
_NP = {'FLOAT': np.float32, 'HALF': np.float16}

log = []              # (event, details)
workspace_size = 256  # what every plan asks for
decline = False       # make check_support fail (no engine)


def create_handle():
    log.append(('create_handle', None))
    return object()


def set_stream(handle, stream):
    log.append(('set_stream', stream))


class Tensor:
    def __init__(self, name, dim=None, stride=None, data_type=None):
        self.name, self.dim, self.stride, self.data_type = name, dim, stride, data_type
        self.output = False

    def set_output(self, v):
        self.output = v
        return self

    def set_dim(self, d):
        self.dim = list(d)
        return self

    def set_stride(self, s):
        self.stride = list(s)
        return self

    def set_data_type(self, t):
        self.data_type = t
        return self


def _view(ptr, t):
    """The array of tensor ``t`` at address ``ptr`` (NumPy view, writable)."""
    dt = np.dtype(_NP[t.data_type])
    span = 1 + sum((d - 1) * s for d, s in zip(t.dim, t.stride))
    buf = (ctypes.c_char * (span * dt.itemsize)).from_address(ptr)
    flat = np.frombuffer(buf, dt)
    return np.lib.stride_tricks.as_strided(flat, t.dim, [s * dt.itemsize for s in t.stride])


def _conv(op, a, b, out_dims, window):
    """The result of cuDNN operation ``op`` on NCHW-ordered arrays."""
    import nncy as nn
    import nncy.functions as F
    pad, stride, dil = window
    with nn.context_scope(nn.Context(['cpu:float'])), nn.auto_forward(True):
        if op == 'fprop':
            x, w = a, b
        elif op == 'dgrad':
            x, w = np.zeros(out_dims, np.float32), b
        else:
            x, w = a, np.zeros(out_dims, np.float32)
        xv = nn.Variable.from_numpy_array(np.asarray(x, np.float32), need_grad=True)
        wv = nn.Variable.from_numpy_array(np.asarray(w, np.float32), need_grad=True)
        group = xv.shape[1] // wv.shape[1]
        y = F.convolution(xv, wv, pad=pad, stride=stride, dilation=dil, group=group)
        if op == 'fprop':
            return y.d.copy()
        xv.g, wv.g = 0, 0
        y.backward(np.asarray(a if op == 'dgrad' else b, np.float32))
        return (xv if op == 'dgrad' else wv).g.copy()


class pygraph:
    def __init__(self, io_data_type=None, intermediate_data_type=None, compute_data_type=None,
                 handle=None, **kw):
        self.io = io_data_type
        self.op = None
        self.built = False

    def tensor(self, name, dim, stride, data_type):
        return Tensor(name, list(dim), list(stride), data_type)

    def _node(self, op, a, b, padding, stride, dilation):
        assert self.op is None, 'one operation per graph'
        self.op, self.args, self.window = op, (a, b), (padding, stride, dilation)
        self.out = Tensor(op + '_out')
        return self.out

    def conv_fprop(self, image, weight, padding, stride, dilation):
        return self._node('fprop', image, weight, padding, stride, dilation)

    def conv_dgrad(self, loss, filter, padding, stride, dilation):
        return self._node('dgrad', loss, filter, padding, stride, dilation)

    def conv_wgrad(self, image, loss, padding, stride, dilation):
        return self._node('wgrad', image, loss, padding, stride, dilation)

    def validate(self):
        assert self.out.output and self.out.dim and self.out.stride

    def build_operation_graph(self):
        pass

    def create_execution_plans(self, modes):
        assert modes

    def deselect_workspace_greater_than(self, limit):
        log.append(('workspace_limit', limit))
        return self

    def deselect_numeric_notes(self, notes):
        log.append(('deselect_numeric_notes', tuple(notes)))
        return self

    def check_support(self):
        if decline:
            raise RuntimeError('no engine supports this graph')

    def build_plans(self):
        self.built = True
        log.append(('build', self.op))

    def get_workspace_size(self):
        return workspace_size

    def execute(self, pack, workspace, handle=None):
        assert self.built and isinstance(workspace, int)
        for t, ptr in pack.items():
            assert isinstance(ptr, int), 'pointers are passed as ints'
        a, b = (_view(pack[t], t) for t in self.args)
        result = _conv(self.op, a, b, self.out.dim, self.window)
        _view(pack[self.out], self.out)[...] = result
        log.append(('execute', self.op))
