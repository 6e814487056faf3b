"""Adaptive average pooling, NCHW (see the reference backend for the math).

The output size is checked here (positive, at most 2**31 - 1), as is the
input (4-D float, non-empty image planes); an empty batch gives an empty
result.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import overload

import numpy as np

from .. import _validation as _v
from .._typing import ArrayLike, FloatArray
from ..backends import current as _backend
from .conv import _backward_args, _input4d, _plane

__all__ = ["adaptive_avg_pool2d_forward", "adaptive_avg_pool2d_backward", "adaptive_output_size", "AdaptivePoolPlan"]


#: an output size as given: an int, or a pair whose None entries keep the input's size
_OutputSize = int | tuple[int | None, int | None] | list[int | None]


@overload
def adaptive_output_size(output_size: _OutputSize | None, input_hw: None = None) -> tuple[int | None, int | None]: ...
@overload
def adaptive_output_size(output_size: _OutputSize | None, input_hw: Sequence[int]) -> tuple[int, int]: ...
def adaptive_output_size(
    output_size: _OutputSize | None, input_hw: Sequence[int] | None = None
) -> tuple[int | None, int | None]:
    """``output_size`` (int, pair, None entries = the input's size) as a pair of ints."""
    if isinstance(output_size, (tuple, list)):
        if len(output_size) != 2:
            raise ValueError(f"output_size must be an int or a pair, got {output_size!r}")
        pair = tuple(output_size)
    else:
        pair = (output_size, output_size)
    out: list[int | None] = []
    for axis, v in enumerate(pair):
        if v is None:
            if input_hw is None:
                out.append(None)
                continue
            v = input_hw[axis]
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"output_size must hold ints (or None), got {output_size!r}")
        if not 1 <= v <= _v.MAX_DIM:
            raise ValueError(f"output_size must be in [1, 2**31 - 1], got {output_size!r}")
        out.append(int(v))
    return out[0], out[1]


def adaptive_avg_pool2d_forward(x: ArrayLike, output_size: _OutputSize, out: FloatArray | None = None) -> FloatArray:
    """Average pooling to a fixed output size (PyTorch's ``adaptive_avg_pool2d``).

    Parameters
    ----------
    x : array_like of shape (B, C, H, W)
    output_size : int or (int or None, int or None)
        (Ho, Wo); None keeps the input's size along that axis.
    out : ndarray of shape (B, C, Ho, Wo), optional

    Returns
    -------
    ndarray of shape (B, C, Ho, Wo)
    """
    x = _input4d(x)
    _plane(x.shape, "adaptive_avg_pool2d")
    ho, wo = adaptive_output_size(output_size, x.shape[2:])
    _v.dims_fit("adaptive_avg_pool2d", **{"image height·width": x.shape[2] * x.shape[3]})
    out = _v.output(out, x.shape[:2] + (ho, wo), x.dtype, inputs=(x,))
    if out.size == 0:
        return out
    return _backend().adaptive_avg_pool2d_forward(x, out)


def adaptive_avg_pool2d_backward(
    grad_out: ArrayLike, input_shape: Sequence[int], grad_input: FloatArray | None = None
) -> FloatArray:
    """Backward of :func:`adaptive_avg_pool2d_forward`.

    Parameters
    ----------
    grad_out : array_like of shape (B, C, Ho, Wo)
    input_shape : (B, C, H, W)
    grad_input : ndarray of shape ``input_shape``, optional (overwritten)

    Returns
    -------
    ndarray of shape (B, C, H, W)
    """
    grad_out, input_shape = _backward_args(grad_out, input_shape, "adaptive_avg_pool2d_backward")
    if grad_out.shape[:2] != input_shape[:2] or min(grad_out.shape[2:]) < 1:
        raise ValueError(f"grad_out shape {grad_out.shape} does not fit input shape {input_shape}")
    grad_input = _v.output(grad_input, input_shape, grad_out.dtype, "grad_input", (grad_out,))
    if grad_input.size == 0:
        return grad_input
    return _backend().adaptive_avg_pool2d_backward(grad_out, grad_input)


# ---------------------------------------------------------------------------
# The bound form layers use (see fastnn.ops._plan)

from . import _plan as _p  # noqa: E402
from ._planbase import KernelPlan as _KernelPlan  # noqa: E402
from ._planbase import float_c as _float_c  # noqa: E402


class AdaptivePoolPlan(_KernelPlan):
    """Adaptive average pooling to ``output_size`` and its backward pass."""

    __slots__ = ("output_size",)

    output_size: tuple[int | None, int | None]

    def __init__(self, output_size: _OutputSize) -> None:
        self.output_size = adaptive_output_size(output_size)
        self._bound = None

    def _kernel_names(self) -> tuple[str, str]:
        return "adaptive_avg_pool2d_forward", "adaptive_avg_pool2d_backward"

    def out_shape(self, xs: tuple[int, ...]) -> tuple[int, int, int, int]:
        ho, wo = adaptive_output_size(self.output_size, xs[2:])
        return (xs[0], xs[1], ho, wo)

    def forward(self, x: ArrayLike) -> FloatArray:
        k = self._kernels()
        if _float_c(x) and x.ndim == 4 and x.shape[2] > 0 and x.shape[3] > 0 and x.shape[2] * x.shape[3] <= _v.MAX_DIM:
            out = _p.output(self, "y", self.out_shape(x.shape), x.dtype, x)
            return out if out.size == 0 else k[1](x, out)
        return adaptive_avg_pool2d_forward(x, self.output_size)

    def backward(self, grad_out: ArrayLike, input_shape: tuple[int, ...]) -> FloatArray:
        k = self._kernels()
        if (
            _float_c(grad_out)
            and type(input_shape) is tuple
            and len(input_shape) == 4
            and input_shape[2] > 0
            and input_shape[3] > 0
            and grad_out.shape == self.out_shape(input_shape)
        ):
            gin = _p.output(self, "grad_input", input_shape, grad_out.dtype, grad_out)
            return gin if gin.size == 0 else k[2](grad_out, gin)
        return adaptive_avg_pool2d_backward(grad_out, input_shape)
