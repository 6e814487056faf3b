"""Batch and layer normalisation on shapes and data that exercise the kernels' vector paths.

The compiled kernels take the statistics in one pass of shifted sums (a
second pass around the mean only where the shift lay more than σ from it),
summed in the data's dtype over short chunks and in float64 from there
(``kernels/norm.h``, ``fastnn/backends/numba_backend/norm.py``). Checked here:
every backend against the reference on sizes with whole vectors and tails;
the statistics against exact float64 ones on hard data (a mean 1e4 times the
standard deviation, a shift far from the mean, constant groups), within
``STAT_RTOL``; the edge cases of one row, one value per row, two values per
channel; strided input.
"""

import numpy as np
import pytest

import fastnn
from fastnn import ops

#: relative error bound tested for a float32 variance (and twice that of rstd); see kernels/norm.h
STAT_RTOL = {np.float32: 2e-6, np.float64: 1e-13}
#: the mean, rounded to the dtype: within this many of its roundings (float64: the exact sum's own error too)
_ULPS = {np.float32: 2, np.float64: 16}
F32 = dict(rtol=2e-4, atol=2e-5)
F64 = dict(rtol=1e-10, atol=1e-12)


def _tol(dtype):
    return F32 if np.dtype(dtype) == np.float32 else F64


def _bn(x, training=True, w=None, b=None):
    """Forward and backward of ops.batch_norm_* with a fixed upstream gradient."""
    C = x.shape[1]
    rng = np.random.default_rng(7)
    w = rng.uniform(0.5, 1.5, C).astype(x.dtype) if w is None else w
    b = rng.uniform(-0.5, 0.5, C).astype(x.dtype) if b is None else b
    rm, rv = np.zeros(C, x.dtype), np.ones(C, x.dtype)
    y, mean, var = ops.batch_norm_forward(x, w, b, rm, rv, training=training)
    g = rng.standard_normal(x.shape).astype(x.dtype)
    grads = ops.batch_norm_backward(g, x, w, mean, var, training=training)
    return y, mean, var, grads


def _ln(x, ns, affine=True):
    rng = np.random.default_rng(8)
    K = int(np.prod(ns))
    w = rng.uniform(-1.0, 1.5, K).astype(x.dtype) if affine else None
    b = rng.uniform(-1.0, 1.0, K).astype(x.dtype) if affine else None
    y, mean, rstd = ops.layer_norm_forward(x, ns, w, b)
    g = rng.standard_normal(x.shape).astype(x.dtype)
    grads = ops.layer_norm_backward(g, x, ns, w, mean, rstd, bias=affine)
    return y, mean, rstd, grads


def _close(got, want, dtype, what):
    for i, (a, b) in enumerate(zip(got, want)):
        if a is None or b is None:
            assert a is None and b is None, what
            continue
        np.testing.assert_allclose(a, b, err_msg=f"{what} [{i}]", **_tol(dtype))


@pytest.mark.parametrize(
    "shape",
    [(256, 96), (67, 203), (3, 1030), (4, 8, 16, 16), (5, 7, 9, 11), (2, 3, 300)],
)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_matches_reference(backend, dtype, shape, training):
    x = (np.random.default_rng(1).standard_normal(shape) * 2 + 0.5).astype(dtype)
    got = _bn(x, training)
    with fastnn.use_backend("numpy"):
        want = _bn(x, training)
    _close(got[:3], want[:3], dtype, "forward")
    _close(got[3], want[3], dtype, "backward")


@pytest.mark.parametrize("shape,ns", [((33, 1000), 1000), ((7, 257), 257), ((4, 3), 3), ((2, 5, 64), (5, 64))])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_matches_reference(backend, dtype, shape, ns, affine):
    x = (np.random.default_rng(2).standard_normal(shape) * 3 - 1).astype(dtype)
    got = _ln(x, ns, affine)
    with fastnn.use_backend("numpy"):
        want = _ln(x, ns, affine)
    _close(got[:3], want[:3], dtype, "forward")
    _close(got[3], want[3], dtype, "backward")


def _exact(x, axis):
    """Mean and biased variance of x's values in float64, two-pass."""
    x64 = x.astype(np.float64)
    m = x64.mean(axis=axis)
    return m, ((x64 - np.expand_dims(m, axis)) ** 2).mean(axis=axis)


def _hard(rng, shape, dtype, kind, layer):
    """Data on which a one-pass sum of squares loses every digit in float32."""
    z = rng.standard_normal(shape)
    if kind == "offset":  # |mean| / std = 1e4
        return (1e4 + z).astype(dtype)
    if kind == "far_shift":  # the leading values of each group, which set the shift, lie 50σ off
        if layer == "ln":
            z[:, :8] += 50.0
        elif z.ndim == 2:
            z[:8] += 50.0
        else:
            z[0].reshape(z.shape[1], -1)[:, :8] += 50.0
        return (z * 0.01 + 3.0).astype(dtype)
    return (z * 1e-3 - 7.0).astype(dtype)  # "small": std 1e-3 around -7


@pytest.mark.parametrize("kind", ["offset", "far_shift", "small"])
@pytest.mark.parametrize("shape", [(256, 64), (16, 8, 12, 12)])
def test_batch_norm_statistics_on_hard_data(compiled_backend, dtype, kind, shape):
    rng = np.random.default_rng(3)
    x = _hard(rng, shape, dtype, kind, "bn")
    _, mean, var, _ = _bn(x)
    axes = (0,) + tuple(range(2, x.ndim))
    m, v = _exact(x, axes)
    np.testing.assert_allclose(var, v, rtol=STAT_RTOL[np.dtype(dtype).type], atol=0)
    eps_d = np.finfo(dtype).eps
    # the mean within a few roundings of its magnitude in the dtype, plus the sums' share of σ
    assert np.all(
        np.abs(mean - m)
        <= _ULPS[np.dtype(dtype).type] * eps_d * np.abs(m) + STAT_RTOL[np.dtype(dtype).type] * np.sqrt(v)
    )


@pytest.mark.parametrize("kind", ["offset", "far_shift", "small"])
@pytest.mark.parametrize("shape", [(40, 1024), (9, 300)])
def test_layer_norm_statistics_on_hard_data(compiled_backend, dtype, kind, shape):
    x = _hard(np.random.default_rng(4), shape, dtype, kind, "ln")
    _, mean, rstd, _ = _ln(x, shape[-1], affine=False)
    m, v = _exact(x, 1)
    r = 1.0 / np.sqrt(v + 1e-5)
    np.testing.assert_allclose(rstd, r, rtol=STAT_RTOL[np.dtype(dtype).type], atol=0)
    eps_d = np.finfo(dtype).eps
    assert np.all(
        np.abs(mean - m)
        <= _ULPS[np.dtype(dtype).type] * eps_d * np.abs(m) + STAT_RTOL[np.dtype(dtype).type] * np.sqrt(v)
    )


def test_constant_groups_have_zero_variance(backend, dtype):
    x = np.full((64, 40), 3.25, dtype)
    x[:, 1] = np.arange(64)  # one channel that varies
    got = _bn(x, w=np.ones(40, dtype), b=np.full(40, 0.5, dtype))
    y, mean, var = got[:3]
    assert var[0] == 0 and mean[0] == 3.25  # no rounding error left in a constant channel's statistics
    np.testing.assert_allclose(y[:, 0], 0.5, **_tol(dtype))
    with fastnn.use_backend("numpy"):
        want = _bn(x, w=np.ones(40, dtype), b=np.full(40, 0.5, dtype))
    _close(got[:3], want[:3], dtype, "forward")
    _close(got[3], want[3], dtype, "backward")
    y, mean, rstd, _ = _ln(np.full((5, 300), -2.5, dtype), 300, affine=False)
    assert np.all(mean == -2.5) and np.all(y == 0)
    np.testing.assert_allclose(rstd, 1 / np.sqrt(1e-5), rtol=1e-6)


def test_edge_sizes(backend, dtype):
    rng = np.random.default_rng(5)
    a, b, c, d = (rng.standard_normal(s).astype(dtype) for s in ((1, 700), (9, 1), (2, 70), (1, 3, 41)))
    cases = [
        lambda: _ln(a, 700),  # one row
        lambda: _ln(b, 1),  # one value per row: x̂ = 0
        lambda: _bn(c),  # two values per channel
        lambda: _bn(d),  # N = 1, L > 1
    ]
    for i, case in enumerate(cases):
        got = case()
        with fastnn.use_backend("numpy"):
            want = case()
        _close(got[:3], want[:3], dtype, f"case {i} forward")
        _close(got[3], want[3], dtype, f"case {i} backward")
    y = _ln(np.arange(9, dtype=dtype).reshape(9, 1), 1, affine=False)[0]
    assert np.all(y == 0)


def _bn_cases(x, training, affine, input_grad):
    """Forward and backward of ops.batch_norm_* with or without γ/β and dL/dx (fixed upstream gradient)."""
    C = x.shape[1]
    rng = np.random.default_rng(11)
    w = rng.uniform(0.5, 1.5, C).astype(x.dtype) if affine else None
    b = rng.uniform(-0.5, 0.5, C).astype(x.dtype) if affine else None
    rm, rv = rng.standard_normal(C).astype(x.dtype), rng.uniform(0.5, 2.0, C).astype(x.dtype)
    y, mean, var = ops.batch_norm_forward(x, w, b, rm, rv, training=training)
    g = rng.standard_normal(x.shape).astype(x.dtype)
    grads = ops.batch_norm_backward(g, x, w, mean, var, training=training, input_grad=input_grad)
    return (y, mean, var, rm, rv) + tuple(grads)


@pytest.mark.parametrize(
    "shape",
    [
        (13, 37),  # L = 1: a block of 8 rows and 5 single rows (4 and 1 for the backward's sums), a channel tail
        (3, 5),  # fewer rows than a block, fewer channels than a vector
        (2, 1),  # one channel
        (520, 600),  # two blocks of channels
        (3, 5, 7),  # runs shorter than a vector
        (2, 4, 33),  # a run of whole vectors and a tail
        (64, 6, 40, 40),  # channel blocks of runs (a block holds 2 channels' 64 x 1600 values)
    ],
)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_blocks_and_tails(backend, dtype, shape, training):
    """Every block and tail of the kernels' passes over rows, channels and runs, with and without γ/β and dL/dx."""
    x = (np.random.default_rng(12).standard_normal(shape) * 1.5 - 0.25).astype(dtype)
    for affine, input_grad in ((True, True), (False, True), (True, False)):
        got = _bn_cases(x, training, affine, input_grad)
        with fastnn.use_backend("numpy"):
            want = _bn_cases(x, training, affine, input_grad)
        _close(got, want, dtype, f"affine={affine} input_grad={input_grad}")


def test_batch_norm_one_row_in_evaluation(backend, dtype):
    """N = 1 (L = 1) normalises by the running statistics; training on it is refused (one value per channel)."""
    x = np.random.default_rng(13).standard_normal((1, 37)).astype(dtype)
    got = _bn_cases(x, False, True, True)
    with fastnn.use_backend("numpy"):
        want = _bn_cases(x, False, True, True)
    _close(got, want, dtype, "N = 1")
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        _bn_cases(x, True, True, True)


@pytest.mark.parametrize("shape", [(1, 5), (2, 17), (5, 33), (9, 1000), (17, 1024), (40, 3)])
def test_layer_norm_blocks_and_tails(backend, dtype, shape):
    """The backward's blocks of rows (pairs, a single last row, groups of 8 rows' column partials), column tails,
    with and without γ, β and dL/dx."""
    x = (np.random.default_rng(14).standard_normal(shape) * 2 + 1).astype(dtype)
    K = shape[-1]
    rng = np.random.default_rng(15)
    w, b = rng.uniform(-1, 1.5, K).astype(dtype), rng.uniform(-1, 1, K).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)

    def run(weight, bias, input_grad):
        y, mean, rstd = ops.layer_norm_forward(x, K, weight, bias)
        grads = ops.layer_norm_backward(g, x, K, weight, mean, rstd, bias=bias is not None, input_grad=input_grad)
        return (y, mean, rstd) + tuple(grads)

    for weight, bias, input_grad in ((w, b, True), (w, None, True), (None, None, True), (w, b, False)):
        got = run(weight, bias, input_grad)
        with fastnn.use_backend("numpy"):
            want = run(weight, bias, input_grad)
        _close(got, want, dtype, f"weight={weight is not None} bias={bias is not None} input_grad={input_grad}")


def test_strided_input_is_copied(backend, dtype):
    """A view that is not C-contiguous gives what its contiguous copy gives (the ops copy it)."""
    rng = np.random.default_rng(6)
    base = rng.standard_normal((64, 200)).astype(dtype)
    view = base[:, ::2]
    _close(_bn(view)[:3], _bn(np.ascontiguousarray(view))[:3], dtype, "batch norm")
    _close(_ln(view, 100)[:3], _ln(np.ascontiguousarray(view), 100)[:3], dtype, "layer norm")
    layer = fastnn.nn.LayerNorm(100, dtype=dtype)
    np.testing.assert_array_equal(layer(view), layer(np.ascontiguousarray(view)))


@pytest.mark.parametrize("threads", [1, 2])
def test_thread_count_changes_no_statistic(compiled_backend, threads):
    """Batch norm splits channels, layer norm rows: each statistic is summed in one order at any count."""
    x = np.random.default_rng(9).standard_normal((128, 512)).astype(np.float32)
    before = fastnn.get_num_threads()
    try:
        fastnn.set_num_threads(1)
        one = _bn(x), _ln(x, 512)
        fastnn.set_num_threads(threads)
        many = _bn(x), _ln(x, 512)
    finally:
        fastnn.set_num_threads(before)
    for a, b in zip(one, many):
        for u, v in zip(a[:3], b[:3]):
            np.testing.assert_array_equal(u, v)
        np.testing.assert_array_equal(a[3][0], b[3][0])  # dL/dx
        for u, v in zip(a[3][1:], b[3][1:]):  # layer norm's γ/β sums: one float64 sum per thread, added after
            np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-6)
