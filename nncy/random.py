"""The global random generator (NNabla's ``nn.random``)."""
import numpy as np

prng = np.random.RandomState(313)


def seed(s):
    """Reset the global generator, so random functions with ``seed=-1`` and
    initializers repeat their draws."""
    global prng
    prng = np.random.RandomState(s)
