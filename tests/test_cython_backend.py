"""Cython-specific checks: build facts, threads, parallel and serial paths, aliasing, accuracy.

The generic kernel tests (tests/test_ops_*.py) already compare every kernel with
the reference; these cover what only the compiled backend has: the OpenMP
split above the ``parallel_min_elements`` tunables, the thread setting reaching
the extension, the float32 exp/tanh approximations, in-place calls and a
build without OpenMP. Instruction sets and tunables: tests/test_kernel_isa.py.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import _require_or_skip, reference, run_python, tol

import fastnn
from fastnn import ops
from fastnn.backends import get, tuning

EXT_MODULES = ("_kernels",)


@pytest.fixture(scope="module")
def cy():
    _require_or_skip("cython")
    return get("cython")


@pytest.fixture
def threads():
    """Set the thread count inside a test and restore it afterwards."""
    old = fastnn.get_num_threads()
    yield fastnn.set_num_threads
    fastnn.set_num_threads(old)


def _ext(name):
    import importlib

    return importlib.import_module(f"fastnn._ext.{name}")


def test_backend_info_and_no_fallbacks(cy):
    assert isinstance(cy.info["openmp"], bool)
    families = _ext("_kernels").family_isa()
    assert set(families) == {"elementwise", "gemm", "conv", "rnn"}
    assert cy.info["simd"].startswith(" ".join(f"{f}={isa}" for f, isa in families.items()))
    assert cy.info["openmp"] == _ext("_kernels").has_openmp()
    assert _ext("_kernels").omp_max_threads() >= 1
    # Every reference kernel is compiled: nothing falls back to the reference.
    assert not cy.fallbacks, sorted(cy.fallbacks)


def test_set_num_threads_reaches_every_module(cy, threads):
    for n in (1, 3, 2):
        threads(n)
        assert [_ext(m)._get_num_threads() for m in EXT_MODULES] == [n] * len(EXT_MODULES)
    with pytest.raises(ValueError):
        _ext("_kernels")._set_num_threads(0)


# Sizes around the parallel thresholds (parallel_min_elements for exp-based loops,
# parallel_min_elements_cheap for memory-bound ones) and the 32768-element chunk.
PAR_SIZES = [
    tuning.value("parallel_min_elements") - 1,
    tuning.value("parallel_min_elements"),
    3 * 32768 + 5,
    tuning.value("parallel_min_elements_cheap") + 3,
]


@pytest.mark.parametrize("n", PAR_SIZES)
@pytest.mark.parametrize("name", ["relu", "leaky_relu", "sigmoid", "tanh"])
def test_elementwise_serial_equals_parallel(cy, threads, dtype, name, n, rng):
    x = (rng.standard_normal(n) * 5).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    results = []
    with fastnn.use_backend("cython"):
        for nt in (1, 2):
            threads(nt)
            y = getattr(ops, name)(x)
            results.append((y, getattr(ops, name + "_backward")(g, y)))
    # elementwise: bit-identical whatever the thread split
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    np.testing.assert_allclose(results[1][0], reference(name, x), **tol(dtype, 4))


@pytest.mark.parametrize("shape", [(300, 1000), (70_000, 2), (3, 40_000), (1100, 1000)], ids=str)
def test_row_kernels_serial_equals_parallel(cy, threads, dtype, shape, rng):
    z = (rng.standard_normal(shape) * 4).astype(dtype)
    labels = rng.integers(0, shape[1], shape[0])
    g = rng.standard_normal(shape).astype(dtype)
    out = []
    with fastnn.use_backend("cython"):
        for nt in (1, 2):
            threads(nt)
            y = ops.softmax(z)
            out.append(
                (
                    y,
                    ops.softmax_backward(g, y),
                    *ops.softmax_cross_entropy(z, labels, "sum"),
                    *ops.mse_loss(z, g, "mean"),
                )
            )
    s, p = out
    for a, b in zip(s, p):
        if isinstance(a, float):  # reductions: partial sums combine in another order
            assert a == pytest.approx(b, rel=1e-12)
        else:
            np.testing.assert_array_equal(a, b)
    loss_ref, grad_ref = reference("softmax_cross_entropy", z, labels, "sum")
    assert p[2] == pytest.approx(loss_ref, rel=tol(dtype, 50)["rtol"])
    np.testing.assert_allclose(p[3], grad_ref, **tol(dtype, 10))


def test_dense_forward_parallel_bias_activation(cy, threads, dtype, rng):
    # 8200 x 128 outputs cross both parallel thresholds in the fused bias+activation pass
    x = rng.standard_normal((8200, 48)).astype(dtype)
    w = (rng.standard_normal((128, 48)) / 7).astype(dtype)
    b = rng.standard_normal(128).astype(dtype)
    threads(2)
    for act in ("identity", "relu", "sigmoid", "tanh"):
        with fastnn.use_backend("cython"):
            y = ops.dense_forward(x, w, b, act)
            gi, gw, gb = ops.dense_backward(np.ones_like(y), x, w, y, act)
        np.testing.assert_allclose(y, reference("dense_forward", x, w, b, act), **tol(dtype, 100))
        for got, want in zip((gi, gw, gb), reference("dense_backward", np.ones_like(y), x, w, y, act)):
            np.testing.assert_allclose(got, want, **tol(dtype, 300))


@pytest.mark.parametrize("n", [5, 200_003, 1_100_003])
@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_and_sgd_parallel_match_reference(cy, threads, dtype, n, decoupled, rng):
    threads(2)
    p0 = rng.standard_normal(n).astype(dtype)
    grads = [rng.standard_normal(n).astype(dtype) for _ in range(3)]
    state = {}
    for name in ("numpy", "cython"):
        p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
        vel, p2 = np.zeros_like(p0), p0.copy()
        with fastnn.use_backend(name):
            for step, g in enumerate(grads, 1):
                ops.adam_update(p, g, m, v, step, lr=0.01, weight_decay=0.1, decoupled=decoupled)
                ops.sgd_update(p2, g, vel, lr=0.1, momentum=0.9, nesterov=decoupled, weight_decay=0.01)
        state[name] = (p, m, v, p2, vel)
    for got, want in zip(state["cython"], state["numpy"]):
        np.testing.assert_allclose(got, want, **tol(dtype, 20))
    assert not np.array_equal(state["cython"][0], p0)


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "sigmoid", "tanh"])
def test_backward_in_place_aliasing(cy, dtype, name, rng):
    # out may be grad_out or y itself: the kernels take separate loops for those cases
    x = rng.standard_normal(1000).astype(dtype)
    with fastnn.use_backend("cython"):
        y = getattr(ops, name)(x)
        g = rng.standard_normal(1000).astype(dtype)
        want = reference(name + "_backward", g, y)
        bwd = getattr(ops, name + "_backward")
        g1 = g.copy()
        np.testing.assert_allclose(bwd(g1, y, out=g1), want, **tol(dtype, 4))
        y1 = y.copy()
        np.testing.assert_allclose(bwd(g, y1, out=y1), want, **tol(dtype, 4))
        both = y.copy()
        np.testing.assert_allclose(bwd(both, both, out=both), reference(name + "_backward", y, y), **tol(dtype, 4))


def test_float32_exp_tanh_approximation_accuracy(cy):
    # float32 uses polynomial exp/expm1: a few ulp against float64 libm
    x = np.concatenate(
        [np.linspace(-20, 20, 400_001), np.geomspace(1e-30, 1e-2, 1000), -np.geomspace(1e-30, 1e-2, 1000)]
    ).astype(np.float32)
    x64 = x.astype(np.float64)
    with fastnn.use_backend("cython"):
        t = ops.tanh(x)
        s = ops.sigmoid(x)
    assert np.max(np.abs(t - np.tanh(x64)) / np.maximum(np.abs(np.tanh(x64)), 1e-38)) < 4e-7
    want = 1 / (1 + np.exp(-x64))
    assert np.max(np.abs(s - want) / want) < 4e-7


def test_float64_exp_tanh_approximation_accuracy(cy):
    # float64 uses a degree-13 polynomial: a few ulp, far inside the 1e-12 test tolerance
    x = np.concatenate(
        [np.linspace(-45, 45, 300_001), np.geomspace(1e-300, 1e-2, 1000), -np.geomspace(1e-300, 1e-2, 1000)]
    )
    with fastnn.use_backend("cython"):
        t = ops.tanh(x)
        s = ops.sigmoid(x)
        z = x[:300_300].reshape(-1, 1001)[:, ::-1] * 20  # 300 rows of 1001 logits, non-contiguous
        sm = ops.softmax(z)
    assert np.max(np.abs(t - np.tanh(x)) / np.maximum(np.abs(np.tanh(x)), 1e-300)) < 2e-15
    e = np.exp(-np.abs(x))
    want = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
    assert np.max(np.abs(s - want) / want) < 2e-15
    np.testing.assert_allclose(sm, reference("softmax", z), rtol=1e-14, atol=1e-300)


def test_special_values(cy, dtype):
    x = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1e4, -1e4, 88.0, -88.0, -200.0], dtype)
    with fastnn.use_backend("cython"), np.errstate(all="raise"):
        t = ops.tanh(x)
        s = ops.sigmoid(x)
        r = ops.relu(x)
    assert np.isnan(t[0]) and np.isnan(s[0]) and np.isnan(r[0])
    np.testing.assert_array_equal(t[1:], np.tanh(x[1:].astype(np.float64)).astype(dtype))
    assert np.signbit(t[3]) and not np.signbit(t[4])
    np.testing.assert_array_equal(s[[1, 3, 4, 5, 7]], [1, 0.5, 0.5, 1, 1])
    assert s[2] == 0 and np.all(s[[6, 8, 9]] >= 0) and np.all(s[[6, 8, 9]] < 2e-38)
    np.testing.assert_array_equal(r[1:], [np.inf, 0, 0, 0, 1e4, 0, 88, 0, 0])


def test_softmax_in_place(cy, dtype, rng):
    x = (rng.standard_normal((7, 33)) * 3).astype(dtype)
    want = reference("softmax", x)
    with fastnn.use_backend("cython"):
        assert ops.softmax(x, out=x) is x
    np.testing.assert_allclose(x, want, **tol(dtype, 10))


@pytest.mark.parametrize(
    "m,k,n",
    [
        (4, 5, 16),
        (5, 7, 17),
        (9, 3, 31),
        (8, 1, 32),
        (3, 40, 33),
        (1, 64, 64),
        (2, 50, 40),
        (3, 300, 70),
        (130, 70, 100),
    ],
    ids=str,
)
def test_matmul_small_kernel_tile_edges(cy, dtype, m, k, n, rng):
    # the register-blocked small-GEMM path: tiles of 4 rows x 1-2 vectors, padded columns
    for ta in (False, True):
        for tb in (False, True):
            a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
            b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
            out = np.full((m, n), np.nan, dtype)
            with fastnn.use_backend("cython"):
                got = ops.matmul(a, b, trans_a=ta, trans_b=tb, out=out)
            want = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
            np.testing.assert_allclose(got, want, **tol(dtype, 10 * np.sqrt(k)))


def test_matmul_large_all_transposes(cy, dtype, rng):
    # BLAS path (above the small-GEMM limit) with every transpose combination
    for ta in (False, True):
        for tb in (False, True):
            a = rng.standard_normal((150, 120) if ta else (120, 150)).astype(dtype)
            b = rng.standard_normal((90, 150) if tb else (150, 90)).astype(dtype)
            with fastnn.use_backend("cython"):
                got = ops.matmul(a, b, trans_a=ta, trans_b=tb)
            want = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
            np.testing.assert_allclose(got, want, **tol(dtype, 200))


@pytest.mark.slow
def test_build_without_openmp(tmp_path):
    """FASTNN_NO_OPENMP=1 builds serial kernels that import and compute correctly."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "setup.py").exists() or shutil.which(os.environ.get("CC", "cc").split()[0]) is None:
        pytest.skip("needs the source tree and a C compiler")
    work = tmp_path / "src"
    work.mkdir()
    for item in ("setup.py", "pyproject.toml", "kernels"):
        src = root / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / item)
    shutil.copytree(root / "fastnn", work / "fastnn", ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    env = dict(os.environ, FASTNN_NO_OPENMP="1")
    build = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace", "-q"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    assert "OpenMP=no" in build.stdout
    code = (
        "import numpy as np, fastnn\n"
        "from fastnn._ext import _kernels\n"
        "assert not _kernels.has_openmp() and _kernels.omp_max_threads() == 1\n"
        "fastnn.set_backend('cython'); fastnn.set_num_threads(2)\n"
        "x = np.linspace(-3, 3, 200_001).astype(np.float32)\n"
        "assert np.allclose(fastnn.ops.tanh(x), np.tanh(x), rtol=1e-6, atol=1e-7)\n"
        "assert np.array_equal(fastnn.ops.relu(x), np.maximum(x, 0))\n"
        "a = np.arange(12.0).reshape(3, 4)\n"
        "assert np.allclose(fastnn.ops.matmul(a, a, trans_b=True), a @ a.T)\n"
        "print('ok', fastnn.backends.current().info)\n"
    )
    run = run_python(code, cwd=work, timeout=300, env=dict(os.environ, PYTHONPATH=str(work)))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "'openmp': False" in run.stdout
