"""Recurrent kernels: RNN, LSTM and GRU over whole sequences (see the reference for the math).

Every op checks its arguments, allocates what was not given, and calls the
kernel of the same name on the active backend. Sequences are time-major:
``x`` of shape (T, B, I), hidden states (T, B, H). An empty batch (B = 0)
gives empty results and zero weight gradients, as in PyTorch; an empty
sequence (T = 0) is an error. Output buffers must not overlap the inputs or
each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal, cast

import numpy as np

from .. import _validation as _v
from .._typing import ArrayLike, FloatArray, NDArray, ParamLike
from ..backends import Backend
from ..backends import current as _backend

__all__ = [
    "rnn_forward",
    "rnn_backward",
    "lstm_forward",
    "lstm_backward",
    "gru_forward",
    "gru_backward",
    "RNN_NONLINEARITIES",
    "RecurrentPlan",
]

Nonlinearity = Literal["tanh", "relu"]
Cell = Literal["rnn", "lstm", "gru"]

RNN_NONLINEARITIES: tuple[Nonlinearity, ...] = ("tanh", "relu")

_GATES: dict[str, int] = {"rnn": 1, "lstm": 4, "gru": 3}
_WORK: dict[str, int] = {"rnn": 1, "lstm": 4, "gru": 6}

#: (grad_x or None, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih or None, grad_bias_hh or None)
_Grads = tuple["FloatArray | None", FloatArray, FloatArray, FloatArray, "FloatArray | None", "FloatArray | None"]
#: the LSTM's: grad_c0 after grad_h0
_LstmGrads = tuple[
    "FloatArray | None", FloatArray, FloatArray, FloatArray, FloatArray, "FloatArray | None", "FloatArray | None"
]
#: the output spec of :func:`_outputs`: (buffer, shape or None for none, dtype, name)
_Spec = tuple["FloatArray | None", "tuple[int, ...] | None", "np.dtype[Any]", str]


def _state(a: ArrayLike, name: str, dtype: np.dtype[Any], shape: tuple[int, ...], cell: str) -> FloatArray:
    a = _v.as_float_array(a, name)
    _v.same_dtype(dtype, a, name)
    if a.shape != shape:
        raise ValueError(f"{cell}: {name} has shape {a.shape} but must be (batch, hidden) = {shape}")
    return a


def _seq_args(
    cell: str,
    x: ArrayLike,
    weight_ih: ArrayLike,
    weight_hh: ArrayLike,
    bias_ih: ArrayLike | None,
    bias_hh: ArrayLike | None,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray | None, FloatArray | None, tuple[int, int, int, int]]:
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
        raise ValueError(f"{cell}: weight_hh has shape {weight_hh.shape}, expected ({G * H}, {H}) for hidden size {H}")
    if weight_ih.shape != (G * H, I):
        raise ValueError(
            f"{cell}: x has {I} features (shape {x.shape}) but weight_ih has shape "
            f"{weight_ih.shape}, expected ({G * H}, {I})"
        )
    biases: list[FloatArray | None] = []
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


def _outputs(ins: tuple[NDArray[Any] | None, ...], *specs: _Spec) -> list[Any]:
    """Check or allocate each output (buffer, shape, dtype, name), none overlapping ``ins`` or another.

    Item i is None where ``specs[i]`` has no shape, else an array: a list of mixed types for the caller
    to unpack, hence ``list[Any]``.
    """
    done: list[FloatArray | None] = []
    for buf, shape, dtype, name in specs:
        done.append(None if shape is None else _v.output(buf, shape, dtype, name, ins + tuple(done)))
    return done


def _zero_grads(grads: Iterable[FloatArray | None]) -> None:
    """The weight and bias gradients of an empty batch: sums over no samples."""
    for g in grads:
        if g is not None:
            g.fill(0)


def _seq_grad(a: ArrayLike, name: str, dtype: np.dtype[Any], shape: tuple[int, ...], cell: str) -> FloatArray:
    a = _v.as_float_array(a, name)
    _v.same_dtype(dtype, a, name)
    if a.shape != shape:
        raise ValueError(f"{cell}: {name} has shape {a.shape}, expected {shape}")
    return a


def work_shape(cell: str, T: int, B: int, H: int) -> tuple[int, int, int]:
    """Shape of the backward workspace of ``cell`` ("rnn", "lstm", "gru")."""
    return (T, B, _WORK[cell] * H)


# ---------------------------------------------------------------------------


def rnn_forward(
    x: ArrayLike,
    h0: ArrayLike,
    weight_ih: ArrayLike,
    weight_hh: ArrayLike,
    bias_ih: ArrayLike | None = None,
    bias_hh: ArrayLike | None = None,
    nonlinearity: Nonlinearity = "tanh",
    out: FloatArray | None = None,
) -> FloatArray:
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
    x, weight_ih, weight_hh, bias_ih, bias_hh, (T, B, I, H) = _seq_args(
        "rnn", x, weight_ih, weight_hh, bias_ih, bias_hh
    )
    _v.choice(nonlinearity, "nonlinearity", RNN_NONLINEARITIES)
    h0 = _state(h0, "h0", x.dtype, (B, H), "rnn")
    out = _v.output(out, (T, B, H), x.dtype, inputs=(x, h0, weight_ih, weight_hh, bias_ih, bias_hh))
    if B == 0:
        return out
    return _backend().rnn_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, nonlinearity, out)


def rnn_backward(
    grad_out: ArrayLike,
    x: ArrayLike,
    h0: ArrayLike,
    weight_ih: ArrayLike,
    weight_hh: ArrayLike,
    out: ArrayLike,
    nonlinearity: Nonlinearity = "tanh",
    *,
    grad_hn: ArrayLike | None = None,
    bias: bool = True,
    input_grad: bool = True,
    work: FloatArray | None = None,
    grad_x: FloatArray | None = None,
    grad_h0: FloatArray | None = None,
    grad_weight_ih: FloatArray | None = None,
    grad_weight_hh: FloatArray | None = None,
    grad_bias_ih: FloatArray | None = None,
    grad_bias_hh: FloatArray | None = None,
) -> _Grads:
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
        ins,
        (work, work_shape("rnn", T, B, H), dt, "work"),
        (grad_x, (T, B, I) if input_grad else None, dt, "grad_x"),
        (grad_h0, (B, H), dt, "grad_h0"),
        (grad_weight_ih, weight_ih.shape, dt, "grad_weight_ih"),
        (grad_weight_hh, weight_hh.shape, dt, "grad_weight_hh"),
        (grad_bias_ih, (H,) if bias else None, dt, "grad_bias_ih"),
        (grad_bias_hh, (H,) if bias else None, dt, "grad_bias_hh"),
    )
    if B == 0:
        _zero_grads((grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh))
        return grad_x, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh
    return _backend().rnn_backward(
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
    )


# ---------------------------------------------------------------------------


def lstm_forward(
    x: ArrayLike,
    h0: ArrayLike,
    c0: ArrayLike,
    weight_ih: ArrayLike,
    weight_hh: ArrayLike,
    bias_ih: ArrayLike | None = None,
    bias_hh: ArrayLike | None = None,
    out: FloatArray | None = None,
    cell: FloatArray | None = None,
    gates: FloatArray | None = None,
) -> tuple[FloatArray, FloatArray, FloatArray]:
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
    x, weight_ih, weight_hh, bias_ih, bias_hh, (T, B, I, H) = _seq_args(
        "lstm", x, weight_ih, weight_hh, bias_ih, bias_hh
    )
    h0 = _state(h0, "h0", x.dtype, (B, H), "lstm")
    c0 = _state(c0, "c0", x.dtype, (B, H), "lstm")
    ins = (x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh)
    out, cell, gates = _outputs(
        ins,
        (out, (T, B, H), x.dtype, "out"),
        (cell, (T, B, H), x.dtype, "cell"),
        (gates, (T, B, 4 * H), x.dtype, "gates"),
    )
    if B == 0:
        return out, cell, gates
    return _backend().lstm_forward(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, out, cell, gates)


def lstm_backward(
    grad_out: ArrayLike,
    x: ArrayLike,
    h0: ArrayLike,
    c0: ArrayLike,
    weight_ih: ArrayLike,
    weight_hh: ArrayLike,
    out: ArrayLike,
    cell: ArrayLike,
    gates: ArrayLike,
    *,
    grad_hn: ArrayLike | None = None,
    grad_cn: ArrayLike | None = None,
    bias: bool = True,
    input_grad: bool = True,
    work: FloatArray | None = None,
    grad_x: FloatArray | None = None,
    grad_h0: FloatArray | None = None,
    grad_c0: FloatArray | None = None,
    grad_weight_ih: FloatArray | None = None,
    grad_weight_hh: FloatArray | None = None,
    grad_bias_ih: FloatArray | None = None,
    grad_bias_hh: FloatArray | None = None,
) -> _LstmGrads:
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
        ins,
        (work, work_shape("lstm", T, B, H), dt, "work"),
        (grad_x, (T, B, I) if input_grad else None, dt, "grad_x"),
        (grad_h0, (B, H), dt, "grad_h0"),
        (grad_c0, (B, H), dt, "grad_c0"),
        (grad_weight_ih, weight_ih.shape, dt, "grad_weight_ih"),
        (grad_weight_hh, weight_hh.shape, dt, "grad_weight_hh"),
        (grad_bias_ih, (4 * H,) if bias else None, dt, "grad_bias_ih"),
        (grad_bias_hh, (4 * H,) if bias else None, dt, "grad_bias_hh"),
    )
    if B == 0:
        _zero_grads((grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh))
        return grad_x, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh
    return _backend().lstm_backward(
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
    )


# ---------------------------------------------------------------------------


def gru_forward(
    x: ArrayLike,
    h0: ArrayLike,
    weight_ih: ArrayLike,
    weight_hh: ArrayLike,
    bias_ih: ArrayLike | None = None,
    bias_hh: ArrayLike | None = None,
    out: FloatArray | None = None,
    gates: FloatArray | None = None,
    hidden_n: FloatArray | None = None,
) -> tuple[FloatArray, FloatArray, FloatArray]:
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
    x, weight_ih, weight_hh, bias_ih, bias_hh, (T, B, I, H) = _seq_args(
        "gru", x, weight_ih, weight_hh, bias_ih, bias_hh
    )
    h0 = _state(h0, "h0", x.dtype, (B, H), "gru")
    ins = (x, h0, weight_ih, weight_hh, bias_ih, bias_hh)
    out, gates, hidden_n = _outputs(
        ins,
        (out, (T, B, H), x.dtype, "out"),
        (gates, (T, B, 3 * H), x.dtype, "gates"),
        (hidden_n, (T, B, H), x.dtype, "hidden_n"),
    )
    if B == 0:
        return out, gates, hidden_n
    return _backend().gru_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, out, gates, hidden_n)


def gru_backward(
    grad_out: ArrayLike,
    x: ArrayLike,
    h0: ArrayLike,
    weight_ih: ArrayLike,
    weight_hh: ArrayLike,
    out: ArrayLike,
    gates: ArrayLike,
    hidden_n: ArrayLike,
    *,
    grad_hn: ArrayLike | None = None,
    bias: bool = True,
    input_grad: bool = True,
    work: FloatArray | None = None,
    grad_x: FloatArray | None = None,
    grad_h0: FloatArray | None = None,
    grad_weight_ih: FloatArray | None = None,
    grad_weight_hh: FloatArray | None = None,
    grad_bias_ih: FloatArray | None = None,
    grad_bias_hh: FloatArray | None = None,
) -> _Grads:
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
        ins,
        (work, work_shape("gru", T, B, H), dt, "work"),
        (grad_x, (T, B, I) if input_grad else None, dt, "grad_x"),
        (grad_h0, (B, H), dt, "grad_h0"),
        (grad_weight_ih, weight_ih.shape, dt, "grad_weight_ih"),
        (grad_weight_hh, weight_hh.shape, dt, "grad_weight_hh"),
        (grad_bias_ih, (3 * H,) if bias else None, dt, "grad_bias_ih"),
        (grad_bias_hh, (3 * H,) if bias else None, dt, "grad_bias_hh"),
    )
    if B == 0:
        _zero_grads((grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh))
        return grad_x, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh
    return _backend().gru_backward(
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
    )


# ---------------------------------------------------------------------------
# The bound form layers use (see fastnn.ops._plan)

import numpy as _np  # noqa: E402

from . import _plan as _p  # noqa: E402

_nd = _p.ndarray

#: (W_ih, W_hh, b_ih, b_hh), the biases None for a layer without
_Four = tuple[FloatArray, FloatArray, "FloatArray | None", "FloatArray | None"]
#: (backend, parameter arrays, gradient arrays, dtype, I, H, parameter shapes, forward and backward kernels)
_RecurrentBound = tuple[
    Backend,
    _Four,
    _Four,
    "np.dtype[Any]",
    int,
    int,
    "tuple[tuple[int, ...] | None, ...]",
    Callable[..., Any],
    Callable[..., Any],
]


def _is(a: object, shape: tuple[int, ...], dt: np.dtype[Any]) -> bool:
    return type(a) is _nd and a.dtype is dt and a.shape == shape and a.flags.c_contiguous


class RecurrentPlan:
    """The forward and backward kernels of one recurrent layer (RNN, LSTM or GRU), bound to its parameters.

    Parameters
    ----------
    cell : {"rnn", "lstm", "gru"}
    weight_ih, weight_hh : Parameter-like, ``.data`` of shape (G·H, I) and (G·H, H)
    bias_ih, bias_hh : Parameter-like of shape (G·H,), or None
    nonlinearity : {"tanh", "relu"}, for ``"rnn"``

    Notes
    -----
    ``forward`` returns what ``backward`` needs besides the inputs: the
    output (T, B, H), and for the LSTM the cell states and gates, for the
    GRU the gates and hidden projection. Sequences are time-major. The
    parameters are validated when first seen; a call checks identities and
    the shapes and layout of the sequences. Results come from the active
    workspace, or are new arrays.
    """

    __slots__ = ("cell", "weight_ih", "weight_hh", "bias_ih", "bias_hh", "nonlinearity", "_bound")

    cell: Cell
    weight_ih: ParamLike
    weight_hh: ParamLike
    bias_ih: ParamLike | None
    bias_hh: ParamLike | None
    nonlinearity: Nonlinearity
    _bound: _RecurrentBound | None

    def __init__(
        self,
        cell: Cell,
        weight_ih: ParamLike,
        weight_hh: ParamLike,
        bias_ih: ParamLike | None = None,
        bias_hh: ParamLike | None = None,
        nonlinearity: Nonlinearity = "tanh",
    ) -> None:
        self.cell = _v.choice(cell, "cell", tuple(_GATES))
        if (bias_ih is None) != (bias_hh is None):
            raise ValueError("give both biases or neither")
        self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh = weight_ih, weight_hh, bias_ih, bias_hh
        self.nonlinearity = _v.choice(nonlinearity, "nonlinearity", RNN_NONLINEARITIES)
        self._bound = None

    def _params(self) -> _Four:
        b_ih, b_hh = self.bias_ih, self.bias_hh  # both or neither (see __init__)
        if b_ih is None:
            return self.weight_ih.data, self.weight_hh.data, None, None
        return self.weight_ih.data, self.weight_hh.data, b_ih.data, None if b_hh is None else b_hh.data

    def _grads(self) -> _Four:
        b_ih, b_hh = self.bias_ih, self.bias_hh
        if b_ih is None:
            return self.weight_ih.grad, self.weight_hh.grad, None, None
        return self.weight_ih.grad, self.weight_hh.grad, b_ih.grad, None if b_hh is None else b_hh.grad

    def _bind(self) -> _RecurrentBound:
        cell = self.cell
        w_ih = _p.check_param(self.weight_ih, "weight_ih", 2)
        _p.check_param(self.weight_hh, "weight_hh", 2)
        params = [self.weight_ih, self.weight_hh]
        if self.bias_ih is not None:
            if self.bias_hh is None:
                raise ValueError("give both biases or neither")
            params += [self.bias_ih, self.bias_hh]
            for p, name in ((self.bias_ih, "bias_ih"), (self.bias_hh, "bias_hh")):
                _p.check_param(p, name, 1)
        probe = _np.empty((1, 1, w_ih.shape[1] if w_ih.ndim == 2 else 0), w_ih.dtype)
        data = self._params()
        # the full checks of the ops, once: shapes of every parameter against each other
        _, _, _, _, _, (_, _, I, H) = _seq_args(cell, probe, *data)
        grads = tuple(_p.check_grad(p, n) for p, n in zip(params, ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))
        grads4 = cast(_Four, grads + (None,) * (4 - len(grads)))  # 2 or 4 gradients, padded to 4
        _p.check_disjoint(cell, *data, *grads4)
        backend = _p.current()
        bound = (
            backend,
            data,
            grads4,
            w_ih.dtype,
            I,
            H,
            tuple(a.shape if a is not None else None for a in data),
            getattr(backend, cell + "_forward"),
            getattr(backend, cell + "_backward"),
        )
        self._bound = bound
        return bound

    def _check(self, with_grads: bool = False) -> _RecurrentBound:
        data = self._params()
        k = self._bound
        if (
            k is None
            or k[0] is not _p.current()
            or any(a is not b for a, b in zip(data, k[1]))
            or (with_grads and any(a is not b for a, b in zip(self._grads(), k[2])))
        ):
            k = self._bind()
        for a, s in zip(data, k[6]):
            if a is not None and a.shape != s:
                k = self._bind()
        return k

    def forward(
        self, x: FloatArray, h0: FloatArray, c0: FloatArray | None = None
    ) -> FloatArray | tuple[FloatArray, FloatArray, FloatArray]:
        """Run the sequence ``x`` (T, B, I) from ``h0`` (and ``c0``) of shape (B, H).

        Returns
        -------
        rnn: out; lstm: (out, cell, gates); gru: (out, gates, hidden_n)
        """
        k = self._check()
        dt, I, H = k[3], k[4], k[5]
        cell = self.cell
        fast = (
            type(x) is _nd
            and x.dtype is dt
            and x.flags.c_contiguous
            and x.ndim == 3
            and x.shape[2] == I
            and x.shape[0] > 0
            and x.shape[1] > 0
        )
        if fast:
            T, B = x.shape[0], x.shape[1]
            fast = _is(h0, (B, H), dt) and (cell != "lstm" or _is(c0, (B, H), dt))
        w_ih, w_hh, b_ih, b_hh = k[1]
        if not fast:
            if cell == "rnn":
                return rnn_forward(x, h0, w_ih, w_hh, b_ih, b_hh, self.nonlinearity)
            if cell == "lstm":
                if c0 is None:
                    raise TypeError("the LSTM needs the initial cell state c0")
                return lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh)
            return gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh)
        out = _p.output(self, "out", (T, B, H), dt, x, h0, c0)
        if cell == "rnn":
            return k[7](x, h0, w_ih, w_hh, b_ih, b_hh, self.nonlinearity, out)
        if cell == "lstm":
            return k[7](
                x,
                h0,
                c0,
                w_ih,
                w_hh,
                b_ih,
                b_hh,
                out,
                _p.output(self, "cell", (T, B, H), dt, x, h0, c0),
                _p.output(self, "gates", (T, B, 4 * H), dt, x, h0, c0),
            )
        return k[7](
            x,
            h0,
            w_ih,
            w_hh,
            b_ih,
            b_hh,
            out,
            _p.output(self, "gates", (T, B, 3 * H), dt, x, h0),
            _p.output(self, "hidden_n", (T, B, H), dt, x, h0),
        )

    def backward(
        self,
        grad_out: FloatArray,
        x: FloatArray,
        h0: FloatArray,
        saved: FloatArray | tuple[FloatArray, FloatArray, FloatArray],
        c0: FloatArray | None = None,
        *,
        grad_hn: FloatArray | None = None,
        grad_cn: FloatArray | None = None,
        input_grad: bool = True,
        accumulate: bool = False,
    ) -> tuple[FloatArray | None, ...]:
        """BPTT: writes the parameter gradients; returns ``(grad_x or None, grad_h0[, grad_c0])``.

        Parameters
        ----------
        grad_out : ndarray (T, B, H), dL/d(out)
        x, h0, c0 : the forward inputs
        saved : what ``forward`` returned
        grad_hn, grad_cn : ndarray (B, H), optional
            Gradients of the final states from elsewhere.
        accumulate : bool
            Add the parameter gradients instead of overwriting them.
        """
        k = self._check(with_grads=True)
        dt, I, H = k[3], k[4], k[5]
        cell = self.cell
        w_ih, w_hh, b_ih, b_hh = k[1]
        grads: tuple[FloatArray | None, ...] = k[2]
        if accumulate:
            grads = tuple(None if g is None else _p.output(self, f"acc{i}", g.shape, dt) for i, g in enumerate(grads))
        # what forward returned: the output alone for the RNN, else (out, two saved arrays)
        extra: tuple[FloatArray, ...]
        if cell == "rnn":
            out, extra = cast(FloatArray, saved), cast("tuple[FloatArray, ...]", ())
        else:
            triple = cast("tuple[FloatArray, FloatArray, FloatArray]", saved)
            out, extra = triple[0], triple[1:]
        fast = (
            type(x) is _nd
            and x.dtype is dt
            and x.flags.c_contiguous
            and x.ndim == 3
            and x.shape[2] == I
            and x.shape[0] > 0
            and x.shape[1] > 0
        )
        if fast:
            T, B = x.shape[0], x.shape[1]
            tbh, bh = (T, B, H), (B, H)
            fast = (
                _is(grad_out, tbh, dt)
                and _is(h0, bh, dt)
                and _is(out, tbh, dt)
                and (grad_hn is None or _is(grad_hn, bh, dt))
            )
            if cell == "lstm":
                fast = (
                    fast
                    and _is(c0, bh, dt)
                    and _is(extra[0], tbh, dt)
                    and _is(extra[1], (T, B, 4 * H), dt)
                    and (grad_cn is None or _is(grad_cn, bh, dt))
                )
            elif cell == "gru":
                fast = fast and _is(extra[0], (T, B, 3 * H), dt) and _is(extra[1], tbh, dt)
        if fast:
            ins = (grad_out, grad_hn, grad_cn)
            work = _p.output(self, "work", work_shape(cell, T, B, H), dt, *ins)
            gx = _p.output(self, "grad_x", (T, B, I), dt, *ins) if input_grad else None
            gh0 = _p.output(self, "grad_h0", (B, H), dt, *ins)
            if cell == "rnn":
                k[8](grad_out, grad_hn, x, h0, w_ih, w_hh, out, self.nonlinearity, work, gx, gh0, *grads)
                result: tuple[FloatArray | None, ...] = (gx, gh0)
            elif cell == "lstm":
                gc0 = _p.output(self, "grad_c0", (B, H), dt, *ins)
                k[8](
                    grad_out,
                    grad_hn,
                    grad_cn,
                    x,
                    h0,
                    c0,
                    w_ih,
                    w_hh,
                    out,
                    extra[0],
                    extra[1],
                    work,
                    gx,
                    gh0,
                    gc0,
                    *grads,
                )
                result = (gx, gh0, gc0)
            else:
                k[8](grad_out, grad_hn, x, h0, w_ih, w_hh, out, extra[0], extra[1], work, gx, gh0, *grads)
                result = (gx, gh0)
        else:
            named: dict[str, Any] = dict(
                bias=b_ih is not None,
                input_grad=input_grad,
                grad_weight_ih=grads[0],
                grad_weight_hh=grads[1],
                grad_bias_ih=grads[2],
                grad_bias_hh=grads[3],
            )
            r: tuple[FloatArray | None, ...]
            if cell == "rnn":
                r = rnn_backward(grad_out, x, h0, w_ih, w_hh, out, self.nonlinearity, grad_hn=grad_hn, **named)
                result = r[:2]
            elif cell == "lstm":
                if c0 is None:
                    raise TypeError("the LSTM needs the initial cell state c0")
                r = lstm_backward(
                    grad_out, x, h0, c0, w_ih, w_hh, out, extra[0], extra[1], grad_hn=grad_hn, grad_cn=grad_cn, **named
                )
                result = r[:3]
            else:
                r = gru_backward(grad_out, x, h0, w_ih, w_hh, out, extra[0], extra[1], grad_hn=grad_hn, **named)
                result = r[:2]
        if accumulate:
            for g, tmp in zip(k[2], grads):
                if g is not None and tmp is not None:  # tmp is g's accumulation buffer: None together
                    _np.add(g, tmp, out=g)
        return result
