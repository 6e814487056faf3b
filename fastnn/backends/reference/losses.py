"""Loss functions, each returning the loss and its gradient in one call.

``reduction="mean"`` averages as PyTorch does (over all elements for MSE and
binary cross-entropy, over the batch for softmax cross-entropy);
``reduction="sum"`` adds up. The mean over an empty batch is NaN, as in
PyTorch; the sum over it is 0.
"""

import numpy as np

__all__ = ["mse_loss", "softmax_cross_entropy", "bce_with_logits"]


def _scale(n, reduction):
    """The factor on a sum over n terms: 1/n for "mean" (NaN when there are none), else 1."""
    if reduction != "mean":
        return 1.0
    return 1.0 / n if n else float("nan")


def mse_loss(pred, target, reduction, grad):
    """Mean-squared error and its gradient.

    ``L = Σ (a − y)²`` (``"sum"``, the loss of classic backprop) or that sum
    divided by the number of elements (``"mean"``). ``dL/da = 2 (a − y)``,
    scaled the same way.

    Parameters
    ----------
    pred : ndarray of any shape, the prediction ``a``
    target : ndarray of the same shape, ``y``
    reduction : {"mean", "sum"}
    grad : ndarray of the same shape, written with dL/dpred

    Returns
    -------
    loss : float
    grad : ndarray
    """
    n = pred.size  # no elements: the sum is 0, its mean NaN (through _scale)
    np.subtract(pred, target, out=grad)
    loss = float(np.dot(grad.ravel(), grad.ravel())) * _scale(n, reduction)
    grad *= 2.0 * _scale(n, reduction)
    return loss, grad


def softmax_cross_entropy(logits, labels, reduction, grad):
    """Softmax cross-entropy from logits with integer class labels.

    With ``p = softmax(z)`` row by row, ``L_i = −log p_{i, y_i}
    = logsumexp(z_i) − z_{i, y_i}`` and ``dL_i/dz_i = p_i − onehot(y_i)``.

    Parameters
    ----------
    logits : ndarray of shape (B, C)
    labels : integer ndarray of shape (B,), values in [0, C)
    reduction : {"mean", "sum"}
    grad : ndarray of shape (B, C), written with dL/dlogits

    Returns
    -------
    loss : float
    grad : ndarray of shape (B, C)
    """
    b = logits.shape[0]
    if b == 0:
        return (float("nan") if reduction == "mean" else 0.0), grad
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise ValueError(f"labels must lie in [0, {logits.shape[1]})")
    rows = np.arange(b)
    shifted = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=grad)
    sumexp = grad.sum(axis=1)
    grad /= sumexp[:, None]  # p = softmax(z)
    log_likelihood = shifted[rows, labels] - np.log(sumexp)
    loss = float(-log_likelihood.sum(dtype=np.float64)) * _scale(b, reduction)
    grad[rows, labels] -= 1  # p − onehot(y)
    grad *= _scale(b, reduction)
    return loss, grad


def bce_with_logits(logits, target, reduction, grad):
    """Binary cross-entropy on logits, ``σ`` folded in for stability.

    ``L = −[y log σ(z) + (1 − y) log(1 − σ(z))]
    = max(z, 0) − z·y + log(1 + exp(−|z|))`` and ``dL/dz = σ(z) − y``.

    Parameters
    ----------
    logits : ndarray of any shape
    target : ndarray of the same shape, values in [0, 1]
    reduction : {"mean", "sum"}
    grad : ndarray of the same shape

    Returns
    -------
    loss : float
    grad : ndarray
    """
    n = logits.size
    e = np.exp(-np.abs(logits))
    per_element = np.maximum(logits, 0) - logits * target + np.log1p(e)
    loss = float(per_element.sum(dtype=np.float64)) * _scale(n, reduction)
    sig = np.where(logits >= 0, 1 / (1 + e), e / (1 + e))
    np.subtract(sig, target, out=grad)
    grad *= _scale(n, reduction)
    return loss, grad
