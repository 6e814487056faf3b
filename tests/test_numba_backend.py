"""Numba-specific behaviour: on-disk cache, complete overrides, the vectorised math."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastnn
from fastnn import ops
from fastnn.backends import backend_status, get
from fastnn.backends.reference import activations as ref_act
from fastnn.backends.reference import dense as ref_dense
from fastnn.backends.reference import losses as ref_losses
from fastnn.backends.reference import optim as ref_optim

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def numba_backend():
    status = backend_status()["numba"]
    if status != "available":
        if "numba" in fastnn._config.required_backends():
            pytest.fail(f"numba backend required but unavailable: {status}")
        pytest.skip(f"numba backend unavailable: {status}")
    return get("numba")


# A fresh interpreter calls three kernels (one per module, both dtypes) and
# reports, per entry point, how often Numba loaded machine code from its
# cache and how often it had to compile.
_CACHE_PROBE = """
import json, numpy as np, fastnn
fastnn.set_backend("numba")
from fastnn.backends.numba_backend import activations, losses, optim
for dt in (np.float32, np.float64):
    x = np.linspace(-3, 3, 12, dtype=dt).reshape(3, 4)
    fastnn.ops.tanh(x)
    fastnn.ops.softmax_cross_entropy(x, np.array([0, 1, 3]))
    fastnn.ops.adam_update(x.copy(), x, np.zeros_like(x), np.zeros_like(x), 1)
stats = {}
# the serial compilations ([0]); these small calls never use the parallel ones
for name, disp in [("tanh", activations._tanh[0]), ("ce", losses._softmax_ce[0]), ("adam", optim._adam[0])]:
    stats[name] = dict(hits=sum(disp.stats.cache_hits.values()), misses=sum(disp.stats.cache_misses.values()),
                       signatures=len(disp.signatures))
print(json.dumps(stats))
"""


def _probe():
    env = dict(os.environ)
    env.pop("NUMBA_DISABLE_JIT", None)
    out = subprocess.run(
        [sys.executable, "-c", _CACHE_PROBE], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_second_process_loads_kernels_from_disk_cache(numba_backend):
    _probe()  # populate the cache if this is the first run after an edit
    stats = _probe()
    for name, s in stats.items():
        assert s["signatures"] == 2, (name, s)  # float32 and float64 were both used
        assert s["misses"] == 0, f"{name} was recompiled in a fresh process: {s}"
        assert s["hits"] == 2, f"{name} was not loaded from the cache: {s}"


def test_every_reference_kernel_is_overridden(numba_backend):
    names = set(ref_act.__all__) | set(ref_dense.__all__) | set(ref_losses.__all__) | set(ref_optim.__all__)
    missing = names - numba_backend.overrides
    assert not missing, f"numba falls back to the reference for {sorted(missing)}"
    reference = get("numpy")
    for name in names:
        assert numba_backend.kernels[name] is not reference.kernels[name]
        assert numba_backend.kernels[name].__module__.startswith("fastnn.backends.numba_backend")


def test_loading_the_backend_compiles_nothing(numba_backend):
    # Every compiled function is lazy (no eager signatures, nothing compiled
    # at import) and has an on-disk cache.
    code = (
        "import json, fastnn\n"
        "from fastnn.backends import get\n"
        "get('numba')\n"
        "from fastnn.backends.numba_backend import _jit, _math, activations, dense, losses, optim\n"
        "disp = [o for m in (_math, activations, dense, losses, optim) for o in vars(m).values()\n"
        "        if hasattr(o, 'py_func') and hasattr(o, 'signatures')] + _jit.KERNELS\n"
        "print(json.dumps(dict(n=len(disp), compiled=sum(len(d.signatures) for d in disp),\n"
        "                      uncached=[d.py_func.__name__ for d in disp\n"
        "                                if type(d._cache).__name__ == 'NullCache'])))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["n"] > 100  # every kernel of every module, serial and parallel
    assert info["compiled"] == 0
    assert info["uncached"] == []


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_special_values(numba_backend, dtype):
    x = np.array([-np.inf, -1e4, -100.0, -1e-30, -0.0, 0.0, 1e-30, 100.0, 1e4, np.inf, np.nan], dtype)
    with fastnn.use_backend("numba"), np.errstate(all="raise"):
        s = ops.sigmoid(x)
        t = ops.tanh(x)
    np.testing.assert_array_equal(s[[0, 1, 8, 9]], [0.0, 0.0, 1.0, 1.0])
    np.testing.assert_array_equal(s[[4, 5]], [0.5, 0.5])
    assert 0 < s[2] < 1e-30 or (dtype == np.float32 and s[2] == 0)
    np.testing.assert_array_equal(t[[0, 1, 2, 7, 8, 9]], [-1, -1, -1, 1, 1, 1])
    np.testing.assert_array_equal(t[[3, 6]], np.array([-1e-30, 1e-30], dtype))  # tanh(x) = x, no cancellation
    assert np.isnan(s[-1]) and np.isnan(t[-1])


def test_float64_tanh_and_sigmoid_are_exact_to_rounding(numba_backend, rng):
    # The float64 polynomials are meant to be as good as libm, not just within tolerance.
    x = np.concatenate(
        [rng.standard_normal(100_000) * 5, np.geomspace(1e-8, 1.0, 2000), -np.geomspace(1e-8, 1.0, 2000)]
    )
    with fastnn.use_backend("numba"):
        t = ops.tanh(x)
        s = ops.sigmoid(x)
    np.testing.assert_allclose(t, np.tanh(x), rtol=1e-14, atol=0)
    np.testing.assert_allclose(s, 1 / (1 + np.exp(-x)), rtol=1e-14, atol=0)


def test_float32_polynomials_relative_error(numba_backend):
    x = np.linspace(-20, 20, 400_001).astype(np.float32)
    x64 = x.astype(np.float64)
    with fastnn.use_backend("numba"):
        t = ops.tanh(x).astype(np.float64)
        s = ops.sigmoid(x).astype(np.float64)
        p = ops.softmax(x.reshape(1, -1)[:, ::1000].copy()).astype(np.float64)
    assert np.max(np.abs(t - np.tanh(x64)) / np.maximum(np.abs(np.tanh(x64)), 1e-30)) < 1e-6
    want = 1 / (1 + np.exp(-x64))
    assert np.max(np.abs(s - want) / want) < 1e-6
    z = x64[::1000]
    want_p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    np.testing.assert_allclose(p[0], want_p, rtol=1e-5, atol=1e-30)  # z - max rounds in float32


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh", "leaky_relu"])
def test_parallel_and_serial_paths_agree(numba_backend, name, rng):
    from fastnn._config import PARALLEL_MIN_ELEMENTS, PARALLEL_MIN_ELEMENTS_CHEAP

    n = max(PARALLEL_MIN_ELEMENTS * 3, PARALLEL_MIN_ELEMENTS_CHEAP) + 17  # parallel for every kernel
    x = (rng.standard_normal(n) * 6).astype(np.float32)
    with fastnn.use_backend("numba"):
        big = getattr(ops, name)(x)
        chunks = np.concatenate([getattr(ops, name)(c) for c in np.array_split(x, 8)])
    np.testing.assert_array_equal(big, chunks)


def test_threads_setting_is_used_by_parallel_kernels(numba_backend):
    import numba

    old = fastnn.get_num_threads()
    try:
        fastnn.set_num_threads(1)
        assert numba.get_num_threads() == 1
        x = np.linspace(-5, 5, 200_000, dtype=np.float32)
        with fastnn.use_backend("numba"):
            one = ops.tanh(x)
        fastnn.set_num_threads(old)
        assert numba.get_num_threads() == min(old, numba.config.NUMBA_NUM_THREADS)
        with fastnn.use_backend("numba"):
            np.testing.assert_array_equal(ops.tanh(x), one)
    finally:
        fastnn.set_num_threads(old)
