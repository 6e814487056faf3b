"""Property tests: on random valid inputs, every compiled backend agrees with the NumPy reference.

Hypothesis draws the shapes (empty and size-1 dimensions included), the op's
settings (strides, padding, activations, reductions ...), the dtype, the
layout of every input (C-contiguous, a strided view, read-only) and a seed
for the data; each example runs the public op once with the reference and
once with each compiled backend, on copies, and compares every result with
the per-dtype tolerances of the suite (widened for long reductions).

Budget: ``EXAMPLES`` examples per op family and compiled backend — 25 in the
default run (about 40 s with a warm Numba cache, most of it the first calls),
150 in the ``slow`` variant that CI also runs (about 3 minutes; ``FASTNN_PROPERTY_EXAMPLES`` sets it). Read-only
inputs make Numba compile a separate specialisation once (then cached), so
they are drawn for float32 only, as in ``test_safety_readonly.py``.
"""

import os

import numpy as np
import pytest
from conftest import COMPILED_BACKENDS, _require_or_skip, tol
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastnn
from fastnn import ops

EXAMPLES = 25
SLOW_EXAMPLES = int(os.environ.get("FASTNN_PROPERTY_EXAMPLES", "150"))


def _settings(n):
    return settings(
        max_examples=n,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# ---------------------------------------------------------------- inputs


class Draw:
    """Data for one example: a dtype, a generator, and a layout per input."""

    def __init__(self, data):
        self.data = data
        self.dtype = np.dtype(data.draw(st.sampled_from([np.float32, np.float64]), label="dtype"))
        self.rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))

    def int(self, lo, hi, label):
        return self.data.draw(st.integers(lo, hi), label=label)

    def pick(self, options, label):
        return self.data.draw(st.sampled_from(options), label=label)

    def array(self, shape, scale=1.0, positive=False, label="array"):
        """Random values in ``shape``, as a C-contiguous, strided or read-only array."""
        a = self.rng.standard_normal(shape) * scale
        if positive:
            a = np.abs(a) + 0.1
        a = a.astype(self.dtype)
        layouts = ["contiguous", "strided"] + (["readonly"] if self.dtype == np.float32 else [])
        layout = self.pick(layouts, f"{label} layout")
        if layout == "strided" and a.ndim:
            big = np.zeros(shape[:-1] + (2 * shape[-1] + 1,), self.dtype)
            big[..., 1::2] = a
            a = big[..., 1::2]
            assert not a.flags.c_contiguous or a.size <= 1
        elif layout == "readonly":
            a = a.copy()
            a.setflags(write=False)
        return a


def _copy(v):
    if isinstance(v, np.ndarray):
        c = v.copy()
        c.setflags(write=v.flags.writeable)
        return c
    if isinstance(v, (list, tuple)):
        return type(v)(_copy(x) for x in v)
    if isinstance(v, dict):
        return {k: _copy(x) for k, x in v.items()}
    return v


def _run(backend, fn, args, kwargs):
    with fastnn.use_backend(backend):
        args, kwargs = _copy(args), _copy(kwargs)
        out = fn(*args, **kwargs)
        return out, args


def _flatten(v):
    if isinstance(v, (tuple, list)):
        return [x for item in v for x in _flatten(item)]
    return [v]


def _compare(backend, fn, args, kwargs=None, dtype=np.float64, scale=10.0, inplace=()):
    """Run ``fn`` with the reference and ``backend``; results (and in-place args) must agree."""
    kwargs = kwargs or {}
    want, want_args = _run("numpy", fn, args, kwargs)
    got, got_args = _run(backend, fn, args, kwargs)
    results = list(zip(_flatten(want), _flatten(got)))
    results += [(want_args[i], got_args[i]) for i in inplace]
    t = tol(dtype, scale)
    for i, (w, g) in enumerate(results):
        if w is None or g is None:
            assert w is None and g is None, f"result {i}: one backend returned None"
        elif isinstance(w, float):
            assert np.isclose(g, w, rtol=t["rtol"] * 10, atol=t["atol"] * 10, equal_nan=True), (i, g, w)
        else:
            assert g.shape == w.shape and g.dtype == w.dtype, (i, g.shape, w.shape, g.dtype, w.dtype)
            np.testing.assert_allclose(g, w, equal_nan=True, err_msg=f"result {i}", **t)


# ---------------------------------------------------------------- op families


def _dense(d, backend):
    B, I, O = d.int(0, 9, "B"), d.int(1, 40, "I"), d.int(1, 20, "O")
    act = d.pick(["identity", "relu", "sigmoid", "tanh"], "activation")
    x, w = d.array((B, I), label="x"), d.array((O, I), 0.3, label="w")
    b = d.array((O,), label="b") if d.pick([True, False], "bias") else None
    _compare(backend, ops.dense_forward, (x, w, b, act), dtype=d.dtype, scale=I)
    y = ops.dense_forward(np.ascontiguousarray(x), np.ascontiguousarray(w), None if b is None else b.copy(), act)
    g = d.array((B, O), label="g")
    _compare(
        backend,
        ops.dense_backward,
        (g, x, w, y, act),
        dict(bias=b is not None, input_grad=d.pick([True, False], "input_grad")),
        dtype=d.dtype,
        scale=I + B,
    )
    ta, tb = d.pick([False, True], "trans_a"), d.pick([False, True], "trans_b")
    M, K, N = B, I, O
    a = d.array((K, M) if ta else (M, K), label="a")
    bb = d.array((N, K) if tb else (K, N), label="b2")
    with fastnn.use_gemm(d.pick(["auto", "own", "blas"], "gemm")):
        _compare(backend, ops.matmul, (a, bb, ta, tb), dtype=d.dtype, scale=K)


def _activations(d, backend):
    shape = tuple(d.int(0, 6, f"dim{i}") for i in range(d.int(1, 3, "ndim")))
    name = d.pick(["relu", "leaky_relu", "sigmoid", "tanh", "softmax"], "activation")
    if name == "softmax":
        shape = (d.int(0, 6, "B"), d.int(1, 12, "C"))
    extra = (d.pick([0.0, 0.01, 0.3], "slope"),) if name == "leaky_relu" else ()
    x = d.array(shape, 3.0, label="x")
    _compare(backend, getattr(ops, name), (x,) + extra, dtype=d.dtype)
    y = getattr(ops, name)(np.ascontiguousarray(x), *extra)
    g = d.array(shape, label="g")
    _compare(backend, getattr(ops, name + "_backward"), (g, y) + extra, dtype=d.dtype, scale=shape[-1] + 1)


def _losses(d, backend):
    red = d.pick(["mean", "sum"], "reduction")
    kind = d.pick(["mse", "ce", "bce"], "loss")
    B, C = d.int(0, 9, "B"), d.int(1, 12, "C")
    if kind == "ce":
        z = d.array((B, C), 2.0, label="logits")
        labels = d.rng.integers(0, C, B)
        _compare(backend, ops.softmax_cross_entropy, (z, labels, red), dtype=d.dtype, scale=B + C)
    elif kind == "mse":
        _compare(
            backend,
            ops.mse_loss,
            (d.array((B, C), label="pred"), d.array((B, C), label="target"), red),
            dtype=d.dtype,
            scale=B * C + 1,
        )
    else:
        t = (d.rng.random((B, C)) > 0.5).astype(d.dtype)
        _compare(
            backend, ops.bce_with_logits, (d.array((B, C), 3.0, label="logits"), t, red), dtype=d.dtype, scale=B * C + 1
        )


def _optim(d, backend):
    shape = (d.int(1, 50, "n"),)
    p = np.ascontiguousarray(d.array(shape, label="p"))
    p.setflags(write=True)
    g = d.array(shape, 0.1, label="g")
    if d.pick(["sgd", "adam"], "optimizer") == "sgd":
        mom = d.pick([0.0, 0.9], "momentum")
        v = np.ascontiguousarray(d.rng.standard_normal(shape).astype(d.dtype)) if mom else None
        kw = dict(
            lr=0.1,
            momentum=mom,
            nesterov=bool(mom) and d.pick([False, True], "nesterov"),
            weight_decay=d.pick([0.0, 0.01], "wd"),
        )
        _compare(backend, ops.sgd_update, (p, g, v), kw, dtype=d.dtype, inplace=(0, 2) if mom else (0,))
    else:
        m = np.ascontiguousarray(d.rng.standard_normal(shape).astype(d.dtype) * 0.1)
        v = np.ascontiguousarray(np.abs(d.rng.standard_normal(shape)).astype(d.dtype) * 0.1)
        kw = dict(lr=1e-2, weight_decay=d.pick([0.0, 0.01], "wd"), decoupled=d.pick([False, True], "decoupled"))
        _compare(backend, ops.adam_update, (p, g, m, v, d.int(1, 5, "step")), kw, dtype=d.dtype, inplace=(0, 2, 3))


def _conv(d, backend):
    B, C, O = d.int(0, 3, "B"), d.int(1, 4, "C"), d.int(1, 5, "O")
    kh, kw = d.int(1, 4, "kh"), d.int(1, 4, "kw")
    s, p, dl = (
        (d.int(1, 3, "stride"), d.int(1, 2, "stride w")),
        (d.int(0, 2, "pad"), d.int(0, 2, "pad w")),
        (d.int(1, 2, "dil"), d.int(1, 2, "dil w")),
    )
    H = d.int(max(1, dl[0] * (kh - 1) + 1 - 2 * p[0]), 9, "H")
    W = d.int(max(1, dl[1] * (kw - 1) + 1 - 2 * p[1]), 9, "W")
    x, w = d.array((B, C, H, W), label="x"), d.array((O, C, kh, kw), 0.3, label="w")
    b = d.array((O,), label="b") if d.pick([True, False], "bias") else None
    k = C * kh * kw
    _compare(backend, ops.conv2d_forward, (x, w, b, s, p, dl), dtype=d.dtype, scale=k)
    shape = ops.conv2d_output_shape(x.shape, w.shape, s, p, dl)
    g = d.array(shape, label="g")
    _compare(
        backend,
        ops.conv2d_backward,
        (g, x, w, s, p, dl),
        dict(bias=b is not None, input_grad=d.pick([True, False], "input_grad")),
        dtype=d.dtype,
        scale=k + B * shape[2] * shape[3],
    )


def _pool(d, backend):
    B, C = d.int(0, 3, "B"), d.int(0, 3, "C")
    k = (d.int(1, 3, "k"), d.int(1, 3, "k w"))
    s = (d.int(1, 3, "s"), d.int(1, 3, "s w"))
    p = (d.int(0, k[0] // 2, "p"), d.int(0, k[1] // 2, "p w"))
    H, W = d.int(max(1, k[0] - 2 * p[0]), 8, "H"), d.int(max(1, k[1] - 2 * p[1]), 8, "W")
    x = d.array((B, C, H, W), label="x")
    shape = ops.pool2d_output_shape(x.shape, k, s, p)
    g = d.array(shape, label="g")
    if d.pick(["max", "avg"], "pool") == "max":
        _compare(backend, ops.max_pool2d_forward, (x, k, s, p), dtype=d.dtype)
        _, idx = ops.max_pool2d_forward(np.ascontiguousarray(x), k, s, p)
        _compare(backend, ops.max_pool2d_backward, (g, idx, x.shape), dtype=d.dtype, scale=k[0] * k[1])
    else:
        cip = d.pick([True, False], "count_include_pad")
        _compare(backend, ops.avg_pool2d_forward, (x, k, s, p, cip), dtype=d.dtype)
        _compare(backend, ops.avg_pool2d_backward, (g, x.shape, k, s, p, cip), dtype=d.dtype, scale=k[0] * k[1])


def _recurrent(d, backend):
    cell = d.pick(["rnn", "lstm", "gru"], "cell")
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    T, B, I, H = d.int(1, 6, "T"), d.int(1, 4, "B"), d.int(1, 6, "I"), d.int(1, 9, "H")
    x, h0 = d.array((T, B, I), label="x"), d.array((B, H), 0.5, label="h0")
    w_ih, w_hh = d.array((G * H, I), 0.4, label="w_ih"), d.array((G * H, H), 0.4, label="w_hh")
    bias = d.pick([True, False], "bias")
    b_ih = d.array((G * H,), 0.2, label="b_ih") if bias else None
    b_hh = d.array((G * H,), 0.2, label="b_hh") if bias else None
    g = d.array((T, B, H), label="g")
    ghn = d.array((B, H), label="ghn") if d.pick([True, False], "grad_hn") else None
    scale = 10 * (T + H + B)
    named = dict(bias=bias, input_grad=d.pick([True, False], "input_grad"), grad_hn=ghn)
    c = lambda a: None if a is None else np.ascontiguousarray(a)
    if cell == "rnn":
        nl = d.pick(["tanh", "relu"], "nonlinearity")
        _compare(backend, ops.rnn_forward, (x, h0, w_ih, w_hh, b_ih, b_hh, nl), dtype=d.dtype, scale=scale)
        out = ops.rnn_forward(c(x), c(h0), c(w_ih), c(w_hh), c(b_ih), c(b_hh), nl)
        _compare(backend, ops.rnn_backward, (g, x, h0, w_ih, w_hh, out, nl), named, dtype=d.dtype, scale=scale)
    elif cell == "lstm":
        c0 = d.array((B, H), 0.5, label="c0")
        _compare(backend, ops.lstm_forward, (x, h0, c0, w_ih, w_hh, b_ih, b_hh), dtype=d.dtype, scale=scale)
        out, cs, gates = ops.lstm_forward(c(x), c(h0), c(c0), c(w_ih), c(w_hh), c(b_ih), c(b_hh))
        gcn = d.array((B, H), label="gcn") if d.pick([True, False], "grad_cn") else None
        _compare(
            backend,
            ops.lstm_backward,
            (g, x, h0, c0, w_ih, w_hh, out, cs, gates),
            dict(named, grad_cn=gcn),
            dtype=d.dtype,
            scale=scale,
        )
    else:
        _compare(backend, ops.gru_forward, (x, h0, w_ih, w_hh, b_ih, b_hh), dtype=d.dtype, scale=scale)
        out, gates, hn = ops.gru_forward(c(x), c(h0), c(w_ih), c(w_hh), c(b_ih), c(b_hh))
        _compare(backend, ops.gru_backward, (g, x, h0, w_ih, w_hh, out, gates, hn), named, dtype=d.dtype, scale=scale)


FAMILIES = {
    "dense": _dense,
    "activations": _activations,
    "losses": _losses,
    "optim": _optim,
    "conv": _conv,
    "pool": _pool,
    "recurrent": _recurrent,
}


def _property(backend, family, examples):
    _require_or_skip(backend)

    @_settings(examples)
    @given(st.data())
    def check(data):
        FAMILIES[family](Draw(data), backend)

    check()


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
def test_backends_agree_with_the_reference(backend, family):
    _property(backend, family, EXAMPLES)


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
def test_backends_agree_with_the_reference_many_examples(backend, family):
    _property(backend, family, SLOW_EXAMPLES)
