"""Optimizer update kernels, in place (see the reference for the math)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast

import numpy as np

from .. import _validation as _v
from .._typing import ArrayLike, FloatArray, NDArray, ParamLike
from ..backends import Backend
from ..backends import current as _backend

__all__ = ["sgd_update", "adam_update", "sgd_update_many", "adam_update_many", "UpdatePlan"]


def _state(param: FloatArray, grad: ArrayLike, *states: tuple[str, FloatArray]) -> tuple[FloatArray, FloatArray]:
    param = _v.inplace(param, "param")
    grad = _v.as_float_array(grad, "grad")
    _v.same_dtype(param.dtype, grad, "grad")
    _v.same_shape(param.shape, grad, "grad", "param")
    seen: list[tuple[str, NDArray[Any]]] = [("param", param), ("grad", grad)]
    for name, arr in states:
        _v.inplace(arr, name)
        _v.same_dtype(param.dtype, arr, name)
        _v.same_shape(param.shape, arr, name, "param")
        seen.append((name, arr))
    # every update reads one array while it writes another: they must be distinct memory
    for k, (name, arr) in enumerate(seen):
        for other, arr2 in seen[:k]:
            if np.may_share_memory(arr, arr2):
                raise ValueError(f"{name} must not overlap {other}")
    return param, grad


def _step(step: int | float) -> int:
    """Adam's step count as a Python int in [1, 2**63 - 1] (integral floats accepted)."""
    if isinstance(step, (bool, np.bool_)) or not isinstance(step, (int, np.integer, float, np.floating)):
        raise TypeError(f"step must be an integer, got {type(step).__name__}")
    if isinstance(step, (float, np.floating)) and not float(step).is_integer():
        raise ValueError(f"step must be an integer >= 1, got {step!r}")
    if not 1 <= step <= 2**63 - 1:  # the kernels take a 64-bit step count
        raise ValueError(f"step must be an integer in [1, 2**63 - 1], got {step!r}")
    return int(step)


def _sgd_hyper(lr: float, momentum: float, nesterov: bool, weight_decay: float) -> tuple[float, float, float]:
    """SGD's ``lr``, ``momentum`` and ``weight_decay`` checked as Python floats; Nesterov needs momentum."""
    lr = _v.scalar(lr, "lr", low=0.0)
    momentum = _v.scalar(momentum, "momentum", low=0.0, high=1.0, high_open=True)
    weight_decay = _v.scalar(weight_decay, "weight_decay", low=0.0)
    if nesterov and momentum == 0:
        raise ValueError("nesterov momentum needs momentum > 0")
    return lr, momentum, weight_decay


def _adam_hyper(beta1: float, beta2: float, eps: float, weight_decay: float) -> tuple[float, float, float, float]:
    """Adam's ``beta1``, ``beta2`` in [0, 1), ``eps`` > 0 and ``weight_decay`` >= 0, checked as Python floats."""
    return (
        _v.scalar(beta1, "beta1", low=0.0, high=1.0, high_open=True),
        _v.scalar(beta2, "beta2", low=0.0, high=1.0, high_open=True),
        _v.scalar(eps, "eps", low=0.0, low_open=True),
        _v.scalar(weight_decay, "weight_decay", low=0.0),
    )


def sgd_update(
    param: FloatArray,
    grad: ArrayLike,
    velocity: FloatArray | None = None,
    lr: float = 0.01,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> FloatArray:
    """One SGD step on ``param``, in place (PyTorch's rule, no dampening).

    Parameters
    ----------
    param : ndarray, C-contiguous, updated in place
    grad : array_like of the same shape and dtype
    velocity : ndarray of the same shape, updated in place
        Momentum buffer, start it at zeros; required when ``momentum > 0``.
    lr : float, >= 0
    momentum : float in [0, 1)
    nesterov : bool
    weight_decay : float, >= 0 (L2 penalty added to the gradient)
    """
    lr, momentum, weight_decay = _sgd_hyper(lr, momentum, nesterov, weight_decay)
    if momentum:
        if velocity is None:
            raise ValueError("sgd_update with momentum > 0 needs a velocity buffer")
        param, grad = _state(param, grad, ("velocity", velocity))
    else:
        param, grad = _state(param, grad)
        velocity = None
    _backend().sgd_update(param, grad, velocity, lr, momentum, bool(nesterov), weight_decay)
    return param


def adam_update(
    param: FloatArray,
    grad: ArrayLike,
    exp_avg: FloatArray,
    exp_avg_sq: FloatArray,
    step: int,
    lr: float = 1e-3,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled: bool = False,
) -> FloatArray:
    """One Adam step (AdamW with ``decoupled=True``) on ``param``, in place.

    Parameters
    ----------
    param : ndarray, C-contiguous, updated in place
    grad : array_like of the same shape and dtype
    exp_avg, exp_avg_sq : ndarray of the same shape, updated in place
        First and second moment estimates; start them at zeros.
    step : int >= 1, the number of this step (for bias correction)
    lr, beta1, beta2, eps, weight_decay : float
    decoupled : bool
        False: Adam with L2 penalty in the gradient. True: AdamW's decoupled
        weight decay.
    """
    step = _step(step)
    lr = _v.scalar(lr, "lr", low=0.0)
    beta1, beta2, eps, weight_decay = _adam_hyper(beta1, beta2, eps, weight_decay)
    param, grad = _state(param, grad, ("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq))
    _backend().adam_update(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, bool(decoupled))
    return param


def _many(
    params: Sequence[FloatArray],
    grads: Sequence[ArrayLike],
    states: Sequence[tuple[str, Sequence[FloatArray] | None]],
    name: str,
) -> tuple[tuple[FloatArray, ...], tuple[FloatArray, ...], list[tuple[FloatArray, ...] | None]]:
    """Check parallel sequences of parameters, gradients and optimizer states of one dtype."""
    params, grads = tuple(params), tuple(grads)
    if len(grads) != len(params) or any(s is not None and len(s) != len(params) for _, s in states):
        raise ValueError(f"{name}: params, grads and states must have the same length")
    if not params:
        raise ValueError(f"{name}: no parameters")
    out_states = [tuple(s) if s is not None else None for _, s in states]
    checked_p: list[FloatArray] = []
    checked_g: list[FloatArray] = []
    for i, (p, g) in enumerate(zip(params, grads)):
        per = [(f"{sname}[{i}]", s[i]) for (sname, _), s in zip(states, out_states) if s is not None]
        p, g = _state(p, g, *per)
        if p.dtype != params[0].dtype:
            raise TypeError(f"{name}: every parameter must have one dtype, got {params[0].dtype} and {p.dtype}")
        checked_p.append(p)
        checked_g.append(g)
    written = checked_p + [a for s in out_states if s is not None for a in s]
    for i, a in enumerate(written):  # no array may be updated through two names
        for b in written[i + 1 :]:
            if np.may_share_memory(a, b):
                raise ValueError(f"{name}: parameters and optimizer states must not overlap")
    return tuple(checked_p), tuple(checked_g), out_states


def sgd_update_many(
    params: Sequence[FloatArray],
    grads: Sequence[ArrayLike],
    velocities: Sequence[FloatArray] | None = None,
    lr: float = 0.01,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> tuple[FloatArray, ...]:
    """:func:`sgd_update` on several parameters of one dtype in one call.

    Parameters
    ----------
    params, grads : sequences of ndarray, pairwise of one shape
    velocities : sequence of ndarray, optional (required when ``momentum > 0``)
    lr, momentum, nesterov, weight_decay : as :func:`sgd_update`
    """
    lr, momentum, weight_decay = _sgd_hyper(lr, momentum, nesterov, weight_decay)
    if momentum and velocities is None:
        raise ValueError("sgd_update_many with momentum > 0 needs velocity buffers")
    params, grads, (velocities,) = _many(
        params, grads, [("velocity", velocities if momentum else None)], "sgd_update_many"
    )
    _backend().sgd_update_many(params, grads, velocities, lr, momentum, bool(nesterov), weight_decay)
    return params


def adam_update_many(
    params: Sequence[FloatArray],
    grads: Sequence[ArrayLike],
    exp_avgs: Sequence[FloatArray],
    exp_avg_sqs: Sequence[FloatArray],
    step: int,
    lr: float = 1e-3,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled: bool = False,
) -> tuple[FloatArray, ...]:
    """:func:`adam_update` on several parameters of one dtype in one call.

    Parameters
    ----------
    params, grads, exp_avgs, exp_avg_sqs : sequences of ndarray, element-wise of one shape
    step, lr, beta1, beta2, eps, weight_decay, decoupled : as :func:`adam_update`
    """
    if isinstance(step, bool) or int(step) != step or step < 1:
        raise ValueError(f"step must be an integer >= 1, got {step!r}")
    lr = _v.scalar(lr, "lr", low=0.0)
    beta1, beta2, eps, weight_decay = _adam_hyper(beta1, beta2, eps, weight_decay)
    params, grads, (m, v) = _many(
        params, grads, [("exp_avg", exp_avgs), ("exp_avg_sq", exp_avg_sqs)], "adam_update_many"
    )
    _backend().adam_update_many(params, grads, m, v, int(step), lr, beta1, beta2, eps, weight_decay, bool(decoupled))
    return params


# ---------------------------------------------------------------------------
# The bound form optimizers use (see fastnn.ops._plan)

from . import _plan as _p  # noqa: E402

#: One dtype's arrays: (params, grads, one tuple of arrays per state name)
_Group = tuple["tuple[FloatArray, ...]", "tuple[FloatArray, ...]", "tuple[tuple[FloatArray, ...], ...]"]
#: (backend, (data, grad) per parameter, groups by dtype, every state array in order)
_UpdateBound = tuple[
    Backend, "tuple[tuple[FloatArray, FloatArray], ...]", "tuple[_Group, ...]", "tuple[FloatArray | None, ...]"
]


class UpdatePlan:
    """Fused optimizer updates bound to a list of parameters, with their state arrays.

    Parameters
    ----------
    params : sequence of Parameter-like
        Objects whose ``.data`` is updated in place from ``.grad``.
    state_names : sequence of str
        The optimizer's state arrays per parameter (SGD with momentum:
        ``("velocity",)``; Adam: ``("exp_avg", "exp_avg_sq")``), created as
        zeros here and kept in :attr:`state`.

    Attributes
    ----------
    state : dict of str to list of ndarray
        One array per parameter for each state name. A parameter whose array
        changes shape or dtype gets fresh zero state at the next step.

    Notes
    -----
    Parameters are grouped by dtype; each group is updated by one kernel
    call. The arrays are validated when first seen; a step then checks that
    every parameter and state still holds the same arrays (identity), else
    validates again.
    """

    __slots__ = ("params", "state_names", "state", "_bound")

    params: tuple[ParamLike, ...]
    state_names: tuple[str, ...]
    state: dict[str, list[FloatArray | None]]
    _bound: _UpdateBound | None

    def __init__(self, params: Iterable[ParamLike], state_names: Iterable[str] = ()) -> None:
        self.params = tuple(params)
        self.state_names = tuple(state_names)
        self.state = {name: [None] * len(self.params) for name in self.state_names}
        self._bound = None

    def __getstate__(self) -> dict[str, Any]:
        return {"params": self.params, "state_names": self.state_names, "state": self.state}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.params, self.state_names, self.state = state["params"], state["state_names"], state["state"]
        self._bound = None

    def _bind(self) -> _UpdateBound:
        backend = _p.current()
        arrays = tuple((_p.check_param(p, "param"), _p.check_grad(p, "param")) for p in self.params)
        for name in self.state_names:
            states = self.state[name]
            for i, (d, _) in enumerate(arrays):
                st = states[i]
                if (
                    type(st) is not _p.ndarray
                    or st.shape != d.shape
                    or st.dtype != d.dtype
                    or not st.flags.c_contiguous
                    or not st.flags.writeable
                ):
                    states[i] = np.zeros_like(d)
        groups: dict[np.dtype[Any], list[int]] = {}
        for i, (d, _) in enumerate(arrays):
            groups.setdefault(d.dtype, []).append(i)
        bound_groups = []
        for idx in groups.values():
            ps = tuple(arrays[i][0] for i in idx)
            gs = tuple(arrays[i][1] for i in idx)
            # no None left: the loop above filled every state slot with an array
            sts = [cast("tuple[FloatArray, ...]", tuple(self.state[name][i] for i in idx)) for name in self.state_names]
            # the full checks of the ops, once: shapes, layout, no array updated twice
            _many(ps, gs, list(zip(self.state_names, sts)), "optimizer")
            bound_groups.append((ps, gs, tuple(sts)))
        state_ids = tuple(a for name in self.state_names for a in self.state[name])
        bound = (backend, arrays, tuple(bound_groups), state_ids)
        self._bound = bound
        return bound

    def _check(self) -> _UpdateBound:
        k = self._bound
        if k is None or k[0] is not _p.current():
            return self._bind()
        for p, (d, g) in zip(self.params, k[1]):
            if p.data is not d or p.grad is not g or d.shape != g.shape:
                return self._bind()
        if self.state_names:
            i = 0
            for name in self.state_names:
                for a in self.state[name]:
                    if a is not k[3][i]:
                        return self._bind()
                    i += 1
        return k

    def sgd(self, lr: float, momentum: float, nesterov: bool, weight_decay: float) -> None:
        """One SGD step (see :func:`sgd_update`); hyper-parameters already validated."""
        k = self._check()
        kernel = k[0].sgd_update_many
        for ps, gs, sts in k[2]:
            kernel(ps, gs, sts[0] if sts else None, lr, momentum, nesterov, weight_decay)

    def adam(
        self, step: int, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float, decoupled: bool
    ) -> None:
        """One Adam/AdamW step (see :func:`adam_update`); hyper-parameters already validated."""
        k = self._check()
        kernel = k[0].adam_update_many
        for ps, gs, (m, v) in k[2]:
            kernel(ps, gs, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled)
