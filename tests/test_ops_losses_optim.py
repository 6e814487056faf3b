"""Loss and optimizer kernels over every backend and dtype."""

import numpy as np
import pytest
from conftest import reference, tol

from fastnn import ops
from fastnn.gradcheck import numerical_gradient


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("shape", [(1, 1), (32, 10), (256, 1000), (7,)], ids=str)
def test_mse_matches_reference(backend, dtype, reduction, shape, rng):
    p = rng.standard_normal(shape).astype(dtype)
    t = rng.standard_normal(shape).astype(dtype)
    loss, grad = ops.mse_loss(p, t, reduction)
    loss_ref, grad_ref = reference("mse_loss", p, t, reduction)
    assert isinstance(loss, float)
    np.testing.assert_allclose(loss, loss_ref, rtol=tol(dtype, 50)["rtol"])
    np.testing.assert_allclose(grad, grad_ref, **tol(dtype, 4))
    exact = np.sum((p.astype(np.float64) - t) ** 2) / (p.size if reduction == "mean" else 1)
    np.testing.assert_allclose(loss, exact, rtol=1e-4 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("b,c", [(1, 2), (32, 10), (256, 1000), (5, 1)], ids=str)
def test_cross_entropy_matches_reference(backend, dtype, reduction, b, c, rng):
    z = (rng.standard_normal((b, c)) * 5).astype(dtype)
    y = rng.integers(0, c, b)
    loss, grad = ops.softmax_cross_entropy(z, y, reduction)
    loss_ref, grad_ref = reference("softmax_cross_entropy", z, y, reduction)
    np.testing.assert_allclose(loss, loss_ref, rtol=tol(dtype, 50)["rtol"], atol=tol(dtype, 50)["atol"])
    np.testing.assert_allclose(grad, grad_ref, **tol(dtype, 10))
    z64 = z.astype(np.float64)
    lse = np.log(np.exp(z64 - z64.max(1, keepdims=True)).sum(1)) + z64.max(1)
    exact = np.sum(lse - z64[np.arange(b), y]) / (b if reduction == "mean" else 1)
    np.testing.assert_allclose(loss, exact, rtol=1e-4 if dtype == np.float32 else 1e-11, atol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_bce_matches_reference(backend, dtype, reduction, rng):
    z = (rng.standard_normal((16, 3)) * 10).astype(dtype)
    t = rng.random((16, 3)).astype(dtype)
    loss, grad = ops.bce_with_logits(z, t, reduction)
    loss_ref, grad_ref = reference("bce_with_logits", z, t, reduction)
    np.testing.assert_allclose(loss, loss_ref, rtol=tol(dtype, 50)["rtol"])
    np.testing.assert_allclose(grad, grad_ref, **tol(dtype, 10))


@pytest.mark.parametrize("loss_name", ["mse_loss", "softmax_cross_entropy", "bce_with_logits"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_loss_gradients_finite_differences(backend, loss_name, reduction, rng):
    z = rng.standard_normal((4, 5))
    if loss_name == "softmax_cross_entropy":
        target = rng.integers(0, 5, 4)
    else:
        target = rng.random((4, 5))
    f = lambda: getattr(ops, loss_name)(z, target, reduction)[0]
    _, grad = getattr(ops, loss_name)(z, target, reduction)
    np.testing.assert_allclose(grad, numerical_gradient(f, z), rtol=1e-6, atol=1e-9)


def test_cross_entropy_extreme_logits(backend, dtype):
    z = np.array([[1000.0, -1000.0, 0.0], [-1e4, 1e4, 0]], dtype=dtype)
    loss, grad = ops.softmax_cross_entropy(z, np.array([0, 0]), "sum")
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(loss, 2e4, rtol=1e-5)


def test_losses_empty_batch(backend, dtype):
    z = np.empty((0, 3), dtype)
    loss, grad = ops.softmax_cross_entropy(z, np.empty(0, int), "mean")
    assert np.isnan(loss) and grad.shape == (0, 3)
    assert ops.softmax_cross_entropy(z, np.empty(0, int), "sum")[0] == 0.0
    assert ops.mse_loss(z, z, "sum")[0] == 0.0


def test_losses_nan_propagates(backend, dtype):
    z = np.array([[np.nan, 1.0]], dtype)
    assert np.isnan(ops.softmax_cross_entropy(z, np.array([1]))[0])
    assert np.isnan(ops.mse_loss(z, np.zeros_like(z))[0])


def test_loss_errors(backend):
    z = np.ones((3, 4))
    with pytest.raises(ValueError, match=r"labels must lie"):
        ops.softmax_cross_entropy(z, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match=r"labels must lie"):
        ops.softmax_cross_entropy(z, np.array([0, -1, 1]))
    with pytest.raises(TypeError, match="integers"):
        ops.softmax_cross_entropy(z, np.array([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="shape"):
        ops.softmax_cross_entropy(z, np.array([0, 1]))
    with pytest.raises(ValueError, match="reduction"):
        ops.mse_loss(z, z, "max")
    with pytest.raises(ValueError, match="match"):
        ops.mse_loss(z, np.ones((4, 3)))


def _sgd_numpy(p, g, v, lr, momentum, nesterov, wd):
    g = g + wd * p
    if momentum:
        v[:] = momentum * v + g
        g = g + momentum * v if nesterov else v
    return p - lr * g


@pytest.mark.parametrize("momentum,nesterov,wd", [(0, False, 0), (0.9, False, 0), (0.9, True, 1e-2), (0, False, 0.1)])
@pytest.mark.parametrize("size", [1, 10, 1000, 100_003])
def test_sgd_update(backend, dtype, momentum, nesterov, wd, size, rng):
    p = rng.standard_normal(size).astype(dtype)
    v = rng.standard_normal(size).astype(dtype) if momentum else None
    g = rng.standard_normal(size).astype(dtype)
    p_ref, v_ref = p.astype(np.float64), (v.astype(np.float64) if momentum else None)
    for _ in range(3):
        p_ref = _sgd_numpy(p_ref, g, v_ref, 0.1, momentum, nesterov, wd)
        ops.sgd_update(p, g, v, lr=0.1, momentum=momentum, nesterov=nesterov, weight_decay=wd)
    np.testing.assert_allclose(p, p_ref, **tol(dtype, 20))
    if momentum:
        np.testing.assert_allclose(v, v_ref, **tol(dtype, 20))


def test_sgd_hand_computed(backend):
    p = np.array([1.0, -2.0])
    g = np.array([0.5, 0.25])
    v = np.zeros(2)
    ops.sgd_update(p, g, v, lr=0.1, momentum=0.9)  # v = g, p = p - 0.1 g
    np.testing.assert_allclose(p, [0.95, -2.025], rtol=1e-15)
    ops.sgd_update(p, g, v, lr=0.1, momentum=0.9)  # v = 0.9 g + g = 1.9 g
    np.testing.assert_allclose(v, [0.95, 0.475], rtol=1e-15)
    np.testing.assert_allclose(p, [0.95 - 0.095, -2.025 - 0.0475], rtol=1e-15)


def _adam_numpy(p, g, m, v, t, lr, b1, b2, eps, wd, decoupled):
    if decoupled:
        p = p * (1 - lr * wd)
    else:
        g = g + wd * p
    m[:] = b1 * m + (1 - b1) * g
    v[:] = b2 * v + (1 - b2) * g * g
    mhat = m / (1 - b1**t)
    vhat = v / (1 - b2**t)
    return p - lr * mhat / (np.sqrt(vhat) + eps)


@pytest.mark.parametrize("wd,decoupled", [(0, False), (0.01, False), (0.01, True)])
@pytest.mark.parametrize("size", [1, 1000, 100_003])
def test_adam_update(backend, dtype, wd, decoupled, size, rng):
    p = rng.standard_normal(size).astype(dtype)
    m = np.zeros(size, dtype)
    v = np.zeros(size, dtype)
    p_ref, m_ref, v_ref = p.astype(np.float64), np.zeros(size), np.zeros(size)
    for t in range(1, 4):
        g = rng.standard_normal(size).astype(dtype)
        p_ref = _adam_numpy(p_ref, g.astype(np.float64), m_ref, v_ref, t, 1e-2, 0.9, 0.999, 1e-8, wd, decoupled)
        ops.adam_update(p, g, m, v, t, lr=1e-2, weight_decay=wd, decoupled=decoupled)
    np.testing.assert_allclose(p, p_ref, **tol(dtype, 100))
    np.testing.assert_allclose(m, m_ref, **tol(dtype, 100))


def test_optimizer_errors(backend):
    p = np.ones(3)
    with pytest.raises(ValueError, match="velocity"):
        ops.sgd_update(p, np.ones(3), None, lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="C-contiguous"):
        ops.sgd_update(np.ones(6)[::2], np.ones(3), lr=0.1)
    with pytest.raises(ValueError, match="match"):
        ops.sgd_update(p, np.ones(4), lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        ops.sgd_update(p, np.ones(3), lr=float("nan"))
    with pytest.raises(ValueError, match="step"):
        ops.adam_update(p, np.ones(3), np.zeros(3), np.zeros(3), 0)
    with pytest.raises(TypeError):
        ops.adam_update(p, np.ones(3), np.zeros(3, np.float32), np.zeros(3), 1)
    with pytest.raises(TypeError):
        ops.sgd_update([1.0, 2.0], np.ones(2), lr=0.1)
