"""Whole MLP training steps (W3, W4) and a digits fit, every backend against PyTorch and scikit-learn.

Run::

    python -m pytest benches/bench_mlp.py --benchmark-group-by=group --benchmark-columns=min,median,mean,rounds

A step is forward, softmax cross-entropy, backward and the SGD update, with
buffers reused across steps, exactly what :func:`fastnn.fit` runs per
minibatch (:func:`fastnn.train.make_train_step`). The anchors do the same
work: a PyTorch CPU step (``zero_grad``, forward, loss, ``backward``,
``step``) and one scikit-learn ``MLPClassifier.partial_fit`` call on the batch
(which also re-validates its input on every call: the "epoch" groups run 50
steps in a row, where scikit-learn's ``fit`` pays that once).

Use ``FASTNN_NUM_THREADS=1`` on a busy machine: two threads on two shared
cores can be many times slower than one.
"""

import time

import numpy as np
import pytest

import fastnn
from fastnn import nn, optim
from fastnn.train import make_train_step

BACKENDS = ("numpy", "numba", "cython")

#: id -> (inputs, hidden, classes, batch)
WORKLOADS = {"W3": (64, 128, 10, 32), "W4": (784, 256, 10, 128)}


def _data(wl, seed=0):
    i, h, o, b = WORKLOADS[wl]
    rng = np.random.default_rng(seed)
    return rng.standard_normal((b, i)).astype(np.float32), rng.integers(0, o, b)


def _fastnn_step(wl, backend):
    i, h, o, b = WORKLOADS[wl]
    fastnn.manual_seed(0)
    model = nn.Sequential(nn.Linear(i, h), nn.ReLU(), nn.Linear(h, o))
    loss = nn.CrossEntropyLoss()
    opt = optim.SGD(model.parameters(), lr=0.01)
    step = make_train_step(model, loss, opt)
    x, y = _data(wl)
    loss(model(x), y)  # first call: validated path, allocates the buffers
    for _ in range(20):
        step(x, y)
    return step, x, y


def _require(backend):
    if backend not in fastnn.available_backends():
        pytest.skip(f"backend {backend!r} unavailable: {fastnn.backend_status()[backend]}")


@pytest.mark.parametrize("wl", sorted(WORKLOADS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_train_step_fastnn(benchmark, wl, backend):
    _require(backend)
    benchmark.group = f"{wl} MLP train step"
    benchmark.name = f"fastnn-{backend}"
    with fastnn.use_backend(backend):
        step, x, y = _fastnn_step(wl, backend)
        benchmark.extra_info.update(backend=backend, threads=fastnn.get_num_threads())
        benchmark.pedantic(step, args=(x, y), rounds=300 if wl == "W3" else 100, iterations=10, warmup_rounds=5)


@pytest.mark.parametrize("wl", sorted(WORKLOADS))
def test_train_step_torch(benchmark, wl):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(fastnn.get_num_threads())
    i, h, o, b = WORKLOADS[wl]
    benchmark.group = f"{wl} MLP train step"
    benchmark.name = "torch"
    model = torch.nn.Sequential(torch.nn.Linear(i, h), torch.nn.ReLU(), torch.nn.Linear(h, o))
    loss_fn = torch.nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    xn, yn = _data(wl)
    x, y = torch.from_numpy(xn), torch.from_numpy(yn)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    for _ in range(20):
        step()
    benchmark.pedantic(step, rounds=300 if wl == "W3" else 100, iterations=10, warmup_rounds=5)


@pytest.mark.parametrize("wl", sorted(WORKLOADS))
def test_train_step_sklearn(benchmark, wl):
    pytest.importorskip("sklearn")
    from sklearn.neural_network import MLPClassifier

    i, h, o, b = WORKLOADS[wl]
    benchmark.group = f"{wl} MLP train step"
    benchmark.name = "sklearn-partial_fit"
    x, y = _data(wl)
    classes = np.arange(o)
    clf = MLPClassifier(hidden_layer_sizes=(h,), solver="sgd", learning_rate_init=0.01, momentum=0.0,
                        alpha=0.0, batch_size=b, random_state=0)
    for _ in range(5):
        clf.partial_fit(x, y, classes=classes)
    benchmark.pedantic(clf.partial_fit, args=(x, y), kwargs={"classes": classes}, rounds=100 if wl == "W3" else 50,
                       iterations=5, warmup_rounds=2)


# -- 50 steps in a row: fair to scikit-learn, whose partial_fit re-validates on every call --------

EPOCH_STEPS = 50


@pytest.mark.parametrize("wl", sorted(WORKLOADS))
@pytest.mark.parametrize("who", ["numpy", "numba", "cython", "torch", "sklearn"])
def test_epoch_of_steps(benchmark, wl, who):
    """One epoch of ``EPOCH_STEPS`` minibatches (no shuffling): per-step cost without per-call overheads."""
    i, h, o, b = WORKLOADS[wl]
    rng = np.random.default_rng(1)
    X = rng.standard_normal((EPOCH_STEPS * b, i)).astype(np.float32)
    y = rng.integers(0, o, EPOCH_STEPS * b)
    benchmark.group = f"{wl} epoch of {EPOCH_STEPS} steps"
    if who == "sklearn":
        pytest.importorskip("sklearn")
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier

        benchmark.name = "sklearn-MLPClassifier"
        clf = MLPClassifier(hidden_layer_sizes=(h,), solver="sgd", learning_rate_init=0.01, momentum=0.0,
                            alpha=0.0, batch_size=b, max_iter=1, shuffle=False, random_state=0)

        def run():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.fit(X, y)
    elif who == "torch":
        torch = pytest.importorskip("torch")
        torch.set_num_threads(fastnn.get_num_threads())
        benchmark.name = "torch"
        model = torch.nn.Sequential(torch.nn.Linear(i, h), torch.nn.ReLU(), torch.nn.Linear(h, o))
        loss_fn = torch.nn.CrossEntropyLoss()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
        batches = [(Xt[k:k + b], yt[k:k + b]) for k in range(0, len(X), b)]

        def run():
            for xb, yb in batches:
                opt.zero_grad(set_to_none=True)
                loss_fn(model(xb), yb).backward()
                opt.step()
    else:
        _require(who)
        benchmark.name = f"fastnn-{who}"
        step = None

        def run():
            for k in range(0, len(X), b):
                step(X[k:k + b], y[k:k + b])

        with fastnn.use_backend(who):
            step, _, _ = _fastnn_step(wl, who)
            run()
            benchmark.pedantic(run, rounds=20 if wl == "W3" else 5, iterations=1, warmup_rounds=1)
        return
    run()
    benchmark.pedantic(run, rounds=20 if wl == "W3" else 5, iterations=1, warmup_rounds=1)


# -- digits: a whole fit to >= 97 % ------------------------------------------

DIGITS_EPOCHS = 30


def _digits():
    pytest.importorskip("sklearn")
    from fastnn.demos.digits import load_data

    return load_data(seed=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_digits_fit_fastnn(benchmark, backend):
    _require(backend)
    X_train, X_test, y_train, y_test = _digits()
    benchmark.group = f"digits fit, 64-128-10, SGD momentum, {DIGITS_EPOCHS} epochs"
    benchmark.name = f"fastnn-{backend}"
    accs = []

    def run():
        fastnn.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        fastnn.fit(model, X_train, y_train, loss=nn.CrossEntropyLoss(), optimizer=opt, epochs=DIGITS_EPOCHS,
                   batch_size=32, seed=0, progress=False)
        accs.append(fastnn.evaluate(model, X_test, y_test)["accuracy"])

    with fastnn.use_backend(backend):
        benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    benchmark.extra_info["test_accuracy"] = accs[-1]
    assert accs[-1] >= 0.97


def test_digits_fit_sklearn(benchmark):
    X_train, X_test, y_train, y_test = _digits()
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    import warnings

    benchmark.group = f"digits fit, 64-128-10, SGD momentum, {DIGITS_EPOCHS} epochs"
    benchmark.name = "sklearn-MLPClassifier"
    accs = []

    def run():
        clf = MLPClassifier(hidden_layer_sizes=(128,), solver="sgd", learning_rate_init=0.1, momentum=0.9,
                            nesterovs_momentum=False, alpha=0.0, batch_size=32, max_iter=DIGITS_EPOCHS,
                            tol=0.0, n_iter_no_change=DIGITS_EPOCHS + 1, random_state=0, shuffle=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(X_train, y_train)
        accs.append(clf.score(X_test, y_test))

    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=0)
    benchmark.extra_info["test_accuracy"] = accs[-1]


if __name__ == "__main__":  # quick table without pytest-benchmark: python benches/bench_mlp.py
    for wl in sorted(WORKLOADS):
        for backend in fastnn.available_backends()[::-1]:
            with fastnn.use_backend(backend):
                step, x, y = _fastnn_step(wl, backend)
                n = 2000 if wl == "W3" else 300
                times = []
                for _ in range(5):
                    t = time.perf_counter()
                    for _ in range(n):
                        step(x, y)
                    times.append((time.perf_counter() - t) / n)
                print(f"{wl} fastnn-{backend:7s} {np.median(times) * 1e6:8.1f} us/step")
