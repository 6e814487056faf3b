"""NaN and ±inf inputs: every backend gives the NumPy reference's NaN and inf, in the same places.

Each case puts one NaN, +inf or -inf at the first, middle or last element of
one input of an op (nine variants per case, in one list) and compares every
output with the reference: non-finite values must sit at the same positions
with the same sign, the finite rest must agree to the usual tolerance.
Places where backends used to differ: the first pixel of a Numba average
pooling plane (it seeded every window's sum), the Cython stride-1
convolution backward pass (0·inf in its padded rows), sigmoid(-inf) in the
Cython float32 recurrent kernels (1e-38 instead of 0), and the optimizers'
weight decay of zero (0·inf in the compiled updates).

Time budget: three child processes, about 9 s with a warm Numba cache,
about 50 s with a cold one.
"""

import numpy as np
import pytest
from conftest import tol
from safety_cases import assert_same_result, cached_outcomes, recurrent_forward, recurrent_setup

CASES = {}
VARIANTS = [(v, w) for v in ("np.nan", "np.inf", "-np.inf") for w in ("first", "mid", "last")]


def case(name, setup, call, poisoned):
    """``call`` runs with input ``poisoned`` replaced by each of the nine poisoned copies."""
    for dt in ("float32", "float64"):
        CASES[f"{name}[{dt}]"] = f"""
dt = np.{dt}
{setup}
clean = {poisoned}
result = []
for value, where in {VARIANTS!r}:
    {poisoned} = poison(clean, eval(value), where)
    result.append({call})
"""


DENSE = (
    "x, w, b = rnd(4, 5, dtype=dt), rnd(3, 5, dtype=dt), rnd(3, dtype=dt)\ng = rnd(4, 3, dtype=dt)\n"
    "y = np.abs(rnd(4, 3, dtype=dt)) / 4"
)
for gemm in ("auto", "own"):
    setup = f"fastnn.set_gemm({gemm!r})\n{DENSE}"
    for act in ("identity", "relu", "sigmoid", "tanh"):
        for v in ("x", "w", "b"):
            case(f"dense forward {act} {v} gemm={gemm}", setup, f"ops.dense_forward(x, w, b, {act!r})", v)
        for v in ("g", "x", "w", "y"):
            case(f"dense backward {act} {v} gemm={gemm}", setup, f"ops.dense_backward(g, x, w, y, {act!r})", v)
    case(f"matmul gemm={gemm}", setup, "ops.matmul(x, w, False, True)", "x")
ACT = "x = rnd(40, dtype=dt)\ny = np.abs(rnd(40, dtype=dt)) / 4\nm = rnd(3, 7, dtype=dt)\nq = np.abs(rnd(3, 7, dtype=dt)) / 7"
for act in ("relu", "sigmoid", "tanh", "leaky_relu"):
    case(act, ACT, f"ops.{act}(x)", "x")
    case(f"{act} backward grad", ACT, f"ops.{act}_backward(x, y)", "x")
    case(f"{act} backward y", ACT, f"ops.{act}_backward(x, y)", "y")
case("softmax", ACT, "ops.softmax(m)", "m")
case("softmax backward grad", ACT, "ops.softmax_backward(m, q)", "m")
case("softmax backward y", ACT, "ops.softmax_backward(m, q)", "q")
case("mse pred", ACT, "ops.mse_loss(m, q)", "m")
case("mse target", ACT, "ops.mse_loss(m, q)", "q")
case("bce logits", ACT, "ops.bce_with_logits(m, q)", "m")
case("bce target", ACT, "ops.bce_with_logits(m, q)", "q")
case("cross-entropy", ACT, "ops.softmax_cross_entropy(m, np.array([0, 3, 6]))", "m")
OPT = (
    "p, g, m, v = rnd(9, dtype=dt), rnd(9, dtype=dt), rnd(9, dtype=dt), np.abs(rnd(9, dtype=dt))\n"
    "def sgd(p, g, **kw):\n    p, vel = p.copy(), m.copy()\n    ops.sgd_update(p, g, vel, lr=0.1, **kw)\n    return p, vel\n"
    "def adam(p, g, **kw):\n    p, m1, v1 = p.copy(), m.copy(), v.copy()\n    ops.adam_update(p, g, m1, v1, 2, **kw)\n"
    "    return p, m1, v1"
)
for which in ("p", "g"):
    for kw in ("momentum=0.9", "momentum=0.9, nesterov=True", "momentum=0.9, weight_decay=0.01", ""):
        case(f"sgd {which} {kw}", OPT, f"sgd(p, g, {kw})", which)
    for kw in ("", "weight_decay=0.01", "weight_decay=0.01, decoupled=True", "decoupled=True"):
        case(f"adam {which} {kw}", OPT, f"adam(p, g, {kw})", which)
for s in (1, 2):
    for pad in (0, 1):
        kw = f"stride={s}, padding={pad}"
        setup = (
            f"x, w, b = rnd(2, 3, 6, 6, dtype=dt), rnd(4, 3, 3, 3, dtype=dt), rnd(4, dtype=dt)\n"
            f"g = rnd(*ops.conv2d_output_shape(x.shape, w.shape, {kw}), dtype=dt)"
        )
        for v in ("x", "w"):
            case(f"conv forward {v} {kw}", setup, f"ops.conv2d_forward(x, w, b, {kw})", v)
        for v in ("g", "x", "w"):
            case(f"conv backward {v} {kw}", setup, f"ops.conv2d_backward(g, x, w, {kw})", v)
for args in ("2", "3, 2, 1", "3, 1, 1", "(2, 3), (1, 2), (1, 1)"):
    setup = f"x = rnd(2, 2, 6, 6, dtype=dt)\no, i = ops.max_pool2d_forward(x, {args})\ng = rnd(*o.shape, dtype=dt)"
    case(f"max pool {args}", setup, f"ops.max_pool2d_forward(x, {args})", "x")
    case(f"max pool backward {args}", setup, "ops.max_pool2d_backward(g, i, x.shape)", "g")
    for cip in (True, False):
        case(
            f"avg pool {args} count_include_pad={cip}",
            setup,
            f"ops.avg_pool2d_forward(x, {args}, count_include_pad={cip})",
            "x",
        )
        case(
            f"avg pool backward {args} count_include_pad={cip}",
            setup,
            f"ops.avg_pool2d_backward(g, x.shape, {args}, count_include_pad={cip})",
            "g",
        )
for cell in ("rnn", "lstm", "gru"):
    state = "h0, c0" if cell == "lstm" else "h0"
    setup = recurrent_setup(cell, 3, 4) + (
        f"def run(x, h0, wi, wh, bi, g):\n    f = {recurrent_forward(cell, as_tuple=True)}\n"
        f"    return f + ops.{cell}_backward(g, x, {state}, wi, wh, *f)"
    )
    for v in ("x", "h0", "wi", "wh", "bi", "g"):
        case(f"{cell} {v}", setup, "run(x, h0, wi, wh, bi, g)", v)


def _outcomes(backend):
    return cached_outcomes(__name__, backend, CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_non_finite_inputs_match_reference(compiled_backend, name):
    want, got = _outcomes("numpy")[name], _outcomes(compiled_backend)[name]
    assert want[0] == "ok", f"reference: {want}"
    assert got[0] == "ok", f"{compiled_backend}: {got}"
    dt = np.float64 if "float64" in name else np.float32
    assert_same_result(name, got, want, **tol(dt, 100))
