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
would run it with no upper bound, and on BLAS. It takes the best of a few
interleaved blocks of at least 2 ms each, about half a second in all. The
bound is the size just before the own GEMM loses (more than 5% slower) at
two ladder steps in a row (one noisy step does not decide). If it never loses, the bound is the
larger of the default and the top of the ladder.

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
own kernels' instruction set, the thread count, the backend, the dtype and
fastnn's version. Any change of these misses the entry, and the defaults
apply until ``fastnn calibrate`` (or ``fastnn warmup``) measures again.

When it applies
---------------
:func:`apply_cached` applies the matching entry when a compiled backend
loads and whenever the thread count changes. It never measures by itself:
a first call must not pay half a second. A value set in ``FASTNN_TUNING``
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

from .. import _config
from . import tuning

__all__ = [
    "LADDER",
    "calibrate",
    "crossover",
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


def crossover(points: list[dict]) -> int | None:
    """The largest size (multiply-adds) up to which the own GEMM wins, from timed ``points``.

    Each point has ``v`` (multiply-adds), ``own`` and ``blas`` (seconds). The
    own GEMM loses a point when it is more than :data:`LOSS_MARGIN` slower (a
    tie keeps the own GEMM: its results do not depend on the BLAS build, and
    timings on a shared machine tie within a few percent). Scanning by size, the bound
    is the last win before two losses in a row (or a loss at the last
    point); 0 when it loses from the start; None when it never loses.
    """
    pts = sorted(points, key=lambda p: p["v"])
    last_win = 0
    for i, p in enumerate(pts):
        if p["own"] <= p["blas"] * LOSS_MARGIN:
            last_win = p["v"]
            continue
        following = pts[i + 1] if i + 1 < len(pts) else None
        if following is None or following["own"] > following["blas"] * LOSS_MARGIN:
            return last_win
    return None


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


def _block(fn, min_seconds: float) -> float:
    """Seconds per call of ``fn`` over a block of calls lasting at least ``min_seconds``."""
    t0 = time.perf_counter()
    fn()
    once = time.perf_counter() - t0
    number = max(1, math.ceil(min_seconds / max(once, 1e-7)))
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def measure(backend: str, dtype=np.float32, ladder=LADDER, reps: int = 3, min_block: float = 2e-3) -> list[dict]:
    """Time every ``ladder`` product on the own GEMM and on BLAS, interleaved; best block of ``reps`` each."""
    import fastnn

    from . import gemm_policy

    rng = np.random.default_rng(0)
    cases = []
    for m, k, n in ladder:
        a = rng.standard_normal((m, k)).astype(dtype)
        b = rng.standard_normal((k, n)).astype(dtype)
        cases.append((m, k, n, a, b, np.empty((m, n), dtype)))
    best = [{"own": math.inf, "blas": math.inf} for _ in cases]
    with fastnn.use_backend(backend), gemm_policy.use_gemm("auto"):
        with tuning.override(**_unbounded(backend, dtype)):
            for *_, a, b, out in cases:  # compile what the own products run ...
                fastnn.ops.matmul(a, b, out=out)
        jit = sys.modules.get("fastnn.backends.numba_backend._jit")
        if jit is not None:
            jit.settle()  # ... and wait for the fast versions Numba compiles in the background
        for rep in range(reps):
            for i, (m, k, n, a, b, out) in enumerate(cases):
                for route in ("own", "blas") if rep % 2 == 0 else ("blas", "own"):
                    ctx = (
                        tuning.override(**_unbounded(backend, dtype))
                        if route == "own"
                        else gemm_policy.use_gemm("blas")
                    )
                    with ctx:
                        if route == "own" and gemm_policy.route(backend, dtype, m, n, k) == "blas":
                            raise RuntimeError(f"the {backend} policy would not run {m}x{k}x{n} on its own GEMM")
                        t = _block(lambda a=a, b=b, out=out: fastnn.ops.matmul(a, b, out=out), min_block)
                    best[i][route] = min(best[i][route], t)
    return [{"m": m, "k": k, "n": n, "v": m * k * n, **times} for (m, k, n, *_), times in zip(cases, best, strict=True)]


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
    """What a measurement depends on: the CPU, BLAS, the own kernels' ISA, threads, dtype, versions."""
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


def store(entry: dict) -> str:
    """Add ``entry`` to the file (replacing one of the same key), atomically; returns the path."""
    path = cache_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with _lock:
        entries = [e for e in _entries(path) if e.get("key") != entry["key"]] + [entry]
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


def calibrate(backend: str, dtype=np.float32, save: bool = True, ladder=LADDER, reps: int = 3) -> dict:
    """Measure ``backend``'s own GEMM against BLAS now, store the result and apply it.

    Returns
    -------
    dict
        The entry: ``key``, ``points`` (the timings), ``bound``, ``thresholds``,
        ``measured`` (UTC, ISO 8601), ``seconds``; and ``path`` where it was stored.
    """
    t0 = time.perf_counter()
    threads = _config.get_num_threads()
    meter = _others_meter()
    with _lock:
        mine = [n for n in _applied if n.startswith("numba_") == (backend == "numba")]
        _restore(mine)  # measure against the defaults' other values, not a previous calibration
        points = measure(backend, dtype, ladder=ladder, reps=reps)
    bound = crossover(points)
    entry = {
        "key": key(backend, dtype, threads),
        "points": points,
        "bound": bound,
        "thresholds": thresholds(backend, dtype, threads, bound, max(p["v"] for p in points)),
        "measured": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - t0, 3),
        # cores other processes kept busy meanwhile: above ~0.5 the timings compete with them
        "others_busy": None if meter is None else round(meter.sample(), 2),
    }
    if save:
        entry = {**entry, "path": store(entry)}
    apply_cached(backend)
    return entry


def _others_meter():
    from .. import _contention

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
    bound = entry.get("bound")
    reach = "every size measured" if bound is None else f"{bound / 1e6:.3g}M multiply-adds"
    return f"measured {entry.get('measured', '?')}: own GEMM up to {reach}, then BLAS"
