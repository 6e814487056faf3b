"""NeuralNetClassifier / NeuralNetRegressor: fastnn modules in scikit-learn's model selection.

A small CNN on 8x8 digits goes through ``Pipeline``, ``cross_val_score`` and
``GridSearchCV`` over a nested module parameter; a GRU regresses sequences.
Few epochs on a few hundred images: a few seconds in all.
"""

import copy
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fastnn import nn, optim
from fastnn.sklearn import NeuralNetClassifier, NeuralNetRegressor


def small_cnn(channels=4, n_classes=10):
    """conv3x3 - ReLU - maxpool - linear on 1x8x8 images."""
    return nn.Sequential(
        nn.Conv2d(1, channels, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(channels * 16, n_classes),
    )


def gru_regressor(hidden=12):
    return nn.Sequential(nn.GRU(1, hidden, batch_first=True), nn.LastTimeStep(batch_first=True), nn.Linear(hidden, 1))


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:500].astype(np.float32), y[:500]


def test_nested_parameters_round_trip_through_clone():
    net = NeuralNetClassifier(small_cnn, module__channels=6, optimizer="sgd", optimizer__momentum=0.9, lr=0.05)
    params = net.get_params()
    assert params["module__channels"] == 6 and params["optimizer__momentum"] == 0.9 and params["lr"] == 0.05
    twin = clone(net)
    assert twin.get_params()["module__channels"] == 6 and twin is not net
    twin.set_params(module__channels=2, lr=0.1, criterion__reduction="sum")
    assert (twin.module__channels, twin.lr, twin.criterion__reduction) == (2, 0.1, "sum")
    assert net.module__channels == 6
    misspelt = NeuralNetClassifier().set_params(max_epoch=3)  # stored; refused by fit, like every parameter
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_epoch'"):
        misspelt.fit(np.zeros((4, 2)), [0, 1, 0, 1])


def test_misspelt_keyword_is_refused_at_fit():
    net = NeuralNetClassifier(modul__channels=3)  # scikit-learn's rule: __init__ checks nothing
    with pytest.raises(TypeError, match="unexpected keyword argument 'modul__channels'"):
        net.fit(np.zeros((4, 2)), [0, 1, 0, 1])


def test_cnn_in_pipeline_cross_val_and_grid_search(digits):
    X, y = digits
    pipe = make_pipeline(
        StandardScaler(), NeuralNetClassifier(small_cnn, input_shape=(1, 8, 8), max_epochs=8, lr=0.01, random_state=0)
    )
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.8
    search = GridSearchCV(pipe, {"neuralnetclassifier__module__channels": [1, 6]}, cv=2).fit(X, y)
    # six channels see more than one: the search must find that
    assert search.best_params_ == {"neuralnetclassifier__module__channels": 6}
    best = search.best_estimator_[-1]
    assert best.module_[0].out_channels == 6 and best.n_iter_ == 8 and len(best.loss_curve_) == 8
    proba = search.predict_proba(X[:7])
    assert proba.shape == (7, 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(search.predict(X[:7]), best.classes_[proba.argmax(axis=1)])


def test_rnn_regressor_on_sequences():
    rng = np.random.default_rng(0)
    t = np.linspace(0, 1, 16)
    freq, phase = rng.uniform(1, 3, (300, 1)), rng.uniform(0, 1, (300, 1))
    X = np.sin(2 * np.pi * (freq * t + phase))[..., None].astype(np.float32)  # (N, T, 1)
    y = np.sin(2 * np.pi * (freq[:, 0] * 1.1 + phase[:, 0]))  # the next value
    reg = NeuralNetRegressor(gru_regressor, max_epochs=15, lr=0.02, random_state=0).fit(X[:240], y[:240])
    assert reg.n_features_in_ == 16 and reg.predict(X[240:]).shape == (60,)
    assert reg.score(X[240:], y[240:]) > 0.8
    assert reg.loss_curve_[-1] < 0.3 * reg.loss_curve_[0]


def test_module_instance_is_copied_not_trained_in_place(digits):
    X, y = digits
    module = small_cnn(3)
    before = copy.deepcopy(module.state_dict())
    net = NeuralNetClassifier(module, input_shape=(1, 8, 8), max_epochs=2, random_state=0).fit(X, y)
    for key, value in module.state_dict().items():
        np.testing.assert_array_equal(value, before[key])
    assert net.module_ is not module
    assert any(not np.array_equal(v, before[k]) for k, v in net.module_.state_dict().items())


def test_random_state_repeats_a_fit_and_warm_start_continues(digits):
    X, y = digits
    params = dict(module__hidden_layer_sizes=(16,), max_epochs=3, random_state=5)
    a = NeuralNetClassifier(**params).fit(X, y)
    b = NeuralNetClassifier(**params).fit(X, y)
    for (_ka, va), (_kb, vb) in zip(a.module_.state_dict().items(), b.module_.state_dict().items()):
        np.testing.assert_array_equal(va, vb)
    warm = NeuralNetClassifier(warm_start=True, **params).fit(X, y)
    first = warm.module_
    warm.fit(X, y)
    assert warm.module_ is first and len(warm.history_["loss"]) == 6
    assert warm.history_["loss"][5] < warm.history_["loss"][0]


def test_binary_logit_and_optimizer_classes(digits):
    X, y = digits
    odd = np.where(y % 2, "odd", "even")
    net = NeuralNetClassifier(
        criterion="bce_with_logits", optimizer=optim.SGD, optimizer__momentum=0.9, lr=0.01, max_epochs=5, random_state=0
    ).fit(X / 16, odd)
    assert net.module_[-1].out_features == 1 and isinstance(net.optimizer_, optim.SGD)
    assert net.optimizer_.momentum == 0.9
    assert set(net.predict(X)) <= {"odd", "even"} and net.score(X / 16, odd) > 0.8
    np.testing.assert_allclose(net.predict_proba(X[:5] / 16).sum(axis=1), 1.0)


def test_validation_and_early_stopping(digits):
    X, y = digits
    net = NeuralNetClassifier(max_epochs=200, validation_fraction=0.2, early_stopping=2, lr=0.01, random_state=0).fit(
        X / 16, y
    )
    assert net.n_iter_ < 200 and len(net.history_["val_loss"]) == net.n_iter_


@pytest.mark.parametrize(
    "params,error,match",
    [
        (dict(module=lambda: "not a module"), TypeError, "not a fastnn Module"),
        (dict(input_shape=(2, 8, 8)), ValueError, r"input_shape=\(2, 8, 8\) holds 128 values per sample but X has 64"),
        (dict(optimizer="lbfgs"), ValueError, "unknown optimizer 'lbfgs'"),
        (dict(criterion="hinge"), ValueError, "unknown criterion 'hinge'"),
        (dict(early_stopping=3), ValueError, "early_stopping needs validation_fraction"),
    ],
)
def test_bad_recipes_raise_clear_errors(params, error, match, digits):
    X, y = digits
    with pytest.raises(error, match=match):
        NeuralNetClassifier(max_epochs=1, **params).fit(X, y)
    with pytest.raises(ValueError, match="at least two classes"):
        NeuralNetClassifier(max_epochs=1).fit(X[:5], np.zeros(5))
    sp = pytest.importorskip("scipy.sparse")
    with pytest.raises(TypeError, match="dense data is required"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            NeuralNetClassifier(max_epochs=1).fit(sp.csr_matrix(X), y)
