"""The runnable examples train to their advertised accuracy, quickly."""
import subprocess
import sys
import time

import pytest

pytest.importorskip('sklearn')


def test_digits_mlp_reaches_90_percent():
    from nncy.examples import digits
    start = time.perf_counter()
    acc = digits.main(['--epochs', '8', '--quiet'])
    assert acc >= 0.9, acc
    assert time.perf_counter() - start < 60


def test_digits_runs_as_module(py_env):
    r = subprocess.run([sys.executable, '-m', 'nncy.examples.digits', '--epochs', '2'],
                       capture_output=True, text=True, timeout=120, env=py_env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'epoch  1' in r.stdout and 'test accuracy:' in r.stdout
