"""Training steps beside a busy process: the pytest-benchmark view of ``fastnn bench --contended``.

Every case of W3-W6 and the LSTM runs on each compiled backend at the
suite's thread count (``FASTNN_NUM_THREADS``; 2 or more to mean anything)
while a competing process spins on one core, once with adaptive threads on
(the default: the team shrinks to the free cores) and once off (the team
stays at the count set). The group of a case holds both, and the idle run of
the same step is in ``bench_mlp``/``bench_conv``/``bench_rnn``::

    pytest benches/bench_contended.py --benchmark-only --benchmark-group-by=group

``fastnn bench --contended`` measures the same in turns inside one process
(idle and busy, 1 and 2 threads, a second fastnn job), which compares more
fairly on a noisy machine; this suite is for pytest-benchmark's histories.
"""

import subprocess
import sys
import time

import pytest
from conftest import _require_or_skip
from workload_cases import workload_cases

import fastnn
from fastnn.bench.workloads import build_step


@pytest.fixture(scope="module")
def busy_process():
    """One process spinning on a core for the whole module."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.3)
    yield proc
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("adaptive", [True, False], ids=["adaptive", "fixed"])
@pytest.mark.parametrize("backend_name", ["numba", "cython"])
@pytest.mark.parametrize("case", workload_cases(["W3", "W4", "W5", "W6", "LSTM"]))
def test_busy(benchmark, busy_process, backend_name, adaptive, case):
    _require_or_skip(backend_name)
    with fastnn.use_backend(backend_name):
        fastnn.set_adaptive_threads(adaptive)
        try:
            step = build_step(case)
            end = time.perf_counter() + 1.0  # compile, and let the watcher see the busy process
            while time.perf_counter() < end:
                step()
            benchmark.group = f"busy: {case.key}"
            benchmark.extra_info["team"] = fastnn.active_threads()
            benchmark(step)
        finally:
            fastnn.set_adaptive_threads(True)
