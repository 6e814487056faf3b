"""scikit-learn estimators trained by fastnn.

Drop-in replacements for scikit-learn's multi-layer perceptrons::

    from fastnn.sklearn import MLPClassifier      # instead of sklearn.neural_network
    clf = MLPClassifier(hidden_layer_sizes=(100,), random_state=0).fit(X, y)

:class:`MLPClassifier` and :class:`MLPRegressor` take scikit-learn's
parameters, reproduce its algorithm (initialisation, batches, loss, L2 term,
SGD/Adam updates, schedules, stopping rules) and expose its fitted
attributes; with ``dtype="float64"`` they give its weights to round-off.
Extra keyword-only parameters add what scikit-learn's do not have: dropout,
class weights, float32 training (the default), the backend and thread
count, AdamW, callbacks and a time budget.

:class:`NeuralNetClassifier` and :class:`NeuralNetRegressor` put any
``fastnn.nn`` module (a CNN on images, an RNN on sequences) into
scikit-learn's API, so that it works with ``GridSearchCV``,
``cross_val_score`` and ``Pipeline``; nested parameters such as
``module__hidden`` or ``optimizer__momentum`` are grid-searchable.

This module needs scikit-learn (``pip install "fastnn[sklearn]"``);
``import fastnn`` does not import it.
"""

try:
    import sklearn  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "fastnn.sklearn needs scikit-learn: pip install 'fastnn[sklearn]' (or pip install scikit-learn)"
    ) from exc

from ._mlp import MLPClassifier, MLPRegressor
from ._neuralnet import NeuralNetClassifier, NeuralNetRegressor

__all__ = ["MLPClassifier", "MLPRegressor", "NeuralNetClassifier", "NeuralNetRegressor"]
