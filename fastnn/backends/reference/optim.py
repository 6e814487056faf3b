"""Optimizer updates, in place on the parameter and its state.

Both follow PyTorch's update rules exactly (``torch.optim.SGD`` without
dampening, ``torch.optim.Adam`` and ``torch.optim.AdamW``), so that a model
trained with the same seed and data takes the same steps.
"""

import numpy as np

__all__ = ["sgd_update", "adam_update", "sgd_update_many", "adam_update_many"]


def sgd_update(param, grad, velocity, lr, momentum, nesterov, weight_decay):
    """One step of stochastic gradient descent, in place.

    ::

        g = grad + weight_decay · param
        v = momentum · v + g                 (if momentum > 0)
        g = g + momentum · v  (Nesterov)  or  g = v
        param = param − lr · g

    The velocity starts at zero, so the first step sets ``v = g`` as PyTorch
    does.

    Parameters
    ----------
    param : ndarray, updated in place
    grad : ndarray of the same shape
    velocity : ndarray of the same shape (updated in place), or None when
        ``momentum == 0``
    lr, momentum, weight_decay : float
    nesterov : bool
    """
    g = grad + weight_decay * param if weight_decay else grad
    if momentum:
        velocity *= momentum
        velocity += g
        g = g + momentum * velocity if nesterov else velocity
    param -= lr * g


def adam_update(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    """One Adam (or AdamW) step, in place.

    ::

        AdamW:  param = param · (1 − lr · weight_decay)   (decoupled)
        Adam:   g = grad + weight_decay · param           (L2 in the gradient)
        m = β1 · m + (1 − β1) · g
        v = β2 · v + (1 − β2) · g²
        param = param − lr / (1 − β1^t) · m / (sqrt(v) / sqrt(1 − β2^t) + eps)

    Parameters
    ----------
    param, grad, exp_avg, exp_avg_sq : ndarray of one shape; all but grad
        updated in place
    step : int, the step number t >= 1 (after incrementing)
    lr, beta1, beta2, eps, weight_decay : float
    decoupled : bool, True for AdamW
    """
    if weight_decay and decoupled:
        param *= 1 - lr * weight_decay
        g = grad
    elif weight_decay:
        g = grad + weight_decay * param
    else:
        g = grad
    exp_avg *= beta1
    exp_avg += (1 - beta1) * g
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * (g * g)
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    denom = np.sqrt(exp_avg_sq) / np.sqrt(bias_correction2) + eps
    param -= (lr / bias_correction1) * (exp_avg / denom)


def sgd_update_many(params, grads, velocities, lr, momentum, nesterov, weight_decay):
    """:func:`sgd_update` on each ``(params[i], grads[i], velocities[i])`` (velocities None without momentum)."""
    for i in range(len(params)):
        sgd_update(
            params[i], grads[i], None if velocities is None else velocities[i], lr, momentum, nesterov, weight_decay
        )


def adam_update_many(params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    """:func:`adam_update` on each ``(params[i], grads[i], exp_avgs[i], exp_avg_sqs[i])``."""
    for i in range(len(params)):
        adam_update(
            params[i], grads[i], exp_avgs[i], exp_avg_sqs[i], step, lr, beta1, beta2, eps, weight_decay, decoupled
        )
