"""fastnn.sklearn's MLPs train whole epochs in a compiled plan: the same steps as the per-step loop.

The per-step loop is forced by replacing ``CompiledSteps.create``; with the
Cython backend the compiled epochs give the loop's weights bit for bit (the
plan calls the same kernels), with Numba the same to rounding (its plan has
its own product kernel).
"""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import tol

import fastnn

pytest.importorskip("sklearn")

from sklearn.datasets import load_digits, make_multilabel_classification, make_regression

from fastnn.sklearn import MLPClassifier, MLPRegressor, _plan


def _fit(monkeypatch, cls, X, y, per_step=False, method="fit", **kw):
    original = _plan.CompiledSteps.create
    with monkeypatch.context() as m:
        if per_step:
            m.setattr(_plan.CompiledSteps, "create", classmethod(lambda *a, **k: (None, "forced")))
        else:
            m.setattr(_plan.CompiledSteps, "create", original)
        est = cls(random_state=0, max_iter=kw.pop("max_iter", 4), **kw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            getattr(est, method)(X, y)
    return est


def _data(kind):
    if kind == "multiclass":
        X, y = load_digits(return_X_y=True)
        return X[:600] / 16, y[:600]
    if kind == "binary":
        X, y = load_digits(return_X_y=True)
        return X[:600] / 16, y[:600] > 4
    if kind == "multilabel":
        return make_multilabel_classification(300, 10, n_classes=4, random_state=0)
    X, y = make_regression(300, 10, n_targets=3, random_state=0)
    return X, y / 100


SOLVERS = {
    "adam": dict(solver="adam", alpha=1e-3),
    "sgd_invscaling": dict(solver="sgd", alpha=1e-2, learning_rate="invscaling"),
    "sgd_adaptive": dict(solver="sgd", learning_rate="adaptive", n_iter_no_change=1, tol=10.0, max_iter=6),
    "sgd_plain": dict(solver="sgd", momentum=0.0, activation="logistic", batch_size=64),
    "sgd_momentum": dict(solver="sgd", momentum=0.5, nesterovs_momentum=False, activation="tanh"),
}


@pytest.mark.parametrize("kind", ["multiclass", "binary", "multilabel", "regression"])
@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_compiled_epochs_are_the_per_step_loop(monkeypatch, compiled_backend, dtype, kind, solver):
    X, y = _data(kind)
    cls = MLPRegressor if kind == "regression" else MLPClassifier
    kw = dict(SOLVERS[solver], dtype=np.dtype(dtype).name, backend=compiled_backend, hidden_layer_sizes=(17, 9))
    got = _fit(monkeypatch, cls, X, y, **kw)
    want = _fit(monkeypatch, cls, X, y, per_step=True, **kw)
    assert got._per_step_reason is None and want._per_step_reason == "forced"
    assert (got.n_iter_, got.t_) == (want.n_iter_, want.t_)
    got_w, want_w = got.coefs_ + got.intercepts_, want.coefs_ + want.intercepts_
    if compiled_backend == "cython":
        for a, b in zip(got_w, want_w):
            np.testing.assert_array_equal(a, b)
    else:
        for a, b in zip(got_w, want_w):
            np.testing.assert_allclose(a, b, **tol(dtype, 100))
    # the losses are summed in float64 by the plan, by BLAS's dot in the loop's L2 term
    np.testing.assert_allclose(got.loss_curve_, want.loss_curve_, rtol=1e-9 if dtype == np.float64 else 1e-5)
    assert got._optimizer.learning_rate == pytest.approx(want._optimizer.learning_rate, rel=1e-12)


def test_adam_state_continues_in_the_per_step_loop(monkeypatch, compiled_backend):
    """A fit on the plan, then partial_fit with sample weights (the loop): Adam's counters carried over."""
    X, y = _data("multiclass")
    w = np.linspace(0.5, 1.5, len(y))
    kw = dict(backend=compiled_backend, hidden_layer_sizes=(11,), dtype="float64", warm_start=True)
    runs = []
    for per_step in (False, True):
        est = _fit(monkeypatch, MLPClassifier, X, y, per_step=per_step, **kw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.partial_fit(X, y, sample_weight=w)
        runs.append(est)
    assert runs[0]._optimizer.t == runs[1]._optimizer.t == 4 * 3 + 3
    for a, b in zip(runs[0].coefs_ + runs[0].intercepts_, runs[1].coefs_ + runs[1].intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "case,reason",
    [
        ("numpy", "numpy backend"),
        ("sparse", "sparse"),
        ("sample_weight", "weights"),
        ("class_weight", "weights"),
        ("dropout", "Dropout"),
        ("adamw", "adamw"),
        ("momentum_one", "momentum >= 1"),
        ("poisson", "Poisson"),
    ],
)
def test_what_keeps_the_per_step_loop(monkeypatch, case, reason):
    X, y = _data("multiclass")
    cls, kw, fit_kw = MLPClassifier, dict(hidden_layer_sizes=(8,), max_iter=2), {}
    if case == "numpy":
        kw["backend"] = "numpy"
    elif case == "sparse":
        X = sp.csr_matrix(X)
    elif case == "sample_weight":
        fit_kw["sample_weight"] = np.ones(len(y))
    elif case == "class_weight":
        kw["class_weight"] = "balanced"
    elif case == "dropout":
        kw["dropout"] = 0.2
    elif case == "adamw":
        kw.update(solver="adamw", weight_decay=0.01)
    elif case == "momentum_one":
        kw.update(solver="sgd", momentum=1.0)
    else:
        cls, y = MLPRegressor, np.abs(y).astype(float) + 1
        kw["loss"] = "poisson"
    if case != "numpy" and "cython" not in fastnn.available_backends():
        pytest.skip("the Cython backend is not built")
    kw.setdefault("backend", "cython")
    est = cls(random_state=0, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y, **fit_kw)
    assert reason in est._per_step_reason


def test_nonfinite_loss_mid_epoch_goes_on_as_scikit_learn(monkeypatch, compiled_backend):
    """A loss that overflows stops the plan before its step; the per-step loop runs the rest, as scikit-learn."""
    X, y = _data("regression")
    kw = dict(backend=compiled_backend, solver="sgd", learning_rate_init=1e6, hidden_layer_sizes=(8,), max_iter=2)
    got = _fit(monkeypatch, MLPRegressor, X, y, dtype="float64", **kw)
    want = _fit(monkeypatch, MLPRegressor, X, y, per_step=True, dtype="float64", **kw)
    assert got._per_step_reason is None
    assert not np.isfinite(want.loss_curve_).all()  # the case happens
    np.testing.assert_allclose(got.loss_curve_, want.loss_curve_, rtol=1e-12)
    for a, b in zip(got.coefs_ + got.intercepts_, want.coefs_ + want.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-12)
