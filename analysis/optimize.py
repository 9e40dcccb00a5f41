"""Optimizer wrapper: bounded derivative-free minimization with a log of θ and the objective.

lme4 uses BOBYQA (a derivative-free trust-region method with quadratic models). SciPy's
COBYQA is its successor by the same school and handles the θ bounds (diagonal of each
Cholesky factor ≥ 0) exactly, which matters for singular fits; bounded Nelder-Mead and
Powell are available as fallbacks. The log lets a user see where a fit went.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from scipy import optimize

log = logging.getLogger(__name__)

METHODS = ("cobyqa", "nelder-mead", "powell", "l-bfgs-b")


@dataclass
class OptimizerLog:
    """Every evaluation: parameters and objective, in order."""

    params: list[np.ndarray] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class OptimizeResult:
    par: np.ndarray
    fval: float
    nfev: int
    converged: bool
    message: str
    method: str


def minimize(fun: Callable[[np.ndarray], float], x0: np.ndarray, lower: np.ndarray,
             method: str = "cobyqa", tol: float = 1e-7, maxfev: int = 10_000,
             trace: OptimizerLog | None = None, initial_step: float = 0.25) -> OptimizeResult:
    """Minimize ``fun`` over x ≥ lower (−inf allowed) starting from ``x0``.

    ``tol`` is the final trust-region radius (COBYQA) or the x tolerance of the others;
    a non-finite objective is mapped to a large value so that a step into an
    ill-conditioned corner is rejected rather than fatal.
    """
    if method not in METHODS:
        raise ValueError(f"unknown optimizer {method!r}: choose one of {METHODS}")
    trace = trace if trace is not None else OptimizerLog()
    first = len(trace.values)  # a shared log may hold another stage's parameters before these
    x0 = np.maximum(np.asarray(x0, dtype=float), lower)

    def wrapped(x: np.ndarray) -> float:
        x = np.maximum(x, lower)
        try:
            value = float(fun(x))
        except np.linalg.LinAlgError:
            value = np.inf
        if not np.isfinite(value):
            value = 1e300
        trace.params.append(x.copy())
        trace.values.append(value)
        return value

    bounds = optimize.Bounds(lower, np.full_like(lower, np.inf))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if method == "cobyqa":
            res = optimize.minimize(
                wrapped, x0, method="COBYQA", bounds=bounds,
                options={"initial_tr_radius": initial_step, "final_tr_radius": tol,
                         "maxfev": maxfev})
        elif method == "nelder-mead":
            res = optimize.minimize(
                wrapped, x0, method="Nelder-Mead", bounds=bounds,
                options={"xatol": tol, "fatol": 1e-10, "maxfev": maxfev, "adaptive": True})
        elif method == "powell":
            res = optimize.minimize(wrapped, x0, method="Powell", bounds=bounds,
                                    options={"xtol": tol, "ftol": 1e-12, "maxfev": maxfev})
        else:
            res = optimize.minimize(wrapped, x0, method="L-BFGS-B", bounds=bounds,
                                    options={"ftol": 1e-14, "gtol": 1e-8, "maxfun": maxfev})
    par = np.maximum(res.x, lower)
    best = first + int(np.argmin(trace.values[first:]))
    if trace.values[best] < wrapped(par):
        par = trace.params[best]
    fval = float(wrapped(par))
    log.debug("%s: %d evaluations, f = %.10g, %s", method, len(trace), fval, res.message)
    return OptimizeResult(par, fval, int(res.nfev), bool(res.success), str(res.message), method)


def deriv12(fun: Callable[[np.ndarray], float], x: np.ndarray, delta: float = 1e-4
            ) -> tuple[np.ndarray, np.ndarray]:
    """Central finite-difference gradient and Hessian, as lme4's ``deriv12`` (δ = 1e-4).

    lme4's default standard errors of a GLMM come from this Hessian over (θ, β); using the
    same step makes them comparable to 1e-3 or better.
    """
    x = np.asarray(x, dtype=float)
    k = len(x)
    fx = fun(x)
    grad, hess = np.zeros(k), np.zeros((k, k))
    step = np.eye(k) * delta
    for i in range(k):
        fadd, fsub = fun(x + step[i]), fun(x - step[i])
        hess[i, i] = (fadd - 2 * fx + fsub) / delta**2
        grad[i] = (fadd - fsub) / (2 * delta)
        for j in range(i):
            faa = fun(x + step[i] + step[j])
            fas = fun(x + step[i] - step[j])
            fsa = fun(x - step[i] + step[j])
            fss = fun(x - step[i] - step[j])
            hess[i, j] = hess[j, i] = (faa - fas - fsa + fss) / (4 * delta**2)
    return grad, hess


class BatchObjective(Protocol):
    """B smooth functions of k parameters, evaluated together."""

    def deviance(self, par: np.ndarray) -> np.ndarray:
        """(B,) at par (B, k)."""
        ...

    def gradient(self, par: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Values (B,) and gradients (B, k) at par (B, k)."""
        ...

    def take(self, members: np.ndarray) -> BatchObjective:
        """The same functions for the given members only."""
        ...


@dataclass(frozen=True)
class NewtonResult:
    par: np.ndarray  # (B, k)
    hessian: np.ndarray  # (B, k, k), differences of the gradient where it converged
    converged: np.ndarray  # (B,) bool
    iterations: int  # of the slowest member


def newton(objective: BatchObjective, x0: np.ndarray, tol: float = 1e-6, maxit: int = 30,
           delta: float = 1e-4) -> NewtonResult:
    """Minimize a batch of smooth functions (``objective.deviance``) by damped Newton steps.

    Why not COBYQA: its bookkeeping in Python costs more than a small model's deviance and
    it treats one problem at a time, while Newton steps from a start near the optimum (a
    power analysis knows the true parameters) converge in a few iterations for the whole
    batch. The Hessian is the symmetrized forward difference of the gradient (step
    ``delta``, as lme4's ``deriv12``; its O(delta) error moves SEs by about 1e-5, relative,
    at half the cost of central differences), made positive definite by taking its
    eigenvalues' absolute values; a step is halved until the function decreases enough
    (Armijo). A member has converged when its Hessian is positive definite and its Newton
    decrement g'H⁻¹g is below ``tol``; it then takes that last (full) step, keeps the
    Hessian it was computed with, and leaves the batch, which goes on without it.
    """
    x = np.array(x0, dtype=float)
    nb, k = x.shape
    par, hessian = x.copy(), np.full((nb, k, k), np.nan)
    converged = np.zeros(nb, dtype=bool)
    left = np.arange(nb)  # members still iterating, in the order of ``objective``
    f, grad = objective.gradient(x)
    iterations = 0
    while True:
        iterations += 1
        hess = np.empty((len(left), k, k))
        for j in range(k):
            hess[..., j] = (objective.gradient(x + np.eye(k)[j] * delta)[1] - grad) / delta
        hess = (hess + hess.transpose(0, 2, 1)) / 2
        finite = np.isfinite(f) & np.all(np.isfinite(grad), axis=1) & np.all(
            np.isfinite(hess), axis=(1, 2))
        lam, vec = np.linalg.eigh(np.where(finite[:, None, None], hess, np.eye(k)))
        floor = 1e-8 * np.max(np.abs(lam), axis=1, keepdims=True) + 1e-12
        coef = np.einsum("bji,bj->bi", vec, grad) / np.maximum(np.abs(lam), floor)
        step = np.where(finite[:, None], -np.einsum("bij,bj->bi", vec, coef), 0.0)
        slope = np.sum(grad * step, axis=1)  # -(Newton decrement)
        done = finite & np.all(lam > 0, axis=1) & (-slope < tol)
        par[left] = np.where(done[:, None], x + step, x)
        hessian[left], converged[left] = hess, done
        if done.all() or iterations == maxit:
            return NewtonResult(par, hessian, converged, iterations)
        if done.any():
            keep = np.flatnonzero(~done)
            objective, left = objective.take(keep), left[keep]
            x, f, grad, step, slope = x[keep], f[keep], grad[keep], step[keep], slope[keep]
        t = np.ones(len(left))
        for tries in range(30):
            f_new = objective.deviance(x + t[:, None] * step)
            ok = f_new <= f + 1e-4 * t * slope + 1e-12 * np.abs(f)
            if ok.all() or tries == 29:
                break
            t = np.where(ok, t, t / 2)
        x = np.where(ok[:, None], x + t[:, None] * step, x)
        f, grad = objective.gradient(x)
