"""NdArray's device copy and its lazy synchronisation, checked without a GPU:
a stand-in device backend keeps "device" arrays as a NumPy subclass and
counts the copies, and a stand-in backend ``fake`` implements ReLU on them, so
graphs that mix it with CPU functions move data between the two sides."""
import numpy as np
import pytest

import nncy as nn
import nncy.functions as F
from nncy import _core
from nncy._core import Impl, dev_data, dev_data_out, dev_grad, dev_grad_out, register


class DevArray(np.ndarray):
    """A "device" array: NumPy memory of its own, never shared with the host copy."""


class FakeDevice:
    def __init__(self):
        self.uploads = self.downloads = 0

    def zeros(self, shape, dtype):
        return np.zeros(shape, dtype).view(DevArray)

    def empty(self, shape, dtype):
        return np.full(shape, np.nan, dtype).view(DevArray)   # garbage shows up

    def upload(self, host, dev):
        self.uploads += 1
        return np.array(host).view(DevArray)

    def download(self, dev, host):
        self.downloads += 1
        if host is not None and host.shape == dev.shape and host.dtype == dev.dtype:
            host[...] = dev
            return host
        return np.array(dev.view(np.ndarray))

    def asarray(self, obj):
        return np.asarray(obj).view(DevArray)

    def owns(self, obj):
        return isinstance(obj, DevArray)


@register('ReLU', 'fake')
class FakeReLU(Impl):
    def setup(self, inputs):
        return [inputs[0].shape]

    def forward(self, inputs, outputs):
        y = dev_data_out(outputs[0])
        x = dev_data(inputs[0])
        assert isinstance(x, DevArray) and isinstance(y, DevArray)
        y[...] = np.maximum(x, 0)

    def backward(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0]:
            g = dev_grad(outputs[0]) * (dev_data(inputs[0]) > 0)
            gx = dev_grad_out(inputs[0], accum[0])
            if accum[0]:
                gx += g
            else:
                gx[...] = g


@pytest.fixture
def device():
    prev = _core.get_device_backend()
    dev = FakeDevice()
    _core.set_device_backend(dev)
    yield dev
    _core.set_device_backend(prev)


FAKE = nn.Context(['fake:float', 'cpu:float'])


@pytest.fixture
def no_device():
    prev = _core.get_device_backend()
    _core.set_device_backend(None)
    yield
    _core.set_device_backend(prev)


def test_no_device_copy_without_a_backend(no_device):
    a = nn.NdArray.from_numpy_array(np.ones(3, np.float32))
    assert isinstance(a.data, np.ndarray)
    assert a.device_array is None
    assert not hasattr(a, '__cuda_array_interface__')


def test_moving_to_a_gpu_without_cupy_names_cupy(no_device):
    try:
        import cupy  # noqa: F401
        pytest.skip('CuPy is installed')
    except ImportError:
        pass
    a = nn.NdArray.from_numpy_array(np.ones(3, np.float32))
    with pytest.raises(ImportError, match='CuPy'):
        a.cast(np.float32, nn.Context(['cuda:float', 'cpu:float']))


def test_host_writes_reach_the_device_and_back(device):
    x = nn.Variable.from_numpy_array(np.array([-1, 2, -3], np.float32))
    with nn.context_scope(FAKE), nn.auto_forward():
        y = F.relu(x)
    assert device.uploads == 1
    # .data is the device array once there is one; .d is always NumPy
    assert isinstance(y.data.data, DevArray)
    assert type(y.d) is np.ndarray
    np.testing.assert_array_equal(y.d, [0, 2, 0])
    assert device.downloads == 1
    y.d  # host is current: no copy
    assert device.downloads == 1
    x.d = [4, -5, 6]            # a host write is uploaded at the next device use
    with nn.context_scope(FAKE), nn.auto_forward():
        z = F.relu(x)
    np.testing.assert_array_equal(z.d, [4, 0, 6])


def test_device_writes_reach_the_host(device):
    a = nn.NdArray.from_numpy_array(np.zeros(3, np.float32))
    assert a.cast(np.float32, nn.Context(['cuda:float'])) is None   # to the device
    assert isinstance(a.device_array, DevArray)
    a.data = np.array([1, 2, 3], np.float32)    # writes the device copy
    np.testing.assert_array_equal(np.asarray(a), [1, 2, 3])
    a.fill(7)                                    # host overwrite: device stale
    np.testing.assert_array_equal(a.device_array, [7, 7, 7])
    a.clear()
    assert a.clear_called and a.device_array is None
    np.testing.assert_array_equal(np.asarray(a), [0, 0, 0])


def test_mixed_graph_forward_backward_matches_cpu(device, rng):
    x0 = rng.randn(4, 5).astype(np.float32)

    def run(ctx):
        x = nn.Variable.from_numpy_array(x0, need_grad=True)
        with nn.context_scope(ctx):
            h = F.relu(x)                 # on the device under FAKE
            y = F.mul_scalar(h, 3.0)      # CPU: reads h back
            z = F.relu(y)                 # device again: uploads y
            s = F.sum(z * h)
        s.forward(clear_no_need_grad=True)
        s.backward(clear_buffer=True)
        x.g += 0   # host access
        return s.d.copy(), x.g.copy()

    ref = run(nn.Context(['cpu:float']))
    got = run(FAKE)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-6)
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-6)
    assert device.uploads > 0 and device.downloads > 0


def test_grad_accumulates_on_the_device(device, rng):
    x = nn.Variable.from_numpy_array(rng.randn(6).astype(np.float32), need_grad=True)
    x.g = 1.0
    with nn.context_scope(FAKE):
        y = F.relu(x)
    y.forward()
    y.backward()          # leaf gradients accumulate
    np.testing.assert_allclose(x.g, 1.0 + (x.d > 0))


def test_reset_shape_keeps_the_device_copy(device):
    x = nn.Variable.from_numpy_array(np.arange(6, dtype=np.float32))
    with nn.context_scope(FAKE), nn.auto_forward():
        y = F.relu(x)
    y.reset_shape((2, 3))
    assert y.data.data.shape == (2, 3)
    np.testing.assert_array_equal(y.d, np.arange(6).reshape(2, 3))


def test_gpu_context_without_cupy_names_cupy(no_device):
    from nncy.ext_utils import get_extension_context
    try:
        import cupy  # noqa: F401
        pytest.skip('CuPy is installed')
    except ImportError:
        pass
    with pytest.raises(ImportError, match='CuPy'):
        get_extension_context('cudnn')
