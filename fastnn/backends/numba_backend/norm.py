"""Batch and layer normalisation for the Numba backend (the math: the reference's ``norm``).

The statistics as in the C library (``kernels/norm.h``): one pass of
shifted sums around the mean of a few leading values, a second pass around
the mean only for a group whose shift lay more than σ from it, the terms
summed in the data's dtype over short chunks and from there in float64. A
layer norm row is read twice (its sums, its output); in the backward pass
the affine gradients' column sums take the row again while it is in L1. A
batch norm with L > 1 takes a channel at a time: its runs are normalised
while they are still in cache. Batch norm splits the channels over threads,
layer norm the rows. ``None`` arguments (no affine parameters, no input
gradient) become flags here, in Python, so each kernel compiles once per
dtype.

Chunks are counted (``for k in range(nchunks): i0 = k * _CHUNK``), never
stepped over (``range(0, n, _CHUNK)``): LLVM vectorises a chunk's loop
inside the one, not the other (the sums of a 256 x 1024 float32 batch:
30 µs against 150 µs).
"""

import math

import numpy as np
from numba import prange

from ..._config import PARALLEL_MIN_ELEMENTS
from ..reference import norm as _spec
from ._jit import jit, threads, variants

__all__ = list(_spec.__all__)  # the reference's kernels, every one overridden here

_PAR = PARALLEL_MIN_ELEMENTS
#: a normalised value counts as this many values of an elementwise loop when the team is chosen (as in the C
#: library's drivers, kernels/_layers.pxi)
_WORK = 8
#: terms summed in the data's dtype before they go to float64 (fastmath may reorder them within a chunk)
_CHUNK = 64
#: rows whose column terms are summed in the data's dtype before they go to float64
_ROWS = 8
#: leading values whose mean is the shift
_PILOT = 8


def _vec(a, like, fill):
    """``a``, or a constant stand-in of ``like``'s dtype when the layer has no such parameter."""
    return a if a is not None else np.full(1, fill, like.dtype)


def _grad_vec(a, like):
    return a if a is not None else np.empty(1, like.dtype)


@jit
def _block(n, nblocks, blk):
    """Items [i0, i1) of block ``blk`` of ``nblocks`` (one per thread)."""
    per = (n + nblocks - 1) // nblocks
    return blk * per, min(n, blk * per + per)


@jit
def _sums(a, x, c, dot):
    """``(Σ a, Σ a·(x − c))`` with ``dot``, else ``(Σ(x − c), Σ(x − c)²)``, over 1-D ``x`` (and ``a``)."""
    n = x.shape[0]
    s1 = 0.0
    s2 = 0.0
    zero = x.dtype.type(0)
    for k in range((n + _CHUNK - 1) // _CHUNK):
        i0 = k * _CHUNK
        m = min(_CHUNK, n - i0)
        p1 = zero
        p2 = zero
        if dot:
            for i in range(m):
                u = a[i0 + i]
                p1 += u
                p2 += u * (x[i0 + i] - c)
        else:
            for i in range(m):
                d = x[i0 + i] - c
                p1 += d
                p2 += d * d
        s1 += np.float64(p1)
        s2 += np.float64(p2)
    return s1, s2


@jit
def _shifted(c, s1, s2, n):
    """``(μ, σ², far)`` from the shifted sums of n values; far: ``|μ − c| > σ``, one pass was not enough."""
    m1 = s1 / n
    v = s2 / n - m1 * m1
    return np.float64(c) + m1, max(v, 0.0), m1 * m1 > v


@jit
def _pilot(x):
    """The mean of the first few values of 1-D ``x``, in its dtype."""
    m = min(x.shape[0], _PILOT)
    s = 0.0
    for i in range(m):
        s += np.float64(x[i])
    return x.dtype.type(s / m)


@jit
def _row_stats(x):
    """``(μ, σ²)`` of 1-D ``x``."""
    c = _pilot(x)
    s1, s2 = _sums(x, x, c, False)
    mu, var, far = _shifted(c, s1, s2, x.shape[0])
    if far:
        c = x.dtype.type(mu)
        s1, s2 = _sums(x, x, c, False)
        mu, var, far = _shifted(c, s1, s2, x.shape[0])
    return mu, var


# ---------------------------------------------------------------- batch norm


@jit
def _channel_sums(a, x, c, dot, ch):
    """The two sums of :func:`_sums` over channel ``ch``'s N runs of L values."""
    t1 = 0.0
    t2 = 0.0
    for n in range(x.shape[0]):
        u1, u2 = _sums(a[n, ch], x[n, ch], c, dot)
        t1 += u1
        t2 += u2
    return t1, t2


@jit
def _bn_sums(a, x, c, dot, c0, c1, s1, s2):
    """L = 1, per channel of [c0, c1) (c indexed from 0): s1, s2 = the two sums of :func:`_sums` over the
    batch, the channels contiguous within a row and summed as columns (vectorised), a block of rows in
    the data's dtype."""
    N, C, L = x.shape
    nc = c1 - c0
    s1[:nc] = 0.0
    s2[:nc] = 0.0
    xf = x.reshape(N * C)
    af = a.reshape(N * C)
    p1 = np.empty(nc, x.dtype)
    p2 = np.empty(nc, x.dtype)
    for blk in range((N + _ROWS - 1) // _ROWS):
        r0 = blk * _ROWS
        p1[:] = 0
        p2[:] = 0
        for r in range(r0, min(N, r0 + _ROWS)):
            xr = xf[r * C + c0 : r * C + c1]
            ar = af[r * C + c0 : r * C + c1]
            for j in range(nc):
                d = xr[j] - c[j]
                u = ar[j] if dot else d
                p1[j] += u
                p2[j] += u * d
        for j in range(nc):
            s1[j] += np.float64(p1[j])
            s2[j] += np.float64(p2[j])


# The per-channel helpers take scalars: an array argument costs a call its reference counting, which
# over the 1024 channels of a BatchNorm1d made the forward 40 µs slower.


@jit
def _stats(x, sft, s1, s2, ch):
    """``(μ, σ²)`` of channel ch from shifted sums around sft (once more around the mean if it lay far)."""
    mu, v, far = _shifted(sft, s1, s2, x.shape[0] * x.shape[2])
    if far:
        c = x.dtype.type(mu)
        t1, t2 = _channel_sums(x, x, c, False, ch)
        mu, v, far = _shifted(c, t1, t2, x.shape[0] * x.shape[2])
    return mu, v


@jit
def _affine(w, b, eps, m, v):
    """The forward's ``y = x·s + t`` of a channel of γ w, β b, mean m and variance v: ``(s, t)`` in float64."""
    scale = 1.0 / math.sqrt(np.float64(v) + eps) * w
    return scale, b - np.float64(m) * scale


@jit
def _bn_channels_fwd(x, weight, bias, has_w, has_b, eps, batch_stats, mean, var, out, c0, c1):
    """L > 1: a channel at a time, its runs normalised while they are in cache."""
    N = x.shape[0]
    for ch in range(c0, c1):
        if batch_stats:
            sft = _pilot(x[0, ch])
            s1, s2 = _channel_sums(x, x, sft, False, ch)
            mean[ch], var[ch] = _stats(x, sft, s1, s2, ch)
        w = np.float64(weight[ch]) if has_w else 1.0
        b = np.float64(bias[ch]) if has_b else 0.0
        scale, shift = _affine(w, b, eps, mean[ch], var[ch])
        a, t = x.dtype.type(scale), x.dtype.type(shift)
        for n in range(N):
            xp, op = x[n, ch], out[n, ch]
            for i in range(xp.shape[0]):
                op[i] = xp[i] * a + t


@jit
def _bn_block_fwd(x, weight, bias, has_w, has_b, eps, batch_stats, mean, var, out, c0, c1):
    """L = 1: the channels are columns of the rows."""
    N, C, L = x.shape
    nc = c1 - c0
    if batch_stats:
        sft = np.empty(nc, x.dtype)
        for j in range(nc):
            sft[j] = _pilot(x[:, c0 + j, 0])
        s1 = np.empty(nc)
        s2 = np.empty(nc)
        _bn_sums(x, x, sft, False, c0, c1, s1, s2)
        M = N * L
        for j in range(nc):
            mu, v, far = _shifted(sft[j], s1[j], s2[j], M)
            if far:  # the shift lay far from this channel's mean: once more around the mean
                mu, v = _stats(x, sft[j], s1[j], s2[j], c0 + j)
            mean[c0 + j] = mu
            var[c0 + j] = v
    sc = np.empty(nc, x.dtype)
    sh = np.empty(nc, x.dtype)
    for j in range(nc):
        w = np.float64(weight[c0 + j]) if has_w else 1.0
        b = np.float64(bias[c0 + j]) if has_b else 0.0
        sc[j], sh[j] = _affine(w, b, eps, mean[c0 + j], var[c0 + j])
    xf, of = x.reshape(N * C), out.reshape(N * C)
    for n in range(N):
        xr, orow = xf[n * C + c0 : n * C + c1], of[n * C + c0 : n * C + c1]
        for j in range(nc):
            orow[j] = xr[j] * sc[j] + sh[j]


@variants(inputs="x weight bias")
def _bn_fwd(x, weight, bias, has_w, has_b, eps, batch_stats, mean, var, out, nblocks):
    for blk in prange(nblocks):
        c0, c1 = _block(x.shape[1], nblocks, blk)
        if c0 < c1 and x.shape[2] > 1:
            _bn_channels_fwd(x, weight, bias, has_w, has_b, eps, batch_stats, mean, var, out, c0, c1)
        elif c0 < c1:
            _bn_block_fwd(x, weight, bias, has_w, has_b, eps, batch_stats, mean, var, out, c0, c1)


def batch_norm_forward(x, weight, bias, eps, batch_stats, mean, var, out):
    """See the reference ``batch_norm_forward``."""
    par = x.size * _WORK >= _PAR and x.shape[1] > 1 and threads() > 1
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
def _grad_consts(w, v, eps, batch_stats, sg, sgx, M):
    """A channel's dγ (from Σ g·(x − μ) = sgx; dβ = Σ g = sg) and the ``(k, a, t)`` of
    dL/dx = g·k − ((x − μ)·a + t), in float64, for γ w and variance v."""
    r = 1.0 / math.sqrt(np.float64(v) + eps)
    sx = sgx * r
    kd = r * w
    return sx, kd, (kd * r * sx / M if batch_stats else 0.0), (kd * sg / M if batch_stats else 0.0)


@jit
def _bn_channels_bwd(g, x, weight, has_w, mean, var, eps, batch_stats, gi, has_gi, gw, gb, c0, c1):
    """L > 1: a channel at a time, as the forward."""
    N, C, L = x.shape
    for ch in range(c0, c1):
        sg, sgx = _channel_sums(g, x, mean[ch], True, ch)
        w = np.float64(weight[ch]) if has_w else 1.0
        gw[ch], kd, ad, td = _grad_consts(w, var[ch], eps, batch_stats, sg, sgx, N * L)
        gb[ch] = sg
        if not has_gi:
            continue
        mu, kt, a, b = mean[ch], x.dtype.type(kd), x.dtype.type(ad), x.dtype.type(td)
        for n in range(N):
            gp, xp, gip = g[n, ch], x[n, ch], gi[n, ch]
            if batch_stats:
                for i in range(L):
                    gip[i] = gp[i] * kt - ((xp[i] - mu) * a + b)
            else:
                for i in range(L):
                    gip[i] = gp[i] * kt


@jit
def _bn_block_bwd(g, x, weight, has_w, mean, var, eps, batch_stats, gi, has_gi, gw, gb, c0, c1):
    """L = 1: the channels are columns of the rows."""
    N, C, L = x.shape
    nc = c1 - c0
    M = N * L
    sum_g = np.empty(nc)
    sum_gx = np.empty(nc)
    _bn_sums(g, x, mean[c0:c1], True, c0, c1, sum_g, sum_gx)
    k = np.empty(nc, x.dtype)
    ka = np.empty(nc, x.dtype)
    kb = np.empty(nc, x.dtype)
    for j in range(nc):
        w = np.float64(weight[c0 + j]) if has_w else 1.0
        gw[c0 + j], k[j], ka[j], kb[j] = _grad_consts(w, var[c0 + j], eps, batch_stats, sum_g[j], sum_gx[j], M)
        gb[c0 + j] = sum_g[j]
    if not has_gi:
        return
    means = mean[c0:c1]
    gf, xf, gif = g.reshape(N * C), x.reshape(N * C), gi.reshape(N * C)
    for n in range(N):
        o0, o1 = n * C + c0, n * C + c1
        gr, xr, gir = gf[o0:o1], xf[o0:o1], gif[o0:o1]
        if batch_stats:
            for j in range(nc):
                gir[j] = gr[j] * k[j] - ((xr[j] - means[j]) * ka[j] + kb[j])
        else:
            for j in range(nc):
                gir[j] = gr[j] * k[j]


@variants(inputs="g x weight mean var")
def _bn_bwd(g, x, weight, has_w, mean, var, eps, batch_stats, gi, has_gi, gw, gb, nblocks):
    for blk in prange(nblocks):
        c0, c1 = _block(x.shape[1], nblocks, blk)
        if c0 < c1 and x.shape[2] > 1:
            _bn_channels_bwd(g, x, weight, has_w, mean, var, eps, batch_stats, gi, has_gi, gw, gb, c0, c1)
        elif c0 < c1:
            _bn_block_bwd(g, x, weight, has_w, mean, var, eps, batch_stats, gi, has_gi, gw, gb, c0, c1)


def batch_norm_backward(grad_out, x, weight, mean, var, eps, batch_stats, grad_input, grad_weight, grad_bias):
    """See the reference ``batch_norm_backward``."""
    C = x.shape[1]
    # the channel sums are needed for dL/dx anyway: scratch arrays where the caller wants no γ/β gradient
    gw = grad_weight if grad_weight is not None else np.empty(C, x.dtype)
    gb = grad_bias if grad_bias is not None else np.empty(C, x.dtype)
    gi = grad_input if grad_input is not None else np.empty((1, C, 1), x.dtype)
    par = x.size * _WORK >= _PAR and C > 1 and threads() > 1
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


@variants(inputs="x weight bias")
def _ln_fwd(x, weight, bias, has_w, has_b, eps, out, mean, rstd, nblocks):
    M, K = x.shape
    for blk in prange(nblocks):
        m0, m1 = _block(M, nblocks, blk)
        for m in range(m0, m1):
            xr, yr = x[m], out[m]
            mu, v = _row_stats(xr)
            mean[m] = mu
            rstd[m] = 1.0 / math.sqrt(v + eps)
            mt, rt = mean[m], rstd[m]
            if has_w and has_b:
                for k in range(K):
                    yr[k] = (xr[k] - mt) * rt * weight[k] + bias[k]
            elif has_w:
                for k in range(K):
                    yr[k] = (xr[k] - mt) * rt * weight[k]
            elif has_b:
                for k in range(K):
                    yr[k] = (xr[k] - mt) * rt + bias[k]
            else:
                for k in range(K):
                    yr[k] = (xr[k] - mt) * rt


def layer_norm_forward(x, weight, bias, eps, out, mean, rstd):
    """See the reference ``layer_norm_forward``."""
    par = x.size * _WORK >= _PAR and x.shape[0] > 1 and threads() > 1
    _ln_fwd[par](
        x,
        _vec(weight, x, 1),
        _vec(bias, x, 0),
        weight is not None,
        bias is not None,
        float(eps),
        out,
        mean,
        rstd,
        threads() if par else 1,
    )
    return out


@jit
def _ln_rows_bwd(g, x, weight, has_w, mean, rstd, gi, has_gi, cols, sw, sb, m0, m1):
    """Rows [m0, m1): dL/dx (has_gi) and, with cols, Σ g·x̂ and Σ g per column added into sw, sb."""
    K = x.shape[1]
    pw = np.empty(K, x.dtype)
    pb = np.empty(K, x.dtype)
    for blk in range((m1 - m0 + _ROWS - 1) // _ROWS):
        r0 = m0 + blk * _ROWS
        pw[:] = 0
        pb[:] = 0
        for m in range(r0, min(m1, r0 + _ROWS)):
            gr, xr = g[m], x[m]
            mt, rt = mean[m], rstd[m]
            if has_gi:
                a = 0.0
                b = 0.0
                for kc in range((K + _CHUNK - 1) // _CHUNK):
                    k0 = kc * _CHUNK
                    n = min(_CHUNK, K - k0)
                    pa = x.dtype.type(0)
                    pc = x.dtype.type(0)
                    if has_w:
                        for k in range(n):
                            gg = gr[k0 + k] * weight[k0 + k]
                            pa += gg
                            pc += gg * ((xr[k0 + k] - mt) * rt)
                    else:
                        for k in range(n):
                            pa += gr[k0 + k]
                            pc += gr[k0 + k] * ((xr[k0 + k] - mt) * rt)
                    a += np.float64(pa)
                    b += np.float64(pc)
                at = x.dtype.type(a / K)
                bt = x.dtype.type(b / K)
                gir = gi[m]
                if has_w:
                    for k in range(K):
                        gir[k] = rt * (gr[k] * weight[k] - at - ((xr[k] - mt) * rt) * bt)
                else:
                    for k in range(K):
                        gir[k] = rt * (gr[k] - at - ((xr[k] - mt) * rt) * bt)
            if cols:  # the row is in L1 now: a loop of its own vectorises where a fused one did not
                for k in range(K):
                    pw[k] += gr[k] * ((xr[k] - mt) * rt)
                    pb[k] += gr[k]
        if cols:
            for k in range(K):
                sw[k] += np.float64(pw[k])
                sb[k] += np.float64(pb[k])


# ordered_sums covers this body only: the row sums are in _ln_rows_bwd, a @jit helper compiled once with
# reassociation and called by both twins (its compiled code still sums in vector lanes; inlining it so that
# the flag reached them ran 2.9x slower). Added after dL/dx differed in the last bit between 1 and 2 threads
# in one fresh process of three (float64, AVX-512); while fastmath allowed reciprocals ("arcp"), a process
# that compiled a kernel could round otherwise than one that loaded it from the cache (docs/performance.md,
# "A numba plan's short last batch"), which may be what that was.
@variants(inputs="g x weight mean rstd", exact=False, ordered_sums=True)
def _ln_bwd(g, x, weight, has_w, mean, rstd, gi, has_gi, cols, sums, nblocks):
    for blk in prange(nblocks):
        m0, m1 = _block(x.shape[0], nblocks, blk)
        if m0 < m1:
            _ln_rows_bwd(g, x, weight, has_w, mean, rstd, gi, has_gi, cols, sums[blk, 0], sums[blk, 1], m0, m1)


@jit
def _ln_param_grads(sums, gw, gb, want_w, want_b):
    """The blocks' column sums added in block order, then written in the data's dtype."""
    K = sums.shape[2]
    for blk in range(1, sums.shape[0]):
        for k in range(K):
            sums[0, 0, k] += sums[blk, 0, k]
            sums[0, 1, k] += sums[blk, 1, k]
    if want_w:
        for k in range(K):
            gw[k] = sums[0, 0, k]
    if want_b:
        for k in range(K):
            gb[k] = sums[0, 1, k]


def layer_norm_backward(grad_out, x, weight, mean, rstd, grad_input, grad_weight, grad_bias):
    """See the reference ``layer_norm_backward``."""
    M, K = x.shape
    par = x.size * _WORK >= _PAR and M > 1 and threads() > 1
    nblocks = threads() if par else 1
    cols = grad_weight is not None or grad_bias is not None
    sums = np.zeros((nblocks, 2, K) if cols else (nblocks, 2, 1))
    _ln_bwd[par](
        grad_out,
        x,
        _vec(weight, x, 1),
        weight is not None,
        mean,
        rstd,
        grad_input if grad_input is not None else np.empty((1, K), x.dtype),
        grad_input is not None,
        cols,
        sums,
        nblocks,
    )
    if cols:
        _ln_param_grads(
            sums, _grad_vec(grad_weight, x), _grad_vec(grad_bias, x), grad_weight is not None, grad_bias is not None
        )
    return grad_input, grad_weight, grad_bias
