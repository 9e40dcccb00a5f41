"""Model frame and design: X, the random-effect terms, sparse Z and the Λθ template.

Follows R's ``model.matrix`` (treatment contrasts, sorted levels, first factor varying
fastest in interactions) and lme4's ``mkReTrms`` (terms sorted by decreasing number of
levels; within a term, columns grouped by level) so that names and θ line up with lme4.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from analysis.formula import Formula, RandomTerm, Term, evaluate, parse_formula

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReTerm:
    """One random-effect term: grouping factor codes and the term's own model matrix."""

    group: str
    names: tuple[str, ...]  # column names of the term, e.g. ("(Intercept)", "Days")
    codes: np.ndarray  # (n,) level index of each observation
    levels: tuple[str, ...]
    x: np.ndarray  # (n, k) term model matrix

    @property
    def k(self) -> int:
        return self.x.shape[1]

    @property
    def nlevels(self) -> int:
        return len(self.levels)

    @property
    def q(self) -> int:
        return self.k * self.nlevels

    @property
    def tril(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cols) of the lower triangle in lme4's θ order (column-major)."""
        rows, cols = np.tril_indices(self.k)
        order = np.lexsort((rows, cols))
        return rows[order], cols[order]


@dataclass(frozen=True)
class Design:
    """Everything the objective needs; immutable so results can keep a reference."""

    formula: Formula
    X: np.ndarray  # (n, p)
    fixef_names: tuple[str, ...]
    y: np.ndarray  # (n,) response, proportions for binomial
    trials: np.ndarray  # (n,) binomial trials (prior weights); ones otherwise
    terms: tuple[ReTerm, ...]
    dropped: tuple[str, ...] = ()

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def p(self) -> int:
        return self.X.shape[1]

    @property
    def q(self) -> int:
        return sum(t.q for t in self.terms)

    @property
    def theta_sizes(self) -> list[int]:
        return [t.k * (t.k + 1) // 2 for t in self.terms]

    @property
    def theta0(self) -> np.ndarray:
        """lme4's start: identity relative covariance."""
        return np.concatenate([(r == c).astype(float) for r, c in (t.tril for t in self.terms)])

    @property
    def theta_lower(self) -> np.ndarray:
        """0 for the diagonal of each Cholesky factor, -inf elsewhere."""
        return np.concatenate(
            [np.where(r == c, 0.0, -np.inf) for r, c in (t.tril for t in self.terms)])

    def lambda_blocks(self, theta: np.ndarray) -> list[np.ndarray]:
        """Per-term lower-triangular k x k factors T (Λ = blockdiag(I ⊗ T))."""
        out, i = [], 0
        for term in self.terms:
            r, c = term.tril
            block = np.zeros((term.k, term.k))
            block[r, c] = theta[i:i + len(r)]
            out.append(block)
            i += len(r)
        return out

    @property
    def Z(self) -> sp.csr_matrix:
        """Sparse Z (n x q), columns grouped per term then level then term column."""
        blocks = []
        for t in self.terms:
            rows = np.repeat(np.arange(self.n), t.k)
            cols = (t.codes[:, None] * t.k + np.arange(t.k)).ravel()
            blocks.append(sp.csr_matrix((t.x.ravel(), (rows, cols)), shape=(self.n, t.q)))
        return sp.hstack(blocks, format="csr") if blocks else sp.csr_matrix((self.n, 0))


def _is_factor(values: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)


def _levels(values: pd.Series) -> list:
    if isinstance(values.dtype, pd.CategoricalDtype):
        used = set(values.dropna().unique())
        return [c for c in values.cat.categories if c in used]
    return sorted(values.dropna().unique(), key=lambda v: (str(type(v)), v))


def _code_term(term: Term, frame: dict[str, pd.Series], present: set[frozenset[str]]
               ) -> tuple[np.ndarray, list[str]]:
    """Columns of one term: products of numeric variables and factor codings."""
    cols: list[np.ndarray] = [np.ones(len(next(iter(frame.values()))))]
    names: list[str] = [""]
    for var in term:
        values = frame[var]
        if _is_factor(values):
            levels = _levels(values)
            contrast = frozenset(term) - {var} in present
            use = levels[1:] if contrast else levels
            parts = [(values == lev).to_numpy(dtype=float) for lev in use]
            part_names = [f"{var}{lev}" for lev in use]
        else:
            parts = [values.to_numpy(dtype=float)]
            part_names = [var]
        # first variable varies fastest, as in R
        cols = [c * p for p in parts for c in cols]
        names = [f"{n}:{pn}" if n else pn for pn in part_names for n in names]
    return np.column_stack(cols), names


def model_matrix(terms: tuple[Term, ...], intercept: bool, frame: dict[str, pd.Series], n: int
                 ) -> tuple[np.ndarray, list[str]]:
    """R's model.matrix for the given terms (treatment contrasts, marginality rule)."""
    present = {frozenset(t) for t in terms}
    if intercept:
        present.add(frozenset())
    cols, names = [], []
    if intercept:
        cols.append(np.ones((n, 1)))
        names.append("(Intercept)")
    for term in terms:
        m, nm = _code_term(term, frame, present)
        cols.append(m)
        names.extend(nm)
    if not cols:
        return np.zeros((n, 0)), []
    return np.hstack(cols), names


def _drop_rank_deficient(X: np.ndarray, names: list[str]
                         ) -> tuple[np.ndarray, list[str], list[str]]:
    """Keep columns in order while they add rank, as lme4 does (it drops the rest)."""
    keep: list[int] = []
    scale = np.linalg.norm(X, axis=0)
    for j in range(X.shape[1]):
        trial = keep + [j]
        sub = X[:, trial] / np.where(scale[trial] > 0, scale[trial], 1.0)
        tol = 1e-7 * np.sqrt(X.shape[0])
        if scale[j] > 0 and np.linalg.matrix_rank(sub, tol=tol) == len(trial):
            keep.append(j)
    dropped = [names[j] for j in range(X.shape[1]) if j not in keep]
    return X[:, keep], [names[j] for j in keep], dropped


def _response(formula: Formula, frame: dict[str, pd.Series], family: str
              ) -> tuple[np.ndarray, np.ndarray]:
    if len(formula.response) == 2:
        if family != "binomial":
            raise ValueError("cbind(successes, failures) needs family='binomial'")
        succ = frame[formula.response[0]].to_numpy(dtype=float)
        fail = frame[formula.response[1]].to_numpy(dtype=float)
        if np.any(succ < 0) or np.any(fail < 0) or np.any(succ % 1) or np.any(fail % 1):
            raise ValueError("cbind() counts must be non-negative integers")
        trials = succ + fail
        if np.any(trials == 0):
            raise ValueError("cbind() rows need at least one trial")
        return succ / trials, trials
    values = frame[formula.response[0]]
    if family == "binomial":
        y = values.to_numpy(dtype=float) if not _is_factor(values) or values.dtype == bool else None
        if y is None or not np.all(np.isin(y, (0.0, 1.0))):
            raise ValueError(
                f"response {formula.response[0]!r} must be 0/1 for a binomial model "
                "(or use cbind(successes, failures))")
        return y, np.ones_like(y)
    if _is_factor(values):
        raise ValueError(f"response {formula.response[0]!r} must be numeric")
    y = values.to_numpy(dtype=float)
    return y, np.ones_like(y)


def _random_term(bar: RandomTerm, frame: dict[str, pd.Series], n: int) -> ReTerm:
    x, names = model_matrix(bar.terms, bar.intercept, frame, n)
    groups = [frame[g].astype(str) for g in bar.group]
    key = groups[-1] if len(groups) == 1 else pd.Series(
        [":".join(v) for v in zip(*[g.to_numpy() for g in groups], strict=True)])
    codes, uniques = pd.factorize(pd.Series(np.asarray(key)), sort=True)
    return ReTerm(bar.group_name, tuple(names), codes.astype(np.int64),
                  tuple(str(u) for u in uniques), x)


def build_design(formula: str | Formula, data: pd.DataFrame, family: str = "binomial") -> Design:
    """Parse, evaluate and code a formula on a data frame (rows with missing values dropped)."""
    if not isinstance(data, pd.DataFrame):
        raise ValueError("data must be a pandas DataFrame")
    f = parse_formula(formula) if isinstance(formula, str) else formula
    frame_full = {v: evaluate(v, data) for v in f.variables()}
    ok = np.ones(len(data), dtype=bool)
    for values in frame_full.values():
        ok &= values.notna().to_numpy()
    if not ok.any():
        raise ValueError("no complete rows for the variables in the formula")
    if not ok.all():
        log.info("dropping %d rows with missing values", int((~ok).sum()))
    frame = {k: v[ok].reset_index(drop=True) for k, v in frame_full.items()}
    n = int(ok.sum())
    y, trials = _response(f, frame, family)
    X, names = model_matrix(f.terms, f.intercept, frame, n)
    X, names, dropped = _drop_rank_deficient(X, names)
    if dropped:
        log.warning("fixed-effect model matrix is rank deficient: dropping %s", dropped)
    terms = [_random_term(bar, frame, n) for bar in f.random]
    for t in terms:
        if t.nlevels >= n and family != "binomial":
            raise ValueError(f"grouping factor {t.group!r} has as many levels as observations")
    terms.sort(key=lambda t: -t.nlevels)
    return Design(f, X, tuple(names), y, trials, tuple(terms), tuple(dropped))
