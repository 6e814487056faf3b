"""Training plans: a network, its loss and its optimizer bound once, K steps per call.

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
(Linear layers and activations, optionally behind one recurrent layer and
its last time step), a loss and an optimizer; :func:`fastnn.fit` uses it
when it can.

A plan with a :class:`RecurrentSpec` in front reads samples ``(T, I)`` (rows
of an ``(N, T, I)`` input, batch-first as ``fit`` gives them): each step
gathers its rows into a time-major sequence ``(T, B, I)``, runs the
recurrent layer's forward kernel from zero states, feeds the last hidden
state to the dense layers, and backpropagates ``dL/dh_T`` (zeros at the
other steps) through the layer's BPTT kernel, without ``dL/dx``: the
per-step loop of ``Sequential(RNN(batch_first=True),
LastTimeStep(batch_first=True), Linear ...)``.

A plan with :class:`FeatureSpec` stages in front reads images ``(C, H, W)``
(rows of an ``(N, C, H, W)`` input): convolutions, max and average pooling
and activations, then (a ``Flatten``) the dense layers; the first stage
forms no ``dL/dx``, as in the per-step loop.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from .._typing import FloatArray, NDArray, ParamLike
from . import _plan as _p

__all__ = [
    "DenseSpec",
    "RecurrentSpec",
    "FeatureSpec",
    "TrainPlan",
    "ACTIVATION_CODES",
    "LOSS_CODES",
    "REDUCTION_CODES",
]

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
#: gate blocks and backward work-row width (units of H) of each recurrent cell (fastnn.ops.rnn's)
_CELL_SHAPES = {"rnn": (1, 1), "lstm": (4, 4), "gru": (3, 6)}
#: the recurrent kernels' pointer-table slots, in order (kernels/_rnn.pxi's _SLOT_NAMES)
_SLOTS = (
    "x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "out", "cell", "gates", "hn", "work",
    "go", "ghn", "gcn", "gx", "gh0", "gc0", "gw_ih", "gw_hh", "gb_ih", "gb_hh",
)  # fmt: skip


class DenseSpec(NamedTuple):
    """One layer of a plan: ``y = activation(x·Wᵀ + b)``."""

    weight: ParamLike
    bias: ParamLike | None
    activation: str = "identity"
    negative_slope: float = 0.0


class RecurrentSpec(NamedTuple):
    """A single-layer, unidirectional recurrent layer in front of a plan's dense layers.

    Its last hidden state (``LastTimeStep``) is the first dense layer's input;
    the states start at zero at every step.
    """

    cell: str  # "rnn", "lstm" or "gru"
    weight_ih: ParamLike
    weight_hh: ParamLike
    bias_ih: ParamLike | None
    bias_hh: ParamLike | None
    nonlinearity: str = "tanh"  # the RNN's: "tanh" or "relu"


class FeatureSpec(NamedTuple):
    """One image stage in front of a plan's dense layers (the per-step loop's layer of that kind).

    ``kind``: ``"conv"`` (``weight`` (O, C, kH, kW), optional ``bias``,
    ``stride``, ``padding``, ``dilation``), ``"max"`` or ``"avg"`` pooling
    (``kernel_size``, ``stride``, ``padding``, ``count_include_pad``), or an
    activation name of :data:`ACTIVATION_CODES` (``negative_slope`` for the
    leaky ReLU). Sizes are (height, width) pairs.
    """

    kind: str
    weight: ParamLike | None = None
    bias: ParamLike | None = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    kernel_size: tuple[int, int] = (1, 1)
    count_include_pad: bool = True
    negative_slope: float = 0.0


#: the feature stages' codes in the kernels
FEATURE_CODES = {"conv": 0, "act": 1, "max": 2, "avg": 3}


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
    recurrent : RecurrentSpec, optional
        A recurrent layer in front: the input is then (N, T, I) and the
        first dense layer takes the layer's last hidden state.
    features : sequence of FeatureSpec, optional
        Image stages in front: the input is then (N, C, H, W) and the first
        dense layer takes the last stage's output, flattened.

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
        recurrent: RecurrentSpec | None = None,
        features: Sequence[FeatureSpec] | None = None,
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
        self.recurrent = None if recurrent is None else RecurrentSpec(*recurrent)
        if self.recurrent is not None:
            if self.flatten_input:
                raise ValueError("a recurrent plan reads sequences: flatten_input does not apply")
            if self.recurrent.cell not in _CELL_SHAPES:
                raise ValueError(
                    f"unknown recurrent cell {self.recurrent.cell!r}; choose one of {sorted(_CELL_SHAPES)}"
                )
            if self.recurrent.nonlinearity not in ("tanh", "relu"):
                raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {self.recurrent.nonlinearity!r}")
        self.features = tuple(FeatureSpec(*f) for f in features or ())
        if self.features and (self.recurrent is not None or self.flatten_input):
            raise ValueError("image stages take the input themselves: no recurrent layer or flatten_input with them")
        for f in self.features:
            if f.kind not in ("conv", "max", "avg") and f.kind not in ACTIVATION_CODES:
                raise ValueError(f"unknown image stage {f.kind!r}")
            if f.kind == "conv" and f.weight is None:
                raise ValueError("a conv stage needs a weight")
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
        for i, (w, _, _, _) in enumerate(self._feature_arrays()):
            if w is not None and w.dtype != dtype:
                raise TypeError(f"image stage {i} is {w.dtype}, layer 0 is {dtype}: a plan runs one dtype")
        if self.recurrent is not None:
            rec = self._recurrent_arrays()
            if rec[0].dtype != dtype:
                raise TypeError(f"the recurrent layer is {rec[0].dtype}, layer 0 is {dtype}: a plan runs one dtype")
            if rec[1].shape[1] != self.layers[0].weight.data.shape[1]:
                raise ValueError(
                    f"layer 0 takes {self.layers[0].weight.data.shape[1]} inputs but the recurrent layer's "
                    f"hidden size is {rec[1].shape[1]}"
                )
        return tuple(out)

    def _feature_shapes(self, image: tuple[int, int, int]) -> list[tuple[int, int, int]]:
        """Each image stage's output (C, H, W) for input images of shape ``image``; ValueError if they do not chain."""
        from . import conv as _conv

        shapes, shape = [], (1, *image)
        for i, f in enumerate(self.features):
            if f.kind == "conv":
                w = _p.check_param(f.weight, f"stage {i} weight", 4)  # type: ignore[arg-type]
                shape = _conv.conv2d_output_shape(shape, w.shape, f.stride, f.padding, f.dilation)
            elif f.kind in ("max", "avg"):
                shape = _conv.pool2d_output_shape(shape, f.kernel_size, f.stride, f.padding)
            shapes.append(tuple(shape[1:]))
        width = int(np.prod(shapes[-1]))
        if width != self.layers[0].weight.data.shape[1]:
            raise ValueError(
                f"the image stages give {width} features per sample (shape {shapes[-1]}) but layer 0 takes "
                f"{self.layers[0].weight.data.shape[1]}"
            )
        return shapes  # type: ignore[return-value]

    def _feature_arrays(self) -> list[tuple[Any, Any, Any, Any]]:
        """The validated (W, dW, b, db) of each conv stage (None for the other stages)."""
        out: list[tuple[Any, Any, Any, Any]] = []
        for i, f in enumerate(self.features):
            if f.kind == "conv":
                out.append(_p.bind_weight_bias(f.weight, f.bias, 4, f"stage {i}", show_weight_shape=True))  # type: ignore[arg-type]
            else:
                out.append((None, None, None, None))
        return out

    def _recurrent_arrays(self) -> tuple[FloatArray, ...]:
        """The validated (w_ih, w_hh, b_ih, b_hh, gw_ih, gw_hh, gb_ih, gb_hh) of the recurrent layer (biases may be None)."""
        spec = self.recurrent
        assert spec is not None
        G = _CELL_SHAPES[spec.cell][0]
        if (spec.bias_ih is None) != (spec.bias_hh is None):
            raise ValueError("the recurrent layer needs both biases or neither")
        w_ih = _p.check_param(spec.weight_ih, "weight_ih", 2)
        w_hh = _p.check_param(spec.weight_hh, "weight_hh", 2)
        gH = w_hh.shape[0]
        if gH % G or w_hh.shape[1] * G != gH or w_ih.shape[0] != gH or w_ih.dtype != w_hh.dtype or gH == 0:
            raise ValueError(
                f"{spec.cell}: weight_ih {w_ih.shape} and weight_hh {w_hh.shape} are not ({G}·H, I) and ({G}·H, H)"
            )
        grads: list[Any] = [_p.check_grad(spec.weight_ih, "weight_ih"), _p.check_grad(spec.weight_hh, "weight_hh")]
        biases: list[Any] = [None, None]
        if spec.bias_ih is not None and spec.bias_hh is not None:
            biases = [_p.check_param(spec.bias_ih, "bias_ih", 1), _p.check_param(spec.bias_hh, "bias_hh", 1)]
            if any(b.shape != (gH,) or b.dtype != w_ih.dtype for b in biases):
                raise ValueError(f"{spec.cell}: the biases must have shape ({gH},) and the weights' dtype")
            grads += [_p.check_grad(spec.bias_ih, "bias_ih"), _p.check_grad(spec.bias_hh, "bias_hh")]
        else:
            grads += [None, None]
        return (w_ih, w_hh, *biases, *grads)

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.layers[0].weight.data.dtype

    @property
    def in_features(self) -> int:
        """Features per row (per time step of a sample for a recurrent plan)."""
        if self.recurrent is not None:
            return int(self.recurrent.weight_ih.data.shape[1])
        return int(self.layers[0].weight.data.shape[1])

    def accepts(self, shape: tuple[int, ...]) -> bool:
        """Whether an input of this shape (samples first) is one the plan reads."""
        if len(shape) < 2:
            return False
        if self.recurrent is not None:
            return len(shape) == 3 and shape[1] >= 1 and shape[2] == self.in_features
        if self.features:
            if len(shape) != 4:
                return False
            try:
                self._feature_shapes((int(shape[1]), int(shape[2]), int(shape[3])))
            except (TypeError, ValueError):
                return False
            return True
        return (len(shape) == 2 or self.flatten_input) and int(np.prod(shape[1:])) == self.in_features

    @property
    def out_features(self) -> int:
        return int(self.layers[-1].weight.data.shape[0])

    def _key(self, backend: Any, bmax: int, sample: tuple[int, ...]) -> tuple[Any, ...]:
        ids: list[Any] = [id(backend), bmax, sample]
        for f in self.features:
            for p in (f.weight, f.bias):
                if p is not None:
                    ids += (id(p.data), id(p.grad))
        rec = self.recurrent
        if rec is not None:
            for p in (rec.weight_ih, rec.weight_hh, rec.bias_ih, rec.bias_hh):
                if p is not None:
                    ids += (id(p.data), id(p.grad))
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

    def _front(self, bmax: int, steps: int, training: bool) -> tuple[Any, ...]:
        """The recurrent layer's table for the backends: (cell, relu, T, arrays in the kernels' slot order).

        The sequence buffers are flat: a step of B rows uses their first
        T·B·(width) entries as (T, B, width) arrays, the layout the kernels take.
        """
        spec = self.recurrent
        assert spec is not None
        w_ih, w_hh, b_ih, b_hh, gw_ih, gw_hh, gb_ih, gb_hh = self._recurrent_arrays()
        dt = w_ih.dtype
        G, work = _CELL_SHAPES[spec.cell]
        H, nin, T = w_hh.shape[1], w_ih.shape[1], steps
        lstm, gru = spec.cell == "lstm", spec.cell == "gru"
        a: dict[str, Any] = dict(w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)
        a["x"] = np.empty(T * bmax * nin, dt)
        a["h0"] = np.zeros(bmax * H, dt)  # the states start at zero at every step: never written
        a["c0"] = np.zeros(bmax * H, dt) if lstm else None
        a["out"] = np.empty(T * bmax * H, dt)
        a["cell"] = np.empty(T * bmax * H, dt) if lstm else None
        a["gates"] = np.empty(T * bmax * G * H, dt) if G > 1 else None
        a["hn"] = np.empty(T * bmax * H, dt) if gru else None
        if training:
            a.update(gw_ih=gw_ih, gw_hh=gw_hh, gb_ih=gb_ih, gb_hh=gb_hh)
            a["work"] = np.empty(T * bmax * work * H, dt)
            a["go"] = np.zeros(T * bmax * H, dt)  # dL/d(out): zero but at the last step
            a["gh0"] = np.empty(bmax * H, dt)
            a["gc0"] = np.empty(bmax * H, dt) if lstm else None
        return (
            ("rnn", "lstm", "gru").index(spec.cell),
            spec.nonlinearity == "relu",
            T,
            tuple(a.get(k) for k in _SLOTS),
        )

    def _stages(self, bmax: int, image: tuple[int, ...], training: bool, dt: Any) -> tuple[Any, ...]:
        """The image stages' table for the backends (see fastnn.backends.reference.train.train_bind)."""
        shapes = self._feature_shapes(image)  # type: ignore[arg-type]
        table = []
        shape = tuple(image)
        for i, (f, (w, dw, b, db), out) in enumerate(zip(self.features, self._feature_arrays(), shapes)):
            C, H, W = shape
            O, ho, wo = out
            kh, kw = w.shape[2:] if w is not None else f.kernel_size
            geom = (C, H, W, O, kh, kw, ho, wo, *f.stride, *f.padding, *f.dilation, int(f.count_include_pad))
            code = FEATURE_CODES.get(f.kind, FEATURE_CODES["act"])
            act = ACTIVATION_CODES.get(f.kind, 0)
            y = np.empty((bmax, O * ho * wo), dt)
            idx = np.empty((bmax, O * ho * wo), np.int64) if f.kind == "max" else None
            gin = np.empty((bmax, C * H * W), dt) if training and i else None  # the first stage forms no dL/dx
            if not training:
                dw = db = None
            table.append((code, act, float(f.negative_slope), w, b, dw, db, geom, y, idx, gin))
            shape = out
        return tuple(table)

    def _binding(self, backend: Any, bmax: int, training: bool, sample: tuple[int, ...] = ()) -> Any:
        arrays = self._arrays()
        dt = arrays[0][0].dtype
        front = None if self.recurrent is None else self._front(bmax, sample[0], training)
        stages = self._stages(bmax, sample, training, dt) if self.features else None
        layers = []
        for i, ((w, dw, b, db), spec) in enumerate(zip(arrays, self.layers)):
            nout, nin = w.shape
            act = ACTIVATION_CODES[spec.activation]
            y = np.empty((bmax, nout), dt)
            delta = np.empty((bmax, nout), dt) if training and act else None
            # the first layer's dL/dx feeds the image stages' backward pass, or the recurrent layer's
            # BPTT (the cython kernel writes it straight into the last step of go instead)
            gin = np.empty((bmax, nin), dt) if training and (i or front is not None or stages) else None
            slope = float(spec.negative_slope)
            layers.append((w, b, dw if training else None, db if training else None, act, slope, y, delta, gin))
        nin, nout = arrays[0][0].shape[1], arrays[-1][0].shape[0]
        # a recurrent plan gathers its rows time-major into the sequence buffer (bmax rows of T·I values)
        if front is not None:
            xb = front[3][0].reshape(bmax, -1)
        else:
            xb = np.empty((bmax, int(np.prod(sample)) if stages else nin), dt)
        tb = np.empty(bmax, np.intp) if self.loss == "cross_entropy" else np.empty((bmax, nout), dt)
        gz = np.empty((bmax, nout), dt)
        params = [a for layer in arrays for a in layer if a is not None]
        if front is not None:
            params += [a for a in self._recurrent_arrays() if a is not None]
        params += [a for stage in self._feature_arrays() for a in stage if a is not None]
        updates: tuple[Any, ...] = ()
        if training:
            _, _, groups, _ = self.update._check()  # the optimizer's validated arrays (one dtype group)
            if len(groups) != 1 or groups[0][0][0].dtype != dt:
                raise TypeError("the optimizer's parameters must all have the network's dtype")
            ps, gs, states = groups[0]
            s1 = states[0] if states else (None,) * len(ps)
            s2 = states[1] if len(states) > 1 else (None,) * len(ps)
            bound = {id(a) for a in params}
            for p in ps:
                if id(p) not in bound:
                    raise ValueError("the optimizer updates a parameter that is not one of the plan's layers")
            # weight decay on every parameter, or (scikit-learn) on the weights only
            weights = {id(layer[0]) for layer in arrays}
            decay = tuple(1.0 if self.reduction != "sklearn" or id(p) in weights else 0.0 for p in ps)
            updates = tuple(zip(ps, gs, s1, s2, decay))
        # the kernels write y, delta, gin, gz and the gradients: none may overlap a parameter
        _p.check_disjoint("training plan", *params, xb, gz)
        if front is not None:
            return backend.train_bind(tuple(layers), updates, xb, tb, gz, front)
        if stages is not None:
            return backend.train_bind(tuple(layers), updates, xb, tb, gz, None, stages)
        return backend.train_bind(tuple(layers), updates, xb, tb, gz)

    def _bind(self, bmax: int, sample: tuple[int, ...]) -> Any:
        backend = _p.current()
        key = self._key(backend, bmax, sample)
        bound = self._bound
        if bound is None or bound[0] != key:
            bound = self._bound = (key, backend, self._binding(backend, bmax, True, sample))
        return bound

    def _sample(self, x: FloatArray) -> tuple[int, ...]:
        """What the workspace depends on besides the batch: a sample's shape (recurrent and image plans)."""
        return tuple(x.shape[1:]) if self.recurrent is not None or self.features else ()

    # -- running -----------------------------------------------------------------
    def _check_x(self, x: Any) -> FloatArray:
        if type(x) is not np.ndarray or x.dtype != self.dtype or not x.flags.c_contiguous:
            raise TypeError(f"x must be a C-contiguous numpy.ndarray of dtype {self.dtype}")
        if self.recurrent is not None:
            if not self.accepts(x.shape):
                raise ValueError(f"x must have shape (N, T, {self.in_features}) with T >= 1, got {x.shape}")
            return x
        if self.features:
            if x.ndim != 4:
                raise ValueError(f"x must hold images (N, C, H, W), got shape {x.shape}")
            self._feature_shapes(x.shape[1:])  # a ValueError naming the shapes when they do not chain
            return x
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
        x : ndarray (N, I) (with ``flatten_input``, (N, ...) flattening to I; recurrent: (N, T, I)),
            the plan's dtype, C-contiguous
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
            sample = self._sample(x)
            _, backend, binding = self._bind(max(batch_size, self._bmax(sample)), sample)
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

    def _bmax(self, sample: tuple[int, ...]) -> int:
        """The bound workspace's rows (0 when none is bound for samples of this shape)."""
        bound = self._bound
        return 0 if bound is None or bound[0][2] != sample else bound[0][1]

    def predict(self, x: FloatArray, batch_size: int = 256, out: FloatArray | None = None) -> FloatArray:
        """The network's output for every row of ``x``, in one call over all batches.

        Parameters
        ----------
        x : ndarray (N, I) (with ``flatten_input``, (N, ...) flattening to I; recurrent: (N, T, I)),
            the plan's dtype, C-contiguous
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
        binding = self._binding(backend, bs, False, self._sample(x))  # this call's own buffers: safe in any thread
        out = backend.predict_rows(binding, x, bs, out)
        return out
