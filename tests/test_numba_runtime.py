"""The Numba backend's runtime: Ctrl-C during training, a cache it cannot write,
Numba settings it cannot run with (reported as the reason it is unavailable).

Ctrl-C: a Numba function that returns an array calls back into Python (to
unpickle the array's type) after its work. A SIGINT handled in that callback
used to surface as ``SystemError: CPUDispatcher(...) returned a result with
an exception set`` -- in about 40 % of interrupts of a small MLP's training.
The backend now serves that callback from a C cache (see
``fastnn/backends/numba_backend/__init__.py``), so the user gets
``KeyboardInterrupt``.
"""

import os
import shutil

import pytest
from conftest import _require_or_skip
from isolated import run_isolated

import fastnn

# The whole module is slow (each case starts a Python process that loads Numba): `-m "not slow"` leaves it out.
pytestmark = pytest.mark.slow


@pytest.fixture
def numba_backend():
    _require_or_skip("numba")


#: 30 interrupts at random moments of fastnn.fit on the numba backend, in one
#: child process: about 3 s here (start-up and a warm-up fit included).
SIGINT_DURING_FIT = """
    import collections, os, random, signal, threading
    import numpy as np
    import fastnn
    from fastnn import nn

    # Python's own Ctrl-C handler, whatever this process inherited: a child of a job started in
    # the background by a shell (`cmd &`) inherits SIGINT ignored, and no KeyboardInterrupt comes.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    fastnn.set_backend("numba")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4096, 32)).astype(np.float32)
    y = rng.integers(0, 10, 4096)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
    fastnn.fit(model, X[:64], y[:64], epochs=1, progress=False)   # compile or load the kernels first
    delays = random.Random(1234)
    outcomes = collections.Counter()
    for _ in range(30):
        timer = threading.Timer(delays.uniform(0.005, 0.05), os.kill, (os.getpid(), signal.SIGINT))
        try:
            timer.start()
            fastnn.fit(model, X, y, epochs=1000, progress=False)   # far longer than any delay
            outcomes["finished"] += 1
        except KeyboardInterrupt:
            outcomes["KeyboardInterrupt"] += 1
        except BaseException as exc:
            outcomes[f"{type(exc).__name__}: {exc}"] += 1
        finally:
            timer.join()
    print("backend", fastnn.get_backend(), "outcomes", dict(outcomes))
    assert outcomes == {"KeyboardInterrupt": 30}, outcomes
"""


def test_ctrl_c_during_fit_is_always_keyboard_interrupt(numba_backend):
    result = run_isolated(SIGINT_DURING_FIT, timeout=240)
    result.assert_ok()
    assert "backend numba outcomes {'KeyboardInterrupt': 30}" in result.stdout


def test_return_path_guard_is_installed_and_results_are_unchanged(numba_backend):
    # What the Ctrl-C fix rests on: Numba's unpickling callback is the C
    # cache (no Python frame for a signal handler to run in) ...
    result = run_isolated("""
        import functools
        import numpy as np
        import fastnn
        from numba import njit
        from numba.core import serialize
        fastnn.set_backend("numba")
        assert isinstance(serialize._numba_unpickle, functools._lru_cache_wrapper)
        assert fastnn.backends.current().info["interrupt_safe_returns"] is True

        @njit
        def scaled(a, s):
            out = np.empty_like(a)
            for i in range(a.size):
                out[i] = a[i] * s
            return out                     # an array return: goes through the callback

        a = np.arange(5.0)
        for s in (2.0, 3.0):
            assert scaled(a, s).tolist() == (a * s).tolist()
        assert serialize._numba_unpickle.cache_info().hits >= 1
        x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
        np.testing.assert_allclose(fastnn.ops.matmul(x, x.T), x @ x.T, rtol=1e-6)
    """)
    result.assert_ok()


def test_guard_stays_out_when_numba_already_used_its_callback(numba_backend):
    # ... and it is not installed when Numba's helper may already hold the
    # original (then info says so instead of claiming safety).
    run_isolated("""
        import numpy as np
        from numba import njit
        from numba.core import serialize

        @njit
        def ident(a):
            return a

        ident(np.zeros(2))
        assert serialize._unpickled_memo
        import fastnn
        fastnn.set_backend("numba")
        assert fastnn.backends.current().info["interrupt_safe_returns"] is False
        assert fastnn.ops.relu(np.array([-1.0, 2.0])).tolist() == [0.0, 2.0]
    """).assert_ok()


def _read_only_install(tmp_path):
    """A copy of the package where no Numba cache location can be written.

    Tests run as any user (root ignores permissions), so the cache
    directories are made impossible rather than read-only: each one is a
    path under a regular file.
    """
    root = tmp_path / "site"
    src = os.path.dirname(fastnn.__file__)
    shutil.copytree(src, root / "fastnn", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "fastnn" / "backends" / "numba_backend" / "__pycache__").write_text("not a directory")
    blocker = tmp_path / "file"
    blocker.write_text("")
    env = {
        "NUMBA_CACHE_DIR": str(blocker / "numba"),
        "XDG_CACHE_HOME": str(blocker / "cache"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    return root, env


def test_unwritable_numba_cache_runs_uncached_with_one_warning(numba_backend, tmp_path):
    root, env = _read_only_install(tmp_path)
    result = run_isolated(
        f"""
        import sys
        sys.path.insert(0, {str(root)!r})   # ahead of the working directory
        import numpy as np
        import fastnn
        assert fastnn.__file__.startswith({str(root)!r}), fastnn.__file__
        status = fastnn.backend_status()
        assert status["numba"] == "available", status
        fastnn.set_backend("numba")
        info = fastnn.backends.current().info
        assert info["cache"].startswith("off (RuntimeError: cannot cache"), info
        assert fastnn.ops.relu(np.array([-1.0, 2.0, np.nan])).tolist()[:2] == [0.0, 2.0]
        x = np.array([[1.0, 2.0, 3.0]], np.float32)
        np.testing.assert_allclose(fastnn.ops.softmax(x), np.exp(x) / np.exp(x).sum(), rtol=1e-6)
    """,
        env=env,
        timeout=300,
    )
    result.assert_ok()
    assert result.stderr.count("Numba cannot write a cache for fastnn's kernels") == 1, result.stderr


def test_cache_stays_on_where_it_can_be_written(numba_backend):
    from numba.core.caching import FunctionCache

    from fastnn.backends.numba_backend import activations

    info = fastnn.backends.get("numba").info
    # what info reports is what the kernels do (the kernels' cache is a FunctionCache subclass)
    assert (info["cache"] == "on") == isinstance(activations._relu[0]._cache, FunctionCache)
    if os.access(os.path.dirname(activations.__file__), os.W_OK):
        assert info["cache"] == "on"


def test_disabled_jit_leaves_numba_out_with_the_reason(numba_backend):
    # Uncompiled, the kernels' math helpers raise NotImplementedError mid-op.
    result = run_isolated(
        """
        import numpy as np
        import fastnn
        status = fastnn.backend_status()
        assert "NUMBA_DISABLE_JIT" in status["numba"], status
        assert fastnn.get_backend() != "numba"
        np.testing.assert_allclose(fastnn.ops.tanh(np.ones(3)), np.tanh(np.ones(3)), rtol=1e-6)
    """,
        env={"NUMBA_DISABLE_JIT": "1"},
    )
    result.assert_ok()


def test_numba_pool_beyond_any_machine_leaves_numba_out_with_the_reason(numba_backend):
    # Numba would start all of them at its first parallel call (the workqueue
    # layer then hangs once the system refuses more threads).
    result = run_isolated(
        """
        import numpy as np
        import fastnn
        status = fastnn.backend_status()
        assert "NUMBA_NUM_THREADS=100000" in status["numba"], status
        assert "numba" not in fastnn.available_backends()
        a = np.ones((512, 512), np.float32)
        for name in fastnn.available_backends():
            with fastnn.use_backend(name):
                assert fastnn.ops.matmul(a, a)[0, 0] == 512.0
    """,
        env={"NUMBA_NUM_THREADS": "100000", "NUMBA_THREADING_LAYER": "workqueue"},
        timeout=120,
    )
    result.assert_ok()
