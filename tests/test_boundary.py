"""The boundary between layers and kernels: fresh outputs, workspaces, threads, parameters.

* every array a layer, loss or ``predict`` returns belongs to the caller,
  unless a workspace is active;
* inference on one model from several threads gives the serial results;
* training one model from two threads at once is refused;
* parameters behave like read-only arrays, and optimizers never replace them;
* ``backward(..., accumulate=True)`` adds gradients up.
"""

import pickle
import threading

import numpy as np
import pytest
from conftest import tol
from isolated import run_isolated

import fastnn
from fastnn import nn, optim


def _mlp(dtype=np.float32):
    return nn.Sequential(
        nn.Linear(6, 16, dtype=dtype), nn.ReLU(), nn.Linear(16, 8, dtype=dtype), nn.Tanh(), nn.Linear(8, 3, dtype=dtype)
    )


def _cnn(dtype=np.float32):
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, dtype=dtype),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, dtype=dtype),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(4, 3, dtype=dtype),
    )


def _lstm(dtype=np.float32):
    return nn.Sequential(
        nn.LSTM(5, 7, batch_first=True, dtype=dtype), nn.LastTimeStep(batch_first=True), nn.Linear(7, 3, dtype=dtype)
    )


_MODELS = {"mlp": (_mlp, (6,)), "cnn": (_cnn, (1, 8, 8)), "lstm": (_lstm, (4, 5))}


def _inputs(kind, rng, n, batch=5, dtype=np.float32):
    shape = _MODELS[kind][1]
    return [rng.standard_normal((batch,) + shape).astype(dtype) for _ in range(n)]


# ---------------------------------------------------------------- fresh outputs


@pytest.mark.parametrize("kind", sorted(_MODELS))
def test_consecutive_calls_return_distinct_correct_arrays(backend, kind, rng):
    fastnn.manual_seed(0)
    model = _MODELS[kind][0]()
    xs = _inputs(kind, rng, 3)
    outs = [model(x) for x in xs]
    assert len({id(o) for o in outs}) == 3
    for x, y in zip(xs, outs):
        np.testing.assert_array_equal(y, model(x))
    grads = []
    for x in xs:
        model(x)
        grads.append(model.backward(np.ones((5, 3), np.float32)))
    assert len({id(g) for g in grads}) == 3
    preds = [fastnn.predict(model, x) for x in xs]
    assert not np.shares_memory(preds[0], preds[1])


def test_every_layer_returns_new_arrays(rng):
    x4 = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    x2 = rng.standard_normal((3, 4)).astype(np.float32)
    x3 = rng.standard_normal((4, 3, 2)).astype(np.float32)
    cases = [
        (nn.Linear(4, 5), x2),
        (nn.ReLU(), x2),
        (nn.LeakyReLU(), x2),
        (nn.Sigmoid(), x2),
        (nn.Tanh(), x2),
        (nn.Softmax(), x2),
        (nn.Conv2d(2, 3, 3), x4),
        (nn.MaxPool2d(2), x4),
        (nn.AvgPool2d(2), x4),
        (nn.RNN(2, 3), x3),
        (nn.LSTM(2, 3), x3),
        (nn.GRU(2, 3), x3),
    ]
    for layer, x in cases:
        a = layer(x)
        ga = layer.backward(np.ones_like(a))
        a_copy, ga_copy = a.copy(), ga.copy()
        b = layer(x * 2)
        gb = layer.backward(np.full_like(b, 3.0))
        assert a is not b and ga is not gb, type(layer).__name__
        np.testing.assert_array_equal(a, a_copy, err_msg=type(layer).__name__)
        np.testing.assert_array_equal(ga, ga_copy, err_msg=type(layer).__name__)


def test_recurrent_states_of_a_call_do_not_change_after_the_next(rng):
    layer = nn.LSTM(2, 3, return_state=True)
    x = rng.standard_normal((4, 3, 2)).astype(np.float32)
    _, (h1, c1) = layer(x)
    h1c, c1c = h1.copy(), c1.copy()
    layer(x * 3)
    np.testing.assert_array_equal(h1, h1c)
    np.testing.assert_array_equal(c1, c1c)


def test_workspace_reuses_and_is_per_thread(rng):
    model = _mlp()
    x = rng.standard_normal((5, 6)).astype(np.float32)
    with fastnn.workspace(model) as ws:
        a = model(x)
        assert model(x) is a
        seen = []
        t = threading.Thread(target=lambda: seen.append(model(x)))  # another thread: no workspace
        t.start()
        t.join()
        assert seen[0] is not a
        np.testing.assert_array_equal(seen[0], a)
        assert ws.nbytes > 0
    assert model(x) is not a
    # a result fed back into the layer that made it is never overwritten while it is read
    sq = nn.Linear(4, 4)
    v = rng.standard_normal((3, 4)).astype(np.float32)
    want = sq(sq(v))
    with fastnn.workspace():
        np.testing.assert_allclose(sq(sq(v)), want, **tol(np.float32))


# ---------------------------------------------------------------- threads


def _serial(model, xs, mode):
    if mode == "predict":
        return [fastnn.predict(model, x) for x in xs]
    with fastnn.no_grad():
        return [model(x).copy() for x in xs]


@pytest.mark.parametrize("mode", ["no_grad", "eval", "predict"])
@pytest.mark.parametrize("kind", sorted(_MODELS))
def test_four_threads_on_one_model_give_the_serial_results(backend, kind, mode, rng):
    """Budget: 4 threads x 40 calls per case."""
    fastnn.manual_seed(1)
    model = _MODELS[kind][0]()
    xs = _inputs(kind, rng, 40, batch=3)
    want = _serial(model, xs, mode)
    if mode == "eval":
        model.eval()
    start = threading.Barrier(4)
    wrong, errors = [], []

    def work(offset):
        try:
            start.wait()
            with fastnn.use_backend(backend):  # a new thread starts from the process-wide default
                run(offset)
        except Exception as exc:
            errors.append(repr(exc))

    def run(offset):
        for i in range(len(xs)):
            k = (i + offset) % len(xs)
            if mode == "predict":
                y = fastnn.predict(model, xs[k])
            elif mode == "no_grad":
                with fastnn.no_grad():
                    y = model(xs[k])
            else:
                y = model(xs[k])
            if not np.array_equal(y, want[k]):
                wrong.append(k)

    threads = [threading.Thread(target=work, args=(10 * j,)) for j in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and not wrong, (errors[:3], len(wrong))


def test_no_grad_keeps_nothing_on_the_model(rng):
    model = _mlp()
    x = rng.standard_normal((2, 6)).astype(np.float32)
    with fastnn.no_grad():
        assert not fastnn.is_grad_enabled()
        model(x)
        with fastnn.enable_grad():
            assert fastnn.is_grad_enabled()
    assert fastnn.is_grad_enabled()
    assert all(m.__dict__.get("_ctx") is None for m in model.modules())
    with pytest.raises(RuntimeError, match="no_grad"):
        model.backward(np.ones((2, 3), np.float32))
    loss = nn.MSELoss()
    with fastnn.no_grad():
        loss(np.ones((2, 3), np.float32), np.zeros((2, 3), np.float32))
    with pytest.raises(RuntimeError, match="no_grad"):
        loss.backward()


def test_inference_mode_does_not_touch_the_shared_training_flag(rng):
    model = _mlp()
    seen = []
    with fastnn.inference_mode():
        seen.append((model.training, model._is_training(), fastnn.is_grad_enabled()))
        t = threading.Thread(target=lambda: seen.append((model.training, model._is_training())))
        t.start()
        t.join()
    assert seen == [(True, False, False), (True, True)]


def test_training_one_model_from_two_threads_is_refused(rng):
    model = _mlp()
    X = rng.standard_normal((256, 6)).astype(np.float32)
    y = rng.integers(0, 3, 256)
    started, release = threading.Event(), threading.Event()

    class Hold(fastnn.nn.Module):
        """Parks the first thread inside its training step."""

        def forward(self, x):
            if fastnn.is_grad_enabled():  # a training step, not fit's no_grad probe of the output shape
                started.set()
                release.wait(10)
            return x

        def backward(self, grad_output, *, input_grad=True, accumulate=False):
            return grad_output

    held = nn.Sequential(model, Hold())
    errors = []

    def train():
        try:
            fastnn.fit(held, X, y, optimizer=optim.SGD(model.parameters(), lr=0.01), epochs=1, progress=False)
        except Exception as exc:
            errors.append(exc)

    t = threading.Thread(target=train)
    t.start()
    assert started.wait(10)
    started.clear()
    with pytest.raises(RuntimeError, match="already being trained"):
        fastnn.fit(model, X, y, optimizer=optim.SGD(model.parameters(), lr=0.01), epochs=1, progress=False)
    step = fastnn.make_train_step(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.01))
    with pytest.raises(RuntimeError, match="already being trained"):
        step(X[:4], y[:4])
    # inference while the other thread trains: allowed, and it does not disturb training
    assert fastnn.predict(model, X[:4]).shape == (4, 3)
    release.set()
    t.join()
    assert not errors, errors
    fastnn.fit(model, X, y, optimizer=optim.SGD(model.parameters(), lr=0.01), epochs=1, progress=False)


def test_optimizer_step_from_two_threads_is_refused():
    p = nn.Parameter(np.zeros(3, np.float32))
    opt = optim.SGD([p], lr=0.1)
    opt._step_lock.acquire()  # another thread inside step()
    try:
        with pytest.raises(RuntimeError, match="another thread"):
            opt.step()
    finally:
        opt._step_lock.release()
    opt.step()


def test_fit_and_predict_in_two_threads(backend, rng):
    fastnn.manual_seed(2)
    model = _mlp()
    X = rng.standard_normal((400, 6)).astype(np.float32)
    y = rng.integers(0, 3, 400)
    errors, done = [], threading.Event()

    def predict_loop():
        try:
            with fastnn.use_backend(backend):
                while not done.is_set():
                    out = fastnn.predict(model, X[:50])
                    assert out.shape == (50, 3)
        except Exception as exc:
            errors.append(exc)

    t = threading.Thread(target=predict_loop)
    t.start()
    try:
        fastnn.fit(model, X, y, optimizer=optim.SGD(model.parameters(), lr=0.05), epochs=3, progress=False)
    finally:
        done.set()
        t.join()
    assert not errors, errors


# ---------------------------------------------------------------- parameters


def test_parameter_behaves_like_a_read_only_array():
    lin = nn.Linear(3, 2)
    w = lin.weight
    a = np.asarray(w)
    assert a.shape == (2, 3) and a.dtype == np.float32 and not a.flags.writeable
    assert np.shares_memory(a, w.data)
    np.testing.assert_array_equal(w.T, w.data.T)
    np.testing.assert_array_equal(w[1], w.data[1])
    np.testing.assert_array_equal(w * 2 + 1, w.data * 2 + 1)
    np.testing.assert_array_equal(np.ones((4, 3), np.float32) @ w.T, np.ones((4, 3), np.float32) @ w.data.T)
    assert len(w) == 2 and w.ndim == 2 and w.size == 6 and w.shape == (2, 3)
    np.testing.assert_array_equal(np.array(w), w.data)
    assert not np.shares_memory(np.array(w, copy=True), w.data)
    np.testing.assert_array_equal(w.numpy(), w.data)
    with pytest.raises(TypeError, match="p.data"):
        w[0, 0] = 5.0
    with pytest.raises(ValueError):
        np.asarray(w)[0, 0] = 5.0
    with pytest.raises(TypeError, match="p.data"):
        w += 1
    assert {w: 1}[w] == 1  # hashable by identity
    np.testing.assert_array_equal(w == w.data, np.ones((2, 3), bool))


def test_parameter_checks_what_is_assigned():
    p = nn.Parameter(np.zeros((2, 3)))
    with pytest.raises(TypeError):
        p.data = np.zeros((2, 3), np.int64)
    with pytest.raises(TypeError):
        p.data = [[1.0, 2.0]]
    with pytest.raises(ValueError, match="C-contiguous"):
        p.data = np.zeros((3, 2)).T
    ro = np.zeros((2, 3))
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="writeable"):
        p.data = ro
    with pytest.raises(ValueError, match="shape"):
        p.grad = np.zeros((3, 2))
    with pytest.raises(ValueError, match="share memory"):
        p.grad = p.data
    p.data = np.ones(5, np.float32)  # new shape and dtype: a new zero gradient
    assert p.grad.shape == (5,) and p.grad.dtype == np.float32 and not p.grad.any()
    p.grad = None
    assert p.grad.shape == (5,)
    with pytest.raises(AttributeError):
        p.other = 1


def test_replaced_parameters_are_validated_not_trusted(backend, rng):
    """A wrong-shaped array put into a parameter gets a ValueError from every layer type."""
    cases = [
        (nn.Linear(3, 4), "weight", (4, 5), rng.standard_normal((2, 3))),
        (nn.Conv2d(2, 3, 3), "weight", (3, 1, 3, 3), rng.standard_normal((1, 2, 5, 5))),
        (nn.RNN(3, 4), "weight_ih_l0", (4, 9), rng.standard_normal((2, 2, 3))),
        (nn.LSTM(3, 4), "weight_hh_l0", (16, 3), rng.standard_normal((2, 2, 3))),
        (nn.GRU(3, 4), "bias_ih_l0", (7,), rng.standard_normal((2, 2, 3))),
    ]
    for layer, name, shape, x in cases:
        x = x.astype(np.float32)
        layer(x)  # warm: the layer has bound its kernels
        getattr(layer, name).data = np.zeros(shape, np.float32)
        with pytest.raises(ValueError):
            layer(x)


def test_replaced_rnn_weight_never_reaches_the_kernel_in_a_child_process():
    code = """
        import numpy as np, fastnn
        from fastnn import nn
        from isolated import expect_value_error
        for backend in fastnn.available_backends():
            fastnn.set_backend(backend)
            rnn = nn.RNN(8, 16)
            x = np.ones((50, 32, 8), np.float32)
            rnn(x)
            rnn.backward(np.ones((50, 32, 16), np.float32), input_grad=False)
            rnn.weight_ih_l0.data = np.zeros((16, 2), np.float32)
            expect_value_error(lambda: rnn(x), backend + ": accepted a weight of the wrong shape")
        print("ok")
    """
    assert "ok" in run_isolated(code).assert_ok().stdout


def test_a_new_parameter_object_rebinds_the_layer(rng):
    lin = nn.Linear(3, 2)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    lin(x)
    lin.weight = nn.Parameter(np.ones((2, 3), np.float32))
    np.testing.assert_allclose(lin(x), x.sum(1, keepdims=True) + lin.bias.data, rtol=1e-6)
    lin.backward(np.ones((4, 2), np.float32))
    np.testing.assert_allclose(lin.weight.grad, np.ones((2, 4)) @ x, rtol=1e-6)


# ---------------------------------------------------------------- accumulation


@pytest.mark.parametrize(
    "make,shape",
    [
        (
            lambda: nn.Sequential(nn.Linear(4, 5, dtype=np.float64), nn.Tanh(), nn.Linear(5, 2, dtype=np.float64)),
            (3, 4),
        ),
        (lambda: nn.Sequential(nn.Conv2d(2, 3, 3, dtype=np.float64), nn.MaxPool2d(2), nn.Flatten()), (2, 2, 6, 6)),
        (lambda: nn.RNN(3, 4, dtype=np.float64), (5, 2, 3)),
        (lambda: nn.LSTM(3, 4, dtype=np.float64), (5, 2, 3)),
        (lambda: nn.GRU(3, 4, dtype=np.float64), (5, 2, 3)),
    ],
    ids=["mlp", "cnn", "rnn", "lstm", "gru"],
)
def test_accumulated_gradients_equal_the_sum_of_separate_ones(backend, make, shape, rng):
    model = make()
    xs = [rng.standard_normal(shape) for _ in range(3)]
    separate = []
    for x in xs:
        y = model(x)
        model.backward(np.cos(y))
        separate.append({n: p.grad.copy() for n, p in model.named_parameters()})
    model.zero_grad()
    for x in xs:
        y = model(x)
        model.backward(np.cos(y), accumulate=True)
    for n, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, sum(s[n] for s in separate), rtol=1e-12, atol=1e-14, err_msg=n)
    model(xs[0])
    model.backward(np.cos(model(xs[0])))  # the default still overwrites
    for n, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, separate[0][n], rtol=1e-12, atol=1e-14, err_msg=n)


# ---------------------------------------------------------------- protocol and pickling


def test_every_module_has_the_one_backward_protocol():
    import inspect

    for name, cls in nn.registered_modules().items():
        if not cls.__module__.startswith("fastnn."):
            continue  # layers other tests register
        params = inspect.signature(cls.backward).parameters
        assert list(params)[:2] == ["self", "grad_output"], name
        for kw in ("input_grad", "accumulate"):
            assert params[kw].kind is inspect.Parameter.KEYWORD_ONLY, (name, kw)

    with pytest.raises(TypeError, match="input_grad=True, accumulate=False"):

        class Old(nn.Module):
            def backward(self, grad_out):
                return grad_out


def test_models_and_optimizers_pickle_without_per_call_state(backend, rng):
    fastnn.manual_seed(3)
    model = _lstm()
    opt = optim.Adam(model.parameters(), lr=0.01)
    X = rng.standard_normal((20, 4, 5)).astype(np.float32)
    y = rng.integers(0, 3, 20)
    fastnn.fit(model, X, y, optimizer=opt, epochs=1, progress=False)
    model2, opt2 = pickle.loads(pickle.dumps((model, opt)))
    np.testing.assert_array_equal(fastnn.predict(model2, X), fastnn.predict(model, X))
    assert opt2.params[0] is next(iter(model2.parameters()))
    fastnn.fit(model2, X, y, optimizer=opt2, epochs=1, progress=False, seed=5)
    fastnn.fit(model, X, y, optimizer=opt, epochs=1, progress=False, seed=5)
    np.testing.assert_array_equal(fastnn.predict(model2, X), fastnn.predict(model, X))


def test_backend_switch_between_calls_rebinds(rng):
    model = _mlp(np.float64)
    x = rng.standard_normal((4, 6))
    results = []
    for name in fastnn.available_backends() * 2:
        with fastnn.use_backend(name):
            results.append(model(x))
            model.backward(np.ones((4, 3)))
    for r in results[1:]:
        np.testing.assert_allclose(r, results[0], rtol=1e-12)


# ---------------------------------------------------------------- hostile pairings (issue of trusted paths)


def test_fit_refuses_a_model_whose_output_batch_is_not_the_input_batch():
    """An LSTM without batch_first reads axis 0 as time: fit must say so, in every backend, never crash."""
    code = """
        import numpy as np, fastnn
        from fastnn import nn, optim
        from isolated import expect_value_error
        rng = np.random.default_rng(0)
        X = rng.standard_normal((64, 10, 4)).astype(np.float32)     # (N, T, I) fed to a time-major LSTM
        for backend in fastnn.available_backends():
            fastnn.set_backend(backend)
            for loss, y in ((nn.CrossEntropyLoss(), rng.integers(0, 5, 64)), (nn.MSELoss(), rng.random((64, 5)))):
                model = nn.Sequential(nn.LSTM(4, 6), nn.LastTimeStep(), nn.Linear(6, 5))
                expect_value_error(
                    lambda: fastnn.fit(model, X, y, loss=loss, optimizer=optim.SGD(model.parameters(), lr=0.1),
                                       epochs=1, progress=False),
                    backend + ": trained on mismatched batches", "one row per sample")
                expect_value_error(lambda: fastnn.evaluate(model, X, y, loss=loss),
                                   backend + ": evaluated mismatched batches")
        print("ok")
    """
    assert "ok" in run_isolated(code).assert_ok().stdout


def test_rejected_loss_call_leaves_a_usable_loss():
    code = """
        import numpy as np, fastnn
        from fastnn import nn
        from isolated import expect_value_error
        for backend in fastnn.available_backends():
            fastnn.set_backend(backend)
            ce = nn.CrossEntropyLoss()
            z = np.zeros((32, 10), np.float32)
            ce(z, np.zeros(32, np.intp))
            for bad in (np.zeros(8, np.intp), np.full(32, 10, np.intp), np.full(32, -1, np.intp),
                        np.zeros(64, np.intp)):
                expect_value_error(lambda: ce(z, bad), backend + ": accepted bad labels")
                assert ce(z, np.zeros(32, np.intp)) > 0
            mse = nn.MSELoss()
            for bad in (np.zeros((8, 10), np.float32), np.zeros((32, 9), np.float32)):
                expect_value_error(lambda: mse(z, bad), backend + ": MSE accepted a target of another shape")
        print("ok")
    """
    assert "ok" in run_isolated(code).assert_ok().stdout


def test_kernels_check_labels_and_indices_themselves():
    """Bound plans skip the Python passes over labels and indices: each backend's kernel checks them."""
    code = """
        import numpy as np, fastnn
        from fastnn.backends import get
        from isolated import expect_value_error
        for name in fastnn.available_backends():
            b = get(name)
            z = np.zeros((4, 3), np.float32)
            for bad in ([0, 3, 1, 2], [0, -1, 1, 2], [0, 1, 2, 2**62]):
                expect_value_error(lambda: b.softmax_cross_entropy(z, np.array(bad, np.intp), "mean", np.empty_like(z)),
                                   name + ": kernel used label " + repr(bad))
            g = np.ones((1, 2, 2, 2), np.float32)
            for bad in (4, -1, 2**40):
                idx = np.zeros((1, 2, 2, 2), np.int64)
                idx[0, 1, 1, 0] = bad
                expect_value_error(lambda: b.max_pool2d_backward(g, idx, np.empty((1, 2, 2, 2), np.float32)),
                                   name + ": kernel scattered to index " + repr(bad))
        print("ok")
    """
    assert "ok" in run_isolated(code).assert_ok().stdout


def test_parameters_unpickle_from_read_only_memory_maps(tmp_path):
    """joblib loads arrays as read-only memory maps: a Parameter takes a writeable copy."""
    joblib = pytest.importorskip("joblib")
    lin = nn.Linear(512, 512)  # large enough for joblib to store (and map) the weight separately
    joblib.dump(lin, tmp_path / "lin.joblib")
    back = joblib.load(tmp_path / "lin.joblib", mmap_mode="r")
    assert back.weight.data.flags.writeable and type(back.weight.data) is np.ndarray
    np.testing.assert_array_equal(back.weight.data, lin.weight.data)
    back.weight.data += 1  # usable for training
