"""One home for fastnn's settings: environment variables, thread counts, JIT flags.

Everything that reads ``os.environ`` or decides how many threads run lives
here, so the rest of the package asks this module instead of guessing.

Environment variables
---------------------
FASTNN_BACKEND
    Backend selected at import: ``numpy``, ``numba``, ``cython`` or ``auto``
    (the default: the fastest one installed). Resolved lazily, on first use:
    a name that is no backend, or one that cannot load, raises there
    (``ValueError`` / ``BackendUnavailable`` naming the variable), and
    ``fastnn info`` reports it instead of failing.
FASTNN_NUM_THREADS
    Threads used by the Numba parallel loops, the Cython OpenMP loops and BLAS.
    Defaults to the number of CPUs this process may run on. Read on first use;
    a value that is not a whole number from 1 to :data:`MAX_THREADS_REQUEST`
    gives a ``RuntimeWarning`` and the default instead (a setting for speed
    must not stop the program), and one above :func:`max_num_threads` is
    lowered to it, with a warning, as :func:`set_num_threads` does.
FASTNN_ADAPTIVE_THREADS
    ``1`` (the default) lets fastnn run its own parallel loops on fewer threads
    while other programs keep the cores busy (:mod:`fastnn._contention`);
    ``0`` keeps the team at the thread count. Read on first use.
FASTNN_REQUIRE_BACKENDS
    Comma-separated backend names that the test-suite must find; a missing one
    becomes a test failure instead of a skip (CI sets it).
"""

from __future__ import annotations

import operator
import os
import threading
import warnings

#: Options passed to every ``numba.njit`` in fastnn.  ``cache=True`` keeps the
#: second process from recompiling; ``error_model="numpy"`` lets LLVM
#: vectorise divisions (no ZeroDivisionError checks); ``fastmath`` is limited
#: to flags that keep NaN/Inf semantics intact (no "nnan"/"ninf"), so NaN
#: still propagates through every kernel. No "arcp" either: with it LLVM may
#: turn a division into a multiplication by a reciprocal, and it did not do so
#: alike in every compilation of the same code. A process that compiled a
#: numba training plan and one that loaded it from Numba's cache then trained
#: to other last bits whenever a batch was not a power of two rows (11 rows:
#: other weights after one step; 16: never, scaling by a power of two being
#: exact either way); without it they agree. Where a kernel wants a
#: reciprocal it computes it once, explicitly.
NUMBA_JIT_OPTIONS = dict(
    cache=True,
    nogil=True,
    error_model="numpy",
    fastmath={"contract", "nsz", "afn", "reassoc"},
)

#: Largest thread count :func:`set_num_threads` accepts at all: four times the
#: 8192 CPUs of Linux's largest configuration, so above it no machine's cap
#: applies and the number is a mistake (a byte count, an overflow), not a wish.
#: The compiled kernels refuse more too (``kernels/_common.pxi``).
MAX_THREADS_REQUEST = 4 * 8192

_lock = threading.RLock()
_num_threads: int | None = None
_cpu_counts: tuple[int, int] | None = None


def _cpus() -> tuple[int, int]:
    """(CPUs this process may run on, CPUs of the machine), read once."""
    global _cpu_counts
    if _cpu_counts is None:
        total = max(1, os.cpu_count() or 1)
        try:
            usable = max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - not on Linux
            usable = total
        _cpu_counts = (usable, max(total, usable))
    return _cpu_counts


def max_num_threads() -> int:
    """Most threads fastnn runs: four per CPU of the machine.

    More threads than that only oversubscribes the cores, and far more crashes
    the OpenMP runtime (thread creation fails inside a parallel region, which
    GNU OpenMP answers with an abort) -- so larger requests are lowered to it.

    Returns
    -------
    int
        ``4 * os.cpu_count()`` (at least 4).
    """
    return 4 * _cpus()[1]


def _check_thread_count(n, what: str) -> int:
    """``n`` as an int in [1, MAX_THREADS_REQUEST]; TypeError/ValueError otherwise."""
    # bool is an int subclass, and True threads is a bug, not 1.
    if isinstance(n, bool) or not hasattr(type(n), "__index__"):
        raise TypeError(f"{what} must be an integer, got {type(n).__name__} {n!r}")
    n = operator.index(n)
    if n < 1:
        raise ValueError(f"{what} must be >= 1, got {n}")
    if n > MAX_THREADS_REQUEST:
        raise ValueError(
            f"{what} must be at most {MAX_THREADS_REQUEST} (the cap on this machine is {max_num_threads()}), got {n}"
        )
    return n


def _cap(n: int, what: str, stacklevel: int) -> int:
    """``n`` lowered to :func:`max_num_threads`, with a warning naming both values."""
    cap = max_num_threads()
    if n <= cap:
        return n
    warnings.warn(
        f"{what} asks for {n} threads; fastnn uses at most {cap} on this machine "
        f"(4 x {_cpus()[1]} CPUs), so it uses {cap}",
        RuntimeWarning,
        stacklevel=stacklevel + 1,
    )
    return cap


def _default_num_threads() -> int:
    default = _cpus()[0]
    env = os.environ.get("FASTNN_NUM_THREADS", "").strip()
    if not env:
        return default
    try:
        n = _check_thread_count(int(env), "FASTNN_NUM_THREADS")
    except ValueError:
        # Bad values warn instead of raising: this runs inside the first kernel
        # call or backend load, which must not fail over a speed setting.
        warnings.warn(
            f"FASTNN_NUM_THREADS={env!r} is not a whole number from 1 to {MAX_THREADS_REQUEST}; "
            f"using the default, {default} threads",
            RuntimeWarning,
            stacklevel=3,
        )
        return default
    return _cap(n, f"FASTNN_NUM_THREADS={env}", stacklevel=3)


def get_num_threads() -> int:
    """Number of threads fastnn's kernels and BLAS use.

    Returns
    -------
    int
        The count in use: the value last given to :func:`set_num_threads`,
        else ``FASTNN_NUM_THREADS``, else the number of usable CPUs -- after
        the cap of :func:`max_num_threads`.
    """
    global _num_threads
    # Kernels ask on every call: no lock once the count is known.
    n = _num_threads
    if n is None:
        with _lock:
            if _num_threads is None:
                _num_threads = _default_num_threads()
            n = _num_threads
    return n


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
        Positive thread count. Kernels still run small inputs serially. A
        count above :func:`max_num_threads` (four per CPU) is lowered to it
        with a ``RuntimeWarning``; :func:`get_num_threads` returns the count
        used.

    Raises
    ------
    TypeError
        If ``n`` is not an integer (``bool``, ``float`` and ``str`` included).
    ValueError
        If ``n < 1`` or ``n > MAX_THREADS_REQUEST`` (32768, beyond any cap).

    Notes
    -----
    fastnn never calls threaded BLAS from inside one of its own parallel
    regions, so ``n`` threads is the most that run at any time. The count is
    process-wide; calls from several threads are serialised, and the last one
    wins. Numba alone keeps a count per thread: it gets the new one in the
    calling thread (other threads run its loops with up to
    ``NUMBA_NUM_THREADS``).
    """
    global _num_threads
    n = _cap(_check_thread_count(n, "number of threads"), f"set_num_threads({n})", stacklevel=2)
    with _lock:
        _apply_blas_threads(n)
        _blas_capped.clear()  # the count set now is what the cap gives back
        _num_threads = n
        if 0 < _thread_cap < n:
            _cap_blas(_thread_cap)
        for hook in _thread_hooks:
            hook(n)


# ---- sharing the cores: the thread count in use now ----------------------------------------

_thread_cap = 0  # 0: no cap; else the most threads the loops use now (set by fastnn._contention)
_cap_hooks: list = []
_adaptive: bool | None = None  # None: not decided yet (FASTNN_ADAPTIVE_THREADS on first use)


def env_switch(name: str, default: bool = True) -> bool:
    """An on/off environment variable: ``1/on/true/yes`` or ``0/off/false/no``; unset or empty: ``default``.

    Any other value warns and gives ``default`` (a setting for speed must not stop the program).
    """
    env = os.environ.get(name, "").strip().lower()
    if env in ("1", "on", "true", "yes"):
        return True
    if env in ("0", "off", "false", "no"):
        return False
    if env:
        warnings.warn(f"{name}={env!r} is neither 1 nor 0; using the default ({int(default)})", RuntimeWarning, 2)
    return default


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    return _cpuinfo()[0]


def cpu_flags_digest() -> str:
    """A short digest of the CPU's feature flags (``/proc/cpuinfo``); empty where they are not listed."""
    return _cpuinfo()[1]


_cpuinfo_cache: tuple[str, str] | None = None


def _cpuinfo() -> tuple[str, str]:
    global _cpuinfo_cache
    if _cpuinfo_cache is None:
        import hashlib
        import platform

        model = flags = ""
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    key, _, val = line.partition(":")
                    key = key.strip()
                    if key == "model name" and not model:
                        model = val.strip()
                    elif key in ("flags", "Features") and not flags:
                        flags = hashlib.sha256(" ".join(sorted(val.split())).encode()).hexdigest()[:16]
                    elif not key and model and flags:  # the end of the first CPU's block
                        break
        except OSError:
            pass
        _cpuinfo_cache = (model or platform.processor() or "unknown", flags)
    return _cpuinfo_cache


def active_threads() -> int:
    """Threads fastnn's own parallel loops use now.

    The count of :func:`get_num_threads`, lowered while other programs keep
    the cores busy (see :func:`set_adaptive_threads`). The kernels ask on
    every call that could run in parallel.

    Returns
    -------
    int
        A count from 1 to :func:`get_num_threads`.
    """
    n = _num_threads
    if n is None:
        n = get_num_threads()
    if n > 1:
        if _adaptive is None:
            _decide_adaptive()
        cap = _thread_cap
        if 0 < cap < n:
            return cap
    return n


def _decide_adaptive() -> None:
    global _adaptive
    with _lock:
        if _adaptive is None:
            _adaptive = env_switch("FASTNN_ADAPTIVE_THREADS")
            if _adaptive:
                from . import _contention

                _contention.watch()


def set_adaptive_threads(enabled: bool) -> None:
    """Let fastnn run fewer threads while other programs keep the cores busy.

    With two threads on two cores and one other busy program, a parallel loop
    waits at its closing barrier for the thread the scheduler put aside, and
    a step runs slower than on one thread. Adaptive threads (the default)
    measure how many cores other processes keep busy (Linux: ``/proc/stat``
    against this process's CPU time, ten times a second, 26 µs each) and
    lower the team of fastnn's own loops, and the BLAS libraries' threads,
    to the cores left free. Both come back once the others stop; a BLAS
    count changed meanwhile (by ``threadpool_limits``, say) is left as set.

    Parameters
    ----------
    enabled : bool
        False keeps every loop at :func:`get_num_threads` (and stops the
        watching thread); True starts watching again on the next parallel call.

    Notes
    -----
    Like :func:`set_num_threads`, a change of team can change the rounding of
    some results (BLAS products, a few reductions): two runs on a machine
    whose load differs may differ in the last bits. For runs that repeat bit
    for bit, use one thread or turn adaptive threads off; the environment
    variable ``FASTNN_ADAPTIVE_THREADS=0`` does so from the start.
    """
    global _adaptive
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {type(enabled).__name__} {enabled!r}")
    from . import _contention

    with _lock:
        _adaptive = enabled
        if enabled:
            _contention.watch()
        else:
            _contention.stop()
            _set_thread_cap(0)


def adaptive_threads() -> bool:
    """Whether fastnn lowers its team while the cores are shared (:func:`set_adaptive_threads`)."""
    if _adaptive is None:
        _decide_adaptive()
    return bool(_adaptive)


_blas_pending = False  # the cap changed and BLAS has not followed yet


def _set_thread_cap(n: int) -> None:
    """Cap the loops' team at ``n`` threads (0: no cap); called by fastnn._contention.

    BLAS follows at the next kernel call (:func:`_sync_blas`): OpenBLAS ignores a
    count set from a thread other than the one that set it last, so it is set from
    the thread that calls the kernels.
    """
    global _thread_cap, _blas_pending
    with _lock:
        if n == _thread_cap:
            return
        _thread_cap = n
        _blas_pending = True
        for hook in _cap_hooks:
            hook(n)


def _sync_blas() -> None:
    """Bring the BLAS libraries to the cap now (``backends.current`` calls it when one is pending)."""
    global _blas_pending
    with _lock:
        if _blas_pending:
            _blas_pending = False
            _cap_blas(_thread_cap)


# BLAS libraries lowered by the cap: path -> (their count before it, the count set).
_blas_capped: dict = {}


def _cap_blas(n: int) -> None:
    """Lower each BLAS library above ``n`` threads to ``n`` (0: give back what the cap took).

    Only the count in use changes (OpenBLAS keeps its pool; a call already running keeps the
    threads it started with), and a library whose count someone changed meanwhile -- a
    ``threadpool_limits`` block, :func:`set_num_threads` -- is left as they set it.
    """
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return
    blas = ThreadpoolController().select(user_api="blas").lib_controllers
    if n == 0:
        for lib in blas:
            before, set_to = _blas_capped.get(lib.filepath, (None, None))
            if before is not None and lib.get_num_threads() == set_to:
                lib.set_num_threads(before)
        _blas_capped.clear()
        return
    for lib in blas:
        now = lib.get_num_threads()
        if now is not None and now > n:
            before = _blas_capped.get(lib.filepath, (now, None))[0]
            lib.set_num_threads(n)
            _blas_capped[lib.filepath] = (before, n)


# The BLAS libraries' controllers for serial_blas, found once (listing them costs ~1 ms).
_serial_libs: list | None = None
_serial_depth = 0
_serial_saved: list = []


class serial_blas:
    """A block in which the BLAS libraries run each call on the calling thread alone.

    For code that already runs one task per core on a team of its own (the two
    directions of a bidirectional recurrent layer, one thread each): a BLAS
    call from each thread would otherwise start BLAS's own threads too, two
    teams on the same cores, and its pool's threads keep spinning after each
    call (figures: ``docs/performance.md``). A library's count is lowered to
    one at the block's start and given back at its end, unless someone changed
    it meanwhile. Set from the thread that calls the kernels (OpenBLAS heeds
    the count of the thread that set it last, see :func:`_set_thread_cap`);
    blocks may nest and may run in several threads at once (the outermost
    gives the counts back). A product inside the block has the bits it has
    on one BLAS thread: OpenBLAS's float32 products can round differently on
    one thread than on two.
    """

    def __enter__(self) -> serial_blas:
        global _serial_depth, _serial_libs
        with _lock:
            _serial_depth += 1
            if _serial_depth > 1:
                return self
            if _serial_libs is None:
                try:
                    from threadpoolctl import ThreadpoolController
                except ImportError:  # pragma: no cover - threadpoolctl is a dependency
                    _serial_libs = []
                else:
                    _serial_libs = ThreadpoolController().select(user_api="blas").lib_controllers
            for lib in _serial_libs:
                now = lib.get_num_threads()
                if now is not None and now > 1:
                    lib.set_num_threads(1)
                    _serial_saved.append((lib, now))
        return self

    def __exit__(self, *exc: object) -> None:
        global _serial_depth
        with _lock:
            _serial_depth -= 1
            if _serial_depth > 0:
                return
            for lib, before in _serial_saved:
                if lib.get_num_threads() == 1:
                    lib.set_num_threads(before)
            _serial_saved.clear()


def register_cap_hook(hook) -> None:
    """Register ``hook(n)``, called now and whenever the cap of the team changes (0: none)."""
    with _lock:
        _cap_hooks.append(hook)
        hook(_thread_cap)


def prefer_short_openmp_spin() -> None:
    """Make idle OpenMP workers spin briefly, then sleep, unless the user chose.

    GNU OpenMP's workers spin about 3 ms between parallel regions by default;
    on shared cores a descheduled spinner then holds the next region at its
    barrier for a scheduler slice, and a spinning worker takes the core from
    BLAS's own threads. Sleeping at once (``OMP_WAIT_POLICY=PASSIVE``) avoids
    both but costs about 40 µs to wake a worker on a 2-core virtual machine,
    which made every mid-sized product (a dense layer's 200 x 256 x 100,
    ~70 µs on one core) slower on two threads than on one. A spin of about
    20 µs (``GOMP_SPINCOUNT=2000``) bridges the gaps between the regions of
    one training step; 0.1 ms (10000) made the Numba CNN step, whose products
    alternate with BLAS calls, 1.5x slower. LLVM's runtime keeps sleeping at
    once (``KMP_BLOCKTIME=0``: not measured here). While other programs keep
    the cores busy the adaptive team (:mod:`fastnn._contention`) runs on
    fewer threads anyway (figures: ``docs/performance.md``). Both compiled
    backends call this before the OpenMP runtime loads (it reads the
    variables once); ``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT`` or
    ``KMP_BLOCKTIME`` set by the user wins.
    """
    if not any(v in os.environ for v in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")):
        os.environ["GOMP_SPINCOUNT"] = "2000"
        os.environ["KMP_BLOCKTIME"] = "0"


def requested_backend() -> str:
    """The backend named by ``FASTNN_BACKEND`` (``"auto"`` when unset)."""
    return os.environ.get("FASTNN_BACKEND", "auto").strip().lower() or "auto"


#: Tunables that moved to fastnn.backends.tuning, still readable here.
_MOVED = {
    "PARALLEL_MIN_ELEMENTS": "parallel_min_elements",
    "PARALLEL_MIN_ELEMENTS_CHEAP": "parallel_min_elements_cheap",
}


def __getattr__(name):
    if name in _MOVED:
        from .backends import tuning

        return tuning.value(_MOVED[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def required_backends() -> list[str]:
    """Backends that ``FASTNN_REQUIRE_BACKENDS`` says must be present."""
    raw = os.environ.get("FASTNN_REQUIRE_BACKENDS", "")
    return [name.strip().lower() for name in raw.split(",") if name.strip()]
