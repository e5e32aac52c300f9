"""The function table is complete: every row has a CPU implementation, a test
that names it, and a benchmark case.  These tests fail while any row lacks
one, or a GPU implementation and a GPU test."""
import functools
import importlib
import inspect
import os
import re
import sys

import pytest

import nncy.functions as F
from nncy import _table
from nncy.function import implementation

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ROWS = _table.FUNCTIONS


def _test_sources():
    srcs = {}
    for fn in sorted(os.listdir(HERE)):
        if fn.endswith('.py') and fn.startswith('test_') and fn != 'test_registry.py':
            with open(os.path.join(HERE, fn)) as f:
                srcs[fn] = f.read()
    return srcs


def test_table_is_consistent():
    names = [s.name for s in ROWS]
    types = [s.type_name for s in ROWS]
    assert len(set(names)) == len(names), 'duplicate names'
    assert len(set(types)) == len(types), 'duplicate type names'
    for s in ROWS:
        assert s.kind in ('pointwise', 'composite', 'structured'), s
        assert s.doc, s
        assert s.outputs, s
        if s.kind == 'pointwise':
            assert s.fwd and s.grads is not None and len(s.grads) == s.n_inputs, s
            assert 1 <= s.n_inputs <= 2, s


@pytest.mark.parametrize('spec', ROWS, ids=lambda s: s.name)
def test_row_has_cpu_implementation(spec):
    assert implementation(spec.type_name, 'cpu') is not None, (
        '%s (%s) has no CPU implementation' % (spec.name, spec.type_name))


@functools.lru_cache(maxsize=None)
def _gpu_test_text():
    here = os.path.dirname(os.path.abspath(__file__))
    names = [f for f in os.listdir(here) if re.match(r'test_cud(a|nn)\w*\.py$', f)]
    return ''.join(open(os.path.join(here, f)).read() for f in sorted(names))


@pytest.mark.parametrize('spec', ROWS, ids=lambda s: s.name)
def test_row_has_gpu_implementation_and_test(spec):
    """Every row runs on the cuda backend, and a GPU test exercises it (the
    pointwise rows through the table-driven tests of test_cuda.py; the others
    by name).  Importing nncy.cuda.functions registers the implementations
    without importing CuPy."""
    importlib.import_module('nncy.cuda.functions')
    assert implementation(spec.type_name, 'cuda') is not None, (
        '%s (%s) has no cuda implementation' % (spec.name, spec.type_name))
    if spec.kind != 'pointwise':
        assert re.search(r"""(F\.{0}\b|['"]{0}['"])""".format(spec.name), _gpu_test_text()), (
            'no GPU test names %s' % spec.name)


@pytest.mark.parametrize('spec', ROWS, ids=lambda s: s.name)
def test_row_has_wrapper(spec):
    fn = getattr(F, spec.name, None)
    assert callable(fn), 'nncy.functions.%s is missing' % spec.name
    params = inspect.signature(fn).parameters
    in_names = [i.name for i in spec.inputs]
    if spec.signature:   # NNabla's order, inputs and arguments mixed
        assert list(params)[:len(spec.signature)] == spec.signature, list(params)
        assert sorted(spec.signature) == sorted(in_names + list(spec.arg_names)), spec.name
    else:
        assert list(params)[:len(in_names)] == in_names, (list(params), in_names)
    for name, _, default in spec.args:
        if default is _table.REQUIRED:
            default = inspect.Parameter.empty
        assert name in params and params[name].default == default, (spec.name, name)
    assert spec.type_name in (fn.__doc__ or '')


@pytest.mark.parametrize('spec', ROWS, ids=lambda s: s.name)
def test_row_is_tested(spec):
    """Some test file calls ``F.<name>`` or keys a reference by ``'<name>'``."""
    pat = re.compile(r"(\bF\.%s\b|['\"]%s['\"])" % (spec.name, spec.name))
    hits = [fn for fn, src in _test_sources().items() if pat.search(src)]
    assert hits, '%s is not named by any test file' % spec.name


@pytest.mark.parametrize('spec', ROWS, ids=lambda s: s.name)
def test_row_has_benchmark(spec):
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    cases = importlib.import_module('benchmarks.cases')
    assert spec.name in cases.CASES, '%s has no case in benchmarks/cases.py' % spec.name
    inputs, args, _, _ = cases.CASES[spec.name]('small')
    assert len(inputs) >= 1 or not spec.inputs   # constant, arange: no inputs


def test_benchmark_cases_are_table_rows():
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    cases = importlib.import_module('benchmarks.cases')
    stale = set(cases.CASES) - {s.name for s in ROWS}
    assert not stale, stale


def test_public_functions_equal_the_reference_list():
    """nncy.functions exposes exactly the functions of the reference."""
    with open(os.path.join(HERE, 'reference_functions.txt')) as f:
        ref = {line.strip() for line in f if line.strip() and not line.startswith('#')}
    ours = {s.name for s in ROWS}
    assert ours == ref, ('missing: %s; not in the reference: %s'
                         % (sorted(ref - ours), sorted(ours - ref)))
    for name in ref:
        assert callable(getattr(F, name)), name
