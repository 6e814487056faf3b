"""Loss modules: value and gradient against PyTorch and by hand, in every backend."""

import numpy as np
import pytest
from conftest import tol

import fastnn
from fastnn import nn


@pytest.mark.torch
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("kind", ["mse", "ce", "bce"])
def test_loss_matches_torch(backend, dtype, kind, reduction, rng):
    torch = pytest.importorskip("torch")
    pred = rng.standard_normal((8, 5)).astype(dtype)
    if kind == "mse":
        target = rng.standard_normal((8, 5)).astype(dtype)
        ours, theirs = nn.MSELoss(reduction), torch.nn.MSELoss(reduction=reduction)
    elif kind == "ce":
        target = rng.integers(0, 5, 8)
        ours, theirs = nn.CrossEntropyLoss(reduction), torch.nn.CrossEntropyLoss(reduction=reduction)
    else:
        target = rng.integers(0, 2, (8, 5)).astype(dtype)
        ours, theirs = nn.BCEWithLogitsLoss(reduction), torch.nn.BCEWithLogitsLoss(reduction=reduction)
    value = ours(pred, target)
    assert isinstance(value, float)
    pt = torch.tensor(pred, requires_grad=True)
    lt = theirs(pt, torch.tensor(target))
    lt.backward()
    assert value == pytest.approx(lt.item(), rel=tol(dtype, 10)["rtol"], abs=tol(dtype, 10)["atol"])
    np.testing.assert_allclose(ours.backward(), pt.grad.numpy(), **tol(dtype, 10))


def test_losses_by_hand():
    mse = nn.MSELoss()
    assert mse(np.array([[1.0, 2.0]]), np.array([[0.0, 4.0]])) == pytest.approx((1 + 4) / 2)
    np.testing.assert_allclose(mse.backward(), [[1.0, -2.0]])
    assert nn.MSELoss("sum")(np.array([1.0, 2.0]), np.array([0.0, 4.0])) == pytest.approx(5.0)
    ce = nn.CrossEntropyLoss()
    logits = np.array([[0.0, np.log(3.0)]])  # softmax = [1/4, 3/4]
    assert ce(logits, np.array([1])) == pytest.approx(-np.log(0.75))
    np.testing.assert_allclose(ce.backward(), [[0.25, -0.25]])
    bce = nn.BCEWithLogitsLoss()
    assert bce(np.array([0.0]), np.array([1.0])) == pytest.approx(np.log(2))
    np.testing.assert_allclose(bce.backward(), [-0.5])


def test_loss_errors():
    with pytest.raises(RuntimeError, match="before"):
        nn.MSELoss().backward()
    with pytest.raises(ValueError, match="reduction"):
        nn.MSELoss("max")
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        nn.CrossEntropyLoss()(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(TypeError, match="integers"):
        nn.CrossEntropyLoss()(np.zeros((2, 3)), np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="shape"):
        nn.MSELoss()(np.zeros((2, 3)), np.zeros((3, 2)))


def test_loss_gradient_is_fresh_outside_a_workspace_and_reused_inside():
    ce = nn.CrossEntropyLoss()
    ce(np.zeros((4, 3), np.float32), np.array([0, 1, 2, 0]))
    g1 = ce.backward()
    ce(np.ones((4, 3), np.float32), np.array([0, 1, 2, 0]))
    g2 = ce.backward()
    assert g2 is not g1
    np.testing.assert_allclose(g1[0], [-2 / 12, 1 / 12, 1 / 12], rtol=1e-6)  # not overwritten by the 2nd call
    with fastnn.workspace():
        ce(np.zeros((4, 3), np.float32), np.array([0, 1, 2, 0]))
        g3 = ce.backward()
        ce(np.ones((4, 3), np.float32), np.array([0, 1, 2, 0]))
        assert ce.backward() is g3
    assert ce.backward(2.0)[0, 0] == pytest.approx(2 * g3[0, 0])


def test_cross_entropy_fast_path_still_checks_labels(backend):
    ce = nn.CrossEntropyLoss()
    logits = np.zeros((3, 4), np.float32)
    ok = np.array([0, 3, 1], dtype=np.intp)
    first = ce(logits, ok)
    assert ce(logits, ok) == pytest.approx(first) == pytest.approx(np.log(4))
    for bad in ([0, 4, 1], [0, -1, 1]):
        with pytest.raises(ValueError, match=r"\[0, 4\)"):
            ce(logits, np.array(bad, dtype=np.intp))
    np.testing.assert_allclose(ce.backward()[1], [0.25 / 3, 0.25 / 3, 0.25 / 3, -0.75 / 3], rtol=1e-6)
