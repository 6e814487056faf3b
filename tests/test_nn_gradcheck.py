"""gradcheck itself: it passes correct layers and catches wrong ones, naming the worst mismatch."""

import numpy as np
import pytest

import fastnn
from fastnn import nn
from fastnn.gradcheck import GradcheckError


class Square(nn.Module):
    """y = w ⊙ x², with a deliberately wrong backward when ``bug`` is set."""

    def __init__(self, n, bug=None):
        super().__init__()
        self.weight = nn.Parameter(np.linspace(0.5, 1.5, n))
        self.bug = bug

    def forward(self, x):
        self._x = np.asarray(x)
        return self.weight.data * self._x**2

    def backward(self, g, *, input_grad=True, accumulate=False):
        x = self._x
        self.weight.grad[...] = (g * x**2).sum(axis=0) * (1.1 if self.bug == "param" else 1.0)
        gin = 2 * g * self.weight.data * x
        if self.bug == "input":
            gin[1, 2] += 0.01
        return gin


def test_gradcheck_passes_correct_layer(rng):
    report = fastnn.gradcheck(Square(4), rng.standard_normal((3, 4)))
    assert report.ok and bool(report)
    assert [r["name"] for r in report.results] == ["input", "weight"]
    assert all(r["max_abs_err"] < 1e-7 for r in report.results)
    assert "passed" in str(report)


def test_gradcheck_finds_wrong_input_gradient(rng):
    with pytest.raises(GradcheckError) as info:
        fastnn.gradcheck(Square(4, bug="input"), rng.standard_normal((3, 4)))
    report = info.value.report
    worst = report.worst
    assert worst["name"] == "input" and worst["worst_index"] == (1, 2)
    assert worst["analytic"] - worst["numeric"] == pytest.approx(0.01, rel=1e-4)
    assert "worst mismatch: input[1, 2]" in str(info.value)


def test_gradcheck_finds_wrong_parameter_gradient(rng):
    report = fastnn.gradcheck(Square(4, bug="param"), rng.standard_normal((3, 4)), raise_exception=False)
    assert not report.ok
    by_name = {r["name"]: r for r in report.results}
    assert by_name["input"]["ok"] and not by_name["weight"]["ok"]
    assert by_name["weight"]["max_rel_err"] == pytest.approx(0.1, rel=1e-3)


def test_gradcheck_restores_float32_parameters(rng):
    lin = nn.Linear(3, 2)
    w = lin.weight.data
    before = w.copy()
    report = fastnn.gradcheck(lin, rng.standard_normal((2, 3)), max_elements=3)
    assert report.ok
    assert lin.weight.data is w and w.dtype == np.float32
    np.testing.assert_array_equal(w, before)
    # afterwards the float32 layer still runs in float32
    assert lin(np.ones((2, 3), np.float32)).dtype == np.float32


def test_numerical_gradient_of_a_known_function():
    from fastnn.gradcheck import numerical_gradient

    x = np.array([[0.5, -1.0, 2.0], [1.5, 0.0, -0.25]])
    g = numerical_gradient(lambda: float(np.sum(np.sin(x) * x)), x)
    np.testing.assert_allclose(g, np.cos(x) * x + np.sin(x), rtol=1e-8, atol=1e-9)
    np.testing.assert_array_equal(x, [[0.5, -1.0, 2.0], [1.5, 0.0, -0.25]])  # restored


def test_numerical_gradient_samples_indices_and_refuses_copies():
    from fastnn.gradcheck import numerical_gradient

    x = np.arange(6.0)
    g = numerical_gradient(lambda: float(np.sum(x**2)), x, indices=[1, 4])
    np.testing.assert_allclose(g[[1, 4]], [2.0, 8.0], rtol=1e-8)
    assert np.isnan(g[[0, 2, 3, 5]]).all()
    with pytest.raises(TypeError, match="C-contiguous"):
        numerical_gradient(lambda: 0.0, np.zeros((4, 4))[:, ::2])
    ro = np.zeros(3)
    ro.flags.writeable = False
    with pytest.raises(TypeError, match="writeable"):
        numerical_gradient(lambda: 0.0, ro)
