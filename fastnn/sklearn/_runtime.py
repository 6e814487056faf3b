"""Where an estimator's computation runs: the fastnn backend and the thread count.

Every ``fit``, ``partial_fit`` and prediction runs inside :func:`runtime`,
which selects the estimator's ``backend`` and sets fastnn's thread count
(fastnn's kernels, Numba, OpenMP and BLAS together) for the duration of the
call, then restores both.

The thread count is ``n_threads`` when given. Otherwise it is fastnn's own
count, lowered to any limit the process was started with in
``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS`` or
``NUMBA_NUM_THREADS``: joblib's process workers (``GridSearchCV(n_jobs=2)``,
``cross_val_score(n_jobs=...)``) are started with these set to
``cpu_count // n_jobs``, so each worker trains on its share of the cores
instead of every worker using all of them.
"""

from __future__ import annotations

import contextlib
import os

import fastnn

__all__ = ["thread_budget", "runtime", "check_n_threads"]

#: Variables through which a parent process (joblib's loky workers, a job
#: scheduler, the user) limits the threads of a process.
LIMIT_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def check_n_threads(n_threads):
    """``n_threads`` as a positive int or None, or a clear error."""
    if n_threads is None:
        return None
    if isinstance(n_threads, bool) or not hasattr(n_threads, "__index__"):
        raise TypeError(f"n_threads must be a positive integer or None, got {n_threads!r}")
    n = int(n_threads)
    if n < 1:
        raise ValueError(f"n_threads must be a positive integer or None, got {n_threads!r}")
    return n


def _env_limit():
    limit = None
    for var in LIMIT_VARIABLES:
        raw = os.environ.get(var, "").strip()
        try:
            value = int(raw.split(",")[0])  # OMP_NUM_THREADS may list nested levels: "2,1"
        except ValueError:
            continue
        if value >= 1:
            limit = value if limit is None else min(limit, value)
    return limit


def thread_budget(n_threads=None) -> int:
    """Threads a call should use: ``n_threads``, else fastnn's count within the process's limits."""
    n = check_n_threads(n_threads)
    if n is not None:
        return n
    n = fastnn.get_num_threads()
    if os.environ.get("FASTNN_NUM_THREADS", "").strip():
        return n  # an explicit fastnn setting wins over the generic variables
    limit = _env_limit()
    return n if limit is None else min(n, limit)


@contextlib.contextmanager
def runtime(backend=None, n_threads=None):
    """Run the block with ``backend`` selected and the thread budget applied; yields the thread count."""
    n = thread_budget(n_threads)
    previous = fastnn.get_num_threads()
    stack = contextlib.ExitStack()
    with stack:
        if backend is not None:
            stack.enter_context(fastnn.use_backend(backend))
        if n != previous:
            fastnn.set_num_threads(n)
            stack.callback(fastnn.set_num_threads, previous)
        yield n
