"""Thread counts: nonsense is refused, large requests are capped, no setting crashes a kernel.

Every case that used to crash (a huge count reaching an OpenMP region, a
count overflowing the extension's C int at backend load) runs in a child
process and ends with large parallel ops in every backend: a 512x512 matmul,
a convolution and activations over 4M elements, results checked.
"""

import json
import textwrap
import warnings

import numpy as np
import pytest
from isolated import run_isolated

import fastnn
from fastnn import _config

# The whole module is slow (subprocesses per thread-count setting): `-m "not slow"` leaves it out.
pytestmark = pytest.mark.slow

#: Runs large ops in every available backend and checks their results.
BIG_OPS = """
import numpy as np
import fastnn

def big_ops(names=("numpy", "numba", "cython")):
    status = fastnn.backend_status()
    ran = []
    for name in names:
        if status[name] != "available":
            continue
        with fastnn.use_backend(name):
            a = np.ones((512, 512), np.float32)
            assert fastnn.ops.matmul(a, a)[0, 0] == 512.0
            x = np.full(1 << 22, -0.5, np.float32)
            x[::2] = 2.0
            r = fastnn.ops.relu(x)
            assert (r[::2] == 2.0).all() and (r[1::2] == 0.0).all()
            t = fastnn.ops.tanh(x)
            np.testing.assert_allclose(t[:2], np.tanh([2.0, -0.5]), rtol=1e-6)
            xc = np.ones((8, 16, 32, 32), np.float32)
            y = fastnn.ops.conv2d_forward(xc, np.ones((16, 16, 3, 3), np.float32), padding=1)
            assert y[0, 0, 5, 5] == 144.0 and y[7, 15, 0, 0] == 64.0
        ran.append(name)
    print("ran", ",".join(ran), "threads", fastnn.get_num_threads())
    return ran
"""


def _child(body, **kwargs):
    return run_isolated(BIG_OPS + textwrap.dedent(body), timeout=300, **kwargs)


# ------------------------------------------------------------ in-process validation


@pytest.fixture
def restore_threads():
    before = fastnn.get_num_threads()
    yield
    fastnn.set_num_threads(before)


@pytest.mark.parametrize("bad", [1.5, 4.0, "4", "abc", None, True, False, [2], np.float64(2)])
def test_set_num_threads_rejects_non_integers(bad, restore_threads):
    before = fastnn.get_num_threads()
    with pytest.raises(TypeError, match="must be an integer"):
        fastnn.set_num_threads(bad)
    assert fastnn.get_num_threads() == before


@pytest.mark.parametrize("bad", [0, -1, -(2**40), _config.MAX_THREADS_REQUEST + 1, 100_000, 2**31, 2**64])
def test_set_num_threads_rejects_out_of_range(bad, restore_threads):
    before = fastnn.get_num_threads()
    with pytest.raises(ValueError, match=str(bad)):
        fastnn.set_num_threads(bad)
    assert fastnn.get_num_threads() == before


def test_set_num_threads_accepts_numpy_integers(restore_threads):
    fastnn.set_num_threads(np.int64(1))
    assert fastnn.get_num_threads() == 1
    assert type(fastnn.get_num_threads()) is int


def test_cap_is_four_per_cpu():
    import os

    assert _config.max_num_threads() == 4 * max(os.cpu_count(), len(os.sched_getaffinity(0)))
    assert _config.max_num_threads() <= _config.MAX_THREADS_REQUEST


def test_count_at_the_cap_is_taken_without_warning(restore_threads):
    cap = _config.max_num_threads()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastnn.set_num_threads(cap)
    assert fastnn.get_num_threads() == cap


@pytest.mark.parametrize(
    "value, message",
    [
        ("abc", "not a whole number"),
        ("0", "not a whole number"),
        ("-4", "not a whole number"),
        ("1.5", "not a whole number"),
        ("true", "not a whole number"),
        ("2147483648", "not a whole number"),
        ("100000", "not a whole number"),
    ],
)
def test_bad_env_count_warns_and_uses_the_default(monkeypatch, value, message):
    monkeypatch.setenv("FASTNN_NUM_THREADS", value)
    with pytest.warns(RuntimeWarning, match=message) as record:
        n = _config._default_num_threads()
    assert n == _config._cpus()[0]
    assert repr(value) in str(record[0].message)


def test_env_count_above_the_cap_is_lowered_with_a_warning(monkeypatch):
    cap = _config.max_num_threads()
    monkeypatch.setenv("FASTNN_NUM_THREADS", str(cap + 1))
    with pytest.warns(RuntimeWarning, match=rf"asks for {cap + 1} threads.*uses {cap}"):
        assert _config._default_num_threads() == cap


@pytest.mark.parametrize("value", ["", "  ", "1", " 2 "])
def test_good_env_count_is_silent(monkeypatch, value):
    monkeypatch.setenv("FASTNN_NUM_THREADS", value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        n = _config._default_num_threads()
    assert n == (int(value) if value.strip() else _config._cpus()[0])


# ------------------------------------------------------------ hostile cases, in a child


def test_huge_set_num_threads_is_refused_or_capped_and_every_backend_still_runs():
    result = _child(f"""
        import warnings
        from fastnn import _config
        cap = _config.max_num_threads()
        for bad in (100000, 50000, 2 ** 31, _config.MAX_THREADS_REQUEST + 1):
            try:
                fastnn.set_num_threads(bad)
            except ValueError as exc:
                assert str(bad) in str(exc), exc
            else:
                raise AssertionError(f"set_num_threads({{bad}}) was accepted")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fastnn.set_num_threads(cap + 3)
        [w] = caught
        assert issubclass(w.category, RuntimeWarning)
        assert f"asks for {{cap + 3}} threads" in str(w.message) and f"uses {{cap}}" in str(w.message), w.message
        assert fastnn.get_num_threads() == cap
        assert len(big_ops()) == {len(fastnn.available_backends())}
    """)
    result.assert_ok()
    assert f"threads {_config.max_num_threads()}" in result.stdout


@pytest.mark.parametrize("value", ["2147483648", "100000", "50000", "abc", "0"])
def test_bad_env_count_keeps_every_backend_available(value):
    result = _child(
        f"""
        status = fastnn.backend_status()
        assert fastnn.get_num_threads() == {_config._cpus()[0]}
        assert big_ops() == [n for n in ("numpy", "numba", "cython") if status[n] == "available"]
        import json
        print("STATUS " + json.dumps(status))
    """,
        env={"FASTNN_NUM_THREADS": value},
    )
    result.assert_ok()
    assert f"FASTNN_NUM_THREADS='{value}' is not a whole number" in result.stderr
    # The variable must not cost a backend (2**31 used to lose the cython one).
    [line] = [ln for ln in result.stdout.splitlines() if ln.startswith("STATUS ")]
    assert json.loads(line[len("STATUS ") :]) == fastnn.backend_status()


def test_env_count_above_the_cap_is_used_capped():
    cap = _config.max_num_threads()
    result = _child(
        f"""
        assert fastnn.get_num_threads() == {cap}
        big_ops()
    """,
        env={"FASTNN_NUM_THREADS": str(cap * 10)},
    )
    result.assert_ok()
    assert f"FASTNN_NUM_THREADS={cap * 10} asks for {cap * 10} threads" in result.stderr


def test_compiled_modules_refuse_a_huge_count_themselves():
    # A direct call past fastnn.set_num_threads must not reach an OpenMP region.
    if fastnn.backend_status()["cython"] != "available":
        pytest.skip("cython backend unavailable")
    result = _child("""
        import importlib
        fastnn.set_backend("cython")
        dense = importlib.import_module("fastnn._ext._kernels")
        for bad in (100000, 0, -1):
            try:
                dense._set_num_threads(bad)
            except ValueError as exc:
                assert "between 1 and 32768" in str(exc), exc
            else:
                raise AssertionError(bad)
        try:
            dense._set_num_threads(2 ** 31)
        except OverflowError:
            pass
        else:
            raise AssertionError("2**31 accepted")
        assert big_ops(["cython"]) == ["cython"]
    """)
    result.assert_ok()


@pytest.mark.parametrize(
    "env",
    [
        {"OMP_NUM_THREADS": "1"},
        {"OMP_NUM_THREADS": "abc"},
        {"OMP_NUM_THREADS": "100000"},
        {"NUMBA_NUM_THREADS": "1"},
    ],
    ids=lambda e: "-".join(f"{k}={v}" for k, v in e.items()),
)
def test_runtime_variables_below_or_beside_fastnn_count_are_harmless(env):
    result = _child(
        """
        fastnn.set_num_threads(2)
        assert fastnn.get_num_threads() == 2
        ran = big_ops()
        if "numba" in ran:
            import numba
            assert numba.get_num_threads() == min(2, numba.config.NUMBA_NUM_THREADS)
    """,
        env=env,
    )
    result.assert_ok()
    assert "ran numpy" in result.stdout


def test_set_num_threads_racing_from_several_threads_while_kernels_run():
    result = _child("""
        import threading
        cap = fastnn._config.max_num_threads()
        stop = threading.Event()
        errors = []

        def setter(seed):
            rng = np.random.default_rng(seed)
            while not stop.is_set():
                fastnn.set_num_threads(int(rng.integers(1, cap + 1)))

        def worker(name):
            try:
                for _ in range(5):
                    big_ops([name])
            except BaseException as exc:
                errors.append((name, repr(exc)))

        names = [n for n in ("numpy", "numba", "cython") if fastnn.backend_status()[n] == "available"]
        setters = [threading.Thread(target=setter, args=(s,)) for s in range(2)]
        workers = [threading.Thread(target=worker, args=(n,)) for n in names]
        for t in setters + workers:
            t.start()
        for t in workers:
            t.join()
        stop.set()
        for t in setters:
            t.join()
        assert not errors, errors
        assert 1 <= fastnn.get_num_threads() <= cap
        print("workers", len(workers))
    """)
    result.assert_ok()
    assert f"workers {len(fastnn.available_backends())}" in result.stdout
