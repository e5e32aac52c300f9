"""The argument checks shared by the NumPy-level kernel entry points."""
import numpy as np
import pytest

from nncy import _kernels as K


def test_a_float64_array_is_refused_with_the_callers_name():
    x = np.ones(4)
    y = np.zeros(4, np.float32)
    with pytest.raises(TypeError, match='softmax: expected a C-contiguous float32 array, '
                                        'got float64 contiguous'):
        K.softmax('softmax', x, y, 1, 4, 1, False)


def test_a_strided_optional_array_is_refused():
    x = np.ones(8, np.float32)
    with pytest.raises(TypeError, match='pool: expected a C-contiguous float32 array, '
                                        'got float32 strided'):
        K.pool_grad('pool', 'max', x[::2], x[:4].copy(), np.zeros(4, np.float32),
                    (1, 1, 0, 4, 4, 1, 1, 0))


def test_sized_buffers_name_the_expected_size():
    h = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match='rnn: buffer of 3 elements, expected 4'):
        K.rnn_cell('rnn', False, np.zeros(3, np.float32), h)


def test_clip_grad_reports_an_invalid_operand():
    x = np.ones(4, np.float32)
    g = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match='clip_by_value: invalid argument'):
        K.clip_grad('clip_by_value', x, None, 0.0, None, 1.0, x, 7, g, False)


def test_kernels_run_after_the_checks():
    x = np.array([1.0, -2.0, 3.0], np.float32)
    y = np.empty(3, np.float32)
    K.rnn_cell('rnn', True, x, y)
    np.testing.assert_array_equal(y, [1.0, 0.0, 3.0])
    g = np.zeros(3, np.float32)
    K.clip_grad('clip_by_value', x, None, 0.0, None, 2.0, np.ones(3, np.float32), 0, g, False)
    np.testing.assert_array_equal(g, [1.0, 0.0, 0.0])
