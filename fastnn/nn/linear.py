"""The fully connected layer, ``y = x·Wᵀ + b``.

Buffers: the layer owns its output and input-gradient arrays and reuses them
while the batch shape repeats (one pair per shape seen), so a training loop
allocates nothing after its first step. The array returned by ``forward`` or
``backward`` is therefore overwritten by the next call with the same shape:
copy it if you need to keep it.

Fast path: the first call with a given input shape goes through the
validated op (:func:`fastnn.ops.dense_forward`); later calls with the same
shape, dtype and parameter arrays call the active backend's kernel directly,
after a few identity checks.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _validation as _v, ops
from ..backends import current as _current
from . import init as _init
from .module import Module, Parameter, register_module, remember

__all__ = ["Linear"]

_ndarray = np.ndarray





@register_module
class Linear(Module):
    """Fully connected layer ``y = x·Wᵀ + b`` (PyTorch's ``nn.Linear``).

    Parameters
    ----------
    in_features : int, I
    out_features : int, O
    bias : bool, default True
    dtype : float32 or float64, default float32
    init : str, default "default"
        Weight initialiser: ``"default"`` is PyTorch's
        (``U(−1/sqrt(I), 1/sqrt(I))``), or ``"he"``/``"he_normal"``,
        ``"glorot"``/``"glorot_normal"`` (see :mod:`fastnn.nn.init`). The bias
        is drawn from ``U(−1/sqrt(I), 1/sqrt(I))`` with ``"default"`` and is
        zero otherwise.
    rng : numpy.random.Generator or int, optional
        Generator for the initial values (default: the one seeded by
        :func:`fastnn.manual_seed`).

    Attributes
    ----------
    weight : Parameter of shape (O, I)
    bias : Parameter of shape (O,) or None

    Shapes: input (B, I), output (B, O).
    """

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32, init="default", rng=None):
        super().__init__()
        self.in_features = _v.positive_int(in_features, "in_features")
        self.out_features = _v.positive_int(out_features, "out_features")
        dt = _v.strict_float_dtype(dtype)
        if not isinstance(init, str) or init not in _init.INITIALIZERS:
            raise ValueError(f"init must be one of {sorted(_init.INITIALIZERS)}, got {init!r}")
        self.init = init
        # relocatable: this layer reads weight.data/.grad afresh on every call
        self.weight = Parameter(np.empty((self.out_features, self.in_features), dt), relocatable=True)
        self.bias = Parameter(np.empty(self.out_features, dt), relocatable=True) if _v.strict_bool(bias, "bias") else None
        self._fcache = {}   # (input shape, activation) -> (W, b, out)
        self._bcache = {}   # (input shape, activation) -> (W, dW, db, grad_input)
        self._saved = [None, None, None]   # x, y, activation of the last forward
        self.reset_parameters(rng)

    def reset_parameters(self, rng=None):
        """Draw new initial values (see the ``init`` parameter)."""
        rng = _init.get_rng(rng)
        _init.INITIALIZERS[self.init](self.weight.data, rng=rng)
        if self.bias is not None:
            if self.init == "default":
                bound = 1.0 / math.sqrt(self.in_features)
                _init.uniform_(self.bias.data, -bound, bound, rng)
            else:
                self.bias.data[...] = 0

    # -- computation --------------------------------------------------
    def forward(self, x):
        """``y = x·Wᵀ + b`` for ``x`` of shape (B, I); returns (B, O)."""
        return self._forward(x, "identity")

    def backward(self, grad_out):
        """Fill ``weight.grad`` (and ``bias.grad``); return dL/dx of shape (B, I)."""
        return self._backward(grad_out, True)

    def _forward(self, x, activation):
        # Fused forward ``act(x·Wᵀ + b)``; Sequential calls this with the
        # activation of the module that follows.
        w = self.weight.data
        bias = self.bias
        b = None if bias is None else bias.data
        if type(x) is _ndarray and x.flags.c_contiguous:
            c = self._fcache.get((x.shape, activation))
            if c is not None and c[0] is w and c[1] is b and x.dtype is w.dtype and x is not c[2] \
                    and x.base is not c[2]:
                y = _current().dense_forward(x, w, b, activation, c[2])
                s = self._saved
                s[0] = x
                s[1] = y
                s[2] = activation
                return y
        return self._forward_slow(x, w, b, activation)

    def _forward_slow(self, x, w, b, activation):
        x = np.asarray(x)
        if x.ndim != 2:
            raise ValueError(f"Linear expects input of shape (B, {self.in_features}), got shape {x.shape}")
        if x.dtype.kind in "iub":
            x = x.astype(w.dtype)  # integer data (pixels, counts) is converted, floats are not
        out = np.empty((x.shape[0], w.shape[0]), w.dtype)
        y = ops.dense_forward(x, w, b, activation, out=out)
        if type(x) is _ndarray and x.flags.c_contiguous and x.dtype is w.dtype:
            remember(self._fcache, (x.shape, activation), (w, b, out))
        else:
            x = np.ascontiguousarray(x)
        s = self._saved
        s[0] = x
        s[1] = y
        s[2] = activation
        return y

    def _backward(self, grad_out, input_grad=True):
        x, y, activation = self._saved
        if x is None:
            raise RuntimeError("Linear.backward called before forward")
        w = self.weight.data
        dw = self.weight.grad
        bias = self.bias
        db = None if bias is None else bias.grad
        if type(grad_out) is _ndarray and grad_out.flags.c_contiguous and grad_out.dtype is w.dtype \
                and grad_out.shape == y.shape:
            key = (x.shape, activation, input_grad)
            c = self._bcache.get(key)
            if c is not None and c[0] is w and c[1] is dw and c[2] is db \
                    and (c[3] is None or (grad_out is not c[3] and grad_out.base is not c[3])):
                return _current().dense_backward(grad_out, x, w, None if activation == "identity" else y,
                                                 activation, c[3], dw, db)[0]
        return self._backward_slow(grad_out, x, y, activation, input_grad, w, dw, db)

    def _backward_slow(self, grad_out, x, y, activation, input_grad, w, dw, db):
        gin = np.empty(x.shape, w.dtype) if input_grad else None
        if dw.shape != w.shape or dw.dtype != w.dtype:
            dw = self.weight.grad = np.zeros_like(w)
        if db is not None and (db.shape != self.bias.data.shape or db.dtype != w.dtype):
            db = self.bias.grad = np.zeros_like(self.bias.data)
        gin, dw2, db2 = ops.dense_backward(grad_out, x, w, y, activation, bias=db is not None,
                                           input_grad=input_grad, grad_input=gin, grad_weight=dw, grad_bias=db)
        if type(grad_out) is _ndarray and grad_out.flags.c_contiguous and grad_out.dtype is w.dtype:
            remember(self._bcache, (x.shape, activation, input_grad), (w, dw, db, gin))
        return gin

    # -- description --------------------------------------------------
    def get_config(self) -> dict:
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias is not None, "dtype": self.weight.data.dtype.name, "init": self.init}

    def extra_repr(self) -> str:
        extra = "" if self.weight.data.dtype == np.float32 else f", dtype={self.weight.data.dtype.name}"
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}{extra}"

    @classmethod
    def parameters_from_config(cls, config, children=()):
        """``[(name, shape, dtype name)]`` that ``Linear(**config)`` creates, config checked (see Module)."""
        c = _v.layer_config(config, "Linear", ("in_features", "out_features", "bias", "dtype", "init"), children)
        i, o = _v.positive_int(c["in_features"], "in_features"), _v.positive_int(c["out_features"], "out_features")
        dt = _v.strict_float_dtype(c["dtype"]).name
        _v.str_choice(c["init"], "init", tuple(_init.INITIALIZERS))
        return [("weight", (o, i), dt)] + ([("bias", (o,), dt)] if _v.strict_bool(c["bias"], "bias") else [])
