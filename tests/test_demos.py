"""The demos run end to end through the ``fastnn`` command, and ``import fastnn`` stays cheap."""

import os

import pytest
from conftest import run_python

import fastnn
from fastnn import cli


def test_demo_approx_writes_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert (
        cli.main(
            [
                "demo",
                "approx",
                "--out",
                str(tmp_path / "plots"),
                "--epochs",
                "150",
                "--no-progress",
                "--backend",
                "numpy",
            ]
        )
        == 0
    )
    png = tmp_path / "plots" / "approx.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    out = capsys.readouterr().out
    err = float(out.split("max |error|")[1].split()[0])
    assert err < 0.1  # one hidden layer of 32 tanh units fits sin closely


def test_demo_digits_runs(capsys):
    pytest.importorskip("sklearn")
    assert cli.main(["demo", "digits", "--epochs", "3", "--no-progress", "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    acc = float(out.split("test accuracy:")[1].split()[0])
    assert 0.85 < acc <= 1.0


def test_import_fastnn_is_cheap():
    code = (
        "import sys, fastnn; from fastnn import nn, optim; "
        "heavy = [m for m in ('numba', 'sklearn', 'matplotlib', 'tqdm', 'torch', 'numpy.random') "
        "if m in sys.modules]; print(heavy)"
    )
    out = run_python(code, check=True, cwd=os.path.dirname(os.path.dirname(fastnn.__file__))).stdout
    assert out.strip() == "[]"


def test_demo_without_its_extra_says_how_to_install_before_training(monkeypatch, capsys):
    import fastnn.demos as demos

    monkeypatch.setattr(demos, "_installed", lambda name: name != "sklearn")
    assert cli.main(["demo", "digits", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "needs scikit-learn" in err and 'pip install ".[demo]"' in err and "epoch" not in err


def test_demo_without_matplotlib_offers_no_plot(monkeypatch, capsys, tmp_path):
    import fastnn.demos as demos

    monkeypatch.setattr(demos, "_installed", lambda name: name != "matplotlib")
    assert cli.main(["demo", "approx", "--out", str(tmp_path)]) == 2
    assert "--no-plot" in capsys.readouterr().err
    assert cli.main(["demo", "approx", "--no-plot", "--epochs", "5", "--no-progress", "--backend", "numpy"]) == 0
    assert "max |error|" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())


def test_demo_text_trains_exports_and_runs_in_onnxruntime(tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the demo extra has it)")
    args = ["demo", "text", "--epochs", "4", "--train", "1500", "--no-progress", "--out", str(tmp_path)]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    acc = float(out.split("test accuracy")[1].split()[0])
    assert acc > 0.85  # order matters ("not" flips the next word): a recurrent model learns it
    assert "predictions agree on 100.0%" in out
    assert (tmp_path / "text.onnx").stat().st_size > 10_000


def test_demo_text_without_onnx_offers_no_onnx(monkeypatch, capsys):
    import fastnn.demos as demos

    monkeypatch.setattr(demos, "_installed", lambda name: name not in ("onnx", "onnxruntime"))
    assert cli.main(["demo", "text", "--no-progress"]) == 2
    assert "--no-onnx" in capsys.readouterr().err
    assert cli.main(["demo", "text", "--no-onnx", "--epochs", "1", "--train", "300", "--no-progress"]) == 0
    assert "test accuracy" in capsys.readouterr().out
