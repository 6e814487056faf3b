"""Adaptive average pooling for the Numba backend (the math: the reference's ``adaptive_pool``).

Each output sums its window in float64 (one loop nest, no temporaries); the
backward pass adds each gradient over its window. Planes (b, c) are split
over threads.
"""

import numpy as np
from numba import prange

from ..._config import PARALLEL_MIN_ELEMENTS_CHEAP
from ..reference import adaptive_pool as _spec
from ._jit import jit, jit_inline, threads, variants

__all__ = list(_spec.__all__)  # the reference's kernels, every one overridden here

_PAR = PARALLEL_MIN_ELEMENTS_CHEAP


@jit
def _lo(i, n_in, n_out):
    return (i * n_in) // n_out


@jit
def _hi(i, n_in, n_out):
    return -((-(i + 1) * n_in) // n_out)


@jit_inline  # in the kernel's body: compiled on its own it would keep the reassociation ordered_sums drops
def _fwd_plane(x, out, p):
    H, W = x.shape[1], x.shape[2]
    ho, wo = out.shape[1], out.shape[2]
    for i in range(ho):
        h0, h1 = _lo(i, H, ho), _hi(i, H, ho)
        for j in range(wo):
            w0, w1 = _lo(j, W, wo), _hi(j, W, wo)
            s = 0.0
            for h in range(h0, h1):
                for w in range(w0, w1):
                    s += np.float64(x[p, h, w])
            out[p, i, j] = s / ((h1 - h0) * (w1 - w0))


@jit
def _bwd_plane(g, gi, p):
    H, W = gi.shape[1], gi.shape[2]
    ho, wo = g.shape[1], g.shape[2]
    gi[p, :, :] = 0
    for i in range(ho):
        h0, h1 = _lo(i, H, ho), _hi(i, H, ho)
        for j in range(wo):
            w0, w1 = _lo(j, W, wo), _hi(j, W, wo)
            v = g[p, i, j] / gi.dtype.type((h1 - h0) * (w1 - w0))
            for h in range(h0, h1):
                for w in range(w0, w1):
                    gi[p, h, w] += v


# ordered_sums: the window sums in the source's order, so the serial and the parallel compilation cannot
# vectorise them differently (an exact pair: one replaces the other mid-run)
@variants(inputs="x", ordered_sums=True)
def _fwd(x, out):
    for p in prange(x.shape[0]):
        _fwd_plane(x, out, p)


@variants(inputs="g")
def _bwd(g, gi):
    for p in prange(g.shape[0]):
        _bwd_plane(g, gi, p)


def _planes(a):
    return a.reshape(a.shape[0] * a.shape[1], a.shape[2], a.shape[3])


def adaptive_avg_pool2d_forward(x, out):
    """See the reference ``adaptive_avg_pool2d_forward``."""
    _fwd[x.size >= _PAR and x.shape[0] * x.shape[1] > 1 and threads() > 1](_planes(x), _planes(out))
    return out


def adaptive_avg_pool2d_backward(grad_out, grad_input):
    """See the reference ``adaptive_avg_pool2d_backward``."""
    par = grad_input.size >= _PAR and grad_input.shape[0] * grad_input.shape[1] > 1 and threads() > 1
    _bwd[par](_planes(grad_out), _planes(grad_input))
    return grad_input
