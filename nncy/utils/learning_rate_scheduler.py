"""Learning-rate schedules (NNabla's ``nnabla.utils.learning_rate_scheduler``).

A scheduler maps the iteration (counted from 0) to a learning rate::

    sched = CosineScheduler(init_lr=0.1, max_iter=10000)
    for i in range(10000):
        solver.set_learning_rate(sched.get_learning_rate(i))
        ...
"""
import math

__all__ = ['BaseLearningRateScheduler', 'PolynomialScheduler', 'CosineScheduler',
           'ExponentialScheduler', 'StepScheduler', 'LinearWarmupScheduler']


class BaseLearningRateScheduler:
    """Base of the schedulers: ``get_learning_rate(iter)`` gives the rate
    for iteration ``iter`` (from 0)."""

    def get_learning_rate(self, iter):
        raise NotImplementedError('%s must define get_learning_rate(iter)' % type(self).__name__)


class PolynomialScheduler(BaseLearningRateScheduler):
    r"""Polynomial decay to 0 at ``max_iter``:
    :math:`\eta_0 (1 - i / i_{max})^p`.

    Args:
        init_lr (float): the initial rate :math:`\eta_0`.
        max_iter (int): the iteration where the rate reaches 0.
        power (float): the exponent :math:`p`.
    """

    def __init__(self, init_lr, max_iter, power):
        self.init_lr = init_lr
        self.max_iter = max_iter
        self.power = power

    def get_learning_rate(self, iter):
        return self.init_lr * ((1.0 - iter / self.max_iter) ** self.power)


class CosineScheduler(BaseLearningRateScheduler):
    r"""Half a cosine from ``init_lr`` down to 0 at ``max_iter``:
    :math:`\eta_0 (1 + \cos(\pi i / i_{max})) / 2`.

    Args:
        init_lr (float): the initial rate :math:`\eta_0`.
        max_iter (int): the iteration where the rate reaches 0.
    """

    def __init__(self, init_lr, max_iter):
        self.init_lr = init_lr
        self.max_iter = max_iter

    def get_learning_rate(self, iter):
        return self.init_lr * (math.cos(math.pi * iter / self.max_iter) + 1.0) * 0.5


class ExponentialScheduler(BaseLearningRateScheduler):
    r"""Multiply by ``gamma`` every ``iter_interval`` iterations:
    :math:`\eta_0 \gamma^{\lfloor i / k \rfloor}`.

    Args:
        init_lr (float): the initial rate :math:`\eta_0`.
        gamma (float): the factor :math:`\gamma`.
        iter_interval (int): the period :math:`k` (default 1).
    """

    def __init__(self, init_lr, gamma, iter_interval=1):
        self.init_lr = init_lr
        self.gamma = gamma
        self.iter_interval = iter_interval

    def get_learning_rate(self, iter):
        return self.init_lr * self.gamma ** (iter // self.iter_interval)


class StepScheduler(BaseLearningRateScheduler):
    r"""Multiply by ``gamma`` at each of the iterations ``iter_steps``
    (from that iteration on).

    Args:
        init_lr (float): the initial rate.
        gamma (float): the factor.
        iter_steps (list of int): the iterations where the rate drops,
            e.g. ``StepScheduler(0.1, 0.1, [150000, 300000, 400000])``.
    """

    def __init__(self, init_lr, gamma, iter_steps):
        self.init_lr = init_lr
        self.gamma = gamma
        self.iter_steps = iter_steps

    def get_learning_rate(self, iter):
        lr = self.init_lr
        for s in self.iter_steps:
            if iter >= s:
                lr *= self.gamma
        return lr


class LinearWarmupScheduler(BaseLearningRateScheduler):
    r"""Another scheduler's rate, ramped up linearly over the first
    ``warmup_iter`` iterations: multiplied by :math:`(i + 1) / i_{warmup}`
    while :math:`i < i_{warmup}`.

    Args:
        scheduler (BaseLearningRateScheduler): the schedule to warm up.
        warmup_iter (int): the length of the warm-up.
    """

    def __init__(self, scheduler, warmup_iter):
        self.scheduler = scheduler
        self.warmup_iter = warmup_iter

    def get_learning_rate(self, iter):
        lr = self.scheduler.get_learning_rate(iter)
        if iter < self.warmup_iter:
            lr *= (iter + 1) / self.warmup_iter
        return lr
