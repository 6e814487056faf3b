"""Inverted dropout for the Numba backend (the math: the reference's ``dropout``).

One pass over the data writes the output and the mask; the random words come
from :mod:`fastnn.ops`, so this backend drops exactly the values the
reference drops. Large inputs are split over threads by decision groups.
"""

import numpy as np
from numba import prange

from ..._config import PARALLEL_MIN_ELEMENTS_CHEAP
from ..reference import dropout as _spec
from ._jit import jit, threads, variants

__all__ = list(_spec.__all__)  # the reference's kernels, every one overridden here

_PAR = PARALLEL_MIN_ELEMENTS_CHEAP  # memory-bound


# Branch-free: the keep decision becomes the factor k·s (a random branch would mispredict half the time;
# measured 10x slower), and the product keeps the reference's NaN·0 = NaN.


@jit
def _fwd_group(x, bits, threshold, scale, group, relu, out, mask, j):
    k = np.uint8(np.int64(bits[j]) >= threshold)
    mask[j] = k
    f = scale * k
    z = x.dtype.type(0)
    for i in range(j * group, (j + 1) * group):
        v = x[i]
        if relu:
            v = z if v < z else v  # NaN stays NaN, as np.maximum keeps it
        out[i] = v * f


@variants(inputs="x bits")
def _fwd(x, bits, threshold, scale, group, relu, out, mask):
    if group == 1:  # one flat loop the compiler can vectorise
        z = x.dtype.type(0)
        for i in prange(x.size):
            k = np.uint8(np.int64(bits[i]) >= threshold)
            mask[i] = k
            v = x[i]
            if relu:
                v = z if v < z else v
            out[i] = v * (scale * k)
    else:
        for j in prange(x.size // group):
            _fwd_group(x, bits, threshold, scale, group, relu, out, mask, j)


def dropout_forward(x, bits, threshold, scale, group, relu, out, mask):
    """See the reference ``dropout_forward``."""
    xf, of = x.reshape(-1), out.reshape(-1)
    par = x.size >= _PAR and x.size // group > 1 and threads() > 1
    _fwd[par](xf, bits, np.int64(threshold), x.dtype.type(scale), int(group), bool(relu), of, mask)
    return out


@jit
def _bwd_group(g, mask, scale, group, y, has_y, out, j):
    f = scale * mask[j]
    z = g.dtype.type(0)
    one = g.dtype.type(1)
    for i in range(j * group, (j + 1) * group):
        v = g[i] * f
        if has_y:
            v = v * (one if y[i] > z else z)  # multiplied, not assigned: NaN gradients stay NaN
        out[i] = v


@variants(inputs="g mask y")
def _bwd(g, mask, scale, group, y, has_y, out):
    if group == 1:  # one flat loop the compiler can vectorise
        z = g.dtype.type(0)
        one = g.dtype.type(1)
        for i in prange(g.size):
            v = g[i] * (scale * mask[i])
            if has_y:
                v = v * (one if y[i] > z else z)
            out[i] = v
    else:
        for j in prange(g.size // group):
            _bwd_group(g, mask, scale, group, y, has_y, out, j)


def dropout_backward(grad_out, mask, scale, group, y, out):
    """See the reference ``dropout_backward``."""
    gf, of = grad_out.reshape(-1), out.reshape(-1)
    yf = gf if y is None else y.reshape(-1)
    par = grad_out.size >= _PAR and grad_out.size // group > 1 and threads() > 1
    _bwd[par](gf, mask, grad_out.dtype.type(scale), int(group), yf, y is not None, of)
    return out
