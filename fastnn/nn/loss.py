"""Loss functions.

The protocol, shared by every loss::

    value = loss_fn(pred, target)    # a float; keeps dL/dpred when gradients are on
    grad = loss_fn.backward()        # dL/dpred, shaped like pred (a new array,
                                     # or a workspace buffer inside fit)

``backward(grad_output=1.0)`` scales the gradient (the upstream gradient of
the loss value). The loss and its gradient come from one fused kernel call,
through a :class:`fastnn.ops.LossPlan`; targets of the wrong length or
labels outside the classes are a ``ValueError``, never an out-of-bounds
access. Under :func:`fastnn.no_grad` the loss keeps nothing.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from .. import _validation as _v
from .. import ops
from .._typing import ArrayLike, DTypeLike, FloatArray, IntArray, LossKind, NDArray, Reduction
from ..grad_mode import _enabled as _grad_enabled

__all__ = ["Loss", "MSELoss", "CrossEntropyLoss", "BCEWithLogitsLoss", "LOSSES"]

_REDUCTIONS: tuple[Reduction, ...] = ("mean", "sum")


class Loss:
    """Base class: ``__call__(pred, target) -> float``, ``backward() -> dL/dpred``.

    Parameters
    ----------
    reduction : {"mean", "sum"}
    """

    #: kind understood by ``ops.LossPlan`` (set by each subclass)
    _kind: LossKind
    #: "argmax" (class labels), "sign" (binary targets) or None (regression)
    accuracy_kind: Literal["argmax", "sign"] | None = None
    reduction: Reduction
    _plan: ops.LossPlan
    #: dL/dpred of the last call (None before one, or under no_grad)
    _grad: FloatArray | None

    def __init__(self, reduction: Reduction = "mean") -> None:
        self.reduction = _v.choice(reduction, "reduction", _REDUCTIONS)
        self._reset_transient()

    def _reset_transient(self) -> None:
        self._plan = ops.LossPlan(self._kind, self.reduction)
        self._grad = None

    def __getstate__(self) -> dict[str, Any]:
        return {"reduction": self.reduction}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.reduction = state["reduction"]
        self._reset_transient()

    def __call__(self, pred: ArrayLike, target: ArrayLike) -> float:
        return self.forward(pred, target)

    def forward(self, pred: ArrayLike, target: ArrayLike) -> float:
        """The loss of ``pred`` against ``target``, as a float."""
        loss, grad = self._plan(pred, self._target(target, pred))
        if _grad_enabled.get():
            self._grad = grad
        return loss

    def _target(self, target: ArrayLike, pred: ArrayLike) -> ArrayLike:
        return target

    def backward(self, grad_output: float = 1.0) -> FloatArray:
        """dL/dpred of the last call, times ``grad_output`` (an array shaped like that prediction)."""
        grad = self._grad
        if grad is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward called before the loss was computed "
                f"(or it was computed under fastnn.no_grad())"
            )
        if grad_output == 1.0:
            return grad
        return grad * grad.dtype.type(grad_output)

    def prepare_target(self, y: ArrayLike, dtype: DTypeLike) -> NDArray[Any]:
        """Validate a whole target array once, as the training loop will feed it."""
        y = np.asarray(y)
        if y.dtype.kind not in "fiub":
            raise TypeError(f"targets must be numeric, got dtype {y.dtype}")
        return np.ascontiguousarray(y, dtype=dtype)

    def get_config(self) -> dict[str, Any]:
        return {"reduction": self.reduction}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reduction={self.reduction!r})"


def _float_target(target: ArrayLike, pred: ArrayLike) -> NDArray[Any]:
    """Integer and boolean targets (0/1 labels, counts) become floats of the prediction's dtype."""
    if type(target) is not np.ndarray:
        target = np.asarray(target)
    if target.dtype.kind in "iub" and isinstance(pred, np.ndarray) and pred.dtype.kind == "f":
        target = target.astype(pred.dtype)
    return target


class MSELoss(Loss):
    """Mean-squared error, ``mean((pred − target)²)`` or its sum.

    Parameters
    ----------
    reduction : {"mean", "sum"}
    """

    _kind = "mse"

    def _target(self, target: ArrayLike, pred: ArrayLike) -> ArrayLike:
        return _float_target(target, pred)


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy from logits (B, C) and integer labels (B,).

    Parameters
    ----------
    reduction : {"mean", "sum"}
        ``"mean"`` averages over the batch, as PyTorch does.
    """

    _kind = "cross_entropy"
    accuracy_kind = "argmax"

    def prepare_target(self, y: ArrayLike, dtype: DTypeLike) -> IntArray:
        y = np.asarray(y)
        if y.dtype.kind not in "iu":
            if y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0):
                y = y.astype(np.intp)
            else:
                raise TypeError(f"CrossEntropyLoss needs integer class labels, got dtype {y.dtype}")
        if y.ndim != 1:
            raise ValueError(f"CrossEntropyLoss needs labels of shape (N,), got {y.shape}")
        return np.ascontiguousarray(y, dtype=np.intp)

    def check_labels(self, y: IntArray, num_classes: int) -> None:
        """Raise ``ValueError`` if some label is outside [0, num_classes)."""
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"labels must lie in [0, {num_classes}), got values from {y.min()} to {y.max()}")


class BCEWithLogitsLoss(Loss):
    """Binary cross-entropy on logits (sigmoid included), targets in [0, 1].

    Parameters
    ----------
    reduction : {"mean", "sum"}
    """

    _kind = "bce_with_logits"
    accuracy_kind = "sign"

    def _target(self, target: ArrayLike, pred: ArrayLike) -> ArrayLike:
        return _float_target(target, pred)


#: Losses by name, for ``fastnn.fit(..., loss="cross_entropy")``.
LOSSES: dict[str, type[Loss]] = {
    "mse": MSELoss,
    "cross_entropy": CrossEntropyLoss,
    "bce_with_logits": BCEWithLogitsLoss,
}
