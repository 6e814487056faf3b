"""Optimizers (SGD, Adam, AdamW), learning-rate schedules and gradient clipping.

The update rules are PyTorch's (``torch.optim.SGD`` without dampening,
``torch.optim.Adam``, ``torch.optim.AdamW``), run by the active backend's
fused kernels (:func:`fastnn.ops.sgd_update`, :func:`fastnn.ops.adam_update`).

::

    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ...
    model.backward(loss_fn.backward())   # fills every p.grad
    opt.step()

Arguments are validated when the optimizer is built and whenever a
parameter's arrays change; ``step()`` itself then goes straight to the kernel.
"""

from __future__ import annotations

import math

import numpy as np

from . import _validation as _v
from .backends import current as _current

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "clip_grad_norm",
           "LRScheduler", "StepLR", "CosineAnnealingLR", "ExponentialLR"]


def _param_list(params):
    from .nn.module import Module, Parameter

    if isinstance(params, Module):
        params = params.parameters()
    params = list(params)
    if not params:
        raise ValueError("optimizer got an empty parameter list")
    for i, p in enumerate(params):
        if not isinstance(p, Parameter):
            raise TypeError(f"parameter {i} is a {type(p).__name__}, not a fastnn.nn.Parameter")
    if len({id(p) for p in params}) != len(params):
        raise ValueError("some parameters appear more than once")
    return params


class Optimizer:
    """Base class: parameters, learning rate ``lr`` and per-parameter state.

    Parameters
    ----------
    params : iterable of Parameter, or a Module
    lr : float >= 0
    flatten : bool, default True
        Move consecutive *relocatable* parameters of one dtype (those of
        fastnn's built-in layers, see :class:`fastnn.nn.Parameter`) into one
        contiguous buffer, so that ``step()`` updates them with a single
        kernel call. Their ``data`` and ``grad`` then become views into that
        buffer: values are unchanged, but take references to ``param.data``
        after building the optimizer, not before.

    Notes
    -----
    Subclasses name their state arrays in ``_state_names`` (zero-initialised,
    one per parameter, in ``self.state[name]``) and implement ``step``
    over ``self._slots``: ``(members, data, grad, states)`` per contiguous
    segment, ``members`` being ``(param, data, grad)`` triples whose identity
    is checked before each update.
    """

    _state_names: tuple = ()

    def __init__(self, params, lr, flatten=True):
        self.params = _param_list(params)
        self.lr = lr
        for p in self.params:
            self._check(p)
        self._segments = self._flatten() if flatten else [([i], None, None) for i in range(len(self.params))]
        # per-parameter state (views into per-segment buffers)
        self.state = {name: [None] * len(self.params) for name in self._state_names}
        self._build_slots(self._segments, fresh=True)

    @property
    def lr(self) -> float:
        """Learning rate (schedulers change it between steps)."""
        return self._lr

    @lr.setter
    def lr(self, value):
        self._lr = _v.scalar(value, "lr", low=0.0)

    def _flatten(self):
        segments = []
        params = self.params
        i = 0
        while i < len(params):
            j = i + 1
            if params[i].relocatable:
                while j < len(params) and params[j].relocatable and params[j].data.dtype == params[i].data.dtype:
                    j += 1
            if j - i > 1:
                group = params[i:j]
                total = sum(p.data.size for p in group)
                dt = group[0].data.dtype
                flat_d = np.empty(total, dt)
                flat_g = np.zeros(total, dt)
                off = 0
                for p in group:
                    n = p.data.size
                    d = flat_d[off:off + n].reshape(p.data.shape)
                    g = flat_g[off:off + n].reshape(p.data.shape)
                    d[...] = p.data
                    g[...] = p.grad
                    p.data, p.grad = d, g
                    off += n
                segments.append((list(range(i, j)), flat_d, flat_g))
            else:
                segments.append(([i], None, None))
            i = j
        return segments

    def _build_slots(self, segments, fresh=False):
        slots = []
        for seg, flat_d, flat_g in segments:
            members = tuple((self.params[k], self.params[k].data, self.params[k].grad) for k in seg)
            if len(seg) == 1:
                p = self.params[seg[0]]
                data, grad = p.data, p.grad
                states = []
                for name in self._state_names:
                    arr = self.state[name][seg[0]]
                    if arr is None or arr.shape != data.shape or arr.dtype != data.dtype \
                            or not arr.flags.c_contiguous:
                        arr = np.zeros_like(data) if arr is None or arr.shape != data.shape \
                            else np.ascontiguousarray(arr, dtype=data.dtype)
                        self.state[name][seg[0]] = arr
                    states.append(arr)
            else:
                total = flat_d.size
                data, grad = flat_d, flat_g
                states = []
                for name in self._state_names:
                    flat = np.zeros(total, data.dtype)
                    off = 0
                    for k in seg:
                        n = self.params[k].data.size
                        view = flat[off:off + n].reshape(self.params[k].data.shape)
                        old = self.state[name][k]
                        if old is not None and old.shape == view.shape:
                            view[...] = old
                        self.state[name][k] = view
                        off += n
                    states.append(flat)
            slots.append((members, data, grad, tuple(states)))
        self._slots = slots

    def _refresh(self):
        """Some parameter's arrays were replaced: validate again, one slot per parameter."""
        for p in self.params:
            self._check(p)
        self._segments = [([i], None, None) for i in range(len(self.params))]
        self._build_slots(self._segments)

    def zero_grad(self) -> None:
        """Set every gradient to zero (not needed: ``backward`` overwrites them)."""
        for p in self.params:
            p.grad.fill(0)

    @staticmethod
    def _check(p):
        _v.inplace(p.data, "param")
        if type(p.grad) is not np.ndarray or p.grad.shape != p.data.shape or p.grad.dtype != p.data.dtype \
                or not p.grad.flags.c_contiguous or not p.grad.flags.writeable:
            raise ValueError(f"{p!r}: grad must be a writeable C-contiguous array of the parameter's shape and dtype")
        if np.may_share_memory(p.data, p.grad):
            raise ValueError(f"{p!r}: data and grad share memory")

    def step(self) -> None:
        """Update every parameter in place from its ``grad``."""
        raise NotImplementedError

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
    flatten : bool, default True (see :class:`Optimizer`)

    Attributes
    ----------
    velocity : list of ndarray or None, the momentum buffer of each parameter
    """

    def __init__(self, params, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0, flatten=True):
        self.momentum = _v.scalar(momentum, "momentum", low=0.0, high=1.0, high_open=True)
        self.weight_decay = _v.scalar(weight_decay, "weight_decay", low=0.0)
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov momentum needs momentum > 0")
        self._state_names = ("velocity",) if self.momentum else ()
        super().__init__(params, lr, flatten)

    @property
    def velocity(self):
        return self.state["velocity"] if self.momentum else [None] * len(self.params)

    def step(self) -> None:
        """Update every parameter in place from its ``grad``."""
        kernel = _current().sgd_update
        lr, mom, nest, wd = self._lr, self.momentum, self.nesterov, self.weight_decay
        for members, data, grad, states in self._slots:
            for p, d, g in members:
                if p.data is not d or p.grad is not g:
                    self._refresh()
                    return self.step()
            kernel(data, grad, states[0] if states else None, lr, mom, nest, wd)


class Adam(Optimizer):
    """Adam (Kingma & Ba), PyTorch's rule; weight decay as an L2 term in the gradient.

    Parameters
    ----------
    params : iterable of Parameter, or a Module
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    weight_decay : float, default 0
    flatten : bool, default True (see :class:`Optimizer`)

    Attributes
    ----------
    exp_avg, exp_avg_sq : list of ndarray, the moment estimates of each parameter
    step_count : int, steps taken
    """

    _decoupled = False
    _state_names = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, flatten=True):
        b1, b2 = betas
        self.betas = (_v.scalar(b1, "beta1", low=0.0, high=1.0, high_open=True),
                      _v.scalar(b2, "beta2", low=0.0, high=1.0, high_open=True))
        self.eps = _v.scalar(eps, "eps", low=0.0, low_open=True)
        self.weight_decay = _v.scalar(weight_decay, "weight_decay", low=0.0)
        self.step_count = 0
        super().__init__(params, lr, flatten)

    @property
    def exp_avg(self):
        return self.state["exp_avg"]

    @property
    def exp_avg_sq(self):
        return self.state["exp_avg_sq"]

    def step(self) -> None:
        """One Adam step on every parameter."""
        for members, _, _, _ in self._slots:
            for p, d, g in members:
                if p.data is not d or p.grad is not g:
                    self._refresh()
                    break
        self.step_count += 1
        t = self.step_count
        kernel = _current().adam_update
        lr, (b1, b2), eps, wd, dec = self._lr, self.betas, self.eps, self.weight_decay, self._decoupled
        for members, data, grad, (m, v) in self._slots:
            kernel(data, grad, m, v, t, lr, b1, b2, eps, wd, dec)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), PyTorch's rule.

    ``param ← param·(1 − lr·weight_decay)`` before the Adam update.

    Parameters
    ----------
    params, lr, betas, eps, flatten : as :class:`Adam`
    weight_decay : float, default 0.01 (PyTorch's default)
    """

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, flatten=True):
        super().__init__(params, lr, betas, eps, weight_decay, flatten)


def clip_grad_norm(params, max_norm, eps=1e-6) -> float:
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

    if isinstance(params, Module):
        params = params.parameters()
    max_norm = _v.scalar(max_norm, "max_norm", low=0.0, low_open=True)
    total_sq = 0.0
    grads = []
    for p in params:
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

    def __init__(self, optimizer):
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


class StepLR(LRScheduler):
    """``lr = base_lr · gamma^(epoch // step_size)``.

    Parameters
    ----------
    optimizer : Optimizer
    step_size : int > 0
    gamma : float, default 0.1
    """

    def __init__(self, optimizer, step_size, gamma=0.1):
        super().__init__(optimizer)
        if int(step_size) != step_size or step_size < 1:
            raise ValueError(f"step_size must be a positive integer, got {step_size!r}")
        self.step_size = int(step_size)
        self.gamma = _v.scalar(gamma, "gamma", low=0.0)

    def get_lr(self, epoch):
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class ExponentialLR(LRScheduler):
    """``lr = base_lr · gamma^epoch``."""

    def __init__(self, optimizer, gamma):
        super().__init__(optimizer)
        self.gamma = _v.scalar(gamma, "gamma", low=0.0)

    def get_lr(self, epoch):
        return self.base_lr * self.gamma ** epoch


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

    def __init__(self, optimizer, T_max, eta_min=0.0):
        super().__init__(optimizer)
        if int(T_max) != T_max or T_max < 1:
            raise ValueError(f"T_max must be a positive integer, got {T_max!r}")
        self.T_max = int(T_max)
        self.eta_min = _v.scalar(eta_min, "eta_min", low=0.0)

    def get_lr(self, epoch):
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2
