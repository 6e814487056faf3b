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

from workload_cases import workload_benchmarks, workload_cases

test_fastnn, test_torch = workload_benchmarks(workload_cases(["W5", "CONV"]))
