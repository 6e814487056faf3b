"""Compiled training plans with a recurrent layer in front (RNN, LSTM, GRU + LastTimeStep + dense layers).

What is checked:

* the Cython plan gives the per-step loop's bits (``model(x)``, loss,
  backward, step) for the RNN (tanh and ReLU), the LSTM and the GRU, with
  every optimizer, every loss, float32 and float64, with and without biases;
  the Numba plan gives its per-step loop's results to rounding; the NumPy
  specification gives the per-step loop's bits too, and both compiled plans
  agree with it to rounding;
* the number of steps per call, and batch sizes or sequence lengths that
  change between calls, change nothing (bit for bit), in ``run_steps`` and
  in ``fit`` (history included), on both;
* the Numba drivers on the register tiles and on the plain products (what
  runs while the tiled ones compile) give the same bits;
* a plan step's gradients against finite differences;
* ``predict`` and ``evaluate`` run the forward plan, with the layers' results;
* which recurrent models get a plan (the others say why);
* hostile indices, labels and NaN losses stop the run with a Python
  exception, in a child process.
"""

import numpy as np
import pytest
from conftest import tol
from isolated import run_isolated
from plan_cases import (
    LOSSES,
    OPTIMIZERS,
    PLAN_BACKENDS,
    assert_close,
    assert_is_the_loop,
    assert_same,
    loss_fn,
    require,
    run_steps,
    targets,
)

import fastnn
from fastnn import compiled, nn, optim
from fastnn.gradcheck import numerical_gradient

CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru")
T, I, H, NOUT = 6, 5, 11, 3


def _recurrent(cell, dtype, bias=True, batch_first=True, **kw):
    args = dict(batch_first=batch_first, dtype=dtype, bias=bias, **kw)
    if cell.startswith("rnn"):
        return nn.RNN(I, H, nonlinearity=cell[4:] or "tanh", **args)
    return (nn.LSTM if cell == "lstm" else nn.GRU)(I, H, **args)


def _model(cell, dtype, bias=True, seed=3):
    fastnn.manual_seed(seed)
    return nn.Sequential(
        _recurrent(cell, dtype, bias), nn.LastTimeStep(batch_first=True),
        nn.Linear(H, 7, dtype=dtype), nn.Tanh(), nn.Linear(7, NOUT, dtype=dtype),
    )  # fmt: skip


def _data(loss, dtype, n=53, steps=T, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, steps, I)).astype(dtype)
    return X, targets(rng, loss, n, NOUT, dtype)


def _train(backend, cell, dtype, loss, opt, force_loop=False, bias=True, calls=None):
    """Losses, weights and plan after run_steps over one shuffled pass, batches of 16 (the last one 5 rows).

    ``calls``: a list of (rows, batch_size) run one call each instead.
    """
    X, y = _data(loss, dtype)
    return run_steps(backend, lambda: _model(cell, dtype, bias), X, y, loss, opt, 16, force_loop, calls)


def _close(a, b, dtype):
    assert_close(a, b, dtype, 50)


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("backend_name", PLAN_BACKENDS)
def test_plan_is_the_per_step_loop(backend_name, cell, opt, dtype):
    """The per-step loop (cython: its bits, the same routines in the same order); the NumPy spec to rounding."""
    require(backend_name)
    plan = _train(backend_name, cell, dtype, "cross_entropy", opt)
    assert plan[2] is not None
    loop = _train(backend_name, cell, dtype, "cross_entropy", opt, force_loop=True)
    assert_is_the_loop(plan, loop, backend_name, dtype, 50)
    _close(plan, _train("numpy", cell, dtype, "cross_entropy", opt), dtype)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("backend_name", PLAN_BACKENDS)
def test_losses_and_no_bias(backend_name, cell, loss, dtype):
    require(backend_name)
    for bias in (True, False):
        plan = _train(backend_name, cell, dtype, loss, "adam", bias=bias)
        loop = _train(backend_name, cell, dtype, loss, "adam", bias=bias, force_loop=True)
        assert_is_the_loop(plan, loop, backend_name, dtype, 50)
        _close(plan, _train("numpy", cell, dtype, loss, "adam", bias=bias), dtype)


@pytest.mark.slow
@pytest.mark.parametrize("cell", CELLS)
def test_numba_tiled_and_plain_drivers_give_the_same_bits(cell, monkeypatch):
    """The recurrent driver on the register tiles, and on the plain products that run while it compiles."""
    require("numba")
    from fastnn.backends.numba_backend import _train_front

    runs = []
    for which in ("fallback", "fast"):
        pairs = tuple(tuple(getattr(d, which) for d in pair) for pair in _train_front.RECURRENT)
        monkeypatch.setattr(_train_front, "RECURRENT", pairs)
        runs.append(_train("numba", cell, np.float32, "mse", "adam"))
        monkeypatch.undo()
    assert_same(runs[0], runs[1])


@pytest.mark.parametrize("cell", CELLS)
def test_reference_spec_is_the_per_step_loop(cell, dtype):
    """The NumPy ``train_steps`` with a recurrent front gives the NumPy per-step loop's bits."""
    X, y = _data("mse", dtype)
    idx = np.random.default_rng(1).permutation(X.shape[0])
    out = []
    for use_plan in (True, False):
        with fastnn.use_backend("numpy"):
            model = _model(cell, dtype)
            opt = optim.Adam(model.parameters(), lr=0.01)
            if use_plan:
                plan = compiled.train_plan(model, nn.MSELoss(), opt)
                losses = plan.run(X, y, idx, 16, compiled.hyper_parameters(opt)[1]).losses
            else:
                losses = fastnn.make_train_step(model, nn.MSELoss(), opt).run_steps(X, y, idx, 16)
            out.append((np.array(losses), [p.data.copy() for p in model.parameters()]))
    assert_same(out[0], out[1])


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("backend_name", PLAN_BACKENDS)
def test_steps_per_call_and_changing_batches(backend_name, cell):
    """One step per call, all in one call, and calls of changing batch sizes: the same bits (cython: the loop's)."""
    require(backend_name)
    calls = [(16, 16), (10, 5), (27, 9)]  # the batch size (the sequence layout) changes between calls
    loop = _train(backend_name, cell, np.float32, "mse", "nesterov", force_loop=True, calls=calls)
    plan = _train(backend_name, cell, np.float32, "mse", "nesterov", calls=calls)
    assert_is_the_loop(plan, loop, backend_name, np.float32, 50)
    one_by_one = [(1, 1)] * 20
    assert_same(
        _train(backend_name, cell, np.float32, "mse", "sgd", calls=one_by_one),
        _train(backend_name, cell, np.float32, "mse", "sgd", calls=[(20, 1)]),
    )


@pytest.mark.parametrize("backend_name", PLAN_BACKENDS)
def test_sequence_length_may_change_between_calls(backend_name):
    require(backend_name)
    results = []
    for force in (False, True):
        with fastnn.use_backend(backend_name):
            model = _model("lstm", np.float64)
            step = fastnn.make_train_step(model, nn.MSELoss(), optim.Adam(model.parameters()))
            if force:
                step.compiled_plan = lambda: (None, "forced")
            losses = [step.run_steps(*_data("mse", np.float64, n=20, steps=s, seed=s), np.arange(20), 8)
                      for s in (6, 2, 9, 6)]  # fmt: skip
            results.append((np.concatenate(losses), [p.data.copy() for p in model.parameters()]))
    assert_is_the_loop(results[0], results[1], backend_name, np.float64, 50)


@pytest.mark.parametrize("opt", ["sgd_momentum", "adamw"])
@pytest.mark.parametrize("backend_name", PLAN_BACKENDS)
def test_fit_steps_per_call(backend_name, opt):
    """fit with 1, 4 and "auto" steps per call: same weights and history, with a schedule and validation."""
    require(backend_name)
    X, y = _data("cross_entropy", np.float32, n=90)
    results = []
    with fastnn.use_backend(backend_name):
        for k in (1, 4, "auto", None):
            model = _model("gru", np.float32)
            o = OPTIMIZERS[opt](model.parameters())
            sched = optim.StepLR(o, step_size=1, gamma=0.5)
            h = fastnn.fit(
                model, X, y, optimizer=o, scheduler=sched, epochs=2, batch_size=16, seed=4, progress=False,
                validation_data=(X[:30], y[:30]), steps_per_call=k or 1,
                clip_grad_norm=1e30 if k is None else None,  # None: the per-step loop (clipping never bites)
            )  # fmt: skip
            results.append((h.history, [p.data.copy() for p in model.parameters()]))
    for hist, weights in results[1:3]:
        assert hist == results[0][0]
        for a, b in zip(weights, results[0][1]):
            np.testing.assert_array_equal(a, b)
    hist, weights = results[3]
    for key in hist:
        np.testing.assert_allclose(hist[key], results[0][0][key], rtol=1e-5)
    for a, b in zip(weights, results[0][1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("backend_name", PLAN_BACKENDS)
def test_plan_gradients_against_finite_differences(backend_name, cell, loss):
    """With lr = 0 a plan step writes the gradients and leaves the weights: compare with finite differences."""
    require(backend_name)
    dtype = np.float64
    X, y = _data(loss, dtype, n=7)
    with fastnn.use_backend(backend_name):
        model = _model(cell, dtype)
        lossfn = loss_fn(loss)
        opt = optim.SGD(model.parameters(), lr=0.0)
        plan = compiled.train_plan(model, lossfn, opt)
        plan.run(X, y, np.arange(7, dtype=np.intp), 7, compiled.hyper_parameters(opt)[1])

    def f():
        with fastnn.use_backend("numpy"):
            return lossfn(model(X), y)

    for p in model.parameters():
        num = numerical_gradient(f, p.data, eps=1e-6)
        np.testing.assert_allclose(p.grad, num, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("backend_name", PLAN_BACKENDS)
def test_predict_and_evaluate_use_the_forward_plan(backend_name, cell, dtype):
    require(backend_name)
    X, y = _data("cross_entropy", dtype, n=203)
    with fastnn.use_backend(backend_name):
        model = _model(cell, dtype)
        assert compiled.explain(model) is None
        got = fastnn.predict(model, X, batch_size=64)
        with fastnn.no_grad():
            want = model(X[:64])
        if backend_name == "cython":
            np.testing.assert_array_equal(got[:64], want)  # the same routines: the same bits
        else:
            np.testing.assert_allclose(got[:64], want, **tol(dtype, 10))
        with fastnn.no_grad():
            want = model(X)
        np.testing.assert_allclose(got, want, **tol(dtype, 10))
        res = fastnn.evaluate(model, X, y, batch_size=64)
    with fastnn.use_backend("numpy"):
        ref = fastnn.evaluate(model, X, y, batch_size=64)
        np.testing.assert_allclose(fastnn.predict(model, X, batch_size=64), got, **tol(dtype, 10))
    assert res["accuracy"] == ref["accuracy"]
    np.testing.assert_allclose(res["loss"], ref["loss"], rtol=1e-5)


def test_which_recurrent_models_get_a_plan():
    dt = np.float32
    head = (nn.LastTimeStep(batch_first=True), nn.Linear(H, 2))
    with fastnn.use_backend("numpy"):  # which models qualify does not depend on a compiled backend
        assert compiled.explain(nn.Sequential(_recurrent("gru", dt), *head)) is None
        deep = nn.Sequential(_recurrent("lstm", dt, num_layers=2), *head)
        assert "several layers or directions" in compiled.explain(deep)
        bidir = nn.Sequential(_recurrent("rnn_tanh", dt, bidirectional=True), nn.LastTimeStep(batch_first=True),
                              nn.Linear(2 * H, 2))  # fmt: skip
        assert "several layers or directions" in compiled.explain(bidir)
        time_major = nn.Sequential(_recurrent("rnn_tanh", dt, batch_first=False), nn.LastTimeStep(), nn.Linear(H, 2))
        assert "batch_first=False" in compiled.explain(time_major)
        assert "not followed by LastTimeStep" in compiled.explain(nn.Sequential(_recurrent("gru", dt), nn.Linear(H, 2)))
        wrong_axis = nn.Sequential(_recurrent("gru", dt), nn.LastTimeStep(), nn.Linear(H, 2))
        assert "not followed by LastTimeStep(batch_first=True)" in compiled.explain(wrong_axis)
        state = nn.Sequential(_recurrent("gru", dt, return_state=True), *head)
        assert "return_state" in compiled.explain(state)
        later = nn.Sequential(nn.Linear(I, I), _recurrent("gru", dt), *head)
        assert "layer 1 is a GRU" in compiled.explain(later)
        mixed = nn.Sequential(_recurrent("gru", np.float64), *head)
        assert "mix dtypes" in compiled.explain(mixed)
        conv_after = nn.Sequential(_recurrent("gru", dt), *head[:1], nn.Conv2d(1, 2, 3))
        assert "layer 2 is a Conv2d" in compiled.explain(conv_after)
    for name in PLAN_BACKENDS:
        if fastnn.backend_status()[name] == "available":
            with fastnn.use_backend(name):
                model = nn.Sequential(_recurrent("gru", dt), *head)
                assert compiled.explain(model) is None
                step = fastnn.make_train_step(model, nn.MSELoss(), optim.SGD(model.parameters()))
                assert step.compiled_plan()[0] is not None
            with fastnn.use_backend("numpy"):  # the cached answer follows the backend: the reference has none
                assert step.compiled_plan()[0] is None


def test_fit_verbose_names_the_plan(capsys):
    pytest.importorskip("fastnn._ext._kernels")
    X, y = _data("cross_entropy", np.float32, n=40)
    with fastnn.use_backend("cython"):
        fastnn.fit(_model("lstm", np.float32), X, y, epochs=1, progress=False, verbose=True)
    assert "compiled training plan" in capsys.readouterr().out


@pytest.mark.parametrize("backend_name", PLAN_BACKENDS)
def test_run_checks_sequences(backend_name):
    require(backend_name)
    X, y = _data("mse", np.float32, n=12)
    with fastnn.use_backend(backend_name):
        model = _model("rnn_tanh", np.float32)
        opt = optim.SGD(model.parameters(), lr=0.1)
        plan = compiled.train_plan(model, nn.MSELoss(), opt)
        hyper = compiled.hyper_parameters(opt)[1]
        with pytest.raises(ValueError, match=r"x must have shape \(N, T, 5\)"):
            plan.run(X.reshape(12, -1), y, np.arange(12), 4, hyper)
        with pytest.raises(ValueError, match=r"x must have shape \(N, T, 5\)"):
            plan.run(np.ones((12, 0, I), np.float32), y, np.arange(12), 4, hyper)
        with pytest.raises(ValueError, match="step 2: index holds rows outside"):
            plan.run(X, y, np.array([0, 1, 12, 3]), 2, hyper)
        assert not fastnn.compiled.forward_plan(model).accepts((12, 3, I + 1))


@pytest.mark.parametrize("backend_name", [*PLAN_BACKENDS, "numpy"])
def test_hostile_input_in_child(backend_name):
    """Bad indices and labels and a NaN loss reach the recurrent plan's loop: an exception, never a crash."""
    result = run_isolated(f"""
        import numpy as np, fastnn
        from fastnn import nn
        from plan_cases import check_hostile_input
        if fastnn.backend_status()["{backend_name}"] != "available":
            return
        fastnn.set_backend("{backend_name}")
        for rec in (nn.RNN(3, 4, batch_first=True), nn.LSTM(3, 4, batch_first=True), nn.GRU(3, 4, batch_first=True)):
            model = nn.Sequential(rec, nn.LastTimeStep(batch_first=True), nn.Linear(4, 2))
            check_hostile_input(model, np.ones((6, 5, 3), np.float32), [((1, 2), np.nan)])
    """)
    result.assert_ok()
