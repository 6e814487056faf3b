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

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_F32, _F64 = FLOAT_DTYPES


def as_float_array(x, name: str, ndim: int | None = None) -> np.ndarray:
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


def same_dtype(dtype: np.dtype, x: np.ndarray, name: str) -> None:
    """Raise ``TypeError`` if ``x`` does not have ``dtype`` (no silent up-casting)."""
    if x.dtype != dtype:
        raise TypeError(f"{name} has dtype {x.dtype} but the other operands are {dtype}; convert it explicitly")


def same_shape(shape: tuple, x: np.ndarray, name: str, other: str = "the input") -> None:
    if x.shape != shape:
        raise ValueError(f"{name} has shape {x.shape} but must match {other} of shape {shape}")


def output(out, shape: tuple, dtype: np.dtype, name: str = "out", inputs: tuple = ()) -> np.ndarray:
    """Return a buffer for a result: ``out`` checked, or a new array.

    A given ``out`` must be a writeable, C-contiguous ndarray of exactly the
    right shape and dtype; if ``inputs`` is given it must not overlap any of
    them (kernels that read an operand while writing the result, such as
    matrix multiply, would otherwise compute garbage).
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
            raise ValueError(f"{name} must not overlap the inputs of this op")
    return out


def inplace(x, name: str) -> np.ndarray:
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


def scalar(value, name: str, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False) -> float:
    """A finite real number within bounds, as a Python float."""
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


def float_dtype(dtype) -> np.dtype:
    """``dtype`` as a NumPy dtype, which must be float32 or float64 (layer constructors)."""
    dt = np.dtype(dtype)
    if dt != _F32 and dt != _F64:
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def positive_int(value, name: str) -> int:
    """An integer >= 1 (sizes of layers); bools and floats are refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def choice(value, name: str, options: tuple) -> str:
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}, got {value!r}")
    return value


def flag(value, name: str) -> bool:
    """A real bool (``True``/``False``, NumPy's included); strings and numbers are refused."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r}")


def integer(value, name: str) -> int:
    """An integer (Python's or NumPy's); bools, floats and strings are refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    return int(value)
