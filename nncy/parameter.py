"""Parameter registry: parameters live in a tree of scopes named by '/'."""
from collections import OrderedDict
from contextlib import contextmanager

from nncy._core import Variable

_root = OrderedDict()
_current = _root
_path = []


def get_current_parameter_scope():
    return '/'.join(_path)


@contextmanager
def parameter_scope(name, scope=None):
    """Enter the scope ``name`` (nested names are joined with '/'); a dict
    given as ``scope`` is used as the scope's storage."""
    global _current
    prev = _current
    parts = name.split('/') if name else []
    node = _current if scope is None else scope
    if scope is None:
        for p in parts:
            node = node.setdefault(p, OrderedDict())
    _path.extend(parts)
    _current = node
    try:
        yield node
    finally:
        _current = prev
        del _path[len(_path) - len(parts):]


def _walk(node, prefix):
    for k, v in node.items():
        if isinstance(v, dict):
            yield from _walk(v, prefix + k + '/')
        else:
            yield prefix + k, v


def get_parameters(params=None, path='', grad_only=True):
    """All parameters under the current scope, as an ordered {name: Variable};
    with ``grad_only`` only those whose ``need_grad`` is set."""
    node = _current if params is None else params
    return OrderedDict((k, v) for k, v in _walk(node, path + '/' if path else '')
                       if not grad_only or v.need_grad)


def _parent_scope(key, create):
    """The scope dict holding ``key`` (a '/'-separated name) and the last part
    of the name; None for the scope when it is absent and not ``create``d."""
    node = _current
    parts = key.split('/')
    for p in parts[:-1]:
        node = node.setdefault(p, OrderedDict()) if create else node.get(p)
        if not isinstance(node, dict):
            return None, parts[-1]
    return node, parts[-1]


def get_parameter(key):
    node, name = _parent_scope(key, False)
    v = node.get(name) if node is not None else None
    return v if isinstance(v, Variable) else None


def set_parameter(key, param):
    node, name = _parent_scope(key, True)
    node[name] = param


def pop_parameter(key):
    node, name = _parent_scope(key, False)
    return node.pop(name, None) if node is not None else None


def get_parameter_or_create(name, shape=None, initializer=None, need_grad=True,
                            as_need_grad=None):
    """The parameter ``name`` of the current scope, created with ``initializer``
    (a callable taking a shape, or an array) when absent."""
    import numpy as np
    v = get_parameter(name)
    if v is None:
        if initializer is None:
            data = np.zeros(shape, np.float32)
        elif callable(initializer):
            data = initializer(shape)
        else:
            data = initializer
        v = Variable.from_numpy_array(np.asarray(data, np.float32), need_grad=need_grad)
        set_parameter(name, v)
    elif shape is not None and tuple(v.shape) != tuple(shape):
        raise ValueError('parameter %r exists with shape %s, asked for %s'
                         % (name, v.shape, tuple(shape)))
    if as_need_grad is not None and as_need_grad != v.need_grad:
        v = v.get_unlinked_variable(need_grad=as_need_grad)
    return v


def clear_parameters():
    """Remove every parameter of every scope."""
    _root.clear()


# NNabla also offers these as nn.parameter.save_parameters / load_parameters.
from nncy._param_io import save_parameters, load_parameters  # noqa: E402,F401
