"""Recurrent-layer benchmarks: W6 (tanh RNN train step) and an LSTM forward + backward.

    pytest benches/bench_rnn.py --benchmark-only        # pytest-benchmark, every backend (+ torch)
    python benches/bench_rnn.py [--repeat N]            # one-run report with ratios

W6   tanh RNN, T=50, input 8, hidden 64, batch 32: forward, MSE loss on the
     output sequence, BPTT (input and weight gradients), SGD update.
LSTM T=100, input 32, hidden 128, batch 64: forward and backward (all gradients).
Buffers are reused across steps as in a training loop; float32.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import fastnn
from fastnn import nn, ops

BACKENDS = [b for b in ("numpy", "numba", "cython") if b in fastnn.available_backends()]

W6 = dict(T=50, I=8, H=64, B=32)
LSTM_SIZE = dict(T=100, I=32, H=128, B=64)


def fastnn_step(kind, backend, T, I, H, B, lr=0.01):
    """A closure running one step with ``backend`` (selected inside, restored after)."""
    rng = np.random.default_rng(0)
    np.random.seed(0)
    layer = nn.RNN(I, H) if kind == "rnn" else nn.LSTM(I, H)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    target = rng.standard_normal((T, B, H)).astype(np.float32) * 0.5
    grad = np.empty((T, B, H), np.float32)
    params = layer.parameters()

    def step():
        with fastnn.use_backend(backend):
            y = layer(x)
            if kind == "rnn":
                ops.mse_loss(y, target, grad=grad)
                layer.backward(grad)
                for p in params:
                    ops.sgd_update(p.data, p.grad, lr=lr)
            else:
                layer.backward(target)
    return step


def torch_step(kind, T, I, H, B, lr=0.01):
    import torch

    torch.manual_seed(0)
    layer = torch.nn.RNN(I, H) if kind == "rnn" else torch.nn.LSTM(I, H)
    x = torch.randn(T, B, I, requires_grad=kind != "rnn")
    target = torch.randn(T, B, H) * 0.5
    opt = torch.optim.SGD(layer.parameters(), lr=lr)

    def step():
        if kind == "rnn":
            opt.zero_grad(set_to_none=False)
            y, _ = layer(x)
            loss = torch.nn.functional.mse_loss(y, target)
            loss.backward()
            opt.step()
        else:
            for p in layer.parameters():
                p.grad = None
            y, _ = layer(x)
            y.backward(target)
    return step


@pytest.mark.parametrize("backend", BACKENDS)
def test_w6_rnn_train_step(benchmark, backend):
    benchmark.group = "W6 tanh RNN train step"
    benchmark(fastnn_step("rnn", backend, **W6))


def test_w6_rnn_train_step_torch(benchmark):
    pytest.importorskip("torch")
    benchmark.group = "W6 tanh RNN train step"
    benchmark(torch_step("rnn", **W6))


@pytest.mark.parametrize("backend", BACKENDS)
def test_lstm_forward_backward(benchmark, backend):
    benchmark.group = "LSTM T=100 I=32 H=128 B=64 forward+backward"
    benchmark(fastnn_step("lstm", backend, **LSTM_SIZE))


def test_lstm_forward_backward_torch(benchmark):
    pytest.importorskip("torch")
    benchmark.group = "LSTM T=100 I=32 H=128 B=64 forward+backward"
    benchmark(torch_step("lstm", **LSTM_SIZE))


# -- one-run report ---------------------------------------------------------------

def _median_ms(fn, repeat, inner):
    fn()
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner)
    return float(np.median(times)) * 1e3


def report(repeat=7):
    try:
        import torch
        torch.set_num_threads(fastnn.get_num_threads())
    except ImportError:
        torch = None
    print(f"threads {fastnn.get_num_threads()}; backends {BACKENDS}; torch {torch.__version__ if torch else None}")
    for kind, size, inner in (("rnn", W6, 20), ("lstm", LSTM_SIZE, 2)):
        label = "W6 tanh RNN train step" if kind == "rnn" else "LSTM forward+backward"
        times = {b: _median_ms(fastnn_step(kind, b, **size), repeat, inner) for b in BACKENDS}
        if torch is not None:
            times["torch"] = _median_ms(torch_step(kind, **size), repeat, inner)
        print(f"{label} {size}")
        for name, ms in times.items():
            ratios = [f"{times['numpy'] / ms:5.2f}x vs numpy"]
            if "torch" in times:
                ratios.append(f"{times['torch'] / ms:5.2f}x vs torch")
            print(f"  {name:7s} {ms:9.3f} ms   " + "   ".join(ratios))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    a = parser.parse_args()
    if a.threads:
        fastnn.set_num_threads(a.threads)
    report(a.repeat)
