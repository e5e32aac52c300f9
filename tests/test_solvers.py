"""Solvers against NumPy re-implementations of their published update rules
(NNabla's solver documentation), over several steps, plus the Solver
interface: parameters, states, gradient utilities, state files."""
import inspect
import math
import os

import numpy as np
import pytest

import nncy as nn
import nncy.solvers as S


# ---------------------------------------------------------------------------
# NumPy references (float64), one per solver: states(shape) -> dict of
# zero arrays named as NNabla names them; step(w, g, st, t, wd) -> new w,
# where wd is the rate given to weight_decay() before this update.
# ---------------------------------------------------------------------------

def _adam_moments(st, g, b1, b2, m='mean', v='var'):
    st[m] = b1 * st[m] + (1 - b1) * g
    st[v] = b2 * st[v] + (1 - b2) * g * g
    return st[m], st[v]


def _bc(b1, b2, t):
    return math.sqrt(1 - b2 ** t) / (1 - b1 ** t)


class Ref:
    names = ()
    eager_decay = True  # weight_decay() adds wd * w to the gradient

    def __init__(self, **kw):
        self.kw = kw
        self.__dict__.update(kw)

    def states(self, shape):
        return {n: np.zeros(shape) for n in self.names}


class RSgd(Ref):
    def step(self, w, g, st, t, wd):
        return w - self.lr * g


class RMomentum(Ref):
    names = ('m',)

    def step(self, w, g, st, t, wd):
        st['m'] = self.momentum * st['m'] + self.lr * g
        return w - st['m']


class RNesterov(Ref):
    names = ('m',)

    def step(self, w, g, st, t, wd):
        prev = st['m']
        st['m'] = self.momentum * prev - self.lr * g
        return w - self.momentum * prev + (1 + self.momentum) * st['m']


class RLars(Ref):
    # weight_decay() sets beta, used inside the update (lambda uses it too)
    names = ('v',)
    eager_decay = False

    def step(self, w, g, st, t, beta):
        gn, wn = np.linalg.norm(g), np.linalg.norm(w)
        x = gn + beta * wn
        if x < self.eps:
            x += self.eps
        lam = self.lr if wn < self.eps else self.lr * self.coefficient * wn / x
        st['v'] = self.momentum * st['v'] + lam * (g + beta * w)
        return w - st['v']


class RAdadelta(Ref):
    names = ('e_sqr_grad', 'e_sqr_delta')

    def step(self, w, g, st, t, wd):
        d, e = self.decay, self.eps
        st['e_sqr_grad'] = d * st['e_sqr_grad'] + (1 - d) * g * g
        delta = np.sqrt((st['e_sqr_delta'] + e) / (st['e_sqr_grad'] + e)) * g
        st['e_sqr_delta'] = d * st['e_sqr_delta'] + (1 - d) * delta * delta
        return w - self.lr * delta


class RAdagrad(Ref):
    names = ('v',)

    def step(self, w, g, st, t, wd):
        st['v'] = st['v'] + g * g
        return w - self.lr * g / (np.sqrt(st['v']) + self.eps)


class RRMSprop(Ref):
    names = ('v',)

    def step(self, w, g, st, t, wd):
        st['v'] = self.decay * st['v'] + (1 - self.decay) * g * g
        return w - self.lr * g / (np.sqrt(st['v']) + self.eps)


class RRMSpropGraves(Ref):
    names = ('n', 'g', 'd')

    def step(self, w, e, st, t, wd):
        r = self.decay
        st['n'] = r * st['n'] + (1 - r) * e * e
        st['g'] = r * st['g'] + (1 - r) * e
        st['d'] = self.momentum * st['d'] - self.lr * e / np.sqrt(st['n'] - st['g'] ** 2 + self.eps)
        return w + st['d']


class RAdam(Ref):
    names = ('mean', 'var')

    def step(self, w, g, st, t, wd):
        m, v = _adam_moments(st, g, self.beta1, self.beta2)
        return w - self.alpha * _bc(self.beta1, self.beta2, t) * m / (np.sqrt(v) + self.eps)


class RAdamW(RAdam):
    def step(self, w, g, st, t, wd):
        # eta_t = alpha / alpha_0 = 1 here (the learning rate is not changed)
        return super().step(w, g, st, t, wd) - self.wd * w


class RAMSGRAD(Ref):
    names = ('m', 'v', 'v_hat')

    def step(self, w, g, st, t, wd):
        m, v = _adam_moments(st, g, self.beta1, self.beta2, 'm', 'v')
        st['v_hat'] = np.maximum(st['v_hat'], v)
        a = self.alpha * (_bc(self.beta1, self.beta2, t) if self.bias_correction else 1)
        return w - a * m / (np.sqrt(st['v_hat']) + self.eps)


class RAdaBound(Ref):
    names = ('mean', 'var')
    ams = False
    bias_correction = True

    def step(self, w, g, st, t, wd):
        if self.ams:
            m, v = _adam_moments(st, g, self.beta1, self.beta2, 'm', 'v')
            st['v_hat'] = np.maximum(st['v_hat'], v)
            v = st['v_hat']
        else:
            m, v = _adam_moments(st, g, self.beta1, self.beta2)
        a = self.alpha * (_bc(self.beta1, self.beta2, t) if self.bias_correction else 1)
        lo = self.final_lr * (1 - 1 / (self.gamma * t + 1))
        hi = self.final_lr * (1 + 1 / (self.gamma * t))
        return w - np.clip(a / (np.sqrt(v) + self.eps), lo, hi) * m


class RAMSBound(RAdaBound):
    names = ('m', 'v', 'v_hat')
    ams = True


class RAdamax(Ref):
    names = ('m', 'u')

    def step(self, w, g, st, t, wd):
        st['m'] = self.beta1 * st['m'] + (1 - self.beta1) * g
        st['u'] = np.maximum(self.beta2 * st['u'], np.abs(g))
        return w - self.alpha / (1 - self.beta1 ** t) * st['m'] / (st['u'] + self.eps)


class RAdaBelief(Ref):
    amsgrad = weight_decouple = fixed_decay = rectify = False
    wd = 0.0

    @property
    def names(self):
        return ('mean', 'var', 's_max') if self.amsgrad else ('mean', 'var')

    def step(self, w, g, st, t, wd):
        b1, b2 = self.beta1, self.beta2
        st['mean'] = b1 * st['mean'] + (1 - b1) * g
        st['var'] = b2 * st['var'] + (1 - b2) * (g - st['mean']) ** 2
        s = st['var']
        if self.amsgrad:
            st['s_max'] = np.maximum(st['s_max'], s)
            s = st['s_max']
        if self.weight_decouple:
            w = w - w * (self.wd if self.fixed_decay else self.wd * self.alpha)
        r, sgd = 1.0, False
        if self.rectify:
            rho_inf = 2 / (1 - b2) - 1
            rho = rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
            sgd = rho <= 4
            if not sgd:
                r = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
        if sgd:
            return w - self.alpha * st['mean']
        a = self.alpha * r * _bc(b1, b2, t)
        return w - a * st['mean'] / (np.sqrt(s + self.eps) + self.eps)


class RSgdW(Ref):
    names = ('m',)

    def step(self, w, g, st, t, wd):
        # eta / eta_0 = 1: the decoupled decay shrinks the momentum buffer
        st['m'] = self.momentum * st['m'] + self.lr * g - self.wd * st['m']
        return w - st['m']


class RLamb(Ref):
    names = ('mean', 'var')
    eager_decay = False

    def step(self, w, g, st, t, lam):
        m, v = _adam_moments(st, g, self.beta1, self.beta2)
        c1 = 1 - self.beta1 ** t if self.bias_correction else 1
        c2 = 1 - self.beta2 ** t if self.bias_correction else 1
        r = (m / c1) / (np.sqrt(v / c2) + self.eps) + lam * w
        phi = min(max(np.linalg.norm(w), self.gamma_l), self.gamma_u)
        rn = np.linalg.norm(r)
        ratio = phi / rn if rn > self.eps else 1.0
        return w - self.eta * ratio * r


class RLion(Ref):
    names = ('m',)
    eager_decay = False

    def step(self, w, g, st, t, lam):
        u = np.sign(self.beta1 * st['m'] + (1 - self.beta1) * g)
        st['m'] = self.beta2 * st['m'] + (1 - self.beta2) * g
        return w - self.lr * (u + lam * w)


# (solver, constructor arguments, reference, weight-decay rate per step)
CASES = [
    ('Sgd', dict(lr=0.1), RSgd, 0.0),
    ('Sgd', dict(lr=0.05), RSgd, 0.01),
    ('Momentum', dict(lr=0.1, momentum=0.8), RMomentum, 0.0),
    ('Lars', dict(lr=0.1, momentum=0.9, coefficient=0.01, eps=1e-6), RLars, 0.0),
    ('Lars', dict(lr=0.1, momentum=0.9, coefficient=0.01, eps=1e-6), RLars, 1e-3),
    ('Nesterov', dict(lr=0.1, momentum=0.9), RNesterov, 0.0),
    ('Adadelta', dict(lr=1.0, decay=0.95, eps=1e-6), RAdadelta, 0.0),
    ('Adagrad', dict(lr=0.05, eps=1e-8), RAdagrad, 1e-3),
    ('AdaBelief', dict(alpha=0.01, beta1=0.9, beta2=0.999, eps=1e-8), RAdaBelief, 0.0),
    ('AdaBelief', dict(alpha=0.01, beta1=0.9, beta2=0.999, eps=1e-8, wd=0.1, amsgrad=True,
                       weight_decouple=True), RAdaBelief, 0.0),
    ('AdaBelief', dict(alpha=0.01, beta1=0.8, beta2=0.9, eps=1e-8, wd=0.01, weight_decouple=True,
                       fixed_decay=True, rectify=True), RAdaBelief, 0.0),
    ('RMSprop', dict(lr=0.01, decay=0.9, eps=1e-8), RRMSprop, 0.0),
    ('RMSpropGraves', dict(lr=1e-3, decay=0.95, momentum=0.9, eps=1e-4), RRMSpropGraves, 0.0),
    ('Adam', dict(alpha=0.01, beta1=0.9, beta2=0.999, eps=1e-8), RAdam, 0.0),
    ('Adam', dict(alpha=0.01, beta1=0.5, beta2=0.9, eps=1e-3), RAdam, 1e-2),
    ('AdaBound', dict(alpha=0.01, beta1=0.9, beta2=0.999, eps=1e-8, final_lr=0.1, gamma=0.001),
     RAdaBound, 0.0),
    ('AdaBound', dict(alpha=0.5, beta1=0.9, beta2=0.999, eps=1e-8, final_lr=0.1, gamma=0.5),
     RAdaBound, 0.0),
    ('Adamax', dict(alpha=0.02, beta1=0.9, beta2=0.999, eps=1e-8), RAdamax, 0.0),
    ('AMSGRAD', dict(alpha=0.01, beta1=0.9, beta2=0.999, eps=1e-8, bias_correction=False),
     RAMSGRAD, 0.0),
    ('AMSGRAD', dict(alpha=0.01, beta1=0.9, beta2=0.999, eps=1e-8, bias_correction=True),
     RAMSGRAD, 0.0),
    ('AMSBound', dict(alpha=0.5, beta1=0.9, beta2=0.999, eps=1e-8, final_lr=0.1, gamma=0.5,
                      bias_correction=True), RAMSBound, 0.0),
    ('AMSBound', dict(alpha=0.01, beta1=0.9, beta2=0.999, eps=1e-8, final_lr=0.1, gamma=0.001,
                      bias_correction=False), RAMSBound, 0.0),
    ('AdamW', dict(alpha=0.01, beta1=0.9, beta2=0.999, eps=1e-8, wd=0.1), RAdamW, 0.0),
    ('SgdW', dict(lr=0.1, momentum=0.9, wd=0.05), RSgdW, 0.0),
    ('Lamb', dict(eta=0.01, beta1=0.9, beta2=0.999, gamma_l=0.0, gamma_u=10.0, eps=1e-6,
                  bias_correction=False), RLamb, 0.0),
    ('Lamb', dict(eta=0.01, beta1=0.9, beta2=0.999, gamma_l=0.5, gamma_u=2.0, eps=1e-6,
                  bias_correction=True), RLamb, 0.01),
    ('Lion', dict(lr=0.01, beta1=0.9, beta2=0.99), RLion, 0.0),
    ('Lion', dict(lr=0.01, beta1=0.9, beta2=0.99), RLion, 0.1),
]

# a small matrix and a vector large enough for the kernels to use threads
SHAPES = {'net/affine/W': (3, 5), 'net/affine/b': (70001,)}


def _ids():
    return ['%s-%d' % (c[0], i) for i, c in enumerate(CASES)]


@pytest.mark.parametrize('name,kw,ref_cls,wd', CASES, ids=_ids())
def test_update_matches_reference(name, kw, ref_cls, wd):
    rng = np.random.RandomState(7)
    params = {k: nn.Variable.from_numpy_array(rng.randn(*s).astype(np.float32), need_grad=True)
              for k, s in SHAPES.items()}
    solver = getattr(S, name)(**kw)
    solver.set_parameters(params)
    ref = ref_cls(**kw)
    ref_w = {k: v.d.astype(np.float64) for k, v in params.items()}
    ref_st = {k: ref.states(v.shape) for k, v in params.items()}
    for t in range(1, 6):
        grads = {k: rng.randn(*v.shape).astype(np.float32) for k, v in params.items()}
        for k, v in params.items():
            v.g = grads[k]
        if wd:
            solver.weight_decay(wd)
        solver.update()
        for k in params:
            g = grads[k].astype(np.float64)
            if wd and ref.eager_decay:
                g = g + wd * ref_w[k].astype(np.float32)
            ref_w[k] = ref.step(ref_w[k], g, ref_st[k], t, wd)
        states = solver.get_states()
        for k, v in params.items():
            np.testing.assert_allclose(v.d, ref_w[k], rtol=2e-4, atol=2e-5,
                                       err_msg='%s %s step %d' % (name, k, t))
            assert states[k].t == t
            assert list(states[k].pstate) == list(ref.names), name
            for sn, sv in states[k].pstate.items():
                np.testing.assert_allclose(sv.d, ref_st[k][sn], rtol=2e-4, atol=2e-5,
                                           err_msg='%s %s state %s step %d' % (name, k, sn, t))


# ---------------------------------------------------------------------------
# Constructor signatures and defaults (NNabla's)
# ---------------------------------------------------------------------------

DEFAULTS = {
    'Sgd': dict(lr=1e-3),
    'Momentum': dict(lr=1e-3, momentum=0.9),
    'Lars': dict(lr=1e-3, momentum=0.9, coefficient=0.001, eps=1e-6),
    'Nesterov': dict(lr=1e-3, momentum=0.9),
    'Adadelta': dict(lr=1.0, decay=0.95, eps=1e-6),
    'Adagrad': dict(lr=1e-2, eps=1e-8),
    'AdaBelief': dict(alpha=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, wd=0.0, amsgrad=False,
                      weight_decouple=False, fixed_decay=False, rectify=False),
    'RMSprop': dict(lr=1e-3, decay=0.9, eps=1e-8),
    'RMSpropGraves': dict(lr=1e-4, decay=0.95, momentum=0.9, eps=1e-4),
    'Adam': dict(alpha=1e-3, beta1=0.9, beta2=0.999, eps=1e-8),
    'AdaBound': dict(alpha=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, final_lr=0.1, gamma=0.001),
    'Adamax': dict(alpha=2e-3, beta1=0.9, beta2=0.999, eps=1e-8),
    'AMSGRAD': dict(alpha=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, bias_correction=False),
    'AMSBound': dict(alpha=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, final_lr=0.1, gamma=0.001,
                     bias_correction=False),
    'AdamW': dict(alpha=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, wd=1e-4),
    'SgdW': dict(lr=1e-3, momentum=0.9, wd=1e-4),
    'Lamb': dict(eta=1e-3, beta1=0.9, beta2=0.999, gamma_l=0.0, gamma_u=10.0, eps=1e-6,
                 bias_correction=False),
    'Lion': dict(lr=1e-4, beta1=0.9, beta2=0.99),
}


@pytest.mark.parametrize('name', sorted(DEFAULTS))
def test_signature_defaults_and_learning_rate(name):
    cls = getattr(S, name)
    sig = inspect.signature(cls)
    assert {k: p.default for k, p in sig.parameters.items()} == DEFAULTS[name]
    s = cls()
    assert s.name == name
    first = next(iter(DEFAULTS[name]))
    assert s.learning_rate() == pytest.approx(DEFAULTS[name][first])
    s.set_learning_rate(0.125)
    assert s.learning_rate() == 0.125
    assert getattr(s, first) == 0.125
    assert s.info == DEFAULTS[name]
    assert name in repr(s)


def test_learning_rate_changes_the_step():
    w = nn.Variable.from_numpy_array(np.ones(4, np.float32), need_grad=True)
    s = S.Sgd(lr=0.5)
    s.set_parameters({'w': w})
    w.g = 1.0
    s.update()
    s.set_learning_rate(0.25)
    s.update()
    np.testing.assert_allclose(w.d, 1 - 0.5 - 0.25)


def test_adabound_final_lr_follows_the_learning_rate():
    # with gamma large the bounds pin the step to final_lr * alpha / alpha_0
    w = nn.Variable.from_numpy_array(np.zeros(3, np.float32), need_grad=True)
    s = S.AdaBound(alpha=1.0, final_lr=0.1, gamma=1e6)
    s.set_parameters({'w': w})
    s.set_learning_rate(0.5)
    w.g = 1.0
    s.update()
    m = 0.1  # (1 - beta1) * g
    np.testing.assert_allclose(w.d, -0.05 * m, rtol=1e-4)


# ---------------------------------------------------------------------------
# The Solver interface
# ---------------------------------------------------------------------------

def _param(shape=(2, 3), fill=1.0, grad=None):
    v = nn.Variable.from_numpy_array(np.full(shape, fill, np.float32), need_grad=True)
    if grad is not None:
        v.g = grad
    return v


def test_set_remove_clear_parameters():
    a, b, c = _param(), _param(), _param((4,))
    s = S.Momentum(lr=0.1)
    s.set_parameters({'a': a, 'b': b})
    assert list(s.get_parameters()) == ['a', 'b']
    assert s.get_parameters()['a'] is a
    a.g, b.g = 1.0, 1.0
    s.update()
    m_a = s.get_states()['a'].pstate['m'].d.copy()
    assert np.all(m_a == np.float32(0.1))
    # reset=False adds c and replaces b (its state is new)
    b2 = _param()
    s.set_parameters({'b': b2, 'c': c}, reset=False)
    assert list(s.get_parameters()) == ['a', 'b', 'c']
    assert s.get_parameters()['b'] is b2
    assert np.all(s.get_states()['b'].pstate['m'].d == 0)
    np.testing.assert_array_equal(s.get_states()['a'].pstate['m'].d, m_a)
    # retain_state keeps the state of a replaced parameter of the same shape
    s.set_parameters({'a': _param()}, reset=False, retain_state=True)
    np.testing.assert_array_equal(s.get_states()['a'].pstate['m'].d, m_a)
    with pytest.raises(ValueError, match="retain.*'a'"):
        s.set_parameters({'a': _param((5,))}, reset=False, retain_state=True)
    s.remove_parameters(['b', 'nothing'])
    assert list(s.get_parameters()) == ['a', 'c'] and list(s.get_states()) == ['a', 'c']
    s.set_parameters({'c': c})  # reset=True: only c remains
    assert list(s.get_parameters()) == ['c']
    s.clear_parameters()
    assert not s.get_parameters() and not s.get_states()
    with pytest.raises(TypeError, match='Variable'):
        s.set_parameters({'x': np.zeros(3)})


def test_zero_grad_and_parameters_without_gradient_are_skipped():
    a, b = _param(grad=2.0), _param()
    s = S.Sgd(lr=0.5)
    s.set_parameters({'a': a, 'b': b})
    assert b.grad.clear_called  # never back-propagated
    s.update()
    assert np.all(a.d == 0) and np.all(b.d == 1)
    assert s.get_states()['a'].t == 1 and s.get_states()['b'].t == 0
    s.zero_grad()
    assert np.all(a.g == 0) and np.all(b.g == 0)
    s.update()  # gradients now exist (zero): every parameter counts a step
    assert s.get_states()['b'].t == 1


def test_update_hooks_run_around_each_parameter():
    calls = []
    s = S.Sgd()
    s.set_parameters({'a': _param(grad=1.0), 'b': _param(grad=1.0), 'c': _param()})
    s.update(update_pre_hook=lambda: calls.append('pre'), update_post_hook=lambda: calls.append('post'))
    assert calls == ['pre', 'post'] * 2


def test_weight_decay_scale_and_clip():
    w = _param((2, 2), 2.0, grad=1.0)
    s = S.Adam()
    s.set_parameters({'w': w})
    s.weight_decay(0.25)
    np.testing.assert_array_equal(w.g, 1.5)
    s.weight_decay(0)
    np.testing.assert_array_equal(w.g, 1.5)
    s.scale_grad(2.0)
    np.testing.assert_array_equal(w.g, 3.0)
    s.clip_grad_by_norm(12.0)  # norm 6: unchanged
    np.testing.assert_array_equal(w.g, 3.0)
    s.clip_grad_by_norm(3.0)  # norm 6 -> 3
    np.testing.assert_allclose(w.g, 1.5)
    # per parameter, not global
    a, b = _param((4,), grad=3.0), _param((4,), grad=0.1)
    s.set_parameters({'a': a, 'b': b})
    s.clip_grad_by_norm(1.0)
    np.testing.assert_allclose(a.g, 0.5)
    np.testing.assert_allclose(b.g, 0.1)


def test_decoupled_solvers_accept_only_their_rate():
    for s in (S.AdamW(wd=1e-3), S.SgdW(wd=1e-3)):
        w = _param(grad=1.0)
        s.set_parameters({'w': w})
        with pytest.raises(ValueError, match='decay_rate'):
            s.weight_decay(1e-2)
        s.weight_decay(1e-3)  # the same rate also decays the gradient, as NNabla does
        np.testing.assert_allclose(w.g, 1.001)
    lars = S.Lars()
    lars.set_parameters({'w': _param(grad=1.0)})
    lars.weight_decay(1e-3)
    lars.weight_decay(1e-3)
    with pytest.raises(ValueError, match='decay_rate'):
        lars.weight_decay(1e-2)


def test_lazy_decay_applies_to_the_next_update_only():
    w = _param((3,), 1.0, grad=0.0)
    s = S.Lion(lr=0.1)
    s.set_parameters({'w': w})
    s.weight_decay(0.5)
    np.testing.assert_array_equal(w.g, 0.0)  # the gradient is left alone
    s.update()
    np.testing.assert_allclose(w.d, 1 - 0.1 * 0.5)
    s.update()  # no weight_decay() call before this one
    np.testing.assert_allclose(w.d, 0.95)


def test_check_inf_nan():
    a, b = _param(grad=0.0), _param(grad=0.0)
    s = S.Sgd()
    s.set_parameters({'a': a, 'b': b})
    assert not s.check_inf_grad() and not s.check_nan_grad() and not s.check_inf_or_nan_grad()
    b.g[0, 1] = np.inf
    assert s.check_inf_grad() and not s.check_nan_grad() and s.check_inf_or_nan_grad()
    b.g[0, 1] = np.nan
    assert not s.check_inf_grad() and s.check_nan_grad() and s.check_inf_or_nan_grad()
    b.g[0, 1] = -np.inf
    assert s.check_inf_grad()


def test_other_storage_dtypes_are_written_back():
    w = nn.Variable.from_numpy_array(np.ones(5, np.float64), need_grad=True)
    w.g = np.full(5, 2.0)
    s = S.Momentum(lr=0.25, momentum=0.5)
    s.set_parameters({'w': w})
    s.weight_decay(0.5)
    s.update()
    assert w.d.dtype == np.float64
    np.testing.assert_allclose(w.d, 1 - 0.25 * 2.5)
    # a 0-d float16 parameter
    h = nn.Variable.from_numpy_array(np.float16(1.0), need_grad=True)
    h.g = np.float16(2.0)
    s.set_parameters({'h': h})
    s.update()
    assert h.d.dtype == np.float16 and h.shape == ()
    assert float(h.d) == 0.5


# ---------------------------------------------------------------------------
# States: get/set, files
# ---------------------------------------------------------------------------

def _trained(name, steps=3, seed=0, **kw):
    rng = np.random.RandomState(seed)
    params = {'conv/W': _param((2, 3, 3)), 'conv/b': _param((2,)), 'fc/W': _param((4, 2))}
    s = getattr(S, name)(**kw)
    s.set_parameters(params)
    for _ in range(steps):
        for v in params.values():
            v.g = rng.randn(*v.shape)
        s.update()
    return s, params


def _continue(s, params, steps=2, seed=1):
    rng = np.random.RandomState(seed)
    for _ in range(steps):
        for v in params.values():
            v.g = rng.randn(*v.shape)
        s.update()
    return {k: v.d.copy() for k, v in params.items()}


def test_get_set_states():
    s, params = _trained('Adam')
    states = s.get_states()
    assert list(states) == ['conv/W', 'conv/b', 'fc/W']
    assert states['conv/W'].t == 3 and set(states['conv/W'].pstate) == {'mean', 'var'}
    # the returned Variables are the solver's own
    states['fc/W'].pstate['mean'].d[...] = 7
    assert np.all(s.get_states()['fc/W'].pstate['mean'].d == 7)
    s2 = S.Adam()
    s2.set_parameters({k: _param(v.shape) for k, v in params.items()})
    s2.set_states(states)
    assert s2.get_states()['conv/b'].t == 3
    with pytest.raises(ValueError, match="set the parameter 'other'"):
        s2.set_states({'other': states['fc/W']})
    bad = S.SolverState({'mean': nn.Variable.from_numpy_array(np.zeros(3)),
                         'var': nn.Variable.from_numpy_array(np.zeros(3))}, 1)
    with pytest.raises(ValueError, match='elements'):
        s2.set_states({'fc/W': bad})
    with pytest.raises(ValueError, match="no state 'velocity'"):
        s2.set_states({'fc/W': S.SolverState({'velocity': states['fc/W'].pstate['mean']}, 1)})


@pytest.mark.parametrize('ext', ['.h5', '.protobuf'])
@pytest.mark.parametrize('name', ['Adam', 'AMSBound', 'Momentum', 'Sgd', 'RMSpropGraves'])
def test_save_load_states_round_trip(tmp_path, name, ext):
    s, params = _trained(name)
    path = str(tmp_path / ('state' + ext))
    s.save_states(path)
    expected = _continue(s, params)

    s2, params2 = _trained(name, steps=3)  # same parameters after 3 steps
    s2.clear_parameters()
    s2.set_parameters(params2)  # fresh (zero) states
    s2.load_states(path)
    for k, st in s2.get_states().items():
        assert st.t == 3
    got = _continue(s2, params2)
    for k in expected:
        np.testing.assert_array_equal(got[k], expected[k])


def test_h5_state_layout(tmp_path):
    import h5py
    s, params = _trained('Adam', steps=2)
    path = str(tmp_path / 's.h5')
    s.save_states(path)
    with h5py.File(path, 'r') as f:
        assert f['conv/W'].attrs['index'] == 0 and f['fc/W'].attrs['index'] == 2
        assert int(f['conv/b/t'][()]) == 2
        assert f['conv/W/mean'].shape == (2, 3, 3) and f['conv/W/mean'].dtype == np.float32
        assert f['conv/W/var'].attrs['index'] == 1
        np.testing.assert_array_equal(f['fc/W/var'][()], s.get_states()['fc/W'].pstate['var'].d)


def test_state_files_are_replaced_atomically(tmp_path, monkeypatch):
    s, params = _trained('Adam')
    path = str(tmp_path / 's.h5')
    s.save_states(path)
    before = open(path, 'rb').read()

    def broken(self, p):
        with open(p, 'wb') as f:
            f.write(b'partial')
        raise OSError('disk full')
    monkeypatch.setattr(S.Solver, '_save_h5', broken)
    with pytest.raises(OSError, match='disk full'):
        s.save_states(path)
    assert open(path, 'rb').read() == before
    assert os.listdir(str(tmp_path)) == ['s.h5']


def test_load_states_rejects_bad_files(tmp_path):
    from nncy.proto import nnabla_pb2
    s, params = _trained('Momentum')
    opt = nnabla_pb2.Optimizer()
    st = opt.solver.states['fc/W']
    st.t = 1
    st.state_parameter['m'].shape.dim.extend([4, 2])
    st.state_parameter['m'].data.extend([0.0] * 7)  # one value short
    path = str(tmp_path / 'bad.protobuf')
    with open(path, 'wb') as f:
        f.write(opt.SerializeToString())
    with pytest.raises(ValueError, match='7 values for shape'):
        s.load_states(path)
    with pytest.raises(ValueError, match='unsupported file type'):
        s.save_states(str(tmp_path / 'x.txt'))
    with pytest.raises(ValueError, match='unsupported file type'):
        s.load_states(str(tmp_path / 'x.txt'))


# ---------------------------------------------------------------------------
# End to end: a small network trained through the graph
# ---------------------------------------------------------------------------

@pytest.mark.parametrize('name,kw', [('Sgd', dict(lr=0.1)), ('Momentum', dict(lr=0.05)),
                                     ('Adam', dict(alpha=0.05)), ('Lamb', dict(eta=0.05)),
                                     ('Lion', dict(lr=0.01))])
def test_training_reduces_the_loss(tmp_path, name, kw):
    import nncy.functions as F
    import nncy.initializer as I
    from nncy.parameter import get_parameter_or_create, get_parameters
    nn.clear_parameters()
    try:
        rng = np.random.RandomState(0)
        xd = rng.randn(64, 5).astype(np.float32)
        yd = (xd @ rng.randn(5, 1) + 0.5).astype(np.float32)
        x, y = nn.Variable.from_numpy_array(xd), nn.Variable.from_numpy_array(yd)
        with nn.parameter_scope('fc'):
            w = get_parameter_or_create('W', (5, 1), I.NormalInitializer(0.1, rng=rng))
            b = get_parameter_or_create('b', (1,), I.ConstantInitializer(0))
        d = F.sub2(F.affine(x, w, b), y)
        loss = F.mean(F.mul2(d, d))
        solver = getattr(S, name)(**kw)
        solver.set_parameters(get_parameters())
        losses = []
        for i in range(60):
            loss.forward()
            solver.zero_grad()
            loss.backward()
            solver.weight_decay(1e-5)
            solver.update()
            losses.append(float(loss.d))
        assert losses[-1] < 0.2 * losses[0], losses[::10]
        # parameters and solver state survive a save/load round trip
        nn.save_parameters(str(tmp_path / 'p.h5'))
        solver.save_states(str(tmp_path / 's.h5'))
        before = w.d.copy()
        w.d = 0
        nn.load_parameters(str(tmp_path / 'p.h5'))
        np.testing.assert_array_equal(w.d, before)
        solver.load_states(str(tmp_path / 's.h5'))
        assert all(st.t == 60 for st in solver.get_states().values())
    finally:
        nn.clear_parameters()
