"""The ``fastnn demo sequence`` end-to-end training."""

import numpy as np
import pytest

from fastnn import cli
from fastnn.demos import sequence


def test_demo_is_discovered():
    assert cli._demo_modules()["sequence"] is sequence


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_demo_learns_better_than_naive_forecast(cell):
    parser = cli.build_parser()
    args = parser.parse_args(
        [
            "demo",
            "sequence",
            "--cell",
            cell,
            "--epochs",
            "15",
            "--train",
            "256",
            "--seq-len",
            "30",
            "--hidden",
            "16",
            "--no-plot",
        ]
    )
    result = sequence.train(args, log=lambda *a: None)
    assert result["history"][-1] < result["history"][0] / 5
    assert result["test_mse"] < 0.7 * result["naive_mse"]
    assert result["pred_test"].shape == (30, 128, 1)


def test_demo_command_writes_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    rc = cli.main(
        [
            "demo",
            "sequence",
            "--backend",
            "numpy",
            "--epochs",
            "2",
            "--train",
            "64",
            "--seq-len",
            "20",
            "--hidden",
            "8",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0
    png = tmp_path / "sequence.png"
    assert png.exists() and png.stat().st_size > 10_000
    assert "test mse" in capsys.readouterr().out


def test_make_data_shapes_and_targets():
    x, y = sequence.make_data(5, 12, 0.0, np.random.default_rng(0))
    assert x.shape == y.shape == (12, 5, 1)
    np.testing.assert_allclose(x[1:], y[:-1], atol=1e-6)  # without noise the target is the next input
