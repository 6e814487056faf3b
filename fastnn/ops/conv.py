"""2-D convolution and pooling, NCHW (see the reference backend for the math).

Every function checks its arguments here, before any compiled kernel runs:
4-D float input, matching channels and dtypes, positive strides, kernels
that fit the (padded) input, non-empty image planes. ``kernel_size``,
``stride``, ``padding`` and ``dilation`` accept an int or a pair
``(along H, along W)``, each at most ``2**31 - 1``, as are the padded image
sizes and the per-image products the kernels compute (see
:data:`fastnn._validation.MAX_DIM`). An empty batch (or, for pooling, no
channels) gives an empty result, as in PyTorch; an empty image plane is an
error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, cast

import numpy as np

from .. import _validation as _v
from .._typing import ArrayLike, FloatArray, IntPair, NDArray, ParamLike
from ..backends import current as _backend

__all__ = [
    "conv2d_forward",
    "conv2d_backward",
    "conv2d_output_shape",
    "max_pool2d_forward",
    "max_pool2d_backward",
    "avg_pool2d_forward",
    "avg_pool2d_backward",
    "pool2d_output_shape",
    "ConvPlan",
    "PoolPlan",
]

_INT64 = np.dtype(np.int64)

#: A normalised ``(along H, along W)`` pair.
_Pair = tuple[int, int]
#: (B, C, H, W) or (B, O, Ho, Wo).
_Shape4 = tuple[int, int, int, int]
#: max pooling's indices of the maxima.
_Indices = NDArray[np.int64]


def _pair(value: IntPair | list[int], name: str, low: int) -> _Pair:
    """``value`` as a pair of Python ints, each in [``low``, MAX_DIM]."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        pair = tuple(value)
    else:
        pair = (value, value)
    out = []
    for item in pair:
        if isinstance(item, (bool, np.bool_)) or not isinstance(item, (int, np.integer)):
            raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
        if item < low:
            raise ValueError(f"{name} must be >= {low}, got {value!r}")
        if item > _v.MAX_DIM:
            raise ValueError(f"{name} must be at most 2**31 - 1, got {value!r}")
        out.append(int(item))
    return cast(_Pair, tuple(out))  # two items: checked above


def _input4d(x: ArrayLike, name: str = "x") -> FloatArray:
    x = _v.as_float_array(x, name)
    if x.ndim != 4:
        raise ValueError(f"{name} must be 4-D (batch, channels, height, width), got shape {x.shape}")
    return x


def conv2d_output_shape(
    input_shape: Sequence[int],
    weight_shape: Sequence[int],
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
) -> _Shape4:
    """Shape (B, O, Ho, Wo) of :func:`conv2d_forward`, or ``ValueError`` naming the shapes.

    Parameters
    ----------
    input_shape : (B, C, H, W)
    weight_shape : (O, C, kH, kW)
    stride, padding, dilation : int or (int, int)
    """
    stride = _pair(stride, "stride", 1)
    padding = _pair(padding, "padding", 0)
    dilation = _pair(dilation, "dilation", 1)
    return _conv_shape(_shape4(input_shape), _shape4(weight_shape, "weight_shape"), stride, padding, dilation)


def _conv_shape(xs: tuple[int, ...], ws: tuple[int, ...], stride: _Pair, padding: _Pair, dilation: _Pair) -> _Shape4:
    if len(xs) != 4:
        raise ValueError(f"conv2d input must be 4-D (batch, channels, height, width), got shape {xs}")
    if len(ws) != 4:
        raise ValueError(f"conv2d weight must be 4-D (out_channels, in_channels, kH, kW), got shape {ws}")
    if xs[1] != ws[1]:
        raise ValueError(
            f"conv2d: input has {xs[1]} channels (shape {xs}) but weight expects "
            f"{ws[1]} (shape {ws}, stored as (out, in, kH, kW))"
        )
    if min(ws) < 1:
        raise ValueError(f"conv2d weight shape {ws} has an empty dimension")
    _plane(xs, "conv2d")
    size = []
    for axis, name in ((0, "height"), (1, "width")):
        n, k = xs[2 + axis], ws[2 + axis]
        s, p, d = stride[axis], padding[axis], dilation[axis]
        span = d * (k - 1) + 1
        _v.dims_fit("conv2d", **{f"padded input {name}": n + 2 * p, f"dilated kernel {name}": span})
        if n + 2 * p < span:
            raise ValueError(
                f"conv2d: input {name} {n} (input shape {xs}) plus padding 2*{p} is smaller than the "
                f"kernel's reach {span} (weight shape {ws}, dilation {d})"
            )
        size.append((n + 2 * p - span) // s + 1)
    # the sizes of one image: its padded copy, and its product weight (O, C·kH·kW) x columns (C·kH·kW, Ho·Wo)
    _v.dims_fit(
        "conv2d",
        **{
            "padded image channels·height·width": _padded_image(xs, padding),
            "out_channels": ws[0],
            "in_channels·kH·kW": ws[1] * ws[2] * ws[3],
            "output height·width": size[0] * size[1],
        },
    )
    return (xs[0], ws[0], size[0], size[1])


def _padded_image(xs: tuple[int, ...], padding: _Pair) -> int:
    """Elements of one zero-padded input image, C·(H + 2·pH)·(W + 2·pW)."""
    return xs[1] * (xs[2] + 2 * padding[0]) * (xs[3] + 2 * padding[1])


def _plane(xs: tuple[int, ...], where: str) -> None:
    """An empty image plane is an error (PyTorch's rule): no window of it holds a pixel."""
    if xs[2] == 0 or xs[3] == 0:
        raise ValueError(f"{where}: input shape {xs} has an empty image plane (height or width 0)")


def _conv_args(
    x: ArrayLike, weight: ArrayLike, stride: IntPair, padding: IntPair, dilation: IntPair
) -> tuple[FloatArray, FloatArray, _Pair, _Pair, _Pair, _Shape4]:
    x = _input4d(x)
    weight = _v.as_float_array(weight, "weight")
    _v.same_dtype(x.dtype, weight, "weight")
    stride = _pair(stride, "stride", 1)
    padding = _pair(padding, "padding", 0)
    dilation = _pair(dilation, "dilation", 1)
    shape = _conv_shape(x.shape, weight.shape, stride, padding, dilation)
    return x, weight, stride, padding, dilation, shape


def conv2d_forward(
    x: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    out: FloatArray | None = None,
) -> FloatArray:
    """2-D convolution (cross-correlation, as PyTorch's ``conv2d``), NCHW.

    Parameters
    ----------
    x : array_like of shape (B, C, H, W)
    weight : array_like of shape (O, C, kH, kW)
    bias : array_like of shape (O,), optional
    stride : int or (int, int), default 1
    padding : int or (int, int), default 0
        Zeros added on both sides of each spatial axis.
    dilation : int or (int, int), default 1
    out : ndarray of shape (B, O, Ho, Wo), optional

    Returns
    -------
    ndarray of shape (B, O, Ho, Wo)

    Raises
    ------
    TypeError
        Non-float input or mixed dtypes.
    ValueError
        Input not 4-D, channel mismatch, kernel larger than the padded input,
        stride or dilation below 1, negative padding.
    """
    x, weight, stride, padding, dilation, shape = _conv_args(x, weight, stride, padding, dilation)
    if bias is not None:
        bias = _v.as_float_array(bias, "bias", ndim=1)
        _v.same_dtype(x.dtype, bias, "bias")
        if bias.shape[0] != weight.shape[0]:
            raise ValueError(f"bias has shape {bias.shape} but weight {weight.shape} has {weight.shape[0]} outputs")
    out = _v.output(out, shape, x.dtype, inputs=(x, weight, bias))
    if out.size == 0:  # empty batch: nothing to compute (kernels assume data)
        return out
    return _backend().conv2d_forward(x, weight, bias, stride, padding, dilation, out)


def conv2d_backward(
    grad_out: ArrayLike,
    x: ArrayLike,
    weight: ArrayLike,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    *,
    bias: bool = True,
    input_grad: bool = True,
    grad_input: FloatArray | None = None,
    grad_weight: FloatArray | None = None,
    grad_bias: FloatArray | None = None,
) -> tuple[FloatArray | None, FloatArray, FloatArray | None]:
    """Backward pass of :func:`conv2d_forward`.

    Parameters
    ----------
    grad_out : array_like of shape (B, O, Ho, Wo), dL/dy
    x : array_like of shape (B, C, H, W), the forward input
    weight : array_like of shape (O, C, kH, kW)
    stride, padding, dilation : int or (int, int), as in the forward pass
    bias : bool, default True
        Whether the layer has a bias (whether to compute its gradient).
    input_grad : bool, default True
        Whether to compute dL/dx (the first layer of a network does not need it).
    grad_input, grad_weight, grad_bias : ndarray, optional
        Buffers to write the gradients into (overwritten, not accumulated).

    Returns
    -------
    grad_input : ndarray of shape (B, C, H, W) or None
    grad_weight : ndarray of shape (O, C, kH, kW)
    grad_bias : ndarray of shape (O,) or None
    """
    x, weight, stride, padding, dilation, shape = _conv_args(x, weight, stride, padding, dilation)
    grad_out = _input4d(grad_out, "grad_out")
    _v.same_dtype(x.dtype, grad_out, "grad_out")
    _v.same_shape(shape, grad_out, "grad_out", "the convolution output")
    dt = x.dtype
    ins = (grad_out, x, weight)
    grad_input = _v.output(grad_input, x.shape, dt, "grad_input", ins) if input_grad else None
    grad_weight = _v.output(grad_weight, weight.shape, dt, "grad_weight", ins + (grad_input,))
    grad_bias = (
        _v.output(grad_bias, (weight.shape[0],), dt, "grad_bias", ins + (grad_input, grad_weight)) if bias else None
    )
    if x.shape[0] == 0:  # empty batch: the sums over it are zero
        grad_weight.fill(0)
        if grad_bias is not None:
            grad_bias.fill(0)
        return grad_input, grad_weight, grad_bias
    return _backend().conv2d_backward(
        grad_out, x, weight, stride, padding, dilation, grad_input, grad_weight, grad_bias
    )


def pool2d_output_shape(
    input_shape: Sequence[int], kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0
) -> _Shape4:
    """Shape (B, C, Ho, Wo) of a pooling, or ``ValueError`` naming the shapes.

    ``stride=None`` means ``stride = kernel_size`` (PyTorch's default).
    """
    kernel_size, stride, padding = _pool_params(kernel_size, stride, padding)
    return _pool_shape(_shape4(input_shape), kernel_size, stride, padding)


def _pool_params(kernel_size: IntPair, stride: IntPair | None, padding: IntPair) -> tuple[_Pair, _Pair, _Pair]:
    kernel_size = _pair(kernel_size, "kernel_size", 1)
    stride = kernel_size if stride is None else _pair(stride, "stride", 1)
    padding = _pair(padding, "padding", 0)
    for k, p in zip(kernel_size, padding):
        if p > k // 2:
            raise ValueError(f"pooling padding {padding} must be at most half the kernel size {kernel_size}")
    return kernel_size, stride, padding


def _pool_shape(xs: tuple[int, ...], kernel_size: _Pair, stride: _Pair, padding: _Pair) -> _Shape4:
    if len(xs) != 4:
        raise ValueError(f"pooling input must be 4-D (batch, channels, height, width), got shape {xs}")
    _plane(xs, "pooling")
    size = []
    for axis, name in ((0, "height"), (1, "width")):
        n, k, s, p = xs[2 + axis], kernel_size[axis], stride[axis], padding[axis]
        _v.dims_fit("pooling", **{f"padded input {name}": n + 2 * p})
        if n + 2 * p < k:
            raise ValueError(
                f"pooling: input {name} {n} (input shape {xs}) plus padding 2*{p} is smaller "
                f"than the kernel size {kernel_size}"
            )
        size.append((n + 2 * p - k) // s + 1)
    _v.dims_fit("pooling", **{"padded image channels·height·width": _padded_image(xs, padding)})
    return (xs[0], xs[1], size[0], size[1])


def max_pool2d_forward(
    x: ArrayLike,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: IntPair = 0,
    out: FloatArray | None = None,
    indices: _Indices | None = None,
) -> tuple[FloatArray, _Indices]:
    """2-D max pooling (PyTorch's ``max_pool2d``), with the winners' indices.

    Parameters
    ----------
    x : array_like of shape (B, C, H, W)
    kernel_size : int or (int, int)
    stride : int or (int, int), default ``kernel_size``
    padding : int or (int, int), default 0
        Implicit -inf on both sides; at most half the kernel size.
    out : ndarray of shape (B, C, Ho, Wo), optional
    indices : ndarray of int64, shape (B, C, Ho, Wo), optional

    Returns
    -------
    out : ndarray of shape (B, C, Ho, Wo)
    indices : ndarray of int64, shape (B, C, Ho, Wo)
        Flat index ``h·W + w`` of each maximum within its input plane (ties:
        the first in row-major window order; NaN wins and propagates).
    """
    x = _input4d(x)
    kernel_size, stride, padding = _pool_params(kernel_size, stride, padding)
    shape = _pool_shape(x.shape, kernel_size, stride, padding)
    out = _v.output(out, shape, x.dtype, inputs=(x,))
    if indices is None:
        indices = np.empty(shape, dtype=_INT64)
    else:
        _index_buffer(indices, shape, "indices")
        if np.may_share_memory(indices, x) or np.may_share_memory(indices, out):
            raise ValueError("indices must not overlap x or out")
    if out.size == 0:
        return out, indices
    return _backend().max_pool2d_forward(x, kernel_size, stride, padding, out, indices)


def _backward_args(grad_out: ArrayLike, input_shape: Sequence[int], where: str) -> tuple[FloatArray, _Shape4]:
    """A pooling backward's validated ``grad_out`` (4-D) and ``input_shape`` (with a non-empty image plane)."""
    grad_out = _input4d(grad_out, "grad_out")
    shape = _shape4(input_shape)
    _plane(shape, where)
    return grad_out, shape


def _shape4(shape: Sequence[int], name: str = "input_shape") -> _Shape4:
    """``shape`` as a tuple of 4 non-negative Python ints (bools and floats refused)."""
    try:
        items = tuple(shape)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of 4 ints, got {shape!r}") from None
    if len(items) != 4:
        raise ValueError(f"{name} must have 4 entries, got {shape!r}")
    for n in items:
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
            raise TypeError(f"{name} must hold ints, got {shape!r}")
        if n < 0:
            raise ValueError(f"{name} must not hold negative sizes, got {shape!r}")
    return cast(_Shape4, tuple(int(n) for n in items))  # four items: checked above


def _index_buffer(indices: NDArray[Any], shape: tuple[int, ...], name: str) -> None:
    if type(indices) is not np.ndarray or indices.dtype != _INT64:
        raise TypeError(f"{name} must be an int64 numpy.ndarray")
    if indices.shape != shape:
        raise ValueError(f"{name} has shape {indices.shape}, expected {shape}")
    if not indices.flags.c_contiguous or not indices.flags.writeable:
        raise ValueError(f"{name} must be C-contiguous and writeable")


def max_pool2d_backward(
    grad_out: ArrayLike, indices: ArrayLike, input_shape: Sequence[int], grad_input: FloatArray | None = None
) -> FloatArray:
    """Backward of :func:`max_pool2d_forward`: route each gradient to its maximum.

    Parameters
    ----------
    grad_out : array_like of shape (B, C, Ho, Wo)
    indices : ndarray of int64, shape (B, C, Ho, Wo), from the forward pass
    input_shape : (B, C, H, W), the shape of the forward input
    grad_input : ndarray of shape ``input_shape``, optional (overwritten)

    Returns
    -------
    ndarray of shape (B, C, H, W)
    """
    grad_out, input_shape = _backward_args(grad_out, input_shape, "max_pool2d_backward")
    if grad_out.shape[:2] != input_shape[:2]:
        raise ValueError(f"grad_out shape {grad_out.shape} does not match input shape {input_shape}")
    indices = np.asarray(indices)
    if indices.dtype != _INT64:
        raise TypeError(f"indices must be int64 (as returned by max_pool2d_forward), got {indices.dtype}")
    _v.same_shape(grad_out.shape, indices, "indices", "grad_out")
    indices = np.ascontiguousarray(indices)
    plane = input_shape[2] * input_shape[3]
    if indices.size and (indices.min() < 0 or indices.max() >= plane):
        raise ValueError(f"indices must lie in [0, {plane}) for input shape {input_shape}")
    grad_input = _v.output(grad_input, input_shape, grad_out.dtype, "grad_input", (grad_out, indices))
    if grad_input.size == 0:
        return grad_input
    return _backend().max_pool2d_backward(grad_out, indices, grad_input)


def avg_pool2d_forward(
    x: ArrayLike,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: IntPair = 0,
    count_include_pad: bool = True,
    out: FloatArray | None = None,
) -> FloatArray:
    """2-D average pooling (PyTorch's ``avg_pool2d``).

    Parameters
    ----------
    x : array_like of shape (B, C, H, W)
    kernel_size : int or (int, int)
    stride : int or (int, int), default ``kernel_size``
    padding : int or (int, int), default 0
        Implicit zeros on both sides; at most half the kernel size.
    count_include_pad : bool, default True
        Divide by ``kH·kW`` (True) or by the number of real pixels (False).
    out : ndarray of shape (B, C, Ho, Wo), optional

    Returns
    -------
    ndarray of shape (B, C, Ho, Wo)
    """
    x = _input4d(x)
    kernel_size, stride, padding = _pool_params(kernel_size, stride, padding)
    shape = _pool_shape(x.shape, kernel_size, stride, padding)
    out = _v.output(out, shape, x.dtype, inputs=(x,))
    if out.size == 0:
        return out
    return _backend().avg_pool2d_forward(x, kernel_size, stride, padding, bool(count_include_pad), out)


def avg_pool2d_backward(
    grad_out: ArrayLike,
    input_shape: Sequence[int],
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: IntPair = 0,
    count_include_pad: bool = True,
    grad_input: FloatArray | None = None,
) -> FloatArray:
    """Backward of :func:`avg_pool2d_forward`.

    Parameters
    ----------
    grad_out : array_like of shape (B, C, Ho, Wo)
    input_shape : (B, C, H, W), the shape of the forward input
    kernel_size, stride, padding, count_include_pad : as in the forward pass
    grad_input : ndarray of shape ``input_shape``, optional (overwritten)

    Returns
    -------
    ndarray of shape (B, C, H, W)
    """
    grad_out = _input4d(grad_out, "grad_out")
    kernel_size, stride, padding = _pool_params(kernel_size, stride, padding)
    input_shape = _shape4(input_shape)
    shape = _pool_shape(input_shape, kernel_size, stride, padding)
    _v.same_shape(shape, grad_out, "grad_out", "the pooling output")
    grad_input = _v.output(grad_input, input_shape, grad_out.dtype, "grad_input", (grad_out,))
    if grad_input.size == 0:
        return grad_input
    return _backend().avg_pool2d_backward(grad_out, kernel_size, stride, padding, bool(count_include_pad), grad_input)


# ---------------------------------------------------------------------------
# The bound forms layers use (see fastnn.ops._plan)

from . import _plan as _p  # noqa: E402
from ._planbase import KernelPlan as _KernelPlan  # noqa: E402
from ._planbase import WeightBiasBound as _WeightBiasBound  # noqa: E402
from ._planbase import WeightBiasPlan as _WeightBiasPlan  # noqa: E402
from ._planbase import fits as _fits  # noqa: E402
from ._planbase import float_c as _float_c  # noqa: E402

_nd = _p.ndarray

#: Distinct input shapes a plan remembers the validated output shape of.
_MAX_SHAPES = 16


class ConvPlan(_WeightBiasPlan):
    """:func:`conv2d_forward` and :func:`conv2d_backward` bound to one layer.

    Parameters
    ----------
    weight : Parameter-like, ``.data`` of shape (O, C, kH, kW)
    bias : Parameter-like of shape (O,), optional
    stride, padding, dilation : int or (int, int)

    Notes
    -----
    The parameters are validated when first seen and the output shape of
    each input shape once; a call then checks identities and the input's
    type, dtype and layout. Results come from the active workspace, or are
    new arrays.
    """

    __slots__ = ("stride", "padding", "dilation", "_shapes")

    _ndim = 4
    _where = "conv2d"
    _kernel_names = ("conv2d_forward", "conv2d_backward")
    _show_weight_shape = True

    stride: _Pair
    padding: _Pair
    dilation: _Pair
    #: (C, H, W) of an input -> (O, Ho, Wo) of its output
    _shapes: dict[tuple[int, ...], tuple[int, int, int]]

    def __init__(
        self,
        weight: ParamLike,
        bias: ParamLike | None = None,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
    ) -> None:
        super().__init__(weight, bias)
        self.stride = _pair(stride, "stride", 1)
        self.padding = _pair(padding, "padding", 0)
        self.dilation = _pair(dilation, "dilation", 1)
        self._shapes = {}

    def _bind(self) -> _WeightBiasBound:
        bound = super()._bind()
        self._shapes = {}  # the output shapes were validated against the old weight's
        return bound

    def _out_shape(self, xs: tuple[int, ...], k: _WeightBiasBound) -> _Shape4:
        """(B, O, Ho, Wo) for an input of shape ``xs`` = (B, C, H, W), validated once per (C, H, W)."""
        key = xs[1:]
        s = self._shapes.get(key)
        if s is None:
            s = _conv_shape(xs, k[4], self.stride, self.padding, self.dilation)[1:]
            shapes = self._shapes
            if len(shapes) >= _MAX_SHAPES:
                shapes.clear()
            shapes[key] = s
        return (xs[0],) + s

    def forward(self, x: ArrayLike) -> FloatArray:
        """Convolve ``x`` of shape (B, C, H, W); returns (B, O, Ho, Wo)."""
        k, w, b = self._for_forward()
        dt = k[3]
        if _fits(x, dt) and x.ndim == 4 and w.shape == k[4]:
            out = _p.output(self, "y", self._out_shape(x.shape, k), dt, x)
            if out.size == 0:
                return out
            return k[5](x, w, b, self.stride, self.padding, self.dilation, out)
        return conv2d_forward(x, w, b, self.stride, self.padding, self.dilation)

    def backward(
        self, grad_out: ArrayLike, x: ArrayLike, *, input_grad: bool = True, accumulate: bool = False
    ) -> FloatArray | None:
        """dL/dx (None if ``input_grad=False``) from dL/dy; writes ``weight.grad`` and ``bias.grad``.

        ``accumulate=True`` adds the parameter gradients instead of overwriting them.
        """
        k, w, dw, b, db = self._for_backward()
        dt = k[3]
        gw, gb = _p.grad_targets(self, dw, db, dt, accumulate)
        if (
            _fits(grad_out, dt)
            and _fits(x, dt)
            and x.ndim == 4
            and w.shape == k[4]
            and grad_out.shape == self._out_shape(x.shape, k)
            and x.shape[0] > 0
        ):
            gin = _p.output(self, "grad_input", x.shape, dt, grad_out) if input_grad else None
            k[6](grad_out, x, w, self.stride, self.padding, self.dilation, gin, gw, gb)
        else:
            gin = conv2d_backward(
                grad_out,
                x,
                w,
                self.stride,
                self.padding,
                self.dilation,
                bias=b is not None,
                input_grad=input_grad,
                grad_weight=gw,
                grad_bias=gb,
            )[0]
        if accumulate:
            _p.accumulate_grads(dw, gw, db, gb)
        return gin


class PoolPlan(_KernelPlan):
    """Max or average pooling and its backward pass bound to one configuration.

    Parameters
    ----------
    kind : {"max", "avg"}
    kernel_size, stride, padding : as :func:`max_pool2d_forward`
    count_include_pad : bool, for ``"avg"``
    """

    __slots__ = ("kind", "kernel_size", "stride", "padding", "count_include_pad", "_shapes")

    kind: Literal["max", "avg"]
    kernel_size: _Pair
    stride: _Pair
    padding: _Pair
    count_include_pad: bool
    #: input shape -> output shape
    _shapes: dict[tuple[int, ...], _Shape4]

    def __init__(
        self,
        kind: Literal["max", "avg"],
        kernel_size: IntPair,
        stride: IntPair | None = None,
        padding: IntPair = 0,
        count_include_pad: bool = True,
    ) -> None:
        self.kind = _v.choice(kind, "kind", ("max", "avg"))
        self.kernel_size, self.stride, self.padding = _pool_params(kernel_size, stride, padding)
        self.count_include_pad = bool(count_include_pad)
        self._bound = None
        self._shapes = {}

    def _kernel_names(self) -> tuple[str, str]:
        return f"{self.kind}_pool2d_forward", f"{self.kind}_pool2d_backward"

    def _out_shape(self, xs: tuple[int, ...]) -> _Shape4:
        s = self._shapes.get(xs)
        if s is None:
            s = _pool_shape(xs, self.kernel_size, self.stride, self.padding)
            shapes = self._shapes
            if len(shapes) >= _MAX_SHAPES:
                shapes.clear()
            shapes[xs] = s
        return s

    def forward(self, x: ArrayLike) -> FloatArray | tuple[FloatArray, _Indices]:
        """Pool ``x`` (B, C, H, W): max pooling returns ``(out, indices)``, average pooling ``out``."""
        k = self._kernels()
        if _float_c(x) and x.ndim == 4:
            shape = self._out_shape(x.shape)
            out = _p.output(self, "y", shape, x.dtype, x)
            if self.kind == "max":
                indices = _p.output(self, "indices", shape, _INT64)
                if out.size == 0:
                    return out, indices
                return k[1](x, self.kernel_size, self.stride, self.padding, out, indices)
            if out.size == 0:
                return out
            return k[1](x, self.kernel_size, self.stride, self.padding, self.count_include_pad, out)
        if self.kind == "max":
            return max_pool2d_forward(x, self.kernel_size, self.stride, self.padding)
        return avg_pool2d_forward(x, self.kernel_size, self.stride, self.padding, self.count_include_pad)

    def backward(self, grad_out: ArrayLike, input_shape: Sequence[int], indices: _Indices | None = None) -> FloatArray:
        """dL/dx of shape ``input_shape`` from dL/dy (max pooling: with the forward's ``indices``)."""
        k = self._kernels()
        if _float_c(grad_out) and type(input_shape) is tuple and grad_out.shape == self._out_shape(input_shape):
            gin = _p.output(self, "grad_input", input_shape, grad_out.dtype, grad_out)
            if gin.size == 0:
                return gin
            if self.kind == "avg":
                return k[2](grad_out, self.kernel_size, self.stride, self.padding, self.count_include_pad, gin)
            # every backend's kernel checks each index against the plane as it scatters (ValueError)
            if (
                type(indices) is _nd
                and indices.dtype is _INT64
                and indices.shape == grad_out.shape
                and indices.flags.c_contiguous
                and not np.may_share_memory(indices, gin)
            ):
                return k[2](grad_out, indices, gin)
        if self.kind == "max":
            if indices is None:
                raise TypeError("max pooling backward needs the indices returned by the forward pass")
            return max_pool2d_backward(grad_out, indices, input_shape)
        return avg_pool2d_backward(
            grad_out, input_shape, self.kernel_size, self.stride, self.padding, self.count_include_pad
        )
