"""Matrix multiply and dense layers for the Numba backend.

The products themselves go to BLAS through ``np.dot(a, b, out)`` inside
``@njit`` (Numba calls SciPy's ``?gemm`` directly, with the transposes passed
as BLAS flags, no copies): no hand-written loop beats a tuned GEMM from
64×64 up. What Numba adds is everything around the GEMM in one compiled call
with a low dispatch cost: the bias add and the activation fused into one
pass over the output (instead of two or three NumPy passes and temporaries),
and in the backward pass the activation derivative, the bias gradient and
both GEMMs without returning to Python in between.

The activation name is mapped to a small integer in Python (string arguments
are slow to pass into Numba) and the ``None`` arguments of the reference
(no bias, no input gradient) become separate compiled specialisations, so the
branches on them cost nothing at run time.

Zero-sized dimensions are handled before BLAS is called (GEMM rejects a
leading dimension of 0), with the results the reference gives: an empty
product sums nothing, so it is zero.
"""

import numpy as np
from numba import njit

from ..._config import NUMBA_JIT_OPTIONS
from ._math import fsigmoid, ftanh

__all__ = ["matmul", "dense_forward", "dense_backward"]

_jit = njit(**NUMBA_JIT_OPTIONS)

_ACT_CODES = {"identity": 0, "relu": 1, "sigmoid": 2, "tanh": 3}


@_jit
def _matmul(a, b, trans_a, trans_b, out):
    """C = op(A)·op(B) through BLAS gemm."""
    m, n = out.shape
    k = a.shape[0] if trans_a else a.shape[1]
    if m == 0 or n == 0:
        return
    if k == 0:
        out[:] = 0
        return
    # One call per layout: a.T of a C array is an F array, which BLAS takes
    # as a transpose flag.
    if trans_a:
        if trans_b:
            np.dot(a.T, b.T, out)
        else:
            np.dot(a.T, b, out)
    else:
        if trans_b:
            np.dot(a, b.T, out)
        else:
            np.dot(a, b, out)


def matmul(a, b, trans_a, trans_b, out):
    """C = op(A)·op(B), op(M) = M or Mᵀ."""
    _matmul(a, b, trans_a, trans_b, out)
    return out


@_jit
def _bias_act(out, bias, act):
    """out = act(out + b), row by row (bias may be None)."""
    bsz, o = out.shape
    for r in range(bsz):
        row = out[r]
        if bias is not None:
            for j in range(o):
                row[j] += bias[j]
        if act == 1:
            for j in range(o):
                v = row[j]
                row[j] = v if not (v <= 0) else 0
        elif act == 2:
            for j in range(o):
                row[j] = fsigmoid(row[j])
        elif act == 3:
            for j in range(o):
                row[j] = ftanh(row[j])


@_jit
def _dense_forward(x, weight, bias, act, out):
    """y = act(x·Wᵀ + b)."""
    bsz, o = out.shape
    if bsz == 0 or o == 0:
        return
    if x.shape[1] == 0:
        out[:] = 0
    else:
        np.dot(x, weight.T, out)
    _bias_act(out, bias, act)


def dense_forward(x, weight, bias, activation, out):
    """y = act(x·Wᵀ + b)."""
    _dense_forward(x, weight, bias, _ACT_CODES[activation], out)
    return out


@_jit
def _delta(grad_out, y, act):
    """δ = dL/dy ⊙ act'(z), written through y."""
    delta = np.empty_like(grad_out)
    g, yf, d = grad_out.ravel(), y.ravel(), delta.ravel()
    one, zero = grad_out.dtype.type(1), grad_out.dtype.type(0)
    if act == 1:
        for i in range(d.size):
            d[i] = g[i] * (one if yf[i] > 0 else zero)
    elif act == 2:
        for i in range(d.size):
            v = yf[i]
            d[i] = g[i] * (v * (one - v))
    else:
        for i in range(d.size):
            v = yf[i]
            d[i] = g[i] * (one - v * v)
    return delta


@_jit
def _dense_backward_delta(delta, x, weight, grad_input, grad_weight, grad_bias):
    """dW = δᵀ·x, db = Σ_batch δ, dx = δ·W."""
    bsz, o = delta.shape
    i_dim = x.shape[1]
    if grad_bias is not None:
        grad_bias[:] = 0
        for r in range(bsz):
            for j in range(o):
                grad_bias[j] += delta[r, j]
    if bsz == 0 or i_dim == 0 or o == 0:
        grad_weight[:] = 0
        if grad_input is not None:
            grad_input[:] = 0
        return
    np.dot(delta.T, x, grad_weight)
    if grad_input is not None:
        np.dot(delta, weight, grad_input)


@_jit
def _dense_backward(grad_out, x, weight, y, act, grad_input, grad_weight, grad_bias):
    if y is None:   # identity: δ = dL/dy, no copy
        _dense_backward_delta(grad_out, x, weight, grad_input, grad_weight, grad_bias)
    else:
        delta = _delta(grad_out, y, act)
        _dense_backward_delta(delta, x, weight, grad_input, grad_weight, grad_bias)


def dense_backward(grad_out, x, weight, y, activation, grad_input, grad_weight, grad_bias):
    """Backprop through y = act(x·Wᵀ + b): dW = δᵀx, db = Σ δ, dx = δW."""
    act = _ACT_CODES[activation]
    if act == 0:
        y = None
    _dense_backward(grad_out, x, weight, y, act, grad_input, grad_weight, grad_bias)
    return grad_input, grad_weight, grad_bias
