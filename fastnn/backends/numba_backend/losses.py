"""Losses for the Numba backend: loss and gradient in one pass over the data.

The reference builds several temporaries (shifted logits, exponentials,
per-element losses) and walks the arrays five or six times; here each row
(softmax cross-entropy) or each element (MSE, BCE) is read once and the
gradient written in the same loop. ``exp`` is the vectorisable polynomial of
:mod:`._math`, so the softmax inner loops compile to SIMD code. Losses are
accumulated in float64 whatever the dtype (the reference sums in float64
too), which keeps the float32 loss accurate over large batches. Large inputs
are split over threads with ``prange`` (rows for the cross-entropy); Numba
combines the per-thread partial sums of the loss.
"""

import math

import numpy as np
from numba import njit, prange

from ..._config import NUMBA_JIT_OPTIONS, PARALLEL_MIN_ELEMENTS, PARALLEL_MIN_ELEMENTS_CHEAP
from ._math import fexp, row_max

__all__ = ["mse_loss", "softmax_cross_entropy", "bce_with_logits"]

_PAR = PARALLEL_MIN_ELEMENTS
_PAR_CHEAP = PARALLEL_MIN_ELEMENTS_CHEAP   # memory-bound loops
_jit = njit(**NUMBA_JIT_OPTIONS)
_pjit = njit(parallel=True, **NUMBA_JIT_OPTIONS)
# Row helpers are inlined by Numba itself: left as calls, they kept LLVM
# from optimising the row loops together (measured 2x slower).
_jit_inline = njit(inline="always", **NUMBA_JIT_OPTIONS)


def _scale(n, reduction):
    return 1.0 / n if reduction == "mean" else 1.0


# ---------------------------------------------------------------- MSE

@_jit
def _mse_ser(p, t, g, two_s):
    acc = 0.0
    for i in range(p.size):
        d = p[i] - t[i]
        acc += np.float64(d) * np.float64(d)
        g[i] = d * two_s
    return acc


@_pjit
def _mse_par(p, t, g, two_s):
    acc = 0.0
    for i in prange(p.size):
        d = p[i] - t[i]
        acc += np.float64(d) * np.float64(d)
        g[i] = d * two_s
    return acc


@_jit
def _mse(pred, target, scale, grad):
    """L = s·Σ(a−y)², dL/da = 2s(a−y)."""
    p, t, g = pred.ravel(), target.ravel(), grad.ravel()
    two_s = pred.dtype.type(2.0 * scale)
    if p.size >= _PAR_CHEAP:
        return _mse_par(p, t, g, two_s) * scale
    return _mse_ser(p, t, g, two_s) * scale


def mse_loss(pred, target, reduction, grad):
    """L = s·Σ(a − y)², dL/da = 2s(a − y); s = 1/n for "mean"."""
    n = pred.size
    if n == 0:
        return (float("nan") if reduction == "mean" else 0.0), grad
    return float(_mse(pred, target, _scale(n, reduction), grad)), grad


# ---------------------------------------------------------------- softmax cross-entropy

@_jit_inline
def _ce_row(z, lab, g, s):
    """One row: write s·(softmax − onehot) into g, return −log p[lab] (float64)."""
    m = row_max(z)
    acc = z.dtype.type(0)
    for j in range(z.size):
        e = fexp(z[j] - m)
        g[j] = e
        acc += e
    inv = s / acc
    for j in range(z.size):
        g[j] *= inv
    g[lab] -= s
    return math.log(np.float64(acc)) - (np.float64(z[lab]) - np.float64(m))


# Rows are processed as row views indexed from 0 (see the softmax kernels in
# .activations for why), the parallel version in blocks of rows per thread.
_ROW_CHUNKS = 16


@_jit
def _ce_rows(z, labels, g, r0, r1, s):
    loss = 0.0
    for r in range(r0, r1):
        loss += _ce_row(z[r], labels[r], g[r], s)
    return loss


@_pjit
def _ce_par(z, labels, g, s):
    b = z.shape[0]
    step = (b + _ROW_CHUNKS - 1) // _ROW_CHUNKS
    block_loss = np.zeros(_ROW_CHUNKS)
    for k in prange(_ROW_CHUNKS):
        block_loss[k] = _ce_rows(z, labels, g, min(k * step, b), min(k * step + step, b), s)
    return block_loss.sum()


@_jit
def _softmax_ce(logits, labels, scale, grad):
    """L = s·Σ_i (logsumexp(z_i) − z_i[y_i]), dL/dz = s·(softmax(z) − onehot(y))."""
    b, c = logits.shape
    for r in range(b):   # the kernel checks what it indexes with: -1 flags a bad label
        if np.uint64(labels[r]) >= np.uint64(c):
            return -1.0
    s = logits.dtype.type(scale)
    if logits.size >= _PAR and b > 1:
        return _ce_par(logits, labels, grad, s) * scale
    return _ce_rows(logits, labels, grad, 0, b, s) * scale


def softmax_cross_entropy(logits, labels, reduction, grad):
    """L = s·Σ_i (logsumexp(z_i) − z_{i,y_i}), dL/dz = s·(softmax(z) − onehot(y))."""
    b = logits.shape[0]
    if b == 0:
        return (float("nan") if reduction == "mean" else 0.0), grad
    loss = float(_softmax_ce(logits, labels, _scale(b, reduction), grad))
    if loss < 0:
        raise ValueError(f"labels must lie in [0, {logits.shape[1]})")
    return loss, grad


# ---------------------------------------------------------------- BCE with logits

@_jit_inline
def _bce_elem(z, t, s, one, zero):
    e = fexp(-np.abs(z))
    loss = (np.float64(z if z > zero else zero) - np.float64(z) * np.float64(t)
            + math.log1p(np.float64(e)))
    sig = (one if z >= zero else e) / (one + e)
    return loss, (sig - t) * s


@_jit
def _bce_ser(z, t, g, s):
    one, zero = z.dtype.type(1), z.dtype.type(0)
    acc = 0.0
    for i in range(z.size):
        loss, gi = _bce_elem(z[i], t[i], s, one, zero)
        acc += loss
        g[i] = gi
    return acc


@_pjit
def _bce_par(z, t, g, s):
    one, zero = z.dtype.type(1), z.dtype.type(0)
    acc = 0.0
    for i in prange(z.size):
        loss, gi = _bce_elem(z[i], t[i], s, one, zero)
        acc += loss
        g[i] = gi
    return acc


@_jit
def _bce(logits, target, scale, grad):
    """L = s·Σ max(z,0) − z·y + log1p(exp(−|z|)), dL/dz = s·(σ(z) − y)."""
    z, t, g = logits.ravel(), target.ravel(), grad.ravel()
    s = logits.dtype.type(scale)
    if z.size >= _PAR:
        return _bce_par(z, t, g, s) * scale
    return _bce_ser(z, t, g, s) * scale


def bce_with_logits(logits, target, reduction, grad):
    """L = s·Σ [max(z, 0) − z·y + log(1 + exp(−|z|))], dL/dz = s·(σ(z) − y)."""
    n = logits.size
    if n == 0:
        return (float("nan") if reduction == "mean" else 0.0), grad
    return float(_bce(logits, target, _scale(n, reduction), grad)), grad
