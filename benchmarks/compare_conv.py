"""nncy against PyTorch's CPU kernels on convolution and max pooling.

    python -m benchmarks.compare_conv [--repeat R] [--batch N] [--threads T]
                                      (from the repository root)

Times in one process, with the same inputs and thread count:

- convolution 3x3, pad 1, of a (N, 64, 56, 56) input to 64 channels with
  bias (N = 32 by default): forward, and forward + backward (gradients of
  the input, the weight and the bias);
- max pooling 2x2 of the same input: forward, and forward + backward.

nncy runs static graphs (``y.forward()``, ``y.backward()``); PyTorch runs
``torch.nn.functional`` under ``no_grad`` for forward and with autograd for
forward + backward.  Prints the median of each, the convolution's GFLOP/s and
the nncy / PyTorch ratio of the medians (the figure to quote: these machines
are shared and noisy).  PyTorch columns are left empty when torch is not
importable.
"""
import argparse
import statistics
import time

import numpy as np


def median_s(fn, repeat, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def nncy_cases(x, w, b):
    import nncy as nn
    import nncy.functions as F

    cases = {}
    xv = nn.Variable.from_numpy_array(x, need_grad=True)
    wv = nn.Variable.from_numpy_array(w, need_grad=True)
    bv = nn.Variable.from_numpy_array(b, need_grad=True)
    y = F.convolution(xv, wv, bv, pad=(1, 1))
    y.forward()
    y.g = np.ones(y.shape, np.float32)

    def conv_fb():
        y.forward()
        y.backward(None)
    cases['conv3x3 forward'] = y.forward
    cases['conv3x3 forward+backward'] = conv_fb

    xp = nn.Variable.from_numpy_array(x, need_grad=True)
    p = F.max_pooling(xp, (2, 2))
    p.forward()
    p.g = np.ones(p.shape, np.float32)

    def pool_fb():
        p.forward()
        p.backward(None)
    cases['maxpool2x2 forward'] = p.forward
    cases['maxpool2x2 forward+backward'] = pool_fb
    return cases


def torch_cases(torch, x, w, b):
    f = torch.nn.functional
    xt = torch.from_numpy(x).requires_grad_(True)
    wt = torch.from_numpy(w).requires_grad_(True)
    bt = torch.from_numpy(b).requires_grad_(True)
    gy = torch.ones(x.shape[0], w.shape[0], x.shape[2], x.shape[3])
    gp = torch.ones(x.shape[0], x.shape[1], x.shape[2] // 2, x.shape[3] // 2)

    def conv_f():
        with torch.no_grad():
            f.conv2d(xt, wt, bt, padding=1)

    def conv_fb():
        f.conv2d(xt, wt, bt, padding=1).backward(gy)

    def pool_f():
        with torch.no_grad():
            f.max_pool2d(xt, 2)

    def pool_fb():
        f.max_pool2d(xt, 2).backward(gp)
    return {'conv3x3 forward': conv_f, 'conv3x3 forward+backward': conv_fb,
            'maxpool2x2 forward': pool_f, 'maxpool2x2 forward+backward': pool_fb}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--repeat', type=int, default=7)
    ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--channels', type=int, default=64)
    ap.add_argument('--size', type=int, default=56)
    ap.add_argument('--threads', type=int, default=0,
                    help='PyTorch threads (default: as many as nncy uses)')
    a = ap.parse_args(argv)

    from nncy import _kernels
    threads = a.threads or _kernels.num_threads()
    r = np.random.RandomState(0)
    c = a.channels
    x = r.randn(a.batch, c, a.size, a.size).astype(np.float32)
    w = (r.randn(c, c, 3, 3) * 0.05).astype(np.float32)
    b = r.randn(c).astype(np.float32)
    fwd_flops = 2.0 * a.batch * c * c * 9 * a.size * a.size
    flops = {'conv3x3 forward': fwd_flops, 'conv3x3 forward+backward': 3 * fwd_flops}

    try:
        import torch
        torch.set_num_threads(threads)
        tcases = torch_cases(torch, x, w, b)
        tver = torch.__version__
    except ImportError:
        torch, tcases, tver = None, {}, None

    ncases = nncy_cases(x, w, b)
    print('input (%d, %d, %d, %d), %d threads, median of %d; PyTorch %s'
          % (a.batch, c, a.size, a.size, threads, a.repeat, tver or 'not installed'))
    head = '%-28s %10s %10s %8s %10s %10s' % ('case', 'nncy ms', 'torch ms', 'ratio',
                                             'nncy GF/s', 'torch GF/s')
    print(head)
    print('-' * len(head))
    for name, fn in ncases.items():
        tn = median_s(fn, a.repeat)
        tt = median_s(tcases[name], a.repeat) if name in tcases else None
        fl = flops.get(name)
        print('%-28s %10.2f %10s %8s %10s %10s' % (
            name, tn * 1e3,
            '%.2f' % (tt * 1e3) if tt else '-',
            '%.2f' % (tn / tt) if tt else '-',
            '%.1f' % (fl / tn / 1e9) if fl else '-',
            '%.1f' % (fl / tt / 1e9) if fl and tt else '-'))


if __name__ == '__main__':
    main()
