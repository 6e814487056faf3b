"""The 2x2, stride-2 max pooling (and its fused ReLU form in the training plans) keeps the scalar rule.

The compiled kernel works on vectors of windows; these tests hold it, on
every instruction set this CPU runs, to the one rule the kernels are written
to (the tournament a|b, c|d, then the two winners, each "take the right one
when !(right <= left) and left is not NaN"):

* values bit for bit (signs of zeros included) and indices exactly, through
  ``nn.MaxPool2d`` on every backend, for widths 2..40 (odd ones drop their
  last column; tails of every length), odd and even heights, data with many
  ties, -0.0 / 0.0 windows, NaN at every subset of a window's positions,
  infinities, float32 and float64;
* the ReLU form, through a compiled plan (the float32 image-by-image path,
  where the pooling reads a convolution's padded rows, and the stage-by-stage
  path): the per-step loop's bits and the NumPy specification to rounding,
  on data whose ties make the winner's index change the weight gradients.
"""

import numpy as np
import pytest
from conftest import cython_kernels, tol

import fastnn
from fastnn import nn, optim

WIDTHS = range(2, 41)


def _relu(v):
    """The elementwise ReLU's formula: !(v <= 0) ? v : +0 (NaN kept, -0 becomes +0)."""
    return np.where(~(v <= 0), v, np.zeros((), v.dtype))


def _scalar_rule(x, relu=False):
    """(values, flat indices) of 2x2 / stride-2 max pooling by the kernels' tournament, in NumPy."""
    H, W = x.shape[-2:]
    ho, wo = H // 2, W // 2
    q = x[..., : 2 * ho, : 2 * wo]
    px = (np.arange(ho)[:, None] * 2 * W + np.arange(wo)[None, :] * 2).astype(np.int64)
    cand = [(q[..., u::2, v::2], px + u * W + v) for u in (0, 1) for v in (0, 1)]
    if relu:
        cand = [(_relu(v), i) for v, i in cand]

    def pick(left, right):
        (lv, li), (rv, ri) = left, right
        take = ~(rv <= lv) & (lv == lv)
        return np.where(take, rv, lv), np.where(take, ri, li)

    with np.errstate(invalid="ignore"):
        return pick(pick(cand[0], cand[1]), pick(cand[2], cand[3]))


def _bits(a):
    return a.view(np.int32 if a.dtype == np.float32 else np.int64)


def _inputs(dtype, H, W, rng):
    """Small-integer ties, signed zeros, NaN and infinities, and plain random data, (2, 3, H, W) each."""
    shape = (2, 3, H, W)
    special = np.array([-0.0, 0.0, 1.0, -1.0, np.nan, np.inf, -np.inf], dtype)
    return [
        rng.integers(-2, 3, size=shape).astype(dtype),
        rng.choice(np.array([-0.0, 0.0], dtype), size=shape),
        rng.choice(special, size=shape),
        rng.standard_normal(shape).astype(dtype),
    ]


def _nan_windows(dtype):
    """A (1, 1, 2, 2·16·3) plane: every subset of a window's four positions NaN, the others tied or not."""
    fills = ([1, 1, 1, 1], [0, 2, 1, 2], [-0.0, 0.0, 0.0, -0.0])
    wins = []
    for f in fills:
        for mask in range(16):
            w = np.array(f, dtype)
            w[[k for k in range(4) if mask >> k & 1]] = np.nan
            wins.append(w.reshape(2, 2))
    return np.concatenate(wins, axis=1)[None, None]


@pytest.fixture(params=["default", "sse2"])
def isa(request):
    """The cython backend's kernels on the best instruction set, and on the SSE2 baseline."""
    if request.param == "default":
        yield request.param
        return
    kern = cython_kernels()
    from fastnn.backends import cython_backend

    cython_backend.select_isa("generic" if "generic" in kern.isa_names() else "sse2")
    try:
        yield request.param
    finally:
        cython_backend.select_isa("auto")


def _check_layer(x, backend):
    layer = nn.MaxPool2d(2)
    y = layer(x)
    want, want_idx = _scalar_rule(x)
    assert y.shape == want.shape
    if backend == "numpy":  # the specification's max may pick either zero's sign
        np.testing.assert_array_equal(y, want)
    else:
        np.testing.assert_array_equal(_bits(y), _bits(want))
    np.testing.assert_array_equal(layer._saved()[1], want_idx)
    # the backward scatter puts each gradient at the winner
    g = np.arange(1, y.size + 1, dtype=x.dtype).reshape(y.shape)
    gx = layer.backward(g)
    expect = np.zeros(x.shape, x.dtype).reshape(x.shape[0], x.shape[1], -1)
    np.put_along_axis(expect, want_idx.reshape(x.shape[0], x.shape[1], -1), g.reshape(*g.shape[:2], -1), axis=2)
    np.testing.assert_array_equal(gx, expect.reshape(x.shape))


def test_max_pool_layer_is_the_scalar_rule(backend, dtype, isa, rng):
    if isa != "default" and backend != "cython":
        pytest.skip("the instruction set is the cython backend's")
    for H in (2, 3, 8, 11):
        for W in WIDTHS:
            for x in _inputs(dtype, H, W, rng):
                _check_layer(x, backend)
    _check_layer(_nan_windows(dtype), backend)
    with pytest.raises(ValueError, match="smaller than the kernel size"):
        nn.MaxPool2d(2)(np.zeros((1, 1, 4, 1), dtype))


def test_scalar_rule_is_the_documented_one():
    """The oracle itself: first maximum in row-major order, the first NaN, the first of -0.0 / 0.0."""
    x = np.array([[[[1, 3, 3, 0, -0.0, 0.0], [3, 2, np.nan, 5, 0.0, -0.0]]]])
    y, idx = _scalar_rule(x)
    assert idx.tolist() == [[[[1, 8, 4]]]]
    assert np.isnan(y[0, 0, 0, 1]) and np.signbit(y[0, 0, 0, 2]) and y[0, 0, 0, 0] == 3
    y, idx = _scalar_rule(x, relu=True)
    assert idx.tolist() == [[[[1, 8, 4]]]] and not np.signbit(y[0, 0, 0, 2])
    y, idx = _scalar_rule(-np.abs(x), relu=True)  # all zero after the ReLU: the first pixel; a NaN still wins
    assert idx.tolist() == [[[[0, 8, 4]]]]


def _tied_cnn(dtype, H, W, twice):
    """Conv 3x3 pad 1 (channel 0 its bias alone: a plane of ties; channel 1 small integers) -> ReLU -> pool,
    and with ``twice`` a second ReLU -> pool (one that reads a pooling's output, not a convolution's)."""
    fastnn.manual_seed(5)
    pools = [m for _ in range(2 if twice else 1) for m in (nn.ReLU(), nn.MaxPool2d(2))]
    ho, wo = (H // 4, W // 4) if twice else (H // 2, W // 2)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1, dtype=dtype), *pools, nn.Flatten(), nn.Linear(2 * ho * wo, 3, dtype=dtype)
    )
    w = np.zeros((2, 1, 3, 3), dtype)
    w[1, 0] = [[0, 1, 0], [1, -1, 0], [0, 0, 1]]
    model[0].weight.data[...] = w
    model[0].bias.data[:] = [0.5, 0.0]
    return model


def _plan_run(backend, make, X, y, force_loop=False):
    """Losses, gradients and predictions of one compiled (or forced per-step) run of 3 steps."""
    with fastnn.use_backend(backend):
        model = make()
        step = fastnn.make_train_step(model, nn.MSELoss(), optim.SGD(model.parameters(), lr=0.01))
        if force_loop:
            step.compiled_plan = lambda: (None, "forced")
        else:
            assert step.compiled_plan()[0] is not None
        losses = step.run_steps(X, y, np.arange(X.shape[0]), 4)
        grads = [p.grad.copy() for p in model.parameters()]
        with fastnn.no_grad():
            out = fastnn.predict(model, X) if not force_loop else model(X)
    return losses, grads, out


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize(
    ("W", "twice"),
    # two poolings need 4 columns
    [(w, twice) for twice in (False, True) for w in (2, 3, 5, 8, 9, 14, 15, 17, 23, 28, 33, 40) if w >= 4 or not twice],
    ids=lambda v: ("twice" if v else "once") if isinstance(v, bool) else str(v),
)
def test_fused_relu_pooling_in_plans(dtype, W, twice, isa):
    """The plans' fused ReLU + pooling (the float32 image path reads the convolution's padded rows):
    the per-step loop's bits, and the specification to rounding on ties whose winner moves the gradients."""
    pytest.importorskip("fastnn._ext._kernels")
    rng = np.random.default_rng(W)
    H = 8 if W % 2 == 0 else 9
    X = rng.integers(-2, 3, size=(12, 1, H, W)).astype(dtype)
    y = rng.standard_normal((12, 3)).astype(dtype)

    def make():
        return _tied_cnn(dtype, H, W, twice)

    with fastnn.use_backend("cython"):
        plan = _plan_run("cython", make, X, y)
        loop = _plan_run("cython", make, X, y, force_loop=True)
    np.testing.assert_array_equal(plan[0], loop[0])
    for a, b in zip(plan[1], loop[1]):
        np.testing.assert_array_equal(_bits(a), _bits(b))
    np.testing.assert_array_equal(_bits(plan[2]), _bits(loop[2]))
    spec = _plan_run("numpy", make, X, y, force_loop=True)
    t = tol(dtype, 100)
    np.testing.assert_allclose(plan[0], spec[0], **t)
    for a, b in zip(plan[1], spec[1]):
        np.testing.assert_allclose(a, b, **t)
    np.testing.assert_allclose(plan[2], spec[2], **t)
    Xn = X.copy()  # NaN in an image: the forward plan gives the per-step loop's bits, NaN in the same places
    Xn[1, 0, 1, W - 1] = np.nan
    Xn[2, 0, 0, 0] = np.nan
    with fastnn.use_backend("cython"), fastnn.no_grad():
        model = make()
        got = fastnn.predict(model, Xn)
        want = model(Xn)
    np.testing.assert_array_equal(_bits(got), _bits(want))
