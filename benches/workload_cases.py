"""The ``fastnn bench`` workloads as pytest-benchmark cases, shared by bench_mlp, bench_conv and bench_rnn.

Cases come from :mod:`fastnn.bench.workloads` and the PyTorch versions from
:mod:`fastnn.bench.anchors`, so a bench module measures exactly the work
``fastnn bench --workloads ...`` does, for every backend and PyTorch (when
installed). Not collected itself (no ``bench_`` prefix).
"""

import pytest

from fastnn.bench.anchors import build_anchor
from fastnn.bench.workloads import build_step, get_workloads, missing


def workload_cases(ids):
    """pytest params of every case of the workloads ``ids``, skipped where a workload's needs are missing."""
    return [
        pytest.param(
            c,
            id=c.key.replace(" ", "_"),
            marks=pytest.mark.skipif(bool(missing(w)), reason=f"{w.id} needs {missing(w)}"),
        )
        for w in get_workloads(ids)
        for c in w.cases(False, False)
    ]


def workload_benchmarks(cases):
    """``(test_fastnn, test_torch)``: each case on every fastnn backend, and its PyTorch version."""

    @pytest.mark.parametrize("case", cases)
    def test_fastnn(benchmark, run_step, backend, case):
        run_step(benchmark, build_step(case), case.key)

    @pytest.mark.parametrize("case", cases)
    def test_torch(benchmark, run_step, torch, case):
        step = build_anchor("torch", case)
        if step is None:
            pytest.skip(f"no PyTorch version of {case.key}")
        run_step(benchmark, step, case.key)

    return test_fastnn, test_torch
