"""How the Numba backend compiles (``numba_backend/_jit.py``): one source for the serial and the
parallel kernel, read-only inputs without a second compilation, fast kernels compiled in the
background behind bit-identical fallbacks, and a first training step (per-step loop or compiled
plan) that compiles only what it runs.

Time budget, warm cache: about 5 s. The child processes with an empty Numba cache compile what
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


@pytest.mark.parametrize("name", ["_tanh", "_relu_bwd", "_softmax", "_softmax_bwd"])
def test_serial_and_parallel_compilations_give_the_same_bits(jit, name, rng):
    """The parallel compilation itself (PAIRS holds it, never the fallback a Deferred runs until it is
    compiled): a row sum that the vectoriser may reorder differently in the two broke this on AVX-512."""
    from fastnn.backends.numba_backend import activations

    serial, parallel = next(p for p in jit.PAIRS if p[0] is getattr(activations, name)[0])
    assert parallel.targetoptions["parallel"]
    x = (rng.standard_normal((64, 1001)) * 4).astype(np.float32)
    args = (x, np.tanh(x)) if name.endswith("bwd") else (x,)
    a, b = np.empty_like(x), np.empty_like(x)
    serial(*args, a)
    parallel(*args, b)
    np.testing.assert_array_equal(a, b)


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


def _cold(code, **env):
    """Run ``code`` in a child with an empty Numba cache of its own; it prints one JSON line."""
    import tempfile

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
    info = _cold("""
        import json, os
        import numpy as np
        from numba.core import event
        import fastnn
        from fastnn import compiled, nn, optim
        fastnn.set_backend("numba")
        from fastnn.backends.numba_backend import _jit, train
        names = []
        class Names(event.Listener):
            def on_start(self, ev):
                pass
            def on_end(self, ev):
                names.append(ev.data["dispatcher"].py_func.__qualname__)
        event.register("numba:compile", Names())
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
    """)
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
    info = _cold("""
        import json, os
        import numpy as np
        from numba.core import event
        import fastnn
        from fastnn import nn
        fastnn.set_backend("numba")
        from fastnn.backends.numba_backend import _jit
        names = []
        class Names(event.Listener):
            def on_start(self, ev):
                pass
            def on_end(self, ev):
                names.append(ev.data["dispatcher"].py_func.__qualname__)
        event.register("numba:compile", Names())
        model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
        X = np.random.default_rng(0).standard_normal((8, 5)).astype(np.float32)
        out = fastnn.predict(model, X, batch_size=4)
        compiled = list(names)
        with fastnn.no_grad():
            same = bool(np.allclose(out, model(X), rtol=1e-5, atol=1e-6))
        print(json.dumps(dict(same=same, names=compiled)), flush=True)
        os._exit(0)
    """)
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
