"""Test scores of fastnn's MLPs (default float32) against scikit-learn's, median over five seeds.

Both get the same standardised data and default settings, with ``max_iter``
budgets under scikit-learn's default where that changes nothing but time
(digits: 100 epochs). Budget: about 25 s on a busy 2-core machine, most of
it scikit-learn's own fits (one BLAS thread, so that the time stays bounded).
"""

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn import datasets
from sklearn import neural_network as sknn
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from fastnn.sklearn import MLPClassifier, MLPRegressor

SEEDS = range(5)

CASES = [
    # name, loader, classification, max_iter
    ("digits", datasets.load_digits, True, 100),
    ("breast_cancer", datasets.load_breast_cancer, True, 200),
    ("iris", datasets.load_iris, True, 200),
    ("wine", datasets.load_wine, True, 200),
    ("diabetes", datasets.load_diabetes, False, 200),
    ("friedman1", lambda return_X_y: datasets.make_friedman1(1000, random_state=0), False, 200),
]


def _split(X, y, seed, classification):
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, random_state=seed, stratify=y if classification else None)
    scaler = StandardScaler().fit(X_tr)
    X_tr, X_te = scaler.transform(X_tr), scaler.transform(X_te)
    if not classification:  # standardised targets: the default learning rate suits them
        mean, std = y_tr.mean(), y_tr.std()
        y_tr, y_te = (y_tr - mean) / std, (y_te - mean) / std
    return X_tr, X_te, y_tr, y_te


@pytest.mark.slow
@pytest.mark.parametrize("name,load,classification,max_iter", CASES, ids=[c[0] for c in CASES])
def test_test_scores_match_sklearn(name, load, classification, max_iter):
    from threadpoolctl import threadpool_limits

    X, y = load(return_X_y=True)
    ours, theirs = [], []
    sk_cls, fast_cls = (sknn.MLPClassifier, MLPClassifier) if classification else (sknn.MLPRegressor, MLPRegressor)
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("ignore")
        for seed in SEEDS:
            X_tr, X_te, y_tr, y_te = _split(X, y, seed, classification)
            theirs.append(sk_cls(max_iter=max_iter, random_state=seed).fit(X_tr, y_tr).score(X_te, y_te))
            # the backend is not what this test is about: Numba's is fast on every CPU
            fast = fast_cls(max_iter=max_iter, random_state=seed, backend="numba").fit(X_tr, y_tr)
            assert fast.coefs_[0].dtype == np.float32
            ours.append(fast.score(X_te, y_te))
    tolerance = 0.01  # 1 percentage point of accuracy, or 0.01 of R²
    assert abs(np.median(ours) - np.median(theirs)) <= tolerance, (ours, theirs)
    assert np.median(theirs) > (0.9 if name != "diabetes" else 0.3)  # both learned something
