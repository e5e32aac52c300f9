"""Batch-1 inference latency of a small model: nncy.runtime against onnxruntime.

    python -m benchmarks.infer_latency [--model lenet|mlp] [--number N] [--repeat R] [--threads T]
    python benchmarks/infer_latency.py ...                 (with nncy installed)

Two models, both with random parameters:

- ``lenet`` (the default): the digits LeNet of ``nncy.examples.digits`` in
  inference mode, input (1, 64): reshape -> conv 5x5 (16, pad 2, no bias) ->
  batch normalization (running statistics) -> ReLU -> max pooling 2x2 ->
  conv 3x3 (32, pad 1) -> batch normalization -> ReLU -> max pooling ->
  affine 64 -> ReLU -> affine 10.  The running means and variances are
  random too, so that normalization is not an identity.
- ``mlp``: 784 -> 256 -> 256 -> 10, ReLU, softmax.

The model is built with nncy and saved as .nnp (protobuf parameters), then
run by ``nncy.runtime``; where ``onnx`` and ``onnxruntime`` are installed the
same model with the same weights is built with the ``onnx`` helper API and
run by an onnxruntime CPU session in the same process.  Both get the same
thread count (``--threads``, default 1, also set as NNCY_NUM_THREADS for
nncy; onnxruntime via its session options).  The script prints the median
time per call of each, the ratio nncy / onnxruntime, and the largest
difference between the two outputs.  Quote the ratio: the machines are
shared and absolute times are noisy (the two are timed in alternation).
"""
import argparse
import os
import statistics
import sys
import tempfile
import timeit

import numpy as np

MLP_SIZES = (784, 256, 256, 10)
BN_EPS = 1e-5


def _save(path, name, x, y):
    from nncy.utils.save import save
    save(path, {'networks': [{'name': name, 'batch_size': 1, 'names': {'x': x},
                              'outputs': {'y': y}}],
                'executors': [{'name': 'infer', 'network': name, 'data': ['x'],
                               'output': ['y']}]}, parameter_format='.protobuf')


def _load(path):
    from nncy import runtime
    model = runtime.load(path)
    return lambda xd: model.run(xd)['y']


# ---- MLP ------------------------------------------------------------------

def mlp_weights(seed=0):
    r = np.random.RandomState(seed)
    out = []
    for a, b in zip(MLP_SIZES[:-1], MLP_SIZES[1:]):
        out.append(((r.randn(a, b) / np.sqrt(a)).astype(np.float32),
                    (r.randn(b) * 0.1).astype(np.float32)))
    return out


def mlp_nncy(ws, path):
    import nncy as nn
    import nncy.functions as F
    from nncy.parameter import get_parameter_or_create
    nn.clear_parameters()
    x = nn.Variable((1, MLP_SIZES[0]))
    h = x
    for i, (w, b) in enumerate(ws):
        with nn.parameter_scope('fc%d' % i):
            W = get_parameter_or_create('W', w.shape, w)
            B = get_parameter_or_create('b', b.shape, b)
        h = F.affine(h, W, B)
        h = F.relu(h) if i < len(ws) - 1 else F.softmax(h)
    _save(path, 'mlp', x, h)
    nn.clear_parameters()
    return _load(path)


def mlp_onnx(ws):
    from onnx import helper, numpy_helper
    nodes, inits = [], []
    prev = 'x'
    for i, (w, b) in enumerate(ws):
        inits += [numpy_helper.from_array(w, 'W%d' % i), numpy_helper.from_array(b, 'b%d' % i)]
        nodes.append(helper.make_node('Gemm', [prev, 'W%d' % i, 'b%d' % i], ['g%d' % i]))
        act = 'Relu' if i < len(ws) - 1 else 'Softmax'
        out = 'y' if i == len(ws) - 1 else 'h%d' % i
        attrs = {'axis': 1} if act == 'Softmax' else {}
        nodes.append(helper.make_node(act, ['g%d' % i], [out], **attrs))
        prev = out
    return nodes, inits, [1, MLP_SIZES[0]], [1, MLP_SIZES[-1]]


# ---- LeNet ----------------------------------------------------------------

def lenet_weights(seed=0):
    """name -> array, with the shapes and names the digits LeNet gives them."""
    r = np.random.RandomState(seed)
    f = np.float32
    p = {}
    for scope, oc, ic, k in (('conv1', 16, 1, 5), ('conv2', 32, 16, 3)):
        p[scope + '/conv/W'] = (r.randn(oc, ic, k, k) / np.sqrt(ic * k * k)).astype(f)
        shape = (1, oc, 1, 1)
        p[scope + '/bn/beta'] = (r.randn(*shape) * 0.1).astype(f)
        p[scope + '/bn/gamma'] = (1 + r.randn(*shape) * 0.2).astype(f)
        p[scope + '/bn/mean'] = (r.randn(*shape) * 0.3).astype(f)
        p[scope + '/bn/var'] = r.uniform(0.3, 2.0, shape).astype(f)
    for name, a, b in (('fc1', 128, 64), ('fc2', 64, 10)):
        p[name + '/W'] = (r.randn(a, b) / np.sqrt(a)).astype(f)
        p[name + '/b'] = (r.randn(b) * 0.1).astype(f)
    return p


def lenet_nncy(ws, path):
    import nncy as nn
    from nncy.examples.digits import lenet
    nn.clear_parameters()
    x = nn.Variable((1, 64))
    y = lenet(x, test=True)
    params = nn.get_parameters(grad_only=False)
    if sorted(params) != sorted(ws):
        raise RuntimeError('the LeNet parameters are %s, expected %s'
                           % (sorted(params), sorted(ws)))
    for k, v in params.items():
        v.d = ws[k]
    _save(path, 'lenet', x, y)
    nn.clear_parameters()
    return _load(path)


def lenet_onnx(ws):
    from onnx import helper, numpy_helper
    inits = [numpy_helper.from_array(v.reshape(-1) if '/bn/' in k else v, k)
             for k, v in ws.items()]
    inits.append(numpy_helper.from_array(np.array([1, 1, 8, 8], np.int64), 'img'))
    node = helper.make_node
    nodes = [node('Reshape', ['x', 'img'], ['h0'])]
    prev = 'h0'
    for scope, pad in (('conv1', 2), ('conv2', 1)):
        nodes += [
            node('Conv', [prev, scope + '/conv/W'], [scope + 'c'], pads=[pad] * 4),
            node('BatchNormalization', [scope + 'c'] + [scope + '/bn/' + n for n in
                                                        ('gamma', 'beta', 'mean', 'var')],
                 [scope + 'n'], epsilon=BN_EPS),
            node('Relu', [scope + 'n'], [scope + 'r']),
            node('MaxPool', [scope + 'r'], [scope + 'p'], kernel_shape=[2, 2], strides=[2, 2]),
        ]
        prev = scope + 'p'
    nodes += [
        node('Flatten', [prev], ['f'], axis=1),
        node('Gemm', ['f', 'fc1/W', 'fc1/b'], ['g1']),
        node('Relu', ['g1'], ['h1']),
        node('Gemm', ['h1', 'fc2/W', 'fc2/b'], ['y']),
    ]
    return nodes, inits, [1, 64], [1, 10]


MODELS = {
    'lenet': ('LeNet (digits, 8x8, conv-BN-ReLU-pool x2, affine 64, 10)',
              lenet_weights, lenet_nncy, lenet_onnx, 64),
    'mlp': ('MLP %s' % '-'.join(map(str, MLP_SIZES)), mlp_weights, mlp_nncy, mlp_onnx,
            MLP_SIZES[0]),
}


def onnx_session(nodes, inits, in_shape, out_shape, threads):
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return None
    graph = helper.make_graph(
        nodes, 'model',
        [helper.make_tensor_value_info('x', TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT, out_shape)], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)])
    m.ir_version = min(m.ir_version, 9)
    onnx.checker.check_model(m)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=['CPUExecutionProvider'])
    return lambda xd: sess.run(['y'], {'x': xd})[0]


def median_us(fn, number, repeat):
    fn()
    return statistics.median(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def compare(model='lenet', threads=1, number=200, repeat=30):
    """{'nncy': µs per call, 'ort': µs or None, 'ratio': median of the
    per-repeat ratios or None, 'diff': max |difference| of the outputs}.
    Each repeat times both, so that load on a shared machine hits both alike."""
    _, make_weights, make_nncy, make_onnx, n_in = MODELS[model]
    ws = make_weights()
    xd = np.random.RandomState(1).rand(1, n_in).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        run_nncy = make_nncy(ws, os.path.join(d, model + '.nnp'))
    try:
        run_ort = onnx_session(*make_onnx(ws), threads)
    except ImportError:
        run_ort = None
    fa = lambda: run_nncy(xd)  # noqa: E731
    if run_ort is None:
        return {'nncy': median_us(fa, number, repeat), 'ort': None, 'ratio': None,
                'diff': None}
    fb = lambda: run_ort(xd)  # noqa: E731
    fa(), fb()
    ta, tb = [], []
    for _ in range(repeat):
        ta.append(timeit.timeit(fa, number=number) / number * 1e6)
        tb.append(timeit.timeit(fb, number=number) / number * 1e6)
    return {'nncy': statistics.median(ta), 'ort': statistics.median(tb),
            'ratio': statistics.median(x / y for x, y in zip(ta, tb)),
            'diff': float(np.abs(run_nncy(xd) - run_ort(xd)).max())}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--model', choices=sorted(MODELS), default='lenet')
    p.add_argument('--number', type=int, default=200, help='calls per timing')
    p.add_argument('--repeat', type=int, default=30, help='timings (the median is shown)')
    p.add_argument('--threads', type=int, default=1)
    a = p.parse_args(argv)
    os.environ.setdefault('NNCY_NUM_THREADS', str(a.threads))
    r = compare(a.model, a.threads, a.number, a.repeat)
    print('model: %s, batch 1, %d thread(s); median of %d x %d calls'
          % (MODELS[a.model][0], a.threads, a.repeat, a.number))
    print('nncy.runtime   %8.1f us/call' % r['nncy'])
    if r['ort'] is None:
        print('onnxruntime    not installed (pip install onnx onnxruntime): no ratio')
        return 0
    print('onnxruntime    %8.1f us/call' % r['ort'])
    print('ratio nncy / onnxruntime: %.2f  (median of per-repeat ratios; max |difference| '
          'of outputs %.2g)' % (r['ratio'], r['diff']))
    return 0


if __name__ == '__main__':
    if __package__ in (None, ''):
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
