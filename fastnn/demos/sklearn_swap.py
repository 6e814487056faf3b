"""Swap scikit-learn's MLPClassifier for fastnn's on the handwritten digits, and time both.

The only change is the import::

    from sklearn.neural_network import MLPClassifier    # before
    from fastnn.sklearn import MLPClassifier            # after

Both fit the same default network (one hidden layer of 100 ReLU units, Adam,
batches of 200) on the same 75 % of the 1797 images, with the same
``random_state`` and number of epochs, and are scored on the rest. fastnn
trains in float32 by default; ``--dtype float64`` gives scikit-learn's
weights to round-off.
"""

from __future__ import annotations

import time
import warnings

NAME = "sklearn"
HELP = "fit scikit-learn's MLPClassifier and fastnn's drop-in replacement on digits; print both times"


REQUIRES = {"sklearn": "scikit-learn"}


def add_arguments(parser) -> None:
    parser.add_argument("--max-iter", type=int, default=200, help="epochs for both (default 200, scikit-learn's)")
    parser.add_argument(
        "--dtype", default="float32", choices=("float32", "float64"), help="fastnn's precision (default float32)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random_state of the split and of both models")


def _fit(cls, X_train, y_train, X_test, y_test, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a ConvergenceWarning when --max-iter stops both early
        start = time.perf_counter()
        model = cls(**params).fit(X_train, y_train)
        seconds = time.perf_counter() - start
    return model, seconds, model.score(X_test, y_test)


def run(args) -> int:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier as SklearnMLP

    import fastnn
    from fastnn.sklearn import MLPClassifier

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X / 16.0, y, random_state=args.seed, stratify=y)
    params = dict(max_iter=args.max_iter, random_state=args.seed)
    # a short untimed fit first: fastnn's compiled kernels load (or compile) on first use
    _fit(MLPClassifier, X_train[:200], y_train[:200], X_test, y_test, max_iter=1, dtype=args.dtype)
    sk, sk_s, sk_acc = _fit(SklearnMLP, X_train, y_train, X_test, y_test, **params)
    ours, our_s, our_acc = _fit(MLPClassifier, X_train, y_train, X_test, y_test, dtype=args.dtype, **params)
    print(
        f"digits: {len(y_train)} training and {len(y_test)} test images, MLPClassifier(max_iter={args.max_iter}, "
        f"random_state={args.seed})"
    )
    print(
        f"scikit-learn {'sklearn.neural_network':24s} {sk.n_iter_:4d} epochs {sk_s:8.3f} s   test accuracy {sk_acc:.4f}"
    )
    print(
        f"fastnn       {'fastnn.sklearn (' + args.dtype + ')':24s} {ours.n_iter_:4d} epochs {our_s:8.3f} s   "
        f"test accuracy {our_acc:.4f}"
    )
    print(f"fastnn is {sk_s / our_s:.1f}x faster (backend {fastnn.get_backend()}, {ours.n_threads_} thread(s))")
    return 0
