"""Data-parallel training of the digits MLP over MPI, one process per rank.

Start it with ``mpiexec -n 2 python -m fastnn.demos.distributed`` (any number
of ranks). Every rank trains the 64-128-10 network of ``fastnn demo digits``
on its share of each global batch; the gradients are summed over the ranks
after every step (or, with ``--sync-every K``, the parameters are averaged
every K steps). Rank 0 prints the epochs, the test accuracy and the samples
per second; ``--checkpoint PATH`` writes a checkpoint every epoch and
``--resume PATH`` continues from one.

``fastnn demo distributed`` prints that command; with ``--launch N`` it runs it.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

from . import add_training_arguments

NAME = "distributed"
HELP = "data-parallel training over MPI (prints or runs the mpiexec command)"
REQUIRES = {"sklearn": "scikit-learn"}
MPI_HINT = 'pip install "fastnn-cpu[mpi]"  (from a checkout: pip install ".[mpi]")'

# set by mpiexec/srun in every rank (Open MPI, MPICH and Intel MPI, SLURM)
_RANK_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "SLURM_NTASKS")


def add_arguments(parser) -> None:
    add_training_arguments(parser, epochs=10, lr=0.1, optimizer="SGD", batch_size=16)
    parser.add_argument(
        "--sync-every",
        type=int,
        default=None,
        metavar="K",
        help="local SGD: average parameters every K steps instead of gradients every step",
    )
    parser.add_argument("--checkpoint", default=None, metavar="PATH", help="write a checkpoint every epoch")
    parser.add_argument("--resume", default=None, metavar="PATH", help="continue from a checkpoint")
    parser.add_argument(
        "--launch",
        type=int,
        default=None,
        metavar="N",
        help="run the demo under mpiexec with N ranks instead of printing the command",
    )


def command(n: int = 2, args=()) -> list[str]:
    """The command line that starts the demo on ``n`` ranks."""
    return ["mpiexec", "-n", str(n), sys.executable, "-m", "fastnn.demos.distributed", *args]


def _under_mpi() -> bool:
    return any(v in os.environ for v in _RANK_VARIABLES)


def train(args) -> int:
    import numpy as np

    from fastnn.distributed import get_world

    from . import fit_classifier
    from .digits import load_data, seeded_model

    world = get_world()
    X_train, X_test, y_train, y_test = load_data(args.seed)
    model, opt = seeded_model(args.seed, lr=args.lr)
    if world.rank == 0:
        print(
            f"{world.size} ranks x batch {args.batch_size} = {world.size * args.batch_size} samples per step"
            + (f", parameters averaged every {args.sync_every} steps" if args.sync_every else "")
        )
    history, seconds = fit_classifier(
        model,
        opt,
        X_train,
        y_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=False,
        validation_data=(X_test, y_test),
        verbose=not args.no_progress,
        distributed=True,
        sync_every=args.sync_every,
        checkpoint=args.checkpoint,
        resume=args.resume,
    )
    if world.rank == 0:
        n = len(y_train) * max(history.epochs, 1)
        print(
            f"{history.epochs} epochs in {seconds:.2f} s ({n / seconds:,.0f} samples/s over all ranks); "
            f"test accuracy: {history['val_accuracy'][-1]:.4f}"
        )
        same = np.concatenate([p.data.ravel() for p in model.parameters()])
    else:
        same = None
    return 0 if same is None or np.isfinite(same).all() else 1


def _passed(args) -> list[str]:
    """The options of this run, for the command line of the ranks."""
    out = [
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--lr",
        repr(args.lr),
        "--seed",
        str(args.seed),
    ]
    for flag, value in (
        ("--sync-every", args.sync_every),
        ("--checkpoint", args.checkpoint),
        ("--resume", args.resume),
        ("--backend", getattr(args, "backend", None)),
        ("--threads", getattr(args, "threads", None)),
    ):
        if value is not None:
            out += [flag, str(value)]
    return out + (["--no-progress"] if args.no_progress else [])


def run(args) -> int:
    if _under_mpi():
        return train(args)
    from . import _installed

    cmd = command(args.launch or 2, _passed(args))
    if args.launch is None:
        print(
            "Run the demo under MPI, one process per rank:\n\n    " + shlex.join(cmd) + "\n\n"
            "(fastnn demo distributed --launch 2 runs it; Open MPI as root needs --allow-run-as-root, "
            "more ranks than cores --oversubscribe)"
        )
        if not _installed("mpi4py"):
            print(f"mpi4py is not installed: {MPI_HINT}")
        return 0
    if not _installed("mpi4py"):
        print(f"fastnn demo distributed needs mpi4py and an MPI library: {MPI_HINT}", file=sys.stderr)
        return 2
    env = dict(os.environ)
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # Open MPI refuses root unless told (containers)
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    if args.launch > (os.cpu_count() or 1):
        env.update(OMPI_MCA_rmaps_base_oversubscribe="1", PRTE_MCA_rmaps_default_mapping_policy=":oversubscribe")
    return subprocess.run(cmd, env=env).returncode


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m fastnn.demos.distributed", description=__doc__)
    add_arguments(parser)
    parser.add_argument("--backend", default=None, help="numpy, numba or cython (default: the fastest installed)")
    parser.add_argument("--threads", type=int, default=None, help="threads per rank")
    args = parser.parse_args(argv)
    import fastnn

    if args.backend:
        fastnn.set_backend(args.backend)
    if args.threads:
        fastnn.set_num_threads(args.threads)
    return train(args)


if __name__ == "__main__":
    sys.exit(main())
