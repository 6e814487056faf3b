"""Hostile and degenerate arguments to every public op, in every backend.

Two kinds of case, each a few lines of Python run in child processes
(:mod:`safety_cases`), one child per backend for the whole file:

* ``RAISES``: bad input (huge, negative or zero sizes, int64 extremes for
  strides and padding, products of sizes past 2^31, wrong dtypes, bools and
  floats where ints belong, mismatched shapes, out-of-range labels and
  pooling indices, overlapping or read-only ``out=`` buffers). Every backend
  must raise the same ``TypeError``/``ValueError``, from ``fastnn.ops``
  before any compiled code runs; a crash or a result fails the test.
* ``AGREE``: valid but degenerate input (empty batches, size-1 dimensions,
  windows over the padding, strides past the image, in-place ``out=``). The
  compiled backends must return what the NumPy reference returns; the
  cases also assert the values they know (an empty batch gives zero weight
  gradients, ...), so the reference is checked too.

Arrays stay tiny: sizes past 2^31 are reached through zero-size arrays or
parameters, never by allocating them. Time budget: three child processes,
about 10 s with a warm Numba cache, about 75 s with a cold one.
"""

import numpy as np
import pytest
from conftest import tol
from safety_cases import assert_same_result, cached_outcomes

DTYPES = ("float32", "float64")
RAISES = {}  # name -> (exception class name, message regex or None, source)
AGREE = {}  # name -> source setting ``result``


def raises(name, exc, src, match=None, dtypes=DTYPES):
    for dt in dtypes:
        RAISES[f"{name}[{dt}]"] = (exc, match, f"dt = np.{dt}\n{src}")


def agree(name, src, dtypes=DTYPES):
    for dt in dtypes:
        AGREE[f"{name}[{dt}]"] = f"dt = np.{dt}\n{src}"


BIG = 2**31  # one past the largest size the kernels take
I64_MAX, I64_MIN = 2**63 - 1, -(2**63)

# ---------------------------------------------------------------- matmul / dense

raises("matmul inner mismatch", "ValueError", "ops.matmul(rnd(2, 3, dtype=dt), rnd(4, 2, dtype=dt))", "inner")
raises("matmul 1-D", "ValueError", "ops.matmul(rnd(3, dtype=dt), rnd(3, 2, dtype=dt))")
raises("matmul int", "TypeError", "ops.matmul(np.ones((2, 2), np.int64), rnd(2, 2, dtype=dt))")
raises("matmul bool", "TypeError", "ops.matmul(rnd(2, 2, dtype=dt), np.ones((2, 2), bool))")
raises("matmul complex", "TypeError", "ops.matmul(np.ones((2, 2), np.complex64), rnd(2, 2, dtype=dt))")
raises("matmul object", "TypeError", "ops.matmul(np.array([[None]]), rnd(1, 1, dtype=dt))")
raises("matmul mixed dtypes", "TypeError", "ops.matmul(rnd(2, 2, dtype=dt), rnd(2, 2, dtype=np.float16))")
raises("matmul out is a", "ValueError", "a = rnd(3, 3, dtype=dt)\nops.matmul(a, rnd(3, 3, dtype=dt), out=a)", "overlap")
raises(
    "matmul out overlaps b",
    "ValueError",
    "buf = rnd(4, 3, dtype=dt)\nops.matmul(rnd(3, 3, dtype=dt), buf[1:], out=buf[:3])",
    "overlap",
)
raises(
    "matmul out strided",
    "ValueError",
    "ops.matmul(rnd(2, 2, dtype=dt), rnd(2, 2, dtype=dt), out=np.zeros((2, 4), dt)[:, ::2])",
    "C-contiguous",
)
raises(
    "matmul out read-only",
    "ValueError",
    "ops.matmul(rnd(2, 2, dtype=dt), rnd(2, 2, dtype=dt), out=ro(np.zeros((2, 2), dt)))",
    "read-only",
)
raises("matmul out list", "TypeError", "ops.matmul(rnd(2, 2, dtype=dt), rnd(2, 2, dtype=dt), out=[[0, 0], [0, 0]])")
raises(
    "matmul out dtype",
    "TypeError",
    "ops.matmul(rnd(2, 2, dtype=dt), rnd(2, 2, dtype=dt), out=np.zeros((2, 2), np.float16))",
)
# zero-size operands whose dimensions pass 2^31: refused before out (8 GiB and more) is allocated
raises("matmul M past 2^31", "ValueError", f"ops.matmul(np.empty(({BIG}, 0), dt), np.empty((0, 3), dt))", "2\\*\\*31")
raises("matmul N past 2^31", "ValueError", f"ops.matmul(np.empty((3, 0), dt), np.empty((0, {BIG}), dt))", "2\\*\\*31")
raises(
    "matmul K past 2^31", "ValueError", f"ops.matmul(np.empty((0, {BIG}), dt), np.empty(({BIG}, 0), dt))", "2\\*\\*31"
)
raises(
    "dense batch past 2^31",
    "ValueError",
    f"ops.dense_forward(np.empty(({BIG}, 0), dt), np.empty((2, 0), dt), rnd(2, dtype=dt))",
    "2\\*\\*31",
)
raises(
    "dense out_features past 2^31",
    "ValueError",
    f"ops.dense_forward(np.empty((0, 0), dt), np.empty(({BIG}, 0), dt))",
    "2\\*\\*31",
)
raises(
    "dense bad activation",
    "ValueError",
    "ops.dense_forward(rnd(2, 3, dtype=dt), rnd(4, 3, dtype=dt), activation='softmax')",
    "activation",
)
raises(
    "dense activation not a string",
    "ValueError",
    "ops.dense_forward(rnd(2, 3, dtype=dt), rnd(4, 3, dtype=dt), activation=[1])",
    "activation",
)
raises(
    "dense bias shape", "ValueError", "ops.dense_forward(rnd(2, 3, dtype=dt), rnd(4, 3, dtype=dt), rnd(3, dtype=dt))"
)
raises(
    "dense backward without y",
    "ValueError",
    "ops.dense_backward(rnd(2, 4, dtype=dt), rnd(2, 3, dtype=dt), rnd(4, 3, dtype=dt), None, 'relu')",
    "forward output",
)
raises(
    "dense backward grad_weight is weight",
    "ValueError",
    "w = rnd(4, 3, dtype=dt)\nops.dense_backward(rnd(2, 4, dtype=dt), rnd(2, 3, dtype=dt), w, grad_weight=w)",
    "overlap",
)
raises(
    "dense backward grad_bias in grad_weight",
    "ValueError",
    "gw = np.zeros((4, 3), dt)\nops.dense_backward(rnd(2, 4, dtype=dt), rnd(2, 3, dtype=dt), rnd(4, 3, dtype=dt), "
    "grad_weight=gw, grad_bias=gw.reshape(-1)[:4])",
    "overlap",
)

for B, I, O in [(0, 3, 2), (4, 0, 2), (4, 3, 0), (0, 0, 0), (1, 1, 1), (1, 5, 1), (3, 1, 7)]:
    for act in ("identity", "relu", "sigmoid", "tanh"):
        agree(
            f"dense forward B={B} I={I} O={O} {act}",
            f"""
x, w, b = rnd({B}, {I}, dtype=dt), rnd({O}, {I}, dtype=dt), rnd({O}, dtype=dt)
result = ops.dense_forward(x, w, b, {act!r})
assert result.shape == ({B}, {O})
if {I} == 0:   # no inputs: the output is the activated bias
    ref = np.broadcast_to(b, ({B}, {O})).astype(np.float64)
    ref = {{'identity': ref, 'relu': np.maximum(ref, 0), 'sigmoid': 1 / (1 + np.exp(-ref)),
           'tanh': np.tanh(ref)}}[{act!r}]
    assert np.allclose(result, ref, rtol=1e-5, atol=1e-6)
""",
        )
        agree(
            f"dense backward B={B} I={I} O={O} {act}",
            f"""
x, w = rnd({B}, {I}, dtype=dt), rnd({O}, {I}, dtype=dt)
y = np.abs(rnd({B}, {O}, dtype=dt)) / 4
result = ops.dense_backward(rnd({B}, {O}, dtype=dt), x, w, y, {act!r})
if {B} == 0:   # an empty batch: every gradient sum is zero
    assert not result[1].any() and not result[2].any()
""",
        )
    agree(
        f"matmul M={B} K={I} N={O}",
        f"result = ops.matmul(rnd({B}, {I}, dtype=dt), rnd({I}, {O}, dtype=dt))\nassert {I} or not result.any()",
    )
    agree(
        f"matmul transposed M={B} K={I} N={O}",
        f"result = ops.matmul(rnd({I}, {B}, dtype=dt), rnd({O}, {I}, dtype=dt), True, True)",
    )
# empty results with a huge other dimension: no kernel may loop over 2^31 empty rows (that was a hang)
agree(
    "dense forward no outputs, 2^31 - 1 rows",
    f"result = ops.dense_forward(np.empty(({BIG - 1}, 0), dt), np.empty((0, 0), dt), np.empty(0, dt), 'relu')\n"
    f"assert result.shape == ({BIG - 1}, 0)",
)
agree(
    "dense backward no outputs, 2^31 - 1 rows",
    f"e = np.empty(({BIG - 1}, 0), dt)\nresult = ops.dense_backward(e, e, np.empty((0, 0), dt), e, 'relu')\n"
    f"assert result[0].shape == ({BIG - 1}, 0) and result[1].shape == (0, 0)",
)
agree(
    "matmul empty result, K = 2^31 - 1",
    f"result = ops.matmul(np.empty((0, {BIG - 1}), dt), np.empty(({BIG - 1}, 0), dt))\nassert result.shape == (0, 0)",
)
for op in ("softmax", "softmax_backward"):
    args = "e" if op == "softmax" else "e, e"
    agree(
        f"{op} of 2^34 empty rows",
        f"e = np.empty(({2**34}, 0), dt)\nresult = ops.{op}({args})\nassert result.shape == ({2**34}, 0)",
    )
agree(
    "matmul non-contiguous operands",
    "a = rnd(5, 8, dtype=dt)[:, ::2]\nb = np.asfortranarray(rnd(4, 3, dtype=dt))\n"
    "result = ops.matmul(a, b)\nassert np.allclose(result, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-5)",
)

# ---------------------------------------------------------------- activations, softmax

for act in ("relu", "sigmoid", "tanh", "leaky_relu"):
    raises(
        f"{act} out shifted over x",
        "ValueError",
        f"buf = rnd(9, dtype=dt)\nops.{act}(buf[:8], out=buf[1:])",
        "partly overlap",
    )
    raises(
        f"{act} backward out shifted over y",
        "ValueError",
        f"buf = rnd(9, dtype=dt)\nops.{act}_backward(rnd(8, dtype=dt), buf[1:], out=buf[:8])",
        "partly overlap",
    )
    raises(f"{act} int input", "TypeError", f"ops.{act}(np.arange(4))")
    raises(f"{act} shape mismatch", "ValueError", f"ops.{act}_backward(rnd(4, dtype=dt), rnd(5, dtype=dt))")
    for shape in [(0,), (0, 5), (5, 0), (1, 1), (1,), ()]:
        agree(f"{act} {shape}", f"result = ops.{act}(rnd(*{shape}, dtype=dt))")
        agree(
            f"{act} backward {shape}",
            f"result = ops.{act}_backward(rnd(*{shape}, dtype=dt), np.abs(rnd(*{shape}, dtype=dt)) / 4)",
        )
    agree(f"{act} in place", f"x = rnd(40, dtype=dt)\nresult = ops.{act}(x, out=x)\nassert result is x")
    agree(
        f"{act} backward in place",
        f"g, y = rnd(40, dtype=dt), np.abs(rnd(40, dtype=dt)) / 4\n"
        f"result = ops.{act}_backward(g, y, out=g)\nassert result is g",
    )
raises("leaky_relu negative slope", "ValueError", "ops.leaky_relu(rnd(3, dtype=dt), -0.1)", "negative_slope")
raises("leaky_relu NaN slope", "ValueError", "ops.leaky_relu(rnd(3, dtype=dt), float('nan'))", "finite")
raises("leaky_relu string slope", "TypeError", "ops.leaky_relu(rnd(3, dtype=dt), 'x')")
raises("softmax 1-D", "ValueError", "ops.softmax(rnd(4, dtype=dt))")
raises(
    "softmax out shifted",
    "ValueError",
    "buf = rnd(5, 3, dtype=dt)\nops.softmax(buf[:4], out=buf[1:])",
    "partly overlap",
)
for shape in [(0, 5), (5, 0), (0, 0), (1, 1), (1, 7)]:
    agree(f"softmax {shape}", f"result = ops.softmax(rnd(*{shape}, dtype=dt))")
    agree(
        f"softmax backward {shape}",
        f"result = ops.softmax_backward(rnd(*{shape}, dtype=dt), np.abs(rnd(*{shape}, dtype=dt)) / 4)",
    )
agree(
    "softmax in place",
    "x = rnd(3, 6, dtype=dt)\nresult = ops.softmax(x, out=x)\nassert np.allclose(result.sum(axis=1), 1, rtol=1e-5)",
)

# ---------------------------------------------------------------- losses: labels are indices

raises(
    "cross-entropy label = C",
    "ValueError",
    "ops.softmax_cross_entropy(rnd(3, 4, dtype=dt), np.array([0, 4, 1]))",
    "labels must lie",
)
raises(
    "cross-entropy negative label",
    "ValueError",
    "ops.softmax_cross_entropy(rnd(3, 4, dtype=dt), np.array([0, -1, 1]))",
    "labels must lie",
)
raises(
    "cross-entropy int64 max label",
    "ValueError",
    f"ops.softmax_cross_entropy(rnd(2, 4, dtype=dt), np.array([0, {I64_MAX}]))",
    "labels must lie",
)
raises(
    "cross-entropy int64 min label",
    "ValueError",
    f"ops.softmax_cross_entropy(rnd(2, 4, dtype=dt), np.array([{I64_MIN}, 0]))",
    "labels must lie",
)
raises(
    "cross-entropy uint64 label past int64",
    "ValueError",
    "ops.softmax_cross_entropy(rnd(2, 4, dtype=dt), np.array([0, 2**64 - 1], np.uint64))",
    "labels must lie",
)
raises(
    "cross-entropy int8 label wraps",
    "ValueError",
    "ops.softmax_cross_entropy(rnd(2, 4, dtype=dt), np.array([0, -128], np.int8))",
    "labels must lie",
)
raises(
    "cross-entropy float labels",
    "TypeError",
    "ops.softmax_cross_entropy(rnd(2, 4, dtype=dt), np.array([0.0, 1.0]))",
    "integers",
)
raises(
    "cross-entropy bool labels",
    "TypeError",
    "ops.softmax_cross_entropy(rnd(2, 4, dtype=dt), np.array([True, False]))",
    "integers",
)
raises(
    "cross-entropy labels 2-D", "ValueError", "ops.softmax_cross_entropy(rnd(2, 4, dtype=dt), np.zeros((2, 1), int))"
)
raises("cross-entropy labels too few", "ValueError", "ops.softmax_cross_entropy(rnd(2, 4, dtype=dt), np.zeros(1, int))")
raises(
    "cross-entropy no classes",
    "ValueError",
    "ops.softmax_cross_entropy(rnd(2, 0, dtype=dt), np.zeros(2, int))",
    "labels must lie",
)
# a grad buffer that is the labels' memory: writing it would change the labels the kernel indexes with
raises(
    "cross-entropy grad over the labels",
    "ValueError",
    "grad = np.zeros((3, 1), dt)\nops.softmax_cross_entropy(rnd(3, 1, dtype=dt), grad.view(np.intp).reshape(3), "
    "grad=grad)",
    "overlap",
    dtypes=("float64",),
)
raises(
    "cross-entropy bad reduction",
    "ValueError",
    "ops.softmax_cross_entropy(rnd(2, 4, dtype=dt), np.zeros(2, int), 'max')",
    "reduction",
)
raises("mse shape mismatch", "ValueError", "ops.mse_loss(rnd(3, dtype=dt), rnd(4, dtype=dt))")
raises("mse dtype mismatch", "TypeError", "ops.mse_loss(rnd(3, dtype=dt), rnd(3, dtype=np.float16))")
raises(
    "bce grad is logits",
    "ValueError",
    "z = rnd(3, dtype=dt)\nops.bce_with_logits(z, rnd(3, dtype=dt), grad=z)",
    "overlap",
)
for shape in [(0, 5), (5, 0), (0, 0), (1, 1), (1, 7)]:
    for red in ("mean", "sum"):
        agree(f"mse {shape} {red}", f"result = ops.mse_loss(rnd(*{shape}, dtype=dt), rnd(*{shape}, dtype=dt), {red!r})")
        agree(
            f"bce {shape} {red}",
            f"result = ops.bce_with_logits(rnd(*{shape}, dtype=dt), np.abs(rnd(*{shape}, dtype=dt)) / 4, {red!r})",
        )
        if shape[1]:
            agree(
                f"cross-entropy {shape} {red}",
                f"""
labels = np.arange({shape[0]}) % {shape[1]}
result = ops.softmax_cross_entropy(rnd(*{shape}, dtype=dt), labels, {red!r})
if {shape[0]} == 0:   # an empty batch: PyTorch's NaN mean, zero sum
    assert (np.isnan(result[0]) if {red!r} == 'mean' else result[0] == 0) and result[1].shape == {shape}
""",
            )
agree(
    "cross-entropy labels of every integer dtype",
    "z = rnd(4, 9, dtype=dt)\nresult = [ops.softmax_cross_entropy(z, np.array([8, 0, 3, 5], t))[0] "
    "for t in (np.int8, np.uint8, np.int16, np.int32, np.uint32, np.int64, np.uint64)]\n"
    "assert len(set(result)) == 1",
)

# ---------------------------------------------------------------- optimizers

for case, exc, args, match in [
    ("lr NaN", "ValueError", "rnd(3, dtype=dt), rnd(3, dtype=dt), lr=float('nan')", "lr"),
    ("lr inf", "ValueError", "rnd(3, dtype=dt), rnd(3, dtype=dt), lr=float('inf')", "lr"),
    ("lr negative", "ValueError", "rnd(3, dtype=dt), rnd(3, dtype=dt), lr=-1.0", "lr"),
    ("lr string", "TypeError", "rnd(3, dtype=dt), rnd(3, dtype=dt), lr='0.1'", None),
    ("momentum 1", "ValueError", "rnd(3, dtype=dt), rnd(3, dtype=dt), rnd(3, dtype=dt), momentum=1.0", "momentum"),
    ("nesterov without momentum", "ValueError", "rnd(3, dtype=dt), rnd(3, dtype=dt), nesterov=True", "nesterov"),
    ("param read-only", "ValueError", "ro(rnd(3, dtype=dt)), rnd(3, dtype=dt)", "read-only"),
    ("param strided", "ValueError", "rnd(6, dtype=dt)[::2], rnd(3, dtype=dt)", "C-contiguous"),
    ("param int", "TypeError", "np.zeros(3, np.int64), rnd(3, dtype=dt)", None),
]:
    raises(f"sgd {case}", exc, f"ops.sgd_update({args})", match)
raises(
    "sgd velocity is param",
    "ValueError",
    "p = rnd(3, dtype=dt)\nops.sgd_update(p, rnd(3, dtype=dt), p, momentum=0.9)",
    "overlap",
)
raises("sgd grad is param", "ValueError", "p = rnd(3, dtype=dt)\nops.sgd_update(p, p)", "overlap")
raises(
    "adam state overlaps",
    "ValueError",
    "p, buf = rnd(3, dtype=dt), np.zeros(4, dt)\nops.adam_update(p, rnd(3, dtype=dt), buf[:3], buf[1:], 1)",
    "overlap",
)
for step, exc in [
    ("0", "ValueError"),
    ("-1", "ValueError"),
    ("1.5", "ValueError"),
    ("float('inf')", "ValueError"),
    ("float('nan')", "ValueError"),
    ("True", "TypeError"),
    ("'3'", "TypeError"),
    ("None", "TypeError"),
    ("2**64", "ValueError"),
    (f"np.int64({I64_MIN})", "ValueError"),
]:
    raises(
        f"adam step {step}",
        exc,
        f"ops.adam_update(rnd(3, dtype=dt), rnd(3, dtype=dt), np.zeros(3, dt), np.zeros(3, dt), {step})",
        "step",
    )
raises(
    "adam beta1 1",
    "ValueError",
    "ops.adam_update(rnd(3, dtype=dt), rnd(3, dtype=dt), np.zeros(3, dt), np.zeros(3, dt), 1, beta1=1.0)",
    "beta1",
)
raises(
    "adam eps 0",
    "ValueError",
    "ops.adam_update(rnd(3, dtype=dt), rnd(3, dtype=dt), np.zeros(3, dt), np.zeros(3, dt), 1, eps=0.0)",
    "eps",
)
for shape in [(0,), (0, 3), (1,), (1, 1)]:
    agree(
        f"sgd {shape}",
        f"p, v = rnd(*{shape}, dtype=dt), rnd(*{shape}, dtype=dt)\n"
        f"ops.sgd_update(p, rnd(*{shape}, dtype=dt), v, lr=0.1, momentum=0.9, weight_decay=0.01)\nresult = (p, v)",
    )
    agree(
        f"adam {shape}",
        f"p, m, v = rnd(*{shape}, dtype=dt), rnd(*{shape}, dtype=dt), np.abs(rnd(*{shape}, dtype=dt))\n"
        f"ops.adam_update(p, rnd(*{shape}, dtype=dt), m, v, 3)\nresult = (p, m, v)",
    )
agree(
    "adam integral float and int64 extreme step",
    f"""
g, p, m, v = rnd(5, dtype=dt), rnd(5, dtype=dt), rnd(5, dtype=dt), np.abs(rnd(5, dtype=dt))
q, n, w = p.copy(), m.copy(), v.copy()
ops.adam_update(p, g, m, v, 7.0)
ops.adam_update(q, g, n, w, np.int64({I64_MAX}))   # bias corrections of 1: no overflow, no NaN
result = (p, m, v, q, n, w)
assert np.isfinite(p).all() and np.isfinite(q).all()
""",
)

# ---------------------------------------------------------------- convolution

X, Wt = "rnd(1, 2, 5, 5, dtype=dt)", "rnd(3, 2, 3, 3, dtype=dt)"
for arg, value, exc, match in [
    ("stride", "0", "ValueError", ">= 1"),
    ("stride", "-1", "ValueError", ">= 1"),
    ("stride", f"{BIG}", "ValueError", "2\\*\\*31"),
    ("stride", f"np.int64({I64_MAX})", "ValueError", "2\\*\\*31"),
    ("stride", f"np.int64({I64_MIN})", "ValueError", ">= 1"),
    ("stride", "2**100", "ValueError", "2\\*\\*31"),
    ("stride", "1.0", "TypeError", None),
    ("stride", "True", "TypeError", None),
    ("stride", "None", "TypeError", None),
    ("stride", "(1,)", "ValueError", "pair"),
    ("stride", "(1, 2, 3)", "ValueError", "pair"),
    ("stride", "(1, 1.5)", "TypeError", None),
    ("stride", "np.uint64(2**64 - 1)", "ValueError", "2\\*\\*31"),
    ("padding", "-1", "ValueError", ">= 0"),
    ("padding", f"{BIG - 1}", "ValueError", "2\\*\\*31"),
    ("padding", f"{2**30}", "ValueError", "2\\*\\*31"),
    ("padding", f"np.int64({I64_MAX})", "ValueError", None),
    ("padding", "(0, np.False_)", "TypeError", None),
    ("dilation", "0", "ValueError", ">= 1"),
    ("dilation", f"{BIG - 1}", "ValueError", "2\\*\\*31"),
    ("dilation", f"np.int64({I64_MIN})", "ValueError", ">= 1"),
]:
    raises(f"conv forward {arg}={value}", exc, f"ops.conv2d_forward({X}, {Wt}, {arg}={value})", match)
    raises(
        f"conv backward {arg}={value}",
        exc,
        f"ops.conv2d_backward(rnd(1, 3, 3, 3, dtype=dt), {X}, {Wt}, {arg}={value})",
        match,
    )
    raises(
        f"conv output shape {arg}={value}",
        exc,
        f"ops.conv2d_output_shape((1, 2, 5, 5), (3, 2, 3, 3), {arg}={value})",
        match,
    )
# sizes the kernels would compute, past 2^31 with arrays of a few bytes
raises(
    "conv padded image past 2^31",
    "ValueError",
    "ops.conv2d_forward(rnd(1, 1, 1, 1, dtype=dt), rnd(1, 1, 2, 2, dtype=dt), dilation=2**20, padding=2**19 + 1)",
    "padded image",
)
raises(
    "conv dilated kernel past 2^31",
    "ValueError",
    "ops.conv2d_forward(rnd(1, 1, 1, 1, dtype=dt), rnd(1, 1, 3, 1, dtype=dt), dilation=2**30 + 1)",
    "dilated kernel",
)
raises(
    "conv output plane past 2^31 (empty batch)",
    "ValueError",
    f"ops.conv2d_forward(np.empty((0, 1, {2**17}, {2**17}), dt), rnd(1, 1, 1, 1, dtype=dt))",
    "height·width",
)
raises(
    "conv output plane past 2^31 (empty batch) backward",
    "ValueError",
    f"ops.conv2d_backward(np.empty((0, 1, {2**17}, {2**17}), dt), np.empty((0, 1, {2**17}, {2**17}), dt), "
    "rnd(1, 1, 1, 1, dtype=dt))",
    "height·width",
)
raises(
    "conv empty image plane",
    "ValueError",
    "ops.conv2d_forward(rnd(1, 1, 0, 0, dtype=dt), rnd(1, 1, 1, 1, dtype=dt), padding=1)",
    "empty image plane",
)
raises(
    "conv empty image width, empty batch",
    "ValueError",
    "ops.conv2d_forward(rnd(0, 1, 4, 0, dtype=dt), rnd(1, 1, 1, 1, dtype=dt), padding=1)",
    "empty image plane",
)
raises(
    "conv no input channels",
    "ValueError",
    "ops.conv2d_forward(rnd(1, 0, 3, 3, dtype=dt), rnd(2, 0, 1, 1, dtype=dt))",
    "empty dimension",
)
raises(
    "conv channel mismatch",
    "ValueError",
    "ops.conv2d_forward(rnd(1, 3, 5, 5, dtype=dt), rnd(2, 2, 3, 3, dtype=dt))",
    "channels",
)
raises(
    "conv kernel larger than input",
    "ValueError",
    "ops.conv2d_forward(rnd(1, 1, 2, 2, dtype=dt), rnd(1, 1, 3, 3, dtype=dt))",
    "smaller than",
)
raises("conv 3-D input", "ValueError", "ops.conv2d_forward(rnd(2, 5, 5, dtype=dt), rnd(1, 2, 3, 3, dtype=dt))", "4-D")
raises("conv int input", "TypeError", "ops.conv2d_forward(np.ones((1, 1, 3, 3), np.int32), rnd(1, 1, 1, 1, dtype=dt))")
raises(
    "conv mixed dtypes", "TypeError", "ops.conv2d_forward(rnd(1, 1, 3, 3, dtype=dt), rnd(1, 1, 1, 1, dtype=np.float16))"
)
raises(
    "conv bias shape",
    "ValueError",
    "ops.conv2d_forward(rnd(1, 1, 3, 3, dtype=dt), rnd(2, 1, 1, 1, dtype=dt), rnd(3, dtype=dt))",
    "bias",
)
raises(
    "conv out overlaps x",
    "ValueError",
    "x = rnd(1, 1, 3, 3, dtype=dt)\nops.conv2d_forward(x, rnd(1, 1, 1, 1, dtype=dt), out=x)",
    "overlap",
)
raises(
    "conv backward grad_out shape",
    "ValueError",
    "ops.conv2d_backward(rnd(1, 1, 2, 2, dtype=dt), rnd(1, 1, 4, 4, dtype=dt), rnd(1, 1, 2, 2, dtype=dt))",
)
raises(
    "conv backward grad_bias inside grad_weight",
    "ValueError",
    "gw = np.zeros((4, 1, 1, 1), dt)\nops.conv2d_backward(rnd(1, 4, 3, 3, dtype=dt), rnd(1, 1, 3, 3, dtype=dt), "
    "rnd(4, 1, 1, 1, dtype=dt), grad_weight=gw, grad_bias=gw.reshape(4))",
    "overlap",
)
raises("conv output shape floats", "TypeError", "ops.conv2d_output_shape((1, 1, 4.5, 4), (1, 1, 3, 3))")
raises("conv output shape negative", "ValueError", "ops.conv2d_output_shape((1, 1, -4, 4), (1, 1, 3, 3))")
raises("conv output shape 3 entries", "ValueError", "ops.conv2d_output_shape((1, 4, 4), (1, 1, 3, 3))")

CONV = [
    ((0, 2, 5, 5), (3, 2, 3, 3), "padding=1"),
    ((1, 1, 1, 1), (1, 1, 1, 1), ""),
    ((1, 1, 1, 1), (2, 1, 3, 3), "padding=1"),
    ((1, 1, 1, 1), (2, 1, 3, 3), "padding=1, stride=2"),
    ((2, 1, 1, 4), (1, 1, 3, 3), "padding=1"),
    ((1, 2, 3, 3), (2, 2, 3, 3), "padding=2, dilation=2"),
    ((1, 2, 3, 3), (2, 2, 1, 1), "stride=5"),
    ((2, 3, 4, 4), (1, 3, 4, 4), ""),
    ((1, 1, 1, 9), (1, 1, 1, 9), ""),
    ((1, 1, 9, 1), (1, 1, 9, 1), "padding=(4, 0)"),
    ((3, 1, 2, 2), (1, 1, 2, 2), "padding=1, stride=3"),
    ((1, 1, 5, 5), (1, 1, 3, 3), f"stride={BIG - 1}"),
    ((1, 2, 2, 3), (1, 2, 2, 2), f"stride=(1, {BIG - 1})"),
    # a dilated kernel whose taps all land in the padding: the output is the bias
    ((1, 1, 1, 1), (2, 1, 2, 2), "dilation=64, padding=32"),
    ((1, 1, 3, 3), (1, 1, 2, 2), f"dilation=(1, 4), padding=(0, 2), stride=(1, {BIG - 1})"),
]
for xs, ws, kw in CONV:
    agree(
        f"conv forward x{xs} w{ws} {kw}",
        f"""
x, w, b = rnd(*{xs}, dtype=dt), rnd(*{ws}, dtype=dt), rnd({ws[0]}, dtype=dt)
result = ops.conv2d_forward(x, w, b, {kw})
assert result.shape == ops.conv2d_output_shape(x.shape, w.shape, {kw})
""",
    )
    agree(
        f"conv backward x{xs} w{ws} {kw}",
        f"""
x, w = rnd(*{xs}, dtype=dt), rnd(*{ws}, dtype=dt)
result = ops.conv2d_backward(rnd(*ops.conv2d_output_shape(x.shape, w.shape, {kw}), dtype=dt), x, w, {kw})
if x.shape[0] == 0:
    assert not result[1].any() and not result[2].any()
""",
    )
agree(
    "conv taps all in the padding give the bias",
    """
b = rnd(2, dtype=dt)
result = ops.conv2d_forward(rnd(1, 1, 1, 1, dtype=dt), rnd(2, 1, 2, 2, dtype=dt), b, dilation=64, padding=32)
assert result.shape == (1, 2, 1, 1) and (result == b[None, :, None, None]).all()
""",
)
agree(
    "conv stride past the image reads the first window only",
    f"""
x, w = rnd(1, 1, 5, 5, dtype=dt), rnd(1, 1, 3, 3, dtype=dt)
result = ops.conv2d_forward(x, w, stride={BIG - 1})
assert result.shape == (1, 1, 1, 1)
assert np.isclose(result[0, 0, 0, 0], (x[0, 0, :3, :3] * w[0, 0]).sum(dtype=np.float64), rtol=1e-5)
""",
)

# ---------------------------------------------------------------- pooling

P = "rnd(1, 2, 6, 6, dtype=dt)"
for op in ("max", "avg"):
    for args, exc, match in [
        ("0", "ValueError", ">= 1"),
        ("-2", "ValueError", ">= 1"),
        (f"{BIG}", "ValueError", "2\\*\\*31"),
        (f"np.int64({I64_MAX})", "ValueError", "2\\*\\*31"),
        ("2.0", "TypeError", None),
        ("True", "TypeError", None),
        ("2, stride=0", "ValueError", ">= 1"),
        (f"2, stride={BIG}", "ValueError", "2\\*\\*31"),
        ("2, stride=-1", "ValueError", ">= 1"),
        ("2, padding=2", "ValueError", "half the kernel"),
        ("2, padding=-1", "ValueError", ">= 0"),
        (f"{BIG - 1}, padding={2**30 - 1}", "ValueError", "2\\*\\*31"),
        (f"{2**20}, padding={2**19}", "ValueError", "padded image"),
        ("7", "ValueError", "smaller than"),
        ("(2, 2, 2)", "ValueError", "pair"),
    ]:
        raises(f"{op} pool {args}", exc, f"ops.{op}_pool2d_forward({P}, {args})", match)
    raises(
        f"{op} pool empty image plane",
        "ValueError",
        f"ops.{op}_pool2d_forward(rnd(1, 1, 0, 0, dtype=dt), 2, stride=2, padding=1)",
        "empty image plane",
    )
    raises(
        f"{op} pool empty image height",
        "ValueError",
        f"ops.{op}_pool2d_forward(rnd(1, 1, 0, 3, dtype=dt), 1)",
        "empty image plane",
    )
    raises(f"{op} pool 3-D input", "ValueError", f"ops.{op}_pool2d_forward(rnd(2, 6, 6, dtype=dt), 2)", "4-D")
    raises(
        f"{op} pool out overlaps x",
        "ValueError",
        f"x = rnd(1, 1, 4, 4, dtype=dt)\nops.{op}_pool2d_forward(x, 2, out=x.reshape(-1)[:4].reshape(1, 1, 2, 2))",
        "overlap",
    )
raises(
    "max pool indices int32",
    "TypeError",
    f"ops.max_pool2d_forward({P}, 2, indices=np.zeros((1, 2, 3, 3), np.int32))",
    "int64",
)
raises(
    "max pool indices over x",
    "ValueError",
    "x = rnd(1, 1, 4, 4, dtype=np.float64)\n"
    "ops.max_pool2d_forward(x, 2, indices=x.reshape(-1)[:4].view(np.int64).reshape(1, 1, 2, 2))",
    "overlap",
    dtypes=("float64",),
)
# backward: the indices select the pixel each gradient goes to, so every one is checked
IDX = "np.zeros((1, 2, 3, 3), np.int64)"
for bad, exc, match in [
    ("36", "ValueError", "indices must lie"),
    ("-1", "ValueError", "indices must lie"),
    (f"{I64_MAX}", "ValueError", "indices must lie"),
    (f"{I64_MIN}", "ValueError", "indices must lie"),
]:
    raises(
        f"max pool backward index {bad}",
        exc,
        f"idx = {IDX}\nidx[0, 1, 2, 2] = {bad}\nops.max_pool2d_backward(rnd(1, 2, 3, 3, dtype=dt), idx, (1, 2, 6, 6))",
        match,
    )
for src, exc, match in [
    ("rnd(1, 2, 3, 3, dtype=dt), np.zeros((1, 2, 3, 3), np.int32), (1, 2, 6, 6)", "TypeError", "int64"),
    ("rnd(1, 2, 3, 3, dtype=dt), np.zeros((1, 2, 3, 3)), (1, 2, 6, 6)", "TypeError", "int64"),
    ("rnd(1, 2, 3, 3, dtype=dt), np.zeros((1, 2, 3, 2), np.int64), (1, 2, 6, 6)", "ValueError", "shape"),
    (f"rnd(1, 2, 3, 3, dtype=dt), {IDX}, (1, 2, 6.0, 6)", "TypeError", "ints"),
    (f"rnd(1, 2, 3, 3, dtype=dt), {IDX}, (1, 2, True, 6)", "TypeError", "ints"),
    (f"rnd(1, 2, 3, 3, dtype=dt), {IDX}, (1, 2, -6, 6)", "ValueError", "negative"),
    (f"rnd(1, 2, 3, 3, dtype=dt), {IDX}, (1, 2, 6)", "ValueError", "4 entries"),
    (f"rnd(1, 2, 3, 3, dtype=dt), {IDX}, 36", "TypeError", "sequence"),
    (f"rnd(1, 2, 3, 3, dtype=dt), {IDX}, (2, 2, 6, 6)", "ValueError", "does not match"),
    (f"rnd(1, 2, 3, 3, dtype=dt), {IDX}, (1, 2, 0, 6)", "ValueError", "empty image plane"),
]:
    raises(f"max pool backward ({src})", exc, f"ops.max_pool2d_backward({src})", match)
raises(
    "avg pool backward input shape floats",
    "TypeError",
    "ops.avg_pool2d_backward(rnd(1, 2, 3, 3, dtype=dt), (1, 2, 6.0, 6), 2)",
    "ints",
)
raises(
    "avg pool backward grad_out shape",
    "ValueError",
    "ops.avg_pool2d_backward(rnd(1, 2, 2, 3, dtype=dt), (1, 2, 6, 6), 2)",
    "shape",
)

POOL = [
    ((0, 2, 4, 4), "2"),
    ((2, 0, 4, 4), "2"),
    ((1, 1, 1, 1), "1"),
    ((1, 1, 1, 1), "2, padding=1"),
    ((1, 1, 1, 1), "3, stride=1, padding=1"),
    ((1, 1, 2, 2), "2, stride=5"),
    ((1, 1, 5, 5), f"3, stride={BIG - 1}"),
    ((1, 1, 3, 3), "(3, 1), stride=(1, 4), padding=(1, 0)"),
    ((2, 3, 5, 5), "3, 2, 1"),
    ((1, 1, 2, 7), "2, 2, 1"),
    ((1, 1, 1, 5), "(1, 3), padding=(0, 1)"),
]
for xs, args in POOL:
    agree(f"max pool x{xs} {args}", f"result = ops.max_pool2d_forward(rnd(*{xs}, dtype=dt), {args})")
    agree(
        f"max pool backward x{xs} {args}",
        f"""
x = rnd(*{xs}, dtype=dt)
o, i = ops.max_pool2d_forward(x, {args})
result = ops.max_pool2d_backward(rnd(*o.shape, dtype=dt), i, x.shape)
""",
    )
    for cip in (True, False):
        agree(
            f"avg pool x{xs} {args} count_include_pad={cip}",
            f"result = ops.avg_pool2d_forward(rnd(*{xs}, dtype=dt), {args}, count_include_pad={cip})",
        )
        agree(
            f"avg pool backward x{xs} {args} count_include_pad={cip}",
            f"""
x = rnd(*{xs}, dtype=dt)
o = ops.avg_pool2d_forward(x, {args}, count_include_pad={cip})
result = ops.avg_pool2d_backward(rnd(*o.shape, dtype=dt), x.shape, {args}, count_include_pad={cip})
""",
        )
agree(
    "max pool of one pixel with padding",
    """
x = rnd(1, 1, 1, 1, dtype=dt)
out, idx = ops.max_pool2d_forward(x, 3, stride=1, padding=1)
assert out[0, 0, 0, 0] == x[0, 0, 0, 0] and idx[0, 0, 0, 0] == 0
result = (out, idx)
""",
)
agree(
    "max pool backward of an empty grad_out plane",
    """
result = ops.max_pool2d_backward(rnd(1, 2, 0, 0, dtype=dt), np.zeros((1, 2, 0, 0), np.int64), (1, 2, 3, 3))
assert result.shape == (1, 2, 3, 3) and not result.any()
""",
)

# ---------------------------------------------------------------- recurrent

T, B, I, H = 3, 2, 4, 5
RNN_ARGS = {"rnn": ("x, h0", 1), "lstm": ("x, h0, c0", 4), "gru": ("x, h0", 3)}


def rnn_setup(T, B, I, H, G):
    return (
        f"x, h0, c0 = rnd({T}, {B}, {I}, dtype=dt), rnd({B}, {H}, dtype=dt), rnd({B}, {H}, dtype=dt)\n"
        f"wi, wh = rnd({G * H}, {I}, dtype=dt, scale=0.3), rnd({G * H}, {H}, dtype=dt, scale=0.3)\n"
        f"bi, bh = rnd({G * H}, dtype=dt), rnd({G * H}, dtype=dt)\n"
    )


for cell, (state, G) in RNN_ARGS.items():
    setup = rnn_setup(T, B, I, H, G)
    raises(
        f"{cell} empty sequence", "ValueError", f"{setup}ops.{cell}_forward(x[:0], {state[3:]}, wi, wh)", "time step"
    )
    raises(f"{cell} hidden mismatch", "ValueError", f"{setup}ops.{cell}_forward(x, {state[3:]}, wi, wh[:, :4])")
    raises(f"{cell} input mismatch", "ValueError", f"{setup}ops.{cell}_forward(x, {state[3:]}, wi[:, :3], wh)")
    raises(f"{cell} int input", "TypeError", f"{setup}ops.{cell}_forward(x.astype(int), {state[3:]}, wi, wh)")
    raises(
        f"{cell} h0 shape", "ValueError", f"{setup}ops.{cell}_forward(x, {state[3:].replace('h0', 'h0[:1]')}, wi, wh)"
    )
    # T·B past 2^31 with an empty input: refused before the (T, B, H) output is allocated
    raises(
        f"{cell} steps times batch past 2^31",
        "ValueError",
        f"x = np.empty(({2**16}, {2**15}, 0), dt)\nh0 = c0 = np.zeros(({2**15}, 1), dt)\n"
        f"ops.{cell}_forward(x, {state[3:]}, np.zeros(({G}, 0), dt), np.zeros(({G}, 1), dt))",
        "2\\*\\*31",
    )
    fwd = {
        "rnn": "o = ops.rnn_forward(x, h0, wi, wh, bi, bh)\nf = (o,)",
        "lstm": "f = ops.lstm_forward(x, h0, c0, wi, wh, bi, bh)",
        "gru": "f = ops.gru_forward(x, h0, wi, wh, bi, bh)",
    }[cell]
    bwd = {
        "rnn": "ops.rnn_backward(g, x, h0, wi, wh, o",
        "lstm": "ops.lstm_backward(g, x, h0, c0, wi, wh, *f",
        "gru": "ops.gru_backward(g, x, h0, wi, wh, *f",
    }[cell]
    raises(
        f"{cell} backward buffers overlap",
        "ValueError",
        f"{setup}{fwd}\ng = rnd({T}, {B}, {H}, dtype=dt)\ngw = np.zeros(({G * H}, {H}), dt)\n"
        f"{bwd}, grad_weight_hh=gw, grad_bias_hh=gw.reshape(-1)[:{G * H}])",
        "overlap",
    )
    if cell == "lstm":
        raises(
            "lstm out is cell",
            "ValueError",
            f"{setup}buf = np.zeros(({T}, {B}, {H}), dt)\nops.lstm_forward(x, h0, c0, wi, wh, out=buf, cell=buf)",
            "overlap",
        )
    if cell == "gru":
        raises(
            "gru out is hidden_n",
            "ValueError",
            f"{setup}buf = np.zeros(({T}, {B}, {H}), dt)\nops.gru_forward(x, h0, wi, wh, out=buf, hidden_n=buf)",
            "overlap",
        )
    raises(
        f"{cell} out over the bias",
        "ValueError",
        f"{setup}bi = np.zeros({T * B * H + G * H}, dt)\n"
        f"ops.{cell}_forward(x, {state[3:]}, wi, wh, bi[:{G * H}], out=bi[:{T * B * H}].reshape({T}, {B}, {H}))",
        "overlap",
    )
    for t, b, i, h in [(1, 1, 1, 1), (3, 0, 4, 5), (2, 3, 0, 4), (1, 9, 1, 1), (4, 1, 2, 17)]:
        agree(
            f"{cell} T={t} B={b} I={i} H={h}",
            f"""{rnn_setup(t, b, i, h, G)}{fwd}
g = rnd({t}, {b}, {h}, dtype=dt)
result = tuple(f) + tuple({bwd}))
if {b} == 0:   # an empty batch: empty states, zero weight gradients
    assert all(a.size == 0 for a in f) and not any(a.any() for a in result[len(f) + 1:] if a is not None)
""",
        )
    if cell == "rnn":
        raises(
            "rnn nonlinearity",
            "ValueError",
            f"{setup}ops.rnn_forward(x, h0, wi, wh, nonlinearity='sigmoid')",
            "nonlinearity",
        )


# ---------------------------------------------------------------- running the cases


def _outcomes(backend):
    """Every case's outcome in ``backend``: one child process for the whole file."""
    cases = {name: src for name, (_, _, src) in RAISES.items()}
    cases.update(AGREE)
    return cached_outcomes(__name__, backend, cases)


@pytest.mark.parametrize("case", sorted(RAISES))
def test_hostile_call_raises(backend, case):
    exc, match, _ = RAISES[case]
    outcome = _outcomes(backend)[case]
    assert outcome[0] == "raise", f"{case}: no exception, returned {outcome[1]!r}"[:2000]
    assert outcome[1] == exc, f"{case}: {outcome[1]}: {outcome[2]}"
    if match is not None:
        import re

        assert re.search(match, outcome[2]), f"{case}: message {outcome[2]!r} does not match {match!r}"


@pytest.mark.parametrize("case", sorted(AGREE))
def test_degenerate_call_matches_reference(compiled_backend, case):
    want = _outcomes("numpy")[case]
    got = _outcomes(compiled_backend)[case]
    assert want[0] == "ok", f"reference: {want}"
    assert got[0] == "ok", f"{compiled_backend}: {got}"
    dt = np.float64 if case.endswith("[float64]") else np.float32
    assert_same_result(case, got, want, **tol(dt, 50))
