"""NNabla's ``nnabla.function`` module: the Function node class."""
from nncy._core import Function, FunctionInfo, Impl, register, implementation  # noqa: F401
