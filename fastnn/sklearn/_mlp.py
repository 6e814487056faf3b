"""``MLPClassifier`` and ``MLPRegressor``: scikit-learn's estimators, trained by fastnn.

The constructor parameters, fitted attributes, methods, stopping rules and
warnings are scikit-learn's (1.9); the algorithm is too, step by step:
Glorot initialisation drawn from the same ``RandomState``, the same
shuffling and batches, the same loss and L2 term, the same SGD/Adam updates
and learning-rate schedules (see :mod:`fastnn.sklearn._solvers`). The
forward and backward passes run on fastnn's fused kernels, in float32 by
default (``dtype="float64"`` reproduces scikit-learn to round-off); on a
compiled backend whole epochs run in one compiled training plan
(:mod:`fastnn.sklearn._plan`), the same steps without Python between them.

``coefs_[i]`` is a transposed view of the i-th ``Linear`` weight (fastnn,
like PyTorch, stores (out, in)); writing into it, replacing one of its
arrays or assigning a new list all reach the network before the next call.
"""

from __future__ import annotations

import time
import warnings
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state, column_or_1d
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import type_of_target, unique_labels
from sklearn.utils.validation import check_is_fitted

import fastnn

from ._compat import check_sample_weight, pack_parts, store_init_params, unpack_parts, validate_data
from ._network import ACTIVATIONS, Head, build_network, glorot_init, linear_layers
from ._plan import CompiledSteps
from ._runtime import check_n_threads, runtime
from ._solvers import make_solver, minimize_lbfgs

__all__ = ["MLPClassifier", "MLPRegressor"]

_STOCHASTIC = ("sgd", "adam", "adamw")
_SOLVERS = ("lbfgs",) + _STOCHASTIC
_BACKENDS = (None, "auto", "numpy", "numba", "cython")
#: Rows per forward pass in predictions: large enough for the GEMMs to run
#: at speed (and use threads), small enough for the activations to stay in cache.
PREDICT_BATCH = 2048
#: Rows per densified chunk of sparse input in full-batch (L-BFGS) passes.
SPARSE_CHUNK = 1024


def _number(value, name, low=None, high=None, low_open=False, high_open=False, integer=False):
    kind = Integral if integer else Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(
            f"The '{name}' parameter must be {'an int' if integer else 'a float'}"
            f"{' in ' + _range(low, high, low_open, high_open) if low is not None else ''}. "
            f"Got {value!r} instead."
        )
    bad = (
        (low is not None and (value < low or (low_open and value == low)))
        or (high is not None and (value > high or (high_open and value == high)))
        or value != value
    )
    if bad:
        raise ValueError(
            f"The '{name}' parameter must be in the range {_range(low, high, low_open, high_open)}. "
            f"Got {value!r} instead."
        )
    return value


def _range(low, high, low_open, high_open):
    return (
        f"{'(' if low_open else '['}{low}, {'inf' if high is None else high}{')' if high_open or high is None else ']'}"
    )


def _option(value, name, options):
    if not isinstance(value, str) or value not in options:
        raise ValueError(
            f"The '{name}' parameter must be one of {', '.join(map(repr, options))}. Got {value!r} instead."
        )
    return value


def _flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"The '{name}' parameter must be True or False. Got {value!r} instead.")
    return bool(value)


def _dtype(value):
    try:
        dt = np.dtype(value)
    except TypeError:
        dt = None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"The 'dtype' parameter must be 'float32' or 'float64'. Got {value!r} instead.")
    return dt


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share (scikit-learn's ``BaseMultilayerPerceptron``)."""

    _loss = "log_loss"

    # -- parameters --------------------------------------------------------
    def _check_params(self):
        sizes = self.hidden_layer_sizes
        if not hasattr(sizes, "__iter__"):
            sizes = [sizes]
        sizes = list(sizes)
        for s in sizes:
            if isinstance(s, bool) or not isinstance(s, Integral):
                raise TypeError(f"hidden_layer_sizes must hold positive integers, got {self.hidden_layer_sizes!r}")
        if any(s <= 0 for s in sizes):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {sizes}.")
        _option(self.activation, "activation", tuple(ACTIVATIONS))
        _option(self.solver, "solver", _SOLVERS)
        _number(self.alpha, "alpha", 0)
        if not (isinstance(self.batch_size, str) and self.batch_size == "auto"):
            _number(self.batch_size, "batch_size", 1, integer=True)
        _option(self.learning_rate, "learning_rate", ("constant", "invscaling", "adaptive"))
        _number(self.learning_rate_init, "learning_rate_init", 0, low_open=True)
        _number(self.power_t, "power_t", 0)
        _number(self.max_iter, "max_iter", 1, integer=True)
        _flag(self.shuffle, "shuffle")
        _number(self.tol, "tol", 0)
        if not isinstance(self.verbose, (bool, np.bool_, Integral)):
            raise TypeError(f"The 'verbose' parameter must be a bool or an int. Got {self.verbose!r} instead.")
        _flag(self.warm_start, "warm_start")
        _number(self.momentum, "momentum", 0, 1)
        _flag(self.nesterovs_momentum, "nesterovs_momentum")
        _flag(self.early_stopping, "early_stopping")
        _number(self.validation_fraction, "validation_fraction", 0, 1, high_open=True)
        _number(self.beta_1, "beta_1", 0, 1, high_open=True)
        _number(self.beta_2, "beta_2", 0, 1, high_open=True)
        _number(self.epsilon, "epsilon", 0, low_open=True)
        if not (isinstance(self.n_iter_no_change, Real) and self.n_iter_no_change == np.inf):
            _number(self.n_iter_no_change, "n_iter_no_change", 1, integer=True)
        _number(self.max_fun, "max_fun", 1, integer=True)
        # the extras
        _number(self.dropout, "dropout", 0, 1, high_open=True)
        self._dtype = _dtype(self.dtype)
        if self.backend not in _BACKENDS:
            raise ValueError(f"The 'backend' parameter must be one of {_BACKENDS}. Got {self.backend!r} instead.")
        check_n_threads(self.n_threads)
        _flag(self.keep_optimizer, "keep_optimizer")
        _number(self.weight_decay, "weight_decay", 0)
        if self.max_time is not None:
            _number(self.max_time, "max_time", 0, low_open=True)
        self._callbacks = self._check_callbacks()
        return sizes

    def _check_callbacks(self):
        cbs = self.callbacks
        if cbs is None:
            return []
        if callable(cbs):
            return [cbs]
        try:
            cbs = list(cbs)
        except TypeError:
            raise TypeError(f"callbacks must be a callable or a list of callables, got {cbs!r}") from None
        for cb in cbs:
            if not callable(cb):
                raise TypeError(f"callbacks must be callables, got {cb!r}")
        return cbs

    # -- fitted state --------------------------------------------------------
    def _expose(self):
        """Point ``coefs_``/``intercepts_`` at the network's arrays (``coefs_[i]`` is the weight transposed)."""
        layers = linear_layers(self._network)
        self.coefs_ = [lin.weight.data.T for lin in layers]
        self.intercepts_ = [lin.bias.data for lin in layers]
        self._exposed = (tuple(self.coefs_), tuple(self.intercepts_))

    def _sync(self):
        """Copy ``coefs_``/``intercepts_`` into the network where the user replaced arrays or lists."""
        coefs, intercepts = self.coefs_, self.intercepts_
        seen_c, seen_i = self._exposed
        if (
            len(coefs) == len(seen_c)
            and len(intercepts) == len(seen_i)
            and all(a is b for a, b in zip(coefs, seen_c))
            and all(a is b for a, b in zip(intercepts, seen_i))
        ):
            return
        layers = linear_layers(self._network)
        if len(coefs) != len(layers) or len(intercepts) != len(layers):
            raise ValueError(
                f"coefs_ and intercepts_ must hold {len(layers)} arrays each (one per layer), "
                f"got {len(coefs)} and {len(intercepts)}"
            )
        staged = []
        for i, (lin, c, b) in enumerate(zip(layers, coefs, intercepts)):
            c, b = np.asarray(c), np.asarray(b)
            if c.shape != lin.weight.data.T.shape:
                raise ValueError(f"coefs_[{i}] has shape {c.shape}, expected {lin.weight.data.T.shape}")
            if b.shape != lin.bias.data.shape:
                raise ValueError(f"intercepts_[{i}] has shape {b.shape}, expected {lin.bias.data.shape}")
            staged.append((lin, c, b))
        for lin, c, b in staged:  # all checked: now copy
            np.copyto(lin.weight.data, c.T, casting="unsafe")
            np.copyto(lin.bias.data, b, casting="unsafe")
        self._expose()

    def __getstate__(self):
        state = dict(super().__getstate__())
        exposed = state.pop("_exposed", None)
        if exposed is not None:
            # views of the network's arrays: rebuilt on loading, so that they stay views
            state["coefs_"] = [None if c is e else c for c, e in zip(state["coefs_"], exposed[0])]
            state["intercepts_"] = [None if c is e else c for c, e in zip(state["intercepts_"], exposed[1])]
        return pack_parts(state, ("_network", "_optimizer"))

    def __setstate__(self, state):
        super().__setstate__(unpack_parts(dict(state)))
        if "_network" in self.__dict__ and "coefs_" in self.__dict__:
            coefs, intercepts = self.coefs_, self.intercepts_
            self._expose()
            self.coefs_ = [e if c is None else c for c, e in zip(coefs, self.coefs_)]
            self.intercepts_ = [e if c is None else c for c, e in zip(intercepts, self.intercepts_)]

    # -- training ----------------------------------------------------------
    def _initialize(self, y, layer_units):
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = y.shape[1]
        self.n_layers_ = len(layer_units)
        if not is_classifier(self):
            self.out_activation_ = "exp" if self.loss == "poisson" else "identity"
        elif self._label_binarizer.y_type_ == "multiclass":
            self.out_activation_ = "softmax"
        else:
            self.out_activation_ = "logistic"
        # scikit-learn's draws first, so that dropout changes only the shuffling, not the initial weights
        init = [
            glorot_init(self._random_state, fan_in, fan_out, self.activation)
            for fan_in, fan_out in zip(layer_units[:-1], layer_units[1:])
        ]
        dropout_rng = None
        if self.dropout > 0:
            dropout_rng = np.random.default_rng(self._random_state.randint(np.iinfo(np.int32).max))
        net = build_network(layer_units, self.activation, self._dtype, self.dropout, dropout_rng)
        for lin, (coef, intercept) in zip(linear_layers(net), init):
            np.copyto(lin.weight.data, coef.T, casting="unsafe")
            np.copyto(lin.bias.data, intercept, casting="unsafe")
        self._network = net
        self._head = Head(self.out_activation_, self._dtype)
        self._expose()
        self._best_state = None
        if self.solver in _STOCHASTIC:
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_ = []
                self.validation_loss_curve_ = []
                self.best_validation_score_ = -np.inf
                self.best_loss_ = None
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = None
                self.validation_loss_curve_ = None
                self.best_validation_score_ = None

    def _targets(self, y):
        """Training targets for the head: class indices (softmax) or values of the dtype, 2-D."""
        if self.out_activation_ == "softmax":
            return np.ascontiguousarray(np.argmax(y, axis=1), dtype=np.intp)
        return np.ascontiguousarray(y, dtype=self._dtype)

    def _fit(self, X, y, sample_weight=None, incremental=False):
        sizes = self._check_params()
        first_pass = not hasattr(self, "_network") or (not self.warm_start and not incremental)
        X, y = self._validate_input(X, y, incremental, reset=first_pass)
        n_samples, n_features = X.shape
        if sample_weight is not None:
            sample_weight = check_sample_weight(sample_weight, X)
        sample_weight = self._class_weights(y, sample_weight, incremental)
        if y.ndim == 1:
            y = y.reshape((-1, 1))
        if self._loss == "poisson" and np.any(y < 0):
            raise ValueError("Some value(s) of y are negative which is not allowed for Poisson regression.")
        layer_units = [n_features] + sizes + [y.shape[1]]
        self._random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(y, layer_units)
        else:
            self._check_layer_units(layer_units)
            self._sync()
        with runtime(self.backend, self.n_threads) as n_threads:
            self.n_threads_ = n_threads
            X = self._as_training_input(X)
            if self.solver == "lbfgs":
                self._fit_lbfgs(X, y, sample_weight)
            else:
                self._fit_stochastic(X, y, sample_weight, incremental)
        if not all(
            np.isfinite(lin.weight.data).all() and np.isfinite(lin.bias.data).all()
            for lin in linear_layers(self._network)
        ):
            raise ValueError(
                "Solver produced non-finite parameter weights. The input data may contain large "
                "values and need to be preprocessed."
            )
        return self

    def _check_layer_units(self, layer_units):
        have = [lin.in_features for lin in linear_layers(self._network)]
        have.append(linear_layers(self._network)[-1].out_features)
        if have != list(layer_units):
            raise ValueError(
                f"warm_start and partial_fit continue the fitted network of layer sizes {have}, but "
                f"this data and hidden_layer_sizes give {list(layer_units)}: refit from scratch "
                f"(warm_start=False) to change them"
            )

    def _as_training_input(self, X):
        if sp.issparse(X):
            return sp.csr_matrix(X, dtype=self._dtype)
        return np.ascontiguousarray(X, dtype=self._dtype)

    def _class_weights(self, y, sample_weight, incremental):
        return sample_weight

    def _fit_stochastic(self, X, y, sample_weight, incremental):
        layers = linear_layers(self._network)
        weights = [lin.weight for lin in layers]
        biases = [lin.bias for lin in layers]
        keep = self.warm_start and self.keep_optimizer
        if (
            not hasattr(self, "_optimizer")
            or (not incremental and not keep)
            or getattr(self, "_optimizer_solver", None) != self.solver
        ):
            self._optimizer = make_solver(self.solver, weights, biases, self.get_params())
            self._optimizer_solver = self.solver
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        early_stopping = self.early_stopping
        n_all = X.shape[0]
        if early_stopping:
            # scikit-learn splits with the same RandomState, after the initialisation draws
            should_stratify = is_classifier(self) and self.n_outputs_ == 1
            stratify = y.astype(bool) if should_stratify else None
            train_idx, val_idx = train_test_split(
                np.arange(n_all), random_state=self._random_state, test_size=self.validation_fraction, stratify=stratify
            )
            if val_idx.shape[0] < 2:
                raise ValueError(
                    "The validation set is too small. Increase 'validation_fraction' or the size of your dataset."
                )
            X_val, y_val = X[val_idx], y[val_idx]
            sw_val = None if sample_weight is None else sample_weight[val_idx]
            X, y = X[train_idx], y[train_idx]
            sample_weight = None if sample_weight is None else sample_weight[train_idx]
            val = (X_val, y_val, self._targets(y_val), sw_val)
        else:
            val = None
        targets = self._targets(y)
        n = X.shape[0]
        if self.batch_size == "auto":
            batch_size = min(200, n)
        else:
            if self.batch_size > n:
                warnings.warn(
                    "Got `batch_size` less than 1 or larger than sample size. It is going to be clipped", stacklevel=3
                )
            batch_size = int(np.clip(self.batch_size, 1, n))
        self._run_epochs(X, targets, sample_weight, batch_size, val, incremental)

    def _run_epochs(self, X, targets, sample_weight, batch_size, val, incremental):
        net, head, opt = self._network, self._head, self._optimizer
        alpha = float(self.alpha)
        weights = [lin.weight.data for lin in linear_layers(net)]
        rs = self._random_state
        n = X.shape[0]
        sparse = sp.issparse(X)
        sample_idx = np.arange(n)
        # whole epochs in one compiled plan where it applies (the same steps; see ._plan)
        steps, self._per_step_reason = CompiledSteps.create(net, self.out_activation_, opt, alpha, X, sample_weight)
        shuffled = self.shuffle and not sparse and steps is None
        if shuffled:
            Xs, ts = np.empty_like(X), np.empty_like(targets)
            ws = None if sample_weight is None else np.empty_like(sample_weight)
        else:
            Xs, ts, ws = X, targets, sample_weight
        early_stopping = self.early_stopping
        started = time.perf_counter()
        try:
            with fastnn.workspace(net):
                self.n_iter_ = 0
                for _ in range(self.max_iter):
                    if self.shuffle:
                        perm = np.arange(n)
                        rs.shuffle(perm)
                        sample_idx = sample_idx[perm]
                        if shuffled:  # one gather per epoch; the batches are then contiguous slices
                            np.take(X, sample_idx, axis=0, out=Xs)
                            np.take(targets, sample_idx, axis=0, out=ts)
                            if ws is not None:
                                np.take(sample_weight, sample_idx, axis=0, out=ws)
                    accumulated, first = 0.0, 0
                    if steps is not None:
                        accumulated, stopped = steps.run(X, targets, sample_idx, batch_size)
                        # a non-finite loss stops the plan before that step: the loop below runs the rest
                        first = n if stopped is None else stopped * batch_size
                    for start in range(first, n, batch_size):
                        stop = min(start + batch_size, n)
                        if sparse or steps is not None:
                            rows = sample_idx[start:stop] if self.shuffle else slice(start, stop)
                            xb = X[rows].toarray() if sparse else X[rows]
                            tb = targets[rows]
                            wb = None if sample_weight is None else sample_weight[rows]
                        else:
                            xb, tb = Xs[start:stop], ts[start:stop]
                            wb = None if ws is None else ws[start:stop]
                        sw_sum = float(stop - start) if wb is None else float(wb.sum())
                        z = net.forward(xb)
                        loss, delta = head.loss_and_delta(z, tb, wb, sw_sum, owner=self._head)
                        if alpha:
                            loss += 0.5 * alpha * _squared_norm(weights) / sw_sum
                        net.backward(delta, input_grad=False)
                        opt.step(alpha / sw_sum)
                        accumulated += loss * (stop - start)
                    self._end_epoch(accumulated / n, n, val, started)
                    if self._no_improvement_count > self.n_iter_no_change:
                        if early_stopping:
                            msg = (
                                f"Validation score did not improve more than tol={self.tol:f} for "
                                f"{self.n_iter_no_change:d} consecutive epochs."
                            )
                        else:
                            msg = (
                                f"Training loss did not improve more than tol={self.tol:f} for "
                                f"{self.n_iter_no_change:d} consecutive epochs."
                            )
                        if opt.trigger_stopping(msg, self.verbose):
                            break
                        self._no_improvement_count = 0
                    if self._extras_stop(started):
                        break
                    if incremental:
                        break
                    if self.n_iter_ == self.max_iter:
                        warnings.warn(
                            f"Stochastic Optimizer: Maximum iterations ({self.max_iter:d}) reached and the "
                            "optimization hasn't converged yet.",
                            ConvergenceWarning,
                            stacklevel=4,
                        )
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.", stacklevel=3)
        if early_stopping and self._best_state is not None:
            for lin, (w, b) in zip(linear_layers(net), self._best_state):
                np.copyto(lin.weight.data, w)
                np.copyto(lin.bias.data, b)

    def _end_epoch(self, loss, n, val, started):
        self.n_iter_ += 1
        self.loss_ = loss
        self.t_ += n
        self.loss_curve_.append(loss)
        if self.verbose:
            print(f"Iteration {self.n_iter_:d}, loss = {self.loss_:.8f}")
        self._update_no_improvement_count(val)
        self._optimizer.iteration_ends(self.t_)

    def _update_no_improvement_count(self, val):
        if val is not None:
            X_val, y_val, t_val, sw_val = val
            score, val_loss = self._validation_score(X_val, y_val, t_val, sw_val)
            self.validation_scores_.append(score)
            self.validation_loss_curve_.append(val_loss)
            if self.verbose:
                print(f"Validation score: {self.validation_scores_[-1]:f}")
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_state = [
                    (lin.weight.data.copy(), lin.bias.data.copy()) for lin in linear_layers(self._network)
                ]
        else:
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]

    def _validation_score(self, X_val, y_val, t_val, sw_val):
        """scikit-learn's validation score (accuracy or R²; NaN for non-finite outputs) and the validation loss."""
        z = self._raw_output(X_val)
        val_loss, _ = self._head.loss_and_delta(z, t_val, sw_val, with_delta=False)
        return self._score_outputs(self._head.activate(z), y_val, sw_val), val_loss

    def _extras_stop(self, started):
        """The callbacks and ``max_time``: True stops training after this epoch."""
        elapsed = time.perf_counter() - started
        if self._callbacks:
            info = {
                "epoch": self.n_iter_,
                "loss": self.loss_,
                "elapsed": elapsed,
                "learning_rate": self._optimizer.learning_rate,
                "validation_score": self.validation_scores_[-1] if self.validation_scores_ else None,
                "validation_loss": self.validation_loss_curve_[-1] if self.validation_loss_curve_ else None,
            }
            stop = False
            for cb in self._callbacks:
                stop = bool(cb(self, info)) or stop
            if stop:
                if self.verbose:
                    print("A callback asked to stop. Stopping.")
                return True
        if self.max_time is not None and elapsed >= self.max_time:
            warnings.warn(
                f"Stopped after max_time={self.max_time} s ({self.n_iter_} epochs, {elapsed:.3g} s) before "
                f"the optimization converged.",
                ConvergenceWarning,
                stacklevel=4,
            )
            return True
        return False

    def _fit_lbfgs(self, X, y, sample_weight):
        net, head = self._network, self._head
        layers = linear_layers(net)
        targets = self._targets(y)
        alpha = float(self.alpha)
        n = X.shape[0]
        sw_sum = float(n) if sample_weight is None else float(sample_weight.sum())
        chunk = SPARSE_CHUNK if sp.issparse(X) else n
        # scikit-learn's packing: every coef (in, out) raveled, then every intercept
        sizes = [lin.weight.data.size for lin in layers] + [lin.bias.data.size for lin in layers]
        bounds = np.cumsum([0] + sizes)
        k = len(layers)

        def pack(arrays_w, arrays_b):
            out = np.empty(bounds[-1], np.float64)
            for i, w in enumerate(arrays_w):
                out[bounds[i] : bounds[i + 1]] = w.T.ravel()
            for i, b in enumerate(arrays_b):
                out[bounds[k + i] : bounds[k + i + 1]] = b
            return out

        def unpack(x):
            for i, lin in enumerate(layers):
                np.copyto(
                    lin.weight.data, x[bounds[i] : bounds[i + 1]].reshape(lin.weight.data.T.shape).T, casting="unsafe"
                )
                np.copyto(lin.bias.data, x[bounds[k + i] : bounds[k + i + 1]], casting="unsafe")

        def fun(x):
            unpack(x)
            loss = 0.0
            for start in range(0, n, chunk):
                stop = min(start + chunk, n)
                xb = X[start:stop]
                if sp.issparse(xb):
                    xb = xb.toarray()
                wb = None if sample_weight is None else sample_weight[start:stop]
                z = net.forward(xb)
                part, delta = head.loss_and_delta(z, targets[start:stop], wb, sw_sum, owner=head)
                loss += part
                net.backward(delta, input_grad=False, accumulate=start > 0)
            grads_w = [lin.weight.grad for lin in layers]
            if alpha:
                loss += 0.5 * alpha * _squared_norm([lin.weight.data for lin in layers]) / sw_sum
                grads_w = [g + (alpha / sw_sum) * lin.weight.data for g, lin in zip(grads_w, layers)]
            return loss, pack(grads_w, [lin.bias.grad for lin in layers])

        x0 = pack([lin.weight.data for lin in layers], [lin.bias.data for lin in layers])
        with fastnn.workspace(net):
            x, self.loss_, self.n_iter_ = minimize_lbfgs(fun, x0, self.max_iter, self.max_fun, self.tol, self.verbose)
        unpack(x)

    # -- prediction ----------------------------------------------------------
    def _raw_output(self, X):
        """The last layer's output for prepared input (no validation), (n, n_outputs), a new array."""
        net = self._network
        if not sp.issparse(X):
            return fastnn.predict(net, X, batch_size=PREDICT_BATCH)
        X = X.tocsr()
        parts = [
            fastnn.predict(
                net, X[i : i + PREDICT_BATCH].toarray().astype(self._dtype, copy=False), batch_size=PREDICT_BATCH
            )
            for i in range(0, X.shape[0], PREDICT_BATCH)
        ]
        if not parts:
            return fastnn.predict(net, np.zeros((0, X.shape[1]), self._dtype))
        return np.concatenate(parts)

    def _forward_pass_fast(self, X, check_input=True):
        """Output activations for ``X`` (scikit-learn's method name), shape (n, n_outputs)."""
        if check_input:
            X = validate_data(self, X, accept_sparse=["csr", "csc"], reset=False, dtype=(np.float64, np.float32))
        self._sync()
        with runtime(self.backend, self.n_threads):
            return self._head.activate(self._raw_output(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"multilabel": is_classifier(self)}


def _squared_norm(arrays):
    total = 0.0
    for w in arrays:
        flat = w.ravel()
        total += float(np.dot(flat, flat))
    return total


_COMMON_DOC = """
    hidden_layer_sizes, activation, solver, alpha, batch_size, learning_rate, learning_rate_init, power_t,
    max_iter, shuffle, random_state, tol, verbose, warm_start, momentum, nesterovs_momentum,
    early_stopping, validation_fraction, beta_1, beta_2, epsilon, n_iter_no_change, max_fun
        scikit-learn's parameters, with the same meanings and defaults (see
        ``sklearn.neural_network.{name}``). ``solver`` also accepts
        ``"adamw"``: Adam with decoupled weight decay (``weight_decay``).
    dropout : float in [0, 1), default 0
        Inverted dropout after every hidden activation during training (a
        mask per batch, drawn from a generator seeded by ``random_state``);
        predictions use the whole network.
    dtype : {{"float32", "float64"}}, default "float32"
        Precision of the weights and of the computation. float32 is about
        twice as fast; float64 gives scikit-learn's results to round-off.
        ``coefs_`` and the outputs have this dtype.
    backend : {{None, "auto", "numpy", "numba", "cython"}}, default None
        fastnn backend for this estimator's calls (None: the active one).
    n_threads : int, optional
        Threads for this estimator's calls (fastnn's kernels and BLAS).
        Default: fastnn's thread count, capped by ``OMP_NUM_THREADS``,
        ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS`` or ``NUMBA_NUM_THREADS``
        when the process was started with them (joblib's workers are).
    keep_optimizer : bool, default False
        With ``warm_start=True``, keep the optimizer's state (Adam's moments
        and step count, SGD's velocities and adaptive learning rate) from the
        previous fit instead of starting it afresh as scikit-learn does.
    weight_decay : float, default 0.01
        Decoupled weight decay of ``solver="adamw"`` (ignored otherwise).
    callbacks : callable or list of callables, optional
        Called after every epoch of the stochastic solvers as
        ``callback(estimator, info)``, ``info`` a dict with ``epoch``,
        ``loss``, ``validation_score``, ``validation_loss``,
        ``learning_rate`` and ``elapsed`` (seconds); a callback returning
        True stops training.
    max_time : float, optional
        Stop the stochastic solvers after the epoch during which this many
        seconds have passed (with a ``ConvergenceWarning``).
"""

_ATTRIBUTES_DOC = """
    Attributes
    ----------
    coefs_, intercepts_, loss_, loss_curve_, best_loss_, validation_scores_, best_validation_score_,
    n_iter_, t_, n_features_in_, feature_names_in_, n_layers_, n_outputs_, out_activation_{extra}
        As scikit-learn's. ``coefs_[i]`` (shape (in, out)) is a view of the
        network's weight; writes into it and new arrays assigned to
        ``coefs_``/``intercepts_`` are used by the next call.
    validation_loss_curve_ : list of float or None
        With ``early_stopping``, the loss (without the L2 term) on the
        validation split after every epoch.
    n_threads_ : int
        Threads the last fit ran with.
"""


class MLPClassifier(ClassifierMixin, _BaseMLP):
    __doc__ = f"""Multi-layer perceptron classifier: scikit-learn's ``MLPClassifier``, trained by fastnn.

    A drop-in replacement: same parameters, attributes and methods, same
    algorithm (see :mod:`fastnn.sklearn`). Multi-class, binary and
    multi-label (indicator ``y``) targets behave as scikit-learn's.

    Parameters
    ----------{_COMMON_DOC.format(name="MLPClassifier")}    class_weight : dict, "balanced" or None, default None
        Weights of the classes, multiplied into ``sample_weight``
        (``"balanced"``: ``n_samples / (n_classes * bincount(y))``). Not for
        multi-label targets; ``"balanced"`` not in ``partial_fit``.
{_ATTRIBUTES_DOC.format(extra=", classes_")}
    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from fastnn.sklearn import MLPClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = MLPClassifier(random_state=0).fit(X / 16, y)    # doctest: +SKIP
    """

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        dropout=0.0,
        class_weight=None,
        dtype="float32",
        backend=None,
        n_threads=None,
        keep_optimizer=False,
        weight_decay=0.01,
        callbacks=None,
        max_time=None,
    ):
        store_init_params(self, locals())

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(
            self, X, y, accept_sparse=["csr", "csc"], multi_output=True, dtype=(np.float64, np.float32), reset=reset
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if (not hasattr(self, "classes_")) or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same classes as in the previous "
                        f"call to fit. Previously got {self.classes_}, `y` has {classes}"
                    )
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(
                    f"`y` has classes not in `self.classes_`. `self.classes_` has {self.classes_}. 'y' has {classes}."
                )
        self._y_raw = y
        # bool, as scikit-learn keeps it (its stratified split of the validation data sees this)
        y = self._label_binarizer.transform(y).astype(bool)
        return X, y

    def _class_weights(self, y, sample_weight, incremental):
        y_raw = self.__dict__.pop("_y_raw", None)
        cw = self.class_weight
        if cw is None:
            return sample_weight
        if self._label_binarizer.y_type_.startswith("multilabel"):
            raise ValueError("class_weight is not supported for multi-label targets; pass sample_weight instead")
        if isinstance(cw, str):
            if cw != "balanced":
                raise ValueError(f"class_weight must be 'balanced', a dict or None, got {cw!r}")
            if incremental:
                raise ValueError(
                    "class_weight='balanced' is not supported by partial_fit (the class frequencies of "
                    "one batch are not those of the data): pass a dict computed on the whole data"
                )
        elif not isinstance(cw, dict):
            raise ValueError(f"class_weight must be 'balanced', a dict or None, got {cw!r}")
        from sklearn.utils.class_weight import compute_sample_weight

        weights = compute_sample_weight(cw, y_raw)
        return weights if sample_weight is None else weights * sample_weight

    def fit(self, X, y, sample_weight=None):
        """Fit the model to ``X`` and ``y`` (class labels, or an indicator matrix for multi-label).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    def _check_solver(self):
        if self.solver not in _STOCHASTIC:
            raise AttributeError(
                f"partial_fit is only available for stochastic optimizers. {self.solver} is not stochastic."
            )
        return True

    @available_if(lambda est: est._check_solver())
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """Update the model with one epoch over ``X`` and ``y``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), optional
        classes : array of shape (n_classes,), optional
            Every class of the whole data; required on the first call.

        Returns
        -------
        self
        """
        if _first_partial_fit_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict(self, X):
        """Predicted classes, shape (n_samples,) or (n_samples, n_outputs) for multi-label."""
        check_is_fitted(self)
        return self._predict(X)

    def _predict(self, X, check_input=True):
        y_pred = self._forward_pass_fast(X, check_input=check_input)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        return self._label_binarizer.inverse_transform(y_pred)

    def predict_proba(self, X):
        """Probability of each class (columns ordered as ``classes_``), shape (n_samples, n_classes)."""
        check_is_fitted(self)
        y_pred = self._forward_pass_fast(X)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        if y_pred.ndim == 1:
            return np.vstack([1 - y_pred, y_pred]).T
        return y_pred

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`."""
        y_prob = self.predict_proba(X)
        return np.log(y_prob, out=y_prob)

    def _score_outputs(self, out, y_val, sample_weight):
        if self.n_outputs_ == 1:
            out = out.ravel()
        y_pred = self._label_binarizer.inverse_transform(out)
        if np.issubdtype(y_pred.dtype, np.floating) and not np.isfinite(y_pred).all():
            return np.nan
        y_true = self._label_binarizer.inverse_transform(y_val)
        return accuracy_score(y_true, y_pred, sample_weight=sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    __doc__ = f"""Multi-layer perceptron regressor: scikit-learn's ``MLPRegressor``, trained by fastnn.

    A drop-in replacement: same parameters, attributes and methods, same
    algorithm (see :mod:`fastnn.sklearn`); several outputs are fitted
    together when ``y`` is 2-D.

    Parameters
    ----------
    loss : {{"squared_error", "poisson"}}, default "squared_error"
        As scikit-learn's (half squared error; half Poisson deviance with an
        exponential output).{_COMMON_DOC.format(name="MLPRegressor")}{_ATTRIBUTES_DOC.format(extra="")}
    """

    def __init__(
        self,
        loss="squared_error",
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        dropout=0.0,
        dtype="float32",
        backend=None,
        n_threads=None,
        keep_optimizer=False,
        weight_decay=0.01,
        callbacks=None,
        max_time=None,
    ):
        store_init_params(self, locals())

    def _check_params(self):
        _option(self.loss, "loss", ("squared_error", "poisson"))
        self._loss = self.loss
        return super()._check_params()

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(
            self,
            X,
            y,
            accept_sparse=["csr", "csc"],
            multi_output=True,
            y_numeric=True,
            dtype=(np.float64, np.float32),
            reset=reset,
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return X, y

    def fit(self, X, y, sample_weight=None):
        """Fit the model to ``X`` and ``y`` (one or several outputs).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    def partial_fit(self, X, y, sample_weight=None):
        """Update the model with one epoch over ``X`` and ``y`` (with ``solver="lbfgs"``, as scikit-learn does:
        a whole L-BFGS run from the current weights).

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict(self, X):
        """Predicted values, shape (n_samples,) or (n_samples, n_outputs)."""
        check_is_fitted(self)
        return self._predict(X)

    def _predict(self, X, check_input=True):
        y_pred = self._forward_pass_fast(X, check_input=check_input)
        if y_pred.shape[1] == 1:
            return y_pred.ravel()
        return y_pred

    def _score_outputs(self, out, y_val, sample_weight):
        if out.shape[1] == 1:
            out = out.ravel()
        if not np.isfinite(out).all():
            return np.nan
        return r2_score(y_val, out, sample_weight=sample_weight)


def _first_partial_fit_call(est, classes):
    """scikit-learn's rule: ``classes`` is required on the first ``partial_fit`` call and fixed afterwards."""
    if getattr(est, "classes_", None) is None and classes is None:
        raise ValueError("classes must be passed on the first call to partial_fit.")
    if classes is not None:
        if getattr(est, "classes_", None) is not None:
            if not np.array_equal(est.classes_, unique_labels(classes)):
                raise ValueError(
                    f"`classes={classes!r}` is not the same as on last call to partial_fit, was: {est.classes_!r}"
                )
        else:
            est.classes_ = unique_labels(classes)
            return True
    return False
