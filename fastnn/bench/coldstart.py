"""Cold start: the first training step of a workload in a new process with an empty Numba cache.

The in-process "first call" column of the report comes after other rows and
workloads have compiled kernels they share, and with whatever Numba's disk
cache already holds. What a fresh install costs is measured here instead:
each run is a new Python process, with ``NUMBA_CACHE_DIR`` pointing at an
empty temporary directory, that imports fastnn, builds the workload's step
on the numba backend and calls it once. It reports wall and CPU time (all
threads of the process: Numba's background compilations included) for the
import and backend load, and for the first step. With ``settle`` it also
waits for the kernels compiled in the background and reports when the step
runs at full speed.

A second table does the same for what a user of the numba backend calls:
the first :func:`fastnn.fit` of W3's network (which runs whole epochs in a
compiled training plan, whose driver compiles on first use), the same
``fit`` with the plan turned off in that process (the per-step loop), and a
first :func:`fastnn.predict` (the forward plan), each in a new process with
an empty cache, then again in a second new process with the cache the first
one left, to show what the cache saves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from ._child import tagged_json

__all__ = ["measure", "measure_calls", "markdown_lines", "call_lines", "COLD_WORKLOADS", "CALL_PROBES", "CALL_PROBLEM"]

#: Workloads measured: (full run, --quick run).
COLD_WORKLOADS = (("W3", "W5", "W6"), ("W3", "W6"))

_PROBE = r"""
import json, os, sys, time
t0, c0 = time.perf_counter(), time.process_time()
import fastnn
fastnn.set_backend("numba")
from fastnn.bench.workloads import build_step, get_workloads
case = get_workloads([sys.argv[1]])[0].cases(sys.argv[2] == "quick", False)[0]
step = build_step(case)
t1, c1 = time.perf_counter(), time.process_time()
step()
t2, c2 = time.perf_counter(), time.process_time()
res = {"case": case.key, "load_s": t1 - t0, "load_cpu_s": c1 - c0, "first_step_s": t2 - t1,
       "first_step_cpu_s": c2 - c1}
if sys.argv[3] == "settle":
    from fastnn.backends.numba_backend import _jit
    step()
    _jit.settle()
    t3, c3 = time.perf_counter(), time.process_time()
    res.update(full_speed_s=t3 - t0, full_speed_cpu_s=c3 - c0)
print("COLD " + json.dumps(res), flush=True)
os._exit(0)   # do not wait for background compilations at exit: this process is thrown away
"""


def _env(cache, threads):
    """A probe's environment: Numba's cache at ``cache``, ``threads`` threads, the JIT on."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, FASTNN_NUM_THREADS=str(threads))
    env.pop("NUMBA_DISABLE_JIT", None)
    return env


def _one(wid, quick, settle, threads, timeout):
    with tempfile.TemporaryDirectory(prefix="fastnn-cold-") as cache:
        return tagged_json(
            [sys.executable, "-c", _PROBE, wid, "quick" if quick else "full", "settle" if settle else "no"],
            _env(cache, threads),
            "COLD",
            f"cold-start probe of {wid}",
            timeout,
        )


#: First calls measured: (full run, --quick run). "plan": ``fit`` as it chooses (the compiled plan for
#: W3's network); "loop": the same ``fit`` with the plan turned off in the probe; "predict": ``predict``.
CALL_PROBES = (("plan", "loop", "predict"), ("plan",))

#: The problem of the first-call probes: W3's network (64-128-10, ReLU, cross-entropy, SGD with
#: momentum 0.9, batch 32) on synthetic data the size of a built-in data set, one epoch; ``predict``
#: of a model built in the probe on ``predict_rows`` rows.
CALL_PROBLEM = {"rows": 2048, "features": 64, "hidden": 128, "classes": 10, "batch": 32, "epochs": 1,
                "predict_rows": 100_000}  # fmt: skip

_CALL_PROBE = r"""
import json, os, sys, time
t0, c0 = time.perf_counter(), time.process_time()
import fastnn
fastnn.set_backend("numba")
t1, c1 = time.perf_counter(), time.process_time()
import numpy as np
from fastnn import nn, optim
import fastnn.train as train
kind, warm, p = sys.argv[1], sys.argv[2] == "warm", json.loads(sys.argv[3])
rng = np.random.default_rng(0)
fastnn.manual_seed(0)
model = nn.Sequential(nn.Linear(p["features"], p["hidden"]), nn.ReLU(), nn.Linear(p["hidden"], p["classes"]))
res = {"kind": kind, "cache": "warm" if warm else "empty"}
if kind == "predict":
    X = rng.standard_normal((p["predict_rows"], p["features"])).astype(np.float32)
    t2, c2 = time.perf_counter(), time.process_time()
    out = fastnn.predict(model, X)
    t3, c3 = time.perf_counter(), time.process_time()
    ok = out.shape == (p["predict_rows"], p["classes"]) and bool(np.isfinite(out).all())
    plan = train._forward_plan(model, X)
    res.update(path="forward plan" if plan is not None else "layers", why=None, ok=ok)
else:
    X = rng.standard_normal((p["rows"], p["features"])).astype(np.float32)
    y = rng.integers(0, p["classes"], p["rows"]).astype(np.intp)
    loss, opt = nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    if kind == "loop":
        # the per-step loop, as fit runs it for a model without a plan: the same steps, minibatches
        # and numerics (to rounding), only not in the plan's driver
        train.TrainStep.compiled_plan = lambda self: (None, "plan turned off in the probe")
    t2, c2 = time.perf_counter(), time.process_time()
    hist = fastnn.fit(model, X, y, loss=loss, optimizer=opt, epochs=p["epochs"], batch_size=p["batch"],
                      seed=0, progress=False)
    t3, c3 = time.perf_counter(), time.process_time()
    # which way fit went, by fit's own rule
    plan, why = train._fit_plan(fastnn.make_train_step(model, loss, opt), p["batch"])
    ok = bool(np.isfinite(hist.history["loss"]).all())
    res.update(path="plan" if plan is not None else "loop", why=why, ok=ok, loss=float(hist.history["loss"][-1]))
res.update(load_s=t1 - t0, load_cpu_s=c1 - c0, call_s=t3 - t2, call_cpu_s=c3 - c2)
print("CALL " + json.dumps(res), flush=True)
if warm:
    os._exit(0)  # this process is thrown away: do not wait for compilations in the background
# the cold process exits as a user's program does (the compilation under way finishes and is cached):
# the warm process then finds the cache such a program leaves
"""


def _call(kind, cache, warm, threads, timeout):
    return tagged_json(
        [sys.executable, "-c", _CALL_PROBE, kind, "warm" if warm else "cold", json.dumps(CALL_PROBLEM)],
        _env(cache, threads),
        "CALL",
        f"first-call probe ({kind}, {'warm' if warm else 'empty'} cache)",
        timeout,
    )


def measure_calls(
    threads: int, quick: bool, repeat: int | None = None, kinds=None, timeout: float = 600.0, log=None
) -> dict:
    """First ``fit`` and ``predict`` in new processes, empty cache then warm: ``repeat`` runs each (median).

    Each run of a probe is a new process with an empty ``NUMBA_CACHE_DIR`` of
    its own, then a second new process with the cache the first one left.
    ``kinds`` (default: :data:`CALL_PROBES`, full or quick) picks the probes;
    ``repeat`` is 3, or 1 with ``quick``.

    Returns ``{"problem", "repeat", "probes": {kind: {"runs": [(cold, warm), ...], "median": {"cold": {...},
    "warm": {...}}, "path", "why"}}}``; a probe that failed has ``{"error": ...}`` instead, and the others
    still run.
    """
    kinds = tuple(kinds or CALL_PROBES[1 if quick else 0])
    repeat = repeat or (1 if quick else 3)
    out: dict = {"problem": dict(CALL_PROBLEM), "repeat": repeat, "probes": {}}
    for kind in kinds:
        try:
            runs = []
            for _ in range(repeat):
                with tempfile.TemporaryDirectory(prefix="fastnn-cold-") as cache:
                    cold = _call(kind, cache, False, threads, timeout)
                    runs.append((cold, _call(kind, cache, True, threads, timeout)))  # the cache cold left
        except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as exc:
            out["probes"][kind] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        median = {}
        for i, cache in enumerate(("cold", "warm")):
            keys = [k for k in runs[0][i] if k.endswith("_s")]
            median[cache] = {k: float(np.median([r[i][k] for r in runs])) for k in keys}
        paths = sorted({r[i]["path"] for r in runs for i in (0, 1)})
        out["probes"][kind] = {
            "runs": runs,
            "median": median,
            # one way in every process, or all the ways seen (which a median would hide)
            "path": paths[0] if len(paths) == 1 else " / ".join(paths),
            "why": next((r[i]["why"] for r in runs for i in (0, 1) if r[i]["why"]), None),
            "ok": all(r[i]["ok"] for r in runs for i in (0, 1)),
        }
        if log:
            log(f"first call {kind}")
    return out


def measure(
    threads: int, quick: bool, repeat: int | None = None, timeout: float = 600.0, log=None, calls: bool = True
) -> dict:
    """Cold-start runs of :data:`COLD_WORKLOADS`, ``repeat`` each (median reported): 3, or 1 with ``quick``.

    Returns ``{"workloads": {id: {"case", "runs": [...], "median": {...}}}, "repeat", "settle", "calls"}``,
    with ``"error"`` when a step probe fails. ``"calls"`` holds the first ``fit`` and ``predict``
    (:func:`measure_calls`, whose errors are its own), or None without ``calls``.
    """
    ids = COLD_WORKLOADS[1 if quick else 0]
    repeat = repeat or (1 if quick else 3)
    settle = not quick
    out = {"repeat": repeat, "settle": settle, "workloads": {}}
    try:
        for wid in ids:
            runs = [_one(wid, quick, settle, threads, timeout) for _ in range(repeat)]
            keys = [k for k in runs[0] if k.endswith("_s")]
            out["workloads"][wid] = {
                "case": runs[0]["case"],
                "runs": runs,
                "median": {k: float(np.median([r[k] for r in runs])) for k in keys},
            }
            if log:
                log(f"cold start {wid}")
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    out["calls"] = measure_calls(threads, quick, repeat, timeout=timeout, log=log) if calls else None
    return out


#: Row labels of the first-call table.
_CALL_LABELS = {"plan": "`fit`", "loop": "`fit`, plan turned off", "predict": "`predict`"}


def _ran_as(kind: str, probe: dict) -> str:
    """How a first call ran: the way ``fit`` (or ``predict``) took, in words, with fit's reason for a loop."""
    path = probe.get("path")
    if kind == "loop":
        return "per-step loop" if path == "loop" else f"{path} (expected the per-step loop)"
    if kind == "plan":
        if path == "plan":
            return "compiled plan"
        if path == "loop":
            return f"per-step loop: fit gives the plan up ({probe.get('why')})"
        return str(path)  # the runs went different ways
    return str(path)


def call_lines(calls: dict | None) -> list[str]:
    """The first-call table of the cold-start section (nothing when it did not run)."""
    if not calls or not calls.get("probes"):
        return []
    from .report import fmt_time

    p, kinds = calls["problem"], calls["probes"]
    what = (
        f"W3's network ({p['features']}-{p['hidden']}-{p['classes']} MLP, ReLU, cross-entropy, SGD with momentum "
        f"0.9, batch {p['batch']}) trained by `fastnn.fit` for {p['epochs']} epoch(s) on {p['rows']:,} synthetic "
        f"rows of {p['features']} features, {p['classes']} classes"
    )
    if "predict" in kinds:
        what += f"; `fastnn.predict` of such a model, built in the process, on {p['predict_rows']:,} rows"
    text = (
        f"{what}. Median of {calls['repeat']} run(s): a new process with an empty Numba cache, then a second "
        'new process with the cache the first one left ("warm"). "import + load": Python start to the numba '
        "backend loaded; the call's CPU time counts every thread (compilations in the background included)."
    )
    if "loop" in kinds:
        text += (
            ' "plan turned off": the same `fit` with the plan turned off in that process, so that it runs '
            "the per-step loop (as for a model without a plan)."
        )
    lines = ["### First `fit`" + (" and `predict`" if "predict" in kinds else ""), "", text, ""]
    cols = ["first call", "ran as", "import + load", "call", "call CPU", "warm: import + load", "warm: call"]
    cols += ["warm: call CPU"]
    table = ["| " + " | ".join(cols) + " |", "|:---|:---|" + "|".join("---:" for _ in cols[2:]) + "|"]
    errors = []
    for kind, probe in calls["probes"].items():
        label = _CALL_LABELS.get(kind, kind)
        if kind == "predict":
            label += f", {p['predict_rows']:,} rows"
        if probe.get("error"):
            errors.append(f"- {label}: error: {probe['error']}")
            continue
        cold, warm = probe["median"]["cold"], probe["median"]["warm"]
        ran = _ran_as(kind, probe) + ("" if probe.get("ok", True) else " ⚠ non-finite loss or output")
        cells = [label, ran, fmt_time(cold.get("load_s")), fmt_time(cold.get("call_s"))]
        cells += [fmt_time(cold.get("call_cpu_s")), fmt_time(warm.get("load_s")), fmt_time(warm.get("call_s"))]
        cells += [fmt_time(warm.get("call_cpu_s"))]
        table.append("| " + " | ".join(cells) + " |")
    if len(table) > 2:
        lines += table + [""]
    if errors:
        lines += errors + [""]
    return lines


def markdown_lines(cold: dict | None) -> list[str]:
    """The report's cold-start section (nothing when it did not run)."""
    if not cold:
        return []
    from .report import fmt_time

    lines = ["## Cold start — numba backend, empty Numba cache, new process", ""]
    if cold.get("error"):
        return lines + [f"error: {cold['error']}", ""] + call_lines(cold.get("calls"))
    lines += [
        f'Median of {cold["repeat"]} run(s) per workload. "import + load": Python start to the step '
        'built (fastnn, Numba, the backend); "first step": its first call, which compiles what it '
        "runs; CPU counts every thread of the process. "
        + (
            '"full speed": from the start until the kernels compiled in the background after the first step are ready. '
            if cold.get("settle")
            else ""
        )
        + "`fastnn warmup` compiles everything ahead, once.",
        "",
    ]
    cols = ["workload", "import + load", "first step", "first step CPU"]
    if cold.get("settle"):
        cols += ["full speed", "full speed CPU"]
    lines += ["| " + " | ".join(cols) + " |", "|:---|" + "|".join("---:" for _ in cols[1:]) + "|"]
    for w in cold["workloads"].values():
        m = w["median"]
        cells = [
            w["case"],
            fmt_time(m.get("load_s")),
            fmt_time(m.get("first_step_s")),
            fmt_time(m.get("first_step_cpu_s")),
        ]
        if cold.get("settle"):
            cells += [fmt_time(m.get("full_speed_s")), fmt_time(m.get("full_speed_cpu_s"))]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines + call_lines(cold.get("calls"))
