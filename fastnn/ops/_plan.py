"""What every bound kernel ("plan") shares.

A plan is an op family bound to one layer's configuration and parameters:
``DensePlan(weight, bias)``, ``ConvPlan(weight, bias, stride, ...)`` ... It is
how layers reach the kernels without paying the full validation of the
public ops on every call, and without skipping it:

* the parameters (objects with ``.data`` and ``.grad`` arrays, such as
  :class:`fastnn.nn.Parameter`) are read at every call; their arrays, and the
  active backend, are validated when first seen and kept in one tuple, so a
  call compares identities and shapes only;
* the input of each call is checked for what can vary between calls (type,
  dtype, layout, the dimensions that must match the parameters);
* anything else — a new array, a non-contiguous or integer input, another
  backend — takes the fully validated public op, which converts or raises;
* outputs come from the active :class:`~fastnn.workspace.Workspace` (reused
  across steps) or are new arrays that belong to the caller.

A plan is safe to share between threads: the bound tuple is replaced, never
modified, and a plan keeps no per-call state.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np

from .. import _validation as _v
from .._typing import FloatArray, NDArray, ParamLike
from ..backends import current
from ..workspace import _active as active_workspace

__all__ = ["current", "active_workspace", "ndarray", "output", "check_param", "check_grad"]

ndarray = np.ndarray


def output(
    owner: Hashable, name: str, shape: tuple[int, ...], dtype: np.dtype[Any], *inputs: NDArray[Any] | None
) -> NDArray[Any]:
    """A buffer for a result: the active workspace's (not aliasing ``inputs``), or a new array."""
    ws = active_workspace.get()
    if ws is None:
        return np.empty(shape, dtype)
    out = ws.buffer(owner, name, shape, dtype)
    for a in inputs:
        # A caller may feed a previous result back in (model(model(x)) inside
        # a workspace): never write over an array the kernel reads.
        if a is out or (a is not None and a.base is out):
            return np.empty(shape, dtype)
    return out


def check_param(param: ParamLike, name: str, ndim: int | None = None) -> FloatArray:
    """The validated ``.data`` of a bound parameter (kernels read it; optimizers write it)."""
    data = param.data
    if type(data) is not ndarray:
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(data).__name__}")
    if data.dtype != np.float32 and data.dtype != np.float64:
        raise TypeError(f"{name} must be float32 or float64, got dtype {data.dtype}")
    if ndim is not None and data.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {data.shape}")
    if not data.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    return data


def check_disjoint(where: str, *arrays: NDArray[Any] | None) -> None:
    """Refuse bound arrays that overlap (a parameter's gradient inside another's, say): checked once per bind."""
    given = [a for a in arrays if a is not None]
    for i, a in enumerate(given):
        for b in given[i + 1 :]:
            if np.may_share_memory(a, b):
                raise ValueError(f"{where}: parameters and gradients must not share memory")


def check_grad(param: ParamLike, name: str) -> FloatArray:
    """The validated ``.grad`` of a bound parameter: a kernel writes it in place."""
    data, grad = param.data, param.grad
    if type(grad) is not ndarray or grad.shape != data.shape or grad.dtype != data.dtype:
        raise ValueError(f"{name}.grad must be an array of the parameter's shape {data.shape} and dtype {data.dtype}")
    if not grad.flags.c_contiguous or not grad.flags.writeable:
        raise ValueError(f"{name}.grad must be a writeable C-contiguous array")
    if np.may_share_memory(grad, data):
        raise ValueError(f"{name}.grad shares memory with {name}.data")
    return grad


def bind_weight_bias(
    weight: ParamLike, bias: ParamLike | None, ndim: int, where: str, show_weight_shape: bool = False
) -> tuple[FloatArray, FloatArray, FloatArray | None, FloatArray | None]:
    """Validated ``(W, dW, b, db)`` of a weight and its optional per-output bias: checked once per bind.

    ``show_weight_shape`` puts the weight's shape in the error for a bias of the wrong length.
    """
    w = check_param(weight, "weight", ndim)
    dw = check_grad(weight, "weight")
    b = db = None
    if bias is not None:
        b = check_param(bias, "bias", 1)
        db = check_grad(bias, "bias")
        _v.same_dtype(w.dtype, b, "bias")
        if b.shape[0] != w.shape[0]:
            wdesc = f"weight {w.shape}" if show_weight_shape else "weight"
            raise ValueError(f"bias has shape {b.shape} but {wdesc} has {w.shape[0]} outputs")
    check_disjoint(where, w, b, dw, db)
    return w, dw, b, db


def param_arrays(
    weight: ParamLike, bias: ParamLike | None
) -> tuple[FloatArray, FloatArray, FloatArray | None, FloatArray | None]:
    """The current ``(W, dW, b, db)`` arrays of a weight and optional bias, unvalidated (compared to the bound ones)."""
    b, db = (None, None) if bias is None else (bias.data, bias.grad)
    return weight.data, weight.grad, b, db


def grad_targets(
    owner: Hashable, dw: FloatArray, db: FloatArray | None, dtype: np.dtype[Any], accumulate: bool
) -> tuple[FloatArray, FloatArray | None]:
    """Where a backward kernel writes the parameter gradients: ``dW`` and ``db``, or workspace buffers to add later."""
    if not accumulate:
        return dw, db
    return output(owner, "acc_w", dw.shape, dtype), None if db is None else output(owner, "acc_b", db.shape, dtype)


def accumulate_grads(dw: FloatArray, gw: FloatArray, db: FloatArray | None, gb: FloatArray | None) -> None:
    """Add the buffers from :func:`grad_targets` (``accumulate=True``) into ``dW`` and ``db``."""
    np.add(dw, gw, out=dw)
    if db is not None and gb is not None:  # gb is db's accumulation buffer: None together
        np.add(db, gb, out=db)
