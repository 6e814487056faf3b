"""Activation layers: ReLU, LeakyReLU, Sigmoid, Tanh, Softmax.

Each keeps its forward output ``y`` for backward (every derivative here is a
function of ``y``) and reaches its kernels through one
:class:`fastnn.ops.ActivationPlan`. Inside :class:`~fastnn.nn.Sequential`,
ReLU, Sigmoid and Tanh right after a :class:`~fastnn.nn.Linear` are fused
into the dense kernel instead. Input: float32 or float64, any shape.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from .. import _validation as _v
from .. import ops
from .._typing import ActivationKind, ArrayLike, DenseActivation, FloatArray, ParameterSpec
from ..grad_mode import _enabled as _grad_enabled
from .module import Module, register_module

__all__ = ["ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax"]


class _Activation(Module):
    """Shared machinery: one bound kernel pair, the output kept for backward."""

    #: kind understood by ``ops.ActivationPlan`` (set by each subclass)
    _kind: ActivationKind
    #: name understood by ``dense_forward(activation=...)`` if fusable
    fused_activation: DenseActivation | None = None
    _plan: ops.ActivationPlan

    def __init__(self) -> None:
        super().__init__()
        self._reset_transient()

    _transient = ("_plan",)

    def _plan_args(self) -> tuple[float, ...]:
        return ()

    def _reset_transient(self) -> None:
        self.__dict__["_plan"] = ops.ActivationPlan(self._kind, *self._plan_args())
        self.__dict__["_ctx"] = None

    def forward(self, x: ArrayLike) -> FloatArray:
        y = self._plan.forward(x)
        if _grad_enabled.get():
            self.__dict__["_ctx"] = y
        return y

    def backward(self, grad_output: ArrayLike, *, input_grad: bool = True, accumulate: bool = False) -> FloatArray:
        """dL/dx from dL/dy (no parameters: ``accumulate`` changes nothing)."""
        return self._plan.backward(grad_output, self._saved())

    def get_config(self) -> dict[str, Any]:
        return {}

    @classmethod
    def parameters_from_config(cls, config: dict[str, Any], children: Collection[str] = ()) -> list[ParameterSpec]:
        """No parameters; the config must be empty (see Module)."""
        _v.layer_config(config, cls.__name__, (), children)
        return []


@register_module
class ReLU(_Activation):
    """``y = max(x, 0)`` elementwise (NaN propagates)."""

    _kind = "relu"
    fused_activation = "relu"


@register_module
class Sigmoid(_Activation):
    """``y = 1 / (1 + exp(−x))`` elementwise."""

    _kind = "sigmoid"
    fused_activation = "sigmoid"


@register_module
class Tanh(_Activation):
    """``y = tanh(x)`` elementwise."""

    _kind = "tanh"
    fused_activation = "tanh"


@register_module
class LeakyReLU(_Activation):
    """``y = x`` for ``x > 0``, else ``negative_slope·x``.

    Parameters
    ----------
    negative_slope : float, default 0.01, must be >= 0
    """

    _kind = "leaky_relu"
    negative_slope: float

    def __init__(self, negative_slope: float = 0.01) -> None:
        self.__dict__["negative_slope"] = _v.strict_real(negative_slope, "negative_slope", low=0.0)
        super().__init__()

    def _plan_args(self) -> tuple[float, ...]:
        return (self.negative_slope,)

    def get_config(self) -> dict[str, Any]:
        return {"negative_slope": self.negative_slope}

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"

    @classmethod
    def parameters_from_config(cls, config: dict[str, Any], children: Collection[str] = ()) -> list[ParameterSpec]:
        """No parameters; checks ``negative_slope`` (see Module)."""
        _v.strict_real(
            _v.layer_config(config, "LeakyReLU", ("negative_slope",), children)["negative_slope"],
            "negative_slope",
            low=0,
        )
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

    _kind = "softmax"

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        if _v.strict_int(dim, "dim") not in (-1, 1):
            raise ValueError(f"Softmax supports only the last axis of a (B, C) input (dim=-1 or 1), got dim={dim!r}")
        self.dim = int(dim)

    def get_config(self) -> dict[str, Any]:
        return {"dim": self.dim}

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

    @classmethod
    def parameters_from_config(cls, config: dict[str, Any], children: Collection[str] = ()) -> list[ParameterSpec]:
        """No parameters; checks ``dim`` (see Module)."""
        if _v.strict_int(_v.layer_config(config, "Softmax", ("dim",), children)["dim"], "dim") not in (-1, 1):
            raise ValueError(f"Softmax supports only dim=-1 or 1, got dim={config['dim']!r}")
        return []
