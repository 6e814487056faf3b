"""The measured GEMM policy (``fastnn/backends/gemm_calibration.py``): the decision from timings,
the file it keeps, and when it applies.

The decision is tested with synthetic timings: pairs of blocks from a fake timer, and a fake
meter of the cores other processes keep busy. One real, reduced calibration per compiled
backend checks the machinery (its figures are not judged: the machine is shared). Every test
that reads or writes the file points ``FASTNN_CACHE_DIR`` at a temporary directory.

Time budget: about 10 s (the child processes load a compiled backend).
"""

import contextlib
import json
import os

import numpy as np
import pytest
from conftest import COMPILED_BACKENDS
from isolated import run_isolated

import fastnn
from fastnn.backends import gemm_calibration as gc
from fastnn.backends import tuning


def _points(ratios, start=1 << 18):
    """Points of growing size whose own/BLAS time ratios are ``ratios``."""
    return [{"v": start << (2 * i), "own": r * 1e-3, "blas": 1e-3} for i, r in enumerate(ratios)]


@pytest.mark.parametrize(
    "ratios, want_index",
    [
        ([0.5, 0.8, 1.0, 1.04], None),  # never loses (a tie within 5% keeps the own GEMM)
        ([1.5, 1.6, 0.9], -1),  # loses from the start: 0
        ([0.7, 0.9, 1.3, 1.4, 0.8], 1),  # two losses outweigh the last win
        ([0.7, 1.3, 0.9, 0.95, 1.2], 3),  # one noisy loss among wins does not end it; a loss at the last point does
        ([0.7, 1.3, 0.9, 1.2, 1.3], 0),  # a win between losses does not make up for them
        # a cluster of losses (the small kernel's team run 2.5x slower) made up by the wins after it
        ([0.7, 0.9, 2.5, 1.45, 0.9, 0.8, 0.8, 0.7, 0.8], None),
        ([1.2], -1),
    ],
)
def test_crossover(ratios, want_index):
    # want_index: the last point run on the own GEMM (None: every point; -1: none), by least total cost
    pts = _points(ratios)
    got = gc.crossover(list(reversed(pts)))  # order of the points does not matter
    if want_index is None:
        assert got is None
    elif want_index == -1:
        assert got == 0
    else:
        assert got == pts[want_index]["v"]  # the last win before the end


def test_the_median_interval_takes_binomial_ranks_and_narrows_with_more_pairs():
    x = [float(i) for i in range(12)]
    assert gc._median_interval(x) == (2.0, 9.0)  # P(Bin(12, 1/2) <= 2) = 0.019 <= 0.05 < P(<= 3)
    assert gc._median_interval(x[:8]) == (1.0, 6.0)
    assert gc._median_interval([3.0, 1.0, 2.0]) == (1.0, 3.0)  # too few pairs: their whole range
    widths = []
    for n in (12, 48, 192):  # the same spread of ratios, more and more pairs
        lo, hi = gc._median_interval(list(np.linspace(0.8, 1.2, n)))
        assert lo < 1.0 < hi
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]


def test_verdict_reads_the_interval_against_the_margin():
    def pt(v, low, high):
        return {"v": v, "ratio": (low + high) / 2, "low": low, "high": high}

    assert gc.verdict(pt(1, 0.9, 1.05)) == "win"  # a tie within the margin keeps the own GEMM
    assert gc.verdict(pt(1, 1.06, 1.3)) == "loss"
    assert gc.verdict(pt(1, 1.0, 1.1)) == "unclear"
    assert gc.verdict({"v": 1, "own": 2.0, "blas": 1.0}) == "loss"  # one sample: its ratio decides


def _judged(ratios):
    """Points with the given pair ratios each (a list per point), as :func:`gc.summarize` makes them."""
    return [gc.summarize(1, 1, 1 << (2 * i), r, [1.0] * len(r)) for i, r in enumerate(ratios)]


def test_judge_holds_a_clear_bound_and_names_the_points_that_decide_an_unclear_one():
    win, loss = [0.8, 0.85, 0.9, 0.82] * 2, [1.3, 1.25, 1.4, 1.35] * 2
    swing = [0.95, 1.15] * 4  # median 1.045: a tie, but a resample can make it a 10% loss or a win
    pts = _judged([win, win, loss, loss])
    j = gc.judge(pts)
    assert j["holds"] and j["bound"] == pts[1]["v"] and j["range"] == [pts[1]["v"]] * 2 and j["contested"] == []
    assert j["regret"] == 0.0
    pts = _judged([win, swing, loss, loss])
    j = gc.judge(pts)
    assert not j["holds"] and j["contested"] == [1] and j["range"] == [pts[0]["v"], pts[1]["v"]]
    assert j["regret"] > gc.REGRET
    # an unclear point that no preferred bound reaches does not decide anything
    j = gc.judge(_judged([win, loss, loss, loss, swing]))
    assert j["holds"] and j["contested"] == []
    # the order of the points does not matter; contested indices are into the list given
    pts = _judged([win, swing, loss, loss])
    j = gc.judge(list(reversed(pts)))
    assert j["contested"] == [2] and j["bound"] == gc.judge(pts)["bound"]
    # the bound by the medians is crossover's, also with two pairs a point (median of logs, not log of median)
    for ratios in ([[1.0, 1.1005], [1.3, 1.4]], [[0.9, 1.2], [1.0, 1.11]], [[1.049, 1.052], [0.5, 2.2]]):
        pts = _judged(ratios)
        assert gc.judge(pts)["bound"] == gc.crossover(pts)
    # every point swinging: nothing holds, from "BLAS everywhere" to "own everywhere"
    j = gc.judge(_judged([swing] * 4))
    assert not j["holds"] and j["range"] == [0, None] and j["contested"] == [0, 1, 2, 3]


def test_contended_leaves_the_threads_fewer_cores_than_they_need():
    assert not gc.contended(0.4, 2, 2) and gc.contended(0.6, 2, 2)
    assert not gc.contended(1.4, 1, 2) and gc.contended(1.6, 1, 2)
    assert not gc.contended(1.2, 2, 4)


LADDER4 = ((32, 64, 128), (64, 128, 128), (128, 128, 128), (128, 256, 128))


class FakeTimer:
    """Synthetic blocks: ``ratio(i, j)`` is product i's own/BLAS ratio in its j-th pair (BLAS 1 ms a call).

    ``load(i, j)`` gives the slow-down of the (own, BLAS) blocks of that pair (default: none).
    Records each block as (i, route, seconds), and each settle as None.
    """

    def __init__(self, ratio, load=None):
        self.ratio, self.load = ratio, load or (lambda i, j: (1.0, 1.0))
        self.calls = []

    def block(self, route, i):
        j = sum(1 for c in self.calls if c is not None and c[:2] == (i, route))
        own_load, blas_load = self.load(i, j)
        t = self.ratio(i, j) * 1e-3 * own_load if route == "own" else 1e-3 * blas_load
        self.calls.append((i, route, t))
        return t

    def settle(self):
        self.calls.append(None)

    def count(self, i):
        return sum(1 for c in self.calls if c is not None and c[:2] == (i, "own"))

    def times(self, i, route):
        return [c[2] for c in self.calls if c is not None and c[:2] == (i, route)]

    @contextlib.contextmanager
    def blocks(self, backend, dtype, ladder, min_block=gc.MIN_BLOCK):
        yield self


def test_paired_medians_hold_where_independent_minima_flip():
    # Products 1 and 2: the own GEMM is 10% faster. Every pair ran on a busy machine (both blocks
    # twice as slow) but one, whose BLAS block alone caught a quiet moment: the best BLAS block is
    # then 1.8x faster than the best own block, and two "losses" in a row would end the own GEMM
    # after product 0. The pairs' median ratio does not move.
    def load(i, j):
        if i in (1, 2):
            return (2.0, 1.0) if j == 3 else (2.0, 2.0)
        return 1.0, 1.0

    fake = FakeTimer(lambda i, j: (0.8, 0.9, 0.9, 1.3)[i], load)
    pts = gc.sample(fake, LADDER4)
    minima = [
        {"v": p["v"], "own": min(fake.times(k, "own")), "blas": min(fake.times(k, "blas"))} for k, p in enumerate(pts)
    ]
    assert gc.crossover(minima) == pts[0]["v"]  # what the best blocks decided
    assert [p["verdict"] for p in pts] == ["win", "win", "win", "loss"]
    assert [round(p["ratio"], 6) for p in pts] == [0.8, 0.9, 0.9, 1.3]
    judged = gc.judge(pts)
    assert judged["holds"] and judged["bound"] == pts[2]["v"] == gc.crossover(pts)
    assert all(p["pairs"] == gc.MIN_PAIRS for p in pts)  # it holds from the start: nothing timed again


def test_no_own_block_follows_a_blas_block_without_a_settle():
    # A threaded BLAS call leaves its idle threads spinning on the cores for ~0.1 s: an own-GEMM block
    # timed among them ran several times slower. Groups of rounds: settle, every own block, every BLAS block.
    fake = FakeTimer(lambda i, j: (0.8, 0.9, 0.95 if j % 2 else 1.15, 1.3)[i])
    gc.sample(fake, LADDER4, min_pairs=8, max_pairs=32, group=4)
    previous = None
    for c in fake.calls:
        if c is not None and c[1] == "own":
            assert previous is None or previous[1] == "own"
        previous = c
    groups = fake.calls.count(None)
    assert groups == 2 + 6  # the first 8 pairs, then product 2 alone up to 32, four rounds a group
    blocks = [c for c in fake.calls if c is not None]
    assert len(blocks) == 2 * (8 * 4 + 24)


def test_an_unclear_point_the_bound_depends_on_is_timed_again_then_declared_unstable():
    # Product 2 swings around the margin (0.95 / 1.15): whether the own GEMM runs it decides the bound.
    swings = FakeTimer(lambda i, j: (0.8, 0.9, 0.95 if j % 2 else 1.15, 1.3)[i])
    pts = gc.sample(swings, LADDER4, min_pairs=8, max_pairs=32)
    assert [swings.count(i) for i in range(4)] == [8, 8, 32, 8]
    judged = gc.judge(pts)
    assert not judged["holds"] and judged["range"] == [pts[1]["v"], pts[2]["v"]] and pts[2]["pairs"] == 32
    # ... but a noisy first pass that settles when timed again is decided, and timing stops there
    settles = FakeTimer(lambda i, j: (0.8, 0.9, (0.7 if j % 2 else 1.4) if j < 8 else 0.9, 1.3)[i])
    pts = gc.sample(settles, LADDER4, min_pairs=8, max_pairs=32)
    assert 8 < settles.count(2) < 32 and [settles.count(i) for i in (0, 1, 3)] == [8, 8, 8]
    judged = gc.judge(pts)
    assert judged["holds"] and judged["bound"] == pts[2]["v"]
    # ... and an unclear point that cannot move the bound is not timed again
    idle = FakeTimer(lambda i, j: (0.8, 1.3, 1.3, 0.95 if j % 2 else 1.15)[i])
    pts = gc.sample(idle, LADDER4, min_pairs=8, max_pairs=32)
    assert [idle.count(i) for i in range(4)] == [8] * 4
    assert gc.judge(pts)["holds"] and gc.crossover(pts) == pts[0]["v"]


def test_sampling_stops_at_its_budget_after_one_round():
    fake = FakeTimer(lambda i, j: 0.9)
    pts = gc.sample(fake, LADDER4, budget=0.0)
    assert [p["pairs"] for p in pts] == [gc.GROUP] * 4  # the first group of rounds always runs


class FakeMeter:
    def __init__(self, others):
        self.others = others

    def sample(self):
        return self.others


@pytest.fixture
def fake_calibration(tmp_path, monkeypatch):
    """calibrate() on synthetic pairs and a fake meter, storing into a temporary cache."""
    monkeypatch.setenv("FASTNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(gc._config, "get_num_threads", lambda: 2)

    def run(ratio, others=0.0, **kw):
        fake = FakeTimer(ratio)
        monkeypatch.setattr(gc, "_timed_blocks", fake.blocks)
        monkeypatch.setattr(gc, "_others_meter", lambda: FakeMeter(others))
        return gc.calibrate("cython", np.float32, ladder=LADDER4, **kw)

    return run


CLEAR = (0.8, 0.9, 1.3, 1.4)
SWINGS = (0.8, 0.9, None, 1.3)


def _swing(table):
    return lambda i, j: table[i] if table[i] is not None else (0.95 if j % 2 else 1.15)


def test_a_clear_calibration_is_stored_with_what_it_rested_on(fake_calibration):
    e = fake_calibration(_swing(CLEAR), others=0.2)
    assert e["problems"] == [] and not e["forced"] and "path" in e
    stored = gc.lookup(e["key"])
    assert stored["bound"] == 64 * 128 * 128 and stored["key"]["method"] == gc.METHOD
    assert stored["others_busy"] == 0.2 and stored["min_pairs"] == gc.MIN_PAIRS
    for p in stored["points"]:
        assert {"ratio", "q1", "q3", "low", "high", "pairs", "verdict"} <= set(p)
        assert p["q1"] <= p["ratio"] <= p["q3"] and p["low"] <= p["ratio"] <= p["high"]


def test_an_unstable_or_contended_calibration_is_not_stored_and_the_previous_entry_stays(fake_calibration):
    first = fake_calibration(_swing(CLEAR))
    assert "path" in first
    unstable = fake_calibration(_swing(SWINGS))
    assert "path" not in unstable and len(unstable["problems"]) == 1
    assert unstable["problems"][0].startswith("unstable: the bound lies anywhere from 1.05M multiply-adds to 2.1M")
    busy = fake_calibration(_swing(CLEAR), others=float(gc._config._cpus()[1]))
    assert "path" not in busy and busy["problems"][0].startswith("contended: other processes kept")
    assert gc.lookup(first["key"])["measured"] == first["measured"]
    assert gc.lookup(first["key"])["points"] == first["points"]
    # forced: stored, marked, with the bound the medians give
    forced = fake_calibration(_swing(SWINGS), force=True)
    stored = gc.lookup(first["key"])
    assert stored["forced"] and stored["problems"] == forced["problems"] and stored["bound"] == forced["bound"]


def test_a_team_lowered_while_measuring_counts_as_contended(fake_calibration, monkeypatch):
    monkeypatch.setattr(gc._config, "active_threads", lambda: 1)
    e = fake_calibration(_swing(CLEAR), others=0.1)
    assert "path" not in e and e["capped_blocks"] == 2 * 4 * gc.MIN_PAIRS
    assert e["problems"] == [
        "contended: other processes took cores for a while; fastnn's adaptive team ran fewer than 2 threads "
        "during 64 of the timed blocks"
    ]


def test_out_of_time_is_a_problem(fake_calibration):
    e = fake_calibration(_swing(CLEAR), budget=0.0)
    assert "path" not in e and e["problems"][0].startswith(
        f"out of time: {gc.GROUP} of {gc.MIN_PAIRS} pairs per product"
    )


def test_thresholds_per_backend():
    top = 256 << 20
    assert gc.thresholds("numba", np.float32, 2, 5_000_000, top) == {"numba_gemm_own_max_threaded": 5_000_000}
    assert gc.thresholds("numba", np.float32, 1, 0, top) == {"numba_gemm_own_max": 0}
    # never lost: as far as measured, or the default where that reaches further
    assert gc.thresholds("numba", np.float32, 2, None, top) == {"numba_gemm_own_max_threaded": max(192**3, top)}
    assert gc.thresholds("numba", np.float32, 1, None, top) == {"numba_gemm_own_max": 1 << 40}
    if fastnn.backend_status()["cython"] != "available":
        return
    fastnn.backends.get("cython")
    isa = gc._cython_isa()
    small = tuning.value("gemm_small_max_f32", isa)
    assert gc.thresholds("cython", np.float32, 2, small * 4, top) == {
        "gemm_small_max_f32": small,
        "gemm_packed_max_f32": small * 4,
    }
    # the small kernel already loses: smaller small bound, no packed products
    assert gc.thresholds("cython", np.float32, 2, small // 4, top) == {
        "gemm_small_max_f32": small // 4,
        "gemm_packed_max_f32": 0,
    }
    with pytest.raises(ValueError, match="cython or numba"):
        gc.thresholds("numpy", np.float32, 2, 0, top)


def test_the_file_round_trips_and_replaces_an_entry_of_the_same_key(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTNN_CACHE_DIR", str(tmp_path))
    k = {"cpu": "x", "threads": 2, "backend": "numba", "dtype": "float32"}
    gc.store({"key": k, "thresholds": {"numba_gemm_own_max_threaded": 1}})
    gc.store({"key": {**k, "threads": 1}, "thresholds": {"numba_gemm_own_max": 2}})
    gc.store({"key": k, "thresholds": {"numba_gemm_own_max_threaded": 3}})
    assert gc.lookup(k)["thresholds"] == {"numba_gemm_own_max_threaded": 3}
    assert gc.lookup({**k, "threads": 1})["thresholds"] == {"numba_gemm_own_max": 2}
    assert gc.lookup({**k, "threads": 4}) is None
    assert sorted(os.listdir(tmp_path)) == ["gemm-calibration.json"]  # no temporary file left
    assert len(json.loads((tmp_path / "gemm-calibration.json").read_text())["entries"]) == 2


def test_an_entry_replaces_those_of_earlier_methods_and_versions_of_the_same_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTNN_CACHE_DIR", str(tmp_path))
    k = {"cpu": "x", "threads": 2, "backend": "cython", "dtype": "float32", "method": 4, "versions": {"fastnn": "1"}}
    gc.store({"key": {**k, "method": 3}, "thresholds": {"gemm_packed_max_f32": 1}})
    gc.store({"key": {**k, "versions": {"fastnn": "0"}}, "thresholds": {"gemm_packed_max_f32": 2}})
    gc.store({"key": {**k, "cpu": "y", "method": 3}, "thresholds": {"gemm_packed_max_f32": 3}})  # another machine
    gc.store({"key": {**k, "threads": 1}, "thresholds": {"gemm_packed_max_f32": 4}})
    gc.store({"key": k, "thresholds": {"gemm_packed_max_f32": 5}})
    entries = json.loads((tmp_path / "gemm-calibration.json").read_text())["entries"]
    assert sorted(e["thresholds"]["gemm_packed_max_f32"] for e in entries) == [3, 4, 5]
    assert gc.lookup({**k, "method": 3}) is None and gc.lookup({**k, "cpu": "y", "method": 3}) is not None


@pytest.mark.parametrize("content", ["{not json", '{"format": 99, "entries": []}', "[1, 2]", ""])
def test_a_file_that_is_not_ours_is_ignored_with_a_warning(tmp_path, monkeypatch, content):
    monkeypatch.setenv("FASTNN_CACHE_DIR", str(tmp_path))
    (tmp_path / "gemm-calibration.json").write_text(content)
    with pytest.warns(RuntimeWarning, match="ignoring the GEMM calibration file"):
        assert gc.lookup({"cpu": "x"}) is None
    gc.store({"key": {"cpu": "x"}, "thresholds": {}})  # and it is replaced by a good one
    assert gc.lookup({"cpu": "x"}) is not None


def test_cache_path_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTNN_CACHE_DIR", str(tmp_path / "a"))
    assert gc.cache_path() == str(tmp_path / "a" / "gemm-calibration.json")
    monkeypatch.delenv("FASTNN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert gc.cache_path() == str(tmp_path / "xdg" / "fastnn" / "gemm-calibration.json")


def _child(body, cache_dir, env=None):
    res = run_isolated(
        """
        import json, numpy as np, fastnn
        from fastnn.backends import gemm_calibration as gc, tuning, gemm_policy
        """
        + body,
        timeout=300,
        env={
            "FASTNN_CACHE_DIR": str(cache_dir),
            "FASTNN_GEMM_CALIBRATION": "on",
            "FASTNN_NUM_THREADS": "2",
            **(env or {}),
        },
    )
    res.assert_ok()
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
def test_a_stored_measurement_applies_at_load_per_thread_count(backend, tmp_path):
    if fastnn.backend_status()[backend] != "available":
        pytest.skip(f"{backend} backend not available")
    name = "numba_gemm_own_max_threaded" if backend == "numba" else "gemm_packed_max_f32"
    # a first process stores a (made-up) measurement for 2 threads
    _child(
        f"""
        fastnn.backends.get("{backend}")
        gc.store({{"key": gc.key("{backend}", "float32"), "thresholds": {{"{name}": 12345}}, "bound": 12345,
                  "measured": "then"}})
        print("[]")
        """,
        tmp_path,
    )
    out = _child(
        f"""
        fastnn.backends.get("{backend}")      # loads, and applies what matches
        seen = [tuning.value("{name}", "avx2"), gc.describe("{backend}")]
        fastnn.set_num_threads(1)             # no measurement at 1 thread: the default again
        seen.append(tuning.value("{name}", "avx2") != 12345)
        fastnn.set_num_threads(2)
        seen.append(tuning.value("{name}", "avx2"))
        print(json.dumps(seen))
        """,
        tmp_path,
    )
    assert out[0] == 12345 and "measured then" in out[1] and out[2] is True and out[3] == 12345
    # FASTNN_TUNING wins over it; FASTNN_GEMM_CALIBRATION=off ignores it
    out = _child(
        f"""
        fastnn.backends.get("{backend}")
        print(json.dumps([tuning.value("{name}", "avx2")]))
        """,
        tmp_path,
        env={"FASTNN_TUNING": f"{name}=777"},
    )
    assert out == [777]
    out = _child(
        f"""
        fastnn.backends.get("{backend}")
        print(json.dumps([tuning.value("{name}", "avx2") != 12345, gc.describe("{backend}")]))
        """,
        tmp_path,
        env={"FASTNN_GEMM_CALIBRATION": "off"},
    )
    assert out == [True, "defaults (FASTNN_GEMM_CALIBRATION=off)"]


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
def test_a_real_calibration_measures_both_routes_and_stores_its_policy(backend, tmp_path):
    # Reduced ladder and two rounds, stored whatever the load: the machinery, not the figures.
    if fastnn.backend_status()[backend] != "available":
        pytest.skip(f"{backend} backend not available")
    out = _child(
        f"""
        fastnn.backends.get("{backend}")
        ladder = ((32, 64, 128), (128, 256, 256))
        e = gc.calibrate("{backend}", np.float32, ladder=ladder, min_pairs=2, max_pairs=2, force=True)
        k = gc.key("{backend}", "float32")
        print(json.dumps([e["points"], e["bound"], e["thresholds"], gc.lookup(k)["thresholds"], e["key"] == k,
                          gc.describe("{backend}").startswith("measured")]))
        """,
        tmp_path,
    )
    points, bound, thresholds, stored, same_key, described = out
    assert [(p["m"], p["k"], p["n"], p["v"]) for p in points] == [(32, 64, 128, 262144), (128, 256, 256, 8388608)]
    assert all(p["own"] > 0 and p["blas"] > 0 and p["pairs"] >= 2 for p in points)
    assert bound == gc.crossover(points) and stored == thresholds and same_key and described


def test_calibrate_command(tmp_path):
    if fastnn.backend_status()["cython"] != "available":
        pytest.skip("cython backend not available")
    env = {"FASTNN_CACHE_DIR": str(tmp_path), "FASTNN_GEMM_CALIBRATION": "on"}
    res = run_isolated(
        """
        from fastnn.cli import main
        print("RC", main(["calibrate", "--backends", "cython", "--force"]))
        """,
        timeout=300,
        env=env,
    )
    res.assert_ok()
    assert "own GEMM up to" in res.stdout and "cython float32" in res.stdout and "RC 0" in res.stdout
    assert "stored" in res.stdout and (tmp_path / "gemm-calibration.json").exists()
    bad = run_isolated("from fastnn.cli import main\nprint('RC', main(['calibrate', '--backends', 'numpy']))", env=env)
    bad.assert_ok()
    assert "RC 2" in bad.stdout and "cython and/or numba" in bad.stderr
    # a cache directory that cannot be written: a clear message, no traceback
    blocked = tmp_path / "file"
    blocked.write_text("")
    res = run_isolated(
        "from fastnn.cli import main\nprint('RC', main(['calibrate', '--backends', 'cython', '--force']))",
        timeout=300,
        env={**env, "FASTNN_CACHE_DIR": str(blocked / "sub")},
    )
    res.assert_ok()
    assert "RC 1" in res.stdout and "cannot store the result" in res.stderr


def test_the_commands_refuse_an_unstable_calibration_and_keep_the_policy_in_force(tmp_path):
    if fastnn.backend_status()["cython"] != "available":
        pytest.skip("cython backend not available")
    res = run_isolated(
        """
        import contextlib, json
        import fastnn
        from fastnn.backends import gemm_calibration as gc, tuning
        from fastnn.cli import main

        fastnn.backends.get("cython")
        name = "gemm_packed_max_f32"
        gc.store({"key": gc.key("cython", "float32"), "thresholds": {name: 12345}, "bound": 12345,
                  "measured": "then"})
        gc.apply_cached("cython")

        class Quiet:
            def sample(self):
                return 0.0

        class Swinging:  # every product swings around the margin: nothing is clear
            seen = {}

            def block(self, route, i):
                if route == "blas":
                    return 1e-3
                self.seen[i] = self.seen.get(i, -1) + 1
                return (0.95 if self.seen[i] % 2 else 1.15) * 1e-3

            def settle(self):
                pass

        @contextlib.contextmanager
        def swinging(backend, dtype, ladder, min_block=gc.MIN_BLOCK):
            yield Swinging()

        gc._others_meter = Quiet
        gc._timed_blocks = swinging
        out = [main(["calibrate", "--backends", "cython"]), tuning.value(name, "avx2"), gc.describe("cython")]
        out += [main(["warmup", "--backend", "cython"]), tuning.value(name, "avx2")]
        out += [main(["calibrate", "--backends", "cython", "--force"]), tuning.value(name, "avx2"),
                gc.describe("cython")]
        print(json.dumps(out))
        """,
        timeout=300,
        env={"FASTNN_CACHE_DIR": str(tmp_path), "FASTNN_GEMM_CALIBRATION": "on", "FASTNN_NUM_THREADS": "2"},
    )
    res.assert_ok()
    rc, kept, described, warm_rc, kept_after_warmup, forced_rc, forced_value, forced_described = json.loads(
        res.stdout.strip().splitlines()[-1]
    )
    assert rc == 1 and kept == 12345 and described.startswith("measured then: own GEMM up to 0.0123M")
    assert "fastnn calibrate: cython float32: not stored, the evidence is not clear (unstable)" in res.stderr
    assert warm_rc == 0 and kept_after_warmup == 12345
    assert "fastnn warmup: cython float32: not stored" in res.stderr
    assert "unstable: the bound lies anywhere from 0M multiply-adds to every size measured" in res.stdout
    assert forced_rc == 0 and forced_value != 12345 and "stored anyway (--force)" in res.stdout
    assert forced_described.endswith("(stored with --force despite: unstable)")
