"""Random computation graphs (fan-out, diamonds, broadcasting, in-place ops on
single-consumer intermediates): every way of running them -- plain, with
clear_no_need_grad / clear_buffer, auto_forward -- gives the same values and
gradients, and the gradients match finite differences of nncy's own forward."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import nncy as nn
import nncy.functions as F

SHAPE = (2, 3)

# name -> (arity, builder(inputs, inplace) -> Variable, may run in place).
# Every op at most doubles magnitudes, so values stay in float32's comfort zone.
OPS = {
    'sigmoid': (1, lambda a, ip: F.sigmoid(a), False),
    'tanh': (1, lambda a, ip: F.tanh(a), False),
    'mul_scalar': (1, lambda a, ip: F.mul_scalar(a, 0.7), False),
    'add_scalar': (1, lambda a, ip: F.add_scalar(a, 0.3), False),
    'identity': (1, lambda a, ip: F.identity(a), False),
    'softmax': (1, lambda a, ip: F.softmax(a, axis=1), False),
    'reshape': (1, lambda a, ip: F.reshape(F.reshape(a, (6,)), SHAPE), False),
    'rowmean': (1, lambda a, ip: F.add2(a, F.mean(a, axis=1, keepdims=True)), False),
    'colmean': (1, lambda a, ip: F.mul2(a, F.tanh(F.mean(a, axis=0))), False),
    'add2': (2, lambda a, b, ip: F.add2(a, b, inplace=ip), True),
    'sub2': (2, lambda a, b, ip: F.sub2(a, b), False),
    'mul2': (2, lambda a, b, ip: F.mul2(a, F.tanh(b)), False),
}
NAMES = sorted(OPS)


@st.composite
def programs(draw):
    n_leaves = draw(st.integers(1, 3))
    n_ops = draw(st.integers(1, 8))
    prog = []
    for k in range(n_ops):
        name = draw(st.sampled_from(NAMES))
        arity = OPS[name][0]
        avail = n_leaves + k
        args = [draw(st.integers(0, avail - 1)) for _ in range(arity)]
        prog.append((name, args))
    # in place only where the first operand is an intermediate used once
    uses = {}
    for _, args in prog:
        for a in args:
            uses[a] = uses.get(a, 0) + 1
    flags = []
    for name, args in prog:
        ok = OPS[name][2] and args[0] >= n_leaves and uses[args[0]] == 1
        flags.append(ok and draw(st.booleans()))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    return n_leaves, prog, flags, seed


def build(leaves, prog, flags):
    nodes = list(leaves)
    for (name, args), ip in zip(prog, flags):
        fn = OPS[name][1]
        nodes.append(fn(*[nodes[a] for a in args], ip))
    # every intermediate nobody consumes feeds the loss too, so dangling
    # branches are exercised (and no node gains a consumer behind our back)
    used = {a for _, args in prog for a in args}
    out = nodes[-1]
    for k in range(len(leaves), len(nodes) - 1):
        if k not in used:
            out = F.add2(out, F.mul_scalar(nodes[k], 0.5))
    return out


def run(n_leaves, prog, flags, data, dy, mode):
    leaves = [nn.Variable.from_numpy_array(d, need_grad=True) for d in data]
    for v in leaves:
        v.g = 0
    if mode == 'auto':
        with nn.auto_forward():
            y = build(leaves, prog, flags)
            y.backward(dy)
    else:
        y = build(leaves, prog, flags)
        if mode == 'plain':
            y.forward()
            y.backward(dy)
        elif mode == 'clear':
            y.forward(clear_no_need_grad=True)
            y.backward(dy, clear_buffer=True)
        elif mode == 'clear_fwd':
            y.forward(clear_buffer=True)
            return y.d.copy(), None, leaves, y
    return y.d.copy(), [v.g.copy() for v in leaves], leaves, y


@settings(max_examples=150, deadline=None)
@given(programs())
def test_random_graph_modes_agree(p):
    n_leaves, prog, flags, seed = p
    rng = np.random.RandomState(seed)
    data = [rng.uniform(-1.5, 1.5, SHAPE).astype(np.float32) for _ in range(n_leaves)]
    dy = rng.randn(*SHAPE).astype(np.float32)
    y0, g0, leaves, y = run(n_leaves, prog, flags, data, dy, 'plain')
    assert np.all(np.isfinite(y0))
    for mode in ('clear', 'auto', 'clear_fwd'):
        y1, g1, _, _ = run(n_leaves, prog, flags, data, dy, mode)
        np.testing.assert_allclose(y1, y0, rtol=1e-5, atol=1e-6, err_msg=mode)
        if g1 is not None:
            for a, b in zip(g1, g0):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=mode)
    # without in-place ops the graph gives the same numbers
    if any(flags):
        y2, g2, _, _ = run(n_leaves, prog, [False] * len(flags), data, dy, 'plain')
        np.testing.assert_allclose(y2, y0, rtol=1e-5, atol=1e-6, err_msg='inplace')
        for a, b in zip(g2, g0):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg='inplace')
    # finite differences through nncy's forward, on a few elements
    eps = 1e-3
    fd_tol = 2e-2 * max(1.0, float(np.abs(y0).max()) / 8)
    for i, v in enumerate(leaves):
        base = data[i]
        for j in rng.choice(base.size, 2, replace=False):
            xp, xm = base.copy().reshape(-1), base.copy().reshape(-1)
            xp[j] += eps
            xm[j] -= eps
            v.d = xp.reshape(SHAPE)
            y.forward()
            fp = np.sum(y.d.astype(np.float64) * dy)
            v.d = xm.reshape(SHAPE)
            y.forward()
            fm = np.sum(y.d.astype(np.float64) * dy)
            num = (fp - fm) / (float(xp[j]) - float(xm[j]))
            np.testing.assert_allclose(g0[i].reshape(-1)[j], num, rtol=2e-2, atol=fd_tol,
                                       err_msg='leaf %d element %d' % (i, j))
        v.d = base
