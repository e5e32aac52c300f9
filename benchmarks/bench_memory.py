"""asv peak-memory benchmarks of training steps (``clear_no_need_grad`` forward,
``clear_buffer`` backward, solver update).  asv reports the process's peak
resident size during ``peakmem_step``; setup has already run one step, so the
solver's states and every buffer exist before the measurement starts.
``tests/test_memory.py`` bounds the same kind of step against its parameters,
kept activations and one workspace."""
import numpy as np

import nncy as nn
import nncy.functions as F
import nncy.parametric_functions as PF
import nncy.solvers as S


def _lenet(batch):
    from nncy.examples.digits import lenet
    x, t = nn.Variable((batch, 64)), nn.Variable((batch, 1))
    return x, t, F.mean(F.softmax_cross_entropy(lenet(x), t))


def _cnn(batch):
    """Two conv-BN-ReLU-pool blocks on 32x32 RGB images, then affine."""
    x, t = nn.Variable((batch, 3, 32, 32)), nn.Variable((batch, 1))
    h = x
    for i, c in enumerate((32, 64)):
        with nn.parameter_scope('c%d' % i):
            h = PF.convolution(h, c, (3, 3), pad=(1, 1), with_bias=False)
            h = F.max_pooling(F.relu(PF.batch_normalization(h)), (2, 2))
    return x, t, F.mean(F.softmax_cross_entropy(PF.affine(h, 10, name='fc'), t))


MODELS = {'lenet': (_lenet, 64), 'cnn': (_cnn, 64)}


class PeakmemTrainStep:
    params = (list(MODELS), ['Sgd', 'Adam'])
    param_names = ['model', 'solver']

    def setup(self, model, solver):
        nn.clear_parameters()
        build, batch = MODELS[model]
        self.x, self.t, self.loss = build(batch)
        self.solver = getattr(S, solver)()
        self.solver.set_parameters(nn.get_parameters())
        rng = np.random.RandomState(0)
        self.x.d = rng.rand(*self.x.shape)
        self.t.d = rng.randint(0, 10, self.t.shape)
        self.step()

    def step(self):
        self.loss.forward(clear_no_need_grad=True)
        self.solver.zero_grad()
        self.loss.backward(clear_buffer=True)
        self.solver.update()

    def peakmem_step(self, model, solver):
        self.step()
