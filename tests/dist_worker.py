"""A training run for tests/test_distributed.py, started by mpiexec (or as one plain process).

``python dist_worker.py OUT.npz KIND [key=value ...]`` trains a small model of
``KIND`` (mlp, cnn, lstm, w3, w4) and rank 0 writes its final weights, its loss
per step and its history to OUT.npz. Settings: ``batch`` (per rank),
``epochs``, ``n`` (samples), ``dist`` (0/1), ``sync`` (local SGD period),
``ckpt`` (path), ``every`` (steps between checkpoints), ``resume`` (path),
``die_at`` (rank:step, SIGKILL itself there), ``stop_at`` (SIGSTOP), ``nan_at`` (rank:step, feed a
NaN there), ``opt`` (sgd/adam), ``backend``, ``threads``.
"""

import os
import signal
import sys

import numpy as np

import fastnn
from fastnn import nn, optim


def model_and_data(kind, n, seed=0):
    rng = np.random.default_rng(seed)
    fastnn.manual_seed(seed)
    if kind == "cnn":
        X = rng.normal(size=(n, 1, 8, 8)).astype(np.float32)
        y = (X[:, 0, :4].sum(axis=(1, 2)) > 0).astype(np.int64) + (X[:, 0, :, :4].sum(axis=(1, 2)) > 0)
        model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 3))
    elif kind == "lstm":
        X = rng.normal(size=(n, 6, 3)).astype(np.float32)
        y = (X[:, :, 0].sum(axis=1) > 0).astype(np.int64)
        model = nn.Sequential(nn.LSTM(3, 8, batch_first=True), nn.LastTimeStep(batch_first=True), nn.Linear(8, 2))
    else:
        d, h = {"mlp": (20, 32), "w3": (64, 128), "w4": (784, 256)}[kind]
        X = rng.normal(size=(n, d)).astype(np.float32)
        y = (X[:, :3].sum(axis=1) > 0).astype(np.int64) + (X[:, 3] > 0)
        model = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, 10 if kind in ("w3", "w4") else 3))
    return model, X, y


class StepLog(nn.CrossEntropyLoss):
    """Cross-entropy that records every loss value, and can die or turn NaN at a chosen step."""

    def __init__(self, rank, die_at=None, nan_at=None, stop_at=None):
        super().__init__()
        self.values, self.rank, self.die_at, self.nan_at, self.calls = [], rank, die_at, nan_at, 0
        self.stop_at = stop_at

    def forward(self, out, target):
        self.calls += 1
        if self.die_at == (self.rank, self.calls):
            os.kill(os.getpid(), signal.SIGKILL)
        if self.stop_at == (self.rank, self.calls):
            os.kill(os.getpid(), signal.SIGSTOP)  # alive but silent: a hung rank
        if self.nan_at == (self.rank, self.calls):
            out = out.copy()
            out[0, 0] = np.nan
        v = super().forward(out, target)
        self.values.append(v)
        return v


def main(argv):
    out_path, kind = argv[0], argv[1]
    cfg = dict(a.split("=", 1) for a in argv[2:])
    backend = cfg.get("backend", "numpy")
    fastnn.set_backend(backend)
    fastnn.set_num_threads(int(cfg.get("threads", 1)))
    dist = cfg.get("dist", "0") == "1"
    rank = 0
    if dist:
        from mpi4py import MPI

        rank = MPI.COMM_WORLD.Get_rank()

    def at(key):
        if key not in cfg:
            return None
        r, s = cfg[key].split(":")
        return int(r), int(s)

    model, X, y = model_and_data(kind, int(cfg.get("n", 256)))
    loss = StepLog(rank, at("die_at"), at("nan_at"), at("stop_at"))
    if cfg.get("opt", "sgd") == "adam":
        opt = optim.Adam(model.parameters(), lr=1e-2)
    else:
        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = optim.StepLR(opt, step_size=2, gamma=0.5)
    sync = int(cfg["sync"]) if "sync" in cfg else None
    kw = {}
    if "ckpt" in cfg:
        kw["checkpoint"] = cfg["ckpt"]
        if "every" in cfg:
            kw["checkpoint_every"] = int(cfg["every"])
    if "resume" in cfg:
        kw["resume"] = cfg["resume"]
    h = fastnn.fit(
        model,
        X,
        y,
        loss=loss,
        optimizer=opt,
        scheduler=sched,
        epochs=int(cfg.get("epochs", 2)),
        batch_size=int(cfg.get("batch", 16)),
        seed=3,
        progress=False,
        distributed=dist,
        sync_every=sync,
        validation_data=(X[:40], y[:40]),
        **kw,
    )
    steps = loss.values
    if dist:  # the global loss of each step: the mean of the ranks' (equal) batch losses
        from mpi4py import MPI

        every = MPI.COMM_WORLD.gather(loss.values)
        if rank == 0:
            k = min(len(v) for v in every)
            steps = np.mean([v[:k] for v in every], axis=0)
    if rank == 0:
        weights = np.concatenate([p.data.ravel() for p in model.parameters()])
        np.savez(
            out_path,
            weights=weights,
            steps=np.array(steps),
            **{k: np.array(v, np.float64) for k, v in h.history.items()},
        )


if __name__ == "__main__":
    main(sys.argv[1:])
