"""Recurrent layers: the W6 tanh-RNN train step and the LSTM forward + backward of ``fastnn bench``.

W6: ``nn.RNN``, T=50, input 8, hidden 64, batch 32: forward, MSE loss on the
output sequence, BPTT, SGD momentum 0.9 lr 0.01.
LSTM: ``nn.LSTM``, T=100, input 32, hidden 128, batch 64: forward, MSE loss on
the outputs, backward (all gradients), no update.

The cases come from :mod:`fastnn.bench.workloads` and the PyTorch versions from
:mod:`fastnn.bench.anchors`, so this measures the work ``fastnn bench
--workloads W6,LSTM`` does, for every backend and PyTorch (when installed)::

    pytest benches/bench_rnn.py --benchmark-only --benchmark-group-by=group
"""

import pytest

from fastnn.bench.anchors import build_anchor
from fastnn.bench.workloads import build_step, get_workloads, missing

CASES = [pytest.param(c, id=c.key.replace(" ", "_"),
                      marks=pytest.mark.skipif(bool(missing(w)), reason=f"{w.id} needs {missing(w)}"))
         for w in get_workloads(["W6", "LSTM"]) for c in w.cases(False, False)]


@pytest.mark.parametrize("case", CASES)
def test_fastnn(benchmark, run_step, backend, case):
    run_step(benchmark, build_step(case), case.key)


@pytest.mark.parametrize("case", CASES)
def test_torch(benchmark, run_step, torch, case):
    step = build_anchor("torch", case)
    if step is None:
        pytest.skip(f"no PyTorch version of {case.key}")
    run_step(benchmark, step, case.key)
