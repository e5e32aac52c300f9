"""asv suite: one training step of the digits LeNet (forward, zero_grad,
backward, Adam update), in nncy and, when PyTorch is installed, in PyTorch
with the same model and thread count (see ``benchmarks/train_step.py``), so
that one run gives the nncy / PyTorch ratio."""
from benchmarks import train_step


class TimeTrainStep:
    params = (['nncy', 'torch'],)
    param_names = ['library']

    def setup(self, library):
        x, t = train_step.data(64)
        if library == 'nncy':
            self.step = train_step.nncy_step(x, t)
        else:
            torch = train_step.try_torch()
            if torch is None:
                raise NotImplementedError('PyTorch is not installed')
            from nncy import _kernels
            torch.set_num_threads(_kernels.num_threads())
            self.step = train_step.torch_step(torch, x, t)
        for _ in range(5):
            self.step()

    def time_step(self, library):
        self.step()
