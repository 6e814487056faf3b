"""Optimizer/schedule state_dicts, checkpoint files and exact resume in one process."""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import fastnn
from fastnn import nn, optim

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _data(n=100, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    return X, y


def _model(seed=0):
    fastnn.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))


@pytest.mark.parametrize(
    "make",
    [
        lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
        lambda p: optim.SGD(p, lr=0.1),
        lambda p: optim.Adam(p, lr=1e-2, betas=(0.8, 0.99)),
        lambda p: optim.AdamW(p, lr=1e-2),
    ],
)
def test_optimizer_state_dict_round_trip_continues_identically(make):
    X, y = _data()
    a = _model()
    opt_a = make(a.parameters())
    fastnn.fit(a, X, y, optimizer=opt_a, epochs=1, batch_size=10, seed=0, progress=False)
    b = _model()
    b.load_state_dict(a.state_dict())
    opt_b = make(b.parameters())
    opt_b.lr = 123.0
    opt_b.load_state_dict(opt_a.state_dict())
    assert opt_b.lr == opt_a.lr
    for m, o in ((a, opt_a), (b, opt_b)):
        fastnn.fit(m, X, y, optimizer=o, epochs=1, batch_size=10, seed=1, progress=False)
    for pa, pb in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(pa.data, pb.data)


def test_optimizer_load_state_dict_refuses_a_mismatch():
    m = _model()
    sgd = optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="Adam"):
        optim.Adam(m.parameters()).load_state_dict(sgd.state_dict())
    with pytest.raises(ValueError, match="state"):
        optim.SGD(m.parameters(), lr=0.1).load_state_dict(sgd.state_dict())
    with pytest.raises(ValueError, match="parameters|needs"):
        optim.SGD(_model().parameters()[:2], lr=0.1, momentum=0.9).load_state_dict(sgd.state_dict())
    with pytest.raises(ValueError, match="not an optimizer"):
        sgd.load_state_dict({"lr": 1})


@pytest.mark.parametrize(
    "make",
    [lambda o: optim.StepLR(o, 2, 0.5), lambda o: optim.CosineAnnealingLR(o, 5), lambda o: optim.ExponentialLR(o, 0.9)],
)
def test_schedule_state_dict(make):
    o1 = optim.SGD(_model().parameters(), lr=0.1)
    s1 = make(o1)
    for _ in range(3):
        s1.step()
    o2 = optim.SGD(_model().parameters(), lr=0.1)
    s2 = make(o2)
    s2.load_state_dict(s1.state_dict())
    assert o2.lr == o1.lr and s2.last_epoch == 3
    s1.step(), s2.step()
    assert o2.lr == o1.lr
    with pytest.raises(ValueError):
        s2.load_state_dict({"type": "Nope", "base_lr": 0.1, "last_epoch": 1})


def test_checkpoint_file_round_trip_and_validation(tmp_path):
    X, y = _data()
    m = _model()
    opt = optim.Adam(m.parameters(), lr=1e-2)
    h = fastnn.fit(m, X, y, optimizer=opt, epochs=2, batch_size=10, seed=0, progress=False)
    rng = np.random.default_rng(5)
    path = tmp_path / "ck.npz"
    fastnn.save_checkpoint(path, m, opt, 2, rng, h, extra={"note": "x"})
    info = fastnn.load_checkpoint(path)
    assert info["epoch"] == 2 and info["step"] == 0 and info["extra"] == {"note": "x"}
    assert info["rng"] == rng.bit_generator.state
    assert info["history"]["history"]["loss"] == h.history["loss"]
    assert info["optimizer"]["step_count"] == opt.step_count
    for pa, pb in zip(m.parameters(), info["model"].parameters()):
        np.testing.assert_array_equal(pa.data, pb.data)
    # fastnn.load reads the model out of a checkpoint
    loaded = fastnn.load(path)
    np.testing.assert_array_equal(loaded.parameters()[0].data, m.parameters()[0].data)
    # restoring into existing objects
    m2 = _model(1)
    opt2 = optim.Adam(m2.parameters(), lr=1e-2)
    fastnn.load_checkpoint(path, m2, opt2)
    np.testing.assert_array_equal(opt2.exp_avg_sq[0], opt.exp_avg_sq[0])
    assert opt2.step_count == opt.step_count
    # a model file is not a checkpoint; a damaged checkpoint is refused
    fastnn.save(m, tmp_path / "model.npz")
    with pytest.raises(fastnn.ModelFileError, match="not a checkpoint"):
        fastnn.load_checkpoint(tmp_path / "model.npz")
    raw = bytearray(path.read_bytes())
    at = raw.index(b"optimizer/exp_avg/0.npy")
    at = raw.index(b"\x93NUMPY", at) + 200
    raw[at] ^= 0xFF
    (tmp_path / "bad.npz").write_bytes(bytes(raw))
    with pytest.raises(fastnn.ModelFileError, match="CRC|checksum|corrupt"):
        fastnn.load_checkpoint(tmp_path / "bad.npz")
    with pytest.raises(fastnn.ModelFileError, match="parameters do not match"):
        fastnn.load_checkpoint(path, nn.Sequential(nn.Linear(6, 3)))


def _fit(tmp_path, stop_after=None, resume=False, epochs=3, early=None):
    X, y = _data(130)
    m = _model()
    opt = optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    sched = optim.StepLR(opt, 1, 0.7)
    loss = nn.CrossEntropyLoss()
    calls = [0]
    if stop_after is not None:
        forward = loss.forward

        def counting(out, target):
            calls[0] += 1
            if calls[0] > stop_after:
                raise KeyboardInterrupt
            return forward(out, target)

        loss.forward = counting
    ck = tmp_path / "ck.npz"
    h = fastnn.fit(
        m,
        X,
        y,
        loss=loss,
        optimizer=opt,
        scheduler=sched,
        epochs=epochs,
        batch_size=16,
        seed=2,
        progress=False,
        validation_data=(X[:30], y[:30]),
        checkpoint=ck,
        checkpoint_every=3,
        resume=ck if resume else None,
        early_stopping=early,
    )
    return m, h, opt


def test_resume_mid_epoch_is_bit_identical(tmp_path):
    (tmp_path / "a").mkdir()
    full, h_full, _ = _fit(tmp_path / "a")
    (tmp_path / "b").mkdir()
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "b", stop_after=14)  # epoch 2, step 5: the last checkpoint is after step 3
    m, h, opt = _fit(tmp_path / "b", resume=True)
    for pa, pb in zip(full.parameters(), m.parameters()):
        np.testing.assert_array_equal(pa.data, pb.data)
    assert h.history == h_full.history and h.lr == h_full.lr


def test_resume_after_sigkill_is_bit_identical(tmp_path):
    script = f"""
import sys, os, signal, numpy as np
sys.path.insert(0, {ROOT!r})
import fastnn
from fastnn import nn, optim
fastnn.set_backend("numpy")
rng = np.random.default_rng(0)
X = rng.normal(size=(200, 6)).astype(np.float32); y = (X[:, 0] > 0).astype(np.int64)
fastnn.manual_seed(0)
m = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 2))
opt = optim.Adam(m.parameters(), lr=1e-2)
mode, out = sys.argv[1], sys.argv[2]
loss = nn.CrossEntropyLoss()
if mode == "die":
    f, calls = loss.forward, [0]
    def forward(o, t):
        calls[0] += 1
        if calls[0] == 30:
            os.kill(os.getpid(), signal.SIGKILL)
        return f(o, t)
    loss.forward = forward
kw = dict(checkpoint=out + ".ck", checkpoint_every=4) if mode != "full" else {{}}
if mode == "resume":
    kw["resume"] = out + ".ck"
fastnn.fit(m, X, y, loss=loss, optimizer=opt, epochs=3, batch_size=16, seed=1, progress=False, **kw)
np.save(out, np.concatenate([p.data.ravel() for p in m.parameters()]))
"""
    run = lambda *a: subprocess.run([sys.executable, "-c", script, *a], capture_output=True, text=True, timeout=120)
    full = str(tmp_path / "full.npy")
    assert run("full", full).returncode == 0
    out = str(tmp_path / "out.npy")
    died = run("die", out)
    assert died.returncode == -signal.SIGKILL
    r = run("resume", out)
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(full), np.load(out))


def test_resume_with_early_stopping_keeps_its_state(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    full, h_full, _ = _fit(tmp_path / "a", epochs=5, early=fastnn.EarlyStopping("val_loss", patience=2))
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "b", stop_after=30, epochs=5, early=fastnn.EarlyStopping("val_loss", patience=2))
    m, h, _ = _fit(tmp_path / "b", resume=True, epochs=5, early=fastnn.EarlyStopping("val_loss", patience=2))
    assert h.history == h_full.history and h.best_epoch == h_full.best_epoch
    for pa, pb in zip(full.parameters(), m.parameters()):
        np.testing.assert_array_equal(pa.data, pb.data)


def test_resume_refuses_other_settings(tmp_path):
    X, y = _data()
    m = _model()
    opt = optim.SGD(m.parameters(), lr=0.1)
    ck = tmp_path / "ck.npz"
    fastnn.fit(m, X, y, optimizer=opt, epochs=1, batch_size=10, progress=False, checkpoint=ck)
    with pytest.raises(ValueError, match="batch_size=10"):
        fastnn.fit(m, X, y, optimizer=opt, epochs=2, batch_size=20, progress=False, resume=ck)


def test_bad_arguments():
    X, y = _data()
    m = _model()
    with pytest.raises(ValueError, match="needs distributed"):
        fastnn.fit(m, X, y, epochs=1, progress=False, sync_every=4)
    with pytest.raises(ValueError, match="needs checkpoint"):
        fastnn.fit(m, X, y, epochs=1, progress=False, checkpoint_every=4)
    with pytest.raises(ValueError, match="positive"):
        fastnn.fit(m, X, y, epochs=1, progress=False, checkpoint="x.npz", checkpoint_every=0)
    with pytest.raises(TypeError, match="distributed"):
        fastnn.fit(m, X, y, epochs=1, progress=False, distributed="yes")


def test_import_fastnn_does_not_import_mpi4py():
    code = "import sys, fastnn, fastnn.distributed; print('mpi4py' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
