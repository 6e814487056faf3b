"""``fastnn bench``: the benchmark report.

Runs the reference workloads (W1-W6 and the extra cases of WORKLOADS.md)
with every available backend, PyTorch and scikit-learn, in one process and
interleaved; measures the machine's GEMM and copy limits in the same run;
writes ``report.md``, ``results.json`` and ``speedup.png``; compares two runs.

>>> from fastnn.bench import run_bench, write_report     # doctest: +SKIP
>>> results = run_bench(workloads=["W1", "W3"], quick=True)
>>> write_report(results, "bench-out")

Importing this package is cheap; PyTorch, scikit-learn and matplotlib are
imported only when a run needs them.
"""

from .compare import compare, format_comparison
from .report import load_results, markdown, write_report
from .runner import NOISY_SPREAD, derive, run_bench
from .workloads import WORKLOADS, get_workloads

__all__ = [
    "run_bench",
    "derive",
    "write_report",
    "markdown",
    "load_results",
    "compare",
    "format_comparison",
    "WORKLOADS",
    "get_workloads",
    "NOISY_SPREAD",
]
