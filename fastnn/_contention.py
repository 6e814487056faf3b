"""Sharing the cores: fewer threads for fastnn's own loops while other programs run.

Why
---
A parallel loop ends at a barrier. With as many threads as cores and one
other busy program, the scheduler sets one of fastnn's threads aside for a
slice of several milliseconds, and every loop's barrier waits for it: a step
on two threads then runs slower than on one (Numba LSTM step, two cores, one
busy process: 149 ms on two threads against 104 ms on one).

How
---
A daemon thread measures, ten times a second, how much CPU the rest of the
machine used: the busy time of all CPUs (``/proc/stat``) minus this
process's own CPU time, per second of wall time -- the cores *others* keep
busy -- and keeps a moving average of it. While the cores they leave free
are fewer than the threads set, the team of fastnn's loops is capped at the
free cores (at least one); the cap is lifted once the others have gone for
about half a second. A sample is one small file read and a clock call
(26 µs), so the thread holds the GIL only briefly.

The cap changes how many threads share a loop's blocks (fastnn's kernels
size their scratch from one read of the count, and hand out blocks
dynamically or by that count), and the BLAS libraries are lowered to it as
well (most of an RNN step is BLAS), at the next kernel call and from the
thread that makes it (OpenBLAS ignores a count set from another thread).
Only their count in use changes -- OpenBLAS keeps its pool of threads -- and
it is given back when the cap is lifted, unless someone changed it meanwhile.

Like any change of thread count, a change of team can change the rounding
of some results (BLAS products, the Cython convolution's weight gradient,
the Numba GEMM): two runs on a machine whose load differs may then differ
in the last bits. Runs that must repeat bit for bit use one thread or
``FASTNN_ADAPTIVE_THREADS=0``.

Limits: only Linux exposes the counters (elsewhere nothing is watched); a
busy thread of this process that is not fastnn's (a data loader) counts as
this process's own and is not seen as competition; in a container,
``/proc/stat`` may describe the whole host, whose CPUs are then counted.
"""

from __future__ import annotations

import os
import threading
import time

from . import _config

#: Seconds between two samples.
PERIOD_S = 0.1
#: Weight of a new sample in the moving average of the others (time constant about 0.3 s).
SMOOTHING = 0.3
#: Lower the team when the free cores fall this far below it ...
LOWER_MARGIN = 0.5
#: ... and raise it again once this many more cores than it runs are free.
RAISE_MARGIN = 0.8

_STAT = "/proc/stat"


def machine_busy_seconds(path: str = _STAT) -> float:
    """CPU-seconds all CPUs of the machine spent busy since boot (``/proc/stat``'s first line).

    Busy is user + nice + system + irq + softirq + steal (time a hypervisor gave to
    others counts: the core was not ours); guest time is already inside user.
    """
    with open(path, "rb") as f:
        fields = f.readline().split()
    if fields[0] != b"cpu":
        raise ValueError(f"{path} does not start with the machine's cpu line")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / _CLK_TCK


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class OthersMeter:
    """Cores kept busy by other processes between two calls of :meth:`sample`."""

    def __init__(self, busy=machine_busy_seconds, own=time.process_time, clock=time.monotonic):
        self._busy, self._own, self._clock = busy, own, clock
        self._last = (busy(), own(), clock())

    def sample(self) -> float:
        now = (self._busy(), self._own(), self._clock())
        busy, own, wall = (a - b for a, b in zip(now, self._last))
        self._last = now
        if wall <= 0:
            return 0.0
        return max(0.0, busy - own) / wall


def decide(configured: int, cpus: int, others: float, cap: int) -> int:
    """The new cap of the team (0: none) from the cores other processes keep busy.

    Parameters
    ----------
    configured : int
        Threads set (:func:`fastnn.get_num_threads`).
    cpus : int
        CPUs of the machine (the others may run on any of them).
    others : float
        Moving average of the cores other processes keep busy (:class:`OthersMeter`).
    cap : int
        The cap now (0: none).
    """
    current = cap if 0 < cap < configured else configured
    free = cpus - others
    if free < current - LOWER_MARGIN:  # fewer cores free than threads in the team: lower it
        new = max(1, int(free + 0.5))
    elif current < configured and free >= current + RAISE_MARGIN:  # room again: raise it
        new = min(configured, int(free + 0.2))
    else:
        new = current
    return 0 if new >= configured else new


class _Watcher:
    """The sampling thread and its moving average."""

    def __init__(self):
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.stop_event = threading.Event()
        self.others = 0.0
        self.samples = 0
        self.problem: str | None = None

    def start(self) -> None:
        with self.lock:
            if self.thread is not None and self.thread.is_alive():
                return
            try:
                meter = OthersMeter()
            except (OSError, ValueError, IndexError) as exc:  # not Linux, or /proc hidden
                self.problem = f"cannot read the machine's CPU time ({type(exc).__name__}: {exc})"
                return
            self.problem = None
            self.stop_event = threading.Event()
            self.others, self.samples = 0.0, 0
            self.thread = threading.Thread(
                target=self._run, args=(self.stop_event, meter), name="fastnn-cores", daemon=True
            )
            self.thread.start()

    def stop(self) -> None:
        with self.lock:
            self.stop_event.set()
            self.thread = None

    def _run(self, stop: threading.Event, meter: OthersMeter) -> None:
        cpus = _config._cpus()[1]
        while not stop.wait(PERIOD_S):
            try:
                now = meter.sample()
            except (OSError, ValueError, IndexError):
                continue
            self.others += SMOOTHING * (now - self.others)
            self.samples += 1
            configured = _config.get_num_threads()
            if stop.is_set():
                break
            _config._set_thread_cap(decide(configured, cpus, self.others, _config._thread_cap))
        _config._set_thread_cap(0)


_watcher = _Watcher()


def watch() -> None:
    """Start the sampling thread (idempotent); it caps the team while others keep the cores busy."""
    _watcher.start()


def stop() -> None:
    """Stop the sampling thread; the cap is lifted."""
    _watcher.stop()


def describe() -> str:
    """One line on the state, for ``fastnn info``."""
    if not _config.adaptive_threads():
        return "off (FASTNN_ADAPTIVE_THREADS=0 or set_adaptive_threads(False))"
    if _watcher.problem:
        return f"on, not watching: {_watcher.problem}"
    if _watcher.thread is None:
        return "on (watching starts with the first parallel call)"
    if _watcher.samples == 0:
        return f"on: watching (first sample within {PERIOD_S:g} s)"
    cap = _config._thread_cap
    team = cap if cap else _config.get_num_threads()
    return (
        f"on: other processes keep {_watcher.others:.1f} of {_config._cpus()[1]} CPUs busy "
        f"(moving average); team of {team} of {_config.get_num_threads()} threads"
    )


def _after_fork_in_child() -> None:
    # The watching thread did not survive the fork (nor did a lock it may have held): lift its
    # cap, let BLAS follow at the next kernel call, and watch again if it watched.
    was_watching = _watcher.thread is not None
    _watcher.lock = threading.Lock()
    _watcher.thread = None
    _config._lock = threading.RLock()
    _config._thread_cap = 0
    _config._blas_pending = True
    for hook in _config._cap_hooks:
        hook(0)
    if was_watching:
        _watcher.start()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
