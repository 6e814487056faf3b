"""The scikit-learn section of ``fastnn bench`` (workload ``SKL``, or ``--sklearn``).

``fastnn.sklearn``'s estimators against scikit-learn's, as a user swaps one
for the other: the same data (float64, as scikit-learn's data sets and
``make_classification`` give it), the same architecture, solver, batches and
number of epochs (``tol=0`` and a patience longer than the run, so neither
stops early), the same ``random_state``. fastnn trains in its default
float32 and scikit-learn in float64, the precision each computes in by
default; the ``float64`` case has fastnn compute in float64 too.

Each fastnn backend is a row (the estimators use the backend the runner
selects); scikit-learn is the ``sklearn`` anchor row. A call is a whole
``fit`` or ``predict_proba``, so a case takes a few calls per row; the
section is not part of the default run (a full run of it takes minutes).
"""

from __future__ import annotations

import warnings

from .report import ROW_LABELS, ROW_ORDER, fmt_time
from .workloads import Case, Workload

__all__ = ["WORKLOAD", "BUILDERS", "ANCHOR_BUILDERS", "section_lines"]

#: What the section measures: (kind, params). ``skl_fit``: estimator.fit on
#: the whole data; ``skl_predict_proba``: on every row of the data.
_CASES = [
    ("skl_fit", dict(data="digits", hidden=(100,), epochs=20, dtype="float32")),
    ("skl_fit", dict(data="digits", hidden=(100,), epochs=20, dtype="float64")),
    ("skl_fit", dict(data="classification", n=100_000, hidden=(256, 128), epochs=1, dtype="float32")),
    ("skl_predict_proba", dict(data="classification", n=100_000, hidden=(256, 128), dtype="float32")),
]
#: ``--tiny`` (tests of the machinery): small data, two epochs.
_TINY = {"n": 600, "epochs": 2}


def _name(kind, p):
    data = "digits" if p["data"] == "digits" else f"{p['n']}x100"
    arch = "-".join(
        str(u)
        for u in ((64,) if p["data"] == "digits" else (100,))
        + tuple(p["hidden"])
        + ((10,) if p["data"] == "digits" else (2,))
    )
    if kind == "skl_fit":
        name = f"fit {data} {arch} adam {p['epochs']} epochs"
    else:
        name = f"predict_proba {data} {arch}"
    return name + (", fastnn float64" if p["dtype"] == "float64" else "")


def _cases(quick, tiny):
    cases = []
    for kind, params in _CASES:
        p = dict(params)
        if tiny:
            p.update({k: v for k, v in _TINY.items() if k in p})
        cases.append(Case("SKL", _name(kind, p), kind, p))
    return cases


WORKLOAD = Workload(
    "SKL",
    "fastnn.sklearn against scikit-learn (whole fit and predict_proba calls)",
    None,
    ("fastnn.sklearn.MLPClassifier", "sklearn.neural_network.MLPClassifier"),
    _cases,
    note="fastnn float32 (its default) against scikit-learn float64 (its default for float64 data), "
    "same architecture, solver, batches and epochs",
)


def _data(p):
    if p["data"] == "digits":
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
        return X / 16.0, y
    from sklearn.datasets import make_classification

    return make_classification(n_samples=p["n"], n_features=100, n_informative=30, random_state=0)


def _estimator(cls, p, **extra):
    # tol=0 and a patience longer than the run: both libraries run every epoch
    return cls(
        hidden_layer_sizes=p["hidden"],
        max_iter=p.get("epochs", 1),
        tol=0.0,
        n_iter_no_change=10_000,
        random_state=0,
        **extra,
    )


def _fit_step(cls, p, **extra):
    X, y = _data(p)
    est = _estimator(cls, p, **extra)

    def step():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning: the epochs are fixed on purpose
            return est.fit(X, y)

    step.estimator = est
    return step


def _predict_step(cls, p, **extra):
    X, y = _data(p)
    est = _estimator(cls, {**p, "epochs": 1}, **extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X[:2000], y[:2000])
    step = lambda: est.predict_proba(X)
    step.estimator = est
    return step


def _fastnn_fit(p):
    from fastnn.sklearn import MLPClassifier

    return _fit_step(MLPClassifier, p, dtype=p["dtype"])


def _fastnn_predict(p):
    from fastnn.sklearn import MLPClassifier

    return _predict_step(MLPClassifier, p, dtype=p["dtype"])


def _sklearn_fit(p):
    from sklearn.neural_network import MLPClassifier

    return _fit_step(MLPClassifier, p)


def _sklearn_predict(p):
    from sklearn.neural_network import MLPClassifier

    return _predict_step(MLPClassifier, p)


#: fastnn row builders by case kind (merged into ``workloads``' table).
BUILDERS = {"skl_fit": _fastnn_fit, "skl_predict_proba": _fastnn_predict}
#: scikit-learn anchor builders by case kind (merged into ``anchors``' table).
ANCHOR_BUILDERS = {"skl_fit": _sklearn_fit, "skl_predict_proba": _sklearn_predict}


def section_lines(results: dict) -> list[str]:
    """The section's table: every row's median and each fastnn backend's speed-up over scikit-learn."""
    wl = next((w for w in results.get("workloads", []) if w.get("id") == "SKL" and w.get("cases")), None)
    if wl is None:
        return []
    fast = [
        n
        for n in ROW_ORDER
        if n in ("numpy", "numba", "cython") and any(c["rows"].get(n, {}).get("median") for c in wl["cases"])
    ]
    cols = ["case", "scikit-learn"] + [ROW_LABELS[n] for n in fast] + [f"{ROW_LABELS[n]} vs scikit-learn" for n in fast]
    threads = results.get("settings", {}).get("threads")
    lines = [
        "## fastnn.sklearn against scikit-learn",
        "",
        f"Whole calls, {threads} thread(s); \"vs scikit-learn\" is scikit-learn's time over fastnn's, measured "
        "in the same rounds (above 1× = fastnn faster). fastnn float32, scikit-learn float64 (each one's "
        "default) unless the case says otherwise.",
        "",
        "| " + " | ".join(cols) + " |",
        "|:---|" + "|".join("---:" for _ in cols[1:]) + "|",
    ]
    for case in wl["cases"]:
        rows = case["rows"]
        sk = rows.get("sklearn", {}).get("median")

        def cell(name):
            r = rows.get(name, {})
            if r.get("median"):
                return fmt_time(r["median"]) + (" ⚠" if r.get("noisy") else "")
            return "error" if r.get("error") else "—"

        cells = [case["name"], cell("sklearn")] + [cell(n) for n in fast]
        for n in fast:
            t = rows.get(n, {}).get("median")
            cells.append(f"{sk / t:.2f}×" if sk and t else "—")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines
