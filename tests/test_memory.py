"""Peak memory of a training step.

With ``forward(clear_no_need_grad=True)`` and ``backward(clear_buffer=True)``
a step may hold at most 1.5x of: the parameters with their gradients and
solver states, the activations that some backward reads, and one workspace
(the incoming and outgoing gradient of the largest activation).  NumPy-side
buffers are counted by tracemalloc (NumPy reports its allocations to it), the
Rust kernels' scratch by the library's counting allocator.
"""
import tracemalloc

import numpy as np
import pytest

import nncy as nn
import nncy.functions as F
import nncy.parametric_functions as PF
import nncy.solvers as S
from nncy import _kernels
from nncy._core import sorted_functions


def _cnn(batch):
    x = nn.Variable((batch, 3, 32, 32))
    t = nn.Variable((batch, 1))
    h = x
    for i, c in enumerate((32, 64)):
        with nn.parameter_scope('c%d' % i):
            h = PF.convolution(h, c, (3, 3), pad=(1, 1), with_bias=False)
            h = F.max_pooling(F.relu(PF.batch_normalization(h)), (2, 2))
    loss = F.mean(F.softmax_cross_entropy(PF.affine(h, 10, name='fc'), t))
    return x, t, loss


def _needed_bytes(loss, params, solver_states):
    """(persistent state, activations read by some backward, workspace) in bytes."""
    pids = {id(p) for p in params}
    sizes, kept = {}, set()
    for f in sorted_functions([loss]):
        ins, outs = f.inputs, f.outputs
        grads = [i for i, v in enumerate(ins) if v.need_grad]
        for j, v in enumerate(ins):
            sizes[id(v)] = v.size * 4
            if any(f.grad_depends_input_data(i, j) for i in grads):
                kept.add(id(v))
        for o, v in enumerate(outs):
            sizes[id(v)] = v.size * 4
            if any(f.grad_depends_output_data(i, o) for i in grads):
                kept.add(id(v))
    state = sum(p.size * 4 * (2 + solver_states) for p in params)
    activations = sum(sizes[k] for k in kept if k not in pids)
    workspace = 2 * max(s for k, s in sizes.items() if k not in pids)
    return state, activations, workspace


@pytest.mark.parametrize('solver, n_states', [(S.Sgd, 0), (S.Adam, 2)])
def test_training_step_peak_memory_is_bounded(solver, n_states):
    nn.clear_parameters()
    tracemalloc.start()
    try:
        x, t, loss = _cnn(32)
        params = list(nn.get_parameters().values())
        s = solver()
        s.set_parameters(nn.get_parameters())
        rng = np.random.RandomState(0)
        x.d = rng.rand(*x.shape)
        t.d = rng.randint(0, 10, t.shape)

        def step():
            loss.forward(clear_no_need_grad=True)
            s.zero_grad()
            loss.backward(clear_buffer=True)
            s.update()

        step()                      # the solver creates its states on first use
        tracemalloc.reset_peak()
        _kernels.heap_bytes(reset=True)
        step()
        _, numpy_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rust_peak = _kernels.heap_bytes()[1]
    state, activations, workspace = _needed_bytes(loss, params, n_states)
    budget = 1.5 * (state + activations + workspace)
    measured = numpy_peak + rust_peak
    assert measured <= budget, (
        'peak %.1f MB (NumPy %.1f + kernels %.1f) over 1.5 x (state %.1f + kept '
        'activations %.1f + workspace %.1f) = %.1f MB'
        % (measured / 1e6, numpy_peak / 1e6, rust_peak / 1e6, state / 1e6,
           activations / 1e6, workspace / 1e6, budget / 1e6))
    # and the bound is not vacuous: most of the kept activations are really held
    assert measured >= activations


def test_kernel_heap_counter_sees_convolution_scratch():
    x = nn.Variable.from_numpy_array(np.ones((4, 16, 32, 32), np.float32))
    w = nn.Variable.from_numpy_array(np.ones((16, 16, 3, 3), np.float32))
    y = F.convolution(x, w, None, pad=(1, 1))
    _kernels.heap_bytes(reset=True)
    y.forward()
    current, peak = _kernels.heap_bytes()
    assert peak > current   # the column buffer was allocated and freed
