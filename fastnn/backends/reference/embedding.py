"""Embedding lookup, forward and backward.

An embedding is a table ``W`` of shape (V, D), one row per token; the
forward pass gathers rows::

    y[i] = W[idx[i]]                               (n indices -> (n, D))

and the backward pass scatters the gradients back onto the rows they came
from, adding where an index repeats::

    dL/dW[v] = Σ_{i : idx[i] = v} dL/dy[i]

Only the rows that occur in ``idx`` receive anything. The kernel therefore
writes those rows and no others: the rows listed in ``clear`` are zeroed
first (the layer passes the rows its previous backward pass wrote, plus the
current ones, so that ``grad_weight`` holds this batch's gradient alone
without a pass over all V rows), then the batch's gradients are added. The
row ``padding_idx`` (``-1``: none) gets no gradient, as in PyTorch.

Indices were checked by :mod:`fastnn.ops`; each kernel checks them again as
it uses them (``ValueError``), so no backend ever reads or writes outside
the table.
"""

import numpy as np

__all__ = ["embedding_forward", "embedding_backward"]


def _check(indices, V, what):
    if indices.size and (indices.min() < 0 or indices.max() >= V):
        raise ValueError(f"{what} must lie in [0, {V}) for a table of {V} rows")


def embedding_forward(indices, weight, out):
    """``out[i] = weight[indices[i]]``.

    Parameters
    ----------
    indices : ndarray of int64, shape (n,)
    weight : ndarray of shape (V, D)
    out : ndarray of shape (n, D)

    Returns
    -------
    out : ndarray of shape (n, D)
    """
    _check(indices, weight.shape[0], "indices")
    np.take(weight, indices, axis=0, out=out)
    return out


def embedding_backward(grad_out, indices, padding_idx, clear, grad_weight):
    """Zero the rows ``clear``, then ``grad_weight[indices[i]] += grad_out[i]`` (not for ``padding_idx``).

    Parameters
    ----------
    grad_out : ndarray of shape (n, D), dL/dy
    indices : ndarray of int64, shape (n,)
    padding_idx : int, a row that gets no gradient, or -1
    clear : ndarray of int64, rows to zero before adding (may be empty)
    grad_weight : ndarray of shape (V, D), updated in place: only the rows in
        ``clear`` and ``indices`` are written

    Returns
    -------
    grad_weight : ndarray of shape (V, D)
    """
    V = grad_weight.shape[0]
    _check(indices, V, "indices")
    _check(clear, V, "rows to clear")
    grad_weight[clear] = 0
    if padding_idx >= 0:
        keep = indices != padding_idx
        indices, grad_out = indices[keep], grad_out[keep]
    np.add.at(grad_weight, indices, grad_out)  # unbuffered: repeated rows add up
    return grad_weight
