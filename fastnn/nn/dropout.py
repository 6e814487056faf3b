"""Dropout layers: :class:`Dropout` and :class:`Dropout2d`.

Inverted dropout, as PyTorch's: in training mode each value (``Dropout``) or
each channel plane (``Dropout2d``) is zeroed with probability ``p`` and the
rest are scaled by ``1/(1 − p)``; in evaluation mode (``model.eval()``, or
inside :func:`fastnn.inference_mode`, which :func:`fastnn.predict` and
:func:`fastnn.evaluate` use) the layer is the identity. The decisions come
from fastnn's generator, so :func:`fastnn.manual_seed` makes a run
repeatable, in every backend alike.

Inside :class:`~fastnn.nn.Sequential` a dropout layer fuses with what comes
before it where that saves a pass over the data: after a ReLU layer it runs
``max(x, 0)`` and the mask in one kernel; after a :class:`~fastnn.nn.Linear`
(alone or fused with a ReLU) it masks the Linear's output in place.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from .. import _validation as _v
from .. import ops
from .._typing import ArrayLike, ParameterSpec
from ..grad_mode import _enabled as _grad_enabled
from .module import Module, register_module

if TYPE_CHECKING:
    from .activation import ReLU

__all__ = ["Dropout", "Dropout2d"]

_IDENTITY = ("identity",)


def _probability(p: float) -> float:
    return _v.scalar(_v.strict_real(p, "p"), "p", low=0.0, high=1.0)


@register_module
class Dropout(Module):
    """Zero each value with probability ``p`` while training (PyTorch's ``nn.Dropout``).

    Parameters
    ----------
    p : float in [0, 1], default 0.5
    inplace : bool, default False
        Write the result over the input (training mode only; the input must
        be a writeable float array).

    Shapes: any input; the output has the input's shape.
    """

    _channelwise = False
    _plan: ops.DropoutPlan

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        self.p = _probability(p)
        self.inplace = _v.strict_bool(inplace, "inplace")
        self._reset_transient()

    _transient = ("_plan",)

    def _reset_transient(self) -> None:
        self.__dict__["_plan"] = ops.DropoutPlan(self.p, self._channelwise)
        self.__dict__["_ctx"] = None

    def _active(self) -> bool:
        return self.p > 0.0 and self._is_training()

    def forward(self, x: ArrayLike) -> ArrayLike:
        """Drop values of ``x`` (training) or return ``x`` (evaluation, or ``p = 0``)."""
        return self._fused_forward(x, None, self.inplace)

    def _fused_forward(self, x: ArrayLike, relu: ReLU | None = None, inplace: bool = False) -> ArrayLike:
        # relu: the ReLU module in front of this layer, run in the same kernel
        keep = _grad_enabled.get()
        if not self._active():
            if relu is not None:
                x = relu.forward(x)
            if keep:
                self.__dict__["_ctx"] = _IDENTITY if relu is None else ("relu", relu)
            return x
        try:
            y, mask = self._plan.forward(x, relu=relu is not None, inplace=inplace)
        except TypeError as exc:
            raise self._input_error(x, exc) from None
        if keep:
            self.__dict__["_ctx"] = ("mask", mask, y if relu is not None else None)
        return y

    def _input_error(self, x: object, exc: Exception) -> Exception:
        return exc  # no parameters: any float input is fine, the op's message stands

    def backward(
        self, grad_output: ArrayLike, *, input_grad: bool = True, accumulate: bool = False
    ) -> ArrayLike | None:
        """dL/dx: the gradient masked and scaled as the forward pass masked the values."""
        ctx = self._saved()
        if ctx[0] == "identity":
            return grad_output
        if ctx[0] == "relu":
            return ctx[1].backward(grad_output, input_grad=input_grad, accumulate=accumulate)
        return self._plan.backward(grad_output, ctx[1], ctx[2])

    def get_config(self) -> dict[str, Any]:
        return {"p": self.p, "inplace": self.inplace}

    def extra_repr(self) -> str:
        return f"p={self.p}" + (", inplace=True" if self.inplace else "")

    @classmethod
    def parameters_from_config(cls, config: dict[str, Any], children: Collection[str] = ()) -> list[ParameterSpec]:
        """No parameters; checks ``p`` and ``inplace`` (see Module)."""
        cls(**_v.layer_config(config, cls.__name__, ("p", "inplace"), children))
        return []


@register_module
class Dropout2d(Dropout):
    """Zero whole channels with probability ``p`` while training (PyTorch's ``nn.Dropout2d``).

    Input (N, C, H, W): each of the N·C planes is kept (and scaled by
    ``1/(1 − p)``) or zeroed as a whole, which suits convolutional features,
    whose neighbouring values are strongly correlated.
    """

    _channelwise = True
