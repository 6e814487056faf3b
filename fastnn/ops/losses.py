"""Losses returning ``(loss, grad)`` in one call (see the reference for the math)."""

import numpy as np

from .. import _validation as _v
from ..backends import current as _backend

__all__ = ["mse_loss", "softmax_cross_entropy", "bce_with_logits"]

_REDUCTIONS = ("mean", "sum")


def _pair(pred, target, pred_name, grad):
    pred = _v.as_float_array(pred, pred_name)
    target = _v.as_float_array(target, "target")
    _v.same_dtype(pred.dtype, target, "target")
    _v.same_shape(pred.shape, target, "target", pred_name)
    return pred, target, _v.output(grad, pred.shape, pred.dtype, "grad", (pred, target))


def mse_loss(pred, target, reduction="mean", grad=None):
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


def softmax_cross_entropy(logits, labels, reduction="mean", grad=None):
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
        raise ValueError(f"labels must have shape ({logits.shape[0]},) to match logits {logits.shape}, "
                         f"got {labels.shape}")
    if labels.dtype != np.intp or not labels.flags.c_contiguous:
        labels = np.ascontiguousarray(labels, dtype=np.intp)
    if labels.size:
        lo, hi = labels.min(), labels.max()
        if lo < 0 or hi >= logits.shape[1]:
            raise ValueError(f"labels must lie in [0, {logits.shape[1]}), got values from {lo} to {hi}")
    # a grad that overlapped the labels would change them while the kernel indexes with them
    grad = _v.output(grad, logits.shape, logits.dtype, "grad", (logits, labels))
    return _backend().softmax_cross_entropy(logits, labels, reduction, grad)


def bce_with_logits(logits, target, reduction="mean", grad=None):
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
