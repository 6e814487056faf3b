"""Recurrent layers: against PyTorch with the same weights, finite differences,
state handling, configuration and errors."""

import numpy as np
import pytest

import fastnn
from fastnn import nn
from fastnn.gradcheck import numerical_gradient

LAYERS = {
    "rnn_tanh": lambda I, H, **kw: nn.RNN(I, H, **kw),
    "rnn_relu": lambda I, H, **kw: nn.RNN(I, H, nonlinearity="relu", **kw),
    "lstm": lambda I, H, **kw: nn.LSTM(I, H, **kw),
    "gru": lambda I, H, **kw: nn.GRU(I, H, **kw),
}


def _torch_layer(torch, kind, I, H, bias, batch_first):
    cls = {"rnn_tanh": torch.nn.RNN, "rnn_relu": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind]
    kw = dict(bias=bias, batch_first=batch_first)
    if kind == "rnn_relu":
        kw["nonlinearity"] = "relu"
    return cls(I, H, **kw).double()


@pytest.mark.torch
@pytest.mark.parametrize("kind", list(LAYERS))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["TBI", "BTI"])
def test_layer_matches_torch(backend, dtype, rng, kind, bias, batch_first):
    torch = pytest.importorskip("torch")
    T, B, I, H = 7, 3, 4, 16
    tl = _torch_layer(torch, kind, I, H, bias, batch_first)
    layer = LAYERS[kind](I, H, bias=bias, batch_first=batch_first, dtype=dtype)
    layer.load_state_dict({k: v.detach().numpy() for k, v in tl.state_dict().items()})
    assert list(layer.state_dict()) == list(tl.state_dict())

    shape = (B, T, I) if batch_first else (T, B, I)
    x = rng.standard_normal(shape)
    h0 = rng.standard_normal((1, B, H)) * 0.5
    c0 = rng.standard_normal((1, B, H)) * 0.5
    gy = rng.standard_normal((B, T, H) if batch_first else (T, B, H))
    ghn = rng.standard_normal((1, B, H))
    gcn = rng.standard_normal((1, B, H))

    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0, requires_grad=True)
    c0t = torch.tensor(c0, requires_grad=True)
    if kind == "lstm":
        yt, (hnt, cnt) = tl(xt, (h0t, c0t))
        loss = (yt * torch.tensor(gy)).sum() + (hnt * torch.tensor(ghn)).sum() + (cnt * torch.tensor(gcn)).sum()
        y = layer(x.astype(dtype), (h0.astype(dtype), c0.astype(dtype)))
        gx = layer.backward(gy.astype(dtype), grad_state=(ghn.astype(dtype), gcn.astype(dtype)))
    else:
        yt, hnt = tl(xt, h0t)
        loss = (yt * torch.tensor(gy)).sum() + (hnt * torch.tensor(ghn)).sum()
        y = layer(x.astype(dtype), h0.astype(dtype))
        gx = layer.backward(gy.astype(dtype), grad_state=ghn.astype(dtype))
    loss.backward()

    t = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(y, yt.detach().numpy(), **t)
    np.testing.assert_allclose(layer.h_n, hnt.detach().numpy(), **t)
    assert layer.h_n.shape == (1, B, H)
    np.testing.assert_allclose(gx, xt.grad.numpy(), **t)
    np.testing.assert_allclose(layer.grad_h0, h0t.grad.numpy(), **t)
    if kind == "lstm":
        np.testing.assert_allclose(layer.c_n, cnt.detach().numpy(), **t)
        np.testing.assert_allclose(layer.grad_c0, c0t.grad.numpy(), **t)
    params = dict(layer.named_parameters())
    assert len(params) == (4 if bias else 2)
    for name, p in tl.named_parameters():
        assert params[name].grad.dtype == dtype
        np.testing.assert_allclose(params[name].grad, p.grad.numpy(), **t, err_msg=name)


@pytest.mark.parametrize("kind", list(LAYERS))
def test_layer_gradcheck(backend, rng, kind):
    """Finite differences of a whole layer (float64): input, initial state, every parameter."""
    T, B, I, H = 5, 2, 3, 4
    layer = LAYERS[kind](I, H, dtype=np.float64)
    x = rng.standard_normal((T, B, I))
    if kind == "rnn_relu":
        x += 0.5
    h0 = rng.standard_normal((B, H)) * 0.3
    G = rng.standard_normal((T, B, H))
    G_state = rng.standard_normal((B, H))
    hx = (h0, h0 * 0.5) if kind == "lstm" else h0

    def loss():
        y = layer(x, hx)
        return float(np.sum(y * G) + np.sum(layer.h_n[0] * G_state))

    loss()
    grad_state = (G_state, None) if kind == "lstm" else G_state
    gx = layer.backward(G, grad_state=grad_state).copy()
    grads = {n: p.grad.copy() for n, p in layer.named_parameters()}
    grad_h0 = layer.grad_h0[0].copy()
    np.testing.assert_allclose(gx, numerical_gradient(loss, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(grad_h0, numerical_gradient(loss, h0), rtol=1e-6, atol=1e-8)
    for name, p in layer.named_parameters():
        np.testing.assert_allclose(grads[name], numerical_gradient(loss, p.data), rtol=1e-6, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("kind", list(LAYERS))
def test_fastnn_gradcheck(kind, rng):
    if not hasattr(fastnn, "gradcheck"):
        pytest.skip("fastnn.gradcheck is not available in this build")
    layer = LAYERS[kind](3, 4, dtype=np.float64)
    assert fastnn.gradcheck(layer, rng.standard_normal((4, 2, 3)))


def test_parameters_and_default_initialisation():
    fastnn.manual_seed(0)
    for kind, G in (("rnn_tanh", 1), ("lstm", 4), ("gru", 3)):
        layer = LAYERS[kind](5, 25)
        shapes = {n: p.shape for n, p in layer.named_parameters()}
        assert shapes == {
            "weight_ih_l0": (25 * G, 5),
            "weight_hh_l0": (25 * G, 25),
            "bias_ih_l0": (25 * G,),
            "bias_hh_l0": (25 * G,),
        }
        for p in layer.parameters():
            assert p.dtype == np.float32
            assert np.abs(p.data).max() <= 1 / 5 and np.abs(p.data).max() > 0.15  # U(-1/sqrt(H), 1/sqrt(H))
            assert np.unique(p.data).size > p.data.size // 2
    assert [n for n, _ in nn.GRU(2, 3, bias=False).named_parameters()] == ["weight_ih_l0", "weight_hh_l0"]


def test_zero_initial_state_equals_default(backend, rng):
    layer = nn.GRU(3, 8)
    x = rng.standard_normal((4, 2, 3)).astype(np.float32)
    y1 = layer(x).copy()
    y2 = layer(x, np.zeros((1, 2, 8), np.float32))
    np.testing.assert_array_equal(y1, y2)


def test_return_state_and_fresh_outputs(rng):
    x = rng.standard_normal((4, 2, 3)).astype(np.float32)
    layer = nn.LSTM(3, 6, return_state=True)
    y, (h_n, c_n) = layer(x)
    assert y.shape == (4, 2, 6) and h_n.shape == (1, 2, 6) and c_n.shape == (1, 2, 6)
    np.testing.assert_array_equal(h_n[0], y[-1])
    rnn = nn.RNN(3, 6, return_state=True)
    y, h_n = rnn(x)
    np.testing.assert_array_equal(h_n[0], y[-1])
    plain = nn.RNN(3, 6, return_state=True)
    a, ha = plain(x)
    ha_copy = ha.copy()
    b, hb = plain(x * 2)
    assert a is not b and ha is not hb  # every call returns new arrays
    np.testing.assert_array_equal(ha, ha_copy)  # h_n of an earlier call does not change
    with fastnn.workspace():
        c, _ = plain(x)
        assert plain(x * 2)[0] is c  # inside a workspace: reused


def test_gradient_through_final_state_only(backend, rng):
    """A many-to-one loss on h_n alone: backward(None, grad_state=...) equals backward of grad on out[-1]."""
    layer = nn.RNN(3, 5, dtype=np.float64)
    x = rng.standard_normal((6, 2, 3))
    g = rng.standard_normal((2, 5))
    layer(x)
    gx1 = layer.backward(None, grad_state=g).copy()
    gw1 = layer.weight_hh_l0.grad.copy()
    full = np.zeros((6, 2, 5))
    full[-1] = g
    gx2 = layer.backward(full)
    np.testing.assert_allclose(gx1, gx2, rtol=1e-12)
    np.testing.assert_allclose(gw1, layer.weight_hh_l0.grad, rtol=1e-12)
    assert np.abs(gx1[0]).max() > 0  # the gradient reached the first step


def test_last_time_step(rng):
    x = rng.standard_normal((5, 3, 4)).astype(np.float32)
    pick = nn.LastTimeStep()
    np.testing.assert_array_equal(pick(x), x[-1])
    g = rng.standard_normal((3, 4)).astype(np.float32)
    gx = pick.backward(g)
    assert gx.shape == x.shape
    np.testing.assert_array_equal(gx[-1], g)
    assert not gx[:-1].any()
    pick_bf = nn.LastTimeStep(batch_first=True)
    np.testing.assert_array_equal(pick_bf(x), x[:, -1])
    np.testing.assert_array_equal(pick_bf.backward(np.ones((5, 4), np.float32))[:, -1], 1)
    with pytest.raises(ValueError, match=r"3-D.*\(5, 3\)"):
        pick(x[:, :, 0])
    assert pick.get_config() == {"batch_first": False}


def test_rnn_in_sequential_with_linear(backend, rng):
    if not hasattr(nn, "Sequential") or not hasattr(nn, "Linear"):
        pytest.skip("nn.Sequential / nn.Linear are not available in this build")
    model = nn.Sequential(nn.RNN(3, 8, dtype=np.float64), nn.LastTimeStep(), nn.Linear(8, 2, dtype=np.float64))
    x = rng.standard_normal((5, 4, 3))
    y = model(x)
    assert y.shape == (4, 2)
    G = rng.standard_normal((4, 2))
    model.backward(G)
    w = model.parameters()[1].data  # weight_hh_l0 of the RNN
    num = numerical_gradient(lambda: float(np.sum(model(x) * G)), w)
    np.testing.assert_allclose(model.parameters()[1].grad, num, rtol=1e-6, atol=1e-8)


def test_get_config_rebuilds_the_layer():
    for layer in (
        nn.RNN(3, 5, nonlinearity="relu", bias=False, batch_first=True, dtype=np.float64),
        nn.LSTM(2, 4, return_state=True),
        nn.GRU(6, 7, batch_first=True),
    ):
        cfg = layer.get_config()
        clone = type(layer)(**cfg)
        assert clone.get_config() == cfg
        assert {n: p.shape for n, p in clone.named_parameters()} == {n: p.shape for n, p in layer.named_parameters()}
        assert clone.weight_ih_l0.dtype == layer.weight_ih_l0.dtype
    assert "nonlinearity='relu'" in repr(nn.RNN(3, 5, nonlinearity="relu"))
    assert repr(nn.LSTM(3, 5, batch_first=True)) == "LSTM(3, 5, batch_first=True)"


# -- errors --------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(LAYERS))
def test_layer_errors_name_the_shapes(kind):
    layer = LAYERS[kind](4, 6)
    with pytest.raises(ValueError, match=r"3-D.*\(5, 4\)"):
        layer(np.zeros((5, 4), np.float32))
    with pytest.raises(ValueError, match=r"3 features.*\(5, 2, 3\).*input_size=4"):
        layer(np.zeros((5, 2, 3), np.float32))
    bad_state = np.zeros((1, 3, 6), np.float32)
    with pytest.raises(ValueError, match=r"shape \(1, 2, 6\).*got shape \(1, 3, 6\)"):
        layer(np.zeros((5, 2, 4), np.float32), (bad_state, bad_state) if kind == "lstm" else bad_state)
    layer(np.zeros((5, 2, 4), np.float32))
    with pytest.raises(ValueError, match=r"grad_output has shape \(5, 2, 5\)"):
        layer.backward(np.zeros((5, 2, 5), np.float32))


def test_constructor_errors():
    with pytest.raises(ValueError, match="hidden_size"):
        nn.RNN(3, 0)
    with pytest.raises(ValueError, match="nonlinearity"):
        nn.RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(TypeError, match="dtype"):
        nn.GRU(3, 4, dtype=np.int32)
    with pytest.raises(RuntimeError, match="before forward"):
        nn.LSTM(3, 4).backward(np.zeros((1, 1, 4), np.float32))


def test_fastnn_gradcheck_on_float32_layer(rng):
    """gradcheck swaps float64 copies into a float32 layer: the layer must follow the parameter dtype."""
    if not hasattr(fastnn, "gradcheck"):
        pytest.skip("fastnn.gradcheck is not available in this build")
    layer = nn.LSTM(3, 4, batch_first=True)
    assert fastnn.gradcheck(layer, rng.standard_normal((2, 5, 3)))
    assert layer.weight_ih_l0.dtype == np.float32
    y = layer(rng.standard_normal((2, 5, 3)).astype(np.float32))
    assert y.dtype == np.float32


@pytest.mark.parametrize("kind", list(LAYERS))
def test_save_load_roundtrip(tmp_path, rng, kind):
    if not hasattr(fastnn, "save") or not hasattr(nn, "Sequential"):
        pytest.skip("fastnn.save / nn.Sequential are not available in this build")
    model = nn.Sequential(LAYERS[kind](3, 6, batch_first=True), nn.LastTimeStep(batch_first=True), nn.Linear(6, 2))
    x = rng.standard_normal((4, 5, 3)).astype(np.float32)
    y = model(x).copy()
    path = tmp_path / "model.npz"
    fastnn.save(model, path)
    loaded = fastnn.load(path)
    assert repr(loaded) == repr(model)
    np.testing.assert_array_equal(loaded(x), y)
    for (n1, p1), (n2, p2) in zip(model.named_parameters(), loaded.named_parameters()):
        assert n1 == n2
        np.testing.assert_array_equal(p1.data, p2.data)


def test_fit_many_to_one(rng):
    """An RNN trained by fastnn.fit through Sequential learns the sign of a sequence sum."""
    if not hasattr(fastnn, "fit") or not hasattr(nn, "Sequential"):
        pytest.skip("fastnn.fit / nn.Sequential are not available in this build")
    from fastnn import optim

    X = rng.standard_normal((512, 10, 2)).astype(np.float32)
    y = (X.sum(axis=(1, 2)) > 0).astype(np.int64)
    model = nn.Sequential(
        nn.GRU(2, 16, batch_first=True, rng=0), nn.LastTimeStep(batch_first=True), nn.Linear(16, 2, rng=0)
    )
    loss = nn.CrossEntropyLoss()
    fastnn.fit(
        model,
        X,
        y,
        loss=loss,
        optimizer=optim.Adam(model.parameters(), lr=0.01),
        epochs=15,
        batch_size=32,
        progress=False,
    )
    pred = model(X).argmax(axis=1)
    assert (pred == y).mean() > 0.9


@pytest.mark.parametrize("kind", list(LAYERS))
@pytest.mark.parametrize("batch_first", [False, True], ids=["TBI", "BTI"])
def test_backward_without_input_grad(backend, dtype, rng, kind, batch_first):
    """input_grad=False returns None and leaves every parameter gradient as with dL/dx."""
    T, B, I, H = 4, 5, 3, 6
    layer = LAYERS[kind](I, H, dtype=dtype, batch_first=batch_first)
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I)).astype(dtype)
    out = layer(x)
    g = rng.standard_normal(out.shape).astype(dtype)
    gx = layer.backward(g)
    assert gx is not None and gx.shape == x.shape
    want = [p.grad.copy() for p in layer.parameters()]
    want_h0 = layer.grad_h0.copy()
    for p in layer.parameters():
        p.grad.fill(np.nan)
    layer(x)
    assert layer.backward(g, input_grad=False) is None
    for p, w in zip(layer.parameters(), want):
        np.testing.assert_array_equal(p.grad, w)
    np.testing.assert_array_equal(layer.grad_h0, want_h0)


@pytest.mark.parametrize("first", ["rnn", "conv"])
def test_sequential_skips_first_layer_input_grad(backend, rng, first):
    """Sequential.backward(input_grad=False) reaches a recurrent or conv first layer; grads unchanged."""
    if first == "rnn":
        model = nn.Sequential(nn.GRU(3, 8, dtype=np.float64), nn.LastTimeStep(), nn.Linear(8, 2, dtype=np.float64))
        x = rng.standard_normal((5, 4, 3))
    else:
        model = nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1, dtype=np.float64), nn.Flatten(), nn.Linear(3 * 5 * 5, 2, dtype=np.float64)
        )
        x = rng.standard_normal((4, 2, 5, 5))
    G = rng.standard_normal((4, 2))
    model(x)
    gx = model.backward(G)
    assert gx.shape == x.shape
    want = [p.grad.copy() for p in model.parameters()]
    model(x)
    assert model.backward(G, input_grad=False) is None
    for p, w in zip(model.parameters(), want):
        np.testing.assert_array_equal(p.grad, w)
