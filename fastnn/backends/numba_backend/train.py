"""Whole training steps of a dense network in one call, for the Numba backend.

Same names, parameters and results as :mod:`fastnn.backends.reference.train`
(the specification). The binding turns the layer and update tables into
Numba typed lists once; :func:`train_steps` is then one call of one
``@njit`` driver that runs every step (gather, forward, loss, backward,
update) without returning to Python. The products run on the register
tiles of the own GEMM's small-product kernel (``_small_gemm``), on one
thread: for the networks plans are for, a BLAS call or a thread wake-up
costs more than the product (``fastnn.fit`` keeps the per-step loop, whose
products may be threaded, for large ones). A layer's bias and ReLU are
applied to each tile of its product as it leaves the registers; the other
activations, the losses and the updates are the backend's own kernels and
element functions (``activations``, ``losses``, ``optim``), so a step differs
from the per-step loop only in the summation order of the products.

:func:`predict_rows` runs the forward pass over all batches in one call; a
large prediction of a dense network splits its batches between the active
threads (the driver runs without the GIL), each thread with buffers of its
own: a row's output does not depend on the thread that computes it.

Image stages or a recurrent layer in front run in drivers of their own
(:mod:`._train_front`), over this module's helpers, so a dense network
never compiles them. Every driver is made twice from one source
(:func:`_dense_kernels`): on the register tiles and on the plain loops of
``_small_gemm.simple_tiled`` (the same bits, a fraction of the
compilation), which run while the tiled driver compiles in the background
on a fresh install (``_jit.Deferred``). Numba types and compiles every
function a body names, on the branches a run never takes too, so a dense
driver is made, on its first use (:func:`_driver`), for one loss and one
optimizer (:data:`LOSSES`, :data:`UPDATES`; scikit-learn's convention,
``reduction="sklearn"``, with :func:`_loss_sklearn`), swapped in for
:func:`_loss` and :func:`_update` by ``_jit.renamed``'s ``replace``; and a
network of identity and ReLU layers alone, whose ReLU the products apply,
runs passes that compile no other activation kernel. A first step or
prediction thus compiles what it runs (the drivers behind a front keep
the general helpers).
"""

import math
import threading

import numpy as np
from numba import typed, typeof

from ... import _config
from ..reference import train as _spec
from . import _small_gemm as _small
from ._jit import Deferred, jit, jit_inline, kernel, renamed
from .activations import (
    _leaky,
    _leaky_bwd,
    _relu,
    _relu_bwd,
    _sigmoid,
    _sigmoid_bwd,
    _softmax_row,
    _tanh,
    _tanh_bwd,
)
from .losses import _bce_elem, _ce_row
from .optim import _adam_elem, _decayed, _sgd_elem

__all__ = list(_spec.__all__)  # the reference's kernels, every one overridden here

_DONE, _NONFINITE, _BAD_INDEX, _BAD_LABEL = 0, 1, 2, 3
_MEAN, _SKLEARN = _spec.MEAN, _spec.SKLEARN


# the activations' serial kernels (backend ``activations``), called from the compiled driver
_RELU, _SIGMOID, _TANH, _LEAKY = _relu[0], _sigmoid[0], _tanh[0], _leaky[0]
_RELU_BWD, _SIGMOID_BWD, _TANH_BWD, _LEAKY_BWD = _relu_bwd[0], _sigmoid_bwd[0], _tanh_bwd[0], _leaky_bwd[0]


@jit
def _act_fwd(x, act, slope, y):
    """y = act(x) (act != 0; y may be x), by the backend's activation kernels."""
    xf, f = x.ravel(), y.ravel()
    if act == 1:
        _RELU(xf, f)
    elif act == 2:
        _SIGMOID(xf, f)
    elif act == 3:
        _TANH(xf, f)
    else:
        _LEAKY(xf, slope, f)


@jit
def _act_bwd(g, y, act, slope, d):
    """d = g ⊙ act'(y) (act != 0), from the layer's output y."""
    gf, yf, df = g.ravel(), y.ravel(), d.ravel()
    if act == 1:
        _RELU_BWD(gf, yf, df)
    elif act == 2:
        _SIGMOID_BWD(gf, yf, df)
    elif act == 3:
        _TANH_BWD(gf, yf, df)
    else:
        _LEAKY_BWD(gf, yf, slope, df)


@jit
def _update_sgd(ps, gs, s1s, s2s, decays, opt, lr, h1, h2, wd, eps, decoupled, c1, c2, step, nb, reduction):
    """SGD's step on every update (momentum h1, Nesterov when h2 != 0): :func:`_update` for opt 0."""
    t = ps[0].dtype.type
    if reduction == _SKLEARN:
        wd = wd / nb  # scikit-learn's alpha per row of the step
    lr_, mu = t(lr), t(h1)
    nesterov = h2 != 0
    for k in range(len(ps)):
        p, g = ps[k], gs[k]
        wd_ = t(wd * decays[k])
        if h1 != 0:
            v = s1s[k]
            for i in range(p.size):
                p[i], v[i] = _sgd_elem(p[i], g[i], v[i], lr_, mu, nesterov, wd_)
        else:
            for i in range(p.size):
                p[i] = p[i] - lr_ * _decayed(g[i], wd_, p[i])


@jit
def _update_adam(ps, gs, s1s, s2s, decays, opt, lr, h1, h2, wd, eps, decoupled, c1, c2, step, nb, reduction):
    """Adam's (AdamW's with ``decoupled``) step on every update: :func:`_update` for opt 1."""
    t = ps[0].dtype.type
    if reduction == _SKLEARN:
        wd = wd / nb  # scikit-learn's alpha per row of the step
        eps = eps / math.sqrt(1.0 - h2**step)  # scikit-learn adds eps after the bias correction of v
    bc1 = 1.0 - h1**step
    bc2 = 1.0 - h2**step
    b1_, c1_, b2_, c2_ = t(h1), t(c1), t(h2), t(c2)
    step_, inv_, eps_ = t(lr / bc1), t(1.0 / math.sqrt(bc2)), t(eps)
    for k in range(len(ps)):
        p, g, m, v = ps[k], gs[k], s1s[k], s2s[k]
        w = wd * decays[k]
        decay_ = t(1.0 - lr * w if (decoupled and w != 0) else 1.0)
        wd_ = t(0.0 if decoupled else w)
        for i in range(p.size):
            p[i], m[i], v[i] = _adam_elem(p[i], g[i], m[i], v[i], decay_, wd_, b1_, c1_, b2_, c2_, step_, inv_, eps_)


@jit
def _update(ps, gs, s1s, s2s, decays, opt, lr, h1, h2, wd, eps, decoupled, c1, c2, step, nb, reduction):
    """The step of the optimizer ``opt`` (0 SGD, 1 Adam) on every update, for the drivers with a front.

    The dense drivers are made per optimizer (:data:`UPDATES`) and compile only their own."""
    if opt == 0:
        _update_sgd(ps, gs, s1s, s2s, decays, opt, lr, h1, h2, wd, eps, decoupled, c1, c2, step, nb, reduction)
    else:
        _update_adam(ps, gs, s1s, s2s, decays, opt, lr, h1, h2, wd, eps, decoupled, c1, c2, step, nb, reduction)


@jit
def _sklearn_loss(loss, z, lb, tb, g):
    """scikit-learn's loss of the raw outputs z summed over the rows (float64), and g = (act(z) - y) / B.

    See the reference's module docstring: softmax and log-loss, identity and half the squared error
    averaged over the outputs, logistic and binary log-loss; log-loss probabilities clipped.
    """
    nb, nout = z.shape
    t = z.dtype.type
    eps = np.finfo(z.dtype).eps
    lo, hi, one = t(eps), t(1.0 - eps), t(1)
    total = 0.0
    if loss == 0:
        for r in range(nb):
            _softmax_row(z[r], g[r])
            p = g[r, lb[r]]
            g[r, lb[r]] = p - one
            total -= math.log(np.float64(min(max(p, lo), hi)))
    elif loss == 2:
        zf, tf, gf = z.ravel(), tb.ravel(), g.ravel()
        _SIGMOID(zf, gf)
        for i in range(gf.size):
            p = min(max(gf[i], lo), hi)
            total -= math.log(np.float64(p if tf[i] != 0 else one - p))
            gf[i] = gf[i] - tf[i]
    else:
        zf, tf, gf = z.ravel(), tb.ravel(), g.ravel()
        for i in range(gf.size):
            d = zf[i] - tf[i]
            gf[i] = d
            total += np.float64(d * d)
        total *= 0.5 / nout
    inv = t(1.0 / nb)
    gf = g.ravel()
    for i in range(gf.size):
        gf[i] = gf[i] * inv
    return total


@jit
def _penalty(ps, decays):
    """Σ‖p‖² over the updates that decay, in float64."""
    total = 0.0
    for k in range(len(ps)):
        if decays[k] != 0:
            p = ps[k]
            for i in range(p.size):
                total += np.float64(p[i]) * np.float64(p[i])
    return total


@jit_inline
def _copy_row(dst, src):
    """dst[:] = src[:] (1-D, the same size) element by element.

    An array-to-array assignment (``xb[i] = x[row]``) compiles Numba's
    shape-error message (string formatting of the shapes): about 3 s of the
    first training step's compilation in a process with an empty cache."""
    for j in range(dst.size):
        dst[j] = src[j]


@jit
def _gather_targets(labels, values, index, lo, nb, loss, lb, tb, nout):
    """The step's labels (cross-entropy) or target rows; False at a label outside [0, nout).

    The step's indices were checked by the gather of its inputs, which comes first."""
    if loss == 0:
        for i in range(nb):
            lab = labels[index[lo + i]]
            if np.uint64(lab) >= np.uint64(nout):
                return False
            lb[i] = lab
    else:
        for i in range(nb):
            _copy_row(tb[i], values[index[lo + i]])
    return True


@jit
def _loss_sklearn(z, g, lb, tb, nb, loss, reduction, ps, decays, wd):
    """The step's loss of the outputs z (float64) and g = dL/dz, in scikit-learn's convention."""
    total = _sklearn_loss(loss, z, lb, tb, g) / nb
    if wd != 0:
        total += 0.5 * wd * _penalty(ps, decays) / nb
    return total


@jit
def _loss_ce(z, g, lb, tb, nb, loss, reduction, ps, decays, wd):
    """Cross-entropy of the outputs z against the labels lb (float64) and g = dL/dz: :func:`_loss` for loss 0."""
    scale = 1.0 / nb if reduction == _MEAN else 1.0
    sc = z.dtype.type(scale)
    total = 0.0
    for r in range(nb):
        total += _ce_row(z[r], lb[r], g[r], sc)
    return total * scale


@jit
def _loss_mse(z, g, lb, tb, nb, loss, reduction, ps, decays, wd):
    """The squared error of the outputs z against the targets tb and g = dL/dz: :func:`_loss` for loss 1."""
    zf, tf, gf = z.ravel(), tb.ravel(), g.ravel()
    scale = 1.0 / zf.size if reduction == _MEAN else 1.0
    two_s = z.dtype.type(2.0 * scale)
    total = 0.0
    for i in range(zf.size):
        dv = zf[i] - tf[i]
        total += np.float64(dv) * np.float64(dv)
        gf[i] = dv * two_s
    return total * scale


@jit
def _loss_bce(z, g, lb, tb, nb, loss, reduction, ps, decays, wd):
    """Binary cross-entropy of the logits z against the targets tb and g = dL/dz: :func:`_loss` for loss 2."""
    zf, tf, gf = z.ravel(), tb.ravel(), g.ravel()
    scale = 1.0 / zf.size if reduction == _MEAN else 1.0
    sc = z.dtype.type(scale)
    one, zero = z.dtype.type(1), z.dtype.type(0)
    total = 0.0
    for i in range(zf.size):
        lv, gi = _bce_elem(zf[i], tf[i], sc, one, zero)
        total += lv
        gf[i] = gi
    return total * scale


@jit
def _loss(z, g, lb, tb, nb, loss, reduction, ps, decays, wd):
    """The step's loss of the outputs z (float64) and g = dL/dz, reduced as PyTorch's losses do (mean or sum).

    The drivers with a front call this one; the dense drivers are made per loss (:data:`LOSSES`), and
    for scikit-learn's convention with :func:`_loss_sklearn`, so that each compiles only its own."""
    if loss == 0:
        return _loss_ce(z, g, lb, tb, nb, loss, reduction, ps, decays, wd)
    if loss == 1:
        return _loss_mse(z, g, lb, tb, nb, loss, reduction, ps, decays, wd)
    return _loss_bce(z, g, lb, tb, nb, loss, reduction, ps, decays, wd)


@jit
def _record(z, lo, pred_i, pred_b):
    """The step's predictions, at its rows lo: (index order): argmax (pred_i) or signs (pred_b), if asked."""
    nb, nout = z.shape
    if pred_i.size:
        for r in range(nb):
            best = 0
            zr = z[r]
            for j in range(1, nout):
                if zr[j] > zr[best] or (zr[j] != zr[j] and zr[best] == zr[best]):
                    best = j
            pred_i[lo + r] = best
    elif pred_b.size:
        zf = z.ravel()
        for i in range(zf.size):
            pred_b[lo * nout + i] = zf[i] > 0


#: The dense drivers' update per optimizer code and loss per loss code, in place of :func:`_update` and
#: :func:`_loss` (``renamed``'s ``replace``): a driver compiles only the optimizer and the loss it runs.
UPDATES = (_update_sgd, _update_adam)
LOSSES = (_loss_ce, _loss_mse, _loss_bce)
#: What a driver made for scikit-learn's convention sees in place of :func:`_loss`.
SKLEARN_LOSS = {"_loss": _loss_sklearn}
_OPT_NAMES, _LOSS_NAMES = ("_sgd", "_adam"), ("_ce", "_mse", "_bce")


@jit
def _act_fwd_fused(x, act, slope, y):
    """The activation pass of a network whose activations are all fused into its products (identity, ReLU):
    never called (the forward calls it for act > 1 only), and compiles none of the activation kernels."""


@jit
def _act_bwd_relu(g, y, act, slope, d):
    """d = g ⊙ [y > 0]: :func:`_act_bwd` of a network whose activations are identity and ReLU (act 1 here)."""
    _RELU_BWD(g.ravel(), y.ravel(), d.ravel())


def _dense_kernels(acc_nn, acc_tn, mul_nt_bias, act_fwd, act_bwd, suffix):
    """The dense layers' passes and the dense drivers, on the products ``acc_nn`` (C += A·B), ``acc_tn``
    (C += Aᵀ·B) and ``mul_nt_bias`` (C = A·Bᵀ + b, ReLU fused) and the activation passes ``act_fwd`` and
    ``act_bwd``: a dict of ``forward``, ``backward``, ``predict`` and ``steps``, a function of (scikit-learn's
    convention, optimizer code, loss code) that makes that training driver."""

    def _forward(ws, bs_, hb, ys, acts, slopes, x, nb, last):
        """Every layer's output for the nb rows of x; returns the last, written into ``last`` when given
        (a prediction's rows of the output) instead of the layer's buffer."""
        inp = x
        for l in range(len(ws)):
            y = ys[l][:nb]
            if last is not None:
                if l == len(ws) - 1:
                    y = last
            act = acts[l]
            # the bias and ReLU on each tile as it leaves the registers (the bits of two passes after)
            mul_nt_bias(inp, ws[l], y, bs_[l], hb[l], act == 1)
            if act > 1:
                act_fwd(y, act, slopes[l], y)
            inp = y
        return inp

    _forward = jit(renamed(_forward, suffix))

    def _backward(ws, hb, ys, ds, gins, gws, gbs, acts, slopes, x, gz, nb, first_gin):
        """Every parameter gradient from gz = dL/d(output); dL/dx of the first layer only with ``first_gin``
        (into gins[0]: a recurrent layer or image stages in front take it)."""
        g = gz
        for l in range(len(ws) - 1, -1, -1):
            y = ys[l][:nb]
            d = g
            if acts[l] != 0:
                d = ds[l][:nb]
                act_bwd(g, y, acts[l], slopes[l], d)
            xin = x if l == 0 else ys[l - 1][:nb]
            gw = gws[l]
            gw[:] = 0
            acc_tn(d, xin, gw)
            if hb[l]:
                gb = gbs[l]
                gb[:] = 0
                for r in range(nb):
                    row = d[r]
                    for j in range(row.size):
                        gb[j] += row[j]
            if l > 0 or first_gin:
                gin = gins[l][:nb]
                gin[:] = 0
                acc_nn(d, ws[l], gin)
                g = gin

    _backward = jit(renamed(_backward, suffix))

    def _steps(ws, bs_, hb, ys, ds, gins, gws, gbs, acts, slopes, ps, gs, s1s, s2s, decays, xb, lb, tb, gz, x, labels,
               values, index, batch_size, loss, reduction, opt, lr, h1, h2, wd, eps, decoupled, c1, c2, step0, losses,
               pred_i, pred_b):  # fmt: skip
        """The driver: (steps run, status), as the reference's train_steps."""
        n = x.shape[0]
        nsteps = losses.shape[0]
        nindex = min(index.shape[0], nsteps * batch_size)
        nout = gz.shape[1]
        for s in range(nsteps):
            lo = s * batch_size
            nb = min(batch_size, nindex - lo)
            for i in range(nb):
                row = index[lo + i]
                if np.uint64(row) >= np.uint64(n):
                    return s, _BAD_INDEX
                _copy_row(xb[i], x[row])
            if not _gather_targets(labels, values, index, lo, nb, loss, lb, tb, nout):
                return s, _BAD_LABEL
            z = _forward(ws, bs_, hb, ys, acts, slopes, xb[:nb], nb, None)
            g = gz[:nb]
            value = _loss(z, g, lb[:nb], tb[:nb], nb, loss, reduction, ps, decays, wd)
            losses[s] = value
            if not math.isfinite(value):
                return s, _NONFINITE
            _record(z, lo, pred_i, pred_b)
            _backward(ws, hb, ys, ds, gins, gws, gbs, acts, slopes, xb[:nb], g, nb, False)
            _update(ps, gs, s1s, s2s, decays, opt, lr, h1, h2, wd, eps, decoupled, c1, c2, step0 + s + 1, nb, reduction)
        return nsteps, _DONE

    def _predict(ws, bs_, hb, ys, acts, slopes, x, batch_size, out):
        n = x.shape[0]
        for lo in range(0, n, batch_size):
            nb = min(batch_size, n - lo)
            _forward(ws, bs_, hb, ys, acts, slopes, x[lo : lo + nb], nb, out[lo : lo + nb])

    def steps(sklearn, opt, loss):
        # one driver per (convention, optimizer, loss): Numba types and compiles every function a body
        # names, on the branches a run never takes too (scikit-learn's loss, its sigmoid and softmax
        # included, was about 2 s of a first step's compilation; Adam's update and the other losses
        # most of a second)
        replace = {"_update": UPDATES[opt], "_loss": _loss_sklearn if sklearn else LOSSES[loss]}
        name = ("_sklearn" if sklearn else _LOSS_NAMES[loss]) + _OPT_NAMES[opt] + suffix
        return kernel(renamed(_steps, name, replace=replace), inputs="x labels values index")

    return dict(
        forward=_forward, backward=_backward, predict=kernel(renamed(_predict, suffix), inputs="x"), steps=steps
    )


#: On the register tiles of the small-product kernel, and on its plain loops (the same bits, a fraction
#: of the compilation: what a fresh install runs while the tiled drivers compile in the background); for
#: any activations, and for networks of identity and ReLU layers alone (the ReLU fused into the products),
#: whose drivers compile no other activation kernel.
TILED = _dense_kernels(_small.acc_nn, _small.acc_tn, _small.mul_nt_bias, _act_fwd, _act_bwd, "_tiled")
PLAIN = _dense_kernels(
    _small.acc_nn_simple, _small.acc_tn_simple, _small.mul_nt_bias_simple, _act_fwd, _act_bwd, "_plain"
)
_RELU_TILED = _dense_kernels(
    _small.acc_nn, _small.acc_tn, _small.mul_nt_bias, _act_fwd_fused, _act_bwd_relu, "_relu_tiled"
)
_RELU_PLAIN = _dense_kernels(
    _small.acc_nn_simple, _small.acc_tn_simple, _small.mul_nt_bias_simple, _act_fwd_fused, _act_bwd_relu,
    "_relu_plain",
)  # fmt: skip

_drivers: dict = {}
_drivers_lock = threading.Lock()


def _driver(relu_only, key):
    """The dense driver ``key`` (``("predict",)`` or ``("steps", sklearn, opt, loss)``) of the ReLU networks'
    kernels or the general ones: a :class:`Deferred` (tiled over plain) made on its first use, then the
    tiled kernel itself once it is ready."""
    if key[0] == "steps" and key[1]:
        key = (*key[:3], 0)  # scikit-learn's loss serves every loss code
    full = (bool(relu_only), *key)
    d = _drivers.get(full)
    if d is not None:
        return d
    with _drivers_lock:
        if full not in _drivers:
            tiled, plain = (_RELU_TILED, _RELU_PLAIN) if relu_only else (TILED, PLAIN)
            if key[0] == "predict":
                fast, fallback = tiled["predict"], plain["predict"]
            else:
                fast, fallback = tiled["steps"](*key[1:]), plain["steps"](*key[1:])
            _drivers[full] = Deferred(fast, fallback, lambda ready: _drivers.__setitem__(full, ready))
        return _drivers[full]


@jit
def _push(lst, a):
    """lst.append(a), compiled once per install for each item type: Numba's own typed-list operations
    called from Python are not cached, and compiled again in every process (about 0.1 s each)."""
    lst.append(a)


def _list(arrays):
    """A typed list of ``arrays`` (at least one, all of one type)."""
    arrays = list(arrays)
    lst = typed.List.empty_list(typeof(arrays[0]))
    for a in arrays:
        _push(lst, a)
    return lst


class _Binding:
    """Typed lists of the tables (placeholders of the right type where an array is absent).

    With a front, ``stages`` holds the image driver's table (``_train_front.image_tables``), or
    ``front`` the recurrent one (cell, relu, arrays: ``_train_front.recurrent_tables``)."""

    def __init__(self, layers, updates, xb, tb, gz, front=None, stages=None):
        dt = xb.dtype
        none1 = np.empty(0, dt)
        none2 = np.empty((0, 0), dt)
        self.ws = _list(w for w, *_ in layers)
        self.bs = _list(none1 if b is None else b for _, b, *_ in layers)
        self.hb = np.array([b is not None for _, b, *_ in layers])
        self.gws = _list(none2 if layer[2] is None else layer[2] for layer in layers)
        self.gbs = _list(none1 if layer[3] is None else layer[3] for layer in layers)
        self.acts = np.array([layer[4] for layer in layers], np.int64)
        # identity and ReLU only (fused into the products): drivers that compile no other activation
        self.relu_only = bool(np.all(self.acts <= 1))
        self.slopes = np.array([layer[5] for layer in layers], np.float64)
        self.ys = _list(layer[6] for layer in layers)
        # read from Python without indexing the typed lists (each of their operations called from
        # Python is compiled in every process: Numba's typed-list helpers are not cached)
        self.weights = sum(int(layer[0].size) for layer in layers)
        self.y_arrays = [layer[6] for layer in layers]
        self.ds = _list(none2 if layer[7] is None else layer[7] for layer in layers)
        self.gins = _list(none2 if layer[8] is None else layer[8] for layer in layers)
        flat = [tuple(none1 if a is None else a.reshape(-1) for a in u[:4]) for u in updates] or [(none1,) * 4]
        self.ps, self.gs, self.s1s, self.s2s = (_list(u[i] for u in flat) for i in range(4))
        self.decays = np.array([u[4] for u in updates] or [0.0], np.float64)
        self.xb, self.gz = xb, gz
        self.lb = tb if tb.dtype == np.intp else np.empty(0, np.intp)
        self.tb = tb if tb.dtype != np.intp else none2
        self.none1, self.none2 = none1, none2
        training = layers[0][2] is not None
        self.front = None if front is None else _front.recurrent_tables(front, dt, training)
        self.stages = None if stages is None else _front.image_tables(stages, dt, xb.shape[0], training)


def train_bind(layers, updates, xb, tb, gz, front=None, stages=None):
    """See :func:`fastnn.backends.reference.train.train_bind`.

    A recurrent layer or image stages in front run in their own drivers
    (:mod:`._train_front`), compiled on their first call.
    """
    if front is not None and stages is not None:
        raise ValueError("a training plan takes a recurrent layer or image stages in front, not both")
    return _Binding(layers, updates, xb, tb, gz, front, stages)


_NO_PRED_I = np.empty(0, np.intp)
_NO_PRED_B = np.empty(0, np.bool_)


def train_steps(bd, x, target, index, batch_size, loss, reduction, opt, hyper, step0, losses, pred):
    """See :func:`fastnn.backends.reference.train.train_steps`."""
    lr, h1, h2, wd, eps, decoupled = hyper
    # 1 - beta computed here, not next to beta in compiled code (see .optim._adam)
    c1, c2 = (1.0 - h1, 1.0 - h2) if opt == 1 else (0.0, 0.0)
    labels = target if loss == 0 else _NO_PRED_I
    values = target.reshape(target.shape[0], -1) if loss != 0 else bd.none2
    pred_i = pred if pred is not None and pred.dtype == np.intp else _NO_PRED_I
    pred_b = pred.reshape(-1) if pred is not None and pred.dtype == np.bool_ else _NO_PRED_B
    dense = (bd.ws, bd.bs, bd.hb, bd.ys, bd.ds, bd.gins, bd.gws, bd.gbs, bd.acts, bd.slopes, bd.ps, bd.gs, bd.s1s,
             bd.s2s, bd.decays)  # fmt: skip
    rest = (
        labels, values, index, int(batch_size), int(loss), int(reduction), int(opt), float(lr), float(h1),
        float(h2), float(wd), float(eps), bool(decoupled), c1, c2, int(step0), losses, pred_i, pred_b,
    )  # fmt: skip
    sk = reduction == _SKLEARN
    if bd.front is not None:
        cell, relu, ra = bd.front
        drive = _front.RECURRENT_SKLEARN[cell] if sk else _front.RECURRENT[cell][0]
        done, status = drive(*dense, ra, relu, bd.lb, bd.tb, bd.gz, x, *rest)
    elif bd.stages is not None:
        x2 = x.reshape(x.shape[0], -1)
        drive = _front.IMAGE_SKLEARN if sk else _front.IMAGE[0]
        done, status = drive(*dense, bd.stages, bd.xb, bd.lb, bd.tb, bd.gz, x2, *rest)
    else:
        x2 = x.reshape(x.shape[0], -1)
        drive = _driver(bd.relu_only, ("steps", sk, int(opt), int(loss)))
        done, status = drive(*dense, bd.xb, bd.lb, bd.tb, bd.gz, x2, *rest)
    return int(done), int(status)


#: Multiply-adds per thread below which a dense network's prediction runs on the calling thread alone: a
#: thread's start and join cost tens of microseconds, a thousandth of this many multiply-adds.
PREDICT_SPLIT_MIN_MACS = 1 << 25


def _predict_parts(bd, n, batch_size):
    """Threads for a dense network's prediction of n rows: one per PREDICT_SPLIT_MIN_MACS, at most the
    active thread count (``fastnn._config.active_threads``) and one batch each."""
    macs = n * bd.weights
    return max(1, min(_config.active_threads(), macs // PREDICT_SPLIT_MIN_MACS, -(-n // batch_size)))


def _predict_split(bd, x, batch_size, out, parts):
    """The dense prediction as ``parts`` runs of whole batches, one per thread (the driver holds no GIL),
    each with buffers of its own. A row's output does not depend on the batch or the thread that
    computes it: the same bits as one run."""
    nbatch = -(-x.shape[0] // batch_size)
    bounds = [min(x.shape[0], nbatch * k // parts * batch_size) for k in range(parts + 1)]
    errors = []
    drive = _driver(bd.relu_only, ("predict",))

    def run(ys, lo, hi):
        try:
            drive(bd.ws, bd.bs, bd.hb, ys, bd.acts, bd.slopes, x[lo:hi], batch_size, out[lo:hi])
        except BaseException as exc:  # re-raised in the calling thread
            errors.append(exc)

    workers = [
        threading.Thread(target=run, args=(_list(np.empty_like(y) for y in bd.y_arrays), bounds[k], bounds[k + 1]))
        for k in range(1, parts)
    ]
    for w in workers:
        w.start()
    run(bd.ys, bounds[0], bounds[1])
    for w in workers:
        w.join()
    if errors:
        raise errors[0]


def predict_rows(bd, x, batch_size, out):
    """See :func:`fastnn.backends.reference.train.predict_rows`.

    A dense network's rows are split between the active threads when there are enough multiply-adds
    (:data:`PREDICT_SPLIT_MIN_MACS` per thread), with the same results as on one thread."""
    bs = int(batch_size)
    dense = (bd.ws, bd.bs, bd.hb, bd.ys)
    if bd.front is not None:
        cell, relu, ra = bd.front
        _front.RECURRENT[cell][1](*dense, bd.acts, bd.slopes, ra, relu, x, bs, out)
    elif bd.stages is not None:
        _front.IMAGE[1](*dense, bd.acts, bd.slopes, bd.stages, bd.xb, x.reshape(x.shape[0], -1), bs, out)
    else:
        x2 = x.reshape(x.shape[0], -1)
        parts = _predict_parts(bd, x2.shape[0], bs)
        if parts > 1:
            _predict_split(bd, x2, bs, out, parts)
        else:
            _driver(bd.relu_only, ("predict",))(*dense, bd.acts, bd.slopes, x2, bs, out)
    return out


from . import _train_front as _front  # noqa: E402  (it imports this module's helpers)
