"""Side-by-side timings: nncy against NumPy, PyTorch and onnxruntime (those
that are importable), in one run on one machine.  Prints medians and the ratio
nncy / other (below 1.0: nncy is faster), then the performance targets with
the measured ratio of each.

    python -m benchmarks.compare [--repeat 9] [--quick]     (from the repository root)
"""
import argparse
import statistics
import time

import numpy as np

import nncy as nn
import nncy.functions as F

try:
    import torch
except ImportError:   # the table then has NumPy columns only
    torch = None


def median_times(fns, repeat, block=3, settle=1):
    """Median seconds of each callable (None stays None) over ``repeat``
    timed calls.  The libraries take turns in blocks of ``block`` timed calls,
    each block after ``settle`` untimed ones: load on a shared machine falls
    on all alike, and a library's thread pool that still spins after its
    turn (OpenMP's does) has stopped before the next one is timed."""
    live = [f for f in fns if f is not None]
    times = {id(f): [] for f in live}
    while len(times[id(live[0])]) < repeat:
        for f in live:
            for i in range(settle + block):
                t = time.perf_counter()
                f()
                if i >= settle:
                    times[id(f)].append(time.perf_counter() - t)
    return [statistics.median(times[id(f)][:repeat]) if f is not None else None for f in fns]


def _nd(a):
    return nn.NdArray.from_numpy_array(a)


def cases(quick):
    n = 1 << 20 if quick else 1 << 24
    m = 512 if quick else 2048
    rng = np.random.RandomState(0)
    a, b = rng.randn(n).astype(np.float32), rng.randn(n).astype(np.float32)
    # every library writes into a preallocated output: kernels, not allocators
    xa, xb, out = _nd(a), _nd(b), nn.NdArray((n,))
    o = np.empty_like(a)
    ta = tb = to = None
    if torch is not None:
        ta, tb, to = torch.from_numpy(a), torch.from_numpy(b), torch.empty(n)
    ma, mb = rng.randn(m, m).astype(np.float32), rng.randn(m, m).astype(np.float32)
    nma, nmb, mo, mno = _nd(ma), _nd(mb), nn.NdArray((m, m)), np.empty((m, m), np.float32)
    tma = tmb = tmo = None
    if torch is not None:
        tma, tmb, tmo = torch.from_numpy(ma), torch.from_numpy(mb), torch.empty(m, m)
    yield ('affine %dx%d' % (m, m), lambda: F.affine(nma, nmb, outputs=[mo]),
           lambda: np.matmul(ma, mb, out=mno),
           (lambda: torch.mm(tma, tmb, out=tmo)) if torch is not None else None)
    for name, fn, npf, tf in (
            ('relu', F.relu, lambda: np.maximum(a, 0, out=o),
             lambda: torch.clamp_min(ta, 0, out=to)),
            ('exp', F.exp, lambda: np.exp(a, out=o), lambda: torch.exp(ta, out=to)),
            ('sigmoid', F.sigmoid, None, lambda: torch.sigmoid(ta, out=to))):
        yield ('%s %dM' % (name, n >> 20), lambda fn=fn: fn(xa, outputs=[out]), npf,
               tf if torch is not None else None)
    yield ('add2 %dM' % (n >> 20), lambda: F.add2(xa, xb, outputs=[out]),
           lambda: np.add(a, b, out=o),
           (lambda: torch.add(ta, tb, out=to)) if torch is not None else None)
    yield ('sum %dM' % (n >> 20), lambda: F.sum(xa), lambda: a.sum(),
           (lambda: ta.sum()) if torch is not None else None)
    shape = (8, 64, 28, 28) if quick else (32, 64, 56, 56)
    x = rng.randn(*shape).astype(np.float32)
    w = (rng.randn(64, 64, 3, 3) * 0.05).astype(np.float32)
    xv = nn.Variable.from_numpy_array(x, need_grad=True)
    wv = nn.Variable.from_numpy_array(w, need_grad=True)
    y = F.convolution(xv, wv, None, pad=(1, 1))
    s = F.sum(y)
    tx = tw = None
    if torch is not None:
        tx = torch.from_numpy(x).requires_grad_()
        tw = torch.from_numpy(w).requires_grad_()

    def nn_fb():
        s.forward()
        s.backward(clear_buffer=True)

    def torch_fb():
        torch.nn.functional.conv2d(tx, tw, padding=1).sum().backward()

    yield ('conv3x3 fwd %s' % (shape,), lambda: y.forward(), None,
           (lambda: torch.nn.functional.conv2d(tx, tw, padding=1)) if torch else None)
    yield ('conv3x3 fwd+bwd', nn_fb, None, torch_fb if torch else None)


# (label, row of the kernel table, column: 2 NumPy / 3 PyTorch, target ratio)
KERNEL_TARGETS = [('affine 2048 / NumPy', 'affine', 2, 1.1),
                  ('affine 2048 / PyTorch', 'affine', 3, 1.0),
                  ('conv 3x3 forward / PyTorch', 'conv3x3 fwd', 3, 1.0),
                  ('conv 3x3 fwd+bwd / PyTorch', 'conv3x3 fwd+bwd', 3, 1.0)] + [
                  ('%s 16M / PyTorch' % k, k, 3, 1.0)
                  for k in ('relu', 'add2', 'exp', 'sigmoid', 'sum')]


def targets(rows, quick):
    """[(label, measured, target)]: ratios, but the dispatch cost in µs."""
    from . import infer_latency, overhead, train_step
    out = []
    for label, prefix, col, goal in KERNEL_TARGETS:
        row = next(r for r in rows if r[0].startswith(prefix))
        out.append((label, row[1] / row[col] if row[col] else None, goal))
    o = overhead.measure(number=500 if quick else 2000, repeat=9 if quick else 50)
    out.append(('dispatch, auto_forward relu (us)', o['nncy auto_forward F.relu'],
                overhead.BUDGET_US))
    st = train_step.compare(repeat=20 if quick else 200)
    out.append(('LeNet training step / PyTorch',
                st['nncy'] / st['torch'] if st['torch'] else None, 1.0))
    inf = infer_latency.compare('lenet', threads=1, repeat=5 if quick else 30)
    out.append(('LeNet batch-1 inference / onnxruntime', inf['ratio'], 1.0))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--repeat', type=int, default=9)
    ap.add_argument('--quick', action='store_true', help='small sizes (a smoke run)')
    a = ap.parse_args(argv)
    print('%-28s %10s %10s %10s %8s %8s' % ('case', 'nncy ms', 'numpy ms', 'torch ms',
                                           'vs np', 'vs torch'))
    rows = []
    for name, f_nn, f_np, f_t in cases(a.quick):
        t_nn, t_np, t_t = median_times([f_nn, f_np, f_t], a.repeat)

        def fmt(t):
            return '%10.3f' % (t * 1e3) if t else '%10s' % '-'

        def ratio(t):
            return '%8.2f' % (t_nn / t) if t else '%8s' % '-'
        print('%-28s %s %s %s %s %s' % (name, fmt(t_nn), fmt(t_np), fmt(t_t), ratio(t_np),
                                        ratio(t_t)))
        rows.append((name, t_nn, t_np, t_t))
    print()
    print('%-40s %9s %7s %s' % ('target', 'measured', 'target', ''))
    for label, v, goal in targets(rows, a.quick):
        print('%-40s %9s %7.2f %s' % (label, '%.2f' % v if v is not None else '-', goal,
                                      '' if v is None else 'met' if v <= goal else 'MISSED'))
    return rows


if __name__ == '__main__':
    main()
