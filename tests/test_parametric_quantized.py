"""PF binary and INQ layers: NNabla's scope and parameter names and shapes,
and outputs equal to the functions they wrap."""
import numpy as np
import pytest

import nncy as nn
import nncy.functions as F
import nncy.parametric_functions as PF


@pytest.fixture(autouse=True)
def fresh_parameters():
    nn.clear_parameters()
    yield
    nn.clear_parameters()


def shapes():
    return {k: v.shape for k, v in nn.get_parameters(grad_only=False).items()}


def test_binary_and_inq_affine_parameters_and_values():
    x = nn.Variable.from_numpy_array(np.random.RandomState(0).randn(2, 3, 2).astype(np.float32))
    ys = [PF.binary_connect_affine(x, 5), PF.binary_weight_affine(x, 5),
          PF.inq_affine(x, 5, inq_iterations=(0,))]
    assert shapes() == {
        'bicon_affine/W': (6, 5), 'bicon_affine/Wb': (6, 5), 'bicon_affine/b': (5,),
        'bwn_affine/W': (6, 5), 'bwn_affine/Wb': (6, 5), 'bwn_affine/alpha': (5,),
        'bwn_affine/b': (5,),
        'inq_affine/W': (6, 5), 'inq_affine/I': (6, 5), 'inq_affine/b': (5,)}
    params = nn.get_parameters(grad_only=False)
    assert not params['bicon_affine/Wb'].need_grad and params['bicon_affine/W'].need_grad
    nn.forward_all(ys)
    w = params['bicon_affine/W'].d
    np.testing.assert_allclose(ys[0].d, x.d.reshape(2, 6) @ np.where(w >= 0, 1, -1),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(params['bicon_affine/Wb'].d, np.where(w >= 0, 1, -1))
    assert params['inq_affine/I'].d.all()     # inq_iterations=(0,): all fixed at once


def test_binary_and_inq_convolution_parameters():
    x = nn.Variable((2, 4, 6, 6))
    PF.binary_connect_convolution(x, 8, (3, 3), pad=(1, 1))
    PF.binary_weight_convolution(x, 8, (3, 3), group=2)
    y = PF.inq_convolution(x, 8, (3, 3), with_bias=False)
    assert shapes() == {
        'bicon_conv/W': (8, 4, 3, 3), 'bicon_conv/Wb': (8, 4, 3, 3), 'bicon_conv/b': (8,),
        'bwn_conv/W': (8, 2, 3, 3), 'bwn_conv/Wb': (8, 2, 3, 3), 'bwn_conv/alpha': (8,),
        'bwn_conv/b': (8,),
        'inq_conv/W': (8, 4, 3, 3), 'inq_conv/I': (8, 4, 3, 3)}
    assert y.shape == (2, 8, 4, 4)


def test_fixed_point_quantized_affine_values_and_gradient():
    rng = np.random.RandomState(1)
    x = nn.Variable.from_numpy_array(rng.randn(4, 6).astype(np.float32))
    y = PF.fixed_point_quantized_affine(x, 3, n_w=6, delta_w=0.125)
    y.forward()
    p = nn.get_parameters(grad_only=False)
    w, wq = p['fp_quantized_affine/W'].d, p['fp_quantized_affine/W_q'].d
    lim = (2 ** 5 - 1) * 0.125                          # signed, 6 bits
    np.testing.assert_allclose(wq, np.clip(np.round(w / 0.125) * 0.125, -lim, lim))
    np.testing.assert_allclose(y.d, x.d @ wq + p['fp_quantized_affine/b_q'].d,
                               rtol=1e-5, atol=1e-5)
    p['fp_quantized_affine/W'].grad.zero()
    y.backward(np.ones((4, 3), np.float32))
    # straight through: the weight receives x^T gy where |w| is inside the range
    inside = np.abs(w) <= lim
    np.testing.assert_allclose(p['fp_quantized_affine/W'].g[inside],
                               np.broadcast_to(x.d.sum(0)[:, None], w.shape)[inside],
                               rtol=1e-5)


def test_other_quantized_layers_parameters():
    x = nn.Variable((2, 3, 5, 5))
    PF.pow2_quantized_convolution(x, 4, (3, 3))
    PF.pruned_affine(x, 7, rate_w=0.5)
    PF.fixed_point_quantized_convolution(x, 4, (3, 3), with_bias=False)
    PF.pow2_quantized_affine(x, 2)
    PF.pruned_convolution(x, 4, (1, 1))
    s = shapes()
    assert s['pow2_quantized_conv/W_q'] == (4, 3, 3, 3) and s['pow2_quantized_conv/b_q'] == (4,)
    assert s['pruned_affine/W'] == (75, 7) and s['pruned_affine/W_q'] == (75, 7)
    assert 'fp_quantized_conv/b' not in s and s['fp_quantized_conv/W_q'] == (4, 3, 3, 3)
    assert s['pow2_quantized_affine/W'] == (75, 2) and s['pruned_conv/W'] == (4, 3, 1, 1)
    with pytest.raises(TypeError, match='n_bits'):
        PF.fixed_point_quantized_affine(x, 2, n_bits=3, name='bad')


def test_min_max_quantized_affine_and_convolution():
    rng = np.random.RandomState(2)
    x = nn.Variable.from_numpy_array(rng.randn(4, 6).astype(np.float32))
    y = PF.min_max_quantized_affine(x, 3, ql_max_w=15)
    y.forward()
    p = nn.get_parameters(grad_only=False)
    pre = 'min_max_quantized_affine/'
    w, wq = p[pre + 'W'].d, p[pre + 'W_q'].d
    qmin = p[pre + 'min_max_quantize_w/min_max_quantize/qr_min']
    assert qmin.shape == (1, 1) and float(qmin.d.reshape(())) == -2.0 and qmin.need_grad
    assert p[pre + 'min_max_quantize_b/min_max_quantize/qr_max'].d == 6.0
    assert p[pre + 'min_max_quantize_w/min_max_quantize/ql_max'].d == 15.0
    scale = 4.0 / 15
    # 16 levels over the nudged range around [-2, 2]
    levels = np.unique(np.round(wq / scale, 3))
    assert len(levels) <= 16 and np.abs(wq - w).max() <= scale / 2 + 1e-6
    np.testing.assert_allclose(y.d, x.d @ wq + p[pre + 'b_q'].d, rtol=1e-5, atol=1e-5)
    for v in p.values():
        v.grad.zero()
    y.backward(np.ones(y.shape, np.float32))
    np.testing.assert_allclose(p[pre + 'W'].g, np.repeat(x.d.sum(0)[:, None], 3, 1),
                               rtol=1e-5, atol=1e-5)

    xc = nn.Variable((2, 3, 5, 5))
    yc = PF.min_max_quantized_convolution(xc, 4, (3, 3), pad=(1, 1), with_bias=False,
                                          quantize_b=False)
    assert yc.shape == (2, 4, 5, 5)
    s = shapes()
    assert s['min_max_quantized_conv/W'] == (4, 3, 3, 3)
    assert s['min_max_quantized_conv/W_q'] == (4, 3, 3, 3)
    assert s['min_max_quantized_conv/min_max_quantize_w/min_max_quantize/qr_min'] == \
        (1, 1, 1, 1)
    with pytest.raises(TypeError):
        PF.min_max_quantized_affine(x, 2, n_w=3, name='bad')
