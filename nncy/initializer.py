"""Parameter initializers (``import nncy.initializer as I``), as in NNabla.

An initializer is a callable taking a shape and returning a NumPy array of
that shape (float32, except :class:`UniformIntInitializer`); parametric
functions call it to fill a new parameter.  Random initializers draw from
``rng`` (a ``numpy.random.RandomState``) or, when none is given, from the
global generator ``nncy.random.prng`` as it is at the time of the call (so
``nn.seed(s)`` makes later initializations repeat).

The ``calc_*`` helpers give the scales of the common schemes for a layer with
``inmaps`` inputs, ``outmaps`` outputs and a convolution ``kernel``.
"""
import numpy as np

from nncy import random as _random

__all__ = ['BaseInitializer', 'ConstantInitializer', 'NormalInitializer', 'UniformInitializer',
           'UniformIntInitializer', 'RangeInitializer', 'OrthogonalInitializer',
           'WeightNormalizationScaleInitializer', 'calc_normal_std_he_forward',
           'calc_normal_std_he_backward', 'calc_normal_std_glorot', 'calc_uniform_lim_glorot']


def _shape(shape, who):
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError('%s: shape must be a sequence of int, got %r' % (who, shape)) from None
    if any(s < 0 for s in shape):
        raise ValueError('%s: shape must not have negative sizes, got %s' % (who, shape))
    return shape


class BaseInitializer:
    """Base of the initializers: ``initializer(shape) -> numpy.ndarray``."""

    def __call__(self, shape):
        raise NotImplementedError('%s must define __call__(shape)' % type(self).__name__)

    def __repr__(self):
        return '%s()' % type(self).__name__


class _Random(BaseInitializer):
    """An initializer drawing from ``rng``, or from the global generator."""

    def __init__(self, rng=None):
        self._rng = rng

    @property
    def rng(self):
        return _random.prng if self._rng is None else self._rng

    @rng.setter
    def rng(self, value):
        self._rng = value


class ConstantInitializer(BaseInitializer):
    """Every element equals ``value``.

    Args:
        value (float): the constant (default 0).
    """

    def __init__(self, value=0):
        self.value = value

    def __repr__(self):
        return 'ConstantInitializer(%r)' % (self.value,)

    def __call__(self, shape):
        return np.full(_shape(shape, 'ConstantInitializer'), self.value, dtype=np.float32)


class NormalInitializer(_Random):
    r"""Normal samples :math:`x \sim \mathcal{N}(0, \sigma^2)`.

    Args:
        sigma (float): standard deviation :math:`\sigma`.
        rng (numpy.random.RandomState): generator (default: ``nncy.random.prng``).
    """

    def __init__(self, sigma=1.0, rng=None):
        super().__init__(rng)
        self.sigma = sigma

    def __repr__(self):
        return 'NormalInitializer(%r)' % (self.sigma,)

    def __call__(self, shape):
        shape = _shape(shape, 'NormalInitializer')
        return np.asarray(self.rng.randn(*shape) * self.sigma, dtype=np.float32)


class UniformInitializer(_Random):
    r"""Uniform samples :math:`x \sim \mathcal{U}(a, b)`.

    Args:
        lim (tuple of float): the interval :math:`(a, b)` (default (-1, 1)).
        rng (numpy.random.RandomState): generator (default: ``nncy.random.prng``).
    """

    def __init__(self, lim=(-1, 1), rng=None):
        super().__init__(rng)
        self.lim = lim

    def __repr__(self):
        return 'UniformInitializer(%r)' % (self.lim,)

    def __call__(self, shape):
        shape = _shape(shape, 'UniformInitializer')
        return np.asarray(self.rng.uniform(self.lim[0], self.lim[1], size=shape), dtype=np.float32)


class UniformIntInitializer(_Random):
    r"""Uniform integers :math:`x \in [a, b)` (an integer array).

    Args:
        lim (tuple of int): the range :math:`[a, b)` (default (0, 10)).
        rng (numpy.random.RandomState): generator (default: ``nncy.random.prng``).
    """

    def __init__(self, lim=(0, 10), rng=None):
        super().__init__(rng)
        self.lim = lim

    def __repr__(self):
        return 'UniformIntInitializer(%r)' % (self.lim,)

    def __call__(self, shape):
        shape = _shape(shape, 'UniformIntInitializer')
        return self.rng.randint(self.lim[0], self.lim[1], size=shape)


class RangeInitializer(BaseInitializer):
    r"""A ramp along the last axis, repeated over the others:
    :math:`x[\ldots, i] = \mathrm{start} + \mathrm{step} \cdot i`.

    Args:
        start (float): value at index 0.
        step (float): increment per index.
    """

    def __init__(self, start=0, step=1):
        self.start = start
        self.step = step

    def __repr__(self):
        return 'RangeInitializer(%r, %r)' % (self.start, self.step)

    def __call__(self, shape):
        shape = _shape(shape, 'RangeInitializer')
        if not shape:
            return np.array(self.start, dtype=np.float32)
        ramp = self.start + np.arange(shape[-1], dtype=np.float64) * self.step
        return np.array(np.broadcast_to(ramp.astype(np.float32), shape))


class OrthogonalInitializer(_Random):
    r"""A (semi-)orthogonal matrix (Saxe et al.): the array seen as
    ``(shape[0], prod(shape[1:]))`` has orthonormal rows or columns, times ``gain``.

    Args:
        gain (float): scale (e.g. :math:`\sqrt 2` for ReLU units).
        rng (numpy.random.RandomState): generator (default: ``nncy.random.prng``).
    """

    def __init__(self, gain=1.0, rng=None):
        super().__init__(rng)
        self.gain = gain

    def __repr__(self):
        return 'OrthogonalInitializer(%r)' % (self.gain,)

    def __call__(self, shape):
        shape = _shape(shape, 'OrthogonalInitializer')
        if len(shape) < 2:
            raise ValueError('OrthogonalInitializer: shape must have at least 2 dimensions, got %s'
                             % (shape,))
        flat = (shape[0], int(np.prod(shape[1:])))
        a = self.rng.normal(0.0, 1.0, flat)
        u, _, vt = np.linalg.svd(a, full_matrices=False)
        q = u if u.shape == flat else vt
        return np.asarray(q.reshape(shape) * self.gain, dtype=np.float32)


class WeightNormalizationScaleInitializer(BaseInitializer):
    """The L2 norm of each output kernel of ``w`` (the scale that makes weight
    normalization start from the initial weights).

    Args:
        w (Variable): the weight.
        dim (int): the output axis of ``w``.
        eps (float): added under the square root.
    """

    def __init__(self, w, dim=0, eps=1e-12):
        self.w = w
        self.dim = dim
        self.eps = eps

    def __call__(self, shape):
        d = np.asarray(self.w.d, dtype=np.float64)
        axes = tuple(a for a in range(d.ndim) if a != self.dim % max(d.ndim, 1))
        return np.asarray(np.sqrt(np.sum(d ** 2, axis=axes) + self.eps), dtype=np.float32)


def _k(kernel):
    return float(np.prod(kernel)) if len(kernel) else 1.0


def calc_normal_std_he_forward(inmaps, outmaps, kernel=(1, 1)):
    r"""He et al.'s standard deviation for the forward pass:
    :math:`\sigma = \sqrt{2 / (N K)}` with :math:`N` = ``inmaps`` and
    :math:`K` = the product of ``kernel`` (1 for an affine layer)."""
    return float(np.sqrt(2.0 / (_k(kernel) * inmaps)))


def calc_normal_std_he_backward(inmaps, outmaps, kernel=(1, 1)):
    r"""He et al.'s standard deviation for the backward pass:
    :math:`\sigma = \sqrt{2 / (M K)}` with :math:`M` = ``outmaps``."""
    return float(np.sqrt(2.0 / (_k(kernel) * outmaps)))


def calc_normal_std_glorot(inmaps, outmaps, kernel=(1, 1)):
    r"""Glorot and Bengio's standard deviation:
    :math:`\sigma = \sqrt{2 / (K (N + M))}`."""
    return float(np.sqrt(2.0 / (_k(kernel) * (inmaps + outmaps))))


def calc_uniform_lim_glorot(inmaps, outmaps, kernel=(1, 1)):
    r"""Glorot and Bengio's uniform interval :math:`(-b, b)` with
    :math:`b = \sqrt{6 / (K (N + M))}`."""
    d = float(np.sqrt(6.0 / (_k(kernel) * (inmaps + outmaps))))
    return -d, d
