"""Compiled training plans for whole models: which models qualify, and their plans.

:func:`fastnn.fit`, :meth:`fastnn.TrainStep.run_steps`, :func:`fastnn.predict`
and :func:`fastnn.evaluate` ask :func:`train_plan` (or :func:`forward_plan`)
for a :class:`fastnn.ops.TrainPlan` and run whole runs of steps in one call
of the compiled backend when they get one. A model qualifies when it is a
chain of dense layers, optionally behind one recurrent layer:

* a :class:`~fastnn.nn.Sequential` (not a subclass) or a single
  :class:`~fastnn.nn.Linear`, of :class:`~fastnn.nn.Linear` layers, each
  optionally followed by one :class:`~fastnn.nn.ReLU`,
  :class:`~fastnn.nn.Sigmoid`, :class:`~fastnn.nn.Tanh` or
  :class:`~fastnn.nn.LeakyReLU`; a :class:`~fastnn.nn.Flatten` in front
  (``(N, C, H, W)`` input read as rows) or after a Linear (a no-op);
  a :class:`~fastnn.nn.Dropout` with ``p=0``;
* or, first, image stages: :class:`~fastnn.nn.Conv2d`,
  :class:`~fastnn.nn.MaxPool2d`, :class:`~fastnn.nn.AvgPool2d` and the
  activations above, in any order, then a :class:`~fastnn.nn.Flatten`,
  then the dense layers (``(N, C, H, W)`` input);
* or, first, a single-layer unidirectional :class:`~fastnn.nn.RNN`
  (tanh or ReLU), :class:`~fastnn.nn.LSTM` or :class:`~fastnn.nn.GRU` with
  ``batch_first=True`` (``fit``'s samples are the rows of ``X``), then
  :class:`~fastnn.nn.LastTimeStep` (``batch_first=True``), then the dense
  layers;
* every parameter of one dtype, no parameter used twice;
* with :class:`~fastnn.nn.CrossEntropyLoss`, :class:`~fastnn.nn.MSELoss` or
  :class:`~fastnn.nn.BCEWithLogitsLoss`, and :class:`~fastnn.optim.SGD`
  (momentum, Nesterov, weight decay), :class:`~fastnn.optim.Adam` or
  :class:`~fastnn.optim.AdamW` updating the model's parameters (learning
  rate schedules change ``lr`` between calls, which the plan reads at every call).

Anything else (grouped or 1-D convolutions, adaptive pooling, deep or bidirectional recurrent
layers, normalisation, dropout with ``p > 0``, gradient clipping, custom
modules or losses) keeps the per-step loop; :func:`explain` says why, and
``fit(verbose=True)`` prints it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .ops.train_plan import DenseSpec, FeatureSpec, RecurrentSpec, TrainPlan

if TYPE_CHECKING:
    from .nn.loss import Loss
    from .nn.module import Module
    from .optim import Optimizer

__all__ = ["train_plan", "forward_plan", "explain", "hyper_parameters"]


class Unsupported(Exception):
    """The model, loss or optimizer has no compiled plan (the message says why)."""


def _replaced(obj: Any) -> str | None:
    """A method replaced on the instance (a hook, a wrapper): the plan would bypass it."""
    for name in ("forward", "backward", "step", "_update"):
        if name in getattr(obj, "__dict__", {}):
            return name
    return None


def _recurrent_front(mods: list[Any]) -> RecurrentSpec | None:
    """The recurrent layer that heads ``mods`` (with the LastTimeStep after it), or None if it has none."""
    from .nn import GRU, LSTM, RNN, LastTimeStep

    kind = type(mods[0]) if mods else None
    if kind not in (RNN, LSTM, GRU):
        return None
    m: Any = mods[0]
    if m.num_layers != 1 or m.bidirectional:
        raise Unsupported(f"layer 0 is a {kind.__name__} with several layers or directions (plans take one layer, one direction)")  # fmt: skip
    if not m.batch_first:
        raise Unsupported(f"layer 0 is a {kind.__name__} with batch_first=False (fit's samples are the rows of X)")
    if m.return_state:
        raise Unsupported(f"layer 0 is a {kind.__name__} with return_state=True")
    if len(mods) < 2 or type(mods[1]) is not LastTimeStep or not mods[1].batch_first:
        raise Unsupported(f"layer 0 is a {kind.__name__} not followed by LastTimeStep(batch_first=True)")
    return RecurrentSpec(
        m._cell, m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0, getattr(m, "nonlinearity", "tanh")
    )


def _image_stages(mods: list[Any], seen: set[int]) -> list[FeatureSpec]:
    """The image stages that head ``mods`` (up to the Flatten after them), or [] if it has none."""
    from .nn import AvgPool2d, Conv2d, Dropout, Flatten, LeakyReLU, MaxPool2d, ReLU, Sigmoid, Tanh

    acts = {ReLU: "relu", Sigmoid: "sigmoid", Tanh: "tanh", LeakyReLU: "leaky_relu"}
    stages: list[FeatureSpec] = []
    for i, m in enumerate(mods):
        kind: Any = type(m)
        if kind is Conv2d:
            for p in (m.weight, m.bias):
                if p is not None and id(p) in seen:
                    raise Unsupported(f"layer {i} shares its parameters with an earlier layer")
                if p is not None:
                    seen.add(id(p))
            pl = m._plan
            stages.append(FeatureSpec("conv", m.weight, m.bias, pl.stride, pl.padding, pl.dilation))
        elif kind is MaxPool2d or kind is AvgPool2d:
            pl = m._plan
            stages.append(FeatureSpec(pl.kind, None, None, pl.stride, pl.padding, (1, 1), pl.kernel_size,
                                      pl.count_include_pad))  # fmt: skip
        elif kind in acts and stages:
            slope = m.negative_slope if kind is LeakyReLU else 0.0
            stages.append(FeatureSpec(acts[kind], negative_slope=slope))
        elif kind is Dropout and m.p == 0 and stages:
            continue
        elif kind is Flatten and stages:
            if (m.start_dim, m.end_dim) != (1, -1):
                raise Unsupported(f"layer {i} is Flatten(start_dim={m.start_dim}, end_dim={m.end_dim})")
            return stages
        elif stages:
            raise Unsupported(
                f"layer {i} is a {kind.__name__} between image stages (plans take Conv2d, MaxPool2d, AvgPool2d "
                f"and activations, then Flatten)"
            )
        else:
            return []
    if stages:
        raise Unsupported("the image stages are not followed by Flatten and Linear layers")
    return stages


def _dense_chain(model: Module) -> tuple[list[DenseSpec], bool, RecurrentSpec | None, list[FeatureSpec]]:
    """The model's dense layers, whether it starts with a Flatten, the recurrent layer in front (or None),
    and the image stages in front (or [])."""
    from .nn import Dropout, Flatten, LeakyReLU, Linear, ReLU, Sequential, Sigmoid, Tanh

    if type(model) is Linear:
        mods: list[Any] = [model]
    elif type(model) is Sequential:
        mods = list(model)
    else:
        raise Unsupported(f"the model is a {type(model).__name__}, not a Sequential of dense layers")
    specs: list[DenseSpec] = []
    fused = {ReLU: "relu", Sigmoid: "sigmoid", Tanh: "tanh", LeakyReLU: "leaky_relu"}
    seen: set[int] = set()
    flatten_input = False
    for m in (model, *mods):
        if _replaced(m):
            raise Unsupported(f"{type(m).__name__}.{_replaced(m)} is replaced on the instance")
    front = _recurrent_front(mods)
    if front is not None:
        for p in (front.weight_ih, front.weight_hh, front.bias_ih, front.bias_hh):
            if p is not None:
                seen.add(id(p))
    stages = _image_stages(mods, seen)
    skip = 2 if front is not None else 0
    if stages:  # the stages, what was skipped among them and their Flatten
        skip = next(i for i, m in enumerate(mods) if type(m) is Flatten) + 1
    for i, m in enumerate(mods):
        if i < skip:
            continue
        kind = type(m)
        if kind is Linear:
            for p in (m.weight, m.bias):
                if p is not None and id(p) in seen:
                    raise Unsupported(f"layer {i} shares its parameters with an earlier layer")
                if p is not None:
                    seen.add(id(p))
            specs.append(DenseSpec(m.weight, m.bias))
        elif kind in fused:
            if not specs or specs[-1].activation != "identity":
                raise Unsupported(f"layer {i} ({kind.__name__}) does not follow a Linear layer")
            slope = m.negative_slope if kind is LeakyReLU else 0.0
            specs[-1] = specs[-1]._replace(activation=fused[kind], negative_slope=slope)
        elif kind is Flatten:
            if (m.start_dim, m.end_dim) != (1, -1):
                raise Unsupported(f"layer {i} is Flatten(start_dim={m.start_dim}, end_dim={m.end_dim})")
            flatten_input = flatten_input or not specs  # after a Linear it changes nothing
        elif kind is Dropout and m.p == 0:
            continue
        else:
            raise Unsupported(
                f"layer {i} is a {kind.__name__} (compiled plans take Linear layers and activations, "
                f"behind at most one RNN, LSTM or GRU with LastTimeStep)"
            )
    if not specs:
        raise Unsupported("the model has no Linear layer")
    dtypes = {s.weight.data.dtype for s in specs}
    if front is not None:
        dtypes.add(front.weight_ih.data.dtype)
    dtypes |= {f.weight.data.dtype for f in stages if f.weight is not None}
    if len(dtypes) > 1:
        raise Unsupported("the layers mix dtypes")
    return specs, flatten_input, front, stages


def hyper_parameters(optimizer: Optimizer) -> tuple[str, tuple[float, float, float, float, float, float]]:
    """The optimizer's code and its 6 numbers for :meth:`fastnn.ops.TrainPlan.run` (read at every call)."""
    from .optim import SGD, Adam, AdamW

    kind = type(optimizer)
    if kind is SGD:
        o: Any = optimizer
        return "sgd", (o.lr, o.momentum, float(o.nesterov), o.weight_decay, 0.0, 0.0)
    if kind is Adam or kind is AdamW:
        a: Any = optimizer
        return "adam", (a.lr, a.betas[0], a.betas[1], a.weight_decay, a.eps, float(a._decoupled))
    raise Unsupported(f"the optimizer is a {kind.__name__} (compiled plans take SGD, Adam and AdamW)")


def train_plan(model: Module, loss: Loss, optimizer: Optimizer) -> TrainPlan:
    """A :class:`fastnn.ops.TrainPlan` for training ``model`` with ``loss`` and ``optimizer``.

    Raises
    ------
    Unsupported
        The model, loss or optimizer is outside what plans cover (the
        message says which part); train with the per-step loop.
    """
    from .nn.loss import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss

    specs, flatten_input, front, stages = _dense_chain(model)
    if type(loss) not in (CrossEntropyLoss, MSELoss, BCEWithLogitsLoss):
        raise Unsupported(f"the loss is a {type(loss).__name__} (compiled plans take CrossEntropy, MSE, BCEWithLogits)")
    opt, _ = hyper_parameters(optimizer)
    for obj in (loss, optimizer):
        if _replaced(obj):
            raise Unsupported(f"{type(obj).__name__}.{_replaced(obj)} is replaced on the instance")
    params = {id(s.weight) for s in specs} | {id(s.bias) for s in specs if s.bias is not None}
    if front is not None:
        params |= {id(p) for p in (front.weight_ih, front.weight_hh, front.bias_ih, front.bias_hh) if p is not None}
    params |= {id(p) for f in stages for p in (f.weight, f.bias) if p is not None}
    if any(id(p) not in params for p in optimizer.params):
        raise Unsupported("the optimizer updates parameters outside the model")
    if optimizer.params[0].data.dtype != specs[0].weight.data.dtype:
        raise Unsupported("the optimizer's parameters are not of the model's dtype")
    try:
        return TrainPlan(specs, loss._kind, loss.reduction, optimizer._plan, opt, flatten_input, front, stages)
    except (TypeError, ValueError) as exc:
        raise Unsupported(str(exc)) from None


def forward_plan(model: Module) -> TrainPlan:
    """A forward-only plan (:meth:`fastnn.ops.TrainPlan.predict`) for ``model``; raises Unsupported."""
    try:
        specs, flatten_input, front, stages = _dense_chain(model)
        return TrainPlan(specs, flatten_input=flatten_input, recurrent=front, features=stages)
    except (TypeError, ValueError) as exc:
        raise Unsupported(str(exc)) from None


def explain(model: Module, loss: Loss | None = None, optimizer: Optimizer | None = None) -> str | None:
    """None if the model (with this loss and optimizer) has a compiled plan, else the reason it has none."""
    try:
        if loss is None or optimizer is None:
            forward_plan(model)
        else:
            train_plan(model, loss, optimizer)
    except Unsupported as exc:
        return str(exc)
    return None
