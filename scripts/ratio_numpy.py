"""Time ratio nncy / NumPy of a few functions on large float32 arrays, measured
in one run: the two are timed alternately, and the median of the repeats is
compared (these machines are shared and noisy: quote the ratio, not a time).

    PYTHONPATH=. python scripts/ratio_numpy.py [n_elements] [repeats]
"""
import statistics
import sys
import time

import numpy as np

import nncy as nn
import nncy.functions as F


def _time(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(n=1 << 24, repeats=15):
    rng = np.random.RandomState(0)
    a = rng.randn(n).astype(np.float32)
    b = rng.randn(n).astype(np.float32)
    va, vb = nn.Variable.from_numpy_array(a), nn.Variable.from_numpy_array(b)
    na, nb = nn.NdArray.from_numpy_array(a), nn.NdArray.from_numpy_array(b)
    cases = {
        'add2': (F.add2(va, vb), lambda: F.add2(na, nb), lambda: np.add(a, b)),
        'exp': (F.exp(va), lambda: F.exp(na), lambda: np.exp(a)),
        'sum': (F.sum(va), lambda: F.sum(na), lambda: np.sum(a)),
    }
    print('%d float32 elements, %d threads, median of %d' % (n, nn._kernels.num_threads(),
                                                             repeats))
    print('%-6s %12s %12s %12s %10s %10s' % ('', 'static ms', 'imper. ms', 'numpy ms',
                                            'static/np', 'imper./np'))
    for name, (y, imp, ref) in cases.items():
        y.forward()
        imp()
        ref()
        ts, ti, tn = [], [], []
        for _ in range(repeats):
            ts.append(_time(y.forward))
            ti.append(_time(imp))
            tn.append(_time(ref))
        s, i, r = (statistics.median(t) for t in (ts, ti, tn))
        print('%-6s %12.2f %12.2f %12.2f %10.2f %10.2f' % (name, s * 1e3, i * 1e3, r * 1e3,
                                                          s / r, i / r))


if __name__ == '__main__':
    args = [int(v) for v in sys.argv[1:]]
    main(*args)
