"""fastnn's own GEMM (Numba and Cython) against numpy.matmul, and the fused dense layer.

The switch and the policy that picks the own GEMM or BLAS: tests/test_gemm_policy.py.
"""

import numpy as np
import pytest
from conftest import reference, tol

import fastnn
from fastnn import _config
from fastnn import gemm as fgemm
from fastnn.backends import backend_status

IMPLS = ("numba", "cython")


def _load(impl):
    status = backend_status()[impl]
    if status != "available":
        if impl in _config.required_backends():
            pytest.fail(f"backend {impl!r} is required but unavailable: {status}")
        pytest.skip(f"backend {impl!r} unavailable: {status}")
    if impl == "numba":
        from fastnn.backends.numba_backend import _gemm
    else:
        from fastnn.backends.cython_backend import _gemm
    return _gemm


@pytest.fixture(params=IMPLS)
def own(request):
    return _load(request.param)


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    before = fastnn.get_num_threads()
    fastnn.set_num_threads(request.param)
    yield request.param
    fastnn.set_num_threads(before)


def _operands(rng, m, k, n, ta, tb, dtype):
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    return a, b


def _want(a, b, ta, tb):
    return (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)


# (M, K, N): every edge of the register tiles (MR 4/6/12, NR 8..64), of the
# cache blocks (KC 256/384, MC 96, NC 2048/3072/4096) and of the thread split.
SHAPES = [
    (1, 1, 1),
    (1, 7, 31),
    (7, 1, 33),
    (31, 33, 1),
    (33, 127, 7),
    (127, 129, 31),
    (129, 31, 127),
    (7, 1000, 33),
    (1000, 7, 129),
    (97, 385, 65),
    (193, 257, 97),
    (13, 769, 3),
    (3, 5, 4100),
    (128, 784, 256),
    (32, 64, 128),
]


@pytest.mark.parametrize("m,k,n", SHAPES, ids=str)
@pytest.mark.parametrize(
    "ta,tb", [(False, False), (True, False), (False, True), (True, True)], ids=["NN", "TN", "NT", "TT"]
)
def test_own_gemm_matches_numpy(own, dtype, m, k, n, ta, tb, rng):
    a, b = _operands(rng, m, k, n, ta, tb, dtype)
    out = np.full((m, n), np.nan, dtype)
    got = own.gemm(a, b, ta, tb, out)
    assert got is out
    np.testing.assert_allclose(out, _want(a, b, ta, tb), **tol(dtype, 10 * np.sqrt(k)))


# serial; one slab of C per thread (tall and wide); threads sharing packed B (>= 768^3)
@pytest.mark.parametrize(
    "m,k,n", [(7, 33, 31), (129, 127, 1000), (1000, 127, 129), (200, 800, 300), (770, 771, 773)], ids=str
)
def test_own_gemm_threads(own, threads, dtype, m, k, n, rng):
    a, b = _operands(rng, m, k, n, False, True, dtype)
    out = np.empty((m, n), dtype)
    own.gemm(a, b, False, True, out)
    np.testing.assert_allclose(out, _want(a, b, False, True), **tol(dtype, 10 * np.sqrt(k)))


@pytest.mark.parametrize("isa", ["sse2", "avx2", "avx512"])
@pytest.mark.parametrize("route", ["packed", "small"])
@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (33, 129, 31), (127, 400, 129), (5, 3, 2100)], ids=str)
def test_cython_every_kernel_set(isa, route, dtype, m, k, n, rng):
    """Both own GEMMs on every instruction set the CPU has (a higher one is lowered to the best)."""
    cg = _load("cython")
    used = cg.set_isa(isa)
    try:
        assert used == isa or cg.isa() == used
        for ta, tb in [(False, False), (True, True)]:
            a, b = _operands(rng, m, k, n, ta, tb, dtype)
            bias = rng.standard_normal(n).astype(dtype)
            out = np.empty((m, n), dtype)
            cg.gemm(a, b, ta, tb, out, bias, "relu", route=route)
            want = np.maximum(_want(a, b, ta, tb) + bias, 0)
            np.testing.assert_allclose(out, want, **tol(dtype, 10 * np.sqrt(k)))
    finally:
        cg.set_isa("auto")


def test_own_gemm_non_contiguous(own, dtype, rng):
    base_a = rng.standard_normal((80, 90)).astype(dtype)
    base_b = rng.standard_normal((90, 70)).astype(dtype)
    cases = [
        (base_a[::2, ::3], base_b[::3, :]),  # strided views
        (np.asfortranarray(base_a[:40, :30]), base_b[:30, ::2]),  # Fortran order
        (base_a[1:41, 5:35], np.asfortranarray(base_b[:30, :20]).T.T),
    ]
    for a, b in cases:
        out = np.empty((a.shape[0], b.shape[1]), dtype)
        own.gemm(a, b, False, False, out)
        np.testing.assert_allclose(out, a.astype(np.float64) @ b, **tol(dtype, 100))
        # the same operands reached through the transpose flags
        out2 = np.empty_like(out)
        own.gemm(np.ascontiguousarray(a.T), b.T, True, True, out2)
        np.testing.assert_allclose(out2, out, **tol(dtype, 100))


def test_own_gemm_empty_and_k0(own, dtype):
    out = np.empty((0, 4), dtype)
    own.gemm(np.ones((0, 3), dtype), np.ones((3, 4), dtype), False, False, out)
    out = np.full((2, 4), 7, dtype)
    own.gemm(np.ones((2, 0), dtype), np.ones((0, 4), dtype), False, False, out)
    np.testing.assert_array_equal(out, np.zeros((2, 4)))
    bias = np.array([1, -2, 3, -4], dtype)
    own.gemm(np.ones((2, 0), dtype), np.ones((0, 4), dtype), False, False, out, bias, "relu")
    np.testing.assert_array_equal(out, [[1, 0, 3, 0]] * 2)


def test_own_gemm_nan_propagates(own, dtype):
    a = np.ones((40, 50), dtype)
    a[3, 7] = np.nan
    out = np.empty((40, 60), dtype)
    own.gemm(a, np.ones((50, 60), dtype), False, False, out, np.zeros(60, dtype), "relu")
    assert np.isnan(out[3]).all()
    assert np.isfinite(np.delete(out, 3, axis=0)).all()
    np.testing.assert_array_equal(out[0], 50)


ACTS = ["identity", "relu", "sigmoid", "tanh"]


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("bsz,i,o", [(1, 3, 2), (17, 33, 10), (128, 784, 256), (130, 100, 70)], ids=str)
def test_fused_dense_forward_matches_unfused(own, dtype, activation, with_bias, bsz, i, o, rng):
    x = rng.standard_normal((bsz, i)).astype(dtype)
    w = (rng.standard_normal((o, i)) / np.sqrt(i)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype) if with_bias else None
    out = np.empty((bsz, o), dtype)
    own.dense_forward(x, w, b, activation, out)
    want = reference(
        "dense_forward",
        x.astype(np.float64),
        w.astype(np.float64),
        None if b is None else b.astype(np.float64),
        activation,
    )
    np.testing.assert_allclose(out, want, **tol(dtype, 10 * np.sqrt(i)))


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("bsz,i,o", [(1, 3, 2), (17, 33, 10), (128, 300, 100)], ids=str)
def test_fused_dense_backward_matches_reference(own, dtype, activation, bsz, i, o, rng):
    x = rng.standard_normal((bsz, i)).astype(dtype)
    w = (rng.standard_normal((o, i)) / np.sqrt(i)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    y = reference("dense_forward", x, w, b, activation)
    g = rng.standard_normal((bsz, o)).astype(dtype)
    gi, gw, gb = np.empty_like(x), np.empty_like(w), np.empty(o, dtype)
    own.dense_backward(g, x, w, y, activation, gi, gw, gb)
    ri, rw, rb = reference("dense_backward", g, x, w, y, activation)
    s = 10 * np.sqrt(bsz + o)
    np.testing.assert_allclose(gi, ri, **tol(dtype, s))
    np.testing.assert_allclose(gw, rw, **tol(dtype, s))
    np.testing.assert_allclose(gb, rb, **tol(dtype, s))
    # without bias and input gradient
    gw2 = np.empty_like(w)
    assert own.dense_backward(g, x, w, y, activation, None, gw2, None) == (None, gw2, None)
    np.testing.assert_allclose(gw2, rw, **tol(dtype, s))


def test_gflops_table_rows():
    rows = fgemm.gflops_table(
        sizes=[16, (8, 12, 20)], backends=("numpy", "blas", "cython", "numba"), repeat=1, min_time=0.001
    )
    names = {r["backend"] for r in rows}
    assert {"numpy", "blas"} <= names or "numpy" in names
    for r in rows:
        assert r["gflops"] > 0 and r["seconds"] > 0
        assert (r["m"], r["k"], r["n"]) in {(16, 16, 16), (8, 12, 20)}
        if "ratio_to_blas" in r:
            assert r["ratio_to_blas"] > 0
    assert len(rows) == 2 * len(names)


@pytest.mark.parametrize("mode", ["own", "blas", "auto"])
def test_backend_kernels_follow_switch(compiled_backend, mode, dtype, rng):
    """matmul / dense kernels of each compiled backend give the same numbers on either GEMM."""
    from fastnn import ops

    a = rng.standard_normal((33, 70)).astype(dtype)
    b = rng.standard_normal((45, 70)).astype(dtype)
    bias = rng.standard_normal(45).astype(dtype)
    g = rng.standard_normal((33, 45)).astype(dtype)
    with fgemm.use_gemm(mode):
        got = ops.matmul(a, b, trans_b=True)
        y = ops.dense_forward(a, b, bias, "relu")
        ys = ops.dense_forward(a, b, bias, "sigmoid")
        gi, gw, gb = ops.dense_backward(g, a, b, y, "relu")
    np.testing.assert_allclose(got, a.astype(np.float64) @ b.T, **tol(dtype, 100))
    np.testing.assert_allclose(y, reference("dense_forward", a, b, bias, "relu"), **tol(dtype, 100))
    np.testing.assert_allclose(ys, reference("dense_forward", a, b, bias, "sigmoid"), **tol(dtype, 100))
    for got_g, want_g in zip((gi, gw, gb), reference("dense_backward", g, a, b, y, "relu")):
        np.testing.assert_allclose(got_g, want_g, **tol(dtype, 100))


@pytest.mark.parametrize("mode", ["own", "auto"])
def test_cython_small_kernel_every_edge(mode, dtype, rng):
    """The Cython small-product kernel (own GEMM up to 192^3 multiply-adds).

    Covers its 8-row (AVX-512) and 4-row tiles and the leftover rows, the two-
    and one-vector column tiles, narrow outputs (padded, or the AVX-512 masked
    tail where the CPU has it), the block transpose
    that packs a transposed B (whole 16 x 16 / 8 x 8 blocks and the edges),
    and the dot-product paths (one output column; fewer than 4 rows times Bᵀ).
    """
    if "cython" not in fastnn.available_backends():
        pytest.skip("the Cython backend is not built")
    ops = fastnn.ops
    bad = []
    with fastnn.use_backend("cython"), fgemm.use_gemm(mode):
        for m in (1, 3, 4, 7, 8, 9, 13, 17, 33):
            for n in (1, 5, 10, 16, 17, 33, 48):
                for k in (1, 8, 16, 17, 40):
                    for ta, tb in [(False, False), (True, False), (False, True), (True, True)]:
                        a, b = _operands(rng, m, k, n, ta, tb, dtype)
                        out = np.full((m, n), np.nan, dtype)
                        ops.matmul(a, b, trans_a=ta, trans_b=tb, out=out)
                        want = _want(a, b, ta, tb)
                        if not np.allclose(out, want, **tol(dtype, 10 * np.sqrt(k))):
                            bad.append((m, k, n, ta, tb))
    assert not bad, f"wrong products for (m, k, n, trans_a, trans_b) in {bad[:10]}"


def test_numba_small_products_every_edge(dtype, rng):
    """The Numba own GEMM's small-product path (8-row tiles, masked edge tiles).

    Products up to 192^3 multiply-adds: full and partial 8-row blocks, two- and
    one-vector column tiles with a partial last vector, B read in place or
    copied (transposed: whole blocks by in-register transposes and the edges),
    with bias and every fused activation.
    """
    if "numba" not in fastnn.available_backends():
        pytest.skip("the Numba backend is not available")
    ng = _load("numba")
    bad = []
    for m in (1, 7, 8, 9, 17):
        for n in (1, 10, 16, 33):
            for k in (1, 9, 40):
                for ta, tb in [(False, False), (True, False), (False, True), (True, True)]:
                    for act in ("identity", "relu", "tanh"):
                        a, b = _operands(rng, m, k, n, ta, tb, dtype)
                        bias = rng.standard_normal(n).astype(dtype)
                        out = np.full((m, n), np.nan, dtype)
                        ng.gemm(a, b, ta, tb, out, bias, act)
                        want = _want(a, b, ta, tb) + bias
                        want = {"identity": want, "relu": np.maximum(want, 0), "tanh": np.tanh(want)}[act]
                        if not np.allclose(out, want, **tol(dtype, 10 * np.sqrt(k))):
                            bad.append((m, k, n, ta, tb, act))
    assert not bad, f"wrong products for (m, k, n, trans_a, trans_b, act) in {bad[:10]}"


def test_cython_small_kernel_team_same_bits(dtype, rng):
    """The small kernel split over a team gives the one-thread bits (each element sums over k in order).

    With the team threshold at 1 multiply-add every product below takes the
    team path: slabs of columns (n >= m, whole vectors; a transposed B packed
    per slab) or of rows (whole tiles), with fewer units than threads, with
    the bias, ReLU and sigmoid epilogues, and the accumulating dense backward.
    The shapes include, for vectors of 4, 8 or 16 lanes and tiles of 4, 6 or
    8 rows, slabs of a single column or of fewer than 4 rows, where the
    kernel's dot-product path would sum in another order than the tiles of
    the whole product.
    """
    if "cython" not in fastnn.available_backends():
        pytest.skip("the Cython backend is not built")
    from fastnn.backends import tuning

    ops = fastnn.ops
    shapes = [(200, 100, 256), (256, 200, 100), (200, 256, 100), (3, 5, 17), (37, 11, 9), (9, 40, 33), (1, 7, 70)]
    shapes += [(5, 40, 9), (9, 40, 17), (17, 40, 65), (9, 30, 2), (13, 30, 3), (17, 30, 3), (25, 30, 5)]
    before = fastnn.get_num_threads()
    try:
        with fastnn.use_backend("cython"), fgemm.use_gemm("own"), tuning.override(gemm_small_parallel_min_flops=1):
            for m, k, n in shapes:
                for ta, tb in [(False, False), (True, False), (False, True)]:
                    a, b = _operands(rng, m, k, n, ta, tb, dtype)
                    bias = rng.standard_normal(n).astype(dtype)
                    g = rng.standard_normal((m, n)).astype(dtype)
                    got = []
                    for threads in (1, 2, 3):
                        fastnn.set_num_threads(threads)
                        prod = ops.matmul(a, b, trans_a=ta, trans_b=tb)
                        if ta or tb:
                            got.append((prod,))
                            continue
                        x, w = a, np.ascontiguousarray(b.T)  # dense layer: y = x Wᵀ + b
                        y = ops.dense_forward(x, w, bias, "relu")
                        ys = ops.dense_forward(x, w, bias, "sigmoid")
                        got.append((prod, y, ys, *ops.dense_backward(g, x, w, y, "relu")))
                    np.testing.assert_allclose(got[0][0], _want(a, b, ta, tb), **tol(dtype, 10 * np.sqrt(k)))
                    for other in got[1:]:
                        for one, team in zip(got[0], other):
                            np.testing.assert_array_equal(team, one)
    finally:
        fastnn.set_num_threads(before)
