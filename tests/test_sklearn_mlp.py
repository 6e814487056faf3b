"""fastnn.sklearn.MLPClassifier / MLPRegressor against scikit-learn's, step for step.

With ``dtype="float64"`` the estimators run scikit-learn's algorithm on
fastnn's kernels: the same initial weights, batches, losses and updates, so
their weights agree to round-off (1e-10 here, on weights of order 0.1-1 that
every test checks have moved by far more than that). Small data and a few
epochs keep the file at a few seconds.
"""

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn import neural_network as sknn
from sklearn.datasets import load_digits, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.class_weight import compute_sample_weight

import fastnn
from fastnn.sklearn import MLPClassifier, MLPRegressor

TOL = 1e-10


@pytest.fixture(autouse=True)
def _one_blas_thread():
    # scikit-learn's small float64 products slow down badly with two BLAS threads on a busy machine
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:600] / 16.0, y[:600]


@pytest.fixture(scope="module")
def regression():
    X, y = make_regression(n_samples=240, n_features=8, n_targets=3, noise=5.0, random_state=0)
    return X, y / 100.0


def _fit_quiet(est, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(*args, **kwargs)


def _params(est):
    return list(est.coefs_) + list(est.intercepts_)


def _max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(p) - np.asarray(q)))) for p, q in zip(_params(a), _params(b)))


def _max_change(before, est):
    return max(float(np.max(np.abs(p - np.asarray(q)))) for p, q in zip(before, _params(est)))


# -- fidelity: one epoch from the same weights ------------------------------------

ONE_EPOCH = [
    ("classifier", dict(solver="sgd", learning_rate_init=0.1)),
    ("classifier", dict(solver="sgd", nesterovs_momentum=False, activation="tanh", alpha=0.01, learning_rate_init=0.1)),
    ("classifier", dict(solver="adam", learning_rate_init=0.01)),
    ("classifier", dict(solver="adam", activation="logistic", batch_size=64)),
    ("regressor", dict(solver="sgd", learning_rate_init=0.01, momentum=0.5)),
    ("regressor", dict(solver="adam", learning_rate_init=0.01, activation="tanh")),
]


@pytest.mark.parametrize("kind,params", ONE_EPOCH)
def test_one_epoch_from_sklearn_weights_matches_sklearn(kind, params, digits, regression):
    """Copy a fitted scikit-learn model's weights, warm-start one epoch in both: same weights to 1e-10."""
    X, y = digits if kind == "classifier" else regression
    sk_cls, fast_cls = (
        (sknn.MLPClassifier, MLPClassifier) if kind == "classifier" else (sknn.MLPRegressor, MLPRegressor)
    )
    sk = _fit_quiet(sk_cls(hidden_layer_sizes=(32, 16), max_iter=1, warm_start=True, random_state=0, **params), X, y)
    fast = _fit_quiet(
        fast_cls(hidden_layer_sizes=(32, 16), max_iter=1, warm_start=True, random_state=0, dtype="float64", **params),
        X,
        y,
    )
    # different starting weights in ours, then scikit-learn's copied in: the copy is what makes them agree
    fast.coefs_ = [c + 0.5 for c in fast.coefs_]
    assert _max_diff(sk, fast) > 0.1
    fast.coefs_ = [c.copy() for c in sk.coefs_]
    fast.intercepts_ = [b.copy() for b in sk.intercepts_]
    before = [p.copy() for p in _params(sk)]
    _fit_quiet(sk, X, y)
    _fit_quiet(fast, X, y)
    assert _max_change(before, sk) > 1e-3  # the epoch moved the weights
    assert _max_diff(sk, fast) < TOL
    assert fast.loss_ == pytest.approx(sk.loss_, rel=TOL)
    assert (fast.n_iter_, fast.t_) == (sk.n_iter_, sk.t_)
    assert fast.coefs_[0].dtype == np.float64


FROM_SCRATCH = [
    ("classifier", "multiclass", dict(solver="adam")),
    ("classifier", "binary", dict(solver="sgd", learning_rate="invscaling", learning_rate_init=0.5)),
    ("classifier", "multilabel", dict(solver="adam", activation="tanh")),
    ("classifier", "multiclass", dict(solver="adam", early_stopping=True, validation_fraction=0.2)),
    ("classifier", "binary", dict(solver="sgd", early_stopping=True, momentum=1.0, learning_rate_init=0.01)),
    (
        "classifier",
        "multiclass",
        dict(solver="sgd", learning_rate="adaptive", tol=0.5, n_iter_no_change=1, learning_rate_init=0.2),
    ),
    ("classifier", "multiclass", dict(solver="lbfgs")),
    ("regressor", "multioutput", dict(solver="adam", learning_rate_init=0.01)),
    ("regressor", "multioutput", dict(solver="lbfgs", alpha=0.1)),
    ("regressor", "poisson", dict(solver="sgd", loss="poisson", learning_rate_init=0.01)),
]


def _targets(target, digits, regression):
    X, y = digits
    if target == "multiclass":
        return X, y
    if target == "binary":
        return X, y % 2
    if target == "multilabel":
        return X, np.stack([y % 2, y > 4, y == 3], axis=1).astype(int)
    Xr, yr = regression
    if target == "poisson":
        return Xr, np.abs(yr[:, 0])
    return Xr, yr


@pytest.mark.parametrize("kind,target,params", FROM_SCRATCH)
def test_fit_from_scratch_matches_sklearn(kind, target, params, digits, regression):
    """Same random_state: scikit-learn's initialisation, shuffling, validation split, schedules and stopping."""
    X, y = _targets(target, digits, regression)
    sk_cls, fast_cls = (
        (sknn.MLPClassifier, MLPClassifier) if kind == "classifier" else (sknn.MLPRegressor, MLPRegressor)
    )
    sw = np.random.default_rng(0).uniform(0.5, 2.0, X.shape[0]) if kind == "regressor" else None
    common = dict(hidden_layer_sizes=(24,), max_iter=6, random_state=3, **params)
    with warnings.catch_warnings(record=True) as sk_warnings:
        warnings.simplefilter("always", ConvergenceWarning)
        sk = sk_cls(**common).fit(X, y, sample_weight=sw)
    with warnings.catch_warnings(record=True) as fast_warnings:
        warnings.simplefilter("always", ConvergenceWarning)
        fast = fast_cls(dtype="float64", **common).fit(X, y, sample_weight=sw)
    assert _max_diff(sk, fast) < TOL
    assert fast.n_iter_ == sk.n_iter_
    assert fast.loss_ == pytest.approx(sk.loss_, rel=1e-9)
    # the same warnings, starting with the same words (what warning filters match)
    assert [str(w.message).split(":")[0] for w in fast_warnings if w.category is ConvergenceWarning] == [
        str(w.message).split(":")[0] for w in sk_warnings if w.category is ConvergenceWarning
    ]
    if params["solver"] != "lbfgs":
        np.testing.assert_allclose(fast.loss_curve_, sk.loss_curve_, rtol=1e-9)
        assert fast.t_ == sk.t_
        if params.get("early_stopping"):
            np.testing.assert_allclose(fast.validation_scores_, sk.validation_scores_, rtol=1e-12)
            assert fast.best_validation_score_ == sk.best_validation_score_
            assert len(fast.validation_loss_curve_) == fast.n_iter_
        else:
            assert fast.best_loss_ == pytest.approx(sk.best_loss_, rel=1e-9)
        if params.get("learning_rate") == "adaptive":
            # the schedule divided the rate by 5 at least twice: velocities were rescaled to follow it
            assert fast._optimizer.learning_rate == pytest.approx(sk._optimizer.learning_rate, rel=1e-12)
            assert fast._optimizer.learning_rate < 0.2 / 24
    assert fast.out_activation_ == sk.out_activation_
    if kind == "regressor":
        np.testing.assert_allclose(fast.predict(X), sk.predict(X), rtol=1e-9)
    else:
        np.testing.assert_array_equal(fast.predict(X), sk.predict(X))
        np.testing.assert_allclose(fast.predict_proba(X), sk.predict_proba(X), atol=1e-10)


def test_partial_fit_matches_sklearn(digits):
    X, y = digits
    sk = sknn.MLPClassifier(hidden_layer_sizes=(20,), random_state=0, solver="sgd", learning_rate_init=0.05)
    fast = MLPClassifier(
        hidden_layer_sizes=(20,), random_state=0, solver="sgd", learning_rate_init=0.05, dtype="float64"
    )
    classes = np.unique(y)
    for start in (0, 200, 400):
        sk.partial_fit(X[start : start + 200], y[start : start + 200], classes=classes)
        fast.partial_fit(X[start : start + 200], y[start : start + 200], classes=classes)
    assert _max_diff(sk, fast) < TOL
    assert (fast.n_iter_, fast.t_) == (sk.n_iter_, sk.t_) == (1, 600)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        MLPClassifier().partial_fit(X, y)
    with pytest.raises(AttributeError, match="has no attribute 'partial_fit'"):
        MLPClassifier(solver="lbfgs").partial_fit(X, y, classes=classes)


def test_verbose_output_is_sklearns(digits, capsys):
    X, y = digits
    _fit_quiet(sknn.MLPClassifier(hidden_layer_sizes=(10,), max_iter=3, random_state=0, verbose=True), X, y)
    sk_out = capsys.readouterr().out
    _fit_quiet(MLPClassifier(hidden_layer_sizes=(10,), max_iter=3, random_state=0, verbose=True, dtype="float64"), X, y)
    assert capsys.readouterr().out == sk_out
    assert sk_out.count("Iteration") == 3


# -- the fitted model ----------------------------------------------------------------


def test_default_float32_fit_is_accurate_and_float32(digits):
    X, y = digits
    clf = _fit_quiet(MLPClassifier(hidden_layer_sizes=(64,), max_iter=60, random_state=0), X[:450], y[:450])
    sk = _fit_quiet(sknn.MLPClassifier(hidden_layer_sizes=(64,), max_iter=60, random_state=0), X[:450], y[:450])
    assert clf.coefs_[0].dtype == np.float32 and clf.coefs_[0].shape == (64, 64)
    assert clf.score(X[450:], y[450:]) == pytest.approx(sk.score(X[450:], y[450:]), abs=0.02)
    assert clf.score(X[450:], y[450:]) > 0.8
    proba = clf.predict_proba(X[450:])
    assert proba.shape == (150, 10) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(clf.predict_log_proba(X[:5]), np.log(clf.predict_proba(X[:5])), rtol=1e-6)
    np.testing.assert_array_equal(clf.classes_[np.argmax(proba, axis=1)], clf.predict(X[450:]))
    assert (clf.n_layers_, clf.n_outputs_, clf.n_features_in_, clf.out_activation_) == (3, 10, 64, "softmax")
    assert len(clf.loss_curve_) == clf.n_iter_ and clf.best_loss_ == min(clf.loss_curve_)
    assert clf.validation_scores_ is None and clf.best_validation_score_ is None


def test_lbfgs_has_sklearns_attributes(regression):
    X, y = regression
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reg = MLPRegressor(solver="lbfgs", max_iter=5, random_state=0).fit(X, y)
        sk = sknn.MLPRegressor(solver="lbfgs", max_iter=5, random_state=0).fit(X, y)
    missing = [a for a in ("loss_curve_", "best_loss_", "validation_scores_") if not hasattr(sk, a)]
    assert missing == [a for a in ("loss_curve_", "best_loss_", "validation_scores_") if not hasattr(reg, a)]
    assert reg.n_iter_ == 5 and reg.predict(X).shape == (240, 3)


def test_coefs_are_views_and_assignments_reach_the_network(digits):
    X, y = digits
    clf = _fit_quiet(MLPClassifier(hidden_layer_sizes=(16,), max_iter=3, random_state=0), X, y)
    before = clf.predict_proba(X[:20])
    clf.coefs_[1][:] = 0  # in place: the network's weights
    clf.intercepts_[1][:] = 0
    np.testing.assert_allclose(clf.predict_proba(X[:20]), 0.1, atol=1e-6)
    clf.coefs_[1] = np.ones((16, 10))  # a new array in the list
    clf.intercepts_ = [clf.intercepts_[0], np.arange(10.0)]  # a new list
    p = clf.predict_proba(X[:20])
    assert not np.allclose(p, before)
    np.testing.assert_array_equal(clf.predict(X[:20]), np.full(20, 9))  # the largest intercept wins
    clf.coefs_ = [np.zeros((3, 3)), clf.coefs_[1]]
    with pytest.raises(ValueError, match=r"coefs_\[0\] has shape \(3, 3\), expected \(64, 16\)"):
        clf.predict(X[:2])


def test_multilabel_and_binary_outputs(digits):
    X, y = digits
    Y = np.stack([y % 2, y > 4], axis=1)
    clf = _fit_quiet(MLPClassifier(hidden_layer_sizes=(32,), max_iter=30, random_state=0), X, Y)
    assert clf.predict(X).shape == (600, 2) and clf.predict_proba(X).shape == (600, 2)
    assert clf.out_activation_ == "logistic" and (clf.predict(X) == Y).mean() > 0.85
    labels = np.where(y % 2, "odd", "even")
    clf = _fit_quiet(MLPClassifier(hidden_layer_sizes=(32,), max_iter=30, random_state=0), X, labels)
    assert list(clf.classes_) == ["even", "odd"] and clf.n_outputs_ == 1
    assert clf.predict_proba(X).shape == (600, 2) and set(clf.predict(X)) == {"even", "odd"}


def test_sparse_input_gives_the_dense_results(digits):
    sp = pytest.importorskip("scipy.sparse")
    X, y = digits
    for shuffle in (True, False):
        params = dict(hidden_layer_sizes=(16,), max_iter=3, random_state=0, dtype="float64", shuffle=shuffle)
        dense = _fit_quiet(MLPClassifier(**params), X, y)
        sparse = _fit_quiet(MLPClassifier(**params), sp.csr_matrix(X), y)
        assert _max_diff(dense, sparse) < TOL
        np.testing.assert_allclose(sparse.predict_proba(sp.csc_matrix(X)), dense.predict_proba(X), atol=1e-12)
    lbfgs = dict(hidden_layer_sizes=(16,), max_iter=3, random_state=0, dtype="float64", solver="lbfgs")
    assert (
        _max_diff(_fit_quiet(MLPClassifier(**lbfgs), X, y), _fit_quiet(MLPClassifier(**lbfgs), sp.csr_matrix(X), y))
        < 1e-8
    )


@pytest.mark.parametrize(
    "params,match",
    [
        (dict(activation="softplus"), "'activation' parameter must be one of"),
        (dict(solver="rmsprop"), "'solver' parameter must be one of"),
        (dict(hidden_layer_sizes=(10, 0)), r"hidden_layer_sizes must be > 0, got \[10, 0\]"),
        (dict(alpha=-1.0), r"'alpha' parameter must be in the range \[0, inf\)"),
        (dict(momentum=1.5), r"'momentum' parameter must be in the range \[0, 1\]"),
        (dict(batch_size=0), "'batch_size' parameter must be in the range"),
        (dict(dropout=1.0), r"'dropout' parameter must be in the range \[0, 1\)"),
        (dict(dtype="float16"), "'dtype' parameter must be 'float32' or 'float64'"),
        (dict(backend="tensorflow"), "'backend' parameter must be one of"),
        (dict(n_threads=0), "n_threads must be a positive integer"),
    ],
)
def test_bad_parameters_raise_at_fit_naming_them(params, match, digits):
    X, y = digits
    est = MLPClassifier(**params)  # scikit-learn's rule: nothing is checked in __init__
    with pytest.raises(ValueError, match=match):
        est.fit(X[:50], y[:50])


def test_bad_data_raises_clear_errors(digits):
    X, y = digits
    bad = X[:50].copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        MLPClassifier(max_iter=1).fit(bad, y[:50])
    with pytest.raises(ValueError, match="Unknown label type"):
        MLPClassifier(max_iter=1).fit(X[:50], X[:50, 0] + 0.5)
    clf = _fit_quiet(MLPClassifier(max_iter=1, hidden_layer_sizes=(4,)), X[:50], y[:50])
    with pytest.raises(ValueError, match="X has 3 features, but MLPClassifier is expecting 64 features"):
        clf.predict(X[:5, :3])
    with pytest.raises(ValueError, match="warm_start and partial_fit continue the fitted network"):
        clf.set_params(warm_start=True, hidden_layer_sizes=(5,)).fit(X[:50], y[:50])
    with pytest.raises(ValueError, match="negative which is not allowed for Poisson"):
        MLPRegressor(loss="poisson").fit(X[:50], -np.ones(50))


# -- what scikit-learn does not have -----------------------------------------------


def test_dropout_is_seeded_and_off_at_predict_time(digits):
    X, y = digits
    params = dict(hidden_layer_sizes=(32,), max_iter=4, random_state=0, dropout=0.3)
    a = _fit_quiet(MLPClassifier(**params), X, y)
    b = _fit_quiet(MLPClassifier(**params), X, y)
    plain = _fit_quiet(MLPClassifier(**{**params, "dropout": 0.0}), X, y)
    assert _max_diff(a, b) == 0.0  # same seed, same masks
    assert _max_diff(a, plain) > 1e-3  # the masks changed training
    np.testing.assert_array_equal(a.predict_proba(X[:30]), a.predict_proba(X[:30]))  # no mask at predict time
    # the prediction is the plain network: the same forward pass as with the weights moved into a dropout-free model
    twin = _fit_quiet(MLPClassifier(**{**params, "dropout": 0.0, "max_iter": 1}), X, y)
    twin.coefs_ = [c.copy() for c in a.coefs_]
    twin.intercepts_ = [i.copy() for i in a.intercepts_]
    np.testing.assert_allclose(twin.predict_proba(X[:30]), a.predict_proba(X[:30]), rtol=1e-6)


def test_class_weight_is_sample_weight(digits):
    X, y = digits
    params = dict(hidden_layer_sizes=(16,), max_iter=3, random_state=0, dtype="float64")
    balanced = _fit_quiet(MLPClassifier(class_weight="balanced", **params), X, y)
    by_hand = _fit_quiet(MLPClassifier(**params), X, y, sample_weight=compute_sample_weight("balanced", y))
    plain = _fit_quiet(MLPClassifier(**params), X, y)
    assert _max_diff(balanced, by_hand) < TOL and _max_diff(balanced, plain) > 1e-4
    weights = {c: (5.0 if c == 3 else 1.0) for c in range(10)}
    assert (
        _max_diff(
            _fit_quiet(MLPClassifier(class_weight=weights, **params), X, y),
            _fit_quiet(MLPClassifier(**params), X, y, sample_weight=np.where(y == 3, 5.0, 1.0)),
        )
        < TOL
    )
    with pytest.raises(ValueError, match="not supported by partial_fit"):
        MLPClassifier(class_weight="balanced").partial_fit(X, y, classes=np.arange(10))


def test_keep_optimizer_continues_training_exactly(digits):
    """Two warm-started one-epoch fits that keep Adam's state are one two-epoch fit (no shuffling)."""
    X, y = digits
    params = dict(hidden_layer_sizes=(16,), random_state=0, shuffle=False, dtype="float64")
    two = _fit_quiet(MLPClassifier(max_iter=2, **params), X, y)
    kept = _fit_quiet(MLPClassifier(max_iter=1, warm_start=True, keep_optimizer=True, **params), X, y)
    _fit_quiet(kept, X, y)
    fresh = _fit_quiet(MLPClassifier(max_iter=1, warm_start=True, **params), X, y)
    _fit_quiet(fresh, X, y)
    assert _max_diff(two, kept) < TOL
    assert _max_diff(two, fresh) > 1e-4  # scikit-learn's warm start restarts Adam
    assert kept._optimizer.t == 6 and fresh._optimizer.t == 3


def test_adamw_decays_the_weights(digits):
    X, y = digits
    params = dict(hidden_layer_sizes=(16,), max_iter=5, random_state=0, dtype="float64")
    adam = _fit_quiet(MLPClassifier(solver="adam", **params), X, y)
    assert _max_diff(adam, _fit_quiet(MLPClassifier(solver="adamw", weight_decay=0.0, **params), X, y)) < TOL
    decayed = _fit_quiet(MLPClassifier(solver="adamw", weight_decay=10.0, **params), X, y)
    assert np.linalg.norm(decayed.coefs_[0]) < 0.97 * np.linalg.norm(adam.coefs_[0])


def test_callbacks_and_max_time_stop_training(digits):
    X, y = digits
    seen = []

    def stop_at_three(est, info):
        seen.append((info["epoch"], round(info["loss"], 12), info["validation_loss"] is not None))
        return info["epoch"] == 3

    clf = MLPClassifier(
        hidden_layer_sizes=(8,), max_iter=50, random_state=0, early_stopping=True, callbacks=[stop_at_three]
    ).fit(X, y)
    assert clf.n_iter_ == 3 and [s[0] for s in seen] == [1, 2, 3] and all(s[2] for s in seen)
    assert [s[1] for s in seen] == [round(v, 12) for v in clf.loss_curve_]
    with pytest.warns(ConvergenceWarning, match="Stopped after max_time"):
        clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=10_000, tol=0, random_state=0, max_time=1e-9).fit(X, y)
    assert clf.n_iter_ == 1


def test_backend_and_threads_apply_to_the_call_only(digits):
    X, y = digits
    threads, backend = fastnn.get_num_threads(), fastnn.get_backend()
    a = _fit_quiet(
        MLPClassifier(
            hidden_layer_sizes=(8,), max_iter=2, random_state=0, dtype="float64", backend="numpy", n_threads=1
        ),
        X,
        y,
    )
    b = _fit_quiet(MLPClassifier(hidden_layer_sizes=(8,), max_iter=2, random_state=0, dtype="float64"), X, y)
    assert a.n_threads_ == 1 and _max_diff(a, b) < TOL
    assert (fastnn.get_num_threads(), fastnn.get_backend()) == (threads, backend)
