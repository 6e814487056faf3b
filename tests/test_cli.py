"""The ``fastnn`` command line."""

import subprocess
import sys

import pytest

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


@pytest.mark.slow
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

    import tomllib

    pyproject = pathlib.Path(fastnn.__file__).resolve().parent.parent / "pyproject.toml"
    if not pyproject.exists():
        pytest.skip("not run from a source checkout")
    meta = tomllib.loads(pyproject.read_text())
    assert "version" not in meta["project"] and "version" in meta["project"]["dynamic"]
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "fastnn.__version__"}
    assert importlib.metadata.version(meta["project"]["name"]) == fastnn.__version__


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"fastnn {fastnn.__version__}"


def test_no_arguments_prints_help_not_an_error(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: fastnn") and "info" in out and "bench" in out and "demo" in out
