"""Matrix multiply and dense-layer kernels of the Cython backend (``fastnn._ext._dense``).

Each product runs on fastnn's own GEMM or on BLAS, chosen in C by shape
from the policy of :mod:`fastnn.gemm` (``set_gemm("own" | "blas" | "auto")``).
"""

from ..._ext import _dense as _ext
from ... import gemm as _gemm_policy
from . import register_ext_module

register_ext_module(_ext)
_gemm_policy.register_policy_hook("cython", _ext._set_gemm_policy)

matmul = _ext.matmul
dense_forward = _ext.dense_forward
dense_backward = _ext.dense_backward

__all__ = ["matmul", "dense_forward", "dense_backward"]
