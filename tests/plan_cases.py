"""Shared pieces of the compiled-plan tests for image and recurrent fronts.

The optimizers and losses every plan is tested with, the targets for each
loss, one run of ``TrainStep.run_steps`` over a shuffled pass (optionally
forced through the per-step loop), and the two ways of comparing runs: bit
for bit, and to rounding; which backends have compiled plans, and what they
promise against their per-step loop.
"""

import numpy as np
from conftest import _require_or_skip, tol

import fastnn
from fastnn import optim

LOSSES = ("cross_entropy", "mse", "bce_with_logits")
OPTIMIZERS = {
    "sgd": lambda p: optim.SGD(p, lr=0.05),
    "sgd_momentum": lambda p: optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3),
    "nesterov": lambda p: optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
    "adam": lambda p: optim.Adam(p, lr=0.01, weight_decay=1e-3),
    "adamw": lambda p: optim.AdamW(p, lr=0.01),
}


def targets(rng, loss, n, nout, dtype):
    """Labels for cross-entropy, values for MSE, 0/1 targets for BCE with logits."""
    if loss == "cross_entropy":
        return rng.integers(0, nout, n)
    if loss == "mse":
        return rng.standard_normal((n, nout)).astype(dtype)
    return (rng.random((n, nout)) > 0.5).astype(dtype)


def loss_fn(name):
    return fastnn.train._resolve_loss(name, None if name != "cross_entropy" else np.zeros(1, int))


def run_steps(backend, model_fn, X, y, loss, opt, batch, force_loop=False, calls=None):
    """Losses, weights and the plan (None: the per-step loop) after run_steps over one shuffled pass.

    ``calls``: a list of (rows, batch_size) run one call each instead of one
    call over all rows in batches of ``batch``.
    """
    with fastnn.use_backend(backend):
        model = model_fn()
        step = fastnn.make_train_step(model, loss_fn(loss), OPTIMIZERS[opt](model.parameters()))
        if force_loop:
            step.compiled_plan = lambda: (None, "forced")
        idx = np.random.default_rng(1).permutation(X.shape[0])
        losses, lo = [], 0
        for rows, bs in calls or [(X.shape[0], batch)]:
            losses.append(step.run_steps(X, y, idx[lo : lo + rows], bs))
            lo += rows
        # whether the step had a plan, under the backend it ran with
        return np.concatenate(losses), [p.data.copy() for p in model.parameters()], step.compiled_plan()[0]


def assert_same(a, b):
    """Two runs of run_steps gave the same losses and weights, bit for bit."""
    np.testing.assert_array_equal(a[0], b[0])
    for u, v in zip(a[1], b[1]):
        np.testing.assert_array_equal(u, v)


def assert_close(a, b, dtype, scale):
    """Two runs agree to ``scale`` times the dtype's rounding tolerance."""
    t = tol(dtype, scale)
    np.testing.assert_allclose(a[0], b[0], **t)
    for u, v in zip(a[1], b[1]):
        np.testing.assert_allclose(u, v, **t)


#: The backends with compiled plans (the NumPy reference runs its specification of them).
PLAN_BACKENDS = ("cython", "numba")


def require(backend):
    """Skip (or fail, when required) a test of ``backend``'s plan if the backend is unavailable."""
    _require_or_skip(backend)


def assert_is_the_loop(plan, loop, backend, dtype, scale):
    """The plan against the same backend's per-step loop: the cython plan calls the loop's routines in its
    order (the same bits); the numba plan multiplies on its own small-product kernel (to rounding)."""
    if backend == "cython":
        assert_same(plan, loop)
    else:
        assert_close(plan, loop, dtype, scale)


def check_hostile_input(model, X, poisons):
    """The hostile-input checks of every plan (run in a child process by the tests that call this).

    ``model`` ends in two classes, ``X`` holds six samples. Row indices and labels out of range (huge,
    negative, at the boundary) raise ValueError before any step (nine cases); ``predict`` runs; then each
    ``(where, value)`` of ``poisons`` written into ``X`` stops the run at its first step with a
    non-finite loss, the model unchanged.
    """
    from fastnn import compiled, nn

    opt = optim.Adam(model.parameters())
    plan = compiled.train_plan(model, nn.CrossEntropyLoss(), opt)
    hyper = compiled.hyper_parameters(opt)[1]
    y = np.zeros(6, np.intp)
    raised = 0
    for bad in (6, -1, 2**62, -(2**63), 2**63 - 1):
        try:
            plan.run(X, y, np.array([0, bad], np.intp), 1, hyper)
        except ValueError:
            raised += 1
    for lab in (2, -1, 2**62, -(2**63)):
        try:
            plan.run(X, np.array([0, lab, 0, 0, 0, 0], np.intp), np.arange(6), 2, hyper)
        except ValueError:
            raised += 1
    assert raised == 9, raised
    plan.predict(X, 4, np.empty((6, 2), X.dtype))
    before = [p.data.copy() for p in model.parameters()]
    for where, value in poisons:
        X[where] = value
        res = plan.run(X, y, np.arange(6), 2, hyper)
        assert res.nonfinite is not None and len(res.losses) == 0
        assert all(np.array_equal(a, p.data) for a, p in zip(before, model.parameters()))
