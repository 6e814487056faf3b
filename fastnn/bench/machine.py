"""The machine's limits, measured in the same run as the workloads.

Two figures put every timing in context:

- **GEMM GFLOP/s**: float32 ``C = A·B`` at n = 1024 through NumPy's BLAS,
  ``2 n³`` operations per product; a compute-bound kernel cannot beat it by
  much.
- **copy GB/s**: ``np.copyto`` of a buffer much larger than the caches,
  counting the bytes read plus the bytes written; an elementwise kernel that
  streams memory cannot beat it.

:func:`context` adds what explains the figures: CPU, cores, thread counts,
BLAS library and kernel set (threadpoolctl), and the versions that matter.
"""

from __future__ import annotations

import gc
import os
import time

import numpy as np

__all__ = [
    "measure_gemm",
    "measure_copy",
    "gemm_step",
    "copy_step",
    "copy_array_step",
    "context",
    "time_block",
    "warm",
    "SETTLE_S",
]

#: Untimed run of a row before each of its timed blocks when several threads run: OpenBLAS's idle
#: workers spin for about 0.1 s after a threaded call, on the cores the next row's team needs.
SETTLE_S = 0.12


def time_block(fn, number: int) -> float:
    """Seconds per call of ``fn`` over ``number`` back-to-back calls (GC paused)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        return (time.perf_counter() - t0) / number
    finally:
        if enabled:
            gc.enable()


def warm(fn, seconds: float) -> None:
    """Run ``fn`` untimed for ``seconds`` (at least once): the previous row's spinning
    threads wind down meanwhile, while the cores stay busy (an idle pause lets them clock down)."""
    end = time.perf_counter() + seconds
    fn()
    while time.perf_counter() < end:
        fn()


def _repeat(fn, repeat: int, min_block: float) -> list[float]:
    fn()
    t = time_block(fn, 1)
    number = max(1, int(min_block / max(t, 1e-9)))
    return [time_block(fn, number) for _ in range(repeat)]


def gemm_step(n: int = 1024):
    """``(step, flops)``: one float32 ``n x n`` product through NumPy's BLAS."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    return (lambda: np.matmul(a, b, out=c)), 2.0 * n**3


def copy_step(mbytes: int = 128):
    """``(step, bytes)``: one copy of an ``mbytes`` MiB buffer; bytes counts read + written."""
    n = mbytes * (1 << 20) // 4
    src = np.ones(n, np.float32)
    dst = np.zeros(n, np.float32)
    return (lambda: np.copyto(dst, src)), 2.0 * src.nbytes


def copy_array_step(nbytes: float):
    """One ``np.copyto`` of an ``nbytes`` float32 array into a preallocated one (no allocation, like a
    layer inside a workspace): the time to move a batch once, cache-resident or not as the batch is."""
    n = max(1, int(nbytes) // 4)
    src = np.ones(n, np.float32)
    dst = np.zeros(n, np.float32)
    return lambda: np.copyto(dst, src)


def measure_gemm(n: int = 1024, repeat: int = 5, min_block: float = 0.05) -> dict:
    """Float32 GEMM throughput of NumPy's BLAS at size ``n``.

    Returns
    -------
    dict
        ``n``, ``gflops`` (from the median time), ``times`` (seconds per
        product, one per repetition).
    """
    step, flops = gemm_step(n)
    times = _repeat(step, repeat, min_block)
    return {"n": n, "gflops": flops / float(np.median(times)) / 1e9, "times": times}


def measure_copy(mbytes: int = 128, repeat: int = 5, min_block: float = 0.05) -> dict:
    """Memory-copy bandwidth, bytes read + written per second.

    Parameters
    ----------
    mbytes : int
        Size of the buffer copied (MiB); keep it well above the last-level cache.

    Returns
    -------
    dict
        ``mbytes``, ``gbps`` (from the median time), ``times``.
    """
    step, nbytes = copy_step(mbytes)
    times = _repeat(step, repeat, min_block)
    return {"mbytes": mbytes, "gbps": nbytes / float(np.median(times)) / 1e9, "times": times}


def context(threads: int) -> dict:
    """Machine and software context of a run (extends ``fastnn.cli.machine_info``)."""
    from ..cli import machine_info

    info = machine_info()
    info["cores"] = os.cpu_count()
    try:
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        info["usable_cpus"] = os.cpu_count()
    thread_counts = {"fastnn": threads}
    try:
        from threadpoolctl import threadpool_info

        pools = threadpool_info()
        info["threadpools"] = [
            {
                k: p.get(k)
                for k in (
                    "user_api",
                    "internal_api",
                    "version",
                    "architecture",
                    "num_threads",
                    "threading_layer",
                    "filepath",
                )
            }
            for p in pools
        ]
        blas = [p for p in pools if p.get("user_api") == "blas"]
        if blas:
            thread_counts["blas"] = blas[0].get("num_threads")
    except ImportError:
        info["threadpools"] = []
    import sys

    if "numba" in sys.modules:
        try:
            import numba

            thread_counts["numba"] = numba.get_num_threads()
        except Exception:
            pass
    if "torch" in sys.modules:
        import torch

        thread_counts["torch"] = torch.get_num_threads()
    info["thread_counts"] = thread_counts
    info["env"] = {
        k: os.environ[k] for k in sorted(os.environ) if k.startswith(("OPENBLAS", "OMP_", "MKL_", "NUMBA_", "FASTNN_"))
    }
    return info
