"""The fully connected layer, ``y = x·Wᵀ + b``.

The layer reaches its kernels through one :class:`fastnn.ops.DensePlan`
bound to its parameters, so a call checks identities and the input instead
of everything, and returns a new array (or, inside a
:class:`fastnn.Workspace`, a reused buffer).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

import numpy as np

from .. import _validation as _v
from .. import ops
from .._typing import ArrayLike, DenseActivation, DTypeLike, FloatArray, ParameterSpec, Seed
from ..grad_mode import _enabled as _grad_enabled
from . import init as _init
from .module import Module, Parameter, register_module

__all__ = ["Linear"]


@register_module
class Linear(Module):
    """Fully connected layer ``y = x·Wᵀ + b`` (PyTorch's ``nn.Linear``).

    Parameters
    ----------
    in_features : int, I
    out_features : int, O
    bias : bool, default True
    dtype : float32 or float64, default float32
    init : str, default "default"
        Weight initialiser: ``"default"`` is PyTorch's
        (``U(−1/sqrt(I), 1/sqrt(I))``), or ``"he"``/``"he_normal"``,
        ``"glorot"``/``"glorot_normal"`` (see :mod:`fastnn.nn.init`). The bias
        is drawn from ``U(−1/sqrt(I), 1/sqrt(I))`` with ``"default"`` and is
        zero otherwise.
    rng : numpy.random.Generator or int, optional
        Generator for the initial values (default: the one seeded by
        :func:`fastnn.manual_seed`).

    Attributes
    ----------
    weight : Parameter of shape (O, I)
    bias : Parameter of shape (O,) or None

    Shapes: input (B, I), output (B, O).
    """

    _plan: ops.DensePlan

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        dtype: DTypeLike = np.float32,
        init: str = "default",
        rng: Seed = None,
    ) -> None:
        super().__init__()
        self.in_features = _v.positive_int(in_features, "in_features")
        self.out_features = _v.positive_int(out_features, "out_features")
        dt = _v.strict_float_dtype(dtype)
        if not isinstance(init, str) or init not in _init.INITIALIZERS:
            raise ValueError(f"init must be one of {sorted(_init.INITIALIZERS)}, got {init!r}")
        self.init = init
        self.weight = Parameter(np.empty((self.out_features, self.in_features), dt))
        self.bias = Parameter(np.empty(self.out_features, dt)) if _v.strict_bool(bias, "bias") else None
        self._reset_transient()
        self.reset_parameters(rng)

    _transient = ("_plan",)

    def _reset_transient(self) -> None:
        self.__dict__["_plan"] = ops.DensePlan(self.weight, self.bias)
        self.__dict__["_ctx"] = None

    def reset_parameters(self, rng: Seed = None) -> None:
        """Draw new initial values (see the ``init`` parameter)."""
        rng = _init.get_rng(rng)
        _init.INITIALIZERS[self.init](self.weight.data, rng=rng)
        if self.bias is not None:
            if self.init == "default":
                bound = 1.0 / math.sqrt(self.in_features)
                _init.uniform_(self.bias.data, -bound, bound, rng)
            else:
                self.bias.data[...] = 0

    # -- computation --------------------------------------------------
    def forward(self, x: ArrayLike) -> FloatArray:
        """``y = x·Wᵀ + b`` for ``x`` of shape (B, I); returns (B, O)."""
        return self._forward(x, "identity")

    def _forward(self, x: ArrayLike, activation: DenseActivation) -> FloatArray:
        # Fused ``act(x·Wᵀ + b)``: Sequential calls this with the activation
        # of the module that follows.
        try:
            y = self._plan.forward(x, activation)
        except TypeError as exc:
            raise self._input_error(x, exc) from None
        if _grad_enabled.get():
            self.__dict__["_ctx"] = (x, y, activation)
        return y

    def backward(
        self, grad_output: ArrayLike, *, input_grad: bool = True, accumulate: bool = False
    ) -> FloatArray | None:
        """Fill ``weight.grad`` (and ``bias.grad``); return dL/dx of shape (B, I) (None if not ``input_grad``)."""
        x, y, activation = self._saved()
        return self._plan.backward(grad_output, x, y, activation, input_grad=input_grad, accumulate=accumulate)

    # -- description --------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.bias is not None,
            "dtype": self.weight.data.dtype.name,
            "init": self.init,
        }

    def extra_repr(self) -> str:
        extra = "" if self.weight.data.dtype == np.float32 else f", dtype={self.weight.data.dtype.name}"
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}{extra}"

    @classmethod
    def parameters_from_config(cls, config: dict[str, Any], children: Collection[str] = ()) -> list[ParameterSpec]:
        """``[(name, shape, dtype name)]`` that ``Linear(**config)`` creates, config checked (see Module)."""
        c = _v.layer_config(config, "Linear", ("in_features", "out_features", "bias", "dtype", "init"), children)
        i, o = _v.positive_int(c["in_features"], "in_features"), _v.positive_int(c["out_features"], "out_features")
        dt = _v.strict_float_dtype(c["dtype"]).name
        _v.str_choice(c["init"], "init", tuple(_init.INITIALIZERS))
        return [("weight", (o, i), dt)] + ([("bias", (o,), dt)] if _v.strict_bool(c["bias"], "bias") else [])
