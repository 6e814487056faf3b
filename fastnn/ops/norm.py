"""Batch and layer normalisation (see the reference backend for the math).

Every function checks its arguments here, before a kernel runs: float input
of the parameters' dtype, matching feature sizes, statistics of the right
shape, a finite positive ``eps``, a ``momentum`` in [0, 1]. A batch norm in
training needs more than one value per channel (PyTorch's rule: the variance
of one value is undefined). An empty batch in evaluation mode gives an empty
output.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, TypeGuard, cast

import numpy as np

from .. import _validation as _v
from .._typing import ArrayLike, FloatArray, ParamLike
from ..backends import Backend
from ..backends import current as _backend

__all__ = [
    "batch_norm_forward",
    "batch_norm_backward",
    "layer_norm_forward",
    "layer_norm_backward",
    "BatchNormPlan",
    "LayerNormPlan",
]


#: ``(out, mean, var)`` of a batch norm, ``(out, mean, rstd)`` of a layer norm
_NormOut = tuple[FloatArray, FloatArray, FloatArray]
#: ``(grad_input, grad_weight, grad_bias)``, each None when not computed
_NormGrads = tuple[FloatArray | None, FloatArray | None, FloatArray | None]


def _eps(eps: float) -> float:
    return _v.scalar(eps, "eps", low=0.0, low_open=True)


def _channels(x: ArrayLike, name: str = "x") -> FloatArray:
    """``x`` (N, C, *) as a C-contiguous (N, C, L) view, L the product of the trailing sizes."""
    x = _v.as_float_array(x, name)
    if x.ndim < 2:
        raise ValueError(f"{name} must have at least 2 dimensions (batch, channels, ...), got shape {x.shape}")
    return x.reshape(x.shape[0], x.shape[1], math.prod(x.shape[2:]))


def _bn_args(x: ArrayLike, training: bool, eps: float) -> tuple[tuple[int, ...], FloatArray, bool, float]:
    """What both batch norm passes check first: ``x``'s shape, ``x`` as (N, C, L), ``training`` and ``eps``."""
    shape = np.shape(x)
    x3 = _channels(x)
    return shape, x3, _v.strict_bool(training, "training"), _eps(eps)


def _vector(a: ArrayLike, name: str, dtype: np.dtype[Any], n: int) -> FloatArray:
    a = _v.as_float_array(a, name, ndim=1)
    _v.same_dtype(dtype, a, name)
    if a.shape[0] != n:
        raise ValueError(f"{name} has shape {a.shape}, expected ({n},) (one value per channel/feature)")
    return a


def _affine(
    weight: ArrayLike | None, bias: ArrayLike | None, dtype: np.dtype[Any], n: int
) -> tuple[FloatArray | None, FloatArray | None]:
    w = None if weight is None else _vector(weight, "weight", dtype, n)
    b = None if bias is None else _vector(bias, "bias", dtype, n)
    return w, b


def _outputs(
    out: FloatArray | None,
    mean: FloatArray | None,
    stat: FloatArray | None,
    stat_name: str,
    shape: tuple[int, ...],
    n: int,
    dt: np.dtype[Any],
    ins: tuple[FloatArray | None, ...],
) -> _NormOut:
    """Buffers for the output and the ``n`` means and second statistics, none overlapping another or the inputs."""
    out = _v.output(out, shape, dt, inputs=ins)
    mean = _v.output(mean, (n,), dt, "mean", ins + (out,))
    stat = _v.output(stat, (n,), dt, stat_name, ins + (out, mean))
    return out, mean, stat


def _grad_outputs(
    grads: tuple[FloatArray | None, FloatArray | None, FloatArray | None],
    wanted: tuple[bool, bool, bool],
    shape: tuple[int, ...],
    param_shape: tuple[int, ...],
    dt: np.dtype[Any],
    ins: tuple[FloatArray | None, ...],
) -> _NormGrads:
    """Buffers for the wanted gradients of the input and of the parameters (given flat or shaped as ``param_shape``)."""
    grad_input, grad_weight, grad_bias = grads
    gi = _v.output(grad_input, shape, dt, "grad_input", ins) if wanted[0] else None
    # a given array that is not shaped as the parameter must be flat; anything else fails the type check
    flat = (math.prod(param_shape),)
    gw = gb = None
    if wanted[1]:
        gw_shape = param_shape if type(grad_weight) is not np.ndarray or grad_weight.shape == param_shape else flat
        gw = _v.output(grad_weight, gw_shape, dt, "grad_weight", ins + (gi,))
    if wanted[2]:
        gb_shape = param_shape if type(grad_bias) is not np.ndarray or grad_bias.shape == param_shape else flat
        gb = _v.output(grad_bias, gb_shape, dt, "grad_bias", ins + (gi, gw))
    return gi, gw, gb


def _zero_sums(grads: _NormGrads) -> _NormGrads:
    """The gradients of a normalisation over no values: the parameters' are sums over nothing, zero."""
    for g in grads[1:]:
        if g is not None:
            g.fill(0)
    return grads


def batch_norm_forward(
    x: ArrayLike,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    running_mean: FloatArray | None = None,
    running_var: FloatArray | None = None,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    *,
    out: FloatArray | None = None,
    mean: FloatArray | None = None,
    var: FloatArray | None = None,
) -> _NormOut:
    """Batch normalisation over the batch and spatial axes, per channel (PyTorch's ``batch_norm``).

    Parameters
    ----------
    x : array_like of shape (N, C) or (N, C, L...) (e.g. (N, C, H, W))
    weight, bias : array_like of shape (C,), optional
        γ and β (``affine=False`` in PyTorch: leave them out).
    running_mean, running_var : ndarray of shape (C,), optional
        In training they are updated in place,
        ``r ← (1 − momentum)·r + momentum·batch statistic`` (the unbiased
        variance for ``running_var``); in evaluation they normalise.
    training : bool, default True
        Normalise by the batch's statistics (True) or by the running ones.
    momentum : float in [0, 1], default 0.1
        PyTorch's convention: the weight of the new batch. (A cumulative
        average, PyTorch's ``momentum=None``, is ``momentum=1/k`` at the k-th
        batch; :class:`fastnn.nn.BatchNorm1d` does that for you.)
    eps : float > 0, default 1e-5
    out : ndarray shaped like x, optional
    mean, var : ndarray of shape (C,), optional
        Buffers for the statistics used (batch mean and *biased* batch
        variance in training, copies of the running ones otherwise).

    Returns
    -------
    out : ndarray shaped like x
    mean, var : ndarray of shape (C,), what :func:`batch_norm_backward` needs
    """
    shape, x3, training, eps = _bn_args(x, training, eps)
    N, C, L = x3.shape
    dt = x3.dtype
    weight, bias = _affine(weight, bias, dt, C)
    for a, name in ((running_mean, "running_mean"), (running_var, "running_var")):
        if a is not None:
            _v.inplace(a, name)
            _vector(a, name, dt, C)
    if (running_mean is None) != (running_var is None):
        raise ValueError("give both running_mean and running_var, or neither")
    if training:
        momentum = _v.scalar(momentum, "momentum", low=0.0, high=1.0)
        if N * L <= 1:
            raise ValueError(
                f"batch_norm: expected more than 1 value per channel when training, got input of shape {shape}"
            )
    elif running_mean is None:
        raise ValueError("batch_norm: evaluation (training=False) needs running_mean and running_var")
    out, mean, var = _outputs(out, mean, var, "var", shape, C, dt, (x3, weight, bias, running_mean, running_var))
    if not training:
        mean[...] = running_mean
        var[...] = running_var
    if out.size:
        _backend().batch_norm_forward(x3, weight, bias, eps, training, mean, var, out.reshape(N, C, L))
    if training and running_mean is not None and running_var is not None:  # both or neither: checked above
        update_running_stats(running_mean, running_var, mean, var, N * L, momentum)
    return out, mean, var


def update_running_stats(
    running_mean: FloatArray, running_var: FloatArray, mean: FloatArray, var: FloatArray, count: int, momentum: float
) -> None:
    """``r ← (1 − m)·r + m·s`` for the mean and the unbiased variance ``var·count/(count − 1)`` (C values)."""
    keep = 1.0 - momentum
    running_mean *= keep
    running_mean += momentum * mean
    running_var *= keep
    running_var += (momentum * count / (count - 1)) * var


def batch_norm_backward(
    grad_out: ArrayLike,
    x: ArrayLike,
    weight: ArrayLike | None,
    mean: ArrayLike,
    var: ArrayLike,
    eps: float = 1e-5,
    training: bool = True,
    *,
    input_grad: bool = True,
    grad_input: FloatArray | None = None,
    grad_weight: FloatArray | None = None,
    grad_bias: FloatArray | None = None,
) -> _NormGrads:
    """Backward pass of :func:`batch_norm_forward`.

    Parameters
    ----------
    grad_out : array_like shaped like x, dL/dy
    x : array_like, the forward input
    weight : array_like of shape (C,) or None
        γ; None for a batch norm without affine parameters (no gradients for them).
    mean, var : array_like of shape (C,), as returned by the forward pass
    eps : float, as in the forward pass
    training : bool
        Whether the forward pass used the batch statistics.
    input_grad : bool, default True
    grad_input, grad_weight, grad_bias : ndarray, optional (overwritten)

    Returns
    -------
    grad_input : ndarray shaped like x, or None
    grad_weight, grad_bias : ndarray of shape (C,), or None without affine parameters
    """
    shape, x3, training, eps = _bn_args(x, training, eps)
    N, C, L = x3.shape
    dt = x3.dtype
    g3 = _channels(grad_out, "grad_out")
    _v.same_dtype(dt, g3, "grad_out")
    if np.shape(grad_out) != shape:
        raise ValueError(f"grad_out has shape {np.shape(grad_out)} but must match x of shape {shape}")
    weight = None if weight is None else _vector(weight, "weight", dt, C)
    mean = _vector(mean, "mean", dt, C)
    var = _vector(var, "var", dt, C)
    affine = weight is not None
    grad_input, grad_weight, grad_bias = _grad_outputs(
        (grad_input, grad_weight, grad_bias), (input_grad, affine, affine), shape, (C,), dt, (g3, x3, weight, mean, var)
    )
    if N * L == 0:
        return _zero_sums((grad_input, grad_weight, grad_bias))
    gi3 = None if grad_input is None else grad_input.reshape(N, C, L)
    _backend().batch_norm_backward(g3, x3, weight, mean, var, eps, training, gi3, grad_weight, grad_bias)
    return grad_input, grad_weight, grad_bias


def _normalized(shape: Sequence[int], normalized_shape: Sequence[int]) -> tuple[int, int]:
    """(M, K) for an input ``shape`` whose trailing dimensions are ``normalized_shape``."""
    k = len(normalized_shape)
    if len(shape) < k or tuple(shape[len(shape) - k :]) != tuple(normalized_shape):
        raise ValueError(
            f"layer_norm: input of shape {tuple(shape)} does not end with the normalized shape "
            f"{tuple(normalized_shape)}"
        )
    K = math.prod(normalized_shape)
    return math.prod(shape[: len(shape) - k]), K


def _ln_param(a: ArrayLike | None, name: str, dt: np.dtype[Any], ns: tuple[int, ...]) -> FloatArray | None:
    """A layer norm's γ or β, given shaped as ``normalized_shape`` or flat, as a checked flat vector (or None)."""
    if a is None:
        return None
    return _vector(np.reshape(a, -1) if np.shape(a) == ns else a, name, dt, math.prod(ns))


def _norm_shape(normalized_shape: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(normalized_shape, (int, np.integer)) and not isinstance(normalized_shape, (bool, np.bool_)):
        normalized_shape = (normalized_shape,)
    try:
        items = tuple(cast("Iterable[object]", normalized_shape))  # anything else: TypeError, below
    except TypeError:
        raise TypeError(f"normalized_shape must be an int or a sequence of ints, got {normalized_shape!r}") from None
    if not items:
        raise ValueError("normalized_shape must hold at least one size")
    return tuple(_v.positive_int(n, "normalized_shape") for n in items)


def layer_norm_forward(
    x: ArrayLike,
    normalized_shape: int | Sequence[int],
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    eps: float = 1e-5,
    *,
    out: FloatArray | None = None,
    mean: FloatArray | None = None,
    rstd: FloatArray | None = None,
) -> _NormOut:
    """Layer normalisation over the trailing ``normalized_shape`` dimensions (PyTorch's ``layer_norm``).

    Parameters
    ----------
    x : array_like of shape (..., *normalized_shape)
    normalized_shape : int or tuple of ints
    weight, bias : array_like of shape ``normalized_shape``, optional (γ, β)
    eps : float > 0, default 1e-5
    out : ndarray shaped like x, optional
    mean, rstd : ndarray of shape (M,), optional
        M = the number of normalised groups (the product of the leading
        dimensions): each group's mean and ``1/sqrt(σ² + eps)``.

    Returns
    -------
    out, mean, rstd
    """
    ns = _norm_shape(normalized_shape)
    x = _v.as_float_array(x, "x")
    M, K = _normalized(x.shape, ns)
    dt = x.dtype
    eps = _eps(eps)
    w = _ln_param(weight, "weight", dt, ns)
    b = _ln_param(bias, "bias", dt, ns)
    out, mean, rstd = _outputs(out, mean, rstd, "rstd", x.shape, M, dt, (x, w, b))
    if out.size:
        _backend().layer_norm_forward(x.reshape(M, K), w, b, eps, out.reshape(M, K), mean, rstd)
    return out, mean, rstd


def layer_norm_backward(
    grad_out: ArrayLike,
    x: ArrayLike,
    normalized_shape: int | Sequence[int],
    weight: ArrayLike | None,
    mean: ArrayLike,
    rstd: ArrayLike,
    *,
    bias: bool = True,
    input_grad: bool = True,
    grad_input: FloatArray | None = None,
    grad_weight: FloatArray | None = None,
    grad_bias: FloatArray | None = None,
) -> _NormGrads:
    """Backward pass of :func:`layer_norm_forward`.

    Parameters
    ----------
    grad_out : array_like shaped like x, dL/dy
    x : array_like, the forward input
    normalized_shape : int or tuple of ints
    weight : array_like of shape ``normalized_shape`` or None (no γ: no gradient for it)
    mean, rstd : array_like of shape (M,), from the forward pass
    bias : bool, default True
        Whether the layer has β (whether to compute its gradient).
    input_grad : bool, default True
    grad_input, grad_weight, grad_bias : ndarray, optional (overwritten; the
        parameter gradients may be given flat, (K,), or shaped like the parameter)

    Returns
    -------
    grad_input or None, grad_weight or None, grad_bias or None
    """
    ns = _norm_shape(normalized_shape)
    x = _v.as_float_array(x, "x")
    M, K = _normalized(x.shape, ns)
    dt = x.dtype
    grad_out = _v.as_float_array(grad_out, "grad_out")
    _v.same_dtype(dt, grad_out, "grad_out")
    _v.same_shape(x.shape, grad_out, "grad_out", "x")
    w = _ln_param(weight, "weight", dt, ns)
    mean = _vector(mean, "mean", dt, M)
    rstd = _vector(rstd, "rstd", dt, M)
    grad_input, gw, gb = _grad_outputs(
        (grad_input, grad_weight, grad_bias),
        (input_grad, w is not None, bias),
        x.shape,
        ns,
        dt,
        (grad_out, x, w, mean, rstd),
    )
    if M == 0:
        return _zero_sums((grad_input, gw, gb))
    _backend().layer_norm_backward(
        grad_out.reshape(M, K),
        x.reshape(M, K),
        w,
        mean,
        rstd,
        None if grad_input is None else grad_input.reshape(M, K),
        None if gw is None else gw.reshape(K),
        None if gb is None else gb.reshape(K),
    )
    return grad_input, gw, gb


# ---------------------------------------------------------------------------
# The bound forms layers use (see fastnn.ops._plan)

from . import _plan as _p  # noqa: E402
from ._planbase import fits as _fits  # noqa: E402

_nd = _p.ndarray


#: (backend, w, b, dw, db, forward kernel, backward kernel, then the flat views of w, b, dw and db) once bound
_AffineBound = tuple[
    Backend,
    FloatArray | None,
    FloatArray | None,
    FloatArray | None,
    FloatArray | None,
    Callable[..., Any],
    Callable[..., Any],
    FloatArray | None,
    FloatArray | None,
    FloatArray | None,
    FloatArray | None,
]


class _AffinePlan:
    """What the normalisation plans share: optional γ and β bound with the backend's kernels, and ``eps``."""

    __slots__ = ("weight", "bias", "eps", "_bound")

    #: the op's name in errors and in the backend's kernel names
    _where: ClassVar[str]

    weight: ParamLike | None
    bias: ParamLike | None
    eps: float
    _bound: _AffineBound | None

    def __init__(self, weight: ParamLike | None, bias: ParamLike | None, eps: float) -> None:
        self.weight, self.bias = weight, bias
        self.eps = _eps(eps)
        self._bound = None

    def _param_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def _bind(self) -> _AffineBound:
        """Validated (data, grad) of optional affine parameters (checked once per bind), with flat views."""
        shape, where = self._param_shape(), self._where
        w = dw = b = db = None
        weight, bias = self.weight, self.bias
        if weight is not None:
            w = _p.check_param(weight, "weight")
            dw = _p.check_grad(weight, "weight")
        if bias is not None:
            b = _p.check_param(bias, "bias")
            db = _p.check_grad(bias, "bias")
            if w is not None:
                _v.same_dtype(w.dtype, b, "bias")
                if b.shape != w.shape:
                    raise ValueError(f"{where}: bias has shape {b.shape} but weight has {w.shape}")
        _p.check_disjoint(where, w, b, dw, db)
        for a, name in ((w, "weight"), (b, "bias")):
            if a is not None and a.shape != shape:
                raise ValueError(f"{where}: {name} has shape {a.shape}, expected {shape}")
        n = math.prod(shape)
        fw, fb, fdw, fdb = (None if a is None else a.reshape(n) for a in (w, b, dw, db))
        backend = _p.current()
        fwd, bwd = getattr(backend, where + "_forward"), getattr(backend, where + "_backward")
        bound = (backend, w, b, dw, db, fwd, bwd, fw, fb, fdw, fdb)
        self._bound = bound
        return bound

    def _check(self, grads: bool = False) -> _AffineBound:
        """The bound state, bound again if the parameters hold other arrays (or gradients) or the backend changed."""
        k = self._bound
        weight, bias = self.weight, self.bias
        if (
            k is None
            or k[1] is not (None if weight is None else weight.data)
            or k[2] is not (None if bias is None else bias.data)
            or k[0] is not _p.current()
            or (
                grads
                and ((weight is not None and k[3] is not weight.grad) or (bias is not None and k[4] is not bias.grad))
            )
        ):
            k = self._bind()
        return k

    def _outputs(self, x: FloatArray, n: int, dt: np.dtype[Any], stat_name: str) -> _NormOut:
        """Workspace buffers (or new arrays) for the output and the ``n`` means and second statistics."""
        return (
            _p.output(self, "y", x.shape, dt, x),
            _p.output(self, "mean", (n,), dt),
            _p.output(self, stat_name, (n,), dt),
        )

    def _for_backward(
        self, dt: np.dtype[Any], accumulate: bool
    ) -> tuple[_AffineBound, FloatArray | None, FloatArray | None]:
        """The bound state with the gradients, and where a backward kernel writes the flat dγ and dβ.

        That is the gradients themselves, or with ``accumulate`` buffers to add into them after.
        """
        k = self._check(grads=True)
        gw, gb = k[9], k[10]
        if accumulate:
            n = math.prod(self._param_shape())
            gw = None if gw is None else _p.output(self, "acc_w", (n,), dt)
            gb = None if gb is None else _p.output(self, "acc_b", (n,), dt)
        return k, gw, gb

    @staticmethod
    def _accumulate(k: _AffineBound, gw: FloatArray | None, gb: FloatArray | None) -> None:
        """Add the buffers of :meth:`_for_backward` (``accumulate=True``) into the parameters' gradients."""
        for acc, g in ((k[9], gw), (k[10], gb)):
            if acc is not None and g is not None:  # g is acc's accumulation buffer: None together
                np.add(acc, g, out=acc)

    @staticmethod
    def _grad_fits(grad_out: object, x: FloatArray, dt: np.dtype[Any]) -> TypeGuard[FloatArray]:
        """Whether ``grad_out`` goes to the kernel as it is: shaped like the (fast-path) input ``x``."""
        return _fits(grad_out, dt) and grad_out.shape == x.shape


class BatchNormPlan(_AffinePlan):
    """:func:`batch_norm_forward` and :func:`batch_norm_backward` bound to one layer.

    Parameters
    ----------
    num_features : int, C
    weight, bias : Parameter-like of shape (C,), or None (no affine parameters)
    eps : float

    Notes
    -----
    The running statistics are not bound: the layer passes its buffers (or
    None) at every call, since ``load_state_dict`` and ``to`` may replace
    them. The parameters are validated when first seen; a call checks
    identities and the input's type, dtype, layout and channels. Results come
    from the active workspace, or are new arrays.
    """

    __slots__ = ("num_features",)

    _where = "batch_norm"

    num_features: int

    def __init__(
        self, num_features: int, weight: ParamLike | None = None, bias: ParamLike | None = None, eps: float = 1e-5
    ) -> None:
        self.num_features = _v.positive_int(num_features, "num_features")
        super().__init__(weight, bias, eps)

    def _param_shape(self) -> tuple[int, ...]:
        return (self.num_features,)

    def _fast(self, x: object, dt: np.dtype[Any]) -> TypeGuard[FloatArray]:
        return _fits(x, dt) and x.ndim >= 2 and x.shape[1] == self.num_features

    def forward(
        self,
        x: ArrayLike,
        training: bool,
        running_mean: FloatArray | None = None,
        running_var: FloatArray | None = None,
        momentum: float = 0.1,
    ) -> _NormOut:
        """Normalise ``x`` (N, C, ...); returns ``(out, mean, var)`` (see :func:`batch_norm_forward`)."""
        k = self._check()
        w, b = k[1], k[2]
        # without γ the input's dtype decides; input that is not an ndarray takes the validated op
        dt = w.dtype if w is not None else (x.dtype if type(x) is _nd else None)
        C = self.num_features
        stats_ok = (running_mean is None and running_var is None) or (
            type(running_mean) is _nd
            and running_mean.dtype is dt
            and running_mean.shape == (C,)
            and type(running_var) is _nd
            and running_var.dtype is dt
            and running_var.shape == (C,)
        )
        if dt is not None and self._fast(x, dt) and stats_ok and x.size and (not training or x.size > C):
            N, C = x.shape[0], x.shape[1]
            L = x.size // (N * C)
            out, mean, var = self._outputs(x, C, dt, "var")
            if not training:
                if running_mean is None or running_var is None:
                    raise ValueError("batch_norm: evaluation (training=False) needs running_mean and running_var")
                mean[...] = running_mean
                var[...] = running_var
            k[5](x.reshape(N, C, L), w, b, self.eps, training, mean, var, out.reshape(N, C, L))
            if training and running_mean is not None and running_var is not None:
                update_running_stats(running_mean, running_var, mean, var, N * L, momentum)
            return out, mean, var
        return batch_norm_forward(x, w, b, running_mean, running_var, training, momentum, self.eps)

    def backward(
        self,
        grad_out: ArrayLike,
        x: ArrayLike,
        mean: FloatArray,
        var: FloatArray,
        training: bool,
        *,
        input_grad: bool = True,
        accumulate: bool = False,
    ) -> FloatArray | None:
        """dL/dx (None if ``input_grad=False``); writes ``weight.grad`` and ``bias.grad``."""
        k, gw, gb = self._for_backward(mean.dtype, accumulate)
        dt = mean.dtype
        if self._fast(x, dt) and self._grad_fits(grad_out, x, dt) and x.size:
            N, C = x.shape[0], x.shape[1]
            L = x.size // (N * C)
            gin = _p.output(self, "grad_input", x.shape, dt, grad_out) if input_grad else None
            k[6](
                grad_out.reshape(N, C, L),
                x.reshape(N, C, L),
                k[1],
                mean,
                var,
                self.eps,
                training,
                None if gin is None else gin.reshape(N, C, L),
                gw,
                gb,
            )
        else:
            gin = batch_norm_backward(
                grad_out, x, k[1], mean, var, self.eps, training, input_grad=input_grad, grad_weight=gw, grad_bias=gb
            )[0]
        if accumulate:
            self._accumulate(k, gw, gb)
        return gin


class LayerNormPlan(_AffinePlan):
    """:func:`layer_norm_forward` and :func:`layer_norm_backward` bound to one layer.

    Parameters
    ----------
    normalized_shape : tuple of ints
    weight, bias : Parameter-like of shape ``normalized_shape``, or None
    eps : float
    """

    __slots__ = ("normalized_shape", "K")

    _where = "layer_norm"

    normalized_shape: tuple[int, ...]
    K: int

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        weight: ParamLike | None = None,
        bias: ParamLike | None = None,
        eps: float = 1e-5,
    ) -> None:
        self.normalized_shape = _norm_shape(normalized_shape)
        self.K = math.prod(self.normalized_shape)
        super().__init__(weight, bias, eps)

    def _param_shape(self) -> tuple[int, ...]:
        return self.normalized_shape

    def _fast(self, x: object, dt: np.dtype[Any]) -> TypeGuard[FloatArray]:
        ns = self.normalized_shape
        return _fits(x, dt) and x.ndim >= len(ns) and x.shape[x.ndim - len(ns) :] == ns and x.size > 0

    def forward(self, x: ArrayLike) -> _NormOut:
        """Normalise ``x`` (..., *normalized_shape); returns ``(out, mean, rstd)``."""
        k = self._check()
        w, b = k[1], k[2]
        # without γ and β the input's dtype decides; input that is not an ndarray takes the validated op
        a = w if w is not None else b
        dt = a.dtype if a is not None else (x.dtype if type(x) is _nd else None)
        if dt is not None and self._fast(x, dt):
            K = self.K
            M = x.size // K
            out, mean, rstd = self._outputs(x, M, dt, "rstd")
            k[5](x.reshape(M, K), k[7], k[8], self.eps, out.reshape(M, K), mean, rstd)
            return out, mean, rstd
        return layer_norm_forward(x, self.normalized_shape, w, b, self.eps)

    def backward(
        self,
        grad_out: ArrayLike,
        x: ArrayLike,
        mean: FloatArray,
        rstd: FloatArray,
        *,
        input_grad: bool = True,
        accumulate: bool = False,
    ) -> FloatArray | None:
        """dL/dx (None if ``input_grad=False``); writes ``weight.grad`` and ``bias.grad``."""
        k, gw, gb = self._for_backward(mean.dtype, accumulate)
        dt = mean.dtype
        if self._fast(x, dt) and self._grad_fits(grad_out, x, dt):
            K = self.K
            M = x.size // K
            gin = _p.output(self, "grad_input", x.shape, dt, grad_out) if input_grad else None
            k[6](
                grad_out.reshape(M, K),
                x.reshape(M, K),
                k[7],
                mean,
                rstd,
                None if gin is None else gin.reshape(M, K),
                gw,
                gb,
            )
        else:
            gin = layer_norm_backward(
                grad_out,
                x,
                self.normalized_shape,
                k[1],
                mean,
                rstd,
                bias=gb is not None,
                input_grad=input_grad,
                grad_weight=gw,
                grad_bias=gb,
            )[0]
        if accumulate:
            self._accumulate(k, gw, gb)
        return gin
