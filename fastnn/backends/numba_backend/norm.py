"""Batch and layer normalisation for the Numba backend (the math: the reference's ``norm``).

One loop nest per pass instead of the reference's temporaries: the
statistics are summed in float64 in one pass over each channel (batch norm)
or row (layer norm), the output written in a second. Batch norm splits the
channels over threads, layer norm the rows. ``None`` arguments (no affine
parameters, no input gradient) become flags here, in Python, so each kernel
compiles once per dtype.
"""

import math

import numpy as np
from numba import prange

from ..._config import PARALLEL_MIN_ELEMENTS
from ._jit import jit, threads, variants

__all__ = ["batch_norm_forward", "batch_norm_backward", "layer_norm_forward", "layer_norm_backward"]

_PAR = PARALLEL_MIN_ELEMENTS


def _vec(a, like, fill):
    """``a``, or a constant stand-in of ``like``'s dtype when the layer has no such parameter."""
    return a if a is not None else np.full(1, fill, like.dtype)


def _grad_vec(a, like):
    return a if a is not None else np.empty(1, like.dtype)


# ---------------------------------------------------------------- batch norm


@jit
def _bn_channel_fwd(x, weight, bias, has_w, has_b, eps, batch_stats, mean, var, out, c):
    N, _, L = x.shape
    if batch_stats:
        s = 0.0
        for n in range(N):
            for i in range(L):
                s += np.float64(x[n, c, i])
        m = s / (N * L)
        mc = x.dtype.type(m)  # the reference centres in the data's dtype
        q = 0.0
        for n in range(N):
            for i in range(L):
                d = np.float64(x[n, c, i] - mc)
                q += d * d
        mean[c] = m
        var[c] = q / (N * L)
    scale = 1.0 / math.sqrt(np.float64(var[c]) + eps)
    if has_w:
        scale *= np.float64(weight[c])
    shift = -np.float64(mean[c]) * scale
    if has_b:
        shift += np.float64(bias[c])
    sc = x.dtype.type(scale)
    sh = x.dtype.type(shift)
    for n in range(N):
        for i in range(L):
            out[n, c, i] = x[n, c, i] * sc + sh


@variants(inputs="x weight bias")
def _bn_fwd(x, weight, bias, has_w, has_b, eps, batch_stats, mean, var, out):
    for c in prange(x.shape[1]):
        _bn_channel_fwd(x, weight, bias, has_w, has_b, eps, batch_stats, mean, var, out, c)


def batch_norm_forward(x, weight, bias, eps, batch_stats, mean, var, out):
    """See the reference ``batch_norm_forward``."""
    _bn_fwd[x.size >= _PAR and x.shape[1] > 1 and threads() > 1](
        x,
        _vec(weight, x, 1),
        _vec(bias, x, 0),
        weight is not None,
        bias is not None,
        float(eps),
        bool(batch_stats),
        mean,
        var,
        out,
    )
    return out


@jit
def _bn_channel_bwd(g, x, weight, has_w, mean, var, eps, batch_stats, gi, has_gi, gw, gb, c):
    N, _, L = x.shape
    M = N * L
    r = 1.0 / math.sqrt(np.float64(var[c]) + eps)
    mu = mean[c]
    sum_g = 0.0
    sum_gx = 0.0
    for n in range(N):
        for i in range(L):
            gv = np.float64(g[n, c, i])
            sum_g += gv
            sum_gx += gv * np.float64(x[n, c, i] - mu)
    sum_gx *= r
    gb[c] = sum_g
    gw[c] = sum_gx
    if has_gi:
        k = r * (np.float64(weight[c]) if has_w else 1.0)
        kt = x.dtype.type(k)
        if batch_stats:
            a = x.dtype.type(k * r * sum_gx / M)
            b = x.dtype.type(k * sum_g / M)
            for n in range(N):
                for i in range(L):
                    gi[n, c, i] = g[n, c, i] * kt - ((x[n, c, i] - mu) * a + b)
        else:
            for n in range(N):
                for i in range(L):
                    gi[n, c, i] = g[n, c, i] * kt


@variants(inputs="g x weight mean var")
def _bn_bwd(g, x, weight, has_w, mean, var, eps, batch_stats, gi, has_gi, gw, gb):
    for c in prange(x.shape[1]):
        _bn_channel_bwd(g, x, weight, has_w, mean, var, eps, batch_stats, gi, has_gi, gw, gb, c)


def batch_norm_backward(grad_out, x, weight, mean, var, eps, batch_stats, grad_input, grad_weight, grad_bias):
    """See the reference ``batch_norm_backward``."""
    C = x.shape[1]
    # the channel sums are needed for dL/dx anyway: scratch arrays where the caller wants no γ/β gradient
    gw = grad_weight if grad_weight is not None else np.empty(C, x.dtype)
    gb = grad_bias if grad_bias is not None else np.empty(C, x.dtype)
    gi = grad_input if grad_input is not None else np.empty((1, C, 1), x.dtype)
    _bn_bwd[x.size >= _PAR and C > 1 and threads() > 1](
        grad_out,
        x,
        _vec(weight, x, 1),
        weight is not None,
        mean,
        var,
        float(eps),
        bool(batch_stats),
        gi,
        grad_input is not None,
        gw,
        gb,
    )
    return grad_input, grad_weight, grad_bias


# ---------------------------------------------------------------- layer norm


@jit
def _ln_row_fwd(x, weight, bias, has_w, has_b, eps, out, mean, rstd, m):
    K = x.shape[1]
    s = 0.0
    for k in range(K):
        s += np.float64(x[m, k])
    mu = s / K
    mc = x.dtype.type(mu)
    q = 0.0
    for k in range(K):
        d = np.float64(x[m, k] - mc)
        q += d * d
    mean[m] = mu
    rstd[m] = 1.0 / math.sqrt(q / K + eps)
    mt = mean[m]
    rt = rstd[m]
    for k in range(K):
        v = (x[m, k] - mt) * rt
        if has_w:
            v = v * weight[k]
        if has_b:
            v = v + bias[k]
        out[m, k] = v


@variants(inputs="x weight bias")
def _ln_fwd(x, weight, bias, has_w, has_b, eps, out, mean, rstd):
    for m in prange(x.shape[0]):
        _ln_row_fwd(x, weight, bias, has_w, has_b, eps, out, mean, rstd, m)


def layer_norm_forward(x, weight, bias, eps, out, mean, rstd):
    """See the reference ``layer_norm_forward``."""
    _ln_fwd[x.size >= _PAR and x.shape[0] > 1 and threads() > 1](
        x, _vec(weight, x, 1), _vec(bias, x, 0), weight is not None, bias is not None, float(eps), out, mean, rstd
    )
    return out


@jit
def _ln_row_gi(g, x, weight, has_w, mean, rstd, gi, m):
    K = x.shape[1]
    mt = mean[m]
    rt = rstd[m]
    a = 0.0
    b = 0.0
    for k in range(K):
        gg = g[m, k] * weight[k] if has_w else g[m, k]
        xh = (x[m, k] - mt) * rt
        a += np.float64(gg)
        b += np.float64(gg * xh)
    at = x.dtype.type(a / K)
    bt = x.dtype.type(b / K)
    for k in range(K):
        gg = g[m, k] * weight[k] if has_w else g[m, k]
        xh = (x[m, k] - mt) * rt
        gi[m, k] = rt * (gg - at - xh * bt)


@variants(inputs="g x weight mean rstd")
def _ln_gi(g, x, weight, has_w, mean, rstd, gi):
    for m in prange(x.shape[0]):
        _ln_row_gi(g, x, weight, has_w, mean, rstd, gi, m)


@jit
def _ln_param_grads(g, x, mean, rstd, gw, gb, want_w, want_b):
    # column sums over rows, in float64 (one pass over the rows, the columns innermost)
    M, K = x.shape
    sw = np.zeros(K)
    sb = np.zeros(K)
    for m in range(M):
        mt = mean[m]
        rt = rstd[m]
        for k in range(K):
            gv = g[m, k]
            sb[k] += np.float64(gv)
            sw[k] += np.float64(gv * ((x[m, k] - mt) * rt))
    if want_w:
        for k in range(K):
            gw[k] = sw[k]
    if want_b:
        for k in range(K):
            gb[k] = sb[k]


def layer_norm_backward(grad_out, x, weight, mean, rstd, grad_input, grad_weight, grad_bias):
    """See the reference ``layer_norm_backward``."""
    if grad_weight is not None or grad_bias is not None:
        _ln_param_grads(
            grad_out,
            x,
            mean,
            rstd,
            _grad_vec(grad_weight, x),
            _grad_vec(grad_bias, x),
            grad_weight is not None,
            grad_bias is not None,
        )
    if grad_input is not None:
        _ln_gi[x.size >= _PAR and x.shape[0] > 1 and threads() > 1](
            grad_out, x, _vec(weight, x, 1), weight is not None, mean, rstd, grad_input
        )
    return grad_input, grad_weight, grad_bias
