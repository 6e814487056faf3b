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

**A recurrent layer in front** (``front``, see :func:`train_bind`): the
input rows are sequences ``(T, I)``. Step 1 gathers them time-major into a
``(T, B, I)`` sequence; step 2 first runs the layer's forward kernel from
zero states and feeds its last hidden state ``h_T`` to the first dense
layer; step 4 forms the first dense layer's ``g·W`` too (``dL/dh_T``) and
runs the layer's BPTT kernel with ``dL/d(out)`` zero but at the last step
(no ``dL/dx``, no gradient of the final state): the per-step loop of
``Sequential(RNN, LastTimeStep, Linear ...)``, batch-first.

**Image stages in front** (``stages``): the input rows are images ``(C, H,
W)``. Step 2 first runs the stages in order (convolution, max or average
pooling, activation), the last one's output flattened into the first dense
layer; step 4 forms the first dense layer's ``g·W`` too and runs the stages'
backward passes last to first, the first stage forming no ``dL/dx`` (a
convolution there writes its weight gradients only).

It is the per-step loop of :func:`fastnn.fit` over the same kernels, so this
module is written with the reference kernels of those stages and is what
the compiled versions must reproduce. A step whose loss is not finite stops
the run before its backward pass; an index outside ``[0, N)`` or a label
outside ``[0, C)`` stops it before the step that holds it.

Codes shared by every backend: activations ``0`` identity, ``1`` ReLU, ``2``
sigmoid, ``3`` tanh, ``4`` leaky ReLU (the compiled library's numbering);
losses ``0`` softmax cross-entropy, ``1`` MSE, ``2`` BCE with logits;
reductions ``0`` sum, ``1`` mean, ``2`` scikit-learn's convention (below);
optimizers ``0`` SGD, ``1`` Adam (AdamW: Adam with ``decoupled``).

**scikit-learn's convention** (reduction ``2``, what ``fastnn.sklearn``'s
MLPs train with). The three losses are scikit-learn's output activation and
loss: softmax and log-loss (``0``), identity and half the squared error
averaged over the outputs (``1``), logistic and binary log-loss summed over
the outputs (``2``). For each, ``dL/dz = (act(z) − y) / B`` over the B rows
of the step, and the loss divides by B; the probabilities in a log-loss are
clipped to ``[eps, 1 − eps]`` (``eps`` of the dtype), as scikit-learn's are.
The weight decay ``wd`` is scikit-learn's ``alpha``: ``alpha / B · W`` is
added to the gradient of the updates marked to decay (the weights, not the
intercepts) and ``alpha / (2B) · Σ‖W‖²`` to the loss; Adam's ``eps`` is
added after the bias correction of ``v`` (``eps / sqrt(1 − β2ᵗ)`` in
fastnn's form). Losses are summed in float64.
"""

import math

import numpy as np

from . import activations as _act
from . import conv as _conv
from . import losses as _losses
from . import optim as _optim
from . import rnn as _rnn
from .dense import dense_backward, dense_forward

__all__ = ["train_bind", "train_steps", "predict_rows"]

#: Activation names by code.
ACTIVATIONS = ("identity", "relu", "sigmoid", "tanh", "leaky_relu")

# how a run of steps ended (train_steps' status)
DONE, NONFINITE, BAD_INDEX, BAD_LABEL = 0, 1, 2, 3
# reductions (train_steps' ``reduction``)
SUM, MEAN, SKLEARN = 0, 1, 2


class _Binding:
    """The bound network: layers, updates and the workspace buffers (see :func:`train_bind`)."""

    __slots__ = ("layers", "updates", "xb", "tb", "gz", "front", "stages")

    def __init__(self, layers, updates, xb, tb, gz, front, stages):
        self.layers, self.updates, self.xb, self.tb, self.gz = layers, updates, xb, tb, gz
        self.front, self.stages = front, stages


def train_bind(layers, updates, xb, tb, gz, front=None, stages=None):
    """Bind a dense network, its updates and its workspace for :func:`train_steps`.

    Parameters
    ----------
    layers : tuple of (w, b, gw, gb, act, slope, y, delta, gin)
        Per layer, first to last: weight (O, I), bias (O,) or None, their
        gradient arrays (written by every step), the activation code and the
        leaky-ReLU slope, and the workspace: ``y`` (Bmax, O) the output,
        ``delta`` (Bmax, O) for ``g ⊙ act'(y)`` (None for the identity),
        ``gin`` (Bmax, I) for ``dL/dx`` (None for the first layer).
    updates : tuple of (param, grad, state1, state2, decay)
        The parameters the optimizer updates, in its order: SGD's velocity
        (None without momentum) and None, or Adam's two moments; ``decay``
        1.0 where the weight decay applies, 0.0 where it does not.
    xb : ndarray (Bmax, I) for the gathered inputs
    tb : ndarray for the gathered targets: intp (Bmax,) labels or (Bmax, C) values
    gz : ndarray (Bmax, C) for dL/d(output)
    front : tuple (cell, relu, T, arrays), optional
        A recurrent layer in front: ``cell`` 0 RNN, 1 LSTM, 2 GRU; ``relu``
        the RNN's nonlinearity; ``T`` the steps of a sequence; ``arrays`` by
        the recurrent kernels' slot names (``fastnn.ops.train_plan._SLOTS``:
        x, h0, c0, w_ih, w_hh, b_ih, b_hh, out, cell, gates, hn, work, go,
        ghn, gcn, gx, gh0, gc0, gw_ih, gw_hh, gb_ih, gb_hh; None where the
        cell has none). The workspace arrays are flat, used as (T, B, ·) for a
        step of B rows; ``x`` is also ``xb``, ``h0`` and ``c0`` are zeros,
        ``go`` is zeros but at the last step. The first dense layer then has
        a ``gin`` (Bmax, H).
    stages : tuple, optional
        Image stages in front, first to last, each ``(code, act, slope, w,
        b, gw, gb, geom, y, indices, gin)``: ``code`` 0 convolution (``w``
        (O, C, kH, kW), ``b`` or None and their gradients), 1 activation
        (``act``, ``slope``), 2 max pooling, 3 average pooling; ``geom`` =
        (C, H, W, O, kH, kW, Ho, Wo, sH, sW, pH, pW, dH, dW,
        count_include_pad) of one image; ``y`` (Bmax, O·Ho·Wo) the output,
        ``indices`` (Bmax, O·Ho·Wo) int64 for max pooling (else None),
        ``gin`` (Bmax, C·H·W) for dL/dx (None for the first stage). ``xb``
        is then (Bmax, C·H·W) and the first dense layer has a ``gin``.

    Returns
    -------
    An opaque binding. Its arrays are written by every call that uses it.
    """
    return _Binding(layers, updates, xb, tb, gz, front, stages)


def _image(a, nb, C, H, W):
    return a[:nb].reshape(nb, C, H, W)


def _stages_forward(stages, x, nb):
    """Every image stage's output for the nb images in x (nb, C·H·W); the last one's, flattened."""
    inp = x[:nb]
    for code, act, slope, w, b, _, _, geom, y, idx, _ in stages:
        C, H, W, O, kh, kw, ho, wo, sh, sw, ph, pw, dh, dw, cip = geom
        xi, yi = _image(inp, nb, C, H, W), _image(y, nb, O, ho, wo)
        if code == 0:
            _conv.conv2d_forward(xi, w, b, (sh, sw), (ph, pw), (dh, dw), yi)
        elif code == 1:
            _act_forward(act, xi, slope, yi)
        elif code == 2:
            _conv.max_pool2d_forward(xi, (kh, kw), (sh, sw), (ph, pw), yi, _image(idx, nb, O, ho, wo))
        else:
            _conv.avg_pool2d_forward(xi, (kh, kw), (sh, sw), (ph, pw), bool(cip), yi)
        inp = y[:nb]
    return inp


def _act_forward(act, x, slope, y):
    if act == 4:
        _act.leaky_relu(x, slope, y)
    else:
        getattr(_act, ACTIVATIONS[act])(x, y)


def _stages_backward(stages, x, g, nb):
    """The stages' backward passes from g = dL/d(last output), last to first (no dL/dx of the first)."""
    for i in range(len(stages) - 1, -1, -1):
        code, act, slope, w, _, gw, gb, geom, y, idx, gin = stages[i]
        C, H, W, O, kh, kw, ho, wo, sh, sw, ph, pw, dh, dw, cip = geom
        gi = None if gin is None else _image(gin, nb, C, H, W)
        go = _image(g, nb, O, ho, wo)
        if code == 0:
            xin = x[:nb] if i == 0 else stages[i - 1][8][:nb]
            _conv.conv2d_backward(go, _image(xin, nb, C, H, W), w, (sh, sw), (ph, pw), (dh, dw), gi, gw, gb)
        elif i == 0:
            break  # nothing below needs dL/dx
        elif code == 1:
            yi = _image(y, nb, O, ho, wo)
            if act == 4:
                _act.leaky_relu_backward(go, yi, slope, gi)
            else:
                getattr(_act, ACTIVATIONS[act] + "_backward")(go, yi, gi)
        elif code == 2:
            _conv.max_pool2d_backward(go, _image(idx, nb, O, ho, wo), gi)
        else:
            _conv.avg_pool2d_backward(go, (kh, kw), (sh, sw), (ph, pw), bool(cip), gi)
        if gin is None:  # the first stage
            break
        g = gin[:nb]


_SLOTS = ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "out", "cell", "gates", "hn", "work",
          "go", "ghn", "gcn", "gx", "gh0", "gc0", "gw_ih", "gw_hh", "gb_ih", "gb_hh")  # fmt: skip


def _seq(front, nb):
    """The recurrent layer's arrays for a step of nb rows: (cell, relu, T, views by slot name)."""
    cell, relu, T, arrays = front
    a = dict(zip(_SLOTS, arrays))
    H = a["w_hh"].shape[1]
    for name in ("x", "out", "cell", "gates", "hn", "work", "go"):
        if a[name] is not None:
            width = a[name].shape[0] // (T * (a["h0"].shape[0] // H))  # per row and step
            a[name] = a[name][: T * nb * width].reshape(T, nb, width)
    for name in ("h0", "c0", "gh0", "gc0"):
        if a[name] is not None:
            a[name] = a[name][: nb * H].reshape(nb, H)
    return cell, relu, T, a


def _front_forward(front, x, rows):
    """Gather the sequences x[rows] time-major and run the recurrent layer; its last hidden state (nb, H)."""
    cell, relu, T, a = _seq(front, rows.shape[0])
    a["x"][...] = x[rows].transpose(1, 0, 2)
    if cell == 0:
        _rnn.rnn_forward(a["x"], a["h0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], _NONLIN[relu], a["out"])
    elif cell == 1:
        _rnn.lstm_forward(
            a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], a["out"], a["cell"], a["gates"]
        )
    else:
        _rnn.gru_forward(a["x"], a["h0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], a["out"], a["gates"], a["hn"])
    return a["out"][T - 1]


def _front_backward(front, gh, nb):
    """BPTT of the recurrent layer from dL/dh_T = gh (dL/dx not formed)."""
    cell, relu, T, a = _seq(front, nb)
    go = a["go"]
    go[: T - 1] = 0
    go[T - 1] = gh
    grads = (a["gw_ih"], a["gw_hh"], a["gb_ih"], a["gb_hh"])
    x, h0, w_ih, w_hh, out, work = a["x"], a["h0"], a["w_ih"], a["w_hh"], a["out"], a["work"]
    if cell == 0:
        _rnn.rnn_backward(go, None, x, h0, w_ih, w_hh, out, _NONLIN[relu], work, None, a["gh0"], *grads)
    elif cell == 1:
        _rnn.lstm_backward(
            go, None, None, x, h0, a["c0"], w_ih, w_hh, out, a["cell"], a["gates"], work, None, a["gh0"], a["gc0"],
            *grads,
        )  # fmt: skip
    else:
        _rnn.gru_backward(go, None, x, h0, w_ih, w_hh, out, a["gates"], a["hn"], work, None, a["gh0"], *grads)


_NONLIN = ("tanh", "relu")


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


def _update(bd, opt, hyper, step, nb, reduction):
    lr, h1, h2, wd, eps, decoupled = hyper
    if reduction == SKLEARN:
        wd = wd / nb  # alpha per row of the step
        if opt:
            eps = eps / math.sqrt(1.0 - h2**step)  # scikit-learn adds eps after the bias correction
    for p, g, s1, s2, decay in bd.updates:
        w = wd if decay else 0.0
        if opt == 0:
            _optim.sgd_update(p, g, s1, lr, h1, bool(h2), w)
        else:
            _optim.adam_update(p, g, s1, s2, step, lr, h1, h2, eps, w, bool(decoupled))


def _sklearn_loss(loss, z, tb, gz):
    """scikit-learn's loss of the raw outputs z, summed over the rows; gz = (act(z) - y) / B.

    See the module docstring; the caller divides the sum by B.
    """
    nb = z.shape[0]
    eps = float(np.finfo(z.dtype).eps)
    if loss == 0:
        _act.softmax(z, gz)
        rows = np.arange(nb)
        picked = gz[rows, tb]  # p of the true class (a copy)
        gz[rows, tb] = picked - 1
        total = -float(np.log(np.clip(picked, eps, 1 - eps).astype(np.float64)).sum())
    elif loss == 2:
        _act.sigmoid(z, gz)
        pc = np.clip(gz, eps, 1 - eps)
        total = -float(np.log(np.where(tb != 0, pc, 1 - pc).astype(np.float64)).sum())
        gz -= tb
    else:
        np.subtract(z, tb, out=gz)
        total = 0.5 * float(np.square(gz).astype(np.float64).sum()) / z.shape[1]
    gz *= z.dtype.type(1.0 / nb)
    return total


def _penalty(bd):
    """Σ‖p‖² over the updates that decay, in float64."""
    return sum(float(np.square(p.astype(np.float64)).sum()) for p, _, _, _, decay in bd.updates if decay)


def train_steps(bd, x, target, index, batch_size, loss, reduction, opt, hyper, step0, losses, pred):
    """Run ``len(losses)`` training steps; returns ``(steps run, status)``.

    Parameters
    ----------
    bd : a binding from :func:`train_bind`
    x : ndarray (N, I), the model's dtype
    target : ndarray, intp labels (N,) for cross-entropy, else (N, C) values
    index : intp ndarray, the rows of each step's minibatch, in order
    batch_size : int, rows per step (the last step takes what is left)
    loss : int, the loss code
    reduction : int, ``0`` sum, ``1`` mean, ``2`` scikit-learn's convention (see the module docstring)
    opt : int, the optimizer code
    hyper : tuple of 6 floats
        SGD: ``(lr, momentum, nesterov, weight_decay, 0, 0)``; Adam:
        ``(lr, beta1, beta2, weight_decay, eps, decoupled)`` (scikit-learn's
        convention: ``weight_decay`` is ``alpha``, and ``decoupled`` 0).
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
    named = "mean" if reduction == MEAN else "sum"
    x2 = x.reshape(n, -1)
    for s in range(nsteps):
        rows = index[s * batch_size : (s + 1) * batch_size]
        nb = rows.shape[0]
        if nb and (rows.min() < 0 or rows.max() >= n):
            return s, BAD_INDEX
        if bd.front is None:
            xb = bd.xb[:nb]
            np.take(x2, rows, axis=0, out=xb)
        tb = bd.tb[:nb]
        np.take(target, rows, axis=0, out=tb)
        nout = bd.gz.shape[1]
        if loss == 0 and nb and (tb.min() < 0 or tb.max() >= nout):
            return s, BAD_LABEL
        if bd.front is not None:
            xb = _front_forward(bd.front, x, rows)
        elif bd.stages is not None:
            xb = _stages_forward(bd.stages, bd.xb, nb)
        z = _forward(bd, xb, nb)
        gz = bd.gz[:nb]
        if reduction == SKLEARN:
            value = _sklearn_loss(loss, z, tb, gz) / nb
            if hyper[3]:
                value += 0.5 * hyper[3] * _penalty(bd) / nb
        elif loss == 0:
            value, _ = _losses.softmax_cross_entropy(z, tb, named, gz)
        elif loss == 1:
            value, _ = _losses.mse_loss(z, tb, named, gz)
        else:
            value, _ = _losses.bce_with_logits(z, tb, named, gz)
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
        if bd.front is not None:
            _front_backward(bd.front, bd.layers[0][8][:nb], nb)
        elif bd.stages is not None:
            _stages_backward(bd.stages, bd.xb, bd.layers[0][8][:nb], nb)
        _update(bd, opt, hyper, step0 + s + 1, nb, reduction)
    return nsteps, DONE


def predict_rows(bd, x, batch_size, out):
    """``out`` = the network's output for every row of ``x``, ``batch_size`` rows per pass.

    The binding must be this call's own (its buffers are overwritten).
    """
    n = x.shape[0]
    x2 = x.reshape(n, -1)
    for lo in range(0, n, batch_size):
        nb = min(batch_size, n - lo)
        if bd.front is not None:
            xb = _front_forward(bd.front, x, np.arange(lo, lo + nb))
        elif bd.stages is not None:
            xb = _stages_forward(bd.stages, x2[lo : lo + nb], nb)
        else:
            xb = x2[lo : lo + nb]
        out[lo : lo + nb] = _forward(bd, xb, nb)
    return out
