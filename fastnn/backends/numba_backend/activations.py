"""Activations for the Numba backend: one fused, vectorised pass per kernel.

Each kernel is a flat loop over the raveled arrays (inputs arrive
C-contiguous, so ``ravel`` is a view) that LLVM turns into SIMD code. The
transcendental functions come from :mod:`._math` (range reduction plus a
polynomial, no library calls), because a loop calling ``np.exp`` cannot be
vectorised and runs several times slower than NumPy. Above
``PARALLEL_MIN_ELEMENTS`` the same loop runs as a ``prange`` over the
elements, which Numba splits into one contiguous block per thread; below it
the serial version runs, since waking threads costs more than a small array.

Comparisons are written so that NaN propagates (``x if not (x <= 0) else 0``
keeps NaN, ``max``-style ``x > 0`` tests would drop it).
"""

from numba import njit, prange

from ..._config import NUMBA_JIT_OPTIONS, PARALLEL_MIN_ELEMENTS, PARALLEL_MIN_ELEMENTS_CHEAP
from ._math import fexp, fsigmoid, ftanh, row_max

__all__ = [
    "relu", "relu_backward",
    "leaky_relu", "leaky_relu_backward",
    "sigmoid", "sigmoid_backward",
    "tanh", "tanh_backward",
    "softmax", "softmax_backward",
]

_PAR = PARALLEL_MIN_ELEMENTS
_PAR_CHEAP = PARALLEL_MIN_ELEMENTS_CHEAP   # memory-bound loops: relu, leaky relu, the backward products
_jit = njit(**NUMBA_JIT_OPTIONS)
_pjit = njit(parallel=True, **NUMBA_JIT_OPTIONS)
# Row helpers are inlined by Numba itself: left as calls, they kept LLVM
# from optimising the row loops together (measured 2x slower).
_jit_inline = njit(inline="always", **NUMBA_JIT_OPTIONS)


# ---------------------------------------------------------------- relu

@_jit
def _relu_ser(x, out):
    for i in range(x.size):
        v = x[i]
        out[i] = v if not (v <= 0) else 0


@_pjit
def _relu_par(x, out):
    for i in prange(x.size):
        v = x[i]
        out[i] = v if not (v <= 0) else 0


@_jit
def _relu(x, out):
    """y = max(x, 0), NaN kept."""
    xf, of = x.ravel(), out.ravel()
    if xf.size >= _PAR_CHEAP:
        _relu_par(xf, of)
    else:
        _relu_ser(xf, of)


@_jit
def _relu_bwd_ser(g, y, out):
    one, zero = g.dtype.type(1), g.dtype.type(0)
    for i in range(g.size):
        out[i] = g[i] * (one if y[i] > 0 else zero)


@_pjit
def _relu_bwd_par(g, y, out):
    one, zero = g.dtype.type(1), g.dtype.type(0)
    for i in prange(g.size):
        out[i] = g[i] * (one if y[i] > 0 else zero)


@_jit
def _relu_bwd(g, y, out):
    """dx = dy * (y > 0)."""
    gf, yf, of = g.ravel(), y.ravel(), out.ravel()
    if gf.size >= _PAR_CHEAP:
        _relu_bwd_par(gf, yf, of)
    else:
        _relu_bwd_ser(gf, yf, of)


def relu(x, out):
    """y = max(x, 0)."""
    _relu(x, out)
    return out


def relu_backward(grad_out, y, out):
    """dL/dx = dL/dy · [y > 0]."""
    _relu_bwd(grad_out, y, out)
    return out


# ---------------------------------------------------------------- leaky relu

@_jit
def _leaky_ser(x, a, out):
    for i in range(x.size):
        v = x[i]
        out[i] = v * a if v < 0 else v


@_pjit
def _leaky_par(x, a, out):
    for i in prange(x.size):
        v = x[i]
        out[i] = v * a if v < 0 else v


@_jit
def _leaky(x, slope, out):
    """y = x if x >= 0 else a·x (NaN kept)."""
    xf, of = x.ravel(), out.ravel()
    a = x.dtype.type(slope)
    if xf.size >= _PAR_CHEAP:
        _leaky_par(xf, a, of)
    else:
        _leaky_ser(xf, a, of)


@_jit
def _leaky_bwd_ser(g, y, a, out):
    one = g.dtype.type(1)
    for i in range(g.size):
        out[i] = g[i] * (one if y[i] > 0 else a)


@_pjit
def _leaky_bwd_par(g, y, a, out):
    one = g.dtype.type(1)
    for i in prange(g.size):
        out[i] = g[i] * (one if y[i] > 0 else a)


@_jit
def _leaky_bwd(g, y, slope, out):
    """dx = dy · (1 if y > 0 else a)."""
    gf, yf, of = g.ravel(), y.ravel(), out.ravel()
    a = g.dtype.type(slope)
    if gf.size >= _PAR_CHEAP:
        _leaky_bwd_par(gf, yf, a, of)
    else:
        _leaky_bwd_ser(gf, yf, a, of)


def leaky_relu(x, negative_slope, out):
    """y = x if x > 0 else negative_slope·x."""
    _leaky(x, negative_slope, out)
    return out


def leaky_relu_backward(grad_out, y, negative_slope, out):
    """dL/dx = dL/dy · (1 if y > 0 else negative_slope)."""
    _leaky_bwd(grad_out, y, negative_slope, out)
    return out


# ---------------------------------------------------------------- sigmoid

@_jit
def _sigmoid_ser(x, out):
    for i in range(x.size):
        out[i] = fsigmoid(x[i])


@_pjit
def _sigmoid_par(x, out):
    for i in prange(x.size):
        out[i] = fsigmoid(x[i])


@_jit
def _sigmoid(x, out):
    """y = 1 / (1 + exp(-x))."""
    xf, of = x.ravel(), out.ravel()
    if xf.size >= _PAR:
        _sigmoid_par(xf, of)
    else:
        _sigmoid_ser(xf, of)


@_jit
def _sigmoid_bwd_ser(g, y, out):
    one = g.dtype.type(1)
    for i in range(g.size):
        v = y[i]
        out[i] = g[i] * (v * (one - v))


@_pjit
def _sigmoid_bwd_par(g, y, out):
    one = g.dtype.type(1)
    for i in prange(g.size):
        v = y[i]
        out[i] = g[i] * (v * (one - v))


@_jit
def _sigmoid_bwd(g, y, out):
    """dx = dy · y (1 - y)."""
    gf, yf, of = g.ravel(), y.ravel(), out.ravel()
    if gf.size >= _PAR_CHEAP:
        _sigmoid_bwd_par(gf, yf, of)
    else:
        _sigmoid_bwd_ser(gf, yf, of)


def sigmoid(x, out):
    """y = 1 / (1 + exp(-x))."""
    _sigmoid(x, out)
    return out


def sigmoid_backward(grad_out, y, out):
    """dL/dx = dL/dy · y (1 − y)."""
    _sigmoid_bwd(grad_out, y, out)
    return out


# ---------------------------------------------------------------- tanh

@_jit
def _tanh_ser(x, out):
    for i in range(x.size):
        out[i] = ftanh(x[i])


@_pjit
def _tanh_par(x, out):
    for i in prange(x.size):
        out[i] = ftanh(x[i])


@_jit
def _tanh(x, out):
    """y = tanh(x)."""
    xf, of = x.ravel(), out.ravel()
    if xf.size >= _PAR:
        _tanh_par(xf, of)
    else:
        _tanh_ser(xf, of)


@_jit
def _tanh_bwd_ser(g, y, out):
    one = g.dtype.type(1)
    for i in range(g.size):
        v = y[i]
        out[i] = g[i] * (one - v * v)


@_pjit
def _tanh_bwd_par(g, y, out):
    one = g.dtype.type(1)
    for i in prange(g.size):
        v = y[i]
        out[i] = g[i] * (one - v * v)


@_jit
def _tanh_bwd(g, y, out):
    """dx = dy · (1 - y²)."""
    gf, yf, of = g.ravel(), y.ravel(), out.ravel()
    if gf.size >= _PAR_CHEAP:
        _tanh_bwd_par(gf, yf, of)
    else:
        _tanh_bwd_ser(gf, yf, of)


def tanh(x, out):
    """y = tanh(x)."""
    _tanh(x, out)
    return out


def tanh_backward(grad_out, y, out):
    """dL/dx = dL/dy · (1 − y²)."""
    _tanh_bwd(grad_out, y, out)
    return out


# ---------------------------------------------------------------- softmax
#
# Row kernels work on row views (``x[r]``) indexed from 0 by ``range``: Numba
# then knows no index is negative and the loops vectorise (with flat
# ``base + j`` indices from an arbitrary row offset they did not, 5x slower).
# The parallel version hands blocks of rows to threads.

_ROW_CHUNKS = 16


@_jit_inline
def _softmax_row(x, out):
    m = row_max(x)
    s = x.dtype.type(0)
    for j in range(x.size):
        e = fexp(x[j] - m)
        out[j] = e
        s += e
    inv = x.dtype.type(1) / s
    for j in range(x.size):
        out[j] *= inv


@_jit
def _softmax_rows(x, out, r0, r1):
    for r in range(r0, r1):
        _softmax_row(x[r], out[r])


@_pjit
def _softmax_par(x, out):
    b = x.shape[0]
    step = (b + _ROW_CHUNKS - 1) // _ROW_CHUNKS
    for k in prange(_ROW_CHUNKS):
        _softmax_rows(x, out, min(k * step, b), min(k * step + step, b))


@_jit
def _softmax(x, out):
    """y_ij = exp(x_ij - max_i) / sum_k exp(x_ik - max_i)."""
    b, c = x.shape
    if b == 0 or c == 0:
        return
    if x.size >= _PAR and b > 1:
        _softmax_par(x, out)
    else:
        _softmax_rows(x, out, 0, b)


@_jit_inline
def _softmax_bwd_row(g, y, out):
    dot = g.dtype.type(0)
    for j in range(g.size):
        dot += g[j] * y[j]
    for j in range(g.size):
        out[j] = (g[j] - dot) * y[j]


@_jit
def _softmax_bwd_rows(g, y, out, r0, r1):
    for r in range(r0, r1):
        _softmax_bwd_row(g[r], y[r], out[r])


@_pjit
def _softmax_bwd_par(g, y, out):
    b = g.shape[0]
    step = (b + _ROW_CHUNKS - 1) // _ROW_CHUNKS
    for k in prange(_ROW_CHUNKS):
        _softmax_bwd_rows(g, y, out, min(k * step, b), min(k * step + step, b))


@_jit
def _softmax_bwd(g, y, out):
    """dx_ij = y_ij (dy_ij - sum_k dy_ik y_ik)."""
    b, c = g.shape
    if b == 0 or c == 0:
        return
    if g.size >= _PAR and b > 1:
        _softmax_bwd_par(g, y, out)
    else:
        _softmax_bwd_rows(g, y, out, 0, b)


def softmax(x, out):
    """y = softmax(x) over the last axis of a (B, C) array."""
    _softmax(x, out)
    return out


def softmax_backward(grad_out, y, out):
    """dL/dx = y ⊙ (dL/dy − Σ_k dL/dy_k y_k), row by row."""
    _softmax_bwd(grad_out, y, out)
    return out
