"""nn.save_parameters / nn.load_parameters in NNabla's .h5 and .protobuf layouts."""
import io
import os

import numpy as np
import pytest

import nncy as nn
from nncy.parameter import get_parameter_or_create, get_parameters


@pytest.fixture(autouse=True)
def _fresh_parameters():
    nn.clear_parameters()
    yield
    nn.clear_parameters()


def _make():
    rng = np.random.RandomState(0)
    with nn.parameter_scope('conv1'):
        get_parameter_or_create('W', (4, 3, 3, 3), lambda s: rng.randn(*s).astype(np.float32))
        get_parameter_or_create('b', (4,), lambda s: rng.randn(*s).astype(np.float32))
    with nn.parameter_scope('bn'):
        get_parameter_or_create('mean', (1, 4, 1, 1), lambda s: rng.randn(*s).astype(np.float32),
                                need_grad=False)
    get_parameter_or_create('scalar', (), lambda s: np.float32(3.5))
    return {k: (v.d.copy(), v.need_grad) for k, v in get_parameters(grad_only=False).items()}


@pytest.mark.parametrize('ext', ['.h5', '.protobuf'])
def test_round_trip(tmp_path, ext):
    saved = _make()
    path = str(tmp_path / ('params' + ext))
    nn.save_parameters(path)
    nn.clear_parameters()
    proto = nn.load_parameters(path)
    got = get_parameters(grad_only=False)
    assert list(got) == list(saved) == ['conv1/W', 'conv1/b', 'bn/mean', 'scalar']
    for k, (d, need_grad) in saved.items():
        assert got[k].d.dtype == np.float32 and got[k].shape == d.shape
        np.testing.assert_array_equal(got[k].d, d)
        assert got[k].need_grad == need_grad
    if ext == '.protobuf':
        assert [p.variable_name for p in proto.parameter] == list(saved)


@pytest.mark.parametrize('ext', ['.h5', '.protobuf'])
def test_loading_overwrites_existing_parameters_in_place(tmp_path, ext):
    saved = _make()
    path = str(tmp_path / ('p' + ext))
    nn.save_parameters(path)
    params = get_parameters(grad_only=False)
    w = params['conv1/W']
    w.d = 0
    w.need_grad = False
    nn.load_parameters(path)
    assert get_parameters(grad_only=False)['conv1/W'] is w
    np.testing.assert_array_equal(w.d, saved['conv1/W'][0])
    assert w.need_grad
    # a parameter of another shape is an error
    nn.clear_parameters()
    with nn.parameter_scope('conv1'):
        get_parameter_or_create('W', (2, 2))
    with pytest.raises(ValueError, match=r"'conv1/W' exists with shape \(2, 2\)"):
        nn.load_parameters(path)


def test_loading_into_a_scope(tmp_path):
    _make()
    path = str(tmp_path / 'p.h5')
    nn.parameter.save_parameters(path)
    nn.clear_parameters()
    with nn.parameter_scope('copy'):
        nn.parameter.load_parameters(path)
    assert 'copy/conv1/W' in get_parameters(grad_only=False)


def test_h5_layout(tmp_path):
    import h5py
    saved = _make()
    path = str(tmp_path / 'p.h5')
    nn.save_parameters(path)
    with h5py.File(path, 'r') as f:
        names = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        assert sorted(names) == sorted(saved)
        for i, k in enumerate(saved):
            assert f[k].attrs['index'] == i
            assert bool(f[k].attrs['need_grad']) == saved[k][1]
            np.testing.assert_array_equal(f[k][()], saved[k][0])


def test_protobuf_layout_and_text_form(tmp_path):
    from google.protobuf import text_format
    from nncy.proto import nnabla_pb2
    saved = _make()
    path = str(tmp_path / 'p.protobuf')
    nn.save_parameters(path)
    proto = nnabla_pb2.NNablaProtoBuf()
    with open(path, 'rb') as f:
        proto.ParseFromString(f.read())
    p = proto.parameter[0]
    assert p.variable_name == 'conv1/W' and list(p.shape.dim) == [4, 3, 3, 3] and p.need_grad
    np.testing.assert_array_equal(np.array(p.data, np.float32), saved['conv1/W'][0].ravel())
    assert not proto.parameter[2].need_grad
    # the same message as .nntxt loads too
    txt = str(tmp_path / 'p.nntxt')
    with open(txt, 'w') as f:
        f.write(text_format.MessageToString(proto))
    nn.clear_parameters()
    nn.load_parameters(txt)
    np.testing.assert_array_equal(get_parameters()['conv1/b'].d, saved['conv1/b'][0])


@pytest.mark.parametrize('ext', ['.h5', '.protobuf'])
def test_file_objects(ext):
    saved = _make()
    buf = io.BytesIO()
    nn.save_parameters(buf, extension=ext)
    nn.clear_parameters()
    proto = nn.load_parameters(buf, needs_proto=True, extension=ext)
    np.testing.assert_array_equal(get_parameters()['conv1/W'].d, saved['conv1/W'][0])
    assert len(proto.parameter) == 4
    with pytest.raises(ValueError, match='file type'):
        nn.save_parameters(io.BytesIO())
    with pytest.raises(ValueError, match='unsupported'):
        nn.save_parameters(str('x.npz'))


def test_explicit_params_argument(tmp_path):
    _make()
    sub = {'only/this': get_parameters()['conv1/b']}
    path = str(tmp_path / 'p.h5')
    nn.save_parameters(path, sub)
    nn.clear_parameters()
    nn.load_parameters(path)
    assert list(get_parameters(grad_only=False)) == ['only/this']


def test_bad_files_are_rejected(tmp_path):
    import h5py
    from nncy.proto import nnabla_pb2
    proto = nnabla_pb2.NNablaProtoBuf()
    p = proto.parameter.add()
    p.variable_name = 'w'
    p.shape.dim.extend([2, 3])
    p.data.extend([1.0] * 5)
    path = str(tmp_path / 'bad.protobuf')
    with open(path, 'wb') as f:
        f.write(proto.SerializeToString())
    with pytest.raises(ValueError, match=r"'w' holds 5 values for shape \(2, 3\)"):
        nn.load_parameters(path)
    p.shape.dim[0] = -2
    p.shape.dim[1] = -3
    p.ClearField('data')
    p.data.extend([1.0] * 6)
    with open(path, 'wb') as f:
        f.write(proto.SerializeToString())
    with pytest.raises(ValueError, match='negative'):
        nn.load_parameters(path)
    path = str(tmp_path / 'bad.h5')
    with h5py.File(path, 'w') as f:
        f['names'] = np.array([b'a', b'b'])
    with pytest.raises(ValueError, match='expected numbers'):
        nn.load_parameters(path)
    assert not get_parameters(grad_only=False)
    with open(str(tmp_path / 'garbage.protobuf'), 'wb') as f:
        f.write(b'\xff\xff\xff\xff')
    with pytest.raises(Exception):
        nn.load_parameters(str(tmp_path / 'garbage.protobuf'))


@pytest.mark.parametrize('ext', ['.h5', '.protobuf'])
def test_saving_is_atomic(tmp_path, monkeypatch, ext):
    import nncy._param_io as pio
    _make()
    path = str(tmp_path / ('p' + ext))
    nn.save_parameters(path)
    before = open(path, 'rb').read()

    def boom(*a, **k):
        raise RuntimeError('interrupted')
    monkeypatch.setattr(pio, 'write_h5' if ext == '.h5' else 'to_proto', boom)
    with pytest.raises(RuntimeError, match='interrupted'):
        nn.save_parameters(path)
    assert open(path, 'rb').read() == before
    assert os.listdir(str(tmp_path)) == [os.path.basename(path)]
    # a new file gets the usual permissions, not the temporary file's 0600
    monkeypatch.undo()
    fresh = str(tmp_path / ('q' + ext))
    nn.save_parameters(fresh)
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(fresh).st_mode & 0o777 == 0o666 & ~mask
