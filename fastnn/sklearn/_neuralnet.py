"""``NeuralNetClassifier`` and ``NeuralNetRegressor``: any fastnn module as a scikit-learn estimator.

The estimator holds a *recipe* (the module, the loss, the optimizer and their
settings) and builds the network at ``fit``; training runs through
:func:`fastnn.fit`, predictions through :func:`fastnn.predict`. Settings of
the parts are nested parameters, as in skorch::

    net = NeuralNetClassifier(MyCNN, module__channels=8, optimizer="sgd", optimizer__momentum=0.9,
                              lr=0.05, max_epochs=20, input_shape=(1, 8, 8))
    GridSearchCV(net, {"module__channels": [8, 16], "lr": [0.01, 0.05]}, cv=3).fit(X, y)

``module`` is a ``fastnn.nn.Module`` instance (copied at every fit, so the
estimator's parameter is never trained in place), a Module class or any
callable returning a Module (called with the ``module__`` parameters; a
parameter named ``n_features_in``, ``n_outputs`` or ``n_classes`` that is not
given is filled in from the data), or None for an MLP
(``module__hidden_layer_sizes``, default (100,); ``module__activation``).
"""

from __future__ import annotations

import copy
import inspect

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, is_classifier
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

import fastnn
from fastnn import nn, optim

from ._compat import pack_parts, store_init_params, unpack_parts, validate_data
from ._runtime import check_n_threads, runtime

__all__ = ["NeuralNetClassifier", "NeuralNetRegressor"]

_PREFIXES = ("module__", "optimizer__", "criterion__")
_OPTIMIZERS = {"sgd": optim.SGD, "adam": optim.Adam, "adamw": optim.AdamW}
_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "logistic": nn.Sigmoid, "identity": None}
#: Rows per forward pass in predictions.
PREDICT_BATCH = 1024


def mlp_module(n_features_in, n_outputs, hidden_layer_sizes=(100,), activation="relu", dtype="float32"):
    """The default module: ``Linear - act - ... - Linear`` (PyTorch's initialisation)."""
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    sizes = [hidden_layer_sizes] if np.isscalar(hidden_layer_sizes) else list(hidden_layer_sizes)
    units = [int(n_features_in)] + [int(s) for s in sizes] + [int(n_outputs)]
    mods = []
    for i in range(len(units) - 1):
        mods.append(nn.Linear(units[i], units[i + 1], dtype=dtype))
        if i < len(units) - 2 and _ACTIVATIONS[activation] is not None:
            mods.append(_ACTIVATIONS[activation]())
    return nn.Sequential(*mods)


class _BaseNeuralNet(BaseEstimator):
    """The recipe, the nested parameters and the training shared by both estimators."""

    def __init__(
        self,
        module=None,
        *,
        criterion=None,
        optimizer="adam",
        lr=0.001,
        max_epochs=100,
        batch_size=32,
        shuffle=True,
        validation_fraction=None,
        early_stopping=None,
        clip_grad_norm=None,
        input_shape=None,
        dtype=None,
        backend=None,
        n_threads=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        **kwargs,
    ):
        store_init_params(self, locals())
        # checked at fit, as every parameter (scikit-learn's convention)
        for key, value in kwargs.items():
            setattr(self, key, value)

    # -- nested parameters --------------------------------------------------
    def _extra_names(self):
        """Keyword arguments beyond the signature: the nested parameters (and any misspelt one, refused at fit)."""
        declared = set(self._get_param_names())
        return [k for k in self.__dict__ if not k.startswith("_") and not k.endswith("_") and k not in declared]

    def get_params(self, deep=True):
        """The estimator's parameters, with the nested ``module__``/``optimizer__``/``criterion__`` ones."""
        params = super().get_params(deep=deep)
        params.update((k, self.__dict__[k]) for k in self._extra_names())
        return params

    def set_params(self, **params):
        """Set parameters; ``module__x``, ``optimizer__x``, ``criterion__x`` configure the parts at the next fit."""
        declared = set(self._get_param_names())
        plain = {}
        for key, value in params.items():
            if key in declared:
                plain[key] = value
            else:
                setattr(self, key, value)
        if plain:
            super().set_params(**plain)
        return self

    def _nested(self, prefix):
        return {k[len(prefix) :]: v for k, v in self.__dict__.items() if k.startswith(prefix)}

    # -- building -------------------------------------------------------------
    def _check_params(self):
        for key in self._extra_names():
            if not key.startswith(_PREFIXES):
                raise TypeError(
                    f"{type(self).__name__}() got an unexpected keyword argument {key!r} (nested "
                    f"parameters start with {', '.join(_PREFIXES)})"
                )
        if (
            not isinstance(self.max_epochs, (int, np.integer))
            or isinstance(self.max_epochs, bool)
            or self.max_epochs < 0
        ):
            raise ValueError(f"max_epochs must be a non-negative integer, got {self.max_epochs!r}")
        if (
            not isinstance(self.batch_size, (int, np.integer))
            or isinstance(self.batch_size, bool)
            or self.batch_size < 1
        ):
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if (
            isinstance(self.lr, bool)
            or not isinstance(self.lr, (int, float, np.floating, np.integer))
            or not self.lr >= 0
        ):
            raise ValueError(f"lr must be a non-negative number, got {self.lr!r}")
        if self.validation_fraction is not None and not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1) or None, got {self.validation_fraction!r}")
        if self.early_stopping is not None and self.validation_fraction is None:
            raise ValueError("early_stopping needs validation_fraction (the data it monitors)")
        if self.backend not in (None, "auto", "numpy", "numba", "cython"):
            raise ValueError(f"backend must be None, 'auto', 'numpy', 'numba' or 'cython', got {self.backend!r}")
        check_n_threads(self.n_threads)
        if self.dtype is not None and np.dtype(self.dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"dtype must be None, 'float32' or 'float64', got {self.dtype!r}")

    def _build_module(self, X, n_outputs, seed):
        spec = self.module
        kwargs = self._nested("module__")
        if isinstance(spec, nn.Module):
            if kwargs:
                raise ValueError(
                    f"module__ parameters ({', '.join(kwargs)}) need a module class or factory, not a module instance"
                )
            return copy.deepcopy(spec)
        n_features = int(np.prod(X.shape[1:]))
        if spec is None:
            factory = mlp_module
            if self.dtype is not None:
                kwargs.setdefault("dtype", np.dtype(self.dtype).name)
        elif callable(spec):
            factory = spec
        else:
            raise TypeError(
                f"module must be a fastnn Module, a Module class, a callable returning a Module or None, got {spec!r}"
            )
        try:
            names = inspect.signature(factory).parameters
        except (TypeError, ValueError):
            names = {}
        inferred = {"n_features_in": n_features, "n_outputs": n_outputs, "n_classes": n_outputs}
        for name, value in inferred.items():
            if name in names and name not in kwargs:
                kwargs[name] = value
        with _seeded(seed):
            module = factory(**kwargs)
        if not isinstance(module, nn.Module):
            raise TypeError(f"module {spec!r} returned {type(module).__name__}, not a fastnn Module")
        return module

    def _build_criterion(self):
        spec = self.criterion
        kwargs = self._nested("criterion__")
        if spec is None:
            spec = self._default_criterion
        if isinstance(spec, str):
            try:
                spec = nn.loss.LOSSES[spec]
            except KeyError:
                raise ValueError(
                    f"unknown criterion {spec!r}; choose one of {sorted(nn.loss.LOSSES)} or pass a fastnn loss"
                ) from None
        if isinstance(spec, nn.Loss):
            if kwargs:
                raise ValueError("criterion__ parameters need a loss class, not a loss instance")
            return copy.deepcopy(spec)
        if isinstance(spec, type) and issubclass(spec, nn.Loss):
            return spec(**kwargs)
        raise TypeError(f"criterion must be a fastnn loss, a loss class, a loss name or None, got {spec!r}")

    def _build_optimizer(self, module):
        spec = self.optimizer
        kwargs = self._nested("optimizer__")
        if isinstance(spec, str):
            try:
                spec = _OPTIMIZERS[spec.lower()]
            except KeyError:
                raise ValueError(
                    f"unknown optimizer {self.optimizer!r}; choose one of {sorted(_OPTIMIZERS)} or pass "
                    f"a fastnn.optim class"
                ) from None
        if not (isinstance(spec, type) and issubclass(spec, optim.Optimizer)):
            raise TypeError(f"optimizer must be a name or a fastnn.optim.Optimizer class, got {spec!r}")
        return spec(module.parameters(), lr=float(self.lr), **kwargs)

    def _reshape(self, X):
        if self.input_shape is None:
            return X
        shape = tuple(int(s) for s in np.atleast_1d(self.input_shape))
        if int(np.prod(shape)) != int(np.prod(X.shape[1:])):
            raise ValueError(
                f"input_shape={shape} holds {int(np.prod(shape))} values per sample but X has "
                f"{int(np.prod(X.shape[1:]))} (shape {X.shape})"
            )
        return X.reshape((X.shape[0],) + shape)

    # -- training -------------------------------------------------------------
    def _fit_encoded(self, X, y, n_outputs):
        """Train on prepared ``X`` and encoded targets ``y``."""
        self._check_params()
        rs = check_random_state(self.random_state)
        seed = int(rs.randint(np.iinfo(np.int32).max))
        X = self._reshape(X)
        fresh = not (self.warm_start and hasattr(self, "module_"))
        if fresh:
            module = self._build_module(X, n_outputs, seed)
            if self.dtype is not None:
                module.to(np.dtype(self.dtype))
            self.module_ = module
            self.criterion_ = self._build_criterion()
            self.optimizer_ = self._build_optimizer(module)
            self.history_ = {}
        validation = None
        if self.validation_fraction is not None:
            stratify = y if is_classifier(self) and len(np.unique(y)) > 1 else None
            X, X_val, y, y_val = train_test_split(
                X, y, test_size=self.validation_fraction, random_state=rs, stratify=stratify
            )
            validation = (X_val, y_val)
        early = None
        if self.early_stopping is not None:
            early = fastnn.EarlyStopping(patience=int(self.early_stopping))
        with runtime(self.backend, self.n_threads) as n_threads:
            self.n_threads_ = n_threads
            history = fastnn.fit(
                self.module_,
                X,
                y,
                loss=self.criterion_,
                optimizer=self.optimizer_,
                epochs=int(self.max_epochs),
                batch_size=int(self.batch_size),
                validation_data=validation,
                shuffle=bool(self.shuffle),
                seed=seed,
                early_stopping=early,
                progress=False,
                clip_grad_norm=self.clip_grad_norm,
                verbose=bool(self.verbose),
            )
        for key, values in history.history.items():
            self.history_.setdefault(key, []).extend(values)
        self.n_iter_ = history.epochs
        self.loss_curve_ = self.history_["loss"]
        return self

    def _output(self, X):
        """Raw module outputs for ``X`` (validated against the fit)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, allow_nd=True, dtype=(np.float32, np.float64))
        X = self._reshape(X)
        with runtime(self.backend, self.n_threads):
            return fastnn.predict(self.module_, X, batch_size=PREDICT_BATCH)

    def _validate_fit_data(self, X, y, **kwargs):
        return validate_data(self, X, y, allow_nd=True, dtype=(np.float32, np.float64), **kwargs)

    def __getstate__(self):
        return pack_parts(dict(super().__getstate__()), ("module_", "optimizer_", "criterion_"))

    def __setstate__(self, state):
        super().__setstate__(unpack_parts(dict(state)))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        return tags


class _seeded:
    """Seed fastnn's initialisation generator for building a module, then restore the previous one."""

    def __init__(self, seed):
        self.seed = seed

    def __enter__(self):
        from fastnn.nn import init

        # fastnn.nn.init offers manual_seed() but no way to put a generator back:
        # keep the current one so that fitting leaves the user's seeding alone
        self.previous = init._rng
        init.manual_seed(self.seed)

    def __exit__(self, *exc):
        from fastnn.nn import init

        init._rng = self.previous
        return False


_DOC_PARAMS = """
    Parameters
    ----------
    module : fastnn.nn.Module, Module class, callable or None, default None
        The network. An instance is deep-copied at every fit; a class or
        callable is called with the ``module__`` parameters (and with
        ``n_features_in``, ``n_outputs``/``n_classes`` when it takes them);
        None builds an MLP (``module__hidden_layer_sizes`` (100,),
        ``module__activation`` "relu").
    criterion : fastnn loss, loss class, name or None
        Default: {criterion}. A class gets the ``criterion__`` parameters.
    optimizer : {{"adam", "sgd", "adamw"}} or a fastnn.optim class, default "adam"
        Built with ``lr`` and the ``optimizer__`` parameters
        (``optimizer__momentum=0.9`` ...).
    lr : float, default 0.001
    max_epochs : int, default 100
    batch_size : int, default 32
    shuffle : bool, default True
    validation_fraction : float in (0, 1), optional
        Hold this fraction out (stratified for classifiers) and report
        ``val_loss`` in ``history_``.
    early_stopping : int, optional
        Patience in epochs on the validation loss (needs
        ``validation_fraction``); the best weights are restored.
    clip_grad_norm : float, optional
    input_shape : tuple of int, optional
        Reshape each sample to this shape before the module (2-D data from a
        Pipeline into a CNN: ``input_shape=(1, 8, 8)``).
    dtype : {{None, "float32", "float64"}}
        Convert the module to this dtype (None: keep the module's).
    backend, n_threads : as :class:`fastnn.sklearn.MLPClassifier`
    random_state : int, RandomState or None
        Seeds the initialisation of a built module and the shuffling.
    warm_start : bool, default False
        Continue training the fitted module (and its optimizer) at the next fit.
    verbose : int, default 0
    **kwargs
        Nested parameters: ``module__*``, ``optimizer__*``, ``criterion__*``.

    Attributes
    ----------
    module_ : fastnn.nn.Module, the trained network
    criterion_, optimizer_ : the loss and optimizer used
    history_ : dict of str to list of float
        Per-epoch ``loss`` (and ``accuracy``, ``val_loss`` ...), as
        :func:`fastnn.fit` records them, over every fit of a warm start.
    loss_curve_ : list of float, ``history_["loss"]``
    n_iter_ : int, epochs of the last fit
    n_features_in_, feature_names_in_ : as scikit-learn's
    n_threads_ : int, threads the last fit ran with
"""


class NeuralNetClassifier(ClassifierMixin, _BaseNeuralNet):
    __doc__ = f"""A fastnn module as a scikit-learn classifier (binary or multi-class).

    The module maps a batch to one logit per class (with the default
    cross-entropy loss), or to one logit for a binary problem trained with
    ``criterion="bce_with_logits"``.
{_DOC_PARAMS.format(criterion="nn.CrossEntropyLoss()")}    classes_ : ndarray, the class labels

    Examples
    --------
    >>> from fastnn.sklearn import NeuralNetClassifier
    >>> from sklearn.model_selection import GridSearchCV
    >>> search = GridSearchCV(NeuralNetClassifier(max_epochs=20),
    ...                       {{"module__hidden_layer_sizes": [(32,), (64,)], "lr": [1e-3, 1e-2]}}, cv=3)
    """

    _default_criterion = nn.CrossEntropyLoss

    def fit(self, X, y):
        """Train the module on ``X`` and class labels ``y``; returns self."""
        X, y = self._validate_fit_data(X, y)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if self.warm_start and hasattr(self, "classes_"):
            if not np.isin(np.unique(y), self.classes_).all():
                raise ValueError(
                    f"warm_start needs the classes of the first fit ({self.classes_}); y has {np.unique(y)}"
                )
            encoded = np.searchsorted(self.classes_, y)
        else:
            encoder = LabelEncoder().fit(y)
            if len(encoder.classes_) < 2:
                raise ValueError(
                    f"{type(self).__name__} needs at least two classes in y, got one class: {encoder.classes_[0]!r}"
                )
            self.classes_ = encoder.classes_
            encoded = encoder.transform(y)
        criterion = self.criterion
        binary_logit = (
            isinstance(criterion, nn.BCEWithLogitsLoss)
            or criterion == "bce_with_logits"
            or (isinstance(criterion, type) and issubclass(criterion, nn.BCEWithLogitsLoss))
        )
        if binary_logit and len(self.classes_) > 2:
            raise ValueError("criterion bce_with_logits is for two classes; use cross-entropy for more")
        n_outputs = 1 if binary_logit else len(self.classes_)
        target = encoded.astype(np.float64) if binary_logit else encoded.astype(np.intp)
        return self._fit_encoded(X, target, n_outputs)

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes), columns ordered as ``classes_``."""
        out = np.asarray(self._output(X), dtype=np.float64)
        if out.ndim == 1 or out.shape[1] == 1:
            p = 1.0 / (1.0 + np.exp(-out.reshape(-1)))
            return np.column_stack([1 - p, p])
        out = out - out.max(axis=1, keepdims=True)
        np.exp(out, out=out)
        out /= out.sum(axis=1, keepdims=True)
        return out

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        """Predicted class labels, shape (n_samples,)."""
        out = self._output(X)
        if out.ndim == 1 or out.shape[1] == 1:
            return self.classes_[(out.reshape(-1) > 0).astype(np.intp)]
        return self.classes_[np.argmax(out, axis=1)]


class NeuralNetRegressor(RegressorMixin, _BaseNeuralNet):
    __doc__ = f"""A fastnn module as a scikit-learn regressor (one or several outputs).
{_DOC_PARAMS.format(criterion="nn.MSELoss()")}
    Examples
    --------
    >>> from fastnn.sklearn import NeuralNetRegressor
    >>> reg = NeuralNetRegressor(module__hidden_layer_sizes=(64,), lr=0.01, max_epochs=50)
    """

    _default_criterion = nn.MSELoss

    def fit(self, X, y):
        """Train the module on ``X`` and targets ``y`` of shape (n,) or (n, n_outputs); returns self."""
        X, y = self._validate_fit_data(X, y, multi_output=True, y_numeric=True)
        y = np.asarray(y, dtype=np.float64)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        self._y_1d = y.ndim == 1
        n_outputs = 1 if y.ndim == 1 else y.shape[1]
        return self._fit_encoded(X, y, n_outputs)

    def predict(self, X):
        """Predicted values, shape (n_samples,) or (n_samples, n_outputs)."""
        out = self._output(X)
        if self._y_1d and out.ndim == 2 and out.shape[1] == 1:
            return out.reshape(-1)
        return out
