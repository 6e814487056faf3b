"""Next-step prediction of noisy sine waves with a recurrent network.

Each sequence is a sine wave of random frequency and phase plus Gaussian
noise. At every step the network sees the noisy value and predicts the next
clean value, so it must both track the phase and filter the noise. The model
is a recurrent layer (RNN, LSTM or GRU) with a linear read-out at every time
step, trained with Adam on the mean-squared error by backpropagation through
time, with the gradient clipped by its global norm. The test error is compared
with the naive forecast "next value = current noisy value", and a plot of
prediction against target is saved to ``--out``.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np

NAME = "sequence"
HELP = "recurrent network (RNN/LSTM/GRU) predicting the next step of noisy sine waves"


def add_arguments(parser) -> None:
    parser.add_argument("--cell", choices=("rnn", "lstm", "gru"), default="gru", help="recurrent layer (default gru)")
    parser.add_argument("--hidden", type=int, default=32, help="hidden units (default 32)")
    parser.add_argument("--seq-len", type=int, default=60, help="time steps per sequence (default 60)")
    parser.add_argument("--train", type=int, default=512, help="training sequences (default 512)")
    parser.add_argument("--epochs", type=int, default=30, help="passes over the training set (default 30)")
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per step (default 32)")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam learning rate (default 0.01)")
    parser.add_argument("--noise", type=float, default=0.1, help="noise standard deviation (default 0.1)")
    parser.add_argument("--clip", type=float, default=1.0, help="global gradient-norm clip (default 1.0)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", default=".", help="folder for the plot sequence.png (default: current folder)")
    parser.add_argument("--no-plot", action="store_true", help="do not draw the plot")


def make_data(n, seq_len, noise, rng, dtype=np.float32):
    """Noisy sine waves, time-major.

    Returns
    -------
    x : ndarray (T, n, 1), the noisy values s_0 .. s_{T-1}
    y : ndarray (T, n, 1), the clean next values c_1 .. c_T
    """
    t = np.arange(seq_len + 1)[:, None]
    freq = rng.uniform(0.1, 0.3, n)[None, :]           # radians per step
    phase = rng.uniform(0, 2 * math.pi, n)[None, :]
    clean = np.sin(freq * t + phase)
    noisy = clean + noise * rng.standard_normal(clean.shape)
    x = noisy[:-1, :, None].astype(dtype)
    y = clean[1:, :, None].astype(dtype)
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


class SequenceModel:
    """Recurrent layer + per-step linear read-out (H -> 1), with explicit backward."""

    def __init__(self, cell, hidden, rng, dtype=np.float32):
        from fastnn import nn

        layer_cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = layer_cls(1, hidden, dtype=dtype)
        k = 1 / math.sqrt(hidden)
        self.readout_w = nn.Parameter(rng.uniform(-k, k, (1, hidden)).astype(dtype))
        self.readout_b = nn.Parameter(np.zeros(1, dtype))
        self._h = None

    def parameters(self):
        return self.rnn.parameters() + [self.readout_w, self.readout_b]

    def forward(self, x):
        from fastnn import ops

        h = self.rnn(x)                                   # (T, B, H)
        T, B, H = h.shape
        self._h = h.reshape(T * B, H)
        return ops.dense_forward(self._h, self.readout_w.data, self.readout_b.data).reshape(T, B, 1)

    def backward(self, grad):
        from fastnn import ops

        T, B, _ = grad.shape
        gh, _, _ = ops.dense_backward(grad.reshape(T * B, 1), self._h, self.readout_w.data,
                                      grad_weight=self.readout_w.grad, grad_bias=self.readout_b.grad)
        return self.rnn.backward(gh.reshape(T, B, -1))


def clip_grad_norm(params, max_norm):
    """Scale all gradients so that their joint L2 norm is at most ``max_norm``; return the norm."""
    total = math.sqrt(sum(float(np.vdot(p.grad, p.grad)) for p in params))
    if total > max_norm:
        for p in params:
            p.grad *= max_norm / (total + 1e-12)
    return total


def train(args, log=print):
    """Train and evaluate; returns a dict of results (used by ``run`` and the tests)."""
    import fastnn
    from fastnn import ops

    rng = np.random.default_rng(args.seed)
    np.random.seed(args.seed)   # the layers draw their initial weights from NumPy's global generator
    x_train, y_train = make_data(args.train, args.seq_len, args.noise, rng)
    x_test, y_test = make_data(128, args.seq_len, args.noise, rng)
    model = SequenceModel(args.cell, args.hidden, rng)
    params = model.parameters()
    state = [(np.zeros_like(p.data), np.zeros_like(p.data)) for p in params]
    log(f"sequence demo: {args.cell.upper()} hidden={args.hidden}, T={args.seq_len}, "
        f"{args.train} training sequences, backend={fastnn.get_backend()}")

    step = 0
    history = []
    n = args.train
    t0 = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(n)
        total = 0.0
        for start in range(0, n, args.batch_size):
            idx = order[start:start + args.batch_size]
            xb = np.ascontiguousarray(x_train[:, idx])
            yb = np.ascontiguousarray(y_train[:, idx])
            pred = model.forward(xb)
            loss, grad = ops.mse_loss(pred, yb)
            model.backward(grad)
            clip_grad_norm(params, args.clip)
            step += 1
            for p, (m, v) in zip(params, state):
                ops.adam_update(p.data, p.grad, m, v, step, lr=args.lr)
            total += loss * len(idx)
        history.append(total / n)
        if epoch == 1 or epoch == args.epochs or epoch % max(1, args.epochs // 10) == 0:
            log(f"epoch {epoch:3d}  train mse {history[-1]:.5f}")
    seconds = time.perf_counter() - t0

    pred_test = model.forward(x_test).copy()
    test_mse = float(np.mean((pred_test - y_test) ** 2))
    naive_mse = float(np.mean((x_test - y_test) ** 2))
    log(f"test mse {test_mse:.5f}   naive forecast (next = current noisy value) {naive_mse:.5f}")
    log(f"training took {seconds:.2f} s ({seconds / max(step, 1) * 1e3:.2f} ms per step)")
    return dict(history=history, test_mse=test_mse, naive_mse=naive_mse, x_test=x_test, y_test=y_test,
                pred_test=pred_test, seconds=seconds)


def plot(result, path, cell):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(8, 6))
    for ax, j in zip(axes, (0, 1)):
        ax.plot(result["x_test"][:, j, 0], ".", color="0.6", label="noisy input")
        ax.plot(result["y_test"][:, j, 0], "-", color="C0", label="target (next clean value)")
        ax.plot(result["pred_test"][:, j, 0], "--", color="C3", label="prediction")
        ax.set_xlabel("time step")
    axes[0].legend(loc="upper right", fontsize=8)
    axes[0].set_title(f"{cell.upper()} next-step prediction: test mse {result['test_mse']:.4f} "
                      f"(naive {result['naive_mse']:.4f})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(args) -> int:
    result = train(args)
    if not args.no_plot:
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, "sequence.png")
        plot(result, path, args.cell)
        print(f"plot saved to {path}")
    return 0
