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
    ``backward(grad_output, grad_state=None)``: ``grad_output`` is dL/d(output)
    (or None when only the final state feeds the loss); ``grad_state`` is
    dL/dh_n (LSTM: ``(dL/dh_n, dL/dc_n)``, either may be None). Afterwards
    ``layer.grad_h0`` (and ``layer.grad_c0``) hold the gradient of the initial
    state, shaped (1, B, H).

For many-to-one models, :class:`LastTimeStep` picks ``output[-1]`` so that a
recurrent layer can feed a Linear layer inside ``Sequential``.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _validation as _v, ops
from ..backends import current as _current
from . import init as _init
from .module import Module, Parameter, register_module

_ndarray = np.ndarray

__all__ = ["RNN", "LSTM", "GRU", "LastTimeStep"]



class _RecurrentBase(Module):
    """Shared machinery of RNN, LSTM and GRU (parameters, shapes, buffers)."""

    #: backward(..., input_grad=False) skips dL/dx (Sequential uses it for a first layer)
    backward_takes_input_grad = True

    _gates = 1
    _name = "RNN"

    def __init__(self, input_size, hidden_size, bias=True, batch_first=False, dtype=np.float32,
                 return_state=False, rng=None):
        super().__init__()
        self.input_size = _v.positive_int(input_size, "input_size")
        self.hidden_size = _v.positive_int(hidden_size, "hidden_size")
        dtype = _v.strict_float_dtype(dtype)
        self.dtype = dtype
        self.bias = _v.strict_bool(bias, "bias")
        self.batch_first = _v.strict_bool(batch_first, "batch_first")
        self.return_state = _v.strict_bool(return_state, "return_state")
        G, H, I = self._gates, self.hidden_size, self.input_size
        # relocatable: the layer reads .data and .grad afresh at every call.
        self.weight_ih_l0 = Parameter(np.empty((G * H, I), dtype), relocatable=True)
        self.weight_hh_l0 = Parameter(np.empty((G * H, H), dtype), relocatable=True)
        if self.bias:
            self.bias_ih_l0 = Parameter(np.empty(G * H, dtype), relocatable=True)
            self.bias_hh_l0 = Parameter(np.empty(G * H, dtype), relocatable=True)
        else:
            self.bias_ih_l0 = None
            self.bias_hh_l0 = None
        self.reset_parameters(rng)
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_saved", None)
        self.h_n = None
        self.grad_h0 = None

    def reset_parameters(self, rng=None):
        """PyTorch's initialisation: every parameter uniform in ±1/sqrt(hidden_size).

        ``rng``: a Generator or seed (default: the generator of :func:`fastnn.nn.init.manual_seed`).
        """
        rng = _init.get_rng(rng)
        k = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            _init.uniform_(p.data, -k, k, rng)

    # -- helpers ------------------------------------------------------------
    def _buf(self, name, shape):
        """A reusable array: the same one while the shape (and parameter dtype) stays the same."""
        dt = self.weight_ih_l0.data.dtype
        b = self._buffers.get(name)
        if b is None or b.shape != shape or b.dtype != dt:
            b = np.empty(shape, dt)
            self._buffers[name] = b
        return b

    def _input(self, x):
        """Check x and return it time-major (T, B, I), C-contiguous."""
        x = np.asarray(x)
        if x.dtype.kind in "iub":
            x = x.astype(self.weight_ih_l0.data.dtype)   # integer data is converted, floats are not
        layout = "(batch, time, features)" if self.batch_first else "(time, batch, features)"
        if x.ndim != 3:
            raise ValueError(f"{self._name}: expected a 3-D input {layout} with {self.input_size} features, "
                             f"got shape {x.shape}")
        if x.shape[2] != self.input_size:
            raise ValueError(f"{self._name}: input has {x.shape[2]} features (shape {x.shape}) but the layer "
                             f"was built with input_size={self.input_size}")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"{self._name}: input of shape {x.shape} has no time steps or no samples")
        if self.batch_first:
            x = x.transpose(1, 0, 2)
        return np.ascontiguousarray(x)

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
        z = self._buf(name, (B, self.hidden_size))
        z.fill(0)
        return z

    def _output(self, out):
        """The output as the caller sees it (batch-first copy when asked)."""
        return np.ascontiguousarray(out.transpose(1, 0, 2)) if self.batch_first else out

    def _grad_output(self, grad_output, T, B):
        H = self.hidden_size
        if grad_output is None:
            g = self._buf("grad_output_zeros", (T, B, H))
            g.fill(0)
            return g
        g = np.asarray(grad_output)
        expected = (B, T, H) if self.batch_first else (T, B, H)
        if g.shape != expected:
            raise ValueError(f"{self._name}: grad_output has shape {g.shape} but the output had shape {expected}")
        if self.batch_first:
            g = g.transpose(1, 0, 2)
        return np.ascontiguousarray(g)

    def _params(self):
        b_ih = self.bias_ih_l0.data if self.bias else None
        b_hh = self.bias_hh_l0.data if self.bias else None
        return self.weight_ih_l0.data, self.weight_hh_l0.data, b_ih, b_hh

    def _param_grads(self):
        return dict(grad_weight_ih=self.weight_ih_l0.grad, grad_weight_hh=self.weight_hh_l0.grad,
                    grad_bias_ih=self.bias_ih_l0.grad if self.bias else None,
                    grad_bias_hh=self.bias_hh_l0.grad if self.bias else None)

    def _trusted_params(self):
        """(W_ih, W_hh, b_ih, b_hh) when each is a C-contiguous array of the layer's dtype, else None.

        The fast paths below call the backend's kernel directly, skipping the
        checks of ``fastnn.ops`` (a few microseconds a call, a noticeable share
        of a small recurrent step); anything unusual takes the checked path.
        """
        w_ih, w_hh = self.weight_ih_l0.data, self.weight_hh_l0.data
        dt = w_ih.dtype
        params = (w_ih, w_hh, self.bias_ih_l0.data, self.bias_hh_l0.data) if self.bias else (w_ih, w_hh, None, None)
        for a in params:
            if a is not None and (type(a) is not _ndarray or a.dtype is not dt or not a.flags.c_contiguous):
                return None
        return params

    def _trusted_grads(self):
        """The parameter gradient arrays when each can be written in place by a kernel, else None."""
        params = [self.weight_ih_l0, self.weight_hh_l0] + ([self.bias_ih_l0, self.bias_hh_l0] if self.bias else [])
        grads = []
        for p in params:
            g = p.grad
            if type(g) is not _ndarray or g.shape != p.data.shape or g.dtype is not p.data.dtype \
                    or not g.flags.c_contiguous or not g.flags.writeable:
                return None
            grads.append(g)
        return tuple(grads) if self.bias else (grads[0], grads[1], None, None)

    def _fast_input(self, x):
        """x itself when it is already what the kernels take (time-major, C-contiguous, the layer's dtype)."""
        if type(x) is not _ndarray or self.batch_first or x.ndim != 3 or not x.flags.c_contiguous \
                or x.dtype is not self.weight_ih_l0.data.dtype or x.shape[2] != self.input_size \
                or x.shape[0] == 0 or x.shape[1] == 0:
            return None
        return x

    def _fast_grad(self, g, out, buffers):
        """grad_output itself when the kernels can take it as it is (and it is none of the outputs)."""
        if type(g) is not _ndarray or g.shape != out.shape or g.dtype is not out.dtype or not g.flags.c_contiguous:
            return None
        for b in buffers:
            if b is not None and (g is b or g.base is b):
                return None
        return g

    def _need_forward(self):
        if self._saved is None:
            raise RuntimeError(f"{self._name}.backward called before forward")
        return self._saved

    # -- config -------------------------------------------------------------
    def get_config(self) -> dict:
        return dict(input_size=self.input_size, hidden_size=self.hidden_size, bias=self.bias,
                    batch_first=self.batch_first, dtype=self.weight_ih_l0.data.dtype.name,
                    return_state=self.return_state)

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

    _gates = 1
    _name = "RNN"

    def __init__(self, input_size, hidden_size, nonlinearity="tanh", bias=True, batch_first=False,
                 dtype=np.float32, return_state=False, rng=None):
        if not isinstance(nonlinearity, str) or nonlinearity not in ops.RNN_NONLINEARITIES:
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, bias, batch_first, dtype, return_state, rng)
        self.nonlinearity = nonlinearity

    def forward(self, x, hx=None):
        """Run the sequence ``x`` (T, B, I) from ``hx`` (zeros if None); return every h_t."""
        fast = self._fast_input(x) if hx is None else None
        params = self._trusted_params() if fast is not None else None
        if params is not None:
            T, B, _ = x.shape
            out = self._buf("out", (T, B, self.hidden_size))
            if x is not out and x.base is not out:
                h0 = self._zeros("h0", B)
                _current().rnn_forward(x, h0, *params, self.nonlinearity, out)
                object.__setattr__(self, "_saved", (x, h0, out))
                self.h_n = out[-1][None]
                return (out, self.h_n) if self.return_state else out
        x = self._input(x)
        T, B, _ = x.shape
        h0 = self._zeros("h0", B) if hx is None else self._state(hx, "hx", B)
        out = ops.rnn_forward(x, h0, *self._params(), nonlinearity=self.nonlinearity,
                              out=self._buf("out", (T, B, self.hidden_size)))
        object.__setattr__(self, "_saved", (x, h0, out))
        self.h_n = out[-1][None]
        y = self._output(out)
        return (y, self.h_n) if self.return_state else y

    def backward(self, grad_output, grad_state=None, input_grad=True):
        """BPTT: fill the parameter gradients and ``grad_h0``; return dL/dx (None if ``input_grad=False``)."""
        x, h0, out = self._need_forward()
        T, B, I = x.shape
        H = self.hidden_size
        if grad_state is None and not self.batch_first:
            params, grads = self._trusted_params(), self._trusted_grads()
            if params is not None and grads is not None:
                work, gh0 = self._buf("work", (T, B, H)), self._buf("grad_h0", (B, H))
                gx = self._buf("grad_x", (T, B, I)) if input_grad else None
                g = self._fast_grad(grad_output, out, (work, gx, gh0))
                if g is not None:
                    _current().rnn_backward(g, None, x, h0, params[0], params[1], out, self.nonlinearity, work,
                                            gx, gh0, *grads)
                    self.grad_h0 = gh0[None]
                    return gx
        g = self._grad_output(grad_output, T, B)
        ghn = None if grad_state is None else self._state(grad_state, "grad_state", B)
        grad_x, grad_h0, *_ = ops.rnn_backward(
            g, x, h0, self.weight_ih_l0.data, self.weight_hh_l0.data, out, self.nonlinearity, grad_hn=ghn,
            bias=self.bias, input_grad=input_grad, work=self._buf("work", (T, B, H)),
            grad_x=self._buf("grad_x", (T, B, I)) if input_grad else None,
            grad_h0=self._buf("grad_h0", (B, H)), **self._param_grads())
        self.grad_h0 = grad_h0[None]
        return self._output(grad_x) if input_grad else None

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

    _gates = 4
    _name = "LSTM"

    def __init__(self, input_size, hidden_size, bias=True, batch_first=False, dtype=np.float32,
                 return_state=False, rng=None):
        super().__init__(input_size, hidden_size, bias, batch_first, dtype, return_state, rng)
        self.c_n = None
        self.grad_c0 = None

    def forward(self, x, hx=None):
        """Run the sequence from ``hx = (h0, c0)`` (zeros if None); return every h_t."""
        x = self._input(x)
        T, B, _ = x.shape
        H = self.hidden_size
        if hx is None:
            h0, c0 = self._zeros("h0", B), self._zeros("c0", B)
        else:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise ValueError("LSTM: the initial state must be a pair (h0, c0)")
            h0 = self._zeros("h0", B) if hx[0] is None else self._state(hx[0], "h0", B)
            c0 = self._zeros("c0", B) if hx[1] is None else self._state(hx[1], "c0", B)
        out, cell, gates = ops.lstm_forward(x, h0, c0, *self._params(), out=self._buf("out", (T, B, H)),
                                            cell=self._buf("cell", (T, B, H)),
                                            gates=self._buf("gates", (T, B, 4 * H)))
        object.__setattr__(self, "_saved", (x, h0, c0, out, cell, gates))
        self.h_n = out[-1][None]
        self.c_n = cell[-1][None]
        y = self._output(out)
        return (y, (self.h_n, self.c_n)) if self.return_state else y

    def backward(self, grad_output, grad_state=None, input_grad=True):
        """BPTT: fill the parameter gradients, ``grad_h0`` and ``grad_c0``; return dL/dx (None if ``input_grad=False``)."""
        x, h0, c0, out, cell, gates = self._need_forward()
        T, B, I = x.shape
        H = self.hidden_size
        g = self._grad_output(grad_output, T, B)
        ghn = gcn = None
        if grad_state is not None:
            if not isinstance(grad_state, (tuple, list)) or len(grad_state) != 2:
                raise ValueError("LSTM: grad_state must be a pair (grad_h_n, grad_c_n); either may be None")
            if grad_state[0] is not None:
                ghn = self._state(grad_state[0], "grad_h_n", B)
            if grad_state[1] is not None:
                gcn = self._state(grad_state[1], "grad_c_n", B)
        grad_x, grad_h0, grad_c0, *_ = ops.lstm_backward(
            g, x, h0, c0, self.weight_ih_l0.data, self.weight_hh_l0.data, out, cell, gates, grad_hn=ghn,
            grad_cn=gcn, bias=self.bias, input_grad=input_grad, work=self._buf("work", (T, B, 4 * H)),
            grad_x=self._buf("grad_x", (T, B, I)) if input_grad else None, grad_h0=self._buf("grad_h0", (B, H)),
            grad_c0=self._buf("grad_c0", (B, H)), **self._param_grads())
        self.grad_h0 = grad_h0[None]
        self.grad_c0 = grad_c0[None]
        return self._output(grad_x) if input_grad else None


@register_module
class GRU(_RecurrentBase):
    """Gated recurrent unit layer (PyTorch's equations, gate order r, z, n).

    ``n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))``, ``h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}``.
    Parameters and attributes as :class:`RNN` (without ``nonlinearity``); the
    weights are ``weight_ih_l0`` (3H, I), ``weight_hh_l0`` (3H, H), biases (3H,).
    """

    _gates = 3
    _name = "GRU"

    def forward(self, x, hx=None):
        """Run the sequence from ``hx`` (zeros if None); return every h_t."""
        x = self._input(x)
        T, B, _ = x.shape
        H = self.hidden_size
        h0 = self._zeros("h0", B) if hx is None else self._state(hx, "hx", B)
        out, gates, hidden_n = ops.gru_forward(x, h0, *self._params(), out=self._buf("out", (T, B, H)),
                                               gates=self._buf("gates", (T, B, 3 * H)),
                                               hidden_n=self._buf("hidden_n", (T, B, H)))
        object.__setattr__(self, "_saved", (x, h0, out, gates, hidden_n))
        self.h_n = out[-1][None]
        y = self._output(out)
        return (y, self.h_n) if self.return_state else y

    def backward(self, grad_output, grad_state=None, input_grad=True):
        """BPTT: fill the parameter gradients and ``grad_h0``; return dL/dx (None if ``input_grad=False``)."""
        x, h0, out, gates, hidden_n = self._need_forward()
        T, B, I = x.shape
        H = self.hidden_size
        g = self._grad_output(grad_output, T, B)
        ghn = None if grad_state is None else self._state(grad_state, "grad_state", B)
        grad_x, grad_h0, *_ = ops.gru_backward(
            g, x, h0, self.weight_ih_l0.data, self.weight_hh_l0.data, out, gates, hidden_n, grad_hn=ghn,
            bias=self.bias, input_grad=input_grad, work=self._buf("work", (T, B, 6 * H)),
            grad_x=self._buf("grad_x", (T, B, I)) if input_grad else None,
            grad_h0=self._buf("grad_h0", (B, H)), **self._param_grads())
        self.grad_h0 = grad_h0[None]
        return self._output(grad_x) if input_grad else None


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
        object.__setattr__(self, "_shape", None)
        object.__setattr__(self, "_grad", None)

    def forward(self, x):
        x = np.asarray(x)
        if x.ndim != 3:
            layout = "(batch, time, features)" if self.batch_first else "(time, batch, features)"
            raise ValueError(f"LastTimeStep: expected a 3-D sequence {layout}, got shape {x.shape}")
        object.__setattr__(self, "_shape", x.shape)
        return np.ascontiguousarray(x[:, -1] if self.batch_first else x[-1])

    def backward(self, grad_out):
        if self._shape is None:
            raise RuntimeError("LastTimeStep.backward called before forward")
        shape = self._shape
        g = np.asarray(grad_out)
        expected = (shape[0], shape[2]) if self.batch_first else (shape[1], shape[2])
        if g.shape != expected:
            raise ValueError(f"LastTimeStep: grad_out has shape {g.shape}, expected {expected}")
        grad = self._grad
        if grad is None or grad.shape != shape or grad.dtype != g.dtype:
            grad = np.zeros(shape, g.dtype)
            object.__setattr__(self, "_grad", grad)
        else:
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
