"""Winograd F(2x2, 3x3): the Cython backend's float32 3x3 stride-1 convolutions with at least
``conv_winograd_min_channels`` input and output channels (32 by default; the cases below lower it
to 16 to stay small).

The transforms tile the output in 2x2 blocks, a block of 96 tiles at a time across the batch's
images, FNN_L tiles to a vector with a scalar tail per tile row, so the cases below cover odd and
even output sizes, tile rows narrower and wider than a vector, blocks that end inside an image or
a tile row, blocks of many small images, 1x1 images and every padding the kernel takes (0-2).
Each is checked against the NumPy reference in float64, forward, weight, bias and input
gradients, to float32 rounding of sums over C·9 (the transforms add at most a few roundings to
each product).
"""

import numpy as np
import pytest
from conftest import cython_kernels, reference, tol

import fastnn
from fastnn import ops
from fastnn.backends import tuning

# (B, C, O, H, W, padding)
CASES = [
    (2, 16, 16, 8, 8, 1),  # one block, even sizes
    (3, 17, 24, 7, 9, 1),  # odd sizes: a last tile row and column half outside
    (1, 20, 17, 5, 6, 0),  # no padding
    (2, 16, 19, 6, 5, 2),  # padding 2: dL/dx from dL/dy unpadded
    (1, 32, 16, 1, 1, 1),  # a 1x1 image: one tile, three quarters outside
    (2, 16, 16, 3, 3, 0),  # a 1x1 output
    (1, 16, 16, 13, 200, 1),  # tile rows of 100: vectors and a tail; 8 blocks, ending inside rows
    (5, 16, 16, 30, 30, 1),  # 225 tiles an image: blocks across image ends, five images on any team
    (13, 16, 16, 5, 5, 1),  # 9 tiles an image: a block holds 10 images and part of an 11th
]


@pytest.fixture(scope="module", autouse=True)
def _kernels():
    cython_kernels()


def _data(case, rng):
    B, C, O, H, W, p = case
    x = rng.standard_normal((B, C, H, W)).astype(np.float32)
    w = (rng.standard_normal((O, C, 3, 3)) / np.sqrt(9 * C)).astype(np.float32)
    b = rng.standard_normal(O).astype(np.float32)
    gy = rng.standard_normal((B, O, H + 2 * p - 2, W + 2 * p - 2)).astype(np.float32)
    return x, w, b, gy, p


def _run(x, w, b, gy, p):
    y = ops.conv2d_forward(x, w, b, padding=p)
    gx, gw, gb = ops.conv2d_backward(gy, x, w, padding=p)
    return y, gx, gw, gb


def _assert_close(got, want, C, H, W):
    y, gx, gw, gb = got
    np.testing.assert_allclose(y, want[0], **tol(np.float32, 10 * np.sqrt(9 * C)))
    np.testing.assert_allclose(gx, want[1], **tol(np.float32, 10 * np.sqrt(9 * C)))
    # dW sums over every image and pixel
    np.testing.assert_allclose(gw, want[2], **tol(np.float32, 10 * np.sqrt(y.shape[0] * H * W)))
    np.testing.assert_allclose(gb, want[3], **tol(np.float32, 10 * np.sqrt(y.shape[0] * H * W)))


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_winograd_matches_reference(case, threads, rng):
    x, w, b, gy, p = _data(case, rng)
    want = (reference("conv2d_forward", x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), padding=p),)
    want += reference("conv2d_backward", gy.astype(np.float64), x.astype(np.float64), w.astype(np.float64), padding=p)
    threads0 = fastnn.get_num_threads()
    fastnn.set_num_threads(threads)
    try:
        with fastnn.use_backend("cython"), tuning.override(conv_parallel_min_work=0, conv_winograd_min_channels=16):
            got = _run(x, w, b, gy, p)
            again = _run(x, w, b, gy, p)
    finally:
        fastnn.set_num_threads(threads0)
    _assert_close(got, want, case[1], case[3], case[4])
    for g, a in zip(got, again):  # the same bits on the same team
        np.testing.assert_array_equal(g, a)


def test_threshold_routes_between_winograd_and_direct(rng):
    """At the threshold the convolution runs Winograd (other roundings than the direct kernel, the
    same values to rounding); one channel short of it, the direct kernel's bits."""
    x, w, b, gy, p = _data((2, 16, 16, 12, 12, 1), rng)
    with fastnn.use_backend("cython"):
        with tuning.override(conv_winograd_min_channels=1 << 30):
            direct = _run(x, w, b, gy, p)
        with tuning.override(conv_winograd_min_channels=17):
            short = _run(x, w, b, gy, p)
        with tuning.override(conv_winograd_min_channels=16):
            wino = _run(x, w, b, gy, p)
    for d, s, wn in zip(direct, short, wino):
        np.testing.assert_array_equal(s, d)
        np.testing.assert_allclose(wn, d, **tol(np.float32, 100))
    assert not all(np.array_equal(d, wn) for d, wn in zip(direct, wino)), "Winograd did not run"


def test_other_geometries_keep_the_direct_kernel(rng):
    """Strided, dilated, non-3x3 and float64 convolutions do not take Winograd: at any threshold they
    give the bits they give with Winograd off."""
    x = rng.standard_normal((2, 16, 9, 9)).astype(np.float32)
    cases = [
        dict(w=rng.standard_normal((16, 16, 3, 3)).astype(np.float32), stride=2, padding=1),
        dict(w=rng.standard_normal((16, 16, 3, 3)).astype(np.float32), dilation=2, padding=2),
        dict(w=rng.standard_normal((16, 16, 5, 5)).astype(np.float32), padding=2),
        dict(w=rng.standard_normal((16, 16, 3, 3)).astype(np.float32), padding=3),
    ]
    with fastnn.use_backend("cython"):
        for c in cases:
            w = c.pop("w")
            with tuning.override(conv_winograd_min_channels=1 << 30):
                off = ops.conv2d_forward(x, w, None, **c)
            with tuning.override(conv_winograd_min_channels=1):
                on = ops.conv2d_forward(x, w, None, **c)
            np.testing.assert_array_equal(on, off)
        x64, w64 = x.astype(np.float64), rng.standard_normal((16, 16, 3, 3))
        with tuning.override(conv_winograd_min_channels=1):
            np.testing.assert_allclose(
                ops.conv2d_forward(x64, w64, None, padding=1),
                reference("conv2d_forward", x64, w64, None, padding=1),
                **tol(np.float64, 100),
            )


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_input_keeps_the_reference_pattern(bad, rng):
    """An inf or NaN pixel, weight or output gradient: the transforms would mix it into its tile's
    neighbours (inf - inf), so such calls take the direct kernel or im2col, which keep the reference's
    pattern of inf and NaN."""
    x, w, b, gy, p = _data((1, 16, 16, 8, 8, 1), rng)
    x[0, 3, 4, 5] = bad
    w2 = w.copy()
    w2[2, 1, 1, 1] = bad
    g2 = gy.copy()
    g2[0, 5, 2, 3] = bad
    for xs, ws, gs in ((x, w, gy), (np.ones_like(x), w2, gy), (np.ones_like(x), w, g2)):
        want_y = reference("conv2d_forward", xs, ws, b, padding=p)
        want_b = reference("conv2d_backward", gs, xs, ws, padding=p)
        with fastnn.use_backend("cython"), tuning.override(conv_winograd_min_channels=1):
            got_y = ops.conv2d_forward(xs, ws, b, padding=p)
            got_b = ops.conv2d_backward(gs, xs, ws, padding=p)
        for got, want in zip((got_y,) + tuple(got_b), (want_y,) + tuple(want_b)):
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
            np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
