"""scikit-learn's stochastic steps as one compiled training plan: whole epochs without Python.

The per-step loop of :meth:`fastnn.sklearn.MLPClassifier.fit` crosses the
interpreter a dozen times a step (layers, head, L2 term, two optimizers);
for the small networks scikit-learn's MLPs are used for, that is most of
the time. A :class:`fastnn.ops.TrainPlan` with ``reduction="sklearn"`` runs
the same steps in the compiled backend (gather the shuffled rows, forward,
scikit-learn's head and loss, backward, the L2 term on the weights, the
solver's update), many per call.

It is the same algorithm, not an approximation: the same batches in the
same order, the same loss and L2 term, the same SGD and Adam steps on the
same state arrays as the solvers of :mod:`fastnn.sklearn._solvers` (which
keep scheduling the learning rate between epochs). The plan covers dense
input, no sample or class weights, no dropout, the ``sgd`` (momentum below
1) and ``adam`` solvers and the softmax, logistic and identity heads on a
compiled backend; anything else (and the NumPy backend, the
specification) keeps the per-step loop.
"""

from __future__ import annotations

import time

import numpy as np

from fastnn import compiled, ops
from fastnn.backends import current

from ._solvers import AdamSolver, SGDSolver

__all__ = ["CompiledSteps"]

#: The plan's loss for each head of scikit-learn's MLPs.
_LOSSES = {"softmax": "cross_entropy", "logistic": "bce_with_logits", "identity": "mse"}
#: Work per call of the plan: Python is reached about this often (Ctrl-C, chunk bookkeeping).
CALL_SECONDS = 0.02


class CompiledSteps:
    """An estimator's network, head and solver bound as a compiled plan for its stochastic steps.

    Build with :meth:`create`, which returns None (and why) where the plan does not apply.
    """

    def __init__(self, plan, solver, alpha):
        self.plan = plan
        self.solver = solver
        self.alpha = float(alpha)
        self.chunk = 8  # steps per call, adapted to CALL_SECONDS after each call

    @classmethod
    def create(cls, network, out_activation, solver, alpha, X, sample_weight):
        """``(CompiledSteps, None)``, or ``(None, why)`` when these steps keep the per-step loop."""
        if current().name == "numpy":
            return None, "the numpy backend runs the per-step loop (the specification)"
        if not isinstance(X, np.ndarray):
            return None, "sparse input is densified batch by batch"
        if sample_weight is not None:
            return None, "sample or class weights"
        if out_activation not in _LOSSES:
            return None, f"the {out_activation} output (Poisson loss)"
        if type(solver) is SGDSolver:
            if solver._exact:
                return None, "momentum >= 1"
            kind = "sgd"
        elif type(solver) is AdamSolver and not solver._decoupled:
            kind = "adam"
        else:
            return None, "the adamw solver"
        try:
            specs = compiled._dense_chain(network)[0]  # (an MLP: nothing in front of the dense layers)
        except compiled.Unsupported as exc:
            return None, str(exc)
        # one update over both optimizers' arrays: the weights' (which decay) then the intercepts'
        w_opt, b_opt = solver._w, solver._b
        w_opt._plan._check()  # creates the state arrays the solvers and the plan then share
        b_opt._plan._check()
        update = ops.UpdatePlan(w_opt.params + b_opt.params, w_opt._plan.state_names)
        for name in update.state_names:
            update.state[name] = list(w_opt._plan.state[name]) + list(b_opt._plan.state[name])
        return cls(ops.TrainPlan(specs, _LOSSES[out_activation], "sklearn", update, kind), solver, alpha), None

    def _hyper(self):
        s = self.solver
        if type(s) is SGDSolver:
            return (s.learning_rate, s.momentum, float(s.nesterov), self.alpha, 0.0, 0.0)
        return (s.learning_rate_init, s.beta_1, s.beta_2, self.alpha, s.epsilon, 0.0)

    def run(self, X, targets, index, batch_size):
        """The steps over ``index`` (an epoch's rows in order), ``batch_size`` rows each.

        Returns
        -------
        total : float
            Σ loss · rows over the steps run (scikit-learn's accumulation).
        stopped : int or None
            None when every step ran; else the step (from 0) whose loss was
            not finite: it and the rest did not run (scikit-learn runs them,
            the caller's per-step loop takes over).
        """
        index = np.ascontiguousarray(index, dtype=np.intp)
        n = index.shape[0]
        nsteps = -(-n // batch_size)
        losses = np.empty(max(self.chunk, 1), np.float64)
        total = 0.0
        s = 0
        while s < nsteps:
            k = min(self.chunk, nsteps - s)
            if losses.shape[0] < k:
                losses = np.empty(k, np.float64)
            lo, hi = s * batch_size, min(n, (s + k) * batch_size)
            step0 = self.solver.t if type(self.solver) is AdamSolver else 0
            started = time.perf_counter()
            res = self.plan.run(X, targets, index[lo:hi], batch_size, self._hyper(), step0, losses[:k])
            elapsed = time.perf_counter() - started
            done = res.losses.shape[0]
            if done and type(self.solver) is AdamSolver:
                self.solver.advance(done)
            for j, value in enumerate(res.losses.tolist()):  # in order, as the per-step loop adds them
                total += value * (min(lo + (j + 1) * batch_size, hi) - (lo + j * batch_size))
            s += done
            if res.nonfinite is not None:
                return total, s
            if done:
                self.chunk = max(1, min(1 << 20, int(CALL_SECONDS / max(elapsed / done, 1e-9))))
        return total, None
