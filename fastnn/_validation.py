"""Input checks shared by every public op.

Every array reaches a kernel through these functions first, so the compiled
kernels (``boundscheck=False``, ``nogil``) only ever see what they were written
for: float32/float64, C-contiguous, with the shapes the op promised. Bad input
raises here, as ``TypeError`` (wrong kind of thing) or ``ValueError`` (right
kind, wrong shape or value), with the argument's name in the message.

These run on every call of every op, so they are written for speed: plain
attribute checks, no ``np.result_type`` or ``isinstance`` chains on the hot path.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, TypeVar

import numpy as np

from ._typing import ArrayLike, DTypeLike, FloatArray, NDArray

_S = TypeVar("_S", bound=str)

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_F32, _F64 = FLOAT_DTYPES

#: Largest size the compiled kernels take for one matrix dimension, one
#: spatial extent or one per-image product: BLAS (and the C loops sized like
#: it) index with 32-bit ints. Totals over a batch may exceed it (the kernels
#: index those with 64-bit integers).
MAX_DIM = 2**31 - 1


def as_float_array(x: ArrayLike, name: str, ndim: int | None = None) -> FloatArray:
    """Return ``x`` as a C-contiguous float32/float64 array, or raise.

    Non-contiguous and Fortran-ordered arrays are copied; lists are converted.
    Integer, boolean, complex and object input raises ``TypeError`` (silently
    casting labels or masks to float hides bugs).
    """
    if type(x) is not np.ndarray:
        if isinstance(x, np.ndarray):
            x = np.asarray(x)  # drop subclasses such as np.matrix
        else:
            x = np.asarray(x)
            if x.dtype.kind in "iub" or x.dtype == object:
                raise TypeError(f"{name} must be a float32 or float64 array, got {x.dtype} data")
    dt = x.dtype
    if dt != _F32 and dt != _F64:
        raise TypeError(f"{name} must be a float32 or float64 array, got dtype {dt}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {x.shape}")
    if not x.flags.c_contiguous:
        x = np.ascontiguousarray(x)
    return x


def same_dtype(dtype: np.dtype[Any], x: NDArray[Any], name: str) -> None:
    """Raise ``TypeError`` if ``x`` does not have ``dtype`` (no silent up-casting)."""
    if x.dtype != dtype:
        raise TypeError(f"{name} has dtype {x.dtype} but the other operands are {dtype}; convert it explicitly")


def same_shape(shape: tuple[int, ...], x: NDArray[Any], name: str, other: str = "the input") -> None:
    if x.shape != shape:
        raise ValueError(f"{name} has shape {x.shape} but must match {other} of shape {shape}")


def output(
    out: NDArray[Any] | None,
    shape: tuple[int, ...],
    dtype: np.dtype[Any],
    name: str = "out",
    inputs: tuple[NDArray[Any] | None, ...] = (),
    aliases: tuple[NDArray[Any], ...] = (),
) -> FloatArray:
    """Return a buffer for a result: ``out`` checked, or a new array.

    A given ``out`` must be a writeable, C-contiguous ndarray of exactly the
    right shape and dtype; if ``inputs`` is given it must not overlap any of
    them (kernels that read an operand while writing the result, such as
    matrix multiply, would otherwise compute garbage). ``aliases`` are
    arrays of the same shape that ``out`` may *be* (elementwise ops work in
    place) but must not partly overlap: a shifted view would have the
    kernel read elements it has already overwritten.
    """
    if out is None:
        return np.empty(shape, dtype=dtype)
    if type(out) is not np.ndarray:
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"{name} has shape {out.shape}, expected {shape}")
    if out.dtype != dtype:
        raise TypeError(f"{name} has dtype {out.dtype}, expected {dtype}")
    if not out.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")
    for arr in inputs:
        if arr is not None and np.may_share_memory(out, arr):
            raise ValueError(f"{name} must not overlap the inputs or other outputs of this op")
    for arr in aliases:
        # both C-contiguous with one shape: the same first element means the same array
        if np.may_share_memory(out, arr) and out.__array_interface__["data"][0] != arr.__array_interface__["data"][0]:
            raise ValueError(f"{name} may be the input itself but must not partly overlap it")
    return out


def inplace(x: NDArray[Any], name: str) -> FloatArray:
    """Check an array that a kernel updates in place (parameters, optimizer state)."""
    if type(x) is not np.ndarray:
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(x).__name__}")
    if x.dtype != _F32 and x.dtype != _F64:
        raise TypeError(f"{name} must be float32 or float64, got dtype {x.dtype}")
    if not x.flags.c_contiguous:
        raise ValueError(f"{name} is updated in place and must be C-contiguous")
    if not x.flags.writeable:
        raise ValueError(f"{name} is updated in place but is read-only")
    return x


def scalar(
    value: float,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite real number within bounds, as a Python float (strings and bools are refused)."""
    if isinstance(value, (str, bytes, bool, np.bool_)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if low is not None and (v < low or (low_open and v == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and (v > high or (high_open and v == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value!r}")
    return v


def float_dtype(dtype: DTypeLike) -> np.dtype[Any]:
    """``dtype`` as a NumPy dtype, which must be float32 or float64 (layer constructors)."""
    dt = np.dtype(dtype)
    if dt != _F32 and dt != _F64:
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def positive_int(value: object, name: str) -> int:
    """An integer >= 1 (sizes of layers); bools and floats are refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def dims_fit(where: str, **sizes: int) -> None:
    """Raise ``ValueError`` if any named size exceeds :data:`MAX_DIM`.

    ``sizes`` are the dimensions (or products of dimensions) that a kernel
    hands to a matrix product or indexes one plane with; Python ints, so the
    products themselves cannot wrap here.
    """
    for name, n in sizes.items():
        if n > MAX_DIM:
            raise ValueError(
                f"{where}: {name} is {n}, above 2**31 - 1, the largest size the kernels "
                f"take for one matrix dimension or one image (split the input)"
            )


def choice(value: _S, name: str, options: tuple[str, ...]) -> _S:
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}, got {value!r}")
    return value


# -- strict checks of layer arguments ---------------------------------------
# Layer constructors and configs read from model files go through these:
# ``bool("false")`` is True and ``int(1.9)`` is 1, so nothing here coerces.


def _shown(value: object, limit: int = 80) -> str:
    """``repr(value)``, cut short: values read from a file may be megabytes long."""
    r = repr(value)
    return r if len(r) <= limit else r[: limit - 3] + "..."


def strict_bool(value: object, name: str) -> bool:
    """``value`` if it is ``True`` or ``False`` (NumPy's bools too); anything else raises ``TypeError``."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {_shown(value)}")


def strict_int(value: object, name: str, low: int | None = None) -> int:
    """An integer (Python or NumPy, not a bool, not a float), optionally ``>= low``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {_shown(value)}")
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {_shown(value)}")
    return int(value)


def strict_real(value: object, name: str, low: float | None = None) -> float:
    """A finite real number given as an int or a float (not a bool, not a string), optionally ``>= low``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {_shown(value)}")
    v = float(value)
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {_shown(value)}")
    if low is not None and v < low:
        raise ValueError(f"{name} must be >= {low}, got {_shown(value)}")
    return v


def str_choice(value: object, name: str, options: Collection[str]) -> str:
    """A string that is one of ``options``: ``TypeError`` for a non-string, ``ValueError`` for another string."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {', '.join(map(repr, options))}; got {_shown(value)}")
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}, got {_shown(value)}")
    return value


def strict_float_dtype(dtype: object) -> np.dtype[Any]:
    """A layer's ``dtype`` argument as a NumPy dtype: float32 or float64, given as a dtype, a type or its name.

    Accepted: ``np.float32``/``np.float64`` (or ``float``), ``np.dtype(...)`` of
    either, and the names ``"float32"``/``"float64"`` that configs store.
    ``None``, other strings and other objects raise ``TypeError`` (``np.dtype(None)``
    would silently mean float64).
    """
    if isinstance(dtype, str):
        if dtype not in ("float32", "float64"):
            raise TypeError(f"dtype must be 'float32' or 'float64', got {_shown(dtype)}")
        return np.dtype(dtype)
    if isinstance(dtype, np.dtype) or (isinstance(dtype, type) and dtype in (np.float32, np.float64, float)):
        return float_dtype(dtype)
    raise TypeError(f"dtype must be float32 or float64 (a NumPy dtype, type or name), got {_shown(dtype)}")


def layer_config(config: object, layer: str, keys: tuple[str, ...], children: Collection[str] = ()) -> dict[str, Any]:
    """Check a layer config read from a model file: a dict holding exactly ``keys``.

    ``children`` are the child module names the file gives; a layer that calls
    this has none. Unknown and missing keys are both reported, by name.
    """
    if not isinstance(config, dict):
        raise TypeError(f"the config of {layer} must be an object, got {type(config).__name__}")
    unknown = [k for k in config if k not in keys]
    missing = [k for k in keys if k not in config]
    if unknown or missing:
        parts = ([f"unknown key(s) {_shown(unknown)}"] if unknown else []) + (
            [f"missing key(s) {missing}"] if missing else []
        )
        expected = ", ".join(keys) if keys else "no keys"
        raise ValueError(f"{layer} config has {' and '.join(parts)} (it takes {expected})")
    if children:
        raise ValueError(f"{layer} has no child modules, the file gives it {_shown(list(children))}")
    return config
