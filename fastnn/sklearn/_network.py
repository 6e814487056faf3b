"""The network behind the MLP estimators: fastnn layers, scikit-learn's initialisation and losses.

A network is a :class:`fastnn.nn.Sequential` of ``Linear`` layers with the
hidden activation between them (``Linear`` + ReLU/Tanh/Sigmoid runs as one
fused kernel) and, when ``dropout > 0``, a :class:`Dropout` after each hidden
activation. The last ``Linear`` has no activation: the output activation
(softmax, logistic, identity, exp) and the loss are applied by a
:class:`Head`, which returns scikit-learn's loss value and ``dL/dz`` for the
last layer, as ``MLPClassifier``/``MLPRegressor`` compute them:

* softmax + log-loss, logistic + binary log-loss, identity + half squared
  error, exp + half Poisson deviance: each pair has ``dL/dz = p - y``;
* the loss value clips probabilities to ``[eps, 1 - eps]`` (``eps`` of the
  dtype) and averages over samples with the sample weights;
* ``dL/dz`` is divided by the (weighted) number of samples of the batch, not
  by the number of outputs (scikit-learn's squared error averages the loss
  value over outputs but not its gradient).
"""

from __future__ import annotations

import numpy as np

from fastnn import nn, ops
from fastnn.workspace import out_buffer

__all__ = ["ACTIVATIONS", "Dropout", "Head", "build_network", "glorot_init", "linear_layers"]

#: scikit-learn's hidden activation names -> fastnn modules (None: no module).
ACTIVATIONS = {"identity": None, "logistic": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}


class Dropout(nn.Module):
    """Inverted dropout: in training, zero each value with probability ``p`` and scale the rest by ``1/(1-p)``.

    Identity in evaluation mode and under :func:`fastnn.inference_mode`
    (prediction). The masks come from ``rng``, a ``numpy.random.Generator``
    seeded by the estimator, so a fit repeats exactly for a given
    ``random_state``.
    """

    def __init__(self, p, rng):
        super().__init__()
        self.p = float(p)
        self.rng = rng

    def forward(self, x):
        if self.p == 0.0 or not self._is_training():
            self.__dict__["_ctx"] = None
            return x
        mask = out_buffer(self, "mask", x.shape, x.dtype)
        self.rng.random(out=mask, dtype=x.dtype)
        # keep = (u >= p) scaled by 1/(1-p), computed in place in the mask buffer
        np.greater_equal(mask, self.p, out=mask, casting="unsafe")
        mask *= x.dtype.type(1.0 / (1.0 - self.p))
        self.__dict__["_ctx"] = mask
        y = out_buffer(self, "y", x.shape, x.dtype)
        return np.multiply(x, mask, out=y)

    def backward(self, grad_output, *, input_grad=True, accumulate=False):
        mask = self.__dict__.get("_ctx")
        if mask is None:  # the forward pass was the identity
            return grad_output
        g = out_buffer(self, "grad", grad_output.shape, grad_output.dtype)
        return np.multiply(grad_output, mask, out=g)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def build_network(layer_units, activation, dtype, dropout=0.0, rng=None):
    """``Linear(u0, u1) act [Dropout] Linear(u1, u2) ... Linear(u_{k-1}, u_k)`` in ``dtype``.

    The weights are left as ``nn.Linear`` draws them; :func:`glorot_init`
    sets scikit-learn's.
    """
    act = ACTIVATIONS[activation]
    mods = []
    last = len(layer_units) - 2
    for i in range(last + 1):
        mods.append(nn.Linear(layer_units[i], layer_units[i + 1], dtype=dtype, rng=0))
        if i < last:
            if act is not None:
                mods.append(act())
            if dropout > 0:
                mods.append(Dropout(dropout, rng))
    return nn.Sequential(*mods)


def linear_layers(network):
    """The network's ``Linear`` layers, first to last."""
    return [m for m in network if isinstance(m, nn.Linear)]


def glorot_init(random_state, fan_in, fan_out, activation):
    """scikit-learn's initial ``(coef, intercept)`` of one layer, in float64, coef of shape (fan_in, fan_out).

    Glorot uniform with bound ``sqrt(factor / (fan_in + fan_out))``, factor 2
    for the logistic activation and 6 otherwise; the coefficients are drawn
    first, then the intercepts, from the estimator's ``RandomState``, so the
    same ``random_state`` gives scikit-learn's very weights.
    """
    factor = 2.0 if activation == "logistic" else 6.0
    bound = np.sqrt(factor / (fan_in + fan_out))
    coef = random_state.uniform(-bound, bound, (fan_in, fan_out))
    intercept = random_state.uniform(-bound, bound, fan_out)
    return coef, intercept


class Head:
    """Output activation and loss of a network, as scikit-learn defines them.

    Parameters
    ----------
    out_activation : {"softmax", "logistic", "identity", "exp"}
    dtype : float32 or float64

    Targets, as prepared by the estimator: integer class indices (softmax),
    a 0/1 indicator matrix of the dtype (logistic), or values of shape
    (n, n_outputs) (identity, exp).
    """

    def __init__(self, out_activation, dtype):
        if out_activation not in ("softmax", "logistic", "identity", "exp"):
            raise ValueError(f"unknown output activation {out_activation!r}")
        self.out_activation = out_activation
        self.dtype = np.dtype(dtype)
        self.eps = float(np.finfo(self.dtype).eps)

    # -- prediction ------------------------------------------------------
    def activate(self, z):
        """Output activation of raw outputs ``z`` (in place when possible); returns the array."""
        kind = self.out_activation
        if kind == "softmax":
            return ops.softmax(z, out=z)
        if kind == "logistic":
            return ops.sigmoid(z, out=z)
        if kind == "exp":
            return np.exp(z, out=z)
        return z

    # -- training --------------------------------------------------------
    def loss_and_delta(self, z, target, weight=None, weight_sum=None, owner=None, with_delta=True):
        """scikit-learn's loss of raw outputs ``z`` and ``dL/dz`` divided by the (weighted) sample count.

        Parameters
        ----------
        z : ndarray of shape (B, K), the last layer's output (left unchanged)
        target : the batch's targets (see the class docstring)
        weight : ndarray of shape (B,), optional, the sample weights
        weight_sum : float, optional, ``weight.sum()`` (or B without weights)
        owner : object, optional
            Key of the workspace buffer that holds ``dL/dz`` (a new array without it).
        with_delta : bool
            False: the loss alone.

        Returns
        -------
        loss : float, the data term of the loss (without the L2 penalty)
        delta : ndarray of shape (B, K) or None
        """
        b = z.shape[0]
        if weight_sum is None:
            weight_sum = float(b) if weight is None else float(weight.sum())
        p = out_buffer(owner, "delta", z.shape, z.dtype) if owner is not None else np.empty_like(z)
        kind = self.out_activation
        if kind == "softmax":
            loss = self._softmax(z, target, weight, weight_sum, p)
        else:
            np.copyto(p, z)
            self.activate(p)
            loss = self._elementwise(p, target, weight, weight_sum)
            if with_delta:
                p -= target  # dL/dz = p - y for each canonical pair
        if not with_delta:
            return loss, None
        if weight is None:
            p *= z.dtype.type(1.0 / weight_sum)
        else:
            p *= (weight / weight_sum).astype(z.dtype, copy=False)[:, None]
        return loss, p

    def _softmax(self, z, labels, weight, weight_sum, p):
        """Log-loss of softmax(z); leaves ``p - onehot(labels)`` in ``p``."""
        b, c = z.shape
        ops.softmax(z, out=p)
        flat = p.reshape(-1)
        idx = self._row_starts(b, c) + labels
        picked = flat[idx]
        flat[idx] = picked - 1
        # log(clip(p, eps, 1 - eps)) of the true class (clipped in place on the gathered copy)
        np.maximum(picked, self.eps, out=picked)
        np.minimum(picked, 1 - self.eps, out=picked)
        logs = np.log(picked.astype(np.float64))  # in float64, as the compiled plans (fastnn.ops.TrainPlan)
        if weight is None:
            return -float(logs.sum()) / weight_sum
        return -float(np.dot(weight, logs)) / weight_sum

    def _row_starts(self, b, c):
        cache = self.__dict__.setdefault("_starts", {})
        starts = cache.get((b, c))
        if starts is None:
            if len(cache) > 8:
                cache.clear()
            starts = cache[(b, c)] = np.arange(b, dtype=np.intp) * c
        return starts

    def _elementwise(self, p, target, weight, weight_sum):
        """The loss of the logistic, identity and exp heads, from the activated outputs ``p``."""
        kind, eps = self.out_activation, self.eps
        if kind == "logistic":
            pc = np.clip(p, eps, 1 - eps)
            values = np.log(np.where(target != 0, pc, 1 - pc).astype(np.float64))
            return -_average_sum(values, weight, weight_sum)
        if kind == "identity":
            diff = target - p
            return 0.5 * _average_sum(diff * diff, weight, weight_sum) / p.shape[1]
        with np.errstate(divide="ignore", invalid="ignore"):
            positive = target > 0
            values = np.where(positive, target * np.log(np.where(positive, target / p, 1)), 0.0) - target + p
        return _average_sum(values, weight, weight_sum)

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_starts", None)
        return state


def _average_sum(values, weight, weight_sum):
    """``Σ_k Σ_i weight_i·values[i, k] / weight_sum`` (no weights: ones); ``values`` may be 1-D."""
    if weight is None:
        return float(values.sum(dtype=np.float64)) / weight_sum
    w = np.asarray(weight, dtype=np.float64)
    total = w @ values.astype(np.float64, copy=False)
    return float(np.sum(total)) / weight_sum
