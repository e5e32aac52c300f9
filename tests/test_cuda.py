"""The cuda backend against the CPU backend: every GPU implementation runs
forward and backward on the same inputs under both contexts and the results
must agree.  On a machine with CuPy and a GPU this runs on the GPU; elsewhere
it runs the same code and the same CUDA kernels on the host through the CuPy
stand-in of ``tests/cudasim`` (which needs g++)."""
import numpy as np
import pytest

import nncy as nn
import nncy.functions as F
from nncy import _table

from cuda_check import CPU, CUDA, TOL, cupy, same  # noqa: F401  (cupy: the fixture)
from test_pointwise import REFS, _seed


def _params(rows):
    return [pytest.param(s, k, id='%s-%d' % (s.name, k))
            for s in rows for k in range(len(REFS[s.name].cases))]


@pytest.mark.parametrize('shape', [(), (7,), (3, 1000)], ids=str)
@pytest.mark.parametrize('spec,case', _params(_table.UNARY))
def test_unary_rows(spec, case, shape):
    args, domains = REFS[spec.name].cases[case]
    rng = np.random.RandomState(_seed(spec.name, case, shape))
    x = domains[0](rng, shape)
    fn = getattr(F, spec.name)
    same(lambda v: fn(v, **args), [x])


@pytest.mark.parametrize('shapes', [((2, 3, 4), (2, 3, 4)), ((2, 3, 4), (3, 1)),
                                    ((3, 1), (2, 3, 4)), ((), (2, 3)), ((2, 1, 4), (3, 1))],
                         ids=str)
@pytest.mark.parametrize('spec,case', _params(_table.BINARY))
def test_binary_rows_broadcast(spec, case, shapes):
    args, domains = REFS[spec.name].cases[case]
    rng = np.random.RandomState(_seed(spec.name, case, shapes))
    xs = [d(rng, s) for d, s in zip(domains, shapes)]
    fn = getattr(F, spec.name)
    same(lambda a, b: fn(a, b, **args), xs)


def test_half_storage_pointwise(rng):
    x = rng.randn(64).astype(np.float32)
    half = nn.Context(['cuda:half', 'cpu:half'])
    v = nn.Variable.from_numpy_array(x)
    with nn.context_scope(half), nn.auto_forward():
        y = F.tanh(F.add2(v, v))
    assert y.data.data.dtype == np.float16
    np.testing.assert_allclose(y.d, np.tanh(2 * x), atol=2e-3)


def test_data_interop(rng, cupy):
    x = rng.randn(5).astype(np.float32)
    v = nn.Variable.from_numpy_array(x)
    with nn.context_scope(CUDA), nn.auto_forward():
        y = F.relu(v)
    assert isinstance(y.data.data, cupy.ndarray)        # device array
    assert type(y.d) is np.ndarray                      # host view, NNabla-style
    np.testing.assert_array_equal(y.d, np.maximum(x, 0))
    c = cupy.asarray(y.data)                            # __cuda_array_interface__
    np.testing.assert_array_equal(c.get(), np.maximum(x, 0))
    y.d[0] = 42.0                                        # host write, then device read
    assert float(y.data.data[0]) == 42.0


def test_dlpack_in_and_out(rng, cupy):
    x = rng.randn(5).astype(np.float32)
    v = nn.Variable.from_numpy_array(x)
    with nn.context_scope(CUDA), nn.auto_forward():
        y = F.relu(v)
    assert y.data.__dlpack_device__()[0] == 2          # exported from the device copy
    d = cupy.from_dlpack(y.data)
    np.testing.assert_array_equal(d.get(), np.maximum(x, 0))
    a = nn.NdArray.from_dlpack(d)                       # GPU in: becomes the device copy
    assert a.device_array is not None
    d[0] = 7.0                                          # shared memory
    assert float(a.data[0]) == 7.0
    h = nn.NdArray.from_dlpack(np.arange(3, dtype=np.float32))   # host in: host copy
    assert h.device_array is None and h.shape == (3,)


def test_kernels_are_compiled_once_each_on_first_use():
    from nncy.cuda import _module
    with nn.context_scope(CUDA), nn.auto_forward():
        F.sigmoid(nn.Variable.from_numpy_array(np.ones(3, np.float32)))
    kernels = dict(_module._functions)
    assert any('nncy_unary_fwd<float, 1>' in k for k in kernels)
    with nn.context_scope(CUDA), nn.auto_forward():
        F.sigmoid(nn.Variable.from_numpy_array(np.ones(3, np.float32)))
    assert _module._functions == kernels
    with pytest.raises(KeyError, match='does not declare'):
        _module.function('pointwise_gen.cu', 'nncy_unary_fwd<double, 1>')


@pytest.mark.parametrize('bias', [True, False])
def test_affine(rng, bias):
    arrays = [rng.randn(4, 3, 5).astype(np.float32), rng.randn(15, 6).astype(np.float32)]
    if bias:
        arrays.append(rng.randn(6).astype(np.float32))
    same(lambda *v: F.affine(*v, base_axis=1), arrays, dict(TOL, rtol=1e-3, atol=1e-4))


@pytest.mark.parametrize('ta,tb', [(False, False), (True, False), (False, True), (True, True)])
def test_batch_matmul(rng, ta, tb):
    a = rng.randn(2, 3, 4, 5).astype(np.float32)   # (m, k) = (4, 5)
    b = rng.randn(3, 5, 6).astype(np.float32)      # (k, n) = (5, 6), batch broadcast
    if ta:
        a = np.ascontiguousarray(np.swapaxes(a, -1, -2))
    if tb:
        b = np.ascontiguousarray(np.swapaxes(b, -1, -2))
    same(lambda x, y: F.batch_matmul(x, y, transpose_a=ta, transpose_b=tb), [a, b],
         dict(TOL, rtol=1e-3, atol=1e-4))


@pytest.mark.parametrize('name', ['sum', 'mean'])
@pytest.mark.parametrize('axis,keep', [(None, False), (1, True), ((0, 2), False)])
def test_reductions(rng, name, axis, keep):
    x = rng.randn(3, 4, 5).astype(np.float32)
    fn = getattr(F, name)
    same(lambda v: fn(v, axis=axis, keepdims=keep), [x], dict(TOL, rtol=1e-4, atol=1e-5))


@pytest.mark.parametrize('name', ['softmax', 'log_softmax'])
@pytest.mark.parametrize('axis', [0, 1, 2])
def test_softmax(rng, name, axis):
    x = (rng.randn(3, 4, 5) * 3).astype(np.float32)
    fn = getattr(F, name)
    same(lambda v: fn(v, axis=axis), [x])


@pytest.mark.parametrize('axis', [1, 2])
def test_softmax_cross_entropy(rng, axis):
    x = (rng.randn(3, 4, 5) * 3).astype(np.float32)
    shape = list(x.shape)
    c = shape[axis]
    shape[axis] = 1
    t = rng.randint(0, c, size=shape).astype(np.float32)
    same(lambda v, lab: F.softmax_cross_entropy(v, lab, axis=axis), [x, t],
         need_grad=[True, False])


def test_softmax_cross_entropy_bad_label(rng):
    x = nn.Variable.from_numpy_array(rng.randn(2, 3).astype(np.float32))
    t = nn.Variable.from_numpy_array(np.array([[0], [3]], np.float32))
    with nn.context_scope(CUDA), pytest.raises(ValueError):
        F.softmax_cross_entropy(x, t).forward()


def test_cpu_fallback_in_a_cuda_context(rng):
    """Functions without a GPU implementation run on the CPU in the same graph."""
    from nncy import _core
    x = rng.randn(2, 3, 4).astype(np.float32)
    saved = _core.unregister('Transpose', 'cuda')
    try:
        same(lambda v: F.relu(F.transpose(F.tanh(v), (2, 0, 1))), [x], on_gpu=False)
    finally:
        if saved is not None:
            _core.register('Transpose', 'cuda')(saved)


SOLVERS = ['Sgd', 'Momentum', 'Nesterov', 'Lars', 'Adadelta', 'Adagrad', 'AdaBelief', 'RMSprop',
           'RMSpropGraves', 'Adam', 'AdaBound', 'Adamax', 'AMSGRAD', 'AMSBound', 'AdamW',
           'SgdW', 'Lamb', 'Lion']


@pytest.mark.parametrize('name', SOLVERS)
def test_solver_update_on_device(rng, name):
    import nncy.solvers as S
    w0 = rng.randn(3, 4).astype(np.float32)
    x0 = rng.randn(3, 4).astype(np.float32)

    def train(ctx):
        w = nn.Variable.from_numpy_array(w0, need_grad=True)
        x = nn.Variable.from_numpy_array(x0)
        with nn.context_scope(ctx):
            loss = F.sum(F.tanh(F.mul2(x, w)))
        solver = getattr(S, name)()
        solver.set_parameters({'w': w})
        for _ in range(3):
            loss.forward()
            solver.zero_grad()
            loss.backward()
            if not name.endswith('W'):   # SgdW and AdamW take wd at construction
                solver.weight_decay(1e-3)
            solver.update()
        return w.d.copy(), w.data.device_array is not None

    ref, _ = train(CPU)
    got, on_device = train(CUDA)
    assert on_device
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_half_context_keeps_gradients_written_on_the_device(rng):
    """Under a half context, functions without float16 kernels run on float32
    copies; their gradients, written on the device, must reach the graph."""
    x = rng.randn(2, 3, 4, 4).astype(np.float32)

    def grads(ctx):
        v = nn.Variable.from_numpy_array(x, need_grad=True)
        with nn.context_scope(ctx):
            y = F.global_average_pooling(F.identity(v))
        y.forward()
        y.backward(np.ones(y.shape, np.float32))
        return v.g.copy()
    ref = grads(nn.Context(['cpu:half']))
    got = grads(nn.Context(['cuda:half', 'cpu:half']))
    np.testing.assert_allclose(got, ref, atol=1e-3)
    assert np.abs(got).max() > 0


def test_gpu_benchmark_step_trains_on_the_device():
    from benchmarks import gpu_step
    from cuda_check import backends
    x, t = gpu_step.data(4, size=8)
    step = gpu_step.nncy_step(x, t, width=4, ctx_name='cuda')
    loss = step()
    on_cpu = {k: m for k, m in backends(loss).items() if not m.startswith('nncy.cuda')}
    assert not on_cpu
    first = float(loss.d)
    for _ in range(15):
        last = float(step().d)
    assert np.isfinite(first) and last < first
