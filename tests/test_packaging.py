"""Packaging: the build without a compiler, per-configuration rebuilds, the wheel.

These build the package from a copy of the source tree, so they are slow
(each build takes one to two minutes on two cores) and need the source tree.
The wheel test also creates a virtual environment and installs the wheel's
dependencies into it from the package index: about three minutes in all.
"""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def _source_tree(tmp_path):
    if not (ROOT / "setup.py").exists():
        pytest.skip("needs the source tree")
    work = tmp_path / "src"
    work.mkdir()
    for item in ("setup.py", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "kernels"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / item)
    shutil.copytree(
        ROOT / "fastnn",
        work / "fastnn",
        ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__", "BUILD_SKIPPED.txt"),
    )
    return work


def _sdist(tmp_path):
    """Build the sdist of a copy of the tree with its tests, benchmarks and docs; its path."""
    work = _source_tree(tmp_path)
    for item in ("tests", "benches", "docs", "CHANGELOG.md", "CONTRIBUTING.md"):
        src = ROOT / item
        if src.exists():
            (shutil.copytree if src.is_dir() else shutil.copy)(
                src, work / item, **({"ignore": shutil.ignore_patterns("__pycache__")} if src.is_dir() else {})
            )
    build = _run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path / "sdist")], work)
    assert build.returncode == 0, build.stderr[-3000:]
    (sdist,) = (tmp_path / "sdist").glob("*.tar.gz")
    return sdist


def _run(cmd, cwd, env=None, timeout=900):
    return subprocess.run(
        cmd, cwd=cwd, env=dict(os.environ, **(env or {})), capture_output=True, text=True, timeout=timeout
    )


def test_without_a_compiler_the_package_builds_without_the_extension(tmp_path):
    work = _source_tree(tmp_path)
    # FASTNN_REQUIRE_EXT cleared: CI sets it, and this build must be the lenient one
    build = _run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        work,
        {"CC": "/nonexistent/cc", "FASTNN_REQUIRE_EXT": ""},
    )
    assert build.returncode == 0, build.stderr[-3000:]
    lines = [line for line in build.stderr.splitlines() if line.startswith("fastnn: the cython backend is not built")]
    assert len(lines) == 1, build.stderr[-3000:]
    assert "FASTNN_REQUIRE_EXT=1" in lines[0]
    assert not list((work / "fastnn" / "_ext").glob("_kernels*.so"))
    assert (work / "fastnn" / "_ext" / "BUILD_SKIPPED.txt").read_text().startswith("not built at install")
    code = (
        "import numpy as np, fastnn\n"
        "status = fastnn.backend_status()\n"
        "print('cython:', status['cython'])\n"
        "assert status['numpy'] == status['numba'] == 'available'\n"
        "for name in ('numpy', 'numba'):\n"
        "    with fastnn.use_backend(name):\n"
        "        assert np.allclose(fastnn.ops.relu(np.array([-1.0, 2.0])), [0.0, 2.0])\n"
    )
    env = {"PYTHONPATH": str(work), "FASTNN_REQUIRE_BACKENDS": ""}
    run = _run([sys.executable, "-c", code], work, env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "cython: ImportError: compiled kernels not built at install" in run.stdout
    info = _run([sys.executable, "-m", "fastnn", "info"], work, env, timeout=600)
    assert "not built at install" in info.stdout, info.stdout

    # FASTNN_REQUIRE_EXT=1: the same failure is an error, for CI and packagers
    strict = _run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        work,
        {"CC": "/nonexistent/cc", "FASTNN_REQUIRE_EXT": "1"},
    )
    assert strict.returncode != 0


def test_a_changed_build_flag_rebuilds(tmp_path):
    """Objects are kept per configuration: toggling FASTNN_NO_OPENMP never reuses objects of the other one."""
    if shutil.which(os.environ.get("CC", "cc").split()[0]) is None:
        pytest.skip("needs a C compiler")
    from fastnn._ext import _kernels

    if not _kernels.has_openmp():
        pytest.skip("this compiler builds without OpenMP anyway")
    work = _source_tree(tmp_path)
    check = "from fastnn._ext import _kernels; print('openmp', _kernels.has_openmp())"
    for no_openmp, want in (("1", "openmp False"), ("", "openmp True"), ("1", "openmp False")):
        build = _run(
            [sys.executable, "setup.py", "build_ext", "--inplace", "-q"],
            work,
            {"FASTNN_NO_OPENMP": no_openmp, "FASTNN_REQUIRE_EXT": "1"},
        )
        assert build.returncode == 0, build.stderr[-3000:]
        run = _run([sys.executable, "-c", check], work, {"PYTHONPATH": str(work)}, timeout=300)
        assert run.stdout.strip() == want, (no_openmp, run.stdout, run.stderr[-2000:])


def test_wheel_is_manylinux_stripped_and_runs_without_a_compiler(tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("the manylinux check is for Linux wheels")
    auditwheel = shutil.which("auditwheel")
    if auditwheel is None:
        pytest.skip("auditwheel is not installed (it comes with the test extra on Linux)")
    work = _source_tree(tmp_path)
    dist, house = tmp_path / "dist", tmp_path / "wheelhouse"
    build = _run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-w", str(dist)],
        work,
        {"FASTNN_REQUIRE_EXT": "1"},
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (raw,) = dist.glob("*.whl")
    repair = _run([auditwheel, "repair", str(raw), "-w", str(house)], work)
    assert repair.returncode == 0, repair.stderr[-3000:]
    (wheel,) = house.glob("*.whl")
    assert "manylinux" in wheel.name
    show = _run([auditwheel, "show", str(wheel)], work)
    assert show.returncode == 0 and "manylinux" in show.stdout, show.stdout + show.stderr

    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert any(n.endswith("licenses/LICENSE") or n.endswith("/LICENSE") for n in names), names
        (so,) = [n for n in names if n.startswith("fastnn/_ext/_kernels") and n.endswith(".so")]
        (tmp_path / "kernels.so").write_bytes(zf.read(so))
    if shutil.which("readelf"):
        sections = _run(["readelf", "-S", str(tmp_path / "kernels.so")], tmp_path).stdout
        assert ".debug_info" not in sections and ".symtab" not in sections

    # a clean environment, no compiler on the path: the wheel brings all three backends
    venv = tmp_path / "venv"
    assert _run([sys.executable, "-m", "venv", str(venv)], tmp_path).returncode == 0
    py = venv / "bin" / "python"
    install = _run([str(py), "-m", "pip", "install", "-q", str(wheel)], tmp_path, timeout=1200)
    assert install.returncode == 0, install.stderr[-3000:]
    code = (
        "import numpy as np, fastnn\n"
        "for name in ('cython', 'numba', 'numpy'):\n"
        "    with fastnn.use_backend(name):\n"
        "        a = np.arange(12.0, dtype=np.float32).reshape(3, 4)\n"
        "        assert np.allclose(fastnn.ops.matmul(a, a, trans_b=True), a @ a.T)\n"
        "print(sorted(fastnn.available_backends()))\n"
    )
    env = {"CC": "/nonexistent/cc", "PATH": str(venv / "bin"), "PYTHONPATH": "", "FASTNN_REQUIRE_BACKENDS": ""}
    run = _run([str(py), "-c", code], tmp_path, env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().endswith("['cython', 'numba', 'numpy']")


def test_sdist_carries_the_sources_and_its_tests(tmp_path):
    sdist = _sdist(tmp_path)
    import tarfile

    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    for needed in (
        "LICENSE",
        "README.md",
        "CHANGELOG.md",
        "setup.py",
        "pyproject.toml",
        "kernels/_kernels.pyx",
        "kernels/fnn.pxd",
        "kernels/lib/runtime.c",
        "tests/conftest.py",
        "tests/isolated.py",
        "tests/test_properties.py",
        "benches/conftest.py",
    ):
        assert needed in names, needed
    assert not any(n.endswith((".so", ".o")) for n in names)
    assert "kernels/_kernels.c" not in names


def test_sdist_installs_without_a_compiler_and_runs_its_tests(tmp_path):
    """The user's path with no compiler: ``pip install`` of the sdist into a new venv, then its own tests.

    pip builds in isolation (fetching the build requirements from the
    package index), the extension fails to compile, the package installs
    without it, and the tests shipped in the sdist pass against the
    installed package with the numpy and numba backends (the cython ones skip).
    """
    import tarfile

    sdist = _sdist(tmp_path)
    venv = tmp_path / "venv"
    assert _run([sys.executable, "-m", "venv", str(venv)], tmp_path).returncode == 0
    py = venv / "bin" / "python"
    no_cc = {"CC": "/nonexistent/cc", "FASTNN_REQUIRE_EXT": "", "PYTHONPATH": ""}
    install = _run(
        [str(py), "-m", "pip", "install", "-q", str(sdist), "pytest", "hypothesis"], tmp_path, no_cc, timeout=1500
    )
    assert install.returncode == 0, install.stderr[-3000:]
    unpacked = tmp_path / "unpacked"
    with tarfile.open(sdist) as tf:
        tf.extractall(unpacked, filter="data")
    (root,) = unpacked.iterdir()
    tests = [str(root / "tests" / name) for name in ("test_ops_dense.py", "test_compiled_plan.py", "test_io.py")]
    env = {**no_cc, "FASTNN_REQUIRE_BACKENDS": "", "PATH": str(venv / "bin") + os.pathsep + os.environ["PATH"]}
    run = _run(
        [str(py), "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "not slow", *tests],
        tmp_path,
        env,
        timeout=1500,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "failed" not in run.stdout
    # the tests ran against the installed package, which has no extension
    where = _run(
        [str(py), "-c", "import fastnn; print(fastnn.__file__, fastnn.backend_status()['cython'])"], tmp_path, env
    )
    assert str(venv) in where.stdout and "not built at install" in where.stdout, where.stdout + where.stderr
