"""The C kernel library's instruction sets and tunables.

Every kernel family is built once per instruction set and dispatched at load
time; these tests run each family on every set this CPU has (the AVX-512
build is compiled everywhere but runs only on a CPU that has it), check
that FASTNN_ISA forces a lower one in a fresh process, that the one set of
vector maths gives the same bits in every family, and that the tunables
table reaches the compiled code.
"""

import os

import numpy as np
import pytest
from conftest import cython_kernels, reference, run_python, tol

import fastnn
from fastnn import _config, ops
from fastnn.backends import tuning

#: (rows, float32 lanes, float64 lanes) of each instruction set's register tile.
TILES = {"sse2": (4, 4, 2), "generic": (4, 4, 2), "avx2": (6, 8, 4), "avx512": (8, 16, 8)}


@pytest.fixture(scope="module")
def kern():
    return cython_kernels()


def _levels(k):
    """The instruction sets this CPU can run, lowest first."""
    names = k.isa_names()
    return list(names[: names.index(k.best_isa()) + 1])


@pytest.fixture(params=["sse2", "avx2", "avx512"])
def isa(request, kern):
    """Every kernel family on one instruction set (skipped where the CPU lacks it)."""
    from fastnn.backends import cython_backend

    name = request.param
    if name == "sse2" and "generic" in kern.isa_names():
        name = "generic"
    if name not in _levels(kern):
        pytest.skip(f"this CPU has no {name} (its best: {kern.best_isa()}); the build is compiled, not run")
    cython_backend.select_isa(name)
    try:
        yield name
    finally:
        cython_backend.select_isa("auto")


def test_families_report_what_they_run(kern):
    from fastnn.backends import cython_backend

    fams = kern.family_isa()
    assert set(fams) == {"elementwise", "gemm", "conv", "rnn"}
    requested = cython_backend.REQUESTED_ISA
    best = kern.best_isa()
    want = (
        best
        if requested == "auto"
        else _levels(kern)[min(kern.isa_names().index(requested), kern.isa_names().index(best))]
    )
    assert set(fams.values()) == {want}
    try:
        for level in _levels(kern):
            assert cython_backend.select_isa(level, "gemm") == level
            assert kern.family_isa()["gemm"] == level and kern.family_isa()["rnn"] == fams["rnn"]
            assert kern.tile_shape() == TILES[level]
        # a level above the CPU's best is lowered to it
        assert cython_backend.select_isa("avx512") == best
        with pytest.raises(ValueError, match="unknown instruction set"):
            cython_backend.select_isa("neon")
    finally:
        cython_backend.select_isa("auto")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_every_family_on_every_isa(kern, isa, dtype, rng):
    """Elementwise, loss, optimizer, GEMM (both kernels, every tile edge), conv, pooling and
    recurrent kernels on one instruction set, against the NumPy reference."""
    assert set(kern.family_isa().values()) == {isa}
    x = (rng.standard_normal((37, 45)) * 4).astype(dtype)
    g = rng.standard_normal((37, 45)).astype(dtype)
    labels = rng.integers(0, 45, 37)
    with fastnn.use_backend("cython"):
        for name in ("relu", "sigmoid", "tanh"):
            y = getattr(ops, name)(x)
            np.testing.assert_allclose(y, reference(name, x), **tol(dtype, 4))
            np.testing.assert_allclose(
                getattr(ops, name + "_backward")(g, y), reference(name + "_backward", g, y), **tol(dtype, 4)
            )
        np.testing.assert_allclose(ops.softmax(x), reference("softmax", x), **tol(dtype, 10))
        for got, want in zip(ops.softmax_cross_entropy(x, labels), reference("softmax_cross_entropy", x, labels)):
            np.testing.assert_allclose(got, want, **tol(dtype, 10))
        for got, want in zip(ops.mse_loss(x, g), reference("mse_loss", x, g)):
            np.testing.assert_allclose(got, want, **tol(dtype, 10))
        p, m, v = x.copy(), np.zeros_like(x), np.zeros_like(x)
        ops.adam_update(p, g, m, v, 1, lr=0.01)
        p2, m2, v2 = x.copy(), np.zeros_like(x), np.zeros_like(x)
        with fastnn.use_backend("numpy"):
            ops.adam_update(p2, g, m2, v2, 1, lr=0.01)
        np.testing.assert_allclose(p, p2, **tol(dtype, 10))
        # products: every tile edge of both own kernels, and the dense layer
        for mode in ("own", "auto"):
            with fastnn.use_gemm(mode):
                for mm, kk, nn in [(1, 7, 1), (5, 3, 17), (13, 40, 33), (33, 65, 10), (70, 130, 90), (200, 64, 190)]:
                    for ta, tb in [(False, False), (True, True), (False, True)]:
                        a = rng.standard_normal((kk, mm) if ta else (mm, kk)).astype(dtype)
                        b = rng.standard_normal((nn, kk) if tb else (kk, nn)).astype(dtype)
                        got = ops.matmul(a, b, trans_a=ta, trans_b=tb)
                        want = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b)
                        np.testing.assert_allclose(got, want, **tol(dtype, 10 * np.sqrt(kk)))
                xb = rng.standard_normal((33, 70)).astype(dtype)
                wb = (rng.standard_normal((20, 70)) / 8).astype(dtype)
                bb = rng.standard_normal(20).astype(dtype)
                for act in ("relu", "tanh"):
                    y = ops.dense_forward(xb, wb, bb, act)
                    np.testing.assert_allclose(y, reference("dense_forward", xb, wb, bb, act), **tol(dtype, 100))
                    gy = rng.standard_normal(y.shape).astype(dtype)
                    for got, want in zip(
                        ops.dense_backward(gy, xb, wb, y, act), reference("dense_backward", gy, xb, wb, y, act)
                    ):
                        np.testing.assert_allclose(got, want, **tol(dtype, 100))
        # convolution (direct for float32 stride 1, im2col otherwise) and pooling
        xi = rng.standard_normal((2, 5, 11, 9)).astype(dtype)
        wc = (rng.standard_normal((7, 5, 3, 3)) / 6).astype(dtype)
        bc = rng.standard_normal(7).astype(dtype)
        for stride, pad in ((1, 1), (2, 0)):
            yc = ops.conv2d_forward(xi, wc, bc, stride, pad)
            np.testing.assert_allclose(yc, reference("conv2d_forward", xi, wc, bc, stride, pad), **tol(dtype, 100))
            gc = rng.standard_normal(yc.shape).astype(dtype)
            for got, want in zip(
                ops.conv2d_backward(gc, xi, wc, stride, pad), reference("conv2d_backward", gc, xi, wc, stride, pad)
            ):
                np.testing.assert_allclose(got, want, **tol(dtype, 300))
        # float32 3x3 stride 1 on Winograd F(2x2, 3x3) (threshold lowered): a tile row of 19 tiles,
        # whole vectors and a tail on every lane count, and an odd last tile row
        xw = rng.standard_normal((2, 5, 7, 37)).astype(dtype)
        with tuning.override(conv_winograd_min_channels=1):
            yc = ops.conv2d_forward(xw, wc, bc, 1, 1)
            np.testing.assert_allclose(yc, reference("conv2d_forward", xw, wc, bc, 1, 1), **tol(dtype, 100))
            gc = rng.standard_normal(yc.shape).astype(dtype)
            for got, want in zip(ops.conv2d_backward(gc, xw, wc, 1, 1), reference("conv2d_backward", gc, xw, wc, 1, 1)):
                np.testing.assert_allclose(got, want, **tol(dtype, 300))
        yp, idx = ops.max_pool2d_forward(xi, 2)
        yp_ref, idx_ref = reference("max_pool2d_forward", xi, 2)
        np.testing.assert_array_equal(yp, yp_ref)
        np.testing.assert_array_equal(idx, idx_ref)
    # recurrent cells: forward and BPTT of each cell through the layers
    for cls in (fastnn.nn.RNN, fastnn.nn.LSTM, fastnn.nn.GRU):
        fastnn.manual_seed(3)
        layer = cls(6, 20, dtype=dtype)
        xs = rng.standard_normal((9, 4, 6)).astype(dtype)
        results = {}
        for backend in ("numpy", "cython"):
            with fastnn.use_backend(backend):
                out = layer(xs)
                out = out[0] if isinstance(out, tuple) else out
                gx = layer.backward(np.ones_like(out))
                results[backend] = (out.copy(), gx.copy(), [np.asarray(p.grad).copy() for p in layer.parameters()])
        np.testing.assert_allclose(results["cython"][0], results["numpy"][0], **tol(dtype, 20))
        np.testing.assert_allclose(results["cython"][1], results["numpy"][1], **tol(dtype, 100))
        for got, want in zip(results["cython"][2], results["numpy"][2]):
            np.testing.assert_allclose(got, want, **tol(dtype, 100))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_normalisation_on_every_isa(kern, isa, dtype, rng):
    """Batch norm (rows of channels, runs of values) and layer norm on one instruction set, every vector width's
    whole vectors and tails, against the NumPy reference."""
    for shape in [(13, 37), (9, 3), (4, 6, 21), (2, 3, 5, 7)]:
        x = (rng.standard_normal(shape) * 2 + 0.5).astype(dtype)
        C = shape[1]
        w, b = rng.uniform(0.5, 1.5, C).astype(dtype), rng.uniform(-0.5, 0.5, C).astype(dtype)
        g = rng.standard_normal(shape).astype(dtype)
        for training in (True, False):
            results = []
            for backend in ("cython", "numpy"):
                with fastnn.use_backend(backend):
                    rm, rv = np.zeros(C, dtype), np.ones(C, dtype)
                    y, mean, var = ops.batch_norm_forward(x, w, b, rm, rv, training=training)
                    results.append(
                        (y, mean, var) + tuple(ops.batch_norm_backward(g, x, w, mean, var, training=training))
                    )
            for got, want in zip(*results):
                np.testing.assert_allclose(got, want, **tol(dtype, 20))
    for shape in [(7, 37), (4, 3), (9, 70)]:
        x = (rng.standard_normal(shape) * 3 - 1).astype(dtype)
        K = shape[1]
        w, b = rng.uniform(-1, 1.5, K).astype(dtype), rng.uniform(-1, 1, K).astype(dtype)
        g = rng.standard_normal(shape).astype(dtype)
        results = []
        for backend in ("cython", "numpy"):
            with fastnn.use_backend(backend):
                y, mean, rstd = ops.layer_norm_forward(x, K, w, b)
                results.append((y, mean, rstd) + tuple(ops.layer_norm_backward(g, x, K, w, mean, rstd)))
        for got, want in zip(*results):
            np.testing.assert_allclose(got, want, **tol(dtype, 20))


def test_one_set_of_vector_maths(kern, rng):
    """The recurrent gates and the activation kernels share one tanh and one sigmoid: same input, same bits."""
    x = np.concatenate([np.linspace(-30, 30, 4001), rng.standard_normal(999) * 5]).astype(np.float32)
    n = x.size
    one = np.ones((1, 1), np.float32)
    zero_h = np.zeros((1, n, 1), np.float32)[0]
    with fastnn.use_backend("cython"):
        t = ops.tanh(x)
        s = ops.sigmoid(x)
    # an Elman RNN with I = H = 1, W_ih = 1 and no other term: h = tanh(x) exactly
    h = kern.rnn_forward(
        x.reshape(1, n, 1),
        zero_h,
        one,
        np.zeros((1, 1), np.float32),
        None,
        None,
        "tanh",
        np.empty((1, n, 1), np.float32),
    )
    np.testing.assert_array_equal(h.reshape(-1), t)
    # an LSTM with every gate's pre-activation x: gates i, f, o = sigmoid(x), g = tanh(x)
    out, cell, gates = kern.lstm_forward(
        x.reshape(1, n, 1),
        zero_h,
        zero_h,
        np.ones((4, 1), np.float32),
        np.zeros((4, 1), np.float32),
        None,
        None,
        np.empty((1, n, 1), np.float32),
        np.empty((1, n, 1), np.float32),
        np.empty((1, n, 4), np.float32),
    )
    np.testing.assert_array_equal(gates.reshape(n, 4)[:, 0], s)
    np.testing.assert_array_equal(gates.reshape(n, 4)[:, 2], t)


def _child(code, **env):
    run = run_python(code, timeout=300, env=dict(os.environ, **env), cwd=os.path.dirname(os.path.dirname(__file__)))
    assert run.returncode == 0, run.stderr[-3000:]
    return run


@pytest.mark.slow
def test_fastnn_isa_is_read_at_load(kern):
    """FASTNN_ISA forces every family down in a fresh process; a bad value warns and keeps the best."""
    code = (
        "import numpy as np, fastnn\n"
        "from fastnn.backends import cython_backend as cb\n"
        "fastnn.set_backend('cython')\n"
        "print(sorted(set(cb.family_isa().values())), fastnn.backends.current().info['simd'])\n"
        "x = np.linspace(-3, 3, 1001).astype(np.float32)\n"
        "a = np.arange(30.0).reshape(5, 6)\n"
        "assert np.allclose(fastnn.ops.tanh(x), np.tanh(x), rtol=1e-6, atol=1e-7)\n"
        "assert np.allclose(fastnn.ops.matmul(a, a, trans_b=True), a @ a.T)\n"
    )
    for level in _levels(kern):
        out = _child(code, FASTNN_ISA=level).stdout
        assert out.startswith(f"['{level}']"), out
        assert f"FASTNN_ISA={level}" in out
    bad = _child(code, FASTNN_ISA="avx1024")
    assert bad.stdout.startswith(f"['{kern.best_isa()}']")
    assert "FASTNN_ISA='avx1024'" in bad.stderr


def test_tunables_reach_the_compiled_code(kern):
    names = set(kern.tunable_names())
    assert names - {"gemm_mode"} == {t.name for t in tuning.TUNABLES if t.compiled}
    for t in tuning.TUNABLES:
        assert t.doc and t.unit and t.users, t.name
    before = kern.get_tunable("rnn_small_elements")
    with tuning.override(rnn_small_elements=12345, gemm_small_max_f32=7):
        assert kern.get_tunable("rnn_small_elements") == 12345
        assert kern.get_tunable("gemm_small_max_f32") == 7
        assert tuning.value("gemm_small_max_f32") == {isa: 7 for isa in tuning.ISAS}
    assert kern.get_tunable("rnn_small_elements") == before == tuning.value("rnn_small_elements")
    with pytest.raises(KeyError, match="unknown tunable"):
        tuning.set_value("no_such_threshold", 1)
    with pytest.raises(KeyError):
        kern.set_tunable("no_such_threshold", 1.0)


def test_moved_settings_still_read_from_config():
    assert _config.PARALLEL_MIN_ELEMENTS == tuning.value("parallel_min_elements") == 1 << 19
    assert _config.PARALLEL_MIN_ELEMENTS_CHEAP == tuning.value("parallel_min_elements_cheap") == 1 << 21
    with pytest.raises(AttributeError):
        _config.NO_SUCH_SETTING  # noqa: B018 - the attribute access is what raises


@pytest.mark.slow
def test_fastnn_tuning_environment(kern):
    code = (
        "import fastnn\n"
        "from fastnn.backends import tuning\n"
        "fastnn.set_backend('cython')\n"
        "from fastnn._ext import _kernels\n"
        "print(tuning.value('rnn_small_elements'), _kernels.get_tunable('rnn_small_elements'),\n"
        "      tuning.value('gemm_packed_max_f64'))\n"
    )
    run = _child(code, FASTNN_TUNING="rnn_small_elements=4096, bogus=3, gemm_packed_max_f64=1e9")
    assert run.stdout.split()[:2] == ["4096", "4096.0"]
    assert "1000000000" in run.stdout
    assert "FASTNN_TUNING: ignoring 'bogus=3'" in run.stderr
