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

from workload_cases import workload_benchmarks, workload_cases

test_fastnn, test_torch = workload_benchmarks(workload_cases(["W6", "LSTM"]))
