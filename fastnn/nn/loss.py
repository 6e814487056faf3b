"""Loss functions: calling one returns the loss (a float) and keeps its gradient.

::

    loss = loss_fn(pred, target)   # float
    grad = loss_fn.backward()      # dL/dpred, same shape as pred

The gradient buffer is reused while the prediction shape repeats (the array
returned by ``backward`` is overwritten by the next call of that shape).
"""

from __future__ import annotations

import numpy as np

from .. import ops
from ..backends import current as _current
from .module import remember

__all__ = ["Loss", "MSELoss", "CrossEntropyLoss", "BCEWithLogitsLoss", "LOSSES"]

_ndarray = np.ndarray
_INTP, _UINTP = np.dtype(np.intp), np.dtype(np.uintp)
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
_REDUCTIONS = ("mean", "sum")


class Loss:
    """Base class: ``__call__(pred, target) -> float``, ``backward() -> dL/dpred``."""

    _op_name = ""
    #: "argmax" (class labels), "sign" (binary targets) or None (regression)
    accuracy_kind = None

    def __init__(self, reduction="mean"):
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        self.reduction = reduction
        self._grads = {}
        self._grad = None

    def __call__(self, pred, target):
        return self.forward(pred, target)

    def forward(self, pred, target):
        """The loss of ``pred`` against ``target`` (validated), as a float."""
        pred = np.asarray(pred)
        dt = pred.dtype if pred.dtype.kind == "f" else np.dtype(np.float64)
        key = (pred.shape, dt)
        buf = self._grads.get(key)
        if buf is None or buf is pred:
            buf = remember(self._grads, key, np.empty(pred.shape, dt))
        loss, grad = getattr(ops, self._op_name)(pred, self._target(target, pred), self.reduction, grad=buf)
        self._grad = grad
        return loss

    def _target(self, target, pred):
        return target

    def _forward_trusted(self, pred, target):
        # For the training loop: pred and target already validated (same dtype,
        # shapes, label range checked once for the whole data set).
        key = (pred.shape, pred.dtype)
        buf = self._grads.get(key)
        if buf is None:
            return self.forward(pred, target)
        loss, grad = getattr(_current(), self._op_name)(pred, target, self.reduction, buf)
        self._grad = grad
        return loss

    def backward(self):
        """dL/dpred of the last call (an array shaped like that prediction)."""
        if self._grad is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before the loss was computed")
        return self._grad

    def prepare_target(self, y, dtype):
        """Validate a whole target array once, as the training loop will feed it."""
        y = np.asarray(y)
        if y.dtype.kind not in "fiub":
            raise TypeError(f"targets must be numeric, got dtype {y.dtype}")
        return np.ascontiguousarray(y, dtype=dtype)

    def get_config(self) -> dict:
        return {"reduction": self.reduction}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reduction={self.reduction!r})"


class MSELoss(Loss):
    """Mean-squared error, ``mean((pred − target)²)`` or its sum.

    Parameters
    ----------
    reduction : {"mean", "sum"}
    """

    _op_name = "mse_loss"

    def _target(self, target, pred):
        target = np.asarray(target)
        if target.dtype.kind in "iub":
            target = target.astype(pred.dtype)
        return target


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy from logits (B, C) and integer labels (B,).

    Parameters
    ----------
    reduction : {"mean", "sum"}
        ``"mean"`` averages over the batch, as PyTorch does.
    """

    _op_name = "softmax_cross_entropy"
    accuracy_kind = "argmax"

    def forward(self, logits, labels):
        """The loss of ``logits`` (B, C) for integer ``labels`` (B,), as a float."""
        if type(logits) is _ndarray and type(labels) is _ndarray and labels.dtype is _INTP \
                and logits.ndim == 2 and labels.ndim == 1 and labels.shape[0] == logits.shape[0] \
                and logits.flags.c_contiguous and labels.flags.c_contiguous:
            buf = self._grads.get((logits.shape, logits.dtype))
            # one pass checks 0 <= label < C: negative labels wrap to huge unsigned values
            if buf is not None and buf is not logits and (logits.dtype is _F32 or logits.dtype is _F64) \
                    and not (labels.view(_UINTP) >= logits.shape[1]).any():
                loss, grad = _current().softmax_cross_entropy(logits, labels, self.reduction, buf)
                self._grad = grad
                return loss
        return Loss.forward(self, logits, labels)

    def prepare_target(self, y, dtype):
        y = np.asarray(y)
        if y.dtype.kind not in "iu":
            if y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0):
                y = y.astype(np.intp)
            else:
                raise TypeError(f"CrossEntropyLoss needs integer class labels, got dtype {y.dtype}")
        if y.ndim != 1:
            raise ValueError(f"CrossEntropyLoss needs labels of shape (N,), got {y.shape}")
        return np.ascontiguousarray(y, dtype=np.intp)

    def check_labels(self, y, num_classes):
        """Raise ``ValueError`` if some label is outside [0, num_classes)."""
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"labels must lie in [0, {num_classes}), got values from {y.min()} to {y.max()}")


class BCEWithLogitsLoss(Loss):
    """Binary cross-entropy on logits (sigmoid included), targets in [0, 1].

    Parameters
    ----------
    reduction : {"mean", "sum"}
    """

    _op_name = "bce_with_logits"
    accuracy_kind = "sign"

    def _target(self, target, pred):
        target = np.asarray(target)
        if target.dtype.kind in "iub":
            target = target.astype(pred.dtype)
        return target


#: Losses by name, for ``fastnn.fit(..., loss="cross_entropy")``.
LOSSES = {
    "mse": MSELoss,
    "cross_entropy": CrossEntropyLoss,
    "bce_with_logits": BCEWithLogitsLoss,
}
