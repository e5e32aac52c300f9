"""Build: cargo compiles the Rust kernel crate into a static library, then Cython
compiles the extension modules; ``nncy._kernels`` links the Rust library and the
other modules reach it through ``nncy/_kernels.pxd``."""
import os
import subprocess
import sys
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
CRATE = ROOT / 'rust'
TARGET = Path(os.environ.get('CARGO_TARGET_DIR', CRATE / 'target'))
STATIC_LIB = TARGET / 'release' / 'libnncy_kernels.a'


class BuildWithCargo(build_ext):
    def run(self):
        cmd = ['cargo', 'build', '--release', '--manifest-path', str(CRATE / 'Cargo.toml')]
        print(' '.join(cmd), flush=True)
        env = dict(os.environ)
        # Portable wheels: never build for the host CPU only; SIMD is chosen at run time.
        env.pop('RUSTFLAGS', None)
        subprocess.check_call(cmd, env=env)
        super().run()


common = dict(
    include_dirs=[numpy.get_include(), str(CRATE / 'include')],
    define_macros=[('NPY_NO_DEPRECATED_API', 'NPY_1_7_API_VERSION')],
    extra_compile_args=['-O2'],
)
extensions = [
    Extension('nncy._kernels', ['nncy/_kernels.pyx'],
              extra_objects=[str(STATIC_LIB)],
              depends=[str(STATIC_LIB)],   # relink when the Rust library changes
              libraries=['pthread', 'dl', 'm'],
              extra_link_args=['-Wl,--gc-sections', '-Wl,--exclude-libs,ALL'],
              **common),
    Extension('nncy._core', ['nncy/_core.pyx'], **common),
]

setup(
    ext_modules=cythonize(extensions, language_level=3,
                          compiler_directives={'embedsignature': True}),
    cmdclass={'build_ext': BuildWithCargo},
)
