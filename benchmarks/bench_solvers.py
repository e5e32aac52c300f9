"""asv suites for the solvers: one ``update()`` over a set of parameters.

``TimeSolverUpdate`` times every nncy solver; ``TimeNumpyAdam`` and
``TimeTorchAdam`` time the same Adam step written with NumPy (in place, no
temporaries spared) and with ``torch.optim.Adam`` (when PyTorch is
installed), so that one run gives nncy/NumPy and nncy/PyTorch ratios.
"""
import numpy as np

import nncy as nn
import nncy.solvers as S

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None

SOLVERS = ['Sgd', 'Momentum', 'Lars', 'Nesterov', 'Adadelta', 'Adagrad', 'AdaBelief', 'RMSprop',
           'RMSpropGraves', 'Adam', 'AdaBound', 'Adamax', 'AMSGRAD', 'AMSBound', 'AdamW', 'SgdW',
           'Lamb', 'Lion']
# (number of parameters, elements each)
SIZES = {'many-small': (200, 1 << 10), 'few-large': (4, 1 << 22)}


def _arrays(size):
    count, n = SIZES[size]
    rng = np.random.RandomState(0)
    return [(rng.randn(n).astype(np.float32), rng.randn(n).astype(np.float32))
            for _ in range(count)]


class TimeSolverUpdate:
    params = (SOLVERS, list(SIZES))
    param_names = ['solver', 'size']
    timeout = 120

    def setup(self, name, size):
        params = {}
        for i, (w, g) in enumerate(_arrays(size)):
            v = nn.Variable.from_numpy_array(w, need_grad=True)
            v.g = g
            params['p%d' % i] = v
        self.solver = getattr(S, name)()
        self.solver.set_parameters(params)
        self.solver.update()

    def time_update(self, name, size):
        self.solver.update()


class TimeNumpyAdam:
    params = (list(SIZES),)
    param_names = ['size']

    def setup(self, size):
        self.p = [(w, g, np.zeros_like(w), np.zeros_like(w)) for w, g in _arrays(size)]
        self.t = 0

    def time_update(self, size):
        self.t += 1
        b1, b2, eps = 0.9, 0.999, 1e-8
        a = 1e-3 * np.sqrt(1 - b2 ** self.t) / (1 - b1 ** self.t)
        for w, g, m, v in self.p:
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            w -= a * m / (np.sqrt(v) + eps)


class TimeTorchAdam:
    params = (list(SIZES),)
    param_names = ['size']

    def setup(self, size):
        if torch is None:
            raise NotImplementedError('PyTorch is not installed')
        self.ps = []
        for w, g in _arrays(size):
            p = torch.nn.Parameter(torch.from_numpy(w))
            p.grad = torch.from_numpy(g)
            self.ps.append(p)
        self.opt = torch.optim.Adam(self.ps, lr=1e-3)
        self.opt.step()

    def time_update(self, size):
        self.opt.step()
