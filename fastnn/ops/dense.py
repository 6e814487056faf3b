"""Matrix multiply and dense layers (see the reference for the math)."""

from .. import _validation as _v
from ..backends import current as _backend

__all__ = ["matmul", "dense_forward", "dense_backward", "DENSE_ACTIVATIONS"]

DENSE_ACTIVATIONS = ("identity", "relu", "sigmoid", "tanh")


def matmul(a, b, trans_a=False, trans_b=False, out=None):
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
            f"(a.shape={a.shape}, trans_a={bool(trans_a)}, b.shape={b.shape}, trans_b={bool(trans_b)})")
    if m > _v.MAX_DIM or n > _v.MAX_DIM or k > _v.MAX_DIM:
        _v.dims_fit("matmul", M=m, N=n, K=k)
    out = _v.output(out, (m, n), a.dtype, inputs=(a, b))
    if out.size == 0:  # nothing to compute (and no kernel loops over the rows of an empty result)
        return out
    return _backend().matmul(a, b, bool(trans_a), bool(trans_b), out)


def _dense_args(x, weight, bias):
    x = _v.as_float_array(x, "x", ndim=2)
    weight = _v.as_float_array(weight, "weight", ndim=2)
    _v.same_dtype(x.dtype, weight, "weight")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"x has {x.shape[1]} features (shape {x.shape}) but weight expects "
                         f"{weight.shape[1]} (shape {weight.shape}, stored as (out, in))")
    if bias is not None:
        bias = _v.as_float_array(bias, "bias", ndim=1)
        _v.same_dtype(x.dtype, bias, "bias")
        if bias.shape[0] != weight.shape[0]:
            raise ValueError(f"bias has shape {bias.shape} but weight has {weight.shape[0]} outputs")
    (b, i), o = x.shape, weight.shape[0]
    if b > _v.MAX_DIM or i > _v.MAX_DIM or o > _v.MAX_DIM:
        _v.dims_fit("dense", batch=b, in_features=i, out_features=o)
    return x, weight, bias


def dense_forward(x, weight, bias=None, activation="identity", out=None):
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


def dense_backward(grad_out, x, weight, y=None, activation="identity", *, bias=True,
                   input_grad=True, grad_input=None, grad_weight=None, grad_bias=None):
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
    grad_bias = _v.output(grad_bias, (weight.shape[0],), dt, "grad_bias",
                          (grad_out, x, weight, y, grad_input, grad_weight)) if bias else None
    if grad_out.size == 0:  # no sample or no output: every gradient is a sum over nothing
        for g in (grad_input, grad_weight, grad_bias):
            if g is not None:
                g.fill(0)
        return grad_input, grad_weight, grad_bias
    return _backend().dense_backward(grad_out, x, weight, y, activation, grad_input, grad_weight, grad_bias)
