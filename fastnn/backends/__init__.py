"""Backend registry: which implementation of the kernels runs.

A backend is a namespace of kernel functions. The NumPy reference backend
defines every kernel; a compiled backend (Numba, Cython) overrides the hot
ones and falls back, explicitly and visibly, to the reference for the rest
(``Backend.overrides`` and ``Backend.fallbacks`` list which is which).

Kernels live in one module per family (``dense``, ``activations``, ``losses``,
``optim``, ``conv``, ``rnn``, ...) inside each backend package; each module
names its kernels in ``__all__``. The registry discovers those modules, so a
new family is added by adding a file, not by editing a list.

Backends load lazily: ``import fastnn`` imports neither Numba nor the
compiled extension. A backend that cannot load is absent from
:func:`available_backends` and :func:`backend_status` says why.

Which backend runs: :func:`set_backend` (or ``FASTNN_BACKEND``) sets the
process-wide default; a :func:`use_backend` block overrides it in its own
context only -- the calling thread, or the asyncio task -- until the block
exits. Two threads can therefore run two backends at once, and a thread
started later begins with the process default (Python starts every thread
with an empty context), whatever blocks are open elsewhere.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import inspect
import pkgutil
import threading
from typing import TYPE_CHECKING, Any

from .. import _config

#: Known backends, fastest first: the order ``"auto"`` tries them in.
BACKEND_NAMES = ("cython", "numba", "numpy")

_PACKAGES = {
    "numpy": "fastnn.backends.reference",
    "numba": "fastnn.backends.numba_backend",
    "cython": "fastnn.backends.cython_backend",
}


class BackendUnavailable(RuntimeError):
    """Raised when a backend is asked for but cannot be loaded."""


class Backend:
    """A loaded backend: every kernel as an attribute.

    Attributes
    ----------
    name : str
        ``"numpy"``, ``"numba"`` or ``"cython"``.
    overrides : frozenset of str
        Kernels this backend implements itself.
    fallbacks : frozenset of str
        Kernels it takes from the NumPy reference.
    """

    def __init__(self, name: str, kernels: dict, overrides: frozenset, info: dict):
        self.name = name
        self.kernels = dict(kernels)
        self.overrides = frozenset(overrides)
        self.fallbacks = frozenset(k for k in kernels if k not in overrides)
        self.info = dict(info)
        for key, fn in kernels.items():
            setattr(self, key, fn)

    if TYPE_CHECKING:
        # The kernels are set per backend in __init__, so a type checker
        # cannot list them: any other attribute is a kernel function.
        def __getattr__(self, name: str) -> Any: ...

    def __repr__(self) -> str:
        return f"<fastnn backend {self.name!r}: {len(self.overrides)} kernels, {len(self.fallbacks)} from reference>"


def _collect_kernels(package_name: str) -> tuple[dict, dict]:
    """Import every kernel module of a backend package and gather ``__all__``."""
    package = importlib.import_module(package_name)
    info = dict(getattr(package, "BACKEND_INFO", {}))
    kernels: dict = {}
    owners: dict = {}
    for mod in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package_name}.{mod.name}")
        for key in getattr(module, "__all__", ()):
            if key in kernels:
                raise RuntimeError(f"kernel {key!r} defined twice in {package_name} ({owners[key]} and {mod.name})")
            kernels[key] = getattr(module, key)
            owners[key] = mod.name
    return kernels, info


_lock = threading.RLock()
_loaded: dict[str, Backend] = {}
_failed: dict[str, str] = {}
#: The process-wide default, set by set_backend (None until first resolved).
_default: Backend | None = None
_default_request: str = _config.requested_backend()
#: A use_backend block's backend, per context; None outside any block.
_override: contextvars.ContextVar = contextvars.ContextVar("fastnn_backend", default=None)
# Bound once: calling the bound method skips a method lookup per kernel call
# (measured 46 ns per current() instead of 57 ns; 41 ns before contextvars).
_override_get = _override.get


def _load(name: str) -> Backend:
    with _lock:
        if name in _loaded:
            return _loaded[name]
        if name in _failed:
            raise BackendUnavailable(f"backend {name!r} is not available: {_failed[name]}")
        if name not in _PACKAGES:
            raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)} or 'auto'")
        if name == "numpy":
            kernels, info = _collect_kernels(_PACKAGES["numpy"])
            backend = Backend("numpy", kernels, frozenset(kernels), info)
        else:
            reference = _load("numpy")
            try:
                overrides, info = _collect_kernels(_PACKAGES[name])
            except Exception as exc:  # ImportError, missing extension, broken numba ...
                _failed[name] = f"{type(exc).__name__}: {exc}"
                raise BackendUnavailable(f"backend {name!r} is not available: {_failed[name]}") from exc
            unknown = set(overrides) - set(reference.kernels)
            if unknown:
                raise RuntimeError(f"backend {name!r} defines kernels the reference lacks: {sorted(unknown)}")
            kernels = dict(reference.kernels)
            kernels.update(overrides)
            backend = Backend(name, kernels, frozenset(overrides), info)
        # Loading a backend can load another BLAS (the Cython kernels and Numba
        # link SciPy's OpenBLAS, NumPy has its own): give every BLAS now in
        # the process the one thread count, or a late one runs with its own.
        _config._apply_blas_threads(_config.get_num_threads())
        _loaded[name] = backend
        return backend


def _resolve(request: str) -> Backend:
    request = request.strip().lower()
    if request == "auto":
        for name in BACKEND_NAMES:
            try:
                return _load(name)
            except BackendUnavailable:
                continue
        raise BackendUnavailable("no backend could be loaded")  # pragma: no cover - numpy always loads
    return _load(request)


def current() -> Backend:
    """The backend that runs in this context, loading it on first use.

    Called on every kernel call: one context-variable lookup, plus a global
    read outside :func:`use_backend` blocks.
    """
    if _config._blas_pending:  # the team's cap changed (fastnn._contention): BLAS follows here
        _config._sync_blas()
    # A Backend is truthy without a call (no __len__ or __bool__: keep it so).
    return _override_get() or _default or _resolve_default()


def _resolve_default() -> Backend:
    global _default
    with _lock:
        if _default is None:
            try:
                _default = _resolve(_default_request)
            except (ValueError, BackendUnavailable) as exc:
                # Only FASTNN_BACKEND can name a default that fails (set_backend
                # resolves before it stores): say so.
                raise type(exc)(f"FASTNN_BACKEND={_default_request!r}: {exc}") from exc
        return _default


def default_backend_error() -> str | None:
    """Why the process default backend cannot be used, or None if it can.

    For reports (``fastnn info``) that must not fail when, say,
    ``FASTNN_BACKEND`` names no backend.
    """
    try:
        _resolve_default()
    except (ValueError, BackendUnavailable) as exc:
        return str(exc)
    return None


def get_backend() -> str:
    """Name of the backend that runs in this context (resolving ``"auto"`` if needed).

    Returns
    -------
    str
        ``"numpy"``, ``"numba"`` or ``"cython"``: the backend of the innermost
        :func:`use_backend` block of this thread (or task), else the process
        default.
    """
    return current().name


def _check_name(name) -> None:
    if not isinstance(name, str):
        raise TypeError(f"backend name must be a string, got {type(name).__name__}")


def set_backend(name: str) -> None:
    """Select the process-wide default backend, used from now on in every thread.

    Parameters
    ----------
    name : {"auto", "cython", "numba", "numpy"}
        ``"auto"`` picks the fastest one installed (cython, then numba, then
        numpy).

    Raises
    ------
    BackendUnavailable
        If the backend is not installed; the message says why.
    ValueError
        If ``name`` is not a backend.

    Notes
    -----
    Code inside a :func:`use_backend` block keeps the block's backend until
    the block exits; the new default applies everywhere else at once, and to
    threads started later.
    """
    global _default, _default_request
    _check_name(name)
    backend = _resolve(name)
    with _lock:
        _default = backend
        _default_request = name.strip().lower()


@contextlib.contextmanager
def use_backend(name: str):
    """Context manager that selects a backend in the current context only.

    Inside the block, kernels called from this thread (or asyncio task, and
    tasks it creates) run on ``name``; other threads keep their own choice,
    and the previous one is back when the block exits, also on an exception.
    Blocks nest.

    Parameters
    ----------
    name : {"auto", "cython", "numba", "numpy"}

    Yields
    ------
    Backend
        The selected backend.

    Raises
    ------
    BackendUnavailable, ValueError, TypeError
        As :func:`set_backend`, before the block runs.

    Examples
    --------
    >>> import fastnn
    >>> with fastnn.use_backend("numpy"):
    ...     fastnn.get_backend()
    'numpy'
    """
    _check_name(name)
    backend = _resolve(name)
    previous = _override.get()
    token = _override.set(backend)
    try:
        yield backend
    finally:
        try:
            _override.reset(token)
        except ValueError:
            # Exited in another context than it entered (e.g. a generator
            # fixture finished elsewhere): restore by value instead.
            _override.set(previous)


def get(name: str) -> Backend:
    """Load and return a backend object by name, without selecting it."""
    return _resolve(name)


def available_backends() -> list[str]:
    """Names of the backends that load on this machine, fastest first."""
    names = []
    for name in BACKEND_NAMES:
        try:
            _load(name)
        except BackendUnavailable:
            continue
        names.append(name)
    return names


def backend_status() -> dict[str, str]:
    """For every known backend, ``"available"`` or the reason it is not."""
    status = {}
    for name in BACKEND_NAMES:
        try:
            _load(name)
            status[name] = "available"
        except BackendUnavailable:
            status[name] = _failed.get(name, "unavailable")
    return status


def kernel_signatures(name: str) -> dict[str, inspect.Signature]:
    """Signatures of every kernel a backend overrides (used by the tests)."""
    backend = _load(name)
    return {key: inspect.signature(backend.kernels[key]) for key in sorted(backend.overrides)}
