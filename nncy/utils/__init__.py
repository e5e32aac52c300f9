"""Utilities (NNabla's ``nnabla.utils``)."""
