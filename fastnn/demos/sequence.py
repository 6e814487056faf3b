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


REQUIRES = {"matplotlib": "matplotlib"}


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
    freq = rng.uniform(0.1, 0.3, n)[None, :]  # radians per step
    phase = rng.uniform(0, 2 * math.pi, n)[None, :]
    clean = np.sin(freq * t + phase)
    noisy = clean + noise * rng.standard_normal(clean.shape)
    x = noisy[:-1, :, None].astype(dtype)
    y = clean[1:, :, None].astype(dtype)
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def build_model(cell, hidden, rng, dtype=np.float32):
    """A recurrent layer with a linear read-out (H -> 1) at every time step."""
    from fastnn import nn

    class SequenceRegressor(nn.Module):
        def __init__(self):
            super().__init__()
            layer_cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell]
            self.rnn = layer_cls(1, hidden, dtype=dtype, rng=rng)
            self.head = nn.Linear(hidden, 1, dtype=dtype, rng=rng)

        def forward(self, x):
            h = self.rnn(x)  # (T, B, H)
            T, B, H = h.shape
            return self.head(h.reshape(T * B, H)).reshape(T, B, 1)

        def backward(self, grad, *, input_grad=True, accumulate=False):
            T, B, _ = grad.shape
            gh = self.head.backward(grad.reshape(T * B, 1), accumulate=accumulate)
            return self.rnn.backward(gh.reshape(T, B, -1), input_grad=input_grad, accumulate=accumulate)

    return SequenceRegressor()


def train(args, log=print):
    """Train and evaluate; returns a dict of results (used by ``run`` and the tests)."""
    import fastnn
    from fastnn import nn, optim

    rng = np.random.default_rng(args.seed)
    x_train, y_train = make_data(args.train, args.seq_len, args.noise, rng)
    x_test, y_test = make_data(128, args.seq_len, args.noise, rng)
    model = build_model(args.cell, args.hidden, rng)
    loss_fn = nn.MSELoss()
    opt = optim.Adam(model.parameters(), lr=args.lr)
    log(
        f"sequence demo: {args.cell.upper()} hidden={args.hidden}, T={args.seq_len}, "
        f"{args.train} training sequences, backend={fastnn.get_backend()}"
    )

    steps = 0
    history = []
    n = args.train
    t0 = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(n)
        total = 0.0
        for start in range(0, n, args.batch_size):
            idx = order[start : start + args.batch_size]
            xb = np.ascontiguousarray(x_train[:, idx])
            yb = np.ascontiguousarray(y_train[:, idx])
            loss = loss_fn(model(xb), yb)
            model.backward(loss_fn.backward())
            optim.clip_grad_norm(model.parameters(), args.clip)
            opt.step()
            steps += 1
            total += loss * len(idx)
        history.append(total / n)
        if epoch == 1 or epoch == args.epochs or epoch % max(1, args.epochs // 10) == 0:
            log(f"epoch {epoch:3d}  train mse {history[-1]:.5f}")
    seconds = time.perf_counter() - t0

    pred_test = model(x_test).copy()
    test_mse = float(np.mean((pred_test - y_test) ** 2))
    naive_mse = float(np.mean((x_test - y_test) ** 2))
    log(f"test mse {test_mse:.5f}   naive forecast (next = current noisy value) {naive_mse:.5f}")
    log(f"training took {seconds:.2f} s ({seconds / max(steps, 1) * 1e3:.2f} ms per step)")
    return dict(
        history=history,
        test_mse=test_mse,
        naive_mse=naive_mse,
        x_test=x_test,
        y_test=y_test,
        pred_test=pred_test,
        seconds=seconds,
    )


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
    axes[0].set_title(
        f"{cell.upper()} next-step prediction: test mse {result['test_mse']:.4f} (naive {result['naive_mse']:.4f})"
    )
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
