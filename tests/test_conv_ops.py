"""Convolution and pooling kernels: every backend and dtype against the reference,
finite differences for the backward kernels, PyTorch's functional ops, and errors."""

import numpy as np
import pytest
from conftest import reference, tol

import fastnn
from fastnn import ops
from fastnn.gradcheck import numerical_gradient

# (B, C, H, W, O, kH, kW, stride, padding, dilation)
CONV_CASES = [
    (1, 1, 5, 5, 1, 3, 3, 1, 0, 1),  # batch 1, one channel
    (2, 3, 7, 9, 4, 3, 3, 1, 1, 1),  # odd sizes, padding
    (3, 2, 11, 8, 5, 3, 3, 2, 1, 1),  # stride 2
    (2, 2, 10, 9, 3, 3, 2, (2, 1), (1, 0), 2),  # dilation, mixed pairs
    (1, 16, 6, 6, 24, 1, 1, 1, 0, 1),  # many channels, 1x1
    (5, 8, 9, 7, 6, 5, 3, 1, 2, (1, 2)),  # wide kernel, padding 2
    (4, 1, 28, 28, 8, 3, 3, 1, 1, 1),  # W5 first layer
    (2, 3, 4, 4, 2, 4, 4, 3, 0, 1),  # kernel as big as the input
]


def _conv_data(case, dtype, rng):
    B, C, H, W, O, kh, kw, s, p, d = case
    x = rng.standard_normal((B, C, H, W)).astype(dtype)
    w = (rng.standard_normal((O, C, kh, kw)) / np.sqrt(C * kh * kw)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    return x, w, b, s, p, d


@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv2d_matches_reference(backend, dtype, case, rng):
    x, w, b, s, p, d = _conv_data(case, dtype, rng)
    k = x.shape[1] * w.shape[2] * w.shape[3]
    y = ops.conv2d_forward(x, w, b, s, p, d)
    y_ref = reference("conv2d_forward", x, w, b, s, p, d)
    np.testing.assert_allclose(y, y_ref, **tol(dtype, 10 * np.sqrt(k)))
    y0 = ops.conv2d_forward(x, w, None, s, p, d)
    np.testing.assert_allclose(y0, y_ref - b[None, :, None, None], **tol(dtype, 20 * np.sqrt(k)))
    g = rng.standard_normal(y.shape).astype(dtype)
    got = ops.conv2d_backward(g, x, w, s, p, d)
    want = reference("conv2d_backward", g, x, w, s, p, d)
    n = y.shape[0] * y.shape[2] * y.shape[3]
    for name, a, e in zip(("grad_input", "grad_weight", "grad_bias"), got, want):
        np.testing.assert_allclose(a, e, err_msg=name, **tol(dtype, 10 * np.sqrt(max(n, k))))


def test_conv2d_backward_options_and_buffers(backend, dtype, rng):
    x, w, b, s, p, d = _conv_data(CONV_CASES[2], dtype, rng)
    y = ops.conv2d_forward(x, w, b, s, p, d)
    g = rng.standard_normal(y.shape).astype(dtype)
    gi_ref, gw_ref, gb_ref = reference("conv2d_backward", g, x, w, s, p, d)
    gw = np.full(w.shape, 7.0, dtype)  # must be overwritten, not accumulated
    gi, gw2, gb = ops.conv2d_backward(g, x, w, s, p, d, bias=False, input_grad=False, grad_weight=gw)
    assert gi is None and gb is None and gw2 is gw
    np.testing.assert_allclose(gw, gw_ref, **tol(dtype, 100))
    out = np.full(y.shape, np.nan, dtype)
    assert ops.conv2d_forward(x, w, b, s, p, d, out=out) is out
    np.testing.assert_allclose(out, y, **tol(dtype, 10))


def test_conv2d_large_batch_is_chunked(backend, rng):
    """A batch whose columns exceed one chunk: the chunks must add up exactly."""
    x = rng.standard_normal((9, 8, 40, 40)).astype(np.float32)
    w = (rng.standard_normal((6, 8, 3, 3)) / 9).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    y = ops.conv2d_forward(x, w, b, 1, 1)
    np.testing.assert_allclose(y, reference("conv2d_forward", x, w, b, 1, 1), **tol(np.float32, 100))
    g = rng.standard_normal(y.shape).astype(np.float32)
    for a, e in zip(ops.conv2d_backward(g, x, w, 1, 1), reference("conv2d_backward", g, x, w, 1, 1)):
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("mode", ["auto", "blas"])
@pytest.mark.parametrize("case", CONV_CASES + [(2, 16, 40, 40, 24, 3, 3, 1, 1, 1)], ids=str)
def test_conv2d_forward_both_gemm_paths(backend, dtype, case, mode, rng):
    """The forward pass as the own GEMM runs it (the Numba backend's fused
    lowering + products, band by band: the last case has several bands per
    image) and on BLAS (chunked im2col), both against the reference."""
    x, w, b, s, p, d = _conv_data(case, dtype, rng)
    k = x.shape[1] * w.shape[2] * w.shape[3]
    with fastnn.gemm.use_gemm(mode):
        y = ops.conv2d_forward(x, w, b, s, p, d)
        y0 = ops.conv2d_forward(x, w, None, s, p, d)
    y_ref = reference("conv2d_forward", x, w, b, s, p, d)
    np.testing.assert_allclose(y, y_ref, **tol(dtype, 10 * np.sqrt(k)))
    np.testing.assert_allclose(y0, y_ref - b[None, :, None, None], **tol(dtype, 20 * np.sqrt(k)))


@pytest.mark.parametrize("case", [CONV_CASES[1], CONV_CASES[3]], ids=str)
def test_conv2d_backward_finite_differences(backend, case, rng):
    x, w, b, s, p, d = _conv_data(case, np.float64, rng)
    g = rng.standard_normal(ops.conv2d_forward(x, w, b, s, p, d).shape)

    def loss():
        return float(np.sum(ops.conv2d_forward(x, w, b, s, p, d) * g))

    gi, gw, gb = ops.conv2d_backward(g, x, w, s, p, d)
    np.testing.assert_allclose(gi, numerical_gradient(loss, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gw, numerical_gradient(loss, w), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gb, numerical_gradient(loss, b), rtol=1e-6, atol=1e-7)


# (B, C, H, W, kernel, stride, padding)
POOL_CASES = [
    (1, 1, 4, 4, 2, None, 0),
    (2, 3, 7, 9, 2, 2, 0),  # odd sizes: last row/column dropped
    (2, 2, 9, 8, 3, 2, 1),  # padding
    (3, 4, 6, 7, 3, 1, 1),  # overlapping windows
    (1, 5, 8, 10, (2, 3), (1, 2), (1, 1)),
    (4, 16, 28, 28, 2, 2, 0),  # W5 pooling, parallel path
]


def _tied(shape, dtype, rng):
    """Input with many ties (small integers), so the tie-breaking rule is exercised."""
    return rng.integers(-2, 3, size=shape).astype(dtype)


@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_max_pool2d_matches_reference(backend, dtype, case, rng):
    B, C, H, W, k, s, p = case
    for x in (rng.standard_normal((B, C, H, W)).astype(dtype), _tied((B, C, H, W), dtype, rng)):
        y, idx = ops.max_pool2d_forward(x, k, s, p)
        y_ref, idx_ref = reference("max_pool2d_forward", x, k, s, p)
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(idx, idx_ref)
        g = rng.standard_normal(y.shape).astype(dtype)
        gi = ops.max_pool2d_backward(g, idx, x.shape)
        np.testing.assert_allclose(gi, reference("max_pool2d_backward", g, idx_ref, x.shape), **tol(dtype))


@pytest.mark.parametrize("case", POOL_CASES, ids=str)
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool2d_matches_reference(backend, dtype, case, count_include_pad, rng):
    B, C, H, W, k, s, p = case
    x = rng.standard_normal((B, C, H, W)).astype(dtype)
    y = ops.avg_pool2d_forward(x, k, s, p, count_include_pad)
    np.testing.assert_allclose(y, reference("avg_pool2d_forward", x, k, s, p, count_include_pad), **tol(dtype, 4))
    g = rng.standard_normal(y.shape).astype(dtype)
    gi = ops.avg_pool2d_backward(g, x.shape, k, s, p, count_include_pad)
    np.testing.assert_allclose(
        gi, reference("avg_pool2d_backward", g, x.shape, k, s, p, count_include_pad), **tol(dtype, 4)
    )


def test_max_pool_ties_nan_and_inf(backend, dtype):
    x = np.array([[[[1, 3, 3, 0], [3, 2, np.nan, 5], [-np.inf, -np.inf, 7, np.nan], [-np.inf, -np.inf, 7, 7]]]], dtype)
    y, idx = ops.max_pool2d_forward(x, 2, 2)
    np.testing.assert_array_equal(y, np.array([[[[3, np.nan], [-np.inf, np.nan]]]], dtype))
    # first maximum in row-major order; NaN beats numbers; all -inf -> first pixel
    np.testing.assert_array_equal(idx, [[[[1, 6], [8, 11]]]])
    gi = ops.max_pool2d_backward(np.ones((1, 1, 2, 2), dtype), idx, x.shape)
    assert gi.reshape(-1)[[1, 6, 8, 11]].tolist() == [1, 1, 1, 1] and gi.sum() == 4


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_backward_finite_differences(backend, kind, rng):
    x = rng.standard_normal((2, 3, 7, 6))  # distinct values: max pooling is differentiable there
    k, s, p = 3, 2, 1
    if kind == "max":
        y, idx = ops.max_pool2d_forward(x, k, s, p)
        g = rng.standard_normal(y.shape)
        gi = ops.max_pool2d_backward(g, idx, x.shape)
        loss = lambda: float(np.sum(ops.max_pool2d_forward(x, k, s, p)[0] * g))
    else:
        y = ops.avg_pool2d_forward(x, k, s, p)
        g = rng.standard_normal(y.shape)
        gi = ops.avg_pool2d_backward(g, x.shape, k, s, p)
        loss = lambda: float(np.sum(ops.avg_pool2d_forward(x, k, s, p) * g))
    np.testing.assert_allclose(gi, numerical_gradient(loss, x), rtol=1e-6, atol=1e-8)


def test_conv_and_pool_match_torch_functional(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rng.standard_normal((3, 4, 11, 10))
    w = rng.standard_normal((5, 4, 3, 2))
    b = rng.standard_normal(5)
    for s, p, d in [(1, 0, 1), (2, 1, 1), ((1, 2), (2, 1), (2, 1))]:
        want = F.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(b), s, p, d).numpy()
        with fastnn.use_backend("numpy"):
            np.testing.assert_allclose(ops.conv2d_forward(x, w, b, s, p, d), want, rtol=1e-10, atol=1e-12)
    for k, s, p in [(2, 2, 0), (3, 2, 1), ((3, 2), 1, (1, 0))]:
        ty, ti = F.max_pool2d(torch.tensor(x), k, s, p, return_indices=True)
        with fastnn.use_backend("numpy"):
            y, idx = ops.max_pool2d_forward(x, k, s, p)
            np.testing.assert_array_equal(y, ty.numpy())
            np.testing.assert_array_equal(idx, ti.numpy())
            for cip in (True, False):
                want = F.avg_pool2d(torch.tensor(x), k, s, p, count_include_pad=cip).numpy()
                np.testing.assert_allclose(ops.avg_pool2d_forward(x, k, s, p, cip), want, rtol=1e-12)


def test_conv_errors(backend):
    x = np.ones((2, 3, 5, 5), np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"3 channels.*\(2, 3, 5, 5\).*expects 2"):
        ops.conv2d_forward(x, np.ones((4, 2, 3, 3), np.float32))
    with pytest.raises(ValueError, match=r"4-D.*\(3, 5, 5\)"):
        ops.conv2d_forward(x[0], w)
    with pytest.raises(ValueError, match=r"smaller than the kernel.*\(4, 3, 7, 7\)"):
        ops.conv2d_forward(x, np.ones((4, 3, 7, 7), np.float32))
    with pytest.raises(ValueError, match=r"smaller than the kernel"):
        ops.conv2d_forward(x, w, dilation=3)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        ops.conv2d_forward(x, w, stride=0)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        ops.conv2d_forward(x, w, stride=(1, 0))
    with pytest.raises(ValueError, match="padding must be >= 0"):
        ops.conv2d_forward(x, w, padding=-1)
    with pytest.raises(TypeError):
        ops.conv2d_forward(x, w.astype(np.float64))
    with pytest.raises(TypeError):
        ops.conv2d_forward(x.astype(int), w)
    with pytest.raises(TypeError, match="stride"):
        ops.conv2d_forward(x, w, stride=1.5)
    with pytest.raises(ValueError, match="bias"):
        ops.conv2d_forward(x, w, np.ones(3, np.float32))
    with pytest.raises(ValueError, match="grad_out"):
        ops.conv2d_backward(np.ones((2, 4, 4, 4), np.float32), x, w)


def test_pool_errors(backend):
    x = np.ones((2, 3, 5, 5), np.float32)
    with pytest.raises(ValueError, match=r"\(2, 3, 5, 5\).*smaller than the kernel size \(6, 6\)"):
        ops.max_pool2d_forward(x, 6)
    with pytest.raises(ValueError, match=r"smaller than the kernel size"):
        ops.avg_pool2d_forward(x, (2, 7))
    with pytest.raises(ValueError, match=r"4-D.*\(5, 5\)"):
        ops.max_pool2d_forward(x[0, 0], 2)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        ops.avg_pool2d_forward(x, 2, 0)
    with pytest.raises(ValueError, match="at most half"):
        ops.max_pool2d_forward(x, 2, 2, 2)
    y, idx = ops.max_pool2d_forward(x, 2)
    bad = idx.copy()
    bad[0, 0, 0, 0] = 25
    with pytest.raises(ValueError, match="indices"):
        ops.max_pool2d_backward(np.ones_like(y), bad, x.shape)
    with pytest.raises(TypeError, match="int64"):
        ops.max_pool2d_backward(np.ones_like(y), idx.astype(np.int32), x.shape)


def test_nan_propagates_through_conv(backend, dtype):
    x = np.ones((1, 1, 5, 5), dtype)
    x[0, 0, 2, 2] = np.nan
    y = ops.conv2d_forward(x, np.ones((1, 1, 3, 3), dtype))
    assert np.isnan(y[0, 0]).all()
    y = ops.conv2d_forward(x, np.ones((1, 1, 1, 1), dtype))
    assert np.isnan(y[0, 0, 2, 2]) and np.isfinite(y).sum() == 24


def test_empty_batch(backend, dtype):
    x = np.ones((0, 3, 6, 6), dtype)
    w = np.ones((4, 3, 3, 3), dtype)
    y = ops.conv2d_forward(x, w, np.ones(4, dtype), padding=1)
    assert y.shape == (0, 4, 6, 6)
    gi, gw, gb = ops.conv2d_backward(y, x, w, padding=1, grad_weight=np.full(w.shape, 5, dtype))
    assert gi.shape == x.shape and not gw.any() and not gb.any()
    y, idx = ops.max_pool2d_forward(x, 2)
    assert y.shape == (0, 3, 3, 3) and ops.max_pool2d_backward(y, idx, x.shape).shape == x.shape
    y = ops.avg_pool2d_forward(x, 2)
    assert ops.avg_pool2d_backward(y, x.shape, 2).shape == x.shape
