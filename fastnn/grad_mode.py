"""Gradient bookkeeping on or off, per thread: :func:`no_grad`.

A layer's ``forward`` keeps what its ``backward`` will need (its input,
its output, ...). That bookkeeping is the only state a forward pass writes
on a module, so switching it off makes inference on a shared model safe
from any number of threads::

    with fastnn.no_grad():
        y = model(x)          # writes nothing on model: thread-safe

The switch lives in a :class:`contextvars.ContextVar`, so it is per thread
(and per asyncio task): ``no_grad`` in one thread does not affect another.

:func:`inference_mode` goes one step further: no bookkeeping, and every
module behaves as in evaluation mode (``module.eval()``) in this context
only, without touching the modules' shared ``training`` flags.
:func:`fastnn.predict` and :func:`fastnn.evaluate` run under it.
"""

from __future__ import annotations

import contextlib
import contextvars

__all__ = ["no_grad", "enable_grad", "is_grad_enabled", "set_grad_enabled", "inference_mode", "is_inference"]

_enabled: contextvars.ContextVar[bool] = contextvars.ContextVar("fastnn_grad_enabled", default=True)
_inference: contextvars.ContextVar[bool] = contextvars.ContextVar("fastnn_inference", default=False)


def is_grad_enabled() -> bool:
    """Whether forward passes in this context keep what backward needs."""
    return _enabled.get()


@contextlib.contextmanager
def set_grad_enabled(mode: bool):
    """Turn gradient bookkeeping on (``True``) or off in this context.

    Parameters
    ----------
    mode : bool
    """
    if not isinstance(mode, bool):
        raise TypeError(f"mode must be a bool, got {type(mode).__name__}")
    token = _enabled.set(mode)
    try:
        yield
    finally:
        _enabled.reset(token)


def no_grad():
    """Context manager: forward passes keep nothing for backward (inference).

    Examples
    --------
    >>> import numpy as np, fastnn
    >>> from fastnn import nn
    >>> model = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    >>> with fastnn.no_grad():
    ...     y = model(np.ones((2, 4), np.float32))
    >>> y.shape
    (2, 3)
    """
    return set_grad_enabled(False)


def enable_grad():
    """Context manager: gradient bookkeeping on, e.g. inside a :func:`no_grad` block."""
    return set_grad_enabled(True)


@contextlib.contextmanager
def inference_mode():
    """Context manager: :func:`no_grad`, and evaluation-mode behaviour, in this context only.

    ``model.eval()`` changes a flag every thread sees; this does not, so one
    thread can run inference on a model while another trains it.
    """
    grad = _enabled.set(False)
    inference = _inference.set(True)
    try:
        yield
    finally:
        _inference.reset(inference)
        _enabled.reset(grad)


def is_inference() -> bool:
    """Whether this context runs under :func:`inference_mode`."""
    return _inference.get()
