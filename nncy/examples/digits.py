"""Train a classifier on scikit-learn's bundled 8x8 digits (nothing is downloaded).

    python -m nncy.examples.digits                      # LeNet-style CNN, Adam
    python -m nncy.examples.digits --model mlp          # MLP, plain SGD loop

``--model lenet`` (the default) builds convolution, batch normalization,
pooling and affine layers with ``nncy.parametric_functions``, trains them with
``nncy.solvers.Adam`` and saves the parameters (``--save``, default
``digits_lenet.h5``).  ``--model mlp`` is 64 -> hidden -> 10 (``F.affine`` +
``F.relu``) on parameters held in plain ``nn.Variable``s, updated by hand with
SGD and momentum.  Either way the training graph is built once and re-run for
every minibatch by writing into its input Variables; ``main()`` returns the
test accuracy.
"""
import argparse
import time

import numpy as np

import nncy as nn
import nncy.functions as F
import nncy.parametric_functions as PF
import nncy.solvers as S


def load_data(seed=0, test_fraction=0.2):
    """(x_train, t_train, x_test, t_test): features scaled to [0, 1], labels (N, 1) int."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover
        raise SystemExit('this example needs scikit-learn (pip install scikit-learn)') from e
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    t = digits.target.astype(np.int32).reshape(-1, 1)
    order = np.random.RandomState(seed).permutation(len(x))
    n_test = int(len(x) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return x[train], t[train], x[test], t[test]


def init_params(n_in, n_hidden, n_out, rng):
    """He-initialised weights and zero biases, as Variables that need gradients."""
    def var(a):
        return nn.Variable.from_numpy_array(a.astype(np.float32), need_grad=True)
    return {
        'w1': var(rng.randn(n_in, n_hidden) * np.sqrt(2.0 / n_in)),
        'b1': var(np.zeros(n_hidden)),
        'w2': var(rng.randn(n_hidden, n_out) * np.sqrt(1.0 / n_hidden)),
        'b2': var(np.zeros(n_out)),
    }


def mlp(x, p):
    h = F.relu(F.affine(x, p['w1'], p['b1']))
    return F.affine(h, p['w2'], p['b2'])


def accuracy(p, x_data, t_data):
    x = nn.Variable.from_numpy_array(x_data)
    y = mlp(x, p)
    y.forward(clear_buffer=True)
    return float(np.mean(np.argmax(y.d, axis=1) == t_data[:, 0]))


def lenet(x, test=False):
    """conv 5x5 (16) - BN - ReLU - maxpool - conv 3x3 (32) - BN - ReLU - maxpool -
    affine 64 - ReLU - affine 10, on (N, 1, 8, 8) images."""
    h = F.reshape(x, (x.shape[0], 1, 8, 8))
    with nn.parameter_scope('conv1'):
        h = PF.convolution(h, 16, (5, 5), pad=(2, 2), with_bias=False)
        h = F.max_pooling(F.relu(PF.batch_normalization(h, batch_stat=not test)), (2, 2))
    with nn.parameter_scope('conv2'):
        h = PF.convolution(h, 32, (3, 3), pad=(1, 1), with_bias=False)
        h = F.max_pooling(F.relu(PF.batch_normalization(h, batch_stat=not test)), (2, 2))
    h = F.relu(PF.affine(h, 64, name='fc1'))
    return PF.affine(h, 10, name='fc2')


def train_lenet(a, data):
    x_train, t_train, x_test, t_test = data
    nn.clear_parameters()
    nn.seed(a.seed)
    rng = np.random.RandomState(a.seed)
    x = nn.Variable((a.batch_size, x_train.shape[1]))
    t = nn.Variable((a.batch_size, 1))
    loss = F.mean(F.softmax_cross_entropy(lenet(x), t))
    xe = nn.Variable(x_test.shape)
    ye = lenet(xe, test=True)          # shares the parameters, running statistics
    solver = S.Adam(a.lr if a.lr is not None else 2e-3)
    solver.set_parameters(nn.get_parameters())

    def accuracy():
        xe.d = x_test
        ye.forward(clear_buffer=True)
        return float(np.mean(np.argmax(ye.d, axis=1) == t_test[:, 0]))

    start = time.perf_counter()
    n_batches = len(x_train) // a.batch_size
    for epoch in range(a.epochs):
        order = rng.permutation(len(x_train))
        total = 0.0
        for b in range(n_batches):
            idx = order[b * a.batch_size:(b + 1) * a.batch_size]
            x.d, t.d = x_train[idx], t_train[idx]
            loss.forward(clear_no_need_grad=True)
            solver.zero_grad()
            loss.backward(clear_buffer=True)
            solver.update()
            total += float(loss.d)
        if not a.quiet:
            print('epoch %2d  loss %.4f  test accuracy %.4f  (%.1fs)'
                  % (epoch + 1, total / n_batches, accuracy(), time.perf_counter() - start))
    acc = accuracy()
    if a.save:
        nn.save_parameters(a.save)
        if not a.quiet:
            print('saved parameters to %s' % a.save)
    if a.nnp:
        save_nnp(a.nnp)
        if not a.quiet:
            print('saved the inference model to %s (try: nncy infer %s --input x.npy)'
                  % (a.nnp, a.nnp))
    return acc


def save_nnp(path, batch_size=1):
    """The trained LeNet as an .nnp model: input 'x' (batch, 64) pixels in
    [0, 1], output 'y' (batch, 10) class scores."""
    from nncy.utils.save import save
    x = nn.Variable((batch_size, 64))
    y = lenet(x, test=True)
    save(path, {'networks': [{'name': 'lenet', 'batch_size': batch_size,
                              'outputs': {'y': y}, 'names': {'x': x}}],
                'executors': [{'name': 'infer', 'network': 'lenet',
                               'data': ['x'], 'output': ['y']}]})


def main(argv=None):
    ap = argparse.ArgumentParser(description='Train a classifier on the 8x8 digits with nncy.')
    ap.add_argument('--model', choices=('lenet', 'mlp'), default='lenet')
    ap.add_argument('--epochs', type=int, default=None,
                    help='default: 12 for lenet, 20 for mlp')
    ap.add_argument('--batch-size', type=int, default=32)
    ap.add_argument('--hidden', type=int, default=64)
    ap.add_argument('--lr', type=float, default=None,
                    help='default: 2e-3 (Adam) for lenet, 0.1 (SGD) for mlp')
    ap.add_argument('--momentum', type=float, default=0.9)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--save', default='digits_lenet.h5',
                    help='where the lenet parameters go ("" to skip)')
    ap.add_argument('--nnp', default='digits_lenet.nnp',
                    help='where the lenet inference model goes ("" to skip)')
    ap.add_argument('--quiet', action='store_true', help='print only the final accuracy')
    a = ap.parse_args(argv)
    if a.epochs is None:
        a.epochs = 12 if a.model == 'lenet' else 20
    if a.model == 'lenet':
        acc = train_lenet(a, load_data(a.seed))
        print('test accuracy: %.4f' % acc)
        return acc
    if a.lr is None:
        a.lr = 0.1

    rng = np.random.RandomState(a.seed)
    x_train, t_train, x_test, t_test = load_data(a.seed)
    params = init_params(x_train.shape[1], a.hidden, 10, rng)
    velocity = {k: np.zeros(v.shape, np.float32) for k, v in params.items()}

    # the training graph, built once
    x = nn.Variable((a.batch_size, x_train.shape[1]))
    t = nn.Variable.from_numpy_array(np.zeros((a.batch_size, 1), np.int32))
    loss = F.mean(F.softmax_cross_entropy(mlp(x, params), t))

    start = time.perf_counter()
    n_batches = len(x_train) // a.batch_size
    for epoch in range(a.epochs):
        order = rng.permutation(len(x_train))
        total = 0.0
        for b in range(n_batches):
            idx = order[b * a.batch_size:(b + 1) * a.batch_size]
            x.d = x_train[idx]
            t.d = t_train[idx]
            loss.forward(clear_no_need_grad=True)
            for p in params.values():
                p.grad.zero()
            loss.backward(clear_buffer=True)
            for k, p in params.items():
                v = velocity[k]
                v *= a.momentum
                v -= a.lr * p.g
                p.d += v
            total += float(loss.d)
        if not a.quiet:
            print('epoch %2d  loss %.4f  test accuracy %.4f  (%.1fs)'
                  % (epoch + 1, total / n_batches, accuracy(params, x_test, t_test),
                     time.perf_counter() - start))
    acc = accuracy(params, x_test, t_test)
    print('test accuracy: %.4f' % acc)
    return acc


if __name__ == '__main__':
    main()
