"""One home for fastnn's settings: environment variables, thread counts, JIT flags.

Everything that reads ``os.environ`` or decides how many threads run lives
here, so the rest of the package asks this module instead of guessing.

Environment variables
---------------------
FASTNN_BACKEND
    Backend selected at import: ``numpy``, ``numba``, ``cython`` or ``auto``
    (the default: the fastest one installed). Resolved lazily, on first use.
FASTNN_NUM_THREADS
    Threads used by the Numba parallel loops, the Cython OpenMP loops and BLAS.
    Defaults to the number of CPUs this process may run on.
FASTNN_REQUIRE_BACKENDS
    Comma-separated backend names that the test-suite must find; a missing one
    becomes a test failure instead of a skip (CI sets it).
"""

from __future__ import annotations

import os
import threading

#: Options passed to every ``numba.njit`` in fastnn.  ``cache=True`` keeps the
#: second process from recompiling; ``error_model="numpy"`` lets LLVM
#: vectorise divisions (no ZeroDivisionError checks); ``fastmath`` is limited
#: to flags that keep NaN/Inf semantics intact (no "nnan"/"ninf"), so NaN
#: still propagates through every kernel.
NUMBA_JIT_OPTIONS = dict(
    cache=True,
    nogil=True,
    error_model="numpy",
    fastmath={"contract", "arcp", "nsz", "afn", "reassoc"},
)

#: Minimum number of elements before an elementwise kernel with real arithmetic
#: per element (exp, tanh, division: sigmoid, tanh, softmax, Adam) goes
#: parallel. Below this, waking the sleeping workers (OpenMP passive waits,
#: see prefer_passive_openmp; Numba's pool likewise) costs more than the second
#: thread saves: ~40 µs on a 2-core virtual machine. Measured there, float32,
#: 1-thread time / 2-thread time: tanh 64k 0.23, 256k 0.59, 1M 1.25, 4M 1.61.
PARALLEL_MIN_ELEMENTS = 1 << 19

#: The same for memory-bound loops (relu, the backward products, SGD, MSE: a
#: few flops per element), which gain only once the arrays leave the caches:
#: relu 1M 0.89, 4M 1.39 (Numba 0.78 and 1.55).
PARALLEL_MIN_ELEMENTS_CHEAP = 1 << 21

_lock = threading.RLock()
_num_threads: int | None = None


def _default_num_threads() -> int:
    env = os.environ.get("FASTNN_NUM_THREADS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"FASTNN_NUM_THREADS must be a positive integer, got {env!r}") from None
        if n < 1:
            raise ValueError(f"FASTNN_NUM_THREADS must be a positive integer, got {env!r}")
        return n
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def get_num_threads() -> int:
    """Number of threads fastnn's kernels and BLAS use.

    Returns
    -------
    int
        The value last given to :func:`set_num_threads`, else
        ``FASTNN_NUM_THREADS``, else the number of usable CPUs.
    """
    global _num_threads
    with _lock:
        if _num_threads is None:
            _num_threads = _default_num_threads()
        return _num_threads


_thread_hooks: list = []


def register_thread_hook(hook) -> None:
    """Register ``hook(n)``, called now and whenever the thread count changes.

    Backends use this to pass the count on to Numba and OpenMP when (and only
    when) they are loaded, so that setting threads never imports them.
    """
    with _lock:
        _thread_hooks.append(hook)
        hook(get_num_threads())


_blas_limiter = None


def _apply_blas_threads(n: int) -> None:
    global _blas_limiter
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return
    # Calling threadpool_limits (not as a context manager) sets the limit for
    # the whole process until it is changed again.
    _blas_limiter = threadpool_limits(limits=n, user_api="blas")


def set_num_threads(n: int) -> None:
    """Set the number of threads for Numba, the Cython OpenMP loops and BLAS.

    Parameters
    ----------
    n : int
        Positive thread count. Kernels still run small inputs serially.

    Notes
    -----
    fastnn never calls threaded BLAS from inside one of its own parallel
    regions, so ``n`` threads is the most that run at any time.
    """
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, (int,)) and not hasattr(n, "__index__"):
        raise TypeError(f"number of threads must be an integer, got {type(n).__name__}")
    n = int(n)
    if n < 1:
        raise ValueError(f"number of threads must be >= 1, got {n}")
    with _lock:
        _num_threads = n
        _apply_blas_threads(n)
        for hook in _thread_hooks:
            hook(n)


def prefer_passive_openmp() -> None:
    """Make idle OpenMP workers sleep instead of spin, unless the user chose.

    GNU OpenMP's workers spin between parallel regions; on shared or
    oversubscribed cores a descheduled spinner then stalls the next region at
    its barrier for a whole scheduler slice (measured on a busy 2-core machine:
    relu over 4M floats, median 24 ms per call spinning, 0.8 ms sleeping).
    Waking a sleeping worker costs microseconds, paid only by loops above
    :data:`PARALLEL_MIN_ELEMENTS`. Both compiled backends call this before the
    OpenMP runtime loads (it reads the variable once); ``OMP_WAIT_POLICY`` or
    ``GOMP_SPINCOUNT`` set by the user wins.
    """
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def requested_backend() -> str:
    """The backend named by ``FASTNN_BACKEND`` (``"auto"`` when unset)."""
    return os.environ.get("FASTNN_BACKEND", "auto").strip().lower() or "auto"


def required_backends() -> list[str]:
    """Backends that ``FASTNN_REQUIRE_BACKENDS`` says must be present."""
    raw = os.environ.get("FASTNN_REQUIRE_BACKENDS", "")
    return [name.strip().lower() for name in raw.split(",") if name.strip()]
