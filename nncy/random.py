"""The global random generator (NNabla's ``nn.random``).

Every stream is a counter-based Philox generator (through NumPy's
``RandomState`` interface): a stream is a key and a counter, so streams can be
split or continued on another device without replaying them."""
import numpy as np


def generator(seed):
    """A RandomState-compatible generator on Philox, keyed by ``seed``."""
    return np.random.RandomState(np.random.Philox(seed))


prng = generator(313)


def seed(s):
    """Reset the global generator, so random functions with ``seed=-1`` and
    initializers repeat their draws."""
    global prng
    prng = generator(s)
