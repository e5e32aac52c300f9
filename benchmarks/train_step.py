"""One training step of the digits LeNet (``nncy.examples.digits.lenet``):
nncy against the same model in PyTorch, in one process, same thread count.

    python -m benchmarks.train_step [--repeat 200] [--batch 64] [--threads T]
                                    (from the repository root)

The step is forward, zero_grad, backward and an Adam update on a (batch, 64)
input of 8x8 images with 10 classes.  The two libraries take turns in short
blocks of steps (so that noise from the shared machine falls on both
alike); the script prints the median of each and the ratio nncy / PyTorch
(below 1.0: nncy is faster).  Without
PyTorch only the nncy figure is printed.
"""
import argparse
import statistics
import time

import numpy as np

CLASSES = 10
FEATURES = 64   # 8x8 images, flattened


def data(batch, seed=0):
    """Random (x, t): x (batch, 64) in [0, 1), t (batch, 1) int labels."""
    r = np.random.RandomState(seed)
    x = r.uniform(0, 1, (batch, FEATURES)).astype(np.float32)
    t = r.randint(0, CLASSES, (batch, 1)).astype(np.int32)
    return x, t


def nncy_step(x_data, t_data, lr=2e-3, seed=0):
    """A function running one nncy training step of ``lenet`` on (x, t)."""
    import nncy as nn
    import nncy.functions as F
    import nncy.solvers as S
    from nncy.examples.digits import lenet

    nn.clear_parameters()
    nn.seed(seed)
    x = nn.Variable.from_numpy_array(x_data)
    t = nn.Variable.from_numpy_array(t_data)
    loss = F.mean(F.softmax_cross_entropy(lenet(x), t))
    solver = S.Adam(lr)
    solver.set_parameters(nn.get_parameters())

    def step():
        loss.forward(clear_no_need_grad=True)
        solver.zero_grad()
        loss.backward(clear_buffer=True)
        solver.update()
        return loss
    return step


def torch_step(torch, x_data, t_data, lr=2e-3, seed=0):
    """The same model and step in PyTorch."""
    nnt = torch.nn
    torch.manual_seed(seed)
    model = nnt.Sequential(
        nnt.Unflatten(1, (1, 8, 8)),
        nnt.Conv2d(1, 16, 5, padding=2, bias=False), nnt.BatchNorm2d(16), nnt.ReLU(),
        nnt.MaxPool2d(2),
        nnt.Conv2d(16, 32, 3, padding=1, bias=False), nnt.BatchNorm2d(32), nnt.ReLU(),
        nnt.MaxPool2d(2),
        nnt.Flatten(), nnt.Linear(32 * 2 * 2, 64), nnt.ReLU(), nnt.Linear(64, CLASSES))
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr)
    loss_fn = nnt.CrossEntropyLoss()
    x = torch.from_numpy(x_data)
    t = torch.from_numpy(t_data[:, 0].astype(np.int64))

    def step():
        loss = loss_fn(model(x), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss
    return step


def try_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def take_turns(steps, repeat, warmup, block, settle):
    """{name: median seconds of ``repeat`` calls} of each function in
    ``steps``, run in turns of ``block`` timed calls after ``settle`` untimed
    ones, following ``warmup`` untimed calls of each."""
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in steps}
    while min(len(v) for v in times.values()) < repeat:
        for k, fn in steps.items():
            for i in range(settle + block):
                t0 = time.perf_counter()
                fn()
                dt = time.perf_counter() - t0
                if i >= settle:
                    times[k].append(dt)
    return {k: statistics.median(v[:repeat]) for k, v in times.items()}


def compare(repeat=200, batch=64, threads=0, warmup=20, block=10, settle=3):
    """{'nncy': median s, 'torch': median s or None, 'threads', 'torch_version'}.

    The libraries take turns in blocks of ``block`` timed steps, each block
    after ``settle`` untimed ones: the thread pool of one library may still
    be spinning when the other starts, which would slow down both."""
    from nncy import _kernels
    threads = threads or _kernels.num_threads()
    x, t = data(batch)
    steps = {'nncy': nncy_step(x, t)}
    torch = try_torch()
    if torch is not None:
        torch.set_num_threads(threads)
        steps['torch'] = torch_step(torch, x, t)
    out = take_turns(steps, repeat, warmup, block, settle)
    out.setdefault('torch', None)
    out['threads'] = threads
    out['torch_version'] = torch.__version__ if torch is not None else None
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--repeat', type=int, default=200)
    ap.add_argument('--batch', type=int, default=64)
    ap.add_argument('--threads', type=int, default=0,
                    help='PyTorch threads (default: as many as nncy uses)')
    a = ap.parse_args(argv)
    r = compare(a.repeat, a.batch, a.threads)
    print('LeNet training step, batch %d, %d threads, median of %d; PyTorch %s'
          % (a.batch, r['threads'], a.repeat, r['torch_version'] or 'not installed'))
    print_times(r)


def print_times(r):
    """The nncy and PyTorch medians of ``r`` and their ratio."""
    print('nncy  %8.3f ms' % (r['nncy'] * 1e3))
    if r['torch'] is not None:
        print('torch %8.3f ms' % (r['torch'] * 1e3))
        print('ratio nncy / torch %.2f' % (r['nncy'] / r['torch']))


if __name__ == '__main__':
    main()
