"""GEMM benchmarks: fastnn's own GEMM (Cython, Numba) against BLAS and numpy.matmul.

pytest-benchmark suite::

    python -m pytest benches/bench_gemm.py --benchmark-only

or a GFLOP/s report with ratios measured in one run (same thread count for
everything, medians of interleaved repetitions)::

    python benches/bench_gemm.py                 # n = 32 ... 2048 and the dense-layer shapes
    python benches/bench_gemm.py --sizes 1024 --repeat 9
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benches/bench_gemm.py --sizes 1024

The report also prints which BLAS kernel set ran (threadpoolctl), the fused
dense forward (GEMM + bias + ReLU) against the bare GEMM, and small products
called back to back from compiled code (own GEMM vs BLAS).
"""

import argparse
import time

import numpy as np
import pytest

import fastnn
from fastnn import gemm as fgemm

SQUARE = (32, 64, 128, 256, 512, 1024, 2048)
DENSE_SHAPES = ((32, 64, 128), (128, 784, 256))  # (M, K, N) of dense layers


def _impl(name):
    try:
        if name == "cython":
            from fastnn.backends.cython_backend import _gemm as mod
        else:
            from fastnn.backends.numba_backend import _gemm as mod
    except ImportError as exc:
        pytest.skip(f"{name} GEMM unavailable: {exc}")
    return mod


def _operands(m, k, n, dtype=np.float32):
    rng = np.random.default_rng(0)
    return (
        rng.standard_normal((m, k)).astype(dtype),
        rng.standard_normal((k, n)).astype(dtype),
        np.empty((m, n), dtype),
    )


SHAPES = [(n, n, n) for n in SQUARE if n <= 1024] + list(DENSE_SHAPES)


@pytest.mark.parametrize("m,k,n", SHAPES, ids=lambda s: str(s))
@pytest.mark.parametrize("impl", ["cython", "numba", "numpy"])
def test_gemm(benchmark, impl, m, k, n):
    a, b, out = _operands(m, k, n)
    if impl == "numpy":
        benchmark(np.matmul, a, b, out=out)
    else:
        mod = _impl(impl)
        mod.gemm(a, b, False, False, out)
        benchmark(mod.gemm, a, b, False, False, out)
    benchmark.extra_info["gflops"] = 2.0 * m * n * k / benchmark.stats.stats.median / 1e9


@pytest.mark.parametrize("fused", [False, True], ids=["gemm", "gemm+bias+relu"])
@pytest.mark.parametrize("impl", ["cython", "numba"])
def test_fused_dense_512(benchmark, impl, fused):
    mod = _impl(impl)
    x, wt, out = _operands(512, 512, 512)
    w = np.ascontiguousarray(wt.T)
    bias = np.ones(512, np.float32)
    if fused:
        mod.dense_forward(x, w, bias, "relu", out)
        benchmark(mod.dense_forward, x, w, bias, "relu", out)
    else:
        mod.gemm(x, w, False, True, out)
        benchmark(mod.gemm, x, w, False, True, out)


# ------------------------------------------------------------------ report


def _median_ratio(f_num, f_den, repeat):
    """Medians of f_num() and f_den() (seconds), each timed in its own block after a pause.

    Not interleaved: BLAS worker threads spin for a while after each call and
    would take the cores from whatever runs right after them."""
    time.sleep(0.2)
    tn = [f_num() for _ in range(repeat)]
    time.sleep(0.2)
    td = [f_den() for _ in range(repeat)]
    return float(np.median(tn)), float(np.median(td))


def _timeit(fn, reps):
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def report(sizes, repeat, threads, dtype=np.float32):
    fastnn.set_num_threads(threads)
    print(f"threads: {fastnn.get_num_threads()}")
    for info in fgemm.blas_info():
        print(
            f"BLAS: {info.get('internal_api')} {info.get('version')} kernels={info.get('architecture')} "
            f"threads={info.get('num_threads')}"
        )
    try:
        from fastnn.backends.cython_backend import _gemm as cg

        print(f"own Cython GEMM kernel set: {cg.isa()}")
    except ImportError:
        cg = None
    try:
        from fastnn.backends.numba_backend import _gemm as ng

        print(f"own Numba GEMM: {ng.VBYTES * 8}-bit vectors, tile {ng.MR}x{ng.NV} vectors")
    except ImportError:
        ng = None
    rows = fgemm.gflops_table(sizes, ("cython", "numba", "blas", "numpy"), dtype=dtype, repeat=repeat)
    print(f"\nGFLOP/s, {np.dtype(dtype).name} (ratio to BLAS in brackets)")
    print(f"{'M x K x N':>18} " + " ".join(f"{b:>16}" for b in ("cython", "numba", "blas", "numpy")))
    for size in sizes:
        m, k, n = (size, size, size) if np.isscalar(size) else size
        cells = []
        for b in ("cython", "numba", "blas", "numpy"):
            r = next((r for r in rows if r["backend"] == b and (r["m"], r["k"], r["n"]) == (m, k, n)), None)
            cells.append("-" if r is None else f"{r['gflops']:7.1f} ({r.get('ratio_to_blas', 0):.2f})")
        print(f"{f'{m}x{k}x{n}':>18} " + " ".join(f"{c:>16}" for c in cells))

    # Fused dense forward vs bare GEMM, 512^3, from Python (same call overhead for both).
    x, wt, out = _operands(512, 512, 512, dtype)
    w = np.ascontiguousarray(wt.T)
    bias = np.ones(512, dtype)
    print("\nfused dense forward (GEMM + bias + ReLU) / bare GEMM, 512x512x512:")
    for name, mod in (("cython", cg), ("numba", ng)):
        if mod is None:
            continue
        mod.dense_forward(x, w, bias, "relu", out)
        mod.gemm(x, w, False, True, out)
        tf, tg = _median_ratio(
            lambda: _timeit(lambda: mod.dense_forward(x, w, bias, "relu", out), 20),
            lambda: _timeit(lambda: mod.gemm(x, w, False, True, out), 20),
            repeat,
        )

        # the unfused path for comparison: BLAS GEMM, then bias and ReLU as separate passes
        def unfused():
            np.matmul(x, w.T, out=out)
            np.add(out, bias, out=out)
            np.maximum(out, 0, out=out)

        tu = float(np.median([_timeit(unfused, 20) for _ in range(repeat)]))
        print(
            f"  {name:7s} fused {tf * 1e3:7.3f} ms  bare {tg * 1e3:7.3f} ms  ratio {tf / tg:.3f}   "
            f"(numpy matmul + bias + relu: {tu * 1e3:.3f} ms)"
        )

    # Small products called back to back from compiled code: own GEMM vs BLAS.
    print("\nsmall products from compiled code, own GEMM time / BLAS time (< 1: own faster):")
    for m, k, n in ((32, 64, 128), (32, 128, 64), (64, 64, 64), (128, 128, 128), (32, 64, 10), (128, 128, 10)):
        a, b, out = _operands(m, k, n, dtype)
        line = f"  {m:4d}x{k:4d}x{n:4d}"
        if cg is not None:
            reps = 2000
            cg.bench_loop(a, b, out, 10, False)
            cg.bench_loop(a, b, out, 10, True)
            to, tb = _median_ratio(
                lambda: cg.bench_loop(a, b, out, reps, False), lambda: cg.bench_loop(a, b, out, reps, True), repeat
            )
            line += f"  cython {to * 1e6:7.2f} us vs {tb * 1e6:7.2f} us ({to / tb:.2f})"
        if ng is not None:
            nt = fastnn.get_num_threads()
            ng.bench_loop(a, b, out, 2, False, nt)
            ng.bench_loop(a, b, out, 2, True, nt)

            def run(blas):
                t0 = time.perf_counter()
                ng.bench_loop(a, b, out, 2000, blas, nt)
                return (time.perf_counter() - t0) / 2000

            to, tb = _median_ratio(lambda: run(False), lambda: run(True), repeat)
            line += f"  numba {to * 1e6:7.2f} us vs {tb * 1e6:7.2f} us ({to / tb:.2f})"
        print(line)


def _parse_size(text):
    parts = [int(p) for p in text.lower().split("x")]
    return parts[0] if len(parts) == 1 else tuple(parts)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes", nargs="*", type=_parse_size, default=list(SQUARE) + list(DENSE_SHAPES), help="n or MxKxN"
    )
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--threads", type=int, default=fastnn.get_num_threads())
    parser.add_argument("--float64", action="store_true")
    args = parser.parse_args()
    report(args.sizes, args.repeat, args.threads, np.float64 if args.float64 else np.float32)
