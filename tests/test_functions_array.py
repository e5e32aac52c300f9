"""Array manipulation: concatenate, split, stack, gather_nd, scatter_nd, pad,
transpose, broadcast, broadcast_to, tile, flip, shift, sort, one_hot,
batch_inv, batch_det, assign, top_k_data, top_k_grad.  Every example of the
function reference is here with its expected output."""
import numpy as np
import pytest

import nncy as nn
import nncy.functions as F

from checker import check_function, check_raises

R = np.random.RandomState(7)


def randn(*shape):
    return np.asarray(R.randn(*shape), dtype=np.float32).reshape(shape)


def distinct(*shape, gap=0.05):
    n = int(np.prod(shape))
    v = (np.arange(n) - n / 2) * gap
    return np.asarray(R.permutation(v), dtype=np.float32).reshape(shape)


@pytest.fixture
def auto():
    with nn.auto_forward():
        yield


# --------------------------------------------------------------------------
# concatenate, split, stack

@pytest.mark.parametrize('axis', [None, 0, 1, -1])
def test_concatenate(axis):
    xs = [randn(2, 3, 4), randn(2, 3, 4), randn(2, 3, 4)]
    if axis == 0:
        xs[1] = randn(1, 3, 4)
    check_function(F.concatenate, xs,
                   lambda *x, axis=None: np.concatenate(x, -1 if axis is None else axis),
                   {} if axis is None else {'axis': axis}, atol=0, rtol=0)


def test_concatenate_errors():
    check_raises(F.concatenate, [randn(2, 3), randn(3, 3)], {'axis': 1},
                 match_words=['concatenate', 'x'])
    check_raises(F.concatenate, [randn(2, 3)], {'axis': 2}, match_words=['axis'])


@pytest.mark.parametrize('axis', [0, 1, -1])
def test_split(axis):
    x = randn(3, 2, 4)
    check_function(F.split, [x],
                   lambda x, axis: tuple(np.take(x, i, axis) for i in range(x.shape[axis])),
                   {'axis': axis}, atol=0, rtol=0)


def test_split_errors():
    check_raises(F.split, [randn(3, 2)], {'axis': 2}, match_words=['split', 'axis'])


@pytest.mark.parametrize('axis', [0, 1, 2, -1])
def test_stack(axis):
    xs = [randn(3, 2), randn(3, 2)]
    check_function(F.stack, xs, lambda *x, axis: np.stack(x, axis), {'axis': axis},
                   atol=0, rtol=0)


def test_stack_reference_shape():
    xs = [nn.Variable((3, 28, 28)) for _ in range(4)]
    assert F.stack(*xs, axis=1).shape == (3, 4, 28, 28)
    check_raises(F.stack, [randn(3, 2), randn(2, 3)], match_words=['stack', 'x'])
    check_raises(F.stack, [randn(3, 2)], {'axis': 3}, match_words=['axis'])


# --------------------------------------------------------------------------
# gather_nd, scatter_nd

def gather_ref(data, idx):
    return data[tuple(idx)]


@pytest.mark.parametrize('idx', [[[1, 1, 0]], [[1, 1, 0], [0, 1, 0]], [[0, -1], [4, 2], [1, 0]]],
                         ids=['M1', 'M2', 'M3neg'])
def test_gather_nd(idx):
    data = randn(2, 5, 3)
    check_function(F.gather_nd, [data, np.array(idx)], gather_ref, atol=0, rtol=0)


def test_gather_nd_reference_examples(auto):
    data = F.arange(1, 11).reshape([2, 5])
    np.testing.assert_array_equal(data.d, [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
    assert F.gather_nd(data, [[1, 1, 0]]).shape == (3, 5)
    assert F.gather_nd(data, [[1, 1, 0], [0, 1, 0]]).shape == (3,)
    np.testing.assert_array_equal(F.gather_nd(data, [[1, 1, 0], [0, 1, 0]]).d, [6, 7, 1])
    np.testing.assert_array_equal(F.gather_nd(data, np.array([[1, 1, 0]])).d,
                                  [[6, 7, 8, 9, 10], [6, 7, 8, 9, 10], [1, 2, 3, 4, 5]])
    indices = nn.Variable((2, 1))
    indices.d = [[0], [0]]
    y = F.gather_nd(data, indices)
    np.testing.assert_array_equal(y.d, [1])
    indices.d = [[1], [4]]
    y.forward()
    np.testing.assert_array_equal(y.d, [10])


def test_gather_nd_ndarray():
    data = nn.NdArray.from_numpy_array(np.arange(6, dtype=np.float32).reshape(2, 3))
    y = F.gather_nd(data, [[1, 0]])
    assert isinstance(y, nn.NdArray)
    np.testing.assert_array_equal(y.data, [[3, 4, 5], [0, 1, 2]])


def test_gather_nd_errors():
    data = nn.Variable.from_numpy_array(randn(2, 5))
    with pytest.raises(ValueError, match='gather_nd.*indices'):
        F.gather_nd(data, [[0], [0], [0]])
    y = F.gather_nd(data, [[2]])
    with pytest.raises(ValueError, match='gather_nd.*indices.*bounds'):
        y.forward()
    with pytest.raises(ValueError, match='indices'):
        F.gather_nd(data, [[0], [-6]]).forward()


def test_scatter_nd_reference_example(auto):
    data = nn.Variable.from_numpy_array(np.array([9, 10, 11, 12]))
    indices = nn.Variable.from_numpy_array(np.array([[4, 3, 1, 7]]))
    scattered = F.scatter_nd(data, indices, shape=(8,))
    np.testing.assert_array_equal(scattered.d, [0, 11, 0, 10, 9, 0, 0, 12])
    np.testing.assert_array_equal(F.gather_nd(scattered, indices).d, [9, 10, 11, 12])


def scatter_ref(data, idx, shape, add=False):
    y = np.zeros(shape, np.float32)
    if add:
        np.add.at(y, tuple(idx), data)
    else:
        y[tuple(idx)] = data
    return y


def test_scatter_nd():
    idx = np.array([[0, 2, 1], [1, 0, 3]])
    check_function(F.scatter_nd, [randn(3, 2), idx], scatter_ref,
                   {'shape': (3, 4, 2)}, atol=0, rtol=0)


def test_scatter_nd_add_repeats():
    idx = np.array([[0, 2, 0]])
    check_function(F.scatter_nd, [randn(3, 2), idx], scatter_ref,
                   {'shape': (4, 2), 'add': True}, atol=1e-6, rtol=1e-6)


def test_scatter_nd_out_keeps_other_values(auto):
    out = nn.Variable.from_numpy_array(np.full(6, -1, np.float32))
    data = nn.Variable.from_numpy_array(np.array([5.0, 7.0], np.float32))
    y = F.scatter_nd(data, [[1, 4]], out=out)
    np.testing.assert_array_equal(y.d, [-1, 5, -1, -1, 7, -1])
    np.testing.assert_array_equal(out.d, [-1, 5, -1, -1, 7, -1])
    y2 = F.scatter_nd(data, np.array([[1, 1]]), out=out, add=True)
    np.testing.assert_array_equal(out.d, [-1, 17, -1, -1, 7, -1])
    assert y2.shape == (6,)


def test_scatter_nd_errors():
    data = nn.Variable.from_numpy_array(randn(2))
    with pytest.raises(TypeError, match='shape.*out'):
        F.scatter_nd(data, [[0, 1]])
    with pytest.raises(TypeError, match='only one'):
        F.scatter_nd(data, [[0, 1]], shape=(3,), out=nn.Variable((3,)))
    with pytest.raises(ValueError, match='scatter_nd.*data'):
        F.scatter_nd(data, [[0, 1]], shape=(3, 2))
    with pytest.raises(ValueError, match='scatter_nd.*indices'):
        F.scatter_nd(data, [[0, 3]], shape=(3,)).forward()


# --------------------------------------------------------------------------
# pad

def pad_ref(x, pad_width, mode='constant', constant_value=0.0):
    n = len(pad_width) // 2
    pairs = [(0, 0)] * (x.ndim - n) + [(pad_width[2 * i], pad_width[2 * i + 1])
                                       for i in range(n)]
    if mode == 'constant':
        return np.pad(x, pairs, 'constant', constant_values=constant_value)
    return np.pad(x, pairs, 'reflect' if mode == 'reflect' else 'edge')


@pytest.mark.parametrize('mode', ['constant', 'reflect', 'repeat'])
@pytest.mark.parametrize('pw', [(1, 2), (2, 1, 0, 3), (1, 0, 2, 1, 1, 1)], ids=str)
def test_pad(mode, pw):
    x = randn(2, 3, 4)
    check_function(F.pad, [x], pad_ref, {'pad_width': pw, 'mode': mode, 'constant_value': 0.5},
                   atol=0, rtol=0)


def test_pad_reference_examples(auto):
    x = nn.Variable.from_numpy_array(np.ones((2, 3, 4)))
    assert F.pad(x, (1, 1, 2, 2)).shape == (2, 5, 8)
    x = nn.Variable.from_numpy_array(np.array([1, 2, 3, 4], dtype=int))
    y = F.pad(x, (3, 3), 'constant', constant_value=1)
    np.testing.assert_array_equal(y.d, [1, 1, 1, 1, 2, 3, 4, 1, 1, 1])
    x = nn.Variable.from_numpy_array(np.array([1, 2, 3, 4], dtype=int))
    y = F.pad(x, (3, 3), 'reflect')
    np.testing.assert_array_equal(y.d, [4, 3, 2, 1, 2, 3, 4, 3, 2, 1])
    x = nn.Variable((3, 3, 4, 2))
    assert F.pad(x, (1, 2)).shape == (3, 3, 4, 5)
    assert F.pad(x, (2, 2, 1, 1)).shape == (3, 3, 8, 4)
    assert F.pad(x, (0, 1, 2, 1, 3, 3)).shape == (3, 4, 7, 8)


def test_pad_errors():
    x = randn(2, 3)
    check_raises(F.pad, [x], {'pad_width': (1, 2, 3)}, match_words=['pad', 'pad_width'])
    check_raises(F.pad, [x], {'pad_width': (1, 1) * 3}, match_words=['pad_width'])
    check_raises(F.pad, [x], {'pad_width': (1, -1)}, match_words=['pad_width'])
    check_raises(F.pad, [x], {'pad_width': (1, 1), 'mode': 'wrap'}, match_words=['mode'])
    check_raises(F.pad, [x], {'pad_width': 'ab'}, exc=TypeError, match_words=['pad_width'])


# --------------------------------------------------------------------------
# transpose, broadcast, broadcast_to, tile, flip

@pytest.mark.parametrize('axes', [(1, 0, 2), (2, 0, 1), (-1, 0, 1)], ids=str)
def test_transpose(axes):
    check_function(F.transpose, [randn(2, 3, 4)], lambda x, axes: x.transpose(axes),
                   {'axes': axes}, atol=0, rtol=0)


def test_transpose_errors():
    check_raises(F.transpose, [randn(2, 3)], {'axes': (0, 0)}, match_words=['transpose', 'axes'])
    check_raises(F.transpose, [randn(2, 3)], {'axes': (0, 1, 2)}, match_words=['axes'])


@pytest.mark.parametrize('xs,shape', [((1, 3), (4, 3)), ((2, 1, 1), (2, 3, 4)),
                                      ((3,), (2, 3)), ((1,), (5,))], ids=str)
def test_broadcast(xs, shape):
    check_function(F.broadcast, [randn(*xs)], lambda x, shape: np.broadcast_to(x, shape),
                   {'shape': shape}, atol=1e-6, rtol=1e-6)


def test_broadcast_errors():
    check_raises(F.broadcast, [randn(2, 3)], {'shape': (4, 3)}, match_words=['broadcast', 'shape'])


@pytest.mark.parametrize('axis', [None, 1, 0])
def test_broadcast_to(axis):
    x = randn(3, 4, 5)
    y = randn(4, 5) if axis in (None, 1) else randn(3, 4)
    ax = 3 - y.ndim if axis is None else axis

    def ref(x, y, axis=None):
        view = (1,) * ax + y.shape + (1,) * (x.ndim - ax - y.ndim)
        return np.broadcast_to(y.reshape(view), x.shape)
    args = {} if axis is None else {'axis': axis}
    check_function(F.broadcast_to, [x, y], ref, args, atol=1e-6, rtol=1e-6)
    check_raises(F.broadcast_to, [x, randn(5, 4)], match_words=['broadcast_to', 'axis'])


@pytest.mark.parametrize('reps', [(2,), (2, 1), (1, 3, 2), (2, 1, 2, 2)], ids=str)
def test_tile(reps):
    check_function(F.tile, [randn(2, 3)], lambda x, reps: np.tile(x, reps), {'reps': reps},
                   atol=1e-6, rtol=1e-6)


def test_tile_errors():
    check_raises(F.tile, [randn(2)], {'reps': (-1,)}, match_words=['tile', 'reps'])


@pytest.mark.parametrize('axes', [None, (0,), (0, 2), (-1, 1)], ids=str)
def test_flip(axes):
    def ref(x, axes=None):
        return np.flip(x, -1 if axes is None else axes)
    check_function(F.flip, [randn(2, 3, 4)], ref, {} if axes is None else {'axes': axes},
                   atol=0, rtol=0)


def test_flip_errors():
    check_raises(F.flip, [randn(2, 3)], {'axes': (2,)}, match_words=['flip', 'axes'])


# --------------------------------------------------------------------------
# shift

def shift_ref(x, shifts=None, border_mode='nearest'):
    shifts = shifts or (0,) * x.ndim
    out = x
    lead = x.ndim - len(shifts)
    for a, s in enumerate(shifts):
        n = x.shape[lead + a]
        i = np.arange(n) - s
        if border_mode == 'nearest':
            i = np.clip(i, 0, n - 1)
        else:
            i = np.abs(i) % (2 * (n - 1))
            i = np.where(i >= n, 2 * (n - 1) - i, i)
        out = np.take(out, i, axis=lead + a)
    return out


@pytest.mark.parametrize('mode', ['nearest', 'reflect'])
@pytest.mark.parametrize('shifts', [(2,), (-1, 3), (1, -2, 0), (0, 7)], ids=str)
def test_shift(mode, shifts):
    check_function(F.shift, [randn(3, 4, 5)], shift_ref,
                   {'shifts': shifts, 'border_mode': mode}, atol=1e-6, rtol=1e-6)


def test_shift_examples(auto):
    x = nn.Variable.from_numpy_array(np.arange(5, dtype=np.float32))
    np.testing.assert_array_equal(F.shift(x, (2,)).d, [0, 0, 0, 1, 2])
    np.testing.assert_array_equal(F.shift(x, (-2,)).d, [2, 3, 4, 4, 4])
    np.testing.assert_array_equal(F.shift(x, (2,), 'reflect').d, [2, 1, 0, 1, 2])
    np.testing.assert_array_equal(F.shift(x).d, [0, 1, 2, 3, 4])
    check_raises(F.shift, [randn(3)], {'shifts': (1,), 'border_mode': 'wrap'},
                 match_words=['shift', 'border_mode'])
    check_raises(F.shift, [randn(3)], {'shifts': (1, 1)}, match_words=['shifts'])


# --------------------------------------------------------------------------
# sort

@pytest.mark.parametrize('axis', [-1, 0, 1])
@pytest.mark.parametrize('reverse', [False, True])
def test_sort(axis, reverse):
    def ref(x, axis, reverse):
        s = np.sort(x, axis)
        return np.flip(s, axis) if reverse else s
    check_function(F.sort, [distinct(3, 4, 5)], ref, {'axis': axis, 'reverse': reverse},
                   atol=0, rtol=0)


def test_sort_with_index():
    x = distinct(3, 6)

    def ref(x, with_index, reverse):
        i = np.argsort(-x if reverse else x, axis=-1, kind='stable')
        return np.take_along_axis(x, i, -1), i
    check_function(F.sort, [x], ref, {'with_index': True, 'reverse': True}, atol=0, rtol=0)


def test_sort_reference_example(auto):
    x = nn.Variable.from_numpy_array(np.random.rand(2, 3, 4))
    s = F.sort(x)
    assert np.allclose(s.d, np.sort(x.d))
    s, indices = F.sort(x, with_index=True)
    assert np.allclose(s.d, np.sort(x.d))
    assert np.all(indices.d == np.argsort(x.d))
    indices = F.sort(x, only_index=True)
    assert np.all(indices.d == np.argsort(x.d))
    check_raises(F.sort, [randn(2, 3)], {'axis': 2}, match_words=['sort', 'axis'])


# --------------------------------------------------------------------------
# one_hot

def test_one_hot_reference_examples(auto):
    labels = nn.Variable.from_numpy_array(np.array([[9], [4], [5], [1], [0]]))
    y = F.one_hot(labels, shape=(10,))
    assert y.shape == (5, 10)
    np.testing.assert_array_equal(y.d, np.eye(10)[[9, 4, 5, 1, 0]])
    labels = nn.Variable.from_numpy_array(np.array([[1, 7], [4, 7], [8, 6], [5, 0], [2, 6]]))
    y = F.one_hot(labels, shape=(10, 8))
    assert y.shape == (5, 10, 8)
    want = np.zeros((5, 10, 8))
    for i, (a, b) in enumerate(labels.d):
        want[i, a, b] = 1
    np.testing.assert_array_equal(y.d, want)
    assert y.d[0, 1, 7] == 1 and y.d.sum() == 5


def test_one_hot_checker_and_errors():
    lab = np.array([[[2], [0]], [[1], [3]]], np.int32)
    check_function(F.one_hot, [lab], lambda x, shape: np.eye(4)[x[..., 0]], {'shape': (4,)},
                   atol=0, rtol=0)
    check_raises(F.one_hot, [lab], {'shape': (4, 2)}, match_words=['one_hot', 'x'])
    check_raises(F.one_hot, [lab], {'shape': (0,)}, match_words=['shape'])
    with pytest.raises(ValueError, match='one_hot.*x.*label'):
        F.one_hot(nn.Variable.from_numpy_array(np.array([[4]])), shape=(4,)).forward()


# --------------------------------------------------------------------------
# batch_inv, batch_det

def _mats(b, n):
    return (randn(b, n, n) + 3 * np.eye(n, dtype=np.float32)).astype(np.float32)


def test_batch_inv():
    check_function(F.batch_inv, [_mats(3, 3)], lambda x: np.linalg.inv(x.astype(np.float64)),
                   atol=1e-5, rtol=1e-4)


def test_batch_det():
    check_function(F.batch_det, [_mats(4, 3)], lambda x: np.linalg.det(x.astype(np.float64)),
                   atol=1e-4, rtol=1e-4)


def test_batch_linalg_errors():
    check_raises(F.batch_inv, [randn(2, 3, 4)], match_words=['batch_inv', 'x'])
    check_raises(F.batch_det, [randn(3, 3)], match_words=['batch_det', 'x'])


# --------------------------------------------------------------------------
# assign

def test_assign_reference_example():
    dst = nn.Variable((2, 3, 4))
    src = nn.Variable.from_numpy_array(randn(2, 3, 4))
    a = F.assign(dst, src)
    a.forward()
    assert np.allclose(dst.d, src.d)
    assert np.allclose(a.d, dst.d)


def test_assign_gradient_flows_to_dst():
    dst = nn.Variable.from_numpy_array(randn(2, 3), need_grad=True)
    src = nn.Variable.from_numpy_array(randn(2, 3), need_grad=True)
    y = F.assign(dst, src)
    y.forward()
    dst.g = 1.0
    src.g = 0.5
    g = randn(2, 3)
    y.backward(g)
    np.testing.assert_allclose(dst.g, g + 1.0, rtol=1e-6)
    check_raises(F.assign, [randn(2, 3), randn(3, 2)], match_words=['assign', 'src'])


# --------------------------------------------------------------------------
# top_k_data, top_k_grad

def topk_ref(x, k, abs=False, reduce=True, base_axis=1):
    m = int(np.prod(x.shape[:base_axis]))
    v = x.reshape(m, -1)
    key = np.abs(v) if abs else v
    idx = np.argsort(-key, axis=1, kind='stable')[:, :k]
    vals = np.take_along_axis(v, idx, 1)
    if reduce:
        return vals.reshape(x.shape[:base_axis] + (k,))
    y = np.zeros_like(v)
    np.put_along_axis(y, idx, vals, 1)
    return y.reshape(x.shape)


@pytest.mark.parametrize('abs_', [False, True])
@pytest.mark.parametrize('reduce', [True, False])
@pytest.mark.parametrize('base_axis', [1, 2])
def test_top_k_data(abs_, reduce, base_axis):
    x = distinct(2, 3, 4) + np.float32(0.0123)    # magnitudes distinct, too
    check_function(F.top_k_data, [x], topk_ref,
                   {'k': 3, 'abs': abs_, 'reduce': reduce, 'base_axis': base_axis},
                   atol=0, rtol=0)


def test_top_k_data_reference_shapes():
    x = nn.Variable((4, 5, 6))
    assert F.top_k_data(x, 3, reduce=False).shape == (4, 5, 6)
    assert F.top_k_data(x, 3, reduce=True).shape == (4, 3)
    assert F.top_k_data(x, 3, reduce=True, base_axis=2).shape == (4, 5, 3)
    check_raises(F.top_k_data, [randn(2, 3)], {'k': 4}, match_words=['top_k_data', 'k'])
    check_raises(F.top_k_data, [randn(2, 3)], {'k': 1, 'base_axis': 2},
                 match_words=['base_axis'])


@pytest.mark.parametrize('abs_', [False, True])
def test_top_k_grad(abs_):
    x = randn(2, 3, 4)
    gy = distinct(2, 3, 4)

    def ref_grad(x, dy, k, abs, base_axis):
        return [topk_ref(dy, k, abs, False, base_axis)]
    res = check_function(F.top_k_grad, [x], lambda x, **a: x, {'k': 5, 'abs': abs_},
                         check_fd=False, atol=0, rtol=0)
    v = nn.Variable.from_numpy_array(x, need_grad=True)
    y = F.top_k_grad(v, 5, abs=abs_)
    y.forward()
    y.backward(gy)
    np.testing.assert_array_equal(v.g, ref_grad(x, gy, 5, abs_, 1)[0])
    assert res.outputs[0].shape == x.shape
    check_raises(F.top_k_grad, [x], {'k': 0}, match_words=['top_k_grad', 'k'])
