"""Which kernels each ``.cu`` file under ``kernels/`` provides: the template
instantiations (NVRTC name expressions) the runtime asks for and the compile
options.  Pure Python (no CuPy): the runtime loader and the NVRTC compile test
both read it, so the test compiles exactly what the library launches."""
import pathlib

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


# file name -> function returning its name expressions.
NAME_EXPRESSIONS = {
    'pointwise_gen.cu': pointwise_names,
    'solvers.cu': solver_names,
}


def sources():
    """Every ``.cu`` file under kernels/, sorted."""
    return sorted(p.name for p in KERNEL_DIR.glob('*.cu'))


def name_expressions(filename):
    return list(NAME_EXPRESSIONS[filename]())
