"""Recurrent layers: :class:`RNN`, :class:`LSTM`, :class:`GRU` and :class:`LastTimeStep`.

Single-layer, unidirectional, with PyTorch's parameter names, shapes, gate
order and default initialisation, so that weights move between the two with
``load_state_dict``::

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

For many-to-one models, :class:`LastTimeStep` picks ``output[-1]`` so that a
recurrent layer can feed a Linear layer inside ``Sequential``.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _validation as _v, ops
from ..grad_mode import _enabled as _grad_enabled
from ..workspace import out_buffer
from . import init as _init
from .module import Module, Parameter, register_module

__all__ = ["RNN", "LSTM", "GRU", "LastTimeStep"]


class _RecurrentBase(Module):
    """Shared machinery of RNN, LSTM and GRU (parameters, shapes, state handling)."""

    _cell = "rnn"
    _gates = 1
    _name = "RNN"

    def __init__(self, input_size, hidden_size, bias=True, batch_first=False, dtype=np.float32,
                 return_state=False, rng=None, nonlinearity="tanh"):
        super().__init__()
        self.input_size = _v.positive_int(input_size, "input_size")
        self.hidden_size = _v.positive_int(hidden_size, "hidden_size")
        dtype = _v.strict_float_dtype(dtype)
        self.bias = _v.strict_bool(bias, "bias")
        self.batch_first = _v.strict_bool(batch_first, "batch_first")
        self.return_state = _v.strict_bool(return_state, "return_state")
        self.nonlinearity = _v.choice(nonlinearity, "nonlinearity", ops.RNN_NONLINEARITIES)
        G, H, I = self._gates, self.hidden_size, self.input_size
        self.weight_ih_l0 = Parameter(np.empty((G * H, I), dtype))
        self.weight_hh_l0 = Parameter(np.empty((G * H, H), dtype))
        if self.bias:
            self.bias_ih_l0 = Parameter(np.empty(G * H, dtype))
            self.bias_hh_l0 = Parameter(np.empty(G * H, dtype))
        else:
            self.bias_ih_l0 = None
            self.bias_hh_l0 = None
        self.reset_parameters(rng)
        self.h_n = None
        self.grad_h0 = None
        self._reset_transient()

    _transient = ("_plan",)

    def _reset_transient(self):
        self.__dict__["_plan"] = ops.RecurrentPlan(self._cell, self.weight_ih_l0, self.weight_hh_l0,
                                                   self.bias_ih_l0, self.bias_hh_l0, self.nonlinearity)
        self.__dict__["_ctx"] = None

    def reset_parameters(self, rng=None):
        """PyTorch's initialisation: every parameter uniform in ±1/sqrt(hidden_size).

        ``rng``: a Generator or seed (default: the generator of :func:`fastnn.nn.init.manual_seed`).
        """
        rng = _init.get_rng(rng)
        k = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            _init.uniform_(p.data, -k, k, rng)

    # -- helpers ------------------------------------------------------------
    def _input(self, x):
        """x time-major (T, B, I): checked here for a helpful message, converted only for batch_first."""
        if type(x) is not np.ndarray:
            x = np.asarray(x)
        layout = "(batch, time, features)" if self.batch_first else "(time, batch, features)"
        if x.ndim != 3:
            raise ValueError(f"{self._name}: expected a 3-D input {layout} with {self.input_size} features, "
                             f"got shape {x.shape}")
        if x.shape[2] != self.input_size:
            raise ValueError(f"{self._name}: input has {x.shape[2]} features (shape {x.shape}) but the layer "
                             f"was built with input_size={self.input_size}")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"{self._name}: input of shape {x.shape} has no time steps or no samples")
        if x.dtype != self.weight_ih_l0.data.dtype:
            raise self._input_error(x, TypeError(f"{self._name}: input dtype {x.dtype}"))
        if self.batch_first:
            x = np.ascontiguousarray(x.transpose(1, 0, 2))
        return x

    def _state(self, s, name, B):
        """An initial state, or a gradient of the final state: (1, B, H) or (B, H) -> (B, H)."""
        H = self.hidden_size
        s = np.asarray(s)
        if s.shape == (1, B, H):
            s = s[0]
        elif s.shape != (B, H):
            raise ValueError(f"{self._name}: {name} must have shape (1, {B}, {H}) (num_layers, batch, hidden) "
                             f"or ({B}, {H}), got shape {s.shape}")
        return s

    def _zeros(self, name, B):
        z = out_buffer(self, name, (B, self.hidden_size), self.weight_ih_l0.data.dtype)
        z.fill(0)
        return z

    def _output(self, out):
        """The output as the caller sees it (batch-first copy when asked)."""
        return np.ascontiguousarray(out.transpose(1, 0, 2)) if self.batch_first else out

    def _grad_output(self, grad_output, T, B):
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

    def _grad_states(self, grad_state, B):
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

    def _initial(self, hx, B):
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
    def forward(self, x, hx=None):
        """Run the sequence ``x`` (T, B, I) from ``hx`` (zeros if None); return every h_t."""
        x = self._input(x)
        B = x.shape[1]
        h0, c0 = self._initial(hx, B)
        saved = self._plan.forward(x, h0, c0)
        out = saved if self._cell == "rnn" else saved[0]
        if _grad_enabled.get():
            self.__dict__["_ctx"] = (x, h0, c0, saved)
        self.h_n = out[-1][None]
        y = self._output(out)
        if self._cell == "lstm":
            self.c_n = saved[1][-1][None]
            return (y, (self.h_n, self.c_n)) if self.return_state else y
        return (y, self.h_n) if self.return_state else y

    def backward(self, grad_output, *, input_grad=True, accumulate=False, grad_state=None):
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
        x, h0, c0, saved = self._saved()
        T, B, _ = x.shape
        g = self._grad_output(grad_output, T, B)
        ghn, gcn = self._grad_states(grad_state, B)
        result = self._plan.backward(g, x, h0, saved, c0, grad_hn=ghn, grad_cn=gcn, input_grad=input_grad,
                                     accumulate=accumulate)
        self.grad_h0 = result[1][None]
        if self._cell == "lstm":
            self.grad_c0 = result[2][None]
        return None if result[0] is None else self._output(result[0])

    # -- config -------------------------------------------------------------
    def get_config(self) -> dict:
        return dict(input_size=self.input_size, hidden_size=self.hidden_size, bias=self.bias,
                    batch_first=self.batch_first, dtype=self.weight_ih_l0.data.dtype.name,
                    return_state=self.return_state)

    @classmethod
    def parameters_from_config(cls, config, children=()):
        """``[(name, shape, dtype name)]`` that ``cls(**config)`` creates, config checked (see Module)."""
        c = _v.layer_config(config, cls._name, ("input_size", "hidden_size", "bias", "batch_first", "dtype",
                                                "return_state"), children)
        i, h = _v.positive_int(c["input_size"], "input_size"), _v.positive_int(c["hidden_size"], "hidden_size")
        _v.strict_bool(c["batch_first"], "batch_first"), _v.strict_bool(c["return_state"], "return_state")
        dt, g = _v.strict_float_dtype(c["dtype"]).name, cls._gates * h
        weights = [("weight_ih_l0", (g, i), dt), ("weight_hh_l0", (g, h), dt)]
        return weights + ([("bias_ih_l0", (g,), dt), ("bias_hh_l0", (g,), dt)] if _v.strict_bool(c["bias"], "bias")
                          else [])

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

    def __init__(self, input_size, hidden_size, nonlinearity="tanh", bias=True, batch_first=False,
                 dtype=np.float32, return_state=False, rng=None):
        super().__init__(input_size, hidden_size, bias, batch_first, dtype, return_state, rng, nonlinearity)

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg["nonlinearity"] = self.nonlinearity
        return cfg

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + (", nonlinearity='relu'" if self.nonlinearity == "relu" else "")

    @classmethod
    def parameters_from_config(cls, config, children=()):
        """As the other recurrent layers, plus ``nonlinearity`` (see Module)."""
        c = _v.layer_config(config, "RNN", ("input_size", "hidden_size", "nonlinearity", "bias", "batch_first",
                                            "dtype", "return_state"), children)
        _v.str_choice(c["nonlinearity"], "nonlinearity", ops.RNN_NONLINEARITIES)
        return super().parameters_from_config({k: v for k, v in c.items() if k != "nonlinearity"}, children)


@register_module
class LSTM(_RecurrentBase):
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

    def __init__(self, input_size, hidden_size, bias=True, batch_first=False, dtype=np.float32,
                 return_state=False, rng=None):
        super().__init__(input_size, hidden_size, bias, batch_first, dtype, return_state, rng)
        self.c_n = None
        self.grad_c0 = None


@register_module
class GRU(_RecurrentBase):
    """Gated recurrent unit layer (PyTorch's equations, gate order r, z, n).

    ``n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))``, ``h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}``.
    Parameters and attributes as :class:`RNN` (without ``nonlinearity``); the
    weights are ``weight_ih_l0`` (3H, I), ``weight_hh_l0`` (3H, H), biases (3H,).
    """

    _cell = "gru"
    _gates = 3
    _name = "GRU"

    def __init__(self, input_size, hidden_size, bias=True, batch_first=False, dtype=np.float32,
                 return_state=False, rng=None):
        super().__init__(input_size, hidden_size, bias, batch_first, dtype, return_state, rng)


@register_module
class LastTimeStep(Module):
    """Pick the last time step of a sequence: (T, B, H) -> (B, H).

    For many-to-one models: ``Sequential(RNN(I, H), LastTimeStep(), Linear(H, O))``.

    Parameters
    ----------
    batch_first : bool, default False
        Input as (B, T, H) instead of (T, B, H) (set it as on the RNN before it).
    """

    def __init__(self, batch_first=False):
        super().__init__()
        self.batch_first = _v.strict_bool(batch_first, "batch_first")
        self._reset_transient()

    def forward(self, x):
        x = np.asarray(x)
        if x.ndim != 3:
            layout = "(batch, time, features)" if self.batch_first else "(time, batch, features)"
            raise ValueError(f"LastTimeStep: expected a 3-D sequence {layout}, got shape {x.shape}")
        if x.shape[1 if self.batch_first else 0] == 0:
            raise ValueError(f"LastTimeStep: the sequence of shape {x.shape} has no time steps")
        if _grad_enabled.get():
            self.__dict__["_ctx"] = (x.shape, x.dtype)
        return np.ascontiguousarray(x[:, -1] if self.batch_first else x[-1])

    def backward(self, grad_output, *, input_grad=True, accumulate=False):
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

    def get_config(self) -> dict:
        return dict(batch_first=self.batch_first)

    def extra_repr(self) -> str:
        return "batch_first=True" if self.batch_first else ""

    @classmethod
    def parameters_from_config(cls, config, children=()):
        """No parameters; checks ``batch_first`` (see Module)."""
        cls(**_v.layer_config(config, "LastTimeStep", ("batch_first",), children))
        return []
