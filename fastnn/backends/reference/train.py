"""Whole training steps of a dense network in one call: the specification of the compiled plans.

A training plan (:class:`fastnn.ops.TrainPlan`) binds a chain of dense
layers ``y_l = act_l(y_{l-1}·W_lᵀ + b_l)``, a loss and an optimizer's
update once, then runs K steps per call. One step, for the minibatch of
rows ``index[s·B : (s+1)·B]``:

1. gather the rows of ``x`` and of the targets;
2. forward through every layer (each output kept for the backward pass);
3. the loss of the last output and its gradient ``g = dL/dy_L``;
4. backward, last layer first: ``δ = g ⊙ act'(y_l)``, ``dW_l = δᵀ·y_{l-1}``,
   ``db_l = Σ_batch δ``, ``g = δ·W_l`` (not formed for the first layer);
5. the optimizer's update of every bound parameter.

It is the per-step loop of :func:`fastnn.fit` over the same kernels, so this
module is written with the reference kernels of those stages and is what
the compiled versions must reproduce. A step whose loss is not finite stops
the run before its backward pass; an index outside ``[0, N)`` or a label
outside ``[0, C)`` stops it before the step that holds it.

Codes shared by every backend: activations ``0`` identity, ``1`` ReLU, ``2``
sigmoid, ``3`` tanh, ``4`` leaky ReLU (the compiled library's numbering);
losses ``0`` softmax cross-entropy, ``1`` MSE, ``2`` BCE with logits;
optimizers ``0`` SGD, ``1`` Adam (AdamW: Adam with ``decoupled``).
"""

import math

import numpy as np

from . import activations as _act
from . import losses as _losses
from . import optim as _optim
from .dense import dense_backward, dense_forward

__all__ = ["train_bind", "train_steps", "predict_rows"]

#: Activation names by code.
ACTIVATIONS = ("identity", "relu", "sigmoid", "tanh", "leaky_relu")

# how a run of steps ended (train_steps' status)
DONE, NONFINITE, BAD_INDEX, BAD_LABEL = 0, 1, 2, 3


class _Binding:
    """The bound network: layers, updates and the workspace buffers (see :func:`train_bind`)."""

    __slots__ = ("layers", "updates", "xb", "tb", "gz")

    def __init__(self, layers, updates, xb, tb, gz):
        self.layers, self.updates, self.xb, self.tb, self.gz = layers, updates, xb, tb, gz


def train_bind(layers, updates, xb, tb, gz):
    """Bind a dense network, its updates and its workspace for :func:`train_steps`.

    Parameters
    ----------
    layers : tuple of (w, b, gw, gb, act, slope, y, delta, gin)
        Per layer, first to last: weight (O, I), bias (O,) or None, their
        gradient arrays (written by every step), the activation code and the
        leaky-ReLU slope, and the workspace: ``y`` (Bmax, O) the output,
        ``delta`` (Bmax, O) for ``g ⊙ act'(y)`` (None for the identity),
        ``gin`` (Bmax, I) for ``dL/dx`` (None for the first layer).
    updates : tuple of (param, grad, state1, state2)
        The parameters the optimizer updates, in its order: SGD's velocity
        (None without momentum) and None, or Adam's two moments.
    xb : ndarray (Bmax, I) for the gathered inputs
    tb : ndarray for the gathered targets: intp (Bmax,) labels or (Bmax, C) values
    gz : ndarray (Bmax, C) for dL/d(output)

    Returns
    -------
    An opaque binding. Its arrays are written by every call that uses it.
    """
    return _Binding(layers, updates, xb, tb, gz)


def _forward(bd, x, nb):
    """Every layer's output for the nb rows of x (the last is returned)."""
    inp = x
    for w, b, _, _, act, slope, y, _, _ in bd.layers:
        y = y[:nb]
        if act == 4:
            dense_forward(inp, w, b, "identity", y)
            _act.leaky_relu(y, slope, y)
        else:
            dense_forward(inp, w, b, ACTIVATIONS[act], y)
        inp = y
    return inp


def _backward(bd, x, nb):
    """Every parameter gradient from dL/d(output) in ``bd.gz`` (dL/dx of the first layer not formed)."""
    g = bd.gz[:nb]
    layers = bd.layers
    for i in range(len(layers) - 1, -1, -1):
        w, b, gw, gb, act, slope, y, delta, gin = layers[i]
        xin = x if i == 0 else layers[i - 1][6][:nb]
        y = y[:nb]
        gin = None if gin is None else gin[:nb]
        if act == 4:
            d = _act.leaky_relu_backward(g, y, slope, delta[:nb])
            dense_backward(d, xin, w, y, "identity", gin, gw, gb)
        else:
            dense_backward(g, xin, w, y, ACTIVATIONS[act], gin, gw, gb)
        g = gin


def _update(bd, opt, hyper, step):
    lr, h1, h2, wd, eps, decoupled = hyper
    for p, g, s1, s2 in bd.updates:
        if opt == 0:
            _optim.sgd_update(p, g, s1, lr, h1, bool(h2), wd)
        else:
            _optim.adam_update(p, g, s1, s2, step, lr, h1, h2, eps, wd, bool(decoupled))


def train_steps(bd, x, target, index, batch_size, loss, mean, opt, hyper, step0, losses, pred):
    """Run ``len(losses)`` training steps; returns ``(steps run, status)``.

    Parameters
    ----------
    bd : a binding from :func:`train_bind`
    x : ndarray (N, I), the model's dtype
    target : ndarray, intp labels (N,) for cross-entropy, else (N, C) values
    index : intp ndarray, the rows of each step's minibatch, in order
    batch_size : int, rows per step (the last step takes what is left)
    loss : int, the loss code
    mean : bool, mean (else sum) reduction
    opt : int, the optimizer code
    hyper : tuple of 6 floats
        SGD: ``(lr, momentum, nesterov, weight_decay, 0, 0)``; Adam:
        ``(lr, beta1, beta2, weight_decay, eps, decoupled)``.
    step0 : int, Adam's step count before the first step
    losses : float64 ndarray, one loss per step (written)
    pred : ndarray or None
        Written per sample in index order: the argmax of the output (intp),
        or per target whether the output is > 0 (bool).

    Returns
    -------
    (int, int)
        Steps run, and why the run ended: ``0`` all ran, ``1`` the loss of
        the next step is not finite (stored in ``losses``; that step changed
        nothing), ``2`` that step holds an index outside ``[0, N)``, ``3`` a
        label outside ``[0, C)``.
    """
    n = x.shape[0]
    nsteps = losses.shape[0]
    reduction = "mean" if mean else "sum"
    x2 = x.reshape(n, -1)
    for s in range(nsteps):
        rows = index[s * batch_size : (s + 1) * batch_size]
        nb = rows.shape[0]
        if nb and (rows.min() < 0 or rows.max() >= n):
            return s, BAD_INDEX
        xb = bd.xb[:nb]
        np.take(x2, rows, axis=0, out=xb)
        tb = bd.tb[:nb]
        np.take(target, rows, axis=0, out=tb)
        nout = bd.gz.shape[1]
        if loss == 0 and nb and (tb.min() < 0 or tb.max() >= nout):
            return s, BAD_LABEL
        z = _forward(bd, xb, nb)
        gz = bd.gz[:nb]
        if loss == 0:
            value, _ = _losses.softmax_cross_entropy(z, tb, reduction, gz)
        elif loss == 1:
            value, _ = _losses.mse_loss(z, tb, reduction, gz)
        else:
            value, _ = _losses.bce_with_logits(z, tb, reduction, gz)
        losses[s] = value
        if not math.isfinite(value):
            return s, NONFINITE
        if pred is not None:
            lo = s * batch_size
            if pred.dtype == np.intp:
                np.argmax(z, axis=1, out=pred[lo : lo + nb])
            else:
                np.greater(z, 0, out=pred[lo * nout : (lo + nb) * nout].reshape(nb, nout))
        _backward(bd, xb, nb)
        _update(bd, opt, hyper, step0 + s + 1)
    return nsteps, DONE


def predict_rows(bd, x, batch_size, out):
    """``out`` = the network's output for every row of ``x``, ``batch_size`` rows per pass.

    The binding must be this call's own (its buffers are overwritten).
    """
    n = x.shape[0]
    x2 = x.reshape(n, -1)
    for lo in range(0, n, batch_size):
        nb = min(batch_size, n - lo)
        out[lo : lo + nb] = _forward(bd, x2[lo : lo + nb], nb)
    return out
