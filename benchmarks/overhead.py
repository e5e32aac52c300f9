"""Dispatch overhead of one small function.

    python -m benchmarks.overhead [--number N] [--repeat R]   (from the repository root)
    python benchmarks/overhead.py ...                        (with nncy installed)

Times ``F.relu`` on a 1-element Variable in auto_forward mode (the cost of
building a node and running it) and prints the median per call in µs; if
PyTorch is installed, times ``torch.relu`` on a 1-element tensor the same way
and prints the ratio.  The design budget is 3 µs.
"""
import argparse
import statistics
import timeit

import numpy as np

BUDGET_US = 3.0


def median_us(stmt, number, repeat):
    times = timeit.repeat(stmt, number=number, repeat=repeat)
    return statistics.median(times) / number * 1e6


def measure(number=2000, repeat=50):
    import nncy as nn
    import nncy.functions as F

    x = nn.Variable.from_numpy_array(np.ones(1, np.float32))
    relu = F.relu
    results = {}
    with nn.auto_forward():
        relu(x)
        results['nncy auto_forward F.relu'] = median_us(lambda: relu(x), number, repeat)
    y = relu(x)
    results['nncy static y.forward()'] = median_us(y.forward, number, repeat)
    nd = nn.NdArray.from_numpy_array(np.ones(1, np.float32))
    results['nncy imperative F.relu(NdArray)'] = median_us(lambda: relu(nd), number, repeat)
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        t = torch.ones(1)
        trelu = torch.relu
        results['torch.relu'] = median_us(lambda: trelu(t), number, repeat)
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--number', type=int, default=2000, help='calls per timing')
    p.add_argument('--repeat', type=int, default=50, help='timings (median taken)')
    a = p.parse_args(argv)
    res = measure(a.number, a.repeat)
    for k, v in res.items():
        print('%-34s %8.3f us' % (k, v))
    ours = res['nncy auto_forward F.relu']
    if 'torch.relu' in res:
        print('ratio nncy auto_forward / torch: %.2f' % (ours / res['torch.relu']))
    else:
        print('(PyTorch not installed: no ratio)')
    print('budget %.1f us: %s' % (BUDGET_US, 'met' if ours <= BUDGET_US else 'NOT met'))
    return res


if __name__ == '__main__':
    main()
