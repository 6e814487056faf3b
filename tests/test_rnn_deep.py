"""Deep and bidirectional RNN, LSTM and GRU layers against PyTorch (names, shapes, values, gradients)."""

import numpy as np
import pytest

import fastnn
from fastnn import nn

F32 = dict(rtol=2e-4, atol=2e-5)
F64 = dict(rtol=1e-9, atol=1e-11)

CASES = [("rnn", 2, False), ("lstm", 2, False), ("gru", 1, True), ("lstm", 2, True), ("gru", 3, True), ("rnn", 2, True)]


def _make(cell, I, H, dtype, **kw):
    cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell]
    return cls(I, H, dtype=dtype, return_state=True, **kw)


@pytest.mark.parametrize("cell,layers,bidir", CASES)
@pytest.mark.parametrize("batch_first", [False, True])
def test_deep_recurrent_matches_torch(backend, dtype, cell, layers, bidir, batch_first, rng):
    torch = pytest.importorskip("torch", reason="torch is needed for the cross-checks")
    tdt = torch.float32 if dtype == np.float32 else torch.float64
    tcls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    T, B, I, H = 5, 3, 4, 6
    D = 2 if bidir else 1
    tlayer = tcls(I, H, num_layers=layers, bidirectional=bidir, batch_first=batch_first).to(tdt)
    layer = _make(cell, I, H, dtype, num_layers=layers, bidirectional=bidir, batch_first=batch_first)
    assert [(k, v.shape) for k, v in layer.state_dict().items()] == [
        (k, tuple(v.shape)) for k, v in tlayer.state_dict().items()
    ]
    layer.load_state_dict({k: v.detach().numpy() for k, v in tlayer.state_dict().items()})
    t = F32 if dtype == np.float32 else F64
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I)).astype(dtype)
    h0 = rng.standard_normal((layers * D, B, H)).astype(dtype)
    c0 = rng.standard_normal((layers * D, B, H)).astype(dtype)
    tx = torch.tensor(x, requires_grad=True)
    th0 = torch.tensor(h0, requires_grad=True)
    tc0 = torch.tensor(c0, requires_grad=True)
    if cell == "lstm":
        ty, (thn, tcn) = tlayer(tx, (th0, tc0))
        y, (hn, cn) = layer(x, (h0, c0))
        np.testing.assert_allclose(cn, tcn.detach().numpy(), **t)
    else:
        ty, thn = tlayer(tx, th0)
        y, hn = layer(x, h0)
    np.testing.assert_allclose(y, ty.detach().numpy(), **t)
    np.testing.assert_allclose(hn, thn.detach().numpy(), **t)
    g = rng.standard_normal(y.shape).astype(dtype)
    ghn = rng.standard_normal(hn.shape).astype(dtype)
    loss = (ty * torch.tensor(g)).sum() + (thn * torch.tensor(ghn)).sum()
    if cell == "lstm":
        gcn = rng.standard_normal(hn.shape).astype(dtype)
        loss = loss + (tcn * torch.tensor(gcn)).sum()
        gx = layer.backward(g, grad_state=(ghn, gcn))
    else:
        gx = layer.backward(g, grad_state=ghn)
    loss.backward()
    if cell == "lstm":
        np.testing.assert_allclose(layer.grad_c0, tc0.grad.numpy(), **t)
    np.testing.assert_allclose(gx, tx.grad.numpy(), **t)
    np.testing.assert_allclose(layer.grad_h0, th0.grad.numpy(), **t)
    tparams = dict(tlayer.named_parameters())
    for name, p in layer.named_parameters():
        np.testing.assert_allclose(p.grad, tparams[name].grad.numpy(), err_msg=name, **t)


def test_deep_defaults_zero_states_and_shapes(rng):
    layer = nn.LSTM(3, 5, num_layers=3, bidirectional=True, return_state=True)
    y, (hn, cn) = layer(rng.standard_normal((7, 2, 3)).astype(np.float32))
    assert y.shape == (7, 2, 10) and hn.shape == (6, 2, 5) and cn.shape == (6, 2, 5)
    assert layer.weight_ih_l1.shape == (20, 10) and layer.weight_hh_l2_reverse.shape == (20, 5)
    gx = layer.backward(np.ones_like(y))
    assert gx.shape == (7, 2, 3) and layer.grad_h0.shape == (6, 2, 5)
    with pytest.raises(ValueError, match="shape"):
        layer(np.zeros((7, 2, 3), np.float32), (np.zeros((2, 2, 5), np.float32), None))


def test_inter_layer_dropout_train_and_eval(rng):
    x = rng.standard_normal((6, 4, 3))
    a = nn.GRU(3, 8, num_layers=2, dropout=0.5, dtype=np.float64)
    b = nn.GRU(3, 8, num_layers=2, dtype=np.float64)
    b.load_state_dict(a.state_dict())
    fastnn.manual_seed(3)
    ya = a(x)
    assert not np.allclose(ya, b(x))  # training: the layer-0 outputs were dropped and scaled
    fastnn.manual_seed(3)
    np.testing.assert_array_equal(ya, a(x))
    a.eval()
    np.testing.assert_allclose(a(x), b(x), rtol=1e-14)
    with pytest.warns(UserWarning, match="num_layers=1"):
        nn.LSTM(3, 4, dropout=0.2)


def test_deep_recurrent_gradcheck(rng):
    layer = nn.LSTM(2, 3, num_layers=2, bidirectional=True, dropout=0.0, dtype=np.float64)
    fastnn.gradcheck(layer, rng.standard_normal((4, 2, 2)))


def test_deep_recurrent_save_load(tmp_path, rng):
    model = nn.Sequential(
        nn.GRU(3, 4, num_layers=2, bidirectional=True, dropout=0.1), nn.LastTimeStep(), nn.Linear(8, 2)
    )
    fastnn.save(model, tmp_path / "m.fnn")
    loaded = fastnn.load(tmp_path / "m.fnn")
    assert repr(loaded) == repr(model)
    model.eval()
    loaded.eval()
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    np.testing.assert_array_equal(model(x), loaded(x))
    assert "num_layers" not in nn.GRU(3, 4).get_config()  # single-layer configs unchanged
