"""The backend registry, the import contract and the signature contract."""

import inspect
import os
import subprocess
import sys

import pytest

import fastnn
from fastnn import _config
from fastnn.backends import backend_status, get, kernel_signatures


def test_required_backends_are_available():
    status = backend_status()
    missing = {n: status[n] for n in _config.required_backends() if status.get(n) != "available"}
    assert not missing, f"required backends missing: {missing}"


def test_numpy_backend_always_available():
    assert "numpy" in fastnn.available_backends()
    assert backend_status()["numpy"] == "available"


def test_every_unavailable_backend_has_a_reason():
    for status in backend_status().values():
        assert status == "available" or len(status) > 5


@pytest.mark.parametrize("name", ["numba", "cython"])
def test_compiled_signatures_match_reference(name):
    if backend_status()[name] != "available":
        pytest.skip(f"{name} unavailable: {backend_status()[name]}")
    ref = get("numpy")
    sigs = kernel_signatures(name)
    assert sigs, f"backend {name} overrides no kernel"
    for kernel, sig in sigs.items():
        ref_sig = inspect.signature(ref.kernels[kernel])
        # Names, kinds (positional / keyword-only) and defaults: a caller written
        # against the reference must behave the same on every backend.
        got = [(p.name, p.kind, p.default) for p in sig.parameters.values()]
        want = [(p.name, p.kind, p.default) for p in ref_sig.parameters.values()]
        assert got == want, f"{name}.{kernel}{sig} differs from the reference's {kernel}{ref_sig}"


@pytest.mark.parametrize("name", ["numba", "cython"])
def test_compiled_backend_overrides_the_hot_kernels(name):
    if backend_status()[name] != "available":
        pytest.skip(f"{name} unavailable")
    hot = {
        "matmul",
        "dense_forward",
        "dense_backward",
        "relu",
        "relu_backward",
        "sigmoid",
        "sigmoid_backward",
        "tanh",
        "tanh_backward",
        "softmax",
        "softmax_cross_entropy",
        "mse_loss",
        "sgd_update",
        "adam_update",
    }
    missing = hot - get(name).overrides
    assert not missing, f"{name} falls back to the reference for {sorted(missing)}"


def test_set_and_use_backend_switch_and_restore():
    before = fastnn.get_backend()
    with fastnn.use_backend("numpy"):
        assert fastnn.get_backend() == "numpy"
    assert fastnn.get_backend() == before


def test_use_backend_restores_after_exception():
    before = fastnn.get_backend()
    with pytest.raises(RuntimeError):
        with fastnn.use_backend("numpy"):
            raise RuntimeError("boom")
    assert fastnn.get_backend() == before


def test_unknown_backend_is_a_value_error():
    with pytest.raises(ValueError, match="unknown backend"):
        fastnn.set_backend("tensorflow")


def test_auto_picks_fastest_available():
    with fastnn.use_backend("auto"):
        assert fastnn.get_backend() == fastnn.available_backends()[0]


def _run(code, env_extra=None):
    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_import_is_cheap_and_does_not_import_numba():
    code = (
        "import sys, time; t = time.perf_counter(); import fastnn; dt = time.perf_counter() - t; "
        "print(dt, 'numba' in sys.modules, any(m.startswith('fastnn._ext') for m in sys.modules))"
    )
    out = _run(code)
    assert out.returncode == 0, out.stderr
    dt, numba_loaded, ext_loaded = out.stdout.split()
    assert numba_loaded == "False" and ext_loaded == "False"
    assert float(dt) < 2.0  # the 0.3 s target is measured in the benchmarks; this catches gross regressions


def test_env_variable_selects_backend():
    out = _run("import fastnn; print(fastnn.get_backend())", {"FASTNN_BACKEND": "numpy"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "numpy"


def test_missing_backend_does_not_break_import():
    # Simulate a machine without numba: a meta-path hook that refuses to import it.
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'numba' or name.startswith('numba.'):\n"
        "            raise ImportError('numba is not installed (simulated)')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import fastnn\n"
        "status = fastnn.backend_status()\n"
        "assert 'numba' not in fastnn.available_backends(), status\n"
        "assert 'simulated' in status['numba'], status\n"
        "import numpy as np\n"
        "with fastnn.use_backend('auto'):\n"
        "    print(fastnn.get_backend(), fastnn.ops.relu(np.array([-1.0, 1.0])))\n"
    )
    out = _run(code)
    assert out.returncode == 0, out.stderr


def test_requesting_missing_backend_raises_with_reason():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'numba':\n"
        "            raise ImportError('no numba here')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import fastnn\n"
        "try:\n"
        "    fastnn.set_backend('numba')\n"
        "except fastnn.BackendUnavailable as e:\n"
        "    print('raised', e)\n"
    )
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert "raised" in out.stdout and "no numba here" in out.stdout


def test_thread_setting_round_trip():
    old = fastnn.get_num_threads()
    try:
        fastnn.set_num_threads(1)
        assert fastnn.get_num_threads() == 1
        with pytest.raises(ValueError):
            fastnn.set_num_threads(0)
        with pytest.raises(TypeError):
            fastnn.set_num_threads(1.5)
    finally:
        fastnn.set_num_threads(old)


@pytest.mark.parametrize("module", ["fastnn.backends.numba_backend._gemm", "fastnn.backends.cython_backend._gemm"])
def test_thread_setting_reaches_a_blas_loaded_later(module):
    # A kernel module imported directly (as the GEMM benchmark does) loads
    # SciPy's OpenBLAS after set_num_threads ran; it must get the count too.
    pytest.importorskip("threadpoolctl")
    name = module.split(".")[2].split("_")[0]
    if backend_status()[name] != "available":
        pytest.skip(f"{name} backend unavailable: {backend_status()[name]}")
    code = (
        "import fastnn; fastnn.set_num_threads(1); import " + module + "; import threadpoolctl; "
        "print(sorted(p['num_threads'] for p in threadpoolctl.threadpool_info() if p['user_api'] == 'blas'))"
    )
    out = _run(code)
    assert out.returncode == 0, out.stderr
    counts = eval(out.stdout.strip().splitlines()[-1])
    assert counts and set(counts) == {1}, counts


def test_thread_setting_reaches_blas_and_numba():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    old = fastnn.get_num_threads()
    try:
        fastnn.set_num_threads(1)
        blas = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
        assert all(p["num_threads"] == 1 for p in blas)
        if backend_status()["numba"] == "available":
            import numba

            get("numba")
            assert numba.get_num_threads() == 1
    finally:
        fastnn.set_num_threads(old)
