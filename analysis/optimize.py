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
