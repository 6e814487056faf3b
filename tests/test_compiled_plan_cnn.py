"""Compiled training plans with image stages in front (Conv2d, MaxPool2d, AvgPool2d, activations, Flatten).

What is checked:

* the Cython plan gives the per-step loop's bits (``model(x)``, loss,
  backward, step) for a small W5-shaped CNN with every optimizer, and for
  strided, dilated, padded and bias-free convolutions, average pooling and
  every activation with every loss, float32 and float64; the Numba plan
  gives its per-step loop's results to rounding; the NumPy specification
  gives its own per-step loop's bits, and both compiled plans agree with it
  to rounding;
* the number of steps per call and changing batch sizes change nothing (bit
  for bit), in ``run_steps`` and in ``fit`` (history included), on both;
* the float32 image-by-image path (each thread carries its images through
  every stage; per-thread weight-gradient partials added in a fixed order)
  on teams of 1, 2 and 3 threads, batches that are no multiple of the team
  and a last, smaller batch: the per-step loop's bits, the same bits run to
  run and split over calls, the NumPy specification to rounding; and the
  steps whose convolutions would take different teams run stage by stage;
* the Numba drivers on the register tiles and on the plain products (what
  runs while the tiled ones compile) give the same bits;
* a plan step's gradients against finite differences;
* ``predict`` and ``evaluate`` run the forward plan;
* which image models get a plan (the others say why);
* hostile indices, labels, NaN and infinite inputs stop the run with a
  Python exception, in a child process.
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
from fastnn.backends import tuning
from fastnn.gradcheck import numerical_gradient

NOUT = 5

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _w5(dtype, seed=3):
    """W5's shape, smaller: conv 3x3 pad 1, ReLU, max pool 2, twice, then Flatten and Linear."""
    fastnn.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, dtype=dtype), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1, dtype=dtype), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(6 * 3 * 3, NOUT, dtype=dtype),
    )  # fmt: skip


def _other(dtype, seed=3):
    """Strided, dilated and bias-free convolutions, average and overlapping max pooling, every activation."""
    fastnn.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, stride=2, dtype=dtype), nn.Tanh(),
        nn.AvgPool2d(2, padding=1, count_include_pad=False), nn.Sigmoid(),
        nn.ReLU(), nn.MaxPool2d(3, stride=1, padding=1),  # a ReLU the pooling after it does not take in
        nn.Conv2d(3, 4, 2, dilation=2, bias=False, dtype=dtype), nn.LeakyReLU(0.1),
        nn.AvgPool2d(1), nn.Flatten(), nn.Linear(4, 6, dtype=dtype), nn.ReLU(), nn.Linear(6, NOUT, dtype=dtype),
    )  # fmt: skip


MODELS = {"w5": (_w5, 1), "other": (_other, 2)}


def _data(loss, dtype, channels=1, n=37, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, channels, 12, 12)).astype(dtype)
    return X, targets(rng, loss, n, NOUT, dtype)


def _train(backend, name, dtype, loss, opt, force_loop=False, calls=None):
    """Losses, weights and plan after run_steps over one shuffled pass, batches of 8 (the last one 5 rows)."""
    make, channels = MODELS[name]
    X, y = _data(loss, dtype, channels)
    return run_steps(backend, lambda: make(dtype), X, y, loss, opt, 8, force_loop, calls)


def _close(a, b, dtype):
    assert_close(a, b, dtype, 100)


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
@pytest.mark.parametrize("backend_name", PLAN_BACKENDS)
def test_plan_is_the_per_step_loop(backend_name, opt, dtype):
    """W5's shape: the per-step loop (cython: its bits); the NumPy specification to rounding."""
    require(backend_name)
    plan = _train(backend_name, "w5", dtype, "cross_entropy", opt)
    assert plan[2] is not None
    loop = _train(backend_name, "w5", dtype, "cross_entropy", opt, force_loop=True)
    assert_is_the_loop(plan, loop, backend_name, dtype, 100)
    _close(plan, _train("numpy", "w5", dtype, "cross_entropy", opt), dtype)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("backend_name", PLAN_BACKENDS)
def test_other_stages_and_losses(backend_name, loss, dtype):
    require(backend_name)
    plan = _train(backend_name, "other", dtype, loss, "adam")
    assert plan[2] is not None
    loop = _train(backend_name, "other", dtype, loss, "adam", force_loop=True)
    assert_is_the_loop(plan, loop, backend_name, dtype, 100)
    _close(plan, _train("numpy", "other", dtype, loss, "adam"), dtype)


def _teams(threads, min_work, fn):
    """fn() with the team set to `threads` and conv_parallel_min_work at min_work."""
    threads0 = fastnn.get_num_threads()
    fastnn.set_num_threads(threads)
    try:
        with tuning.override(conv_parallel_min_work=min_work):
            return fn()
    finally:
        fastnn.set_num_threads(threads0)


def _by_image_steps(run):
    """The training steps of a run (of _train) whose stages ran image by image."""
    return run[2]._bound[2].by_image_steps


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
def test_image_by_image_on_teams(threads, opt, dtype):
    """Every convolution on the whole team (no work threshold): batches of 8 and a last one of 5 (no
    multiple of 2 or 3). float32 runs every step image by image, float64 stage by stage; both give the
    per-step loop's bits (the same blocks of images per thread, the partials added in the same order),
    the same bits again and over several calls, and the NumPy specification's values to rounding."""
    pytest.importorskip("fastnn._ext._kernels")

    def runs():
        return (
            _train("cython", "w5", dtype, "cross_entropy", opt),
            _train("cython", "w5", dtype, "cross_entropy", opt, force_loop=True),
            _train("cython", "w5", dtype, "cross_entropy", opt),
            _train("cython", "w5", dtype, "cross_entropy", opt, calls=[(16, 8), (8, 8), (13, 8)]),
        )

    plan, loop, again, split = _teams(threads, 0, runs)
    assert _by_image_steps(plan) == (5 if dtype == np.float32 else 0)
    assert_same(plan, loop)
    assert_same(plan, again)
    assert_same(plan, split)
    _close(plan, _train("numpy", "w5", dtype, "cross_entropy", opt), dtype)


def test_convolutions_on_different_teams_run_stage_by_stage():
    """A work threshold between the two convolutions' backward work (12672 and 20736 element operations
    for 8 images, 7920 and 12960 for 5): in the batches of 8 only the second would run on two threads, so
    those steps run stage by stage; the last batch (both on one thread) runs image by image. The loop's
    bits either way."""
    pytest.importorskip("fastnn._ext._kernels")

    def runs():
        return (
            _train("cython", "w5", np.float32, "mse", "sgd_momentum"),
            _train("cython", "w5", np.float32, "mse", "sgd_momentum", force_loop=True),
        )

    plan, loop = _teams(2, 16000, runs)
    assert _by_image_steps(plan) == 1
    assert_same(plan, loop)


@pytest.mark.parametrize("threads", [1, 2])
def test_winograd_convolutions_run_stage_by_stage(threads):
    """Both of W5's convolutions on Winograd F(2x2, 3x3) (the channel threshold lowered to 1): the plan
    runs every step stage by stage on the kernels of the per-step loop, so it gives the loop's bits,
    and the NumPy specification's values to rounding."""
    pytest.importorskip("fastnn._ext._kernels")

    def runs():
        with tuning.override(conv_winograd_min_channels=1):
            return (
                _train("cython", "w5", np.float32, "cross_entropy", "adam"),
                _train("cython", "w5", np.float32, "cross_entropy", "adam", force_loop=True),
            )

    plan, loop = _teams(threads, 0, runs)
    assert _by_image_steps(plan) == 0
    assert_same(plan, loop)
    _close(plan, _train("numpy", "w5", np.float32, "cross_entropy", "adam"), np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_numba_tiled_and_plain_drivers_give_the_same_bits(name, monkeypatch):
    """The image driver on the register tiles, and on the plain products that run while it compiles."""
    require("numba")
    from fastnn.backends.numba_backend import _train_front

    runs = []
    for which in ("fallback", "fast"):
        monkeypatch.setattr(_train_front, "IMAGE", tuple(getattr(d, which) for d in _train_front.IMAGE))
        runs.append(_train("numba", name, np.float32, "mse", "adam"))
        monkeypatch.undo()
    assert_same(runs[0], runs[1])


def _bits(a):
    return a.view(np.int32 if a.dtype == np.float32 else np.int64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_relu_pooling_keeps_ties_zeros_and_nan(dtype):
    """ReLU + 2x2 max pooling run as one pass in the plan: windows of ties, negative and signed-zero values
    and NaN give the per-step loop's bits, signs of zeros included."""
    pytest.importorskip("fastnn._ext._kernels")
    X, y = _data("mse", dtype, n=16)
    X[:, :, ::2] = -0.0  # rows of signed zeros, and windows of equal values
    X[3, 0, 5, 5] = np.nan
    runs = []
    for force in (False, True):
        with fastnn.use_backend("cython"):
            model = _w5(dtype)
            model[0].weight.data[:4] = 0  # outputs of some channels: the bias alone (ties; negative ones)
            model[0].bias.data[:] = [-0.5, 0.0, 0.3, -0.0]
            step = fastnn.make_train_step(model, nn.MSELoss(), optim.SGD(model.parameters(), lr=0.01))
            if force:
                step.compiled_plan = lambda: (None, "forced")
            losses = step.run_steps(X[:3], y[:3], np.arange(3), 3)  # the NaN sample stays out of training
            with fastnn.no_grad():
                out = fastnn.predict(model, X) if not force else model(X)
            runs.append((losses, [p.grad.copy() for p in model.parameters()], out))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_array_equal(_bits(a), _bits(b))
    np.testing.assert_array_equal(_bits(runs[0][2]), _bits(runs[1][2]))  # NaN in the same places


@pytest.mark.parametrize("name", sorted(MODELS))
def test_reference_spec_is_the_per_step_loop(name, dtype):
    """The NumPy ``train_steps`` with image stages gives the NumPy per-step loop's bits."""
    make, channels = MODELS[name]
    X, y = _data("mse", dtype, channels)
    idx = np.random.default_rng(1).permutation(X.shape[0])
    out = []
    for use_plan in (True, False):
        with fastnn.use_backend("numpy"):
            model = make(dtype)
            opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
            if use_plan:
                plan = compiled.train_plan(model, nn.MSELoss(), opt)
                losses = plan.run(X, y, idx, 8, compiled.hyper_parameters(opt)[1]).losses
            else:
                losses = fastnn.make_train_step(model, nn.MSELoss(), opt).run_steps(X, y, idx, 8)
            out.append((np.array(losses), [p.data.copy() for p in model.parameters()]))
    assert_same(out[0], out[1])


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("backend_name", PLAN_BACKENDS)
def test_steps_per_call_and_changing_batches(backend_name, name):
    require(backend_name)
    calls = [(8, 8), (10, 5), (19, 19)]
    loop = _train(backend_name, name, np.float32, "mse", "nesterov", force_loop=True, calls=calls)
    plan = _train(backend_name, name, np.float32, "mse", "nesterov", calls=calls)
    assert_is_the_loop(plan, loop, backend_name, np.float32, 100)
    assert_same(
        _train(backend_name, name, np.float32, "mse", "adam", calls=[(4, 4)] * 9),
        _train(backend_name, name, np.float32, "mse", "adam", calls=[(36, 4)]),
    )


@pytest.mark.parametrize("backend_name", PLAN_BACKENDS)
def test_fit_steps_per_call(backend_name):
    """fit with 1, 3 and "auto" steps per call: same weights and history; the per-step loop to rounding."""
    require(backend_name)
    X, y = _data("cross_entropy", np.float32, n=50)
    results = []
    with fastnn.use_backend(backend_name):
        for k in (1, 3, "auto", None):
            model = _w5(np.float32)
            o = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
            sched = optim.StepLR(o, step_size=1, gamma=0.5)
            h = fastnn.fit(
                model, X, y, optimizer=o, scheduler=sched, epochs=2, batch_size=8, seed=4, progress=False,
                validation_data=(X[:20], y[:20]), steps_per_call=k or 1,
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


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("backend_name", PLAN_BACKENDS)
def test_plan_gradients_against_finite_differences(backend_name, name, loss):
    """With lr = 0 a plan step writes the gradients and leaves the weights: compare with finite differences."""
    require(backend_name)
    dtype = np.float64
    make, channels = MODELS[name]
    X, y = _data(loss, dtype, channels, n=6)
    with fastnn.use_backend(backend_name):
        model = make(dtype)
        lossfn = loss_fn(loss)
        opt = optim.SGD(model.parameters(), lr=0.0)
        plan = compiled.train_plan(model, lossfn, opt)
        plan.run(X, y, np.arange(6, dtype=np.intp), 6, compiled.hyper_parameters(opt)[1])

    def f():
        with fastnn.use_backend("numpy"):
            return lossfn(model(X), y)

    for p in model.parameters():
        num = numerical_gradient(f, p.data, eps=1e-6)
        np.testing.assert_allclose(p.grad, num, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("backend_name", PLAN_BACKENDS)
def test_predict_and_evaluate_use_the_forward_plan(backend_name, name, dtype):
    require(backend_name)
    make, channels = MODELS[name]
    X, y = _data("cross_entropy", dtype, channels, n=150)
    with fastnn.use_backend(backend_name):
        model = make(dtype)
        assert compiled.explain(model) is None
        got = fastnn.predict(model, X, batch_size=64)
        with fastnn.no_grad():
            want = model(X[:64])
        if backend_name == "cython":
            np.testing.assert_array_equal(got[:64], want)  # the same routines: the same bits
        else:
            np.testing.assert_allclose(got[:64], want, **tol(dtype, 10))
        res = fastnn.evaluate(model, X, y, batch_size=64)
        assert fastnn.train._forward_plan(model, X[:, :, :5]) is None  # too small for the stages
    with fastnn.use_backend("numpy"):
        ref = fastnn.evaluate(model, X, y, batch_size=64)
        np.testing.assert_allclose(fastnn.predict(model, X, batch_size=64), got, **tol(dtype, 10))
    assert res["accuracy"] == ref["accuracy"]
    np.testing.assert_allclose(res["loss"], ref["loss"], rtol=1e-5)


def test_which_image_models_get_a_plan():
    dt = np.float32
    with fastnn.use_backend("numpy"):  # which models qualify does not depend on a compiled backend
        assert compiled.explain(_w5(dt)) is None
        no_flatten = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
        assert "not followed by Flatten" in compiled.explain(no_flatten)
        norm = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2, 2))
        assert "layer 1 is a BatchNorm2d between image stages" in compiled.explain(norm)
        drop = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Dropout(0.0), nn.Flatten(), nn.Linear(2, 2))
        assert compiled.explain(drop) is None
        later = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.Conv2d(1, 2, 3))
        assert "layer 2 is a Conv2d" in compiled.explain(later)
        mixed = nn.Sequential(nn.Conv2d(1, 2, 3, dtype=np.float64), nn.Flatten(), nn.Linear(2, 2))
        assert "mix dtypes" in compiled.explain(mixed)
        conv = nn.Conv2d(1, 2, 3)
        shared = nn.Sequential(conv, nn.ReLU(), conv, nn.Flatten(), nn.Linear(2, 2))
        assert "shares its parameters" in compiled.explain(shared)
        plan = compiled.forward_plan(_w5(dt))
        assert plan.accepts((3, 1, 12, 12)) and not plan.accepts((3, 1, 16, 12)) and not plan.accepts((3, 144))
    for name in PLAN_BACKENDS:
        if fastnn.backend_status()[name] == "available":
            with fastnn.use_backend(name):
                assert compiled.explain(_w5(dt)) is None


@pytest.mark.parametrize("backend_name", PLAN_BACKENDS)
def test_run_checks_images(backend_name):
    require(backend_name)
    X, y = _data("mse", np.float32, n=12)
    with fastnn.use_backend(backend_name):
        model = _w5(np.float32)
        opt = optim.SGD(model.parameters(), lr=0.1)
        plan = compiled.train_plan(model, nn.MSELoss(), opt)
        hyper = compiled.hyper_parameters(opt)[1]
        with pytest.raises(ValueError, match=r"x must hold images \(N, C, H, W\)"):
            plan.run(X.reshape(12, -1), y, np.arange(12), 4, hyper)
        with pytest.raises(ValueError, match="layer 0 takes 54"):
            plan.run(np.ones((12, 1, 16, 16), np.float32), y, np.arange(12), 4, hyper)
        with pytest.raises(ValueError, match="channels|weight"):
            plan.run(np.ones((12, 2, 12, 12), np.float32), y, np.arange(12), 4, hyper)
        with pytest.raises(ValueError, match="step 2: index holds rows outside"):
            plan.run(X, y, np.array([0, 1, 12, 3]), 2, hyper)


@pytest.mark.parametrize("backend_name", [*PLAN_BACKENDS, "numpy"])
def test_hostile_input_in_child(backend_name):
    """Bad indices and labels, NaN and infinite images reach the image plan's loop: an exception, never a crash."""
    result = run_isolated(f"""
        import numpy as np, fastnn
        from fastnn import nn
        from plan_cases import check_hostile_input
        if fastnn.backend_status()["{backend_name}"] != "available":
            return
        fastnn.set_backend("{backend_name}")
        model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.AvgPool2d(2),
                              nn.Flatten(), nn.Linear(2 * 2 * 2, 2))
        check_hostile_input(model, np.ones((6, 1, 8, 8), np.float32), [((1, 0, 3, 3), np.nan), ((1, 0, 3, 3), np.inf)])
    """)
    result.assert_ok()


def test_fit_keeps_the_loop_for_a_numba_image_plan(capsys):
    """fit gives the numba image plan up (no faster than the loop's parallel kernels) and says why;
    run_steps still runs it; the cython plan runs in fit."""
    require("numba")
    X, y = _data("cross_entropy", np.float32)
    with fastnn.use_backend("numba"):
        model = _w5(np.float32)
        fastnn.fit(model, X, y, epochs=1, batch_size=8, progress=False, verbose=True)
        assert "one step per call (the numba backend's image plan" in capsys.readouterr().out
        step = fastnn.make_train_step(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.01))
        assert step.compiled_plan()[0] is not None
    if fastnn.backend_status()["cython"] == "available":
        with fastnn.use_backend("cython"):
            fastnn.fit(_w5(np.float32), X, y, epochs=1, batch_size=8, progress=False, verbose=True)
            assert "compiled training plan" in capsys.readouterr().out
