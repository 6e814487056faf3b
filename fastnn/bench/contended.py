"""``fastnn bench --contended``: training steps on a machine that is busy with something else.

Each workload runs in a new process that times its training step, after
warm-up (Numba's background compilations settled), under these conditions:

``idle``
    nothing else runs.
``busy``
    one competing process spins on a core (a build, a browser tab, a
    second notebook).
``pair``
    a second fastnn process trains the same workload with the same backend
    and thread count (two jobs of a grid search on one machine).

at 1 thread and at 2 (``--threads`` sets the larger count) with adaptive
threads on (the default, :func:`fastnn.set_adaptive_threads`), and at the
larger count with them off -- what fastnn did before it watched the machine.
The competitors run from the start and are paused (``SIGSTOP``) and resumed
(``SIGCONT``), and the conditions take turns, round after round, in one
process: every ratio compares the same process, kernels and memory, so that
the differences between processes on a shared virtual machine (±20% here)
do not enter it. Each condition starts with a settling time in which the
adaptive threads react to the change, then times a window; a figure is the
median, over the rounds, of the windows' median step times.

Run one workload by hand: ``python -m fastnn.bench.contended numba W5 2 quick``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from ._child import tagged_json

__all__ = ["WORKLOADS", "CONDITIONS", "run_contended", "markdown_lines"]

#: Training workloads timed (W3-W6 and the LSTM).
WORKLOADS = ("W3", "W4", "W5", "W6", "LSTM")

#: (label, competitor, larger thread count?, adaptive threads)
CONDITIONS = (
    ("idle 1t", None, False, True),
    ("idle", None, True, True),
    ("idle fixed", None, True, False),
    ("busy 1t", "busy", False, True),
    ("busy", "busy", True, True),
    ("busy fixed", "busy", True, False),
    ("pair", "pair", True, True),
)

_BUSY = "while True: pass"


#: Rounds of turns, seconds to settle after a change of condition, seconds timed, per size.
_TIMING = {
    "full": dict(rounds=3, settle=0.6, window=0.8),
    "quick": dict(rounds=2, settle=0.5, window=0.4),
    "tiny": dict(rounds=1, settle=0.05, window=0.05),  # the tests: the machinery, not the figures
}


def _pause(proc, run: bool) -> None:
    if proc is not None and proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT if run else signal.SIGSTOP)


def _start_load(backend, wid, threads, size):
    """A second training job of the same workload, warmed up, then paused."""
    env = dict(os.environ, FASTNN_NUM_THREADS=str(threads), FASTNN_ADAPTIVE_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastnn.bench.contended", "--load", backend, wid, size],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    for line in proc.stdout:  # its warm-up compiles what the probe compiled: wait for it
        if line.startswith("READY"):
            _pause(proc, False)
            return proc
    proc.kill()
    raise RuntimeError(f"the competing {backend} {wid} job ended before its warm-up (exit {proc.wait()})")


def _step_for(backend, wid, size):
    import fastnn
    from fastnn.bench.workloads import build_step, get_workloads

    fastnn.set_backend(backend)
    step = build_step(get_workloads([wid])[0].cases(size != "full", size == "tiny")[0])
    step()
    jit = sys.modules.get("fastnn.backends.numba_backend._jit")
    if jit is not None:
        jit.settle()  # the fast kernels, compiled in the background
    for _ in range(3):
        step()
    return step


def _time_window(step, settle: float, window: float) -> float:
    import numpy as np

    end = time.perf_counter() + settle
    while time.perf_counter() < end:
        step()
    times = []
    end = time.perf_counter() + window
    while time.perf_counter() < end or len(times) < 3:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _probe(backend: str, wid: str, hi: int, size: str) -> dict:
    """All conditions for one workload, in turns, in this process (started by :func:`run_contended`)."""
    import numpy as np

    import fastnn

    step = _step_for(backend, wid, size)
    timing = _TIMING[size]
    busy = subprocess.Popen([sys.executable, "-c", _BUSY])
    _pause(busy, False)
    load = None
    try:
        load = _start_load(backend, wid, hi, size)
        samples: dict = {c[0]: [] for c in CONDITIONS}
        teams: dict = {c[0]: [] for c in CONDITIONS}
        for r in range(timing["rounds"]):
            k = r % len(CONDITIONS)
            for label, competitor, larger, adaptive in CONDITIONS[k:] + CONDITIONS[:k]:
                _pause(busy, competitor == "busy")
                _pause(load, competitor == "pair")
                fastnn.set_num_threads(hi if larger else 1)
                fastnn.set_adaptive_threads(adaptive)
                samples[label].append(_time_window(step, timing["settle"], timing["window"]))
                teams[label].append(fastnn.active_threads())
    finally:
        for proc in (busy, load):
            if proc is not None:
                _pause(proc, True)
                proc.kill()
                proc.wait()
    return {label: {"median_s": float(np.median(v)), "rounds": v, "team": teams[label]} for label, v in samples.items()}


def _run_probe(backend, wid, hi, size, timeout=900) -> dict:
    env = dict(os.environ, FASTNN_NUM_THREADS=str(hi))
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "FASTNN_ADAPTIVE_THREADS"):
        env.pop(name, None)  # fastnn sets every count itself, condition by condition
    return tagged_json(
        [sys.executable, "-m", "fastnn.bench.contended", backend, wid, str(hi), size],
        env,
        "CONTENDED",
        f"the {backend} {wid} probe",
        timeout,
    )


def run_contended(
    backends=None,
    threads: int | None = None,
    quick: bool = False,
    progress: bool = True,
    workloads=None,
    tiny: bool = False,
) -> dict:
    """Time the training workloads idle, beside a busy process and beside a second job.

    Parameters
    ----------
    backends : list of str, optional
        Backends to run (default: numba and cython, those installed).
    threads : int, optional
        The larger thread count (default 2).
    quick : bool
        Fewer and shorter turns, and the quick workload sizes.
    progress : bool
        Print a line per workload on stderr.
    workloads : list of str, optional
        Subset of :data:`WORKLOADS`.
    tiny : bool
        Tiny sizes and windows: for testing the machinery only.

    Returns
    -------
    dict
        ``{"runs": {backend: {workload: {condition: {"median_s", "rounds", "team"}}}}, ...}``.
    """
    import fastnn

    from .machine import context

    ids = list(workloads or WORKLOADS)
    unknown = [w for w in ids if w not in WORKLOADS]
    if unknown:
        raise ValueError(f"--contended times {', '.join(WORKLOADS)}; not {', '.join(unknown)}")
    have = fastnn.available_backends()
    if not backends:
        backends = [b for b in ("numba", "cython") if b in have]
    missing = [b for b in backends if b not in have]
    if missing:
        raise ValueError(f"backend(s) not available: {', '.join(missing)}")
    hi = int(threads or 2)
    if hi < 2:
        raise ValueError("--contended compares a team with one thread: give --threads 2 or more")
    size = "tiny" if tiny else "quick" if quick else "full"
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    started = time.perf_counter()
    runs: dict = {}
    for b in backends:
        runs[b] = {}
        for wid in ids:
            say(f"contended: {b} {wid}")
            runs[b][wid] = _run_probe(b, wid, hi, size)
    return {
        "runs": runs,
        "settings": {"threads": hi, "size": size, "workloads": ids, **_TIMING[size]},
        "machine": context(hi),
        "seconds": time.perf_counter() - started,
    }


def _ratio(a, b):
    return a / b if a and b else None


def _fmt_ms(s):
    return "—" if s is None else f"{s * 1e3:.3g} ms"


def _fmt_x(r, limit=None):
    if r is None:
        return "—"
    mark = "" if limit is None else (" ✓" if r <= limit else " ✗")
    return f"{r:.2f}×{mark}"


def markdown_lines(results: dict) -> list[str]:
    """The report section: one table per backend."""
    st = results["settings"]
    hi = st["threads"]
    m = results.get("machine", {})
    lines = [
        "## Training on a busy machine (`fastnn bench --contended`)",
        "",
        f"Median step times; the conditions take turns in one process per workload ({st['rounds']} rounds "
        f"of {st['window']} s after {st['settle']} s to settle); {m.get('cpu', 'CPU ?')}, "
        f"{m.get('cores', '?')} CPUs. *busy*: one competing process spins; *pair*: a second fastnn process "
        f"trains the same workload at {hi} threads; *fixed*: adaptive threads off "
        f"(`fastnn.set_adaptive_threads(False)`), the team stays at {hi}; *team*: the threads fastnn's loops "
        f"ran on at the end of the busy turns. Targets: busy {hi}t ≤ 1.2× busy 1t; busy {hi}t ≤ 2.5× idle "
        f"{hi}t; each job of a pair at ≥ 40% of its idle speed; idle {hi}t within 3% of idle {hi}t fixed.",
        "",
    ]
    for b, per_wl in results["runs"].items():
        lines += [
            f"### {b}",
            "",
            f"| workload | idle 1t | idle {hi}t | idle {hi}t fixed | busy 1t | busy {hi}t (team) | busy {hi}t fixed "
            f"| busy {hi}t / busy 1t | busy {hi}t / idle {hi}t | pair speed | idle / idle fixed |",
            "|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for wid, r in per_wl.items():

            def t(cond, r=r):
                return r.get(cond, {}).get("median_s")

            team = r.get("busy", {}).get("team") or ["?"]
            pair = _ratio(t("idle"), t("pair"))
            pair_txt = "—" if pair is None else f"{pair:.0%}" + (" ✓" if pair >= 0.4 else " ✗")
            lines.append(
                f"| {wid} | {_fmt_ms(t('idle 1t'))} | {_fmt_ms(t('idle'))} | {_fmt_ms(t('idle fixed'))} "
                f"| {_fmt_ms(t('busy 1t'))} | {_fmt_ms(t('busy'))} ({team[-1]}) | {_fmt_ms(t('busy fixed'))} "
                f"| {_fmt_x(_ratio(t('busy'), t('busy 1t')), 1.2)} | {_fmt_x(_ratio(t('busy'), t('idle')), 2.5)} "
                f"| {pair_txt} | {_fmt_x(_ratio(t('idle'), t('idle fixed')), 1.03)} |"
            )
        lines.append("")
    return lines


def _main(argv):
    if argv[0] == "--load":  # a competing training job: warm up, say so, train until killed
        step = _step_for(argv[1], argv[2], argv[3])
        print("READY", flush=True)
        while True:
            step()
    backend, wid, hi = argv[0], argv[1], int(argv[2])
    res = _probe(backend, wid, hi, argv[3] if len(argv) > 3 else "full")
    print("CONTENDED " + json.dumps(res), flush=True)
    os._exit(0)  # no waiting for background compilations: the process is thrown away


if __name__ == "__main__":
    _main(sys.argv[1:])
