"""The ``fastnn`` command: ``info``, ``bench``, ``demo`` and ``warmup``.

``fastnn info``   backends (and why one is missing), threads, BLAS, versions.
``fastnn bench``  the benchmark report (see :mod:`fastnn.bench`).
``fastnn demo``   small end-to-end trainings on built-in data
                  (one module per demo in :mod:`fastnn.demos`).
``fastnn warmup`` compile the Numba kernels into their disk cache ahead of use.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import platform
import sys


def _demo_modules():
    from . import demos

    mods = {}
    for info in sorted(pkgutil.iter_modules(demos.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"fastnn.demos.{info.name}")
        mods[module.NAME] = module
    return mods


def machine_info() -> dict:
    """Backends, threads, BLAS and versions, as a dict (also used by the bench report)."""
    import numpy as np

    import fastnn

    from . import _config, _contention
    from .backends import default_backend_error

    # A bad FASTNN_BACKEND is reported, not raised: this is where users look.
    backend_error = default_backend_error()
    info = {
        "fastnn": fastnn.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _config.cpu_model(),
        "numpy": np.__version__,
        "backends": fastnn.backend_status(),
        "default_backend": None if backend_error else fastnn.get_backend(),
        "default_backend_error": backend_error,
        "threads": fastnn.get_num_threads(),
        "max_threads": _config.max_num_threads(),
        "adaptive_threads": _contention.describe(),
    }
    from .backends import gemm_calibration

    info["gemm_policy"] = {
        name: gemm_calibration.describe(name) for name in ("cython", "numba") if info["backends"][name] == "available"
    }
    # Read versions from the installed metadata: importing torch or
    # scikit-learn just to ask would take seconds.
    from importlib import metadata

    for name, dist in (
        ("numba", "numba"),
        ("scipy", "scipy"),
        ("Cython", "Cython"),
        ("threadpoolctl", "threadpoolctl"),
        ("torch", "torch"),
        ("sklearn", "scikit-learn"),
    ):
        try:
            info[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[name] = None
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [
            {k: p.get(k) for k in ("internal_api", "version", "architecture", "num_threads", "threading_layer")}
            for p in threadpool_info()
            if p.get("user_api") == "blas"
        ]
    except ImportError:
        info["blas"] = []
    for name in fastnn.available_backends():
        from .backends import get

        b = get(name)
        info[f"backend_{name}"] = {"overrides": len(b.overrides), "fallbacks": sorted(b.fallbacks), **b.info}
        if name == "cython":  # the instruction set each kernel family dispatches to now
            from .backends import cython_backend

            info[f"backend_{name}"]["simd"] = cython_backend.simd_summary()
    return info


def _cmd_info(args) -> int:
    info = machine_info()
    print(
        f"fastnn {info['fastnn']}  (python {info['python']}, numpy {info['numpy']}, numba {info['numba']}, "
        f"scipy {info['scipy']})"
    )
    print(f"cpu: {info['cpu']}  threads: {info['threads']} (at most {info['max_threads']})")
    print(f"adaptive threads: {info['adaptive_threads']}")
    for name, line in info["gemm_policy"].items():
        print(f"gemm policy ({name}, float32): {line}")
    if info["default_backend_error"]:
        print(f"default backend: none ({info['default_backend_error']})")
    print("backends:")
    for name, status in info["backends"].items():
        mark = "*" if name == info["default_backend"] else " "
        print(f" {mark} {name:7s} {status}")
        extra = info.get(f"backend_{name}")
        if extra:
            fb = extra["fallbacks"]
            print(
                f"           {extra['overrides']} kernels of its own"
                + (f"; from the reference: {', '.join(fb)}" if fb and name != "numpy" else "")
            )
            for k, v in extra.items():
                if k not in ("overrides", "fallbacks"):
                    print(f"           {k}: {v}")
    for blas in info["blas"]:
        print(
            f"blas: {blas['internal_api']} {blas['version']} kernels={blas['architecture']} "
            f"threads={blas['num_threads']}"
        )
    print(f"torch: {info['torch'] or 'not installed'}  scikit-learn: {info['sklearn'] or 'not installed'}")
    return 0


def _cmd_demo(args) -> int:
    import fastnn

    from .demos import missing_requirements

    # Before any training: a demo that would fail at its last line on a missing plot library says so now.
    missing = missing_requirements(args.demo_module, args)
    if missing:
        print(missing, file=sys.stderr)
        return 2
    if args.backend:
        fastnn.set_backend(args.backend)
    if args.threads:
        fastnn.set_num_threads(args.threads)
    return int(args.demo_module.run(args) or 0)


def _choices(command: str, option: str, text: str, allowed: tuple[str, str]) -> list[str] | None:
    """The comma-separated ``text`` of ``option`` if every item is one of ``allowed``; else says so, None."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if items and all(t in allowed for t in items):
        return items
    print(f"fastnn {command}: {option} takes {allowed[0]} and/or {allowed[1]}, got {text!r}", file=sys.stderr)
    return None


def _cmd_warmup(args) -> int:
    from .backends import BackendUnavailable, get

    dtypes = _choices("warmup", "--dtypes", args.dtypes, ("float32", "float64"))
    if dtypes is None:
        return 2
    try:
        backend = get(args.backend)
    except (BackendUnavailable, ValueError) as exc:
        print(f"fastnn warmup: {exc}", file=sys.stderr)
        return 2
    if backend.name == "cython":  # nothing compiled at run time: only the GEMM policy to measure
        print("the cython backend compiles nothing at run time; measuring its GEMM policy ...")
        return _warm_policy("cython")
    if backend.name != "numba":
        print(f"fastnn warmup: the {backend.name} backend compiles nothing at run time; nothing to do")
        return 0
    if backend.info.get("cache") != "on":
        print(
            f"fastnn warmup: Numba's cache is {backend.info.get('cache')}: compiled kernels would not be "
            "kept; set NUMBA_CACHE_DIR to a writable directory",
            file=sys.stderr,
        )
        return 1
    from .backends.numba_backend._warmup import warmup

    print(f"compiling the numba kernels for {', '.join(dtypes)} into the cache (a few minutes, once) ...")
    res = warmup(dtypes, log=lambda line: print("  " + line, flush=True))
    print(
        f"done: {res['signatures']} signatures ready, {res['compiled']} compiled now, "
        f"{res['seconds']:.0f} s ({res['cpu_seconds']:.0f} s CPU)"
    )
    print("measuring the numba GEMM policy ...")
    return _warm_policy("numba")


def _warm_policy(name: str) -> int:
    from .backends import gemm_calibration

    # A measurement too unclear to keep is reported, not an error: the kernels are ready regardless.
    _print_calibration(gemm_calibration.calibrate(name, "float32"), "fastnn warmup")
    return 0


def _cmd_calibrate(args) -> int:
    from .backends import BackendUnavailable, gemm_calibration, get

    names = _choices("calibrate", "--backends", args.backends, ("cython", "numba"))
    dtypes = _choices("calibrate", "--dtypes", args.dtypes, ("float32", "float64"))
    if names is None or dtypes is None:
        return 2
    if args.threads:
        import fastnn

        fastnn.set_num_threads(args.threads)
    refused = 0
    for name in names:
        try:
            get(name)
        except (BackendUnavailable, ValueError) as exc:
            print(f"fastnn calibrate: skipping {name}: {exc}", file=sys.stderr)
            continue
        for dtype in dtypes:
            try:
                entry = gemm_calibration.calibrate(name, dtype, force=args.force)
            except OSError as exc:  # the cache directory cannot be written
                print(f"fastnn calibrate: cannot store the result: {exc} (set FASTNN_CACHE_DIR)", file=sys.stderr)
                return 1
            refused += not _print_calibration(entry, "fastnn calibrate")
    return 1 if refused else 0


def _print_calibration(entry, command: str) -> bool:
    """Print a calibration and what became of it; False when its problems kept it from being stored."""
    from .backends import gemm_calibration

    k = entry["key"]
    print(f"{k['backend']} {k['dtype']}, {k['threads']} threads ({k['isa']}; BLAS {', '.join(k['blas']) or '?'}):")
    print("  multiply-adds   m x k x n          own GEMM        BLAS   own/BLAS   90% interval  pairs  verdict")
    for p in entry["points"]:
        shape = f"{p['m']}x{p['k']}x{p['n']}"
        print(
            f"  {p['v'] / 1e6:10.2f}M   {shape:16s} {p['own'] * 1e6:9.1f} µs {p['blas'] * 1e6:9.1f} µs"
            f"   {p['ratio']:7.2f}   {p['low']:5.2f} - {p['high']:4.2f}  {p['pairs']:5d}  {p['verdict']}"
        )
    reach = gemm_calibration._reach(entry["bound"])
    sets = ", ".join(f"{n}={v}" for n, v in entry["thresholds"].items())
    margin = gemm_calibration.LOSS_MARGIN
    print(
        f"  own GEMM up to {reach} (least total cost by the medians; a tie within {margin} keeps the own GEMM), "
        f"then BLAS: {sets}"
    )
    busy = entry.get("others_busy")
    busy = "?" if busy is None else f"{busy:.1f}"
    blocks = 2 * sum(p["pairs"] for p in entry["points"])
    print(
        f"  measured in {entry['seconds']:.2f} s ({entry.get('timing_seconds', 0.0):.2f} s timing pairs); "
        f"other processes kept {busy} cores busy meanwhile; "
        f"fewer than {k['threads']} threads ran in {entry['capped_blocks']} of {blocks} timed blocks"
    )
    for problem in entry["problems"]:
        print(f"  {problem}")
    if "path" in entry:
        forced = " anyway (--force)" if entry["forced"] else ""
        print(f"  stored{forced} in {entry['path']}")
        return True
    if not entry["problems"]:
        print("  not stored")
        return True
    print(
        f"{command}: {k['backend']} {k['dtype']}: not stored, the evidence is not clear "
        f"({gemm_calibration.problem_kinds(entry)}); the GEMM policy in force stays "
        "(`fastnn info`). Run `fastnn calibrate` again on a quieter machine, or with --force to keep this one.",
        file=sys.stderr,
    )
    return False


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="fastnn", description="Fast CPU neural networks: info, benchmarks, demos.")
    parser.add_argument("--version", action="version", version=f"fastnn {__version__}")
    sub = parser.add_subparsers(dest="command")

    p_info = sub.add_parser("info", help="backends, threads, BLAS and versions")
    p_info.set_defaults(func=_cmd_info)

    p_bench = sub.add_parser("bench", help="benchmark every backend against the machine, PyTorch and scikit-learn")
    try:
        from .bench import cli as bench_cli
    except ImportError:  # pragma: no cover - the bench package is part of fastnn
        bench_cli = None
    if bench_cli is not None:
        bench_cli.add_arguments(p_bench)
        p_bench.set_defaults(func=bench_cli.run)

    p_warm = sub.add_parser(
        "warmup",
        help="compile the numba kernels into their disk cache and measure the GEMM policy (once, after install)",
        description="Compile every kernel of the numba backend into Numba's disk cache, so "
        "that no later process waits for compilation; then measure where its own GEMM beats BLAS "
        "(as `fastnn calibrate`). With --backend cython, only the latter.",
    )
    p_warm.add_argument("--backend", default="numba", help="backend to prepare (default: numba)")
    p_warm.add_argument("--dtypes", default="float32,float64", help="comma-separated (default: float32,float64)")
    p_warm.set_defaults(func=_cmd_warmup)

    p_cal = sub.add_parser(
        "calibrate",
        help="measure where the own GEMM beats BLAS on this machine (about a second per backend and dtype)",
        description="Time training-shaped products on the own GEMM and on BLAS, and keep the size up to which "
        "the own GEMM wins as this machine's GEMM policy (for its CPU, BLAS kernels and thread count); "
        "`fastnn info` shows the policy in force. A result that is unstable, or taken while other processes "
        "kept the cores busy, is not stored: the command says why and exits with status 1.",
    )
    p_cal.add_argument("--backends", default="cython,numba", help="comma-separated (default: cython,numba)")
    p_cal.add_argument("--dtypes", default="float32", help="comma-separated float32/float64 (default: float32)")
    p_cal.add_argument("--threads", type=int, default=None, help="thread count to measure at (default: current)")
    p_cal.add_argument(
        "--force",
        action="store_true",
        help="store the result even when it is unstable or was taken on busy cores (else: exit status 1, "
        "the stored policy stays)",
    )
    p_cal.set_defaults(func=_cmd_calibrate)

    p_demo = sub.add_parser("demo", help="train a small network end to end on built-in data")
    demo_sub = p_demo.add_subparsers(dest="demo", required=True)
    for name, module in _demo_modules().items():
        p = demo_sub.add_parser(name, help=module.HELP, description=module.__doc__)
        p.add_argument("--backend", default=None, help="numpy, numba, cython or auto (default: FASTNN_BACKEND or auto)")
        p.add_argument("--threads", type=int, default=None, help="number of threads")
        module.add_arguments(p)
        p.set_defaults(func=_cmd_demo, demo_module=module)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # plain `fastnn`: say what it can do instead of an argparse error
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
