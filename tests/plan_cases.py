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
