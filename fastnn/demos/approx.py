"""Universal approximation: one hidden layer of tanh units learns sin on [−π, π].

Trains ``Linear(1, H) → Tanh → Linear(H, 1)`` on 256 points with Adam (cosine
learning-rate decay) and mean-squared error, then saves ``approx.png`` (Agg backend) with the target
against the fit and the training-loss curve, and prints the largest error.
"""

from __future__ import annotations

import os

from . import add_training_arguments

NAME = "approx"
HELP = "fit sin on [-pi, pi] with one hidden layer and plot target vs fit"


REQUIRES = {"matplotlib": "matplotlib"}


def add_arguments(parser) -> None:
    add_training_arguments(parser, epochs=400, lr=0.01, optimizer="Adam", batch_size=None)
    parser.add_argument("--hidden", type=int, default=32, help="hidden tanh units (default 32)")
    parser.add_argument("--out", default=".", help="directory for approx.png (default: current directory)")
    parser.add_argument("--no-plot", action="store_true", help="do not draw the plot")


def train(hidden=32, epochs=400, lr=0.01, seed=0, progress=False):
    """Fit sin; returns ``(model, history, x, target, fit)`` (float64 arrays of shape (256, 1))."""
    import numpy as np

    import fastnn
    from fastnn import nn, optim

    x = np.linspace(-np.pi, np.pi, 256).reshape(-1, 1)
    target = np.sin(x)
    fastnn.manual_seed(seed)
    model = nn.Sequential(nn.Linear(1, hidden, dtype=np.float64), nn.Tanh(), nn.Linear(hidden, 1, dtype=np.float64))
    opt = optim.Adam(model.parameters(), lr=lr)
    schedule = optim.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    history = fastnn.fit(
        model,
        x,
        target,
        loss=nn.MSELoss(),
        optimizer=opt,
        epochs=epochs,
        batch_size=32,
        seed=seed,
        progress=progress,
        scheduler=schedule,
    )
    return model, history, x, target, fastnn.predict(model, x)


def plot(path, x, target, fit, losses) -> None:
    """Save the figure: target vs fit, and the loss curve (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(x[:, 0], target[:, 0], label="sin(x)", linewidth=3, alpha=0.5)
    ax1.plot(x[:, 0], fit[:, 0], label="network", linestyle="--")
    ax1.set_xlabel("x")
    ax1.set_title("target vs fit")
    ax1.legend()
    ax2.semilogy(range(1, len(losses) + 1), losses)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("MSE")
    ax2.set_title("training loss")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(args) -> int:
    import numpy as np

    model, history, x, target, fit = train(args.hidden, args.epochs, args.lr, args.seed, progress=not args.no_progress)
    print(f"final MSE {history['loss'][-1]:.2e}, max |error| {np.max(np.abs(fit - target)):.3e}")
    if not args.no_plot:
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, "approx.png")
        plot(path, x, target, fit, history["loss"])
        print(f"plot written to {path}")
    return 0
