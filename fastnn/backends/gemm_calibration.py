"""A GEMM policy measured on this machine: up to which size fastnn's own GEMM beats BLAS.

The thresholds of :mod:`fastnn.backends.tuning` are defaults measured on a
few machines. Where the own GEMM stops beating BLAS depends on the
machine's BLAS build and the kernels it picks (OpenBLAS runs AVX2 or
AVX-512 kernels by CPU and ``OPENBLAS_CORETYPE``), on the instruction set of
the own kernels and on the thread count. On a 2-core AVX-512 machine with
OpenBLAS's SkylakeX kernels, the default policy ran the W4 step 1.6× slower
than the NumPy reference.

How it measures
---------------
:func:`calibrate` times training-shaped products (B×K times K×N, B from 32
to 256, 0.26M to 268M multiply-adds) on the own GEMM, as the ``"auto"`` mode
would run it with no upper bound, and on BLAS.

A sample is a *pair*: a block of calls (at least 1 ms) on the own GEMM
and one on BLAS, timed a few tens of milliseconds apart. Both blocks of a
pair see nearly the same load, so their ratio (own/BLAS) survives a busy
neighbour that would skew two independent minima: taking the best block of
each route, two runs in a row on a shared 2-core machine put the bound at
0.26M and at 134M multiply-adds. :data:`MIN_PAIRS` rounds go over the whole
ladder, one pair per product each, so that a burst of load touches one pair
of many products rather than many pairs of one.

The own GEMM's blocks never follow BLAS's directly: a threaded BLAS call
leaves its idle threads spinning on the cores for about 0.1 s (OpenBLAS),
and an own GEMM team timed among them ran 2-8× slower than alone (a
128×256×256 product: 0.64-0.82 ms against 0.09-0.1 ms; pairs that
alternated the order called it a loss at 15×). So the rounds go in groups
of :data:`GROUP`: the own GEMM's blocks of every round of the group, then
BLAS's, and before each group the process waits until its other threads
are idle (:func:`_quiet`, at most :data:`QUIET_MAX_S`).

Each product gets the median of its pairs' ratios, their quartiles (the
spread, shown) and a distribution-free 90% interval of that median (order
statistics), read against :data:`LOSS_MARGIN` (1.05: a tie keeps the own
GEMM) as a *win*, a *loss* or *unclear* (shown).

The policy has one bound: products up to it run on the own GEMM, larger
ones on BLAS. Of the bounds at the ladder's points, the one of least total
cost wins (:func:`crossover`), a product's cost being its median
log(own/BLAS) beyond the margin: the ladder's products weigh alike, one
noisy loss among wins does not end the own GEMM's range, and a cluster of
losses ends it only when the wins after it do not make up for it. (The
first versions ended the range at two losses in a row; on a 2-core AVX2
machine at 2 threads the own GEMM won 8 of the 11 products by 6-48%, and
two mid-sized products that the small kernel's team sometimes ran 1.3-2.6×
slower than BLAS ended it at 0.26M or 1M multiply-adds.)

Whether the pairs decide the bound is judged by a bootstrap
(:func:`judge`): the pairs of every product are drawn again
:data:`RESAMPLES` times, and the bound *holds* when, in 90% of the
resamples, it costs at most :data:`REGRET` (one product 5% slower) more
than that resample's best. Timing stops as soon as it holds, after
:data:`MIN_PAIRS` pairs per product; until then the products whose timing
decides (run by the own GEMM under one preferred bound and by BLAS under
another) get a further group of pairs each, up to :data:`MAX_PAIRS`. No
group starts after :data:`BUDGET_S` seconds of timing.

When it refuses
---------------
A calibration is stored (and applied) only when the evidence is clear:

* *unstable*: the bound still does not hold (:func:`judge`) when the
  products that decide it have their :data:`MAX_PAIRS` pairs or the time
  is out;
* *contended*: other processes kept more than ``cpus - threads + 0.5``
  cores busy on average while it measured (``/proc/stat``; the rule by
  which the adaptive team drops a thread), or the adaptive team did run
  fewer threads during some blocks: the timings then measure the neighbours
  as much as the kernels, or another thread count than the entry's;
* *out of time*: the first pass did not finish within the budget.

Then the previously stored entry stays in force, and :func:`calibrate`
returns the measurement with its ``problems`` (``fastnn calibrate`` prints
them and exits with status 1; ``fastnn warmup`` reports them and goes on).
``force=True`` (``fastnn calibrate --force``) stores it anyway, marked so:
``fastnn info`` then says what it was stored despite.

What it changes
---------------
* Cython: ``gemm_packed_max_<dtype>``, and ``gemm_small_max_<dtype>``
  when the small kernel already loses.
* Numba: ``numba_gemm_own_max_threaded`` (several threads) or
  ``numba_gemm_own_max`` (one).

Where it is kept
----------------
Results go to ``gemm-calibration.json`` in ``FASTNN_CACHE_DIR``, else
``$XDG_CACHE_HOME/fastnn``, else ``~/.cache/fastnn``. Each entry is keyed by
the CPU (model and flags), the BLAS libraries (version and kernel set), the
own kernels' instruction set, the thread count, the backend, the dtype,
fastnn's version and the measuring method (:data:`METHOD`: entries of the
earlier best-of-three method no longer apply). Any change of these misses
the entry, and the defaults apply until ``fastnn calibrate`` (or ``fastnn
warmup``) measures again. An entry records what its decision rested on:
per product, the median ratio, its quartiles and interval, the pairs and
the verdict; the cores others kept busy; the problems it was forced past.

When it applies
---------------
:func:`apply_cached` applies the matching entry when a compiled backend
loads and whenever the thread count changes. It never measures by itself:
a first call must not pay a second. A value set in ``FASTNN_TUNING``
wins over it. ``FASTNN_GEMM_CALIBRATION=off`` ignores the file, as the
test suite does so that its routes do not depend on the machine.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import sys
import tempfile
import threading
import time
import warnings

import numpy as np

from .. import _config, _contention
from . import tuning

__all__ = [
    "LADDER",
    "calibrate",
    "crossover",
    "judge",
    "verdict",
    "contended",
    "sample",
    "summarize",
    "problem_kinds",
    "thresholds",
    "apply_cached",
    "watch",
    "cache_path",
    "describe",
    "enabled",
]

#: Training-shaped products (m, k, n): a batch of m rows through a k -> n layer.
LADDER = (
    (32, 64, 128),
    (64, 128, 128),
    (128, 128, 128),
    (128, 256, 128),
    (128, 256, 256),
    (128, 512, 256),
    (128, 784, 256),
    (128, 512, 512),
    (256, 512, 512),
    (256, 1024, 512),
    (256, 1024, 1024),
)
#: The own GEMM loses a product only when it is this much slower than BLAS.
LOSS_MARGIN = 1.05
#: Pairs per product before the first decision: rounds over the whole ladder, one pair per product each.
MIN_PAIRS = 8
#: Pairs per product at most: the points whose timing decides are timed again, a group at a time, up to this.
MAX_PAIRS = 32
#: Rounds timed as one group: every own-GEMM block of the group, then every BLAS block.
GROUP = 4
#: Longest wait for this process's other threads (BLAS's idle pool) to stop spinning before a group.
QUIET_MAX_S = 0.3
#: Confidence of the interval around each product's median ratio, and of the bootstrap's regret.
CONFIDENCE = 0.9
#: Bootstrap resamples of the pairs that judge whether the bound holds (:func:`judge`).
RESAMPLES = 200
#: A bound holds when it costs at most this much (log time, summed over the ladder) more than a resample's best:
#: one product 5% slower, or ten of them 0.5%.
REGRET = math.log(1.05)
#: Shortest block of calls timed as one half of a pair (seconds).
MIN_BLOCK = 1e-3
#: Seconds of timing after which no further round starts.
BUDGET_S = 2.0
#: The measuring method, part of the key: entries of another method do not apply.
METHOD = 4
#: Unbounded, for the tunables' "no upper limit".
UNBOUNDED = 1 << 40
_FILE = "gemm-calibration.json"
_FORMAT = 1
_lock = threading.RLock()
#: Tunables this module set, with the value each had before: {name: previous}.
_applied: dict = {}
#: What the last apply_cached found, per (backend, dtype): the entry, or None.
_state: dict = {}


def enabled() -> bool:
    """False when ``FASTNN_GEMM_CALIBRATION=off`` (or ``0``): the cache is neither read nor applied."""
    return _config.env_switch("FASTNN_GEMM_CALIBRATION")


def cache_path() -> str:
    """The calibration file: in ``FASTNN_CACHE_DIR``, else ``$XDG_CACHE_HOME/fastnn``, else ``~/.cache/fastnn``."""
    root = os.environ.get("FASTNN_CACHE_DIR", "").strip()
    if not root:
        base = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "fastnn")
    return os.path.join(root, _FILE)


# ---------------------------------------------------------------------------- the decision


def _ratio(p: dict) -> float:
    return p["ratio"] if "ratio" in p else p["own"] / p["blas"]


def verdict(p: dict) -> str:
    """``"win"``, ``"loss"`` or ``"unclear"``: where the point's interval (``low``, ``high``) lies against the margin.

    A point with no interval (``own`` and ``blas`` only) is one sample: its ratio decides.
    """
    r = _ratio(p)
    if p.get("high", r) <= LOSS_MARGIN:
        return "win"
    if p.get("low", r) > LOSS_MARGIN:
        return "loss"
    return "unclear"


def _excess(ratios) -> float:
    """What running a product on the own GEMM costs against BLAS: median log(own/BLAS) less log(margin).

    Negative where the own GEMM wins, zero at a tie within :data:`LOSS_MARGIN`.
    Logarithms weigh every product of the ladder alike, whatever its size.
    """
    return float(np.median(np.log(np.asarray(ratios, np.float64)))) - math.log(LOSS_MARGIN)


def _best(excess) -> int:
    """How many of the smallest products (in order) to run on the own GEMM: the count of least total cost.

    The cost of running the first ``c`` products on the own GEMM and the rest on
    BLAS is the sum of the first ``c`` excesses (:func:`_excess`). Of equal
    costs, the larger count wins (a tie keeps the own GEMM).
    """
    cost = np.concatenate(([0.0], np.cumsum(np.asarray(excess, np.float64))))
    return int(np.flatnonzero(cost <= cost.min() + 1e-12)[-1])


def _bound_at(pts: list[dict], count: int) -> int | None:
    """The bound that runs the first ``count`` of ``pts`` on the own GEMM: 0, a size, or None (all of them)."""
    if count >= len(pts):
        return None
    return pts[count - 1]["v"] if count else 0


def crossover(points: list[dict]) -> int | None:
    """The largest size (multiply-adds) up to which the own GEMM runs, by each point's median ratio.

    The policy has one bound: products up to it run on the own GEMM, larger
    ones on BLAS. Of the bounds at the ladder's points, the one of least
    total cost wins, the cost of a product being its median log(own/BLAS)
    beyond :data:`LOSS_MARGIN` (a tie keeps the own GEMM: its results do not
    depend on the BLAS build, and timings on a shared machine tie within a
    few percent). One noisy loss among wins does not end the own GEMM's
    range, and a cluster of losses ends it only when the wins after it do
    not make up for it.

    Each point has ``v`` (multiply-adds) and its pairs' ``ratios`` (own/BLAS
    time), or ``ratio`` (one median), or ``own`` and ``blas`` (seconds). The
    median is taken over the pairs' log ratios, as :func:`judge` takes it
    (with an even number of pairs it is not the log of the median ratio).
    Returns 0 when BLAS wins from the start, None when the own GEMM runs every
    size measured.
    """
    pts = sorted(points, key=lambda p: p["v"])
    return _bound_at(pts, _best([_excess(p["ratios"] if "ratios" in p else [_ratio(p)]) for p in pts]))


def judge(points: list[dict], resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """How firmly the pairs decide the bound: a bootstrap over each point's pair ratios.

    Each resample draws every point's ratios again (with replacement) and finds
    its bound of least cost (:func:`crossover`). The bound by the medians
    *holds* when, in :data:`CONFIDENCE` of the resamples, it costs at most
    :data:`REGRET` more than that resample's best: the bounds a resample could
    prefer instead are then nearly as good, and the choice among them does not
    matter. Points need ``ratios`` (the pairs'), in any order.

    Returns
    -------
    dict
        ``bound`` (by the medians), ``holds`` (bool), ``regret`` (the
        resamples' regret at :data:`CONFIDENCE`, in log time summed over the
        ladder), ``range`` (the smallest and largest bound some resample
        preferred: None is every size) and ``contested`` (indices of the
        points, as indices into ``points``, that the own GEMM runs under some
        preferred bound and BLAS under another: the ones whose timing decides).
    """
    order = sorted(range(len(points)), key=lambda i: points[i]["v"])
    pts = [points[i] for i in order]
    excess = np.array([_excess(p["ratios"]) for p in pts])
    count = _best(excess)
    rng = np.random.default_rng(seed)
    draws = np.empty((resamples, len(pts)))
    for i, p in enumerate(pts):
        logs = np.log(np.asarray(p["ratios"], np.float64))
        draws[:, i] = np.median(logs[rng.integers(0, len(logs), (resamples, len(logs)))], axis=1)
    draws -= math.log(LOSS_MARGIN)
    cost = np.concatenate((np.zeros((resamples, 1)), np.cumsum(draws, axis=1)), axis=1)
    preferred = np.array([int(np.flatnonzero(row <= row.min() + 1e-12)[-1]) for row in cost])
    regret = float(np.quantile(cost[:, count] - cost.min(axis=1), CONFIDENCE))
    lo, hi = min(count, int(preferred.min())), max(count, int(preferred.max()))
    return {
        "bound": _bound_at(pts, count),
        "holds": regret <= REGRET,
        "regret": regret,
        "range": [_bound_at(pts, lo), _bound_at(pts, hi)],
        "contested": sorted(order[i] for i in range(lo, hi)),
    }


def contended(others: float, threads: int, cpus: int) -> bool:
    """Whether ``others`` busy cores (on average) leave ``threads`` fewer cores than they need.

    The rule by which :mod:`fastnn._contention` drops a thread from the team:
    the cores left free fall more than half a core below the threads.
    """
    return cpus - others < threads - _contention.LOWER_MARGIN


def thresholds(backend: str, dtype, threads: int, bound: int | None, top: int) -> dict:
    """The tunables to set for ``bound`` (see :func:`crossover`) measured up to ``top`` multiply-adds."""
    sfx = "f64" if np.dtype(dtype) == np.float64 else "f32"
    if backend == "cython":
        isa = _cython_isa()
        small, packed = tuning.value(f"gemm_small_max_{sfx}", isa), tuning.value(f"gemm_packed_max_{sfx}", isa)
        if bound is None:  # never lost: as far as measured, or the default if that reaches further
            return {f"gemm_small_max_{sfx}": small, f"gemm_packed_max_{sfx}": max(packed, top)}
        if bound >= small:
            return {f"gemm_small_max_{sfx}": small, f"gemm_packed_max_{sfx}": bound}
        return {f"gemm_small_max_{sfx}": bound, f"gemm_packed_max_{sfx}": 0}
    if backend == "numba":
        name = "numba_gemm_own_max_threaded" if threads > 1 else "numba_gemm_own_max"
        default = _default(name)
        return {name: max(default, top) if bound is None else bound}
    raise ValueError(f"no GEMM calibration for backend {backend!r}; use cython or numba")


def _default(name: str):
    t = tuning._check(name)
    return next(iter(t.default.values())) if isinstance(t.default, dict) else t.default


# ---------------------------------------------------------------------------- measuring


def _cython_isa() -> str:
    from . import gemm_policy

    compiled = gemm_policy._compiled
    return compiled.family_isa()["gemm"] if compiled is not None else "sse2"


def _unbounded(backend: str, dtype) -> dict:
    """Tunables that let ``"auto"`` run every ladder product on the own GEMM, as it would run it."""
    sfx = "f64" if np.dtype(dtype) == np.float64 else "f32"
    if backend == "cython":
        return {f"gemm_packed_max_{sfx}": UNBOUNDED, "gemm_own_min_flops": 0}
    return {"numba_gemm_own_max_threaded": UNBOUNDED, "numba_gemm_own_max": UNBOUNDED, "numba_gemm_own_min_flops": 0}


def _median_interval(ratios, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """A distribution-free interval that holds the median of the ratios' distribution with ``confidence``.

    The order statistics x(j) and x(n+1-j), with j the largest rank such that
    P(Binomial(n, 1/2) < j) <= (1 - confidence) / 2: the median lies below
    x(j) only if fewer than j of n samples fall below it. It needs no
    assumption on the noise's shape, and narrows as samples are added; with
    fewer than 5 samples it is their whole range.
    """
    x = sorted(ratios)
    n = len(x)
    tail = (1.0 - confidence) / 2
    j, cdf = 1, 0.0
    for below in range(n // 2):
        cdf += math.comb(n, below) / 2.0**n
        if cdf > tail:
            break
        j = below + 1
    return x[j - 1], x[n - j]


def summarize(m: int, k: int, n: int, own, blas) -> dict:
    """One ladder point from its pairs: ``own[i]`` and ``blas[i]`` are the seconds per call of pair i.

    Returns the point: ``m``, ``k``, ``n``, ``v`` (multiply-adds); ``own`` and
    ``blas`` (median seconds per call); ``ratio`` (median of the pairs'
    own/BLAS ratios), ``q1`` and ``q3`` (their quartiles), ``low`` and
    ``high`` (the median's interval, :data:`CONFIDENCE`); ``pairs`` and
    ``ratios`` (each pair's); and the ``verdict`` (:func:`verdict`).
    """
    own, blas = np.asarray(own, np.float64), np.asarray(blas, np.float64)
    ratios = own / blas
    q1, median, q3 = (float(q) for q in np.percentile(ratios, [25, 50, 75]))
    low, high = _median_interval(ratios.tolist())
    p = {
        "m": m,
        "k": k,
        "n": n,
        "v": m * k * n,
        "own": float(np.median(own)),
        "blas": float(np.median(blas)),
        "ratio": median,
        "q1": q1,
        "q3": q3,
        "low": float(low),
        "high": float(high),
        "pairs": len(ratios),
        "ratios": [float(r) for r in ratios],
    }
    p["verdict"] = verdict(p)
    return p


def sample(
    timer,
    ladder=LADDER,
    min_pairs: int = MIN_PAIRS,
    max_pairs: int = MAX_PAIRS,
    budget: float = BUDGET_S,
    group: int = GROUP,
) -> list[dict]:
    """Time the ``ladder`` in rounds of pairs until the bound holds (:func:`judge`), or time runs out.

    Parameters
    ----------
    timer : object
        ``timer.block(route, i)`` times product ``i`` on ``"own"`` or
        ``"blas"`` and returns the seconds per call; ``timer.settle()`` waits
        until nothing left over from the last blocks (BLAS's spinning idle
        threads) runs beside the next ones.
    ladder : sequence of (m, k, n)
        Sorted by size.
    min_pairs, max_pairs : int
        Every product gets ``min_pairs`` pairs; then, while the bound does not
        hold, the products whose timing decides it (``contested``) get another
        group of pairs each, up to ``max_pairs``.
    budget : float
        Seconds after which no group of rounds starts (the first always runs):
        blocks are sized on an idle moment, and a busy machine can slow them
        tenfold.
    group : int
        Rounds per group: after ``timer.settle()``, the own GEMM's blocks of
        the group's rounds, then BLAS's; a round's two blocks of a product
        make a pair.

    Returns
    -------
    list of dict
        A point per product (:func:`summarize`), in the ladder's order; a point
        with fewer than ``min_pairs`` pairs ran out of time.
    """
    times = [([], []) for _ in ladder]
    deadline = time.perf_counter() + budget

    def run(indices, rounds):
        done = 0
        while done < rounds:
            if done and time.perf_counter() > deadline:
                return
            g = min(group, rounds - done)
            timer.settle()
            own = [[timer.block("own", i) for i in indices] for _ in range(g)]
            blas = [[timer.block("blas", i) for i in indices] for _ in range(g)]
            for r in range(g):
                for j, i in enumerate(indices):
                    times[i][0].append(own[r][j])
                    times[i][1].append(blas[r][j])
            done += g

    def points():
        return [summarize(m, k, n, *t) for (m, k, n), t in zip(ladder, times, strict=True)]

    run(range(len(ladder)), min_pairs)
    pts = points()
    while time.perf_counter() <= deadline:
        judged = judge(pts)
        again = [i for i in judged["contested"] if pts[i]["pairs"] < max_pairs]
        if judged["holds"] or not again:
            break
        run(again, min(group, max_pairs - min(pts[i]["pairs"] for i in again)))
        pts = points()
    return pts


def _quiet(max_wait: float = QUIET_MAX_S, step: float = 0.01) -> bool:
    """Wait until this process's threads other than the caller are idle, at most ``max_wait`` seconds.

    A threaded BLAS call leaves its pool's threads spinning for about 0.1 s
    (OpenBLAS), on the cores a timed block needs. The caller sleeps in
    steps of ``step`` and watches the process's CPU time: quiet when it grew
    by less than a fifth of a step. Returns whether it became quiet.
    """
    end = time.perf_counter() + max_wait
    while time.perf_counter() < end:
        cpu = time.process_time()
        time.sleep(step)
        if time.process_time() - cpu < 0.2 * step:
            return True
    return False


def _block(fn, number: int) -> float:
    """Seconds per call of ``fn`` over ``number`` calls."""
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


class _Timer:
    """Blocks of calls of the ladder's products on either route (:func:`sample`'s ``timer``)."""

    def __init__(self, cases, routes, calls):
        self.cases, self.routes, self.calls = cases, routes, calls

    def block(self, route: str, i: int) -> float:
        with self.routes[route]():
            return _block(self.cases[i][1], self.calls[i][route])

    def settle(self) -> None:
        _quiet()


@contextlib.contextmanager
def _timed_blocks(backend: str, dtype, ladder, min_block: float = MIN_BLOCK):
    """Compile and size what ``ladder`` runs on ``backend``; yields the ``timer`` for :func:`sample`."""
    import fastnn

    from . import gemm_policy

    rng = np.random.default_rng(0)
    cases = []
    for m, k, n in ladder:
        a = rng.standard_normal((m, k)).astype(dtype)
        b = rng.standard_normal((k, n)).astype(dtype)
        out = np.empty((m, n), dtype)
        cases.append(((m, k, n), lambda a=a, b=b, out=out: fastnn.ops.matmul(a, b, out=out)))
    routes = {
        "own": lambda: tuning.override(**_unbounded(backend, dtype)),
        "blas": lambda: gemm_policy.use_gemm("blas"),
    }
    with fastnn.use_backend(backend), gemm_policy.use_gemm("auto"):
        with routes["own"]():
            for (m, k, n), fn in cases:  # compile what the own products run ...
                if gemm_policy.route(backend, dtype, m, n, k) == "blas":
                    raise RuntimeError(f"the {backend} policy would not run {m}x{k}x{n} on its own GEMM")
                fn()
        jit = sys.modules.get("fastnn.backends.numba_backend._jit")
        if jit is not None:
            jit.settle()  # ... and wait for the fast versions Numba compiles in the background
        calls: list[dict] = [{} for _ in cases]  # per product and route: calls per block of >= min_block
        for route, ctx in routes.items():  # the own GEMM first: BLAS's idle threads spin after it
            _quiet()
            for per, (_, fn) in zip(calls, cases, strict=True):
                with ctx():
                    once = min(_block(fn, 1) for _ in range(3))
                per[route] = max(1, math.ceil(min_block / max(once, 1e-7)))
        yield _Timer(cases, routes, calls)


# ---------------------------------------------------------------------------- the file


def _blas_kernels() -> list[str]:
    """The BLAS libraries' kernel sets (``openblas Haswell``), without torch's own copy.

    Versions are left out: numpy's and scipy's OpenBLAS differ in version and
    one of them may not be loaded yet; their wheels' versions are in the key.
    """
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return []
    return sorted(
        {
            f"{p.get('internal_api')} {p.get('architecture')}"
            for p in threadpool_info()
            if p.get("user_api") == "blas" and "torch" not in str(p.get("filepath", ""))
        }
    )


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def key(backend: str, dtype, threads: int | None = None) -> dict:
    """What a measurement depends on: the CPU, BLAS, the own kernels' ISA, threads, dtype, versions, method."""
    from .. import __version__

    if backend == "cython":
        isa = _cython_isa()
    else:
        import llvmlite.binding as llvm

        isa = f"llvm {llvm.get_host_cpu_name()}"
    return {
        "cpu": f"{_config.cpu_model()} [{_config.cpu_flags_digest()}]",
        "blas": _blas_kernels(),
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", ""),
        "isa": isa,
        "threads": int(threads or _config.get_num_threads()),
        "backend": backend,
        "dtype": np.dtype(dtype).name,
        "versions": {"fastnn": __version__, "numpy": np.__version__, "scipy": _version("scipy")},
        "method": METHOD,
    }


_file_cache: dict = {"path": None, "mtime": None, "entries": []}


def _entries(path: str) -> list:
    """The file's entries ([] when there is none); a file that is not ours is ignored with a warning."""
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError:
        return []
    if _file_cache["path"] == path and _file_cache["mtime"] == mtime:
        return _file_cache["entries"]
    try:
        with open(path) as f:
            doc = json.load(f)
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT or not isinstance(doc.get("entries"), list):
            raise ValueError("not a fastnn GEMM calibration file")
        entries = [e for e in doc["entries"] if isinstance(e, dict) and isinstance(e.get("thresholds"), dict)]
    except (OSError, ValueError) as exc:  # JSONDecodeError is a ValueError
        warnings.warn(f"ignoring the GEMM calibration file {path}: {exc}", RuntimeWarning, stacklevel=3)
        entries = []
    _file_cache.update(path=path, mtime=mtime, entries=entries)
    return entries


def _find(entries: list, k: dict) -> dict | None:
    return next((e for e in entries if e.get("key") == k), None)


def lookup(k: dict) -> dict | None:
    """The stored entry for key ``k``, or None."""
    return _find(_entries(cache_path()), k)


def _supersedes(new: dict, old) -> bool:
    """Whether an entry keyed ``new`` replaces one keyed ``old``: the same key but for the method and versions.

    An entry of an earlier method or version never applies again (the key
    misses it), so it goes when its successor is stored; entries of other
    CPUs, BLAS builds, thread counts, backends or dtypes stay.
    """
    if not isinstance(old, dict):
        return False
    drop = ("method", "versions")
    return {n: v for n, v in old.items() if n not in drop} == {n: v for n, v in new.items() if n not in drop}


def store(entry: dict) -> str:
    """Add ``entry`` to the file, replacing any it supersedes (:func:`_supersedes`), atomically; returns the path."""
    path = cache_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with _lock:
        entries = [e for e in _entries(path) if not _supersedes(entry["key"], e.get("key"))] + [entry]
        fd, tmp = tempfile.mkstemp(prefix=".gemm-calibration-", dir=os.path.dirname(path))
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"format": _FORMAT, "entries": entries}, f, indent=1)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    return path


# ---------------------------------------------------------------------------- applying


def _set(name: str, value) -> None:
    if name in tuning.from_environment():
        return  # FASTNN_TUNING wins
    if name not in _applied:
        _applied[name] = tuning.value(name)
    tuning.set_value(name, value)


def _restore(names) -> None:
    for name in list(names):
        if name in _applied:
            tuning.set_value(name, _applied.pop(name))


def apply_cached(backend: str) -> None:
    """Apply the stored measurements of ``backend`` for this machine and thread count (both dtypes).

    Values set for another thread count are restored first; nothing is applied
    when :func:`enabled` is False.
    """
    with _lock:
        mine = [n for n in _applied if n.startswith("numba_") == (backend == "numba")]
        _restore(mine)
        entries = _entries(cache_path()) if enabled() else []
        base = key(backend, "float32") if entries else None  # computed once: it asks threadpoolctl
        for dtype in ("float32", "float64"):
            entry = _find(entries, {**base, "dtype": dtype}) if base else None
            _state[(backend, dtype)] = entry
            if entry is not None:
                for name, value in entry["thresholds"].items():
                    _set(name, value)


def watch(backend: str) -> None:
    """Apply the stored measurements of ``backend`` now and whenever the thread count changes."""
    _config.register_thread_hook(lambda _n: apply_cached(backend))


def calibrate(
    backend: str,
    dtype=np.float32,
    save: bool = True,
    ladder=LADDER,
    min_pairs: int = MIN_PAIRS,
    max_pairs: int = MAX_PAIRS,
    force: bool = False,
    budget: float = BUDGET_S,
) -> dict:
    """Measure ``backend``'s own GEMM against BLAS now; store the result and apply it if it is clear.

    Parameters
    ----------
    backend : {"cython", "numba"}
    dtype : float32 or float64
    save : bool
        False measures and decides without storing (nor applying).
    ladder : sequence of (m, k, n)
        The products to time (:data:`LADDER`).
    min_pairs, max_pairs : int
        Pairs per product first, and at most for the ones that decide (:func:`sample`).
    budget : float
        Seconds of timing after which no round starts (:func:`sample`).
    force : bool
        Store (and apply) the result even when it has ``problems``.

    Returns
    -------
    dict
        The entry: ``key``; ``points`` (:func:`summarize`); ``bound`` (by the
        medians, :func:`crossover`), ``bound_range`` and ``regret`` (:func:`judge`);
        ``thresholds``; ``others_busy`` (cores other processes kept busy
        meanwhile; None where it cannot be read); ``capped_blocks`` (blocks
        timed while the adaptive team ran fewer threads); ``problems`` (why it is not
        to be trusted: unstable, contended; empty when clear); ``forced``;
        ``min_pairs``, ``max_pairs``; ``measured`` (UTC, ISO 8601); ``seconds`` (in all)
        and ``timing_seconds`` (the timed pairs alone, without compiling and sizing the blocks).
        ``path`` where it was stored; absent when it was not (``save`` False,
        or problems without ``force``), and the stored entry, if any, stays.
    """
    t0 = time.perf_counter()
    threads = _config.get_num_threads()
    with _lock:
        mine = [n for n in _applied if n.startswith("numba_") == (backend == "numba")]
        _restore(mine)  # measure against the defaults' other values, not a previous calibration
        try:
            with _timed_blocks(backend, dtype, ladder) as timer:
                capped = 0  # blocks during which the adaptive team ran fewer threads than the entry is for

                class Checked:
                    def block(self, route, i):
                        nonlocal capped
                        before = _config.active_threads()
                        t = timer.block(route, i)
                        capped += min(before, _config.active_threads()) < threads
                        return t

                    def settle(self):
                        timer.settle()

                meter = _others_meter()  # from here: compiling is over, the timing starts
                t1 = time.perf_counter()
                points = sample(Checked(), ladder, min_pairs=min_pairs, max_pairs=max_pairs, budget=budget)
                timing = time.perf_counter() - t1
                others = None if meter is None else meter.sample()
            judged = judge(points)
            bound = judged["bound"]
            limits = thresholds(backend, dtype, threads, bound, max(p["v"] for p in points))  # against the defaults
        finally:
            apply_cached(backend)  # whatever happens, the stored entry (if any) is in force again
    problems = []
    short = min(p["pairs"] for p in points)
    if short < min_pairs:
        problems.append(
            f"out of time: {short} of {min_pairs} pairs per product in {budget:g} s (the blocks ran far slower "
            "than when they were sized)"
        )
    if not judged["holds"]:
        low, high = judged["range"]
        deciding = [points[i] for i in judged["contested"]]
        problems.append(
            f"unstable: the bound lies anywhere from {_reach(low)} to {_reach(high)}: drawn again from the pairs, "
            f"the timings make the bound by the medians ({_reach(bound)}) cost up to "
            f"{100 * math.expm1(judged['regret']):.0f}% of a product's time more than the best bound "
            f"({CONFIDENCE:.0%} of resamples; {100 * math.expm1(REGRET):.0f}% tolerated); own/BLAS of the products "
            "that decide: "
            + ", ".join(f"{p['v'] / 1e6:.3g}M {p['ratio']:.2f} ({p['low']:.2f}-{p['high']:.2f})" for p in deciding)
            + f" after {max(p['pairs'] for p in deciding)} pairs"
        )
    cpus = _config._cpus()[1]
    if others is not None and contended(others, threads, cpus):
        problems.append(
            f"contended: other processes kept {others:.1f} of {cpus} CPUs busy on average while it measured, "
            f"more than the {cpus - threads + _contention.LOWER_MARGIN:.1f} that leave {threads} threads their cores"
        )
    elif capped:
        problems.append(
            f"contended: other processes took cores for a while; fastnn's adaptive team ran fewer than {threads} "
            f"threads during {capped} of the timed blocks"
        )
    entry = {
        "key": key(backend, dtype, threads),
        "points": points,
        "bound": bound,
        "bound_range": judged["range"],
        "regret": round(judged["regret"], 4),
        "thresholds": limits,
        "others_busy": None if others is None else round(others, 2),
        "capped_blocks": capped,
        "problems": problems,
        "forced": bool(problems) and force,
        "min_pairs": min_pairs,
        "max_pairs": max_pairs,
        "measured": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - t0, 3),
        "timing_seconds": round(timing, 3),
    }
    if save and (force or not problems):
        entry = {**entry, "path": store(entry)}
        apply_cached(backend)
    return entry


def problem_kinds(entry: dict) -> str:
    """The kinds of the entry's problems (``"unstable; contended"``): each problem starts with its kind."""
    return "; ".join(p.split(":")[0] for p in entry.get("problems", []))


def _reach(bound: int | None) -> str:
    return "every size measured" if bound is None else f"{bound / 1e6:.3g}M multiply-adds"


def _others_meter():
    try:
        return _contention.OthersMeter()
    except (OSError, ValueError, IndexError):  # not Linux
        return None


def describe(backend: str, dtype="float32") -> str:
    """One line for ``fastnn info``: where the GEMM policy of ``backend`` comes from."""
    if not enabled():
        return "defaults (FASTNN_GEMM_CALIBRATION=off)"
    entry = _state.get((backend, np.dtype(dtype).name))
    if entry is None:
        return f"defaults (not measured on this machine at {_config.get_num_threads()} threads: `fastnn calibrate`)"
    line = f"measured {entry.get('measured', '?')}: own GEMM up to {_reach(entry.get('bound'))}, then BLAS"
    if entry.get("forced"):
        line += f" (stored with --force despite: {problem_kinds(entry)})"
    return line
