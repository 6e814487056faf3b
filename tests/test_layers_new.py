"""Dropout, batch and layer norm, Embedding, Conv1d, 1-d and adaptive pools: PyTorch agreement and semantics.

Each layer takes a PyTorch layer's weights through ``load_state_dict`` and
must then give PyTorch's output, input gradient, parameter gradients and (for
the batch norms) running statistics after several training steps, in both
dtypes and every backend.
"""

import numpy as np
import pytest
from conftest import tol

import fastnn
from fastnn import nn

# float32: the layers reduce over a batch in another order than PyTorch
F32 = dict(rtol=2e-4, atol=2e-5)
F64 = dict(rtol=1e-10, atol=1e-12)


def _tol(dtype):
    return F32 if np.dtype(dtype) == np.float32 else F64


def _torch():
    return pytest.importorskip("torch", reason="torch is needed for the cross-checks")


def _load_from_torch(layer, tlayer):
    layer.load_state_dict({k: v.detach().cpu().numpy() for k, v in tlayer.state_dict().items()})


def _tdtype(torch, dtype):
    return torch.float32 if np.dtype(dtype) == np.float32 else torch.float64


def _compare_step(layer, tlayer, x, rng, dtype, torch, *, input_grad=True):
    """One forward/backward of both; compare output, dL/dx and every parameter gradient."""
    t = _tol(dtype)
    tx = torch.tensor(x, requires_grad=input_grad)
    ty = tlayer(tx)
    y = layer(x)
    np.testing.assert_allclose(y, ty.detach().numpy(), **t)
    g = rng.standard_normal(y.shape).astype(dtype)
    for p in tlayer.parameters():
        p.grad = None
    ty.backward(torch.tensor(g))
    gx = layer.backward(g)
    if input_grad:
        np.testing.assert_allclose(gx, tx.grad.numpy(), **t)
    tparams = dict(tlayer.named_parameters())
    for name, p in layer.named_parameters():
        np.testing.assert_allclose(p.grad, tparams[name].grad.numpy(), err_msg=name, **t)
    return y


# ---------------------------------------------------------------------------
# Dropout


@pytest.mark.parametrize("cls", [nn.Dropout, nn.Dropout2d])
def test_dropout_keep_rate_and_scaling(backend, cls, dtype):
    p = 0.3
    layer = cls(p)
    x = np.ones((64, 16, 8, 8), dtype)
    fastnn.manual_seed(0)
    y = layer(x)
    kept = y != 0
    n = kept.size if cls is nn.Dropout else kept.shape[0] * kept.shape[1]
    rate = kept.mean()
    # 4 standard deviations of a binomial proportion
    assert abs(rate - (1 - p)) < 4 * np.sqrt(p * (1 - p) / n), rate
    np.testing.assert_allclose(y[kept], 1 / (1 - p), rtol=1e-6)
    if cls is nn.Dropout2d:  # whole planes: all kept or all dropped
        planes = kept.reshape(64, 16, -1)
        assert np.all(planes.all(axis=2) | ~planes.any(axis=2))
    g = np.arange(x.size, dtype=dtype).reshape(x.shape)
    gx = layer.backward(g)
    np.testing.assert_allclose(gx, g * y, rtol=1e-6)  # y = mask/(1-p) for x = 1


def test_dropout_is_reproducible_and_same_in_every_backend(backend):
    x = np.random.default_rng(1).standard_normal((32, 50)).astype(np.float32)
    layer = nn.Dropout(0.5)
    fastnn.manual_seed(7)
    a = layer(x)
    fastnn.manual_seed(7)
    b = layer(x)
    np.testing.assert_array_equal(a, b)
    with fastnn.use_backend("numpy"):
        fastnn.manual_seed(7)
        c = layer(x)
    np.testing.assert_array_equal(a, c)
    assert not np.array_equal(a, layer(x))  # the generator moved on


@pytest.mark.parametrize("cls", [nn.Dropout, nn.Dropout2d])
def test_dropout_eval_and_inference_are_identity(cls):
    x = np.random.default_rng(2).standard_normal((4, 3, 5, 5)).astype(np.float32)
    layer = cls(0.5).eval()
    np.testing.assert_array_equal(layer(x), x)
    np.testing.assert_array_equal(layer.backward(x), x)
    layer.train()
    with fastnn.inference_mode():
        np.testing.assert_array_equal(layer(x), x)


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_dropout_extreme_probabilities(p):
    x = np.random.default_rng(3).standard_normal((10, 7))
    y = nn.Dropout(p)(x)
    np.testing.assert_array_equal(y, x if p == 0 else np.zeros_like(x))


def test_dropout_rejects_bad_arguments():
    with pytest.raises(ValueError):
        nn.Dropout(1.5)
    with pytest.raises(TypeError):
        nn.Dropout("0.5")
    with pytest.raises(ValueError, match="4-D"):
        nn.Dropout2d(0.5)(np.ones((3, 4), np.float32))


def test_dropout_in_sequential_fused_paths_match_unfused(backend, rng):
    """ReLU→Dropout and Linear→Dropout run fused in Sequential: same values and gradients as layer by layer."""
    x = rng.standard_normal((16, 10)).astype(np.float64)
    nn.init.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(10, 20, dtype=np.float64),
        nn.Dropout(0.4),
        nn.ReLU(),
        nn.Dropout(0.25),
        nn.Linear(20, 3, dtype=np.float64),
    )
    fastnn.manual_seed(5)
    y = model(x)
    g = rng.standard_normal(y.shape)
    gx = model.backward(g)
    grads = [p.grad.copy() for p in model.parameters()]
    fastnn.manual_seed(5)
    h = x
    for m in model:
        h = m(h)
    np.testing.assert_allclose(y, h, rtol=1e-12)
    gh = g
    for m in reversed(list(model)):
        gh = m.backward(gh)
    np.testing.assert_allclose(gx, gh, rtol=1e-12, atol=1e-14)
    for a, p in zip(grads, model.parameters()):
        np.testing.assert_allclose(a, p.grad, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------
# Batch norm and layer norm


BN_CASES = [
    ("1d", (8, 5), dict()),
    ("1d", (6, 4, 7), dict(momentum=0.3)),
    ("1d", (8, 5), dict(affine=False)),
    ("1d", (8, 5), dict(momentum=None)),
    ("2d", (4, 3, 5, 6), dict()),
    ("2d", (4, 3, 5, 6), dict(eps=1e-3, affine=False)),
    ("2d", (4, 3, 5, 6), dict(track_running_stats=False)),
]


@pytest.mark.parametrize("kind,shape,kw", BN_CASES)
def test_batch_norm_matches_torch(backend, dtype, kind, shape, kw, rng):
    torch = _torch()
    tcls = torch.nn.BatchNorm1d if kind == "1d" else torch.nn.BatchNorm2d
    cls = nn.BatchNorm1d if kind == "1d" else nn.BatchNorm2d
    C = shape[1]
    tlayer = tcls(C, **kw).to(_tdtype(torch, dtype))
    layer = cls(C, dtype=dtype, **kw)
    with torch.no_grad():
        if tlayer.affine:
            tlayer.weight.uniform_(0.5, 1.5)
            tlayer.bias.uniform_(-0.5, 0.5)
    assert list(layer.state_dict()) == list(tlayer.state_dict())
    _load_from_torch(layer, tlayer)
    for step in range(3):
        x = (rng.standard_normal(shape) * 2 + step).astype(dtype)
        _compare_step(layer, tlayer, x, rng, dtype, torch)
    for name, value in tlayer.state_dict().items():
        np.testing.assert_allclose(layer.state_dict()[name], value.numpy(), err_msg=name, **_tol(dtype))
    if layer.track_running_stats:
        assert layer.num_batches_tracked.dtype == np.int64 and int(layer.num_batches_tracked) == 3
    layer.eval()
    tlayer.eval()
    x = rng.standard_normal(shape).astype(dtype)
    before = layer.state_dict()
    _compare_step(layer, tlayer, x, rng, dtype, torch)
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, before[name])  # eval changes nothing


@pytest.mark.parametrize(
    "shape,ns,kw",
    [
        ((6, 10), 10, {}),
        ((3, 4, 5, 6), (5, 6), {}),
        ((5, 7), 7, dict(elementwise_affine=False)),
        ((2, 3, 8), [8], dict(eps=1e-2)),
    ],
)
def test_layer_norm_matches_torch(backend, dtype, shape, ns, kw, rng):
    torch = _torch()
    tlayer = torch.nn.LayerNorm(ns, **kw).to(_tdtype(torch, dtype))
    with torch.no_grad():
        for p in tlayer.parameters():
            p.uniform_(-1.0, 1.5)
    layer = nn.LayerNorm(ns, dtype=dtype, **kw)
    assert list(layer.state_dict()) == list(tlayer.state_dict())
    _load_from_torch(layer, tlayer)
    _compare_step(layer, tlayer, rng.standard_normal(shape).astype(dtype) * 3, rng, dtype, torch)


@pytest.mark.parametrize(
    "make,shape",
    [
        (lambda: nn.BatchNorm1d(3), (5, 3)),
        (lambda: nn.BatchNorm1d(3), (4, 3, 3)),
        (lambda: nn.BatchNorm2d(2), (3, 2, 2, 3)),
        (lambda: nn.LayerNorm((3, 4)), (2, 3, 4)),
        (lambda: nn.LayerNorm(4, elementwise_affine=False), (3, 4)),
    ],
)
def test_norm_gradcheck(backend, make, shape, rng):
    layer = make()
    fastnn.gradcheck(layer, rng.standard_normal(shape))


def test_batch_norm_rejects_bad_input():
    with pytest.raises(ValueError, match="num_features"):
        nn.BatchNorm1d(4)(np.ones((3, 5), np.float32))
    with pytest.raises(ValueError):
        nn.BatchNorm2d(4)(np.ones((3, 4), np.float32))
    with pytest.raises(TypeError):
        nn.BatchNorm1d(4)(np.ones((3, 4), np.float64))
    with pytest.raises(ValueError):
        nn.BatchNorm1d(0)
    with pytest.raises(ValueError):
        nn.BatchNorm1d(3, momentum=2.0)
    bn = nn.BatchNorm1d(3)
    with pytest.raises(ValueError):
        bn(np.ones((1, 3), np.float32))  # one value per channel: no variance
    assert int(bn.num_batches_tracked) == 0  # a refused batch is not counted


def test_layer_norm_rejects_bad_input():
    with pytest.raises(ValueError):
        nn.LayerNorm((4, 5))(np.ones((3, 5, 4), np.float32))
    with pytest.raises(ValueError):
        nn.LayerNorm(0)


def test_norm_plans_take_lists_without_affine_parameters():
    # without weight (and bias) the plans used to read x.dtype of a list: AttributeError
    y = nn.LayerNorm(4, elementwise_affine=False)([[1.0, 2.0, 3.0, 4.0]])
    assert y.shape == (1, 4) and abs(float(y.mean())) < 1e-6
    out, mean, var = fastnn.ops.BatchNormPlan(3).forward([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]], True)
    np.testing.assert_allclose(mean, [2.0, 3.0, 4.0])


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_plan_checks_running_var(training):
    plan = fastnn.ops.BatchNormPlan(3)
    x = np.arange(15, dtype=np.float32).reshape(5, 3)
    bad = [
        (None, ValueError, "both"),
        (np.ones(4, np.float32), ValueError, "running_var"),
        (np.ones(3, np.float64), TypeError, "running_var"),
    ]
    for running_var, exc, match in bad:
        running_mean = np.zeros(3, np.float32)
        with pytest.raises(exc, match=match):
            plan.forward(x, training, running_mean, running_var)
        assert not running_mean.any()  # refused before any update


def test_batch_norm_buffers_in_state_dict_save_and_load(tmp_path, rng):
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.2), nn.Linear(6, 2))
    for _ in range(2):
        model(rng.standard_normal((8, 4)).astype(np.float32))
    keys = list(model.state_dict())
    assert keys == [
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
        "4.weight",
        "4.bias",
    ]
    assert [n for n, _ in model.named_parameters()] == [
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
        "4.weight",
        "4.bias",
    ]
    path = tmp_path / "m.fnn"
    fastnn.save(model, path)
    loaded = fastnn.load(path)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[k], v)
        assert loaded.state_dict()[k].dtype == v.dtype
    model.eval()
    loaded.eval()
    x = rng.standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_array_equal(model(x), loaded(x))
    model.to(np.float64)
    assert model[1].running_mean.dtype == np.float64 and model[1].num_batches_tracked.dtype == np.int64


def test_load_state_dict_checks_buffers():
    bn = nn.BatchNorm1d(3)
    sd = bn.state_dict()
    sd["running_mean"] = np.ones(4, np.float32)
    with pytest.raises(ValueError):
        bn.load_state_dict(sd)
    sd = bn.state_dict()
    sd["num_batches_tracked"] = np.array(1.5)
    with pytest.raises(TypeError):
        bn.load_state_dict(sd)
    sd = bn.state_dict()
    del sd["running_var"]
    with pytest.raises(KeyError):
        bn.load_state_dict(sd)


def test_fit_uses_eval_mode_for_validation(rng):
    x = rng.standard_normal((64, 4)).astype(np.float32)
    y = rng.standard_normal((64, 1)).astype(np.float32)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 1))
    fastnn.fit(
        model, x, y, loss=nn.MSELoss(), epochs=2, batch_size=16, validation_data=(x[:16], y[:16]), progress=False
    )
    # 4 steps per epoch update the statistics; validation passes do not
    assert int(model[1].num_batches_tracked) == 8
    assert model.training


# ---------------------------------------------------------------------------
# Embedding


@pytest.mark.parametrize("padding_idx", [None, 2, -1])
def test_embedding_matches_torch(backend, dtype, padding_idx, rng):
    torch = _torch()
    tlayer = torch.nn.Embedding(10, 4, padding_idx=padding_idx).to(_tdtype(torch, dtype))
    layer = nn.Embedding(10, 4, padding_idx=padding_idx, dtype=dtype)
    _load_from_torch(layer, tlayer)
    idx = rng.integers(0, 10, (5, 7))
    idx[0, :3] = 2
    y = layer(idx)
    ty = tlayer(torch.tensor(idx))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    g = rng.standard_normal(y.shape).astype(dtype)
    ty.backward(torch.tensor(g))
    assert layer.backward(g) is None
    np.testing.assert_allclose(layer.weight.grad, tlayer.weight.grad.numpy(), **_tol(dtype))


def test_embedding_backward_touches_only_used_rows(backend):
    layer = nn.Embedding(6, 3, dtype=np.float64)
    layer.weight.grad[...] = 7.0
    layer(np.array([1, 4, 1]))
    layer.backward(np.ones((3, 3)), accumulate=True)
    expected = np.full((6, 3), 7.0)
    expected[1] += 2
    expected[4] += 1
    np.testing.assert_array_equal(layer.weight.grad, expected)
    layer(np.array([0]))
    layer.backward(np.ones((1, 3)))  # overwrite: untouched rows are zero
    expected = np.zeros((6, 3))
    expected[0] = 1
    np.testing.assert_array_equal(layer.weight.grad, expected)


@pytest.mark.parametrize(
    "bad,exc",
    [
        (np.array([0, 10]), ValueError),
        (np.array([-11]), ValueError),
        (np.array([0.5]), ValueError),
        (np.array([2**40]), ValueError),
    ],
)
def test_embedding_rejects_out_of_range_indices(backend, bad, exc):
    layer = nn.Embedding(10, 3)
    with pytest.raises(exc):
        layer(bad)


def test_embedding_in_a_model_trains(rng):
    model = nn.Sequential(nn.Embedding(20, 8), nn.Flatten(), nn.Linear(24, 2))
    idx = rng.integers(0, 20, (32, 3))
    y = model(idx)
    assert y.shape == (32, 2)
    model.backward(np.ones_like(y))
    assert np.count_nonzero(np.abs(model[0].weight.grad).sum(1)) == len(np.unique(idx))


# ---------------------------------------------------------------------------
# Conv1d, 1-d pools, adaptive pool


@pytest.mark.parametrize(
    "kw",
    [
        dict(kernel_size=3),
        dict(kernel_size=3, stride=2, padding=1),
        dict(kernel_size=2, dilation=2, bias=False),
        dict(kernel_size=5, padding=2),
    ],
)
def test_conv1d_matches_torch(backend, dtype, kw, rng):
    torch = _torch()
    tlayer = torch.nn.Conv1d(3, 4, **kw).to(_tdtype(torch, dtype))
    layer = nn.Conv1d(3, 4, dtype=dtype, **kw)
    assert [(k, v.shape) for k, v in layer.state_dict().items()] == [
        (k, tuple(v.shape)) for k, v in tlayer.state_dict().items()
    ]
    _load_from_torch(layer, tlayer)
    _compare_step(layer, tlayer, rng.standard_normal((2, 3, 11)).astype(dtype), rng, dtype, torch)


@pytest.mark.parametrize(
    "kind,args", [("max", (2,)), ("max", (3, 2, 1)), ("avg", (2,)), ("avg", (3, 2, 1)), ("avg", (3, 1, 1))]
)
def test_pool1d_matches_torch(backend, dtype, kind, args, rng):
    torch = _torch()
    if kind == "max":
        layer, tlayer = nn.MaxPool1d(*args), torch.nn.MaxPool1d(*args)
    else:
        layer, tlayer = nn.AvgPool1d(*args), torch.nn.AvgPool1d(*args)
    _compare_step(layer, tlayer, rng.standard_normal((2, 3, 10)).astype(dtype), rng, dtype, torch)


@pytest.mark.parametrize(
    "out,shape",
    [(1, (2, 3, 7, 5)), ((2, 3), (2, 3, 7, 5)), (4, (1, 2, 8, 8)), ((3, None), (2, 2, 7, 5)), (5, (1, 1, 3, 3))],
)
def test_adaptive_avg_pool_matches_torch(backend, dtype, out, shape, rng):
    torch = _torch()
    layer, tlayer = nn.AdaptiveAvgPool2d(out), torch.nn.AdaptiveAvgPool2d(out)
    _compare_step(layer, tlayer, rng.standard_normal(shape).astype(dtype), rng, dtype, torch)


def test_global_avg_pool(backend, dtype, rng):
    x = rng.standard_normal((3, 4, 5, 6)).astype(dtype)
    layer = nn.GlobalAvgPool2d()
    y = layer(x)
    np.testing.assert_allclose(y.reshape(3, 4), x.mean(axis=(2, 3)), **tol(dtype, 10))
    g = np.ones(y.shape, dtype)
    np.testing.assert_allclose(layer.backward(g), np.full(x.shape, 1 / 30), **tol(dtype, 10))


@pytest.mark.parametrize(
    "make,shape",
    [
        (lambda: nn.Conv1d(2, 3, 3, stride=2, padding=1), (2, 2, 7)),
        (lambda: nn.MaxPool1d(2), (2, 2, 6)),
        (lambda: nn.AvgPool1d(3, 2, 1), (2, 2, 7)),
        (lambda: nn.AdaptiveAvgPool2d((2, 3)), (2, 2, 5, 7)),
        (lambda: nn.Embedding(5, 3), None),
    ],
)
def test_new_layers_gradcheck(make, shape, rng):
    layer = make()
    if shape is None:
        fastnn.gradcheck(layer, np.array([[0, 3, 3], [4, 1, 0]]), check_input=False)
    else:
        fastnn.gradcheck(layer, rng.standard_normal(shape))


def test_cnn_with_new_layers_saves_and_loads(tmp_path, rng):
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout2d(0.1),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.LayerNorm(16),
        nn.Linear(16, 3),
    )
    x = rng.standard_normal((4, 1, 6, 6)).astype(np.float32)
    y = model(x)
    model.backward(np.ones_like(y))
    path = tmp_path / "cnn.fnn"
    fastnn.save(model, path)
    loaded = fastnn.load(path)
    model.eval()
    loaded.eval()
    np.testing.assert_array_equal(model(x), loaded(x))
    seq = nn.Sequential(nn.Conv1d(2, 3, 3), nn.MaxPool1d(2), nn.AvgPool1d(2), nn.Flatten(), nn.Embedding(4, 2))
    fastnn.save(seq, tmp_path / "seq.fnn")
    assert repr(fastnn.load(tmp_path / "seq.fnn")) == repr(seq)


def test_embedding_kernels_check_indices_themselves(backend):
    """Called without fastnn.ops, a kernel still refuses an index outside the table (never reads past it)."""
    from fastnn.backends import current

    k = current()
    w = np.ones((4, 3))
    with pytest.raises(ValueError):
        k.embedding_forward(np.array([0, 4], np.int64), w, np.empty((2, 3)))
    with pytest.raises(ValueError):
        k.embedding_forward(np.array([-1], np.int64), w, np.empty((1, 3)))
    gw = np.zeros((4, 3))
    with pytest.raises(ValueError):
        k.embedding_backward(np.ones((1, 3)), np.array([7], np.int64), -1, np.empty(0, np.int64), gw)
    with pytest.raises(ValueError):
        k.embedding_backward(np.ones((1, 3)), np.array([1], np.int64), -1, np.array([9], np.int64), gw)
    assert not gw.any()


@pytest.mark.parametrize("relu", [False, True])
def test_dropout_kernels_agree_with_reference_on_nonfinite_values(backend, dtype, relu):
    x = np.array([1.0, -2.0, np.nan, np.inf, -np.inf, 0.5, -0.0, 3.0], dtype)
    bits = np.array([0, 2**32 - 1] * 4, np.uint32)
    from fastnn.backends import current, get

    outs = []
    for k in (current(), get("numpy")):
        out, mask = np.empty_like(x), np.empty(8, np.uint8)
        k.dropout_forward(x, bits, 2**31, 2.0, 1, relu, out, mask)
        gin = k.dropout_backward(x, mask, 2.0, 1, out if relu else None, np.empty_like(x))
        outs.append((out, mask, gin))
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)
