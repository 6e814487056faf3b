"""Recurrent kernels: RNN, LSTM and GRU over whole sequences (see the reference for the math).

Every op checks its arguments, allocates what was not given, and calls the
kernel of the same name on the active backend. Sequences are time-major:
``x`` of shape (T, B, I), hidden states (T, B, H). An empty batch (B = 0)
gives empty results and zero weight gradients, as in PyTorch; an empty
sequence (T = 0) is an error. Output buffers must not overlap the inputs or
each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, NamedTuple, cast

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
    "recurrent_forward_pair",
    "recurrent_backward_pair",
]

Nonlinearity = Literal["tanh", "relu"]
Cell = Literal["rnn", "lstm", "gru"]

RNN_NONLINEARITIES: tuple[Nonlinearity, ...] = ("tanh", "relu")


class _CellSpec(NamedTuple):
    """What tells the three cells apart in the ops; everything else is one code path."""

    gates: int  # G: the weights have G·H rows
    work: int  # width of the backward workspace, in units of H
    states: tuple[str, ...]  # the initial states, each (B, H); the kernels take them after x
    grads: tuple[str, ...]  # their gradients
    finals: tuple[str, ...]  # the gradients of the final states, one per state
    saved: tuple[tuple[str, int], ...]  # forward's results (name, width in units of H), read again by backward


_CELLS: dict[str, _CellSpec] = {
    "rnn": _CellSpec(1, 1, ("h0",), ("grad_h0",), ("grad_hn",), (("out", 1),)),
    "lstm": _CellSpec(
        4, 4, ("h0", "c0"), ("grad_h0", "grad_c0"), ("grad_hn", "grad_cn"), (("out", 1), ("cell", 1), ("gates", 4))
    ),
    "gru": _CellSpec(3, 6, ("h0",), ("grad_h0",), ("grad_hn",), (("out", 1), ("gates", 3), ("hidden_n", 1))),
}

#: (grad_x or None, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih or None, grad_bias_hh or None)
_Grads = tuple["FloatArray | None", FloatArray, FloatArray, FloatArray, "FloatArray | None", "FloatArray | None"]
#: the LSTM's: grad_c0 after grad_h0
_LstmGrads = tuple[
    "FloatArray | None", FloatArray, FloatArray, FloatArray, FloatArray, "FloatArray | None", "FloatArray | None"
]
#: the output spec of :func:`_outputs`: (buffer, shape or None for none, dtype, name)
_Spec = tuple["FloatArray | None", "tuple[int, ...] | None", "np.dtype[Any]", str]
#: what the backward ops read: (grad_out, x, states, weight_ih, weight_hh, forward's results, final-state gradients)
_BackwardInputs = tuple[
    ArrayLike, ArrayLike, "tuple[ArrayLike, ...]", ArrayLike, ArrayLike, "tuple[ArrayLike, ...]", "tuple[Any, ...]"
]


def _array(a: ArrayLike, name: str, dtype: np.dtype[Any], shape: tuple[int, ...], cell: str) -> FloatArray:
    """``a`` checked: a float array of ``dtype`` and ``shape``, a state (B, H) or a sequence (T, B, ·)."""
    a = _v.as_float_array(a, name)
    _v.same_dtype(dtype, a, name)
    if a.shape != shape:
        # a state's message names its axes; a sequence's gives the shape alone
        rule = f" but must be (batch, hidden) = {shape}" if len(shape) == 2 else f", expected {shape}"
        raise ValueError(f"{cell}: {name} has shape {a.shape}{rule}")
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
    G = _CELLS[cell].gates
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
    # the all-steps products have T·B rows and up to work·H columns (the GRU's workspace)
    _v.dims_fit(cell, **{"time steps·batch": T * B, "input size": I, "gates·hidden size": _CELLS[cell].work * H})
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


def work_shape(cell: str, T: int, B: int, H: int) -> tuple[int, int, int]:
    """Shape of the backward workspace of ``cell`` ("rnn", "lstm", "gru")."""
    return (T, B, _CELLS[cell].work * H)


def _forward(
    cell: str,
    x: ArrayLike,
    states: tuple[ArrayLike, ...],
    params: tuple[ArrayLike, ArrayLike, ArrayLike | None, ArrayLike | None],
    options: tuple[Any, ...],
    outs: tuple[FloatArray | None, ...],
) -> Any:
    """The forward op of every cell: check, allocate the results, run the backend's ``<cell>_forward``.

    ``options`` (the RNN's nonlinearity) go between the parameters and the results in the kernel's
    arguments. Returns what the kernel returns: the RNN's output, the others' tuple of results.
    """
    x, weight_ih, weight_hh, bias_ih, bias_hh, (T, B, I, H) = _seq_args(cell, x, *params)
    if cell == "rnn":
        _v.choice(options[0], "nonlinearity", RNN_NONLINEARITIES)
    spec = _CELLS[cell]
    initial = [_array(s, name, x.dtype, (B, H), cell) for s, name in zip(states, spec.states)]
    ins = (x, *initial, weight_ih, weight_hh, bias_ih, bias_hh)
    results = _outputs(ins, *[(buf, (T, B, k * H), x.dtype, name) for buf, (name, k) in zip(outs, spec.saved)])
    if B == 0:
        return results[0] if cell == "rnn" else tuple(results)
    kernel = getattr(_backend(), cell + "_forward")
    return kernel(x, *initial, weight_ih, weight_hh, bias_ih, bias_hh, *options, *results)


def _backward(
    cell: str,
    inputs: _BackwardInputs,
    options: tuple[Any, ...],
    bias: bool,
    input_grad: bool,
    buffers: tuple[FloatArray | None, ...],
) -> Any:
    """The backward op of every cell: check, allocate the gradients, run the backend's ``<cell>_backward``.

    ``buffers`` are (work, grad_x, a gradient per initial state, the four parameter gradients). Returns
    (grad_x or None, the initial states' gradients, the parameter gradients, the biases' None without).
    """
    grad_out, x, states, weight_ih, weight_hh, saved, finals = inputs
    x, weight_ih, weight_hh, _, _, (T, B, I, H) = _seq_args(cell, x, weight_ih, weight_hh, None, None)
    if cell == "rnn":
        _v.choice(options[0], "nonlinearity", RNN_NONLINEARITIES)
    spec = _CELLS[cell]
    dt = x.dtype
    bh = (B, H)
    initial = [_array(s, name, dt, bh, cell) for s, name in zip(states, spec.states)]
    kept = [_array(a, name, dt, (T, B, k * H), cell) for a, (name, k) in zip(saved, spec.saved)]
    g_out = _array(grad_out, "grad_out", dt, (T, B, H), cell)
    g_final = [None if g is None else _array(g, name, dt, bh, cell) for g, name in zip(finals, spec.finals)]
    bias_shape = (spec.gates * H,) if bias else None
    grad_x_shape = (T, B, I) if input_grad else None
    shapes = (work_shape(cell, T, B, H), grad_x_shape, *[bh] * len(initial), weight_ih.shape, weight_hh.shape)
    shapes += (bias_shape, bias_shape)
    names = ("work", "grad_x", *spec.grads, "grad_weight_ih", "grad_weight_hh", "grad_bias_ih", "grad_bias_hh")
    ins = (g_out, x, *initial, weight_ih, weight_hh, *kept, *g_final)
    work, grad_x, *grads = _outputs(ins, *zip(buffers, shapes, [dt] * len(names), names))
    if B == 0:
        _zero_grads(grads[-4:])
        return (grad_x, *grads)
    kernel = getattr(_backend(), cell + "_backward")
    return kernel(g_out, *g_final, x, *initial, weight_ih, weight_hh, *kept, *options, work, grad_x, *grads)


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
    params = (weight_ih, weight_hh, bias_ih, bias_hh)
    return _forward("rnn", x, (h0,), params, (nonlinearity,), (out,))


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
    inputs = (grad_out, x, (h0,), weight_ih, weight_hh, (out,), (grad_hn,))
    buffers = (work, grad_x, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh)
    return _backward("rnn", inputs, (nonlinearity,), bias, input_grad, buffers)


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
    params = (weight_ih, weight_hh, bias_ih, bias_hh)
    return _forward("lstm", x, (h0, c0), params, (), (out, cell, gates))


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
    inputs = (grad_out, x, (h0, c0), weight_ih, weight_hh, (out, cell, gates), (grad_hn, grad_cn))
    buffers = (work, grad_x, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh)
    return _backward("lstm", inputs, (), bias, input_grad, buffers)


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
    params = (weight_ih, weight_hh, bias_ih, bias_hh)
    return _forward("gru", x, (h0,), params, (), (out, gates, hidden_n))


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
    inputs = (grad_out, x, (h0,), weight_ih, weight_hh, (out, gates, hidden_n), (grad_hn,))
    buffers = (work, grad_x, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh)
    return _backward("gru", inputs, (), bias, input_grad, buffers)


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


def _are(arrays: Iterable[object], shapes: Iterable[tuple[int, ...]], dt: np.dtype[Any]) -> bool:
    """:func:`_is` for each array and its shape; zip stops at the shorter (a plain loop: this runs at every call)."""
    for a, shape in zip(arrays, shapes):
        if not (type(a) is _nd and a.dtype is dt and a.shape == shape and a.flags.c_contiguous):
            return False
    return True


def _is_sequence(x: object, dt: np.dtype[Any], I: int) -> bool:
    """Whether ``x`` is a non-empty (T, B, I) sequence the kernels can take as it is."""
    return (
        type(x) is _nd
        and x.dtype is dt
        and x.flags.c_contiguous
        and x.ndim == 3
        and x.shape[2] == I
        and x.shape[0] > 0
        and x.shape[1] > 0
    )


def _initial_states(cell: str, h0: FloatArray, c0: FloatArray | None) -> tuple[FloatArray, ...]:
    """The states the kernels of ``cell`` start from: (h0,), or (h0, c0) for the LSTM."""
    if cell != "lstm":
        return (h0,)
    if c0 is None:
        raise TypeError("the LSTM needs the initial cell state c0")
    return (h0, c0)


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
        self.cell = _v.choice(cell, "cell", tuple(_CELLS))
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
        call = self._forward_call(x, h0, c0)
        if call is None:
            states = _initial_states(self.cell, h0, c0)
            options = (self.nonlinearity,) if self.cell == "rnn" else ()
            return _forward(self.cell, x, states, self._params(), options, (None,) * len(_CELLS[self.cell].saved))
        return call[0](*call[1])

    def _forward_call(self, x: FloatArray, h0: FloatArray, c0: FloatArray | None) -> tuple[Any, tuple[Any, ...]] | None:
        """(bound kernel, its arguments) for :meth:`forward`, or None where the op's full checks must run."""
        k = self._check()
        dt, I, H = k[3], k[4], k[5]
        cell = self.cell
        states = _initial_states(cell, h0, c0)
        if not (_is_sequence(x, dt, I) and _are(states, ((x.shape[1], H),) * 2, dt)):
            return None
        T, B = x.shape[0], x.shape[1]
        options = (self.nonlinearity,) if cell == "rnn" else ()
        outs = [_p.output(self, name, (T, B, w * H), dt, x, h0, c0) for name, w in _CELLS[cell].saved]
        return k[7], (x, *states, *k[1], *options, *outs)

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
        kernel, args, result, grads = self._backward_call(
            grad_out, x, h0, saved, c0, grad_hn, grad_cn, input_grad, accumulate
        )
        if args is not None:
            kernel(*args)
        else:  # the op's full checks
            k = cast(_RecurrentBound, self._bound)  # bound by _backward_call
            cell = self.cell
            states = _initial_states(cell, h0, c0)
            options = (self.nonlinearity,) if cell == "rnn" else ()
            finals = (grad_hn, grad_cn) if cell == "lstm" else (grad_hn,)
            inputs = (grad_out, x, states, k[1][0], k[1][1], _kept(cell, saved), finals)
            buffers = (None, None, *[None] * len(states), *grads)
            result = _backward(cell, inputs, options, k[1][2] is not None, input_grad, buffers)[: 1 + len(states)]
        self._accumulate(grads, accumulate)
        return result

    def _backward_call(
        self,
        grad_out: FloatArray,
        x: FloatArray,
        h0: FloatArray,
        saved: FloatArray | tuple[FloatArray, FloatArray, FloatArray],
        c0: FloatArray | None,
        grad_hn: FloatArray | None,
        grad_cn: FloatArray | None,
        input_grad: bool,
        accumulate: bool,
    ) -> tuple[Any, tuple[Any, ...] | None, tuple[FloatArray | None, ...], tuple[FloatArray | None, ...]]:
        """For :meth:`backward`: (bound kernel, its arguments or None where the op's full checks must
        run, what backward returns, the parameter gradients the kernel writes)."""
        k = self._check(with_grads=True)
        dt, I, H = k[3], k[4], k[5]
        cell = self.cell
        spec = _CELLS[cell]
        w_ih, w_hh, _, _ = k[1]
        grads: tuple[FloatArray | None, ...] = k[2]
        if accumulate:
            grads = tuple(None if g is None else _p.output(self, f"acc{i}", g.shape, dt) for i, g in enumerate(grads))
        states = _initial_states(cell, h0, c0)
        finals = (grad_hn, grad_cn) if cell == "lstm" else (grad_hn,)
        kept = _kept(cell, saved)
        if not _is_sequence(x, dt, I):
            return k[8], None, (), grads
        T, B = x.shape[0], x.shape[1]
        bh = (B, H)
        if not (
            _is(grad_out, (T, B, H), dt)
            and _are(states, (bh, bh), dt)
            and _are(kept, [(T, B, w * H) for _, w in spec.saved], dt)
            and _are([g for g in finals if g is not None], (bh, bh), dt)
        ):
            return k[8], None, (), grads
        ins = (grad_out, grad_hn, grad_cn)
        work = _p.output(self, "work", work_shape(cell, T, B, H), dt, *ins)
        gx = _p.output(self, "grad_x", (T, B, I), dt, *ins) if input_grad else None
        g_states = [_p.output(self, name, (B, H), dt, *ins) for name in spec.grads]
        options = (self.nonlinearity,) if cell == "rnn" else ()
        args = (grad_out, *finals, x, *states, w_ih, w_hh, *kept, *options, work, gx, *g_states, *grads)
        return k[8], args, (gx, *g_states), grads

    def _accumulate(self, grads: tuple[FloatArray | None, ...], accumulate: bool) -> None:
        """Add the accumulation buffers ``grads`` into the parameters' gradients (with ``accumulate``)."""
        if accumulate:
            k = cast(_RecurrentBound, self._bound)
            for g, tmp in zip(k[2], grads):
                if g is not None and tmp is not None:  # tmp is g's accumulation buffer: None together
                    _np.add(g, tmp, out=g)


def _kept(cell: str, saved: FloatArray | tuple[FloatArray, ...]) -> tuple[FloatArray, ...]:
    """What forward returned, as a tuple: the output alone for the RNN, else (out, two saved arrays)."""
    return (cast(FloatArray, saved),) if cell == "rnn" else cast("tuple[FloatArray, ...]", saved)


def _pair_kernel(plans: Sequence[RecurrentPlan]) -> Callable[..., Any] | None:
    """The backend's ``recurrent_pair`` when both plans are bound to it (same cell), else None."""
    a, b = plans
    ka, kb = a._bound, b._bound
    if ka is None or kb is None or ka[0] is not kb[0] or a.cell != b.cell or ka[3] is not kb[3]:
        return None
    return cast("Callable[..., Any]", ka[0].recurrent_pair)


def recurrent_forward_pair(
    plans: Sequence[RecurrentPlan], inputs: Sequence[tuple[FloatArray, FloatArray, FloatArray | None]]
) -> list[Any]:
    """:meth:`RecurrentPlan.forward` of two plans of one cell on their own ``(x, h0, c0)``.

    The calls are independent (the two directions of a bidirectional layer):
    the backend runs them at once where it can (``recurrent_pair``). Returns
    both results, each what ``forward`` returns.
    """
    calls = [p._forward_call(*a) for p, a in zip(plans, inputs)]
    c0, c1 = calls
    pair = _pair_kernel(plans)
    if c0 is None or c1 is None or pair is None:
        return [p.forward(*a) for p, a in zip(plans, inputs)]
    return list(pair(plans[0].cell + "_forward", c0[1], c1[1]))


#: one backward call of :func:`recurrent_backward_pair`: (grad_out, x, h0, saved, c0, grad_hn, grad_cn)
_BackwardCall = tuple[
    FloatArray, FloatArray, FloatArray, Any, "FloatArray | None", "FloatArray | None", "FloatArray | None"
]


def recurrent_backward_pair(
    plans: Sequence[RecurrentPlan],
    inputs: Sequence[_BackwardCall],
    *,
    input_grad: bool = True,
    accumulate: bool = False,
) -> list[tuple[FloatArray | None, ...]]:
    """:meth:`RecurrentPlan.backward` of two plans of one cell, each on its
    ``(grad_out, x, h0, saved, c0, grad_hn, grad_cn)``; run at once where the
    backend can (see :func:`recurrent_forward_pair`). Returns both results."""
    calls = [p._backward_call(*a, input_grad, accumulate) for p, a in zip(plans, inputs)]
    pair = _pair_kernel(plans)
    if pair is None or any(c[1] is None for c in calls):
        results = []
        for p, (g, x, h0, saved, c0, ghn, gcn) in zip(plans, inputs):
            results.append(
                p.backward(g, x, h0, saved, c0, grad_hn=ghn, grad_cn=gcn, input_grad=input_grad, accumulate=accumulate)
            )
        return results
    pair(plans[0].cell + "_backward", calls[0][1], calls[1][1])
    for p, c in zip(plans, calls):
        p._accumulate(c[3], accumulate)
    return [c[2] for c in calls]
