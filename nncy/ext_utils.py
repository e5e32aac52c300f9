"""Context construction by extension name."""
import importlib.util

from nncy import _core
from nncy._core import Context

_BACKENDS = {
    'cpu': (['cpu:{t}'], 'CpuCachedArray'),
    'cuda': (['cuda:{t}', 'cpu:{t}'], 'CudaCachedArray'),
    'cudnn': (['cudnn:{t}', 'cuda:{t}', 'cpu:{t}'], 'CudaCachedArray'),
}
_TYPES = ('float', 'half', 'mixed_half')


def list_extensions():
    return list(_BACKENDS)


def get_extension_context(ext_name, device_id='0', type_config='float', **kw):
    """A Context for ``ext_name`` ('cpu', 'cuda' or 'cudnn'); GPU contexts need
    the ``nncy[cuda]`` extra (CuPy), which is checked here but not imported."""
    if ext_name not in _BACKENDS:
        raise ValueError("get_extension_context: argument 'ext_name' must be one of %s, got %r"
                         % (list(_BACKENDS), ext_name))
    if type_config not in _TYPES:
        raise ValueError("get_extension_context: argument 'type_config' must be one of %s, "
                         "got %r" % (list(_TYPES), type_config))
    if ext_name != 'cpu' and _core.get_device_backend() is None and \
            importlib.util.find_spec('cupy') is None:
        raise ImportError("get_extension_context: the %r extension needs CuPy; install "
                          "nncy[cuda]" % ext_name)
    t = 'half' if type_config == 'mixed_half' else type_config
    backends, array_class = _BACKENDS[ext_name]
    return Context([b.format(t=t) for b in backends], array_class, str(device_id))


def import_extension_module(ext_name):
    if ext_name == 'cpu':
        return importlib.import_module('nncy')
    get_extension_context(ext_name)
    return importlib.import_module('nncy.cuda')
