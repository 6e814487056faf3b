"""fastnn's own GEMM for the Cython backend, called directly (``kernels/gemm.h``, ``gemm_packed.h``).

Not a kernel module (the leading underscore keeps the registry away). The
backend's kernels reach the same C code through the policy's router; this
module exposes it directly for measurements and tests: a forced instruction
set, the small kernel or the packed GEMM by name, timing loops called from
compiled code.
"""

import numpy as np

from ..._ext import _kernels as _ext
from . import select_isa

_ACT = _ext.ACTIVATIONS


def isa() -> str:
    """Instruction set the GEMM family runs: ``"avx512"``, ``"avx2"`` or ``"sse2"`` (``"generic"`` elsewhere)."""
    return _ext.family_isa()["gemm"]


def set_isa(name: str) -> str:
    """Force the GEMM family's instruction set (``"auto"``, ``"avx512"``, ``"avx2"``, ``"sse2"``/``"generic"``)."""
    return select_isa(name, "gemm")


def gemm(a, b, trans_a, trans_b, out, bias=None, activation="identity", route="packed"):
    """``out = act(op(a)·op(b) + bias)`` on the packed GEMM (or ``route="small"``); any strides, ``out``
    with unit column stride."""
    _ext.gemm(a, b, trans_a, trans_b, out, bias, _ACT[activation], route)
    return out


def matmul(a, b, trans_a, trans_b, out):
    """``out = op(a)·op(b)`` with the own GEMM."""
    return gemm(a, b, trans_a, trans_b, out)


def dense_forward(x, weight, bias, activation, out):
    """Fused ``out = act(x·Wᵀ + b)``: bias and activation applied to each tile as it is stored."""
    return gemm(x, weight, False, True, out, bias, activation)


def dense_backward(grad_out, x, weight, y, activation, grad_input, grad_weight, grad_bias):
    """δ = grad_out ⊙ act'(y) and dL/db in one pass, then dL/dW = δᵀ·x and dL/dx = δ·W."""
    if activation == "identity":
        delta = grad_out
        if grad_bias is not None:
            np.sum(grad_out, axis=0, out=grad_bias)
    else:
        delta = np.empty_like(grad_out)
        _ext.act_backward_colsum(grad_out, y, _ACT[activation], delta, grad_bias)
    gemm(delta, x, True, False, grad_weight)
    if grad_input is not None:
        gemm(delta, weight, False, False, grad_input)
    return grad_input, grad_weight, grad_bias


def bench_loop(a, b, out, reps, blas):
    """Seconds per product C = A·B, ``reps`` calls back to back from C (own GEMM or BLAS)."""
    return _ext.bench_loop(a, b, out, reps, blas)
