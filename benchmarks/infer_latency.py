"""Batch-1 inference latency of a small model: nncy.runtime against onnxruntime.

    python -m benchmarks.infer_latency [--number N] [--repeat R] [--threads T]
    python benchmarks/infer_latency.py ...                 (with nncy installed)

The model is an MLP (784 -> 256 -> 256 -> 10, ReLU, softmax) with random
weights.  It is built with nncy and saved as .nnp (protobuf parameters), then
run by ``nncy.runtime``; where ``onnx`` and ``onnxruntime`` are installed the
same model with the same weights is built with the ``onnx`` helper API and run
by an onnxruntime CPU session in the same process.  Both get the same
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

SIZES = (784, 256, 256, 10)


def weights(seed=0):
    r = np.random.RandomState(seed)
    out = []
    for a, b in zip(SIZES[:-1], SIZES[1:]):
        out.append(((r.randn(a, b) / np.sqrt(a)).astype(np.float32),
                    (r.randn(b) * 0.1).astype(np.float32)))
    return out


def nncy_model(ws, path):
    import nncy as nn
    import nncy.functions as F
    from nncy import runtime
    from nncy.parameter import get_parameter_or_create
    from nncy.utils.save import save
    nn.clear_parameters()
    x = nn.Variable((1, SIZES[0]))
    h = x
    for i, (w, b) in enumerate(ws):
        with nn.parameter_scope('fc%d' % i):
            W = get_parameter_or_create('W', w.shape, w)
            B = get_parameter_or_create('b', b.shape, b)
        h = F.affine(h, W, B)
        h = F.relu(h) if i < len(ws) - 1 else F.softmax(h)
    save(path, {'networks': [{'name': 'mlp', 'batch_size': 1, 'names': {'x': x},
                              'outputs': {'y': h}}],
                'executors': [{'name': 'infer', 'network': 'mlp', 'data': ['x'],
                               'output': ['y']}]}, parameter_format='.protobuf')
    nn.clear_parameters()
    model = runtime.load(path)
    return lambda xd: model.run(xd)['y']


def onnx_model(ws, threads):
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
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
    graph = helper.make_graph(
        nodes, 'mlp',
        [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, SIZES[0]])],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, SIZES[-1]])], inits)
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--number', type=int, default=200, help='calls per timing')
    p.add_argument('--repeat', type=int, default=30, help='timings (the median is shown)')
    p.add_argument('--threads', type=int, default=1)
    a = p.parse_args(argv)
    os.environ.setdefault('NNCY_NUM_THREADS', str(a.threads))
    ws = weights()
    xd = np.random.RandomState(1).randn(1, SIZES[0]).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        run_nncy = nncy_model(ws, os.path.join(d, 'mlp.nnp'))
    run_ort = onnx_model(ws, a.threads)
    print('model: MLP %s, batch 1, %d thread(s); median of %d x %d calls'
          % ('-'.join(map(str, SIZES)), a.threads, a.repeat, a.number))
    if run_ort is None:
        t_nncy = median_us(lambda: run_nncy(xd), a.number, a.repeat)
        print('nncy.runtime   %8.1f us/call' % t_nncy)
        print('onnxruntime    not installed (pip install onnx onnxruntime): no ratio')
        return 0
    # Interleaved: each repeat times both, so that load on the shared machine
    # hits both alike; the ratio is the median of the per-repeat ratios.
    fa, fb = (lambda: run_nncy(xd)), (lambda: run_ort(xd))
    fa(), fb()
    ta, tb = [], []
    for _ in range(a.repeat):
        ta.append(timeit.timeit(fa, number=a.number) / a.number * 1e6)
        tb.append(timeit.timeit(fb, number=a.number) / a.number * 1e6)
    diff = float(np.abs(run_nncy(xd) - run_ort(xd)).max())
    print('nncy.runtime   %8.1f us/call' % statistics.median(ta))
    print('onnxruntime    %8.1f us/call' % statistics.median(tb))
    print('ratio nncy / onnxruntime: %.2f  (median of per-repeat ratios; max |difference| '
          'of outputs %.2g)' % (statistics.median(x / y for x, y in zip(ta, tb)), diff))
    return 0


if __name__ == '__main__':
    if __package__ in (None, ''):
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
