"""The graph engine: Variable and NdArray, static / dynamic / imperative
execution, gradient accumulation, buffer clearing, graph surgery, operators,
contexts and array interchange -- with NNabla's documented semantics."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import nncy as nn
import nncy.functions as F
from nncy.ext_utils import get_extension_context

R = np.random.RandomState(11)


def randn(*shape):
    return np.asarray(R.randn(*shape), dtype=np.float32).reshape(shape)


def leaf(a, need_grad=True):
    v = nn.Variable.from_numpy_array(np.asarray(a, np.float32), need_grad=need_grad)
    if need_grad:
        v.g = 0
    return v


# --------------------------------------------------------------------------
# Variable construction and data access
# --------------------------------------------------------------------------

def test_variable_construction():
    v = nn.Variable((2, 3), need_grad=True)
    assert v.shape == (2, 3) and v.ndim == 2 and v.size == 6
    assert v.need_grad is True
    assert v.parent is None
    w = nn.Variable([4])
    assert w.shape == (4,) and w.need_grad is False
    s = nn.Variable()
    assert s.shape == () and s.size == 1
    assert v.d.shape == (2, 3) and v.g.shape == (2, 3)
    assert v.d.dtype == np.float32


def test_from_numpy_array():
    a = randn(3, 4)
    v = nn.Variable.from_numpy_array(a)
    assert v.shape == (3, 4)
    assert v.need_grad is False
    np.testing.assert_array_equal(v.d, a)
    a[0, 0] = 99.0            # the Variable holds its own copy
    assert v.d[0, 0] != 99.0
    g = randn(3, 4)
    v = nn.Variable.from_numpy_array(a, g, need_grad=True)
    assert v.need_grad is True
    np.testing.assert_array_equal(v.g, g)
    i = nn.Variable.from_numpy_array(np.arange(6, dtype=np.int32).reshape(2, 3))
    np.testing.assert_array_equal(i.d, np.arange(6).reshape(2, 3))


def test_d_and_g_are_zero_copy_views():
    v = nn.Variable((2, 3), need_grad=True)
    d = v.d
    d[...] = 3.0
    np.testing.assert_array_equal(v.d, np.full((2, 3), 3.0))
    v.d[1, 2] = -1.0
    assert v.d[1, 2] == -1.0 and d[1, 2] == -1.0
    assert np.shares_memory(v.d, v.data.data)
    v.g[...] = 5.0
    np.testing.assert_array_equal(v.grad.data, np.full((2, 3), 5.0))


def test_d_and_g_setters():
    v = nn.Variable((2, 3), need_grad=True)
    v.d = 2.0                      # a scalar broadcasts
    np.testing.assert_array_equal(v.d, np.full((2, 3), 2.0))
    v.d = np.arange(3, dtype=np.float32)   # so does a row
    np.testing.assert_array_equal(v.d, np.tile(np.arange(3), (2, 1)))
    a = randn(2, 3)
    v.d = a
    np.testing.assert_array_equal(v.d, a)
    a[0, 0] = 123.0                # the setter copies
    assert v.d[0, 0] != 123.0
    v.g = 0
    np.testing.assert_array_equal(v.g, np.zeros((2, 3)))
    v.g = 1.5
    np.testing.assert_array_equal(v.g, np.full((2, 3), 1.5))
    # the setters write into the existing buffers: earlier views see the values
    d, g = v.d, v.g
    v.d = 9.0
    v.g = -9.0
    assert d[0, 0] == 9.0 and g[0, 0] == -9.0


def test_ndarray_data_and_grad_methods():
    v = nn.Variable.from_numpy_array(randn(2, 3), need_grad=True)
    assert isinstance(v.data, nn.NdArray) and isinstance(v.grad, nn.NdArray)
    assert v.data.shape == (2, 3) and v.data.size == 6 and v.data.ndim == 2
    v.data.zero()
    np.testing.assert_array_equal(v.d, np.zeros((2, 3)))
    v.data.fill(1.25)
    np.testing.assert_array_equal(v.d, np.full((2, 3), 1.25))
    v.grad.fill(-2.0)
    np.testing.assert_array_equal(v.g, np.full((2, 3), -2.0))
    v.grad.zero()
    np.testing.assert_array_equal(v.g, np.zeros((2, 3)))


def test_ndarray_cast():
    a = np.array([[1.0, 2.5, 1.0 / 3.0]], np.float32)
    v = nn.Variable.from_numpy_array(a)
    h = v.data.cast(np.float16)
    assert isinstance(h, np.ndarray) and h.dtype == np.float16
    np.testing.assert_array_equal(h, a.astype(np.float16))
    back = v.data.cast(np.float32)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, a, rtol=1e-3)
    i = v.data.cast(np.int32)
    assert i.dtype == np.int32
    # cast with a context returns nothing
    assert v.data.cast(np.float32, nn.get_current_context()) is None


def test_ndarray_standalone():
    a = nn.NdArray((2, 3))
    assert a.shape == (2, 3)
    a.fill(4.0)
    np.testing.assert_array_equal(a.data, np.full((2, 3), 4.0))
    a.data = randn(2, 3)
    b = nn.NdArray.from_numpy_array(np.arange(6, dtype=np.float32).reshape(2, 3))
    a.copy_from(b)
    np.testing.assert_array_equal(a.data, np.arange(6).reshape(2, 3))
    view = a.data
    view[0, 0] = 42.0
    assert a.data[0, 0] == 42.0


# --------------------------------------------------------------------------
# gradients
# --------------------------------------------------------------------------

def test_fan_out_accumulates():
    a = randn(4)
    x = leaf(a)
    y = x * x + x
    y.forward()
    y.backward()
    np.testing.assert_allclose(y.d, a * a + a, rtol=1e-6)
    np.testing.assert_allclose(x.g, 2 * a + 1, rtol=1e-6)


def test_fan_out_same_input_twice():
    a = randn(5)
    x = leaf(a)
    y = F.mul2(x, x)
    y.forward()
    y.backward()
    np.testing.assert_allclose(x.g, 2 * a, rtol=1e-6)


def test_diamond_graph():
    a = randn(3)
    x = leaf(a)
    h = F.tanh(x)
    y = F.add2(F.mul_scalar(h, 2.0), F.mul2(h, h))
    y.forward()
    y.backward()
    t = np.tanh(a.astype(np.float64))
    np.testing.assert_allclose(x.g, (2 + 2 * t) * (1 - t * t), rtol=1e-5, atol=1e-6)


def test_leaf_grads_accumulate_across_backward_calls():
    a = randn(3)
    x = leaf(a)
    h = F.mul_scalar(x, 3.0)
    y = F.mul_scalar(h, 2.0)
    y.forward()
    y.backward()
    y.backward()
    np.testing.assert_allclose(x.g, np.full(3, 12.0))
    # an intermediate's gradient is recomputed, not accumulated
    np.testing.assert_allclose(h.g, np.full(3, 2.0))
    x.grad.zero()
    y.backward()
    np.testing.assert_allclose(x.g, np.full(3, 6.0))


def test_backward_grad_argument():
    a = randn(2, 3)
    x = leaf(a)
    y = F.mul_scalar(x, 2.0)
    y.forward()
    y.backward()                       # default: ones
    np.testing.assert_allclose(x.g, np.full((2, 3), 2.0))
    x.g = 0
    dy = randn(2, 3)
    y.backward(dy)                     # a numpy array
    np.testing.assert_allclose(x.g, 2 * dy, rtol=1e-6)
    x.g = 0
    y.backward(0.5)                    # a scalar
    np.testing.assert_allclose(x.g, np.full((2, 3), 1.0))
    x.g = 0
    y.backward(nn.NdArray.from_numpy_array(dy))   # an NdArray
    np.testing.assert_allclose(x.g, 2 * dy, rtol=1e-6)
    x.g = 0
    y.g = dy
    y.backward(None)                   # None: the grad already stored in y
    np.testing.assert_allclose(x.g, 2 * dy, rtol=1e-6)


def test_need_grad_propagation():
    a = nn.Variable.from_numpy_array(randn(3), need_grad=False)
    b = nn.Variable.from_numpy_array(randn(3), need_grad=True)
    assert F.relu(a).need_grad is False
    assert F.relu(b).need_grad is True
    assert F.add2(a, b).need_grad is True
    assert F.add2(a, a).need_grad is False
    assert F.relu(F.relu(a)).need_grad is False


def test_leaf_without_need_grad_gets_no_grad():
    a = nn.Variable.from_numpy_array(randn(3), need_grad=False)
    a.g = 7.0
    b = leaf(randn(3))
    y = F.mul2(a, b)
    y.forward()
    y.backward()
    np.testing.assert_array_equal(a.g, np.full(3, 7.0))
    np.testing.assert_allclose(b.g, a.d, rtol=1e-6)


def test_need_grad_false_intermediate_stops_gradient():
    x = leaf(randn(3))
    h = F.mul_scalar(x, 2.0)
    h.need_grad = False
    y = F.mul_scalar(h, 3.0)
    y.forward()
    y.backward()
    np.testing.assert_array_equal(x.g, np.zeros(3))


def test_backward_without_need_grad_anywhere_is_harmless():
    a = nn.Variable.from_numpy_array(randn(3))
    y = F.relu(a)
    y.forward()
    y.backward()
    np.testing.assert_allclose(y.d, np.maximum(a.d, 0))


# --------------------------------------------------------------------------
# buffers
# --------------------------------------------------------------------------

def _chain(a):
    x = leaf(a)
    h1 = F.relu(x)
    h2 = F.mul_scalar(h1, 2.0)
    h3 = F.add_scalar(h2, 1.0)
    y = F.tanh(h3)
    return x, (h1, h2, h3), y


def _chain_ref(a):
    a = a.astype(np.float64)
    h3 = 2 * np.maximum(a, 0) + 1
    y = np.tanh(h3)
    return y, (1 - y * y) * 2 * (a > 0)


def test_forward_clear_buffer_keeps_result():
    a = randn(4, 5)
    yref, _ = _chain_ref(a)
    x, hs, y = _chain(a)
    y.forward(clear_buffer=True)
    np.testing.assert_allclose(y.d, yref, rtol=1e-5)
    for h in hs:           # cleared intermediates stay accessible
        assert h.d.shape == h.shape
    np.testing.assert_array_equal(x.d, a)   # the input is never cleared
    y.forward(clear_buffer=True)            # and it runs again
    np.testing.assert_allclose(y.d, yref, rtol=1e-5)


def test_persistent_survives_clear_buffer():
    a = randn(4, 5)
    x, (h1, h2, h3), y = _chain(a)
    assert h2.persistent is False
    h2.persistent = True
    assert h2.persistent is True
    y.forward(clear_buffer=True)
    np.testing.assert_allclose(h2.d, 2 * np.maximum(a, 0), rtol=1e-6)


def test_clear_no_need_grad_then_backward():
    a = randn(4, 5)
    yref, gref = _chain_ref(a)
    x, hs, y = _chain(a)
    y.forward(clear_no_need_grad=True)
    np.testing.assert_allclose(y.d, yref, rtol=1e-5)
    y.backward()
    np.testing.assert_allclose(x.g, gref, rtol=1e-5, atol=1e-6)


def test_backward_clear_buffer_then_repeat():
    a = randn(4, 5)
    yref, gref = _chain_ref(a)
    x, hs, y = _chain(a)
    for _ in range(3):
        x.g = 0
        y.forward(clear_no_need_grad=True)
        y.backward(clear_buffer=True)
        np.testing.assert_allclose(y.d, yref, rtol=1e-5)
        np.testing.assert_allclose(x.g, gref, rtol=1e-5, atol=1e-6)


def test_clear_buffer_with_fan_out():
    a = randn(6)
    x = leaf(a)
    h = F.sigmoid(x)
    y = F.add2(F.mul2(h, h), F.mul_scalar(h, 3.0))
    for _ in range(2):
        x.g = 0
        y.forward(clear_no_need_grad=True)
        y.backward(clear_buffer=True)
        s = 1 / (1 + np.exp(-a.astype(np.float64)))
        np.testing.assert_allclose(y.d, s * s + 3 * s, rtol=1e-5)
        np.testing.assert_allclose(x.g, (2 * s + 3) * s * (1 - s), rtol=1e-5, atol=1e-6)


def test_inplace_never_writes_into_a_leaf_through_a_reshape_view():
    """reshape (inplace=True by default) shares the leaf's buffer; an in-place
    op on its output must not overwrite the leaf."""
    for auto in (False, True):
        with nn.auto_forward(auto):
            x = nn.Variable.from_numpy_array(-np.ones(6, np.float32))
            y = F.relu(F.reshape(x, (2, 3)), inplace=True)
            z = F.add2(F.reshape(x, (6,)), x, inplace=True)
            if not auto:
                F.sink(y, z).forward()
        np.testing.assert_array_equal(x.d, -np.ones(6), err_msg='auto=%s' % auto)
        np.testing.assert_array_equal(y.d, np.zeros((2, 3)))
        np.testing.assert_array_equal(z.d, np.full(6, -2.0))


# --------------------------------------------------------------------------
# graph surgery
# --------------------------------------------------------------------------

def test_unlinked_stops_gradient_and_shares_data():
    a = randn(3)
    x = leaf(a)
    h = F.mul_scalar(x, 2.0)
    u = h.unlinked(need_grad=True)
    assert u.parent is None
    assert u.need_grad is True
    y = F.mul_scalar(u, 5.0)
    h.forward()
    np.testing.assert_allclose(u.d, 2 * a, rtol=1e-6)   # same buffer as h
    u.g = 0
    y.forward()
    y.backward()
    np.testing.assert_allclose(u.g, np.full(3, 5.0))
    np.testing.assert_array_equal(x.g, np.zeros(3))
    if hasattr(h, 'get_unlinked_variable'):
        assert h.get_unlinked_variable().parent is None


def test_rewire_on():
    b = randn(2, 3)
    xa = nn.Variable((2, 3), need_grad=True)
    ya = F.mul_scalar(xa, 2.0)
    xb = leaf(b)
    yb = F.add_scalar(xb, 1.0)
    xa.rewire_on(yb)
    assert xa.parent is not None and xa.parent.info.type_name == 'AddScalar'
    ya.forward()
    np.testing.assert_allclose(ya.d, 2 * (b + 1), rtol=1e-6)
    ya.backward()
    np.testing.assert_allclose(xb.g, np.full((2, 3), 2.0))


def test_variable_reshape_method():
    a = randn(2, 6)
    x = leaf(a)
    r = x.reshape((3, 4))
    assert r.shape == (3, 4)
    np.testing.assert_array_equal(r.d, a.reshape(3, 4))
    assert np.shares_memory(r.d, x.d)
    y = F.mul_scalar(F.reshape(x, (3, 4)), 2.0)
    y.forward()
    y.backward()
    np.testing.assert_allclose(x.g, np.full((2, 6), 2.0))


def test_parent_and_function_info():
    x = leaf(randn(3))
    y = F.relu(x)
    f = y.parent
    assert f.info.type_name == 'ReLU'
    assert f.name == 'ReLU'
    assert f.info.args == {'inplace': False}
    assert len(f.inputs) == 1 and f.inputs[0] == x
    assert len(f.outputs) == 1 and f.outputs[0] == y
    assert x.parent is None
    z = F.sum(x, axis=0, keepdims=True)
    assert z.parent.info.type_name == 'Sum'
    assert z.parent.info.args['axis'] in (0, (0,), [0])
    assert z.parent.info.args['keepdims'] is True


def test_function_forward_backward_called_directly():
    a = randn(2, 3)
    x = leaf(a)
    y = F.mul_scalar(x, 3.0)
    f = y.parent
    f.forward([x], [y])
    np.testing.assert_allclose(y.d, 3 * a, rtol=1e-6)
    x.d = 1.0
    f.forward([x], [y])
    np.testing.assert_allclose(y.d, np.full((2, 3), 3.0))
    y.g = 1.0
    x.g = 10.0
    f.backward([x], [y], accum=[True])
    np.testing.assert_allclose(x.g, np.full((2, 3), 13.0))
    f.backward([x], [y], accum=[False])
    np.testing.assert_allclose(x.g, np.full((2, 3), 3.0))


def test_variable_equality_and_hash():
    x = nn.Variable((2,))
    y = F.relu(x)
    assert y.parent.inputs[0] == x
    assert hash(y.parent.inputs[0]) == hash(x)
    assert x != y
    assert len({x, y, y.parent.inputs[0]}) == 2


def test_deep_chain_does_not_overflow_the_stack(py_env):
    """Forward and backward over a long chain: no recursion limit, no crash."""
    code = textwrap.dedent('''
        import numpy as np, nncy as nn, nncy.functions as F
        x = nn.Variable.from_numpy_array(np.zeros(2, np.float32), need_grad=True)
        x.g = 0
        h = x
        for _ in range(20000):
            h = F.add_scalar(h, 1.0)
        h.forward(clear_no_need_grad=True)
        h.backward(clear_buffer=True)
        assert h.d[0] == 20000.0, h.d
        assert x.g[0] == 1.0, x.g
        print('ok')
    ''')
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                       timeout=120, env=py_env)
    assert r.returncode == 0 and 'ok' in r.stdout, (r.returncode, r.stdout, r.stderr[-2000:])


def test_graph_is_freed_with_its_variables():
    import gc
    import weakref
    x = nn.Variable.from_numpy_array(randn(3), need_grad=True)
    y = F.relu(F.mul_scalar(x, 2.0))
    ref = weakref.ref(y)
    fref = weakref.ref(y.parent)
    del y
    gc.collect()
    assert ref() is None and fref() is None


# --------------------------------------------------------------------------
# execution modes
# --------------------------------------------------------------------------

def test_auto_forward():
    a = randn(3)
    assert nn.get_auto_forward() is False
    with nn.auto_forward():
        assert nn.get_auto_forward() is True
        x = leaf(a)
        y = F.mul_scalar(F.relu(x), 2.0)
        np.testing.assert_allclose(y.d, 2 * np.maximum(a, 0), rtol=1e-6)
        y.backward()
        np.testing.assert_allclose(x.g, 2.0 * (a > 0))
    assert nn.get_auto_forward() is False
    nn.set_auto_forward(True)
    try:
        z = F.add_scalar(nn.Variable.from_numpy_array(a), 1.0)
        np.testing.assert_allclose(z.d, a + 1, rtol=1e-6)
    finally:
        nn.set_auto_forward(False)
    # auto_forward(False) switches it off inside
    with nn.auto_forward():
        with nn.auto_forward(False):
            assert nn.get_auto_forward() is False
        assert nn.get_auto_forward() is True


def test_auto_forward_restored_after_exception():
    with pytest.raises(RuntimeError):
        with nn.auto_forward():
            raise RuntimeError('boom')
    assert nn.get_auto_forward() is False


def test_imperative_ndarray_calls():
    a, b = randn(2, 3), randn(2, 3)
    na, nb = nn.NdArray.from_numpy_array(a), nn.NdArray.from_numpy_array(b)
    y = F.add2(na, nb)
    assert isinstance(y, nn.NdArray)
    np.testing.assert_allclose(y.data, a + b, rtol=1e-6)
    z = F.relu(na)
    assert isinstance(z, nn.NdArray)
    np.testing.assert_allclose(z.data, np.maximum(a, 0))
    # operators on NdArray compute immediately
    np.testing.assert_allclose((na * 2 + nb).data, 2 * a + b, rtol=1e-6)
    np.testing.assert_allclose((na - nb).data, a - b, rtol=1e-6)
    np.testing.assert_allclose((-na).data, -a)


def test_operators_mixing_variable_and_ndarray_give_ndarray():
    """NNabla: with an NdArray on either side, an operator computes at once and
    returns an NdArray."""
    a, b = randn(2, 3), randn(2, 3)
    v = nn.Variable.from_numpy_array(a)
    nd = nn.NdArray.from_numpy_array(b)
    for r, expect in [(v + nd, a + b), (nd + v, a + b), (v * nd, a * b), (nd - v, b - a)]:
        assert isinstance(r, nn.NdArray), type(r)
        np.testing.assert_allclose(r.data, expect, rtol=1e-6)


def test_imperative_outputs_argument():
    a = randn(2, 3)
    out = nn.NdArray((2, 3))
    r = F.relu(nn.NdArray.from_numpy_array(a), outputs=[out])
    np.testing.assert_allclose(out.data, np.maximum(a, 0))
    if isinstance(r, nn.NdArray):
        np.testing.assert_allclose(r.data, np.maximum(a, 0))


# --------------------------------------------------------------------------
# Variable operators
# --------------------------------------------------------------------------

def _grad_of(expr, *arrays):
    vs = [leaf(a) for a in arrays]
    y = expr(*vs)
    y.forward()
    y.backward()
    return y, [v.g.copy() for v in vs]


a0 = np.array([0.5, 1.5, -2.0], np.float32)
b0 = np.array([2.0, -0.5, 1.25], np.float32)

OPS = [
    ('x+y', lambda x, y: x + y, lambda a, b: a + b, lambda a, b: (1, 1)),
    ('x-y', lambda x, y: x - y, lambda a, b: a - b, lambda a, b: (1, -1)),
    ('x*y', lambda x, y: x * y, lambda a, b: a * b, lambda a, b: (b, a)),
    ('x/y', lambda x, y: x / y, lambda a, b: a / b, lambda a, b: (1 / b, -a / b ** 2)),
    ('x+2', lambda x, y: x + 2, lambda a, b: a + 2, lambda a, b: (1, 0)),
    ('2+x', lambda x, y: 2 + x, lambda a, b: a + 2, lambda a, b: (1, 0)),
    ('x-2', lambda x, y: x - 2, lambda a, b: a - 2, lambda a, b: (1, 0)),
    ('2-x', lambda x, y: 2 - x, lambda a, b: 2 - a, lambda a, b: (-1, 0)),
    ('x*3', lambda x, y: x * 3, lambda a, b: a * 3, lambda a, b: (3, 0)),
    ('3*x', lambda x, y: 3 * x, lambda a, b: a * 3, lambda a, b: (3, 0)),
    ('x/4', lambda x, y: x / 4, lambda a, b: a / 4, lambda a, b: (0.25, 0)),
    ('4/y', lambda x, y: 4 / y, lambda a, b: 4 / b, lambda a, b: (0, -4 / b ** 2)),
    ('x**2', lambda x, y: x ** 2, lambda a, b: a ** 2, lambda a, b: (2 * a, 0)),
    ('2**x', lambda x, y: 2 ** x, lambda a, b: 2.0 ** a,
     lambda a, b: (np.log(2) * 2.0 ** a, 0)),
    ('-x', lambda x, y: -x, lambda a, b: -a, lambda a, b: (-1, 0)),
    ('+x*y', lambda x, y: (+x) * y, lambda a, b: a * b, lambda a, b: (b, a)),
    ('x*np.float32', lambda x, y: x * np.float32(2), lambda a, b: 2 * a, lambda a, b: (2, 0)),
]


@pytest.mark.parametrize('name,expr,fwd,grads', OPS, ids=[o[0] for o in OPS])
def test_variable_operators(name, expr, fwd, grads):
    y, (ga, gb) = _grad_of(expr, a0, b0)
    a, b = a0.astype(np.float64), b0.astype(np.float64)
    np.testing.assert_allclose(y.d, fwd(a, b), rtol=2e-6)
    ea, eb = grads(a, b)
    np.testing.assert_allclose(ga, np.broadcast_to(ea, a.shape), rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(gb, np.broadcast_to(eb, b.shape), rtol=2e-6, atol=1e-7)


def test_operator_type_names():
    x, y = nn.Variable((3,)), nn.Variable((3,))
    assert (x + y).parent.info.type_name == 'Add2'
    assert (x * y).parent.info.type_name == 'Mul2'
    assert (x + 1).parent.info.type_name == 'AddScalar'
    assert (x * 2).parent.info.type_name == 'MulScalar'
    assert (x ** 2).parent.info.type_name == 'PowScalar'
    assert (2 - x).parent.info.type_name == 'RSubScalar'


def test_operators_broadcast():
    a, b = randn(2, 3), randn(3)
    y, (ga, gb) = _grad_of(lambda x, y: x * y, a, b)
    np.testing.assert_allclose(y.d, a * b, rtol=1e-6)
    np.testing.assert_allclose(gb, a.sum(0), rtol=1e-5)


def test_operator_with_unsupported_type():
    x = nn.Variable((3,))
    with pytest.raises(TypeError):
        x + 'a'
    with pytest.raises(TypeError):
        x * [1, 2, 3]


def test_matmul_operator():
    a, w = randn(3, 4), randn(4, 5)
    y, (ga, gw) = _grad_of(lambda x, w: x @ w, a, w)
    np.testing.assert_allclose(y.d, a @ w, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ga, np.ones((3, 5)) @ w.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gw, a.T @ np.ones((3, 5)), rtol=1e-5, atol=1e-5)


def test_getitem():
    x = nn.Variable((4, 5))
    try:
        x[1:3]
    except NotImplementedError:
        pytest.skip('Variable.__getitem__ is not implemented')
    a = randn(4, 5)
    for key in [np.s_[1:3], np.s_[:, ::2], np.s_[1], np.s_[-1, 1:4], np.s_[..., 2],
                np.s_[None, 0]]:
        v = leaf(a)
        y = v[key]
        y.forward()
        np.testing.assert_array_equal(y.d, a[key])
        y.backward()
        expect = np.zeros_like(a)
        expect[key] += 1
        np.testing.assert_array_equal(v.g, expect)


# --------------------------------------------------------------------------
# contexts
# --------------------------------------------------------------------------

def test_context_objects():
    ctx = nn.get_current_context()
    assert isinstance(ctx, nn.Context)
    assert any(b.startswith('cpu') for b in ctx.backend)
    cpu = get_extension_context('cpu')
    assert cpu.backend == ['cpu:float']
    assert get_extension_context('cpu', device_id='0', type_config='half').backend[0] == 'cpu:half'
    with nn.context_scope(cpu):
        assert nn.get_current_context() == cpu
        y = F.relu(nn.Variable.from_numpy_array(np.array([-1.0, 2.0], np.float32)))
        y.forward()
        np.testing.assert_array_equal(y.d, [0.0, 2.0])
    assert nn.get_current_context() == ctx
    c2 = nn.Context(backend=['cpu:float'], array_class='CpuCachedArray', device_id='0')
    assert c2 == cpu
    assert 'cpu' in repr(c2)


def test_set_default_context():
    prev = nn.get_current_context()
    half = get_extension_context('cpu', type_config='half')
    nn.set_default_context(half)
    try:
        assert nn.get_current_context() == half
    finally:
        nn.set_default_context(prev)


def test_context_scope_restored_after_exception():
    prev = nn.get_current_context()
    with pytest.raises(KeyError):
        with nn.context_scope(get_extension_context('cpu', type_config='half')):
            raise KeyError('x')
    assert nn.get_current_context() == prev


def test_unknown_extension():
    with pytest.raises(ValueError) as info:
        get_extension_context('tpu')
    assert 'tpu' in str(info.value)


def test_cuda_without_cupy_gives_clear_error():
    try:
        import cupy  # noqa: F401
        pytest.skip('CuPy is installed')
    except ImportError:
        pass
    with pytest.raises((ImportError, RuntimeError)) as info:
        ctx = get_extension_context('cuda')
        with nn.context_scope(ctx):
            y = F.relu(nn.Variable.from_numpy_array(np.ones(3, np.float32)))
            y.forward()
    msg = str(info.value).lower()
    assert 'cupy' in msg and 'cuda' in msg, msg


def test_import_does_not_import_cupy(py_env):
    code = ('import sys, nncy, nncy.functions, nncy.ext_utils, nncy.function; '
            'print("cupy" in sys.modules, "nncy.cuda" in sys.modules)')
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                       timeout=120, env=py_env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ['False', 'False'], r.stdout


def test_half_type_config_stores_float16():
    a = randn(64)
    ctx = get_extension_context('cpu', type_config='half')
    with nn.context_scope(ctx):
        x = nn.Variable.from_numpy_array(a, need_grad=True)
        x.g = 0
        y = F.mul_scalar(F.add_scalar(x, 0.1), 1.0 / 3.0)
        y.forward()
        y.backward()
    out = np.asarray(y.d, dtype=np.float32)
    # the values are float16 numbers ...
    np.testing.assert_array_equal(out, out.astype(np.float16).astype(np.float32))
    # ... within half precision of the exact result
    exact = (a.astype(np.float64) + 0.1) / 3.0
    np.testing.assert_allclose(out, exact, rtol=2e-3, atol=1e-3)
    np.testing.assert_allclose(np.asarray(x.g, np.float32), np.full(64, 1 / 3), rtol=2e-3)


# --------------------------------------------------------------------------
# array interchange
# --------------------------------------------------------------------------

def test_ndarray_buffer_protocol():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    nd = nn.NdArray.from_numpy_array(a)
    m = memoryview(nd)
    assert m.shape == (2, 3) and m.format == 'f' and m.itemsize == 4
    assert not m.readonly
    view = np.frombuffer(m, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(view, a)
    view[0, 0] = -5.0
    assert nd.data[0, 0] == -5.0


def test_ndarray_array_interface():
    a = randn(2, 3)
    nd = nn.NdArray.from_numpy_array(a)
    arr = np.asarray(nd)
    np.testing.assert_array_equal(arr, a)
    assert np.shares_memory(arr, nd.data)
    assert np.array(nd, dtype=np.float64).dtype == np.float64


def test_ndarray_dlpack():
    a = randn(3, 4)
    v = nn.Variable.from_numpy_array(a)
    arr = np.from_dlpack(v.data)
    np.testing.assert_array_equal(arr, a)
    assert np.shares_memory(arr, v.d)
    dev = v.data.__dlpack_device__()
    assert tuple(dev)[0] == 1   # kDLCPU
    if hasattr(nn.NdArray, 'from_dlpack'):
        back = nn.NdArray.from_dlpack(np.arange(4, dtype=np.float32))
        np.testing.assert_array_equal(back.data, np.arange(4))


def test_forward_all_runs_shared_graph_once():
    calls = []
    x = nn.Variable.from_numpy_array(np.array([1.0, -2.0, 3.0], np.float32))
    a = F.relu(x)
    b = F.mul_scalar(a, 2.0)
    c = F.add_scalar(a, 1.0)
    nn.forward_all([b, c], function_pre_hook=lambda f: calls.append(f.info.type_name))
    np.testing.assert_array_equal(b.d, [2.0, 0.0, 6.0])
    np.testing.assert_array_equal(c.d, [2.0, 1.0, 4.0])
    assert calls.count('ReLU') == 1 and len(calls) == 3


def test_forward_all_orders_a_root_whose_parent_feeds_another_root():
    """Roots listed before the roots they depend on: b reads a, a root whose
    function is an ancestor of b's; a must still run first."""
    x = nn.Variable.from_numpy_array(np.array([1.0, -2.0, 3.0], np.float32))
    a = F.relu(x)
    b = F.mul_scalar(a, 2.0)
    order = []
    nn.forward_all([b, a], function_pre_hook=lambda f: order.append(f.info.type_name))
    assert order == ['ReLU', 'MulScalar']
    np.testing.assert_array_equal(b.d, [2.0, 0.0, 6.0])


def test_rewire_on_rejects_other_shape():
    a = nn.Variable((2, 3))
    with pytest.raises(ValueError, match='rewire_on'):
        a.rewire_on(nn.Variable((4,)))


def test_reshape_accepts_numpy_shape():
    x = nn.Variable((6,))
    assert F.reshape(x, np.array([3, 2])).shape == (3, 2)


def test_recompute_frees_then_recomputes_in_backward():
    """A variable marked recompute is freed by forward(clear_no_need_grad=True)
    even though backward reads it, and is recomputed there: same gradients."""
    a = np.array([0.3, -1.2, 2.0, 0.7], np.float32)
    grads = []
    for recompute in (False, True):
        x = nn.Variable.from_numpy_array(a, need_grad=True)
        h = F.sigmoid(F.mul_scalar(x, 2.0))        # sigmoid's backward reads h
        h.recompute = recompute
        y = F.sum(F.tanh(h))
        y.forward(clear_no_need_grad=True)
        assert h.data.clear_called == recompute
        x.grad.zero()
        y.backward()
        grads.append(x.g.copy())
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-6)


def test_global_recompute_flag():
    nn.set_global_recompute(True)
    try:
        assert nn.Variable((2,)).recompute
    finally:
        nn.set_global_recompute(False)
    assert not nn.Variable((2,)).recompute


def test_cleared_buffers_held_by_the_user_survive():
    x = nn.Variable.from_numpy_array(np.ones((64, 1000), np.float32))
    h = F.add_scalar(x, 1.0)
    y = F.add_scalar(h, 1.0)
    y.forward()
    held = h.d                      # the user keeps h's array: it must survive
    y.forward(clear_buffer=True)
    z = F.add_scalar(x, 2.0)
    z.forward()
    assert not np.shares_memory(z.d, held) and (held == 2).all()
    # storage released by clear_buffer comes back zero-filled
    assert (h.d == 0).all() and (y.d == 3).all()
