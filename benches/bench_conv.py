"""Convolution benchmarks: the W5 CNN train step and a 64-channel 3×3 convolution.

W5 (WORKLOADS.md): 1×28×28 → Conv 8 3×3 pad 1 → ReLU → MaxPool 2 → Conv 16
3×3 pad 1 → ReLU → MaxPool 2 → Linear 784→10, batch 64, softmax
cross-entropy, SGD; forward, loss, backward and update, buffers reused.

CONV64: forward of a 3×3 convolution, 64→64 channels, 56×56, batch 8, float32
(1.85 GFLOP).

Every backend and PyTorch (when installed) run the same work::

    pytest benches/bench_conv.py --benchmark-only --benchmark-group-by=group

or, for one table of times and ratios measured in the same run::

    python benches/bench_conv.py [--repeat 20]
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import fastnn
from fastnn import nn, ops
from fastnn.backends import backend_status

BACKENDS = ("numpy", "numba", "cython")
CONV64 = dict(batch=8, channels=64, size=56)


# ------------------------------------------------------------------ the work

def make_w5_step(batch=64, seed=0):
    """A W5 train step with the active backend: returns ``step() -> loss``."""
    rng = np.random.default_rng(seed)
    x = rng.random((batch, 1, 28, 28), dtype=np.float32)
    labels = rng.integers(0, 10, batch)
    conv1 = nn.Conv2d(1, 8, 3, padding=1, rng=1)
    conv2 = nn.Conv2d(8, 16, 3, padding=1, rng=2)
    pool1, pool2, flat = nn.MaxPool2d(2), nn.MaxPool2d(2), nn.Flatten()
    bound = 1 / np.sqrt(784)
    w = rng.uniform(-bound, bound, (10, 784)).astype(np.float32)
    b = rng.uniform(-bound, bound, 10).astype(np.float32)
    logits = np.empty((batch, 10), np.float32)
    glogits = np.empty_like(logits)
    gflat = np.empty((batch, 784), np.float32)
    gw, gb = np.empty_like(w), np.empty_like(b)
    params = [conv1.weight, conv1.bias, conv2.weight, conv2.bias]
    lr = 0.05

    def step():
        h1 = conv1(x)
        ops.relu(h1, out=h1)
        h2 = conv2(pool1(h1))
        ops.relu(h2, out=h2)
        f = flat(pool2(h2))
        ops.dense_forward(f, w, b, out=logits)
        loss, _ = ops.softmax_cross_entropy(logits, labels, grad=glogits)
        ops.dense_backward(glogits, f, w, grad_input=gflat, grad_weight=gw, grad_bias=gb)
        g2 = pool2.backward(flat.backward(gflat))
        ops.relu_backward(g2, h2, out=g2)
        g1 = pool1.backward(conv2.backward(g2))
        ops.relu_backward(g1, h1, out=g1)
        conv1.backward(g1, input_grad=False)   # the first layer needs no input gradient
        ops.sgd_update(w, gw, lr=lr)
        ops.sgd_update(b, gb, lr=lr)
        for p in params:
            ops.sgd_update(p.data, p.grad, lr=lr)
        return loss

    return step


def make_w5_torch_step(batch=64, seed=0):
    import torch

    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.random((batch, 1, 28, 28), dtype=np.float32))
    labels = torch.tensor(rng.integers(0, 10, batch))
    tnn = torch.nn
    model = tnn.Sequential(tnn.Conv2d(1, 8, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
                           tnn.Conv2d(8, 16, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
                           tnn.Flatten(), tnn.Linear(784, 10))
    loss_fn = tnn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), labels)
        loss.backward()
        opt.step()
        return loss

    return step


def make_conv64_step(seed=0):
    """Forward of the 64-channel convolution with the active backend."""
    rng = np.random.default_rng(seed)
    B, C, S = CONV64["batch"], CONV64["channels"], CONV64["size"]
    x = rng.standard_normal((B, C, S, S), dtype=np.float32)
    w = (rng.standard_normal((C, C, 3, 3)) / 24).astype(np.float32)
    b = rng.standard_normal(C).astype(np.float32)
    out = np.empty((B, C, S, S), np.float32)
    return lambda: ops.conv2d_forward(x, w, b, 1, 1, out=out)


def make_conv64_torch_step(seed=0):
    import torch

    rng = np.random.default_rng(seed)
    B, C, S = CONV64["batch"], CONV64["channels"], CONV64["size"]
    x = torch.tensor(rng.standard_normal((B, C, S, S), dtype=np.float32))
    w = torch.tensor((rng.standard_normal((C, C, 3, 3)) / 24).astype(np.float32))
    b = torch.tensor(rng.standard_normal(C).astype(np.float32))

    def step():
        with torch.no_grad():
            return torch.nn.functional.conv2d(x, w, b, 1, 1)

    return step


CONV64_FLOP = 2 * CONV64["batch"] * CONV64["channels"] ** 2 * 9 * CONV64["size"] ** 2

# ------------------------------------------------------------------ pytest-benchmark


def _skip_unavailable(name):
    status = backend_status()[name]
    if status != "available":
        pytest.skip(f"backend {name!r} unavailable: {status}")


@pytest.fixture(scope="module", autouse=True)
def _same_threads():
    n = fastnn.get_num_threads()
    fastnn.set_num_threads(n)
    try:
        import torch
        torch.set_num_threads(n)
    except ImportError:
        pass


WORK = {"W5 CNN train step": (make_w5_step, make_w5_torch_step),
        "CONV64 3x3 64->64 56x56 b8 forward": (make_conv64_step, make_conv64_torch_step)}


@pytest.mark.parametrize("work", list(WORK))
@pytest.mark.parametrize("name", BACKENDS)
def test_fastnn(benchmark, work, name):
    _skip_unavailable(name)
    with fastnn.use_backend(name):
        step = WORK[work][0]()
        step()  # compile / allocate buffers before timing
        benchmark.group = work
        benchmark(step)


@pytest.mark.parametrize("work", list(WORK))
def test_torch(benchmark, work):
    pytest.importorskip("torch", reason="PyTorch is not installed")
    step = WORK[work][1]()
    step()
    benchmark.group = work
    benchmark(step)


# ------------------------------------------------------------------ one-run table

def _median_time(step, repeat, min_time=0.05):
    step()
    t0 = time.perf_counter()
    step()
    once = time.perf_counter() - t0
    inner = max(1, int(min_time / max(once, 1e-6)))
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(inner):
            step()
        times.append((time.perf_counter() - t0) / inner)
    return float(np.median(times))


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args(argv)
    n = fastnn.get_num_threads()
    fastnn.set_num_threads(n)
    try:
        import torch
        torch.set_num_threads(n)
    except ImportError:
        torch = None
    print(f"threads: {n}; backends: {backend_status()}")
    for work, (make, make_torch) in WORK.items():
        times = {}
        for name in BACKENDS:
            if backend_status()[name] != "available":
                continue
            with fastnn.use_backend(name):
                times[name] = _median_time(make(), args.repeat)
        if torch is not None:
            times["torch"] = _median_time(make_torch(), args.repeat)
        print(f"\n{work}")
        for name, t in times.items():
            extra = f"  {CONV64_FLOP / t / 1e9:6.1f} GFLOP/s" if work.startswith("CONV64") else ""
            ratios = f"  numpy/this {times['numpy'] / t:5.2f}x"
            if "torch" in times:
                ratios += f"  torch/this {times['torch'] / t:5.2f}x"
            print(f"  {name:7s} {t * 1e3:9.3f} ms{ratios}{extra}")


if __name__ == "__main__":
    main()
