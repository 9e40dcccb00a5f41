"""Non-negative matrix factorisation in torch: accelerated HALS with an NNDSVDa start.

X (N, C) >= 0 is approximated by W (N, K) @ H (K, C), W, H >= 0 (the CRAFT set-up: rows of X
are a layer's activation vectors, rows of H are the dictionary's concepts). The solver is
hierarchical alternating least squares (Cichocki & Phan 2009) with several cheap inner
sweeps per costly product (Gillis & Glineur 2012) and extrapolation between iterates with
restarts (Ang & Gillis 2019), which shortens the slow drift of real activations' fits;
components that die are re-seeded from the worst-reconstructed rows. Large matrices start
from a coarse-to-fine warm start on nested random subsets of rows.
Letters: N rows, C columns (channels), K components, L rows of a block.
"""

from __future__ import annotations

import logging
import time
from typing import NamedTuple

import torch

log = logging.getLogger(__name__)

_EPS = 1e-12


def _as_matrix(X, name: str = "X") -> torch.Tensor:
    X = torch.as_tensor(X)
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(
            f"{name} must be a non-empty 2-D matrix (N, C), got shape {tuple(X.shape)}"
        )
    if not torch.is_floating_point(X):
        X = X.float()
    lo, hi = torch.aminmax(X)  # one pass; a NaN anywhere makes both NaN
    if not (torch.isfinite(lo) and torch.isfinite(hi)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if lo < 0:
        raise ValueError(f"{name} has negative entries; NMF needs non-negative data")
    return X


def randomized_svd(
    X: torch.Tensor, k: int, *, generator: torch.Generator, oversample: int = 10, n_iter: int = 4
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-``k`` SVD of X (N, C) by a randomized range finder: U (N, k), S (k,), Vt (k, C)."""
    q = min(k + oversample, min(X.shape))
    omega = torch.randn(X.shape[1], q, generator=generator, dtype=X.dtype).to(X.device)  # C, q
    Q = torch.linalg.qr(X @ omega).Q  # N, q
    for _ in range(n_iter):
        Q = torch.linalg.qr(X.T @ Q).Q  # C, q
        Q = torch.linalg.qr(X @ Q).Q  # N, q
    Ub, S, Vt = torch.linalg.svd(Q.T @ X, full_matrices=False)  # q, q / q / q, C
    return (Q @ Ub)[:, :k], S[:k], Vt[:k]


def nndsvda_init(
    X: torch.Tensor, k: int, *, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """NNDSVD (Boutsidis & Gallopoulos 2008), zeros filled by the mean of X: W (N, K), H (K, C)."""
    U, S, Vt = randomized_svd(X, k, generator=generator)
    x, y = U.T, Vt  # K, N and K, C
    xp, xn, yp, yn = x.clamp(min=0), (-x).clamp(min=0), y.clamp(min=0), (-y).clamp(min=0)
    xpn, xnn = xp.norm(dim=1), xn.norm(dim=1)  # K
    ypn, ynn = yp.norm(dim=1), yn.norm(dim=1)
    use_pos = (xpn * ypn >= xnn * ynn)[:, None]  # K, 1
    u = torch.where(use_pos, xp / (xpn[:, None] + _EPS), xn / (xnn[:, None] + _EPS))
    v = torch.where(use_pos, yp / (ypn[:, None] + _EPS), yn / (ynn[:, None] + _EPS))
    sigma = torch.where(use_pos[:, 0], xpn * ypn, xnn * ynn)
    sigma[0] = 1.0  # the leading singular pair is non-negative up to sign
    u[0], v[0] = x[0].abs(), y[0].abs()
    scale = torch.sqrt(S * sigma)[:, None]  # K, 1
    Wt, H = scale * u, scale * v  # K, N and K, C
    avg = X.mean()
    Wt = torch.where(Wt < _EPS, avg, Wt)
    H = torch.where(H < _EPS, avg, H)
    return Wt.T.contiguous(), H


def _hals_sweeps(Mt: torch.Tensor, P: torch.Tensor, G: torch.Tensor, sweeps: int) -> None:
    """In place: ``sweeps`` HALS sweeps on Mt (K, L) minimising ||Y - Mt^T F|| over Mt >= 0.

    Given P = F Y^T (K, L) and G = F F^T (K, K). Each row update is two ops,
    Mt[k] = max(0, P[k] / G[k, k] - sum_{j != k} G[k, j] / G[k, k] Mt[j]): on small factors
    the cost of an op, not its arithmetic, is what a sweep costs. Rows with G[k, k] = 0 (an
    all-zero atom) keep their values.
    """
    diag = G.diagonal()
    scale = diag.clamp(min=_EPS)[:, None]  # K, 1
    coupling = G / scale  # K, K: G[k, j] / G[k, k]
    coupling.fill_diagonal_(0.0)
    targets, coupling_rows = (P / scale).unbind(0), coupling.unbind(0)  # views, made once
    rows, Mt_T = Mt.unbind(0), Mt.T
    new = torch.empty_like(rows[0])  # L
    live = [k for k, g in enumerate(diag.tolist()) if g > 0]
    for _ in range(sweeps):
        for k in live:
            torch.addmv(targets[k], Mt_T, coupling_rows[k], alpha=-1.0, out=new)
            torch.clamp(new, min=0.0, out=rows[k])


# Extrapolation (Ang & Gillis 2019): start at BETA0; after a step that lowers the error beta
# grows by GROWTH up to a cap that itself grows by CAP_GROWTH (to 1); after a step that
# raises it, the cap drops to the beta that overshot and beta shrinks by SHRINK.
BETA0, GROWTH, CAP_GROWTH, SHRINK = 0.5, 1.05, 1.01, 1.5


def hals_nmf(
    X: torch.Tensor,
    W: torch.Tensor,
    H: torch.Tensor,
    *,
    max_iter: int = 200,
    tol: float = 1e-4,
    inner_sweeps: int = 2,
    extrapolate: bool = True,
    reseed_every: int = 10,
    start: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Accelerated HALS from (W (N, K), H (K, C)); returns W, H and a log of the fit.

    An iteration sweeps W ``inner_sweeps`` times against the extrapolated H, extrapolates W
    (projected onto W >= 0), sweeps H twice as often against it (its products cost N times
    less than W's) and extrapolates H. The error is that of the extrapolated W with the new
    H, a feasible pair, and the best pair measured is returned. A step that lowers the best
    error by at least ``tol`` (relative) lengthens the steps; one that does not (it overshot,
    or converged) sends the fit back to the best pair with shorter steps and no extrapolation
    of H, and the fit stops when the next one does not either (at once without
    extrapolation). Every ``reseed_every`` iterations (in the first 80% of ``max_iter``),
    dead components (W's column all zero) get the direction of the worst-reconstructed row.
    """
    xx = _sum_squares(X)
    Wt = W.T.contiguous()  # K, N
    H = H.clone()
    Hy = H.clone()  # K, C: the (extrapolated) H that the next W step fits
    W_prev, H_prev = torch.empty_like(Wt), torch.empty_like(H)
    best_W, best_H = Wt.clone(), H.clone()
    history: list[tuple[float, float]] = []  # (seconds since ``start``, relative error)
    start = time.perf_counter() if start is None else start
    beta, cap = (BETA0, 1.0) if extrapolate else (0.0, 0.0)
    best, stalled, reseeded, n_iter = float("inf"), 0, 0, 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007
        # W step: P = Hy X^T (K, N), G = Hy Hy^T (K, K); then W + beta (W - W_prev), >= 0
        W_prev.copy_(Wt)
        _hals_sweeps(Wt, Hy @ X.T, Hy @ Hy.T, inner_sweeps)
        Wy = torch.lerp(W_prev, Wt, 1.0 + beta).clamp_(min=0.0) if beta > 0 else Wt  # K, N
        # H step: P = Wy X (K, C), G = Wy Wy^T (K, K)
        WtX, WtW = Wy @ X, Wy @ Wy.T
        H_prev.copy_(H)
        _hals_sweeps(H, WtX, WtW, 2 * inner_sweeps)
        # unit rows of H, the scale carried into W (and into the products for the error)
        norms = H.norm(dim=1).clamp(min=_EPS)[:, None]  # K, 1
        H /= norms
        H_prev /= norms
        Wy *= norms
        if Wy is not Wt:
            Wt *= norms
        WtX *= norms
        WtW *= norms * norms.T
        err2 = (
            xx
            - 2 * float((H.double() * WtX.double()).sum())
            + float((WtW.double() * (H @ H.T).double()).sum())
        )
        rel = max(err2, 0.0) ** 0.5 / max(xx, _EPS) ** 0.5
        history.append((time.perf_counter() - start, rel))
        before, progress = best, best - rel  # progress below the best error so far
        if rel < best:
            best = rel
            best_W.copy_(Wy)
            best_H.copy_(H)
        dead = (Wy.amax(dim=1) <= 0).nonzero().flatten()
        if len(dead) and n_iter % reseed_every == 0 and n_iter <= 0.8 * max_iter:
            Wt.copy_(Wy)
            _reseed(X, Wt, H, dead)
            reseeded += len(dead)
            Hy.copy_(H)
            best, stalled = float("inf"), 0  # the fit goes on from the re-seeded pair
            continue
        if before == float("inf") or progress >= tol * before:  # longer steps, extrapolate H
            stalled = 0
            beta, cap = min(cap, GROWTH * beta), min(1.0, CAP_GROWTH * cap)
            if Wy is not Wt:
                Wt.copy_(Wy)
            torch.lerp(H_prev, H, 1.0 + beta, out=Hy).clamp_(min=0.0)
            continue
        stalled += 1
        if not len(dead) and (stalled == 2 or beta == 0):
            break
        # overshot, or too little progress: again from the best pair, smaller steps
        cap, beta = beta, beta / SHRINK
        Wt.copy_(best_W)
        H.copy_(best_H)
        Hy.copy_(best_H)
    info = {"n_iter": n_iter, "history": history, "reseeded": reseeded, "xx": xx}
    return best_W.T.contiguous(), best_H, info


def _sum_squares(X: torch.Tensor, center: torch.Tensor | None = None) -> float:
    """sum((X - center)^2) in float64, by blocks of rows (no float64 copy of all of X)."""
    total = 0.0
    for i in range(0, len(X), 8192):
        block = X[i : i + 8192].double()  # L, C
        if center is not None:
            block -= center
        total += float(torch.dot(block.flatten(), block.flatten()))
    return total


def _reseed(X: torch.Tensor, Wt: torch.Tensor, H: torch.Tensor, dead: torch.Tensor) -> None:
    """Point each dead component at a badly reconstructed row of X (largest residual first)."""
    resid = ((X - Wt.T @ H) ** 2).sum(dim=1)  # N
    rows = torch.topk(resid, len(dead)).indices
    for k, i in zip(dead.tolist(), rows.tolist(), strict=True):
        H[k] = X[i] / X[i].norm().clamp(min=_EPS)
        Wt[k] = 0.0
    log.info("NMF: re-seeded %d dead component(s)", len(dead))


def hals_codes(X: torch.Tensor, H: torch.Tensor, *, sweeps: int) -> torch.Tensor:
    """Codes W (N, K) >= 0 for X (N, C) and a fixed H (K, C): the least-squares codes clipped
    at zero, then ``sweeps`` HALS sweeps. A start for the fit, not a converged solution."""
    G = H @ H.T  # K, K
    P = H @ X.T  # K, N
    Wt = torch.linalg.solve(G + _ridge(G), P).clamp_(min=0)  # K, N
    _hals_sweeps(Wt, P, G, sweeps)
    return Wt.T.contiguous()


def _ridge(G: torch.Tensor) -> torch.Tensor:
    """A tiny multiple of the identity (K, K): G + ridge is invertible even for dead atoms."""
    eye = torch.eye(len(G), dtype=G.dtype, device=G.device)
    return 1e-6 * G.diagonal().mean().clamp(min=_EPS) * eye


class CodeSolver(NamedTuple):
    """What :func:`nnls_codes` needs of a dictionary H (K, C), computed once per dictionary."""

    target: torch.Tensor  # C, K: X -> X H^T / L, the gradient step's constant part
    start: torch.Tensor  # K, K: X H^T / L -> the least-squares codes X H^T G^-1, L G^-1
    step: torch.Tensor  # K, K: I - G / L, the gradient step's linear part
    momentum: float  # Nesterov's constant momentum for the condition number L / mu
    rate: float  # the linear rate of convergence, 1 - sqrt(mu / L)


def code_solver(H: torch.Tensor) -> CodeSolver:
    """The constants of :func:`nnls_codes` for H (K, C): the Gram matrix G = H H^T (plus a tiny
    ridge, so that mu > 0), its extreme eigenvalues L and mu, and the maps built from them."""
    G = H @ H.T
    G = G + _ridge(G)  # K, K
    eig = torch.linalg.eigvalsh(G.double())  # ascending
    lip, mu = float(eig[-1]), max(float(eig[0]), float(eig[-1]) * 1e-12)
    q = (mu / lip) ** 0.5
    eye = torch.eye(len(G), dtype=H.dtype, device=H.device)
    return CodeSolver(
        target=(H.T / lip).contiguous(),
        start=torch.linalg.inv(G) * lip,
        step=eye - G / lip,
        momentum=(1 - q) / (1 + q),
        rate=1 - q,
    )


def nnls_codes(
    X: torch.Tensor,
    H: torch.Tensor,
    *,
    max_iter: int = 300,
    tol: float = 1e-4,
    chunk: int | None = None,
    solver: CodeSolver | None = None,
) -> torch.Tensor:
    """Non-negative codes W (N, K) minimising ||X - W H|| for a fixed dictionary H (K, C).

    Each row is a K-dimensional non-negative least-squares problem with the same Gram matrix
    G = H H^T. They are solved together by accelerated projected gradient with Nesterov's
    constant momentum for a strongly convex quadratic (Nesterov 2004, 2.2.4), from the
    least-squares codes clipped at zero: an iteration is one (L, K) x (K, K) product and two
    element-wise ops, where a HALS sweep is 2 K small ops (slower from K ~ 32 on, and much
    slower to converge when atoms overlap). The rate is 1 - sqrt(mu / L), mu and L the
    extreme eigenvalues of G, so the distance to the exact codes is at most the last step
    over (1 - rate); measured on CNN layers' dictionaries, it is 2-3 times the last step.

    The rows are taken in blocks of ``chunk`` rows (default: about 4 MiB of codes); a block
    stops once an iteration changes its codes by less than 2 ``tol`` (1 - rate) in relative
    Frobenius norm (checked every 4 iterations), so that they are within about ``tol`` of
    the exact codes; with ``tol`` = 0 every block runs ``max_iter`` iterations. Rows do not
    interact, so the blocking changes nothing but when a block stops. ``solver`` is
    :func:`code_solver` of H, if the caller keeps it.
    """
    solver = solver or code_solver(H)
    n_atoms = solver.step.shape[0]
    chunk = chunk or max(1024, (1 << 22) // (n_atoms * X.element_size()))
    threshold = 2 * tol * (1 - solver.rate)
    if X.shape[0] <= chunk:
        return _apg(X @ solver.target, solver, max_iter, threshold)
    W = torch.empty(X.shape[0], n_atoms, dtype=X.dtype, device=X.device)  # N, K
    for first in range(0, X.shape[0], chunk):
        target = X[first : first + chunk] @ solver.target  # L, K: the one product with X
        W[first : first + chunk] = _apg(target, solver, max_iter, threshold)
    return W


def _apg(target: torch.Tensor, solver: CodeSolver, max_iter: int, threshold: float) -> torch.Tensor:
    """The iterations of :func:`nnls_codes` on one block, from its X H^T / L (L, K)."""
    codes = (target @ solver.start).clamp_(min=0)  # L, K: least squares, clipped
    ahead, new = codes.clone(), torch.empty_like(codes)  # the extrapolated point, the next
    for i in range(1, max_iter + 1):
        torch.addmm(target, ahead, solver.step, out=new).clamp_(min=0)
        torch.lerp(codes, new, 1 + solver.momentum, out=ahead)
        done = threshold > 0 and i % 4 == 0 and torch.dist(new, codes) <= threshold * new.norm()
        codes, new = new, codes
        if done:
            break
    return codes


class NMF:
    """NMF estimator (scikit-learn's names): X (N, C) ~ W (N, K) @ components_ (K, C).

    Rows of ``components_`` have unit L2 norm. Learned attributes: ``components_``,
    ``reconstruction_err_`` (Frobenius norm of X - WH, as scikit-learn),
    ``relative_error_`` (that norm over ||X||), ``explained_variance_``, ``n_iter_``,
    ``dead_components_`` (indices of components unused on the training data),
    ``n_reseeded_`` and ``history_`` ([(seconds, relative error)] per iteration).

    With ``subsample`` rows (if N > 2 * subsample) the dictionary is first fitted on random
    subsets of rows and refined on all of them: a warm start much cheaper than a cold one.
    :meth:`transform` (``encode``) solves for codes to within about ``transform_tol`` of the
    exact non-negative least-squares ones (:func:`nnls_codes`; ``transform_tol`` = 0 runs all
    ``transform_max_iter`` iterations).
    """

    def __init__(
        self,
        n_components: int = 16,
        *,
        max_iter: int = 200,
        tol: float = 1e-4,
        inner_sweeps: int = 2,
        transform_max_iter: int = 300,
        transform_tol: float = 1e-4,
        subsample: int | None = 5000,
        random_state: int = 0,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        self.n_components = n_components
        self.max_iter = max_iter
        self.tol = tol
        self.inner_sweeps = inner_sweeps
        self.transform_max_iter = transform_max_iter
        self.transform_tol = transform_tol
        self.subsample = subsample
        self.random_state = random_state
        self.device = device
        self.dtype = dtype

    def _validate(self, X) -> torch.Tensor:
        X = _as_matrix(X).to(self.device, self.dtype)
        if not (isinstance(self.n_components, int) and 1 <= self.n_components <= min(X.shape)):
            raise ValueError(
                "n_components must be an int in [1, min(N, C) = "
                f"{min(X.shape)}], got {self.n_components!r}"
            )
        if self.max_iter < 1 or self.tol < 0 or self.inner_sweeps < 1:
            raise ValueError("max_iter and inner_sweeps must be positive and tol non-negative")
        return X

    def fit_transform(self, X) -> torch.Tensor:
        """Fit on X (N, C) and return its codes W (N, K)."""
        X = self._validate(X)
        start = time.perf_counter()
        gen = torch.Generator().manual_seed(self.random_state)
        fit_kw = {"max_iter": self.max_iter, "inner_sweeps": self.inner_sweeps}
        if self.subsample is not None and len(X) > 2 * self.subsample:
            W0, H0 = self._warm_start(X, gen, fit_kw)
        else:
            W0, H0 = nndsvda_init(X, self.n_components, generator=gen)
        W, H, info = hals_nmf(X, W0, H0, start=start, tol=self.tol, **fit_kw)
        self.components_ = H
        self.n_iter_ = info["n_iter"]
        self.history_ = info["history"]
        self.n_reseeded_ = info["reseeded"]
        self.relative_error_ = min(err for _, err in info["history"])
        self.reconstruction_err_ = self.relative_error_ * info["xx"] ** 0.5
        centred = _sum_squares(X, X.double().mean(dim=0))
        self.explained_variance_ = 1.0 - self.reconstruction_err_**2 / max(centred, _EPS)
        self.dead_components_ = (W.amax(dim=0) <= 0).nonzero().flatten().tolist()
        if self.dead_components_:
            log.warning("NMF: %d dead component(s) after fitting", len(self.dead_components_))
        return W

    def _warm_start(
        self, X: torch.Tensor, gen: torch.Generator, fit_kw: dict
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(W (N, K), H (K, C)) fitted coarse to fine on nested random subsets of rows.

        NNDSVDa and HALS on ``subsample`` // 5 rows (when that is at least 10 rows per
        component), then HALS on ``subsample`` rows from there, then codes for all rows: an
        iteration on a subset costs a fraction of one on X, and most of a fit's iterations
        only find the rough dictionary, which a subset gives as well. A start only: the
        subsets' fits stop at tol 3e-4 and 1e-4 at the finest.
        """
        order = torch.randperm(len(X), generator=gen).to(X.device)
        sizes = [self.subsample]
        if self.subsample // 5 >= 10 * self.n_components:
            sizes.insert(0, self.subsample // 5)
        rows = X[order[: sizes[0]]]  # L, C
        W0, H0 = nndsvda_init(rows, self.n_components, generator=gen)
        for i, size in enumerate(sizes):
            if i:
                rows = X[order[:size]]
                W0 = hals_codes(rows, H0, sweeps=self.inner_sweeps)
            tol = max(self.tol, 1e-4 if size == self.subsample else 3e-4)
            _, H0, _ = hals_nmf(rows, W0, H0, **{**fit_kw, "tol": tol})
        return hals_codes(X, H0, sweeps=self.inner_sweeps), H0

    def fit(self, X) -> NMF:
        self.fit_transform(X)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "components_"):
            raise ValueError("this NMF is not fitted yet; call fit first")

    def transform(self, X) -> torch.Tensor:
        """Codes W (N, K) >= 0 of X (N, C) for the fitted dictionary."""
        self._check_fitted()
        X = _as_matrix(X).to(self.device, self.dtype)
        if X.shape[1] != self.components_.shape[1]:
            raise ValueError(
                f"X has {X.shape[1]} columns, the dictionary {self.components_.shape[1]}"
            )
        if getattr(self, "_solver_of", None) is not self.components_:  # once per dictionary
            self._solver, self._solver_of = code_solver(self.components_), self.components_
        return nnls_codes(
            X,
            self.components_,
            max_iter=self.transform_max_iter,
            tol=self.transform_tol,
            solver=self._solver,
        )

    encode = transform

    def decode(self, W: torch.Tensor) -> torch.Tensor:
        """W (N, K) -> reconstruction (N, C)."""
        self._check_fitted()
        return W.to(self.components_) @ self.components_

    inverse_transform = decode

    def get_dictionary(self) -> torch.Tensor:
        """The concepts, (K, C), unit-norm rows."""
        self._check_fitted()
        return self.components_

    def state(self) -> dict:
        """What a cache needs to restore the fitted estimator with :meth:`from_state`."""
        self._check_fitted()
        keys = (
            "n_iter_",
            "n_reseeded_",
            "relative_error_",
            "reconstruction_err_",
            "explained_variance_",
            "dead_components_",
        )
        return {"components_": self.components_.cpu(), **{k: getattr(self, k) for k in keys}}

    def load_state(self, state: dict) -> NMF:
        for key, value in state.items():
            setattr(self, key, value.to(self.device, self.dtype) if key == "components_" else value)
        self.history_ = []
        return self
