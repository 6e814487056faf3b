"""Embedding lookup for the Numba backend (the math: the reference's ``embedding``).

Every index is checked against the table's size right where it is used, and
a bad one raises ``ValueError`` (after a compiled pre-pass, before anything
is written), so no index can make these loops read or write outside the
table even when called without :mod:`fastnn.ops`.
"""

import numpy as np
from numba import prange

from ..._config import PARALLEL_MIN_ELEMENTS_CHEAP
from ..reference import embedding as _spec
from ._jit import jit, threads, variants

__all__ = list(_spec.__all__)  # the reference's kernels, every one overridden here

_PAR = PARALLEL_MIN_ELEMENTS_CHEAP


@jit
def _in_range(indices, V):
    for i in range(indices.size):
        if indices[i] < 0 or indices[i] >= V:
            return False
    return True


def _check(indices, V, what):
    if not _in_range(indices, V):
        raise ValueError(f"{what} must lie in [0, {V}) for a table of {V} rows")


@variants(inputs="indices weight")
def _gather(indices, weight, out):
    for i in prange(indices.size):
        out[i, :] = weight[indices[i], :]


def embedding_forward(indices, weight, out):
    """See the reference ``embedding_forward``."""
    _check(indices, weight.shape[0], "indices")
    _gather[out.size >= _PAR and indices.size > 1 and threads() > 1](indices, weight, out)
    return out


@jit
def _scatter(grad_out, indices, padding_idx, clear, grad_weight):
    # serial: repeated indices add into the same row
    D = grad_weight.shape[1]
    for i in range(clear.size):
        grad_weight[clear[i], :] = 0
    for i in range(indices.size):
        v = indices[i]
        if v == padding_idx:
            continue
        for d in range(D):
            grad_weight[v, d] += grad_out[i, d]


def embedding_backward(grad_out, indices, padding_idx, clear, grad_weight):
    """See the reference ``embedding_backward``."""
    V = grad_weight.shape[0]
    _check(indices, V, "indices")
    _check(clear, V, "rows to clear")
    _scatter(grad_out, indices, np.int64(padding_idx), clear, grad_weight)
    return grad_weight
