"""Optimizers (SGD, Adam, AdamW), learning-rate schedules and gradient clipping.

The update rules are PyTorch's (``torch.optim.SGD`` without dampening,
``torch.optim.Adam``, ``torch.optim.AdamW``), run by the active backend's
fused kernels: one :class:`fastnn.ops.UpdatePlan` updates every parameter of
a dtype in one kernel call.

::

    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ...
    model.backward(loss_fn.backward())   # fills every p.grad
    opt.step()

An optimizer never replaces ``param.data``: arrays taken from a parameter
before or after building it stay the parameter's arrays. Hyper-parameters
are validated when set; ``step()`` checks only that the parameters still
hold the arrays it validated.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from . import _validation as _v
from . import ops
from ._typing import FloatArray
from .ops.optim import _adam_hyper

if TYPE_CHECKING:
    from .nn.module import Module, Parameter

#: What optimizers and :func:`clip_grad_norm` take: parameters, or a module's.
Params = Union["Iterable[Parameter]", "Module"]

__all__ = [
    "Optimizer",
    "SGD",
    "Adam",
    "AdamW",
    "clip_grad_norm",
    "LRScheduler",
    "StepLR",
    "CosineAnnealingLR",
    "ExponentialLR",
]


def _param_list(params: Params) -> list[Parameter]:
    from .nn.module import Module, Parameter

    plist = list(params.parameters() if isinstance(params, Module) else params)
    if not plist:
        raise ValueError("optimizer got an empty parameter list")
    for i, p in enumerate(plist):
        if not isinstance(p, Parameter):
            raise TypeError(f"parameter {i} is a {type(p).__name__}, not a fastnn.nn.Parameter")
    if len({id(p) for p in plist}) != len(plist):
        raise ValueError("some parameters appear more than once")
    return plist


class Optimizer:
    """Base class: parameters, learning rate ``lr`` and per-parameter state.

    Parameters
    ----------
    params : iterable of Parameter, or a Module
    lr : float >= 0

    Attributes
    ----------
    params : list of Parameter
    state : dict of str to list of ndarray
        The optimizer's state arrays (e.g. ``"velocity"``), one per parameter.

    Notes
    -----
    Subclasses name their state arrays in ``_state_names`` and implement
    ``_update`` with the bound :class:`fastnn.ops.UpdatePlan`. ``step`` may
    not run in two threads at once on one optimizer (``RuntimeError``).
    """

    _state_names: tuple[str, ...] = ()

    def __init__(self, params: Params, lr: float) -> None:
        self.params = _param_list(params)
        self.lr = lr
        self._plan = ops.UpdatePlan(self.params, self._state_names)
        self._plan._check()  # validate now, not at the first step
        self._step_lock = threading.Lock()

    @property
    def state(self) -> dict[str, list[FloatArray | None]]:
        return self._plan.state

    @property
    def lr(self) -> float:
        """Learning rate (schedulers change it between steps)."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = _v.scalar(value, "lr", low=0.0)

    def zero_grad(self) -> None:
        """Set every gradient to zero (not needed between steps: ``backward`` overwrites them)."""
        for p in self.params:
            p.grad[...] = 0

    def step(self) -> None:
        """Update every parameter in place from its ``grad``."""
        if not self._step_lock.acquire(blocking=False):
            raise RuntimeError(f"{type(self).__name__}.step is already running in another thread")
        try:
            self._update()
        finally:
            self._step_lock.release()

    def _update(self) -> None:
        raise NotImplementedError

    # hyper-parameters that ``state_dict`` records besides ``lr`` (subclasses extend it)
    _hyper_names: tuple = ()

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state, for a checkpoint: hyper-parameters, step count and state arrays.

        Returns
        -------
        dict
            ``{"type": class name, "hyper": {name: value}, "step_count": int,
            "state": {name: [ndarray, ...]}}``; the arrays are copies. JSON
            values and arrays only, so :func:`fastnn.save_checkpoint` stores it
            without pickle.
        """
        hyper: dict[str, Any] = {"lr": self.lr}
        for name in self._hyper_names:
            value = getattr(self, name)
            hyper[name] = list(value) if isinstance(value, tuple) else value
        return {
            "type": type(self).__name__,
            "hyper": hyper,
            "step_count": int(getattr(self, "step_count", 0)),
            "state": {name: [np.array(a, copy=True) for a in self.state[name]] for name in self._state_names},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned, in place (the state arrays keep their identity).

        Parameters
        ----------
        state : dict
            From :meth:`state_dict` of an optimizer of the same class, built
            with the same parameters (shapes and dtypes) and state layout.

        Raises
        ------
        ValueError
            If ``state`` belongs to another optimizer class, another set of
            parameters or another state layout (SGD with and without momentum).
        """
        if not isinstance(state, dict) or set(state) != {"type", "hyper", "step_count", "state"}:
            raise ValueError("not an optimizer state_dict (it must hold type, hyper, step_count and state)")
        if state["type"] != type(self).__name__:
            raise ValueError(f"the state_dict is of a {state['type']} optimizer, this is a {type(self).__name__}")
        arrays = state["state"]
        if not isinstance(arrays, dict) or set(arrays) != set(self._state_names):
            raise ValueError(
                f"the state_dict holds state {sorted(arrays) if isinstance(arrays, dict) else arrays!r}, "
                f"this {type(self).__name__} keeps {list(self._state_names)}"
            )
        self._plan._check()  # make sure every state array exists before copying into it
        for name in self._state_names:
            src, dst = arrays[name], self.state[name]
            if len(src) != len(dst):
                raise ValueError(f"the state_dict has {len(src)} {name} arrays for {len(dst)} parameters")
            for i, (a, d) in enumerate(zip(src, dst)):
                a = np.asarray(a)
                want = (None, None) if d is None else (d.shape, d.dtype)
                if (a.shape, a.dtype) != want:
                    raise ValueError(
                        f"{name}[{i}] is {a.shape} {a.dtype} in the state_dict, the parameter needs {want[0]} {want[1]}"
                    )
        hyper = dict(state["hyper"])
        if set(hyper) != {"lr", *self._hyper_names}:
            raise ValueError(
                f"the state_dict has hyper-parameters {sorted(hyper)}, this {type(self).__name__} "
                f"has {['lr', *self._hyper_names]}"
            )
        self.lr = hyper.pop("lr")
        for name, value in hyper.items():
            if isinstance(getattr(self, name), tuple):
                value = tuple(value)
            if name in ("momentum", "nesterov") and value != getattr(self, name):
                raise ValueError(
                    f"the state_dict has {name}={value!r}, this optimizer was built with "
                    f"{name}={getattr(self, name)!r} (it changes the state it keeps)"
                )
            setattr(self, name, value)
        if hasattr(self, "step_count"):
            self.step_count = int(state["step_count"])
        for name in self._state_names:
            for a, d in zip(arrays[name], self.state[name]):
                d[...] = a  # type: ignore[index]  # every array exists: checked above

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_step_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._step_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lr={self.lr}, {len(self.params)} parameters)"


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and weight decay.

    ::

        g = grad + weight_decay·param
        v = momentum·v + g                         (v = g at the first step)
        param −= lr · (g + momentum·v  if nesterov  else  v)

    Parameters
    ----------
    params : iterable of Parameter, or a Module
    lr : float, default 0.01
    momentum : float in [0, 1), default 0
    nesterov : bool, default False (needs momentum > 0)
    weight_decay : float >= 0, default 0

    Attributes
    ----------
    velocity : list of ndarray or None, the momentum buffer of each parameter
    """

    _hyper_names = ("momentum", "nesterov", "weight_decay")

    def __init__(
        self, params: Params, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0
    ) -> None:
        self.momentum = _v.scalar(momentum, "momentum", low=0.0, high=1.0, high_open=True)
        self.weight_decay = _v.scalar(weight_decay, "weight_decay", low=0.0)
        self.nesterov = _v.strict_bool(nesterov, "nesterov")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov momentum needs momentum > 0")
        self._state_names = ("velocity",) if self.momentum else ()
        super().__init__(params, lr)

    @property
    def velocity(self) -> list[FloatArray | None]:
        return self.state["velocity"] if self.momentum else [None] * len(self.params)

    def _update(self) -> None:
        self._plan.sgd(self._lr, self.momentum, self.nesterov, self.weight_decay)


class Adam(Optimizer):
    """Adam (Kingma & Ba), PyTorch's rule; weight decay as an L2 term in the gradient.

    Parameters
    ----------
    params : iterable of Parameter, or a Module
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    weight_decay : float, default 0

    Attributes
    ----------
    exp_avg, exp_avg_sq : list of ndarray, the moment estimates of each parameter
    step_count : int, steps taken
    """

    _decoupled = False
    _state_names = ("exp_avg", "exp_avg_sq")
    _hyper_names = ("betas", "eps", "weight_decay")

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        b1, b2 = betas
        b1, b2, eps, weight_decay = _adam_hyper(b1, b2, eps, weight_decay)
        self.betas = (b1, b2)
        self.eps = eps
        self.weight_decay = weight_decay
        self.step_count = 0
        super().__init__(params, lr)

    @property
    def exp_avg(self) -> list[FloatArray | None]:
        return self.state["exp_avg"]

    @property
    def exp_avg_sq(self) -> list[FloatArray | None]:
        return self.state["exp_avg_sq"]

    def _update(self) -> None:
        self.step_count += 1
        b1, b2 = self.betas
        self._plan.adam(self.step_count, self._lr, b1, b2, self.eps, self.weight_decay, self._decoupled)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), PyTorch's rule.

    ``param ← param·(1 − lr·weight_decay)`` before the Adam update.

    Parameters
    ----------
    params, lr, betas, eps : as :class:`Adam`
    weight_decay : float, default 0.01 (PyTorch's default)
    """

    _decoupled = True

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay)


def clip_grad_norm(params: Params, max_norm: float, eps: float = 1e-6) -> float:
    """Scale all gradients so that their global L2 norm is at most ``max_norm``.

    ``total = sqrt(Σ_p ‖p.grad‖²)``; if ``total > max_norm`` every gradient
    is multiplied by ``max_norm / (total + eps)`` (PyTorch's
    ``clip_grad_norm_``).

    Parameters
    ----------
    params : iterable of Parameter, or a Module
    max_norm : float > 0
    eps : float, default 1e-6

    Returns
    -------
    float
        The norm before clipping (``inf``/``nan`` if a gradient is not finite;
        gradients are then left as they are).
    """
    from .nn.module import Module

    plist = params.parameters() if isinstance(params, Module) else params
    max_norm = _v.scalar(max_norm, "max_norm", low=0.0, low_open=True)
    total_sq = 0.0
    grads: list[FloatArray] = []
    for p in plist:
        g = p.grad
        flat = g.reshape(-1)
        total_sq += float(np.dot(flat, flat)) if g.dtype == np.float64 else float(np.dot(flat, flat.astype(np.float64)))
        grads.append(g)
    total = math.sqrt(total_sq)
    if math.isfinite(total):
        coef = max_norm / (total + eps)
        if coef < 1.0:
            for g in grads:
                g *= g.dtype.type(coef)
    return total


# -- learning-rate schedules ----------------------------------------------


class LRScheduler:
    """Base class: ``step()`` once per epoch sets ``optimizer.lr`` from the epoch count.

    Parameters
    ----------
    optimizer : Optimizer
    """

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"a scheduler needs a fastnn optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0

    def get_lr(self, epoch: int) -> float:
        raise NotImplementedError

    def step(self) -> None:
        """Advance one epoch and set the optimizer's learning rate."""
        self.last_epoch += 1
        self.optimizer.lr = self.get_lr(self.last_epoch)

    def get_last_lr(self) -> float:
        return self.optimizer.lr

    def state_dict(self) -> dict[str, Any]:
        """``{"type", "base_lr", "last_epoch"}``: what a checkpoint needs to continue the schedule."""
        return {"type": type(self).__name__, "base_lr": self.base_lr, "last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s values and set the optimizer's learning rate to match.

        Raises
        ------
        ValueError
            If ``state`` is not a state_dict of this schedule's class.
        """
        if not isinstance(state, dict) or set(state) != {"type", "base_lr", "last_epoch"}:
            raise ValueError("not a learning-rate schedule state_dict (it must hold type, base_lr and last_epoch)")
        if state["type"] != type(self).__name__:
            raise ValueError(f"the state_dict is of a {state['type']} schedule, this is a {type(self).__name__}")
        self.base_lr = _v.scalar(state["base_lr"], "base_lr", low=0.0)
        self.last_epoch = _v.strict_int(state["last_epoch"], "last_epoch", low=0)
        if self.last_epoch:
            self.optimizer.lr = self.get_lr(self.last_epoch)


def _schedule_length(value: int, name: str) -> int:
    """``value`` as a positive Python int (a whole float is accepted)."""
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class StepLR(LRScheduler):
    """``lr = base_lr · gamma^(epoch // step_size)``.

    Parameters
    ----------
    optimizer : Optimizer
    step_size : int > 0
    gamma : float, default 0.1
    """

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        super().__init__(optimizer)
        self.step_size = _schedule_length(step_size, "step_size")
        self.gamma = _v.scalar(gamma, "gamma", low=0.0)

    def get_lr(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class ExponentialLR(LRScheduler):
    """``lr = base_lr · gamma^epoch``."""

    def __init__(self, optimizer: Optimizer, gamma: float) -> None:
        super().__init__(optimizer)
        self.gamma = _v.scalar(gamma, "gamma", low=0.0)

    def get_lr(self, epoch: int) -> float:
        return self.base_lr * self.gamma**epoch


class CosineAnnealingLR(LRScheduler):
    """Cosine decay from ``base_lr`` to ``eta_min`` over ``T_max`` epochs.

    ``lr = eta_min + (base_lr − eta_min)·(1 + cos(π·epoch / T_max)) / 2``
    (PyTorch's closed form; the curve is continued periodically after T_max).

    Parameters
    ----------
    optimizer : Optimizer
    T_max : int > 0
    eta_min : float, default 0
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:
        super().__init__(optimizer)
        self.T_max = _schedule_length(T_max, "T_max")
        self.eta_min = _v.scalar(eta_min, "eta_min", low=0.0)

    def get_lr(self, epoch: int) -> float:
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2
