"""MLP training: the W3 and W4 train steps of ``fastnn bench``, and a whole digits fit.

W3 (64-128-10, batch 32) and W4 (784-256-10, batch 128) are the cases of
:mod:`fastnn.bench.workloads`, built exactly as ``fastnn bench --workloads
W3,W4`` builds them: ReLU, softmax cross-entropy, SGD momentum 0.9 lr 0.01,
forward, loss, backward and update on buffers reused across steps. Every
fastnn backend runs them, and the anchors of :mod:`fastnn.bench.anchors`
(PyTorch, scikit-learn) when installed. The scikit-learn row times one
``partial_fit`` call over ``steps_per_call`` batches (see ``extra_info``;
``fastnn bench`` divides by it).

The digits fit (64-128-10, SGD momentum, 30 epochs, then test accuracy >= 97 %)
has no ``fastnn bench`` equivalent. Group by case::

    pytest benches/bench_mlp.py --benchmark-only --benchmark-group-by=group
"""

import warnings

import pytest
from workload_cases import workload_benchmarks, workload_cases

import fastnn
from fastnn.bench.anchors import build_anchor
from fastnn.demos import fit_classifier
from fastnn.demos.digits import seeded_model

CASES = workload_cases(["W3", "W4"])
test_fastnn, test_torch = workload_benchmarks(CASES)


@pytest.mark.parametrize("case", CASES)
def test_sklearn(benchmark, run_step, sklearn, case):
    step = build_anchor("sklearn", case)
    if step is None:
        pytest.skip(f"no scikit-learn version of {case.key}")
    benchmark.extra_info["steps_per_call"] = step.steps_per_call
    run_step(benchmark, step, case.key)


# -- digits: a whole fit to >= 97 % (no ``fastnn bench`` equivalent) ----------

DIGITS_EPOCHS = 30
DIGITS_GROUP = f"digits fit 64-128-10 SGD momentum {DIGITS_EPOCHS} epochs"


@pytest.fixture
def digits(sklearn):
    from fastnn.demos.digits import load_data

    return load_data(seed=0)


def test_digits_fit_fastnn(benchmark, backend, digits):
    X_train, X_test, y_train, y_test = digits
    accs = []

    def run():
        model, opt = seeded_model(0)
        fit_classifier(model, opt, X_train, y_train, epochs=DIGITS_EPOCHS, batch_size=32, seed=0, progress=False)
        accs.append(fastnn.evaluate(model, X_test, y_test)["accuracy"])

    run()  # warm-up (compilation), outside the timing
    benchmark.group = DIGITS_GROUP
    benchmark.pedantic(run, rounds=3, iterations=1)
    benchmark.extra_info["test_accuracy"] = accs[-1]
    assert accs[-1] >= 0.97


def test_digits_fit_sklearn(benchmark, digits):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    X_train, X_test, y_train, y_test = digits
    accs = []

    def run():
        clf = MLPClassifier(
            hidden_layer_sizes=(128,),
            solver="sgd",
            learning_rate_init=0.1,
            momentum=0.9,
            nesterovs_momentum=False,
            alpha=0.0,
            batch_size=32,
            max_iter=DIGITS_EPOCHS,
            tol=0.0,
            n_iter_no_change=DIGITS_EPOCHS + 1,
            random_state=0,
            shuffle=True,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(X_train, y_train)
        accs.append(clf.score(X_test, y_test))

    benchmark.group = DIGITS_GROUP
    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info["test_accuracy"] = accs[-1]
