"""Adaptive pooling: :class:`AdaptiveAvgPool2d` and :class:`GlobalAvgPool2d`.

``AdaptiveAvgPool2d(output_size)`` is PyTorch's: it fixes the output size
and derives the windows from the input's (see
:mod:`fastnn.backends.reference.adaptive_pool`). ``GlobalAvgPool2d()``
averages each channel plane to one value and returns (B, C), the usual head
of a convolutional classifier (``AdaptiveAvgPool2d(1)`` followed by
``Flatten()`` in PyTorch).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np

from .. import _validation as _v
from .. import ops
from .._typing import ArrayLike, FloatArray, ParameterSpec
from ..grad_mode import _enabled as _grad_enabled
from ..ops.adaptive_pool import _OutputSize
from .module import Module, register_module

__all__ = ["AdaptiveAvgPool2d", "GlobalAvgPool2d"]


def _shape_of(x: ArrayLike) -> tuple[int, ...]:
    return x.shape if type(x) is np.ndarray else np.shape(x)


@register_module
class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed output size (PyTorch's ``nn.AdaptiveAvgPool2d``).

    Parameters
    ----------
    output_size : int or (int or None, int or None)
        (Ho, Wo); None keeps the input's size along that axis.

    Shapes: input (B, C, H, W), output (B, C, Ho, Wo).
    """

    _plan: ops.AdaptivePoolPlan

    def __init__(self, output_size: _OutputSize) -> None:
        super().__init__()
        self.output_size = ops.adaptive_output_size(output_size)
        self._reset_transient()

    _transient = ("_plan",)

    def _reset_transient(self) -> None:
        self.__dict__["_plan"] = ops.AdaptivePoolPlan(self.output_size)
        self.__dict__["_ctx"] = None

    def forward(self, x: ArrayLike) -> FloatArray:
        """Average ``x`` (B, C, H, W) over the adaptive windows."""
        y = self._plan.forward(x)
        if _grad_enabled.get():
            self.__dict__["_ctx"] = tuple(_shape_of(x))
        return y

    def backward(self, grad_output: ArrayLike, *, input_grad: bool = True, accumulate: bool = False) -> FloatArray:
        """Spread each gradient over its window; returns dL/dx (B, C, H, W)."""
        return self._plan.backward(grad_output, self._saved())

    def get_config(self) -> dict[str, Any]:
        return {"output_size": list(self.output_size)}

    def extra_repr(self) -> str:
        o = self.output_size
        return f"output_size={o[0] if o[0] == o[1] else o}"

    @classmethod
    def parameters_from_config(cls, config: dict[str, Any], children: Collection[str] = ()) -> list[ParameterSpec]:
        """No parameters; checks ``output_size`` (see Module)."""
        c = _v.layer_config(config, "AdaptiveAvgPool2d", ("output_size",), children)
        if not isinstance(c["output_size"], list):
            raise TypeError(f"output_size must be a list of two sizes, got {_v._shown(c['output_size'])}")
        ops.adaptive_output_size(c["output_size"])
        return []


@register_module
class GlobalAvgPool2d(Module):
    """The mean of every channel plane: (B, C, H, W) -> (B, C).

    The same as ``AdaptiveAvgPool2d(1)`` followed by ``Flatten()``, in one
    layer, for the head of a convolutional network.
    """

    _plan: ops.AdaptivePoolPlan

    def __init__(self) -> None:
        super().__init__()
        self._reset_transient()

    _transient = ("_plan",)

    def _reset_transient(self) -> None:
        self.__dict__["_plan"] = ops.AdaptivePoolPlan(1)
        self.__dict__["_ctx"] = None

    def forward(self, x: ArrayLike) -> FloatArray:
        """The mean of each (H, W) plane of ``x``; returns (B, C)."""
        y = self._plan.forward(x)
        if _grad_enabled.get():
            self.__dict__["_ctx"] = tuple(_shape_of(x))
        return y.reshape(y.shape[0], y.shape[1])

    def backward(self, grad_output: ArrayLike, *, input_grad: bool = True, accumulate: bool = False) -> FloatArray:
        """Each gradient spread evenly over its plane; returns dL/dx (B, C, H, W)."""
        shape = self._saved()
        g = np.asarray(grad_output)
        if g.shape != shape[:2]:
            raise ValueError(f"GlobalAvgPool2d: grad_output has shape {g.shape}, expected {shape[:2]}")
        return self._plan.backward(np.ascontiguousarray(g).reshape(shape[0], shape[1], 1, 1), shape)

    def get_config(self) -> dict[str, Any]:
        return {}

    @classmethod
    def parameters_from_config(cls, config: dict[str, Any], children: Collection[str] = ()) -> list[ParameterSpec]:
        """No parameters; the config must be empty (see Module)."""
        _v.layer_config(config, "GlobalAvgPool2d", (), children)
        return []
