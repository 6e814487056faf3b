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
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import pkgutil
import threading

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
_active: Backend | None = None
_active_request: str = _config.requested_backend()


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
    """The active backend, loading it on first use."""
    global _active
    backend = _active
    if backend is None:
        with _lock:
            if _active is None:
                _active = _resolve(_active_request)
            backend = _active
    return backend


def get_backend() -> str:
    """Name of the active backend (resolving ``"auto"`` if needed).

    Returns
    -------
    str
        ``"numpy"``, ``"numba"`` or ``"cython"``.
    """
    return current().name


def set_backend(name: str) -> None:
    """Select the backend every kernel and layer uses from now on.

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
    """
    global _active, _active_request
    if not isinstance(name, str):
        raise TypeError(f"backend name must be a string, got {type(name).__name__}")
    backend = _resolve(name)
    with _lock:
        _active = backend
        _active_request = name.strip().lower()


@contextlib.contextmanager
def use_backend(name: str):
    """Context manager that selects a backend and restores the previous one.

    Examples
    --------
    >>> import fastnn
    >>> with fastnn.use_backend("numpy"):
    ...     fastnn.get_backend()
    'numpy'
    """
    global _active, _active_request
    previous, previous_request = _active, _active_request
    set_backend(name)
    try:
        yield current()
    finally:
        with _lock:
            _active, _active_request = previous, previous_request


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
