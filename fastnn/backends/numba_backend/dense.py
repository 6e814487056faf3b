"""Matrix multiply and dense layers for the Numba backend.

Each product runs on the backend's own GEMM (``_gemm``) or on BLAS, chosen by
shape from :mod:`fastnn.gemm`'s policy (the own GEMM only for mid-sized and
large products on one thread; it loses to BLAS below about 200³ and when
threaded). BLAS is reached through NumPy's ``np.dot(a, b, out=out)`` called
from Python: the transposes are views (C-contiguous ``a.T`` is Fortran order,
which BLAS takes as a transpose flag) and nothing is copied. ``np.dot`` inside
``@njit`` was measured 1–1.5 µs slower per call at 32×64×128 (Numba reaches
SciPy's separate OpenBLAS build), which is what a small MLP step is made of.

What Numba adds is everything around the GEMMs, in one compiled pass each:
the bias add and the activation fused over the output (the reference makes
two or three NumPy passes and a temporary), and in the backward pass the
activation derivative ``δ = dL/dy ⊙ act'(y)`` fused with the bias gradient
``Σ_batch δ`` (one read of ``grad_out`` and ``y``, one write of ``δ``).

The activation name is mapped to a small integer in Python (strings are slow
to pass into Numba) that picks one of four compiled epilogues, each with its
activation built in: a ReLU network never compiles the sigmoid and tanh
code. A missing bias becomes a ``None`` specialisation of the compiled
function, so the branches on it cost nothing at run time.
"""

import numpy as np

from .. import gemm_policy as _gemm_policy
from ..reference import dense as _spec
from . import _gemm as _own
from . import _small_gemm as _small
from ._jit import kernel, renamed, threads
from ._math import fsigmoid, ftanh

__all__ = list(_spec.__all__)  # the reference's kernels, every one overridden here

_ACT_CODES = {"identity": 0, "relu": 1, "sigmoid": 2, "tanh": 3}
_ACT_NAMES = ("identity", "relu", "sigmoid", "tanh")


_NO_BIAS = _own._NO_BIAS
_SMALL_MAX = _small.SMALL_MAX

# The policy's decision for this backend, kept current by its hooks
# (fastnn.backends.gemm_policy): no lookup of the settings per call.
_use_own = _gemm_policy.decider("numba")


def matmul(a, b, trans_a, trans_b, out):
    """C = op(A)·op(B), op(M) = M or Mᵀ: own GEMM or BLAS, by shape (fastnn.gemm)."""
    m, n = out.shape
    k = a.shape[0] if trans_a else a.shape[1]
    if _use_own(out.dtype, m, n, k):
        # the small-product kernel straight away: most products of small networks
        if k and m * n * k <= _SMALL_MAX:
            _own.gemm_small(a, b, trans_a, trans_b, out, _NO_BIAS[out.dtype], False, 0)
        else:
            _own.gemm_2d(a, b, trans_a, trans_b, out, _NO_BIAS[out.dtype], False, 0, threads())
    else:
        np.dot(a.T if trans_a else a, b.T if trans_b else b, out=out)
    return out


def _epilogue(act):
    """The bias-and-activation pass for one activation code, compiled on its first use."""

    def _bias_act(out, bias):
        """out = act(out + b), row by row (bias may be None)."""
        bsz, o = out.shape
        for r in range(bsz):
            row = out[r]
            if bias is not None:
                for j in range(o):
                    row[j] += bias[j]
            # act is a constant of this closure: Numba drops the other branches before typing them
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

    return kernel(renamed(_bias_act, "_" + _ACT_NAMES[act]), inputs="bias")


_BIAS_ACT = tuple(_epilogue(act) for act in range(4))


def dense_forward(x, weight, bias, activation, out):
    """y = act(x·Wᵀ + b)."""
    if out.size == 0:  # nothing to write (the bias loop would still visit every row)
        return out
    act = _ACT_CODES[activation]
    m, n = out.shape
    k = x.shape[1]
    if _use_own(out.dtype, m, n, k):
        # own GEMM: bias and ReLU applied to each tile as it is stored;
        # sigmoid/tanh by the fast activation loop afterwards
        fused = act if act <= 1 else 0
        has_bias = bias is not None
        b = bias if has_bias else _NO_BIAS[out.dtype]
        if k and m * n * k <= _SMALL_MAX:
            _own.gemm_small(x, weight, False, True, out, b, has_bias, fused)
        else:
            _own.gemm_2d(x, weight, False, True, out, b, has_bias, fused, threads())
        if act > 1:
            _BIAS_ACT[act](out, None)
        return out
    np.dot(x, weight.T, out=out)
    if bias is not None or act:
        _BIAS_ACT[act](out, bias)
    return out


@kernel(inputs="grad_out y")
def _delta_bias(grad_out, y, act, delta, grad_bias):
    """δ = dL/dy ⊙ act'(y) (written into delta unless act is identity), db = Σ_batch δ."""
    bsz, o = grad_out.shape
    one, zero = grad_out.dtype.type(1), grad_out.dtype.type(0)
    if grad_bias is not None:
        grad_bias[:] = 0
    for r in range(bsz):
        g = grad_out[r]
        if act != 0:
            yr = y[r]
            d = delta[r]
            if act == 1:
                for j in range(o):
                    d[j] = g[j] * (one if yr[j] > 0 else zero)
            elif act == 2:
                for j in range(o):
                    v = yr[j]
                    d[j] = g[j] * (v * (one - v))
            else:
                for j in range(o):
                    v = yr[j]
                    d[j] = g[j] * (one - v * v)
            g = d
        if grad_bias is not None:
            for j in range(o):
                grad_bias[j] += g[j]


# δ of an identity layer is dL/dy itself: _delta_bias (act 0) writes nothing into this stand-in,
# typed as the δ of the other layers so that both run one compilation (a separate column-sum kernel
# was one more in the first step of every MLP)
_NO_DELTA = {dt: np.empty((0, 0), dt) for dt in _NO_BIAS}


def dense_backward(grad_out, x, weight, y, activation, grad_input, grad_weight, grad_bias):
    """Backprop through y = act(x·Wᵀ + b): dW = δᵀx, db = Σ δ, dx = δW."""
    if grad_out.size == 0:  # no sample or no output: every gradient is a sum over nothing
        for g in (grad_input, grad_weight, grad_bias):
            if g is not None:
                g.fill(0)
        return grad_input, grad_weight, grad_bias
    act = _ACT_CODES[activation]
    if act:
        delta = np.empty_like(grad_out)
        _delta_bias(grad_out, y, act, delta, grad_bias)
    else:
        delta = grad_out
        if grad_bias is not None:
            _delta_bias(grad_out, grad_out, 0, _NO_DELTA[grad_out.dtype], grad_bias)
    matmul(delta, x, True, False, grad_weight)
    if grad_input is not None:
        matmul(delta, weight, False, False, grad_input)
    return grad_input, grad_weight, grad_bias
