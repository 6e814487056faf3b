"""Activations and their backward passes (see the reference for the math)."""

from __future__ import annotations

from collections.abc import Callable

from .. import _validation as _v
from .._typing import ActivationKind, ArrayLike, FloatArray
from ..backends import current as _backend

__all__ = [
    "relu",
    "relu_backward",
    "leaky_relu",
    "leaky_relu_backward",
    "sigmoid",
    "sigmoid_backward",
    "tanh",
    "tanh_backward",
    "softmax",
    "softmax_backward",
    "ActivationPlan",
]


def _forward_args(x: ArrayLike, out: FloatArray | None) -> tuple[FloatArray, FloatArray]:
    x = _v.as_float_array(x, "x")
    return x, _v.output(out, x.shape, x.dtype, aliases=(x,))


def _backward_args(
    grad_out: ArrayLike, y: ArrayLike, out: FloatArray | None
) -> tuple[FloatArray, FloatArray, FloatArray]:
    grad_out = _v.as_float_array(grad_out, "grad_out")
    y = _v.as_float_array(y, "y")
    _v.same_dtype(grad_out.dtype, y, "y")
    _v.same_shape(grad_out.shape, y, "y", "grad_out")
    return grad_out, y, _v.output(out, grad_out.shape, grad_out.dtype, aliases=(grad_out, y))


def relu(x: ArrayLike, out: FloatArray | None = None) -> FloatArray:
    """Rectified linear unit, ``max(x, 0)``, elementwise.

    Parameters
    ----------
    x : array_like of float32 or float64, any shape
    out : ndarray, optional
        Buffer for the result (same shape and dtype; may be ``x`` itself).

    Returns
    -------
    ndarray
        ``y = max(x, 0)``; NaN stays NaN.
    """
    x, out = _forward_args(x, out)
    return _backend().relu(x, out)


def relu_backward(grad_out: ArrayLike, y: ArrayLike, out: FloatArray | None = None) -> FloatArray:
    """Gradient through relu from its output: ``grad_out * (y > 0)``.

    Parameters
    ----------
    grad_out : array_like, dL/dy
    y : array_like of the same shape and dtype, the output of :func:`relu`
    out : ndarray, optional (may be ``grad_out``)

    Returns
    -------
    ndarray, dL/dx
    """
    grad_out, y, out = _backward_args(grad_out, y, out)
    return _backend().relu_backward(grad_out, y, out)


def _slope(negative_slope: float) -> float:
    return _v.scalar(negative_slope, "negative_slope", low=0.0)


def leaky_relu(x: ArrayLike, negative_slope: float = 0.01, out: FloatArray | None = None) -> FloatArray:
    """Leaky ReLU: ``x`` where ``x > 0``, else ``negative_slope * x``.

    Parameters
    ----------
    x : array_like of float32 or float64
    negative_slope : float, default 0.01
        Must be >= 0 (so that the backward pass can be taken from the output).
    out : ndarray, optional
    """
    x, out = _forward_args(x, out)
    return _backend().leaky_relu(x, _slope(negative_slope), out)


def leaky_relu_backward(
    grad_out: ArrayLike, y: ArrayLike, negative_slope: float = 0.01, out: FloatArray | None = None
) -> FloatArray:
    """Gradient through leaky ReLU from its output ``y``."""
    grad_out, y, out = _backward_args(grad_out, y, out)
    return _backend().leaky_relu_backward(grad_out, y, _slope(negative_slope), out)


def sigmoid(x: ArrayLike, out: FloatArray | None = None) -> FloatArray:
    """Logistic sigmoid ``1 / (1 + exp(-x))``, stable for large ``|x|``."""
    x, out = _forward_args(x, out)
    return _backend().sigmoid(x, out)


def sigmoid_backward(grad_out: ArrayLike, y: ArrayLike, out: FloatArray | None = None) -> FloatArray:
    """Gradient through sigmoid from its output: ``grad_out * y * (1 - y)``."""
    grad_out, y, out = _backward_args(grad_out, y, out)
    return _backend().sigmoid_backward(grad_out, y, out)


def tanh(x: ArrayLike, out: FloatArray | None = None) -> FloatArray:
    """Hyperbolic tangent, elementwise."""
    x, out = _forward_args(x, out)
    return _backend().tanh(x, out)


def tanh_backward(grad_out: ArrayLike, y: ArrayLike, out: FloatArray | None = None) -> FloatArray:
    """Gradient through tanh from its output: ``grad_out * (1 - y**2)``."""
    grad_out, y, out = _backward_args(grad_out, y, out)
    return _backend().tanh_backward(grad_out, y, out)


def softmax(x: ArrayLike, out: FloatArray | None = None) -> FloatArray:
    """Softmax over the last axis of a (B, C) array.

    Parameters
    ----------
    x : array_like of shape (B, C)
    out : ndarray of shape (B, C), optional
    """
    x = _v.as_float_array(x, "x", ndim=2)
    out = _v.output(out, x.shape, x.dtype, aliases=(x,))
    if out.size == 0:  # (2**40, 0) is a legal empty array: no kernel loops over its rows
        return out
    return _backend().softmax(x, out)


def softmax_backward(grad_out: ArrayLike, y: ArrayLike, out: FloatArray | None = None) -> FloatArray:
    """Gradient through softmax (last axis) from its output ``y`` of shape (B, C)."""
    grad_out = _v.as_float_array(grad_out, "grad_out", ndim=2)
    grad_out, y, out = _backward_args(grad_out, y, out)
    if out.size == 0:
        return out
    return _backend().softmax_backward(grad_out, y, out)


# ---------------------------------------------------------------------------
# The bound form layers use (see fastnn.ops._plan)


from . import _plan as _p  # noqa: E402
from ._planbase import KernelPlan as _KernelPlan  # noqa: E402
from ._planbase import fits as _fits  # noqa: E402
from ._planbase import float_c as _float_c  # noqa: E402

#: kind -> (forward op, backward op, takes negative_slope, needs 2-D input)
_KINDS: dict[str, tuple[Callable[..., FloatArray], Callable[..., FloatArray], bool, bool]] = {
    "relu": (relu, relu_backward, False, False),
    "leaky_relu": (leaky_relu, leaky_relu_backward, True, False),
    "sigmoid": (sigmoid, sigmoid_backward, False, False),
    "tanh": (tanh, tanh_backward, False, False),
    "softmax": (softmax, softmax_backward, False, True),
}


class ActivationPlan(_KernelPlan):
    """An activation and its backward pass bound to one kind (and slope).

    Parameters
    ----------
    kind : {"relu", "leaky_relu", "sigmoid", "tanh", "softmax"}
    negative_slope : float, for ``"leaky_relu"``

    Notes
    -----
    A call checks the input's type, dtype and layout (and 2-D for softmax)
    and runs the kernel of the active backend; anything else goes through
    the validated op. Results come from the active workspace, or are new.
    """

    __slots__ = ("kind", "_args", "_ops")

    kind: ActivationKind
    _args: tuple[float, ...]
    _ops: tuple[Callable[..., FloatArray], Callable[..., FloatArray], bool]

    def __init__(self, kind: ActivationKind, negative_slope: float = 0.01) -> None:
        fwd, bwd, sloped, two_d = _KINDS[_v.choice(kind, "kind", tuple(_KINDS))]
        self.kind = kind
        self._args = (_slope(negative_slope),) if sloped else ()
        self._ops = (fwd, bwd, two_d)
        self._bound = None

    def _kernel_names(self) -> tuple[str, str]:
        return self._ops[0].__name__, self._ops[1].__name__

    def forward(self, x: ArrayLike) -> FloatArray:
        """The activation of ``x`` (any shape; (B, C) for softmax)."""
        k = self._kernels()
        if _float_c(x) and (x.ndim == 2 or not self._ops[2]):
            return k[1](x, *self._args, _p.output(self, "y", x.shape, x.dtype, x))
        return self._ops[0](x, *self._args)

    def backward(self, grad_out: ArrayLike, y: ArrayLike) -> FloatArray:
        """dL/dx from dL/dy and the forward output ``y``."""
        k = self._kernels()
        if _float_c(y) and _fits(grad_out, y.dtype) and grad_out.shape == y.shape and (y.ndim == 2 or not self._ops[2]):
            return k[2](grad_out, y, *self._args, _p.output(self, "grad_input", y.shape, y.dtype, grad_out, y))
        return self._ops[1](grad_out, y, *self._args)
