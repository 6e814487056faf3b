"""Which matrix multiply runs: fastnn's own GEMM or BLAS.

The Numba and Cython backends each carry a hand-written, BLIS-style GEMM
(packing into cache-sized panels, a register-tile micro-kernel, threads over
row blocks, bias and activation fused into the store of each output tile).
For small products it beats calling BLAS: nothing crosses a library
boundary, there is no thread hand-off, and the dense layer's epilogue comes
for free. For large ones an optimised BLAS with kernels for the exact CPU
can be faster. This module holds the switch and the measured crossover:

>>> import fastnn
>>> fastnn.gemm.set_gemm("own")    # always the own GEMM
>>> fastnn.gemm.set_gemm("blas")   # always BLAS
>>> fastnn.gemm.set_gemm("auto")   # by shape, from CROSSOVER (the default)

:func:`gflops_table` measures GFLOP/s of every implementation over a list
of sizes (the benchmark report plots it); :func:`measure_crossover` re-measures
the table on the machine at hand.
"""

from __future__ import annotations

import threading
import time

import numpy as np

__all__ = ["set_gemm", "get_gemm", "use_gemm", "use_own", "CROSSOVER", "SMALL_KERNEL_MAX", "MIN_FLOPS", "MIN_N", "set_crossover",
           "measure_crossover", "gflops_table", "blas_info", "register_policy_hook"]

GEMM_MODES = ("auto", "own", "blas")

_lock = threading.Lock()
_mode = "auto"

#: Largest product volume ``M*N*K`` (multiply-adds) for which ``"auto"`` picks
#: the own GEMM, per backend and dtype. Measured on a 2-core AMD Zen 5 against
#: OpenBLAS 0.3.31 as the environment configures it (OPENBLAS_CORETYPE=Haswell,
#: AVX2 kernels), same thread count, interleaved repetitions: the own GEMMs
#: were at least as fast at n = 64 ... 2048 (see benches/bench_gemm.py; re-measure
#: with :func:`measure_crossover`). Against OpenBLAS's AVX-512 kernels both
#: are level at n = 1024 (one thread: Cython 1.00x, Numba 0.98x BLAS's
#: GFLOP/s; two threads 0.94x, 1.06x); set a limit here (or
#: ``set_gemm("blas")``) where a faster BLAS is in use.
CROSSOVER = {
    "cython": {"float32": 1 << 40, "float64": 1 << 40},
    "numba": {"float32": 1 << 40, "float64": 1 << 40},
}

#: Largest volume ``M*N*K`` that the Cython backend's own GEMM always runs
#: in its small-product kernel (register tiles, no packing; ``_SMALL_GEMM_MAX``
#: in kernels/_blas.pxi): in ``"auto"`` such products are always own. Measured
#: from compiled code, 1 thread, small kernel time / OpenBLAS time, float32,
#: against the Haswell kernels: 32x64x128 0.30, 64^3 0.36, 32x128x10 0.55,
#: 128x128x10 0.58, 128x128x1 0.44, 7x33x5 0.69 (float64 0.22-0.64); against
#: the AVX-512 kernels: 32x64x10 0.94, 64^3 0.96-1.00, 128^3 0.77, 160^3 0.81.
#: The bound is where the packed GEMM would start using threads.
SMALL_KERNEL_MAX = {"cython": 192 ** 3}

#: Smallest volume ``M*N*K`` for which ``"auto"`` picks the own GEMM
#: (above :data:`SMALL_KERNEL_MAX` where a backend has that entry), measured
#: per call from Python (as the layers call it), 1 thread, own time / BLAS
#: time (x·Wᵀ products, one run each):
#:   Cython: 128^3 0.65, 128x784x256 0.62, 256^3 0.59, 1024^3 0.57;
#:   Numba (dense forward with bias and ReLU): 16^3 1.11, 32^3 0.87,
#:           8x64x64 0.91, 32x64x128 0.60, 64^3 0.62, 100^3 0.60, 128^3 0.50,
#:           32x784x128 0.53, 128x784x256 0.79.
#: Below these volumes the call into compiled code costs more than it saves.
MIN_FLOPS = {"cython": 0, "numba": 1 << 14}

#: Narrowest output (N columns) for which ``"auto"`` picks the packed own GEMM:
#: a product such as a 10-class output layer fills only part of its 16- or
#: 32-column register tile, and BLAS was as fast or faster there (Numba from
#: Python: 32x128x10 1.00, 128x128x10 0.76).
MIN_N = {"cython": 16, "numba": 16}


_MODE_CODES = {"auto": 0, "own": 1, "blas": 2}
_policy_hooks: list = []


#: Largest volume ``M*N*K`` run by the own GEMM in ``"auto"`` when more than
#: one thread is set. Measured with 2 threads from Python, own time / NumPy's
#: BLAS time, BLAS's threads idle before each series: Numba 128^3 1.48,
#: 256^3 1.17, 128x784x256 0.95, 512^3 0.63, 1024^3 0.67; Cython 128^3 1.01,
#: 200^3 1.24, 256^3 0.92, 512^3 0.60, 1024^3 0.68. The own GEMMs win the
#: large threaded products only while OpenBLAS's worker threads sleep: for a
#: while after any BLAS call they spin and take a core, and a threaded own
#: GEMM then runs at one-thread speed. So with several threads the Numba
#: backend's products and the Cython backend's plain ``matmul`` above 200^3
#: (``cython_backend/dense.py``) stay on NumPy's BLAS, the one the rest of the
#: process already uses. Below 192^3 the Numba GEMM runs on one thread (its
#: small-product kernel), fights no pool and stays own: W3 at 2 threads took
#: 22.6 us against 27.3 us with those products on BLAS. The Cython dense kernels keep the own GEMM at every
#: size: their BLAS alternative, called from C, is SciPy's OpenBLAS, a second
#: thread pool that fights NumPy's for the cores. With one thread the own
#: GEMMs win up to the largest sizes measured.
THREADED_LIMIT = {"numba": 192 ** 3}


def _limit(backend: str, dtype_name: str) -> float:
    """The ``"auto"`` upper volume bound for the current thread count (-1: never own)."""
    from ._config import get_num_threads

    limit = CROSSOVER.get(backend, {}).get(dtype_name)
    if limit is None:
        return -1.0
    if get_num_threads() > 1 and backend in THREADED_LIMIT:
        limit = min(limit, THREADED_LIMIT[backend])
    return float(limit)


def _notify(*_ignored) -> None:
    for backend, hook in _policy_hooks:
        hook(_MODE_CODES[_mode], _limit(backend, "float32"), _limit(backend, "float64"),
             int(MIN_N.get(backend, 0)), float(MIN_FLOPS.get(backend, 0)))


def register_policy_hook(backend: str, hook) -> None:
    """Register ``hook(mode_code, limit_float32, limit_float64, min_n, min_flops)``, called now and on every change.

    Compiled kernels that decide in C which GEMM to run (the Cython dense
    kernels) keep their own copy of the policy; this keeps it current.
    ``mode_code``: 0 auto, 1 own, 2 blas; a limit < 0 means "never own" in auto.
    """
    with _lock:
        _policy_hooks.append((backend, hook))
    hook(_MODE_CODES[_mode], _limit(backend, "float32"), _limit(backend, "float64"),
         int(MIN_N.get(backend, 0)), float(MIN_FLOPS.get(backend, 0)))


def set_crossover(backend: str, dtype, limit) -> None:
    """Set the ``"auto"`` threshold (largest ``M*N*K`` run by the own GEMM) of one backend and dtype."""
    with _lock:
        CROSSOVER.setdefault(backend, {})[np.dtype(dtype).name] = int(limit)
    _notify()


def set_gemm(mode: str) -> None:
    """Choose the matrix multiply used by the compiled backends.

    Parameters
    ----------
    mode : {"auto", "own", "blas"}
        ``"own"``: the backend's own GEMM for every shape; ``"blas"``: BLAS
        (through SciPy / NumPy) for every shape; ``"auto"``: by shape, using
        the measured :data:`CROSSOVER`.
    """
    global _mode
    if not isinstance(mode, str):
        raise TypeError(f"gemm mode must be a string, got {type(mode).__name__}")
    m = mode.strip().lower()
    if m not in GEMM_MODES:
        raise ValueError(f"unknown gemm mode {mode!r}; choose one of {', '.join(GEMM_MODES)}")
    with _lock:
        _mode = m
    _notify()


def get_gemm() -> str:
    """The current mode: ``"auto"``, ``"own"`` or ``"blas"``."""
    return _mode


class use_gemm:
    """Context manager: ``with fastnn.gemm.use_gemm("blas"): ...`` restores the mode afterwards."""

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


def use_own(backend: str, dtype, m: int, n: int, k: int) -> bool:
    """Whether ``backend`` should run an ``m x k`` by ``k x n`` product with its own GEMM.

    Parameters
    ----------
    backend : {"cython", "numba"}
    dtype : numpy dtype of the operands
    m, n, k : int
        Product dimensions.
    """
    mode = _mode
    if mode == "own":
        return True
    if mode == "blas":
        return False
    if m * n * k <= SMALL_KERNEL_MAX.get(backend, -1):
        return True
    limit = _limit(backend, np.dtype(dtype).name)
    return limit >= 0 and n >= MIN_N.get(backend, 0) and MIN_FLOPS.get(backend, 0) <= m * n * k <= limit


# ---------------------------------------------------------------- measuring

def blas_info() -> list[dict]:
    """threadpoolctl's view of the BLAS libraries loaded (kernel set: ``architecture``)."""
    from threadpoolctl import threadpool_info
    return [i for i in threadpool_info() if i.get("user_api") == "blas"]


def _own_runner(backend: str):
    """A function ``(a, b, out, reps) -> seconds per call`` timing products from compiled code."""
    if backend == "cython":
        from .backends.cython_backend import _gemm as cg
        return lambda a, b, out, reps: cg.bench_loop(a, b, out, reps, False)
    if backend == "numba":
        from . import _config
        from .backends.numba_backend import _gemm as ng

        def run(a, b, out, reps):
            nt = _config.get_num_threads()
            t0 = time.perf_counter()
            ng.bench_loop(a, b, out, reps, False, nt)
            return (time.perf_counter() - t0) / reps
        return run
    if backend == "blas":
        try:
            from .backends.cython_backend import _gemm as cg
            return lambda a, b, out, reps: cg.bench_loop(a, b, out, reps, True)
        except ImportError:
            from scipy.linalg import blas as sblas

            def run(a, b, out, reps):
                f = sblas.sgemm if a.dtype == np.float32 else sblas.dgemm
                t0 = time.perf_counter()
                for _ in range(reps):
                    f(1.0, b.T, a.T, trans_a=True, trans_b=True)
                return (time.perf_counter() - t0) / reps
            return run
    if backend == "numpy":
        def run(a, b, out, reps):
            t0 = time.perf_counter()
            for _ in range(reps):
                np.matmul(a, b, out=out)
            return (time.perf_counter() - t0) / reps
        return run
    raise ValueError(f"unknown GEMM implementation {backend!r}; use cython, numba, blas or numpy")


def _shape(size):
    if isinstance(size, (int, np.integer)):
        return int(size), int(size), int(size)
    m, k, n = size
    return int(m), int(k), int(n)


def gflops_table(sizes=(32, 64, 128, 256, 512, 1024, 2048, (32, 64, 128), (128, 784, 256)),
                 backends=("cython", "numba", "blas", "numpy"), dtype=np.float32, repeat=5,
                 min_time=0.05, threads=None, settle=0.2):
    """GFLOP/s of each GEMM implementation over a list of sizes, measured in one run.

    Parameters
    ----------
    sizes : iterable of int or (M, K, N)
        ``n`` means a square ``n x n x n`` product.
    backends : iterable of {"cython", "numba", "blas", "numpy"}
        ``cython`` / ``numba``: the own GEMM, called in a loop from compiled
        code; ``blas``: BLAS ``?gemm`` called from the same compiled loop;
        ``numpy``: ``numpy.matmul`` called from Python. Unavailable ones are
        skipped.
    dtype : float32 or float64
    repeat : int
        Timed repetitions of each implementation; the median counts.
    min_time : float
        Seconds each repetition lasts at least (calls are batched).
    threads : int, optional
        Thread count for everything (default: :func:`fastnn.get_num_threads`).
    settle : float
        Seconds of pause before timing each implementation (lets the
        previous one's worker threads go idle).

    Returns
    -------
    list of dict
        One row per (size, backend): ``m, k, n, backend, seconds, gflops``,
        plus ``ratio_to_blas`` where BLAS was measured.
    """
    from . import _config
    runners = {}
    for name in backends:
        try:
            runners[name] = _own_runner(name)
        except ImportError:
            continue
    # After the imports: every BLAS library loaded by now (NumPy's and
    # SciPy's) gets the same thread limit as fastnn's own loops.
    _config.set_num_threads(int(threads) if threads is not None else _config.get_num_threads())
    rng = np.random.default_rng(0)
    rows = []
    for size in sizes:
        m, k, n = _shape(size)
        a = rng.standard_normal((m, k)).astype(dtype)
        b = rng.standard_normal((k, n)).astype(dtype)
        out = np.empty((m, n), dtype)
        flops = 2.0 * m * n * k
        times = {}
        for name, run in runners.items():
            # Each implementation is timed in its own block, after a pause:
            # BLAS worker threads keep spinning for a while after a call, and
            # on a small machine they would steal the cores of whatever runs
            # next (interleaving calls measured that, not the GEMM).
            time.sleep(settle)
            run(a, b, out, 1)  # compile / warm caches
            t = run(a, b, out, 1)
            reps = max(1, int(min_time / max(t, 1e-7)))
            times[name] = [run(a, b, out, reps) for _ in range(repeat)]
        row_blas = None
        size_rows = []
        for name in runners:
            sec = float(np.median(times[name]))
            row = dict(m=m, k=k, n=n, backend=name, seconds=sec, gflops=flops / sec / 1e9)
            size_rows.append(row)
            if name == "blas":
                row_blas = row
        if row_blas is not None:
            for row in size_rows:
                row["ratio_to_blas"] = row["gflops"] / row_blas["gflops"]
        rows.extend(size_rows)
    return rows


def measure_crossover(backend: str, dtype=np.float32, sizes=(64, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048),
                      repeat=5, apply=False):
    """Measure where BLAS starts to beat ``backend``'s own GEMM (square products).

    Returns the largest ``n**3`` below which the own GEMM was at least as
    fast as BLAS at every measured size (``1 << 40`` if it always was). With
    ``apply=True`` the value is stored in :data:`CROSSOVER`.
    """
    rows = gflops_table(sizes, (backend, "blas"), dtype=dtype, repeat=repeat)
    limit = 0
    for size in sizes:
        own = next(r for r in rows if r["backend"] == backend and r["m"] == size)
        blas = next(r for r in rows if r["backend"] == "blas" and r["m"] == size)
        if own["gflops"] < blas["gflops"]:
            break
        limit = size ** 3
    else:
        limit = 1 << 40
    if apply:
        set_crossover(backend, dtype, limit)
    return limit


def _register_thread_hook() -> None:
    # The auto policy depends on the thread count: re-send it on every change.
    from ._config import register_thread_hook

    register_thread_hook(_notify)


_register_thread_hook()
