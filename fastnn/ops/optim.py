"""Optimizer update kernels, in place (see the reference for the math)."""

import numpy as np

from .. import _validation as _v
from ..backends import current as _backend

__all__ = ["sgd_update", "adam_update"]


def _state(param, grad, *states):
    param = _v.inplace(param, "param")
    grad = _v.as_float_array(grad, "grad")
    _v.same_dtype(param.dtype, grad, "grad")
    _v.same_shape(param.shape, grad, "grad", "param")
    seen = [("param", param), ("grad", grad)]
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


def _step(step):
    """Adam's step count as a Python int in [1, 2**63 - 1] (integral floats accepted)."""
    if isinstance(step, (bool, np.bool_)) or not isinstance(step, (int, np.integer, float, np.floating)):
        raise TypeError(f"step must be an integer, got {type(step).__name__}")
    if isinstance(step, (float, np.floating)) and not float(step).is_integer():
        raise ValueError(f"step must be an integer >= 1, got {step!r}")
    if not 1 <= step <= 2**63 - 1:  # the kernels take a 64-bit step count
        raise ValueError(f"step must be an integer in [1, 2**63 - 1], got {step!r}")
    return int(step)


def sgd_update(param, grad, velocity=None, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
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
    lr = _v.scalar(lr, "lr", low=0.0)
    momentum = _v.scalar(momentum, "momentum", low=0.0, high=1.0, high_open=True)
    weight_decay = _v.scalar(weight_decay, "weight_decay", low=0.0)
    if nesterov and momentum == 0:
        raise ValueError("nesterov momentum needs momentum > 0")
    if momentum:
        if velocity is None:
            raise ValueError("sgd_update with momentum > 0 needs a velocity buffer")
        param, grad = _state(param, grad, ("velocity", velocity))
    else:
        param, grad = _state(param, grad)
        velocity = None
    _backend().sgd_update(param, grad, velocity, lr, momentum, bool(nesterov), weight_decay)
    return param


def adam_update(param, grad, exp_avg, exp_avg_sq, step, lr=1e-3, beta1=0.9, beta2=0.999,
                eps=1e-8, weight_decay=0.0, decoupled=False):
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
    beta1 = _v.scalar(beta1, "beta1", low=0.0, high=1.0, high_open=True)
    beta2 = _v.scalar(beta2, "beta2", low=0.0, high=1.0, high_open=True)
    eps = _v.scalar(eps, "eps", low=0.0, low_open=True)
    weight_decay = _v.scalar(weight_decay, "weight_decay", low=0.0)
    param, grad = _state(param, grad, ("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq))
    _backend().adam_update(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps,
                           weight_decay, bool(decoupled))
    return param
