"""Batch and layer normalisation, forward and backward.

Both normalise values by a mean and a variance and then apply an affine map
per feature. They differ in what the statistics are taken over:

* **batch norm** works on ``x`` of shape (N, C, L) (``L = 1`` for
  ``BatchNorm1d`` on (N, C), ``L = H·W`` for ``BatchNorm2d``) and takes, for
  each channel ``c``, the ``M = N·L`` values ``x[:, c, :]``;
* **layer norm** works on ``x`` of shape (M, K) (the leading dimensions
  flattened into M rows) and takes, for each row, its ``K`` values.

With ``μ`` the mean, ``σ² = mean((x − μ)²)`` the *biased* variance and
``r = 1/sqrt(σ² + eps)``::

    x̂ = (x − μ)·r              y = γ·x̂ + β

Backward, for one group of ``M`` normalised values (a channel of a batch
norm, a row of a layer norm) with ``g = dL/dy``::

    dL/dβ = Σ g                dL/dγ = Σ g·x̂           (batch norm: per channel;
                                                        layer norm: summed over rows)
    dL/dx = r·(γg − mean(γg) − x̂·mean(γg·x̂))

The last line is the chain rule through ``x̂`` *and* through ``μ`` and
``σ²``, which depend on every ``x`` of the group. A batch norm in evaluation
mode normalises by its running statistics instead, which do not depend on
``x``: then ``dL/dx = r·γ·g`` alone.

The statistics are accumulated in float64 whatever the data's dtype, so a
float32 channel of a million values keeps its digits.
"""

import numpy as np

__all__ = ["batch_norm_forward", "batch_norm_backward", "layer_norm_forward", "layer_norm_backward"]


def batch_norm_forward(x, weight, bias, eps, batch_stats, mean, var, out):
    """Batch normalisation ``y = γ·(x − μ)/sqrt(σ² + eps) + β`` per channel.

    Parameters
    ----------
    x : ndarray of shape (N, C, L)
    weight, bias : ndarray of shape (C,) or None (``affine=False``: γ = 1, β = 0)
    eps : float
    batch_stats : bool
        True: compute the mean and the biased variance of each channel over
        the batch (training) and write them into ``mean`` and ``var``.
        False: read them from ``mean`` and ``var`` (running statistics).
    mean, var : ndarray of shape (C,), the x dtype
    out : ndarray of shape (N, C, L)

    Returns
    -------
    out : ndarray of shape (N, C, L)
    """
    if batch_stats:
        m = x.mean(axis=(0, 2), dtype=np.float64)  # μ per channel
        v = np.square(x - m[None, :, None].astype(x.dtype), dtype=np.float64).mean(axis=(0, 2))  # σ²
        mean[...] = m
        var[...] = v
    scale = 1.0 / np.sqrt(var.astype(np.float64) + eps)  # r
    if weight is not None:
        scale = scale * weight
    shift = -mean * scale if bias is None else bias - mean * scale  # y = x·(γr) + (β − μγr)
    np.multiply(x, scale.astype(x.dtype)[None, :, None], out=out)
    out += shift.astype(x.dtype)[None, :, None]
    return out


def batch_norm_backward(grad_out, x, weight, mean, var, eps, batch_stats, grad_input, grad_weight, grad_bias):
    """Backpropagation through :func:`batch_norm_forward`.

    Parameters
    ----------
    grad_out : ndarray of shape (N, C, L), dL/dy
    x : ndarray of shape (N, C, L), the forward input
    weight : ndarray of shape (C,) or None
    mean, var : ndarray of shape (C,), the statistics the forward pass used
    eps : float
    batch_stats : bool
        Whether the forward pass normalised by the batch's own statistics
        (then they depend on ``x`` and the full formula applies) or by
        running ones (``dL/dx = r·γ·g``).
    grad_input : ndarray of shape (N, C, L) or None (not needed)
    grad_weight, grad_bias : ndarray of shape (C,) or None, overwritten

    Returns
    -------
    (grad_input, grad_weight, grad_bias)
    """
    M = x.shape[0] * x.shape[2]
    r = 1.0 / np.sqrt(var.astype(np.float64) + eps)
    xc = x - mean[None, :, None]  # x − μ
    sum_g = grad_out.sum(axis=(0, 2), dtype=np.float64)  # Σ g      = dL/dβ
    sum_gx = (grad_out * xc).sum(axis=(0, 2), dtype=np.float64) * r  # Σ g·x̂   = dL/dγ
    if grad_bias is not None:
        grad_bias[...] = sum_g
    if grad_weight is not None:
        grad_weight[...] = sum_gx
    if grad_input is not None:
        gamma = np.ones_like(r) if weight is None else weight.astype(np.float64)
        k = gamma * r  # r·γ
        if batch_stats:
            # r·γ·(g − mean(g) − x̂·mean(g·x̂)), with x̂ = (x − μ)·r
            a = (k * r * sum_gx / M).astype(x.dtype)[None, :, None]
            b = (k * sum_g / M).astype(x.dtype)[None, :, None]
            np.multiply(grad_out, k.astype(x.dtype)[None, :, None], out=grad_input)
            grad_input -= xc * a + b
        else:
            np.multiply(grad_out, k.astype(x.dtype)[None, :, None], out=grad_input)
    return grad_input, grad_weight, grad_bias


def layer_norm_forward(x, weight, bias, eps, out, mean, rstd):
    """Layer normalisation of every row: ``y = γ·(x − μ)·r + β``.

    Parameters
    ----------
    x : ndarray of shape (M, K)
    weight, bias : ndarray of shape (K,) or None
    eps : float
    out : ndarray of shape (M, K)
    mean, rstd : ndarray of shape (M,), written: each row's ``μ`` and ``r = 1/sqrt(σ² + eps)``

    Returns
    -------
    out : ndarray of shape (M, K)
    """
    m = x.mean(axis=1, dtype=np.float64)
    v = np.square(x - m[:, None].astype(x.dtype), dtype=np.float64).mean(axis=1)
    mean[...] = m
    rstd[...] = 1.0 / np.sqrt(v + eps)
    np.subtract(x, mean[:, None], out=out)
    out *= rstd[:, None]  # x̂
    if weight is not None:
        out *= weight
    if bias is not None:
        out += bias
    return out


def layer_norm_backward(grad_out, x, weight, mean, rstd, grad_input, grad_weight, grad_bias):
    """Backpropagation through :func:`layer_norm_forward`.

    Parameters
    ----------
    grad_out : ndarray of shape (M, K), dL/dy
    x : ndarray of shape (M, K), the forward input
    weight : ndarray of shape (K,) or None
    mean, rstd : ndarray of shape (M,), from the forward pass
    grad_input : ndarray of shape (M, K) or None (not needed)
    grad_weight, grad_bias : ndarray of shape (K,) or None, overwritten

    Returns
    -------
    (grad_input, grad_weight, grad_bias)
    """
    xhat = (x - mean[:, None]) * rstd[:, None]
    if grad_bias is not None:
        grad_bias[...] = grad_out.sum(axis=0, dtype=np.float64)
    if grad_weight is not None:
        grad_weight[...] = (grad_out * xhat).sum(axis=0, dtype=np.float64)
    if grad_input is not None:
        gg = grad_out if weight is None else grad_out * weight  # γ·g
        a = gg.mean(axis=1, dtype=np.float64)[:, None]  # mean(γg)
        b = (gg * xhat).mean(axis=1, dtype=np.float64)[:, None]  # mean(γg·x̂)
        grad_input[...] = rstd[:, None] * (gg - a - xhat * b)
    return grad_input, grad_weight, grad_bias
