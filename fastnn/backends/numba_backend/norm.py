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
from ..reference import norm as _spec
from ._jit import jit, threads, variants

__all__ = list(_spec.__all__)  # the reference's kernels, every one overridden here

_PAR = PARALLEL_MIN_ELEMENTS


def _vec(a, like, fill):
    """``a``, or a constant stand-in of ``like``'s dtype when the layer has no such parameter."""
    return a if a is not None else np.full(1, fill, like.dtype)


def _grad_vec(a, like):
    return a if a is not None else np.empty(1, like.dtype)


# ---------------------------------------------------------------- batch norm


# Channels are taken in blocks, one per thread, and every pass walks x in
# memory order over the block: for L = 1 (BatchNorm1d on (N, C)) a channel's
# values are C apart, and a pass per channel loaded a cache line per value
# (7 ms for a (256, 1024) float32 batch, against 0.3 ms in memory order).


@jit
def _block(C, nblocks, blk):
    """Channels [c0, c1) of block ``blk`` of ``nblocks`` (one per thread)."""
    per = (C + nblocks - 1) // nblocks
    return blk * per, min(C, blk * per + per)


@jit
def _row(a, n, c0, c1):
    """Channels c0..c1 of row n of an (N, C, 1) array: a contiguous view indexed from 0 (it vectorises)."""
    C = a.shape[1]
    return a.reshape(a.size)[n * C + c0 : n * C + c1]


@jit
def _bn_block_fwd(x, weight, bias, has_w, has_b, eps, batch_stats, mean, var, out, c0, c1):
    N, _, L = x.shape
    nc = c1 - c0
    M = N * L
    if batch_stats:
        acc = np.zeros(nc)
        if L == 1:  # the channels innermost: independent sums, vectorised
            for n in range(N):
                xr = _row(x, n, c0, c1)
                for c in range(nc):
                    acc[c] += np.float64(xr[c])
        else:
            for n in range(N):
                for c in range(nc):
                    s = 0.0
                    for i in range(L):
                        s += np.float64(x[n, c0 + c, i])
                    acc[c] += s
        for c in range(nc):
            mean[c0 + c] = acc[c] / M  # the reference centres in the data's dtype
            acc[c] = 0.0
        if L == 1:
            means = mean[c0:c1]
            for n in range(N):
                xr = _row(x, n, c0, c1)
                for c in range(nc):
                    d = np.float64(xr[c] - means[c])
                    acc[c] += d * d
        else:
            for n in range(N):
                for c in range(nc):
                    mc = mean[c0 + c]
                    q = 0.0
                    for i in range(L):
                        d = np.float64(x[n, c0 + c, i] - mc)
                        q += d * d
                    acc[c] += q
        for c in range(nc):
            var[c0 + c] = acc[c] / M
    sc = np.empty(nc, x.dtype)
    sh = np.empty(nc, x.dtype)
    for c in range(nc):
        scale = 1.0 / math.sqrt(np.float64(var[c0 + c]) + eps)
        if has_w:
            scale *= np.float64(weight[c0 + c])
        shift = -np.float64(mean[c0 + c]) * scale
        if has_b:
            shift += np.float64(bias[c0 + c])
        sc[c] = scale
        sh[c] = shift
    if L == 1:
        for n in range(N):
            xr, orow = _row(x, n, c0, c1), _row(out, n, c0, c1)
            for c in range(nc):
                orow[c] = xr[c] * sc[c] + sh[c]
        return
    for n in range(N):
        for c in range(nc):
            a, b = sc[c], sh[c]
            for i in range(L):
                out[n, c0 + c, i] = x[n, c0 + c, i] * a + b


@variants(inputs="x weight bias")
def _bn_fwd(x, weight, bias, has_w, has_b, eps, batch_stats, mean, var, out, nblocks):
    for blk in prange(nblocks):
        c0, c1 = _block(x.shape[1], nblocks, blk)
        if c0 < c1:
            _bn_block_fwd(x, weight, bias, has_w, has_b, eps, batch_stats, mean, var, out, c0, c1)


def batch_norm_forward(x, weight, bias, eps, batch_stats, mean, var, out):
    """See the reference ``batch_norm_forward``."""
    par = x.size >= _PAR and x.shape[1] > 1 and threads() > 1
    _bn_fwd[par](
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
        threads() if par else 1,
    )
    return out


@jit
def _bn_block_bwd(g, x, weight, has_w, mean, var, eps, batch_stats, gi, has_gi, gw, gb, c0, c1):
    N, _, L = x.shape
    nc = c1 - c0
    M = N * L
    sum_g = np.zeros(nc)
    sum_gx = np.zeros(nc)
    if L == 1:
        means = mean[c0:c1]
        for n in range(N):
            gr, xr = _row(g, n, c0, c1), _row(x, n, c0, c1)
            for c in range(nc):
                gv = np.float64(gr[c])
                sum_g[c] += gv
                sum_gx[c] += gv * np.float64(xr[c] - means[c])
    else:
        for n in range(N):
            for c in range(nc):
                mu = mean[c0 + c]
                a = 0.0
                b = 0.0
                for i in range(L):
                    gv = np.float64(g[n, c0 + c, i])
                    a += gv
                    b += gv * np.float64(x[n, c0 + c, i] - mu)
                sum_g[c] += a
                sum_gx[c] += b
    k = np.empty(nc, x.dtype)
    ka = np.empty(nc, x.dtype)
    kb = np.empty(nc, x.dtype)
    for c in range(nc):
        r = 1.0 / math.sqrt(np.float64(var[c0 + c]) + eps)
        sum_gx[c] *= r
        gb[c0 + c] = sum_g[c]
        gw[c0 + c] = sum_gx[c]
        kd = r * (np.float64(weight[c0 + c]) if has_w else 1.0)
        k[c] = kd
        ka[c] = kd * r * sum_gx[c] / M if batch_stats else 0.0
        kb[c] = kd * sum_g[c] / M if batch_stats else 0.0
    if not has_gi:
        return
    if L == 1 and batch_stats:
        means = mean[c0:c1]
        for n in range(N):
            gr, xr, gir = _row(g, n, c0, c1), _row(x, n, c0, c1), _row(gi, n, c0, c1)
            for c in range(nc):
                gir[c] = gr[c] * k[c] - ((xr[c] - means[c]) * ka[c] + kb[c])
        return
    for n in range(N):
        for c in range(nc):
            mu, kt, a, b = mean[c0 + c], k[c], ka[c], kb[c]
            if batch_stats:
                for i in range(L):
                    gi[n, c0 + c, i] = g[n, c0 + c, i] * kt - ((x[n, c0 + c, i] - mu) * a + b)
            else:
                for i in range(L):
                    gi[n, c0 + c, i] = g[n, c0 + c, i] * kt


@variants(inputs="g x weight mean var")
def _bn_bwd(g, x, weight, has_w, mean, var, eps, batch_stats, gi, has_gi, gw, gb, nblocks):
    for blk in prange(nblocks):
        c0, c1 = _block(x.shape[1], nblocks, blk)
        if c0 < c1:
            _bn_block_bwd(g, x, weight, has_w, mean, var, eps, batch_stats, gi, has_gi, gw, gb, c0, c1)


def batch_norm_backward(grad_out, x, weight, mean, var, eps, batch_stats, grad_input, grad_weight, grad_bias):
    """See the reference ``batch_norm_backward``."""
    C = x.shape[1]
    # the channel sums are needed for dL/dx anyway: scratch arrays where the caller wants no γ/β gradient
    gw = grad_weight if grad_weight is not None else np.empty(C, x.dtype)
    gb = grad_bias if grad_bias is not None else np.empty(C, x.dtype)
    gi = grad_input if grad_input is not None else np.empty((1, C, 1), x.dtype)
    par = x.size >= _PAR and C > 1 and threads() > 1
    _bn_bwd[par](
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
        threads() if par else 1,
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
