"""Read-only inputs (``np.load(..., mmap_mode="r")``, ``setflags(write=False)``) in every op and backend.

An op only reads its inputs, so a read-only array must give the very same
result as a writeable copy: each case calls the op twice in one child
process, with writeable and with read-only inputs, and asserts the results
identical bit for bit (to rounding in Numba, whose read-only specialisation
is compiled separately and may sum in another order); the compiled backends
must also agree with the NumPy reference. Buffers an op updates (parameters, optimizer state, ``out=``)
stay writeable, of course. Both GEMM policies run for the products, so the
own GEMM's kernels see read-only operands too.

Numba compiles a separate specialisation of a kernel for read-only arrays
(a few seconds each, once; then cached on disk), and its typing, not the
dtype, is what refuses a read-only operand it would write: the Numba
backend runs the float32 cases only, which keeps the compilation of those
specialisations, on a cold cache, near 90 s. Time budget: three child
processes, about 7 s with a warm Numba cache.
"""

import numpy as np
import pytest
from conftest import ALL_BACKENDS, _require_or_skip, tol
from safety_cases import assert_same_result, cached_outcomes, recurrent_forward, recurrent_setup

CASES = {}


def case(name, call, setup="", gemms=("auto",)):
    """``call`` uses the inputs through ``A(...)``: writeable once, read-only once."""
    for dt in ("float32", "float64"):
        for gemm in gemms:
            CASES[f"{name}[{dt},{gemm}]"] = f"""
dt = np.{dt}
fastnn.set_gemm({gemm!r})
{setup}
A = lambda a: a
want = {call}
A = ro
got = {call}
# the same machine code gives the same bits; Numba's read-only specialisation may round differently
assert_identical(got, want, rtol=(1e-6 if dt == np.float32 else 1e-14) if fastnn.get_backend() == "numba" else 0)
result = got
"""


X2, W2, B1 = "A(x)", "A(w)", "A(b)"
DENSE = (
    "x, w, b = rnd(6, 5, dtype=dt), rnd(3, 5, dtype=dt), rnd(3, dtype=dt)\ny = np.abs(rnd(6, 3, dtype=dt)) / 4\n"
    "g = rnd(6, 3, dtype=dt)"
)
BOTH = ("auto", "own")
case("matmul", "[ops.matmul(A(x), A(w), False, True), ops.matmul(A(x), A(g), True, False)]", DENSE, BOTH)
for act in ("identity", "relu", "sigmoid", "tanh"):
    case(f"dense forward {act}", f"ops.dense_forward(A(x), A(w), A(b), {act!r})", DENSE, BOTH)
    case(f"dense backward {act}", f"ops.dense_backward(A(g), A(x), A(w), A(y), {act!r})", DENSE, BOTH)
    case(f"dense backward {act} no bias", f"ops.dense_backward(A(g), A(x), A(w), A(y), {act!r}, bias=False)", DENSE)
ACT = "x = rnd(7, 9, dtype=dt)\ny = np.abs(rnd(7, 9, dtype=dt)) / 4"
for act in ("relu", "sigmoid", "tanh", "softmax"):
    case(act, f"ops.{act}(A(x))", ACT)
    case(f"{act} backward", f"ops.{act}_backward(A(x), A(y))", ACT)
case("leaky_relu", "ops.leaky_relu(A(x), 0.2)", ACT)
case("leaky_relu backward", "ops.leaky_relu_backward(A(x), A(y), 0.2)", ACT)
case("mse", "ops.mse_loss(A(x), A(y))", ACT)
case("bce", "ops.bce_with_logits(A(x), A(y))", ACT)
case("cross-entropy", "ops.softmax_cross_entropy(A(x), A(np.arange(7)))", ACT)
# the parameter and state are updated in place; the gradient is only read
OPT = "p0, g, m0, v0 = rnd(11, dtype=dt), rnd(11, dtype=dt), rnd(11, dtype=dt), np.abs(rnd(11, dtype=dt))"
case("sgd", "[ops.sgd_update(p0.copy(), A(g), m0.copy(), lr=0.1, momentum=0.9, weight_decay=0.1)]", OPT)
case("adam", "[ops.adam_update(p0.copy(), A(g), m0.copy(), v0.copy(), 4, weight_decay=0.1)]", OPT)
CONV = "x, w, b = rnd(2, 3, 7, 7, dtype=dt), rnd(4, 3, 3, 3, dtype=dt), rnd(4, dtype=dt)"
for s in (1, 2):
    case(f"conv forward stride {s}", f"ops.conv2d_forward(A(x), A(w), A(b), stride={s}, padding=1)", CONV)
    case(
        f"conv backward stride {s}",
        f"ops.conv2d_backward(A(g), A(x), A(w), stride={s}, padding=1)",
        CONV + f"\ng = rnd(*ops.conv2d_output_shape(x.shape, w.shape, {s}, 1), dtype=dt)",
    )
POOL = "x = rnd(2, 3, 8, 8, dtype=dt)"
for args in ("2", "3, 2, 1"):
    case(f"max pool {args}", f"ops.max_pool2d_forward(A(x), {args})", POOL)
    case(
        f"max pool backward {args}",
        "ops.max_pool2d_backward(A(g), A(i), x.shape)",
        POOL + f"\no, i = ops.max_pool2d_forward(x, {args})\ng = rnd(*o.shape, dtype=dt)",
    )
    case(f"avg pool {args}", f"ops.avg_pool2d_forward(A(x), {args}, count_include_pad=False)", POOL)
    case(
        f"avg pool backward {args}",
        f"ops.avg_pool2d_backward(A(g), x.shape, {args})",
        POOL + f"\ng = rnd(*ops.pool2d_output_shape(x.shape, {args}), dtype=dt)",
    )
for cell in ("rnn", "lstm", "gru"):
    setup = recurrent_setup(cell, 4, 3) + "gh = rnd(3, 6, dtype=dt)"
    state = "A(h0), A(c0)" if cell == "lstm" else "A(h0)"
    state_grads = "grad_hn=A(gh), grad_cn=A(gh)" if cell == "lstm" else "grad_hn=A(gh)"
    case(f"{cell} forward", recurrent_forward(cell, "A"), setup)
    case(
        f"{cell} backward",
        f"ops.{cell}_backward(A(g), A(x), {state}, A(wi), A(wh), *map(A, f), {state_grads})",
        setup + f"\nf = {recurrent_forward(cell, as_tuple=True)}",
    )
# a real memory map, as np.load(..., mmap_mode="r") returns it
MMAP = """import os, tempfile
path = os.path.join(tempfile.mkdtemp(), "x.npy")
np.save(path, rnd(2, 3, 8, 8, dtype=dt))
x = np.load(path, mmap_mode="r")
w = rnd(4, 3, 3, 3, dtype=dt)"""
case("conv forward from a memory map", "ops.conv2d_forward(x if A is ro else np.array(x), A(w), padding=1)", MMAP)
case("max pool from a memory map", "ops.max_pool2d_forward(x if A is ro else np.array(x), 2)", MMAP)

PARAMS = [(b, name) for b in ALL_BACKENDS for name in sorted(CASES) if b != "numba" or "float32" in name]


def _outcomes(backend):
    return cached_outcomes(__name__, backend, {name: CASES[name] for b, name in PARAMS if b == backend})


@pytest.mark.parametrize("backend, name", PARAMS)
def test_read_only_inputs(backend, name):
    _require_or_skip(backend)
    got = _outcomes(backend)[name]
    assert got[0] == "ok", f"{backend}: {got[1]}: {got[2]}"[:3000]
    if backend != "numpy":
        dt = np.float64 if "float64" in name else np.float32
        assert_same_result(name, got, _outcomes("numpy")[name], **tol(dt, 50))
