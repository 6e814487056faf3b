"""Train an MLP on scikit-learn's handwritten digits (8×8 images, 10 classes).

The data ships with scikit-learn (no download). The script holds out 20 % of
the 1797 images (stratified), trains a 64-128-10 ReLU network with SGD and
momentum on the rest, and reports the test accuracy (about 98 %) and the time.
"""

from __future__ import annotations

import time

from . import add_training_arguments

NAME = "digits"
HELP = "train an MLP on scikit-learn's digits and report test accuracy"


REQUIRES = {"sklearn": "scikit-learn"}


def add_arguments(parser) -> None:
    add_training_arguments(parser, epochs=30, lr=0.1, optimizer="SGD")
    parser.add_argument("--hidden", type=int, default=128, help="hidden units (default 128)")
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")


def load_data(seed=0, dtype="float32"):
    """Digits scaled to [0, 1], split 80/20 (stratified): ``X_train, X_test, y_train, y_test``."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(dtype)
    return train_test_split(X, y.astype(np.intp), test_size=0.2, random_state=seed, stratify=y)


def train(epochs=30, batch_size=32, hidden=128, lr=0.1, momentum=0.9, seed=0, progress=False):
    """Train and evaluate; returns ``(model, history, test_accuracy, seconds, n_test)``."""
    import fastnn
    from fastnn import nn, optim

    X_train, X_test, y_train, y_test = load_data(seed)
    fastnn.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    opt = optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    start = time.perf_counter()
    history = fastnn.fit(
        model,
        X_train,
        y_train,
        loss=nn.CrossEntropyLoss(),
        optimizer=opt,
        epochs=epochs,
        batch_size=batch_size,
        validation_data=(X_test, y_test),
        seed=seed,
        progress=progress,
    )
    seconds = time.perf_counter() - start
    accuracy = fastnn.evaluate(model, X_test, y_test)["accuracy"]
    return model, history, accuracy, seconds, len(y_test)


def run(args) -> int:
    import fastnn

    model, history, accuracy, seconds, n_test = train(
        args.epochs, args.batch_size, args.hidden, args.lr, args.momentum, args.seed, progress=not args.no_progress
    )
    print(model)
    print(f"backend: {fastnn.get_backend()}  threads: {fastnn.get_num_threads()}")
    print(
        f"{history.epochs} epochs in {seconds:.2f} s; final train loss {history['loss'][-1]:.4f}, "
        f"train accuracy {history['accuracy'][-1]:.4f}"
    )
    print(f"test accuracy: {accuracy:.4f} ({round(accuracy * n_test)}/{n_test} held-out images)")
    return 0
