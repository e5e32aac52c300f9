"""Solver updates for parameters that live on the device: the kernels of
``kernels/solvers.cu`` (one fused pass per parameter, the rules of the CPU
kernels), with the norms of LARS and LAMB taken by CuPy in float64."""
import math

import numpy as np

from nncy._core import dev_data, dev_grad
from nncy.cuda import cupy
from nncy.cuda._module import launch

FILE = 'solvers.cu'
LARS, LAMB = 11, 12
F32 = np.float32


def _norm(cp, x):
    return float(cp.sqrt(cp.square(x.astype(np.float64)).sum()))


def update(name, rule, v, states, p):
    """Update parameter ``v`` (and its ``states``, Variables) on the device by
    rule code ``rule`` with the scalars ``p``.  Returns False, changing
    nothing, when the buffers are not float32 (the CPU path handles those)."""
    cp = cupy()
    w = dev_data(v)
    s = [dev_data(x) for x in states]
    if any(a.dtype != F32 or not a.flags.c_contiguous for a in [w] + s):
        return False
    g = dev_grad(v).astype(F32, copy=False)
    if not g.flags.c_contiguous:
        g = g.copy()
    p = [float(x) for x in p]
    if rule == LARS:
        lr, mom, coef, eps, decay = p[:5]
        g_norm, w_norm = _norm(cp, g), _norm(cp, w)
        x = g_norm + decay * w_norm
        if math.isnan(x) or x < 0:
            raise ValueError('%s: the gradient or parameter norm is not a number' % name)
        if x < eps:
            x += eps
        p = [lr if w_norm < eps else lr * coef * w_norm / x, mom, decay]
    bufs = s + [w] * (3 - len(s))   # placeholders for states the rule does not have
    launch(FILE, 'nncy_solver_update<%d>' % rule, w.size,
           (np.int64(w.size), w, g, bufs[0], bufs[1], bufs[2],
            cp.asarray(np.asarray(p, F32)), np.int32(len(s) > 2)))
    if rule == LAMB:
        eta, _, _, c1, c2, eps, wd, lo, hi = p[:9]
        m, vv = s[0], s[1]
        r = (m * F32(1 / c1)) / (cp.sqrt(vv * F32(1 / c2)) + F32(eps)) + F32(wd) * w
        r_norm, w_norm = _norm(cp, r), min(max(_norm(cp, w), lo), hi)
        local = w_norm / r_norm if r_norm > eps else 1.0
        w -= F32(eta * local) * r
    return True
