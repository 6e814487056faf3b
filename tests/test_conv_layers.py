"""Conv2d, MaxPool2d, AvgPool2d and Flatten layers: against PyTorch, finite differences, errors."""

import numpy as np
import pytest
from conftest import tol

import fastnn
from fastnn import nn, ops

CONV_CONFIGS = [
    dict(in_channels=1, out_channels=8, kernel_size=3, padding=1),
    dict(in_channels=3, out_channels=5, kernel_size=(3, 2), stride=2, padding=(1, 0)),
    dict(in_channels=4, out_channels=6, kernel_size=3, stride=(1, 2), dilation=2, bias=False),
]


def _layer_grads(layer, x, g):
    y = layer(x).copy()
    gx = layer.backward(g)
    return y, (None if gx is None else gx.copy()), {k: p.grad.copy() for k, p in layer.named_parameters()}


@pytest.mark.parametrize("config", CONV_CONFIGS, ids=lambda c: str(sorted(c.items())))
def test_conv2d_layer_matches_torch(backend, dtype, config, rng):
    torch = pytest.importorskip("torch")
    tdt = torch.float32 if dtype == np.float32 else torch.float64
    tconv = torch.nn.Conv2d(**config).to(tdt)
    conv = nn.Conv2d(**config, dtype=dtype)
    assert list(conv.state_dict()) == list(tconv.state_dict())
    conv.load_state_dict({k: v.detach().numpy() for k, v in tconv.state_dict().items()})
    x = rng.standard_normal((3, config["in_channels"], 11, 9)).astype(dtype)
    tx = torch.tensor(x, requires_grad=True)
    ty = tconv(tx)
    g = rng.standard_normal(tuple(ty.shape)).astype(dtype)
    ty.backward(torch.tensor(g))
    for _ in range(2):  # the second call runs the cached fast path
        y, gx, grads = _layer_grads(conv, x, g)
        np.testing.assert_allclose(y, ty.detach().numpy(), **tol(dtype, 200))
        np.testing.assert_allclose(gx, tx.grad.numpy(), **tol(dtype, 200))
        for name, p in tconv.named_parameters():
            np.testing.assert_allclose(grads[name], p.grad.numpy(), err_msg=name, **tol(dtype, 500))


@pytest.mark.parametrize("kind", ["max", "avg", "avg_nopad"])
@pytest.mark.parametrize("k,s,p", [(2, None, 0), (3, 2, 1), ((3, 2), (1, 2), (1, 0))])
def test_pool_layers_match_torch(backend, dtype, kind, k, s, p, rng):
    torch = pytest.importorskip("torch")
    if kind == "max":
        layer, tlayer = nn.MaxPool2d(k, s, p), torch.nn.MaxPool2d(k, s, p)
    else:
        cip = kind == "avg"
        layer = nn.AvgPool2d(k, s, p, count_include_pad=cip)
        tlayer = torch.nn.AvgPool2d(k, s, p, count_include_pad=cip)
    x = rng.standard_normal((2, 3, 9, 8)).astype(dtype)
    tx = torch.tensor(x, requires_grad=True)
    ty = tlayer(tx)
    g = rng.standard_normal(tuple(ty.shape)).astype(dtype)
    ty.backward(torch.tensor(g))
    for _ in range(2):
        y = layer(x)
        np.testing.assert_allclose(y, ty.detach().numpy(), **tol(dtype, 4))
        np.testing.assert_allclose(layer.backward(g), tx.grad.numpy(), **tol(dtype, 4))


@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1),
        lambda: nn.Conv2d(2, 2, (2, 3), dilation=(2, 1), bias=False),
        lambda: nn.MaxPool2d(3, 2, 1),
        lambda: nn.AvgPool2d(2, 1),
        lambda: nn.AvgPool2d(3, 2, 1, count_include_pad=False),
    ],
    ids=["conv", "conv_dilated", "maxpool", "avgpool", "avgpool_nopad"],
)
def test_layer_gradcheck(backend, make, rng):
    layer = make()
    if isinstance(layer, nn.Conv2d):
        layer = type(layer)(**{**layer.get_config(), "dtype": np.float64}, rng=0)
    x = rng.standard_normal((2, 2, 7, 6))
    fastnn.gradcheck(layer, x, atol=1e-7, rtol=1e-6)


def test_conv2d_default_init_and_config():
    conv = nn.Conv2d(4, 6, 3, rng=0)
    bound = 1 / np.sqrt(4 * 9)
    assert conv.weight.shape == (6, 4, 3, 3) and conv.bias.shape == (6,)
    assert conv.weight.dtype == np.float32
    assert np.abs(conv.weight.data).max() <= bound and np.abs(conv.weight.data).max() > 0.8 * bound
    assert np.abs(conv.bias.data).max() <= bound
    assert abs(conv.weight.data.std() - bound / np.sqrt(3)) < 0.25 * bound
    config = conv.get_config()
    clone = nn.Conv2d(**config)
    assert clone.get_config() == config and clone.weight.shape == conv.weight.shape
    assert "kernel_size=3" in repr(conv)
    for layer in (nn.MaxPool2d(2), nn.AvgPool2d(3, 1, 1, count_include_pad=False), nn.Flatten(1, 2)):
        clone = type(layer)(**layer.get_config())
        assert clone.get_config() == layer.get_config()
    assert nn.MaxPool2d(2).stride == (2, 2)


def test_flatten_is_a_view():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    f = nn.Flatten()
    y = f(x)
    assert y.shape == (2, 60) and np.shares_memory(x, y)
    np.testing.assert_array_equal(y[1], x[1].ravel())
    g = f.backward(y * 2)
    assert g.shape == x.shape
    np.testing.assert_array_equal(g, x * 2)
    assert nn.Flatten(0)(x).shape == (120,)
    assert nn.Flatten(1, 2)(x).shape == (2, 12, 5)
    with pytest.raises(ValueError, match="shape"):
        nn.Flatten(2, 1)(x)


def test_layer_errors(backend):
    conv = nn.Conv2d(3, 4, 5)
    with pytest.raises(ValueError, match=r"channels.*\(2, 2, 8, 8\)"):
        conv(np.ones((2, 2, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"4-D.*\(3, 8, 8\)"):
        conv(np.ones((3, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"\(2, 3, 4, 8\).*smaller than the kernel"):
        conv(np.ones((2, 3, 4, 8), np.float32))
    with pytest.raises(ValueError, match="stride"):
        nn.Conv2d(3, 4, 3, stride=0)
    with pytest.raises(ValueError, match="stride"):
        nn.MaxPool2d(2, stride=0)
    with pytest.raises(ValueError, match="kernel_size"):
        nn.AvgPool2d(0)
    with pytest.raises(ValueError, match="out_channels"):
        nn.Conv2d(3, 0, 3)
    with pytest.raises(ValueError, match=r"\(1, 1, 2, 2\).*smaller than the kernel size"):
        nn.MaxPool2d(3)(np.ones((1, 1, 2, 2), np.float32))
    with pytest.raises(ValueError, match="4-D"):
        nn.AvgPool2d(2)(np.ones((4, 4), np.float32))
    with pytest.raises(TypeError):
        conv(np.ones((2, 3, 8, 8), np.float64))  # float32 layer, float64 input
    with pytest.raises(RuntimeError, match="before forward"):
        nn.Conv2d(1, 1, 1).backward(np.ones((1, 1, 1, 1), np.float32))


def test_layer_outputs_are_fresh_and_results_stay_right(backend, rng):
    conv = nn.Conv2d(2, 3, 3, padding=1, rng=1)
    pool = nn.MaxPool2d(2)
    xs = [rng.standard_normal((4, 2, 8, 8)).astype(np.float32) for _ in range(3)]
    outs = [pool(conv(x)) for x in xs]
    assert len({id(o) for o in outs}) == 3
    for x, y in zip(xs, outs):  # earlier results are not overwritten by later calls
        want, _ = ops.max_pool2d_forward(ops.conv2d_forward(x, conv.weight.data, conv.bias.data, 1, 1), 2)
        np.testing.assert_allclose(y, want, **tol(np.float32, 20))
    conv.backward(pool.backward(np.ones_like(outs[0])), input_grad=False)
    g1 = conv.weight.grad.copy()
    assert conv.backward(pool.backward(np.ones_like(outs[0])), input_grad=False) is None
    np.testing.assert_allclose(conv.weight.grad, g1, **tol(np.float32))  # overwritten, not accumulated
    with fastnn.workspace(conv):
        a = conv(xs[0])
        assert conv(xs[1]) is a  # inside a workspace: one buffer, overwritten
    # integer images are not cast silently: the message says how to convert
    with pytest.raises(TypeError, match=r"astype\(np\.float32\)"):
        conv(np.ones((1, 2, 8, 8), dtype=np.uint8))


def test_small_cnn_trains(backend, rng):
    """A tiny CNN (layers chained by hand) fits a learnable rule on random images."""
    x = rng.standard_normal((64, 1, 8, 8)).astype(np.float32)
    labels = (x[:, 0, :4].sum(axis=(1, 2)) > x[:, 0, 4:].sum(axis=(1, 2))).astype(np.int64)
    conv, pool, flat = nn.Conv2d(1, 4, 3, padding=1, rng=0), nn.MaxPool2d(2), nn.Flatten()
    w = (rng.standard_normal((2, 64)) * 0.1).astype(np.float32)
    b = np.zeros(2, np.float32)
    losses = []
    for _ in range(60):
        h = flat(pool(np.maximum(conv(x), 0)).copy())
        logits = h @ w.T + b
        z = logits - logits.max(1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        losses.append(-np.log(p[np.arange(64), labels]).mean())
        d = p.copy()
        d[np.arange(64), labels] -= 1
        d /= 64
        gh = d @ w
        w -= 0.5 * d.T @ h
        b -= 0.5 * d.sum(0)
        conv_y = conv(x)
        gy = pool.backward(flat.backward(gh)) * (conv_y > 0)
        conv.backward(gy.astype(np.float32), input_grad=False)
        conv.weight.data -= 0.5 * conv.weight.grad
        conv.bias.data -= 0.5 * conv.bias.grad
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1, dtype=np.float64, rng=0),
        lambda: nn.Conv2d(2, 2, (2, 3), dilation=(2, 1), bias=False, dtype=np.float64, rng=0),
        lambda: nn.MaxPool2d(3, 2, 1),
        lambda: nn.AvgPool2d(2, 1),
        lambda: nn.Flatten(),
    ],
    ids=["conv", "conv_dilated", "maxpool", "avgpool", "flatten"],
)
def test_fastnn_gradcheck(backend, make, rng):
    report = fastnn.gradcheck(make(), rng.standard_normal((2, 2, 7, 6)))
    assert report.ok


def _cnn(dtype=np.float32, layers=nn):
    """The test CNN from ``layers``: ``fastnn.nn`` (in ``dtype``) or ``torch.nn`` (same names and arguments)."""
    kw = dict(dtype=dtype) if layers is nn else {}
    return layers.Sequential(
        layers.Conv2d(1, 4, 3, padding=1, **kw),
        layers.ReLU(),
        layers.MaxPool2d(2),
        layers.Conv2d(4, 8, 3, padding=1, **kw),
        layers.ReLU(),
        layers.AvgPool2d(2),
        layers.Flatten(),
        layers.Linear(8 * 2 * 2, 3, **kw),
    )


def test_sequential_cnn_gradcheck(backend, rng):
    fastnn.manual_seed(0)
    model = _cnn(np.float64)
    report = fastnn.gradcheck(model, rng.standard_normal((2, 1, 8, 8)))
    assert report.ok


def test_sequential_cnn_fit_save_load(backend, tmp_path, rng):
    fastnn.manual_seed(0)
    x = rng.standard_normal((96, 1, 8, 8)).astype(np.float32)
    y = np.argmax([x[:, 0, :3].mean((1, 2)), x[:, 0, 3:5].mean((1, 2)), x[:, 0, 5:].mean((1, 2))], axis=0)
    model = _cnn()
    hist = fastnn.fit(
        model,
        x,
        y,
        loss=nn.CrossEntropyLoss(),
        optimizer=fastnn.optim.Adam(model.parameters(), lr=1e-2),
        epochs=15,
        batch_size=32,
        progress=False,
        seed=0,
    )
    assert hist["loss"][-1] < 0.6 * hist["loss"][0]
    path = tmp_path / "cnn.npz"
    fastnn.save(model, path)
    clone = fastnn.load(path)
    assert [type(m) for m in clone.children()] == [type(m) for m in model.children()]
    assert repr(clone) == repr(model)
    np.testing.assert_array_equal(clone(x).copy(), model(x).copy())


def test_sequential_cnn_matches_torch(backend, rng):
    torch = pytest.importorskip("torch")
    fastnn.manual_seed(0)
    model = _cnn(np.float64)
    tmodel = _cnn(layers=torch.nn).double()
    assert list(model.state_dict()) == list(tmodel.state_dict())
    model.load_state_dict({k: v.detach().numpy() for k, v in tmodel.state_dict().items()})
    x = rng.standard_normal((5, 1, 8, 8))
    tx = torch.tensor(x, requires_grad=True)
    ty = tmodel(tx)
    g = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(model(x), ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(model.backward(g), tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    for name, p in tmodel.named_parameters():
        np.testing.assert_allclose(
            dict(model.named_parameters())[name].grad, p.grad.numpy(), rtol=1e-9, atol=1e-11, err_msg=name
        )


def test_digits_cnn_demo_is_discovered():
    from fastnn.cli import _demo_modules

    mods = _demo_modules()
    assert "digits-cnn" in mods
    assert mods["digits-cnn"].build_model(4)[0].out_channels == 4


@pytest.mark.slow
def test_digits_cnn_demo_reaches_98_percent():
    pytest.importorskip("sklearn")
    from fastnn.demos import digits_cnn

    _, _, accuracy, _ = digits_cnn.train(seed=0)
    assert accuracy >= 0.98
