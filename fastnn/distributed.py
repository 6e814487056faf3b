"""Data-parallel training over MPI: ``fit(..., distributed=True)`` under ``mpiexec``.

::

    # train.py, started as:  mpiexec -n 4 python train.py
    history = fastnn.fit(model, X, y, optimizer=optim.SGD(model.parameters(), lr=0.1),
                         batch_size=16, seed=0, distributed=True)   # 16 per rank: 64 per step

Every rank runs the same script on the same data. :func:`fastnn.fit` then

* broadcasts the parameters of rank 0 to every rank before the first step;
* shuffles with the same seed on every rank and gives rank ``r`` the
  samples ``r*B .. (r+1)*B - 1`` of every global batch of ``world_size*B``
  samples (``B`` = ``batch_size``, per rank): one epoch covers the data once;
* after each backward pass sums the gradients of all ranks, weighted by each
  rank's share of the global batch, with one in-place ``Allreduce`` of a
  buffer that holds every gradient (the parameters' ``.grad`` arrays become
  views into it), so every rank takes the same optimizer step and the run
  matches a single process with batch ``world_size*B`` up to float round-off;
* reduces the epoch's loss, accuracy and validation metrics, so every rank
  holds the global history; only rank 0 shows progress and writes checkpoints.

With ``sync_every=K`` (local SGD) the ranks step on their own gradients and
average parameters and optimizer state every ``K`` steps and at the end of
every epoch: for small networks, where one allreduce costs about as much as a
step, this is what makes more ranks faster.

Failures: a NaN/inf loss on any rank stops every rank with the same
:class:`fastnn.NonFiniteLossError` (a flag travels with the gradients). A rank
that waits longer than ``timeout`` seconds (default 120, environment
variable ``FASTNN_DIST_TIMEOUT``) for the others, because one died or hangs,
prints a :class:`DistributedError` message and aborts the whole job
(``MPI_Abort``): no rank hangs. mpiexec itself also ends the job when a rank
exits with an error.

mpi4py is imported only when distributed training starts; install it with
``pip install "fastnn-cpu[mpi]"`` (mpi4py and Open MPI wheels).
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time

import numpy as np

__all__ = ["DistributedError", "Communicator", "get_world", "comm_cost"]

_DEFAULT_TIMEOUT = 120.0


class DistributedError(RuntimeError):
    """Ranks of a distributed run lost contact (a rank died or hangs) or disagree."""


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(
            f"distributed training needs mpi4py and an MPI library: "
            f"pip install 'fastnn-cpu[mpi]' (or mpi4py with your cluster's MPI) ({exc})"
        ) from None
    return MPI


def _timeout(value):
    if value is None:
        value = os.environ.get("FASTNN_DIST_TIMEOUT", _DEFAULT_TIMEOUT)
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"timeout must be a number of seconds, got {value!r}") from None
    if not value > 0:
        raise ValueError(f"timeout must be positive, got {value!r}")
    return value


class Communicator:
    """The ranks of a run and the few collectives training needs, each with a bounded wait.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm, optional
        Default ``MPI.COMM_WORLD``.
    timeout : float, optional
        Seconds a collective may wait for the other ranks before the job is
        aborted with a :class:`DistributedError` message (default 120, or
        ``FASTNN_DIST_TIMEOUT``).

    Attributes
    ----------
    rank, size : int
    """

    def __init__(self, comm=None, timeout=None):
        MPI = _mpi()
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.timeout = _timeout(timeout)
        self._waiting = (None, None)  # (start, what) of the collective in progress
        self._watchdog = None

    def _watch(self) -> None:
        """The watchdog thread: abort the job when a collective has waited longer than ``timeout``."""
        while True:
            time.sleep(min(1.0, self.timeout / 4))
            since, what = self._waiting
            if since is not None and time.monotonic() - since > self.timeout:
                self.abort(
                    f"rank {self.rank}: no answer from the other ranks for {self.timeout:g} s during "
                    f"{what}: a rank has died or hangs (FASTNN_DIST_TIMEOUT sets this limit)"
                )

    def _collective(self, what: str, call, *args, **kwargs):
        """Run a blocking collective under the watchdog (mpi4py releases the GIL while it waits)."""
        if self._watchdog is None:
            self._watchdog = threading.Thread(target=self._watch, name="fastnn-mpi-watchdog", daemon=True)
            self._watchdog.start()
        self._waiting = (time.monotonic(), what)
        try:
            return call(*args, **kwargs)
        finally:
            self._waiting = (None, None)

    def abort(self, message: str) -> None:
        """Print ``DistributedError: message`` and end every rank of the job (``MPI_Abort``)."""
        sys.stderr.write(f"fastnn.distributed.DistributedError: {message}\n")
        sys.stderr.flush()
        try:
            self.comm.Abort(1)
        finally:  # pragma: no cover - Abort does not return
            os._exit(1)

    def allreduce_(self, buf: np.ndarray, what: str = "allreduce") -> np.ndarray:
        """Sum ``buf`` over all ranks, in place."""
        if self.size > 1:
            self._collective(what, self.comm.Allreduce, self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return buf

    def bcast_(self, buf: np.ndarray, root: int = 0, what: str = "broadcast") -> np.ndarray:
        """Overwrite ``buf`` with rank ``root``'s, in place."""
        if self.size > 1:
            self._collective(what, self.comm.Bcast, buf, root=root)
        return buf

    def bcast_object(self, obj, root: int = 0):
        """Rank ``root``'s ``obj`` (small JSON-like values: settings, a checkpoint's metadata)."""
        return obj if self.size == 1 else self._collective("a broadcast", self.comm.bcast, obj, root=root)


_worlds: dict = {}


def get_world(timeout=None) -> Communicator:
    """The :class:`Communicator` of every process started by ``mpiexec`` (``MPI.COMM_WORLD``).

    One per timeout, kept for the process (each has one watchdog thread).
    """
    timeout = _timeout(timeout)
    world = _worlds.get(timeout)
    if world is None:
        world = _worlds[timeout] = Communicator(None, timeout)
    return world


def _pack(arrays, dtype, extra=0):
    """One contiguous buffer holding ``arrays`` (and ``extra`` trailing slots): ``(buf, views)``."""
    sizes = [a.size for a in arrays]
    buf = np.zeros(sum(sizes) + extra, dtype)
    views, o = [], 0
    for a, k in zip(arrays, sizes):
        views.append(buf[o : o + k].reshape(a.shape))
        o += k
    return buf, views


class _Data:
    """Which samples of a shuffled epoch each rank trains on, and the global size of each step."""

    def __init__(self, n, batch_size, rank, size):
        g = batch_size * size
        pos = np.arange(n)
        self.mask = (pos % g) // batch_size == rank  # this rank's positions in the global order
        steps = -(-n // g)
        lo = np.arange(steps) * g + rank * batch_size
        local = np.clip(n - lo, 0, batch_size)  # samples this rank gets in each step (0 at the end)
        self.bounds = np.concatenate(([0], np.cumsum(local))).tolist()
        self.global_sizes = [min(g, n - j * g) for j in range(steps)]
        self.count = int(self.bounds[-1])


class _Sync:
    """The distributed side of :func:`fastnn.fit`: gradient (or parameter) averaging and metric sums."""

    def __init__(self, model, optimizer, sync_every=None, timeout=None):
        self.world = get_world(timeout)
        self.rank, self.size = self.world.rank, self.world.size
        self.model, self.optimizer = model, optimizer
        params = optimizer.params
        dtypes = {p.data.dtype for p in params}
        if len(dtypes) != 1:
            raise ValueError(f"distributed training needs parameters of one dtype, got {sorted(map(str, dtypes))}")
        self.dtype = dtypes.pop()
        self.sync_every = sync_every
        self.bad = 0
        # the broadcast before the first step: every parameter, so all ranks start alike
        self.broadcast_parameters()
        if sync_every is None:
            # the gradients live in one buffer (one allreduce per step); its last slot flags a NaN/inf loss
            self.buf, views = _pack([p.grad for p in params], self.dtype, extra=1)
            for p, v in zip(params, views):
                p.grad = v
        else:
            self.steps_since = 0

    def broadcast_parameters(self):
        params = self.model.parameters()
        for dt in {p.data.dtype for p in params}:
            group = [p for p in params if p.data.dtype == dt]
            buf, views = _pack([p.data for p in group], dt)
            for p, v in zip(group, views):
                v[...] = p.data
            self.world.bcast_(buf, what="the broadcast of the parameters")
            for p, v in zip(group, views):
                p.data[...] = v

    def broadcast_optimizer(self):
        """Rank 0's optimizer state on every rank (after rank 0 alone read a checkpoint)."""
        opt = self.optimizer
        info = self.world.bcast_object({"lr": opt.lr, "step_count": getattr(opt, "step_count", 0)})
        opt.lr = info["lr"]
        if hasattr(opt, "step_count"):
            opt.step_count = info["step_count"]
        arrays = [a for name in opt._state_names for a in opt.state[name]]
        if arrays:
            buf, views = _pack(arrays, self.dtype)
            for a, v in zip(arrays, views):
                v[...] = a
            self.world.bcast_(buf, what="the broadcast of the optimizer state")
            for a, v in zip(arrays, views):
                a[...] = v

    def average_parameters(self):
        """Local SGD: the mean of every parameter and optimizer state array over the ranks."""
        opt = self.optimizer
        arrays = [p.data for p in opt.params] + [a for name in opt._state_names for a in opt.state[name]]
        buf, views = _pack(arrays, self.dtype, extra=1)
        for a, v in zip(arrays, views):
            v[...] = a
        buf[-1] = self.bad
        self.world.allreduce_(buf, what="the averaging of the parameters")
        bad = buf[-1]
        buf *= self.dtype.type(1.0 / self.size)
        for a, v in zip(arrays, views):
            a[...] = v
        self.steps_since = 0
        return bad

    def sums(self, values):
        """``values`` (floats) summed over the ranks, in float64."""
        buf = np.array(values, np.float64)
        return self.world.allreduce_(buf, what="the reduction of the metrics").tolist()


def run_step(sync, model, loss, optimizer, xb, yb, global_n, clip):
    """One distributed step; returns ``(loss value or None, output or None, bad)``: ``bad`` counts ranks with NaN/inf.

    With per-step synchronisation the gradients are scaled by this rank's
    share of the global batch and summed over the ranks; with local SGD the
    rank steps alone and averages every ``sync_every`` steps.
    """
    value = out = None
    bad = 0
    n = xb.shape[0]
    if sync.sync_every is None:
        if n:
            out = model.forward(xb)
            value = loss.forward(out, yb)
            if math.isfinite(value):
                g = loss.backward()
                if loss.reduction == "mean" and n != global_n:
                    g *= g.dtype.type(n / global_n)  # mean over the global batch, not this rank's share
                model.backward(g, input_grad=False)
            else:
                bad = 1
        if not n or bad:
            sync.buf[:] = 0  # no gradient from this rank, but it joins the allreduce
        sync.buf[-1] = bad
        sync.world.allreduce_(sync.buf, what="the gradient allreduce")
        bad = int(round(float(sync.buf[-1])))
        if bad:
            return value, out, bad
        if clip is not None:
            from .optim import clip_grad_norm

            clip_grad_norm(optimizer.params, clip)
        optimizer.step()
        return value, out, 0
    # local SGD: a rank whose loss went bad stops updating and reports it at the next averaging
    if n and not sync.bad:
        out = model.forward(xb)
        value = loss.forward(out, yb)
        if math.isfinite(value):
            model.backward(loss.backward(), input_grad=False)
            if clip is not None:
                from .optim import clip_grad_norm

                clip_grad_norm(optimizer.params, clip)
            optimizer.step()
        else:
            sync.bad = 1
    sync.steps_since += 1
    return value, out, 0


def comm_cost(sizes=(1 << 10, 1 << 13, 1 << 15, 1 << 17, 1 << 19, 1 << 21), repeat=None, dtype=np.float32):
    """Seconds per in-place ``Allreduce`` of each message size (bytes) on the current ranks.

    Every rank must call it. Returns ``[(bytes, seconds), ...]`` (the median
    of ``repeat`` calls after warm-up, the same on every rank).
    """
    MPI = _mpi()
    comm = MPI.COMM_WORLD
    out = []
    for nbytes in sizes:
        buf = np.ones(max(1, nbytes // np.dtype(dtype).itemsize), dtype)
        reps = repeat or max(20, min(2000, (4 << 20) // max(nbytes, 1)))
        for _ in range(5):
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        times = []
        for _ in range(3):
            comm.Barrier()
            t = time.perf_counter()
            for _ in range(reps):
                comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            times.append((time.perf_counter() - t) / reps)
        med = np.array([sorted(times)[1]])
        comm.Allreduce(MPI.IN_PLACE, med, op=MPI.MAX)
        out.append((int(buf.nbytes), float(med[0])))
    return out
