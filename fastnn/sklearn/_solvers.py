"""scikit-learn's stochastic solvers on fastnn's fused update kernels, and its L-BFGS.

scikit-learn's update rules differ from PyTorch's, which :mod:`fastnn.optim`
implements; both are reproduced here with fastnn's kernels by a change of
variables rather than new kernels:

* **SGD with momentum.** scikit-learn keeps ``v ← μ·v − lr·g`` and adds
  ``v`` (Nesterov: ``μ·v − lr·g``) to the weights; fastnn (PyTorch) keeps
  ``u ← μ·u + g`` and subtracts ``lr·u`` (Nesterov: ``lr·(g + μ·u)``). With
  ``v = −lr·u`` the two are the same steps while ``lr`` stays constant; when
  the schedule changes ``lr`` (``invscaling``, ``adaptive``) the buffers are
  rescaled by ``lr_old / lr_new``, which keeps ``v`` what scikit-learn has.
  ``momentum=1`` (allowed by scikit-learn, not by the kernels) takes a
  NumPy update of the same formula.
* **Adam.** scikit-learn steps by ``lr·sqrt(1−β2ᵗ)/(1−β1ᵗ) · m/(sqrt(v)+ε)``;
  fastnn by ``lr/(1−β1ᵗ) · m/(sqrt(v)/sqrt(1−β2ᵗ) + ε')``. They are equal for
  ``ε' = ε / sqrt(1−β2ᵗ)``, set before every step.
* **The L2 term.** scikit-learn adds ``alpha·W / n_batch`` to the gradient of
  the weights, not of the intercepts: the weights and the intercepts have
  one optimizer each, the weights' with ``weight_decay = alpha / n_batch``
  (L2 in the gradient, fused into the update kernel).

Learning-rate schedules, ``trigger_stopping`` and ``iteration_ends`` follow
scikit-learn's ``SGDOptimizer``/``AdamOptimizer`` exactly.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from fastnn import optim

__all__ = ["SGDSolver", "AdamSolver", "make_solver", "minimize_lbfgs"]


class _Solver:
    """Shared bookkeeping: the learning rate and scikit-learn's stopping hook."""

    def __init__(self, learning_rate_init):
        self.learning_rate_init = float(learning_rate_init)
        self.learning_rate = float(learning_rate_init)

    def iteration_ends(self, time_step):
        """End of an epoch (``time_step``: samples seen so far)."""

    def trigger_stopping(self, msg, verbose):
        """Whether to stop when the loss or score stalls (SGD ``adaptive`` lowers the rate instead)."""
        if verbose:
            print(msg + " Stopping.")
        return True


class SGDSolver(_Solver):
    """scikit-learn's ``SGDOptimizer`` (momentum, Nesterov, the three schedules) on fastnn's SGD kernel.

    Parameters
    ----------
    weights, biases : lists of fastnn Parameters
    learning_rate_init, lr_schedule, momentum, nesterov, power_t : as scikit-learn's
    """

    def __init__(
        self, weights, biases, learning_rate_init=0.1, lr_schedule="constant", momentum=0.9, nesterov=True, power_t=0.5
    ):
        super().__init__(learning_rate_init)
        self.lr_schedule = lr_schedule
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov) and self.momentum > 0
        self.power_t = float(power_t)
        self.params = list(weights) + list(biases)
        self._n_weights = len(weights)
        self._exact = self.momentum >= 1.0  # the kernels take momentum < 1
        if self._exact:
            self._velocities = [np.zeros_like(p.data) for p in self.params]
        else:
            kw = dict(lr=self.learning_rate, momentum=self.momentum, nesterov=self.nesterov)
            self._w = optim.SGD(weights, **kw)
            self._b = optim.SGD(biases, **kw)

    @property
    def velocities(self):
        """The velocities in scikit-learn's convention (``v``, added to the weights)."""
        if self._exact:
            return [v.copy() for v in self._velocities]
        if not self.momentum:
            return [np.zeros_like(p.data) for p in self.params]
        lr = self.learning_rate
        return [-lr * u for u in self._w.velocity + self._b.velocity]

    def _set_learning_rate(self, lr):
        old, self.learning_rate = self.learning_rate, float(lr)
        if self._exact:
            return
        if self.momentum and old != self.learning_rate:
            scale = old / self.learning_rate
            for u in self._w.velocity + self._b.velocity:
                u *= u.dtype.type(scale)
        self._w.lr = self.learning_rate
        self._b.lr = self.learning_rate

    def step(self, l2):
        """One update from the parameters' ``.grad``; ``l2 = alpha / n_batch`` for the weights."""
        if self._exact:
            self._exact_step(l2)
            return
        self._w.weight_decay = l2
        self._w.step()
        self._b.step()

    def _exact_step(self, l2):
        mu, lr = self.momentum, self.learning_rate
        for i, (p, v) in enumerate(zip(self.params, self._velocities)):
            g = p.grad + l2 * p.data if (l2 and i < self._n_weights) else p.grad
            v *= mu
            v -= lr * g
            if self.nesterov:
                p.data += mu * v - lr * g
            else:
                p.data += v

    def iteration_ends(self, time_step):
        if self.lr_schedule == "invscaling":
            self._set_learning_rate(self.learning_rate_init / (time_step + 1) ** self.power_t)

    def trigger_stopping(self, msg, verbose):
        if self.lr_schedule != "adaptive":
            if verbose:
                print(msg + " Stopping.")
            return True
        if self.learning_rate <= 1e-6:
            if verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self._set_learning_rate(self.learning_rate / 5.0)
        if verbose:
            print(f"{msg} Setting learning rate to {self.learning_rate:f}")
        return False


class AdamSolver(_Solver):
    """scikit-learn's ``AdamOptimizer`` on fastnn's Adam kernel; ``weight_decay`` > 0 makes it AdamW.

    Parameters
    ----------
    weights, biases : lists of fastnn Parameters
    learning_rate_init, beta_1, beta_2, epsilon : as scikit-learn's
    weight_decay : float, optional
        Decoupled weight decay of the weights (AdamW): ``W ← W·(1 − lr·weight_decay)``
        before each step. scikit-learn's ``alpha`` L2 term is added to the
        gradient as for the other solvers.
    """

    def __init__(
        self, weights, biases, learning_rate_init=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-8, weight_decay=None
    ):
        super().__init__(learning_rate_init)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)
        self.t = 0
        kw = dict(lr=self.learning_rate_init, betas=(self.beta_1, self.beta_2), eps=self.epsilon)
        self._decoupled = bool(weight_decay)
        self._weights = list(weights)
        if self._decoupled:
            self._w = optim.AdamW(weights, weight_decay=float(weight_decay), **kw)
        else:
            self._w = optim.Adam(weights, **kw)
        self._b = optim.Adam(biases, **kw)

    @property
    def ms(self):
        """First-moment estimates (scikit-learn's name), weights then intercepts."""
        return self._w.exp_avg + self._b.exp_avg

    @property
    def vs(self):
        """Second-moment estimates, weights then intercepts."""
        return self._w.exp_avg_sq + self._b.exp_avg_sq

    def _at_step(self, t):
        """Step count ``t``, and scikit-learn's learning rate for it (the bias corrections folded in)."""
        self.t = t
        self.learning_rate = self.learning_rate_init * math.sqrt(1.0 - self.beta_2**t) / (1.0 - self.beta_1**t)

    def advance(self, steps):
        """Count ``steps`` steps taken on the same state arrays elsewhere (a compiled plan, ``._plan``)."""
        self._at_step(self.t + steps)
        self._w.step_count += steps
        self._b.step_count += steps

    def step(self, l2):
        self._at_step(self.t + 1)
        # scikit-learn puts epsilon outside the bias correction of v: see the module docstring
        eps = self.epsilon / math.sqrt(1.0 - self.beta_2**self.t)
        w, b = self._w, self._b
        if self._decoupled:
            if l2:
                for p in self._weights:
                    p.grad += p.data * p.data.dtype.type(l2)
        else:
            w.weight_decay = l2
        w.eps = eps
        b.eps = eps
        w.step()
        b.step()


def make_solver(name, weights, biases, params):
    """The solver object of an estimator's parameters (``params``: its ``get_params()``)."""
    if name == "sgd":
        return SGDSolver(
            weights,
            biases,
            params["learning_rate_init"],
            params["learning_rate"],
            params["momentum"],
            params["nesterovs_momentum"],
            params["power_t"],
        )
    weight_decay = params["weight_decay"] if name == "adamw" else None
    return AdamSolver(
        weights,
        biases,
        params["learning_rate_init"],
        params["beta_1"],
        params["beta_2"],
        params["epsilon"],
        weight_decay=weight_decay,
    )


def minimize_lbfgs(fun, x0, max_iter, max_fun, tol, verbose=False):
    """scipy's L-BFGS-B on ``fun(x) -> (loss, grad)``, with scikit-learn's options and warning.

    Returns
    -------
    x : ndarray, the solution
    loss : float
    n_iter : int, iterations run (at most ``max_iter``)
    """
    import scipy.optimize
    from sklearn.exceptions import ConvergenceWarning

    res = scipy.optimize.minimize(
        fun, x0, method="L-BFGS-B", jac=True, options={"maxfun": max_fun, "maxiter": max_iter, "gtol": tol}
    )
    if verbose:
        print(f"L-BFGS-B: {res.message} ({res.nit} iterations, {res.nfev} loss evaluations, loss {res.fun:.8f})")
    if res.status != 0:
        try:
            message = res.message.decode("latin1")
        except AttributeError:
            message = res.message
        warnings.warn(
            f"lbfgs failed to converge after {res.nit} iteration(s) (status={res.status}):\n{message}.\n\n"
            f"Increase the number of iterations to improve the convergence (max_iter={max_iter}).\n"
            "You might also want to scale the data: "
            "https://scikit-learn.org/stable/modules/preprocessing.html",
            ConvergenceWarning,
            stacklevel=4,
        )
    return res.x, float(res.fun), min(int(res.nit), int(max_iter))
