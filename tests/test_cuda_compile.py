"""Every CUDA source under nncy/cuda/kernels compiles with NVRTC to PTX for
sm_90, with every template instantiation the runtime loader requests.  NVRTC
needs no GPU and no driver, so this runs everywhere the ``test`` extra is
installed (``cuda-bindings`` and ``cuda-toolkit[nvrtc,cudart]``)."""
import pytest

from nncy.cuda import _sources

nvrtc = pytest.importorskip('cuda.bindings.nvrtc', reason='needs cuda-bindings (the test extra)')
pathfinder = pytest.importorskip('cuda.pathfinder', reason='needs cuda-pathfinder')

ARCH = b'--gpu-architecture=compute_90'


def _check(result, prog=None):
    err = result[0]
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        log = ''
        if prog is not None:
            _, n = nvrtc.nvrtcGetProgramLogSize(prog)
            buf = b' ' * n
            nvrtc.nvrtcGetProgramLog(prog, buf)
            log = buf.decode(errors='replace')
        raise AssertionError('NVRTC: %s\n%s' % (err, log))
    return result[1:]


def compile_to_ptx(filename):
    """(ptx text, {name expression: lowered name})."""
    src = _sources.source(filename).encode()
    names = _sources.name_expressions(filename)
    prog, = _check(nvrtc.nvrtcCreateProgram(src, filename.encode(), 0, [], []))
    try:
        for n in names:
            _check(nvrtc.nvrtcAddNameExpression(prog, n.encode()))
        include = pathfinder.find_nvidia_header_directory('cudart')
        assert include, 'CUDA runtime headers not found (install cuda-toolkit[cudart])'
        opts = [ARCH, b'-I' + include.encode()] + [o.encode() for o in _sources.NVRTC_OPTIONS]
        _check(nvrtc.nvrtcCompileProgram(prog, len(opts), opts), prog)
        size, = _check(nvrtc.nvrtcGetPTXSize(prog))
        ptx = b' ' * size
        _check(nvrtc.nvrtcGetPTX(prog, ptx))
        lowered = {}
        for n in names:
            low, = _check(nvrtc.nvrtcGetLoweredName(prog, n.encode()))
            lowered[n] = low.decode() if isinstance(low, bytes) else low
        return ptx.decode(errors='replace'), lowered
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def test_every_source_declares_its_kernels():
    assert _sources.sources(), 'no .cu files found'
    for f in _sources.sources():
        assert _sources.name_expressions(f), '%s declares no kernels (// @instantiate)' % f


def test_instantiate_lines_expand_to_every_combination():
    text = '// @instantiate k<{T},{M}> T=float,__half M=0,1\n// @instantiate plain\n'
    assert _sources.declared(text) == ['k<float, 0>', 'k<float, 1>', 'k<__half, 0>',
                                       'k<__half, 1>', 'plain']


@pytest.mark.parametrize('filename', _sources.sources())
def test_compiles_to_ptx_for_sm90(filename):
    ptx, lowered = compile_to_ptx(filename)
    assert '.target sm_90' in ptx
    assert lowered, 'no kernels requested from %s' % filename
    for name, low in lowered.items():
        assert '.entry %s' % low in ptx, name


def test_pointwise_covers_every_row():
    from nncy import _table
    names = set(_sources.name_expressions('pointwise_gen.cu'))
    for s in _table.UNARY:
        assert 'nncy_unary_fwd<float, %d>' % s.code in names, s.name
    for s in _table.BINARY:
        assert 'nncy_binary_fwd<float, %d>' % s.code in names, s.name


def test_the_package_ships_every_kernel_file():
    import fnmatch
    import tomllib
    root = _sources.KERNEL_DIR.parents[2]
    cfg = tomllib.loads((root / 'pyproject.toml').read_text())
    globs = cfg['tool']['setuptools']['package-data']['nncy.cuda']
    for p in _sources.KERNEL_DIR.iterdir():
        assert any(fnmatch.fnmatch('kernels/' + p.name, g) for g in globs), p.name
