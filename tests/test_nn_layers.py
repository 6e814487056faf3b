"""Layers: against PyTorch (forward, input gradient, every parameter gradient),
against finite differences (gradcheck) in every backend, buffers, init, errors."""

import math

import numpy as np
import pytest
from conftest import tol

import fastnn
from fastnn import nn


def _case_modules(name, dtype):
    """(fastnn module, function building the torch twin, input shape)."""
    tnn = pytest.importorskip("torch").nn
    if name == "linear":
        return nn.Linear(7, 5, dtype=dtype), lambda: tnn.Linear(7, 5), (6, 7)
    if name == "linear_nobias":
        return nn.Linear(7, 5, bias=False, dtype=dtype), lambda: tnn.Linear(7, 5, bias=False), (6, 7)
    if name == "relu":
        return nn.ReLU(), tnn.ReLU, (6, 9)
    if name == "sigmoid":
        return nn.Sigmoid(), tnn.Sigmoid, (6, 9)
    if name == "tanh":
        return nn.Tanh(), tnn.Tanh, (6, 9)
    if name == "leaky_relu":
        return nn.LeakyReLU(0.2), lambda: tnn.LeakyReLU(0.2), (6, 9)
    if name == "softmax":
        return nn.Softmax(dim=-1), lambda: tnn.Softmax(dim=-1), (6, 9)
    if name == "mlp_fused":
        return (
            nn.Sequential(
                nn.Linear(6, 8, dtype=dtype),
                nn.ReLU(),
                nn.Linear(8, 5, dtype=dtype),
                nn.Tanh(),
                nn.Linear(5, 4, dtype=dtype),
                nn.Sigmoid(),
                nn.Linear(4, 3, dtype=dtype),
            ),
            lambda: tnn.Sequential(
                tnn.Linear(6, 8),
                tnn.ReLU(),
                tnn.Linear(8, 5),
                tnn.Tanh(),
                tnn.Linear(5, 4),
                tnn.Sigmoid(),
                tnn.Linear(4, 3),
            ),
            (10, 6),
        )
    if name == "mlp_unfused":
        return (
            nn.Sequential(
                nn.ReLU(),
                nn.Linear(6, 8, dtype=dtype),
                nn.LeakyReLU(0.1),
                nn.Linear(8, 3, bias=False, dtype=dtype),
                nn.Softmax(),
            ),
            lambda: tnn.Sequential(
                tnn.ReLU(), tnn.Linear(6, 8), tnn.LeakyReLU(0.1), tnn.Linear(8, 3, bias=False), tnn.Softmax(dim=-1)
            ),
            (10, 6),
        )
    raise KeyError(name)


CASES = ["linear", "linear_nobias", "relu", "sigmoid", "tanh", "leaky_relu", "softmax", "mlp_fused", "mlp_unfused"]


@pytest.mark.torch
@pytest.mark.parametrize("case", CASES)
def test_layer_matches_torch(backend, dtype, case, rng):
    torch = pytest.importorskip("torch")
    ours, make_torch, in_shape = _case_modules(case, dtype)
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    torch.manual_seed(0)
    theirs = make_torch().to(tdtype)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})

    x = rng.standard_normal(in_shape).astype(dtype)
    y = ours(x).copy()
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    np.testing.assert_allclose(y, yt.detach().numpy(), **tol(dtype, 20))

    g = rng.standard_normal(y.shape).astype(dtype)
    gx = ours.backward(g).copy()
    yt.backward(torch.tensor(g))
    np.testing.assert_allclose(gx, xt.grad.numpy(), **tol(dtype, 50))
    theirs_params = dict(theirs.named_parameters())
    assert [k for k, _ in ours.named_parameters()] == list(theirs_params)
    for name, p in ours.named_parameters():
        assert p.grad.shape == tuple(theirs_params[name].shape)
        np.testing.assert_allclose(p.grad, theirs_params[name].grad.numpy(), **tol(dtype, 50), err_msg=name)


@pytest.mark.parametrize("case", CASES)
def test_layer_gradcheck(backend, case, rng):
    pytest.importorskip("torch")  # only for the case table
    ours, _, in_shape = _case_modules(case, np.float64)
    x = rng.standard_normal(in_shape)
    report = fastnn.gradcheck(ours, x, atol=1e-6, rtol=1e-5)
    assert report.ok
    assert report.results[0]["name"] == "input"
    assert len(report.results) == 1 + len(ours.parameters())
    assert max(r["max_abs_err"] for r in report.results) < 1e-6


@pytest.mark.parametrize(
    "layer",
    [
        lambda: nn.Linear(5, 4),
        lambda: nn.ReLU(),
        lambda: nn.Tanh(),
        lambda: nn.Sigmoid(),
        lambda: nn.LeakyReLU(0.05),
        lambda: nn.Softmax(),
        lambda: nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 2)),
    ],
    ids=["linear", "relu", "tanh", "sigmoid", "leaky_relu", "softmax", "sequential"],
)
def test_gradcheck_every_layer_without_torch(backend, layer, rng):
    """The same check without the torch case table: float32 layers are checked in float64."""
    module = layer()
    report = fastnn.gradcheck(module, rng.standard_normal((4, 5)))
    assert report.ok, str(report)
    for p in module.parameters():  # parameters restored to float32 afterwards
        assert p.data.dtype == np.float32 and p.grad.dtype == np.float32


def test_state_dict_keys_and_shapes_are_torchs():
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    sd = model.state_dict()
    assert list(sd) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert [v.shape for v in sd.values()] == [(128, 64), (128,), (10, 128), (10,)]
    assert all(v.dtype == np.float32 for v in sd.values())


@pytest.mark.torch
def test_load_torch_state_dict_gives_same_model(rng):
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    tm = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    model.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    x = rng.standard_normal((32, 64)).astype(np.float32)
    np.testing.assert_allclose(model(x), tm(torch.tensor(x)).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_default_init_matches_torch_distribution():
    fastnn.manual_seed(0)
    lin = nn.Linear(400, 300)
    bound = 1 / math.sqrt(400)
    w, b = lin.weight.data, lin.bias.data
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    # uniform on [-bound, bound]: std = bound / sqrt(3)
    assert abs(w.std() - bound / math.sqrt(3)) < 0.02 * bound
    assert abs(w.mean()) < 0.01 * bound


@pytest.mark.parametrize(
    "init,std",
    [
        ("he_normal", math.sqrt(2 / 400)),
        ("he", math.sqrt(2 / 400)),
        ("glorot", math.sqrt(2 / 700)),
        ("glorot_normal", math.sqrt(2 / 700)),
    ],
)
def test_he_and_glorot_init(init, std):
    lin = nn.Linear(400, 300, init=init, rng=3)
    assert abs(lin.weight.data.std() - std) < 0.03 * std
    np.testing.assert_array_equal(lin.bias.data, 0)


def test_manual_seed_makes_init_repeatable():
    fastnn.manual_seed(7)
    a = nn.Linear(5, 3).weight.data.copy()
    fastnn.manual_seed(7)
    b = nn.Linear(5, 3).weight.data.copy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, nn.Linear(5, 3).weight.data)


def test_fused_sequential_equals_layer_by_layer(backend, dtype, rng):
    lin1, lin2 = nn.Linear(6, 7, dtype=dtype), nn.Linear(7, 3, dtype=dtype)
    model = nn.Sequential(lin1, nn.Tanh(), lin2)
    x = rng.standard_normal((5, 6)).astype(dtype)
    y = model(x).copy()
    g = rng.standard_normal(y.shape).astype(dtype)
    gx = model.backward(g).copy()
    gw = lin1.weight.grad.copy()
    h = nn.Tanh()
    manual = lin2(h(lin1(x)).copy()).copy()
    np.testing.assert_allclose(y, manual, **tol(dtype, 10))
    gm = lin1.backward(h.backward(lin2.backward(g).copy()).copy())
    np.testing.assert_allclose(gx, gm, **tol(dtype, 10))
    np.testing.assert_allclose(gw, lin1.weight.grad, **tol(dtype, 10))


def test_outputs_are_fresh_and_backward_overwrites(rng):
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    xs = [rng.standard_normal((3, 4)).astype(np.float32) for _ in range(3)]
    outs = [model(x) for x in xs]
    assert len({id(o) for o in outs}) == 3
    for x, o in zip(xs, outs):  # each still holds its own result
        np.testing.assert_allclose(o, model(x), **tol(np.float32))
    model(xs[0])
    g = np.ones((3, 2), np.float32)
    g1 = model.backward(g)
    w_grad = model[0].weight.grad
    first = w_grad.copy()
    g2 = model.backward(g)
    assert g1 is not g2 and model[0].weight.grad is w_grad
    np.testing.assert_array_equal(g1, g2)
    np.testing.assert_array_equal(w_grad, first)  # overwritten with the same values, not doubled
    assert model.backward(g, input_grad=False) is None


def test_backend_switch_between_calls(rng):
    model = nn.Sequential(nn.Linear(4, 8), nn.Sigmoid(), nn.Linear(8, 2))
    x = rng.standard_normal((3, 4)).astype(np.float32)
    with fastnn.use_backend("numpy"):
        a = model(x).copy()
    for name in fastnn.available_backends():
        with fastnn.use_backend(name):
            np.testing.assert_allclose(model(x), a, rtol=1e-5, atol=1e-6)


def test_non_contiguous_and_integer_input(rng):
    lin = nn.Linear(3, 2, dtype=np.float64)
    x = rng.standard_normal((4, 6))
    want = x[:, ::2] @ lin.weight.data.T + lin.bias.data
    np.testing.assert_allclose(lin(x[:, ::2]), want)
    lin.backward(np.ones((4, 2)))  # the non-contiguous input kept for backward still works
    np.testing.assert_allclose(lin.weight.grad, np.ones((2, 4)) @ x[:, ::2])
    xi = np.arange(12).reshape(4, 3)
    # one rule for layers and ops: float input of the model's dtype, no silent casts
    with pytest.raises(TypeError, match=r"x\.astype\(np\.float64\)"):
        lin(xi)
    with pytest.raises(TypeError, match=r"model\.to\(np\.float32\)"):
        lin(xi.astype(np.float32))
    np.testing.assert_allclose(
        lin.to(np.float32)(xi.astype(np.float32)), xi @ lin.weight.data.T + lin.bias.data, rtol=1e-6
    )


def test_layer_errors(rng):
    lin = nn.Linear(3, 2)
    with pytest.raises(RuntimeError, match="before forward"):
        lin.backward(np.ones((1, 2), np.float32))
    with pytest.raises(ValueError, match=r"\(4, 5\)"):
        lin(np.ones((4, 5), np.float32))
    with pytest.raises(TypeError, match="float64"):
        lin(np.ones((4, 3), np.float64))  # no silent cast of float64 data into a float32 layer
    with pytest.raises(ValueError, match="shape"):
        lin(np.ones(3, np.float32))
    lin(np.ones((4, 3), np.float32))
    with pytest.raises(ValueError, match="grad_out"):
        lin.backward(np.ones((4, 3), np.float32))
    with pytest.raises(TypeError):
        nn.Linear(3, 2, dtype=np.int32)
    with pytest.raises(ValueError):
        nn.Linear(0, 2)
    with pytest.raises(ValueError):
        nn.Linear(3, 2, init="nope")
    with pytest.raises(ValueError):
        nn.LeakyReLU(-0.1)
    with pytest.raises(ValueError):
        nn.Softmax(dim=0)
    with pytest.raises(TypeError):
        nn.Sequential(nn.ReLU(), "relu")
    with pytest.raises(RuntimeError, match="before forward"):
        nn.Tanh().backward(np.ones(3))


def test_load_state_dict_checks():
    model = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(KeyError, match="missing"):
        model.load_state_dict({"0.weight": np.zeros((2, 3))})
    with pytest.raises(ValueError, match="shape"):
        model.load_state_dict({"0.weight": np.zeros((3, 2)), "0.bias": np.zeros(2)})
    before = model[0].weight.data
    model.load_state_dict({"0.weight": np.full((2, 3), 0.5), "0.bias": np.zeros(2)})
    assert model[0].weight.data is before  # copied in place
    np.testing.assert_array_equal(before, 0.5)


def test_sequential_container_api():
    a, b, c = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)
    model = nn.Sequential(a, b)
    model.append(c)
    assert len(model) == 3 and model[2] is c and model[-1] is c and list(model) == [a, b, c]
    assert isinstance(model[:2], nn.Sequential) and len(model[:2]) == 2
    x = np.ones((1, 2), np.float32)
    model(x)
    model[2] = nn.Linear(3, 4)  # the plan is rebuilt
    assert model(x).shape == (1, 4)
    assert "Linear(in_features=2, out_features=3, bias=True)" in repr(model)
    model.eval()
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())
    model.zero_grad()
    assert all(np.all(p.grad == 0) for p in model.parameters())


def test_layer_fed_its_own_output(rng):
    """A square layer applied to (a view of) its own output buffer must not compute in place."""
    lin = nn.Linear(4, 4, dtype=np.float64)
    x = rng.standard_normal((3, 4))
    y1 = lin(x)
    want = y1 @ lin.weight.data.T + lin.bias.data
    y2 = lin(y1)
    np.testing.assert_allclose(y2, want, rtol=1e-12)
    y3 = lin(x)[:, :]  # a view of the layer's buffer
    want = y3 @ lin.weight.data.T + lin.bias.data
    np.testing.assert_allclose(lin(y3), want, rtol=1e-12)


def test_workspace_keeps_one_buffer_per_output_whatever_the_batch_sizes(rng):
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2), nn.LeakyReLU())
    with fastnn.workspace(model) as ws:
        for b in range(1, 40):
            model(rng.standard_normal((b, 3)).astype(np.float32))
            model.backward(np.ones((b, 2), np.float32))
        # y and dL/dx of the fused Linear+Tanh, the Linear, the LeakyReLU
        assert len(ws._buffers) <= 6
        assert ws.nbytes <= 6 * 39 * 4 * 4
