"""Parameter files in NNabla's layouts: ``nn.save_parameters`` / ``nn.load_parameters``.

``.h5``
    one dataset per parameter, named by its full scope path (``conv1/W``, so
    nested groups), with attributes ``need_grad`` (bool) and ``index`` (its
    position, which gives the order on loading).
``.protobuf``
    a serialized ``NNablaProtoBuf`` whose repeated ``parameter`` holds
    ``variable_name``, ``shape.dim``, ``data`` (float32 values, C order) and
    ``need_grad``.
``.nntxt`` / ``.prototxt`` (loading only)
    the text form of the same message.

Writing goes to a temporary file beside the target, renamed over it once
complete, so an interrupted save leaves the previous file intact.  Reading
parses data only (h5py, protobuf); a shape that disagrees with the number of
values, or non-numeric data, is rejected with ``ValueError``.

File objects are accepted too (``extension`` then names the format), and the
helpers ``write_h5`` / ``read_h5`` / ``to_proto`` / ``from_proto`` serve the
``.nnp`` reader and writer.
"""
import io
import math
import os
from collections import OrderedDict

import numpy as np

__all__ = ['save_parameters', 'load_parameters', 'write_h5', 'read_h5', 'to_proto',
           'from_proto', 'set_parameters_from']


def _ext(path, extension, who):
    if isinstance(path, (str, os.PathLike)):
        ext = os.path.splitext(os.fspath(path))[1]
    else:
        ext = extension
    if not ext:
        raise ValueError('%s: cannot tell the file type of %r; pass extension=' % (who, path))
    return ext.lower()


def _data_of(v):
    return np.asarray(v.d, order="C")


# ---- writing ----------------------------------------------------------------

def write_h5(f, params):
    """Write ``params`` (name -> Variable) into ``f`` (a path or a binary file
    object) in NNabla's ``.h5`` layout."""
    import h5py
    with h5py.File(f, 'w') as hd:
        for i, (name, v) in enumerate(params.items()):
            hd[name] = _data_of(v)
            hd[name].attrs['need_grad'] = bool(v.need_grad)
            hd[name].attrs['index'] = i


def to_proto(params, proto=None):
    """An ``NNablaProtoBuf`` (or the given one) holding ``params``."""
    from nncy.proto import nnabla_pb2
    if proto is None:
        proto = nnabla_pb2.NNablaProtoBuf()
    for name, v in params.items():
        p = proto.parameter.add()
        p.variable_name = name
        p.shape.dim.extend(int(s) for s in v.shape)
        p.data.extend(np.asarray(v.d, np.float32).ravel().tolist())
        p.need_grad = bool(v.need_grad)
    return proto


def save_parameters(path, params=None, extension=None):
    """Save parameters (default: every parameter of the current scope,
    ``nn.get_parameters(grad_only=False)``) to ``path``: ``.h5`` or
    ``.protobuf``.  ``path`` may be a binary file object, with ``extension``
    (``'.h5'`` or ``'.protobuf'``) naming the format."""
    from nncy.parameter import get_parameters
    if params is None:
        params = get_parameters(grad_only=False)
    ext = _ext(path, extension, 'save_parameters')
    if ext == '.h5':
        def write(f):
            write_h5(f, params)
    elif ext == '.protobuf':
        data = to_proto(params).SerializeToString()

        def write(f):
            if isinstance(f, str):
                with open(f, 'wb') as fh:
                    fh.write(data)
            else:
                f.write(data)
    else:
        raise ValueError("save_parameters: unsupported file type %r; expected '.h5' or "
                         "'.protobuf'" % ext)
    if not isinstance(path, (str, os.PathLike)):
        write(path)
        if hasattr(path, 'seek'):
            path.seek(0)
        return
    from nncy.solvers import _atomic_target, _commit
    path = os.fspath(path)
    tmp = _atomic_target(path)
    try:
        write(tmp)
        _commit(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---- reading ----------------------------------------------------------------

def read_h5(f, max_bytes=None):
    """name -> (array, need_grad) from an NNabla parameter ``.h5`` (a path, a
    binary file object or bytes), in the order of the ``index`` attributes.
    A dataset declaring more than ``max_bytes`` bytes (``NNCY_NNP_MAX_BYTES``,
    2 GiB, by default) is refused before it is read: HDF5 lets a small file
    declare a huge, unwritten dataset."""
    import h5py
    if max_bytes is None:
        max_bytes = int(os.environ.get('NNCY_NNP_MAX_BYTES', 1 << 31))
    if isinstance(f, (bytes, bytearray)):
        f = io.BytesIO(f)
    found = []
    with h5py.File(f, 'r') as hd:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                found.append((obj.attrs.get('index', None), name))
        hd.visititems(visit)
        found.sort(key=lambda x: (x[0] is None, -1 if x[0] is None else int(x[0]), x[1]))
        out = OrderedDict()
        for _, name in found:
            ds = hd[name]
            if ds.dtype.kind not in 'fiub':
                raise ValueError('load_parameters: %r holds %s data, expected numbers'
                                 % (name, ds.dtype))
            nbytes = math.prod(int(d) for d in ds.shape) * ds.dtype.itemsize
            if nbytes > max_bytes:
                raise ValueError('load_parameters: %r declares shape %s (%d bytes), over the '
                                 'limit of %d (NNCY_NNP_MAX_BYTES)'
                                 % (name, tuple(ds.shape), nbytes, max_bytes))
            out[name] = (np.asarray(ds[()]), bool(ds.attrs.get('need_grad', True)))
    return out


def from_proto(proto):
    """name -> (float32 array, need_grad) from an ``NNablaProtoBuf``'s parameters."""
    out = OrderedDict()
    for p in proto.parameter:
        shape = tuple(int(d) for d in p.shape.dim)
        if any(d < 0 for d in shape):
            raise ValueError('load_parameters: %r has a negative dimension in shape %s'
                             % (p.variable_name, shape))
        n = math.prod(shape)          # Python ints: no overflow for absurd shapes
        if len(p.data) != n:
            raise ValueError('load_parameters: %r holds %d values for shape %s (%d expected)'
                             % (p.variable_name, len(p.data), shape, n))
        out[p.variable_name] = (np.asarray(p.data, np.float32).reshape(shape), bool(p.need_grad))
    return out


def set_parameters_from(loaded):
    """Create or overwrite the parameters of the current scope from
    ``loaded`` (name -> (array, need_grad)); an existing parameter must have
    the same shape, and takes the file's values, dtype and ``need_grad``."""
    from nncy._core import Variable
    from nncy.parameter import get_parameter, set_parameter
    for name, (arr, need_grad) in loaded.items():
        v = get_parameter(name)
        if v is None:
            set_parameter(name, Variable.from_numpy_array(arr, need_grad=need_grad))
            continue
        if tuple(v.shape) != tuple(arr.shape):
            raise ValueError('load_parameters: parameter %r exists with shape %s; the file holds '
                             'shape %s' % (name, tuple(v.shape), tuple(arr.shape)))
        v.data.cast(arr.dtype)[...] = arr
        v.need_grad = need_grad


def load_parameters(path, proto=None, needs_proto=False, extension='.nntxt'):
    """Load parameters into the current scope from ``path`` (``.h5``,
    ``.protobuf``, ``.nntxt``/``.prototxt``; or a binary/text file object with
    ``extension``).  Parameters that exist keep their Variables and take the
    loaded values.  Returns the ``NNablaProtoBuf`` read (for ``.h5``, holding
    the parameters only when ``needs_proto``), merged into ``proto`` if given."""
    from nncy.proto import nnabla_pb2
    ext = _ext(path, extension, 'load_parameters')
    if proto is None:
        proto = nnabla_pb2.NNablaProtoBuf()
    is_path = isinstance(path, (str, os.PathLike))
    if ext == '.h5':
        loaded = read_h5(os.fspath(path) if is_path else path)
        if needs_proto:
            to_proto(_AsVars(loaded), proto)
    elif ext == '.protobuf':
        if is_path:
            with open(path, 'rb') as f:
                data = f.read()
        else:
            data = path.read()
        part = nnabla_pb2.NNablaProtoBuf()
        part.ParseFromString(data)
        loaded = from_proto(part)
        proto.MergeFrom(part)
    elif ext in ('.nntxt', '.prototxt'):
        from google.protobuf import text_format
        if is_path:
            with open(path) as f:
                text = f.read()
        else:
            text = path.read()
        if isinstance(text, bytes):
            text = text.decode()
        part = nnabla_pb2.NNablaProtoBuf()
        text_format.Merge(text, part)
        loaded = from_proto(part)
        proto.MergeFrom(part)
    else:
        raise ValueError("load_parameters: unsupported file type %r; expected '.h5', "
                         "'.protobuf', '.nntxt' or '.prototxt'" % ext)
    set_parameters_from(loaded)
    return proto


class _AsVars(OrderedDict):
    """(array, need_grad) pairs seen as Variables with ``.d``, ``.shape`` and
    ``.need_grad`` (for ``to_proto``)."""

    class _V:
        def __init__(self, arr, need_grad):
            self.d, self.shape, self.need_grad = arr, arr.shape, need_grad

    def __init__(self, loaded):
        super().__init__((k, self._V(a, g)) for k, (a, g) in loaded.items())
