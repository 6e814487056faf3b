"""Matrix multiply and dense layers (see the reference for the math)."""

from __future__ import annotations

from .. import _validation as _v
from .._typing import ArrayLike, DenseActivation, FloatArray
from ..backends import current as _backend

__all__ = ["matmul", "dense_forward", "dense_backward", "DENSE_ACTIVATIONS", "DensePlan"]

DENSE_ACTIVATIONS: tuple[DenseActivation, ...] = ("identity", "relu", "sigmoid", "tanh")


def matmul(
    a: ArrayLike, b: ArrayLike, trans_a: bool = False, trans_b: bool = False, out: FloatArray | None = None
) -> FloatArray:
    """Matrix product ``op(a) @ op(b)`` with optional transposes.

    Parameters
    ----------
    a : array_like of shape (M, K), or (K, M) if ``trans_a``
    b : array_like of shape (K, N), or (N, K) if ``trans_b``
    trans_a, trans_b : bool, default False
        Use the transpose of the operand (no copy is made for this).
    out : ndarray of shape (M, N), optional
        Must not overlap ``a`` or ``b``.

    Returns
    -------
    ndarray of shape (M, N)

    Raises
    ------
    TypeError
        Integer input, or operands of different float dtypes.
    ValueError
        Operands that are not 2-D or whose inner dimensions differ.
    """
    a = _v.as_float_array(a, "a", ndim=2)
    b = _v.as_float_array(b, "b", ndim=2)
    _v.same_dtype(a.dtype, b, "b")
    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    k2, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if k != k2:
        raise ValueError(
            f"matmul: inner dimensions differ: op(a) is {m}x{k} and op(b) is {k2}x{n} "
            f"(a.shape={a.shape}, trans_a={bool(trans_a)}, b.shape={b.shape}, trans_b={bool(trans_b)})"
        )
    if m > _v.MAX_DIM or n > _v.MAX_DIM or k > _v.MAX_DIM:
        _v.dims_fit("matmul", M=m, N=n, K=k)
    out = _v.output(out, (m, n), a.dtype, inputs=(a, b))
    if out.size == 0:  # nothing to compute (and no kernel loops over the rows of an empty result)
        return out
    return _backend().matmul(a, b, bool(trans_a), bool(trans_b), out)


def _dense_args(
    x: ArrayLike, weight: ArrayLike, bias: ArrayLike | None
) -> tuple[FloatArray, FloatArray, FloatArray | None]:
    x = _v.as_float_array(x, "x", ndim=2)
    weight = _v.as_float_array(weight, "weight", ndim=2)
    _v.same_dtype(x.dtype, weight, "weight")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"x has {x.shape[1]} features (shape {x.shape}) but weight expects "
            f"{weight.shape[1]} (shape {weight.shape}, stored as (out, in))"
        )
    if bias is not None:
        bias = _v.as_float_array(bias, "bias", ndim=1)
        _v.same_dtype(x.dtype, bias, "bias")
        if bias.shape[0] != weight.shape[0]:
            raise ValueError(f"bias has shape {bias.shape} but weight has {weight.shape[0]} outputs")
    (b, i), o = x.shape, weight.shape[0]
    if b > _v.MAX_DIM or i > _v.MAX_DIM or o > _v.MAX_DIM:
        _v.dims_fit("dense", batch=b, in_features=i, out_features=o)
    return x, weight, bias


def dense_forward(
    x: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None = None,
    activation: DenseActivation = "identity",
    out: FloatArray | None = None,
) -> FloatArray:
    """Fully connected layer ``act(x @ weight.T + bias)``.

    Parameters
    ----------
    x : array_like of shape (B, I)
    weight : array_like of shape (O, I)
    bias : array_like of shape (O,), optional
    activation : {"identity", "relu", "sigmoid", "tanh"}
        Applied to the output in the same pass where the backend can fuse it.
    out : ndarray of shape (B, O), optional

    Returns
    -------
    ndarray of shape (B, O)
    """
    x, weight, bias = _dense_args(x, weight, bias)
    _v.choice(activation, "activation", DENSE_ACTIVATIONS)
    out = _v.output(out, (x.shape[0], weight.shape[0]), x.dtype, inputs=(x, weight, bias))
    if out.size == 0:  # no sample or no output: nothing to compute
        return out
    return _backend().dense_forward(x, weight, bias, activation, out)


def dense_backward(
    grad_out: ArrayLike,
    x: ArrayLike,
    weight: ArrayLike,
    y: ArrayLike | None = None,
    activation: DenseActivation = "identity",
    *,
    bias: bool = True,
    input_grad: bool = True,
    grad_input: FloatArray | None = None,
    grad_weight: FloatArray | None = None,
    grad_bias: FloatArray | None = None,
) -> tuple[FloatArray | None, FloatArray, FloatArray | None]:
    """Backward pass of :func:`dense_forward`.

    Parameters
    ----------
    grad_out : array_like of shape (B, O), dL/dy
    x : array_like of shape (B, I), the forward input
    weight : array_like of shape (O, I)
    y : array_like of shape (B, O), optional
        The forward output; required unless ``activation="identity"``.
    activation : {"identity", "relu", "sigmoid", "tanh"}
    bias : bool, default True
        Whether the layer has a bias (whether to compute its gradient).
    input_grad : bool, default True
        Whether to compute dL/dx (the first layer of a network does not need it).
    grad_input, grad_weight, grad_bias : ndarray, optional
        Buffers to write the gradients into (overwritten, not accumulated).

    Returns
    -------
    grad_input : ndarray of shape (B, I) or None
    grad_weight : ndarray of shape (O, I)
    grad_bias : ndarray of shape (O,) or None
    """
    x, weight, _ = _dense_args(x, weight, None)
    _v.choice(activation, "activation", DENSE_ACTIVATIONS)
    grad_out = _v.as_float_array(grad_out, "grad_out", ndim=2)
    _v.same_dtype(x.dtype, grad_out, "grad_out")
    shape_y = (x.shape[0], weight.shape[0])
    _v.same_shape(shape_y, grad_out, "grad_out", "the layer output")
    if activation != "identity":
        if y is None:
            raise ValueError(f"dense_backward with activation={activation!r} needs the forward output y")
        y = _v.as_float_array(y, "y", ndim=2)
        _v.same_dtype(x.dtype, y, "y")
        _v.same_shape(shape_y, y, "y", "the layer output")
    else:
        y = None
    dt = x.dtype
    grad_input = _v.output(grad_input, x.shape, dt, "grad_input", (grad_out, weight)) if input_grad else None
    # dL/dW is written before dL/dx reads the weight; dL/db while δ is formed from y
    grad_weight = _v.output(grad_weight, weight.shape, dt, "grad_weight", (grad_out, x, weight, y, grad_input))
    grad_bias = (
        _v.output(grad_bias, (weight.shape[0],), dt, "grad_bias", (grad_out, x, weight, y, grad_input, grad_weight))
        if bias
        else None
    )
    if grad_out.size == 0:  # no sample or no output: every gradient is a sum over nothing
        for g in (grad_input, grad_weight, grad_bias):
            if g is not None:
                g.fill(0)
        return grad_input, grad_weight, grad_bias
    return _backend().dense_backward(grad_out, x, weight, y, activation, grad_input, grad_weight, grad_bias)


# ---------------------------------------------------------------------------
# The bound form layers use (see fastnn.ops._plan)

from . import _plan as _p  # noqa: E402
from ._planbase import WeightBiasPlan as _WeightBiasPlan  # noqa: E402

_nd = _p.ndarray
_ACTS = frozenset(DENSE_ACTIVATIONS)


class DensePlan(_WeightBiasPlan):
    """:func:`dense_forward` and :func:`dense_backward` bound to one layer's parameters.

    Parameters
    ----------
    weight : Parameter-like
        An object whose ``.data`` is the (O, I) weight and ``.grad`` its
        gradient buffer (e.g. :class:`fastnn.nn.Parameter`), read at every call.
    bias : Parameter-like of shape (O,), optional

    Notes
    -----
    The parameter arrays are validated when first seen; a call then checks
    their identities and the input's type, dtype, layout and width. Anything
    else goes through the fully validated op. Results come from the active
    workspace, or are new arrays.
    """

    __slots__ = ()

    _ndim = 2
    _where = "dense"
    _kernel_names = ("dense_forward", "dense_backward")

    def forward(self, x: ArrayLike, activation: DenseActivation = "identity") -> FloatArray:
        """``act(x·Wᵀ + b)`` for ``x`` of shape (B, I)."""
        k, w, b = self._for_forward()
        dt, (O, I) = k[3], k[4]
        # the input tests spelled out, not through fits(): the calls cost ~2% of a small dense step
        if (
            type(x) is _nd
            and x.dtype is dt
            and x.flags.c_contiguous
            and x.ndim == 2
            and x.shape[1] == I
            and w.shape == k[4]
            and activation in _ACTS
            and x.shape[0] <= _v.MAX_DIM
        ):
            return k[5](x, w, b, activation, _p.output(self, "y", (x.shape[0], O), dt, x))
        return dense_forward(x, w, b, activation)

    def backward(
        self,
        grad_out: ArrayLike,
        x: ArrayLike,
        y: ArrayLike | None = None,
        activation: DenseActivation = "identity",
        *,
        input_grad: bool = True,
        accumulate: bool = False,
    ) -> FloatArray | None:
        """dL/dx (None if ``input_grad=False``); writes ``weight.grad`` and ``bias.grad``.

        ``x`` and ``y`` are the input and output of the forward call;
        ``accumulate=True`` adds the parameter gradients to ``.grad`` instead
        of overwriting them.
        """
        k, w, dw, b, db = self._for_backward()
        dt, (O, I) = k[3], k[4]
        if activation == "identity":
            y = None
        gw, gb = _p.grad_targets(self, dw, db, dt, accumulate)
        if (
            type(grad_out) is _nd
            and type(x) is _nd
            and grad_out.dtype is dt
            and x.dtype is dt
            and grad_out.flags.c_contiguous
            and x.flags.c_contiguous
            and x.ndim == 2
            and w.shape == k[4]
            and grad_out.shape == (x.shape[0], O)
            and x.shape[1] == I
            and activation in _ACTS
            and (y is None or (type(y) is _nd and y.dtype is dt and y.flags.c_contiguous and y.shape == grad_out.shape))
        ):
            gin = _p.output(self, "grad_input", x.shape, dt, grad_out) if input_grad else None
            k[6](grad_out, x, w, y, activation, gin, gw, gb)
        else:
            gin = dense_backward(
                grad_out, x, w, y, activation, bias=b is not None, input_grad=input_grad, grad_weight=gw, grad_bias=gb
            )[0]
        if accumulate:
            _p.accumulate_grads(dw, gw, db, gb)
        return gin
