"""``fastnn bench``: report structure, ratios, --compare, missing workloads, a tiny real run.

No timing is asserted here (timings belong in benches/); the tests check that
every number in the report follows from the raw repetitions it stores.
"""

import json
import math

import numpy as np
import pytest

import fastnn
from fastnn.bench import compare, derive, load_results, machine, markdown, runner, workloads, write_report
from fastnn.bench.report import write_json
from fastnn.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# -- helpers -----------------------------------------------------------------


def _row(times, kind="backend"):
    t = np.asarray(times, dtype=float)
    return {
        "kind": kind,
        "times": list(map(float, t)),
        "median": float(np.median(t)),
        "min": float(t.min()),
        "max": float(t.max()),
        "spread": float(t.max() / t.min()),
        "noisy": bool(t.max() / t.min() > runner.NOISY_SPREAD),
        "number": 10,
        "first_call": 0.5,
        "error": None,
    }


def _synthetic(scale_numba=1.0, scale_numpy=1.0):
    """A small results dict with known numbers (times in seconds)."""
    w1 = {
        "id": "W1",
        "title": "matrix multiply",
        "limit": "gemm",
        "note": "",
        "available": True,
        "missing": [],
        "cases": [
            {
                "key": "W1 matmul n=64",
                "name": "matmul n=64",
                "kind": "matmul",
                "params": {},
                "rounds": 3,
                "flops": 2.0 * 64**3,
                "bytes": None,
                "gemm_shapes": [],
                "limit": {
                    "kind": "gemm",
                    "what": "BLAS sgemm n=1024",
                    "unit": "GFLOP/s",
                    "value": 250.0,
                    **_row([2 * 1024**3 / 250e9] * 3, kind="limit"),
                },
                "rows": {
                    "numpy": _row([2e-5 * scale_numpy] * 3),
                    "numba": _row([5e-6 * scale_numba, 5e-6 * scale_numba, 5.2e-6 * scale_numba]),
                    "torch": _row([1e-5, 1.5e-5, 1e-5], kind="anchor"),
                },
            }
        ],
    }
    w2 = {
        "id": "W2",
        "title": "activations",
        "limit": "copy",
        "note": "",
        "available": True,
        "missing": [],
        "cases": [
            {
                "key": "W2 relu forward",
                "name": "relu forward",
                "kind": "act_forward",
                "params": {},
                "rounds": 3,
                "flops": None,
                "bytes": 32e6,
                "gemm_shapes": [],
                "rows": {
                    "numpy": _row([2e-3, 2.1e-3, 1.9e-3]),
                    "cython": {
                        "kind": "backend",
                        "times": [],
                        "number": 1,
                        "first_call": None,
                        "error": "RuntimeError: boom",
                    },
                },
            }
        ],
    }
    w3 = {
        "id": "W3",
        "title": "MLP train step",
        "limit": "gemm_time",
        "note": "",
        "available": True,
        "missing": [],
        "cases": [
            {
                "key": "W3 train step",
                "name": "train step",
                "kind": "mlp",
                "params": {},
                "flops": 1e6,
                "rounds": 3,
                "bytes": None,
                "gemm_shapes": [[32, 64, 128]],
                "limit": {
                    "kind": "gemm_time",
                    "what": "BLAS matmuls only",
                    "unit": "s",
                    "value": 1e-5,
                    **_row([1e-5] * 3, kind="limit"),
                },
                "rows": {"numpy": _row([4e-5] * 3), "sklearn": _row([1e-4] * 3, kind="anchor")},
            }
        ],
    }
    w5 = {
        "id": "W5",
        "title": "CNN",
        "limit": None,
        "note": "",
        "available": False,
        "missing": ["fastnn.nn.Conv2d"],
        "cases": [],
    }
    res = {
        "schema": 1,
        "created": "2026-01-01T00:00:00+00:00",
        "duration_s": 1.0,
        "settings": {
            "quick": True,
            "tiny": False,
            "threads": 2,
            "repeat": 3,
            "min_block": 0.01,
            "min_rounds": 3,
            "workloads": ["W1", "W2", "W3", "W5"],
            "backends": ["numpy", "numba", "cython"],
            "anchors": ["torch", "sklearn"],
            "noisy_spread": 1.3,
        },
        "backends_unavailable": {},
        "anchor_status": {"torch": "2.x", "sklearn": "1.x"},
        "machine": {
            "gemm": {"n": 1024, "gflops": 200.0, "times": [0.01]},
            "copy": {"mbytes": 128, "gbps": 40.0, "times": [0.006]},
            "context": {"cpu": "test cpu", "threads": 2, "blas": []},
        },
        "workloads": [w1, w2, w3, w5],
    }
    return derive(res)


def _check_consistent(results):
    """Every derived number follows from the raw repetitions."""
    for wl in results["workloads"]:
        for case in wl["cases"]:
            rows = case["rows"]
            lim = case.get("limit", {}).get("value")
            peak = lim if wl["limit"] == "gemm" and lim else results["machine"]["gemm"]["gflops"]
            bw = lim if wl["limit"] == "copy" and lim else results["machine"]["copy"]["gbps"]
            if wl["limit"] in ("gemm", "copy"):
                assert lim and len(case["limit"]["times"]) == len(rows["numpy"]["times"])
            t_np = rows.get("numpy", {}).get("median")
            t_torch = rows.get("torch", {}).get("median")
            for r in rows.values():
                if r.get("error"):
                    assert r.get("median") is None
                    continue
                t = np.asarray(r["times"])
                assert len(t) == case["rounds"] <= results["settings"]["repeat"]
                assert case["rounds"] >= results["settings"]["min_rounds"]
                assert r["median"] == pytest.approx(np.median(t), rel=1e-12)
                assert r["spread"] == pytest.approx(t.max() / t.min(), rel=1e-12)
                assert r["noisy"] == (r["spread"] > results["settings"]["noisy_spread"])
                if t_np:
                    assert r["speedup_vs_numpy"] * r["median"] == pytest.approx(t_np, rel=1e-12)
                if t_torch:
                    assert r["speedup_vs_torch"] * r["median"] == pytest.approx(t_torch, rel=1e-12)
                if wl["limit"] == "gemm" and case["flops"]:
                    assert r["gflops"] == pytest.approx(case["flops"] / r["median"] / 1e9, rel=1e-12)
                    assert r["fraction_of_limit"] == pytest.approx(r["gflops"] / peak, rel=1e-12)
                elif wl["limit"] == "copy" and case["bytes"]:
                    assert r["gbps"] == pytest.approx(case["bytes"] / r["median"] / 1e9, rel=1e-12)
                    assert r["fraction_of_limit"] == pytest.approx(r["gbps"] / bw, rel=1e-12)
                elif wl["limit"] in ("gemm_time", "copy_time") and lim:
                    assert lim == case["limit"]["median"]
                    assert r["fraction_of_limit"] == pytest.approx(lim / r["median"], rel=1e-12)
                else:
                    assert r["fraction_of_limit"] is None


# -- derived numbers and the report ---------------------------------------------


def test_derive_known_numbers():
    res = _synthetic()
    rows = res["workloads"][0]["cases"][0]["rows"]
    assert rows["numpy"]["speedup_vs_numpy"] == pytest.approx(1.0)
    assert rows["numba"]["speedup_vs_numpy"] == pytest.approx(4.0)  # 20 µs / 5 µs
    assert rows["numba"]["speedup_vs_torch"] == pytest.approx(2.0)  # 10 µs / 5 µs
    assert rows["torch"]["noisy"] and not rows["numba"]["noisy"]  # spread 1.5 vs 1.04
    assert rows["numba"]["gflops"] == pytest.approx(2 * 64**3 / 5e-6 / 1e9)
    # the limit measured with the case (250 GFLOP/s), not the run's (200)
    assert rows["numba"]["fraction_of_limit"] == pytest.approx(2 * 64**3 / 5e-6 / 1e9 / 250.0)
    relu = res["workloads"][1]["cases"][0]["rows"]["numpy"]
    # no limit row in this case: the run's copy bandwidth (40 GB/s)
    assert relu["gbps"] == pytest.approx(16.0) and relu["fraction_of_limit"] == pytest.approx(0.4)
    mlp = res["workloads"][2]["cases"][0]["rows"]
    assert mlp["numpy"]["fraction_of_limit"] == pytest.approx(0.25)  # 10 µs of 40 µs
    assert mlp["sklearn"]["speedup_vs_numpy"] == pytest.approx(0.4)
    assert mlp["numpy"]["speedup_vs_torch"] is None  # no torch row there


def test_report_files_and_tables(tmp_path):
    res = _synthetic()
    paths = write_report(res, tmp_path / "out")
    assert set(paths) == {"md", "json", "png"}
    assert (tmp_path / "out" / "speedup.png").read_bytes()[:8] == PNG_MAGIC
    assert load_results(paths["json"]) == json.loads(json.dumps(res))
    md = (tmp_path / "out" / "report.md").read_text()
    for wid in ("W1", "W2", "W3", "W5"):
        assert f"## {wid} — " in md
    lines = md.splitlines()
    numba = [ln for ln in lines if ln.startswith("| matmul n=64 | fastnn numba |")]
    assert len(numba) == 1
    cells = [c.strip() for c in numba[0].strip("|").split("|")]
    # case, backend, median, vs numpy, vs torch, GFLOP/s, of limit, spread, first call
    assert cells[2:5] == ["5 µs", "4.00×", "2.00×"]
    assert cells[5] == f"{2 * 64**3 / 5e-6 / 1e9:.3g}"
    assert cells[6] == f"{100 * 2 * 64**3 / 5e-6 / 1e9 / 250:.0f}%"
    assert cells[7] == "1.04"
    torch_row = next(ln for ln in lines if ln.startswith("| matmul n=64 | PyTorch CPU |"))
    assert "⚠" in torch_row
    assert any(ln.startswith("| relu forward | fastnn cython | error: RuntimeError: boom") for ln in lines)
    assert "not available (missing: fastnn.nn.Conv2d)" in md
    assert "| train step | (limit: BLAS matmuls only) | 10 µs |" in md
    assert "| matmul n=64 | (limit: BLAS sgemm n=1024) | 8.59 ms | — | — | 250 | 100% | 1.00 | — |" in md
    assert "**200 GFLOP/s**" in md and "**40.0 GB/s**" in md
    # the summary: one line per case, medians side by side, best compiled backend's ratios
    assert (
        "| workload | fastnn numpy | fastnn numba | PyTorch CPU | scikit-learn | best fastnn vs numpy | "
        "best fastnn vs PyTorch |"
    ) in md
    assert "| W1 matmul n=64 | 20 µs | 5 µs | 10 µs ⚠ | — | 4.00× (numba) | 2.00× (numba) |" in md
    assert "| W3 train step | 40 µs | — | — | 100 µs | — | — |" in md
    # every row of every case has a table line
    for wl in res["workloads"]:
        for case in wl["cases"]:
            for name in case["rows"]:
                from fastnn.bench.report import ROW_LABELS

                assert any(ln.startswith(f"| {case['name']} | {ROW_LABELS[name]} |") for ln in lines), name


def test_fmt_time():
    from fastnn.bench.report import fmt_time

    assert fmt_time(12.34e-6) == "12.3 µs"
    assert fmt_time(4.567e-3) == "4.57 ms"
    assert fmt_time(1.5) == "1.5 s"
    assert fmt_time(None) == "—"


# -- compare -----------------------------------------------------------------


def test_compare_two_saved_results(tmp_path, capsys):
    old = _synthetic()
    new = _synthetic(scale_numba=0.5, scale_numpy=3.0)  # numba 2x faster, numpy 3x slower
    write_json(old, tmp_path / "old.json")
    write_json(new, tmp_path / "new.json")
    cmp = compare(load_results(tmp_path / "old.json"), load_results(tmp_path / "new.json"))
    assert [(e["case"], e["row"]) for e in cmp["faster"]] == [("W1 matmul n=64", "numba")]
    assert cmp["faster"][0]["change"] == pytest.approx(2.0)
    assert [(e["case"], e["row"]) for e in cmp["slower"]] == [("W1 matmul n=64", "numpy")]
    assert cmp["slower"][0]["change"] == pytest.approx(1 / 3)
    unchanged = {(e["case"], e["row"]) for e in cmp["unchanged"]}
    assert unchanged == {
        ("W1 matmul n=64", "torch"),
        ("W2 relu forward", "numpy"),
        ("W3 train step", "numpy"),
        ("W3 train step", "sklearn"),
    }
    assert cmp["only_old"] == cmp["only_new"] == []

    assert main(["bench", "--compare", str(tmp_path / "old.json"), str(tmp_path / "new.json")]) == 0
    text = capsys.readouterr().out
    assert "Faster: 1" in text and "Slower: 1" in text
    assert "| W1 matmul n=64 | numba | 5 µs | 2.5 µs | 2.00× faster | 4.00× → 24.00× |" in text
    assert "| W1 matmul n=64 | numpy | 20 µs | 60 µs | 0.33× slower |" in text


def test_compare_overlapping_repetitions_are_unchanged():
    old = _synthetic()
    new = _synthetic()
    r = new["workloads"][0]["cases"][0]["rows"]["numba"]
    r.update(median=r["median"] * 0.7, min=r["min"] * 0.7)  # faster median, but ranges overlap
    derive(new)
    assert compare(old, new)["faster"] == []
    assert compare(old, new, threshold=0.0)["faster"] == []


def test_compare_rows_in_one_run_only():
    old = _synthetic()
    new = _synthetic()
    del new["workloads"][0]["cases"][0]["rows"]["torch"]
    cmp = compare(old, new)
    assert cmp["only_old"] == ["W1 matmul n=64 / torch"] and cmp["only_new"] == []


def test_load_results_rejects_other_json(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"a": 1}')
    with pytest.raises(ValueError, match="not a fastnn bench results.json"):
        load_results(p)


# -- workloads ---------------------------------------------------------------


def test_resolve_and_missing():
    assert workloads.resolve("fastnn.ops.matmul") is fastnn.ops.matmul
    with pytest.raises(LookupError):
        workloads.resolve("fastnn.ops.no_such_kernel")
    fake = workloads.Workload("ZZ", "fake", None, ("fastnn.ops.relu", "fastnn.nn.NoSuchLayer"), lambda q, t: [])
    assert workloads.missing(fake) == ["fastnn.nn.NoSuchLayer"]


def test_get_workloads_order_and_errors():
    assert [w.id for w in workloads.get_workloads(["w3", "W1"])] == ["W1", "W3"]
    assert [w.id for w in workloads.get_workloads()][:6] == ["W1", "W2", "W3", "W4", "W5", "W6"]
    with pytest.raises(ValueError, match="W9"):
        workloads.get_workloads(["W9"])


def test_case_figures():
    w1 = workloads.get_workloads(["W1"])[0].cases(False, False)
    assert [c.name for c in w1] == ["matmul n=64", "matmul n=256", "matmul n=1024", "matmul 32x64x128"]
    assert w1[2].flops == 2.0 * 1024**3
    w2 = workloads.get_workloads(["W2"])[0].cases(False, False)
    assert len(w2) == 6 and w2[0].params["n"] == 4 * 1024 * 1024
    assert w2[0].bytes == 8 * 4 * 1024 * 1024 and w2[1].bytes == 12 * 4 * 1024 * 1024  # fwd r+w, bwd 2r+w
    w4 = workloads.get_workloads(["W4"])[0].cases(False, False)[0]
    assert w4.gemm_shapes == [(128, 784, 256), (128, 256, 10), (10, 128, 256), (128, 10, 256), (256, 128, 784)]


def test_mlp_products_follow_the_layers():
    """One hidden width gives W3/W4's five products; two give three forward, three dW and two dx."""
    assert workloads._mlp_gemms(64, 128, 10, 32) == [
        (32, 64, 128),
        (32, 128, 10),
        (10, 32, 128),
        (32, 10, 128),
        (128, 32, 64),
    ]
    shapes = workloads._mlp_gemms(784, (1024, 512), 10, 256)
    assert shapes[:3] == [(256, 784, 1024), (256, 1024, 512), (256, 512, 10)]
    assert shapes[3:] == [(10, 256, 512), (256, 10, 512), (512, 256, 1024), (256, 512, 1024), (1024, 256, 784)]
    (mid,) = [c for c in workloads.get_workloads(["MID"])[0].cases(False, False) if c.kind == "mlp"]
    assert mid.params["h"] == (1024, 1024) and mid.flops == workloads.gemm_shapes_flops(mid.gemm_shapes)
    assert len([m for m in workloads.mlp_layers(fastnn.nn, 784, (1024, 1024), 10) if hasattr(m, "weight")]) == 3


def test_gemm_only_step_computes_products():
    case = workloads.get_workloads(["W3"])[0].cases(False, True)[0]
    step = workloads.build_gemm_only(case)
    step()
    triples = step.products
    assert len(triples) == 5
    for a, b, c in triples:
        np.testing.assert_allclose(c, a @ b, rtol=1e-5, atol=1e-4)


def test_fastnn_steps_compute(backend):
    """The W1/W2 steps do the work they claim, in every backend."""
    case = workloads.get_workloads(["W1"])[0].cases(False, True)[0]
    step = workloads.build_step(case)
    c = step()
    rng = np.random.default_rng(workloads.SEED)
    a = rng.standard_normal((64, 64)).astype(np.float32)
    b = rng.standard_normal((64, 64)).astype(np.float32)
    np.testing.assert_allclose(c, a @ b, rtol=1e-4, atol=1e-4)
    act = workloads.get_workloads(["W2"])[0].cases(False, True)[2]  # sigmoid forward
    y = workloads.build_step(act)()
    x = np.random.default_rng(workloads.SEED).standard_normal(act.params["n"]).astype(np.float32)
    np.testing.assert_allclose(y, 1 / (1 + np.exp(-x.astype(np.float64))), rtol=1e-5, atol=1e-6)


# -- machine limits ------------------------------------------------------------


def test_machine_measurements_follow_from_times():
    g = machine.measure_gemm(n=128, repeat=3, min_block=0.001)
    assert len(g["times"]) == 3 and min(g["times"]) > 0
    assert g["gflops"] == pytest.approx(2 * 128**3 / np.median(g["times"]) / 1e9, rel=1e-12)
    c = machine.measure_copy(mbytes=4, repeat=3, min_block=0.001)
    assert c["gbps"] == pytest.approx(2 * 4 * 2**20 / np.median(c["times"]) / 1e9, rel=1e-12)
    ctx = machine.context(fastnn.get_num_threads())
    assert ctx["thread_counts"]["fastnn"] == fastnn.get_num_threads()
    assert ctx["numpy"] == np.__version__ and ctx["cores"] >= 1


# -- the timing loop -------------------------------------------------------------


def test_row_result_and_noise_flag():
    r = runner._Row("numpy", "backend", None, None)
    r.times = [1.0, 1.5, 1.1]
    out = runner._row_result(r)
    assert out["median"] == 1.1 and out["spread"] == 1.5 and out["noisy"]
    r.times = [1.0, 1.2, 1.1]
    assert not runner._row_result(r)["noisy"]


def test_missing_and_failing_workloads_do_not_stop_a_run(monkeypatch):
    def cases(quick, tiny):
        return [
            workloads.Case("ZA", "relu tiny", "act_forward", {"act": "relu", "n": 1000}, bytes=8000.0),
            workloads.Case("ZA", "broken", "act_forward", {"act": "no_such_act", "n": 10}, bytes=80.0),
        ]

    fake = [
        workloads.Workload("ZA", "fake ok", "copy", ("fastnn.ops.relu",), cases),
        workloads.Workload("ZB", "fake missing", None, ("fastnn.nn.NoSuchLayer",), cases),
    ]
    monkeypatch.setattr(workloads, "WORKLOADS", fake)
    res = fastnn.bench.run_bench(workloads=["ZA", "ZB"], backends=["numpy"], tiny=True, progress=False)
    za, zb = res["workloads"]
    assert zb["available"] is False and zb["missing"] == ["fastnn.nn.NoSuchLayer"] and zb["cases"] == []
    ok, broken = za["cases"]
    assert len(ok["rows"]["numpy"]["times"]) == ok["rounds"] == res["settings"]["repeat"]
    assert ok["rows"]["numpy"]["speedup_vs_numpy"] == pytest.approx(1.0)
    assert broken["rows"]["numpy"]["error"].startswith("AttributeError")
    assert "median" not in broken["rows"]["numpy"]
    assert "not available (missing: fastnn.nn.NoSuchLayer)" in markdown(res)


#: Workloads of the end-to-end run: quick ones, plus every one missing from this build.
FAST = ",".join(w.id for w in workloads.WORKLOADS if w.id in ("W1", "W2", "W3", "KERN") or workloads.missing(w))


@pytest.mark.slow
def test_tiny_quick_run_end_to_end(tmp_path, capsys):
    """A real (tiny) `fastnn bench --quick` run: files, rows and ratios."""
    out = tmp_path / "bench"
    assert (
        main(["bench", "--quick", "--tiny", "--no-progress", "--threads", "1", "--workloads", FAST, "--out", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    res = load_results(out / "results.json")
    assert (out / "speedup.png").read_bytes()[:8] == PNG_MAGIC
    md = (out / "report.md").read_text()
    assert "## W1 — " in printed and "| matmul n=64 | fastnn numpy |" in printed
    assert res["settings"]["threads"] == 1 and res["machine"]["gemm"]["gflops"] > 0
    assert res["machine"]["copy"]["gbps"] > 0
    assert [w["id"] for w in res["workloads"]] == FAST.split(",")
    expected_rows = set(fastnn.available_backends())
    from fastnn.bench import anchors

    for a in anchors.ANCHORS:
        if anchors.available(a):
            expected_rows.add(a)
    for wl in res["workloads"]:
        assert f"## {wl['id']} — " in md
        if not wl["available"]:
            assert wl["missing"] and f"not available (missing: {', '.join(wl['missing'])})" in md
            continue
        assert wl["cases"]
        for case in wl["cases"]:
            want = {"numpy", "numba", "cython"} & expected_rows
            if "torch" in expected_rows:
                want.add("torch")
            if case["kind"] == "mlp" and "sklearn" in expected_rows:
                want.add("sklearn")
            assert set(case["rows"]) == want, case["key"]
            for name, r in case["rows"].items():
                assert r["error"] is None, (case["key"], name, r["error"])
                assert r["first_call"] > 0
    _check_consistent(res)
    # W1 and W2 always exist
    assert res["workloads"][0]["available"] and res["workloads"][1]["available"]


def test_compare_a_new_run_against_a_saved_one(tmp_path, capsys):
    old = _synthetic()
    write_json(old, tmp_path / "old.json")
    out = tmp_path / "run"
    assert (
        main(
            [
                "bench",
                "--quick",
                "--tiny",
                "--no-progress",
                "--workloads",
                "W1",
                "--backends",
                "numpy",
                "--threads",
                "1",
                "--out",
                str(out),
                "--compare",
                str(tmp_path / "old.json"),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "Comparing this run against" in text
    new = load_results(out / "results.json")
    cmp = compare(old, new)
    # the only row in both runs is W1 matmul n=64 / numpy; the rest is in one run only
    matched = cmp["faster"] + cmp["slower"] + cmp["unchanged"]
    assert [(e["case"], e["row"]) for e in matched] == [("W1 matmul n=64", "numpy")]
    e = matched[0]
    new_med = new["workloads"][0]["cases"][0]["rows"]["numpy"]["median"]
    assert e["change"] == pytest.approx(2e-5 / new_med)
    assert "W1 matmul n=64 / torch" in cmp["only_old"]
    assert "W1 matmul 32x64x128 / numpy" in cmp["only_new"]


def test_run_restores_the_thread_count():
    before = fastnn.get_num_threads()
    other = 1 if before != 1 else 2
    fastnn.bench.run_bench(workloads=["W1"], backends=["numpy"], threads=other, tiny=True, progress=False, repeat=1)
    assert fastnn.get_num_threads() == before


def test_absent_anchor_libraries_are_noted_not_errors(monkeypatch):
    from fastnn.bench import anchors

    monkeypatch.setattr(anchors, "_MODULES", {"torch": "fastnn_no_such_torch", "sklearn": "fastnn_no_such_sk"})
    res = fastnn.bench.run_bench(workloads=["W1"], tiny=True, progress=False, repeat=1)
    assert res["settings"]["anchors"] == []
    assert res["anchor_status"]["torch"].startswith("not installed")
    for case in res["workloads"][0]["cases"]:
        assert set(case["rows"]) == set(fastnn.available_backends())
        assert all(r["speedup_vs_torch"] is None for r in case["rows"].values())
    md = markdown(res)
    assert "torch not installed (ModuleNotFoundError)" in md


LAYER_WORKLOADS = ["W3", "W4", "W5", "W6", "LSTM", "CONV"]


@pytest.mark.parametrize("wid", LAYER_WORKLOADS)
def test_layer_workload_steps_do_real_work(wid):
    """Training steps lower the loss on their fixed batch; fwd+bwd and forward steps are repeatable."""
    wl = workloads.get_workloads([wid])[0]
    miss = workloads.missing(wl)
    if miss:
        pytest.skip(f"{wid} not in this build (missing: {', '.join(miss)})")
    case = wl.cases(True, True)[0]
    with fastnn.use_backend("numpy"):
        step = workloads.build_step(case)
        first = step()
        values = [step() for _ in range(15)]
    if case.kind in ("mlp", "cnn", "rnn"):
        assert all(math.isfinite(v) for v in [first] + values)
        assert values[-1] < first  # the optimizer steps on the same batch
    elif case.kind == "lstm":
        assert values[-1] == pytest.approx(first, rel=1e-6)  # no optimizer: same loss every call
    else:
        p = case.params
        assert first.shape == (p["b"], p["o"], p["hw"], p["hw"])
        np.testing.assert_array_equal(values[-1], first)


@pytest.mark.parametrize("kind", ["mlp", "rnn"])
def test_torch_anchor_steps_train(kind):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    from fastnn.bench import anchors

    case = next(c for w in workloads.WORKLOADS for c in w.cases(True, True) if c.kind == kind)
    step = anchors.build_anchor("torch", case)
    first = float(step().detach())
    for _ in range(15):
        last = float(step().detach())
    assert last < first
    assert isinstance(step(), torch.Tensor)


def test_sklearn_anchor_is_timed_per_batch():
    pytest.importorskip("sklearn", reason="scikit-learn is not installed")
    from fastnn.bench import anchors

    case = workloads.get_workloads(["W3"])[0].cases(True, True)[0]
    step = anchors.build_anchor("sklearn", case)
    assert step.steps_per_call == anchors.SKLEARN_BATCHES
    clf = step.model
    n0 = clf.t_
    step()
    assert clf.t_ - n0 == anchors.SKLEARN_BATCHES * case.params["b"]  # samples seen: one epoch of batches


def test_slow_cases_get_fewer_rounds_within_budget():
    cfg = runner.settings_for(quick=True)
    rows = [runner._Row(n, "backend", None, None) for n in ("a", "b")]
    for r in rows:
        r.step = lambda: None
    rows[0].block_estimate, rows[1].block_estimate = 0.01, 0.01
    assert runner._rounds(rows, cfg) == cfg["repeat"] == 5  # 0.1 s of the 3 s budget
    rows[1].block_estimate = 0.7  # 0.71 s a round: 4 rounds fit
    assert runner._rounds(rows, cfg) == 4
    rows[1].block_estimate = 10.0
    assert runner._rounds(rows, cfg) == runner.MIN_ROUNDS == 3  # never fewer than 3


def test_report_flags_a_busy_machine():
    res = _synthetic()
    res["machine"]["context"]["usable_cpus"] = 2
    res["machine"]["loadavg"] = {"start": [0.4, 0.3, 0.2], "end": [2.5, 1.0, 0.5]}  # 2 of it: this run
    assert "load average (1 min) at start / end: 0.4 / 2.5 on 2 CPUs\n" in markdown(res)
    res["machine"]["loadavg"] = {"start": [6.0, 5.0, 4.0], "end": [7.0, 5.0, 4.0]}
    assert "6.0 / 7.0 on 2 CPUs — ⚠ other processes kept the machine busy" in markdown(res)


def test_compare_with_a_missing_or_foreign_file_fails_cleanly(tmp_path, capsys):
    assert main(["bench", "--compare", str(tmp_path / "nope.json"), str(tmp_path / "nope2.json")]) == 2
    (tmp_path / "x.json").write_text("[1, 2]")
    assert main(["bench", "--compare", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("fastnn bench: cannot compare:") == 2 and "not a fastnn bench results.json" in err


def test_plans_section_tiny():
    """The compiled-plans section: W3 loop and plan rows per compiled backend, predict, scikit-learn, markdown."""
    from fastnn.bench import plans_section

    compiled = [b for b in ("cython", "numba") if b in fastnn.available_backends()]
    if not compiled:
        pytest.skip("no compiled backend")
    res = plans_section.measure(compiled, quick=True, tiny=True)
    assert "error" not in res, res.get("error")
    assert set(res["w3"]) == {f"{b} {k}" for b in compiled for k in ("loop", "plan")}
    assert all(t > 0 for t in res["w3"].values()) and res["gemm1_gflops"] > 0
    for wid in ("W5", "W6"):  # both compiled backends have plans for W5 and W6
        rows = {f"{b} {t}t {k}" for b in compiled for t in (1, 2) for k in ("loop", "plan")}
        assert set(res["layers"].get(wid, {})) == rows and all(v > 0 for v in res["layers"][wid].values())
    assert res["unsupported"] == {}
    assert set(res["predict"]) == {"two products (BLAS)"} | {f"{b} predict" for b in compiled}
    md = "\n".join(plans_section.markdown_lines(res))
    assert "## Compiled training plans" in md and "| cython plan |" in md.replace("numba", "cython")
    for b in compiled:
        assert f"| W5 | {b} 2t plan |" in md and f"| W6 | {b} 1t loop |" in md
    if res.get("sklearn"):
        assert "MLPClassifier" in md and set(res["sklearn"]) == {"digits", "20k"}
    assert plans_section.markdown_lines(None) == []
    assert "error: boom" in "\n".join(plans_section.markdown_lines({"error": "boom"}))


@pytest.mark.parametrize("wid", ["LAYERS", "NORM", "MID"])
def test_optional_layer_workloads_run_in_every_backend_and_torch(wid):
    """The optional LAYERS, NORM and MID workloads: a step per backend (and PyTorch), finite and repeatable."""
    from fastnn.bench import anchors

    (wl,) = workloads.get_workloads([wid])
    assert wid in workloads.OPTIONAL_WORKLOADS and wid not in [w.id for w in workloads.get_workloads()]
    for case in wl.cases(True, True):
        for b in fastnn.available_backends():
            with fastnn.use_backend(b):
                step = workloads.build_step(case)
                first = np.asarray(step(), dtype=float)
                again = np.asarray(step(), dtype=float)
            assert np.isfinite(first).all() and np.isfinite(again).all(), (case.key, b)
            if case.kind == "cnn_bn":
                assert float(again) < float(first) + 1.0  # a training step on a fixed batch: no blow-up
            elif case.kind == "mlp":
                assert float(again) < float(first)  # SGD on a fixed batch lowers the loss
            elif case.kind != "bilstm":
                np.testing.assert_allclose(again, first, rtol=1e-4, atol=1e-5)  # layers without update: repeatable
        if anchors.available("torch"):
            assert anchors.build_anchor("torch", case)() is not None
        if wid == "NORM":  # the limit: one copy of the case's own float32 batch, into a preallocated array
            from fastnn.bench import runner

            kind = {"batchnorm": "batch", "batchnorm2d": "batch2d", "layernorm": "layer"}[case.kind]
            assert case.copy_bytes == 4 * np.prod(workloads._norm_layer(fastnn.nn, kind, case.params)[1])
            row = runner._limit_row("copy_time", case, {})
            row.build()()
            entry = runner._limit_entry("copy_time", {"median": 1e-5}, {})
            assert entry["unit"] == "s" and entry["value"] == 1e-5


def test_contended_section_tiny(tmp_path, capsys):
    # The machinery of `fastnn bench --contended` (tiny sizes and windows: nothing is judged by
    # its figures here): a probe process per workload takes every condition in turn, with a busy
    # process and a second training job paused and resumed around it. About 10 s.
    from fastnn.bench import contended

    backend = "cython" if fastnn.backend_status()["cython"] == "available" else "numpy"
    rc = main(
        [
            "bench",
            "--contended",
            "--tiny",
            "--backends",
            backend,
            "--workloads",
            "W3",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    assert rc == 0
    res = json.loads((tmp_path / "contended.json").read_text())
    runs = res["runs"][backend]["W3"]
    assert set(runs) == {c[0] for c in contended.CONDITIONS}
    for label, _competitor, larger, adaptive in contended.CONDITIONS:
        r = runs[label]
        assert len(r["rounds"]) == 1 and r["median_s"] == r["rounds"][0] > 0
        team = r["team"][0]
        assert team == 1 if not larger else (team == 2 if not adaptive else 1 <= team <= 2)
    text = (tmp_path / "contended.md").read_text()
    assert f"### {backend}" in text and "| W3 |" in text
    assert "Training on a busy machine" in capsys.readouterr().out
    # what --contended refuses
    assert main(["bench", "--contended", "--workloads", "W1", "--out", str(tmp_path)]) == 2
    assert main(["bench", "--contended", "--threads", "1", "--out", str(tmp_path)]) == 2
    assert "give --threads 2 or more" in capsys.readouterr().err


def test_plans_section_rows_run_untimed_before_each_timed_call():
    """With a pause each timed call follows an untimed run of the same row (the previous row's spinning BLAS
    workers wind down meanwhile); only the timed calls' results enter the medians."""
    from fastnn.bench import plans_section

    calls = []

    def row(name, value):
        def fn():
            calls.append(name)
            return value if calls.count(name) % 2 == 0 else 100.0  # untimed runs return a wild value

        return fn

    res = plans_section._median_times({"a": row("a", 1.0), "b": row("b", 2.0)}, rounds=3, settle=1e-9)
    assert calls == ["a", "a", "b", "b"] * 3
    assert res == {"a": 1.0, "b": 2.0}
    calls.clear()
    assert plans_section._median_times({"a": lambda: calls.append("a") or 1.0}, rounds=2) == {"a": 1.0}
    assert calls == ["a", "a"]


def _call_probe(path, cold_s, warm_s, why=None):
    """A first-call probe result as :func:`coldstart.measure_calls` stores it (one run)."""
    run = [
        {"path": path, "why": why, "ok": True, "load_s": 1.0, "load_cpu_s": 1.1, "call_s": t, "call_cpu_s": t + 0.5}
        for t in (cold_s, warm_s)
    ]
    median = {c: {k: v for k, v in r.items() if k.endswith("_s")} for c, r in zip(("cold", "warm"), run)}
    return {"runs": [run], "median": median, "path": path, "why": why, "ok": True}


def _cold_result(probes, step_error=None):
    from fastnn.bench.coldstart import CALL_PROBLEM

    cold = {
        "repeat": 1,
        "settle": False,
        "workloads": {"W3": {"case": "W3 mlp", "runs": [], "median": {"load_s": 0.7, "first_step_s": 3.0}}},
        "calls": {"problem": dict(CALL_PROBLEM), "repeat": 1, "probes": probes},
    }
    if step_error:
        cold["error"] = step_error
    return cold


def test_cold_start_section_renders_first_fit_and_predict():
    from fastnn.bench import coldstart

    probes = {
        "plan": _call_probe("plan", 6.5, 0.25),
        "loop": _call_probe("loop", 2.75, 0.5, why="plan turned off in the probe"),
        "predict": _call_probe("forward plan", 2.5, 0.0125),
    }
    md = "\n".join(coldstart.markdown_lines(_cold_result(probes)))
    assert "| W3 mlp | 700 ms | 3 s |" in md  # the step table is still there
    assert "### First `fit` and `predict`" in md and "2,048 synthetic rows" in md and "100,000 rows" in md
    assert "| `fit` | compiled plan | 1 s | 6.5 s | 7 s | 1 s | 250 ms | 750 ms |" in md
    assert "| `fit`, plan turned off | per-step loop | 1 s | 2.75 s | 3.25 s | 1 s | 500 ms | 1 s |" in md
    assert "| `predict`, 100,000 rows | forward plan | 1 s | 2.5 s | 3 s | 1 s | 12.5 ms | 512 ms |" in md
    # a fit that gives the plan up is labelled by the way it went, with fit's reason
    probes = {"plan": _call_probe("loop", 3.0, 0.5, why="the network is too large")}
    md = "\n".join(coldstart.markdown_lines(_cold_result(probes)))
    assert "| `fit` | per-step loop: fit gives the plan up (the network is too large) |" in md
    assert "### First `fit`\n" in md  # no predict probe, no word of it
    assert "compiled plan" not in md and "`fastnn.predict`" not in md
    assert coldstart.call_lines(None) == [] and coldstart.call_lines({"probes": {}}) == []


def test_cold_start_section_renders_errors_as_lines():
    from fastnn.bench import coldstart

    probes = {"plan": {"error": "RuntimeError: boom"}, "predict": _call_probe("forward plan", 2.5, 0.0125)}
    md = "\n".join(coldstart.markdown_lines(_cold_result(probes, step_error="TimeoutExpired: W3")))
    assert "error: TimeoutExpired: W3" in md and "| W3 mlp |" not in md  # the step probes failed
    assert "- `fit`: error: RuntimeError: boom" in md
    assert "| `predict`, 100,000 rows | forward plan |" in md  # the other probe still renders
    md = "\n".join(coldstart.call_lines({"problem": coldstart.CALL_PROBLEM, "repeat": 1, "probes": probes}))
    assert md.count("| `fit`") == 0


def test_first_call_probe_errors_are_recorded_not_raised(monkeypatch):
    from fastnn.bench import coldstart

    calls = []

    def fake(kind, cache, warm, threads, timeout):
        calls.append((kind, warm))
        if kind == "plan":
            raise RuntimeError("first-call probe (plan, empty cache) failed (exit 1): boom")
        return {"path": "forward plan", "why": None, "ok": True, "load_s": 1.0, "call_s": 2.0 if not warm else 0.5}

    monkeypatch.setattr(coldstart, "_call", fake)
    res = coldstart.measure_calls(1, quick=False, repeat=2, kinds=["plan", "predict"])
    assert res["probes"]["plan"] == {
        "error": "RuntimeError: first-call probe (plan, empty cache) failed (exit 1): boom"
    }
    pred = res["probes"]["predict"]
    assert pred["median"] == {"cold": {"load_s": 1.0, "call_s": 2.0}, "warm": {"load_s": 1.0, "call_s": 0.5}}
    assert pred["path"] == "forward plan" and len(pred["runs"]) == 2
    # each run: an empty cache, then a warm one; the failing probe stops at its first process
    assert calls == [("plan", False)] + [("predict", False), ("predict", True)] * 2
    assert coldstart.measure_calls(1, quick=True)["repeat"] == 1 and coldstart.CALL_PROBES[1] == ("plan",)


@pytest.mark.slow
def test_first_fit_probe_runs_the_plan_in_new_processes():
    """One real probe of the first fit: a new process with an empty Numba cache, then one with its cache."""
    from conftest import _require_or_skip

    from fastnn.bench import coldstart

    _require_or_skip("numba")
    res = coldstart.measure_calls(1, quick=True, kinds=["plan"], timeout=300)
    probe = res["probes"]["plan"]
    assert "error" not in probe, probe.get("error")
    assert probe["path"] == "plan" and probe["why"] is None and probe["ok"]
    ((cold, warm),) = probe["runs"]
    assert (cold["cache"], warm["cache"]) == ("empty", "warm") and cold["path"] == warm["path"] == "plan"
    for r in (cold, warm):
        assert all(math.isfinite(r[k]) and r[k] > 0 for k in ("load_s", "load_cpu_s", "call_s", "call_cpu_s"))
        assert math.isfinite(r["loss"])
    assert cold["loss"] == pytest.approx(warm["loss"], rel=1e-4)  # the same training, whichever process
    assert "| `fit` | compiled plan |" in "\n".join(coldstart.call_lines(res))
