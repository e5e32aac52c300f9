"""The ``nncy`` command line (also ``python -m nncy.cli``).

    nncy infer MODEL.nnp --input x.npy [--input y=other.csv] [--output out.npy]
    nncy dump MODEL.nnp [--json]
    nncy convert IN [IN ...] OUT [--parameter-format .h5|.protobuf]
                                 [--network-format .nntxt|.protobuf]

``infer`` runs a model with ``nncy.runtime`` on inputs from ``.npy`` or
``.csv`` files (given in the order of the executor's data variables, or as
``NAME=PATH``) and writes each output to ``.npy`` or ``.csv`` (or prints it
when no ``--output`` is given).  A CSV input holds one sample per row; the
number of rows is the batch size.  ``dump`` lists networks, variables,
functions, executors and parameter shapes.  ``convert`` reads any mix of
``.nnp``, ``.nntxt``, ``.protobuf`` and ``.h5`` and writes ``.nnp`` (parts in
the formats asked for), ``.nntxt`` (parameters beside it in ``.h5``, or
``.protobuf`` with ``--parameter-format .protobuf``; inside it with
``--include-params``), ``.protobuf`` (network and parameters in one file) or
``.h5`` (parameters only).

Exit status: 0 on success, 1 when a file is missing or invalid, 2 for a
usage error.
"""
import argparse
import io
import json
import os
import sys

import numpy as np


class CliError(Exception):
    pass


# ---- arrays in files -----------------------------------------------------------

def _read_array(path):
    ext = os.path.splitext(path)[1].lower()
    if not os.path.isfile(path):
        raise CliError('%s: no such file' % path)
    if ext == '.npy':
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise CliError('%s: not a readable .npy file (%s)' % (path, e))
    if ext == '.csv':
        try:
            return np.loadtxt(path, delimiter=',', dtype=np.float32, ndmin=2)
        except ValueError as e:
            raise CliError('%s: not a numeric CSV file (%s)' % (path, e))
    raise CliError("%s: unsupported input type %r; expected '.npy' or '.csv'" % (path, ext))


def _fit(name, arr, decl, from_csv):
    """Give a CSV array (rows x values) the declared shape (-1: the batch)."""
    if not from_csv or arr.shape == decl:
        return arr
    if decl and decl[0] < 0:
        shape = (arr.shape[0],) + tuple(decl[1:])
    else:
        shape = tuple(decl)
    if int(np.prod(shape)) != arr.size:
        raise CliError('input %r: the CSV holds %s values, the network expects shape %s'
                       % (name, arr.shape, decl))
    return arr.reshape(shape)


def _write_array(path, arr):
    from nncy._nnp import atomic_write
    ext = os.path.splitext(path)[1].lower()
    if ext == '.npy':
        atomic_write(path, lambda f: np.save(f, arr, allow_pickle=False))
    elif ext == '.csv':
        buf = io.StringIO()
        np.savetxt(buf, _rows(arr), delimiter=',', fmt='%.9g')
        data = buf.getvalue().encode()
        atomic_write(path, lambda f: f.write(data))
    else:
        raise CliError("%s: unsupported output type %r; expected '.npy' or '.csv'" % (path, ext))


def _rows(arr):
    arr = np.asarray(arr)
    if arr.ndim == 0:
        return arr.reshape(1, 1)
    if arr.ndim == 1:
        return arr.reshape(1, -1)
    return arr.reshape(arr.shape[0], -1)


# ---- commands -------------------------------------------------------------------

def cmd_infer(a):
    from nncy import runtime
    model = runtime.load(a.model, network=a.network, executor=a.executor)
    decl = {n: model._net.variables[n].shape for n in model.input_names}
    named = {}
    positional = []
    for spec in a.input:
        name, sep, path = spec.partition('=')
        if sep and name in decl:
            named[name] = path
        elif sep and not os.path.exists(spec):
            raise CliError('--input %s: the network has no input %r (inputs: %s)'
                           % (spec, name, ', '.join(model.input_names)))
        else:
            positional.append(spec)
    free = [n for n in model.input_names if n not in named]
    if len(positional) > len(free):
        raise CliError('%d input files given, the network takes %d (%s)'
                       % (len(positional) + len(named), len(model.input_names),
                          ', '.join(model.input_names)))
    named.update(zip(free, positional))
    missing = [n for n in model.input_names if n not in named]
    if missing:
        raise CliError('no --input for %s (the network reads %s)'
                       % (', '.join(missing), ', '.join(model.input_names)))
    arrays = {}
    for n, path in named.items():
        arrays[n] = _fit(n, _read_array(path), decl[n], path.lower().endswith('.csv'))
    outs = model.run(**arrays)
    if a.output:
        if len(a.output) != len(outs):
            raise CliError('%d --output paths given, the model has %d outputs (%s)'
                           % (len(a.output), len(outs), ', '.join(outs)))
        for path, (n, arr) in zip(a.output, outs.items()):
            _write_array(path, arr)
    else:
        for n, arr in outs.items():
            print('# %s %s' % (n, tuple(arr.shape)))
            np.savetxt(sys.stdout, _rows(arr), delimiter=',', fmt='%.9g')
    return 0


def _describe(contents):
    from google.protobuf import text_format
    from nncy import _nnp
    proto = contents.proto
    out = {'version': contents.version, 'parts': [p for p, _ in contents.parts],
           'networks': [], 'executors': [], 'parameters': []}
    for net in proto.network:
        d = {'name': net.name, 'batch_size': int(net.batch_size),
             'variables': [{'name': v.name, 'type': v.type, 'shape': list(v.shape.dim)}
                           for v in net.variable],
             'functions': []}
        for f in net.function:
            field = f.WhichOneof('parameter')
            args = ''
            if field:
                args = text_format.MessageToString(getattr(f, field), as_one_line=True)
            d['functions'].append({'name': f.name, 'type': f.type, 'inputs': list(f.input),
                                   'outputs': list(f.output), 'args': args})
        try:
            plan = _nnp.NetPlan(net)
            d['inputs'], d['outputs'] = plan.inputs, plan.outputs
        except ValueError as e:
            d['error'] = str(e)
        out['networks'].append(d)
    for e in proto.executor:
        out['executors'].append({'name': e.name, 'network': e.network_name,
                                 'data': [v.variable_name for v in e.data_variable],
                                 'output': [v.variable_name for v in e.output_variable]})
    for n, (arr, need_grad) in contents.params.items():
        out['parameters'].append({'name': n, 'shape': list(arr.shape), 'dtype': str(arr.dtype),
                                  'need_grad': need_grad})
    return out


def _shape(s):
    return str(tuple(int(d) for d in s))


def cmd_dump(a):
    from nncy import _nnp
    info = _describe(_nnp.read(a.files))
    if a.json:
        print(json.dumps(info, indent=1))
        return 0
    print('files: %s' % ', '.join(a.files))
    if info['version']:
        print('nnp_version: %s' % info['version'])
    for net in info['networks']:
        print("network %r (batch size %d): %d variables, %d functions"
              % (net['name'], net['batch_size'], len(net['variables']), len(net['functions'])))
        if 'error' in net:
            print('  ERROR: %s' % net['error'])
        else:
            shapes = {v['name']: v['shape'] for v in net['variables']}
            print('  inputs:  %s' % ', '.join('%s %s' % (n, _shape(shapes[n]))
                                             for n in net['inputs']))
            print('  outputs: %s' % ', '.join('%s %s' % (n, _shape(shapes[n]))
                                             for n in net['outputs']))
        print('  variables:')
        w = max([len(v['name']) for v in net['variables']] + [4])
        for v in net['variables']:
            print('    %-*s  %-9s  %s' % (w, v['name'], v['type'], _shape(v['shape'])))
        print('  functions:')
        for f in net['functions']:
            print('    %s (%s): %s -> %s%s' % (f['name'], f['type'], ', '.join(f['inputs']),
                                               ', '.join(f['outputs']),
                                               '  [%s]' % f['args'] if f['args'] else ''))
    for e in info['executors']:
        print("executor %r: network %r, data %s, output %s"
              % (e['name'], e['network'], ', '.join(e['data']), ', '.join(e['output'])))
    total = sum(int(np.prod(p['shape'])) for p in info['parameters'])
    print('parameters: %d (%d values)' % (len(info['parameters']), total))
    w = max([len(p['name']) for p in info['parameters']] + [4])
    for p in info['parameters']:
        print('  %-*s  %s %s%s' % (w, p['name'], _shape(p['shape']), p['dtype'],
                                   '' if p['need_grad'] else '  need_grad=False'))
    return 0


def cmd_convert(a):
    from google.protobuf import text_format
    from nncy import _nnp
    from nncy._param_io import to_proto, _AsVars
    c = _nnp.read(a.inputs)
    for net in c.proto.network:
        plan = _nnp.NetPlan(net)
        if c.params:
            plan.check_parameters(c.params)
    out = a.output
    ext = os.path.splitext(out)[1].lower()
    if ext == '.nnp':
        _nnp.write_nnp(out, c.proto, c.params, a.network_format, a.parameter_format)
    elif ext in ('.nntxt', '.prototxt'):
        proto = c.proto
        if a.include_params:
            proto = type(proto)()
            proto.CopyFrom(c.proto)
            to_proto(_AsVars(c.params), proto)
        elif c.params:
            side = os.path.splitext(out)[0] + a.parameter_format
            if a.parameter_format == '.h5':
                data = _nnp._h5_bytes(c.params)
            else:
                data = _nnp._param_proto_bytes(c.params)
            _nnp.atomic_write(side, lambda f: f.write(data))
            print('parameters written to %s' % side)
        data = text_format.MessageToString(proto).encode('utf-8')
        _nnp.atomic_write(out, lambda f: f.write(data))
    elif ext == '.protobuf':
        proto = type(c.proto)()
        proto.CopyFrom(c.proto)
        to_proto(_AsVars(c.params), proto)
        data = proto.SerializeToString()
        _nnp.atomic_write(out, lambda f: f.write(data))
    elif ext == '.h5':
        data = _nnp._h5_bytes(c.params)
        _nnp.atomic_write(out, lambda f: f.write(data))
    else:
        raise CliError("%s: unsupported output type %r; expected '.nnp', '.nntxt', "
                       "'.protobuf' or '.h5'" % (out, ext))
    return 0


def build_parser():
    p = argparse.ArgumentParser(prog='nncy', description='nncy model files: inference, '
                                'inspection and conversion of NNP files.')
    sub = p.add_subparsers(dest='command', metavar='COMMAND')
    sub.required = True

    pi = sub.add_parser('infer', help='run a model on inputs from .npy/.csv files')
    pi.add_argument('model', nargs='+', help='.nnp file (or .nntxt/.protobuf and .h5 files '
                    'read together)')
    pi.add_argument('-i', '--input', action='append', default=[], required=True,
                    metavar='[NAME=]PATH', help='input array (.npy or .csv), in the order of '
                    'the data variables or by name; repeat for several inputs')
    pi.add_argument('-o', '--output', action='append', default=[], metavar='PATH',
                    help='where to write each output (.npy or .csv); default: print')
    pi.add_argument('--network', help='network to run (default: the first executor\'s)')
    pi.add_argument('--executor', help='executor to run (default: the first)')
    pi.set_defaults(func=cmd_infer)

    pd = sub.add_parser('dump', help='list networks, variables, functions and parameters')
    pd.add_argument('files', nargs='+', help='.nnp, .nntxt, .protobuf or .h5 files')
    pd.add_argument('--json', action='store_true', help='print JSON')
    pd.set_defaults(func=cmd_dump)

    pc = sub.add_parser('convert', help='convert between .nnp, .nntxt + .h5 and .protobuf')
    pc.add_argument('inputs', nargs='+', help='files read together')
    pc.add_argument('output', help='file to write (.nnp, .nntxt, .protobuf or .h5)')
    pc.add_argument('--parameter-format', choices=('.h5', '.protobuf'), default='.h5',
                    help='parameter part of an .nnp, or the file beside an .nntxt')
    pc.add_argument('--network-format', choices=('.nntxt', '.protobuf'), default='.nntxt',
                    help='network part of an .nnp')
    pc.add_argument('--include-params', action='store_true',
                    help='put the parameters inside the .nntxt written')
    pc.set_defaults(func=cmd_convert)
    return p


def main(argv=None):
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        return a.func(a)
    except (CliError, ValueError, TypeError, FileNotFoundError) as e:
        print('nncy %s: error: %s' % (a.command, e), file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
