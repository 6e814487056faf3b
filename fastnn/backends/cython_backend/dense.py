"""Matrix multiply and dense-layer kernels of the Cython backend (``fastnn._ext._dense``).

Each product runs on fastnn's own GEMM or on BLAS, chosen in C by shape
from the policy of :mod:`fastnn.gemm` (``set_gemm("own" | "blas" | "auto")``).
"""

from ..._ext import _dense as _ext
from ... import gemm as _gemm_policy
from . import register_ext_module

register_ext_module(_ext)
_gemm_policy.register_policy_hook("cython", _ext._set_gemm_policy)

import numpy as np

from ..._config import get_num_threads

#: With several threads, products above this volume run on NumPy's BLAS, the
#: one the rest of the process already uses: the own GEMM is faster there only
#: while OpenBLAS's worker threads sleep (see fastnn.gemm.THREADED_LIMIT).
_THREADED_NUMPY_MIN = 200 ** 3


def matmul(a, b, trans_a, trans_b, out):
    """C = op(A)·op(B): own GEMM or BLAS by shape (threaded large products: NumPy's BLAS)."""
    if _gemm_policy._mode == "auto" and get_num_threads() > 1:
        m, n = out.shape
        if m * n * (a.shape[0] if trans_a else a.shape[1]) > _THREADED_NUMPY_MIN:
            return np.matmul(a.T if trans_a else a, b.T if trans_b else b, out=out)
    return _ext.matmul(a, b, trans_a, trans_b, out)


dense_forward = _ext.dense_forward
dense_backward = _ext.dense_backward

__all__ = ["matmul", "dense_forward", "dense_backward"]
