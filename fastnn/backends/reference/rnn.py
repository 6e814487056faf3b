"""Recurrent layers: Elman RNN, LSTM and GRU, forward over a sequence and
backpropagation through time (BPTT).

Shapes: T time steps, B batch, I inputs, H hidden units. Sequences are
time-major, ``x`` of shape (T, B, I); the hidden states of all steps are kept,
``out`` of shape (T, B, H), because backward needs them. The weights are stored
as PyTorch stores a single layer: ``W_ih`` of shape (G·H, I) and ``W_hh`` of
shape (G·H, H), with G = 1 (RNN), 4 (LSTM, gate order i, f, g, o) or 3 (GRU,
gate order r, z, n).

The time loop is sequential only through the recurrence. Everything that does
not depend on the previous step is done for all steps at once:

* before the loop, the input projection ``x_t·W_ihᵀ + b_ih`` for every t is one
  matrix product of shape (T·B, I)·(I, G·H);
* after the backward loop, ``dW_ih = Σ_t δ_tᵀ·x_t`` and ``dW_hh = Σ_t δ_tᵀ·h_{t-1}``
  are one matrix product each over all steps, and ``dL/dx = δ·W_ih`` is one more.

Backward kernels receive a workspace ``work`` of shape (T, B, K·H) (K = 1, 4, 6
for RNN, LSTM, GRU) where they store the errors δ_t of every step, so that a
layer can reuse it across training steps.

Backpropagation through time is thus two stages for every cell: the backward
loop over t, which is the cell's own math (``_rnn_deltas`` and its kin, next to
each forward), then the all-steps products (:func:`_all_steps_grads`), the same
for the three cells. :class:`BPTT` joins them into the backward kernels; a
compiled backend subclasses it with its own two stages.
"""

import numpy as np

__all__ = [
    "rnn_forward",
    "rnn_backward",
    "lstm_forward",
    "lstm_backward",
    "gru_forward",
    "gru_backward",
    "recurrent_pair",
]

RNN_NONLINEARITIES = ("tanh", "relu")


def _sigmoid(z):
    """Logistic function without overflow: ``exp(-|z|)`` never overflows."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e)).astype(z.dtype, copy=False)


def _input_projection(x, weight_ih, bias_ih, bias_hh, out):
    """``out[t] = x_t·W_ihᵀ + b_ih (+ b_hh)`` for every t, as one product over (T·B) rows."""
    T, B, I = x.shape
    G = weight_ih.shape[0]
    flat = out.reshape(T * B, G)
    np.matmul(x.reshape(T * B, I), weight_ih.T, out=flat)
    if bias_ih is not None:
        flat += bias_ih
    if bias_hh is not None:
        flat += bias_hh
    return out


def _rows(a):
    """(T, B, W) as (T·B, W), a view: one row per (step, sample)."""
    return a.reshape(a.shape[0] * a.shape[1], a.shape[2])  # explicit widths: -1 is ambiguous for B = 0


def _all_steps_grads(dx, dh, x, h0, out, weight_ih, grad_x, grads):
    """Gradients of the weights, biases and input, each one product over all time steps.

    ``dx`` (T·B, G·H) is the error of the input pre-activations and ``dh``
    the error of the hidden pre-activations (the same array for RNN and LSTM;
    for GRU they differ in the n-block). The previous hidden states are
    ``[h0, h_1, ..., h_{T-1}]`` = ``h0`` then ``out[:-1]``. ``grads`` are
    (grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh), the biases'
    None without; ``grad_x`` None when dL/dx is not needed.
    """
    T, B, I = x.shape
    H = out.shape[2]
    grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh = grads
    np.matmul(dx.T, x.reshape(T * B, I), out=grad_weight_ih)
    np.matmul(dh[:B].T, h0, out=grad_weight_hh)  # step 0 sees h0
    if T > 1:
        grad_weight_hh += dh[B:].T @ out[:-1].reshape((T - 1) * B, H)
    if grad_bias_ih is not None:
        np.sum(dx, axis=0, out=grad_bias_ih)
    if grad_bias_hh is not None:
        np.sum(dh, axis=0, out=grad_bias_hh)
    if grad_x is not None:
        np.matmul(dx, weight_ih, out=grad_x.reshape(T * B, I))  # dL/dx_t = δ_t·W_ih


# ---------------------------------------------------------------------------
# Elman RNN
# ---------------------------------------------------------------------------


def rnn_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, nonlinearity, out):
    """Elman RNN over a whole sequence.

    .. math::

        h_t = f(x_t W_{ih}^T + b_{ih} + h_{t-1} W_{hh}^T + b_{hh}),
        \\qquad f = \\tanh \\text{ or } \\operatorname{relu}

    Parameters
    ----------
    x : ndarray of shape (T, B, I)
    h0 : ndarray of shape (B, H), the initial hidden state
    weight_ih : ndarray of shape (H, I)
    weight_hh : ndarray of shape (H, H)
    bias_ih, bias_hh : ndarray of shape (H,) or None
    nonlinearity : {"tanh", "relu"}
    out : ndarray of shape (T, B, H), receives every ``h_t`` (``out[-1]`` is h_T)

    Returns
    -------
    out : ndarray of shape (T, B, H)
    """
    _input_projection(x, weight_ih, bias_ih, bias_hh, out)
    h = h0
    for t in range(x.shape[0]):
        a = out[t]
        a += h @ weight_hh.T  # a_t, the pre-activation
        if nonlinearity == "tanh":
            np.tanh(a, out=a)
        else:
            np.maximum(a, 0, out=a)
        h = a
    return out


def _rnn_deltas(grad_out, grad_hn, h0, weight_hh, out, nonlinearity, work, grad_h0):
    """The backward loop of :meth:`BPTT.rnn_backward`: δ_t into ``work``, dL/dh0 into ``grad_h0``.

    Returns δ as (T·B, H) twice: the error of the input and of the hidden pre-activations.
    """
    T = out.shape[0]
    g_next = np.zeros_like(h0) if grad_hn is None else grad_hn.copy()
    for t in range(T - 1, -1, -1):
        g = grad_out[t] + g_next
        h = out[t]
        if nonlinearity == "tanh":
            delta = g * (1 - h * h)
        else:
            delta = g * (h > 0)
        work[t] = delta
        g_next = delta @ weight_hh  # dL/dh_{t-1} through the recurrence
    grad_h0[...] = g_next
    delta = _rows(work)
    return delta, delta


# ---------------------------------------------------------------------------
# LSTM
# ---------------------------------------------------------------------------


def lstm_forward(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, out, cell, gates):
    """Long short-term memory over a whole sequence (PyTorch's equations).

    .. math::

        [\\tilde i, \\tilde f, \\tilde g, \\tilde o] = x_t W_{ih}^T + b_{ih} + h_{t-1} W_{hh}^T + b_{hh}

        i = \\sigma(\\tilde i),\\ f = \\sigma(\\tilde f),\\ g = \\tanh(\\tilde g),\\ o = \\sigma(\\tilde o)

        c_t = f \\odot c_{t-1} + i \\odot g, \\qquad h_t = o \\odot \\tanh(c_t)

    Parameters
    ----------
    x : ndarray of shape (T, B, I)
    h0, c0 : ndarray of shape (B, H), the initial hidden and cell states
    weight_ih : ndarray of shape (4H, I), gate blocks in the order i, f, g, o
    weight_hh : ndarray of shape (4H, H)
    bias_ih, bias_hh : ndarray of shape (4H,) or None
    out : ndarray of shape (T, B, H), receives every ``h_t``
    cell : ndarray of shape (T, B, H), receives every ``c_t``
    gates : ndarray of shape (T, B, 4H), receives the activated gates i, f, g, o

    Returns
    -------
    (out, cell, gates)
    """
    H = h0.shape[1]
    _input_projection(x, weight_ih, bias_ih, bias_hh, gates)
    h, c = h0, c0
    for t in range(x.shape[0]):
        z = gates[t]
        z += h @ weight_hh.T
        i = _sigmoid(z[:, :H])
        f = _sigmoid(z[:, H : 2 * H])
        g = np.tanh(z[:, 2 * H : 3 * H])
        o = _sigmoid(z[:, 3 * H :])
        z[:, :H], z[:, H : 2 * H], z[:, 2 * H : 3 * H], z[:, 3 * H :] = i, f, g, o
        cell[t] = f * c + i * g
        out[t] = o * np.tanh(cell[t])
        h, c = out[t], cell[t]
    return out, cell, gates


def _lstm_deltas(grad_out, grad_hn, grad_cn, h0, c0, weight_hh, cell, gates, work, grad_h0, grad_c0):
    """The backward loop of :meth:`BPTT.lstm_backward`: δ_t into ``work``, dL/dh0 and dL/dc0.

    Returns δ as (T·B, 4H) twice: the error of the input and of the hidden pre-activations.
    """
    T = cell.shape[0]
    H = h0.shape[1]
    g_next = np.zeros_like(h0) if grad_hn is None else grad_hn.copy()
    gamma_next = np.zeros_like(c0) if grad_cn is None else grad_cn.copy()
    for t in range(T - 1, -1, -1):
        i, f, g, o = (gates[t, :, k * H : (k + 1) * H] for k in range(4))
        c_prev = c0 if t == 0 else cell[t - 1]
        tc = np.tanh(cell[t])
        dh = grad_out[t] + g_next
        gamma = gamma_next + dh * o * (1 - tc * tc)
        d = work[t]
        d[:, :H] = gamma * g * i * (1 - i)
        d[:, H : 2 * H] = gamma * c_prev * f * (1 - f)
        d[:, 2 * H : 3 * H] = gamma * i * (1 - g * g)
        d[:, 3 * H :] = dh * tc * o * (1 - o)
        gamma_next = gamma * f
        g_next = d @ weight_hh
    grad_h0[...] = g_next
    grad_c0[...] = gamma_next
    delta = _rows(work)
    return delta, delta


# ---------------------------------------------------------------------------
# GRU
# ---------------------------------------------------------------------------


def gru_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, out, gates, hidden_n):
    """Gated recurrent unit over a whole sequence (PyTorch's equations).

    .. math::

        r = \\sigma(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr})

        z = \\sigma(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz})

        n = \\tanh(W_{in} x_t + b_{in} + r \\odot (W_{hn} h_{t-1} + b_{hn}))

        h_t = (1 - z) \\odot n + z \\odot h_{t-1}

    Parameters
    ----------
    x : ndarray of shape (T, B, I)
    h0 : ndarray of shape (B, H)
    weight_ih : ndarray of shape (3H, I), gate blocks in the order r, z, n
    weight_hh : ndarray of shape (3H, H)
    bias_ih, bias_hh : ndarray of shape (3H,) or None
    out : ndarray of shape (T, B, H), receives every ``h_t``
    gates : ndarray of shape (T, B, 3H), receives r, z, n
    hidden_n : ndarray of shape (T, B, H), receives ``W_hn h_{t-1} + b_hn`` (backward needs it)

    Returns
    -------
    (out, gates, hidden_n)
    """
    H = h0.shape[1]
    # Only b_ih joins the input projection: b_hn sits inside r ⊙ (...).
    _input_projection(x, weight_ih, bias_ih, None, gates)
    h = h0
    for t in range(x.shape[0]):
        gh = h @ weight_hh.T
        if bias_hh is not None:
            gh += bias_hh
        gi = gates[t]
        r = _sigmoid(gi[:, :H] + gh[:, :H])
        z = _sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
        n = np.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
        hidden_n[t] = gh[:, 2 * H :]
        gi[:, :H], gi[:, H : 2 * H], gi[:, 2 * H :] = r, z, n
        out[t] = (1 - z) * n + z * h
        h = out[t]
    return out, gates, hidden_n


def _gru_deltas(grad_out, grad_hn, h0, weight_hh, out, gates, hidden_n, work, grad_h0):
    """The backward loop of :meth:`BPTT.gru_backward`: δ^x_t and δ^h_t into ``work``, dL/dh0.

    Returns δ^x and δ^h as (T·B, 3H) views of ``work``.
    """
    T = out.shape[0]
    H = h0.shape[1]
    g_next = np.zeros_like(h0) if grad_hn is None else grad_hn.copy()
    for t in range(T - 1, -1, -1):
        r, z, n = (gates[t, :, k * H : (k + 1) * H] for k in range(3))
        h_prev = h0 if t == 0 else out[t - 1]
        g = grad_out[t] + g_next
        dn = g * (1 - z) * (1 - n * n)
        dr = dn * hidden_n[t] * r * (1 - r)
        dz = g * (h_prev - n) * z * (1 - z)
        w = work[t]
        w[:, :H], w[:, H : 2 * H], w[:, 2 * H : 3 * H] = dr, dz, dn
        w[:, 3 * H : 4 * H], w[:, 4 * H : 5 * H], w[:, 5 * H :] = dr, dz, dn * r
        g_next = g * z + w[:, 3 * H :] @ weight_hh
    grad_h0[...] = g_next
    deltas = _rows(work)
    return deltas[:, : 3 * H], deltas[:, 3 * H :]


# ---------------------------------------------------------------------------
# Backpropagation through time: the backward kernels of the three cells
# ---------------------------------------------------------------------------


class BPTT:
    """The backward kernels: a cell's backward loop, then the all-steps products.

    The two stages are attributes (functions of this module here), so that a
    compiled backend can subclass this with its own and keep these kernels'
    parameters; the kernels are the bound methods of an instance.
    """

    rnn_deltas = staticmethod(_rnn_deltas)
    lstm_deltas = staticmethod(_lstm_deltas)
    gru_deltas = staticmethod(_gru_deltas)
    all_steps_grads = staticmethod(_all_steps_grads)

    def rnn_backward(
        self,
        grad_out,
        grad_hn,
        x,
        h0,
        weight_ih,
        weight_hh,
        out,
        nonlinearity,
        work,
        grad_x,
        grad_h0,
        grad_weight_ih,
        grad_weight_hh,
        grad_bias_ih,
        grad_bias_hh,
    ):
        """Backpropagation through time for :func:`rnn_forward`.

        Going backwards from t = T-1, with ``g_t`` = dL/dh_t from the loss (the
        output gradient) plus what flows back from step t+1::

            g_t = grad_out[t] + δ_{t+1}·W_hh        (g_{T-1} also gets grad_hn)
            δ_t = g_t ⊙ f'(a_t)                     f' = 1 - h_t² (tanh), [h_t > 0] (relu)

        and then, over all steps at once::

            dL/dx_t = δ_t·W_ih        dL/dh0 = δ_0·W_hh
            dW_ih = Σ_t δ_tᵀ x_t      dW_hh = Σ_t δ_tᵀ h_{t-1}
            db_ih = db_hh = Σ_t Σ_batch δ_t

        Parameters
        ----------
        grad_out : ndarray of shape (T, B, H), dL/d(out)
        grad_hn : ndarray of shape (B, H) or None, dL/dh_T from outside the output sequence
        x, h0, weight_ih, weight_hh : the forward inputs
        out : ndarray of shape (T, B, H), the forward output
        nonlinearity : {"tanh", "relu"}
        work : ndarray of shape (T, B, H), receives δ_t
        grad_x : ndarray of shape (T, B, I) or None (not needed)
        grad_h0 : ndarray of shape (B, H)
        grad_weight_ih, grad_weight_hh : ndarrays shaped as the weights
        grad_bias_ih, grad_bias_hh : ndarray of shape (H,) or None (no bias)

        Returns
        -------
        (grad_x, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh)
        """
        grads = (grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh)
        dx, dh = self.rnn_deltas(grad_out, grad_hn, h0, weight_hh, out, nonlinearity, work, grad_h0)
        self.all_steps_grads(dx, dh, x, h0, out, weight_ih, grad_x, grads)
        return (grad_x, grad_h0, *grads)

    def lstm_backward(
        self,
        grad_out,
        grad_hn,
        grad_cn,
        x,
        h0,
        c0,
        weight_ih,
        weight_hh,
        out,
        cell,
        gates,
        work,
        grad_x,
        grad_h0,
        grad_c0,
        grad_weight_ih,
        grad_weight_hh,
        grad_bias_ih,
        grad_bias_hh,
    ):
        """Backpropagation through time for :func:`lstm_forward`.

        With ``g_t`` = dL/dh_t (output gradient plus the recurrent term) and
        ``γ_t`` = dL/dc_t, going backwards::

            γ_t  = γ_{t+1} ⊙ f_{t+1} + g_t ⊙ o ⊙ (1 - tanh²(c_t))
            δo = g_t ⊙ tanh(c_t) ⊙ o(1-o)      δi = γ_t ⊙ g ⊙ i(1-i)
            δf = γ_t ⊙ c_{t-1} ⊙ f(1-f)        δg = γ_t ⊙ i ⊙ (1-g²)
            δ_t = [δi, δf, δg, δo]              (B, 4H), the pre-activation error
            g_{t-1} = grad_out[t-1] + δ_t·W_hh

        Weight, bias and input gradients follow from δ as in :func:`rnn_backward`;
        ``grad_c0`` is ``γ_0 ⊙ f_0``.

        Parameters
        ----------
        grad_out : ndarray of shape (T, B, H)
        grad_hn, grad_cn : ndarray of shape (B, H) or None, gradients of the final states
        x, h0, c0, weight_ih, weight_hh : the forward inputs
        out, cell, gates : the forward outputs
        work : ndarray of shape (T, B, 4H), receives δ_t
        grad_x : ndarray of shape (T, B, I) or None
        grad_h0, grad_c0 : ndarray of shape (B, H)
        grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh : as the parameters (biases may be None)

        Returns
        -------
        (grad_x, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh)
        """
        grads = (grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh)
        dx, dh = self.lstm_deltas(grad_out, grad_hn, grad_cn, h0, c0, weight_hh, cell, gates, work, grad_h0, grad_c0)
        self.all_steps_grads(dx, dh, x, h0, out, weight_ih, grad_x, grads)
        return (grad_x, grad_h0, grad_c0, *grads)

    def gru_backward(
        self,
        grad_out,
        grad_hn,
        x,
        h0,
        weight_ih,
        weight_hh,
        out,
        gates,
        hidden_n,
        work,
        grad_x,
        grad_h0,
        grad_weight_ih,
        grad_weight_hh,
        grad_bias_ih,
        grad_bias_hh,
    ):
        """Backpropagation through time for :func:`gru_forward`.

        With ``g_t`` = dL/dh_t (output gradient plus the recurrent term) and
        ``m_t = W_hn h_{t-1} + b_hn``::

            δn = g_t ⊙ (1 - z) ⊙ (1 - n²)
            δr = δn ⊙ m_t ⊙ r(1 - r)
            δz = g_t ⊙ (h_{t-1} - n) ⊙ z(1 - z)
            δ^x_t = [δr, δz, δn]            error of the input pre-activations
            δ^h_t = [δr, δz, δn ⊙ r]        error of the hidden pre-activations
            g_{t-1} = grad_out[t-1] + g_t ⊙ z + δ^h_t·W_hh

        ``dW_ih``, ``db_ih`` and ``dL/dx`` come from δ^x; ``dW_hh`` and ``db_hh``
        from δ^h.

        Parameters
        ----------
        grad_out : ndarray of shape (T, B, H)
        grad_hn : ndarray of shape (B, H) or None
        x, h0, weight_ih, weight_hh : the forward inputs
        out, gates, hidden_n : the forward outputs
        work : ndarray of shape (T, B, 6H): δ^x in ``[..., :3H]``, δ^h in ``[..., 3H:]``
        grad_x : ndarray of shape (T, B, I) or None
        grad_h0 : ndarray of shape (B, H)
        grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh : as the parameters (biases may be None)

        Returns
        -------
        (grad_x, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh)
        """
        grads = (grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh)
        dx, dh = self.gru_deltas(grad_out, grad_hn, h0, weight_hh, out, gates, hidden_n, work, grad_h0)
        self.all_steps_grads(dx, dh, x, h0, out, weight_ih, grad_x, grads)
        return (grad_x, grad_h0, *grads)


_BPTT = BPTT()
rnn_backward = _BPTT.rnn_backward
lstm_backward = _BPTT.lstm_backward
gru_backward = _BPTT.gru_backward


def pair_runner(namespace):
    """``recurrent_pair`` over the recurrent kernels in ``namespace`` (a backend module's globals)."""

    def recurrent_pair(kernel, first, second):
        """Two independent calls of one recurrent kernel, one after the other.

        ``kernel`` names it (``"lstm_forward"`` ...); ``first`` and ``second`` are
        its argument tuples, e.g. the two directions of a bidirectional layer.
        Returns both results. A compiled backend may run the two at once.
        """
        if kernel not in __all__ or kernel == "recurrent_pair":
            raise ValueError(f"recurrent_pair: unknown kernel {kernel!r}")
        fn = namespace[kernel]
        return fn(*first), fn(*second)

    return recurrent_pair


recurrent_pair = pair_runner(globals())
