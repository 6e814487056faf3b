"""Train a small CNN on scikit-learn's handwritten digits (8×8 images, 10 classes).

The data ships with scikit-learn (no download). The script holds out 20 % of
the 1797 images (stratified), trains two 3×3 convolutions, a max pooling and
two dense layers with Adam, and reports the test accuracy (about 99 %)
and the time.
"""

from __future__ import annotations

from . import add_training_arguments, digits, print_summary

NAME = "digits-cnn"
HELP = "train a small CNN on scikit-learn's digits and report test accuracy"


REQUIRES = {"sklearn": "scikit-learn"}


def add_arguments(parser) -> None:
    add_training_arguments(parser, epochs=20, lr=2e-3, optimizer="Adam")
    parser.add_argument("--channels", type=int, default=32, help="channels of the first convolution (default 32)")


def load_data(seed=0, dtype="float32"):
    """Digits as (N, 1, 8, 8) images in [0, 1], the same 80/20 split as the MLP demo's."""
    X_train, X_test, y_train, y_test = digits.load_data(seed, dtype)
    return X_train.reshape(-1, 1, 8, 8), X_test.reshape(-1, 1, 8, 8), y_train, y_test


def build_model(channels=32):
    """Conv 3×3 → ReLU → Conv 3×3 → ReLU → MaxPool 2 → Flatten → Linear → ReLU → Linear."""
    from fastnn import nn

    c = channels
    return nn.Sequential(
        nn.Conv2d(1, c, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(c, 2 * c, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * c * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def train(epochs=20, batch_size=32, channels=32, lr=2e-3, seed=0, progress=False):
    """Train and evaluate; returns ``(model, history, test_accuracy, seconds)``."""
    import fastnn
    from fastnn import optim

    data = load_data(seed)
    fastnn.manual_seed(seed)
    model = build_model(channels)
    optimizer = optim.Adam(model.parameters(), lr=lr)
    history, accuracy, seconds = digits.fit_and_test(model, optimizer, data, epochs, batch_size, seed, progress)
    return model, history, accuracy, seconds


def run(args) -> int:
    model, history, accuracy, seconds = train(
        args.epochs, args.batch_size, args.channels, args.lr, args.seed, progress=not args.no_progress
    )
    print_summary(model, history, seconds)
    print(f"test accuracy: {accuracy:.4f} on the held-out split")
    return 0
