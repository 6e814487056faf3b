"""The timing loop of ``fastnn bench``.

Method, for every case of every selected workload:

1. Build one step per row (each fastnn backend, PyTorch, scikit-learn), each
   with its own buffers, and one hidden row that measures the case's machine
   limit (a BLAS sgemm at n = 1024, a large memory copy, or the step's matrix
   products alone through BLAS): timed in the same rounds, the limit sees the
   same machine state as the rows it is compared with.
2. Call each step once and record that time as the *first-call latency*
   (it includes Numba's compilation or cache load; it is reported apart and
   never mixed into the medians). Then wait for the kernels the numba
   backend compiles in the background after a first call (recorded as
   ``deferred_compile``), so that the rounds time the step at full speed.
   What a fresh install costs is measured apart, in new processes with an
   empty cache (:mod:`.coldstart`).
3. Calibrate ``number``, the calls per timed block, so a block lasts at
   least ``min_block`` seconds.
4. Time ``repeat`` rounds; in each round every row runs one block, and the
   order of the rows rotates from round to round, so that a slow drift of
   the machine (another process, the clock) hits every row alike. With
   several threads each block is preceded by :data:`SETTLE_S` seconds of the
   same row, untimed: the rows must not time each other's after-effects.
   OpenBLAS's worker threads spin for ~0.1 s after every BLAS call, and a
   threaded row timed right after a BLAS-using row (the NumPy backend, the
   limit) ran at one-thread speed (own GEMM n = 1024 on 2 threads: 5.6 ms
   after a pause, 9.6 ms right after a BLAS call). An idle pause would do
   the same for the spinners but lets the cores clock down.
5. Report the median over the rounds, with the spread ``max / min``; a
   spread above :data:`NOISY_SPREAD` flags the row as noisy.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import time
import traceback
from datetime import datetime, timezone

import numpy as np

from . import anchors as _anchors
from . import coldstart as _coldstart
from . import machine as _machine
from . import plans_section as _plans
from .workloads import Case, build_gemm_only, build_step, get_workloads, missing

__all__ = ["run_bench", "derive", "NOISY_SPREAD", "SCHEMA", "settings_for"]

SCHEMA = 1
#: Repetition spread (max / min) above which a median is flagged as noisy.
NOISY_SPREAD = 1.3
LIMIT_ROW = "_limit"
#: Fewest rounds a case gets when its rows are so slow that ``repeat`` rounds
#: would overrun the case's time budget.
MIN_ROUNDS = 3
FASTNN_ORDER = ("numpy", "numba", "cython")
#: Untimed run of a row before each of its timed blocks when several threads run (step 4 above).
SETTLE_S = _machine.SETTLE_S


def settings_for(quick: bool, tiny: bool = False, repeat: int | None = None, min_block: float | None = None) -> dict:
    """Repetitions and block length for a full or a ``--quick`` run."""
    if tiny:
        rep, block, budget, gemm_n, copy_mb = 3, 0.002, 2.0, 256, 16
    elif quick:
        rep, block, budget, gemm_n, copy_mb = 5, 0.01, 3.0, 1024, 64
    else:
        rep, block, budget, gemm_n, copy_mb = 9, 0.05, 30.0, 1024, 128
    return {
        "repeat": int(repeat or rep),
        "min_block": float(min_block or block),
        "gemm_n": gemm_n,
        "copy_mbytes": copy_mb,
        "case_budget": budget,
        "min_rounds": min(MIN_ROUNDS, int(repeat or rep)),
        "settle": 0.0 if tiny else SETTLE_S,
    }


class _Row:
    def __init__(self, label, kind, build, context):
        self.label = label
        self.kind = kind  # "backend", "anchor" or "limit"
        self.build = build
        self.context = context
        self.step = None
        self.number = 1
        self.times: list[float] = []
        self.first_call = None
        self.deferred_compile = 0.0
        self.error = None
        self.per_call = 1
        self.block_estimate = 0.0

    def fail(self, exc):
        self.error = f"{type(exc).__name__}: {exc}".strip()
        self.step = None


def _backend_context(name, own_gemm):
    @contextlib.contextmanager
    def ctx():
        import fastnn

        with fastnn.use_backend(name):
            if not own_gemm:
                yield
                return
            from fastnn import gemm

            previous = gemm.get_gemm()
            gemm.set_gemm("own")
            try:
                yield
            finally:
                gemm.set_gemm(previous)

    return ctx


def _limit_row(limit, case, cfg):
    """The hidden row that measures the case's machine limit, interleaved with the others."""
    if limit == "gemm":
        return _Row(LIMIT_ROW, "limit", lambda: _machine.gemm_step(cfg["gemm_n"])[0], contextlib.nullcontext)
    if limit == "copy":
        return _Row(LIMIT_ROW, "limit", lambda: _machine.copy_step(cfg["copy_mbytes"])[0], contextlib.nullcontext)
    if limit == "copy_time" and case.copy_bytes:
        return _Row(LIMIT_ROW, "limit", lambda: _machine.copy_array_step(case.copy_bytes), contextlib.nullcontext)
    if limit == "gemm_time" and case.gemm_shapes:
        return _Row(LIMIT_ROW, "limit", lambda: build_gemm_only(case), contextlib.nullcontext)
    return None


def _limit_entry(limit, res, cfg):
    entry = {"kind": limit, **res}
    t = res.get("median")
    if not t:
        entry["value"] = None
    elif limit == "gemm":
        entry.update(what=f"BLAS sgemm n={cfg['gemm_n']}", unit="GFLOP/s", value=2.0 * cfg["gemm_n"] ** 3 / t / 1e9)
    elif limit == "copy":
        entry.update(
            what=f"memory copy {cfg['copy_mbytes']} MiB",
            unit="GB/s",
            value=2.0 * cfg["copy_mbytes"] * (1 << 20) / t / 1e9,
        )
    elif limit == "copy_time":
        entry.update(what="np.copyto of the batch into a preallocated array", unit="s", value=t)
    else:
        entry.update(what="BLAS matmuls only", unit="s", value=t)
    return entry


def _rows_for(case: Case, backends, anchor_names, limit=None, cfg=None) -> list[_Row]:
    rows = []
    for b in backends:
        own = case.kind == "gemm" and b != "numpy"
        rows.append(_Row(b, "backend", lambda c=case: build_step(c), _backend_context(b, own)))
    for a in anchor_names:
        rows.append(_Row(a, "anchor", lambda c=case, a=a: _anchors.build_anchor(a, c), contextlib.nullcontext))
    lim = _limit_row(limit, case, cfg) if limit else None
    if lim is not None:
        rows.append(lim)
    return rows


def _prepare(row: _Row, min_block: float) -> bool:
    """Build, first call, calibrate. Returns False when the row has no step."""
    try:
        with row.context():
            row.step = row.build()
            if row.step is None:
                return False
            # a step may do several units of work per call (scikit-learn: several
            # batches per partial_fit); every time is reported per unit
            row.per_call = int(getattr(row.step, "steps_per_call", 1))
            row.first_call = _machine.time_block(row.step, 1)
            row.deferred_compile = _settle_compiles()
            t = _machine.time_block(row.step, 1)
            if t < min_block / 4:  # a third call, so that calibration is not one sample
                t = min(t, _machine.time_block(row.step, 1))
        row.number = max(1, int(np.ceil(min_block / max(t, 1e-9))))
        row.block_estimate = row.number * t
        return True
    except Exception as exc:  # a layer missing a method, a kernel raising ...
        row.fail(exc)
        return True


def _settle_compiles() -> float:
    """Seconds waited for the numba backend's background compilations (0 when it is not loaded)."""
    jit = sys.modules.get("fastnn.backends.numba_backend._jit")
    if jit is None:
        return 0.0
    t0 = time.perf_counter()
    jit.settle()
    return time.perf_counter() - t0


def _rounds(rows: list[_Row], cfg: dict) -> int:
    """``repeat`` rounds, fewer (not under ``min_rounds``) if they would overrun the case budget."""
    per_round = sum(r.block_estimate for r in rows if r.step is not None)
    if per_round <= 0:
        return cfg["repeat"]
    fit = int(cfg["case_budget"] / per_round)
    return max(cfg["min_rounds"], min(cfg["repeat"], fit))


def _time_case(rows: list[_Row], repeat: int, tick, settle: float = 0.0) -> None:
    active = [r for r in rows if r.step is not None]
    for rnd in range(repeat):
        k = rnd % len(active) if active else 0
        for row in active[k:] + active[:k]:
            if row.step is None:
                continue
            try:
                with row.context():
                    if settle > 0:
                        _machine.warm(row.step, settle)
                    row.times.append(_machine.time_block(row.step, row.number) / row.per_call)
            except Exception as exc:
                row.fail(exc)
        tick()


def _row_result(row: _Row) -> dict:
    out = {
        "number": row.number,
        "steps_per_call": row.per_call,
        "first_call": row.first_call,
        "deferred_compile": row.deferred_compile,
        "error": row.error,
        "times": [float(t) for t in row.times],
    }
    if row.times and row.error is None:
        t = np.asarray(row.times)
        out.update(
            median=float(np.median(t)),
            min=float(t.min()),
            max=float(t.max()),
            spread=float(t.max() / t.min()) if t.min() > 0 else float("inf"),
        )
        out["noisy"] = bool(out["spread"] > NOISY_SPREAD)
    return out


def derive(results: dict) -> dict:
    """(Re)compute every ratio and limit fraction from the raw medians, in place.

    For each row with a median ``t``: ``speedup_vs_numpy = t_numpy / t``,
    ``speedup_vs_torch = t_torch / t`` (above 1: faster than the reference),
    and ``fraction_of_limit``: achieved GFLOP/s over the GEMM peak (limit
    ``"gemm"``), achieved GB/s over the copy bandwidth (``"copy"``), or the
    BLAS-only time of the step's matrix products over ``t`` (``"gemm_time"``), or
    the time of one copy of the case's batch over ``t`` (``"copy_time"``: 50 % is
    "within 2x of a copy").
    The limits are those measured with the case (``case["limit"]``), else the
    run's (``results["machine"]``).
    """
    m = results["machine"]
    for wl in results["workloads"]:
        for case in wl.get("cases", []):
            rows = case["rows"]

            def med(name):
                r = rows.get(name)
                return r.get("median") if r else None

            t_np, t_torch = med("numpy"), med("torch")
            lim = (case.get("limit") or {}).get("value")
            peak = lim if wl["limit"] == "gemm" and lim else m["gemm"]["gflops"]
            bw = lim if wl["limit"] == "copy" and lim else m["copy"]["gbps"]
            limit_t = lim if wl["limit"] in ("gemm_time", "copy_time") else None
            for r in rows.values():
                t = r.get("median")
                r["speedup_vs_numpy"] = t_np / t if t and t_np else None
                r["speedup_vs_torch"] = t_torch / t if t and t_torch else None
                frac = None
                if t:
                    if case.get("flops"):
                        r["gflops"] = case["flops"] / t / 1e9
                    if case.get("bytes"):
                        r["gbps"] = case["bytes"] / t / 1e9
                    if wl["limit"] == "gemm" and case.get("flops") and peak:
                        frac = r["gflops"] / peak
                    elif wl["limit"] == "copy" and case.get("bytes") and bw:
                        frac = r["gbps"] / bw
                    elif wl["limit"] in ("gemm_time", "copy_time") and limit_t:
                        frac = limit_t / t
                r["fraction_of_limit"] = frac
    return results


def _select_backends(requested) -> tuple[list[str], dict]:
    import fastnn

    status = fastnn.backend_status()
    names = list(FASTNN_ORDER) if not requested else [b.strip().lower() for b in requested if b.strip()]
    unknown = [b for b in names if b not in status and b not in _anchors.ANCHORS]
    if unknown:
        raise ValueError(
            f"unknown backend(s) {', '.join(unknown)}; choose from "
            f"{', '.join(list(FASTNN_ORDER) + list(_anchors.ANCHORS))}"
        )
    usable = [b for b in FASTNN_ORDER if b in names and status[b] == "available"]
    absent = {b: status[b] for b in FASTNN_ORDER if b in names and status[b] != "available"}
    return usable, absent


def run_bench(
    workloads=None,
    backends=None,
    threads=None,
    quick=False,
    tiny=False,
    anchors=None,
    repeat=None,
    min_block=None,
    progress=True,
    log=None,
    cold_start=True,
    plans=True,
) -> dict:
    """Run the benchmark and return the results (the content of ``results.json``).

    Parameters
    ----------
    workloads : list of str, optional
        Workload ids (``["W1", "W3"]``); all by default. Unavailable ones are
        reported with what they miss.
    backends : list of str, optional
        fastnn backends and anchors to run (``numpy``, ``numba``, ``cython``,
        ``torch``, ``sklearn``); all installed ones by default. The ratios
        need the ``numpy`` and ``torch`` rows.
    threads : int, optional
        Thread count for fastnn, BLAS and PyTorch (default: fastnn's).
    quick : bool
        Fewer repetitions and shorter blocks (the whole run in under a minute).
    tiny : bool
        Small sizes (for tests of the machinery, not for figures).
    anchors : list of str, optional
        Anchor libraries to run; default: those named in ``backends`` (all
        installed ones when ``backends`` is None).
    repeat, min_block : optional
        Override the rounds and the least block length (seconds).
    progress : bool
        Show a tqdm progress bar.
    cold_start : bool
        Also measure the numba backend's cold start (:mod:`.coldstart`; not with ``tiny``).
    plans : bool
        Also measure the compiled training plans (:mod:`.plans_section`) when W3 is among the workloads.
    """
    import fastnn

    started = time.perf_counter()
    wls = get_workloads(workloads)
    fast_backends, absent = _select_backends(backends)
    if anchors is None:
        anchors = list(_anchors.ANCHORS) if not backends else [b.strip().lower() for b in backends]
    anchor_status = _anchors.anchor_status()
    anchor_names = [a for a in _anchors.ANCHORS if a in anchors and _anchors.available(a)]
    cfg = settings_for(quick, tiny, repeat, min_block)
    cold_start = cold_start and not tiny and "numba" in fast_backends
    plans = plans and any(w.id == "W3" for w in wls)
    with _thread_count(fastnn, threads, anchor_names):
        load_start = _loadavg()
        threads = fastnn.get_num_threads()
        if "torch" in anchor_names:
            _anchors.set_threads(threads)

        # the numba and cython backends load here, so that their import is not timed
        for b in fast_backends:
            fastnn.backends.get(b)
        mrep = 3 if (quick or tiny) else 7
        machine = {
            "gemm": _machine.measure_gemm(cfg["gemm_n"], repeat=mrep, min_block=cfg["min_block"]),
            "copy": _machine.measure_copy(cfg["copy_mbytes"], repeat=mrep, min_block=cfg["min_block"]),
        }

        # in new processes, before this one has compiled anything (each gets an empty cache of its own)
        cold = _coldstart.measure(threads, quick, log=log) if cold_start else None
        plan_results = _plans.measure(fast_backends, quick, tiny, log=log) if plans else None

        plan = []
        for wl in wls:
            miss = missing(wl)
            plan.append((wl, miss, [] if miss else wl.cases(quick, tiny)))
        # progress: one unit to build and warm a case, one per round
        total = sum(len(cases) for _, _, cases in plan) * (cfg["repeat"] + 1)
        bar = _progress(total, progress)
        tick = (lambda: bar.update(1)) if bar is not None else (lambda: None)

        out_wls = []
        for wl, miss, cases in plan:
            entry = {
                "id": wl.id,
                "title": wl.title,
                "limit": wl.limit,
                "note": wl.note,
                "available": not miss,
                "missing": miss,
                "cases": [],
            }
            out_wls.append(entry)
            for case in cases:
                if bar is not None:
                    bar.set_description(case.key)
                t_case = time.perf_counter()
                rows = _rows_for(case, fast_backends, anchor_names, wl.limit, cfg)
                rows = [r for r in rows if _prepare(r, cfg["min_block"])]
                tick()
                rounds = _rounds(rows, cfg)
                _time_case(rows, rounds, tick, cfg.get("settle", 0.0) if threads > 1 else 0.0)
                for _ in range(cfg["repeat"] - rounds):
                    tick()
                centry = {
                    "key": case.key,
                    "name": case.name,
                    "kind": case.kind,
                    "params": case.params,
                    "flops": case.flops,
                    "bytes": case.bytes,
                    "gemm_shapes": case.gemm_shapes,
                    "rows": {},
                    "rounds": rounds,
                    "seconds": time.perf_counter() - t_case,
                }
                for row in rows:
                    res = _row_result(row)
                    if row.kind == "limit":
                        centry["limit"] = _limit_entry(wl.limit, res, cfg)
                    else:
                        res["kind"] = row.kind
                        centry["rows"][row.label] = res
                entry["cases"].append(centry)
                del rows
                gc.collect()
                if log:
                    log(case.key)
        if bar is not None:
            bar.close()

        results = {
            "schema": SCHEMA,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "settings": {
                "quick": bool(quick),
                "tiny": bool(tiny),
                "threads": threads,
                **cfg,
                "workloads": [w.id for w in wls],
                "backends": fast_backends,
                "anchors": anchor_names,
                "noisy_spread": NOISY_SPREAD,
            },
            "backends_unavailable": absent,
            "anchor_status": anchor_status,
            "machine": {
                **machine,
                "context": _safe_context(threads),
                "loadavg": {"start": load_start, "end": _loadavg()},
            },
            "workloads": out_wls,
            "cold_start": cold,
            "plans": plan_results,
        }
        derive(results)
        results["duration_s"] = time.perf_counter() - started
        return results


@contextlib.contextmanager
def _thread_count(fastnn, threads, anchor_names):
    """Run with ``threads`` (when given), then give fastnn (and PyTorch, when anchored) their count back."""
    previous_threads = fastnn.get_num_threads()
    if threads:
        fastnn.set_num_threads(int(threads))
    try:
        yield
    finally:
        if fastnn.get_num_threads() != previous_threads:
            fastnn.set_num_threads(previous_threads)
            if "torch" in anchor_names:
                _anchors.set_threads(previous_threads)


def _loadavg():
    try:
        return list(os.getloadavg())
    except (AttributeError, OSError):  # pragma: no cover - not on every platform
        return None


def _safe_context(threads):
    try:
        return _machine.context(threads)
    except Exception:  # context is informative; never lose a run over it
        return {"error": traceback.format_exc(limit=1)}


def _progress(total, enabled):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, unit="round", leave=False, dynamic_ncols=True)
