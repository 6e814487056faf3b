"""The Numba backend: ``@njit`` kernels compiled on first use and cached on disk.

Importing this package imports Numba (so it happens only when the backend is
first used, never at ``import fastnn``). A kernel compiles on its first call
with new argument types (per dtype; read-only inputs share the writeable
compilation), and only what a call runs is compiled: a parallel loop only
for a call large enough to use it, the register-tiled products and the
parallel loops in a background thread while bit-identical fallbacks run
(see ``_jit``). ``cache=True`` makes later processes load the machine code
instead of compiling again; ``fastnn warmup`` (``_warmup``) fills the cache
for every kernel ahead of use. Where Numba cannot write a cache (read-only
install, unwritable ``NUMBA_CACHE_DIR`` and home), the kernels compile
uncached in every process, with one warning, instead of failing.

Modules: ``_jit`` (how kernels are compiled: the decorators, serial and
parallel variants from one source, background compilation), ``_math``
(vectorisable exp/tanh/sigmoid and row maximum, shared), ``_gemm`` and
``_small_gemm`` (the own GEMM), ``_warmup``, and ``activations``,
``dense``, ``losses``, ``optim``, ``conv``, ``rnn``: the kernels, one module
per family of the reference, same names and parameters. Every reference
kernel is overridden.

Interrupts: a compiled function that returns an array calls back into Python
(Numba's ``_numba_unpickle``, for the array's type) after its work is done.
A Ctrl-C whose handler ran in that callback raised ``KeyboardInterrupt``
there, and Numba's array boxing does not check the callback's result: the
array came back with the exception still set, which Python turns into
``SystemError: CPUDispatcher(...) returned a result with an exception set``.
:func:`_make_returns_interrupt_safe` puts a C-level cache in front of that
callback, so once a return site has been seen no Python code runs there, and
the interrupt is raised by the caller's next bytecode as a plain
``KeyboardInterrupt``. (The first return of each site in a process still
runs the Python original, once.)
"""

import functools
import warnings

from ... import _config

# Numba's threading layer here is GNU OpenMP, loaded at the first parallel call.
_config.prefer_short_openmp_spin()

import numba  # noqa: E402  - an ImportError here makes the backend absent, with the reason

if numba.config.DISABLE_JIT:
    # The kernels would run as plain Python, where the vectorised math helpers
    # (fexp, ftanh ...) only raise NotImplementedError: say why up front.
    raise ImportError("NUMBA_DISABLE_JIT is set: fastnn's Numba kernels need compiled code")

if numba.config.NUMBA_NUM_THREADS > _config.MAX_THREADS_REQUEST:
    # Numba starts its whole pool at the first parallel call (the workqueue
    # layer hangs once thread creation fails): refuse before that happens.
    raise ImportError(
        f"NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS} is more threads than any machine "
        f"runs (fastnn's limit is {_config.MAX_THREADS_REQUEST}); lower or unset it"
    )

# Numba's np.dot links SciPy's OpenBLAS, which would otherwise load only at the
# first compilation, after fastnn's thread count was applied to every BLAS in
# the process (an unlimited, oversubscribed BLAS then). Load it now, and give
# it the count here too: a module of this package imported directly (not
# through the backend registry) must not run with a BLAS of its own.
import scipy.linalg.cython_blas  # noqa: E402,F401

_config._apply_blas_threads(_config.get_num_threads())


def _make_returns_interrupt_safe() -> bool:
    """Serve Numba's return-path unpickling from a C cache; True if in effect.

    Numba's C helper looks ``numba.core.serialize._numba_unpickle`` up once,
    at its first use in the process, and calls it (Python code, where pending
    signal handlers run) on every return of an array. Wrapped in
    ``functools.lru_cache`` -- implemented in C -- a repeated call is a dict
    lookup that runs no bytecode, so no handler can raise inside it; it is
    also a little faster than the Python function. The first call of each
    return site still runs the original once. Too late (False) if Numba
    already used the original in this process: its helper keeps that one.
    """
    try:
        from numba.core import serialize

        unpickle = serialize._numba_unpickle
        memo = serialize._unpickled_memo
    except (ImportError, AttributeError):  # another Numba layout: leave it as it is
        return False
    if isinstance(unpickle, functools._lru_cache_wrapper):
        return True
    if memo:
        return False
    serialize._numba_unpickle = functools.lru_cache(maxsize=None)(unpickle)
    return True


INTERRUPT_SAFE_RETURNS = _make_returns_interrupt_safe()


def _cache_probe():  # pragma: no cover - never called; its file locates the cache
    pass


def _cache_problem() -> str | None:
    """Why Numba cannot cache this package's kernels, or None if it can.

    Numba picks the cache directory per source directory (``NUMBA_CACHE_DIR``,
    else ``__pycache__`` beside the source, else the user's cache) and, when
    none is writable, raises at ``@njit(cache=True)`` -- which would make the
    whole backend fail to import. A function of this file finds the same
    directory as every kernel module beside it.
    """
    try:
        from numba.core.caching import FunctionCache
    except ImportError:  # pragma: no cover - another Numba layout: let @njit decide
        return None
    try:
        FunctionCache(_cache_probe)
    except Exception as exc:  # RuntimeError "no locator available", OSError ...
        return f"{type(exc).__name__}: {exc}"
    return None


CACHE_PROBLEM = _cache_problem()
if CACHE_PROBLEM is not None:
    # The kernel modules read these options when they are imported, after this.
    _config.NUMBA_JIT_OPTIONS["cache"] = False
    warnings.warn(
        f"Numba cannot write a cache for fastnn's kernels ({CACHE_PROBLEM}); they compile in "
        "every process instead. Set NUMBA_CACHE_DIR to a writable directory to cache them.",
        RuntimeWarning,
        stacklevel=2,
    )


def _set_threads(n: int) -> None:
    # Numba runs at most NUMBA_NUM_THREADS; fewer than fastnn's count is legal. Numba's count
    # is per thread: _jit.threads() sets it again where a kernel runs when the count in use
    # differs from what this thread last set.
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    from . import _jit

    _jit._per_thread.n = n


_config.register_thread_hook(_set_threads)

from .. import gemm_calibration  # noqa: E402

gemm_calibration.watch("numba")  # this machine's measured GEMM policy, if `fastnn calibrate` ran

BACKEND_INFO = {
    "description": "Numba @njit kernels (parallel loops, cached compilation)",
    "numba": numba.__version__,
    "threading_layer_max_threads": numba.config.NUMBA_NUM_THREADS,
    "cache": "on" if CACHE_PROBLEM is None else f"off ({CACHE_PROBLEM})",
    "interrupt_safe_returns": INTERRUPT_SAFE_RETURNS,
}
