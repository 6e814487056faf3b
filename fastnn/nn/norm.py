"""Normalisation layers: :class:`BatchNorm1d`, :class:`BatchNorm2d`, :class:`LayerNorm`.

Names, arguments, defaults, initial values and ``state_dict`` keys are
PyTorch's, buffers included: a batch norm's ``state_dict`` holds ``weight``,
``bias``, ``running_mean``, ``running_var`` and ``num_batches_tracked``
(int64), so ``load_state_dict`` takes a PyTorch model's state as it is.

Batch norm in training mode normalises by the batch's own statistics and
updates the running ones (``momentum`` is the weight of the new batch,
PyTorch's convention; ``momentum=None`` keeps a cumulative average); in
evaluation mode (``model.eval()``, or :func:`fastnn.inference_mode`, which
:func:`fastnn.predict` and :func:`fastnn.evaluate` use) it normalises by the
running statistics and changes nothing. As in PyTorch, a training-mode
forward pass updates the running statistics also under
:func:`fastnn.no_grad`; use :func:`fastnn.inference_mode` or ``eval()`` for
inference that writes nothing on the model.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from .. import _validation as _v
from .. import ops
from .._typing import ArrayLike, DTypeLike, FloatArray, ParameterSpec
from ..grad_mode import _enabled as _grad_enabled
from .module import Module, Parameter, register_module

__all__ = ["BatchNorm1d", "BatchNorm2d", "LayerNorm"]

_I64 = np.dtype(np.int64)


def _momentum(momentum: float | None) -> float | None:
    if momentum is None:
        return None
    return _v.scalar(_v.strict_real(momentum, "momentum"), "momentum", low=0.0, high=1.0)


def _eps(eps: float) -> float:
    return _v.scalar(_v.strict_real(eps, "eps"), "eps", low=0.0, low_open=True)


class _Normalization(Module):
    """What the normalisation layers share: a plan bound to their optional γ and β, a dtype kept without them."""

    _transient = ("_plan",)

    def _new_plan(self) -> ops.BatchNormPlan | ops.LayerNormPlan:
        raise NotImplementedError

    def _reset_transient(self) -> None:
        self.__dict__["_plan"] = self._new_plan()
        self.__dict__["_ctx"] = None

    def _to_dtype(self, dt: np.dtype[Any]) -> None:
        self.__dict__["_dtype"] = dt

    def _init_affine(self, shape: int | tuple[int, ...], dt: np.dtype[Any], weight: bool, bias: bool) -> None:
        """PyTorch's initial values: γ (``weight``) ones and, with ``bias``, β zeros; None where not learned.

        The dtype is kept also for a layer without them.
        """
        self.weight = Parameter(np.ones(shape, dt)) if weight else None
        self.bias = Parameter(np.zeros(shape, dt)) if weight and bias else None
        self.__dict__["_dtype"] = dt

    def reset_parameters(self) -> None:
        """γ = 1, β = 0."""
        if self.weight is not None:
            self.weight.data[...] = 1
        if self.bias is not None:
            self.bias.data[...] = 0


class _BatchNorm(_Normalization):
    """Shared machinery of the batch norms (they differ in the input rank they accept)."""

    #: the input ranks the layer accepts, and how its error messages name them
    _ranks: tuple[int, ...] = ()
    _layout = ""
    _plan: ops.BatchNormPlan
    # buffers (register_buffer), None without track_running_stats
    running_mean: FloatArray | None
    running_var: FloatArray | None
    num_batches_tracked: np.ndarray | None

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__()
        self.num_features = _v.positive_int(num_features, "num_features")
        self.eps = _eps(eps)
        self.momentum = _momentum(momentum)
        self.affine = _v.strict_bool(affine, "affine")
        self.track_running_stats = _v.strict_bool(track_running_stats, "track_running_stats")
        dt = _v.strict_float_dtype(dtype)
        C = self.num_features
        self._init_affine(C, dt, self.affine, True)
        # PyTorch's initial values: running mean 0 and variance 1
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(C, dt))
            self.register_buffer("running_var", np.ones(C, dt))
            self.register_buffer("num_batches_tracked", np.zeros((), _I64))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)
        self._reset_transient()

    def _new_plan(self) -> ops.BatchNormPlan:
        return ops.BatchNormPlan(self.num_features, self.weight, self.bias, self.eps)

    @property
    def dtype(self) -> np.dtype[Any]:
        return (
            self.weight.data.dtype
            if self.weight is not None
            else (self.running_mean.dtype if self.running_mean is not None else self.__dict__["_dtype"])
        )

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, no batches tracked."""
        if self.track_running_stats:
            for buf, value in ((self.running_mean, 0), (self.running_var, 1), (self.num_batches_tracked, 0)):
                if buf is not None:
                    buf[...] = value

    def reset_parameters(self) -> None:
        """Running statistics reset, γ = 1 and β = 0."""
        self.reset_running_stats()
        super().reset_parameters()

    def _check_input(self, x: ArrayLike) -> None:
        shape = np.shape(x)
        if len(shape) not in self._ranks:
            raise ValueError(f"{type(self).__name__}: expected {self._layout} input, got shape {shape}")
        if shape[1] != self.num_features:
            raise ValueError(
                f"{type(self).__name__}: input has {shape[1]} channels (shape {shape}) but the layer "
                f"was built with num_features={self.num_features}"
            )

    def forward(self, x: ArrayLike) -> FloatArray:
        """Normalise ``x``: batch statistics while training (updating the running ones), running ones in eval."""
        if type(x) is not np.ndarray:
            x = np.asarray(x)
        self._check_input(x)
        training = self._is_training()
        track = self.track_running_stats
        batch_stats = training or not track
        momentum = self.momentum
        rm = rv = counted = None
        if track:
            rm, rv = self.running_mean, self.running_var
            if training and self.num_batches_tracked is not None:
                counted = self.num_batches_tracked
                counted += 1  # in place: the buffer itself
                if momentum is None:  # cumulative moving average
                    momentum = 1.0 / float(counted)
        try:
            y, mean, var = self._plan.forward(x, batch_stats, rm, rv, 0.0 if momentum is None else momentum)
        except TypeError as exc:
            if counted is not None:
                counted -= 1
            raise self._input_error(x, exc) from None
        except ValueError:
            if counted is not None:
                counted -= 1
            raise
        if _grad_enabled.get():
            self.__dict__["_ctx"] = (x, mean, var, batch_stats)
        return y

    def _input_error(self, x: object, exc: Exception) -> Exception:
        if self.weight is None and self.running_mean is None:
            return exc
        return super()._input_error(x, exc)

    def backward(
        self, grad_output: ArrayLike, *, input_grad: bool = True, accumulate: bool = False
    ) -> FloatArray | None:
        """Fill ``weight.grad`` and ``bias.grad``; return dL/dx (None if ``input_grad=False``)."""
        x, mean, var, batch_stats = self._saved()
        return self._plan.backward(grad_output, x, mean, var, batch_stats, input_grad=input_grad, accumulate=accumulate)

    def get_config(self) -> dict[str, Any]:
        return {
            "num_features": self.num_features,
            "eps": self.eps,
            "momentum": self.momentum,
            "affine": self.affine,
            "track_running_stats": self.track_running_stats,
            "dtype": self.dtype.name,
        }

    def extra_repr(self) -> str:
        s = (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}"
        )
        return s + ("" if self.dtype == np.float32 else f", dtype={self.dtype.name}")

    @classmethod
    def parameters_from_config(cls, config: dict[str, Any], children: Collection[str] = ()) -> list[ParameterSpec]:
        """Parameters, then buffers (``num_batches_tracked`` int64), that ``cls(**config)`` makes (see Module)."""
        c = _v.layer_config(
            config,
            cls.__name__,
            ("num_features", "eps", "momentum", "affine", "track_running_stats", "dtype"),
            children,
        )
        C = _v.positive_int(c["num_features"], "num_features")
        _eps(c["eps"]), _momentum(c["momentum"])
        dt = _v.strict_float_dtype(c["dtype"]).name
        out: list[ParameterSpec] = (
            [("weight", (C,), dt), ("bias", (C,), dt)] if _v.strict_bool(c["affine"], "affine") else []
        )
        if _v.strict_bool(c["track_running_stats"], "track_running_stats"):
            out += [("running_mean", (C,), dt), ("running_var", (C,), dt), ("num_batches_tracked", (), "int64")]
        return out


@register_module
class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L) input (PyTorch's ``nn.BatchNorm1d``).

    Parameters
    ----------
    num_features : int, C
    eps : float, default 1e-5
        Added to the variance.
    momentum : float in [0, 1] or None, default 0.1
        ``running = (1 − momentum)·running + momentum·batch`` (the running
        variance takes the unbiased batch variance); None: cumulative
        average over all batches so far.
    affine : bool, default True
        Learn γ (``weight``, ones) and β (``bias``, zeros).
    track_running_stats : bool, default True
        Keep ``running_mean``, ``running_var`` and ``num_batches_tracked``
        and use them in evaluation mode; False normalises by the batch's
        statistics in both modes.
    dtype : float32 or float64, default float32

    Statistics per channel over N (and L). Training needs more than one
    value per channel.
    """

    _ranks = (2, 3)
    _layout = "(N, C) or (N, C, L)"


@register_module
class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, C, H, W) input (PyTorch's ``nn.BatchNorm2d``).

    Parameters as :class:`BatchNorm1d`; statistics per channel over N, H and W.
    """

    _ranks = (4,)
    _layout = "(N, C, H, W)"


@register_module
class LayerNorm(_Normalization):
    """Layer normalisation over the trailing dimensions (PyTorch's ``nn.LayerNorm``).

    ``y = (x − mean)/sqrt(var + eps)·γ + β``, the mean and (biased) variance
    taken over the last ``len(normalized_shape)`` dimensions of each sample.

    Parameters
    ----------
    normalized_shape : int or tuple of ints
        The trailing shape of the input that is normalised.
    eps : float, default 1e-5
    elementwise_affine : bool, default True
        Learn γ (``weight``, ones) and, with ``bias``, β (zeros), both of
        shape ``normalized_shape``.
    bias : bool, default True
    dtype : float32 or float64, default float32
    """

    _plan: ops.LayerNormPlan

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__()
        self.normalized_shape = ops.norm._norm_shape(normalized_shape)
        self.eps = _eps(eps)
        self.elementwise_affine = _v.strict_bool(elementwise_affine, "elementwise_affine")
        has_bias = _v.strict_bool(bias, "bias")
        dt = _v.strict_float_dtype(dtype)
        ns = self.normalized_shape
        self._init_affine(ns, dt, self.elementwise_affine, has_bias)
        self._reset_transient()

    def _new_plan(self) -> ops.LayerNormPlan:
        return ops.LayerNormPlan(self.normalized_shape, self.weight, self.bias, self.eps)

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.weight.data.dtype if self.weight is not None else self.__dict__["_dtype"]

    def forward(self, x: ArrayLike) -> FloatArray:
        """Normalise each sample of ``x`` (..., *normalized_shape)."""
        try:
            y, mean, rstd = self._plan.forward(x)
        except TypeError as exc:
            raise (exc if self.weight is None else self._input_error(x, exc)) from None
        if _grad_enabled.get():
            self.__dict__["_ctx"] = (x, mean, rstd)
        return y

    def backward(
        self, grad_output: ArrayLike, *, input_grad: bool = True, accumulate: bool = False
    ) -> FloatArray | None:
        """Fill ``weight.grad`` and ``bias.grad``; return dL/dx (None if ``input_grad=False``)."""
        x, mean, rstd = self._saved()
        return self._plan.backward(grad_output, x, mean, rstd, input_grad=input_grad, accumulate=accumulate)

    def get_config(self) -> dict[str, Any]:
        return {
            "normalized_shape": list(self.normalized_shape),
            "eps": self.eps,
            "elementwise_affine": self.elementwise_affine,
            "bias": self.bias is not None,
            "dtype": self.dtype.name,
        }

    def extra_repr(self) -> str:
        s = f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
        if self.elementwise_affine and self.bias is None:
            s += ", bias=False"
        return s + ("" if self.dtype == np.float32 else f", dtype={self.dtype.name}")

    @classmethod
    def parameters_from_config(cls, config: dict[str, Any], children: Collection[str] = ()) -> list[ParameterSpec]:
        """``[(name, shape, dtype name)]`` that ``LayerNorm(**config)`` creates, config checked (see Module)."""
        c = _v.layer_config(
            config, "LayerNorm", ("normalized_shape", "eps", "elementwise_affine", "bias", "dtype"), children
        )
        ns = c["normalized_shape"]
        if not isinstance(ns, list) or len(ns) > 32:
            raise ValueError(f"normalized_shape must be a list of sizes, got {_v._shown(ns)}")
        ns = ops.norm._norm_shape(ns)
        if math.prod(ns) > _v.MAX_DIM:
            raise ValueError(f"normalized_shape {ns} holds more than 2**31 - 1 values")
        _eps(c["eps"])
        dt = _v.strict_float_dtype(c["dtype"]).name
        affine = _v.strict_bool(c["elementwise_affine"], "elementwise_affine")
        bias = _v.strict_bool(c["bias"], "bias")
        return ([("weight", ns, dt)] if affine else []) + ([("bias", ns, dt)] if affine and bias else [])
