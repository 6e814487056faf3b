"""Elementwise activations and their derivatives.

Convention (used by every backend): ``act(x, out)`` computes ``y = act(x)``;
``act_backward(grad_out, y, out)`` computes ``dL/dx = dL/dy * act'(x)``,
expressed through the forward *output* ``y`` so that a layer keeps only one
array per activation. For each activation used here ``act'(x)`` is a function
of ``y`` alone:

=========== ====================== ==============================
activation  y                      dy/dx in terms of y
=========== ====================== ==============================
relu        max(x, 0)              1 if y > 0 else 0
leaky_relu  x if x > 0 else a·x    1 if y > 0 else a   (a >= 0)
sigmoid     1 / (1 + exp(-x))      y (1 - y)
tanh        tanh(x)                1 - y²
=========== ====================== ==============================

NaN in ``x`` gives NaN in ``y`` (``np.maximum`` semantics, not ``x > 0``).
"""

import numpy as np

#: The activations: each has a forward kernel ``name`` and a ``name_backward``, per the convention above.
_ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh", "softmax")

__all__ = [kernel for name in _ACTIVATIONS for kernel in (name, name + "_backward")]


def relu(x, out):
    """Rectified linear unit, ``y = max(x, 0)``.

    Parameters
    ----------
    x : ndarray of any shape
    out : ndarray of the same shape and dtype, written in place (may be ``x``)

    Returns
    -------
    out : ndarray
    """
    return np.maximum(x, 0, out=out)


def relu_backward(grad_out, y, out):
    """``dL/dx = dL/dy`` where ``y > 0``, else 0.

    Parameters
    ----------
    grad_out : ndarray, dL/dy
    y : ndarray, the forward output ``relu(x)``
    out : ndarray of the same shape, dL/dx (may be ``grad_out``)
    """
    return np.multiply(grad_out, y > 0, out=out)


def leaky_relu(x, negative_slope, out):
    """``y = x`` for ``x > 0``, else ``negative_slope * x``.

    Parameters
    ----------
    x : ndarray of any shape
    negative_slope : float, ``a >= 0``
    out : ndarray of the same shape and dtype
    """
    # where(x < 0) rather than where(x > 0) so that NaN takes the identity branch.
    return np.multiply(x, np.where(x < 0, x.dtype.type(negative_slope), x.dtype.type(1)), out=out)


def leaky_relu_backward(grad_out, y, negative_slope, out):
    """``dL/dx = dL/dy * (1 if y > 0 else negative_slope)``."""
    slope = np.where(y > 0, y.dtype.type(1), y.dtype.type(negative_slope))
    return np.multiply(grad_out, slope, out=out)


def sigmoid(x, out):
    """Logistic function ``y = 1 / (1 + exp(-x))``, computed without overflow.

    For ``x >= 0`` the textbook form is safe; for ``x < 0`` it is rewritten as
    ``exp(x) / (1 + exp(x))`` so that ``exp`` only ever sees ``-|x|``.
    """
    e = np.exp(-np.abs(x))
    np.divide(np.where(x >= 0, 1, e).astype(x.dtype, copy=False), 1 + e, out=out)
    # NaN: np.where(NaN >= 0) picks e = NaN, so NaN propagates.
    return out


def sigmoid_backward(grad_out, y, out):
    """``dL/dx = dL/dy * y * (1 - y)``."""
    return np.multiply(grad_out, y * (1 - y), out=out)


def tanh(x, out):
    """Hyperbolic tangent, ``y = tanh(x)``."""
    return np.tanh(x, out=out)


def tanh_backward(grad_out, y, out):
    """``dL/dx = dL/dy * (1 - y²)``."""
    return np.multiply(grad_out, 1 - y * y, out=out)


def softmax(x, out):
    """Softmax over the last axis: ``y_ij = exp(x_ij) / sum_k exp(x_ik)``.

    Parameters
    ----------
    x : ndarray of shape (B, C)
    out : ndarray of shape (B, C)

    Notes
    -----
    Subtracting the row maximum first leaves the result unchanged and keeps
    ``exp`` from overflowing.
    """
    np.subtract(x, x.max(axis=-1, keepdims=True) if x.size else 0, out=out)
    np.exp(out, out=out)
    out /= out.sum(axis=-1, keepdims=True)
    return out


def softmax_backward(grad_out, y, out):
    """Backward of softmax over the last axis.

    ``dL/dx_ij = y_ij * (dL/dy_ij - sum_k dL/dy_ik * y_ik)``: the Jacobian
    ``diag(y) - y yᵀ`` applied row by row without forming it.

    Parameters
    ----------
    grad_out : ndarray of shape (B, C), dL/dy
    y : ndarray of shape (B, C), the forward output
    out : ndarray of shape (B, C), dL/dx
    """
    dot = np.sum(grad_out * y, axis=-1, keepdims=True)
    np.subtract(grad_out, dot, out=out)
    out *= y
    return out
