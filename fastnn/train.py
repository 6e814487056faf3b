"""The training loop: :func:`fit`, :func:`predict`, :func:`evaluate`.

::

    history = fastnn.fit(model, X, y, loss=nn.CrossEntropyLoss(),
                         optimizer=optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                         epochs=20, batch_size=32, validation_data=(X_val, y_val), seed=0)
    history["val_accuracy"][-1]

A training step is forward, loss, backward and the optimizer update. Inputs
and targets are validated once for the whole data set; each epoch shuffles
them into two reused arrays, so every minibatch is a contiguous slice and the
layers' buffers (kept per batch shape) are reused: after the first epoch a
step allocates only what the kernels themselves need.

Determinism: with a fixed ``seed`` (shuffling) and a fixed initialisation
(``fastnn.manual_seed``), a run repeats bit for bit for a given backend and
thread count.
"""

from __future__ import annotations

import math

import numpy as np

from .nn.loss import LOSSES, CrossEntropyLoss, Loss, MSELoss

__all__ = ["fit", "predict", "evaluate", "History", "EarlyStopping", "make_train_step"]


class History:
    """Per-epoch metrics of a :func:`fit` run.

    Attributes
    ----------
    history : dict of str to list of float
        ``"loss"``, ``"accuracy"`` and, with validation data, ``"val_loss"``
        and ``"val_accuracy"``, one value per epoch (accuracy is NaN for
        regression losses).
    epochs : int, epochs actually run
    stopped_early : bool
    best_epoch : int or None, 0-based epoch of the best monitored value (early stopping)
    lr : list of float, the learning rate of each epoch
    """

    def __init__(self):
        self.history = {"loss": [], "accuracy": []}
        self.lr = []
        self.stopped_early = False
        self.best_epoch = None

    @property
    def epochs(self) -> int:
        return len(self.history["loss"])

    def __getitem__(self, key):
        return self.history[key]

    def __contains__(self, key):
        return key in self.history

    def __repr__(self) -> str:
        last = {k: round(v[-1], 5) for k, v in self.history.items() if v}
        return f"History(epochs={self.epochs}, last={last})"


class EarlyStopping:
    """Stop training when a monitored metric stops improving.

    Parameters
    ----------
    monitor : str, default "val_loss"
        A key of :attr:`History.history`; falls back to ``"loss"`` without
        validation data. Losses are minimised, accuracies maximised.
    patience : int, default 5
        Epochs without improvement before stopping.
    min_delta : float, default 0
        Smallest change that counts as an improvement.
    restore_best : bool, default True
        Put back the weights of the best epoch when stopping (and at the end).
    """

    def __init__(self, monitor="val_loss", patience=5, min_delta=0.0, restore_best=True):
        if int(patience) != patience or patience < 0:
            raise ValueError(f"patience must be a non-negative integer, got {patience!r}")
        self.monitor = monitor
        self.patience = int(patience)
        self.min_delta = abs(float(min_delta))
        self.restore_best = bool(restore_best)

    def _start(self, has_val):
        self._key = self.monitor
        if self._key.startswith("val_") and not has_val:
            self._key = self._key[4:]
        self._sign = -1.0 if "acc" in self._key else 1.0
        self._best = math.inf
        self._best_epoch = None
        self._best_state = None
        self._wait = 0

    def _update(self, epoch, history, model) -> bool:
        """Record this epoch; True means stop."""
        value = self._sign * history[self._key][-1]
        if value < self._best - self.min_delta or self._best_epoch is None:
            self._best = value
            self._best_epoch = epoch
            self._wait = 0
            if self.restore_best:
                self._best_state = model.state_dict()
            return False
        self._wait += 1
        return self._wait >= self.patience

    def _finish(self, model):
        if self.restore_best and self._best_state is not None:
            model.load_state_dict(self._best_state)


def _resolve_loss(loss, y):
    if loss is None:
        y = np.asarray(y)
        return CrossEntropyLoss() if y.dtype.kind in "iu" else MSELoss()
    if isinstance(loss, str):
        try:
            return LOSSES[loss]()
        except KeyError:
            raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(LOSSES)} or pass a Loss") from None
    if not isinstance(loss, Loss):
        raise TypeError(f"loss must be a fastnn.nn loss or a name, got {type(loss).__name__}")
    return loss


def _model_dtype(model):
    params = model.parameters()
    return params[0].data.dtype if params else np.dtype(np.float32)


def _prepare(model, loss, X, y):
    """Validate a whole data set once: contiguous inputs in the model's dtype, checked targets."""
    dtype = _model_dtype(model)
    X = np.asarray(X)
    if X.dtype.kind not in "fiub":
        raise TypeError(f"X must be numeric, got dtype {X.dtype}")
    X = np.ascontiguousarray(X, dtype=dtype)
    y = loss.prepare_target(y, dtype)
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"X has {X.shape[0]} samples but y has {y.shape[0]}")
    if X.shape[0] == 0:
        raise ValueError("no samples to train on")
    probe = np.array(model.forward(X[:1]), copy=True)
    if isinstance(loss, CrossEntropyLoss):
        if probe.ndim != 2:
            raise ValueError(f"CrossEntropyLoss needs (B, C) logits, the model gives shape {probe.shape}")
        loss.check_labels(y, probe.shape[1])
    elif y.ndim == 1 and probe.ndim == 2 and probe.shape[1] == 1:
        y = y.reshape(-1, 1)
    if y.shape[1:] != probe.shape[1:] and not isinstance(loss, CrossEntropyLoss):
        raise ValueError(f"targets have shape {y.shape[1:]} per sample but the model outputs {probe.shape[1:]}")
    return X, y


def make_train_step(model, loss, optimizer, clip_grad_norm=None):
    """The function :func:`fit` runs per minibatch: ``step(xb, yb) -> (loss, output)``.

    ``xb`` and ``yb`` must already be validated (as :func:`fit` does for
    the whole data set: contiguous, the model's dtype, labels in range).

    Parameters
    ----------
    model : Module
    loss : Loss
    optimizer : fastnn.optim.Optimizer
    clip_grad_norm : float, optional
        Clip the global gradient norm to this before each update.
    """
    from .optim import clip_grad_norm as _clip

    forward = model.forward
    loss_fwd = loss._forward_trusted
    loss_bwd = loss.backward
    opt_step = optimizer.step
    try:
        from .nn.container import Sequential
        backward_no_input = isinstance(model, Sequential)
    except ImportError:  # pragma: no cover
        backward_no_input = False
    # a bare Conv2d / RNN / LSTM / GRU model skips dL/dx as well
    backward_no_input = backward_no_input or getattr(model, "backward_takes_input_grad", False)
    backward = model.backward
    params = optimizer.params

    if clip_grad_norm is None:
        if backward_no_input:
            def step(xb, yb):
                out = forward(xb)
                value = loss_fwd(out, yb)
                backward(loss_bwd(), input_grad=False)
                opt_step()
                return value, out
        else:
            def step(xb, yb):
                out = forward(xb)
                value = loss_fwd(out, yb)
                backward(loss_bwd())
                opt_step()
                return value, out
    else:
        max_norm = float(clip_grad_norm)

        def step(xb, yb):
            out = forward(xb)
            value = loss_fwd(out, yb)
            if backward_no_input:
                backward(loss_bwd(), input_grad=False)
            else:
                backward(loss_bwd())
            _clip(params, max_norm)
            opt_step()
            return value, out
    return step


def _correct(kind, out, yb):
    if kind == "argmax":
        return int(np.count_nonzero(out.argmax(axis=1) == yb)), yb.shape[0]
    if kind == "sign":
        return int(np.count_nonzero((out > 0) == (yb > 0.5))), yb.size
    return 0, 0


def fit(model, X, y, loss=None, optimizer=None, epochs=10, batch_size=32, validation_data=None,
        shuffle=True, seed=None, early_stopping=None, progress=True, clip_grad_norm=None,
        scheduler=None, verbose=False):
    """Train ``model`` on ``(X, y)`` by minibatch gradient descent.

    Parameters
    ----------
    model : Module
    X : array_like of shape (N, ...)
        Converted once to the model's dtype.
    y : array_like of shape (N,) or (N, ...)
        Integer class labels for cross-entropy, values for MSE/BCE.
    loss : Loss or {"cross_entropy", "mse", "bce_with_logits"}, optional
        Default: cross-entropy for integer ``y``, MSE otherwise.
    optimizer : fastnn.optim.Optimizer, optional
        Default: ``Adam(model.parameters(), lr=1e-3)``.
    epochs : int, default 10
    batch_size : int, default 32
    validation_data : (X_val, y_val), optional
        Evaluated after every epoch (``val_loss``, ``val_accuracy``).
    shuffle : bool, default True
    seed : int, optional
        Seed of the shuffling.
    early_stopping : EarlyStopping or int, optional
        An int is the patience of ``EarlyStopping("val_loss")``.
    progress : bool, default True
        A tqdm progress bar with loss and accuracy.
    clip_grad_norm : float, optional
        Clip the global gradient norm before every update.
    scheduler : fastnn.optim.LRScheduler, optional
        Stepped once per epoch.
    verbose : bool, default False
        Print one line per epoch (useful with ``progress=False``).

    Returns
    -------
    History
    """
    from . import optim as _optim

    if int(epochs) != epochs or epochs < 0:
        raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    epochs, batch_size = int(epochs), int(batch_size)
    loss = _resolve_loss(loss, y)
    if optimizer is None:
        optimizer = _optim.Adam(model.parameters(), lr=1e-3)
    if isinstance(early_stopping, (int, np.integer)) and not isinstance(early_stopping, bool):
        early_stopping = EarlyStopping(patience=int(early_stopping))
    model.train()
    X, y = _prepare(model, loss, X, y)
    if validation_data is not None:
        X_val, y_val = validation_data
        X_val, y_val = _prepare(model, loss, X_val, y_val)
    n = X.shape[0]
    rng = np.random.default_rng(seed)
    step = make_train_step(model, loss, optimizer, clip_grad_norm)
    kind = loss.accuracy_kind
    history = History()
    if validation_data is not None:
        history.history["val_loss"] = []
        history.history["val_accuracy"] = []
    if early_stopping is not None:
        early_stopping._start(validation_data is not None)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, unit="epoch", leave=True, dynamic_ncols=True)
    Xs = np.empty_like(X) if shuffle else X
    ys = np.empty_like(y) if shuffle else y
    starts = range(0, n, batch_size)
    mean = loss.reduction == "mean"
    argmax, greater = np.argmax, np.greater
    if kind == "argmax":
        pred = np.empty(n, np.intp)
    elif kind == "sign":
        pred = np.empty(y.shape, bool)
    try:
        for epoch in range(epochs):
            model.train()
            if shuffle:
                perm = rng.permutation(n)
                np.take(X, perm, axis=0, out=Xs)
                np.take(y, perm, axis=0, out=ys)
            total = 0.0
            for i in starts:
                xb = Xs[i:i + batch_size]
                yb = ys[i:i + batch_size]
                value, out = step(xb, yb)
                total += value * (xb.shape[0] if mean else 1)
                if kind == "argmax":
                    argmax(out, 1, pred[i:i + batch_size])   # predictions kept; compared once per epoch
                elif kind == "sign":
                    greater(out, 0, pred[i:i + batch_size])
            history.history["loss"].append(total / n if mean else total)
            if kind == "argmax":
                history.history["accuracy"].append(np.count_nonzero(pred == ys) / n)
            elif kind == "sign":
                history.history["accuracy"].append(np.count_nonzero(pred == (ys > 0.5)) / ys.size)
            else:
                history.history["accuracy"].append(float("nan"))
            history.lr.append(optimizer.lr)
            if validation_data is not None:
                res = evaluate(model, X_val, y_val, loss=loss, _prepared=True)
                history.history["val_loss"].append(res["loss"])
                history.history["val_accuracy"].append(res["accuracy"])
                model.train()
            if scheduler is not None:
                scheduler.step()
            last = {k: v[-1] for k, v in history.history.items()}
            if bar is not None:
                bar.set_postfix({k: f"{v:.4f}" for k, v in last.items() if not (isinstance(v, float) and math.isnan(v))},
                                refresh=False)
                bar.update(1)
            if verbose:
                print(f"epoch {epoch + 1}/{epochs}: " + "  ".join(f"{k}={v:.4f}" for k, v in last.items()))
            if early_stopping is not None and early_stopping._update(epoch, history.history, model):
                history.stopped_early = True
                break
    finally:
        if bar is not None:
            bar.close()
    if early_stopping is not None:
        history.best_epoch = early_stopping._best_epoch
        early_stopping._finish(model)
    return history


def predict(model, X, batch_size=256):
    """Model outputs for ``X``, computed in batches (evaluation mode).

    Returns
    -------
    ndarray of shape (N, ...), a new array (not a layer buffer)
    """
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    dtype = _model_dtype(model)
    X = np.ascontiguousarray(X, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        result = None
        n = X.shape[0]
        for i in range(0, n, batch_size):
            out = model.forward(X[i:i + batch_size])
            if result is None:
                result = np.empty((n,) + out.shape[1:], out.dtype)
            result[i:i + out.shape[0]] = out
        if result is None:
            result = np.array(model.forward(X[:0]), copy=True) if n == 0 else result
        return result
    finally:
        model.train(was_training)


def evaluate(model, X, y, loss=None, batch_size=256, _prepared=False):
    """Loss and accuracy of ``model`` on ``(X, y)``.

    Parameters
    ----------
    model : Module
    X, y : array_like, as for :func:`fit`
    loss : Loss or str, optional (default as in :func:`fit`)
    batch_size : int, default 256

    Returns
    -------
    dict
        ``{"loss": float, "accuracy": float}`` (accuracy NaN for regression).
    """
    loss = _resolve_loss(loss, y)
    if not _prepared:
        X, y = _prepare(model, loss, X, y)
    was_training = model.training
    model.eval()
    try:
        total = 0.0
        correct = counted = 0
        n = X.shape[0]
        for i in range(0, n, batch_size):
            xb, yb = X[i:i + batch_size], y[i:i + batch_size]
            out = model.forward(xb)
            value = loss._forward_trusted(out, yb)
            total += value * (xb.shape[0] if loss.reduction == "mean" else 1)
            c, m = _correct(loss.accuracy_kind, out, yb)
            correct += c
            counted += m
        return {"loss": total / n if loss.reduction == "mean" else total,
                "accuracy": correct / counted if counted else float("nan")}
    finally:
        model.train(was_training)
