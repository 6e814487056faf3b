"""The ``fastnn`` command line."""

import subprocess
import sys

import fastnn
from fastnn.cli import build_parser, machine_info, main


def test_info_lists_every_backend_with_status(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for name in ("numpy", "numba", "cython"):
        assert name in out
    assert "threads" in out


def test_machine_info_has_versions_and_backends():
    info = machine_info()
    assert info["numpy"]
    assert set(info["backends"]) == {"numpy", "numba", "cython"}
    assert info["threads"] == fastnn.get_num_threads()


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "fastnn", "info"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "backends:" in out.stdout


def test_parser_has_subcommands():
    parser = build_parser()
    assert parser.parse_args(["info"]).command == "info"


def test_version_is_written_once():
    """pyproject.toml takes the version from fastnn.__version__; the installed metadata agrees."""
    import importlib.metadata
    import pathlib
    root = pathlib.Path(fastnn.__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if pyproject.exists():
        text = pyproject.read_text()
        assert 'dynamic = ["version"]' in text and 'attr = "fastnn.__version__"' in text
    assert importlib.metadata.version("fastnn") == fastnn.__version__
