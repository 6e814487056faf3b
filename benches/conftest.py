"""Shared fixtures of the pytest-benchmark suites.

Run them with::

    pytest benches --benchmark-only --benchmark-group-by=group

Each benchmark sets ``benchmark.group`` to its workload case (``"W1 matmul
n=256"``), so that the table shows every backend, PyTorch and scikit-learn
side by side for the same work. The first call of a step runs before timing
starts: Numba compilation is never part of a benchmark.

Threads: ``FASTNN_NUM_THREADS`` sets fastnn's, BLAS's and PyTorch's count
(default: the usable CPUs).
"""

import fnmatch

import numpy as np
import pytest

import fastnn
from fastnn import _config
from fastnn.backends import backend_status

ALL_BACKENDS = ("numpy", "numba", "cython")


def pytest_collect_file(file_path, parent):
    """Collect ``bench_*.py`` (pytest's default patterns only know ``test_*.py``).

    Skipped when the file is named on the command line or the configuration's
    ``python_files`` already matches it, so that nothing is collected twice.
    """
    if file_path.suffix != ".py" or not file_path.name.startswith("bench_"):
        return None
    if parent.session.isinitpath(file_path):
        return None  # named on the command line: pytest collects it itself
    patterns = parent.config.getini("python_files")
    if any(fnmatch.fnmatch(file_path.name, p) for p in patterns):
        return None
    return pytest.Module.from_parent(parent, path=file_path)


def pytest_report_header(config):
    return [f"fastnn backends: {backend_status()}", f"fastnn threads: {fastnn.get_num_threads()}"]


def _require_or_skip(name):
    status = backend_status()[name]
    if status == "available":
        return
    if name in _config.required_backends():
        pytest.fail(f"backend {name!r} is required (FASTNN_REQUIRE_BACKENDS) but unavailable: {status}")
    pytest.skip(f"backend {name!r} unavailable: {status}")


@pytest.fixture(scope="session", autouse=True)
def bench_threads():
    """One thread count for fastnn, BLAS and (when installed) PyTorch."""
    n = fastnn.get_num_threads()
    fastnn.set_num_threads(n)
    try:
        import torch
    except ImportError:
        pass
    else:
        torch.set_num_threads(n)
    return n


@pytest.fixture(params=ALL_BACKENDS)
def backend(request):
    """Each fastnn backend in turn, selected for the whole benchmark."""
    _require_or_skip(request.param)
    with fastnn.use_backend(request.param):
        yield request.param


@pytest.fixture
def torch():
    """PyTorch, with the benchmark's thread count (skipped when not installed)."""
    return pytest.importorskip("torch", reason="PyTorch is not installed")


@pytest.fixture
def sklearn():
    return pytest.importorskip("sklearn", reason="scikit-learn is not installed")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def run_step():
    """``run_step(benchmark, step, group)``: warm up once (compilation), then benchmark ``step``."""

    def run(benchmark, step, group):
        step()
        benchmark.group = group
        return benchmark(step)

    return run
