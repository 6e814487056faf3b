"""Inverted dropout, forward and backward.

In training, dropout zeroes each value with probability ``p`` and scales the
values it keeps by ``s = 1/(1 − p)``, so that the expected output equals the
input and evaluation needs no rescaling (it is then the identity)::

    y = x · k · s          k ~ Bernoulli(1 − p), one k per value
                           (or per channel plane: Dropout2d)
    dL/dx = dL/dy · k · s

The random decisions come from outside the kernel, as 32-bit random words
``bits`` (drawn by :func:`fastnn.ops.dropout_forward` from fastnn's seeded
generator, so every backend keeps the same values): a value is kept when its
word is at least ``threshold = round(p·2³²)``, which happens with
probability ``1 − p`` to within 2⁻³². ``group`` consecutive values share one
word (``group = H·W`` drops whole channel planes). The keep decisions are
written to ``mask`` (one byte per word) for the backward pass.

``relu=True`` fuses a ReLU in front, ``y = max(x, 0)·k·s``. Its backward
needs no mask: ``dL/dx = dL/dy · s · [y > 0]``, because ``y > 0`` exactly
where the ReLU passed a positive value and the mask kept it.

NaN in ``x`` stays NaN in ``y`` even where dropped (``NaN·0``), as in
PyTorch, which also multiplies by the mask.
"""

import numpy as np

__all__ = ["dropout_forward", "dropout_backward"]


def dropout_forward(x, bits, threshold, scale, group, relu, out, mask):
    """``y = act(x)·k·s``, ``k = [bits >= threshold]`` repeated ``group`` times.

    Parameters
    ----------
    x : ndarray of n values (any shape, C-contiguous)
    bits : ndarray of uint32, at least ``n // group`` words
    threshold : int in [0, 2³²]
    scale : float, ``1/(1 − p)`` (0 when ``p = 1``)
    group : int >= 1, dividing n: values per random word
    relu : bool, apply ``max(x, 0)`` first
    out : ndarray like x
    mask : ndarray of uint8, ``n // group`` entries, written: 1 kept, 0 dropped

    Returns
    -------
    out : ndarray like x
    """
    m = x.size // group
    keep = bits[:m] >= threshold
    mask[...] = keep
    factor = np.where(keep, x.dtype.type(scale), x.dtype.type(0))  # k·s per word
    xf = x.reshape(m, group)
    if relu:
        xf = np.maximum(xf, 0)
    with np.errstate(invalid="ignore"):  # inf·0 = NaN where an infinite value is dropped, as in PyTorch
        np.multiply(xf, factor[:, None], out=out.reshape(m, group))
    return out


def dropout_backward(grad_out, mask, scale, group, y, out):
    """``dL/dx = dL/dy·k·s`` (and ``·[y > 0]`` when a ReLU was fused: ``y`` given).

    Parameters
    ----------
    grad_out : ndarray of n values, dL/dy
    mask : ndarray of uint8, ``n // group`` entries, from the forward pass
    scale : float, as in the forward pass
    group : int, as in the forward pass
    y : ndarray like grad_out, the forward output of a fused ReLU, or None
    out : ndarray like grad_out, dL/dx

    Returns
    -------
    out : ndarray like grad_out
    """
    m = grad_out.size // group
    factor = np.where(mask != 0, grad_out.dtype.type(scale), grad_out.dtype.type(0))
    with np.errstate(invalid="ignore"):
        np.multiply(grad_out.reshape(m, group), factor[:, None], out=out.reshape(m, group))
        if y is not None:
            out *= y > 0
    return out
