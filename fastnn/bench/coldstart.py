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
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import numpy as np

from ._child import tagged_json

__all__ = ["measure", "markdown_lines", "COLD_WORKLOADS"]

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


def _one(wid, quick, settle, threads, timeout):
    with tempfile.TemporaryDirectory(prefix="fastnn-cold-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, FASTNN_NUM_THREADS=str(threads))
        env.pop("NUMBA_DISABLE_JIT", None)
        return tagged_json(
            [sys.executable, "-c", _PROBE, wid, "quick" if quick else "full", "settle" if settle else "no"],
            env,
            "COLD",
            f"cold-start probe of {wid}",
            timeout,
        )


def measure(threads: int, quick: bool, repeat: int | None = None, timeout: float = 600.0, log=None) -> dict:
    """Cold-start runs of :data:`COLD_WORKLOADS`, ``repeat`` each (median reported): 3, or 1 with ``quick``.

    Returns ``{"workloads": {id: {"case", "runs": [...], "median": {...}}}, "repeat", "settle"}``,
    or ``{"error": ...}`` when a probe fails.
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
    return out


def markdown_lines(cold: dict | None) -> list[str]:
    """The report's cold-start section (nothing when it did not run)."""
    if not cold:
        return []
    from .report import fmt_time

    lines = ["## Cold start — numba backend, empty Numba cache, new process", ""]
    if cold.get("error"):
        return lines + [f"error: {cold['error']}", ""]
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
    return lines
