"""The cudnn backend's convolution layers (nncy/cuda/cudnn_conv.py).  On a
GPU with nvidia-cudnn-frontend they run real cuDNN graphs; elsewhere a
stand-in of the graph API (tests/cudasim/cudnn.py) executes each recorded
graph through the operands' addresses, dims and strides, so that the mapping
from layers to cuDNN operations, layouts and plans is checked everywhere."""
import numpy as np
import pytest

import nncy as nn
import nncy.functions as F
from nncy.cuda import cudnn_conv

from cuda_check import CPU, ON_GPU, TOL, cupy, run  # noqa: F401  (cupy: the fixture)
from cudasim import cudnn as fake

CUDNN = nn.Context(['cudnn:float', 'cuda:float', 'cpu:float'])
CONV_TOL = dict(TOL, rtol=1e-3, atol=1e-4)


@pytest.fixture(autouse=True)
def cudnn(monkeypatch):
    """Real cuDNN on a GPU machine that has it, else the stand-in."""
    if not ON_GPU:
        monkeypatch.setattr(cudnn_conv, '_cudnn', fake)
        fake.log.clear()
        monkeypatch.setattr(fake, 'decline', False)
    cudnn_conv.clear_plans()
    yield cudnn_conv._module()
    cudnn_conv.clear_plans()


def same_on_cudnn(fn, arrays):
    ref = run(CPU, fn, arrays)
    got = run(CUDNN, fn, arrays, on_gpu=True)
    np.testing.assert_allclose(got[0], ref[0], **CONV_TOL)
    for g, r in zip(got[1], ref[1]):
        np.testing.assert_allclose(g, r, **CONV_TOL)


def executed():
    return [d for e, d in fake.log if e == 'execute']


CASES = [  # x shape, weight shape, kwargs
    ((2, 3, 7, 6), (4, 3, 3, 3), dict(pad=(1, 1))),
    ((2, 4, 9, 8), (6, 2, 3, 2), dict(pad=(1, 0), stride=(2, 1), dilation=(1, 2), group=2)),
    ((2, 7, 6, 3), (4, 3, 3, 3), dict(pad=(1, 1), stride=(2, 2), channel_last=True)),
    ((2, 3, 11), (5, 3, 4), dict(pad=(2,), stride=(3,))),                   # 1-D
    ((1, 2, 5, 4, 6), (3, 2, 2, 3, 2), dict(pad=(1, 0, 1), dilation=(2, 1, 1))),  # 3-D
    ((3, 2, 3, 6, 5), (4, 3, 3, 3), dict(base_axis=2, pad=(1, 1))),          # two batch axes
]


@pytest.mark.parametrize('bias', [False, True])
@pytest.mark.parametrize('xs,ws,kw', CASES, ids=[str(c[2]) for c in CASES])
def test_convolution(rng, xs, ws, kw, bias):
    arrays = [rng.randn(*xs).astype(np.float32), rng.randn(*ws).astype(np.float32)]
    if bias:
        arrays.append(rng.randn(ws[0]).astype(np.float32))
    same_on_cudnn(lambda *v: F.convolution(*v, **kw), arrays)
    if not ON_GPU:
        assert executed() == ['fprop', 'dgrad', 'wgrad']


DECONV = [  # x shape, weight shape (C_in, C_out / group, kernel...), kwargs
    ((2, 4, 5, 4), (4, 3, 3, 2), dict(pad=(1, 1))),
    ((2, 4, 5, 4), (4, 3, 3, 2), dict(stride=(2, 2), output_padding=(1, 0))),
    ((2, 4, 5, 4), (4, 2, 2, 3), dict(group=2, dilation=(2, 1))),
    ((2, 5, 4, 4), (4, 2, 3, 3), dict(channel_last=True, stride=(2, 1))),
]


@pytest.mark.parametrize('xs,ws,kw', DECONV, ids=[str(c[2]) for c in DECONV])
def test_deconvolution(rng, xs, ws, kw):
    x = rng.randn(*xs).astype(np.float32)
    w = rng.randn(*ws).astype(np.float32)
    same_on_cudnn(lambda a, b: F.deconvolution(a, b, **kw), [x, w])
    if not ON_GPU:
        assert executed() == ['dgrad', 'fprop', 'wgrad']


def test_depthwise(rng):
    x = rng.randn(2, 3, 6, 5).astype(np.float32)
    w = rng.randn(6, 3, 3).astype(np.float32)
    same_on_cudnn(lambda a, b: F.depthwise_convolution(a, b, pad=(1, 1), multiplier=2), [x, w])
    same_on_cudnn(lambda a, b: F.depthwise_deconvolution(a, b, divisor=2), [
        rng.randn(2, 6, 4, 4).astype(np.float32), rng.randn(6, 2, 2).astype(np.float32)])


def test_gradients_accumulate(rng):
    x = rng.randn(2, 3, 5, 5).astype(np.float32)
    w = rng.randn(4, 3, 3, 3).astype(np.float32)
    same_on_cudnn(lambda a, b: F.add2(F.convolution(a, b), F.convolution(a, b)), [x, w])


@pytest.mark.skipif(ON_GPU, reason='counts calls of the stand-in')
def test_plans_are_cached_per_geometry(rng):
    x = rng.randn(2, 3, 5, 5).astype(np.float32)
    w = rng.randn(4, 3, 3, 3).astype(np.float32)
    for _ in range(2):
        run(CUDNN, lambda a, b: F.convolution(a, b), [x, w])
    builds = [d for e, d in fake.log if e == 'build']
    assert builds == ['fprop', 'dgrad', 'wgrad']           # built once, run twice
    assert executed() == ['fprop', 'dgrad', 'wgrad'] * 2
    run(CUDNN, lambda a, b: F.convolution(a, b, pad=(1, 1)), [x, w])
    assert len([e for e, _ in fake.log if e == 'build']) == 6   # a new geometry


@pytest.mark.skipif(ON_GPU, reason='reads the stand-in log')
def test_environment_settings(rng, monkeypatch):
    x = rng.randn(1, 2, 4, 4).astype(np.float32)
    w = rng.randn(2, 2, 3, 3).astype(np.float32)
    monkeypatch.setenv('NNABLA_CUDNN_WORKSPACE_LIMIT', '1024')
    monkeypatch.setenv('NNABLA_CUDNN_DETERMINISTIC', '1')
    run(CUDNN, lambda a, b: F.convolution(a, b), [x, w])
    assert ('workspace_limit', 1024) in fake.log
    assert ('deselect_numeric_notes', ('NONDETERMINISTIC',)) in fake.log
    fake.log.clear()
    monkeypatch.setenv('NNABLA_CUDNN_WORKSPACE_LIMIT', '-1')
    monkeypatch.setenv('NNABLA_CUDNN_DETERMINISTIC', '0')
    run(CUDNN, lambda a, b: F.convolution(a, b), [x, w])   # new settings: new plans
    assert not [e for e, _ in fake.log if e in ('workspace_limit', 'deselect_numeric_notes')]
    assert [e for e, _ in fake.log].count('build') == 3
    monkeypatch.setenv('NNABLA_CUDNN_WORKSPACE_LIMIT', 'lots')
    with pytest.raises(ValueError, match='NNABLA_CUDNN_WORKSPACE_LIMIT'):
        run(CUDNN, lambda a, b: F.convolution(a, b), [x, w])


@pytest.mark.skipif(ON_GPU, reason='makes the stand-in decline')
def test_unsupported_graphs_use_the_cuda_kernels(rng, monkeypatch):
    monkeypatch.setattr(fake, 'decline', True)
    x = rng.randn(2, 3, 5, 5).astype(np.float32)
    w = rng.randn(4, 3, 3, 3).astype(np.float32)
    ref = run(CPU, lambda a, b: F.convolution(a, b), [x, w])
    with pytest.warns(UserWarning, match='cuDNN cannot run'):
        got = run(CUDNN, lambda a, b: F.convolution(a, b), [x, w], on_gpu=True)
    assert executed() == []
    np.testing.assert_allclose(got[0], ref[0], **CONV_TOL)
    for g, r in zip(got[1], ref[1]):
        np.testing.assert_allclose(g, r, **CONV_TOL)


def test_descriptors_match_the_arrays_in_memory():
    """dims in (N, C, spatial) order with the element strides of the arrays as
    stored: channel-first and channel-last, 1-D lifted to 2-D."""
    geom = (2, 3, 4, 1, 2, 1, 7, 4, 3, 1, 2, 1, 6, 6, 3, 1, 1, 1)   # (N, H, W, C) input
    tensors, (pad, stride, dil) = cudnn_conv.descriptors(geom)
    x = np.empty((2, 7, 6, 3), np.float32)
    dims, strides = tensors['I']
    assert dims == [2, 3, 7, 6]
    assert strides == [s // 4 for s in np.moveaxis(x, -1, 1).strides]
    w = np.empty((4, 3, 3, 3), np.float32)     # (K, kh, kw, C) channel-last filter
    assert tensors['W'] == ([4, 3, 3, 3], [s // 4 for s in np.moveaxis(w, -1, 1).strides])
    assert (pad, stride, dil) == ([1, 1], [2, 1], [1, 1])
    one = cudnn_conv.descriptors((2, 3, 5, 1, 1, 0, 11, 4, 4, 2, 3, 1))
    assert one[0]['I'] == ([2, 3, 1, 11], [33, 11, 11, 1])
    assert one[1] == ([0, 2], [1, 3], [1, 1])
