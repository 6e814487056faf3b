"""Kernel benchmarks: W1 (matmul), W2 (activations), softmax cross-entropy and Adam.

The cases are those of ``fastnn bench`` (:mod:`fastnn.bench.workloads`),
built the same way, so the two report the same work. Group by case::

    pytest benches/bench_kernels.py --benchmark-only --benchmark-group-by=group
"""

import pytest

from fastnn.bench.anchors import build_anchor
from fastnn.bench.workloads import build_step, get_workloads

CASES = [c for w in get_workloads(["W1", "W2", "KERN"]) for c in w.cases(False, False)]
IDS = [c.key.replace(" ", "_") for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_fastnn(benchmark, run_step, backend, case):
    run_step(benchmark, build_step(case), case.key)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_torch(benchmark, run_step, torch, case):
    step = build_anchor("torch", case)
    if step is None:
        pytest.skip(f"no PyTorch version of {case.key}")
    run_step(benchmark, step, case.key)
