"""Adaptive average pooling over NCHW images, forward and backward.

Adaptive pooling fixes the output size (Ho, Wo) instead of the window. As in
PyTorch, output row ``i`` averages the input rows ``[⌊i·H/Ho⌋, ⌈(i+1)·H/Ho⌉)``
(the same for columns), so the windows cover the input, may overlap by one
row when Ho does not divide H, and differ in size by at most one::

    y[b, c, i, j] = mean of x[b, c, h0(i):h1(i), w0(j):w1(j)]

Backward spreads each output's gradient evenly over its window:
``dL/dx[b, c, h, w] = Σ over the windows holding (h, w) of dL/dy / window size``.
With Ho = Wo = 1 this is global average pooling.
"""

import numpy as np

__all__ = ["adaptive_avg_pool2d_forward", "adaptive_avg_pool2d_backward"]


def _bounds(n_in, n_out):
    """Window starts and ends along one axis: ``[⌊i·n/m⌋, ⌈(i+1)·n/m⌉)``."""
    i = np.arange(n_out)
    return (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)


def adaptive_avg_pool2d_forward(x, out):
    """``out[b, c, i, j]`` = the mean of window (i, j) of ``x[b, c]``.

    Parameters
    ----------
    x : ndarray of shape (B, C, H, W)
    out : ndarray of shape (B, C, Ho, Wo)

    Returns
    -------
    out : ndarray of shape (B, C, Ho, Wo)
    """
    H, W = x.shape[2:]
    ho, wo = out.shape[2:]
    hs, he = _bounds(H, ho)
    ws, we = _bounds(W, wo)
    for i in range(ho):
        for j in range(wo):
            out[:, :, i, j] = x[:, :, hs[i]:he[i], ws[j]:we[j]].mean(axis=(2, 3))
    return out


def adaptive_avg_pool2d_backward(grad_out, grad_input):
    """Backward of :func:`adaptive_avg_pool2d_forward`: each gradient spread over its window.

    Parameters
    ----------
    grad_out : ndarray of shape (B, C, Ho, Wo)
    grad_input : ndarray of shape (B, C, H, W), overwritten

    Returns
    -------
    grad_input : ndarray of shape (B, C, H, W)
    """
    H, W = grad_input.shape[2:]
    ho, wo = grad_out.shape[2:]
    hs, he = _bounds(H, ho)
    ws, we = _bounds(W, wo)
    grad_input[...] = 0
    for i in range(ho):
        for j in range(wo):
            n = (he[i] - hs[i]) * (we[j] - ws[j])
            grad_input[:, :, hs[i]:he[i], ws[j]:we[j]] += (grad_out[:, :, i, j] / n)[:, :, None, None]
    return grad_input
