"""Which matrix multiply runs (fastnn's own GEMM or BLAS), and measuring them.

The switch is public API here; the policy itself (the rule and its values)
lives with the backends, in :mod:`fastnn.backends.gemm_policy` and
:mod:`fastnn.backends.tuning`:

>>> import fastnn
>>> fastnn.gemm.set_gemm("own")    # always the own GEMM
>>> fastnn.gemm.set_gemm("blas")   # always BLAS
>>> fastnn.gemm.set_gemm("auto")   # by shape (the default)

:func:`gflops_table` measures GFLOP/s of every implementation over a list
of sizes (the benchmark report plots it); :func:`measure_crossover` finds,
on the machine at hand, the largest square product on which the own GEMM
is still at least as fast as BLAS.
"""

from __future__ import annotations

import time

import numpy as np

from .backends import gemm_policy as _policy
from .backends import tuning as _tuning
from .backends.gemm_policy import GEMM_MODES, get_gemm, set_gemm, use_gemm

__all__ = [
    "set_gemm",
    "get_gemm",
    "use_gemm",
    "use_own",
    "route",
    "GEMM_MODES",
    "measure_crossover",
    "gflops_table",
    "blas_info",
]


def use_own(backend: str, dtype, m: int, n: int, k: int) -> bool:
    """Whether ``backend`` runs an ``m x k`` by ``k x n`` product on its own GEMM now.

    Parameters
    ----------
    backend : {"cython", "numba"}
    dtype : numpy dtype of the operands
    m, n, k : int
        Product dimensions.
    """
    return _policy.use_own(backend, dtype, m, n, k)


def route(backend: str, dtype, m: int, n: int, k: int) -> str:
    """Where ``backend`` runs the product now: ``"small"``, ``"packed"`` (both own) or ``"blas"``."""
    return _policy.route(backend, dtype, m, n, k)


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


def gflops_table(
    sizes=(32, 64, 128, 256, 512, 1024, 2048, (32, 64, 128), (128, 784, 256)),
    backends=("cython", "numba", "blas", "numpy"),
    dtype=np.float32,
    repeat=5,
    min_time=0.05,
    threads=None,
    settle=0.2,
):
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


def measure_crossover(
    backend: str, dtype=np.float32, sizes=(64, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048), repeat=5, apply=False
):
    """Measure where BLAS starts to beat ``backend``'s own GEMM (square products).

    Returns the largest ``n**3`` below which the own GEMM was at least as
    fast as BLAS at every measured size (``1 << 40`` if it always was). With
    ``apply=True`` it becomes the backend's auto limit in
    :mod:`fastnn.backends.tuning` (for the Cython backend: for every
    instruction set) for the rest of the process.
    """
    rows = gflops_table(sizes, (backend, "blas"), dtype=dtype, repeat=repeat)
    limit = 0
    for size in sizes:
        own = next(r for r in rows if r["backend"] == backend and r["m"] == size)
        blas = next(r for r in rows if r["backend"] == "blas" and r["m"] == size)
        if own["gflops"] < blas["gflops"]:
            break
        limit = size**3
    else:
        limit = 1 << 40
    if apply:
        name = (
            f"gemm_packed_max_{'f64' if np.dtype(dtype) == np.float64 else 'f32'}"
            if backend == "cython"
            else "numba_gemm_own_max"
        )
        _tuning.set_value(name, limit)
    return limit
