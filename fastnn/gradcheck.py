"""Check a module's backward pass against finite differences, in float64.

::

    report = fastnn.gradcheck(layer, x)      # raises GradcheckError on a mismatch
    print(report)

The check uses the scalar ``L = Σ y ⊙ r`` with a fixed random ``r`` (so
``dL/dy = r``), runs ``forward``/``backward`` once for the analytic
gradients, and compares them with central differences
``(L(θ + ε) − L(θ − ε)) / 2ε`` for every element of the input and of every
parameter. The module's parameters are temporarily replaced by float64
copies (and restored afterwards, unchanged), so float32 layers are checked in
float64 too. A user-written layer works as long as its ``forward`` and
``backward`` read ``param.data`` and write ``param.grad`` at call time.
"""

from __future__ import annotations

import numpy as np

__all__ = ["gradcheck", "numerical_gradient", "GradcheckError", "GradcheckReport"]


class GradcheckError(AssertionError):
    """Raised by :func:`gradcheck` when a gradient differs from finite differences."""

    def __init__(self, report):
        self.report = report
        super().__init__(str(report))


class GradcheckReport:
    """Outcome of :func:`gradcheck`.

    Attributes
    ----------
    results : list of dict
        One per checked tensor (``"input"``, then parameter names): ``name``,
        ``shape``, ``max_abs_err``, ``max_rel_err``, ``worst_index``,
        ``analytic`` and ``numeric`` at that index, ``ok``.
    ok : bool
    """

    def __init__(self, results, atol, rtol, eps):
        self.results = results
        self.atol, self.rtol, self.eps = atol, rtol, eps

    @property
    def ok(self) -> bool:
        return all(r["ok"] for r in self.results)

    @property
    def worst(self):
        """The result with the largest error relative to its tolerance."""
        return max(self.results, key=lambda r: r["excess"]) if self.results else None

    def __bool__(self):
        return self.ok

    def __str__(self):
        lines = [
            f"gradcheck {'passed' if self.ok else 'FAILED'} (eps={self.eps:g}, atol={self.atol:g}, rtol={self.rtol:g})"
        ]
        for r in self.results:
            lines.append(
                f"  {'ok  ' if r['ok'] else 'FAIL'} {r['name']:<20s} shape={r['shape']} "
                f"max_abs_err={r['max_abs_err']:.3e} max_rel_err={r['max_rel_err']:.3e}"
                + (
                    ""
                    if r["ok"]
                    else f" worst at {r['worst_index']}: analytic={r['analytic']:.8g} numeric={r['numeric']:.8g}"
                )
            )
        w = self.worst
        if w is not None and not self.ok:
            lines.append(
                f"  worst mismatch: {w['name']}{list(w['worst_index'])}: analytic {w['analytic']:.8g} "
                f"vs numeric {w['numeric']:.8g}"
            )
        return "\n".join(lines)

    __repr__ = __str__


def _compare(name, analytic, numeric, atol, rtol):
    err = np.abs(analytic - numeric)
    allowed = atol + rtol * np.abs(numeric)
    excess = err / allowed
    if err.size:
        idx = np.unravel_index(int(np.nanargmax(np.where(np.isnan(excess), np.inf, excess))), err.shape)
        worst = float(excess[idx]) if not np.isnan(excess[idx]) else np.inf
        rel = err / np.maximum(np.abs(numeric), 1e-300)
        return dict(
            name=name,
            shape=tuple(analytic.shape),
            max_abs_err=float(np.nanmax(err)),
            max_rel_err=float(np.nanmax(np.where(err == 0, 0.0, rel))),
            worst_index=tuple(int(i) for i in idx),
            analytic=float(analytic[idx]),
            numeric=float(numeric[idx]),
            ok=bool(np.all(err <= allowed)),
            excess=worst,
        )
    return dict(
        name=name,
        shape=tuple(analytic.shape),
        max_abs_err=0.0,
        max_rel_err=0.0,
        worst_index=(),
        analytic=0.0,
        numeric=0.0,
        ok=True,
        excess=0.0,
    )


def numerical_gradient(f, x, *, eps=1e-6, indices=None):
    """Central finite differences of a scalar function with respect to an array.

    Each element ``x[i]`` is moved to ``x[i] ± eps`` in place, ``f()`` is
    evaluated at both points and ``x[i]`` is restored, so ``f`` must read
    ``x`` (or a view of it) each time it is called.

    Parameters
    ----------
    f : callable
        ``f() -> float``, evaluated ``2 * n`` times for ``n`` checked elements.
    x : numpy.ndarray
        A writeable array that ``f`` reads; unchanged on return.
    eps : float, default 1e-6
        Finite-difference step.
    indices : array_like of int, optional
        Flat indices of the elements to differentiate (all by default); the
        other elements of the result are NaN.

    Returns
    -------
    numpy.ndarray
        float64 array of ``x``'s shape holding ``(f(x + eps) - f(x - eps)) / 2 eps``.
    """
    # reshape(-1) of a non-contiguous array is a copy that f would never see.
    if not isinstance(x, np.ndarray) or not x.flags.writeable or not x.flags.c_contiguous:
        raise TypeError("numerical_gradient needs a writeable, C-contiguous numpy array that f() reads")
    g = np.full(x.shape, np.nan)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size) if indices is None else indices:
        old = flat[i]
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * eps)
    return g


def gradcheck(
    module, x, *, eps=1e-6, atol=1e-5, rtol=1e-4, seed=0, max_elements=None, check_input=True, raise_exception=True
):
    """Compare ``module.backward`` with central finite differences in float64.

    Parameters
    ----------
    module : Module
        Any module with ``forward``/``backward`` (its own parameters are
        checked too).
    x : array_like
        An input; converted to float64, except integer input (indices),
        which is kept and needs ``check_input=False``. The parameters and
        float buffers are checked in float64 and restored afterwards.
    eps : float, default 1e-6
        Finite-difference step.
    atol, rtol : float
        An element passes when ``|analytic − numeric| <= atol + rtol·|numeric|``.
    seed : int, default 0
        Seed of the random output weighting ``r`` and of any element sampling.
    max_elements : int, optional
        Check at most this many randomly chosen elements per tensor (all by
        default).
    check_input : bool, default True
        Also check dL/dx.
    raise_exception : bool, default True
        Raise :class:`GradcheckError` (with the report and the worst mismatch)
        if any check fails; otherwise return the failing report.

    Returns
    -------
    GradcheckReport
    """
    rng = np.random.default_rng(seed)
    x = np.asarray(x)
    # integer input (an embedding's indices) stays as it is: only parameters can be checked then
    x = np.array(x, dtype=x.dtype if x.dtype.kind in "iu" else np.float64, copy=True)
    if x.dtype.kind in "iu" and check_input:
        raise ValueError("integer input has no gradient: pass check_input=False")
    params = list(module.named_parameters())
    saved = [(p, p.data, p.grad) for _, p in params]
    # float buffers (running statistics) in float64 too; all restored afterwards, forward calls update them
    saved_buffers = [
        (m, name, b) for m in module.modules() for name, b in getattr(m, "_buffers", {}).items() if b is not None
    ]
    for p, data, _grad in saved:
        p.data = np.array(data, dtype=np.float64, copy=True)
        p.grad = np.zeros_like(p.data)
    for m, name, b in saved_buffers:
        setattr(m, name, np.array(b, dtype=np.float64 if b.dtype.kind == "f" else b.dtype, copy=True))
    try:
        y = np.array(module.forward(x), dtype=np.float64, copy=True)
        r = rng.standard_normal(y.shape)
        grad_in = module.backward(r.copy())
        grad_in = None if grad_in is None else np.array(grad_in, dtype=np.float64, copy=True)
        analytic = {name: p.grad.copy() for name, p in params}

        def loss():
            return float(np.dot(np.asarray(module.forward(x), dtype=np.float64).ravel(), r.ravel()))

        def numeric(arr):
            idx = None
            if max_elements is not None and arr.size > max_elements:
                idx = np.sort(rng.choice(arr.size, size=int(max_elements), replace=False))
            return numerical_gradient(loss, arr, eps=eps, indices=idx), idx

        results = []
        targets = []
        if check_input:
            if grad_in is None:
                raise ValueError("module.backward returned None: no input gradient to check (check_input=False)")
            if grad_in.shape != x.shape:
                raise ValueError(
                    f"backward returned a gradient of shape {grad_in.shape} for an input of shape {x.shape}"
                )
            targets.append(("input", x, grad_in))
        for name, p in params:
            targets.append((name, p.data, analytic[name]))
        for name, arr, a in targets:
            num, idx = numeric(arr)
            mask = ~np.isnan(num)
            a_sel = np.where(mask, a, 0.0)
            n_sel = np.where(mask, num, 0.0)
            results.append(_compare(name, a_sel, n_sel, atol, rtol))
    finally:
        for p, data, grad in saved:
            p.data = data
            p.grad = grad
        for m, name, b in saved_buffers:
            setattr(m, name, b)
    report = GradcheckReport(results, atol, rtol, eps)
    if raise_exception and not report.ok:
        raise GradcheckError(report)
    return report
