"""Convolution: the W5 CNN train step and the CONV 3x3 convolution forward of ``fastnn bench``.

W5: 1x28x28 -> Conv 8 3x3 pad 1 -> ReLU -> MaxPool 2 -> Conv 16 3x3 pad 1 ->
ReLU -> MaxPool 2 -> Flatten -> Linear 784->10, batch 64, softmax
cross-entropy, SGD momentum 0.9 lr 0.01 (forward, loss, backward, update).
CONV: forward of an ``nn.Conv2d`` 3x3, 64->64 channels, 56x56, batch 8, padding 1.

The cases come from :mod:`fastnn.bench.workloads` and the PyTorch versions from
:mod:`fastnn.bench.anchors`, so this measures the work ``fastnn bench
--workloads W5,CONV`` does, for every backend and PyTorch (when installed)::

    pytest benches/bench_conv.py --benchmark-only --benchmark-group-by=group
"""

import pytest

from fastnn.bench.anchors import build_anchor
from fastnn.bench.workloads import build_step, get_workloads, missing

CASES = [pytest.param(c, id=c.key.replace(" ", "_"),
                      marks=pytest.mark.skipif(bool(missing(w)), reason=f"{w.id} needs {missing(w)}"))
         for w in get_workloads(["W5", "CONV"]) for c in w.cases(False, False)]


@pytest.mark.parametrize("case", CASES)
def test_fastnn(benchmark, run_step, backend, case):
    run_step(benchmark, build_step(case), case.key)


@pytest.mark.parametrize("case", CASES)
def test_torch(benchmark, run_step, torch, case):
    step = build_anchor("torch", case)
    if step is None:
        pytest.skip(f"no PyTorch version of {case.key}")
    run_step(benchmark, step, case.key)
