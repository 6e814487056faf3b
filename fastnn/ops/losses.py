"""Losses returning ``(loss, grad)`` in one call (see the reference for the math)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .. import _validation as _v
from .._typing import ArrayLike, FloatArray, LossKind, Reduction
from ..backends import current as _backend

__all__ = ["mse_loss", "softmax_cross_entropy", "bce_with_logits", "LossPlan"]

_REDUCTIONS: tuple[Reduction, ...] = ("mean", "sum")


def _pair(
    pred: ArrayLike, target: ArrayLike, pred_name: str, grad: FloatArray | None
) -> tuple[FloatArray, FloatArray, FloatArray]:
    pred = _v.as_float_array(pred, pred_name)
    target = _v.as_float_array(target, "target")
    _v.same_dtype(pred.dtype, target, "target")
    _v.same_shape(pred.shape, target, "target", pred_name)
    return pred, target, _v.output(grad, pred.shape, pred.dtype, "grad", (pred, target))


def mse_loss(
    pred: ArrayLike, target: ArrayLike, reduction: Reduction = "mean", grad: FloatArray | None = None
) -> tuple[float, FloatArray]:
    """Mean-squared error and its gradient.

    Parameters
    ----------
    pred, target : array_like of one shape and float dtype
    reduction : {"mean", "sum"}
        ``"sum"`` is ``Σ (pred − target)²``; ``"mean"`` divides by the
        number of elements.
    grad : ndarray, optional
        Buffer for dL/dpred.

    Returns
    -------
    loss : float
    grad : ndarray, dL/dpred
    """
    _v.choice(reduction, "reduction", _REDUCTIONS)
    pred, target, grad = _pair(pred, target, "pred", grad)
    return _backend().mse_loss(pred, target, reduction, grad)


def softmax_cross_entropy(
    logits: ArrayLike, labels: ArrayLike, reduction: Reduction = "mean", grad: FloatArray | None = None
) -> tuple[float, FloatArray]:
    """Softmax cross-entropy from logits and integer labels, with its gradient.

    Parameters
    ----------
    logits : array_like of shape (B, C)
    labels : array_like of integers, shape (B,), values in [0, C)
    reduction : {"mean", "sum"}
        ``"mean"`` averages over the batch (PyTorch's ``CrossEntropyLoss``).
    grad : ndarray of shape (B, C), optional

    Returns
    -------
    loss : float
    grad : ndarray of shape (B, C), dL/dlogits
    """
    _v.choice(reduction, "reduction", _REDUCTIONS)
    logits = _v.as_float_array(logits, "logits", ndim=2)
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers (class indices), got dtype {labels.dtype}")
    if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(
            f"labels must have shape ({logits.shape[0]},) to match logits {logits.shape}, got {labels.shape}"
        )
    if labels.dtype != np.intp or not labels.flags.c_contiguous:
        labels = np.ascontiguousarray(labels, dtype=np.intp)
    if labels.size:
        lo, hi = labels.min(), labels.max()
        if lo < 0 or hi >= logits.shape[1]:
            raise ValueError(f"labels must lie in [0, {logits.shape[1]}), got values from {lo} to {hi}")
    # a grad that overlapped the labels would change them while the kernel indexes with them
    grad = _v.output(grad, logits.shape, logits.dtype, "grad", (logits, labels))
    return _backend().softmax_cross_entropy(logits, labels, reduction, grad)


def bce_with_logits(
    logits: ArrayLike, target: ArrayLike, reduction: Reduction = "mean", grad: FloatArray | None = None
) -> tuple[float, FloatArray]:
    """Binary cross-entropy on logits (sigmoid folded in), with its gradient.

    Parameters
    ----------
    logits, target : array_like of one shape; target values in [0, 1]
    reduction : {"mean", "sum"}
    grad : ndarray, optional

    Returns
    -------
    loss : float
    grad : ndarray, dL/dlogits
    """
    _v.choice(reduction, "reduction", _REDUCTIONS)
    logits, target, grad = _pair(logits, target, "logits", grad)
    return _backend().bce_with_logits(logits, target, reduction, grad)


# ---------------------------------------------------------------------------
# The bound form layers use (see fastnn.ops._plan)

from . import _plan as _p  # noqa: E402
from ._planbase import KernelPlan as _KernelPlan  # noqa: E402
from ._planbase import float_c as _float_c  # noqa: E402

_nd = _p.ndarray
_INTP = np.dtype(np.intp)

_LossOp = Callable[..., "tuple[float, FloatArray]"]
_LOSS_OPS: dict[str, _LossOp] = {
    "mse": mse_loss,
    "cross_entropy": softmax_cross_entropy,
    "bce_with_logits": bce_with_logits,
}


class LossPlan(_KernelPlan):
    """A loss and its gradient bound to one kind and reduction.

    Parameters
    ----------
    kind : {"mse", "cross_entropy", "bce_with_logits"}
    reduction : {"mean", "sum"}

    Notes
    -----
    A call checks that prediction and target pair up (type, dtype, layout,
    shapes; for cross-entropy integer labels, one per row) and runs the
    kernel of the active backend, which checks every label against ``[0, C)``
    as it reads it; anything else goes through the validated op. The gradient comes from the active workspace,
    or is a new array.
    """

    __slots__ = ("kind", "reduction", "_op")

    kind: LossKind
    reduction: Reduction
    _op: _LossOp

    def __init__(self, kind: LossKind, reduction: Reduction = "mean") -> None:
        self._op = _LOSS_OPS[_v.choice(kind, "kind", tuple(_LOSS_OPS))]
        self.kind = kind
        self.reduction = _v.choice(reduction, "reduction", _REDUCTIONS)
        self._bound = None

    def _kernel_names(self) -> tuple[str]:
        return (self._op.__name__,)

    def __call__(self, pred: ArrayLike, target: ArrayLike) -> tuple[float, FloatArray]:
        """``(loss, dL/dpred)`` of ``pred`` against ``target``."""
        k = self._kernels()
        if _float_c(pred) and type(target) is _nd and target.flags.c_contiguous:
            dt = pred.dtype
            if self.kind == "cross_entropy":
                # every backend's kernel checks each label against C itself (ValueError)
                if target.dtype is _INTP and pred.ndim == 2 and target.ndim == 1 and target.shape[0] == pred.shape[0]:
                    return k[1](pred, target, self.reduction, _p.output(self, "grad", pred.shape, dt, pred))
            elif target.dtype is dt and target.shape == pred.shape:
                return k[1](pred, target, self.reduction, _p.output(self, "grad", pred.shape, dt, pred, target))
        return self._op(pred, target, self.reduction)
