"""Adaptive threads (``fastnn/_contention.py``): the team of fastnn's loops shrinks while other
programs keep the cores busy, and comes back when they stop.

Nothing here times anything: the decision is a pure function of the counts it samples, the
counts are parsed from files the tests write, and the watcher runs in child processes with a
fake sampler, checked by the thread counts it sets (fastnn's loops and BLAS). Whether the
machine then runs faster is measured by ``fastnn bench --contended``.

Time budget: about 25 s on 2 cores (child processes load the compiled backends).
"""

import json
import os

import numpy as np
import pytest
from conftest import COMPILED_BACKENDS
from isolated import run_isolated

import fastnn
from fastnn import _config, _contention
from fastnn._contention import decide

# ------------------------------------------------------------------ the decision


@pytest.mark.parametrize(
    "configured, cpus, others, cap, want",
    [
        (2, 2, 0.0, 0, 0),  # idle: no cap
        (2, 2, 0.4, 0, 0),  # a blip of another task: not yet
        (2, 2, 0.6, 0, 1),  # one core taken most of the time: one thread
        (2, 2, 1.0, 0, 1),
        (2, 2, 3.0, 0, 1),  # never fewer than one
        (2, 2, 0.5, 1, 1),  # hysteresis: capped stays capped until the others are nearly gone
        (2, 2, 0.3, 1, 1),
        (2, 2, 0.2, 1, 0),  # ... and then the cap is lifted
        (1, 2, 5.0, 0, 0),  # one thread set: nothing to cap
        (16, 16, 3.0, 0, 13),  # a big machine: the cores left free
        (16, 16, 2.6, 13, 13),  # not enough room yet to raise
        (16, 16, 2.0, 13, 14),
        (16, 16, 0.0, 13, 0),
        (4, 64, 10.0, 0, 0),  # plenty of free cores for four threads
        (8, 8, 7.9, 0, 1),
    ],
)
def test_decide(configured, cpus, others, cap, want):
    assert decide(configured, cpus, others, cap) == want


def test_decide_never_exceeds_the_count_set_nor_goes_below_one():
    for configured in range(1, 9):
        for cpus in (1, 2, 4, 8):
            for others in np.linspace(0, 12, 49):
                for cap in range(0, configured + 1):
                    new = decide(configured, cpus, float(others), cap)
                    assert new == 0 or 1 <= new < configured


# ------------------------------------------------------------------ what it measures


def test_machine_busy_seconds_reads_the_cpu_line(tmp_path):
    path = tmp_path / "stat"
    tck = _contention._CLK_TCK
    # user nice system idle iowait irq softirq steal guest guest_nice: idle and iowait are not busy,
    # guest is inside user already
    path.write_text(f"cpu  {3 * tck} {tck} {2 * tck} 900000 5000 0 {tck} {tck} 777 0\ncpu0 1 2 3 4\n")
    assert _contention.machine_busy_seconds(str(path)) == pytest.approx(8.0)
    path.write_text("intr 1 2 3\n")
    with pytest.raises(ValueError, match="cpu line"):
        _contention.machine_busy_seconds(str(path))


def test_others_meter_subtracts_this_process_and_divides_by_wall_time():
    clock = {"busy": 10.0, "own": 1.0, "wall": 100.0}
    meter = _contention.OthersMeter(lambda: clock["busy"], lambda: clock["own"], lambda: clock["wall"])
    clock.update(busy=10.0 + 0.3, own=1.0 + 0.1, wall=100.1)  # 0.1 s: the machine 0.3 CPU-s, we 0.1
    assert meter.sample() == pytest.approx(2.0)
    clock.update(busy=10.35, own=1.15, wall=100.2)  # only we ran (the counters' rounding: never below 0)
    assert meter.sample() == 0.0
    assert meter.sample() == 0.0  # no time passed


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="no /proc/stat: not Linux")
def test_the_live_meter_reads_this_machine():
    meter = _contention.OthersMeter()
    x = 0
    for i in range(200_000):  # some CPU time of our own, not counted as others'
        x += i
    assert 0.0 <= meter.sample() <= os.cpu_count() + 1


# ------------------------------------------------------------------ switches


def test_set_adaptive_threads_rejects_non_bools():
    for bad in (1, 0, "yes", None):
        with pytest.raises(TypeError, match="must be a bool"):
            fastnn.set_adaptive_threads(bad)


def test_active_threads_is_the_count_set_without_a_cap():
    # The suite runs with adaptive threads off (conftest): no watcher, so no cap.
    assert not fastnn.adaptive_threads()
    assert fastnn.active_threads() == fastnn.get_num_threads()
    before = fastnn.get_num_threads()
    try:
        for n in (1, 3):
            fastnn.set_num_threads(n)
            assert fastnn.active_threads() == n
    finally:
        fastnn.set_num_threads(before)


def _child(body, env=None):
    # A fake machine of two CPUs whatever runs the tests, and a sampler the child drives.
    prelude = """
        import json, os, sys, time, threading
        import numpy as np
        import fastnn
        from fastnn import _config, _contention
        _config._cpu_counts = (2, 2)
        OTHERS = [0]
        _contention.OthersMeter.sample = lambda self: OTHERS[0]
        def wait_for(cond, seconds=5.0):
            end = time.monotonic() + seconds
            while not cond():
                assert time.monotonic() < end, "the watcher did not act within %.0f s" % seconds
                time.sleep(0.01)
        def blas_threads():
            from threadpoolctl import threadpool_info
            return sorted({p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"})
    """
    import textwrap

    res = run_isolated(
        textwrap.dedent(prelude) + textwrap.dedent(body),
        timeout=180,
        env={"FASTNN_NUM_THREADS": "2", "FASTNN_ADAPTIVE_THREADS": "1", **(env or {})},
    )
    res.assert_ok()
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_env_switch_turns_it_off():
    out = _child(
        """
        x = np.ones(1 << 22, np.float32)
        fastnn.ops.relu(x)
        OTHERS[0] = 5
        time.sleep(0.5)
        names = [t.name for t in threading.enumerate()]
        print(json.dumps([fastnn.adaptive_threads(), fastnn.active_threads(), "fastnn-cores" in names]))
        """,
        env={"FASTNN_ADAPTIVE_THREADS": "0"},
    )
    assert out == [False, 2, False]


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
def test_the_team_and_blas_follow_the_machine_and_come_back(backend):
    if fastnn.backend_status()[backend] != "available":
        pytest.skip(f"{backend} backend not available")
    out = _child(
        f"""
        fastnn.set_backend("{backend}")
        x = np.ones(1 << 22, np.float32)
        want = fastnn.ops.relu(x)
        a = np.ones((256, 256), np.float32)
        seen = {{"start": [fastnn.active_threads(), blas_threads()]}}
        OTHERS[0] = 1                      # another program takes one of the two cores
        wait_for(lambda: fastnn.active_threads() == 1)
        got = fastnn.ops.relu(x)           # the next kernel call brings BLAS along
        fastnn.ops.matmul(a, a)
        seen["busy"] = [fastnn.active_threads(), blas_threads(), bool((got == want).all())]
        if "{backend}" == "cython":
            from fastnn._ext import _kernels
            seen["busy"].append(_kernels._get_team_threads())
        OTHERS[0] = 0                      # it stops
        wait_for(lambda: fastnn.active_threads() == 2)
        fastnn.ops.relu(x)
        seen["idle"] = [fastnn.active_threads(), blas_threads(), fastnn.get_num_threads()]
        print(json.dumps(seen))
        """
    )
    assert out["start"] == [2, [2]]
    assert out["busy"][:3] == [1, [1], True]
    if backend == "cython":
        assert out["busy"][3] == 1
    assert out["idle"] == [2, [2], 2]


def test_a_blas_count_changed_under_the_cap_is_left_as_set():
    out = _child(
        """
        from threadpoolctl import threadpool_limits
        fastnn.set_backend("numpy")
        x = np.ones(1 << 22, np.float32)
        fastnn.active_threads()            # starts the watcher
        OTHERS[0] = 1
        wait_for(lambda: fastnn.active_threads() == 1)
        fastnn.ops.relu(x)
        capped = blas_threads()
        threadpool_limits(limits=3, user_api="blas")   # the user's own setting, meanwhile
        OTHERS[0] = 0
        wait_for(lambda: fastnn.active_threads() == 2)
        fastnn.ops.relu(x)
        print(json.dumps([capped, blas_threads()]))
        """
    )
    assert out == [[1], [3]]


def test_switching_off_lifts_the_cap_and_stops_the_watcher():
    out = _child(
        """
        fastnn.active_threads()
        OTHERS[0] = 1
        wait_for(lambda: fastnn.active_threads() == 1)
        fastnn.set_adaptive_threads(False)
        after = [fastnn.active_threads(), fastnn.adaptive_threads()]
        wait_for(lambda: not any(t.name == "fastnn-cores" for t in threading.enumerate()))
        time.sleep(0.2)
        after.append(fastnn.active_threads())
        fastnn.set_adaptive_threads(True)
        fastnn.active_threads()
        wait_for(lambda: fastnn.active_threads() == 1)
        print(json.dumps(after + [fastnn.active_threads()]))
        """
    )
    assert out == [2, False, 2, 1]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork on this platform")
def test_a_forked_child_lifts_the_cap_and_watches_again():
    out = _child(
        """
        fastnn.active_threads()
        OTHERS[0] = 1
        wait_for(lambda: fastnn.active_threads() == 1)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            state = [fastnn.active_threads()]
            wait_for(lambda: fastnn.active_threads() == 1)   # its own watcher, same fake machine
            state.append(fastnn.active_threads())
            os.write(w, json.dumps(state).encode())
            os._exit(0)
        os.close(w)
        child = json.loads(os.read(r, 1000))
        os.waitpid(pid, 0)
        print(json.dumps(child))
        """
    )
    assert out == [2, 1]


# ------------------------------------------------------------------ results do not depend on the team


def _training_run(backend, threads, kind):
    fastnn.set_num_threads(threads)
    fastnn.manual_seed(3)
    rng = np.random.default_rng(3)
    nn = fastnn.nn
    with fastnn.use_backend(backend):
        if kind == "cnn":
            model = nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1),
                nn.BatchNorm2d(16),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(16 * 16 * 16, 10),
            )
            x = rng.standard_normal((64, 3, 32, 32)).astype(np.float32)
        else:
            model = nn.Sequential(nn.Linear(256, 512), nn.Tanh(), nn.Linear(512, 10))
            x = rng.standard_normal((512, 256)).astype(np.float32)
        y = rng.integers(0, 10, len(x))
        opt = fastnn.optim.SGD(model.parameters(), lr=0.05)  # (Adam's m/sqrt(v) amplifies round-off of ~0 gradients)
        fastnn.fit(
            model,
            x,
            y,
            loss=nn.CrossEntropyLoss(),
            optimizer=opt,
            epochs=1,
            batch_size=len(x) // 2,
            progress=False,
            seed=0,
        )
    return [p.data.copy() for p in model.parameters()]


def _lstm_run(backend, threads):
    fastnn.set_num_threads(threads)
    fastnn.manual_seed(4)
    rng = np.random.default_rng(4)
    with fastnn.use_backend(backend):
        lstm = fastnn.nn.LSTM(64, 128)
        x = rng.standard_normal((16, 64, 64)).astype(np.float32)
        out = np.array(lstm(x))
        lstm.backward(rng.standard_normal(out.shape).astype(np.float32))
    return [out] + [p.grad.copy() for p in lstm.parameters()]


@pytest.mark.parametrize("kind", ["mlp", "cnn", "lstm"])
@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
def test_a_capped_team_computes_the_same_training(backend, kind, monkeypatch):
    # Two threads set, the team capped at one (BLAS too) against no cap: the same function,
    # rounded in another order in places (BLAS, the conv weight gradient), so equal to float32
    # round-off, not bit for bit (the docstring of fastnn.set_adaptive_threads says so).
    if fastnn.backend_status()[backend] != "available":
        pytest.skip(f"{backend} backend not available")
    before = fastnn.get_num_threads()
    run = _lstm_run if kind == "lstm" else (lambda b, t: _training_run(b, t, kind))
    results = []
    try:
        for cap in (0, 1):
            fastnn.set_num_threads(2)
            _config._set_thread_cap(cap)
            monkeypatch.setattr(fastnn, "set_num_threads", lambda n: None)  # keep the two threads set
            results.append(run(backend, 2))
            monkeypatch.undo()
            if cap:
                assert fastnn.active_threads() == 1
    finally:
        _config._set_thread_cap(0)
        fastnn.set_num_threads(before)
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ threadpoolctl


def test_threadpool_limits_limits_fastnn_too():
    if fastnn.backend_status()["cython"] != "available":
        pytest.skip("the controller matches the compiled extension, which is not built")
    out = _child(
        """
        from threadpoolctl import threadpool_info, threadpool_limits
        fastnn.set_backend("cython")
        seen = [[p["num_threads"] for p in threadpool_info() if p["user_api"] == "fastnn"]]
        with threadpool_limits(limits=1):             # every pool, as joblib workers and users do
            seen.append([fastnn.get_num_threads(), blas_threads()])
        seen.append([fastnn.get_num_threads(), blas_threads()])
        with threadpool_limits(limits=1, user_api="blas"):   # BLAS alone: fastnn's loops keep theirs
            seen.append([fastnn.get_num_threads(), blas_threads()])
        with threadpool_limits(limits={"fastnn": 1}):
            seen.append([fastnn.get_num_threads()])
        print(json.dumps(seen + [fastnn.get_num_threads()]))
        """
    )
    assert out == [[2], [1, [1]], [2, [2]], [2, [1]], [1], 2]


def test_numba_takes_the_team_in_every_thread_that_runs_a_parallel_kernel():
    # Numba keeps its thread count per thread: a thread that never called set_num_threads gets
    # the team from the first parallel kernel it runs (before, it ran NUMBA_NUM_THREADS).
    import threading

    if fastnn.backend_status()["numba"] != "available":
        pytest.skip("numba backend not available")
    import numba

    before = fastnn.get_num_threads()
    seen = {}

    def work():
        with fastnn.use_backend("numba"):
            seen["relu"] = fastnn.ops.relu(np.full(1 << 22, -1.0, np.float32)).max()
        seen["threads"] = numba.get_num_threads()

    try:
        fastnn.set_num_threads(2)
        t = threading.Thread(target=work)
        t.start()
        t.join()
    finally:
        fastnn.set_num_threads(before)
    assert seen == {"relu": 0.0, "threads": min(2, numba.config.NUMBA_NUM_THREADS)}


@pytest.mark.parametrize(
    "value, want", [("", True), ("1", True), ("on", True), ("0", False), ("off", False), (" NO ", False)]
)
def test_env_switch(monkeypatch, value, want):
    # FASTNN_ADAPTIVE_THREADS, FASTNN_GEMM_CALIBRATION and FASTNN_NUMBA_BACKGROUND read alike
    monkeypatch.setenv("FASTNN_SOME_SWITCH", value)
    assert _config.env_switch("FASTNN_SOME_SWITCH") is want


def test_env_switch_warns_on_other_values_and_keeps_the_default(monkeypatch):
    monkeypatch.setenv("FASTNN_SOME_SWITCH", "maybe")
    with pytest.warns(RuntimeWarning, match="FASTNN_SOME_SWITCH='maybe' is neither 1 nor 0"):
        assert _config.env_switch("FASTNN_SOME_SWITCH", default=False) is False
