"""Explicit buffer reuse: the :class:`Workspace` a training loop owns.

Outside a workspace every array fastnn returns is new and belongs to the
caller: ``model(x)`` twice gives two arrays. A training step that allocated
every activation and gradient afresh would spend a noticeable part of a small
step in the allocator and page faults, so the training loop owns a
workspace, as scikit-learn's ``_fit`` owns its activation and delta lists::

    with fastnn.workspace(model):         # what fit() and make_train_step() do
        for xb, yb in batches:
            out = model(xb)               # buffers of this workspace, reused
            loss(out, yb)
            model.backward(loss.backward(), input_grad=False)
            optimizer.step()

Inside the block, the arrays a layer returns are the workspace's buffers:
each is overwritten by the next call of the same layer, so copy what must
outlive the step. Entering a workspace made for a model also claims the
model for training: a second thread trying to train it at the same time gets
a ``RuntimeError`` instead of corrupting its gradients.

The active workspace is a :class:`contextvars.ContextVar`: other threads do
not see it, so inference from another thread keeps allocating its own
outputs.
"""

from __future__ import annotations

import contextvars
import threading

import numpy as np

__all__ = ["Workspace", "workspace", "active_workspace", "out_buffer"]

_active: contextvars.ContextVar[Workspace | None] = contextvars.ContextVar("fastnn_workspace", default=None)

#: More distinct buffers than this means something keeps making new owners
#: (e.g. layers rebuilt every step): start afresh rather than hoard memory.
MAX_BUFFERS = 4096

_lock_guard = threading.Lock()


def _training_lock(module) -> threading.Lock:
    lock = module.__dict__.get("_training_lock")
    if lock is None:
        with _lock_guard:
            lock = module.__dict__.get("_training_lock")
            if lock is None:
                lock = threading.Lock()
                object.__setattr__(module, "_training_lock", lock)
    return lock


class Workspace:
    """Reusable buffers for the steps of one training loop.

    Parameters
    ----------
    model : fastnn.nn.Module, optional
        The model this workspace trains. While the workspace is entered, the
        model (every submodule that owns parameters) is claimed by this
        thread; another thread entering a workspace for it raises
        ``RuntimeError``.

    Notes
    -----
    A workspace is used by one thread at a time (entering it from a second
    thread while the first is inside raises ``RuntimeError``); re-entering it
    in the same thread is allowed, so a step function that enters it can run
    inside a loop that already did.
    """

    __slots__ = ("_buffers", "_model", "_locks", "_held", "_tokens", "_thread")

    def __init__(self, model=None):
        self._buffers: dict = {}
        self._model = model
        self._locks = None
        self._held: list = []
        self._tokens: list = []
        self._thread = None

    # -- buffers ------------------------------------------------------------
    def buffer(self, owner, name: str, shape: tuple, dtype) -> np.ndarray:
        """The buffer ``name`` of ``owner``: kept while shape and dtype repeat, else replaced.

        The contents are whatever the last user left there.
        """
        key = (owner, name)
        buffers = self._buffers
        a = buffers.get(key)
        if a is None or a.shape != shape or a.dtype != dtype:
            if len(buffers) >= MAX_BUFFERS:
                buffers.clear()
            a = buffers[key] = np.empty(shape, dtype)
        return a

    @property
    def nbytes(self) -> int:
        """Bytes held by the workspace's buffers."""
        return sum(a.nbytes for a in self._buffers.values())

    def clear(self) -> None:
        """Drop every buffer (they are made again on the next use)."""
        self._buffers.clear()

    # -- context --------------------------------------------------------------
    def __enter__(self) -> Workspace:
        me = threading.get_ident()
        if self._tokens:
            if self._thread != me:
                raise RuntimeError("this workspace is in use by another thread; give each thread its own")
        else:
            self._claim_model()
            self._thread = me
        self._tokens.append(_active.set(self))
        return self

    def __exit__(self, *exc) -> None:
        _active.reset(self._tokens.pop())
        if not self._tokens:
            self._thread = None
            self._release_model()

    def _claim_model(self) -> None:
        if self._model is None:
            return
        locks = self._locks
        if locks is None:  # the model's structure, looked up once per workspace
            locks = self._locks = [
                (type(m).__name__, _training_lock(m))
                for m in self._model.modules()
                if m._parameters or m is self._model
            ]
        held = []
        for name, lock in locks:
            if not lock.acquire(blocking=False):
                for h in reversed(held):
                    h.release()
                raise RuntimeError(
                    f"{name} is already being trained (in another thread, or by an enclosing fit or training "
                    f"step): train one model from one thread at a time"
                )
            held.append(lock)
        self._held = held

    def _release_model(self) -> None:
        held, self._held = self._held, []
        for lock in reversed(held):
            lock.release()

    def __repr__(self) -> str:
        return f"Workspace({len(self._buffers)} buffers, {self.nbytes / 1e6:.1f} MB)"


def workspace(model=None) -> Workspace:
    """A new :class:`Workspace`, to use as a context manager.

    Parameters
    ----------
    model : fastnn.nn.Module, optional
        Claim this model for training while the workspace is entered.

    Examples
    --------
    >>> import numpy as np, fastnn
    >>> from fastnn import nn
    >>> layer = nn.Linear(4, 2)
    >>> x = np.ones((3, 4), np.float32)
    >>> layer(x) is layer(x)                 # fresh outputs by default
    False
    >>> with fastnn.workspace(layer):
    ...     layer(x) is layer(x)             # one buffer, reused
    True
    """
    return Workspace(model)


def active_workspace() -> Workspace | None:
    """The workspace entered in this context, or None."""
    return _active.get()


def out_buffer(owner, name: str, shape: tuple, dtype) -> np.ndarray:
    """An output array: the active workspace's buffer, or a new array outside one."""
    ws = _active.get()
    if ws is None:
        return np.empty(shape, dtype)
    return ws.buffer(owner, name, shape, dtype)
