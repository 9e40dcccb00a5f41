"""The objectives: PIRLS + Laplace deviance for the binomial GLMM, profiled PLS for the LMM.

Bates et al. (2015) and lme4's ``glmer`` (nAGQ = 1): for given θ (and β) penalized
iteratively reweighted least squares finds the conditional modes u of the spherical random
effects; the Laplace deviance is ``-2 log p(y | u) + ||u||² + log|L|²`` with L the Cholesky
factor of Λ'Z'WZΛ + I at the mode (W the IRLS weights). Stage 1 (``nAGQ = 0``) updates β
inside PIRLS too; stage 2 optimizes (θ, β) jointly with only u inside. Two PIRLS: lme4's
(``pirls_lme4``: its stopping rule at ``tolPwrss``, its start and its factor, so that the
deviance is the very function glmer optimizes at its defaults) and one run to convergence
with warm starts (``pirls_modes``: the exact Laplace deviance). The exact one is written
over a leading batch axis, so that ``InterceptBatch`` refits the hundreds of simulated
datasets of a power analysis at once. The LMM deviance is profiled over β and σ as in
lme4's section 3.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from analysis.design import Design
from analysis.linalg import BlockSystem, Factor

_EPS = np.finfo(float).eps
LME4_TOL_PWRSS = 1e-7  # glmerControl()$tolPwrss
_LME4_MAXIT = 100  # glmer's PIRLS iteration limit
_PROBIT_THRESH = -stats.norm.ppf(_EPS)


@dataclass(frozen=True)
class Link:
    """Binomial link with R's clamping (``binomial()$linkinv`` / ``mu.eta``)."""

    name: str

    def __post_init__(self) -> None:
        if self.name not in ("logit", "probit"):
            raise ValueError(f"unknown link {self.name!r}: use 'logit' or 'probit'")

    def inverse(self, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mu, dmu/deta)."""
        if self.name == "logit":
            mu = np.clip(special.expit(eta), _EPS, 1 - _EPS)
            return mu, np.maximum(mu * (1 - mu), _EPS)
        e = np.clip(eta, -_PROBIT_THRESH, _PROBIT_THRESH)
        return special.ndtr(e), np.maximum(np.exp(-0.5 * e * e) / np.sqrt(2 * np.pi), _EPS)

    def log_mu(self, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(log mu, log(1 - mu)) computed without cancellation."""
        if self.name == "logit":  # -log(1 + e^∓η), sharing one exp (logaddexp is slower)
            tail = np.log1p(np.exp(-np.abs(eta)))
            return -(np.maximum(-eta, 0) + tail), -(np.maximum(eta, 0) + tail)
        e = np.clip(eta, -_PROBIT_THRESH, _PROBIT_THRESH)
        return special.log_ndtr(e), special.log_ndtr(-e)

    def link(self, mu: np.ndarray) -> np.ndarray:
        return special.logit(mu) if self.name == "logit" else special.ndtri(mu)


class Binomial:
    """Binomial responses: proportions y and trials m (prior weights), each (…, n) with a
    leading batch axis for a batch; rows with m = 0 contribute nothing (padding)."""

    def __init__(self, y: np.ndarray, trials: np.ndarray, link: Link) -> None:
        self.y, self.trials, self.link = y, trials, link
        self.succ = y * trials
        self.const = np.sum(special.gammaln(trials + 1) - special.gammaln(self.succ + 1)
                            - special.gammaln(trials - self.succ + 1), axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            self.ylogy = np.sum(trials * (special.xlogy(y, y) + special.xlogy(1 - y, 1 - y)),
                                axis=-1)

    def neg2loglik(self, eta: np.ndarray) -> np.ndarray:
        """-2 log p(y | η) including the binomial coefficients (lme4's ``aic()``)."""
        lmu, l1mu = self.link.log_mu(eta)
        return -2 * (self.const + np.sum(self.succ * lmu + (self.trials - self.succ) * l1mu,
                                         axis=-1))

    def weights(self, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """IRLS weights W and the score residuals r = m (y - mu) mu' / var."""
        mu, dmu = self.link.inverse(eta)
        var = mu * (1 - mu)
        return self.trials * dmu**2 / var, self.trials * (self.y - mu) * dmu / var

    def resdev(self, eta: np.ndarray) -> np.ndarray:
        """Binomial residual deviance, sum of R's ``dev.resids`` (lme4's ``resDev()``)."""
        return self.neg2loglik(eta) + 2 * (self.const + self.ylogy)


@dataclass(frozen=True)
class Modes:
    """Result of ``pirls_modes``; arrays with the batch axis of its input."""

    deviance: np.ndarray  # Laplace deviance at the modes (…,)
    factor: Factor  # of A at the modes
    beta: np.ndarray  # (…, p)
    u: np.ndarray  # (…, q)
    iterations: int


def pirls_modes(system: BlockSystem, vdata: np.ndarray, X: np.ndarray, response: Binomial,
                beta: np.ndarray, u: np.ndarray, *, update_beta: bool = False,
                tol: float = 1e-10, maxit: int = 60) -> Modes:
    """PIRLS run to convergence from the modes ``u``: conditional modes (and β when
    ``update_beta``, lme4's nAGQ = 0) by Newton/Fisher steps with step halving on the
    penalized deviance; every array may carry a leading batch axis (X is shared).

    It stops when no member's step exceeds ``tol``: the factor is then computed at the
    mode and the Laplace value is exact."""
    beta = np.array(beta, dtype=float)
    u = np.array(u, dtype=float)
    u = np.where(np.all(np.isfinite(u), axis=-1, keepdims=True), u, 0.0)

    def penalized(u: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        eta = beta @ X.T + system.v_mul(vdata, u)
        return eta, response.neg2loglik(eta) + np.sum(u * u, axis=-1)

    eta, pdev = penalized(u, beta)
    iterations = 0
    for _ in range(maxit):
        iterations += 1
        w, r = response.weights(eta)
        fac = system.factor(vdata, w)
        g_u = system.vt_mul(vdata, r) - u
        if update_beta:  # joint Newton step on (u, β) through the Schur complement of A
            wx = w[..., None] * X  # (…, n, p)
            b_mat = system.vt_mul(vdata, wx)  # (…, q, p)
            ainv_b = fac.solve(b_mat)
            b_t = np.swapaxes(b_mat, -1, -2)
            du0 = fac.solve(g_u)
            dbeta = np.linalg.solve(X.T @ wx - b_t @ ainv_b,
                                    (r @ X - (b_t @ du0[..., None])[..., 0])[..., None])[..., 0]
            du = du0 - (ainv_b @ dbeta[..., None])[..., 0]
        else:
            dbeta, du = np.zeros_like(beta), fac.solve(g_u)
        change = np.maximum(np.max(np.abs(du), axis=-1, initial=0),
                            np.max(np.abs(dbeta), axis=-1, initial=0))
        if np.all(change < tol):
            break
        step = np.ones_like(pdev)
        while True:
            u_new = u + step[..., None] * du
            b_new = beta + step[..., None] * dbeta
            eta_new, pdev_new = penalized(u_new, b_new)
            worse = (pdev_new > pdev + 1e-10 * np.abs(pdev)) & (step >= 1e-8)
            if not np.any(worse):
                break
            step = np.where(worse, step / 2, step)
        u, beta, eta, pdev = u_new, b_new, eta_new, pdev_new
    return Modes(pdev + fac.logdet, fac, beta, u, iterations)


class Objective:
    """Shared state: the design, its block system, and Λ-dependent row values of ZΛ."""

    def __init__(self, design: Design) -> None:
        if not design.terms:
            raise ValueError("the formula has no random-effect term; use a GLM")
        self.design = design
        self.system = BlockSystem.of(design)
        self.n_theta = len(design.theta0)

    def vdata(self, theta: np.ndarray) -> np.ndarray:
        """Row values of ZΛ (n, m_cols): for each term, x_t @ T_t."""
        blocks = self.design.lambda_blocks(theta)
        return np.hstack([t.x @ b for t, b in zip(self.design.terms, blocks, strict=True)])

    def ranef(self, theta: np.ndarray, u: np.ndarray) -> list[np.ndarray]:
        """Conditional modes b = Λu per term, shaped (levels, k)."""
        out, i = [], 0
        for t, block in zip(self.design.terms, self.design.lambda_blocks(theta), strict=True):
            out.append(u[i:i + t.q].reshape(t.nlevels, t.k) @ block.T)
            i += t.q
        return out


class GlmmObjective(Objective):
    """Laplace deviance of a binomial GLMM.

    ``tol_pwrss`` (default lme4's 1e-7) selects lme4's PIRLS; ``None`` the exact one, which
    keeps u between calls as a warm start."""

    def __init__(self, design: Design, link: str = "logit", tol: float = 1e-10,
                 maxit: int = 60, tol_pwrss: float | None = LME4_TOL_PWRSS) -> None:
        super().__init__(design)
        self.link = Link(link)
        self.tol, self.maxit = tol, maxit
        self.tol_pwrss = tol_pwrss
        y, m = design.y, design.trials
        self.response = Binomial(y, m, self.link)
        self.u = np.zeros(design.q)
        self.pirls_iterations = 0
        self.lp0: np.ndarray | None = None
        self._last: tuple[Factor, np.ndarray] | None = None
        if tol_pwrss is None:
            self.beta = self.glm_start()
        else:  # lme4's mkGlmerDevfun: one nAGQ = 0 PIRLS run at θ0 from the GLM's mustart
            eta = self.link.link((y * m + 0.5) / (m + 1))
            _, self.lp0, self.beta, _ = self.pirls_lme4(design.theta0, None, eta)
        self.eta1 = self.lp0  # linear predictor of the last stage-1 evaluation

    @property
    def lme4_mode(self) -> bool:
        return self.tol_pwrss is not None

    def glm_start(self) -> np.ndarray:
        """β from the GLM without random effects (IRLS), as lme4's starting values."""
        d = self.design
        mu = (d.y * d.trials + 0.5) / (d.trials + 1)
        eta = self.link.link(mu)
        beta = np.zeros(d.p)
        for _ in range(50):
            mu, dmu = self.link.inverse(eta)
            w = d.trials * dmu**2 / (mu * (1 - mu))
            z = eta + (d.y - mu) / dmu
            xw = d.X * w[:, None]
            new = np.linalg.solve(d.X.T @ xw, xw.T @ z)
            eta = d.X @ new
            if np.max(np.abs(new - beta)) < 1e-10:
                return new
            beta = new
        return beta

    def neg2loglik(self, eta: np.ndarray) -> float:
        return float(self.response.neg2loglik(eta))

    def resdev(self, eta: np.ndarray) -> float:
        return float(self.response.resdev(eta))

    def pirls(self, theta: np.ndarray, beta: np.ndarray, update_beta: bool = False,
              tol: float | None = None) -> tuple[float, Factor, np.ndarray]:
        """``pirls_modes`` from the last modes; returns (Laplace deviance, factor, β)."""
        modes = pirls_modes(self.system, self.vdata(theta), self.design.X, self.response,
                            beta, self.u, update_beta=update_beta,
                            tol=self.tol if tol is None else tol, maxit=self.maxit)
        self.u = modes.u
        self.pirls_iterations += modes.iterations
        return float(modes.deviance), modes.factor, modes.beta

    def pirls_lme4(self, theta: np.ndarray, beta: np.ndarray | None, eta0: np.ndarray
                   ) -> tuple[float, np.ndarray, np.ndarray, Factor]:
        """lme4's PIRLS (``pwrssUpdate`` in lme4's external.cpp) at its ``tolPwrss``.

        Starts from the linear predictor ``eta0`` (lme4's ``lp0``: each deviance evaluation
        resets μ to it, so the result depends on (θ, β) only). ``beta=None`` is stage 1
        (nAGQ = 0): β is solved with u, without offset; otherwise Xβ is an offset and only u
        is solved. Each iteration factors A at the current weights, solves the IRLS system
        from u = 0 on the working response, and evaluates ``resDev + ||u||²``; it stops when
        that changes by less than ``tol_pwrss`` (relative) from the previous iteration, and
        halves a step that increased it (up to 10 times). The Laplace deviance then uses
        the factor of the previous iterate, as lme4 does. Returns (deviance, η, β, factor).
        """
        d = self.design
        tol = LME4_TOL_PWRSS if self.tol_pwrss is None else self.tol_pwrss
        joint = beta is None
        vdata = self.vdata(theta)
        offset = np.zeros(d.n) if joint else d.X @ beta
        eta = np.array(eta0, dtype=float)
        u, b = np.zeros(d.q), np.zeros(d.p)
        oldpdev = np.finfo(float).max

        def update(u: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float]:
            eta = offset + self.system.v_mul(vdata, u) + (d.X @ b if joint else 0.0)
            return eta, self.resdev(eta) + float(u @ u)

        for _ in range(_LME4_MAXIT):
            self.pirls_iterations += 1
            oldu, oldb = u, b
            mu, dmu = self.link.inverse(eta)
            w = d.trials * dmu**2 / (mu * (1 - mu))
            fac = self.system.factor(vdata, w)
            wz = w * ((eta - offset) + (d.y - mu) / dmu)
            rhs = self.system.vt_mul(vdata, wz)
            if joint:
                wx = d.X * w[:, None]
                b_mat = self.system.vt_mul(vdata, wx)
                ainv_b = fac.solve(b_mat)
                u_part = fac.solve(rhs)
                b = np.linalg.solve(d.X.T @ wx - b_mat.T @ ainv_b, d.X.T @ wz - b_mat.T @ u_part)
                u = u_part - ainv_b @ b
            else:
                u = fac.solve(rhs)
            eta, pdev = update(u, b)
            if abs((oldpdev - pdev) / pdev) < tol:
                break
            for _ in range(10):
                if not pdev > oldpdev:
                    break
                u = (oldu + u) / 2
                if joint:
                    b = (oldb + b) / 2
                eta, pdev = update(u, b)
            oldpdev = pdev
        self.u = u
        self._last = (fac, w)
        return fac.logdet + float(u @ u) + self.neg2loglik(eta), eta, b, fac

    def deviance_theta(self, theta: np.ndarray) -> float:
        """Stage 1 (nAGQ = 0): β updated inside PIRLS; remembers β (and, as lme4, the
        linear predictor that starts stage 2's PIRLS runs) for stage 2.

        Only a start for stage 2, so the exact mode stops PIRLS earlier here (it is most of
        the cost)."""
        if self.lme4_mode:
            assert self.lp0 is not None
            dev, self.eta1, self.beta, _ = self.pirls_lme4(theta, None, self.lp0)
            return dev
        dev, _, beta = self.pirls(theta, self.beta, update_beta=True, tol=1e-6)
        self.beta = beta
        return dev

    def start_stage2(self, theta: np.ndarray) -> np.ndarray:
        """After stage 1: lme4 evaluates stage 1's deviance at its optimum once more and
        keeps that linear predictor (``lp0``) and β as the start of stage 2. Returns β."""
        if self.lme4_mode:
            self.deviance_theta(theta)
            self.lp0 = self.eta1
        return self.beta

    def deviance(self, par: np.ndarray) -> float:
        """Stage 2 (nAGQ = 1): Laplace deviance at (θ, β) = par."""
        if self.lme4_mode:
            assert self.lp0 is not None
            return self.pirls_lme4(par[:self.n_theta], par[self.n_theta:], self.lp0)[0]
        dev, _, _ = self.pirls(par[:self.n_theta], par[self.n_theta:])
        return dev

    def rx_cov(self, theta: np.ndarray, beta: np.ndarray) -> np.ndarray:
        """(RX'RX)⁻¹ at the conditional modes: lme4's ``vcov(use.hessian = FALSE)``."""
        d = self.design
        if self.lme4_mode:  # lme4's RX: from the last factorization of its PIRLS
            self.deviance(np.concatenate([theta, beta]))
            assert self._last is not None
            fac, w = self._last
        else:
            _, fac, _ = self.pirls(theta, beta)
            eta = d.X @ beta + self.system.v_mul(self.vdata(theta), self.u)
            w, _ = self.response.weights(eta)
        wx = d.X * w[:, None]
        b_mat = self.system.vt_mul(self.vdata(theta), wx)
        schur = d.X.T @ wx - b_mat.T @ fac.solve(b_mat)
        return np.linalg.inv(schur)


class LmmObjective(Objective):
    """Profiled deviance (ML) or REML criterion of a linear mixed model as a function of θ."""

    def __init__(self, design: Design, reml: bool = True) -> None:
        super().__init__(design)
        self.reml = reml
        d = design
        self.xtx, self.xty = d.X.T @ d.X, d.X.T @ d.y
        self.ones = np.ones(d.n)

    def solve(self, theta: np.ndarray) -> dict[str, object]:
        """Joint PLS solution (u, β), the penalized RSS and the two log-determinants."""
        d = self.design
        vdata = self.vdata(theta)
        fac = self.system.factor(vdata, self.ones)
        b_mat = self.system.vt_mul(vdata, d.X)
        c_u = self.system.vt_mul(vdata, d.y)
        ainv_b = fac.solve(b_mat)
        schur = self.xtx - b_mat.T @ ainv_b
        beta = np.linalg.solve(schur, self.xty - ainv_b.T @ c_u)
        u = fac.solve(c_u - b_mat @ beta)
        resid = d.y - d.X @ beta - self.system.v_mul(vdata, u)
        pwrss = float(resid @ resid + u @ u)
        sign, ldrx = np.linalg.slogdet(schur)
        return {"beta": beta, "u": u, "pwrss": pwrss, "ldl2": fac.logdet,
                "ldrx2": float(ldrx), "schur": schur}

    def deviance(self, theta: np.ndarray) -> float:
        s = self.solve(theta)
        n, p = self.design.n, self.design.p
        pwrss = max(s["pwrss"], 1e-300)  # type: ignore[type-var]
        if self.reml:
            nmp = n - p
            return float(s["ldl2"] + s["ldrx2"] + nmp * (1 + np.log(2 * np.pi * pwrss / nmp)))
        return float(s["ldl2"] + n * (1 + np.log(2 * np.pi * pwrss / n)))

    def sigma(self, pwrss: float) -> float:
        d = self.design
        return float(np.sqrt(pwrss / (d.n - d.p if self.reml else d.n)))


class InterceptBatch:
    """Exact Laplace deviance of B logistic GLMMs of one shape whose random effects are all
    scalar intercepts ``(1|g)``, as the simulated datasets of a power analysis, with its
    gradient, for all B at once.

    X (n, p) is shared; the terms' codes (B, n), y and trials (B, n) are per dataset, and a
    row with trials 0 is padding (an excluded participant: it changes neither the deviance
    nor its derivatives). Each term's θ is one scale and the deviance is even in it (u → -u
    gives the same model), so an optimizer may ignore the bound θ ≥ 0 and report |θ|.
    """

    def __init__(self, X: np.ndarray, codes: Sequence[np.ndarray], nlevels: Sequence[int],
                 y: np.ndarray, trials: np.ndarray) -> None:
        # the system wants the term with the most levels first; θ keeps the caller's order
        self.order = np.argsort([-m for m in nlevels], kind="stable")
        self.system = BlockSystem([codes[i] for i in self.order], [1] * len(codes),
                                  [nlevels[i] for i in self.order])
        self.X, self.codes, self.nlevels = X, codes, nlevels
        self.response = Binomial(y, trials, Link("logit"))
        self.n_theta = len(codes)
        self.u = np.zeros((self.system.batch, self.system.q))
        # (par, u, du/dpar) at the last gradient: PIRLS near it starts from the tangent
        self._tangent: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def vdata(self, theta: np.ndarray) -> np.ndarray:
        """Row values of ZΛ (B, n, terms): each row holds its terms' θ."""
        theta = theta[:, self.order]
        return np.broadcast_to(theta[:, None, :], (len(theta), self.system.n, self.n_theta))

    def _modes(self, par: np.ndarray) -> Modes:
        u = self.u
        if self._tangent is not None:  # first-order start: one PIRLS step fewer
            at, u_at, du = self._tangent
            u = u_at + np.einsum("bqk,bk->bq", du, par - at)
        modes = pirls_modes(self.system, self.vdata(par[:, :self.n_theta]), self.X,
                            self.response, par[:, self.n_theta:], u)
        self.u = modes.u
        return modes

    def deviance(self, par: np.ndarray) -> np.ndarray:
        """Laplace deviance (B,) at par = (θ, β) (B, terms + p)."""
        return self._modes(par).deviance

    def gradient(self, par: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Laplace deviance (B,) and its gradient (B, terms + p) at par.

        D = -2 log p(y | η) + ||u||² + log|A| at the modes u(θ, β). The first two terms'
        u-derivative vanishes there; log|A| depends on u through W, so its part comes back
        through du/d(θ, β) = A⁻¹ ∂(V'r - u)/∂(θ, β), taken with one adjoint solve A z = c,
        c = V'(w' h) (h: the rows' leverages v_i' A⁻¹ v_i, w' = dw/dη). Logit link: the
        score residual is r = m (y - μ) and dr/dη = -w."""
        modes = self._modes(par)
        sys_, vdata, u = self.system, self.vdata(par[:, :self.n_theta]), modes.u
        eta = modes.beta @ self.X.T + sys_.v_mul(vdata, u)
        mu, _ = self.response.link.inverse(eta)
        m = self.response.trials
        w = m * mu * (1 - mu)
        r = m * (self.response.y - mu)
        pv = np.einsum("bnij,bnj->bni", sys_.row_inverse(modes.factor), vdata)  # A⁻¹v_i
        wh = w * (1 - 2 * mu) * np.einsum("bnj,bnj->bn", vdata, pv)  # w' h
        u_rows = sys_.at_cols(u)  # (B, n, terms)
        # du/d(θ, β) = A⁻¹ ∂(V'r - u)/∂(θ, β): the adjoint's columns, and the tangent
        one_hot = np.eye(self.n_theta)
        d_theta = [sys_.vt_mul(one_hot[j][None], r) - sys_.vt_mul(vdata, w * u_rows[..., j])
                   for j in range(self.n_theta)]
        rhs = np.concatenate([np.stack(d_theta, axis=-1)[..., np.argsort(self.order)],
                              -sys_.vt_mul(vdata, w[..., None] * self.X),
                              sys_.vt_mul(vdata, wh)[..., None]], axis=-1)
        sol = modes.factor.solve(rhs)
        self._tangent = (par.copy(), u, sol[..., :-1])
        z = sol[..., -1]
        e = wh - 2 * r - w * sys_.v_mul(vdata, z)
        g_theta = (np.einsum("bn,bnj->bj", e, u_rows) + 2 * np.einsum("bn,bnj->bj", w, pv)
                   + np.einsum("bn,bnj->bj", r, sys_.at_cols(z)))
        grad = np.empty_like(par)
        grad[:, self.order] = g_theta
        grad[:, self.n_theta:] = e @ self.X
        return modes.deviance, grad

    def take(self, members: np.ndarray) -> InterceptBatch:
        """The batch of the given members only, with their modes (and tangent)."""
        out = InterceptBatch(self.X, [c[members] for c in self.codes], self.nlevels,
                             self.response.y[members], self.response.trials[members])
        out.u = self.u[members]
        if self._tangent is not None:
            at, u_at, du = self._tangent
            out._tangent = (at[members], u_at[members], du[members])
        return out

    def beta_start(self, theta: np.ndarray, beta: np.ndarray) -> np.ndarray:
        """β of nAGQ = 0 (updated inside PIRLS) at θ, from ``beta``: a start near the
        Laplace optimum in β, as lme4's stage 1 gives."""
        modes = pirls_modes(self.system, self.vdata(theta), self.X, self.response, beta,
                            self.u, update_beta=True, tol=1e-6)
        self.u = modes.u
        return modes.beta
