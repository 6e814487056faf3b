"""Train an MLP on scikit-learn's handwritten digits (8×8 images, 10 classes).

The data ships with scikit-learn (no download). The script holds out 20 % of
the 1797 images (stratified), trains a 64-128-10 ReLU network with SGD and
momentum on the rest, and reports the test accuracy (about 98 %) and the time.
"""

from __future__ import annotations

from . import add_training_arguments, fit_classifier, print_summary

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


def seeded_model(seed=0, hidden=128, lr=0.1, momentum=0.9):
    """After ``fastnn.manual_seed(seed)``, the 64-``hidden``-10 ReLU network and its SGD: ``(model, optimizer)``."""
    import fastnn
    from fastnn import nn, optim

    fastnn.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    return model, optim.SGD(model.parameters(), lr=lr, momentum=momentum)


def fit_and_test(model, optimizer, data, epochs, batch_size, seed, progress):
    """Train on ``data``'s training split, validated on its test split: ``(history, test_accuracy, seconds)``."""
    import fastnn

    X_train, X_test, y_train, y_test = data
    history, seconds = fit_classifier(
        model,
        optimizer,
        X_train,
        y_train,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        validation_data=(X_test, y_test),
    )
    return history, fastnn.evaluate(model, X_test, y_test)["accuracy"], seconds


def train(epochs=30, batch_size=32, hidden=128, lr=0.1, momentum=0.9, seed=0, progress=False):
    """Train and evaluate; returns ``(model, history, test_accuracy, seconds, n_test)``."""
    data = load_data(seed)
    model, opt = seeded_model(seed, hidden, lr, momentum)
    history, accuracy, seconds = fit_and_test(model, opt, data, epochs, batch_size, seed, progress)
    return model, history, accuracy, seconds, len(data[3])


def run(args) -> int:
    model, history, accuracy, seconds, n_test = train(
        args.epochs, args.batch_size, args.hidden, args.lr, args.momentum, args.seed, progress=not args.no_progress
    )
    print_summary(model, history, seconds)
    print(f"test accuracy: {accuracy:.4f} ({round(accuracy * n_test)}/{n_test} held-out images)")
    return 0
