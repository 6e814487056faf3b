"""Shared fixtures: every kernel test runs over every backend and both dtypes.

``FASTNN_REQUIRE_BACKENDS=numpy,numba,cython`` (set by CI) turns a backend
that cannot load into a failing test instead of a skip, so a green CI run
proves that all three backends ran.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

# The suite compares runs bit for bit (checkpoints that resume, plans against loops), and the
# machine running it is shared: a team that shrank while another process ran could round a
# product differently between the two runs. Adaptive threads are tested on their own, with a
# fake meter, in test_contention.py (child processes that turn them on).
os.environ.setdefault("FASTNN_ADAPTIVE_THREADS", "0")
# Likewise, routes must not depend on a GEMM calibration someone ran on this machine
# (`fastnn calibrate`): test_gemm_calibration.py turns it on where it tests it.
os.environ.setdefault("FASTNN_GEMM_CALIBRATION", "off")

import fastnn
from fastnn import _config
from fastnn.backends import backend_status

ALL_BACKENDS = ("numpy", "numba", "cython")
COMPILED_BACKENDS = ("numba", "cython")
DTYPES = (np.float32, np.float64)

#: Per-dtype tolerances for comparing a backend with the reference.
TOLERANCES = {
    np.dtype(np.float32): dict(rtol=2e-5, atol=2e-6),
    np.dtype(np.float64): dict(rtol=1e-12, atol=1e-13),
}


def tol(dtype, scale=1.0):
    """Tolerances for ``dtype``, optionally widened by ``scale`` (long reductions)."""
    t = TOLERANCES[np.dtype(dtype)]
    return dict(rtol=t["rtol"] * scale, atol=t["atol"] * scale)


def _require_or_skip(name):
    status = backend_status()[name]
    if status == "available":
        return
    if name in _config.required_backends():
        pytest.fail(f"backend {name!r} is required (FASTNN_REQUIRE_BACKENDS) but unavailable: {status}")
    pytest.skip(f"backend {name!r} unavailable: {status}")


def run_python(code, **options):
    """Run ``python -c code`` in a fresh interpreter, output captured as text; ``options`` go to ``subprocess.run``."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, **options)


def cython_kernels():
    """The Cython backend's extension module (a skip, or a failure where it is required, without it)."""
    _require_or_skip("cython")
    from fastnn._ext import _kernels

    return _kernels


def pytest_report_header(config):
    return [
        f"fastnn backends: {backend_status()}",
        f"fastnn threads: {fastnn.get_num_threads()}; required: {_config.required_backends() or 'none'}",
    ]


@pytest.fixture(params=ALL_BACKENDS)
def backend(request):
    """Run the test with each backend selected (skipped/failed if unavailable)."""
    _require_or_skip(request.param)
    with fastnn.use_backend(request.param):
        yield request.param


@pytest.fixture(params=COMPILED_BACKENDS)
def compiled_backend(request):
    _require_or_skip(request.param)
    with fastnn.use_backend(request.param):
        yield request.param


@pytest.fixture(params=DTYPES, ids=["float32", "float64"])
def dtype(request):
    return np.dtype(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def reference(fn_name, *args, **kwargs):
    """Run public op ``fn_name`` with the NumPy reference backend."""
    with fastnn.use_backend("numpy"):
        return getattr(fastnn.ops, fn_name)(*args, **kwargs)
