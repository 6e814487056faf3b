"""What several bound plans share (see :mod:`fastnn.ops._plan`): input tests and binding.

* :func:`fits` and :func:`float_c` are the per-call input tests of the fast
  paths: an exact ndarray, C-contiguous, of the bound (or any float) dtype.
* :class:`KernelPlan` binds nothing but the active backend's kernels
  (activations, pooling, dropout, losses).
* :class:`WeightBiasPlan` binds a weight and its optional per-output bias
  (dense and convolution layers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeGuard

import numpy as np

from .._typing import FloatArray, NDArray, ParamLike
from ..backends import Backend
from . import _plan as _p

_nd = _p.ndarray
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)


def fits(a: object, dt: np.dtype[Any]) -> TypeGuard[NDArray[Any]]:
    """Whether ``a`` is a C-contiguous ndarray (not a subclass) of dtype ``dt``: a kernel takes it as it is."""
    return type(a) is _nd and a.dtype is dt and a.flags.c_contiguous


def float_c(a: object) -> TypeGuard[FloatArray]:
    """Whether ``a`` is a C-contiguous float32 or float64 ndarray (not a subclass)."""
    return type(a) is _nd and a.flags.c_contiguous and (a.dtype is _F32 or a.dtype is _F64)


class KernelPlan:
    """A plan whose bound state is the active backend and the kernels it takes from it.

    Subclasses name the kernels in :meth:`_kernel_names`; :meth:`_kernels`
    rebinds them when another backend becomes active.
    """

    __slots__ = ("_bound",)

    #: (backend, its kernels in the order of ``_kernel_names``) once bound
    _bound: tuple[Any, ...] | None

    def _kernel_names(self) -> tuple[str, ...]:
        raise NotImplementedError

    def _kernels(self) -> tuple[Any, ...]:
        k = self._bound
        if k is None or k[0] is not _p.current():
            backend = _p.current()
            k = self._bound = (backend, *(getattr(backend, name) for name in self._kernel_names()))
        return k


#: (backend, W, b, dtype, W.shape, forward kernel, backward kernel, dW, db) once bound
WeightBiasBound = tuple[
    Backend,
    FloatArray,
    "FloatArray | None",
    "np.dtype[Any]",
    "tuple[int, ...]",
    Callable[..., FloatArray],
    Callable[..., Any],
    FloatArray,
    "FloatArray | None",
]


class WeightBiasPlan:
    """A plan bound to a weight and an optional per-output bias, both Parameter-like.

    The arrays are validated when first seen (:func:`fastnn.ops._plan.bind_weight_bias`)
    and kept with the backend's kernels; a call compares identities and
    rebinds when an array or the backend changed.
    """

    __slots__ = ("weight", "bias", "_bound")

    #: the weight's rank, the op's name in errors, and the backend's kernels (forward, backward)
    _ndim: ClassVar[int]
    _where: ClassVar[str]
    _kernel_names: ClassVar[tuple[str, str]]
    #: whether an error about the bias's length shows the weight's shape
    _show_weight_shape: ClassVar[bool] = False

    weight: ParamLike
    bias: ParamLike | None
    _bound: WeightBiasBound | None

    def __init__(self, weight: ParamLike, bias: ParamLike | None = None) -> None:
        self.weight = weight
        self.bias = bias
        self._bound = None

    def _bind(self) -> WeightBiasBound:
        w, dw, b, db = _p.bind_weight_bias(self.weight, self.bias, self._ndim, self._where, self._show_weight_shape)
        backend = _p.current()
        fwd, bwd = (getattr(backend, name) for name in self._kernel_names)
        bound = (backend, w, b, w.dtype, w.shape, fwd, bwd, dw, db)
        self._bound = bound
        return bound

    def _for_forward(self) -> tuple[WeightBiasBound, FloatArray, FloatArray | None]:
        """``(bound, W, b)`` for a forward call: the parameters' current arrays, bound."""
        bias = self.bias
        w = self.weight.data
        b = None if bias is None else bias.data
        k = self._bound
        if k is None or k[1] is not w or k[2] is not b or k[0] is not _p.current():
            k = self._bind()
        return k, w, b

    def _for_backward(
        self,
    ) -> tuple[WeightBiasBound, FloatArray, FloatArray, FloatArray | None, FloatArray | None]:
        """``(bound, W, dW, b, db)`` for a backward call: the parameters' current arrays and gradients, bound."""
        w, dw, b, db = _p.param_arrays(self.weight, self.bias)
        k = self._bound
        if k is None or k[1] is not w or k[2] is not b or k[7] is not dw or k[8] is not db or k[0] is not _p.current():
            k = self._bind()
        return k, w, dw, b, db
