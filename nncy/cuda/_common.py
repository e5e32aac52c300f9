"""What every cuda implementation module uses: CuPy imported lazily, the
device of a node, and small device-array helpers."""
import numpy as np

from nncy._core import dev_data, dev_data_out
from nncy.cuda import cupy
from nncy.cuda._module import blocks, ctype, launch   # noqa: F401  (re-exported)


class _LazyCupy:
    """CuPy, imported at the first kernel call: importing an implementation
    module (which registers its classes) works without CuPy."""

    def __getattr__(self, name):
        return getattr(cupy(), name)


cp = _LazyCupy()


def device(impl):
    """The CuPy device context of an implementation's node."""
    return cp.cuda.Device(int(impl.ctx.device_id or 0))


class CopyForward:
    """Mixin: forward passes x through (functions that act on gradients only)."""

    def forward(self, inputs, outputs):
        with device(self):
            dev_data_out(outputs[0])[...] = dev_data(inputs[0])


def store(g, value, accum):
    """g (+)= value on the device (value may broadcast)."""
    if accum:
        g += value
    else:
        g[...] = value


def contiguous(a, dtype):
    """``a`` as a contiguous array of ``dtype`` (no copy when it is one)."""
    a = a.astype(dtype, copy=False)
    return a if a.flags.c_contiguous else a.copy()


def sum_to(full, shape):
    """``full`` summed over the axes along which ``shape`` was broadcast."""
    lead = full.ndim - len(shape)
    axes = tuple(i for i in range(full.ndim)
                 if i < lead or (shape[i - lead] == 1 and full.shape[i] != 1))
    return full.sum(axis=axes).reshape(shape) if axes else full
