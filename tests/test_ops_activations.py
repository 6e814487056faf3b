"""Activation kernels: every backend against the reference and finite differences."""

import numpy as np
import pytest
from conftest import reference, tol

from fastnn import ops
from fastnn.gradcheck import numerical_gradient

ELEMENTWISE = ["relu", "leaky_relu", "sigmoid", "tanh"]
SHAPES = [(1,), (7,), (3, 5), (2, 3, 4), (1000,), (70_001,)]  # the last crosses the parallel threshold


def _fwd(name, x, **kw):
    return getattr(ops, name)(x, **kw)


@pytest.mark.parametrize("name", ELEMENTWISE)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_matches_reference(backend, dtype, name, shape, rng):
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    got = _fwd(name, x)
    want = reference(name, x)
    assert got.dtype == dtype and got.shape == x.shape
    np.testing.assert_allclose(got, want, **tol(dtype, 4))


@pytest.mark.parametrize("name", ELEMENTWISE)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_backward_matches_reference(backend, dtype, name, shape, rng):
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    y = reference(name, x)
    g = rng.standard_normal(shape).astype(dtype)
    got = getattr(ops, name + "_backward")(g, y)
    want = reference(name + "_backward", g, y)
    np.testing.assert_allclose(got, want, **tol(dtype, 4))


@pytest.mark.parametrize("name", ELEMENTWISE + ["softmax"])
def test_backward_matches_finite_differences(backend, name, rng):
    x = rng.standard_normal((4, 6))
    x[np.abs(x) < 1e-3] = 0.5  # keep away from the kink of relu
    w = rng.standard_normal((4, 6))  # L = sum(w * act(x))
    loss = lambda: float(np.sum(w * getattr(ops, name)(x)))
    num = numerical_gradient(loss, x)
    y = getattr(ops, name)(x)
    got = getattr(ops, name + "_backward")(w, y)
    np.testing.assert_allclose(got, num, rtol=1e-6, atol=1e-8)


def test_sigmoid_extremes_do_not_overflow(backend, dtype):
    x = np.array([-1e4, -100, -20, 0, 20, 100, 1e4], dtype=dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = ops.sigmoid(x)
    assert np.all(np.isfinite(y))
    assert y[0] == 0 or y[0] < 1e-30
    assert y[-1] == 1 and y[3] == 0.5
    np.testing.assert_allclose(ops.tanh(x), np.tanh(x), **tol(dtype, 4))


def test_sigmoid_and_tanh_accuracy_wide_range(backend, dtype):
    x = np.linspace(-30, 30, 100_003).astype(dtype)
    np.testing.assert_allclose(
        ops.tanh(x), np.tanh(x.astype(np.float64)), rtol=tol(dtype)["rtol"] * 4, atol=tol(dtype)["atol"] * 4
    )
    want = 1 / (1 + np.exp(-x.astype(np.float64)))
    np.testing.assert_allclose(ops.sigmoid(x), want, rtol=tol(dtype)["rtol"] * 4, atol=1e-30)


@pytest.mark.parametrize("name", ELEMENTWISE + ["softmax"])
def test_nan_propagates(backend, dtype, name):
    x = np.array([[np.nan, 1.0, -1.0]], dtype=dtype)
    y = getattr(ops, name)(x)
    assert np.isnan(y[0, 0])


def test_relu_values_exact(backend, dtype):
    x = np.array([-2.0, -0.0, 0.0, 3.5], dtype=dtype)
    np.testing.assert_array_equal(ops.relu(x), [0, 0, 0, 3.5])
    np.testing.assert_array_equal(ops.leaky_relu(x, 0.1), np.array([-0.2, 0, 0, 3.5], dtype=dtype))
    np.testing.assert_array_equal(ops.relu_backward(np.ones(4, dtype), ops.relu(x)), [0, 0, 0, 1])


def test_softmax_rows_sum_to_one(backend, dtype, rng):
    x = (rng.standard_normal((33, 10)) * 50).astype(dtype)
    y = ops.softmax(x)
    np.testing.assert_allclose(y.sum(axis=1), 1, rtol=tol(dtype, 10)["rtol"])
    np.testing.assert_allclose(y, reference("softmax", x), **tol(dtype, 10))
    g = rng.standard_normal((33, 10)).astype(dtype)
    np.testing.assert_allclose(ops.softmax_backward(g, y), reference("softmax_backward", g, y), **tol(dtype, 10))


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_out_buffer_and_in_place(backend, dtype, name, rng):
    x = rng.standard_normal((5, 7)).astype(dtype)
    want = reference(name, x)
    out = np.empty_like(x)
    assert _fwd(name, x, out=out) is out
    np.testing.assert_allclose(out, want, **tol(dtype, 4))
    _fwd(name, x, out=x)  # in place
    np.testing.assert_allclose(x, want, **tol(dtype, 4))


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_non_contiguous_and_fortran_input(backend, dtype, name, rng):
    base = rng.standard_normal((8, 10)).astype(dtype)
    for x in (base[:, ::2], np.asfortranarray(base), base.T):
        np.testing.assert_allclose(_fwd(name, x), reference(name, np.ascontiguousarray(x)), **tol(dtype, 4))


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_empty_input(backend, dtype, name):
    x = np.empty((0, 5), dtype=dtype)
    assert _fwd(name, x).shape == (0, 5)
    assert getattr(ops, name + "_backward")(x, x).shape == (0, 5)


def test_empty_softmax(backend, dtype):
    assert ops.softmax(np.empty((0, 4), dtype)).shape == (0, 4)


@pytest.mark.parametrize("name", ELEMENTWISE + ["softmax"])
def test_integer_input_is_type_error(backend, name):
    with pytest.raises(TypeError, match="float32 or float64"):
        getattr(ops, name)(np.arange(6).reshape(2, 3))


def test_bad_buffers_and_shapes(backend):
    x = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="shape"):
        ops.relu(x, out=np.empty((4, 3), np.float32))
    with pytest.raises(TypeError, match="dtype"):
        ops.relu(x, out=np.empty((3, 4), np.float64))
    with pytest.raises(ValueError, match="match"):
        ops.relu_backward(x, np.ones((3, 5), np.float32))
    with pytest.raises(TypeError, match="dtype"):
        ops.tanh_backward(x, np.ones((3, 4), np.float64))
    with pytest.raises(ValueError, match="2-D"):
        ops.softmax(np.ones(4))
    with pytest.raises(ValueError, match="negative_slope"):
        ops.leaky_relu(x, -0.5)
