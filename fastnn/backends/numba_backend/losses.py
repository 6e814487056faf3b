"""Losses for the Numba backend: loss and gradient in one pass over the data.

The reference builds several temporaries (shifted logits, exponentials,
per-element losses) and walks the arrays five or six times; here each row
(softmax cross-entropy) or each element (MSE, BCE) is read once and the
gradient written in the same loop. ``exp`` is the vectorisable polynomial of
:mod:`._math`, so the softmax inner loops compile to SIMD code. Losses are
accumulated in float64 whatever the dtype (the reference sums in float64
too), which keeps the float32 loss accurate over large batches. Large inputs
are split over threads with ``prange`` (rows for the cross-entropy); Numba
combines the per-thread partial sums of the loss. The serial and parallel
kernels are two compilations of one function (:func:`._jit.variants`),
indexed ``[parallel]``; each is compiled on its first call.
"""

import math

import numpy as np
from numba import prange

from ..._config import PARALLEL_MIN_ELEMENTS, PARALLEL_MIN_ELEMENTS_CHEAP
from ..reference import losses as _spec
from ..reference.losses import _scale
from ._jit import jit_inline, threads, variants
from ._math import fexp, row_block, scaled_softmax

__all__ = list(_spec.__all__)  # the reference's kernels, every one overridden here

_PAR = PARALLEL_MIN_ELEMENTS
_PAR_CHEAP = PARALLEL_MIN_ELEMENTS_CHEAP  # memory-bound loops


# ---------------------------------------------------------------- MSE


@variants(inputs="pred target", exact=False)
def _mse(pred, target, scale, two_scale, grad):
    """L = s·Σ(a−y)², dL/da = 2s(a−y); two_scale = 2s from the caller (see _adam in .optim for why)."""
    p, t, g = pred.ravel(), target.ravel(), grad.ravel()
    two_s = pred.dtype.type(two_scale)
    acc = 0.0
    for i in prange(p.size):
        d = p[i] - t[i]
        acc += np.float64(d) * np.float64(d)
        g[i] = d * two_s
    return acc * scale


def mse_loss(pred, target, reduction, grad):
    """L = s·Σ(a − y)², dL/da = 2s(a − y); s = 1/n for "mean"."""
    n = pred.size
    if n == 0:
        return (float("nan") if reduction == "mean" else 0.0), grad
    scale = _scale(n, reduction)
    return float(
        _mse[n >= _PAR_CHEAP and threads() > 1](pred.ravel(), target.ravel(), scale, 2.0 * scale, grad.ravel())
    ), grad


# ---------------------------------------------------------------- softmax cross-entropy


@jit_inline
def _ce_row(z, lab, g, s):
    """One row: write s·(softmax − onehot) into g, return −log p[lab] (float64)."""
    m, acc = scaled_softmax(z, g, s)
    g[lab] -= s
    return math.log(np.float64(acc)) - (np.float64(z[lab]) - np.float64(m))


# Rows are processed as row views indexed from 0 (see the softmax kernels in
# .activations for why): the parallel version in blocks of rows per thread
# (a partial loss per block, summed in block order), the serial one in one
# block, so its loss is the plain sum over the rows in order.
_ROW_CHUNKS = 16


@variants(inputs="logits labels", exact=False)
def _softmax_ce(logits, labels, scale, grad, chunks):
    """L = s·Σ_i (logsumexp(z_i) − z_i[y_i]), dL/dz = s·(softmax(z) − onehot(y)); ``chunks`` row blocks."""
    b, c = logits.shape
    for r in range(b):  # the kernel checks what it indexes with: -1 flags a bad label
        if np.uint64(labels[r]) >= np.uint64(c):
            return -1.0
    s = logits.dtype.type(scale)
    step = (b + chunks - 1) // chunks
    block_loss = np.empty(chunks)
    for k in prange(chunks):
        loss = 0.0
        lo, hi = row_block(k, step, b)
        for r in range(lo, hi):
            loss += _ce_row(logits[r], labels[r], grad[r], s)
        block_loss[k] = loss
    total = 0.0
    for k in range(chunks):
        total += block_loss[k]
    return total * scale


def softmax_cross_entropy(logits, labels, reduction, grad):
    """L = s·Σ_i (logsumexp(z_i) − z_{i,y_i}), dL/dz = s·(softmax(z) − onehot(y))."""
    b = logits.shape[0]
    if b == 0:
        return (float("nan") if reduction == "mean" else 0.0), grad
    par = logits.size >= _PAR and b > 1 and threads() > 1
    loss = float(_softmax_ce[par](logits, labels, _scale(b, reduction), grad, _ROW_CHUNKS if par else 1))
    if loss < 0:
        raise ValueError(f"labels must lie in [0, {logits.shape[1]})")
    return loss, grad


# ---------------------------------------------------------------- BCE with logits


@jit_inline
def _bce_elem(z, t, s, one, zero):
    e = fexp(-np.abs(z))
    loss = np.float64(z if z > zero else zero) - np.float64(z) * np.float64(t) + math.log1p(np.float64(e))
    sig = (one if z >= zero else e) / (one + e)
    return loss, (sig - t) * s


@variants(inputs="logits target", exact=False)
def _bce(logits, target, scale, grad):
    """L = s·Σ max(z,0) − z·y + log1p(exp(−|z|)), dL/dz = s·(σ(z) − y)."""
    z, t, g = logits.ravel(), target.ravel(), grad.ravel()
    s = logits.dtype.type(scale)
    one, zero = z.dtype.type(1), z.dtype.type(0)
    acc = 0.0
    for i in prange(z.size):
        loss, gi = _bce_elem(z[i], t[i], s, one, zero)
        acc += loss
        g[i] = gi
    return acc * scale


def bce_with_logits(logits, target, reduction, grad):
    """L = s·Σ [max(z, 0) − z·y + log(1 + exp(−|z|))], dL/dz = s·(σ(z) − y)."""
    n = logits.size
    if n == 0:
        return (float("nan") if reduction == "mean" else 0.0), grad
    return float(
        _bce[n >= _PAR and threads() > 1](logits.ravel(), target.ravel(), _scale(n, reduction), grad.ravel())
    ), grad
