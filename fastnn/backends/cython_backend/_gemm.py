"""fastnn's own GEMM for the Cython backend (C kernels in ``kernels/gemm.h``).

Not a kernel module (the leading underscore keeps the registry away). The
backend's ``matmul`` and dense kernels (``_dense.pyx``) compile the same C
kernels in and pick them by shape from :mod:`fastnn.gemm`'s policy; this
module exposes them directly for :mod:`fastnn.gemm`'s measurements and the
tests (forced instruction set, timing loops called from compiled code).
"""

import numpy as np

from . import register_ext_module
from ..._ext import _gemm as _ext

register_ext_module(_ext)

_ACT = _ext.ACTIVATIONS


def isa() -> str:
    """Kernel set in use: ``"avx512"``, ``"avx2"`` or ``"generic"``."""
    return _ext.isa()


def set_isa(name: str) -> str:
    """Force a kernel set (``"auto"``, ``"avx512"``, ``"avx2"``, ``"generic"``); returns the one in use."""
    return _ext.set_isa(name)


def gemm(a, b, trans_a, trans_b, out, bias=None, activation="identity"):
    """``out = act(op(a)·op(b) + bias)``; ``a``, ``b`` of any strides, ``out`` with unit column stride."""
    _ext.gemm(a, b, trans_a, trans_b, out, bias, _ACT[activation])
    return out


def matmul(a, b, trans_a, trans_b, out):
    """``out = op(a)·op(b)`` with the own GEMM."""
    _ext.gemm(a, b, trans_a, trans_b, out, None, 0)
    return out


def dense_forward(x, weight, bias, activation, out):
    """Fused ``out = act(x·Wᵀ + b)``: bias and activation applied to each tile as it is stored."""
    _ext.gemm(x, weight, False, True, out, bias, _ACT[activation])
    return out


def dense_backward(grad_out, x, weight, y, activation, grad_input, grad_weight, grad_bias):
    """δ = grad_out ⊙ act'(y) and dL/db in one pass, then dL/dW = δᵀ·x and dL/dx = δ·W."""
    if activation == "identity":
        delta = grad_out
        if grad_bias is not None:
            np.sum(grad_out, axis=0, out=grad_bias)
    else:
        delta = np.empty_like(grad_out)
        _ext.act_backward_colsum(grad_out, y, _ACT[activation], delta, grad_bias)
    _ext.gemm(delta, x, True, False, grad_weight, None, 0)
    if grad_input is not None:
        _ext.gemm(delta, weight, False, False, grad_input, None, 0)
    return grad_input, grad_weight, grad_bias


def bench_loop(a, b, out, reps, blas):
    """Seconds per product C = A·B, ``reps`` calls back to back from C (own GEMM or BLAS)."""
    return _ext.bench_loop(a, b, out, reps, blas)
