"""The GEMM policy: which matrix products run on fastnn's own kernels and which on BLAS.

The mode (``fastnn.set_gemm``) is one of

* ``"own"``: every product on the backend's own GEMM (the Cython backend's
  small register-tiled kernel up to ``gemm_parallel_min_flops``, its packed
  GEMM above);
* ``"blas"``: every product on BLAS;
* ``"auto"`` (the default): by shape, with the thresholds of
  :mod:`fastnn.backends.tuning` for the backend, the dtype, the thread count
  and (Cython) the instruction set its GEMM runs.

The rule, for ``v = m n k`` multiply-adds in auto mode::

    v < own_min_flops                  -> BLAS
    v <= small_max                     -> the small kernel
    v <= packed_max and n >= min_n     -> the packed own GEMM
    otherwise                          -> BLAS

The Cython backend takes this decision in C (``fnn_gemm_route`` in
kernels/lib/runtime.c) for every product it runs, with the values pushed from
here; :func:`route` asks that very function. The Numba backend decides in
Python with :func:`decider`, the same rule (a test checks the two agree).
"""

from __future__ import annotations

import threading

import numpy as np

from .. import _config
from . import tuning

__all__ = [
    "GEMM_MODES",
    "ROUTES",
    "set_gemm",
    "get_gemm",
    "use_gemm",
    "params",
    "decide",
    "route",
    "use_own",
    "decider",
    "register_hook",
]

GEMM_MODES = ("auto", "own", "blas")
ROUTES = ("small", "packed", "blas")

_lock = threading.Lock()
_mode = "auto"
_hooks: list = []
#: The compiled backend's extension module, once it has loaded (it answers route()).
_compiled = None


def set_gemm(mode: str) -> None:
    """Choose the matrix multiply of the compiled backends.

    Parameters
    ----------
    mode : {"auto", "own", "blas"}
        ``"own"``: the backend's own GEMM for every shape; ``"blas"``: BLAS
        (through SciPy / NumPy) for every shape; ``"auto"``: by shape, with
        the thresholds of :mod:`fastnn.backends.tuning`.
    """
    global _mode
    if not isinstance(mode, str):
        raise TypeError(f"gemm mode must be a string, got {type(mode).__name__}")
    m = mode.strip().lower()
    if m not in GEMM_MODES:
        raise ValueError(f"unknown gemm mode {mode!r}; choose one of {', '.join(GEMM_MODES)}")
    with _lock:
        _mode = m
    _changed()


def get_gemm() -> str:
    """The current mode: ``"auto"``, ``"own"`` or ``"blas"``."""
    return _mode


class use_gemm:
    """Context manager: ``with fastnn.use_gemm("blas"): ...`` restores the mode afterwards."""

    def __init__(self, mode: str):
        self.mode = mode
        self.previous = None

    def __enter__(self):
        self.previous = get_gemm()
        set_gemm(self.mode)
        return self

    def __exit__(self, *exc):
        set_gemm(self.previous)
        return False


def _dtype_suffix(dtype) -> str:
    return "f64" if np.dtype(dtype) == np.float64 else "f32"


def params(backend: str, dtype, threads: int | None = None, isa: str | None = None) -> dict:
    """The rule's values for ``backend`` and ``dtype`` now (or at ``threads`` / ``isa``).

    Returns
    -------
    dict
        ``mode``, ``own_min_flops``, ``small_max``, ``packed_max``, ``min_n``
        and ``own_small_max`` (where "own" mode leaves the small kernel).
    """
    if backend == "cython":
        if isa is None:
            isa = _compiled.family_isa()["gemm"] if _compiled is not None else "sse2"
        sfx = _dtype_suffix(dtype)
        return dict(
            mode=_mode,
            own_min_flops=tuning.value("gemm_own_min_flops"),
            small_max=tuning.value(f"gemm_small_max_{sfx}", isa),
            packed_max=tuning.value(f"gemm_packed_max_{sfx}", isa),
            min_n=tuning.value("gemm_packed_min_n"),
            own_small_max=tuning.value("gemm_parallel_min_flops"),
        )
    if backend == "numba":
        threads = _config.get_num_threads() if threads is None else threads
        limit = tuning.value("numba_gemm_own_max_threaded" if threads > 1 else "numba_gemm_own_max")
        return dict(
            mode=_mode,
            own_min_flops=tuning.value("numba_gemm_own_min_flops"),
            small_max=-1,
            packed_max=limit,
            min_n=tuning.value("numba_gemm_own_min_n"),
            own_small_max=-1,
        )
    raise ValueError(f"no GEMM policy for backend {backend!r}; use cython or numba")


def decide(p: dict, m: int, n: int, k: int) -> str:
    """The rule in Python: the route of an (m, k) x (k, n) product under values ``p`` (see :func:`params`)."""
    v = float(m) * float(n) * float(k)
    if p["mode"] == "blas":
        return "blas"
    if p["mode"] == "own":
        return "small" if v <= p["own_small_max"] else "packed"
    if v < p["own_min_flops"]:
        return "blas"
    if v <= p["small_max"]:
        return "small"
    if v <= p["packed_max"] and n >= p["min_n"]:
        return "packed"
    return "blas"


def route(backend: str, dtype, m: int, n: int, k: int) -> str:
    """Where ``backend`` runs an (m, k) x (k, n) product of ``dtype`` now: ``"small"``, ``"packed"`` or ``"blas"``.

    For the Cython backend this is the answer of the compiled decision
    itself (the extension must have loaded); ``"small"`` and ``"packed"``
    are both the own GEMM.
    """
    if backend == "cython":
        if _compiled is None:
            from . import get

            get("cython")  # loads the extension, which registers itself
        return _compiled.gemm_route(m, n, k, dtype)
    return decide(params(backend, dtype), m, n, k)


def use_own(backend: str, dtype, m: int, n: int, k: int) -> bool:
    """Whether ``backend`` runs an (m, k) x (k, n) product on its own GEMM now."""
    return route(backend, dtype, m, n, k) != "blas"


def decider(backend: str):
    """A fast ``use_own(dtype, m, n, k) -> bool`` for ``backend``'s hot path, kept current by the policy's hooks."""
    state = {}

    def refresh():
        for dt in (np.dtype(np.float32), np.dtype(np.float64)):
            state[dt] = params(backend, dt)

    register_hook(refresh)
    f64 = np.dtype(np.float64)

    def use_own_now(dtype, m, n, k):
        return decide(state[f64 if dtype == f64 else np.dtype(np.float32)], m, n, k) != "blas"

    return use_own_now


def register_hook(hook) -> None:
    """Register ``hook()``, called now and whenever the mode, a tunable or the thread count changes."""
    with _lock:
        _hooks.append(hook)
    hook()


def register_compiled(module) -> None:
    """The compiled extension loaded: it answers route() and gets the mode on every change."""
    global _compiled
    _compiled = module
    _changed()


def _changed(*_ignored) -> None:
    if _compiled is not None:
        isa = _compiled.family_isa()["gemm"]
        tuning.push(_compiled.set_tunable, isa)
        _compiled.set_gemm_mode(_mode)
    for hook in _hooks:
        hook()


tuning.register_hook(_changed)
_config.register_thread_hook(_changed)
