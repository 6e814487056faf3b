"""Writing a run: ``report.md``, ``results.json`` and ``speedup.png``.

``report.md`` holds one table per workload (ready to paste into a README);
``results.json`` holds everything, including the raw repetitions, so that
:mod:`fastnn.bench.compare` can judge a later run against it; ``speedup.png``
plots the speed-up over the NumPy backend per case and row, with PyTorch as a
reference line.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

__all__ = [
    "fmt_time",
    "markdown",
    "write_report",
    "write_json",
    "load_results",
    "plot_speedup",
    "ROW_ORDER",
    "LIMIT_LABELS",
]

ROW_ORDER = ("numpy", "numba", "cython", "torch", "sklearn")
ROW_LABELS = {
    "numpy": "fastnn numpy",
    "numba": "fastnn numba",
    "cython": "fastnn cython",
    "torch": "PyTorch CPU",
    "sklearn": "scikit-learn",
}
LIMIT_LABELS = {
    "gemm": "BLAS sgemm GFLOP/s",
    "copy": "memory-copy GB/s (read + write)",
    "gemm_time": "the time of the step's matrix products alone through BLAS",
    "copy_time": "the time of one np.copyto of the batch (input-sized, float32) into a preallocated array",
    None: None,
}


def fmt_time(seconds) -> str:
    """``12.3 µs``, ``4.56 ms``, ``1.23 s``."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3g} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def _ratio(x) -> str:
    if x is None:
        return "—"
    return f"{x:.2f}×" if x >= 0.1 else f"{x:.2g}×"


def _pct(x) -> str:
    if x is None:
        return "—"
    return f"{100 * x:.0f}%" if x >= 0.01 else f"{100 * x:.1g}%"


def _ordered(rows: dict):
    names = [n for n in ROW_ORDER if n in rows] + sorted(n for n in rows if n not in ROW_ORDER)
    return [(n, rows[n]) for n in names]


def _header_lines(results: dict) -> list[str]:
    m = results["machine"]
    ctx = m.get("context", {})
    s = results["settings"]
    tc = ctx.get("thread_counts", {"fastnn": s.get("threads")})
    blas = ctx.get("blas") or []
    blas_txt = (
        "; ".join(
            f"{b.get('internal_api')} {b.get('version')} ({b.get('architecture')} kernels, "
            f"threads {b.get('num_threads')})"
            for b in blas
        )
        or "unknown"
    )
    versions = ", ".join(f"{k} {ctx.get(k)}" for k in ("numpy", "numba", "Cython", "scipy") if ctx.get(k))
    anchors = ", ".join(f"{k} {v}" for k, v in results.get("anchor_status", {}).items())
    lines = [
        "# fastnn benchmark report",
        "",
        f"- run: {results.get('created', '?')}, fastnn {ctx.get('fastnn', '?')}, "
        f"{'quick' if s.get('quick') else 'full'} run, {s.get('repeat')} rounds per case, "
        f"{fmt_time(results.get('duration_s'))} in all",
        f"- CPU: {ctx.get('cpu', '?')}, {ctx.get('usable_cpus', ctx.get('cores', '?'))} usable cores; "
        f"threads: " + ", ".join(f"{k} {v}" for k, v in tc.items()),
        f"- BLAS: {blas_txt}",
        *(f"- GEMM policy ({name}, float32): {line}" for name, line in (ctx.get("gemm_policy") or {}).items()),
        f"- adaptive threads: {ctx.get('adaptive_threads', '?')}",
        f"- versions: python {ctx.get('python', '?')}, {versions}; anchors: {anchors or 'none'}",
        f"- machine limits measured in this run: BLAS sgemm n={m['gemm']['n']}: "
        f"**{m['gemm']['gflops']:.0f} GFLOP/s**; memory copy ({m['copy']['mbytes']} MiB): "
        f"**{m['copy']['gbps']:.1f} GB/s** (read + write)",
    ]
    load = m.get("loadavg") or {}
    if load.get("start") and load.get("end"):
        cpus = ctx.get("usable_cpus") or ctx.get("cores") or 1
        busy = max(load["start"][0], load["end"][0] - s.get("threads", 1)) > cpus
        lines.append(
            f"- load average (1 min) at start / end: {load['start'][0]:.1f} / {load['end'][0]:.1f} "
            f"on {cpus} CPUs" + (" — ⚠ other processes kept the machine busy: timings are unreliable" if busy else "")
        )
    if results.get("backends_unavailable"):
        lines.append(
            "- backends not available: " + "; ".join(f"{k}: {v}" for k, v in results["backends_unavailable"].items())
        )
    lines += [
        "",
        f"Times are medians over {s.get('repeat')} rounds (fewer, at least {s.get('min_rounds', 3)}, for a case "
        f"whose rounds would take over {s.get('case_budget', '?')} s) in which the rows take turns "
        f"(spread = slowest / fastest round; ⚠ marks a spread above {s.get('noisy_spread', 1.3)})"
        + (
            f", each block after {s['settle']:g} s of the same row untimed, so that no row times another's "
            "spinning BLAS threads"
            if s.get("settle") and (s.get("threads") or 1) > 1
            else ""
        )
        + ". "
        '"vs numpy" and "vs torch" are that row\'s time divided by this row\'s time '
        '(above 1× = faster). "of limit": achieved GFLOP/s or GB/s over the machine limit measured '
        "in the same rounds, or for training steps the BLAS-only time of the step's matrix products "
        "over the step's time. A convolution's GFLOP/s count the direct algorithm's multiply-adds "
        "(2·B·O·C·9·H·W a pass); the Cython backend runs 3x3 convolutions of 32 channels and more "
        "as Winograd F(2x2, 3x3), 2.25x fewer multiplications, so its rate there can pass the GEMM limit. "
        '"first call" includes JIT compilation and is not part of the median; "(+ t)" after it is the '
        "time then spent waiting for kernels the numba backend compiles in the background, before the "
        "rounds. A fresh install's cost is in the cold-start section.",
        "",
    ]
    return lines


def workload_table(wl: dict) -> list[str]:
    """The markdown lines of one workload's section."""
    limit = LIMIT_LABELS.get(wl.get("limit"))
    title = f"## {wl['id']} — {wl['title']}"
    lines = [title, ""]
    if not wl.get("available", True):
        lines += [f"not available (missing: {', '.join(wl.get('missing', []))})", ""]
        return lines
    if limit:
        lines += [
            f'Limit: {limit}, measured in the same rounds (the "limit" row).'
            + (f" {wl['note']}." if wl.get("note") else ""),
            "",
        ]
    elif wl.get("note"):
        lines += [wl["note"] + ".", ""]
    rate = None
    if wl.get("limit") == "gemm":
        rate = ("GFLOP/s", "gflops")
    elif wl.get("limit") == "copy":
        rate = ("GB/s", "gbps")
    cols = ["case", "backend", "median", "vs numpy", "vs torch"]
    if rate:
        cols.append(rate[0])
    cols += ["of limit", "spread", "first call"]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "|".join(":---" if i < 2 else "---:" for i in range(len(cols))) + "|")
    for case in wl.get("cases", []):
        for name, r in _ordered(case["rows"]):
            label = ROW_LABELS.get(name, name)
            if r.get("error") or r.get("median") is None:
                cells = [case["name"], label, f"error: {r.get('error') or 'no timing'}"] + ["—"] * (len(cols) - 3)
            else:
                spread = f"{r['spread']:.2f}" + (" ⚠" if r.get("noisy") else "")
                cells = [
                    case["name"],
                    label,
                    fmt_time(r["median"]),
                    _ratio(r.get("speedup_vs_numpy")),
                    _ratio(r.get("speedup_vs_torch")),
                ]
                if rate:
                    v = r.get(rate[1])
                    cells.append("—" if v is None else f"{v:.3g}")
                first = fmt_time(r.get("first_call"))
                if (r.get("deferred_compile") or 0) > 0.05:
                    first += f" (+ {fmt_time(r['deferred_compile'])})"
                cells += [_pct(r.get("fraction_of_limit")), spread, first]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lim = case.get("limit")
        if lim and lim.get("value"):
            cells = [case["name"], f"(limit: {lim.get('what', '?')})", fmt_time(lim.get("median")), "—", "—"]
            if rate:
                cells.append(f"{lim['value']:.3g}" if lim.get("unit") == rate[0] else "—")
            spread = f"{lim['spread']:.2f}" + (" ⚠" if lim.get("noisy") else "") if lim.get("spread") else "—"
            cells += ["100%" if rate else "—", spread, "—"]
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def summary_table(results: dict) -> list[str]:
    """One line per case: the median of every row, and the best fastnn backend's speed-ups.

    This is the table to paste into a README.
    """
    cases = [c for wl in results["workloads"] for c in wl.get("cases", [])]
    present = [n for n in ROW_ORDER if any(c["rows"].get(n, {}).get("median") for c in cases)]
    if not cases or not present:
        return []
    fast = [n for n in present if n in ("numba", "cython")]
    cols = ["workload"] + [ROW_LABELS[n] for n in present]
    if fast:
        cols += ["best fastnn vs numpy"]
        if "torch" in present:
            cols += ["best fastnn vs PyTorch"]
    lines = ["## Summary", "", "| " + " | ".join(cols) + " |", "|:---|" + "|".join("---:" for _ in cols[1:]) + "|"]
    for c in cases:
        rows = c["rows"]
        cells = [c["key"]]
        for n in present:
            r = rows.get(n, {})
            cells.append(
                fmt_time(r.get("median")) + (" ⚠" if r.get("noisy") else "")
                if r.get("median")
                else ("error" if r.get("error") else "—")
            )
        if fast:
            timed = [(rows[n]["median"], n) for n in fast if rows.get(n, {}).get("median")]
            best = min(timed) if timed else None
            cells.append(f"{_ratio(rows[best[1]].get('speedup_vs_numpy'))} ({best[1]})" if best else "—")
            if "torch" in present:
                cells.append(f"{_ratio(rows[best[1]].get('speedup_vs_torch'))} ({best[1]})" if best else "—")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def markdown(results: dict) -> str:
    """The whole ``report.md``."""
    from .coldstart import markdown_lines as cold_start_lines
    from .plans_section import markdown_lines as plans_lines
    from .sklearn_section import section_lines

    lines = _header_lines(results)
    lines += summary_table(results)
    lines += cold_start_lines(results.get("cold_start"))
    lines += plans_lines(results.get("plans"))
    lines += section_lines(results)
    for wl in results["workloads"]:
        lines += workload_table(wl)
    noisy = [
        f"{c['key']} ({n})"
        for wl in results["workloads"]
        for c in wl.get("cases", [])
        for n, r in c["rows"].items()
        if r.get("noisy")
    ]
    if noisy:
        which = ": " + ", ".join(noisy) if len(noisy) <= 12 else " (marked ⚠ in the tables)"
        lines += [
            f"⚠ {len(noisy)} noisy medians (spread above {results['settings'].get('noisy_spread', 1.3)})"
            + which
            + ". Re-run on a quieter machine before quoting these.",
            "",
        ]
    return "\n".join(lines)


def write_json(results: dict, path) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1, default=_json_default)
        f.write("\n")
    os.replace(tmp, path)


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def load_results(path) -> dict:
    """Read a ``results.json`` (ValueError when it is not one)."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or "workloads" not in data or "schema" not in data:
        raise ValueError(f"{path} is not a fastnn bench results.json")
    return data


def plot_speedup(results: dict, path) -> None:
    """Bar chart: speed-up over the NumPy backend per case and row; PyTorch drawn as a line."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cases = [c for wl in results["workloads"] for c in wl.get("cases", []) if c["rows"].get("numpy", {}).get("median")]
    bar_rows = [
        n
        for n in ROW_ORDER
        if n not in ("numpy", "torch") and any(c["rows"].get(n, {}).get("speedup_vs_numpy") for c in cases)
    ]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.75 * len(cases) + 2), 4.8))
    width = 0.8 / max(1, len(bar_rows))
    colors = {"numba": "tab:blue", "cython": "tab:orange", "sklearn": "tab:green"}
    for j, name in enumerate(bar_rows):
        xs, ys = [], []
        for i, c in enumerate(cases):
            v = c["rows"].get(name, {}).get("speedup_vs_numpy")
            if v:
                xs.append(i - 0.4 + width * (j + 0.5))
                ys.append(v)
        ax.bar(xs, ys, width=width, label=ROW_LABELS.get(name, name), color=colors.get(name))
    torch_done = False
    for i, c in enumerate(cases):
        v = c["rows"].get("torch", {}).get("speedup_vs_numpy")
        if v:
            ax.hlines(
                v, i - 0.45, i + 0.45, colors="black", linewidth=2, label=None if torch_done else ROW_LABELS["torch"]
            )
            torch_done = True
    ax.axhline(1.0, color="gray", linestyle="--", linewidth=1, label="fastnn numpy (= 1)")
    ax.set_yscale("log")
    ax.set_xticks(range(len(cases)))
    ax.set_xticklabels([c["key"] for c in cases], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("speed-up over the NumPy backend")
    threads = results["settings"].get("threads")
    ax.set_title(f"fastnn speed-up over its NumPy backend (threads: {threads})")
    if cases:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_gemm(results: dict, path) -> bool:
    """GFLOP/s against matrix size for the GEMM workload (False when it did not run)."""
    wl = next((w for w in results["workloads"] if w["id"] == "GEMM" and w.get("cases")), None)
    if wl is None:
        return False
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    names = [n for n in ROW_ORDER if any(c["rows"].get(n, {}).get("gflops") for c in wl["cases"])]
    for name in names:
        pts = [
            (c["params"]["n"], c["rows"][name]["gflops"]) for c in wl["cases"] if c["rows"].get(name, {}).get("gflops")
        ]
        label = {
            "numpy": "BLAS (fastnn numpy)",
            "numba": "fastnn numba (own GEMM)",
            "cython": "fastnn cython (own GEMM)",
        }.get(name, ROW_LABELS.get(name, name))
        ax.plot(*zip(*pts), marker="o", label=label)
    peak = results["machine"]["gemm"]["gflops"]
    ax.axhline(
        peak,
        color="gray",
        linestyle="--",
        linewidth=1,
        label=f"BLAS sgemm n={results['machine']['gemm']['n']} ({peak:.0f} GFLOP/s)",
    )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("n (C = A·B, all n x n, float32)")
    ax.set_ylabel("GFLOP/s")
    ax.set_title(f"GEMM throughput (threads: {results['settings'].get('threads')})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(results: dict, out_dir) -> dict:
    """Write ``report.md``, ``results.json`` and ``speedup.png`` into ``out_dir``.

    Returns
    -------
    dict
        The paths written, by kind (``"md"``, ``"json"``, ``"png"``, and
        ``"gemm_png"`` when the GEMM workload ran); the plots are skipped, with
        a note in the report, when matplotlib is missing.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "results.json", "md": out_dir / "report.md", "png": out_dir / "speedup.png"}
    write_json(results, paths["json"])
    text = markdown(results)
    try:
        plot_speedup(results, paths["png"])
        text += "\n![speed-up over the NumPy backend](speedup.png)\n"
        if plot_gemm(results, out_dir / "gemm.png"):
            paths["gemm_png"] = out_dir / "gemm.png"
            text += "\n![GEMM GFLOP/s against size](gemm.png)\n"
    except ImportError:
        paths.pop("png")
        text += "\n(speedup.png not drawn: matplotlib is not installed)\n"
    paths["md"].write_text(text, encoding="utf-8")
    return paths
