"""Matrix multiply and dense-layer kernels of the Cython backend (``kernels/_dense.pxi``).

Every product runs on the own GEMM or on BLAS as the compiled code decides
(``fastnn.backends.gemm_policy``).
"""

import numpy as np

from ..._config import active_threads
from ..._ext import _kernels as _ext
from .. import gemm_policy, tuning

__all__ = ["matmul", "dense_forward", "dense_backward"]

# NumPy's BLAS takes large threaded products: its threads are the pool the
# rest of the process already runs (the compiled code's BLAS is SciPy's).
_numpy_min = [0]
tuning.register_hook(lambda: _numpy_min.__setitem__(0, tuning.value("cython_matmul_threaded_numpy_min")))


def matmul(a, b, trans_a, trans_b, out):
    """C = op(A)·op(B): own GEMM or BLAS by shape (threaded large products: NumPy's BLAS)."""
    if gemm_policy.get_gemm() == "auto" and active_threads() > 1:
        m, n = out.shape
        if m * n * (a.shape[0] if trans_a else a.shape[1]) > _numpy_min[0]:
            return np.matmul(a.T if trans_a else a, b.T if trans_b else b, out=out)
    return _ext.matmul(a, b, trans_a, trans_b, out)


dense_forward = _ext.dense_forward
dense_backward = _ext.dense_backward
