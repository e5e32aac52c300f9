"""The runnable examples train to their advertised accuracy, quickly."""
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip('sklearn')


def test_digits_mlp_reaches_90_percent():
    from nncy.examples import digits
    start = time.perf_counter()
    acc = digits.main(['--model', 'mlp', '--epochs', '8', '--quiet'])
    assert acc >= 0.9, acc
    assert time.perf_counter() - start < 60


def test_digits_runs_as_module(py_env):
    r = subprocess.run([sys.executable, '-m', 'nncy.examples.digits', '--model', 'mlp',
                        '--epochs', '2'],
                       capture_output=True, text=True, timeout=120, env=py_env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'epoch  1' in r.stdout and 'test accuracy:' in r.stdout


def test_digits_lenet_reaches_97_percent_and_saves(tmp_path):
    import nncy as nn
    from nncy.examples import digits
    path = str(tmp_path / 'lenet.h5')
    start = time.perf_counter()
    model = str(tmp_path / 'lenet.nnp')
    acc = digits.main(['--epochs', '8', '--quiet', '--save', path, '--nnp', model])
    assert acc >= 0.97, acc
    assert time.perf_counter() - start < 120
    saved = {k: v.d.copy() for k, v in nn.get_parameters(grad_only=False).items()}
    assert 'conv1/conv/W' in saved and 'conv1/bn/mean' in saved and 'fc2/b' in saved
    nn.clear_parameters()
    nn.load_parameters(path)
    loaded = nn.get_parameters(grad_only=False)
    assert set(loaded) == set(saved)
    for k, v in saved.items():
        np.testing.assert_array_equal(loaded[k].d, v)

    # the saved model runs on the CPU runtime and through the command line
    from nncy import runtime
    x_test = digits.load_data(0)[2][:5]
    outs = [runtime.load(model).run(x=x_test[i:i + 1])['y'] for i in range(5)]
    xe = nn.Variable((5, 64))
    ye = digits.lenet(xe, test=True)
    xe.d = x_test
    ye.forward()
    np.testing.assert_allclose(np.concatenate(outs), ye.d, rtol=1e-5, atol=1e-5)
    np.save(str(tmp_path / 'x.npy'), x_test[:1])
    r = subprocess.run([sys.executable, '-m', 'nncy.cli', 'infer', model, '--input',
                        str(tmp_path / 'x.npy'), '--output', str(tmp_path / 'y.npy')],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    np.testing.assert_allclose(np.load(str(tmp_path / 'y.npy')), outs[0], rtol=1e-5,
                               atol=1e-5)
