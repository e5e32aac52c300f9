"""NNP model files: the table <-> schema mapping, save / NnpLoader / runtime
round trips, NNabla-style files, and bad files."""
import io
import os
import struct
import sys
import zipfile

import numpy as np
import pytest

import nncy as nn
import nncy.functions as F
from nncy import _nnp, _table, runtime
from nncy.parameter import get_parameter_or_create, set_parameter
from nncy.utils.nnp_graph import NnpLoader
from nncy.utils.save import save

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# Rows whose arguments the NNP schema cannot hold at all (NNabla has no such
# C++ function: its multi_head_attention is written with other functions).
NO_MESSAGE = {'MultiHeadAttention', 'ClipByNorm'}
# Arguments without a field in their row's message: saved only at their default.
UNMAPPED = {('PatchCorrelation', 'channel_last'), ('Interpolate', 'scale'),
            ('FixedPointQuantize', 'quantize'), ('Pow2Quantize', 'quantize'),
            ('MinMaxQuantize', 'quantize')} | {
    (t, 'output_stat') for t in ('BatchNormalization', 'FusedBatchNormalization',
                                 'SyncBatchNormalization', 'LayerNormalization',
                                 'InstanceNormalization', 'GroupNormalization',
                                 'WeightStandardization')}


@pytest.fixture(autouse=True)
def _fresh_parameters():
    nn.clear_parameters()
    yield
    nn.clear_parameters()


# ---------------------------------------------------------------------------
# Every row of the table against the schema
# ---------------------------------------------------------------------------

def _compatible(typ, fd):
    rep, shape = _nnp._is_repeated(fd), _nnp._is_shape(fd)
    cpp = fd.cpp_type
    ints = cpp in (fd.CPPTYPE_INT64, fd.CPPTYPE_INT32, fd.CPPTYPE_UINT32, fd.CPPTYPE_UINT64)
    flt = cpp in (fd.CPPTYPE_FLOAT, fd.CPPTYPE_DOUBLE)
    return {
        'int': not rep and ints,
        'float': not rep and flt,
        'bool': not rep and cpp == fd.CPPTYPE_BOOL,
        'str': not rep and cpp == fd.CPPTYPE_STRING,
        'ints': shape or (rep and ints),
        'shape': shape or (rep and ints),
        'floats': rep and flt,
        'axis': ints,
    }.get(typ, True)


def test_every_row_maps_onto_its_param_message():
    """Each row with arguments has a ``<TypeName>Parameter`` message whose
    fields hold its arguments (by name, or through ``ARG_RENAMES``) with a
    compatible type.  Rows and arguments that do not are reported; the known
    ones are listed above and must stay exactly those."""
    no_message, unmapped, bad_type = set(), set(), []
    for spec in _table.FUNCTIONS:
        if not spec.args:
            continue
        sch = _nnp.schema(spec)
        if sch.message is None:
            no_message.add(spec.type_name)
            continue
        assert sch.message.name == spec.type_name + 'Parameter'
        for name, typ, _ in spec.args:
            fd = sch.argmap[name]
            if fd is None:
                unmapped.add((spec.type_name, name))
            elif not _compatible(typ, fd):
                bad_type.append('%s.%s (%s) -> %s' % (spec.type_name, name, typ, fd.name))
    assert no_message == NO_MESSAGE, 'rows without a param message: %s' % sorted(no_message)
    assert unmapped == UNMAPPED, 'arguments without a field: %s' % sorted(unmapped)
    assert not bad_type, 'arguments whose field type differs: %s' % bad_type


def test_renames_are_used_only_where_needed():
    sum_s = _nnp.schema(_table.BY_NAME['sum'])
    assert sum_s.field == 'sum_param'
    assert sum_s.argmap['axis'].name == 'axes' and sum_s.argmap['keepdims'].name == 'keep_dims'
    assert _nnp.schema(_table.BY_NAME['softmax']).argmap['axis'].name == 'axis'
    # field names come from the schema, not from a snake-case rule
    assert _nnp.param_fields()['CumSumParameter'] == 'cumsum_param'


def _case_graph(spec):
    sys.path.insert(0, ROOT)
    try:
        from benchmarks.cases import CASES
    finally:
        sys.path.remove(ROOT)
    inputs, args, _, _ = CASES[spec.name]('small')
    if 'seed' in spec.arg_names:      # stochastic rows: the same draws after loading
        args = dict(args, seed=17)
    vs, names = [], {}
    for i, arr in enumerate(inputs):
        slot = spec.inputs[min(i, len(spec.inputs) - 1)]
        v = nn.Variable.from_numpy_array(arr, need_grad=slot.parameter)
        vs.append(v)
        if slot.parameter:
            set_parameter('p/%s' % slot.name, v)
        else:
            names['in%d' % i] = v
    fn = getattr(F, spec.name)
    if any(i.variadic for i in spec.inputs):
        out = fn(*vs, **args)
    else:
        kw = dict(args)
        kw.update(zip([i.name for i in spec.inputs], vs))
        out = fn(**kw)
    outs = out if isinstance(out, tuple) else (out,)
    first = next(iter(names.values()), None)
    batch = first.shape[0] if first is not None and first.shape else 1
    contents = {'networks': [{'name': 'n', 'batch_size': batch, 'names': names,
                              'outputs': {'out%d' % j: o for j, o in enumerate(outs)}}]}
    return contents, names, outs


@pytest.mark.parametrize('k, spec', list(enumerate(_table.FUNCTIONS)), ids=lambda x: getattr(x, 'name', ''))
def test_every_row_round_trips(tmp_path, k, spec):
    """Each row, on its benchmark inputs, saved to .nnp (alternately with .h5
    and .protobuf parameters) and run by nncy.runtime and by NnpLoader, gives
    the original outputs."""
    contents, names, outs = _case_graph(spec)
    path = str(tmp_path / 'm.nnp')
    if spec.type_name in NO_MESSAGE:
        with pytest.raises(ValueError, match=spec.type_name):
            save(path, contents)
        return
    nn.forward_all(outs)
    refs = [o.d.copy() for o in outs]
    save(path, contents, parameter_format=('.h5', '.protobuf')[k % 2])
    feed = {n: v.d for n, v in names.items()}
    res = runtime.load(path).run(**feed)
    for j, r in enumerate(refs):
        np.testing.assert_allclose(res['out%d' % j], r, rtol=1e-6, atol=1e-6)
    nn.clear_parameters()
    net = NnpLoader(path).get_network('n')
    for n, v in names.items():
        net.inputs[n].d = v.d
    nn.forward_all(list(net.outputs.values()))
    for j, r in enumerate(refs):
        np.testing.assert_allclose(net.outputs['out%d' % j].d, r, rtol=1e-6, atol=1e-6)


def test_argument_the_schema_cannot_hold_is_refused_unless_default(tmp_path):
    x1 = nn.Variable.from_numpy_array(np.ones((1, 2, 4, 4), np.float32))
    x2 = nn.Variable.from_numpy_array(np.ones((1, 2, 4, 4), np.float32))
    ok = F.patch_correlation(x1, x2)
    save(str(tmp_path / 'ok.nnp'), {'networks': [{'name': 'n', 'batch_size': 1,
                                                  'names': {'a': x1, 'b': x2},
                                                  'outputs': {'y': ok}}]})
    x1c = nn.Variable.from_numpy_array(np.ones((1, 4, 4, 2), np.float32))
    x2c = nn.Variable.from_numpy_array(np.ones((1, 4, 4, 2), np.float32))
    y = F.patch_correlation(x1c, x2c, channel_last=True)
    with pytest.raises(ValueError, match="PatchCorrelation.*'channel_last'"):
        save(str(tmp_path / 'bad.nnp'), {'networks': [{'name': 'n', 'batch_size': 1,
                                                       'names': {'a': x1c, 'b': x2c},
                                                       'outputs': {'y': y}}]})
    assert not os.path.exists(tmp_path / 'bad.nnp')


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------

def _mlp(rng, batch=4):
    x = nn.Variable((batch, 8))
    with nn.parameter_scope('fc1'):
        w1 = get_parameter_or_create('W', (8, 16), rng.randn(8, 16).astype(np.float32))
        b1 = get_parameter_or_create('b', (16,), rng.randn(16).astype(np.float32))
    with nn.parameter_scope('fc2'):
        w2 = get_parameter_or_create('W', (16, 5), rng.randn(16, 5).astype(np.float32))
        b2 = get_parameter_or_create('b', (5,), rng.randn(5).astype(np.float32))
    h = F.relu(F.affine(x, w1, b1))
    y = F.softmax(F.affine(F.tanh(h), w2, b2))
    return x, y


def _contents(x, y, batch, xname='x', yname='y'):
    return {'networks': [{'name': 'net', 'batch_size': batch,
                          'outputs': {yname: y}, 'names': {xname: x}}],
            'executors': [{'name': 'runtime', 'network': 'net',
                           'data': [xname], 'output': [yname]}]}


FORMS = [('.h5', '.nntxt'), ('.protobuf', '.nntxt'), ('.protobuf', '.protobuf')]


@pytest.mark.parametrize('pformat, nformat', FORMS)
def test_mlp_round_trip(tmp_path, rng, pformat, nformat):
    x, y = _mlp(rng)
    x.d = rng.randn(4, 8)
    y.forward()
    ref = y.d.copy()
    path = str(tmp_path / 'mlp.nnp')
    save(path, _contents(x, y, 4), parameter_format=pformat, network_format=nformat)
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == sorted(['nnp_version.txt', 'network' + nformat,
                                               'parameter' + pformat])
        assert z.read('nnp_version.txt').decode().strip() == _nnp.NNP_VERSION
    model = runtime.load(path)
    assert model.input_names == ['x'] and model.output_names == ['y']
    np.testing.assert_allclose(model.run(x.d)['y'], ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(model(x=x.d)['y'], ref, rtol=1e-6, atol=1e-6)
    nn.clear_parameters()
    nnp = NnpLoader(path)
    assert nnp.get_network_names() == ['net']
    net = nnp.get_network('net', batch_size=4)
    assert list(net.inputs) == ['x'] and list(net.outputs) == ['y']
    net.inputs['x'].d = x.d
    net.outputs['y'].forward(clear_buffer=True)
    np.testing.assert_allclose(net.outputs['y'].d, ref, rtol=1e-6, atol=1e-6)
    # the parameters are registered under their scope names
    assert sorted(nn.get_parameters(grad_only=False)) == ['fc1/W', 'fc1/b', 'fc2/W', 'fc2/b']


def test_batch_size_is_a_placeholder(tmp_path, rng):
    x, y = _mlp(rng)
    path = str(tmp_path / 'mlp.nnp')
    save(path, _contents(x, y, 4))
    proto = _nnp.read(path).proto
    shapes = {v.name: (v.type, tuple(v.shape.dim)) for v in proto.network[0].variable}
    assert shapes['x'] == ('Buffer', (-1, 8))
    assert shapes['fc1/W'] == ('Parameter', (8, 16))
    model = runtime.load(path)
    xs = rng.randn(7, 8).astype(np.float32)
    out7 = model.run(xs)['y']
    out1 = model.run(xs[:1])['y']
    assert out7.shape == (7, 5) and out1.shape == (1, 5)
    nn.clear_parameters()
    net = NnpLoader(path).get_network('net', batch_size=7)
    assert net.inputs['x'].shape == (7, 8)
    net.inputs['x'].d = xs
    net.outputs['y'].forward()
    np.testing.assert_allclose(out7, net.outputs['y'].d, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out1, out7[:1], rtol=1e-5, atol=1e-6)


def test_nntxt_and_protobuf_files_without_archive(tmp_path, rng):
    x, y = _mlp(rng)
    x.d = rng.randn(4, 8)
    y.forward()
    for ext in ('.nntxt', '.protobuf'):
        path = str(tmp_path / ('m' + ext))
        save(path, _contents(x, y, 4), include_params=True)
        np.testing.assert_allclose(runtime.load(path).run(x.d)['y'], y.d, rtol=1e-6, atol=1e-6)
    # file objects name their format with extension=
    buf = io.BytesIO()
    save(buf, _contents(x, y, 4), extension='.nnp')
    buf.seek(0)
    np.testing.assert_allclose(runtime.load(buf, extension='.nnp').run(x.d)['y'], y.d,
                               rtol=1e-6, atol=1e-6)


def _recurrent_model(rng, T=5, B=3, I=4, H=6):
    """LSTM (2 layers, bidirectional, weight and bias) -> slice -> RNN (one
    layer: weight omitted, bias given) -> sum, max with index, batch_matmul,
    reshape."""
    x = nn.Variable((T, B, I))
    with nn.parameter_scope('lstm'):
        L, D = 2, 2
        h0 = get_parameter_or_create('h0', (L, D, B, H), np.zeros((L, D, B, H), np.float32))
        c0 = get_parameter_or_create('c0', (L, D, B, H), np.zeros((L, D, B, H), np.float32))
        w0 = get_parameter_or_create('w0', None, (rng.randn(D, 4, H, I + H) * .3).astype('f4'))
        w = get_parameter_or_create('w', None,
                                    (rng.randn(L - 1, D, 4, H, D * H + H) * .3).astype('f4'))
        b = get_parameter_or_create('b', None, rng.randn(L, D, 4, H).astype('f4'))
    y, hn, cn = F.lstm(x, h0, c0, w0, w, b, num_layers=2, bidirectional=True, training=False)
    y = F.slice(y, start=(0, 0, 0), stop=(T, B, H), step=(1, 1, 1))
    with nn.parameter_scope('rnn'):
        rh0 = get_parameter_or_create('h0', (1, 1, B, H), np.zeros((1, 1, B, H), np.float32))
        rw0 = get_parameter_or_create('w0', None, (rng.randn(1, H, 2 * H) * .3).astype('f4'))
        rb = get_parameter_or_create('b', None, rng.randn(1, 1, H).astype('f4'))
    r, rhn = F.rnn(y, rh0, rw0, None, rb, nonlinearity='relu', training=False)
    s = F.sum(r, axis=0)                               # (B, H)
    m, idx = F.max(r, axis=2, with_index=True)         # (T, B)
    mm = F.batch_matmul(F.reshape(s, (B, H, 1)), F.reshape(s, (B, 1, H)))
    return x, {'s': s, 'idx': idx, 'mm': mm, 'hn': rhn, 'last': F.mean(m, axis=None)}


@pytest.mark.parametrize('pformat, nformat', FORMS)
def test_recurrent_model_round_trip(tmp_path, rng, pformat, nformat):
    x, outs = _recurrent_model(rng)
    x.d = rng.randn(*x.shape)
    nn.forward_all(list(outs.values()))
    refs = {k: v.d.copy() for k, v in outs.items()}
    path = str(tmp_path / 'rec.nnp')
    save(path, {'networks': [{'name': 'rec', 'batch_size': 5, 'names': {'x': x},
                              'outputs': outs}],
                'executors': [{'name': 'e', 'network': 'rec', 'data': ['x'],
                               'output': list(outs)}]},
         parameter_format=pformat, network_format=nformat)
    proto = _nnp.read(path).proto
    rnn = [f for f in proto.network[0].function if f.type == 'RNN'][0]
    assert len(rnn.input) == 4            # x, h, weight_l0, bias: weight left out
    model = runtime.load(path)
    res = model.run(x.d)
    assert list(res) == list(refs)        # the executor's outputs ('s' is also read inside)
    for k in refs:
        np.testing.assert_allclose(res[k], refs[k], rtol=1e-6, atol=1e-6, err_msg=k)
    nn.clear_parameters()
    net = NnpLoader(path).get_network('rec')
    # as in NNabla, the outputs are the variables nothing reads (unused
    # function outputs included)
    assert set(net.outputs) == set(refs) - {'s'} | {'LSTM_Output_2', 'LSTM_Output_3'}
    net.inputs['x'].d = x.d
    nn.forward_all(list(net.outputs.values()))
    for k in refs:
        np.testing.assert_allclose(net.variables[k].d, refs[k], rtol=1e-6, atol=1e-6, err_msg=k)


def test_arguments_left_at_none_are_written_as_nnabla_does(tmp_path, rng):
    x = nn.Variable.from_numpy_array(rng.randn(2, 3, 4).astype(np.float32))
    y = F.softmax(F.slice(F.sum(x, keepdims=True), step=None))
    z = F.mean(x, axis=1)
    save(str(tmp_path / 'm.nnp'), {'networks': [{'name': 'n', 'batch_size': 2,
                                                 'names': {'x': x},
                                                 'outputs': {'y': y, 'z': z}}]})
    fs = {f.type: f for f in _nnp.read(str(tmp_path / 'm.nnp')).proto.network[0].function}
    assert list(fs['Sum'].sum_param.axes) == [0, 1, 2] and fs['Sum'].sum_param.keep_dims
    assert list(fs['Slice'].slice_param.start) == [0, 0, 0]
    assert list(fs['Slice'].slice_param.stop) == [1, 1, 1]
    assert list(fs['Slice'].slice_param.step) == [1, 1, 1]
    assert fs['Softmax'].softmax_param.axis == 2
    assert list(fs['Mean'].mean_param.axes) == [1]


def test_names_types_and_executor(tmp_path, rng):
    x, y = _mlp(rng)
    path = str(tmp_path / 'm.nnp')
    save(path, _contents(x, y, 4))
    proto = _nnp.read(path).proto
    net = proto.network[0]
    assert [f.name for f in net.function] == ['Affine', 'ReLU', 'Tanh', 'Affine_2', 'Softmax']
    assert net.function[0].input[:] == ['x', 'fc1/W', 'fc1/b']
    assert net.function[0].output[:] == ['Affine_Output']
    assert net.function[-1].output[:] == ['y']
    ex = proto.executor[0]
    assert [v.variable_name for v in ex.data_variable] == ['x']
    assert [v.variable_name for v in ex.output_variable] == ['y']
    assert sorted(v.variable_name for v in ex.parameter_variable) == \
        ['fc1/W', 'fc1/b', 'fc2/W', 'fc2/b']


def test_unregistered_parameter_leaves_are_saved(tmp_path, rng):
    """Variables made with from_numpy_array that feed a parameter input are
    saved as parameters (named after the function and input)."""
    x = nn.Variable.from_numpy_array(rng.randn(2, 3).astype(np.float32))
    w = nn.Variable.from_numpy_array(rng.randn(3, 4).astype(np.float32), need_grad=True)
    y = F.affine(x, w)
    y.forward()
    path = str(tmp_path / 'm.nnp')
    save(path, {'networks': [{'name': 'n', 'batch_size': 2, 'names': {'x': x},
                              'outputs': {'y': y}}]})
    c = _nnp.read(path)
    assert list(c.params) == ['Affine_Input']
    np.testing.assert_allclose(runtime.load(path).run(x.d)['y'], y.d, rtol=1e-6, atol=1e-6)


def test_nnabla_style_nntxt_with_h5(tmp_path, rng):
    """A file written the way NNabla's Console writes them: -1 on every buffer,
    a Reshape shape without the batch dimension, an executor whose data names
    differ from the variable names, an initializer, a global config."""
    text = '''
global_config { default_context { backends: "cpu:float" array_class: "CpuCachedArray" } }
network {
  name: "Main"
  batch_size: 2
  variable { name: "Input" type: "Buffer" shape { dim: -1 dim: 2 dim: 3 } }
  variable { name: "Affine/affine/W" type: "Parameter" shape { dim: 6 dim: 4 }
             initializer { type: "NormalAffineGlorot" multiplier: 1 } }
  variable { name: "Affine/affine/b" type: "Parameter" shape { dim: 4 }
             initializer { type: "Constant" } }
  variable { name: "Affine" type: "Buffer" shape { dim: -1 dim: 4 } }
  variable { name: "ReLU" type: "Buffer" shape { dim: -1 dim: 4 } }
  variable { name: "Reshape" type: "Buffer" shape { dim: -1 dim: 2 dim: 2 } }
  variable { name: "Softmax" type: "Buffer" shape { dim: -1 dim: 2 dim: 2 } }
  function { name: "Affine" type: "Affine" input: "Input" input: "Affine/affine/W"
             input: "Affine/affine/b" output: "Affine" affine_param { base_axis: 1 } }
  function { name: "ReLU" type: "ReLU" input: "Affine" output: "ReLU" relu_param { inplace: true } }
  function { name: "Reshape" type: "Reshape" input: "ReLU" output: "Reshape"
             reshape_param { shape { dim: 2 dim: 2 } } }
  function { name: "Softmax" type: "Softmax" input: "Reshape" output: "Softmax"
             softmax_param { axis: 2 } }
}
executor {
  name: "Executor"
  network_name: "Main"
  data_variable { variable_name: "Input" data_name: "x" }
  output_variable { variable_name: "Softmax" data_name: "y" }
}
'''
    from nncy._param_io import write_h5
    W = rng.randn(6, 4).astype(np.float32)
    b = rng.randn(4).astype(np.float32)
    write_h5(str(tmp_path / 'p.h5'), {
        'Affine/affine/W': nn.Variable.from_numpy_array(W, need_grad=True),
        'Affine/affine/b': nn.Variable.from_numpy_array(b, need_grad=True)})
    (tmp_path / 'net.nntxt').write_text(text)
    with zipfile.ZipFile(str(tmp_path / 'console.nnp'), 'w') as z:
        z.writestr('nnp_version.txt', '0.1\n')
        z.write(str(tmp_path / 'net.nntxt'), 'network.nntxt')
        z.write(str(tmp_path / 'p.h5'), 'parameter.h5')
    xs = rng.randn(3, 2, 3).astype(np.float32)
    h = np.maximum(xs.reshape(3, 6) @ W + b, 0).reshape(3, 2, 2)
    e = np.exp(h - h.max(axis=2, keepdims=True))
    want = e / e.sum(axis=2, keepdims=True)
    for src in (str(tmp_path / 'console.nnp'),
                [str(tmp_path / 'net.nntxt'), str(tmp_path / 'p.h5')]):
        got = runtime.load(src).run(xs)['Softmax']
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    net = NnpLoader(str(tmp_path / 'console.nnp')).get_network('Main', batch_size=3)
    net.inputs['Input'].d = xs
    net.outputs['Softmax'].forward()
    np.testing.assert_allclose(net.outputs['Softmax'].d, want, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# The lean runtime
# ---------------------------------------------------------------------------

def _live_sets(plan):
    """Per step, the intermediates alive while it runs (written before or by
    it, read by it or later)."""
    first, last = {}, {}
    for k, st in enumerate(plan.steps):
        for v in st.outs:
            first.setdefault(id(v), (k, v))
        for v in st.ins + st.outs:
            last[id(v)] = k
    return [[v for i, (f, v) in first.items() if f <= k <= last[i]]
            for k in range(len(plan.steps))]


def test_runtime_shares_buffers_between_disjoint_lifetimes(tmp_path, rng):
    x = nn.Variable((2, 8))
    a = F.tanh(x)
    b = F.sigmoid(a)
    c = F.add2(a, b)            # a's and b's last reader
    r = F.reshape(c, (4, 4))    # in place: a view of c, which stays alive with it
    d = F.relu(r)
    e = F.exp(d)
    path = str(tmp_path / 'chain.nnp')
    save(path, {'networks': [{'name': 'n', 'batch_size': 2, 'names': {'x': x},
                              'outputs': {'e': e}}]})
    model = runtime.load(path)
    plan = model.plan(2)
    types = [st.type_name for st in plan.steps]
    assert types == ['Tanh', 'Sigmoid', 'Add2', 'Reshape', 'ReLU', 'Exp']
    # a, b, c need three buffers; d reuses a's or b's, not c's (r views c)
    assert len(plan.buffers) == 3
    xs = rng.randn(2, 8).astype(np.float32)
    seen = []
    view = {id(plan.steps[3].ins[0]), id(plan.steps[3].outs[0])}

    class Spy:
        def __init__(self, k, call):
            self.k, self.call = k, call

        def __call__(self):
            # live buffers are disjoint, but for the reshape's view of c
            live = [v for v in _live_sets(plan)[self.k] if v not in plan.outputs]
            seen.append(len(live))
            for i in range(len(live)):
                for j in range(i):
                    pair = {id(live[i]), id(live[j])}
                    assert pair == view or not np.shares_memory(live[i].d, live[j].d)
            self.call()
    plan.calls = [Spy(k, c) for k, c in enumerate(plan.calls)]
    out = model.run(xs)['e']
    assert seen == [1, 2, 3, 2, 2, 1]
    want = np.exp(np.maximum(np.tanh(xs) + 1 / (1 + np.exp(-np.tanh(xs))), 0)).reshape(4, 4)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
    # no graph, no gradient: nothing allocated a gradient buffer, no function nodes
    for st in plan.steps:
        for v in st.ins + st.outs:
            assert v.parent is None and v.grad.clear_called and not v.need_grad
    # outputs are handed over, not overwritten by the next run
    again = model.run(xs * 0)['e']
    assert not np.shares_memory(out, again)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(again, np.full((4, 4), np.exp(0.5), np.float32), rtol=1e-6)


def test_runtime_output_that_views_an_intermediate_is_copied(tmp_path, rng):
    x = nn.Variable((2, 8))
    y = F.reshape(F.tanh(x), (16,))
    path = str(tmp_path / 'view.nnp')
    save(path, _contents(x, y, 2))
    model = runtime.load(path)
    xs = rng.randn(2, 8).astype(np.float32)
    out = model.run(xs)['y']
    again = model.run(-xs)['y']
    np.testing.assert_allclose(out, np.tanh(xs).reshape(-1), rtol=1e-6)
    np.testing.assert_allclose(again, -np.tanh(xs).reshape(-1), rtol=1e-6)


@pytest.mark.parametrize('channel_last', [False, True])
@pytest.mark.parametrize('bias', [False, True])
def test_runtime_folds_inference_batch_norm_into_convolution(tmp_path, rng, channel_last, bias):
    import nncy.parametric_functions as PF
    shape = (2, 6, 6, 3) if channel_last else (2, 3, 6, 6)
    x = nn.Variable(shape)
    h = PF.convolution(x, 4, (3, 3), pad=(1, 1), with_bias=bias, channel_last=channel_last)
    y = PF.batch_normalization(h, axes=[3 if channel_last else 1], batch_stat=False)
    z = F.relu(y)
    params = nn.get_parameters(grad_only=False)
    for k, v in params.items():
        if k.endswith('var'):
            v.d = rng.uniform(0.2, 2.0, v.shape)
        else:
            v.d = rng.randn(*v.shape) * (0.5 if k.endswith('W') else 1)
    before = {k: v.d.copy() for k, v in params.items()}
    xs = rng.randn(*shape).astype(np.float32)
    x.d = xs
    z.forward()
    want = z.d.copy()
    path = str(tmp_path / 'cbn.nnp')
    save(path, _contents(x, z, 2))
    model = runtime.load(path)
    # batch norm folded, then the ReLU merged into the same step
    assert [(st.type_name, st.relu) for st in model.plan(2).steps] == [('Convolution', True)]
    np.testing.assert_allclose(model.run(xs)['y'], want, rtol=1e-5, atol=1e-5)
    for k, v in model._param_vars.items():     # the model's parameters are untouched
        np.testing.assert_array_equal(v.d, before[k])


def test_runtime_binds_affine_between_planned_buffers(tmp_path, rng):
    x, y = _mlp(rng)           # affine (reads the input), relu, tanh, affine, softmax
    path = str(tmp_path / 'm.nnp')
    save(path, _contents(x, y, 4))
    model = runtime.load(path)
    plan = model.plan(4)
    second = [k for k, st in enumerate(plan.steps) if st.type_name == 'Affine'][1]
    assert plan.calls[second].__name__ == 'run'           # the bound call
    xs = rng.randn(4, 8).astype(np.float32)
    x.d = xs
    y.forward()
    for _ in range(2):
        np.testing.assert_allclose(model.run(xs)['y'], y.d, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('case', ['read twice', 'computed weight'])
def test_runtime_keeps_batch_norm_that_does_not_fold(tmp_path, rng, case):
    import nncy.parametric_functions as PF
    x = nn.Variable((2, 3, 5, 5))
    if case == 'read twice':
        h = PF.convolution(x, 4, (3, 3))
        y = F.add2(PF.batch_normalization(h, batch_stat=False), F.sum(h))
    else:
        w = get_parameter_or_create('w', (4, 3, 3, 3), rng.randn(4, 3, 3, 3).astype(np.float32))
        h = F.convolution(x, F.mul_scalar(w, 2.0))
        y = PF.batch_normalization(h, batch_stat=False)
        for k, v in nn.get_parameters(grad_only=False).items():
            if k.endswith('mean'):
                v.d = rng.randn(*v.shape)
    path = str(tmp_path / 'keep.nnp')
    save(path, _contents(x, y, 2))
    model = runtime.load(path)
    assert 'BatchNormalization' in [st.type_name for st in model.plan(2).steps]
    xs = rng.randn(2, 3, 5, 5).astype(np.float32)
    x.d = xs
    y.forward()
    np.testing.assert_allclose(model.run(xs)['y'], y.d, rtol=1e-5, atol=1e-5)


def test_runtime_input_checks(tmp_path, rng):
    x, y = _mlp(rng)
    path = str(tmp_path / 'm.nnp')
    save(path, _contents(x, y, 4))
    model = runtime.load(path)
    with pytest.raises(ValueError, match="input 'x' has shape"):
        model.run(np.zeros((4, 9), np.float32))
    with pytest.raises(TypeError, match="unknown input 'q'"):
        model.run(q=np.zeros((4, 8)))
    with pytest.raises(TypeError, match="input 'x' is missing"):
        model.run()
    with pytest.raises(TypeError, match='must hold numbers'):
        model.run(np.array([['a'] * 8]))
    assert model.input_shapes(3) == {'x': (3, 8)}


def test_runtime_import_pulls_in_neither_h5py_nor_cupy(tmp_path, rng, py_env):
    import subprocess
    x, y = _mlp(rng)
    path = str(tmp_path / 'm.nnp')
    save(path, _contents(x, y, 4), parameter_format='.protobuf')
    code = '''
import sys
import numpy as np
import nncy.runtime as rt
m = rt.load(sys.argv[1])
y = m.run(np.ones((2, 8), np.float32))['y']
assert y.shape == (2, 5)
bad = sorted(k for k in sys.modules if k.split('.')[0] in ('h5py', 'cupy', 'cupy_backends'))
assert not bad, bad
print('ok')
'''
    r = subprocess.run([sys.executable, '-c', code, path], env=py_env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and 'ok' in r.stdout, r.stderr


# ---------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------

def test_saving_is_atomic(tmp_path, rng, monkeypatch):
    x, y = _mlp(rng)
    path = str(tmp_path / 'm.nnp')
    save(path, _contents(x, y, 4))
    before = open(path, 'rb').read()

    def boom(self, *a, **k):
        raise RuntimeError('disk full')
    monkeypatch.setattr(zipfile.ZipFile, 'writestr', boom)
    with pytest.raises(RuntimeError, match='disk full'):
        save(path, _contents(x, y, 4))
    assert open(path, 'rb').read() == before
    assert sorted(os.listdir(tmp_path)) == ['m.nnp']
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask


def test_save_checks_contents(tmp_path, rng):
    x, y = _mlp(rng)
    # without the batch placeholder the network runs at its saved batch size only
    save(str(tmp_path / 'fixed.nnp'), _contents(x, y, 4), variable_batch_size=False)
    fixed = runtime.load(str(tmp_path / 'fixed.nnp'))
    assert fixed.input_shapes() == {'x': (4, 8)}
    assert fixed.run(np.ones((4, 8)))['y'].shape == (4, 5)
    with pytest.raises(ValueError, match=r"input 'x' has shape \(2, 8\)"):
        fixed.run(np.ones((2, 8)))
    os.unlink(str(tmp_path / 'fixed.nnp'))
    bad = _contents(x, y, 4)
    bad['executors'][0]['data'] = ['nope']
    with pytest.raises(ValueError, match="data variable 'nope'"):
        save(str(tmp_path / 'm.nnp'), bad)
    other = nn.Variable((4, 8))
    bad = _contents(x, y, 4)
    bad['networks'][0]['names']['z'] = other
    with pytest.raises(ValueError, match="'z'.*not part of the graph"):
        save(str(tmp_path / 'm.nnp'), bad)
    with pytest.raises(ValueError, match='unsupported file type'):
        save(str(tmp_path / 'm.zip'), _contents(x, y, 4))
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------
# Bad files
# ---------------------------------------------------------------------------

def _loaders():
    return [lambda p: runtime.load(p),
            lambda p: NnpLoader(p).get_network('net')]


def _good(tmp_path, rng, pformat='.protobuf'):
    x, y = _mlp(rng)
    path = str(tmp_path / 'good.nnp')
    save(path, _contents(x, y, 4), parameter_format=pformat)
    nn.clear_parameters()      # NnpLoader would use parameters of the scope
    return path


def _rezip(src, dst, edit=None, extra=()):
    """Copy an archive, passing each (name, data) through ``edit`` (None drops it)."""
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, 'w') as zo:
        for name in zi.namelist():
            item = (name, zi.read(name))
            if edit is not None:
                item = edit(*item)
            if item is not None:
                zo.writestr(*item)
        for name, data in extra:
            zo.writestr(name, data)
    return dst


def _edit_network(src, dst, change):
    from google.protobuf import text_format

    def edit(name, data):
        if name == 'network.nntxt':
            proto = _nnp._parse_text(data, name)
            change(proto)
            data = text_format.MessageToString(proto).encode()
        return name, data
    return _rezip(src, dst, edit)


@pytest.mark.parametrize('load', _loaders())
def test_truncated_archive(tmp_path, rng, load):
    good = _good(tmp_path, rng)
    data = open(good, 'rb').read()
    bad = tmp_path / 'bad.nnp'
    for n in (0, 10, len(data) // 2, len(data) - 5):
        bad.write_bytes(data[:n])
        with pytest.raises(ValueError, match='bad.nnp'):
            load(str(bad))
    bad.write_bytes(b'not a zip at all')
    with pytest.raises(ValueError, match='not a valid .nnp'):
        load(str(bad))


@pytest.mark.parametrize('pformat', ['.h5', '.protobuf'])
@pytest.mark.parametrize('load', _loaders())
def test_missing_parameter(tmp_path, rng, load, pformat):
    good = _good(tmp_path, rng, pformat)
    c = _nnp.read(good)
    del c.params['fc2/b']
    bad = str(tmp_path / 'bad.nnp')
    _nnp.write_nnp(bad, c.proto, c.params, parameter_format=pformat)
    with pytest.raises(ValueError, match="parameter 'fc2/b' is missing"):
        load(bad)


@pytest.mark.parametrize('load', _loaders())
def test_parameter_shape_disagrees_with_network(tmp_path, rng, load):
    good = _good(tmp_path, rng)

    def change(proto):
        v = [v for v in proto.network[0].variable if v.name == 'fc1/W'][0]
        v.shape.dim[:] = [16, 8]
    bad = _edit_network(good, str(tmp_path / 'bad.nnp'), change)
    with pytest.raises(ValueError, match=r"'fc1/W' has shape \(8, 16\).*declares \(16, 8\)"):
        load(bad)


@pytest.mark.parametrize('load', _loaders())
def test_unknown_function_type(tmp_path, rng, load):
    good = _good(tmp_path, rng)

    def change(proto):
        proto.network[0].function[1].type = 'FancyNewThing'
    bad = _edit_network(good, str(tmp_path / 'bad.nnp'), change)
    with pytest.raises(ValueError, match="unknown function type 'FancyNewThing'"):
        load(bad)


@pytest.mark.parametrize('load', _loaders())
def test_undeclared_variable_and_cycle(tmp_path, rng, load):
    good = _good(tmp_path, rng)

    def undeclared(proto):
        proto.network[0].function[1].input[0] = 'ghost'
    bad = _edit_network(good, str(tmp_path / 'bad.nnp'), undeclared)
    with pytest.raises(ValueError, match="'ghost'"):
        load(bad)

    def cycle(proto):
        fs = proto.network[0].function
        fs[0].input[0] = fs[1].output[0]
    bad = _edit_network(good, str(tmp_path / 'bad2.nnp'), cycle)
    with pytest.raises(ValueError, match='cycle'):
        load(bad)


@pytest.mark.parametrize('name', ['../evil.nntxt', '/etc/evil.nntxt', 'a/../../evil.h5',
                                  '..\\evil.nntxt', 'C:/evil.nntxt'])
@pytest.mark.parametrize('load', _loaders())
def test_zip_slip_is_rejected(tmp_path, rng, load, name):
    good = _good(tmp_path, rng)
    bad = _rezip(good, str(tmp_path / 'bad.nnp'), extra=[(name, b'')])
    with pytest.raises(ValueError, match='outside the archive|absolute path'):
        load(bad)
    assert not os.path.exists(tmp_path.parent / 'evil.nntxt')


def _patch_central_size(path, member, size):
    data = bytearray(open(path, 'rb').read())
    pos = 0
    while True:
        pos = data.index(b'PK\x01\x02', pos)
        nlen = struct.unpack('<H', data[pos + 28:pos + 30])[0]
        if data[pos + 46:pos + 46 + nlen].decode() == member:
            data[pos + 24:pos + 28] = struct.pack('<I', size)
            break
        pos += 4
    open(path, 'wb').write(bytes(data))


@pytest.mark.parametrize('load', _loaders())
def test_oversized_declared_sizes(tmp_path, rng, load, monkeypatch):
    good = _good(tmp_path, rng)
    bad = _rezip(good, str(tmp_path / 'bad.nnp'))
    _patch_central_size(bad, 'parameter.protobuf', 0xFFFFFFF0)
    with pytest.raises(ValueError, match="'parameter.protobuf' declares 4294967280 bytes"):
        load(bad)
    # a limit of our own choosing: each member, and all together
    with pytest.raises(ValueError, match='over the limit'):
        _nnp.read(good, max_bytes=100)
    sizes = [i.file_size for i in zipfile.ZipFile(good).infolist()]
    with pytest.raises(ValueError, match='declare .* bytes in all'):
        _nnp.read(good, max_bytes=sum(sizes) - 1)
    _nnp.read(good, max_bytes=sum(sizes))
    # a variable declaring an absurd number of elements

    def huge(proto):
        proto.network[0].variable[0].shape.dim[:] = [-1, 1 << 40]
    bad2 = _edit_network(good, str(tmp_path / 'bad2.nnp'), huge)
    with pytest.raises(ValueError, match='over the limit'):
        load(bad2)


@pytest.mark.parametrize('member, data, match', [
    ('network.nntxt', b'network { name: "n" bogus_field: 3 }', 'not a valid NNP text'),
    ('network.nntxt', b'\xff\xfe\x00garbage', 'not a valid NNP text'),
    ('parameter.protobuf', b'\x0a\xff\xff\xff\xff\x0f', 'not a valid NNP protobuf'),
    ('parameter.h5', b'\x89HDF\r\n\x1a\ntruncated', 'not a valid parameter .h5'),
])
def test_corrupt_parts(tmp_path, rng, member, data, match):
    good = _good(tmp_path, rng)
    bad = _rezip(good, str(tmp_path / 'bad.nnp'),
                 edit=lambda n, d: None if n == member or n.startswith('parameter') and
                 member.startswith('parameter') else (n, d),
                 extra=[(member, data)])
    for load in _loaders():
        with pytest.raises(ValueError, match=match):
            load(bad)


def test_parameter_values_disagree_with_their_shape(tmp_path, rng):
    from nncy.proto import nnabla_pb2
    good = _good(tmp_path, rng)
    p = nnabla_pb2.NNablaProtoBuf()
    q = p.parameter.add()
    q.variable_name = 'fc1/W'
    q.shape.dim.extend([100000, 100000])
    q.data.extend([1.0, 2.0])
    bad = _rezip(good, str(tmp_path / 'bad.nnp'),
                 edit=lambda n, d: None if n == 'parameter.protobuf' else (n, d),
                 extra=[('parameter.protobuf', p.SerializeToString())])
    with pytest.raises(ValueError, match="'fc1/W' holds 2 values for shape"):
        runtime.load(bad)


def test_huge_declared_parameters_are_refused_before_reading(tmp_path, rng):
    """A small .h5 may declare an enormous unwritten dataset, a protobuf
    parameter a shape whose element count overflows 64 bits."""
    import h5py
    from nncy.proto import nnabla_pb2
    good = _good(tmp_path, rng)
    buf = io.BytesIO()
    with h5py.File(buf, 'w') as f:
        f.create_dataset('fc1/W', shape=(1 << 20, 1 << 20), dtype='f4', chunks=(1, 1))
    assert len(buf.getvalue()) < 100000
    bad = _rezip(good, str(tmp_path / 'bad.nnp'),
                 edit=lambda n, d: None if n.startswith('parameter') else (n, d),
                 extra=[('parameter.h5', buf.getvalue())])
    with pytest.raises(ValueError, match="'fc1/W' declares shape.*over the limit"):
        runtime.load(bad)
    p = nnabla_pb2.NNablaProtoBuf()
    q = p.parameter.add()
    q.variable_name = 'fc1/W'
    q.shape.dim.extend([1 << 32, 1 << 32])
    bad = _rezip(good, str(tmp_path / 'bad2.nnp'),
                 edit=lambda n, d: None if n.startswith('parameter') else (n, d),
                 extra=[('parameter.protobuf', p.SerializeToString())])
    with pytest.raises(ValueError, match="'fc1/W' holds 0 values for shape"):
        runtime.load(bad)


def test_network_and_function_errors_name_the_place(tmp_path, rng):
    good = _good(tmp_path, rng)

    def change(proto):
        f = proto.network[0].function[0]            # Affine
        f.affine_param.base_axis = 5
    bad = _edit_network(good, str(tmp_path / 'bad.nnp'), change)
    with pytest.raises(ValueError, match=r"network 'net', function 'Affine' \(Affine\).*base_axis"):
        runtime.load(bad)
    with pytest.raises(ValueError, match=r"function 'Affine' \(Affine\).*base_axis"):
        NnpLoader(bad).get_network('net')
    with pytest.raises(ValueError, match="no network 'other'"):
        NnpLoader(good).get_network('other')
    with pytest.raises(ValueError, match="no executor 'other'"):
        runtime.load(good, executor='other')


def test_latency_benchmark_runs(capsys, monkeypatch):
    """benchmarks/infer_latency.py, with a handful of calls (onnxruntime is
    compared when installed)."""
    sys.path.insert(0, ROOT)
    try:
        from benchmarks import infer_latency
    finally:
        sys.path.remove(ROOT)
    monkeypatch.setenv('NNCY_NUM_THREADS', os.environ.get('NNCY_NUM_THREADS', '1'))
    assert infer_latency.main(['--number', '2', '--repeat', '2']) == 0
    out = capsys.readouterr().out
    assert 'nncy.runtime' in out and 'onnxruntime' in out


def _small_cnn(rng, relu_twice=False):
    """conv -> relu -> max pool -> conv (no bias) -> relu -> affine -> relu ->
    affine -> softmax on (2, 2, 7, 7); with ``relu_twice`` the first
    convolution's output also feeds the output sum."""
    import nncy.parametric_functions as PF
    x = nn.Variable((2, 2, 7, 7))
    c1 = PF.convolution(x, 16, (3, 3), pad=(1, 1), name='c1')
    h = F.max_pooling(F.relu(c1), (2, 2))
    h = F.relu(PF.convolution(h, 32, (2, 2), pad=(1, 0), stride=(1, 2), with_bias=False,
                              name='c2'))
    h = F.relu(PF.affine(h, 20, name='f1'))
    y = F.softmax(PF.affine(h, 5, name='f2'))
    if relu_twice:
        y = F.add2(y, F.sum(c1, axis=(1, 2, 3), keepdims=False).reshape((2, 1)))
    for v in nn.get_parameters(grad_only=False).values():
        v.d = rng.randn(*v.shape) * 0.5
    return x, y


@pytest.mark.parametrize('relu_twice', [False, True])
def test_runtime_program_of_lean_kernels_matches_graph(tmp_path, rng, relu_twice):
    x, y = _small_cnn(rng, relu_twice)
    path = str(tmp_path / 'cnn.nnp')
    save(path, _contents(x, y, 2))
    model = runtime.load(path)
    plan = model.plan(2)
    fused = [st.type_name for st in plan.steps if st.relu]
    assert fused == (['Convolution', 'Affine'] if relu_twice else
                     ['Convolution', 'Convolution', 'Affine'])
    if not relu_twice:
        assert plan.program is not None and len(plan.program) == 6
    xs = rng.randn(2, 2, 7, 7).astype(np.float32)
    xs[0, 0, :2] = 0.0
    x.d = xs
    y.forward()
    for _ in range(2):
        np.testing.assert_allclose(model.run(xs)['y'], y.d, rtol=1e-6, atol=1e-6)
    # the steps one by one (the program set aside) agree as well
    plan.program = None
    np.testing.assert_allclose(model.run(xs)['y'], y.d, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(model.run(xs.astype(np.float64))['y'], y.d, rtol=1e-6,
                               atol=1e-6)
