"""Optimizers, schedules and gradient clipping: by hand and step by step against torch.optim."""

import math

import numpy as np
import pytest

from fastnn import nn, optim
from fastnn.nn import Parameter


def test_sgd_step_by_hand(backend):
    p = Parameter(np.array([1.0, 2.0]))
    opt = optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01)
    p.grad[:] = [0.5, -1.0]
    opt.step()
    # g = grad + 0.01 w = [0.51, -0.98]; v = g; w -= 0.1 v
    np.testing.assert_allclose(p.data, [0.949, 2.098], rtol=1e-14)
    opt.step()
    # g = [0.5 + 0.00949, -1 + 0.02098]; v = 0.9 [0.51, -0.98] + g = [0.96849, -1.86102]
    np.testing.assert_allclose(opt.velocity[0], [0.96849, -1.86102], rtol=1e-14)
    np.testing.assert_allclose(p.data, [0.852151, 2.284102], rtol=1e-14)


def test_one_training_step_by_hand(backend):
    """y = W x + b with W = [0.5, -0.25], b = 0.1, x = [1, 2], target 1, MSE, SGD lr 0.1."""
    lin = nn.Linear(2, 1, dtype=np.float64)
    lin.load_state_dict({"weight": np.array([[0.5, -0.25]]), "bias": np.array([0.1])})
    loss_fn = nn.MSELoss()
    opt = optim.SGD(lin.parameters(), lr=0.1)
    y = lin(np.array([[1.0, 2.0]]))
    assert y[0, 0] == pytest.approx(0.1)
    assert loss_fn(y, np.array([[1.0]])) == pytest.approx(0.81)  # (0.1 - 1)^2
    lin.backward(loss_fn.backward())  # dL/dy = 2 (0.1 - 1) = -1.8
    np.testing.assert_allclose(lin.weight.grad, [[-1.8, -3.6]])
    np.testing.assert_allclose(lin.bias.grad, [-1.8])
    opt.step()
    np.testing.assert_allclose(lin.weight.data, [[0.68, 0.11]], rtol=1e-14)
    np.testing.assert_allclose(lin.bias.data, [0.28], rtol=1e-14)


CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True)),
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.5, nesterov=True, weight_decay=0.1)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.02, weight_decay=0.1)),
]


@pytest.mark.torch
@pytest.mark.parametrize("name,kwargs", CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)])
def test_optimizer_matches_torch_step_by_step(backend, dtype, name, kwargs, rng):
    torch = pytest.importorskip("torch")
    shapes = [(3, 4), (4,)]
    init = [rng.standard_normal(s).astype(dtype) for s in shapes]
    ours = [Parameter(a.copy()) for a in init]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    opt = getattr(optim, name)(ours, **kwargs)
    topt = getattr(torch.optim, name)(theirs, **kwargs)
    rt = dict(rtol=2e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    for _ in range(6):
        for p, t in zip(ours, theirs):
            g = rng.standard_normal(p.shape).astype(dtype)
            p.grad[...] = g
            t.grad = torch.tensor(g)
        opt.step()
        topt.step()
        for p, t in zip(ours, theirs):
            np.testing.assert_allclose(p.data, t.detach().numpy(), **rt)


@pytest.mark.torch
def test_clip_grad_norm_matches_torch(rng):
    torch = pytest.importorskip("torch")
    grads = [rng.standard_normal((3, 4)), rng.standard_normal(5)]
    ps = [Parameter(np.zeros_like(g)) for g in grads]
    ts = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for p, t, g in zip(ps, ts, grads):
        p.grad[...] = g
        t.grad = torch.tensor(g)
    total = optim.clip_grad_norm(ps, 1.5)
    ttotal = torch.nn.utils.clip_grad_norm_(ts, 1.5)
    assert total == pytest.approx(float(ttotal), rel=1e-12)
    assert total == pytest.approx(math.sqrt(sum(float((g**2).sum()) for g in grads)), rel=1e-12)
    for p, t in zip(ps, ts):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-12)
    assert math.sqrt(sum(float((p.grad**2).sum()) for p in ps)) == pytest.approx(1.5, rel=1e-5)
    # below the limit nothing changes
    before = [p.grad.copy() for p in ps]
    optim.clip_grad_norm(ps, 10.0)
    for p, b in zip(ps, before):
        np.testing.assert_array_equal(p.grad, b)


@pytest.mark.torch
def test_schedules_match_torch():
    torch = pytest.importorskip("torch")
    for make_ours, make_theirs in [
        (lambda o: optim.StepLR(o, step_size=3, gamma=0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.5)),
        (
            lambda o: optim.CosineAnnealingLR(o, T_max=10, eta_min=0.001),
            lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=0.001),
        ),
        (lambda o: optim.ExponentialLR(o, gamma=0.9), lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.9)),
    ]:
        opt = optim.SGD([Parameter(np.zeros(2))], lr=0.1)
        topt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1)
        s, ts = make_ours(opt), make_theirs(topt)
        for _ in range(12):
            topt.step()
            s.step()
            ts.step()
            assert opt.lr == pytest.approx(ts.get_last_lr()[0], rel=1e-9, abs=1e-12)


def test_schedules_by_hand():
    opt = optim.SGD([Parameter(np.zeros(2))], lr=1.0)
    s = optim.CosineAnnealingLR(opt, T_max=4)
    lrs = []
    for _ in range(4):
        s.step()
        lrs.append(opt.lr)
    np.testing.assert_allclose(lrs, [(1 + math.cos(math.pi * k / 4)) / 2 for k in range(1, 5)], atol=1e-15)
    assert lrs[-1] == pytest.approx(0.0, abs=1e-15)


def test_optimizer_errors_and_param_replacement():
    with pytest.raises(ValueError, match="empty"):
        optim.SGD([], lr=0.1)
    p = Parameter(np.zeros(3))
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="lr"):
        optim.SGD([p], lr=-1)
    with pytest.raises(ValueError, match="momentum"):
        optim.SGD([p], lr=0.1, momentum=1.0)
    with pytest.raises(TypeError):
        optim.Adam([np.zeros(3)])
    with pytest.raises(ValueError, match="more than once"):
        optim.Adam([p, p])
    opt = optim.SGD([p], lr=0.5, momentum=0.9)
    p.grad[:] = 1.0
    opt.step()
    np.testing.assert_allclose(p.data, -0.5)
    # replacing the arrays is noticed: state re-validated, the new array updated
    p.data = np.ones(3)
    p.grad = np.full(3, 2.0)
    opt.step()
    np.testing.assert_allclose(p.data, 1 - 0.5 * (0.9 * 1.0 + 2.0))
    opt.zero_grad()
    np.testing.assert_array_equal(p.grad, 0)


def test_optimizer_accepts_module():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    opt = optim.AdamW(model, lr=0.1)
    assert len(opt.params) == 4
    assert optim.clip_grad_norm(model, 1.0) == 0.0


@pytest.mark.torch
@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
        ("Adam", dict(lr=0.01, weight_decay=0.01)),
        ("AdamW", dict(lr=0.01)),
    ],
)
def test_fused_update_of_a_model_matches_torch(backend, name, kwargs, rng):
    """All parameters of a dtype are updated by one kernel call; the training follows torch step by step."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    tm = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).double()
    model = nn.Sequential(nn.Linear(5, 7, dtype=np.float64), nn.Tanh(), nn.Linear(7, 3, dtype=np.float64))
    model.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    opt = getattr(optim, name)(model.parameters(), **kwargs)
    topt = getattr(torch.optim, name)(tm.parameters(), **kwargs)
    w = model[0].weight.data
    assert len(opt._plan._check()[2]) == 1  # one group: one kernel call per step
    loss_fn, tloss = nn.MSELoss(), torch.nn.MSELoss()
    for i in range(5):
        x = rng.standard_normal((4, 5))
        t = rng.standard_normal((4, 3))
        loss_fn(model(x), t)
        model.backward(loss_fn.backward())
        opt.step()
        topt.zero_grad()
        tloss(tm(torch.tensor(x)), torch.tensor(t)).backward()
        topt.step()
        for k, v in tm.state_dict().items():
            np.testing.assert_allclose(model.state_dict()[k], v.numpy(), rtol=1e-12, atol=1e-13, err_msg=k)
        if i == 2:  # a parameter replaced by the user: noticed, state kept, still equal to torch
            model[2].bias.data = model[2].bias.data.copy()
    assert model[0].weight.data is w  # the optimizer never replaces a parameter's array


def test_optimizer_keeps_parameter_arrays():
    """Arrays taken from parameters before the optimizer is built stay the parameters' arrays."""
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    before = {k: v.copy() for k, v in model.state_dict().items()}
    arrays = [(p.data, p.grad) for p in model.parameters()]
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p, (d, g) in zip(model.parameters(), arrays):
        assert p.data is d and p.grad is g
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    for p in model.parameters():
        p.grad[...] = 1.0
    opt.step()
    np.testing.assert_allclose(arrays[0][0], before["0.weight"] - 0.1)  # updated through the old reference
    # mixed dtypes: one kernel call per dtype group
    mixed = [nn.Parameter(np.ones(3, np.float32)), nn.Parameter(np.ones(2)), nn.Parameter(np.ones(4, np.float32))]
    opt = optim.SGD(mixed, lr=0.5)
    for p in mixed:
        p.grad[...] = 1.0
    opt.step()
    assert len(opt._plan._check()[2]) == 2
    for p in mixed:
        np.testing.assert_array_equal(p.data, 0.5)
