"""Recurrent kernels (RNN, LSTM, GRU): every backend against the reference,
finite differences for BPTT, validation errors."""

import numpy as np
import pytest
from conftest import cython_kernels, tol

import fastnn
from fastnn import ops
from fastnn.gradcheck import numerical_gradient

CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru")
GATES = {"rnn": 1, "lstm": 4, "gru": 3}

# (T, B, I, H): one step, a long sequence, batch 1, and sizes that reach the
# vectorised tiles of the compiled kernels (B multiple of 4, G*H multiple of 32),
# their one-vector tile plus a narrow column tail (G*H = 24, 40, 120: 16 + 8 and
# more), rows past the last group of 8 or 4 (T*B = 45, 39), and input sizes that
# make dL/dx a vector plus a tail (I = 20) or a partial vector (I = 8, 3).
SHAPES = [
    (1, 3, 4, 5),
    (60, 2, 3, 6),
    (7, 1, 4, 7),
    (9, 8, 5, 32),
    (4, 6, 3, 16),
    (5, 9, 8, 24),
    (3, 13, 20, 40),
    (2, 7, 17, 30),
]


def _make(cell, shape, dtype, rng, bias=True, scale=0.5):
    T, B, I, H = shape
    G = GATES[cell.split("_")[0]]
    p = dict(
        x=rng.standard_normal((T, B, I)),
        h0=rng.standard_normal((B, H)) * 0.5,
        c0=rng.standard_normal((B, H)) * 0.5,
        weight_ih=rng.uniform(-scale, scale, (G * H, I)),
        weight_hh=rng.uniform(-scale, scale, (G * H, H)),
        bias_ih=rng.uniform(-scale, scale, G * H) if bias else None,
        bias_hh=rng.uniform(-scale, scale, G * H) if bias else None,
        grad_out=rng.standard_normal((T, B, H)),
        grad_hn=rng.standard_normal((B, H)),
        grad_cn=rng.standard_normal((B, H)),
    )
    return {k: (None if v is None else np.ascontiguousarray(v, dtype=dtype)) for k, v in p.items()}


def _run(cell, p, with_state_grads=True, input_grad=True):
    """Forward and backward through the public ops; returns (forward outputs, gradients) as dicts."""
    kind = cell.split("_")[0]
    # every backward takes (grad_out, x, h0[, c0], weight_ih, weight_hh, out, <its forward's other outputs>)
    state = (p["h0"], p["c0"]) if kind == "lstm" else (p["h0"],)
    weights = (p["weight_ih"], p["weight_hh"])
    inputs = (p["x"], *state, *weights, p["bias_ih"], p["bias_hh"])
    options = dict(
        grad_hn=p["grad_hn"] if with_state_grads else None, bias=p["bias_ih"] is not None, input_grad=input_grad
    )
    if kind == "rnn":
        nl = cell.split("_")[1]
        out = ops.rnn_forward(*inputs, nl)
        fwd = dict(out=out)
        g = ops.rnn_backward(p["grad_out"], p["x"], *state, *weights, out, nl, **options)
    elif kind == "lstm":
        out, cell_, gates = ops.lstm_forward(*inputs)
        fwd = dict(out=out, cell=cell_, gates=gates)
        options.update(grad_cn=p["grad_cn"] if with_state_grads else None)
        g = ops.lstm_backward(p["grad_out"], p["x"], *state, *weights, out, cell_, gates, **options)
    else:
        out, gates, hn = ops.gru_forward(*inputs)
        fwd = dict(out=out, gates=gates, hidden_n=hn)
        g = ops.gru_backward(p["grad_out"], p["x"], *state, *weights, out, gates, hn, **options)
    names = ("x", "h0", "c0") if kind == "lstm" else ("x", "h0")
    names += ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    return {k: v.copy() for k, v in fwd.items()}, {n: (None if v is None else v.copy()) for n, v in zip(names, g)}


def _loss(cell, p):
    """The scalar whose gradient the backward kernels compute: <grad_out, out> + <grad_hn, h_T> (+ <grad_cn, c_T>)."""
    fwd, _ = _run(cell, p)
    out = fwd["out"]
    loss = np.sum(out * p["grad_out"]) + np.sum(out[-1] * p["grad_hn"])
    if "cell" in fwd:
        loss += np.sum(fwd["cell"][-1] * p["grad_cn"])
    return float(loss)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}B{}I{}H{}".format(*s))
def test_backend_matches_reference(backend, dtype, rng, cell, shape):
    p = _make(cell, shape, dtype, rng)
    fwd, grads = _run(cell, p)
    with fastnn.use_backend("numpy"):
        fwd_ref, grads_ref = _run(cell, p)
    # float32: the compiled backends use their own vectorised exp/tanh (a few ulp)
    # and another summation order; errors grow along the sequence.
    t = tol(dtype, scale=20 if dtype == np.float32 else 100)
    for k in fwd_ref:
        np.testing.assert_allclose(fwd[k], fwd_ref[k], **t, err_msg=f"{cell} forward {k}")
    for k in grads_ref:
        assert grads[k].dtype == dtype
        np.testing.assert_allclose(grads[k], grads_ref[k], **t, err_msg=f"{cell} gradient of {k}")
    assert np.abs(grads_ref["weight_hh"]).max() > 1e-3  # the comparison is not between zeros


@pytest.mark.parametrize("cell", CELLS)
def test_backend_without_bias_state_grads_or_input_grad(backend, dtype, rng, cell):
    p = _make(cell, (5, 3, 4, 8), dtype, rng, bias=False)
    fwd, grads = _run(cell, p, with_state_grads=False, input_grad=False)
    with fastnn.use_backend("numpy"):
        fwd_ref, grads_ref = _run(cell, p, with_state_grads=False, input_grad=False)
    assert grads["x"] is None and grads["bias_ih"] is None and grads["bias_hh"] is None
    t = tol(dtype, scale=20)
    np.testing.assert_allclose(fwd["out"], fwd_ref["out"], **t)
    for k in ("h0", "weight_ih", "weight_hh"):
        np.testing.assert_allclose(grads[k], grads_ref[k], **t, err_msg=k)


@pytest.mark.parametrize("cell", CELLS)
def test_bptt_matches_finite_differences(backend, rng, cell):
    p = _make(cell, (6, 2, 3, 4), np.float64, rng)
    if cell == "rnn_relu":  # keep pre-activations away from the kink at 0
        p["x"] += 0.3
    _, grads = _run(cell, p)
    for name, g in grads.items():
        if p.get(name) is None:
            continue
        num = numerical_gradient(lambda: _loss(cell, p), p[name])
        np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-7, err_msg=f"{cell} d/d{name}")


def test_rnn_matches_hand_computed_step(backend, dtype):
    """One step by hand: h1 = tanh(x W_ihᵀ + b_ih + h0 W_hhᵀ + b_hh)."""
    x = np.array([[[1.0, -2.0]]], dtype)  # T=1, B=1, I=2
    h0 = np.array([[0.5]], dtype)
    w_ih = np.array([[0.25, 0.5]], dtype)
    w_hh = np.array([[2.0]], dtype)
    b_ih = np.array([0.1], dtype)
    b_hh = np.array([-0.2], dtype)
    out = ops.rnn_forward(x, h0, w_ih, w_hh, b_ih, b_hh)
    a = 0.25 - 1.0 + 0.1 + 1.0 - 0.2
    np.testing.assert_allclose(out[0, 0, 0], np.tanh(a), rtol=1e-6)
    out = ops.rnn_forward(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity="relu")
    np.testing.assert_allclose(out[0, 0, 0], max(a, 0.0), rtol=1e-6)


@pytest.mark.parametrize("cell", CELLS)
def test_nan_propagates(backend, cell, rng):
    p = _make(cell, (3, 4, 3, 16), np.float32, rng)
    p["x"][1, 2, 0] = np.nan
    fwd, _ = _run(cell, p)
    out = fwd["out"]
    assert np.isnan(out[1:, 2]).all()  # sample 2 from step 1 on
    assert np.isfinite(out[0]).all() and np.isfinite(np.delete(out, 2, axis=1)).all()


def test_saturated_gates_stay_finite(backend, dtype, rng):
    """Huge pre-activations: sigmoid/tanh saturate to exactly their limits, no overflow."""
    p = _make("lstm", (3, 4, 3, 16), dtype, rng)
    p["x"] *= 1e4
    fwd, grads = _run("lstm", p)
    assert np.isfinite(fwd["out"]).all() and np.isfinite(grads["weight_ih"]).all()
    assert np.abs(fwd["out"]).max() <= 1.0


@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru"])
def test_output_buffers_are_used(backend, rng, cell):
    p = _make(cell, (4, 2, 3, 5), np.float32, rng)
    out = np.full((4, 2, 5), 7.0, np.float32)
    kind = cell.split("_")[0]
    if kind == "rnn":
        res = ops.rnn_forward(p["x"], p["h0"], p["weight_ih"], p["weight_hh"], out=out)
    elif kind == "lstm":
        res = ops.lstm_forward(p["x"], p["h0"], p["c0"], p["weight_ih"], p["weight_hh"], out=out)[0]
    else:
        res = ops.gru_forward(p["x"], p["h0"], p["weight_ih"], p["weight_hh"], out=out)[0]
    assert res is out and not (out == 7.0).any()


# -- validation --------------------------------------------------------------


def _rnn_args(T=3, B=2, I=4, H=5, dtype=np.float32):
    return (np.zeros((T, B, I), dtype), np.zeros((B, H), dtype), np.zeros((H, I), dtype), np.zeros((H, H), dtype))


def test_wrong_rank_is_value_error_naming_shape():
    x, h0, wi, wh = _rnn_args()
    with pytest.raises(ValueError, match=r"3-D.*\(3, 8\)"):
        ops.rnn_forward(x.reshape(3, 8), h0, wi, wh)


def test_feature_mismatch_is_value_error_naming_shapes():
    x, h0, wi, wh = _rnn_args()
    with pytest.raises(ValueError, match=r"x has 4 features.*\(3, 2, 4\).*\(5, 3\)"):
        ops.rnn_forward(x, h0, wi[:, :3].copy(), wh)
    with pytest.raises(ValueError, match=r"weight_ih has shape \(20, 3\)"):
        ops.lstm_forward(x, h0, h0, np.zeros((20, 3), np.float32), np.zeros((20, 5), np.float32))


def test_wrong_initial_state_shape_is_value_error():
    x, h0, wi, wh = _rnn_args()
    with pytest.raises(ValueError, match=r"h0 has shape \(3, 5\).*\(2, 5\)"):
        ops.rnn_forward(x, np.zeros((3, 5), np.float32), wi, wh)
    with pytest.raises(ValueError, match=r"c0 has shape \(2, 4\)"):
        ops.lstm_forward(
            x, h0, np.zeros((2, 4), np.float32), np.zeros((20, 4), np.float32), np.zeros((20, 5), np.float32)
        )


def test_bad_weight_hh_bias_and_dtype():
    x, h0, wi, wh = _rnn_args()
    with pytest.raises(ValueError, match="weight_hh"):
        ops.gru_forward(x, h0, np.zeros((15, 4), np.float32), np.zeros((16, 5), np.float32))
    with pytest.raises(ValueError, match=r"bias_ih has shape \(4,\)"):
        ops.rnn_forward(x, h0, wi, wh, bias_ih=np.zeros(4, np.float32))
    with pytest.raises(TypeError, match="dtype"):
        ops.rnn_forward(x, h0.astype(np.float64), wi, wh)
    with pytest.raises(TypeError):
        ops.rnn_forward(x.astype(np.int64), h0, wi, wh)
    with pytest.raises(ValueError, match="nonlinearity"):
        ops.rnn_forward(x, h0, wi, wh, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="at least one time step"):
        ops.rnn_forward(np.zeros((0, 2, 4), np.float32), h0, wi, wh)


def test_backward_shape_checks():
    x, h0, wi, wh = _rnn_args()
    out = ops.rnn_forward(x, h0, wi, wh)
    with pytest.raises(ValueError, match="grad_out has shape"):
        ops.rnn_backward(np.zeros((3, 2, 4), np.float32), x, h0, wi, wh, out)
    with pytest.raises(ValueError, match="grad_hn has shape"):
        ops.rnn_backward(out, x, h0, wi, wh, out, grad_hn=np.zeros((5, 2), np.float32))
    with pytest.raises(ValueError, match="work has shape"):
        ops.rnn_backward(out.copy(), x, h0, wi, wh, out, work=np.zeros((3, 2, 4), np.float32))


@pytest.mark.parametrize("cell,H", [("rnn_tanh", 256), ("lstm", 128), ("gru", 160)])
def test_threaded_time_steps_match_reference(compiled_backend, split_small_work, rng, cell, H):
    """Steps with the batch split over threads give the reference result."""
    before = fastnn.get_num_threads()
    p = _make(cell, (6, 18, 5, H), np.float32, rng, scale=0.1)
    try:
        fastnn.set_num_threads(2)
        fwd, grads = _run(cell, p)
    finally:
        fastnn.set_num_threads(before)
    with fastnn.use_backend("numpy"):
        fwd_ref, grads_ref = _run(cell, p)
    t = tol(np.float32, scale=20)
    np.testing.assert_allclose(fwd["out"], fwd_ref["out"], **t)
    for k in grads_ref:
        np.testing.assert_allclose(grads[k], grads_ref[k], **t, err_msg=k)


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias-no-input-grad"])
def test_large_problem_matches_reference(backend, dtype, rng, cell, bias):
    """All-steps products above the size gate (> 2^18 operand elements) go to the own GEMM in the compiled backends."""
    p = _make(cell, (40, 64, 16, 64), dtype, rng, bias=bias, scale=0.2)
    fwd, grads = _run(cell, p, input_grad=bias)
    with fastnn.use_backend("numpy"):
        fwd_ref, grads_ref = _run(cell, p, input_grad=bias)
    t = tol(dtype, scale=50)
    np.testing.assert_allclose(fwd["out"], fwd_ref["out"], **t)
    for k in grads_ref:
        if grads_ref[k] is None:
            assert grads[k] is None, k
            continue
        np.testing.assert_allclose(grads[k], grads_ref[k], **t, err_msg=k)


def _run_threads(cell, p, n):
    before = fastnn.get_num_threads()
    try:
        fastnn.set_num_threads(n)
        return _run(cell, p)
    finally:
        fastnn.set_num_threads(before)


@pytest.fixture
def split_small_work(compiled_backend):
    """Let the Cython kernels split even these small problems over threads (normally serial below ~2^25
    multiply-adds, where waking a second thread costs more than it saves)."""
    if compiled_backend != "cython":
        yield
        return
    from fastnn.backends import tuning

    with tuning.override(rnn_parallel_min_work=1 << 16):
        yield


# (T, B, I, H): with split_small_work, small problems that run the threaded
# regions of the compiled kernels: the batch split into blocks that do not
# divide it (B = 18, 9), a batch too small to split (B = 6: the time loop stays
# serial, the weight gradients and dL/dx are still split), and gate columns
# split unevenly (H = 48, G*H = 144).
# T·B = 40 and 35: blocks of dL/dx rows rounded up to 8 leave fewer blocks than the threads asked for
THREADED_SHAPES = [(20, 18, 5, 64), (30, 6, 8, 64), (25, 9, 3, 48), (5, 8, 3, 16), (7, 5, 4, 16)]


@pytest.mark.slow
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("shape", THREADED_SHAPES, ids=lambda s: "T{}B{}I{}H{}".format(*s))
def test_thread_count_does_not_change_results(compiled_backend, split_small_work, dtype, rng, cell, shape):
    """1, 2 and 3 threads give bit-identical results (each output element is summed in one order,
    whichever thread computes it), and they match the reference."""
    p = _make(cell, shape, dtype, rng, scale=0.2)
    fwd1, grads1 = _run_threads(cell, p, 1)
    for n in (2, 3):
        fwd, grads = _run_threads(cell, p, n)
        for k in fwd1:
            np.testing.assert_array_equal(fwd[k], fwd1[k], err_msg=f"{n} threads, forward {k}")
        for k in grads1:
            np.testing.assert_array_equal(grads[k], grads1[k], err_msg=f"{n} threads, gradient of {k}")
    with fastnn.use_backend("numpy"):
        fwd_ref, grads_ref = _run(cell, p)
    t = tol(dtype, scale=20 if dtype == np.float32 else 100)
    np.testing.assert_allclose(fwd1["out"], fwd_ref["out"], **t)
    for k in grads_ref:
        np.testing.assert_allclose(grads1[k], grads_ref[k], **t, err_msg=k)


def test_threaded_time_loop_and_large_products_match_reference(compiled_backend, rng):
    """A time loop above the default split size (2^25 multiply-adds) whose all-steps products
    go to the own GEMM, at 2 threads."""
    p = _make("lstm", (20, 26, 40, 128), np.float32, rng, scale=0.1)
    fwd, grads = _run_threads("lstm", p, 2)
    with fastnn.use_backend("numpy"):
        fwd_ref, grads_ref = _run("lstm", p)
    t = tol(np.float32, scale=50)
    np.testing.assert_allclose(fwd["out"], fwd_ref["out"], **t)
    for k in grads_ref:
        np.testing.assert_allclose(grads[k], grads_ref[k], **t, err_msg=k)


def _plan(cell, p):
    kind = cell.split("_")[0]
    params = [fastnn.nn.Parameter(p[k].copy()) for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    return ops.RecurrentPlan(kind, *params, nonlinearity=cell.split("_")[1] if kind == "rnn" else "tanh")


def _plan_steps(cell, plans, ps, pair, accumulate):
    """Forward and backward of two plans, by the pair entry points or one plan after the other;
    returns every result and gradient, copied."""
    lstm = cell == "lstm"
    ins = [(p["x"], p["h0"], p["c0"] if lstm else None) for p in ps]
    if pair:
        saved = ops.recurrent_forward_pair(plans, ins)
    else:
        saved = [plan.forward(*a) for plan, a in zip(plans, ins)]
    saved = [tuple(s) if isinstance(s, tuple) else (s,) for s in saved]
    args = [
        (
            p["grad_out"],
            p["x"],
            p["h0"],
            s if len(s) > 1 else s[0],
            p["c0"] if lstm else None,
            p["grad_hn"],
            p["grad_cn"] if lstm else None,
        )
        for p, s in zip(ps, saved)
    ]
    if pair:
        res = ops.recurrent_backward_pair(plans, args, accumulate=accumulate)
    else:
        res = [plan.backward(*a[:5], grad_hn=a[5], grad_cn=a[6], accumulate=accumulate) for plan, a in zip(plans, args)]
    out = [[a.copy() for a in s] for s in saved] + [[a.copy() for a in r] for r in res]
    for plan in plans:
        out.append([p.grad.copy() for p in (plan.weight_ih, plan.weight_hh, plan.bias_ih, plan.bias_hh)])
    return out


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_recurrent_pair_gives_each_calls_own_result(backend, split_small_work, dtype, rng, cell, threads):
    """Two independent sequences (a bidirectional layer's directions; here of different shapes) run
    by the pair entry points -- at once, one thread each, in the Cython backend at 2 threads -- give
    bit for bit what each gives alone on the whole team, gradients accumulated or not."""
    ps = [_make(cell, (20, 18, 5, 64), dtype, rng, scale=0.2), _make(cell, (9, 8, 3, 64), dtype, rng, scale=0.2)]
    before = fastnn.get_num_threads()
    try:
        fastnn.set_num_threads(threads)
        for accumulate in (False, True):
            alone = _plan_steps(cell, [_plan(cell, p) for p in ps], ps, False, accumulate)
            paired = _plan_steps(cell, [_plan(cell, p) for p in ps], ps, True, accumulate)
            for i, (a, b) in enumerate(zip(alone, paired)):
                for j, (u, v) in enumerate(zip(a, b)):
                    np.testing.assert_array_equal(v, u, err_msg=f"result {i}.{j}, accumulate={accumulate}")
    finally:
        fastnn.set_num_threads(before)
    with fastnn.use_backend("numpy"):
        ref = _plan_steps(cell, [_plan(cell, p) for p in ps], ps, True, False)
    t = tol(dtype, scale=20 if dtype == np.float32 else 100)
    for a, b in zip(ref, alone):
        for u, v in zip(a, b):
            np.testing.assert_allclose(v, u, **t)


# every all-steps product of a sequence on BLAS, none on the own GEMM or inside the time-loop region
_ALL_TO_BLAS = dict(
    rnn_small_elements=0, gemm_small_max_f32=0, gemm_small_max_f64=0, gemm_packed_max_f32=0, gemm_packed_max_f64=0
)


def _blas_threads():
    from threadpoolctl import threadpool_info

    return {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


@pytest.mark.parametrize("cell", CELLS)
def test_recurrent_pair_runs_its_blas_products_on_its_own_thread(dtype, rng, cell):
    """At 2 threads the Cython pair runs each sequence on one thread, and the products it sends
    to BLAS run serially on that thread (not on a second team of BLAS threads over the same
    cores): each result has the bits of its call alone on one thread, and BLAS gets its thread
    count back afterwards."""
    kernels = cython_kernels()
    from fastnn.backends import tuning

    ps = [_make(cell, (12, 16, 24, 32), dtype, rng, scale=0.2), _make(cell, (7, 16, 24, 32), dtype, rng, scale=0.2)]
    before, adaptive = fastnn.get_num_threads(), fastnn.adaptive_threads()
    try:
        fastnn.set_adaptive_threads(False)  # the team stays at 2: the pair runs at once
        with fastnn.use_backend("cython"), tuning.override(**_ALL_TO_BLAS):
            fastnn.set_num_threads(1)
            alone = _plan_steps(cell, [_plan(cell, p) for p in ps], ps, False, False)
            fastnn.set_num_threads(2)
            counts = _blas_threads()
            blas_before = kernels.route_counts()["blas"]
            paired = _plan_steps(cell, [_plan(cell, p) for p in ps], ps, True, False)
            assert kernels.route_counts()["blas"] >= blas_before + 8  # projections, weight gradients, dL/dx
            assert _blas_threads() == counts
    finally:
        fastnn.set_num_threads(before)
        fastnn.set_adaptive_threads(adaptive)
    for i, (a, b) in enumerate(zip(alone, paired)):
        for j, (u, v) in enumerate(zip(a, b)):
            np.testing.assert_array_equal(v, u, err_msg=f"result {i}.{j}")


def test_serial_blas_lowers_blas_to_one_thread_and_gives_the_count_back():
    cython_kernels()  # the BLAS the kernels call is loaded
    from fastnn import _config

    before = fastnn.get_num_threads()
    try:
        fastnn.set_num_threads(2)
        counts = _blas_threads()
        assert counts and max(counts.values()) == 2
        with _config.serial_blas():
            assert set(_blas_threads().values()) == {1}
            with _config.serial_blas():  # nested: the outer block gives the counts back
                pass
            assert set(_blas_threads().values()) == {1}
        assert _blas_threads() == counts
    finally:
        fastnn.set_num_threads(before)


def test_recurrent_pair_rejects_other_kernels(backend):
    with pytest.raises(ValueError, match="unknown kernel"):
        fastnn.backends.current().recurrent_pair("linear_forward", (), ())
