"""Activations for the Numba backend: one fused, vectorised pass per kernel.

Each kernel is a flat loop over the raveled arrays (inputs arrive
C-contiguous, so ``ravel`` is a view) that LLVM turns into SIMD code. The
transcendental functions come from :mod:`._math` (range reduction plus a
polynomial, no library calls), because a loop calling ``np.exp`` cannot be
vectorised and runs several times slower than NumPy. Above
``PARALLEL_MIN_ELEMENTS`` the same loop runs as a ``prange`` over the
elements, which Numba splits into one contiguous block per thread; below it
(or on one thread) the serial compilation of the same function runs, since
waking threads costs more than a small array. Both come from one source
(:func:`._jit.variants`), and each is compiled on its first call.
The elementwise kernels get their arrays flattened (``ravel``: a view of
C-contiguous arrays), so one compilation per dtype serves every shape.

Comparisons are written so that NaN propagates (``x if not (x <= 0) else 0``
keeps NaN, ``max``-style ``x > 0`` tests would drop it).
"""

from numba import prange

from ..._config import PARALLEL_MIN_ELEMENTS, PARALLEL_MIN_ELEMENTS_CHEAP
from ..reference import activations as _spec
from ._jit import jit_inline, renamed, threads, variants
from ._math import fsigmoid, ftanh, row_block, scaled_softmax

__all__ = list(_spec.__all__)  # the reference's kernels, every one overridden here

_PAR = PARALLEL_MIN_ELEMENTS
_PAR_CHEAP = PARALLEL_MIN_ELEMENTS_CHEAP  # memory-bound loops: relu, leaky relu, the backward products


def _map(y_of, name):
    """(serial, parallel) kernels ``kernel(x, out)``: out = y_of(x) element by element (``y_of`` inlined)."""

    def kernel(x, out):
        xf, of = x.ravel(), out.ravel()
        for i in prange(xf.size):
            of[i] = y_of(xf[i])

    return variants(renamed(kernel, "", name), inputs="x")


def _grad_map(dy_of, name):
    """(serial, parallel) kernels ``kernel(g, y, out)``: out = g · dy_of(y, 1, 0), the derivative from the output."""

    def kernel(g, y, out):
        gf, yf, of = g.ravel(), y.ravel(), out.ravel()
        one, zero = g.dtype.type(1), g.dtype.type(0)
        for i in prange(gf.size):
            # y read first: fastmath may reassociate the product, by the order of its operands
            d = dy_of(yf[i], one, zero)
            of[i] = gf[i] * d

    return variants(renamed(kernel, "", name), inputs="g y")


# ---------------------------------------------------------------- relu


@jit_inline
def _relu_y(v):
    """max(v, 0), NaN kept."""
    return v if not (v <= 0) else 0


@jit_inline
def _relu_dy(y, one, zero):
    """[y > 0]."""
    return one if y > 0 else zero


_relu = _map(_relu_y, "_relu")
_relu_bwd = _grad_map(_relu_dy, "_relu_bwd")


def relu(x, out):
    """y = max(x, 0)."""
    _relu[x.size >= _PAR_CHEAP and threads() > 1](x.ravel(), out.ravel())
    return out


def relu_backward(grad_out, y, out):
    """dL/dx = dL/dy · [y > 0]."""
    _relu_bwd[grad_out.size >= _PAR_CHEAP and threads() > 1](grad_out.ravel(), y.ravel(), out.ravel())
    return out


# ---------------------------------------------------------------- leaky relu


@variants(inputs="x")
def _leaky(x, slope, out):
    """y = x if x >= 0 else a·x (NaN kept)."""
    xf, of = x.ravel(), out.ravel()
    a = x.dtype.type(slope)
    for i in prange(xf.size):
        v = xf[i]
        of[i] = v * a if v < 0 else v


@variants(inputs="g y")
def _leaky_bwd(g, y, slope, out):
    """dx = dy · (1 if y > 0 else a)."""
    gf, yf, of = g.ravel(), y.ravel(), out.ravel()
    a = g.dtype.type(slope)
    one = g.dtype.type(1)
    for i in prange(gf.size):
        of[i] = gf[i] * (one if yf[i] > 0 else a)


def leaky_relu(x, negative_slope, out):
    """y = x if x > 0 else negative_slope·x."""
    _leaky[x.size >= _PAR_CHEAP and threads() > 1](x.ravel(), negative_slope, out.ravel())
    return out


def leaky_relu_backward(grad_out, y, negative_slope, out):
    """dL/dx = dL/dy · (1 if y > 0 else negative_slope)."""
    _leaky_bwd[grad_out.size >= _PAR_CHEAP and threads() > 1](grad_out.ravel(), y.ravel(), negative_slope, out.ravel())
    return out


# ---------------------------------------------------------------- sigmoid


@jit_inline
def _sigmoid_dy(y, one, zero):
    """y (1 - y)."""
    return y * (one - y)


_sigmoid = _map(fsigmoid, "_sigmoid")
_sigmoid_bwd = _grad_map(_sigmoid_dy, "_sigmoid_bwd")


def sigmoid(x, out):
    """y = 1 / (1 + exp(-x))."""
    _sigmoid[x.size >= _PAR and threads() > 1](x.ravel(), out.ravel())
    return out


def sigmoid_backward(grad_out, y, out):
    """dL/dx = dL/dy · y (1 − y)."""
    _sigmoid_bwd[grad_out.size >= _PAR_CHEAP and threads() > 1](grad_out.ravel(), y.ravel(), out.ravel())
    return out


# ---------------------------------------------------------------- tanh


@jit_inline
def _tanh_dy(y, one, zero):
    """1 - y²."""
    return one - y * y


_tanh = _map(ftanh, "_tanh")
_tanh_bwd = _grad_map(_tanh_dy, "_tanh_bwd")


def tanh(x, out):
    """y = tanh(x)."""
    _tanh[x.size >= _PAR and threads() > 1](x.ravel(), out.ravel())
    return out


def tanh_backward(grad_out, y, out):
    """dL/dx = dL/dy · (1 − y²)."""
    _tanh_bwd[grad_out.size >= _PAR_CHEAP and threads() > 1](grad_out.ravel(), y.ravel(), out.ravel())
    return out


# ---------------------------------------------------------------- softmax
#
# Row kernels work on row views (``x[r]``) indexed from 0 by ``range``: Numba
# then knows no index is negative and the loops vectorise (with flat
# ``base + j`` indices from an arbitrary row offset they did not, 5x slower).
# The parallel version hands blocks of rows to threads; the serial one runs
# the same blocks in order.

_ROW_CHUNKS = 16


@jit_inline
def _softmax_row(x, out):
    scaled_softmax(x, out, x.dtype.type(1))


@variants(inputs="x", ordered_sums=True)
def _softmax(x, out):
    """y_ij = exp(x_ij - max_i) / sum_k exp(x_ik - max_i)."""
    b, c = x.shape
    if b == 0 or c == 0:
        return
    step = (b + _ROW_CHUNKS - 1) // _ROW_CHUNKS
    for k in prange(_ROW_CHUNKS):
        lo, hi = row_block(k, step, b)
        for r in range(lo, hi):
            _softmax_row(x[r], out[r])


@jit_inline
def _softmax_bwd_row(g, y, out):
    dot = g.dtype.type(0)
    for j in range(g.size):
        dot += g[j] * y[j]
    for j in range(g.size):
        out[j] = (g[j] - dot) * y[j]


@variants(inputs="g y", ordered_sums=True)
def _softmax_bwd(g, y, out):
    """dx_ij = y_ij (dy_ij - sum_k dy_ik y_ik)."""
    b, c = g.shape
    if b == 0 or c == 0:
        return
    step = (b + _ROW_CHUNKS - 1) // _ROW_CHUNKS
    for k in prange(_ROW_CHUNKS):
        lo, hi = row_block(k, step, b)
        for r in range(lo, hi):
            _softmax_bwd_row(g[r], y[r], out[r])


def softmax(x, out):
    """y = softmax(x) over the last axis of a (B, C) array."""
    _softmax[x.size >= _PAR and x.shape[0] > 1 and threads() > 1](x, out)
    return out


def softmax_backward(grad_out, y, out):
    """dL/dx = y ⊙ (dL/dy − Σ_k dL/dy_k y_k), row by row."""
    _softmax_bwd[grad_out.size >= _PAR and grad_out.shape[0] > 1 and threads() > 1](grad_out, y, out)
    return out
