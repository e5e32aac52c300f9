"""Shared by the cuda backend's tests: the backend fixture and the check that
runs a function under the CPU and the cuda context and compares.

On a machine with CuPy and a GPU the tests run on the GPU; elsewhere they run
the same code and the same CUDA kernels on the host through the CuPy
stand-in of ``tests/cudasim`` (which needs g++).  A test module uses them with

    from cuda_check import CPU, CUDA, TOL, cupy, same   # cupy: the fixture
"""
import numpy as np
import pytest

import nncy as nn
from nncy import _core
from nncy import cuda as nncy_cuda

import cudasim

ON_GPU = nncy_cuda.is_available()
if not ON_GPU and not cudasim.available():
    pytest.skip('needs CuPy and a GPU, or g++ for the host stand-in', allow_module_level=True)

CPU = nn.Context(['cpu:float'])
CUDA = nn.Context(['cuda:float', 'cpu:float'])
TOL = dict(rtol=2e-4, atol=2e-5, equal_nan=True)


@pytest.fixture(scope='module', autouse=True)
def cupy():
    """CuPy on a GPU machine, else the host stand-in (installed for the module)."""
    if ON_GPU:
        yield nncy_cuda.cupy()
        return
    prev = nncy_cuda._cp, _core.get_device_backend()
    nncy_cuda._cp = cudasim
    _core.set_device_backend(nncy_cuda._CupyArrays(cudasim))
    yield cudasim
    nncy_cuda._cp = prev[0]
    _core.set_device_backend(prev[1])


def backends(y):
    """{type name: implementing module} of the nodes of y's graph."""
    found = {}
    y.visit(lambda f: found.__setitem__(f.info.type_name, type(f.impl).__module__))
    return found


def run(ctx, fn, arrays, need_grad=None, seed=0, on_gpu=None, backward=True):
    """(y, [grads]) of ``fn`` on leaf variables holding ``arrays``.  With
    ``on_gpu`` True, every node must have run on the cuda backend."""
    need_grad = need_grad or [True] * len(arrays)
    xs = [nn.Variable.from_numpy_array(a, need_grad=g) for a, g in zip(arrays, need_grad)]
    with nn.context_scope(ctx):
        y = fn(*xs)
    if on_gpu:
        cpu = {t: m for t, m in backends(y).items() if not m.startswith('nncy.cuda')}
        assert not cpu, 'ran on the CPU under the cuda context: %s' % sorted(cpu)
    y.forward()
    if not backward:
        return y.d.copy(), []
    dy = np.asarray(np.random.RandomState(seed).randn(*y.shape), np.float32).reshape(y.shape)
    y.backward(dy)
    return y.d.copy(), [x.g.copy() for x, g in zip(xs, need_grad) if g]


def same(fn, arrays, tol=TOL, on_gpu=True, **kw):
    """fn gives the same output and input gradients on CPU and cuda."""
    ref = run(CPU, fn, arrays, **kw)
    got = run(CUDA, fn, arrays, on_gpu=on_gpu, **kw)
    np.testing.assert_allclose(got[0], ref[0], **tol)
    for g, r in zip(got[1], ref[1]):
        np.testing.assert_allclose(g, r, **tol)
