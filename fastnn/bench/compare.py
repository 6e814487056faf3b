"""Compare two benchmark runs: what got faster, what got slower.

Every (case, row) present in both runs with a median is matched; the change
is ``old median / new median`` (above 1: the new run is faster). A change
within ``threshold`` (default 10%) is reported as unchanged, and so is one
that the repetitions of either run cannot tell apart (the ranges
``[min, max]`` overlap), since timings on a shared machine are noisy.
Absolute times from two runs depend on the machine's state, so the ratio to
the NumPy backend (measured within each run) is compared too.
"""

from __future__ import annotations

__all__ = ["compare", "format_comparison"]


def _rows(results: dict) -> dict:
    out = {}
    for wl in results.get("workloads", []):
        for case in wl.get("cases", []):
            for name, r in case.get("rows", {}).items():
                if r.get("median"):
                    out[(case["key"], name)] = r
    return out


def compare(old: dict, new: dict, threshold: float = 0.10) -> dict:
    """Match the rows of two runs.

    Parameters
    ----------
    old, new : dict
        Two ``results.json`` contents.
    threshold : float
        Relative change below which a row counts as unchanged.

    Returns
    -------
    dict
        ``faster``, ``slower``, ``unchanged``: lists of entries with ``case``,
        ``row``, ``old``, ``new`` (medians, s), ``change`` (old / new),
        ``old_vs_numpy``, ``new_vs_numpy``, ``overlap`` (whether the
        repetition ranges overlap); ``only_old`` and ``only_new``: keys present in
        one run alone.
    """
    a, b = _rows(old), _rows(new)
    out = {
        "faster": [],
        "slower": [],
        "unchanged": [],
        "only_old": sorted(f"{k[0]} / {k[1]}" for k in a.keys() - b.keys()),
        "only_new": sorted(f"{k[0]} / {k[1]}" for k in b.keys() - a.keys()),
    }
    for key in [k for k in a if k in b]:
        ra, rb = a[key], b[key]
        change = ra["median"] / rb["median"]
        overlap = ra.get("min", ra["median"]) <= rb.get("max", rb["median"]) and rb.get("min", rb["median"]) <= ra.get(
            "max", ra["median"]
        )
        entry = {
            "case": key[0],
            "row": key[1],
            "old": ra["median"],
            "new": rb["median"],
            "change": change,
            "old_vs_numpy": ra.get("speedup_vs_numpy"),
            "new_vs_numpy": rb.get("speedup_vs_numpy"),
            "overlap": overlap,
        }
        if abs(change - 1.0) <= threshold or overlap:
            out["unchanged"].append(entry)
        elif change > 1.0:
            out["faster"].append(entry)
        else:
            out["slower"].append(entry)
    out["faster"].sort(key=lambda e: -e["change"])
    out["slower"].sort(key=lambda e: e["change"])
    out["unchanged"].sort(key=lambda e: (e["case"], e["row"]))
    return out


def format_comparison(cmp: dict, old_name: str = "old", new_name: str = "new", show_unchanged=False) -> str:
    """A readable text (markdown tables) of :func:`compare`'s result."""
    from .report import fmt_time

    def table(entries):
        lines = [
            f"| case | row | {old_name} | {new_name} | change | vs numpy (old → new) |",
            "|:---|:---|---:|---:|---:|---:|",
        ]
        for e in entries:
            vs = "—"
            if e["old_vs_numpy"] and e["new_vs_numpy"]:
                vs = f"{e['old_vs_numpy']:.2f}× → {e['new_vs_numpy']:.2f}×"
            lines.append(
                f"| {e['case']} | {e['row']} | {fmt_time(e['old'])} | {fmt_time(e['new'])} | "
                f"{e['change']:.2f}× {'faster' if e['change'] > 1 else 'slower'} | {vs} |"
            )
        return lines

    lines = [f"Comparing {new_name} against {old_name} (change = old time / new time)", ""]
    for label, key in (("Faster", "faster"), ("Slower", "slower")):
        lines.append(f"{label}: {len(cmp[key])}")
        if cmp[key]:
            lines += [""] + table(cmp[key])
        lines.append("")
    lines.append(f"Unchanged (within threshold or overlapping repetitions): {len(cmp['unchanged'])}")
    if show_unchanged and cmp["unchanged"]:
        lines += [""] + table(cmp["unchanged"])
    for key, label in (("only_old", f"only in {old_name}"), ("only_new", f"only in {new_name}")):
        if cmp[key]:
            lines.append(f"{label}: " + ", ".join(cmp[key]))
    return "\n".join(lines) + "\n"
