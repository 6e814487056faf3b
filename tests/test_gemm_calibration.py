"""The measured GEMM policy (``fastnn/backends/gemm_calibration.py``): the decision from timings,
the file it keeps, and when it applies.

The decision is tested with synthetic timings; one real, reduced calibration per compiled
backend checks the machinery (its figures are not judged: the machine is shared). Every test
that reads or writes the file points ``FASTNN_CACHE_DIR`` at a temporary directory.

Time budget: about 10 s (the child processes load a compiled backend).
"""

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
        ([0.7, 0.9, 1.3, 1.4, 0.8], 1),  # two losses in a row end it after the last win
        ([0.7, 1.3, 0.9, 0.95, 1.2], 3),  # one noisy loss does not; a loss at the last point does
        ([0.7, 1.3, 0.9, 1.2, 1.3], 2),
        ([1.2], -1),
    ],
)
def test_crossover(ratios, want_index):
    # want_index: the point of the last win (None: the own GEMM never loses; -1: it loses from the start)
    pts = _points(ratios)
    got = gc.crossover(list(reversed(pts)))  # order of the points does not matter
    if want_index is None:
        assert got is None
    elif want_index == -1:
        assert got == 0
    else:
        assert got == pts[want_index]["v"]  # the last win before the end


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
    # Reduced ladder and one round: the machinery, not the figures.
    if fastnn.backend_status()[backend] != "available":
        pytest.skip(f"{backend} backend not available")
    out = _child(
        f"""
        fastnn.backends.get("{backend}")
        ladder = ((32, 64, 128), (128, 256, 256))
        e = gc.calibrate("{backend}", np.float32, ladder=ladder, reps=1)
        k = gc.key("{backend}", "float32")
        print(json.dumps([e["points"], e["bound"], e["thresholds"], gc.lookup(k)["thresholds"], e["key"] == k,
                          gc.describe("{backend}").startswith("measured")]))
        """,
        tmp_path,
    )
    points, bound, thresholds, stored, same_key, described = out
    assert [(p["m"], p["k"], p["n"], p["v"]) for p in points] == [(32, 64, 128, 262144), (128, 256, 256, 8388608)]
    assert all(p["own"] > 0 and p["blas"] > 0 for p in points)
    assert bound == gc.crossover(points) and stored == thresholds and same_key and described


def test_calibrate_command(tmp_path):
    if fastnn.backend_status()["cython"] != "available":
        pytest.skip("cython backend not available")
    env = {"FASTNN_CACHE_DIR": str(tmp_path), "FASTNN_GEMM_CALIBRATION": "on"}
    res = run_isolated(
        """
        from fastnn.cli import main
        print("RC", main(["calibrate", "--backends", "cython"]))
        """,
        timeout=300,
        env=env,
    )
    res.assert_ok()
    assert "own GEMM up to" in res.stdout and "cython float32" in res.stdout and "RC 0" in res.stdout
    assert (tmp_path / "gemm-calibration.json").exists()
    bad = run_isolated("from fastnn.cli import main\nprint('RC', main(['calibrate', '--backends', 'numpy']))", env=env)
    bad.assert_ok()
    assert "RC 2" in bad.stdout and "cython and/or numba" in bad.stderr
    # a cache directory that cannot be written: a clear message, no traceback
    blocked = tmp_path / "file"
    blocked.write_text("")
    res = run_isolated(
        "from fastnn.cli import main\nprint('RC', main(['calibrate', '--backends', 'cython']))",
        timeout=300,
        env={**env, "FASTNN_CACHE_DIR": str(blocked / "sub")},
    )
    res.assert_ok()
    assert "RC 1" in res.stdout and "cannot store the result" in res.stderr
