"""Solvers (``nncy.solvers as S``): parameter update rules with NNabla's
interface: ``set_parameters``, ``zero_grad``, ``update``, ``weight_decay``."""
from collections import OrderedDict

import numpy as np

from nncy import _kernels as K


class Solver:
    """Keeps a dict of parameters and per-parameter state arrays."""
    _state_names = ()

    def __init__(self):
        self.params = OrderedDict()
        self.states = OrderedDict()
        self.t = 0

    @property
    def name(self):
        return type(self).__name__

    def set_parameters(self, param_dict, reset=True, retain_state=False):
        if reset:
            self.params.clear()
            if not retain_state:
                self.states.clear()
        for k, v in param_dict.items():
            self.params[k] = v
            if k not in self.states:
                self.states[k] = {s: np.zeros(v.shape, np.float32) for s in self._state_names}

    def remove_parameters(self, keys):
        for k in keys:
            self.params.pop(k, None)
            self.states.pop(k, None)

    def clear_parameters(self):
        self.params.clear()
        self.states.clear()
        self.t = 0

    def get_parameters(self):
        return OrderedDict(self.params)

    def zero_grad(self):
        for v in self.params.values():
            v.grad.zero()

    def weight_decay(self, decay_rate):
        """g += decay_rate * w for every parameter."""
        for v in self.params.values():
            v.g += np.float32(decay_rate) * v.d

    def scale_grad(self, scale):
        for v in self.params.values():
            v.g *= np.float32(scale)

    def clip_grad_by_norm(self, clip_norm):
        for v in self.params.values():
            n = float(np.sqrt(np.sum(np.square(v.g, dtype=np.float64))))
            if n > clip_norm:
                v.g *= np.float32(clip_norm / n)

    def check_inf_or_nan_grad(self):
        return any(not np.all(np.isfinite(v.g)) for v in self.params.values())

    def set_learning_rate(self, lr):
        self.lr = float(lr)

    def learning_rate(self):
        return self.lr

    def update(self, update_pre_hook=None, update_post_hook=None):
        self.t += 1
        for k, v in self.params.items():
            if update_pre_hook is not None:
                update_pre_hook(k)
            self._update(v, self.states[k])
            if update_post_hook is not None:
                update_post_hook(k)

    def get_states(self):
        return OrderedDict((k, (dict(s), self.t)) for k, s in self.states.items())

    def set_states(self, states):
        for k, (s, t) in states.items():
            self.states[k] = {n: np.asarray(a, np.float32).copy() for n, a in s.items()}
            self.t = t

    def _w(self, v):
        return np.ascontiguousarray(v.data.cast(np.float32))

    def _g(self, v):
        return np.ascontiguousarray(v.grad.cast(np.float32))


class Sgd(Solver):
    """Plain gradient descent: w -= lr * g."""

    def __init__(self, lr=0.001):
        super().__init__()
        self.lr = float(lr)

    def _update(self, v, state):
        K.sgd_update(self._w(v), self._g(v), self.lr)


class Momentum(Solver):
    """Momentum: v = momentum * v + lr * g; w -= v."""
    _state_names = ('m',)

    def __init__(self, lr=0.001, momentum=0.9):
        super().__init__()
        self.lr = float(lr)
        self.momentum = float(momentum)

    def _update(self, v, state):
        K.momentum_update(self._w(v), self._g(v), state['m'], self.lr, self.momentum)


class Adam(Solver):
    """Adam with bias correction folded into the step size."""
    _state_names = ('m', 'v')

    def __init__(self, alpha=0.001, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__()
        self.alpha, self.beta1, self.beta2, self.eps = map(float, (alpha, beta1, beta2, eps))

    def set_learning_rate(self, lr):
        self.alpha = float(lr)

    def learning_rate(self):
        return self.alpha

    def _update(self, v, state):
        t = self.t
        alpha_t = self.alpha * np.sqrt(1 - self.beta2 ** t) / (1 - self.beta1 ** t)
        K.adam_update(self._w(v), self._g(v), state['m'], state['v'], alpha_t,
                      self.beta1, self.beta2, self.eps)
