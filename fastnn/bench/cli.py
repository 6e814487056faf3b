"""``fastnn bench``: arguments and entry point (called by :mod:`fastnn.cli`)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_arguments", "run"]


def _csv(text):
    return [t.strip() for t in text.split(",") if t.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``fastnn bench`` to ``parser``."""
    from .workloads import WORKLOADS

    ids = ", ".join(w.id for w in WORKLOADS)
    parser.description = (
        "Time the reference workloads with every backend, PyTorch and scikit-learn in one process, "
        "against the machine's GEMM and memory-copy limits measured in the same run; write "
        "DIR/report.md, DIR/results.json and DIR/speedup.png."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer, shorter repetitions: a minute or two once the numba kernels are in "
        "Numba's cache; the first run after installing also compiles them (about 2.5 min "
        "of CPU time in all on 2 cores; `fastnn warmup` compiles them ahead)",
    )
    parser.add_argument(
        "--workloads",
        type=_csv,
        default=None,
        metavar="IDS",
        help=f"comma-separated workload ids (default: all of {ids})",
    )
    parser.add_argument(
        "--backends",
        type=_csv,
        default=None,
        metavar="NAMES",
        help="comma-separated rows to run: numpy, numba, cython, torch, sklearn (default: all installed)",
    )
    parser.add_argument(
        "--sklearn",
        action="store_true",
        help="fastnn.sklearn against scikit-learn (workload SKL; alone unless --workloads is given)",
    )
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel throughput, 1 rank against 2 under mpiexec (W4, W3, local SGD), and "
        "the allreduce cost by message size over shared memory and loopback TCP; alone; "
        "writes DIR/distributed.md and DIR/distributed.json (needs mpi4py; "
        "--backends NAME picks the backend, --repeat the rounds)",
    )
    parser.add_argument(
        "--contended",
        action="store_true",
        help="training steps (W3-W6, LSTM) at 1 and 2 threads on an idle machine, beside a busy "
        "process and beside a second fastnn job, each in new processes; alone; about 6 min "
        "(quick: 3-4); writes DIR/contended.md and DIR/contended.json (--backends, --threads, "
        "--workloads select)",
    )
    parser.add_argument("--threads", type=int, default=None, help="threads for fastnn, BLAS and PyTorch")
    parser.add_argument("--out", default="bench-out", metavar="DIR", help="output folder (default: bench-out)")
    parser.add_argument("--repeat", type=int, default=None, help="rounds per case (default: 9, quick: 5)")
    parser.add_argument(
        "--compare",
        nargs="+",
        default=None,
        metavar="RESULTS_JSON",
        help="OLD [NEW]: with one file, run the benchmark and compare the new run with OLD; "
        "with two files, compare them without running",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.10,
        help="relative change below which --compare calls a row unchanged (default 0.10)",
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.add_argument(
        "--no-cold-start",
        dest="cold_start",
        action="store_false",
        help="skip the numba cold-start runs (new processes, empty cache)",
    )
    parser.add_argument(
        "--no-plans",
        dest="plans",
        action="store_false",
        help="skip the compiled-training-plan section (fit's whole epochs in compiled code, with W3)",
    )
    # small sizes, for testing the machinery only
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)


def run(args) -> int:
    """Run ``fastnn bench`` with parsed ``args``; returns the exit status."""
    from .compare import compare, format_comparison
    from .report import load_results, markdown, write_report

    if args.compare is not None and len(args.compare) > 2:
        print("fastnn bench: --compare takes OLD or OLD NEW", file=sys.stderr)
        return 2
    try:
        saved = [load_results(p) for p in (args.compare or [])]
    except (OSError, ValueError) as exc:  # missing file, not JSON, not a results.json
        print(f"fastnn bench: cannot compare: {exc}", file=sys.stderr)
        return 2
    if len(saved) == 2:
        print(format_comparison(compare(saved[0], saved[1], args.threshold), args.compare[0], args.compare[1]))
        return 0
    old = saved[0] if saved else None
    if getattr(args, "distributed", False):
        return _run_distributed(args)
    if getattr(args, "contended", False):
        return _run_contended(args)

    from .runner import run_bench

    try:
        workloads = args.workloads
        if getattr(args, "sklearn", False):
            workloads = list(workloads or []) + ["SKL"]
        results = run_bench(
            workloads=workloads,
            backends=args.backends,
            threads=args.threads,
            repeat=args.repeat,
            cold_start=getattr(args, "cold_start", True),
            plans=getattr(args, "plans", True),
            **_run_options(args),
        )
    except ValueError as exc:
        print(f"fastnn bench: {exc}", file=sys.stderr)
        return 2
    paths = write_report(results, args.out)
    print(markdown(results))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    if old is not None:
        print()
        print(format_comparison(compare(old, results, args.threshold), args.compare[0], "this run"))
    return 0


def _run_options(args) -> dict:
    """The options every kind of run takes from the command line: its size and the progress output."""
    return dict(quick=args.quick, tiny=getattr(args, "tiny", False), progress=args.progress)


def _run_distributed(args) -> int:
    from .distributed_section import markdown_lines, run_distributed

    backends = args.backends or [None]
    if len(backends) > 1:
        print("fastnn bench: --distributed runs one backend: give --backends NAME", file=sys.stderr)
        return 2
    return _run_alone(
        args,
        "distributed",
        markdown_lines,
        lambda: run_distributed(rounds=args.repeat, backend=backends[0], **_run_options(args)),
    )


def _run_contended(args) -> int:
    from .contended import markdown_lines, run_contended

    return _run_alone(
        args,
        "contended",
        markdown_lines,
        lambda: run_contended(
            backends=args.backends, threads=args.threads, workloads=args.workloads, **_run_options(args)
        ),
    )


def _run_alone(args, name, markdown_lines, run) -> int:
    """Run a section that has its own report, and write DIR/<name>.md and DIR/<name>.json."""
    import json
    import os

    try:
        results = run()
    except (ValueError, RuntimeError) as exc:
        print(f"fastnn bench: {exc}", file=sys.stderr)
        return 2
    text = "\n".join(markdown_lines(results)) + "\n"
    os.makedirs(args.out, exist_ok=True)
    paths = [os.path.join(args.out, f"{name}.md"), os.path.join(args.out, f"{name}.json")]
    with open(paths[0], "w") as f:
        f.write(text)
    with open(paths[1], "w") as f:
        json.dump(results, f, indent=1)
    print(text)
    print("wrote " + ", ".join(paths))
    return 0
