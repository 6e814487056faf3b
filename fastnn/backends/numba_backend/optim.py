"""Optimizer updates for the Numba backend: one fused pass over the state.

The reference applies an update as a chain of NumPy expressions, each a full
pass over the parameter array with a temporary (Adam takes about a dozen).
Here each element of the parameter, gradient and state is loaded once,
updated in registers and stored once, so an update moves the minimum number
of bytes; above ``PARALLEL_MIN_ELEMENTS`` the loop is split over threads
(the parallel compilation of the same function, :func:`._jit.variants`,
compiled on its first call).

The hyper-parameters are converted to the array dtype once, outside the
loop, so float32 updates run in float32 SIMD lanes. Per-step constants
(bias corrections) are computed in float64 in Python first, exactly as the
reference does. SGD with and without a momentum buffer are separate loops;
the other options (weight decay, Nesterov, AdamW's decoupled decay) are
loop-invariant scalars.

Every array reaches the kernels flattened (``ravel``: a view, the arrays are
C-contiguous), so one compilation per dtype serves weights, biases and
filters alike instead of one per number of dimensions.
"""

import math

import numpy as np
from numba import prange

from ..._config import PARALLEL_MIN_ELEMENTS, PARALLEL_MIN_ELEMENTS_CHEAP
from ..reference import optim as _spec
from ._jit import jit_inline, threads, variants

__all__ = list(_spec.__all__)  # the reference's kernels, every one overridden here

_PAR = PARALLEL_MIN_ELEMENTS
_PAR_CHEAP = PARALLEL_MIN_ELEMENTS_CHEAP  # memory-bound loops


# ---------------------------------------------------------------- SGD

# The per-element updates are inlined into the loops (as LLVM did anyway): compiled on their own,
# each was one more compilation, linked into the kernel and optimised there again.


@jit_inline
def _decayed(g, wd, p):
    """g + λp, or g itself when λ = 0: 0·p would make an inf or NaN parameter a NaN gradient."""
    return g + wd * p if wd != 0 else g


@jit_inline
def _sgd_elem(p, g, v, lr, mu, nesterov, wd):
    g = _decayed(g, wd, p)
    v = mu * v + g
    g = g + mu * v if nesterov else v
    return p - lr * g, v


# Separate loops with and without a velocity rather than a None test inside
# one prange loop: that form gave wrong results in the parallel version (seen
# with Numba 0.68), the split form is simpler anyway.


@variants(inputs="grad")
def _sgd_mom(param, grad, velocity, lr, momentum, nesterov, weight_decay):
    """v = μv + (g + λp); p -= lr·(g + λp + μv if Nesterov else v)."""
    t = param.dtype.type
    p, g, v = param.ravel(), grad.ravel(), velocity.ravel()
    lr_, mu, wd = t(lr), t(momentum), t(weight_decay)
    for i in prange(p.size):
        p[i], v[i] = _sgd_elem(p[i], g[i], v[i], lr_, mu, nesterov, wd)


@variants(inputs="grad")
def _sgd_plain(param, grad, lr, weight_decay):
    """p -= lr·(g + λp)."""
    t = param.dtype.type
    p, g = param.ravel(), grad.ravel()
    lr_, wd = t(lr), t(weight_decay)
    for i in prange(p.size):
        p[i] = p[i] - lr_ * _decayed(g[i], wd, p[i])


def sgd_update(param, grad, velocity, lr, momentum, nesterov, weight_decay):
    """g = ∇ + λp; v = μv + g; p −= lr·(g + μv if Nesterov else v) (v only if μ > 0)."""
    par = param.size >= _PAR_CHEAP and threads() > 1
    if momentum:
        _sgd_mom[par](
            param.ravel(),
            grad.ravel(),
            velocity.ravel(),
            float(lr),
            float(momentum),
            bool(nesterov),
            float(weight_decay),
        )
    else:
        _sgd_plain[par](param.ravel(), grad.ravel(), float(lr), float(weight_decay))


# ---------------------------------------------------------------- Adam / AdamW


@jit_inline
def _adam_elem(p, g, m, v, decay, wd, b1, c1, b2, c2, step, inv_sqrt_bc2, eps):
    p = p * decay  # AdamW's decoupled decay (decay == 1 otherwise)
    g = _decayed(g, wd, p)  # Adam's L2 term (wd == 0 for AdamW)
    m = b1 * m + c1 * g
    v = b2 * v + c2 * (g * g)
    return p - step * (m / (np.sqrt(v) * inv_sqrt_bc2 + eps)), m, v


@variants(inputs="grad")
def _adam(param, grad, exp_avg, exp_avg_sq, decay, wd, b1, c1, b2, c2, step_size, inv_sqrt_bc2, eps):
    """m = β1m + c1·g, v = β2v + c2·g², p −= α·m / (√v/√bc2 + ε); c1 = 1 − β1, c2 = 1 − β2."""
    # c1 and c2 come from the caller: computed here, (1 - b1) next to b1 lets fast-math rewrite
    # b1·m + (1 - b1)·g as b1·(m - g) + g, which is NaN instead of inf for an infinite gradient
    t = param.dtype.type
    # one view per statement: unpacked from one four-element tuple, the views were not seen as aliases of
    # the arguments, and Numba 0.68's parallel compilation dropped the loop below as dead code (the
    # parameters never changed); the serial one ran it
    p = param.ravel()
    g = grad.ravel()
    m = exp_avg.ravel()
    v = exp_avg_sq.ravel()
    decay_, wd_, b1_, c1_, b2_, c2_ = t(decay), t(wd), t(b1), t(c1), t(b2), t(c2)
    step_, inv_, eps_ = t(step_size), t(inv_sqrt_bc2), t(eps)
    for i in prange(p.size):
        p[i], m[i], v[i] = _adam_elem(p[i], g[i], m[i], v[i], decay_, wd_, b1_, c1_, b2_, c2_, step_, inv_, eps_)


def adam_update(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    """Adam (AdamW if decoupled): m, v moments, bias-corrected step, in place."""
    if weight_decay and decoupled:
        decay, wd = 1.0 - lr * weight_decay, 0.0
    else:
        decay, wd = 1.0, float(weight_decay)
    bias_correction1 = 1.0 - beta1**step
    bias_correction2 = 1.0 - beta2**step
    _adam[param.size >= _PAR and threads() > 1](
        param.ravel(),
        grad.ravel(),
        exp_avg.ravel(),
        exp_avg_sq.ravel(),
        decay,
        wd,
        beta1,
        1.0 - beta1,
        beta2,
        1.0 - beta2,
        lr / bias_correction1,
        1.0 / math.sqrt(bias_correction2),
        eps,
    )


def sgd_update_many(params, grads, velocities, lr, momentum, nesterov, weight_decay):
    """:func:`sgd_update` on each ``(params[i], grads[i], velocities[i])``."""
    lr, momentum, weight_decay, nesterov = float(lr), float(momentum), float(weight_decay), bool(nesterov)
    if momentum:
        for i in range(len(params)):
            p = params[i]
            _sgd_mom[p.size >= _PAR_CHEAP and threads() > 1](
                p.ravel(), grads[i].ravel(), velocities[i].ravel(), lr, momentum, nesterov, weight_decay
            )
    else:
        for i in range(len(params)):
            p = params[i]
            _sgd_plain[p.size >= _PAR_CHEAP and threads() > 1](p.ravel(), grads[i].ravel(), lr, weight_decay)


def adam_update_many(params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    """:func:`adam_update` on each ``(params[i], grads[i], exp_avgs[i], exp_avg_sqs[i])``."""
    if weight_decay and decoupled:
        decay, wd = 1.0 - lr * weight_decay, 0.0
    else:
        decay, wd = 1.0, float(weight_decay)
    step_size = lr / (1.0 - beta1**step)
    inv_sqrt_bc2 = 1.0 / math.sqrt(1.0 - beta2**step)
    c1, c2 = 1.0 - beta1, 1.0 - beta2
    for i in range(len(params)):
        p = params[i]
        _adam[p.size >= _PAR and threads() > 1](
            p.ravel(),
            grads[i].ravel(),
            exp_avgs[i].ravel(),
            exp_avg_sqs[i].ravel(),
            decay,
            wd,
            beta1,
            c1,
            beta2,
            c2,
            step_size,
            inv_sqrt_bc2,
            eps,
        )
