"""Which kernels each ``.cu`` file under ``kernels/`` provides: the template
instantiations (NVRTC name expressions) the runtime asks for and the compile
options.  Pure Python (no CuPy): the runtime loader and the NVRTC compile test
both read it, so the test compiles exactly what the library launches."""
import pathlib
import re

KERNEL_DIR = pathlib.Path(__file__).with_name('kernels')

# C++ types of the storage dtypes the kernels are instantiated for.
CTYPES = {'float32': 'float', 'float16': '__half'}

# Options for every compile (the architecture and include paths are added by
# the caller: CuPy picks the device's, the test names sm_90).
NVRTC_OPTIONS = ('-std=c++17',)


def pointwise_names():
    """nncy_unary_fwd<T, OP>, nncy_unary_grad<T, OP>, nncy_binary_fwd<T, OP>,
    nncy_binary_grad<T, OP, I> for every pointwise row and storage type."""
    from nncy import _table
    names = []
    for t in CTYPES.values():
        for s in _table.UNARY:
            names.append('nncy_unary_fwd<%s, %d>' % (t, s.code))
            if s.grads[0] is not None:
                names.append('nncy_unary_grad<%s, %d>' % (t, s.code))
        for s in _table.BINARY:
            names.append('nncy_binary_fwd<%s, %d>' % (t, s.code))
            for i, g in enumerate(s.grads):
                if g is not None:
                    names.append('nncy_binary_grad<%s, %d, %d>' % (t, s.code, i))
    return names


# Rule codes of solvers.cu (those of rust/src/optim.rs).
SOLVER_RULES = range(13)


def solver_names():
    return ['nncy_solver_update<%d>' % r for r in SOLVER_RULES]


# Files whose name expressions are computed (the others list theirs in
# ``// @instantiate`` lines, see ``declared``).
NAME_EXPRESSIONS = {
    'pointwise_gen.cu': pointwise_names,
    'solvers.cu': solver_names,
}


def declared(text):
    """The name expressions a .cu file declares, one template per line:

        // @instantiate nncy_pool_fwd<{T},{MODE}> T=float,__half MODE=0,1

    (no spaces in the template) expands to every combination of the listed
    values, written with ", " between template arguments, as the loader is
    asked for them.  A line without ``{...}`` names one kernel."""
    names = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith('// @instantiate '):
            continue
        template, *choices = line[len('// @instantiate '):].split()
        combos = [{}]
        for c in choices:
            key, values = c.split('=', 1)
            combos = [dict(d, **{key: v}) for d in combos for v in values.split(',')]
        for d in combos:
            names.append(template.format(**d).replace(',', ', ').replace(',  ', ', '))
    return names


def sources():
    """Every ``.cu`` file under kernels/, sorted."""
    return sorted(p.name for p in KERNEL_DIR.glob('*.cu'))


def source(filename):
    """The text of a kernel file with its ``#include "x.cuh"`` lines replaced by
    those headers' text (so that compile caches keyed on the source see header
    changes too)."""
    out = []
    for line in (KERNEL_DIR / filename).read_text().splitlines():
        m = re.match(r'\s*#include\s+"([\w.]+)"', line)
        out.append(source(m.group(1)) if m else line)
    return '\n'.join(out) + '\n'


def name_expressions(filename):
    if filename in NAME_EXPRESSIONS:
        return list(NAME_EXPRESSIONS[filename]())
    return declared(source(filename))
