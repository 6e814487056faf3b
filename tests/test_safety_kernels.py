"""Empty batches handed to the backend kernels themselves, not through ``fastnn.ops``.

``fastnn.ops`` answers an empty batch without running a kernel, but the
layers call the kernels directly once a shape has passed the op (a layer
fed an empty batch twice does), so every kernel must treat a zero-size
batch as what it is: nothing to compute, empty outputs and weight gradients
that are sums over no sample, i.e. zero. Before, the Cython recurrent
kernels divided by a zero block size (SIGFPE), the Cython and Numba
convolution backward passes left the weight gradient as it was, and the
NumPy recurrent backward failed to reshape its empty workspace.

The gradient buffers start at 7, so a kernel that skips them fails. Time
budget: three child processes, about 6 s with a warm Numba cache (with a
cold one, compiling the recurrent and convolution kernels takes about
100 s, which the rest of the suite would spend anyway).
"""

import pytest
from safety_cases import assert_same_result, cached_outcomes

CASES = {}


def case(name, src):
    for dt in ("float32", "float64"):
        CASES[f"{name}[{dt}]"] = f"dt = np.{dt}\nK = fastnn.backends.current()\n{src}"


def sevens(*shape):
    return f"np.full({shape}, 7, dt)"


T, I, H = 3, 4, 5
for cell, G in (("rnn", 1), ("lstm", 4), ("gru", 3)):
    setup = (
        f"x, h0, wi, wh = np.zeros(({T}, 0, {I}), dt), np.zeros((0, {H}), dt), rnd({G * H}, {I}, dtype=dt), "
        f"rnd({G * H}, {H}, dtype=dt)\nbi, bh = rnd({G * H}, dtype=dt), rnd({G * H}, dtype=dt)\n"
        f"out, g = np.zeros(({T}, 0, {H}), dt), np.zeros(({T}, 0, {H}), dt)\n"
        f"grads = ({sevens(G * H, I)}, {sevens(G * H, H)}, {sevens(G * H)}, {sevens(G * H)})\n"
        f"gx, gh0 = np.zeros(({T}, 0, {I}), dt), np.zeros((0, {H}), dt)\n"
    )
    if cell == "rnn":
        run = (
            f"K.rnn_forward(x, h0, wi, wh, bi, bh, 'tanh', out)\n"
            f"result = K.rnn_backward(g, None, x, h0, wi, wh, out, 'tanh', np.zeros(({T}, 0, {H}), dt), gx, gh0, "
            f"*grads)"
        )
    elif cell == "lstm":
        run = (
            f"cell, gates = np.zeros(({T}, 0, {H}), dt), np.zeros(({T}, 0, {4 * H}), dt)\n"
            f"K.lstm_forward(x, h0, h0, wi, wh, bi, bh, out, cell, gates)\n"
            f"result = K.lstm_backward(g, None, None, x, h0, h0, wi, wh, out, cell, gates, "
            f"np.zeros(({T}, 0, {4 * H}), dt), gx, gh0, np.zeros((0, {H}), dt), *grads)"
        )
    else:
        run = (
            f"gates, hn = np.zeros(({T}, 0, {3 * H}), dt), np.zeros(({T}, 0, {H}), dt)\n"
            f"K.gru_forward(x, h0, wi, wh, bi, bh, out, gates, hn)\n"
            f"result = K.gru_backward(g, None, x, h0, wi, wh, out, gates, hn, np.zeros(({T}, 0, {6 * H}), dt), "
            f"gx, gh0, *grads)"
        )
    case(f"{cell} empty batch", setup + run + "\nassert all(not a.any() for a in grads)")
for stride in ((1, 1), (2, 2)):
    for want_input in (True, False):
        case(
            f"conv empty batch stride {stride} input grad {want_input}",
            f"""
x, w, b = np.zeros((0, 2, 6, 6), dt), rnd(3, 2, 3, 3, dtype=dt), rnd(3, dtype=dt)
shape = ops.conv2d_output_shape(x.shape, w.shape, {stride}, 1)
out = K.conv2d_forward(x, w, b, {stride}, (1, 1), (1, 1), np.zeros(shape, dt))
gw, gb = {sevens(3, 2, 3, 3)}, {sevens(3)}
gx = np.zeros(x.shape, dt) if {want_input} else None
result = (out,) + tuple(K.conv2d_backward(np.zeros(shape, dt), x, w, {stride}, (1, 1), (1, 1), gx, gw, gb))
assert not gw.any() and not gb.any()
""",
        )
for xs in ((0, 2, 4, 4), (2, 0, 4, 4)):
    case(
        f"pooling empty x{xs}",
        f"""
x = np.zeros({xs}, dt)
shape = {xs[:2]} + (2, 2)
out, idx = K.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0), np.zeros(shape, dt), np.zeros(shape, np.int64))
out3, idx3 = K.max_pool2d_forward(x, (3, 3), (2, 2), (1, 1), np.zeros(shape, dt), np.zeros(shape, np.int64))
avg = K.avg_pool2d_forward(x, (2, 2), (2, 2), (0, 0), True, np.zeros(shape, dt))
result = (out, out3, avg, K.max_pool2d_backward(np.zeros(shape, dt), idx, np.zeros({xs}, dt)),
          K.avg_pool2d_backward(np.zeros(shape, dt), (2, 2), (2, 2), (0, 0), False, np.zeros({xs}, dt)))
""",
    )
for gemm in ("auto", "own", "blas"):
    case(
        f"dense empty batch gemm={gemm}",
        f"""
fastnn.set_gemm({gemm!r})
x, w, b = np.zeros((0, 5), dt), rnd(3, 5, dtype=dt), rnd(3, dtype=dt)
out = K.dense_forward(x, w, b, "tanh", np.zeros((0, 3), dt))
gw, gb = {sevens(3, 5)}, {sevens(3)}
result = (out,) + tuple(K.dense_backward(np.zeros((0, 3), dt), x, w, np.zeros((0, 3), dt), "tanh",
                                         np.zeros((0, 5), dt), gw, gb))
assert not gw.any() and not gb.any()
""",
    )
case(
    "cross-entropy empty batch",
    """
loss, grad = K.softmax_cross_entropy(np.zeros((0, 4), dt), np.zeros(0, np.intp), "mean", np.zeros((0, 4), dt))
result = grad
assert np.isnan(loss)
""",
)


@pytest.mark.parametrize("name", sorted(CASES))
def test_kernels_take_an_empty_batch(backend, name):
    got = cached_outcomes(__name__, backend, CASES)[name]
    assert got[0] == "ok", f"{backend}: {got[1]}: {got[2]}"[:3000]
    if backend != "numpy":
        assert_same_result(name, got, cached_outcomes(__name__, "numpy", CASES)[name], rtol=0, atol=0)
