"""Convolution and deconvolution on the ``cudnn`` backend: cuDNN Frontend
graphs (``nvidia-cudnn-frontend``), built once per geometry and kept in a plan
cache.

Every layer of the family is one underlying convolution from an *image* I
(batch, C, spatial) to a *response* R (batch, K, out) with a filter W
(K, C / group, kernel), described by the geometry tuple that the CPU classes
compute in ``setup`` (``nncy._cpu_conv``).  The three cuDNN operations are

    fprop: (I, W) -> R      dgrad: (R, W) -> I      wgrad: (I, R) -> W

A convolution runs fprop forward and dgrad/wgrad backward; a deconvolution is
the transpose: dgrad forward, fprop for its input gradient.

Environment (read when a plan is built, as NNabla does):
- ``NNABLA_CUDNN_WORKSPACE_LIMIT``: most workspace bytes a plan may use
  (negative or unset: no limit);
- ``NNABLA_CUDNN_DETERMINISTIC``: nonzero keeps only deterministic plans.

Cases cuDNN does not take (more than 3 spatial axes, a graph no engine
supports, the package missing) run on the ``cuda`` implementation instead."""
import os
import threading
import warnings

import numpy as np

from nncy import _core
from nncy._core import dev_data, dev_data_out, dev_grad, dev_grad_out, register
from nncy.cuda._common import cp, device, store

LAYERS = ('Convolution', 'DepthwiseConvolution', 'Deconvolution', 'DepthwiseDeconvolution')
_DTYPES = {'float32': 'FLOAT', 'float16': 'HALF'}

_cudnn = None
_lock = threading.Lock()
_plans = {}     # key -> Plan, or None where cuDNN declined the graph
_handles = {}   # device id -> cuDNN handle


def _module():
    """The cudnn package, or None (warned once) when it is not installed."""
    global _cudnn
    if _cudnn is None:
        try:
            import cudnn
            _cudnn = cudnn
        except ImportError:
            warnings.warn('nncy: the cudnn backend needs nvidia-cudnn-frontend '
                          '(pip install nncy[cuda]); convolutions run on the cuda kernels')
            _cudnn = False
    return _cudnn or None


def settings():
    """(workspace limit in bytes or None, deterministic) from the environment."""
    try:
        limit = int(os.environ.get('NNABLA_CUDNN_WORKSPACE_LIMIT', '-1'))
    except ValueError:
        raise ValueError('NNABLA_CUDNN_WORKSPACE_LIMIT must be an integer number of bytes, '
                         'got %r' % os.environ['NNABLA_CUDNN_WORKSPACE_LIMIT']) from None
    det = os.environ.get('NNABLA_CUDNN_DETERMINISTIC', '0').strip().lower()
    return (limit if limit >= 0 else None), det not in ('', '0', 'false', 'no')


# ---------------------------------------------------------------------------
# Geometry: dims in cuDNN's order (N, C, spatial...) and element strides of the
# arrays as they lie in memory.

def unpack(geom):
    """(batch, C, K, group, channel_last, axes) of a geometry tuple; ``axes``
    holds per spatial axis (image len, response len, kernel, pad, stride,
    dilation)."""
    batch, c, k, group, ns, cl = geom[:6]
    axes = [tuple(geom[6 + 6 * i:12 + 6 * i]) for i in range(ns)]
    return batch, c, k, group, bool(cl), axes


def _dense(dims, channel_last):
    """Element strides of an array with cuDNN dims (A, B, s...) stored as
    (A, B, s...) or, channel-last, (A, s..., B)."""
    order = [0] + list(range(2, len(dims))) + [1] if channel_last else list(range(len(dims)))
    strides = [0] * len(dims)
    acc = 1
    for d in reversed(order):
        strides[d] = acc
        acc *= dims[d]
    return strides


def descriptors(geom):
    """{'I', 'R', 'W': (dims, strides)} and the (pad, stride, dilation) lists of
    the underlying convolution.  One spatial axis becomes two (a leading axis
    of size 1), since cuDNN convolves 2-D and 3-D data."""
    batch, c, k, group, cl, axes = unpack(geom)
    if len(axes) == 1:
        axes = [(1, 1, 1, 0, 1, 1)] + axes
    image = [batch, c] + [a[0] for a in axes]
    response = [batch, k] + [a[1] for a in axes]
    filt = [k, c // group] + [a[2] for a in axes]
    tensors = {name: (dims, _dense(dims, cl))
               for name, dims in (('I', image), ('R', response), ('W', filt))}
    window = ([a[3] for a in axes], [a[4] for a in axes], [a[5] for a in axes])
    return tensors, window


def supported(geom, dtype):
    return 1 <= geom[4] <= 3 and np.dtype(dtype).name in _DTYPES


# ---------------------------------------------------------------------------
# Plans

class Plan:
    """One built cuDNN graph: ``run(arrays)`` executes it on the current
    stream, ``arrays`` mapping 'I', 'W', 'R' to device arrays."""

    def __init__(self, cudnn, handle, op, geom, dtype, limit, deterministic):
        tensors, (pad, stride, dil) = descriptors(geom)
        dt = getattr(cudnn.data_type, _DTYPES[np.dtype(dtype).name])
        g = cudnn.pygraph(io_data_type=dt, intermediate_data_type=cudnn.data_type.FLOAT,
                          compute_data_type=cudnn.data_type.FLOAT, handle=handle)
        t = {}
        inputs = {'fprop': ('I', 'W'), 'dgrad': ('R', 'W'), 'wgrad': ('I', 'R')}[op]
        for name in inputs:
            dims, strides = tensors[name]
            t[name] = g.tensor(name=name, dim=dims, stride=strides, data_type=dt)
        window = dict(padding=pad, stride=stride, dilation=dil)
        if op == 'fprop':
            out, self.out = g.conv_fprop(image=t['I'], weight=t['W'], **window), 'R'
        elif op == 'dgrad':
            out, self.out = g.conv_dgrad(loss=t['R'], filter=t['W'], **window), 'I'
        else:
            out, self.out = g.conv_wgrad(image=t['I'], loss=t['R'], **window), 'W'
        dims, strides = tensors[self.out]
        out.set_output(True).set_dim(dims).set_stride(strides).set_data_type(dt)
        t[self.out] = out
        g.validate()
        g.build_operation_graph()
        g.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
        if limit is not None:
            g.deselect_workspace_greater_than(limit)
        if deterministic:
            g.deselect_numeric_notes([cudnn.numerical_note.NONDETERMINISTIC])
        g.check_support()
        g.build_plans()
        self.cudnn, self.handle, self.graph, self.tensors = cudnn, handle, g, t
        self.workspace = int(g.get_workspace_size())

    def run(self, arrays):
        cp_ = cp
        self.cudnn.set_stream(self.handle, cp_.cuda.get_current_stream().ptr)
        ws = cp_.empty(max(self.workspace, 1), np.uint8)
        pack = {self.tensors[n]: int(a.data.ptr) for n, a in arrays.items()}
        self.graph.execute(pack, int(ws.data.ptr), handle=self.handle)


def plan(op, geom, dtype, dev):
    """The cached plan for an operation, or None where cuDNN cannot run it."""
    limit, det = settings()
    key = (op, geom, np.dtype(dtype).name, dev, limit, det)
    with _lock:
        if key in _plans:
            return _plans[key]
    cudnn = _module() if supported(geom, dtype) else None
    built = None
    if cudnn is not None:
        with _lock:
            handle = _handles.get(dev)
            if handle is None:
                handle = _handles[dev] = cudnn.create_handle()
        try:
            built = Plan(cudnn, handle, op, geom, dtype, limit, det)
        except Exception as e:   # cuDNN declined: no engine, bad layout, ...
            warnings.warn('nncy: cuDNN cannot run %s for geometry %s (%s); using the cuda '
                          'kernels' % (op, geom, e))
    with _lock:
        _plans[key] = built
    return built


def clear_plans():
    """Forget every built plan (they are rebuilt on next use)."""
    with _lock:
        _plans.clear()


# ---------------------------------------------------------------------------
# The layers

class CudnnConv:
    """Runs a convolution-family layer through cuDNN plans, or through the
    ``cuda`` implementation it is mixed into where there is no plan."""

    def _ops(self):
        """(forward op, input-gradient op) and which of I/R are x and y."""
        if self.transposed:
            return 'dgrad', 'fprop', ('R', 'I')
        return 'fprop', 'dgrad', ('I', 'R')

    def _run(self, op, arrays, out, accum):
        """out (+)= the op's result; False when there is no plan."""
        p = plan(op, self.geom, out.dtype, int(self.ctx.device_id or 0))
        if p is None:
            return False
        arrays = {n: a if a.flags.c_contiguous else a.copy() for n, a in arrays.items()}
        target = cp.empty_like(out) if accum or not out.flags.c_contiguous else out
        arrays[p.out] = target
        p.run(arrays)
        if target is not out:
            store(out, target, accum)
        return True

    def _bias(self, b, y):
        shape = [1] * y.ndim
        shape[-1 if self.channel_last else self.args['base_axis']] = b.size
        y += b.reshape(shape).astype(y.dtype, copy=False)

    def forward(self, inputs, outputs):
        fwd, _, (xn, _yn) = self._ops()
        with device(self):
            y = dev_data_out(outputs[0])
            x, w = dev_data(inputs[0]), dev_data(inputs[1])
            if not self._run(fwd, {xn: x, 'W': w.astype(y.dtype, copy=False)}, y, False):
                return super().forward(inputs, outputs)
            if len(inputs) > 2:
                self._bias(dev_data(inputs[2]), y)

    def backward(self, inputs, outputs, propagate_down, accum):
        _, bwd, (xn, yn) = self._ops()
        with device(self):
            gy = dev_grad(outputs[0])
            w = dev_data(inputs[1]).astype(gy.dtype, copy=False)
            done = [not p for p in propagate_down[:2]]
            if propagate_down[0]:
                done[0] = self._run(bwd, {yn: gy, 'W': w}, dev_grad_out(inputs[0], accum[0]),
                                    accum[0])
            if propagate_down[1]:
                x = dev_data(inputs[0]).astype(gy.dtype, copy=False)
                done[1] = self._run('wgrad', {xn: x, yn: gy},
                                    dev_grad_out(inputs[1], accum[1]), accum[1])
            rest = [propagate_down[i] and not done[i] for i in range(2)]
            if len(inputs) > 2:
                rest.append(propagate_down[2])
            if any(rest):   # the cuda implementation does what cuDNN did not
                rest += [False] * (len(inputs) - len(rest))
                super().backward(inputs, outputs, rest, accum)


def register_layers():
    """Register a cudnn class for each layer over its cuda implementation."""
    for name in LAYERS:
        base = _core.implementation(name, 'cuda')
        if base is not None:
            register(name, 'cudnn')(type(name, (CudnnConv, base), {}))
