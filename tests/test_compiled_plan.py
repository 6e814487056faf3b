"""Compiled training plans (fastnn.ops.TrainPlan, fastnn.compiled): whole runs of steps in one call.

What is checked:

* every backend's ``train_steps`` against the NumPy specification and
  against the per-step loop, for float32 and float64, every loss, every
  optimizer and every activation the plans take; the Cython plan gives the
  per-step loop's bits (it calls the same routines in the same order);
* the number of steps per call changes nothing (bit for bit: weights,
  optimizer state and history) in ``fit``, ``run_steps`` and with schedules;
* the gradients a plan's step computes against finite differences;
* hostile input (indices and labels out of range, wrong dtypes, NaN losses,
  concurrent use) gives a Python exception, run in a child process;
* which models get a plan, and that the others say why.
"""

import threading

import numpy as np
import pytest
from conftest import _require_or_skip, tol
from isolated import run_isolated

import fastnn
from fastnn import compiled, nn, optim
from fastnn.gradcheck import numerical_gradient
from fastnn.ops import DenseSpec, TrainPlan

LOSSES = ("cross_entropy", "mse", "bce_with_logits")
ACTIVATIONS = (nn.ReLU, nn.Sigmoid, nn.Tanh, lambda: nn.LeakyReLU(0.1))


def _optimizers():
    return {
        "sgd": lambda p: optim.SGD(p, lr=0.05),
        "sgd_momentum": lambda p: optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3),
        "nesterov": lambda p: optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
        "adam": lambda p: optim.Adam(p, lr=0.01, weight_decay=1e-3),
        "adamw": lambda p: optim.AdamW(p, lr=0.01),
    }


def _data(loss, dtype, n=203, nin=12, nout=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, nin)).astype(dtype)
    if loss == "cross_entropy":
        y = rng.integers(0, nout, n)
    elif loss == "mse":
        y = rng.standard_normal((n, nout)).astype(dtype)
    else:
        y = (rng.random((n, nout)) > 0.5).astype(dtype)
    return X, y


def _model(dtype, act=nn.ReLU, nin=12, hidden=9, nout=4, seed=3):
    fastnn.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(nin, hidden, dtype=dtype), act(), nn.Linear(hidden, 7, dtype=dtype), nn.Tanh(),
        nn.Linear(7, nout, dtype=dtype),
    )  # fmt: skip


def _loss(name):
    return fastnn.train._resolve_loss(name, None if name != "cross_entropy" else np.zeros(1, int))


def _train(backend, dtype, loss, opt, act=nn.ReLU, force_loop=False, batch_size=16, per_call=None):
    """Losses and final weights of run_steps over one shuffled pass (plan, or the per-step loop)."""
    X, y = _data(loss, dtype)
    with fastnn.use_backend(backend):
        model = _model(dtype, act)
        step = fastnn.make_train_step(model, _loss(loss), _optimizers()[opt](model.parameters()))
        if force_loop:
            step.compiled_plan = lambda: (None, "forced")
        idx = np.random.default_rng(1).permutation(X.shape[0])
        if per_call is None:
            losses = step.run_steps(X, y, idx, batch_size)
        else:  # several calls, per_call steps each
            chunk = per_call * batch_size
            losses = np.concatenate(
                [step.run_steps(X, y, idx[i : i + chunk], batch_size) for i in range(0, idx.size, chunk)]
            )
        return losses, [p.data.copy() for p in model.parameters()], step


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("opt", sorted(_optimizers()))
def test_plan_matches_per_step_loop(compiled_backend, dtype, loss, opt):
    """A compiled plan's steps are the per-step loop's (Cython: the same bits)."""
    plan_losses, plan_w, step = _train(compiled_backend, dtype, loss, opt)
    assert step.compiled_plan()[0] is not None
    loop_losses, loop_w, _ = _train(compiled_backend, dtype, loss, opt, force_loop=True)
    ref_losses, ref_w, _ = _train("numpy", dtype, loss, opt)
    if compiled_backend == "cython":
        np.testing.assert_array_equal(plan_losses, loop_losses)
        for a, b in zip(plan_w, loop_w):
            np.testing.assert_array_equal(a, b)
    t = tol(dtype, 50)
    np.testing.assert_allclose(plan_losses, ref_losses, **t)
    for a, b in zip(plan_w, ref_w):
        np.testing.assert_allclose(a, b, **t)


@pytest.mark.parametrize("act", ACTIVATIONS, ids=["relu", "sigmoid", "tanh", "leaky_relu"])
def test_plan_activations(compiled_backend, dtype, act):
    plan_losses, plan_w, _ = _train(compiled_backend, dtype, "mse", "sgd_momentum", act=act)
    ref_losses, ref_w, _ = _train("numpy", dtype, "mse", "sgd_momentum", act=act)
    t = tol(dtype, 50)
    np.testing.assert_allclose(plan_losses, ref_losses, **t)
    for a, b in zip(plan_w, ref_w):
        np.testing.assert_allclose(a, b, **t)


@pytest.mark.parametrize(
    "loss, opt", [("cross_entropy", "sgd_momentum"), ("mse", "adam"), ("bce_with_logits", "nesterov")]
)
def test_numba_relu_network_drivers_give_the_general_drivers_bits(monkeypatch, dtype, loss, opt):
    """A network of ReLU layers runs drivers made for it (no other activation compiled, the ReLU fused into
    the products), per loss and optimizer: the bits of the drivers for any activations, trained and predicted;
    the reference's results to rounding."""
    _require_or_skip("numba")
    from fastnn.backends.numba_backend import train as numba_train

    X, y = _data(loss, dtype)
    idx = np.random.default_rng(1).permutation(X.shape[0])
    made = numba_train._driver
    families = []

    def run(backend):
        with fastnn.use_backend(backend):
            fastnn.manual_seed(3)
            model = nn.Sequential(nn.Linear(12, 9, dtype=dtype), nn.ReLU(), nn.Linear(9, 4, dtype=dtype))
            step = fastnn.make_train_step(model, _loss(loss), _optimizers()[opt](model.parameters()))
            losses = step.run_steps(X, y, idx, 16)
            return losses, [p.data.copy() for p in model.parameters()], fastnn.predict(model, X, batch_size=64)

    monkeypatch.setattr(
        numba_train, "_driver", lambda relu_only, key: families.append(relu_only) or made(relu_only, key)
    )
    relu = run("numba")
    assert families and all(families)
    monkeypatch.setattr(numba_train, "_driver", lambda relu_only, key: families.append(relu_only) or made(False, key))
    general = run("numba")
    for a, b in zip(relu, general):
        if isinstance(a, list):
            for u, v in zip(a, b):
                np.testing.assert_array_equal(u, v)
        else:
            np.testing.assert_array_equal(a, b)
    ref = run("numpy")
    t = tol(dtype, 50)
    np.testing.assert_allclose(relu[0], ref[0], **t)
    for u, v in zip(relu[1], ref[1]):
        np.testing.assert_allclose(u, v, **t)
    np.testing.assert_allclose(relu[2], ref[2], **t)


@pytest.mark.parametrize("loss", LOSSES)
def test_reference_kernel_is_the_per_step_loop(dtype, loss):
    """The NumPy ``train_steps`` (the specification) gives the per-step loop's bits."""
    X, y = _data(loss, dtype)
    results = []
    for use_plan in (True, False):
        with fastnn.use_backend("numpy"):
            model = _model(dtype, nn.Sigmoid)
            opt = optim.Adam(model.parameters(), lr=0.01)
            lossfn = _loss(loss)
            idx = np.random.default_rng(1).permutation(X.shape[0])
            if use_plan:
                plan = compiled.train_plan(model, lossfn, opt)
                yp = y if loss == "cross_entropy" else y
                _, hyper = compiled.hyper_parameters(opt)
                losses = plan.run(X, yp, idx, 16, hyper).losses
            else:
                step = fastnn.make_train_step(model, lossfn, opt)
                losses = step.run_steps(X, y, idx, 16)
            results.append((np.array(losses), [p.data.copy() for p in model.parameters()]))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("opt", ["nesterov", "adamw"])
def test_steps_per_call_changes_nothing(backend, opt):
    """1, 3 and all steps per call: the same bits (run_steps)."""
    runs = [_train(backend, np.float32, "cross_entropy", opt, per_call=k) for k in (1, 3, None)]
    for losses, weights, _ in runs[1:]:
        np.testing.assert_array_equal(losses, runs[0][0])
        for a, b in zip(weights, runs[0][1]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("opt", ["sgd_momentum", "adam"])
def test_fit_steps_per_call(compiled_backend, opt):
    """fit with 1, 5 and "auto" steps per call: same weights, optimizer state and history, with a schedule."""
    X, y = _data("cross_entropy", np.float32, n=301)
    results = []
    for k in (1, 5, "auto"):
        model = _model(np.float32)
        o = _optimizers()[opt](model.parameters())
        sched = optim.StepLR(o, step_size=1, gamma=0.5)
        h = fastnn.fit(
            model, X, y, optimizer=o, scheduler=sched, epochs=3, batch_size=20, seed=4, progress=False,
            validation_data=(X[:50], y[:50]), steps_per_call=k,
        )  # fmt: skip
        state = o.state_dict()
        results.append((h.history, h.lr, [p.data.copy() for p in model.parameters()], state))
    for hist, lr, weights, state in results[1:]:
        assert hist == results[0][0] and lr == results[0][1]
        for a, b in zip(weights, results[0][2]):
            np.testing.assert_array_equal(a, b)
        assert state["step_count"] == results[0][3]["step_count"]
        for name, arrays in state["state"].items():
            for a, b in zip(arrays, results[0][3]["state"][name]):
                np.testing.assert_array_equal(a, b)


def test_fit_plan_matches_loop_history(compiled_backend):
    """fit's compiled path and its per-step loop (forced by clipping at a huge norm) agree."""
    X, y = _data("bce_with_logits", np.float64, n=150)
    out = []
    for clip in (None, 1e30):
        model = _model(np.float64, nout=4)
        o = optim.Adam(model.parameters(), lr=0.01)
        h = fastnn.fit(model, X, y, loss="bce_with_logits", optimizer=o, epochs=2, batch_size=32, seed=0,
                       progress=False, clip_grad_norm=clip)  # fmt: skip
        out.append((h.history, [p.data.copy() for p in model.parameters()]))
    assert out[0][0].keys() == out[1][0].keys()
    for key in out[0][0]:
        np.testing.assert_allclose(out[0][0][key], out[1][0][key], rtol=1e-10)
    for a, b in zip(out[0][1], out[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("loss", LOSSES)
def test_plan_gradients_against_finite_differences(compiled_backend, loss):
    """With lr = 0 a step leaves the weights and writes the gradients: compare them to finite differences."""
    dtype = np.float64
    X, y = _data(loss, dtype, n=10)
    model = _model(dtype, nn.Tanh)
    lossfn = _loss(loss)
    opt = optim.SGD(model.parameters(), lr=0.0)
    plan = compiled.train_plan(model, lossfn, opt)
    idx = np.arange(10, dtype=np.intp)
    yt = y if loss == "cross_entropy" else y
    plan.run(X, yt, idx, 10, compiled.hyper_parameters(opt)[1])

    def f():
        with fastnn.use_backend("numpy"):
            return lossfn(model(X), y)

    for p in model.parameters():
        num = numerical_gradient(f, p.data, eps=1e-6)
        np.testing.assert_allclose(p.grad, num, rtol=1e-6, atol=1e-8)


def test_predict_and_evaluate_use_the_forward_plan(compiled_backend, dtype):
    X, y = _data("cross_entropy", dtype, n=1003)
    model = _model(dtype, nn.Sigmoid)
    assert compiled.explain(model) is None
    got = fastnn.predict(model, X, batch_size=64)
    with fastnn.no_grad():
        want = model(X)
    if compiled_backend == "cython":
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got, want, **tol(dtype, 10))
    res = fastnn.evaluate(model, X, y, batch_size=64)
    with fastnn.use_backend("numpy"):
        ref = fastnn.evaluate(model, X, y, batch_size=64)
    assert res["accuracy"] == ref["accuracy"]
    np.testing.assert_allclose(res["loss"], ref["loss"], rtol=1e-5)
    # flattened input through a leading Flatten
    fastnn.manual_seed(0)
    cnn_like = nn.Sequential(nn.Flatten(), nn.Linear(12, 3, dtype=dtype))
    X4 = X.reshape(-1, 3, 2, 2)
    with fastnn.no_grad():
        np.testing.assert_allclose(fastnn.predict(cnn_like, X4), cnn_like(X4), **tol(dtype))


def test_numba_predict_splits_the_rows_between_threads(monkeypatch):
    """A large prediction of a dense network runs as runs of whole batches, one per active thread, each with
    buffers of its own: one thread's bits whatever the split."""
    _require_or_skip("numba")
    from fastnn.backends.numba_backend import train as numba_train

    X, _ = _data("cross_entropy", np.float32, n=1003)
    model = _model(np.float32)
    split = numba_train._predict_split
    parts = []
    monkeypatch.setattr(numba_train, "_predict_split", lambda *a: parts.append(a[-1]) or split(*a))
    threads = fastnn.get_num_threads()
    try:
        with fastnn.use_backend("numba"):
            fastnn.set_num_threads(1)
            one = fastnn.predict(model, X, batch_size=64)
            monkeypatch.setattr(numba_train, "PREDICT_SPLIT_MIN_MACS", 1)
            for t in (2, 3):
                fastnn.set_num_threads(t)
                np.testing.assert_array_equal(fastnn.predict(model, X, batch_size=64), one)
            np.testing.assert_array_equal(fastnn.predict(model, X[:100], batch_size=64), one[:100])  # 2 batches
    finally:
        fastnn.set_num_threads(threads)
    assert parts == [2, 3, 2]
    with fastnn.no_grad():
        np.testing.assert_allclose(one, model(X), **tol(np.float32, 10))


def test_numba_predict_keeps_the_plan_at_any_batch_size_below_its_weight_limit(monkeypatch):
    """predict and evaluate give the numba forward plan up for the layers above NUMBA_PREDICT_MAX_WEIGHTS
    weights, whatever the batch size (a training step's limit, NUMBA_PLAN_MAX_MACS, counts the batch)."""
    _require_or_skip("numba")
    X, y = _data("cross_entropy", np.float32, n=300)
    model = _model(np.float32)
    with fastnn.use_backend("numba"):
        assert fastnn.train._forward_plan(model, X) is not None
        want = fastnn.predict(model, X, batch_size=4096)  # far above NUMBA_PLAN_MAX_MACS multiply-adds a batch
        monkeypatch.setattr(fastnn.train, "NUMBA_PREDICT_MAX_WEIGHTS", 12 * 9 + 9 * 7 + 7 * 4 - 1)
        assert fastnn.train._forward_plan(model, X) is None
        got = fastnn.predict(model, X, batch_size=4096)  # the layers
        res = fastnn.evaluate(model, X, y)
    with fastnn.no_grad():
        np.testing.assert_allclose(want, model(X), **tol(np.float32, 10))
    np.testing.assert_allclose(got, want, **tol(np.float32, 10))
    assert 0 <= res["accuracy"] <= 1


def test_which_models_get_a_plan():
    lin = nn.Linear(4, 2)
    assert compiled.explain(lin) is None
    assert compiled.explain(nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.0), nn.ReLU(), nn.Linear(3, 2))) is None
    assert "no Linear layer" in compiled.explain(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()))
    assert "Conv1d" in compiled.explain(nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(2, 2)))
    assert "Dropout" in compiled.explain(nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5)))
    assert "does not follow" in compiled.explain(nn.Sequential(nn.ReLU(), nn.Linear(4, 2)))
    assert "does not follow" in compiled.explain(nn.Sequential(nn.Linear(4, 2), nn.ReLU(), nn.Tanh()))
    assert "shares" in compiled.explain(nn.Sequential(lin, nn.ReLU(), lin))
    assert "mix dtypes" in compiled.explain(nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2, dtype=np.float64)))
    model = nn.Sequential(nn.Linear(4, 2))
    other = nn.Linear(3, 3)
    assert "outside the model" in compiled.explain(model, nn.MSELoss(), optim.SGD(other.parameters()))
    subset = optim.SGD([model[0].weight])  # a frozen bias: allowed
    assert compiled.explain(model, nn.MSELoss(), subset) is None
    hooked = nn.MSELoss()
    hooked.forward = lambda out, target: 0.0  # a wrapper the plan would bypass
    assert "MSELoss.forward is replaced" in compiled.explain(model, hooked, subset)
    model[0].forward = lambda x: x
    assert "Linear.forward is replaced" in compiled.explain(model)


def test_fit_verbose_says_which_path(capsys):
    X, y = _data("cross_entropy", np.float32, n=40)
    with fastnn.use_backend("numpy"):
        fastnn.fit(_model(np.float32), X, y, epochs=1, progress=False, verbose=True)
    assert "one step per call (the numpy backend" in capsys.readouterr().out
    for name in ("cython", "numba"):
        if fastnn.backend_status()[name] == "available":
            with fastnn.use_backend(name):
                fastnn.fit(_model(np.float32), X, y, epochs=1, progress=False, verbose=True)
                assert "compiled training plan" in capsys.readouterr().out
                model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.Dropout(0.3))
                fastnn.fit(model, X, y, epochs=1, progress=False, verbose=True)
                assert "one step per call (layer 2 is a Dropout" in capsys.readouterr().out


def test_frozen_parameter_is_not_updated(compiled_backend):
    X, y = _data("mse", np.float32)
    model = _model(np.float32)
    frozen = model[0].bias.data.copy()
    params = [p for p in model.parameters() if p is not model[0].bias]
    fastnn.fit(model, X, y, optimizer=optim.Adam(params), epochs=1, progress=False)
    np.testing.assert_array_equal(model[0].bias.data, frozen)


def test_nonfinite_loss_stops_before_the_step(compiled_backend):
    """A diverging run stops at the same step, with the same weights, whatever the steps per call."""
    X, y = _data("mse", np.float32, n=160)
    seen = []
    for k in (1, 4, "auto"):
        model = _model(np.float32, nn.ReLU)
        opt = optim.SGD(model.parameters(), lr=1e4)
        with pytest.raises(fastnn.NonFiniteLossError, match=r"epoch \d+, samples \d+\.\.\d+: the loss is") as err:
            fastnn.fit(model, X, y, optimizer=opt, epochs=50, batch_size=16, shuffle=False, progress=False,
                       steps_per_call=k)  # fmt: skip
        seen.append((str(err.value), [p.data.copy() for p in model.parameters()]))
    for msg, weights in seen[1:]:
        assert msg == seen[0][0]
        for a, b in zip(weights, seen[0][1]):
            np.testing.assert_array_equal(a, b)


def test_run_steps_checks_and_reports(compiled_backend):
    X, y = _data("cross_entropy", np.float32, n=50)
    model = _model(np.float32)
    step = fastnn.make_train_step(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1))
    before = [p.data.copy() for p in model.parameters()]
    with pytest.raises(ValueError, match="step 2: index holds rows outside"):
        step.run_steps(X, y, np.array([0, 1, 2, 50, 4]), 3)
    # step 1 ran, step 2 did not
    after1 = [p.data.copy() for p in model.parameters()]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after1))
    with pytest.raises(ValueError, match="labels must lie in"):
        step.run_steps(X, np.where(np.arange(50) == 7, 9, y), np.arange(10), 5)
    with pytest.raises(TypeError, match="indices must be"):
        step.run_steps(X, y, np.array([0.5, 1.0]), 1)
    with pytest.raises(ValueError, match="batch_size"):
        step.run_steps(X, y, np.arange(4), 0)
    assert step.run_steps(X, y, np.arange(0), 4).shape == (0,)


def test_plan_checks_arrays():
    w = nn.Parameter(np.ones((3, 4), np.float32))
    plan = TrainPlan([DenseSpec(w, None)], "mse", "mean", optim.SGD([w])._plan, "sgd")
    X = np.ones((5, 4), np.float32)
    Y = np.ones((5, 3), np.float32)
    hyper = (0.1, 0, 0, 0, 0, 0)
    with pytest.raises(TypeError, match="C-contiguous"):
        plan.run(X.astype(np.float64), Y, np.arange(5), 2, hyper)
    with pytest.raises(TypeError, match="C-contiguous"):
        plan.run(np.asfortranarray(np.ones((5, 4), np.float32)), Y, np.arange(5), 2, hyper)
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        plan.run(np.ones((5, 2, 2), np.float32), Y, np.arange(5), 2, hyper)
    with pytest.raises(TypeError, match="targets"):
        plan.run(X, Y[:, :2].copy(), np.arange(5), 2, hyper)
    with pytest.raises(TypeError, match="index"):
        plan.run(X, Y, np.arange(5, dtype=np.int32), 2, hyper)
    with pytest.raises(ValueError, match="takes 2 inputs but layer 0 gives 3"):
        TrainPlan([DenseSpec(w, None), DenseSpec(nn.Parameter(np.ones((2, 2), np.float32)), None)])
    with pytest.raises(ValueError, match="unknown activation"):
        TrainPlan([DenseSpec(w, None, "gelu")])
    with pytest.raises(RuntimeError, match="only predict"):
        TrainPlan([DenseSpec(w, None)]).run(X, Y, np.arange(5), 2, hyper)


def test_plan_rebinds_replaced_arrays(compiled_backend):
    """Replacing a parameter's array (load_state_dict keeps them; assignment does not) takes effect."""
    X, y = _data("mse", np.float32)
    model = _model(np.float32)
    step = fastnn.make_train_step(model, nn.MSELoss(), optim.SGD(model.parameters(), lr=0.0))
    step.run_steps(X, y, np.arange(8), 8)
    model[0].weight.data = np.zeros_like(model[0].weight.data)
    model[0].weight.grad = np.zeros_like(model[0].weight.data)
    step.run_steps(X, y, np.arange(8), 8)
    assert np.all(model[0].weight.data == 0)
    with fastnn.no_grad():
        np.testing.assert_allclose(fastnn.predict(model, X), model(X), rtol=1e-5, atol=1e-6)


def test_concurrent_use(compiled_backend):
    """One plan trains in one thread at a time; predictions may run in many at once."""
    X, y = _data("cross_entropy", np.float32, n=4000)
    model = _model(np.float32)
    opt = optim.SGD(model.parameters(), lr=0.01)
    plan = compiled.train_plan(model, nn.CrossEntropyLoss(), opt)
    hyper = compiled.hyper_parameters(opt)[1]
    idx = np.tile(np.arange(4000), 20)
    plan.run(X, y, idx[:10], 5, hyper)  # bound before the threads start
    errors, started = [], threading.Event()

    def train():
        started.set()
        plan.run(X, y, idx, 8, hyper)

    t = threading.Thread(target=train)
    t.start()
    started.wait()
    for _ in range(200):
        try:
            plan.run(X, y, idx[:8], 8, hyper)
        except RuntimeError as exc:
            errors.append(str(exc))
            break
    t.join()
    assert not errors or "another thread" in errors[0]
    with fastnn.no_grad():
        want = model(X)
    outs = [None] * 4

    def pred(i):
        outs[i] = fastnn.predict(model, X, batch_size=100)

    threads = [threading.Thread(target=pred, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for o in outs:
        np.testing.assert_allclose(o, want, rtol=1e-5, atol=1e-6)


_COMPILE_OR_LOAD = """
    import hashlib, numpy as np, fastnn
    from fastnn import nn, optim
    fastnn.set_backend("numba")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((27, 12)).astype(np.float32)
    y = rng.integers(0, 4, 27)
    fastnn.manual_seed(3)
    model = nn.Sequential(nn.Linear(12, 9), nn.ReLU(), nn.Linear(9, 4))
    step = fastnn.make_train_step(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    assert step.compiled_plan()[0] is not None
    losses = step.run_steps(X, y, np.arange(27)[::-1].copy(), 16)  # 16 rows, then 11
    data = losses.tobytes() + b"".join(p.data.tobytes() for p in model.parameters())
    print("BITS", hashlib.sha1(data).hexdigest())
"""


@pytest.mark.slow
def test_numba_plan_bits_do_not_depend_on_compiling_or_loading(tmp_path):
    """A process that compiles the numba dense drivers and one that loads them from Numba's cache train to
    the same bits, a short last batch (11 rows) included.

    They did not while Numba's fastmath flags allowed reciprocals ("arcp"): LLVM turned a division into a
    multiplication in one compilation of the code and not in another, and a batch whose size is not a power of
    two ended in other last bits. Time budget: about 40 s on 2 cores (the first child compiles the driver into an
    empty cache, the second loads it).
    """
    _require_or_skip("numba")
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "numba-cache"), "FASTNN_NUMBA_BACKGROUND": "0"}
    runs = [run_isolated(_COMPILE_OR_LOAD, timeout=600, env=env) for _ in range(2)]
    bits = []
    for r in runs:
        r.assert_ok()
        bits.append([line for line in r.stdout.splitlines() if line.startswith("BITS ")])
    assert bits[0] and bits[0] == bits[1], bits


@pytest.mark.parametrize("backend_name", ["cython", "numba", "numpy"])
def test_hostile_indices_in_child(backend_name):
    """Huge, negative and boundary indices and labels reach the compiled loops: a ValueError, never a crash."""
    result = run_isolated(f"""
        import numpy as np, fastnn
        from fastnn import nn
        from plan_cases import check_hostile_input
        if fastnn.backend_status()["{backend_name}"] != "available":
            return
        fastnn.set_backend("{backend_name}")
        model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        check_hostile_input(model, np.ones((6, 3), np.float32), [(1, np.nan)])
    """)
    result.assert_ok()


def test_plan_follows_a_changed_model(compiled_backend):
    """A TrainStep built before the model changes trains the changed model (and says so when it has no plan)."""
    X, y = _data("mse", np.float32)
    fastnn.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 4))
    step = fastnn.make_train_step(model, nn.MSELoss(), optim.SGD(model.parameters(), lr=0.0))
    assert step.compiled_plan()[0] is not None
    model.append(nn.Dropout(0.5))
    assert "Dropout" in step.compiled_plan()[1]
    model[1] = nn.ReLU()
    plan, why = step.compiled_plan()
    assert why is None and plan.layers[0].activation == "relu"


def test_resume_mid_epoch_through_the_plan_is_bit_identical(compiled_backend, tmp_path, monkeypatch):
    """A run stopped between two calls of the plan and resumed from its checkpoint ends as the uninterrupted one."""
    import fastnn.train as train_mod

    X, y = _data("cross_entropy", np.float32, n=250)

    def run(path, resume=False):
        model = _model(np.float32)
        opt = optim.Adam(model.parameters(), lr=0.01)
        h = fastnn.fit(
            model, X, y, optimizer=opt, scheduler=optim.StepLR(opt, 1, 0.5), epochs=3, batch_size=16, seed=5,
            progress=False, checkpoint=path, checkpoint_every=4, resume=path if resume else None, steps_per_call=3,
        )  # fmt: skip
        return model, h

    full, h_full = run(tmp_path / "a.npz")
    real, calls = train_mod._run_plan, [0]

    def stopping(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 12:  # epoch 2, after its second checkpoint
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "_run_plan", stopping)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b.npz")
    monkeypatch.setattr(train_mod, "_run_plan", real)
    model, h = run(tmp_path / "b.npz", resume=True)
    for a, b in zip(full.parameters(), model.parameters()):
        np.testing.assert_array_equal(a.data, b.data)
    assert h.history == h_full.history and h.lr == h_full.lr


def _sklearn_plan_run(backend, dtype, loss, opt, alpha):
    """Losses and weights after 13 steps (one short last step) of a plan in scikit-learn's convention."""
    from fastnn import ops

    X, y = _data(loss, dtype)
    y = y.astype(np.intp) if loss == "cross_entropy" else y
    with fastnn.use_backend(backend):
        model = _model(dtype)
        lins = [m for m in model if isinstance(m, nn.Linear)]
        specs = [DenseSpec(lins[0].weight, lins[0].bias, "relu"), DenseSpec(lins[1].weight, lins[1].bias, "tanh")]
        specs.append(DenseSpec(lins[2].weight, lins[2].bias))
        params = [p for lin in lins for p in (lin.weight, lin.bias)]
        names = ("exp_avg", "exp_avg_sq") if opt == "adam" else ("velocity",)
        plan = TrainPlan(specs, loss, "sklearn", ops.UpdatePlan(params, names), "adam" if opt == "adam" else "sgd")
        hyper = (0.01, 0.9, 0.999, alpha, 1e-8, 0.0) if opt == "adam" else (0.05, 0.9, 1.0, alpha, 0.0, 0.0)
        idx = np.random.default_rng(1).permutation(X.shape[0])
        res = plan.run(X, y, idx, 16, hyper, step0=3)
        return res.losses.copy(), [p.data.copy() for p in params]


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_sklearn_reduction_matches_the_reference(compiled_backend, dtype, loss, opt):
    """scikit-learn's convention (reduction "sklearn") in each compiled backend is the reference's.

    The estimator-level checks (the compiled epochs against the per-step
    loop, and against scikit-learn itself) are in tests/test_sklearn_plan.py
    and tests/test_sklearn_fidelity.py.
    """
    for alpha in (0.0, 0.5):
        got_l, got_w = _sklearn_plan_run(compiled_backend, dtype, loss, opt, alpha)
        want_l, want_w = _sklearn_plan_run("numpy", dtype, loss, opt, alpha)
        t = tol(dtype, 50)
        np.testing.assert_allclose(got_l, want_l, **t)
        for a, b in zip(got_w, want_w):
            np.testing.assert_allclose(a, b, **t)


def test_sklearn_reduction_reference_is_scikit_learns_convention():
    """The reference's scikit-learn convention, written out for one SGD step of a single layer."""
    from fastnn import ops

    rng = np.random.default_rng(0)
    X = rng.standard_normal((5, 3))
    y = (rng.random((5, 2)) > 0.5).astype(np.float64)
    lin = nn.Linear(3, 2, dtype=np.float64, rng=0)
    w0, b0 = lin.weight.data.copy(), lin.bias.data.copy()
    alpha, lr = 0.3, 0.1
    with fastnn.use_backend("numpy"):
        plan = TrainPlan([DenseSpec(lin.weight, lin.bias)], "bce_with_logits", "sklearn",
                         ops.UpdatePlan([lin.weight, lin.bias]), "sgd")  # fmt: skip
        res = plan.run(X, y, np.arange(5), 5, (lr, 0.0, 0.0, alpha, 0.0, 0.0))
    p = 1 / (1 + np.exp(-(X @ w0.T + b0)))
    loss = -np.mean(np.sum(y * np.log(p) + (1 - y) * np.log(1 - p), axis=1)) + 0.5 * alpha * np.sum(w0**2) / 5
    np.testing.assert_allclose(res.losses[0], loss, rtol=1e-12)
    np.testing.assert_allclose(lin.weight.data, w0 - lr * (((p - y).T @ X) / 5 + alpha / 5 * w0), rtol=1e-12)
    np.testing.assert_allclose(lin.bias.data, b0 - lr * (p - y).sum(0) / 5, rtol=1e-12)  # no decay on the bias


@pytest.mark.parametrize("hidden,plan_runs", [(16, True), (400, False)])
def test_run_steps_gives_up_a_large_numba_plan_as_fit_does(monkeypatch, hidden, plan_runs):
    """run_steps keeps the per-step loop where fit does: the numba plan above NUMBA_PLAN_MAX_MACS
    (64 rows of 100-400-10: 2.8M multiply-adds a step); the cython plan runs whatever the size."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((128, 100)).astype(np.float32)
    y = rng.integers(0, 10, 128)
    calls = []
    real = fastnn.train._run_plan
    monkeypatch.setattr(fastnn.train, "_run_plan", lambda *a, **k: calls.append(1) or real(*a, **k))
    for backend, want in (("numba", plan_runs), ("cython", True)):
        try:
            ctx = fastnn.use_backend(backend)
            ctx.__enter__()
        except fastnn.BackendUnavailable:
            continue
        try:
            model = nn.Sequential(nn.Linear(100, hidden, rng=0), nn.ReLU(), nn.Linear(hidden, 10, rng=1))
            step = fastnn.make_train_step(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.01))
            assert step.compiled_plan()[0] is not None
            calls.clear()
            losses = step.run_steps(X, y, np.arange(128), 64)
        finally:
            ctx.__exit__(None, None, None)
        assert bool(calls) is want, backend
        assert losses.shape == (2,) and np.all(np.isfinite(losses))
