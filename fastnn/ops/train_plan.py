"""Training plans: a dense network, its loss and its optimizer bound once, K steps per call.

A small network's step is a few microseconds of arithmetic and, in a Python
loop, a dozen crossings of the interpreter (layer calls, loss, optimizer,
batch slicing). A :class:`TrainPlan` binds the layers' parameters, the
loss, the optimizer's state and one workspace once; :meth:`TrainPlan.run`
then runs any number of steps in one call of the backend's ``train_steps``
kernel (gather by an index array, forward, loss, backward, update), which
the compiled backends run without touching a Python object. The NumPy
reference runs the same steps with its per-stage kernels: it is the
specification (:mod:`fastnn.backends.reference.train`).

What is checked where: the layers' shapes and dtypes, the parameter and
state arrays, when bound (again whenever one of them is replaced, or the
backend changes); ``x``, the targets and the index array's type on every
call; each index and label by the kernel, as it uses it (an index outside
``[0, N)`` or a label outside ``[0, C)`` is a ``ValueError`` naming the
step, never a read out of bounds).

:func:`fastnn.compiled.train_plan` builds a plan from a ``Sequential`` model
(Linear layers and activations), a loss and an optimizer; :func:`fastnn.fit`
uses it when it can.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from .._typing import FloatArray, NDArray, ParamLike
from . import _plan as _p

__all__ = ["DenseSpec", "TrainPlan", "ACTIVATION_CODES", "LOSS_CODES", "REDUCTION_CODES"]

#: Activation codes of the training kernels (the compiled library's numbering).
ACTIVATION_CODES = {"identity": 0, "relu": 1, "sigmoid": 2, "tanh": 3, "leaky_relu": 4}
#: Loss codes of the training kernels.
LOSS_CODES = {"cross_entropy": 0, "mse": 1, "bce_with_logits": 2}
#: Reduction codes of the training kernels ("sklearn": scikit-learn's MLP convention, see
#: :mod:`fastnn.backends.reference.train`).
REDUCTION_CODES = {"sum": 0, "mean": 1, "sklearn": 2}
#: Optimizer codes of the training kernels.
OPTIMIZER_CODES = {"sgd": 0, "adam": 1}

_NONFINITE, _BAD_INDEX, _BAD_LABEL = 1, 2, 3


class DenseSpec(NamedTuple):
    """One layer of a plan: ``y = activation(x·Wᵀ + b)``."""

    weight: ParamLike
    bias: ParamLike | None
    activation: str = "identity"
    negative_slope: float = 0.0


class StepsResult(NamedTuple):
    """What :meth:`TrainPlan.run` returns."""

    #: the loss of every step run (a float64 view of the ``losses`` buffer)
    losses: NDArray[Any]
    #: the loss that stopped the run if it was not finite, else None
    nonfinite: float | None


class TrainPlan:
    """A chain of dense layers, a loss and (optionally) an optimizer update, bound for whole steps.

    Parameters
    ----------
    layers : sequence of DenseSpec
        First to last; each layer's input width is the previous one's output.
    loss : {"cross_entropy", "mse", "bce_with_logits"}, optional
        Needed for :meth:`run` (not for :meth:`predict`).
    reduction : {"mean", "sum", "sklearn"}
        ``"sklearn"``: scikit-learn's MLP convention (what
        :mod:`fastnn.sklearn` trains with): the losses are its output
        activation and loss for each head (softmax log-loss, half squared
        error, logistic log-loss), every gradient divided by the rows of the
        step, the weight decay is its ``alpha`` on the weights only (not the
        biases) and in the loss, and Adam adds ``eps`` after the bias
        correction (details: :mod:`fastnn.backends.reference.train`).
    update : fastnn.ops.UpdatePlan, optional
        The optimizer's bound update: the parameters it steps and its state arrays.
    optimizer : {"sgd", "adam"}, optional
        Which rule ``update`` runs.
    flatten_input : bool, default False
        Read an input of shape (N, ...) as its rows (N, I) (a leading
        ``Flatten``); otherwise the input must be 2-D.

    Notes
    -----
    One thread runs a plan at a time (a second concurrent :meth:`run`
    raises ``RuntimeError``); :meth:`predict` uses buffers of its own and
    may run in any number of threads.
    """

    def __init__(
        self,
        layers: Sequence[DenseSpec],
        loss: str | None = None,
        reduction: str = "mean",
        update: Any = None,
        optimizer: str | None = None,
        flatten_input: bool = False,
    ) -> None:
        self.layers = tuple(DenseSpec(*spec) for spec in layers)
        if not self.layers:
            raise ValueError("a training plan needs at least one layer")
        for spec in self.layers:
            if spec.activation not in ACTIVATION_CODES:
                raise ValueError(f"unknown activation {spec.activation!r}; choose one of {sorted(ACTIVATION_CODES)}")
        if loss is not None and loss not in LOSS_CODES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(LOSS_CODES)}")
        if reduction not in REDUCTION_CODES:
            raise ValueError(f"reduction must be 'mean', 'sum' or 'sklearn', got {reduction!r}")
        if (update is None) != (optimizer is None) or (optimizer is not None and optimizer not in OPTIMIZER_CODES):
            raise ValueError("give both update (an UpdatePlan) and optimizer ('sgd' or 'adam'), or neither")
        self.loss = loss
        self.reduction = reduction
        self.update = update
        self.optimizer = optimizer
        self.flatten_input = bool(flatten_input)
        self._bound: tuple[Any, ...] | None = None
        self._lock = threading.Lock()
        self._arrays()  # validate now, not at the first step

    # -- binding ---------------------------------------------------------------
    def _arrays(self) -> tuple[tuple[FloatArray, FloatArray, FloatArray | None, FloatArray | None], ...]:
        """The validated (W, dW, b, db) of every layer, chained shapes and one dtype checked."""
        out = []
        width = None
        dtype = None
        for i, spec in enumerate(self.layers):
            w, dw, b, db = _p.bind_weight_bias(spec.weight, spec.bias, 2, f"layer {i}")
            if dtype is None:
                dtype = w.dtype
            elif w.dtype != dtype:
                raise TypeError(f"layer {i} is {w.dtype}, layer 0 is {dtype}: a plan runs one dtype")
            if width is not None and w.shape[1] != width:
                raise ValueError(f"layer {i} takes {w.shape[1]} inputs but layer {i - 1} gives {width}")
            width = w.shape[0]
            out.append((w, dw, b, db))
        return tuple(out)

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.layers[0].weight.data.dtype

    @property
    def in_features(self) -> int:
        return int(self.layers[0].weight.data.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.layers[-1].weight.data.shape[0])

    def _key(self, backend: Any, bmax: int) -> tuple[Any, ...]:
        ids: list[int] = [id(backend), bmax]
        for spec in self.layers:
            ids += (id(spec.weight.data), id(spec.weight.grad))
            if spec.bias is not None:
                ids += (id(spec.bias.data), id(spec.bias.grad))
        if self.update is not None:
            for p in self.update.params:
                ids += (id(p.data), id(p.grad))
            for name in self.update.state_names:
                ids += map(id, self.update.state[name])
        return tuple(ids)

    def _binding(self, backend: Any, bmax: int, training: bool) -> Any:
        arrays = self._arrays()
        dt = arrays[0][0].dtype
        layers = []
        for i, ((w, dw, b, db), spec) in enumerate(zip(arrays, self.layers)):
            nout, nin = w.shape
            act = ACTIVATION_CODES[spec.activation]
            y = np.empty((bmax, nout), dt)
            delta = np.empty((bmax, nout), dt) if training and act else None
            gin = np.empty((bmax, nin), dt) if training and i else None
            slope = float(spec.negative_slope)
            layers.append((w, b, dw if training else None, db if training else None, act, slope, y, delta, gin))
        nin, nout = arrays[0][0].shape[1], arrays[-1][0].shape[0]
        xb = np.empty((bmax, nin), dt)
        tb = np.empty(bmax, np.intp) if self.loss == "cross_entropy" else np.empty((bmax, nout), dt)
        gz = np.empty((bmax, nout), dt)
        updates: tuple[Any, ...] = ()
        if training:
            _, _, groups, _ = self.update._check()  # the optimizer's validated arrays (one dtype group)
            if len(groups) != 1 or groups[0][0][0].dtype != dt:
                raise TypeError("the optimizer's parameters must all have the network's dtype")
            ps, gs, states = groups[0]
            s1 = states[0] if states else (None,) * len(ps)
            s2 = states[1] if len(states) > 1 else (None,) * len(ps)
            bound = {id(a) for layer in arrays for a in layer if a is not None}
            for p in ps:
                if id(p) not in bound:
                    raise ValueError("the optimizer updates a parameter that is not one of the plan's layers")
            # weight decay on every parameter, or (scikit-learn) on the weights only
            weights = {id(layer[0]) for layer in arrays}
            decay = tuple(1.0 if self.reduction != "sklearn" or id(p) in weights else 0.0 for p in ps)
            updates = tuple(zip(ps, gs, s1, s2, decay))
        # the kernels write y, delta, gin, gz and the gradients: none may overlap a parameter
        _p.check_disjoint("training plan", *[a for layer in arrays for a in layer], xb, gz)
        return backend.train_bind(tuple(layers), updates, xb, tb, gz)

    def _bind(self, bmax: int) -> Any:
        backend = _p.current()
        key = self._key(backend, bmax)
        bound = self._bound
        if bound is None or bound[0] != key:
            bound = self._bound = (key, backend, self._binding(backend, bmax, True))
        return bound

    # -- running -----------------------------------------------------------------
    def _check_x(self, x: Any) -> FloatArray:
        if type(x) is not np.ndarray or x.dtype != self.dtype or not x.flags.c_contiguous:
            raise TypeError(f"x must be a C-contiguous numpy.ndarray of dtype {self.dtype}")
        if x.ndim < 2 or (x.ndim > 2 and not self.flatten_input) or x[0].size != self.in_features:
            want = f"(N, {self.in_features})" + (" or (N, ...) flattening to it" if self.flatten_input else "")
            raise ValueError(f"x must have shape {want}, got {x.shape}")
        return x

    def run(
        self,
        x: FloatArray,
        target: NDArray[Any],
        index: NDArray[Any],
        batch_size: int,
        hyper: tuple[float, float, float, float, float, float],
        step0: int = 0,
        losses: NDArray[Any] | None = None,
        pred: NDArray[Any] | None = None,
    ) -> StepsResult:
        """Run ``ceil(len(index) / batch_size)`` training steps in one call.

        Parameters
        ----------
        x : ndarray (N, I) (with ``flatten_input``, (N, ...) flattening to I), the plan's dtype, C-contiguous
        target : ndarray
            intp labels (N,) for cross-entropy; (N, O) values (the plan's
            dtype) for MSE and BCE.
        index : intp ndarray
            The rows of every minibatch, in order.
        batch_size : int
        hyper : tuple of 6 floats
            SGD: ``(lr, momentum, nesterov, weight_decay, 0, 0)``; Adam:
            ``(lr, beta1, beta2, weight_decay, eps, decoupled)``. With
            ``reduction="sklearn"``, ``weight_decay`` is scikit-learn's
            ``alpha`` and ``decoupled`` must be 0.
        step0 : int
            Adam's step count before the first step.
        losses : float64 ndarray, optional
            Where to write the per-step losses (one per step).
        pred : ndarray, optional
            Written per sample of ``index``: argmax of the output (intp) or
            per output whether it is > 0 (bool).

        Returns
        -------
        StepsResult

        Raises
        ------
        ValueError
            An index outside ``[0, N)`` or a label outside ``[0, O)``: the
            steps before it have run.
        """
        if self.update is None or self.loss is None:
            raise RuntimeError("this plan has no loss or optimizer: it can only predict")
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        batch_size = int(batch_size)
        x = self._check_x(x)
        n = x.shape[0]
        nout = self.out_features
        if self.loss == "cross_entropy":
            if type(target) is not np.ndarray or target.dtype != np.intp or target.shape != (n,):
                raise TypeError(f"cross-entropy targets must be an intp array of shape ({n},)")
        elif type(target) is not np.ndarray or target.dtype != self.dtype or target.shape != (n, nout):
            raise TypeError(f"targets must be a {self.dtype} array of shape ({n}, {nout})")
        if not target.flags.c_contiguous:
            raise ValueError("targets must be C-contiguous")
        if type(index) is not np.ndarray or index.dtype != np.intp or index.ndim != 1:
            raise TypeError("index must be a 1-D intp array")
        index = np.ascontiguousarray(index)
        nsteps = -(-index.shape[0] // batch_size)
        if losses is None:
            losses = np.empty(nsteps, np.float64)
        elif type(losses) is not np.ndarray or losses.dtype != np.float64 or losses.shape[0] < nsteps:
            raise ValueError(f"losses must be a float64 array of at least {nsteps} entries")
        losses = losses[:nsteps]
        if pred is not None:
            want = (np.intp, index.shape[0]) if pred.dtype == np.intp else (np.bool_, index.shape[0] * nout)
            if type(pred) is not np.ndarray or pred.dtype != want[0] or not pred.flags.c_contiguous:
                raise TypeError("pred must be a C-contiguous intp (argmax) or bool (sign) array")
            if pred.size < want[1]:
                raise ValueError(f"pred needs {want[1]} entries, got {pred.size}")
        if len(hyper) != 6:
            raise ValueError("hyper must hold 6 numbers")
        if self.reduction == "sklearn" and self.optimizer == "adam" and hyper[5]:
            raise ValueError("scikit-learn's convention has no decoupled weight decay (hyper[5] must be 0)")
        if not self._lock.acquire(blocking=False):
            raise RuntimeError("this training plan is running in another thread")
        try:
            # the workspace grows to the largest batch seen, and is kept for smaller ones
            _, backend, binding = self._bind(max(batch_size, self._bmax()))
            done, status = backend.train_steps(
                binding,
                x,
                target,
                index,
                batch_size,
                LOSS_CODES[self.loss],
                REDUCTION_CODES[self.reduction],
                OPTIMIZER_CODES[self.optimizer or "sgd"],  # set: checked above with the update
                tuple(float(h) for h in hyper),
                int(step0),
                losses,
                pred,
            )
        finally:
            self._lock.release()
        if status == _BAD_INDEX:
            rows = index[done * batch_size : (done + 1) * batch_size]
            raise ValueError(f"step {done + 1}: index holds rows outside [0, {n}) (from {rows.min()} to {rows.max()})")
        if status == _BAD_LABEL:
            labels = target[index[done * batch_size : (done + 1) * batch_size]]
            raise ValueError(
                f"step {done + 1}: labels must lie in [0, {nout}), got values from {labels.min()} to {labels.max()}"
            )
        return StepsResult(losses[:done], float(losses[done]) if status == _NONFINITE else None)

    def _bmax(self) -> int:
        bound = self._bound
        return 0 if bound is None else bound[0][1]

    def predict(self, x: FloatArray, batch_size: int = 256, out: FloatArray | None = None) -> FloatArray:
        """The network's output for every row of ``x``, in one call over all batches.

        Parameters
        ----------
        x : ndarray (N, I) (with ``flatten_input``, (N, ...) flattening to I), the plan's dtype, C-contiguous
        batch_size : int, rows per pass (bounds the workspace)
        out : ndarray (N, O), optional

        Returns
        -------
        ndarray of shape (N, O)
        """
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        x = self._check_x(x)
        n = x.shape[0]
        shape = (n, self.out_features)
        if out is None:
            out = np.empty(shape, self.dtype)
        elif type(out) is not np.ndarray or out.shape != shape or out.dtype != self.dtype or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous {self.dtype} array of shape {shape}")
        if n == 0:
            return out
        if np.may_share_memory(out, x):
            raise ValueError("out must not overlap x")
        bs = min(int(batch_size), n)
        backend = _p.current()
        binding = self._binding(backend, bs, False)  # this call's own buffers: safe in any thread
        out = backend.predict_rows(binding, x, bs, out)
        return out
