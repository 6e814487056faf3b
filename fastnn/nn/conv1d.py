"""One-dimensional convolution and pooling: :class:`Conv1d`, :class:`MaxPool1d`, :class:`AvgPool1d`.

Sequences are (B, C, L), as in PyTorch. Each layer runs on the 2-D
machinery (:class:`fastnn.ops.ConvPlan`, :class:`fastnn.ops.PoolPlan`) with
the sequence seen as an image of height 1: ``x.reshape(B, C, 1, L)`` is a
view, and so is the output reshaped back, so a 1-D layer costs what the
2-D kernels cost on that image. ``Conv1d.weight`` keeps PyTorch's shape
(O, C, k); the kernels see it as (O, C, 1, k), a view of the same memory.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, cast, overload

import numpy as np

from .. import _validation as _v
from .. import ops
from .._typing import ArrayLike, DTypeLike, FloatArray, NDArray, ParameterSpec, Seed
from ..grad_mode import _enabled as _grad_enabled
from .conv import _conv_parameters, _conv_repr, _ConvNd, _PoolNd
from .module import Module, Parameter, register_module

__all__ = ["Conv1d", "MaxPool1d", "AvgPool1d"]


def _single(value: object, name: str, low: int) -> int:
    if isinstance(value, (tuple, list)):
        if len(value) != 1:
            raise ValueError(f"{name} must be an int or a 1-tuple, got {value!r}")
        value = value[0]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value!r}")
    if value > _v.MAX_DIM:
        raise ValueError(f"{name} must be at most 2**31 - 1, got {value!r}")
    return int(value)


class _As4d:
    """A (O, C, k) parameter as the (O, C, 1, k) one the 2-D plan reads: views, cached per array."""

    __slots__ = ("param", "_data", "_data4", "_grad", "_grad4")

    param: Parameter
    _data: FloatArray | None
    _data4: FloatArray
    _grad: FloatArray | None
    _grad4: FloatArray

    def __init__(self, param: Parameter) -> None:
        self.param = param
        self._data = self._grad = None  # _data4 and _grad4 are set with them

    @staticmethod
    def _view(a: FloatArray) -> FloatArray:
        return a.reshape(a.shape[0], a.shape[1], 1, a.shape[2]) if a.ndim == 3 else a

    @property
    def data(self) -> FloatArray:
        d = self.param.data
        if d is not self._data:
            self._data, self._data4 = d, self._view(d)
        return self._data4

    @property
    def grad(self) -> FloatArray:
        g = self.param.grad
        if g is not self._grad:
            self._grad, self._grad4 = g, self._view(g)
        return self._grad4


def _sequence(layer: Module, x: ArrayLike, channels: int | None = None) -> NDArray[Any]:
    """``x`` (B, C, L) as the (B, C, 1, L) image the 2-D kernels take (a view when contiguous)."""
    if type(x) is not np.ndarray:
        x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"{type(layer).__name__}: expected a 3-D input (batch, channels, length), got shape {x.shape}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(
            f"{type(layer).__name__}: input has {x.shape[1]} channels (shape {x.shape}) but the layer "
            f"was built with in_channels={channels}"
        )
    if not x.flags.c_contiguous:
        x = np.ascontiguousarray(x)
    return x.reshape(x.shape[0], x.shape[1], 1, x.shape[2])


@overload
def _squeeze(y: FloatArray) -> FloatArray: ...
@overload
def _squeeze(y: FloatArray | None) -> FloatArray | None: ...
def _squeeze(y: FloatArray | None) -> FloatArray | None:
    return None if y is None else y.reshape(y.shape[0], y.shape[1], y.shape[3])


def _grad4(g: ArrayLike) -> FloatArray:
    g = np.asarray(g)
    if g.ndim != 3:
        raise ValueError(f"grad_output must be 3-D (batch, channels, length), got shape {g.shape}")
    return np.ascontiguousarray(g).reshape(g.shape[0], g.shape[1], 1, g.shape[2])


@register_module
class Conv1d(_ConvNd):
    """1-D convolution over (B, C, L) sequences (PyTorch's ``nn.Conv1d``, ``groups=1``).

    Parameters
    ----------
    in_channels : int, C
    out_channels : int, O
    kernel_size : int, k
    stride : int, default 1
    padding : int, default 0 (zeros on both ends)
    dilation : int, default 1
    bias : bool, default True
    dtype : float32 or float64, default float32
    rng : numpy.random.Generator or int, optional

    Attributes
    ----------
    weight : Parameter of shape (O, C, k), ``U(-1/sqrt(C·k), 1/sqrt(C·k))``
    bias : Parameter of shape (O,) or None, same bound

    Shapes: input (B, C, L), output (B, O, Lo) with
    ``Lo = (L + 2·padding - dilation·(k - 1) - 1) // stride + 1``.
    """

    kernel_size: int
    stride: int
    padding: int
    dilation: int

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        bias: bool = True,
        dtype: DTypeLike = np.float32,
        rng: Seed = None,
    ) -> None:
        super().__init__()
        self._build(in_channels, out_channels, (kernel_size, stride, padding, dilation), bias, dtype, rng)

    _size = staticmethod(_single)

    @staticmethod
    def _config_size(value: int) -> int:
        return value

    def _kernel_dims(self) -> tuple[int, ...]:
        return (self.kernel_size,)

    def _reset_transient(self) -> None:
        self.__dict__["_plan"] = ops.ConvPlan(
            _As4d(self.weight), self.bias, (1, self.stride), (0, self.padding), (1, self.dilation)
        )
        self.__dict__["_ctx"] = None

    def forward(self, x: ArrayLike) -> FloatArray:
        """Convolve ``x`` of shape (B, C, L); returns (B, O, Lo)."""
        return _squeeze(self._convolve(x, _sequence(self, x, self.in_channels)))

    def backward(
        self, grad_output: ArrayLike, *, input_grad: bool = True, accumulate: bool = False
    ) -> FloatArray | None:
        """Fill ``weight.grad`` (and ``bias.grad``); return dL/dx (B, C, L) (None if ``input_grad=False``)."""
        x4 = self._saved()
        return _squeeze(self._plan.backward(_grad4(grad_output), x4, input_grad=input_grad, accumulate=accumulate))

    @classmethod
    def parameters_from_config(cls, config: dict[str, Any], children: Collection[str] = ()) -> list[ParameterSpec]:
        """``[(name, shape, dtype name)]`` that ``Conv1d(**config)`` creates, config checked (see Module)."""
        return _conv_parameters(config, children, "Conv1d", lambda v, name, low: (_single(v, name, low),))

    def extra_repr(self) -> str:
        return _conv_repr(self, str, 1, 0)


class _Pool1d(_PoolNd):
    kernel_size: int
    stride: int
    padding: int

    def __init__(
        self, kernel_size: int, stride: int | None = None, padding: int = 0, count_include_pad: bool = True
    ) -> None:
        super().__init__()
        self._build(kernel_size, stride, padding, count_include_pad)

    _size = staticmethod(_single)

    @staticmethod
    def _as2d(value: int, height: int) -> tuple[int, int]:
        return (height, value)

    def get_config(self) -> dict[str, Any]:
        return {"kernel_size": self.kernel_size, "stride": self.stride, "padding": self.padding}

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"

    @classmethod
    def parameters_from_config(cls, config: dict[str, Any], children: Collection[str] = ()) -> list[ParameterSpec]:
        """No parameters; the config is checked by the (allocation-free) constructor (see Module)."""
        cls(**_v.layer_config(config, cls.__name__, tuple(cls(1).get_config()), children))
        return []


@register_module
class MaxPool1d(_Pool1d):
    """1-D max pooling of (B, C, L) sequences (PyTorch's ``nn.MaxPool1d``; implicit -inf padding).

    Parameters
    ----------
    kernel_size : int
    stride : int, default ``kernel_size``
    padding : int, default 0 (at most half the kernel size)
    """

    _kind = "max"

    def __init__(self, kernel_size: int, stride: int | None = None, padding: int = 0) -> None:
        super().__init__(kernel_size, stride, padding)

    def forward(self, x: ArrayLike) -> FloatArray:
        """Max over each window of ``x`` (B, C, L); returns (B, C, Lo)."""
        x4 = _sequence(self, x)
        # a max-pooling plan returns (out, indices)
        y, indices = cast("tuple[FloatArray, NDArray[np.int64]]", self._plan.forward(x4))
        if _grad_enabled.get():
            self.__dict__["_ctx"] = (x4.shape, indices)
        return _squeeze(y)

    def backward(self, grad_output: ArrayLike, *, input_grad: bool = True, accumulate: bool = False) -> FloatArray:
        """Route each gradient to the maximum it came from; returns dL/dx (B, C, L)."""
        shape, indices = self._saved()
        return _squeeze(self._plan.backward(_grad4(grad_output), shape, indices))


@register_module
class AvgPool1d(_Pool1d):
    """1-D average pooling of (B, C, L) sequences (PyTorch's ``nn.AvgPool1d``; implicit zero padding).

    Parameters
    ----------
    kernel_size : int
    stride : int, default ``kernel_size``
    padding : int, default 0 (at most half the kernel size)
    count_include_pad : bool, default True
    """

    _kind = "avg"

    def forward(self, x: ArrayLike) -> FloatArray:
        """Mean over each window of ``x`` (B, C, L); returns (B, C, Lo)."""
        x4 = _sequence(self, x)
        y = cast(FloatArray, self._plan.forward(x4))  # an average-pooling plan returns the output alone
        if _grad_enabled.get():
            self.__dict__["_ctx"] = x4.shape
        return _squeeze(y)

    def backward(self, grad_output: ArrayLike, *, input_grad: bool = True, accumulate: bool = False) -> FloatArray:
        """Spread each gradient evenly over its window; returns dL/dx (B, C, L)."""
        return _squeeze(self._plan.backward(_grad4(grad_output), self._saved()))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "count_include_pad": self.count_include_pad}

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.count_include_pad else ", count_include_pad=False")
