"""Solvers (``import nncy.solvers as S``): NNabla's parameter update rules.

Every solver keeps a dict of parameters (name -> Variable) and, per
parameter, a :class:`SolverState`: named state Variables (momentum buffers,
moving averages) and its own step count ``t``.  The update of one parameter
is a single fused pass of the Rust kernel ``optim::update`` over the
parameter, its gradient and its states; the rule is chosen by a code (see
``rust/src/optim.rs``), and the step-dependent scalars (bias corrections,
bounds, decoupled decay factors) are computed here in double precision.

Typical use (as in NNabla)::

    solver = S.Adam(alpha=1e-3)
    solver.set_parameters(nn.get_parameters())
    for i in range(n):
        loss.forward()
        solver.zero_grad()
        loss.backward()
        solver.weight_decay(1e-4)
        solver.update()

State names and the ``.h5`` / ``.protobuf`` layout of :meth:`Solver.save_states`
follow NNabla, so state files move between the two libraries.
"""
import math
import os
from collections import OrderedDict

import numpy as np

from nncy import _kernels as K
from nncy._core import Variable

__all__ = ['Solver', 'SolverState', 'Sgd', 'Momentum', 'Lars', 'Nesterov', 'Adadelta',
           'Adagrad', 'AdaBelief', 'RMSprop', 'RMSpropGraves', 'Adam', 'AdaBound',
           'Adamax', 'AMSGRAD', 'AMSBound', 'AdamW', 'SgdW', 'Lamb', 'Lion']

# Rule codes of rust/src/optim.rs (enum Rule).
_SGD, _MOMENTUM, _NESTEROV, _ADADELTA, _ADAGRAD, _RMSPROP, _RMSPROP_GRAVES, _ADAM, \
    _ADABELIEF, _ADAMAX, _LION, _LARS, _LAMB = range(13)

_T_MAX = 2 ** 32 - 2  # NNabla keeps t in a uint32 and stops counting here
_INF = float('inf')


class SolverState:
    """The state of one parameter: ``pstate`` (state name -> Variable) and
    the number of updates ``t`` it has received."""

    def __init__(self, pstate=None, t=0):
        self.pstate = OrderedDict() if pstate is None else pstate
        self.t = t

    def __repr__(self):
        return 'SolverState(t=%d, pstate=%s)' % (self.t, list(self.pstate))


def _f32_buffer(nd):
    """(float32 C-contiguous array to compute on, array to copy it back into
    or None) for an NdArray: its own storage when that already fits."""
    arr = np.asarray(nd)   # the host storage (brought up to date from a device copy)
    if arr.dtype == np.float32 and arr.flags.c_contiguous:
        return arr, None
    return np.array(arr, dtype=np.float32, order="C"), arr


def _f32_read(nd):
    arr = np.asarray(nd)
    if arr.dtype == np.float32 and arr.flags.c_contiguous:
        return arr
    return np.array(arr, dtype=np.float32, order="C")


def _atomic_target(path):
    """A temporary path beside ``path`` (renamed over it once written)."""
    import tempfile
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix='.' + os.path.basename(path) + '.', suffix='.tmp')
    os.close(fd)
    return tmp


def _commit(tmp, path):
    """Give the finished temporary file the permissions a new file would get,
    and move it over ``path``."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    os.replace(tmp, path)


class Solver:
    """Base of the solvers: parameter registry, per-parameter states, and the
    gradient utilities (weight decay, clipping, scaling, inf/NaN checks).

    Subclasses set ``_rule``, ``_state_names`` and implement ``_params(t)``
    (the kernel's parameter list for step ``t``)."""

    _rule = None
    _state_names = ()
    _lr_name = 'lr'

    def __init__(self):
        self._params_ = OrderedDict()
        self._states = OrderedDict()
        self.info = {}

    # ---- identity and learning rate ------------------------------------
    @property
    def name(self):
        """The solver's name (``'Adam'``, ``'Sgd'``, ...)."""
        return type(self).__name__

    def learning_rate(self):
        """The current learning rate (``lr``, ``alpha`` or ``eta`` by solver)."""
        return getattr(self, self._lr_name)

    def set_learning_rate(self, learning_rate):
        """Set the learning rate used by the following updates."""
        setattr(self, self._lr_name, float(learning_rate))

    def __repr__(self):
        return '%s(%s)' % (self.name, ', '.join('%s=%r' % kv for kv in self.info.items()))

    # ---- parameters -----------------------------------------------------
    def setup(self, params):
        """Removed in NNabla: use ``set_parameters``."""
        raise RuntimeError('Deprecated. Call set_parameters(param_dict).')

    def set_parameters(self, param_dict, reset=True, retain_state=False):
        """Register parameters (name -> Variable).

        ``reset`` clears the registered parameters first.  Otherwise a name
        already registered is replaced, and with ``retain_state`` its state
        is kept (the shapes must then agree)."""
        if reset:
            self.clear_parameters()
        for key, v in param_dict.items():
            if not isinstance(v, Variable):
                raise TypeError('%s.set_parameters: %r is a %s, expected a Variable'
                                % (self.name, key, type(v).__name__))
            if not reset and key in self._params_:
                if retain_state:
                    old = self._params_[key]
                    if tuple(old.shape) != tuple(v.shape):
                        raise ValueError(
                            "%s.set_parameters: could not retain the state of %r: its shape "
                            "%s differs from the registered %s"
                            % (self.name, key, tuple(v.shape), tuple(old.shape)))
                    continue
            self._params_[key] = v
            self._states[key] = self._new_state(v)

    def _new_state(self, v):
        return SolverState(OrderedDict(
            (s, Variable.from_numpy_array(np.zeros(v.shape, np.float32)))
            for s in self._state_names))

    def remove_parameters(self, keys):
        """Unregister the parameters ``keys`` (and drop their states)."""
        for k in keys:
            self._params_.pop(k, None)
            self._states.pop(k, None)

    def clear_parameters(self):
        """Unregister every parameter and drop every state."""
        self._params_.clear()
        self._states.clear()

    def get_parameters(self):
        """The registered parameters, name -> Variable."""
        return OrderedDict(self._params_)

    # ---- states -----------------------------------------------------------
    def get_states(self):
        """name -> :class:`SolverState`; the state Variables are the solver's
        own (changing them changes the solver)."""
        return OrderedDict((k, SolverState(OrderedDict(s.pstate), s.t))
                           for k, s in self._states.items())

    def set_states(self, states):
        """Replace the states of registered parameters (name -> SolverState,
        or any object with ``pstate`` and ``t``)."""
        new = OrderedDict()
        for key, st in states.items():
            if key not in self._states:
                raise ValueError('%s.set_states: set the parameter %r first (set_parameters)'
                                 % (self.name, key))
            size = self._params_[key].size
            expected = set(self._states[key].pstate)
            pstate = OrderedDict()
            for sname, var in st.pstate.items():
                if sname not in expected:
                    raise ValueError('%s.set_states: %r has no state %r; expected %s'
                                     % (self.name, key, sname, sorted(expected)))
                if not isinstance(var, Variable):
                    var = Variable.from_numpy_array(np.asarray(var, np.float32))
                if var.size != size:
                    raise ValueError('%s.set_states: state %r of %r has %d elements, the '
                                     'parameter %d' % (self.name, sname, key, var.size, size))
                var.data.cast(np.float32)
                pstate[sname] = var
            if set(pstate) != expected:
                raise ValueError('%s.set_states: %r lacks the states %s'
                                 % (self.name, key, sorted(expected - set(pstate))))
            t = int(np.asarray(st.t))
            if not 0 <= t <= _T_MAX:
                raise ValueError('%s.set_states: t of %r is %d, expected 0..%d'
                                 % (self.name, key, t, _T_MAX))
            new[key] = SolverState(OrderedDict((s, pstate[s]) for s in self._states[key].pstate), t)
        self._states.update(new)

    def save_states(self, path):
        """Write the states to ``path``: ``.h5`` (one group per parameter with
        datasets ``t`` and one per state, as NNabla) or ``.protobuf``
        (NNabla's ``Optimizer`` message).  The file is written beside its
        target and renamed over it, so a crash never leaves a partial file."""
        ext = os.path.splitext(path)[1]
        if ext not in ('.h5', '.protobuf'):
            raise ValueError("%s.save_states: unsupported file type %r; expected '.h5' or "
                             "'.protobuf'" % (self.name, ext))
        tmp = _atomic_target(path)
        try:
            if ext == '.h5':
                self._save_h5(tmp)
            else:
                with open(tmp, 'wb') as f:
                    f.write(self._states_proto().SerializeToString())
            _commit(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def _save_h5(self, path):
        import h5py
        with h5py.File(path, 'w') as hd:
            for i, (pname, st) in enumerate(self._states.items()):
                g = hd.require_group(pname)
                g.attrs['index'] = i
                g.create_dataset('t', data=int(st.t))
                for j, (sname, var) in enumerate(st.pstate.items()):
                    ds = g.create_dataset(sname, data=np.asarray(var.d, np.float32))
                    ds.attrs['index'] = j

    def _states_proto(self, optimizer=None):
        from nncy.proto import nnabla_pb2
        if optimizer is None:
            optimizer = nnabla_pb2.Optimizer()
        for pname, st in self._states.items():
            sp = optimizer.solver.states[pname]
            sp.t = st.t
            for sname, var in st.pstate.items():
                p = sp.state_parameter[sname]
                p.shape.dim.extend(var.shape)
                p.data.extend(np.asarray(var.d, np.float32).ravel().tolist())
        return optimizer

    def set_states_to_protobuf(self, optimizer):
        """Write the states into an ``Optimizer`` protobuf message."""
        self._states_proto(optimizer)

    def load_states(self, path):
        """Read states written by :meth:`save_states` (or by NNabla):
        ``.h5``, ``.protobuf``, ``.nntxt``/``.prototxt``.  The parameters must
        be registered first; sizes must agree with them."""
        ext = os.path.splitext(path)[1]
        if ext == '.h5':
            self.set_states(_read_states_h5(path, self.name))
        elif ext == '.protobuf':
            from nncy.proto import nnabla_pb2
            optimizer = nnabla_pb2.Optimizer()
            with open(path, 'rb') as f:
                optimizer.ParseFromString(f.read())
            self.set_states_from_protobuf(optimizer)
        elif ext in ('.nntxt', '.prototxt'):
            from google.protobuf import text_format
            from nncy.proto import nnabla_pb2
            optimizer = nnabla_pb2.Optimizer()
            with open(path) as f:
                text_format.Merge(f.read(), optimizer)
            self.set_states_from_protobuf(optimizer)
        else:
            raise ValueError("%s.load_states: unsupported file type %r; expected '.h5', "
                             "'.protobuf', '.nntxt' or '.prototxt'" % (self.name, ext))

    def set_states_from_protobuf(self, optimizer_proto):
        """Set the states from an ``Optimizer`` protobuf message."""
        states = OrderedDict()
        for pname, sp in optimizer_proto.solver.states.items():
            st = SolverState(t=sp.t)
            for sname, p in sp.state_parameter.items():
                shape = tuple(p.shape.dim)
                if any(d < 0 for d in shape) or len(p.data) != int(np.prod(shape)):
                    raise ValueError('%s.load_states: state %r of %r holds %d values for '
                                     'shape %s' % (self.name, sname, pname, len(p.data), shape))
                st.pstate[sname] = Variable.from_numpy_array(
                    np.asarray(p.data, np.float32).reshape(shape))
            states[pname] = st
        self.set_states(states)

    # ---- gradients --------------------------------------------------------
    def _computed(self):
        """(name, parameter) pairs whose gradient exists: as NNabla, a
        parameter whose gradient was never computed is left alone."""
        return [(k, v) for k, v in self._params_.items() if not v.grad.clear_called]

    def zero_grad(self):
        """Set the gradients of all registered parameters to zero."""
        for v in self._params_.values():
            v.grad.zero()

    def _grad_op(self, op, a, pre_hook, post_hook):
        for _, v in self._computed():
            if pre_hook is not None:
                pre_hook()
            g, back = _f32_buffer(v.grad)
            K.solver_grad(self.name, op, g, _f32_read(v.data) if op == 0 else None, a)
            if back is not None:
                back[...] = g
            if post_hook is not None:
                post_hook()

    def weight_decay(self, decay_rate, pre_hook=None, post_hook=None):
        """Add ``decay_rate * w`` to the gradient of every parameter (call it
        after backward, before update)."""
        decay_rate = float(decay_rate)
        if decay_rate == 0:
            return
        self._grad_op(0, decay_rate, pre_hook, post_hook)

    def scale_grad(self, scale, pre_hook=None, post_hook=None):
        """Multiply every gradient by ``scale`` (mixed-precision loss scaling)."""
        self._grad_op(1, float(scale), pre_hook, post_hook)

    def clip_grad_by_norm(self, clip_norm, pre_hook=None, post_hook=None):
        """Rescale each parameter's gradient whose L2 norm exceeds
        ``clip_norm`` to that norm (per parameter, as NNabla)."""
        clip_norm = float(clip_norm)
        if clip_norm == 0:
            return
        for _, v in self._computed():
            if pre_hook is not None:
                pre_hook()
            g, back = _f32_buffer(v.grad)
            ss = K.sum_squares(self.name, g)
            if ss > 0 and ss > clip_norm * clip_norm:
                K.solver_grad(self.name, 1, g, None, clip_norm / math.sqrt(ss))
                if back is not None:
                    back[...] = g
            if post_hook is not None:
                post_hook()

    def _check(self, bits, pre_hook, post_hook):
        for _, v in self._computed():
            if pre_hook is not None:
                pre_hook()
            found = K.nonfinite(self.name, _f32_read(v.grad)) & bits
            if post_hook is not None:
                post_hook()
            if found:
                return True
        return False

    def check_inf_grad(self, pre_hook=None, post_hook=None):
        """Whether any gradient holds an infinity."""
        return self._check(1, pre_hook, post_hook)

    def check_nan_grad(self, pre_hook=None, post_hook=None):
        """Whether any gradient holds a NaN."""
        return self._check(2, pre_hook, post_hook)

    def check_inf_or_nan_grad(self, pre_hook=None, post_hook=None):
        """Whether any gradient holds an infinity or a NaN."""
        return self._check(3, pre_hook, post_hook)

    # ---- update -------------------------------------------------------------
    def update(self, update_pre_hook=None, update_post_hook=None):
        """Update every parameter whose gradient exists from that gradient.
        The hooks (callables without arguments) run before and after each
        parameter's update."""
        for key, v in self._computed():
            if update_pre_hook is not None:
                update_pre_hook()
            st = self._states[key]
            st.t = min(st.t + 1, _T_MAX)
            self._update_one(v, st)
            if update_post_hook is not None:
                update_post_hook()

    def _update_one(self, v, st):
        if v.data.device_array is not None:   # a parameter on the GPU: update it there
            from nncy.cuda import solvers as gpu
            if gpu.update(self.name, self._rule, v, list(st.pstate.values()),
                          self._params(st.t)):
                return
        w, back = _f32_buffer(v.data)
        g = _f32_read(v.grad)
        bufs = [_f32_buffer(s.data) for s in st.pstate.values()]
        s = [b[0] for b in bufs] + [None] * (3 - len(bufs))
        p = np.asarray(self._params(st.t), np.float32)
        K.solver_update(self.name, self._rule, w, g, s[0], s[1], s[2], p)
        if back is not None:
            back[...] = w
        for arr, b in bufs:
            if b is not None:
                b[...] = arr


def _read_states_h5(path, who):
    """name -> SolverState from an NNabla solver-state ``.h5`` file: one group
    per parameter (its full name), holding dataset ``t`` and one dataset per
    state; the groups' ``index`` attributes give the order."""
    import h5py
    found = {}
    with h5py.File(path, 'r') as hd:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                pname, _, sname = name.rpartition('/')
                if not pname:
                    raise ValueError('%s.load_states: dataset %r is not inside a parameter '
                                     'group' % (who, name))
                index = obj.parent.attrs.get('index', None)
                entry = found.setdefault(pname, [index, {}])
                entry[1][sname] = obj
        hd.visititems(visit)
        order = sorted(found.items(), key=lambda kv: (kv[1][0] is None,
                                                      -1 if kv[1][0] is None else int(kv[1][0]),
                                                      kv[0]))
        states = OrderedDict()
        for pname, (_, dsets) in order:
            st = SolverState()
            for sname, ds in dsets.items():
                if ds.dtype.kind not in 'fiub':
                    raise ValueError('%s.load_states: %s/%s holds %s data, expected numbers'
                                     % (who, pname, sname, ds.dtype))
                if sname == 't':
                    if ds.size != 1:
                        raise ValueError('%s.load_states: %s/t has %d values, expected 1'
                                         % (who, pname, ds.size))
                    st.t = int(np.asarray(ds[()]).reshape(()))
                else:
                    st.pstate[sname] = Variable.from_numpy_array(np.asarray(ds[()], np.float32))
            states[pname] = st
    return states


# ---------------------------------------------------------------------------
# The solvers
# ---------------------------------------------------------------------------

def _bias_correction(beta1, beta2, t):
    """sqrt(1 - beta2^t) / (1 - beta1^t)"""
    return math.sqrt(1.0 - beta2 ** t) / (1.0 - beta1 ** t)


class Sgd(Solver):
    r"""Stochastic gradient descent: :math:`w \leftarrow w - \eta \Delta w`.

    Args:
        lr (float): learning rate :math:`\eta`.
    """
    _rule = _SGD

    def __init__(self, lr=1e-3):
        super().__init__()
        self.lr = float(lr)
        self.info = {'lr': lr}

    def _params(self, t):
        return (self.lr,)


class _WithMomentum(Solver):
    """Solvers whose hyper-parameters are a learning rate and a momentum."""
    _state_names = ('m',)

    def __init__(self, lr=1e-3, momentum=0.9):
        super().__init__()
        self.lr, self.momentum = float(lr), float(momentum)
        self.info = {'lr': lr, 'momentum': momentum}

    def _params(self, t):
        return (self.lr, self.momentum)


class Momentum(_WithMomentum):
    r"""SGD with momentum: :math:`v \leftarrow \gamma v + \eta \Delta w,\ w \leftarrow w - v`.

    Args:
        lr (float): learning rate :math:`\eta`.
        momentum (float): decay rate :math:`\gamma` of the momentum.
    """
    _rule = _MOMENTUM


class _FixedWd(Solver):
    """Solvers with a decoupled decay ``wd`` fixed at construction: as in
    NNabla, ``weight_decay`` accepts only that rate, and adds it to the
    gradient like any solver (on top of the decoupled decay)."""

    def weight_decay(self, decay_rate, pre_hook=None, post_hook=None):
        if float(decay_rate) != 0 and np.float32(decay_rate) != np.float32(self.wd):
            raise ValueError('%s.weight_decay: decay_rate %g differs from the wd %g given at '
                             'construction; it must remain the same' % (self.name, decay_rate, self.wd))
        super().weight_decay(decay_rate, pre_hook, post_hook)


class SgdW(_FixedWd):
    r"""SGD with momentum and decoupled weight decay, as NNabla defines it:
    :math:`v \leftarrow \gamma v + \eta \Delta w - (\eta / \eta_0) \lambda v,\ w \leftarrow w - v`,
    where :math:`\eta_0` is the initial learning rate.

    Args:
        lr (float): learning rate :math:`\eta`.
        momentum (float): decay rate :math:`\gamma` of the momentum.
        wd (float): decoupled weight decay :math:`\lambda`.  ``weight_decay()``
            accepts only this same rate (and then also decays the gradient).
    """
    _rule = _MOMENTUM
    _state_names = ('m',)

    def __init__(self, lr=1e-3, momentum=0.9, wd=1e-4):
        super().__init__()
        self.lr, self.momentum, self.wd = float(lr), float(momentum), float(wd)
        self.init_lr = self.lr
        self.info = {'lr': lr, 'momentum': momentum, 'wd': wd}

    def _params(self, t):
        return (self.lr, self.momentum - self.lr / self.init_lr * self.wd)


class Nesterov(_WithMomentum):
    r"""Nesterov accelerated gradient:
    :math:`v' \leftarrow \gamma v - \eta \Delta w,\ w \leftarrow w - \gamma v + (1 + \gamma) v'`.

    Args:
        lr (float): learning rate :math:`\eta`.
        momentum (float): decay rate :math:`\gamma` of the momentum.
    """
    _rule = _NESTEROV


class Lars(Solver):
    r"""LARS: momentum SGD with a layer-wise trust ratio.

    .. math::
        \lambda = \eta \frac{c \|w\|}{\|\Delta w\| + \beta \|w\|},\quad
        v \leftarrow m v + \lambda (\Delta w + \beta w),\quad w \leftarrow w - v

    (:math:`\lambda = \eta` when :math:`\|w\| < \epsilon`).  The weight decay
    :math:`\beta` is the rate given to ``weight_decay()``, applied inside the
    update (it must be the same for all calls).

    Args:
        lr (float): learning rate :math:`\eta`.
        momentum (float): momentum :math:`m`.
        coefficient (float): trust coefficient :math:`c`.
        eps (float): small value :math:`\epsilon`.
    """
    _rule = _LARS
    _state_names = ('v',)

    def __init__(self, lr=1e-3, momentum=0.9, coefficient=0.001, eps=1e-6):
        super().__init__()
        self.lr, self.momentum = float(lr), float(momentum)
        self.coefficient, self.eps = float(coefficient), float(eps)
        self.decay_rate = 0.0
        self.info = {'lr': lr, 'momentum': momentum, 'coefficient': coefficient, 'eps': eps}

    def weight_decay(self, decay_rate, pre_hook=None, post_hook=None):
        decay_rate = float(decay_rate)
        if decay_rate == 0:
            return
        if self.decay_rate == 0:
            self.decay_rate = decay_rate
        elif np.float32(decay_rate) != np.float32(self.decay_rate):
            raise ValueError('%s.weight_decay: decay_rate %g differs from the %g given before; '
                             'it must be the same for all layers and calls'
                             % (self.name, decay_rate, self.decay_rate))

    def _params(self, t):
        return (self.lr, self.momentum, self.coefficient, self.eps, self.decay_rate)


class Adadelta(Solver):
    r"""AdaDelta (Zeiler 2012):

    .. math::
        E[g^2] \leftarrow \gamma E[g^2] + (1 - \gamma) g^2,\quad
        \Delta = \sqrt{\frac{E[\Delta^2] + \epsilon}{E[g^2] + \epsilon}}\, g,\quad
        E[\Delta^2] \leftarrow \gamma E[\Delta^2] + (1 - \gamma) \Delta^2,\quad
        w \leftarrow w - \eta \Delta

    Args:
        lr (float): learning rate :math:`\eta`.
        decay (float): decay rate :math:`\gamma`.
        eps (float): small value :math:`\epsilon`.
    """
    _rule = _ADADELTA
    _state_names = ('e_sqr_grad', 'e_sqr_delta')

    def __init__(self, lr=1.0, decay=0.95, eps=1e-6):
        super().__init__()
        self.lr, self.decay, self.eps = float(lr), float(decay), float(eps)
        self.info = {'lr': lr, 'decay': decay, 'eps': eps}

    def _params(self, t):
        return (self.lr, self.decay, self.eps)


class Adagrad(Solver):
    r"""AdaGrad: :math:`G \leftarrow G + g^2,\ w \leftarrow w - \frac{\eta}{\sqrt{G} + \epsilon} g`.

    Args:
        lr (float): learning rate :math:`\eta`.
        eps (float): small value :math:`\epsilon`.
    """
    _rule = _ADAGRAD
    _state_names = ('v',)

    def __init__(self, lr=1e-2, eps=1e-8):
        super().__init__()
        self.lr, self.eps = float(lr), float(eps)
        self.info = {'lr': lr, 'eps': eps}

    def _params(self, t):
        return (self.lr, self.eps)


class RMSprop(Solver):
    r"""RMSprop: :math:`v \leftarrow \gamma v + (1 - \gamma) g^2,\ w \leftarrow w - \eta \frac{g}{\sqrt{v} + \epsilon}`.

    Args:
        lr (float): learning rate :math:`\eta`.
        decay (float): decay rate :math:`\gamma`.
        eps (float): small value :math:`\epsilon`.
    """
    _rule = _RMSPROP
    _state_names = ('v',)

    def __init__(self, lr=1e-3, decay=0.9, eps=1e-8):
        super().__init__()
        self.lr, self.decay, self.eps = float(lr), float(decay), float(eps)
        self.info = {'lr': lr, 'decay': decay, 'eps': eps}

    def _params(self, t):
        return (self.lr, self.decay, self.eps)


class RMSpropGraves(Solver):
    r"""RMSprop as in Graves (2013):

    .. math::
        n \leftarrow \rho n + (1 - \rho) e^2,\quad g \leftarrow \rho g + (1 - \rho) e,\quad
        d \leftarrow \beta d - \eta \frac{e}{\sqrt{n - g^2 + \epsilon}},\quad w \leftarrow w + d

    where :math:`e` is the gradient.

    Args:
        lr (float): learning rate :math:`\eta`.
        decay (float): decay rate :math:`\rho`.
        momentum (float): momentum :math:`\beta`.
        eps (float): small value :math:`\epsilon`.
    """
    _rule = _RMSPROP_GRAVES
    _state_names = ('n', 'g', 'd')

    def __init__(self, lr=1e-4, decay=0.95, momentum=0.9, eps=1e-4):
        super().__init__()
        self.lr, self.decay, self.momentum, self.eps = map(float, (lr, decay, momentum, eps))
        self.info = {'lr': lr, 'decay': decay, 'momentum': momentum, 'eps': eps}

    def _params(self, t):
        return (self.lr, self.decay, self.momentum, self.eps)


class _AdamLike(Solver):
    _lr_name = 'alpha'


class Adam(_AdamLike):
    r"""Adam (Kingma and Ba):

    .. math::
        m \leftarrow \beta_1 m + (1 - \beta_1) g,\quad v \leftarrow \beta_2 v + (1 - \beta_2) g^2,\quad
        w \leftarrow w - \alpha \frac{\sqrt{1 - \beta_2^t}}{1 - \beta_1^t} \frac{m}{\sqrt{v} + \epsilon}

    Args:
        alpha (float): step size :math:`\alpha`.
        beta1 (float): decay rate of the first moment.
        beta2 (float): decay rate of the second moment.
        eps (float): small value :math:`\epsilon`.
    """
    _rule = _ADAM
    _state_names = ('mean', 'var')

    def __init__(self, alpha=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__()
        self.alpha, self.beta1, self.beta2, self.eps = map(float, (alpha, beta1, beta2, eps))
        self.info = {'alpha': alpha, 'beta1': beta1, 'beta2': beta2, 'eps': eps}

    def _params(self, t):
        a = self.alpha * _bias_correction(self.beta1, self.beta2, t)
        return (a, self.beta1, self.beta2, self.eps, 0.0, -_INF, _INF)


class AdamW(_FixedWd, _AdamLike):
    r"""Adam with decoupled weight decay (Loshchilov and Hutter):
    the Adam step, then :math:`w \leftarrow w - (\alpha / \alpha_0) \lambda w`
    (both from the same :math:`w`), :math:`\alpha_0` being the initial step size.

    Args:
        alpha (float): step size :math:`\alpha`.
        beta1 (float): decay rate of the first moment.
        beta2 (float): decay rate of the second moment.
        eps (float): small value :math:`\epsilon`.
        wd (float): decoupled weight decay :math:`\lambda`.  ``weight_decay()``
            accepts only this same rate (and then also decays the gradient).
    """
    _rule = _ADAM
    _state_names = ('mean', 'var')

    def __init__(self, alpha=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, wd=1e-4):
        super().__init__()
        self.alpha, self.beta1, self.beta2, self.eps, self.wd = map(
            float, (alpha, beta1, beta2, eps, wd))
        self.init_alpha = self.alpha
        self.info = {'alpha': alpha, 'beta1': beta1, 'beta2': beta2, 'eps': eps, 'wd': wd}

    def _params(self, t):
        a = self.alpha * _bias_correction(self.beta1, self.beta2, t)
        return (a, self.beta1, self.beta2, self.eps, self.alpha / self.init_alpha * self.wd,
                -_INF, _INF)


class AMSGRAD(_AdamLike):
    r"""AMSGrad (Reddi et al.): Adam with :math:`\hat v \leftarrow \max(\hat v, v)`
    in place of :math:`v`, and (by default) without bias correction.

    Args:
        alpha (float): step size :math:`\alpha`.
        beta1 (float): decay rate of the first moment.
        beta2 (float): decay rate of the second moment.
        eps (float): small value :math:`\epsilon`.
        bias_correction (bool): apply Adam's bias correction.
    """
    _rule = _ADAM
    _state_names = ('m', 'v', 'v_hat')

    def __init__(self, alpha=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, bias_correction=False):
        super().__init__()
        self.alpha, self.beta1, self.beta2, self.eps = map(float, (alpha, beta1, beta2, eps))
        self.bias_correction = bool(bias_correction)
        self.info = {'alpha': alpha, 'beta1': beta1, 'beta2': beta2, 'eps': eps,
                     'bias_correction': bias_correction}

    def _params(self, t):
        a = self.alpha * (_bias_correction(self.beta1, self.beta2, t) if self.bias_correction else 1.0)
        return (a, self.beta1, self.beta2, self.eps, 0.0, -_INF, _INF)


class AdaBound(_AdamLike):
    r"""AdaBound (Luo et al.): Adam whose per-element step is clipped to
    :math:`[\eta_l(t), \eta_u(t)]`,

    .. math::
        \eta_l(t) = \alpha^* \left(1 - \frac{1}{\gamma t + 1}\right),\quad
        \eta_u(t) = \alpha^* \left(1 + \frac{1}{\gamma t}\right),\quad
        w \leftarrow w - \mathrm{clip}\left(\frac{\alpha_t}{\sqrt{v} + \epsilon}, \eta_l, \eta_u\right) m

    :math:`\alpha^*` (``final_lr``) follows learning-rate changes in proportion
    to :math:`\alpha`.

    Args:
        alpha (float): step size :math:`\alpha`.
        beta1 (float): decay rate of the first moment.
        beta2 (float): decay rate of the second moment.
        eps (float): small value :math:`\epsilon`.
        final_lr (float): the final (SGD) learning rate :math:`\alpha^*`.
        gamma (float): convergence speed :math:`\gamma` of the bounds.
    """
    _rule = _ADAM
    _state_names = ('mean', 'var')
    _default_bias_correction = True

    def __init__(self, alpha=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, final_lr=0.1, gamma=0.001):
        super().__init__()
        self.alpha, self.beta1, self.beta2, self.eps = map(float, (alpha, beta1, beta2, eps))
        self.final_lr, self.gamma = float(final_lr), float(gamma)
        self.init_alpha = self.alpha
        self.bias_correction = self._default_bias_correction
        self.info = {'alpha': alpha, 'beta1': beta1, 'beta2': beta2, 'eps': eps,
                     'final_lr': final_lr, 'gamma': gamma}

    def _params(self, t):
        a = self.alpha * (_bias_correction(self.beta1, self.beta2, t) if self.bias_correction else 1.0)
        final_lr = self.final_lr * (self.alpha / self.init_alpha)
        lower = final_lr * (1.0 - 1.0 / (self.gamma * t + 1.0))
        upper = final_lr * (1.0 + 1.0 / (self.gamma * t)) if self.gamma * t > 0 else _INF
        return (a, self.beta1, self.beta2, self.eps, 0.0, lower, upper)


class AMSBound(AdaBound):
    r"""AMSBound (Luo et al.): AdaBound's clipped step on AMSGrad's
    :math:`\hat v = \max(\hat v, v)`, by default without bias correction.

    Args:
        alpha (float): step size :math:`\alpha`.
        beta1 (float): decay rate of the first moment.
        beta2 (float): decay rate of the second moment.
        eps (float): small value :math:`\epsilon`.
        final_lr (float): the final (SGD) learning rate :math:`\alpha^*`.
        gamma (float): convergence speed :math:`\gamma` of the bounds.
        bias_correction (bool): apply Adam's bias correction.
    """
    _state_names = ('m', 'v', 'v_hat')

    def __init__(self, alpha=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, final_lr=0.1, gamma=0.001,
                 bias_correction=False):
        super().__init__(alpha, beta1, beta2, eps, final_lr, gamma)
        self.bias_correction = bool(bias_correction)
        self.info['bias_correction'] = bias_correction


class Adamax(_AdamLike):
    r"""AdaMax (Kingma and Ba): Adam with the infinity norm,

    .. math::
        m \leftarrow \beta_1 m + (1 - \beta_1) g,\quad u \leftarrow \max(\beta_2 u, |g|),\quad
        w \leftarrow w - \frac{\alpha}{1 - \beta_1^t} \frac{m}{u + \epsilon}

    Args:
        alpha (float): step size :math:`\alpha`.
        beta1 (float): decay rate of the first moment.
        beta2 (float): decay rate of the infinity norm.
        eps (float): small value :math:`\epsilon`.
    """
    _rule = _ADAMAX
    _state_names = ('m', 'u')

    def __init__(self, alpha=2e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__()
        self.alpha, self.beta1, self.beta2, self.eps = map(float, (alpha, beta1, beta2, eps))
        self.info = {'alpha': alpha, 'beta1': beta1, 'beta2': beta2, 'eps': eps}

    def _params(self, t):
        return (self.alpha / (1.0 - self.beta1 ** t), self.beta1, self.beta2, self.eps)


class AdaBelief(_AdamLike):
    r"""AdaBelief (Zhuang et al.): Adam with the variance of the gradient
    around its mean, :math:`s \leftarrow \beta_2 s + (1 - \beta_2)(g - m)^2`,
    and :math:`w \leftarrow w - \alpha_t \frac{m}{\sqrt{s + \epsilon} + \epsilon}`.

    Args:
        alpha (float): step size :math:`\alpha`.
        beta1 (float): decay rate of the first moment.
        beta2 (float): decay rate of the second moment.
        eps (float): small value :math:`\epsilon`.
        wd (float): weight decay, used only with ``weight_decouple``.
        amsgrad (bool): use :math:`\max(\hat s, s)` (the AMSGrad variant).
        weight_decouple (bool): decoupled decay :math:`w \leftarrow w - \alpha\, wd\, w`
            before the step (AdamW style).
        fixed_decay (bool): with ``weight_decouple``, decay by ``wd`` alone
            (not scaled by :math:`\alpha`).
        rectify (bool): the RAdam variance rectification (plain SGD steps
            while it is undefined).
    """
    _rule = _ADABELIEF

    def __init__(self, alpha=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, wd=0.0, amsgrad=False,
                 weight_decouple=False, fixed_decay=False, rectify=False):
        super().__init__()
        self.alpha, self.beta1, self.beta2, self.eps, self.wd = map(
            float, (alpha, beta1, beta2, eps, wd))
        self.amsgrad, self.weight_decouple = bool(amsgrad), bool(weight_decouple)
        self.fixed_decay, self.rectify = bool(fixed_decay), bool(rectify)
        self._state_names = ('mean', 'var', 's_max') if self.amsgrad else ('mean', 'var')
        self.info = {'alpha': alpha, 'beta1': beta1, 'beta2': beta2, 'eps': eps, 'wd': wd,
                     'amsgrad': amsgrad, 'weight_decouple': weight_decouple,
                     'fixed_decay': fixed_decay, 'rectify': rectify}

    def _params(self, t):
        b1t, b2t = self.beta1 ** t, self.beta2 ** t
        bc = math.sqrt(1.0 - b2t) / (1.0 - b1t)
        r_t, rho_t = 1.0, 0.0
        if self.rectify:
            rho_inf = 2.0 / (1.0 - self.beta2) - 1.0
            rho_t = rho_inf - 2.0 * t * b2t / (1.0 - b2t)
            if rho_t > 4.0:
                r_t = math.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                                / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
        sgd = self.rectify and rho_t <= 4.0
        alpha_t = self.alpha if sgd else self.alpha * r_t * bc
        decay = 0.0
        if self.weight_decouple:
            decay = self.wd if self.fixed_decay else self.wd * self.alpha
        return (alpha_t, self.beta1, self.beta2, self.eps, decay, 1.0 if sgd else 0.0)


class _LazyDecay(Solver):
    """Solvers whose weight decay enters the update itself: ``weight_decay``
    records the rate, which the next ``update`` applies (then it is cleared)."""
    _decay_rate = 0.0

    def weight_decay(self, decay_rate, pre_hook=None, post_hook=None):
        self._decay_rate = float(decay_rate)

    def update(self, update_pre_hook=None, update_post_hook=None):
        try:
            super().update(update_pre_hook, update_post_hook)
        finally:
            self._decay_rate = 0.0


class Lamb(_LazyDecay):
    r"""LAMB (You et al.): layer-wise adapted Adam,

    .. math::
        r = \frac{\hat m}{\sqrt{\hat v} + \epsilon} + \lambda w,\quad
        w \leftarrow w - \eta \frac{\phi(\|w\|)}{\|r\|} r,\quad \phi(z) = \min(\max(z, \gamma_l), \gamma_u)

    where :math:`\hat m, \hat v` are the (optionally bias-corrected) moments
    and :math:`\lambda` the rate given to ``weight_decay()`` before the update.

    Args:
        eta (float): learning rate :math:`\eta`.
        beta1 (float): decay rate of the first moment.
        beta2 (float): decay rate of the second moment.
        gamma_l (float): lower bound :math:`\gamma_l` of :math:`\phi`.
        gamma_u (float): upper bound :math:`\gamma_u` of :math:`\phi`.
        eps (float): small value :math:`\epsilon`.
        bias_correction (bool): bias-correct the moments.
    """
    _rule = _LAMB
    _state_names = ('mean', 'var')
    _lr_name = 'eta'

    def __init__(self, eta=1e-3, beta1=0.9, beta2=0.999, gamma_l=0.0, gamma_u=10.0, eps=1e-6,
                 bias_correction=False):
        super().__init__()
        self.eta, self.beta1, self.beta2, self.gamma_l, self.gamma_u, self.eps = map(
            float, (eta, beta1, beta2, gamma_l, gamma_u, eps))
        self.bias_correction = bool(bias_correction)
        self.info = {'eta': eta, 'beta1': beta1, 'beta2': beta2, 'gamma_l': gamma_l,
                     'gamma_u': gamma_u, 'eps': eps, 'bias_correction': bias_correction}

    def _params(self, t):
        c1 = 1.0 - self.beta1 ** t if self.bias_correction else 1.0
        c2 = 1.0 - self.beta2 ** t if self.bias_correction else 1.0
        return (self.eta, self.beta1, self.beta2, c1, c2, self.eps, self._decay_rate,
                self.gamma_l, self.gamma_u)


class Lion(_LazyDecay):
    r"""Lion (Chen et al.): the sign of an interpolated momentum,

    .. math::
        u = \mathrm{sign}(\beta_1 m + (1 - \beta_1) g),\quad
        m \leftarrow \beta_2 m + (1 - \beta_2) g,\quad w \leftarrow w - \eta (u + \lambda w)

    where :math:`\lambda` is the rate given to ``weight_decay()`` before the update.

    Args:
        lr (float): learning rate :math:`\eta`.
        beta1 (float): interpolation of the update direction.
        beta2 (float): decay rate of the momentum.
    """
    _rule = _LION
    _state_names = ('m',)

    def __init__(self, lr=1e-4, beta1=0.9, beta2=0.99):
        super().__init__()
        self.lr, self.beta1, self.beta2 = float(lr), float(beta1), float(beta2)
        self.info = {'lr': lr, 'beta1': beta1, 'beta2': beta2}

    def _params(self, t):
        return (self.lr, self.beta1, self.beta2, self._decay_rate)
