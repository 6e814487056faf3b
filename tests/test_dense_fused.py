"""The dense backward's fused pass: δ = dL/dy ⊙ act'(y) and dL/db formed in one read of dL/dy.

The Cython backend forms δ and the bias gradient tile by tile (``dact_colsum``:
δ of 16 rows, then their column sums while they are in cache; chunks of
columns split over the team when large), the Numba backend in one loop
(``_delta_bias``). Both are checked against the
unfused computation (δ first, then the column sums, rows added in order:
the same bits), against the NumPy reference, at widths that are not
multiples of the column chunk or the vector width, batch 1, on 1 and 2
threads and through finite differences.
"""

import numpy as np
import pytest
from conftest import reference, tol

import fastnn
from fastnn import ops
from fastnn.backends import tuning
from fastnn.gradcheck import gradcheck

ACTS = ["identity", "relu", "sigmoid", "tanh"]
# columns around the team's chunk of 256 (FNN_COLSUM_CHUNK), the 64-column block of sums and the 8- and
# 16-lane vectors; rows from batch 1 across tiles of 16 (FNN_COLSUM_ROWS)
SHAPES = [(1, 1), (1, 65), (3, 7), (5, 64), (17, 63), (33, 200), (5, 255), (7, 256), (9, 257), (128, 1030)]


def _cython_ext():
    try:
        with fastnn.use_backend("cython"):
            from fastnn._ext import _kernels
    except Exception as exc:  # a build without the extension
        pytest.skip(f"cython backend unavailable: {exc}")
    return _kernels


def _unfused(g, y, act):
    """δ by the backend's own activation backward, then Σ over rows in row order (the loop the fused pass
    replaces); the NumPy reference's δ where the backend is NumPy."""
    d = g.copy() if act == "identity" else getattr(ops, act + "_backward")(g, y)
    s = np.zeros(g.shape[1], g.dtype)
    for row in d:
        s += row
    return d, s


def _inputs(rng, rows, cols, act, dtype):
    g = rng.standard_normal((rows, cols)).astype(dtype)
    y = rng.standard_normal((rows, cols)).astype(dtype)
    if act == "sigmoid":
        y = 1 / (1 + np.exp(-y))
    elif act == "tanh":
        y = np.tanh(y)
    elif act == "relu":
        y = np.maximum(y, 0)
    return g, y.astype(dtype)


@pytest.mark.parametrize("rows,cols", SHAPES, ids=str)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("threads", [1, 2])
def test_cython_fused_pass_gives_the_unfused_bits(rows, cols, act, threads, dtype, rng):
    ext = _cython_ext()
    g, y = _inputs(rng, rows, cols, act, dtype)
    with fastnn.use_backend("cython"):
        want_d, want_s = _unfused(g, y, act)
    delta = np.full_like(g, np.nan)
    gb = np.full(cols, np.nan, dtype)
    prev = fastnn.get_num_threads()
    fastnn.set_num_threads(threads)
    try:
        # parallel_min_elements_cheap=1: the team takes the column chunks at these small sizes too
        with tuning.override(parallel_min_elements_cheap=1):
            ext.act_backward_colsum(g, y, ext.ACTIVATIONS[act], delta, gb)
            delta2 = np.full_like(g, np.nan)
            ext.act_backward_colsum(g, y, ext.ACTIVATIONS[act], delta2, None)
    finally:
        fastnn.set_num_threads(prev)
    np.testing.assert_array_equal(delta, want_d)
    np.testing.assert_array_equal(gb, want_s)
    np.testing.assert_array_equal(delta2, want_d)


@pytest.mark.parametrize("rows,cols", SHAPES, ids=str)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("threads", [1, 2])
def test_dense_backward_fused_matches_reference(backend, rows, cols, act, threads, dtype, rng):
    nin = 11
    x = rng.standard_normal((rows, nin)).astype(dtype)
    w = rng.standard_normal((cols, nin)).astype(dtype)
    g, y = _inputs(rng, rows, cols, act, dtype)
    prev = fastnn.get_num_threads()
    fastnn.set_num_threads(threads)
    try:
        with tuning.override(parallel_min_elements_cheap=1):
            gi, gw, gb = ops.dense_backward(g, x, w, y, act)
    finally:
        fastnn.set_num_threads(prev)
    ri, rw, rb = reference("dense_backward", g, x, w, y, act)
    np.testing.assert_allclose(gb, rb, **tol(dtype, 4 * np.sqrt(rows)))
    np.testing.assert_allclose(gw, rw, **tol(dtype, 4 * np.sqrt(rows)))
    np.testing.assert_allclose(gi, ri, **tol(dtype, 4 * np.sqrt(cols)))
    if backend != "numpy":  # the compiled backends add the rows in order: the unfused loop's bits
        np.testing.assert_array_equal(gb, _unfused(g, y, act)[1])


@pytest.mark.parametrize("act", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("batch", [1, 5])
def test_linear_activation_gradcheck(backend, act, batch, rng):
    layers = {"relu": fastnn.nn.ReLU, "sigmoid": fastnn.nn.Sigmoid, "tanh": fastnn.nn.Tanh}
    fastnn.manual_seed(3)
    model = fastnn.nn.Sequential(fastnn.nn.Linear(7, 67), layers[act](), fastnn.nn.Linear(67, 3))
    x = rng.standard_normal((batch, 7))
    gradcheck(model, x, atol=1e-6, rtol=1e-5)
