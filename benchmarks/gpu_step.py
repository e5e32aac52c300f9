"""One training step of a small ResNet on the GPU: nncy (cudnn context)
against the same model in PyTorch on the same GPU, in one process.

    python -m benchmarks.gpu_step [--repeat 100] [--batch 64] [--width 64]
                                  (from the repository root)

The model: a 3x3 stem, two stages of two basic blocks (conv-BN-ReLU-conv-BN
plus the shortcut, a strided 1x1 convolution where the shape changes), global
average pooling and a dense layer, on (batch, 3, 32, 32) inputs with 10
classes; the step is forward, zero_grad, backward and a momentum-SGD update.
Each step is timed to the end of its GPU work; the libraries take turns in
blocks of steps.  Prints the medians and the ratio nncy / PyTorch (below 1.0:
nncy is faster).  Needs CuPy and a GPU; PyTorch is optional.
"""
import argparse

import numpy as np

from benchmarks.train_step import print_times, take_turns, try_torch

CLASSES = 10


def data(batch, size=32, seed=0):
    r = np.random.RandomState(seed)
    x = r.randn(batch, 3, size, size).astype(np.float32)
    t = r.randint(0, CLASSES, (batch, 1)).astype(np.int32)
    return x, t


def plan(width):
    """(in channels, out channels, stride) of each basic block."""
    return [(width, width, 1), (width, width, 1), (width, 2 * width, 2), (2 * width, 2 * width, 1)]


def nncy_step(x_data, t_data, width=64, ctx_name='cudnn', lr=0.05):
    """A function running one nncy training step; returns the loss Variable."""
    import nncy as nn
    import nncy.functions as F
    import nncy.parametric_functions as PF
    import nncy.solvers as S
    from nncy.cuda import cupy
    from nncy.ext_utils import get_extension_context

    nn.clear_parameters()
    nn.seed(0)
    ctx = get_extension_context(ctx_name)

    def conv_bn(h, c, k, stride, name, relu=True):
        pad = (k // 2, k // 2)
        h = PF.convolution(h, c, (k, k), pad=pad, stride=(stride, stride), with_bias=False,
                           name=name + '/conv')
        h = PF.batch_normalization(h, batch_stat=True, name=name + '/bn')
        return F.relu(h) if relu else h

    with nn.context_scope(ctx):
        x = nn.Variable.from_numpy_array(x_data)
        t = nn.Variable.from_numpy_array(t_data)
        h = conv_bn(x, width, 3, 1, 'stem')
        for i, (cin, cout, s) in enumerate(plan(width)):
            r = conv_bn(h, cout, 3, s, 'b%d/a' % i)
            r = conv_bn(r, cout, 3, 1, 'b%d/b' % i, relu=False)
            sc = h if (cin, s) == (cout, 1) else conv_bn(h, cout, 1, s, 'b%d/sc' % i, False)
            h = F.relu(F.add2(r, sc))
        h = F.global_average_pooling(h)
        loss = F.mean(F.softmax_cross_entropy(PF.affine(h, CLASSES, name='fc'), t))
    solver = S.Momentum(lr, 0.9)
    solver.set_parameters(nn.get_parameters())
    sync = cupy().cuda.Device().synchronize

    def step():
        loss.forward(clear_no_need_grad=True)
        solver.zero_grad()
        loss.backward(clear_buffer=True)
        solver.update()
        sync()
        return loss
    return step


def torch_step(torch, x_data, t_data, width=64, lr=0.05):
    nnt = torch.nn
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    dev = torch.device('cuda')

    def conv_bn(cin, cout, k, s, relu=True):
        layers = [nnt.Conv2d(cin, cout, k, stride=s, padding=k // 2, bias=False),
                  nnt.BatchNorm2d(cout)]
        return nnt.Sequential(*(layers + [nnt.ReLU()] if relu else layers))

    class Block(nnt.Module):
        def __init__(self, cin, cout, s):
            super().__init__()
            self.a, self.b = conv_bn(cin, cout, 3, s), conv_bn(cout, cout, 3, 1, False)
            self.sc = nnt.Identity() if (cin, s) == (cout, 1) else conv_bn(cin, cout, 1, s, False)

        def forward(self, h):
            return torch.relu(self.b(self.a(h)) + self.sc(h))

    model = nnt.Sequential(conv_bn(3, width, 3, 1), *[Block(*b) for b in plan(width)],
                           nnt.AdaptiveAvgPool2d(1), nnt.Flatten(),
                           nnt.Linear(2 * width, CLASSES)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr, momentum=0.9)
    loss_fn = nnt.CrossEntropyLoss()
    x = torch.from_numpy(x_data).to(dev)
    t = torch.from_numpy(t_data[:, 0].astype(np.int64)).to(dev)

    def step():
        loss = loss_fn(model(x), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        torch.cuda.synchronize()
        return loss
    return step


def try_torch_cuda():
    torch = try_torch()
    return torch if torch is not None and torch.cuda.is_available() else None


def compare(repeat=100, batch=64, width=64, warmup=10, block=10):
    """{'nncy': median s, 'torch': median s or None, 'torch_version'}."""
    x, t = data(batch)
    steps = {'nncy': nncy_step(x, t, width)}
    torch = try_torch_cuda()
    if torch is not None:
        steps['torch'] = torch_step(torch, x, t, width)
    out = take_turns(steps, repeat, warmup, block, settle=1)
    out.setdefault('torch', None)
    out['torch_version'] = torch.__version__ if torch is not None else None
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--repeat', type=int, default=100)
    ap.add_argument('--batch', type=int, default=64)
    ap.add_argument('--width', type=int, default=64)
    a = ap.parse_args(argv)
    r = compare(a.repeat, a.batch, a.width)
    print('ResNet-style training step on the GPU, batch %d, width %d, median of %d; '
          'PyTorch %s' % (a.batch, a.width, a.repeat, r['torch_version'] or 'not available'))
    print_times(r)


if __name__ == '__main__':
    main()
