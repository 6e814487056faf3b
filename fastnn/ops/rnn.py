"""Recurrent kernels: RNN, LSTM and GRU over whole sequences (see the reference for the math).

Every op checks its arguments, allocates what was not given, and calls the
kernel of the same name on the active backend. Sequences are time-major:
``x`` of shape (T, B, I), hidden states (T, B, H). An empty batch (B = 0)
gives empty results and zero weight gradients, as in PyTorch; an empty
sequence (T = 0) is an error. Output buffers must not overlap the inputs or
each other.
"""

from .. import _validation as _v
from ..backends import current as _backend

__all__ = [
    "rnn_forward", "rnn_backward",
    "lstm_forward", "lstm_backward",
    "gru_forward", "gru_backward",
    "RNN_NONLINEARITIES",
]

RNN_NONLINEARITIES = ("tanh", "relu")

_GATES = {"rnn": 1, "lstm": 4, "gru": 3}
_WORK = {"rnn": 1, "lstm": 4, "gru": 6}


def _state(a, name, dtype, shape, cell):
    a = _v.as_float_array(a, name)
    _v.same_dtype(dtype, a, name)
    if a.shape != shape:
        raise ValueError(f"{cell}: {name} has shape {a.shape} but must be (batch, hidden) = {shape}")
    return a


def _seq_args(cell, x, weight_ih, weight_hh, bias_ih, bias_hh):
    """Check x (T, B, I), the weights and biases; return them and (T, B, I, H)."""
    x = _v.as_float_array(x, "x")
    if x.ndim != 3:
        raise ValueError(f"{cell}: x must be 3-D (time, batch, features), got shape {x.shape}")
    T, B, I = x.shape
    if T < 1:
        raise ValueError(f"{cell}: x must hold at least one time step, got shape {x.shape}")
    G = _GATES[cell]
    weight_ih = _v.as_float_array(weight_ih, "weight_ih", ndim=2)
    weight_hh = _v.as_float_array(weight_hh, "weight_hh", ndim=2)
    _v.same_dtype(x.dtype, weight_ih, "weight_ih")
    _v.same_dtype(x.dtype, weight_hh, "weight_hh")
    GH = weight_hh.shape[0]
    if GH % G or GH == 0:
        raise ValueError(f"{cell}: weight_hh has shape {weight_hh.shape}; its rows must be {G} x hidden_size")
    H = GH // G
    if weight_hh.shape != (G * H, H):
        raise ValueError(f"{cell}: weight_hh has shape {weight_hh.shape}, expected ({G * H}, {H}) "
                         f"for hidden size {H}")
    if weight_ih.shape != (G * H, I):
        raise ValueError(f"{cell}: x has {I} features (shape {x.shape}) but weight_ih has shape "
                         f"{weight_ih.shape}, expected ({G * H}, {I})")
    biases = []
    for b, name in ((bias_ih, "bias_ih"), (bias_hh, "bias_hh")):
        if b is not None:
            b = _v.as_float_array(b, name, ndim=1)
            _v.same_dtype(x.dtype, b, name)
            if b.shape != (G * H,):
                raise ValueError(f"{cell}: {name} has shape {b.shape}, expected ({G * H},)")
        biases.append(b)
    # the all-steps products have T·B rows and up to _WORK·H columns (the GRU's workspace)
    _v.dims_fit(cell, **{"time steps·batch": T * B, "input size": I, "gates·hidden size": _WORK[cell] * H})
    return x, weight_ih, weight_hh, biases[0], biases[1], (T, B, I, H)


def _outputs(ins, *specs):
    """Check or allocate each output (buffer, shape, dtype, name), none overlapping ``ins`` or another."""
    done = []
    for buf, shape, dtype, name in specs:
        done.append(None if shape is None else _v.output(buf, shape, dtype, name, ins + tuple(done)))
    return done


def _zero_grads(grads):
    """The weight and bias gradients of an empty batch: sums over no samples."""
    for g in grads:
        if g is not None:
            g.fill(0)


def _seq_grad(a, name, dtype, shape, cell):
    a = _v.as_float_array(a, name)
    _v.same_dtype(dtype, a, name)
    if a.shape != shape:
        raise ValueError(f"{cell}: {name} has shape {a.shape}, expected {shape}")
    return a


def work_shape(cell, T, B, H):
    """Shape of the backward workspace of ``cell`` ("rnn", "lstm", "gru")."""
    return (T, B, _WORK[cell] * H)


# ---------------------------------------------------------------------------

def rnn_forward(x, h0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, nonlinearity="tanh", out=None):
    """Elman RNN ``h_t = f(x_t·W_ihᵀ + b_ih + h_{t-1}·W_hhᵀ + b_hh)`` over a sequence.

    Parameters
    ----------
    x : array_like of shape (T, B, I)
    h0 : array_like of shape (B, H)
    weight_ih : array_like of shape (H, I)
    weight_hh : array_like of shape (H, H)
    bias_ih, bias_hh : array_like of shape (H,), optional
    nonlinearity : {"tanh", "relu"}
    out : ndarray of shape (T, B, H), optional

    Returns
    -------
    ndarray of shape (T, B, H)
        Every hidden state; ``out[-1]`` is the final state.
    """
    x, weight_ih, weight_hh, bias_ih, bias_hh, (T, B, I, H) = _seq_args("rnn", x, weight_ih, weight_hh,
                                                                         bias_ih, bias_hh)
    _v.choice(nonlinearity, "nonlinearity", RNN_NONLINEARITIES)
    h0 = _state(h0, "h0", x.dtype, (B, H), "rnn")
    out = _v.output(out, (T, B, H), x.dtype, inputs=(x, h0, weight_ih, weight_hh, bias_ih, bias_hh))
    if B == 0:
        return out
    return _backend().rnn_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, nonlinearity, out)


def rnn_backward(grad_out, x, h0, weight_ih, weight_hh, out, nonlinearity="tanh", *, grad_hn=None, bias=True,
                 input_grad=True, work=None, grad_x=None, grad_h0=None, grad_weight_ih=None,
                 grad_weight_hh=None, grad_bias_ih=None, grad_bias_hh=None):
    """Backpropagation through time of :func:`rnn_forward`.

    Parameters
    ----------
    grad_out : array_like of shape (T, B, H), dL/d(out)
    x, h0, weight_ih, weight_hh : the forward inputs
    out : array_like of shape (T, B, H), the forward output
    nonlinearity : {"tanh", "relu"}
    grad_hn : array_like of shape (B, H), optional
        Gradient of the final state from elsewhere (added to ``grad_out[-1]``).
    bias : bool
        Whether the layer has biases (whether to compute their gradients).
    input_grad : bool
        Whether to compute dL/dx.
    work, grad_x, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh : ndarray, optional
        Buffers (overwritten). ``work`` has shape (T, B, H).

    Returns
    -------
    (grad_x or None, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih or None, grad_bias_hh or None)
    """
    x, weight_ih, weight_hh, _, _, (T, B, I, H) = _seq_args("rnn", x, weight_ih, weight_hh, None, None)
    _v.choice(nonlinearity, "nonlinearity", RNN_NONLINEARITIES)
    dt = x.dtype
    h0 = _state(h0, "h0", dt, (B, H), "rnn")
    out = _seq_grad(out, "out", dt, (T, B, H), "rnn")
    grad_out = _seq_grad(grad_out, "grad_out", dt, (T, B, H), "rnn")
    if grad_hn is not None:
        grad_hn = _state(grad_hn, "grad_hn", dt, (B, H), "rnn")
    ins = (grad_out, x, h0, weight_ih, weight_hh, out, grad_hn)
    work, grad_x, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh = _outputs(
        ins, (work, work_shape("rnn", T, B, H), dt, "work"),
        (grad_x, (T, B, I) if input_grad else None, dt, "grad_x"), (grad_h0, (B, H), dt, "grad_h0"),
        (grad_weight_ih, weight_ih.shape, dt, "grad_weight_ih"),
        (grad_weight_hh, weight_hh.shape, dt, "grad_weight_hh"),
        (grad_bias_ih, (H,) if bias else None, dt, "grad_bias_ih"),
        (grad_bias_hh, (H,) if bias else None, dt, "grad_bias_hh"))
    if B == 0:
        _zero_grads((grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh))
        return grad_x, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh
    return _backend().rnn_backward(grad_out, grad_hn, x, h0, weight_ih, weight_hh, out, nonlinearity, work,
                                   grad_x, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh)


# ---------------------------------------------------------------------------

def lstm_forward(x, h0, c0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, out=None, cell=None, gates=None):
    """LSTM over a sequence, PyTorch's equations and gate order (i, f, g, o).

    Parameters
    ----------
    x : array_like of shape (T, B, I)
    h0, c0 : array_like of shape (B, H)
    weight_ih : array_like of shape (4H, I)
    weight_hh : array_like of shape (4H, H)
    bias_ih, bias_hh : array_like of shape (4H,), optional
    out, cell : ndarray of shape (T, B, H), optional
    gates : ndarray of shape (T, B, 4H), optional

    Returns
    -------
    out : ndarray of shape (T, B, H), every ``h_t``
    cell : ndarray of shape (T, B, H), every ``c_t``
    gates : ndarray of shape (T, B, 4H), the activated gates (kept for backward)
    """
    x, weight_ih, weight_hh, bias_ih, bias_hh, (T, B, I, H) = _seq_args("lstm", x, weight_ih, weight_hh,
                                                                         bias_ih, bias_hh)
    h0 = _state(h0, "h0", x.dtype, (B, H), "lstm")
    c0 = _state(c0, "c0", x.dtype, (B, H), "lstm")
    ins = (x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh)
    out, cell, gates = _outputs(ins, (out, (T, B, H), x.dtype, "out"), (cell, (T, B, H), x.dtype, "cell"),
                                (gates, (T, B, 4 * H), x.dtype, "gates"))
    if B == 0:
        return out, cell, gates
    return _backend().lstm_forward(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, out, cell, gates)


def lstm_backward(grad_out, x, h0, c0, weight_ih, weight_hh, out, cell, gates, *, grad_hn=None, grad_cn=None,
                  bias=True, input_grad=True, work=None, grad_x=None, grad_h0=None, grad_c0=None,
                  grad_weight_ih=None, grad_weight_hh=None, grad_bias_ih=None, grad_bias_hh=None):
    """Backpropagation through time of :func:`lstm_forward`.

    ``grad_hn`` and ``grad_cn`` (shape (B, H), optional) are gradients of the
    final states from elsewhere; ``work`` has shape (T, B, 4H).

    Returns
    -------
    (grad_x or None, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh)
    """
    x, weight_ih, weight_hh, _, _, (T, B, I, H) = _seq_args("lstm", x, weight_ih, weight_hh, None, None)
    dt = x.dtype
    h0 = _state(h0, "h0", dt, (B, H), "lstm")
    c0 = _state(c0, "c0", dt, (B, H), "lstm")
    out = _seq_grad(out, "out", dt, (T, B, H), "lstm")
    cell = _seq_grad(cell, "cell", dt, (T, B, H), "lstm")
    gates = _seq_grad(gates, "gates", dt, (T, B, 4 * H), "lstm")
    grad_out = _seq_grad(grad_out, "grad_out", dt, (T, B, H), "lstm")
    if grad_hn is not None:
        grad_hn = _state(grad_hn, "grad_hn", dt, (B, H), "lstm")
    if grad_cn is not None:
        grad_cn = _state(grad_cn, "grad_cn", dt, (B, H), "lstm")
    ins = (grad_out, x, h0, c0, weight_ih, weight_hh, out, cell, gates, grad_hn, grad_cn)
    work, grad_x, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh = _outputs(
        ins, (work, work_shape("lstm", T, B, H), dt, "work"),
        (grad_x, (T, B, I) if input_grad else None, dt, "grad_x"), (grad_h0, (B, H), dt, "grad_h0"),
        (grad_c0, (B, H), dt, "grad_c0"), (grad_weight_ih, weight_ih.shape, dt, "grad_weight_ih"),
        (grad_weight_hh, weight_hh.shape, dt, "grad_weight_hh"),
        (grad_bias_ih, (4 * H,) if bias else None, dt, "grad_bias_ih"),
        (grad_bias_hh, (4 * H,) if bias else None, dt, "grad_bias_hh"))
    if B == 0:
        _zero_grads((grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh))
        return grad_x, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh
    return _backend().lstm_backward(grad_out, grad_hn, grad_cn, x, h0, c0, weight_ih, weight_hh, out, cell,
                                    gates, work, grad_x, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh,
                                    grad_bias_ih, grad_bias_hh)


# ---------------------------------------------------------------------------

def gru_forward(x, h0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, out=None, gates=None, hidden_n=None):
    """GRU over a sequence, PyTorch's equations and gate order (r, z, n).

    Parameters
    ----------
    x : array_like of shape (T, B, I)
    h0 : array_like of shape (B, H)
    weight_ih : array_like of shape (3H, I)
    weight_hh : array_like of shape (3H, H)
    bias_ih, bias_hh : array_like of shape (3H,), optional
    out : ndarray of shape (T, B, H), optional
    gates : ndarray of shape (T, B, 3H), optional
    hidden_n : ndarray of shape (T, B, H), optional

    Returns
    -------
    out : ndarray of shape (T, B, H), every ``h_t``
    gates : ndarray of shape (T, B, 3H), the gates r, z, n (kept for backward)
    hidden_n : ndarray of shape (T, B, H), ``W_hn h_{t-1} + b_hn`` (kept for backward)
    """
    x, weight_ih, weight_hh, bias_ih, bias_hh, (T, B, I, H) = _seq_args("gru", x, weight_ih, weight_hh,
                                                                         bias_ih, bias_hh)
    h0 = _state(h0, "h0", x.dtype, (B, H), "gru")
    ins = (x, h0, weight_ih, weight_hh, bias_ih, bias_hh)
    out, gates, hidden_n = _outputs(ins, (out, (T, B, H), x.dtype, "out"),
                                    (gates, (T, B, 3 * H), x.dtype, "gates"),
                                    (hidden_n, (T, B, H), x.dtype, "hidden_n"))
    if B == 0:
        return out, gates, hidden_n
    return _backend().gru_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, out, gates, hidden_n)


def gru_backward(grad_out, x, h0, weight_ih, weight_hh, out, gates, hidden_n, *, grad_hn=None, bias=True,
                 input_grad=True, work=None, grad_x=None, grad_h0=None, grad_weight_ih=None,
                 grad_weight_hh=None, grad_bias_ih=None, grad_bias_hh=None):
    """Backpropagation through time of :func:`gru_forward`.

    ``grad_hn`` (shape (B, H), optional) is the gradient of the final state
    from elsewhere; ``work`` has shape (T, B, 6H).

    Returns
    -------
    (grad_x or None, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh)
    """
    x, weight_ih, weight_hh, _, _, (T, B, I, H) = _seq_args("gru", x, weight_ih, weight_hh, None, None)
    dt = x.dtype
    h0 = _state(h0, "h0", dt, (B, H), "gru")
    out = _seq_grad(out, "out", dt, (T, B, H), "gru")
    gates = _seq_grad(gates, "gates", dt, (T, B, 3 * H), "gru")
    hidden_n = _seq_grad(hidden_n, "hidden_n", dt, (T, B, H), "gru")
    grad_out = _seq_grad(grad_out, "grad_out", dt, (T, B, H), "gru")
    if grad_hn is not None:
        grad_hn = _state(grad_hn, "grad_hn", dt, (B, H), "gru")
    ins = (grad_out, x, h0, weight_ih, weight_hh, out, gates, hidden_n, grad_hn)
    work, grad_x, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh = _outputs(
        ins, (work, work_shape("gru", T, B, H), dt, "work"),
        (grad_x, (T, B, I) if input_grad else None, dt, "grad_x"), (grad_h0, (B, H), dt, "grad_h0"),
        (grad_weight_ih, weight_ih.shape, dt, "grad_weight_ih"),
        (grad_weight_hh, weight_hh.shape, dt, "grad_weight_hh"),
        (grad_bias_ih, (3 * H,) if bias else None, dt, "grad_bias_ih"),
        (grad_bias_hh, (3 * H,) if bias else None, dt, "grad_bias_hh"))
    if B == 0:
        _zero_grads((grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh))
        return grad_x, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh
    return _backend().gru_backward(grad_out, grad_hn, x, h0, weight_ih, weight_hh, out, gates, hidden_n, work,
                                   grad_x, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh)
