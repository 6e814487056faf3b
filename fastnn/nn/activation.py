"""Activation layers: ReLU, LeakyReLU, Sigmoid, Tanh, Softmax.

Each keeps its forward output ``y`` (every derivative here is a function of
``y``) and reuses its output and gradient buffers while the input shape
repeats; the returned arrays are overwritten by the next call of the same
shape. Inside :class:`~fastnn.nn.Sequential`, ReLU, Sigmoid and Tanh right
after a :class:`~fastnn.nn.Linear` are fused into the dense kernel instead.
"""

from __future__ import annotations

import numpy as np

from .. import _validation as _v, ops
from ..backends import current as _current
from .module import Module, register_module, remember

__all__ = ["ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax"]

_ndarray = np.ndarray


class _Activation(Module):
    """Shared machinery: buffers by shape, fast path to the kernel."""

    #: kernel names in the ops/backends
    _fwd_name = ""
    _bwd_name = ""
    #: name understood by ``dense_forward(activation=...)`` if fusable
    fused_activation = None

    def __init__(self):
        super().__init__()
        self._fbuf = {}   # input shape -> output buffer (per dtype in the key)
        self._bbuf = {}
        self._y = [None]

    def _extra(self):
        return ()

    def forward(self, x):
        if type(x) is _ndarray and x.flags.c_contiguous:
            key = (x.shape, x.dtype)
            out = self._fbuf.get(key)
            if out is not None and out is not x:
                y = getattr(_current(), self._fwd_name)(x, *self._extra(), out)
                self._y[0] = y
                return y
        x = np.asarray(x)
        out = np.empty(x.shape, x.dtype if x.dtype.kind == "f" else np.float64)
        y = getattr(ops, self._fwd_name)(x, *self._extra(), out=out)
        if x.flags.c_contiguous and x.dtype == out.dtype:
            remember(self._fbuf, (x.shape, x.dtype), out)
        self._y[0] = y
        return y

    def backward(self, grad_out):
        y = self._y[0]
        if y is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        if type(grad_out) is _ndarray and grad_out.flags.c_contiguous and grad_out.dtype is y.dtype \
                and grad_out.shape == y.shape:
            out = self._bbuf.get((y.shape, y.dtype))
            if out is not None and out is not grad_out:
                return getattr(_current(), self._bwd_name)(grad_out, y, *self._extra(), out)
        out = np.empty(y.shape, y.dtype)
        g = getattr(ops, self._bwd_name)(grad_out, y, *self._extra(), out=out)
        remember(self._bbuf, (y.shape, y.dtype), out)
        return g

    def get_config(self) -> dict:
        return {}

    @classmethod
    def parameters_from_config(cls, config, children=()):
        """No parameters; the config must be empty (see Module)."""
        _v.layer_config(config, cls.__name__, (), children)
        return []


@register_module
class ReLU(_Activation):
    """``y = max(x, 0)`` elementwise (NaN propagates)."""

    _fwd_name, _bwd_name = "relu", "relu_backward"
    fused_activation = "relu"


@register_module
class Sigmoid(_Activation):
    """``y = 1 / (1 + exp(−x))`` elementwise."""

    _fwd_name, _bwd_name = "sigmoid", "sigmoid_backward"
    fused_activation = "sigmoid"


@register_module
class Tanh(_Activation):
    """``y = tanh(x)`` elementwise."""

    _fwd_name, _bwd_name = "tanh", "tanh_backward"
    fused_activation = "tanh"


@register_module
class LeakyReLU(_Activation):
    """``y = x`` for ``x > 0``, else ``negative_slope·x``.

    Parameters
    ----------
    negative_slope : float, default 0.01, must be >= 0
    """

    _fwd_name, _bwd_name = "leaky_relu", "leaky_relu_backward"

    def __init__(self, negative_slope=0.01):
        super().__init__()
        slope = _v.strict_real(negative_slope, "negative_slope")
        if not slope >= 0:
            raise ValueError(f"negative_slope must be >= 0, got {negative_slope!r}")
        self.negative_slope = slope
        self._args = (slope,)

    def _extra(self):
        return self._args

    def get_config(self) -> dict:
        return {"negative_slope": self.negative_slope}

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"

    @classmethod
    def parameters_from_config(cls, config, children=()):
        """No parameters; checks ``negative_slope`` (see Module)."""
        _v.strict_real(_v.layer_config(config, "LeakyReLU", ("negative_slope",), children)["negative_slope"],
                       "negative_slope", low=0)
        return []


@register_module
class Softmax(_Activation):
    """Softmax over the last axis of a (B, C) input.

    For classification train on logits with :class:`~fastnn.nn.CrossEntropyLoss`
    (which includes the softmax); use this layer for probabilities.

    Parameters
    ----------
    dim : int, default -1
        Only the last axis (``-1`` or ``1``) is supported.
    """

    _fwd_name, _bwd_name = "softmax", "softmax_backward"

    def __init__(self, dim=-1):
        super().__init__()
        if _v.strict_int(dim, "dim") not in (-1, 1):
            raise ValueError(f"Softmax supports only the last axis of a (B, C) input (dim=-1 or 1), got dim={dim!r}")
        self.dim = dim

    def get_config(self) -> dict:
        return {"dim": self.dim}

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

    @classmethod
    def parameters_from_config(cls, config, children=()):
        """No parameters; checks ``dim`` (see Module)."""
        if _v.strict_int(_v.layer_config(config, "Softmax", ("dim",), children)["dim"], "dim") not in (-1, 1):
            raise ValueError(f"Softmax supports only dim=-1 or 1, got dim={config['dim']!r}")
        return []
