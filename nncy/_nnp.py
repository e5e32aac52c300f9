"""NNP model files: the mapping between function-table rows and the NNP schema,
and safe reading and writing of ``.nnp`` archives and their parts.

Used by ``nncy.utils.save``, ``nncy.utils.nnp_graph``, ``nncy.runtime`` and
``nncy.cli``.  Nothing here imports h5py unless an ``.h5`` part is read or
written, and nothing imports CuPy.

Arguments <-> ``<snake>_param`` messages
    A row's ``Function.<snake>_param`` field is found through the schema (the
    ``parameter`` oneof field whose message is ``<TypeName>Parameter``), and
    each argument of the row maps onto the message field of the same name.
    ``ARG_RENAMES`` lists the few names NNabla spells differently (its Python
    wrappers rename them before building the C++ function), ``NONE_FILL`` how
    an argument left at ``None`` is written (NNabla writes the value its
    wrapper would compute), and ``OPTIONAL_ORDER`` which optional inputs an
    input list that holds only some of them means.  Everything else follows
    from the row's argument types and the field types of the message.

Safety
    Archives are read in memory (no extraction); member names that are
    absolute or climb out of the archive are rejected, and so are archives
    whose members declare (each, or together) more than ``max_bytes`` (``NNCY_NNP_MAX_BYTES``, 2 GiB,
    protobuf's own message limit, by default).  Parts are parsed as data only (protobuf, h5py); every
    failure comes out as a ``ValueError`` that names the file and the part.
"""
import io
import os
import posixpath
import zipfile
import zlib
from collections import OrderedDict

import numpy as np

from nncy._table import BY_TYPE, REQUIRED

__all__ = ['NNP_VERSION', 'schema', 'encode_args', 'decode_args', 'present_inputs',
           'read', 'write_nnp', 'plan_network', 'Contents']

NNP_VERSION = '0.1'
MAX_BYTES = int(os.environ.get('NNCY_NNP_MAX_BYTES', 1 << 31))
MAX_MEMBERS = 4096
# Elements one variable may declare (2**34 float32 values are 64 GiB).
MAX_ELEMENTS = int(os.environ.get('NNCY_NNP_MAX_ELEMENTS', 1 << 34))

# Argument names of the table that NNabla's messages spell otherwise; used
# only when the message has no field of the argument's own name (Softmax
# keeps its ``axis``, Sum's becomes ``axes``).
ARG_RENAMES = {'axis': 'axes', 'keepdims': 'keep_dims'}


def _pb():
    from nncy.proto import nnabla_pb2
    return nnabla_pb2


def _is_repeated(fd):
    rep = getattr(fd, 'is_repeated', None)
    if rep is not None:
        return bool(rep)
    return fd.label == fd.LABEL_REPEATED


def _is_shape(fd):
    return fd.message_type is not None and fd.message_type.name == 'Shape'


# ---------------------------------------------------------------------------
# Table rows <-> schema
# ---------------------------------------------------------------------------

class RowSchema:
    """Where a row's arguments go: ``field`` (the oneof field of
    ``Function``, None when the schema has no message for the row),
    ``message`` (its descriptor) and ``argmap`` (argument -> field
    descriptor, None for an argument the message cannot hold)."""
    __slots__ = ('spec', 'field', 'message', 'argmap')

    def __init__(self, spec, field, message, argmap):
        self.spec, self.field, self.message, self.argmap = spec, field, message, argmap

    @property
    def unmapped(self):
        return [a for a, fd in self.argmap.items() if fd is None]


_FIELDS = None
_SCHEMAS = {}


def param_fields():
    """``<TypeName>Parameter`` -> name of its field in ``Function.parameter``."""
    global _FIELDS
    if _FIELDS is None:
        oneof = _pb().Function.DESCRIPTOR.oneofs_by_name['parameter']
        _FIELDS = {f.message_type.name: f.name for f in oneof.fields}
    return _FIELDS


def schema(spec):
    """The ``RowSchema`` of a table row."""
    s = _SCHEMAS.get(spec.type_name)
    if s is not None:
        return s
    field = param_fields().get(spec.type_name + 'Parameter')
    message = None
    argmap = OrderedDict()
    if field is not None:
        message = _pb().Function.DESCRIPTOR.fields_by_name[field].message_type
    for name, _, _ in spec.args:
        fd = None
        if message is not None:
            fd = message.fields_by_name.get(name)
            if fd is None and name in ARG_RENAMES:
                fd = message.fields_by_name.get(ARG_RENAMES[name])
        argmap[name] = fd
    s = _SCHEMAS[spec.type_name] = RowSchema(spec, field, message, argmap)
    return s


def _row(type_name, where=''):
    spec = BY_TYPE.get(type_name)
    if spec is None:
        raise ValueError('unknown function type %r%s: nncy has no such function'
                         % (type_name, where))
    return spec


# How an argument left at None is written, from the input shapes: NNabla's
# messages have no "unset", its wrappers fill in these values.
def _fill_axis(fd, shapes):
    nd = len(shapes[0]) if shapes else 0
    return list(range(nd)) if _is_repeated(fd) else nd - 1


# Arguments NNabla's schema holds as the number of a function's outputs.
OUTPUT_COUNT_ARGS = {'output_stat'}

NONE_FILL = {
    'axis': _fill_axis,                                               # Sum, Softmax, ...
    ('Slice', 'start'): lambda fd, shapes: [0] * len(shapes[0]),
    ('Slice', 'stop'): lambda fd, shapes: list(shapes[0]),
    ('Slice', 'step'): lambda fd, shapes: [1] * len(shapes[0]),
    ('BroadcastTo', 'axis'): lambda fd, shapes: len(shapes[0]) - len(shapes[1]),
    ('RandomErase', 'n'): lambda fd, shapes: 1,
}


def _as_list(v):
    if isinstance(v, (tuple, list, np.ndarray)):
        return list(v)
    return [v]


def _set_field(msg, fd, value, where):
    cpp = fd.cpp_type
    if _is_shape(fd):
        getattr(msg, fd.name).dim.extend(int(d) for d in _as_list(value))
        return
    if cpp == fd.CPPTYPE_MESSAGE:
        raise ValueError('%s: field %r holds a %s message, which nncy does not write'
                         % (where, fd.name, fd.message_type.name))
    conv = {fd.CPPTYPE_BOOL: bool, fd.CPPTYPE_STRING: str,
            fd.CPPTYPE_FLOAT: float, fd.CPPTYPE_DOUBLE: float}.get(cpp, int)
    if _is_repeated(fd):
        getattr(msg, fd.name).extend(conv(v) for v in _as_list(value))
        return
    if isinstance(value, (tuple, list)):
        if len(value) != 1:
            raise ValueError('%s: field %r holds one value, got %r' % (where, fd.name, value))
        value = value[0]
    setattr(msg, fd.name, conv(value))


def encode_args(fproto, spec, args, in_shapes):
    """Fill ``fproto``'s ``<snake>_param`` from ``args`` (the normalised
    argument dict of a function node of row ``spec``)."""
    if not spec.args:
        return
    sch = schema(spec)
    where = '%s (function %r)' % (spec.type_name, fproto.name)
    if sch.message is None:
        raise ValueError('%s cannot be saved in an NNP file: the schema has no %sParameter '
                         'message to hold its arguments %s'
                         % (where, spec.type_name, ', '.join(spec.arg_names)))
    msg = getattr(fproto, sch.field)
    msg.SetInParent()
    for name, typ, default in spec.args:
        fd = sch.argmap[name]
        v = args.get(name, default)
        if fd is None and name in OUTPUT_COUNT_ARGS:
            continue              # written as the function's number of outputs
        if fd is None:
            if v == default:
                continue
            raise ValueError('%s cannot be saved in an NNP file: %sParameter has no field for '
                             'argument %r (=%r); only its default %r can be saved'
                             % (where, spec.type_name, name, v, default))
        if v is None:
            fill = NONE_FILL.get((spec.type_name, name)) or NONE_FILL.get(name)
            if fill is None:
                continue          # left unset: the field's zero value
            v = fill(fd, in_shapes)
        _set_field(msg, fd, v, where)


def _field_value(msg, fd):
    if _is_shape(fd):
        return tuple(int(d) for d in getattr(msg, fd.name).dim) if msg.HasField(fd.name) else None
    v = getattr(msg, fd.name)
    if _is_repeated(fd):
        return tuple(v)
    return v


def decode_args(spec, fproto):
    """Argument values, in table order, of a ``Function`` message of row
    ``spec``.  Fields the message leaves out read as their zero values (as
    protobuf 3 defines them); arguments the schema cannot hold take the
    table's default."""
    sch = schema(spec)
    msg = None
    if sch.field is not None:
        msg = getattr(fproto, sch.field)
    out = []
    for name, typ, default in spec.args:
        fd = sch.argmap.get(name)
        if fd is None and name in OUTPUT_COUNT_ARGS:
            out.append(len(fproto.output) > 1)
            continue
        if msg is None or fd is None:
            if default is REQUIRED:
                raise ValueError('%s (function %r): argument %r is required and the file '
                                 'cannot hold it' % (spec.type_name, fproto.name, name))
            out.append(default)
            continue
        v = _field_value(msg, fd)
        if typ in ('shape', 'ints'):
            # an unset Shape field is an argument left at None (the function
            # then derives it from the input shapes, as conv's stride does)
            if v is None:
                v = None if default is None else ()
            else:
                v = tuple(int(x) for x in _as_list(v))
        elif typ == 'axis':
            v = tuple(int(x) for x in v) if isinstance(v, tuple) else int(v)
        elif typ == 'floats':
            v = tuple(float(x) for x in v)
        elif typ == 'int':
            v = int(v)
        elif typ == 'float':
            v = float(v)
        elif typ == 'bool':
            v = bool(v)
        elif typ == 'str':
            v = str(v)
        out.append(v)
    return tuple(out)


def _recurrent_order(args):
    # weight (the layers after the first) exists only when num_layers > 1
    return ('weight', 'bias') if args.get('num_layers', 1) > 1 else ('bias', 'weight')


# Which optional inputs an input list holding only some of them means: by
# default the optional inputs in table order (the trailing ones left out).
OPTIONAL_ORDER = {'RNN': _recurrent_order, 'LSTM': _recurrent_order, 'GRU': _recurrent_order}


def present_inputs(spec, args, n):
    """Names of the table inputs an NNP input list of length ``n`` holds, in
    table order; None for a variadic row (all inputs positional)."""
    if any(i.variadic for i in spec.inputs):
        return None
    required = [i.name for i in spec.inputs if not i.optional]
    optional = [i.name for i in spec.inputs if i.optional]
    k = n - len(required)
    if k < 0 or k > len(optional):
        raise ValueError('%s takes %d to %d inputs (%s), the file gives %d'
                         % (spec.type_name, len(required), len(spec.inputs),
                            ', '.join(i.name for i in spec.inputs), n))
    order = OPTIONAL_ORDER[spec.type_name](args) if spec.type_name in OPTIONAL_ORDER \
        else optional
    chosen = set(order[:k])
    return [i.name for i in spec.inputs if not i.optional or i.name in chosen]


# ---------------------------------------------------------------------------
# Networks in a proto: checks and a plan (functions in order, inputs, outputs)
# ---------------------------------------------------------------------------

class FuncDef:
    __slots__ = ('name', 'spec', 'inputs', 'outputs', 'proto')

    def __init__(self, name, spec, inputs, outputs, proto):
        self.name, self.spec, self.inputs, self.outputs, self.proto = \
            name, spec, inputs, outputs, proto


class VarDef:
    __slots__ = ('name', 'type', 'shape', 'proto')

    def __init__(self, name, type_, shape, proto):
        self.name, self.type, self.shape, self.proto = name, type_, shape, proto

    @property
    def is_parameter(self):
        return self.type == 'Parameter'

    def resolve(self, batch_size):
        """The shape with a negative first dimension (the batch) replaced."""
        shape = list(self.shape)
        if shape and shape[0] < 0:
            shape[0] = batch_size
        return tuple(shape)


class NetPlan:
    """A checked network: ``variables`` (name -> VarDef), ``functions`` (in an
    order that runs every input before its consumers), ``inputs`` (buffers
    no function writes), ``outputs`` (variables no function reads) and
    ``parameters`` (parameter variables the functions read)."""

    def __init__(self, net):
        self.name = net.name
        self.batch_size = int(net.batch_size)
        where = 'network %r' % net.name
        self.variables = OrderedDict()
        for v in net.variable:
            if v.name in self.variables:
                raise ValueError('%s: variable %r is declared twice' % (where, v.name))
            shape = tuple(int(d) for d in v.shape.dim)
            for i, d in enumerate(shape):
                if d < 0 and not (i == 0 and v.type != 'Parameter'):
                    raise ValueError('%s: variable %r has shape %s; only the first (batch) '
                                     'dimension of a buffer may be negative'
                                     % (where, v.name, shape))
            n = int(np.prod([abs(d) for d in shape], dtype=np.float64))
            if n > MAX_ELEMENTS:
                raise ValueError('%s: variable %r declares shape %s (%d elements), over the '
                                 'limit of %d' % (where, v.name, shape, n, MAX_ELEMENTS))
            if v.type not in ('Buffer', 'Parameter'):
                raise ValueError("%s: variable %r has type %r, expected 'Buffer' or "
                                 "'Parameter'" % (where, v.name, v.type))
            self.variables[v.name] = VarDef(v.name, v.type, shape, v)
        funcs = []
        producer = {}
        consumed = set()
        names = set()
        for f in net.function:
            fwhere = " (function %r of %s)" % (f.name, where)
            spec = _row(f.type, fwhere)
            if f.name in names:
                raise ValueError('%s: function name %r is used twice' % (where, f.name))
            names.add(f.name)
            for n in list(f.input) + list(f.output):
                if n not in self.variables:
                    raise ValueError('%s: function %r uses variable %r, which the network '
                                     'does not declare' % (where, f.name, n))
            for n in f.output:
                if n in producer:
                    raise ValueError('%s: variable %r is written by both %r and %r'
                                     % (where, n, producer[n], f.name))
                if self.variables[n].is_parameter:
                    raise ValueError('%s: function %r writes parameter %r'
                                     % (where, f.name, n))
                producer[n] = f.name
            consumed.update(f.input)
            funcs.append(FuncDef(f.name, spec, list(f.input), list(f.output), f))
        # Order: repeatedly take the functions whose inputs are all available.
        ready = {n for n, v in self.variables.items() if n not in producer}
        order = []
        pending = funcs
        while pending:
            rest = [f for f in pending if not all(n in ready for n in f.inputs)]
            done = [f for f in pending if all(n in ready for n in f.inputs)]
            if not done:
                raise ValueError('%s: functions %s depend on each other in a cycle'
                                 % (where, ', '.join(repr(f.name) for f in rest[:5])))
            for f in done:
                order.append(f)
                ready.update(f.outputs)
            pending = rest
        self.functions = order
        used = consumed | set(producer)
        self.inputs = [n for n, v in self.variables.items()
                       if n in used and n not in producer and not v.is_parameter]
        self.outputs = [n for n in self.variables if n in producer and n not in consumed]
        self.parameters = [n for n, v in self.variables.items() if n in used and v.is_parameter]

    def check_parameters(self, params, lookup=None):
        """Every parameter the functions read exists (through ``lookup(name)``
        -> array or None, else in ``params``, name -> (array, need_grad)) with
        the declared shape."""
        for n in self.parameters:
            arr = lookup(n) if lookup is not None else None
            if arr is None and n in params:
                arr = params[n][0]
            if arr is None:
                raise ValueError('network %r: parameter %r is missing from the parameter file'
                                 % (self.name, n))
            want = self.variables[n].shape
            if tuple(arr.shape) != want:
                raise ValueError('network %r: parameter %r has shape %s in the parameter '
                                 'file, the network declares %s'
                                 % (self.name, n, tuple(arr.shape), want))


def plan_network(proto, name=None):
    """The ``NetPlan`` of network ``name`` (default: the first one)."""
    if not proto.network:
        raise ValueError('the file holds no network')
    if name is None:
        return NetPlan(proto.network[0])
    for net in proto.network:
        if net.name == name:
            return NetPlan(net)
    raise ValueError('no network %r; the file holds %s'
                     % (name, ', '.join(repr(n.name) for n in proto.network)))


def resolve_reshape(args, spec, in_shapes, batch_size, saved_batch_size):
    """Reshape's ``shape`` when it does not fit the input: a leading
    dimension equal to the saved batch size follows the batch size the
    network is built for; a shape one dimension short takes the batch size in
    front (NNabla's Console leaves it out)."""
    shape = list(args[spec.arg_names.index('shape')])
    if not in_shapes:
        return args
    n = int(np.prod(in_shapes[0], dtype=np.int64))
    if -1 in shape or int(np.prod(shape, dtype=np.int64)) == n:
        return args
    cands = []
    if shape and shape[0] == saved_batch_size:
        cands.append([batch_size] + shape[1:])
    cands.append([batch_size] + shape)
    for c in cands:
        if int(np.prod(c, dtype=np.int64)) == n:
            i = spec.arg_names.index('shape')
            return args[:i] + (tuple(c),) + args[i + 1:]
    return args          # the function's own check reports the mismatch


# Arguments that depend on the batch size a network is built for.
BATCH_RESOLVERS = {'Reshape': resolve_reshape}


def function_args(fdef, in_shapes, batch_size, saved_batch_size):
    """Decoded argument values of ``fdef`` for the given input shapes."""
    args = decode_args(fdef.spec, fdef.proto)
    r = BATCH_RESOLVERS.get(fdef.spec.type_name)
    if r is not None:
        args = r(args, fdef.spec, in_shapes, batch_size, saved_batch_size)
    return args


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------

class Contents:
    """What a model file holds: ``proto`` (an ``NNablaProtoBuf`` without its
    parameters), ``params`` (name -> (array, need_grad)) and ``version``."""

    def __init__(self):
        self.proto = _pb().NNablaProtoBuf()
        self.params = OrderedDict()
        self.version = None
        self.parts = []           # (member name, kind) read, for dump

    def merge_proto(self, part, where):
        from nncy._param_io import from_proto
        try:
            self.params.update(from_proto(part))
        except ValueError as e:
            raise ValueError('%s: %s' % (where, e)) from None
        del part.parameter[:]
        self.proto.MergeFrom(part)


def _check_member_name(name, where):
    if not name or '\x00' in name:
        raise ValueError('%s: archive member with an empty or invalid name' % where)
    n = name.replace('\\', '/')
    if n.startswith('/') or (len(n) > 1 and n[1] == ':'):
        raise ValueError('%s: archive member %r has an absolute path' % (where, name))
    norm = posixpath.normpath(n)
    if norm == '..' or norm.startswith('../') or '/../' in '/' + n + '/':
        raise ValueError('%s: archive member %r points outside the archive' % (where, name))


def _parse_text(data, where):
    from google.protobuf import text_format
    try:
        text = data.decode('utf-8') if isinstance(data, (bytes, bytearray)) else data
        part = _pb().NNablaProtoBuf()
        text_format.Merge(text, part)
    except (UnicodeDecodeError, text_format.ParseError) as e:
        raise ValueError('%s: not a valid NNP text file (%s)' % (where, e)) from None
    return part


def _parse_binary(data, where):
    from google.protobuf.message import DecodeError
    part = _pb().NNablaProtoBuf()
    try:
        part.ParseFromString(bytes(data))
    except (DecodeError, ValueError) as e:
        raise ValueError('%s: not a valid NNP protobuf file (%s)' % (where, e)) from None
    return part


def _read_h5(data, where, max_bytes):
    from nncy._param_io import read_h5
    try:
        return read_h5(bytes(data), max_bytes=max_bytes)
    except ValueError as e:
        raise ValueError('%s: %s' % (where, e)) from None
    except Exception as e:       # h5py reports corrupt files as OSError, KeyError, ...
        raise ValueError('%s: not a valid parameter .h5 file (%s: %s)'
                         % (where, type(e).__name__, e)) from None


def _add_part(contents, name, data, where, max_bytes):
    ext = os.path.splitext(name)[1].lower()
    if ext in ('.nntxt', '.prototxt'):
        contents.merge_proto(_parse_text(data, where), where)
    elif ext in ('.protobuf', '.pb'):
        contents.merge_proto(_parse_binary(data, where), where)
    elif ext == '.h5':
        contents.params.update(_read_h5(data, where, max_bytes))
    else:
        return False
    contents.parts.append((name, ext))
    return True


def _read_zip(src, where, contents, max_bytes):
    try:
        zf = zipfile.ZipFile(src)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as e:
        raise ValueError('%s: not a valid .nnp (zip) archive (%s)' % (where, e)) from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise ValueError('%s: archive holds %d members, over the limit of %d'
                             % (where, len(infos), MAX_MEMBERS))
        seen = set()
        for info in infos:
            _check_member_name(info.filename, where)
            if info.filename in seen:
                raise ValueError('%s: archive member %r appears twice' % (where, info.filename))
            seen.add(info.filename)
            if info.file_size > max_bytes:
                raise ValueError('%s: archive member %r declares %d bytes, over the limit of '
                                 '%d (NNCY_NNP_MAX_BYTES)'
                                 % (where, info.filename, info.file_size, max_bytes))
        total = sum(info.file_size for info in infos)
        if total > max_bytes:
            raise ValueError('%s: the archive members declare %d bytes in all, over the limit '
                             'of %d (NNCY_NNP_MAX_BYTES)' % (where, total, max_bytes))
        for info in infos:
            if info.is_dir():
                continue
            mwhere = '%s: %s' % (where, info.filename)
            try:
                data = zf.read(info)
            except (zipfile.BadZipFile, EOFError, zlib.error, OSError, NotImplementedError,
                    RuntimeError) as e:
                raise ValueError('%s: cannot be read (%s)' % (mwhere, e)) from None
            if posixpath.basename(info.filename) == 'nnp_version.txt':
                contents.version = data.decode('utf-8', 'replace').strip()
                contents.parts.append((info.filename, 'version'))
                continue
            _add_part(contents, info.filename, data, mwhere, max_bytes)
    if not contents.proto.network and not contents.params:
        raise ValueError('%s: the archive holds neither a network nor parameters' % where)


def read(sources, max_bytes=None, extension=None):
    """Read one or several model files (``.nnp``, ``.nntxt``/``.prototxt``,
    ``.protobuf``, ``.h5``; a path, or a binary file object with
    ``extension``) into one ``Contents``; later files add to earlier ones."""
    if max_bytes is None:
        max_bytes = MAX_BYTES
    if isinstance(sources, (str, os.PathLike)) or hasattr(sources, 'read'):
        sources = [sources]
    contents = Contents()
    for src in sources:
        if hasattr(src, 'read'):
            where = getattr(src, 'name', '<file object>')
            ext = (extension or '').lower()
            if not ext:
                raise ValueError('%s: pass extension= to say what the file object holds'
                                 % where)
        else:
            where = os.fspath(src)
            ext = os.path.splitext(where)[1].lower()
            if not os.path.isfile(where):
                raise FileNotFoundError('%s: no such file' % where)
            if os.path.getsize(where) > max_bytes and ext != '.nnp':
                raise ValueError('%s: %d bytes, over the limit of %d (NNCY_NNP_MAX_BYTES)'
                                 % (where, os.path.getsize(where), max_bytes))
        if ext == '.nnp':
            _read_zip(src, where, contents, max_bytes)
            continue
        if ext not in ('.nntxt', '.prototxt', '.protobuf', '.pb', '.h5'):
            raise ValueError("%s: unsupported file type %r; expected '.nnp', '.nntxt', "
                             "'.prototxt', '.protobuf' or '.h5'" % (where, ext))
        if hasattr(src, 'read'):
            data = src.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise ValueError('%s: over the limit of %d bytes' % (where, max_bytes))
        else:
            with open(src, 'rb') as f:
                data = f.read()
        _add_part(contents, 'x' + ext, data, where, max_bytes)
    return contents


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------

def _h5_bytes(params):
    from nncy._param_io import write_h5, _AsVars
    buf = io.BytesIO()
    write_h5(buf, _AsVars(params))
    return buf.getvalue()


def _param_proto_bytes(params):
    from nncy._param_io import to_proto, _AsVars
    return to_proto(_AsVars(params)).SerializeToString()


def parts_of(proto, params, network_format='.nntxt', parameter_format='.h5'):
    """The members of an ``.nnp`` archive, as (name, bytes) pairs."""
    from google.protobuf import text_format
    if network_format not in ('.nntxt', '.protobuf'):
        raise ValueError("network_format must be '.nntxt' or '.protobuf', got %r"
                         % (network_format,))
    if parameter_format not in ('.h5', '.protobuf'):
        raise ValueError("parameter_format must be '.h5' or '.protobuf', got %r"
                         % (parameter_format,))
    if network_format == '.nntxt':
        net = ('network.nntxt', text_format.MessageToString(proto).encode('utf-8'))
    else:
        net = ('network.protobuf', proto.SerializeToString())
    if parameter_format == '.h5':
        par = ('parameter.h5', _h5_bytes(params))
    else:
        par = ('parameter.protobuf', _param_proto_bytes(params))
    return [('nnp_version.txt', (NNP_VERSION + '\n').encode()), net, par]


def atomic_write(path, write):
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it
    over ``path``; on any failure the temporary file goes and ``path`` is left
    as it was."""
    import tempfile
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=d)
    try:
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        mask = os.umask(0)        # the permissions a new file would get (mkstemp: 0600)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_nnp(target, proto, params, network_format='.nntxt', parameter_format='.h5'):
    """Write an ``.nnp`` archive (atomically for a path; or into a binary file
    object)."""
    parts = parts_of(proto, params, network_format, parameter_format)

    def write(f):
        with zipfile.ZipFile(f, 'w', zipfile.ZIP_DEFLATED) as zf:
            for name, data in parts:
                zf.writestr(name, data)

    if hasattr(target, 'write'):
        write(target)
    else:
        atomic_write(target, write)
