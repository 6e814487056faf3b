"""Recurrent kernels of the Numba backend: RNN, LSTM and GRU forward and BPTT.

Same names and parameters as :mod:`fastnn.backends.reference.rnn`. The whole
time loop runs in one compiled function per kernel. The input projection, the
weight gradients and dL/dx are one product each over all time steps; the
per-step product with W_hh is small. All run on the register tiles of the
own GEMM's small-product kernel (``_small_gemm``): for these sizes a BLAS call
costs more in set-up and thread wake-ups than the arithmetic. BLAS
(``np.dot``) takes over for the all-steps products when they are large. The gate
nonlinearities use the backend's branch-free exp/tanh/sigmoid (``_math``), which
LLVM vectorises (Numba's ``np.tanh``/``np.exp`` are scalar libm calls).
"""

import numpy as np
from numba import njit

from ..._config import NUMBA_JIT_OPTIONS
from . import _small_gemm as _small
from ._math import fsigmoid, ftanh

__all__ = [
    "rnn_forward", "rnn_backward",
    "lstm_forward", "lstm_backward",
    "gru_forward", "gru_backward",
]

@njit(**NUMBA_JIT_OPTIONS)
def _act_rows(a, lo, hi, kind):
    """In place on a[:, lo:hi]: kind 0 sigmoid, 1 tanh, 2 relu (the backend's vectorisable math)."""
    for r in range(a.shape[0]):
        for j in range(lo, hi):
            v = a[r, j]
            if kind == 0:
                a[r, j] = fsigmoid(v)
            elif kind == 1:
                a[r, j] = ftanh(v)
            else:
                a[r, j] = v if not (v <= 0) else 0


@njit(**NUMBA_JIT_OPTIONS)
def _acc(A, Bt, C):
    """C (M,N) += A (M,K)·Bt (K,N): the per-step product, on the own GEMM's register tiles."""
    _small.acc_nn(A, Bt, C)


#: Operands (elements) above which the all-steps products go to BLAS.
_BLAS_MIN = 1 << 18


@njit(**NUMBA_JIT_OPTIONS)
def _acc_tn(A, Bm, C):
    """C (M,N) += Aᵀ·Bm with A (K,M), Bm (K,N) (the weight gradients, K = T·B rows)."""
    _small.acc_tn(A, Bm, C)


@njit(**NUMBA_JIT_OPTIONS)
def _dot_nt(A, Bn, C):
    """C (M,N) = A (M,K)·Bn (N,K)ᵀ (dL/dx, a narrow C: N = input size)."""
    _small.mul_nt(A, Bn, C)


@njit(**NUMBA_JIT_OPTIONS)
def _project(x2, w_ih, out2):
    """out2 (T·B, G·H) += x2·W_ihᵀ."""
    if x2.shape[0] * (x2.shape[1] + w_ih.shape[0]) > _BLAS_MIN:
        out2 += np.dot(x2, w_ih.T)
    else:
        _acc(x2, np.ascontiguousarray(w_ih.T), out2)


@njit(**NUMBA_JIT_OPTIONS)
def _input_grad(d2, w_ih, gx2):
    """gx2 (T·B, I) = δ·W_ih."""
    if d2.shape[0] * (d2.shape[1] + gx2.shape[1]) > _BLAS_MIN:
        np.dot(d2, w_ih, gx2)
    else:
        _dot_nt(d2, np.ascontiguousarray(w_ih.T), gx2)


@njit(**NUMBA_JIT_OPTIONS)
def _weight_grads(dx, dh, x2, h0, out2, gw_ih, gw_hh, gb_ih, gb_hh):
    """dW_ih = δxᵀx, dW_hh = δhᵀ[h0; out[:-1]], db = column sums; δ as (T·B, G·H) contiguous."""
    B = h0.shape[0]
    TB = dx.shape[0]
    if TB * (dx.shape[1] + x2.shape[1] + out2.shape[1]) > _BLAS_MIN:
        np.dot(dx.T, x2, gw_ih)
        np.dot(dh[:B].T, h0, gw_hh)
        if TB > B:
            gw_hh += np.dot(dh[B:].T, out2[:TB - B])
    else:
        # dW_ih built transposed (I, G·H) so that the inner loop runs along the wide axis
        wt = np.zeros((x2.shape[1], dx.shape[1]), dx.dtype)
        _acc_tn(x2, dx, wt)
        gw_ih[:] = wt.T
        gw_hh[:] = 0
        _acc_tn(dh[:B], h0, gw_hh)
        if TB > B:
            _acc_tn(dh[B:], out2[:TB - B], gw_hh)
    if gb_ih is not None:
        gb_ih[:] = 0
        for r in range(TB):
            gb_ih += dx[r]
    if gb_hh is not None:
        gb_hh[:] = 0
        for r in range(TB):
            gb_hh += dh[r]


# ---------------------------------------------------------------------------
# Elman RNN
# ---------------------------------------------------------------------------

@njit(**NUMBA_JIT_OPTIONS)
def _rnn_fwd(x, h0, w_ih, w_hh, b_ih, b_hh, relu, out):
    """h_t = f(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh)."""
    T, B, I = x.shape
    H = h0.shape[1]
    out2 = out.reshape(T * B, H)
    out2[:] = 0
    if b_ih is not None:
        out2 += b_ih
    if b_hh is not None:
        out2 += b_hh
    _project(x.reshape(T * B, I), w_ih, out2)
    wt = np.ascontiguousarray(w_hh.T)
    kind = 2 if relu else 1
    for t in range(T):
        hp = h0 if t == 0 else out[t - 1]
        _acc(hp, wt, out[t])
        _act_rows(out[t], 0, H, kind)
    return out


@njit(**NUMBA_JIT_OPTIONS)
def _rnn_bwd(go, ghn, x, h0, w_ih, w_hh, out, relu, work, gx, gh0, gw_ih, gw_hh, gb_ih, gb_hh):
    """δ_t = (dL/dh_t)·f'(a_t), g_{t-1} = δ_t W_hh; weight grads one product each."""
    T, B, I = x.shape
    H = h0.shape[1]
    one = np.ones(1, x.dtype)[0]   # keeps float32 math in float32
    if ghn is not None:
        gh0[:] = ghn
    else:
        gh0[:] = 0
    for t in range(T - 1, -1, -1):
        d = work[t]
        g = go[t]
        h = out[t]
        for b in range(B):
            for j in range(H):
                v = g[b, j] + gh0[b, j]
                if relu:
                    d[b, j] = v if h[b, j] > 0 else v * 0
                else:
                    d[b, j] = v * (one - h[b, j] * h[b, j])
        gh0[:] = 0
        _acc(d, w_hh, gh0)
    w2 = work.reshape(T * B, H)
    _weight_grads(w2, w2, x.reshape(T * B, I), h0, out.reshape(T * B, H), gw_ih, gw_hh, gb_ih, gb_hh)
    if gx is not None:
        _input_grad(w2, w_ih, gx.reshape(T * B, I))


def rnn_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, nonlinearity, out):
    """h_t = f(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh) for all t."""
    return _rnn_fwd(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, nonlinearity == "relu", out)


def rnn_backward(grad_out, grad_hn, x, h0, weight_ih, weight_hh, out, nonlinearity, work,
                 grad_x, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh):
    """BPTT of :func:`rnn_forward`."""
    _rnn_bwd(grad_out, grad_hn, x, h0, weight_ih, weight_hh, out, nonlinearity == "relu", work,
             grad_x, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh)
    return grad_x, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh


# ---------------------------------------------------------------------------
# LSTM
# ---------------------------------------------------------------------------

@njit(**NUMBA_JIT_OPTIONS)
def _lstm_fwd(x, h0, c0, w_ih, w_hh, b_ih, b_hh, out, cell, gates):
    """Gates i, f, g, o; c_t = f c_{t-1} + i g; h_t = o tanh(c_t)."""
    T, B, I = x.shape
    H = h0.shape[1]
    one = np.ones(1, x.dtype)[0]   # keeps float32 math in float32
    g2 = gates.reshape(T * B, 4 * H)
    g2[:] = 0
    if b_ih is not None:
        g2 += b_ih
    if b_hh is not None:
        g2 += b_hh
    _project(x.reshape(T * B, I), w_ih, g2)
    wt = np.ascontiguousarray(w_hh.T)
    for t in range(T):
        hp = h0 if t == 0 else out[t - 1]
        cp = c0 if t == 0 else cell[t - 1]
        z = gates[t]
        _acc(hp, wt, z)
        _act_rows(z, 0, 2 * H, 0)
        _act_rows(z, 2 * H, 3 * H, 1)
        _act_rows(z, 3 * H, 4 * H, 0)
        c = cell[t]
        h = out[t]
        for b in range(B):
            for j in range(H):
                c[b, j] = z[b, H + j] * cp[b, j] + z[b, j] * z[b, 2 * H + j]
        h[:] = c
        _act_rows(h, 0, H, 1)
        for b in range(B):
            for j in range(H):
                h[b, j] *= z[b, 3 * H + j]
    return out, cell, gates


@njit(**NUMBA_JIT_OPTIONS)
def _lstm_bwd(go, ghn, gcn, x, h0, c0, w_ih, w_hh, out, cell, gates, work,
              gx, gh0, gc0, gw_ih, gw_hh, gb_ih, gb_hh):
    """δ = [δi, δf, δg, δo] per step; g_{t-1} = δ W_hh; γ_{t-1} = γ f."""
    T, B, I = x.shape
    H = h0.shape[1]
    one = np.ones(1, x.dtype)[0]   # keeps float32 math in float32
    if ghn is not None:
        gh0[:] = ghn
    else:
        gh0[:] = 0
    if gcn is not None:
        gc0[:] = gcn
    else:
        gc0[:] = 0
    tc = np.empty((B, H), x.dtype)
    for t in range(T - 1, -1, -1):
        z = gates[t]
        cp = c0 if t == 0 else cell[t - 1]
        tc[:] = cell[t]
        _act_rows(tc, 0, H, 1)
        d = work[t]
        g_out = go[t]
        for b in range(B):
            for j in range(H):
                i = z[b, j]
                f = z[b, H + j]
                g = z[b, 2 * H + j]
                o = z[b, 3 * H + j]
                tcv = tc[b, j]
                dh = g_out[b, j] + gh0[b, j]
                gam = gc0[b, j] + dh * o * (one - tcv * tcv)
                d[b, j] = gam * g * i * (one - i)
                d[b, H + j] = gam * cp[b, j] * f * (one - f)
                d[b, 2 * H + j] = gam * i * (one - g * g)
                d[b, 3 * H + j] = dh * tcv * o * (one - o)
                gc0[b, j] = gam * f
        gh0[:] = 0
        _acc(d, w_hh, gh0)
    w2 = work.reshape(T * B, 4 * H)
    _weight_grads(w2, w2, x.reshape(T * B, I), h0, out.reshape(T * B, H), gw_ih, gw_hh, gb_ih, gb_hh)
    if gx is not None:
        _input_grad(w2, w_ih, gx.reshape(T * B, I))


def lstm_forward(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, out, cell, gates):
    """LSTM (gates i, f, g, o) over the sequence."""
    return _lstm_fwd(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, out, cell, gates)


def lstm_backward(grad_out, grad_hn, grad_cn, x, h0, c0, weight_ih, weight_hh, out, cell, gates, work,
                  grad_x, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh):
    """BPTT of :func:`lstm_forward`."""
    _lstm_bwd(grad_out, grad_hn, grad_cn, x, h0, c0, weight_ih, weight_hh, out, cell, gates,
              work, grad_x, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh)
    return grad_x, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh


# ---------------------------------------------------------------------------
# GRU
# ---------------------------------------------------------------------------

@njit(**NUMBA_JIT_OPTIONS)
def _gru_fwd(x, h0, w_ih, w_hh, b_ih, b_hh, out, gates, hidden_n):
    """r, z = σ(...), n = tanh(x W_inᵀ + b_in + r (h W_hnᵀ + b_hn)), h_t = (1-z) n + z h_{t-1}."""
    T, B, I = x.shape
    H = h0.shape[1]
    one = np.ones(1, x.dtype)[0]   # keeps float32 math in float32
    g2 = gates.reshape(T * B, 3 * H)
    g2[:] = 0
    if b_ih is not None:
        g2 += b_ih
    _project(x.reshape(T * B, I), w_ih, g2)
    wt = np.ascontiguousarray(w_hh.T)
    gh = np.empty((B, 3 * H), x.dtype)
    for t in range(T):
        hp = h0 if t == 0 else out[t - 1]
        if b_hh is not None:
            for b in range(B):
                gh[b] = b_hh
        else:
            gh[:] = 0
        _acc(hp, wt, gh)
        z = gates[t]
        m = hidden_n[t]
        for b in range(B):
            for j in range(2 * H):
                z[b, j] += gh[b, j]
            for j in range(H):
                m[b, j] = gh[b, 2 * H + j]
        _act_rows(z, 0, 2 * H, 0)
        for b in range(B):
            for j in range(H):
                z[b, 2 * H + j] += z[b, j] * m[b, j]
        _act_rows(z, 2 * H, 3 * H, 1)
        h = out[t]
        for b in range(B):
            for j in range(H):
                zz = z[b, H + j]
                h[b, j] = (one - zz) * z[b, 2 * H + j] + zz * hp[b, j]
    return out, gates, hidden_n


@njit(**NUMBA_JIT_OPTIONS)
def _gru_bwd(go, ghn, x, h0, w_ih, w_hh, out, gates, hidden_n, work, gx, gh0, gw_ih, gw_hh, gb_ih, gb_hh):
    """δ^x = [δr, δz, δn], δ^h = [δr, δz, δn r]; g_{t-1} = g z + δ^h W_hh."""
    T, B, I = x.shape
    H = h0.shape[1]
    one = np.ones(1, x.dtype)[0]   # keeps float32 math in float32
    if ghn is not None:
        gh0[:] = ghn
    else:
        gh0[:] = 0
    # δ^x and δ^h kept apart (contiguous) for the products; ``work`` holds them side by side after.
    dxs = np.empty((T, B, 3 * H), x.dtype)
    dhs = np.empty((T, B, 3 * H), x.dtype)
    for t in range(T - 1, -1, -1):
        hp = h0 if t == 0 else out[t - 1]
        z_ = gates[t]
        m = hidden_n[t]
        g_out = go[t]
        dx = dxs[t]
        dh = dhs[t]
        for b in range(B):
            for j in range(H):
                r = z_[b, j]
                z = z_[b, H + j]
                n = z_[b, 2 * H + j]
                g = g_out[b, j] + gh0[b, j]
                dn = g * (one - z) * (one - n * n)
                dr = dn * m[b, j] * r * (one - r)
                dz = g * (hp[b, j] - n) * z * (one - z)
                dx[b, j] = dr
                dx[b, H + j] = dz
                dx[b, 2 * H + j] = dn
                dh[b, j] = dr
                dh[b, H + j] = dz
                dh[b, 2 * H + j] = dn * r
                gh0[b, j] = g * z
        _acc(dh, w_hh, gh0)
    work[:, :, :3 * H] = dxs
    work[:, :, 3 * H:] = dhs
    dx2 = dxs.reshape(T * B, 3 * H)
    _weight_grads(dx2, dhs.reshape(T * B, 3 * H), x.reshape(T * B, I), h0, out.reshape(T * B, H),
                  gw_ih, gw_hh, gb_ih, gb_hh)
    if gx is not None:
        _input_grad(dx2, w_ih, gx.reshape(T * B, I))


def gru_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, out, gates, hidden_n):
    """GRU (gates r, z, n) over the sequence."""
    return _gru_fwd(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, out, gates, hidden_n)


def gru_backward(grad_out, grad_hn, x, h0, weight_ih, weight_hh, out, gates, hidden_n, work,
                 grad_x, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh):
    """BPTT of :func:`gru_forward`."""
    _gru_bwd(grad_out, grad_hn, x, h0, weight_ih, weight_hh, out, gates, hidden_n, work,
             grad_x, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh)
    return grad_x, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh
