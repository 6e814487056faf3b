"""``use_backend`` is per thread / per context; ``set_backend`` sets the process default.

The rule: a ``use_backend`` block overrides the backend in its own context
(thread, or asyncio task) until it exits; everything else -- other threads,
threads started later -- runs the process default, which ``set_backend`` (or
``FASTNN_BACKEND``) sets. Tests that change the process default run in a
child process.
"""

import asyncio
import threading

import numpy as np
import pytest
from conftest import COMPILED_BACKENDS, _require_or_skip
from isolated import run_isolated

import fastnn
from fastnn.backends import get


@pytest.fixture
def kernel_log(monkeypatch):
    """Record (backend, thread name) for every relu/matmul/softmax kernel that runs."""
    log = []
    lock = threading.Lock()
    for name in fastnn.available_backends():
        backend = get(name)
        for kernel in ("relu", "matmul", "softmax"):
            original = getattr(backend, kernel)

            def recorder(*args, _orig=original, _name=name, **kwargs):
                with lock:
                    log.append((_name, threading.current_thread().name))
                return _orig(*args, **kwargs)

            monkeypatch.setattr(backend, kernel, recorder)
    return log


def _work(expected, rounds, barrier, seen):
    """Many ops inside use_backend(expected), checking the selection every time."""
    rng = np.random.default_rng(len(expected))
    x = rng.standard_normal((64, 48)).astype(np.float32)
    w = rng.standard_normal((48, 32)).astype(np.float32)
    with fastnn.use_backend(expected) as backend:
        assert backend.name == expected
        barrier.wait()  # both threads are inside their blocks from here on
        for _ in range(rounds):
            seen.append(fastnn.get_backend())
            y = fastnn.ops.relu(fastnn.ops.matmul(x, w))
            np.testing.assert_allclose(y, np.maximum(x @ w, 0), rtol=1e-4, atol=1e-4)
            p = fastnn.ops.softmax(y)
            np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
        barrier.wait()  # ... and stay there until both are done
    seen.append(fastnn.get_backend())


@pytest.mark.parametrize("other", COMPILED_BACKENDS)
def test_two_threads_run_two_backends_at_once(other, kernel_log):
    _require_or_skip(other)
    rounds = 200
    default = fastnn.get_backend()
    barrier = threading.Barrier(2, timeout=60)
    seen = {"numpy": [], other: []}
    errors = []

    def run(name):
        try:
            _work(name, rounds, barrier, seen[name])
        except BaseException as exc:  # reported below, with the thread's name
            errors.append((name, exc))
            barrier.abort()

    threads = [threading.Thread(target=run, args=(n,), name=f"t-{n}") for n in ("numpy", other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for name in ("numpy", other):
        # get_backend() saw the block's backend every time, and the default after it
        assert seen[name] == [name] * rounds + [default]
        # and the kernels that ran in that thread were that backend's, every one of them
        ran = [b for b, t in kernel_log if t == f"t-{name}"]
        assert len(ran) == 3 * rounds
        assert set(ran) == {name}
    assert fastnn.get_backend() == default


def test_a_thread_started_inside_a_block_runs_the_process_default():
    default = fastnn.get_backend()
    other = "numpy" if default != "numpy" else fastnn.available_backends()[0]
    if other == default:
        pytest.skip("only one backend available")
    seen = []
    with fastnn.use_backend(other):
        t = threading.Thread(target=lambda: seen.append(fastnn.get_backend()))
        t.start()
        t.join()
        assert fastnn.get_backend() == other
    assert seen == [default]


def test_blocks_nest_and_restore_in_order():
    default = fastnn.get_backend()
    names = fastnn.available_backends()
    with fastnn.use_backend("numpy"):
        assert fastnn.get_backend() == "numpy"
        for name in names:
            with fastnn.use_backend(name):
                assert fastnn.get_backend() == name
                with fastnn.use_backend("numpy"):
                    assert fastnn.get_backend() == "numpy"
                assert fastnn.get_backend() == name
            assert fastnn.get_backend() == "numpy"
    assert fastnn.get_backend() == default


def test_exception_inside_nested_blocks_restores_every_level():
    default = fastnn.get_backend()
    inner = fastnn.available_backends()[0]
    with pytest.raises(KeyError, match="boom"):
        with fastnn.use_backend("numpy"):
            try:
                with fastnn.use_backend(inner):
                    raise KeyError("boom")
            finally:
                assert fastnn.get_backend() == "numpy"
    assert fastnn.get_backend() == default


@pytest.mark.parametrize("bad, exc", [("tensorflow", ValueError), (None, TypeError), (3, TypeError)])
def test_bad_name_raises_before_the_block_and_changes_nothing(bad, exc):
    default = fastnn.get_backend()
    ran = []
    with pytest.raises(exc):
        with fastnn.use_backend(bad):
            ran.append(1)
    assert ran == [] and fastnn.get_backend() == default


def test_asyncio_tasks_keep_their_own_backend():
    names = fastnn.available_backends()
    if len(names) < 2:
        pytest.skip("only one backend available")

    async def task(name, log):
        with fastnn.use_backend(name):
            for _ in range(20):
                await asyncio.sleep(0)  # the other task runs in between
                log.append(fastnn.get_backend())
                fastnn.ops.relu(np.ones(4))

    async def main():
        logs = {name: [] for name in names[:2]}
        await asyncio.gather(*(task(name, log) for name, log in logs.items()))
        return logs

    for name, log in asyncio.run(main()).items():
        assert log == [name] * 20


def test_set_backend_sets_the_default_for_every_thread_and_a_block_keeps_its_own():
    # Changes the process default: in a child.
    run_isolated("""
        import threading
        import fastnn
        fastnn.set_backend("numpy")
        names = fastnn.available_backends()
        other = names[0]
        assert other != "numpy", names

        def in_thread():
            out = []
            t = threading.Thread(target=lambda: out.append(fastnn.get_backend()))
            t.start(); t.join()
            return out[0]

        with fastnn.use_backend(other):
            fastnn.set_backend("numpy")
            assert fastnn.get_backend() == other          # the block keeps its backend
        assert fastnn.get_backend() == "numpy"

        # set_backend in one thread is the default of all of them, started before or after
        ready, go = threading.Event(), threading.Event()
        out = []
        def waiter():
            ready.set(); go.wait(); out.append(fastnn.get_backend())
        t = threading.Thread(target=waiter); t.start(); ready.wait()
        setter = threading.Thread(target=fastnn.set_backend, args=(other,)); setter.start(); setter.join()
        go.set(); t.join()
        assert out == [other] and fastnn.get_backend() == other and in_thread() == other

        # ... but not inside another thread's block
        inside, release, seen = threading.Event(), threading.Event(), []
        def blocked():
            with fastnn.use_backend("numpy"):
                inside.set(); release.wait(); seen.append(fastnn.get_backend())
        t = threading.Thread(target=blocked); t.start(); inside.wait()
        fastnn.set_backend(other)
        release.set(); t.join()
        assert seen == ["numpy"]
    """).assert_ok()


def test_bogus_env_backend_is_a_clear_error_and_info_reports_it():
    result = run_isolated(
        """
        import numpy as np
        import fastnn
        from fastnn.cli import main
        assert main(["info"]) == 0
        try:
            fastnn.ops.relu(np.ones(3))
        except ValueError as exc:
            assert "FASTNN_BACKEND='bogus'" in str(exc) and "unknown backend" in str(exc), exc
        else:
            raise AssertionError("a bogus FASTNN_BACKEND ran a kernel")
        with fastnn.use_backend("numpy"):
            assert fastnn.ops.relu(np.array([-1.0, 2.0])).tolist() == [0.0, 2.0]
        fastnn.set_backend("numpy")
        assert fastnn.get_backend() == "numpy"
    """,
        env={"FASTNN_BACKEND": "bogus"},
    )
    result.assert_ok()
    assert "default backend: none (FASTNN_BACKEND='bogus': unknown backend 'bogus'" in result.stdout
    assert "numpy   available" in result.stdout


def test_unavailable_env_backend_names_the_variable():
    result = run_isolated(
        """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "numba":
                    raise ImportError("no numba here")
        sys.meta_path.insert(0, Block())
        import fastnn
        fastnn.get_backend()
    """,
        env={"FASTNN_BACKEND": "numba"},
    )
    result.assert_raised(fastnn.BackendUnavailable)
    assert "FASTNN_BACKEND='numba'" in result.stderr and "no numba here" in result.stderr
