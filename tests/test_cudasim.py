"""The host stand-in for CuPy (tests/cudasim) that the cuda backend's tests run
on without a GPU: its kernels must behave as CUDA's would, and it must refuse
what CuPy refuses, or those tests prove nothing."""
import numpy as np
import pytest

import cudasim

pytestmark = pytest.mark.skipif(not cudasim.available(), reason='needs g++')

SRC = r'''
template <int B>
__global__ void block_sum(long long n, const float* x, float* out) {
    __shared__ float part[B];
    float s = 0.0f;
    for (long long i = blockIdx.x * (long long)B + threadIdx.x; i < n; i += (long long)B * gridDim.x)
        s += x[i];
    part[threadIdx.x] = s;
    __syncthreads();
    for (int w = B / 2; w > 0; w /= 2) {
        if (threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) atomicAdd(out, part[0]);
}
'''


@pytest.fixture(scope='module')
def block_sum():
    return cudasim.RawModule(code=SRC, name_expressions=['block_sum<64>']).get_function(
        'block_sum<64>')


def test_shared_memory_and_barriers(block_sum):
    x = cudasim.asarray(np.arange(1000, dtype=np.float32))
    out = cudasim.zeros(1, np.float32)
    block_sum((3,), (64,), (np.int64(x.size), x, out))
    assert float(out[0]) == np.arange(1000).sum()


def test_argument_kinds_are_checked(block_sum):
    x = cudasim.zeros(4, np.float32)
    with pytest.raises(TypeError, match='argument 0'):
        block_sum((1,), (64,), (np.int32(4), x, x))
    with pytest.raises(TypeError, match='argument 0'):
        block_sum((1,), (64,), (4, x, x))          # Python int: size unknown
    with pytest.raises(TypeError, match='takes 3'):
        block_sum((1,), (64,), (np.int64(4), x))
    with pytest.raises(TypeError, match='argument 1'):
        block_sum((1,), (64,), (np.int64(4), np.zeros(4, np.float32), x))
    with pytest.raises(ValueError, match='non-contiguous'):
        block_sum((1,), (64,), (np.int64(2), cudasim.zeros(8, np.float32)[::2], x))


def test_device_arrays_are_separate_from_host_arrays():
    h = np.ones(3, np.float32)
    d = cudasim.asarray(h)
    h[0] = 5
    assert float(d[0]) == 1.0                        # asarray copied
    assert type(d.get()) is np.ndarray
    with pytest.raises(TypeError, match='host'):
        d + h                                        # CuPy refuses mixed arrays
    with pytest.raises(TypeError, match='host'):
        cudasim.concatenate([d, h])
    with pytest.raises(TypeError, match='host'):
        d[...] = h
    assert np.isnan(cudasim.empty(2, np.float32).get()).all()   # garbage is visible
