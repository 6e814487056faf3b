"""Recurrent kernels of the Numba backend: RNN, LSTM and GRU forward and BPTT.

Same names and parameters as :mod:`fastnn.backends.reference.rnn`; the
backward kernels are the reference's :class:`~fastnn.backends.reference.rnn.BPTT`
over this module's two stages (backward loop, all-steps products). The whole
time loop runs in one compiled function per kernel. The input projection, the
weight gradients and dL/dx are one product each over all time steps; the
per-step product with W_hh is small. All run on the register tiles of the
own GEMM's small-product kernel (``_small_gemm``): for these sizes a BLAS call
costs more in set-up and thread wake-ups than the arithmetic. When the
all-steps products are large (``_BLAS_MIN``) they go to BLAS instead, called
from Python (NumPy's ``np.dot`` with ``out=``) around the compiled time loop:
``np.dot`` inside compiled code cost several seconds of compilation (mostly
its shape-error messages) in every process with an empty cache, whether or
not a call was large. The gate nonlinearities use the backend's branch-free
exp/tanh/sigmoid (``_math``), which LLVM vectorises (Numba's
``np.tanh``/``np.exp`` are scalar libm calls).

Every kernel with products is compiled from one source twice
(:func:`_kernels`): on the register tiles, and on the plain loops of
``_small_gemm.simple_tiled`` (same bits, a fraction of the compilation),
which run while the tiled version compiles in the background on a fresh
install (``_jit.Deferred``).
"""

import numpy as np

from ..reference import rnn as _spec
from . import _small_gemm as _small
from ._jit import Deferred, jit, jit_inline, kernel, rebinder, renamed
from ._math import fsigmoid, ftanh

__all__ = list(_spec.__all__)  # the reference's kernels, every one overridden here

#: Operands (elements) above which the all-steps products go to BLAS.
_BLAS_MIN = 1 << 18


def _rows_kernel(kind):
    """In place on a[:, lo:hi]: sigmoid (0), tanh (1) or relu (2), one compiled loop per kind."""

    def _act_rows(a, lo, hi):
        for r in range(a.shape[0]):
            for j in range(lo, hi):
                v = a[r, j]
                # kind is a constant of this closure: only its branch is compiled
                if kind == 0:
                    a[r, j] = fsigmoid(v)
                elif kind == 1:
                    a[r, j] = ftanh(v)
                else:
                    a[r, j] = v if not (v <= 0) else 0

    fn = renamed(_act_rows, ("_sigmoid", "_tanh", "_relu")[kind])
    # relu is a few instructions: inlined, the Elman kernel (relu a run-time flag) compiles no second
    # row kernel for it; the sigmoid and tanh loops are compiled once and shared by every kernel
    return jit_inline(fn) if kind == 2 else jit(fn)


_sigmoid_rows, _tanh_rows, _relu_rows = (_rows_kernel(kind) for kind in range(3))


# The small helpers below are inlined: linked as compilations of their own, each cost its own
# compilation and was optimised again inside every kernel that calls it.


@jit_inline
def _copy(dst, src):
    """dst[:, :] = src[:, :] element by element.

    Array-to-array assignment (``dst[:] = src``) compiles Numba's shape-error
    message: seconds of compilation per process with an empty cache."""
    for r in range(dst.shape[0]):
        d = dst[r]
        s = src[r]
        for j in range(d.size):
            d[j] = s[j]


@jit_inline
def _start(out2, b_ih, b_hh, proj):
    """out2 = (0 + b_ih) + b_hh (+ proj, the input projection when BLAS made it), row by row."""
    zero = out2.dtype.type(0)
    for r in range(out2.shape[0]):
        row = out2[r]
        for j in range(row.size):
            v = zero
            if b_ih is not None:
                v += b_ih[j]
            if b_hh is not None:
                v += b_hh[j]
            row[j] = v
        if proj is not None:
            p = proj[r]
            for j in range(row.size):
                row[j] += p[j]


@jit_inline
def _start_grad(g, g_final):
    """g = g_final, a final state's gradient from elsewhere, or zeros without one."""
    if g_final is not None:
        _copy(g, g_final)
    else:
        g[:] = 0


@jit_inline
def _add_column_sums(total, d):
    """total += the column sums of d (B, W), row by row; nothing when total is None."""
    if total is not None:
        for r in range(d.shape[0]):
            row = d[r]
            for j in range(row.size):
                total[j] += row[j]


@jit_inline
def _zero(a):
    """a[:] = 0, nothing when a is None."""
    if a is not None:
        a[:] = 0


def _projection(x, w_ih):
    """x·W_ihᵀ as a (T·B, G·H) array through BLAS when the product is large, else None (done in the kernel)."""
    T, B, I = x.shape
    if T * B * (I + w_ih.shape[0]) > _BLAS_MIN:
        return np.dot(x.reshape(T * B, I), w_ih.T)
    return None


@kernel(inputs="dx dh")
def _bias_grads(dx, dh, gb_ih, gb_hh):
    """db = column sums of δ, row by row (either bias may be None)."""
    if gb_ih is not None:
        gb_ih[:] = 0
        for r in range(dx.shape[0]):
            row = dx[r]
            for j in range(row.size):
                gb_ih[j] += row[j]
    if gb_hh is not None:
        gb_hh[:] = 0
        for r in range(dh.shape[0]):
            row = dh[r]
            for j in range(row.size):
                gb_hh[j] += row[j]


def _kernels(acc, acc_tn, mul_nt, mul_nt_bias, suffix):
    """The kernels with products, taking them from ``acc`` (C += A·B), ``acc_tn`` (C += Aᵀ·B), ``mul_nt``
    (C = A·Bᵀ) and ``mul_nt_bias`` (C = A·Bᵀ + b)."""

    def project(x, w_ih, b_ih, b_hh, proj, dest):
        """dest[t] = x_t·W_ihᵀ + b_ih (+ b_hh) for every t; the product is ``proj`` where BLAS made it."""
        T, B, I = x.shape
        d2 = dest.reshape(T * B, dest.shape[2])
        if proj is None:
            # (0 + b_ih) + b_hh added to each tile as it leaves the registers: the bits of adding the
            # product to rows holding that sum, without writing and reading all of them once more
            bias = np.empty((1, d2.shape[1]), dest.dtype)
            _start(bias, b_ih, b_hh, None)
            mul_nt_bias(x.reshape(T * B, I), w_ih, d2, bias[0], True, False)
        else:
            _start(d2, b_ih, b_hh, proj)

    # inlined into the forward kernels: compiled on its own, project and the products under it were
    # optimised twice (in project, then again inside the kernel it is linked into)
    project = jit_inline(renamed(project, suffix))

    def _weight_grads_small(dx, dh, x2, h0, out2, gw_ih, gw_hh):
        """dW_ih = δxᵀx, dW_hh = δhᵀ[h0; out[:-1]] on small products; δ as (T·B, G·H) contiguous."""
        B = h0.shape[0]
        TB = dx.shape[0]
        # dW_ih built transposed (I, G·H) so that the inner loop runs along the wide axis
        wt = np.zeros((x2.shape[1], dx.shape[1]), dx.dtype)
        acc_tn(x2, dx, wt)
        _copy(gw_ih, wt.T)
        gw_hh[:] = 0
        acc_tn(dh[:B], h0, gw_hh)
        if TB > B:
            acc_tn(dh[B:], out2[: TB - B], gw_hh)

    def _input_grad_small(d2, w_ih, gx2):
        """gx2 (T·B, I) = δ·W_ih on small products."""
        mul_nt(d2, np.ascontiguousarray(w_ih.T), gx2)

    # -- Elman RNN

    def _rnn_fwd(x, h0, w_ih, w_hh, b_ih, b_hh, relu, proj, out):
        """h_t = f(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh)."""
        T = x.shape[0]
        H = h0.shape[1]
        project(x, w_ih, b_ih, b_hh, proj, out)
        wt = np.ascontiguousarray(w_hh.T)
        for t in range(T):
            hp = h0 if t == 0 else out[t - 1]
            acc(hp, wt, out[t])
            if relu:
                _relu_rows(out[t], 0, H)
            else:
                _tanh_rows(out[t], 0, H)
        return out

    def _rnn_bwd(go, ghn, h0, w_hh, out, relu, work, gh0, gb_ih, gb_hh):
        """δ_t = (dL/dh_t)·f'(a_t), g_{t-1} = δ_t W_hh (into work, and gh0 at the end).

        ``go`` None: dL/d(out) zero at every step, dL/dh_T in ``ghn`` alone
        (a plan's last hidden state). ``gb_ih``, ``gb_hh`` (None in the
        layer, whose bias gradients come after, ``_all_steps_grads``): the
        biases' gradients Σ δ, summed step by step while δ_t is in cache."""
        T, B, H = out.shape
        one = out.dtype.type(1)  # keeps float32 math in float32 (np.ones would compile an allocation)
        _start_grad(gh0, ghn)
        _zero(gb_ih)
        _zero(gb_hh)
        for t in range(T - 1, -1, -1):
            d = work[t]
            h = out[t]
            for b in range(B):
                for j in range(H):
                    v = gh0[b, j]
                    if go is not None:
                        v += go[t, b, j]
                    if relu:
                        d[b, j] = v if h[b, j] > 0 else v * 0
                    else:
                        d[b, j] = v * (one - h[b, j] * h[b, j])
            _add_column_sums(gb_ih, d)
            _add_column_sums(gb_hh, d)
            gh0[:] = 0
            acc(d, w_hh, gh0)

    # -- LSTM

    def _lstm_fwd(x, h0, c0, w_ih, w_hh, b_ih, b_hh, proj, out, cell, gates):
        """Gates i, f, g, o; c_t = f c_{t-1} + i g; h_t = o tanh(c_t)."""
        T, B = x.shape[0], x.shape[1]
        H = h0.shape[1]
        project(x, w_ih, b_ih, b_hh, proj, gates)
        wt = np.ascontiguousarray(w_hh.T)
        for t in range(T):
            hp = h0 if t == 0 else out[t - 1]
            cp = c0 if t == 0 else cell[t - 1]
            z = gates[t]
            acc(hp, wt, z)
            _sigmoid_rows(z, 0, 2 * H)
            _tanh_rows(z, 2 * H, 3 * H)
            _sigmoid_rows(z, 3 * H, 4 * H)
            c = cell[t]
            h = out[t]
            for b in range(B):
                for j in range(H):
                    c[b, j] = z[b, H + j] * cp[b, j] + z[b, j] * z[b, 2 * H + j]
            _copy(h, c)
            _tanh_rows(h, 0, H)
            for b in range(B):
                for j in range(H):
                    h[b, j] *= z[b, 3 * H + j]
        return out, cell, gates

    def _lstm_bwd(go, ghn, gcn, c0, w_hh, cell, gates, work, gh0, gc0, gb_ih, gb_hh):
        """δ = [δi, δf, δg, δo] per step (into work); g_{t-1} = δ W_hh; γ_{t-1} = γ f (go, gb_*: as _rnn_bwd)."""
        T, B, H = cell.shape
        one = cell.dtype.type(1)  # keeps float32 math in float32 (np.ones would compile an allocation)
        _start_grad(gh0, ghn)
        _start_grad(gc0, gcn)
        _zero(gb_ih)
        _zero(gb_hh)
        tc = np.empty((B, H), cell.dtype)
        for t in range(T - 1, -1, -1):
            z = gates[t]
            cp = c0 if t == 0 else cell[t - 1]
            _copy(tc, cell[t])
            _tanh_rows(tc, 0, H)
            d = work[t]
            for b in range(B):
                for j in range(H):
                    i = z[b, j]
                    f = z[b, H + j]
                    g = z[b, 2 * H + j]
                    o = z[b, 3 * H + j]
                    tcv = tc[b, j]
                    dh = gh0[b, j]
                    if go is not None:
                        dh += go[t, b, j]
                    gam = gc0[b, j] + dh * o * (one - tcv * tcv)
                    d[b, j] = gam * g * i * (one - i)
                    d[b, H + j] = gam * cp[b, j] * f * (one - f)
                    d[b, 2 * H + j] = gam * i * (one - g * g)
                    d[b, 3 * H + j] = dh * tcv * o * (one - o)
                    gc0[b, j] = gam * f
            _add_column_sums(gb_ih, d)
            _add_column_sums(gb_hh, d)
            gh0[:] = 0
            acc(d, w_hh, gh0)

    # -- GRU

    def _gru_fwd(x, h0, w_ih, w_hh, b_ih, b_hh, proj, out, gates, hidden_n):
        """r, z = σ(...), n = tanh(x W_inᵀ + b_in + r (h W_hnᵀ + b_hn)), h_t = (1-z) n + z h_{t-1}."""
        T, B = x.shape[0], x.shape[1]
        H = h0.shape[1]
        one = x.dtype.type(1)  # keeps float32 math in float32 (np.ones would compile an allocation)
        # only b_ih joins the projection: b_hn sits inside r ⊙ (...)
        project(x, w_ih, b_ih, None, proj, gates)
        wt = np.ascontiguousarray(w_hh.T)
        gh = np.empty((B, 3 * H), x.dtype)
        for t in range(T):
            hp = h0 if t == 0 else out[t - 1]
            if b_hh is not None:
                for b in range(B):
                    for j in range(3 * H):
                        gh[b, j] = b_hh[j]
            else:
                gh[:] = 0
            acc(hp, wt, gh)
            z = gates[t]
            m = hidden_n[t]
            for b in range(B):
                for j in range(2 * H):
                    z[b, j] += gh[b, j]
                for j in range(H):
                    m[b, j] = gh[b, 2 * H + j]
            _sigmoid_rows(z, 0, 2 * H)
            for b in range(B):
                for j in range(H):
                    z[b, 2 * H + j] += z[b, j] * m[b, j]
            _tanh_rows(z, 2 * H, 3 * H)
            h = out[t]
            for b in range(B):
                for j in range(H):
                    zz = z[b, H + j]
                    h[b, j] = (one - zz) * z[b, 2 * H + j] + zz * hp[b, j]
        return out, gates, hidden_n

    def _gru_bwd(go, ghn, h0, w_hh, out, gates, hidden_n, work, gh0, gb_ih, gb_hh):
        """δ^x = [δr, δz, δn], δ^h = [δr, δz, δn r]; g_{t-1} = g z + δ^h W_hh; returns δ^x, δ^h (contiguous).

        go, gb_*: as _rnn_bwd (gb_ih sums δ^x, gb_hh δ^h)."""
        T, B, H = out.shape
        one = out.dtype.type(1)  # keeps float32 math in float32 (np.ones would compile an allocation)
        _start_grad(gh0, ghn)
        _zero(gb_ih)
        _zero(gb_hh)
        # δ^x and δ^h kept apart (contiguous) for the products; ``work`` holds them side by side after.
        dxs = np.empty((T, B, 3 * H), out.dtype)
        dhs = np.empty((T, B, 3 * H), out.dtype)
        for t in range(T - 1, -1, -1):
            hp = h0 if t == 0 else out[t - 1]
            z_ = gates[t]
            m = hidden_n[t]
            dx = dxs[t]
            dh = dhs[t]
            for b in range(B):
                for j in range(H):
                    r = z_[b, j]
                    z = z_[b, H + j]
                    n = z_[b, 2 * H + j]
                    g = gh0[b, j]
                    if go is not None:
                        g += go[t, b, j]
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
            _add_column_sums(gb_ih, dx)
            _add_column_sums(gb_hh, dh)
            acc(dh, w_hh, gh0)
        for t in range(T):
            w = work[t]
            dx = dxs[t]
            dh = dhs[t]
            for b in range(B):
                for j in range(3 * H):
                    w[b, j] = dx[b, j]
                    w[b, 3 * H + j] = dh[b, j]
        return dxs, dhs

    inputs = {
        _weight_grads_small: "dx dh x2 h0 out2",
        _input_grad_small: "d2 w_ih",
        _rnn_fwd: "x h0 w_ih w_hh b_ih b_hh proj",
        _rnn_bwd: "go ghn h0 w_hh out",
        _lstm_fwd: "x h0 c0 w_ih w_hh b_ih b_hh proj",
        _lstm_bwd: "go ghn gcn c0 w_hh cell gates",
        _gru_fwd: "x h0 w_ih w_hh b_ih b_hh proj",
        _gru_bwd: "go ghn h0 w_hh out gates hidden_n",
    }
    return {fn.__name__: kernel(renamed(fn, suffix), inputs=names) for fn, names in inputs.items()}


_TILED = _kernels(_small.acc_nn, _small.acc_tn, _small.mul_nt, _small.mul_nt_bias, "_tiled")
_PLAIN = _kernels(_small.acc_nn_simple, _small.acc_tn_simple, _small.mul_nt_simple, _small.mul_nt_bias_simple, "_plain")


def _tiered(name):
    """The tiled kernel, or the plain one (same results) while the tiled one compiles in the background."""
    return Deferred(_TILED[name], _PLAIN[name], rebinder(__name__, name, lambda fast: fast))


_weight_grads_small = _tiered("_weight_grads_small")
_input_grad_small = _tiered("_input_grad_small")
_rnn_fwd = _tiered("_rnn_fwd")
_rnn_bwd = _tiered("_rnn_bwd")
_lstm_fwd = _tiered("_lstm_fwd")
_lstm_bwd = _tiered("_lstm_bwd")
_gru_fwd = _tiered("_gru_fwd")
_gru_bwd = _tiered("_gru_bwd")


def _flat(a, rows, cols):
    return None if a is None else a.reshape(rows, cols)


def _all_steps_grads(dx, dh, x, h0, out, w_ih, grad_x, grads):
    """The weight, bias and input gradients from δ (dx, dh: (T·B, G·H)), each one product over all steps.

    ``grads`` are (grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh), the biases' None without.
    """
    T, B, I = x.shape
    TB = T * B
    x2 = x.reshape(TB, I)
    out2 = out.reshape(TB, out.shape[2])
    gx2 = _flat(grad_x, TB, I)
    gw_ih, gw_hh, gb_ih, gb_hh = grads
    if TB * (dx.shape[1] + x2.shape[1] + out2.shape[1]) > _BLAS_MIN:
        np.dot(dx.T, x2, out=gw_ih)
        np.dot(dh[:B].T, h0, out=gw_hh)
        if TB > B:
            gw_hh += np.dot(dh[B:].T, out2[: TB - B])
    else:
        _weight_grads_small(dx, dh, x2, h0, out2, gw_ih, gw_hh)
    if gb_ih is not None or gb_hh is not None:
        _bias_grads(dx, dh, gb_ih, gb_hh)
    if gx2 is not None:
        if TB * (dx.shape[1] + gx2.shape[1]) > _BLAS_MIN:
            np.dot(dx, w_ih, out=gx2)
        else:
            _input_grad_small(dx, w_ih, gx2)


def rnn_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, nonlinearity, out):
    """h_t = f(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh) for all t."""
    return _rnn_fwd(
        x, h0, weight_ih, weight_hh, bias_ih, bias_hh, nonlinearity == "relu", _projection(x, weight_ih), out
    )


def _rnn_deltas(grad_out, grad_hn, h0, weight_hh, out, nonlinearity, work, grad_h0):
    """The backward loop of :func:`rnn_backward`; δ as (T·B, H), twice (input and hidden pre-activations)."""
    _rnn_bwd(grad_out, grad_hn, h0, weight_hh, out, nonlinearity == "relu", work, grad_h0, None, None)
    delta = _spec._rows(work)
    return delta, delta


def lstm_forward(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, out, cell, gates):
    """LSTM (gates i, f, g, o) over the sequence."""
    return _lstm_fwd(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, _projection(x, weight_ih), out, cell, gates)


def _lstm_deltas(grad_out, grad_hn, grad_cn, h0, c0, weight_hh, cell, gates, work, grad_h0, grad_c0):
    """The backward loop of :func:`lstm_backward`; δ as (T·B, 4H), twice (input and hidden pre-activations)."""
    _lstm_bwd(grad_out, grad_hn, grad_cn, c0, weight_hh, cell, gates, work, grad_h0, grad_c0, None, None)
    delta = _spec._rows(work)
    return delta, delta


def gru_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, out, gates, hidden_n):
    """GRU (gates r, z, n) over the sequence."""
    return _gru_fwd(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, _projection(x, weight_ih), out, gates, hidden_n)


def _gru_deltas(grad_out, grad_hn, h0, weight_hh, out, gates, hidden_n, work, grad_h0):
    """The backward loop of :func:`gru_backward`; δ^x and δ^h as (T·B, 3H), each contiguous."""
    dxs, dhs = _gru_bwd(grad_out, grad_hn, h0, weight_hh, out, gates, hidden_n, work, grad_h0, None, None)
    return _spec._rows(dxs), _spec._rows(dhs)


class _NumbaBPTT(_spec.BPTT):
    """The reference's backward kernels over the compiled backward loops and all-steps products."""

    rnn_deltas = staticmethod(_rnn_deltas)
    lstm_deltas = staticmethod(_lstm_deltas)
    gru_deltas = staticmethod(_gru_deltas)
    all_steps_grads = staticmethod(_all_steps_grads)


_BPTT = _NumbaBPTT()
rnn_backward = _BPTT.rnn_backward
lstm_backward = _BPTT.lstm_backward
gru_backward = _BPTT.gru_backward
recurrent_pair = _spec.pair_runner(globals())  # the directions one after the other, each on the whole team
