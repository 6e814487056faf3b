"""The training loop: :func:`fit`, :func:`predict`, :func:`evaluate`.

::

    history = fastnn.fit(model, X, y, loss=nn.CrossEntropyLoss(),
                         optimizer=optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                         epochs=20, batch_size=32, validation_data=(X_val, y_val), seed=0)
    history["val_accuracy"][-1]

A training step is forward, loss, backward and the optimizer update. Inputs
and targets are validated once for the whole data set (dtype, shapes, finite
values, labels against the model's classes); each epoch shuffles them into
two reused arrays, so every minibatch is a contiguous slice. The loop owns a
:class:`fastnn.Workspace`: after the first step a step allocates only what
the kernels themselves need. :func:`predict` and :func:`evaluate` run under
:func:`fastnn.no_grad` with a workspace of their own, so they are safe to call
from several threads on one model.

Determinism: with a fixed ``seed`` (shuffling) and a fixed initialisation
(``fastnn.manual_seed``), a run repeats bit for bit for a given backend and
thread count.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np

from ._typing import ArrayLike, FloatArray, NDArray
from .grad_mode import inference_mode
from .nn.loss import LOSSES, CrossEntropyLoss, Loss, MSELoss
from .workspace import Workspace
from .workspace import _active as _active_workspace

if TYPE_CHECKING:
    from .nn.module import Module
    from .optim import LRScheduler, Optimizer

__all__ = [
    "fit",
    "predict",
    "evaluate",
    "History",
    "EarlyStopping",
    "make_train_step",
    "TrainStep",
    "NonFiniteLossError",
]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite (bad data, or a learning rate that diverges)."""


class History:
    """Per-epoch metrics of a :func:`fit` run.

    Parameters
    ----------
    accuracy : bool, default True
        Whether the loss has an accuracy (classification); regression
        histories hold losses only.

    Attributes
    ----------
    history : dict of str to list of float
        ``"loss"`` and, for classification, ``"accuracy"``; with validation
        data also ``"val_loss"`` (and ``"val_accuracy"``): one value per epoch.
    epochs : int, epochs actually run
    stopped_early : bool
    stopped_nonfinite : bool, training stopped on a NaN/inf loss (``on_nonfinite="warn"``)
    best_epoch : int or None, 0-based epoch of the best monitored value (early stopping)
    lr : list of float, the learning rate of each epoch
    """

    def __init__(self, accuracy: bool = True) -> None:
        self.history: dict[str, list[float]] = {"loss": [], "accuracy": []} if accuracy else {"loss": []}
        self.lr: list[float] = []
        self.stopped_early = False
        self.stopped_nonfinite = False
        self.best_epoch: int | None = None

    @property
    def epochs(self) -> int:
        return len(self.history["loss"])

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]

    def __contains__(self, key: object) -> bool:
        return key in self.history

    def __repr__(self) -> str:
        last = {k: round(float(v[-1]), 5) for k, v in self.history.items() if v}
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

    # set by _start, at the beginning of each fit
    _key: str
    _sign: float
    _best: float
    _best_epoch: int | None
    _best_state: dict[str, NDArray[Any]] | None
    _wait: int

    def __init__(
        self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0, restore_best: bool = True
    ) -> None:
        if int(patience) != patience or patience < 0:
            raise ValueError(f"patience must be a non-negative integer, got {patience!r}")
        self.monitor = monitor
        self.patience = int(patience)
        self.min_delta = abs(float(min_delta))
        self.restore_best = bool(restore_best)

    def _start(self, has_val: bool) -> None:
        self._key = self.monitor
        if self._key.startswith("val_") and not has_val:
            self._key = self._key[4:]
        self._sign = -1.0 if "acc" in self._key else 1.0
        self._best = math.inf
        self._best_epoch = None
        self._best_state = None
        self._wait = 0

    def _update(self, epoch: int, history: dict[str, list[float]], model: Module) -> bool:
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

    def _finish(self, model: Module) -> None:
        if self.restore_best and self._best_state is not None:
            model.load_state_dict(self._best_state)


def _resolve_loss(loss: Loss | str | None, y: ArrayLike) -> Loss:
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


def _model_dtype(model: Module) -> np.dtype[Any]:
    for p in model.parameters():
        return p.data.dtype
    return np.dtype(np.float32)


def _finite_or_raise(a: NDArray[Any], name: str) -> None:
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        bad = np.flatnonzero(~np.isfinite(a.reshape(a.shape[0], -1)).all(axis=1)) if a.ndim else np.array([0])
        raise ValueError(
            f"{name} holds NaN or infinite values (first in sample {int(bad[0])}, {bad.size} samples "
            f"in all): clean or impute them before training"
        )


def _prepare(model: Module, loss: Loss, X: ArrayLike, y: ArrayLike) -> tuple[FloatArray, NDArray[Any]]:
    """Validate a whole data set once: contiguous finite inputs in the model's dtype, checked targets."""
    dtype = _model_dtype(model)
    X = np.asarray(X)
    if X.dtype.kind not in "fiub":
        raise TypeError(f"X must be numeric, got dtype {X.dtype}")
    X = np.ascontiguousarray(X, dtype=dtype)
    if X.ndim == 0:
        raise ValueError("X must have one row per sample, got a scalar")
    y = loss.prepare_target(y, dtype)
    if y.ndim == 0:
        raise ValueError("y must have one entry per sample, got a scalar")
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"X has {X.shape[0]} samples but y has {y.shape[0]}")
    if X.shape[0] == 0:
        raise ValueError("no samples to train on")
    _finite_or_raise(X, "X")
    _finite_or_raise(y, "y")
    n_probe = min(2, X.shape[0])
    out = _output_shape(model, X[:n_probe])
    if len(out) == 0 or out[0] != n_probe:
        raise ValueError(
            f"the model maps {n_probe} samples (shape {X[:n_probe].shape}) to an output of shape "
            f"{out}: its output must have one row per sample (a recurrent layer without "
            f"batch_first=True reads axis 0 as time)"
        )
    if isinstance(loss, CrossEntropyLoss):
        if len(out) != 2:
            raise ValueError(f"CrossEntropyLoss needs (B, C) logits, the model gives shape {out}")
        loss.check_labels(y, out[1])
    elif y.ndim == 1 and len(out) == 2 and out[1] == 1:
        y = y.reshape(-1, 1)
    if y.shape[1:] != out[1:] and not isinstance(loss, CrossEntropyLoss):
        if y.ndim == 1 and len(out) == 2 and out[1] > 1 and y.size and np.all(np.mod(y, 1) == 0):
            # Class labels read as floats (0.0 ... 9.0 from a CSV) picked the regression loss.
            raise ValueError(
                f"y holds whole numbers ({y.min():g} to {y.max():g}) stored as {y.dtype} and the model "
                f"outputs {out[1]} scores per sample: for classification use integer labels, "
                f"y.astype(np.int64), or loss='cross_entropy'; for regression give y one column per "
                f"model output"
            )
        raise ValueError(f"targets have shape {y.shape[1:]} per sample but the model outputs {out[1:]}")
    return X, y


def _output_shape(model: Module, X: FloatArray) -> tuple[int, ...]:
    """The shape of the model's output for the rows ``X``: a compiled forward plan's, which reads the input's
    shape, or else that of a forward pass. A model with a plan compiles nothing here: on the numba backend the
    layers' kernels were about a second of a first ``fit``'s compilation that the plan never runs."""
    plan = _forward_plan(model, X)
    if plan is not None:
        return (X.shape[0], plan.out_features)
    # evaluation behaviour: the probe must not update running statistics nor draw dropout masks
    with inference_mode():
        return tuple(np.asarray(model.forward(X)).shape)


_NONFINITE = ("raise", "warn")


class TrainStep:
    """One training step, forward, loss, backward and update: ``step(xb, yb) -> (loss, output)``.

    Built by :func:`make_train_step`; :func:`fit` runs it per minibatch. The
    step owns a :class:`fastnn.Workspace` for the model, so the returned
    ``output`` is a buffer that the next step overwrites (copy it to keep
    it), and calling it while another thread trains the model raises
    ``RuntimeError``.

    A non-finite loss stops the step before the backward pass, with
    :class:`NonFiniteLossError`: the model is left as it was before the step.
    """

    def __init__(self, model: Module, loss: Loss, optimizer: Optimizer, clip_grad_norm: float | None = None) -> None:
        from .nn.module import Module
        from .optim import Optimizer

        if not isinstance(model, Module):
            raise TypeError(f"model must be a fastnn Module, got {type(model).__name__}")
        if not isinstance(loss, Loss):
            raise TypeError(f"loss must be a fastnn.nn loss, got {type(loss).__name__}")
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a fastnn.optim optimizer, got {type(optimizer).__name__}")
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.clip_grad_norm = None if clip_grad_norm is None else float(clip_grad_norm)
        self.workspace = Workspace(model)
        self._compiled: Any = None  # (structure key, TrainPlan or None, reason), built on first use

    def compiled_plan(self) -> tuple[Any, str | None]:
        """``(plan, None)`` when the steps can run as a compiled :class:`fastnn.ops.TrainPlan`, else ``(None, why)``.

        The plan needs a compiled backend (the NumPy reference keeps the
        per-step loop, the specification), a model, loss and optimizer that
        :mod:`fastnn.compiled` covers, and no gradient clipping.
        """
        from . import compiled
        from .backends import current

        if current().name == "numpy":
            return None, "the numpy backend runs the per-step loop (the specification)"
        if self.clip_grad_norm is not None:
            return None, "gradient clipping runs in the per-step loop"
        # the model's structure (a layer appended or replaced), the loss and the optimizer may change
        # (and the backend: which models have a plan depends on it)
        key = (tuple(map(id, self.model.modules())), id(self.loss), id(self.optimizer), current().name)
        cached = self._compiled
        if cached is None or cached[0] != key:
            try:
                cached = (key, compiled.train_plan(self.model, self.loss, self.optimizer), None)
            except compiled.Unsupported as exc:
                cached = (key, None, str(exc))
            self._compiled = cached
        return cached[1], cached[2]

    def run_steps(
        self, X: ArrayLike, y: ArrayLike, indices: ArrayLike, batch_size: int | None = None
    ) -> NDArray[np.float64]:
        """Training steps over the rows ``indices`` of ``(X, y)``, ``batch_size`` rows per step, in one call.

        With a compiled plan (:meth:`compiled_plan`) every step runs in
        compiled code (rows gathered by ``indices``, forward, loss, backward,
        update) and Python is reached once per call; otherwise the same
        steps run one by one, as they also do where :func:`fit` would give
        the plan up (the numba plan above ``NUMBA_PLAN_MAX_MACS``
        multiply-adds a step, whose one-thread products lose to BLAS). Either way these are the steps a loop of
        ``step(X[idx], y[idx])`` over the batches takes: the same bits with
        the cython backend, the same to rounding with numba (whose plan
        multiplies on its own small-product kernel), and in every backend
        the same bits whatever the number of steps per call.

        Parameters
        ----------
        X, y : array_like
            The whole data set (``X`` is converted to the model's dtype
            once per call unless it already is it, C-contiguous).
        indices : array_like of int
            The rows, in the order the steps take them.
        batch_size : int, optional
            Rows per step (the last step takes what is left); default: one
            step over all of ``indices``.

        Returns
        -------
        ndarray of float64
            The loss of each step.

        Raises
        ------
        NonFiniteLossError
            A step's loss is NaN or infinite: the steps before it have run,
            that step and the ones after it have not.
        ValueError
            An index outside ``[0, len(X))`` or a label outside the model's
            classes (the steps before it have run).
        """
        idx = np.asarray(indices)
        if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
            raise TypeError("indices must be a 1-D array of integers")
        idx = np.ascontiguousarray(idx, dtype=np.intp)
        if batch_size is None:
            batch_size = max(idx.shape[0], 1)
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        batch_size = int(batch_size)
        dtype = _model_dtype(self.model)
        Xa = np.asarray(X)
        if Xa.dtype.kind not in "fiub":
            raise TypeError(f"X must be numeric, got dtype {Xa.dtype}")
        Xa = np.ascontiguousarray(Xa, dtype=dtype)
        ya = self.loss.prepare_target(y, dtype)
        if Xa.shape[0] != ya.shape[0]:
            raise ValueError(f"X has {Xa.shape[0]} samples but y has {ya.shape[0]}")
        plan, _ = self.compiled_plan()
        if plan is not None and _plan_too_large(plan, batch_size):
            plan = None  # as in fit: the numba plan loses to the per-step loop's BLAS products there
        if plan is not None:
            ya = _plan_target(plan, ya)
            with _claim(self.workspace):
                res = _run_plan(plan, self.optimizer, Xa, ya, idx, batch_size)
            if res.nonfinite is not None:
                k = res.losses.shape[0]
                raise NonFiniteLossError(
                    f"step {k + 1}: the loss is {res.nonfinite}: the data holds NaN/inf, or the learning rate "
                    f"makes training diverge (the model is unchanged by this step)"
                )
            return np.array(res.losses, copy=True)
        n = Xa.shape[0]
        losses = np.empty(-(-idx.shape[0] // batch_size), np.float64)
        with _claim(self.workspace):
            for s, lo in enumerate(range(0, idx.shape[0], batch_size)):
                rows = idx[lo : lo + batch_size]
                if rows.size and (rows.min() < 0 or rows.max() >= n):
                    raise ValueError(f"step {s + 1}: indices must lie in [0, {n})")
                try:
                    losses[s] = self.run(Xa[rows], ya[rows])[0]
                except NonFiniteLossError as exc:
                    raise NonFiniteLossError(f"step {s + 1}: {exc}") from None
        return losses

    def __call__(self, xb: NDArray[Any], yb: NDArray[Any]) -> tuple[float, FloatArray]:
        ws = self.workspace
        if _active_workspace.get() is ws:  # inside fit: already claimed
            return self.run(xb, yb)
        with ws:
            return self.run(xb, yb)

    def run(self, xb: NDArray[Any], yb: NDArray[Any]) -> tuple[float, FloatArray]:
        """The step itself, in whatever workspace is active (``__call__`` enters the step's own)."""
        out = self.model.forward(xb)
        value = self.loss.forward(out, yb)
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"the loss is {value}: the data holds NaN/inf, or the learning rate makes "
                f"training diverge (the model is unchanged by this step)"
            )
        self.model.backward(self.loss.backward(), input_grad=False)
        if self.clip_grad_norm is not None:
            from .optim import clip_grad_norm as _clip

            _clip(self.optimizer.params, self.clip_grad_norm)
        self.optimizer.step()
        return value, out

    def __repr__(self) -> str:
        return f"TrainStep({type(self.model).__name__}, {type(self.loss).__name__}, {type(self.optimizer).__name__})"


def make_train_step(model: Module, loss: Loss, optimizer: Optimizer, clip_grad_norm: float | None = None) -> TrainStep:
    """The function :func:`fit` runs per minibatch: ``step(xb, yb) -> (loss, output)``.

    ``xb`` and ``yb`` are one minibatch (the model's dtype; labels in range,
    else ``ValueError``). See :class:`TrainStep`.

    Parameters
    ----------
    model : Module
    loss : Loss
    optimizer : fastnn.optim.Optimizer
    clip_grad_norm : float, optional
        Clip the global gradient norm to this before each update.
    """
    return TrainStep(model, loss, optimizer, clip_grad_norm)


class _claim:
    """Enter a step's workspace unless it is already the active one (fit enters it once)."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.entered = False

    def __enter__(self) -> None:
        if _active_workspace.get() is not self.ws:
            self.ws.__enter__()
            self.entered = True

    def __exit__(self, *exc: Any) -> None:
        if self.entered:
            self.ws.__exit__(*exc)


def _plan_target(plan: Any, y: NDArray[Any]) -> NDArray[Any]:
    """Targets as the plan's kernels read them: intp labels, or (N, outputs) values."""
    if plan.loss == "cross_entropy":
        return y
    return np.ascontiguousarray(y.reshape(y.shape[0], -1))


def _run_plan(
    plan: Any,
    optimizer: Optimizer,
    X: NDArray[Any],
    y: NDArray[Any],
    idx: NDArray[Any],
    batch_size: int,
    losses: NDArray[Any] | None = None,
    pred: NDArray[Any] | None = None,
) -> Any:
    """One call of the plan with the optimizer's current hyper-parameters; advances Adam's step count."""
    from .compiled import hyper_parameters

    _, hyper = hyper_parameters(optimizer)
    opt: Any = optimizer
    step0 = int(getattr(opt, "step_count", 0))
    res = plan.run(X, y, idx, batch_size, hyper, step0, losses, pred)
    if hasattr(opt, "step_count"):
        opt.step_count = step0 + res.losses.shape[0]
    return res


#: Work per call of a compiled plan that ``steps_per_call="auto"`` aims at: Python is reached about
#: this often (progress, interrupts, callbacks), at a cost of a few microseconds per return.
AUTO_CALL_SECONDS = 0.01


def _correct(kind: str | None, out: NDArray[Any], yb: NDArray[Any]) -> tuple[int, int]:
    if kind == "argmax":
        return int(np.count_nonzero(out.argmax(axis=1) == yb)), yb.shape[0]
    if kind == "sign":
        return int(np.count_nonzero((out > 0) == (yb > 0.5))), yb.size
    return 0, 0


def fit(
    model: Module,
    X: ArrayLike,
    y: ArrayLike,
    loss: Loss | str | None = None,
    optimizer: Optimizer | None = None,
    epochs: int = 10,
    batch_size: int = 32,
    validation_data: tuple[ArrayLike, ArrayLike] | None = None,
    shuffle: bool = True,
    seed: int | None = None,
    early_stopping: EarlyStopping | int | None = None,
    progress: bool = True,
    clip_grad_norm: float | None = None,
    scheduler: LRScheduler | None = None,
    verbose: bool = False,
    on_nonfinite: Literal["raise", "warn"] = "raise",
    *,
    distributed: bool = False,
    sync_every: int | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int | None = None,
    resume: str | os.PathLike[str] | None = None,
    steps_per_call: int | Literal["auto"] = "auto",
) -> History:
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
    on_nonfinite : {"raise", "warn"}, default "raise"
        What happens when the training loss becomes NaN or infinite (a
        learning rate that diverges; the data itself is checked before
        training): raise :class:`NonFiniteLossError`, or warn and stop
        training, returning the history so far (``history.stopped_nonfinite``).
        Either way the step that saw the loss does not update the model.
    distributed : bool, default False
        Data-parallel training over MPI, for a script started with
        ``mpiexec -n N``: ``batch_size`` is per rank, gradients are summed
        over the ranks every step, only rank 0 shows progress and writes
        checkpoints (see :mod:`fastnn.distributed`; needs mpi4py).
    sync_every : int, optional
        With ``distributed``: local SGD, averaging parameters and optimizer
        state every ``sync_every`` steps (and at every epoch's end) instead
        of summing gradients every step.
    checkpoint : str or os.PathLike, optional
        Write a checkpoint (:func:`fastnn.save_checkpoint`) there at the end
        of every epoch, or every ``checkpoint_every`` steps.
    checkpoint_every : int, optional
        Optimizer steps between checkpoints (default: one per epoch); with
        ``sync_every`` a multiple of it.
    resume : str or os.PathLike, optional
        Continue the run a checkpoint recorded: weights, optimizer and
        schedule state, shuffling state, history and the position in the
        epoch are restored, so the run ends with exactly the weights an
        uninterrupted run reaches (same seed, backend, thread count, batch
        size and number of ranks). ``epochs`` is the total, as in the first run.
    steps_per_call : int or "auto", default "auto"
        When the model, loss and optimizer have a compiled training plan
        (:mod:`fastnn.compiled`: dense networks, optionally behind image
        stages or one recurrent layer, on the cython and numba backends),
        this many steps run in one call of compiled code before Python runs
        again; ``"auto"`` aims at about 10 ms of work per call. The weights
        and the history do not depend on it. Other models, the numpy
        backend, gradient clipping and distributed training run one step per
        call, as do the numba backend's plans where they lose to its
        per-step loop (large dense layers; image stages) (``verbose`` says
        which way a run goes and why).

    Returns
    -------
    History

    Raises
    ------
    ValueError
        Data with NaN/inf, targets that do not fit the model's output.
    TypeError
        ``early_stopping`` that is neither an :class:`EarlyStopping` nor an int (a bool, say).
    NonFiniteLossError
        The loss became NaN/inf during training (``on_nonfinite="raise"``).
    RuntimeError
        The model is being trained by another thread.
    """
    from . import optim as _optim

    if int(epochs) != epochs or epochs < 0:
        raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    epochs, batch_size = int(epochs), int(batch_size)
    if on_nonfinite not in _NONFINITE:
        raise ValueError(f"on_nonfinite must be one of {_NONFINITE}, got {on_nonfinite!r}")
    sync_every, checkpoint_every = _check_sync(distributed, sync_every, checkpoint, checkpoint_every)
    loss = _resolve_loss(loss, y)
    if optimizer is None:
        optimizer = _optim.Adam(model.parameters(), lr=1e-3)
    if isinstance(early_stopping, (int, np.integer)) and not isinstance(early_stopping, bool):
        early_stopping = EarlyStopping(patience=int(early_stopping))
    elif early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
        # a bool is not a patience: refuse it (and any other type) before training starts
        raise TypeError(
            f"early_stopping must be an EarlyStopping, an int (its patience) or None, got {early_stopping!r}"
        )
    model.train()
    X, y = _prepare(model, loss, X, y)
    if validation_data is not None:
        X_val, y_val = validation_data
        X_val, y_val = _prepare(model, loss, X_val, y_val)
    n = X.shape[0]
    sync = rank = None
    world = 1
    if distributed:
        from .distributed import _Data, _Sync
        from .distributed import run_step as _dist_step

        sync = _Sync(model, optimizer, sync_every)
        rank, world = sync.rank, sync.size
        if seed is None and shuffle:  # every rank must shuffle alike
            seed = sync.world.bcast_object(cast(int, np.random.SeedSequence().entropy) % 2**63)
        if rank != 0:
            progress = verbose = False
        if validation_data is not None:  # each rank evaluates its share; the sums are reduced
            part = np.array_split(np.arange(np.shape(X_val)[0]), world)[rank]
            X_val, y_val = np.asarray(X_val)[part], np.asarray(y_val)[part]
    if steps_per_call != "auto" and (
        isinstance(steps_per_call, bool) or int(steps_per_call) != steps_per_call or steps_per_call < 1
    ):
        raise ValueError(f"steps_per_call must be a positive integer or 'auto', got {steps_per_call!r}")
    rng = np.random.default_rng(seed)
    step = make_train_step(model, loss, optimizer, clip_grad_norm)
    plan: Any
    why: str | None
    if sync is not None:
        plan, why = None, "distributed training runs one step per call"
    else:
        plan, why = _fit_plan(step, batch_size)
    if verbose:
        from .backends import current

        if plan is not None:
            print(f"fit: compiled training plan on the {current().name} backend (several steps per call)")
        else:
            print(f"fit: one step per call ({why})")
    kind = loss.accuracy_kind
    history = History(accuracy=kind is not None)
    if validation_data is not None:
        history.history["val_loss"] = []
        if kind is not None:
            history.history["val_accuracy"] = []
    if early_stopping is not None:
        early_stopping._start(validation_data is not None)
    start_epoch = start_step = 0
    carried = (0.0, 0)  # loss total and correct count of a resumed epoch's first part (all ranks')
    if resume is not None:
        start_epoch, start_step, carried = _resume(
            resume, model, optimizer, scheduler, rng, history, sync, early_stopping, batch_size, world, sync_every, n
        )

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, initial=min(start_epoch, epochs), unit="epoch", leave=True, dynamic_ncols=True)
    if sync is not None:
        data = _Data(n, batch_size, rank, world)
        Xs = np.empty((data.count,) + X.shape[1:], X.dtype)
        ys = np.empty((data.count,) + y.shape[1:], y.dtype)
        bounds, global_sizes = data.bounds, data.global_sizes
        m = data.count
    else:
        # a compiled plan gathers each minibatch by the shuffled index itself: no shuffled copy of X
        Xs = np.empty_like(X) if shuffle and plan is None else X
        ys = np.empty_like(y) if shuffle else y
        bounds = list(range(0, n, batch_size)) + [n]
        m = n
    mean = loss.reduction == "mean"
    runner = None if plan is None else _PlanEpochs(plan, optimizer, X, y, bounds, steps_per_call, mean)
    argmax, greater = np.argmax, np.greater
    pred: NDArray[Any]  # the epoch's predictions: class indices, or signs
    if kind == "argmax":
        pred = np.empty(m, np.intp)
    elif kind == "sign":
        pred = np.empty(ys.shape, bool)
    else:
        pred = np.empty(0, bool)  # regression: no accuracy
    workspace = step.workspace
    save_state = (
        None if checkpoint is None else (checkpoint, scheduler, early_stopping, batch_size, world, sync_every, n)
    )
    try:
        with workspace:
            for epoch in range(start_epoch, epochs):
                model.train()
                epoch_rng = rng.bit_generator.state  # a checkpoint in this epoch restarts from here
                if sync is not None:
                    perm = rng.permutation(n) if shuffle else np.arange(n)
                    idx = perm[data.mask]  # this rank's share of every global batch, in order
                    np.take(X, idx, axis=0, out=Xs)
                    np.take(y, idx, axis=0, out=ys)
                elif shuffle:
                    perm = rng.permutation(n)
                    if runner is None:
                        np.take(X, perm, axis=0, out=Xs)
                    np.take(y, perm, axis=0, out=ys)
                first = start_step if epoch == start_epoch else 0
                total, correct0 = carried if (epoch == start_epoch and (rank or 0) == 0) else (0.0, 0)
                carried = (0.0, 0)
                run = step.run
                lo = bounds[first]
                try:
                    if runner is not None:
                        # whole runs of steps in compiled code, up to each checkpoint
                        j = first
                        order = perm if shuffle else runner.identity
                        while j < len(bounds) - 1:
                            j, total = runner.run(order, j, total, pred if kind is not None else None, checkpoint_every)
                            if (
                                save_state is not None
                                and checkpoint_every
                                and j % checkpoint_every == 0
                                and (j < len(bounds) - 1)
                            ):
                                _save(
                                    save_state,
                                    model,
                                    optimizer,
                                    epoch,
                                    j,
                                    epoch_rng,
                                    history,
                                    sync,
                                    (total, _count(kind, pred, ys, lo, bounds[j]) + correct0),
                                )
                    for j in range(len(bounds) - 1 if runner is not None else first, len(bounds) - 1):
                        i, i2 = bounds[j], bounds[j + 1]
                        xb = Xs[i:i2]
                        yb = ys[i:i2]
                        if sync is None:
                            value, out = run(xb, yb)
                        else:
                            value, out, bad = _dist_step(
                                sync, model, loss, optimizer, xb, yb, global_sizes[j], step.clip_grad_norm
                            )
                            if sync_every is not None and (sync.steps_since == sync_every or j == len(bounds) - 2):
                                bad = sync.average_parameters()
                            if bad and sync_every is None:
                                raise NonFiniteLossError(
                                    f"the loss is NaN or infinite on {int(bad)} of {world} "
                                    f"ranks (every rank stops here; the model is unchanged "
                                    f"by this step)"
                                )
                            if bad:
                                raise NonFiniteLossError(
                                    f"the loss became NaN or infinite on {int(bad)} of {world} "
                                    f"ranks since the last averaging (every rank stops at "
                                    f"this averaging; those ranks stopped updating there)"
                                )
                        if out is not None:  # None: a rank without samples in the epoch's last step
                            total += value * (xb.shape[0] if mean else 1)
                            if kind == "argmax":
                                argmax(out, 1, pred[i:i2])  # predictions kept; compared once per epoch
                            elif kind == "sign":
                                greater(out, 0, pred[i:i2])
                        if (
                            save_state is not None
                            and checkpoint_every
                            and (j + 1) % checkpoint_every == 0
                            and j + 1 < len(bounds) - 1
                        ):
                            _save(
                                save_state,
                                model,
                                optimizer,
                                epoch,
                                j + 1,
                                epoch_rng,
                                history,
                                sync,
                                (total, _count(kind, pred, ys, lo, i2) + correct0),
                            )
                except NonFiniteLossError as exc:
                    if runner is not None:
                        where = runner.where
                    else:
                        where = f"samples {i}..{i + xb.shape[0] - 1}" if sync is None else f"step {j + 1}"
                    msg = f"epoch {epoch + 1}, {where}: {exc}" + _weights_note(model)
                    if on_nonfinite == "raise":
                        raise NonFiniteLossError(msg) from None
                    warnings.warn(msg + "; training stopped", RuntimeWarning, stacklevel=2)
                    history.stopped_nonfinite = True
                    break
                correct = _count(kind, pred, ys, lo, m) + correct0
                counted = m if kind == "argmax" else ys.size
                if sync is not None:
                    total, correct, counted = sync.sums([total, correct, counted])
                history.history["loss"].append(total / n if mean else total)
                if kind is not None:
                    history.history["accuracy"].append(correct / counted)
                history.lr.append(optimizer.lr)
                if validation_data is not None:
                    res = _validate(model, X_val, y_val, loss, sync)
                    history.history["val_loss"].append(res["loss"])
                    if "accuracy" in res:
                        history.history["val_accuracy"].append(res["accuracy"])
                    model.train()
                if scheduler is not None:
                    scheduler.step()
                last = {k: v[-1] for k, v in history.history.items() if v}
                if bar is not None:
                    bar.set_postfix({k: f"{v:.4f}" for k, v in last.items()}, refresh=False)
                    bar.update(1)
                if verbose:
                    print(f"epoch {epoch + 1}/{epochs}: " + "  ".join(f"{k}={v:.4f}" for k, v in last.items()))
                stop = early_stopping is not None and early_stopping._update(epoch, history.history, model)
                if save_state is not None:
                    history.stopped_early = stop
                    _save(save_state, model, optimizer, epoch + 1, 0, rng.bit_generator.state, history, sync, None)
                if stop:
                    history.stopped_early = True
                    break
    finally:
        if bar is not None:
            bar.close()
    if early_stopping is not None:
        history.best_epoch = early_stopping._best_epoch
        early_stopping._finish(model)
    return history


#: Multiply-adds per step above which the numba plan gives way to the per-step loop: its products run on
#: the small-product register tiles on one thread, which lose to BLAS from about there (W4, 26M
#: multiply-adds a step: 3.3 ms against the loop's 1.6 ms on one thread). Forward plans have their own
#: limit, :data:`NUMBA_PREDICT_MAX_WEIGHTS`.
NUMBA_PLAN_MAX_MACS = 2_000_000


#: Weights (the dense layers' together) above which ``predict`` and ``evaluate`` give the numba forward
#: plan up for the layers' own products, whatever the batch size: the plan's register tiles read each
#: layer's whole weight matrix once per 8 rows, fast while it stays in the core's cache. 2026-12-07, one
#: thread, predict time of the layers over the plan's: 64-128-10 (9.5K weights) 1.3-1.5x, 784-256-10
#: (203K) 1.15x, 784-1024-1024-10 (1.86M) 1.07x at 256 rows a batch but 0.86x at 1,024.
NUMBA_PREDICT_MAX_WEIGHTS = 1 << 19


def _fit_plan(step: TrainStep, batch_size: int) -> tuple[Any, str | None]:
    """The compiled plan :func:`fit` runs ``step`` with at ``batch_size`` rows a step: ``(plan, None)``, or
    ``(None, why)`` when it runs the per-step loop (no plan, or one that would lose to the loop)."""
    plan, why = step.compiled_plan()
    if plan is not None:
        why = _plan_too_large(plan, batch_size) or _numba_image_plan(plan)
        plan = None if why else plan
    return plan, why


def _plan_too_large(plan: Any, batch_size: int) -> str | None:
    """Why a plan should not run although it exists (None: run it)."""
    from .backends import current

    if current().name != "numba":
        return None
    macs = batch_size * sum(int(s.weight.data.size) for s in plan.layers)
    if macs > NUMBA_PLAN_MAX_MACS:
        return (
            f"the numba plan runs its products on one thread's register tiles, and this network's "
            f"({macs / 1e6:.1f}M multiply-adds a step) are faster through BLAS in the per-step loop"
        )
    return None


def _numba_image_plan(plan: Any) -> str | None:
    """Why fit keeps the per-step loop for a numba plan behind image stages (None: it does not).

    The numba image driver runs the convolutions on one thread, as the layers' serial kernels: W5
    measured 1.01x the per-step loop at one thread and 0.94x at two (the loop's pooling and lowering
    run in parallel), and its first call compiles for about 40 s on an empty cache against the loop's
    6 s. ``TrainStep.run_steps`` and :mod:`fastnn.compiled` still run it when asked.
    """
    from .backends import current

    if current().name != "numba" or not plan.features:
        return None
    return (
        "the numba backend's image plan runs its convolutions on one thread and is no faster than the "
        "per-step loop's parallel kernels; run_steps runs it when asked"
    )


class _PlanEpochs:
    """fit's compiled path: runs of steps of an epoch, several per call of the plan."""

    def __init__(
        self,
        plan: Any,
        optimizer: Optimizer,
        X: NDArray[Any],
        y: NDArray[Any],
        bounds: list[int],
        steps_per_call: int | str,
        mean: bool,
    ) -> None:
        self.plan, self.optimizer, self.X, self.y = plan, optimizer, X, _plan_target(plan, y)
        self.bounds, self.mean = bounds, mean
        self.auto = steps_per_call == "auto"
        self.k = 8 if self.auto else int(steps_per_call)
        self.batch_size = bounds[1] - bounds[0] if len(bounds) > 1 else 1
        self.identity = np.arange(X.shape[0], dtype=np.intp)
        self.losses = np.empty(len(bounds), np.float64)
        self.where = ""

    def run(
        self, order: NDArray[Any], j: int, total: float, pred: NDArray[Any] | None, checkpoint_every: int | None
    ) -> tuple[int, float]:
        """Steps j, j+1, ... (up to k, and to the next checkpoint); returns the next step and the loss total."""
        import time

        bounds = self.bounds
        last = len(bounds) - 1
        k = min(self.k, last - j)
        if checkpoint_every:
            k = min(k, checkpoint_every - j % checkpoint_every)
        lo, hi = bounds[j], bounds[j + k]
        p = None if pred is None else pred[lo:hi].reshape(-1)
        t0 = time.perf_counter()
        res = _run_plan(self.plan, self.optimizer, self.X, self.y, order[lo:hi], self.batch_size, self.losses, p)
        elapsed = time.perf_counter() - t0
        done = res.losses.shape[0]
        mean = self.mean
        for s in range(done):  # in step order, as the per-step loop adds them
            value = float(res.losses[s])
            total += value * (bounds[j + s + 1] - bounds[j + s]) if mean else value
        if res.nonfinite is not None:
            i, i2 = bounds[j + done], bounds[j + done + 1]
            self.where = f"samples {i}..{i2 - 1}"
            raise NonFiniteLossError(
                f"the loss is {res.nonfinite}: the data holds NaN/inf, or the learning rate makes "
                f"training diverge (the model is unchanged by this step)"
            )
        if self.auto and done == k:
            per_step = max(elapsed / k, 1e-7)
            self.k = max(1, min(1 << 16, int(AUTO_CALL_SECONDS / per_step)))
        return j + k, total


def _count(kind: str | None, pred: NDArray[Any], ys: NDArray[Any], lo: int, hi: int) -> int:
    """Correct predictions among this rank's samples ``lo:hi`` of the epoch."""
    if kind == "argmax":
        return int(np.count_nonzero(pred[lo:hi] == ys[lo:hi]))
    if kind == "sign":
        return int(np.count_nonzero(pred[lo:hi] == (ys[lo:hi] > 0.5)))
    return 0


def _check_sync(
    distributed: bool, sync_every: int | None, checkpoint: object, checkpoint_every: int | None
) -> tuple[int | None, int | None]:
    if not isinstance(distributed, (bool, np.bool_)):
        raise TypeError(f"distributed must be True or False, got {distributed!r}")
    if sync_every is not None:
        if not distributed:
            raise ValueError("sync_every (local SGD) needs distributed=True")
        if isinstance(sync_every, bool) or int(sync_every) != sync_every or sync_every < 1:
            raise ValueError(f"sync_every must be a positive integer, got {sync_every!r}")
        sync_every = int(sync_every)
    if checkpoint_every is not None:
        if checkpoint is None:
            raise ValueError("checkpoint_every needs checkpoint=path")
        if isinstance(checkpoint_every, bool) or int(checkpoint_every) != checkpoint_every or checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be a positive number of steps, got {checkpoint_every!r}")
        checkpoint_every = int(checkpoint_every)
        if sync_every is not None and checkpoint_every % sync_every:
            raise ValueError(
                f"checkpoint_every ({checkpoint_every}) must be a multiple of sync_every "
                f"({sync_every}): local SGD ranks agree only at their averaging steps"
            )
    return sync_every, checkpoint_every


def _validate(model: Module, X_val: Any, y_val: Any, loss: Loss, sync: Any) -> dict[str, float]:
    if sync is None:
        return evaluate(model, X_val, y_val, loss=loss, _prepared=True)
    k = X_val.shape[0]
    loss_sum = correct = counted = 0.0
    if k:
        res = evaluate(model, X_val, y_val, loss=loss, _prepared=True)
        loss_sum = res["loss"] * (k if loss.reduction == "mean" else 1)
        counted = k if loss.accuracy_kind == "argmax" else y_val.size
        correct = round(res.get("accuracy", 0.0) * counted)
    loss_sum, correct, counted, total_k = sync.sums([loss_sum, correct, counted, k])
    out = {"loss": loss_sum / total_k if loss.reduction == "mean" else loss_sum}
    if loss.accuracy_kind is not None:
        out["accuracy"] = correct / counted if counted else float("nan")
    return out


def _save(
    save_state: tuple[Any, ...],
    model: Module,
    optimizer: Optimizer,
    epoch: int,
    step: int,
    rng_state: Any,
    history: History,
    sync: Any,
    partial: tuple[float, int] | None,
) -> None:
    """Write a checkpoint (rank 0 only); ``partial``: the running loss total and correct count of the epoch."""
    from .io import save_checkpoint

    path, scheduler, early_stopping, batch_size, world, sync_every, n = save_state
    if partial is not None and sync is not None:
        partial = sync.sums(list(partial))
    if sync is not None and sync.rank != 0:
        return
    es = early_stopping
    extra = {
        "batch_size": batch_size,
        "world_size": world,
        "sync_every": sync_every,
        "samples": n,
        "partial": None if partial is None else [float(partial[0]), int(partial[1])],
        "early_stopping": None
        if es is None
        else {"best": es._best if math.isfinite(es._best) else None, "best_epoch": es._best_epoch, "wait": es._wait},
    }
    best = None if es is None or es._best_state is None else es._best_state
    save_checkpoint(
        path, model, optimizer, epoch, rng_state, history, scheduler=scheduler, step=step, extra=extra, arrays=best
    )


def _resume(
    path: str | os.PathLike[str],
    model: Module,
    optimizer: Optimizer,
    scheduler: LRScheduler | None,
    rng: np.random.Generator,
    history: History,
    sync: Any,
    early_stopping: EarlyStopping | None,
    batch_size: int,
    world: int,
    sync_every: int | None,
    n: int,
) -> tuple[int, int, tuple[float, int]]:
    """Restore a checkpoint for :func:`fit`: ``(epoch, step, (loss total, correct count))``."""
    from .io import load_checkpoint

    info: Any = None
    if sync is None or sync.rank == 0:
        info = load_checkpoint(path, model, optimizer, scheduler)
        extra = info["extra"] or {}
        want = {"batch_size": batch_size, "world_size": world, "sync_every": sync_every, "samples": n}
        diff = {k: (extra.get(k), v) for k, v in want.items() if extra.get(k) != v}
        if diff:
            raise ValueError(
                f"cannot resume from {os.fsdecode(path)}: it was written by a run with "
                + ", ".join(f"{k}={a!r} (this run: {b!r})" for k, (a, b) in diff.items())
                + "; an exact continuation needs the same settings"
            )
        info = {k: v for k, v in info.items() if k != "model"}
    if sync is not None:
        info = sync.world.bcast_object(info)
        sync.broadcast_parameters()
        sync.broadcast_optimizer()
        if scheduler is not None and info["scheduler"] is not None:
            scheduler.load_state_dict(info["scheduler"])
    if info["rng"] is not None:
        rng.bit_generator.state = info["rng"]
    saved = info["history"] or {}
    for key, values in (saved.get("history") or {}).items():
        if key in history.history:
            history.history[key][:] = values
    history.lr[:] = saved.get("lr") or []
    extra = info["extra"] or {}
    es = extra.get("early_stopping")
    if early_stopping is not None and es is not None:
        early_stopping._best = math.inf if es["best"] is None else es["best"]
        early_stopping._best_epoch = es["best_epoch"]
        early_stopping._wait = es["wait"]
        if info["arrays"]:  # the best epoch's weights (rank 0's are every rank's)
            early_stopping._best_state = dict(info["arrays"])
    partial = extra.get("partial") or [0.0, 0]
    epoch = info["epoch"]
    if saved.get("stopped_early"):  # the run had finished: nothing left to train
        history.stopped_early = True
        epoch = max(epoch, 1 << 62)
    return epoch, info["step"], (float(partial[0]), int(partial[1]))


def _weights_note(model: Module) -> str:
    bad = [name for name, p in model.named_parameters() if not np.isfinite(p.data).all()]
    if bad:
        return f"; parameters already non-finite from earlier steps: {', '.join(bad)}"
    return "; every parameter is still finite"


def _forward_plan(model: Module, X: NDArray[Any]) -> Any:
    """A compiled forward plan for ``model`` on ``X`` (C-contiguous, the model's dtype), or None."""
    from . import compiled
    from .backends import current

    backend = current().name
    if backend == "numpy" or X.ndim < 2 or X.shape[0] == 0:
        return None
    try:
        plan = compiled.forward_plan(model)
    except compiled.Unsupported:
        return None
    if not plan.accepts(X.shape):
        return None  # the layers raise their own error
    if backend == "numba" and sum(int(s.weight.data.size) for s in plan.layers) > NUMBA_PREDICT_MAX_WEIGHTS:
        return None
    return plan


def predict(model: Module, X: ArrayLike, batch_size: int = 256) -> NDArray[Any]:
    """Model outputs for ``X``, computed in batches (evaluation mode, no gradient bookkeeping).

    Safe to call from several threads on one model (each call has its own
    buffers and writes nothing on the model).

    Returns
    -------
    ndarray of shape (N, ...), a new array
    """
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    batch_size = int(batch_size)
    dtype = _model_dtype(model)
    X = np.asarray(X)
    if X.dtype.kind not in "fiub":
        raise TypeError(f"X must be numeric, got dtype {X.dtype}")
    X = np.ascontiguousarray(X, dtype=dtype)
    plan = _forward_plan(model, X)
    if plan is not None:  # every batch in one compiled call
        out: NDArray[Any] = plan.predict(X, batch_size)
        return out
    result: NDArray[Any] | None = None
    n = X.shape[0]
    with inference_mode(), Workspace():
        for i in range(0, n, batch_size):
            out = model.forward(X[i : i + batch_size])
            if result is None:
                result = np.empty((n,) + out.shape[1:], out.dtype)
            result[i : i + out.shape[0]] = out
        if result is None:
            result = np.array(model.forward(X[:0]), copy=True)
    return result


def evaluate(
    model: Module,
    X: ArrayLike,
    y: ArrayLike,
    loss: Loss | str | None = None,
    batch_size: int = 256,
    _prepared: bool = False,
) -> dict[str, float]:
    """Loss and accuracy of ``model`` on ``(X, y)`` (evaluation mode, no gradient bookkeeping).

    Parameters
    ----------
    model : Module
    X, y : array_like, as for :func:`fit`
    loss : Loss or str, optional (default as in :func:`fit`)
    batch_size : int, default 256

    Returns
    -------
    dict
        ``{"loss": float, "accuracy": float}``; regression losses report the
        loss alone.
    """
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    batch_size = int(batch_size)
    loss = _resolve_loss(loss, y)
    if not _prepared:
        X, y = _prepare(model, loss, X, y)
    else:  # fit's own validation data, already prepared
        X, y = cast("NDArray[Any]", X), cast("NDArray[Any]", y)
    total = 0.0
    correct = counted = 0
    n = X.shape[0]
    plan = _forward_plan(model, X)
    outputs = None if plan is None else plan.predict(X, batch_size)  # every batch's output in one call
    with inference_mode(), Workspace():
        for i in range(0, n, batch_size):
            xb, yb = X[i : i + batch_size], y[i : i + batch_size]
            out = model.forward(xb) if outputs is None else outputs[i : i + batch_size]
            value = loss.forward(out, yb)
            total += value * (xb.shape[0] if loss.reduction == "mean" else 1)
            c, m = _correct(loss.accuracy_kind, out, yb)
            correct += c
            counted += m
    result = {"loss": total / n if loss.reduction == "mean" else total}
    if loss.accuracy_kind is not None:
        result["accuracy"] = correct / counted if counted else float("nan")
    return result
