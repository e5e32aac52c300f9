"""The array-manipulation functions on the cuda backend against the CPU
backend (forward and input gradients), plus the GPU-specific behaviour:
in-place reshape sharing device memory, assign writing dst on the device,
index outputs as device arrays and index validation."""
import numpy as np
import pytest
import nncy as nn
import nncy.functions as F
from cuda_check import CPU, CUDA, TOL, cupy, run, same  # noqa: F401  (cupy is an autouse fixture)


def _r(rng, *shape):
    return np.asarray(rng.randn(*shape), np.float32)


def _twice(f):
    """f applied twice to the same inputs and added: the inputs' gradients
    accumulate."""
    return lambda *xs: F.add2(f(*xs), f(*xs))


def _idx(a):
    return nn.Variable.from_numpy_array(np.array(a))


# ---------------------------------------------------------------------------
# joining and cutting, views

VIEWS = {
    'concatenate': ([(2, 3), (2, 2), (2, 1)], lambda a, b, c: F.concatenate(a, b, c)),
    'concatenate_axis0': ([(1, 3), (2, 3)], lambda a, b: F.concatenate(a, b, axis=0)),
    'split_axis1': ([(2, 3, 2)], lambda x: F.mul2(F.split(x, axis=1)[0],
                                                  F.split(x, axis=1)[2])),
    'split_neg_axis': ([(2, 3)], lambda x: F.stack(*F.split(x, axis=-1), axis=0)),
    'stack': ([(2, 3), (2, 3)], lambda a, b: F.stack(a, F.tanh(b), axis=1)),
    'stack_last': ([(2, 3), (2, 3)], lambda a, b: F.stack(a, b, axis=-1)),
    'slice': ([(3, 5)], lambda x: F.slice(x, (1, 0), (3, 4), (1, 2))),
    'slice_negative_step': ([(4, 5)], lambda x: F.slice(x, (3, 4), (0, 0), (-2, -1))),
    'slice_default': ([(3, 4)], lambda x: F.slice(x, step=(-1,))),
    'slice_leading_axis': ([(4, 2, 3)], lambda x: F.slice(x, (1,), (4,), (2,))),
    'reshape_inplace': ([(2, 3, 4)], lambda x: F.tanh(F.reshape(F.tanh(x), (6, -1)))),
    'reshape_leaf': ([(2, 3, 4)], lambda x: F.reshape(x, (4, 6))),
    'reshape_copy': ([(2, 3, 4)], lambda x: F.reshape(x, (4, 6), inplace=False)),
    'transpose': ([(2, 3, 4)], lambda x: F.transpose(x, (2, 0, 1))),
    'transpose_neg': ([(2, 3)], lambda x: F.transpose(x, (-1, 0))),
    'broadcast': ([(3, 1)], lambda x: F.broadcast(x, (2, 3, 4))),
    'broadcast_scalar': ([()], lambda x: F.broadcast(x, (2, 3))),
    'broadcast_to': ([(3, 4), (3,)], lambda x, y: F.add2(x, F.broadcast_to(x, y, axis=0))),
    'broadcast_to_last': ([(2, 3, 4), (3, 4)], lambda x, y: F.broadcast_to(x, y)),
    'tile': ([(2, 3)], lambda x: F.tile(x, (2, 1, 2))),
    'tile_short_reps': ([(2, 3, 2)], lambda x: F.tile(x, (3,))),
    'flip': ([(3, 4)], lambda x: F.flip(x, (0, 1))),
    'flip_default': ([(2, 3, 4)], lambda x: F.flip(x)),
    'flip_twice_same_axis': ([(2, 3)], lambda x: F.flip(x, (0, 0, 1))),
}


@pytest.mark.parametrize('name', sorted(VIEWS))
def test_views(name, rng):
    shapes, fn = VIEWS[name]
    same(fn, [_r(rng, *s) for s in shapes])


@pytest.mark.parametrize('name', ['concatenate', 'split_axis1', 'stack', 'slice',
                                  'reshape_inplace', 'reshape_leaf', 'reshape_copy', 'transpose',
                                  'broadcast', 'broadcast_to', 'tile', 'flip'])
def test_views_accumulate(name, rng):
    shapes, fn = VIEWS[name]
    same(_twice(fn), [_r(rng, *s) for s in shapes])


def test_reshape_inplace_shares_device_memory(rng, cupy):
    x = nn.Variable.from_numpy_array(_r(rng, 2, 3, 4))
    with nn.context_scope(CUDA):
        h = F.tanh(x)
        y = F.reshape(h, (6, 4))
    y.forward()
    yd, hd = y.data.data, h.data.data
    assert isinstance(yd, cupy.ndarray) and yd.shape == (6, 4)
    yd[0, 0] = 42.0
    assert float(hd[0, 0, 0]) == 42.0
    assert y.d[0, 0] == 42.0


def test_reshape_copy_does_not_share(rng, cupy):
    x = nn.Variable.from_numpy_array(_r(rng, 2, 3))
    with nn.context_scope(CUDA):
        h = F.tanh(x)
        y = F.reshape(h, (3, 2), inplace=False)
    y.forward()
    y.data.data[0, 0] = 42.0
    assert float(h.data.data[0, 0]) != 42.0


# ---------------------------------------------------------------------------
# coordinate maps: pad, shift

MAPS = {
    'pad_constant': ([(2, 3)], lambda x: F.pad(x, (1, 0, 2, 1), constant_value=0.5)),
    'pad_constant_3d': ([(2, 3, 4)], lambda x: F.pad(x, (0, 1, 2, 1, 3, 3))),
    'pad_reflect': ([(2, 4)], lambda x: F.pad(x, (1, 2, 2, 1), mode='reflect')),
    'pad_reflect_wide': ([(2, 3)], lambda x: F.pad(x, (5, 4), mode='reflect')),
    'pad_reflect_size1': ([(2, 1)], lambda x: F.pad(x, (2, 1), mode='reflect')),
    'pad_repeat': ([(2, 3)], lambda x: F.pad(x, (2, 1), mode='repeat')),
    'pad_repeat_2d': ([(2, 3, 4)], lambda x: F.pad(x, (1, 3, 2, 0), mode='repeat')),
    'shift': ([(3, 4)], lambda x: F.shift(x, (1, -2))),
    'shift_reflect': ([(2, 5, 4)], lambda x: F.shift(x, (3, -1), border_mode='reflect')),
    'shift_none': ([(3, 4)], lambda x: F.shift(x)),
}


@pytest.mark.parametrize('name', sorted(MAPS))
def test_maps(name, rng):
    shapes, fn = MAPS[name]
    same(fn, [_r(rng, *s) for s in shapes])


@pytest.mark.parametrize('name', ['pad_constant', 'pad_reflect', 'shift_reflect'])
def test_maps_accumulate(name, rng):
    shapes, fn = MAPS[name]
    same(_twice(fn), [_r(rng, *s) for s in shapes])


# ---------------------------------------------------------------------------
# gather_nd, scatter_nd, one_hot

INDEXED = {
    'gather_nd': ([(3, 4)], lambda x: F.gather_nd(x, [[0, 2, 2], [1, 3, 1]])),
    'gather_nd_rows': ([(3, 4, 2)], lambda x: F.gather_nd(x, [[[0, 2], [-1, 0]]])),
    'gather_nd_float_index': ([(3, 4)], lambda x: F.gather_nd(
        x, nn.Variable.from_numpy_array(np.array([[1.0, 2.0], [0.0, -1.0]], np.float32)))),
    'scatter_nd': ([(3,)], lambda x: F.scatter_nd(x, [[0, 2, 0]], shape=(4,), add=True)),
    'scatter_nd_set': ([(2, 3)], lambda x: F.scatter_nd(x, [[1, 0], [2, 0]], shape=(2, 3, 3))),
    'scatter_nd_neg': ([(2,)], lambda x: F.scatter_nd(x, [[-1, 0]], shape=(3,))),
}


@pytest.mark.parametrize('name', sorted(INDEXED))
def test_indexed(name, rng):
    shapes, fn = INDEXED[name]
    same(fn, [_r(rng, *s) for s in shapes])


@pytest.mark.parametrize('name', ['gather_nd', 'scatter_nd_set'])
def test_indexed_accumulate(name, rng):
    shapes, fn = INDEXED[name]
    same(_twice(fn), [_r(rng, *s) for s in shapes])


def test_scatter_nd_into_out(rng):
    base = _r(rng, 5)
    data = _r(rng, 2)

    def fn(d, add):
        out = nn.Variable.from_numpy_array(base)
        return F.scatter_nd(d, [[1, 4]], out=out, add=add)
    for add in (False, True):
        same(lambda d: fn(d, add), [data])


def test_gather_nd_bad_index():
    x = _r(np.random.RandomState(0), 3, 4)
    with pytest.raises(ValueError, match='out of bounds'):
        run(CUDA, lambda v: F.gather_nd(v, [[0], [4]]), [x], backward=False)
    with pytest.raises(ValueError, match='out of bounds'):
        run(CUDA, lambda v: F.scatter_nd(v, [[3]], shape=(3, 4)), [x[:1]], backward=False)


def _one_hot(labels, shape):
    return lambda x: F.add2(x, F.one_hot(_idx(labels), shape=shape))


def test_one_hot(rng):
    same(_one_hot([[3], [0], [9]], (10,)), [_r(rng, 3, 10)])
    same(_one_hot([[[1, 2]], [[0, 7]]], (2, 8)), [_r(rng, 2, 1, 2, 8)])
    lab = nn.Variable.from_numpy_array(np.array([[2.0], [1.0]], np.float32))
    same(lambda x: F.one_hot(F.add2(x, lab), shape=(4,)), [np.zeros((2, 1), np.float32)])


def test_one_hot_bad_label():
    with pytest.raises(ValueError, match='outside shape'):
        run(CUDA, lambda v: F.one_hot(v, shape=(4,)), [np.array([[1], [4]], np.float32)],
            backward=False)


# ---------------------------------------------------------------------------
# sort and top-k

def _ties(rng, *shape):
    """Values with ties, so that the stable order shows."""
    return rng.randint(0, 3, size=shape).astype(np.float32)


@pytest.mark.parametrize('axis,reverse', [(-1, False), (0, True), (1, False)])
def test_sort(axis, reverse, rng):
    for x in (_r(rng, 3, 4, 2), _ties(rng, 3, 4, 2)):
        same(lambda v: F.sort(v, axis=axis, reverse=reverse), [x])
        same(_twice(lambda v: F.sort(v, axis=axis, reverse=reverse)), [x])


def test_sort_with_index(rng, cupy):
    x = _ties(rng, 4, 5)
    same(lambda v: F.sort(v, axis=1, reverse=True, with_index=True)[0], [x])
    for ctx in (CPU, CUDA):
        v = nn.Variable.from_numpy_array(x)
        with nn.context_scope(ctx):
            _, i = F.sort(v, axis=0, with_index=True)
            j = F.sort(v, reverse=True, only_index=True)
        F.sink(i, j).forward()
        if ctx is CUDA:
            assert isinstance(i.data.data, cupy.ndarray)
            got = i.d.copy(), j.d.copy()
        else:
            ref = i.d.copy(), j.d.copy()
    for g, r in zip(got, ref):
        np.testing.assert_array_equal(g, r)
    # only_index: a zero gradient
    same(lambda v: F.add2(v, F.sort(v, only_index=True)), [x])


TOPK = {
    'data': ([(2, 6)], lambda x: F.top_k_data(x, 3)),
    'data_abs_full': ([(2, 2, 3)], lambda x: F.top_k_data(x, 2, abs=True, reduce=False)),
    'data_base2': ([(2, 3, 4)], lambda x: F.top_k_data(x, 2, base_axis=2)),
    'data_base0': ([(3, 4)], lambda x: F.top_k_data(x, 4, base_axis=0, reduce=False)),
    'grad': ([(2, 5)], lambda x: F.mul2(F.top_k_grad(F.tanh(x), 2, abs=True), x)),
    'grad_plain': ([(2, 3, 2)], lambda x: F.top_k_grad(x, 3)),
}


@pytest.mark.parametrize('name', sorted(TOPK))
def test_top_k(name, rng):
    shapes, fn = TOPK[name]
    same(fn, [_r(rng, *s) for s in shapes])
    same(_twice(fn), [_ties(rng, *s) for s in shapes])


# ---------------------------------------------------------------------------
# batch_inv, batch_det

def _well_conditioned(rng, b, n):
    return (_r(rng, b, n, n) + 3 * np.eye(n, dtype=np.float32)).astype(np.float32)


def test_batch_inv(rng):
    x = _well_conditioned(rng, 2, 3)
    same(F.batch_inv, [x])
    same(_twice(F.batch_inv), [x])


def test_batch_det(rng):
    x = _well_conditioned(rng, 3, 4)
    same(F.batch_det, [x])
    same(_twice(F.batch_det), [x])


# ---------------------------------------------------------------------------
# assign, sink

def test_assign(rng):
    src_a, dst_a = _r(rng, 2, 3), _r(rng, 2, 3)
    same(lambda d, s: F.assign(d, F.tanh(s)), [dst_a, src_a])
    same(_twice(lambda d, s: F.assign(d, s)), [dst_a, src_a])
    dst = nn.Variable.from_numpy_array(dst_a)
    src = nn.Variable.from_numpy_array(src_a)
    with nn.context_scope(CUDA):
        y = F.assign(dst, src)
    y.forward()
    np.testing.assert_array_equal(dst.d, src_a)
    np.testing.assert_array_equal(y.d, src_a)


@pytest.mark.parametrize('one_input_grad', [True, False])
def test_sink(one_input_grad, rng):
    a, b = _r(rng, 2, 3), _r(rng, 4)
    for ctx in (CPU, CUDA):
        xs = [nn.Variable.from_numpy_array(v, need_grad=True) for v in (a, b)]
        for x in xs:
            x.g = 0.5
        with nn.context_scope(ctx):
            ya, yb = F.tanh(xs[0]), F.tanh(xs[1])
            s = F.sink(ya, yb, F.tanh(xs[0]), one_input_grad=one_input_grad)
        if ctx is CUDA:
            assert type(s.parent.impl).__module__ == 'nncy.cuda.array'
        s.forward()
        s.backward()
        got = [x.g.copy() for x in xs] + [float(s.d)]
        if ctx is CPU:
            ref = got
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, **TOL)
