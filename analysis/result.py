"""Frozen results of a mixed-model fit: lme4's vocabulary, summaries that read like lme4's.

The result keeps its objective so that profile-likelihood intervals can be computed on
request (they refit the model many times); everything else is computed at fit time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, stats

from analysis.optimize import OptimizerLog, minimize


class ConvergenceWarning(UserWarning):
    """The optimizer stopped early or the gradient at the optimum is not small."""


class SingularFitWarning(UserWarning):
    """A random-effect variance is at zero or a correlation at ±1 (lme4's isSingular)."""


@dataclass(frozen=True, eq=False)
class RandomEffect:
    """One random-effect term: SDs of its columns and their correlation matrix."""

    group: str
    names: tuple[str, ...]
    sd: np.ndarray
    corr: np.ndarray
    nlevels: int

    def to_dict(self) -> dict[str, Any]:
        corr = {f"{a}:{b}": _num(self.corr[i, j]) for i, a in enumerate(self.names)
                for j, b in enumerate(self.names) if j > i}
        return {"group": self.group, "nlevels": self.nlevels,
                "sd": {n: float(s) for n, s in zip(self.names, self.sd, strict=True)},
                "variance": {n: float(s * s) for n, s in zip(self.names, self.sd, strict=True)},
                "corr": corr}


def _num(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


@dataclass(frozen=True, eq=False)
class GLMMResult:
    """A fitted GLMM or LMM. ``se`` is lme4's default kind (Hessian for GLMMs, RX for LMMs)."""

    formula: str
    family: str
    method: str  # "Laplace", "REML" or "ML"
    nobs: int
    fixef: pd.Series
    vcov_hessian: pd.DataFrame | None
    vcov_rx: pd.DataFrame
    theta: np.ndarray
    random: tuple[RandomEffect, ...]
    sigma: float | None
    loglik: float
    n_params: int
    converged: bool
    singular: bool
    optimizer: str
    nfev: int
    trace: OptimizerLog = field(repr=False)
    ranef: dict[str, pd.DataFrame] = field(repr=False)
    objective: Any = field(repr=False)
    par: np.ndarray = field(repr=False)

    # -- lme4 vocabulary -------------------------------------------------------------
    @property
    def params(self) -> pd.Series:
        return self.fixef

    @property
    def vcov(self) -> pd.DataFrame:
        return self.vcov_hessian if self.vcov_hessian is not None else self.vcov_rx

    @property
    def se(self) -> pd.Series:
        return pd.Series(np.sqrt(np.diag(self.vcov)), index=self.fixef.index)

    @property
    def se_rx(self) -> pd.Series:
        return pd.Series(np.sqrt(np.diag(self.vcov_rx)), index=self.fixef.index)

    @property
    def is_gaussian(self) -> bool:
        return self.family == "gaussian"

    @property
    def zvalues(self) -> pd.Series:
        return self.fixef / self.se

    @property
    def pvalues(self) -> pd.Series:
        return pd.Series(2 * stats.norm.sf(np.abs(self.zvalues)), index=self.fixef.index)

    @property
    def deviance(self) -> float:
        return -2 * self.loglik

    @property
    def aic(self) -> float:
        return -2 * self.loglik + 2 * self.n_params

    @property
    def bic(self) -> float:
        return -2 * self.loglik + math.log(self.nobs) * self.n_params

    def wald_ci(self, level: float = 0.95) -> pd.DataFrame:
        z = stats.norm.ppf(0.5 + level / 2)
        lo, hi = self.fixef - z * self.se, self.fixef + z * self.se
        return pd.DataFrame({"lower": lo, "upper": hi})

    def profile_ci(self, level: float = 0.95, which: list[str] | None = None) -> pd.DataFrame:
        """Profile-likelihood intervals for fixed effects (GLMMs; slow: refits per point).

        The bound is where the deviance, minimized over all other parameters, exceeds its
        minimum by the χ²₁ quantile.
        """
        if self.is_gaussian:
            raise ValueError("profile intervals are implemented for GLMMs only")
        obj, par = self.objective, self.par
        n_t = len(self.theta)
        lower = np.concatenate([obj.design.theta_lower, np.full(len(self.fixef), -np.inf)])
        crit = stats.chi2.ppf(level, 1)
        dev0 = obj.deviance(par)
        rows = {}
        for name in which or list(self.fixef.index):
            j = n_t + list(self.fixef.index).index(name)
            keep = np.arange(len(par)) != j
            start = par[keep].copy()

            def excess(b: float, j: int = j, keep: np.ndarray = keep,
                       start: np.ndarray = start) -> float:
                def dev(sub: np.ndarray) -> float:
                    full = np.empty(len(par))
                    full[keep], full[j] = sub, b
                    return obj.deviance(full)

                res = minimize(dev, start, lower[keep], tol=1e-6, initial_step=0.05)
                return res.fval - dev0 - crit

            se = float(self.se[name])
            bounds = []
            for sign in (-1, 1):
                far = 2.0
                while excess(par[j] + sign * far * se) < 0 and far < 64:
                    far *= 2
                bounds.append(optimize.brentq(
                    lambda b: excess(b), par[j], par[j] + sign * far * se, xtol=1e-5 * se))
            rows[name] = bounds
            obj.deviance(par)
        return pd.DataFrame.from_dict(rows, orient="index", columns=["lower", "upper"])

    # -- output ----------------------------------------------------------------------
    def to_frame(self) -> pd.DataFrame:
        """Tidy fixed-effects table (estimate, both SEs, z, p, Wald interval)."""
        ci = self.wald_ci()
        return pd.DataFrame({"term": self.fixef.index, "estimate": self.fixef.to_numpy(),
                             "se": self.se.to_numpy(), "se_rx": self.se_rx.to_numpy(),
                             "z": self.zvalues.to_numpy(), "p": self.pvalues.to_numpy(),
                             "ci_lower": ci["lower"].to_numpy(),
                             "ci_upper": ci["upper"].to_numpy()})

    def random_frame(self) -> pd.DataFrame:
        """lme4's ``as.data.frame(VarCorr(m))``: grp, var1, var2, vcov, sdcor."""
        rows = []
        for re in self.random:
            for i, n in enumerate(re.names):
                rows.append((re.group, n, None, re.sd[i] ** 2, re.sd[i]))
            for i, a in enumerate(re.names):
                for j in range(i + 1, len(re.names)):
                    cov = re.corr[i, j] * re.sd[i] * re.sd[j]
                    rows.append((re.group, a, re.names[j], cov, re.corr[i, j]))
        if self.sigma is not None:
            rows.append(("Residual", None, None, self.sigma**2, self.sigma))
        return pd.DataFrame(rows, columns=["grp", "var1", "var2", "vcov", "sdcor"])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (keys fixef, se, random, loglik, converged, singular, ...)."""
        return {
            "formula": self.formula, "family": self.family, "method": self.method,
            "nobs": self.nobs,
            "fixef": {k: float(v) for k, v in self.fixef.items()},
            "se": {k: float(v) for k, v in self.se.items()},
            "se_rx": {k: float(v) for k, v in self.se_rx.items()},
            "se_kind": "hessian" if self.vcov_hessian is not None else "rx",
            "z": {k: float(v) for k, v in self.zvalues.items()},
            "p": {k: float(v) for k, v in self.pvalues.items()},
            "random": [re.to_dict() for re in self.random],
            "sigma": self.sigma, "theta": [float(t) for t in self.theta],
            "loglik": float(self.loglik), "aic": float(self.aic), "bic": float(self.bic),
            "df": self.n_params, "converged": self.converged, "singular": self.singular,
            "optimizer": self.optimizer, "nfev": self.nfev,
        }

    def summary(self) -> str:
        """A summary that reads like lme4's ``summary(merMod)``."""
        lines = []
        if self.is_gaussian:
            lines.append(f"Linear mixed model fit by {self.method} ['lmerMod']")
        else:
            fam, link = self.family.rstrip(")").split("(")
            lines += ["Generalized linear mixed model fit by maximum likelihood (Laplace "
                      "Approximation) ['glmerMod']", f" Family: {fam}  ( {link} )"]
        lines += [f"Formula: {self.formula}", ""]
        if self.method == "REML":
            lines += [f"REML criterion at convergence: {self.deviance:.1f}", ""]
        else:
            df_resid = self.nobs - self.n_params
            lines += [f"{'AIC':>9}{'BIC':>9}{'logLik':>9}{'deviance':>9}{'df.resid':>9}",
                      f"{self.aic:9.1f}{self.bic:9.1f}{self.loglik:9.1f}{self.deviance:9.1f}"
                      f"{df_resid:9d}", ""]
        lines += ["Random effects:", self._random_table()]
        groups = ", ".join(f"{re.group}, {re.nlevels}" for re in self.random)
        lines += [f"Number of obs: {self.nobs}, groups:  {groups}", "", "Fixed effects:"]
        stat = "t value" if self.is_gaussian else "z value"
        table = pd.DataFrame({"Estimate": self.fixef, "Std. Error": self.se,
                              stat: self.zvalues})
        if not self.is_gaussian:
            table["Pr(>|z|)"] = [f"{p:.3g}" for p in self.pvalues]
            table[""] = [_stars(p) for p in self.pvalues]
        lines.append(table.to_string(float_format=lambda v: f"{v:.5g}"))
        if self.singular:
            lines += ["", "boundary (singular) fit: see help('isSingular')"]
        if not self.converged:
            lines += ["", "Model failed to converge (see the ConvergenceWarning)"]
        return "\n".join(lines)

    def _random_table(self) -> str:
        rows = []
        for re in self.random:
            for i, n in enumerate(re.names):
                corr = " ".join(f"{re.corr[i, j]:5.2f}" for j in range(i))
                rows.append((re.group if i == 0 else "", n, f"{re.sd[i] ** 2:.4g}",
                             f"{re.sd[i]:.4g}", corr))
        if self.sigma is not None:
            rows.append(("Residual", "", f"{self.sigma**2:.4g}", f"{self.sigma:.4g}", ""))
        frame = pd.DataFrame(rows, columns=["Groups", "Name", "Variance", "Std.Dev.", "Corr"])
        if not frame["Corr"].str.strip().any():
            frame = frame.drop(columns="Corr")
        return " " + frame.to_string(index=False).replace("\n", "\n ")


def _stars(p: float) -> str:
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else "." if p < 0.1 else ""


def anova(m0: GLMMResult, m1: GLMMResult) -> pd.DataFrame:
    """Likelihood-ratio test of nested models (lme4's ``anova(m0, m1)``)."""
    if m0.nobs != m1.nobs or m0.family != m1.family:
        raise ValueError("models must be fitted to the same observations and family")
    if "REML" in (m0.method, m1.method):
        raise ValueError("likelihood-ratio tests need ML fits: refit with reml=False")
    small, big = sorted((m0, m1), key=lambda m: m.n_params)
    chisq = max(2 * (big.loglik - small.loglik), 0.0)
    df = big.n_params - small.n_params
    p = float(stats.chi2.sf(chisq, df)) if df > 0 else float("nan")
    rows = [
        {"npar": m.n_params, "AIC": m.aic, "BIC": m.bic, "logLik": m.loglik,
         "deviance": m.deviance, "Chisq": np.nan, "Df": np.nan, "Pr(>Chisq)": np.nan}
        for m in (small, big)
    ]
    rows[1].update({"Chisq": chisq, "Df": df, "Pr(>Chisq)": p})
    return pd.DataFrame(rows, index=[small.formula, big.formula])
