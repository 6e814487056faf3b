"""The scikit-learn section of ``fastnn bench`` and ``fastnn demo sklearn``, on tiny sizes.

No timing is asserted (speed belongs in the benchmark): the checks are that
the section runs both libraries and that its ratios follow from the medians
it stores. About 5 s.
"""

import re

import pytest

pytest.importorskip("sklearn")

from fastnn import cli
from fastnn.bench import markdown, run_bench
from fastnn.bench.workloads import WORKLOADS, get_workloads

# The whole module is slow (runs the benchmark section and the demo): `-m "not slow"` leaves it out.
pytestmark = pytest.mark.slow


def test_sklearn_section_is_optional_and_selectable():
    assert "SKL" not in [w.id for w in WORKLOADS]  # not in the default run
    assert [w.id for w in get_workloads(["skl"])] == ["SKL"]
    with pytest.raises(ValueError, match="choose from .*SKL"):
        get_workloads(["nope"])


def test_sklearn_section_times_both_and_reports_their_ratio():
    res = run_bench(workloads=["SKL"], backends=["numpy", "sklearn"], tiny=True, repeat=1, progress=False)
    cases = res["workloads"][0]["cases"]
    assert [c["kind"] for c in cases] == ["skl_fit", "skl_fit", "skl_fit", "skl_predict_proba"]
    for case in cases:
        assert case["rows"]["numpy"]["median"] > 0 and case["rows"]["sklearn"]["median"] > 0
        assert "torch" not in case["rows"]  # PyTorch has no equivalent here
    text = markdown(res)
    section = text.split("## fastnn.sklearn against scikit-learn")[1]
    for case in cases:
        line = next(ln for ln in section.splitlines() if ln.startswith(f"| {case['name']} |"))
        ratio = float(re.findall(r"([0-9.]+)×", line)[-1])
        expected = case["rows"]["sklearn"]["median"] / case["rows"]["numpy"]["median"]
        assert ratio == pytest.approx(expected, abs=0.006)


def test_demo_prints_both_fits(capsys):
    assert cli.main(["demo", "sklearn", "--max-iter", "3", "--dtype", "float64", "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    sk = re.search(r"scikit-learn .* (\d+) epochs +([0-9.]+) s +test accuracy ([0-9.]+)", out)
    ours = re.search(r"fastnn +fastnn\.sklearn .* (\d+) epochs +([0-9.]+) s +test accuracy ([0-9.]+)", out)
    assert sk and ours, out
    assert sk.group(1) == ours.group(1) == "3"
    assert sk.group(3) == ours.group(3)  # float64: scikit-learn's model, so its accuracy
    assert "x faster" in out
