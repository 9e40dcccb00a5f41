"""Public entry points: ``glmm`` (binomial, Laplace) and ``lmm`` (Gaussian, REML/ML).

The GLMM follows ``glmer``'s two stages: θ with β inside PIRLS (nAGQ = 0) for a start, then
(θ, β) jointly on the Laplace deviance. By default the deviance is the one lme4 computes at
its defaults (``tolPwrss = 1e-7``, each PIRLS run started from stage 1's linear predictor,
see ``GlmmObjective.pirls_lme4``), so estimates, log-likelihood and Hessian SEs are
``glmer``'s to about 1e-5; ``tol_pwrss=None`` runs PIRLS to convergence, the optimum of
the exact Laplace deviance (``glmerControl(tolPwrss = 1e-12)``), a few 1e-4 away.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from analysis.design import Design, build_design
from analysis.optimize import OptimizerLog, deriv12, minimize, newton
from analysis.pirls import LME4_TOL_PWRSS, GlmmObjective, InterceptBatch, LmmObjective
from analysis.result import (
    ConvergenceWarning,
    GLMMResult,
    RandomEffect,
    SingularFitWarning,
)

log = logging.getLogger(__name__)

_SINGULAR_TOL = 1e-4  # lme4's isSingular(tol = 1e-4)
_GRAD_TOL = 2e-3  # lme4's check.conv.grad
_BOUNDARY_TOL = 1e-5  # glmerControl()$boundary.tol


def _random_effects(design: Design, theta: np.ndarray, sigma: float) -> tuple[RandomEffect, ...]:
    out = []
    for term, block in zip(design.terms, design.lambda_blocks(theta), strict=True):
        cov = sigma**2 * block @ block.T
        sd = np.sqrt(np.diag(cov))
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = cov / np.outer(sd, sd)
        corr = np.where(np.outer(sd, sd) > 0, corr, np.nan)
        np.fill_diagonal(corr, 1.0)
        out.append(RandomEffect(term.group, term.names, sd, np.clip(corr, -1, 1),
                                term.nlevels))
    return tuple(out)


def _is_singular(design: Design, theta: np.ndarray) -> bool:
    lower = design.theta_lower
    return bool(np.any((lower == 0) & (theta < _SINGULAR_TOL)))


def _check_gradient(grad: np.ndarray, hess: np.ndarray, free: np.ndarray) -> tuple[bool, float]:
    """lme4's gradient check: scaled gradient solve(chol(H), g), raw if H is not PD."""
    g, h = grad[free], hess[np.ix_(free, free)]
    try:
        scaled = np.linalg.solve(np.linalg.cholesky(h), g)
    except np.linalg.LinAlgError:
        scaled = g
    worst = float(np.max(np.abs(scaled), initial=0.0))
    return worst < _GRAD_TOL, worst


def _check_boundary(fun: Callable[[np.ndarray], float], par: np.ndarray, lower: np.ndarray,
                    fval: float) -> np.ndarray:
    """lme4's ``check.boundary``: a θ within ``boundary.tol`` (1e-5) of its bound is put on
    the bound when that does not increase the deviance."""
    out = par.copy()
    for i in np.flatnonzero((lower == 0) & (par > 0) & (par < _BOUNDARY_TOL)):
        trial = out.copy()
        trial[i] = 0.0
        if fun(trial) < fval:
            out[i] = 0.0
    return out


def _warn_fit(converged: bool, singular: bool, message: str) -> None:
    if not converged:
        warnings.warn(f"model failed to converge: {message}", ConvergenceWarning, stacklevel=3)
    if singular:
        warnings.warn("boundary (singular) fit: a random-effect variance is (near) zero or a "
                      "correlation is ±1", SingularFitWarning, stacklevel=3)


def glmm(formula: str, data: pd.DataFrame, family: str = "binomial", link: str = "logit",
         optimizer: str = "cobyqa", hessian: bool = True,
         tol_pwrss: float | None = LME4_TOL_PWRSS) -> GLMMResult:
    """Fit a binomial GLMM by the Laplace approximation (lme4's ``glmer``, nAGQ = 1).

    ``hessian=False`` skips the finite-difference Hessian (SEs then come from RX), which
    saves time on very large data. ``tol_pwrss`` is lme4's ``glmerControl(tolPwrss)``: by
    default (1e-7) the deviance is the one lme4 computes at its defaults, so the estimates
    and Hessian SEs are ``glmer``'s; ``None`` runs PIRLS to convergence at every evaluation
    and gives the optimum of the exact Laplace deviance (lme4 with ``tolPwrss = 1e-12``),
    which differs from lme4's default answer by up to a few 1e-4 (relative) in the fixed
    effects. Where lme4's own default fit would fail its convergence checks (Hessian not
    positive definite or a large scaled gradient, because that deviance jumps where PIRLS
    needs one iteration more or less), the fit is redone with ``tol_pwrss=None`` and
    ``optimizer`` of the result says so.
    """
    if family != "binomial":
        raise ValueError(f"family must be 'binomial', not {family!r} (use lmm() for Gaussian)")
    design = build_design(formula, data, family="binomial")
    obj = GlmmObjective(design, link=link, tol_pwrss=tol_pwrss)
    trace = OptimizerLog()
    lower_t = design.theta_lower
    # lme4's stage 1 ends where bobyqa's rhoend (2e-7) is reached; its optimum fixes the
    # start of every PIRLS run of stage 2, so the lme4 mode converges it as tightly
    stage1 = minimize(obj.deviance_theta, design.theta0, lower_t, method=optimizer,
                      tol=1e-4 if tol_pwrss is None else 2e-7, trace=trace)
    n_t = len(lower_t)
    lower = np.concatenate([lower_t, np.full(design.p, -np.inf)])
    start = np.concatenate([stage1.par, obj.start_stage2(stage1.par)])
    stage2 = minimize(obj.deviance, start, lower, method=optimizer, tol=1e-7, trace=trace,
                      initial_step=0.1)
    par = stage2.par
    if tol_pwrss is not None:
        par = _check_boundary(obj.deviance, par, lower, stage2.fval)
    theta, beta = par[:n_t], par[n_t:]
    dev = obj.deviance(par)
    u = obj.u.copy()
    vcov_rx = obj.rx_cov(theta, beta)
    singular = _is_singular(design, theta)
    vcov_hess, grad_ok, worst = None, True, 0.0
    if hessian:
        grad, hess = deriv12(obj.deviance, par)
        free = ~((lower == 0) & (par <= 1e-6))
        grad_ok, worst = _check_gradient(grad, hess, free)
        try:
            inv = np.linalg.inv(hess)
            vcov_hess = (inv + inv.T)[n_t:, n_t:]
            if np.any(np.linalg.eigvalsh(vcov_hess) <= 0):
                raise np.linalg.LinAlgError
        except np.linalg.LinAlgError:
            vcov_hess = None
        if tol_pwrss is not None and (vcov_hess is None or not grad_ok):
            # lme4 fails here too ("degenerate Hessian", large scaled gradient): its PIRLS
            # tolerance makes the deviance jump by more than the Hessian's steps resolve.
            # The exact Laplace deviance has no such jumps: refit on it.
            log.info("lme4's default deviance is too rough at its optimum (max|scaled grad| "
                     "= %.3g): refitting with PIRLS run to convergence", worst)
            return glmm(formula, data, family, link, optimizer, hessian, tol_pwrss=None)
        if vcov_hess is None:
            warnings.warn("variance-covariance matrix from the finite-difference Hessian is "
                          "not positive definite: using RX", ConvergenceWarning, stacklevel=2)
        obj.deviance(par)  # restore the modes at the optimum
    converged = stage2.converged and grad_ok
    message = stage2.message if not stage2.converged else f"max|scaled grad| = {worst:.3g}"
    _warn_fit(converged, singular, message)
    names = list(design.fixef_names)
    return GLMMResult(
        formula=design.formula.text, family=f"binomial({link})", method="Laplace",
        nobs=design.n, fixef=pd.Series(beta, index=names),
        vcov_hessian=None if vcov_hess is None else pd.DataFrame(vcov_hess, names, names),
        vcov_rx=pd.DataFrame(vcov_rx, names, names), theta=theta,
        random=_random_effects(design, theta, 1.0), sigma=None, loglik=-dev / 2,
        n_params=n_t + design.p, converged=converged, singular=singular,
        optimizer=stage2.method + (", PIRLS to convergence" if tol_pwrss is None
                                   else f", tolPwrss = {tol_pwrss:g}"),
        nfev=len(trace), trace=trace,
        ranef=_ranef_frames(obj, design, theta, u), objective=obj, par=par)


@dataclass(frozen=True)
class BatchFit:
    """Laplace fits of a batch of GLMMs (``glmm_batch``); arrays over the batch axis B."""

    fixef: np.ndarray  # (B, p)
    vcov: np.ndarray  # (B, p, p) from the Hessian, as glmer's; NaN where it is not PD
    theta: np.ndarray  # (B, terms) random-effect SDs (relative, σ = 1)
    converged: np.ndarray  # (B,) bool
    singular: np.ndarray  # (B,) bool
    iterations: int  # Newton iterations of the slowest member

    @property
    def se(self) -> np.ndarray:
        return np.sqrt(np.diagonal(self.vcov, axis1=1, axis2=2))


def glmm_batch(X: np.ndarray, codes: Sequence[np.ndarray], nlevels: Sequence[int],
               y: np.ndarray, trials: np.ndarray, theta0: np.ndarray, beta0: np.ndarray
               ) -> BatchFit:
    """Laplace fits (``glmer``, nAGQ = 1) of B logistic GLMMs of one shape whose random
    effects are scalar intercepts (``InterceptBatch``), started at (θ0, β0), each (B, ·).

    For many refits of one design (power analysis): Newton's method with the analytic
    gradient of the exact Laplace deviance (PIRLS run to convergence, as
    ``glmm(tol_pwrss=None)`` and lme4 with ``tolPwrss = 1e-12``) for the whole batch at
    once, β started at its nAGQ = 0 value. The vcov comes from the Hessian of that
    deviance, as glmer's does from its own. lme4's default answer differs from this
    optimum by its PIRLS tolerance (up to about 1 % in SEs on small designs). A member that
    does not converge is flagged, not refitted: ``glmm`` is the careful path for it.
    """
    obj = InterceptBatch(X, codes, nlevels, y, trials)
    n_t = obj.n_theta
    # OpenBLAS's threads make stacks of small products many times slower (and a power
    # analysis already runs one process per core)
    with threadpool_limits(1, user_api="blas"):
        beta = obj.beta_start(theta0, beta0)
        res = newton(obj, np.concatenate([theta0, beta], axis=1))
    theta = np.abs(res.par[:, :n_t])
    vcov = np.full((len(theta), X.shape[1], X.shape[1]), np.nan)
    if res.converged.any():  # its Hessian is positive definite
        inv = np.linalg.inv(res.hessian[res.converged])
        vcov[res.converged] = (inv + inv.transpose(0, 2, 1))[:, n_t:, n_t:]
    return BatchFit(res.par[:, n_t:], vcov, theta, res.converged,
                    np.any(theta < _SINGULAR_TOL, axis=1), res.iterations)


def _ranef_frames(obj: GlmmObjective | LmmObjective, design: Design, theta: np.ndarray,
                  u: np.ndarray) -> dict[str, pd.DataFrame]:
    out: dict[str, pd.DataFrame] = {}
    for term, b in zip(design.terms, obj.ranef(theta, u), strict=True):
        frame = pd.DataFrame(b, index=list(term.levels), columns=list(term.names))
        out[term.group] = frame if term.group not in out else out[term.group].join(
            frame, rsuffix="_")
    return out


def lmm(formula: str, data: pd.DataFrame, reml: bool = True,
        optimizer: str = "cobyqa") -> GLMMResult:
    """Fit a linear mixed model by profiled (RE)ML, as ``lmer`` (Bates et al. 2015, §3)."""
    design = build_design(formula, data, family="gaussian")
    obj = LmmObjective(design, reml=reml)
    trace = OptimizerLog()
    opt = minimize(obj.deviance, design.theta0, design.theta_lower, method=optimizer,
                   tol=1e-8, trace=trace)
    theta = opt.par
    sol = obj.solve(theta)
    sigma = obj.sigma(sol["pwrss"])  # type: ignore[arg-type]
    vcov = sigma**2 * np.linalg.inv(sol["schur"])  # type: ignore[arg-type]
    grad, hess = deriv12(obj.deviance, theta)
    free = ~((design.theta_lower == 0) & (theta <= 1e-6))
    grad_ok, worst = _check_gradient(grad, hess, free)
    singular = _is_singular(design, theta)
    converged = opt.converged and grad_ok
    _warn_fit(converged, singular, opt.message if not opt.converged else f"{worst:.3g}")
    names = list(design.fixef_names)
    dev = obj.deviance(theta)
    return GLMMResult(
        formula=design.formula.text, family="gaussian", method="REML" if reml else "ML",
        nobs=design.n, fixef=pd.Series(sol["beta"], index=names), vcov_hessian=None,
        vcov_rx=pd.DataFrame(vcov, names, names), theta=theta,
        random=_random_effects(design, theta, sigma), sigma=sigma, loglik=-dev / 2,
        n_params=len(theta) + design.p + 1, converged=converged, singular=singular,
        optimizer=opt.method, nfev=len(trace), trace=trace,
        ranef=_ranef_frames(obj, design, theta, sol["u"]),  # type: ignore[arg-type]
        objective=obj, par=theta)
