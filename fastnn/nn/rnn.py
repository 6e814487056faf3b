"""Recurrent layers: :class:`RNN`, :class:`LSTM`, :class:`GRU` and :class:`LastTimeStep`.

PyTorch's parameter names, shapes, gate order and default initialisation,
so that weights move between the two with ``load_state_dict``::

    rnn = nn.RNN(8, 64)                    # weight_ih_l0 (64, 8), weight_hh_l0 (64, 64),
                                           # bias_ih_l0 (64,), bias_hh_l0 (64,)
    out = rnn(x)                           # x (T, B, 8) -> out (T, B, 64), every h_t
    rnn.h_n                                # final state (1, B, 64), as PyTorch returns it
    grad_x = rnn.backward(grad_out)        # BPTT: fills every .grad, returns dL/dx
    rnn.grad_h0                            # dL/dh0 (1, B, 64)

Final state
    After ``forward``, ``layer.h_n`` (and ``layer.c_n`` for the LSTM) hold the
    final state, shaped (1, B, H) like PyTorch's. With ``return_state=True``
    the layer returns ``(output, h_n)`` (LSTM: ``(output, (h_n, c_n))``), as
    PyTorch does; the default returns the output alone, so that the layer fits
    in :class:`~fastnn.nn.Sequential`.
Initial state
    ``forward(x, hx)`` with ``hx`` of shape (1, B, H) or (B, H) (LSTM: a pair
    ``(h0, c0)``); zeros when omitted.
Backward
    ``backward(grad_output, *, input_grad=True, accumulate=False,
    grad_state=None)``: ``grad_output`` is dL/d(output) (or None when only
    the final state feeds the loss); ``grad_state`` is dL/dh_n (LSTM:
    ``(dL/dh_n, dL/dc_n)``, either may be None). Afterwards ``layer.grad_h0``
    (and ``layer.grad_c0``) hold the gradient of the initial state, shaped
    (1, B, H).
Outputs
    ``output``, ``h_n`` and ``c_n`` are new arrays at every call (views of
    one new output array), or buffers of the active :class:`fastnn.Workspace`.

Deep and bidirectional layers
    ``num_layers``, ``bidirectional`` and ``dropout`` (between layers, in
    training mode) as in PyTorch, with its parameter names
    (``weight_ih_l1``, ``weight_hh_l0_reverse`` ...; layer ``l > 0`` takes
    the ``H·num_directions`` outputs of the layer below). The states ``hx``,
    ``h_n``, ``c_n``, ``grad_h0`` and ``grad_c0`` are then
    (num_layers·num_directions, B, H), ordered layer by layer, forward
    direction first. The output is (T, B, H·num_directions): the forward
    direction's states, then the reverse direction's. Every direction runs
    the single-direction kernels; the reverse one on a time-reversed copy of
    its input. The two directions of a layer are independent: the Cython
    backend runs them at once on two threads, one thread each
    (:func:`fastnn.ops.recurrent_forward_pair`), with the bits each has
    alone on one thread (the same at any thread count, except where a
    product goes to BLAS, whose float32 rounding follows its thread count;
    paired, BLAS runs serially on each direction's thread). A single-layer unidirectional layer takes exactly the path it
    always took, and accepts states as (1, B, H) or (B, H) as before.

For many-to-one models, :class:`LastTimeStep` picks ``output[-1]`` so that a
recurrent layer can feed a Linear layer inside ``Sequential``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Collection, Sequence
from typing import Any, ClassVar, cast

import numpy as np

from .. import _validation as _v
from .. import ops
from .._typing import ArrayLike, DTypeLike, FloatArray, NDArray, ParameterSpec, Seed
from ..grad_mode import _enabled as _grad_enabled
from ..ops.rnn import Cell, Nonlinearity
from ..workspace import out_buffer
from . import init as _init
from .module import Module, Parameter, register_module

__all__ = ["RNN", "LSTM", "GRU", "LastTimeStep"]

_DEEP_KEYS = ("num_layers", "dropout", "bidirectional")

#: what a recurrent layer returns: the output, or with ``return_state`` ``(output, h_n)``
#: (the LSTM's: ``(output, (h_n, c_n))``)
_Output = FloatArray | tuple[FloatArray, FloatArray] | tuple[FloatArray, tuple[FloatArray, FloatArray]]
#: what a RecurrentPlan's forward keeps: the hidden states, or (h, c, gates) for the LSTM
_Saved = FloatArray | tuple[FloatArray, FloatArray, FloatArray]
#: an initial state (LSTM: a pair (h0, c0), either may be None), or None for zeros
_State = ArrayLike | Sequence[ArrayLike | None] | None


def _dropout_p(p: float) -> float:
    return _v.scalar(_v.strict_real(p, "dropout"), "dropout", low=0.0, high=1.0)


class _RecurrentBase(Module):
    """Shared machinery of RNN, LSTM and GRU (parameters, shapes, state handling)."""

    _cell: ClassVar[Cell] = "rnn"
    _gates: ClassVar[int] = 1
    _name: ClassVar[str] = "RNN"
    # class defaults: layers pickled before these options existed are single-layer, unidirectional
    num_layers = 1
    dropout = 0.0
    bidirectional = False
    # the first layer's weights (set with setattr, as every layer's): the dtype is read from them
    weight_ih_l0: Parameter
    weight_hh_l0: Parameter
    h_n: FloatArray | None
    grad_h0: FloatArray | None
    c_n: FloatArray | None  # c_n and grad_c0: set on the LSTM only
    grad_c0: FloatArray | None
    _plan: ops.RecurrentPlan
    _plans: list[ops.RecurrentPlan]
    _drops: list[ops.DropoutPlan]

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        nonlinearity: Nonlinearity = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dtype: DTypeLike = np.float32,
        return_state: bool = False,
        rng: Seed = None,
        *,
        num_layers: int = 1,
        dropout: float = 0.0,
        bidirectional: bool = False,
    ) -> None:
        super().__init__()
        self.input_size = _v.positive_int(input_size, "input_size")
        self.hidden_size = _v.positive_int(hidden_size, "hidden_size")
        dt = _v.strict_float_dtype(dtype)
        self.bias = _v.strict_bool(bias, "bias")
        self.batch_first = _v.strict_bool(batch_first, "batch_first")
        self.return_state = _v.strict_bool(return_state, "return_state")
        self.nonlinearity = _v.choice(nonlinearity, "nonlinearity", ops.RNN_NONLINEARITIES)
        self.num_layers = _v.positive_int(num_layers, "num_layers")
        self.dropout = _dropout_p(dropout)
        self.bidirectional = _v.strict_bool(bidirectional, "bidirectional")
        if self.dropout > 0 and self.num_layers == 1:
            warnings.warn(
                f"{self._name}: dropout={self.dropout} acts between layers, so it has no effect with num_layers=1",
                UserWarning,
                stacklevel=2 if self._cell == "rnn" else 3,  # the caller of RNN(...), LSTM(...) or GRU(...)
            )
        G, H = self._gates, self.hidden_size
        for layer in range(self.num_layers):
            I = self.input_size if layer == 0 else H * self.num_directions
            for sfx in self._suffixes(layer):
                setattr(self, "weight_ih" + sfx, Parameter(np.empty((G * H, I), dt)))
                setattr(self, "weight_hh" + sfx, Parameter(np.empty((G * H, H), dt)))
                if self.bias:
                    setattr(self, "bias_ih" + sfx, Parameter(np.empty(G * H, dt)))
                    setattr(self, "bias_hh" + sfx, Parameter(np.empty(G * H, dt)))
                else:
                    setattr(self, "bias_ih" + sfx, None)
                    setattr(self, "bias_hh" + sfx, None)
        self.reset_parameters(rng)
        self.h_n = None
        self.grad_h0 = None
        if self._cell == "lstm":
            self.c_n = None
            self.grad_c0 = None
        self._reset_transient()

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _suffixes(self, layer: int) -> tuple[str, ...]:
        """Parameter name suffixes of one layer, forward direction first (PyTorch's)."""
        return (f"_l{layer}", f"_l{layer}_reverse") if self.bidirectional else (f"_l{layer}",)

    _transient = ("_plan", "_plans", "_drops")

    def _reset_transient(self) -> None:
        plans = [
            ops.RecurrentPlan(
                self._cell,
                getattr(self, "weight_ih" + sfx),
                getattr(self, "weight_hh" + sfx),
                getattr(self, "bias_ih" + sfx),
                getattr(self, "bias_hh" + sfx),
                self.nonlinearity,
            )
            for layer in range(self.num_layers)
            for sfx in self._suffixes(layer)
        ]
        self.__dict__["_plans"] = plans
        self.__dict__["_plan"] = plans[0]
        self.__dict__["_drops"] = [ops.DropoutPlan(self.dropout) for _ in range(self.num_layers - 1)]
        self.__dict__["_ctx"] = None

    @property
    def _simple(self) -> bool:
        return self.num_layers == 1 and not self.bidirectional

    def reset_parameters(self, rng: Seed = None) -> None:
        """PyTorch's initialisation: every parameter uniform in ±1/sqrt(hidden_size).

        ``rng``: a Generator or seed (default: the generator of :func:`fastnn.nn.init.manual_seed`).
        """
        rng = _init.get_rng(rng)
        k = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            _init.uniform_(p.data, -k, k, rng)

    # -- helpers ------------------------------------------------------------
    def _input(self, x: ArrayLike) -> NDArray[Any]:
        """x time-major (T, B, I): checked here for a helpful message, converted only for batch_first."""
        if type(x) is not np.ndarray:
            x = np.asarray(x)
        layout = "(batch, time, features)" if self.batch_first else "(time, batch, features)"
        if x.ndim != 3:
            raise ValueError(
                f"{self._name}: expected a 3-D input {layout} with {self.input_size} features, got shape {x.shape}"
            )
        if x.shape[2] != self.input_size:
            raise ValueError(
                f"{self._name}: input has {x.shape[2]} features (shape {x.shape}) but the layer "
                f"was built with input_size={self.input_size}"
            )
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"{self._name}: input of shape {x.shape} has no time steps or no samples")
        if x.dtype != self.weight_ih_l0.data.dtype:
            raise self._input_error(x, TypeError(f"{self._name}: input dtype {x.dtype}"))
        if self.batch_first:
            x = np.ascontiguousarray(x.transpose(1, 0, 2))
        return x

    def _state(self, s: object, name: str, B: int) -> NDArray[Any]:
        """An initial state, or a gradient of the final state: (1, B, H) or (B, H) -> (B, H)."""
        H = self.hidden_size
        a = np.asarray(s)
        if a.shape == (1, B, H):
            a = a[0]
        elif a.shape != (B, H):
            raise ValueError(
                f"{self._name}: {name} must have shape (1, {B}, {H}) (num_layers, batch, hidden) "
                f"or ({B}, {H}), got shape {a.shape}"
            )
        return a

    def _zeros(self, name: str, B: int) -> FloatArray:
        z = out_buffer(self, name, (B, self.hidden_size), self.weight_ih_l0.data.dtype)
        z.fill(0)
        return z

    def _hidden(self, saved: _Saved) -> FloatArray:
        """The hidden states (T, B, H) in what a plan's forward kept: all of it for the RNN, its first entry else."""
        return cast(FloatArray, saved) if self._cell == "rnn" else saved[0]

    def _output(self, out: FloatArray) -> FloatArray:
        """The output as the caller sees it (batch-first copy when asked)."""
        return np.ascontiguousarray(out.transpose(1, 0, 2)) if self.batch_first else out

    def _grad_output(self, grad_output: ArrayLike | None, T: int, B: int) -> NDArray[Any]:
        H = self.hidden_size
        if grad_output is None:
            g = out_buffer(self, "grad_output_zeros", (T, B, H), self.weight_ih_l0.data.dtype)
            g.fill(0)
            return g
        g = np.asarray(grad_output)
        expected = (B, T, H) if self.batch_first else (T, B, H)
        if g.shape != expected:
            raise ValueError(f"{self._name}: grad_output has shape {g.shape} but the output had shape {expected}")
        if self.batch_first:
            g = np.ascontiguousarray(g.transpose(1, 0, 2))
        return g

    def _grad_states(self, grad_state: object, B: int) -> tuple[NDArray[Any] | None, NDArray[Any] | None]:
        """(dL/dh_n, dL/dc_n) as (B, H) arrays or None."""
        if grad_state is None:
            return None, None
        if self._cell != "lstm":
            return self._state(grad_state, "grad_state", B), None
        if not isinstance(grad_state, (tuple, list)) or len(grad_state) != 2:
            raise ValueError("LSTM: grad_state must be a pair (grad_h_n, grad_c_n); either may be None")
        ghn = None if grad_state[0] is None else self._state(grad_state[0], "grad_h_n", B)
        gcn = None if grad_state[1] is None else self._state(grad_state[1], "grad_c_n", B)
        return ghn, gcn

    def _initial(self, hx: object, B: int) -> tuple[NDArray[Any], NDArray[Any] | None]:
        """(h0, c0) as (B, H) arrays (c0 None except for the LSTM); zeros where not given."""
        if self._cell != "lstm":
            return (self._zeros("h0", B) if hx is None else self._state(hx, "hx", B)), None
        if hx is None:
            return self._zeros("h0", B), self._zeros("c0", B)
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise ValueError("LSTM: the initial state must be a pair (h0, c0)")
        h0 = self._zeros("h0", B) if hx[0] is None else self._state(hx[0], "h0", B)
        c0 = self._zeros("c0", B) if hx[1] is None else self._state(hx[1], "c0", B)
        return h0, c0

    # -- computation ----------------------------------------------------------
    def forward(self, x: ArrayLike, hx: _State = None) -> _Output:
        """Run the sequence ``x`` (T, B, I) from ``hx`` (zeros if None); return every h_t."""
        x = self._input(x)
        if not self._simple:
            return self._deep_forward(x, hx)
        B = x.shape[1]
        h0, c0 = self._initial(hx, B)
        saved = self._plan.forward(x, h0, c0)
        out = self._hidden(saved)
        if _grad_enabled.get():
            self.__dict__["_ctx"] = (x, h0, c0, saved)
        self.h_n = out[-1][None]
        y = self._output(out)
        if self._cell == "lstm":
            self.c_n = saved[1][-1][None]
            return (y, (self.h_n, self.c_n)) if self.return_state else y
        return (y, self.h_n) if self.return_state else y

    def backward(
        self,
        grad_output: ArrayLike | None,
        *,
        input_grad: bool = True,
        accumulate: bool = False,
        grad_state: _State = None,
    ) -> FloatArray | None:
        """BPTT: fill the parameter gradients and ``grad_h0`` (``grad_c0``); return dL/dx (None if not ``input_grad``).

        Parameters
        ----------
        grad_output : ndarray or None
            dL/d(output), shaped like the output; None when only the final
            state feeds the loss.
        input_grad, accumulate : bool
            See :meth:`fastnn.nn.Module.backward`.
        grad_state : ndarray or None (LSTM: a pair, either may be None)
            dL/dh_n (and dL/dc_n), (1, B, H) or (B, H).
        """
        ctx = self._saved()
        if not self._simple:
            return self._deep_backward(ctx, grad_output, grad_state, input_grad, accumulate)
        x, h0, c0, saved = ctx
        T, B, _ = x.shape
        g = self._grad_output(grad_output, T, B)
        ghn, gcn = self._grad_states(grad_state, B)
        result = self._plan.backward(
            g, x, h0, saved, c0, grad_hn=ghn, grad_cn=gcn, input_grad=input_grad, accumulate=accumulate
        )
        # the plan always computes grad_h0 (and the LSTM's grad_c0)
        self.grad_h0 = cast(FloatArray, result[1])[None]
        if self._cell == "lstm":
            self.grad_c0 = cast(FloatArray, result[2])[None]
        return None if result[0] is None else self._output(result[0])

    # -- deep and bidirectional layers -----------------------------------------
    def _stacked(self, s: object, name: str, B: int) -> list[NDArray[Any]]:
        """A stacked state (num_layers·num_directions, B, H), checked, as a list of (B, H) arrays."""
        n, H = self.num_layers * self.num_directions, self.hidden_size
        s = np.asarray(s)
        if s.shape != (n, B, H):
            raise ValueError(
                f"{self._name}: {name} must have shape ({n}, {B}, {H}) (num_layers·num_directions, "
                f"batch, hidden), got shape {s.shape}"
            )
        if s.dtype != self.weight_ih_l0.data.dtype:
            raise TypeError(f"{self._name}: {name} has dtype {s.dtype}, the layer {self.weight_ih_l0.data.dtype}")
        return [np.ascontiguousarray(s[k]) for k in range(n)]

    def _deep_states(self, hx: object, B: int) -> tuple[list[NDArray[Any]], list[NDArray[Any]] | None]:
        """(h0 list, c0 list or None): one (B, H) array per layer and direction."""
        n = self.num_layers * self.num_directions
        lstm = self._cell == "lstm"
        h: object
        c: object
        if hx is None:
            h, c = None, None
        elif lstm:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise ValueError("LSTM: the initial state must be a pair (h0, c0)")
            h, c = hx
        else:
            h, c = hx, None
        h0 = [self._zeros(f"h0_{k}", B) for k in range(n)] if h is None else self._stacked(h, "h0", B)
        if not lstm:
            return h0, None
        c0 = [self._zeros(f"c0_{k}", B) for k in range(n)] if c is None else self._stacked(c, "c0", B)
        return h0, c0

    def _deep_forward(self, x: NDArray[Any], hx: object) -> _Output:
        T, B, _ = x.shape
        H, D, dt = self.hidden_size, self.num_directions, x.dtype
        h0s, c0s = self._deep_states(hx, B)
        drop = self.dropout > 0 and self._is_training()
        keep = _grad_enabled.get()
        ctx, hn, cn = [], [], []
        inp = x
        for layer in range(self.num_layers):
            out = out_buffer(self, f"out{layer}", (T, B, H * D), dt)
            dirs = []
            # the reverse direction reads its input backwards in time: a reversed copy runs the same kernels
            ins = [
                (
                    inp if d == 0 else np.ascontiguousarray(inp[::-1]),
                    h0s[layer * D + d],
                    None if c0s is None else c0s[layer * D + d],
                )
                for d in range(D)
            ]
            plans = self._plans[layer * D : (layer + 1) * D]
            # the two directions are independent: run at once where the backend can
            results = ops.recurrent_forward_pair(plans, ins) if D == 2 else [plans[0].forward(*ins[0])]
            for d, ((xin, _, c0), saved) in enumerate(zip(ins, results)):
                k = layer * D + d
                hs = self._hidden(saved)
                out[:, :, d * H : (d + 1) * H] = hs if d == 0 else hs[::-1]
                hn.append(hs[-1])
                if c0s is not None:
                    cn.append(saved[1][-1])
                dirs.append((xin, h0s[k], c0, saved))
            mask = None
            if drop and layer < self.num_layers - 1:
                out, mask = self._drops[layer].forward(out)
            ctx.append((dirs, mask))
            inp = out
        if keep:
            self.__dict__["_ctx"] = ("deep", x.shape, ctx)
        self.h_n = np.stack(hn)
        y = self._output(inp)
        if self._cell == "lstm":
            self.c_n = np.stack(cn)
            return (y, (self.h_n, self.c_n)) if self.return_state else y
        return (y, self.h_n) if self.return_state else y

    def _deep_backward(
        self, ctx: Any, grad_output: ArrayLike | None, grad_state: object, input_grad: bool, accumulate: bool
    ) -> FloatArray | None:
        _, shape, layers = ctx
        T, B, _ = shape
        H, D, n = self.hidden_size, self.num_directions, self.num_layers * self.num_directions
        dt = self.weight_ih_l0.data.dtype
        if grad_output is None:
            g = np.zeros((T, B, H * D), dt)
        else:
            g = np.asarray(grad_output)
            expected = (B, T, H * D) if self.batch_first else (T, B, H * D)
            if g.shape != expected:
                raise ValueError(f"{self._name}: grad_output has shape {g.shape} but the output had shape {expected}")
            if self.batch_first:
                g = g.transpose(1, 0, 2)
        ghn = gcn = None
        if grad_state is not None:
            if self._cell == "lstm":
                if not isinstance(grad_state, (tuple, list)) or len(grad_state) != 2:
                    raise ValueError("LSTM: grad_state must be a pair (grad_h_n, grad_c_n); either may be None")
                ghn = None if grad_state[0] is None else self._stacked(grad_state[0], "grad_h_n", B)
                gcn = None if grad_state[1] is None else self._stacked(grad_state[1], "grad_c_n", B)
            else:
                ghn = self._stacked(grad_state, "grad_state", B)
        # every entry is set below: the plans always compute grad_h0 (and the LSTM's grad_c0)
        gh0 = cast("list[FloatArray]", [None] * n)
        gc0 = cast("list[FloatArray]", [None] * n)
        grad_x = None
        for layer in reversed(range(self.num_layers)):
            dirs, mask = layers[layer]
            if mask is not None:
                g = self._drops[layer].backward(np.ascontiguousarray(g), mask)
            want_x = input_grad or layer > 0
            grad_in = None
            args = []
            for d in range(D):
                k = layer * D + d
                xin, h0, c0, saved = dirs[d]
                gd = g[:, :, d * H : (d + 1) * H]
                gd = np.ascontiguousarray(gd if d == 0 else gd[::-1])
                args.append((gd, xin, h0, saved, c0, None if ghn is None else ghn[k], None if gcn is None else gcn[k]))
            plans = self._plans[layer * D : (layer + 1) * D]
            if D == 2:
                results = ops.recurrent_backward_pair(plans, args, input_grad=want_x, accumulate=accumulate)
            else:
                a = args[0]
                results = [
                    plans[0].backward(*a[:5], grad_hn=a[5], grad_cn=a[6], input_grad=want_x, accumulate=accumulate)
                ]
            for d, result in enumerate(results):
                k = layer * D + d
                gh0[k] = cast(FloatArray, result[1])
                if self._cell == "lstm":
                    gc0[k] = cast(FloatArray, result[2])
            if want_x:  # the directions' dL/dx summed (the reverse one's back in forward time) in one pass
                gxs = [cast(FloatArray, r[0]) for r in results]
                grad_in = np.array(gxs[0]) if D == 1 else np.add(gxs[0], gxs[1][::-1])
            if grad_in is not None:  # None only when the first layer needs no input gradient: the loop ends
                g = grad_in
            grad_x = grad_in
        self.grad_h0 = np.stack(gh0)
        if self._cell == "lstm":
            self.grad_c0 = np.stack(gc0)
        return None if not input_grad or grad_x is None else self._output(grad_x)

    # -- config -------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        cfg = dict(
            input_size=self.input_size,
            hidden_size=self.hidden_size,
            bias=self.bias,
            batch_first=self.batch_first,
            dtype=self.weight_ih_l0.data.dtype.name,
            return_state=self.return_state,
        )
        # only where they differ from the defaults: files of single-layer models keep their old config
        if self.num_layers != 1:
            cfg["num_layers"] = self.num_layers
        if self.dropout != 0.0:
            cfg["dropout"] = self.dropout
        if self.bidirectional:
            cfg["bidirectional"] = True
        return cfg

    @classmethod
    def parameters_from_config(cls, config: dict[str, Any], children: Collection[str] = ()) -> list[ParameterSpec]:
        """``[(name, shape, dtype name)]`` that ``cls(**config)`` creates, config checked (see Module)."""
        optional = tuple(k for k in _DEEP_KEYS if isinstance(config, dict) and k in config)
        c = _v.layer_config(
            config,
            cls._name,
            ("input_size", "hidden_size", "bias", "batch_first", "dtype", "return_state") + optional,
            children,
        )
        i, h = _v.positive_int(c["input_size"], "input_size"), _v.positive_int(c["hidden_size"], "hidden_size")
        _v.strict_bool(c["batch_first"], "batch_first"), _v.strict_bool(c["return_state"], "return_state")
        layers = _v.positive_int(c.get("num_layers", 1), "num_layers")
        if layers > 1024:
            raise ValueError(f"num_layers={layers} is more layers than a model file may describe")
        _dropout_p(c.get("dropout", 0.0))
        dirs = 2 if _v.strict_bool(c.get("bidirectional", False), "bidirectional") else 1
        bias = _v.strict_bool(c["bias"], "bias")
        dt, g = _v.strict_float_dtype(c["dtype"]).name, cls._gates * h
        out: list[ParameterSpec] = []
        for layer in range(layers):
            size = i if layer == 0 else h * dirs
            for sfx in (f"_l{layer}", f"_l{layer}_reverse") if dirs == 2 else (f"_l{layer}",):
                out += [("weight_ih" + sfx, (g, size), dt), ("weight_hh" + sfx, (g, h), dt)]
                if bias:
                    out += [("bias_ih" + sfx, (g,), dt), ("bias_hh" + sfx, (g,), dt)]
        return out

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.weight_ih_l0.data.dtype != np.float32:
            s += f", dtype={self.weight_ih_l0.data.dtype.name}"
        if self.return_state:
            s += ", return_state=True"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s


@register_module
class RNN(_RecurrentBase):
    """Elman recurrent layer, ``h_t = f(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh)``.

    Parameters
    ----------
    input_size : int
        Features of each time step, I.
    hidden_size : int
        Hidden units, H.
    nonlinearity : {"tanh", "relu"}
    bias : bool, default True
    batch_first : bool, default False
        Input and output as (B, T, features) instead of (T, B, features).
    dtype : float32 or float64
    return_state : bool, default False
        Return ``(output, h_n)`` instead of ``output``.
    rng : numpy.random.Generator or int, optional
        Generator for the initial values (default: the one seeded by
        :func:`fastnn.nn.init.manual_seed`).

    Attributes
    ----------
    weight_ih_l0 : Parameter (H, I)
    weight_hh_l0 : Parameter (H, H)
    bias_ih_l0, bias_hh_l0 : Parameter (H,) or None
    h_n : ndarray (1, B, H), the final state after ``forward``
    grad_h0 : ndarray (1, B, H), dL/dh0 after ``backward``
    """

    _cell = "rnn"
    _gates = 1
    _name = "RNN"

    def get_config(self) -> dict[str, Any]:
        cfg = super().get_config()
        cfg["nonlinearity"] = self.nonlinearity
        return cfg

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + (", nonlinearity='relu'" if self.nonlinearity == "relu" else "")

    @classmethod
    def parameters_from_config(cls, config: dict[str, Any], children: Collection[str] = ()) -> list[ParameterSpec]:
        """As the other recurrent layers, plus ``nonlinearity`` (see Module)."""
        optional = tuple(k for k in _DEEP_KEYS if isinstance(config, dict) and k in config)
        c = _v.layer_config(
            config,
            "RNN",
            ("input_size", "hidden_size", "nonlinearity", "bias", "batch_first", "dtype", "return_state") + optional,
            children,
        )
        _v.str_choice(c["nonlinearity"], "nonlinearity", ops.RNN_NONLINEARITIES)
        return super().parameters_from_config({k: v for k, v in c.items() if k != "nonlinearity"}, children)


class _GatedRecurrent(_RecurrentBase):
    """The constructor of the gated layers (LSTM, GRU): the RNN's arguments without ``nonlinearity``."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        batch_first: bool = False,
        dtype: DTypeLike = np.float32,
        return_state: bool = False,
        rng: Seed = None,
        *,
        num_layers: int = 1,
        dropout: float = 0.0,
        bidirectional: bool = False,
    ) -> None:
        super().__init__(
            input_size,
            hidden_size,
            "tanh",  # the default nonlinearity: the gated cells have their own
            bias,
            batch_first,
            dtype,
            return_state,
            rng,
            num_layers=num_layers,
            dropout=dropout,
            bidirectional=bidirectional,
        )


@register_module
class LSTM(_GatedRecurrent):
    """Long short-term memory layer (PyTorch's equations, gate order i, f, g, o).

    Parameters are those of :class:`RNN` without ``nonlinearity``. The
    weights are ``weight_ih_l0`` (4H, I), ``weight_hh_l0`` (4H, H) and the biases
    (4H,). After ``forward``, ``h_n`` and ``c_n`` hold the final states (1, B, H);
    ``forward(x, (h0, c0))`` starts from given states. ``backward(grad_output,
    grad_state=(dh_n, dc_n))`` fills ``grad_h0`` and ``grad_c0``.
    """

    _cell = "lstm"
    _gates = 4
    _name = "LSTM"


@register_module
class GRU(_GatedRecurrent):
    """Gated recurrent unit layer (PyTorch's equations, gate order r, z, n).

    ``n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))``, ``h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}``.
    Parameters and attributes as :class:`RNN` (without ``nonlinearity``); the
    weights are ``weight_ih_l0`` (3H, I), ``weight_hh_l0`` (3H, H), biases (3H,).
    """

    _cell = "gru"
    _gates = 3
    _name = "GRU"


@register_module
class LastTimeStep(Module):
    """Pick the last time step of a sequence: (T, B, H) -> (B, H).

    For many-to-one models: ``Sequential(RNN(I, H), LastTimeStep(), Linear(H, O))``.

    Parameters
    ----------
    batch_first : bool, default False
        Input as (B, T, H) instead of (T, B, H) (set it as on the RNN before it).
    """

    def __init__(self, batch_first: bool = False) -> None:
        super().__init__()
        self.batch_first = _v.strict_bool(batch_first, "batch_first")
        self._reset_transient()

    def forward(self, x: ArrayLike) -> NDArray[Any]:
        x = np.asarray(x)
        if x.ndim != 3:
            layout = "(batch, time, features)" if self.batch_first else "(time, batch, features)"
            raise ValueError(f"LastTimeStep: expected a 3-D sequence {layout}, got shape {x.shape}")
        if x.shape[1 if self.batch_first else 0] == 0:
            raise ValueError(f"LastTimeStep: the sequence of shape {x.shape} has no time steps")
        if _grad_enabled.get():
            self.__dict__["_ctx"] = (x.shape, x.dtype)
        return np.ascontiguousarray(x[:, -1] if self.batch_first else x[-1])

    def backward(self, grad_output: ArrayLike, *, input_grad: bool = True, accumulate: bool = False) -> NDArray[Any]:
        shape, dtype = self._saved()
        g = np.asarray(grad_output)
        expected = (shape[0], shape[2]) if self.batch_first else (shape[1], shape[2])
        if g.shape != expected:
            raise ValueError(f"LastTimeStep: grad_output has shape {g.shape}, expected {expected}")
        grad = out_buffer(self, "grad", shape, g.dtype if g.dtype.kind == "f" else dtype)
        grad.fill(0)
        if self.batch_first:
            grad[:, -1] = g
        else:
            grad[-1] = g
        return grad

    def get_config(self) -> dict[str, Any]:
        return dict(batch_first=self.batch_first)

    def extra_repr(self) -> str:
        return "batch_first=True" if self.batch_first else ""

    @classmethod
    def parameters_from_config(cls, config: dict[str, Any], children: Collection[str] = ()) -> list[ParameterSpec]:
        """No parameters; checks ``batch_first`` (see Module)."""
        cls(**_v.layer_config(config, "LastTimeStep", ("batch_first",), children))
        return []
