"""Inverted dropout (see the reference backend for the math).

The keep decisions are drawn here, before the kernel runs, from fastnn's
seeded generator (:func:`fastnn.manual_seed`) or the ``rng`` given: 32-bit
words taken from the generator's bit stream (``random_raw``), two per 64-bit
draw. Every backend therefore drops the same values for the same seed, and a
run repeats exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import _validation as _v
from .._typing import ArrayLike, FloatArray, NDArray, Seed
from ..backends import current as _backend

__all__ = ["dropout_forward", "dropout_backward", "dropout_threshold", "DropoutPlan"]

_U8 = np.dtype(np.uint8)
_TWO32 = 1 << 32

#: the keep decisions: 1 where a value (or group of values) is kept
_Mask = NDArray[np.uint8]


def _p(p: float) -> float:
    return _v.scalar(p, "p", low=0.0, high=1.0)


def dropout_threshold(p: float) -> tuple[int, float]:
    """``(threshold, scale)`` of dropout probability ``p``: keep a word ``>= threshold``, scale by ``1/(1 − p)``."""
    p = _p(p)
    threshold = min(_TWO32, int(round(p * _TWO32)))
    return threshold, (1.0 / (1.0 - p) if p < 1.0 else 0.0)


def draw_bits(rng: Seed, n: int) -> NDArray[np.uint32]:
    """``n`` (or one more) random 32-bit words from ``rng`` (a Generator, a seed, or None: fastnn's generator)."""
    from ..nn.init import get_rng

    gen = get_rng(rng)
    return gen.bit_generator.random_raw((n + 1) // 2, output=True).view(np.uint32)


def _group(group: int, size: int) -> int:
    group = _v.strict_int(group, "group", low=1)
    if size % group:
        raise ValueError(f"group ({group}) must divide the number of values ({size})")
    return group


def _mask(mask: _Mask | None, n: int, ins: Sequence[NDArray[Any] | None]) -> _Mask:
    if mask is None:
        return np.empty(n, _U8)
    if type(mask) is not np.ndarray or mask.dtype != _U8:
        raise TypeError("mask must be a uint8 numpy.ndarray")
    if mask.shape != (n,) or not mask.flags.c_contiguous or not mask.flags.writeable:
        raise ValueError(f"mask must be a writeable C-contiguous array of shape ({n},), got {mask.shape}")
    for a in ins:
        if a is not None and np.may_share_memory(mask, a):
            raise ValueError("mask must not overlap the other arrays")
    return mask


def dropout_forward(
    x: ArrayLike,
    p: float = 0.5,
    *,
    relu: bool = False,
    group: int = 1,
    rng: Seed = None,
    out: FloatArray | None = None,
    mask: _Mask | None = None,
) -> tuple[FloatArray, _Mask]:
    """Inverted dropout: zero each value with probability ``p``, scale the rest by ``1/(1 − p)``.

    Parameters
    ----------
    x : array_like of float32 or float64, any shape
    p : float in [0, 1], default 0.5
    relu : bool, default False
        Apply ``max(x, 0)`` first, in the same pass (a ReLU followed by dropout).
    group : int, default 1
        Consecutive values that share one decision (``H·W`` for channel
        dropout of (N, C, H, W) input); must divide ``x.size``.
    rng : numpy.random.Generator or int, optional
        Default: the generator of :func:`fastnn.manual_seed`.
    out : ndarray shaped like x, optional (may be ``x`` itself)
    mask : ndarray of uint8, shape (x.size // group,), optional

    Returns
    -------
    out : ndarray shaped like x
    mask : ndarray of uint8, 1 where kept (what :func:`dropout_backward` needs)
    """
    x = _v.as_float_array(x, "x")
    relu = _v.strict_bool(relu, "relu")
    threshold, scale = dropout_threshold(p)
    group = _group(group, x.size) if x.size else _v.strict_int(group, "group", low=1)
    out = _v.output(out, x.shape, x.dtype, aliases=(x,))
    m = x.size // group
    mask = _mask(mask, m, (x, out))
    if m == 0:
        return out, mask
    bits = draw_bits(rng, m)
    return _backend().dropout_forward(x, bits, threshold, scale, group, relu, out, mask), mask


def dropout_backward(
    grad_out: ArrayLike,
    mask: ArrayLike,
    p: float,
    *,
    group: int = 1,
    y: ArrayLike | None = None,
    out: FloatArray | None = None,
) -> FloatArray:
    """Backward of :func:`dropout_forward`: ``dL/dx = dL/dy·mask/(1 − p)``.

    Parameters
    ----------
    grad_out : array_like, dL/dy
    mask : ndarray of uint8, from the forward pass
    p : float, as in the forward pass
    group : int, as in the forward pass
    y : array_like shaped like grad_out, optional
        The forward output when a ReLU was fused (``relu=True``): the
        gradient is also zero where ``y <= 0``.
    out : ndarray, optional (may be ``grad_out`` itself)

    Returns
    -------
    ndarray, dL/dx
    """
    grad_out = _v.as_float_array(grad_out, "grad_out")
    _, scale = dropout_threshold(p)
    group = _group(group, grad_out.size) if grad_out.size else _v.strict_int(group, "group", low=1)
    mask = np.asarray(mask)
    if mask.dtype != _U8 or mask.shape != (grad_out.size // group,):
        raise ValueError(
            f"mask must be the uint8 array of shape ({grad_out.size // group},) dropout_forward "
            f"returned, got {mask.dtype} {mask.shape}"
        )
    mask = np.ascontiguousarray(mask)
    if y is not None:
        y = _v.as_float_array(y, "y")
        _v.same_dtype(grad_out.dtype, y, "y")
        _v.same_shape(grad_out.shape, y, "y", "grad_out")
    out = _v.output(out, grad_out.shape, grad_out.dtype, aliases=(grad_out,), inputs=(mask,))
    if out.size == 0:
        return out
    return _backend().dropout_backward(grad_out, mask, scale, group, y, out)


# ---------------------------------------------------------------------------
# The bound form layers use (see fastnn.ops._plan)

from . import _plan as _pl  # noqa: E402
from ._planbase import KernelPlan as _KernelPlan  # noqa: E402
from ._planbase import fits as _fits  # noqa: E402
from ._planbase import float_c as _float_c  # noqa: E402

_nd = _pl.ndarray


class DropoutPlan(_KernelPlan):
    """:func:`dropout_forward` and :func:`dropout_backward` bound to one probability.

    Parameters
    ----------
    p : float in [0, 1]
    channelwise : bool, default False
        One decision per channel plane of (N, C, H, W) input (``Dropout2d``).
    """

    __slots__ = ("p", "channelwise", "threshold", "scale")

    p: float
    channelwise: bool
    threshold: int
    scale: float

    def __init__(self, p: float, channelwise: bool = False) -> None:
        self.p = _p(p)
        self.channelwise = bool(channelwise)
        self.threshold, self.scale = dropout_threshold(self.p)
        self._bound = None

    def group(self, shape: tuple[int, ...]) -> int:
        """Values per decision for an input of ``shape``."""
        if not self.channelwise:
            return 1
        if len(shape) != 4:
            raise ValueError(f"Dropout2d expects 4-D input (batch, channels, height, width), got shape {shape}")
        return max(1, shape[2] * shape[3])

    def _kernel_names(self) -> tuple[str, str]:
        return "dropout_forward", "dropout_backward"

    def forward(
        self, x: ArrayLike, *, relu: bool = False, rng: Seed = None, inplace: bool = False
    ) -> tuple[FloatArray, _Mask]:
        """``(out, mask)`` for ``x``; ``inplace=True`` writes over ``x`` (which must be writeable)."""
        k = self._kernels()
        if _float_c(x) and x.size and (not inplace or x.flags.writeable):
            group = self.group(x.shape)
            m = x.size // group
            out = x if inplace else _pl.output(self, "y", x.shape, x.dtype, x)
            mask = _pl.output(self, "mask", (m,), _U8, x, out)
            return k[1](x, draw_bits(rng, m), self.threshold, self.scale, group, relu, out, mask), mask
        return dropout_forward(
            x, self.p, relu=relu, group=self.group(np.shape(x)), rng=rng, out=x if inplace and type(x) is _nd else None
        )

    def backward(self, grad_out: ArrayLike, mask: ArrayLike, y: ArrayLike | None = None) -> FloatArray:
        """dL/dx from dL/dy and the forward's ``mask`` (and output ``y`` when a ReLU was fused)."""
        k = self._kernels()
        if (
            _float_c(grad_out)
            and grad_out.size
            and _fits(mask, _U8)
            and (y is None or (_fits(y, grad_out.dtype) and y.shape == grad_out.shape))
        ):
            group = self.group(grad_out.shape)
            if mask.shape == (grad_out.size // group,):
                out = _pl.output(self, "grad_input", grad_out.shape, grad_out.dtype, grad_out, y)
                return k[2](grad_out, mask, self.scale, group, y, out)
        return dropout_backward(grad_out, mask, self.p, group=self.group(np.shape(grad_out)), y=y)
