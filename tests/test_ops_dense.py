"""Matrix multiply and dense layer kernels over every backend and dtype."""

import numpy as np
import pytest
from conftest import reference, tol

from fastnn import ops
from fastnn.gradcheck import numerical_gradient

MATMUL_SHAPES = [(1, 1, 1), (1, 5, 3), (7, 3, 1), (32, 64, 128), (64, 64, 64), (33, 17, 65), (129, 31, 7)]


@pytest.mark.parametrize("m,k,n", MATMUL_SHAPES, ids=str)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_matmul_matches_numpy(backend, dtype, m, k, n, trans_a, trans_b, rng):
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    got = ops.matmul(a, b, trans_a=trans_a, trans_b=trans_b)
    want = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)
    np.testing.assert_allclose(got, want, **tol(dtype, 10 * np.sqrt(k)))


def test_matmul_non_contiguous_and_out(backend, dtype, rng):
    a = rng.standard_normal((20, 30)).astype(dtype)
    b = np.asfortranarray(rng.standard_normal((30, 10)).astype(dtype))
    out = np.empty((10, 10), dtype)
    got = ops.matmul(a[::2, ::3], b[::3, :], out=out)
    assert got is out
    np.testing.assert_allclose(got, a[::2, ::3] @ b[::3, :], **tol(dtype, 50))


def test_matmul_empty(backend, dtype):
    assert ops.matmul(np.ones((0, 3), dtype), np.ones((3, 4), dtype)).shape == (0, 4)
    z = ops.matmul(np.ones((2, 0), dtype), np.ones((0, 4), dtype))
    np.testing.assert_array_equal(z, np.zeros((2, 4)))


def test_matmul_errors(backend):
    with pytest.raises(ValueError, match="inner dimensions"):
        ops.matmul(np.ones((2, 3)), np.ones((4, 2)))
    with pytest.raises(TypeError):
        ops.matmul(np.ones((2, 3), np.float32), np.ones((3, 2), np.float64))
    with pytest.raises(TypeError):
        ops.matmul(np.ones((2, 3), int), np.ones((3, 2), int))
    with pytest.raises(ValueError, match="2-D"):
        ops.matmul(np.ones(3), np.ones((3, 2)))
    a = np.ones((3, 3))
    with pytest.raises(ValueError, match="overlap"):
        ops.matmul(a, np.ones((3, 3)), out=a)


def test_matmul_nan_propagates(backend, dtype):
    a = np.ones((4, 4), dtype)
    a[1, 2] = np.nan
    c = ops.matmul(a, np.ones((4, 4), dtype))
    assert np.isnan(c[1]).all() and np.isfinite(c[0]).all()


ACTS = ["identity", "relu", "sigmoid", "tanh"]
DENSE_SHAPES = [(1, 3, 2), (32, 64, 128), (17, 33, 10), (128, 784, 10)]


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("b,i,o", DENSE_SHAPES, ids=str)
def test_dense_forward_backward_match_reference(backend, dtype, activation, b, i, o, rng):
    x = rng.standard_normal((b, i)).astype(dtype)
    w = (rng.standard_normal((o, i)) / np.sqrt(i)).astype(dtype)
    bias = rng.standard_normal(o).astype(dtype)
    y = ops.dense_forward(x, w, bias, activation)
    y_ref = reference("dense_forward", x, w, bias, activation)
    np.testing.assert_allclose(y, y_ref, **tol(dtype, 10 * np.sqrt(i)))
    g = rng.standard_normal((b, o)).astype(dtype)
    got = ops.dense_backward(g, x, w, y_ref, activation)
    want = reference("dense_backward", g, x, w, y_ref, activation)
    for name, a, e in zip(("grad_input", "grad_weight", "grad_bias"), got, want):
        np.testing.assert_allclose(a, e, err_msg=name, **tol(dtype, 10 * np.sqrt(max(b, o))))


@pytest.mark.parametrize("activation", ACTS)
def test_dense_backward_finite_differences(backend, activation, rng):
    x = rng.standard_normal((3, 4))
    w = rng.standard_normal((5, 4))
    bias = rng.standard_normal(5)
    r = rng.standard_normal((3, 5))
    loss = lambda: float(np.sum(r * ops.dense_forward(x, w, bias, activation)))
    y = ops.dense_forward(x, w, bias, activation)
    gx, gw, gb = ops.dense_backward(r, x, w, y, activation)
    np.testing.assert_allclose(gx, numerical_gradient(loss, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gw, numerical_gradient(loss, w), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gb, numerical_gradient(loss, bias), rtol=1e-6, atol=1e-8)


def test_dense_without_bias_and_input_grad(backend, dtype, rng):
    x = rng.standard_normal((6, 4)).astype(dtype)
    w = rng.standard_normal((3, 4)).astype(dtype)
    y = ops.dense_forward(x, w, None, "relu")
    np.testing.assert_allclose(y, np.maximum(x @ w.T, 0), **tol(dtype, 10))
    gi, gw, gb = ops.dense_backward(np.ones_like(y), x, w, y, "relu", bias=False, input_grad=False)
    assert gi is None and gb is None
    np.testing.assert_allclose(gw, ((y > 0) * 1.0).T.astype(dtype) @ x, **tol(dtype, 10))


def test_dense_reuses_buffers(backend, dtype, rng):
    x = rng.standard_normal((8, 5)).astype(dtype)
    w = rng.standard_normal((4, 5)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    out = np.empty((8, 4), dtype)
    bufs = dict(grad_input=np.empty_like(x), grad_weight=np.empty_like(w), grad_bias=np.empty_like(b))
    y = ops.dense_forward(x, w, b, "tanh", out=out)
    assert y is out
    gi, gw, gb = ops.dense_backward(np.ones_like(y), x, w, y, "tanh", **bufs)
    assert gi is bufs["grad_input"] and gw is bufs["grad_weight"] and gb is bufs["grad_bias"]


def test_dense_batch_of_one_and_empty(backend, dtype, rng):
    w = rng.standard_normal((3, 4)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    x1 = rng.standard_normal((1, 4)).astype(dtype)
    np.testing.assert_allclose(ops.dense_forward(x1, w, b), x1 @ w.T + b, **tol(dtype, 10))
    x0 = np.empty((0, 4), dtype)
    y0 = ops.dense_forward(x0, w, b, "sigmoid")
    assert y0.shape == (0, 3)
    gi, gw, gb = ops.dense_backward(np.empty((0, 3), dtype), x0, w, y0, "sigmoid")
    assert gi.shape == (0, 4)
    np.testing.assert_array_equal(gw, 0)
    np.testing.assert_array_equal(gb, 0)


def test_dense_errors(backend):
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match="features"):
        ops.dense_forward(x, np.ones((4, 5)))
    with pytest.raises(ValueError, match="bias"):
        ops.dense_forward(x, np.ones((4, 3)), np.ones(5))
    with pytest.raises(ValueError, match="activation"):
        ops.dense_forward(x, np.ones((4, 3)), activation="softplus")
    with pytest.raises(ValueError, match="forward output"):
        ops.dense_backward(np.ones((2, 4)), x, np.ones((4, 3)), None, "relu")
    with pytest.raises(ValueError, match="grad_out"):
        ops.dense_backward(np.ones((2, 5)), x, np.ones((4, 3)))
    with pytest.raises(TypeError):
        ops.dense_forward(x.astype(np.float32), np.ones((4, 3)))
