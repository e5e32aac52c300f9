import numpy as np
import pytest
import nncy as nn
import nncy.functions as F
from cuda_check import CPU, CUDA, TOL, cupy, run, same  # noqa: F401  (cupy is an autouse fixture)


def _x(*shape, seed=0):
    return np.random.RandomState(seed).randn(*shape).astype(np.float32)


def _twice(f):
    """f applied to x twice and added: the second backward accumulates (leaf)."""
    return lambda x: F.add2(f(x), f(x))


def _inner(f):
    """f of an intermediate variable: its gradient is overwritten, not added."""
    return lambda x: f(F.identity(x))


POOLS = [F.max_pooling, F.sum_pooling,
         lambda x, **kw: F.average_pooling(x, including_pad=True, **kw),
         lambda x, **kw: F.average_pooling(x, including_pad=False, **kw)]

# (x shape, kernel, stride, ignore_border, pad, channel_last)
WINDOWS = [
    ((2, 3, 6, 7), (2, 2), None, True, None, False),
    ((2, 3, 7, 6), (3, 2), (2, 1), False, (1, 1), False),
    ((2, 3, 5, 5), (3, 3), (1, 1), True, (1, 1), False),
    ((2, 9), (3,), (2,), False, (1,), False),                  # 1-D
    ((1, 2, 4, 5, 5), (2, 2, 3), (1, 2, 2), False, (1, 0, 1), False),   # 3-D
    ((2, 5, 6, 3), (2, 3), (2, 2), True, (0, 1), True),        # channel last
    ((2, 5, 6, 3), (3, 2), (1, 2), False, (1, 0), True),
]


@pytest.mark.parametrize('pool', range(len(POOLS)))
@pytest.mark.parametrize('case', WINDOWS)
def test_pooling(pool, case):
    shape, k, s, ib, p, cl = case
    f = POOLS[pool]

    def fn(x):
        return f(x, kernel=k, stride=s, ignore_border=ib, pad=p, channel_last=cl)
    same(_inner(fn), [_x(*shape)])


@pytest.mark.parametrize('pool', range(len(POOLS)))
def test_pooling_accumulates(pool):
    f = POOLS[pool]
    same(_twice(lambda x: f(x, kernel=(3, 3), stride=(2, 2), pad=(1, 1))), [_x(2, 2, 7, 7)])


def test_max_pooling_ties_go_to_the_first():
    # constant windows: every tap ties, the gradient goes to the first in each
    x = np.ones((1, 1, 4, 6), np.float32)
    x[0, 0, :, 3:] = 2
    for fn in (lambda v: F.max_pooling(v, (2, 3), (1, 2), pad=(1, 1)),
               lambda v: F.max_pooling(v, (2, 2))):
        same(_inner(fn), [x])


def test_max_pooling_skips_nan():
    x = _x(1, 2, 4, 4)
    x[0, 0, 1, 1] = np.nan   # the last tap of its window
    y, _ = run(CUDA, lambda v: F.max_pooling(v, (2, 2)), [x], on_gpu=True, backward=False)
    r, _ = run(CPU, lambda v: F.max_pooling(v, (2, 2)), [x], backward=False)
    np.testing.assert_array_equal(y, r)


def test_global_average_pooling():
    same(_inner(F.global_average_pooling), [_x(2, 3, 4, 5)])
    same(_twice(F.global_average_pooling), [_x(2, 3, 5)])


@pytest.mark.parametrize('shape,k,cl', [((2, 3, 3, 4), (2, 3), False),
                                        ((2, 5), (3,), False),
                                        ((2, 3, 4, 2), (2, 2), True),
                                        ((1, 2, 2, 2, 3), (2, 1, 2), False)])
def test_unpooling(shape, k, cl):
    fn = lambda x: F.unpooling(x, kernel=k, channel_last=cl)  # noqa: E731
    same(_inner(fn), [_x(*shape)])
    same(_twice(fn), [_x(*shape)])


# (patch, shift, patch_step, shift_step, padding)
CORR = [
    ((1, 1), (0, 0), (1, 1), (1, 1), (0, 0, 0, 0)),
    ((3, 2), (2, 1), (2, 1), (1, 1), (1, 1, 0, 2)),
    ((2, 2), (3, 2), (1, 2), (2, 2), (2, 1)),
    ((1,), (1,), (1,), (1,), (0,)),
]


@pytest.mark.parametrize('cl', [False, True])
@pytest.mark.parametrize('case', CORR)
def test_patch_correlation(case, cl):
    patch, shift, pstep, sstep, pad = case
    shape = (2, 6, 7, 3) if cl else (2, 3, 6, 7)

    def fn(a, b):
        return F.patch_correlation(F.identity(a), F.identity(b), patch, shift, pstep, sstep,
                                   pad, channel_last=cl)
    same(fn, [_x(*shape, seed=1), _x(*shape, seed=2)])


def test_patch_correlation_same_input_and_one_grad():
    args = ((2, 2), (1, 1), (1, 1), (1, 1), (1, 1, 1, 1))
    same(lambda a: F.patch_correlation(a, a, *args), [_x(1, 2, 5, 5)])
    same(lambda a: F.patch_correlation(F.identity(a), F.identity(a), *args), [_x(1, 2, 5, 5)])
    same(lambda a, b: F.patch_correlation(a, b, *args), [_x(1, 2, 5, 5), _x(1, 2, 5, 5, seed=1)],
         need_grad=[False, True])


# (x shape, output_size, mode, align_corners, half_pixel, half_pixel_for_nn, channel_last)
INTERP = [
    ((2, 3, 4, 5), (7, 3), 'linear', False, False, False, False),
    ((2, 3, 4, 5), (8, 9), 'linear', True, False, False, False),
    ((2, 3, 4, 5), (3, 10), 'linear', False, True, False, False),
    ((2, 3, 4, 5), (7, 3), 'nearest', False, False, False, False),
    ((2, 3, 4, 5), (7, 3), 'nearest', True, False, False, False),
    ((2, 3, 4, 5), (7, 3), 'nearest', False, True, False, False),
    ((2, 3, 4, 5), (7, 3), 'nearest', False, False, True, False),
    ((2, 4, 5, 3), (6, 2), 'linear', False, True, False, True),
    ((2, 3, 5), (9,), 'linear', False, False, False, False),
    ((1, 2, 3, 4, 5), (4, 2, 7), 'linear', True, False, False, False),
    ((2, 3, 4, 5), (1, 1), 'linear', False, False, False, False),
]


@pytest.mark.parametrize('case', INTERP)
def test_interpolate(case):
    shape, size, mode, ac, hp, hpnn, cl = case

    def fn(x):
        return F.interpolate(x, output_size=size, mode=mode, align_corners=ac, half_pixel=hp,
                             half_pixel_for_nn=hpnn, channel_last=cl)
    same(_inner(fn), [_x(*shape)])


def test_interpolate_scale_and_accumulation():
    same(_twice(lambda x: F.interpolate(x, scale=(1.5, 2.0))), [_x(1, 2, 4, 3)])


def _flow(n, h, w, seed=3):
    f = np.random.RandomState(seed).uniform(-2.5, 2.5, (n, 2, h, w)).astype(np.float32)
    f[0, :, 0, 0] = (0.5, -0.25)   # points on and off the border, integer offsets
    f[0, :, 1, 1] = (1.0, 2.0)
    return f


def test_warp_by_flow():
    d, f = _x(2, 3, 5, 6), _flow(2, 5, 6)
    same(lambda a, b: F.warp_by_flow(F.identity(a), F.identity(b)), [d, f])
    same(lambda a, b: F.add2(F.warp_by_flow(a, b), F.warp_by_flow(a, b)), [d, f])
    same(lambda a, b: F.warp_by_flow(a, b), [d, f], need_grad=[False, True])
    same(lambda a, b: F.warp_by_flow(a, b), [d, f], need_grad=[True, False])


def test_setup_errors_are_the_cpu_ones():
    x = nn.Variable.from_numpy_array(_x(1, 1, 3, 3))
    with nn.context_scope(CUDA):
        with pytest.raises(ValueError):
            F.max_pooling(x, (2, 2), pad=(2, 2))   # a window entirely in the padding
        with pytest.raises(ValueError):
            F.warp_by_flow(x, nn.Variable.from_numpy_array(_x(1, 2, 3, 4)))
