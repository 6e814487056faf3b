"""How the Numba backend compiles (``numba_backend/_jit.py``): one source for the serial and the
parallel kernel, read-only inputs without a second compilation, fast kernels compiled in the
background behind bit-identical fallbacks, and a first training step (per-step loop or compiled
plan) that compiles only what it runs.

Time budget, warm cache: about 8 s (the serial/parallel table 3 s of it). The child processes with an empty Numba cache compile what
they use (one W3 training step; one W6 step; a parallel tanh and sigmoid): about 10, 10 and 8 s
here; one dense plan step took 60 s at load average 4.
"""

import json

import numpy as np
import pytest
from conftest import _require_or_skip
from isolated import run_isolated

import fastnn
from fastnn import ops


@pytest.fixture(scope="module")
def jit():
    _require_or_skip("numba")
    from fastnn.backends.numba_backend import _jit

    return _jit


def test_every_serial_kernel_has_a_parallel_twin_of_the_same_source(jit):
    assert len(jit.PAIRS) >= 20
    for serial, parallel in jit.PAIRS:
        assert serial.py_func.__code__ is parallel.py_func.__code__
        assert parallel.py_func.__qualname__ == serial.py_func.__qualname__ + "_parallel"  # own cache file
        assert not serial.targetoptions.get("parallel") and parallel.targetoptions["parallel"]


# -- serial and parallel compilations of one source: the same bits --------------------------------
#
# An exact pair's serial kernel runs while its parallel twin compiles in the background, then the
# twin takes over: only invisible if the two compilations round alike. Each builder returns a
# kernel's arguments at sizes that leave vector remainders (odd rows, odd columns, windows that
# overlap); nblocks = 2 where a kernel takes one (what two threads give it).


def _pool_out(n, k, s, p, d=1):
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def _bn_args(rng, dt, L, fwd):
    N, C = (37, 13) if L > 1 else (101, 67)
    x = (rng.standard_normal((N, C, L)) * 2 + 3).astype(dt)  # off zero: the shifted sums matter
    w, b = rng.standard_normal(C).astype(dt), rng.standard_normal(C).astype(dt)
    if fwd:
        return (x, w, b, True, True, 1e-5, True, np.empty(C, dt), np.empty(C, dt), np.empty_like(x), 2)
    g = rng.standard_normal(x.shape).astype(dt)
    mean, var = x.mean(axis=(0, 2)).astype(dt), x.var(axis=(0, 2)).astype(dt)
    return (g, x, w, True, mean, var, 1e-5, True, np.empty_like(x), True, np.empty(C, dt), np.empty(C, dt), 2)


def _ln_args(rng, dt, K):
    x = (rng.standard_normal((53, K)) * 2 + 1).astype(dt)
    w, b = rng.standard_normal(K).astype(dt), rng.standard_normal(K).astype(dt)
    return (x, w, b, True, True, 1e-5, np.empty_like(x), np.empty(53, dt), np.empty(53, dt), 2)


def _avg_pool_args(rng, dt, fwd, k, s, p, count_include_pad):
    shape = (3, 5, 31, 29)
    out = (3, 5, _pool_out(31, k[0], s[0], p[0]), _pool_out(29, k[1], s[1], p[1]))
    geom = (*k, *s, *p, count_include_pad)
    if fwd:
        return (rng.standard_normal(shape).astype(dt), *geom, np.empty(out, dt))
    return (rng.standard_normal(out).astype(dt), *geom, np.empty(shape, dt))


def _max_pool_args(rng, dt, which):
    from fastnn.backends.numba_backend import conv

    x = rng.standard_normal((3, 5, 31, 29)).astype(dt)
    if which == "2x2":
        return (x, np.empty((3, 5, 15, 14), dt), np.empty((3, 5, 15, 14), np.int64))
    if which == "fwd":
        return (x, 3, 3, 2, 2, 1, 1, np.empty((3, 5, 16, 15), dt), np.empty((3, 5, 16, 15), np.int64))
    out, idx = np.empty((3, 5, 16, 15), dt), np.empty((3, 5, 16, 15), np.int64)
    conv._max_pool_fwd[0](x, 3, 3, 2, 2, 1, 1, out, idx)  # overlapping windows: inputs that take two gradients
    return (rng.standard_normal(out.shape).astype(dt), idx, np.empty_like(x))


def _conv_args(rng, dt, which, geom):
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = geom
    B, C, H, W, O = 3, 5, 17, 19, 7
    ho, wo = _pool_out(H, kh, sh, ph, dh), _pool_out(W, kw, sw, pw, dw)
    lowering = (0, B, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo)
    if which == "im2col":
        return (rng.standard_normal((B, C, H, W)).astype(dt), *lowering, np.empty((C * kh * kw, B * ho * wo), dt))
    if which == "col2im":
        return (rng.standard_normal((C * kh * kw, B * ho * wo)).astype(dt), *lowering, np.empty((B, C, H, W), dt))
    if which == "scatter":
        y, bias = rng.standard_normal((O, B * ho * wo)).astype(dt), rng.standard_normal(O).astype(dt)
        return (y, bias, True, 0, B, np.empty((B, O, ho, wo), dt))
    return (rng.standard_normal((B, O, ho, wo)).astype(dt), 0, B, np.empty((O, B * ho * wo), dt))


def _fused_conv_args(rng, dt):
    import numba

    B, C, H, W, O, k, rows = 3, 5, 17, 19, 7, 3, 4
    ho, wo = H, W  # 3 x 3, padding 1
    x, w2 = rng.standard_normal((B, C, H, W)).astype(dt), rng.standard_normal((O, C * k * k)).astype(dt)
    work = np.empty((numba.get_num_threads(), C * k * k * rows * wo), dt)  # a row per thread
    out = np.empty((B, O, ho, wo), dt)
    return (x, w2, rng.standard_normal(O).astype(dt), True, k, k, 1, 1, 1, 1, 1, 1, ho, wo, rows, work, out)


def _with_slope(args):
    """The leaky ReLU kernels' arguments: the slope before the output."""
    return (*args[:-1], 0.01, args[-1])


def _dropout_args(rng, dt, fwd, group):
    n = 4099 * group
    bits = rng.integers(0, 2**32, n // group, dtype=np.uint32)
    x = rng.standard_normal(n).astype(dt)
    if fwd:
        return (x, bits, np.int64(2**31), dt(2.0), group, True, np.empty_like(x), np.empty(n // group, np.uint8))
    mask = (bits >= 2**31).astype(np.uint8)
    return (rng.standard_normal(n).astype(dt), mask, dt(2.0), group, x, True, np.empty_like(x))


def _optim_args(rng, dt, which):
    n = 4099
    p, g = rng.standard_normal(n).astype(dt), rng.standard_normal(n).astype(dt)
    if which == "sgd_plain":
        return (p, g, 0.1, 1e-4)
    m = rng.standard_normal(n).astype(dt)
    if which == "sgd_mom":
        return (p, g, m, 0.1, 0.9, True, 1e-4)
    v = rng.random(n).astype(dt)
    return (p, g, m, v, 0.999, 0.0, 0.9, 0.1, 0.999, 0.001, 0.01, 1.3, 1e-8)


def _unary(rng, dt, shape=(37 * 1001,)):
    # flat, as the elementwise kernels' callers pass them: no compilation the library would not make
    x = (rng.standard_normal(shape) * 4).astype(dt)
    return (x, np.empty_like(x))


def _grad(rng, dt, shape=(37 * 1001,)):
    g, y = rng.standard_normal(shape).astype(dt), rng.random(shape).astype(dt)
    return (g, y, np.empty_like(g))


#: (module, kernel) -> argument builders (rng, dtype): every exact pair, the ones with a sum or an
#: accumulation in an iteration of the parallel loop under several geometries
_TWIN_CASES = {
    ("activations", "_relu"): [_unary],
    ("activations", "_relu_bwd"): [_grad],
    ("activations", "_leaky"): [lambda r, d: _with_slope(_unary(r, d))],
    ("activations", "_leaky_bwd"): [lambda r, d: _with_slope(_grad(r, d))],
    ("activations", "_sigmoid"): [_unary],
    ("activations", "_sigmoid_bwd"): [_grad],
    ("activations", "_tanh"): [_unary],
    ("activations", "_tanh_bwd"): [_grad],
    ("activations", "_softmax"): [lambda r, d: _unary(r, d, (37, 1001))],
    ("activations", "_softmax_bwd"): [lambda r, d: _grad(r, d, (37, 1001))],
    ("norm", "_bn_fwd"): [lambda r, d, L=L: _bn_args(r, d, L, True) for L in (29, 1)],
    ("norm", "_bn_bwd"): [lambda r, d, L=L: _bn_args(r, d, L, False) for L in (29, 1)],
    ("norm", "_ln_fwd"): [lambda r, d, K=K: _ln_args(r, d, K) for K in (1001, 37)],
    ("conv", "_avg_pool_fwd"): [
        lambda r, d, g=g: _avg_pool_args(r, d, True, *g)
        for g in (((3, 3), (1, 1), (1, 1), True), ((7, 7), (1, 1), (0, 0), True), ((3, 5), (2, 3), (1, 2), False))
    ],
    ("conv", "_avg_pool_bwd"): [
        lambda r, d, g=g: _avg_pool_args(r, d, False, *g)
        for g in (((3, 3), (1, 1), (1, 1), True), ((3, 5), (2, 3), (1, 2), False))
    ],
    ("conv", "_max_pool_fwd"): [lambda r, d: _max_pool_args(r, d, "fwd")],
    ("conv", "_max_pool_2x2"): [lambda r, d: _max_pool_args(r, d, "2x2")],
    ("conv", "_max_pool_bwd"): [lambda r, d: _max_pool_args(r, d, "bwd")],
    ("conv", "_im2col"): [lambda r, d: _conv_args(r, d, "im2col", ((3, 3), (1, 1), (1, 1), (1, 1)))],
    ("conv", "_col2im"): [
        lambda r, d, g=g: _conv_args(r, d, "col2im", g)
        for g in (((3, 3), (1, 1), (1, 1), (1, 1)), ((5, 3), (2, 1), (2, 1), (1, 2)))
    ],
    ("conv", "_scatter"): [lambda r, d: _conv_args(r, d, "scatter", ((3, 3), (1, 1), (1, 1), (1, 1)))],
    ("conv", "_gather"): [lambda r, d: _conv_args(r, d, "gather", ((3, 3), (1, 1), (1, 1), (1, 1)))],
    ("conv", "_fused_tiled"): [_fused_conv_args],
    ("adaptive_pool", "_fwd"): [
        lambda r, d, o=o: (r.standard_normal((15, 23, 31)).astype(d), np.empty((15, *o), d)) for o in ((1, 1), (7, 5))
    ],
    ("adaptive_pool", "_bwd"): [
        lambda r, d, o=o: (r.standard_normal((15, *o)).astype(d), np.empty((15, 23, 31), d)) for o in ((1, 1), (7, 5))
    ],
    ("dropout", "_fwd"): [lambda r, d, k=k: _dropout_args(r, d, True, k) for k in (1, 3)],
    ("dropout", "_bwd"): [lambda r, d, k=k: _dropout_args(r, d, False, k) for k in (1, 3)],
    ("embedding", "_gather"): [
        lambda r, d: (r.integers(0, 50, 77), r.standard_normal((50, 33)).astype(d), np.empty((77, 33), d))
    ],
    ("optim", "_sgd_plain"): [lambda r, d: _optim_args(r, d, "sgd_plain")],
    ("optim", "_sgd_mom"): [lambda r, d: _optim_args(r, d, "sgd_mom")],
    ("optim", "_adam"): [lambda r, d: _optim_args(r, d, "adam")],
}


def _copy_at(a, offset):
    """A copy of ``a`` starting ``offset`` bytes past a 64-byte boundary: a vector loop that peels
    iterations to align its loads would sum in another order at another address."""
    buf = np.empty(a.nbytes + 128, np.uint8)
    start = -buf.ctypes.data % 64 + offset
    out = buf[start : start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def test_every_exact_pair_has_a_twin_case(jit):
    # a new exact pair (run serial until its parallel twin is compiled) gets arguments in the table above
    import importlib
    import pkgutil

    from fastnn.backends import numba_backend

    for info in pkgutil.iter_modules(numba_backend.__path__):  # every kernel module, so PAIRS is complete
        importlib.import_module(f"{numba_backend.__name__}.{info.name}")
    exact = {id(d.fast) for d in jit.DEFERRED}
    covered = set()
    for mod, name in _TWIN_CASES:
        module = importlib.import_module(f"{numba_backend.__name__}.{mod}")
        covered.add(id(next(p for p in jit.PAIRS if p[0] is getattr(module, name)[0])[1]))
    missing = [s.py_func.__module__ + "." + s.py_func.__qualname__ for s, p in jit.PAIRS if id(p) in exact - covered]
    assert not missing


@pytest.mark.parametrize("case", list(_TWIN_CASES), ids="{0[0]}.{0[1]}".format)
def test_serial_and_parallel_compilations_give_the_same_bits(jit, case, rng):
    """The parallel compilation itself (PAIRS holds it, never the fallback a Deferred runs until it
    is compiled), on float32 and float64. A sum in an iteration that the vectoriser may reorder
    differently in the two broke this on AVX-512 (softmax); Numba 0.68 compiled the parallel Adam
    update into a loop whose stores were dropped.

    Time budget (the whole table, 2 cores, warm cache): 20 s; measured 3 s at load average 4.
    From an empty cache each kernel compiles twice per dtype: 70 s."""
    import importlib

    module = importlib.import_module(f"fastnn.backends.numba_backend.{case[0]}")
    serial, parallel = next(p for p in jit.PAIRS if p[0] is getattr(module, case[1])[0])
    assert parallel.targetoptions["parallel"]
    names = serial.py_func.__code__.co_varnames
    for build in _TWIN_CASES[case]:
        for dt in (np.float32, np.float64):
            args = build(rng, dt)
            a = [_copy_at(v, 0) if isinstance(v, np.ndarray) else v for v in args]
            b = [_copy_at(v, v.itemsize) if isinstance(v, np.ndarray) else v for v in args]
            assert serial(*a) == parallel(*b)
            for name, u, v in zip(names, a, b):
                # every array but per-thread scratch: the outputs, and the inputs no kernel may change
                if isinstance(u, np.ndarray) and name != "work":
                    bits = f"u{u.itemsize}"  # -0.0 is not 0.0, a NaN's payload counts
                    np.testing.assert_array_equal(u.view(bits), v.view(bits), err_msg=f"{name}, {np.dtype(dt)}")


def test_read_only_input_runs_the_writeable_compilation(jit, rng):
    from fastnn.backends.numba_backend import activations, losses

    x, t = rng.standard_normal((5, 7)).astype(np.float32), rng.standard_normal((5, 7)).astype(np.float32)
    x_ro, t_ro = x.copy(), t.copy()
    x_ro.flags.writeable = t_ro.flags.writeable = False
    with fastnn.use_backend("numba"):
        want = ops.relu(x), ops.mse_loss(x, t)
        got = ops.relu(x_ro), ops.mse_loss(x_ro, t_ro)
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1][0] == want[1][0]
    np.testing.assert_array_equal(got[1][1], want[1][1])
    for disp in (activations._relu[0], losses._mse[0]):
        sigs = [s for s in disp.signatures if str(s[0].dtype) == "float32"]
        assert len(sigs) == 1, sigs  # one compilation for both (and any shape: flattened)
        assert not sigs[0][0].mutable  # typed read-only: a kernel writing it would not compile


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_plain_small_products_give_the_tiled_kernels_bits(jit, dtype, rng):
    # What makes deferring the tiled kernel invisible: the plain loops round exactly alike.
    from fastnn.backends.numba_backend import _gemm
    from fastnn.backends.numba_backend import _small_gemm as sg

    for m, k, n in [(32, 64, 128), (7, 13, 33), (1, 1, 1), (128, 64, 10), (33, 129, 17), (9, 1, 40)]:
        for ta in (False, True):
            for tb in (False, True):
                for act, has_bias in ((0, False), (0, True), (1, True)):
                    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
                    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
                    a.flat[0], b.flat[-1] = np.inf, np.nan
                    bias = rng.standard_normal(n).astype(dtype)
                    tiled, plain = np.empty((m, n), dtype), np.empty((m, n), dtype)
                    _gemm._gemm_small_tiled(a, b, ta, tb, tiled, bias, has_bias, act)
                    _gemm._gemm_small_plain(a, b, ta, tb, plain, bias, has_bias, act)
                    np.testing.assert_array_equal(plain, tiled, err_msg=str((m, k, n, ta, tb, act, has_bias)))
        A, B = rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)
        C = rng.standard_normal((m, n)).astype(dtype)
        for fast, plain, x, y in (
            (sg.acc_nn, sg.acc_nn_simple, A, B),
            (sg.acc_tn, sg.acc_tn_simple, A.T.copy(), B),
            (sg.mul_nt, sg.mul_nt_simple, A, B.T.copy()),
        ):
            c1, c2 = C.copy(), C.copy()
            fast(x, y, c1)
            plain(x, y, c2)
            np.testing.assert_array_equal(c2, c1)
        # the bias and ReLU fused into the tiles: the bits of the product, then a pass adding the bias, then
        # one applying ReLU (NaN kept), as the plans' dense layers and the recurrent projection had them
        bias = rng.standard_normal(n).astype(dtype)
        A[0, 0] = np.nan
        for has_bias in (False, True):
            for relu in (False, True):
                want = np.empty((m, n), dtype)
                sg.mul_nt(A, B.T.copy(), want)
                if has_bias:
                    want += bias
                if relu:
                    want = np.where(want <= 0, dtype(0), want)
                for fused in (sg.mul_nt_bias, sg.mul_nt_bias_simple):
                    got = np.full((m, n), np.inf, dtype)
                    fused(A, B.T.copy(), got, bias, has_bias, relu)
                    np.testing.assert_array_equal(got, want, err_msg=str((m, k, n, has_bias, relu)))


@pytest.mark.parametrize("name", ["mul_nt", "mul_nt_simple"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inlined_products_keep_an_operand_made_for_the_call(jit, dtype, name, rng):
    # The 2-D products are inlined and read their operands without a reference; an operand made in
    # the call (a transposed weight copied to row-major) must outlive the product. Released early,
    # its memory was the packing buffer the product allocates next (same size): wrong results.
    import numba

    from fastnn.backends.numba_backend import _small_gemm as sg

    mul_nt = getattr(sg, name)

    @numba.njit
    def product(a, w, c):
        mul_nt(a, np.ascontiguousarray(w.T), c)  # w.T Fortran-ordered: a fresh row-major copy

    A = rng.standard_normal((5, 16)).astype(dtype)
    W = rng.standard_normal((16, 8)).astype(dtype)  # (K, N), as the recurrent kernels' W_ih
    C = np.empty((5, 8), dtype)
    product(A, W, C)
    np.testing.assert_allclose(C, A @ W, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unfused_convolution_fallback_gives_the_fused_kernels_bits(jit, dtype, rng):
    from fastnn.backends.numba_backend import conv

    for (B, C, H, W), (O, kh, kw), (sh, sw), (ph, pw), (dh, dw) in [
        ((3, 2, 9, 11), (5, 3, 3), (1, 1), (1, 1), (1, 1)),
        ((2, 3, 8, 7), (4, 2, 3), (2, 1), (0, 2), (1, 2)),
        ((1, 1, 5, 5), (1, 1, 1), (1, 1), (0, 0), (1, 1)),
        ((2, 4, 12, 12), (9, 3, 3), (2, 2), (1, 1), (2, 1)),
    ]:
        x = rng.standard_normal((B, C, H, W)).astype(dtype)
        x.flat[3] = np.inf
        w2 = rng.standard_normal((O, C * kh * kw)).astype(dtype)
        bias = rng.standard_normal(O).astype(dtype)
        ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        for has_bias in (True, False):
            fused, plain = np.empty((B, O, ho, wo), dtype), np.empty((B, O, ho, wo), dtype)
            rows = 2
            args = (x, w2, bias, has_bias, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, rows)
            conv._fused_tiled[0](*args, np.empty((1, w2.shape[1] * rows * wo), dtype), fused)
            conv._fused_fallback(*args, None, plain)
            np.testing.assert_array_equal(plain, fused)


# Child code that records in ``names`` the qualified name of every function Numba compiles from here on.
_COMPILE_NAMES = """
from numba.core import event
names = []
class Names(event.Listener):
    def on_start(self, ev):
        pass
    def on_end(self, ev):
        names.append(ev.data["dispatcher"].py_func.__qualname__)
event.register("numba:compile", Names())
"""


def _cold(code, names=False, **env):
    """Run ``code`` in a child with an empty Numba cache of its own; it prints one JSON line.

    ``names``: first define ``names``, the functions Numba compiles from then on (:data:`_COMPILE_NAMES`).
    """
    import tempfile
    import textwrap

    if names:
        code = _COMPILE_NAMES + textwrap.dedent(code)
    with tempfile.TemporaryDirectory() as cache:
        res = run_isolated(code, env={"NUMBA_CACHE_DIR": cache, "FASTNN_NUM_THREADS": "2", **env}, timeout=300)
    res.assert_ok()
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_cache_keys_of_kernels_over_other_kernels_are_the_same_in_every_process(jit):
    # The conv and rnn kernels are closures over _small_gemm's products. Numba keys the disk cache
    # of a closure on its pickled cells, and a dispatcher pickles with a per-process id: those
    # kernels missed the cache in every process, compiled again, and their fallbacks ran meanwhile.
    code = """
        import json, os
        import fastnn
        fastnn.set_backend("numba")
        import fastnn.backends.numba_backend.conv, fastnn.backends.numba_backend.rnn
        from fastnn.backends.numba_backend import _jit

        class _Codegen:
            def magic_tuple(self):
                return ()

        keys = {k.py_func.__qualname__: str(k._cache._index_key((), _Codegen()))
                for k in _jit.KERNELS if k.py_func.__closure__ and hasattr(k._cache, "_index_key")}
        print(json.dumps(keys), flush=True)
        os._exit(0)
    """
    first, second = _cold(code), _cold(code)
    assert len(first) >= 4 and any("_conv_forward_fused" in name for name in first)
    assert first == second


def test_first_w3_step_compiles_only_what_it_runs(jit):
    # One child, one W3 step from an empty cache: the step's serial kernels, once per argument
    # typing, on the plain products; nothing parallel and no register-tiled kernel yet.
    info = _cold("""
        import json, os
        import fastnn
        fastnn.set_backend("numba")
        from fastnn.bench.workloads import build_step, get_workloads
        from fastnn.backends.numba_backend import _jit
        step = build_step(get_workloads(["W3"])[0].cases(True, False)[0])
        loss = float(step())
        compiled = {k.py_func.__qualname__: len(k.signatures) for k in _jit.KERNELS if k.signatures}
        parallel = [k.py_func.__qualname__ for k in _jit.KERNELS if k.signatures and k.targetoptions["parallel"]]
        print(json.dumps(dict(loss=loss, compiled=compiled, parallel=parallel)), flush=True)
        os._exit(0)   # not waiting for the tiled product kernel being compiled in the background
    """)
    assert 0 < info["loss"] < 10
    assert info["parallel"] == []
    assert info["compiled"] == {
        "_gemm_small_plain": 1,  # every product of the step (4 shapes, 3 layouts)
        "_epilogue.<locals>._bias_act_identity": 1,  # the 10-column output layer (BLAS + bias)
        "_softmax_ce": 1,
        "_delta_bias": 1,  # the ReLU layers' δ and bias gradients, and the output layer's bias gradient
        "_sgd_mom": 1,  # weights and biases, flattened
    }


def test_first_w6_step_compiles_each_helper_once(jit):
    # One child, one tanh-RNN step from an empty cache. The plain product is the only helper the
    # recurrent kernels link (compiled once); its 2-D wrappers and the relu rows are inlined, so
    # they compile nothing, whatever the read-only flags of their operands.
    info = _cold("""
        import json, os
        import fastnn
        fastnn.set_backend("numba")
        from fastnn.bench.workloads import build_step, get_workloads
        from fastnn.backends.numba_backend import _jit, _small_gemm, rnn
        step = build_step(get_workloads(["W6"])[0].cases(True, False)[0])
        loss = float(step())
        compiled = {k.py_func.__qualname__: len(k.signatures) for k in _jit.KERNELS if k.signatures}
        helpers = {f.py_func.__name__: len(f.signatures) for f in (_small_gemm.simple_tiled, rnn._tanh_rows,
                                                                   rnn._relu_rows)}
        print(json.dumps(dict(loss=loss, compiled=compiled, helpers=helpers)), flush=True)
        os._exit(0)
    """)
    assert info["loss"] > 0
    assert info["compiled"] == {
        "_kernels.<locals>._rnn_fwd_plain": 1,
        "_kernels.<locals>._rnn_bwd_plain": 1,
        "_kernels.<locals>._weight_grads_small_plain": 1,
        "_bias_grads": 1,
        "_mse": 1,
        "_sgd_mom": 1,
    }
    assert info["helpers"] == {"simple_tiled": 1, "_act_rows_tanh": 1, "_act_rows_relu": 0}


def test_first_plan_step_compiles_only_its_own_convention(jit):
    # One child, one dense plan step (cross-entropy, mean, SGD) from an empty cache: the driver
    # made for PyTorch's reductions, on the plain products; not scikit-learn's loss, which only the
    # driver made for it compiles, and not Numba's shape-error message (the drivers copy rows
    # element by element).
    info = _cold(
        """
        import json, os
        import numpy as np
        import fastnn
        from fastnn import compiled, nn, optim
        fastnn.set_backend("numba")
        from fastnn.backends.numba_backend import _jit, train
        model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
        opt = optim.SGD(model.parameters(), lr=0.1)
        plan = compiled.train_plan(model, nn.CrossEntropyLoss(), opt)
        rng = np.random.default_rng(0)
        X = rng.standard_normal((8, 5)).astype(np.float32)
        y = rng.integers(0, 3, 8).astype(np.intp)
        res = plan.run(X, y, np.arange(8, dtype=np.intp), 4, compiled.hyper_parameters(opt)[1])
        drivers = sorted(k.py_func.__qualname__ for k in _jit.KERNELS if k.signatures and "_steps" in k.py_func.__name__)
        print(json.dumps(dict(loss=float(res.losses[0]), drivers=drivers, names=names)), flush=True)
        os._exit(0)
    """,
        names=True,
    )
    assert 0 < info["loss"] < 10
    assert info["drivers"] == ["_dense_kernels.<locals>._steps_ce_sgd_relu_plain"]
    assert "_loss_ce" in info["names"]
    assert not [n for n in info["names"] if "sklearn" in n or "raise_with_shape" in n], info["names"]
    # a network of ReLU layers: the ReLU is fused into the products, no other activation kernel is
    # compiled; nor the other losses, nor Adam's update
    unused = {"_act_fwd", "_act_bwd", "_relu", "_sigmoid", "_tanh", "_leaky", "_sigmoid_bwd", "_tanh_bwd",
              "_leaky_bwd", "_loss", "_loss_mse", "_loss_bce", "_update", "_update_adam"}  # fmt: skip
    assert not unused & set(info["names"]), sorted(unused & set(info["names"]))


def test_first_plan_prediction_compiles_only_the_forward_driver(jit):
    # One child, one prediction of a dense network from an empty cache: the forward driver on the
    # plain products, none of the training driver's parts, and no typed-list operation called from
    # Python (Numba compiles those in every process: its typed-list helpers are not cached).
    info = _cold(
        """
        import json, os
        import numpy as np
        import fastnn
        from fastnn import nn
        fastnn.set_backend("numba")
        from fastnn.backends.numba_backend import _jit
        model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
        X = np.random.default_rng(0).standard_normal((8, 5)).astype(np.float32)
        out = fastnn.predict(model, X, batch_size=4)
        compiled = list(names)
        with fastnn.no_grad():
            same = bool(np.allclose(out, model(X), rtol=1e-5, atol=1e-6))
        print(json.dumps(dict(same=same, names=compiled)), flush=True)
        os._exit(0)
    """,
        names=True,
    )
    assert info["same"]
    assert "_dense_kernels.<locals>._predict_relu_plain" in info["names"]
    training = [n for n in info["names"] if any(k in n for k in ("_steps", "_backward", "_loss", "_update", "_act"))]
    assert training == ["_act_fwd_fused"], training
    assert not {"_getitem", "_length"} & set(info["names"]), info["names"]


def test_deferred_parallel_kernel_compiles_in_the_background_or_at_once(jit):
    info = _cold("""
        import json, os
        import numpy as np
        import fastnn
        from fastnn import ops
        fastnn.set_backend("numba")
        from fastnn.backends.numba_backend import _jit, activations
        x = np.linspace(-4, 4, 1 << 20, dtype=np.float32)     # above PARALLEL_MIN_ELEMENTS: parallel
        serial, parallel = next(p for p in _jit.PAIRS if p[0] is activations._tanh[0])
        first = ops.tanh(x)
        after_first = dict(serial=len(serial.signatures), parallel=len(parallel.signatures),
                           deferred=isinstance(activations._tanh[1], _jit.Deferred))
        second = ops.tanh(x)                      # a repeated call starts the background compilation
        done = _jit.settle(timeout=120)
        third = ops.tanh(x)
        s_ser, s_par = next(p for p in _jit.PAIRS if p[0] is activations._sigmoid[0])
        with _jit.foreground():                   # as fastnn warmup: the parallel kernel at once
            ops.sigmoid(x)
        print(json.dumps(dict(after_first=after_first, done=done, installed=activations._tanh[1] is parallel,
                              same=bool((first == second).all() and (first == third).all()),
                              sigmoid=[len(s_ser.signatures), len(s_par.signatures)])), flush=True)
        os._exit(0)
    """)
    assert info["after_first"] == {"serial": 1, "parallel": 0, "deferred": True}
    assert info["done"] and info["installed"]  # then the parallel kernel took the Deferred's place
    assert info["same"]
    assert info["sigmoid"] == [0, 1]


def test_background_can_be_switched_off(jit):
    info = _cold(
        """
        import json, os
        import numpy as np
        import fastnn
        from fastnn import ops
        fastnn.set_backend("numba")
        from fastnn.backends.numba_backend import _jit, activations
        ops.relu(np.ones(1 << 22, np.float32))   # above PARALLEL_MIN_ELEMENTS_CHEAP
        serial, parallel = next(p for p in _jit.PAIRS if p[0] is activations._relu[0])
        print(json.dumps([len(serial.signatures), len(parallel.signatures)]), flush=True)
        os._exit(0)
    """,
        FASTNN_NUMBA_BACKGROUND="0",
    )
    assert info == [0, 1]


def test_warmup_command_refuses_what_it_cannot_do(capsys):
    from fastnn.cli import main

    assert main(["warmup", "--backend", "numpy"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert main(["warmup", "--dtypes", "float16"]) == 2
    assert "--dtypes takes float32 and/or float64" in capsys.readouterr().err
    assert main(["warmup", "--backend", "nope"]) == 2
