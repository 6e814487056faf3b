"""Embedding lookup (see the reference backend for the math).

Indices are validated here, before any kernel runs: integer arrays (or float
arrays holding whole numbers, which :func:`fastnn.fit` hands a model), every
value in ``[0, num_embeddings)``; anything else raises ``ValueError`` or
``TypeError``. Every kernel checks each index again as it reads or writes
with it, so a bad index can never make a compiled kernel touch memory
outside the table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .. import _validation as _v
from .._typing import ArrayLike, FloatArray, NDArray, ParamLike
from ..backends import Backend
from ..backends import current as _backend

__all__ = ["embedding_forward", "embedding_backward", "embedding_indices", "EmbeddingPlan"]

_I64 = np.dtype(np.int64)
#: float32 holds every integer up to 2**24 exactly; larger indices must come as integers.
_F32_EXACT = 1 << 24

#: validated indices: C-contiguous int64
_Indices = NDArray[np.int64]
#: (backend, W, dW, forward kernel, backward kernel) once bound
_Bound = tuple[Backend, FloatArray, FloatArray, Callable[..., Any], Callable[..., Any]]


def embedding_indices(indices: ArrayLike, num_embeddings: int, name: str = "indices") -> _Indices:
    """``indices`` as a C-contiguous int64 array, each value checked against ``[0, num_embeddings)``.

    Float input is accepted when every value is a whole number (``fastnn.fit``
    gives a model its data in the model's dtype); float32 only for tables of
    at most 2**24 rows, the largest range in which it holds every integer.
    """
    a = np.asarray(indices)
    kind = a.dtype.kind
    if kind == "f":
        if a.dtype.itemsize < 8 and num_embeddings > _F32_EXACT:
            raise TypeError(
                f"{name}: {a.dtype} cannot hold every row number of a table of {num_embeddings} rows "
                f"exactly; pass integer indices"
            )
        if a.size and not np.all(np.floor(a) == a):  # NaN, inf and fractions fail this
            raise ValueError(f"{name} must be whole numbers (row numbers), got non-integral or non-finite values")
        with np.errstate(invalid="ignore"):
            a = np.ascontiguousarray(np.clip(a, -1, num_embeddings), dtype=_I64)
    elif kind in "iu":
        if a.dtype != _I64 or not a.flags.c_contiguous:
            if kind == "u" and a.dtype.itemsize == 8 and a.size and a.max() > np.iinfo(np.int64).max:
                raise ValueError(f"{name} must lie in [0, {num_embeddings}), got values up to {a.max()}")
            a = np.ascontiguousarray(a, dtype=_I64)
    else:
        raise TypeError(f"{name} must be integers (row numbers of the table), got dtype {a.dtype}")
    if a.size:
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi >= num_embeddings:
            raise ValueError(f"{name} must lie in [0, {num_embeddings}), got values from {lo} to {hi}")
    return a


def _table(weight: ArrayLike) -> FloatArray:
    weight = _v.as_float_array(weight, "weight", ndim=2)
    if weight.shape[0] < 1:
        raise ValueError(f"weight must have at least one row, got shape {weight.shape}")
    return weight


def embedding_forward(indices: ArrayLike, weight: ArrayLike, out: FloatArray | None = None) -> FloatArray:
    """Rows of ``weight`` picked by ``indices``: ``out[..., :] = weight[indices[...]]``.

    Parameters
    ----------
    indices : array_like of integers, any shape, values in [0, V)
    weight : array_like of shape (V, D)
    out : ndarray of shape ``indices.shape + (D,)``, optional

    Returns
    -------
    ndarray of shape ``indices.shape + (D,)``
    """
    weight = _table(weight)
    V, D = weight.shape
    idx = embedding_indices(indices, V)
    out = _v.output(out, idx.shape + (D,), weight.dtype, inputs=(weight, idx))
    if out.size == 0:
        return out
    _backend().embedding_forward(idx.reshape(-1), weight, out.reshape(idx.size, D))
    return out


def embedding_backward(
    grad_out: ArrayLike,
    indices: ArrayLike,
    num_embeddings: int,
    *,
    padding_idx: int | None = None,
    grad_weight: FloatArray | None = None,
    clear: ArrayLike | None = None,
) -> FloatArray:
    """Gradient of the table: ``grad_weight[v] = Σ_{i: indices[i] = v} grad_out[i]``.

    Parameters
    ----------
    grad_out : array_like of shape ``indices.shape + (D,)``, dL/dy
    indices : array_like of integers, the forward's indices
    num_embeddings : int, V
    padding_idx : int, optional
        A row that gets no gradient (negative counts from the end, as in PyTorch).
    grad_weight : ndarray of shape (V, D), optional
        Without it, a new zero-filled array receives the gradient. With it,
        only the rows in ``clear`` and ``indices`` are written: ``clear`` is
        zeroed, then this batch's gradient added.
    clear : array_like of integers, optional
        Rows of ``grad_weight`` to zero before adding (every row in
        ``indices`` as well, if ``grad_weight`` should hold this batch
        alone). Default: none.

    Returns
    -------
    ndarray of shape (V, D)
    """
    V = _v.positive_int(num_embeddings, "num_embeddings")
    grad_out = _v.as_float_array(grad_out, "grad_out")
    idx = embedding_indices(indices, V)
    if grad_out.ndim != idx.ndim + 1 or grad_out.shape[:-1] != idx.shape:
        raise ValueError(f"grad_out has shape {grad_out.shape}, expected {idx.shape} + (embedding_dim,)")
    D = grad_out.shape[-1]
    pad = -1 if padding_idx is None else _padding(padding_idx, V)
    rows = np.empty(0, _I64) if clear is None else embedding_indices(clear, V, "clear").reshape(-1)
    if grad_weight is None:
        grad_weight = np.zeros((V, D), grad_out.dtype)
    else:
        _v.inplace(grad_weight, "grad_weight")
        _v.same_dtype(grad_out.dtype, grad_weight, "grad_weight")
        if grad_weight.shape != (V, D):
            raise ValueError(f"grad_weight has shape {grad_weight.shape}, expected ({V}, {D})")
        for a in (grad_out, idx, rows):
            if np.may_share_memory(grad_weight, a):
                raise ValueError("grad_weight must not overlap the other arrays")
    if idx.size == 0 and rows.size == 0:
        return grad_weight
    _backend().embedding_backward(grad_out.reshape(idx.size, D), idx.reshape(-1), pad, rows, grad_weight)
    return grad_weight


def _padding(padding_idx: int, V: int) -> int:
    p = _v.strict_int(padding_idx, "padding_idx")
    if not -V <= p < V:
        raise ValueError(f"padding_idx must lie in [-{V}, {V}), got {p}")
    return p + V if p < 0 else p


# ---------------------------------------------------------------------------
# The bound form layers use (see fastnn.ops._plan)

from . import _plan as _p  # noqa: E402

_nd = _p.ndarray


class EmbeddingPlan:
    """:func:`embedding_forward` and :func:`embedding_backward` bound to one table.

    Parameters
    ----------
    weight : Parameter-like, ``.data`` of shape (V, D)
    padding_idx : int or None (already in [0, V))

    Notes
    -----
    The backward pass keeps the rows it wrote into ``weight.grad`` (the
    gradient is overwritten by default, and only those rows can be non-zero),
    so the next pass zeroes them and nothing else. A ``weight.grad`` array the
    plan has not written before is zeroed once in full.
    """

    __slots__ = ("weight", "padding_idx", "_bound", "_written", "_grad_seen")

    weight: ParamLike
    padding_idx: int
    _bound: _Bound | None
    _written: _Indices | None
    _grad_seen: FloatArray | None

    def __init__(self, weight: ParamLike, padding_idx: int | None = None) -> None:
        self.weight = weight
        self.padding_idx = -1 if padding_idx is None else int(padding_idx)
        self._bound = None
        self._written = None  # rows of weight.grad that may be non-zero (None: unknown, any)
        self._grad_seen = None

    def _bind(self) -> _Bound:
        w = _p.check_param(self.weight, "weight", 2)
        dw = _p.check_grad(self.weight, "weight")
        backend = _p.current()
        bound = (backend, w, dw, backend.embedding_forward, backend.embedding_backward)
        self._bound = bound
        return bound

    def _check(self, grads: bool = False) -> _Bound:
        k = self._bound
        if (
            k is None
            or k[1] is not self.weight.data
            or k[0] is not _p.current()
            or (grads and k[2] is not self.weight.grad)
        ):
            k = self._bind()
        return k

    def forward(self, indices: ArrayLike) -> tuple[FloatArray, _Indices]:
        """Rows of the table for ``indices`` (validated); returns ``(out, indices as int64)``."""
        k = self._check()
        w = k[1]
        V, D = w.shape
        idx = embedding_indices(indices, V)
        out = _p.output(self, "y", idx.shape + (D,), w.dtype)
        if out.size:
            k[3](idx.reshape(-1), w, out.reshape(idx.size, D))
        return out, idx

    def backward(self, grad_out: ArrayLike, idx: _Indices, *, accumulate: bool = False) -> None:
        """Write this batch's gradient into ``weight.grad``, touching only the rows used (see Notes)."""
        k = self._check(grads=True)
        w, dw = k[1], k[2]
        V, D = w.shape
        if not (
            type(grad_out) is _nd
            and grad_out.dtype is w.dtype
            and grad_out.flags.c_contiguous
            and grad_out.shape == idx.shape + (D,)
        ):
            grad_out = _v.as_float_array(grad_out, "grad_out")
            _v.same_dtype(w.dtype, grad_out, "grad_out")
            if grad_out.shape != idx.shape + (D,):
                raise ValueError(f"grad_out has shape {grad_out.shape}, expected {idx.shape + (D,)}")
        flat = idx.reshape(-1)
        if self._grad_seen is not dw:
            # a gradient array this plan has not written: its other rows may hold anything
            self._written = None
            self._grad_seen = dw
        written = self._written
        if accumulate:
            clear = np.empty(0, _I64)
            if written is not None:
                written = np.concatenate((written, flat))
                if written.size > V:
                    written = np.unique(written)
        else:
            if written is None:
                dw.fill(0)
                clear = np.empty(0, _I64)
            else:
                clear = written
            written = flat.copy()  # the caller may reuse its index array
        k[4](grad_out.reshape(flat.size, D), flat, self.padding_idx, clear, dw)
        self._written = written
        return None
