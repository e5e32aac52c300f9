"""The ``nncy`` command line (run as ``python -m nncy.cli`` in a subprocess)."""
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import nncy as nn
import nncy.functions as F
from nncy.parameter import get_parameter_or_create
from nncy.utils.save import save

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def model(tmp_path):
    """An MLP saved as .nnp (nntxt + h5), with its input and reference output."""
    nn.clear_parameters()
    rng = np.random.RandomState(3)
    x = nn.Variable((3, 4))
    with nn.parameter_scope('l1'):
        w = get_parameter_or_create('W', (4, 6), rng.randn(4, 6).astype(np.float32))
        b = get_parameter_or_create('b', (6,), rng.randn(6).astype(np.float32))
    with nn.parameter_scope('l2'):
        w2 = get_parameter_or_create('W', (6, 2), rng.randn(6, 2).astype(np.float32))
    y = F.affine(F.sigmoid(F.affine(x, w, b)), w2)
    x.d = rng.randn(3, 4)
    y.forward()
    path = str(tmp_path / 'mlp.nnp')
    save(path, {'networks': [{'name': 'mlp', 'batch_size': 3, 'names': {'x': x},
                              'outputs': {'y': y}}],
                'executors': [{'name': 'run', 'network': 'mlp', 'data': ['x'],
                               'output': ['y']}]})
    nn.clear_parameters()
    return path, x.d.copy(), y.d.copy()


def cli(py_env, *args, ok=True):
    r = subprocess.run([sys.executable, '-m', 'nncy.cli'] + [str(a) for a in args],
                       env=py_env, capture_output=True, text=True, timeout=120)
    if ok:
        assert r.returncode == 0, r.stderr
    return r


def test_help_and_entry_point(py_env):
    r = cli(py_env, '--help')
    for cmd in ('infer', 'dump', 'convert'):
        assert cmd in r.stdout
    import tomllib
    with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
        meta = tomllib.load(f)
    assert meta['project']['scripts']['nncy'] == 'nncy.cli:main'
    r = cli(py_env, ok=False)
    assert r.returncode == 2


def test_infer_npy_and_csv(tmp_path, py_env, model):
    path, xd, yd = model
    np.save(tmp_path / 'x.npy', xd)
    cli(py_env, 'infer', path, '--input', tmp_path / 'x.npy', '--output', tmp_path / 'y.npy')
    np.testing.assert_allclose(np.load(tmp_path / 'y.npy'), yd, rtol=1e-6, atol=1e-6)
    # CSV in (one sample per row, any number of rows) and out, by name
    np.savetxt(tmp_path / 'x.csv', xd[:2], delimiter=',', fmt='%.9g')
    cli(py_env, 'infer', path, '-i', 'x=%s' % (tmp_path / 'x.csv'), '-o', tmp_path / 'y.csv')
    got = np.loadtxt(tmp_path / 'y.csv', delimiter=',', ndmin=2)
    np.testing.assert_allclose(got, yd[:2], rtol=1e-6, atol=1e-6)
    # no --output: printed
    r = cli(py_env, 'infer', path, '-i', tmp_path / 'x.npy')
    lines = r.stdout.strip().splitlines()
    assert lines[0] == '# y (3, 2)'
    np.testing.assert_allclose(np.array([[float(v) for v in ln.split(',')] for ln in lines[1:]]),
                               yd, rtol=1e-6, atol=1e-6)


def test_infer_errors_exit_1_without_traceback(tmp_path, py_env, model):
    path, xd, _ = model
    np.save(tmp_path / 'bad.npy', np.zeros((3, 5), np.float32))
    r = cli(py_env, 'infer', path, '-i', tmp_path / 'bad.npy', ok=False)
    assert r.returncode == 1 and "input 'x' has shape" in r.stderr
    assert 'Traceback' not in r.stderr
    r = cli(py_env, 'infer', path, '-i', tmp_path / 'missing.npy', ok=False)
    assert r.returncode == 1 and 'no such file' in r.stderr
    # .npy files holding Python objects are refused (no unpickling)
    np.save(tmp_path / 'obj.npy', np.array([{'a': 1}], dtype=object), allow_pickle=True)
    r = cli(py_env, 'infer', path, '-i', tmp_path / 'obj.npy', ok=False)
    assert r.returncode == 1 and 'obj.npy' in r.stderr and 'Traceback' not in r.stderr
    (tmp_path / 'trunc.nnp').write_bytes(open(path, 'rb').read()[:100])
    r = cli(py_env, 'infer', tmp_path / 'trunc.nnp', '-i', tmp_path / 'bad.npy', ok=False)
    assert r.returncode == 1 and 'not a valid .nnp' in r.stderr
    np.save(tmp_path / 'x.npy', xd)
    r = cli(py_env, 'infer', path, '-i', tmp_path / 'x.npy', '-o', tmp_path / 'a.npy',
            '-o', tmp_path / 'b.npy', ok=False)
    assert r.returncode == 1 and '2 --output paths' in r.stderr


def test_dump(py_env, model):
    path, _, _ = model
    out = cli(py_env, 'dump', path).stdout
    assert "network 'mlp' (batch size 3)" in out
    assert 'inputs:  x (-1, 4)' in out and 'outputs: y (-1, 2)' in out
    assert 'Affine (Affine): x, l1/W, l1/b -> Affine_Output  [base_axis: 1]' in out
    assert "executor 'run'" in out
    assert 'l1/W  (4, 6) float32' in out
    info = json.loads(cli(py_env, 'dump', path, '--json').stdout)
    assert [p['name'] for p in info['parameters']] == ['l1/W', 'l1/b', 'l2/W']
    assert info['networks'][0]['outputs'] == ['y']


def test_convert_between_forms(tmp_path, py_env, model):
    path, xd, yd = model
    np.save(tmp_path / 'x.npy', xd)
    # .nnp -> .nntxt + .h5 -> .protobuf (one file) -> .nnp with protobuf parts
    cli(py_env, 'convert', path, tmp_path / 'net.nntxt')
    assert (tmp_path / 'net.h5').exists()
    cli(py_env, 'convert', tmp_path / 'net.nntxt', tmp_path / 'net.h5', tmp_path / 'all.protobuf')
    cli(py_env, 'convert', tmp_path / 'all.protobuf', tmp_path / 'pb.nnp',
        '--parameter-format', '.protobuf', '--network-format', '.protobuf')
    with zipfile.ZipFile(tmp_path / 'pb.nnp') as z:
        assert sorted(z.namelist()) == ['network.protobuf', 'nnp_version.txt',
                                        'parameter.protobuf']
    cli(py_env, 'convert', tmp_path / 'pb.nnp', tmp_path / 'back.nnp')
    with zipfile.ZipFile(tmp_path / 'back.nnp') as z:
        assert sorted(z.namelist()) == ['network.nntxt', 'nnp_version.txt', 'parameter.h5']
    for src in (['all.protobuf'], ['pb.nnp'], ['back.nnp'], ['net.nntxt', 'net.h5']):
        out = tmp_path / 'y.npy'
        cli(py_env, 'infer', *[tmp_path / s for s in src], '-i', tmp_path / 'x.npy', '-o', out)
        np.testing.assert_allclose(np.load(out), yd, rtol=1e-6, atol=1e-6)
    # an input of a type convert does not read: error, nothing written
    r = cli(py_env, 'convert', tmp_path / 'net.nntxt', tmp_path / 'x.npy', tmp_path / 'o.nnp',
            ok=False)
    assert r.returncode == 1 and 'unsupported file type' in r.stderr
    assert not (tmp_path / 'o.nnp').exists()
