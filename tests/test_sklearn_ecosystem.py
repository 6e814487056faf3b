"""fastnn.sklearn in scikit-learn's ecosystem: imports, clone, pickle/joblib, parallel model selection.

The parallel test starts joblib's process workers once (a few seconds, the
bulk of this file's time).
"""

import pickle
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from isolated import run_isolated
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import GridSearchCV, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fastnn.sklearn import MLPClassifier, MLPRegressor, NeuralNetClassifier, NeuralNetRegressor
from fastnn.sklearn._runtime import thread_budget


@pytest.fixture(scope="module")
def data():
    X, y = load_digits(return_X_y=True)
    return X[:400] / 16.0, y[:400]


def _fitted(data):
    X, y = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return [
            MLPClassifier(hidden_layer_sizes=(16,), max_iter=3, random_state=0).fit(X, y),
            MLPRegressor(hidden_layer_sizes=(16,), max_iter=3, random_state=0).fit(X, y / 9.0),
            NeuralNetClassifier(max_epochs=2, random_state=0).fit(X, y),
            NeuralNetRegressor(max_epochs=2, random_state=0).fit(X, y / 9.0),
        ]


def test_import_fastnn_does_not_import_sklearn():
    run_isolated("""
        import sys, fastnn
        assert "sklearn" not in sys.modules and "fastnn.sklearn" not in sys.modules, sorted(sys.modules)
    """).assert_ok()


def test_without_sklearn_the_import_error_says_what_to_install():
    result = run_isolated("""
        import sys
        class NoSklearn:
            def find_spec(self, name, path=None, target=None):
                if name == "sklearn" or name.startswith("sklearn."):
                    raise ImportError("No module named 'sklearn' (blocked for this test)")
        sys.meta_path.insert(0, NoSklearn())
        import fastnn
        import fastnn.sklearn
    """)
    result.assert_raised(ImportError)
    assert "pip install 'fastnn[sklearn]'" in result.stderr


def test_pickle_and_joblib_memmap_round_trips(data, tmp_path):
    """joblib reloads arrays as read-only memory maps (mmap_mode="r", and in its workers): still a usable model."""
    joblib = pytest.importorskip("joblib")
    X, _ = data
    for est in _fitted(data):
        expected = est.predict(X)
        copy = pickle.loads(pickle.dumps(est))
        np.testing.assert_array_equal(copy.predict(X), expected)
        path = tmp_path / f"{type(est).__name__}.joblib"
        joblib.dump(est, path)
        mapped = joblib.load(path, mmap_mode="r")
        np.testing.assert_array_equal(mapped.predict(X), expected)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            mapped.fit(X, est.predict(X))  # and trainable again
    mlp = pickle.loads(pickle.dumps(_fitted(data)[0]))
    mlp.coefs_[-1][:] = 0  # still views of the network after loading
    mlp.intercepts_[-1][:] = 0
    np.testing.assert_allclose(mlp.predict_proba(X[:3]), 0.1, atol=1e-6)


def test_clone_gives_an_unfitted_twin(data):
    for est in _fitted(data):
        twin = clone(est)
        assert twin.get_params() == est.get_params()
        with pytest.raises(NotFittedError):
            twin.predict(data[0][:2])


@pytest.mark.slow
def test_parallel_search_limits_each_worker_to_its_share_of_threads(data):
    """joblib starts process workers with OMP_NUM_THREADS etc. = cpu_count // n_jobs; each fit runs with that."""
    X, y = data
    res = cross_validate(
        MLPClassifier(hidden_layer_sizes=(8,), max_iter=2),
        X,
        y,
        cv=2,
        n_jobs=2,
        return_estimator=True,
        error_score="raise",
    )
    import os

    share = max(1, (os.cpu_count() or 1) // 2)
    assert [e.n_threads_ for e in res["estimator"]] == [min(share, thread_budget())] * 2
    search = GridSearchCV(
        make_pipeline(StandardScaler(), NeuralNetClassifier(max_epochs=2, random_state=0)),
        {"neuralnetclassifier__lr": [1e-3, 1e-2]},
        cv=2,
        n_jobs=2,
        error_score="raise",
    ).fit(X, y)
    assert search.best_estimator_[-1].n_threads_ == thread_budget()  # the refit runs here, with all threads


def test_thread_budget_follows_the_process_limits(monkeypatch):
    import fastnn

    monkeypatch.delenv("FASTNN_NUM_THREADS", raising=False)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    assert thread_budget() == fastnn.get_num_threads()
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    assert thread_budget() == 1
    assert thread_budget(3) == 3
    monkeypatch.setenv("FASTNN_NUM_THREADS", str(fastnn.get_num_threads()))
    assert thread_budget() == fastnn.get_num_threads()  # fastnn's own setting wins
    with pytest.raises(ValueError, match="n_threads must be a positive integer"):
        thread_budget(0)


def test_set_output_pipelines_feed_the_estimators(data):
    """set_output configures the transformers of a pipeline; the estimators take what those give."""
    X, y = data
    pipe = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipe.set_output(transform="default").fit(X, y)
    assert pipe.predict(X[:4]).shape == (4,)


def test_dataframes_from_set_output_record_feature_names(data):
    pd = pytest.importorskip("pandas")
    X, y = data
    pipe = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0))
    columns = [f"pixel{i}" for i in range(X.shape[1])]
    frame = pd.DataFrame(X, columns=columns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipe.set_output(transform="pandas").fit(frame, y)
    assert list(pipe[-1].feature_names_in_) == columns
    assert pipe.predict(frame.iloc[:4]).shape == (4,)


def test_unpickled_module_and_optimizer_still_train_together(data):
    X, y = data
    net = NeuralNetClassifier(max_epochs=1, batch_size=100, warm_start=True, random_state=0).fit(X, y)
    copy = pickle.loads(pickle.dumps(net))
    params = copy.module_.parameters()
    assert all(p is q for p, q in zip(copy.optimizer_.params, params))  # one set of parameters, shared
    assert copy.optimizer_.step_count == 4
    before = [p.data.copy() for p in params]
    copy.fit(X, y)
    assert copy.optimizer_.step_count == 8  # Adam's state went on from where it was
    assert all(not np.array_equal(b, p.data) for b, p in zip(before, params))
