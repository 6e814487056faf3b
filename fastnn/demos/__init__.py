"""End-to-end demos, one module each, run by ``fastnn demo NAME``.

A demo module defines ``NAME`` (the sub-command), ``HELP`` (one line),
``add_arguments(parser)``, ``run(args) -> int`` and ``REQUIRES``: the
optional packages it imports (``{import name: distribution name}``);
``matplotlib`` in it is needed only without ``--no-plot``, ``onnx`` and
``onnxruntime`` only without ``--no-onnx``.
"""

from __future__ import annotations

import importlib.util

#: How to get the optional packages the demos use (the ``demo`` extra).
INSTALL_HINT = 'pip install "fastnn-cpu[demo]"  (from a checkout: pip install ".[demo]")'


def add_training_arguments(parser, *, epochs: int, lr: float, optimizer: str, batch_size: int | None = 32) -> None:
    """The options every training demo takes: epochs, batch size, learning rate, seed, progress bar."""
    parser.add_argument("--epochs", type=int, default=epochs, help=f"training epochs (default {epochs})")
    if batch_size is not None:
        parser.add_argument(
            "--batch-size", type=int, default=batch_size, help=f"samples per step (default {batch_size})"
        )
    parser.add_argument("--lr", type=float, default=lr, help=f"{optimizer} learning rate (default {lr:g})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, initialisation and shuffling")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def missing_requirements(module, args) -> str | None:
    """Say which optional packages demo ``module`` needs and lacks, with the line that installs them."""
    needed = dict(getattr(module, "REQUIRES", {}))
    if getattr(args, "no_plot", False):
        needed.pop("matplotlib", None)
    if getattr(args, "no_onnx", False):
        needed.pop("onnx", None)
        needed.pop("onnxruntime", None)
    missing = [dist for name, dist in needed.items() if not _installed(name)]
    if not missing:
        return None
    text = f"fastnn demo {module.NAME} needs {' and '.join(missing)}, which is not installed: {INSTALL_HINT}"
    if "matplotlib" in missing and hasattr(args, "no_plot"):
        text += ", or run it with --no-plot"
    if "onnx" in missing or "onnxruntime" in missing:
        text += ", or run it with --no-onnx"
    return text


def fit_classifier(model, optimizer, X, y, *, epochs, batch_size, seed, progress, **options):
    """``fastnn.fit`` with cross-entropy, timed: returns ``(history, seconds)``; ``options`` go to ``fit``."""
    import time

    import fastnn
    from fastnn import nn

    start = time.perf_counter()
    history = fastnn.fit(
        model,
        X,
        y,
        loss=nn.CrossEntropyLoss(),
        optimizer=optimizer,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        **options,
    )
    return history, time.perf_counter() - start


def print_summary(model, history, seconds) -> None:
    """The lines the digits demos print after training: the model, where it ran, the epochs and final loss."""
    import fastnn

    print(model)
    print(f"backend: {fastnn.get_backend()}  threads: {fastnn.get_num_threads()}")
    print(
        f"{history.epochs} epochs in {seconds:.2f} s; final train loss {history['loss'][-1]:.4f}, "
        f"train accuracy {history['accuracy'][-1]:.4f}"
    )
