"""Convolutional layers: :class:`Conv2d`, :class:`MaxPool2d`, :class:`AvgPool2d`, :class:`Flatten`.

Images are NCHW: (B, C, H, W). Names, shapes, defaults and initialisation
follow PyTorch, so ``state_dict`` keys (``weight`` of shape (O, C, kH, kW),
``bias`` of shape (O,)) move between the two libraries unchanged.

Each layer reaches its kernels through one bound plan
(:class:`fastnn.ops.ConvPlan`, :class:`fastnn.ops.PoolPlan`) and returns new
arrays, or the buffers of the active :class:`fastnn.Workspace`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from typing import Any, ClassVar, Literal, cast

import numpy as np

from .. import _validation as _v
from .. import ops
from .._typing import ArrayLike, DTypeLike, FloatArray, IntPair, NDArray, ParameterSpec, Seed
from ..grad_mode import _enabled as _grad_enabled
from ..ops.conv import _pair
from .init import get_rng as _get_rng
from .module import Module, Parameter, register_module

__all__ = ["Conv2d", "MaxPool2d", "AvgPool2d", "Flatten"]


def _shape_of(x: ArrayLike) -> tuple[int, ...]:
    return x.shape if type(x) is np.ndarray else np.shape(x)


def _fmt(pair: tuple[int, int]) -> int | tuple[int, int]:
    return pair[0] if pair[0] == pair[1] else pair


def _conv_parameters(
    config: dict[str, Any], children: Collection[str], layer: str, size: Callable[[Any, str, int], tuple[int, ...]]
) -> list[ParameterSpec]:
    """``parameters_from_config`` of a convolution ``layer`` whose sizes ``size`` checks (a pair, or one int)."""
    c = _v.layer_config(
        config,
        layer,
        ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "bias", "dtype"),
        children,
    )
    i, o = _v.positive_int(c["in_channels"], "in_channels"), _v.positive_int(c["out_channels"], "out_channels")
    k = size(c["kernel_size"], "kernel_size", 1)
    size(c["stride"], "stride", 1), size(c["padding"], "padding", 0), size(c["dilation"], "dilation", 1)
    dt = _v.strict_float_dtype(c["dtype"]).name
    return [("weight", (o, i) + k, dt)] + ([("bias", (o,), dt)] if _v.strict_bool(c["bias"], "bias") else [])


def _conv_repr(layer: Any, fmt: Callable[[Any], object], one: object, zero: object) -> str:
    """``extra_repr`` of a convolution: the sizes (through ``fmt``) that differ from their defaults."""
    s = f"{layer.in_channels}, {layer.out_channels}, kernel_size={fmt(layer.kernel_size)}"
    for name, default in (("stride", one), ("padding", zero), ("dilation", one)):
        value = getattr(layer, name)
        if value != default:
            s += f", {name}={fmt(value)}"
    if layer.bias is None:
        s += ", bias=False"
    if layer.weight.data.dtype != np.float32:
        s += f", dtype={layer.weight.data.dtype.name}"
    return s


class _ConvNd(Module):
    """What Conv1d and Conv2d share: the checked sizes, the parameters and their initialisation, the bound plan."""

    _plan: ops.ConvPlan
    in_channels: int
    out_channels: int
    weight: Parameter
    bias: Parameter | None

    @staticmethod
    def _size(value: Any, name: str, low: int) -> Any:
        """One checked size argument: a pair (Conv2d) or an int (Conv1d)."""
        raise NotImplementedError

    @staticmethod
    def _config_size(value: Any) -> Any:
        """A size as ``get_config`` gives it (JSON: a pair becomes a list)."""
        raise NotImplementedError

    def _kernel_dims(self) -> tuple[int, ...]:
        raise NotImplementedError

    def _build(
        self,
        in_channels: int,
        out_channels: int,
        sizes: tuple[object, object, object, object],
        bias: bool,
        dtype: DTypeLike,
        rng: Seed,
    ) -> None:
        """Check the arguments, create the parameters and draw their initial values (after ``Module.__init__``)."""
        kernel_size, stride, padding, dilation = sizes
        self.in_channels = _v.positive_int(in_channels, "in_channels")
        self.out_channels = _v.positive_int(out_channels, "out_channels")
        self.kernel_size = self._size(kernel_size, "kernel_size", 1)
        self.stride = self._size(stride, "stride", 1)
        self.padding = self._size(padding, "padding", 0)
        self.dilation = self._size(dilation, "dilation", 1)
        dt = _v.strict_float_dtype(dtype)
        self.weight = Parameter(np.empty((self.out_channels, self.in_channels) + self._kernel_dims(), dt))
        self.bias = Parameter(np.empty(self.out_channels, dt)) if _v.strict_bool(bias, "bias") else None
        self._reset_transient()
        self.reset_parameters(rng)

    _transient = ("_plan",)

    def reset_parameters(self, rng: Seed = None) -> None:
        """PyTorch's initialisation: weight and bias ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, fan_in = C·(kernel size)."""
        rng = _get_rng(rng)
        bound = 1.0 / math.sqrt(self.in_channels * math.prod(self._kernel_dims()))
        dt = self.weight.data.dtype
        self.weight.data[...] = rng.uniform(-bound, bound, self.weight.data.shape).astype(dt)
        if self.bias is not None:
            self.bias.data[...] = rng.uniform(-bound, bound, self.bias.data.shape).astype(dt)

    def _convolve(self, x: ArrayLike, image: NDArray[Any] | ArrayLike) -> FloatArray:
        """The plan's output for ``image``, the input ``x`` as the plan takes it; kept for backward when recording."""
        try:
            y = self._plan.forward(image)
        except TypeError as exc:
            raise self._input_error(x, exc) from None
        if _grad_enabled.get():
            self.__dict__["_ctx"] = image
        return y

    def get_config(self) -> dict[str, Any]:
        size = self._config_size
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": size(self.kernel_size),
            "stride": size(self.stride),
            "padding": size(self.padding),
            "dilation": size(self.dilation),
            "bias": self.bias is not None,
            "dtype": self.weight.data.dtype.name,
        }


@register_module
class Conv2d(_ConvNd):
    """2-D convolution over NCHW images (PyTorch's ``nn.Conv2d``, ``groups=1``).

    ``y[b, o] = bias[o] + Σ_c weight[o, c] ⋆ x[b, c]`` (cross-correlation),
    with zero padding, stride and dilation.

    Parameters
    ----------
    in_channels : int, C
    out_channels : int, O
    kernel_size : int or (int, int), (kH, kW)
    stride : int or (int, int), default 1
    padding : int or (int, int), default 0
        Zeros added on both sides of each spatial axis.
    dilation : int or (int, int), default 1
    bias : bool, default True
    dtype : float32 or float64, default float32
    rng : numpy.random.Generator or int, optional
        Generator for the initial values.

    Attributes
    ----------
    weight : Parameter of shape (O, C, kH, kW)
        Initialised as PyTorch does: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``,
        ``fan_in = C·kH·kW``.
    bias : Parameter of shape (O,) or None
        ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.

    Shapes: input (B, C, H, W), output (B, O, Ho, Wo) with
    ``Ho = (H + 2·pH - dH·(kH - 1) - 1) // sH + 1`` (same for W).
    """

    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        bias: bool = True,
        dtype: DTypeLike = np.float32,
        rng: Seed = None,
    ) -> None:
        super().__init__()
        self._build(in_channels, out_channels, (kernel_size, stride, padding, dilation), bias, dtype, rng)

    _size = staticmethod(_pair)

    @staticmethod
    def _config_size(value: tuple[int, int]) -> list[int]:
        return list(value)

    def _kernel_dims(self) -> tuple[int, ...]:
        return self.kernel_size

    def _reset_transient(self) -> None:
        plan = ops.ConvPlan(self.weight, self.bias, self.stride, self.padding, self.dilation)
        self.__dict__["_plan"] = plan
        self.__dict__["_ctx"] = None

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, int, int, int]:
        """Output shape for an input shape (``ValueError`` if the input is too small)."""
        return ops.conv2d_output_shape(input_shape, self.weight.data.shape, self.stride, self.padding, self.dilation)

    def forward(self, x: ArrayLike) -> FloatArray:
        """Convolve ``x`` of shape (B, C, H, W); returns (B, O, Ho, Wo)."""
        return self._convolve(x, x)

    def backward(
        self, grad_output: ArrayLike, *, input_grad: bool = True, accumulate: bool = False
    ) -> FloatArray | None:
        """Fill ``weight.grad`` (and ``bias.grad``); return dL/dx (None if ``input_grad=False``)."""
        return self._plan.backward(grad_output, self._saved(), input_grad=input_grad, accumulate=accumulate)

    @classmethod
    def parameters_from_config(cls, config: dict[str, Any], children: Collection[str] = ()) -> list[ParameterSpec]:
        """``[(name, shape, dtype name)]`` that ``Conv2d(**config)`` creates, config checked (see Module)."""
        return _conv_parameters(config, children, "Conv2d", _pair)

    def extra_repr(self) -> str:
        return _conv_repr(self, _fmt, (1, 1), (0, 0))


class _PoolNd(Module):
    """What the pooling layers share: the checked sizes and the 2-D plan (a 1-D layer's as an image of height 1)."""

    #: kind understood by ``ops.PoolPlan`` (set by each subclass)
    _kind: ClassVar[Literal["max", "avg"]]
    _plan: ops.PoolPlan

    @staticmethod
    def _size(value: Any, name: str, low: int) -> Any:
        """One checked size argument: a pair (2-D) or an int (1-D)."""
        raise NotImplementedError

    @staticmethod
    def _as2d(value: Any, height: int) -> tuple[int, int]:
        """A checked size as the 2-D plan takes it; a 1-D layer's gets ``height`` along H."""
        raise NotImplementedError

    def _build(self, kernel_size: object, stride: object, padding: object, count_include_pad: bool) -> None:
        """Check the arguments and bind the plan (after ``Module.__init__``)."""
        self.kernel_size = self._size(kernel_size, "kernel_size", 1)
        self.stride = self.kernel_size if stride is None else self._size(stride, "stride", 1)
        self.padding = self._size(padding, "padding", 0)
        (kh, kw), (ph, pw) = self._as2d(self.kernel_size, 1), self._as2d(self.padding, 0)
        if ph > kh // 2 or pw > kw // 2:
            raise ValueError(f"padding {self.padding} must be at most half the kernel size {self.kernel_size}")
        self.count_include_pad = _v.strict_bool(count_include_pad, "count_include_pad")
        self._reset_transient()

    _transient = ("_plan",)

    def _reset_transient(self) -> None:
        as2d = self._as2d
        self.__dict__["_plan"] = ops.PoolPlan(
            self._kind, as2d(self.kernel_size, 1), as2d(self.stride, 1), as2d(self.padding, 0), self.count_include_pad
        )
        self.__dict__["_ctx"] = None


class _Pool2d(_PoolNd):
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]

    def __init__(
        self, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0, count_include_pad: bool = True
    ) -> None:
        super().__init__()
        self._build(kernel_size, stride, padding, count_include_pad)

    _size = staticmethod(_pair)

    @staticmethod
    def _as2d(value: tuple[int, int], height: int) -> tuple[int, int]:
        return value

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, int, int, int]:
        """Output shape for an input shape (``ValueError`` if the input is too small)."""
        return ops.pool2d_output_shape(input_shape, self.kernel_size, self.stride, self.padding)

    def get_config(self) -> dict[str, Any]:
        return {"kernel_size": list(self.kernel_size), "stride": list(self.stride), "padding": list(self.padding)}

    def extra_repr(self) -> str:
        return f"kernel_size={_fmt(self.kernel_size)}, stride={_fmt(self.stride)}, padding={_fmt(self.padding)}"

    @classmethod
    def parameters_from_config(cls, config: dict[str, Any], children: Collection[str] = ()) -> list[ParameterSpec]:
        """No parameters; the config is checked by the (allocation-free) constructor (see Module)."""
        cls(**_v.layer_config(config, cls.__name__, ("kernel_size", "stride", "padding"), children))
        return []


@register_module
class MaxPool2d(_Pool2d):
    """2-D max pooling (PyTorch's ``nn.MaxPool2d``; implicit -inf padding).

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), default ``kernel_size``
    padding : int or (int, int), default 0 (at most half the kernel size)

    Ties go to the first maximum in row-major window order; NaN propagates.
    Shapes: input (B, C, H, W), output (B, C, Ho, Wo).
    """

    _kind = "max"

    def __init__(self, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0) -> None:
        super().__init__(kernel_size, stride, padding)

    def forward(self, x: ArrayLike) -> FloatArray:
        """Max over each window of ``x`` (B, C, H, W)."""
        # a max PoolPlan returns (out, indices)
        y, indices = cast("tuple[FloatArray, NDArray[np.int64]]", self._plan.forward(x))
        if _grad_enabled.get():
            self.__dict__["_ctx"] = (_shape_of(x), indices)
        return y

    def backward(self, grad_output: ArrayLike, *, input_grad: bool = True, accumulate: bool = False) -> FloatArray:
        """Route each gradient to the maximum it came from; returns dL/dx (B, C, H, W)."""
        shape, indices = self._saved()
        return self._plan.backward(grad_output, shape, indices)


@register_module
class AvgPool2d(_Pool2d):
    """2-D average pooling (PyTorch's ``nn.AvgPool2d``; implicit zero padding).

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), default ``kernel_size``
    padding : int or (int, int), default 0 (at most half the kernel size)
    count_include_pad : bool, default True
        Divide by ``kH·kW`` (True, PyTorch's default) or by the number of
        real pixels in the window.

    Shapes: input (B, C, H, W), output (B, C, Ho, Wo).
    """

    _kind = "avg"

    def forward(self, x: ArrayLike) -> FloatArray:
        """Mean over each window of ``x`` (B, C, H, W)."""
        y = cast(FloatArray, self._plan.forward(x))  # an avg PoolPlan returns the output alone
        if _grad_enabled.get():
            self.__dict__["_ctx"] = _shape_of(x)
        return y

    def backward(self, grad_output: ArrayLike, *, input_grad: bool = True, accumulate: bool = False) -> FloatArray:
        """Spread each gradient evenly over its window; returns dL/dx (B, C, H, W)."""
        return self._plan.backward(grad_output, self._saved())

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "count_include_pad": self.count_include_pad}

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.count_include_pad else ", count_include_pad=False")

    @classmethod
    def parameters_from_config(cls, config: dict[str, Any], children: Collection[str] = ()) -> list[ParameterSpec]:
        """No parameters; the config is checked by the (allocation-free) constructor (see Module)."""
        keys = ("kernel_size", "stride", "padding", "count_include_pad")
        cls(**_v.layer_config(config, "AvgPool2d", keys, children))
        return []


@register_module
class Flatten(Module):
    """Flatten dimensions ``start_dim..end_dim`` into one (PyTorch's ``nn.Flatten``).

    A view, not a copy, for C-contiguous input: (B, C, H, W) -> (B, C·H·W)
    with the defaults. ``backward`` reshapes the gradient back.

    Parameters
    ----------
    start_dim : int, default 1
    end_dim : int, default -1
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = _v.strict_int(start_dim, "start_dim")
        self.end_dim = _v.strict_int(end_dim, "end_dim")
        self._reset_transient()

    def forward(self, x: ArrayLike) -> NDArray[Any]:
        """``x`` with dimensions ``start_dim..end_dim`` merged (a view for C-contiguous input)."""
        x = np.asarray(x)
        nd = x.ndim
        s = self.start_dim + nd if self.start_dim < 0 else self.start_dim
        e = self.end_dim + nd if self.end_dim < 0 else self.end_dim
        if not 0 <= s <= e < nd:
            raise ValueError(
                f"Flatten(start_dim={self.start_dim}, end_dim={self.end_dim}) does not fit an input of shape {x.shape}"
            )
        if _grad_enabled.get():
            self.__dict__["_ctx"] = x.shape
        return x.reshape(x.shape[:s] + (math.prod(x.shape[s : e + 1]),) + x.shape[e + 1 :])

    def backward(self, grad_output: ArrayLike, *, input_grad: bool = True, accumulate: bool = False) -> NDArray[Any]:
        """The gradient reshaped to the input's shape."""
        return np.asarray(grad_output).reshape(self._saved())

    def get_config(self) -> dict[str, Any]:
        return {"start_dim": self.start_dim, "end_dim": self.end_dim}

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"

    @classmethod
    def parameters_from_config(cls, config: dict[str, Any], children: Collection[str] = ()) -> list[ParameterSpec]:
        """No parameters; checks ``start_dim`` and ``end_dim`` (see Module)."""
        cls(**_v.layer_config(config, "Flatten", ("start_dim", "end_dim"), children))
        return []
