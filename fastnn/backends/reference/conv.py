"""2-D convolution and pooling over NCHW images, forward and backward.

Shapes: B batch, C input channels, O output channels, H/W input height and
width, Ho/Wo output height and width, kH/kW kernel height and width.
``stride``, ``padding``, ``dilation`` and ``kernel_size`` are pairs of ints
``(along H, along W)``.

Output size (PyTorch's rule, no ceil mode)::

    Ho = floor((H + 2·pH - dH·(kH - 1) - 1) / sH) + 1

Convolution (really cross-correlation, as in every deep-learning library)::

    y[b, o, i, j] = bias[o] + Σ_{c, u, v} w[o, c, u, v] · xp[b, c, i·sH + u·dH, j·sW + v·dW]

where ``xp`` is ``x`` padded with ``pH``/``pW`` zeros on each side. The
reference computes it the way it is easiest to read: *im2col* lays the
``C·kH·kW`` values that meet each output pixel out as a column, and the
convolution becomes one matrix product per image, ``Y_b = W₂ · cols_b``, with
``W₂`` the weight reshaped to (O, C·kH·kW).

Pooling pads max pooling with -inf and average pooling with zeros (divisor
``kH·kW`` when ``count_include_pad``, else the number of real pixels in the
window). Max pooling records, for each output, the flat index ``h·W + w`` of
the winning input pixel in its plane; ties go to the first maximum in
row-major window order and NaN counts as a maximum (the first NaN wins), in
every backend.
"""

import numpy as np
from numpy.lib.stride_tricks import as_strided

__all__ = [
    "conv2d_forward",
    "conv2d_backward",
    "max_pool2d_forward",
    "max_pool2d_backward",
    "avg_pool2d_forward",
    "avg_pool2d_backward",
]


def _out_size(n, k, s, p, d=1):
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def _pad(x, padding, value=0.0):
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def _windows(xp, kernel_size, stride, dilation, out_hw):
    """Read-only view ``v[b, c, u, v, i, j] = xp[b, c, i·sH + u·dH, j·sW + v·dW]``.

    Parameters
    ----------
    xp : ndarray of shape (B, C, Hp, Wp), the padded input

    Returns
    -------
    ndarray of shape (B, C, kH, kW, Ho, Wo), sharing memory with ``xp``
    """
    B, C = xp.shape[:2]
    s0, s1, s2, s3 = xp.strides
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel_size, stride, dilation, out_hw
    return as_strided(xp, (B, C, kh, kw, ho, wo), (s0, s1, s2 * dh, s3 * dw, s2 * sh, s3 * sw), writeable=False)


def _im2col(x, kernel_size, stride, padding, dilation, out_hw):
    """The columns of the convolution: ndarray of shape (B, C·kH·kW, Ho·Wo)."""
    B, C = x.shape[:2]
    kh, kw = kernel_size
    win = _windows(_pad(x, padding), kernel_size, stride, dilation, out_hw)
    return win.reshape(B, C * kh * kw, out_hw[0] * out_hw[1])  # copies: the view is not contiguous


def conv2d_forward(x, weight, bias, stride, padding, dilation, out):
    """2-D convolution ``y = w ⋆ x + b`` (cross-correlation), NCHW.

    ``y[b, o, i, j] = bias[o] + Σ_{c,u,v} w[o, c, u, v] · xp[b, c, i·sH + u·dH, j·sW + v·dW]``,
    computed per image as ``Y_b = W₂ · cols_b`` (im2col + matrix product).

    Parameters
    ----------
    x : ndarray of shape (B, C, H, W)
    weight : ndarray of shape (O, C, kH, kW)
    bias : ndarray of shape (O,) or None
    stride, padding, dilation : (int, int)
        ``stride >= 1``, ``padding >= 0`` (zeros), ``dilation >= 1``.
    out : ndarray of shape (B, O, Ho, Wo)

    Returns
    -------
    out : ndarray of shape (B, O, Ho, Wo)
    """
    B = x.shape[0]
    O, C, kh, kw = weight.shape
    ho, wo = out.shape[2:]
    cols = _im2col(x, (kh, kw), stride, padding, dilation, (ho, wo))  # (B, K, P)
    w2 = weight.reshape(O, C * kh * kw)  # (O, K)
    np.matmul(w2, cols, out=out.reshape(B, O, ho * wo))  # (B, O, P)
    if bias is not None:
        out += bias[None, :, None, None]
    return out


def conv2d_backward(grad_out, x, weight, stride, padding, dilation, grad_input, grad_weight, grad_bias):
    """Backpropagation through :func:`conv2d_forward`.

    With ``G_b = dL/dY_b`` of shape (O, Ho·Wo) and the columns ``cols_b``
    of the forward pass, the chain rule through ``Y_b = W₂·cols_b + b`` gives::

        dL/dW₂   = Σ_b G_b · cols_bᵀ                    (O, C·kH·kW)
        dL/db    = Σ_{b, i, j} G[b, :, i, j]           (O,)
        dL/dcols = W₂ᵀ · G_b                            (C·kH·kW, Ho·Wo)

    and ``dL/dx`` is *col2im* of ``dL/dcols``: every column entry is added
    back onto the input pixel it was copied from (pixels of the zero padding
    are dropped).

    Parameters
    ----------
    grad_out : ndarray of shape (B, O, Ho, Wo), dL/dy
    x : ndarray of shape (B, C, H, W), the forward input
    weight : ndarray of shape (O, C, kH, kW)
    stride, padding, dilation : (int, int)
    grad_input : ndarray of shape (B, C, H, W) or None (not wanted)
    grad_weight : ndarray of shape (O, C, kH, kW), overwritten
    grad_bias : ndarray of shape (O,) or None (layer without bias)

    Returns
    -------
    (grad_input, grad_weight, grad_bias)
    """
    B, C, H, W = x.shape
    O, _, kh, kw = weight.shape
    ho, wo = grad_out.shape[2:]
    K, P = C * kh * kw, ho * wo
    g = grad_out.reshape(B, O, P)
    cols = _im2col(x, (kh, kw), stride, padding, dilation, (ho, wo))  # (B, K, P)
    np.einsum("bop,bkp->ok", g, cols, out=grad_weight.reshape(O, K))
    if grad_bias is not None:
        np.sum(g, axis=(0, 2), out=grad_bias)
    if grad_input is not None:
        dcols = np.matmul(weight.reshape(O, K).T, g)  # (B, K, P)
        dcols = dcols.reshape(B, C, kh, kw, ho, wo)
        (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
        gxp = np.zeros((B, C, H + 2 * ph, W + 2 * pw), dtype=x.dtype)
        for u in range(kh):  # col2im: one strided slab per kernel tap
            for v in range(kw):
                rows = slice(u * dh, u * dh + sh * (ho - 1) + 1, sh)
                cols_ = slice(v * dw, v * dw + sw * (wo - 1) + 1, sw)
                gxp[:, :, rows, cols_] += dcols[:, :, u, v]
        grad_input[...] = gxp[:, :, ph : ph + H, pw : pw + W]
    return grad_input, grad_weight, grad_bias


def max_pool2d_forward(x, kernel_size, stride, padding, out, indices):
    """Max pooling ``y[b, c, i, j] = max_{u,v} xp[b, c, i·sH + u, j·sW + v]``.

    ``xp`` is ``x`` padded with -inf. Ties go to the first maximum in
    row-major window order; NaN counts as the maximum (the first NaN wins),
    so NaN propagates.

    Parameters
    ----------
    x : ndarray of shape (B, C, H, W)
    kernel_size, stride, padding : (int, int)
        ``padding <= kernel_size // 2``, so every window holds a real pixel.
    out : ndarray of shape (B, C, Ho, Wo)
    indices : ndarray of int64, shape (B, C, Ho, Wo)
        Receives the flat index ``h·W + w`` of each winner in its input plane.

    Returns
    -------
    (out, indices)
    """
    B, C, H, W = x.shape
    kh, kw = kernel_size
    ho, wo = out.shape[2:]
    xp = _pad(x, padding, -np.inf)
    valid = _pad(np.ones((1, 1, H, W), dtype=bool), padding, False)
    win = _windows(xp, kernel_size, stride, (1, 1), (ho, wo))  # (B, C, kh, kw, ho, wo)
    win = np.moveaxis(win.reshape(B, C, kh * kw, ho, wo), 2, -1)  # (B, C, ho, wo, kh·kw)
    ok = _windows(valid, kernel_size, stride, (1, 1), (ho, wo))
    ok = np.moveaxis(ok.reshape(1, 1, kh * kw, ho, wo), 2, -1)
    best = win.max(axis=-1)  # NaN propagates
    hit = (win == best[..., None]) | (np.isnan(win) & np.isnan(best)[..., None])
    first = np.argmax(hit & ok, axis=-1)  # first winner, row-major
    out[...] = best
    (sh, sw), (ph, pw) = stride, padding
    rows = np.arange(ho)[:, None] * sh - ph + first // kw
    cols = np.arange(wo)[None, :] * sw - pw + first % kw
    indices[...] = rows * W + cols
    return out, indices


def max_pool2d_backward(grad_out, indices, grad_input):
    """Backward of max pooling: each output's gradient goes to its winner.

    ``dL/dx[b, c, h, w] = Σ_{i, j : indices[b, c, i, j] = h·W + w} dL/dy[b, c, i, j]``

    Parameters
    ----------
    grad_out : ndarray of shape (B, C, Ho, Wo)
    indices : ndarray of int64, shape (B, C, Ho, Wo), from the forward pass
    grad_input : ndarray of shape (B, C, H, W), overwritten

    Returns
    -------
    grad_input : ndarray of shape (B, C, H, W)
    """
    B, C, H, W = grad_input.shape
    if indices.size and (indices.min() < 0 or indices.max() >= H * W):
        raise ValueError(f"indices must lie in [0, {H * W}) for input shape {grad_input.shape}")
    plane = np.arange(B * C).reshape(B, C, 1, 1) * (H * W)
    flat = (indices + plane).ravel()
    summed = np.bincount(flat, weights=grad_out.ravel(), minlength=B * C * H * W)
    grad_input[...] = summed.reshape(B, C, H, W)
    return grad_input


def _avg_divisor(shape_hw, kernel_size, stride, padding, count_include_pad, out_hw):
    """The divisor of each window: ``kH·kW``, or its number of real pixels."""
    kh, kw = kernel_size
    if count_include_pad:
        return float(kh * kw)
    valid = _pad(np.ones((1, 1) + tuple(shape_hw)), padding, 0.0)
    return _windows(valid, kernel_size, stride, (1, 1), out_hw).sum(axis=(2, 3))  # (1, 1, Ho, Wo)


def avg_pool2d_forward(x, kernel_size, stride, padding, count_include_pad, out):
    """Average pooling ``y[b, c, i, j] = Σ_{u,v} xp[b, c, i·sH + u, j·sW + v] / n``.

    ``xp`` is ``x`` padded with zeros; ``n = kH·kW`` if ``count_include_pad``
    (PyTorch's default), else the number of real pixels in the window.

    Parameters
    ----------
    x : ndarray of shape (B, C, H, W)
    kernel_size, stride, padding : (int, int)
    count_include_pad : bool
    out : ndarray of shape (B, C, Ho, Wo)

    Returns
    -------
    out : ndarray of shape (B, C, Ho, Wo)
    """
    ho, wo = out.shape[2:]
    win = _windows(_pad(x, padding), kernel_size, stride, (1, 1), (ho, wo))
    div = _avg_divisor(x.shape[2:], kernel_size, stride, padding, count_include_pad, (ho, wo))
    out[...] = win.sum(axis=(2, 3)) / div
    return out


def avg_pool2d_backward(grad_out, kernel_size, stride, padding, count_include_pad, grad_input):
    """Backward of average pooling: each output spreads ``dL/dy / n`` over its window.

    ``dL/dx[b, c, h, w] = Σ_{windows (i, j) holding (h, w)} dL/dy[b, c, i, j] / n(i, j)``

    Parameters
    ----------
    grad_out : ndarray of shape (B, C, Ho, Wo)
    kernel_size, stride, padding : (int, int)
    count_include_pad : bool
    grad_input : ndarray of shape (B, C, H, W), overwritten

    Returns
    -------
    grad_input : ndarray of shape (B, C, H, W)
    """
    B, C, H, W = grad_input.shape
    ho, wo = grad_out.shape[2:]
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    g = grad_out / _avg_divisor((H, W), kernel_size, stride, padding, count_include_pad, (ho, wo))
    gxp = np.zeros((B, C, H + 2 * ph, W + 2 * pw), dtype=grad_input.dtype)
    for u in range(kh):
        for v in range(kw):
            gxp[:, :, u : u + sh * (ho - 1) + 1 : sh, v : v + sw * (wo - 1) + 1 : sw] += g
    grad_input[...] = gxp[:, :, ph : ph + H, pw : pw + W]
    return grad_input
