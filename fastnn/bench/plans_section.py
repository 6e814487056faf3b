"""Compiled training plans in ``fastnn bench``: whole epochs in compiled code against the per-step loop.

What ``fastnn.fit`` gains when the model has a compiled plan
(:mod:`fastnn.compiled`), measured in one process, rounds interleaved:

* **W3 step inside fit** (64-128-10, batch 32, SGD with momentum): the
  per-step loop ``fit`` ran before plans (``TrainStep`` per contiguous
  minibatch, in its workspace) and the plan (one call per epoch of 128
  steps), for each compiled backend; the ratio is against the best loop of
  the run. The step is 1.29 MFLOP (five products: two forward, three
  backward); its rate is shown against the one-thread float32 GEMM rate of
  BLAS measured here (n = 512), the arithmetic limit of a one-thread step.
* **W5 and W6 steps inside fit** (W5: the 1x28x28 CNN, conv 8 - ReLU -
  max pool - conv 16 - ReLU - max pool - Linear 784-10, batch 64; W6: a
  tanh RNN, T = 50, 8 inputs, 64 hidden, batch 32, its last step into
  Linear 64-10; cross-entropy, SGD with momentum): the per-step loop and the
  plan (``run_steps``), each at 1 and 2 threads, rounds interleaved, on
  the backends that have a plan for them (cython and numba). ``fit`` keeps
  the per-step loop for numba models with image stages, so the numba W5
  plan row is what ``run_steps`` and :mod:`fastnn.compiled` give, not
  ``fit``.
* **predict** of a 64-128-10 MLP on many rows: one call of the forward plan
  against its two matrix products alone (BLAS, into preallocated outputs).
* **fit against scikit-learn's MLPClassifier**, same architecture, solver
  (SGD, momentum 0.9, no Nesterov), batch size, learning rate and epochs
  (``tol=0`` and a patience longer than the run), on the digits and on a
  20,000 x 64, 10-class problem; fastnn in float32, scikit-learn in the
  float64 it computes in.

Every timed call follows a short untimed run of the same row (as in the
main tables), so that no row is timed beside the previous row's spinning
BLAS workers.
"""

from __future__ import annotations

import time

import numpy as np

from . import machine as _machine

__all__ = ["measure", "markdown_lines"]

W3_FLOPS = 2 * (32 * 64 * 128 + 32 * 128 * 10) * 2 + 2 * (32 * 128 * 10)  # 2 forward + 3 backward products


def _median_times(fns: dict, rounds: int, settle: float = 0.0) -> dict:
    """Interleaved rounds of each ``fn() -> seconds``; the median per name.

    With ``settle`` > 0 each timed call follows ``settle`` seconds of the same
    row, untimed (:func:`.machine.warm`): a row timed right after one that ran
    BLAS on several threads otherwise shares its cores with OpenBLAS's spinning
    workers (the cython ``predict`` right after the products measured 1.87x
    them so, 0.7-0.9x with the pause).
    """
    times: dict = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            if settle > 0:
                _machine.warm(fn, settle)
            times[name].append(fn())
    return {k: float(np.median(v)) for k, v in times.items()}


def _settle(backends) -> None:
    """Wait for the numba kernels and plan drivers compiling in the background, so that the rounds time the
    fast ones (``tiny``, the test's run, does not wait: minutes of compilation on a fresh cache)."""
    if "numba" in backends:
        from fastnn.backends.numba_backend import _jit

        _jit.settle(timeout=600)


def _w3_model(fastnn, nn, optim, seed=0):
    fastnn.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    return model, optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def _w3_steps(fastnn, backends, rounds, settle=True, pause=0.0):
    from fastnn import nn, optim

    rng = np.random.default_rng(0)
    n, bs = 4096, 32
    X = rng.standard_normal((n, 64)).astype(np.float32)
    y = rng.integers(0, 10, n).astype(np.intp)
    idx = rng.permutation(n)
    Xs, ys = X[idx], y[idx]
    steps = n // bs
    fns = {}
    for b in backends:
        with fastnn.use_backend(b):
            model, opt = _w3_model(fastnn, nn, optim)
            loop_step = fastnn.make_train_step(model, nn.CrossEntropyLoss(), opt)
            model2, opt2 = _w3_model(fastnn, nn, optim)
            plan_step = fastnn.make_train_step(model2, nn.CrossEntropyLoss(), opt2)
            if plan_step.compiled_plan()[0] is None:
                continue

        def loop(b=b, step=loop_step):
            with fastnn.use_backend(b), step.workspace:
                t0 = time.perf_counter()
                for i in range(0, n, bs):
                    step.run(Xs[i : i + bs], ys[i : i + bs])
                return (time.perf_counter() - t0) / steps

        def plan(b=b, step=plan_step):
            with fastnn.use_backend(b):
                t0 = time.perf_counter()
                step.run_steps(X, y, idx, bs)
                return (time.perf_counter() - t0) / steps

        for f in (loop, plan):
            f()  # compile / bind / warm
        fns[f"{b} loop"], fns[f"{b} plan"] = loop, plan
    if settle:
        _settle(backends)
    return _median_times(fns, rounds, pause)


def _cnn_model(fastnn, nn, optim, seed=0):
    fastnn.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(784, 10),
    )  # fmt: skip
    return model, optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def _rnn_model(fastnn, nn, optim, seed=0):
    fastnn.manual_seed(seed)
    model = nn.Sequential(nn.RNN(8, 64, batch_first=True), nn.LastTimeStep(batch_first=True), nn.Linear(64, 10))
    return model, optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


#: W5 and W6 in the section: (model builder, sample shape, batch size, steps per round (tiny, other))
LAYER_STEPS = {"W5": (_cnn_model, (1, 28, 28), 64, (2, 8)), "W6": (_rnn_model, (50, 8), 32, (2, 16))}


def _layer_steps(fastnn, backends, rounds, tiny, pause=0.0):
    """W5 and W6 per step: the per-step loop against the plan, at 1 and 2 threads (rows "<backend> <n>t loop")."""
    from fastnn import compiled, nn, optim

    out: dict = {}
    reasons: dict = {}
    threads0 = fastnn.get_num_threads()
    for wid, (build, shape, bs, counts) in LAYER_STEPS.items():
        rng = np.random.default_rng(0)
        steps = counts[0] if tiny else counts[1]
        n = steps * bs
        X = rng.standard_normal((n, *shape)).astype(np.float32)
        y = rng.integers(0, 10, n).astype(np.intp)
        idx = rng.permutation(n)
        Xs, ys = X[idx], y[idx]
        fns = {}
        for b in backends:
            with fastnn.use_backend(b):
                model, opt = build(fastnn, nn, optim)
                loop_step = fastnn.make_train_step(model, nn.CrossEntropyLoss(), opt)
                model2, opt2 = build(fastnn, nn, optim)
                plan_step = fastnn.make_train_step(model2, nn.CrossEntropyLoss(), opt2)
                why = compiled.explain(model2, nn.CrossEntropyLoss(), opt2)
            if why is not None:
                reasons[f"{wid} {b}"] = why
                continue
            for t in (1, 2):

                def loop(b=b, step=loop_step, t=t, n=n, steps=steps, Xs=Xs, ys=ys):
                    fastnn.set_num_threads(t)
                    with fastnn.use_backend(b), step.workspace:
                        t0 = time.perf_counter()
                        for i in range(0, n, bs):
                            step.run(Xs[i : i + bs], ys[i : i + bs])
                        return (time.perf_counter() - t0) / steps

                def plan(b=b, step=plan_step, t=t, steps=steps, X=X, y=y, idx=idx):
                    fastnn.set_num_threads(t)
                    with fastnn.use_backend(b):
                        t0 = time.perf_counter()
                        step.run_steps(X, y, idx, bs)
                        return (time.perf_counter() - t0) / steps

                fns[f"{b} {t}t loop"], fns[f"{b} {t}t plan"] = loop, plan
        try:
            for f in fns.values():
                f()  # bind / warm
            if not tiny:
                _settle(backends)
            out[wid] = _median_times(fns, rounds, pause)
        finally:
            fastnn.set_num_threads(threads0)
    return out, reasons


def _one_thread_gemm_gflops(fastnn, n=512, reps=5):
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    b = a.T.copy()
    c = np.empty_like(a)
    threads = fastnn.get_num_threads()
    fastnn.set_num_threads(1)  # every BLAS of the process, through fastnn's thread control
    try:
        np.matmul(a, b, out=c)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            np.matmul(a, b, out=c)
            times.append(time.perf_counter() - t0)
    finally:
        fastnn.set_num_threads(threads)
    return 2.0 * n**3 / float(np.median(times)) / 1e9


def _predict(fastnn, backends, rows, rounds, pause=0.0):
    from fastnn import nn

    rng = np.random.default_rng(1)
    X = rng.standard_normal((rows, 64)).astype(np.float32)
    fastnn.manual_seed(1)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    w1, w2 = model[0].weight.data, model[2].weight.data
    h = np.empty((rows, 128), np.float32)
    z = np.empty((rows, 10), np.float32)

    def products():
        t0 = time.perf_counter()
        np.matmul(X, w1.T, out=h)
        np.matmul(h, w2.T, out=z)
        return time.perf_counter() - t0

    fns = {"two products (BLAS)": products}
    for b in backends:

        def pred(b=b):
            with fastnn.use_backend(b):
                t0 = time.perf_counter()
                fastnn.predict(model, X, batch_size=1024)
                return time.perf_counter() - t0

        fns[f"{b} predict"] = pred
    for f in fns.values():
        f()
    return _median_times(fns, rounds, pause)


def _sklearn_fit(fastnn, backends, data, epochs, rounds, pause=0.0):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    from fastnn import nn, optim

    X, y = data
    X32 = X.astype(np.float32)
    y = y.astype(np.intp)

    def skl():
        clf = MLPClassifier(
            hidden_layer_sizes=(128,), solver="sgd", learning_rate_init=0.1, momentum=0.9,
            nesterovs_momentum=False, batch_size=32, max_iter=epochs, tol=0.0, n_iter_no_change=10**9,
            alpha=0.0, shuffle=True, random_state=0,
        )  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            t0 = time.perf_counter()
            clf.fit(X, y)
            return time.perf_counter() - t0

    fns = {"scikit-learn": skl}
    for b in backends:

        def fit(b=b):
            with fastnn.use_backend(b):
                fastnn.manual_seed(0)
                model = nn.Sequential(nn.Linear(X.shape[1], 128), nn.ReLU(), nn.Linear(128, 10))
                opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
                t0 = time.perf_counter()
                fastnn.fit(model, X32, y, optimizer=opt, epochs=epochs, batch_size=32, seed=0, progress=False)
                return time.perf_counter() - t0

        fns[f"{b} fit"] = fit
    for f in fns.values():
        f()
    return _median_times(fns, rounds, pause)


def measure(backends, quick: bool, tiny: bool = False, log=None) -> dict:
    """The section's measurements (see the module docstring); ``{"error": ...}`` if something fails."""
    import fastnn

    backends = [b for b in backends if b in ("cython", "numba")]
    out: dict = {"backends": backends, "quick": quick}
    if not backends:
        return {"error": "no compiled backend available"}
    rounds = 3 if (quick or tiny) else 7
    pause = 0.0 if tiny else _machine.SETTLE_S  # untimed run of a row before each timed one
    try:
        out["w3"] = _w3_steps(fastnn, backends, rounds, settle=not tiny, pause=pause)
        out["w3_flops"] = W3_FLOPS
        out["gemm1_gflops"] = _one_thread_gemm_gflops(fastnn)
        if log:
            log("plans: W3")

        out["layers"], out["unsupported"] = _layer_steps(fastnn, backends, rounds, tiny, pause)
        if log:
            log("plans: W5, W6")
        rows = 20_000 if tiny else (200_000 if quick else 1_000_000)
        out["predict_rows"] = rows
        out["predict"] = _predict(fastnn, backends, rows, rounds, pause)
        if log:
            log("plans: predict")
        try:
            import sklearn  # noqa: F401
        except ImportError:
            out["sklearn"] = None
        else:
            from sklearn.datasets import load_digits

            X, y = load_digits(return_X_y=True)
            digits_epochs = 2 if tiny else (10 if quick else 30)
            rng = np.random.default_rng(2)
            n_big = 2_000 if tiny else 20_000
            Xb = rng.standard_normal((n_big, 64))
            yb = (Xb[:, :10] @ rng.standard_normal((10, 10))).argmax(axis=1)
            big_epochs = 1 if tiny else (2 if quick else 5)
            sk_rounds = 1 if tiny else (2 if quick else 3)
            out["sklearn"] = {
                "digits": {
                    "epochs": digits_epochs,
                    "n": X.shape[0],
                    "times": _sklearn_fit(fastnn, backends, (X / 16.0, y), digits_epochs, sk_rounds, pause),
                },
                "20k": {
                    "epochs": big_epochs,
                    "n": n_big,
                    "times": _sklearn_fit(fastnn, backends, (Xb, yb), big_epochs, sk_rounds, pause),
                },
            }
            if log:
                log("plans: scikit-learn")
    except Exception as exc:  # the section must not take the whole report down
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def markdown_lines(plans: dict | None) -> list[str]:
    """The report's section on compiled plans (nothing when it did not run)."""
    if not plans:
        return []
    from .report import fmt_time

    lines = ["## Compiled training plans — whole epochs in one call (`fit`)", ""]
    if plans.get("error") and "w3" not in plans:
        return lines + [f"error: {plans['error']}", ""]
    w3 = plans.get("w3", {})
    loops = {k: v for k, v in w3.items() if k.endswith(" loop")}
    best = min(loops.values()) if loops else None
    gemm1 = plans.get("gemm1_gflops")
    lines += [
        "W3 (64-128-10, batch 32, SGD with momentum), time per step, medians of interleaved rounds. "
        '"loop": one Python call per step (`TrainStep`, what `fit` ran before plans); "plan": one call '
        "per epoch of 128 steps. Ratios against the best loop of this run; GFLOP/s from the step's "
        f"{plans.get('w3_flops', W3_FLOPS) / 1e6:.2f} MFLOP"
        + (f", against BLAS's one-thread float32 GEMM rate here ({gemm1:.0f} GFLOP/s)." if gemm1 else "."),
        "",
        "| row | per step | vs best loop | GFLOP/s | of 1-thread GEMM |",
        "|:---|---:|---:|---:|---:|",
    ]
    for name, t in w3.items():
        gf = plans.get("w3_flops", W3_FLOPS) / t / 1e9
        ratio = f"{best / t:.2f}x" if best else ""
        share = f"{100 * gf / gemm1:.0f} %" if gemm1 else ""
        lines.append(f"| {name} | {fmt_time(t)} | {ratio} | {gf:.0f} | {share} |")
    lines.append("")
    layers = plans.get("layers") or {}
    if layers:
        lines += [
            "W5 (CNN, batch 64) and W6 (tanh RNN T=50 H=64 + Linear, batch 32) inside `fit`, time per step, "
            "medians of interleaved rounds: the per-step loop against the plan (`run_steps`) at 1 and 2 threads. "
            "`fit` keeps the per-step loop for numba models with image stages, so the numba W5 plan row "
            "is what `run_steps` gives, not `fit`.",
            "",
            "| workload | row | per step | loop / plan |",
            "|:---|:---|---:|---:|",
        ]
        for wid, times in layers.items():
            for name, t in times.items():
                loop = times.get(name.replace(" plan", " loop"))
                ratio = f"{loop / t:.2f}x" if name.endswith(" plan") and loop else ""
                lines.append(f"| {wid} | {name} | {fmt_time(t)} | {ratio} |")
        lines.append("")
    for model, why in (plans.get("unsupported") or {}).items():
        lines.append(f"- {model}: no plan, `fit` runs one step per call ({why}).")
    lines.append("")
    pred = plans.get("predict")
    if pred:
        base = pred.get("two products (BLAS)")
        lines += [
            f"predict, 64-128-10 MLP, {plans['predict_rows']:,} rows: one call of the forward plan against "
            "its two matrix products alone.",
            "",
            "| row | time | vs the products |",
            "|:---|---:|---:|",
        ]
        for name, t in pred.items():
            lines.append(f"| {name} | {fmt_time(t)} | {t / base:.2f}x |")
        lines.append("")
    skl = plans.get("sklearn")
    if skl:
        lines += [
            "`fastnn.fit` against scikit-learn's `MLPClassifier` (same architecture 64-128-10, SGD with "
            "momentum 0.9, batch 32, learning rate 0.1, epochs; fastnn float32, scikit-learn float64).",
            "",
            "| data | epochs | scikit-learn | fastnn | speed-up |",
            "|:---|---:|---:|---:|---:|",
        ]
        for label, entry in (("digits (1,797 x 64)", skl["digits"]), ("20,000 x 64", skl["20k"])):
            times = entry["times"]
            sk = times["scikit-learn"]
            for name, t in times.items():
                if name != "scikit-learn":
                    lines.append(f"| {label} | {entry['epochs']} | {fmt_time(sk)} | {name} {fmt_time(t)} | "
                                 f"{sk / t:.1f}x |")  # fmt: skip
        lines.append("")
    if plans.get("error"):
        lines += [f"(part of the section failed: {plans['error']})", ""]
    return lines
