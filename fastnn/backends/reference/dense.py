"""Matrix multiply and the fully connected (dense) layer, forward and backward.

Shapes: B batch, I inputs, O outputs. The weight is stored as PyTorch does,
``W`` of shape (O, I), so the layer computes ``y = act(x·Wᵀ + b)``.
"""

import numpy as np

from . import activations as _act

__all__ = ["matmul", "dense_forward", "dense_backward"]

#: Activations a dense kernel can fuse with its output.
DENSE_ACTIVATIONS = ("identity", "relu", "sigmoid", "tanh")


def matmul(a, b, trans_a, trans_b, out):
    """General matrix multiply ``C = op(A)·op(B)``, ``op(M)`` = ``M`` or ``Mᵀ``.

    Parameters
    ----------
    a : ndarray of shape (M, K), or (K, M) if ``trans_a``
    b : ndarray of shape (K, N), or (N, K) if ``trans_b``
    trans_a, trans_b : bool
    out : ndarray of shape (M, N), not overlapping ``a`` or ``b``

    Returns
    -------
    out : ndarray of shape (M, N)
    """
    a_op = a.T if trans_a else a
    b_op = b.T if trans_b else b
    return np.matmul(a_op, b_op, out=out)


def _activate(z, activation):
    if activation == "relu":
        _act.relu(z, z)
    elif activation == "sigmoid":
        _act.sigmoid(z, z)
    elif activation == "tanh":
        _act.tanh(z, z)
    return z


def dense_forward(x, weight, bias, activation, out):
    """Fully connected layer ``y = act(x·Wᵀ + b)``.

    Parameters
    ----------
    x : ndarray of shape (B, I)
    weight : ndarray of shape (O, I)
    bias : ndarray of shape (O,) or None
    activation : {"identity", "relu", "sigmoid", "tanh"}
    out : ndarray of shape (B, O)

    Returns
    -------
    out : ndarray of shape (B, O), the activations ``y``
    """
    np.matmul(x, weight.T, out=out)  # z = x·Wᵀ, the pre-activation
    if bias is not None:
        out += bias  # broadcast b over the batch
    return _activate(out, activation)


def dense_backward(grad_out, x, weight, y, activation, grad_input, grad_weight, grad_bias):
    """Backpropagation through ``y = act(x·Wᵀ + b)``.

    With ``δ = dL/dz = dL/dy ⊙ act'(z)`` (the error at the pre-activation),
    the chain rule gives::

        dL/dW = δᵀ·x          (O, I)
        dL/db = Σ_batch δ      (O,)
        dL/dx = δ·W            (B, I)

    Parameters
    ----------
    grad_out : ndarray of shape (B, O), dL/dy
    x : ndarray of shape (B, I), the layer input
    weight : ndarray of shape (O, I)
    y : ndarray of shape (B, O) or None, the forward output (needed unless
        ``activation == "identity"``)
    activation : {"identity", "relu", "sigmoid", "tanh"}
    grad_input : ndarray of shape (B, I) or None (skip: e.g. the first layer)
    grad_weight : ndarray of shape (O, I), overwritten
    grad_bias : ndarray of shape (O,) or None (layer without bias)

    Returns
    -------
    (grad_input, grad_weight, grad_bias)
    """
    if activation == "identity":
        delta = grad_out
    else:
        delta = np.empty_like(grad_out)
        if activation == "relu":
            _act.relu_backward(grad_out, y, delta)
        elif activation == "sigmoid":
            _act.sigmoid_backward(grad_out, y, delta)
        else:
            _act.tanh_backward(grad_out, y, delta)
    np.matmul(delta.T, x, out=grad_weight)
    if grad_bias is not None:
        np.sum(delta, axis=0, out=grad_bias)
    if grad_input is not None:
        np.matmul(delta, weight, out=grad_input)
    return grad_input, grad_weight, grad_bias
